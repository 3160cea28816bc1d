"""`pumpwatch study`: what the listing events say together.

Per venue: in how many events it listed the coin, how often it pumped, the median and spread of the
rise and of the time to peak, how often it moved first and how far behind the first mover it moved.
The picture (`study.png`): the distribution of the rise per venue, and each venue's average price path
after t0, normalised to its reference price (the last trade before t0).
"""

from __future__ import annotations

import os
import statistics
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .dataset import load_event_trades

NS = 1_000_000_000
#: The average path is sampled this often after t0 (the last trade at or before each step).
PATH_STEP_S = 0.25


def _quartiles(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def summarise(events: pa.Table) -> dict[str, Any]:
    """Per-venue figures over the rows of `load_events` (venues that did not list the coin left out)."""
    rows = [r for r in events.to_pylist() if r["coverage"] != "absent"]
    out: dict[str, Any] = {"events": len({r["event"] for r in events.to_pylist()}), "venues": {}}
    for venue in sorted({r["venue"] for r in rows}):
        mine = [r for r in rows if r["venue"] == venue]
        rises = [r["max_rise_pct"] for r in mine if r["max_rise_pct"] is not None]
        peaks = [r["time_to_peak_ms"] for r in mine if r["time_to_peak_ms"] is not None]
        lags = [r["lag_ms"] for r in mine if r["lag_ms"] is not None]
        pumps = sum(1 for r in mine if r["verdict"] == "pump")
        out["venues"][venue] = {
            "events": len(mine),
            "complete": sum(1 for r in mine if r["coverage"] == "complete"),
            "pumps": pumps,
            "pump_share": round(pumps / len(mine), 4) if mine else None,
            "rise_pct_quartiles": _quartiles(rises),
            "time_to_peak_ms_quartiles": _quartiles(peaks),
            "first_mover": sum(1 for r in mine if r["first_mover"]),
            "lag_ms_median": statistics.median(lags) if lags else None,
        }
    return out


def _decimal(text: Any) -> Decimal | None:
    try:
        d = Decimal(str(text))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() and d > 0 else None


def average_paths(
    data_dir: str | os.PathLike[str], events: pa.Table, after_s: float = 20.0, step_s: float = PATH_STEP_S
) -> dict[str, list[float]]:
    """Each venue's price after t0 in % of its reference, sampled every `step_s` (the last trade at or
    before each step; the reference before the first), averaged over the events it listed."""
    steps = round(after_s / step_s) + 1
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for name in sorted(set(events.column("event").to_pylist())):
        rows = events.filter(pc.equal(events.column("event"), name)).to_pylist()
        trades = None
        for r in rows:
            ref = _decimal(r["reference_price"])
            if ref is None or r["coverage"] == "absent":
                continue
            if trades is None:
                trades = load_event_trades(data_dir, name)
            t0 = r["t0_ns"]
            mine = trades.filter(
                pc.and_(pc.equal(trades.column("venue"), r["venue"]), pc.greater_equal(trades.column("ts_ns"), t0))
            )
            ts = mine.column("ts_ns").to_pylist()
            prices = mine.column("price").to_pylist()
            order = sorted(range(len(ts)), key=ts.__getitem__)
            path, k, last = [], 0, Decimal(0)
            for s in range(steps):
                edge = t0 + int(s * step_s * NS)
                while k < len(order) and ts[order[k]] <= edge:
                    p = _decimal(prices[order[k]])
                    last = (p / ref - 1) * 100 if p is not None else last
                    k += 1
                path.append(float(last))
            acc = sums.setdefault(r["venue"], [0.0] * steps)
            for i, v in enumerate(path):
                acc[i] += v
            counts[r["venue"]] = counts.get(r["venue"], 0) + 1
    return {v: [x / counts[v] for x in acc] for v, acc in sums.items()}


def draw_study(
    path: str | os.PathLike[str], events: pa.Table, paths: dict[str, list[float]], step_s: float = PATH_STEP_S
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in events.to_pylist() if r["coverage"] != "absent" and r["max_rise_pct"] is not None]
    venues = sorted({r["venue"] for r in rows} | set(paths))
    fig, (ax_rise, ax_path) = plt.subplots(1, 2, figsize=(13, 5.5), dpi=100)
    n_events = len(set(events.column("event").to_pylist()))
    fig.suptitle(f"{n_events} listing events", fontsize=11)
    data = [[r["max_rise_pct"] for r in rows if r["venue"] == v] for v in venues]
    if any(data):
        ax_rise.boxplot([d or [float("nan")] for d in data], vert=False)
        ax_rise.set_yticks(range(1, len(venues) + 1), venues, fontsize=8)
    ax_rise.set_xlabel("largest rise after t0 (% of reference)")
    ax_rise.set_title("rise per venue", fontsize=10)
    ax_rise.grid(axis="x", alpha=0.3)
    cmap = plt.get_cmap("tab20")
    for k, venue in enumerate(venues):
        p = paths.get(venue)
        if p:
            ax_path.plot([i * step_s for i in range(len(p))], p, label=venue, color=cmap(k % 20), linewidth=1.2)
    ax_path.axhline(0, color="grey", linewidth=0.6)
    ax_path.set_xlabel("seconds after t0")
    ax_path.set_ylabel("% of reference (mean over events)")
    ax_path.set_title("average price path after t0", fontsize=10)
    ax_path.grid(alpha=0.3)
    if paths:
        ax_path.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
