"""Tests of the pure-Python segment log store (pumpwatch.purepy.store) on its own.

The layout checks here are written from docs/FORMAT.md with int.to_bytes, not with the store's
own structs, so that they pin the format rather than the implementation.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import crc32c
import pyarrow as pa
import pytest

from pumpwatch.errors import (
    DiskFullError,
    InvalidInputError,
    InvalidTradeError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
)
from pumpwatch.purepy import store as store_mod
from pumpwatch.purepy.log import reader as reader_mod
from pumpwatch.purepy.log import record as record_mod
from pumpwatch.purepy.store import Store, verify

SEG1 = "00000000000000000001.pwlog"
SEG2 = "00000000000000000002.pwlog"
ALL_TIME = (-(1 << 63), (1 << 63) - 1)
SMALLEST_SEGMENT = 1 << 16
VENUE_CODES = {"binance-spot": 1, "binance-usdm": 2, "bybit-linear": 4, "okx-swap": 6, "gate-futures": 10}


def trade(i, ts_ns=None, **fields):
    t = dict(
        venue="binance-usdm",
        symbol="BTCUSDT",
        trade_id=str(1000 + i),
        price=f"{83000 + i}.10",
        qty="0.001",
        side="buy" if i % 2 else "sell",
        ts_ns=1_790_000_000_000_000_000 + i * 1000 if ts_ns is None else ts_ns,
        recv_ns=1_790_000_000_000_500_000 + i * 1000,
        flags=0,
    )
    t.update(fields)
    return SimpleNamespace(**t)


def as_row(t):
    return {
        k: getattr(t, k) for k in ("venue", "symbol", "trade_id", "price", "qty", "side", "ts_ns", "recv_ns", "flags")
    }


def expected(trades, start_ns, end_ns, venues=None, symbols=None, include_non_trades=False):
    """Brute force: filter the appended trades, sort stably by exchange time."""
    rows = [
        as_row(t)
        for t in trades
        if start_ns <= t.ts_ns < end_ns
        and (include_non_trades or not t.flags & 32)
        and (venues is None or t.venue in venues)
        and (symbols is None or t.symbol in symbols)
    ]
    return sorted(rows, key=lambda r: r["ts_ns"])


def segment_files(d):
    return sorted((Path(d) / "log").glob("*.pwlog"))


def header(path):
    b = Path(path).read_bytes()[:64]
    return {
        "magic": b[0:8],
        "version": int.from_bytes(b[8:10], "little"),
        "header_len": int.from_bytes(b[10:12], "little"),
        "seq": int.from_bytes(b[16:24], "little"),
        "created": int.from_bytes(b[24:32], "little", signed=True),
        "crc": int.from_bytes(b[32:36], "little"),
        "state": int.from_bytes(b[36:40], "little"),
        "published_end": int.from_bytes(b[40:48], "little"),
        "crc_ok": crc32c.crc32c(b[:32]) == int.from_bytes(b[32:36], "little"),
    }


def frame_bounds(path):
    """(start, end) of each frame up to the published end, read by hand."""
    data = Path(path).read_bytes()
    end = header(path)["published_end"]
    bounds, pos = [], 64
    while pos < end:
        length = int.from_bytes(data[pos : pos + 4], "little")
        bounds.append((pos, pos + 8 + length))
        pos += 8 + length
    assert pos == end
    return bounds


def python_env():
    """The environment for a child Python that imports pumpwatch from where this one does."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# --- round trip and layout ------------------------------------------------------------------------


def test_trades_round_trip_exactly(tmp_path):
    ids = [
        "8121136411",
        "0",
        "18446744073709551615",
        "18446744073709551616",
        "6085c09769bc506996295e36",
        "a519448f-56e5-58e6-90a1-004086e0e530",
        "007",
        "00",
        "-5",
        "１２",
    ]
    prices = ["0.0000001117", "83680.00", "-2", "107407.88000000", "10403", "0"]
    trades = []
    for i, trade_id in enumerate(ids):
        trades.append(
            trade(
                i,
                trade_id=trade_id,
                price=prices[i % len(prices)],
                qty=prices[-1 - i % len(prices)],
                symbol=["BTCUSDT", "BTC-USDT-SWAP", "sBTCUSDT", "BTC_USDT", "XBTUSDTM"][i % 5],
                venue=list(VENUE_CODES)[i % len(VENUE_CODES)],
                flags=[0, 1, 32, 255][i % 4],
            )
        )
    with Store(tmp_path) as s:
        assert s.append_trades(trades) == len(trades)
        table = s.query(*ALL_TIME, include_non_trades=True)
        non_trades_left_out = s.query()
    assert table.schema.names == ["venue", "symbol", "trade_id", "price", "qty", "side", "ts_ns", "recv_ns", "flags"]
    assert [f.type for f in table.schema] == [pa.string()] * 6 + [pa.int64(), pa.int64(), pa.uint16()]
    assert table.to_pylist() == expected(trades, *ALL_TIME, include_non_trades=True)
    # Records that consume an id without being a trade (flag 32, NON_TRADE) only when asked for.
    assert non_trades_left_out.to_pylist() == expected(trades, *ALL_TIME)
    assert len(non_trades_left_out) < len(table)


def test_input_forms_table_mapping_decimal(tmp_path):
    table = pa.table(
        {
            "venue": ["okx-swap", "okx-swap"],
            "symbol": ["BTC-USDT-SWAP"] * 2,
            "trade_id": ["1", "x1"],
            "price": ["1.5", "2.5"],
            "qty": ["3", "4"],
            "side": ["BUY", "Sell"],
            "ts_ns": pa.array([10, 20], pa.timestamp("ns")),
            "recv_ns": [11, 21],
        }
    )
    with Store(tmp_path) as s:
        assert s.append_trades(table) == 2
        assert s.append_trades([dict(as_row(trade(0, ts_ns=30)), price=Decimal("1E-7"), qty=Decimal("83680.00"))]) == 1
        assert s.append_trades(table.slice(0, 1).to_batches()[0]) == 1
        assert s.append_trades([trade(1, ts_ns=40, trade_id=8121136411, qty=12)]) == 1
        assert s.append_trades([]) == 0
        rows = s.query(0, 100).to_pylist()
    assert [(r["side"], r["flags"], r["ts_ns"], r["trade_id"]) for r in rows] == [
        ("buy", 0, 10, "1"),
        ("buy", 0, 10, "1"),
        ("sell", 0, 20, "x1"),
        ("sell", 0, 30, "1000"),
        ("buy", 0, 40, "8121136411"),
    ]
    assert (rows[3]["price"], rows[3]["qty"], rows[4]["qty"]) == ("0.0000001", "83680.00", "12")


