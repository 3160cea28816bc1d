"""Segment log store in plain Python: the reference implementation of docs/FORMAT.md.

It writes files the Rust core reads and reads files the Rust core writes, and behaves like the
Rust-backed `pumpwatch.Store` (same rolls, same recovery, same query results), so it can serve as
the oracle of differential tests. The layout in brief:

    <dir>/LOCK                    flock of the one writer, holding "pid <n>"
    <dir>/log/<seq:020>.pwlog     segments: 64-byte header, then frames `len u32 | crc32c u32 | payload`
    <dir>/log/<seq:020>.pwidx     sparse time index of a segment, one entry per ~64 KiB block
    <dir>/log/<seq:020>.pwzst     a sealed segment compressed: one zstd frame per index block
    <dir>/recovered/              bytes cut off a torn tail, kept for forensics

Every read of the log goes through one frame walker, `FrameWalk`: recovery, queries and `verify`
see the same records, the same damaged spans and the same torn tail.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
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
import zstandard

from ..errors import (
    CorruptLogError,
    DiskFullError,
    InvalidInputError,
    InvalidTradeError,
    StoreClosedError,
    StoreLockedError,
)
from ..schema import MARKER_SCHEMA, TRADE_SCHEMA

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

# --- Format constants (docs/FORMAT.md) -------------------------------------------------------------

FORMAT_VERSION = 2  # 2 adds the seal of a sealed segment (header bytes 48..64); 1 reads as before
SEAL_VERSION = 2
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

# Compressed sealed segments (docs/FORMAT.md "Compressed segment").
COMPRESSED_EXT = "pwzst"
COMPRESSED_MAGIC = b"PUMPWZST"
COMPRESSED_VERSION = 1
ZHEADER_LEN = 64
FRAME_TABLE_AT = ZHEADER_LEN + HEADER_LEN
FRAME_ENTRY_LEN = 64

INDEX_MAGIC = b"PWINDEX1"
INDEX_HEADER_LEN = 16
INDEX_ENTRY_LEN = 48
BLOCK_BYTES = 64 << 10

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1
FLAG_NON_TRADE = 32
FLAGS_ALL = 0x3FF
TEXT_MAX = 255
DETAIL_MAX = 0xFFFF
# A quarantined frame is cut so that its record, with the longest reason, still fits one frame.
QUARANTINE_RAW_MAX = MAX_PAYLOAD - QUARANTINE_FIXED - DETAIL_MAX

# Venue code = position + 1; codes are part of the format: never renumber, only append.
VENUES = (
    "binance-spot",
    "binance-usdm",
    "bybit-spot",
    "bybit-linear",
    "okx-spot",
    "okx-swap",
    "kucoin-spot",
    "kucoin-futures",
    "gate-spot",
    "gate-futures",
    "phemex-spot",
    "phemex-perp",
)
MARKER_KINDS = (
    "connection_up",
    "connection_down",
    "gap_found",
    "gap_filled",
    "gap_unfillable",
    "subscription_set",
    "recorder_start",
    "recorder_stop",
)
SIDES = ("buy", "sell")

# --- Writer settings (the same limits as the Rust writer) ------------------------------------------

# The active segment grows in preallocated steps of this size, so that the bytes past its last
# record are zeros and an append cannot run out of space halfway through a record.
PREALLOC_CHUNK = 64 << 20
PAGE = 4096
SEGMENT_MAX_BYTES_RANGE = (1 << 16, 1 << 40)
# Cut bytes kept per recovery, at most: a tail of garbage can be as long as the preallocation.
RECOVERED_KEEP_MAX = 64 << 20

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
_ZHEADER = struct.Struct("<8sHHIQQQi")  # .. CRC-32C of these 44 bytes at 44
_FRAME_ENTRY = struct.Struct("<QQqqIIQII")  # .. CRC-32C of these 56 bytes at 56
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")

_PLAIN_DECIMAL = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?")
_SEGMENT_NAME = re.compile(r"^(\d{20})\.(pwlog|pwzst)$")
# A frame's payload starts with a known kind (1..3): resync looks for that byte first, which skips
# runs of zeros (preallocated space, zeroed pages) at the speed of the regex engine.
_KIND_BYTE = re.compile(rb"[\x01-\x03]")

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

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
    """A frame that could not be parsed; the tuple `Store.quarantined` returns."""

    venue: str | None
    recv_ns: int
    reason: str
    raw: bytes


class _Undecodable(Exception):
    """A payload whose CRC matched but whose fields do not add up: damage, not data."""


def _text(b: bytes, rule: str = "[text] marker text is not UTF-8") -> str:
    # Text that is not UTF-8 breaks a rule of the format (docs/FORMAT.md): the frame is damage.
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise _Undecodable(rule) from None


def _optional_venue(code: int) -> str | None:
    if code >= len(_VENUE_BY_CODE):
        raise _Undecodable("[venue] unknown venue code")
    return _VENUE_BY_CODE[code]


def decode_payload(p: bytes) -> TradeRecord | MarkerRecord | QuarantinedRecord:
    """Decodes a payload whose CRC matched; raises _Undecodable when it is inconsistent.

    Checks exactly what the Rust reader checks (docs/FORMAT.md, "Validity rules"): kind, codes,
    that field lengths add up, and the field rules; the message starts with the rule's tag.
    """
    kind = p[0]
    if kind == KIND_TRADE:
        if len(p) < TRADE_FIXED:
            raise _Undecodable("[size] trade record shorter than its fixed part")
        _, venue, side, ls, flags, lp, lq, ts_ns, recv_ns, id_num, li = _TRADE.unpack_from(p)
        if not 1 <= venue < len(_VENUE_BY_CODE):
            raise _Undecodable("[venue] unknown venue code")
        if not 1 <= side < len(_SIDE_BY_CODE):
            raise _Undecodable("[side] unknown side code")
        if len(p) != TRADE_FIXED + ls + lp + lq + li:
            raise _Undecodable("[size] trade record length does not match its fields")
        at_price = TRADE_FIXED + ls
        at_qty = at_price + lp
        at_id = at_qty + lq
        if flags & ~FLAGS_ALL:
            raise _Undecodable("[flags] trade flags have bits no PumpWatch flag uses")
        if not ls:
            raise _Undecodable("[symbol] trade symbol is empty")
        symbol = _text(p[TRADE_FIXED:at_price], "[symbol] trade symbol is not UTF-8")
        price, qty = bytes(p[at_price:at_qty]), bytes(p[at_qty:at_id])
        if not _PLAIN_DECIMAL.fullmatch(price):
            raise _Undecodable("[price] trade price is not a plain decimal")
        if not _PLAIN_DECIMAL.fullmatch(qty):
            raise _Undecodable("[qty] trade quantity is not a plain decimal")
        return TradeRecord(
            _VENUE_BY_CODE[venue],
            symbol,
            _text(p[at_id:], "[trade-id] trade id text is not UTF-8") if li else str(id_num),
            price.decode("ascii"),
            qty.decode("ascii"),
            _SIDE_BY_CODE[side],
            ts_ns,
            recv_ns,
            flags,
        )
    if kind == KIND_MARKER:
        if len(p) < MARKER_FIXED:
            raise _Undecodable("[size] marker record shorter than its fixed part")
        _, venue, marker_kind, ls, lf, lt, ld, ts_ns, from_ts_ns, to_ts_ns = _MARKER.unpack_from(p)
        if not 1 <= marker_kind < len(_MARKER_BY_CODE):
            raise _Undecodable("[marker-kind] unknown marker kind code")
        venue_id = _optional_venue(venue)
        if len(p) != MARKER_FIXED + ls + lf + lt + ld:
            raise _Undecodable("[size] marker record length does not match its fields")
        at_from = MARKER_FIXED + ls
        at_to = at_from + lf
        at_detail = at_to + lt
        return MarkerRecord(
            _MARKER_BY_CODE[marker_kind],
            venue_id,
            _text(p[MARKER_FIXED:at_from]),
            ts_ns,
            from_ts_ns,
            to_ts_ns,
            _text(p[at_from:at_to]),
            _text(p[at_to:at_detail]),
            _text(p[at_detail:]),
        )
    if kind == KIND_QUARANTINE:
        if len(p) < QUARANTINE_FIXED:
            raise _Undecodable("[size] quarantine record shorter than its fixed part")
        _, venue, lr, lw, recv_ns = _QUARANTINE.unpack_from(p)
        venue_id = _optional_venue(venue)
        if len(p) != QUARANTINE_FIXED + lr + lw:
            raise _Undecodable("[size] quarantine record length does not match its fields")
        at_raw = QUARANTINE_FIXED + lr
        reason = _text(p[QUARANTINE_FIXED:at_raw], "[text] quarantine reason is not UTF-8")
        return QuarantinedRecord(venue_id, recv_ns, reason, bytes(p[at_raw:]))
    raise _Undecodable("[kind] unknown record kind")


# --- The frame walker -----------------------------------------------------------------------------


def _read_frame(buf, pos: int, stop: int):
    """The frame at buf[pos:]: (record, end) when valid, else (None, why it is not)."""
    if pos + FRAME_HEADER > stop:
        return None, "[bounds] frame header runs past the readable end"
    length, crc = _FRAME.unpack_from(buf, pos)
    if length == 0:
        return None, "[length] zero frame length before the end of the records"
    if length > MAX_PAYLOAD:
        return None, "[length] frame length over 16 MiB"
    end = pos + FRAME_HEADER + length
    if end > stop:
        return None, "[bounds] frame runs past the readable end"
    payload = buf[pos + FRAME_HEADER : end]
    if crc32c.crc32c(payload) != crc:
        return None, "[crc] payload CRC-32C does not match"
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


def _last_nonzero_end(buf, start: int, stop: int) -> int | None:
    """Offset just past the last non-zero byte of buf[start:stop], or None when all are zero."""
    chunk = 1 << 20
    while stop > start:
        lo = max(start, stop - chunk)
        kept = len(buf[lo:stop].rstrip(b"\x00"))
        if kept:
            return lo + kept
        stop = lo
    return None


class FrameWalk:
    """One pass over the frames in the byte range [start, stop) of a segment.

    `buf` holds the file from offset `base` on (bytes or an mmap). Iterating yields
    `(offset, end, record)` for each valid frame in log order. Invalid bytes followed by a valid
    frame (found by trying every later offset) are a damaged span: recorded in `damaged` as
    `(offset, length, reason)` and skipped. When no valid frame follows, the walk ends: `end` is
    the end of the last valid frame, and if any byte after it is non-zero, `torn` is the torn tail
    `(offset, length, reason)` reaching to the last non-zero byte. Zeros alone after the last
    record are how records end (preallocated space), not damage.
    """

    def __init__(self, buf, start: int, stop: int, base: int = 0, published: int | None = None):
        self._buf = buf
        self._base = base
        self.start = start
        self.stop = stop
        # Past the published end an invalid frame ends the records instead of being skipped: an
        # unfinished append may have copied its later bytes before its earlier ones.
        self.published = stop if published is None else published
        self.end = start
        self.damaged: list[tuple[int, int, str]] = []
        self.torn: tuple[int, int, str] | None = None

    def __iter__(self):
        buf, base = self._buf, self._base
        pos, stop = self.start - base, self.stop - base
        while pos < stop:
            record, end = _read_frame(buf, pos, stop)
            if record is None:
                resume = _resync(buf, pos + 1, stop) if pos + base < self.published else None
                if resume is None:
                    nonzero_end = _last_nonzero_end(buf, pos, stop)
                    if nonzero_end is not None:
                        self.torn = (pos + base, nonzero_end - pos, end)
                    return
                self.damaged.append((pos + base, resume - pos, end))
                pos = resume
                continue
            self.end = end + base
            yield pos + base, end + base, record
            pos = end


# --- Segment headers and files --------------------------------------------------------------------


class SegmentHeader(NamedTuple):
    seq: int
    created_ns: int
    state: int
    published_end: int


def _pack_header(seq: int, created_ns: int, state: int, published_end: int) -> bytes:
    ident = _HEADER_ID.pack(SEGMENT_MAGIC, FORMAT_VERSION, HEADER_LEN, 0, seq, created_ns)
    return ident + _HEADER_REST.pack(crc32c.crc32c(ident), state, published_end)


_SEAL = struct.Struct("<QI")  # records, CRC chain at 48; the seal's CRC of bytes 0..60 at 60


def _pack_sealed_header(seq: int, created_ns: int, published_end: int, records: int, crc_chain: int) -> bytes:
    """A sealed segment's header: state 1, the published end and totals under the seal's CRC."""
    head = _pack_header(seq, created_ns, STATE_SEALED, published_end)[:48] + _SEAL.pack(records, crc_chain)
    return head + _U32.pack(crc32c.crc32c(head))


class Seal(NamedTuple):
    published_end: int
    records: int
    crc_chain: int


SEAL_ALTERED = "altered"


def _seal_of(data: bytes, path) -> Seal | str | None:
    """The seal of a segment header: a Seal; None when the segment is not sealed (or its header
    is damaged) or was sealed by format 1, which had none; SEAL_ALTERED when the seal fails its
    CRC (its end and totals are not trusted)."""
    header = _parse_header(data, path)
    if header is None or header.state != STATE_SEALED or _U16.unpack_from(data, 8)[0] < SEAL_VERSION:
        return None
    if crc32c.crc32c(data[:60]) != _U32.unpack_from(data, 60)[0]:
        return SEAL_ALTERED
    records, chain = _SEAL.unpack_from(data, 48)
    return Seal(header.published_end, records, chain)


def _chain(buf, offsets, chain: int = 0) -> int:
    """Folds the frames at `offsets` of `buf` into a seal's CRC chain (their CRC fields, in order)."""
    return crc32c.crc32c(b"".join(buf[o + 4 : o + 8] for o in offsets), chain)


