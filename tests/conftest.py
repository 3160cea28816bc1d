"""Shared test helpers: deterministic trade batches in the shapes venues really send."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

import pumpwatch

SYMBOLS = {
    "binance-spot": "BTCUSDT",
    "binance-usdm": "1000PEPEUSDT",
    "bybit-linear": "ETHUSDT",
    "okx-swap": "BTC-USDT-SWAP",
    "kucoin-spot": "DAPPT-BTC",
    "gate-spot": "BTC_USDT",
    "phemex-spot": "sBTCUSDT",
}
PRICES = ["83680.00", "0.0000001117", "107407.88000000", "0.0044478", "1922.52", "7.69100000", "0"]
IDS = ["8121136411", "6085c09769bc506996295e36", "a519448f-56e5-58e6-90a1-004086e0e530", "007", "0"]
T0 = 1_790_370_834_848_000_000


def make_trades(n: int, seed: int = 0, t0: int = T0, spread_ns: int = 10_000_000_000) -> list[pumpwatch.Trade]:
    """`n` trades over `spread_ns` of exchange time, every venue and id shape, not time-sorted."""
    rng = random.Random(seed)
    venues = list(SYMBOLS)
    out = []
    for i in range(n):
        v = venues[i % len(venues)]
        ts = t0 + rng.randrange(spread_ns)
        tid = str(10_000_000 + i) if i % 3 else f"{IDS[i % len(IDS)]}-{i}"
        out.append(
            pumpwatch.Trade(
                v,
                SYMBOLS[v],
                tid,
                PRICES[i % len(PRICES)],
                f"{rng.randrange(1, 10**6)}.{rng.randrange(10**4):04d}",
                "buy" if rng.random() < 0.5 else "sell",
                ts,
                ts + rng.randrange(1_000_000, 50_000_000),
                flags=(pumpwatch.FLAGS["RPI"] if i % 17 == 0 else 0),
            )
        )
    return out


def trades_table(trades: list[pumpwatch.Trade]) -> pa.Table:
    return pa.Table.from_pylist([t.to_dict() for t in trades], schema=pumpwatch.TRADE_SCHEMA)


def expected_rows(trades, start=None, end=None, venues=None, symbols=None) -> list[dict]:
    """What a query must return, computed the obvious way: filter, then stable sort by time."""
    rows = [
        t.to_dict()
        for t in trades
        if (start is None or t.ts_ns >= start)
        and (end is None or t.ts_ns < end)
        and (venues is None or t.venue in venues)
        and (symbols is None or t.symbol in symbols)
        and not (t.flags & pumpwatch.FLAGS["NON_TRADE"])
    ]
    rows.sort(key=lambda r: r["ts_ns"])
    return rows


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"
