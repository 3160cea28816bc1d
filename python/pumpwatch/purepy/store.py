"""Segment log store in plain Python: the reference implementation of docs/FORMAT.md.

Writes files the Rust core reads and reads files it writes. The layout in brief:

    <dir>/LOCK                    flock of the one writer, holding "pid <n>"
    <dir>/log/<seq:020>.pwlog     segments: 64-byte header, then frames `len u32 | crc32c u32 | payload`
    <dir>/log/<seq:020>.pwidx     sparse time index of a segment, one entry per ~64 KiB block
    <dir>/recovered/              bytes cut off a torn tail, kept for forensics

Every read of the log goes through one frame walker, `FrameWalk`: recovery, queries and `verify`
see the same records, the same damaged spans and the same torn tail.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import operator
import os
import re
import struct
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import crc32c
import pyarrow as pa

from ..errors import CorruptLogError, DiskFullError, InvalidTradeError, StoreError, StoreLockedError

__all__ = ["Store", "verify", "FrameWalk", "TradeRecord", "MarkerRecord", "QuarantinedRecord"]

# --- Format constants (docs/FORMAT.md) -------------------------------------------------------------

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"PUMPWLOG"
HEADER_LEN = 64
STATE_ACTIVE = 0
STATE_SEALED = 1
PUBLISHED_END_AT = 40

FRAME_HEADER = 8
MAX_PAYLOAD = 16 << 20

KIND_TRADE = 1
KIND_MARKER = 2
KIND_QUARANTINE = 3
TRADE_FIXED = 33
MARKER_FIXED = 32
QUARANTINE_FIXED = 16

INDEX_MAGIC = b"PWINDEX1"
INDEX_HEADER_LEN = 16
INDEX_ENTRY_LEN = 48
BLOCK_BYTES = 64 << 10
# The active segment grows in preallocated steps of this size, so that the bytes past its last
# record are zeros and an append cannot run out of space halfway through a record.
PREALLOC_CHUNK = 64 << 20

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1
FLAGS_ALL = 0xFF
TEXT_MAX = 255
DETAIL_MAX = 0xFFFF
# A quarantined frame is cut so that its record, with the longest reason, still fits one frame.
QUARANTINE_RAW_MAX = MAX_PAYLOAD - QUARANTINE_FIXED - DETAIL_MAX

# Venue code = position + 1; codes are part of the format: never renumber, only append.
VENUES = (
    "binance-spot", "binance-usdm", "bybit-spot", "bybit-linear", "okx-spot", "okx-swap",
    "kucoin-spot", "kucoin-futures", "gate-spot", "gate-futures", "phemex-spot", "phemex-perp",
)
MARKER_KINDS = (
    "connection_up", "connection_down", "gap_found", "gap_filled", "gap_unfillable",
    "subscription_set", "recorder_start", "recorder_stop",
)
SIDES = ("buy", "sell")

_VENUE_CODE = {venue: code for code, venue in enumerate(VENUES, 1)}
_MARKER_CODE = {kind: code for code, kind in enumerate(MARKER_KINDS, 1)}
_SIDE_CODE = {side.encode(): code for code, side in enumerate(SIDES, 1)}
# Indexed by code; code 0 is "no venue" where the format allows it.
_VENUE_BY_CODE = (None,) + VENUES
_MARKER_BY_CODE = (None,) + MARKER_KINDS
_SIDE_BY_CODE = (None,) + SIDES

# Segment header: bytes 0..32 are covered by the CRC at 32; state and published end change in place.
_HEADER_ID = struct.Struct("<8sHHIQq")
_HEADER_REST = struct.Struct("<IIQ16x")
_U64 = struct.Struct("<Q")
_FRAME = struct.Struct("<II")
_TRADE = struct.Struct("<BBBBHBBqqQB")
_MARKER = struct.Struct("<BBBBBBHqqq")
_QUARANTINE = struct.Struct("<BBHIq")
_INDEX_HEADER = struct.Struct("<8sHHI")
_INDEX_BODY = struct.Struct("<QQqqII")
_INDEX_TAIL = struct.Struct("<II")

_PLAIN_DECIMAL = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?")
_SEGMENT_NAME = re.compile(r"^(\d{20})\.pwlog$")
# A frame's payload starts with a known kind (1..3): resync looks for that byte first, which skips
# runs of zeros (preallocated space, zeroed pages) at the speed of the regex engine.
_KIND_BYTE = re.compile(rb"[\x01-\x03]")

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

TRADE_SCHEMA = pa.schema([
    ("venue", pa.string()), ("symbol", pa.string()), ("trade_id", pa.string()),
    ("price", pa.string()), ("qty", pa.string()), ("side", pa.string()),
    ("ts_ns", pa.int64()), ("recv_ns", pa.int64()), ("flags", pa.uint16()),
])
MARKER_SCHEMA = pa.schema([
    ("kind", pa.string()), ("venue", pa.string()), ("symbol", pa.string()),
    ("ts_ns", pa.int64()), ("from_ts_ns", pa.int64()), ("to_ts_ns", pa.int64()),
    ("from_id", pa.string()), ("to_id", pa.string()), ("detail", pa.string()),
])

# --- Decoded records ------------------------------------------------------------------------------


class TradeRecord(NamedTuple):
    """A trade as read back; field order is the column order of `Store.query`."""
    venue: str
    symbol: str
    trade_id: str
    price: str
    qty: str
    side: str
    ts_ns: int
    recv_ns: int
    flags: int


class MarkerRecord(NamedTuple):
    """A coverage fact; field order is the column order of `Store.markers`."""
    kind: str
    venue: str | None
    symbol: str
    ts_ns: int
    from_ts_ns: int
    to_ts_ns: int
    from_id: str
    to_id: str
    detail: str


class QuarantinedRecord(NamedTuple):
    venue: str | None
    recv_ns: int
    reason: str
    raw: bytes


class _Undecodable(Exception):
    """A payload whose CRC matched but whose fields do not add up: damage, not data."""


def _text(b: bytes) -> str:
    # Text was checked as UTF-8 when stored; replacing keeps a damaged record readable, like the
    # Rust side's from_utf8_lossy.
    return b.decode("utf-8", "replace")


def _optional_venue(code: int) -> str | None:
    if code >= len(_VENUE_BY_CODE):
        raise _Undecodable("unknown venue code")
    return _VENUE_BY_CODE[code]


def decode_payload(p: bytes) -> TradeRecord | MarkerRecord | QuarantinedRecord:
    """Decodes a payload whose CRC matched; raises _Undecodable when it is inconsistent.

    Checks exactly what the Rust decoder checks: kind, codes, and that field lengths add up.
    """
    kind = p[0]
    if kind == KIND_TRADE:
        if len(p) < TRADE_FIXED:
            raise _Undecodable("trade record shorter than its fixed part")
        _, venue, side, ls, flags, lp, lq, ts_ns, recv_ns, id_num, li = _TRADE.unpack_from(p)
        if not 1 <= venue < len(_VENUE_BY_CODE):
            raise _Undecodable("unknown venue code")
        if not 1 <= side < len(_SIDE_BY_CODE):
            raise _Undecodable("unknown side code")
        if len(p) != TRADE_FIXED + ls + lp + lq + li:
            raise _Undecodable("trade record length does not match its fields")
        at_price = TRADE_FIXED + ls
        at_qty = at_price + lp
        at_id = at_qty + lq
        return TradeRecord(
            _VENUE_BY_CODE[venue],
            _text(p[TRADE_FIXED:at_price]),
            _text(p[at_id:]) if li else str(id_num),
            _text(p[at_price:at_qty]),
            _text(p[at_qty:at_id]),
            _SIDE_BY_CODE[side],
            ts_ns,
            recv_ns,
            flags,
        )
    if kind == KIND_MARKER:
        if len(p) < MARKER_FIXED:
            raise _Undecodable("marker record shorter than its fixed part")
        _, venue, marker_kind, ls, lf, lt, ld, ts_ns, from_ts_ns, to_ts_ns = _MARKER.unpack_from(p)
        if not 1 <= marker_kind < len(_MARKER_BY_CODE):
            raise _Undecodable("unknown marker kind")
        venue_id = _optional_venue(venue)
        if len(p) != MARKER_FIXED + ls + lf + lt + ld:
            raise _Undecodable("marker record length does not match its fields")
        at_from = MARKER_FIXED + ls
        at_to = at_from + lf
        at_detail = at_to + lt
        return MarkerRecord(
            _MARKER_BY_CODE[marker_kind], venue_id, _text(p[MARKER_FIXED:at_from]),
            ts_ns, from_ts_ns, to_ts_ns,
            _text(p[at_from:at_to]), _text(p[at_to:at_detail]), _text(p[at_detail:]),
        )
    if kind == KIND_QUARANTINE:
        if len(p) < QUARANTINE_FIXED:
            raise _Undecodable("quarantine record shorter than its fixed part")
        _, venue, lr, lw, recv_ns = _QUARANTINE.unpack_from(p)
        venue_id = _optional_venue(venue)
        if len(p) != QUARANTINE_FIXED + lr + lw:
            raise _Undecodable("quarantine record length does not match its fields")
        at_raw = QUARANTINE_FIXED + lr
        return QuarantinedRecord(venue_id, recv_ns, _text(p[QUARANTINE_FIXED:at_raw]), bytes(p[at_raw:]))
    raise _Undecodable("unknown record kind")


# --- The frame walker -----------------------------------------------------------------------------


def _read_frame(buf, pos: int, stop: int):
    """The frame at buf[pos:]: (record, end) when valid, else (None, why it is not)."""
    if pos + FRAME_HEADER > stop:
        return None, "frame header runs past the readable end"
    length, crc = _FRAME.unpack_from(buf, pos)
    if length == 0:
        return None, "zero frame length"
    if length > MAX_PAYLOAD:
        return None, f"frame length {length} is over 16 MiB"
    end = pos + FRAME_HEADER + length
    if end > stop:
        return None, "frame runs past the readable end"
    payload = buf[pos + FRAME_HEADER:end]
    if crc32c.crc32c(payload) != crc:
        return None, "CRC mismatch"
    try:
        return decode_payload(payload), end
    except _Undecodable as exc:
        return None, str(exc)


def _resync(buf, pos: int, stop: int) -> int | None:
    """The first offset >= pos where a valid frame starts, or None."""
    while True:
        # Every valid frame has its kind byte 8 bytes in; only offsets in front of one are tried.
        m = _KIND_BYTE.search(buf, pos + FRAME_HEADER, stop)
        if m is None:
            return None
        candidate = m.start() - FRAME_HEADER
        if _read_frame(buf, candidate, stop)[0] is not None:
            return candidate
        pos = candidate + 1


class FrameWalk:
    """One pass over the frames in the byte range [start, stop) of a segment.

    `buf` holds the file from offset `base` on (bytes or an mmap). Iterating yields
    `(offset, end, record)` for each valid frame in log order. Invalid bytes followed by a valid
    frame (found by trying every later offset) are a damaged span: recorded in `damaged` as
    `(offset, length, reason)` and skipped. Invalid bytes with nothing valid after them end the walk:
    `end` is then the end of the last valid frame, where they start, and `tail_reason` says why the
    first of them is not a frame. After a full walk, `end == stop` when there is no tail.
    """

    def __init__(self, buf, start: int, stop: int, base: int = 0):
        self._buf = buf
        self._base = base
        self.start = start
        self.stop = stop
        self.end = start
        self.damaged: list[tuple[int, int, str]] = []
        self.tail_reason: str | None = None

    def __iter__(self):
        buf, base = self._buf, self._base
        pos, stop = self.start - base, self.stop - base
        while pos < stop:
            record, end = _read_frame(buf, pos, stop)
            if record is None:
                resume = _resync(buf, pos + 1, stop)
                if resume is None:
                    self.tail_reason = end
                    return
                self.damaged.append((pos + base, resume - pos, end))
                pos = resume
                continue
            self.end = end + base
            yield pos + base, end + base, record
            pos = end

    def run(self) -> FrameWalk:
        """Walks to the end without keeping the records (for callers that need only the outcome)."""
        for _ in self:
            pass
        return self


def _last_nonzero_end(buf, start: int, stop: int, base: int = 0) -> int:
    """Offset just past the last non-zero byte in [start, stop), or start when all are zero."""
    chunk = 1 << 20
    hi = stop - base
    lo = start - base
    while hi > lo:
        a = max(lo, hi - chunk)
        kept = len(buf[a:hi].rstrip(b"\x00"))
        if kept:
            return a + kept + base
        hi = a
    return start


def _torn_span(walk: FrameWalk, buf, published_end: int, base: int = 0) -> tuple[int, int] | None:
    """The torn tail a finished walk left, as (offset, length), or None.

    Past the published end of an active segment, zeros are preallocated space: they end the records
    and are no damage. Anything else after the last valid frame is torn: non-zero bytes, and any byte
    the header claims was published.
    """
    if walk.tail_reason is None:
        return None
    torn_end = max(min(published_end, walk.stop), _last_nonzero_end(buf, walk.end, walk.stop, base))
    if torn_end <= walk.end:
        return None
    return walk.end, torn_end - walk.end


# --- Segment headers and files --------------------------------------------------------------------


class SegmentHeader(NamedTuple):
    seq: int
    created_ns: int
    state: int
    published_end: int


def _pack_header(seq: int, created_ns: int, state: int, published_end: int) -> bytes:
    ident = _HEADER_ID.pack(SEGMENT_MAGIC, FORMAT_VERSION, HEADER_LEN, 0, seq, created_ns)
    return ident + _HEADER_REST.pack(crc32c.crc32c(ident), state, published_end)


def _header_problem(data: bytes, seq: int) -> str | None:
    if len(data) < HEADER_LEN:
        return f"the file is {len(data)} bytes, shorter than the {HEADER_LEN}-byte header"
    magic, version, header_len, _, header_seq, _ = _HEADER_ID.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        return f"magic {magic!r} is not {SEGMENT_MAGIC!r}"
    if version != FORMAT_VERSION:
        return f"format version {version}; this build reads version {FORMAT_VERSION}"
    if header_len != HEADER_LEN:
        return f"header length {header_len}, expected {HEADER_LEN}"
    crc = _HEADER_REST.unpack_from(data, 32)[0]
    if crc32c.crc32c(data[:32]) != crc:
        return "header CRC mismatch"
    if header_seq != seq:
        return f"sequence number {header_seq} in the header does not match the file name"
    state, published_end = _HEADER_REST.unpack_from(data, 32)[1:]
    if state not in (STATE_ACTIVE, STATE_SEALED):
        return f"unknown segment state {state}"
    if published_end < HEADER_LEN:
        return f"published end {published_end} is inside the header"
    return None


def _parse_header(data: bytes, seq: int) -> SegmentHeader:
    _, _, _, _, _, created_ns = _HEADER_ID.unpack_from(data)
    _, state, published_end = _HEADER_REST.unpack_from(data, 32)
    return SegmentHeader(seq, created_ns, state, published_end)


def _read_header(fd: int, path: Path, seq: int) -> SegmentHeader:
    data = os.pread(fd, HEADER_LEN, 0)
    problem = _header_problem(data, seq)
    if problem:
        raise CorruptLogError(_format_error(path, problem))
    return _parse_header(data, seq)


def _format_error(path, detail: str) -> str:
    return (
        f"{path} is not a readable PumpWatch log file: {detail}; move it out of the data directory "
        f"or run `pumpwatch verify` to see what is damaged"
    )


def _segment_name(seq: int) -> str:
    return f"{seq:020d}.pwlog"


def _index_path(segment_path: Path) -> Path:
    return segment_path.with_suffix(".pwidx")


def _list_segments(log_dir: Path) -> list[tuple[int, Path]]:
    """(sequence number, path) of every segment, oldest first."""
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _SEGMENT_NAME.match(name)
        if m:
            found.append((int(m.group(1)), log_dir / name))
    found.sort()
    return found


def _pread_range(fd: int, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the file, fewer if it is shorter (a concurrent truncation)."""
    parts = []
    while start < stop:
        data = os.pread(fd, min(stop - start, 1 << 30), start)
        if not data:
            break
        parts.append(data)
        start += len(data)
    return b"".join(parts)


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno in _DISK_FULL_ERRNOS


