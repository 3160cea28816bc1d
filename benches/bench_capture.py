"""From a complete window to the event folder written (trades.parquet, event.json, analysis.json,
chart.png): a window of 200,000 trades over twelve venues. Goal: under 1 s, chart included.

    python3 -m pytest benches/bench_capture.py --benchmark-only --benchmark-columns=mean,min,max,rounds
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

import pumpwatch
from pumpwatch import capture as cap

NS = 1_000_000_000
T0 = 1_790_000_000 * NS
WINDOW_TRADES = 200_000
SYMBOLS = {
    "binance-spot": "0GUSDT",
    "binance-usdm": "0GUSDT",
    "bybit-spot": "0GUSDT",
    "bybit-linear": "0GUSDT",
    "okx-spot": "0G-USDT",
    "okx-swap": "0G-USDT-SWAP",
    "kucoin-spot": "0G-USDT",
    "kucoin-futures": "0GUSDTM",
    "gate-spot": "0G_USDT",
    "gate-futures": "0G_USDT",
    "phemex-spot": "s0GUSDT",
    "phemex-perp": "0GUSDT",
}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    data = tmp_path_factory.mktemp("capture") / "data"
    rng = random.Random(7)
    store = pumpwatch.Store(data)
    store.append_marker("recorder_start", ts_ns=T0 - 3600 * NS)
    for v in pumpwatch.VENUES:
        store.append_marker("connection_up", ts_ns=T0 - 3599 * NS, venue=v, detail=f"{v}#0: up")
    per_venue = WINDOW_TRADES // len(SYMBOLS)
    rows = []
    for k, (venue, symbol) in enumerate(SYMBOLS.items()):
        price = 1000
        for i in range(per_venue):
            ts = T0 - 20 * NS + i * (40 * NS // per_venue) + k
            drift = 3 if ts > T0 + k * 50_000_000 else 0
            price = max(100, price + rng.choice((-2, -1, 0, 1, 2)) + drift)
            rows.append(
                {
                    "venue": venue,
                    "symbol": symbol,
                    "trade_id": str(i + 1),
                    "price": str(Decimal(price) / 10000),
                    "qty": str(rng.randint(1, 5000)),
                    "side": rng.choice(("buy", "sell")),
                    "ts_ns": ts,
                    "recv_ns": ts + 3_000_000,
                    "flags": 0,
                }
            )
    import pyarrow as pa

    store.append_trades(pa.Table.from_pylist(rows, schema=pumpwatch.TRADE_SCHEMA))
    store.close()
    # warm the chart library once, as the daemon does at its first event
    with pumpwatch.Store.open_readonly(data) as src:
        cap.capture(src, cap.CaptureRequest("0G", T0), data)
    return data


def test_capture_200k_trades_to_event_folder(benchmark, recording):
    def once():
        with pumpwatch.Store.open_readonly(recording) as src:
            return cap.capture(src, cap.CaptureRequest("0G", T0), recording)

    ev = benchmark.pedantic(once, rounds=5, iterations=1)
    assert ev.event["trades"] == (WINDOW_TRADES // len(SYMBOLS)) * len(SYMBOLS)
    benchmark.extra_info.update({k: round(v, 1) for k, v in ev.timings_ms.items()})
