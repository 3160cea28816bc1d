"""What differs between the twelve venues, as data and a few small methods (the cryptofeed shape).

A `VenueSpec` says where a venue is (`ws_url`, `rest_url`), how to subscribe to its public trades
within its limits, how to keep a connection alive, which instruments it lists and how far its REST
API can fill a hole. One module per exchange (`binance.py`, `bybit.py`, `okx.py`, `kucoin.py`,
`gate.py`, `phemex.py`) holds only what differs; everything shared lives here. The facts and their
sources are in docs/VENUES.md; comments cite its sections as "VENUES §n".

Nothing here opens a socket. The one method that talks to the network, `resolve_connection`, does
so only through the `http` callable its caller passes in, so the daemon, the simulator and the
tests decide what is reached. Prices, quantities and ids are kept as the venue's exact text: bodies
are parsed with `exact_json`, which never turns a number into a float.

URLs: `ws_url` and `rest_url` are origins (`wss://host[:port]`, `https://host`); the venue's paths
are added by `connect_url` and carried by each `HttpRequest`. So `spec.with_urls(ws_url=
"ws://127.0.0.1:9001")` points a venue at a local stand-in that serves the real paths.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Literal, Protocol, TypedDict, TypeVar
from urllib.parse import urlencode

from .._core import FLAGS
from ..errors import InvalidInputError
from ..net.limits import RateBudget

Kind = Literal["spot", "perp"]

# Instrument status vocabulary (each venue maps its own words onto these).
TRADING = "trading"  # trades print now
PRE_TRADING = "pre_trading"  # listed, not open yet: the one a listing pump starts on
DELISTING = "delisting"  # still trades, leaving soon
HALTED = "halted"  # listed, no trading now (break, suspension, settlement, unknown status)
CLOSED = "closed"  # delisted / delivered / settled: will not trade again
STATUSES = (TRADING, PRE_TRADING, DELISTING, HALTED, CLOSED)

# Where a venue documents no count of streams per connection, we cap it ourselves: one socket then
# carries one pump's burst for a bounded set of symbols, and a drop loses a bounded set.
UNDOCUMENTED_STREAMS_PER_CONNECTION = 200

DAY_S = 86_400

#: Our window for a venue's connection-rate limit is this much wider than the venue's: the venue
#: counts handshakes as they reach it, a little after they leave here and not always in order.
CONNECT_SLACK_S = 0.25


def connect_budget(exchange: str, count: int, period_s: float, source: str) -> RateBudget:
    """An exchange's per-IP connection-request budget, shared by its markets (VENUES §12)."""
    return RateBudget(f"{exchange}:ws-connect", count, period_s, slack_s=CONNECT_SLACK_S, source=source)


def rest_budget(exchange: str, requests_per_s: float, source: str) -> RateBudget:
    """An exchange's REST budget shared by its markets (one host, or one per-IP pool)."""
    return RateBudget(f"{exchange}:rest", 1, 1.0 / requests_per_s, source=source)


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Instrument:
    """One USDT-quoted spot pair or USDT-margined perpetual as the venue lists it.

    `base` is the venue's base asset with only spelling normalised (KuCoin `XBT` -> `BTC`);
    `asset` and `base_multiplier` undo denomination prefixes, so `1000PEPE` is `1000 x PEPE` and an
    Upbit ticker (`PEPE`, `0G`) finds every venue's instrument by `asset`. `contract_multiplier`
    is how much `base` one unit of the venue's quantity is (OKX `ctVal`, Gate `quanto_multiplier`,
    KuCoin `multiplier`; "1" where quantities are already in `base`).
    """

    venue: str
    symbol: str
    base: str
    quote: str
    kind: Kind
    contract_multiplier: str = "1"
    price_scale: int | None = None
    qty_scale: int | None = None
    status: str = TRADING
    base_multiplier: int = 1
    asset: str = ""

    @property
    def is_trading(self) -> bool:
        return self.status == TRADING

    @property
    def is_subscribed(self) -> bool:
        """Recorded: trading (in a delisting period too: it trades until it closes), or listed and
        not open yet (its first trades are the pump)."""
        return self.status in (TRADING, PRE_TRADING, DELISTING)


