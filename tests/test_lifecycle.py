"""Connections that never silently die, against the in-process simulator: a stalled socket is
replaced within the idle timeout; planned cuts (Binance's 24 h in scaled time, Binance USDⓈ-M
`serverShutdown`, OKX `notice`, KuCoin's token expiry) are met make-before-break and leave no
hole; redundant twins lose nothing when one is killed again and again; a silent symbol raises an
alarm and is resubscribed; delisted instruments are unsubscribed and new ones subscribed; a venue
that refuses, errors or cannot be reached says so in the status and harms no other.

No-loss claims count against what the simulator sent: per symbol, from the first trade stored to
the last, every trade the venue sent is stored exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections import Counter

import pytest

import pumpwatch
import pumpwatch.purepy
from pumpwatch.collector import SILENT_CHECK_S, Collector, Shard, VenueRecorder
from pumpwatch.config import Config, ConnectionSettings, VenueSettings
from pumpwatch.sim import SimVenue
from pumpwatch.venues import DAY_S, VenueAnswerError, get

pytestmark = pytest.mark.timeout(120)

KEY = ("symbol", "trade_id", "price", "qty", "side", "ts_ns")
FAST = dict(initial_delay_s=0.05, max_delay_s=0.5)  # reconnects in tests take no seconds


def _settings(sims: dict[str, SimVenue], extra: dict[str, dict] | None = None) -> dict[str, VenueSettings]:
    extra = extra or {}
    out = {}
    for v in pumpwatch.VENUES:
        if v in sims:
            # The stand-ins take any key: Binance USDⓈ-M backfills single trades with one (VENUES §2.3).
            out[v] = VenueSettings(
                ws_url=sims[v].ws_origin, rest_url=sims[v].rest_url, **{"api_key": "sim-key", **extra.get(v, {})}
            )
        elif v in extra:
            out[v] = VenueSettings(**extra[v])
        else:
            out[v] = VenueSettings(enabled=False)
    return out


class Run:
    """A collector recording the given simulated venues into a store under `path`."""

    def __init__(
        self,
        path,
        sims: dict[str, SimVenue],
        *,
        connection: dict | None = None,
        venues: dict[str, dict] | None = None,
        specs: dict | None = None,
        engine: str = "rust",
        **cfg,
    ):
        self.sims = sims
        self.cfg = Config(
            data_dir=str(path),
            metrics_address="127.0.0.1:0",
            connection=ConnectionSettings(**{**FAST, **(connection or {})}),
            venues=_settings(sims, venues),
            **cfg,
        )
        self.store = pumpwatch.purepy.Store(path) if engine == "purepy" else pumpwatch.Store(path)
        self.collector = Collector(self.cfg, self.store, specs=specs)
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Run:
        self.task = asyncio.create_task(self.collector.run(self.stop_event))
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop_event.set()
        await self.task

    def status(self, venue: str) -> dict:
        return self.collector.status()["venues"][venue]

    def recorder(self, venue: str):
        return self.collector.recorders[venue]

    def markers(self, venue: str, kind: str | None = None) -> list[dict]:
        return [
            m for m in self.store.markers().to_pylist() if m["venue"] == venue and (kind is None or m["kind"] == kind)
        ]

    def stored(self, venue: str) -> list[dict]:
        return self.store.query(venues=[venue]).to_pylist()


async def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(step)
    return True


def assert_every_trade_once(sim: SimVenue, rows: list[dict], *, min_per_symbol: int = 10) -> str:
    """Per symbol, from the first trade stored to the last: the trades the venue sent, each
    stored exactly once (nothing missing, nothing twice, nothing it never sent)."""
    report = []
    by_symbol: dict[str, list[tuple]] = {}
    for r in rows:
        by_symbol.setdefault(r["symbol"], []).append(tuple(r[k] for k in KEY))
    assert by_symbol, f"{sim.venue_id}: nothing stored"
    for symbol, stored in by_symbol.items():
        truth = [tuple(t[k] for k in KEY) for t in sim.sent_trades(symbol)]
        position = {t: i for i, t in enumerate(truth)}
        assert [t for t in stored if t not in position] == [], f"{symbol}: stored trades the venue never sent"
        first = min(position[t] for t in stored)
        last = max(position[t] for t in stored)
        counted = Counter(stored)
        twice = [t for t, n in counted.items() if n > 1]
        missing = [t for t in truth[first : last + 1] if t not in counted]
        assert not twice, f"{sim.venue_id} {symbol}: {len(twice)} trades stored twice, e.g. {twice[:2]}"
        assert not missing, (
            f"{sim.venue_id} {symbol}: {len(missing)} of {last + 1 - first} trades missing, e.g. {missing[:2]}"
        )
        assert len(stored) >= min_per_symbol, f"{symbol}: only {len(stored)} trades"
        report.append(f"{symbol}: {len(stored)} = sent in span")
    return f"{sim.venue_id}: " + ", ".join(report)


def scaled_spec(venue: str, lifetime_scale: float):
    """The venue's spec with its connection lifetime scaled like the simulator's."""
    spec = get(venue)
    return dataclasses.replace(spec, connection_lifetime_s=spec.connection_lifetime_s * lifetime_scale)


# ---------------------------------------------------------------------------------------------
# A stalled connection is replaced within the idle timeout


def test_stalled_connection_is_detected_and_replaced_within_the_idle_timeout(tmp_path):
    idle = 1.0
    venue = "binance-spot"

    async def go():
        async with SimVenue(venue, seed=11, trades_per_s=40.0, backlog=20) as sim:
            async with Run(tmp_path / "d", {venue: sim}, connection={"idle_timeout_s": idle}) as run:
                assert await wait_until(lambda: len(run.stored(venue)) >= 20, 10), "no trades before the stall"
                stalled_at = time.time_ns()
                sim.stall(2.5 * idle)
                assert await wait_until(
                    lambda: any("nothing received" in m["detail"] for m in run.markers(venue, "connection_down")),
                    3 * idle,
                )
                down = next(m for m in run.markers(venue, "connection_down") if "nothing received" in m["detail"])
                # Detected within the idle timeout of the last frame before the stall (which came
                # at most a moment before `stalled_at`): a loaded machine gets half a second.
                assert (down["ts_ns"] - stalled_at) / 1e9 <= idle + 0.5, down
                replaced = await wait_until(
                    lambda: any(m["ts_ns"] > down["ts_ns"] for m in run.markers(venue, "connection_up")), idle
                )
                assert replaced, "no replacement socket was opened"
                up = min(m["ts_ns"] for m in run.markers(venue, "connection_up") if m["ts_ns"] > down["ts_ns"])
                assert (up - down["ts_ns"]) / 1e9 <= idle, "the replacement took longer than the idle timeout"
                # After the stall, trades flow again on the replacement and the hole is backfilled.
                assert await wait_until(lambda: sum(r["recv_ns"] > up for r in run.stored(venue)) >= 20, 10)
                # The slowest symbol trades a few times a second: run until each has enough to judge
                # (a recorder that is quicker to recover must not fail for having recorded less).
                await wait_until(
                    lambda: (
                        min(Counter(r["symbol"] for r in run.stored(venue)).values()) >= 10
                        and len({r["symbol"] for r in run.stored(venue)}) == len(sim.instruments)
                    ),
                    10,
                )
                await wait_until(lambda: run.status(venue)["pending_backfills"] == 0, 5)
            status = run.status(venue)
            rows = run.stored(venue)
        print(assert_every_trade_once(sim, rows))
        assert status["reconnects"] >= 1 and status["gaps_found"] >= 1 and status["gaps_unfillable"] == 0
        run.store.close()

    asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# Planned cuts leave no hole at all

LIFETIME_S = 4.0  # a scaled day


@pytest.mark.parametrize(
    "venue, cut",
    [
        ("binance-spot", "lifetime"),  # the 24 h limit, scaled to LIFETIME_S
        ("binance-usdm", "notice"),  # serverShutdown, then the venue closes the socket
        ("okx-spot", "notice"),  # notice 64008, 60 s (here 3 s) before a service upgrade
        ("gate-futures", "notice"),  # futures.system type "upgrade" (VENUES §12)
        ("kucoin-spot", "lifetime"),  # the token expires
    ],
)
def test_planned_cut_leaves_no_gap(venue, cut, tmp_path):
    scale = LIFETIME_S / DAY_S
    seconds = 9.0

    async def go():
        lifetime_scale = scale if cut == "lifetime" else None
        async with SimVenue(venue, seed=5, trades_per_s=40.0, lifetime_scale=lifetime_scale) as sim:
            specs = {venue: scaled_spec(venue, scale)} if cut == "lifetime" else None
            conn = {"rotate_at_fraction": 0.6, "rotation_overlap_s": 0.3}
            async with Run(tmp_path / "d", {venue: sim}, connection=conn, specs=specs) as run:
                assert await wait_until(lambda: len(run.stored(venue)) >= 20, 10), "no trades"
                if cut == "notice":
                    sim.announce_shutdown(grace_s=3.0)  # time_scale 1: real seconds
                await asyncio.sleep(seconds)
            status = run.status(venue)
            rows = run.stored(venue)
            markers = run.markers(venue)
        print(assert_every_trade_once(sim, rows))
        kinds = Counter(m["kind"] for m in markers)
        assert kinds["gap_found"] == 0 and kinds["gap_unfillable"] == 0, kinds
        assert status["backfilled"] == 0, "a hole was filled over REST: the cut was not met make-before-break"
        rotated = [m for m in markers if m["kind"] == "connection_down" and "rotated make-before-break" in m["detail"]]
        assert status["rotations"] >= 1 and rotated, markers
        # The only downs are the rotations and the stop at the end.
        downs = [m for m in markers if m["kind"] == "connection_down" and m not in rotated]
        assert all("closed" in m["detail"] for m in downs), downs
        if cut == "notice":
            assert status["rotation_notices"] >= 1
        else:
            assert status["rotations"] >= 2  # every scaled day, again and again
        run.store.close()

    asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# Redundant connections


@pytest.mark.parametrize("venue", ["binance-spot", "bybit-spot"])
def test_redundant_twin_loses_nothing_when_one_is_killed_repeatedly(venue, tmp_path):
    async def go():
        async with SimVenue(venue, seed=9, trades_per_s=40.0) as sim:
            async with Run(tmp_path / "d", {venue: sim}, connection={"redundancy": 2}) as run:
                assert await wait_until(lambda: sim.client_count == 2 and len(run.stored(venue)) >= 20, 10)
                for _ in range(5):
                    await asyncio.sleep(0.8)
                    assert await wait_until(lambda: sim.client_count == 2, 5), "the killed twin did not come back"
                    assert sim.disconnect_oldest()
                await asyncio.sleep(1.0)
            status = run.status(venue)
            rows = run.stored(venue)
            markers = run.markers(venue)
        print(assert_every_trade_once(sim, rows))
        assert status["connections"] == 2 and status["redundancy"] == 2
        assert status["reconnects"] >= 5
        kinds = Counter(m["kind"] for m in markers)
        assert kinds["gap_found"] == 0 and kinds["gap_unfillable"] == 0, kinds
        # The twin carried every trade: nothing had to come over REST.
        assert status["backfilled"] == 0 and not any(r["flags"] & pumpwatch.FLAGS["BACKFILL"] for r in rows)
        run.store.close()

    asyncio.run(go())


def test_redundancy_setting_is_checked():
    with pytest.raises(pumpwatch.config.ConfigError, match="redundancy"):
        pumpwatch.config.from_dict({"connection": {"redundancy": 3}})
    with pytest.raises(pumpwatch.config.ConfigError, match=r"venues\.okx-spot\.redundancy"):
        pumpwatch.config.from_dict({"venues": {"okx-spot": {"redundancy": 5}}})
    cfg = pumpwatch.config.from_dict({"connection": {"redundancy": 2}, "venues": {"okx-spot": {"redundancy": 1}}})
    assert cfg.connection.redundancy == 2 and cfg.venues["okx-spot"].redundancy == 1


# ---------------------------------------------------------------------------------------------
# Silent symbols


@pytest.mark.parametrize("engine", ["rust", "purepy"])  # `[log] engine`: the watch reads either store's ring
def test_silent_symbol_alarm_is_raised_resubscribed_and_cleared(tmp_path, engine):
    venue = "binance-spot"
    symbol = "ETHUSDT"

    async def go():
        async with SimVenue(venue, seed=4, trades_per_s=60.0) as sim:
            conn = {"silent_factor": 10.0, "silent_min_s": 1.0}
            async with Run(tmp_path / "d", {venue: sim}, connection=conn, engine=engine) as run:
                rec = run.recorder(venue)
                assert await wait_until(lambda: rec.activity.get(symbol) and rec.activity[symbol].intervals >= 15, 15)
                # 1) The venue stops sending the symbol whatever we do: the alarm stays up and
                #    the status names the symbol, until it trades again.
                sim.silence(symbol, seconds=4.0)
                assert await wait_until(lambda: run.status(venue)["silent_symbols"] == [symbol], 6), run.status(venue)
                state = run.status(venue)["state"]
                assert "silent" in state and symbol in state, state
                assert await wait_until(lambda: run.status(venue)["silent_symbols"] == [], 8), (
                    "the alarm was not cleared"
                )
                assert run.status(venue)["state"].startswith("recording")
                # 2) The venue drops the subscription: our resubscribe brings the symbol back.
                alarms = run.status(venue)["silent_alarms"]
                sim.silence(symbol)
                assert sim.subscribers(symbol) == 0
                assert await wait_until(lambda: run.status(venue)["silent_alarms"] > alarms, 6)
                assert await wait_until(
                    lambda: sim.subscribers(symbol) == 1 and not run.status(venue)["silent_symbols"], 6
                )
                resumed = time.time_ns()
                assert await wait_until(
                    lambda: sum(r["symbol"] == symbol and r["recv_ns"] > resumed for r in run.stored(venue)) >= 5, 6
                )
                await wait_until(lambda: run.status(venue)["pending_backfills"] == 0, 5)
            rows = run.stored(venue)
            markers = run.markers(venue, "subscription_set")
            status = run.status(venue)
        print(assert_every_trade_once(sim, rows))  # what the silences took was backfilled by id
        assert status["silent_alarms"] == 2 and status["gaps_unfillable"] == 0
        raised = [m for m in markers if m["symbol"] == symbol and "resubscribed" in m["detail"]]
        cleared = [m for m in markers if m["symbol"] == symbol and "trades again" in m["detail"]]
        assert len(raised) == 2 and len(cleared) == 2, markers
        assert all(m["from_ts_ns"] < m["to_ts_ns"] for m in raised + cleared)
        # No other symbol was called silent: the alarm is per symbol.
        assert {m["symbol"] for m in markers} == {symbol}
        run.store.close()

    asyncio.run(go())


def test_silence_of_a_whole_connection_is_not_a_silent_symbol(tmp_path):
    """A stall silences every symbol: the idle watchdog's case, not the symbol alarm's."""
    venue = "bybit-spot"

    async def go():
        async with SimVenue(venue, seed=4, trades_per_s=60.0) as sim:
            # Thresholds a Poisson stream does not cross by chance (a gap of 20 mean intervals has
            # odds e^-20), below the stall: only the stall could raise the alarm.
            conn = {"silent_factor": 20.0, "silent_min_s": 1.0, "idle_timeout_s": 5.0}
            async with Run(tmp_path / "d", {venue: sim}, connection=conn) as run:
                rec = run.recorder(venue)
                assert await wait_until(
                    lambda: len(rec.activity) == 4 and all(a.intervals >= 10 for a in rec.activity.values()), 15
                )
                sim.stall(2.0)
                await asyncio.sleep(3.0)
            assert run.status(venue)["silent_alarms"] == 0
        run.store.close()

    asyncio.run(go())


class _MarkerSink:
    """The store as far as the silent-symbol watch writes to it: markers."""

    def __init__(self) -> None:
        self.markers: list[dict] = []

    def append_marker(self, kind: str, **kw) -> None:
        self.markers.append({"kind": kind, **kw})


def test_backlog_after_a_connection_stall_arriving_symbol_by_symbol_raises_no_alarm():
    """The silent-symbol rule on a fake clock, fed as the socket path and the ring feed it: four
    symbols trade every 50 ms on one connection (a socket read every 20 ms), which then delivers
    nothing for 2 s; after it the ring shows two symbols trading at one look and the other two only
    at the next (a busy machine). Those two were silent exactly as long as their connection: no
    alarm. A symbol that stops while the others flow still raises it."""
    venue = "bybit-spot"
    cfg = Config(connection=ConnectionSettings(silent_factor=20.0, silent_min_s=1.0))
    store = _MarkerSink()
    rec = VenueRecorder(get(venue), VenueSettings(), store, cfg, http=None)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    rec.shards = [Shard(symbols=list(symbols))]
    ms = 1_000_000
    look_ns = int(SILENT_CHECK_S * 1000) * ms
    t = 1_700_000_000_000 * ms

    def socket_reads(after: int, until: int) -> None:
        for r in range(after + 20 * ms, until + 1, 20 * ms):
            rec._note_delivery(rec.shards[0], r)  # as _ingested does for every read with trades

    for _ in range(20):  # 10 s of trading: every symbol's usual interval is 50 ms
        socket_reads(t, t + look_ns)
        t += look_ns
        for s in symbols:
            rec.note_trades(s, 10, t - 5 * ms)
        rec.check_silent(t)
    stall_from = t
    for _ in range(4):  # 2 s: nothing at all from the connection
        t += look_ns
        rec.check_silent(t)
    assert rec.counters.silent_alarms == 0
    socket_reads(stall_from + 2000 * ms - 20 * ms, t + look_ns)  # the socket delivers again
    t += look_ns  # the ring: BTC and ETH first ...
    for s in symbols[:2]:
        rec.note_trades(s, 50, stall_from + 2000 * ms)
    rec.check_silent(t)
    assert rec.counters.silent_alarms == 0, store.markers  # the old rule called SOL and XRP silent here
    socket_reads(t, t + look_ns)
    t += look_ns  # ... SOL and XRP at the next look (their 2 s of backlog, and what followed)
    for s in symbols:
        rec.note_trades(s, 10 if s in symbols[:2] else 60, t - 5 * ms)
    rec.check_silent(t)
    assert rec.counters.silent_alarms == 0 and store.markers == []
    # XRP stops while the others flow: raised after its threshold (1 s) and at most one look more.
    xrp_last = t - 5 * ms
    while rec.counters.silent_alarms == 0 and t < xrp_last + 3000 * ms:
        socket_reads(t, t + look_ns)
        t += look_ns
        for s in symbols[:3]:
            rec.note_trades(s, 10, t - 5 * ms)
        rec.check_silent(t)
    assert rec.silent_symbols == ["XRPUSDT"]
    assert 1000 * ms < t - xrp_last <= 1000 * ms + 2 * look_ns


def test_a_symbol_whose_last_trade_came_just_before_a_stall_is_not_silent_during_it():
    """The same rule, looked at during the stall (a clean-clone CI run caught it): SOL's last trade came
    one interval before the others' last ones, so a second into the stall SOL is past its threshold
    while the others are not yet, and the socket has not delivered since. The stall still going on
    counts as the connection's quiet time: no alarm."""
    venue = "bybit-spot"
    cfg = Config(connection=ConnectionSettings(silent_factor=20.0, silent_min_s=1.0))
    store = _MarkerSink()
    rec = VenueRecorder(get(venue), VenueSettings(), store, cfg, http=None)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    rec.shards = [Shard(symbols=list(symbols))]
    ms = 1_000_000
    look_ns = int(SILENT_CHECK_S * 1000) * ms
    t = 1_700_000_000_000 * ms
    for _ in range(20):  # 10 s of trading: every symbol's usual interval is 50 ms
        for r in range(t + 20 * ms, t + look_ns + 1, 20 * ms):
            rec._note_delivery(rec.shards[0], r)
        t += look_ns
        for s in symbols:
            rec.note_trades(s, 10, t - (55 * ms if s == "SOLUSDT" else 5 * ms))
        rec.check_silent(t)
    assert rec.counters.silent_alarms == 0
    stall_from = t  # the connection's last read; nothing more arrives
    for into_stall_ms in (500, 960, 990, 1500, 1990):
        rec.check_silent(stall_from + into_stall_ms * ms)
        assert rec.counters.silent_alarms == 0, (into_stall_ms, store.markers)  # the old rule: SOL at 960


