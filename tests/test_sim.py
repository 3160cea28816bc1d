"""Tests of the venue simulator (pumpwatch.sim), talking to it as a client would, on 127.0.0.1.

Subscribe frames, pings and REST paths here are written from docs/VENUES.md, not taken from
the simulator, so the tests pin the real protocols. `reference_trades` reads a trade frame by the
field meanings docs/VENUES.md documents; where the pure-Python parser exists, every frame must also
parse with it to exactly the trades the simulator says it sent. Every wait has a deadline, and
`time_scale` shrinks 30 s heartbeat timeouts to 0.3 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import pairwise
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pumpwatch.sim import VENUE_IDS, Simulator, SimVenue
from pumpwatch.sim.venues import FAMILIES

pytestmark = pytest.mark.timeout(120)

KEYS = ("venue", "symbol", "trade_id", "price", "qty", "side", "ts_ns")
NON_TRADE, SNAPSHOT = 32, 128  # docs/FORMAT.md trade flags
BASES = ["BTC", "ETH"]
SERVER_PINGS = {"binance-spot", "binance-usdm", "gate-spot", "gate-futures"}


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def native(venue: str, base: str) -> str:
    return {
        "binance": f"{base}USDT",
        "bybit": f"{base}USDT",
        "gate": f"{base}_USDT",
        "okx": f"{base}-USDT-SWAP" if venue == "okx-swap" else f"{base}-USDT",
        "kucoin": (f"{'XBT' if base == 'BTC' else base}USDTM" if venue == "kucoin-futures" else f"{base}-USDT"),
        "phemex": f"{base}USDT" if venue == "phemex-perp" else f"s{base}USDT",
    }[venue.split("-")[0]]


# ---------------------------------------------------------------------------------------------
# The client side, from docs/VENUES.md


def subscribe_frames(venue: str, symbols: list[str]) -> list[str]:
    d = json.dumps
    family = venue.split("-")[0]
    if family == "binance":
        return [d({"method": "SUBSCRIBE", "params": [f"{s.lower()}@trade" for s in symbols], "id": 1})]
    if family == "bybit":
        return [d({"req_id": "test", "op": "subscribe", "args": [f"publicTrade.{s}" for s in symbols]})]
    if family == "okx":
        return [d({"id": "1512", "op": "subscribe", "args": [{"channel": "trades-all", "instId": s} for s in symbols]})]
    if venue == "kucoin-spot":
        return [
            d(
                {
                    "id": 1,
                    "type": "subscribe",
                    "topic": "/market/match:" + ",".join(symbols),
                    "privateChannel": False,
                    "response": True,
                }
            )
        ]
    if venue == "kucoin-futures":
        return [
            d(
                {
                    "id": "1",
                    "type": "subscribe",
                    "topic": "/contractMarket/execution:" + ",".join(symbols),
                    "response": True,
                }
            )
        ]
    if family == "gate":
        channel = "futures.trades" if venue == "gate-futures" else "spot.trades"
        return [d({"time": int(time.time()), "channel": channel, "event": "subscribe", "payload": symbols})]
    method = "trade_p.subscribe" if venue == "phemex-perp" else "trade.subscribe"  # one symbol per request
    return [d({"id": 1234 + i, "method": method, "params": [s]}) for i, s in enumerate(symbols)]


def ping_frame(venue: str) -> str | None:
    family = venue.split("-")[0]
    return {
        "bybit": '{"req_id":"100001","op":"ping"}',
        "okx": "ping",
        "kucoin": json.dumps({"id": str(int(time.time() * 1000)), "type": "ping"}),
        "gate": json.dumps({"time": int(time.time()), "channel": f"{venue.split('-')[1]}.ping"}),
        "phemex": '{"id":0,"method":"server.ping","params":[]}',
    }.get(family)


#: USDⓈ-M historicalTrades answers 401 (-2014) without a key; the simulator takes any (VENUES §2.3).
API_KEYS = {"binance-usdm": {"X-MBX-APIKEY": "test-key"}}


async def http(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, object]:
    """One HTTP/1.1 request to the simulator (127.0.0.1 only); JSON body decoded."""
    u = urlsplit(url)
    assert u.hostname == "127.0.0.1"
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    target = u.path + (f"?{u.query}" if u.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: 0\r\n{extra}\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    try:
        return status, hdrs, json.loads(body)
    except ValueError:
        return status, hdrs, body.decode()


async def open_ws(sim: SimVenue, path: str | None = None, **kw):
    """A client socket; on KuCoin through the bullet-public token handshake, welcome consumed."""
    url = sim.ws_url if path is None else sim.ws_origin + path
    if sim.venue_id.startswith("kucoin"):
        status, _, body = await http("POST", sim.rest_url + "/api/v1/bullet-public")
        assert status == 200 and body["code"] == "200000"
        server = body["data"]["instanceServers"][0]
        url = f"{server['endpoint']}?token={body['data']['token']}&connectId=test-1"
    if sim.venue_id == "gate-futures":  # a correct client asks for exact sizes (§8)
        kw.setdefault("additional_headers", {"X-Gate-Size-Decimal": "1"})
    ws = await connect(url, ping_interval=None, open_timeout=5, **kw)
    if sim.venue_id.startswith("kucoin"):
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"id": "test-1", "type": "welcome"}
    return ws


def reference_trades(venue: str, frame: str | bytes, snapshots: bool = False) -> list[dict] | None:
    """The trades of a frame by docs/VENUES.md's field meanings; None when it is not a trade frame."""
    try:
        d = json.loads(frame)
    except ValueError:
        return None
    family = venue.split("-")[0]

    def t(symbol, tid, price, qty, side, ts_ns):
        return dict(zip(KEYS, (venue, symbol, str(tid), price, qty, side, int(ts_ns)), strict=False))

    if not isinstance(d, dict):
        return None
    if family == "binance":
        p = d.get("data", d)
        if p.get("e") != "trade":
            return None
        if p["X"] == "NA" if "X" in p else False:
            return []  # spends a trade id, is not a trade (§2.2)
        return [t(p["s"], p["t"], p["p"], p["q"], "sell" if p["m"] else "buy", p["T"] * 10**6)]  # m: buyer is maker
    if family == "bybit":
        if "topic" not in d:
            return None
        return [t(r["s"], r["i"], r["p"], r["v"], r["S"].lower(), r["T"] * 10**6) for r in d["data"]]
    if family == "okx":
        if "data" not in d:
            return None
        return [t(r["instId"], r["tradeId"], r["px"], r["sz"], r["side"], int(r["ts"]) * 10**6) for r in d["data"]]
    if family == "kucoin":
        if d.get("type") != "message":
            return None
        r = d["data"]
        # KuCoin trades are keyed on `sequence` (REST rows carry only it; `tradeId` may be hex).
        return [
            t(r["symbol"], str(r["sequence"]), r["price"], str(r["size"]), r["side"], int(r.get("ts", r.get("time"))))
        ]
    if family == "gate":
        if d.get("event") != "update":
            return None
        out = []
        for r in d["result"] if isinstance(d["result"], list) else [d["result"]]:
            if "contract" in r:  # signed contracts: positive = taker buy (§8); a string with the size-decimal header
                size = str(r["size"])
                out.append(
                    t(
                        r["contract"],
                        r["id"],
                        r["price"],
                        size.lstrip("-"),
                        "sell" if size.startswith("-") else "buy",
                        r["create_time_ms"] * 10**6,
                    )
                )
            else:
                ms, _, frac = r["create_time_ms"].partition(".")
                out.append(
                    t(
                        r["currency_pair"],
                        r["id_market"],
                        r["price"],
                        r["amount"],
                        r["side"],
                        int(ms) * 10**6 + int(frac.ljust(6, "0")[:6]),
                    )
                )
        return out
    rows = d.get("trades", d.get("trades_p"))  # Phemex: [ts_ns, side, price, qty], no id (§9.2)
    if rows is None or (d["type"] == "snapshot" and not snapshots):
        return None if rows is None else []
    out = []
    for ts, side, p, q in rows:
        if isinstance(p, int):  # spot: scaled by 10^8
            p, q = f"{p // 10**8}.{p % 10**8:08d}", f"{q // 10**8}.{q % 10**8:08d}"
        out.append(t(d["symbol"], f"{ts}:{side[0].lower()}:{p}:{q}", p, q, side.lower(), ts))
    return out


