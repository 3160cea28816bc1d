"""The Python face of the Rust segment log: `Store` (the one writer of a data directory),
`ReadOnlyStore` (a reader in any process) and `verify`.

Trades cross into Rust either as `Trade` objects or as the Arrow buffers of a `pyarrow.Table`
(no Python object per trade); query results come back as Arrow buffers and become a
`pyarrow.Table` without a copy per value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import pyarrow as pa

from . import _core
from .errors import InvalidInputError, InvalidTradeError, StoreClosedError
from .schema import MARKER_SCHEMA, TRADE_SCHEMA

_STRING_COLUMNS = ("venue", "symbol", "trade_id", "price", "qty", "side")
_TIME_COLUMNS = ("ts_ns", "recv_ns")
_ALL_TIME = (-(2**63), 2**63 - 1)
#: How often a writer holding records tries the disk again (its commit thread tries too).
HOLD_RETRY_S = 1.0


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise InvalidTradeError(
            f"the table has no column {name!r}; a trade table has the columns "
            f"{', '.join(TRADE_SCHEMA.names)} (flags optional)"
        )
    col = table.column(name)
    if col.null_count:
        raise InvalidTradeError(f"column {name!r} has {col.null_count} nulls; every trade needs a {name}")
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _string_buffers(arr: pa.Array, name: str) -> tuple[Any, Any, int]:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type) and name == "trade_id":
        arr = arr.cast(pa.string())
    if not pa.types.is_string(arr.type):
        if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
            arr = arr.cast(pa.string())
        else:
            raise InvalidTradeError(
                f"column {name!r} is {arr.type}; it must be text (prices and quantities as the "
                f"venue's exact decimal text, never floats)"
            )
    _, offsets, data = arr.buffers()
    return offsets, data if data is not None else b"", arr.offset


def _int_buffer(arr: pa.Array, name: str, typ: pa.DataType) -> tuple[Any, int]:
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.timestamp("ns", tz=arr.type.tz)).view(pa.int64())
    if arr.type != typ:
        if not pa.types.is_integer(arr.type):
            raise InvalidTradeError(f"column {name!r} is {arr.type}; it must be {typ}")
        arr = arr.cast(typ)  # safe cast: raises on overflow
    return arr.buffers()[1], arr.offset


def _table_from_columns(cols: dict) -> pa.Table:
    n = cols["n"]
    arrays = []
    for name in _STRING_COLUMNS:
        offsets, data = cols[name]
        arrays.append(pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]))
    for name in _TIME_COLUMNS:
        arrays.append(pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(cols[name])]))
    arrays.append(pa.Array.from_buffers(pa.uint16(), n, [None, pa.py_buffer(cols["flags"])]))
    return pa.Table.from_arrays(arrays, schema=TRADE_SCHEMA)


def _window(start_ns: int | None, end_ns: int | None) -> tuple[int, int]:
    return (_ALL_TIME[0] if start_ns is None else int(start_ns), _ALL_TIME[1] if end_ns is None else int(end_ns))


class _Reading:
    """Queries shared by the writer and read-only stores."""

    _log: Any

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
        order), as a `pyarrow.Table` with `TRADE_SCHEMA`. `include_non_trades` adds records that
        consume a trade id without being a trade (Binance USDⓈ-M `X=NA`)."""
        start, end = _window(start_ns, end_ns)
        cols = self._log.query_columns(
            start,
            end,
            list(venues) if venues is not None else None,
            list(symbols) if symbols is not None else None,
            include_non_trades,
        )
        return _table_from_columns(cols)

    def markers(self, start_ns: int | None = None, end_ns: int | None = None) -> pa.Table:
        """Markers (connection up/down, gaps found/filled/unfillable...) whose time or span
        touches the window, in log order."""
        start, end = _window(start_ns, end_ns)
        return pa.Table.from_pylist(self._log.markers(start, end), schema=MARKER_SCHEMA)

    def quarantined(self, start_ns: int | None = None, end_ns: int | None = None) -> list[tuple]:
        """Frames that could not be parsed, kept raw: `(venue, recv_ns, reason, raw bytes)`."""
        start, end = _window(start_ns, end_ns)
        return self._log.quarantined(start, end)