# ---------------------------------------------------------------------------------------------
# Instrument refresh


def test_an_instrument_list_that_drops_most_symbols_or_comes_back_empty_unsubscribes_nothing(tmp_path):
    """An OKX answer with an error code and an empty `data` (HTTP 200) once read as an empty list,
    and the refresh unsubscribed every symbol. Now an empty or error answer changes nothing, and a
    list dropping most symbols at once is applied only when the next fetch drops them too."""
    venue = "okx-spot"
    listed = [f"C{i}-USDT" for i in range(10)]
    answers: list[str] = []

    def body(symbols):
        rows = [{"instId": s, "baseCcy": s.split("-")[0], "quoteCcy": "USDT", "state": "live"} for s in symbols]
        return json.dumps({"code": "0", "msg": "", "data": rows})

    async def fetch(base_url, request):
        return answers.pop(0)

    class Store(_MarkerSink):
        path = str(tmp_path)

    rec = VenueRecorder(get(venue), VenueSettings(), Store(), Config(discovery_refresh_s=0), http=fetch)
    rec.shards = [Shard(symbols=list(listed))]
    unsubscribed: list[list[str]] = []

    async def unsubscribe(gone):
        unsubscribed.append(gone)

    rec._unsubscribe = unsubscribe  # type: ignore[method-assign]  # the socket side is not this test's
    few = listed[:3]

    async def refresh(answer):
        answers.append(answer)
        await rec.relist("test")

    async def go():
        await refresh(body(listed))
        assert unsubscribed == []
        await refresh(body(few))  # 7 of 10 gone at once: held
        assert unsubscribed == []
        await refresh(body(listed))  # it was a glitch
        await refresh(body(few))  # held again: the drop must be seen twice in a row
        assert unsubscribed == []
        await refresh(body(few))
        assert unsubscribed == [listed[3:]]
        rec.shards = [Shard(symbols=list(few))]
        for answer in (
            json.dumps({"code": "51001", "msg": "Instrument ID doesn't exist.", "data": []}),
            json.dumps({"code": "0", "msg": "", "data": []}),
        ):
            with pytest.raises(VenueAnswerError):
                await refresh(answer)
        assert unsubscribed == [listed[3:]] and sorted(rec.instruments) == few  # nothing more, nothing forgotten
        await refresh(body(few[:2]))  # one of three: an ordinary delisting
        assert unsubscribed[-1] == [few[2]]

    asyncio.run(go())