def stream_trades(venue: str, frames: list) -> list[dict]:
    return [tr for f in frames for tr in (reference_trades(venue, f) or [])]


async def collect(ws, venue: str, *, trades: int = 0, seconds: float = 2.0, quiet: float | None = None) -> list:
    """Frames until `trades` trades arrived, `seconds` passed, or nothing came for `quiet` s."""
    frames: list = []
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (not trades or count < trades):
        try:
            f = await asyncio.wait_for(ws.recv(), min(quiet or 0.1, max(0.001, deadline - time.monotonic())))
        except TimeoutError:
            if quiet:
                break
            continue
        frames.append(f)
        count += len(reference_trades(venue, f) or [])
    return frames


def assert_contiguous(got: list[dict], sent: list[dict]) -> None:
    """`got` is a run of consecutive trades of `sent`, in the same order."""
    assert got, "no trades received"
    assert got[0] in sent, got[0]
    i = sent.index(got[0])
    assert got == sent[i : i + len(got)]


# ---------------------------------------------------------------------------------------------
# Each venue's stream is exactly what it says it sent


@dataclass
class Recording:
    frames: list
    sent: list[dict]
    symbols: list[str]


_RECORDINGS: dict[str, Recording] = {}


def recording(venue: str) -> Recording:
    """One session per venue (shared by the tests below): subscribe to BTC and ETH, read ~80 trades."""
    if venue not in _RECORDINGS:

        async def record() -> Recording:
            async with SimVenue(venue, seed=11, symbols=BASES, trades_per_s=400, backlog=250) as sim:
                symbols = [native(venue, b) for b in BASES]
                ws = await open_ws(sim)
                for f in subscribe_frames(venue, symbols):
                    await ws.send(f)
                frames = await collect(ws, venue, trades=80, seconds=3)
                await ws.close()
                return Recording(frames, sim.sent_trades(), symbols)

        _RECORDINGS[venue] = run(record())
    return _RECORDINGS[venue]