def test_on_disk_layout_matches_format(tmp_path):
    t1 = trade(
        0,
        trade_id="8121136411",
        venue="binance-usdm",
        side="sell",
        flags=1,
        symbol="BTCUSDT",
        price="83680.00",
        qty="0.001",
    )
    t2 = trade(1, trade_id="007", venue="okx-swap", side="buy", symbol="BTC-USDT-SWAP", price="1", qty="2")
    with Store(tmp_path) as s:
        s.append_trades([t1, t2])
        s.append_marker(
            "gap_unfillable",
            venue="okx-swap",
            symbol="BTC-USDT-SWAP",
            ts_ns=5,
            from_ts_ns=1,
            to_ts_ns=2,
            from_id="10",
            to_id="20",
            detail="REST reach exceeded",
        )
        s.append_quarantined(None, 7, "bad json", b'{"x":')
    seg = Path(tmp_path) / "log" / SEG1
    h = header(seg)
    assert h["magic"] == b"PUMPWLOG" and h["version"] == 2 and h["header_len"] == 64 and h["seq"] == 1
    assert h["crc_ok"] and h["state"] == 0
    assert abs(h["created"] - time.time_ns()) < 60e9
    data = seg.read_bytes()
    assert data[12:16] == bytes(4) and data[48:64] == bytes(16)

    le = lambda n, size, signed=False: n.to_bytes(size, "little", signed=signed)  # noqa: E731

    def trade_payload(t, code, side, id_num, id_text):
        return (
            bytes([1, code, side, len(t.symbol)])
            + le(t.flags, 2)
            + bytes([len(t.price), len(t.qty)])
            + le(t.ts_ns, 8, True)
            + le(t.recv_ns, 8, True)
            + le(id_num, 8)
            + bytes([len(id_text)])
            + t.symbol.encode()
            + t.price.encode()
            + t.qty.encode()
            + id_text
        )

    payloads = [
        trade_payload(t1, 2, 2, 8121136411, b""),
        trade_payload(t2, 6, 1, 0, b"007"),
        bytes([2, 6, 5, 13, 2, 2])
        + le(19, 2)
        + le(5, 8)
        + le(1, 8)
        + le(2, 8)
        + b"BTC-USDT-SWAP1020REST reach exceeded",
        bytes([3, 0]) + le(8, 2) + le(5, 4) + le(7, 8) + b'bad json{"x":',
    ]
    frames = b"".join(le(len(p), 4) + le(crc32c.crc32c(p), 4) + p for p in payloads)
    assert data[64 : 64 + len(frames)] == frames
    assert h["published_end"] == 64 + len(frames)
    assert data[64 + len(frames) :] == bytes(len(data) - 64 - len(frames)), "preallocated space reads as zeros"
    idx = seg.with_suffix(".pwidx").read_bytes()
    assert idx[:16] == b"PWINDEX1" + le(1, 2) + le(48, 2) + bytes(4)

    # Sealed (format 2): state 1, the end, then the seal: records, CRC chain, the seal's CRC.
    with Store(tmp_path) as s:
        s.roll()
    sealed = seg.read_bytes()
    assert len(sealed) == 64 + len(frames) and sealed[64:] == frames
    chain = crc32c.crc32c(b"".join(le(crc32c.crc32c(p), 4) for p in payloads))
    seal = le(1, 4) + le(64 + len(frames), 8) + le(len(payloads), 8) + le(chain, 4)
    assert sealed[36:60] == seal
    assert sealed[60:64] == le(crc32c.crc32c(sealed[:60]), 4)


def write_segment(path, seq, frames, state, prealloc=0):
    """A segment written by hand, as another implementation would write it (no index file)."""
    ident = (
        b"PUMPWLOG"
        + (1).to_bytes(2, "little")
        + (64).to_bytes(2, "little")
        + bytes(4)
        + seq.to_bytes(8, "little")
        + time.time_ns().to_bytes(8, "little")
    )
    end = 64 + len(frames)
    head = (
        ident
        + crc32c.crc32c(ident).to_bytes(4, "little")
        + state.to_bytes(4, "little")
        + end.to_bytes(8, "little")
        + bytes(16)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + frames + bytes(prealloc))


def test_reads_segments_written_by_another_writer(tmp_path):
    src = tmp_path / "src"
    with Store(src) as s:
        trades = [trade(i) for i in range(50)]
        s.append_trades(trades)
    bounds = frame_bounds(src / "log" / SEG1)
    frames = (src / "log" / SEG1).read_bytes()[64 : bounds[-1][1]]
    # Two segments, no index files: one sealed, one active with zeros after its records.
    dst = tmp_path / "dst"
    write_segment(dst / "log" / SEG1, 1, frames[: bounds[20][0] - 64], state=1)
    write_segment(dst / "log" / "00000000000000000002.pwlog", 2, frames[bounds[20][0] - 64 :], state=0, prealloc=4096)
    r = Store.open_readonly(dst)
    assert r.query(*ALL_TIME).to_pylist() == expected(trades, *ALL_TIME)
    assert verify(dst)["ok"] and verify(dst)["trades"] == 50
    with Store(dst) as s:  # the writer takes over: seals nothing older than the last, appends on
        s.append_trades([trade(50)])
        assert s.query(*ALL_TIME).num_rows == 51
    assert header(dst / "log" / "00000000000000000002.pwlog")["state"] == 0


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("venue", "binance", ["venue", "binance-spot"]),
        ("side", "taker", ["side", "buy"]),
        ("price", "1e-7", ["price", "plain decimal"]),
        ("price", "5.", ["price"]),
        ("price", ".5", ["price"]),
        ("price", "+1", ["price"]),
        ("price", " 1", ["price"]),
        ("price", "NaN", ["price"]),
        ("price", 1.5, ["price", "exact"]),
        ("price", True, ["price", "exact"]),
        ("price", Decimal("NaN"), ["price"]),
        ("price", "1" * 256, ["price", "255"]),
        ("qty", "", ["qty"]),
        ("qty", "1,5", ["qty"]),
        ("symbol", "", ["symbol", "empty"]),
        ("symbol", "X" * 256, ["symbol", "255"]),
        ("symbol", "\udc80", ["symbol", "UTF-8"]),
        ("trade_id", "", ["trade_id", "empty"]),
        ("trade_id", None, ["trade_id"]),
        ("flags", 1024, ["flags"]),  # 256 AGGREGATED and 512 UNKNOWN_TYPE are flags
        ("flags", -1, ["flags"]),
        ("ts_ns", 1.5, ["ts_ns"]),
        ("recv_ns", 1 << 63, ["recv_ns"]),
    ],
)
def test_invalid_trades_are_rejected_whole_batch(tmp_path, field, value, words):
    with Store(tmp_path) as s:
        s.append_trades([trade(0)])
        bad = [trade(1), trade(2, **{field: value})]
        with pytest.raises(InvalidTradeError) as err:
            s.append_trades(bad)
        assert isinstance(err.value, ValueError)
        msg = str(err.value)
        assert "row 1 of the batch" in msg
        for w in words:
            assert w in msg
        assert s.query(*ALL_TIME).num_rows == 1, "nothing of a rejected batch is written"


def test_valid_edge_values_are_accepted(tmp_path):
    with Store(tmp_path) as s:
        s.append_trades([trade(0, symbol="X" * 255, trade_id="é" * 127, price="1" * 255, flags=255, ts_ns=-(1 << 63))])
        assert s.query(include_non_trades=True).to_pylist()[0]["trade_id"] == "é" * 127  # flags 255 has NON_TRADE


# --- queries --------------------------------------------------------------------------------------


