"""Pacing the venues ask for (issue 11 item 5, VENUES §12): connection requests per IP, REST
back-off after a refusal, and budgets shared by an exchange's markets.

The simulator refuses handshakes beyond each exchange's documented rate (HTTP 429), counted over
both markets as the venue counts per IP; so a recorder that opens its shards all at once fails here.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from pumpwatch.collector import VenueRecorder
from pumpwatch.config import Config, VenueSettings
from pumpwatch.connection import ReconnectPolicy, VenueConnection
from pumpwatch.net import Budgets, HttpError, RateBudget
from pumpwatch.sim import Simulator
from pumpwatch.sim.server import CONNECT_RATES, ConnectionRate, exchange_of
from pumpwatch.venues import SPECS, HttpRequest, get

POLICY = ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.5, open_timeout_s=5.0, close_timeout_s=0.5)


def run(coro, deadline: float):
    return asyncio.run(asyncio.wait_for(coro, deadline))


class FakeClock:
    """Discrete-event time: `sleep` parks its caller, and `drive` lets every task run until all
    are parked, then moves time to the earliest wake-up. Minutes of pacing take no time, and
    concurrent waiters see the same clock (a request that should not wait goes at once)."""

    def __init__(self) -> None:
        self.now = 5000.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._seq, fut))
        await fut

    async def drive(self, coro):
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(20):  # every task runs until it parks (the fake venues never block)
                await asyncio.sleep(0)
            if task.done():
                break
            while self._sleepers:
                wake, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    self.now = max(self.now, wake)
                    fut.set_result(None)
                    break
        return task.result()


def test_every_venue_paces_connections_at_least_as_strictly_as_the_venue_counts():
    """Each spec's connection budget is its exchange's documented rate, shared by the exchange's
    markets, and the simulator enforces the same number; Gate documents a concurrent cap only."""
    by_exchange: dict[str, set[str]] = {}
    for vid, spec in SPECS.items():
        exchange = exchange_of(vid)
        budget = spec.connect_budget
        if exchange not in CONNECT_RATES:
            assert budget is None, vid
            continue
        assert budget is not None, f"{vid} has no connection budget"
        assert (budget.count, budget.period_s) == CONNECT_RATES[exchange], vid
        assert budget.slack_s > 0, "our window must be wider than the venue's"
        by_exchange.setdefault(exchange, set()).add(budget.name)
    assert all(len(names) == 1 for names in by_exchange.values()), by_exchange  # one budget per IP
    assert set(by_exchange) == {"binance", "bybit", "okx", "kucoin", "phemex"}
    assert CONNECT_RATES["okx"] == (3, 1.0) and CONNECT_RATES["kucoin"] == (30, 60.0)
    assert CONNECT_RATES["bybit"] == (500, 300.0) and CONNECT_RATES["binance"] == (300, 300.0)
    assert CONNECT_RATES["phemex"] == (200, 300.0)


@pytest.mark.parametrize("venue", ["okx-spot", "kucoin-spot", "bybit-spot", "binance-spot", "phemex-spot"])
def test_connection_budget_spaces_connections_over_the_window(venue):
    """On a fake clock: count+1 connection requests of one exchange take at least its window."""
    clock = FakeClock()
    budgets = Budgets(clock=clock, sleep=clock.sleep)
    spec = get(venue)
    other = next(s for s in SPECS.values() if s.exchange == spec.exchange and s.id != venue)
    budget = spec.connect_budget

    async def main():
        times = []
        for i in range(budget.count + 1):  # alternating markets: they share the allowance
            await budgets.limiter((spec if i % 2 else other).connect_budget).acquire()
            times.append(clock.now)
        return times

    times = run(clock.drive(main()), 30)
    assert times[-1] - times[0] >= budget.period_s


def test_okx_shards_connect_within_three_per_second_across_both_markets():
    """15 OKX connections (spot and swap) at once: the simulator sees at most 3 handshakes in any
    second, refuses none, and every connection comes up. (Opened all at once, 12 were refused.)"""

    async def main():
        async with Simulator(["okx-spot", "okx-swap"], seed=3, trades_per_s=5) as sim:
            budgets = Budgets()
            conns = []
            for vid, n in (("okx-spot", 8), ("okx-swap", 7)):
                v = sim.venues[vid]
                spec = get(vid).with_urls(ws_url=v.ws_origin, rest_url=v.rest_url)
                symbols = sorted(v.instruments)
                for i in range(n):
                    conns.append(
                        VenueConnection(
                            spec,
                            [symbols[i % len(symbols)]],
                            on_frame=lambda f, t: None,
                            policy=POLICY,
                            budgets=budgets,
                            name=f"{vid}#{i}",
                        )
                    )
            tasks = [asyncio.create_task(c.run()) for c in conns]
            while not all(c.up for c in conns):
                await asyncio.sleep(0.05)
            rate = sim.connection_rates["okx"]
            await asyncio.gather(*(c.close() for c in conns))
            await asyncio.gather(*tasks)
            return rate, sum(c.reconnects for c in conns), sim

    rate, reconnects, sim = run(main(), 30)
    assert rate.refused == 0 and reconnects == 0
    assert len(rate.accepted) == 15 == sum(v.handshakes for v in sim.venues.values())
    assert rate.max_in_window() <= 3
    assert rate.accepted[-1] - rate.accepted[0] >= 4.0  # 15 at 3 per second


def test_a_refused_handshake_is_retried_no_sooner_than_its_retry_after():
    """The venue counted more than we did (another process on the IP): its 429's Retry-After
    holds the exchange's connection budget, and the retry waits for it."""

    async def main():
        rates = {"kucoin": ConnectionRate(1, 1.5)}
        async with Simulator(["kucoin-spot"], seed=4, trades_per_s=5, connection_rates=rates) as sim:
            v = sim.venues["kucoin-spot"]
            rates["kucoin"].admit()  # someone else on this IP just connected
            spec = get("kucoin-spot").with_urls(ws_url=v.ws_origin, rest_url=v.rest_url)
            budgets = Budgets()
            conn = VenueConnection(
                spec, [min(v.instruments)], on_frame=lambda f, t: None, policy=POLICY, budgets=budgets
            )
            task = asyncio.create_task(conn.run())
            while not conn.up:
                await asyncio.sleep(0.02)
            await conn.close()
            await task
            return rates["kucoin"]

    rate = run(main(), 20)
    assert rate.refused == 1  # the first attempt; the retry waited for Retry-After (2 s), not 0.05 s
    assert rate.accepted[1] - rate.accepted[0] >= 1.5


