"""Gate v4 spot and USDT futures (VENUES §7, §8)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from .._core import FLAGS
from ..errors import InvalidInputError
from . import (
    CLOSED,
    DAY_S,
    DELISTING,
    HALTED,
    PRE_TRADING,
    TRADING,
    UNDOCUMENTED_STREAMS_PER_CONNECTION,
    BackfillRow,
    BackfillRule,
    HeartbeatRule,
    HistoryOutOfReach,
    HttpRequest,
    Instrument,
    VenueSpec,
    backfill_row,
    dumps,
    exact_json,
    make_instrument,
    taker_side,
    to_ns,
)

# buyable/sellable pairs still print trades (one side only), so they count as trading.
_SPOT_STATUS = {"tradable": TRADING, "buyable": TRADING, "sellable": TRADING, "untradable": HALTED}
_FUTURES_STATUS = {
    "trading": TRADING,
    "prelaunch": PRE_TRADING,
    "delisting": DELISTING,
    "delisted": CLOSED,
    "circuit_breaker": HALTED,
}
_REQUEST_ID = re.compile(r'"id":\s*(\d+)')
_ERROR = re.compile(r'"error":\s*\{')


def _delisted(pair: dict[str, Any]) -> bool:
    """An untradable spot pair past its `delisting_time` (Unix seconds, "expected time to remove
    the shelves", 0 when none): delisted, kept in `currency_pairs` until Gate purges it."""
    try:
        at = int(pair.get("delisting_time") or 0)
    except (TypeError, ValueError):
        return False
    return 0 < at <= time.time()


def _opens_later(pair: dict[str, Any]) -> bool:
    """An untradable spot pair whose buying or selling starts in the future (`buy_start` /
    `sell_start`, Unix seconds) is a listing not open yet, not a suspension."""
    now = time.time()
    for key in ("buy_start", "sell_start"):
        try:
            if int(pair.get(key) or 0) > now:
                return True
        except (TypeError, ValueError):
            continue
    return False


MAX_SPOT_OFFSET = 100_000  # spot trades: limit * (page - 1) <= 100000 (§7.3)


@dataclass(frozen=True, kw_only=True)
class GateSpec(VenueSpec):
    channel_prefix: str  # "spot" or "futures": channels spot.trades / futures.ping ...
    instruments_path: str
    trades_path: str
    symbol_param: str  # currency_pair (spot) or contract (futures)

    def ping_frame(self) -> str | None:
        if self.heartbeat.ping_frame is None:  # a rule without a ping sends none
            return None
        # Gate requests carry `time` (docs: within 60 s of server time, §7.1)
        return dumps({"time": int(time.time()), "channel": f"{self.channel_prefix}.ping"})

    def _topic(self, symbol: str) -> str:
        return symbol

    def _render(self, op: str, topics: list[Any], request_id: int) -> str:
        return dumps(
            {
                "time": int(time.time()),
                "id": request_id,
                "channel": f"{self.channel_prefix}.trades",
                "event": op,
                "payload": topics,
            }
        )

    def rejected_request(self, detail: str) -> int | None:
        # `{"id":7,...,"event":"subscribe","error":{"code":2,"message":"unknown contract X"},
        # "result":{"status":"fail"}}`: the whole request failed, none of its symbols is
        # subscribed (VENUES §12). Read by pattern: the detail may be cut at 1 KiB.
        if '"event":"subscribe"' not in detail or not _ERROR.search(detail):
            return None
        m = _REQUEST_ID.search(detail)
        return int(m.group(1)) if m else None

    def instruments_request(self) -> list[HttpRequest]:
        return [HttpRequest("GET", self.instruments_path)]

    def parse_instruments(self, bodies: Sequence[str | bytes]) -> list[Instrument]:
        out = []
        for body in bodies:
            for s in exact_json(body):
                if self.kind == "spot":
                    if s.get("quote") != "USDT":
                        continue
                    status = _SPOT_STATUS.get(s.get("trade_status"), HALTED)
                    if status == HALTED and _opens_later(s):
                        status = PRE_TRADING  # a new pair before its opening time (docs/VENUES.md §12)
                    elif status == HALTED and _delisted(s):
                        status = CLOSED  # kept in the list after its delisting time, until purged
                    out.append(make_instrument(self.id, s["id"], s["base"], "USDT", "spot", status=status))
                    continue
                base, _, quote = s["name"].partition("_")
                if quote != "USDT":
                    continue
                status = _FUTURES_STATUS.get(s.get("status"), TRADING if "status" not in s else HALTED)
                if status == TRADING and s.get("in_delisting") is True:
                    # "in_delisting=true and position_size=0 indicates the contract is delisted"
                    # (Gate's Contract schema); with positions left it is in its transition period.
                    # (numbers arrive as their text: exact_json)
                    status = CLOSED if "status" not in s and str(s.get("position_size")) == "0" else DELISTING
                out.append(
                    make_instrument(
                        self.id,
                        s["name"],
                        base,
                        "USDT",
                        "perp",
                        status=status,
                        contract_multiplier=s["quanto_multiplier"],
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
        # Ids cannot be asked for (`last_id` is no longer supported/recommended): a hole is a time range
        # in whole seconds, widened outwards; overlap is deduplicated by id downstream (§7.3, §8).
        params = {self.symbol_param: symbol, "limit": str(self.backfill.max_rows)}
        if start_ns is not None:
            params["from"] = str(start_ns // 1_000_000_000)
        if end_ns is not None:
            params["to"] = str(-(-end_ns // 1_000_000_000))
        params.update({"page": "1"} if self.kind == "spot" else {"offset": "0"})
        return [HttpRequest("GET", self.trades_path, params, dict(self.headers))]

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
        if len(rows) < limit:
            return None
        params = dict(previous.params)
        if self.kind == "spot":
            page = int(params["page"]) + 1
            if limit * (page - 1) > MAX_SPOT_OFFSET:
                return self._range_before(previous, rows)
            params["page"] = str(page)
        else:
            params["offset"] = str(int(params["offset"]) + limit)
        return HttpRequest(previous.method, previous.path, params, previous.headers)

    def _range_before(self, previous: HttpRequest, rows: Sequence[BackfillRow]) -> HttpRequest | None:
        """Past the spot page cap (`limit * (page - 1) <= 100000`, §7.3) Gate refuses deeper pages.
        Rows come newest first, so the same range cut at the oldest second reached, from page 1,
        reaches the older trades (`to` is whole seconds: the rows of that second and the next come
        again, deduplicated by id downstream). None when that cuts nothing off: more trades than
        the cap lets one query page through fell within those two seconds."""
        params = dict(previous.params)
        to = str(min(r["ts_ns"] for r in rows) // 1_000_000_000 + 1)
        if "to" in params and int(to) >= int(params["to"]):
            return None
        params.update({"to": to, "page": "1"})
        return HttpRequest(previous.method, previous.path, params, previous.headers)

    def next_history_request(
        self, previous: HttpRequest, rows: Sequence[BackfillRow], start_ns: int, end_ns: int
    ) -> HttpRequest | None:
        nxt = self.next_backfill_request(previous, rows, start_ns=start_ns, end_ns=end_ns)
        if nxt is None and self.kind == "spot" and len(rows) >= int(previous.params["limit"]):
            reached = min(r["ts_ns"] for r in rows)
            if reached > start_ns:
                raise HistoryOutOfReach(
                    f"Gate spot serves at most {MAX_SPOT_OFFSET:,} rows past "
                    f"a query's first page and more than that fell within two seconds of "
                    f"{reached // 1_000_000_000} (docs/VENUES.md §7.3)",
                    reached,
                )
        return nxt

    def parse_backfill(
        self, body: str | bytes, symbol: str, *, instrument: Instrument | None = None
    ) -> list[BackfillRow]:
        rows = exact_json(body)
        return [self._spot_row(r, symbol) if self.kind == "spot" else self._futures_row(r, symbol) for r in rows]

    def _spot_row(self, r: dict, symbol: str) -> BackfillRow:
        # sequence_id is the per-market consecutive id, the WS `id_market`; `id` is all-market (§7.2, §7.3)
        if "sequence_id" not in r:
            raise InvalidInputError(f"gate-spot trade row without sequence_id: {r}")
        ts = to_ns(r["create_time_ms"], 1_000_000) if "create_time_ms" in r else to_ns(r["create_time"], 1_000_000_000)
        return backfill_row(self.id, symbol, r["sequence_id"], r["price"], r["amount"], taker_side(r["side"]), ts)

    def _futures_row(self, r: dict, symbol: str) -> BackfillRow:
        # size > 0: taker bought, < 0: taker sold; in contracts of quanto_multiplier (§8)
        size = str(r["size"])
        side = "sell" if size.startswith("-") else "buy"
        if "create_time_ms" in r:
            # REST writes create_time_ms in seconds with three decimals (1787319911.612: Gate's SDK
            # docs, ccxt PR #25299), whatever its name says; a value of 10^11 or more is taken as the
            # milliseconds of the name (no time in seconds reaches it before the year 5138).
            ms = str(r["create_time_ms"])
            ts = to_ns(ms, 1_000_000 if len(ms.split(".")[0].lstrip("-")) > 11 else 1_000_000_000)
        else:
            ts = to_ns(r["create_time"], 1_000_000_000)
        flags = FLAGS["INTERNAL"] if r.get("is_internal") is True else 0
        return backfill_row(self.id, symbol, r["id"], r["price"], size.lstrip("-"), side, ts, flags)


# What the exchange's specs share; each adds its own fields (a partial, so mypy checks them all).
_spec = partial(
    GateSpec,
    exchange="gate",
    rest_url="https://api.gateio.ws",
    max_streams_per_connection=UNDOCUMENTED_STREAMS_PER_CONNECTION,  # not documented
    max_topics_per_subscribe=100,  # not documented; subscriptions add up across requests (§7.1)
    max_connections=300,  # per IP (§7.1)
)

SPOT: GateSpec = _spec(
    id="gate-spot",
    kind="spot",
    ws_url="wss://api.gateio.ws",
    ws_path="/ws/v4/",
    # The server pings at protocol level (answered by websockets); our app-level spot.ping also resets
    # the server's timer and proves a quiet connection alive (§7.1).
    heartbeat=HeartbeatRule(
        who="client",
        interval_s=10,
        timeout_s=10,
        ping_frame='{"time":1611541000,"channel":"spot.ping"}',
        pong_frame='{"time":1611541000,"channel":"spot.pong","event":"","error":null,"result":null}',
    ),
    # spot trades: limit max 1000, the last 30 days by default, 200 requests / 10 s (§7.1, §7.3)
    backfill=BackfillRule(reach="by_time", max_rows=1000, max_age_s=30 * DAY_S, requests_per_s=200 / 10),
    # spot/trades by from/to + page: 30 days back (§7.3, §11 item 4)
    history_source="rest-history",
    history_max_age_s=30 * DAY_S,
    channel_prefix="spot",
    instruments_path="/api/v4/spot/currency_pairs",
    trades_path="/api/v4/spot/trades",
    symbol_param="currency_pair",
)

FUTURES: GateSpec = _spec(
    id="gate-futures",
    kind="perp",
    ws_url="wss://fx-ws.gateio.ws",
    ws_path="/v4/ws/usdt",
    heartbeat=HeartbeatRule(
        who="client",
        interval_s=10,
        timeout_s=10,
        ping_frame='{"time":1611541000,"channel":"futures.ping"}',
        pong_frame='{"time":1611541000,"channel":"futures.pong","event":"","error":null,"result":null}',
    ),
    # futures trades: from/to + offset, no documented age limit (§8)
    backfill=BackfillRule(reach="by_time", max_rows=1000, max_age_s=None, requests_per_s=200 / 10),
    history_source="rest-history",  # futures trades by from/to, no age limit documented (§8, §11 item 4)
    channel_prefix="futures",
    # Without it Gate truncates sizes toward zero on decimal-enabled contracts: 1.7 contracts
    # arrive as 1, 0.25 as 0 (VENUES §8; tardis-node gateiofutures.ts sends it on the handshake).
    headers={"X-Gate-Size-Decimal": "1"},
    instruments_path="/api/v4/futures/usdt/contracts",
    trades_path="/api/v4/futures/usdt/trades",
    symbol_param="contract",
)