def assert_is_the_truth(venue: str, got: list[dict], rec: Recording) -> None:
    assert len(got) >= 40, f"only {len(got)} trades in {len(rec.frames)} frames"
    for s in rec.symbols:
        assert_contiguous([t for t in got if t["symbol"] == s], [t for t in rec.sent if t["symbol"] == s])
    if not venue.startswith("phemex"):  # one request subscribed every symbol: the interleaving holds too
        assert_contiguous(got, [t for t in rec.sent if t["symbol"] in rec.symbols])


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_stream_is_the_truth(venue):
    rec = recording(venue)
    assert_is_the_truth(venue, stream_trades(venue, rec.frames), rec)


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_purepy_parser_reads_the_truth(venue):
    parser = pytest.importorskip("pumpwatch.purepy.parse")
    rec = recording(venue)
    got, snapshot = [], []
    for f in rec.frames:
        result = parser.parse(venue, f.encode() if isinstance(f, str) else f)
        for t in result.trades:
            if not t["flags"] & NON_TRADE:
                (snapshot if t["flags"] & SNAPSHOT else got).append({k: t[k] for k in KEYS})
    assert_is_the_truth(venue, got, rec)
    if venue.startswith("phemex"):
        # Each (re)subscribe sends the 200 most recent trades, newest first, right before the
        # first incremental (§9.2).
        for s in rec.symbols:
            sent = [t for t in rec.sent if t["symbol"] == s]
            first = sent.index(next(t for t in got if t["symbol"] == s))
            assert [t for t in snapshot if t["symbol"] == s][::-1] == sent[first - 200 : first]


def test_phemex_snapshot_precedes_incrementals_and_comes_on_every_subscribe():
    async def go():
        async with SimVenue("phemex-perp", symbols=["BTC"], trades_per_s=200, backlog=300) as sim:
            ws = await open_ws(sim)
            snapshots = []
            for _ in range(2):  # subscribe, unsubscribe, subscribe again
                await ws.send('{"id":1,"method":"trade_p.subscribe","params":["BTCUSDT"]}')
                assert json.loads(await asyncio.wait_for(ws.recv(), 2)) == {
                    "error": None,
                    "id": 1,
                    "result": {"status": "success"},
                }
                snap = json.loads(await asyncio.wait_for(ws.recv(), 2))
                assert snap["type"] == "snapshot" and len(snap["trades_p"]) == 200
                snapshots.append(reference_trades("phemex-perp", json.dumps(snap), snapshots=True)[::-1])
                await asyncio.sleep(0.2)
                await ws.send('{"id":2,"method":"trade_p.unsubscribe","params":[]}')
                await collect(ws, "phemex-perp", seconds=0.5, quiet=0.1)
            sent = sim.sent_trades("BTCUSDT")
            for snap in snapshots:
                assert_contiguous(snap, sent)
            assert snapshots[0] != snapshots[1]
            await ws.send('{"id":3,"method":"trade_p.subscribe","params":["BTCUSDT","ETHUSDT"]}')  # one per request
            assert json.loads(await asyncio.wait_for(ws.recv(), 2))["error"] is not None

    run(go())


# ---------------------------------------------------------------------------------------------
# Protocol details


def test_binance_usdm_wrong_path_acks_then_stays_silent():
    async def go():
        async with SimVenue("binance-usdm", symbols=["BTC"], trades_per_s=300) as sim:
            # Legacy /ws and /stream deliver the /public streams; /market does not carry @trade (§12).
            for path, silent in (
                ("/market/stream", True),
                ("/market/ws", True),
                ("/stream", False),
                ("/ws", False),
                ("/public/stream", False),
            ):
                ws = await open_ws(sim, path)
                await ws.send(subscribe_frames("binance-usdm", ["BTCUSDT"])[0])
                assert json.loads(await asyncio.wait_for(ws.recv(), 2)) == {"result": None, "id": 1}
                frames = await collect(ws, "binance-usdm", seconds=0.4)
                assert (frames == []) == silent, path
                await ws.close()
            assert len(sim.sent_trades()) > 50

    run(go())


def test_binance_streams_in_url_and_usdm_na_records_keep_ids_whole():
    async def go():
        async with SimVenue("binance-usdm", symbols=["BTC"], trades_per_s=500) as sim:
            ws = await open_ws(sim, "/public/stream?streams=btcusdt@trade")  # no SUBSCRIBE needed
            frames = await collect(ws, "binance-usdm", trades=150, seconds=3)
            data = [json.loads(f)["data"] for f in frames]
            ids = [d["t"] for d in data]
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive counting X=NA frames
            na = [d for d in data if d["X"] == "NA"]
            assert na and all(d["p"] == "0" and d["q"] == "0" for d in na)
            sent_ids = {t["trade_id"] for t in sim.sent_trades()}
            assert not any(str(d["t"]) in sent_ids for d in na)  # not trades

    run(go())


def test_binance_cuts_a_client_over_its_message_rate():
    async def go():
        async with SimVenue("binance-spot", trades_per_s=0) as sim:
            ws = await open_ws(sim)
            for i in range(8):  # 5 incoming messages per second allowed (§1.1)
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 2)
            assert closed.value.rcvd.code == 1008

    run(go())


