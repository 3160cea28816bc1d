"""The event chart: each venue's price over the window normalised to its reference price (the last
trade before t0), quote volume per time bucket below, t0 and the detection time marked."""

from __future__ import annotations

import os
import pyarrow as pa
import pyarrow.compute as pc

NS = 1_000_000_000
VOLUME_BUCKETS = 80
#: Above this many trades a venue's line is drawn from each pixel column's first, lowest, highest
#: and last trade: the same picture, a fraction of the drawing time.
LINE_POINTS = 4000


def _decimate(ts, y, columns: int = LINE_POINTS // 4):
    import numpy as np

    if len(ts) <= LINE_POINTS:
        return ts, y
    bins = np.minimum(((ts - ts[0]) / max(ts[-1] - ts[0], 1e-12) * columns).astype(np.int64), columns - 1)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    lows = np.minimum.reduceat(y, starts)
    highs = np.maximum.reduceat(y, starts)
    keep = [starts, ends]
    # the index of each bin's low and high: first position where the value is reached
    for target in (lows, highs):
        hit = np.flatnonzero(y == np.repeat(target, np.diff(np.r_[starts, len(ts)])))
        first = np.r_[True, bins[hit][1:] != bins[hit][:-1]]
        keep.append(hit[first])
    idx = np.unique(np.concatenate(keep))
    return ts[idx], y[idx]


def draw_event(path: str | os.PathLike[str], trades: pa.Table, event: dict, analysis: dict) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    t0 = event["t0_ns"]
    start, end = event["window"]["start_ns"], event["window"]["end_ns"]
    fig, (ax, axv) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, dpi=100)
    ticker = event.get("ticker", "")
    verdict = analysis.get("across", {}).get("verdict", "")
    ax.set_title(f"{ticker}  t0 {event['t0']}  ({verdict})", fontsize=11)
    venues = analysis.get("venues", {})
    edges = np.linspace((start - t0) / NS, (end - t0) / NS, VOLUME_BUCKETS + 1)
    bottom = np.zeros(VOLUME_BUCKETS)
    cmap = plt.get_cmap("tab20")
    mapping = event.get("instrument_mapping", {})
    for k, venue in enumerate(sorted(venues)):
        v = venues[venue]
        rows = trades.filter(pc.equal(trades.column("venue"), venue))
        if rows.num_rows == 0:
            continue
        ts = (rows.column("ts_ns").to_numpy() - t0) / NS
        # Floats for drawing only: the exact figures are in analysis.json.
        price = rows.column("price").cast(pa.float64()).to_numpy()
        qty = rows.column("qty").cast(pa.float64()).to_numpy()
        divisor = np.ones(len(price))
        size = np.ones(len(price))
        symbols = rows.column("symbol").to_numpy(zero_copy_only=False)
        for inst in mapping.get(venue, []):
            sel = symbols == inst["symbol"]
            divisor[sel] = inst.get("base_multiplier", 1)
            size[sel] = float(inst.get("contract_multiplier", "1")) * inst.get("base_multiplier", 1)
        price = price / divisor
        order = np.argsort(ts, kind="stable")
        ts, price, qty, size = ts[order], price[order], qty[order], size[order]
        ref = float(v["reference"]["price"]) if v.get("reference") else (price[0] if len(price) else 1.0)
        color = cmap(k % 20)
        line_ts, line_pct = _decimate(ts, (price / ref - 1) * 100)
        ax.plot(line_ts, line_pct, drawstyle="steps-post", lw=1.1, color=color, label=venue)
        vol, _ = np.histogram(ts, bins=edges, weights=price * qty * size)
        axv.stairs(bottom + vol, edges, baseline=bottom.copy(), fill=True, color=color, lw=0)
        bottom += vol
    for a in (ax, axv):
        a.axvline(0, color="black", lw=1)
        detected = event.get("detected_ns")
        if detected:
            a.axvline((detected - t0) / NS, color="crimson", lw=1, ls="--")
        a.grid(alpha=0.3)
    ax.text(0, 1.0, " t0", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    if event.get("detected_ns"):
        ax.text((event["detected_ns"] - t0) / NS, 1.0, " detected", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="crimson")
    ax.set_ylabel("price vs reference (%)")
    axv.set_ylabel("quote volume")
    axv.set_xlabel("seconds from t0 (exchange time)")
    axv.set_xlim((start - t0) / NS, (end - t0) / NS)
    if venues:
        ax.legend(loc="upper left", fontsize=7, ncol=2, frameon=False)
    else:
        ax.text(0.5, 0.5, "no trades in the window on any venue", transform=ax.transAxes, ha="center")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.09, hspace=0.06)
    fig.savefig(path, format="png")
    plt.close(fig)
