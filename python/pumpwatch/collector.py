"""The recorder: every enabled venue's trades into one store, continuously.

Per venue a `VenueRecorder` discovers the instruments over REST, shards them over connections
within the venue's limits, hands every frame to the Rust ingest path with its receive time, writes
connection markers, and fills holes over REST as far as the venue allows: id gaps the store reports
(by id or time), and after a reconnect the venue's recent-trades window (venues whose ids cannot
show a gap). What cannot be filled is written as an unfillable-gap marker with its span.

Connections never silently die: each shard of symbols runs on one connection or two redundant
ones (`redundancy`), rotated make-before-break ahead of planned cuts (the connection's lifetime;
a shutdown notice the venue sends); a symbol that falls silent while its connection delivers the
others is resubscribed and named in the status; the instrument list is refreshed (new instruments
subscribed, delisted ones unsubscribed). A venue that fails says how in `status()` and affects no
other.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from . import _core
from .capture import save_instruments
from .config import Config, VenueSettings
from .connection import ReconnectPolicy, VenueConnection
from .net import RATE_REFUSALS, Backoff, Budgets, http_fetch, raise_if_cancelling, venue_fetch
from .store import RecorderStore
from .tls import context_for
from .venues import CLOSED, BackfillRow, HttpFetch, HttpRequest, Instrument, VenueAnswerError, VenueSpec
from .venues import get as venue_spec

log = logging.getLogger("pumpwatch.collector")

#: Backfill jobs waiting per venue; past it the oldest hole is named unfillable rather than
#: letting the queue (and memory) grow in a storm of gaps.
MAX_PENDING_BACKFILLS = 10_000
#: REST attempts per request before a hole is called unfillable.
REST_ATTEMPTS = 5
#: How REST waits after a refusal (429/418/403/5xx) or a network failure, attempt by attempt;
#: never less than the venue's Retry-After, nor than the spec's hold for that status (Bybit 403).
REST_BACKOFF = Backoff(initial_s=0.5, max_s=60.0, factor=4.0, jitter=0.2)
#: A connection of a venue whose ids cannot show a hole, silent for longer than this many times
#: its usual interval between frames (and at least SILENCE_MIN_NS), may have been stalled: its
#: symbols' recent-trades window is merged once data flows again.
SILENCE_FACTOR = 20.0
SILENCE_MIN_NS = 500_000_000
#: On stop, how long backfills already waiting may still run.
STOP_BACKFILL_GRACE_S = 5.0
#: How far back a restart looks in the log for the last id of each symbol.
RESTART_LOOKBACK_NS = 15 * 60 * 1_000_000_000
#: How often the live trades are looked over for silent symbols.
SILENT_CHECK_S = 0.5
#: Intervals a symbol must have shown before its silence can mean anything.
SILENT_MIN_INTERVALS = 10
#: Weight of the newest interval in a symbol's usual interval between trades (an EWMA).
SILENT_EWMA = 0.05
#: Resubscribes of silent symbols per shard and hour. A quiet market makes false alarms (a symbol
#: that traded in bursts), and subscribe messages count against venue limits (OKX: 480 per
#: connection and hour), so past this the alarm is raised and named without a resubscribe.
RESUBSCRIBES_PER_HOUR = 60
#: A symbol asked for again after a venue refused it counts as subscribed (from when it was asked)
#: once this long has passed without a new refusal: a refusal comes back within a round trip.
RETRY_CONFIRM_S = 2.0
#: An instrument list that drops more than this share of the subscribed symbols at once (and at
#: least MASS_DROP_MIN of them) is taken for a fault of the venue's answer until the next fetch
#: shows the same: unsubscribing a live symbol loses its trades, keeping a delisted one costs
#: nothing.
MASS_DROP_SHARE = 0.5
MASS_DROP_MIN = 5
HOUR_NS = 3600 * 1_000_000_000
#: How long the first venue of a shared connection budget waits for the others' instrument lists
#: before the budget is planned without them (they get what is left).
BUDGET_PLAN_WAIT_S = 10.0
#: REST pages one listing backfill may take (a coin new to the venue has few; an old one is cut).
LISTING_BACKFILL_PAGES = 50
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
    silent_alarms: int = 0
    venue_errors: int = 0
    rotation_notices: int = 0
    subscribed: int = 0
    unsubscribed: int = 0
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
    #: A listing's instrument subscribed after `start_ns` (the capture window's start): its trades
    #: before the subscription, fetched over REST back to `start_ns` or to the venue's first trade.
    listing: bool = False


@dataclass(eq=False)
class Shard:
    """Symbols carried together, by one connection or (redundancy 2) two twins."""

    symbols: list[str]
    connections: list[VenueConnection] = field(default_factory=list)
    #: When the last connection of the shard went down (trades may be missing since), or None.
    down_since: int | None = None
    #: Receive time of its latest trade frame and the mean interval between them.
    last_trade_ns: int = 0
    mean_interval_ns: float = 0.0
    #: When its silent symbols were resubscribed, over the last hour.
    resubscribed_ns: list[int] = field(default_factory=list)
    #: For the silent-symbol watch: receive time of its latest socket read with trades (any
    #: connection of the shard), the usual interval between them, and the recent stretches
    #: (from, to) in which it delivered none for unusually long.
    delivered_ns: int = 0
    delivery_interval_ns: float = 0.0
    quiet_ns: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class SymbolActivity:
    """When a symbol last traded live and how often it usually does."""

    last_ns: int = 0
    mean_interval_ns: float = 0.0
    intervals: int = 0
    silent_since_ns: int = 0  # nonzero while the alarm is raised


@runtime_checkable
class TurnoverSource(Protocol):
    """A venue spec that can tell every symbol's 24 h turnover in one request (Phemex)."""

    def turnover_request(self) -> HttpRequest: ...

    def parse_turnover(self, body: str | bytes) -> dict[str, Any]: ...


class ClientBudget:
    """Connections one client may hold across venues that share a gateway (Phemex: 5 for spot and
    contracts together, docs/VENUES.md §9.1). When the symbols do not fit, the ones with the highest 24 h
    turnover (across the venues) are recorded, a just-announced coin's always first; the rest are
    named per venue in `not_recorded`."""

    def __init__(self, name: str, limit: int, members: list[VenueRecorder]) -> None:
        self.name, self.limit, self.members = name, limit, members
        self.candidates: dict[str, list[str]] = {}
        self.plan: dict[str, list[str]] = {}
        self._planned = asyncio.Event()

    def used(self) -> int:
        return sum(len(r.connections) for r in self.members)

    def _connections(self, rec: VenueRecorder, n: int) -> int:
        return math.ceil(n / rec.spec.max_streams_per_connection) * rec.redundancy

    async def choose(self, rec: VenueRecorder, symbols: list[str]) -> list[str]:
        """The symbols of `rec` that get a connection within the budget."""
        self.candidates[rec.venue] = symbols
        if len(self.candidates) < len(self.members) and not self._planned.is_set():
            try:
                await asyncio.wait_for(self._planned.wait(), BUDGET_PLAN_WAIT_S)
            except TimeoutError:
                pass
        if not self._planned.is_set() or rec.venue not in self.plan:
            self._make_plan()
        return self.plan.get(rec.venue, [])

    def _make_plan(self) -> None:
        """Greedy by turnover over every venue's candidates not planned yet, within the room the
        planned ones leave."""
        by_venue = {r.venue: r for r in self.members}
        todo = [v for v in self.candidates if v not in self.plan]
        taken = {v: list(self.plan[v]) for v in self.plan}
        room = self.limit - sum(self._connections(by_venue[v], len(s)) for v, s in taken.items())
        ranked = []
        for v in todo:
            rec = by_venue[v]
            for s in self.candidates[v]:
                inst = rec.instruments.get(s)
                urgent = inst is not None and rec.for_listing(inst)
                ranked.append((not urgent, -rec.turnover.get(s, 0), v, s))
        ranked.sort()
        chosen: dict[str, list[str]] = {v: [] for v in todo}
        for _, _, v, s in ranked:
            rec = by_venue[v]
            before = self._connections(rec, len(chosen[v]))
            after = self._connections(rec, len(chosen[v]) + 1)
            if after - before <= room:
                chosen[v].append(s)
                room -= after - before
        for v in todo:
            self.plan[v] = chosen[v]
            rec = by_venue[v]
            rec.not_recorded = sorted(s for s in self.candidates[v] if s not in chosen[v])
            if rec.not_recorded:
                log.warning(
                    "%s: %d symbols do not fit the %d connections per client shared by %s; recording the "
                    "%d with the highest 24 h turnover, not: %s",
                    v,
                    len(rec.not_recorded),
                    self.limit,
                    ", ".join(by_venue),
                    len(chosen[v]),
                    ", ".join(rec.not_recorded[:20]),
                )
        self._planned.set()


