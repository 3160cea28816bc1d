"""The PostgreSQL sink against a real server (issue #7): no loss and no duplicate when its
connection is killed again and again and the collector is SIGKILLed; one row per trade from two
collectors on the same venue; a window read from the database equals the same window read from
the log; schema creation that is idempotent and safe to race; the cursor kept in the database;
segments deleted by retention and damaged spans reported, never silent.

The server: PUMPWATCH_TEST_PG_DSN when set, else a throwaway cluster of this machine's PostgreSQL
binaries (tests/pg_cluster.py), else the tests skip, except under CI (env CI), where they fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

import pumpwatch
from conftest import make_trades
from pumpwatch.config import ConfigError, from_dict
from pumpwatch.errors import InvalidInputError
from pumpwatch.retention import RetentionPolicy, apply_retention
from pumpwatch.sink import START, LogTail

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL sink needs psycopg: pip install 'pumpwatch[postgres]'")

from pg_cluster import postgres_server  # noqa: E402
from pumpwatch.sink.postgres import PostgresSink, PostgresSource, SinkError, ensure_schema, metrics_lines  # noqa: E402

pytestmark = pytest.mark.timeout(300)

DAY_NS = 86_400 * 10**9


@pytest.fixture(scope="module")
def pg_dsn():
    with postgres_server() as (dsn, where):
        if dsn is None:
            if os.environ.get("CI"):
                pytest.fail(f"CI must run the PostgreSQL sink tests against a real server: {where}")
            pytest.skip(where)
        yield dsn


@pytest.fixture
def schema(pg_dsn):
    """A schema of its own for each test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _sink(pg_dsn, data_dir, collector_id, schema, **kw) -> PostgresSink:
    kw.setdefault("reconnect_initial_s", 0.05)
    kw.setdefault("reconnect_max_s", 0.5)
    kw.setdefault("poll_interval_s", 0.05)
    return PostgresSink(pg_dsn, str(data_dir), collector_id, schema=schema, **kw)


