"""One WebSocket connection of one venue, kept alive: subscribe, receive, heartbeat, reconnect.

A `VenueConnection` carries one shard (a list of symbols) of one venue. Everything venue-specific
comes from the `VenueSpec` (URL and KuCoin's token handshake, subscribe frames, the message rate
limit, the heartbeat rule, whether to wait for a welcome); this module has no venue branches.
Raw frames go to `on_frame` with their receive time, untouched: parsing, dedupe and gap checks
are the ingest path's job (`Store.ingest`), so the socket loop never waits on them in Python.

What a connection does when things go wrong is set by a `ReconnectPolicy` with named settings
(nautilus_trader style) rather than numbers inside loops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.frames import Frame, Opcode

from .net import Backoff, Budgets, HttpError, RateLimiter, default_budgets, http_fetch, retry_after_s
from .tls import describe_tls_error
from .venues import HeartbeatRule, HttpFetch, VenueSpec

log = logging.getLogger("pumpwatch.connection")

T = TypeVar("T")

# What the network or a venue can do to a connection. Anything else escaping the loop (an
# exception from on_frame, such as DiskFullError from the store) is the caller's and is raised:
# reconnecting cannot fix it, and retrying it would hide it.
NETWORK_ERRORS = (OSError, TimeoutError, WebSocketException)

# A pump packs up to 1024 trades into one Bybit message; websockets' 1 MiB default would close
# the connection on exactly the frames we exist to record.
MAX_FRAME_BYTES = 16 << 20

# websockets answers the server's protocol pings by itself, and those pongs count against the
# venue's message limit (Binance: "ping, pong and JSON control messages all count"), so our own
# sends use only this share of the limit.
SEND_RATE_SHARE = 0.8

# On venues whose heartbeat is the server's, a protocol-level keepalive from us still finds a
# half-open TCP connection in well under a minute, where the server's own pings may be minutes
# apart (Binance USDⓈ-M: 3 min). One ping per 20 s is nothing against any message limit.
KEEPALIVE_INTERVAL_S = 20.0
KEEPALIVE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a connection comes back after it is lost.

    `initial_delay_s`, `factor`, `max_delay_s`, `jitter`: the wait before reconnect attempt n, by
    the one back-off policy (`net.Backoff`: `initial_delay_s * factor**n` capped at `max_delay_s`,
    up to `jitter` of it taken off so the connections one outage drops do not all return at once).
    Connection requests are paced besides, by the venue's per-IP budget (`VenueSpec.connect_budget`).
    `idle_timeout_s`: a connection that received nothing for this long is dead and is replaced.
    None derives it from the venue's heartbeat: a heartbeat is due every `interval_s` and may
    take `timeout_s` to arrive, so silence longer than their sum means it did not come.
    `stable_after_s`: a connection that stayed up this long was healthy, so the next loss starts
    the backoff from `initial_delay_s` again instead of continuing to climb.
    `open_timeout_s`: how long the opening handshake (TCP, TLS, HTTP upgrade) may take.
    `close_timeout_s`: how long we wait for the peer's closing handshake; a dead or stalled peer
    never answers, and waiting on it only delays the reconnect.
    `rotate_at_fraction`: a venue that cuts connections at a known age (Binance 24 h, KuCoin's
    token) gets a replacement at this share of that age, made before the old one is closed.
    `rotation_overlap_s`: how long old and new connection both deliver once the new one has
    confirmed its subscriptions, so what was in flight on the old one arrives before it closes
    (the store drops the duplicates the overlap brings).
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    idle_timeout_s: float | None = None
    stable_after_s: float = 60.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 1.0
    rotate_at_fraction: float = 0.9
    rotation_overlap_s: float = 2.0
    backoff: Backoff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The back-off settings are checked (and used) by the one back-off policy.
        object.__setattr__(self, "backoff", Backoff(self.initial_delay_s, self.max_delay_s, self.factor, self.jitter))
        if not 0 < self.rotate_at_fraction < 1:
            raise ValueError(
                f"rotate_at_fraction is a share of the connection lifetime in (0, 1), got {self.rotate_at_fraction}"
            )
        if self.rotation_overlap_s < 0:
            raise ValueError(f"rotation_overlap_s must not be negative, got {self.rotation_overlap_s}")
        for name in ("idle_timeout_s", "open_timeout_s", "close_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0 = the first after a loss); never
        less than the venue's Retry-After where it refused the handshake with one."""
        return self.backoff.delay(attempt, rng, retry_after_s)

    def idle_timeout(self, spec: VenueSpec, heartbeat: HeartbeatRule | None = None) -> float:
        if self.idle_timeout_s is not None:
            return self.idle_timeout_s
        hb = heartbeat or spec.heartbeat
        return hb.interval_s + hb.timeout_s