@dataclass(frozen=True)
class HeartbeatRule:
    """How a connection stays alive.

    `who="server"`: the server sends protocol-level pings every `interval_s` and closes the
    connection when no pong came back within `timeout_s`; the `websockets` library answers them
    by itself, so the client sends nothing (`ping_frame` is None).
    `who="client"`: the client must send `ping_frame` every `interval_s`; no reply within
    `timeout_s` means the connection is dead. The reply (`pong_frame` shows the documented
    shape) is recognised by the Rust parser, which reports it as a Control event of kind "pong".
    Some frames carry a fresh field (Gate's `time`, KuCoin's `id`): send `VenueSpec.ping_frame()`,
    which renders the frame for now; `ping_frame` here is the documented shape.
    """

    who: Literal["client", "server"]
    interval_s: float
    timeout_s: float
    ping_frame: str | None = None
    pong_frame: str | None = None


@dataclass(frozen=True)
class BackfillRule:
    """How far the venue's REST API reaches back into a hole.

    `reach`: `"by_id"` (ask from an id forwards: Binance `fromId`), `"by_id_backwards"` (ask for
    ids older than one: OKX `after`), `"by_time"` (a time range and pages: Gate), or
    `"recent_only"` (only the latest `max_rows` trades, no paging: Bybit, KuCoin, Phemex; a hole
    older than that window cannot be filled).
    `max_age_s`: how old a trade may be and still be served; None when the venue sets no age
    limit (for `recent_only` the limit is `max_rows`, not an age).
    `requests_per_s`: the documented ceiling for these requests from one IP.
    """

    reach: Literal["by_id", "by_id_backwards", "by_time", "recent_only"]
    max_rows: int
    max_age_s: float | None
    requests_per_s: float


class HistoryOutOfReach(InvalidInputError):
    """The venue serves no deeper page of a window its history still holds (Gate spot's page cap):
    raised by `next_history_request`, so the rebuild names the span it could not reach instead of
    calling a short window complete. `reached_ns`: the oldest trade the walk got."""

    def __init__(self, message: str, reached_ns: int):
        super().__init__(message)
        self.reached_ns = reached_ns


class VenueAnswerError(InvalidInputError):
    """The venue put an error in the body of a successful HTTP answer (OKX: `code` other than "0"
    beside an empty `data`, docs/VENUES.md §4.3). Read as an answer it would pass for an empty
    page of trades (a history walk then looks complete) or an empty instrument list (every
    subscription then looks delisted)."""


@dataclass(frozen=True)
class HttpRequest:
    """One REST call, relative to the venue's `rest_url`, for any HTTP client to execute."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None

    def url(self, base_url: str) -> str:
        query = urlencode(self.params)
        return base_url.rstrip("/") + self.path + (f"?{query}" if query else "")


class HttpFetch(Protocol):
    """What `resolve_connection` needs from its caller: run a request, return the body.

    It raises on a failed request (non-2xx, timeout); the venue code only reads bodies.
    """

    async def __call__(self, base_url: str, request: HttpRequest) -> str | bytes: ...


# ---------------------------------------------------------------------------------------------
# Shared helpers: exact numbers, instruments, rows, batching

_EXACT = Context(prec=60)  # wide enough that no timestamp or price is ever rounded


def exact_json(body: str | bytes) -> Any:
    """JSON with every number kept as its text (`"4.00000100"`, `"28457"`), never a float."""
    return json.loads(body, parse_float=str, parse_int=str)


def dumps(value: Any) -> str:
    """Compact JSON for frames: every byte counts against per-message limits."""
    return json.dumps(value, separators=(",", ":"))


def plain_decimal(text: str) -> str:
    """The venue's decimal text, with exponent notation (`1.0E-4`) written out (`0.00010`)."""
    text = str(text)
    if "e" not in text and "E" not in text:
        return text
    try:
        return format(Decimal(text), "f")
    except InvalidOperation:
        raise InvalidInputError(f"{text!r} is not a decimal number") from None


def unscale(value: str, scale: int) -> str:
    """A scaled integer as decimal text: `unscale("769100000", 8) == "7.69100000"` (Phemex Ep/Ev)."""
    value = str(value)
    negative = value.startswith("-")
    digits = value[1:] if negative else value
    if not digits.isdigit():
        raise InvalidInputError(f"{value!r} is not a scaled integer")
    if scale > 0:
        digits = digits.rjust(scale + 1, "0")
        digits = f"{digits[:-scale]}.{digits[-scale:]}"
    return f"-{digits}" if negative else digits


def to_ns(text: str, ns_per_unit: int) -> int:
    """Exact nanoseconds from a decimal time (`"1548000000123.456"` ms -> 1548000000123456000)."""
    try:
        return int(_EXACT.multiply(Decimal(str(text)), Decimal(ns_per_unit)))
    except InvalidOperation:
        raise InvalidInputError(f"{text!r} is not a timestamp") from None


