"""The live ring of recent trades in plain Python: what `rust/core/src/ring.rs` is to the Rust store.

One writer (the store's appends) and any number of readers (the recorder's silent-symbol watch);
the writer drops the oldest entries past the ring's size and never waits for a reader, and a reader
that falls behind learns how many trades it missed. The size is counted as the Rust ring counts it
(8-byte words, two of header per entry, the capacity rounded up to a power of two words and at
least 4 KiB), so both engines keep about the same trades; the Rust ring also loses the words of
its wrap-around padding, which this one has none of.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import islice

from .log.record import FRAME_HEADER, TradeRecord, Undecodable, decode_payload
from .parse import BACKFILL, NON_TRADE, SNAPSHOT

_ENTRY_HEADER_WORDS = 2
# Trades that say nothing of a symbol's live stream (ring.rs `live_activity`).
_NOT_LIVE = BACKFILL | SNAPSHOT | NON_TRADE


def _entry_words(payload_len: int) -> int:
    return _ENTRY_HEADER_WORDS + -(-payload_len // 8)


class TradeRing:
    """Holds the trade records (whole frames, as the store wrote them) of the newest appends."""

    def __init__(self, capacity_bytes: int) -> None:
        self._cap = max(512, 1 << max(0, (capacity_bytes // 8) - 1).bit_length())
        self._lock = threading.Lock()
        # Sequence numbers are contiguous: the ring holds `[_next_seq - len(_frames), _next_seq)`.
        self._frames: deque[bytes] = deque()
        self._words = 0
        self._next_seq = 0
        self.dropped_too_large = 0

    @property
    def capacity_bytes(self) -> int:
        return self._cap * 8

    def push_frames(self, frames: list[bytes]) -> None:
        """Pushes trade frames (header and payload), oldest first, dropping the oldest as needed.
        Of a batch larger than the ring only the tail that fits is kept: the rest would be
        dropped before a reader could see it, and readers count it as missed (ring.rs `skip`)."""
        cap = self._cap
        needs = [_entry_words(len(f) - FRAME_HEADER) for f in frames]
        total = sum(needs)
        if total <= cap and max(needs, default=0) <= cap // 2:
            with self._lock:  # the usual batch: far smaller than the ring
                self._frames.extend(frames)
                self._words += total
                self._next_seq += len(frames)
                while self._words > cap:
                    self._words -= _entry_words(len(self._frames.popleft()) - FRAME_HEADER)
            return
        fitting = [i for i, need in enumerate(needs) if need <= cap // 2]
        # As ring.rs: an entry of over half the ring is never kept (nor counted).
        self.dropped_too_large += len(needs) - len(fitting)
        start = len(fitting)
        words = 0
        while start > 0 and words + needs[fitting[start - 1]] <= cap:
            start -= 1
            words += needs[fitting[start]]
        skipped = start  # counted as pushed, never kept
        keep = [frames[i] for i in fitting[start:]]
        with self._lock:
            if skipped:
                # What the skipped trades would have pushed out is gone too: everything older.
                self._frames.clear()
                self._words = 0
                self._next_seq += skipped
            self._frames.extend(keep)
            self._words += words
            self._next_seq += len(keep)
            while self._words > cap:
                self._words -= _entry_words(len(self._frames.popleft()) - FRAME_HEADER)

    def reader(self, from_oldest: bool = False) -> RingReader:
        return RingReader(self, from_oldest)


class RingReader:
    """A reader's cursor (the same methods as `pumpwatch._core.RingReader`)."""

    def __init__(self, ring: TradeRing, from_oldest: bool) -> None:
        self._ring = ring
        with ring._lock:
            self._next_seq = ring._next_seq - (len(ring._frames) if from_oldest else 0)
        #: Trades dropped before this reader got to them, since it was created.
        self.missed = 0

    def _take(self, max_trades: int) -> tuple[list[bytes], int]:
        ring = self._ring
        with ring._lock:
            frames = ring._frames
            oldest = ring._next_seq - len(frames)
            missed_now = max(0, oldest - self._next_seq)
            start = max(0, self._next_seq - oldest)
            n = min(max(0, max_trades), len(frames) - start)
            if start >= len(frames) // 2:
                taken = list(islice(reversed(frames), len(frames) - start))[::-1][:n]
            else:
                taken = list(islice(frames, start, start + n))
            self._next_seq = oldest + start + n
        self.missed += missed_now
        return taken, missed_now

    def poll(self, max_trades: int = 65536) -> tuple[list[TradeRecord], int]:
        """Up to `max_trades` trades not read yet, and how many were dropped before this reader
        got to them (since the last poll)."""
        taken, missed = self._take(max_trades)
        out = []
        for frame in taken:
            try:
                record = decode_payload(frame[FRAME_HEADER:])
            except Undecodable:
                continue  # cannot happen: the store encoded these frames itself
            if type(record) is TradeRecord:
                out.append(record)
        return out, missed

    def poll_activity(self, max_trades: int = 1 << 20) -> tuple[list[tuple[str, str, int, int]], int]:
        """What the trades not read yet say of each symbol's live flow: `([(venue, symbol,
        sightings, last receive ns)], missed)`, a sighting being the trades received at one
        instant (one frame). Backfilled, snapshot and non-trade records are not counted."""
        trades, missed = self.poll(max_trades)
        rows: dict[tuple[str, str], list[int]] = {}
        for t in trades:
            if t.flags & _NOT_LIVE:
                continue
            row = rows.get((t.venue, t.symbol))
            if row is None:
                row = rows[(t.venue, t.symbol)] = [0, -(1 << 63)]
            if t.recv_ns != row[1]:
                row[0] += 1
            row[1] = max(row[1], t.recv_ns)
        return [(venue, symbol, n, last) for (venue, symbol), (n, last) in rows.items()], missed
