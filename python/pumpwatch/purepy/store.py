"""Segment log store in plain Python: the reference implementation of docs/FORMAT.md.

It writes files the Rust core reads and reads files the Rust core writes, and behaves like the
Rust-backed `pumpwatch.Store` (same rolls, same recovery, same query results), so it can serve as
the oracle of differential tests. This module is the `Store` facade (the lock, batching, rolls,
queries); the log itself is `pumpwatch.purepy.log`, one module per job as in `rust/core/src/log/`.
"""

from __future__ import annotations

import errno
import fcntl
import math
import operator
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..errors import DiskFullError, InvalidInputError, InvalidTradeError, StoreClosedError, StoreLockedError
from ..schema import MARKER_SCHEMA, TRADE_SCHEMA
from ..store import HOLD_RETRY_S, disk_line
from .log.compress import MAX_LEVEL, Compressor, compress_segment, resolve_compressions
from .log.hold import Hold
from .log.index import IndexEntry
from .log.reader import read_records
from .log.record import (
    FLAG_NON_TRADE,
    FRAME_HEADER,
    I64_MAX,
    I64_MIN,
    KIND_TRADE,
    VENUES,
    MarkerRecord,
    QuarantinedRecord,
    TradeRecord,
    encode_marker,
    encode_quarantined,
    encode_trade,
    quote,
)
from .log.scan import FrameWalk
from .log.segment import HEADER_LEN, STATE_SEALED, fsync_dir, is_compressed, list_segments, parse_header
from .log.verify import verify
from .log.writer import DISK_FULL_ERRNOS, SEGMENT_MAX_BYTES_RANGE, ActiveSegment, RecoveryReport, disk_full_error
from .ring import RingReader, TradeRing

# What this module exported before the log moved to `pumpwatch.purepy.log`, exported the same.
__all__ = [
    "MARKER_SCHEMA",
    "TRADE_SCHEMA",
    "FrameWalk",
    "MarkerRecord",
    "QuarantinedRecord",
    "Store",
    "TradeRecord",
    "compress_segment",
    "verify",
]

_TRADE_FIELDS = ("venue", "symbol", "trade_id", "price", "qty", "side", "ts_ns", "recv_ns")
_MISSING = object()


def _trade_rows(trades):
    """The batch as tuples in encode_trade's argument order (flags defaulting to 0)."""
    if isinstance(trades, pa.RecordBatch):
        trades = pa.Table.from_batches([trades])
    if isinstance(trades, pa.Table):
        missing = [name for name in _TRADE_FIELDS if name not in trades.column_names]
        if missing:
            raise InvalidTradeError(
                f"the table has no column {', '.join(map(quote, missing))}; a trade table has the columns "
                f"{', '.join(TRADE_SCHEMA.names)} (flags optional)"
            )
        columns = []
        for name in _TRADE_FIELDS:
            column = trades.column(name)
            if pa.types.is_timestamp(column.type):
                column = column.cast(pa.timestamp("ns", tz=column.type.tz)).cast(pa.int64())
            columns.append(column.to_pylist())
        if "flags" in trades.column_names:
            columns.append(trades.column("flags").to_pylist())
        else:
            columns.append([0] * trades.num_rows)
        yield from zip(*columns, strict=False)
        return
    for row, trade in enumerate(trades):
        if isinstance(trade, Mapping):
            get = trade.get
            values = [get(name, _MISSING) for name in _TRADE_FIELDS]
            values.append(get("flags", 0))
        else:
            values = [getattr(trade, name, _MISSING) for name in _TRADE_FIELDS]
            values.append(getattr(trade, "flags", 0))
        for name, value in zip(_TRADE_FIELDS, values, strict=False):
            if value is _MISSING:
                raise InvalidTradeError(f"row {row} of the batch: has no field {name}")
        yield values


def _as_set(values) -> set | None:
    if values is None:
        return None
    if isinstance(values, str):
        return {values}
    return set(values)