def _wait(cond, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def _wait_caught_up(sink: PostgresSink, data_dir, timeout_s: float = 120.0) -> None:
    """Until the running sink's cursor is the end of the log as it is now."""
    tail = LogTail(data_dir)
    end = tail.read(START, 1).end

    def done():
        st = sink.status()
        return st["caught_up"] and tuple(st["cursor"]) >= tuple(end)

    _wait(done, timeout_s, f"the sink to reach {end} (status {sink.status()})")


ROW = "{venue}|{symbol}|{trade_id}|{ts_ns}|{price}|{qty}|{side}|{recv_ns}|{flags}"


def _log_rows(data_dir) -> list[dict]:
    return pumpwatch.Store.open_readonly(data_dir).query(include_non_trades=True).to_pylist()


def _checksum(rows: list[dict]) -> tuple[int, str]:
    rows = sorted(rows, key=lambda r: (r["venue"], r["symbol"], r["trade_id"], r["ts_ns"]))
    return len(rows), hashlib.md5("\n".join(ROW.format(**r) for r in rows).encode()).hexdigest()


def _db_checksum(pg_dsn, schema) -> tuple[int, str]:
    with psycopg.connect(pg_dsn) as c:
        n, digest = c.execute(f"""
            SELECT count(*), md5(coalesce(string_agg(
                venue || '|' || symbol || '|' || trade_id || '|' || ts_ns || '|' || coalesce(price_text, price::text) || '|' ||
                coalesce(qty_text, qty::text) || '|' || side || '|' || recv_ns || '|' || flags, E'\\n'
                ORDER BY venue COLLATE "C", symbol COLLATE "C", trade_id COLLATE "C", ts_ns), ''))
            FROM {schema}.trades""").fetchone()
    return n, digest


def _collector_row(pg_dsn, schema, collector_id) -> dict:
    with psycopg.connect(pg_dsn) as c:
        cur = c.execute(f"SELECT * FROM {schema}.collectors WHERE collector_id = %s", (collector_id,))
        return dict(zip([d.name for d in cur.description], cur.fetchone(), strict=False))


# ---- configuration (no server needed) ------------------------------------------------------


def test_config_sink_postgres_settings_env_dsn_and_errors_that_name_the_key(monkeypatch):
    monkeypatch.delenv("PUMPWATCH_PG_DSN", raising=False)
    assert from_dict({}).sink.postgres is None
    pg = from_dict(
        {"sink": {"postgres": {"dsn": "postgresql://u@db:5432/x", "collector_id": "tokyo-1", "batch_rows": 1000}}}
    ).sink.postgres
    assert (pg.dsn, pg.collector_id, pg.batch_rows, pg.schema) == (
        "postgresql://u@db:5432/x",
        "tokyo-1",
        1000,
        "pumpwatch",
    )
    # The collector id defaults to the host name.
    assert (
        from_dict({"sink": {"postgres": {"dsn": "postgresql://u@db/x"}}}).sink.postgres.collector_id
        == os.uname().nodename
    )
    with pytest.raises(ConfigError, match="PUMPWATCH_PG_DSN"):
        from_dict({"sink": {"postgres": {}}})
    monkeypatch.setenv("PUMPWATCH_PG_DSN", "postgresql://from-env@db/x")
    assert from_dict({"sink": {"postgres": {}}}).sink.postgres.dsn == "postgresql://from-env@db/x"
    # The key wins over the environment.
    assert (
        from_dict({"sink": {"postgres": {"dsn": "postgresql://key@db/x"}}}).sink.postgres.dsn == "postgresql://key@db/x"
    )
    bad = [
        ({"sink": {"postgres": {"batchrows": 5}}}, "sink.postgres.batchrows"),
        ({"sink": {"postgres": {"batch_rows": "many"}}}, "sink.postgres.batch_rows"),
        ({"sink": {"postgres": {"batch_rows": 0}}}, "sink.postgres.batch_rows"),
        ({"sink": {"postgres": {"poll_interval_s": True}}}, "sink.postgres.poll_interval_s"),
        ({"sink": {"postgres": {"use_timescaledb": "yes"}}}, "sink.postgres.use_timescaledb"),
        ({"sink": {"postgres": {"schema": "Drop Table"}}}, "sink.postgres.schema"),
        ({"sink": {"postgres": {"dsn": "mysql://x"}}}, "sink.postgres.dsn"),
        ({"sink": {"kafka": {}}}, "sink.kafka"),
        ({"sink": 1}, "[sink]"),
    ]
    for raw, key in bad:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            from_dict(raw)


# ---- reading back --------------------------------------------------------------------------


def _odd_decimal_trades(t0: int) -> list[pumpwatch.Trade]:
    """Texts `numeric` would print differently (leading zeros, negative zero) and ones it keeps."""
    texts = ["83680.00", "0.0000001117", "007.50", "-0.0", "-0", "0.000", "-2", "1.10", "00", "107407.88000000"]
    return [
        pumpwatch.Trade("gate-spot", "BTC_USDT", f"odd-{i}", p, texts[-1 - i], "sell", t0 + i, t0 + i + 5)
        for i, p in enumerate(texts)
    ]


def test_a_window_read_from_the_database_equals_the_same_window_read_from_the_log(pg_dsn, schema, tmp_path):
    d = tmp_path / "d"
    rng = random.Random(7)
    trades = make_trades(30_000, seed=11, spread_ns=3 * DAY_NS)  # three days: three partitions
    # Equal exchange times across records, so the tie order (log order) is tested too.
    trades += [
        pumpwatch.Trade("okx-swap", "BTC-USDT-SWAP", f"tie-{i}", "1.5", "2", "buy", trades[0].ts_ns, 1)
        for i in range(50)
    ]
    trades += _odd_decimal_trades(trades[1].ts_ns)
    trades += [
        pumpwatch.Trade(
            "binance-usdm",
            "1000PEPEUSDT",
            str(99_000 + i),
            "0",
            "0",
            "buy",
            trades[2].ts_ns + i,
            1,
            flags=pumpwatch.FLAGS["NON_TRADE"],
        )
        for i in range(20)
    ]
    rng.shuffle(trades)
    with pumpwatch.Store(d, segment_max_bytes=1 << 20) as store:
        for k in range(0, len(trades), 4000):
            store.append_trades(trades[k : k + 4000])
            store.append_marker(
                "gap_found",
                ts_ns=trades[k].ts_ns,
                venue="okx-swap",
                symbol="BTC-USDT-SWAP",
                from_ts_ns=trades[k].ts_ns - 10**9,
                to_ts_ns=trades[k].ts_ns,
                from_id="1",
                to_id=str(k),
                detail=f"g{k}",
            )
        store.append_marker("connection_down", ts_ns=trades[0].ts_ns, detail="no venue")
        sink = _sink(pg_dsn, d, "c1", schema, batch_rows=7_000)
        sink.catch_up(timeout_s=120)
        assert sink.status()["layout"] == "partitioned"
        log_side = pumpwatch.Store.open_readonly(d)
        with PostgresSource(pg_dsn, schema=schema) as db_side:
            everything = log_side.query(include_non_trades=True)
            assert everything.num_rows == len(trades)
            assert db_side.query(include_non_trades=True).equals(everything)
            assert db_side.query().equals(log_side.query())
            assert db_side.markers().equals(log_side.markers())
            lo, hi = min(t.ts_ns for t in trades), max(t.ts_ns for t in trades)
            windows = [(trades[0].ts_ns, trades[0].ts_ns + 1), (None, lo + DAY_NS), (lo + DAY_NS, None), (hi + 1, None)]
            windows += [tuple(sorted((rng.randrange(lo, hi), rng.randrange(lo, hi)))) for _ in range(8)]
            for start, end in windows:
                for kw in (
                    {},
                    {"venues": ["okx-swap", "gate-spot"]},
                    {"symbols": ["BTCUSDT"]},
                    {"include_non_trades": True},
                    {"venues": ["binance-usdm"], "symbols": ["1000PEPEUSDT"], "include_non_trades": True},
                ):
                    want = log_side.query(start, end, **kw)
                    got = db_side.query(start, end, **kw)
                    assert got.schema == pumpwatch.TRADE_SCHEMA
                    assert got.equals(want), (
                        f"window {start}..{end} {kw}: {got.num_rows} rows from the database, {want.num_rows} from the log"
                    )
                assert db_side.markers(start, end).equals(log_side.markers(start, end)), f"markers {start}..{end}"
            # The venue's exact text comes back, and SQL sees exact numbers.
            got = {
                r["trade_id"]: (r["price"], r["qty"])
                for r in db_side.query(venues=["gate-spot"]).to_pylist()
                if r["trade_id"].startswith("odd-")
            }
            assert got == {t.trade_id: (t.price, t.qty) for t in _odd_decimal_trades(0)}
        with psycopg.connect(pg_dsn) as c:
            (price,) = c.execute(f"SELECT price FROM {schema}.trades WHERE trade_id = 'odd-0'").fetchone()
            assert str(price) == "83680.00"
            (price,) = c.execute(f"SELECT price FROM {schema}.trades WHERE trade_id = 'odd-2'").fetchone()
            assert str(price) == "7.50"  # the number; the text as sent is in price_text / price_as_sent
            (sent,) = c.execute(f"SELECT price_as_sent FROM {schema}.trades_view WHERE trade_id = 'odd-2'").fetchone()
            assert sent == "007.50"
            parts = c.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", (f"{schema}.trades",)
            ).fetchone()[0]
            days = {t.ts_ns // DAY_NS for t in trades}
            assert parts == len(days) >= 3
        sink.close()


# ---- schema, cursor ------------------------------------------------------------------------


def test_schema_creation_is_idempotent_and_safe_to_race(pg_dsn, schema, tmp_path):
    errors = []

    def create():
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as c:
                assert ensure_schema(c, schema) == "partitioned"
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    d = tmp_path / "d"
    with pumpwatch.Store(d) as store:
        store.append_trades(make_trades(2000, spread_ns=2 * DAY_NS))
        # Several sinks (collectors) starting at once create partitions for the same days.
        sinks = [_sink(pg_dsn, d, f"c{i}", schema) for i in range(4)]
        threads = [threading.Thread(target=s.catch_up, kwargs={"timeout_s": 60}) for s in sinks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for s in sinks:
            assert s.status()["caught_up"], s.status()
            s.close()
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        ensure_schema(c, schema)  # again, over data: nothing changes, nothing is lost
        tables = {
            r[0]
            for r in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename NOT LIKE 'trades_d%%'", (schema,)
            )
        }
        assert tables == {"meta", "collectors", "trades", "markers", "unread_spans"}
        assert c.execute(f"SELECT count(*), bit_or(seen_by) FROM {schema}.trades").fetchone() == (2000, 0b1111)
        assert c.execute(f"SELECT value FROM {schema}.meta WHERE key = 'layout'").fetchone()[0] == "partitioned"
        # A table of the same name that PumpWatch did not make is not written into.
        c.execute(f"CREATE SCHEMA {schema}_other")
        c.execute(f"CREATE TABLE {schema}_other.trades (x int)")
        try:
            with pytest.raises(SinkError, match="not made by PumpWatch"):
                ensure_schema(c, f"{schema}_other")
        finally:
            c.execute(f"DROP SCHEMA {schema}_other CASCADE")


def test_the_cursor_lives_in_the_database_and_a_new_sink_resumes_from_it(pg_dsn, schema, tmp_path):
    d = tmp_path / "d"
    with pumpwatch.Store(d, segment_max_bytes=1 << 20) as store:
        store.append_trades(make_trades(20_000, seed=3))
        first = _sink(pg_dsn, d, "resume", schema, batch_rows=3_000)
        assert first.step() and first.step()
        cursor = tuple(first.status()["cursor"])
        first.close()
        row = _collector_row(pg_dsn, schema, "resume")
        assert (row["seg_seq"], row["seg_offset"]) == cursor and row["trades_inserted"] == 6_000
        store.append_trades(make_trades(5_000, seed=4, t0=10**18))
        second = _sink(pg_dsn, d, "resume", schema, batch_rows=3_000)
        second.catch_up(timeout_s=120)
        # Nothing was sent twice: every batch after the restart was new to the database.
        row = _collector_row(pg_dsn, schema, "resume")
        assert (row["trades_inserted"], row["trades_present"]) == (25_000, 0)
        assert second.status()["trades_present"] == 0
        assert _db_checksum(pg_dsn, schema) == _checksum(_log_rows(d))
        # Two sinks moving one collector's cursor: the second one notices and says why.
        third = _sink(pg_dsn, d, "resume", schema)
        store.append_trades(make_trades(10, seed=5, t0=2 * 10**18))
        third.catch_up(timeout_s=60)
        store.append_trades(make_trades(10, seed=6, t0=2 * 10**18 + 10**12))
        with pytest.raises(SinkError, match="same collector_id"):
            second.step()
        second.close()
        third.close()


def test_a_cursor_past_the_end_of_the_log_is_reported_not_papered_over(pg_dsn, schema, tmp_path):
    d = tmp_path / "d"
    with pumpwatch.Store(d) as store:
        store.append_trades(make_trades(1_000))
    sink = _sink(pg_dsn, d, "replaced", schema)
    sink.catch_up(timeout_s=60)
    sink.close()
    shutil.rmtree(d)  # the data directory is replaced by an empty one
    with pumpwatch.Store(d) as store:
        store.append_trades(make_trades(10, seed=9))
    sink = _sink(pg_dsn, d, "replaced", schema)
    sink.start()
    try:
        st = _wait(lambda: (s := sink.status())["errors"] and s, 60, "the sink to report the cursor")
        assert "past the end of the log" in st["last_error"] and "UPDATE" in st["last_error"]
    finally:
        sink.close()
    assert _db_checksum(pg_dsn, schema)[0] == 1_000
    # Doing what the message says starts the sink over on the new log.
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"UPDATE {schema}.collectors SET seg_seq = 0, seg_offset = 0 WHERE collector_id = 'replaced'")
    sink = _sink(pg_dsn, d, "replaced", schema)
    sink.catch_up(timeout_s=60)
    sink.close()
    assert _db_checksum(pg_dsn, schema)[0] == 1_010