def _parse_header(data: bytes, path) -> SegmentHeader | None:
    """The header, or None when it is damaged (too short, magic or CRC wrong): the records after
    it are still there, and a writer repairs the header from the file name.

    A header from a newer format version is no damage but unreadable: CorruptLogError.
    """
    if len(data) < HEADER_LEN:
        return None
    magic, version, _, _, seq, created_ns = _HEADER_ID.unpack_from(data)
    crc, state, published_end = _HEADER_REST.unpack_from(data, 32)
    if magic != SEGMENT_MAGIC or crc32c.crc32c(data[:32]) != crc:
        return None
    if version > FORMAT_VERSION:
        raise CorruptLogError(
            _format_error(
                path,
                f"it was written by a newer PumpWatch (format {version}, this one reads up to "
                f"{FORMAT_VERSION}); upgrade PumpWatch",
            )
        )
    return SegmentHeader(seq, created_ns, state, published_end)


def _format_error(path, detail: str) -> str:
    return (
        f"{path} is not a readable PumpWatch log file: {detail}; move it out of the data directory "
        f"or run `pumpwatch verify` to see what is damaged"
    )


def _segment_name(seq: int) -> str:
    return f"{seq:020d}.pwlog"


def _index_path(segment_path: Path) -> Path:
    return segment_path.with_suffix(".pwidx")


