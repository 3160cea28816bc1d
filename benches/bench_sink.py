"""The PostgreSQL sink (issue #7): sustained rows/s into PostgreSQL with COPY (goal: at least
200,000 rows/s), and how far the sink lags behind a recorder ingesting 50,000 trades/s.

The server is PUMPWATCH_TEST_PG_DSN, else a throwaway cluster of this machine's PostgreSQL with its
default durability (fsync on; tests/pg_cluster.py); without either the benchmarks skip.

    python3 -m pytest benches/bench_sink.py --benchmark-only -s
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import uuid

import pytest

import pumpwatch

psycopg = pytest.importorskip("psycopg", reason="pip install 'pumpwatch[postgres]'")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from conftest import trade_table  # noqa: E402  (benches/conftest.py)
from pg_cluster import postgres_server  # noqa: E402
from pumpwatch.sink.postgres import PostgresSink  # noqa: E402

ROWS = 1_000_000
RATE = 50_000  # trades/s the recorder ingests in the lag benchmark
SECONDS = 20


@pytest.fixture(scope="module")
def pg_dsn():
    with postgres_server(durable=True) as (dsn, where):
        if dsn is None:
            pytest.skip(where)
        yield dsn


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A data directory holding ROWS trades (four venues, realistic decimals and ids)."""
    d = tmp_path_factory.mktemp("sink") / "d"
    with pumpwatch.Store(d) as store:
        table = trade_table(ROWS)
        for k in range(0, ROWS, 100_000):
            store.append_trades(table.slice(k, 100_000))
    return d


def _fresh_schema() -> str:
    return f"bench_{uuid.uuid4().hex[:10]}"


def _drop(pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.benchmark(group="sink-postgres")
def test_sustained_rows_per_second_into_postgres(benchmark, pg_dsn, recorded):
    """The whole log (1 M trades) into an empty schema, batches of 50,000 rows: COPY into the
    staging table, INSERT ... ON CONFLICT into the day partitions, cursor, commit."""
    schemas = []

    def setup():
        schema = _fresh_schema()
        schemas.append(schema)
        sink = PostgresSink(pg_dsn, str(recorded), "bench", schema=schema, batch_rows=50_000)
        sink.step()  # connects, creates the schema and the first batch; not what is measured
        return (sink,), {}

    def run(sink):
        sink.catch_up()
        sink.close()

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    rows = ROWS - 50_000
    benchmark.extra_info["rows_per_s"] = rows / benchmark.stats.stats.mean
    benchmark.extra_info["rows_per_s_best"] = rows / benchmark.stats.stats.min
    with psycopg.connect(pg_dsn) as c:
        assert c.execute(f"SELECT count(*) FROM {schemas[-1]}.trades").fetchone()[0] == ROWS
    for s in schemas:
        _drop(pg_dsn, s)
    print(
        f"\nsink-postgres: {benchmark.extra_info['rows_per_s']:,.0f} rows/s mean, "
        f"{benchmark.extra_info['rows_per_s_best']:,.0f} best"
    )


def binance_frames(n: int, first_id: int) -> list[bytes]:
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
            "T": 1751132780368 + i // 50,
            "m": bool(i & 1),
            "M": True,
        }
        out.append(json.dumps({"stream": "btcusdt@trade", "data": data}, separators=(",", ":")).encode())
    return out


@pytest.mark.benchmark(group="sink-postgres-lag")
def test_lag_behind_a_recorder_ingesting_50k_trades_per_s(benchmark, pg_dsn, tmp_path):
    """The recorder ingests Binance frames at 50,000 trades/s (a batch every 100 ms, through the
    ingest path) for 20 s while the sink runs on its thread in the same process, as in the
    daemon. Sampled every 100 ms: records and seconds the sink is behind; and whether ingestion
    kept its pace (the sink must never slow it)."""
    frames = binance_frames(RATE * SECONDS, 5_000_000_000)
    result = {}

    def run():
        d = tmp_path / uuid.uuid4().hex[:6]
        schema = _fresh_schema()
        store = pumpwatch.Store(d)
        sink = PostgresSink(pg_dsn, str(d), "lag", schema=schema, poll_interval_s=0.05)
        sink.start()
        behind, seconds, late = [], [], []
        ingested = [0]
        stop = threading.Event()

        def sample():
            # Records behind = trades in the log now minus trades in the database now (the
            # status figure is as of the sink's last look at the log, up to a poll interval old).
            while not stop.wait(0.1):
                st = sink.status()
                behind.append(ingested[0] - st["trades_written"])
                seconds.append(st["seconds_behind"])

        sampler = threading.Thread(target=sample)
        sampler.start()
        per_tick = RATE // 10
        t0 = time.monotonic()
        for k in range(0, len(frames), per_tick):
            due = t0 + (k // per_tick) * 0.1
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            late.append(max(0.0, time.monotonic() - due))
            ingested[0] += store.ingest_many("binance-spot", frames[k : k + per_tick], time.time_ns())[0]
        ingest_s = time.monotonic() - t0
        t_end = time.monotonic()
        end = tuple(store._log.active_segment())
        while not (sink.status()["caught_up"] and tuple(sink.status()["cursor"]) >= end):
            time.sleep(0.01)
        drain_s = time.monotonic() - t_end
        stop.set()
        sampler.join()
        written = sink.status()["trades_written"]
        sink.close()
        store.close()
        _drop(pg_dsn, schema)
        assert written == len(frames)
        q = sorted(behind)
        result.update(
            ingest_rate=len(frames) / ingest_s,
            ingest_late_max_ms=max(late) * 1e3,
            records_behind_p50=statistics.median(q),
            records_behind_p99=q[int(len(q) * 0.99) - 1],
            records_behind_max=q[-1],
            seconds_behind_p50=statistics.median(seconds),
            seconds_behind_max=max(seconds),
            drain_after_stop_s=drain_s,
        )

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print("\nsink-postgres-lag: " + ", ".join(f"{k}={v:,.2f}" for k, v in result.items()))
