"""Binance spot and USDⓈ-M futures (VENUES §1, §2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._core import FLAGS
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
    HttpRequest,
    Instrument,
    VenueSpec,
    backfill_row,
    connect_budget,
    dumps,
    exact_json,
    make_instrument,
    to_ns,
)

_HOUR_MS = 3_600_000
# HALT, END_OF_DAY...: halted. BREAK is how exchangeInfo keeps a delisted pair (third party:
# coingecko/cryptoexchange#1718, ccxt#7304), and otherwise expected downtime in which "market data
# is not generated" (Binance's spot glossary): either way nothing trades, so it counts as closed. A
# pair back from a downtime is subscribed again at the next list fetch, and its ids show the trades
# in between, which are backfilled.
_SPOT_STATUS = {"TRADING": TRADING, "PRE_TRADING": PRE_TRADING, "BREAK": CLOSED}
_PERP_STATUS = {
    "TRADING": TRADING,
    "PENDING_TRADING": PRE_TRADING,
    "PRE_DELIVERING": CLOSED,
    "DELIVERING": CLOSED,
    "DELIVERED": CLOSED,
    "CLOSE": CLOSED,
    # How exchangeInfo keeps a delisted perpetual (third party: python-binance#1376; polyoxide-binance
    # counted 134 of 924 symbols SETTLING on 2026-10-07).
    "SETTLING": CLOSED,
}  # PRE_SETTLE: halted for a while


@dataclass(frozen=True, kw_only=True)
class BinanceSpec(VenueSpec):
    instruments_path: str
    trades_path: str
    # Where `trades_path` needs an API key (USDⓈ-M historicalTrades, §2.3), the public aggTrades
    # path that covers a hole without one, in aggregated records; None where no key is needed.
    keyless_trades_path: str | None = None
    max_keyless_rows: int = 1000  # aggTrades: max 1000 (§2.3)
    agg_trades_path: str = ""  # public aggTrades (§1.3, §2.3): a past window's first id

    @property
    def keyless(self) -> bool:
        """Holes are covered by aggTrades: the venue wants a key for single trades and has none."""
        return self.keyless_trades_path is not None and not self.api_key

    def _topic(self, symbol: str) -> str:
        return f"{symbol.lower()}@trade"  # stream names are lowercase (§1.1)

    def _render(self, op: str, topics: list[Any], request_id: int) -> str:
        return dumps({"method": op.upper(), "params": topics, "id": request_id})

    def instruments_request(self) -> list[HttpRequest]:
        return [HttpRequest("GET", self.instruments_path)]

    def parse_instruments(self, bodies: Sequence[str | bytes]) -> list[Instrument]:
        out = []
        for body in bodies:
            for s in exact_json(body)["symbols"]:
                if s.get("quoteAsset") != "USDT":
                    continue
                if self.kind == "perp":
                    if s.get("contractType") != "PERPETUAL" or s.get("marginAsset", "USDT") != "USDT":
                        continue
                    status = _PERP_STATUS.get(s.get("status"), HALTED)
                else:
                    status = _SPOT_STATUS.get(s.get("status"), HALTED)
                out.append(make_instrument(self.id, s["symbol"], s["baseAsset"], "USDT", self.kind, status=status))
        return out

    def _page(self, symbol: str, from_id: int, limit: int) -> HttpRequest:
        headers = {"X-MBX-APIKEY": self.api_key} if self.api_key and self.keyless_trades_path else {}
        return HttpRequest(
            "GET", self.trades_path, {"symbol": symbol, "fromId": str(from_id), "limit": str(limit)}, headers
        )

    def _agg_page(self, symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
        params = {
            "symbol": symbol,
            "startTime": str(start_ms),
            "endTime": str(end_ms),
            "limit": str(self.max_keyless_rows),
        }
        return HttpRequest("GET", self.keyless_trades_path or "", params)

    def _agg_requests(self, symbol: str, start_ns: int | None, end_ns: int | None) -> list[HttpRequest]:
        # aggTrades by time: "startTime-endTime < 1 h" per request, so an hour a request (§2.3).
        if start_ns is None or end_ns is None:
            raise InvalidInputError(
                f"{self.id} without an API key covers a hole by time (aggTrades): pass start_ns and end_ns"
            )
        start, end = start_ns // 1_000_000, -(-end_ns // 1_000_000)
        return [self._agg_page(symbol, t, min(end, t + _HOUR_MS - 1)) for t in range(start, end + 1, _HOUR_MS)]

    def backfill_requests(
        self,
        symbol: str,
        *,
        after_id: str | int | None = None,
        before_id: str | int | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> list[HttpRequest]:
        if self.keyless:
            return self._agg_requests(symbol, start_ns, end_ns)
        # historicalTrades pages forwards from an id; it has no time parameter (§1.3, §2.3).
        if after_id is None:
            raise InvalidInputError(
                f"{self.id} backfills by trade id (historicalTrades fromId): "
                "pass after_id, the last id held before the hole"
            )
        first = int(after_id) + 1
        rows = self.backfill.max_rows
        if before_id is None:
            return [self._page(symbol, first, rows)]
        last = int(before_id) - 1
        return [self._page(symbol, start, min(rows, last - start + 1)) for start in range(first, last + 1, rows)]

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
        if previous.path == self.keyless_trades_path:
            # A full aggTrades page: the rest of its window, from the newest row's time (rows at
            # that millisecond come again and are dropped as duplicates by their f-l ids).
            if len(rows) < int(previous.params["limit"]) or not rows:
                return None
            newest_ms = max(r["ts_ns"] for r in rows) // 1_000_000
            start = max(newest_ms, int(previous.params["startTime"]) + 1)
            if start > int(previous.params["endTime"]):
                return None
            return replace(previous, params={**previous.params, "startTime": str(start)})
        # A bounded hole was planned page by page; an open one follows the tape until a short page.
        if before_id is not None or len(rows) < int(previous.params["limit"]):
            return None
        newest = max(int(r["trade_id"]) for r in rows)
        return self._page(previous.params["symbol"], newest + 1, int(previous.params["limit"]))

    def history_source_for(self, start_ns: int, now_ns: int) -> str | None:
        # With a key USDⓈ-M serves single trades of the last three months (historicalTrades, §2.3);
        # older windows, and every window without a key, come from aggTrades (a copy without the
        # key asks for them: history_requests follows `keyless`).
        if (
            self.keyless_trades_path
            and self.api_key
            and now_ns - start_ns <= (self.backfill.max_age_s or 0) * 1_000_000_000
        ):
            return "rest-history"
        return super().history_source_for(start_ns, now_ns)

    def history_requests(self, symbol: str, start_ns: int, end_ns: int) -> list[HttpRequest]:
        if self.keyless:
            # USDⓈ-M without a key: aggTrades by time, ≤ 1 year back, aggregated records (§2.3)
            return self._agg_requests(symbol, start_ns, end_ns - 1)
        # historicalTrades has no time parameter: the window's first id is the `f` of its first
        # aggTrades row (startTime alone is allowed since 2022-12-05, §1.3), then pages from it.
        start_ms, end_ms = start_ns // 1_000_000, (end_ns - 1) // 1_000_000
        return [
            HttpRequest(
                "GET",
                self.agg_trades_path,
                {
                    "symbol": symbol,
                    "startTime": str(start_ms),
                    "endTime": str(min(end_ms, start_ms + _HOUR_MS - 1)),
                    "limit": "1",
                },
            )
        ]

    def next_history_request(
        self, previous: HttpRequest, rows: Sequence[BackfillRow], start_ns: int, end_ns: int
    ) -> HttpRequest | None:
        if self.keyless:
            return self.next_backfill_request(previous, rows, start_ns=start_ns, end_ns=end_ns)
        if previous.path == self.agg_trades_path:
            if not rows:
                return None  # no trade in the window at all
            return self._page(
                previous.params["symbol"], int(str(rows[0]["trade_id"]).split("-")[0]), self.backfill.max_rows
            )
        if len(rows) < int(previous.params["limit"]) or max(r["ts_ns"] for r in rows) >= end_ns:
            return None
        return self._page(
            previous.params["symbol"], max(int(r["trade_id"]) for r in rows) + 1, int(previous.params["limit"])
        )

    def parse_backfill(
        self, body: str | bytes, symbol: str, *, instrument: Instrument | None = None
    ) -> list[BackfillRow]:
        out = []
        for r in exact_json(body):
            if "a" in r:
                # An aggTrades row: ids f..l of one taker order at one price, qty summed; one
                # record flagged AGGREGATED, its id "<f>-<l>", so nobody takes it for one trade.
                side = "sell" if r["m"] is True else "buy"
                out.append(
                    backfill_row(
                        self.id,
                        symbol,
                        f"{r['f']}-{r['l']}",
                        r["p"],
                        r["q"],
                        side,
                        to_ns(r["T"], 1_000_000),
                        FLAGS["AGGREGATED"],
                    )
                )
                continue
            # isBuyerMaker: the buyer rested, so the taker sold (§1.2).
            side = "sell" if r["isBuyerMaker"] is True else "buy"
            flags = FLAGS["RPI"] if r.get("isRPITrade") is True else 0
            out.append(
                backfill_row(self.id, symbol, r["id"], r["price"], r["qty"], side, to_ns(r["time"], 1_000_000), flags)
            )
        return out


# 300 connection attempts / 5 min per IP (§1.1, §12); counted for spot and USDⓈ-M together, the
# conservative reading of "per IP" (a handful of connections either way).
_CONNECTS = connect_budget("binance", 300, 300.0, "VENUES §1.1, §12")

SPOT: BinanceSpec = BinanceSpec(
    id="binance-spot",
    exchange="binance",
    kind="spot",
    ws_url="wss://stream.binance.com:9443",
    ws_path="/stream",  # combined streams: frames arrive as {"stream":..,"data":..} (§1.1)
    rest_url="https://api.binance.com",
    max_streams_per_connection=1024,  # §1.1
    max_topics_per_subscribe=100,  # no documented cap; third-party recorders send 100 per SUBSCRIBE (§1.1)
    max_client_messages_per_s=5,  # pings, pongs and JSON control messages all count (§1.1)
    connection_lifetime_s=DAY_S,  # "a single connection is only valid for 24 hours" (§1.1)
    heartbeat=HeartbeatRule(who="server", interval_s=20, timeout_s=60),  # ping every 20 s, pong within 1 min
    # historicalTrades: max 1000, whole history, weight 25 of 6,000/min (§1.3)
    backfill=BackfillRule(reach="by_id", max_rows=1000, max_age_s=None, requests_per_s=6000 / 60 / 25),
    instruments_path="/api/v3/exchangeInfo",
    trades_path="/api/v3/historicalTrades",
    agg_trades_path="/api/v3/aggTrades",
    history_source="rest-history",  # historicalTrades: the whole history, by id, no key (§1.3, §11.4)
    connect_budget=_CONNECTS,
)

USDM: BinanceSpec = BinanceSpec(
    id="binance-usdm",
    exchange="binance",
    kind="perp",
    ws_url="wss://fstream.binance.com",
    # @trade lives on /public since 2026-04-23; a socket on the wrong path acks and stays silent (§2.1)
    ws_path="/public/stream",
    rest_url="https://fapi.binance.com",
    max_streams_per_connection=1024,  # §2.1
    max_topics_per_subscribe=100,  # as spot
    max_client_messages_per_s=10,  # §2.1
    connection_lifetime_s=DAY_S,  # §2.1
    heartbeat=HeartbeatRule(who="server", interval_s=180, timeout_s=600),  # ping every 3 min, pong within 10 min
    # historicalTrades: max 500, last three months, market trades only (so REST has id holes where the
    # WS had NA/ADL/INSURANCE_FUND ids), weight 20 of 2,400/min (§2.3)
    backfill=BackfillRule(reach="by_id", max_rows=500, max_age_s=90 * DAY_S, requests_per_s=2400 / 60 / 20),
    instruments_path="/fapi/v1/exchangeInfo",
    # historicalTrades needs X-MBX-APIKEY (401, -2014 without); without a key holes are covered
    # from the public aggTrades, in aggregated records (§2.3)
    trades_path="/fapi/v1/historicalTrades",
    keyless_trades_path="/fapi/v1/aggTrades",
    agg_trades_path="/fapi/v1/aggTrades",
    # Without a key only aggTrades: ≤ 1 year, one record per taker order and price (§2.3, §11.4)
    history_source="rest-history-aggregated",
    history_max_age_s=365 * DAY_S,
    connect_budget=_CONNECTS,
)
