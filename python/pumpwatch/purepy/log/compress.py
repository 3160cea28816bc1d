"""Compressed sealed segments in plain Python (`.pwzst`, docs/FORMAT.md "Compressed segment").

Mirrors `rust/core/src/log/compress.rs`: reading a compressed segment block by block, writing one
(the reference for the Rust writer's background compression), and settling a compression a crash
interrupted.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import crc32c
import zstandard

from ...errors import CorruptLogError
from .index import BlockIndex, IndexEntry
from .record import I64_MAX, I64_MIN, TradeRecord
from .scan import FrameWalk
from .segment import (
    HEADER_LEN,
    SEAL_ALTERED,
    STATE_SEALED,
    compressed_file_name,
    format_error,
    fsync_dir,
    index_path,
    list_segment_files,
    parse_header,
    pread_range,
    seal_of,
    segment_file_name,
)

COMPRESSED_MAGIC = b"PUMPWZST"
COMPRESSED_VERSION = 1
ZHEADER_LEN = 64
FRAME_TABLE_AT = ZHEADER_LEN + HEADER_LEN
FRAME_ENTRY_LEN = 64

_ZHEADER = struct.Struct("<8sHHIQQQi")  # .. CRC-32C of these 44 bytes at 44
_FRAME_ENTRY = struct.Struct("<QQqqIIQII")  # .. CRC-32C of these 56 bytes at 56
_U32 = struct.Struct("<I")  # those two CRC-32C fields

# A frame table entry: (the block's index entry, frame offset, frame length, frame CRC).
_Slot = tuple[IndexEntry, int, int, int]


class _Block(NamedTuple):
    """A readable piece of a compressed segment: one zstd frame, or (crc None) a run of frames
    whose table entries are damaged, decoded in a row."""

    entry: IndexEntry
    offset: int
    length: int
    crc: int | None


class CompressedSegment:
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
        plain = parse_header(self.plain_header, path) if len(self.plain_header) == HEADER_LEN else None
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
                format_error(path, f"it says it is segment {header[1]} but is named as segment {seq}")
            )
        slots: list[_Slot | None] = []
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
                slot = self._parse_entry(os.pread(fd, FRAME_ENTRY_LEN, at))
                if slot is not None:
                    data_at = min(data_at, slot[1])
                slots.append(slot)
                at += FRAME_ENTRY_LEN
            data_at = FRAME_TABLE_AT + len(slots) * FRAME_ENTRY_LEN
            if slots and slots[-1] is not None:
                plain_len = slots[-1][0].end
            elif plain is not None and plain_ok:
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
            # The run of untrusted entries ends at the next entry that starts after it, if any.
            j = k + 1
            resume = None
            plain_end: int | None
            while j < len(slots):
                resume = slots[j]
                if resume is not None and resume[0].start > plain_at and resume[1] > file_at:
                    break
                resume = None
                j += 1
            if resume is not None:
                plain_end, file_end = resume[0].start, resume[1]
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
    def _parse_header(head: bytes, path: Path) -> tuple[int, int, int, int] | None:
        """(frames, seq, plain_len, data_at), or None when damaged."""
        if len(head) < ZHEADER_LEN:
            return None
        magic, version, _, frames, seq, plain_len, data_at, _level = _ZHEADER.unpack_from(head)
        if magic != COMPRESSED_MAGIC or crc32c.crc32c(head[:44]) != _U32.unpack_from(head, 44)[0]:
            return None
        if version > COMPRESSED_VERSION:
            raise CorruptLogError(
                format_error(
                    path,
                    f"it was written by a newer PumpWatch (compressed format {version}, this one reads up to "
                    f"{COMPRESSED_VERSION}); upgrade PumpWatch",
                )
            )
        if data_at != FRAME_TABLE_AT + FRAME_ENTRY_LEN * frames or plain_len < HEADER_LEN:
            return None
        return frames, seq, plain_len, data_at

    @staticmethod
    def _parse_entry(b: bytes) -> _Slot | None:
        """(IndexEntry, frame offset, frame length, frame CRC), or None when damaged."""
        if len(b) < FRAME_ENTRY_LEN or crc32c.crc32c(b[:56]) != _U32.unpack_from(b, 56)[0]:
            return None
        start, end, min_ts, max_ts, trades, others, offset, length, crc = _FRAME_ENTRY.unpack_from(b)
        return IndexEntry(start, end, min_ts, max_ts, trades, others), offset, length, crc

    def read_block(self, i: int) -> tuple[bytes, str | None]:
        """The plain bytes of block `i` and None, or what could be decoded and why not the rest."""
        block = self.blocks[i]
        want = block.entry.end - block.entry.start
        src = pread_range(self.fd, block.offset, block.offset + block.length)
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


def resolve_compressions(log_dir: Path) -> list[str]:
    """Where a crash left a segment both plain and compressed, keeps one: the compressed copy when
    it decodes to exactly the plain bytes (the plain copy goes), else the plain one."""
    notes = []
    for seq, plain, compressed in list_segment_files(log_dir):
        if plain is None or compressed is None:
            continue
        with open(plain, "rb") as f:
            data = pread_range(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        header = parse_header(data, plain)
        keep_compressed = False
        if header is not None and header.state == STATE_SEALED and header.published_end <= len(data):
            fd = os.open(compressed, os.O_RDONLY)
            try:
                keep_compressed = CompressedSegment(fd, compressed, seq).matches_plain(data[: header.published_end])
            except CorruptLogError:
                keep_compressed = False
            finally:
                os.close(fd)
        if keep_compressed:
            plain.unlink(missing_ok=True)
            index_path(plain).unlink(missing_ok=True)
            notes.append(f"{plain.name}: compression finished (plain copy removed)")
        else:
            compressed.unlink(missing_ok=True)
            notes.append(f"{compressed.name}: incomplete compressed copy removed (the plain segment is kept)")
    return notes


def compress_segment(log_dir, seq: int, level: int = 3, cancelled: Callable[[], bool] | None = None) -> bool:
    """Compresses sealed segment `seq` of `log_dir` into `.pwzst` exactly as docs/FORMAT.md says
    (the reference for the Rust writer's background compression): one zstd frame per index block
    rebuilt from the records, written under a temporary name, synced, checked against the plain
    bytes, renamed; then the plain segment and its index are removed. Returns False when there is
    nothing to do (not sealed, already compressed, gone) or when `cancelled()` turned true between
    two blocks (compress.rs `compress_segment_unless`: the plain segment is kept)."""
    log_dir = Path(log_dir)
    plain_path = log_dir / segment_file_name(seq)
    final = log_dir / compressed_file_name(seq)
    if final.exists():
        return False
    try:
        with open(plain_path, "rb") as f:
            data = pread_range(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        return False
    header = parse_header(data, plain_path)
    if (
        header is None
        or header.state != STATE_SEALED
        or header.seq != seq
        or header.published_end != len(data)
        or seal_of(data, plain_path) == SEAL_ALTERED
    ):
        # A file shorter or longer than its published end, or a seal failing its CRC, is damage
        # `verify` reports: compressing up to that end could drop bytes. Leave it plain.
        return False
    data = data[: header.published_end]
    blocks = BlockIndex()
    entries = []
    for _, end, record in FrameWalk(data, HEADER_LEN, len(data)):
        entry = blocks.add(end, record.ts_ns if type(record) is TradeRecord else None)
        if entry:
            entries.append(entry)
            if cancelled is not None and cancelled():
                return False
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
        if cancelled is not None and cancelled():
            return False
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
            if not CompressedSegment(fd, tmp, seq).matches_plain(data):
                raise CorruptLogError(format_error(tmp, "it does not read back as the plain segment it was made from"))
        finally:
            os.close(fd)
        if not plain_path.exists():
            return False  # deleted by retention meanwhile: do not bring it back
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(log_dir)
    plain_path.unlink(missing_ok=True)
    index_path(plain_path).unlink(missing_ok=True)
    fsync_dir(log_dir)
    return True


MAX_LEVEL = 22  # compress.rs MAX_LEVEL


class Compressor:
    """The writer's background compressor (compress.rs `Compressor`): one thread at a lower CPU
    priority than the appends, working through sealed segments in order; it never touches the
    active segment. On `stop` it finishes the segments this writer sealed and leaves the backlog
    found at open for the next writer, abandoning one it is compressing (closing stays quick)."""

    def __init__(self, log_dir: Path, level: int) -> None:
        self._log_dir = Path(log_dir)
        self._level = level
        self._cond = threading.Condition()
        # (seq, backlog): backlog = found plain when the writer opened; the others it sealed.
        self._queue: deque[tuple[int, bool]] = deque()
        self._busy = False
        self._busy_with_backlog = False
        self._abandon = False  # set by `stop` for a backlog segment being compressed
        self._stopping = False
        self._done = {"segments": 0, "plain_bytes": 0, "compressed_bytes": 0, "seconds": 0.0}
        self._errors = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="pumpwatch-zstd", daemon=True)
        self._thread.start()

    def request(self, seq: int, backlog: bool = False) -> None:
        """Queues a sealed segment (one this writer sealed, or `backlog`: found plain at open)."""
        with self._cond:
            if all(s != seq for s, _ in self._queue):
                self._queue.append((seq, backlog))
            self._cond.notify_all()

    def stop(self) -> None:
        """Lets the thread finish the segments this writer sealed, drops the backlog, then ends."""
        with self._cond:
            self._stopping = True
            self._queue = deque(item for item in self._queue if not item[1])
            self._abandon = self._busy and self._busy_with_backlog
            self._cond.notify_all()
        self._thread.join()

    def stats(self) -> dict:
        """`segments`, `plain_bytes`, `compressed_bytes`, `seconds`, `pending` (queued or running),
        `errors`, `last_error` (None when none): the keys and order of the Rust store's."""
        with self._cond:
            return {
                **self._done,
                "pending": len(self._queue) + self._busy,
                "errors": self._errors,
                "last_error": self._last_error,
            }

    def wait_idle(self, timeout_s: float) -> bool:
        """Waits until nothing is queued or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and not self._queue, max(0.0, timeout_s))

    def _abandoned(self) -> bool:
        return self._abandon  # only ever set while a backlog segment is being compressed

    def _run(self) -> None:
        try:
            # Appends come first (Linux: a thread's nice value is its own).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass
        while True:
            with self._cond:
                while not self._queue:
                    if self._stopping:
                        self._cond.notify_all()
                        return
                    self._cond.notify_all()
                    self._cond.wait()
                seq, backlog = self._queue.popleft()
                self._busy = True
                self._busy_with_backlog = backlog
            started = time.monotonic()
            plain = self._log_dir / segment_file_name(seq)
            error = None
            sizes = None
            try:
                plain_bytes = plain.stat().st_size
                if compress_segment(self._log_dir, seq, self._level, self._abandoned):
                    sizes = (plain_bytes, (self._log_dir / compressed_file_name(seq)).stat().st_size)
            except FileNotFoundError:
                pass  # deleted by retention meanwhile
            except Exception as exc:  # the plain segment stays, and stays readable; the next open tries again
                error = f"compressing segment {seq}: {exc}"
            with self._cond:
                self._busy = False
                if sizes is not None:
                    self._done["segments"] += 1
                    self._done["plain_bytes"] += sizes[0]
                    self._done["compressed_bytes"] += sizes[1]
                    self._done["seconds"] += time.monotonic() - started
                if error is not None:
                    self._errors += 1
                    self._last_error = error
                self._cond.notify_all()
