"""Bybit v5 spot and linear (VENUES §3)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from .._core import FLAGS
from . import (
    CLOSED,
    HALTED,
    PRE_TRADING,
    TRADING,
    UNDOCUMENTED_STREAMS_PER_CONNECTION,
    BackfillRow,
    BackfillRule,
    HeartbeatRule,
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
    to_ns,
)

_STATUS = {"Trading": TRADING, "PreLaunch": PRE_TRADING, "Delivering": HALTED, "Closed": CLOSED}
# A subscribe refused for unknown symbols: `{"success":false,"ret_msg":"Invalid symbol
# :[publicTrade.NOPEUSDT]",...,"req_id":"3","op":"subscribe"}` (third-party clients' captured
# frames, docs/VENUES.md §12 "Subscribe failures"). Read by pattern: the detail may be cut at 1 KiB.
_INVALID_SYMBOL = re.compile(r'"ret_msg":\s*"Invalid symbol\s*:\s*\[([^\]"]*)')
_REQ_ID = re.compile(r'"req_id":\s*"(\d+)"')
_FAILED = re.compile(r'"success":\s*false')


@dataclass(frozen=True, kw_only=True)
class BybitSpec(VenueSpec):
    category: str  # the v5 `category` of every REST call: "spot" or "linear"

    def _topic(self, symbol: str) -> str:
        return f"publicTrade.{symbol}"

    def _render(self, op: str, topics: list[Any], request_id: int) -> str:
        return dumps({"req_id": str(request_id), "op": op, "args": topics})

    def rejected_request(self, detail: str) -> int | None:
        # Bybit names the unknown topics of a refused subscribe and echoes our `req_id`; whether
        # it still takes the request's other topics is not documented, so the strictest reading
        # holds: none of them is subscribed (docs/VENUES.md §12 "Subscribe failures").
        if not _FAILED.search(detail) or not _INVALID_SYMBOL.search(detail):
            return None
        m = _REQ_ID.search(detail)
        return int(m.group(1)) if m else None

    def refused_symbols(self, detail: str) -> list[str]:
        m = _INVALID_SYMBOL.search(detail) if _FAILED.search(detail) else None
        if m is None:
            return []
        topics = [t.strip() for t in m.group(1).split(",")]
        return [t.removeprefix("publicTrade.") for t in topics if t.startswith("publicTrade.")]

    def instruments_request(self) -> list[HttpRequest]:
        # linear is paged (limit 1..1000, cursor); spot answers in one page. Only `Trading`
        # instruments come back unless `status=PreLaunch` is asked for (docs/VENUES.md §12).
        base = {"category": self.category, "limit": "1000"}
        return [
            HttpRequest("GET", "/v5/market/instruments-info", base),
            HttpRequest("GET", "/v5/market/instruments-info", {**base, "status": "PreLaunch"}),
        ]

    def next_instruments_request(self, previous: HttpRequest, body: str | bytes) -> HttpRequest | None:
        cursor = exact_json(body)["result"].get("nextPageCursor") or ""
        if not cursor:
            return None
        return HttpRequest(previous.method, previous.path, {**previous.params, "cursor": cursor})

    def parse_instruments(self, bodies: Sequence[str | bytes]) -> list[Instrument]:
        out = []
        for body in bodies:
            for s in exact_json(body)["result"]["list"]:
                if s.get("quoteCoin") != "USDT":
                    continue
                # USDC perps and dated USDT futures share the linear category; keep USDT perpetuals.
                if self.kind == "perp" and (
                    s.get("contractType") != "LinearPerpetual" or s.get("settleCoin", "USDT") != "USDT"
                ):
                    continue
                status = _STATUS.get(s.get("status"), HALTED)
                out.append(make_instrument(self.id, s["symbol"], s["baseCoin"], "USDT", self.kind, status=status))
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
        # recent-trade: the latest N only, no cursor, no time range (§3.3)
        params = {"category": self.category, "symbol": symbol, "limit": str(self.backfill.max_rows)}
        return [HttpRequest("GET", "/v5/market/recent-trade", params)]

    def parse_backfill(
        self, body: str | bytes, symbol: str, *, instrument: Instrument | None = None
    ) -> list[BackfillRow]:
        out = []
        for r in exact_json(body)["result"]["list"]:
            flags = (FLAGS["RPI"] if r.get("isRPITrade") is True else 0) | (
                FLAGS["BLOCK_TRADE"] if r.get("isBlockTrade") is True else 0
            )
            # execId is the WS `i` (§3.3), so REST rows and WS trades deduplicate on it.
            out.append(
                backfill_row(
                    self.id,
                    symbol,
                    r["execId"],
                    r["price"],
                    r["size"],
                    taker_side(r["side"]),
                    to_ns(r["time"], 1_000_000),
                    flags,
                )
            )
        return out


# What the exchange's specs share; each adds its own fields (a partial, so mypy checks them all).
_spec = partial(
    BybitSpec,
    exchange="bybit",
    ws_url="wss://stream.bybit.com",
    rest_url="https://api.bybit.com",
    # No documented count per connection; the documented budget is 21,000 characters of `args` (§3.1).
    max_streams_per_connection=UNDOCUMENTED_STREAMS_PER_CONNECTION,
    max_subscription_chars_per_connection=21_000,
    # Client ping every 20 s recommended; no ping and no data for 10 min cuts the connection (§3.1).
    heartbeat=HeartbeatRule(
        who="client",
        interval_s=20,
        timeout_s=10,
        ping_frame='{"op":"ping"}',
        pong_frame='{"success":true,"ret_msg":"pong","conn_id":"…","op":"ping"}',
    ),
    # Per IP, spot and linear together (one host each for WS and REST): 500 connections / 5 min;
    # REST 600 / 5 s, and after a 403 "access too frequent" nothing for 10 minutes (§3.1, §12).
    connect_budget=connect_budget("bybit", 500, 300.0, "VENUES §3.1, §12; bybit rate-limit.mdx"),
    rest_budget=rest_budget("bybit", 600 / 5, "VENUES §3.1"),
    rest_holds=((403, 600.0),),
)

SPOT: BybitSpec = _spec(
    id="bybit-spot",
    kind="spot",
    ws_path="/v5/public/spot",
    max_topics_per_subscribe=10,  # "spot: ≤10 args per subscribe request" (§3.1)
    # spot recent-trade: limit 1..60; REST 600 requests / 5 s per IP (§3.1, §3.3)
    backfill=BackfillRule(reach="recent_only", max_rows=60, max_age_s=None, requests_per_s=600 / 5),
    category="spot",
)

LINEAR: BybitSpec = _spec(
    id="bybit-linear",
    kind="perp",
    ws_path="/v5/public/linear",
    max_topics_per_subscribe=None,  # "linear: no args limit" (§3.1)
    backfill=BackfillRule(reach="recent_only", max_rows=1000, max_age_s=None, requests_per_s=600 / 5),  # §3.3
    category="linear",
)