def test_bybit_ack_shapes_and_spot_args_limit():
    async def go():
        async with (
            SimVenue("bybit-spot", symbols=[f"C{i}" for i in range(11)], trades_per_s=0) as spot,
            SimVenue("bybit-linear", symbols=[f"C{i}" for i in range(11)], trades_per_s=0) as linear,
        ):
            topics = [f"publicTrade.C{i}USDT" for i in range(11)]
            ws = await open_ws(spot)
            await ws.send(json.dumps({"op": "subscribe", "args": topics}))
            error = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert error["success"] is False and error["op"] == "subscribe" and "req_id" not in error
            await ws.send(json.dumps({"op": "subscribe", "args": topics[:10]}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert (
                list(ack) == ["success", "ret_msg", "conn_id", "op"]
                and ack["success"]
                and ack["ret_msg"] == "subscribe"
            )
            await ws.send('{"op":"ping"}')
            pong = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert pong == {"success": True, "ret_msg": "pong", "conn_id": ack["conn_id"], "op": "ping"}
            ws2 = await open_ws(linear)
            await ws2.send(json.dumps({"op": "subscribe", "args": topics}))  # linear: no args limit
            ack = json.loads(await asyncio.wait_for(ws2.recv(), 2))
            assert (
                list(ack) == ["success", "ret_msg", "conn_id", "req_id", "op"]
                and ack["success"]
                and ack["req_id"] == ""
            )
            await ws2.send(json.dumps({"op": "subscribe", "args": ["publicTrade.NOPEUSDT"]}))
            assert json.loads(await asyncio.wait_for(ws2.recv(), 2))["success"] is False

    run(go())


def test_okx_channels_paths_and_aggregated_count():
    async def go():
        async with SimVenue("okx-spot", symbols=["BTC"], trades_per_s=600) as sim:
            ws = await open_ws(sim, "/ws/v5/public")
            await ws.send('{"id":"7","op":"subscribe","args":[{"channel":"trades-all","instId":"BTC-USDT"}]}')
            error = json.loads(await asyncio.wait_for(ws.recv(), 2))  # trades-all lives on /business
            assert error["event"] == "error" and error["code"] == "60018" and error["id"] == "7"
            await ws.send('{"id":"8","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}')
            ack = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert ack == {
                "id": "8",
                "event": "subscribe",
                "arg": {"channel": "trades", "instId": "BTC-USDT"},
                "connId": ack["connId"],
            }
            frames = await collect(ws, "okx-spot", trades=100, seconds=3)
            rows = [json.loads(f)["data"][0] for f in frames]
            # Aggregated: tradeId is the last id of `count` fills, so prev + count == tradeId (§4.2).
            for prev, row in pairwise(rows):
                assert int(prev["tradeId"]) + int(row["count"]) == int(row["tradeId"])
            assert any(int(r["count"]) > 1 for r in rows)
            assert_contiguous(stream_trades("okx-spot", frames), sim.sent_trades(channel="trades"))
            await ws.send("ping")
            assert "pong" in await collect(ws, "okx-spot", seconds=1, quiet=0.2)

    run(go())


def test_kucoin_socket_needs_a_bullet_token():
    async def go():
        async with SimVenue("kucoin-spot", trades_per_s=0, time_scale=0.5) as sim:
            _, _, body = await http("POST", sim.rest_url + "/api/v1/bullet-public")
            server = body["data"]["instanceServers"][0]
            assert server["endpoint"] == sim.ws_origin + "/"
            assert (server["pingInterval"], server["pingTimeout"]) == (9000, 5000)  # 18 s / 10 s, scaled
            ws = await connect(sim.ws_origin + "/?token=forged&connectId=c1", ping_interval=None)
            assert json.loads(await asyncio.wait_for(ws.recv(), 2)) == {
                "id": "c1",
                "type": "error",
                "code": 401,
                "data": "token is invalid",
            }
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)

    run(go())


def test_gate_acks_and_decimal_sizes():
    async def go():
        async with SimVenue("gate-futures", symbols=["BTC"], trades_per_s=300) as sim:
            ws = await open_ws(sim, additional_headers={"X-Gate-Size-Decimal": "1"})
            await ws.send(
                json.dumps(
                    {
                        "time": int(time.time()),
                        "id": 5,
                        "channel": "futures.trades",
                        "event": "subscribe",
                        "payload": ["BTC_USDT"],
                    }
                )
            )
            ack = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert (
                ack["event"] == "subscribe"
                and ack["result"] == {"status": "success"}
                and ack["error"] is None
                and ack["id"] == 5
            )
            frames = await collect(ws, "gate-futures", trades=10, seconds=2)
            assert all(isinstance(r["size"], str) for f in frames for r in json.loads(f)["result"])
            await ws.send(
                json.dumps(
                    {
                        "time": int(time.time()),
                        "channel": "futures.trades",
                        "event": "subscribe",
                        "payload": ["NOPE_USDT"],
                    }
                )
            )
            replies = [
                json.loads(f)
                for f in await collect(ws, "gate-futures", seconds=1, quiet=0.3)
                if '"event":"subscribe"' in f
            ]
            assert replies and replies[0]["error"]["code"] == 2 and replies[0]["result"] == {"status": "fail"}

    run(go())


# ---------------------------------------------------------------------------------------------
# Heartbeats: a silent client is cut after the (scaled) timeout, a heartbeating one is not


def scale_for(venue: str, seconds: float = 0.3) -> float:
    return seconds / FAMILIES[venue].heartbeat.cut_after()


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_silent_client_is_cut(venue):
    async def go():
        async with SimVenue(venue, time_scale=scale_for(venue), trades_per_s=0) as sim:
            ws = await open_ws(sim)
            if venue in SERVER_PINGS:
                ws.transport.pause_reading()  # no pong goes back
            t0 = time.monotonic()
            while sim.client_count and time.monotonic() < t0 + 5 * sim.heartbeat_timeout:
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - t0
            assert sim.client_count == 0, "still connected"
            assert elapsed >= 0.8 * sim.heartbeat_timeout, f"cut after {elapsed:.3f} s, before the timeout"
            ws.transport.abort()

    run(go())


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_heartbeating_client_stays(venue):
    async def go():
        async with SimVenue(venue, time_scale=scale_for(venue), trades_per_s=0) as sim:
            ws = await open_ws(sim)
            drain = asyncio.get_running_loop().create_task(collect(ws, venue, seconds=10))
            end = time.monotonic() + 3 * sim.heartbeat_timeout
            while time.monotonic() < end:
                frame = ping_frame(venue)  # None: the server pings and the library pongs
                if frame is not None:
                    await ws.send(frame)
                await asyncio.sleep(sim.heartbeat_timeout / 5)
            assert sim.client_count == 1 and ws.state is State.OPEN
            drain.cancel()
            await ws.close()

    run(go())


def test_gate_app_ping_stands_in_for_pongs_and_phemex_takes_ws_pings():
    async def go():
        async with (
            SimVenue("gate-spot", time_scale=scale_for("gate-spot"), trades_per_s=0) as gate,
            SimVenue("phemex-spot", time_scale=scale_for("phemex-spot"), trades_per_s=0) as phemex,
        ):
            g = await open_ws(gate)
            g.transport.pause_reading()  # no protocol pongs at all, only spot.ping (§7.1)
            p = await open_ws(phemex)
            end = time.monotonic() + 3 * max(gate.heartbeat_timeout, phemex.heartbeat_timeout)
            while time.monotonic() < end:
                await g.send(ping_frame("gate-spot"))
                await p.ping()  # a WS-level ping is a heartbeat too (§9.1)
                await asyncio.sleep(0.05)
            assert gate.client_count == 1 and phemex.client_count == 1
            g.transport.abort()

    run(go())


def test_binance_connection_lifetime():
    async def go():
        # The lifetime alone is scaled: with every timer scaled the 1-minute pong deadline became
        # 0.35 ms, and a busy machine's pong missed it (a cut for "pong timeout", before the day).
        async with SimVenue("binance-spot", lifetime_scale=0.5 / 86_400, trades_per_s=0) as sim:
            t0 = time.monotonic()  # before the handshake: the venue's clock starts at its accept
            ws = await open_ws(sim)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 3)
            assert 0.45 < time.monotonic() - t0 < 2.0  # 24 h scaled to 0.5 s
            assert closed.value.rcvd is not None and closed.value.rcvd.reason == sim.protocol.lifetime_close_reason

    run(go())


