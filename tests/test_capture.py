"""Listing capture without the daemon: names that cannot escape the data directory, coverage read
from markers, the analysis against an independent computation, atomic event folders, captures from
another process, the scheduler (several at once, pending across restarts), and the CLI commands
(capture, events, report, export, verify)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from types import SimpleNamespace

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import pumpwatch
from pumpwatch import analysis
from pumpwatch import capture as cap
from pumpwatch.config import CaptureSettings

NS = 1_000_000_000
T0 = 1_790_000_000 * NS  # 2026-09-21T14:13:20Z


def _trade(venue, symbol, tid, price, qty, side, ts):
    return pumpwatch.Trade(
        venue=venue, symbol=symbol, trade_id=str(tid), price=price, qty=qty, side=side, ts_ns=ts, recv_ns=ts + 5_000_000
    )


def _recorded_store(path, *, venues=("binance-spot", "okx-swap", "gate-futures"), extra_markers=()):
    """A store as the recorder leaves it: a run started long before t0, every venue connected."""
    store = pumpwatch.Store(path)
    store.append_marker("recorder_start", ts_ns=T0 - 3600 * NS)
    for v in pumpwatch.VENUES:
        store.append_marker("connection_up", ts_ns=T0 - 3599 * NS, venue=v, detail=f"{v}#0: subscribed")
    for kind, kw in extra_markers:
        store.append_marker(kind, **kw)
    return store


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    "ticker,expected",
    [
        ("0G", "0G"),
        ("../../x", "X"),
        ("0G/..", "0G"),
        ("pepe", "PEPE"),
        ("1INCH", "1INCH"),
        ("A\x00B", "AB"),
        ("..\\..\\evil", "EVIL"),
    ],
)
def test_folder_ticker_has_only_letters_and_digits(ticker, expected):
    assert cap.safe_ticker(ticker) == expected


@pytest.mark.parametrize("ticker", ["", "../..", "/", "..", "가상"])
def test_a_ticker_without_letters_or_digits_is_refused(ticker):
    with pytest.raises(cap.CaptureError, match="no letters or digits"):
        cap.safe_ticker(ticker)


def test_hostile_tickers_write_inside_the_events_folder(tmp_path):
    data = tmp_path / "data"
    with _recorded_store(data) as store:
        for ticker in ("../../x", "0G/..", "../events/../../y"):
            ev = cap.capture(store, cap.CaptureRequest(ticker, T0), data, chart=False)
            assert os.path.dirname(ev.path) == os.path.realpath(data / "events")
    assert sorted(os.listdir(data / "events")) == [
        "0G_20260921T141320Z",
        "EVENTSY_20260921T141320Z",
        "X_20260921T141320Z",
    ]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_times_and_durations():
    assert cap.parse_time_ns("2026-09-21T14:13:20Z") == T0
    assert cap.parse_time_ns("2026-09-21T23:13:20+09:00") == T0
    assert cap.parse_time_ns("2026-09-21 14:13:20.000000123") == T0 + 123
    assert cap.parse_time_ns(str(T0 // NS)) == T0
    assert cap.parse_time_ns(str(T0 // 1_000_000)) == T0
    assert cap.parse_time_ns(T0) == T0
    assert cap.parse_duration_ns("20s") == 20 * NS
    assert cap.parse_duration_ns("1.5s") == 1_500_000_000
    assert cap.parse_duration_ns("500ms") == 500_000_000
    assert cap.parse_duration_ns("2m") == 120 * NS
    for bad in ("yesterday", "2026-13-01T00:00:00Z"):
        with pytest.raises(cap.CaptureError):
            cap.parse_time_ns(bad)
    with pytest.raises(cap.CaptureError):
        cap.parse_duration_ns("-3s")


# ---------------------------------------------------------------------------------------------
# Instruments


def test_mapping_from_symbol_names_undoes_prefixes_and_aliases():
    seen = {
        "binance-usdm": {"1000PEPEUSDT", "PEPEUSDT", "BTCUSDT"},
        "okx-swap": {"PEPE-USDT-SWAP"},
        "kucoin-futures": {"XBTUSDTM", "PEPEUSDTM"},
        "phemex-spot": {"sPEPEUSDT"},
        "gate-spot": {"PEPE2_USDT"},
    }
    m = cap.map_instruments("PEPE", None, seen)
    assert {v: [(i.symbol, i.base_multiplier) for i in insts] for v, insts in m.items()} == {
        "binance-usdm": [("1000PEPEUSDT", 1000), ("PEPEUSDT", 1)],
        "okx-swap": [("PEPE-USDT-SWAP", 1)],
        "kucoin-futures": [("PEPEUSDTM", 1)],
        "phemex-spot": [("sPEPEUSDT", 1)],
    }
    assert [i.symbol for i in cap.map_instruments("BTC", None, seen)["kucoin-futures"]] == ["XBTUSDTM"]
    # 1INCH and 0G are tickers, not denominations
    assert [i.symbol for i in cap.map_instruments("1INCH", None, {"bybit-spot": {"1INCHUSDT"}})["bybit-spot"]] == [
        "1INCHUSDT"
    ]


def test_mapping_prefers_the_instrument_list_the_recorder_kept(tmp_path):
    from pumpwatch.venues import TRADING, make_instrument

    inst = make_instrument("okx-swap", "0G-USDT-SWAP", "0G", "USDT", "perp", status=TRADING, contract_multiplier="10")
    cap.save_instruments(tmp_path, "okx-swap", [inst])
    m = cap.map_instruments("0G", tmp_path, {})
    assert [(i.symbol, i.contract_multiplier, i.source) for i in m["okx-swap"]] == [
        ("0G-USDT-SWAP", "10", "instrument list")
    ]


# ---------------------------------------------------------------------------------------------
# Coverage


def _m(kind, ts, venue=None, symbol="", detail="", **kw):
    return {
        "kind": kind,
        "venue": venue,
        "symbol": symbol,
        "ts_ns": ts,
        "from_ts_ns": kw.get("from_ts", 0),
        "to_ts_ns": kw.get("to_ts", 0),
        "from_id": kw.get("from_id", ""),
        "to_id": kw.get("to_id", ""),
        "detail": detail,
    }


W0, W1 = T0 - 20 * NS, T0 + 20 * NS
RUN = [
    _m("recorder_start", T0 - 3600 * NS),
    _m("connection_up", T0 - 3599 * NS, "bybit-spot", detail="bybit-spot#0: up"),
    _m("connection_up", T0 - 3599 * NS, "okx-swap", detail="okx-swap#0: up"),
]


def test_coverage_complete_when_nothing_says_otherwise():
    assert cap.venue_coverage("bybit-spot", {"0GUSDT"}, RUN, W0, W1, W1 + 60 * NS) == ("complete", [])


def test_a_reconnect_is_covered_by_backfill_but_an_unfillable_marker_is_a_lost_span():
    markers = RUN + [
        _m("connection_down", T0 + 2 * NS, "bybit-spot", detail="bybit-spot#0: closed"),
        _m("connection_up", T0 + 3 * NS, "bybit-spot", detail="bybit-spot#0: up"),
        _m(
            "gap_unfillable",
            T0 + 4 * NS,
            "bybit-spot",
            "0GUSDT",
            "window too short",
            from_ts=T0 + 2 * NS,
            to_ts=T0 + 2_500_000_000,
        ),
    ]
    status, lost = cap.venue_coverage("bybit-spot", {"0GUSDT"}, markers, W0, W1, W1 + 60 * NS)
    assert status == "partial" and [(s.from_ns, s.to_ns, s.symbol) for s in lost] == [
        (T0 + 2 * NS, T0 + 2_500_000_000, "0GUSDT")
    ]
    # the same marker for another symbol does not touch this capture
    other = markers[:-1] + [dict(markers[-1], symbol="BTCUSDT")]
    assert cap.venue_coverage("bybit-spot", {"0GUSDT"}, other, W0, W1, W1 + 60 * NS) == ("complete", [])


def test_a_venue_still_down_is_lost_from_the_disconnect_on():
    markers = RUN + [_m("connection_down", T0 + 5 * NS, "bybit-spot", detail="bybit-spot#0: closed")]
    status, lost = cap.venue_coverage("bybit-spot", {"0GUSDT"}, markers, W0, W1, W1 + 60 * NS)
    assert status == "partial" and (lost[0].from_ns, lost[0].to_ns) == (T0 + 5 * NS, W1)
    assert "still down" in lost[0].reason


def test_open_id_gaps_are_lost_until_filled():
    gap = _m("gap_found", T0, "okx-swap", "0G-USDT-SWAP", from_ts=T0 - NS, to_ts=T0 + NS, from_id="100", to_id="120")
    status, lost = cap.venue_coverage("okx-swap", {"0G-USDT-SWAP"}, RUN + [gap], W0, W1, W1)
    assert status == "partial" and "100..120" in lost[0].reason
    filled = _m("gap_filled", T0 + NS, "okx-swap", "0G-USDT-SWAP", from_id="118", to_id="120")
    assert cap.venue_coverage("okx-swap", {"0G-USDT-SWAP"}, RUN + [gap, filled], W0, W1, W1) == ("complete", [])


def test_a_killed_recorder_loses_its_downtime_unless_ids_prove_it_filled():
    killed = RUN + [
        _m("recorder_start", T0 + 10 * NS),
        _m("connection_up", T0 + 11 * NS, "bybit-spot", detail="bybit-spot#0: up"),
        _m("connection_up", T0 + 11 * NS, "okx-swap", detail="okx-swap#0: up"),
    ]
    status, lost = cap.venue_coverage("bybit-spot", {"0GUSDT"}, killed, W0, W1, W1, {1: T0 + 4 * NS})
    assert status == "partial" and [(s.from_ns, s.to_ns, s.reason) for s in lost] == [
        (T0 + 4 * NS, T0 + 11 * NS, "recorder not running")
    ]
    # okx-swap's ids continue across a short restart: a hole would show as a gap marker
    assert cap.venue_coverage("okx-swap", {"0G-USDT-SWAP"}, killed, W0, W1, W1, {1: T0 + 4 * NS}) == ("complete", [])


def test_before_the_first_run_nothing_was_recorded():
    markers = [_m("recorder_start", T0 - 5 * NS), _m("connection_up", T0 - 4 * NS, "okx-swap", detail="okx-swap#0: up")]
    status, lost = cap.venue_coverage("okx-swap", {"0G-USDT-SWAP"}, markers, W0, W1, W1)
    assert status == "partial" and (lost[0].from_ns, lost[0].to_ns, lost[0].reason) == (
        W0,
        T0 - 4 * NS,
        "not yet recording",
    )
    assert cap.venue_coverage("bybit-spot", {"0GUSDT"}, markers, W0, W1, W1)[0] == "not recorded"
    assert cap.venue_coverage("okx-swap", {"X"}, [], W0, W1, W1) == ("unknown", [])


# ---------------------------------------------------------------------------------------------
# Analysis


def _independent(rows, t0, *, divisor=1, size=Decimal(1), pump=Decimal(5)):
    """The measures recomputed the obvious way, to hold analysis.py to."""
    rows = sorted(rows, key=lambda r: r[3])
    before = [r for r in rows if r[3] < t0]
    after = [r for r in rows if r[3] >= t0]
    price = lambda r: Decimal(r[0]) / divisor  # noqa: E731
    base = lambda r: Decimal(r[1]) * size * divisor  # noqa: E731
    ref = price(before[-1])
    peak = max(after, key=price)
    trough = min(after, key=price)
    up = next((r[3] for r in after if (price(r) / ref - 1) * 100 >= pump), None)
    down = next((r[3] for r in after if (price(r) / ref - 1) * 100 <= -pump), None)
    verdict = "pump" if up is not None and (down is None or up < down) else "dump" if down is not None else "no pump"
    q_after = sum(price(r) * base(r) for r in after)
    b_after = sum(base(r) for r in after)
    return {
        "ref": ref,
        "peak": price(peak),
        "peak_ts": peak[3],
        "trough": price(trough),
        "n_before": len(before),
        "n_after": len(after),
        "quote_after": q_after,
        "base_after": b_after,
        "verdict": verdict,
        "rise": float((price(peak) / ref - 1) * 100),
        "buys_after": sum(1 for r in after if r[2] == "buy"),
    }


def _series(ts0, prices):
    return [(p, "2.5", "buy" if i % 3 else "sell", ts0 + i * 100_000_000) for i, p in enumerate(prices)]


def test_analysis_matches_an_independent_computation_and_a_dump_is_not_a_pump(tmp_path):
    pump = _series(T0 - 400_000_000, ["1.00", "1.01", "0.99", "1.00", "1.03", "1.08", "1.20", "1.15", "0.90", "1.30"])
    dump = _series(T0 - 400_000_000, ["1.00", "1.00", "1.00", "1.00", "0.97", "0.93", "0.80", "1.50", "1.60", "1.40"])
    flat = _series(T0 - 400_000_000, ["1.00", "1.00", "1.00", "1.00", "1.01", "1.02", "0.99", "1.04", "1.00", "1.00"])
    trades = [_trade("binance-spot", "0GUSDT", i, *r) for i, r in enumerate(pump)]
    trades += [_trade("gate-spot", "0G_USDT", i, *r) for i, r in enumerate(dump)]
    trades += [_trade("okx-spot", "0G-USDT", i, *r) for i, r in enumerate(flat)]
    with _recorded_store(tmp_path / "d") as store:
        store.append_trades(trades)
        ev = cap.capture(store, cap.CaptureRequest("0G", T0), tmp_path / "d", chart=False)
    a = ev.analysis["venues"]
    for venue, rows in (("binance-spot", pump), ("gate-spot", dump), ("okx-spot", flat)):
        want = _independent(rows, T0)
        got = a[venue]
        assert Decimal(got["reference"]["price"]) == want["ref"]
        assert Decimal(got["peak"]["price"]) == want["peak"] and got["peak"]["ts_ns"] == want["peak_ts"]
        assert Decimal(got["trough"]["price"]) == want["trough"]
        assert got["before"]["trades"] == want["n_before"] and got["after"]["trades"] == want["n_after"]
        assert Decimal(got["after"]["quote_volume"]) == want["quote_after"]
        assert Decimal(got["after"]["base_volume"]) == want["base_after"]
        assert got["after"]["buys"] == want["buys_after"]
        assert got["max_rise_pct"] == pytest.approx(want["rise"], abs=1e-3)
        assert got["verdict"] == want["verdict"]
    assert [a[v]["verdict"] for v in ("binance-spot", "gate-spot", "okx-spot")] == ["pump", "dump", "no pump"]
    across = ev.analysis["across"]
    assert across["pump_venues"] == ["binance-spot"] and across["dump_venues"] == ["gate-spot"]
    assert across["verdict"] == "mixed"
    # at t0 binance-spot trades 3 % up and gate-spot 3 % down; okx-spot moves 2 % only 100 ms later
    assert across["first_mover"]["venue"] == "binance-spot"
    assert across["lead_lag_ms"] == {"binance-spot": 0.0, "gate-spot": 0.0, "okx-spot": 100.0}


def test_analysis_converts_contracts_and_denominations():
    from pumpwatch.capture import MappedInstrument

    mapping = {
        "okx-swap": [MappedInstrument("okx-swap", "PEPE-USDT-SWAP", "perpetual", "PEPE", 1, "10")],
        "binance-usdm": [MappedInstrument("binance-usdm", "1000PEPEUSDT", "perpetual", "1000PEPE", 1000, "1")],
    }
    rows = [("0.00001000", "3", "buy", T0 - NS), ("0.00001200", "4", "buy", T0 + NS)]
    big = [("0.01000", "5", "sell", T0 - NS), ("0.01300", "6", "buy", T0 + NS)]
    import pyarrow as pa

    table = pa.Table.from_pylist(
        [
            {
                "venue": "okx-swap",
                "symbol": "PEPE-USDT-SWAP",
                "trade_id": str(i),
                "price": p,
                "qty": q,
                "side": s,
                "ts_ns": t,
                "recv_ns": t,
                "flags": 0,
            }
            for i, (p, q, s, t) in enumerate(rows)
        ]
        + [
            {
                "venue": "binance-usdm",
                "symbol": "1000PEPEUSDT",
                "trade_id": str(i),
                "price": p,
                "qty": q,
                "side": s,
                "ts_ns": t,
                "recv_ns": t,
                "flags": 0,
            }
            for i, (p, q, s, t) in enumerate(big)
        ],
        schema=pumpwatch.TRADE_SCHEMA,
    )
    a = analysis.analyse(table, mapping, T0)["venues"]
    assert Decimal(a["okx-swap"]["after"]["base_volume"]) == Decimal("40")  # 4 contracts x 10 PEPE
    assert Decimal(a["okx-swap"]["after"]["quote_volume"]) == Decimal("0.00001200") * 40
    assert Decimal(a["binance-usdm"]["reference"]["price"]) == Decimal("0.00001")  # per PEPE, not per 1000
    assert Decimal(a["binance-usdm"]["after"]["base_volume"]) == Decimal("6000")
    assert Decimal(a["binance-usdm"]["after"]["vwap"]) == Decimal("0.000013")


def test_reference_comes_from_before_the_window_when_the_window_has_none(tmp_path):
    with _recorded_store(tmp_path / "d") as store:
        store.append_trades(
            [
                _trade("okx-spot", "0G-USDT", 1, "2.00", "1", "buy", T0 - 300 * NS),
                _trade("okx-spot", "0G-USDT", 2, "2.50", "1", "buy", T0 + NS),
            ]
        )
        ev = cap.capture(store, cap.CaptureRequest("0G", T0), tmp_path / "d", chart=False)
    v = ev.analysis["venues"]["okx-spot"]
    assert v["reference"]["price"] == "2.00" and v["reference"]["ms_before_t0"] == 300_000
    assert v["max_rise_pct"] == 25.0 and v["verdict"] == "pump"
    assert ev.event["venues"]["okx-spot"]["trades"] == 1  # the older trade is not in the window


# ---------------------------------------------------------------------------------------------
# The event folder


def _pumping_store(path, n=400):
    store = _recorded_store(path)
    rows = []
    for k in range(n):
        ts = T0 - 20 * NS + k * (40 * NS // n)
        price = Decimal("0.1000") * (Decimal(1) + (Decimal(max(0, ts - T0)) / (20 * NS)) / 2)
        rows.append(_trade("binance-spot", "0GUSDT", 1000 + k, str(price.quantize(Decimal("0.0001"))), "10", "buy", ts))
        rows.append(
            _trade("okx-swap", "0G-USDT-SWAP", 5000 + k, str(price.quantize(Decimal("0.0001"))), "3", "sell", ts + 1)
        )
    rows.append(_trade("binance-spot", "BTCUSDT", 1, "65000.0", "0.1", "buy", T0))  # another coin: not captured
    store.append_trades(rows)
    return store


def test_event_folder_holds_the_window_exactly(tmp_path):
    data = tmp_path / "d"
    with _pumping_store(data) as store:
        ev = cap.capture(
            store,
            cap.CaptureRequest(
                "0G", T0, notice={"notice_id": 7, "title": "t", "markets": ["KRW"], "detected_ns": T0 + 13 * NS}
            ),
            data,
        )
        window = store.query(T0 - 20 * NS, T0 + 20 * NS + 1, symbols=["0GUSDT", "0G-USDT-SWAP"])
    assert sorted(os.listdir(ev.path)) == ["analysis.json", "chart.png", "event.json", "trades.parquet"]
    table = pq.read_table(os.path.join(ev.path, "trades.parquet"))
    assert table.num_rows == window.num_rows == 800
    assert table.select(list(pumpwatch.TRADE_SCHEMA.names)).to_pylist() == window.to_pylist()
    assert table.column("exchange_time").cast("int64").to_pylist() == table.column("ts_ns").to_pylist()
    event = json.loads(open(os.path.join(ev.path, "event.json")).read())
    assert event["detection_delay_ms"] == 13_000.0 and event["notice"]["notice_id"] == 7
    bn = event["venues"]["binance-spot"]
    assert {k: bn[k] for k in ("coverage", "trades", "lost", "instruments")} == {
        "coverage": "complete",
        "trades": 400,
        "lost": [],
        "instruments": ["0GUSDT"],
    }
    assert bn["first_trade_ns"] == min(
        window.filter(pc.equal(window.column("venue"), "binance-spot")).column("ts_ns").to_pylist()
    )
    assert event["venues"]["bybit-spot"]["coverage"] == "absent"
    assert event["window"]["start"] == "2026-09-21T14:13:00.000000000Z"
    assert open(os.path.join(ev.path, "chart.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_ticker_no_venue_trades_is_an_event_that_says_so(tmp_path):
    with _recorded_store(tmp_path / "d") as store:
        ev = cap.capture(store, cap.CaptureRequest("NOPE", T0), tmp_path / "d")
    assert ev.event["trades"] == 0 and all(v["coverage"] == "absent" for v in ev.event["venues"].values())
    assert "no venue lists NOPE" in ev.event["summary"]
    assert os.path.exists(os.path.join(ev.path, "chart.png"))


def test_a_failed_capture_leaves_no_folder_and_a_recapture_replaces_atomically(tmp_path, monkeypatch):
    data = tmp_path / "d"
    with _pumping_store(data) as store:
        import pumpwatch.chart

        def broken(*a, **k):
            raise RuntimeError("disk trouble while drawing")

        monkeypatch.setattr(pumpwatch.chart, "draw_event", broken)
        with pytest.raises(RuntimeError):
            cap.capture(store, cap.CaptureRequest("0G", T0), data)
        assert os.listdir(data / "events") == []  # no half event, no leftovers
        monkeypatch.undo()
        first = cap.capture(store, cap.CaptureRequest("0G", T0, after_ns=10 * NS), data, chart=False)
        second = cap.capture(store, cap.CaptureRequest("0G", T0), data, chart=False)
    assert first.path == second.path and os.listdir(data / "events") == ["0G_20260921T141320Z"]
    assert json.loads(open(os.path.join(second.path, "event.json")).read())["window"]["after_s"] == 20.0


def test_capture_from_another_process_equals_the_daemons(tmp_path):
    data = tmp_path / "d"
    store = _pumping_store(data)  # the writer stays open, as in a running daemon
    try:
        store.flush()
        ours = cap.capture(store, cap.CaptureRequest("0G", T0), tmp_path / "mine", chart=False)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pumpwatch.cli",
                "capture",
                "0G",
                "--at",
                "2026-09-21T14:13:20Z",
                "--data-dir",
                str(data),
                "--json",
                "--no-chart",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        theirs = json.loads(r.stdout)
    finally:
        store.close()
    assert pq.read_table(os.path.join(theirs["path"], "trades.parquet")).equals(
        pq.read_table(os.path.join(ours.path, "trades.parquet"))
    )
    assert theirs["analysis"] == json.loads(json.dumps(ours.analysis))
    drop = ("captured_ns", "captured", "instrument_mapping", "source", "notice")
    assert {k: v for k, v in theirs["event"].items() if k not in drop} == {
        k: v for k, v in ours.event.items() if k not in drop
    }


# ---------------------------------------------------------------------------------------------
# The scheduler


def _trigger(tickers, t0_ns, notice_id=1):
    return SimpleNamespace(
        notice_id=notice_id,
        title="t",
        markets=("KRW",),
        detected_ns=t0_ns + NS,
        delay_ns=NS,
        egress="direct",
        catch_up=False,
        capture=True,
        capture_tickers=tuple(tickers),
        t0_ns=t0_ns,
    )


def test_scheduler_captures_several_listings_at_once_and_resumes_pending_after_a_restart(tmp_path):
    data = tmp_path / "d"
    settings = CaptureSettings(grace_s=0.0, chart=False)
    with _pumping_store(data) as store:
        store.append_trades([_trade("gate-spot", "X2_USDT", 1, "1.0", "1", "buy", T0)])
        store.flush()

        async def go():
            s = cap.CaptureScheduler(data, settings)
            await s.on_trigger(_trigger(["0G", "X2", "../bad"], T0))
            while s.pending:
                await asyncio.sleep(0.05)
            return s

        s = asyncio.run(go())
        assert sorted(e["event"] for e in s.done) == [
            "0G_20260921T141320Z",
            "BAD_20260921T141320Z",
            "X2_20260921T141320Z",
        ]
        assert json.loads(open(data / "events" / "pending.json").read()) == {}
        # a capture left pending by a stopped daemon is made at the next start
        pending = {
            "FOO_20260921T141320Z": {
                "ticker": "FOO",
                "t0_ns": T0,
                "before_ns": 20 * NS,
                "after_ns": 20 * NS,
                "notice": {},
            }
        }
        (data / "events" / "pending.json").write_text(json.dumps(pending))

        async def again():
            s = cap.CaptureScheduler(data, settings)
            s.start()
            while s.pending:
                await asyncio.sleep(0.05)
            return s

        s2 = asyncio.run(again())
    assert [e["event"] for e in s2.done] == ["FOO_20260921T141320Z"]
    assert (data / "events" / "FOO_20260921T141320Z" / "event.json").exists()


# ---------------------------------------------------------------------------------------------
# The command line


def _cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_events_report_export_and_verify_commands(tmp_path):
    data = tmp_path / "d"
    with _pumping_store(data) as store:
        store.append_marker(
            "gap_unfillable",
            ts_ns=T0,
            venue="bybit-spot",
            symbol="0GUSDT",
            from_ts_ns=T0 - NS,
            to_ts_ns=T0,
            detail="the venue's recent-trades window does not reach back to the outage",
        )
        cap.capture(store, cap.CaptureRequest("0G", T0), data, chart=False)
        all_rows = store.query(T0 - 30 * NS, T0 + 30 * NS)
    r = _cli("events", "--data-dir", str(data), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(e["event"], e["trades"], e["absent"]) for e in rows] == [("0G_20260921T141320Z", 800, 10)]
    assert "0G_20260921T141320Z" in _cli("events", "--data-dir", str(data)).stdout
    r = _cli("report", "0G", "--data-dir", str(data))
    assert r.returncode == 0 and "binance-spot" in r.stdout and "pump" in r.stdout, r.stderr
    assert _cli("report", "NOPE_1", "--data-dir", str(data)).returncode == 1
    out = tmp_path / "x.parquet"
    r = _cli(
        "export",
        "--from",
        "2026-09-21T14:12:50Z",
        "--to",
        "2026-09-21T14:13:50Z",
        "--data-dir",
        str(data),
        "-o",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out).select(list(pumpwatch.TRADE_SCHEMA.names)).to_pylist() == all_rows.to_pylist()
    csv = tmp_path / "x.csv"
    r = _cli(
        "export",
        "--from",
        "2026-09-21T14:12:50Z",
        "--to",
        "2026-09-21T14:13:50Z",
        "--venue",
        "okx-swap",
        "--data-dir",
        str(data),
        "-o",
        str(csv),
    )
    assert r.returncode == 0, r.stderr
    t = pacsv.read_csv(
        csv,
        convert_options=pacsv.ConvertOptions(column_types={"price": "string", "qty": "string", "trade_id": "string"}),
    )
    assert t.num_rows == 400 and set(t.column("venue").to_pylist()) == {"okx-swap"}
    assert t.column("price").to_pylist() == [r["price"] for r in all_rows.to_pylist() if r["venue"] == "okx-swap"]
    r = _cli(
        "export",
        "--from",
        "2026-09-21T14:13:50Z",
        "--to",
        "2026-09-21T14:12:50Z",
        "--data-dir",
        str(data),
        "-o",
        str(out),
    )
    assert r.returncode == 1 and "must be after" in r.stderr
    r = _cli("verify", "--data-dir", str(data), "--json")
    gaps = json.loads(r.stdout)["gaps"]
    assert gaps["bybit-spot"]["gap_unfillable"] == 1 and gaps["bybit-spot"]["unfillable"][0]["seconds"] == 1.0
    assert "unfillable" in _cli("verify", "--data-dir", str(data)).stdout


def test_capture_cli_errors_say_what_to_do(tmp_path):
    r = _cli("capture", "0G", "--at", "yesterday", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "ISO-8601" in r.stderr
    r = _cli("capture", "0G", "--at", "2026-09-21T14:13:20Z", "--data-dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "no recording" in r.stderr
    r = _cli("capture", "..", "--at", "2026-09-21T14:13:20Z", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "no letters or digits" in r.stderr
