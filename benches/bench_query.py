"""A +-20 s window query on a log of 10 million trades spread over an hour (goal: < 20 ms on the
Rust path), and reopening a store whose last segment is 1 GB (goal: < 1 s)."""

from __future__ import annotations

import pytest

import pumpwatch
import pumpwatch.purepy as purepy
from conftest import HOUR_NS, T0, trade_table

WINDOW_NS = 20_000_000_000


@pytest.fixture(scope="module")
def hour_of_10m(tmp_path_factory):
    path = tmp_path_factory.mktemp("hour10m") / "data"
    per = 1_000_000
    with pumpwatch.Store(path) as store:
        for k in range(10):
            # Ten chunks, each spread over the whole hour: blocks overlap in time as they do
            # when twelve venues interleave, so the index has real work to do.
            store.append_trades(trade_table(per, t0=T0 + k * 37, first_id=k * per))
    return path


def _middle_window():
    t0 = T0 + HOUR_NS // 2
    return t0 - WINDOW_NS, t0 + WINDOW_NS


@pytest.mark.benchmark(group="query-40s-of-10M")
def test_query_window_rust(benchmark, hour_of_10m):
    start, end = _middle_window()
    reader = pumpwatch.Store.open_readonly(hour_of_10m)
    table = benchmark(reader.query, start, end)
    assert 100_000 < table.num_rows < 125_000
    benchmark.extra_info["rows"] = table.num_rows


@pytest.mark.benchmark(group="query-40s-of-10M")
def test_query_window_purepy(benchmark, hour_of_10m):
    start, end = _middle_window()
    reader = purepy.Store.open_readonly(hour_of_10m)
    table = benchmark.pedantic(reader.query, args=(start, end), rounds=3, iterations=1)
    assert 100_000 < table.num_rows < 125_000


@pytest.fixture(scope="module")
def one_gb_segment(tmp_path_factory):
    path = tmp_path_factory.mktemp("gb") / "data"
    with pumpwatch.Store(path, segment_max_bytes=2 << 30) as store:
        chunk = trade_table(1_000_000)
        size = 0
        k = 0
        while size < 1 << 30:
            store.append_trades(chunk)
            k += 1
            size = store._log.active_segment()[1]
    return path


@pytest.mark.benchmark(group="reopen-1GB-segment")
def test_reopen_rust(benchmark, one_gb_segment):
    def reopen():
        store = pumpwatch.Store(one_gb_segment, segment_max_bytes=2 << 30)
        store.close()

    benchmark.pedantic(reopen, rounds=5, iterations=1)