def _disk_full(exc: OSError, path, needed: int = 0) -> DiskFullError:
    reserving = f" while reserving {needed} bytes" if needed else ""
    return DiskFullError(
        exc.errno,
        f"no space left to append ({os.strerror(exc.errno)}) at {path}{reserving}; nothing already "
        f"stored was touched and this batch was not written: free disk space (or lower retention) "
        f"and append again",
    )


# --- Sparse time index ----------------------------------------------------------------------------


class IndexEntry(NamedTuple):
    start: int
    end: int
    min_ts: int
    max_ts: int
    trades: int
    others: int


def _pack_entry(e: IndexEntry) -> bytes:
    body = _INDEX_BODY.pack(*e)
    return body + _INDEX_TAIL.pack(crc32c.crc32c(body), 0)


_INDEX_FILE_HEADER = _INDEX_HEADER.pack(INDEX_MAGIC, 1, INDEX_ENTRY_LEN, 0)


class _BlockIndex:
    """Groups consecutive records into blocks: a block closes after the record that brings it to
    BLOCK_BYTES or more, and each closed block becomes an index entry."""

    def __init__(self, start: int = HEADER_LEN):
        self._open(start)

    def _open(self, start: int) -> None:
        self.start = self.last_end = start
        self.min_ts, self.max_ts = I64_MAX, I64_MIN
        self.trades = self.others = 0

    def _entry(self) -> IndexEntry:
        return IndexEntry(self.start, self.last_end, self.min_ts, self.max_ts, self.trades, self.others)

    def add(self, end: int, trade_ts: int | None) -> IndexEntry | None:
        """Counts the record ending at `end`; returns the block's entry when this closes it."""
        if trade_ts is None:
            self.others += 1
        else:
            self.trades += 1
            if trade_ts < self.min_ts:
                self.min_ts = trade_ts
            if trade_ts > self.max_ts:
                self.max_ts = trade_ts
        self.last_end = end
        if end - self.start >= BLOCK_BYTES:
            entry = self._entry()
            self._open(end)
            return entry
        return None

    def finish(self) -> IndexEntry | None:
        """The entry of the open block, when it holds any record (a sealed segment indexes all)."""
        return self._entry() if self.last_end > self.start else None


