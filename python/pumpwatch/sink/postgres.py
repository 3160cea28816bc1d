"""The recording replicated into PostgreSQL / TimescaleDB, from one or several collectors.

`PostgresSink` tails a collector's local log from a cursor kept IN THE DATABASE (one per
collector) and writes trades and markers in batches: COPY into a session-local staging table,
`INSERT ... ON CONFLICT DO NOTHING` into the trade table, and the cursor update, all in one
transaction. A crash, a restart or a cut connection between the two either committed the batch
and its cursor together or neither, so nothing is lost or written twice; after any error the
cursor is read back from the database, which is the only truth about what was committed.

A trade's key is (venue, symbol, trade id, exchange time): the trade id is the venue's, or the
content key the parsers derive where a venue has none (Phemex), and exchange time is in the key
because the table is partitioned by it. Two collectors recording the same venue therefore make one
row per trade. Rows say who saw them: `collector_id` is the collector whose copy landed first (its
`log_seq`/`log_offset` are positions in that collector's log) and `seen_by` is a bit set of every
collector that delivered the trade (bit numbers in `collectors.bit`).

Prices and quantities are `numeric`, exact. `numeric` prints the venue's text back exactly (scale
and trailing zeros kept) for every canonical decimal; the rare text it would not (leading zeros,
negative zero) is kept verbatim in `price_text` / `qty_text`, so a read gives back what the
venue sent, always.

Layout: a TimescaleDB hypertable on exchange time (ns) when the extension is available, else a
plain table partitioned by range of exchange time, one partition per UTC day, created on demand.

`PostgresSource` reads it back with the methods and results of `pumpwatch.store.ReadOnlyStore`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import io
import logging
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

try:
    import psycopg
    from psycopg import sql
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the PostgreSQL sink needs psycopg 3: pip install 'pumpwatch[postgres]' (or 'psycopg[binary]')"
    ) from e

from .._core import FLAGS
from ..errors import InvalidInputError
from ..net import Backoff
from ..schema import MARKER_SCHEMA, TRADE_SCHEMA
from . import START, Cursor, LogTail, TailBatch

log = logging.getLogger("pumpwatch.sink.postgres")

SCHEMA_VERSION = 1
DAY_NS = 86_400 * 1_000_000_000
MAX_COLLECTORS = 63
NON_TRADE = FLAGS["NON_TRADE"]
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Decimal text that `numeric` prints back unchanged: no leading zeros, no negative zero.
_CANONICAL = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"
_NEGATIVE_ZERO = r"^-0(\.0+)?$"
#: The columns a batch is copied with, in order (the staging table has the same).
_COPY_COLUMNS = (
    "ts_ns",
    "venue",
    "symbol",
    "trade_id",
    "price",
    "qty",
    "price_text",
    "qty_text",
    "side",
    "recv_ns",
    "flags",
    "collector_id",
    "log_seq",
    "log_offset",
    "seen_by",
)
_BIGINT_COLUMNS = ("ts_ns", "recv_ns", "log_seq", "log_offset", "seen_by")
#: After a batch met rows already in the table, this many batches go through the staging table
#: before the direct COPY is tried again.
STAGED_BATCHES_AFTER_CONFLICT = 50
_STAGED_VALUES = sql.SQL(", ").join(
    sql.SQL("{}::numeric").format(sql.Identifier(c)) if c in ("price", "qty") else sql.Identifier(c)
    for c in _COPY_COLUMNS
)


class SinkError(InvalidInputError):
    """The sink cannot go on as configured (another sink moves the same cursor, too many
    collectors, a bad schema name); the message says what to do."""


def check_schema_name(schema: str) -> str:
    if not _IDENT.match(schema):
        raise SinkError(f"schema {schema!r} is not a plain PostgreSQL name: use lower-case letters, digits and _")
    return schema


def _value(cursor: psycopg.Cursor[Any]) -> Any:
    """The first column of the row a query always returns (an expression, an aggregate, a key
    just written)."""
    row = cursor.fetchone()
    if row is None:
        raise SinkError("PostgreSQL returned no row where one always is; check the database and try again")
    return row[0]


def _ddl(schema: str, layout: str) -> list[sql.Composed]:
    s = sql.Identifier(schema)
    partitioned = sql.SQL(" PARTITION BY RANGE (ts_ns)") if layout == "partitioned" else sql.SQL("")
    out = [
        sql.SQL("""CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL)""").format(s=s),
        sql.SQL("""CREATE TABLE IF NOT EXISTS {s}.collectors (
            collector_id text PRIMARY KEY,
            bit smallint NOT NULL UNIQUE CHECK (bit BETWEEN 0 AND 62),
            seg_seq bigint NOT NULL DEFAULT 0,
            seg_offset bigint NOT NULL DEFAULT 0,
            trades_inserted bigint NOT NULL DEFAULT 0,
            trades_present bigint NOT NULL DEFAULT 0,
            markers_inserted bigint NOT NULL DEFAULT 0,
            data_dir text NOT NULL DEFAULT '',
            first_seen timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())""").format(s=s),
        sql.SQL("""CREATE TABLE IF NOT EXISTS {s}.trades (
            ts_ns bigint NOT NULL,
            venue text COLLATE "C" NOT NULL,
            symbol text COLLATE "C" NOT NULL,
            trade_id text COLLATE "C" NOT NULL,
            price numeric NOT NULL,
            qty numeric NOT NULL,
            price_text text,
            qty_text text,
            side text NOT NULL,
            recv_ns bigint NOT NULL,
            flags integer NOT NULL,
            collector_id text NOT NULL,
            log_seq bigint NOT NULL,
            log_offset bigint NOT NULL,
            seen_by bigint NOT NULL,
            PRIMARY KEY (venue, symbol, trade_id, ts_ns))""").format(s=s)
        + partitioned,
        sql.SQL("""CREATE TABLE IF NOT EXISTS {s}.markers (
            collector_id text NOT NULL,
            log_seq bigint NOT NULL,
            log_offset bigint NOT NULL,
            kind text NOT NULL,
            venue text,
            symbol text NOT NULL,
            ts_ns bigint NOT NULL,
            from_ts_ns bigint NOT NULL,
            to_ts_ns bigint NOT NULL,
            from_id text NOT NULL,
            to_id text NOT NULL,
            detail text NOT NULL,
            PRIMARY KEY (collector_id, log_seq, log_offset))""").format(s=s),
        sql.SQL("CREATE INDEX IF NOT EXISTS markers_ts_ns ON {s}.markers (ts_ns)").format(s=s),
        sql.SQL("""CREATE TABLE IF NOT EXISTS {s}.unread_spans (
            collector_id text NOT NULL,
            noted_at timestamptz NOT NULL DEFAULT now(),
            kind text NOT NULL,
            from_seq bigint NOT NULL,
            from_offset bigint NOT NULL,
            to_seq bigint NOT NULL,
            to_offset bigint NOT NULL,
            segments bigint NOT NULL,
            bytes bigint NOT NULL,
            detail text NOT NULL)""").format(s=s),
    ]
    if layout == "partitioned":
        # Trades arrive nearly in time order, so a BRIN index finds a window's pages at almost no
        # cost to writes (a b-tree on time costs a quarter of the COPY rate). A hypertable gets its
        # own time index from create_hypertable.
        out.append(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS trades_ts_ns ON {s}.trades USING brin (ts_ns) WITH (pages_per_range = 16)"
            ).format(s=s)
        )
    out.append(
        sql.SQL("""CREATE OR REPLACE VIEW {s}.trades_view AS
        SELECT to_timestamp(ts_ns / 1e9) AS ts, venue, symbol, trade_id,
               price, qty, coalesce(price_text, price::text) AS price_as_sent, coalesce(qty_text, qty::text) AS qty_as_sent,
               side, ts_ns, recv_ns, flags, collector_id, seen_by
        FROM {s}.trades""").format(s=s)
    )
    return out


def _partition_name(day: int) -> str:
    d = _dt.datetime(1970, 1, 1) + _dt.timedelta(days=day)
    return f"trades_d{d:%Y%m%d}"


def ensure_schema(conn: psycopg.Connection, schema: str, *, use_timescaledb: bool = True) -> str:
    """Creates the schema when missing (idempotent, safe to race with other sinks) and returns its
    layout: "timescaledb" or "partitioned". An existing schema keeps the layout it was made with."""
    check_schema_name(schema)
    s = sql.Identifier(schema)
    with conn.transaction():
        # Serialises concurrent creators (several collectors starting at once).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pumpwatch-schema:{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {s}").format(s=s))
        exists = _value(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.trades",)))
        layout = None
        if exists:
            if _value(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.meta",))):
                row = conn.execute(sql.SQL("SELECT value FROM {s}.meta WHERE key = 'layout'").format(s=s)).fetchone()
                layout = row[0] if row else None
            if layout is None:
                raise SinkError(
                    f"{schema}.trades exists but was not made by PumpWatch (no {schema}.meta layout); "
                    f"choose another schema (sink.postgres.schema)"
                )
        else:
            layout = "partitioned"
            if use_timescaledb and _timescaledb_ready(conn):
                layout = "timescaledb"
        for stmt in _ddl(schema, layout):
            conn.execute(stmt)
        if not exists and layout == "timescaledb":
            conn.execute(
                "SELECT create_hypertable(%s, 'ts_ns', chunk_time_interval => %s, if_not_exists => TRUE)",
                (f"{schema}.trades", DAY_NS),
            )
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.meta VALUES ('layout', %s), ('schema_version', %s) ON CONFLICT (key) DO NOTHING"
            ).format(s=s),
            (layout, str(SCHEMA_VERSION)),
        )
        version = _value(conn.execute(sql.SQL("SELECT value FROM {s}.meta WHERE key = 'schema_version'").format(s=s)))
        if int(version) > SCHEMA_VERSION:
            raise SinkError(
                f"schema {schema} was made by a newer PumpWatch (version {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade PumpWatch"
            )
    return layout


def _timescaledb_ready(conn: psycopg.Connection) -> bool:
    """Whether the TimescaleDB extension is (or can be) installed in this database. Its library
    must be preloaded by the server; when it is not, the plain partitioned layout is used."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return True
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
        return False
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the outer transaction usable
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    except psycopg.Error as e:
        log.warning(
            "TimescaleDB is installed but cannot be enabled (%s); using a table partitioned by day",
            str(e).strip().splitlines()[0],
        )
        return False