def _list_segment_files(log_dir: Path) -> list[tuple[int, Path | None, Path | None]]:
    """(sequence number, plain .pwlog or None, compressed .pwzst or None), oldest first. Both are
    there only for an instant while a compression finishes (or after a crash then)."""
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    found: dict[int, list] = {}
    for name in names:
        m = _SEGMENT_NAME.match(name)
        if m:
            slot = found.setdefault(int(m.group(1)), [None, None])
            slot[m.group(2) == COMPRESSED_EXT] = log_dir / name
    return [(seq, plain, compressed) for seq, (plain, compressed) in sorted(found.items())]


def _list_segments(log_dir: Path) -> list[tuple[int, Path]]:
    """(sequence number, path) of every segment, oldest first: the plain file when there is one,
    else the compressed one (`_is_compressed` tells which)."""
    return [(seq, plain or compressed) for seq, plain, compressed in _list_segment_files(log_dir)]


def _is_compressed(path: Path) -> bool:
    return path.suffix == "." + COMPRESSED_EXT


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


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _disk_full(exc: OSError, path, needed: int = 0) -> DiskFullError:
    reserving = f" while reserving {needed} bytes" if needed else ""
    return DiskFullError(
        exc.errno,
        f"no space left to append ({os.strerror(exc.errno)}) at {path}{reserving}; nothing already "
        f"stored was touched and this batch was not written: free disk space (or lower retention) "
        f"and append again",
    )


def _damage(segment: str, offset: int, length: int, reason: str) -> dict:
    return {"segment": segment, "offset": offset, "length": length, "reason": reason}


# --- Sparse time index ----------------------------------------------------------------------------


class IndexEntry(NamedTuple):
    start: int
    end: int
    min_ts: int
    max_ts: int
    trades: int
    others: int

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        """Whether the block may hold a trade with start_ns <= ts < end_ns. Exchange times are not
        monotonic (backfills), so it is the block's [min, max] that must overlap."""
        return self.trades > 0 and self.min_ts < end_ns and self.max_ts >= start_ns


def _pack_entry(e: IndexEntry) -> bytes:
    body = _INDEX_BODY.pack(*e)
    return body + _INDEX_TAIL.pack(crc32c.crc32c(body), 0)


_INDEX_FILE_HEADER = _INDEX_HEADER.pack(INDEX_MAGIC, 1, INDEX_ENTRY_LEN, 0)


class _BlockIndex:
    """Groups consecutive records into blocks: a block closes after the record that brings it to
    BLOCK_BYTES or more, and each closed block becomes an index entry.

    A damaged span is not a record boundary the index needs to know about: the block around it
    spans it, so the entries stay chained and readers walk over the damage inside the block.
    """

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
    if len(data) < INDEX_HEADER_LEN or data[:8] != INDEX_MAGIC:
        return []
    entries = []
    expected_start = HEADER_LEN
    for at in range(INDEX_HEADER_LEN, len(data) - INDEX_ENTRY_LEN + 1, INDEX_ENTRY_LEN):
        body = data[at : at + _INDEX_BODY.size]
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


# --- Compressed sealed segments -------------------------------------------------------------------


class _Block(NamedTuple):
    """A readable piece of a compressed segment: one zstd frame, or (crc None) a run of frames
    whose table entries are damaged, decoded in a row."""

    entry: IndexEntry
    offset: int
    length: int
    crc: int | None


