"""ccxt as an independent witness of the simulator and the recorder.

The simulator and the recorder were written from one fact sheet; ccxt was not. In one simulator run
(all twelve venues over TLS, as in production) PumpWatch records every venue while ccxt, its REST
and WebSocket URLs pointed at the same simulator, loads the markets, fetches recent trades and
watches the live trades of one symbol per venue. Each venue and each call is its own test:

- `load_markets`: ccxt lists the simulator's instruments with the base, quote, type and contract
  size PumpWatch's instrument lists hold;
- `fetch_trades`: the trades ccxt reads from REST equal, id by id (price, amount in base units,
  side, timestamp), what PumpWatch stored for the same span;
- `watch_trades`: the trades ccxt receives over WebSocket equal what PumpWatch recorded from the
  same stream.

Where ccxt cannot talk to the simulator, the simulator is not speaking the venue's protocol.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import re
import threading
import time
from decimal import Decimal
from typing import Any

import pytest

import pumpwatch
from pumpwatch import venues as pumpwatch_venues
from pumpwatch.collector import Collector
from pumpwatch.config import Config, TlsSettings, VenueSettings
from pumpwatch.sim import Simulator

# A test dependency (the `test` extra); under CI its absence fails rather than skips.
ccxt = __import__("ccxt.pro").pro if os.environ.get("PUMPWATCH_CI") else pytest.importorskip("ccxt.pro")

pytestmark = pytest.mark.timeout(180)

SEED = 12
RATE = 40.0  # trades/s per venue
WATCH_S = 6.0  # how long ccxt watches while PumpWatch records, at least
#: ... and on, until every witness holds this many trades (or failed): the time ccxt needs to
#: connect and keep up depends on the machine's load, the trades it must judge do not.
WATCHED_ENOUGH = 30
WATCH_DEADLINE_S = 40.0
SYMBOLS = ["BTC", "ETH"]

#: venue -> (ccxt class, ccxt options, the ccxt market type of PumpWatch's instruments). The
#: options keep load_markets to the venue's market type, and pick the REST and WebSocket
#: endpoints PumpWatch uses: Binance's `trades` (ccxt defaults to `aggTrades`, whose ids are
#: aggregate ids, not trade ids). OKX: ccxt watches `trades` (one row per taker order and price,
#: `count` fills, the last fill's id) where PumpWatch records `trades-all` (one row per fill);
#: ccxt's `trades-all` asks for a login OKX does not need, so the aggregate is checked against the
#: fills it sums.
CCXT: dict[str, tuple[str, dict, str]] = {
    "binance-spot": (
        "binance",
        {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot", "fetchTradesMethod": "publicGetTrades"},
        "spot",
    ),
    "binance-usdm": (
        "binanceusdm",
        {"fetchMarkets": {"types": ["linear"]}, "fetchTradesMethod": "fapiPublicGetTrades"},
        "swap",
    ),
    "bybit-spot": ("bybit", {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"}, "spot"),
    "bybit-linear": ("bybit", {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"}, "swap"),
    "okx-spot": ("okx", {"fetchMarkets": {"types": ["spot"]}}, "spot"),
    "okx-swap": ("okx", {"fetchMarkets": {"types": ["swap"]}}, "swap"),
    "kucoin-spot": ("kucoin", {"fetchMarkets": {"types": ["spot"], "fetchTickersFees": False}}, "spot"),
    "kucoin-futures": ("kucoinfutures", {"fetchMarkets": {"types": ["swap"], "fetchTickersFees": False}}, "swap"),
    "gate-spot": ("gate", {"fetchMarkets": {"types": ["spot"]}}, "spot"),
    "gate-futures": ("gate", {"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"}, "swap"),
    "phemex-spot": ("phemex", {}, "spot"),
    "phemex-perp": ("phemex", {}, "swap"),
}
VENUES = list(CCXT)

_ORIGIN = re.compile(r"^(https?|wss?)://[^/]+")


def _host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]


#: The real REST host of each venue (PumpWatch's specs), so a ccxt call that goes to a sibling
#: venue's host (ccxt's kucoinfutures reads currencies from KuCoin spot's) reaches that venue.
REST_HOSTS = {v: _host(pumpwatch_venues.get(v).rest_url) for v in CCXT}


def point_at(exchange: Any, venue: str, all_urls: dict[str, dict[str, str]]) -> None:
    """Every REST and WebSocket URL of `exchange` rewritten to a simulated venue's origin, keeping
    the paths (they are the protocol under test): a host that is only a sibling venue's goes to
    that venue, any other to `venue`."""
    siblings = {h: v for v, h in REST_HOSTS.items() if h != REST_HOSTS[venue]}

    def rewrite(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: rewrite(x) for k, x in v.items()}
        if isinstance(v, str):
            m = _ORIGIN.match(v)
            if m:
                urls = all_urls[siblings.get(_host(v), venue)]
                origin = urls["ws_origin"] if m.group(1).startswith("ws") else urls["rest_url"]
                return origin + v[m.end() :]
        return v

    urls = all_urls[venue]

    exchange.urls["api"] = rewrite(exchange.urls["api"])
    if "hostname" in exchange.__dict__ or hasattr(exchange, "hostname"):
        exchange.hostname = urls["rest_url"].split("://", 1)[1]


class Run:
    """The one simulator run: its results, per venue, for the tests to judge."""

    def __init__(self) -> None:
        self.markets: dict[str, dict] = {}
        self.instruments: dict[str, dict] = {}
        self.fetched: dict[str, list[dict]] = {}
        self.watched: dict[str, list[dict]] = {}
        self.errors: dict[tuple[str, str], BaseException] = {}
        self.symbol: dict[str, str] = {}  # venue -> the venue's symbol ccxt fetched and watched
        self.stored: list[dict] = []
        self.sent: dict[str, list[dict]] = {}  # what the simulator sent on its live stream
        self.watched_s = 0.0  # how long ccxt watched


async def _witness(
    venue: str,
    urls: dict[str, dict[str, str]],
    ca_file: str,
    run: Run,
    until: asyncio.Event,
    recorded: asyncio.Event,
    start_after_s: float = 0.0,
) -> None:
    await asyncio.sleep(start_after_s)
    cls, options, _ = CCXT[venue]
    ex = getattr(ccxt, cls)({"cafile": ca_file, "options": dict(options), "enableRateLimit": False, "timeout": 10_000})
    point_at(ex, venue, urls)
    try:
        try:
            run.markets[venue] = await ex.load_markets()
        except Exception as e:
            run.errors[(venue, "load_markets")] = e
            return
        native = run.symbol[venue]
        market = next((m for m in run.markets[venue].values() if m["id"] == native), None)
        if market is None:
            run.errors[(venue, "load_markets")] = AssertionError(f"ccxt lists no market with id {native}")
            return
        watched: list[dict] = []
        run.watched[venue] = watched

        async def watch() -> None:
            while not until.is_set():
                watched.extend(await ex.watch_trades(market["symbol"]))

        task = asyncio.ensure_future(watch())
        await until.wait()
        await asyncio.sleep(0.3)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as e:
            run.errors[(venue, "watch_trades")] = e
        await recorded.wait()
        try:
            run.fetched[venue] = await ex.fetch_trades(market["symbol"], limit=100)
        except Exception as e:
            run.errors[(venue, "fetch_trades")] = e
    finally:
        await ex.close()


async def _one_run(data_dir) -> Run:
    run = Run()
    async with Simulator(VENUES, seed=SEED, tls=True, trades_per_s=RATE, backlog=150, symbols=SYMBOLS) as sim:
        urls = sim.urls()
        for v in VENUES:
            run.symbol[v] = next(iter(sim.venues[v].instruments))
        cfg = Config(
            data_dir=str(data_dir),
            metrics_address="127.0.0.1:0",
            window_merge_s=0,
            venues={v: VenueSettings(ws_url=urls[v]["ws_origin"], rest_url=urls[v]["rest_url"]) for v in VENUES},
            tls=TlsSettings(ca_file=sim.ca_file),
        )
        store = pumpwatch.Store(data_dir)
        collector = Collector(cfg, store)
        stop, until, recorded = asyncio.Event(), asyncio.Event(), asyncio.Event()
        recording = asyncio.create_task(collector.run(stop))
        # Every connection of the recorder up before ccxt starts watching, and one pacing window (1 s)
        # after the last of them: the recorder's handshakes draw on the same per-IP budget as ccxt's
        # (OKX: 3 a second), and on a busy machine they may still be opening a second after the start.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            venues_status = collector.status()["venues"]
            if all(0 < venues_status[v]["connections"] == venues_status[v]["connections_up"] for v in VENUES):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        # The simulator refuses handshakes beyond an exchange's per-IP rate (OKX: 3 a second, both
        # markets together), as the venue does; ccxt does not retry, so its sockets to one
        # exchange are spread a second apart.
        family: dict[str, int] = {}
        starts = {}
        for v in VENUES:
            starts[v] = family.get(v.split("-")[0], 0) * 1.1
            family[v.split("-")[0]] = family.get(v.split("-")[0], 0) + 1
        watch_from = time.monotonic()
        witnesses = [
            asyncio.create_task(_witness(v, urls, sim.ca_file, run, until, recorded, starts[v])) for v in VENUES
        ]
        await asyncio.sleep(WATCH_S)
        deadline = time.monotonic() + WATCH_DEADLINE_S - WATCH_S
        while time.monotonic() < deadline and not all(
            len(run.watched.get(v, ())) >= WATCHED_ENOUGH or any(k[0] == v for k in run.errors) for v in VENUES
        ):
            await asyncio.sleep(0.2)
        run.watched_s = time.monotonic() - watch_from
        until.set()
        await asyncio.sleep(1.0)  # what ccxt received has reached PumpWatch too
        for v in VENUES:
            run.instruments[v] = {i.symbol: i for i in collector.recorders[v].instruments.values()}
        stop.set()
        await recording
        # What each venue sent on the stream ccxt watched (OKX: ccxt watches `trades`).
        run.sent = {
            v: sim.venues[v].sent_trades(run.symbol[v], channel="trades" if v.startswith("okx") else None)
            for v in VENUES
        }
        store.close()
        # REST is read after the recording stopped: its span is inside what was recorded.
        recorded.set()
        await asyncio.gather(*witnesses)
    run.stored = pumpwatch.Store.open_readonly(data_dir).query(include_non_trades=True).to_pylist()
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    result: dict[str, Any] = {}

    def go() -> None:  # its own thread: pytest's loop (if any) stays out of it
        try:
            result["run"] = asyncio.run(_one_run(tmp_path_factory.mktemp("ccxt") / "data"))
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=go)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["run"]


def _raise(run: Run, venue: str, call: str) -> None:
    e = run.errors.get((venue, call))
    if e is not None:
        raise AssertionError(f"{venue}: ccxt {call} failed against the simulator: {type(e).__name__}: {e}") from e


# -- the checks


@pytest.mark.parametrize("venue", VENUES)
def test_load_markets(run, venue):
    _raise(run, venue, "load_markets")
    _, _, kind = CCXT[venue]
    by_id = {m["id"]: m for m in run.markets[venue].values() if m["type"] == kind}
    ours = run.instruments[venue]
    assert ours, f"{venue}: PumpWatch holds no instruments"
    for symbol, inst in ours.items():
        m = by_id.get(symbol)
        assert m is not None, f"{venue}: ccxt does not list {symbol} as a {kind} market; it lists {sorted(by_id)}"
        assert (m["base"], m["quote"]) == (inst.base, inst.quote), f"{venue} {symbol}: ccxt {m['base']}/{m['quote']}"
        want_kind = "spot" if inst.kind == "spot" else "swap"
        assert m["type"] == want_kind, f"{venue} {symbol}: ccxt type {m['type']}, PumpWatch {inst.kind}"
        size = Decimal(str(m["contractSize"])) if m.get("contract") else Decimal(1)
        assert size == Decimal(inst.contract_multiplier), (
            f"{venue} {symbol}: contract size ccxt {size}, PumpWatch {inst.contract_multiplier}"
        )
    assert set(by_id) == set(ours), f"{venue}: ccxt lists {sorted(by_id)}, PumpWatch holds {sorted(ours)}"


def _stored(run: Run, venue: str) -> list[dict]:
    symbol = run.symbol[venue]
    return [r for r in run.stored if r["venue"] == venue and r["symbol"] == symbol]


def _trade_id(venue: str, t: dict) -> str | None:
    """The id PumpWatch keys a ccxt trade by: KuCoin's `sequence` (REST has no `tradeId`, VENUES
    §5.3), else ccxt's id. Phemex trades have none (None: matched by content)."""
    if venue.startswith("kucoin"):
        return str(t["info"]["sequence"])
    return None if t["id"] is None else str(t["id"])