def ensure_partitions(conn: psycopg.Connection, schema: str, days: Sequence[int]) -> None:
    """Creates the day partitions `days` (UTC day numbers since 1970-01-01) when missing."""
    s = sql.Identifier(schema)
    for day in days:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pumpwatch-partition:{schema}",))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {s}.{p} PARTITION OF {s}.trades FOR VALUES FROM ({lo}) TO ({hi})"
                ).format(
                    s=s,
                    p=sql.Identifier(_partition_name(day)),
                    lo=sql.Literal(day * DAY_NS),
                    hi=sql.Literal((day + 1) * DAY_NS),
                )
            )


@dataclass
class _Registration:
    bit: int
    cursor: Cursor


def register_collector(conn: psycopg.Connection, schema: str, collector_id: str, data_dir: str) -> _Registration:
    """The collector's bit and saved cursor, registering it (lowest free bit) when new."""
    s = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pumpwatch-collectors:{schema}",))
        row = conn.execute(
            sql.SQL("SELECT bit, seg_seq, seg_offset FROM {s}.collectors WHERE collector_id = %s").format(s=s),
            (collector_id,),
        ).fetchone()
        if row is None:
            free = _value(
                conn.execute(
                    sql.SQL(
                        "SELECT min(b) FROM generate_series(0, %s) b WHERE b NOT IN (SELECT bit FROM {s}.collectors)"
                    ).format(s=s),
                    (MAX_COLLECTORS - 1,),
                )
            )
            if free is None:
                raise SinkError(
                    f"{MAX_COLLECTORS} collectors are registered in {schema}.collectors already; delete the "
                    f"rows of collectors that are gone, or use another schema"
                )
            conn.execute(
                sql.SQL("INSERT INTO {s}.collectors (collector_id, bit, data_dir) VALUES (%s, %s, %s)").format(s=s),
                (collector_id, free, data_dir),
            )
            row = (free, 0, 0)
    return _Registration(bit=row[0], cursor=(row[1], row[2]))