@pytest.mark.parametrize(
    "venue, notice",
    [("binance-spot", {"stream": "!serverShutdown"}), ("okx-spot", {"event": "notice", "code": "64008"})],
)
def test_shutdown_notice_then_disconnect(venue, notice):
    async def go():
        async with SimVenue(venue, trades_per_s=0, time_scale=0.01) as sim:
            ws = await open_ws(sim)
            sim.announce_shutdown(grace_s=30)  # 0.3 s scaled
            msg = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert notice.items() <= msg.items()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)

    run(go())


# ---------------------------------------------------------------------------------------------
# REST: instrument lists, backfill reach and limits, rate limits

INSTRUMENTS = {
    "binance-spot": ("/api/v3/exchangeInfo", lambda b: [s["symbol"] for s in b["symbols"]]),
    "binance-usdm": ("/fapi/v1/exchangeInfo", lambda b: [s["symbol"] for s in b["symbols"]]),
    "bybit-spot": ("/v5/market/instruments-info?category=spot", lambda b: [s["symbol"] for s in b["result"]["list"]]),
    "bybit-linear": (
        "/v5/market/instruments-info?category=linear",
        lambda b: [s["symbol"] for s in b["result"]["list"]],
    ),
    "okx-spot": ("/api/v5/public/instruments?instType=SPOT", lambda b: [s["instId"] for s in b["data"]]),
    "okx-swap": ("/api/v5/public/instruments?instType=SWAP", lambda b: [s["instId"] for s in b["data"]]),
    "kucoin-spot": ("/api/v2/symbols", lambda b: [s["symbol"] for s in b["data"]]),
    "kucoin-futures": ("/api/v1/contracts/active", lambda b: [s["symbol"] for s in b["data"]]),
    "gate-spot": ("/api/v4/spot/currency_pairs", lambda b: [s["id"] for s in b]),
    "gate-futures": ("/api/v4/futures/usdt/contracts", lambda b: [s["name"] for s in b]),
    "phemex-spot": ("/public/products", lambda b: [s["symbol"] for s in b["data"]["products"]]),
    "phemex-perp": ("/public/products", lambda b: [s["symbol"] for s in b["data"]["perpProductsV2"]]),
}