class _CompressedSegment:
    """A `.pwzst` file: header, the plain segment's header, the frame table, the frames.

    Offsets of records are positions in the plain segment, exactly as before compression. The
    structure is checked when opening; damage to it is listed in `damage` as (offset, length,
    reason) and never stops the frames that can be located from being read.
    """

    def __init__(self, fd: int, path: Path, seq: int):
        self.fd = fd
        self.path = path
        self.seq = seq
        self.file_len = os.fstat(fd).st_size
        self.damage: list[tuple[int, int, str]] = []
        head = os.pread(fd, FRAME_TABLE_AT, 0)
        self.plain_header = head[ZHEADER_LEN:FRAME_TABLE_AT]
        header = self._parse_header(head, path)
        self.header_ok = header is not None
        plain = _parse_header(self.plain_header, path) if len(self.plain_header) == HEADER_LEN else None
        plain_ok = plain is not None and plain.seq == seq and plain.state == STATE_SEALED
        if header is None:
            self.damage.append(
                (
                    0,
                    HEADER_LEN,
                    "[header] compressed segment header damaged (magic, CRC or sizes wrong); "
                    "the frame table still locates the frames",
                )
            )
        elif not plain_ok:
            self.damage.append(
                (0, HEADER_LEN, "[header] the copy of the plain segment header inside the compressed file is damaged")
            )
        if header is not None and header[1] != seq:
            raise CorruptLogError(
                _format_error(path, f"it says it is segment {header[1]} but is named as segment {seq}")
            )
        slots: list[tuple | None] = []
        if header is not None:
            frames, _, plain_len, data_at = header
            table = os.pread(fd, frames * FRAME_ENTRY_LEN, FRAME_TABLE_AT)
            for k in range(frames):
                slots.append(self._parse_entry(table[k * FRAME_ENTRY_LEN : (k + 1) * FRAME_ENTRY_LEN]))
        else:
            # Without a header: entries up to where the first frame starts.
            data_at = self.file_len
            at = FRAME_TABLE_AT
            while at + FRAME_ENTRY_LEN <= data_at:
                entry = self._parse_entry(os.pread(fd, FRAME_ENTRY_LEN, at))
                if entry is not None:
                    data_at = min(data_at, entry[1])
                slots.append(entry)
                at += FRAME_ENTRY_LEN
            data_at = FRAME_TABLE_AT + len(slots) * FRAME_ENTRY_LEN
            if slots and slots[-1] is not None:
                plain_len = slots[-1][0].end
            elif plain_ok:
                plain_len = plain.published_end
            else:
                plain_len = None
        self.blocks: list[_Block] = []
        plain_at, file_at = HEADER_LEN, data_at
        k = 0
        while k < len(slots):
            slot = slots[k]
            if (
                slot is not None
                and slot[0].start == plain_at
                and slot[1] == file_at
                and slot[0].start < slot[0].end
                and (plain_len is None or slot[0].end <= plain_len)
            ):
                entry, offset, length, crc = slot
                self.blocks.append(_Block(entry, offset, length, crc))
                plain_at, file_at = entry.end, offset + length
                k += 1
                continue
            j = k + 1
            while j < len(slots) and not (
                slots[j] is not None and slots[j][0].start > plain_at and slots[j][1] > file_at
            ):
                j += 1
            if j < len(slots):
                plain_end, file_end = slots[j][0].start, slots[j][1]
            else:
                plain_end, file_end = plain_len, self.file_len
            if plain_end is None:
                # Header and last entry both damaged: the run ends where its frames end.
                probe = _Block(IndexEntry(plain_at, I64_MAX, I64_MIN, I64_MAX, 1, 1), file_at, file_end - file_at, None)
                self.blocks.append(probe)
                plain_end = plain_len = plain_at + len(self.read_block(len(self.blocks) - 1)[0])
                self.blocks.pop()
            self.damage.append(
                (
                    plain_at,
                    plain_end - plain_at,
                    f"[frame-table] {j - k} frame table entries damaged; their frames are decoded in a row",
                )
            )
            self.blocks.append(
                _Block(
                    IndexEntry(plain_at, plain_end, I64_MIN, I64_MAX, 1, 1), file_at, max(0, file_end - file_at), None
                )
            )
            plain_at, file_at = plain_end, file_end
            k = j
        self.plain_len = plain_len if plain_len is not None else plain_at

    @staticmethod
    def _parse_header(head: bytes, path: Path):
        """(frames, seq, plain_len, data_at), or None when damaged."""
        if len(head) < ZHEADER_LEN:
            return None
        magic, version, _, frames, seq, plain_len, data_at, _level = _ZHEADER.unpack_from(head)
        if magic != COMPRESSED_MAGIC or crc32c.crc32c(head[:44]) != _U32.unpack_from(head, 44)[0]:
            return None
        if version > COMPRESSED_VERSION:
            raise CorruptLogError(
                _format_error(
                    path,
                    f"it was written by a newer PumpWatch (compressed format {version}, this one reads up to "
                    f"{COMPRESSED_VERSION}); upgrade PumpWatch",
                )
            )
        if data_at != FRAME_TABLE_AT + FRAME_ENTRY_LEN * frames or plain_len < HEADER_LEN:
            return None
        return frames, seq, plain_len, data_at

    @staticmethod
    def _parse_entry(b: bytes):
        """(IndexEntry, frame offset, frame length, frame CRC), or None when damaged."""
        if len(b) < FRAME_ENTRY_LEN or crc32c.crc32c(b[:56]) != _U32.unpack_from(b, 56)[0]:
            return None
        start, end, min_ts, max_ts, trades, others, offset, length, crc = _FRAME_ENTRY.unpack_from(b)
        return IndexEntry(start, end, min_ts, max_ts, trades, others), offset, length, crc

    def read_block(self, i: int) -> tuple[bytes, str | None]:
        """The plain bytes of block `i` and None, or what could be decoded and why not the rest."""
        block = self.blocks[i]
        want = block.entry.end - block.entry.start
        src = _pread_range(self.fd, block.offset, block.offset + block.length)
        if len(src) < block.length:
            return b"", "compressed frame lies past the end of the file (file cut short)"
        if block.crc is not None:
            if crc32c.crc32c(src) != block.crc:
                return b"", "compressed frame fails its CRC; its records are skipped"
            try:
                out = zstandard.ZstdDecompressor().decompress(src, max_output_size=want)
            except zstandard.ZstdError as exc:
                return b"", f"compressed frame does not decode ({exc}); its records are skipped"
            if len(out) != want:
                return b"", (
                    f"compressed frame decodes to {len(out)} bytes, its table entry says {want}; "
                    f"its records are skipped"
                )
            return out, None
        parts, got = [], 0
        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        try:
            while got < want:
                chunk = reader.read(min(1 << 20, want - got))
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
        except zstandard.ZstdError as exc:
            return b"".join(parts)[:want], (
                f"frames after a damaged table entry stop decoding ({exc}); what follows in them is skipped"
            )
        out = b"".join(parts)[:want]
        if len(out) < want:
            return out, "frames after a damaged table entry decode to less than their range"
        return out, None

    def matches_plain(self, plain: bytes) -> bool:
        """Whether this file decodes to exactly `plain` (a sealed segment's bytes)."""
        if not self.header_ok or self.damage or self.plain_len != len(plain) or self.plain_header != plain[:HEADER_LEN]:
            return False
        at = HEADER_LEN
        for i, block in enumerate(self.blocks):
            out, err = self.read_block(i)
            if err or block.entry.start != at or out != plain[block.entry.start : block.entry.end]:
                return False
            at = block.entry.end
        return at == len(plain)