def test_query_window_filters_and_order(tmp_path):
    trades = []
    for i in range(60):
        venue = ["binance-spot", "okx-swap", "gate-futures"][i % 3]
        symbol = ["BTCUSDT", "ETHUSDT"][i // 3 % 2]
        trades.append(trade(i, ts_ns=1000 + (i * 7) % 20 * 10, venue=venue, symbol=symbol))  # many equal times
    with Store(tmp_path) as s:
        for i in range(0, 60, 7):
            s.append_trades(trades[i : i + 7])
            s.roll()  # equal times across segments keep log order too
        assert len(segment_files(tmp_path)) == 10
        for start, end in [
            (1000, 1001),
            (1000, 1190),
            (1010, 1010),
            (1050, 1100),
            (0, 1000),
            (1190, 1191),
            (1191, 5000),
        ]:
            assert s.query(start, end).to_pylist() == expected(trades, start, end), (start, end)
        assert s.query().to_pylist() == expected(trades, *ALL_TIME)
        assert s.query(1100).to_pylist() == expected(trades, 1100, ALL_TIME[1])
        assert s.query(0, 5000, venues=["okx-swap"]).to_pylist() == expected(trades, 0, 5000, venues={"okx-swap"})
        assert s.query(0, 5000, venues="okx-swap", symbols=["ETHUSDT"]).to_pylist() == expected(
            trades, 0, 5000, venues={"okx-swap"}, symbols={"ETHUSDT"}
        )
        assert s.query(0, 5000, symbols=["NOPE"]).num_rows == 0
        empty = s.query(5000, 6000)
        assert empty.num_rows == 0 and empty.schema == store_mod.TRADE_SCHEMA
        with pytest.raises(InvalidInputError, match="nasdaq"):
            s.query(0, 1, venues=["nasdaq"])


def test_markers_and_quarantine_round_trip(tmp_path):
    big = bytes(range(256)) * (record_mod.QUARANTINE_RAW_MAX // 256 + 2)
    with Store(tmp_path) as s:
        s.append_marker("connection_up", venue="bybit-linear", ts_ns=300)
        s.append_marker("recorder_start", ts_ns=100, detail="v1 ✓")
        s.append_trades([trade(0)])
        s.append_marker(
            "gap_filled",
            venue="gate-futures",
            symbol="BTC_USDT",
            ts_ns=200,
            from_ts_ns=-5,
            to_ts_ns=7,
            from_id="0001",
            to_id="99",
            detail="d" * 65535,
        )
        s.append_marker("gap_found", venue="okx-swap", ts_ns=900, from_ts_ns=400, to_ts_ns=500)
        s.append_quarantined("phemex-perp", 42, "unknown field", b"\x00\xff raw")
        s.append_quarantined(None, 43, "not json", "{text frame ✓")
        s.append_quarantined("okx-spot", 44, "huge", big)
        for bad, words in [
            (dict(kind="gap"), "marker kind"),
            (dict(kind="gap_found", detail="d" * 65536), "65535"),
            (dict(kind="gap_found", venue="nasdaq"), "venue"),
            (dict(kind="gap_found", symbol="s" * 256), "255"),
        ]:
            with pytest.raises(InvalidInputError, match=words):
                s.append_marker(ts_ns=1, **bad)
        with pytest.raises(InvalidInputError, match="venue"):
            s.append_quarantined("nasdaq", 1, "x", b"")
        markers = s.markers()
        quarantined = s.quarantined()
        # A marker counts when its time, or its known span, touches the window.
        assert s.markers(150, 300).column("ts_ns").to_pylist() == [200]
        assert s.markers(start_ns=200).column("ts_ns").to_pylist() == [300, 200, 900]
        assert s.markers(450, 460).column("kind").to_pylist() == ["gap_found"]
        assert s.markers(-10, -4).column("kind").to_pylist() == ["gap_filled"]
        assert [q[1] for q in s.quarantined(43, 44)] == [43]
    assert markers.schema == store_mod.MARKER_SCHEMA
    rows = markers.to_pylist()
    assert [r["ts_ns"] for r in rows] == [300, 100, 200, 900], "log order"
    assert rows[1] == dict(
        kind="recorder_start",
        venue=None,
        symbol="",
        ts_ns=100,
        from_ts_ns=0,
        to_ts_ns=0,
        from_id="",
        to_id="",
        detail="v1 ✓",
    )
    assert rows[2] == dict(
        kind="gap_filled",
        venue="gate-futures",
        symbol="BTC_USDT",
        ts_ns=200,
        from_ts_ns=-5,
        to_ts_ns=7,
        from_id="0001",
        to_id="99",
        detail="d" * 65535,
    )
    assert quarantined[:2] == [
        ("phemex-perp", 42, "unknown field", b"\x00\xff raw"),
        (None, 43, "not json", "{text frame ✓".encode()),
    ]
    _venue, _recv_ns, reason, raw = quarantined[2]
    assert raw == big[: record_mod.QUARANTINE_RAW_MAX]
    assert reason == f"huge (frame of {len(big)} bytes cut to {record_mod.QUARANTINE_RAW_MAX})"
    assert verify(tmp_path)["quarantined"] == 3


# --- segments -------------------------------------------------------------------------------------


def check_sealed(path):
    h = header(path)
    assert h["state"] == 1 and h["crc_ok"]
    assert path.stat().st_size == h["published_end"], "a sealed segment is truncated to its published end"
    idx = path.with_suffix(".pwidx").read_bytes()
    entries = [idx[i : i + 48] for i in range(16, len(idx), 48)]
    pos = 64
    for e in entries:
        assert crc32c.crc32c(e[:40]) == int.from_bytes(e[40:44], "little")
        assert int.from_bytes(e[0:8], "little") == pos
        pos = int.from_bytes(e[8:16], "little")
    assert pos == h["published_end"], "a sealed segment's index covers all of it"


def test_settings_are_checked():
    for bad in [
        dict(segment_max_bytes=SMALLEST_SEGMENT - 1),
        dict(segment_max_bytes=(1 << 40) + 1),
        dict(segment_span_s=0),
        dict(fsync_interval=-1),
        dict(fsync_interval=float("nan")),
    ]:
        with pytest.raises(InvalidInputError):
            Store("/nonexistent/never-created", **bad)
    assert not os.path.exists("/nonexistent/never-created")


def test_roll_by_size_splits_big_batches(tmp_path):
    trades = [trade(i) for i in range(9000)]
    with Store(tmp_path, segment_max_bytes=SMALLEST_SEGMENT) as s:
        for i in range(0, 3000, 97):
            s.append_trades(trades[i : min(i + 97, 3000)])
        s.append_trades(trades[3000:])  # several segments' worth in one batch
        files = segment_files(tmp_path)
        assert len(files) >= 8
        assert [f.name for f in files] == [f"{n:020d}.pwlog" for n in range(1, len(files) + 1)]
        for f in files[:-1]:
            check_sealed(f)
            assert SMALLEST_SEGMENT / 2 < f.stat().st_size <= SMALLEST_SEGMENT
        assert header(files[-1])["state"] == 0
        assert s.query().to_pylist() == expected(trades, *ALL_TIME)
    report = verify(tmp_path)
    assert report["ok"] and report["segments"] == len(files) and report["trades"] == 9000


def test_a_batch_that_does_not_fit_starts_a_new_segment(tmp_path):
    # As the Rust writer does: a batch is not spread over the rest of the active segment.
    first, second = [trade(i) for i in range(600)], [trade(i) for i in range(600, 1200)]
    with Store(tmp_path, segment_max_bytes=SMALLEST_SEGMENT) as s:
        s.append_trades(first)
        end_first = header(Path(tmp_path) / "log" / SEG1)["published_end"]
        assert end_first > SMALLEST_SEGMENT / 2
        s.append_trades(second)
    check_sealed(Path(tmp_path) / "log" / SEG1)
    assert header(Path(tmp_path) / "log" / SEG1)["published_end"] == end_first
    assert len(frame_bounds(Path(tmp_path) / "log" / SEG2)) == 600


def test_record_bigger_than_a_segment_gets_its_own(tmp_path):
    with Store(tmp_path, segment_max_bytes=SMALLEST_SEGMENT) as s:
        s.append_trades([trade(0)])
        s.append_quarantined(None, 1, "big", b"x" * 100_000)
        s.append_trades([trade(1)])
        assert len(s.quarantined()[0][3]) == 100_000
    assert len(segment_files(tmp_path)) == 3
    assert verify(tmp_path)["ok"]


def test_roll_by_time(tmp_path):
    with Store(tmp_path, segment_span_s=0.3) as s:
        s.append_trades([trade(0)])
        s.append_trades([trade(1)])
        assert len(segment_files(tmp_path)) == 1
        time.sleep(0.35)
        s.append_trades([trade(2)])
        files = segment_files(tmp_path)
        assert len(files) == 2
        check_sealed(files[0])
        assert header(files[1])["created"] > header(files[0])["created"] + 0.3e9
        assert s.query().num_rows == 3


def test_reopen_after_close_appends_to_the_active_segment(tmp_path):
    trades = [trade(i) for i in range(30)]
    with Store(tmp_path) as s:
        assert segment_files(tmp_path) == [Path(tmp_path) / "log" / SEG1], "a writer always has an active segment"
        s.append_trades(trades[:10])
        s.append_marker("recorder_stop", ts_ns=1)
    seg = Path(tmp_path) / "log" / SEG1
    assert header(seg)["state"] == 0, "close seals nothing"
    assert (Path(tmp_path) / "LOCK").read_text().strip() == f"pid {os.getpid()}"
    with Store(tmp_path) as s:
        assert s.query().to_pylist() == expected(trades[:10], *ALL_TIME)
        assert s.recovery_report == dict(
            segments=1,
            records_in_active=11,
            truncated=[],
            damaged=[],
            saved_to=[],
            sealed=[],
            headers_repaired=[],
            compression=[],
        )
        s.append_trades(trades[10:])
        assert len(segment_files(tmp_path)) == 1
    with Store(tmp_path) as s:
        assert s.query().to_pylist() == expected(trades, *ALL_TIME)
        assert len(s.markers()) == 1
    assert s.closed
    s.close()  # closing twice is fine
    with pytest.raises(StoreClosedError, match="closed"):
        s.query(0, 1)
    with pytest.raises(StoreError):
        s.append_trades([trade(0)])
    assert not (Path(tmp_path) / "recovered").exists()
    with Store(tmp_path) as s:
        s.close(seal=True)  # seals the active segment: the next writer starts a new one
    check_sealed(seg)
    assert header(Path(tmp_path) / "log" / SEG2)["state"] == 0


def test_older_segment_left_active_is_sealed_on_open(tmp_path):
    with Store(tmp_path) as s:
        s.append_trades([trade(i) for i in range(20)])
        s.roll()
        s.append_trades([trade(i) for i in range(20, 40)])
    first = segment_files(tmp_path)[0]
    # As after a crash in the middle of a roll: still active, preallocated zeros after its records.
    data = bytearray(first.read_bytes())
    data[36:40] = (0).to_bytes(4, "little")
    first.write_bytes(bytes(data) + bytes(10000))
    first.with_suffix(".pwidx").unlink()
    (Path(tmp_path) / "log" / "00000000000000000099.pwlog.tmp").write_bytes(b"half-created")
    with Store(tmp_path) as s:
        assert s.query().num_rows == 40
        assert s.recovery_report["sealed"] == [first.name]
    check_sealed(first)
    assert not list((Path(tmp_path) / "log").glob("*.tmp"))


def test_damaged_header_is_repaired_by_the_writer(tmp_path):
    trades = [trade(i) for i in range(50)]
    with Store(tmp_path) as s:
        s.append_trades(trades)
    seg = Path(tmp_path) / "log" / SEG1
    data = bytearray(seg.read_bytes())
    data[20] ^= 0xFF  # inside the CRC-covered part
    seg.write_bytes(bytes(data))
    report = verify(tmp_path)
    assert not report["ok"] and [h["segment"] for h in report["headers"]] == [SEG1] and report["trades"] == 50
    assert Store.open_readonly(tmp_path).query().to_pylist() == expected(trades, *ALL_TIME), "records are still read"
    with Store(tmp_path) as s:
        assert s.recovery_report["headers_repaired"] == [SEG1]
        assert s.query().to_pylist() == expected(trades, *ALL_TIME)
    h = header(seg)
    assert h["crc_ok"] and h["seq"] == 1 and h["published_end"] == frame_bounds(seg)[-1][1]
    assert verify(tmp_path)["ok"]


def test_index_skips_blocks_and_matches_brute_force(tmp_path, monkeypatch):
    trades = [
        trade(i, ts_ns=10_000 + i * 10, trade_id=f"{i:x}-{i}", symbol=["BTCUSDT", "ETHUSDT"][i % 2])
        for i in range(12_000)
    ]
    # A backfill appended late carries old exchange times: blocks overlap, times are not monotonic.
    backfill = [trade(20_000 + i, ts_ns=10_000 + i * 37 + 5, flags=64) for i in range(2_000)]
    with Store(tmp_path) as s:
        for i in range(0, len(trades), 1000):
            s.append_trades(trades[i : i + 1000])
        s.append_trades(backfill)
        s.append_trades([trade(99_999, ts_ns=15_000)])  # after the last index entry: the scanned tail
        everything = trades + backfill + [trade(99_999, ts_ns=15_000)]
        seg = Path(tmp_path) / "log" / SEG1
        assert (seg.with_suffix(".pwidx").stat().st_size - 16) // 48 >= 12

        reads = []
        real_pread = reader_mod.pread_range

        def counting_pread(fd, start, stop):
            reads.append(stop - start)
            return real_pread(fd, start, stop)

        monkeypatch.setattr(reader_mod, "pread_range", counting_pread)
        windows = [
            (10_000, 10_100),
            (50_000, 50_010),
            (0, 10_000),
            (14_990, 15_001),
            (60_000, 200_000),
            (85_000, 95_000),
            ALL_TIME,
        ]
        for start, end in windows:
            reads.clear()
            assert s.query(start, end).to_pylist() == expected(everything, start, end), (start, end)
            if (start, end) == (50_000, 50_010):
                assert sum(reads) < header(seg)["published_end"] / 3, "blocks outside the window are skipped"
        assert s.query(10_000, 200_000, symbols=["ETHUSDT"]).to_pylist() == expected(
            everything, 10_000, 200_000, symbols={"ETHUSDT"}
        )
    # The index is a hint: damaged or missing, the answers stay the same.
    idx = seg.with_suffix(".pwidx")
    raw = bytearray(idx.read_bytes())
    raw[16 + 48 * 5 + 20] ^= 0xFF
    idx.write_bytes(bytes(raw))
    r = Store.open_readonly(tmp_path)
    assert r.query(50_000, 50_010).to_pylist() == expected(everything, 50_000, 50_010)
    idx.unlink()
    assert r.query(14_990, 15_001).to_pylist() == expected(everything, 14_990, 15_001)
    with Store(tmp_path) as s:  # opening rebuilds the active segment's index
        assert (idx.stat().st_size - 16) // 48 >= 12
    assert idx.read_bytes()[16 + 48 * 5 : 16 + 48 * 6] != bytes(raw[16 + 48 * 5 : 16 + 48 * 6])


# --- damage ---------------------------------------------------------------------------------------


def test_torn_tail_recovery_keeps_exactly_the_complete_records(tmp_path):
    src = tmp_path / "src"
    trades = [trade(i, trade_id=("x" * (i % 7)) + str(i)) for i in range(40)]
    with Store(src, segment_max_bytes=1 << 20) as s:
        s.append_trades(trades)
    seg_bytes = (src / "log" / SEG1).read_bytes()
    bounds = frame_bounds(src / "log" / SEG1)
    ends = [64] + [e for _, e in bounds]
    for cut in range(bounds[-4][0], bounds[-1][1] + 1):
        d = tmp_path / f"cut{cut}"
        (d / "log").mkdir(parents=True)
        seg = d / "log" / SEG1
        seg.write_bytes(seg_bytes[:cut])
        shutil.copy(src / "log" / "00000000000000000001.pwidx", d / "log")
        kept_end = max(e for e in ends if e <= cut)
        kept = sum(1 for _, e in bounds if e <= cut)

        # The torn tail reaches to its last non-zero byte (zeros alone are how records end).
        torn = seg_bytes[kept_end:cut].rstrip(b"\0")
        report = verify(d)
        if cut == kept_end:
            assert report["torn_tail"] == [] and report["ok"]
        else:
            assert [(t["segment"], t["offset"], t["length"]) for t in report["torn_tail"]] == [
                (SEG1, kept_end, len(torn))
            ]
            assert not report["ok"]
        assert report["trades"] == kept and report["damaged"] == []

        with Store(d, segment_max_bytes=1 << 20) as s:  # small preallocation: quick verify
            assert s.query(*ALL_TIME).to_pylist() == expected(trades[:kept], *ALL_TIME)
            assert seg.stat().st_size == kept_end and header(seg)["published_end"] == kept_end
            saved = list((d / "recovered").glob("*")) if (d / "recovered").exists() else []
            if cut > kept_end:
                assert [p.read_bytes() for p in saved] == [torn]
                assert saved[0].name.startswith(f"{SEG1}.{kept_end}.") and saved[0].name.endswith(".torn")
                assert s.recovery_report["truncated"][0]["offset"] == kept_end
            else:
                assert saved == []
            s.append_trades([trade(100)])
        assert verify(d)["ok"] and verify(d)["trades"] == kept + 1
        shutil.rmtree(d)


def test_unpublished_records_and_torn_garbage_after_a_crash(tmp_path):
    with Store(tmp_path, segment_max_bytes=1 << 20) as s:
        s.append_trades([trade(i) for i in range(10)])
    seg = Path(tmp_path) / "log" / SEG1
    published = header(seg)["published_end"]
    # A crash after writing two more records and half a third, before the header was updated.
    other = tmp_path / "other"
    with Store(other, segment_max_bytes=1 << 20) as s:
        s.append_trades([trade(i) for i in range(13)])
    more = (other / "log" / SEG1).read_bytes()[published : header(other / "log" / SEG1)["published_end"] - 20]
    with open(seg, "r+b") as f:
        f.seek(published)
        f.write(more)
    assert Store.open_readonly(tmp_path).query(*ALL_TIME).num_rows == 10, "readers stop at the published end"
    complete_end = frame_bounds(other / "log" / SEG1)[11][1]
    # Past the published end, trailing zeros are preallocated space: the torn tail ends at the last
    # non-zero byte.
    assert [(t["segment"], t["offset"], t["length"]) for t in verify(tmp_path)["torn_tail"]] == [
        (SEG1, complete_end, published + len(more.rstrip(b"\0")) - complete_end)
    ]
    with Store(tmp_path) as s:
        assert s.query(*ALL_TIME).num_rows == 12, "complete records are kept, the torn one is cut"
    assert verify(tmp_path)["ok"]
    assert len(list((Path(tmp_path) / "recovered").iterdir())) == 1


@pytest.mark.parametrize("where", ["length", "crc", "kind", "middle", "last byte"])
def test_flipped_byte_damages_one_record_only(tmp_path, where):
    trades = [trade(i) for i in range(2000)]  # several index blocks
    with Store(tmp_path) as s:
        s.append_trades(trades)
    seg = Path(tmp_path) / "log" / SEG1
    bounds = frame_bounds(seg)
    k = 1000
    start, end = bounds[k]
    at = {"length": start + 1, "crc": start + 5, "kind": start + 8, "middle": (start + end) // 2, "last byte": end - 1}[
        where
    ]
    data = bytearray(seg.read_bytes())
    data[at] ^= 0x40
    seg.write_bytes(bytes(data))

    survivors = trades[:k] + trades[k + 1 :]
    report = verify(tmp_path)
    assert [(d["segment"], d["offset"], d["length"]) for d in report["damaged"]] == [(SEG1, start, end - start)]
    assert report["damaged"][0]["reason"]
    assert report["torn_tail"] == [] and not report["ok"] and report["trades"] == 1999
    assert Store.open_readonly(tmp_path).query(*ALL_TIME).to_pylist() == expected(survivors, *ALL_TIME)
    with Store(tmp_path) as s:  # recovery skips damage in the middle, it does not truncate there
        assert s.query(*ALL_TIME).to_pylist() == expected(survivors, *ALL_TIME)
        s.append_trades([trade(5000)])
        assert s.query(*ALL_TIME).num_rows == 2000
    assert verify(tmp_path)["damaged"] == report["damaged"]


def test_verify_reports_sealed_segment_cut_short(tmp_path):
    with Store(tmp_path) as s:
        s.append_trades([trade(i) for i in range(60)])
        s.roll()
    first = segment_files(tmp_path)[0]
    bounds = frame_bounds(first)
    os.truncate(first, bounds[-2][1])  # on a record boundary: only the header says bytes are missing
    report = verify(tmp_path)
    assert not report["ok"]
    assert report["damaged"] == [
        {
            "segment": first.name,
            "offset": bounds[-2][1],
            "length": bounds[-1][1] - bounds[-2][1],
            "reason": "[truncated] sealed segment file ends before its published end (cut short)",
        }
    ]
    assert Store.open_readonly(tmp_path).query(*ALL_TIME).num_rows == 59


# --- processes ------------------------------------------------------------------------------------


def test_second_writer_is_refused(tmp_path):
    with Store(tmp_path):
        with pytest.raises(StoreLockedError) as err:
            Store(tmp_path)
        msg = str(err.value)
        assert str(tmp_path) in msg and f"pid {os.getpid()}" in msg and "open_readonly" in msg
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent("""
                import sys
                from pumpwatch.purepy.store import Store
                from pumpwatch.errors import StoreLockedError
                try:
                    Store(sys.argv[1])
                except StoreLockedError as e:
                    print("locked:", e)
            """),
                str(tmp_path),
            ],
            env=python_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.stdout.startswith("locked:") and f"pid {os.getpid()}" in child.stdout, child.stderr
        assert Store.open_readonly(tmp_path).query(0, 1).num_rows == 0
    Store(tmp_path).close()  # released on close


def test_readonly_reader_in_another_process_sees_new_appends(tmp_path):
    with Store(tmp_path, segment_max_bytes=SMALLEST_SEGMENT, fsync_interval=0) as s:
        s.append_trades([trade(i) for i in range(5)])
        reader = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent("""
                import sys
                from pumpwatch.purepy.store import Store
                r = Store.open_readonly(sys.argv[1])
                for line in sys.stdin:
                    t = r.query(-(1 << 63), (1 << 63) - 1)
                    print(t.num_rows, t.column("trade_id").to_pylist()[-1], len(r.markers()), flush=True)
            """),
                str(tmp_path),
            ],
            env=python_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:

            def ask():
                reader.stdin.write("?\n")
                reader.stdin.flush()
                return reader.stdout.readline().split()

            assert ask() == ["5", "1004", "0"]
            for i in range(5, 4000, 500):  # rolls several segments
                s.append_trades([trade(j) for j in range(i, min(i + 500, 4000))])
            s.append_marker("gap_found", ts_ns=1)
            assert len(segment_files(tmp_path)) > 3
            assert ask() == ["4000", "4999", "1"]
            s.append_trades([trade(4000)])
            assert ask() == ["4001", "5000", "1"]
        finally:
            reader.stdin.close()
            reader.wait(timeout=60)
    readonly = Store.open_readonly(tmp_path)
    with pytest.raises(StoreError, match="read-only"):
        readonly.append_trades([trade(0)])


