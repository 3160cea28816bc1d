"""zstd compression of sealed segments: the ratio on realistic simulator trades, compression
throughput, and a +-20 s window query in a compressed 10 M-trade hour against the same hour plain
(goal: well under 20 ms compressed)."""

from __future__ import annotations

import shutil

import pytest

import pumpwatch
import pumpwatch.purepy as purepy
from conftest import HOUR_NS, T0, trade_table
from pumpwatch.sim.server import SimVenue

WINDOW_NS = 20_000_000_000
SIM_START_NS = 1_790_000_000_000_000_000
FRAMES_PER_VENUE = 20_000


def _sealed_bytes(path) -> int:
    logs = sorted((path / "log").glob("*.pwlog"))
    return sum(p.stat().st_size for p in logs[:-1])  # the last one is the new, empty active segment


@pytest.fixture(scope="module")
def simulated_plain(tmp_path_factory):
    """All twelve venues' frames as the simulator renders them, ingested interleaved as the
    recorder does, sealed and left plain."""
    path = tmp_path_factory.mktemp("sim") / "plain"
    frames = {
        v: [
            f.encode()
            for f in SimVenue(v, seed=5).render_frames(FRAMES_PER_VENUE, start_ns=SIM_START_NS, spacing_ns=3_000_000)
        ]
        for v in pumpwatch.VENUES
    }
    trades = 0
    with pumpwatch.Store(path, segment_max_bytes=64 << 20, zstd_level=0) as store:
        for k in range(0, FRAMES_PER_VENUE, 500):
            for venue, fs in frames.items():
                trades += store.ingest_many(venue, fs[k : k + 500], SIM_START_NS + k * 3_000_000)[0]
        store.close(seal=True)
    return path, trades


@pytest.mark.parametrize("level", [1, 3, 9])
@pytest.mark.benchmark(group="compress-simulated-trades")
def test_compress_simulated_trades(benchmark, tmp_path, simulated_plain, level):
    plain, trades = simulated_plain
    plain_bytes = _sealed_bytes(plain)
    runs = iter(range(1000))
    stats = {}

    def fresh_copy():
        target = tmp_path / f"run{next(runs)}"
        shutil.copytree(plain, target)
        return (target,), {}

    def compress(target):
        with pumpwatch.Store(target, segment_max_bytes=64 << 20, zstd_level=level) as store:
            assert store.wait_compressed(600)
            stats.update(store.compression_stats())

    benchmark.pedantic(compress, setup=fresh_copy, rounds=3, iterations=1)
    assert stats["errors"] == 0 and stats["plain_bytes"] == plain_bytes
    benchmark.extra_info.update(
        trades=trades,
        plain_mb=round(plain_bytes / 1e6, 1),
        compressed_mb=round(stats["compressed_bytes"] / 1e6, 1),
        ratio=round(plain_bytes / stats["compressed_bytes"], 2),
        bytes_per_trade_plain=round(plain_bytes / trades, 1),
        bytes_per_trade_compressed=round(stats["compressed_bytes"] / trades, 1),
        compress_mb_per_s=round(plain_bytes / 1e6 / stats["seconds"], 1),
    )


@pytest.fixture(scope="module")
def hour_plain_and_compressed(tmp_path_factory):
    """The 10 M-trade hour of bench_query.py, sealed; one copy plain, one compressed (level 3)."""
    base = tmp_path_factory.mktemp("hour10m")
    plain = base / "plain"
    per = 1_000_000
    with pumpwatch.Store(plain, segment_max_bytes=2 << 30, zstd_level=0) as store:
        for k in range(10):
            store.append_trades(trade_table(per, t0=T0 + k * 37, first_id=k * per))
        store.close(seal=True)
    compressed = base / "compressed"
    shutil.copytree(plain, compressed)
    with pumpwatch.Store(compressed, segment_max_bytes=2 << 30, zstd_level=3) as store:
        assert store.wait_compressed(1200)
        stats = store.compression_stats()
    assert stats["segments"] == 1 and stats["errors"] == 0
    return plain, compressed, stats


def _middle_window():
    t0 = T0 + HOUR_NS // 2
    return t0 - WINDOW_NS, t0 + WINDOW_NS


@pytest.mark.parametrize("form", ["plain", "compressed"])
@pytest.mark.benchmark(group="query-40s-of-10M-sealed")
def test_query_window_sealed_hour(benchmark, hour_plain_and_compressed, form):
    plain, compressed, stats = hour_plain_and_compressed
    start, end = _middle_window()
    reader = pumpwatch.Store.open_readonly(plain if form == "plain" else compressed)
    reader.query(start, end)  # first look maps the files and reads the index (not what is measured)
    table = benchmark(reader.query, start, end)
    assert 100_000 < table.num_rows < 125_000
    assert table.equals(pumpwatch.Store.open_readonly(plain).query(start, end))
    benchmark.extra_info.update(
        rows=table.num_rows,
        plain_mb=round(stats["plain_bytes"] / 1e6, 1),
        compressed_mb=round(stats["compressed_bytes"] / 1e6, 1),
        compress_mb_per_s=round(stats["plain_bytes"] / 1e6 / stats["seconds"], 1),
    )


@pytest.mark.benchmark(group="query-40s-of-10M-sealed")
def test_query_window_compressed_purepy(benchmark, hour_plain_and_compressed):
    _, compressed, _ = hour_plain_and_compressed
    start, end = _middle_window()
    reader = purepy.Store.open_readonly(compressed)
    table = benchmark.pedantic(reader.query, args=(start, end), rounds=3, iterations=1)
    assert 100_000 < table.num_rows < 125_000
