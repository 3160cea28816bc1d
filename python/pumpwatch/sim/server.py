"""The asyncio server behind each simulated venue, and the simulator of all twelve.

One port per venue on 127.0.0.1 serves both the venue's WebSocket paths and its REST routes (plain
HTTP requests are answered from the `process_request` hook of `websockets`). What every venue does
the same way lives here: the market clock, fan-out of trade messages to subscribers, the record of
every trade sent (the truth a test compares against), the faults, heartbeat enforcement and REST
token buckets. What differs is asked of the venue's protocol class (venues.py).

Time: trade timestamps are wall-clock; `time_scale` shrinks the venues' protocol timers (heartbeat
intervals and timeouts, connection lifetimes, maintenance notices) so a test sees a 30 s timeout
in 0.3 s with `time_scale=0.01`. `lifetime_scale` scales the connection lifetime alone (Binance's
24 h, KuCoin's token), so a test sees a day in seconds while heartbeats keep usable periods.
Trade rates, fault durations and REST rate windows are in real seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self, cast
from urllib.parse import parse_qs

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from ..tls import TestCA
from .market import (
    ASSETS,
    DEFAULT_BASES,
    MEAN_FILLS_PER_ORDER,
    ConsecutiveIds,
    Fill,
    Instrument,
    Tape,
    asset_for,
)
from .protocols import VenueClient
from .venues import FAMILIES, VENUE_IDS, BadRequest, Okx, Publication, SentTrade

log = logging.getLogger("pumpwatch.sim")

HOST = "127.0.0.1"  # the simulator never listens anywhere else
# Ids of past listing windows (add_past_listing): PAST_ID_BASE + seconds since PAST_ID_EPOCH_S, so
# below every live id (ConsecutiveIds start at 10**8) for windows up to ~3 years after the epoch.
PAST_ID_BASE = 1_000_000
PAST_ID_EPOCH_S = 1_735_689_600  # 2025-01-01
MAX_OUTBOX = 50_000  # frames queued for one client before it is cut as a slow consumer
CLOSE_GRACE_S = 1.0  # a closing handshake that takes longer ends with an abort
MAX_SLEEP_S = 0.05  # the market clock wakes at least this often (bursts and listings take effect)
PRICE_KEYS = ("p", "px", "price")

#: Connection requests per IP each exchange accepts, counted over both its markets (VENUES §12:
#: OKX 3/s; KuCoin 30/min; Bybit 500 and Binance 300 per 5 min; Phemex 200 per 5 min, §9.1), as
#: (count, window in real seconds). A handshake beyond them is refused with HTTP 429.
CONNECT_RATES: dict[str, tuple[int, float]] = {
    "binance": (300, 300.0),
    "bybit": (500, 300.0),
    "okx": (3, 1.0),
    "kucoin": (30, 60.0),
    "phemex": (200, 300.0),
}


#: REST pools one exchange's markets draw on together (per IP): KuCoin spot and futures share the
#: `Public` pool, 2,000 weight / 30 s (VENUES §5.3, §12, the conservative reading).
SHARED_REST_POOLS: dict[str, tuple[str, ...]] = {"kucoin": ("public",)}


def exchange_of(venue_id: str) -> str:
    return venue_id.split("-", 1)[0]


class ConnectionRate:
    """One exchange's connection requests from our one IP: at most `count` accepted in any
    `window_s`; `accepted` (monotonic times) and `refused` are kept for tests."""

    def __init__(self, count: int, window_s: float):
        self.count = count
        self.window_s = window_s
        self.accepted: list[float] = []
        self.refused = 0

    def admit(self) -> float | None:
        """None when the handshake may go on; else seconds until it would be accepted."""
        now = time.monotonic()
        recent = [t for t in self.accepted[-self.count :] if t > now - self.window_s]
        if len(recent) >= self.count:
            self.refused += 1
            return recent[0] + self.window_s - now
        self.accepted.append(now)
        return None

    def max_in_window(self) -> int:
        """The most handshakes accepted within any window: never above `count`."""
        best, start = 0, 0
        for end, t in enumerate(self.accepted):
            while self.accepted[start] <= t - self.window_s:
                start += 1
            best = max(best, end - start + 1)
        return best


class TokenBucket:
    """A venue's REST rate limit: `capacity` tokens, refilled evenly over `period_s`. `clock` (seconds,
    monotonic) is replaceable, so a test can hold time still or move it on."""

    def __init__(self, capacity: int, period_s: float, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(capacity)
        self.rate = capacity / period_s
        self.tokens = float(capacity)
        self.clock = clock
        self.stamp = clock()

    def take(self, n: int) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def retry_after(self, n: int) -> float:
        return max(0.0, (n - self.tokens) / self.rate)


class _Connection(ServerConnection):
    """A server connection that tells its client about incoming protocol pings, which
    `websockets` answers by itself: they count against message limits, and as a heartbeat on
    venues that accept one (Phemex)."""

    sim_role: str | None = None
    sim_client: Client | None = None

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING and self.sim_client is not None:
            self.sim_client.on_protocol_ping()
        super().process_event(event)


class Client:
    """One connected socket: its subscriptions, heartbeat clocks and outgoing queue.

    Venue classes see it as a `protocols.VenueClient`.
    """

    def __init__(self, venue: SimVenue, ws: _Connection, role: str):
        self.venue = venue
        self.ws = ws
        self.role = role
        self.dialect = ""  # which rendering of a publication this socket receives
        assert ws.request is not None, "a Client is made for a socket whose handshake was accepted"
        path, _, qs = ws.request.path.partition("?")
        self.path = path or "/"
        self.query = {k: v[0] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        self.conn_id = f"{venue.conn_rng.getrandbits(64):016x}"
        self.topics: set[str] = set()
        self.state: dict[str, Any] = {}
        self.closed = False
        now = time.monotonic()
        self.opened = now
        self.last_heartbeat = now  # the client's own last sign of life
        self.last_sent = now  # anything sent to it
        self.last_data = now  # trade data sent to it
        self.last_server_ping = now
        self.unanswered_since: float | None = None  # oldest server ping without a pong
        self.incoming: deque[float] = deque()
        self.outbox: asyncio.Queue[str | bytes | tuple[int, str]] = asyncio.Queue()
        self.sender = asyncio.get_running_loop().create_task(self._send_loop())

    # -- what venue classes call

    def send(self, frame: str | bytes, *, data: bool = False) -> None:
        if self.closed or self.venue.stalled:
            return  # a stalled venue sends nothing at all
        if self.outbox.qsize() >= MAX_OUTBOX:
            return self.close(1008, "slow consumer")
        self.outbox.put_nowait(frame)
        self.last_sent = time.monotonic()
        if data:
            self.last_data = self.last_sent

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes after what is already queued (an error frame, say) has gone out."""
        if self.closed:
            return
        self.closed = True
        self.venue._forget(self)
        self.outbox.put_nowait((code, reason))
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self.abort)

    def abort(self) -> None:
        """Drops the TCP connection with no closing handshake, as a crashed server would."""
        self.closed = True
        self.venue._forget(self)
        if self.ws.transport is not None:
            self.ws.transport.abort()

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()

    def answer_ping(self) -> None:
        """The client answered the server's ping (a pong, or Gate's app-level ping)."""
        self.unanswered_since = None
        self.heartbeat()

    # -- machinery

    def on_protocol_ping(self) -> None:
        self.venue._count_incoming(self)
        if self.venue.protocol.heartbeat.protocol_ping_is_heartbeat:
            self.heartbeat()

    def ping(self) -> None:
        self.last_server_ping = time.monotonic()
        if self.unanswered_since is None:
            self.unanswered_since = self.last_server_ping

        async def send_ping() -> None:
            try:
                # `ping` gives the future its pong resolves (typed only as an awaitable).
                pong = asyncio.ensure_future(await self.ws.ping())
            except ConnectionClosed:
                return
            pong.add_done_callback(lambda f: None if f.cancelled() or f.exception() else self.answer_ping())

        asyncio.get_running_loop().create_task(send_ping())

    async def _send_loop(self) -> None:
        try:
            while True:
                frame = await self.outbox.get()
                if isinstance(frame, tuple):
                    await self.ws.close(*frame)
                    return
                await self.ws.send(frame)
        except ConnectionClosed:
            pass