def test_disk_full_damages_nothing_and_recovers(tmp_path):
    # The file-size limit makes preallocation past 64 MiB fail with EFBIG, like a full disk.
    script = textwrap.dedent("""
        import json, resource, sys
        from types import SimpleNamespace
        from pumpwatch.purepy.store import Store, verify
        from pumpwatch.errors import DiskFullError

        def trade(i):
            return SimpleNamespace(venue="okx-spot", symbol="BTC-USDT", trade_id=str(i), price="1.5",
                                   qty="2", side="buy", ts_ns=i, recv_ns=i)

        d = sys.argv[1]
        out = {}
        s = Store(d)
        s.append_trades([trade(0)])
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, hard))
        n = 0
        try:
            while True:
                s.append_quarantined("okx-spot", n, "big", b"q" * (1 << 20))
                n += 1
        except DiskFullError as e:
            out["error"] = [e.errno, str(e), isinstance(e, OSError)]
        out["stored"] = n
        try:
            s.append_trades([trade(i) for i in range(1, 20000)])
        except DiskFullError:
            out["batch_refused"] = True
        out["after_full"] = [s.query(0, 1 << 62).num_rows, len(s.quarantined()), verify(d)["ok"]]
        s.append_trades([trade(1)])  # what still fits is written
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        s.append_quarantined("okx-spot", n, "big", b"q" * (1 << 20))
        s.append_trades([trade(i) for i in range(2, 20000)])
        out["after_space"] = [s.query(0, 1 << 62).num_rows, len(s.quarantined())]
        s.close()
        out["verify"] = verify(d)
        print(json.dumps(out))
    """)
    child = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=python_env(), capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    errno_, message, is_oserror = out["error"]
    assert errno_ in (27, 28) and is_oserror  # EFBIG, ENOSPC
    assert "free disk space" in message and "nothing already stored was touched" in message
    assert out["stored"] == 63 and out["batch_refused"]
    assert out["after_full"] == [1, 63, True]
    assert out["after_space"] == [20000, 64]
    assert out["verify"]["ok"] and out["verify"]["records"] == 20000 + 64


