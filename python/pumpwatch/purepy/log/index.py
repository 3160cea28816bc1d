"""The sparse time index in plain Python (`.pwidx`): one entry per ~64 KiB block of records.

Mirrors `rust/core/src/log/index.rs`. The index is a hint: an entry that fails its CRC or does not
chain is ignored and the records are scanned instead.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import crc32c

from .record import I64_MAX, I64_MIN
from .segment import HEADER_LEN

INDEX_MAGIC = b"PWINDEX1"
INDEX_HEADER_LEN = 16
INDEX_ENTRY_LEN = 48
BLOCK_BYTES = 64 << 10

_INDEX_HEADER = struct.Struct("<8sHHI")
_INDEX_BODY = struct.Struct("<QQqqII")
_INDEX_TAIL = struct.Struct("<II")


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


def pack_entry(e: IndexEntry) -> bytes:
    body = _INDEX_BODY.pack(*e)
    return body + _INDEX_TAIL.pack(crc32c.crc32c(body), 0)


_INDEX_FILE_HEADER = _INDEX_HEADER.pack(INDEX_MAGIC, 1, INDEX_ENTRY_LEN, 0)


class BlockIndex:
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


def read_index(path: Path, limit: int) -> list[IndexEntry]:
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


def write_index(path: Path, entries: list[IndexEntry]) -> None:
    """Replaces the index atomically, so a concurrent reader sees the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_INDEX_FILE_HEADER + b"".join(map(pack_entry, entries)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