# ---- what the tail could not read ----------------------------------------------------------


def test_segments_deleted_by_retention_while_the_sink_lagged_are_reported(pg_dsn, schema, tmp_path, caplog):
    # Plain segments, so the test can name what retention deletes (compressed ones tail alike: rust tail tests).
    d = tmp_path / "d"
    with pumpwatch.Store(d, segment_max_bytes=64 << 10, zstd_level=0) as store:
        for k in range(10):
            store.append_trades(make_trades(2_000, seed=k, t0=10**18 + k * 10**12))
        sink = _sink(pg_dsn, d, "lagging", schema, batch_rows=500)
        assert sink.step()
        written_first = set(_keys_in_db(pg_dsn, schema))
        log_dir = d / "log"
        before = sorted(p.name for p in log_dir.glob("*.pwlog"))
        total = sum(p.stat().st_size for p in log_dir.glob("*.pwlog"))
        deleted = apply_retention(d, store._log.active_segment()[0], RetentionPolicy(max_age_s=0, max_bytes=total // 2))
        assert deleted and deleted[0] == before[0]
        remaining = {(r["venue"], r["symbol"], r["trade_id"], r["ts_ns"]) for r in _log_rows(d)}
        with caplog.at_level(logging.WARNING, logger="pumpwatch.sink.postgres"):
            sink.catch_up(timeout_s=120)
        st = sink.status()
        assert st["skipped_segments"] == len(deleted) and st["skipped_spans"] == 1
        assert any("deleted before the sink read them" in r.getMessage() for r in caplog.records)
        assert set(_keys_in_db(pg_dsn, schema)) == written_first | remaining
        with psycopg.connect(pg_dsn) as c:
            rows = c.execute(f"SELECT kind, from_seq, to_seq, segments FROM {schema}.unread_spans").fetchall()
        assert rows == [("segments_deleted", 1, len(deleted) + 1, len(deleted))]
        assert "pumpwatch_sink_postgres_skipped_segments_total" in "\n".join(metrics_lines(st))
        sink.close()


def test_a_damaged_span_is_reported_and_the_records_after_it_are_written(pg_dsn, schema, tmp_path):
    d = tmp_path / "d"
    trades = make_trades(3_000, seed=21)
    with pumpwatch.Store(d) as store:
        store.append_trades(trades)
    seg = sorted((d / "log").glob("*.pwlog"))[0]
    raw = bytearray(seg.read_bytes())
    raw[64 + 40_000] ^= 0xFF  # inside some record in the middle
    seg.write_bytes(bytes(raw))
    sink = _sink(pg_dsn, d, "damaged", schema)
    sink.catch_up(timeout_s=60)
    st = sink.status()
    sink.close()
    assert st["damaged_spans"] == 1 and st["caught_up"]
    n, _ = _db_checksum(pg_dsn, schema)
    assert n == len(_log_rows(d)) == len(trades) - 1
    with psycopg.connect(pg_dsn) as c:
        kind, frm, to = c.execute(f"SELECT kind, from_offset, to_offset FROM {schema}.unread_spans").fetchone()
    assert kind == "damaged" and frm <= 64 + 40_000 < to


def _keys_in_db(pg_dsn, schema):
    with psycopg.connect(pg_dsn) as c:
        return [tuple(r) for r in c.execute(f"SELECT venue, symbol, trade_id, ts_ns FROM {schema}.trades")]


# ---- no loss, no duplicate: connection killed repeatedly, collector SIGKILLed -----------------

WRITER = textwrap.dedent(
    """
    import sys, time, pumpwatch
    path, run, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    venues = [("binance-spot", "BTCUSDT"), ("okx-swap", "BTC-USDT-SWAP"), ("bybit-linear", "ETHUSDT"), ("phemex-spot", "sBTCUSDT")]
    prices = ["107407.88000000", "0.0000001117", "83680.00", "1922.5"]
    store = pumpwatch.Store(path, fsync_interval=0.05, segment_max_bytes=1 << 20)
    b = 0
    while batches < 0 or b < batches:
        trades = []
        for j in range(500):
            i = (run * 10_000 + b) * 500 + j
            venue, symbol = venues[i % 4]
            tid = f"{i:x}-{run}" if venue == "okx-swap" else str(i)
            ts = 1_790_000_000_000_000_000 + (i % 3) * 86_400 * 10**9 + i * 1000
            trades.append(pumpwatch.Trade(venue, symbol, tid, prices[i % 4], f"{i % 97}.{i % 10}0", "buy" if i % 2 else "sell",
                                          ts, ts + 7, flags=pumpwatch.FLAGS["NON_TRADE"] if i % 1000 == 999 else 0))
        store.append_trades(trades)
        if b % 25 == 0:
            store.append_marker("connection_up", ts_ns=time.time_ns(), venue="okx-swap", detail=f"run {run} batch {b}")
        print(b, flush=True)   # acknowledged only after append_trades returned
        b += 1
        time.sleep(0.01)
    store.close(seal=True)
    """
)


def test_connection_killed_repeatedly_and_collector_sigkilled_leave_exactly_the_trades_of_the_log(
    pg_dsn, schema, tmp_path
):
    d = tmp_path / "d"
    d.mkdir()
    sink = _sink(pg_dsn, d, "killtest", schema, batch_rows=4_000)
    kills = 0
    killer_stop = threading.Event()

    def killer():
        nonlocal kills
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            last = -1
            while not killer_stop.is_set():
                written = sink.status()["trades_written"]
                if written != last:  # kill only once the sink made progress since the last kill
                    n = c.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                        ("pumpwatch-sink:killtest",),
                    ).fetchone()[0]
                    if n:
                        kills += n
                        last = written
                killer_stop.wait(random.uniform(0.03, 0.2))

    # Run 1: a recorder appending until SIGKILL, at a random moment after some batches.
    w1 = subprocess.Popen([sys.executable, "-c", WRITER, str(d), "1", "-1"], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    try:
        # The sink starts once the directory exists, and follows the writer.
        assert w1.stdout.readline().strip() == "0"
        sink.start()
        k = threading.Thread(target=killer, daemon=True)
        k.start()
        stop_after = random.Random(5).randrange(60, 100)
        for _line in w1.stdout:
            acknowledged += 1
            if acknowledged >= stop_after:
                break
        w1.send_signal(signal.SIGKILL)
    finally:
        w1.kill()
        w1.wait(30)
    # Run 2: the recorder restarts (recovery) and appends more, then stops cleanly.
    w2 = subprocess.run([sys.executable, "-c", WRITER, str(d), "2", "120"], capture_output=True, text=True, timeout=240)
    assert w2.returncode == 0, w2.stderr
    _wait(lambda: kills >= 8, 120, f"8 kills of the sink's connection (got {kills})")
    killer_stop.set()
    k.join(30)
    _wait_caught_up(sink, d)
    st = sink.status()
    sink.stop()
    log_rows = _log_rows(d)
    assert len(log_rows) >= (acknowledged + 120) * 500
    assert _db_checksum(pg_dsn, schema) == _checksum(log_rows)
    row = _collector_row(pg_dsn, schema, "killtest")
    # Exactly once by the cursor, not only by the key: no batch was ever written twice.
    assert (row["trades_inserted"], row["trades_present"]) == (len(log_rows), 0)
    assert st["connection_errors"] >= 8 and st["connects"] >= 9
    with psycopg.connect(pg_dsn) as c:
        markers = c.execute(f"SELECT count(*) FROM {schema}.markers").fetchone()[0]
    assert markers == pumpwatch.Store.open_readonly(d).markers().num_rows > 0


# ---- two collectors, one database -----------------------------------------------------------


def test_two_collectors_on_the_same_simulated_venue_make_one_row_per_trade(pg_dsn, schema, tmp_path):
    from pumpwatch.collector import Collector
    from pumpwatch.config import Config, VenueSettings
    from pumpwatch.sim import Simulator

    venues = ["okx-spot", "phemex-perp"]  # ids in sequence; no ids at all (content keys)
    dirs = [tmp_path / "a", tmp_path / "b"]

    async def record(sinks):
        sim = Simulator(venues, seed=5, trades_per_s=60.0, backlog=50)
        await sim.start()
        try:
            urls = sim.urls()
            stores, tasks = [], []
            stop = asyncio.Event()
            for d in dirs:
                cfg = Config(
                    data_dir=str(d),
                    metrics_address="127.0.0.1:0",
                    venues={
                        v: VenueSettings(
                            enabled=v in venues,
                            ws_url=urls[v]["ws_origin"] if v in venues else "",
                            rest_url=urls[v]["rest_url"] if v in venues else "",
                        )
                        for v in pumpwatch.VENUES
                    },
                )
                store = pumpwatch.Store(d)
                stores.append(store)
                tasks.append(asyncio.create_task(Collector(cfg, store).run(stop)))
            # The sinks run as the daemon runs them, while the collectors record.
            sink_tasks = [asyncio.create_task(s.run(stop)) for s in sinks]
            await asyncio.sleep(1.0)
            sim.venues["okx-spot"].disconnect_all()  # a hole one collector fills by backfill
            await asyncio.sleep(5.0)
            stop.set()
            await asyncio.gather(*tasks)
            await asyncio.gather(*sink_tasks)
            for s in stores:
                s.close()
        finally:
            await sim.stop()

    for d in dirs:
        d.mkdir()
        pumpwatch.Store(d).close()
    sinks = [
        _sink(pg_dsn, d, cid, schema, batch_rows=500)
        for d, cid in zip(dirs, ["collector-a", "collector-b"], strict=False)
    ]
    asyncio.run(record(sinks))
    for s in sinks:  # what they had not shipped when the daemon stopped
        s.catch_up(timeout_s=120)
        s.close()
    key = lambda r: (r["venue"], r["symbol"], r["trade_id"], r["ts_ns"])  # noqa: E731
    a = {key(r) for r in _log_rows(dirs[0])}
    b = {key(r) for r in _log_rows(dirs[1])}
    assert len(a & b) > 0.8 * min(len(a), len(b)) > 200, (len(a), len(b), len(a & b))
    for v in venues:
        assert any(k[0] == v for k in a & b), f"both collectors recorded {v}"
    with psycopg.connect(pg_dsn) as c:
        bits = dict(c.execute(f"SELECT collector_id, bit FROM {schema}.collectors").fetchall())
        rows = c.execute(
            f"SELECT venue, symbol, trade_id, ts_ns, collector_id, seen_by FROM {schema}.trades"
        ).fetchall()
    db = {r[:4]: (r[4], r[5]) for r in rows}
    assert len(db) == len(rows) == len(a | b), "one row per trade"
    assert set(db) == a | b
    bit_a, bit_b = 1 << bits["collector-a"], 1 << bits["collector-b"]
    for k, (first, seen_by) in db.items():
        want = (bit_a if k in a else 0) | (bit_b if k in b else 0)
        assert seen_by == want, f"{k}: seen_by {seen_by:b}, want {want:b}"
        assert first in (["collector-a"] if k in a else []) + (["collector-b"] if k in b else [])
    # Reading one collector's view back gives exactly its log.
    for d, cid in zip(dirs, ["collector-a", "collector-b"], strict=False):
        with PostgresSource(pg_dsn, schema=schema, collector_id=cid) as src:
            got = src.query(include_non_trades=True)
            want = pumpwatch.Store.open_readonly(d).query(include_non_trades=True)
            assert sorted(map(key, got.to_pylist())) == sorted(map(key, want.to_pylist()))
            assert src.markers().equals(pumpwatch.Store.open_readonly(d).markers())


# ---- in the daemon ---------------------------------------------------------------------------


def test_the_sink_follows_a_recording_store_and_reports_its_lag(pg_dsn, schema, tmp_path):
    d = tmp_path / "d"

    async def main():
        store = pumpwatch.Store(d)
        sink = _sink(pg_dsn, d, "daemon", schema, batch_rows=2_000)
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        sent = 0
        for k in range(40):
            store.append_trades(make_trades(500, seed=100 + k, t0=10**18 + k * 10**12))
            sent += 500
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 120
        while not (sink.status()["caught_up"] and tuple(sink.status()["cursor"]) == tuple(store._log.active_segment())):
            assert time.monotonic() < deadline, sink.status()
            await asyncio.sleep(0.05)
        st = sink.status()
        # A clean stop writes what the log holds at that moment.
        store.append_trades(make_trades(3_000, seed=99, t0=2 * 10**18))
        stop.set()
        await task
        store.close()
        return sent, st, sink.status()

    sent, st, after = asyncio.run(main())
    assert after["trades_written"] == sent + 3_000 == _db_checksum(pg_dsn, schema)[0]
    for k in (
        "records_behind",
        "bytes_behind",
        "seconds_behind",
        "trades_written",
        "last_error",
        "caught_up",
        "cursor",
        "log_end",
    ):
        assert k in st
    assert (st["records_behind"], st["bytes_behind"], st["seconds_behind"]) == (0, 0, 0.0)
    assert st["trades_written"] == sent and st["last_error"] == ""
    assert after["state"] == "stopped"
    text = "\n".join(metrics_lines(st))
    assert 'pumpwatch_sink_postgres_records_behind{collector="daemon"} 0' in text
    assert f'pumpwatch_sink_postgres_trades_written_total{{collector="daemon"}} {sent}' in text


def test_a_database_that_is_not_there_is_an_error_in_status_and_the_sink_retries(tmp_path):
    d = tmp_path / "d"
    pumpwatch.Store(d).close()
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = PostgresSink(
        f"postgresql://nobody@127.0.0.1:{port}/x",
        str(d),
        "nowhere",
        reconnect_initial_s=0.05,
        reconnect_max_s=0.2,
        connect_timeout_s=2,
    )
    sink.start()
    try:
        st = _wait(lambda: (s := sink.status())["connection_errors"] >= 3 and s, 60, "three failed connection attempts")
        assert st["state"] == "reconnecting" and "OperationalError" in st["last_error"]
    finally:
        sink.close()
    with pytest.raises(SinkError, match="PUMPWATCH_PG_DSN"):
        PostgresSink("", str(d))
    with pytest.raises(InvalidInputError):
        PostgresSink("postgresql://x@127.0.0.1/x", str(d), schema="Bad Name")


# ---- in the daemon ---------------------------------------------------------------------------


def test_the_daemon_runs_the_sink_and_the_database_holds_exactly_its_log(pg_dsn, schema, tmp_path):
    """`pumpwatch run --simulate` with [sink.postgres]: the sink ships while the recorder records,
    stops after it (so its last markers ship), and /status and /metrics carry its lag. The
    database then holds exactly the trades of the log, and a window read with `--source` equals
    the window read from the log."""
    from pumpwatch.config import from_dict
    from pumpwatch.daemon import SimScenario, run
    from pumpwatch.status import metrics_text

    data = tmp_path / "data"
    cfg = from_dict(
        {
            "data_dir": str(data),
            "metrics_address": "127.0.0.1:0",
            "sink": {"postgres": {"dsn": pg_dsn, "schema": schema, "collector_id": "daemon-1"}},
        }
    )
    seen: list[dict] = []

    async def go():
        task = asyncio.create_task(
            run(cfg, simulate=True, duration=8.0, interactive=False, scenario=SimScenario(faults=[], notices=[]))
        )
        await asyncio.sleep(6.0)
        final = await task
        seen.append(final)

    asyncio.run(go())
    final = seen[0]
    assert final["sink"]["postgres"]["collector_id"] == "daemon-1"
    assert "pumpwatch_sink_postgres" in metrics_text(final)
    rows = _log_rows(data)
    assert len(rows) > 1000
    assert _db_checksum(pg_dsn, schema) == _checksum(rows)
    t = sorted(r["ts_ns"] for r in rows)
    start, end = t[len(t) // 4], t[3 * len(t) // 4]
    env = {**os.environ, "PUMPWATCH_PG_SCHEMA": schema}
    for source, out in ((pg_dsn, "db.parquet"), (str(data), "log.parquet")):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pumpwatch.cli",
                "export",
                "--from",
                str(start),
                "--to",
                str(end),
                "--source",
                source,
                "-o",
                str(tmp_path / out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    from_db, from_log = pq.read_table(tmp_path / "db.parquet"), pq.read_table(tmp_path / "log.parquet")
    assert from_db.num_rows > 100 and from_db.equals(from_log)


def test_the_throwaway_cluster_chooses_another_port_when_its_port_is_taken(monkeypatch):
    """CI once lost ten tests to a port another worker took between choosing it and the server
    binding it: the cluster starts on the next free port instead."""
    import pg_cluster

    bindir = pg_cluster.find_binaries()
    if bindir is None or os.environ.get(pg_cluster.ENV_DSN):
        pytest.skip("needs this machine's PostgreSQL binaries (a throwaway cluster)")
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        chosen: list[int] = []
        real_free_port = pg_cluster._free_port

        def first_the_taken_port() -> int:
            chosen.append(taken_port if not chosen else real_free_port())
            return chosen[-1]

        monkeypatch.setattr(pg_cluster, "_free_port", first_the_taken_port)
        with pg_cluster.throwaway_cluster(bindir) as dsn:
            assert len(chosen) == 2 and chosen[0] == taken_port
            assert dsn.endswith(f":{chosen[1]}/postgres")
            assert pg_cluster.reachable(dsn) is None