def test_disk_full_error_type():
    assert issubclass(DiskFullError, OSError) and issubclass(DiskFullError, StoreError)


# --- the log package: one module per job, dependencies one way, a public encoder -------------------

# The modules of pumpwatch.purepy.log in dependency order: each imports only modules before it.
LOG_MODULES = ("record", "segment", "scan", "index", "compress", "hold", "writer", "reader", "verify")


def test_log_modules_depend_one_way_and_no_module_imports_a_private_name():
    """No circle between the log modules (as in rust/core/src/log/), and no module of
    pumpwatch.purepy reaches into another's underscore names (ingest used to take the store's
    `_encode_*` and call `store._append`)."""
    package = Path(store_mod.__file__).parent
    log_modules = {path.stem for path in (package / "log").glob("*.py")} - {"__init__"}
    assert log_modules == set(LOG_MODULES), "a new log module needs its place in LOG_MODULES"
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("_append", "_encode_trade"):
                pytest.fail(f"{path.name}:{node.lineno} uses {node.attr}")
            if not isinstance(node, ast.ImportFrom):
                continue
            private = [a.name for a in node.names if a.name.startswith("_") and a.name != "annotations"]
            assert not private, f"{path.name}:{node.lineno} imports {private} from {node.module}"
            if path.parent.name == "log" and node.level == 1:
                assert path.stem != "__init__", "log/__init__ imports nothing: its modules stay one way"
                assert LOG_MODULES.index(node.module) < LOG_MODULES.index(path.stem), (
                    f"log/{path.name} imports .{node.module}, which comes after it"
                )


