"""OKX v5 SPOT and SWAP (VENUES §4)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

from . import (
    DAY_S,
    HALTED,
    PRE_TRADING,
    TRADING,
    UNDOCUMENTED_STREAMS_PER_CONNECTION,
    BackfillRow,
    BackfillRule,
    HeartbeatRule,
    HttpRequest,
    Instrument,
    VenueAnswerError,
    VenueSpec,
    backfill_row,
    connect_budget,
    dumps,
    exact_json,
    make_instrument,
    rest_budget,
    taker_side,
    to_ns,
)


def _data(body: str | bytes) -> list[Any]:
    """The `data` of an OKX REST answer. OKX answers some refusals with HTTP 200, a `code` other
    than "0" and an empty `data` (51001 "Instrument ID doesn't exist"): that is an error, never an
    empty answer."""
    answer = exact_json(body)
    code = answer.get("code", "0") if isinstance(answer, dict) else "0"
    if code != "0":
        raise VenueAnswerError(f"OKX answered code {code}: {str(answer.get('msg', ''))[:200]}")
    return answer["data"]


_STATUS = {"live": TRADING, "preopen": PRE_TRADING, "suspend": HALTED}
_HISTORY = "/api/v5/market/history-trades"

# `trades-all` (one fill per push, tradeId +1) rather than `trades` (aggregated with `count`): a tick
# recorder wants every fill (§4.2). It is served on /ws/v5/business, not /ws/v5/public (§4.1).
CHANNEL = "trades-all"
#: Where each trade channel is served (§4.1); a channel asked for on the other path is refused.
CHANNEL_PATHS = {"trades-all": "/ws/v5/business", "trades": "/ws/v5/public"}
#: OKX's codes for a channel refused to this client: 60011 "Please log in" (a logged-in connection is
#: needed: `{"event":"error","msg":"Please log in","code":"60011"}`, a 2023 capture in
#: DogsTailFarmer/crypto-ws-api#2; ccxt maps it to AuthenticationError) and 60029 "Only users who are in
#: the whitelist are allowed to subscribe to this channel" (OKX's WebSocket error code table). OKX
#: documents `trades-all` as public, but ccxt logs in before subscribing to it: should OKX ever refuse
#: it, the recorder falls back to `trades` rather than go silent (docs/VENUES.md §4.1). Read by
#: pattern: the error's detail may be cut at 1 KiB.
_CHANNEL_REFUSED = re.compile(r'"code"\s*:\s*"600(11|29)"')
#: OKX's refusal of one subscribe argument whose instrument it does not know: code 60018, its
#: message naming the argument as sent (OKX's WebSocket error table: "Wrong URL or {0} doesn't exist.
#: Please use the correct URL, channel and parameters referring to API document."). Forms on record:
#: `channel:tickers,instId:LTC-USD doesn't exist` (2021-23: cryptofeed PR #702, okxapi/python-okx#21,
#: burakoner/OKX.Api#34), `Wrong URL or channel:…,instId:… doesn't exist. Please use …` (2024-25) and
#: `Subscribe failed, wrong URL or channel:…,instId:… doesn't exist. Please use …` (a live capture of
#: 2026-10-02). It carries our request's `id` when the request had one (docs/VENUES.md §4.1, §12
#: "OKX acks"); one error per unknown argument. Read by pattern: the detail may be cut at 1 KiB.
_UNKNOWN_INSTRUMENT_CODE = re.compile(r'"code"\s*:\s*"60018"')
_UNKNOWN_INSTRUMENT = re.compile(r"channel:([\w-]+),\s*instId:([^\s,\"\\]+) doesn't exist")
_REQUEST_ID = re.compile(r'"id"\s*:\s*"(\d+)"')


@dataclass(frozen=True, kw_only=True)
class OkxSpec(VenueSpec):
    inst_type: str  # "SPOT" or "SWAP"
    channel: str = CHANNEL  # a key of CHANNEL_PATHS; `ws_path` is its path

    def _topic(self, symbol: str) -> dict:
        return {"channel": self.channel, "instId": symbol}

    def on_channel(self, channel: str) -> OkxSpec:
        """A copy that subscribes `channel` (`trades-all` or `trades`) on the path serving it."""
        return dataclasses.replace(self, channel=channel, ws_path=CHANNEL_PATHS[channel])

    def fallback_channel(self, detail: str) -> OkxSpec | None:
        # Refused `trades-all` (no login, not whitelisted): the public `trades` channel carries the same
        # fills aggregated per taker order and price, `count` of them under the last tradeId, so
        # the id sequence stays whole and gaps stay visible (`tradeId == last + count`, §4.2).
        if self.channel != "trades-all" or not _CHANNEL_REFUSED.search(detail):
            return None
        return self.on_channel("trades")

    def rejected_request(self, detail: str) -> int | None:
        # Where the refused argument cannot be read from the message (a new wording), the request
        # is split by halves until the unknown instrument stands alone (VenueConnection).
        named = self._unknown_instruments(detail)
        if named is None or (named and not [inst for channel, inst in named if channel == self.channel]):
            return None
        m = _REQUEST_ID.search(detail)
        return int(m.group(1)) if m else None

    def refused_symbols(self, detail: str) -> list[str]:
        # The instrument OKX names: dropped, and the request's other arguments asked for again.
        # Whether OKX took them is not documented (third parties saw the good ones deliver:
        # cryptofeed PR #702, burakoner/OKX.Api#34); the strictest reading is that it did not, and
        # asking again for one it took is harmless: "resubscribing to an already-active channel
        # was harmless and did not cause errors" on one OKX connection (thrasher-corp/
        # gocryptotrader#2136, 2025).
        return [inst for channel, inst in self._unknown_instruments(detail) or () if channel == self.channel]

    def _unknown_instruments(self, detail: str) -> list[tuple[str, str]] | None:
        """The (channel, instId) pairs a 60018 names; None for any other answer. A refusal naming
        another channel than ours answers a request made before a move to the `trades` fallback,
        on a socket being replaced: asking again there, on the old path, would only be refused."""
        if not _UNKNOWN_INSTRUMENT_CODE.search(detail):
            return None
        return _UNKNOWN_INSTRUMENT.findall(detail)

    def trade_channel(self) -> str | None:
        return f"{self.channel} on {self.ws_path}"

    def _render(self, op: str, topics: list[Any], request_id: int) -> str:
        return dumps({"id": str(request_id), "op": op, "args": topics})

    def instruments_request(self) -> list[HttpRequest]:
        return [HttpRequest("GET", "/api/v5/public/instruments", {"instType": self.inst_type})]

    def parse_instruments(self, bodies: Sequence[str | bytes]) -> list[Instrument]:
        out = []
        for body in bodies:
            for s in _data(body):
                if s.get("state") == "test":  # test instruments are not markets
                    continue
                status = _STATUS.get(s.get("state"), HALTED)
                if self.kind == "spot":
                    if s.get("quoteCcy") != "USDT":
                        continue
                    out.append(make_instrument(self.id, s["instId"], s["baseCcy"], "USDT", "spot", status=status))
                    continue
                if s.get("settleCcy") != "USDT" or s.get("ctType") != "linear":
                    continue
                # SWAP `sz` is in contracts of ctVal x ctMult units of ctValCcy (§4.2).
                multiplier = s["ctVal"]
                if s.get("ctMult") not in (None, "", "1"):
                    multiplier = format(Decimal(s["ctVal"]) * Decimal(s["ctMult"]), "f")
                base = s.get("ctValCcy") or s["instId"].split("-")[0]
                out.append(
                    make_instrument(
                        self.id, s["instId"], base, "USDT", "perp", status=status, contract_multiplier=multiplier
                    )
                )
        return out

    def _page(self, symbol: str, limit: int, after: int | None = None, by_time: bool = False) -> HttpRequest:
        # type 1 pages by tradeId, type 2 by timestamp; `after` asks for records older than it (§4.3).
        params = {"instId": symbol, "type": "2" if by_time else "1", "limit": str(limit)}
        if after is not None:
            params["after"] = str(after)
        return HttpRequest("GET", _HISTORY, params)

    def backfill_requests(
        self,
        symbol: str,
        *,
        after_id: str | int | None = None,
        before_id: str | int | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> list[HttpRequest]:
        rows = self.backfill.max_rows
        if before_id is not None and after_id is not None:
            # tradeId is consecutive per instId, so the whole walk back is known: after=b, b-100, ...
            low = int(after_id)
            cursor = int(before_id)
            pages = []
            while cursor - 1 > low:
                pages.append(self._page(symbol, min(rows, cursor - 1 - low), cursor))
                cursor -= rows
            return pages
        if before_id is not None:
            return [self._page(symbol, rows, int(before_id))]
        if after_id is None and end_ns is not None:
            return [self._page(symbol, rows, -(-end_ns // 1_000_000), by_time=True)]
        return [self._page(symbol, rows)]  # newest first; follow with next_backfill_request

    def next_backfill_request(
        self,
        previous: HttpRequest,
        rows: Sequence[BackfillRow],
        *,
        after_id: str | int | None = None,
        before_id: str | int | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> HttpRequest | None:
        limit = int(previous.params["limit"])
        if len(rows) < limit or (after_id is not None and before_id is not None):
            return None
        oldest_id = min(int(r["trade_id"]) for r in rows)
        symbol = previous.params["instId"]
        if after_id is not None:
            remaining = oldest_id - 1 - int(after_id)
            return self._page(symbol, min(self.backfill.max_rows, remaining), oldest_id) if remaining > 0 else None
        if start_ns is not None:
            # trades at the boundary millisecond may sit on the next page, so go on while >= start
            return (
                self._page(symbol, self.backfill.max_rows, oldest_id)
                if min(r["ts_ns"] for r in rows) >= start_ns
                else None
            )
        if before_id is not None:  # open towards the past: the caller stops once the hole is filled
            return self._page(symbol, self.backfill.max_rows, oldest_id)
        return None

    def parse_backfill(
        self, body: str | bytes, symbol: str, *, instrument: Instrument | None = None
    ) -> list[BackfillRow]:
        return [
            backfill_row(
                self.id, symbol, r["tradeId"], r["px"], r["sz"], taker_side(r["side"]), to_ns(r["ts"], 1_000_000)
            )
            for r in _data(body)
        ]


# What the exchange's specs share; each adds its own fields (a partial, so mypy checks them all).
_spec = partial(
    OkxSpec,
    exchange="okx",
    ws_url="wss://ws.okx.com:8443",
    ws_path=CHANNEL_PATHS[CHANNEL],
    rest_url="https://www.okx.com",
    max_streams_per_connection=UNDOCUMENTED_STREAMS_PER_CONNECTION,  # no count documented for public channels
    max_topics_per_subscribe=None,  # many args per message, bounded by bytes:
    max_subscribe_bytes=64 * 1024,  # "total ≤ 64 KB" per message (§4.1)
    max_subscribe_requests_per_hour=480,  # subscribe/unsubscribe/login per connection (§4.1)
    # The server drops a connection with no push for 30 s; send "ping" when idle for N < 30 s (§4.1).
    heartbeat=HeartbeatRule(who="client", interval_s=15, timeout_s=10, ping_frame="ping", pong_frame="pong"),
    # history-trades: limit max 100, last 3 months, 20 requests / 2 s per IP (§4.3)
    backfill=BackfillRule(reach="by_id_backwards", max_rows=100, max_age_s=90 * DAY_S, requests_per_s=20 / 2),
    # history-trades: the last 3 months, by timestamp (type=2) then tradeId (§4.3, §11 item 4)
    history_source="rest-history",
    history_max_age_s=90 * DAY_S,
    # 3 connection requests / s per IP, spot and swap on the one host together (§4.1, §12).
    connect_budget=connect_budget("okx", 3, 1.0, "VENUES §4.1, §12"),
    rest_budget=rest_budget("okx", 20 / 2, "VENUES §4.3"),
)

SPOT: OkxSpec = _spec(id="okx-spot", kind="spot", inst_type="SPOT")
SWAP: OkxSpec = _spec(id="okx-swap", kind="perp", inst_type="SWAP")
