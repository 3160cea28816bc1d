"""Appending batches: the Rust path against the pure-Python path, on the same batches.

Goals (issue #2): a columnar batch at >= 5 M trades/s on the Rust path and >= 20x the pure-Python
path; the list-of-`Trade` path measured too.
"""

from __future__ import annotations

import itertools

import pytest

import pumpwatch
import pumpwatch.purepy as purepy

_dirs = itertools.count()


def _fresh(tmp_path, factory):
    return factory(tmp_path / f"d{next(_dirs)}", fsync_interval=1.0)


@pytest.mark.benchmark(group="append-table-1M")
def test_append_table_rust(benchmark, tmp_path, batch_1m):
    store = _fresh(tmp_path, pumpwatch.Store)
    store.append_trades(batch_1m.slice(0, 1000))  # warm: the segment exists, buffers sized
    n = benchmark.pedantic(store.append_trades, args=(batch_1m,), rounds=8, iterations=1)
    assert n == 1_000_000
    benchmark.extra_info["trades_per_s"] = n / benchmark.stats.stats.mean
    store.close()


@pytest.mark.benchmark(group="append-table-1M")
def test_append_table_purepy(benchmark, tmp_path, batch_1m):
    store = _fresh(tmp_path, purepy.Store)
    n = benchmark.pedantic(store.append_trades, args=(batch_1m,), rounds=2, iterations=1)
    assert n == 1_000_000
    benchmark.extra_info["trades_per_s"] = n / benchmark.stats.stats.mean
    store.close()


@pytest.mark.benchmark(group="append-list-100k")
def test_append_list_rust(benchmark, tmp_path, batch_100k_trades):
    store = _fresh(tmp_path, pumpwatch.Store)
    n = benchmark.pedantic(store.append_trades, args=(batch_100k_trades,), rounds=10, iterations=1)
    benchmark.extra_info["trades_per_s"] = n / benchmark.stats.stats.mean
    store.close()


@pytest.mark.benchmark(group="append-list-100k")
def test_append_list_purepy(benchmark, tmp_path, batch_100k_trades):
    store = _fresh(tmp_path, purepy.Store)
    n = benchmark.pedantic(store.append_trades, args=(batch_100k_trades,), rounds=3, iterations=1)
    benchmark.extra_info["trades_per_s"] = n / benchmark.stats.stats.mean
    store.close()