def test_append_encoded_writes_what_append_trades_writes(tmp_path):
    """The public encoder with Store.append_encoded (the path of purepy's ingest) lays down the
    same record bytes and index as append_trades / append_marker / append_quarantined."""
    trades = [trade(i, symbol=["BTCUSDT", "ETHUSDT"][i % 2]) for i in range(3000)]
    with Store(tmp_path / "facade") as s:
        s.append_trades(trades)
        s.append_marker("gap_found", ts_ns=5, venue="okx-swap", symbol="BTC-USDT-SWAP", from_id="1", to_id="2")
        s.append_quarantined("okx-swap", 7, "bad frame", b"{oops")
    frames, trade_ts = [], []
    for t in trades:
        frame, ts = record_mod.encode_trade(
            t.venue, t.symbol, t.trade_id, t.price, t.qty, t.side, t.ts_ns, t.recv_ns, t.flags
        )
        frames.append(frame)
        trade_ts.append(ts)
    frames.append(record_mod.encode_marker("gap_found", "okx-swap", "BTC-USDT-SWAP", 5, 0, 0, "1", "2", ""))
    frames.append(record_mod.encode_quarantined("okx-swap", 7, "bad frame", b"{oops"))
    trade_ts += [None, None]
    with Store(tmp_path / "encoded") as s:
        s.append_encoded(frames, trade_ts)
        assert s.query(*ALL_TIME).to_pylist() == expected(trades, *ALL_TIME)
        assert s.markers().num_rows == 1 and s.quarantined() == [("okx-swap", 7, "bad frame", b"{oops")]
    a, b = (tmp_path / side / "log" / SEG1 for side in ("facade", "encoded"))
    end = header(a)["published_end"]
    assert header(b)["published_end"] == end == 64 + sum(map(len, frames))
    assert a.read_bytes()[64:end] == b.read_bytes()[64:end] == b"".join(frames)
    index = a.with_suffix(".pwidx").read_bytes()
    assert len(index) > 16 + 48 and index == b.with_suffix(".pwidx").read_bytes()
    report = verify(tmp_path / "encoded")
    assert report["ok"] and (report["trades"], report["markers"], report["quarantined"]) == (3000, 1, 1)


# --- The recorder's store: the same status, ring and disk answers as the Rust store ---------------

_TRADE_FIELDS = ("venue", "symbol", "trade_id", "price", "qty", "side", "ts_ns", "recv_ns", "flags")


def _fields(trades) -> list[tuple]:
    return [tuple(getattr(t, k) for k in _TRADE_FIELDS) for t in trades]