def _recorder(venue: str, budgets: Budgets, http) -> VenueRecorder:
    cfg = Config(venues={venue: VenueSettings(enabled=True)})
    return VenueRecorder(get(venue), cfg.venues[venue], None, cfg, http, budgets)


def test_bybit_403_silences_the_host_for_ten_minutes_for_both_markets():
    """Bybit answers "access too frequent" with 403 and asks for at least 10 minutes of silence
    (VENUES §3.1, §12): no request of spot or linear reaches the host before they passed."""
    clock = FakeClock()
    budgets = Budgets(clock=clock, sleep=clock.sleep)
    calls: list[tuple[float, str]] = []

    async def http(base_url, request):
        calls.append((clock.now, request.path))
        if len(calls) == 1:
            raise HttpError.refused("GET", base_url + request.path, 403, "Forbidden", b"access too frequent")
        return b"{}"

    spot, linear = _recorder("bybit-spot", budgets, http), _recorder("bybit-linear", budgets, http)

    async def main():
        first = asyncio.create_task(spot._rest(HttpRequest("GET", "/v5/market/recent-trade")))
        await asyncio.sleep(0)  # spot's request goes first and is refused
        other = asyncio.create_task(linear._rest(HttpRequest("GET", "/v5/market/instruments-info")))
        await asyncio.gather(first, other)

    run(clock.drive(main()), 10)
    assert len(calls) == 3
    t403 = calls[0][0]
    assert all(t - t403 >= 600 for t, _ in calls[1:]), calls
    assert spot.counters.rest_errors == 1


def test_a_429_retry_after_is_honoured_never_shortened():
    clock = FakeClock()
    budgets = Budgets(clock=clock, sleep=clock.sleep)
    calls: list[float] = []

    async def http(base_url, request):
        calls.append(clock.now)
        if len(calls) == 1:
            raise HttpError.refused("GET", base_url, 418, "I'm a teapot", b"banned", retry_after_s=120.0)
        return b"[]"

    rec = _recorder("binance-spot", budgets, http)
    run(clock.drive(rec._rest(HttpRequest("GET", "/api/v3/historicalTrades"))), 10)
    assert calls[1] - calls[0] >= 120.0


def test_kucoin_spot_and_futures_rest_draw_on_one_budget():
    """The two markets' REST together stay within the one pool's pace (VENUES §12)."""
    clock = FakeClock()
    budgets = Budgets(clock=clock, sleep=clock.sleep)
    calls: list[float] = []

    async def http(base_url, request):
        calls.append(clock.now)
        return b"{}"

    spot, fut = _recorder("kucoin-spot", budgets, http), _recorder("kucoin-futures", budgets, http)
    assert spot.rest_limiter is fut.rest_limiter

    async def main():
        await asyncio.gather(*(r._rest(HttpRequest("GET", "/x")) for r in (spot, fut) for _ in range(20)))

    run(clock.drive(main()), 10)
    budget: RateBudget = get("kucoin-spot").rest_pacing()
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) == 40 and min(gaps) >= budget.period_s - 1e-9