#: Subscribe requests remembered per connection (to trace a refusal); the oldest are forgotten.
MAX_TRACKED_REQUESTS = 4096


class _Closed(Exception):
    """close() was called while the connection was waiting on something."""


class _WatchedConnection(ClientConnection):
    """Tells its owner about every frame the venue sends, protocol pings included: on venues
    whose heartbeat is the server's ping, those pings are the only sign of life of a quiet
    connection, and `recv()` never shows them. Pongs do not count: they answer our own keepalive
    from the peer's WebSocket stack, which goes on answering while the venue behind it stalls."""

    on_venue_frame: Callable[[], None] | None = None
    #: Batching (set before subscribing): whole data frames skip websockets' per-message queue and
    #: `recv()`; the frames of each read from the socket go to `on_data_frames` in one call (the
    #: store's `ingest_many`: one crossing into Rust per read, not a Python round trip per frame).
    #: The ingest runs inside the read callback, so while it works nothing more is read from the
    #: socket: a reader that falls behind makes TCP push back on the venue, and memory stays bounded
    #: by one read. Frames arriving before `on_data_frames` is set wait in `pending_frames`.
    batching = False
    on_data_frames: Callable[[list[bytes]], None] | None = None
    pending_frames: list[bytes]
    frames_error: BaseException | None = None
    _fragmented = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending_frames = []

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame):
            if event.opcode is not Opcode.PONG and self.on_venue_frame is not None:
                self.on_venue_frame()
            if self.batching:
                if not self._fragmented and event.fin and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                    data = event.data
                    self.pending_frames.append(data if type(data) is bytes else bytes(data))
                    return
                if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                    # A message in fragments (rare): websockets assembles it for recv().
                    self._fragmented = not event.fin
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.pending_frames and self.on_data_frames is not None:
            self.flush_frames()

    def flush_frames(self) -> None:
        """Hands the frames waiting in `pending_frames` to `on_data_frames` (none before it is set)."""
        deliver = self.on_data_frames
        if deliver is None:
            return
        frames, self.pending_frames = self.pending_frames, []
        try:
            deliver(frames)
        except BaseException as e:  # the caller's (DiskFullError...): end the connection, raise it in run()
            self.frames_error = e
            self.on_data_frames = None
            if self.transport is not None:
                self.transport.abort()


class _Session:
    """One socket of a `VenueConnection`: its tasks, what it subscribed, what it delivered.

    A connection has one session, or two while it rotates (make-before-break)."""

    def __init__(self, ws: _WatchedConnection, subscribed: list[str], acks_expected: int) -> None:
        self.ws = ws
        self.subscribed = set(subscribed)
        self.acks_expected = acks_expected
        self.opened_at = time.monotonic()
        self.last_alive = self.opened_at
        self.frames = 0  # delivered after its subscribe frames went out
        self.confirmed = asyncio.Event()  # a frame per subscribe frame came back (acks, then data)
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Future] = set()
        self.reported = False  # its "down"/"rotated" went out

    def alive(self) -> None:
        self.last_alive = time.monotonic()

    def end(self, task: asyncio.Future) -> None:
        """The first of its tasks to finish decides why the session ended."""
        if self.ended.done() or task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.ended.set_exception(error)
        else:
            self.ended.set_result(task.result())


