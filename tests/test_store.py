"""The Rust-backed store through its Python API: round trips, windows, filters, segments,
markers, quarantine, the ring, and the errors a user sees."""

from __future__ import annotations

import decimal
import os
import time

import pyarrow as pa
import pytest

import pumpwatch
from conftest import T0, expected_rows, make_trades, trades_table


def test_trades_round_trip_exactly(data_dir):
    trades = make_trades(500)
    with pumpwatch.Store(data_dir) as store:
        assert store.append_trades(trades) == 500
        got = store.query().to_pylist()
    assert got == expected_rows(trades)
    # The exact text survives: no float ever touched it.
    assert {r["price"] for r in got} >= {"83680.00", "0.0000001117", "107407.88000000"}
    assert {r["trade_id"] for r in got if not r["trade_id"][0].isdigit() or "-" in r["trade_id"]}


def test_table_and_list_paths_store_the_same(tmp_path):
    trades = make_trades(300, seed=3)
    with pumpwatch.Store(tmp_path / "a") as a, pumpwatch.Store(tmp_path / "b") as b:
        a.append_trades(trades)
        b.append_trades(trades_table(trades))
        assert a.query().equals(b.query())


def test_table_accepts_sliced_chunked_and_large_string_columns(data_dir):
    trades = make_trades(100, seed=4)
    table = trades_table(trades)
    # A slice has non-zero array offsets; several chunks; large_string instead of string.
    sliced = table.slice(10, 50)
    chunked = pa.concat_tables([table.slice(0, 30), table.slice(30, 70)])
    large = table.cast(
        pa.schema([pa.field(f.name, pa.large_string() if f.type == pa.string() else f.type) for f in table.schema])
    )
    with pumpwatch.Store(data_dir) as store:
        store.append_trades(sliced)
        assert store.query().to_pylist() == expected_rows(trades[10:60])
        store.append_trades(chunked)
        store.append_trades(large)
        assert store.query().num_rows == 50 + 100 + 100


def test_window_bounds_filters_and_order(data_dir):
    trades = make_trades(2000, seed=1)
    with pumpwatch.Store(data_dir) as store:
        store.append_trades(trades)
        for start, end in [
            (T0, T0 + 1),
            (T0 + 2_000_000_000, T0 + 2_500_000_000),
            (T0 + 9_999_999_999, T0 + 20_000_000_000),
        ]:
            assert store.query(start, end).to_pylist() == expected_rows(trades, start, end)
        edge = trades[7].ts_ns
        assert trades[7].to_dict() in store.query(edge, edge + 1).to_pylist()
        assert trades[7].to_dict() not in store.query(edge - 10, edge).to_pylist()
        got = store.query(venues=["okx-swap", "gate-spot"]).to_pylist()
        assert got == expected_rows(trades, venues={"okx-swap", "gate-spot"})
        got = store.query(symbols=["sBTCUSDT"]).to_pylist()
        assert got == expected_rows(trades, symbols={"sBTCUSDT"})
        with pytest.raises(pumpwatch.InvalidInputError, match="unknown venue"):
            store.query(venues=["binance"])


def test_equal_times_keep_log_order(data_dir):
    same = [
        pumpwatch.Trade("phemex-spot", "sXMRUSDT", f"{T0}:b:{i}", "190.1", "1", "buy", T0, T0 + i) for i in range(20)
    ]
    with pumpwatch.Store(data_dir) as store:
        store.append_trades(same[:10])
        store.append_trades([pumpwatch.Trade("okx-spot", "BTC-USDT", "1", "1", "1", "buy", T0 - 5, T0)])
        store.append_trades(same[10:])
        assert [r["recv_ns"] for r in store.query(T0, T0 + 1).to_pylist()] == [T0 + i for i in range(20)]


