"""Segment files in plain Python: naming, the 64-byte header and its seal, and file I/O helpers.

Mirrors `rust/core/src/log/segment.rs`. The names of every file of a segment (`.pwlog`, `.pwidx`,
`.pwzst`) are made and listed here only.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import NamedTuple

import crc32c

from ...errors import CorruptLogError

FORMAT_VERSION = 2  # 2 adds the seal of a sealed segment (header bytes 48..64); 1 reads as before
SEAL_VERSION = 2
SEGMENT_MAGIC = b"PUMPWLOG"
HEADER_LEN = 64
STATE_ACTIVE = 0
STATE_SEALED = 1
PUBLISHED_END_AT = 40

# Compressed sealed segments (docs/FORMAT.md "Compressed segment").
COMPRESSED_EXT = "pwzst"

# Segment header: bytes 0..32 are covered by the CRC at 32; state and published end change in place.
_HEADER_ID = struct.Struct("<8sHHIQq")
_HEADER_REST = struct.Struct("<IIQ16x")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")

_SEGMENT_NAME = re.compile(r"^(\d{20})\.(pwlog|pwzst)$")


class SegmentHeader(NamedTuple):
    seq: int
    created_ns: int
    state: int
    published_end: int


def pack_header(seq: int, created_ns: int, state: int, published_end: int) -> bytes:
    ident = _HEADER_ID.pack(SEGMENT_MAGIC, FORMAT_VERSION, HEADER_LEN, 0, seq, created_ns)
    return ident + _HEADER_REST.pack(crc32c.crc32c(ident), state, published_end)


_SEAL = struct.Struct("<QI")  # records, CRC chain at 48; the seal's CRC of bytes 0..60 at 60


def pack_sealed_header(seq: int, created_ns: int, published_end: int, records: int, crc_chain: int) -> bytes:
    """A sealed segment's header: state 1, the published end and totals under the seal's CRC."""
    head = pack_header(seq, created_ns, STATE_SEALED, published_end)[:48] + _SEAL.pack(records, crc_chain)
    return head + _U32.pack(crc32c.crc32c(head))


class Seal(NamedTuple):
    published_end: int
    records: int
    crc_chain: int


SEAL_ALTERED = "altered"


def seal_of(data: bytes, path) -> Seal | str | None:
    """The seal of a segment header: a Seal; None when the segment is not sealed (or its header
    is damaged) or was sealed by format 1, which had none; SEAL_ALTERED when the seal fails its
    CRC (its end and totals are not trusted)."""
    header = parse_header(data, path)
    if header is None or header.state != STATE_SEALED or _U16.unpack_from(data, 8)[0] < SEAL_VERSION:
        return None
    if crc32c.crc32c(data[:60]) != _U32.unpack_from(data, 60)[0]:
        return SEAL_ALTERED
    records, chain = _SEAL.unpack_from(data, 48)
    return Seal(header.published_end, records, chain)


def chain_frames(buf, offsets, chain: int = 0) -> int:
    """Folds the frames at `offsets` of `buf` into a seal's CRC chain (their CRC fields, in order)."""
    return crc32c.crc32c(b"".join(buf[o + 4 : o + 8] for o in offsets), chain)


def parse_header(data: bytes, path) -> SegmentHeader | None:
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
            format_error(
                path,
                f"it was written by a newer PumpWatch (format {version}, this one reads up to "
                f"{FORMAT_VERSION}); upgrade PumpWatch",
            )
        )
    return SegmentHeader(seq, created_ns, state, published_end)


def format_error(path, detail: str) -> str:
    return (
        f"{path} is not a readable PumpWatch log file: {detail}; move it out of the data directory "
        f"or run `pumpwatch verify` to see what is damaged"
    )


def segment_file_name(seq: int) -> str:
    return f"{seq:020d}.pwlog"


def compressed_file_name(seq: int) -> str:
    """The name of segment `seq` once compressed (docs/FORMAT.md "Compressed segment")."""
    return f"{seq:020d}.{COMPRESSED_EXT}"


def index_path(segment_path: Path) -> Path:
    return segment_path.with_suffix(".pwidx")


def list_segment_files(log_dir: Path) -> list[tuple[int, Path | None, Path | None]]:
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


def list_segments(log_dir: Path) -> list[tuple[int, Path]]:
    """(sequence number, path) of every segment, oldest first: the plain file when there is one,
    else the compressed one (`is_compressed` tells which)."""
    # One of the two is always there: a listing names only files it found.
    return [
        (seq, path)
        for seq, plain, compressed in list_segment_files(log_dir)
        if (path := plain or compressed) is not None
    ]


def is_compressed(path: Path) -> bool:
    return path.suffix == "." + COMPRESSED_EXT


def pread_range(fd: int, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the file, fewer if it is shorter (a concurrent truncation)."""
    parts = []
    while start < stop:
        data = os.pread(fd, min(stop - start, 1 << 30), start)
        if not data:
            break
        parts.append(data)
        start += len(data)
    return b"".join(parts)


def pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def publish_end(fd: int, end: int) -> None:
    """Writes the published end into the header in place: readers read records up to it."""
    pwrite_all(fd, _U64.pack(end), PUBLISHED_END_AT)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