class SimVenue:
    """One simulated venue on its own port: WebSocket and REST, trades, faults, truth.

    `symbols`: base assets (`"BTC"`, `"0G"`) or the venue's own symbols (`"BTCUSDT"`); default
    BTC, ETH, SOL, DOGE. `trades_per_s`: the venue's rate of trades (fills), in real seconds,
    shared by the symbols by weight. `time_scale`: multiplies every protocol timer;
    `lifetime_scale` the connection lifetime instead, where given. `backlog`: fills per symbol
    already on the tape at start (REST history, Phemex snapshots). `tls`: a test CA whose
    certificate the venue serves `wss://` and `https://` with (as the real venues do); None: plain.
    """

    def __init__(
        self,
        venue_id: str,
        *,
        seed: int = 0,
        symbols: list[str] | None = None,
        trades_per_s: float = 20.0,
        time_scale: float = 1.0,
        backlog: int = 0,
        port: int = 0,
        max_history: int = 1_000_000,
        lifetime_scale: float | None = None,
        connection_rates: dict[str, ConnectionRate] | None = None,
        rest_pools: dict[str, TokenBucket] | None = None,
        tls: TestCA | None = None,
    ):
        if venue_id not in FAMILIES:
            raise ValueError(f"unknown venue {venue_id!r}; the venues are: {', '.join(VENUE_IDS)}")
        if time_scale <= 0 or trades_per_s < 0 or (lifetime_scale is not None and lifetime_scale <= 0):
            raise ValueError("time_scale and lifetime_scale must be positive and trades_per_s not negative")
        self.venue_id = venue_id
        self.seed = seed
        self.trades_per_s = trades_per_s
        self.time_scale = time_scale
        self.lifetime_scale = time_scale if lifetime_scale is None else lifetime_scale
        self.backlog = backlog
        self.port = port
        self.max_history = max_history
        # Connection ids, tokens and gateway sequences come from their own generator, so how
        # clients connect never changes the trades.
        self.conn_rng = random.Random(f"{seed}/{venue_id}/connections")
        self.protocol = FAMILIES[venue_id](venue_id, self)
        self.instruments: dict[str, Instrument] = {}
        self._tapes: dict[str, Tape] = {}
        self._history: dict[str, list[Fill]] = {}
        self._pending: dict[str, list[Fill]] = {}
        self._sent: dict[str, list[SentTrade]] = {c: [] for c in self.protocol.channels}
        self._withheld: dict[str, list[SentTrade]] = {c: [] for c in self.protocol.channels}
        self.malformed_sent: list[str | bytes] = []  # every broken frame sent, in order
        natives = {self.protocol.symbol_for(b): b for b in ASSETS}
        for s in symbols or DEFAULT_BASES:
            self._add(self.protocol.instrument(asset_for(natives.get(s, s))))
        self._weight_total = sum(i.weight for i in self.instruments.values()) or 1.0
        self._clients: set[Client] = set()
        self._subscribers: dict[str, set[VenueClient]] = {}
        # The exchange's connection-rate limit and shared REST pools, shared with its other market
        # when the Simulator runs both (`connection_rates`, `rest_pools`: one dict each for all).
        rates = connection_rates if connection_rates is not None else {}
        exchange = exchange_of(venue_id)
        self._buckets: dict[str, TokenBucket] = {}
        for name, spec in self.protocol.buckets.items():
            if name in SHARED_REST_POOLS.get(exchange, ()) and rest_pools is not None:
                self._buckets[name] = rest_pools.setdefault(f"{exchange}:{name}", TokenBucket(*spec))
            else:
                self._buckets[name] = TokenBucket(*spec)
        if exchange not in rates and exchange in CONNECT_RATES:
            rates[exchange] = ConnectionRate(*CONNECT_RATES[exchange])
        self.connection_rate: ConnectionRate | None = rates.get(exchange)
        self.handshakes = 0  # WebSocket handshakes accepted on this venue's port
        self._stall_until = 0.0
        self._rest_fail: tuple[float, int] = (0.0, 503)  # (until, status) of a REST outage
        self._topic_symbol: dict[str, str] = {}  # trade topic -> symbol, learnt as trades go out
        self._muted: dict[str, float] = {}  # symbol -> until when its trade messages reach no one
        self._drop = self._duplicate = self._malformed = 0
        self._burst = (1.0, 0.0)
        self._server: Server | None = None
        self._tasks: list[asyncio.Task] = []
        self.ws_origin = self.ws_url = self.rest_url = ""
        self.tls = tls

    # -- lifecycle

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            HOST,
            self.port,
            process_request=self._process_request,
            create_connection=_Connection,
            ping_interval=None,
            compression=None,
            close_timeout=CLOSE_GRACE_S,
            logger=log,
            ssl=self.tls.server_context() if self.tls is not None else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        secure = "s" if self.tls is not None else ""
        self.ws_origin = f"ws{secure}://{HOST}:{self.port}"
        self.ws_url = self.ws_origin + self.protocol.ws_path
        self.rest_url = f"http{secure}://{HOST}:{self.port}"
        self._mono0, self._wall0 = time.monotonic(), time.time_ns()
        self._write_backlog()
        self._tasks = [
            asyncio.get_running_loop().create_task(t) for t in (self._run_market(), self._watch_heartbeats())
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for c in list(self._clients):
            c.abort()
        if self._server is not None:
            self._server.close(close_connections=False)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the truth

    def render_frames(
        self,
        n: int,
        symbol: str | None = None,
        *,
        start_ns: int = 1_790_000_000_000_000_000,
        spacing_ns: int = 1_000_000,
    ) -> list[str]:
        """`n` trade frames of `symbol` (the first instrument by default) exactly as this venue
        would send them, made without a server or a clock: inputs for load benchmarks. They are
        not recorded as sent; the tape's ids go on from them."""
        inst = self.instruments[symbol] if symbol else next(iter(self.instruments.values()))
        tape = self._tapes[inst.symbol]
        frames: list[str] = []
        ts = start_ns
        while len(frames) < n:
            for pub in self.protocol.publications(inst, self._order(tape, ts)):
                frames.append(pub.frames.get("") or next(iter(pub.frames.values())))
            ts += spacing_ns
        return frames[:n]

    def sent_trades(self, symbol: str | None = None, *, channel: str | None = None) -> list[dict]:
        """Every trade the venue emitted on its live stream, in emission order, as a correct
        parser of that stream produces them (pumpwatch.Trade keys without recv_ns/flags).
        `channel`: OKX sends `trades-all` (default, one per fill) and `trades` (one per taker
        order and price, with `count`); other venues have one channel."""
        return [
            t.as_dict(self.venue_id)
            for t in self._sent[channel or self.protocol.channels[0]]
            if symbol is None or t.symbol == symbol
        ]

    def withheld_trades(self, symbol: str | None = None, *, channel: str | None = None) -> list[dict]:
        """Trades that subscribers never got: their frames were dropped, or sent during a stall."""
        return [
            t.as_dict(self.venue_id)
            for t in self._withheld[channel or self.protocol.channels[0]]
            if symbol is None or t.symbol == symbol
        ]

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def subscribers(self, symbol: str) -> int:
        """Sockets subscribed to `symbol`'s trades now (on any of its channels)."""
        return len(
            {
                c
                for topic, sym in self._topic_symbol.items()
                if sym == symbol
                for c in self._subscribers.get(topic, ())
                if not c.closed
            }
        )

    @property
    def heartbeat_timeout(self) -> float:
        """Seconds (scaled) after which a client that sends no heartbeat is cut."""
        return self.scaled(self.protocol.heartbeat.cut_after())

    # -- faults, all on demand

    def disconnect_all(self) -> None:
        """Closes every client socket abruptly (no closing handshake)."""
        for c in list(self._clients):
            c.abort()

    def stall(self, seconds: float) -> None:
        """Sockets stay open but nothing is sent for `seconds`; trades still happen and count as
        sent, so a client must backfill them."""
        self._stall_until = max(self._stall_until, time.monotonic() + seconds)

    def drop_frames(self, n: int) -> None:
        """The next `n` trade messages that have subscribers reach none of them."""
        self._drop += n

    def duplicate_frames(self, n: int) -> None:
        """The next `n` trade messages that have subscribers are sent twice."""
        self._duplicate += n

    def malformed_frames(self, n: int) -> None:
        """Sends `n` broken frames, each ahead of one of the next trade messages: in turn a
        truncated JSON text, the message with prices of the wrong JSON type, and the message
        with invalid UTF-8 (as a binary frame: an invalid text frame would make the client's
        WebSocket library close the connection before any parser saw it)."""
        self._malformed += n

    def disconnect_oldest(self) -> bool:
        """Closes the longest-connected client socket abruptly; False when none is connected."""
        if not self._clients:
            return False
        min(self._clients, key=lambda c: c.opened).abort()
        return True

    def silence(self, symbol: str, seconds: float | None = None) -> None:
        """`symbol` falls silent while the other symbols go on; its trades go on and count as
        sent. `seconds=None`: the venue drops the symbol's subscriptions on every socket without
        a word, and a fresh subscribe restores them. `seconds`: its trade messages reach no one
        for that long whatever the client does (withheld, as in a stall)."""
        if seconds is not None:
            self._muted[symbol] = time.monotonic() + seconds
            return
        for topic, sym in self._topic_symbol.items():
            if sym != symbol:
                continue
            for c in list(self._subscribers.get(topic, ())):
                c.topics.discard(topic)
                self._subscribers[topic].discard(c)

    def delist(self, symbol: str) -> None:
        """`symbol` is delisted now: it trades no more and subscribing to it fails. The venue's
        instrument list drops it or keeps it in its closed state, as the real venue does
        (`delisted_states` of its protocol class: Binance spot `BREAK`, USDⓈ-M `SETTLING`, ...)."""
        self.instruments[symbol].delisted_at_ns = self.now_ns()

    def halt(self, symbol: str, seconds: float) -> None:
        """`symbol`'s trading stops for `seconds` (real), then resumes. Meanwhile the venue's
        instrument list shows it in its halt state (`halted_states` of its protocol class: Binance
        spot `HALT`, OKX `suspend`, ...; unchanged where none is documented) and subscribing to it
        works, as on the real venue."""
        inst = self.instruments[symbol]
        inst.halted_at_ns = self.now_ns()
        inst.resumes_at_ns = inst.halted_at_ns + int(seconds * 1e9)

    def fail_rest(self, seconds: float, status: int = 503) -> None:
        """Every REST request is answered with `status` for `seconds` (an outage of the API)."""
        self._rest_fail = (time.monotonic() + seconds, status)

    def burst(self, multiplier: float, seconds: float) -> None:
        """Trades arrive `multiplier` times as fast for `seconds` (a pump is ~50x)."""
        self._burst = (multiplier, time.monotonic() + seconds)

    def schedule_listing(
        self, base: str, at_ns: int, pump: float = 1.5, *, preopen_at_ns: int | None = None
    ) -> Instrument:
        """`base` appears in the REST instrument list at `at_ns` (wall clock) and starts trading,
        many times as fast as usual at first, its price rising to `pump` x over ~20 s. With
        `preopen_at_ns`, it is listed from then on in the venue's pre-trading state (OKX `preopen`,
        Binance `PRE_TRADING`/`PENDING_TRADING`, Bybit `PreLaunch`, ...; docs/VENUES.md §12), subscribable,
        and opens at `at_ns`."""
        inst = self.protocol.instrument(asset_for(base))
        if inst.symbol in self.instruments:
            raise ValueError(f"{self.venue_id} already lists {inst.symbol}")
        inst.listed_at_ns, inst.pump, inst.preopen_at_ns = at_ns, pump, preopen_at_ns
        self._add(inst)
        return inst

    def schedule_pump(self, base: str, at_ns: int, pump: float = 1.5) -> Instrument:
        """`base` trades from the start (added if this venue does not list it yet) and from `at_ns`
        (wall clock) trades many times as fast, its price moving to `pump` x over ~20 s: what an
        Upbit KRW announcement does to a coin already listed overseas (`pump` < 1 is a dump)."""
        inst = self.protocol.instrument(asset_for(base))
        if inst.symbol not in self.instruments:
            self._add(inst)
        inst = self.instruments[inst.symbol]
        inst.pump_at_ns, inst.pump = at_ns, pump
        return inst

    def add_past_listing(
        self,
        base: str,
        t0_ns: int,
        pump: float = 1.4,
        *,
        span_s: float = 60.0,
        orders_per_s: float = 1.0,
        quiet_before_s: float = 0.0,
    ) -> Instrument | None:
        """The venue's tape around a past Upbit listing of `base` at `t0_ns` (an announcement a
        year ago, say): `span_s` either side of t0 at `orders_per_s`, pumping from t0, in the REST
        history only (never sent on a socket). Deterministic from (seed, venue, symbol, t0): the
        same call always makes the same fills. Ids are the symbol's own sequence, below every live
        id and rising with t0 (one id per second of wall time before the window), so two windows of
        one symbol, and a window and the live tape, never share an id and keep id order = time
        order. The instrument is listed from the start if it is not yet (a coin listed then is
        listed now). Venues whose ids are not consecutive integers (Bybit, KuCoin, Phemex) keep
        only their recent trades (docs/VENUES.md §11 item 4): they get the instrument and no past fills.
        `quiet_before_s`: no trade in that many seconds before t0 (a coin nobody traded just then).
        Returns the instrument, or None if `t0_ns` is not in the past."""
        inst = self.protocol.instrument(asset_for(base))
        if inst.symbol not in self.instruments:
            self._add(inst)
        inst = self.instruments[inst.symbol]
        start_ns, end_ns = t0_ns - int(span_s * 1e9), t0_ns + int(span_s * 1e9)
        if end_ns >= self.now_ns():
            return None
        ids = self.protocol.id_scheme(inst)
        if not isinstance(ids, ConsecutiveIds):
            return inst
        window = dataclasses.replace(inst, pump=pump, pump_at_ns=t0_ns, listed_at_ns=None)
        tape = Tape(window, self.seed, ids)
        tape.rng = random.Random(f"{self.seed}/{self.venue_id}/{inst.symbol}/past/{t0_ns}")
        tape.arrivals = random.Random(f"{self.seed}/{self.venue_id}/{inst.symbol}/past/{t0_ns}/arrivals")
        ids.next_id = PAST_ID_BASE + max(0, start_ns // 10**9 - PAST_ID_EPOCH_S)
        fills: list[Fill] = []
        ts = start_ns
        while True:
            ts += int(tape.arrivals.expovariate(orders_per_s * tape.intensity(ts)) * 1e9) + 1
            if ts >= end_ns:
                break
            if t0_ns - quiet_before_s * 1e9 <= ts < t0_ns:
                continue
            fills.extend(self._order(tape, ts))
        history = self._history[inst.symbol]
        merged = [f for f in history if f.ts_ns < start_ns or f.ts_ns >= end_ns] + fills
        merged.sort(key=lambda f: (f.ts_ns, f.num_id or 0))
        self._history[inst.symbol] = merged
        return inst

    def require_login(self, channel: str) -> None:
        """From now on new subscriptions to `channel` are refused for want of a login, as OKX would
        refuse `trades-all` ("Please log in", 60011; docs/VENUES.md §4.1); those made go on."""
        if not isinstance(self.protocol, Okx) or channel not in self.protocol.channels:
            raise ValueError(f"{self.venue_id} has no channel {channel!r} that a login could gate")
        self.protocol.login_required = self.protocol.login_required | {channel}

    def announce_shutdown(self, grace_s: float = 60.0) -> None:
        """Maintenance: sends the venue's notice where it has one (Binance `serverShutdown`, OKX
        `notice` 64008), then closes every current connection after `grace_s` (scaled)."""
        clients = list(self._clients)
        for c in clients:
            notice = self.protocol.shutdown_notice(c)
            if notice is not None:
                c.send(notice)
        loop = asyncio.get_running_loop()

        def close_all() -> None:
            for c in clients:
                c.close(1001, "service upgrade")

        loop.call_later(self.scaled(grace_s), close_all)

    # -- services for the venue classes

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def scaled_lifetime(self, seconds: float) -> float:
        return seconds * self.lifetime_scale

    def now_ns(self) -> int:
        return time.time_ns()

    def listed_instruments(self) -> list[Instrument]:
        now = self.now_ns()
        return [i for i in self.instruments.values() if i.listed(now)]

    def history(self, symbol: str) -> list[Fill]:
        """Published fills of `symbol`, oldest first (Binance `X=NA` records included)."""
        return self._history.get(symbol, [])

    def subscribe(self, client: VenueClient, topic: str) -> None:
        client.topics.add(topic)
        self._subscribers.setdefault(topic, set()).add(client)

    def unsubscribe(self, client: VenueClient, topic: str) -> None:
        client.topics.discard(topic)
        self._subscribers.get(topic, set()).discard(client)

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self._stall_until

    # -- the market

    def _add(self, inst: Instrument) -> None:
        self.instruments[inst.symbol] = inst
        self._tapes[inst.symbol] = Tape(inst, self.seed, self.protocol.id_scheme(inst))
        self._history[inst.symbol] = []
        self._pending[inst.symbol] = []

    def _wall_ns(self, mono: float) -> int:
        return self._wall0 + int((mono - self._mono0) * 1e9)

    def _mono(self, wall_ns: int) -> float:
        return self._mono0 + (wall_ns - self._wall0) / 1e9

    def _order_rate(self, tape: Tape, mono: float) -> float:
        """Taker orders per second on `tape` now."""
        multiplier, until = self._burst
        burst = multiplier if mono < until else 1.0
        share = tape.inst.weight / self._weight_total
        return self.trades_per_s / MEAN_FILLS_PER_ORDER * share * burst * tape.intensity(self._wall_ns(mono))

    def _order(self, tape: Tape, wall_ns: int) -> list[Fill]:
        p = self.protocol
        return tape.next_order(wall_ns, p.resolution_ns, p.strictly_increasing_ts)

    def _write_backlog(self) -> None:
        """Trades from before the start, `backlog` fills per symbol, spaced at the normal rate."""
        for tape in self._tapes.values():
            if self.backlog <= 0 or tape.inst.listed_at_ns is not None:
                continue
            rate = self._order_rate(tape, self._mono0) or 1.0  # a venue started with no live trading
            gap_ns = max(1_000, int(1e9 / rate))
            ts, fills = self._wall0 - (self.backlog + 1) * gap_ns, 0
            while fills < self.backlog:
                order = self._order(tape, ts)
                self._publish(tape.inst, order)
                fills += sum(not f.placeholder for f in order)
                ts += gap_ns

    def _due(self, t0: float, t1: float) -> list[tuple[float, Tape]]:
        """Orders arriving in (t0, t1], per tape a Poisson process in 'activity time'."""
        due = []
        for tape in list(self._tapes.values()):
            inst = tape.inst
            start = t0 if inst.listed_at_ns is None else max(t0, self._mono(inst.listed_at_ns))
            wall = self._wall_ns(t1)
            if start >= t1 or inst.delisted(wall) or inst.halted(wall):
                continue
            rate = self._order_rate(tape, t1)
            if rate <= 0:
                continue
            t = start
            while True:
                need = tape.next_arrival - tape.activity
                if need > (t1 - t) * rate:
                    tape.activity += (t1 - t) * rate
                    break
                t += need / rate
                tape.activity = tape.next_arrival
                tape.next_arrival += tape.arrivals.expovariate(1.0)
                due.append((t, tape))
        due.sort(key=lambda e: e[0])
        return due

    def _time_to_next(self, now: float) -> float:
        waits = [
            (tape.next_arrival - tape.activity) / rate
            for tape in self._tapes.values()
            if (rate := self._order_rate(tape, now)) > 0
        ]
        return min(waits, default=MAX_SLEEP_S)

    async def _run_market(self) -> None:
        batch = self.protocol.batch_interval
        prev = time.monotonic()
        while True:
            now = time.monotonic()
            for t, tape in self._due(prev, now):
                order = self._order(tape, self._wall_ns(t))
                if batch:
                    self._pending[tape.inst.symbol].extend(order)
                else:
                    self._publish(tape.inst, order)
            prev = now
            if batch:
                for symbol, fills in self._pending.items():
                    if fills:
                        self._pending[symbol] = []
                        self._publish(self.instruments[symbol], fills)
                delay = batch
            else:
                delay = min(MAX_SLEEP_S, self._time_to_next(now))
            await asyncio.sleep(max(0.001, delay))

    def _publish(self, inst: Instrument, fills: list[Fill]) -> None:
        history = self._history[inst.symbol]
        history.extend(fills)
        if len(history) > self.max_history * 1.1:
            del history[: len(history) - self.max_history]
        for pub in self.protocol.publications(inst, fills):
            self._topic_symbol[pub.topic] = inst.symbol
            sent = self._sent[pub.channel]
            sent.extend(pub.trades)
            if len(sent) > self.max_history * len(self.instruments) * 1.1:
                del sent[: len(sent) - self.max_history * len(self.instruments)]
            self._deliver(pub)

    def _deliver(self, pub: Publication) -> None:
        recipients = [c for c in self._subscribers.get(pub.topic, ()) if not c.closed]
        if not recipients:
            return
        muted = self._muted.get(self._topic_symbol.get(pub.topic, ""), 0.0) > time.monotonic()
        if muted:
            self._withheld[pub.channel].extend(pub.trades)
            return
        if self.stalled or self._drop > 0:
            if not self.stalled:
                self._drop -= 1
            self._withheld[pub.channel].extend(pub.trades)
            return
        if self._malformed > 0:
            self._malformed -= 1
            bad = self._malform(next(iter(pub.frames.values())), len(self.malformed_sent))
            self.malformed_sent.append(bad)
            for c in recipients:
                c.send(bad, data=True)
        copies = 1
        if self._duplicate > 0:
            self._duplicate -= 1
            copies = 2
        for c in recipients:
            frame = pub.frames.get(c.dialect) or pub.frames[""]
            for _ in range(copies):
                c.send(frame, data=True)

    @staticmethod
    def _malform(frame: str, nth: int) -> str | bytes:
        kind = nth % 3
        if kind == 1:
            broken = json.loads(frame)
            if _wrong_types(broken):
                return json.dumps(broken, separators=(",", ":"))
        if kind == 2:
            raw = frame.encode()
            cut = raw.find(b'"', 2) + 1
            return raw[:cut] + b"\xc3\x28\xff" + raw[cut:]
        return frame[: len(frame) // 2]

    # -- connections

    def _forget(self, client: Client) -> None:
        self._clients.discard(client)
        for topic in client.topics:
            self._subscribers.get(topic, set()).discard(client)

    def _count_incoming(self, client: Client) -> None:
        limit = self.protocol.incoming_limit
        if limit is None:
            return
        count, window = limit
        now = time.monotonic()
        client.incoming.append(now)
        while client.incoming and client.incoming[0] <= now - window:
            client.incoming.popleft()
        if len(client.incoming) > count:
            client.close(1008, "too many messages")

    async def _handle(self, connection: ServerConnection) -> None:
        ws = cast(_Connection, connection)  # serve(create_connection=_Connection) made it one
        client = Client(self, ws, ws.sim_role or "")
        ws.sim_client = client
        self._clients.add(client)
        try:
            self.protocol.on_open(client)
            async for message in ws:
                if client.closed:
                    break
                self._count_incoming(client)
                if client.closed:
                    break
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                try:
                    self.protocol.on_text(client, text)
                except Exception:  # a venue bug must not look like a venue hanging up
                    log.exception("%s: handling %r failed", self.venue_id, text[:200])
        except ConnectionClosed:
            pass
        finally:
            self._forget(client)
            client.closed = True
            await asyncio.sleep(0)  # let a queued close frame go out
            if not client.sender.done() and client.outbox.empty():
                client.sender.cancel()

    async def _watch_heartbeats(self) -> None:
        hb = self.protocol.heartbeat
        limits = [
            self.scaled(t) for t in (hb.server_ping_every, hb.pong_within, hb.client_ping_within, hb.quiet_limit) if t
        ]
        if hb.lifetime:
            limits.append(self.scaled_lifetime(hb.lifetime))
        if not limits:
            return
        period = max(0.002, min(limits) / 10)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for c in list(self._clients):
                if c.closed:
                    continue
                if hb.lifetime and now - c.opened >= self.scaled_lifetime(hb.lifetime):
                    c.close(1000, self.protocol.lifetime_close_reason)
                    continue
                if (
                    hb.server_ping_every
                    and not self.stalled
                    and now - c.last_server_ping >= self.scaled(hb.server_ping_every)
                ):
                    c.ping()
                if (
                    hb.pong_within
                    and c.unanswered_since is not None
                    and now - c.unanswered_since > self.scaled(hb.pong_within)
                ):
                    c.close(1000, "pong timeout")
                    continue
                if hb.client_ping_within:
                    last = max(c.last_heartbeat, c.last_data) if hb.data_is_heartbeat else c.last_heartbeat
                    if now - last > self.scaled(hb.client_ping_within):
                        c.close(1000, "no ping")
                        continue
                if hb.quiet_limit and now - c.last_sent > self.scaled(hb.quiet_limit):
                    c.close(1000, "no data")

    # -- REST

    def _process_request(self, server_connection: ServerConnection, request: Request) -> Response | None:
        connection = cast(_Connection, server_connection)  # serve(create_connection=_Connection) made it one
        path, _, qs = request.path.partition("?")
        path = path or "/"
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if self.connection_rate is not None:
                wait = self.connection_rate.admit()
                if wait is not None:
                    return _response(
                        429,
                        {"msg": "too many connection requests from this IP"},
                        {"Retry-After": str(max(1, math.ceil(wait)))},
                    )
            role = self.protocol.ws_role(path, request.headers)
            if role is None:
                return _response(404, {"msg": f"no WebSocket at {path}"})
            refused = self.protocol.refuse_connection()
            if refused is not None:
                return _response(*refused)
            connection.sim_role = role
            self.handshakes += 1
            return None
        until, status = self._rest_fail
        if time.monotonic() < until:
            return _response(status, {"msg": "service unavailable (simulated outage)"})
        route = self.protocol.routes.get((request.method, path))
        if route is None:
            return _response(404, {"msg": f"no route {request.method} {path}"})
        bucket = self._buckets[route.bucket]
        if not bucket.take(route.weight):
            retry = {"Retry-After": str(max(1, round(bucket.retry_after(route.weight))))}
            return _response(self.protocol.rate_limited_status, self.protocol.rate_limited_body, retry)
        query = {k: v[0] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        # The few handlers that answer by header (Gate's size decimals, Binance's API key) read it here.
        self.protocol.request_headers = request.headers
        try:
            status, body = route.handler(query)
        except BadRequest as e:
            status, body = e.status, e.body
        return _response(status, body)

    def urls(self) -> dict[str, str]:
        urls = {"ws_url": self.ws_url, "rest_url": self.rest_url, "ws_origin": self.ws_origin}
        if self.tls is not None:
            urls["ca_file"] = self.tls.ca_file  # what a recorder's [tls] ca_file names
        return urls


def _wrong_types(o: Any) -> bool:
    """Replaces every price in a trade message with an array: a type no parser may accept."""
    found = False
    if isinstance(o, dict):
        for k, v in o.items():
            if k in PRICE_KEYS and isinstance(v, (str, int)) and not isinstance(v, bool):
                o[k] = [v]
                found = True
            else:
                found |= _wrong_types(v)
    elif isinstance(o, list):
        if len(o) == 4 and isinstance(o[0], int) and o[1] in ("Buy", "Sell"):  # a Phemex row
            o[2] = [o[2]]
            return True
        for v in o:
            found |= _wrong_types(v)
    return found


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    data = text.encode()
    kind = "text/plain" if isinstance(body, str) else "application/json"
    h = Headers([("Content-Type", kind), ("Content-Length", str(len(data))), ("Connection", "close")])
    for k, v in (headers or {}).items():
        h[k] = v
    return Response(status, http.HTTPStatus(status).phrase, h, data)


class Simulator:
    """All twelve venues (or `venues`), each on its own port, sharing `seed` and options.

    `tls=True` serves them all over TLS with one test CA made now (`ca_file` names its PEM, for a
    recorder's `[tls] ca_file`; removed at `stop`); a `TestCA` given is used and left to its owner."""

    def __init__(self, venues: list[str] | None = None, *, seed: int = 0, tls: bool | TestCA = False, **kw: Any):
        self._own_ca = tls is True
        self.tls: TestCA | None = TestCA() if tls is True else (tls or None)
        # One IP: an exchange's markets count connection requests together.
        self.connection_rates: dict[str, ConnectionRate] = kw.pop("connection_rates", None) or {}
        self.rest_pools: dict[str, TokenBucket] = {}
        self.venues: dict[str, SimVenue] = {
            v: SimVenue(
                v, seed=seed, connection_rates=self.connection_rates, rest_pools=self.rest_pools, tls=self.tls, **kw
            )
            for v in (venues or VENUE_IDS)
        }
        if "phemex-spot" in self.venues and "phemex-perp" in self.venues:
            share_phemex_gateway(self.venues["phemex-spot"], self.venues["phemex-perp"])

    @property
    def ca_file(self) -> str | None:
        """The test CA's PEM file when serving TLS."""
        return self.tls.ca_file if self.tls is not None else None

    async def start(self) -> None:
        await asyncio.gather(*(v.start() for v in self.venues.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(v.stop() for v in self.venues.values()))
        if self._own_ca and self.tls is not None:
            self.tls.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def urls(self) -> dict[str, dict[str, str]]:
        return {vid: v.urls() for vid, v in self.venues.items()}


def share_phemex_gateway(spot: SimVenue, perp: SimVenue) -> None:
    """Phemex spot and contracts are one gateway: 5 connections per client across both (§9.1)."""
    perp.protocol.gateway = spot.protocol.gateway  # type: ignore[attr-defined]