class VenueConnection:
    """One logical connection of one venue for one shard of symbols, until `close()`.

    `on_frame(frame, recv_ns)` gets every message as received (text or bytes) with
    `time.time_ns()` taken right after it came off the socket; the caller hands both to
    `Store.ingest`. `on_state(state, reason)` hears `"up"` once a socket's subscription is sent,
    `"down"` when a socket is lost or closed, and `"rotated"` when a socket is closed after its
    replacement took over (make-before-break: no hole), so the caller can write markers.
    `http` runs KuCoin's token request (default: `http_fetch`). `ssl_context` verifies `wss://`
    venues (default: the system's CAs; see pumpwatch.tls.client_context for `[tls] ca_file`).

    Planned cuts are met by rotation: ahead of the venue's `connection_lifetime_s`, and when the
    caller says a cut is coming (`request_rotation`, on Binance `serverShutdown` or OKX
    `notice`), a second socket is opened and subscribed, and the old one is closed only once the
    new one delivers; frames of both reach `on_frame` meanwhile (the store dedupes).
    Symbols can change while running (`add_symbols`, `remove_symbols`, `resubscribe`).

    Counters: `frames` (messages received), `reconnects` (sockets opened after a loss),
    `rotations` (sockets replaced make-before-break), `last_message_ns` (receive time of the
    latest message, 0 before any). `state` ("connecting", "up", "backoff", "closed") and
    `last_error` say what is wrong, for status pages.
    """

    def __init__(
        self,
        spec: VenueSpec,
        symbols: Sequence[str],
        *,
        on_frame: Callable[[str | bytes, int], None],
        on_frames: Callable[[list, int], None] | None = None,
        http: HttpFetch | None = None,
        policy: ReconnectPolicy | None = None,
        on_state: Callable[[str, str], None] | None = None,
        on_rejected: Callable[[str, str], None] | None = None,
        name: str | None = None,
        rng: random.Random | None = None,
        budgets: Budgets | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not symbols:
            raise ValueError(f"{spec.id}: a connection needs at least one symbol")
        self.spec = spec
        self.symbols = list(dict.fromkeys(symbols))
        # Built now, so a shard that does not fit one connection fails here, not in a retry loop.
        self.subscribe_frames = spec.subscribe_frames(self.symbols)
        self.on_frame = on_frame
        # Given, whole data frames come in batches (one per socket read, as bytes) to it.
        self.on_frames = on_frames
        self.on_state = on_state
        # Told (symbols, wall ns) once their subscribe frames have gone out on a socket: when a
        # listing's instrument was really subscribed (event.json, the trigger's latency).
        self.on_subscribed: Callable[[list[str], int], None] | None = None
        # Hears each symbol the venue refused to subscribe (found by splitting its request).
        self.on_rejected = on_rejected
        self.rejected: dict[str, str] = {}  # symbol -> the venue's refusal
        self._requests: dict[int, tuple[_Session, list[str]]] = {}  # subscribe request id -> its symbols
        self.http = http if http is not None else http_fetch
        # The venue's per-IP connection budget is shared by every connection of the process
        # (both markets of an exchange): the owner's `Budgets`, else the process's.
        self.budgets = budgets
        self._retry_after_s: float | None = None  # the venue's Retry-After on a refused handshake
        self.ssl_context = ssl_context
        self._url = spec.ws_url  # the URL last connected to, for error messages
        self.policy = policy if policy is not None else ReconnectPolicy()
        self.name = name or f"{spec.id}[{','.join(self.symbols[:3])}{',…' if len(self.symbols) > 3 else ''}]"
        # The heartbeat of the current connection: the spec's, or what its handshake said (KuCoin).
        self.heartbeat = spec.heartbeat
        self.idle_timeout_s = self.policy.idle_timeout(spec)
        self.frames = 0
        self.reconnects = 0
        self.rotations = 0
        self.last_message_ns = 0
        self.state = "connecting"
        self.last_error = ""
        self._rng = rng or random.Random()
        hb = spec.heartbeat
        # The rule says whether we ping; the spec renders the frame for now (Gate's `time`,
        # KuCoin's `id`). A rule without a ping frame (a test's, or a venue that needs none)
        # sends nothing.
        self._pings = hb.who == "client" and hb.ping_frame is not None
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._rotate = asyncio.Event()
        self._rotate_for: tuple[_Session | None, str] | None = None
        self._delivering: _Session | None = None
        self._sessions: list[_Session] = []  # open sockets, oldest first
        self._running = False
        self._ever_up = False
        self._next_send = 0.0
        self._request_id = 0

    # -- what the owner calls

    def request_rotation(self, reason: str) -> None:
        """A planned cut is coming for the socket that delivered the frame being handled (or,
        outside `on_frame`, the current one): replace it make-before-break. Ignored when that
        socket is already being replaced."""
        self._rotate_for = (self._delivering, reason)
        self._rotate.set()

    async def add_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Subscribes these symbols too (on every open socket, within the venue's per-message
        limits); returns the ones added. Raises InvalidInputError when they do not fit."""
        new = [s for s in dict.fromkeys(symbols) if s not in self.symbols]
        if new:
            self.subscribe_frames = self.spec.subscribe_frames(self.symbols + new)  # raises if too many
            self.symbols += new
            await self._sync_all()
        return new

    async def remove_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Unsubscribes these symbols (a delisting); returns the ones removed. The last symbol
        stays (a connection without symbols is closed by its owner instead)."""
        gone = [s for s in dict.fromkeys(symbols) if s in self.symbols]
        if gone and len(gone) < len(self.symbols):
            self.symbols = [s for s in self.symbols if s not in gone]
            self.subscribe_frames = self.spec.subscribe_frames(self.symbols)
            await self._sync_all()
            return gone
        return []

    async def resubscribe(self, symbols: Sequence[str]) -> None:
        """Unsubscribes and subscribes these symbols again on every open socket: a venue that
        dropped a subscription without a word takes it back."""
        symbols = [s for s in symbols if s in self.symbols]
        for session in list(self._sessions):
            await self._send_frames(session, self.spec.unsubscribe_frames(symbols, self._ids(symbols, "unsubscribe")))
            await self._send_frames(session, self.spec.subscribe_frames(symbols, self._ids(symbols, "subscribe")))

    @property
    def up(self) -> bool:
        """A socket is open and subscribed (or being subscribed)."""
        return bool(self._sessions)

    def status(self) -> dict:
        return {
            "name": self.name,
            "state": self.state,
            "symbols": len(self.symbols),
            "sockets": len(self._sessions),
            "reconnects": self.reconnects,
            "rotations": self.rotations,
            "last_error": self.last_error,
        }

    # -- the loop

    async def run(self) -> None:
        """Connects, subscribes and keeps the subscription alive until `close()`.

        Network and venue failures are handled here (reported, backed off, retried); an
        exception from `on_frame` or `on_state` ends the loop and is raised.
        """
        if self._running:
            raise RuntimeError(f"{self.name} is already running")
        self._running = True
        self._stopped.clear()
        attempt = 0
        try:
            while not self._closing.is_set():
                self.state = "connecting"
                up_since: float | None = None
                try:
                    session = await self._until_closed(self._start_session(None))
                except _Closed:
                    break
                except NETWORK_ERRORS as e:
                    # A refused certificate says which host and why, and how to trust it on purpose.
                    self.last_error = f"connecting failed: {describe_tls_error(e, self._url) or _describe(e)}"
                    log.warning("%s: %s", self.name, self.last_error)
                else:
                    up_since = session.opened_at
                    reason = await self._keep(session)
                    if self._closing.is_set():
                        break
                    self.last_error = f"connection lost: {reason}"
                    log.warning("%s: %s", self.name, self.last_error)
                if up_since is not None and time.monotonic() - up_since >= self.policy.stable_after_s:
                    attempt = 0
                delay = self.policy.delay(attempt, self._rng, self._retry_after_s)
                self._retry_after_s = None
                attempt += 1
                self.state = "backoff"
                try:
                    await self._until_closed(asyncio.sleep(delay))
                except _Closed:
                    break
        finally:
            for session in list(self._sessions):
                await self._end(session, "closed", "down")
            self.state = "closed"
            self._running = False
            self._stopped.set()

    async def close(self) -> None:
        """Stops `run()`: a clean closing handshake if connected, and returns once it has ended.
        A closed connection stays closed."""
        self._closing.set()
        if self._running:
            await self._stopped.wait()

    # -- one socket

    async def _open(self) -> tuple[_WatchedConnection, tuple[str | bytes, int] | None]:
        """Resolves the URL and connects; waits for the welcome where the venue sends one before
        it takes subscriptions. Returns the socket and the welcome frame with its receive time.

        Every attempt first waits for a slot in the venue's connection budget (VENUES §12: OKX
        3/s, KuCoin 30/min, Bybit 500 and Binance 300 per 5 min per IP): reconnects after an
        outage and rotations are connection requests too."""
        limiter = self._connect_limiter()
        if limiter is not None:
            waited = await limiter.acquire()
            if waited > 1.0:
                log.info("%s: waited %.1f s for the venue's connection budget %s", self.name, waited, limiter.name)
        try:
            url, heartbeat = await self.spec.resolve(self.http, self.symbols)
        except Exception as e:  # whatever the venue's REST answer was, this attempt failed
            raise ConnectionError(f"resolving {self.spec.id}'s connection failed: {_describe(e)}") from e
        self.heartbeat = heartbeat
        self.idle_timeout_s = self.policy.idle_timeout(self.spec, self.heartbeat)
        self._url = url
        # create_connection below makes it a _WatchedConnection; websockets types connect() as its base class.
        ws = cast(
            _WatchedConnection,
            await connect(
                url,
                # wss:// is verified against the system's CAs, or the configured context; ws:// has none.
                ssl=self.ssl_context if url.startswith("wss:") else None,
                # Application-level heartbeats are ours to send (below); otherwise keep websockets'
                # protocol keepalive (see KEEPALIVE_INTERVAL_S). Server pings are answered either way.
                ping_interval=None if self.spec.heartbeat.who == "client" else KEEPALIVE_INTERVAL_S,
                ping_timeout=KEEPALIVE_TIMEOUT_S,
                open_timeout=self.policy.open_timeout_s,
                close_timeout=self.policy.close_timeout_s,
                max_size=MAX_FRAME_BYTES,
                # Where we connect is the spec's (and so the config's) decision, not the environment's.
                proxy=None,
                additional_headers=dict(self.spec.headers) or None,  # Gate futures' size decimals
                create_connection=_WatchedConnection,
            ),
        )
        try:
            welcome = None
            if self.spec.subscribe_after_welcome:
                # KuCoin takes subscriptions only after its welcome (§5.1); its first frame is the
                # welcome, or an error followed by a close.
                frame = await asyncio.wait_for(ws.recv(), self.idle_timeout_s)
                welcome = (frame, time.time_ns())
            if self.on_frames is not None and isinstance(ws, _WatchedConnection):
                ws.pending_frames = []
                ws.batching = True
        except BaseException:
            await ws.close()
            raise
        return ws, welcome

    def _connect_limiter(self) -> RateLimiter | None:
        if self.spec.connect_budget is None:
            return None
        return (self.budgets or default_budgets()).limiter(self.spec.connect_budget)

    def _refused(self, e: InvalidStatus) -> None:
        """The venue refused the handshake. On 429/418 it counted more connection requests than
        we did (another process on this IP, a restart): nothing more from us to it until its
        Retry-After has passed, never less (VENUES §12: ignoring it earns a ban)."""
        status = e.response.status_code
        if status not in (429, 418):
            return
        self._retry_after_s = retry_after_s(e.response.headers.get("Retry-After"))
        limiter = self._connect_limiter()
        if limiter is not None:
            limiter.hold(
                self._retry_after_s or self.policy.max_delay_s,
                f"{self.spec.id} refused a connection with HTTP {status}",
            )

    async def _start_session(self, rotating: str | None) -> _Session:
        """Opens a socket, subscribes it to the symbols and starts receiving, pinging and
        watching it; reports it up. `rotating`: why it replaces the current one."""
        try:
            ws, welcome = await self._open()
        except InvalidStatus as e:
            self._refused(e)
            raise
        symbols = list(self.symbols)
        first_id = self._ids(symbols, "subscribe")
        frames = self.spec.subscribe_frames(symbols, first_id)
        session = _Session(ws, symbols, len(frames))
        self._remember(session, symbols, first_id)
        ws.on_venue_frame = session.alive
        self._sessions.append(session)
        try:
            if welcome is not None:
                self._deliver(session, *welcome, counts=False)
            for frame in frames:
                await self._send(ws, frame)
        except BaseException:
            self._sessions.remove(session)
            await ws.close()
            raise
        self._subscribed(symbols)
        if rotating is None:
            if self._ever_up:
                self.reconnects += 1
            again = f" (reconnect {self.reconnects})" if self.reconnects else ""
        else:
            again = f" (replacing the current socket: {rotating})"
        self._ever_up = True
        self.state = "up"
        session.tasks = {asyncio.ensure_future(self._receive(session)), asyncio.ensure_future(self._watch(session))}
        if self._pings:
            session.tasks.add(asyncio.ensure_future(self._ping(session)))
        for task in session.tasks:
            task.add_done_callback(session.end)
        self._report("up", f"subscribed to {len(symbols)} symbols{again}")
        if getattr(ws, "batching", False):
            ws.on_data_frames = lambda frames: self._deliver_many(session, frames, time.time_ns())
            if ws.pending_frames:
                ws.flush_frames()
        await self._sync(session)  # symbols added or removed while it was opening
        return session

    async def _keep(self, session: _Session) -> str:
        """Serves the current socket, rotating it make-before-break when its lifetime runs out or
        a cut is announced, until it is lost with no replacement (returns why) or closed."""
        retry_at: float | None = None
        rotation_failures = 0
        while True:
            lifetime = self.spec.connection_lifetime_s
            due = session.opened_at + lifetime * self.policy.rotate_at_fraction if lifetime else None
            if retry_at is not None:
                due = retry_at if due is None else max(due, retry_at)
            waits: set[asyncio.Future[Any]] = {
                session.ended,
                asyncio.ensure_future(self._closing.wait()),
                asyncio.ensure_future(self._rotate.wait()),
            }
            if due is not None:
                waits.add(asyncio.ensure_future(asyncio.sleep(max(0.0, due - time.monotonic()))))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    if w is not session.ended:
                        w.cancel()
            if self._closing.is_set():
                await self._end(session, "closed", "down")
                return "closed"
            if session.ended.done():
                await self._end(session, "stopped by an error", "down")
                return session.ended.result()  # an exception from on_frame is raised here
            why: str | None = None
            if self._rotate.is_set():
                self._rotate.clear()
                target, reason = self._rotate_for or (None, "")
                self._rotate_for = None
                if target in (None, session):
                    why = reason
            if why is None and due is not None and time.monotonic() >= due:
                why = f"connection age {time.monotonic() - session.opened_at:.3g} s of the venue's {lifetime:.3g} s lifetime"
            if why is None:
                continue
            new = await self._replace(session, why)
            if new is None:
                rotation_failures += 1
                retry_at = time.monotonic() + self.policy.delay(rotation_failures - 1, self._rng)
                continue
            session, retry_at, rotation_failures = new, None, 0

    async def _replace(self, old: _Session, why: str) -> _Session | None:
        """Make-before-break: a new socket, subscribed and delivering, then the old one closed.
        Returns the new session, or None when the replacement failed (the old one goes on)."""
        log.info("%s: rotating: %s", self.name, why)
        try:
            new = await self._until_closed(self._start_session(why))
        except _Closed:
            return None
        except NETWORK_ERRORS as e:
            self.last_error = f"rotation failed: connecting: {_describe(e)}"
            log.warning("%s: %s", self.name, self.last_error)
            return None
        confirmed = asyncio.ensure_future(new.confirmed.wait())
        closing = asyncio.ensure_future(self._closing.wait())
        waits: set[asyncio.Future[Any]] = {confirmed, new.ended, closing}
        try:
            await asyncio.wait(waits, timeout=self.idle_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            confirmed.cancel()
            closing.cancel()
        if not new.confirmed.is_set() or new.ended.done():
            if self._closing.is_set():
                return new  # _keep closes both
            self.last_error = "rotation failed: the new socket did not confirm its subscriptions"
            if new.ended.done() and not new.ended.cancelled() and new.ended.exception() is None:
                self.last_error += f" ({new.ended.result()})"
            log.warning("%s: %s", self.name, self.last_error)
            await self._end(new, self.last_error, "down")
            return None
        # Both deliver for a moment: what was in flight on the old socket arrives before it goes.
        try:
            await self._until_closed(asyncio.sleep(self.policy.rotation_overlap_s))
        except _Closed:
            pass
        await self._end(old, f"replaced: {why}", "rotated")
        self.rotations += 1
        return new

    async def _end(self, session: _Session, reason: str, state: str) -> None:
        """Stops a socket's tasks, closes it and reports it (once)."""
        if session in self._sessions:
            self._sessions.remove(session)
        for task in session.tasks:
            task.cancel()
        await asyncio.gather(*session.tasks, return_exceptions=True)
        if not session.ended.done():
            session.ended.set_result(reason)
        if getattr(session.ws, "batching", False):
            session.ws.on_data_frames = None
        await session.ws.close()
        if not session.reported:
            session.reported = True
            if state == "down" and not session.ended.cancelled() and session.ended.exception() is None:
                reason = session.ended.result()
            self._report(state, reason)

    async def _receive(self, session: _Session) -> str:
        try:
            while True:
                frame = await session.ws.recv()
                self._deliver(session, frame, time.time_ns())
        except WebSocketException as e:
            if session.ws.frames_error is not None:
                raise session.ws.frames_error from None  # the ingest's own error (a full disk...)
            return f"connection closed: {_describe(e)}"

    async def _ping(self, session: _Session) -> str:
        interval = self.heartbeat.interval_s
        try:
            while True:
                await asyncio.sleep(interval)
                frame = self.spec.ping_frame()
                if frame is not None:
                    await self._send(session.ws, frame)
        except WebSocketException as e:
            return f"connection closed while pinging: {_describe(e)}"

    async def _watch(self, session: _Session) -> str:
        """The idle watchdog: a socket that has been silent past the idle timeout is dead,
        whatever TCP says (a stalled venue keeps the socket open and sends nothing)."""
        timeout = self.idle_timeout_s
        while True:
            silent = time.monotonic() - session.last_alive
            if silent >= timeout:
                return f"nothing received for {silent:.3g} s (idle timeout {timeout:.3g} s)"
            await asyncio.sleep(timeout - silent)

    # -- subscriptions while running

    def _ids(self, symbols: Sequence[str], op: str) -> int:
        """The first request id for the frames of `op` on `symbols`; ids count up per connection."""
        first = self._request_id + 1
        count = (
            len((self.spec.subscribe_frames if op == "subscribe" else self.spec.unsubscribe_frames)(symbols))
            if symbols
            else 0
        )
        self._request_id += count
        return first

    async def _sync(self, session: _Session) -> None:
        """Brings a socket's subscriptions to the connection's symbols."""
        add = [s for s in self.symbols if s not in session.subscribed]
        drop = [s for s in session.subscribed if s not in self.symbols]
        if drop:
            session.subscribed -= set(drop)
            await self._send_frames(session, self.spec.unsubscribe_frames(drop, self._ids(drop, "unsubscribe")))
        if add:
            session.subscribed |= set(add)
            first_id = self._ids(add, "subscribe")
            self._remember(session, add, first_id)
            await self._send_frames(session, self.spec.subscribe_frames(add, first_id))
            self._subscribed(add)

    def _subscribed(self, symbols: list[str]) -> None:
        if self.on_subscribed is not None and symbols:
            self.on_subscribed(symbols, time.time_ns())

    def _remember(self, session: _Session, symbols: Sequence[str], first_id: int) -> None:
        """Which symbols each subscribe request carries, so a refusal of one can be traced."""
        for i, batch in enumerate(self.spec.subscribe_batches(symbols, first_id)):
            self._requests[first_id + i] = (session, batch)
        while len(self._requests) > MAX_TRACKED_REQUESTS:
            del self._requests[next(iter(self._requests))]

    async def subscribe_refused(self, request_id: int | None, reason: str, named: Sequence[str] = ()) -> None:
        """The venue refused subscribe request `request_id` whole for unknown symbols (Gate,
        KuCoin, Bybit, Phemex: docs/VENUES.md §12 "Subscribe failures"). Where it `named` the
        refused symbols (Bybit), those are dropped and the request's other symbols asked for again
        at once; otherwise its symbols are asked for again in two halves, until the refused ones
        stand alone (a binary split: k bad symbols among n cost about 2k·log2(n) requests).
        Dropped symbols leave the connection and are reported (`on_rejected`). Without a request
        id (cut from a long refusal), the latest request carrying a named symbol is the one."""
        if request_id is None:
            request_id = next(
                (rid for rid, (_, batch) in reversed(self._requests.items()) if set(named) & set(batch)), None
            )
        entry = self._requests.pop(request_id, None) if request_id is not None else None
        if entry is None:
            return
        session, symbols = entry
        symbols = [s for s in symbols if s in self.symbols]
        if not symbols or session not in self._sessions:
            return  # gone meanwhile; a new socket subscribes what is left afresh
        refused = [s for s in symbols if s in set(named)] if len(symbols) > 1 else symbols
        if refused:
            for symbol in refused:
                self._reject(session, symbol, reason)
            rest = [s for s in symbols if s not in refused]
            parts = [rest] if rest else []
        else:
            half = len(symbols) // 2
            parts = [symbols[:half], symbols[half:]]
        for part in parts:
            first_id = self._ids(part, "subscribe")
            self._remember(session, part, first_id)
            await self._send_frames(session, self.spec.subscribe_frames(part, first_id))

    def _reject(self, session: _Session, symbol: str, reason: str) -> None:
        """`symbol` is one the venue refused: it leaves the connection and is reported."""
        self.rejected[symbol] = reason
        session.subscribed.discard(symbol)
        if len(self.symbols) > 1:  # the last symbol stays (see remove_symbols); it is reported all the same
            self.symbols.remove(symbol)
            self.subscribe_frames = self.spec.subscribe_frames(self.symbols)
        log.warning("%s: the venue refused %s: %s", self.name, symbol, reason[:200])
        if self.on_rejected is not None:
            self.on_rejected(symbol, reason)

    async def retry_rejected(self, symbols: Sequence[str]) -> list[str]:
        """Asks again for symbols the venue refused (its instrument list lists them: the socket
        may know them now): they rejoin the connection and are subscribed on every open socket.
        Returns those that had been refused here."""
        again = [s for s in dict.fromkeys(symbols) if self.rejected.pop(s, None) is not None]
        kept = [s for s in again if s in self.symbols]  # a connection's last symbol never left it
        for session in list(self._sessions) if kept else []:
            session.subscribed |= set(kept)
            first_id = self._ids(kept, "subscribe")
            self._remember(session, kept, first_id)
            await self._send_frames(session, self.spec.subscribe_frames(kept, first_id))
        await self.add_symbols([s for s in again if s not in kept])
        return again

    async def _sync_all(self) -> None:
        for session in list(self._sessions):
            await self._sync(session)

    async def _send_frames(self, session: _Session, frames: list[str]) -> None:
        try:
            for frame in frames:
                await self._send(session.ws, frame)
        except WebSocketException as e:  # the socket is going; its replacement subscribes afresh
            log.info("%s: sending a subscription change failed: %s", self.name, _describe(e))

    # -- helpers

    def _deliver(self, session: _Session, frame: str | bytes, recv_ns: int, *, counts: bool = True) -> None:
        self._arrived(session, 1, recv_ns, counts)
        self._delivering = session
        try:
            self.on_frame(frame, recv_ns)
        finally:
            self._delivering = None

    def _deliver_many(self, session: _Session, frames: list[bytes], recv_ns: int) -> None:
        """The whole data frames of one socket read, in one call (see _WatchedConnection)."""
        assert self.on_frames is not None, "batching is on only when on_frames was given (_open)"
        self._arrived(session, len(frames), recv_ns, True)
        self._delivering = session
        try:
            self.on_frames(frames, recv_ns)
        finally:
            self._delivering = None

    def _arrived(self, session: _Session, n: int, recv_ns: int, counts: bool) -> None:
        """`n` frames came in on `session`; once as many as its subscribe frames came back after
        subscribing (acks, then data), a rotation may close the socket it replaces."""
        self.last_message_ns = recv_ns
        self.frames += n
        if counts:
            session.frames += n
            if session.frames >= session.acks_expected:
                session.confirmed.set()

    def _report(self, state: str, reason: str) -> None:
        log.info("%s: %s (%s)", self.name, state, reason)
        if self.on_state is not None:
            self.on_state(state, reason)

    async def _send(self, ws: ClientConnection, frame: str) -> None:
        """Sends within the venue's client message rate: each send takes the next free slot."""
        rate = self.spec.max_client_messages_per_s
        if rate:
            now = time.monotonic()
            slot = max(now, self._next_send)
            self._next_send = slot + 1.0 / (rate * SEND_RATE_SHARE)
            if slot > now:
                await asyncio.sleep(slot - now)
        await ws.send(frame)

    async def _until_closed(self, aw: Awaitable[T]) -> T:
        """`aw`'s result, or `_Closed` as soon as close() is called (`aw` is then cancelled)."""
        task = asyncio.ensure_future(aw)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise _Closed
        return task.result()


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


__all__ = ["HttpError", "ReconnectPolicy", "VenueConnection", "http_fetch"]
