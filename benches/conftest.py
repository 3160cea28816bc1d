"""Benchmark inputs: realistic trade batches, built once, used by both paths."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pumpwatch

T0 = 1_790_370_000_000_000_000
HOUR_NS = 3_600_000_000_000


def trade_table(n: int, t0: int = T0, span_ns: int = HOUR_NS, first_id: int = 8_121_136_411) -> pa.Table:
    """`n` Binance USDⓈ-M-shaped trades spread evenly over `span_ns` of exchange time."""
    i = pa.array(range(n), pa.int64())
    ts = pc.add(pc.multiply(i, span_ns // max(n, 1)), t0)
    venues = ["binance-usdm", "okx-swap", "bybit-linear", "gate-futures"]
    symbols = {
        "binance-usdm": "BTCUSDT",
        "okx-swap": "BTC-USDT-SWAP",
        "bybit-linear": "BTCUSDT",
        "gate-futures": "BTC_USDT",
    }
    k = len(venues)
    return pa.table(
        {
            "venue": pa.array([venues[j % k] for j in range(n)]),
            "symbol": pa.array([symbols[venues[j % k]] for j in range(n)]),
            "trade_id": pc.cast(pc.add(i, first_id), pa.string()),
            "price": pa.array(["83680.00", "83680.10", "83679.90", "0.0044478"] * (n // 4) + ["83680.00"] * (n % 4)),
            "qty": pa.array(["0.001", "0.250", "10403", "1.5"] * (n // 4) + ["0.001"] * (n % 4)),
            "side": pa.array(["buy", "sell"] * (n // 2) + ["buy"] * (n % 2)),
            "ts_ns": ts,
            "recv_ns": pc.add(ts, 1_500_000),
            "flags": pa.array([0] * n, pa.uint16()),
        }
    )


@pytest.fixture(scope="session")
def batch_1m() -> pa.Table:
    return trade_table(1_000_000)


@pytest.fixture(scope="session")
def batch_100k_trades(batch_1m) -> list:
    return [pumpwatch.Trade(**r) for r in batch_1m.slice(0, 100_000).to_pylist()]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns pyproject's `-n` into workers
def pytest_cmdline_main(config):
    """Benchmarks run in one process: pyproject's addopts give the tests xdist workers, and under
    xdist pytest-benchmark switches itself off (and timings taken beside other workers mean little)."""
    if config.pluginmanager.has_plugin("xdist"):
        config.option.numprocesses = 0
        config.option.dist = "no"