def test_non_trades_are_kept_but_not_trades(data_dir):
    na = pumpwatch.Trade(
        "binance-usdm", "DOGEUSDT", "3488255295", "0", "0", "buy", T0, T0, flags=pumpwatch.FLAGS["NON_TRADE"]
    )
    real = pumpwatch.Trade("binance-usdm", "DOGEUSDT", "3488255296", "0.1", "5", "sell", T0, T0)
    with pumpwatch.Store(data_dir) as store:
        store.append_trades([na, real])
        assert store.query().column("trade_id").to_pylist() == ["3488255296"]
        assert store.query(include_non_trades=True).column("trade_id").to_pylist() == ["3488255295", "3488255296"]


def test_trade_checks_its_fields():
    ok = dict(
        venue="binance-spot", symbol="BTCUSDT", trade_id="1", price="1.5", qty="2", side="buy", ts_ns=1, recv_ns=2
    )
    assert pumpwatch.Trade(**ok).price == "1.5"
    assert pumpwatch.Trade(**{**ok, "price": decimal.Decimal("1.117E-7")}).price == "0.0000001117"
    assert pumpwatch.Trade(**{**ok, "trade_id": 42}).trade_id == "42"
    assert pumpwatch.Trade(**ok).trade_id_num == 1
    assert pumpwatch.Trade(**{**ok, "trade_id": "abc"}).trade_id_num is None
    with pytest.raises(TypeError, match="exact"):
        pumpwatch.Trade(**{**ok, "price": 1.5})
    for field, bad, msg in [
        ("price", "1e-7", "plain decimal"),
        ("qty", "", "plain decimal"),
        ("side", "taker", "buy"),
        ("venue", "binance", "unknown venue"),
        ("symbol", "", "empty"),
        ("symbol", "X" * 300, "255"),
    ]:
        with pytest.raises(pumpwatch.InvalidInputError, match=msg):
            pumpwatch.Trade(**{**ok, field: bad})


def test_bad_row_rejects_the_whole_table_batch(data_dir):
    trades = make_trades(10)
    rows = [t.to_dict() for t in trades]
    rows[6]["price"] = "1,5"
    bad = pa.Table.from_pylist(rows, schema=pumpwatch.TRADE_SCHEMA)
    with pumpwatch.Store(data_dir) as store:
        with pytest.raises(pumpwatch.InvalidTradeError, match=r"row 6.*1,5"):
            store.append_trades(bad)
        with pytest.raises(pumpwatch.InvalidTradeError, match="no column 'qty'"):
            store.append_trades(trades_table(trades).drop_columns(["qty"]))
        with pytest.raises(pumpwatch.InvalidTradeError, match="nulls"):
            store.append_trades(pa.Table.from_pylist([{**rows[0], "symbol": None}]))
        with pytest.raises(pumpwatch.InvalidTradeError, match="never floats"):
            store.append_trades(trades_table(trades).set_column(3, "price", pa.array([1.5] * 10)))
        with pytest.raises(TypeError, match=r"not a pumpwatch\.Trade"):
            store.append_trades([trades[0], "not a trade"])
        assert store.query().num_rows == 0


def test_markers_and_quarantine_round_trip(data_dir):
    with pumpwatch.Store(data_dir) as store:
        store.append_marker("connection_down", ts_ns=T0, venue="okx-swap", detail="socket closed 1006")
        store.append_marker(
            "gap_unfillable",
            ts_ns=T0 + 50,
            venue="binance-usdm",
            symbol="BTCUSDT",
            from_ts_ns=T0 - 1000,
            to_ts_ns=T0 + 10,
            from_id="100",
            to_id="250",
            detail="beyond REST reach",
        )
        store.append_quarantined("gate-spot", T0 + 7, "not JSON", b"\xff\xfe{")
        store.append_trades(make_trades(5))
        markers = store.markers().to_pylist()
        assert [m["kind"] for m in markers] == ["connection_down", "gap_unfillable"]
        assert markers[1]["from_id"] == "100" and markers[1]["to_ts_ns"] == T0 + 10
        # A span that reaches into the window counts even if the marker was written after it.
        assert [m["kind"] for m in store.markers(T0 - 500, T0 - 400).to_pylist()] == ["gap_unfillable"]
        assert store.quarantined() == [("gate-spot", T0 + 7, "not JSON", b"\xff\xfe{")]
        with pytest.raises(pumpwatch.InvalidInputError, match="unknown marker kind"):
            store.append_marker("gap", ts_ns=1)
        report = pumpwatch.verify(data_dir)
        assert (report["trades"], report["markers"], report["quarantined"]) == (5, 2, 1)