def _recorder_views(store) -> dict:
    """What the recorder reads of its store (collector.status, daemon), on one input."""
    import pumpwatch

    late = store.ring_reader()
    store.append_marker("recorder_start", ts_ns=1, detail="venues: binance-usdm")
    store.append_trades([pumpwatch.Trade(**as_row(trade(i))) for i in range(50)])
    early = store.ring_reader(from_oldest=True)
    backfilled = [pumpwatch.Trade(**as_row(trade(i, flags=64))) for i in range(50, 60)]
    store.ingest_trades(backfilled)  # backfills are in the ring but not live activity
    first_poll = late.poll()
    first_of_early = early.poll(max_trades=10)
    big = [pumpwatch.Trade(**as_row(trade(i, symbol="ETHUSDT", recv_ns=7 + i // 3))) for i in range(100, 20_100)]
    store.append_trades(big)  # far more than the ring holds: the readers count what they missed
    activity = late.poll_activity(max_trades=10**9)
    return {
        "first_poll": (_fields(first_poll[0]), first_poll[1]),
        "early": (_fields(first_of_early[0]), first_of_early[1]),
        "activity": activity,
        "late_missed": late.missed,
        "after": late.poll(),
        "disk": store.disk_state(),
        "compression": store.compression_stats(),
        "ingest": store.ingest_stats(),
    }


def test_both_engines_give_the_recorder_the_same_status_ring_and_disk_answers(tmp_path):
    """`pumpwatch.Store` and `purepy.Store` on the same input: the live ring (trades, what a
    reader missed, per-symbol activity) and the status dicts (disk, compression) say the same."""
    import pumpwatch

    rust_store = pumpwatch.Store(tmp_path / "rust", ring_bytes=64 << 10, zstd_level=0, hold_on_disk_full=True)
    pure_store = Store(tmp_path / "pure", ring_bytes=64 << 10, hold_on_disk_full=True)
    with rust_store, pure_store:
        rust, pure = _recorder_views(rust_store), _recorder_views(pure_store)
    assert pure == rust
    trades, missed = pure["first_poll"]
    assert missed == 0 and [t[2] for t in trades] == [str(1000 + i) for i in range(60)]
    assert [t[2] for t in pure["early"][0]] == [str(1000 + i) for i in range(10)]
    [(venue, symbol, sightings, last_recv), *others], missed_now = pure["activity"]
    assert missed_now == pure["late_missed"]
    # Live ETHUSDT only (three trades a receive time); what the ring dropped is counted missed.
    assert (venue, symbol, others) == ("binance-usdm", "ETHUSDT", [])
    assert 0 < pure["late_missed"] < 20_000 and last_recv == 7 + 20_099 // 3
    seen = range(100 + pure["late_missed"], 20_100)  # the ids the ring still held
    assert sightings == len({7 + i // 3 for i in seen})
    assert pure["after"] == ([], 0)
    assert pure["disk"]["summary"] == "" and pure["disk"]["full_since_ns"] == 0 and pure["disk"]["episodes"] == 0
    assert set(pure["compression"]) == {
        "segments",
        "plain_bytes",
        "compressed_bytes",
        "seconds",
        "pending",
        "errors",
        "last_error",
    }
    assert Store(tmp_path / "pure").disk_state()["held_records"] == 0
    closed = Store(tmp_path / "pure2")
    closed.close()
    assert closed.disk_state() == rust_store.disk_state() == {"summary": ""}


class _Disk:
    """Stands in for a filesystem that says ENOSPC while `full` (every reservation refused)."""

    def __init__(self, monkeypatch):
        self.full = False
        ensure = store_mod.ActiveSegment.ensure_allocated

        def refusing(segment, needed_end, max_bytes):
            if self.full:
                raise DiskFullError(28, f"no space left to append (No space left on device) at {segment.path}; advice")
            return ensure(segment, needed_end, max_bytes)

        monkeypatch.setattr(store_mod.ActiveSegment, "ensure_allocated", refusing)
        monkeypatch.setattr(store_mod, "HOLD_RETRY_S", 0.0)  # every append tries the disk again


def _batch(first: int, n: int = 10) -> list:
    return [trade(i, recv_ns=1_790_000_000_000_500_000 + first) for i in range(first, first + n)]


def test_a_full_disk_is_held_the_newest_kept_and_what_fell_out_named_first(tmp_path, monkeypatch):
    """hold.rs in plain Python: while the disk refuses, appends return and keep the newest
    `ring_bytes`; the ring sees held trades as they come (the silent-symbol watch keeps working);
    when the disk has room, one `gap_unfillable` marker per symbol names exactly the ids that fell
    out, then everything held is written in order. Counted against what was appended."""
    disk = _Disk(monkeypatch)
    store = Store(tmp_path / "d", ring_bytes=4096, hold_on_disk_full=True)
    reader = store.ring_reader()
    store.append_trades(_batch(0))
    disk.full = True
    for first in range(10, 400, 10):
        store.append_trades(_batch(first))
    store.append_marker("connection_down", ts_ns=5, venue="binance-usdm", detail="held too")
    during = store.disk_state()
    got, missed = reader.poll(max_trades=10**9)
    assert len(got) + missed == 400 and got[-1].trade_id == str(1000 + 399)  # held trades reached the ring
    assert during["full_since_ns"] > 0 and during["reason"].startswith("no space left"), during
    assert "advice" not in during["reason"] and during["summary"].startswith("disk full since "), during
    assert 0 < during["held_bytes"] <= 4096 and during["lost_trades_pending"] > 0 and during["episodes"] == 1
    assert during["held_records"] + during["lost_trades_pending"] == 391  # 390 trades and the marker
    assert store.query().num_rows == 10  # nothing half-written while full
    disk.full = False
    store.append_trades(_batch(400))
    after = store.disk_state()
    assert after["full_since_ns"] == 0 and after["held_records"] == 0 and after["summary"] == "", after
    assert after["lost_trades"] == during["lost_trades_pending"] and after["lost_other"] == 0
    stored = [int(t) - 1000 for t in store.query().column("trade_id").to_pylist()]
    markers = store.markers().to_pylist()
    store.close()
    lost: set[int] = set()
    holes = [m for m in markers if m["kind"] == "gap_unfillable"]
    assert len(holes) == 1, holes
    for m in holes:
        a, b = int(m["from_id"]) - 1000, int(m["to_id"]) - 1000
        assert (m["from_ts_ns"], m["to_ts_ns"]) == (trade(a).ts_ns, trade(b).ts_ns)
        assert m["detail"].startswith(
            f"{b - a + 1} trades lost: disk full since {during['full_since_ns']} ns (no space"
        )
        assert m["detail"].endswith(
            "held in memory up to 4096 bytes, the oldest fell out before the disk had room again"
        )
        lost.update(range(a, b + 1))
    assert len(stored) == len(set(stored)) and set(stored).isdisjoint(lost)
    assert set(stored) | lost == set(range(410)) and len(lost) == after["lost_trades"]
    assert stored == sorted(stored) and min(lost) >= 10  # written in order; only the episode's trades lost
    assert [m["kind"] for m in markers] == ["gap_unfillable", "connection_down"]  # the loss named first
    assert verify(tmp_path / "d")["ok"]


def test_a_close_while_the_disk_still_refuses_names_what_is_lost(tmp_path, monkeypatch):
    disk = _Disk(monkeypatch)
    store = Store(tmp_path / "d", ring_bytes=4096, hold_on_disk_full=True)
    store.append_trades(_batch(0))
    disk.full = True
    for first in range(10, 200, 10):
        store.append_trades(_batch(first))
    with pytest.raises(OSError, match=r"records held in memory since \d+ ns could not be written") as raised:
        store.close(seal=True)
    assert raised.value.errno == 28 and "binance-usdm BTCUSDT" in str(raised.value)
    assert "Free disk space before stopping the recorder" in str(raised.value)
    assert store.closed and store.disk_state() == {"summary": ""}
    disk.full = False
    with Store(tmp_path / "d") as again:  # what was written before is intact
        assert again.query().num_rows == 10


def test_without_a_hold_the_plain_store_raises_and_the_ring_has_only_what_was_written(tmp_path, monkeypatch):
    disk = _Disk(monkeypatch)
    with Store(tmp_path / "d", ring_bytes=4096) as store:
        reader = store.ring_reader()
        store.append_trades(_batch(0))
        disk.full = True
        with pytest.raises(DiskFullError):
            store.append_trades(_batch(10))
        assert store.disk_state()["full_since_ns"] == 0  # the caller was told; nothing is held
        got, missed = reader.poll()
        assert (len(got), missed) == (10, 0)


def test_both_engines_compress_the_backlog_and_what_they_seal_alike(tmp_path):
    """`zstd_level` on purepy: the sealed segments found plain at open and those this writer seals
    are compressed on a background thread, with the Rust store's stats; both engines read the
    result. Before, purepy never compressed (a recorder on it kept every segment plain)."""
    import pumpwatch

    trades = [trade(i, symbol=["BTCUSDT", "ETHUSDT"][i % 3 == 0]) for i in range(6000)]
    with Store(tmp_path / "plain", segment_max_bytes=SMALLEST_SEGMENT) as s:
        for i in range(0, 4000, 500):
            s.append_trades(trades[i : i + 500])
    backlog = segment_files(tmp_path / "plain")[:-1]
    assert len(backlog) >= 3
    stats = {}
    for name, engine in (("rust", pumpwatch.Store), ("purepy", Store)):
        data = tmp_path / name
        shutil.copytree(tmp_path / "plain", data)
        with engine(data, segment_max_bytes=SMALLEST_SEGMENT, zstd_level=3) as s:
            assert s.wait_compressed(60)
            found = s.compression_stats()
            s.append_trades(pa.Table.from_pylist([as_row(t) for t in trades[4000:]]))
            s.roll()
        compressed = sorted((data / "log").glob("*.pwzst"))
        assert [p.name for p in segment_files(data)] == [f"{len(compressed) + 1:020d}.pwlog"]  # only the active one
        stats[name] = found
        for reader in (pumpwatch.Store.open_readonly(data), Store.open_readonly(data)):
            assert reader.query().to_pylist() == expected(trades, *ALL_TIME)
        assert verify(data)["ok"]
    assert stats["purepy"].keys() == stats["rust"].keys()
    for name in ("rust", "purepy"):
        found = stats[name]
        assert found["segments"] == len(backlog) and found["plain_bytes"] == sum(p.stat().st_size for p in backlog)
        assert 0 < found["compressed_bytes"] < found["plain_bytes"] and found["seconds"] > 0
        assert (found["pending"], found["errors"], found["last_error"]) == (0, 0, None)
    with pytest.raises(InvalidInputError, match="zstd_level 23 is out of range"):
        Store(tmp_path / "e", zstd_level=23)


def test_the_recorder_opens_purepy_with_the_hold_ring_and_level_of_its_config(tmp_path, monkeypatch):
    """`[log] engine = "purepy"`: `open_store` gives the plain-Python store the recorder's mode (a
    full disk is held, not raised into the connections) and `ring_bytes` / `zstd_level`."""
    from pumpwatch.config import from_dict
    from pumpwatch.daemon import open_store

    cfg = from_dict({"data_dir": str(tmp_path / "d"), "log": {"engine": "purepy", "ring_bytes": 4096, "zstd_level": 5}})
    disk = _Disk(monkeypatch)
    store = open_store(cfg)
    assert isinstance(store, Store)
    try:
        disk.full = True
        for first in range(0, 200, 10):
            store.append_trades(_batch(first))  # held: never raises
        state = store.disk_state()
        assert state["full_since_ns"] > 0 and 0 < state["held_bytes"] <= 4096 and state["lost_trades_pending"] > 0
        disk.full = False
        store.append_trades(_batch(200))
        assert store.disk_state()["held_records"] == 0
        store.roll()
        assert store.wait_compressed(30) and store.compression_stats()["segments"] == 1
    finally:
        store.close()


def test_a_close_leaves_the_backlog_plain_and_a_cancelled_compression_keeps_the_plain_segment(tmp_path):
    """As compress.rs: closing does not wait for the backlog found at open (an interrupted
    compression of one gives up between blocks, removing nothing), and what is left plain is
    compressed by the next writer."""
    from pumpwatch.purepy.log.compress import compress_segment

    trades = [trade(i) for i in range(9000)]
    with Store(tmp_path / "d", segment_max_bytes=SMALLEST_SEGMENT) as s:
        for i in range(0, len(trades), 500):
            s.append_trades(trades[i : i + 500])
    backlog = segment_files(tmp_path / "d")[:-1]
    assert len(backlog) >= 6
    seq = int(backlog[0].stem)
    assert not compress_segment(tmp_path / "d" / "log", seq, 3, cancelled=lambda: True)
    assert backlog[0].exists() and not list((tmp_path / "d" / "log").glob("*.pwzst*"))
    Store(tmp_path / "d", segment_max_bytes=SMALLEST_SEGMENT, zstd_level=19).close()  # at once
    assert len(list((tmp_path / "d" / "log").glob("*.pwzst"))) < len(backlog)
    assert not list((tmp_path / "d" / "log").glob("*.tmp"))
    with Store(tmp_path / "d", segment_max_bytes=SMALLEST_SEGMENT, zstd_level=3) as s:
        assert s.wait_compressed(60)
    assert len(list((tmp_path / "d" / "log").glob("*.pwzst"))) == len(backlog)
    assert Store.open_readonly(tmp_path / "d").query().to_pylist() == expected(trades, *ALL_TIME)


def test_a_failed_commit_under_the_hold_is_named_and_cleared_by_the_next_one(tmp_path, monkeypatch):
    """With the hold (the recorder's mode) an fsync error does not raise into the connections: the
    disk state names it (`disk error since ...`) until a commit succeeds; without it, it raises."""
    import errno as errno_mod

    failing = {"on": False}
    sync = store_mod.ActiveSegment.sync

    def flaky(segment):
        if failing["on"]:
            raise OSError(errno_mod.EIO, "Input/output error")
        sync(segment)

    monkeypatch.setattr(store_mod.ActiveSegment, "sync", flaky)
    with Store(tmp_path / "d", fsync_interval=0, hold_on_disk_full=True) as store:
        failing["on"] = True
        store.append_trades(_batch(0))
        state = store.disk_state()
        assert state["commit_failures"] == 1 and state["error_since_ns"] > 0 and state["unsynced_bytes"] > 0, state
        assert state["summary"].startswith("disk error since ") and state["full_since_ns"] == 0
        failing["on"] = False
        store.append_trades(_batch(10))
        state = store.disk_state()
        assert (state["error_since_ns"], state["unsynced_bytes"], state["summary"]) == (0, 0, ""), state
        assert state["commit_failures"] == 1 and store.query().num_rows == 20
    with Store(tmp_path / "e", fsync_interval=0) as plain:
        failing["on"] = True
        with pytest.raises(OSError, match="Input/output error"):
            plain.append_trades(_batch(0))
        failing["on"] = False