def _compare(run: Run, venue: str, trades: list[dict], what: str, rows: list[dict] | None = None) -> int:
    """ccxt's `trades` against the stored ones (or `rows`) within their span, id by id (by content
    where the venue has no ids); returns how many were compared."""
    against_log = rows is None
    rows = _stored(run, venue) if rows is None else rows
    assert rows, f"{venue}: PumpWatch stored nothing for {run.symbol[venue]}"
    inst = run.instruments[venue][run.symbol[venue]]
    mult = Decimal(inst.contract_multiplier)
    size = Decimal(str(run.markets[venue][trades[0]["symbol"]].get("contractSize") or 1))
    non_trade = pumpwatch.FLAGS["NON_TRADE"]
    by_id = {r["trade_id"]: r for r in rows}
    first, last = min(r["ts_ns"] for r in rows), max(r["ts_ns"] for r in rows)

    def ours(r: dict) -> tuple:
        return (Decimal(r["price"]), Decimal(r["qty"]) * mult, r["side"], r["ts_ns"] // 1_000_000)

    def theirs(t: dict) -> tuple:
        return (Decimal(str(t["price"])), Decimal(str(t["amount"])) * size, t["side"], t["timestamp"])

    by_content: dict[tuple, int] = {}
    for r in rows:
        by_content[ours(r)] = by_content.get(ours(r), 0) + 1
    compared = 0
    if venue == "gate-spot" and what == "fetch_trades":
        return _compare_gate_spot_fills(venue, trades, rows, ours, theirs, first, last)
    for t in trades:
        if not first <= t["timestamp"] * 1_000_000 <= last:
            continue
        tid = _trade_id(venue, t)
        if tid is None:  # Phemex: no ids, the content is the key
            key = theirs(t)
            assert by_content.get(key, 0) > 0, f"{venue}: ccxt {what} trade {key} is not in PumpWatch's log"
            by_content[key] -= 1
            compared += 1
            continue
        if against_log and venue.startswith("okx") and int(t["info"].get("count", "1")) > 1:
            # An aggregate of `count` fills ending at `tradeId`: the fills PumpWatch stored sum to it.
            n = int(t["info"]["count"])
            fills = [by_id.get(str(int(tid) - k)) for k in range(n)]
            assert all(fills), f"{venue}: ccxt {what} aggregate {tid} (count {n}): fills missing from PumpWatch's log"
            summed = (ours(fills[0])[0], sum(ours(f)[1] for f in fills), fills[0]["side"], ours(fills[0])[3])
            assert {ours(f)[0] for f in fills} == {summed[0]} and {f["side"] for f in fills} == {summed[2]}
            assert summed == theirs(t), (
                f"{venue}: aggregate {tid}: PumpWatch fills sum to {summed}, ccxt {what} {theirs(t)}"
            )
            compared += 1
            continue
        r = by_id.get(tid)
        assert r is not None, f"{venue}: ccxt {what} trade {tid} at {t['datetime']} is not in PumpWatch's log"
        if r["flags"] & non_trade:
            # Binance USDⓈ-M `X: "NA"`: an id spent without a fill (VENUES §2.2). ccxt makes it a
            # trade of price 0 and amount 0; PumpWatch keeps it as a non-trade record.
            assert t["info"].get("X") == "NA" and Decimal(str(t["price"])) == 0, (venue, t["info"], r)
            compared += 1
            continue
        assert ours(r) == theirs(t), (
            f"{venue}: trade {tid}: PumpWatch (price, base amount, side, ms) {ours(r)}, ccxt {what} {theirs(t)}"
        )
        compared += 1
    return compared


def _compare_gate_spot_fills(venue, trades, rows, ours, theirs, first, last) -> int:
    """Gate spot's stream sends one message per taker order and price (`range` of market ids,
    `id` the last, VENUES §7.2), its REST one row per fill: the REST fills up to each stored id
    (after the one before it) sum to that stored message. The group holding the oldest fill
    fetched may have begun before it, so it is not judged."""
    stored_ids = sorted(int(r["trade_id"]) for r in rows)
    by_id = {int(r["trade_id"]): r for r in rows}
    fills = sorted((t for t in trades if first <= t["timestamp"] * 1_000_000 <= last), key=lambda t: int(t["id"]))
    groups: dict[int, list[dict]] = {}
    for t in fills:
        i = bisect.bisect_left(stored_ids, int(t["id"]))
        assert i < len(stored_ids), f"{venue}: REST fill {t['id']} is after every message PumpWatch stored"
        groups.setdefault(stored_ids[i], []).append(t)
    compared = 0
    for n, (sid, group) in enumerate(sorted(groups.items())):
        if n == 0:
            continue
        r = by_id[sid]
        assert int(group[-1]["id"]) == sid, f"{venue}: PumpWatch stored {sid}, which REST does not have"
        summed = theirs(group[-1])[0], sum(theirs(t)[1] for t in group), group[-1]["side"], group[-1]["timestamp"]
        assert {theirs(t)[0] for t in group} == {summed[0]}, (
            f"{venue}: fills {[t['id'] for t in group]} differ in price"
        )
        assert ours(r) == summed, (
            f"{venue}: message {sid}: PumpWatch {ours(r)}, ccxt fetch_trades fills sum to {summed}"
        )
        compared += len(group)
    return compared


@pytest.mark.parametrize("venue", VENUES)
def test_fetch_trades(run, venue):
    _raise(run, venue, "load_markets")
    _raise(run, venue, "fetch_trades")
    trades = run.fetched[venue]
    assert trades, f"{venue}: ccxt fetch_trades returned nothing"
    assert _compare(run, venue, trades, "fetch_trades") >= 10


@pytest.mark.parametrize("venue", VENUES)
def test_watch_trades(run, venue):
    _raise(run, venue, "load_markets")
    _raise(run, venue, "watch_trades")
    trades = run.watched[venue]
    assert len(trades) >= 10, f"{venue}: ccxt watch_trades received {len(trades)} trades in {run.watched_s:.1f} s"
    ids = [_trade_id(venue, t) for t in trades if _trade_id(venue, t) is not None]
    assert len(set(ids)) == len(ids), f"{venue}: ccxt received a trade twice"
    assert _compare(run, venue, trades, "watch_trades") >= 10


@pytest.mark.parametrize("venue", VENUES)
def test_watch_trades_are_what_the_simulator_sent(run, venue):
    """ccxt's reading of the simulator's frames equals the simulator's own record of what it sent
    (price, base amount, side, time, id): a simulator that renders a trade other than it meant fails
    here even where PumpWatch's parser would agree with the rendering."""
    _raise(run, venue, "load_markets")
    _raise(run, venue, "watch_trades")
    sent = [{**t, "flags": 0} for t in run.sent[venue]]
    # Binance USDⓈ-M `X: "NA"` frames carry no trade, so the simulator records none for them.
    trades = [t for t in run.watched[venue] if not (isinstance(t["info"], dict) and t["info"].get("X") == "NA")]
    if venue == "gate-spot":  # one message per taker order and price: the record is the message
        sent = [{**t, "trade_id": str(t["trade_id"])} for t in sent]
    assert _compare(run, venue, trades, "watch_trades vs sent", rows=sent) >= 10
