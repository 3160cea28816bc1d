"""The writer side of the log in plain Python: the active segment and recovery on open.

Mirrors the segment handling of `rust/core/src/log/writer.rs`: creating a segment in two steps
(reserve, then activate), preallocation, appends that publish then index, sealing, and recovering
a segment a crash left active. The one-writer facade over it is `pumpwatch.purepy.store.Store`.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from pathlib import Path

from ...errors import DiskFullError
from .index import INDEX_ENTRY_LEN, INDEX_HEADER_LEN, BlockIndex, IndexEntry, pack_entry, write_index
from .record import TradeRecord
from .scan import FrameWalk, damage_entry
from .segment import (
    HEADER_LEN,
    STATE_ACTIVE,
    SegmentHeader,
    chain_frames,
    fsync_dir,
    index_path,
    pack_header,
    pack_sealed_header,
    parse_header,
    publish_end,
    pwrite_all,
    segment_file_name,
)

# The active segment grows in preallocated steps of this size, so that the bytes past its last
# record are zeros and an append cannot run out of space halfway through a record.
PREALLOC_CHUNK = 64 << 20
PAGE = 4096
SEGMENT_MAX_BYTES_RANGE = (1 << 16, 1 << 40)
# Cut bytes kept per recovery, at most: a tail of garbage can be as long as the preallocation.
RECOVERED_KEEP_MAX = 64 << 20

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def disk_full_error(exc: OSError, path, needed: int = 0) -> DiskFullError:
    assert exc.errno is not None, "only errors with a disk-full errno are passed here"
    reserving = f" while reserving {needed} bytes" if needed else ""
    return DiskFullError(
        exc.errno,
        f"no space left to append ({os.strerror(exc.errno)}) at {path}{reserving}; nothing already "
        f"stored was touched and this batch was not written: free disk space (or lower retention) "
        f"and append again",
    )


class RecoveryReport:
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


class ActiveSegment:
    """The one segment the writer appends to: file, published end, preallocation and open block."""

    def __init__(self, path: Path, seq: int, fd: int, created_ns: int, end: int, allocated: int):
        self.path = path
        self.seq = seq
        self.fd = fd
        self.created_ns = created_ns
        self.end = end  # published end: every byte before it is a complete record
        self.allocated = allocated  # file size; bytes in [end, allocated) are zeros
        self.blocks = BlockIndex()
        self.entries: list[IndexEntry] = []
        self._index_fd: int | None = None
        self._index_len = 0
        # What the seal will vouch for: the records and the CRC chain of their frame CRCs.
        self.records = 0
        self.crc_chain = 0

    @property
    def index_path(self) -> Path:
        return index_path(self.path)

    @property
    def _tmp_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    # Creation in two steps, so that a batch can reserve all its space before writing anything.

    @classmethod
    def reserve(cls, log_dir: Path, seq: int, needed_end: int, max_bytes: int) -> ActiveSegment:
        """Creates the segment under a temporary name with its header and space for `needed_end`."""
        path = log_dir / segment_file_name(seq)
        created_ns = time.time_ns()
        fd = os.open(path.with_name(path.name + ".tmp"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        seg = cls(path, seq, fd, created_ns, HEADER_LEN, 0)
        try:
            pwrite_all(fd, pack_header(seq, created_ns, STATE_ACTIVE, HEADER_LEN), 0)
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
        fsync_dir(self.path.parent)
        self._start_index([])

    @classmethod
    def recover(cls, path: Path, seq: int, data_dir: Path, report: RecoveryReport) -> ActiveSegment:
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
            header = parse_header(os.pread(fd, HEADER_LEN, 0), path)
            published = size  # a damaged header publishes nothing we can trust
            if header is None:
                header = SegmentHeader(seq, time.time_ns(), STATE_ACTIVE, HEADER_LEN)
                pwrite_all(fd, pack_header(*header), 0)
                report.headers_repaired.append(name)
            else:
                published = min(max(header.published_end, HEADER_LEN), size)
            blocks = BlockIndex()
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
                crc_chain = chain_frames(view, kept)
            for offset, length, _ in walk.damaged:
                report.damaged.append(
                    damage_entry(name, offset, length, "damaged bytes between valid records, kept in place and skipped")
                )
            if walk.torn:
                offset, length, _ = walk.torn
                report.truncated.append(
                    damage_entry(name, offset, length, "torn or corrupt tail after the last valid record, cut off")
                )
                saved = _save_cut(data_dir / "recovered", name, offset, cut)
                if saved:
                    report.saved_to.append(saved)
            # Cut everything after the last valid record: the space preallocated again later reads
            # as zeros, so the next append cannot be confused with left-over garbage.
            end = walk.end
            os.ftruncate(fd, end)
            publish_end(fd, end)
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
            write_index(self.index_path, self.entries)
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
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full_error(exc, self.path, new_end - self.allocated) from exc
            raise
        self.allocated = new_end

    def write(self, chunk: bytes, frame_sizes: list[int], trade_ts: list[int | None]) -> None:
        """Appends records (space already reserved), then publishes them, then indexes them."""
        start = self.end
        try:
            pwrite_all(self.fd, chunk, start)
        except OSError as exc:
            # Put the zeros back, so that a later recovery does not see a torn tail here.
            try:
                pwrite_all(self.fd, bytes(len(chunk)), start)
            except OSError:
                pass
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full_error(exc, self.path) from exc
            raise
        # Release order: the records are in the file before the header says they are.
        end = start + len(chunk)
        publish_end(self.fd, end)
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
        self.crc_chain = chain_frames(chunk, starts, self.crc_chain)
        if finished:
            self.entries.extend(finished)
            self._append_index(finished)

    def _append_index(self, entries: list[IndexEntry]) -> None:
        if self._index_fd is None:
            return
        data = b"".join(map(pack_entry, entries))
        try:
            pwrite_all(self._index_fd, data, self._index_len)
            self._index_len += len(data)
        except OSError:
            # The records are published: an index failure must not fail the append. Readers use
            # the entries before the gap and scan the rest; sealing or the next open rewrites it.
            os.close(self._index_fd)
            self._index_fd = None

    @property
    def index_behind(self) -> bool:
        """The index file stopped growing (a failed append): readers scan past its last entry
        until the seal rewrites it whole."""
        return self._index_fd is None

    def sync(self) -> None:
        os.fsync(self.fd)

    def seal(self) -> None:
        """Makes the segment immutable: truncated to its published end, state 1, full index."""
        os.ftruncate(self.fd, self.end)
        pwrite_all(self.fd, pack_sealed_header(self.seq, self.created_ns, self.end, self.records, self.crc_chain), 0)
        os.fsync(self.fd)
        last = self.blocks.finish()
        if last:
            self.entries.append(last)
            self.blocks = BlockIndex(last.end)
        try:
            write_index(self.index_path, self.entries)
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
        fsync_dir(recovered_dir)
    except OSError:
        return None
    return target
