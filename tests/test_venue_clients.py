"""The per-connection client (`pumpwatch.connection`) against the simulator, for all twelve venues.

Each client is built only from the venue's spec (`pumpwatch.venues.get(venue).with_urls(...)`),
pointed at a `SimVenue` on 127.0.0.1, and stores what it receives through `Store.ingest`, as the
collector will. The simulator's `sent_trades()` is the truth the store is compared with.

Time: `time_scale` shrinks the simulator's protocol timers so each venue's heartbeat timeout is
about a second; the client's heartbeat rule is shrunk by the same factor (its ping interval and
timeout are protocol timers too), never below MIN_CLIENT_TIMER_S. Every test runs under a
deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

import pumpwatch
from pumpwatch.connection import ReconnectPolicy, VenueConnection
from pumpwatch.sim import VENUE_IDS, SimVenue
from pumpwatch.venues import VenueSpec, get

pytestmark = pytest.mark.timeout(60)

SEED = 7
TRADES_PER_S = 40.0
BACKLOG = 20  # trades per symbol sent before any client came: not for the client to get
BASES = ["BTC", "ETH", "SOL"]  # the client subscribes to the first two; SOL trades unheard
SUBSCRIBED = 2
HEARTBEAT_TIMEOUT_S = 1.0  # each venue's (scaled) heartbeat timeout
# The client's timers shrink with the simulator's, but not below this: Bybit's 20 s ping and 10 s
# timeout against its 10 min cut would become 33 ms and 17 ms, and a watchdog that short measures
# the test machine's event loop, not the protocol. Longer client timers only make the test harder.
MIN_CLIENT_TIMER_S = 0.2
POLICY = ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.5, open_timeout_s=5.0, close_timeout_s=0.5)
IN_FLIGHT_S = 0.3  # a trade sent this long before the end must have been stored by then
KEYS = ("symbol", "trade_id", "price", "qty", "side", "ts_ns")
CLIENT_HEARTBEAT = [v for v in VENUE_IDS if get(v).heartbeat.who == "client"]
# Gate pings at protocol level and disconnects a client that does not answer; its app-level
# spot.ping/futures.ping is optional (VENUES §7.1, §8). websockets answers protocol pings by
# itself, so a client that never sends an app ping stays connected there.
APP_PING_OPTIONAL = {"gate-spot", "gate-futures"}


def run(coro, deadline: float):
    return asyncio.run(asyncio.wait_for(coro, deadline))


def time_scale(venue: str) -> float:
    return HEARTBEAT_TIMEOUT_S / SimVenue(venue).heartbeat_timeout


def client_spec(venue: str, sim: SimVenue, scale: float, *, ping: bool = True) -> VenueSpec:
    """The venue's spec pointed at the simulator, its heartbeat timers scaled like the
    simulator's; `ping=False` keeps the rule but sends no pings."""
    spec = get(venue).with_urls(ws_url=sim.ws_origin, rest_url=sim.rest_url)
    hb = spec.heartbeat
    hb = dataclasses.replace(
        hb,
        interval_s=max(hb.interval_s * scale, MIN_CLIENT_TIMER_S),
        timeout_s=max(hb.timeout_s * scale, MIN_CLIENT_TIMER_S),
        ping_frame=hb.ping_frame if ping else None,
    )
    return dataclasses.replace(spec, heartbeat=hb)


