"""`verify` in plain Python: walks every record of a data directory, read-only, and reports.

Mirrors `verify` of `rust/core/src/log/reader.rs` (docs/FORMAT.md, "What verify checks"), and
gives the report in the same shape.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError
from .compress import CompressedSegment
from .index import IndexEntry, read_index
from .record import I64_MAX, I64_MIN, MarkerRecord, QuarantinedRecord, TradeRecord
from .scan import FrameWalk, damage_entry
from .segment import (
    COMPRESSED_EXT,
    HEADER_LEN,
    SEAL_ALTERED,
    STATE_SEALED,
    Seal,
    chain_frames,
    index_path,
    is_compressed,
    list_segments,
    parse_header,
    pread_range,
    seal_of,
)


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
            damage_entry(
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
            damage_entry(
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
        segment = CompressedSegment(fd, path, seq)
        report["segments"] += 1
        found_before = _found(report)
        name = path.name
        for offset, length, reason in segment.damage:
            report["headers"].append(damage_entry(name, offset, length, reason))
        seal = seal_of(segment.plain_header, path) if len(segment.plain_header) == HEADER_LEN else None
        if seal == SEAL_ALTERED:
            report["headers"].append(
                damage_entry(name, 36, 28, "[seal] the seal in the copied plain header fails its CRC")
            )
            seal = None
        elif isinstance(seal, Seal) and seal.published_end != segment.plain_len:
            report["headers"].append(
                damage_entry(
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
                    damage_entry(
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
                    damage_entry(
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
            chain = chain_frames(data, offsets, chain)
            for offset, length, reason in walk.damaged:
                report["damaged"].append(damage_entry(name, offset, length, reason))
            if walk.torn:
                offset, length, reason = walk.torn
                if i == last:
                    report["torn_tail"].append(
                        damage_entry(
                            name, offset, length, f"{reason}: invalid bytes after the last valid record of the segment"
                        )
                    )
                else:
                    report["damaged"].append(damage_entry(name, offset, length, reason))
            if err is None and block.crc is not None and not _block_holds(data, start, block.entry):
                report["damaged"].append(
                    damage_entry(
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
    header = parse_header(data, path)
    if header is None:
        report["headers"].append(
            damage_entry(
                name,
                0,
                HEADER_LEN,
                "[header] segment header damaged (magic or CRC wrong); the writer repairs it on open",
            )
        )
    else:
        published = header.published_end
        if header.state == STATE_SEALED:
            seal = seal_of(data, path)
            if seal == SEAL_ALTERED:
                report["headers"].append(
                    damage_entry(
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
                    damage_entry(
                        name,
                        size,
                        published - size,
                        "[truncated] sealed segment file ends before its published end (cut short)",
                    )
                )
            elif published < size:
                damaged.append(
                    damage_entry(
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
        damaged.append(damage_entry(name, offset, length, reason))
    report["bytes"] += walk.end
    if walk.torn:
        offset, length, reason = walk.torn
        report["torn_tail"].append(
            damage_entry(
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
            damage_entry(
                name, walk.end, published - walk.end, "[length] the records end (zero bytes) before the published end"
            )
        )
    if isinstance(seal, Seal):
        _check_totals(report, name, seal, len(offsets), chain_frames(data, offsets), found_before)
    explained = [(o, o + n) for o, n, _ in walk.damaged] + (
        [(walk.torn[0], walk.torn[0] + walk.torn[1])] if walk.torn else []
    )
    explained.append((walk.end, max(published, walk.end)))
    for i, e in enumerate(read_index(index_path(path), stop)):
        if any(a < e.end and b > e.start for a, b in explained):
            continue
        if not _block_holds(data[:stop], 0, e):
            damaged.append(
                damage_entry(
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
    segments = list_segments(data_dir / "log")
    report: dict[str, Any] = {
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
        if not is_compressed(seg_path) and not seg_path.exists():
            seg_path = seg_path.with_suffix("." + COMPRESSED_EXT)  # compressed since the listing
        if is_compressed(seg_path):
            _verify_compressed(report, counts, seq, seg_path)
            continue
        with open(seg_path, "rb") as f:
            data = pread_range(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        if not data:
            report["headers"].append(damage_entry(name, 0, 0, "[header] empty segment file"))
            continue
        report["segments"] += 1
        _verify_plain(report, counts, name, seg_path, data, writer_running and is_last)
    report["ok"] = not damaged and not report["torn_tail"] and not report["headers"]
    return report
