"""Reading the log in plain Python: every record readers can see, through the sparse index.

Mirrors the query side of `rust/core/src/log/reader.rs`: segments up to their published end,
only the index blocks a query wants, compressed segments block by block.
"""

from __future__ import annotations

import os
from pathlib import Path

from .compress import CompressedSegment
from .index import read_index
from .scan import FrameWalk
from .segment import (
    HEADER_LEN,
    SEAL_ALTERED,
    compressed_file_name,
    index_path,
    is_compressed,
    list_segments,
    parse_header,
    pread_range,
    seal_of,
)


def _readable_end(fd: int, path: Path, size: int) -> int:
    """Where readers stop: the published end; the whole file when the header is damaged (the
    records are still there, and each frame is checked anyway)."""
    head = os.pread(fd, HEADER_LEN, 0)
    header = parse_header(head, path)
    if header is None or seal_of(head, path) == SEAL_ALTERED:
        # A seal that fails its CRC vouches for no end: read to the end of the file, so that a
        # lowered end hides nothing.
        return size
    return max(HEADER_LEN, min(header.published_end, size))


def read_records(log_dir: Path, wants_block=None):
    """Every record readers can see, in log order: each segment up to its published end.

    `wants_block(entry)` picks the indexed blocks to read (None: all); records after the last
    valid index entry are always read. Directory, headers and indexes are read afresh each call,
    so a reader in another process sees what the writer has published since.
    """
    for seq, path in list_segments(log_dir):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            # Compressed since the listing, or removed by retention.
            path = log_dir / compressed_file_name(seq)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
        if is_compressed(path):
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
            entries = read_index(index_path(path), limit)
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
                buf = pread_range(fd, start, stop)
                for _, _, record in FrameWalk(buf, start, start + len(buf), base=start):
                    yield record
        finally:
            os.close(fd)


def _compressed_records(fd: int, path: Path, seq: int, wants_block):
    """The records of a compressed segment's blocks that `wants_block` picks, in log order; a frame
    that does not decode yields nothing (`verify` reports it)."""
    segment = CompressedSegment(fd, path, seq)
    for i, block in enumerate(segment.blocks):
        if wants_block is not None and not wants_block(block.entry):
            continue
        data, _ = segment.read_block(i)
        start = block.entry.start
        for _, _, record in FrameWalk(data, start, start + len(data), base=start):
            yield record