def test_a_contract_in_its_delisting_period_is_recorded_from_the_start(tmp_path):
    """A Gate futures contract `in_delisting` with positions left still trades (Gate's Contract
    schema): a recorder started in that period once left it out, and its trades were never recorded."""
    rows = [
        {"name": "BTC_USDT", "quanto_multiplier": "0.0001", "status": "trading"},
        {"name": "OLD_USDT", "quanto_multiplier": "1", "status": "delisting"},
        {"name": "LEAVING_USDT", "quanto_multiplier": "1", "in_delisting": True, "position_size": 12},
        {"name": "GONE_USDT", "quanto_multiplier": "1", "in_delisting": True, "position_size": 0},
    ]

    async def fetch(base_url, request):
        return json.dumps(rows)

    class Store(_MarkerSink):
        path = str(tmp_path)

    rec = VenueRecorder(get("gate-futures"), VenueSettings(), Store(), Config(), http=fetch)
    assert asyncio.run(rec.discover()) == ["BTC_USDT", "LEAVING_USDT", "OLD_USDT"]


def test_delisted_instrument_is_unsubscribed_and_new_ones_subscribed_within_message_limits(tmp_path):
    """Bybit spot takes at most 10 args per subscribe message and refuses more: twelve new
    listings at once must go out in two messages, on the connection that has room."""
    venue = "bybit-spot"
    new_bases = [f"NEW{c}" for c in "ABCDEFGHIJKL"]

    async def go():
        async with SimVenue(venue, seed=2, trades_per_s=30.0) as sim:
            async with Run(tmp_path / "d", {venue: sim}, discovery_refresh_s=0.3) as run:
                assert await wait_until(lambda: sim.subscribers("DOGEUSDT") == 1, 10)
                sim.delist("DOGEUSDT")
                now = time.time_ns()
                for base in new_bases:
                    sim.schedule_listing(base, now)
                assert await wait_until(lambda: sim.subscribers("DOGEUSDT") == 0, 5), (
                    "the delisted symbol is still subscribed"
                )
                assert await wait_until(lambda: all(sim.subscribers(f"{b}USDT") == 1 for b in new_bases), 5)
                assert await wait_until(
                    lambda: {f"{b}USDT" for b in new_bases} <= {r["symbol"] for r in run.stored(venue)}, 10
                )
                status = run.status(venue)
            markers = run.markers(venue, "subscription_set")
        assert status["venue_errors"] == 0, status["last_error"]  # no message over the limit
        assert status["connections"] == 1  # the new symbols went on the connection with room
        assert status["subscribed"] == 3 + len(new_bases) and status["unsubscribed"] == 1
        details = [m["detail"] for m in markers]
        assert any(d.startswith("unsubscribed 1 delisted: DOGEUSDT") for d in details), details
        assert any(d.startswith(f"subscribed {len(new_bases)} new") for d in details), details
        assert run.recorder(venue).connections[0].symbols.count("DOGEUSDT") == 0
        run.store.close()

    asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# Isolation: a failing venue says what is wrong and harms no other


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refusing_erroring_and_unreachable_venues_are_isolated(tmp_path):
    healthy = "binance-spot"
    port = _closed_port()
    dead = f"http://127.0.0.1:{port}"

    async def go():
        async with (
            SimVenue(healthy, seed=8, trades_per_s=40.0) as good,
            SimVenue("okx-spot", seed=8, trades_per_s=40.0) as refusing,
            SimVenue("gate-spot", seed=8, trades_per_s=40.0) as erroring,
        ):
            erroring.fail_rest(60.0, 503)
            sims = {healthy: good, "okx-spot": refusing, "gate-spot": erroring}
            venues = {
                "okx-spot": {"symbols": ("NOPE-USDT",)},  # the venue refuses the subscription
                "bybit-spot": {"rest_url": dead, "ws_url": f"ws://127.0.0.1:{port}"},  # nothing listens
                "bybit-linear": {"rest_url": dead, "ws_url": f"ws://127.0.0.1:{port}", "symbols": ("BTCUSDT",)},
            }
            async with Run(tmp_path / "d", sims, venues=venues) as run:

                def named() -> bool:
                    st = run.collector.status()["venues"]
                    return (
                        st["okx-spot"]["state"].startswith("error")
                        and st["gate-spot"]["state"].startswith("down: instrument list failed")
                        and st["bybit-spot"]["state"].startswith("down: instrument list failed")
                        and st["bybit-linear"]["state"].startswith("down: connecting failed")
                    )

                assert await wait_until(named, 15), run.collector.status()["venues"]
                await asyncio.sleep(3.0)
                status = run.collector.status()["venues"]
            rows = run.stored(healthy)
        print(assert_every_trade_once(good, rows, min_per_symbol=5))
        assert status[healthy]["state"].startswith("recording") and status[healthy]["last_error"] == ""
        assert "60018" in status["okx-spot"]["state"] or "exist" in status["okx-spot"]["state"], status["okx-spot"]
        assert "503" in status["gate-spot"]["last_error"], status["gate-spot"]
        assert "refused" in status["bybit-spot"]["last_error"].lower(), status["bybit-spot"]
        assert "refused" in status["bybit-linear"]["state"].lower(), status["bybit-linear"]
        for venue in ("okx-spot", "gate-spot", "bybit-spot", "bybit-linear"):
            assert status[venue]["trades"] == 0
        run.store.close()

    asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# Delisted and halted instruments, in each venue's own form