def test_segments_roll_by_size_and_time_and_queries_span_them(data_dir):
    trades = make_trades(6000, seed=5)
    with pumpwatch.Store(data_dir, segment_max_bytes=1 << 16) as store:
        for i in range(0, 6000, 500):
            store.append_trades(trades[i : i + 500])
        assert store.query().to_pylist() == expected_rows(trades)
    segments = sorted(os.listdir(data_dir / "log"))
    assert len([s for s in segments if s.endswith((".pwlog", ".pwzst"))]) > 3  # sealed ones compressed
    with pumpwatch.Store(data_dir, segment_span_s=0.05) as store:
        seq_before = store._log.active_segment()[0]
        store.append_trades(trades[:10])
        time.sleep(0.1)
        store.append_trades(trades[10:20])
        assert store._log.active_segment()[0] > seq_before
        assert store.query().num_rows == 6020
    assert pumpwatch.verify(data_dir)["trades"] == 6020


def test_reopen_keeps_everything(data_dir):
    trades = make_trades(1000, seed=6)
    with pumpwatch.Store(data_dir) as store:
        store.append_trades(trades[:600])
    with pumpwatch.Store(data_dir) as store:
        assert store.recovery_report["truncated"] == []
        store.append_trades(trades[600:])
    with pumpwatch.Store(data_dir) as store:
        assert store.query().to_pylist() == expected_rows(trades)
    store.close()  # idempotent
    with pytest.raises(pumpwatch.StoreClosedError):
        store.append_trades(trades[:1])


def test_close_with_seal_starts_a_new_segment(data_dir):
    with pumpwatch.Store(data_dir) as store:
        store.append_trades(make_trades(10))
        first = store._log.active_segment()[0]
        store.close(seal=True)
    with pumpwatch.Store(data_dir) as store:
        assert store._log.active_segment()[0] == first + 1
        assert store.query().num_rows == 10


def test_ring_reader_sees_new_trades_and_counts_what_it_missed(data_dir):
    with pumpwatch.Store(data_dir, ring_bytes=64 << 10) as store:
        reader = store.ring_reader()
        trades = make_trades(50)
        store.append_trades(trades)
        got, missed = reader.poll()
        assert (got, missed) == (trades, 0)
        many = make_trades(20_000, seed=9)
        store.append_trades(many)
        got, missed = reader.poll(max_trades=10**9)
        assert missed > 0 and len(got) + missed == 20_000
        assert got == many[-len(got) :]


def test_standalone_trade_ring():
    ring = pumpwatch.TradeRing(capacity_bytes=1 << 20)
    late = ring.reader()
    ring.push(make_trades(3))
    early = ring.reader(from_oldest=True)
    assert len(late.poll()[0]) == 3
    assert len(early.poll()[0]) == 3


def test_missing_directory_for_reading_says_what_to_do(tmp_path):
    with pytest.raises(pumpwatch.InvalidInputError, match="data directory"):
        pumpwatch.Store.open_readonly(tmp_path / "nope")


def test_bad_settings_are_refused(data_dir):
    with pytest.raises(pumpwatch.InvalidInputError, match="fsync_interval"):
        pumpwatch.Store(data_dir, fsync_interval=-1)
    with pytest.raises(pumpwatch.InvalidInputError, match="segment_max_bytes"):
        pumpwatch.Store(data_dir, segment_max_bytes=10)