def _trades_csv(trades: pa.Table, collector_id: str, seen_by: int) -> bytes:
    """`trades` as CSV in `_COPY_COLUMNS` order. Text `numeric` would not print back unchanged is
    kept verbatim in the *_text column."""

    def verbatim(col: pa.ChunkedArray) -> pa.ChunkedArray:
        canonical = pc.and_(
            pc.match_substring_regex(col, _CANONICAL), pc.invert(pc.match_substring_regex(col, _NEGATIVE_ZERO))
        )
        return pc.if_else(canonical, pa.scalar(None, pa.string()), col)

    t = trades
    table = pa.table(
        {
            "ts_ns": t["ts_ns"],
            "venue": t["venue"],
            "symbol": t["symbol"],
            "trade_id": t["trade_id"],
            "price": t["price"],
            "qty": t["qty"],
            "price_text": verbatim(t["price"]),
            "qty_text": verbatim(t["qty"]),
            "side": t["side"],
            "recv_ns": t["recv_ns"],
            "flags": t["flags"],
            "collector_id": pa.repeat(pa.scalar(collector_id, pa.string()), t.num_rows),
            "log_seq": t["log_seq"],
            "log_offset": t["log_offset"],
            "seen_by": pa.repeat(pa.scalar(seen_by, pa.int64()), t.num_rows),
        }
    )
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, batch_size=65_536))
    return buf.getvalue()


def _days(trades: pa.Table) -> list[int]:
    if trades.num_rows == 0:
        return []
    lo, hi = pc.min_max(trades["ts_ns"]).values()
    lo_day, hi_day = lo.as_py() // DAY_NS, hi.as_py() // DAY_NS
    if hi_day - lo_day <= 1:
        return list(range(lo_day, hi_day + 1))
    # Times days apart (old backfills, a venue's odd clock): only the days that occur. Integer
    # division truncates towards zero, so before 1970 a day may be one too high: add its neighbour.
    days = pc.unique(pc.divide(trades["ts_ns"], DAY_NS)).to_pylist()
    return sorted({d for d in days} | {d - 1 for d in days if d <= 0})