def _resolve_compressions(log_dir: Path) -> list[str]:
    """Where a crash left a segment both plain and compressed, keeps one: the compressed copy when
    it decodes to exactly the plain bytes (the plain copy goes), else the plain one."""
    notes = []
    for seq, plain, compressed in _list_segment_files(log_dir):
        if plain is None or compressed is None:
            continue
        with open(plain, "rb") as f:
            data = _pread_range(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        header = _parse_header(data, plain)
        keep_compressed = False
        if header is not None and header.state == STATE_SEALED and header.published_end <= len(data):
            fd = os.open(compressed, os.O_RDONLY)
            try:
                keep_compressed = _CompressedSegment(fd, compressed, seq).matches_plain(data[: header.published_end])
            except CorruptLogError:
                keep_compressed = False
            finally:
                os.close(fd)
        if keep_compressed:
            plain.unlink(missing_ok=True)
            _index_path(plain).unlink(missing_ok=True)
            notes.append(f"{plain.name}: compression finished (plain copy removed)")
        else:
            compressed.unlink(missing_ok=True)
            notes.append(f"{compressed.name}: incomplete compressed copy removed (the plain segment is kept)")
    return notes


# --- Encoding (with the Rust side's validation) ---------------------------------------------------


def _q(value) -> str:
    """Quotes a value the way the Rust side's error messages do ({:?})."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload


def _utf8(field: str, value) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text (str), not {type(value).__name__}")
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
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif not isinstance(value, str):
        raise ValueError(
            f'{field} must be exact: pass the venue\'s text (e.g. "83680.00") or a decimal.Decimal, '
            f"not {type(value).__name__}"
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
        raise ValueError(f"{field} must be an integer (ns since the Unix epoch), not {type(value).__name__}") from None
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
    if isinstance(trade_id, int) and not isinstance(trade_id, bool):
        trade_id = str(trade_id)  # venues send numeric ids as JSON numbers
    id_b = _text_bytes("trade_id", trade_id, required=True)
    try:
        flags = operator.index(flags)
    except TypeError:
        raise ValueError(f"flags must be an integer, not {type(flags).__name__}") from None
    if not 0 <= flags <= FLAGS_ALL:
        raise ValueError(f"flags {flags:#x} has bits no PumpWatch flag uses (known: 0..=0x3ff)")
    ts_ns = _int64("ts_ns", ts_ns)
    recv_ns = _int64("recv_ns", recv_ns)
    id_num = _canonical_u64(id_b)
    id_text = b"" if id_num is not None else id_b
    fixed = _TRADE.pack(
        KIND_TRADE,
        venue_code,
        side_code,
        len(symbol_b),
        flags,
        len(price_b),
        len(qty_b),
        ts_ns,
        recv_ns,
        id_num or 0,
        len(id_text),
    )
    return _frame(b"".join((fixed, symbol_b, price_b, qty_b, id_text))), ts_ns


_TRADE_FIELDS = ("venue", "symbol", "trade_id", "price", "qty", "side", "ts_ns", "recv_ns")
_MISSING = object()


def _trade_rows(trades):
    """The batch as tuples in _encode_trade's argument order (flags defaulting to 0)."""
    if isinstance(trades, pa.RecordBatch):
        trades = pa.Table.from_batches([trades])
    if isinstance(trades, pa.Table):
        missing = [name for name in _TRADE_FIELDS if name not in trades.column_names]
        if missing:
            raise InvalidTradeError(
                f"the table has no column {', '.join(map(_q, missing))}; a trade table has the columns "
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
        KIND_MARKER,
        venue_code,
        marker_code,
        len(symbol_b),
        len(from_b),
        len(to_b),
        len(detail_b),
        _int64("ts_ns", ts_ns),
        _int64("from_ts_ns", from_ts_ns),
        _int64("to_ts_ns", to_ts_ns),
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


class _RecoveryReport:
    """What recovery found and did when the writer opened the directory (as the Rust writer's)."""

    def __init__(self):
        self.segments = 0
        self.records_in_active = 0
        self.truncated: list[dict] = []
        self.saved_to: list[Path] = []
        self.damaged: list[dict] = []
        self.sealed: list[str] = []
        self.headers_repaired: list[str] = []
        self.compression: list[str] = []

    def as_dict(self) -> dict:
        return {
            "segments": self.segments,
            "records_in_active": self.records_in_active,
            "truncated": list(self.truncated),
            "damaged": list(self.damaged),
            "saved_to": list(self.saved_to),
            "sealed": list(self.sealed),
            "headers_repaired": list(self.headers_repaired),
            "compression": list(self.compression),
        }


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
        # What the seal will vouch for: the records and the CRC chain of their frame CRCs.
        self.records = 0
        self.crc_chain = 0

    @property
    def index_path(self) -> Path:
        return _index_path(self.path)

    @property
    def _tmp_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    # Creation in two steps, so that a batch can reserve all its space before writing anything.

    @classmethod
    def reserve(cls, log_dir: Path, seq: int, needed_end: int, max_bytes: int) -> _ActiveSegment:
        """Creates the segment under a temporary name with its header and space for `needed_end`."""
        path = log_dir / _segment_name(seq)
        created_ns = time.time_ns()
        fd = os.open(path.with_name(path.name + ".tmp"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        seg = cls(path, seq, fd, created_ns, HEADER_LEN, 0)
        try:
            _pwrite_all(fd, _pack_header(seq, created_ns, STATE_ACTIVE, HEADER_LEN), 0)
            seg.allocated = HEADER_LEN
            seg.ensure_allocated(needed_end, max_bytes)
        except BaseException:
            seg.discard()
            raise
        return seg

    def discard(self) -> None:
        """Drops a reserved segment that was never activated."""
        os.close(self.fd)
        os.unlink(self._tmp_path)

    def activate(self) -> None:
        """Gives a reserved segment its real name, visible to readers and to recovery."""
        os.replace(self._tmp_path, self.path)
        _fsync_dir(self.path.parent)
        self._start_index([])

    @classmethod
    def recover(cls, path: Path, seq: int, data_dir: Path, report: _RecoveryReport) -> _ActiveSegment:
        """Opens a segment left active: keeps every valid record, skips (and reports) damaged spans
        between them, cuts a torn tail exactly after the last valid record (saving the cut bytes
        under recovered/), repairs a damaged header, publishes what is kept and rebuilds the index."""
        name = path.name
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_LEN:
                os.ftruncate(fd, HEADER_LEN)
                size = HEADER_LEN
            header = _parse_header(os.pread(fd, HEADER_LEN, 0), path)
            published = size  # a damaged header publishes nothing we can trust
            if header is None:
                header = SegmentHeader(seq, time.time_ns(), STATE_ACTIVE, HEADER_LEN)
                _pwrite_all(fd, _pack_header(*header), 0)
                report.headers_repaired.append(name)
            else:
                published = min(max(header.published_end, HEADER_LEN), size)
            blocks = _BlockIndex()
            entries = []
            records = 0
            kept = []
            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
                # The whole file, not just up to the published end: complete records written just
                # before a crash, after the last header update, are kept.
                walk = FrameWalk(view, HEADER_LEN, size, published=published)
                for start, end, record in walk:
                    kept.append(start)
                    records += 1
                    entry = blocks.add(end, record.ts_ns if type(record) is TradeRecord else None)
                    if entry:
                        entries.append(entry)
                cut = view[walk.torn[0] : walk.torn[0] + min(walk.torn[1], RECOVERED_KEEP_MAX)] if walk.torn else b""
                crc_chain = _chain(view, kept)
            for offset, length, _ in walk.damaged:
                report.damaged.append(
                    _damage(name, offset, length, "damaged bytes between valid records, kept in place and skipped")
                )
            if walk.torn:
                offset, length, _ = walk.torn
                report.truncated.append(
                    _damage(name, offset, length, "torn or corrupt tail after the last valid record, cut off")
                )
                saved = _save_cut(data_dir / "recovered", name, offset, cut)
                if saved:
                    report.saved_to.append(saved)
            # Cut everything after the last valid record: the space preallocated again later reads
            # as zeros, so the next append cannot be confused with left-over garbage.
            end = walk.end
            os.ftruncate(fd, end)
            _pwrite_all(fd, _U64.pack(end), PUBLISHED_END_AT)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        report.records_in_active = records
        seg = cls(path, seq, fd, header.created_ns, end, end)
        seg.blocks = blocks
        seg.records, seg.crc_chain = records, crc_chain
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
        """Preallocates in PREALLOC_CHUNK steps (not past the segment's size limit) so that the
        bytes after the last record read as zeros and appends cannot run out of space midway.
        When the disk cannot give a whole step, it gives what this append needs: a nearly full
        disk is used to its last block before appends fail."""
        if needed_end <= self.allocated:
            return
        step_end = max(needed_end, min(_round_up(needed_end, PREALLOC_CHUNK), max_bytes))
        least_end = _round_up(needed_end, PAGE)
        try:
            self._allocate(step_end)
        except DiskFullError:
            if least_end >= step_end:
                raise
            self._allocate(least_end)

    def _allocate(self, new_end: int) -> None:
        try:
            os.posix_fallocate(self.fd, self.allocated, new_end - self.allocated)
        except OSError as exc:
            if exc.errno in _DISK_FULL_ERRNOS:
                raise _disk_full(exc, self.path, new_end - self.allocated) from exc
            raise
        self.allocated = new_end

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
            if exc.errno in _DISK_FULL_ERRNOS:
                raise _disk_full(exc, self.path) from exc
            raise
        # Release order: the records are in the file before the header says they are.
        end = start + len(chunk)
        _pwrite_all(self.fd, _U64.pack(end), PUBLISHED_END_AT)
        self.end = end
        finished = []
        offset = start
        starts = []
        for size, ts in zip(frame_sizes, trade_ts, strict=False):
            starts.append(offset - start)
            offset += size
            entry = self.blocks.add(offset, ts)
            if entry:
                finished.append(entry)
        self.records += len(starts)
        self.crc_chain = _chain(chunk, starts, self.crc_chain)
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
        _pwrite_all(self.fd, _pack_sealed_header(self.seq, self.created_ns, self.end, self.records, self.crc_chain), 0)
        os.fsync(self.fd)
        last = self.blocks.finish()
        if last:
            self.entries.append(last)
            self.blocks = _BlockIndex(last.end)
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


def _save_cut(recovered_dir: Path, segment_name: str, offset: int, data: bytes) -> Path | None:
    """Keeps bytes cut off a torn tail for forensics. Best effort: a full disk must not stop the
    writer from opening, and the bytes are not records."""
    target = recovered_dir / f"{segment_name}.{offset}.{time.time_ns()}.torn"
    try:
        recovered_dir.mkdir(exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(recovered_dir)
    except OSError:
        return None
    return target


def compress_segment(log_dir, seq: int, level: int = 3) -> bool:
    """Compresses sealed segment `seq` of `log_dir` into `.pwzst` exactly as docs/FORMAT.md says
    (the reference for the Rust writer's background compression): one zstd frame per index block
    rebuilt from the records, written under a temporary name, synced, checked against the plain
    bytes, renamed; then the plain segment and its index are removed. Returns False when there is
    nothing to do (not sealed, already compressed, gone)."""
    log_dir = Path(log_dir)
    plain_path = log_dir / _segment_name(seq)
    final = log_dir / f"{seq:020d}.{COMPRESSED_EXT}"
    if final.exists():
        return False
    try:
        with open(plain_path, "rb") as f:
            data = _pread_range(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        return False
    header = _parse_header(data, plain_path)
    if (
        header is None
        or header.state != STATE_SEALED
        or header.seq != seq
        or header.published_end != len(data)
        or _seal_of(data, plain_path) == SEAL_ALTERED
    ):
        # A file shorter or longer than its published end, or a seal failing its CRC, is damage
        # `verify` reports: compressing up to that end could drop bytes. Leave it plain.
        return False
    data = data[: header.published_end]
    blocks = _BlockIndex()
    entries = []
    for _, end, record in FrameWalk(data, HEADER_LEN, len(data)):
        entry = blocks.add(end, record.ts_ns if type(record) is TradeRecord else None)
        if entry:
            entries.append(entry)
    last = blocks.finish()
    if last:
        entries.append(last)
    covered = entries[-1].end if entries else HEADER_LEN
    if covered < len(data):
        # Bytes after the last valid record are kept too, in a block no query reads.
        entries.append(IndexEntry(covered, len(data), I64_MAX, I64_MIN, 0, 0))
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    data_at = FRAME_TABLE_AT + FRAME_ENTRY_LEN * len(entries)
    frames, table, at = [], [], data_at
    for e in entries:
        frame = compressor.compress(data[e.start : e.end])
        body = _FRAME_ENTRY.pack(*e, at, len(frame), crc32c.crc32c(frame))
        table.append(body + _U32.pack(crc32c.crc32c(body)) + bytes(4))
        frames.append(frame)
        at += len(frame)
    head = _ZHEADER.pack(
        COMPRESSED_MAGIC, COMPRESSED_VERSION, ZHEADER_LEN, len(entries), seq, len(data), data_at, level
    )
    head += _U32.pack(crc32c.crc32c(head)) + bytes(ZHEADER_LEN - len(head) - 4)
    tmp = log_dir / f"{final.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(b"".join([head, data[:HEADER_LEN], *table, *frames]))
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            if not _CompressedSegment(fd, tmp, seq).matches_plain(data):
                raise CorruptLogError(_format_error(tmp, "it does not read back as the plain segment it was made from"))
        finally:
            os.close(fd)
        if not plain_path.exists():
            return False  # deleted by retention meanwhile: do not bring it back
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(log_dir)
    plain_path.unlink(missing_ok=True)
    _index_path(plain_path).unlink(missing_ok=True)
    _fsync_dir(log_dir)
    return True


# --- Reading --------------------------------------------------------------------------------------


def _readable_end(fd: int, path: Path, size: int) -> int:
    """Where readers stop: the published end; the whole file when the header is damaged (the
    records are still there, and each frame is checked anyway)."""
    head = os.pread(fd, HEADER_LEN, 0)
    header = _parse_header(head, path)
    if header is None or _seal_of(head, path) == SEAL_ALTERED:
        # A seal that fails its CRC vouches for no end: read to the end of the file, so that a
        # lowered end hides nothing.
        return size
    return max(HEADER_LEN, min(header.published_end, size))


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
            # Compressed since the listing, or removed by retention.
            path = log_dir / f"{seq:020d}.{COMPRESSED_EXT}"
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
        if _is_compressed(path):
            try:
                yield from _compressed_records(fd, path, seq, wants_block)
            finally:
                os.close(fd)
            continue
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                continue
            limit = _readable_end(fd, path, size)
            entries = _read_index(_index_path(path), limit)
            wanted = [(e.start, e.end) for e in entries if wants_block is None or wants_block(e)]
            tail_start = entries[-1].end if entries else HEADER_LEN
            if tail_start < limit:
                wanted.append((tail_start, limit))
            ranges: list[list[int]] = []
            for start, stop in wanted:
                if ranges and ranges[-1][1] == start:
                    ranges[-1][1] = stop  # adjacent blocks: one read, one walk
                else:
                    ranges.append([start, stop])
            for start, stop in ranges:
                buf = _pread_range(fd, start, stop)
                for _, _, record in FrameWalk(buf, start, start + len(buf), base=start):
                    yield record
        finally:
            os.close(fd)


def _compressed_records(fd: int, path: Path, seq: int, wants_block):
    """The records of a compressed segment's blocks that `wants_block` picks, in log order; a frame
    that does not decode yields nothing (`verify` reports it)."""
    segment = _CompressedSegment(fd, path, seq)
    for i, block in enumerate(segment.blocks):
        if wants_block is not None and not wants_block(block.entry):
            continue
        data, _ = segment.read_block(i)
        start = block.entry.start
        for _, _, record in FrameWalk(data, start, start + len(data), base=start):
            yield record


def _as_set(values) -> set | None:
    if values is None:
        return None
    if isinstance(values, str):
        return {values}
    return set(values)


def _window(start_ns, end_ns) -> tuple[int, int]:
    # The same defaults as the Rust path: the end bound stays exclusive.
    return (I64_MIN if start_ns is None else int(start_ns), I64_MAX if end_ns is None else int(end_ns))


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=False)) if rows else [()] * len(schema)
    return pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=False)], schema=schema
    )


def _holds_others(entry: IndexEntry) -> bool:
    return entry.others > 0


# --- The store ------------------------------------------------------------------------------------


class Store:
    """A PumpWatch data directory: one writer (holding <dir>/LOCK) or any number of readers.

    `Store(path)` opens it for writing; `Store.open_readonly(path)` for reading alongside a writer
    in another process. Once `append_*` returns, a crash of this process loses nothing of the
    batch; `fsync_interval` (seconds, 0 = every batch) bounds what a power loss can take. Group
    commit runs on appends: a batch is fsynced when `fsync_interval` has passed since the last
    fsync, so the last batch before a quiet period is fsynced by the next append, `flush()` or
    `close()`.
    """

    def __init__(
        self, path, *, fsync_interval: float = 1.0, segment_span_s: float = 3600.0, segment_max_bytes: int = 1 << 30
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
        self._init_paths(path)
        self._writable = True
        self._fsync_interval = fsync_interval
        self._span_ns = int(segment_span_s * 1e9)
        self._max_bytes = segment_max_bytes
        self._active: _ActiveSegment | None = None
        self._dirty = False
        self._last_sync = time.monotonic()
        self._recovery = _RecoveryReport()
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
        self._recovery.compression = _resolve_compressions(self._log_dir)
        segments = _list_segments(self._log_dir)
        self._recovery.segments = len(segments)
        for seq, path in segments:
            if _is_compressed(path):
                continue  # only sealed segments are ever compressed
            with open(path, "rb") as f:
                header = _parse_header(f.read(HEADER_LEN), path)
            if header is not None and header.state == STATE_SEALED:
                continue
            segment = _ActiveSegment.recover(path, seq, self._dir, self._recovery)
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
        _fsync_dir(self._log_dir)

    def _create_segment(self, seq: int, needed_end: int) -> _ActiveSegment:
        segment = _ActiveSegment.reserve(self._log_dir, seq, needed_end, self._max_bytes)
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
        trade_ts = []
        for row, values in enumerate(_trade_rows(trades)):
            try:
                frame, ts_ns = _encode_trade(*values)
            except ValueError as exc:
                raise InvalidTradeError(f"row {row} of the batch: {exc}") from None
            frames.append(frame)
            trade_ts.append(ts_ns)
        if frames:
            self._append(frames, trade_ts)
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
        return self._active.seq

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
            frame = _encode_marker(kind, venue, symbol, ts_ns, from_ts_ns, to_ts_ns, from_id, to_id, detail)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self._append([frame], [None])

    def append_quarantined(self, venue: str | None, recv_ns: int, reason: str, raw: bytes) -> None:
        """Keeps a frame that could not be parsed, raw, so that nothing that reached us is dropped."""
        try:
            frame = _encode_quarantined(venue, recv_ns, reason, raw)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self._append([frame], [None])

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
        fill = self._active.end
        too_old = time.time_ns() - self._active.created_ns >= self._span_ns
        plan = []
        for first, stop, nbytes in pieces:
            new = fill > HEADER_LEN and (too_old or fill + nbytes > self._max_bytes)
            if new:
                fill, too_old = HEADER_LEN, False
            plan.append((first, stop, nbytes, new))
            fill += nbytes
        return plan

    def _append(self, frames: list[bytes], trade_ts: list[int | None]) -> None:
        with self._mutex:
            self._check_writable()
            sizes = [len(f) for f in frames]
            plan = self._plan(sizes)
            # Reserve every byte the batch needs before writing any: running out of space then
            # leaves the store exactly as it was.
            active_end = self._active.end
            new_segment_ends: list[int] = []
            for _, _, nbytes, new in plan:
                if new:
                    new_segment_ends.append(HEADER_LEN + nbytes)
                elif new_segment_ends:
                    new_segment_ends[-1] += nbytes
                else:
                    active_end += nbytes
            reserved: list[_ActiveSegment] = []
            try:
                self._active.ensure_allocated(active_end, self._max_bytes)
                for seq, needed_end in enumerate(new_segment_ends, self._active.seq + 1):
                    reserved.append(_ActiveSegment.reserve(self._log_dir, seq, needed_end, self._max_bytes))
            except OSError as exc:
                for segment in reserved:
                    segment.discard()
                if exc.errno in _DISK_FULL_ERRNOS and not isinstance(exc, DiskFullError):
                    raise _disk_full(exc, self._log_dir) from exc
                raise
            pending = iter(reserved)
            for first, stop, _, new in plan:
                if new:
                    self._switch_to(next(pending))
                self._active.write(b"".join(frames[first:stop]), sizes[first:stop], trade_ts[first:stop])
            self._dirty = True
            if self._fsync_interval == 0 or time.monotonic() - self._last_sync >= self._fsync_interval:
                self._sync()

    def _switch_to(self, segment: _ActiveSegment) -> None:
        # The new segment is named before the old one is sealed: a crash in between leaves two
        # active segments, and opening seals the older one.
        segment.activate()
        old, self._active = self._active, segment
        old.seal()

    def roll(self) -> None:
        """Seals the active segment now and starts a new one."""
        with self._mutex:
            self._check_writable()
            self._switch_to(_ActiveSegment.reserve(self._log_dir, self._active.seq + 1, HEADER_LEN, self._max_bytes))
            _fsync_dir(self._log_dir)

    def _sync(self) -> None:
        if self._dirty:
            self._active.sync()
        self._dirty = False
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
                    f"unknown venue {', '.join(map(_q, sorted(unknown)))}; the venues are: {', '.join(VENUES)}"
                )
        symbol_set = _as_set(symbols)
        skip_flags = 0 if include_non_trades else FLAG_NON_TRADE
        rows = []
        with self._mutex:
            self._check_open()
            for record in _read_records(self._log_dir, lambda e: e.overlaps(start_ns, end_ns)):
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
                for r in _read_records(self._log_dir, _holds_others)
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
                for r in _read_records(self._log_dir, _holds_others)
                if type(r) is QuarantinedRecord and start_ns <= r.recv_ns < end_ns
            ]

    # -- lifetime

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed; open it again to append or query")

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
        with self._mutex:
            if self._closed:
                return
            try:
                if self._writable:
                    if seal and self._active.end > HEADER_LEN:
                        self.roll()
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
        return f"<pumpwatch.purepy.Store {self.path!r} {mode}>"