# venue: (request for more than the venue serves, the most it serves, rows, id of a row)
BACKFILL = {
    "binance-spot": ("/api/v3/historicalTrades?symbol=BTCUSDT&limit=5000", 1000, lambda b: b, lambda r: r["id"]),
    "binance-usdm": ("/fapi/v1/historicalTrades?symbol=BTCUSDT&limit=5000", 500, lambda b: b, lambda r: r["id"]),
    "bybit-spot": (
        "/v5/market/recent-trade?category=spot&symbol=BTCUSDT&limit=1000",
        60,
        lambda b: b["result"]["list"],
        lambda r: r["execId"],
    ),
    "bybit-linear": (
        "/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=5000",
        1000,
        lambda b: b["result"]["list"],
        lambda r: r["execId"],
    ),
    "okx-spot": (
        "/api/v5/market/history-trades?instId=BTC-USDT&limit=500",
        100,
        lambda b: b["data"],
        lambda r: r["tradeId"],
    ),
    "okx-swap": (
        "/api/v5/market/history-trades?instId=BTC-USDT-SWAP&limit=500",
        100,
        lambda b: b["data"],
        lambda r: r["tradeId"],
    ),
    "kucoin-spot": ("/api/v1/market/histories?symbol=BTC-USDT", 100, lambda b: b["data"], lambda r: r["sequence"]),
    "kucoin-futures": ("/api/v1/trade/history?symbol=XBTUSDTM", 100, lambda b: b["data"], lambda r: str(r["sequence"])),
    "gate-spot": (
        "/api/v4/spot/trades?currency_pair=BTC_USDT&limit=5000",
        1000,
        lambda b: b,
        lambda r: r["sequence_id"],
    ),
    "gate-futures": ("/api/v4/futures/usdt/trades?contract=BTC_USDT&limit=5000", 1000, lambda b: b, lambda r: r["id"]),
    "phemex-spot": ("/md/trade?symbol=sBTCUSDT", 200, lambda b: b["result"]["trades"], lambda r: r[0]),
    "phemex-perp": ("/md/v2/trade?symbol=BTCUSDT", 200, lambda b: b["result"]["trades_p"], lambda r: r[0]),
}


def fill_key(venue: str, f) -> str:
    """What a REST row of `venue` identifies a fill by (KuCoin spot REST has no tradeId)."""
    if venue.startswith("kucoin"):
        return str(f.extra["sequence"])
    if venue.startswith("phemex"):
        return str(f.ts_ns)
    return str(f.trade_id)


@pytest.mark.parametrize("venue", VENUE_IDS)
def test_rest_serves_the_latest_trades_up_to_the_documented_limit(venue):
    path, most, rows_of, id_of = BACKFILL[venue]

    async def go():
        async with SimVenue(venue, symbols=["BTC"], trades_per_s=0, backlog=1100) as sim:
            status, _, body = await http("GET", sim.rest_url + path, API_KEYS.get(venue))
            assert status == 200, body
            rows = rows_of(body)
            fills = [f for f in sim.history(native(venue, "BTC")) if not f.placeholder]
            assert len(fills) > most and len(rows) == most
            assert {str(id_of(r)) for r in rows} == {fill_key(venue, f) for f in fills[-most:]}
            listed = INSTRUMENTS[venue][1]((await http("GET", sim.rest_url + INSTRUMENTS[venue][0]))[2])
            assert listed == [native(venue, "BTC")]

    run(go())