#: Unfillable-gap markers written for one hole's remaining id ranges; past it, one more names the rest.
MAX_UNFILLABLE_MARKERS = 100


def _inside_hole(row: BackfillRow, hole: Hole) -> bool:
    """An AGGREGATED row is stored only when every id it covers lies inside the hole: one that
    straddles its edge would count again trades already held singly (those ids stay named)."""
    if not row["flags"] & _core.FLAGS["AGGREGATED"]:
        return True
    first, _, last = row["trade_id"].partition("-")
    return (
        hole.before_id is not None
        and hole.after_id is not None
        and hole.after_id < int(first) <= int(last) < hole.before_id
    )


class VenueRecorder:
    def __init__(
        self,
        spec: VenueSpec,
        settings: VenueSettings,
        store: RecorderStore,
        cfg: Config,
        http: HttpFetch,
        budgets: Budgets | None = None,
    ) -> None:
        self.spec = spec
        self.venue = spec.id
        self.settings = settings
        self.store = store
        self.cfg = cfg
        self.http = http
        c = cfg.connection
        self.policy = ReconnectPolicy(
            initial_delay_s=c.initial_delay_s,
            max_delay_s=c.max_delay_s,
            factor=c.factor,
            jitter=c.jitter,
            idle_timeout_s=c.idle_timeout_s or None,
            rotate_at_fraction=c.rotate_at_fraction,
            rotation_overlap_s=c.rotation_overlap_s,
        )
        self.redundancy = settings.redundancy or c.redundancy
        self.counters = VenueCounters()
        self.instruments: dict[str, Instrument] = {}
        #: Symbols on the venue's list that may trade again (all but closed ones): a subscribed
        #: symbol missing here is delisted and unsubscribed.
        self.listed: set[str] = set()
        self.connections: list[VenueConnection] = []
        self.shards: list[Shard] = []
        self.state = "starting"
        self.activity: dict[str, SymbolActivity] = {}
        self._last_venue_error_ns = 0
        self._last_trade_ns = 0
        self._holes: asyncio.Queue[Hole] = asyncio.Queue(MAX_PENDING_BACKFILLS)
        self.filling: Hole | None = None  # the hole being backfilled now
        self._side_tasks: set[asyncio.Task] = set()
        #: When the silent watch first saw each subscribed symbol that has not traded yet.
        self._never_seen: dict[str, int] = {}
        #: Symbols the venue refused to subscribe (with its reason): not recorded.
        self.refused_symbols: dict[str, str] = {}
        #: Refused symbol -> its state on the venue's instrument list then (None: not on it).
        self._refused_as: dict[str, str | None] = {}
        #: Refused symbol asked for again -> (when, quietly: its list entry had not changed).
        self._retrying: dict[str, tuple[int, bool]] = {}
        #: Why the venue records another trade channel than its spec's first (OKX `trades` when
        #: `trades-all` needs a login), or "".
        self.channel_fallback = ""
        #: The symbols a list dropped at once, held until the next fetch confirms (MASS_DROP_SHARE).
        self._mass_drop: list[str] = []
        # Per-IP budgets shared with the other venues of the process (both markets of an exchange).
        self.budgets = budgets if budgets is not None else Budgets()
        self.rest_limiter = self.budgets.limiter(spec.rest_pacing())
        self._rest_holds = dict(spec.rest_holds)
        self._rng = random.Random()
        self._tasks: list[asyncio.Task] = []
        self._sequenced = self.venue in _core.SEQUENCED_VENUES
        # Venues without an id sequence, after a restart: per symbol the exchange time of the
        # last trade in the log, from which its recent-trades window is merged once it is up.
        self._restart_from: dict[str, int] = {}
        #: Assets of KRW listings triggered (asset -> trigger ns): their instruments are subscribed
        #: in any state but closed, ahead of any connection budget (issue 13).
        self.listing_assets: dict[str, int] = {}
        #: Symbol -> when its subscribe frames first went out in this run (wall ns).
        self.subscribed_ns: dict[str, int] = {}
        #: Symbols the run started with (a later subscription gets a marker of its own).
        self._initial: set[str] = set()
        #: Symbols dropped to make room for a listing's instrument (named in the status).
        self.evicted: list[str] = []
        self._relist_lock = asyncio.Lock()
        #: The connection budget this venue shares with others (Phemex spot and contracts), if any.
        self.budget: ClientBudget | None = None
        #: Symbol -> 24 h turnover (USDT), fetched where a shared budget must choose.
        self.turnover: dict[str, Any] = {}
        #: Listed symbols left out for the connection budget (named in the status).
        self.not_recorded: list[str] = []
        #: Told (asset, venue, symbol) once a listing's instrument is subscribed and what it traded
        #: before is fetched (the capture writes its event again if already written).
        self.on_listing_instrument: Callable[[str, str, str], None] | None = None
        self._running = False  # its first connections are made: relists may add to them

    # -- discovery

    async def discover(self) -> list[str]:
        if self.settings.symbols:
            return list(self.settings.symbols)
        bodies = []
        for request in self.spec.instruments_request():
            page: HttpRequest | None = request
            while page is not None:
                body = await self._rest(page)
                bodies.append(body)
                page = self.spec.next_instruments_request(page, body)
        every = self.spec.parse_instruments(bodies)
        if not every:
            # No live venue lists nothing: an empty list is a fault of its answer, and applied it
            # would unsubscribe every symbol (the current ones are kept).
            raise VenueAnswerError(
                f"{self.venue}: the instrument list came back empty ({len(bodies)} pages); "
                "keeping the current subscriptions until a fetch lists instruments again"
            )
        parsed = [i for i in every if i.quote == self.cfg.quote]
        if self.budget is not None and isinstance(self.spec, TurnoverSource):
            try:
                self.turnover = self.spec.parse_turnover(await self._rest(self.spec.turnover_request()))
            except Exception as e:
                log.warning(
                    "%s: 24 h turnover unavailable (%s); symbols beyond the connection budget are chosen by name",
                    self.venue,
                    e,
                )
        self.listed = {i.symbol for i in parsed if i.status != CLOSED}
        # Pre-trading instruments too: their first trades are a listing's pump (docs/VENUES.md §12).
        # A just-announced coin's instruments in any state but closed.
        found = [i for i in parsed if i.is_subscribed or (i.status != CLOSED and self.for_listing(i))]
        self.instruments = {i.symbol: i for i in found}
        try:  # kept for captures in any process: which instruments are a ticker's, and their sizes
            save_instruments(self.store.path, self.venue, found)
        except OSError as e:
            log.warning("%s: could not save the instrument list: %s", self.venue, e)
        for i in found:
            if i.price_scale is not None and i.qty_scale is not None:
                self.store.set_phemex_spot_scales(i.symbol, i.price_scale, i.qty_scale)
        symbols = sorted(self.instruments)
        if self.settings.max_symbols:
            first = [s for s in symbols if self.for_listing(self.instruments[s])]  # never left out
            symbols = first + [s for s in symbols if s not in first][: max(0, self.settings.max_symbols - len(first))]
        return symbols

    def for_listing(self, inst: Instrument) -> bool:
        """An instrument of a coin Upbit just announced (`1000`-prefixed and renamed bases included:
        `asset` undoes them)."""
        return bool(self.listing_assets) and (inst.asset in self.listing_assets or inst.base in self.listing_assets)

    # -- KRW listings

    async def on_listing(self, assets: Iterable[str], trigger_ns: int) -> None:
        """A KRW listing of `assets` was announced: fetch the instrument list again now and
        subscribe every instrument of them at once (ahead of any budget), then ask again on a
        short schedule while the venue does not list them yet (it may open them later)."""
        assets = [a.upper() for a in assets]
        for a in assets:
            self.listing_assets.setdefault(a, trigger_ns)
        if self.settings.symbols:
            return  # an explicit symbol list: no discovery on this venue
        if self._running:  # else run() is still discovering: its list includes them (listing_assets)
            await self.relist(f"KRW listing of {', '.join(assets)}")
        # Cancelled with the recorder's other tasks when it stops.
        self._tasks.append(
            asyncio.create_task(self._relist_schedule(assets, trigger_ns), name=f"{self.venue}-listing-relist")
        )

    def listing_kinds(self, asset: str) -> set[str]:
        """The kinds (spot, perp) of `asset` subscribed here (one the venue refused is not, so
        the listing's instrument list is asked again until it is taken)."""
        have = {s for sh in self.shards for s in sh.symbols} - set(self.refused_symbols)
        return {i.kind for s, i in self.instruments.items() if s in have and asset in (i.asset, i.base)}

    async def _relist_schedule(self, assets: list[str], trigger_ns: int) -> None:
        """Every `listing_relist_fast_s` for `listing_relist_fast_for_s`, then every
        `listing_relist_slow_s` until `listing_relist_for_s` after the trigger, while the venue
        lacks an instrument of one of `assets` of its kind (spot venues: spot, others: perpetual).
        Each ask is one instrument-list fetch, paced like every REST call of the venue."""
        c = self.cfg
        while True:
            since_s = (time.time_ns() - trigger_ns) / 1e9
            if since_s >= c.listing_relist_for_s:
                return
            if all(self.spec.kind in self.listing_kinds(a) for a in assets):
                return  # listed and subscribed: the routine refresh follows it from here
            every = c.listing_relist_fast_s if since_s < c.listing_relist_fast_for_s else c.listing_relist_slow_s
            await asyncio.sleep(max(every, 0.05))
            if not self._running:
                continue
            try:
                await self.relist(f"KRW listing of {', '.join(assets)}: asking again")
            except Exception as e:
                log.warning("%s: instrument list for the listing of %s failed: %s", self.venue, ", ".join(assets), e)

    async def relist(self, why: str) -> None:
        """Fetches the instrument list and applies it (one at a time per venue)."""
        async with self._relist_lock:
            symbols = await self.discover()
            await self.apply_instruments(symbols)

    def _on_subscribed(self, symbols: list[str], ns: int) -> None:
        """Subscribe frames for `symbols` went out. The first time in this run for a symbol added
        after the start (a new instrument) or a listing's (also at the start: a restart after the
        trigger), a marker says when: event.json reports it and coverage knows nothing of it was
        recorded before; a listing's trades before it are fetched over REST."""
        for s in symbols:
            if s in self.subscribed_ns or s in self._retrying:  # a retry counts once it is not refused
                continue
            self.subscribed_ns[s] = ns
            inst = self.instruments.get(s)
            if s in self._initial and not (inst is not None and self.for_listing(inst)):
                continue
            why = f"subscribed ({inst.status})" if inst is not None else "subscribed"
            if inst is not None and self.for_listing(inst):
                why += f" for the KRW listing of {inst.asset}"
                trigger_ns = self.listing_assets.get(inst.asset) or self.listing_assets.get(inst.base) or ns
                start = trigger_ns - int(self.cfg.capture.before_s * 1e9)
                if start < ns:  # what traded before it was subscribed is fetched over REST
                    self._enqueue(Hole(s, start, ns, listing=True))
                else:
                    self._listing_instrument_ready(s)
            self.store.append_marker("subscription_set", ts_ns=ns, venue=self.venue, symbol=s, detail=why)

    # -- frames and connection states

    def on_frame(self, shard: Shard, conn: VenueConnection, frame: str | bytes, recv_ns: int) -> None:
        n, events = self.store.ingest(self.venue, frame, recv_ns)
        self._ingested(shard, conn, 1, n, events, recv_ns)

    def on_frames(self, shard: Shard, conn: VenueConnection, frames: list, recv_ns: int) -> None:
        """The frames of one socket read, in one call into the ingest path."""
        n, events = self.store.ingest_many(self.venue, frames, recv_ns)
        self._ingested(shard, conn, len(frames), n, events, recv_ns)

    def _ingested(
        self, shard: Shard, conn: VenueConnection, frames: int, n: int, events: list | None, recv_ns: int
    ) -> None:
        self.counters.frames += frames
        self.counters.trades += n
        if n:
            self._last_trade_ns = recv_ns
            self._note_delivery(shard, recv_ns)
            if not self._sequenced:
                self._watch_silence(shard, recv_ns)
        if events:
            for e in events:
                if e[0] == "control" and e[2] == "shutdown_notice":
                    # A planned cut of this socket (Binance serverShutdown, OKX notice 64008,
                    # Gate futures.system upgrade): its replacement is made before it goes.
                    self.counters.rotation_notices += 1
                    conn.request_rotation(f"the venue announced a cut: {e[3][:120]}")
                elif (
                    e[0] == "control"
                    and e[2] == "error"
                    and ((rid := self.spec.rejected_request(e[3])) is not None or self.spec.refused_symbols(e[3]))
                ):
                    # A subscribe request refused for unknown symbols (docs/VENUES.md §12): drop
                    # the ones it names, or find them by splitting it, and subscribe the rest.
                    task = asyncio.ensure_future(conn.subscribe_refused(rid, e[3], self.spec.refused_symbols(e[3])))
                    self._side_tasks.add(task)
                    task.add_done_callback(self._side_tasks.discard)
                elif e[0] == "control" and e[2] == "error" and (spec := self.spec.fallback_channel(e[3])) is not None:
                    self._fall_back(spec, e[3])
                self._on_event(e)

    def _fall_back(self, spec: VenueSpec, detail: str) -> None:
        """The venue refused our trade channel to this client (OKX `trades-all` without a login,
        VENUES §4.1): every connection moves to `spec`'s channel, each by a make-before-break
        rotation (the new socket subscribes there; the refused one closes once the new one
        delivers), and new ones start there. Said once in the log, in a marker and in /status; the
        connections' later refusals of the old channel find the venue moved already."""
        old = self.spec.trade_channel()
        self.spec = spec
        self.channel_fallback = f"{old} refused ({detail[:200]}); recording {spec.trade_channel()} instead"
        log.warning("%s: %s", self.venue, self.channel_fallback)
        self.store.append_marker(
            "subscription_set", ts_ns=time.time_ns(), venue=self.venue, detail=self.channel_fallback
        )
        for conn in self.connections:
            conn.spec = spec
            conn.subscribe_frames = spec.subscribe_frames(conn.symbols)
            if conn.up:  # else its next socket opens on the new channel anyway
                conn.request_rotation(f"moving to {spec.trade_channel()}: the venue refused {old}")

    def _watch_silence(self, shard: Shard, recv_ns: int) -> None:
        """Trades resume after an unusual silence: the shard may have been stalled (open,
        sending nothing), which ids cannot reveal here; merge the recent-trades window. Per
        shard, so a redundant twin that kept delivering leaves nothing to merge."""
        last, mean = shard.last_trade_ns, shard.mean_interval_ns
        if last:
            gap = recv_ns - last
            if mean and gap > max(SILENCE_MIN_NS, SILENCE_FACTOR * mean):
                self.counters.silences += 1
                for symbol in shard.symbols:
                    self._enqueue(Hole(symbol, last, recv_ns))
            elif gap > 0:
                mean = gap if not mean else 0.95 * mean + 0.05 * gap
        shard.last_trade_ns, shard.mean_interval_ns = max(last, recv_ns), mean

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
                # The venue refused something we sent: a subscription, most likely.
                self.counters.venue_errors += 1
                self.counters.last_error = f"venue error: {e[3][:200]}"
                self._last_venue_error_ns = time.time_ns()

    def on_state(self, shard: Shard, conn: VenueConnection, state: str, reason: str) -> None:
        now = time.time_ns()
        what = {"up": "", "down": "", "rotated": "rotated make-before-break, no hole: "}[state]
        self.store.append_marker(
            "connection_up" if state == "up" else "connection_down",
            ts_ns=now,
            venue=self.venue,
            detail=f"{conn.name}: {what}{reason}"[:1000],
        )
        others_up = any(c.up for c in shard.connections if c is not conn)
        if state == "rotated" or (state == "down" and others_up):
            return  # another socket carries the shard: nothing was missed
        if state == "down":
            if shard.down_since is None:
                shard.down_since = now
            return
        down_since, shard.down_since = shard.down_since, None
        if down_since is not None and not self._sequenced:
            # Ids cannot reveal what the outage took here: merge the venue's recent-trades window.
            for symbol in shard.symbols:
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

    async def _rest(self, request: HttpRequest) -> str | bytes:
        """One REST request within the venue's budget (shared with the venues on the same
        per-IP allowance), retried after failures. A rate refusal holds the whole budget, so no
        request of any venue sharing it reaches the host before the hold ends: the longest of
        the back-off, the venue's Retry-After (429/418: never less) and the spec's hold for that
        status (Bybit 403 "access too frequent": 10 minutes, VENUES §12). A server error or a
        network failure delays only this request, by the same back-off."""
        limiter = self.rest_limiter
        for attempt in range(REST_ATTEMPTS):
            await limiter.acquire()
            try:
                return await self.http(self.spec.rest_url, request)
            except (OSError, TimeoutError) as e:  # HttpError included: it is a ConnectionError
                raise_if_cancelling()
                self.counters.rest_errors += 1
                self.counters.last_error = str(e)[:200]
                if isinstance(e.__cause__, ssl.SSLCertVerificationError):
                    raise  # a refused certificate does not heal by retrying: say so at once
                status = getattr(e, "status", None)
                if status is not None and not (status in RATE_REFUSALS or status >= 500):
                    raise  # the venue refused this request itself: asking again gets the same
                wait = REST_BACKOFF.delay(attempt, self._rng, getattr(e, "retry_after_s", None))
                spec_hold = self._rest_holds.get(status, 0.0) if status is not None else 0.0
                wait = max(wait, spec_hold)
                why = f"REST {status}" if status is not None else f"REST failed: {type(e).__name__}"
                log.warning("%s: %s, backing off %.1f s", self.venue, why, wait)
                if status in RATE_REFUSALS or spec_hold:
                    # Our IP asked too much: the whole budget is held, no venue sharing it asks.
                    limiter.hold(wait, f"{self.venue}: {why}")
                else:
                    await limiter.sleep(wait)  # this host's trouble (5xx, network): this request waits
        raise ConnectionError(
            f"{self.venue}: REST {request.path} failed {REST_ATTEMPTS} times: {self.counters.last_error}"
        )

    async def backfill_loop(self) -> None:
        while True:
            hole = await self._holes.get()
            self.filling = hole
            try:
                await self._fill(hole)
            except asyncio.CancelledError:
                self._unfillable(hole, "the recorder stopped before this hole was backfilled")
                raise
            except Exception as e:
                self._unfillable(hole, f"backfill failed: {e}")
            finally:
                self.filling = None
                self._holes.task_done()

    async def _fill(self, hole: Hole) -> None:
        if hole.listing:
            return await self._fill_listing(hole)
        spec = self.spec
        bounds = dict(after_id=hole.after_id, before_id=hole.before_id, start_ns=hole.start_ns, end_ns=hole.end_ns)
        inst = self.instruments.get(hole.symbol)
        oldest_ts = None
        for request in spec.backfill_requests(hole.symbol, **bounds):
            page: HttpRequest | None = request
            while page is not None:
                rows = spec.parse_backfill(await self._rest(page), hole.symbol, instrument=inst)
                if hole.after_id is not None:
                    rows = [r for r in rows if _inside_hole(r, hole)]
                if rows:
                    first = self._store_backfill(rows)
                    oldest_ts = first if oldest_ts is None else min(oldest_ts, first)
                page = spec.next_backfill_request(page, rows, **bounds)
        if hole.after_id is not None and hole.before_id is not None:  # a hole in the ids has both ends
            remaining = [
                g
                for g in self.store.open_gaps(self.venue, hole.symbol)
                if g[0] <= hole.before_id - 1 and g[1] >= hole.after_id + 1
            ]
            why = "not served by the venue's REST"
            if getattr(spec, "keyless", False):
                why += (
                    " (no API key: the rest was covered from aggTrades, flagged AGGREGATED, which hold market"
                    " trades only, not NA/ADL/INSURANCE_FUND ids)"
                )
            # One marker per id range left, so each says exactly which ids stay uncovered.
            for a, b in remaining[:MAX_UNFILLABLE_MARKERS]:
                self._unfillable(
                    Hole(hole.symbol, hole.start_ns, hole.end_ns, after_id=a - 1, before_id=b + 1),
                    f"ids {a}..{b} {why}",
                )
            if len(remaining) > MAX_UNFILLABLE_MARKERS:
                a, b = remaining[MAX_UNFILLABLE_MARKERS][0], remaining[-1][1]
                self._unfillable(
                    Hole(hole.symbol, hole.start_ns, hole.end_ns, after_id=a - 1, before_id=b + 1),
                    f"{len(remaining) - MAX_UNFILLABLE_MARKERS} more id ranges in {a}..{b} {why}",
                )
        elif not hole.routine and (oldest_ts is None or oldest_ts > hole.start_ns):
            # The recent-trades window does not reach back to the start of the outage.
            end = oldest_ts if oldest_ts is not None else hole.end_ns
            self._unfillable(
                Hole(hole.symbol, hole.start_ns, end),
                "the venue's recent-trades window does not reach back to the outage",
            )

    def _listing_instrument_ready(self, symbol: str) -> None:
        inst = self.instruments.get(symbol)
        if self.on_listing_instrument is not None and inst is not None:
            try:
                self.on_listing_instrument(inst.asset, self.venue, symbol)
            except Exception as e:
                log.warning("%s %s: listing listener failed: %s", self.venue, symbol, e)

    async def _fill_listing(self, hole: Hole) -> None:
        try:
            await self._fill_listing_walk(hole)
        finally:
            self._listing_instrument_ready(hole.symbol)

    async def _fill_listing_walk(self, hole: Hole) -> None:
        """The trades of a listing's instrument from `hole.start_ns` (or the venue's first trade of
        it, if later) to its subscription. Complete when the walk reached `start_ns` or ended on a
        short page (the venue has nothing older): a `gap_filled` marker says so, and coverage then
        knows nothing before the subscription was missed. Otherwise the span not reached is named."""
        spec = self.spec
        inst = self.instruments.get(hole.symbol)
        if spec.backfill.reach == "by_id":  # forwards from the venue's first id of the symbol
            requests = spec.backfill_requests(hole.symbol, after_id=-1)
        else:
            requests = spec.backfill_requests(hole.symbol, start_ns=hole.start_ns, end_ns=hole.end_ns)
        oldest_ts, exhausted, pages = None, False, 0
        for request in requests:
            page: HttpRequest | None = request
            while page is not None and pages < LISTING_BACKFILL_PAGES:
                pages += 1
                rows = spec.parse_backfill(await self._rest(page), hole.symbol, instrument=inst)
                limit = int(getattr(page, "params", {}).get("limit", spec.backfill.max_rows))
                exhausted = len(rows) < limit
                if rows and self._sequenced:
                    # Oldest first: with no live trade yet, the first row starts the id sequence.
                    rows = sorted(rows, key=lambda r: (len(str(r["trade_id"])), str(r["trade_id"])))
                    self._open_below_live(hole, rows)
                if rows:
                    first = self._store_backfill(rows)
                    oldest_ts = first if oldest_ts is None else min(oldest_ts, first)
                page = spec.next_backfill_request(
                    page,
                    rows,
                    start_ns=hole.start_ns,
                    end_ns=hole.end_ns,
                    **({"after_id": -1} if spec.backfill.reach == "by_id" else {}),
                )
            if page is not None:
                exhausted = False  # cut at LISTING_BACKFILL_PAGES
        # Forwards from the first id, only reaching the present proves the span; backwards or by
        # time, reaching the window start does too.
        reached_start = spec.backfill.reach != "by_id" and oldest_ts is not None and oldest_ts <= hole.start_ns
        if exhausted or reached_start:
            self.store.append_marker(
                "gap_filled",
                ts_ns=time.time_ns(),
                venue=self.venue,
                symbol=hole.symbol,
                from_ts_ns=hole.start_ns,
                to_ts_ns=hole.end_ns,
                detail=f"listing: trades before the subscription fetched over REST, complete "
                f"({'from the first trade' if exhausted else 'back to the window start'})",
            )
        else:
            end = oldest_ts if oldest_ts is not None else hole.end_ns
            self._unfillable(
                Hole(hole.symbol, hole.start_ns, end),
                "a listing's trades before its subscription: the venue's REST does not reach back",
            )

    def _open_below_live(self, hole: Hole, rows: list[BackfillRow]) -> None:
        """The id tracker takes ids below the first live one for duplicates; a listing's trades
        from before its subscription are exactly those, and none of them is stored yet: open them
        as a hole so they are stored (once)."""
        ids = [int(r["trade_id"]) for r in rows if str(r["trade_id"]).isdigit()]
        if not ids:
            return
        live = [
            int(i)
            for i in self.store.query(
                hole.start_ns - RESTART_LOOKBACK_NS,
                time.time_ns() + 60 * 1_000_000_000,
                venues=[self.venue],
                symbols=[hole.symbol],
            )
            .column("trade_id")
            .to_pylist()
            if i.isdigit()
        ]
        if live and min(ids) < min(live):
            self.store.seed_open_gap(self.venue, hole.symbol, min(ids), min(live) - 1)

    def _store_backfill(self, rows: list[BackfillRow]) -> int:
        """Stores REST rows through the ingest path (the same dedupe and id checks as frames);
        returns the oldest exchange time among them."""
        trades = [_core.Trade(**(r | {"recv_ns": time.time_ns()})) for r in rows]
        n, events = self.store.ingest_trades(trades)
        self.counters.backfilled += n
        for e in events or []:
            self._on_event(e)
        return min(r["ts_ns"] for r in rows)

    def _unfillable(self, hole: Hole, why: str) -> None:
        if hole.routine:
            return  # a routine window merge that did not happen: nothing is known to be missing
        self.counters.gaps_unfillable += 1
        self.store.append_marker(
            "gap_unfillable",
            ts_ns=time.time_ns(),
            venue=self.venue,
            symbol=hole.symbol,
            from_ts_ns=hole.start_ns,
            to_ts_ns=hole.end_ns,
            from_id="" if hole.after_id is None else str(hole.after_id + 1),
            to_id="" if hole.before_id is None else str(hole.before_id - 1),
            detail=why,
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
            for symbol, tid, ts in zip(symbols, tids, times, strict=False):
                by_symbol.setdefault(symbol, []).append(tid)
                self._restart_from[symbol] = max(ts, self._restart_from.get(symbol, ts))
            for symbol, ids in by_symbol.items():
                self.store.seed_recent_ids(self.venue, symbol, ids[-RESTART_RECENT_IDS:])
            return
        last: dict[str, tuple[int, int]] = {}
        stored: dict[str, list[int]] = {}
        for symbol, tid, ts in zip(symbols, tids, times, strict=False):
            first, _, n_text = tid.partition("-")  # "<f>-<l>": an AGGREGATED record covers ids f..l
            if first.isdigit() and n_text.isdigit():
                stored.setdefault(symbol, []).extend(range(int(first), int(n_text) + 1))
                tid = n_text
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
            covered = [(n, n) for n in have[bisect.bisect_left(have, a) : bisect.bisect_right(have, b)]]
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
        symbols = await self._discover_until_found()
        if not symbols:
            self.state = "idle: no instruments"
            return
        if self.budget is not None:
            symbols = await self.budget.choose(self, symbols)
            if not symbols:
                self.state = "idle: no room in the connection budget"
                return
        self.seed_from_log()
        self._initial = set(symbols)
        self._add_shards(symbols)
        self._running = True
        self._tasks.append(asyncio.create_task(self.backfill_loop(), name=f"{self.venue}-backfill"))
        self._tasks.append(asyncio.create_task(self.refresh_loop(), name=f"{self.venue}-refresh"))
        self._tasks.append(asyncio.create_task(self.window_merge_loop(), name=f"{self.venue}-window-merge"))
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()

    async def _discover_until_found(self) -> list[str]:
        """The instrument list; a venue that cannot give it is retried with backoff (and says so
        in its state) while the other venues record."""
        attempt = 0
        while True:
            try:
                return await self.discover()
            except Exception as e:
                raise_if_cancelling()  # a stop that reached us as this failure: no retry
                self.state = f"down: instrument list failed: {e}"
                self.counters.last_error = str(e)[:200]
                log.error("%s: %s", self.venue, self.state)
            await asyncio.sleep(self.policy.delay(attempt, random.Random()))
            attempt += 1

    def _add_shards(self, symbols: list[str]) -> list[str]:
        """New connections for `symbols`, within the venue's connection budget; returns the
        symbols left out."""
        shards = self.spec.shard(symbols)
        room = None
        left_out: list[str] = []
        if self.budget is not None:
            room = (self.budget.limit - self.budget.used()) // self.redundancy
        elif self.spec.max_connections:
            room = self.spec.max_connections // self.redundancy - len(self.shards)
        if room is not None and len(shards) > room:
            log.warning(
                "%s: %d more shards exceed the venue's %d connections; recording the first %d",
                self.venue,
                len(shards),
                self.spec.max_connections,
                max(0, room),
            )
            left_out = [s for sh in shards[max(0, room) :] for s in sh]
            shards = shards[: max(0, room)]
            self.not_recorded = sorted(set(self.not_recorded) | set(left_out))
        for symbols_of_shard in shards:
            shard = Shard(list(symbols_of_shard))
            self.shards.append(shard)
            for twin in range(self.redundancy):
                self._connect(shard, twin)
        self.counters.subscribed = sum(len(sh.symbols) for sh in self.shards)
        return left_out

    def _connect(self, shard: Shard, twin: int = 0) -> VenueConnection:
        name = f"{self.venue}#{self.shards.index(shard)}" + (f"/{twin}" if self.redundancy > 1 else "")
        conn: VenueConnection

        def on_frame(f: str | bytes, t: int) -> None:
            self.on_frame(shard, conn, f, t)

        def on_frames(fs: list, t: int) -> None:
            self.on_frames(shard, conn, fs, t)

        def on_state(state: str, reason: str) -> None:
            self.on_state(shard, conn, state, reason)

        conn = VenueConnection(
            self.spec,
            shard.symbols,
            http=self.http,
            policy=self.policy,
            on_frame=on_frame,
            on_frames=on_frames,
            on_state=on_state,
            on_rejected=self._refused,
            name=name,
            rng=random.Random(),
            budgets=self.budgets,
            ssl_context=context_for(self.cfg.tls.ca_file),
        )
        conn.on_subscribed = self._on_subscribed
        shard.connections.append(conn)
        self.connections.append(conn)
        task = asyncio.create_task(conn.run(), name=conn.name)
        task.add_done_callback(self._connection_ended)
        self._tasks.append(task)
        return conn

    def _refused(self, symbol: str, reason: str) -> None:
        """The venue refused to subscribe `symbol`: named in the log and in /status."""
        retry = self._retrying.pop(symbol, None)
        if symbol in self.refused_symbols and retry is None:
            return  # a redundant twin found it too
        self.refused_symbols[symbol] = reason[:200]
        inst = self.instruments.get(symbol)
        self._refused_as[symbol] = inst.status if inst is not None else None
        # Not subscribed after all: when it is taken, that is its subscription time (event.json; a
        # listing's trades before it are fetched over REST).
        self.subscribed_ns.pop(symbol, None)
        if retry is not None and retry[1]:
            return  # asked again on an unchanged list and refused again: named already
        self.store.append_marker(
            "subscription_set",
            ts_ns=time.time_ns(),
            venue=self.venue,
            symbol=symbol,
            detail=f"the venue refused the subscription, not recorded: {reason}"[:1000],
        )

    def _connection_ended(self, task: asyncio.Task) -> None:
        """A connection's run() ends only when closed or when on_frame raised (a full disk):
        said here too, since connections added by a refresh are not awaited by run()."""
        if not task.cancelled() and task.exception() is not None:
            self.counters.last_error = f"{task.get_name()} stopped: {task.exception()}"[:200]
            log.error("%s: %s", self.venue, self.counters.last_error)

    async def window_merge_loop(self) -> None:
        """Venues whose ids cannot show a hole: a trade message lost while the stream flows
        leaves no sign, so every `window_merge_s` each symbol's recent-trades window is merged
        (duplicates dropped by the store). Queued behind the backfills and paced with them."""
        every = self.cfg.window_merge_s
        if self._sequenced or every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            symbols = sorted({s for c in self.connections for s in c.symbols})  # twins carry the same
            if self._holes.qsize() + len(symbols) > MAX_PENDING_BACKFILLS // 2:
                continue  # a storm of holes: they come first, the routine merge waits
            now = time.time_ns()
            for symbol in symbols:
                self._holes.put_nowait(Hole(symbol, now - int(every * 1e9), now, routine=True))

    async def refresh_loop(self) -> None:
        """New instruments are subscribed (on connections with room, else new ones) and delisted
        ones unsubscribed, as the venue's instrument list changes."""
        if self.settings.symbols or self.cfg.discovery_refresh_s <= 0:
            return
        while True:
            await asyncio.sleep(self.cfg.discovery_refresh_s)
            try:
                await self.relist("routine refresh")
            except Exception as e:
                log.warning("%s: refreshing the instrument list failed: %s", self.venue, e)

    async def apply_instruments(self, symbols: list[str]) -> None:
        have = {s for sh in self.shards for s in sh.symbols}
        gone = sorted(s for s in have if s not in self.listed)
        if len(gone) >= MASS_DROP_MIN and len(gone) > MASS_DROP_SHARE * len(have) and gone != self._mass_drop:
            log.warning(
                "%s: the instrument list dropped %d of %d subscribed symbols at once; unsubscribed only "
                "if the next fetch drops them too",
                self.venue,
                len(gone),
                len(have),
            )
            self._mass_drop, gone = gone, []
        else:
            self._mass_drop = []
        # Symbols the connection budget left out stay out (named), but a listing's never does.
        skip = set(self.not_recorded)
        new = [
            s
            for s in symbols
            if s not in have and (s not in skip or (s in self.instruments and self.for_listing(self.instruments[s])))
        ]
        if gone:
            await self._unsubscribe(gone)
        if new:
            await self._subscribe(new)
        await self._retry_refused()

    async def _retry_refused(self) -> None:
        """A symbol the venue refused to subscribe is asked for again at every fetch of its
        instrument list that lists it (the socket may learn a new listing after the list shows it,
        docs/VENUES.md §12 "Subscribe failures"). Where the list gained it (listed where it was
        not, or in another state) a marker says so; otherwise it is asked quietly, and a refusal
        as before is not named again. It counts as subscribed once RETRY_CONFIRM_S pass unrefused."""
        for symbol, was in list(self._refused_as.items()):
            inst = self.instruments.get(symbol)
            conns = [c for sh in self.shards if symbol in sh.symbols for c in sh.connections]
            if inst is None or not conns or symbol in self._retrying:
                continue
            gained = inst.status != was
            now = time.time_ns()
            self._retrying[symbol] = (now, not gained)
            if gained:  # still named refused until it is confirmed (the listing's schedule goes on)
                self.store.append_marker(
                    "subscription_set",
                    ts_ns=now,
                    venue=self.venue,
                    symbol=symbol,
                    detail=f"asked for again after a refusal: the instrument list now has it ({inst.status})",
                )
            for conn in conns:
                await conn.retry_rejected([symbol])
            task = asyncio.ensure_future(self._confirm_retry(symbol, now))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    async def _confirm_retry(self, symbol: str, asked_ns: int) -> None:
        """Not refused again within RETRY_CONFIRM_S: subscribed since it was asked for."""
        await asyncio.sleep(RETRY_CONFIRM_S)
        if self._retrying.get(symbol, (None, False))[0] != asked_ns:
            return  # refused again, or gone
        del self._retrying[symbol]
        self._refused_as.pop(symbol, None)
        self.refused_symbols.pop(symbol, None)
        self._never_seen.pop(symbol, None)  # its wait for a first trade starts now
        self._on_subscribed([symbol], asked_ns)

    async def _unsubscribe(self, gone: list[str]) -> None:
        log.info("%s: %d delisted instruments: %s", self.venue, len(gone), ", ".join(gone[:10]))
        for shard in list(self.shards):
            drop = [s for s in shard.symbols if s in gone]
            if not drop:
                continue
            if len(drop) == len(shard.symbols):  # nothing left to carry: the shard's sockets go
                self.shards.remove(shard)
                for conn in shard.connections:
                    await conn.close()
                    self.connections.remove(conn)
            else:
                for conn in shard.connections:
                    await conn.remove_symbols(drop)
                shard.symbols = [s for s in shard.symbols if s not in drop]
            for s in drop:
                self.activity.pop(s, None)
                self.refused_symbols.pop(s, None)  # delisted: a later listing subscribes it afresh
                self._refused_as.pop(s, None)
                self._retrying.pop(s, None)
        self.counters.unsubscribed += len(gone)
        self.counters.subscribed = sum(len(sh.symbols) for sh in self.shards)
        self.store.append_marker(
            "subscription_set",
            ts_ns=time.time_ns(),
            venue=self.venue,
            detail=f"unsubscribed {len(gone)} delisted: {', '.join(gone)}"[:1000],
        )

    async def _subscribe(self, new: list[str]) -> None:
        log.info("%s: %d new instruments: %s", self.venue, len(new), ", ".join(new[:10]))
        # A listing's instruments first: they go out at once, ahead of any budget.
        new = sorted(new, key=lambda s: not (s in self.instruments and self.for_listing(self.instruments[s])))
        rest = list(new)
        for shard in self.shards:  # fill connections with room first, within the venue's limits
            if not rest:
                break
            fit = 0
            while fit < len(rest) and len(self.spec.shard(shard.symbols + rest[: fit + 1])) == 1:
                fit += 1
            if fit:
                batch, rest = rest[:fit], rest[fit:]
                for conn in shard.connections:
                    await conn.add_symbols(batch)
                shard.symbols.extend(batch)
        if rest:
            left_out = self._add_shards(rest)
            urgent = [s for s in left_out if s in self.instruments and self.for_listing(self.instruments[s])]
            if urgent:
                await self._make_room(urgent)
        self.counters.subscribed = sum(len(sh.symbols) for sh in self.shards)
        self.store.append_marker(
            "subscription_set",
            ts_ns=time.time_ns(),
            venue=self.venue,
            detail=f"subscribed {len(new)} new: {', '.join(new)}"[:1000],
        )

    async def _make_room(self, urgent: list[str]) -> None:
        """The venue's connections are at their budget: each of a listing's instruments takes the
        slot of the least active symbol that is not a listing's: one never seen trading, else the
        one with the longest usual interval between trades, else the longest since its last."""

        def quietness(s: str) -> tuple:
            a = self.activity.get(s)
            if a is None or not a.intervals:
                return (0, 0.0, a.last_ns if a else 0, s)
            return (1, -a.mean_interval_ns, a.last_ns, s)

        for symbol in urgent:
            candidates = [
                (quietness(s), s, sh)
                for sh in self.shards
                for s in sh.symbols
                if not (s in self.instruments and self.for_listing(self.instruments[s]))
            ]
            if not candidates:
                log.error("%s: no slot for %s: every connection carries a listing's instruments", self.venue, symbol)
                continue
            _, victim, shard = min(candidates, key=lambda c: c[0])
            shard.symbols = [symbol if s == victim else s for s in shard.symbols]
            for conn in shard.connections:
                # Out first where the connection keeps a symbol (per-connection limits), then in.
                if len(conn.symbols) > 1:
                    await conn.remove_symbols([victim])
                    await conn.add_symbols([symbol])
                else:
                    await conn.add_symbols([symbol])
                    await conn.remove_symbols([victim])
            self.evicted.append(victim)
            self.not_recorded = sorted(set(self.not_recorded) | {victim})
            self.activity.pop(victim, None)
            why = f"dropped to give its slot to {symbol} (KRW listing): the venue's connections are at their budget"
            log.warning("%s %s: %s", self.venue, victim, why)
            self.store.append_marker(
                "subscription_set", ts_ns=time.time_ns(), venue=self.venue, symbol=victim, detail=why
            )

    # -- silent symbols

    def note_trades(self, symbol: str, sightings: int, last_recv_ns: int) -> None:
        """`symbol` was seen `sightings` times since the last look (trades of one frame count
        once), last at `last_recv_ns` (from the store's ring): keeps its usual interval between
        sightings (an EWMA, fed the batch's mean interval weighted as that many single updates)
        and ends its silence alarm."""
        a = self.activity.get(symbol)
        if a is None:
            self.activity[symbol] = SymbolActivity(last_ns=last_recv_ns)
            return
        if a.silent_since_ns:
            self._recovered(symbol, a, last_recv_ns)
        elif last_recv_ns > a.last_ns and a.last_ns:
            gap = (last_recv_ns - a.last_ns) / sightings
            weight = 1.0 - (1.0 - SILENT_EWMA) ** sightings
            a.mean_interval_ns = gap if not a.intervals else (1 - weight) * a.mean_interval_ns + weight * gap
            a.intervals += sightings
        a.last_ns = max(a.last_ns, last_recv_ns)

    def check_silent(self, now_ns: int) -> None:
        """Raises the alarm for symbols silent past `silent_factor` x their usual interval while
        their shard delivers other symbols, and resubscribes them once per silence."""
        c = self.cfg.connection
        if c.silent_factor <= 0:
            return
        shard_of = {s: sh for sh in self.shards for s in sh.symbols}
        shard_last: dict[int, int] = {}
        for symbol, a in self.activity.items():
            sh = shard_of.get(symbol)
            if sh is not None:
                shard_last[id(sh)] = max(shard_last.get(id(sh), 0), a.last_ns)
        for symbol, a in self.activity.items():
            sh = shard_of.get(symbol)
            if sh is None or a.silent_since_ns or a.intervals < SILENT_MIN_INTERVALS:
                continue
            threshold = max(c.silent_factor * a.mean_interval_ns, c.silent_min_s * 1e9)
            # Only the time its connection delivered counts: a stall of the whole socket (the idle
            # watchdog's case) silences every symbol, and the ring is read after the socket, so
            # at the first look after it some symbols show trades again and others not yet.
            # A stretch still going on counts too: checked during a stall, a symbol whose last trade
            # came a moment before the others' would otherwise look silent while they look recent.
            connection_quiet = sum(max(0, min(to, now_ns) - max(fr, a.last_ns)) for fr, to in self._quiet(sh, now_ns))
            silent_for = now_ns - a.last_ns - connection_quiet
            others = shard_last.get(id(sh), 0)
            # Silent, while the same sockets delivered other symbols lately: not a dead
            # connection (the idle watchdog's case) but a subscription that stopped.
            if silent_for > threshold and others > a.last_ns and now_ns - others < threshold:
                self._silent(sh, symbol, a, now_ns)
        # A subscription that never delivered, while its socket delivers others: a stream on the
        # wrong path is acked and then silent, with no error (Binance USDⓈ-M, VENUES §12). With no
        # usual interval known, silent_min_s decides. Instruments not trading yet are left alone.
        for sh in self.shards:
            others = shard_last.get(id(sh), 0)
            for symbol in sh.symbols:
                if symbol in self.activity or symbol in self.refused_symbols:
                    continue
                since = self._never_seen.setdefault(symbol, now_ns)
                inst = self.instruments.get(symbol)
                if inst is not None and not inst.is_trading:
                    continue
                if now_ns - since > c.silent_min_s * 1e9 and others > since and now_ns - others < c.silent_min_s * 1e9:
                    a = self.activity[symbol] = SymbolActivity(last_ns=since)
                    self._silent(sh, symbol, a, now_ns, never=True)

    @staticmethod
    def _quiet(sh: Shard, now_ns: int) -> list[tuple[int, int]]:
        """The shard's recent quiet stretches (see _note_delivery), with the one still going on."""
        last, mean = sh.delivered_ns, sh.delivery_interval_ns
        if last and mean and now_ns - last > max(SILENCE_MIN_NS, SILENCE_FACTOR * mean):
            return [*sh.quiet_ns, (last, now_ns)]
        return sh.quiet_ns

    @staticmethod
    def _note_delivery(sh: Shard, recv_ns: int) -> None:
        """Keeps the last 16 stretches in which the whole shard delivered no trade for longer than
        SILENCE_FACTOR x its usual interval (and SILENCE_MIN_NS): the silent-symbol watch does
        not count them in a symbol's silence. A sparse shard's usual gaps are not such stretches."""
        last, mean = sh.delivered_ns, sh.delivery_interval_ns
        gap = recv_ns - last
        if last and mean and gap > max(SILENCE_MIN_NS, SILENCE_FACTOR * mean):
            sh.quiet_ns = [*sh.quiet_ns[-15:], (last, recv_ns)]
        elif last and gap > 0:
            sh.delivery_interval_ns = gap if not mean else 0.95 * mean + 0.05 * gap
        sh.delivered_ns = max(last, recv_ns)

    def _silent(self, shard: Shard, symbol: str, a: SymbolActivity, now_ns: int, *, never: bool = False) -> None:
        a.silent_since_ns = a.last_ns
        self.counters.silent_alarms += 1
        shard.resubscribed_ns = [t for t in shard.resubscribed_ns if t > now_ns - HOUR_NS]
        resubscribe = len(shard.resubscribed_ns) < RESUBSCRIBES_PER_HOUR
        why = (
            f"silent for {(now_ns - a.last_ns) / 1e9:.3g} s (usually a trade every "
            f"{a.mean_interval_ns / 1e9:.3g} s) while its connection delivers other symbols: "
            + ("resubscribed" if resubscribe else f"not resubscribed (already {RESUBSCRIBES_PER_HOUR} this hour)")
        )
        if never:
            why = (
                f"subscribed {(now_ns - a.last_ns) / 1e9:.3g} s ago and never delivered, while its connection "
                "delivers other symbols (a stream on the wrong path is acked, then silent): " + why.rsplit(": ", 1)[1]
            )
        log.warning("%s %s: %s", self.venue, symbol, why)
        self.store.append_marker(
            "subscription_set",
            ts_ns=now_ns,
            venue=self.venue,
            symbol=symbol,
            from_ts_ns=a.last_ns,
            to_ts_ns=now_ns,
            detail=why,
        )
        if resubscribe:
            shard.resubscribed_ns.append(now_ns)
            for conn in shard.connections:
                task = asyncio.create_task(conn.resubscribe([symbol]), name=f"{conn.name}-resubscribe")
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    def _recovered(self, symbol: str, a: SymbolActivity, recv_ns: int) -> None:
        since, a.silent_since_ns = a.silent_since_ns, 0
        log.info("%s %s: trades again after %.3g s of silence", self.venue, symbol, (recv_ns - since) / 1e9)
        self.store.append_marker(
            "subscription_set",
            ts_ns=recv_ns,
            venue=self.venue,
            symbol=symbol,
            from_ts_ns=since,
            to_ts_ns=recv_ns,
            detail="trades again after a silence",
        )
        if not self._sequenced:
            # Ids cannot show what the silence took here: merge the recent-trades window.
            self._enqueue(Hole(symbol, since, recv_ns))

    @property
    def silent_symbols(self) -> list[str]:
        return sorted(s for s, a in self.activity.items() if a.silent_since_ns)

    async def stop(self) -> None:
        """Closes the connections cleanly (their `down` markers say so), gives the backfills
        waiting a moment to finish, and names every hole still open as unfillable: the log never
        ends with a hole that nothing names."""
        self._retrying.clear()  # a retry confirmed after the stop would write to a closed log
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)
        try:
            await asyncio.wait_for(self._holes.join(), STOP_BACKFILL_GRACE_S)
        except TimeoutError:
            pass
        while not self._holes.empty():
            self._unfillable(self._holes.get_nowait(), "the recorder stopped before this hole was backfilled")
            self._holes.task_done()

    def _state(self) -> str:
        """What the venue is doing, worst first: the line the dashboard and /status show."""
        conns = self.connections
        if not conns:
            if self.state == "starting" and self.counters.last_error:  # still retrying its REST
                return f"down: instrument list failed: {self.counters.last_error}"
            return self.state
        up = sum(c.up for c in conns)
        if self._last_venue_error_ns and self._last_venue_error_ns >= self._last_trade_ns:
            return f"error: {self.counters.last_error}"
        if up == 0:
            errors = [c.last_error for c in conns if c.last_error]
            return f"down: {errors[0] if errors else 'connecting'}"
        symbols = sum(len(sh.symbols) for sh in self.shards)
        if up < len(conns):
            errors = [c.last_error for c in conns if not c.up and c.last_error]
            return f"degraded: {up}/{len(conns)} connections up" + (f": {errors[0]}" if errors else "")
        silent = self.silent_symbols
        if silent:
            return f"degraded: {len(silent)} silent symbols: {', '.join(silent[:5])}"
        left = f"; {len(self.not_recorded)} not recorded (connection budget)" if self.not_recorded else ""
        return f"recording {symbols} symbols on {len(conns)} connections{left}"

    def status(self) -> dict:
        now = time.time_ns()
        last = max((c.last_message_ns for c in self.connections), default=0)
        return {
            "state": self._state(),
            "connections": len(self.connections),
            "connections_up": sum(c.up for c in self.connections),
            "redundancy": self.redundancy,
            "reconnects": sum(c.reconnects for c in self.connections),
            "rotations": sum(c.rotations for c in self.connections),
            "last_message_age_s": round((now - last) / 1e9, 3) if last else None,
            "pending_backfills": self._holes.qsize(),
            "silent_symbols": self.silent_symbols,
            "listing_assets": sorted(self.listing_assets),
            "not_recorded": len(self.not_recorded),
            "not_recorded_symbols": self.not_recorded[:100],
            "dropped_for_listings": list(self.evicted),
            "refused_symbols": sorted(self.refused_symbols),
            "channel": self.spec.trade_channel(),
            "channel_fallback": self.channel_fallback,
            "connection_states": [c.status() for c in self.connections],
            **{k: v for k, v in vars(self.counters).items() if k != "started_ns"},
            # The venue's own error, else why a connection is down.
            "last_error": self.counters.last_error
            or next((c.last_error for c in self.connections if not c.up and c.last_error), ""),
        }


