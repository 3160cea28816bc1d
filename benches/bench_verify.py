"""`verify` of a 4 M-record log (every rule, seal, index in one pass), without and with a progress
callback: the progress ticks must not slow the walk measurably (README row "`verify` of a 4 M-record log").

    python3 -m pytest -n 0 benches/bench_verify.py --benchmark-only
"""

from __future__ import annotations

import inspect

import pytest

import pumpwatch
from conftest import T0, trade_table


@pytest.fixture(scope="module")
def log_of_4m(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify4m") / "data"
    with pumpwatch.Store(path) as store:
        for k in range(4):
            store.append_trades(trade_table(1_000_000, t0=T0 + k * 37, first_id=k * 1_000_000))
    return path


@pytest.mark.benchmark(group="verify-4M")
def test_verify_rust(benchmark, log_of_4m):
    report = benchmark.pedantic(pumpwatch.verify, args=(log_of_4m,), rounds=7, iterations=1)
    assert report["ok"] and report["records"] == 4_000_000


@pytest.mark.benchmark(group="verify-4M")
def test_verify_rust_with_progress(benchmark, log_of_4m):
    if "progress" not in inspect.signature(pumpwatch.verify).parameters:
        pytest.skip("this build's verify takes no progress callback")
    calls = []

    def progress(done: int, total: int, segments_done: int, segments_total: int) -> None:
        calls.append(done)

    report = benchmark.pedantic(
        pumpwatch.verify, args=(log_of_4m,), kwargs={"progress": progress}, rounds=7, iterations=1
    )
    assert report["ok"] and report["records"] == 4_000_000 and calls