def test_rest_paging_by_id_and_time():
    async def go():
        async with (
            SimVenue("binance-usdm", symbols=["BTC"], trades_per_s=0, backlog=700) as usdm,
            SimVenue("okx-spot", symbols=["BTC"], trades_per_s=0, backlog=300) as okx,
            SimVenue("gate-spot", symbols=["BTC"], trades_per_s=0, backlog=300) as gate,
        ):
            # Binance fromId pages forwards; USDⓈ-M REST has market trades only: X=NA ids are holes.
            history = usdm.history("BTCUSDT")
            first = history[0].num_id
            _, _, rows = await http(
                "GET",
                usdm.rest_url + f"/fapi/v1/historicalTrades?symbol=BTCUSDT&fromId={first}&limit=500",
                API_KEYS["binance-usdm"],
            )
            assert [r["id"] for r in rows] == [f.num_id for f in history if not f.placeholder][:500]
            spent = {f.num_id for f in history if f.placeholder}
            assert spent and spent & set(range(rows[0]["id"], rows[-1]["id"])) and not spent & {r["id"] for r in rows}
            # OKX `after` walks back: ids older than it, newest first.
            last = int(okx.history("BTC-USDT")[-1].trade_id)
            _, _, body = await http(
                "GET", okx.rest_url + f"/api/v5/market/history-trades?instId=BTC-USDT&after={last - 10}&limit=100"
            )
            assert [int(r["tradeId"]) for r in body["data"]] == list(range(last - 11, last - 111, -1))
            # Gate spot from/to in seconds; rows per fill with the per-market sequence_id.
            fills = gate.history("BTC_USDT")
            frm, to = fills[50].ts_ns // 10**9, fills[200].ts_ns // 10**9
            _, _, rows = await http(
                "GET", gate.rest_url + f"/api/v4/spot/trades?currency_pair=BTC_USDT&from={frm}&to={to}&limit=1000"
            )
            want = [f for f in fills if frm <= f.ts_ns // 10**9 <= to][::-1]
            assert [r["sequence_id"] for r in rows] == [f.trade_id for f in want]
            status, _, _ = await http(
                "GET", gate.rest_url + "/api/v4/spot/trades?currency_pair=BTC_USDT&limit=1000&page=102"
            )
            assert status == 400  # limit * (page - 1) <= 100000 (§7.3)

    run(go())


@pytest.mark.parametrize(
    "venue, path, allowed, status",
    [
        ("okx-spot", "/api/v5/market/history-trades?instId=BTC-USDT", 20, 429),  # 20 requests / 2 s
        ("gate-futures", "/api/v4/futures/usdt/trades?contract=BTC_USDT&limit=1", 200, 429),  # 200 / 10 s per endpoint
        ("binance-usdm", "/fapi/v1/historicalTrades?symbol=BTCUSDT&limit=1", 120, 429),  # weight 20 of 2400 / min
        ("bybit-spot", "/v5/market/recent-trade?category=spot&symbol=BTCUSDT&limit=1", 600, 403),  # 600 / 5 s: 403
    ],
)
def test_rest_rate_limit(venue, path, allowed, status):
    async def go():
        async with SimVenue(venue, symbols=["BTC"], trades_per_s=0, backlog=5) as sim:
            # The buckets' clock stands still while the requests run (on a busy machine they take
            # longer than the bucket takes to refill), so the refusal comes right after `allowed`.
            now = [time.monotonic()]
            for bucket in sim._buckets.values():
                bucket.clock, bucket.stamp = (lambda: now[0]), now[0]
            statuses = []
            while len(statuses) < allowed * 1.5 and status not in statuses:
                statuses.append((await http("GET", sim.rest_url + path, API_KEYS.get(venue)))[0])
            assert statuses.index(status) == allowed and set(statuses[:-1]) == {200}
            # A whole period later the bucket is full again.
            now[0] += max(b.capacity / b.rate for b in sim._buckets.values())
            assert (await http("GET", sim.rest_url + path, API_KEYS.get(venue)))[0] == 200

    run(go())


def test_scheduled_listing_appears_and_trades():
    async def go():
        async with SimVenue("okx-spot", symbols=["BTC"], trades_per_s=50) as sim:
            path, ids_of = INSTRUMENTS["okx-spot"]
            sim.schedule_listing("ZZ", time.time_ns() + 300_000_000, pump=2.0)
            assert ids_of((await http("GET", sim.rest_url + path))[2]) == ["BTC-USDT"]
            ws = await open_ws(sim)
            await ws.send(subscribe_frames("okx-spot", ["ZZ-USDT"])[0])
            assert json.loads(await asyncio.wait_for(ws.recv(), 2))["code"] == "60018"  # not listed yet
            await asyncio.sleep(0.4)
            assert ids_of((await http("GET", sim.rest_url + path))[2]) == ["BTC-USDT", "ZZ-USDT"]
            await ws.send(subscribe_frames("okx-spot", ["ZZ-USDT"])[0])
            frames = await collect(ws, "okx-spot", trades=20, seconds=3)
            assert len(stream_trades("okx-spot", frames)) >= 20  # pumping: several times the usual rate

    run(go())


# ---------------------------------------------------------------------------------------------
# Faults


async def subscribed(sim: SimVenue, symbols: list[str]) -> tuple:
    """A subscribed socket and its first frames (acks, snapshots, at least 10 trades)."""
    ws = await open_ws(sim)
    for f in subscribe_frames(sim.venue_id, symbols):
        await ws.send(f)
    return ws, await collect(ws, sim.venue_id, trades=10, seconds=3)


FAULT_VENUES = ["binance-usdm", "bybit-linear", "gate-spot", "phemex-spot"]


@pytest.mark.parametrize("venue", FAULT_VENUES)
def test_dropped_frames_are_missing_and_withheld(venue):
    async def go():
        async with SimVenue(venue, symbols=["BTC"], trades_per_s=300) as sim:
            ws, before = await subscribed(sim, [native(venue, "BTC")])
            sim.drop_frames(3)
            got = stream_trades(venue, before + await collect(ws, venue, trades=60, seconds=3))
            withheld = sim.withheld_trades()
            assert withheld and not any(t in got for t in withheld)
            sent = sim.sent_trades()
            merged = sorted(got + withheld, key=sent.index)
            assert_contiguous(merged, sent)
            assert merged[0] == got[0]  # the hole is inside what was received

    run(go())


@pytest.mark.parametrize("venue", FAULT_VENUES)
def test_duplicated_frames_arrive_twice(venue):
    async def go():
        async with SimVenue(venue, symbols=["BTC"], trades_per_s=300) as sim:
            ws, _ = await subscribed(sim, [native(venue, "BTC")])
            sim.duplicate_frames(3)
            frames = await collect(ws, venue, trades=60, seconds=3)
            trade_frames = [f for f in frames if reference_trades(venue, f)]
            assert sum(a == b for a, b in pairwise(trade_frames)) == 3
            unique = [f for i, f in enumerate(trade_frames) if i == 0 or f != trade_frames[i - 1]]
            assert_contiguous(stream_trades(venue, unique), sim.sent_trades())

    run(go())


def test_malformed_frames_are_broken_and_the_rest_is_intact():
    async def go():
        async with SimVenue("bybit-spot", symbols=["BTC"], trades_per_s=300) as sim:
            ws, _ = await subscribed(sim, ["BTCUSDT"])
            sim.malformed_frames(3)
            frames = await collect(ws, "bybit-spot", trades=60, seconds=3)
            bad = sim.malformed_sent
            assert len(bad) == 3 and [type(b) for b in bad] == [str, str, bytes]
            assert [f for f in frames if f in bad] == bad
            with pytest.raises(ValueError):
                json.loads(bad[0])  # truncated
            assert isinstance(json.loads(bad[1])["data"][0]["p"], list)  # price of the wrong type
            with pytest.raises(UnicodeDecodeError):
                bad[2].decode("utf-8")
            assert_contiguous(stream_trades("bybit-spot", [f for f in frames if f not in bad]), sim.sent_trades())
            try:
                parser = __import__("pumpwatch.purepy.parse", fromlist=["parse"])
            except ImportError:
                return
            for b in bad:
                with pytest.raises(ValueError):  # FrameError is a ValueError
                    parser.parse("bybit-spot", b.encode() if isinstance(b, str) else b)

    run(go())


def test_stall_sends_nothing_while_trades_go_on():
    async def go():
        async with SimVenue("okx-swap", symbols=["BTC"], trades_per_s=300) as sim:
            ws, before = await subscribed(sim, ["BTC-USDT-SWAP"])
            sim.stall(0.4)
            t0 = time.monotonic()
            during = await collect(ws, "okx-swap", seconds=0.35)  # only what was on the wire already
            after = await collect(ws, "okx-swap", trades=30, seconds=2)
            assert time.monotonic() - t0 >= 0.4 and after
            withheld = sim.withheld_trades()
            assert len(withheld) > 10  # happened, recorded as sent, never delivered
            sent = sim.sent_trades()
            early = stream_trades("okx-swap", before + during)
            assert_contiguous(early + withheld + stream_trades("okx-swap", after), sent)

    run(go())


def test_stall_mutes_acks_and_pongs_too():
    async def go():
        async with SimVenue("okx-spot", symbols=["BTC"], trades_per_s=0) as sim:
            ws = await open_ws(sim)
            sim.stall(0.3)
            await ws.send("ping")
            await ws.send(subscribe_frames("okx-spot", ["BTC-USDT"])[0])
            assert await collect(ws, "okx-spot", seconds=0.25) == []
            await asyncio.sleep(0.1)  # the stall is over
            await ws.send("ping")
            assert await collect(ws, "okx-spot", seconds=0.5, quiet=0.2) == ["pong"]

    run(go())


def test_disconnect_all_drops_every_socket_abruptly():
    async def go():
        async with SimVenue("kucoin-futures", symbols=["BTC"], trades_per_s=100) as sim:
            sockets = [(await subscribed(sim, ["XBTUSDTM"]))[0] for _ in range(2)]
            sim.disconnect_all()
            for ws in sockets:
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 2)
                assert closed.value.rcvd is None  # no closing handshake
            assert sim.client_count == 0

    run(go())