#: Venues whose instrument list keeps a delisted instrument, in their closed state (the simulator's
#: `delisted_states`, each sourced in sim/venues.py); the others drop it from the list.
KEEPS_DELISTED = {
    "binance-spot": "BREAK",
    "binance-usdm": "SETTLING",
    "gate-spot": "untradable",
    "gate-futures": "delisted",
    "phemex-spot": "Delisted",
    "phemex-perp": "Delisted",
}
#: Venues whose list shows a halted instrument in a state of its own (the others document none).
HALT_STATE = {
    "binance-spot": "HALT",
    "okx-spot": "suspend",
    "okx-swap": "suspend",
    "gate-spot": "untradable",
    "gate-futures": "circuit_breaker",
    "kucoin-spot": "false",
    "kucoin-futures": "Paused",
}


async def _list_bodies(sim: SimVenue, venue: str) -> list[str]:
    """The venue's instrument-list answers as the recorder asks for them."""
    from pumpwatch.net.http import http_fetch

    spec, bodies = get(venue), []
    for request in spec.instruments_request():
        page = request
        while page is not None:
            body = await http_fetch(sim.rest_url, page)
            bodies.append(body)
            page = spec.next_instruments_request(page, body)
    return bodies


def _state_values(venue: str, bodies: list[str], symbol: str) -> list:
    """The raw state fields of `symbol`'s rows in the venue's list answers."""
    out = []
    for body in bodies:
        doc = json.loads(body)
        rows = doc if isinstance(doc, list) else doc.get("data", doc.get("result", doc))
        if isinstance(rows, dict):
            rows = rows.get("symbols") or rows.get("list") or rows.get("products", []) + rows.get("perpProductsV2", [])
        for r in rows:
            if symbol in (r.get("symbol"), r.get("instId"), r.get("id"), r.get("name")):
                out.append(
                    next(r[k] for k in ("status", "state", "trade_status", "enableTrading") if k in r)
                    if venue != "kucoin-spot"
                    else str(r["enableTrading"]).lower()
                )
    return out


