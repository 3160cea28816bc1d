"""What the writer keeps in memory while the disk refuses records (full, or failing), and the
exact account of what had to be dropped: `rust/core/src/log/hold.rs` in plain Python.

The recorder keeps its connections when the disk is full: records go on being accepted and are
held here, newest kept, up to a bound (the ring's size). When the bound is passed the oldest
records fall out, and what fell out is counted per venue and symbol (exchange-time span, first and
last trade id), so that when the disk has room again the writer first stores one `gap_unfillable`
marker per symbol naming exactly what was lost and why, then everything held, in the order it came.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from .record import FRAME_HEADER, TradeRecord, Undecodable, decode_payload, encode_marker

_DETAIL_CLIP = 4000  # bytes of a marker's detail (hold.rs `clip`)


@dataclass
class LostSpan:
    """Trades of one symbol that fell out of the hold: their exact span. Ids of one symbol are
    contiguous in the hold (in log order), so every trade of the symbol between the first and the
    last id was lost and none outside."""

    venue: str
    symbol: str
    trades: int
    from_ts_ns: int
    to_ts_ns: int
    from_id: str
    to_id: str


class Hold:
    """Frames the disk refused, with each frame's exchange time for the index (None: not a trade),
    in batches as they were appended."""

    def __init__(self, limit: int, since_ns: int, reason: str, disk_full: bool) -> None:
        self.limit = limit
        self.since_ns = since_ns
        #: Why the disk refused: the error of the write that failed, with its path.
        self.reason = reason
        self.disk_full = disk_full
        self._batches: deque[tuple[list[bytes], list[int | None]]] = deque()
        self.bytes = 0
        self.records = 0
        self.lost: list[LostSpan] = []
        #: Markers and quarantined frames that fell out (they carry no trade span).
        self.lost_other = 0
        self.next_try = time.monotonic()

    def push(self, frames: list[bytes], trade_ts: list[int | None]) -> None:
        """Keeps whole frames; drops the oldest past the limit."""
        if not frames:
            return
        self.records += len(frames)
        self.bytes += sum(map(len, frames))
        self._batches.append((list(frames), list(trade_ts)))
        while self.bytes > self.limit and self._batches:
            front, front_ts = self._batches[0]
            # Drop frames off the front of the oldest batch until under the limit or it is empty.
            dropped = 0
            while dropped < len(front) and self.bytes > self.limit:
                self._note_lost(front[dropped])
                self.bytes -= len(front[dropped])
                self.records -= 1
                dropped += 1
            if dropped == len(front):
                self._batches.popleft()
            else:
                del front[:dropped], front_ts[:dropped]

    def front(self) -> tuple[list[bytes], list[int | None]] | None:
        return self._batches[0] if self._batches else None

    def consumed_front(self, written: int) -> None:
        """The oldest batch was written up to `written` frames."""
        if not self._batches:
            return
        front, front_ts = self._batches[0]
        written = min(written, len(front))
        self.records -= written
        self.bytes -= sum(map(len, front[:written]))
        if written == len(front):
            self._batches.popleft()
        else:
            del front[:written], front_ts[:written]

    def is_empty(self) -> bool:
        return not self._batches

    def lost_trades(self) -> int:
        return sum(span.trades for span in self.lost)

    def loss_markers(self, now_ns: int) -> list[bytes]:
        """One `gap_unfillable` marker (framed) per symbol that lost trades, and one for the other
        records, worded as hold.rs words them."""
        why = (
            f"{'disk full' if self.disk_full else 'disk error'} since {self.since_ns} ns ({self.reason}): "
            f"held in memory up to {self.limit} bytes, the oldest fell out before the disk had room again"
        )
        out = [
            encode_marker(
                "gap_unfillable",
                span.venue,
                span.symbol,
                now_ns,
                span.from_ts_ns,
                span.to_ts_ns,
                span.from_id,
                span.to_id,
                _clip(f"{span.trades} trades lost: {why}"),
            )
            for span in self.lost
        ]
        if self.lost_other:
            out.append(
                encode_marker(
                    "gap_unfillable",
                    None,
                    "",
                    now_ns,
                    self.since_ns,
                    now_ns,
                    "",
                    "",
                    _clip(f"{self.lost_other} markers or quarantined frames lost: {why}"),
                )
            )
        return out

    def clear_lost(self) -> None:
        self.lost.clear()
        self.lost_other = 0

    def _note_lost(self, frame: bytes) -> None:
        try:
            record = decode_payload(frame[FRAME_HEADER:])
        except Undecodable:
            record = None
        if type(record) is not TradeRecord:
            self.lost_other += 1
            return
        for span in self.lost:
            if span.venue == record.venue and span.symbol == record.symbol:
                span.trades += 1
                span.from_ts_ns = min(span.from_ts_ns, record.ts_ns)
                span.to_ts_ns = max(span.to_ts_ns, record.ts_ns)
                span.to_id = record.trade_id
                return
        self.lost.append(
            LostSpan(record.venue, record.symbol, 1, record.ts_ns, record.ts_ns, record.trade_id, record.trade_id)
        )


def _clip(text: str) -> str:
    """At most `_DETAIL_CLIP` bytes of UTF-8, cut at a character boundary."""
    raw = text.encode("utf-8")
    return text if len(raw) <= _DETAIL_CLIP else raw[:_DETAIL_CLIP].decode("utf-8", "ignore")