def _window(start_ns, end_ns) -> tuple[int, int]:
    # The same defaults as the Rust path: the end bound stays exclusive.
    return (I64_MIN if start_ns is None else int(start_ns), I64_MAX if end_ns is None else int(end_ns))


def _table(rows: Sequence[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=False)) if rows else [()] * len(schema)
    return pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=False)], schema=schema
    )


def _holds_others(entry: IndexEntry) -> bool:
    return entry.others > 0


class Store:
    """A PumpWatch data directory: one writer (holding <dir>/LOCK) or any number of readers.

    `Store(path)` opens it for writing; `Store.open_readonly(path)` for reading alongside a writer
    in another process. Once `append_*` returns, a crash of this process loses nothing of the
    batch; `fsync_interval` (seconds, 0 = every batch) bounds what a power loss can take. Group
    commit runs on appends: a batch is fsynced when `fsync_interval` has passed since the last
    fsync, so the last batch before a quiet period is fsynced by the next append, `flush()` or
    `close()`.

    Every trade appended also goes to a live ring of the newest `ring_bytes` (`ring_reader`). With
    `hold_on_disk_full` (the recorder's mode, as the Rust store's) a full or failing disk does not
    raise into the caller: the newest `ring_bytes` of records wait in memory and are written when
    the disk has room again, what fell out named by `gap_unfillable` markers (see `disk_state`).
    Sealed segments are compressed with zstd at `zstd_level` on a background thread, as the Rust
    store does; 0 (this store's default, so that its files stay comparable byte for byte with
    the Rust store's plain ones) keeps them plain.
    """

    def __init__(
        self,
        path,
        *,
        fsync_interval: float = 1.0,
        segment_span_s: float = 3600.0,
        segment_max_bytes: int = 1 << 30,
        ring_bytes: int = 128 << 20,
        zstd_level: int = 0,
        hold_on_disk_full: bool = False,
    ):
        for name, seconds in (("fsync_interval", fsync_interval), ("segment_span_s", segment_span_s)):
            if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 <= seconds < 1e9):
                raise InvalidInputError(f"{name} must be a number of seconds >= 0, not {seconds}")
        if segment_span_s == 0:
            raise InvalidInputError("segment_span must be positive")
        low, high = SEGMENT_MAX_BYTES_RANGE
        if not low <= segment_max_bytes <= high:
            raise InvalidInputError(
                f"segment_max_bytes {segment_max_bytes} is out of range; use {low} to {high} (1 TiB)"
            )
        if not (isinstance(ring_bytes, int) and 0 <= ring_bytes <= 1 << 40):
            raise InvalidInputError(f"ring_bytes must be a number of bytes from 0 to 1 TiB, not {ring_bytes}")
        if not (isinstance(zstd_level, int) and 0 <= zstd_level <= MAX_LEVEL):
            raise InvalidInputError(
                f"zstd_level {zstd_level} is out of range; use 1 (fastest) to {MAX_LEVEL} (smallest), 3 being "
                f"the default, or 0 to keep sealed segments uncompressed"
            )
        self._init_paths(path)
        self._ring = TradeRing(ring_bytes)
        # The hold (see the class docstring): its bound is the ring's, as the Rust store's.
        self._hold_limit = ring_bytes if hold_on_disk_full else 0
        self._hold_retry_s = HOLD_RETRY_S
        self._disk: dict[str, Any] = {
            "full_since_ns": 0,
            "error_since_ns": 0,
            "reason": "",
            "lost_trades": 0,
            "lost_other": 0,
            "episodes": 0,
            "commit_failures": 0,
            "last_error": "",
        }
        self._unsynced_bytes = 0  # appended since the last fsync that succeeded
        self._sync_failed = False
        self._batch_written = 0  # frames of the batch being written that are in the log
        self._writable = True
        self._fsync_interval = fsync_interval
        self._span_ns = int(segment_span_s * 1e9)
        self._max_bytes = segment_max_bytes
        self._active: ActiveSegment | None = None
        self._dirty = False
        self._last_sync = time.monotonic()
        self._recovery = RecoveryReport()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._take_lock()
        try:
            self._open_log()
        except BaseException:
            self._release()
            raise
        if zstd_level > 0:
            compressor = Compressor(self._log_dir, zstd_level)
            self._compressor: Compressor | None = compressor
            # What earlier writers sealed and left plain (or a crash left mid-compression).
            for seq, path in list_segments(self._log_dir):
                if seq < self._writing.seq and not is_compressed(path):
                    compressor.request(seq, backlog=True)

    @classmethod
    def open_readonly(cls, path) -> Store:
        """Opens a data directory for reading only: no lock, nothing written, and every query
        sees what a writer in another process has published by then."""
        self = cls.__new__(cls)
        self._init_paths(path)
        if not self._dir.is_dir():
            raise InvalidInputError(
                f"{self._dir} is not a PumpWatch data directory (it does not exist); pass the "
                f"directory the recorder writes to (`--data-dir`)"
            )
        self._writable = False
        self._active = None
        self._lock_fd = None
        return self

    def _init_paths(self, path) -> None:
        self.path = os.fspath(path)
        self._dir = Path(path)
        self._log_dir = self._dir / "log"
        self._mutex = threading.RLock()
        self._closed = False
        self._hold: Hold | None = None
        self._hold_wake = threading.Event()
        self._hold_thread: threading.Thread | None = None
        self._compressor = None

    # -- opening for writing

    def _take_lock(self) -> int:
        lock_path = self._dir / "LOCK"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        # `verify` probes for a writer with a shared lock held for an instant: retry briefly
        # before calling the directory taken (the Rust writer does the same).
        for attempt in range(50):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < 49:
                    time.sleep(0.005)
        else:
            holder = os.pread(fd, 64, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            holder = f"another process ({holder}, see {lock_path})" if holder else "another process"
            raise StoreLockedError(
                f"data directory {self._dir} is already open for writing by {holder}; stop that "
                f"recorder, or open the directory read-only (Store.open_readonly) to read it while it runs"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        return fd

    def _open_log(self) -> None:
        # Segment files still under a temporary name are creations a crash interrupted: never
        # visible to readers, holding nothing.
        # (A compression under a temporary name is the same: the plain segment is still there.)
        for name in os.listdir(self._log_dir):
            if name.endswith(".tmp"):
                os.unlink(self._log_dir / name)
        self._recovery.compression = resolve_compressions(self._log_dir)
        segments = list_segments(self._log_dir)
        self._recovery.segments = len(segments)
        for seq, path in segments:
            if is_compressed(path):
                continue  # only sealed segments are ever compressed
            with open(path, "rb") as f:
                header = parse_header(f.read(HEADER_LEN), path)
            if header is not None and header.state == STATE_SEALED:
                continue
            segment = ActiveSegment.recover(path, seq, self._dir, self._recovery)
            if seq == segments[-1][0]:
                self._active = segment
            else:
                # Left active by a crash during a roll: finish the roll.
                segment.seal()
                self._recovery.sealed.append(path.name)
        if self._active is None:
            # A writer always has an active segment: the first one, or the one after a sealed last.
            seq = segments[-1][0] + 1 if segments else 1
            self._active = self._create_segment(seq, HEADER_LEN)
        fsync_dir(self._log_dir)

    def _create_segment(self, seq: int, needed_end: int) -> ActiveSegment:
        segment = ActiveSegment.reserve(self._log_dir, seq, needed_end, self._max_bytes)
        segment.activate()
        return segment

    # -- appending

    def append_trades(self, trades) -> int:
        """Appends a batch of trades (objects such as `pumpwatch.Trade` or mappings with venue,
        symbol, trade_id, price, qty, side, ts_ns, recv_ns and optionally flags, or a
        pyarrow.Table / RecordBatch with those columns). Returns the number appended.

        Every row is checked before anything is written; a bad one raises InvalidTradeError
        naming the row and the field, and nothing of the batch is written.
        """
        frames = []
        trade_ts: list[int | None] = []
        for row, values in enumerate(_trade_rows(trades)):
            try:
                frame, ts_ns = encode_trade(*values)
            except ValueError as exc:
                raise InvalidTradeError(f"row {row} of the batch: {exc}") from None
            frames.append(frame)
            trade_ts.append(ts_ns)
        if frames:
            self.append_encoded(frames, trade_ts)
        return len(frames)

    @property
    def _ingestor(self):
        ing = self.__dict__.get("_ingest_state")
        if ing is None:
            from .ingest import Ingestor

            ing = self.__dict__["_ingest_state"] = Ingestor(self)
        return ing

    def ingest(self, venue: str, frame, recv_ns: int) -> tuple[int, list | None]:
        """Parses one frame, drops duplicates, checks the id sequence and stores the new trades;
        returns `(trades stored, events or None)` exactly as `pumpwatch.Store.ingest` does."""
        return self._ingestor.ingest(venue, frame, recv_ns)

    def ingest_many(self, venue: str, frames, recv_ns) -> tuple[int, list | None]:
        return self._ingestor.ingest_many(venue, frames, recv_ns)

    def ingest_trades(self, trades) -> tuple[int, list | None]:
        return self._ingestor.ingest_trades(trades)

    def ingest_stats(self) -> dict:
        return dict(self._ingestor.stats)

    def open_gaps(self, venue: str, symbol: str) -> list[tuple[int, int]]:
        return self._ingestor.open_gaps(venue, symbol)

    def seed_last_id(self, venue: str, symbol: str, last_id: int, last_ts_ns: int) -> None:
        self._ingestor.seed_last_id(venue, symbol, last_id, last_ts_ns)

    def seed_open_gap(self, venue: str, symbol: str, first_id: int, last_id: int) -> None:
        self._ingestor.seed_open_gap(venue, symbol, first_id, last_id)

    def seed_recent_ids(self, venue: str, symbol: str, trade_ids: list[str]) -> None:
        self._ingestor.seed_recent_ids(venue, symbol, trade_ids)

    def active_segment_seq(self) -> int:
        """Sequence number of the segment being written (retention never deletes it)."""
        self._check_writable()
        return self._writing.seq

    def set_phemex_spot_scales(self, symbol: str, price_scale: int, qty_scale: int) -> None:
        self._ingestor.ctx.set_phemex_spot_scales(symbol, price_scale, qty_scale)

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
        """Records a coverage fact: `connection_up`, `connection_down`, `gap_found`, `gap_filled`,
        `gap_unfillable`, `subscription_set`, `recorder_start`, `recorder_stop`."""
        try:
            frame = encode_marker(kind, venue, symbol, ts_ns, from_ts_ns, to_ts_ns, from_id, to_id, detail)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self.append_encoded([frame], [None])

    def append_quarantined(self, venue: str | None, recv_ns: int, reason: str, raw: bytes) -> None:
        """Keeps a frame that could not be parsed, raw, so that nothing that reached us is dropped."""
        try:
            frame = encode_quarantined(venue, recv_ns, reason, raw)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self.append_encoded([frame], [None])

    def _plan(self, sizes: list[int]) -> list[tuple[int, int, int, bool]]:
        """Splits a batch into pieces `(first, stop, bytes, needs_new_segment)`.

        As the Rust writer does: a batch is cut at record boundaries into pieces that each fit an
        empty segment (a record bigger than that is a piece of its own), and a piece goes to a new
        segment when the active one holds records and is either older than segment_span_s or
        would pass segment_max_bytes with it.
        """
        limit = self._max_bytes - HEADER_LEN
        pieces = []
        first = nbytes = 0
        for i, size in enumerate(sizes):
            if i > first and nbytes + size > limit:
                pieces.append((first, i, nbytes))
                first, nbytes = i, 0
            nbytes += size
        pieces.append((first, len(sizes), nbytes))
        fill = self._writing.end
        too_old = time.time_ns() - self._writing.created_ns >= self._span_ns
        plan = []
        for first, stop, nbytes in pieces:
            new = fill > HEADER_LEN and (too_old or fill + nbytes > self._max_bytes)
            if new:
                fill, too_old = HEADER_LEN, False
            plan.append((first, stop, nbytes, new))
            fill += nbytes
        return plan

    def append_encoded(self, frames: list[bytes], trade_ts: list[int | None]) -> None:
        """Appends records already framed by `pumpwatch.purepy.log.record`'s `encode_trade`,
        `encode_marker` or `encode_quarantined`, as one batch: all of it or (disk full) none.

        `trade_ts[i]` is the exchange time of frame i when it is a trade (the sparse index keeps
        each block's trade-time range), None for any other record. The encoders have checked
        every field; this only places the frames in the log.

        With a hold (`hold_on_disk_full`), a disk that refuses the frames does not fail the
        append: they are kept in memory, after what is held already, and written when the disk
        has room again (see `disk_state`).
        """
        with self._mutex:
            self._check_writable()
            if self._hold is not None:
                self._try_release()
            if self._hold is not None:
                # Still refused: after what is already held, in order.
                self._hold.push(frames, trade_ts)
                self._push_ring(frames)
                return
            try:
                self._write(frames, trade_ts)
            except OSError as exc:
                written = self._batch_written
                if not self._hold_limit:
                    self._push_ring(frames[:written])
                    raise
                hold = self._start_hold(exc)
                hold.push(frames[written:], trade_ts[written:])
            self._push_ring(frames)
            if self._fsync_interval == 0 or time.monotonic() - self._last_sync >= self._fsync_interval:
                self._sync()

    def _write(self, frames: list[bytes], trade_ts: list[int | None]) -> None:
        """Places frames in the log: every byte reserved before any is written, so a full disk
        leaves the store as it was. `_batch_written` says how many frames are in the log when an
        error comes later (a batch spanning segments)."""
        self._batch_written = 0
        sizes = [len(f) for f in frames]
        plan = self._plan(sizes)
        # Reserve every byte the batch needs before writing any: running out of space then
        # leaves the store exactly as it was.
        active_end = self._writing.end
        new_segment_ends: list[int] = []
        for _, _, nbytes, new in plan:
            if new:
                new_segment_ends.append(HEADER_LEN + nbytes)
            elif new_segment_ends:
                new_segment_ends[-1] += nbytes
            else:
                active_end += nbytes
        reserved: list[ActiveSegment] = []
        try:
            self._writing.ensure_allocated(active_end, self._max_bytes)
            for seq, needed_end in enumerate(new_segment_ends, self._writing.seq + 1):
                reserved.append(ActiveSegment.reserve(self._log_dir, seq, needed_end, self._max_bytes))
        except OSError as exc:
            for segment in reserved:
                segment.discard()
            if exc.errno in DISK_FULL_ERRNOS and not isinstance(exc, DiskFullError):
                raise disk_full_error(exc, self._log_dir) from exc
            raise
        pending = iter(reserved)
        try:
            for first, stop, nbytes, new in plan:
                if new:
                    self._switch_to(next(pending))
                self._writing.write(b"".join(frames[first:stop]), sizes[first:stop], trade_ts[first:stop])
                self._batch_written = stop
                self._unsynced_bytes += nbytes
                self._dirty = True
        finally:
            for segment in pending:
                segment.discard()  # reserved for pieces an error left unwritten

    def _push_ring(self, frames: list[bytes]) -> None:
        trades = [f for f in frames if f[FRAME_HEADER] == KIND_TRADE]
        if trades:
            self._ring.push_frames(trades)

    def _start_hold(self, exc: OSError) -> Hold:
        full = isinstance(exc, DiskFullError) or exc.errno in DISK_FULL_ERRNOS
        now = time.time_ns()
        # The operation and path, without the advice meant for a caller whose append failed.
        reason = (exc.strerror or str(exc)).split("; ")[0] if full else str(exc)
        disk = self._disk
        disk["episodes"] += 1
        disk["last_error"] = disk["reason"] = reason
        if full:
            disk["full_since_ns"] = now
        elif not disk["error_since_ns"]:
            disk["error_since_ns"] = now
        hold = self._hold = Hold(self._hold_limit, now, reason, full)
        hold.next_try = time.monotonic() + self._hold_retry_s
        if self._hold_thread is None or not self._hold_thread.is_alive():
            # Appends try the disk again as they come; this tries it when none come.
            self._hold_thread = threading.Thread(target=self._retry_held, name="pumpwatch-purepy-hold", daemon=True)
            self._hold_thread.start()
        return hold

    def _retry_held(self) -> None:
        while not self._hold_wake.wait(max(self._hold_retry_s, 0.01)):
            with self._mutex:
                if self._closed or self._hold is None:
                    return
                self._try_release()
                if self._hold is None:
                    self._sync()
                    return

    def _try_release(self) -> None:
        """Writes what is held (when its retry time has come): first the markers naming what fell
        out, then the held records in order. Stops at the first refusal, keeping the rest."""
        hold = self._hold
        if hold is None or time.monotonic() < hold.next_try:
            return
        hold.next_try = time.monotonic() + self._hold_retry_s
        disk = self._disk
        try:
            markers = hold.loss_markers(time.time_ns())
            if markers:
                self._write(markers, [None] * len(markers))
                disk["lost_trades"] += hold.lost_trades()
                disk["lost_other"] += hold.lost_other
                hold.clear_lost()
            while (front := hold.front()) is not None:
                try:
                    self._write(*front)
                except OSError:
                    hold.consumed_front(self._batch_written)
                    raise
                hold.consumed_front(len(front[0]))
        except OSError as exc:
            disk["last_error"] = str(exc)
            return
        self._hold = None
        disk["full_since_ns"] = 0
        if not self._sync_failed:
            disk["error_since_ns"] = 0
            disk["reason"] = ""

    def _switch_to(self, segment: ActiveSegment) -> None:
        # The new segment is named before the old one is sealed: a crash in between leaves two
        # active segments, and opening seals the older one.
        segment.activate()
        old, self._active = self._writing, segment
        old.seal()
        if self._compressor is not None:
            self._compressor.request(old.seq)

    def roll(self) -> None:
        """Seals the active segment now and starts a new one."""
        with self._mutex:
            self._check_writable()
            self._switch_to(ActiveSegment.reserve(self._log_dir, self._writing.seq + 1, HEADER_LEN, self._max_bytes))
            fsync_dir(self._log_dir)

    def _sync(self) -> None:
        if self._dirty:
            try:
                self._writing.sync()
            except OSError as exc:
                if not self._hold_limit:
                    raise
                # Named in `disk_state` and tried again at the next commit.
                disk = self._disk
                disk["commit_failures"] += 1
                disk["last_error"] = str(exc)
                if not disk["error_since_ns"]:
                    disk["error_since_ns"] = time.time_ns()
                    disk["reason"] = str(exc)
                self._sync_failed = True
                self._last_sync = time.monotonic()
                return
        self._dirty = False
        self._unsynced_bytes = 0
        if self._sync_failed:
            self._sync_failed = False
            if self._hold is None:
                self._disk["error_since_ns"] = 0
                self._disk["reason"] = ""
        self._last_sync = time.monotonic()

    def flush(self) -> None:
        """Commits everything appended so far to disk now."""
        with self._mutex:
            self._check_writable()
            self._sync()

    @property
    def recovery_report(self) -> dict:
        """What recovery found and did when the directory was opened."""
        self._check_writable()
        return self._recovery.as_dict()

    def disk_state(self) -> dict:
        """Disk trouble, with the keys and meaning of `pumpwatch.Store.disk_state`:
        `full_since_ns` / `error_since_ns` (0 when none), `reason`, `held_records`/`held_bytes`
        waiting in memory, `unsynced_bytes` whose commit failed, `lost_trades_pending` (fell out
        of the hold, named once the disk has room), `lost_trades`/`lost_other` (named so far),
        `episodes`, `commit_failures`, `last_error`, `index_behind`, and `summary`: the line status
        pages show, empty when all is well. A closed store has no disk trouble left to report."""
        with self._mutex:
            if self._closed:
                return {"summary": ""}
            self._check_writable()
            disk, hold = self._disk, self._hold
            state = {
                "full_since_ns": disk["full_since_ns"],
                "error_since_ns": disk["error_since_ns"],
                "reason": disk["reason"],
                "held_records": hold.records if hold else 0,
                "held_bytes": hold.bytes if hold else 0,
                "unsynced_bytes": self._unsynced_bytes if self._sync_failed else 0,
                "lost_trades_pending": hold.lost_trades() if hold else 0,
                "lost_trades": disk["lost_trades"],
                "lost_other": disk["lost_other"],
                "episodes": disk["episodes"],
                "commit_failures": disk["commit_failures"],
                "last_error": disk["last_error"],
                "index_behind": self._writing.index_behind,
            }
        state["summary"] = disk_line(state) or ""
        return state

    def compression_stats(self) -> dict:
        """Background compression so far, with the keys of `pumpwatch.Store.compression_stats`:
        `segments`, `plain_bytes`, `compressed_bytes`, `seconds`, `pending` (queued or running),
        `errors`, `last_error` (None when none); zeros when `zstd_level` is 0."""
        if self._compressor is not None:
            return self._compressor.stats()
        return {
            "segments": 0,
            "plain_bytes": 0,
            "compressed_bytes": 0,
            "seconds": 0.0,
            "pending": 0,
            "errors": 0,
            "last_error": None,
        }

    def wait_compressed(self, timeout_s: float = 60.0) -> bool:
        """Waits until every sealed segment is compressed (those found plain at open included);
        False if `timeout_s` passed first."""
        return self._compressor is None or self._compressor.wait_idle(timeout_s)

    def ring_reader(self, from_oldest: bool = False) -> RingReader:
        """A reader of the most recent trades appended by this store (the writer never waits for
        it; `poll()` says how many it missed), as `pumpwatch.Store.ring_reader`'s; its trades are
        `TradeRecord`s."""
        self._check_writable()
        return self._ring.reader(from_oldest)

    # -- reading

    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        venues=None,
        symbols=None,
        *,
        include_non_trades: bool = False,
    ) -> pa.Table:
        """Trades with start_ns <= ts_ns < end_ns, ordered by ts_ns (ties in log order), as a
        pyarrow.Table with TRADE_SCHEMA. `include_non_trades` adds the records that consume a
        trade id without being a trade (flag NON_TRADE, Binance USDⓈ-M `X=NA`)."""
        start_ns, end_ns = _window(start_ns, end_ns)
        venue_set = _as_set(venues)
        if venue_set is not None:
            unknown = venue_set - set(VENUES)
            if unknown:
                raise InvalidInputError(
                    f"unknown venue {', '.join(map(quote, sorted(unknown)))}; the venues are: {', '.join(VENUES)}"
                )
        symbol_set = _as_set(symbols)
        skip_flags = 0 if include_non_trades else FLAG_NON_TRADE
        rows = []
        with self._mutex:
            self._check_open()
            for record in read_records(self._log_dir, lambda e: e.overlaps(start_ns, end_ns)):
                if (
                    type(record) is TradeRecord
                    and start_ns <= record.ts_ns < end_ns
                    and not record.flags & skip_flags
                    and (venue_set is None or record.venue in venue_set)
                    and (symbol_set is None or record.symbol in symbol_set)
                ):
                    rows.append(record)
        rows.sort(key=operator.attrgetter("ts_ns"))  # stable: equal times keep log order
        return _table(rows, TRADE_SCHEMA)

    def markers(self, start_ns: int | None = None, end_ns: int | None = None) -> pa.Table:
        """Markers whose time, or whose known span (both ends non-zero), touches
        [start_ns, end_ns), in log order."""
        start_ns, end_ns = _window(start_ns, end_ns)
        with self._mutex:
            self._check_open()
            rows = [
                r
                for r in read_records(self._log_dir, _holds_others)
                if type(r) is MarkerRecord
                and (
                    start_ns <= r.ts_ns < end_ns
                    or (r.from_ts_ns != 0 and r.to_ts_ns != 0 and r.from_ts_ns < end_ns and r.to_ts_ns >= start_ns)
                )
            ]
        return _table(rows, MARKER_SCHEMA)

    def quarantined(self, start_ns: int | None = None, end_ns: int | None = None) -> list[tuple]:
        """Frames that could not be parsed, kept raw, received in [start_ns, end_ns):
        `(venue or None, recv_ns, reason, raw bytes)` in log order."""
        start_ns, end_ns = _window(start_ns, end_ns)
        with self._mutex:
            self._check_open()
            return [
                tuple(r)
                for r in read_records(self._log_dir, _holds_others)
                if type(r) is QuarantinedRecord and start_ns <= r.recv_ns < end_ns
            ]

    # -- lifetime

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed; open it again to append or query")

    @property
    def _writing(self) -> ActiveSegment:
        """The active segment: an open writer always has one (callers check that it is one)."""
        active = self._active
        assert active is not None, "only an open writer has an active segment"
        return active

    def _check_writable(self) -> None:
        self._check_open()
        if not self._writable:
            raise InvalidInputError(
                f"{self._dir} was opened read-only (Store.open_readonly); open it with Store(path) "
                f"to append (one writer at a time)"
            )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, seal: bool = False) -> None:
        """Commits and releases the directory. The active segment stays active, and the next
        writer appends to it; `seal=True` seals it (and starts a new, empty one) first."""
        try:
            with self._mutex:
                if self._closed:
                    return
                self._hold_wake.set()
                try:
                    if self._writable:
                        hold = self._hold
                        if hold is not None:
                            hold.next_try = 0.0
                            self._try_release()
                        if self._hold is not None:
                            self._sync()
                            raise self._held_at_close(self._hold)
                        if seal and self._writing.end > HEADER_LEN:
                            self.roll()
                        self._sync()
                finally:
                    self._closed = True
                    if self._compressor is not None:
                        # The segments this store sealed are compressed before the directory is
                        # released; the backlog found at open and not compressed yet is left to
                        # the next writer.
                        self._compressor.stop()
                    self._release()
        finally:
            if self._hold_thread is not None:
                self._hold_thread.join()

    def _held_at_close(self, hold: Hold) -> OSError:
        """The error a close raises when the disk still refuses what is held: what is lost."""
        spans = "; ".join(
            f"{s.venue} {s.symbol} {s.trades} trades ids {s.from_id}..{s.to_id} ts {s.from_ts_ns}..{s.to_ts_ns}"
            for s in hold.lost
        )
        return OSError(
            errno.ENOSPC if hold.disk_full else errno.EIO,
            f"{hold.records} records held in memory since {hold.since_ns} ns could not be written to "
            f"{self._log_dir} ({hold.reason}); they are lost with this process"
            + (f", as are {spans} that fell out earlier" if spans else "")
            + ". Free disk space before stopping the recorder",
        )

    def _release(self) -> None:
        active = getattr(self, "_active", None)
        if active is not None:
            active.close()
            self._active = None
        lock_fd = getattr(self, "_lock_fd", None)
        if lock_fd is not None:
            os.close(lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "closed" if self._closed else ("writer" if self._writable else "read-only")
        return f"<pumpwatch.purepy.Store {self.path!r} {mode}>"


if TYPE_CHECKING:
    # mypy holds both engines to what the recorder calls on its store (checked here, beside the
    # import this module already makes of the Rust facade, so the facade need not import purepy).
    from ..store import RecorderStore
    from ..store import Store as RustStore

    def _both_engines_are_recorder_stores(rust: RustStore, pure: Store) -> tuple[RecorderStore, RecorderStore]:
        return rust, pure