class Client:
    """A VenueConnection with the caller's side of it: frames into a store, states and events
    recorded, connection markers written."""

    def __init__(self, venue: str, sim: SimVenue, spec: VenueSpec, path: Path):
        self.venue = venue
        self.sim = sim
        self.symbols = list(sim.instruments)[:SUBSCRIBED]
        self.store = pumpwatch.Store(path, segment_max_bytes=1 << 22, ring_bytes=1 << 20)
        self.states: list[tuple[str, str, int]] = []  # (state, reason, time_ns)
        self.events: list[tuple] = []
        self.acks = 0
        self.sent_at_ack: dict[str, int] = {}  # per symbol, trades sent when the latest ack arrived
        self.conn = VenueConnection(
            spec, self.symbols, on_frame=self.on_frame, on_state=self.on_state, policy=POLICY, name=f"test {venue}"
        )
        self.task: asyncio.Task | None = None

    def on_frame(self, frame: str | bytes, recv_ns: int) -> None:
        _, events = self.store.ingest(self.venue, frame, recv_ns)
        for e in events or ():
            self.events.append(e)
            if e[0] == "control" and e[2] == "subscribe_ack":
                # Every subscription is in effect once its ack is here: the venue subscribes
                # before it acks, and trades it sends later queue behind the ack.
                self.acks += 1
                self.sent_at_ack = {s: len(self.sim.sent_trades(s)) for s in self.symbols}

    def on_state(self, state: str, reason: str) -> None:
        now = time.time_ns()
        self.states.append((state, reason, now))
        self.store.append_marker(f"connection_{state}", ts_ns=now, venue=self.venue, detail=reason)

    def start(self) -> None:
        self.task = asyncio.create_task(self.conn.run())

    async def stop(self) -> None:
        await asyncio.wait_for(self.conn.close(), 5)
        await self.task  # raises whatever ended run()

    def stored(self, symbol: str | None = None, *, received_after_ns: int = 0) -> list[tuple]:
        rows = self.store.query(venues=[self.venue], symbols=None if symbol is None else [symbol]).to_pylist()
        return [tuple(r[k] for k in KEYS) for r in rows if r["recv_ns"] >= received_after_ns]

    def state_names(self) -> list[str]:
        return [s for s, _, _ in self.states]

    def last_up_after_down_ns(self) -> int | None:
        """When the latest reconnection came up (None if there was none)."""
        names = self.state_names()
        for i in range(len(names) - 1, 0, -1):
            if names[i] == "up" and names[i - 1] == "down":
                return self.states[i][2]
        return None


async def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(step)
    return True


def sent(sim: SimVenue, symbol: str) -> list[tuple]:
    return [tuple(t[k] for k in KEYS) for t in sim.sent_trades(symbol)]


# ---------------------------------------------------------------------------------------------
# Every trade, and the heartbeat rule survived


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_client_receives_every_trade_and_survives_the_heartbeat(venue, tmp_path):
    scale = time_scale(venue)

    async def body():
        async with SimVenue(
            venue, seed=SEED, symbols=BASES, trades_per_s=TRADES_PER_S, time_scale=scale, backlog=BACKLOG
        ) as sim:
            client = Client(venue, sim, client_spec(venue, sim, scale), tmp_path / "data")
            client.start()
            await asyncio.sleep(2.5 * sim.heartbeat_timeout - IN_FLIGHT_S)
            sent_before_end = {s: len(sim.sent_trades(s)) for s in client.symbols}
            await asyncio.sleep(IN_FLIGHT_S)
            assert client.conn.reconnects == 0, client.states
            assert client.state_names() == ["up"], client.states
            await client.stop()
            assert client.state_names() == ["up", "down"]
            return sim, client, sent_before_end

    sim, client, sent_before_end = run(body(), 20)
    assert client.acks >= len(client.conn.subscribe_frames), "every subscribe frame is acknowledged"
    assert not [e for e in client.events if e[0] in ("gap", "quarantined")]
    total = 0
    for symbol in client.symbols:
        truth = sent(sim, symbol)
        position = {t: i for i, t in enumerate(truth)}
        stored = client.stored(symbol)
        assert [t for t in stored if t not in position] == [], "stored trades the venue never sent"
        assert len(stored) >= 5, f"{symbol}: only {len(stored)} trades"
        first = min(position[t] for t in stored)
        last = max(position[t] for t in stored)
        # Trades sent before the subscription took effect are not ours to get (Phemex's snapshot
        # brings some anyway); from the first one stored, every trade, once, exactly.
        assert Counter(stored) == Counter(truth[first : last + 1]), f"{symbol}: missing or duplicated trades"
        assert first <= client.sent_at_ack[symbol], f"{symbol}: trades lost after the subscription took effect"
        assert last + 1 >= sent_before_end[symbol], f"{symbol}: trades sent before the end never arrived"
        total += len(stored)
    assert total >= 20
    assert client.conn.frames > 0 and client.conn.last_message_ns > 0
    assert [r["kind"] for r in client.store.markers().to_pylist()] == ["connection_up", "connection_down"]
    client.store.close()


