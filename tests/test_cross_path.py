"""The Rust path and the pure-Python path write the same format: each reads what the other
wrote, and both give identical query results on the same log."""

from __future__ import annotations

import pytest

import pumpwatch
import pumpwatch.purepy as purepy
from conftest import T0, expected_rows, make_trades, trades_table

PATHS = {"rust": pumpwatch.Store, "purepy": purepy.Store}


def _fill(store, trades):
    store.append_marker("connection_up", ts_ns=T0, venue="okx-swap", detail="shard 1 of 2")
    for i in range(0, len(trades), 700):
        store.append_trades(trades[i : i + 700])
    store.append_quarantined("kucoin-spot", T0 + 3, "truncated JSON", b'{"topic":"/market/match:BTC-USDT","ty')
    store.append_marker(
        "gap_unfillable",
        ts_ns=T0 + 9,
        venue="bybit-linear",
        symbol="ETHUSDT",
        from_ts_ns=T0 + 1,
        to_ts_ns=T0 + 2,
        from_id="",
        to_id="",
        detail="beyond the 1000-trade REST window",
    )


@pytest.mark.parametrize("writer,reader", [("rust", "purepy"), ("purepy", "rust")])
def test_each_path_reads_what_the_other_wrote(tmp_path, writer, reader):
    trades = make_trades(5000, seed=21)
    data = tmp_path / "data"
    with PATHS[writer](data, segment_max_bytes=1 << 17) as store:
        _fill(store, trades)
    with PATHS[reader].open_readonly(data) as other:
        assert other.query().to_pylist() == expected_rows(trades)
        assert [m["kind"] for m in other.markers().to_pylist()] == ["connection_up", "gap_unfillable"]
        assert other.quarantined() == [
            ("kucoin-spot", T0 + 3, "truncated JSON", b'{"topic":"/market/match:BTC-USDT","ty')
        ]
    # And the other path can take over as the writer, appending after recovery.
    more = make_trades(300, seed=22, t0=T0 + 50_000_000_000)
    with PATHS[reader](data, segment_max_bytes=1 << 17) as store:
        store.append_trades(more)
    assert pumpwatch.verify(data)["ok"] and purepy.verify(data)["ok"]
    with PATHS[writer].open_readonly(data) as back:
        assert back.query().to_pylist() == expected_rows(trades + more)


def test_both_paths_give_identical_query_results(tmp_path):
    trades = make_trades(8000, seed=23)
    with pumpwatch.Store(tmp_path / "d", segment_max_bytes=1 << 17) as store:
        _fill(store, trades)
    rust = pumpwatch.Store.open_readonly(tmp_path / "d")
    pure = purepy.Store.open_readonly(tmp_path / "d")
    windows = [
        (None, None),
        (T0, T0 + 1_000_000_000),
        (T0 + 3_333_333_333, T0 + 3_333_333_334),
        (T0 + 9_000_000_000, T0 + 99_000_000_000),
    ]
    for start, end in windows:
        for venues, symbols in [(None, None), (["okx-swap", "phemex-spot"], None), (None, ["BTCUSDT"])]:
            a = rust.query(start, end, venues=venues, symbols=symbols)
            b = pure.query(start, end, venues=venues, symbols=symbols)
            assert a.equals(b), (start, end, venues, symbols)
    assert rust.markers().equals(pure.markers())
    keys = ("ok", "segments", "records", "trades", "markers", "quarantined")
    rv, pv = pumpwatch.verify(tmp_path / "d"), purepy.verify(tmp_path / "d")
    assert {k: rv[k] for k in keys} == {k: pv[k] for k in keys}


def test_table_appends_are_identical_bytes_on_both_paths(tmp_path):
    """The same batch appended by each path yields byte-identical records (segment headers aside,
    which carry the creation time)."""
    trades = make_trades(1000, seed=24)
    for name, cls in PATHS.items():
        with cls(tmp_path / name) as store:
            store.append_trades(trades_table(trades))
    seg = "log/00000000000000000001.pwlog"
    a = (tmp_path / "rust" / seg).read_bytes()
    b = (tmp_path / "purepy" / seg).read_bytes()
    end_a = int.from_bytes(a[40:48], "little")
    end_b = int.from_bytes(b[40:48], "little")
    assert end_a == end_b > 64
    assert a[64:end_a] == b[64:end_b]
