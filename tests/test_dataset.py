"""Events as a research dataset: `load_events` equals the analysis files, the trades open in pandas,
polars and DuckDB as they are, and `pumpwatch study` summarises them."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

import pumpwatch
from pumpwatch import capture as cap
from pumpwatch.study import average_paths, summarise

NS = 1_000_000_000
T0 = 1_790_000_000 * NS


def _trade(venue, symbol, tid, price, ts, side="buy", qty="10"):
    return pumpwatch.Trade(
        venue=venue, symbol=symbol, trade_id=str(tid), price=price, qty=qty, side=side, ts_ns=ts, recv_ns=ts + 5_000_000
    )


def _record_listing(store, ticker, t0, *, rise, n=200):
    """Binance spot pumps by `rise` (a fraction) over 20 s after t0; OKX swap falls by as much."""
    rows = []
    for k in range(n):
        ts = t0 - 20 * NS + k * (40 * NS // n)
        moved = Decimal(max(0, ts - t0)) / (20 * NS)
        up = Decimal("0.1") * (1 + moved * Decimal(str(rise)))
        down = Decimal("0.1") * (1 - moved * Decimal(str(rise)))
        rows.append(_trade("binance-spot", f"{ticker}USDT", 1000 + k, str(up.quantize(Decimal("0.00001"))), ts))
        rows.append(
            _trade(
                "okx-swap",
                f"{ticker}-USDT-SWAP",
                5000 + k,
                str(down.quantize(Decimal("0.00001"))),
                ts + 3_000_000,
                side="sell",
                qty="3",
            )
        )
    store.append_trades(rows)


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("dataset") / "data"
    listings = [("AAA", T0, 0.30), ("BBB", T0 + 86_400 * NS, 0.08), ("CCC", T0 + 2 * 86_400 * NS, 0.02)]
    with pumpwatch.Store(data) as store:
        for ticker, t0, rise in listings:  # a recorder run started an hour before each listing
            store.append_marker("recorder_start", ts_ns=t0 - 3600 * NS)
            for v in pumpwatch.VENUES:
                store.append_marker("connection_up", ts_ns=t0 - 3599 * NS, venue=v, detail=f"{v}#0: subscribed")
            _record_listing(store, ticker, t0, rise=rise)
            store.append_marker("recorder_stop", ts_ns=t0 + 3600 * NS)
        for i, (ticker, t0, _) in enumerate(listings):
            notice = {
                "notice_id": 100 + i,
                "title": f"{ticker} listing",
                "markets": ["KRW"],
                "detected_ns": t0 + 2 * NS,
            }
            cap.capture(store, cap.CaptureRequest(ticker, t0, notice=notice), data, chart=False)
    return data


def _files(data):
    out = []
    for name in sorted(os.listdir(data / "events")):
        folder = data / "events" / name
        out.append(
            (name, json.loads((folder / "event.json").read_text()), json.loads((folder / "analysis.json").read_text()))
        )
    return out


def test_load_events_is_one_row_per_event_and_venue_equal_to_the_files(events_dir):
    table = pumpwatch.load_events(events_dir)
    files = _files(events_dir)
    assert table.num_rows == sum(len(e["venues"]) for _, e, _ in files) == 3 * len(pumpwatch.VENUES)
    rows = {(r["event"], r["venue"]): r for r in table.to_pylist()}
    for name, event, analysis in files:
        for venue, cov in event["venues"].items():
            r = rows[(name, venue)]
            a = analysis["venues"].get(venue) or {}
            assert r["ticker"] == event["ticker"] and r["t0_ns"] == event["t0_ns"]
            assert r["detection_delay_ms"] == event["detection_delay_ms"] == 2000.0
            assert r["notice_id"] == event["notice"]["notice_id"]
            assert r["coverage"] == cov["coverage"] and r["trades"] == cov["trades"] and r["source"] == "recorded"
            assert r["max_rise_pct"] == a.get("max_rise_pct") and r["time_to_peak_ms"] == a.get("time_to_peak_ms")
            assert r["reference_price"] == (a.get("reference") or {}).get("price")
            assert r["peak_price"] == (a.get("peak") or {}).get("price")
            assert r["quote_volume_after"] == (a.get("after") or {}).get("quote_volume")
            assert r["lag_ms"] == analysis["across"]["lead_lag_ms"].get(venue)
            assert r["verdict"] == a.get("verdict") and r["event_verdict"] == analysis["across"]["verdict"]
    by_event = {r["event"]: r for r in table.to_pylist() if r["venue"] == "binance-spot"}
    assert [r["verdict"] for r in sorted(by_event.values(), key=lambda r: r["t0_ns"])] == ["pump", "pump", "no pump"]
    assert all(rows[(n, "okx-swap")]["verdict"] == "dump" for n, _, _ in files[:2])


def test_since_and_until_select_by_t0(events_dir):
    table = pumpwatch.load_events(events_dir, since_ns=T0 + NS, until_ns=T0 + 2 * 86_400 * NS)
    assert set(table.column("ticker").to_pylist()) == {"BBB"}


def test_events_and_trades_open_in_pandas_polars_and_duckdb(events_dir):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    table = pumpwatch.load_events(events_dir)
    frame = table.to_pandas()
    assert len(frame) == table.num_rows and str(frame["t0"].dt.tz) == "UTC"
    assert pl.from_arrow(table).height == table.num_rows
    trades = pumpwatch.load_event_trades(events_dir, "AAA")
    assert trades.equals(pq.read_table(events_dir / "events" / "AAA_20260921T141320Z" / "trades.parquet"))
    assert isinstance(pl.from_arrow(trades), pl.DataFrame) and len(trades.to_pandas()) == trades.num_rows
    assert pd.api.types.is_string_dtype(trades.to_pandas()["price"]) or trades.to_pandas()["price"].dtype == object
    glob = str(events_dir / "events" / "*" / "trades.parquet")
    per_venue = dict(duckdb.sql(f"SELECT venue, count(*) FROM read_parquet('{glob}') GROUP BY venue").fetchall())
    expected: dict[str, int] = {}
    for r in table.to_pylist():
        if r["trades"]:
            expected[r["venue"]] = expected.get(r["venue"], 0) + r["trades"]
    assert per_venue == expected == {"binance-spot": 3 * 200, "okx-swap": 3 * 200}


def test_study_summarises_the_table(events_dir):
    table = pumpwatch.load_events(events_dir)
    s = summarise(table)
    assert s["events"] == 3 and set(s["venues"]) == {"binance-spot", "okx-swap"}
    b = s["venues"]["binance-spot"]
    rises = [r["max_rise_pct"] for r in table.to_pylist() if r["venue"] == "binance-spot"]
    assert b["events"] == 3 and b["complete"] == 3 and b["pumps"] == 2 and b["pump_share"] == round(2 / 3, 4)
    assert b["rise_pct_quartiles"][1] == statistics.median(rises)
    assert s["venues"]["okx-swap"]["pumps"] == 0
    paths = average_paths(events_dir, table)
    # binance rises linearly to +rise at 20 s: the mean of 30 %, 8 % and 2 % is 13.33 %
    assert paths["binance-spot"][0] == pytest.approx(0.0, abs=0.1)
    assert paths["binance-spot"][-1] == pytest.approx(40 / 3, abs=0.2)
    assert paths["okx-swap"][-1] == pytest.approx(-40 / 3, abs=0.2)


def test_study_command_prints_every_venue_and_draws(events_dir, tmp_path):
    png = tmp_path / "s.png"
    out = subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", "study", "--data-dir", str(events_dir), "-o", str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert out.returncode == 0, out.stderr
    assert "binance-spot" in out.stdout and "okx-swap" in out.stdout and "3 listing events" in out.stdout
    narrow = subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", "study", "--data-dir", str(events_dir), "-o", str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert narrow.returncode == 0 and max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert "binance-spot" in narrow.stdout and "okx-swap" in narrow.stdout and "…" not in narrow.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    j = subprocess.run(
        [
            sys.executable,
            "-m",
            "pumpwatch.cli",
            "study",
            "--data-dir",
            str(events_dir),
            "--json",
            "--since",
            "2026-09-22T00:00:00Z",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert j.returncode == 0 and json.loads(j.stdout)["events"] == 2
