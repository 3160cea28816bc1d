"""Phemex spot and USDⓈ-M perpetuals (VENUES §9)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from . import (
    CLOSED,
    HALTED,
    TRADING,
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
    unscale,
)

_STATUS = {"Listed": TRADING, "Delisted": CLOSED}
# A subscribe Phemex refuses: `{"error":{"code":6001,"message":"invalid argument"},"id":1,
# "result":null}` (a captured frame, docs/VENUES.md §12 "Subscribe failures"). Read by pattern.
_INVALID_ARGUMENT = re.compile(r'"error":\s*\{\s*"code":\s*6001,\s*"message":\s*"invalid argument"')
_REQUEST_ID = re.compile(r'"id":\s*(\d+)')
SPOT_PRICE_SCALE = 8  # "All spot symbols use the same price ... scale factors (Ep) = 8" (§9.2)
DEFAULT_QTY_SCALE = 8  # the base currency's valueScale; 8 for every currency in the recordings (§9.2)


def content_id(ts_ns: int, side: str, price: str, qty: str, ordinal: int = 1) -> str:
    """Phemex has no trade id (§9.2), so a trade is keyed by its content, exactly as the WS parser
    keys it: `<ts_ns>:<b|s>:<price>:<qty>`, and `#k` on the k-th (k >= 2) identical row of one
    body, so a REST snapshot and a WS snapshot of the same fills produce the same ids."""
    key = f"{ts_ns}:{side[0]}:{price}:{qty}"
    return key if ordinal == 1 else f"{key}#{ordinal}"


@dataclass(frozen=True, kw_only=True)
class PhemexSpec(VenueSpec):
    method_prefix: str  # trade (spot) or trade_p (USDⓈ-M)
    trades_path: str
    trades_key: str  # `trades` (scaled integers) or `trades_p` (decimal strings)
    #: Venues with the same `client_budget` share `max_connections`: spot and contracts use the
    #: one gateway, and its 5 connections per client are for both (§9.1).
    client_budget: str = "phemex"
    #: 24 h tickers of every symbol in one request, with turnover in USDT: spot `turnoverEv`
    #: (scaled by the quote currency's valueScale, 8 for USDT), USDⓈ-M `turnoverRv` (decimal
    #: string). Third-party live check (2026-09), paths also in ccxt's phemex API list.
    turnover_path: str = ""

    def turnover_request(self) -> HttpRequest:
        return HttpRequest("GET", self.turnover_path)

    def parse_turnover(self, body: str | bytes) -> dict[str, Decimal]:
        """Symbol -> 24 h turnover in USDT (exact); rows it cannot read are left out."""
        doc = exact_json(body)
        rows = doc.get("result") if isinstance(doc, dict) else None
        if isinstance(rows, dict):
            rows = rows.get("list") or rows.get("rows")
        out: dict[str, Decimal] = {}
        for row in rows or []:
            try:
                if self.kind == "spot":
                    out[row["symbol"]] = Decimal(unscale(str(row["turnoverEv"]), DEFAULT_QTY_SCALE))
                else:
                    out[row["symbol"]] = Decimal(str(row["turnoverRv"]))
            except (KeyError, TypeError, ValueError, InvalidOperation):
                continue
        return out

    def _topic(self, symbol: str) -> str:
        return symbol

    def _render(self, op: str, topics: list[Any], request_id: int) -> str:
        return dumps({"id": request_id, "method": f"{self.method_prefix}.{op}", "params": topics})

    def rejected_request(self, detail: str) -> int | None:
        # One symbol per request (§9.1): the refused request names its symbol.
        if not _INVALID_ARGUMENT.search(detail):
            return None
        m = _REQUEST_ID.search(detail)
        return int(m.group(1)) if m else None

    def instruments_request(self) -> list[HttpRequest]:
        return [HttpRequest("GET", "/public/products")]

    def parse_instruments(self, bodies: Sequence[str | bytes]) -> list[Instrument]:
        out = []
        for body in bodies:
            data = exact_json(body)["data"]
            if self.kind == "spot":
                value_scales = {c["currency"]: int(c["valueScale"]) for c in data.get("currencies", [])}
                for p in data.get("products", []):
                    if p.get("type") != "Spot" or p.get("quoteCurrency") != "USDT":
                        continue
                    base = p["baseCurrency"]
                    out.append(
                        make_instrument(
                            self.id,
                            p["symbol"],
                            base,
                            "USDT",
                            "spot",
                            status=_STATUS.get(p.get("status"), HALTED),
                            price_scale=int(p.get("priceScale", SPOT_PRICE_SCALE)),
                            qty_scale=value_scales.get(base, DEFAULT_QTY_SCALE),
                        )
                    )
                continue
            for p in data.get("perpProductsV2", []):
                if p.get("settleCurrency") != "USDT" or p.get("quoteCurrency") != "USDT":
                    continue
                # trades_p sizes are real base quantities, so the multiplier is 1 (§9.2)
                out.append(
                    make_instrument(
                        self.id,
                        p["symbol"],
                        p["baseCurrency"],
                        "USDT",
                        "perp",
                        status=_STATUS.get(p.get("status"), HALTED),
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
        return [HttpRequest("GET", self.trades_path, {"symbol": symbol})]  # recent snapshot only (§9.3)

    def parse_backfill(
        self, body: str | bytes, symbol: str, *, instrument: Instrument | None = None
    ) -> list[BackfillRow]:
        price_scale = instrument.price_scale if instrument and instrument.price_scale is not None else SPOT_PRICE_SCALE
        qty_scale = instrument.qty_scale if instrument and instrument.qty_scale is not None else DEFAULT_QTY_SCALE
        out = []
        seen: Counter[tuple] = Counter()
        for ts, side, price, qty in (row[:4] for row in exact_json(body)["result"][self.trades_key]):
            if self.kind == "spot":  # priceEp, qty scaled integers (§9.2)
                price, qty = unscale(price, price_scale), unscale(qty, qty_scale)
            side = taker_side(side)
            ts_ns = int(ts)  # > 2^53: kept as integer text by exact_json, never a float
            seen[ts_ns, side, price, qty] += 1
            trade_id = content_id(ts_ns, side, price, qty, seen[ts_ns, side, price, qty])
            out.append(backfill_row(self.id, symbol, trade_id, price, qty, side, ts_ns))
        return out


# What the exchange's specs share; each adds its own fields (a partial, so mypy checks them all).
_spec = partial(
    PhemexSpec,
    exchange="phemex",
    ws_url="wss://ws.phemex.com",
    ws_path="",  # "further URI or querystring not allowed" (§9.1)
    rest_url="https://api.phemex.com",
    max_streams_per_connection=20,  # "20 subscriptions per connection" (§9.1)
    max_topics_per_subscribe=1,  # one symbol per request (§9.1)
    max_client_messages_per_s=20,  # "20 requests/s per connection" (§9.1)
    max_connections=5,  # "5 concurrent connections per client" (§9.1)
    # The client must ping at least every 30 s, 5 s recommended; reconnect after 3 silent intervals (§9.1).
    heartbeat=HeartbeatRule(
        who="client",
        interval_s=5,
        timeout_s=15,
        ping_frame='{"id":0,"method":"server.ping","params":[]}',
        pong_frame='{"error":null,"id":0,"result":"pong"}',
    ),
    # Recent trades only; the count REST returns is undocumented, so we rely on the WS snapshot's
    # documented 200 (recordings show up to 1000). REST IP limit 5,000 / 5 min (§9.1, §9.2).
    backfill=BackfillRule(reach="recent_only", max_rows=200, max_age_s=None, requests_per_s=5000 / 300),
    # One gateway for both markets: 200 connections / 5 min per IP; REST 5,000 / 5 min per IP (§9.1).
    connect_budget=connect_budget("phemex", 200, 300.0, "VENUES §9.1"),
    rest_budget=rest_budget("phemex", 5000 / 300, "VENUES §9.1"),
)

SPOT: PhemexSpec = _spec(
    id="phemex-spot",
    kind="spot",
    method_prefix="trade",
    trades_path="/md/trade",
    trades_key="trades",
    turnover_path="/md/spot/ticker/24hr/all",
)

PERP: PhemexSpec = _spec(
    id="phemex-perp",
    kind="perp",
    method_prefix="trade_p",
    trades_path="/md/v2/trade",
    trades_key="trades_p",
    turnover_path="/md/v3/ticker/24hr/all",
)