@pytest.mark.parametrize("venue", pumpwatch.VENUES)
def test_the_recorder_reads_each_venues_delisted_and_halted_forms(venue):
    """The simulator's instrument list shows a delisted instrument as the venue does (kept in its
    closed state, or dropped) and a halted one in the venue's halt state; the recorder reads the
    delisted one as closed or gone and the halted one as listed (kept when subscribed). Binance
    spot's `BREAK`, Binance USDⓈ-M's `SETTLING` and Gate spot's untradable pair past its
    `delisting_time` were read as halted, so a delisted instrument stayed subscribed for good."""
    from pumpwatch.venues import CLOSED, HALTED, TRADING

    async def go():
        async with SimVenue(venue, seed=3, trades_per_s=5.0) as sim:
            kept, gone, halted = (list(sim.instruments)[i] for i in (0, 3, 2))
            sim.delist(gone)
            sim.halt(halted, 60.0)
            bodies = await _list_bodies(sim, venue)
        parsed = {i.symbol: i for i in get(venue).parse_instruments(bodies)}
        assert _state_values(venue, bodies, gone) == ([KEEPS_DELISTED[venue]] if venue in KEEPS_DELISTED else [])
        assert gone not in parsed or parsed[gone].status == CLOSED, parsed.get(gone)
        assert _state_values(venue, bodies, halted) == [HALT_STATE.get(venue, _state_values(venue, bodies, kept)[0])]
        assert parsed[halted].status == (HALTED if venue in HALT_STATE else TRADING), parsed[halted]
        assert parsed[kept].status == TRADING

    asyncio.run(go())