def _read_index(path: Path, limit: int) -> list[IndexEntry]:
    """The index entries that are valid and chained from the first record up to `limit`.

    The index is only a hint: whatever is missing, damaged or unchained is left to a linear scan.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    if len(data) < INDEX_HEADER_LEN or data[:INDEX_HEADER_LEN] != _INDEX_FILE_HEADER:
        return []
    entries = []
    expected_start = HEADER_LEN
    for at in range(INDEX_HEADER_LEN, len(data) - INDEX_ENTRY_LEN + 1, INDEX_ENTRY_LEN):
        body = data[at:at + _INDEX_BODY.size]
        if crc32c.crc32c(body) != _INDEX_TAIL.unpack_from(data, at + _INDEX_BODY.size)[0]:
            break
        entry = IndexEntry._make(_INDEX_BODY.unpack(body))
        if entry.start != expected_start or not entry.start < entry.end <= limit:
            break
        entries.append(entry)
        expected_start = entry.end
    return entries


def _write_index(path: Path, entries: list[IndexEntry]) -> None:
    """Replaces the index atomically, so a concurrent reader sees the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_INDEX_FILE_HEADER + b"".join(map(_pack_entry, entries)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- Encoding (with the Rust side's validation) ---------------------------------------------------


def _q(value) -> str:
    """Quotes a value the way the Rust side's error messages do ({:?})."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload


def _utf8(field: str, value) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text (str), got {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} is not valid UTF-8") from None


def _text_bytes(field: str, value, required: bool) -> bytes:
    """A short text field: at most 255 bytes of UTF-8, non-empty when required."""
    b = _utf8(field, value)
    if required and not b:
        raise ValueError(f"{field} is empty")
    if len(b) > TEXT_MAX:
        raise ValueError(f"{field} is {len(b)} bytes long; at most {TEXT_MAX} are stored")
    return b


def _decimal_bytes(field: str, value) -> bytes:
    if isinstance(value, Decimal):
        value = format(value, "f")  # never an exponent; NaN and Infinity fail the check below
    if not isinstance(value, str):
        raise ValueError(
            f"{field} must be the venue's text (str) or a Decimal, got {type(value).__name__}: "
            f"a float would round it"
        )
    b = value.encode("utf-8", "replace")
    if len(b) > TEXT_MAX:
        raise ValueError(f"{field} is {len(b)} characters long; at most {TEXT_MAX} are stored")
    if not _PLAIN_DECIMAL.fullmatch(b):
        raise ValueError(
            f'{field} {_q(value)} is not a plain decimal like "83680.00" or "0.0000001117" '
            f"(no exponent, no spaces, no float): pass the venue's text or a Decimal"
        )
    return b


def _int64(field: str, value) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{field} must be an integer (ns since the Unix epoch), got {type(value).__name__}") from None
    if not I64_MIN <= n <= I64_MAX:
        raise ValueError(f"{field} {n} does not fit a signed 64-bit integer")
    return n


def _venue_code(value, optional: bool) -> int:
    if value is None and optional:
        return 0
    code = _VENUE_CODE.get(value) if isinstance(value, str) else None
    if code is None:
        raise ValueError(f"unknown venue {_q(value)}; the venues are: {', '.join(VENUES)}")
    return code


def _canonical_u64(b: bytes) -> int | None:
    """The id as a number when its text is the canonical decimal of a u64 ("0" or no leading zero)."""
    if not b or len(b) > 20 or (len(b) > 1 and b[0] == 0x30) or not b.isdigit():
        return None
    n = int(b)
    return n if n <= U64_MAX else None


def _encode_trade(venue, symbol, trade_id, price, qty, side, ts_ns, recv_ns, flags) -> tuple[bytes, int]:
    """The framed trade and its exchange time; ValueError says which field is wrong and why."""
    venue_code = _venue_code(venue, optional=False)
    side_code = _SIDE_CODE.get(side.encode("utf-8", "replace").lower()) if isinstance(side, str) else None
    if side_code is None:
        raise ValueError(f'side {_q(side)} is not "buy" or "sell" (the taker\'s side)')
    price_b = _decimal_bytes("price", price)
    qty_b = _decimal_bytes("qty", qty)
    symbol_b = _text_bytes("symbol", symbol, required=True)
    id_b = _text_bytes("trade_id", trade_id, required=True)
    try:
        flags = operator.index(flags)
    except TypeError:
        raise ValueError(f"flags must be an integer, got {type(flags).__name__}") from None
    if not 0 <= flags <= FLAGS_ALL:
        raise ValueError(f"flags {flags:#x} has bits no PumpWatch flag uses (known: 0..=0xff)")
    ts_ns = _int64("ts_ns", ts_ns)
    recv_ns = _int64("recv_ns", recv_ns)
    id_num = _canonical_u64(id_b)
    id_text = b"" if id_num is not None else id_b
    fixed = _TRADE.pack(
        KIND_TRADE, venue_code, side_code, len(symbol_b), flags, len(price_b), len(qty_b),
        ts_ns, recv_ns, id_num or 0, len(id_text),
    )
    return _frame(b"".join((fixed, symbol_b, price_b, qty_b, id_text))), ts_ns


_TRADE_FIELDS = ("venue", "symbol", "trade_id", "price", "qty", "side", "ts_ns", "recv_ns")


def _trade_rows(trades):
    """The batch as tuples in _encode_trade's argument order (flags defaulting to 0)."""
    if isinstance(trades, pa.Table):
        missing = [name for name in _TRADE_FIELDS if name not in trades.column_names]
        if missing:
            raise InvalidTradeError(f"the table has no column {', '.join(map(_q, missing))}")
        columns = []
        for name in _TRADE_FIELDS:
            column = trades.column(name)
            if pa.types.is_timestamp(column.type):
                column = column.cast(pa.int64())  # as_py() would round to microseconds
            columns.append(column.to_pylist())
        if "flags" in trades.column_names:
            columns.append(trades.column("flags").to_pylist())
        else:
            columns.append([0] * trades.num_rows)
        yield from zip(*columns)
        return
    for row, trade in enumerate(trades):
        if isinstance(trade, Mapping):
            get = trade.get
            values = [get(name, _MISSING) for name in _TRADE_FIELDS]
            values.append(get("flags", 0))
        else:
            values = [getattr(trade, name, _MISSING) for name in _TRADE_FIELDS]
            values.append(getattr(trade, "flags", 0))
        for name, value in zip(_TRADE_FIELDS, values):
            if value is _MISSING:
                raise InvalidTradeError(f"trade row {row}: has no field {name}")
        yield values


_MISSING = object()


def _encode_marker(kind, venue, symbol, ts_ns, from_ts_ns, to_ts_ns, from_id, to_id, detail) -> bytes:
    marker_code = _MARKER_CODE.get(kind) if isinstance(kind, str) else None
    if marker_code is None:
        raise ValueError(f"unknown marker kind {_q(kind)}; the kinds are: {', '.join(MARKER_KINDS)}")
    venue_code = _venue_code(venue, optional=True)
    symbol_b = _text_bytes("marker symbol", symbol, required=False)
    from_b = _text_bytes("marker from_id", from_id, required=False)
    to_b = _text_bytes("marker to_id", to_id, required=False)
    detail_b = _utf8("marker detail", detail)
    if len(detail_b) > DETAIL_MAX:
        raise ValueError(f"marker detail is {len(detail_b)} bytes; at most {DETAIL_MAX} are stored")
    fixed = _MARKER.pack(
        KIND_MARKER, venue_code, marker_code, len(symbol_b), len(from_b), len(to_b), len(detail_b),
        _int64("ts_ns", ts_ns), _int64("from_ts_ns", from_ts_ns), _int64("to_ts_ns", to_ts_ns),
    )
    return _frame(b"".join((fixed, symbol_b, from_b, to_b, detail_b)))


def _encode_quarantined(venue, recv_ns, reason, raw) -> bytes:
    venue_code = _venue_code(venue, optional=True)
    recv_ns = _int64("recv_ns", recv_ns)
    _utf8("reason", reason)
    # A text websocket frame is kept as the UTF-8 bytes it arrived as.
    raw = _utf8("raw", raw) if isinstance(raw, str) else bytes(raw)
    if len(raw) > QUARANTINE_RAW_MAX:
        # Cut, and say so, so that one frame fits one record (as the Rust side does).
        reason += f" (frame of {len(raw)} bytes cut to {QUARANTINE_RAW_MAX})"
        raw = raw[:QUARANTINE_RAW_MAX]
    # Cut at a character boundary: the dropped partial character is the only invalid UTF-8.
    reason_b = reason.encode()[:DETAIL_MAX].decode("utf-8", "ignore").encode()
    fixed = _QUARANTINE.pack(KIND_QUARANTINE, venue_code, len(reason_b), len(raw), recv_ns)
    return _frame(b"".join((fixed, reason_b, raw)))


# --- The active segment (writer side) -------------------------------------------------------------


class _ActiveSegment:
    """The one segment the writer appends to: file, published end, preallocation and open block."""

    def __init__(self, path: Path, seq: int, fd: int, created_ns: int, end: int, allocated: int):
        self.path = path
        self.seq = seq
        self.fd = fd
        self.created_ns = created_ns
        self.end = end  # published end: every byte before it is a complete record
        self.allocated = allocated  # file size; bytes in [end, allocated) are zeros
        self.blocks = _BlockIndex()
        self.entries: list[IndexEntry] = []
        self._index_fd: int | None = None
        self._index_len = 0

    @property
    def index_path(self) -> Path:
        return _index_path(self.path)

    # Creation in two steps, so that a batch can reserve all its space before writing anything.

    @classmethod
    def reserve(cls, log_dir: Path, seq: int, needed_end: int, max_bytes: int) -> _ActiveSegment:
        """Creates the segment under a temporary name with its header and space for `needed_end`."""
        path = log_dir / _segment_name(seq)
        tmp = path.with_name(path.name + ".tmp")
        created_ns = time.time_ns()
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        seg = cls(path, seq, fd, created_ns, HEADER_LEN, 0)
        try:
            _pwrite_all(fd, _pack_header(seq, created_ns, STATE_ACTIVE, HEADER_LEN), 0)
            seg.allocated = HEADER_LEN
            seg.ensure_allocated(needed_end, max_bytes)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return seg

    def discard(self) -> None:
        """Drops a reserved segment that was never activated."""
        os.close(self.fd)
        os.unlink(self.path.with_name(self.path.name + ".tmp"))

    def activate(self) -> None:
        """Gives a reserved segment its real name, visible to readers and to recovery."""
        os.replace(self.path.with_name(self.path.name + ".tmp"), self.path)
        _fsync_dir(self.path.parent)
        self._start_index([])

    @classmethod
    def recover(cls, path: Path, seq: int, recovered_dir: Path) -> _ActiveSegment:
        """Opens a segment left active: walks every byte of it, cuts a torn tail exactly at the end
        of the last valid frame (saving the cut bytes when any is non-zero), publishes what is
        kept, and rebuilds its index."""
        fd = os.open(path, os.O_RDWR)
        try:
            header = _read_header(fd, path, seq)
            size = os.fstat(fd).st_size
            blocks = _BlockIndex()
            entries = []
            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
                # The whole file, not just up to the published end: complete records written just
                # before a crash, after the last header update, are kept.
                walk = FrameWalk(view, HEADER_LEN, size)
                for _, end, record in walk:
                    entry = blocks.add(end, record.ts_ns if type(record) is TradeRecord else None)
                    if entry:
                        entries.append(entry)
                torn = _torn_span(walk, view, header.published_end)
                cut = view[torn[0]:torn[0] + torn[1]] if torn else b""
            end = walk.end
            if torn:
                if cut.strip(b"\x00"):
                    _save_cut(recovered_dir, path, torn[0], cut)
                # Truncate, so that the space after the last record is zeros again once preallocated.
                os.ftruncate(fd, end)
                size = end
            if header.published_end != end:
                _pwrite_all(fd, _U64.pack(end), PUBLISHED_END_AT)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        seg = cls(path, seq, fd, header.created_ns, end, size)
        seg.blocks = blocks
        seg._start_index(entries)
        return seg

    def _start_index(self, entries: list[IndexEntry]) -> None:
        self.entries = list(entries)
        try:
            _write_index(self.index_path, self.entries)
            self._index_fd = os.open(self.index_path, os.O_WRONLY)
            self._index_len = INDEX_HEADER_LEN + INDEX_ENTRY_LEN * len(self.entries)
        except OSError:
            # The index is a hint: without it readers scan, and the next open rebuilds it.
            self._index_fd = None

    def ensure_allocated(self, needed_end: int, max_bytes: int) -> None:
        """Preallocates in PREALLOC_CHUNK steps (capped at the segment's size limit) so that the
        bytes after the last record read as zeros and appends do not run out of space midway."""
        if needed_end <= self.allocated:
            return
        target = -(-needed_end // PREALLOC_CHUNK) * PREALLOC_CHUNK
        target = max(needed_end, min(target, max_bytes))
        try:
            os.posix_fallocate(self.fd, self.allocated, target - self.allocated)
        except OSError as exc:
            if _is_disk_full(exc):
                raise _disk_full(exc, self.path, target - self.allocated) from exc
            raise
        self.allocated = target

    def write(self, chunk: bytes, frame_sizes: list[int], trade_ts: list[int | None]) -> None:
        """Appends records (space already reserved), then publishes them, then indexes them."""
        start = self.end
        try:
            _pwrite_all(self.fd, chunk, start)
        except OSError as exc:
            # Put the zeros back, so that a later recovery does not see a torn tail here.
            try:
                _pwrite_all(self.fd, bytes(len(chunk)), start)
            except OSError:
                pass
            if _is_disk_full(exc):
                raise _disk_full(exc, self.path) from exc
            raise
        # Release order: the records are in the file before the header says they are.
        end = start + len(chunk)
        _pwrite_all(self.fd, _U64.pack(end), PUBLISHED_END_AT)
        self.end = end
        finished = []
        offset = start
        for size, ts in zip(frame_sizes, trade_ts):
            offset += size
            entry = self.blocks.add(offset, ts)
            if entry:
                finished.append(entry)
        if finished:
            self.entries.extend(finished)
            self._append_index(finished)

    def _append_index(self, entries: list[IndexEntry]) -> None:
        if self._index_fd is None:
            return
        data = b"".join(map(_pack_entry, entries))
        try:
            _pwrite_all(self._index_fd, data, self._index_len)
            self._index_len += len(data)
        except OSError:
            # The records are published: an index failure must not fail the append. Readers use
            # the entries before the gap and scan the rest; sealing or the next open rewrites it.
            os.close(self._index_fd)
            self._index_fd = None

    def sync(self) -> None:
        os.fsync(self.fd)

    def seal(self) -> None:
        """Makes the segment immutable: truncated to its published end, state 1, full index."""
        os.ftruncate(self.fd, self.end)
        header = _pack_header(self.seq, self.created_ns, STATE_SEALED, self.end)
        _pwrite_all(self.fd, header, 0)
        os.fsync(self.fd)
        last = self.blocks.finish()
        if last:
            self.entries.append(last)
        try:
            _write_index(self.index_path, self.entries)
        except OSError:
            pass  # a hint only; readers scan what the existing index does not cover
        self.close()

    def close(self) -> None:
        if self._index_fd is not None:
            os.close(self._index_fd)
            self._index_fd = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _save_cut(recovered_dir: Path, segment: Path, offset: int, data: bytes) -> None:
    recovered_dir.mkdir(exist_ok=True)
    target = recovered_dir / f"{segment.name}.at-{offset}.{time.time_ns()}.torn"
    with open(target, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(recovered_dir)


# --- Reading --------------------------------------------------------------------------------------


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, stop in ranges:
        if merged and merged[-1][1] == start:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    return [(a, b) for a, b in merged]


def _read_records(log_dir: Path, wants_block=None):
    """Every record readers can see, in log order: each segment up to its published end.

    `wants_block(entry)` picks the indexed blocks to read (None: all); records after the last
    valid index entry are always read. Directory, headers and indexes are read afresh each call,
    so a reader in another process sees what the writer has published since.
    """
    for seq, path in _list_segments(log_dir):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # removed by retention since the listing
        try:
            header = _read_header(fd, path, seq)
            limit = min(header.published_end, os.fstat(fd).st_size)
            entries = _read_index(_index_path(path), limit)
            ranges = [(e.start, e.end) for e in entries if wants_block is None or wants_block(e)]
            tail_start = entries[-1].end if entries else HEADER_LEN
            if tail_start < limit:
                ranges.append((tail_start, limit))
            for start, stop in _merge_ranges(ranges):
                buf = _pread_range(fd, start, stop)
                for _, _, record in FrameWalk(buf, start, start + len(buf), base=start):
                    yield record
        finally:
            os.close(fd)


def _as_set(values) -> set | None:
    if values is None:
        return None
    if isinstance(values, str):
        return {values}
    return set(values)


# --- The store ------------------------------------------------------------------------------------


class Store:
    """A PumpWatch data directory: one writer (holding <dir>/LOCK) or any number of readers.

    `Store(path)` opens it for writing; `Store.open_readonly(path)` for reading alongside a writer
    in another process. Appends are durable once fsynced: group commit fsyncs a batch when
    `fsync_interval` seconds have passed since the last fsync (0: every batch); `flush()` and
    `close()` fsync at once. The fsync that covers a quiet period's last batch happens on the next
    append, flush or close.
    """

    def __init__(self, path, *, fsync_interval: float = 1.0, segment_span_s: float = 3600.0,
                 segment_max_bytes: int = 1 << 30):
        if fsync_interval < 0 or segment_span_s < 0:
            raise ValueError("fsync_interval and segment_span_s must be >= 0 seconds")
        if segment_max_bytes <= HEADER_LEN:
            raise ValueError(f"segment_max_bytes must be more than the {HEADER_LEN}-byte header")
        self._init_paths(path)
        self._writable = True
        self._fsync_interval = fsync_interval
        self._span_ns = int(segment_span_s * 1e9)
        self._max_bytes = segment_max_bytes
        self._active: _ActiveSegment | None = None
        self._last_seq = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_lock()
        try:
            self._open_log()
        except BaseException:
            self._release()
            raise

    @classmethod
    def open_readonly(cls, path) -> Store:
        """Opens a data directory for reading only: no lock, nothing written, and every query
        sees what a writer in another process has published by then."""
        self = cls.__new__(cls)
        self._init_paths(path)
        if not self._dir.is_dir():
            raise StoreError(f"no PumpWatch data directory at {self._dir}")
        self._writable = False
        self._active = None
        self._lock_fd = None
        return self

    def _init_paths(self, path) -> None:
        self._dir = Path(path)
        self._log_dir = self._dir / "log"
        self._recovered_dir = self._dir / "recovered"
        self._mutex = threading.RLock()
        self._closed = False

    # -- opening for writing

    def _take_lock(self) -> int:
        lock_path = self._dir / "LOCK"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise StoreLockedError(
                f"data directory {self._dir} is already open for writing by {holder}; stop that "
                f"recorder, or open the directory read-only (Store.open_readonly) to read it while it runs"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        return fd

    def _open_log(self) -> None:
        # Segment files still under a temporary name are creations a crash interrupted: never
        # visible to readers, holding nothing.
        for name in os.listdir(self._log_dir):
            if name.endswith(".tmp"):
                os.unlink(self._log_dir / name)
        segments = _list_segments(self._log_dir)
        if not segments:
            return
        self._last_seq = segments[-1][0]
        for seq, path in segments:
            fd = os.open(path, os.O_RDONLY)
            try:
                state = _read_header(fd, path, seq).state
            finally:
                os.close(fd)
            if state != STATE_ACTIVE:
                continue
            segment = _ActiveSegment.recover(path, seq, self._recovered_dir)
            if seq == self._last_seq:
                self._active = segment
            else:
                # Left active by a crash during a roll: finish the roll.
                segment.seal()

    # -- appending

    def append_trades(self, trades) -> int:
        """Appends a batch of trades (objects or mappings with venue, symbol, trade_id, price, qty,
        side, ts_ns, recv_ns and optionally flags, or a pyarrow.Table with those columns).

        Every row is checked before anything is written; a bad one raises InvalidTradeError naming
        the row and the field. Returns the number of trades appended.
        """
        frames = []
        trade_ts = []
        for row, values in enumerate(_trade_rows(trades)):
            try:
                frame, ts_ns = _encode_trade(*values)
            except ValueError as exc:
                raise InvalidTradeError(f"trade row {row}: {exc}") from None
            frames.append(frame)
            trade_ts.append(ts_ns)
        if frames:
            self._append(frames, trade_ts)
        return len(frames)

    def append_marker(self, kind: str, *, venue: str | None = None, symbol: str = "", ts_ns: int,
                      from_ts_ns: int = 0, to_ts_ns: int = 0, from_id: str = "", to_id: str = "",
                      detail: str = "") -> None:
        """Appends a coverage fact: connection up or down, gap found, filled or unfillable..."""
        try:
            frame = _encode_marker(kind, venue, symbol, ts_ns, from_ts_ns, to_ts_ns, from_id, to_id, detail)
        except ValueError as exc:
            raise InvalidTradeError(str(exc)) from None
        self._append([frame], [None])

    def append_quarantined(self, venue: str | None, recv_ns: int, reason: str, raw: bytes) -> None:
        """Keeps a frame that could not be parsed, raw, so that nothing that reached us is dropped."""
        try:
            frame = _encode_quarantined(venue, recv_ns, reason, raw)
        except ValueError as exc:
            raise InvalidTradeError(str(exc)) from None
        self._append([frame], [None])

    def _plan(self, frame_sizes: list[int]) -> list[tuple[int, int, bool]]:
        """Splits a batch into (first, stop, needs_new_segment) chunks at record boundaries.

        A new segment starts when there is none, when the active one's span has passed, and when
        the next record would push a segment past segment_max_bytes (a record bigger than that on
        its own gets a segment of its own).
        """
        active = self._active
        new = active is None or time.time_ns() >= active.created_ns + self._span_ns
        fill = HEADER_LEN if new else active.end
        chunks = []
        first = 0
        for i, size in enumerate(frame_sizes):
            if fill > HEADER_LEN and fill + size > self._max_bytes:
                chunks.append((first, i, new))
                first, fill, new = i, HEADER_LEN, True
            fill += size
        chunks.append((first, len(frame_sizes), new))
        return chunks

    def _append(self, frames: list[bytes], trade_ts: list[int | None]) -> None:
        with self._mutex:
            self._check_writable()
            sizes = [len(f) for f in frames]
            chunks = self._plan(sizes)
            # Reserve every byte the batch needs before writing any: running out of space then
            # leaves the store exactly as it was.
            reserved: list[_ActiveSegment] = []
            try:
                for first, stop, new in chunks:
                    chunk_bytes = sum(sizes[first:stop])
                    if new:
                        seq = self._last_seq + 1 + len(reserved)
                        reserved.append(
                            _ActiveSegment.reserve(self._log_dir, seq, HEADER_LEN + chunk_bytes, self._max_bytes)
                        )
                    else:
                        self._active.ensure_allocated(self._active.end + chunk_bytes, self._max_bytes)
            except OSError as exc:
                for segment in reserved:
                    segment.discard()
                if isinstance(exc, DiskFullError):
                    raise
                if _is_disk_full(exc):
                    raise _disk_full(exc, self._log_dir) from exc
                raise
            pending = iter(reserved)
            for first, stop, new in chunks:
                if new:
                    self._roll(next(pending))
                self._active.write(b"".join(frames[first:stop]), sizes[first:stop], trade_ts[first:stop])
            self._dirty = True
            if self._fsync_interval == 0 or time.monotonic() - self._last_sync >= self._fsync_interval:
                self._sync()

    def _roll(self, segment: _ActiveSegment) -> None:
        # The new segment is named before the old one is sealed: a crash in between leaves two
        # active segments, and opening seals the older one.
        segment.activate()
        self._last_seq = segment.seq
        if self._active is not None:
            self._active.seal()
        self._active = segment

    def _sync(self) -> None:
        if self._active is not None and self._dirty:
            self._active.sync()
        self._dirty = False
        self._last_sync = time.monotonic()

    def flush(self) -> None:
        """fsyncs everything appended so far."""
        with self._mutex:
            self._check_writable()
            self._sync()

    # -- reading

    def query(self, start_ns: int, end_ns: int, venues=None, symbols=None) -> pa.Table:
        """Trades with start_ns <= ts_ns < end_ns, ordered by ts_ns, equal times in log order."""
        venue_set = _as_set(venues)
        if venue_set is not None:
            unknown = venue_set - set(VENUES)
            if unknown:
                raise InvalidTradeError(
                    f"unknown venue {', '.join(map(_q, sorted(unknown)))}; the venues are: {', '.join(VENUES)}"
                )
        symbol_set = _as_set(symbols)

        def overlaps(entry: IndexEntry) -> bool:
            # Exchange times are not monotonic (backfills): any block whose range overlaps counts.
            return entry.trades > 0 and entry.min_ts < end_ns and entry.max_ts >= start_ns

        rows = []
        with self._mutex:
            self._check_open()
            for record in _read_records(self._log_dir, overlaps):
                if (
                    type(record) is TradeRecord
                    and start_ns <= record.ts_ns < end_ns
                    and (venue_set is None or record.venue in venue_set)
                    and (symbol_set is None or record.symbol in symbol_set)
                ):
                    rows.append(record)
        rows.sort(key=operator.attrgetter("ts_ns"))  # stable: equal times keep log order
        return _table(rows, TRADE_SCHEMA)

    def markers(self, start_ns: int | None = None, end_ns: int | None = None) -> pa.Table:
        """Markers with start_ns <= ts_ns < end_ns (either bound optional), ordered like trades."""
        lo = I64_MIN if start_ns is None else start_ns
        hi = I64_MAX + 1 if end_ns is None else end_ns
        with self._mutex:
            self._check_open()
            rows = [
                r for r in _read_records(self._log_dir, _holds_others)
                if type(r) is MarkerRecord and lo <= r.ts_ns < hi
            ]
        rows.sort(key=operator.attrgetter("ts_ns"))
        return _table(rows, MARKER_SCHEMA)

    def quarantined(self) -> list[tuple[str | None, int, str, bytes]]:
        """Every quarantined frame as (venue or None, recv_ns, reason, raw), in log order."""
        with self._mutex:
            self._check_open()
            return [
                tuple(r) for r in _read_records(self._log_dir, _holds_others)
                if type(r) is QuarantinedRecord
            ]

    # -- lifetime

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed; open it again to append or query")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._writable:
            raise StoreError(
                f"{self._dir} was opened read-only (Store.open_readonly); open it with Store(path) "
                f"to append (one writer at a time)"
            )

    def close(self) -> None:
        """fsyncs and releases the lock. The active segment stays active: the next writer goes on
        appending to it."""
        with self._mutex:
            if self._closed:
                return
            try:
                if self._writable:
                    self._sync()
            finally:
                self._closed = True
                self._release()

    def _release(self) -> None:
        if getattr(self, "_active", None) is not None:
            self._active.close()
            self._active = None
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "closed" if self._closed else ("writer" if self._writable else "read-only")
        return f"<pumpwatch.purepy.Store {str(self._dir)!r} {mode}>"


def _holds_others(entry: IndexEntry) -> bool:
    return entry.others > 0


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, schema)], schema=schema
    )


# --- verify ---------------------------------------------------------------------------------------


def verify(path) -> dict:
    """Walks every segment in full, read-only, and reports what it found.

    Sealed segments are walked up to their published end; the active segment to the end of its
    file, as the writer's recovery would, so that a torn tail recovery would cut is reported.
    (A batch being written by a live writer at that moment can show as a torn tail.) The torn tail
    of the last segment is `torn_tail`; anything wrong elsewhere, including a torn tail in an older
    segment or a sealed file shorter than its published end, is in `damaged`.
    """
    data_dir = Path(path)
    if not data_dir.is_dir():
        raise StoreError(f"no PumpWatch data directory at {data_dir}")
    segments = _list_segments(data_dir / "log")
    report = {
        "segments": len(segments), "records": 0, "trades": 0, "markers": 0, "quarantined": 0,
        "damaged": [], "torn_tail": None, "ok": True,
    }
    counts = {TradeRecord: "trades", MarkerRecord: "markers", QuarantinedRecord: "quarantined"}
    damaged = report["damaged"]
    for i, (seq, seg_path) in enumerate(segments):
        name = seg_path.name
        with open(seg_path, "rb") as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            data = _pread_range(fd, 0, size)
        problem = _header_problem(data[:HEADER_LEN], seq)
        if problem:
            damaged.append({"segment": name, "offset": 0, "length": min(size, HEADER_LEN),
                            "reason": f"header: {problem}"})
            # Without a trusted header, walk all of it as an active segment would be.
            header = SegmentHeader(seq, 0, STATE_ACTIVE, HEADER_LEN)
        else:
            header = _parse_header(data, seq)
        if header.state == STATE_SEALED:
            stop = min(header.published_end, size)
            if size < header.published_end:
                damaged.append({"segment": name, "offset": size, "length": header.published_end - size,
                                "reason": "sealed segment file ends before its published end"})
        else:
            stop = size
        walk = FrameWalk(data, HEADER_LEN, stop)
        for _, _, record in walk:
            report["records"] += 1
            report[counts[type(record)]] += 1
        for offset, length, reason in walk.damaged:
            damaged.append({"segment": name, "offset": offset, "length": length, "reason": reason})
        torn = _torn_span(walk, data, header.published_end)
        if torn:
            if i == len(segments) - 1:
                report["torn_tail"] = {"segment": name, "offset": torn[0], "length": torn[1]}
            else:
                damaged.append({"segment": name, "offset": torn[0], "length": torn[1],
                                "reason": f"torn tail: {walk.tail_reason}"})
    report["ok"] = not damaged and report["torn_tail"] is None
    return report