def test_burst_multiplies_the_rate():
    async def go():
        async with SimVenue("gate-futures", symbols=["BTC"], trades_per_s=40) as sim:
            await asyncio.sleep(0.5)
            normal = len(sim.sent_trades())
            sim.burst(20, 0.5)
            await asyncio.sleep(0.5)
            burst = len(sim.sent_trades()) - normal
            assert burst > 5 * max(normal, 5)

    run(go())


# ---------------------------------------------------------------------------------------------
# Determinism, the simulator of all twelve, the command line


def test_same_seed_same_trades():
    async def tape(venue: str, seed: int) -> list[tuple]:
        async with SimVenue(venue, seed=seed, trades_per_s=0, backlog=200) as sim:
            # Timestamps are wall-clock (and Phemex ids are made of them): compare the rest.
            return [
                (t["symbol"], t["price"], t["qty"], t["side"])
                + ((t["trade_id"],) if not venue.startswith("phemex") else ())
                for t in sim.sent_trades()
            ]

    async def go():
        for venue in VENUE_IDS:
            a, b, c = await tape(venue, 3), await tape(venue, 3), await tape(venue, 4)
            assert len(a) >= 150 and a == b, venue
            assert a != c, venue

    run(go())


def test_simulator_serves_all_twelve_on_localhost():
    async def go():
        async with Simulator(seed=1, trades_per_s=5) as sim:
            urls = sim.urls()
            assert list(urls) == list(VENUE_IDS)
            ports = {urlsplit(u["rest_url"]).port for u in urls.values()}
            assert len(ports) == 12
            for venue, u in urls.items():
                assert urlsplit(u["ws_url"]).hostname == urlsplit(u["rest_url"]).hostname == "127.0.0.1"
                status, _, body = await http("GET", u["rest_url"] + INSTRUMENTS[venue][0])
                assert status == 200 and len(INSTRUMENTS[venue][1](body)) == 4

    run(go())


def test_command_line_prints_urls_and_stops():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run(
        [sys.executable, "-m", "pumpwatch.sim", "--venues", "okx-spot,phemex-perp", "--duration", "0.3"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    urls = json.loads(out.stdout.splitlines()[0])
    assert list(urls) == ["okx-spot", "phemex-perp"]
    assert urls["okx-spot"]["ws_url"].endswith("/ws/v5/business")