@pytest.mark.parametrize("venue", pumpwatch.VENUES)
def test_delisted_instruments_are_dropped_and_a_halted_one_kept_in_each_venues_form(venue, tmp_path):
    """Against each venue's own form of its instrument list: an instrument delisted before the
    start is never subscribed; one delisted while recorded is unsubscribed at the next fetch; one
    halted stays subscribed through fetches during the halt and its trades, once resumed, are
    recorded; and every trade of every symbol is stored once from its first to its last."""

    async def go():
        async with SimVenue(venue, seed=4, trades_per_s=60.0) as sim:
            btc, eth, sol, doge = list(sim.instruments)
            sim.delist(doge)  # before the start
            async with Run(tmp_path / "d", {venue: sim}, discovery_refresh_s=0.2) as run:
                rec = run.recorder(venue)
                assert await wait_until(lambda: all(sim.subscribers(s) >= 1 for s in (btc, eth, sol)), 15)
                assert await wait_until(lambda: {btc, eth, sol} <= {r["symbol"] for r in run.stored(venue)}, 10)
                sim.delist(sol)
                sim.halt(eth, 1.5)
                # Unsubscribed (OKX's and Gate's stand-ins refuse the unsubscribe of an instrument
                # they no longer know; nothing trades on it either way).
                assert await wait_until(lambda: sol not in {s for sh in rec.shards for s in sh.symbols}, 5), (
                    "the delisted symbol is still subscribed"
                )
                await asyncio.sleep(1.0)  # five fetches of the list during the halt
                assert sim.subscribers(eth) >= 1, "the halted symbol was unsubscribed"
                assert eth in {s for sh in rec.shards for s in sh.symbols}
                resumed = sim.instruments[eth].resumes_at_ns or 0
                assert await wait_until(
                    lambda: any(r["symbol"] == eth and r["ts_ns"] > resumed for r in run.stored(venue)), 10
                ), "no trade of the halted symbol recorded after it resumed"
                status = run.status(venue)
                shards = {s for sh in rec.shards for s in sh.symbols}
                ever = set(rec.subscribed_ns)
            rows = run.stored(venue)
            assert doge not in ever and doge not in shards and sim.subscribers(doge) == 0
            assert sol not in shards
            assert not [r for r in rows if r["symbol"] == doge]
            assert status["unsubscribed"] == 1, status
            print(assert_every_trade_once(sim, rows, min_per_symbol=1))
            run.store.close()

    asyncio.run(go())