# ---------------------------------------------------------------------------------------------
# A dropped connection comes back and trades flow again


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_client_reconnects_after_the_venue_drops_it(venue, tmp_path):
    scale = time_scale(venue)

    async def body():
        async with SimVenue(venue, seed=SEED, symbols=BASES, trades_per_s=TRADES_PER_S, time_scale=scale) as sim:
            client = Client(venue, sim, client_spec(venue, sim, scale), tmp_path / "data")
            client.start()
            assert await wait_until(lambda: len(client.stored()) >= 10, 5), "no trades before the drop"
            sim.disconnect_all()
            back = await wait_until(
                lambda: (
                    (up := client.last_up_after_down_ns()) is not None
                    and len(client.stored(received_after_ns=up)) >= 10
                ),
                5,
            )
            await client.stop()
            assert back, f"no trades after reconnecting: {client.states}"
            return sim, client

    sim, client = run(body(), 20)
    assert client.conn.reconnects >= 1
    assert client.state_names()[:3] == ["up", "down", "up"], client.states
    everything = {t for s in client.symbols for t in sent(sim, s)}
    assert set(client.stored()) <= everything, "stored trades the venue never sent"
    assert not [e for e in client.events if e[0] == "quarantined"]
    client.store.close()


# ---------------------------------------------------------------------------------------------
# The heartbeat is what keeps a quiet connection alive


QUIET_S = 1.6  # longer than every scaled heartbeat timeout and idle timeout (<= 1 s) with room


@pytest.mark.parametrize("venue", CLIENT_HEARTBEAT)
def test_client_without_pings_is_cut_and_comes_back(venue, tmp_path):
    """Two clients on one quiet market (no trades for QUIET_S, then trades): one pings as its
    spec says, one never does. The pinging one stays up; the silent one is cut by the venue or
    by its own idle watchdog and comes back, and trades reach it after it returns."""
    scale = time_scale(venue)

    async def body():
        async with SimVenue(venue, seed=SEED, symbols=BASES, trades_per_s=TRADES_PER_S, time_scale=scale) as sim:
            sim.burst(0.0, QUIET_S)  # the market goes quiet: only heartbeats pass
            pinging = Client(venue, sim, client_spec(venue, sim, scale), tmp_path / "pinging")
            silent = Client(venue, sim, client_spec(venue, sim, scale, ping=False), tmp_path / "silent")
            pinging.start()
            silent.start()
            await asyncio.sleep(QUIET_S)
            if venue in APP_PING_OPTIONAL:
                came_back = await wait_until(lambda: len(silent.stored()) >= 5, 3)
            else:
                came_back = await wait_until(
                    lambda: (
                        (up := silent.last_up_after_down_ns()) is not None
                        and len(silent.stored(received_after_ns=up)) >= 5
                    ),
                    3,
                )
            await wait_until(lambda: len(pinging.stored()) >= 5, 2)
            await pinging.stop()
            await silent.stop()
            return pinging, silent, came_back

    pinging, silent, came_back = run(body(), 20)
    assert pinging.conn.reconnects == 0, f"the pinging client was cut: {pinging.states}"
    assert len(pinging.stored()) >= 5
    if venue in APP_PING_OPTIONAL:
        assert silent.conn.reconnects == 0, silent.states
        assert came_back
    else:
        assert silent.conn.reconnects >= 1, f"a client that never pings was not cut: {silent.states}"
        assert silent.state_names()[:3] == ["up", "down", "up"], silent.states
        assert came_back, f"no trades after the silent client came back: {silent.states}"
    pinging.store.close()
    silent.store.close()


# ---------------------------------------------------------------------------------------------
# A stalled venue: the socket stays open and nothing comes


def test_idle_watchdog_replaces_a_stalled_connection(tmp_path):
    """Binance's heartbeat is the server's ping, so the watchdog has only the venue's pings and
    messages to go by; a stall stops both (our keepalive's pongs do not count)."""
    venue = "binance-spot"
    scale = time_scale(venue)

    async def body():
        async with SimVenue(venue, seed=SEED, symbols=BASES, trades_per_s=TRADES_PER_S, time_scale=scale) as sim:
            client = Client(venue, sim, client_spec(venue, sim, scale), tmp_path / "data")
            client.start()
            assert await wait_until(lambda: len(client.stored()) >= 10, 5), "no trades before the stall"
            sim.stall(1.5 * client.conn.idle_timeout_s)
            back = await wait_until(
                lambda: (
                    (up := client.last_up_after_down_ns()) is not None
                    and len(client.stored(received_after_ns=up)) >= 10
                ),
                5,
            )
            await client.stop()
            assert back, f"no trades after the stall: {client.states}"
            return client

    client = run(body(), 20)
    assert client.conn.reconnects >= 1
    assert "nothing received" in client.states[1][1], client.states
    client.store.close()


