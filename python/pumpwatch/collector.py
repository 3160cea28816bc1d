"""The recorder: every enabled venue's trades into one store, continuously.

Per venue a `VenueRecorder` discovers the instruments over REST, shards them over connections
within the venue's limits, hands every frame to the Rust ingest path with its receive time, writes
connection markers, and fills holes over REST as far as the venue allows: id gaps the store reports
(by id or time), and after a reconnect the venue's recent-trades window (venues whose ids cannot
show a gap). What cannot be filled is written as an unfillable-gap marker with its span.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from . import _core
from .config import Config, VenueSettings
from .connection import HttpError, ReconnectPolicy, VenueConnection, http_fetch
from .store import Store
from .venues import HttpFetch, Instrument, VenueSpec, get as venue_spec

log = logging.getLogger("pumpwatch.collector")

#: Backfill jobs waiting per venue; past it the oldest hole is named unfillable rather than
#: letting the queue (and memory) grow in a storm of gaps.
MAX_PENDING_BACKFILLS = 10_000
#: REST attempts per request before a hole is called unfillable.
REST_ATTEMPTS = 5
#: A connection of a venue whose ids cannot show a hole, silent for longer than this many times
#: its usual interval between frames (and at least SILENCE_MIN_NS), may have been stalled: its
#: symbols' recent-trades window is merged once data flows again.
SILENCE_FACTOR = 20.0
SILENCE_MIN_NS = 500_000_000
#: On stop, how long backfills already waiting may still run.
STOP_BACKFILL_GRACE_S = 5.0
#: How far back a restart looks in the log for the last id of each symbol.
RESTART_LOOKBACK_NS = 15 * 60 * 1_000_000_000
#: Ids per symbol remembered from the log at a restart, on venues without an id sequence: more
#: than any venue's recent-trades window or snapshot (Bybit linear: 1000).
RESTART_RECENT_IDS = 4096


@dataclass
class VenueCounters:
    frames: int = 0
    trades: int = 0
    gaps_found: int = 0
    gaps_filled: int = 0
    gaps_unfillable: int = 0
    quarantined: int = 0
    backfilled: int = 0
    rest_errors: int = 0
    silences: int = 0
    last_error: str = ""
    started_ns: int = field(default_factory=time.time_ns)


@dataclass(frozen=True)
class Hole:
    """What to backfill: ids `after_id < id < before_id` (sequenced venues) or the trades since
    `start_ns` (venues whose REST gives only the latest trades)."""

    symbol: str
    start_ns: int
    end_ns: int
    after_id: int | None = None
    before_id: int | None = None
    #: A routine merge of the recent-trades window (window_merge_s), not a known outage: where the
    #: window does not reach back to `start_ns` nothing is known lost, so nothing is named.
    routine: bool = False


class VenueRecorder:
    def __init__(self, spec: VenueSpec, settings: VenueSettings, store: Store, cfg: Config, http: HttpFetch) -> None:
        self.spec = spec
        self.venue = spec.id
        self.settings = settings
        self.store = store
        self.cfg = cfg
        self.http = http
        c = cfg.connection
        self.policy = ReconnectPolicy(
            initial_delay_s=c.initial_delay_s, max_delay_s=c.max_delay_s, factor=c.factor, jitter=c.jitter,
            idle_timeout_s=c.idle_timeout_s or None,
        )
        self.counters = VenueCounters()
        self.instruments: dict[str, Instrument] = {}
        self.connections: list[VenueConnection] = []
        self.state = "starting"
        self._holes: asyncio.Queue[Hole] = asyncio.Queue(MAX_PENDING_BACKFILLS)
        self._down_since: dict[int, int] = {}
        self._flow: dict[int, tuple[int, float]] = {}  # per connection: last trade frame, mean interval
        self._rest_gap_s = 1.0 / max(spec.backfill.requests_per_s, 0.1)
        self._tasks: list[asyncio.Task] = []
        self._sequenced = self.venue in _core.SEQUENCED_VENUES
        # Venues without an id sequence, after a restart: per symbol the exchange time of the
        # last trade in the log, from which its recent-trades window is merged once it is up.
        self._restart_from: dict[str, int] = {}

    # -- discovery

    async def discover(self) -> list[str]:
        if self.settings.symbols:
            return list(self.settings.symbols)
        bodies = []
        for request in self.spec.instruments_request():
            page: Any = request
            while page is not None:
                body = await self._rest(page)
                bodies.append(body)
                page = self.spec.next_instruments_request(page, body)
        found = [i for i in self.spec.parse_instruments(bodies) if i.is_trading and i.quote == self.cfg.quote]
        self.instruments = {i.symbol: i for i in found}
        for i in found:
            if i.price_scale is not None and i.qty_scale is not None:
                self.store.set_phemex_spot_scales(i.symbol, i.price_scale, i.qty_scale)
        symbols = sorted(self.instruments)
        if self.settings.max_symbols:
            symbols = symbols[: self.settings.max_symbols]
        return symbols

    # -- frames and connection states

    def on_frame(self, conn_index: int, frame: str | bytes, recv_ns: int) -> None:
        n, events = self.store.ingest(self.venue, frame, recv_ns)
        self.counters.frames += 1
        self.counters.trades += n
        if n and not self._sequenced:
            self._watch_silence(conn_index, recv_ns)
        if events:
            for e in events:
                self._on_event(e)

    def on_frames(self, conn_index: int, frames: list, recv_ns: int) -> None:
        """The frames of one socket read, in one call into the ingest path."""
        n, events = self.store.ingest_many(self.venue, frames, recv_ns)
        self.counters.frames += len(frames)
        self.counters.trades += n
        if n and not self._sequenced:
            self._watch_silence(conn_index, recv_ns)
        if events:
            for e in events:
                self._on_event(e)

    def _watch_silence(self, conn_index: int, recv_ns: int) -> None:
        """Trades resume after an unusual silence: the connection may have been stalled (open,
        sending nothing), which ids cannot reveal here; merge the recent-trades window."""
        last, mean = self._flow.get(conn_index, (0, 0.0))
        if last:
            gap = recv_ns - last
            if mean and gap > max(SILENCE_MIN_NS, SILENCE_FACTOR * mean):
                self.counters.silences += 1
                for symbol in self.connections[conn_index].symbols:
                    self._enqueue(Hole(symbol, last, recv_ns))
            else:
                mean = gap if not mean else 0.95 * mean + 0.05 * gap
        self._flow[conn_index] = (recv_ns, mean)

    def _on_event(self, e: tuple) -> None:
        kind = e[0]
        if kind == "gap":
            _, _, symbol, first, last, from_ts, to_ts = e
            self.counters.gaps_found += 1
            self._enqueue(Hole(symbol, from_ts, to_ts, after_id=first - 1, before_id=last + 1))
        elif kind == "gap_filled":
            self.counters.gaps_filled += 1
        elif kind == "quarantined":
            self.counters.quarantined += 1
            log.warning("%s: frame quarantined: %s", self.venue, e[2])
        elif kind == "control" and e[2] in ("error", "shutdown_notice"):
            log.warning("%s: %s: %s", self.venue, e[2], e[3][:200])
            if e[2] == "error":
                self.counters.last_error = e[3][:200]

    def on_state(self, conn_index: int, state: str, reason: str) -> None:
        now = time.time_ns()
        conn = self.connections[conn_index]
        self.store.append_marker(
            "connection_up" if state == "up" else "connection_down",
            ts_ns=now, venue=self.venue, detail=f"{conn.name}: {reason}"[:1000],
        )
        if state == "down":
            self._down_since.setdefault(conn_index, now)
            return
        down_since = self._down_since.pop(conn_index, None)
        if down_since is not None and not self._sequenced:
            # Ids cannot reveal what the outage took here: merge the venue's recent-trades window.
            for symbol in conn.symbols:
                self._enqueue(Hole(symbol, down_since, now))
        for symbol in conn.symbols:
            # The first connection up after a restart: what the recorder missed while it was
            # down is merged from the recent-trades window too.
            restart_from = self._restart_from.pop(symbol, None)
            if restart_from is not None:
                self._enqueue(Hole(symbol, restart_from, now))

    def _enqueue(self, hole: Hole) -> None:
        try:
            self._holes.put_nowait(hole)
        except asyncio.QueueFull:
            self._unfillable(hole, "too many holes waiting for backfill")

    # -- backfill

    async def _rest(self, request) -> bytes:
        delay = self._rest_gap_s
        for attempt in range(REST_ATTEMPTS):
            try:
                body = await self.http(self.spec.rest_url, request)
                await asyncio.sleep(self._rest_gap_s)  # the venue's REST rate, one request at a time
                return body
            except HttpError as e:
                self.counters.rest_errors += 1
                self.counters.last_error = str(e)[:200]
                if e.status in (418, 429, 403) or e.status >= 500:
                    delay = min(delay * 4, 60.0)
                    log.warning("%s: REST %s, backing off %.1f s", self.venue, e.status, delay)
                    await asyncio.sleep(delay)
                    continue
                raise
            except (OSError, TimeoutError) as e:
                self.counters.rest_errors += 1
                self.counters.last_error = str(e)[:200]
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise ConnectionError(f"{self.venue}: REST {request.path} failed {REST_ATTEMPTS} times: {self.counters.last_error}")

    async def backfill_loop(self) -> None:
        while True:
            hole = await self._holes.get()
            try:
                await self._fill(hole)
            except asyncio.CancelledError:
                self._unfillable(hole, "the recorder stopped before this hole was backfilled")
                raise
            except Exception as e:  # noqa: BLE001 - a hole we could not fill is named, not fatal
                self._unfillable(hole, f"backfill failed: {e}")
            finally:
                self._holes.task_done()

    async def _fill(self, hole: Hole) -> None:
        spec = self.spec
        bounds = dict(after_id=hole.after_id, before_id=hole.before_id, start_ns=hole.start_ns, end_ns=hole.end_ns)
        inst = self.instruments.get(hole.symbol)
        oldest_ts = None
        for request in spec.backfill_requests(hole.symbol, **bounds):
            page: Any = request
            while page is not None:
                rows = spec.parse_backfill(await self._rest(page), hole.symbol, instrument=inst)
                if rows:
                    trades = [_core.Trade(**{**r, "recv_ns": time.time_ns()}) for r in rows]
                    n, events = self.store.ingest_trades(trades)
                    self.counters.backfilled += n
                    for e in events or []:
                        self._on_event(e)
                    first = min(r["ts_ns"] for r in rows)
                    oldest_ts = first if oldest_ts is None else min(oldest_ts, first)
                page = spec.next_backfill_request(page, rows, **bounds)
        if hole.after_id is not None:
            remaining = [g for g in self.store.open_gaps(self.venue, hole.symbol) if g[0] <= hole.before_id - 1 and g[1] >= hole.after_id + 1]
            if remaining:
                self._unfillable(hole, f"ids {remaining[0][0]}..{remaining[-1][1]} not served by the venue's REST")
        elif not hole.routine and (oldest_ts is None or oldest_ts > hole.start_ns):
            # The recent-trades window does not reach back to the start of the outage.
            end = oldest_ts if oldest_ts is not None else hole.end_ns
            self._unfillable(Hole(hole.symbol, hole.start_ns, end), "the venue's recent-trades window does not reach back to the outage")

    def _unfillable(self, hole: Hole, why: str) -> None:
        if hole.routine:
            return  # a routine window merge that did not happen: nothing is known to be missing
        self.counters.gaps_unfillable += 1
        self.store.append_marker(
            "gap_unfillable", ts_ns=time.time_ns(), venue=self.venue, symbol=hole.symbol,
            from_ts_ns=hole.start_ns, to_ts_ns=hole.end_ns,
            from_id="" if hole.after_id is None else str(hole.after_id + 1),
            to_id="" if hole.before_id is None else str(hole.before_id - 1), detail=why,
        )
        log.warning("%s %s: unfillable gap %s..%s: %s", self.venue, hole.symbol, hole.start_ns, hole.end_ns, why)

    # -- restart

    def seed_from_log(self) -> None:
        """After a restart, continue where the log left off, so what the restart (or a kill)
        took is backfilled and nothing already stored is stored twice:

        - sequenced venues: each symbol's id sequence continues from its last id in the log (the
          first live trade then reveals, and the backfill closes, the hole the restart made), and
          holes the log shows found but neither filled nor named unfillable (a backfill the
          kill interrupted) are reopened and backfilled again;
        - other venues: the ids already stored are remembered (a recent-trades window or a
          snapshot overlapping them is not stored again), and each symbol's recent-trades
          window is merged from its last stored trade once its connection is up.
        """
        now = time.time_ns()
        since = now - RESTART_LOOKBACK_NS
        table = self.store.query(since, now + 60 * 1_000_000_000, venues=[self.venue], include_non_trades=True)
        symbols = table.column("symbol").to_pylist()
        tids = table.column("trade_id").to_pylist()
        times = table.column("ts_ns").to_pylist()
        if not self._sequenced:
            by_symbol: dict[str, list[str]] = {}
            for symbol, tid, ts in zip(symbols, tids, times):
                by_symbol.setdefault(symbol, []).append(tid)
                self._restart_from[symbol] = max(ts, self._restart_from.get(symbol, ts))
            for symbol, ids in by_symbol.items():
                self.store.seed_recent_ids(self.venue, symbol, ids[-RESTART_RECENT_IDS:])
            return
        last: dict[str, tuple[int, int]] = {}
        stored: dict[str, list[int]] = {}
        for symbol, tid, ts in zip(symbols, tids, times):
            if tid.isdigit():
                n = int(tid)
                stored.setdefault(symbol, []).append(n)
                if symbol not in last or n > last[symbol][0]:
                    last[symbol] = (n, ts)
        for symbol, (n, ts) in last.items():
            self.store.seed_last_id(self.venue, symbol, n, ts)
        for symbol, first, last_missing, from_ts, to_ts in self._holes_left_open(since, stored):
            self.store.seed_open_gap(self.venue, symbol, first, last_missing)
            self._enqueue(Hole(symbol, from_ts, to_ts, after_id=first - 1, before_id=last_missing + 1))

    def _holes_left_open(self, since: int, stored: dict[str, list[int]]) -> list[tuple[str, int, int, int, int]]:
        """Id ranges inside `gap_found` markers of this venue that hold no stored trade and no
        `gap_unfillable` marker names: holes whose backfill a kill interrupted."""
        found: list[tuple[str, int, int, int, int]] = []
        named: dict[str, list[tuple[int, int]]] = {}
        for m in self.store.markers(since, None).to_pylist():
            if m["venue"] != self.venue or not m["from_id"].isdigit() or not m["to_id"].isdigit():
                continue
            span = (int(m["from_id"]), int(m["to_id"]))
            if m["kind"] == "gap_found":
                found.append((m["symbol"], *span, m["from_ts_ns"], m["to_ts_ns"]))
            elif m["kind"] == "gap_unfillable":
                named.setdefault(m["symbol"], []).append(span)
        ids = {symbol: sorted(v) for symbol, v in stored.items()}
        holes = []
        for symbol, a, b, from_ts, to_ts in found:
            have = ids.get(symbol, [])
            covered = [(n, n) for n in have[bisect.bisect_left(have, a): bisect.bisect_right(have, b)]]
            covered += [(max(x, a), min(y, b)) for x, y in named.get(symbol, []) if x <= b and a <= y]
            start = a
            for x, y in sorted(covered):
                if x > start:
                    holes.append((symbol, start, x - 1, from_ts, to_ts))
                start = max(start, y + 1)
            if start <= b:
                holes.append((symbol, start, b, from_ts, to_ts))
        return holes

    # -- lifetime

    async def run(self) -> None:
        try:
            symbols = await self.discover()
        except Exception as e:  # noqa: BLE001 - one venue failing leaves the others recording
            self.state = f"down: instrument list failed: {e}"
            self.counters.last_error = str(e)[:200]
            log.error("%s: %s", self.venue, self.state)
            return
        if not symbols:
            self.state = "idle: no instruments"
            return
        self.seed_from_log()
        shards = self.spec.shard(symbols)
        if self.spec.max_connections and len(shards) > self.spec.max_connections:
            log.warning("%s: %d shards exceed the venue's %d connections; recording the first %d",
                        self.venue, len(shards), self.spec.max_connections, self.spec.max_connections)
            shards = shards[: self.spec.max_connections]
        for shard in shards:
            self._connect(shard)
        self._tasks.append(asyncio.create_task(self.backfill_loop(), name=f"{self.venue}-backfill"))
        self._tasks.append(asyncio.create_task(self.refresh_loop(), name=f"{self.venue}-refresh"))
        self._tasks.append(asyncio.create_task(self.window_merge_loop(), name=f"{self.venue}-window-merge"))
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()

    def _connect(self, shard: list[str]) -> None:
        i = len(self.connections)
        conn = VenueConnection(
            self.spec, shard, http=self.http, policy=self.policy,
            on_frame=lambda f, t: self.on_frame(i, f, t),
            on_frames=lambda fs, t: self.on_frames(i, fs, t),
            on_state=lambda s, r: self.on_state(i, s, r),
            name=f"{self.venue}#{i}", rng=random.Random(),
        )
        self.connections.append(conn)
        self._tasks.append(asyncio.create_task(conn.run(), name=conn.name))
        self.state = f"recording {sum(len(c.symbols) for c in self.connections)} symbols on {len(self.connections)} connections"

    async def window_merge_loop(self) -> None:
        """Venues whose ids cannot show a hole: a trade message lost while the stream flows
        leaves no sign, so every `window_merge_s` each symbol's recent-trades window is merged
        (duplicates dropped by the store). Queued behind the backfills and paced with them."""
        every = self.cfg.window_merge_s
        if self._sequenced or every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            symbols = [s for c in self.connections for s in c.symbols]
            if self._holes.qsize() + len(symbols) > MAX_PENDING_BACKFILLS // 2:
                continue  # a storm of holes: they come first, the routine merge waits
            now = time.time_ns()
            for symbol in symbols:
                self._holes.put_nowait(Hole(symbol, now - int(every * 1e9), now, routine=True))

    async def refresh_loop(self) -> None:
        """New instruments are subscribed (on connections of their own) as the venue lists them.
        Delisted ones simply fall silent on their connections."""
        if self.settings.symbols or self.cfg.discovery_refresh_s <= 0:
            return
        while True:
            await asyncio.sleep(self.cfg.discovery_refresh_s)
            try:
                symbols = await self.discover()
            except Exception as e:  # noqa: BLE001 - the next refresh tries again
                log.warning("%s: refreshing the instrument list failed: %s", self.venue, e)
                continue
            have = {s for c in self.connections for s in c.symbols}
            new = [s for s in symbols if s not in have]
            if new:
                log.info("%s: %d new instruments: %s", self.venue, len(new), ", ".join(new[:10]))
                for shard in self.spec.shard(new):
                    self._connect(shard)

    async def stop(self) -> None:
        """Closes the connections cleanly (their `down` markers say so), gives the backfills
        waiting a moment to finish, and names every hole still open as unfillable: the log never
        ends with a hole that nothing names."""
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)
        try:
            await asyncio.wait_for(self._holes.join(), STOP_BACKFILL_GRACE_S)
        except asyncio.TimeoutError:
            pass
        while not self._holes.empty():
            self._unfillable(self._holes.get_nowait(), "the recorder stopped before this hole was backfilled")
            self._holes.task_done()

    def status(self) -> dict:
        now = time.time_ns()
        last = max((c.last_message_ns for c in self.connections), default=0)
        return {
            "state": self.state,
            "connections": len(self.connections),
            "reconnects": sum(c.reconnects for c in self.connections),
            "last_message_age_s": round((now - last) / 1e9, 3) if last else None,
            "pending_backfills": self._holes.qsize(),
            **{k: v for k, v in vars(self.counters).items() if k != "started_ns"},
        }


class Collector:
    """All enabled venues into one store."""

    def __init__(self, cfg: Config, store: Store, *, specs: dict[str, VenueSpec] | None = None, http: HttpFetch = http_fetch) -> None:
        self.cfg = cfg
        self.store = store
        self.recorders = {}
        for venue, settings in cfg.venues.items():
            if not settings.enabled:
                continue
            spec = (specs or {}).get(venue) or venue_spec(venue)
            if settings.ws_url or settings.rest_url:
                spec = spec.with_urls(ws_url=settings.ws_url or None, rest_url=settings.rest_url or None)
            self.recorders[venue] = VenueRecorder(spec, settings, store, cfg, http)
        self.started_ns = time.time_ns()

    async def run(self, stop: asyncio.Event) -> None:
        self.store.append_marker("recorder_start", ts_ns=time.time_ns(), detail=f"venues: {', '.join(self.recorders)}")
        tasks = [asyncio.create_task(r.run(), name=v) for v, r in self.recorders.items()]
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*(r.stop() for r in self.recorders.values()), return_exceptions=True)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.store.append_marker("recorder_stop", ts_ns=time.time_ns())

    def status(self) -> dict:
        stats = self.store.ingest_stats()
        return {
            "started_ns": self.started_ns,
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 1),
            "data_dir": self.store.path,
            "ingest": stats,
            "venues": {v: r.status() for v, r in self.recorders.items()},
        }