def test_a_binance_spot_pair_back_from_a_break_is_subscribed_again_and_loses_nothing(tmp_path):
    """`BREAK` also marks expected downtime ("market data is not generated", Binance's spot
    glossary). Read as closed, the pair is unsubscribed for it; once it trades again the next list
    fetch subscribes it anew, and the trades between its reopening and that fetch are fetched by
    id: from its first trade stored to its last, every trade once."""
    venue = "binance-spot"

    async def go():
        async with SimVenue(venue, seed=5, trades_per_s=80.0) as sim:
            sim.protocol.halted_states = {venue: "BREAK"}  # downtime shows BREAK, not HALT
            eth = list(sim.instruments)[1]
            async with Run(tmp_path / "d", {venue: sim}, discovery_refresh_s=0.5) as run:
                rec = run.recorder(venue)
                assert await wait_until(lambda: eth in {r["symbol"] for r in run.stored(venue)}, 15)
                sim.halt(eth, 1.0)
                assert await wait_until(lambda: eth not in {s for sh in rec.shards for s in sh.symbols}, 5)
                assert await wait_until(lambda: eth in {s for sh in rec.shards for s in sh.symbols}, 5)
                resumed = sim.instruments[eth].resumes_at_ns or 0
                # the pair's trades from before it was subscribed again, and after
                back = [t for t in sim.sent_trades(eth) if t["ts_ns"] > resumed]
                assert back, "no trade since the pair reopened"
                assert await wait_until(lambda: sim.subscribers(eth) >= 1, 5)
                await asyncio.sleep(1.0)
                got = {r["trade_id"] for r in run.stored(venue) if r["symbol"] == eth}
                assert await wait_until(
                    lambda: {t["trade_id"] for t in back} <= {r["trade_id"] for r in run.stored(venue)}, 10
                ), f"{len({t['trade_id'] for t in back} - got)} trades after the reopening missing"
                markers = [m["detail"] for m in run.markers(venue, "subscription_set")]
                backfilled = rec.counters.backfilled
            rows = run.stored(venue)
            assert any(d.startswith(f"unsubscribed 1 delisted: {eth}") for d in markers), markers
            assert backfilled > 0, "nothing traded between the reopening and the new subscription"
            print(assert_every_trade_once(sim, rows, min_per_symbol=1))
            run.store.close()

    asyncio.run(go())