def taker_side(text: str) -> str:
    side = str(text).lower()
    if side not in ("buy", "sell"):
        raise InvalidInputError(f"{text!r} is not a trade side (buy or sell)")
    return side


# 1000PEPE, 1000000MOG (Binance, Bybit); 1MBABYDOGE (Binance: 1M = one million); SHIB1000 (Bybit).
# Only powers of ten from 1000 count, so real tickers such as 1INCH, 0G or C98 stay as they are.
_PREFIX = re.compile(r"^(10{3,})([A-Z][A-Z0-9]*)$")
_MILLION = re.compile(r"^1M([A-Z][A-Z0-9]*)$")
_SUFFIX = re.compile(r"^([A-Z][A-Z0-9]*[A-Z])(10{3,})$")


def split_multiplier(base: str) -> tuple[str, int]:
    """`"1000PEPE"` -> `("PEPE", 1000)`; `"BTC"` -> `("BTC", 1)`."""
    if m := _PREFIX.match(base):
        return m.group(2), int(m.group(1))
    if m := _MILLION.match(base):
        return m.group(1), 1_000_000
    if m := _SUFFIX.match(base):
        return m.group(1), int(m.group(2))
    return base, 1


def make_instrument(
    venue: str,
    symbol: str,
    native_base: str,
    quote: str,
    kind: Kind,
    *,
    status: str,
    contract_multiplier: str = "1",
    price_scale: int | None = None,
    qty_scale: int | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Instrument:
    aliases = aliases or {}
    base = aliases.get(native_base, native_base)
    asset, multiplier = split_multiplier(base)
    return Instrument(
        venue=venue,
        symbol=symbol,
        base=base,
        quote=quote,
        kind=kind,
        contract_multiplier=plain_decimal(contract_multiplier),
        price_scale=price_scale,
        qty_scale=qty_scale,
        status=status,
        base_multiplier=multiplier,
        asset=aliases.get(asset, asset),
    )


class BackfillRow(TypedDict):
    """One REST trade: the keyword arguments of `pumpwatch.Trade` (its `to_dict()` shape), decimals
    as the venue's exact text, `flags` with BACKFILL set."""

    venue: str
    symbol: str
    trade_id: str
    price: str
    qty: str
    side: str
    ts_ns: int
    recv_ns: int
    flags: int


def backfill_row(
    venue: str, symbol: str, trade_id: str, price: str, qty: str, side: str, ts_ns: int, flags: int = 0
) -> BackfillRow:
    """A REST trade in the shape of `pumpwatch.Trade` (keyword arguments / `to_dict()`)."""
    return {
        "venue": venue,
        "symbol": symbol,
        "trade_id": str(trade_id),
        "price": plain_decimal(price),
        "qty": plain_decimal(qty),
        "side": side,
        "ts_ns": int(ts_ns),
        "recv_ns": 0,
        "flags": FLAGS["BACKFILL"] | flags,
    }


T = TypeVar("T")


def pack(
    items: Sequence[T],
    *,
    max_items: int | None,
    max_size: int | None = None,
    size: Callable[[T], int] = lambda _: 0,
) -> list[list[T]]:
    """Greedy batches in input order, each within `max_items` and a total `size` of `max_size`.

    The one rule by which every venue batches its subscriptions into frames (topics per message,
    bytes per message); `VenueSpec.shard` spreads symbols over connections evenly instead.
    """
    batches: list[list[T]] = []
    current: list[T] = []
    used = 0
    for item in items:
        cost = size(item)
        if max_size is not None and cost > max_size:
            raise InvalidInputError(f"{item!r} alone is larger than the limit of {max_size}")
        full = max_items is not None and len(current) >= max_items
        if current and (full or (max_size is not None and used + cost > max_size)):
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += cost
    if current:
        batches.append(current)
    return batches


def _unique(symbols: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(symbols))


def _balanced(items: list[T], groups: int) -> list[list[T]]:
    """`items` in order, cut into `groups` runs whose lengths differ by at most one."""
    size, extra = divmod(len(items), groups) if groups else (0, 0)
    out, start = [], 0
    for i in range(groups):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def _json_size(item: Any) -> int:
    """Bytes an item adds to a JSON list: itself and a comma."""
    return len(dumps(item).encode()) + 1


# ---------------------------------------------------------------------------------------------
# The spec


@dataclass(frozen=True, kw_only=True)
class VenueSpec:
    """One venue id's protocol facts and the methods that turn them into frames and requests.

    Limits (docs/VENUES.md): `max_streams_per_connection` (symbols one socket may carry),
    `max_topics_per_subscribe` (symbols per subscribe message), `max_subscribe_bytes` (bytes per
    subscribe message), `max_subscription_chars_per_connection` (Bybit's `args` budget),
    `max_client_messages_per_s` (everything the client sends, pings included; None = not
    documented), `max_subscribe_requests_per_hour` (OKX), `max_connections` (concurrent sockets
    the venue allows one client/IP; the collector, not `shard`, must respect it).

    Pacing (VENUES §12), as named budgets that specs of one exchange share where the venue counts
    per IP: `connect_budget` (connection requests; None = the venue documents no rate),
    `rest_budget` (REST requests; None = this spec's own, at `backfill.requests_per_s`),
    `rest_holds` (HTTP status -> seconds without any request to the REST host after it: Bybit's
    403 "access too frequent" = 10 minutes).
    """

    id: str
    exchange: str
    kind: Kind
    ws_url: str
    ws_path: str
    rest_url: str
    max_streams_per_connection: int
    max_topics_per_subscribe: int | None
    max_subscribe_bytes: int | None = None
    max_subscription_chars_per_connection: int | None = None
    max_client_messages_per_s: float | None = None
    max_subscribe_requests_per_hour: int | None = None
    max_connections: int | None = None
    connection_lifetime_s: float | None = None
    subscribe_after_welcome: bool = False  # KuCoin: subscribe only after its "welcome" frame
    # Sent on the WebSocket handshake and on every REST request of the venue (Gate futures'
    # `X-Gate-Size-Decimal: 1`, without which fractional sizes arrive truncated, VENUES §8).
    headers: Mapping[str, str] = field(default_factory=dict)
    # The venue's API key, for the REST calls it refuses without one (Binance USDⓈ-M
    # historicalTrades, VENUES §2.3); a secret: never in repr, logs or /status.
    api_key: str | None = field(default=None, repr=False, compare=False)
    connect_budget: RateBudget | None = None
    rest_budget: RateBudget | None = None
    rest_holds: tuple[tuple[int, float], ...] = ()
    heartbeat: HeartbeatRule
    backfill: BackfillRule
    # How far back its REST keeps trades for `pumpwatch history` (VENUES §11 item 4): the source
    # those trades are (`rest-history`, one record per trade; `rest-history-aggregated`, aggTrades
    # rows), None where the venue keeps only its recent trades; `history_max_age_s` None = no limit.
    history_source: str | None = None
    history_max_age_s: float | None = None

    # -- where to connect

    def with_urls(self, *, ws_url: str | None = None, rest_url: str | None = None) -> VenueSpec:
        """A copy pointed elsewhere (daemon config, simulator); paths stay the venue's."""
        return dataclasses.replace(
            self,
            ws_url=self.ws_url if ws_url is None else ws_url,
            rest_url=self.rest_url if rest_url is None else rest_url,
        )

    def with_api_key(self, api_key: str | None) -> VenueSpec:
        """A copy that holds the venue's API key (None or "": without one)."""
        return dataclasses.replace(self, api_key=api_key or None)

    def connect_url(self, symbols: Sequence[str] = ()) -> str:
        return self.ws_url.rstrip("/") + self.ws_path

    async def resolve_connection(self, http: HttpFetch, symbols: Sequence[str] = ()) -> str:
        """The URL to open now. Only KuCoin needs a round trip (its token handshake)."""
        return self.connect_url(symbols)

    async def resolve(self, http: HttpFetch, symbols: Sequence[str] = ()) -> tuple[str, HeartbeatRule]:
        """The URL to open now and the heartbeat rule for that connection: the spec's own, except
        where the handshake says otherwise (KuCoin's token carries its ping interval and timeout)."""
        return await self.resolve_connection(http, symbols), self.heartbeat

    def ping_frame(self) -> str | None:
        return self.heartbeat.ping_frame

    def rest_pacing(self) -> RateBudget:
        """The budget this spec's REST requests draw on: the shared one it names, else its own
        one request per `1 / backfill.requests_per_s`."""
        if self.rest_budget is not None:
            return self.rest_budget
        return RateBudget(
            f"{self.id}:rest", 1, 1.0 / max(self.backfill.requests_per_s, 0.1), source="BackfillRule.requests_per_s"
        )

    # -- which trade channel

    def trade_channel(self) -> str | None:
        """The trade channel subscribed and where, for status pages, on a venue that has more than
        one (OKX `trades-all` on /ws/v5/business, or `trades` on /ws/v5/public); None elsewhere."""
        return None

    def fallback_channel(self, detail: str) -> VenueSpec | None:
        """The spec to record with instead when an error frame (`detail`, its text) says the venue
        refuses this trade channel to this client (OKX `trades-all` without a login, VENUES §4.1):
        another channel of the same trades, so the venue is not left silent. None for any other
        error and on venues with one trade channel."""
        return None

    # -- subscriptions

    def shard(self, symbols: Iterable[str], per_connection: int | None = None) -> list[list[str]]:
        """Split symbols over connections within the venue's limits, evenly.

        `per_connection` (from config) may narrow the venue's limit, never widen it.
        """
        symbols = _unique(symbols)
        limit = self.max_streams_per_connection
        if per_connection is not None:
            if per_connection < 1:
                raise InvalidInputError(f"per_connection must be at least 1, not {per_connection}")
            limit = min(limit, per_connection)
        budget = self.max_subscription_chars_per_connection
        cost: dict[str, int] = {}
        if budget is not None:
            cost = {s: _json_size(self._topic(s)) for s in symbols}
            if any(c > budget for c in cost.values()):
                raise InvalidInputError(f"{self.id}: a symbol's subscription alone exceeds {budget} characters")
        connections = math.ceil(len(symbols) / limit)
        while True:  # as few connections as the limits allow, loaded evenly
            shards = _balanced(symbols, connections)
            if budget is None or all(sum(cost[s] for s in shard) <= budget for shard in shards):
                return shards
            connections += 1

    def subscribe_frames(self, symbols: Iterable[str], first_request_id: int = 1) -> list[str]:
        """Frames subscribing one connection to these symbols' trades, ids counting up."""
        return self._frames("subscribe", symbols, first_request_id)

    def unsubscribe_frames(self, symbols: Iterable[str], first_request_id: int = 1) -> list[str]:
        return self._frames("unsubscribe", symbols, first_request_id)

    def subscribe_batches(self, symbols: Iterable[str], first_request_id: int = 1) -> list[list[str]]:
        """The symbols of each frame `subscribe_frames` makes (request ids counting up from
        `first_request_id`), so a venue's answer to one request names its symbols."""
        return [[s for s, _ in batch] for batch in self._batches("subscribe", symbols, first_request_id)]

    def rejected_request(self, detail: str) -> int | None:
        """The id of our subscribe request that an error frame (`detail`, its text) refuses
        whole, where the venue says so (Gate: one unknown contract fails the whole request,
        VENUES §12); None for any other error."""
        return None

    def refused_symbols(self, detail: str) -> list[str]:
        """The symbols a subscribe refusal (`detail`, the error frame's text) names as unknown,
        where the venue names them (Bybit `Invalid symbol :[publicTrade.X]`); [] where it names
        none, or names the request as sent (KuCoin): then the request is split to find them."""
        return []

    def _batches(self, op: str, symbols: Iterable[str], first_request_id: int) -> list[list[tuple[str, Any]]]:
        symbols = _unique(symbols)
        if len(self.shard(symbols)) > 1:
            raise InvalidInputError(
                f"{self.id}: {len(symbols)} symbols do not fit one connection "
                f"(at most {self.max_streams_per_connection}); split them with shard() first"
            )
        pairs = [(s, self._topic(s)) for s in symbols]
        budget = None
        if self.max_subscribe_bytes is not None:
            envelope = len(self._render(op, [], first_request_id + len(pairs)).encode())
            budget = self.max_subscribe_bytes - envelope
        return pack(pairs, max_items=self.max_topics_per_subscribe, max_size=budget, size=lambda p: _json_size(p[1]))

    def _frames(self, op: str, symbols: Iterable[str], first_request_id: int) -> list[str]:
        batches = self._batches(op, symbols, first_request_id)
        return [self._render(op, [t for _, t in batch], first_request_id + i) for i, batch in enumerate(batches)]

    def _topic(self, symbol: str) -> Any:
        """What one symbol's trade subscription is inside a frame (a stream name, an arg...)."""
        raise NotImplementedError

    def _render(self, op: str, topics: list[Any], request_id: int) -> str:
        """One subscribe/unsubscribe frame (`op`) carrying `topics`."""
        raise NotImplementedError

    # -- instrument list

    def instruments_request(self) -> list[HttpRequest]:
        raise NotImplementedError

    def next_instruments_request(self, previous: HttpRequest, body: str | bytes) -> HttpRequest | None:
        """The next page of a paged instrument list (Bybit's cursor); None when complete."""
        return None

    def parse_instruments(self, bodies: Sequence[str | bytes]) -> list[Instrument]:
        """USDT-quoted spot pairs / USDT-margined perpetuals from the instrument list bodies."""
        raise NotImplementedError

    # -- REST backfill

    def backfill_requests(
        self,
        symbol: str,
        *,
        after_id: str | int | None = None,
        before_id: str | int | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> list[HttpRequest]:
        """Requests for the trades of a hole, as far as `backfill.reach` allows.

        Pass what is known of the hole: `after_id` is the last id held before it and `before_id`
        the first id held after it (both exclusive; a Rust Gap `first..=last` gives
        `after_id=first-1`, `before_id=last+1`), `start_ns`/`end_ns` its exchange times. Each
        venue uses what its API can: ids (Binance, OKX), times (Gate), nothing (recent-only
        venues return their one "latest trades" request). Where the pages can be computed up
        front they all are; otherwise follow each with `next_backfill_request`.
        """
        raise NotImplementedError

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
        """The page after `previous` given its parsed `rows` and the same hole; None when done."""
        return None

    # -- REST history (a past listing's window, `pumpwatch history`)

    def history_requests(self, symbol: str, start_ns: int, end_ns: int) -> list[HttpRequest]:
        """The first requests for the trades of `symbol` in `[start_ns, end_ns)`; follow each with
        `next_history_request`. Parse pages with `parse_backfill` and keep the rows of the
        window (pages overlap its edges). Default: the backfill walk over that time range (Gate by
        from/to and pages, OKX by timestamp then tradeId); only for a spec with `history_source`."""
        return self.backfill_requests(symbol, start_ns=start_ns, end_ns=end_ns)

    def history_source_for(self, start_ns: int, now_ns: int) -> str | None:
        """Where the trades of a window beginning at `start_ns` come from when asked at `now_ns`
        (`history_source`), None when the venue keeps no trades that old."""
        if self.history_source is None:
            return None
        if self.history_max_age_s is not None and now_ns - start_ns > self.history_max_age_s * 1_000_000_000:
            return None
        return self.history_source

    def next_history_request(
        self, previous: HttpRequest, rows: Sequence[BackfillRow], start_ns: int, end_ns: int
    ) -> HttpRequest | None:
        return self.next_backfill_request(previous, rows, start_ns=start_ns, end_ns=end_ns)

    def parse_backfill(
        self, body: str | bytes, symbol: str, *, instrument: Instrument | None = None
    ) -> list[BackfillRow]:
        """REST trades as `pumpwatch.Trade` dicts (flag BACKFILL), ids and decimals exact.

        `instrument` is needed only where the body is scaled (Phemex spot's price/qty scales).
        """
        raise NotImplementedError


# The exchange modules import the names above, so they load after them.
from . import binance, bybit, gate, kucoin, okx, phemex  # noqa: E402

SPECS: dict[str, VenueSpec] = {
    spec.id: spec
    for spec in (
        binance.SPOT,
        binance.USDM,
        bybit.SPOT,
        bybit.LINEAR,
        okx.SPOT,
        okx.SWAP,
        kucoin.SPOT,
        kucoin.FUTURES,
        gate.SPOT,
        gate.FUTURES,
        phemex.SPOT,
        phemex.PERP,
    )
}


def get(venue_id: str) -> VenueSpec:
    try:
        return SPECS[venue_id]
    except KeyError:
        raise InvalidInputError(f"unknown venue {venue_id!r}; the venues are: {', '.join(SPECS)}") from None


__all__ = [
    "CLOSED",
    "DELISTING",
    "HALTED",
    "PRE_TRADING",
    "SPECS",
    "STATUSES",
    "TRADING",
    "BackfillRow",
    "BackfillRule",
    "HeartbeatRule",
    "HttpFetch",
    "HttpRequest",
    "Instrument",
    "RateBudget",
    "VenueAnswerError",
    "VenueSpec",
    "backfill_row",
    "exact_json",
    "get",
    "make_instrument",
    "pack",
    "plain_decimal",
    "split_multiplier",
    "to_ns",
    "unscale",
]
