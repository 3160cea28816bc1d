"""`pumpwatch history` against the simulator (issue 17): a simulated year of Upbit notices is paged
back, every KRW listing is rebuilt as an event folder, the trades of the venues that keep history
equal id by id what the simulator holds for the window, the others say not available, a run
stopped halfway goes on where it stopped, a live event is never overwritten, and `load_events`
over the folders equals the analysis files."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pyarrow.parquet as pq
import pytest

import pumpwatch
from pumpwatch import history as hist
from pumpwatch.capture import EVENTS_DIR, event_name
from pumpwatch.net import HttpError, http_fetch
from pumpwatch.sim import Simulator
from pumpwatch.sim.history import seed_history
from pumpwatch.sim.upbit import SimUpbit
from pumpwatch.upbit import WatcherSettings
from pumpwatch.venues import HttpRequest

NS = 1_000_000_000
DAY_NS = 86_400 * NS
SEED = 17
LISTINGS = 4  # a year with four listings, plus the board's six of the last days: ten events
REACH_DAYS = {"okx-spot": 90, "okx-swap": 90, "gate-spot": 30, "binance-usdm": 365}
RECENT_ONLY = {"bybit-spot", "bybit-linear", "kucoin-spot", "kucoin-futures", "phemex-spot", "phemex-perp"}


class World:
    def __init__(self, sim: Simulator, upbit: SimUpbit, truth: dict):
        self.sim, self.upbit, self.truth = sim, upbit, truth
        self.since = time.time_ns() - 366 * DAY_NS

    def run(self, data_dir, **kw) -> hist.HistoryRun:
        w = WatcherSettings(base_url=self.upbit.base_url, interval_s=0.02, market_url="")
        return hist.HistoryRun(
            data_dir, watcher=w, venue_urls={v: s.rest_url for v, s in self.sim.venues.items()}, chart=False, **kw
        )


def in_world(test):
    """Runs `test(world)` against a simulator with a year of listings (one per test: seconds)."""

    async def main():
        async with Simulator(seed=SEED, trades_per_s=2) as sim, SimUpbit(seed=SEED, min_interval_s=0.01) as upbit:
            upbit.add_year(listings=LISTINGS)
            await test(World(sim, upbit, seed_history(sim, upbit)))

    asyncio.run(main())


def sim_window(sim: Simulator, venue: str, symbol: str, start_ns: int, end_ns: int) -> list[str]:
    """What the simulator holds for the window, as the venue's REST gives it: trade ids (Binance
    USDⓈ-M without a key: its aggTrades, `f-l`), both ends included."""
    v = sim.venues[venue]
    if venue == "binance-usdm":
        runs = v.protocol._aggregates(symbol)
        return [f"{r[0].num_id}-{r[-1].num_id}" for r in runs if start_ns <= r[0].ts_ns <= end_ns]
    return [f.trade_id for f in v.history(symbol) if start_ns <= f.ts_ns <= end_ns and not f.placeholder]


def test_history_rebuilds_every_listing_with_the_venues_own_trades(tmp_path):
    async def check(world: World):
        result = await world.run(tmp_path).run(world.since)
        announced = world.upbit.announced_listings(world.since)
        expected = {event_name(t, t0) for tickers, t0 in announced.values() for t in tickers}
        assert len(expected) == LISTINGS + 6
        assert set(result.built) == expected and not result.failed
        assert {(x.notice_id, x.tickers, x.t0_ns) for x in result.listings} == {
            (i, t, t0) for i, (t, t0) in announced.items()
        }
        now = time.time_ns()
        checked = {"rest-history": 0, "rest-history-aggregated": 0, "not available": 0, "older": 0}
        for tickers, t0 in announced.values():
            ticker = tickers[0]
            folder = tmp_path / EVENTS_DIR / event_name(ticker, t0)
            event = json.loads((folder / "event.json").read_text())
            trades = pq.read_table(folder / "trades.parquet").to_pylist()
            assert event["source"] == "rest-history"
            listed = world.truth.get((ticker, t0), [])
            for venue, entry in event["venues"].items():
                got = [r["trade_id"] for r in trades if r["venue"] == venue]
                if venue not in listed:
                    assert entry["coverage"] == "absent" and entry["source"] == "none" and not got
                    continue
                (symbol,) = entry["instruments"]
                if venue in RECENT_ONLY:
                    assert entry["coverage"] == hist.NOT_AVAILABLE and entry["source"] == "none" and not got
                    checked["not available"] += 1
                    continue
                reach = REACH_DAYS.get(venue)
                if reach is not None and now - (t0 - 20 * NS) > reach * DAY_NS:
                    assert entry["coverage"].startswith("not available: older than") and not got, (venue, entry)
                    checked["older"] += 1
                    continue
                want = sim_window(world.sim, venue, symbol, t0 - 20 * NS, t0 + 20 * NS)
                assert want, f"{venue} {symbol}: the simulator holds no trade in the window"
                assert got == want, f"{venue} {symbol}: ids differ"
                assert entry["coverage"] == "complete" and entry["trades"] == len(want)
                assert entry["source"] == ("rest-history-aggregated" if venue == "binance-usdm" else "rest-history")
                checked[entry["source"]] += 1
        assert all(checked.values()), checked  # every kind of venue was seen
        assert all(result.requests[n]["bybit-spot"] <= 1 + (n == result.built[0]) for n in result.built)

    in_world(check)


def test_history_stopped_halfway_goes_on_where_it_stopped(tmp_path):
    async def check(world: World):
        first = world.run(tmp_path)
        stop_after = 3

        def boom(name):
            if len(os.listdir(tmp_path / EVENTS_DIR)) > stop_after:  # the progress file + 3 events
                raise KeyboardInterrupt("stopped")

        first.after_event = boom
        with pytest.raises(KeyboardInterrupt):
            await first.run(world.since)
        done = sorted(n for n in os.listdir(tmp_path / EVENTS_DIR) if not n.startswith(".") and n != hist.PROGRESS_FILE)
        assert len(done) == stop_after
        # a folder half-written when the run died is not an event and does not stay, nor a progress file half-saved
        (tmp_path / EVENTS_DIR / f".tmp-{done[0]}-x").mkdir()
        (tmp_path / EVENTS_DIR / f".{hist.PROGRESS_FILE}.99999999.tmp").write_text("{")
        requests_before = len(world.upbit.served)
        second = await world.run(tmp_path).run(world.since)
        assert len(world.upbit.served) == requests_before, "the list was paged again"
        assert sorted(second.skipped_done) == done and not set(second.built) & set(done)
        clean = tmp_path / "clean"
        whole = await world.run(clean).run(world.since)
        names = sorted(n for n in os.listdir(tmp_path / EVENTS_DIR) if n != hist.PROGRESS_FILE)
        assert names == sorted(whole.built), "each event once, no leftovers"
        for n in names:
            a = pq.read_table(tmp_path / EVENTS_DIR / n / "trades.parquet")
            b = pq.read_table(clean / EVENTS_DIR / n / "trades.parquet")
            assert a.equals(b), n

    in_world(check)


def test_a_live_event_is_not_overwritten_unless_replace(tmp_path):
    async def check(world: World):
        ((_tickers, t0),) = [v for v in world.upbit.krw_listings.values() if v[0] == ("WAL",)]
        live = tmp_path / EVENTS_DIR / event_name("WAL", t0)
        live.mkdir(parents=True)
        text = json.dumps({"ticker": "WAL", "t0_ns": t0, "source": "log", "venues": {}})
        (live / "event.json").write_text(text)
        result = await world.run(tmp_path).run(world.since)
        assert live.name in result.skipped_live and live.name not in result.built
        assert (live / "event.json").read_text() == text and sorted(os.listdir(live)) == ["event.json"]
        again = await world.run(tmp_path, replace=True).run(world.since)
        assert again.built == [live.name]  # the rebuilt ones are not built twice, the live one is replaced
        assert json.loads((live / "event.json").read_text())["source"] == "rest-history"

    in_world(check)


def test_load_events_over_rebuilt_folders_equals_the_analysis_files(tmp_path):
    duckdb = pytest.importorskip("duckdb")

    async def check(world: World):
        await world.run(tmp_path).run(world.since)
        table = pumpwatch.load_events(tmp_path)
        rows = table.to_pylist()
        assert rows
        for r in rows:
            folder = tmp_path / EVENTS_DIR / r["event"]
            event = json.loads((folder / "event.json").read_text())
            analysis = json.loads((folder / "analysis.json").read_text())
            entry = event["venues"][r["venue"]]
            a = analysis["venues"].get(r["venue"], {})
            assert (
                r["source"] == entry["source"] and r["coverage"] == entry["coverage"] and r["trades"] == entry["trades"]
            )
            assert r["max_rise_pct"] == a.get("max_rise_pct") and r["verdict"] == a.get("verdict")
        glob = str(tmp_path / EVENTS_DIR / "*" / "trades.parquet")
        counted = dict(duckdb.sql(f"SELECT venue, count(*) FROM read_parquet('{glob}') GROUP BY venue").fetchall())
        expected: dict[str, int] = {}
        for r in rows:
            if r["trades"]:
                expected[r["venue"]] = expected.get(r["venue"], 0) + r["trades"]
        assert counted == expected and "binance-spot" in counted

    in_world(check)


def test_the_simulated_venues_refuse_what_is_beyond_their_reach():
    async def check(world: World):
        now_ms = time.time_ns() // 1_000_000
        old = [
            (t, t0)
            for (t, t0), venues in world.truth.items()
            if time.time_ns() - t0 > 100 * DAY_NS and {"okx-spot", "gate-spot"} <= set(venues)
        ]
        assert old, "the seeded year has a listing older than OKX's and Gate's reach on both"
        ticker, t0 = old[0]
        t0_ms = t0 // 1_000_000
        # The windows are on the tapes ...
        assert sim_window(world.sim, "okx-spot", f"{ticker}-USDT", t0 - 20 * NS, t0 + 20 * NS)
        assert sim_window(world.sim, "gate-spot", f"{ticker}_USDT", t0 - 20 * NS, t0 + 20 * NS)
        # ... but OKX history-trades serves 3 months and Gate spot 30 days (VENUES §4.3, §7.3)
        okx = await http_fetch(
            world.sim.venues["okx-spot"].rest_url,
            HttpRequest(
                "GET",
                "/api/v5/market/history-trades",
                {"instId": f"{ticker}-USDT", "type": "2", "after": str(t0_ms + 20_000)},
            ),
        )
        assert json.loads(okx)["data"] == []
        gate = await http_fetch(
            world.sim.venues["gate-spot"].rest_url,
            HttpRequest(
                "GET",
                "/api/v4/spot/trades",
                {"currency_pair": f"{ticker}_USDT", "from": str(t0 // NS - 20), "to": str(t0 // NS + 20)},
            ),
        )
        assert json.loads(gate) == []
        # Binance spot keeps everything: its first id of the window by aggTrades, then by id
        agg = json.loads(
            await http_fetch(
                world.sim.venues["binance-spot"].rest_url,
                HttpRequest(
                    "GET",
                    "/api/v3/aggTrades",
                    {
                        "symbol": f"{ticker}USDT",
                        "startTime": str(t0_ms - 20_000),
                        "endTime": str(t0_ms + 20_000),
                        "limit": "1",
                    },
                ),
            )
        )
        assert agg and agg[0]["T"] >= t0_ms - 20_000
        with pytest.raises(HttpError):  # Binance USDⓈ-M historicalTrades wants a key (§2.3)
            await http_fetch(
                world.sim.venues["binance-usdm"].rest_url,
                HttpRequest("GET", "/fapi/v1/historicalTrades", {"symbol": f"{ticker}USDT", "fromId": "1"}),
            )
        assert now_ms > t0_ms

    in_world(check)


def _config(world: World, path) -> str:
    lines = ["[upbit]", f'url = "{world.upbit.base_url}"', "interval_s = 0.02", 'market_url = ""', ""]
    for v, s in world.sim.venues.items():
        lines += [f"[venues.{v}]", f'rest_url = "{s.rest_url}"', ""]
    path.write_text("\n".join(lines))
    return str(path)


def test_cli_history_killed_and_run_again_builds_each_event_once(tmp_path):
    import signal
    import sys

    async def check(world: World):
        cfg = _config(world, tmp_path / "pumpwatch.toml")
        since = time.strftime("%Y-%m-%d", time.gmtime(world.since // NS))
        cmd = [
            sys.executable,
            "-m",
            "pumpwatch",
            "history",
            "--since",
            since,
            "--config",
            cfg,
            "--data-dir",
            str(tmp_path / "d"),
            "--json",
            "--no-chart",
        ]
        events = tmp_path / "d" / EVENTS_DIR
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # killed once two events are written
            built = [
                n
                for n in (os.listdir(events) if events.exists() else [])
                if not n.startswith(".") and n != hist.PROGRESS_FILE
            ]
            if len(built) >= 2 or proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        first = set(built)
        assert 2 <= len(first) < LISTINGS + 6, "killed halfway"
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-2000:]
        summary = json.loads(out)
        announced = world.upbit.announced_listings(world.since - DAY_NS)
        expected = {
            event_name(t, t0)
            for tickers, t0 in announced.values()
            for t in tickers
            if t0 >= hist_since_midnight(world.since)
        }
        assert first <= set(summary["already_built"]) and not first & set(summary["built"])
        assert set(summary["built"]) | set(summary["already_built"]) == expected
        names = sorted(n for n in os.listdir(events) if n != hist.PROGRESS_FILE)
        assert names == sorted(expected)
        assert set(summary["requests"][summary["built"][0]]) == set(world.sim.venues)

    in_world(check)


def hist_since_midnight(since_ns: int) -> int:
    return since_ns // DAY_NS * DAY_NS


def test_capture_from_history_fills_the_venues_the_recording_does_not_cover(tmp_path):
    from pumpwatch.capture import CaptureRequest
    from pumpwatch.store import ReadOnlyStore

    async def check(world: World):
        # the board's WAL listing, two days ago: every venue that keeps history reaches it
        ((_tickers, t0),) = [v for v in world.upbit.krw_listings.values() if v[0] == ("WAL",)]
        listed = world.truth[("WAL", t0)]
        window = sim_window(world.sim, "binance-spot", "WALUSDT", t0 - 20 * NS, t0 + 20 * NS)
        fills = {f.trade_id: f for f in world.sim.venues["binance-spot"].history("WALUSDT")}
        inst = world.sim.venues["binance-spot"].instruments["WALUSDT"]
        half = window[: len(window) // 2]  # the recording has the first half of Binance spot only
        with pumpwatch.Store(tmp_path) as store:
            store.append_trades(
                [
                    pumpwatch.Trade(
                        venue="binance-spot",
                        symbol="WALUSDT",
                        trade_id=i,
                        price=inst.price_text(fills[i].price),
                        qty=inst.qty_text(fills[i].qty),
                        side=fills[i].side,
                        ts_ns=fills[i].ts_ns,
                        recv_ns=fills[i].ts_ns + 1_000_000,
                    )
                    for i in half
                ]
            )
        req = CaptureRequest("WAL", t0, 20 * NS, 20 * NS, {"manual": True})
        with ReadOnlyStore(tmp_path) as source:
            ev = await hist.capture_from_history(
                source, req, tmp_path, chart=False, venue_urls={v: s.rest_url for v, s in world.sim.venues.items()}
            )
        venues = ev.event["venues"]
        trades = pq.read_table(os.path.join(ev.path, "trades.parquet")).to_pylist()
        spot = [r for r in trades if r["venue"] == "binance-spot"]
        assert [r["trade_id"] for r in spot] == window
        assert venues["binance-spot"]["source"] == "recorded+rest-history"
        recv = {r["trade_id"]: r["recv_ns"] for r in spot}
        assert all(recv[i] == fills[i].ts_ns + 1_000_000 for i in half), "a recorded trade stays as recorded"
        for v in ("okx-spot", "gate-futures"):
            if v in listed:
                assert venues[v]["source"] == "rest-history" and venues[v]["coverage"] == "complete"
                assert [r["trade_id"] for r in trades if r["venue"] == v] == sim_window(
                    world.sim, v, venues[v]["instruments"][0], t0 - 20 * NS, t0 + 20 * NS
                )

    in_world(check)


def test_binance_usdm_with_a_key_gives_single_trades_for_three_months_then_aggregates(tmp_path):
    async def check(world: World):
        result = await world.run(tmp_path, api_keys={"binance-usdm": "sim-key"}).run(world.since)
        now = time.time_ns()
        seen = set()
        for (ticker, t0), listed in world.truth.items():
            if "binance-usdm" not in listed or t0 < world.since:
                continue
            folder = tmp_path / EVENTS_DIR / event_name(ticker, t0)
            entry = json.loads((folder / "event.json").read_text())["venues"]["binance-usdm"]
            got = [
                r["trade_id"]
                for r in pq.read_table(folder / "trades.parquet").to_pylist()
                if r["venue"] == "binance-usdm"
            ]
            symbol = f"{ticker}USDT"
            if now - (t0 - 20 * NS) <= 90 * DAY_NS:  # historicalTrades with the key: market trades, NA ids left out
                want = [
                    f.trade_id
                    for f in world.sim.venues["binance-usdm"].history(symbol)
                    if t0 - 20 * NS <= f.ts_ns <= t0 + 20 * NS and not f.placeholder
                ]
                assert entry["source"] == "rest-history" and got == want and want
            else:
                assert entry["source"] == "rest-history-aggregated"
                assert got == sim_window(world.sim, "binance-usdm", symbol, t0 - 20 * NS, t0 + 20 * NS)
            seen.add(entry["source"])
        assert seen == {"rest-history", "rest-history-aggregated"} and not result.failed

    in_world(check)


def test_refusals_and_outages_are_waited_out_and_until_bounds_the_span(tmp_path):
    async def check(world: World):
        # only the board's listings (the last days): --until excludes nothing after it, --since all before
        since = time.time_ns() - 10 * DAY_NS
        announced = world.upbit.announced_listings(since, time.time_ns())
        world.sim.venues["okx-spot"].fail_rest(1.0, 429)  # OKX says "too many requests" for a second
        world.sim.venues["gate-futures"].fail_rest(1.0, 503)  # Gate futures is down for a second
        run = world.run(tmp_path)
        result = await run.run(since, time.time_ns())
        assert {(x.notice_id, x.tickers, x.t0_ns) for x in result.listings} == {
            (i, t, t0) for i, (t, t0) in announced.items()
        }
        assert len(result.built) == 6 and not result.failed
        for tickers, t0 in announced.values():
            event = json.loads((tmp_path / EVENTS_DIR / event_name(tickers[0], t0) / "event.json").read_text())
            for v in ("okx-spot", "gate-futures"):
                entry = event["venues"][v]
                if entry["coverage"] != "absent":
                    assert entry["coverage"] == "complete" and entry["trades"] == len(
                        sim_window(world.sim, v, entry["instruments"][0], t0 - 20 * NS, t0 + 20 * NS)
                    )
        with pytest.raises(hist.HistoryError):
            await world.run(tmp_path).run(since, since - NS)

    in_world(check)


def test_a_venue_quiet_before_t0_gets_its_reference_from_before_the_window(tmp_path):
    from decimal import Decimal

    async def check(world: World):
        ((_tickers, t0),) = [v for v in world.upbit.krw_listings.values() if v[0] == ("WAL",)]
        venue = world.sim.venues["binance-spot"]
        venue.add_past_listing("WAL", t0, quiet_before_s=30)  # nobody traded WAL there in the 30 s before t0
        before = [f for f in venue.history("WALUSDT") if f.ts_ns < t0 and not f.placeholder]
        assert before and before[-1].ts_ns < t0 - 30 * NS
        await world.run(tmp_path).run(time.time_ns() - 10 * DAY_NS)
        folder = tmp_path / EVENTS_DIR / event_name("WAL", t0)
        analysis = json.loads((folder / "analysis.json").read_text())
        ref = analysis["venues"]["binance-spot"]["reference"]
        assert ref is not None and ref["ts_ns"] == before[-1].ts_ns
        assert Decimal(ref["price"]) == Decimal(venue.instruments["WALUSDT"].price_text(before[-1].price))
        trades = pq.read_table(folder / "trades.parquet").to_pylist()
        assert (
            min(r["ts_ns"] for r in trades if r["venue"] == "binance-spot") >= t0
        )  # the reference is not a window trade

    in_world(check)


def test_history_pages_upbit_through_the_configured_proxies(tmp_path):
    """The announcement list is paged through the watcher's egresses: direct and each `[upbit]
    proxies` entry, round-robin (the stand-in sees the proxy's address), and only through the
    proxies when direct is off. The old rebuild paged directly whatever was configured."""
    from collections import Counter

    from test_upbit import ConnectProxy

    async def check(world: World):
        proxy, only = ConnectProxy("127.0.0.2"), ConnectProxy("127.0.0.3", credentials="user:s3cret")
        url, only_url = await proxy.start(), await only.start()
        announced = world.upbit.announced_listings(world.since)
        want = {(i, t, t0) for i, (t, t0) in announced.items()}
        try:
            # the CLI with `[upbit] proxies` (direct and the proxy, as the daemon's watcher polls)
            cfg = tmp_path / "pumpwatch.toml"
            _config(world, cfg)
            cfg.write_text(cfg.read_text().replace("[upbit]", f'[upbit]\nproxies = ["{url}"]'))
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(world.since // NS))
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(world.since // NS + 1))  # pages all, builds none
            served_before = len(world.upbit.served)
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "pumpwatch", "history", "--since", since, "--until", until),
                *("--config", str(cfg), "--data-dir", str(tmp_path / "d"), "--json", "--no-chart"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert json.loads(out)["upbit_requests"] >= 2
            peers = Counter(s.peer for s in world.upbit.served[served_before:])
            assert proxy.tunnels >= 1 and peers["127.0.0.2"] >= 1 and peers["127.0.0.1"] >= 1, peers
            # in process, proxies only: every page through them, and the listings found are the same
            w = WatcherSettings(
                base_url=world.upbit.base_url, interval_s=0.02, market_url="", proxies=(only_url,), include_direct=False
            )
            served_before = len(world.upbit.served)
            counter: Counter = Counter()
            listings = await hist.page_listings(w, world.since, counter=counter)
            assert {(x.notice_id, x.tickers, x.t0_ns) for x in listings} == want
            peers = Counter(s.peer for s in world.upbit.served[served_before:])
            assert set(peers) == {"127.0.0.3"} and only.tunnels >= 1 and counter["upbit"] == peers["127.0.0.3"]
        finally:
            await proxy.stop()
            await only.stop()

    in_world(check)


def _gate_spot_event(tmp_path, monkeypatch, cap: int, orders_per_s: float, ticker: str):
    """A listing two days ago with a busy Gate spot window, rebuilt with Gate spot's page cap
    (`limit * (page - 1) <= 100000`, docs/VENUES.md §7.3) scaled down to `cap` on both sides (the
    simulator refuses a deeper page with 400, as Gate does): (event.json entry, trade ids rebuilt,
    the simulator's window, requests)."""
    from pumpwatch.sim.venues import Gate
    from pumpwatch.venues import gate

    monkeypatch.setattr(gate, "MAX_SPOT_OFFSET", cap)
    monkeypatch.setattr(Gate, "max_page_offset", cap)
    out = {}

    async def main():
        async with Simulator(seed=SEED, trades_per_s=2) as sim:
            venue = sim.venues["gate-spot"]
            t0 = (time.time_ns() - 2 * DAY_NS) // NS * NS
            venue.add_past_listing(ticker, t0, orders_per_s=orders_per_s, span_s=25)
            w = WatcherSettings(base_url="http://127.0.0.1:9", market_url="")
            run = hist.HistoryRun(tmp_path, watcher=w, venue_urls={"gate-spot": venue.rest_url}, venues=("gate-spot",))
            run.chart = False
            listing = hist.PastListing(1, f"{ticker} KRW listing", (ticker,), ("KRW",), t0)
            result = hist.HistoryResult()
            name = await run._build(listing, ticker, result, None)
            folder = tmp_path / EVENTS_DIR / name
            out["entry"] = json.loads((folder / "event.json").read_text())["venues"]["gate-spot"]
            out["got"] = [r["trade_id"] for r in pq.read_table(folder / "trades.parquet").to_pylist()]
            out["want"] = sim_window(sim, "gate-spot", f"{ticker}_USDT", t0 - 20 * NS, t0 + 20 * NS)
            out["requests"] = result.requests[name]["gate-spot"]
            out["t0"] = t0

    asyncio.run(main())
    return out


def test_gate_spot_window_past_the_page_cap_is_reached_by_cutting_the_range(tmp_path, monkeypatch):
    """More trades in the window than one query's pages reach (3,000 with the cap scaled to 2,000):
    the walk goes on with the range cut at the oldest second reached, page 1 again, and gets every
    trade. The old walk stopped at the cap and called 3,000 of them complete."""
    ev = _gate_spot_event(tmp_path, monkeypatch, cap=2_000, orders_per_s=45, ticker="CAPPED")
    assert len(ev["want"]) > 2 * 3_000, "the window holds more than two queries' worth"
    assert ev["got"] == ev["want"]
    assert ev["entry"]["coverage"] == "complete" and ev["entry"]["trades"] == len(ev["want"])


def test_gate_spot_trades_the_page_cap_cannot_reach_are_named(tmp_path, monkeypatch):
    """With the cap at 0 a query reaches one page (1,000 rows); where more than that fell within
    two seconds, cutting the range gets no further: the event says `partial`, names the span the
    venue could not page back to, and keeps every trade it did reach. The old walk stopped silently
    and called the window complete."""
    ev = _gate_spot_event(tmp_path, monkeypatch, cap=0, orders_per_s=60, ticker="DENSE")
    entry, got, want = ev["entry"], ev["got"], ev["want"]
    assert entry["coverage"] == "partial" and hist.OUT_OF_REACH in entry["note"], entry
    ((span,),) = [entry["lost"]]
    assert span["reason"].startswith(hist.OUT_OF_REACH) and span["from_ns"] == ev["t0"] - 20 * NS
    assert 0 < len(got) < len(want)
    assert got == want[len(want) - len(got) :], "what was reached is the window's newest trades, each once"


def test_a_walk_newest_first_that_fails_names_the_older_part_lost(tmp_path):
    """Gate and OKX serve a window newest first: when the venue refuses a page halfway, what is
    missing is the window's older part, from its start to the oldest trade reached, and every trade
    reached is after that span. The old rule named the span after the newest trade reached (the
    part that was fetched) and left the missing one unnamed."""

    async def main():
        async with Simulator(seed=SEED, trades_per_s=2) as sim:
            venue = sim.venues["gate-futures"]
            t0 = (time.time_ns() - 2 * DAY_NS) // NS * NS
            venue.add_past_listing("HALF", t0, orders_per_s=45, span_s=25)
            trades_asked = 0

            async def refusing(base_url, request):
                nonlocal trades_asked
                if request.path.endswith("/trades"):
                    trades_asked += 1
                    if trades_asked == 4:  # a refusal that is not waited out (not a 429 or 5xx)
                        raise HttpError("400 from the venue", status=400)
                return await http_fetch(base_url, request)

            w = WatcherSettings(base_url="http://127.0.0.1:9", market_url="")
            run = hist.HistoryRun(
                tmp_path,
                watcher=w,
                venue_urls={"gate-futures": venue.rest_url},
                venues=("gate-futures",),
                fetch=refusing,
            )
            run.chart = False
            listing = hist.PastListing(1, "HALF KRW listing", ("HALF",), ("KRW",), t0)
            name = await run._build(listing, "HALF", hist.HistoryResult(), None)
            folder = tmp_path / EVENTS_DIR / name
            entry = json.loads((folder / "event.json").read_text())["venues"]["gate-futures"]
            got = [r for r in pq.read_table(folder / "trades.parquet").to_pylist() if r["ts_ns"] >= t0 - 20 * NS]
            want = sim_window(sim, "gate-futures", "HALF_USDT", t0 - 20 * NS, t0 + 20 * NS)
            assert entry["coverage"] == "partial"
            (span,) = entry["lost"]
            assert span["reason"].startswith("REST history failed") and span["from_ns"] == t0 - 20 * NS
            assert 0 < len(got) < len(want) and [r["trade_id"] for r in got] == want[len(want) - len(got) :]
            assert span["to_ns"] == min(r["ts_ns"] for r in got), "the span ends where the trades reached begin"

    asyncio.run(main())


def test_a_coin_delisted_after_its_listing_is_named_not_absent(tmp_path):
    """GONE traded on Binance spot, OKX spot and Gate spot when Upbit listed it two days ago; OKX
    and Gate have delisted it since (their lists no longer have it and their REST refuses the
    symbol, as the simulator's delisting does). The recorder's catalogue saw OKX's GONE-USDT (and
    Bybit's GONEUSDT, delisted too), not Gate's. The rebuild asks both venues' history anyway: OKX is `delisted since (history not
    available)` with the catalogued instrument, Gate stays `absent` with a note saying what its
    history answered, Binance spot is complete. The old rebuild called OKX `absent` and asked no one."""
    from pumpwatch.capture import save_instruments
    from pumpwatch.venues import SPECS, Instrument

    async def main():
        async with Simulator(seed=SEED, trades_per_s=2) as sim:
            t0 = (time.time_ns() - 2 * DAY_NS) // NS * NS
            for v in ("binance-spot", "okx-spot", "gate-spot"):
                sim.venues[v].add_past_listing("GONE", t0, orders_per_s=2, span_s=25)
            sim.venues["bybit-spot"].add_past_listing("GONE", t0, orders_per_s=2, span_s=25)
            save_instruments(tmp_path, "okx-spot", [Instrument("okx-spot", "GONE-USDT", "GONE", "USDT", "spot")])
            save_instruments(tmp_path, "bybit-spot", [Instrument("bybit-spot", "GONEUSDT", "GONE", "USDT", "spot")])
            sim.venues["okx-spot"].delist("GONE-USDT")
            sim.venues["gate-spot"].delist("GONE_USDT")
            sim.venues["bybit-spot"].delist("GONEUSDT")
            venues = ("binance-spot", "okx-spot", "gate-spot", "gate-futures", "bybit-spot")
            w = WatcherSettings(base_url="http://127.0.0.1:9", market_url="")
            run = hist.HistoryRun(
                tmp_path, watcher=w, venue_urls={v: sim.venues[v].rest_url for v in venues}, venues=venues
            )
            run.chart = False
            result = hist.HistoryResult()
            name = await run._build(hist.PastListing(1, "GONE", ("GONE",), ("KRW",), t0), "GONE", result, None)
            event = json.loads((tmp_path / EVENTS_DIR / name / "event.json").read_text())
            okx, gate, spot = (event["venues"][v] for v in ("okx-spot", "gate-spot", "binance-spot"))
            assert okx["coverage"] == "not available: delisted since (history not available)" and okx[
                "instruments"
            ] == ["GONE-USDT"], okx
            assert event["instrument_mapping"]["okx-spot"][0]["source"] == "recorder's catalogue"
            assert "GONE-USDT" in okx["note"]  # OKX answers 51001 in a 200 body: an error, named
            assert (
                gate["coverage"] == "absent" and "GONE_USDT" in gate["note"] and "INVALID_CURRENCY_PAIR" in gate["note"]
            )
            assert result.requests[name]["gate-spot"] == 2, "the instrument list, then the symbol's history once"
            assert spot["coverage"] == "complete" and spot["trades"] == len(
                sim_window(sim, "binance-spot", "GONEUSDT", t0 - 20 * NS, t0 + 20 * NS)
            )
            assert event["venues"]["gate-futures"]["coverage"] == "absent"
            # Bybit keeps only recent trades: the catalogue's word alone, nothing asked but its list
            bybit = event["venues"]["bybit-spot"]
            assert bybit["coverage"] == "not available: delisted since (history not available)"
            lists = len(SPECS["bybit-spot"].instruments_request())  # its list only (Trading and PreLaunch)
            assert bybit["note"] == hist.NOT_AVAILABLE and result.requests[name]["bybit-spot"] == lists

    asyncio.run(main())
