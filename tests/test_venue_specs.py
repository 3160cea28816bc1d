"""Venue specifications (pumpwatch.venues): subscribe frames within every documented limit, URLs,
the KuCoin token handshake, instrument lists and REST backfill, checked against the shapes
docs/VENUES.md documents. No test reaches the network: the one HTTP call goes to a fake."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

import pumpwatch
from pumpwatch import venues
from pumpwatch.errors import InvalidInputError
from pumpwatch.venues import SPECS, HttpRequest, VenueAnswerError

BACKFILL = pumpwatch.FLAGS["BACKFILL"]


# ---------------------------------------------------------------------------------------------
# Registry and the documented numbers


def test_registry_has_the_twelve_venue_ids_in_log_order():
    assert list(SPECS) == list(pumpwatch.VENUES)
    for venue_id, spec in SPECS.items():
        assert spec.id == venue_id
        assert spec.kind == ("spot" if venue_id.endswith("spot") else "perp")
        assert venue_id.startswith(spec.exchange)


def test_get_unknown_venue_lists_the_valid_ids():
    assert venues.get("okx-swap") is SPECS["okx-swap"]
    with pytest.raises(InvalidInputError) as err:
        venues.get("binance")
    for venue_id in pumpwatch.VENUES:
        assert venue_id in str(err.value)


# venue: (streams/connection, topics/subscribe, client messages/s, lifetime s)
LIMITS = {
    "binance-spot": (1024, 100, 5, 86_400),
    "binance-usdm": (1024, 100, 10, 86_400),
    "bybit-spot": (200, 10, None, None),
    "bybit-linear": (200, None, None, None),
    "okx-spot": (200, None, None, None),
    "okx-swap": (200, None, None, None),
    "kucoin-spot": (400, 100, 10, 86_400),  # the token's reported ~24 h (third party)
    "kucoin-futures": (400, 100, 10, 86_400),
    "gate-spot": (200, 100, None, None),
    "gate-futures": (200, 100, None, None),
    "phemex-spot": (20, 1, 20, None),
    "phemex-perp": (20, 1, 20, None),
}


@pytest.mark.parametrize("venue_id", list(LIMITS))
def test_documented_limits(venue_id):
    spec = SPECS[venue_id]
    streams, topics, messages, lifetime = LIMITS[venue_id]
    assert spec.max_streams_per_connection == streams
    assert spec.max_topics_per_subscribe == topics
    assert spec.max_client_messages_per_s == messages
    assert spec.connection_lifetime_s == lifetime
    assert spec.max_subscribe_bytes == (65_536 if spec.exchange == "okx" else None)
    assert spec.max_subscription_chars_per_connection == (21_000 if spec.exchange == "bybit" else None)
    assert spec.subscribe_after_welcome == (spec.exchange == "kucoin")


# venue: (who pings, interval s, timeout s)
HEARTBEATS = {
    "binance-spot": ("server", 20, 60),
    "binance-usdm": ("server", 180, 600),
    "bybit-spot": ("client", 20, 10),
    "bybit-linear": ("client", 20, 10),
    "okx-spot": ("client", 15, 10),
    "okx-swap": ("client", 15, 10),
    "kucoin-spot": ("client", 18, 10),
    "kucoin-futures": ("client", 18, 10),
    "gate-spot": ("client", 10, 10),
    "gate-futures": ("client", 10, 10),
    "phemex-spot": ("client", 5, 15),
    "phemex-perp": ("client", 5, 15),
}


@pytest.mark.parametrize("venue_id", list(HEARTBEATS))
def test_heartbeat_rules_and_ping_frames(venue_id):
    spec = SPECS[venue_id]
    rule = spec.heartbeat
    assert (rule.who, rule.interval_s, rule.timeout_s) == HEARTBEATS[venue_id]
    frame = spec.ping_frame()
    if rule.who == "server":  # protocol-level ping/pong, answered by the websockets library
        assert frame is None and rule.ping_frame is None and rule.pong_frame is None
        return
    assert rule.interval_s + rule.timeout_s <= (30 if spec.exchange in ("okx", "phemex") else 600)
    if spec.exchange == "okx":
        assert frame == "ping" and rule.pong_frame == "pong"
        return
    ping = json.loads(frame)
    now = time.time()
    if spec.exchange == "bybit":
        assert ping == {"op": "ping"}
    elif spec.exchange == "kucoin":
        assert ping["type"] == "ping" and abs(int(ping["id"]) / 1000 - now) < 5
    elif spec.exchange == "gate":
        assert ping["channel"] == ("spot.ping" if spec.kind == "spot" else "futures.ping")
        assert abs(ping["time"] - now) < 5
    else:
        assert ping == {"id": 0, "method": "server.ping", "params": []}


# venue: (reach, rows per request, max age s, requests/s)
BACKFILLS = {
    "binance-spot": ("by_id", 1000, None, 4.0),
    "binance-usdm": ("by_id", 500, 90 * 86_400, 2.0),
    "bybit-spot": ("recent_only", 60, None, 120.0),
    "bybit-linear": ("recent_only", 1000, None, 120.0),
    "okx-spot": ("by_id_backwards", 100, 90 * 86_400, 10.0),
    "okx-swap": ("by_id_backwards", 100, 90 * 86_400, 10.0),
    "kucoin-spot": ("recent_only", 100, None, pytest.approx(22.22, abs=0.01)),
    "kucoin-futures": ("recent_only", 100, None, pytest.approx(13.33, abs=0.01)),
    "gate-spot": ("by_time", 1000, 30 * 86_400, 20.0),
    "gate-futures": ("by_time", 1000, None, 20.0),
    "phemex-spot": ("recent_only", 200, None, pytest.approx(16.67, abs=0.01)),
    "phemex-perp": ("recent_only", 200, None, pytest.approx(16.67, abs=0.01)),
}


@pytest.mark.parametrize("venue_id", list(BACKFILLS))
def test_backfill_rules(venue_id):
    rule = SPECS[venue_id].backfill
    assert (rule.reach, rule.max_rows, rule.max_age_s, rule.requests_per_s) == BACKFILLS[venue_id]


# ---------------------------------------------------------------------------------------------
# Subscribe frames for a big universe


def native_symbol(venue_id: str, base: str) -> str:
    return {
        "binance-spot": f"{base}USDT",
        "binance-usdm": f"{base}USDT",
        "bybit-spot": f"{base}USDT",
        "bybit-linear": f"{base}USDT",
        "okx-spot": f"{base}-USDT",
        "okx-swap": f"{base}-USDT-SWAP",
        "kucoin-spot": f"{base}-USDT",
        "kucoin-futures": f"{base}USDTM",
        "gate-spot": f"{base}_USDT",
        "gate-futures": f"{base}_USDT",
        "phemex-spot": f"s{base}USDT",
        "phemex-perp": f"{base}USDT",
    }[venue_id]


def universe(venue_id: str, n: int) -> list[str]:
    # every seventh a long 1000000-prefixed name, so byte and character budgets are exercised
    return [native_symbol(venue_id, f"1000000LONGCOIN{i}" if i % 7 == 0 else f"C{i}") for i in range(n)]


def read_frame(spec, frame: str) -> tuple[str, str, list[str]]:
    """(op, request id, symbols) of one frame, read back the way the venue would."""
    m = json.loads(frame)
    if spec.exchange == "binance":
        assert all(p == p.lower() and p.endswith("@trade") for p in m["params"])
        return m["method"].lower(), str(m["id"]), [p.removesuffix("@trade").upper() for p in m["params"]]
    if spec.exchange == "bybit":
        assert all(a.startswith("publicTrade.") for a in m["args"])
        return m["op"], m["req_id"], [a.removeprefix("publicTrade.") for a in m["args"]]
    if spec.exchange == "okx":
        assert all(a["channel"] == "trades-all" for a in m["args"])
        return m["op"], m["id"], [a["instId"] for a in m["args"]]
    if spec.exchange == "kucoin":
        prefix, _, joined = m["topic"].partition(":")
        assert prefix == ("/market/match" if spec.kind == "spot" else "/contractMarket/execution")
        assert m["response"] is True and m["privateChannel"] is False
        return m["type"], str(m["id"]), joined.split(",")
    if spec.exchange == "gate":
        assert m["channel"] == f"{'spot' if spec.kind == 'spot' else 'futures'}.trades"
        assert abs(m["time"] - time.time()) < 5
        return m["event"], str(m["id"]), m["payload"]
    channel, _, op = m["method"].partition(".")
    assert channel == ("trade" if spec.kind == "spot" else "trade_p")
    return op, str(m["id"]), m["params"]


@pytest.mark.parametrize("op", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("venue_id", list(SPECS))
def test_frames_for_2500_symbols_respect_every_limit_and_cover_each_once(venue_id, op):
    spec = SPECS[venue_id]
    symbols = universe(venue_id, 2500)
    shards = spec.shard(symbols)
    assert len(shards) == math.ceil(2500 / spec.max_streams_per_connection)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # even load across connections
    seen: list[str] = []
    for shard in shards:
        assert len(shard) <= spec.max_streams_per_connection
        make = spec.subscribe_frames if op == "subscribe" else spec.unsubscribe_frames
        frames = make(shard, first_request_id=7)
        on_connection = []
        for i, frame in enumerate(frames):
            frame_op, request_id, frame_symbols = read_frame(spec, frame)
            assert frame_op == op
            assert request_id == str(7 + i)
            if spec.max_topics_per_subscribe is not None:
                assert len(frame_symbols) <= spec.max_topics_per_subscribe
            if spec.max_subscribe_bytes is not None:
                assert len(frame.encode()) <= spec.max_subscribe_bytes
            on_connection += frame_symbols
        assert on_connection == shard  # frames keep the shard's order and drop nothing
        if spec.max_subscription_chars_per_connection is not None:
            args_chars = sum(len(json.dumps(f"publicTrade.{s}")) + 1 for s in shard)
            assert args_chars <= spec.max_subscription_chars_per_connection
        seen += on_connection
    assert sorted(seen) == sorted(symbols) and len(seen) == len(set(seen))


def test_frame_counts_follow_the_per_message_caps():
    phemex = SPECS["phemex-spot"]
    assert len(phemex.subscribe_frames(universe("phemex-spot", 20))) == 20  # one symbol per request
    bybit_spot = SPECS["bybit-spot"]
    assert len(bybit_spot.subscribe_frames(universe("bybit-spot", 200))) == 20  # <= 10 args each
    bybit_linear = SPECS["bybit-linear"]
    assert len(bybit_linear.subscribe_frames(universe("bybit-linear", 200))) == 1  # no args limit on linear
    binance = SPECS["binance-usdm"]
    assert len(binance.subscribe_frames(universe("binance-usdm", 1024))) == 11
    kucoin = SPECS["kucoin-spot"]
    assert len(kucoin.subscribe_frames(universe("kucoin-spot", 400))) == 4  # 100 symbols per topic


def test_okx_frames_split_at_64_kib():
    spec = SPECS["okx-swap"]
    long_ids = [f"{'X' * 380}{i}-USDT-SWAP" for i in range(200)]  # ~430 bytes per arg, ~86 KB in all
    frames = spec.subscribe_frames(long_ids)
    assert len(frames) == 2
    assert all(len(f.encode()) <= 65_536 for f in frames)
    assert [a["instId"] for f in frames for a in json.loads(f)["args"]] == long_ids


def test_bybit_shards_by_args_characters_when_names_are_long():
    spec = SPECS["bybit-linear"]
    symbols = [f"{'L' * 110}{i}USDT" for i in range(200)]  # ~136 characters per arg, 27 KB for 200
    shards = spec.shard(symbols)
    assert len(shards) == 2
    for shard in shards:
        assert sum(len(json.dumps(f"publicTrade.{s}")) + 1 for s in shard) <= 21_000


def test_subscribe_frames_refuse_more_than_one_connection_carries():
    spec = SPECS["binance-spot"]
    with pytest.raises(InvalidInputError, match="shard"):
        spec.subscribe_frames(universe("binance-spot", 1025))
    with pytest.raises(InvalidInputError):
        SPECS["phemex-perp"].subscribe_frames(universe("phemex-perp", 21))


def test_shard_narrows_to_config_but_never_widens_and_drops_duplicates():
    spec = SPECS["binance-spot"]
    symbols = universe("binance-spot", 2500)
    assert [len(s) for s in spec.shard(symbols, per_connection=500)] == [500] * 5
    assert [len(s) for s in spec.shard(symbols, per_connection=5000)] == [834, 833, 833]
    assert spec.shard(["BTCUSDT", "ETHUSDT", "BTCUSDT"]) == [["BTCUSDT", "ETHUSDT"]]
    assert spec.shard([]) == []
    with pytest.raises(InvalidInputError):
        spec.shard(symbols, per_connection=0)


# ---------------------------------------------------------------------------------------------
# Where to connect


def test_binance_usdm_trade_streams_route_to_public():
    assert SPECS["binance-usdm"].connect_url(["BTCUSDT"]) == "wss://fstream.binance.com/public/stream"
    assert SPECS["binance-spot"].connect_url(["BTCUSDT"]) == "wss://stream.binance.com:9443/stream"


def test_with_urls_keeps_the_venue_paths_and_leaves_the_original_alone():
    spec = SPECS["binance-usdm"]
    local = spec.with_urls(ws_url="ws://127.0.0.1:9001", rest_url="http://127.0.0.1:9002")
    assert local.connect_url() == "ws://127.0.0.1:9001/public/stream"
    assert local.rest_url == "http://127.0.0.1:9002"
    assert spec.connect_url() == "wss://fstream.binance.com/public/stream"
    assert spec.rest_url == "https://fapi.binance.com"
    assert SPECS["gate-futures"].with_urls(ws_url="ws://h:1").connect_url() == "ws://h:1/v4/ws/usdt"
    assert SPECS["okx-spot"].connect_url() == "wss://ws.okx.com:8443/ws/v5/business"  # trades-all
    assert SPECS["phemex-perp"].connect_url() == "wss://ws.phemex.com"
    req = spec.with_api_key("k").backfill_requests("BTCUSDT", after_id=5)[0]  # historicalTrades needs a key (§2.3)
    assert req.url(local.rest_url) == "http://127.0.0.1:9002/fapi/v1/historicalTrades?symbol=BTCUSDT&fromId=6&limit=500"


BULLET_TOKEN = (
    "2neAiuYvAU61ZDXANAGAsiL4-iAExhsBXZxftpOeh_55i3Ysy2q2LEsEWU64mdzUOPusi34M_wGoSf7iNyEWJ4aBZX"
    "pWhrmY9jKtqkdWoFa75w3istPvPtiYB9J6i9GjsxUuhPw3BlrzazF6ghq4L.Hd6LAU5cTtDQ1TNBw6zExH2Zr8BdTOKYRjO9OxB-qRR"
)


def bullet(endpoint: str) -> str:
    return json.dumps(
        {
            "code": "200000",
            "data": {
                "token": BULLET_TOKEN,
                "instanceServers": [
                    {
                        "endpoint": endpoint,
                        "encrypt": True,
                        "protocol": "websocket",
                        "pingInterval": 18000,
                        "pingTimeout": 10000,
                    }
                ],
            },
        }
    )


class FakeHttp:
    def __init__(self, body: str):
        self.body = body
        self.calls: list[tuple[str, HttpRequest]] = []

    async def __call__(self, base_url: str, request: HttpRequest) -> str:
        self.calls.append((base_url, request))
        return self.body


def test_kucoin_spot_handshake_builds_the_url_from_the_bullet():
    http = FakeHttp(bullet("wss://ws-api-spot.kucoin.com/"))
    url = asyncio.run(SPECS["kucoin-spot"].resolve_connection(http, connect_id="pw-1"))
    assert url == f"wss://ws-api-spot.kucoin.com/?token={BULLET_TOKEN}&connectId=pw-1"
    assert http.calls == [("https://api.kucoin.com", HttpRequest("POST", "/api/v1/bullet-public"))]


def test_kucoin_futures_handshake_asks_the_futures_host_and_uses_its_endpoint():
    http = FakeHttp(bullet("wss://ws-api-futures.kucoin.com/"))
    spec = SPECS["kucoin-futures"].with_urls(rest_url="http://127.0.0.1:7000")
    url = asyncio.run(spec.resolve_connection(http))
    assert url.startswith(f"wss://ws-api-futures.kucoin.com/?token={BULLET_TOKEN}&connectId=")
    assert len(url.rsplit("connectId=", 1)[1]) == 32  # a fresh random id per connection
    assert http.calls[0][0] == "http://127.0.0.1:7000"


def test_kucoin_refusal_and_tokenless_url_are_errors():
    http = FakeHttp(json.dumps({"code": "429000", "msg": "Too many requests"}))
    with pytest.raises(InvalidInputError, match="429000"):
        asyncio.run(SPECS["kucoin-spot"].resolve_connection(http))
    with pytest.raises(InvalidInputError, match="resolve_connection"):
        SPECS["kucoin-spot"].connect_url()


def test_other_venues_resolve_without_a_request():
    http = FakeHttp("")
    assert asyncio.run(SPECS["bybit-spot"].resolve_connection(http)) == "wss://stream.bybit.com/v5/public/spot"
    assert http.calls == []


# ---------------------------------------------------------------------------------------------
# Instrument lists (bodies in the documented shapes)


def by_symbol(instruments):
    return {i.symbol: i for i in instruments}


def test_binance_spot_instruments():
    spec = SPECS["binance-spot"]
    assert spec.instruments_request() == [HttpRequest("GET", "/api/v3/exchangeInfo")]
    body = json.dumps(
        {
            "timezone": "UTC",
            "symbols": [
                {
                    "symbol": "BTCUSDT",
                    "status": "TRADING",
                    "baseAsset": "BTC",
                    "quoteAsset": "USDT",
                    "isSpotTradingAllowed": True,
                },
                {"symbol": "ETHBTC", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "BTC"},
                {"symbol": "LUNAUSDT", "status": "BREAK", "baseAsset": "LUNA", "quoteAsset": "USDT"},
                {"symbol": "1000SATSUSDT", "status": "TRADING", "baseAsset": "1000SATS", "quoteAsset": "USDT"},
            ],
        }
    )
    got = by_symbol(spec.parse_instruments([body]))
    assert list(got) == ["BTCUSDT", "LUNAUSDT", "1000SATSUSDT"]
    assert got["BTCUSDT"] == venues.Instrument(
        venue="binance-spot", symbol="BTCUSDT", base="BTC", quote="USDT", kind="spot", status="trading", asset="BTC"
    )
    # BREAK: how exchangeInfo keeps a delisted pair (LUNA's, here): closed, unsubscribed
    assert got["LUNAUSDT"].status == "closed" and not got["LUNAUSDT"].is_trading
    assert (got["1000SATSUSDT"].asset, got["1000SATSUSDT"].base_multiplier) == ("SATS", 1000)


def test_binance_usdm_instruments_keep_usdt_perpetuals_and_undo_1000_prefixes():
    spec = SPECS["binance-usdm"]
    assert spec.instruments_request() == [HttpRequest("GET", "/fapi/v1/exchangeInfo")]

    def contract(symbol, base, contract_type="PERPETUAL", status="TRADING", quote="USDT"):
        return {
            "symbol": symbol,
            "pair": symbol,
            "contractType": contract_type,
            "status": status,
            "baseAsset": base,
            "quoteAsset": quote,
            "marginAsset": quote,
        }

    body = json.dumps(
        {
            "symbols": [
                contract("BTCUSDT", "BTC"),
                contract("1000PEPEUSDT", "1000PEPE"),
                contract("1MBABYDOGEUSDT", "1MBABYDOGE"),
                contract("BTCUSDT_260925", "BTC", contract_type="CURRENT_QUARTER"),
                contract("BTCUSDC", "BTC", quote="USDC"),
                contract("XYZUSDT", "XYZ", status="SETTLING"),
                contract("NEWUSDT", "NEW", status="PENDING_TRADING"),
            ]
        }
    )
    got = by_symbol(spec.parse_instruments([body]))
    assert list(got) == ["BTCUSDT", "1000PEPEUSDT", "1MBABYDOGEUSDT", "XYZUSDT", "NEWUSDT"]
    pepe = got["1000PEPEUSDT"]
    assert (pepe.base, pepe.asset, pepe.base_multiplier, pepe.kind, pepe.contract_multiplier) == (
        "1000PEPE",
        "PEPE",
        1000,
        "perp",
        "1",
    )
    assert (got["1MBABYDOGEUSDT"].asset, got["1MBABYDOGEUSDT"].base_multiplier) == ("BABYDOGE", 1_000_000)
    assert got["XYZUSDT"].status == "closed"  # SETTLING: how exchangeInfo keeps a delisted perpetual
    assert got["NEWUSDT"].status == "pre_trading"


def test_bybit_linear_instruments_and_cursor_paging():
    spec = SPECS["bybit-linear"]
    first, prelaunch = spec.instruments_request()
    assert first == HttpRequest("GET", "/v5/market/instruments-info", {"category": "linear", "limit": "1000"})
    # PreLaunch instruments come back only when asked for (docs/VENUES.md §12)
    assert prelaunch == HttpRequest(
        "GET", "/v5/market/instruments-info", {"category": "linear", "limit": "1000", "status": "PreLaunch"}
    )

    def row(symbol, base, contract_type="LinearPerpetual", status="Trading", quote="USDT"):
        return {
            "symbol": symbol,
            "contractType": contract_type,
            "status": status,
            "baseCoin": base,
            "quoteCoin": quote,
            "settleCoin": quote,
            "priceScale": "2",
            "lotSizeFilter": {"qtyStep": "0.001"},
        }

    page1 = json.dumps(
        {
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "category": "linear",
                "nextPageCursor": "first%3D1",
                "list": [
                    row("BTCUSDT", "BTC"),
                    row("SHIB1000USDT", "SHIB1000"),
                    row("BTCPERP", "BTC", quote="USDC"),
                    row("BTCUSDT-26SEP25", "BTC", contract_type="LinearFutures"),
                ],
            },
        }
    )
    page2 = json.dumps(
        {
            "retCode": 0,
            "retMsg": "OK",
            "result": {"category": "linear", "nextPageCursor": "", "list": [row("NEWUSDT", "NEW", status="PreLaunch")]},
        }
    )
    second = spec.next_instruments_request(first, page1)
    assert second == HttpRequest(
        "GET", "/v5/market/instruments-info", {"category": "linear", "limit": "1000", "cursor": "first%3D1"}
    )
    assert spec.next_instruments_request(second, page2) is None
    got = by_symbol(spec.parse_instruments([page1, page2]))
    assert list(got) == ["BTCUSDT", "SHIB1000USDT", "NEWUSDT"]
    assert (got["SHIB1000USDT"].asset, got["SHIB1000USDT"].base_multiplier) == ("SHIB", 1000)
    assert got["NEWUSDT"].status == "pre_trading"


def test_bybit_spot_instruments():
    spec = SPECS["bybit-spot"]
    assert spec.instruments_request()[0].params == {"category": "spot", "limit": "1000"}
    body = json.dumps(
        {
            "retCode": 0,
            "result": {
                "category": "spot",
                "list": [
                    {"symbol": "BTCUSDT", "baseCoin": "BTC", "quoteCoin": "USDT", "status": "Trading"},
                    {"symbol": "ETHUSDC", "baseCoin": "ETH", "quoteCoin": "USDC", "status": "Trading"},
                ],
            },
        }
    )
    assert [(i.symbol, i.base, i.kind) for i in spec.parse_instruments([body])] == [("BTCUSDT", "BTC", "spot")]


def test_okx_swap_instruments_carry_ctval_exactly():
    spec = SPECS["okx-swap"]
    assert spec.instruments_request() == [HttpRequest("GET", "/api/v5/public/instruments", {"instType": "SWAP"})]

    def swap(inst_id, ct_val, state="live", settle="USDT", ct_type="linear"):
        base = inst_id.split("-")[0]
        return {
            "instType": "SWAP",
            "instId": inst_id,
            "uly": f"{base}-{settle}",
            "baseCcy": "",
            "quoteCcy": "",
            "settleCcy": settle,
            "ctVal": ct_val,
            "ctMult": "1",
            "ctValCcy": base if ct_type == "linear" else "USD",
            "ctType": ct_type,
            "state": state,
            "lotSz": "1",
            "tickSz": "0.1",
        }

    body = json.dumps(
        {
            "code": "0",
            "msg": "",
            "data": [
                swap("BTC-USDT-SWAP", "0.01"),
                swap("ETH-USDT-SWAP", "0.1"),
                swap("BTC-USD-SWAP", "100", settle="BTC", ct_type="inverse"),
                swap("XYZ-USDT-SWAP", "10", state="suspend"),
                swap("TST-USDT-SWAP", "1", state="test"),
            ],
        }
    )
    got = by_symbol(spec.parse_instruments([body]))
    assert list(got) == ["BTC-USDT-SWAP", "ETH-USDT-SWAP", "XYZ-USDT-SWAP"]
    assert (got["BTC-USDT-SWAP"].base, got["BTC-USDT-SWAP"].contract_multiplier) == ("BTC", "0.01")
    assert got["ETH-USDT-SWAP"].contract_multiplier == "0.1"
    assert got["XYZ-USDT-SWAP"].status == "halted"


def test_okx_spot_instruments():
    spec = SPECS["okx-spot"]
    body = json.dumps(
        {
            "code": "0",
            "data": [
                {
                    "instType": "SPOT",
                    "instId": "BTC-USDT",
                    "baseCcy": "BTC",
                    "quoteCcy": "USDT",
                    "state": "live",
                    "ctVal": "",
                },
                {"instType": "SPOT", "instId": "ETH-BTC", "baseCcy": "ETH", "quoteCcy": "BTC", "state": "live"},
                {"instType": "SPOT", "instId": "0G-USDT", "baseCcy": "0G", "quoteCcy": "USDT", "state": "preopen"},
            ],
        }
    )
    got = by_symbol(spec.parse_instruments([body]))
    assert list(got) == ["BTC-USDT", "0G-USDT"]
    assert (got["0G-USDT"].asset, got["0G-USDT"].base_multiplier, got["0G-USDT"].status) == ("0G", 1, "pre_trading")
    assert got["BTC-USDT"].contract_multiplier == "1"


def test_kucoin_futures_instruments_map_xbt_to_btc_and_keep_multipliers_exact():
    spec = SPECS["kucoin-futures"]
    assert spec.instruments_request() == [HttpRequest("GET", "/api/v1/contracts/active")]
    # multipliers as KuCoin sends them: JSON numbers (Java doubles, so large ones in E notation)
    body = """{"code":"200000","data":[
      {"symbol":"XBTUSDTM","rootSymbol":"USDT","type":"FFWCSX","baseCurrency":"XBT","quoteCurrency":"USDT",
       "settleCurrency":"USDT","multiplier":0.001,"isInverse":false,"status":"Open","lotSize":1,"tickSize":0.1},
      {"symbol":"ETHUSDTM","rootSymbol":"USDT","type":"FFWCSX","baseCurrency":"ETH","quoteCurrency":"USDT",
       "settleCurrency":"USDT","multiplier":0.01,"isInverse":false,"status":"Paused"},
      {"symbol":"BONKUSDTM","rootSymbol":"USDT","type":"FFWCSX","baseCurrency":"BONK","quoteCurrency":"USDT",
       "settleCurrency":"USDT","multiplier":1.0E7,"isInverse":false,"status":"Open"},
      {"symbol":"XBTUSDM","rootSymbol":"XBT","type":"FFWCSX","baseCurrency":"XBT","quoteCurrency":"USD",
       "settleCurrency":"XBT","multiplier":-1.0,"isInverse":true,"status":"Open"},
      {"symbol":"XBTMZ25","rootSymbol":"XBT","type":"FFICSX","baseCurrency":"XBT","quoteCurrency":"USDT",
       "settleCurrency":"USDT","multiplier":0.001,"isInverse":false,"status":"Open"}]}"""
    got = by_symbol(spec.parse_instruments([body]))
    assert list(got) == ["XBTUSDTM", "ETHUSDTM", "BONKUSDTM"]
    xbt = got["XBTUSDTM"]
    assert (xbt.base, xbt.asset, xbt.contract_multiplier, xbt.status) == ("BTC", "BTC", "0.001", "trading")
    assert got["ETHUSDTM"].status == "halted"
    assert got["BONKUSDTM"].contract_multiplier == "10000000"


def test_kucoin_spot_instruments():
    spec = SPECS["kucoin-spot"]
    assert spec.instruments_request() == [HttpRequest("GET", "/api/v2/symbols")]
    body = json.dumps(
        {
            "code": "200000",
            "data": [
                {
                    "symbol": "BTC-USDT",
                    "name": "BTC-USDT",
                    "baseCurrency": "BTC",
                    "quoteCurrency": "USDT",
                    "market": "USDS",
                    "enableTrading": True,
                },
                {
                    "symbol": "ETH-BTC",
                    "name": "ETH-BTC",
                    "baseCurrency": "ETH",
                    "quoteCurrency": "BTC",
                    "market": "BTC",
                    "enableTrading": True,
                },
                {
                    "symbol": "LUNA-USDT",
                    "name": "LUNA-USDT",
                    "baseCurrency": "LUNA",
                    "quoteCurrency": "USDT",
                    "market": "USDS",
                    "enableTrading": False,
                },
                {  # listed, opening later: tradingStartTime in the future (docs/VENUES.md §12)
                    "symbol": "NEW-USDT",
                    "baseCurrency": "NEW",
                    "quoteCurrency": "USDT",
                    "enableTrading": False,
                    "tradingStartTime": int(time.time() * 1000) + 3_600_000,
                },
            ],
        }
    )
    got = by_symbol(spec.parse_instruments([body]))
    assert [(s, i.status) for s, i in got.items()] == [
        ("BTC-USDT", "trading"),
        ("LUNA-USDT", "halted"),
        ("NEW-USDT", "pre_trading"),
    ]


def test_gate_instruments():
    spot = SPECS["gate-spot"]
    assert spot.instruments_request() == [HttpRequest("GET", "/api/v4/spot/currency_pairs")]
    body = json.dumps(
        [
            {
                "id": "BTC_USDT",
                "base": "BTC",
                "quote": "USDT",
                "fee": "0.2",
                "trade_status": "tradable",
                "amount_precision": 6,
            },
            {"id": "XYZ_USDT", "base": "XYZ", "quote": "USDT", "trade_status": "untradable"},
            {"id": "ETH_BTC", "base": "ETH", "quote": "BTC", "trade_status": "tradable"},
            # a new pair before its opening time (docs/VENUES.md §12): buy_start/sell_start ahead
            {
                "id": "NEW_USDT",
                "base": "NEW",
                "quote": "USDT",
                "trade_status": "untradable",
                "buy_start": int(time.time()) + 600,
                "sell_start": int(time.time()) + 600,
            },
        ]
    )
    assert [(i.symbol, i.base, i.status) for i in spot.parse_instruments([body])] == [
        ("BTC_USDT", "BTC", "trading"),
        ("XYZ_USDT", "XYZ", "halted"),
        ("NEW_USDT", "NEW", "pre_trading"),
    ]

    futures = SPECS["gate-futures"]
    assert futures.instruments_request() == [HttpRequest("GET", "/api/v4/futures/usdt/contracts")]
    body = json.dumps(
        [
            {
                "name": "BTC_USDT",
                "type": "direct",
                "quanto_multiplier": "0.0001",
                "in_delisting": False,
                "status": "trading",
                "order_size_min": 1,
            },
            {
                "name": "BYE_USDT",
                "type": "direct",
                "quanto_multiplier": "10",
                "in_delisting": True,
                "status": "trading",
            },
            {
                "name": "OLD_USDT",
                "type": "direct",
                "quanto_multiplier": "1",
                "in_delisting": False,
                "status": "delisted",
            },
        ]
    )
    got = by_symbol(futures.parse_instruments([body]))
    assert (got["BTC_USDT"].base, got["BTC_USDT"].contract_multiplier, got["BTC_USDT"].status) == (
        "BTC",
        "0.0001",
        "trading",
    )
    assert got["BYE_USDT"].status == "delisting"
    assert got["OLD_USDT"].status == "closed"


PHEMEX_PRODUCTS = json.dumps(
    {
        "code": 0,
        "msg": "",
        "data": {
            "currencies": [
                {"currency": "BTC", "valueScale": 8},
                {"currency": "XRP", "valueScale": 6},
                {"currency": "USDT", "valueScale": 8},
            ],
            "products": [
                {
                    "symbol": "BTCUSD",
                    "type": "Perpetual",
                    "quoteCurrency": "USD",
                    "settleCurrency": "BTC",
                    "priceScale": 4,
                    "status": "Listed",
                },
                {
                    "symbol": "sBTCUSDT",
                    "displaySymbol": "BTC / USDT",
                    "type": "Spot",
                    "baseCurrency": "BTC",
                    "quoteCurrency": "USDT",
                    "baseTickSizeEv": 100,
                    "pricePrecision": 2,
                    "status": "Listed",
                },
                {
                    "symbol": "sXRPUSDT",
                    "type": "Spot",
                    "baseCurrency": "XRP",
                    "quoteCurrency": "USDT",
                    "priceScale": 8,
                    "status": "Delisted",
                },
            ],
            "perpProductsV2": [
                {
                    "symbol": "BTCUSDT",
                    "type": "PerpetualV2",
                    "baseCurrency": "BTC",
                    "quoteCurrency": "USDT",
                    "settleCurrency": "USDT",
                    "status": "Listed",
                    "qtyStepSize": "0.001",
                    "tickSize": "0.1",
                },
                {
                    "symbol": "1000PEPEUSDT",
                    "type": "PerpetualV2",
                    "baseCurrency": "1000PEPE",
                    "quoteCurrency": "USDT",
                    "settleCurrency": "USDT",
                    "status": "Listed",
                },
            ],
        },
    }
)


def test_phemex_instruments_carry_spot_scales():
    spot = SPECS["phemex-spot"]
    assert spot.instruments_request() == [HttpRequest("GET", "/public/products")]
    got = by_symbol(spot.parse_instruments([PHEMEX_PRODUCTS]))
    assert list(got) == ["sBTCUSDT", "sXRPUSDT"]
    assert (got["sBTCUSDT"].base, got["sBTCUSDT"].price_scale, got["sBTCUSDT"].qty_scale) == ("BTC", 8, 8)
    assert (got["sXRPUSDT"].qty_scale, got["sXRPUSDT"].status) == (6, "closed")
    perp = by_symbol(SPECS["phemex-perp"].parse_instruments([PHEMEX_PRODUCTS]))
    assert list(perp) == ["BTCUSDT", "1000PEPEUSDT"]
    assert (perp["1000PEPEUSDT"].asset, perp["1000PEPEUSDT"].price_scale) == ("PEPE", None)


# ---------------------------------------------------------------------------------------------
# Backfill requests


def test_binance_backfill_pages_forward_by_fromid():
    spec = SPECS["binance-spot"]
    pages = spec.backfill_requests("BTCUSDT", after_id=100, before_id=2601)  # ids 101..2600 missing
    assert [(p.path, p.params) for p in pages] == [
        ("/api/v3/historicalTrades", {"symbol": "BTCUSDT", "fromId": "101", "limit": "1000"}),
        ("/api/v3/historicalTrades", {"symbol": "BTCUSDT", "fromId": "1101", "limit": "1000"}),
        ("/api/v3/historicalTrades", {"symbol": "BTCUSDT", "fromId": "2101", "limit": "500"}),
    ]
    assert spec.backfill_requests("BTCUSDT", after_id=100, before_id=101) == []
    usdm = SPECS["binance-usdm"].with_api_key("k").backfill_requests("BTCUSDT", after_id="0", before_id="1202")
    assert [(p.path, p.params["fromId"], p.params["limit"]) for p in usdm] == [
        ("/fapi/v1/historicalTrades", "1", "500"),
        ("/fapi/v1/historicalTrades", "501", "500"),
        ("/fapi/v1/historicalTrades", "1001", "201"),
    ]


def test_binance_open_hole_follows_the_tape_until_a_short_page():
    spec = SPECS["binance-spot"]
    [first] = spec.backfill_requests("BTCUSDT", after_id=100)
    assert first.params == {"symbol": "BTCUSDT", "fromId": "101", "limit": "1000"}
    full = [{"trade_id": str(i), "ts_ns": 0} for i in range(101, 1101)]
    assert spec.next_backfill_request(first, full, after_id=100).params["fromId"] == "1101"
    assert spec.next_backfill_request(first, full[:10], after_id=100) is None
    with pytest.raises(InvalidInputError, match="after_id"):
        spec.backfill_requests("BTCUSDT", start_ns=1, end_ns=2)


def test_okx_backfill_walks_back_with_after():
    spec = SPECS["okx-swap"]
    pages = spec.backfill_requests("BTC-USDT-SWAP", after_id=1000, before_id=1251)  # ids 1001..1250 missing
    assert [p.params for p in pages] == [
        {"instId": "BTC-USDT-SWAP", "type": "1", "limit": "100", "after": "1251"},
        {"instId": "BTC-USDT-SWAP", "type": "1", "limit": "100", "after": "1151"},
        {"instId": "BTC-USDT-SWAP", "type": "1", "limit": "50", "after": "1051"},
    ]
    assert all(p.path == "/api/v5/market/history-trades" for p in pages)
    served = {i for p in pages for i in range(int(p.params["after"]) - int(p.params["limit"]), int(p.params["after"]))}
    assert served == set(range(1001, 1251))


def test_okx_open_hole_walks_back_from_the_newest_until_the_last_held_id():
    spec = SPECS["okx-spot"]
    [first] = spec.backfill_requests("BTC-USDT", after_id=1000)
    assert first.params == {"instId": "BTC-USDT", "type": "1", "limit": "100"}
    rows = [{"trade_id": str(i), "ts_ns": i} for i in range(1599, 1499, -1)]
    nxt = spec.next_backfill_request(first, rows, after_id=1000)
    assert nxt.params == {"instId": "BTC-USDT", "type": "1", "limit": "100", "after": "1500"}
    rows = [{"trade_id": str(i), "ts_ns": i} for i in range(1149, 1049, -1)]
    assert spec.next_backfill_request(nxt, rows, after_id=1000).params["limit"] == "49"
    rows = [{"trade_id": str(i), "ts_ns": i} for i in range(1100, 1000, -1)]
    assert spec.next_backfill_request(nxt, rows, after_id=1000) is None
    # by time when no id is known: type 2, `after` = end in ms, rounded up
    [by_time] = spec.backfill_requests("BTC-USDT", start_ns=1_630_048_000_000_000_000, end_ns=1_630_048_897_897_000_001)
    assert by_time.params == {"instId": "BTC-USDT", "type": "2", "limit": "100", "after": "1630048897898"}


def test_gate_backfill_asks_a_time_range_and_pages():
    spot = SPECS["gate-spot"]
    [first] = spot.backfill_requests(
        "BTC_USDT", after_id=5, before_id=9, start_ns=1_700_000_000_500_000_000, end_ns=1_700_000_060_200_000_000
    )
    assert first == HttpRequest(
        "GET",
        "/api/v4/spot/trades",
        {"currency_pair": "BTC_USDT", "limit": "1000", "from": "1700000000", "to": "1700000061", "page": "1"},
    )
    full = [{"trade_id": str(i), "ts_ns": 0} for i in range(1000)]
    assert spot.next_backfill_request(first, full).params["page"] == "2"
    assert spot.next_backfill_request(first, full[:999]) is None
    last_allowed = HttpRequest("GET", first.path, {**first.params, "page": "101"})  # 1000 * 100 = 100000
    # past the cap (§7.3): the range cut at the oldest second reached (+1: `to` is whole seconds), page 1
    older = [{"trade_id": str(i), "ts_ns": 1_700_000_030_700_000_000} for i in range(1000)]
    assert spot.next_backfill_request(last_allowed, older).params == {**first.params, "to": "1700000031", "page": "1"}
    # ... unless that cuts nothing off: a full cap's worth within the range's last two seconds
    newest = [{"trade_id": str(i), "ts_ns": 1_700_000_060_000_000_000} for i in range(1000)]
    assert spot.next_backfill_request(last_allowed, newest) is None

    futures = SPECS["gate-futures"]
    [first] = futures.backfill_requests(
        "BTC_USDT", start_ns=1_514_764_800_000_000_000, end_ns=1_514_764_900_000_000_000
    )
    assert first == HttpRequest(
        "GET",
        "/api/v4/futures/usdt/trades",
        {"contract": "BTC_USDT", "limit": "1000", "from": "1514764800", "to": "1514764900", "offset": "0"},
        {"X-Gate-Size-Decimal": "1"},  # else sizes come truncated to whole contracts (VENUES §8)
    )
    assert futures.next_backfill_request(first, full).params["offset"] == "1000"
    assert futures.next_backfill_request(first, full).headers == {"X-Gate-Size-Decimal": "1"}


@pytest.mark.parametrize(
    ("venue_id", "symbol", "path", "params"),
    [
        ("bybit-spot", "BTCUSDT", "/v5/market/recent-trade", {"category": "spot", "symbol": "BTCUSDT", "limit": "60"}),
        (
            "bybit-linear",
            "ETHUSDT",
            "/v5/market/recent-trade",
            {"category": "linear", "symbol": "ETHUSDT", "limit": "1000"},
        ),
        ("kucoin-spot", "BTC-USDT", "/api/v1/market/histories", {"symbol": "BTC-USDT"}),
        ("kucoin-futures", "XBTUSDTM", "/api/v1/trade/history", {"symbol": "XBTUSDTM"}),
        ("phemex-spot", "sBTCUSDT", "/md/trade", {"symbol": "sBTCUSDT"}),
        ("phemex-perp", "BTCUSDT", "/md/v2/trade", {"symbol": "BTCUSDT"}),
    ],
)
def test_recent_only_venues_make_one_request_whatever_the_hole(venue_id, symbol, path, params):
    spec = SPECS[venue_id]
    expected = [HttpRequest("GET", path, params)]
    assert spec.backfill_requests(symbol) == expected
    assert spec.backfill_requests(symbol, after_id=1, before_id=10_000, start_ns=1, end_ns=2) == expected
    assert spec.next_backfill_request(expected[0], [{"trade_id": "1", "ts_ns": 1}] * 5000) is None


# ---------------------------------------------------------------------------------------------
# Backfill parsers: exact decimals and ids


def assert_storable(rows):
    for row in rows:
        assert pumpwatch.Trade(**row).to_dict() == row


def test_binance_rows_keep_text_and_map_is_buyer_maker_to_sell():
    body = """[{"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
                "time": 1499865549590, "isBuyerMaker": true, "isBestMatch": true},
               {"id": 28458, "price": "4.00000200", "qty": "0.10000000", "quoteQty": "0.4",
                "time": 1499865549591, "isBuyerMaker": false, "isBestMatch": true}]"""
    rows = SPECS["binance-spot"].parse_backfill(body, "BNBBTC")
    assert rows == [
        {
            "venue": "binance-spot",
            "symbol": "BNBBTC",
            "trade_id": "28457",
            "price": "4.00000100",
            "qty": "12.00000000",
            "side": "sell",
            "ts_ns": 1_499_865_549_590_000_000,
            "recv_ns": 0,
            "flags": BACKFILL,
        },
        {
            "venue": "binance-spot",
            "symbol": "BNBBTC",
            "trade_id": "28458",
            "price": "4.00000200",
            "qty": "0.10000000",
            "side": "buy",
            "ts_ns": 1_499_865_549_591_000_000,
            "recv_ns": 0,
            "flags": BACKFILL,
        },
    ]
    assert_storable(rows)
    usdm = SPECS["binance-usdm"].parse_backfill(
        '[{"id": 8121136411, "price": "83680.00", "qty": "0.001", "quoteQty": "83.68", "time": 1790370834848,'
        ' "isBuyerMaker": true, "isRPITrade": true}]',
        "BTCUSDT",
    )
    assert (usdm[0]["price"], usdm[0]["flags"]) == ("83680.00", BACKFILL | pumpwatch.FLAGS["RPI"])


def test_bybit_rows_use_exec_id():
    body = json.dumps(
        {
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "category": "spot",
                "list": [
                    {
                        "execId": "2100000000007764263",
                        "symbol": "BTCUSDT",
                        "price": "16618.49",
                        "size": "0.00012",
                        "side": "Buy",
                        "time": "1672052955758",
                        "isBlockTrade": False,
                        "isRPITrade": True,
                        "seq": "123456",
                    },
                    {
                        "execId": "2100000000007764264",
                        "symbol": "BTCUSDT",
                        "price": "16618.50",
                        "size": "0.10000",
                        "side": "Sell",
                        "time": "1672052955759",
                        "isBlockTrade": True,
                        "isRPITrade": False,
                        "seq": "123457",
                    },
                ],
            },
            "time": 1672053054358,
        }
    )
    rows = SPECS["bybit-spot"].parse_backfill(body, "BTCUSDT")
    assert [(r["trade_id"], r["price"], r["qty"], r["side"], r["ts_ns"], r["flags"]) for r in rows] == [
        (
            "2100000000007764263",
            "16618.49",
            "0.00012",
            "buy",
            1_672_052_955_758_000_000,
            BACKFILL | pumpwatch.FLAGS["RPI"],
        ),
        (
            "2100000000007764264",
            "16618.50",
            "0.10000",
            "sell",
            1_672_052_955_759_000_000,
            BACKFILL | pumpwatch.FLAGS["BLOCK_TRADE"],
        ),
    ]
    assert_storable(rows)


def test_okx_rows():
    body = json.dumps(
        {
            "code": "0",
            "msg": "",
            "data": [
                {
                    "instId": "BTC-USDT",
                    "tradeId": "130639474",
                    "px": "42219.9",
                    "sz": "0.12060306",
                    "side": "buy",
                    "source": "0",
                    "ts": "1630048897897",
                },
                {
                    "instId": "BTC-USDT",
                    "tradeId": "130639473",
                    "px": "42219.80",
                    "sz": "1",
                    "side": "sell",
                    "source": "0",
                    "ts": "1630048897896",
                },
            ],
        }
    )
    rows = SPECS["okx-spot"].parse_backfill(body, "BTC-USDT")
    assert [(r["trade_id"], r["price"], r["qty"], r["side"], r["ts_ns"]) for r in rows] == [
        ("130639474", "42219.9", "0.12060306", "buy", 1_630_048_897_897_000_000),
        ("130639473", "42219.80", "1", "sell", 1_630_048_897_896_000_000),
    ]
    assert_storable(rows)


def test_kucoin_spot_rows_use_sequence_and_exact_nanoseconds():
    body = """{"code":"200000","data":[{"sequence":"10976028003549185","price":"67122","size":"0.000025",
               "side":"buy","time":1729177117877123457}]}"""
    [row] = SPECS["kucoin-spot"].parse_backfill(body, "BTC-USDT")
    assert (row["trade_id"], row["price"], row["qty"], row["side"]) == ("10976028003549185", "67122", "0.000025", "buy")
    assert row["ts_ns"] == 1_729_177_117_877_123_457  # > 2^53: a float would have rounded it
    assert_storable([row])


def test_kucoin_futures_rows_use_trade_id():
    body = """{"code":"200000","data":[{"sequence":1697915257909,"contractId":1,"tradeId":"1697915257909",
      "makerOrderId":"236679665752801280","takerOrderId":"236679667975745536","ts":1729242032152000001,
      "size":1,"price":"67878","side":"sell"}]}"""
    [row] = SPECS["kucoin-futures"].parse_backfill(body, "XBTUSDM")
    assert (row["trade_id"], row["qty"], row["price"], row["side"], row["ts_ns"]) == (
        "1697915257909",
        "1",
        "67878",
        "sell",
        1_729_242_032_152_000_001,
    )


def test_gate_spot_rows_use_sequence_id_not_the_all_market_id():
    body = json.dumps(
        [
            {
                "id": "1232893232",
                "create_time": "1548000000",
                "create_time_ms": "1548000000123.456",
                "side": "buy",
                "amount": "0.15",
                "price": "0.03",
                "sequence_id": "588018",
            }
        ]
    )
    [row] = SPECS["gate-spot"].parse_backfill(body, "ETH_BTC")
    assert (row["trade_id"], row["price"], row["qty"], row["side"], row["ts_ns"]) == (
        "588018",
        "0.03",
        "0.15",
        "buy",
        1_548_000_000_123_456_000,
    )
    assert_storable([row])
    with pytest.raises(InvalidInputError, match="sequence_id"):
        SPECS["gate-spot"].parse_backfill(
            '[{"id": "1", "create_time_ms": "1.5", "side": "buy", "amount": "1", "price": "1"}]', "X_USDT"
        )


def test_gate_futures_rows_take_side_from_the_size_sign():
    body = """[
      {"id":121234231,"create_time":1514764800.123,"create_time_ms":1514764800123,"contract":"BTC_USDT",
       "size":-100,"price":"100.123"},
      {"id":121234232,"create_time":1514764801,"contract":"BTC_USDT","size":"0.25","price":"100.2","is_internal":true}]"""
    rows = SPECS["gate-futures"].parse_backfill(body, "BTC_USDT")
    assert [(r["trade_id"], r["qty"], r["side"], r["price"], r["ts_ns"], r["flags"]) for r in rows] == [
        ("121234231", "100", "sell", "100.123", 1_514_764_800_123_000_000, BACKFILL),
        ("121234232", "0.25", "buy", "100.2", 1_514_764_801_000_000_000, BACKFILL | pumpwatch.FLAGS["INTERNAL"]),
    ]
    assert_storable(rows)


def test_gate_futures_rest_times_are_seconds_whatever_create_time_ms_says():
    # Gate's REST answer writes both times in seconds with three decimals (a live answer of
    # 2026-08 as a client noted it; ccxt PR #25299; Gate's SDK docs); read as milliseconds they
    # made every backfilled futures trade a trade of January 1970.
    body = '[{"id":814154096,"create_time":1787319911.612,"create_time_ms":1787319911.612,"contract":"BTC_USDT","size":-5910,"price":"77389.5"}]'
    (row,) = SPECS["gate-futures"].parse_backfill(body, "BTC_USDT")
    assert row["ts_ns"] == 1_787_319_911_612_000_000
    assert (row["qty"], row["side"]) == ("5910", "sell")


def test_phemex_spot_rows_unscale_and_key_by_content():
    body = (
        '{"error":null,"id":0,"result":{"sequence":15934323,"symbol":"sBTCUSDT","trades":'
        '[[1579164056368538508,"Sell",869600000000,1210000]],"type":"snapshot"}}'
    )
    spec = SPECS["phemex-spot"]
    [row] = spec.parse_backfill(body, "sBTCUSDT")
    assert (row["price"], row["qty"], row["side"], row["ts_ns"]) == (
        "8696.00000000",
        "0.01210000",
        "sell",
        1_579_164_056_368_538_508,
    )
    assert row["trade_id"] == "1579164056368538508:s:8696.00000000:0.01210000"
    assert_storable([row])
    xrp = venues.Instrument(
        venue="phemex-spot", symbol="sXRPUSDT", base="XRP", quote="USDT", kind="spot", price_scale=8, qty_scale=6
    )
    [row] = spec.parse_backfill(body, "sXRPUSDT", instrument=xrp)
    assert row["qty"] == "1.210000"


def test_phemex_perp_rows_keep_the_strings():
    body = (
        '{"error":null,"id":0,"result":{"sequence":77766796,"symbol":"BTCUSDT","trades_p":'
        '[[1666860389799499000,"Buy","20702.1","0.949"]],"type":"snapshot"}}'
    )
    [row] = SPECS["phemex-perp"].parse_backfill(body, "BTCUSDT")
    assert row["trade_id"] == "1666860389799499000:b:20702.1:0.949"
    assert (row["price"], row["qty"], row["side"]) == ("20702.1", "0.949", "buy")


# ---------------------------------------------------------------------------------------------
# Shared helpers


@pytest.mark.parametrize(
    ("base", "asset", "multiplier"),
    [
        ("1000PEPE", "PEPE", 1000),
        ("10000LADYS", "LADYS", 10_000),
        ("1MBABYDOGE", "BABYDOGE", 1_000_000),
        ("SHIB1000", "SHIB", 1000),
        ("1INCH", "1INCH", 1),
        ("0G", "0G", 1),
        ("2Z", "2Z", 1),
        ("C98", "C98", 1),
        ("BTC", "BTC", 1),
    ],
)
def test_split_multiplier(base, asset, multiplier):
    assert venues.split_multiplier(base) == (asset, multiplier)


def test_exact_number_helpers():
    assert venues.unscale("769100000", 8) == "7.69100000"
    assert venues.unscale("279100", 8) == "0.00279100"
    assert venues.unscale("-5", 2) == "-0.05"
    assert venues.unscale("42", 0) == "42"
    assert venues.plain_decimal("1.0E-4") == "0.00010"
    assert venues.plain_decimal("83680.00") == "83680.00"
    assert venues.to_ns("1788336082402.208000", 1_000_000) == 1_788_336_082_402_208_000
    assert venues.exact_json('{"p": 0.1000, "t": 1579164056368538508}') == {"p": "0.1000", "t": "1579164056368538508"}
    with pytest.raises(InvalidInputError):
        venues.unscale("12.5", 2)


# ---------------------------------------------------------------------------------------------
# REST rows and WS trades of the same fills get the same ids (so the store deduplicates them).
# The WS side is read by the pure-Python parser, the oracle of the Rust one.

SAME_FILLS = [
    (
        "binance-spot",
        "BTCUSDT",
        '[{"id":5052328858,"price":"107407.88000000","qty":"0.00024000","quoteQty":"25.77789120",'
        '"time":1751132780368,"isBuyerMaker":true,"isBestMatch":true}]',
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1751132780369,"s":"BTCUSDT","t":5052328858,'
        '"p":"107407.88000000","q":"0.00024000","T":1751132780368,"m":true,"M":true}}',
    ),
    (
        "binance-usdm",
        "1000PEPEUSDT",
        '[{"id":2804511605,"price":"0.0044478","qty":"10403","quoteQty":"46.27","time":1790371723021,'
        '"isBuyerMaker":false,"isRPITrade":true}]',
        '{"stream":"1000pepeusdt@trade","data":{"e":"trade","E":1790371723022,"T":1790371723021,"s":"1000PEPEUSDT",'
        '"t":2804511605,"p":"0.0044478","q":"10403","X":"RPI","m":false,"st":1}}',
    ),
    (
        "bybit-linear",
        "ETHUSDT",
        '{"retCode":0,"retMsg":"OK","result":{"category":"linear","list":[{"execId":"a519448f-56e5-58e6-90a1-004086e0e530",'
        '"symbol":"ETHUSDT","price":"1922.52","size":"0.02","side":"Buy","time":"1786310820510","isBlockTrade":false,'
        '"isRPITrade":false,"seq":"430879434767"}]},"retExtInfo":{},"time":1786310820600}',
        '{"topic":"publicTrade.ETHUSDT","type":"snapshot","ts":1786310820511,"data":[{"T":1786310820510,"s":"ETHUSDT",'
        '"S":"Buy","v":"0.02","p":"1922.52","L":"PlusTick","i":"a519448f-56e5-58e6-90a1-004086e0e530","BT":false,'
        '"RPI":false,"seq":430879434767}]}',
    ),
    (
        "okx-swap",
        "BTC-USDT-SWAP",
        '{"code":"0","msg":"","data":[{"instId":"BTC-USDT-SWAP","tradeId":"130639474","px":"42219.9","sz":"12",'
        '"side":"buy","source":"0","ts":"1630048897897"}]}',
        '{"arg":{"channel":"trades-all","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP",'
        '"tradeId":"130639474","px":"42219.9","sz":"12","side":"buy","source":"0","ts":"1630048897897"}]}',
    ),
    (
        "kucoin-spot",  # a newer symbol, whose WS tradeId equals its sequence
        "BTC-USDT",
        '{"code":"200000","data":[{"sequence":"11067996711960577","price":"67523","size":"0.003","side":"buy",'
        '"time":1729843222921000000}]}',
        '{"topic":"/market/match:BTC-USDT","type":"message","subject":"trade.l3match","data":{"makerOrderId":'
        '"671b5007389355000701b1d3","price":"67523","sequence":"11067996711960577","side":"buy","size":"0.003",'
        '"symbol":"BTC-USDT","takerOrderId":"671b50161777ff00074c168d","time":"1729843222921000000",'
        '"tradeId":"11067996711960577","type":"match"}}',
    ),
    (
        "kucoin-futures",
        "XBTUSDTM",
        '{"code":"200000","data":[{"sequence":1794100537695,"contractId":1,"tradeId":"1794100537695",'
        '"makerOrderId":"247822167163555840","takerOrderId":"247822202957807616","ts":1731898619520000000,'
        '"size":2,"price":"90503.9","side":"buy"}]}',
        '{"topic":"/contractMarket/execution:XBTUSDTM","type":"message","subject":"match","sn":1794100537695,'
        '"data":{"symbol":"XBTUSDTM","sequence":1794100537695,"side":"buy","size":2,"price":"90503.9",'
        '"takerOrderId":"247822202957807616","makerOrderId":"247822167163555840","tradeId":"1794100537695",'
        '"ts":1731898619520000000}}',
    ),
    (
        "gate-spot",  # `id` (all markets) differs from `id_market` / `sequence_id` (this market)
        "GT_USDT",
        '[{"id":"309143071","create_time":"1606292218","create_time_ms":"1606292218213.4578","side":"sell",'
        '"amount":"16.4700000000","price":"0.4705000000","sequence_id":"2390902"}]',
        '{"time":1606292218,"time_ms":1606292218231,"channel":"spot.trades","event":"update","result":{"id":309143071,'
        '"id_market":2390902,"create_time":1606292218,"create_time_ms":"1606292218213.4578","side":"sell",'
        '"currency_pair":"GT_USDT","amount":"16.4700000000","price":"0.4705000000","range":"2390902-2390902"}}',
    ),
    (
        "gate-futures",
        "BTC_USDT",
        '[{"id":825348721,"create_time":1788347173,"create_time_ms":1788347173767,"contract":"BTC_USDT","size":-2,'
        '"price":"76520"}]',
        '{"time":1788347173,"time_ms":1788347173767,"channel":"futures.trades","event":"update","result":[{"id":825348721,'
        '"size":-2,"create_time":1788347173,"create_time_ms":1788347173767,"price":"76520","contract":"BTC_USDT"}]}',
    ),
    (
        "phemex-spot",  # two identical fills in one nanosecond: the second is #2 on both paths
        "sBTCUSDT",
        '{"error":null,"id":0,"result":{"sequence":1067556417,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",'
        '954488000000,279100],[1591268226414925245,"Sell",954488000000,279100],[1591268226414925245,"Buy",954488000000,'
        '279100]],"type":"snapshot"}}',
        '{"sequence":1067556417,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",954488000000,279100],'
        '[1591268226414925245,"Sell",954488000000,279100],[1591268226414925245,"Buy",954488000000,279100]],'
        '"type":"snapshot"}',
    ),
    (
        "phemex-perp",
        "BTCUSDT",
        '{"error":null,"id":0,"result":{"sequence":79157171,"symbol":"BTCUSDT","trades_p":[[1669198793402790477,"Buy",'
        '"16545.6","0.7"]],"type":"snapshot"}}',
        '{"sequence":79157171,"symbol":"BTCUSDT","trades_p":[[1669198793402790477,"Buy","16545.6","0.7"]],"type":"incremental"}',
    ),
]


@pytest.mark.parametrize(("venue_id", "symbol", "rest_body", "ws_frame"), SAME_FILLS, ids=[s[0] for s in SAME_FILLS])
def test_rest_rows_match_the_ws_parser_for_the_same_fills(venue_id, symbol, rest_body, ws_frame):
    from pumpwatch.purepy import parse as parse_ws

    origin = ~(BACKFILL | pumpwatch.FLAGS["SNAPSHOT"])  # how a trade arrived is not what it is

    def key(t):
        return (t["symbol"], t["trade_id"], t["price"], t["qty"], t["side"], t["ts_ns"], t["flags"] & origin)

    rest = SPECS[venue_id].parse_backfill(rest_body, symbol)
    ws = parse_ws(venue_id, ws_frame).trades
    assert ws and [key(r) for r in rest] == [key(t) for t in ws]
    assert all(r["flags"] & BACKFILL for r in rest)


@pytest.mark.parametrize("venue_id", [v for v in SPECS if SPECS[v].heartbeat.pong_frame])
def test_the_parser_recognises_each_documented_pong(venue_id):
    from pumpwatch.purepy import parse as parse_ws

    assert parse_ws(venue_id, SPECS[venue_id].heartbeat.pong_frame).control[0] == "pong"


def test_okx_error_answers_are_errors_not_empty_answers():
    """OKX answers some refusals with HTTP 200, a `code` other than "0" and an empty `data`
    (docs/VENUES.md §4.3; the simulator's 51001): read as rows, a refused history page passed for
    the end of the history and a refused instrument list for an empty one."""
    refused = '{"code":"51001","msg":"Instrument ID doesn\'t exist.","data":[]}'
    for venue in ("okx-spot", "okx-swap"):
        spec = SPECS[venue]
        with pytest.raises(VenueAnswerError, match="51001"):
            spec.parse_backfill(refused, "GONE-USDT")
        with pytest.raises(VenueAnswerError, match="Instrument ID"):
            spec.parse_instruments([refused])
        ok = '{"code":"0","msg":"","data":[]}'
        assert spec.parse_backfill(ok, "BTC-USDT") == [] and spec.parse_instruments([ok]) == []
