"""Ingest of real-shaped frames from Python: one call per frame and the batch form, Rust path
against the pure-Python path on the same frames in the same run.

Goals (issue #3): Binance single-trade frames at >= 2 M frames/s one call per frame and >= 5 M
batched, on one core; >= 10x the pure-Python path per call and >= 20x batched.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest

import pumpwatch
import pumpwatch.purepy as purepy

N = 200_000
_dirs = itertools.count()
WARM_UP = [
    json.dumps(
        {
            "arg": {"channel": "trades-all", "instId": "ETH-USDT"},
            "data": [
                {
                    "instId": "ETH-USDT",
                    "tradeId": str(i),
                    "px": "1922.52",
                    "sz": "0.1",
                    "side": "buy",
                    "ts": "1786310820510",
                }
            ],
        }
    ).encode()
    for i in range(1, 1001)
]


def binance_frames(n: int, first_id: int) -> list[bytes]:
    """Combined-stream `@trade` frames exactly as Binance spot sends them (2025 shape)."""
    out = []
    for i in range(n):
        t = first_id + i
        data = {
            "e": "trade",
            "E": 1751132780369 + i,
            "s": "BTCUSDT",
            "t": t,
            "p": "107407.88000000",
            "q": "0.00024000",
            "T": 1751132780368 + i,
            "m": bool(i & 1),
            "M": True,
        }
        out.append(json.dumps({"stream": "btcusdt@trade", "data": data}, separators=(",", ":")).encode())
    return out


@pytest.fixture(scope="module")
def frames():
    return binance_frames(N, 5_052_328_858)


def _one_by_one(store, frames):
    ingest = store.ingest
    for f in frames:
        ingest("binance-spot", f, 1_751_132_780_400_000_000)


def _batched(store, frames):
    for k in range(0, len(frames), 10_000):
        store.ingest_many("binance-spot", frames[k : k + 10_000], 1_751_132_780_400_000_000)


def _run(benchmark, tmp_path, cls, frames, how, rounds):
    # A fresh store per round (the same frames would otherwise be dropped as duplicates), brought
    # to steady state first: a running recorder's segment is open and its next pages prepared.
    def setup():
        store = cls(tmp_path / f"d{next(_dirs)}")
        store.ingest_many("okx-spot", WARM_UP, 1)
        time.sleep(0.3)
        return (store, frames), {}

    benchmark.pedantic(how, setup=setup, rounds=rounds, iterations=1)
    benchmark.extra_info["frames_per_s"] = len(frames) / benchmark.stats.stats.mean


@pytest.mark.benchmark(group="ingest-binance-per-call")
def test_ingest_per_call_rust(benchmark, tmp_path, frames):
    _run(benchmark, tmp_path, pumpwatch.Store, frames, _one_by_one, rounds=5)


@pytest.mark.benchmark(group="ingest-binance-per-call")
def test_ingest_per_call_purepy(benchmark, tmp_path, frames):
    _run(benchmark, tmp_path, purepy.Store, frames, _one_by_one, rounds=2)


@pytest.mark.benchmark(group="ingest-binance-batched")
def test_ingest_batched_rust(benchmark, tmp_path, frames):
    _run(benchmark, tmp_path, pumpwatch.Store, frames, _batched, rounds=5)


@pytest.mark.benchmark(group="ingest-binance-batched")
def test_ingest_batched_purepy(benchmark, tmp_path, frames):
    _run(benchmark, tmp_path, purepy.Store, frames, _batched, rounds=2)


# --- every venue: frames in each venue's real shape, made by the simulator ---------------------

PER_VENUE_N = 50_000


@pytest.fixture(scope="module")
def venue_frames():
    from pumpwatch.sim import SimVenue

    return {v: [f.encode() for f in SimVenue(v, seed=7).render_frames(PER_VENUE_N)] for v in pumpwatch.VENUES}


@pytest.mark.parametrize("venue", pumpwatch.VENUES)
@pytest.mark.benchmark(group="ingest-per-venue-batched-rust")
def test_ingest_venue_batched_rust(benchmark, tmp_path, venue_frames, venue):
    frames = venue_frames[venue]

    def batched(store, frames):
        for k in range(0, len(frames), 10_000):
            store.ingest_many(venue, frames[k : k + 10_000], 1_790_000_000_000_000_000)
        assert store.ingest_stats()["quarantined"] == 0

    _run(benchmark, tmp_path, pumpwatch.Store, frames, batched, rounds=3)


@pytest.mark.parametrize("venue", pumpwatch.VENUES)
@pytest.mark.benchmark(group="ingest-per-venue-per-call-rust")
def test_ingest_venue_per_call_rust(benchmark, tmp_path, venue_frames, venue):
    frames = venue_frames[venue]

    def one_by_one(store, frames):
        ingest = store.ingest
        for f in frames:
            ingest(venue, f, 1_790_000_000_000_000_000)
        assert store.ingest_stats()["quarantined"] == 0

    _run(benchmark, tmp_path, pumpwatch.Store, frames, one_by_one, rounds=3)


@pytest.mark.parametrize("venue", pumpwatch.VENUES)
@pytest.mark.benchmark(group="ingest-per-venue-batched-purepy")
def test_ingest_venue_batched_purepy(benchmark, tmp_path, venue_frames, venue):
    frames = venue_frames[venue][:10_000]

    def batched(store, frames):
        store.ingest_many(venue, frames, 1_790_000_000_000_000_000)

    _run(benchmark, tmp_path, purepy.Store, frames, batched, rounds=1)
