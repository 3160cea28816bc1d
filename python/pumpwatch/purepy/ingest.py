"""The ingest path in plain Python: parse, drop duplicates, check id sequences, store.

It mirrors `rust/core/src/ingest.rs` rule for rule (the differential tests hold the two to the same
log), written as a competent Python developer would: the stdlib `json` parsers of
`pumpwatch.purepy.parse`, dicts and sets, one append per batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .._core import SEQUENCED_VENUES  # venues whose trade ids form a per-symbol sequence
from .log.record import QUARANTINE_RAW_MAX, encode_marker, encode_quarantined, encode_trade
from .parse import AGGREGATED, ParseContext, parse

MAX_OPEN_GAPS = 1024


def _canonical(s: str) -> bool:
    """A u64 in canonical decimal text (what Rust's `canonical_u64` takes)."""
    return s.isdigit() and s.isascii() and (s == "0" or s[0] != "0") and int(s) < 2**64


class _SymbolState:
    __slots__ = ("last_id", "last_ts_ns", "open_gaps", "recent", "recent_order")

    def __init__(self) -> None:
        self.last_id: int | None = None
        self.last_ts_ns = 0
        self.open_gaps: list[list[int]] = []
        self.recent: set[str] | None = None
        self.recent_order: deque[str] | None = None


class Ingestor:
    def __init__(self, store, recent_ids_per_symbol: int = 4096) -> None:
        self.store = store
        self.ctx = ParseContext()
        self.recent_cap = max(1, recent_ids_per_symbol)
        self.symbols: dict[tuple[str, str], _SymbolState] = {}
        self.stats = {"frames": 0, "trades": 0, "duplicates": 0, "quarantined": 0, "gaps": 0, "gaps_filled": 0}

    def _judge(self, venue, symbol, trade_id, ts_ns, seq, recv_ns, events, markers) -> bool:
        st = self.symbols.get((venue, symbol))
        if st is None:
            st = self.symbols[(venue, symbol)] = _SymbolState()
        if seq is None:
            recent, order = st.recent, st.recent_order
            if recent is None or order is None:
                recent, order = st.recent, st.recent_order = set(), deque()
            if trade_id in recent:
                return False
            recent.add(trade_id)
            order.append(trade_id)
            if len(order) > self.recent_cap:
                recent.discard(order.popleft())
            return True
        first, last = seq
        prev = st.last_id
        if prev is None:
            st.last_id, st.last_ts_ns = last, ts_ns
            return True
        if first > prev:
            if first > prev + 1:
                a, b = prev + 1, first - 1
                if len(st.open_gaps) >= MAX_OPEN_GAPS:
                    st.open_gaps.pop(0)
                st.open_gaps.append([a, b])
                events.append(("gap", venue, symbol, a, b, st.last_ts_ns, ts_ns))
                markers.append(
                    (
                        "gap_found",
                        venue,
                        symbol,
                        recv_ns,
                        st.last_ts_ns,
                        ts_ns,
                        str(a),
                        str(b),
                        f"{b - a + 1} ids missing",
                    )
                )
            st.last_id, st.last_ts_ns = last, ts_ns
            return True
        # At or below what we have: new only where it falls into an open gap.
        fills = False
        kept = []
        for a, b in st.open_gaps:
            if last < a or first > b:
                kept.append([a, b])
                continue
            fills = True
            left = [a, first - 1] if a < first else None
            right = [last + 1, b] if last < b else None
            if left is None and right is None:
                events.append(("gap_filled", venue, symbol, a, b))
                markers.append(("gap_filled", venue, symbol, recv_ns, 0, 0, str(a), str(b), ""))
            kept.extend(g for g in (left, right) if g is not None)
        st.open_gaps = kept
        if last > prev:
            st.last_id, st.last_ts_ns = last, ts_ns
            fills = True
        return fills

    def _stage_markers(self, markers, frames, trade_ts) -> None:
        for kind, venue, symbol, ts_ns, from_ts, to_ts, from_id, to_id, detail in markers:
            self.stats["gaps" if kind == "gap_found" else "gaps_filled"] += 1
            frames.append(encode_marker(kind, venue, symbol, ts_ns, from_ts, to_ts, from_id, to_id, detail))
            trade_ts.append(None)

    def _stage_frame(self, venue, frame, recv_ns, frames, trade_ts, events) -> int:
        self.stats["frames"] += 1
        try:
            result = parse(venue, frame, self.ctx)
        except ValueError as exc:
            raw = frame.encode() if isinstance(frame, str) else bytes(frame)
            reason = str(exc)
            frames.append(encode_quarantined(venue, recv_ns, reason, raw[:QUARANTINE_RAW_MAX]))
            trade_ts.append(None)
            self.stats["quarantined"] += 1
            events.append(("quarantined", venue, reason))
            return 0
        if result.control is not None:
            events.append(("control", venue, result.control[0], result.control[1]))
        markers: list[tuple] = []
        stored = 0
        for t in result.trades:
            seq = (t["seq_first"], t["seq_last"]) if t["seq_first"] is not None else None
            if not self._judge(venue, t["symbol"], t["trade_id"], t["ts_ns"], seq, recv_ns, events, markers):
                self.stats["duplicates"] += 1
                continue
            try:
                encoded, ts = encode_trade(
                    venue, t["symbol"], t["trade_id"], t["price"], t["qty"], t["side"], t["ts_ns"], recv_ns, t["flags"]
                )
            except ValueError:
                continue  # the parsers emit only what the log accepts; this guards the format
            frames.append(encoded)
            trade_ts.append(ts)
            stored += 1
        self._stage_markers(markers, frames, trade_ts)
        if result.rejected:
            # Some trades of the frame did not parse: the others are stored above, and the raw
            # frame is kept with a reason naming only the ones left out (as the Rust path does).
            raw = frame.encode() if isinstance(frame, str) else bytes(frame)
            n = len(result.rejected)
            reason = f"{venue}: {n} of {n + len(result.trades)} trades left out (the others are stored): " + "; ".join(
                result.rejected
            )
            frames.append(encode_quarantined(venue, recv_ns, reason, raw[:QUARANTINE_RAW_MAX]))
            trade_ts.append(None)
            self.stats["quarantined"] += 1
            events.append(("quarantined", venue, reason))
        self.stats["trades"] += stored
        return stored

    def ingest_many(self, venue: str, frames_in: Iterable, recv_ns) -> tuple[int, list | None]:
        frames: list[bytes] = []
        trade_ts: list[int | None] = []
        events: list[tuple] = []
        stored = 0
        frames_in = list(frames_in)
        times = recv_ns if isinstance(recv_ns, list) else [recv_ns] * len(frames_in)
        for frame, t in zip(frames_in, times, strict=False):
            stored += self._stage_frame(venue, frame, t, frames, trade_ts, events)
        if frames:
            self.store.append_encoded(frames, trade_ts)
        return stored, events or None

    def ingest(self, venue: str, frame, recv_ns: int) -> tuple[int, list | None]:
        return self.ingest_many(venue, [frame], recv_ns)

    def ingest_trades(self, trades) -> tuple[int, list | None]:
        frames: list[bytes] = []
        trade_ts: list[int | None] = []
        events: list[tuple] = []
        markers: list[tuple] = []
        stored = 0
        for t in trades:
            tid = t.trade_id
            seq = None
            if t.venue not in SEQUENCED_VENUES:
                pass
            elif t.flags & AGGREGATED:  # `<first>-<last>`: the id range an aggTrades row covers
                first, dash, last = tid.partition("-")
                if dash and _canonical(first) and _canonical(last) and int(first) <= int(last):
                    seq = (int(first), int(last))
            elif _canonical(tid):
                seq = (int(tid), int(tid))
            if not self._judge(t.venue, t.symbol, tid, t.ts_ns, seq, t.recv_ns, events, markers):
                self.stats["duplicates"] += 1
                continue
            encoded, ts = encode_trade(t.venue, t.symbol, tid, t.price, t.qty, t.side, t.ts_ns, t.recv_ns, t.flags)
            frames.append(encoded)
            trade_ts.append(ts)
            stored += 1
        self._stage_markers(markers, frames, trade_ts)
        self.stats["trades"] += stored
        if frames:
            self.store.append_encoded(frames, trade_ts)
        return stored, events or None

    def _state(self, venue: str, symbol: str) -> _SymbolState:
        st = self.symbols.get((venue, symbol))
        if st is None:
            st = self.symbols[(venue, symbol)] = _SymbolState()
        return st

    def seed_last_id(self, venue: str, symbol: str, last_id: int, last_ts_ns: int) -> None:
        st = self._state(venue, symbol)
        if st.last_id is None or last_id > st.last_id:
            st.last_id, st.last_ts_ns = last_id, last_ts_ns

    def seed_open_gap(self, venue: str, symbol: str, first: int, last: int) -> None:
        st = self._state(venue, symbol)
        if first > last or any(first <= b and a <= last for a, b in st.open_gaps):
            return
        if len(st.open_gaps) >= MAX_OPEN_GAPS:
            st.open_gaps.pop(0)
        st.open_gaps.append([first, last])
        st.open_gaps.sort()

    def seed_recent_ids(self, venue: str, symbol: str, trade_ids) -> None:
        st = self._state(venue, symbol)
        recent, order = st.recent, st.recent_order
        if recent is None or order is None:
            recent, order = st.recent, st.recent_order = set(), deque()
        for tid in trade_ids:
            if tid in recent:
                continue
            recent.add(tid)
            order.append(tid)
            if len(order) > self.recent_cap:
                recent.discard(order.popleft())

    def open_gaps(self, venue: str, symbol: str) -> list[tuple[int, int]]:
        st = self.symbols.get((venue, symbol))
        return [(a, b) for a, b in st.open_gaps] if st else []