class PostgresSink:
    """Tails the log of `data_dir` into PostgreSQL at `dsn` as collector `collector_id`.

    Runs on its own thread (`start`/`stop`, or `await run(stop_event)` in the daemon): the
    recorder's event loop never waits for the database. It reconnects with capped, jittered
    backoff after any failure and catches up from the cursor in the database. `status()` tells
    how far behind it is and what went wrong last.
    """

    def __init__(
        self,
        dsn: str,
        data_dir: str,
        collector_id: str | None = None,
        *,
        schema: str = "pumpwatch",
        batch_rows: int = 50_000,
        poll_interval_s: float = 0.2,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        reconnect_factor: float = 2.0,
        reconnect_jitter: float = 0.2,
        use_timescaledb: bool = True,
        connect_timeout_s: float = 10.0,
        source: Any = None,
    ) -> None:
        if not dsn:
            raise SinkError(
                "no PostgreSQL DSN: set dsn in [sink.postgres] or the environment variable PUMPWATCH_PG_DSN"
            )
        if batch_rows < 1:
            raise SinkError(f"batch_rows must be at least 1, not {batch_rows}")
        self.dsn = dsn
        self.data_dir = str(data_dir)
        self.collector_id = collector_id or socket.gethostname()
        self.schema = check_schema_name(schema)
        self.batch_rows = batch_rows
        self.poll_interval_s = poll_interval_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.reconnect_factor = reconnect_factor
        self.reconnect_jitter = reconnect_jitter
        try:  # the one back-off policy (capped, jitter taken off), as the venues' reconnects use it
            self._reconnect_backoff = Backoff(reconnect_initial_s, reconnect_max_s, reconnect_factor, reconnect_jitter)
        except ValueError as e:
            raise SinkError(f"[sink.postgres] reconnect settings: {e}") from None
        self.use_timescaledb = use_timescaledb
        self.connect_timeout_s = connect_timeout_s
        self._tail = LogTail(source if source is not None else self.data_dir)
        self._conn: psycopg.Connection | None = None
        self._bit = 0
        self._cursor: Cursor = START
        self._known_days: set[int] = set()
        self._staged_batches_left = 0
        self._drain_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._oldest_unwritten_recv_ns: int | None = None
        self._stats: dict[str, Any] = {
            "state": "stopped",
            "layout": None,
            "cursor": list(START),
            "log_end": list(START),
            "records_behind": 0,
            "bytes_behind": 0,
            "caught_up": False,
            "batches": 0,
            "records_read": 0,
            "trades_written": 0,
            "trades_present": 0,
            "markers_written": 0,
            "quarantined_passed": 0,
            "connects": 0,
            "connection_errors": 0,
            "errors": 0,
            "skipped_segments": 0,
            "skipped_spans": 0,
            "damaged_spans": 0,
            "damaged_bytes": 0,
            "last_error": "",
            "last_error_at_ns": 0,
            "last_write_at_ns": 0,
        }

    @classmethod
    def from_settings(cls, settings: Any, data_dir: str, **kw: Any) -> PostgresSink:
        """A sink from `pumpwatch.config.PostgresSinkSettings`."""
        return cls(
            settings.dsn,
            data_dir,
            settings.collector_id,
            schema=settings.schema,
            batch_rows=settings.batch_rows,
            poll_interval_s=settings.poll_interval_s,
            reconnect_initial_s=settings.reconnect_initial_s,
            reconnect_max_s=settings.reconnect_max_s,
            use_timescaledb=settings.use_timescaledb,
            **kw,
        )

    # ---- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Lag and counters for /status, /metrics and the dashboard."""
        with self._lock:
            st = dict(self._stats)
            oldest = self._oldest_unwritten_recv_ns
        st["collector_id"] = self.collector_id
        st["schema"] = self.schema
        st["seconds_behind"] = 0.0 if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9)
        return st

    def _set(self, **kw: Any) -> None:
        with self._lock:
            self._stats.update(kw)

    def _add(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                self._stats[k] += v

    def _note_error(self, e: BaseException, *, connection: bool) -> None:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        with self._lock:
            self._stats["errors"] += 1
            if connection:
                self._stats["connection_errors"] += 1
            self._stats["last_error"] = f"{type(e).__name__}: {text}"
            self._stats["last_error_at_ns"] = time.time_ns()
            self._stats["state"] = "reconnecting" if connection else "error"

    # ---- connection ---------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        self._set(state="connecting")
        conn = psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, int(self.connect_timeout_s)),
            application_name=f"pumpwatch-sink:{self.collector_id}"[:63],
            # A cut that sends no reset (a dead route) is noticed in about half a minute.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=30_000,
        )
        try:
            # A commit need not wait for the server's disk: the cursor commits with the rows, so a
            # server crash that loses the last commits loses their cursor update too, and the
            # sink sends those records again. Exactly once either way, a tenth faster.
            conn.execute("SET synchronous_commit = off")
            layout = ensure_schema(conn, self.schema, use_timescaledb=self.use_timescaledb)
            reg = register_collector(conn, self.schema, self.collector_id, self.data_dir)
            cols = ", ".join(
                f"{c} {'bigint' if c in _BIGINT_COLUMNS else 'integer' if c == 'flags' else 'text'}"
                for c in _COPY_COLUMNS
            )
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS pw_stage_trades ({cols}) ON COMMIT DELETE ROWS")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._bit = reg.bit
        self._cursor = reg.cursor
        self._known_days = set() if layout == "partitioned" else None  # type: ignore[assignment]
        self._add(connects=1)
        self._set(state="running", layout=layout, cursor=list(reg.cursor))
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        """Closes the database connection (a running thread is stopped first)."""
        self.stop()
        self._drop_connection()

    # ---- one batch ----------------------------------------------------------------------

    def step(self) -> bool:
        """Reads one batch at the cursor and writes it in one transaction. True when the cursor
        moved; False when there was nothing new. Raises on a database or log error (the caller
        reconnects)."""
        conn = self._conn or self._connect()
        try:
            batch = self._tail.read(self._cursor, self.batch_rows)
        except InvalidInputError as e:  # the only one: a cursor past the end of the log
            raise SinkError(
                f"{e}. To start over: UPDATE {self.schema}.collectors SET seg_seq = 0, seg_offset = 0 WHERE "
                f"collector_id = '{self.collector_id.replace(chr(39), chr(39) * 2)}' (rows already in the database stay "
                f"and are not written twice)"
            ) from None
        if batch.trades.num_rows and self._oldest_unwritten_recv_ns is None:
            with self._lock:
                self._oldest_unwritten_recv_ns = batch.trades["recv_ns"][0].as_py()
        if batch.next == tuple(self._cursor):
            self._note_lag(batch)
            return False
        if self._known_days is not None:
            missing = [d for d in _days(batch.trades) if d not in self._known_days]
            if missing:
                ensure_partitions(conn, self.schema, missing)
                self._known_days.update(missing)
        inserted, present, markers = self._write(conn, batch)
        self._cursor = batch.next
        self._add(
            batches=1,
            records_read=batch.records,
            trades_written=inserted,
            trades_present=present,
            markers_written=markers,
            quarantined_passed=batch.quarantined,
        )
        self._set(cursor=list(batch.next), last_write_at_ns=time.time_ns())
        with self._lock:
            if batch.caught_up:
                self._oldest_unwritten_recv_ns = None
            elif batch.trades.num_rows:
                self._oldest_unwritten_recv_ns = batch.trades["recv_ns"][-1].as_py()
        self._note_lag(batch)
        self._report_unread(batch)
        return True

    def _note_lag(self, batch: TailBatch) -> None:
        """Lag as of `batch`: what lies after the sink's cursor (the batch itself too, when it
        was read but not written)."""
        written = tuple(self._cursor) == batch.next
        self._set(
            records_behind=batch.records_behind + (0 if written else batch.records),
            bytes_behind=batch.bytes_behind,
            log_end=list(batch.end),
            caught_up=batch.caught_up and written,
        )
        with self._lock:
            if batch.caught_up and written:
                self._oldest_unwritten_recv_ns = None
            elif not written and batch.trades.num_rows and self._oldest_unwritten_recv_ns is None:
                self._oldest_unwritten_recv_ns = batch.trades["recv_ns"][0].as_py()

    def _report_unread(self, batch: TailBatch) -> None:
        for s in batch.skipped:
            log.warning(
                "postgres sink %s: %d log segment(s) from segment %d byte %d were deleted before the sink read them "
                "(retention ran while it lagged); their records are not in the database. Reading goes on at "
                "segment %d. Noted in %s.unread_spans.",
                self.collector_id,
                s["segments"],
                s["from"][0],
                s["from"][1],
                s["resumed_at"][0],
                self.schema,
            )
            self._add(skipped_segments=s["segments"], skipped_spans=1)
        for d in batch.damaged:
            log.warning(
                "postgres sink %s: %d damaged bytes at %s byte %d skipped (%s); noted in %s.unread_spans",
                self.collector_id,
                d["length"],
                d["segment"],
                d["offset"],
                d["reason"],
                self.schema,
            )
            self._add(damaged_spans=1, damaged_bytes=d["length"])

    def _write(self, conn: psycopg.Connection, batch: TailBatch) -> tuple[int, int, int]:
        s = sql.Identifier(self.schema)
        trades = batch.trades
        n = trades.num_rows
        inserted = present = markers_inserted = 0
        bit = 1 << self._bit
        with conn.transaction():
            row = conn.execute(
                sql.SQL("SELECT seg_seq, seg_offset FROM {s}.collectors WHERE collector_id = %s FOR UPDATE").format(
                    s=s
                ),
                (self.collector_id,),
            ).fetchone()
            if row is None or tuple(row) != tuple(self._cursor):
                raise SinkError(
                    f"the cursor of collector {self.collector_id!r} in {self.schema}.collectors is {row}, not "
                    f"{tuple(self._cursor)} as this sink left it: another sink runs with the same collector_id. Give "
                    f"each collector its own sink.postgres.collector_id"
                )
            if n:
                data = _trades_csv(trades, self.collector_id, bit)
                columns = sql.SQL(", ").join(map(sql.Identifier, _COPY_COLUMNS))
                cur = conn.cursor()
                copied = False
                if self._staged_batches_left == 0:
                    # The usual case, one collector per venue: none of the rows is in the table yet,
                    # and a plain COPY is twice as fast as staging + INSERT ... ON CONFLICT. A row
                    # already there aborts it (to the savepoint) and the batch goes the staged way.
                    try:
                        with (
                            conn.transaction(),
                            cur.copy(
                                sql.SQL("COPY {s}.trades ({c}) FROM STDIN (FORMAT csv)").format(s=s, c=columns)
                            ) as cp,
                        ):
                            cp.write(data)
                        copied = True
                        inserted = n
                    except psycopg.errors.UniqueViolation:
                        self._staged_batches_left = STAGED_BATCHES_AFTER_CONFLICT
                else:
                    self._staged_batches_left -= 1
                if not copied:
                    with cur.copy(
                        sql.SQL("COPY pw_stage_trades ({c}) FROM STDIN (FORMAT csv)").format(c=columns)
                    ) as cp:
                        cp.write(data)
                    cur.execute(
                        sql.SQL(
                            """INSERT INTO {s}.trades ({c}) SELECT {v} FROM pw_stage_trades
                           ON CONFLICT (venue, symbol, trade_id, ts_ns) DO NOTHING"""
                        ).format(s=s, c=columns, v=_STAGED_VALUES)
                    )
                    inserted = max(cur.rowcount, 0)
                present = n - inserted
                if present:
                    # Trades another collector (or an earlier copy in this log) delivered first: this
                    # collector saw them too.
                    cur.execute(
                        sql.SQL(
                            """UPDATE {s}.trades t SET seen_by = t.seen_by | %s FROM pw_stage_trades g
                           WHERE t.venue = g.venue AND t.symbol = g.symbol AND t.trade_id = g.trade_id
                             AND t.ts_ns = g.ts_ns AND t.seen_by & %s = 0"""
                        ).format(s=s),
                        (bit, bit),
                    )
            if batch.markers:
                cur = conn.cursor()
                cur.executemany(
                    sql.SQL(
                        """INSERT INTO {s}.markers (collector_id, log_seq, log_offset, kind, venue, symbol, ts_ns, from_ts_ns,
                                                 to_ts_ns, from_id, to_id, detail)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (collector_id, log_seq, log_offset) DO NOTHING"""
                    ).format(s=s),
                    [
                        (
                            self.collector_id,
                            m["seq"],
                            m["offset"],
                            m["kind"],
                            m["venue"],
                            m["symbol"],
                            m["ts_ns"],
                            m["from_ts_ns"],
                            m["to_ts_ns"],
                            m["from_id"],
                            m["to_id"],
                            m["detail"],
                        )
                        for m in batch.markers
                    ],
                    returning=False,
                )
                markers_inserted = len(batch.markers)
            unread = [
                (
                    self.collector_id,
                    "segments_deleted",
                    sk["from"][0],
                    sk["from"][1],
                    sk["resumed_at"][0],
                    sk["resumed_at"][1],
                    sk["segments"],
                    0,
                    "deleted (retention) before the sink read them",
                )
                for sk in batch.skipped
            ]
            unread += [
                (
                    self.collector_id,
                    "damaged",
                    int(d["segment"].split(".")[0]),
                    d["offset"],
                    int(d["segment"].split(".")[0]),
                    d["offset"] + d["length"],
                    0,
                    d["length"],
                    d["reason"],
                )
                for d in batch.damaged
            ]
            if unread:
                conn.cursor().executemany(
                    sql.SQL(
                        """INSERT INTO {s}.unread_spans (collector_id, kind, from_seq, from_offset, to_seq, to_offset, segments, bytes, detail)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"""
                    ).format(s=s),
                    unread,
                )
            conn.execute(
                sql.SQL(
                    """UPDATE {s}.collectors SET seg_seq = %s, seg_offset = %s, trades_inserted = trades_inserted + %s,
                          trades_present = trades_present + %s, markers_inserted = markers_inserted + %s, updated_at = now()
                   WHERE collector_id = %s"""
                ).format(s=s),
                (batch.next[0], batch.next[1], inserted, present, markers_inserted, self.collector_id),
            )
        return inserted, present, markers_inserted

    # ---- running ------------------------------------------------------------------------

    def catch_up(self, timeout_s: float | None = None) -> None:
        """Writes batches in the calling thread until the sink has reached the end of the log as
        it is now (errors raise). Not while the sink's own thread runs."""
        if self._thread is not None and self._thread.is_alive():
            raise SinkError("catch_up() while the sink's thread runs; wait on status()['caught_up'] instead")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            moved = self.step()
            if self._stats["caught_up"] or not moved:
                # Not moving and not caught up: invalid bytes at the end of the segment being
                # written, nothing readable after them yet.
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"the sink did not catch up within {timeout_s} s ({self.status()['records_behind']} records behind)"
                )

    def _backoff(self, attempt: int) -> float:
        return self._reconnect_backoff.delay(attempt)

    def _refresh_lag(self) -> None:
        try:
            self._note_lag(self._tail.read(self._cursor, 1))
        except Exception:
            pass

    def _loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                moved = self.step()
                attempt = 0
                if not moved:
                    self._stop.wait(self.poll_interval_s)
                continue
            except psycopg.OperationalError as e:
                # Connection refused, reset, terminated by the server, timed out.
                self._note_error(e, connection=True)
                log.warning("postgres sink %s: %s; reconnecting", self.collector_id, self._stats["last_error"])
            except (psycopg.Error, SinkError, InvalidInputError, OSError) as e:
                self._note_error(e, connection=False)
                log.error("postgres sink %s: %s", self.collector_id, self._stats["last_error"])
            except Exception as e:
                self._note_error(e, connection=False)
                log.exception("postgres sink %s: unexpected error", self.collector_id)
            # Whatever failed, the database's cursor is the truth: read it again on reconnect.
            self._drop_connection()
            self._refresh_lag()
            self._stop.wait(self._backoff(attempt))
            attempt += 1
        if self._drain_s > 0 and self._conn is not None:
            self._drain(time.monotonic() + self._drain_s)
        self._drop_connection()
        self._set(state="stopped")

    def _drain(self, deadline: float) -> None:
        """On a clean stop: what the log holds now goes out too, while the database answers and
        time is left (what does not is sent on the next start, from the cursor)."""
        try:
            while time.monotonic() < deadline and self.step() and not self._stats["caught_up"]:
                pass
        except Exception as e:
            self._note_error(e, connection=isinstance(e, psycopg.OperationalError))

    def start(self) -> None:
        """Starts the sink's thread (returns at once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"pumpwatch-sink-postgres-{self.collector_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 15.0, *, drain_s: float = 0.0) -> None:
        """Stops the thread after the batch in flight (its transaction commits or rolls back
        whole); with `drain_s`, after writing what the log holds now, for at most that long. A
        connection hung on a dead network is cancelled after `timeout_s` (+ `drain_s`)."""
        self._drain_s = drain_s
        self._stop.set()
        t = self._thread
        if t is None:
            return
        t.join(timeout_s + drain_s)
        if t.is_alive() and self._conn is not None:
            try:
                self._conn.cancel()
            except Exception:
                pass
            t.join(5.0)
        if t.is_alive():
            log.warning(
                "postgres sink %s: its thread did not stop in time; left to finish on its own", self.collector_id
            )
        self._thread = None

    async def run(self, stop: asyncio.Event, *, drain_s: float = 10.0) -> None:
        """Runs the sink until `stop` is set (the daemon's way to run it), then writes what the
        log holds at that moment (for at most `drain_s`) and stops."""
        self.start()
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(self.stop, drain_s=drain_s)


def metrics_lines(status: dict[str, Any]) -> list[str]:
    """Prometheus lines for a sink's `status()` (for /metrics)."""
    label = f'collector="{status.get("collector_id", "")}"'
    out = []
    gauges = ("records_behind", "bytes_behind", "seconds_behind")
    counters = (
        "trades_written",
        "trades_present",
        "markers_written",
        "batches",
        "connection_errors",
        "errors",
        "skipped_segments",
        "damaged_spans",
    )
    for k in gauges:
        out += [
            f"# TYPE pumpwatch_sink_postgres_{k} gauge",
            f"pumpwatch_sink_postgres_{k}{{{label}}} {status.get(k, 0)}",
        ]
    for k in counters:
        out += [
            f"# TYPE pumpwatch_sink_postgres_{k}_total counter",
            f"pumpwatch_sink_postgres_{k}_total{{{label}}} {status.get(k, 0)}",
        ]
    out += [
        "# TYPE pumpwatch_sink_postgres_caught_up gauge",
        f"pumpwatch_sink_postgres_caught_up{{{label}}} {int(bool(status.get('caught_up')))}",
    ]
    return out


class PostgresSource:
    """Reads the replica like `pumpwatch.store.ReadOnlyStore` reads the log: same methods, same
    tables, same order. With `collector_id`, only what that collector saw (its markers, and the
    trades it delivered, first or not)."""

    def __init__(self, dsn: str, *, schema: str = "pumpwatch", collector_id: str | None = None) -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self.collector_id = collector_id
        self._conn: psycopg.Connection | None = psycopg.connect(
            dsn, autocommit=True, application_name="pumpwatch-source"
        )
        if not _value(self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.trades",))):
            self._conn.close()
            raise InvalidInputError(
                f"{dsn} holds no PumpWatch replica in schema {schema!r} (no {schema}.trades); "
                f"run a collector with [sink.postgres] first, or pass the schema it writes"
            )
        self._bit = None
        if collector_id is not None:
            row = self._conn.execute(
                sql.SQL("SELECT bit FROM {s}.collectors WHERE collector_id = %s").format(s=sql.Identifier(schema)),
                (collector_id,),
            ).fetchone()
            if row is None:
                raise InvalidInputError(
                    f"collector {collector_id!r} has written nothing to {schema}; the collectors are in {schema}.collectors"
                )
            self._bit = 1 << row[0]

    def _copy_out(self, query: sql.Composable, params: Sequence[Any]) -> bytes:
        assert self._conn is not None, "the source was closed"
        cur = self._conn.cursor()
        chunks = []
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query), params) as cp:
            for chunk in cp:
                chunks.append(bytes(chunk))
        return b"".join(chunks)

    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        venues: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
        *,
        include_non_trades: bool = False,
    ) -> pa.Table:
        """Trades with `start_ns <= exchange time < end_ns`, ordered by exchange time (ties in log
        order), as a `pyarrow.Table` with `TRADE_SCHEMA`: what `ReadOnlyStore.query` returns."""
        where: list[sql.Composable] = [sql.SQL("ts_ns >= %s"), sql.SQL("ts_ns < %s")]
        params: list[Any] = [
            -(2**63) if start_ns is None else int(start_ns),
            2**63 - 1 if end_ns is None else int(end_ns),
        ]
        if venues is not None:
            where.append(sql.SQL("venue = ANY(%s)"))
            params.append(list(venues))
        if symbols is not None:
            where.append(sql.SQL("symbol = ANY(%s)"))
            params.append(list(symbols))
        if not include_non_trades:
            where.append(sql.SQL("flags & {} = 0").format(sql.Literal(NON_TRADE)))
        if self._bit is not None:
            where.append(sql.SQL("seen_by & %s <> 0"))
            params.append(self._bit)
        q = sql.SQL("""SELECT venue, symbol, trade_id, coalesce(price_text, price::text), coalesce(qty_text, qty::text), side,
                              ts_ns, recv_ns, flags
                       FROM {s}.trades WHERE {w}
                       ORDER BY ts_ns, collector_id, log_seq, log_offset""").format(
            s=sql.Identifier(self.schema), w=sql.SQL(" AND ").join(where)
        )
        data = self._copy_out(q, params)
        if not data:
            return TRADE_SCHEMA.empty_table()
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=TRADE_SCHEMA.names, block_size=16 << 20),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in TRADE_SCHEMA},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        return table.cast(TRADE_SCHEMA)

    def markers(self, start_ns: int | None = None, end_ns: int | None = None) -> pa.Table:
        """Markers whose time or span touches the window, in log order (per collector), as
        `ReadOnlyStore.markers` returns them."""
        start = -(2**63) if start_ns is None else int(start_ns)
        end = 2**63 - 1 if end_ns is None else int(end_ns)
        where: sql.Composable = sql.SQL("""((ts_ns >= %s AND ts_ns < %s)
                            OR (from_ts_ns <> 0 AND to_ts_ns <> 0 AND from_ts_ns < %s AND to_ts_ns >= %s))""")
        params: list[Any] = [start, end, end, start]
        if self.collector_id is not None:
            where = sql.SQL("{} AND collector_id = %s").format(where)
            params.append(self.collector_id)
        assert self._conn is not None, "the source was closed"
        rows = self._conn.execute(
            sql.SQL(
                """SELECT kind, venue, symbol, ts_ns, from_ts_ns, to_ts_ns, from_id, to_id, detail FROM {s}.markers
               WHERE {w} ORDER BY collector_id, log_seq, log_offset"""
            ).format(s=sql.Identifier(self.schema), w=where),
            params,
        ).fetchall()
        return pa.Table.from_pylist(
            [dict(zip(MARKER_SCHEMA.names, r, strict=False)) for r in rows], schema=MARKER_SCHEMA
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["PostgresSink", "PostgresSource", "SinkError", "ensure_schema", "metrics_lines"]
