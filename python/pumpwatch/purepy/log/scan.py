"""Walking frames in plain Python: the one place that decides what a valid record is.

Mirrors `rust/core/src/log/scan.rs`. Every read of the log goes through `FrameWalk`: recovery,
queries and `verify` see the same records, the same damaged spans and the same torn tail;
`damage_entry` is the shape recovery and `verify` report each of them in.
"""

from __future__ import annotations

import re

import crc32c

from .record import FRAME_HEADER, FRAME_STRUCT, MAX_PAYLOAD, Undecodable, decode_payload

# A frame's payload starts with a known kind (1..3): resync looks for that byte first, which skips
# runs of zeros (preallocated space, zeroed pages) at the speed of the regex engine.
_KIND_BYTE = re.compile(rb"[\x01-\x03]")


def _read_frame(buf, pos: int, stop: int):
    """The frame at buf[pos:]: (record, end) when valid, else (None, why it is not)."""
    if pos + FRAME_HEADER > stop:
        return None, "[bounds] frame header runs past the readable end"
    length, crc = FRAME_STRUCT.unpack_from(buf, pos)
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
    except Undecodable as exc:
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


def damage_entry(segment: str, offset: int, length: int, reason: str) -> dict:
    return {"segment": segment, "offset": offset, "length": length, "reason": reason}