# --- verify ---------------------------------------------------------------------------------------


def _writer_running(data_dir: Path) -> bool:
    """Whether a writer holds the directory's lock now (probed with a shared lock, released at once)."""
    try:
        fd = os.open(data_dir / "LOCK", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe
    return False


def _found(report: dict) -> int:
    return len(report["damaged"]) + len(report["torn_tail"]) + len(report["headers"])


def _check_totals(report: dict, name: str, seal: Seal, records: int, chain: int, found_before: int) -> None:
    """Names how the records differ from what the seal says, unless damage already reported in
    the segment accounts for it."""
    if _found(report) > found_before:
        return
    span = max(0, seal.published_end - HEADER_LEN)
    if records != seal.records:
        report["damaged"].append(
            _damage(
                name,
                HEADER_LEN,
                span,
                (
                    f"[seal-totals] the seal counts {seal.records} records, the segment holds {records} valid ones: "
                    f"records were lost or added after sealing"
                ),
            )
        )
    elif chain != seal.crc_chain:
        report["damaged"].append(
            _damage(
                name,
                HEADER_LEN,
                span,
                (
                    "[seal-totals] the records' CRCs do not chain to the seal's checksum: records were replaced "
                    "after sealing"
                ),
            )
        )


def _block_holds(data, base: int, e: IndexEntry) -> bool:
    """Whether the records of block `e` (damage skipped, as queries skip it) are what the entry
    says: counts and trade time range. `data[0]` is plain offset `base`."""
    if e.start < max(HEADER_LEN, base) or e.end <= e.start or e.end - base > len(data):
        return False
    trades = others = 0
    lo, hi = I64_MAX, I64_MIN
    for _, _, record in FrameWalk(data, e.start, e.end, base=base):
        if type(record) is TradeRecord:
            trades += 1
            lo, hi = min(lo, record.ts_ns), max(hi, record.ts_ns)
        else:
            others += 1
    return (trades, others, lo, hi) == (e.trades, e.others, e.min_ts, e.max_ts)


def _verify_compressed(report: dict, counts: dict, seq: int, path: Path) -> None:
    """`verify` of a compressed segment: header, seal, frame table (against the records), each
    frame's CRC and zstd checksum, and every record inside. Offsets are positions in the plain
    segment (but for bytes after the last frame, which are in the compressed file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # removed by retention since the listing
    try:
        segment = _CompressedSegment(fd, path, seq)
        report["segments"] += 1
        found_before = _found(report)
        name = path.name
        for offset, length, reason in segment.damage:
            report["headers"].append(_damage(name, offset, length, reason))
        seal = _seal_of(segment.plain_header, path) if len(segment.plain_header) == HEADER_LEN else None
        if seal == SEAL_ALTERED:
            report["headers"].append(_damage(name, 36, 28, "[seal] the seal in the copied plain header fails its CRC"))
            seal = None
        elif seal is not None and seal.published_end != segment.plain_len:
            report["headers"].append(
                _damage(
                    name,
                    min(HEADER_LEN, seal.published_end),
                    abs(segment.plain_len - seal.published_end),
                    f"[seal] the seal says the segment ends at {seal.published_end}, the compressed file holds "
                    f"{segment.plain_len} bytes of it",
                )
            )
        if segment.blocks:
            frames_end = segment.blocks[-1].offset + segment.blocks[-1].length
            if frames_end < segment.file_len:
                report["damaged"].append(
                    _damage(
                        name,
                        frames_end,
                        segment.file_len - frames_end,
                        "[extended] bytes after the last compressed frame (offset and length in the compressed "
                        "file): no reader reads them",
                    )
                )
        valid_end = HEADER_LEN
        records = chain = 0
        last = len(segment.blocks) - 1
        for i, block in enumerate(segment.blocks):
            data, err = segment.read_block(i)
            start = block.entry.start
            if err:
                report["damaged"].append(
                    _damage(
                        name,
                        start + len(data),
                        block.entry.end - start - len(data),
                        f"[frame] {err} (offset and length in the decompressed segment)",
                    )
                )
            walk = FrameWalk(data, start, start + len(data), base=start)
            offsets = []
            for offset, end, record in walk:
                offsets.append(offset - start)
                report["records"] += 1
                report[counts[type(record)]] += 1
                valid_end = end
            records += len(offsets)
            chain = _chain(data, offsets, chain)
            for offset, length, reason in walk.damaged:
                report["damaged"].append(_damage(name, offset, length, reason))
            if walk.torn:
                offset, length, reason = walk.torn
                if i == last:
                    report["torn_tail"].append(
                        _damage(
                            name, offset, length, f"{reason}: invalid bytes after the last valid record of the segment"
                        )
                    )
                else:
                    report["damaged"].append(_damage(name, offset, length, reason))
            if err is None and block.crc is not None and not _block_holds(data, start, block.entry):
                report["damaged"].append(
                    _damage(
                        name,
                        start,
                        block.entry.end - start,
                        (
                            f"[index] frame table entry {i} does not match the records of its block (counts, times or bounds)"
                        ),
                    )
                )
        report["bytes"] += valid_end
        if isinstance(seal, Seal):
            _check_totals(report, name, seal, records, chain, found_before)
    finally:
        os.close(fd)


def _verify_plain(report: dict, counts: dict, name: str, path: Path, data: bytes, live: bool) -> None:
    """`verify` of a plain segment: header and seal, file size against the published end, the
    index and every record. `live`: the writer is at work on this segment."""
    found_before = _found(report)
    damaged = report["damaged"]
    size = len(data)
    stop = published = size
    seal = None
    header = _parse_header(data, path)
    if header is None:
        report["headers"].append(
            _damage(
                name,
                0,
                HEADER_LEN,
                "[header] segment header damaged (magic or CRC wrong); the writer repairs it on open",
            )
        )
    else:
        published = header.published_end
        if header.state == STATE_SEALED:
            seal = _seal_of(data, path)
            if seal == SEAL_ALTERED:
                report["headers"].append(
                    _damage(
                        name,
                        36,
                        28,
                        (
                            "[seal] the seal (state, published end, totals) fails its CRC: the published end is not "
                            "trusted and the whole file is read"
                        ),
                    )
                )
                published = size
                seal = None
            if published > size:
                damaged.append(
                    _damage(
                        name,
                        size,
                        published - size,
                        "[truncated] sealed segment file ends before its published end (cut short)",
                    )
                )
            elif published < size:
                damaged.append(
                    _damage(
                        name,
                        published,
                        size - published,
                        ("[extended] bytes after the sealed segment's published end: no reader reads them"),
                    )
                )
            stop = min(published, size)
        elif live:
            stop = min(published, size)  # beyond the published end the writer is at work
        published = min(published, stop)
    walk = FrameWalk(data, HEADER_LEN, stop, published=published)
    offsets = []
    for offset, _, record in walk:
        offsets.append(offset)
        report["records"] += 1
        report[counts[type(record)]] += 1
    for offset, length, reason in walk.damaged:
        damaged.append(_damage(name, offset, length, reason))
    report["bytes"] += walk.end
    if walk.torn:
        offset, length, reason = walk.torn
        report["torn_tail"].append(
            _damage(
                name,
                offset,
                length,
                (
                    f"{reason}: invalid bytes after the last valid record (torn write); the writer truncates them on open"
                ),
            )
        )
    elif walk.end < published:
        # Zeros where the published end says records are: they were there once.
        damaged.append(
            _damage(
                name, walk.end, published - walk.end, "[length] the records end (zero bytes) before the published end"
            )
        )
    if isinstance(seal, Seal):
        _check_totals(report, name, seal, len(offsets), _chain(data, offsets), found_before)
    explained = [(o, o + n) for o, n, _ in walk.damaged] + (
        [(walk.torn[0], walk.torn[0] + walk.torn[1])] if walk.torn else []
    )
    explained.append((walk.end, max(published, walk.end)))
    for i, e in enumerate(_read_index(_index_path(path), stop)):
        if any(a < e.end and b > e.start for a, b in explained):
            continue
        if not _block_holds(data[:stop], 0, e):
            damaged.append(
                _damage(
                    name,
                    e.start,
                    e.end - e.start,
                    (
                        f"[index] index (.pwidx) entry {i} does not match the records of its block (counts, times or bounds)"
                    ),
                )
            )


def verify(path) -> dict:
    """Walks every record of every segment, read-only, and reports what it found, in the shape
    the Rust `pumpwatch.verify` gives (docs/FORMAT.md, "What verify checks").

    Sealed segments are walked up to their published end (the whole file when their seal fails
    its CRC), the active segment to the end of its file, as the writer's recovery would, so that a
    torn tail recovery would cut is reported; while a writer runs, only up to its published end
    (beyond it the writer is at work). Torn tails are in `torn_tail`; damaged spans, a sealed file
    shorter or longer than its published end, records that differ from the seal or from an index
    entry in `damaged`; damaged segment headers and seals in `headers`; `bytes` counts the bytes of
    valid records. Each reason starts with the tag of the rule broken (`[crc]`, `[side]`, ...).
    """
    data_dir = Path(path)
    if not data_dir.is_dir():
        raise InvalidInputError(f"{data_dir} is not a PumpWatch data directory (it does not exist)")
    writer_running = _writer_running(data_dir)
    segments = _list_segments(data_dir / "log")
    report = {
        "segments": 0,
        "records": 0,
        "trades": 0,
        "markers": 0,
        "quarantined": 0,
        "bytes": 0,
        "damaged": [],
        "torn_tail": [],
        "headers": [],
        "writer_running": writer_running,
        "ok": True,
    }
    counts = {TradeRecord: "trades", MarkerRecord: "markers", QuarantinedRecord: "quarantined"}
    damaged = report["damaged"]
    for seq, seg_path in segments:
        name = seg_path.name
        is_last = seq == segments[-1][0]
        if not _is_compressed(seg_path) and not seg_path.exists():
            seg_path = seg_path.with_suffix("." + COMPRESSED_EXT)  # compressed since the listing
        if _is_compressed(seg_path):
            _verify_compressed(report, counts, seq, seg_path)
            continue
        with open(seg_path, "rb") as f:
            data = _pread_range(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        if not data:
            report["headers"].append(_damage(name, 0, 0, "[header] empty segment file"))
            continue
        report["segments"] += 1
        _verify_plain(report, counts, name, seg_path, data, writer_running and is_last)
    report["ok"] = not damaged and not report["torn_tail"] and not report["headers"]
    return report
