"""Retention of the recording: whole sealed segments (plain or compressed) are deleted by age and
by a disk budget, never the one being written; and a low-disk watchdog that warns while the
recorder keeps going."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pumpwatch.retention")

_HEADER = struct.Struct("<8sHHIQqIIQ")  # docs/FORMAT.md: magic .. created_ns .. state, published end
STATE_SEALED = 1
# A compressed segment carries the plain segment's header, as sealed, after its own 64 bytes.
_COMPRESSED_MAGIC = b"PUMPWZST"
_PLAIN_HEADER_IN_COMPRESSED = 64
_SEGMENT_SUFFIXES = (".pwlog", ".pwzst")


def _segment_files(log_dir: Path) -> dict[int, list[Path]]:
    """Segment files (plain and compressed; both only while a compression finishes) by sequence number."""
    found: dict[int, list[Path]] = {}
    try:
        entries = list(os.scandir(log_dir))
    except FileNotFoundError:
        return found
    for e in entries:
        stem, dot, ext = e.name.partition(".")
        if dot and "." + ext in _SEGMENT_SUFFIXES and len(stem) == 20 and stem.isdigit():
            found.setdefault(int(stem), []).append(Path(e.path))
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _segment_size(paths: list[Path]) -> int:
    """Bytes one segment takes: its compressed file once that is in place, else the plain one.
    Both exist only between the compressor's rename of the finished `.pwzst` and its unlink of
    the `.pwlog` (the `.pwzst.tmp` it writes before is not counted either): counting both there
    would make retention delete a segment more than the budget asks for."""
    compressed = [p for p in paths if p.suffix == ".pwzst"]
    return sum(map(_size, compressed or paths))


def log_bytes(data_dir: str | os.PathLike[str]) -> int:
    """Bytes the log takes on disk: every segment once, plain or compressed (what the budget counts)."""
    return sum(_segment_size(paths) for paths in _segment_files(Path(data_dir) / "log").values())


def _sealed_created_ns(path: Path) -> int | None:
    """When a segment was created, if it is sealed (a compressed one always is); None otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(_PLAIN_HEADER_IN_COMPRESSED + _HEADER.size)
    except OSError:
        return None
    if head[:8] == _COMPRESSED_MAGIC:
        head = head[_PLAIN_HEADER_IN_COMPRESSED:]
    try:
        magic, _v, _h, _r, _seq, created_ns, _crc, state, _end = _HEADER.unpack_from(head)
    except struct.error:
        return None
    if magic != b"PUMPWLOG" or state != STATE_SEALED:
        return None  # only what the writer sealed is ever deleted
    return created_ns


@dataclass(frozen=True)
class RetentionPolicy:
    #: Sealed segments older than this are deleted (0 = keep forever).
    max_age_s: float = 30 * 86_400.0
    #: The log is kept under this many bytes by deleting the oldest sealed segments (0 = no budget).
    max_bytes: int = 0
    #: Below this much free disk, the watchdog warns (and says so in /status).
    low_disk_bytes: int = 2 << 30


def _sealed_segments(log_dir: Path, active_seq: int) -> list[tuple[int, list[Path], int, int]]:
    """(seq, files, created_ns, size) of sealed segments other than the active one, oldest first."""
    out = []
    for seq, paths in sorted(_segment_files(log_dir).items()):
        if seq >= active_seq:
            continue
        created = [c for c in map(_sealed_created_ns, sorted(paths)) if c is not None]
        if not created:
            continue
        out.append((seq, paths, created[0], _segment_size(paths)))
    return out


def apply_retention(
    data_dir: str | os.PathLike[str], active_seq: int, policy: RetentionPolicy, now_ns: int | None = None
) -> list[str]:
    """Deletes sealed segments (plain or compressed, with their index files) past the age limit,
    then the oldest ones while the log is over its budget. Returns the names deleted."""
    log_dir = Path(data_dir) / "log"
    now_ns = time.time_ns() if now_ns is None else now_ns
    sealed = _sealed_segments(log_dir, active_seq)
    total = log_bytes(data_dir)
    deleted = []
    for seq, _paths, created_ns, size in sealed:
        too_old = policy.max_age_s > 0 and now_ns - created_ns > policy.max_age_s * 1e9
        over_budget = policy.max_bytes > 0 and total > policy.max_bytes
        if not (too_old or over_budget):
            break  # oldest first: nothing younger can be older
        # Every name the segment can have, not only those listed: a background compression may
        # finish (or be midway) meanwhile. The unfinished one goes first, so it cannot be renamed
        # into place after the copies are gone.
        for name in (f"{seq:020d}.pwzst.tmp", f"{seq:020d}.pwlog", f"{seq:020d}.pwzst", f"{seq:020d}.pwidx"):
            try:
                (log_dir / name).unlink()
            except FileNotFoundError:
                continue
            if not name.endswith((".tmp", ".pwidx")):
                deleted.append(name)
        total -= size
        log.info("retention deleted segment %d (%s)", seq, "age" if too_old else "disk budget")
    return deleted


def low_disk(data_dir: str | os.PathLike[str], policy: RetentionPolicy) -> str | None:
    """A warning when free disk is below the policy's threshold, else None."""
    free = shutil.disk_usage(data_dir).free
    if free < policy.low_disk_bytes:
        return (
            f"only {free / 1e9:.2f} GB free on the disk of {os.fspath(data_dir)}: free space or lower "
            f"retention (the recorder keeps going; appends fail cleanly if the disk fills)"
        )
    return None
