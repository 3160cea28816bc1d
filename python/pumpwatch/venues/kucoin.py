"""KuCoin spot and futures (VENUES §5, §6)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import urlencode

from ..errors import InvalidInputError
from . import (
    CLOSED,
    DAY_S,
    HALTED,
    PRE_TRADING,
    TRADING,
    BackfillRow,
    BackfillRule,
    HeartbeatRule,
    HttpFetch,
    HttpRequest,
    Instrument,
    VenueSpec,
    backfill_row,
    connect_budget,
    dumps,
    exact_json,
    make_instrument,
    rest_budget,
    taker_side,
)

ALIASES = {"XBT": "BTC"}  # futures name bitcoin XBT (XBTUSDTM)
# A subscribe naming an unknown symbol: `{"id":"5","type":"error","code":404,"data":"topic
# /market/match:NOPE-USDT is not found"}` (third-party captures, docs/VENUES.md §12 "Subscribe
# failures"). Read by pattern: the detail may be cut at 1 KiB.
_NOT_FOUND = re.compile(r'"type":\s*"error".*"code":\s*404.*is not found')
_REQUEST_ID = re.compile(r'"id":\s*"?(\d+)"?')


def _opens_later_ms(value: Any) -> bool:
    try:
        return int(value) > time.time() * 1000
    except (TypeError, ValueError):
        return False


_FUTURES_STATUS = {"Open": TRADING, "Init": PRE_TRADING, "Paused": HALTED, "CancelOnly": HALTED}  # settled...: closed
PERPETUAL = "FFWCSX"  # contract `type` of perpetuals (FFICSX: dated futures)
BULLET = HttpRequest("POST", "/api/v1/bullet-public")  # no auth (§5.1)


def connect_url_from_bullet(body: str | bytes, connect_id: str) -> str:
    """`endpoint?token=..&connectId=..` from a bullet-public response (§5.1)."""
    reply = exact_json(body)
    if reply.get("code") != "200000":
        raise InvalidInputError(f"KuCoin bullet-public refused: {reply.get('code')} {reply.get('msg', '')}".rstrip())
    data = reply["data"]
    endpoint = data["instanceServers"][0]["endpoint"]
    return f"{endpoint}?{urlencode({'token': data['token'], 'connectId': connect_id})}"


@dataclass(frozen=True, kw_only=True)
class KucoinSpec(VenueSpec):
    topic_prefix: str  # trade topic, symbols comma-joined after it
    instruments_path: str
    trades_path: str

    def connect_url(self, symbols: Sequence[str] = ()) -> str:
        raise InvalidInputError(f"{self.id} connects with a fresh token: use resolve_connection(http)")

    async def resolve_connection(
        self, http: HttpFetch, symbols: Sequence[str] = (), *, connect_id: str | None = None
    ) -> str:
        return (await self.resolve(http, symbols, connect_id=connect_id))[0]

    async def resolve(
        self, http: HttpFetch, symbols: Sequence[str] = (), *, connect_id: str | None = None
    ) -> tuple[str, HeartbeatRule]:
        # Each connection takes a new token; tokens expire, so never reuse one across reconnects.
        body = await http(self.rest_url, BULLET)
        url = connect_url_from_bullet(body, connect_id or uuid.uuid4().hex)
        # "send ping every pingInterval ms; no message within pingTimeout: reconnect" (§5.1 step 4):
        # the token's values, not ours, so a change on KuCoin's side reaches the client.
        try:
            server = exact_json(body)["data"]["instanceServers"][0]
            interval_s = int(server["pingInterval"]) / 1000
            timeout_s = int(server["pingTimeout"]) / 1000
        except (KeyError, IndexError, TypeError, ValueError):
            return url, self.heartbeat
        if interval_s <= 0 or timeout_s <= 0:
            return url, self.heartbeat
        return url, replace(self.heartbeat, interval_s=interval_s, timeout_s=timeout_s)

    def ping_frame(self) -> str | None:
        if self.heartbeat.ping_frame is None:  # a rule without a ping sends none
            return None
        return dumps({"id": str(time.time_ns() // 1_000_000), "type": "ping"})  # id echoed by the pong

    def _topic(self, symbol: str) -> str:
        return symbol

    def _render(self, op: str, topics: list[Any], request_id: int) -> str:
        return dumps(
            {
                "id": request_id,
                "type": op,
                "topic": self.topic_prefix + ",".join(topics),
                "privateChannel": False,
                "response": True,
            }
        )

    def rejected_request(self, detail: str) -> int | None:
        # The refusal echoes our request's id and names the topic; whether a topic of several
        # symbols is refused whole or only its unknown ones is not documented, so the strictest
        # reading holds: none is subscribed, and the request is split to find the unknown ones.
        if not _NOT_FOUND.search(detail):
            return None
        m = _REQUEST_ID.search(detail)
        return int(m.group(1)) if m else None

    def instruments_request(self) -> list[HttpRequest]:
        return [HttpRequest("GET", self.instruments_path)]

    def parse_instruments(self, bodies: Sequence[str | bytes]) -> list[Instrument]:
        out = []
        for body in bodies:
            for s in exact_json(body)["data"]:
                if s.get("quoteCurrency") != "USDT":
                    continue
                if self.kind == "spot":
                    # enableTrading is false for a pair listed before it opens (docs/VENUES.md §12) and for
                    # a suspended one: `tradingStartTime` (ms, "official opening time", KuCoin
                    # docs-new get-all-symbols) in the future tells the first.
                    status = TRADING if s.get("enableTrading") is True else HALTED
                    if status == HALTED and _opens_later_ms(s.get("tradingStartTime")):
                        status = PRE_TRADING
                    out.append(make_instrument(self.id, s["symbol"], s["baseCurrency"], "USDT", "spot", status=status))
                    continue
                if s.get("type") != PERPETUAL or s.get("settleCurrency") != "USDT" or s.get("isInverse") is True:
                    continue
                out.append(
                    make_instrument(
                        self.id,
                        s["symbol"],
                        s["baseCurrency"],
                        "USDT",
                        "perp",
                        status=_FUTURES_STATUS.get(s.get("status"), CLOSED),
                        contract_multiplier=s["multiplier"],  # `size` is in contracts of this much base (§6)
                        aliases=ALIASES,
                    )
                )
        return out

    def backfill_requests(
        self,
        symbol: str,
        *,
        after_id: str | int | None = None,
        before_id: str | int | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> list[HttpRequest]:
        # the last 100 trades, no paging parameters at all (§5.3, §6)
        return [HttpRequest("GET", self.trades_path, {"symbol": symbol})]

    def parse_backfill(
        self, body: str | bytes, symbol: str, *, instrument: Instrument | None = None
    ) -> list[BackfillRow]:
        out = []
        for r in exact_json(body)["data"]:
            # `sequence` keys KuCoin trades on the stream too (the parsers take it over `tradeId`,
            # which is a hex ObjectId on older symbols): a backfill dedupes against the stream.
            trade_id = r["sequence"]
            ts = r["time"] if self.kind == "spot" else r["ts"]  # both ns integers
            out.append(backfill_row(self.id, symbol, trade_id, r["price"], r["size"], taker_side(r["side"]), int(ts)))
        return out


_HEARTBEAT = HeartbeatRule(
    who="client",
    interval_s=18,  # bullet `pingInterval` 18000 ms (§5.1)
    timeout_s=10,  # bullet `pingTimeout` 10000 ms
    ping_frame='{"id":"1545910590801","type":"ping"}',
    pong_frame='{"id":"1545910590801","type":"pong"}',
)
# What the exchange's specs share; each adds its own fields (a partial, so mypy checks them all).
_spec = partial(
    KucoinSpec,
    exchange="kucoin",
    ws_path="/",
    max_topics_per_subscribe=100,  # "100 topics per batch subscription" (§5.1)
    max_client_messages_per_s=100 / 10,  # "100 uplink messages per 10 s" (§5.1)
    subscribe_after_welcome=True,  # wait for {"type":"welcome"} before subscribing (§5.1)
    # A connection lives as long as its token, reported to be ~24 h (third party; the official text
    # names none): the connection rotates to a fresh token ahead of that. Rotating early when
    # tokens last longer costs one overlapping connection for a moment, so the guess is safe.
    connection_lifetime_s=DAY_S,
    heartbeat=_HEARTBEAT,
    # 30 new connections / min; spot and futures REST share the per-IP Public pool (2,000 / 30 s),
    # paced here at the heavier of the two requests (futures' weight 5) for both (§5.1, §5.3, §12).
    connect_budget=connect_budget("kucoin", 30, 60.0, "VENUES §5.1, §12"),
    rest_budget=rest_budget("kucoin", 2000 / 30 / 5, "VENUES §5.3, §12"),
)

SPOT: KucoinSpec = _spec(
    id="kucoin-spot",
    kind="spot",
    ws_url="wss://ws-api-spot.kucoin.com",  # what bullet-public returns today; the bullet's endpoint wins
    rest_url="https://api.kucoin.com",
    max_streams_per_connection=400,  # "400 topics per connection (spot)" (§5.1)
    # market/histories: last 100, weight 3 of the public pool's 2,000 / 30 s (§5.3)
    backfill=BackfillRule(reach="recent_only", max_rows=100, max_age_s=None, requests_per_s=2000 / 30 / 3),
    topic_prefix="/market/match:",
    instruments_path="/api/v2/symbols",
    trades_path="/api/v1/market/histories",
)

FUTURES: KucoinSpec = _spec(
    id="kucoin-futures",
    kind="perp",
    ws_url="wss://ws-api-futures.kucoin.com",
    rest_url="https://api-futures.kucoin.com",
    max_streams_per_connection=400,  # futures have no per-connection cap (§5.1); we keep spot's
    # trade/history: last 100, weight 5 (§6)
    backfill=BackfillRule(reach="recent_only", max_rows=100, max_age_s=None, requests_per_s=2000 / 30 / 5),
    topic_prefix="/contractMarket/execution:",
    instruments_path="/api/v1/contracts/active",
    trades_path="/api/v1/trade/history",
)