def test_gate_delisted_rows_read_as_closed_and_rows_leaving_soon_as_they_trade():
    """Gate keeps a delisted spot pair `untradable` with its past `delisting_time`, and a contract
    without `status` but `in_delisting` and no positions left is delisted (Gate's Contract schema):
    both closed. A pair still tradable with a delisting time ahead trades on; an untradable one
    with none is halted; a contract in delisting with positions open is delisting."""
    from pumpwatch.venues import CLOSED, DELISTING, HALTED, TRADING

    now = int(time.time())
    pairs = [
        {"id": "OLD_USDT", "base": "OLD", "quote": "USDT", "trade_status": "untradable", "delisting_time": now - 60},
        {"id": "SOON_USDT", "base": "SOON", "quote": "USDT", "trade_status": "tradable", "delisting_time": now + 600},
        {"id": "HALT_USDT", "base": "HALT", "quote": "USDT", "trade_status": "untradable", "delisting_time": 0},
    ]
    got = {i.symbol: i.status for i in get("gate-spot").parse_instruments([json.dumps(pairs)])}
    assert got == {"OLD_USDT": CLOSED, "SOON_USDT": TRADING, "HALT_USDT": HALTED}
    contract = {"type": "direct", "quanto_multiplier": "1", "in_delisting": True}
    contracts = [
        {**contract, "name": "GONE_USDT", "position_size": 0},
        {**contract, "name": "LEAVING_USDT", "position_size": 12},
        {**contract, "name": "LISTED_USDT", "status": "delisted", "position_size": 0},
    ]
    got = {i.symbol: i.status for i in get("gate-futures").parse_instruments([json.dumps(contracts)])}
    assert got == {"GONE_USDT": CLOSED, "LEAVING_USDT": DELISTING, "LISTED_USDT": CLOSED}