# ---------------------------------------------------------------------------------------------
# KuCoin's heartbeat comes from its token


@pytest.mark.parametrize("venue", ["kucoin-spot", "kucoin-futures"])
def test_kucoin_client_pings_at_the_interval_its_token_gives(venue, tmp_path):
    """The spec as it is (only the URLs changed) against a venue whose bullet-public advertises
    a shorter ping interval than today's 18 s (here the simulator's, scaled)."""
    scale = time_scale(venue)

    async def body():
        async with SimVenue(venue, seed=SEED, symbols=BASES, trades_per_s=TRADES_PER_S, time_scale=scale) as sim:
            spec = get(venue).with_urls(ws_url=sim.ws_origin, rest_url=sim.rest_url)
            client = Client(venue, sim, spec, tmp_path / "data")
            client.start()
            await asyncio.sleep(2.5 * sim.heartbeat_timeout)
            await client.stop()
            return client

    client = run(body(), 20)
    assert client.conn.reconnects == 0, client.states


# ---------------------------------------------------------------------------------------------
# The policy, the HTTP fetch and close(), on their own


def test_reconnect_policy_backs_off_exponentially_with_bounded_jitter():
    policy = ReconnectPolicy(initial_delay_s=0.5, max_delay_s=30.0, factor=2.0, jitter=0.2)
    rng = random.Random(1)
    for attempt, base in enumerate([0.5, 1, 2, 4, 8, 16, 30, 30]):
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(base * 0.8 <= d <= base for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 100, "jitter spreads the delays"
    assert policy.delay(10_000, rng) <= 30.0  # no overflow far past the cap
    assert ReconnectPolicy(jitter=0).delay(3, rng) == 4.0
    for bad in ({"factor": 0.5}, {"jitter": 1.0}, {"initial_delay_s": 60}, {"idle_timeout_s": 0}):
        with pytest.raises(ValueError):
            ReconnectPolicy(**bad)
    spec = get("okx-spot")
    assert ReconnectPolicy().idle_timeout(spec) == spec.heartbeat.interval_s + spec.heartbeat.timeout_s
    assert ReconnectPolicy(idle_timeout_s=3).idle_timeout(spec) == 3


def test_close_stops_a_connection_that_cannot_connect():
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = get("bybit-spot").with_urls(ws_url=f"ws://127.0.0.1:{port}")
    states: list[str] = []
    conn = VenueConnection(
        spec, ["BTCUSDT"], on_frame=lambda f, t: None, on_state=lambda s, r: states.append(s), policy=POLICY
    )

    async def body():
        task = asyncio.create_task(conn.run())
        await asyncio.sleep(0.5)  # several refused attempts, backing off
        started = time.monotonic()
        await conn.close()
        await task
        return time.monotonic() - started

    assert run(body(), 5) < 0.2
    assert states == [] and conn.reconnects == 0 and conn.frames == 0


def test_an_error_from_on_frame_ends_run_instead_of_reconnecting():
    """DiskFullError is an OSError, like a network failure; reconnecting cannot fix it, so it
    must reach the caller rather than start a retry loop that silently drops every trade."""
    states: list[str] = []

    async def body():
        async with SimVenue("binance-spot", seed=SEED, trades_per_s=TRADES_PER_S) as sim:
            frames = 0

            def on_frame(frame, recv_ns):
                nonlocal frames
                frames += 1
                if frames == 5:
                    raise pumpwatch.DiskFullError("no space left on device")

            spec = get("binance-spot").with_urls(ws_url=sim.ws_origin, rest_url=sim.rest_url)
            conn = VenueConnection(
                spec, ["BTCUSDT"], on_frame=on_frame, on_state=lambda s, r: states.append(s), policy=POLICY
            )
            with pytest.raises(pumpwatch.DiskFullError):
                await conn.run()
            return conn

    conn = run(body(), 10)
    assert states == ["up", "down"] and conn.reconnects == 0 and conn.frames == 5
