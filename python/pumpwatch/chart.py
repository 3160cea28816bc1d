"""The event chart: each venue's price over the window normalised to its reference price (the last
trade before t0), quote volume per time bucket below, t0 and the detection time marked."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # numpy and matplotlib load when a chart is drawn, not with the package
    import numpy as np
    from matplotlib.figure import Figure

NS = 1_000_000_000
VOLUME_BUCKETS = 80
#: Above this many trades a venue's line is drawn from each pixel column's first, lowest, highest
#: and last trade: the same picture, a fraction of the drawing time.
LINE_POINTS = 4000


def _decimate(
    ts: np.ndarray[Any, Any], y: np.ndarray[Any, Any], columns: int = LINE_POINTS // 4
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
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


#: Seconds after t0 the zoom panel shows by default ([capture] chart_zoom_s): where the lead-lag
#: between venues is decided, in milliseconds, and a few pixels wide on the full window.
ZOOM_S = 3.0


def draw_event(
    path: str | os.PathLike[str], trades: pa.Table, event: dict, analysis: dict, zoom_s: float | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = event_figure(trades, event, analysis, zoom_s)
    fig.savefig(path, format="png")
    plt.close(fig)


def event_figure(trades: pa.Table, event: dict, analysis: dict, zoom_s: float | None = None) -> Figure:
    """The chart's figure: the whole window (price, volume) and a panel zoomed on t0 .. t0 +
    `zoom_s` in milliseconds with each venue's first move marked and its lag in the legend. The
    t0 and detection lines are named in legends, not by text on the plot, so labels never overlap."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    t0 = event["t0_ns"]
    start, end = event["window"]["start_ns"], event["window"]["end_ns"]
    zoom_s = ZOOM_S if zoom_s is None else max(float(zoom_s), 0.001)
    fig = plt.figure(figsize=(12, 9.5), dpi=100)
    grid = fig.add_gridspec(3, 1, height_ratios=[3, 1, 2.6], hspace=0.1)
    ax = fig.add_subplot(grid[0])
    axv = fig.add_subplot(grid[1], sharex=ax)
    axz = fig.add_subplot(grid[2])
    ticker = event.get("ticker", "")
    verdict = analysis.get("across", {}).get("verdict", "")
    ax.set_title(f"{ticker}  t0 {event['t0']}  ({verdict})", fontsize=11)
    venues = analysis.get("venues", {})
    lags = analysis.get("across", {}).get("lead_lag_ms", {})
    edges = np.linspace((start - t0) / NS, (end - t0) / NS, VOLUME_BUCKETS + 1)
    bottom = np.zeros(VOLUME_BUCKETS)
    cmap = plt.get_cmap("tab20")
    mapping = event.get("instrument_mapping", {})
    zoom_lo = -zoom_s / 10
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
        pct = (price / ref - 1) * 100
        line_ts, line_pct = _decimate(ts, pct)
        ax.plot(line_ts, line_pct, drawstyle="steps-post", lw=1.1, color=color, label=venue)
        vol, _ = np.histogram(ts, bins=edges, weights=price * qty * size)
        axv.stairs(bottom + vol, edges, baseline=bottom.copy(), fill=True, color=color, lw=0)
        bottom += vol
        # The zoom: the price level in force at its left edge, then every trade up to its right edge.
        inside = (ts >= zoom_lo) & (ts <= zoom_s)
        before = np.flatnonzero(ts < zoom_lo)
        sel = np.r_[before[-1:], np.flatnonzero(inside)]
        if len(sel):
            z_ts, z_pct = _decimate(np.r_[zoom_lo, ts[sel][1:]] if len(before) else ts[sel], pct[sel])
            lag = lags.get(venue)
            move = v.get("first_move") or {}
            label = f"{venue}  " + (
                f"moved +{move['ms_after_t0']:,.0f} ms" if move.get("ms_after_t0") is not None else "no move"
            )
            label += f", lag +{lag:,.0f} ms" if lag is not None else ""
            axz.plot(z_ts * 1e3, z_pct, drawstyle="steps-post", lw=1.2, color=color, label=label)
            if move.get("ms_after_t0") is not None and move["ms_after_t0"] <= zoom_s * 1e3:
                axz.plot(
                    [move["ms_after_t0"]],
                    [float(move["price"]) / ref * 100 - 100 if v.get("reference") else 0.0],
                    marker="o",
                    ms=6,
                    color=color,
                    mec="black",
                    mew=0.6,
                    ls="none",
                )
    detected = event.get("detected_ns")
    marks = [(0.0, "black", "-", "t0 (first_listed_at)")]
    if detected:
        marks.append(((detected - t0) / NS, "crimson", "--", f"detected +{(detected - t0) / NS:,.3f} s"))
    for at, mark_color, style, label in marks:
        ax.axvline(at, color=mark_color, lw=1, ls=style, label=label)
        axv.axvline(at, color=mark_color, lw=1, ls=style)
        if zoom_lo <= at <= zoom_s:
            axz.axvline(at * 1e3, color=mark_color, lw=1, ls=style)
    for a in (ax, axv, axz):
        a.grid(alpha=0.3)
    ax.set_ylabel("price vs reference (%)")
    axv.set_ylabel("quote vol", fontsize=8)
    # The panels touch: the volume axis' top tick would sit on the price axis' bottom one.
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=8, prune="lower"))
    axv.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4, prune="upper"))
    axv.set_xlabel("seconds from t0 (exchange time)")
    axv.set_xlim((start - t0) / NS, (end - t0) / NS)
    plt.setp(ax.get_xticklabels(), visible=False)
    axz.set_xlim(zoom_lo * 1e3, zoom_s * 1e3)
    axz.set_xlabel(f"milliseconds from t0: the first {zoom_s:g} s (dot: first move of at least the move threshold)")
    axz.set_ylabel("price vs reference (%)")
    # Legends beside the plots, never over a line or each other.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, borderaxespad=0)
    handles, labels = axz.get_legend_handles_labels()
    if handles:  # first mover first
        first_mover_first = sorted(
            range(len(labels)), key=lambda i: (lags.get(labels[i].split()[0], float("inf")), labels[i])
        )
        axz.legend(
            [handles[i] for i in first_mover_first],
            [labels[i] for i in first_mover_first],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=7,
            frameon=False,
            borderaxespad=0,
            title="first move, lag behind the first mover",
            title_fontsize=7,
        )
    if not venues:
        ax.text(0.5, 0.5, "no trades in the window on any venue", transform=ax.transAxes, ha="center")
    fig.subplots_adjust(left=0.07, right=0.72, top=0.95, bottom=0.06)
    # The zoom panel sits a little apart from the window's x axis label.
    pos = axz.get_position()
    axz.set_position((pos.x0, pos.y0, pos.width, pos.height - 0.05))
    return fig
