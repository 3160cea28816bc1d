"""Retention of the recording: whole sealed segments are deleted by age and by a disk budget,
never the one being written; and a low-disk watchdog that warns while the recorder keeps going."""

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


@dataclass(frozen=True)
class RetentionPolicy:
    #: Sealed segments older than this are deleted (0 = keep forever).
    max_age_s: float = 30 * 86_400.0
    #: The log is kept under this many bytes by deleting the oldest sealed segments (0 = no budget).
    max_bytes: int = 0
    #: Below this much free disk, the watchdog warns (and says so in /status).
    low_disk_bytes: int = 2 << 30


def _sealed_segments(log_dir: Path, active_seq: int) -> list[tuple[int, Path, int, int]]:
    """(seq, path, created_ns, size) of sealed segments other than the active one, oldest first."""
    out = []
    for p in sorted(log_dir.glob("*.pwlog")):
        try:
            seq = int(p.stem)
        except ValueError:
            continue
        if seq >= active_seq:
            continue
        try:
            with open(p, "rb") as f:
                head = f.read(_HEADER.size)
            magic, _v, _h, _r, _seq, created_ns, _crc, state, _end = _HEADER.unpack(head)
        except (OSError, struct.error):
            continue
        if magic != b"PUMPWLOG" or state != STATE_SEALED:
            continue  # only what the writer sealed is ever deleted
        out.append((seq, p, created_ns, p.stat().st_size))
    return out


def apply_retention(data_dir: str | os.PathLike[str], active_seq: int, policy: RetentionPolicy, now_ns: int | None = None) -> list[str]:
    """Deletes sealed segments past the age limit, then the oldest ones while the log is over its
    budget. Returns the names deleted."""
    log_dir = Path(data_dir) / "log"
    now_ns = time.time_ns() if now_ns is None else now_ns
    sealed = _sealed_segments(log_dir, active_seq)
    total = sum(p.stat().st_size for p in log_dir.glob("*.pwlog"))
    deleted = []
    for seq, path, created_ns, size in sealed:
        too_old = policy.max_age_s > 0 and now_ns - created_ns > policy.max_age_s * 1e9
        over_budget = policy.max_bytes > 0 and total > policy.max_bytes
        if not (too_old or over_budget):
            break  # oldest first: nothing younger can be older
        path.unlink(missing_ok=True)
        path.with_suffix(".pwidx").unlink(missing_ok=True)
        total -= size
        deleted.append(path.name)
        log.info("retention deleted %s (%s)", path.name, "age" if too_old else "disk budget")
    return deleted


def low_disk(data_dir: str | os.PathLike[str], policy: RetentionPolicy) -> str | None:
    """A warning when free disk is below the policy's threshold, else None."""
    free = shutil.disk_usage(data_dir).free
    if free < policy.low_disk_bytes:
        return (f"only {free / 1e9:.2f} GB free on the disk of {os.fspath(data_dir)}: free space or lower "
                f"retention (the recorder keeps going; appends fail cleanly if the disk fills)")
    return None
