"""The event chart: a panel zoomed on the first seconds after t0 shows each venue's first move at
its millisecond and its lag, and no label, legend or tick label overlaps another."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from pumpwatch import capture as cap
from pumpwatch.chart import ZOOM_S, event_figure
from pumpwatch.config import ConfigError, load
from test_capture import T0, _recorded_store, _trade

#: venue, symbol, ms after t0 its pump starts
MOVERS = [
    ("binance-spot", "0GUSDT", 120),
    ("okx-swap", "0G-USDT-SWAP", 450),
    ("bybit-linear", "0GUSDT", 1300),
    ("gate-spot", "0G_USDT", 2200),
]


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    data = tmp_path_factory.mktemp("chart") / "d"
    with _recorded_store(data) as store:
        rows = []
        for v, (venue, symbol, lag_ms) in enumerate(MOVERS):
            for k in range(-200, 200):  # a trade every 100 ms over the window, +10 % once it pumps
                ts = T0 + k * 100_000_000 + v
                price = Decimal("0.1000") * (Decimal("1.1") if ts >= T0 + lag_ms * 1_000_000 else 1)
                rows.append(_trade(venue, symbol, 10_000 * v + k + 200, str(price), "5", "buy", ts))
        store.append_trades(rows)
        # Detected 40 ms after t0: the old chart wrote "t0" and "detected" on top of each other.
        ev = cap.capture(
            store,
            cap.CaptureRequest(
                "0G", T0, notice={"notice_id": 1, "title": "t", "markets": ["KRW"], "detected_ns": T0 + 40_000_000}
            ),
            data,
            chart=False,
        )
    folder = ev.path
    return (
        pq.read_table(f"{folder}/trades.parquet"),
        json.load(open(f"{folder}/event.json")),
        json.load(open(f"{folder}/analysis.json")),
    )


def _boxes(fig):
    """Window extents of every visible text, grouped per artist that owns them (a legend's own
    entries are laid out by the legend)."""
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        ticks = [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]  # ticks out of view are not drawn
        ticks += [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
        for text in [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts, *ticks]:
            if text.get_visible() and text.get_text().strip():
                out.append((text.get_text(), text.get_window_extent(renderer)))
        legend = ax.get_legend()
        if legend is not None:
            out.append((f"legend of {ax.get_ylabel()}", legend.get_window_extent(renderer)))
    return out


def test_zoom_panel_shows_the_lead_lag_in_milliseconds(event):
    trades, ev, analysis = event
    fig = event_figure(trades, ev, analysis)
    zoom = fig.axes[2]
    assert zoom.get_xlim() == (pytest.approx(-ZOOM_S * 100), pytest.approx(ZOOM_S * 1000))
    lags = analysis["across"]["lead_lag_ms"]
    assert sorted(lags, key=lags.get) == [v for v, _, _ in MOVERS]  # the analysis saw the order we made
    labels = zoom.get_legend_handles_labels()[1]
    for venue, _, lag_ms in MOVERS:
        moved = analysis["venues"][venue]["first_move"]["ms_after_t0"]
        assert moved == pytest.approx(lag_ms, abs=100)
        (label,) = [x for x in labels if x.startswith(venue + " ")]
        assert f"moved +{moved:,.0f} ms" in label and f"lag +{lags[venue]:,.0f} ms" in label
    # one dot per venue at its first move, inside the zoom
    dots = [line for line in zoom.get_lines() if line.get_marker() == "o"]
    assert sorted(d.get_xdata()[0] for d in dots) == sorted(
        analysis["venues"][v]["first_move"]["ms_after_t0"] for v, _, _ in MOVERS
    )
    full_width_px = fig.axes[0].get_window_extent().width
    # the first lag (120 ms .. 450 ms) is tens of pixels wide in the zoom, under 10 on the full window
    assert (450 - 120) / (ZOOM_S * 1100) * zoom.get_window_extent().width > 30
    assert (450 - 120) / 40_000 * full_width_px < 10


@pytest.mark.parametrize("zoom_s", [0.5, ZOOM_S, 20.0])
def test_no_label_overlaps_another(event, zoom_s):
    trades, ev, analysis = event
    fig = event_figure(trades, ev, analysis, zoom_s)
    fig.canvas.draw()
    boxes = _boxes(fig)
    assert len(boxes) > 20
    width, height = fig.canvas.get_width_height()
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), (a, b)
    for name, box in boxes:  # and nothing is cut by the figure's edge
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, name


def test_zoom_is_configurable(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text("[capture]\nchart_zoom_s = 1.5\n")
    assert load(cfg).capture.chart_zoom_s == 1.5
    cfg.write_text("[capture]\nchart_zoom_s = 0\n")
    with pytest.raises(ConfigError, match="chart_zoom_s"):
        load(cfg)