class Store(_Reading):
    """Opens a data directory for writing (one writer per directory).

    Appends go to a memory-mapped segment: once `append_trades` returns, a crash of this
    process loses nothing of the batch; `fsync_interval` (seconds, 0 = every batch) bounds what
    a power loss can take. Sealed segments are compressed with zstd at `zstd_level` (0 = keep
    them plain) on a background thread; every query and tool reads them as before.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync_interval: float = 1.0,
        segment_span_s: float = 3600.0,
        segment_max_bytes: int = 1 << 30,
        ring_bytes: int = 128 << 20,
        zstd_level: int = 3,
        hold_on_disk_full: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self._log = _core.LogWriter(
            self.path, fsync_interval, segment_span_s, segment_max_bytes, ring_bytes, zstd_level
        )
        if hold_on_disk_full:
            # The recorder's mode: a full or failing disk does not raise into the connections;
            # the newest `ring_bytes` of records wait in memory and are written when the disk has
            # room again, what fell out named by `gap_unfillable` markers (see `disk_state`).
            self._log.set_hold(ring_bytes, HOLD_RETRY_S)
        # The hot path calls straight into Rust: no Python frame between a socket and the log. The
        # bound Rust methods go in the instance's dict, where they shadow the methods below (which
        # say what they do and type them; mypy refuses `self.ingest = ...` over a method).
        self.__dict__.update(ingest=self._log.ingest, ingest_many=self._log.ingest_many)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> ReadOnlyStore:
        """A reader of `path` that takes no lock and sees what a writer (in any process) has
        published, up to the moment of each query."""
        return ReadOnlyStore(path)

    def append_trades(self, trades: Iterable[_core.Trade] | pa.Table) -> int:
        """Appends a batch (a list of `Trade`, or a `pyarrow.Table` with `TRADE_SCHEMA`'s
        columns; `flags` optional) and returns the number appended once it is in the log. A bad
        trade rejects the whole batch with `InvalidTradeError` naming its row."""
        if isinstance(trades, pa.Table):
            return self._append_table(trades)
        if isinstance(trades, pa.RecordBatch):
            return self._append_table(pa.Table.from_batches([trades]))
        batch = trades if isinstance(trades, list) else list(trades)
        return self._log.append_trades(batch)

    def _append_table(self, table: pa.Table) -> int:
        n = table.num_rows
        if n == 0:
            return 0
        strings = {name: _string_buffers(_column(table, name), name) for name in _STRING_COLUMNS}
        times = {name: _int_buffer(_column(table, name), name, pa.int64()) for name in _TIME_COLUMNS}
        flags = _int_buffer(_column(table, "flags"), "flags", pa.uint16()) if "flags" in table.column_names else None
        return self._log.append_columns(n, **strings, **times, flags=flags)

    def ingest(self, venue: str, frame: bytes | str, recv_ns: int) -> tuple[int, list[tuple] | None]:
        """Parses one frame of `venue`, drops duplicates, checks the id sequence and stores the
        new trades. Returns `(trades stored, events)`, events None when there is nothing to act
        on, else a list of tuples:
        `("gap", venue, symbol, first_missing_id, last_missing_id, from_ts_ns, to_ts_ns)`,
        `("gap_filled", venue, symbol, first_missing_id, last_missing_id)`,
        `("control", venue, kind, detail)` and `("quarantined", venue, reason)`. A frame that does
        not parse is stored raw and reported; it never raises. (Bound to Rust in `__init__`.)"""
        return self._log.ingest(venue, frame, recv_ns)

    def ingest_many(self, venue: str, frames: list, recv_ns: int | list[int]) -> tuple[int, list[tuple] | None]:
        """`ingest` for many frames of one venue at once (one append, the GIL released)."""
        return self._log.ingest_many(venue, frames, recv_ns)

    def ingest_trades(self, trades: list[_core.Trade]) -> tuple[int, list[tuple] | None]:
        """Stores trades from a REST backfill or a snapshot through the same duplicate and
        sequence checks as frames (filling gaps reports `gap_filled`)."""
        return self._log.ingest_trades(trades if isinstance(trades, list) else list(trades))

    def set_phemex_spot_scales(self, symbol: str, price_scale: int, qty_scale: int) -> None:
        """Scales of a Phemex spot symbol's scaled integers, from the venue's product list."""
        self._log.set_phemex_spot_scales(symbol, price_scale, qty_scale)

    def ingest_stats(self) -> dict:
        """Counters of the ingest path: frames, trades, duplicates, quarantined, gaps, gaps_filled."""
        return self._log.ingest_stats()

    def open_gaps(self, venue: str, symbol: str) -> list[tuple[int, int]]:
        """Id ranges of a symbol still missing (inclusive), oldest first."""
        return self._log.open_gaps(venue, symbol)

    def seed_last_id(self, venue: str, symbol: str, last_id: int, last_ts_ns: int) -> None:
        """After a restart: continues a sequenced symbol's ids where the log left them, so the
        first live trade reveals the hole the restart made."""
        self._log.seed_last_id(venue, symbol, last_id, last_ts_ns)

    def seed_open_gap(self, venue: str, symbol: str, first_id: int, last_id: int) -> None:
        """After a restart: reopens a hole (ids `first_id..=last_id`) the log shows unfilled, so
        its backfill is taken as new."""
        self._log.seed_open_gap(venue, symbol, first_id, last_id)

    def seed_recent_ids(self, venue: str, symbol: str, trade_ids: list[str]) -> None:
        """After a restart: remembers ids the log already holds for a symbol without an id
        sequence, so a REST window or snapshot overlapping them is not stored twice."""
        self._log.seed_recent_ids(venue, symbol, list(trade_ids))

    def active_segment_seq(self) -> int:
        """Sequence number of the segment being written (retention never deletes it)."""
        return self._log.active_segment()[0]

    def append_marker(
        self,
        kind: str,
        *,
        ts_ns: int,
        venue: str | None = None,
        symbol: str = "",
        from_ts_ns: int = 0,
        to_ts_ns: int = 0,
        from_id: str = "",
        to_id: str = "",
        detail: str = "",
    ) -> None:
        """Records a coverage fact: `connection_up`, `connection_down`, `gap_found`,
        `gap_filled`, `gap_unfillable`, `subscription_set`, `recorder_start`, `recorder_stop`."""
        self._log.append_marker(kind, ts_ns, venue, symbol, from_ts_ns, to_ts_ns, from_id, to_id, detail)

    def append_quarantined(self, venue: str | None, recv_ns: int, reason: str, raw: bytes) -> None:
        """Keeps a frame that could not be parsed, raw, with the reason."""
        self._log.append_quarantined(venue, recv_ns, reason, bytes(raw))

    def flush(self) -> None:
        """Commits everything appended so far to disk now."""
        self._log.flush()

    def disk_state(self) -> dict:
        """Disk trouble (see `hold_on_disk_full`): `full_since_ns` / `error_since_ns` (0 when
        none), `reason` (operation, path, error), `held_records`/`held_bytes` waiting in memory,
        `unsynced_bytes` whose commit failed and will be written again, `lost_trades_pending`
        (fell out of the hold, named once the disk has room), `lost_trades`/`lost_other` (named
        so far), `episodes`, `commit_failures`, `last_error`, `index_behind`, and `summary`: the
        line status pages show ("disk full since ... UTC: ..."), empty when all is well. A closed
        store has no disk trouble left to report (its close committed or named what it held)."""
        try:
            state = self._log.disk_state()
        except StoreClosedError:
            return {"summary": ""}
        state["summary"] = disk_line(state) or ""
        return state

    def ring_reader(self, from_oldest: bool = False) -> _core.RingReader:
        """A reader of the most recent trades appended by this store (lock-free; the writer never
        waits for it; `poll()` says how many it missed)."""
        return self._log.ring_reader(from_oldest)

    @property
    def recovery_report(self) -> dict:
        """What recovery found and did when the directory was opened."""
        return self._log.recovery_report()

    def roll(self) -> None:
        """Seals the active segment now and starts a new one."""
        self._log.roll()

    def compression_stats(self) -> dict:
        """Background compression so far: `segments`, `plain_bytes`, `compressed_bytes`,
        `seconds`, `pending` (queued or running), `errors`, `last_error`."""
        return self._log.compression_stats()

    def wait_compressed(self, timeout_s: float = 60.0) -> bool:
        """Waits until every sealed segment is compressed (those found plain at open included);
        False if `timeout_s` passed first."""
        return self._log.wait_compressed(timeout_s)

    def close(self, seal: bool = False) -> None:
        """Commits and releases the directory (`seal=True` also seals the active segment). The
        segments this store sealed are compressed before it returns; sealed segments it found
        plain when it opened and has not compressed yet are left to the next writer."""
        self._log.close(seal)

    @property
    def closed(self) -> bool:
        return self._log.closed

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"


class ReadOnlyStore(_Reading):
    """Reads a data directory without locking it, while a writer appends."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._log = _core.LogReader(self.path)

    def close(self) -> None:
        self._log = None

    def __enter__(self) -> ReadOnlyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def disk_line(disk: dict | None) -> str | None:
    """The one line status pages and logs show while the disk refuses records, else None."""
    if not disk or not (disk.get("full_since_ns") or disk.get("error_since_ns") or disk.get("unsynced_bytes")):
        return None
    import datetime

    since_ns = disk.get("full_since_ns") or disk.get("error_since_ns")
    since = (
        datetime.datetime.fromtimestamp(since_ns / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if since_ns
        else "?"
    )
    what = "disk full" if disk.get("full_since_ns") else "disk error"
    line = (
        f"{what} since {since}: {disk.get('held_records', 0):,} records held in memory "
        f"({disk.get('held_bytes', 0) / 1e6:,.1f} MB)"
    )
    if disk.get("lost_trades_pending"):
        line += f", {disk['lost_trades_pending']:,} trades fell out (named when the disk has room)"
    if disk.get("unsynced_bytes"):
        line += f", {disk['unsynced_bytes']:,} bytes to commit again"
    advice = "free disk space (or lower retention)" if disk.get("full_since_ns") else "check the disk (dmesg, SMART)"
    return line + f"; {disk.get('reason', '')[:160]} - {advice}"


def verify(path: str | os.PathLike[str], progress: Callable[[int, int, int, int], object] | None = None) -> dict:
    """Walks every record of every segment and reports records, segments and any damage:
    `{"ok", "segments", "records", "trades", "markers", "quarantined", "bytes", "damaged",
    "torn_tail", "headers", "writer_running"}`. Read-only; safe while the recorder runs.

    `progress(bytes_done, bytes_total, segments_done, segments_total)` is called before the walk,
    at most every 50 ms while it goes (bytes are the segment files' sizes on disk, as
    `retention.log_bytes` counts them) and once at the end with `bytes_done == bytes_total`. An
    exception it raises, and Ctrl-C, stops the walk and propagates; nothing is changed on disk.

    A directory without a log (a mistyped path) is an error, not an intact empty log."""
    if not os.path.isdir(os.path.join(path, "log")):
        what = "does not exist" if not os.path.exists(path) else "holds no recording (no log/ directory)"
        raise InvalidInputError(
            f"{os.fspath(path)} {what}: give the recorder's data directory (--data-dir, data_dir in pumpwatch.toml)"
        )
    return _core.verify(os.fspath(path), progress)


class TradeView(Protocol):
    """A trade as a ring reader hands it out: `pumpwatch.Trade` (Rust) or a purepy `TradeRecord`."""

    @property
    def venue(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def trade_id(self) -> str: ...
    @property
    def price(self) -> str: ...
    @property
    def qty(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def ts_ns(self) -> int: ...
    @property
    def recv_ns(self) -> int: ...
    @property
    def flags(self) -> int: ...


class LiveRingReader(Protocol):
    """A reader of a store's live ring of recent trades (`Store.ring_reader`)."""

    def poll(self, max_trades: int = ...) -> tuple[Sequence[TradeView], int]: ...
    def poll_activity(self, max_trades: int = ...) -> tuple[list[tuple[str, str, int, int]], int]: ...
    @property
    def missed(self) -> int: ...


class RecorderStore(Protocol):
    """What the recorder (collector.py, daemon.py) calls on the store it writes through: the Rust
    `Store` and the plain-Python `pumpwatch.purepy.Store` (`[log] engine = "purepy"`) both are one,
    which mypy holds below, so neither side needs to ask the store what it can do."""

    @property
    def path(self) -> str: ...
    def ingest(self, venue: str, frame: bytes | str, recv_ns: int) -> tuple[int, list[tuple] | None]: ...
    def ingest_many(self, venue: str, frames: list, recv_ns: int | list[int]) -> tuple[int, list[tuple] | None]: ...
    def ingest_trades(self, trades: list[_core.Trade]) -> tuple[int, list[tuple] | None]: ...
    def ingest_stats(self) -> dict: ...
    def set_phemex_spot_scales(self, symbol: str, price_scale: int, qty_scale: int) -> None: ...
    def open_gaps(self, venue: str, symbol: str) -> list[tuple[int, int]]: ...
    def seed_last_id(self, venue: str, symbol: str, last_id: int, last_ts_ns: int) -> None: ...
    def seed_open_gap(self, venue: str, symbol: str, first_id: int, last_id: int) -> None: ...
    def seed_recent_ids(self, venue: str, symbol: str, trade_ids: list[str]) -> None: ...
    def append_marker(
        self,
        kind: str,
        *,
        ts_ns: int,
        venue: str | None = None,
        symbol: str = "",
        from_ts_ns: int = 0,
        to_ts_ns: int = 0,
        from_id: str = "",
        to_id: str = "",
        detail: str = "",
    ) -> None: ...
    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        venues: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
        *,
        include_non_trades: bool = False,
    ) -> pa.Table: ...
    def markers(self, start_ns: int | None = None, end_ns: int | None = None) -> pa.Table: ...
    def active_segment_seq(self) -> int: ...
    def disk_state(self) -> dict: ...
    def compression_stats(self) -> dict: ...
    def ring_reader(self, from_oldest: bool = False) -> LiveRingReader: ...
    def close(self, seal: bool = False) -> None: ...