def test_the_recorder_opens_many_shards_of_both_markets_within_the_rate(tmp_path):
    """The Collector with one symbol per connection on OKX spot and swap (8 shards): every shard
    comes up, the simulator refuses none and sees at most 3 handshakes in any second, and every
    symbol records. Opened as fast as they are planned, the simulator refused 7 of them."""
    import dataclasses

    import pumpwatch
    from pumpwatch.collector import Collector
    from pumpwatch.config import ConnectionSettings

    async def main():
        async with Simulator(["okx-spot", "okx-swap"], seed=6, trades_per_s=40) as sim:
            settings = {v: VenueSettings(enabled=False) for v in pumpwatch.VENUES}
            for vid, v in sim.venues.items():
                settings[vid] = VenueSettings(ws_url=v.ws_origin, rest_url=v.rest_url)
            specs = {vid: dataclasses.replace(get(vid), max_streams_per_connection=1) for vid in sim.venues}
            cfg = Config(
                data_dir=str(tmp_path),
                metrics_address="127.0.0.1:0",
                venues=settings,
                connection=ConnectionSettings(initial_delay_s=0.05, max_delay_s=0.5),
            )
            store = pumpwatch.Store(tmp_path)
            collector = Collector(cfg, store, specs=specs)
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))

            def all_up() -> bool:
                st = collector.status()["venues"]
                return all(st[v]["connections"] == 4 and st[v]["connections_up"] == 4 for v in sim.venues)

            while not all_up():
                await asyncio.sleep(0.05)
            symbols = {(v, s) for v in sim.venues for s in sim.venues[v].instruments}
            while {(r["venue"], r["symbol"]) for r in store.query().to_pylist()} != symbols:
                await asyncio.sleep(0.1)
            stop.set()
            await task
            store.close()
            return sim.connection_rates["okx"], collector.status()

    rate, status = run(main(), 40)
    assert rate.refused == 0 and len(rate.accepted) == 8 and rate.max_in_window() <= 3
    assert all(v["reconnects"] == 0 for v in status["venues"].values() if v["connections"])
    assert status["budgets"]["okx:ws-connect"]["granted"] == 8


def test_a_server_error_delays_only_its_own_request_not_the_shared_budget():
    """A 503 from Bybit spot is that request's trouble: linear's requests are not held by it,
    while spot's retry waits its back-off."""
    clock = FakeClock()
    budgets = Budgets(clock=clock, sleep=clock.sleep)
    calls: list[tuple[float, str]] = []

    async def http(base_url, request):
        calls.append((clock.now, request.path))
        if request.path == "/spot" and sum(p == "/spot" for _, p in calls) == 1:
            raise HttpError.refused("GET", base_url + request.path, 503, "Service Unavailable", b"")
        return b"{}"

    spot, linear = _recorder("bybit-spot", budgets, http), _recorder("bybit-linear", budgets, http)

    async def main():
        await asyncio.gather(spot._rest(HttpRequest("GET", "/spot")), linear._rest(HttpRequest("GET", "/linear")))

    run(clock.drive(main()), 10)
    start = calls[0][0]
    (t_linear,) = [t for t, p in calls if p == "/linear"]
    spot_times = [t for t, p in calls if p == "/spot"]
    assert t_linear - start < 0.1  # paced by the shared budget only
    assert spot_times[1] - spot_times[0] >= 0.5 * 0.8  # the back-off's first wait (jitter taken off)
    assert budgets.limiter(get("bybit-spot").rest_pacing()).hold_until <= start


def test_the_simulated_kucoin_counts_both_markets_rest_in_one_pool():
    """As the recorder assumes (VENUES §12): weight spent on spot is missing for futures."""
    sim = Simulator(["kucoin-spot", "kucoin-futures", "okx-spot", "okx-swap"])
    spot, fut = sim.venues["kucoin-spot"], sim.venues["kucoin-futures"]
    assert spot._buckets["public"] is fut._buckets["public"]
    assert spot._buckets["public"].take(2000) and not fut._buckets["public"].take(5)
    okx_spot, okx_swap = sim.venues["okx-spot"], sim.venues["okx-swap"]
    assert okx_spot._buckets["history"] is not okx_swap._buckets["history"]  # not claimed for others