class Collector:
    """All enabled venues into one store."""

    def __init__(
        self,
        cfg: Config,
        store: RecorderStore,
        *,
        specs: dict[str, VenueSpec] | None = None,
        http: HttpFetch = http_fetch,
        budgets: Budgets | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.recorders = {}
        #: The process's per-IP budgets (connection requests, REST), shared by all venues.
        self.budgets = budgets if budgets is not None else Budgets()
        if http is http_fetch:  # REST verified like the WebSockets: system CAs plus [tls] ca_file
            http = venue_fetch(cfg.tls.ca_file)
        for venue, settings in cfg.venues.items():
            if not settings.enabled:
                continue
            spec = (specs or {}).get(venue) or venue_spec(venue)
            if settings.ws_url or settings.rest_url:
                spec = spec.with_urls(ws_url=settings.ws_url or None, rest_url=settings.rest_url or None)
            if key := settings.resolved_api_key(venue):
                spec = spec.with_api_key(key)
            self.recorders[venue] = VenueRecorder(spec, settings, store, cfg, http, self.budgets)
        # Connection budgets per client across venues (Phemex spot and contracts share 5).
        groups: dict[str, list[VenueRecorder]] = {}
        for r in self.recorders.values():
            name = getattr(r.spec, "client_budget", None)
            if name and r.spec.max_connections:
                groups.setdefault(name, []).append(r)
        for name, members in groups.items():
            budget = ClientBudget(name, min(r.spec.max_connections or 0 for r in members), members)
            for r in members:
                r.budget = budget
        self.started_ns = time.time_ns()

    async def run(self, stop: asyncio.Event) -> None:
        self.store.append_marker("recorder_start", ts_ns=time.time_ns(), detail=f"venues: {', '.join(self.recorders)}")
        tasks = [asyncio.create_task(r.run(), name=v) for v, r in self.recorders.items()]
        if self.cfg.connection.silent_factor > 0:
            tasks.append(asyncio.create_task(self.watch_symbols(), name="silent-symbols"))
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*(r.stop() for r in self.recorders.values()), return_exceptions=True)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.store.append_marker("recorder_stop", ts_ns=time.time_ns())

    def listen_for_listing_instruments(self, fn: Callable[[str, str, str], None]) -> None:
        """`fn(asset, venue, symbol)` once each listing instrument is subscribed and backfilled."""
        for r in self.recorders.values():
            r.on_listing_instrument = fn

    def on_listing(self, assets: Iterable[str], trigger_ns: int | None = None) -> list[asyncio.Task]:
        """A KRW listing trigger: every venue relists and subscribes the coin's instruments at once
        (in parallel, each venue on its own); returns the tasks."""
        trigger_ns = time.time_ns() if trigger_ns is None else trigger_ns
        assets = list(assets)
        tasks = []
        for venue, r in self.recorders.items():
            task = asyncio.create_task(r.on_listing(assets, trigger_ns), name=f"{venue}-listing")
            task.add_done_callback(_log_failure)
            tasks.append(task)
        self._listing_tasks = [t for t in getattr(self, "_listing_tasks", []) if not t.done()] + tasks
        return tasks

    def backfills_pending(self) -> int:
        """Holes waiting for, or in, backfill on every venue (a capture waits for them to settle)."""
        return sum(r._holes.qsize() + (r.filling is not None) for r in self.recorders.values())

    async def watch_symbols(self) -> None:
        """Follows every live trade stored (the store's ring, off the socket path) to know when
        each symbol last traded, and lets each venue check for silent symbols."""
        reader = self.store.ring_reader()
        while True:
            await asyncio.sleep(SILENT_CHECK_S)
            # Per symbol counts made in Rust: no Python object per trade at any rate.
            activity, _missed = reader.poll_activity()
            for venue, symbol, sightings, last_recv_ns in activity:
                recorder = self.recorders.get(venue)
                if recorder is not None:
                    recorder.note_trades(symbol, sightings, last_recv_ns)
            now = time.time_ns()
            for recorder in self.recorders.values():
                recorder.check_silent(now)

    def status(self) -> dict:
        stats = self.store.ingest_stats()
        return {
            "started_ns": self.started_ns,
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 1),
            "data_dir": self.store.path,
            "ingest": stats,
            "venues": {v: r.status() for v, r in self.recorders.items()},
            # Per-IP budgets: how much of each allowance is in use, and any hold a venue asked for.
            "budgets": self.budgets.status(),
            "disk": self.store.disk_state(),
        }


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %s", task.get_name(), task.exception())
