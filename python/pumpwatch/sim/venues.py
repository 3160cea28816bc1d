"""What differs between the simulated exchanges: one small class per exchange family.

Each class holds only its venue's facts (docs/VENUES.md, cited as §n): WebSocket paths, subscribe /
ack / error frames, its heartbeat rule, frame shapes of trades, REST routes with their limits and
rate buckets. Everything shared (sockets, fan-out, faults, heartbeat enforcement, token buckets,
the record of what was sent) lives in server.py, which a venue class reaches only through the
`VenueClient` and `VenueHost` protocols (protocols.py); the trade generator and id semantics live in
market.py.

Trade messages are rendered from the venue's templates in wire/ (one real frame per message type,
values as placeholders, held against tests/samples by tests/test_sim_shapes.py); the other frames
are written with compact separators and the key order of the real frames in tests/samples, so
everything is byte-shaped like what the exchanges send.
"""

from __future__ import annotations

import bisect
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, cast, overload

from .market import (
    Asset,
    BybitLinearIds,
    BybitSpotIds,
    ConsecutiveIds,
    ContentIds,
    Fill,
    IdScheme,
    Instrument,
    KucoinIds,
    make_instrument,
    units_text,
)
from .protocols import VenueClient, VenueHost
from .wire import template

DAY_S = 86_400.0


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """The client's JSON, or None when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------------
# Shared vocabulary


@dataclass(frozen=True)
class Heartbeat:
    """How a venue decides a connection is dead. Times are real-venue seconds; the simulator
    multiplies them by its `time_scale`.

    - `server_ping_every` / `pong_within`: the server sends protocol pings and cuts a client that
      leaves one unanswered this long (Binance, Gate).
    - `client_ping_within`: the client's own heartbeat must arrive this often (KuCoin, Phemex,
      Bybit); `data_is_heartbeat` lets stream data sent by the server count too (Bybit: "no
      ping-pong and no stream data"), `protocol_ping_is_heartbeat` lets WS ping frames count
      (Phemex).
    - `quiet_limit`: the server cuts a connection it has sent nothing on this long (OKX).
    - `lifetime`: the connection is closed at this age whatever happens (Binance 24 h).
    """

    server_ping_every: float | None = None
    pong_within: float | None = None
    client_ping_within: float | None = None
    data_is_heartbeat: bool = False
    protocol_ping_is_heartbeat: bool = False
    quiet_limit: float | None = None
    lifetime: float | None = None

    def limits(self) -> list[float]:
        return [
            t
            for t in (
                self.server_ping_every,
                self.pong_within,
                self.client_ping_within,
                self.quiet_limit,
                self.lifetime,
            )
            if t
        ]

    def cut_after(self) -> float:
        """How long a silent client survives (real seconds): what a heartbeat test waits for."""
        if self.pong_within:
            return (self.server_ping_every or 0.0) + self.pong_within
        return self.client_ping_within or self.quiet_limit or self.lifetime or 0.0


class SentTrade(NamedTuple):
    """A trade as a correct parser of the venue's live stream produces it."""

    symbol: str
    trade_id: str
    price: str
    qty: str
    side: str
    ts_ns: int

    def as_dict(self, venue: str) -> dict:
        return {
            "venue": venue,
            "symbol": self.symbol,
            "trade_id": self.trade_id,
            "price": self.price,
            "qty": self.qty,
            "side": self.side,
            "ts_ns": self.ts_ns,
        }


@dataclass
class Publication:
    """One trade message on one topic: its text per client dialect ("" is the default), and the
    trades it carries on which channel (empty for Binance `X=NA` records)."""

    topic: str
    frames: dict[str, str]
    trades: list[SentTrade]
    channel: str


@dataclass(frozen=True)
class Route:
    handler: Callable[[dict[str, str]], tuple[int, Any]]
    bucket: str
    weight: int = 1


class BadRequest(Exception):
    """A REST parameter the venue would refuse; `body` is the venue's error payload."""

    def __init__(self, body: Any, status: int = 400):
        super().__init__(str(body))
        self.body, self.status = body, status


def _ms(ts_ns: int) -> int:
    return ts_ns // 1_000_000


def _s3(ts_ns: int) -> str:
    """Seconds with three decimals (`1787319911.612`), as Gate futures REST writes its trade times."""
    return f"{ts_ns // 10**9}.{ts_ns // 1_000_000 % 1000:03d}"


def _num_id(f: Fill) -> int:
    """A Binance fill's id: Binance ids are consecutive integers, so every fill has one."""
    assert f.num_id is not None, f"fill {f.trade_id} has no integer id"
    return f.num_id


def _side_cap(side: str) -> str:
    return "Buy" if side == "buy" else "Sell"


def quote_qty(inst: Instrument, f: Fill) -> str:
    """price x quantity, exact (Binance `quoteQty`)."""
    return units_text(f.price * f.qty, inst.price_places + inst.qty_places)


def trailing(items: list, n: int) -> list:
    return items[-n:] if n > 0 else []


# ---------------------------------------------------------------------------------------------
# The base: what every venue has, and defaults for what most do the same way


class Venue:
    """One venue's protocol. Subclasses set the class attributes and override what differs."""

    ws_path = "/"  # the path in `ws_url`
    heartbeat = Heartbeat()
    resolution_ns = 1_000_000  # the unit of the exchange's trade time
    strictly_increasing_ts = False
    batch_interval: float | None = None  # push period where trades are batched (Phemex 20 ms)
    incoming_limit: tuple[int, float] | None = None  # (messages, seconds) before the socket is cut
    channels: tuple[str, ...] = ("trades",)  # kinds of trade stream; the first is the default
    rate_limited_status = 429
    lifetime_close_reason = "connection lifetime reached"
    buckets: ClassVar[dict[str, tuple[int, float]]] = {}  # name -> (capacity, refill period in seconds)
    #: Venue id -> the state value its instrument list keeps a delisted instrument with; a venue
    #: not named drops it from the list. Each class cites its source.
    delisted_states: ClassVar[dict[str, str]] = {}
    #: Venue id -> the state value its list shows for a halted instrument (subscribable, trading
    #: resumes); a venue not named documents none, and its list goes on showing it as trading.
    halted_states: ClassVar[dict[str, str]] = {}

    def __init__(self, venue_id: str, sim: VenueHost):
        self.venue_id = venue_id
        self.sim = sim
        self.routes: dict[tuple[str, str], Route] = {}
        # The body of a 429 (a venue sets its own, from its `errors` template).
        self.rate_limited_body: Any = {"msg": "Too Many Requests"}
        # The headers of the REST request being answered (set by the server before each route).
        self.request_headers: Any = {}

    # -- instruments

    def symbol_for(self, base: str) -> str:
        raise NotImplementedError

    def instrument(self, asset: Asset) -> Instrument:
        return make_instrument(self.venue_id, self.symbol_for(asset.base), asset)

    def id_scheme(self, inst: Instrument) -> IdScheme:
        return ConsecutiveIds(10**8, 9 * 10**8)

    def listed(self) -> list[Instrument]:
        return self.sim.listed_instruments()

    def on_list(self) -> list[Instrument]:
        """What the venue's instrument list shows now: the listed instruments (trading, halted or
        pre-trading), and the delisted ones where the venue keeps them (`delisted_states`)."""
        now = self.sim.now_ns()
        keeps = self.venue_id in self.delisted_states
        return [i for i in self.sim.instruments.values() if i.listed(now) or (keeps and i.delisted(now))]

    def list_state(self, inst: Instrument, trading: str, pre_trading: str) -> str:
        """`inst`'s state value in the venue's instrument list now, given its words for trading
        and pre-trading; delisted and halted ones from `delisted_states` / `halted_states`."""
        now = self.sim.now_ns()
        if inst.delisted(now) and self.venue_id in self.delisted_states:
            return self.delisted_states[self.venue_id]
        if inst.pre_trading(now):
            return pre_trading
        if inst.halted(now):
            return self.halted_states.get(self.venue_id, trading)
        return trading

    def instrument_or_none(self, symbol: str | None) -> Instrument | None:
        inst = self.sim.instruments.get(symbol or "")
        return inst if inst is not None and inst.listed(self.sim.now_ns()) else None

    # -- WebSocket

    def ws_role(self, path: str, headers: Any) -> str | None:
        """The kind of socket a WebSocket request for `path` opens, or None (404)."""
        return "public" if path == self.ws_path else None

    def on_open(self, client: VenueClient) -> None:
        pass

    def on_text(self, client: VenueClient, text: str) -> None:
        raise NotImplementedError

    def error_body(self, name: str = "REST error", /, **fields: Any) -> Any:
        """A REST refusal's body (a JSON value the server encodes) from the venue's template
        `name` (pumpwatch/sim/wire/<venue>.json, section `errors`)."""
        return template(self.venue_id, name).fill(**fields)

    def control(self, name: str, req_id: Any = None, /, **fields: Any) -> str:
        """A control message (ack, error, pong, notice) from the venue's template `name`
        (pumpwatch/sim/wire/<venue>.json, section `control`). Where the venue echoes a request's
        id only when it had one, a non-None `req_id` selects the `<name> with id` form."""
        if req_id is not None:
            return template(self.venue_id, f"{name} with id").render(id=req_id, **fields)
        return template(self.venue_id, name).render(**fields)

    def publications(self, inst: Instrument, fills: list[Fill]) -> list[Publication]:
        raise NotImplementedError

    def shutdown_notice(self, client: VenueClient) -> str | None:
        """The frame announcing a maintenance disconnect, where the venue sends one."""
        return None

    def refuse_connection(self) -> tuple[int, Any] | None:
        """(status, body) refusing a WebSocket handshake the venue would refuse now, or None."""
        return None

    def trade(self, inst: Instrument, f: Fill, trade_id: str | None = None, qty: str | None = None) -> SentTrade:
        return SentTrade(
            inst.symbol,
            f.trade_id if trade_id is None else trade_id,
            inst.price_text(f.price),
            inst.qty_text(f.qty) if qty is None else qty,
            f.side,
            f.ts_ns,
        )

    # -- REST helpers

    def route(self, method: str, path: str, handler, bucket: str, weight: int = 1) -> None:
        self.routes[(method, path)] = Route(handler, bucket, weight)

    @overload
    @staticmethod
    def int_param(
        q: dict[str, str], name: str, default: int, low: int, high: int, error: Callable[[str], Any]
    ) -> int: ...

    @overload
    @staticmethod
    def int_param(
        q: dict[str, str], name: str, default: int | None, low: int, high: int, error: Callable[[str], Any]
    ) -> int | None: ...

    @staticmethod
    def int_param(
        q: dict[str, str], name: str, default: int | None, low: int, high: int, error: Callable[[str], Any]
    ) -> int | None:
        """An integer parameter; values above the venue's maximum are served at the maximum."""
        raw = q.get(name)
        if raw is None or raw == "":
            return default
        try:
            v = int(raw)
        except ValueError:
            raise BadRequest(error(f"{name} must be an integer")) from None
        if v < low:
            raise BadRequest(error(f"{name} must be at least {low}"))
        return min(v, high)

    def real_fills(self, symbol: str) -> list[Fill]:
        return [f for f in self.sim.history(symbol) if not f.placeholder]


# ---------------------------------------------------------------------------------------------
# Binance spot and USDⓈ-M (§1, §2)

_BINANCE_STREAM = re.compile(r"^[a-z0-9]+@trade$")


class Binance(Venue):
    heartbeat = Heartbeat(server_ping_every=20, pong_within=60, lifetime=DAY_S)  # §1.1
    incoming_limit = (5, 1.0)  # 5 incoming messages/s, pings and pongs included; more: disconnect
    ws_path = "/stream"
    buckets: ClassVar = {"weight": (6000, 60.0)}  # REQUEST_WEIGHT 6,000/min (§1.3)
    max_streams = 1024
    futures = False
    # A delisted spot pair stays in exchangeInfo as `BREAK` (third-party observations:
    # coingecko/cryptoexchange#1718, ccxt#7304; Binance's glossary: BREAK, "not available for
    # trading ... market data is not generated"). An emergency halt is `HALT` ("market data is
    # still generated"; binance-spot-api-docs faqs/spot_glossary.md, enums.md).
    delisted_states: ClassVar = {"binance-spot": "BREAK"}
    halted_states: ClassVar = {"binance-spot": "HALT"}

    def __init__(self, venue_id, sim):
        super().__init__(venue_id, sim)
        self.wire_combined = template(venue_id, "@trade combined")
        self.wire_raw = template(venue_id, "@trade raw")
        self.wire_rest = template(venue_id, "REST trades")
        self.wire_agg = template(venue_id, "REST aggTrades")
        weight = self.buckets["weight"][0]
        msg = f"Too many requests; current limit is {weight} request weight per 1 MINUTE."
        self.rate_limited_body = self.error_body(code=-1003, msg=msg)
        p = "/fapi/v1" if self.futures else "/api/v3"
        heavy = 20 if self.futures else 25
        self.route("GET", f"{p}/exchangeInfo", self.rest_exchange_info, "weight", 1 if self.futures else 20)
        self.route("GET", f"{p}/historicalTrades", self.rest_historical_trades, "weight", heavy)
        self.route("GET", f"{p}/trades", self.rest_trades, "weight", 5 if self.futures else 25)
        # public, no key (security NONE); weight 20 on USDⓈ-M (§2.3), 4 on spot (§1.3)
        self.route("GET", f"{p}/aggTrades", self.rest_agg_trades, "weight", 20 if self.futures else 4)

    def symbol_for(self, base):
        return f"{base}USDT"

    def instrument(self, asset):
        # Spot writes 8 decimals everywhere (`107407.88000000`); USDⓈ-M its tick's (`83680.00`).
        if self.futures:
            return make_instrument(self.venue_id, self.symbol_for(asset.base), asset, pad_to_tick=True)
        return make_instrument(self.venue_id, self.symbol_for(asset.base), asset, price_pad=8, qty_pad=8)

    def id_scheme(self, inst):
        return ConsecutiveIds(10**9, 9 * 10**9)

    # -- WebSocket: /stream (combined) and /ws (raw); a stream may be named in the URL

    def ws_role(self, path, headers):
        if path == "/stream":
            return "combined"
        if path == "/ws" or path.startswith("/ws/"):
            return "raw"
        return None

    def on_open(self, client):
        role = client.role
        client.dialect = role.split("-")[0]
        client.state["streams"] = []
        named = client.query.get("streams", "").split("/") if client.dialect == "combined" else []
        if client.path.startswith(("/ws/", "/public/ws/", "/market/ws/")):
            named = [client.path.rsplit("/", 1)[1]]
        self._subscribe(client, [s for s in named if s])

    def _subscribe(self, client: VenueClient, streams: list[str]) -> None:
        for s in streams:
            if s in client.state["streams"]:
                continue
            client.state["streams"].append(s)
            # Anything that is not an @trade stream is accepted and stays silent: only trades
            # are simulated. On the wrong USDⓈ-M path even @trade stays silent (§2.1). So does
            # a well-formed stream of a symbol the venue does not list: acked, never an error
            # (docs/VENUES.md §12 "Subscribe failures").
            if _BINANCE_STREAM.match(s) and not client.role.endswith("silent"):
                self.sim.subscribe(client, s)

    def _error(self, client: VenueClient, code: int, msg: str, req_id: Any = None) -> None:
        client.send(self.control("error", code=code, msg=msg, id=req_id))

    def on_text(self, client, text):
        msg = loads(text)
        if not isinstance(msg, dict):
            return self._error(client, 3, "Invalid JSON: expected value at line 1 column 1")
        req_id = msg.get("id")
        if not (
            req_id is None
            or (isinstance(req_id, int) and not isinstance(req_id, bool) and req_id >= 0)
            or (isinstance(req_id, str) and req_id.isalnum() and len(req_id) <= 36)
        ):
            return self._error(client, 2, "Invalid request: request ID must be an unsigned integer")
        method, params = msg.get("method"), msg.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return self._error(client, 1, "Invalid value type: expected array of strings", req_id)
            if method == "SUBSCRIBE":
                if len(set(client.state["streams"]) | set(params)) > self.max_streams:
                    return self._error(
                        client, 2, f"Invalid request: at most {self.max_streams} streams per connection", req_id
                    )
                self._subscribe(client, params)
            else:
                for s in params:
                    if s in client.state["streams"]:
                        client.state["streams"].remove(s)
                        self.sim.unsubscribe(client, s)
            return client.send(self.control("ack", id=req_id))
        if method == "LIST_SUBSCRIPTIONS":
            return client.send(self.control("LIST_SUBSCRIPTIONS", streams=list(client.state["streams"]), id=req_id))
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return client.send(self.control("ack" if method == "SET_PROPERTY" else "GET_PROPERTY", id=req_id))
        self._error(
            client,
            2,
            f"Invalid request: unknown variant {method!r}, expected one of SUBSCRIBE, "
            "UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY",
            req_id,
        )

    def shutdown_notice(self, client):
        dialect = "combined" if client.dialect == "combined" else "raw"
        return self.control(f"serverShutdown {dialect}", E=_ms(self.sim.now_ns()))

    def _payload(self, inst: Instrument, f: Fill) -> dict[str, Any]:
        """The values of one @trade event (the template's placeholders)."""
        t = _ms(f.ts_ns)
        price = "0" if f.placeholder else inst.price_text(f.price)
        qty = "0" if f.placeholder else inst.qty_text(f.qty)
        m = f.side == "sell"  # the buyer was the maker: the taker sold
        return {"E": t + 1, "s": inst.symbol, "t": f.num_id, "p": price, "q": qty, "T": t, "m": m}

    def publications(self, inst, fills):
        topic = f"{inst.symbol.lower()}@trade"
        out = []
        for f in fills:
            data = self._payload(inst, f)
            out.append(
                Publication(
                    topic,
                    {"combined": self.wire_combined.render(stream=topic, **data), "raw": self.wire_raw.render(**data)},
                    [] if f.placeholder else [self.trade(inst, f)],
                    "trades",
                )
            )
        return out

    # -- REST (§1.3, §2.3)

    def _symbol(self, q) -> Instrument:
        inst = self.instrument_or_none(q.get("symbol"))
        if inst is None:
            raise BadRequest(self.error_body(code=-1121, msg="Invalid symbol."))
        return inst

    def _param_error(self, msg):
        return self.error_body(code=-1100, msg=f"Illegal characters found in a parameter: {msg}.")

    def _row(self, inst: Instrument, f: Fill) -> dict[str, Any]:
        """One trade's values in a trades / historicalTrades answer (USDⓈ-M rows say `isRPITrade`)."""
        return {
            "id": f.num_id,
            "price": inst.price_text(f.price),
            "qty": inst.qty_text(f.qty),
            "quoteQty": quote_qty(inst, f),
            "time": _ms(f.ts_ns),
            "isBuyerMaker": f.side == "sell",
            "isRPITrade": f.rpi,
        }

    def rest_historical_trades(self, q):
        if self.futures and not self.request_headers.get("X-MBX-APIKEY"):
            # USDⓈ-M historicalTrades is MARKET_DATA: a key is required (§2.3)
            raise BadRequest(self.error_body(code=-2014, msg="API-key format invalid."), 401)
        inst = self._symbol(q)
        default, most = (100, 500) if self.futures else (500, 1000)
        limit = self.int_param(q, "limit", default, 1, most, self._param_error)
        from_id = self.int_param(q, "fromId", None, 0, 2**63 - 1, self._param_error)
        history = self.sim.history(inst.symbol)
        if from_id is None:
            rows = trailing([f for f in history[-4 * limit :] if not f.placeholder], limit)
        else:
            start = bisect.bisect_left(history, from_id, key=_num_id)
            rows = []
            for f in history[start:]:
                if len(rows) == limit:
                    break
                if not f.placeholder:  # market trades only: NA/ADL ids are holes in REST (§2.3)
                    rows.append(f)
        return 200, self.wire_rest.fill([self._row(inst, f) for f in rows])

    def _aggregates(self, symbol: str) -> list[list[Fill]]:
        """The aggTrades of a symbol: runs of market fills of one taker order at one price, with
        contiguous ids (a spent NA id ends a run: aggTrades carry market trades only) (§2.2, §2.3)."""
        out: list[list[Fill]] = []
        for f in self.sim.history(symbol):
            if f.placeholder:
                out.append([])
                continue
            last = out[-1] if out and out[-1] else None
            if last is not None and (last[-1].order, last[-1].level, _num_id(last[-1]) + 1) == (
                f.order,
                f.level,
                f.num_id,
            ):
                last.append(f)
            else:
                out.append([f])
        return [run for run in out if run]

    def rest_agg_trades(self, q):
        inst = self._symbol(q)
        limit = self.int_param(q, "limit", 500, 1, 1000, self._param_error)
        from_id = self.int_param(q, "fromId", None, 0, 2**63 - 1, self._param_error)
        start = self.int_param(q, "startTime", None, 0, 2**62, self._param_error)
        end = self.int_param(q, "endTime", None, 0, 2**62, self._param_error)
        if from_id is not None and (start is not None or end is not None):
            raise BadRequest(self.error_body(code=-1128, msg="Combination of optional parameters invalid."))
        if start is not None and end is not None and not 0 <= end - start < 3_600_000:
            raise BadRequest(self.error_body(code=-1127, msg="More than 1 hours between startTime and endTime."))
        base = 10**8  # aggregate ids are their own id space
        aggs = list(enumerate(self._aggregates(inst.symbol), base))
        if self.futures:  # USDⓈ-M aggTrades: "≤1 year old" (VENUES §2.3); older runs are not served
            oldest = _ms(self.sim.now_ns() - 365 * 86_400 * 10**9)
            aggs = [(a, run) for a, run in aggs if _ms(run[0].ts_ns) >= oldest]
        if from_id is not None:
            aggs = aggs[max(0, from_id - base) :]
        elif start is not None or end is not None:
            aggs = [
                (a, run)
                for a, run in aggs
                if (start is None or _ms(run[0].ts_ns) >= start) and (end is None or _ms(run[0].ts_ns) <= end)
            ]
        else:
            aggs = trailing(aggs, limit)
        return 200, self.wire_agg.fill(
            {
                "a": a,
                "p": inst.price_text(run[0].price),
                "q": inst.qty_text(sum(f.qty for f in run)),
                "f": run[0].num_id,
                "l": run[-1].num_id,
                "T": _ms(run[0].ts_ns),
                "m": run[0].side == "sell",
            }
            for a, run in aggs[:limit]
        )

    def rest_trades(self, q):
        inst = self._symbol(q)
        limit = self.int_param(q, "limit", 500, 1, 1000, self._param_error)
        fills = [f for f in self.sim.history(inst.symbol)[-4 * limit :] if not f.placeholder]
        return 200, self.wire_rest.fill([self._row(inst, f) for f in trailing(fills, limit)])

    def rest_exchange_info(self, q):
        symbols = []
        for inst in self.on_list():
            # before it opens: spot PRE_TRADING, USDⓈ-M PENDING_TRADING (docs/VENUES.md §12)
            status = self.list_state(inst, "TRADING", "PENDING_TRADING" if self.futures else "PRE_TRADING")
            tick, lot = inst.price_text(inst.tick_units), inst.qty_text(inst.lot_units)
            filters = [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": tick,
                    "maxPrice": inst.price_text(10**7 * 10**inst.price_places),
                    "tickSize": tick,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": lot,
                    "maxQty": inst.qty_text(9 * 10**6 * 10**inst.qty_places),
                    "stepSize": lot,
                },
            ]
            if self.futures:
                symbols.append(
                    {
                        "symbol": inst.symbol,
                        "pair": inst.symbol,
                        "contractType": "PERPETUAL",
                        "deliveryDate": 4133404800000,
                        "onboardDate": _ms(inst.listed_at_ns or 1_569_398_400_000_000_000),
                        "status": status,
                        "baseAsset": inst.base,
                        "quoteAsset": inst.quote,
                        "marginAsset": "USDT",
                        "pricePrecision": inst.price_places,
                        "quantityPrecision": inst.qty_places,
                        "underlyingType": "COIN",
                        "filters": filters,
                    }
                )
            else:
                symbols.append(
                    {
                        "symbol": inst.symbol,
                        "status": status,
                        "baseAsset": inst.base,
                        "baseAssetPrecision": 8,
                        "quoteAsset": inst.quote,
                        "quotePrecision": 8,
                        "quoteAssetPrecision": 8,
                        "orderTypes": ["LIMIT", "MARKET"],
                        "isSpotTradingAllowed": True,
                        "filters": filters,
                    }
                )
        capacity, period = self.buckets["weight"]
        return 200, {
            "timezone": "UTC",
            "serverTime": _ms(self.sim.now_ns()),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": int(period // 60),
                    "limit": capacity,
                }
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }


class BinanceUsdm(Binance):
    futures = True
    # A delisted perpetual stays in exchangeInfo as `SETTLING` (contract status enum: BN-FUT-DOCS
    # via coincise docs/binance/usdm/response_formats.md; third party: python-binance#1376, delisted
    # HNT/TOMO still returned; polyoxide-binance's SymbolStatus: "Settling: a delisted perpetual",
    # 134 of 924 symbols on 2026-10-07). No halt state is documented for a perpetual.
    delisted_states: ClassVar = {"binance-usdm": "SETTLING"}
    halted_states: ClassVar = {}
    heartbeat = Heartbeat(server_ping_every=180, pong_within=600, lifetime=DAY_S)  # §2.1
    incoming_limit = (10, 1.0)
    ws_path = "/public/stream"
    buckets: ClassVar = {"weight": (2400, 60.0)}

    def id_scheme(self, inst):
        # ~0.4 % of ids go to zero-price X=NA records in the real stream (§2.2); more here so
        # every test run sees some.
        return ConsecutiveIds(10**9, 9 * 10**9, placeholder_p=0.02, rpi_p=0.03)

    def ws_role(self, path, headers):
        # @trade lives on /public; the legacy /ws and /stream and a path-less socket deliver the
        # /public streams only; on /market (aggTrade's home) @trade is acked and then never sent
        # (§2.1, §12, checked again 2026-12).
        if path in ("/public/stream", "/stream", "/market/stream"):
            return "combined-silent" if path == "/market/stream" else "combined"
        if path in ("/public/ws", "/", "/ws") or path.startswith(("/public/ws/", "/ws/")):
            return "raw"
        if path == "/market/ws" or path.startswith("/market/ws/"):
            return "raw-silent"
        return None

    def _payload(self, inst, f):
        t = _ms(f.ts_ns)
        if f.placeholder:
            x, price, qty = "NA", "0", "0"
        else:
            x, price, qty = ("RPI" if f.rpi else "MARKET"), inst.price_text(f.price), inst.qty_text(f.qty)
        m = True if f.placeholder else f.side == "sell"
        return {"E": t + 1, "T": t, "s": inst.symbol, "t": f.num_id, "p": price, "q": qty, "X": x, "m": m}


# ---------------------------------------------------------------------------------------------
# Bybit v5 spot and linear (§3)


class Bybit(Venue):
    # No ping-pong and no stream data for 10 minutes cuts the connection (§3.1).
    heartbeat = Heartbeat(client_ping_within=600, data_is_heartbeat=True)
    buckets: ClassVar = {"ip": (600, 5.0)}  # 600 requests / 5 s per IP (§3.1)
    rate_limited_status = 403  # Bybit answers an IP over its limit with 403 "access too frequent" (§3.1)
    max_args_chars = 21_000  # characters of `args` per connection (§3.1)
    # instruments-info answers only `Trading` symbols unless `status` asks another state, and spot
    # has `Trading` only (BYBIT docs/v5/market/instrument.mdx L30): a delisted symbol (`Closed`)
    # leaves the answer the recorder reads. No halt state is documented (enum.mdx `status`).

    def __init__(self, venue_id, sim):
        super().__init__(venue_id, sim)
        self.spot = venue_id == "bybit-spot"
        self.rate_limited_body = "access too frequent"  # plain text, not JSON (§3.1)
        self.category = "spot" if self.spot else "linear"
        self.ws_path = f"/v5/public/{self.category}"
        self.max_args = 10 if self.spot else None  # spot: <= 10 args per subscribe request
        self.route("GET", "/v5/market/instruments-info", self.rest_instruments, "ip")
        self.route("GET", "/v5/market/recent-trade", self.rest_recent_trade, "ip")
        self.last_tick: dict[str, tuple[int, str]] = {}
        self.wire = template(venue_id, "publicTrade")
        self.wire_rest = template(venue_id, "REST trades")

    def symbol_for(self, base):
        return f"{base}USDT"

    def instrument(self, asset):
        # Linear writes the tick's decimals (`65114.20`, `1.30`); spot trims (`65140.5`).
        return make_instrument(self.venue_id, self.symbol_for(asset.base), asset, pad_to_tick=not self.spot)

    def id_scheme(self, inst):
        return BybitSpotIds() if self.spot else BybitLinearIds()

    def _reply(self, client: VenueClient, op: str, success: bool, ret_msg: str, req_id: Any) -> None:
        # req_id presence as recorded (samples/bybit_*.control.jsonl): linear always carries it,
        # spot only when the request had one.
        name = "reply with req_id" if self.spot and req_id is not None else "reply"
        if not self.spot and req_id is None:
            req_id = ""
        client.send(self.control(name, success=success, ret_msg=ret_msg, conn_id=client.conn_id, req_id=req_id, op=op))

    def on_text(self, client, text):
        msg = loads(text)
        if not isinstance(msg, dict):
            return self._reply(client, "", False, "error:unmarshal request failed", None)
        op, req_id, args = msg.get("op"), msg.get("req_id"), msg.get("args", [])
        if op == "ping":
            client.heartbeat()
            return self._reply(client, "ping", True, "pong", req_id)
        if op not in ("subscribe", "unsubscribe"):
            return self._reply(client, str(op), False, f"error:handler not found,op:{op}", req_id)
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return self._reply(client, op, False, "error:args must be an array of strings", req_id)
        if op == "unsubscribe":
            for topic in args:
                self.sim.unsubscribe(client, topic)
            return self._reply(client, op, True, "" if not self.spot else op, req_id)
        if self.max_args is not None and len(args) > self.max_args:
            return self._reply(client, op, False, f"args size >{self.max_args}", req_id)
        # Unknown symbols refuse the whole request, naming them: "Invalid symbol :[publicTrade.X]"
        # (third-party captures); whether the request's other topics are taken is not documented,
        # so none is, the strictest reading (docs/VENUES.md §12 "Subscribe failures").
        bad = [a for a in args if not (a.startswith("publicTrade.") and self.instrument_or_none(a[12:]))]
        if bad:
            return self._reply(client, op, False, f"Invalid symbol :[{','.join(bad)}]", req_id)
        chars = sum(len(dumps(t)) + 1 for t in set(client.topics) | set(args))
        if chars > self.max_args_chars:
            return self._reply(
                client, op, False, f"args exceed {self.max_args_chars} characters per connection", req_id
            )
        for topic in args:
            self.sim.subscribe(client, topic)
        self._reply(client, op, True, "subscribe" if self.spot else "", req_id)

    def _tick_direction(self, symbol: str, price: int) -> str:
        last_price, last_dir = self.last_tick.get(symbol, (price, "ZeroPlusTick"))
        if price > last_price:
            d = "PlusTick"
        elif price < last_price:
            d = "MinusTick"
        else:
            d = "ZeroPlusTick" if last_dir in ("PlusTick", "ZeroPlusTick") else "ZeroMinusTick"
        self.last_tick[symbol] = (price, d)
        return d

    def _row(self, inst: Instrument, f: Fill) -> dict[str, Any]:
        """One trade's values in a publicTrade message (the template's row placeholders)."""
        row = {
            "i": f.trade_id,
            "T": _ms(f.ts_ns),
            "p": inst.price_text(f.price),
            "v": inst.qty_text(f.qty),
            "S": _side_cap(f.side),
            "seq": f.extra["seq"],
            "s": inst.symbol,
            "RPI": f.rpi,
        }
        if not self.spot:  # linear rows say how the price moved; spot rows do not
            row["L"] = self._tick_direction(inst.symbol, f.price)
        return row

    def publications(self, inst, fills):
        # One message per match, up to 1024 fills each (§3.2).
        topic = f"publicTrade.{inst.symbol}"
        out = []
        for start in range(0, len(fills), 1024):
            chunk = fills[start : start + 1024]
            ts = _ms(chunk[-1].ts_ns) + 1
            frame = self.wire.render([self._row(inst, f) for f in chunk], topic=topic, ts=ts)
            out.append(Publication(topic, {"": frame}, [self.trade(inst, f) for f in chunk], "trades"))
        return out

    # -- REST (§3.3)

    def _envelope(self, result: Any, code: int = 0, msg: str = "OK") -> tuple[int, Any]:
        return 200, {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": _ms(self.sim.now_ns())}

    def _refusal(self, msg: str) -> tuple[int, Any]:
        """A refused request, answered 200 in the envelope with retCode 10001 (§3.3)."""
        return 200, self.error_body(retCode=10001, retMsg=msg, time=_ms(self.sim.now_ns()))

    def rest_recent_trade(self, q):
        if q.get("category") != self.category:
            return self._refusal("params error: category")
        inst = self.instrument_or_none(q.get("symbol"))
        if inst is None:
            return self._refusal("params error: symbol invalid")
        # The latest <= 60 (spot) / <= 1000 (linear) only: no cursor, no time range.
        default, most = (60, 60) if self.spot else (500, 1000)
        limit = self.int_param(
            q,
            "limit",
            default,
            1,
            most,
            lambda m: self.error_body(
                "REST params error", retCode=10001, retMsg=f"params error: {m}", time=_ms(self.sim.now_ns())
            ),
        )
        rows = [
            {
                "execId": f.trade_id,
                "symbol": inst.symbol,
                "price": inst.price_text(f.price),
                "size": inst.qty_text(f.qty),
                "side": _side_cap(f.side),
                "time": _ms(f.ts_ns),
                "isRPITrade": f.rpi,
                "seq": f.extra["seq"],
            }
            for f in reversed(trailing(self.sim.history(inst.symbol), limit))
        ]
        return 200, self.wire_rest.fill(rows, category=self.category, server_time=_ms(self.sim.now_ns()))

    def rest_instruments(self, q):
        if q.get("category") != self.category:
            return self._envelope({"category": q.get("category", ""), "list": [], "nextPageCursor": ""})
        out = []
        # Only `Trading` instruments unless `status` names another state: PreLaunch ones must be
        # asked for (docs/VENUES.md §12, BYBIT market/instrument.mdx).
        wanted = q.get("status") or "Trading"
        for inst in self.listed():
            status = self.list_state(inst, "Trading", "PreLaunch")
            if status != wanted:
                continue
            tick, lot = inst.price_text(inst.tick_units), inst.qty_text(inst.lot_units)
            if self.spot:
                out.append(
                    {
                        "symbol": inst.symbol,
                        "baseCoin": inst.base,
                        "quoteCoin": inst.quote,
                        "innovation": "0",
                        "status": status,
                        "marginTrading": "none",
                        "lotSizeFilter": {
                            "basePrecision": lot,
                            "quotePrecision": "0.00000001",
                            "minOrderQty": lot,
                            "maxOrderQty": "100000",
                        },
                        "priceFilter": {"tickSize": tick},
                    }
                )
            else:
                out.append(
                    {
                        "symbol": inst.symbol,
                        "contractType": "LinearPerpetual",
                        "status": status,
                        "baseCoin": inst.base,
                        "quoteCoin": inst.quote,
                        "settleCoin": "USDT",
                        "launchTime": str(_ms(inst.listed_at_ns or 1_585_526_400_000_000_000)),
                        "priceScale": str(inst.price_places),
                        "priceFilter": {
                            "minPrice": tick,
                            "maxPrice": inst.price_text(10**7 * 10**inst.price_places),
                            "tickSize": tick,
                        },
                        "lotSizeFilter": {"maxOrderQty": "1000000", "minOrderQty": lot, "qtyStep": lot},
                    }
                )
        return self._envelope({"category": self.category, "list": out, "nextPageCursor": ""})


# ---------------------------------------------------------------------------------------------
# OKX v5 SPOT and SWAP (§4)


class Okx(Venue):
    # "The connection will break automatically if the subscription is not established or data
    # has not been pushed for more than 30 seconds" (§4.1): a pong counts as data pushed.
    heartbeat = Heartbeat(quiet_limit=30)
    ws_path = "/ws/v5/business"  # trades-all, one fill per push: what a tick recorder uses (§4.2)
    channels = ("trades-all", "trades")
    buckets: ClassVar = {"history": (20, 2.0), "trades": (100, 2.0), "instruments": (20, 2.0)}  # §4.3
    # "When a product is going to be delisted ... the instrument will not be available"; a halted
    # one is `suspend` (OKX-DOCS public data, Get instruments: `state`; coincise
    # docs/okx/public_data.md). Delisted instruments leave the list.
    halted_states: ClassVar = {"okx-spot": "suspend", "okx-swap": "suspend"}
    #: Channels refused to a connection that has not logged in, with OKX's "Please log in" (60011,
    #: the `login required` template). Empty by default: OKX documents `trades-all` as public; a test or
    #: a scenario (`SimVenue.require_login`) adds it for the case ccxt codes for (it logs in first).
    login_required: frozenset[str] = frozenset()
    #: Whether a request with an unknown instrument still subscribes its other arguments. Not
    #: documented; third parties saw them deliver (cryptofeed PR #702: "doesn't break existing code";
    #: burakoner/OKX.Api#34: the one good instId of a many-argument request delivered). Off by
    #: default, the strictest reading: nothing of the request is subscribed. Tests turn it on.
    takes_the_rest_of_a_refused_request: bool = False

    def __init__(self, venue_id, sim):
        super().__init__(venue_id, sim)
        self.swap = venue_id == "okx-swap"
        self.inst_type = "SWAP" if self.swap else "SPOT"
        self.wire_all = template(venue_id, "trades-all")
        self.wire_trades = template(venue_id, "trades")
        self.wire_rest = template(venue_id, "REST trades")
        self.rate_limited_body = self.error_body("REST rate limited")
        self.route("GET", "/api/v5/public/instruments", self.rest_instruments, "instruments")
        self.route("GET", "/api/v5/market/history-trades", self.rest_history_trades, "history")
        self.route("GET", "/api/v5/market/trades", self.rest_trades, "trades")

    def symbol_for(self, base):
        return f"{base}-USDT-SWAP" if self.swap else f"{base}-USDT"

    def instrument(self, asset):
        return make_instrument(self.venue_id, self.symbol_for(asset.base), asset, contracts=self.swap)

    def ws_role(self, path, headers):
        return {"/ws/v5/public": "public", "/ws/v5/business": "business"}.get(path)

    def _send(self, client: VenueClient, req_id: Any, name: str, **fields: Any) -> None:
        client.send(self.control(name, req_id, connId=client.conn_id, **fields))

    def on_text(self, client, text):
        if text == "ping":
            return client.send("pong")
        msg = loads(text)
        if (
            not isinstance(msg, dict)
            or msg.get("op") not in ("subscribe", "unsubscribe")
            or not isinstance(msg.get("args"), list)
        ):
            return self._send(
                client,
                msg.get("id") if isinstance(msg, dict) else None,
                "error",
                code="60012",
                msg=f"Invalid request: {text[:200]}",
            )
        op, req_id = msg["op"], msg.get("id")
        unknown = []
        for arg in msg["args"]:
            if not isinstance(arg, dict):
                return self._send(client, req_id, "error", code="60012", msg=f"Invalid request: {text[:200]}")
            channel, inst_id = arg.get("channel"), arg.get("instId")
            if channel in self.login_required and client.role == "business":
                # The whole request is refused, as for any other bad argument; nothing is subscribed.
                return self._send(client, req_id, "login required")
            # trades is served on /public, trades-all on /business only (§4.1).
            sockets: dict[Any, str] = {"trades": "public", "trades-all": "business"}
            wanted = sockets.get(channel)
            if wanted != client.role or self.instrument_or_none(inst_id) is None:
                unknown.append(arg)
        for arg in msg["args"]:
            if arg in unknown:
                # One 60018 per unknown argument, naming it (burakoner/OKX.Api#34: one per bad instId
                # of a many-argument request), in the wording of the latest live capture (3P, of
                # 2026-10-02; the earlier wordings are in venues/okx.py).
                self._send(
                    client,
                    req_id,
                    "error",
                    code="60018",
                    msg=f"Subscribe failed, wrong URL or channel:{arg.get('channel')},instId:{arg.get('instId')} "
                    "doesn't exist. Please use the correct URL, channel and parameters referring to API document.",
                )
            elif not unknown or self.takes_the_rest_of_a_refused_request:
                topic = f"{arg['channel']}:{arg['instId']}"
                (self.sim.subscribe if op == "subscribe" else self.sim.unsubscribe)(client, topic)
                self._send(client, req_id, "ack", event=op, channel=arg["channel"], instId=arg["instId"])

    def shutdown_notice(self, client):
        # Sent 60 s before a service-upgrade disconnect (§4.1).
        return self.control("notice", connId=client.conn_id)

    def publications(self, inst, fills):
        out = []
        all_topic = f"trades-all:{inst.symbol}"
        for f in fills:
            row = {
                "instId": inst.symbol,
                "tradeId": f.trade_id,
                "px": inst.price_text(f.price),
                "sz": inst.qty_text(f.qty),
                "side": f.side,
                "ts": _ms(f.ts_ns),
            }
            frame = self.wire_all.render([row], channel_inst=inst.symbol)
            out.append(Publication(all_topic, {"": frame}, [self.trade(inst, f)], "trades-all"))
        # `trades` aggregates per taker order and price: tradeId is the last id, count the fills,
        # sz the sum (§4.2).
        topic = f"trades:{inst.symbol}"
        for level in _levels(fills):
            last, qty = level[-1], inst.qty_text(sum(f.qty for f in level))
            row = {
                "instId": inst.symbol,
                "tradeId": last.trade_id,
                "px": inst.price_text(last.price),
                "sz": qty,
                "side": last.side,
                "ts": _ms(last.ts_ns),
                "count": len(level),
            }
            frame = self.wire_trades.render([row], channel_inst=inst.symbol)
            out.append(Publication(topic, {"": frame}, [self.trade(inst, last, qty=qty)], "trades"))
        return out

    # -- REST (§4.3)

    def _ok(self, data: list) -> tuple[int, Any]:
        return 200, {"code": "0", "msg": "", "data": data}

    def _row(self, inst: Instrument, f: Fill) -> dict[str, Any]:
        """One trade's values in a history-trades / trades answer."""
        return {
            "instId": inst.symbol,
            "side": f.side,
            "sz": inst.qty_text(f.qty),
            "px": inst.price_text(f.price),
            "tradeId": f.trade_id,
            "ts": _ms(f.ts_ns),
        }

    def _error(self, msg):
        return self.error_body(code="51000", msg=f"Parameter {msg}")

    def _inst(self, q) -> Instrument:
        inst = self.instrument_or_none(q.get("instId"))
        if inst is None:
            raise BadRequest(self.error_body(code="51001", msg="Instrument ID doesn't exist."), status=200)
        return inst

    def rest_history_trades(self, q):
        inst = self._inst(q)
        limit = self.int_param(q, "limit", 100, 1, 100, self._error)
        by_time = q.get("type", "1") == "2"
        after = self.int_param(q, "after", None, 0, 2**63 - 1, self._error)
        before = self.int_param(q, "before", None, 0, 2**63 - 1, self._error)
        history = self.sim.history(inst.symbol)
        # history-trades: "from the last 3 months" (VENUES §4.3); older trades are simply not
        # there (an empty page), not an error.
        oldest = self.sim.now_ns() - 90 * 86_400 * 10**9
        history = history[bisect.bisect_left(history, oldest, key=lambda f: f.ts_ns) :]
        key = (lambda f: _ms(f.ts_ns)) if by_time else (lambda f: f.num_id)
        # `after`: records older than it; `before`: newer; newest first (§4.3).
        hi = len(history) if after is None else bisect.bisect_left(history, after, key=key)
        lo = 0 if before is None else bisect.bisect_right(history, before, key=key)
        rows = history[max(lo, hi - limit) : hi] if before is None or after is not None else history[lo : lo + limit]
        return 200, self.wire_rest.fill([self._row(inst, f) for f in reversed(rows)])

    def rest_trades(self, q):
        inst = self._inst(q)
        limit = self.int_param(q, "limit", 100, 1, 500, self._error)
        rows = reversed(trailing(self.sim.history(inst.symbol), limit))
        return 200, self.wire_rest.fill([self._row(inst, f) for f in rows])

    def rest_instruments(self, q):
        if q.get("instType") != self.inst_type:
            return self._ok([])
        out = []
        for inst in self.listed():
            tick, lot = inst.price_text(inst.tick_units), inst.qty_text(inst.lot_units)
            row: dict[str, Any] = {
                "instType": self.inst_type,
                "instId": inst.symbol,
                "uly": "",
                "instFamily": "",
                "baseCcy": inst.base,
                "quoteCcy": inst.quote,
                "settleCcy": "",
                "ctVal": "",
                "ctMult": "",
                "ctValCcy": "",
                "ctType": "",
                "tickSz": tick,
                "lotSz": lot,
                "minSz": lot,
                "state": self.list_state(inst, "live", "preopen"),
                "listTime": str(_ms(inst.listed_at_ns or 1_548_000_000_000_000_000)),
            }
            if self.swap:
                pair = f"{inst.base}-{inst.quote}"
                row |= {
                    "uly": pair,
                    "instFamily": pair,
                    "baseCcy": "",
                    "quoteCcy": "",
                    "settleCcy": "USDT",
                    "ctVal": inst.contract_value,
                    "ctMult": "1",
                    "ctValCcy": inst.base,
                    "ctType": "linear",
                }
            out.append(row)
        return self._ok(out)


def _levels(fills: list[Fill]) -> list[list[Fill]]:
    """Fills grouped by (taker order, price level), in order."""
    groups: list[list[Fill]] = []
    for f in fills:
        if f.placeholder:
            continue
        if groups and (groups[-1][-1].order, groups[-1][-1].level) == (f.order, f.level):
            groups[-1].append(f)
        else:
            groups.append([f])
    return groups


# ---------------------------------------------------------------------------------------------
# KuCoin spot and futures (§5, §6)


class Kucoin(Venue):
    resolution_ns = 1  # `time` / `ts` are nanoseconds
    ping_interval_ms, ping_timeout_ms = 18_000, 10_000  # advertised by bullet-public (§5.1)
    # A connection lasts as long as its bullet token, reported to be ~24 h (VENUES §5.1, third
    # party; the official text names no lifetime): then the server closes it.
    heartbeat = Heartbeat(client_ping_within=(ping_interval_ms + ping_timeout_ms) / 1000, lifetime=DAY_S)
    lifetime_close_reason = "token expired"
    buckets: ClassVar = {"public": (2000, 30.0)}  # public pool 2000 / 30 s per IP (§5.3)
    max_symbols_per_topic = 100
    max_topics = 400  # per connection, spot (§5.1); futures has none
    # Both lists hold only what can be traded: spot /api/v2/symbols "a list of available currency
    # pairs for trading", futures /api/v1/contracts/active "all contracts that can be traded"
    # (KC-DOCS via coincise docs/kucoin/endpoints/public/): a delisted one leaves them. Halted:
    # spot `enableTrading: false`, futures `status: Paused` ("Suspended", futures-market.md enum).
    halted_states: ClassVar = {"kucoin-spot": "false", "kucoin-futures": "Paused"}

    def __init__(self, venue_id, sim):
        super().__init__(venue_id, sim)
        self.futures = venue_id == "kucoin-futures"
        self.topic_prefix = "/contractMarket/execution:" if self.futures else "/market/match:"
        self.wire = template(venue_id, self.topic_prefix[:-1])
        self.wire_rest = template(venue_id, "REST trades")
        self.rate_limited_body = self.error_body(code="429000", msg="Too Many Requests")
        self.tokens: set[str] = set()
        self.route("POST", "/api/v1/bullet-public", self.rest_bullet, "public", 10)
        if self.futures:
            self.route("GET", "/api/v1/contracts/active", self.rest_contracts, "public", 1)
            self.route("GET", "/api/v1/trade/history", self.rest_history, "public", 5)
        else:
            self.route("GET", "/api/v2/symbols", self.rest_symbols, "public", 4)
            self.route("GET", "/api/v1/market/histories", self.rest_history, "public", 3)
            self.route("GET", "/api/v3/currencies", self.rest_currencies, "public", 3)  # ccxt's load_markets reads it

    def symbol_for(self, base):
        if self.futures:
            return f"{'XBT' if base == 'BTC' else base}USDTM"
        return f"{base}-USDT"

    def instrument(self, asset):
        inst = make_instrument(self.venue_id, self.symbol_for(asset.base), asset, contracts=self.futures)
        if self.futures and asset.base == "BTC":
            inst.base = "XBT"
        return inst

    def id_scheme(self, inst):
        # Older spot symbols carry 24-hex ObjectIds; newer ones (and futures) the numeric sequence.
        return KucoinIds(numeric=self.futures or inst.base not in ("ETH", "SOL", "DOGE"), numeric_orders=self.futures)

    def on_open(self, client):
        connect_id = client.query.get("connectId") or client.conn_id
        token = client.query.get("token")
        if token not in self.tokens:
            client.send(self.control("error", id=connect_id, code=401, data="token is invalid"))
            return client.close(4001, "token is invalid")
        client.send(self.control("welcome", id=connect_id))

    def _error(self, client: VenueClient, req_id: Any, code: int, data: str) -> None:
        client.send(self.control("error", id=req_id, code=code, data=data))

    def on_text(self, client, text):
        msg = loads(text)
        if not isinstance(msg, dict):
            return self._error(client, "", 400, "malformed request")
        kind, req_id = msg.get("type"), msg.get("id", "")
        if kind == "ping":
            client.heartbeat()
            return client.send(self.control("pong", id=req_id))
        if kind not in ("subscribe", "unsubscribe"):
            return self._error(client, req_id, 404, f"type {kind} is not supported")
        topic = msg.get("topic")
        if not isinstance(topic, str) or not topic.startswith(self.topic_prefix):
            return self._error(client, req_id, 404, f"topic {topic} is not found")
        symbols = [s for s in topic[len(self.topic_prefix) :].split(",") if s]
        if not self.futures and len(symbols) > self.max_symbols_per_topic:
            return self._error(
                client,
                req_id,
                509,
                f"exceed max subscription count limitation of {self.max_symbols_per_topic} per time",
            )
        topics = [self.topic_prefix + s for s in symbols]
        if kind == "subscribe" and any(self.instrument_or_none(s) is None for s in symbols):
            # An unknown symbol: `code` 404, "topic <as sent> is not found" (third-party captures of
            # one-symbol topics). For a topic of several symbols nothing says whether the others are
            # taken, so none is, the strictest reading (docs/VENUES.md §12 "Subscribe failures").
            return self._error(client, req_id, 404, f"topic {topic} is not found")
        if kind == "subscribe":
            if not self.futures and len(set(client.topics) | set(topics)) > self.max_topics:
                return self._error(
                    client, req_id, 509, f"exceed max subscription count limitation of {self.max_topics} per session"
                )
            for t in topics:
                self.sim.subscribe(client, t)
        else:
            for t in topics:
                self.sim.unsubscribe(client, t)
        if msg.get("response"):
            client.send(self.control("ack", id=req_id))

    def publications(self, inst, fills):
        topic = self.topic_prefix + inst.symbol
        out = []
        for f in fills:
            seq = f.extra["sequence"]
            qty = inst.qty_text(f.qty)
            # The two templates name what they need; the values the other has are not used.
            frame = self.wire.render(
                topic=topic,
                sn=seq,  # futures only: the message's sequence, the trade's
                symbol=inst.symbol,
                sequence=seq,
                side=f.side,
                size=int(qty) if self.futures else qty,  # futures: whole contracts, a JSON integer
                price=inst.price_text(f.price),
                takerOrderId=f.extra["taker"],
                makerOrderId=f.extra["maker"],
                tradeId=f.extra["trade_id_field"],
                ts=f.ts_ns,  # futures `ts`, spot `time`: nanoseconds
                time=f.ts_ns,
            )
            out.append(Publication(topic, {"": frame}, [self.trade(inst, f)], "trades"))
        return out

    # -- REST (§5.1, §5.3, §6)

    def rest_bullet(self, q):
        token = f"{self.sim.conn_rng.getrandbits(256):064x}"
        self.tokens.add(token)
        scale = self.sim.time_scale
        return 200, {
            "code": "200000",
            "data": {
                "token": token,
                "instanceServers": [
                    {
                        "endpoint": self.sim.ws_origin + "/",
                        "encrypt": False,
                        "protocol": "websocket",
                        "pingInterval": max(1, round(self.ping_interval_ms * scale)),
                        "pingTimeout": max(1, round(self.ping_timeout_ms * scale)),
                    }
                ],
            },
        }

    def rest_history(self, q):
        inst = self.instrument_or_none(q.get("symbol"))
        if inst is None:
            raise BadRequest(self.error_body(code="400100", msg="symbol invalid"))
        # The last 100, no paging. No tradeId in the spot rows: merge by sequence (§5.3); the spot
        # template takes what it names (`time`), futures' theirs (`ts`, the ids).
        rows = [
            {
                "sequence": f.extra["sequence"],
                "tradeId": f.extra["trade_id_field"],
                "makerOrderId": f.extra["maker"],
                "takerOrderId": f.extra["taker"],
                "ts": f.ts_ns,
                "time": f.ts_ns,
                "size": int(inst.qty_text(f.qty)) if self.futures else inst.qty_text(f.qty),
                "price": inst.price_text(f.price),
                "side": f.side,
            }
            for f in reversed(trailing(self.sim.history(inst.symbol), 100))
        ]
        return 200, self.wire_rest.fill(rows)

    def rest_symbols(self, q):
        data = [
            {
                "symbol": i.symbol,
                "name": i.symbol,
                "baseCurrency": i.base,
                "quoteCurrency": i.quote,
                "feeCurrency": i.quote,
                "market": "USDS",
                "baseMinSize": i.lot,
                "quoteMinSize": "0.1",
                "baseMaxSize": "10000000000",
                "quoteMaxSize": "99999999",
                "baseIncrement": i.lot,
                "quoteIncrement": "0.000001",
                "priceIncrement": i.tick,
                "priceLimitRate": "0.1",
                "minFunds": "0.1",
                "isMarginEnabled": False,
                "enableTrading": self.list_state(i, "true", "false") == "true",
                "tradingStartTime": _ms(i.listed_at_ns) if i.listed_at_ns else None,
            }
            for i in self.listed()
        ]
        return 200, {"code": "200000", "data": data}

    def rest_currencies(self, q):
        # The shape of KuCoin's GET /api/v3/currencies (one chain per coin here: wallets are not simulated).
        coins = sorted({i.base for i in self.listed()} | {"USDT"})
        return 200, {
            "code": "200000",
            "data": [
                {
                    "currency": c,
                    "name": c,
                    "fullName": c,
                    "precision": 8,
                    "confirms": None,
                    "contractAddress": None,
                    "isMarginEnabled": False,
                    "isDebitEnabled": False,
                    "chains": [
                        {
                            "chainName": c,
                            "withdrawalMinSize": "1",
                            "depositMinSize": "1",
                            "withdrawFeeRate": "0",
                            "withdrawalMinFee": "1",
                            "isWithdrawEnabled": False,
                            "isDepositEnabled": False,
                            "confirms": 1,
                            "preConfirms": 1,
                            "contractAddress": "",
                            "withdrawPrecision": 8,
                            "maxWithdraw": None,
                            "maxDeposit": None,
                            "needTag": False,
                            "chainId": c.lower(),
                        }
                    ],
                }
                for c in coins
            ],
        }

    def rest_contracts(self, q):
        # KuCoin writes these as JSON numbers; float() of the exact text prints back the same text.
        next_funding = 8 * 3600 * 1000 - _ms(self.sim.now_ns()) % (8 * 3600 * 1000)
        data = [
            {
                "symbol": i.symbol,
                "rootSymbol": "USDT",
                "type": "FFWCSX",
                "baseCurrency": i.base,
                "quoteCurrency": i.quote,
                "settleCurrency": "USDT",
                "isInverse": False,
                "status": self.list_state(i, "Open", "Init"),
                "multiplier": float(cast(str, i.contract_value)),  # a contract's: always set
                "lotSize": 1,
                "tickSize": float(i.tick),
                "firstOpenDate": _ms(i.listed_at_ns or 1_585_526_400_000_000_000),
                # A perpetual has no expiry and a next funding (ms from now, every 8 h): what
                # tells it from a dated future (ccxt's kucoinfutures reads it so).
                "expireDate": None,
                "nextFundingRateTime": next_funding,
            }
            for i in self.listed()
        ]
        return 200, {"code": "200000", "data": data}


# ---------------------------------------------------------------------------------------------
# Gate v4 spot and USDT futures (§7, §8)


class Gate(Venue):
    # Server protocol pings; a client that does not answer is disconnected. The interval and the
    # timeout are not documented: 10 s and 30 s here. An app-level spot.ping/futures.ping resets
    # the server's timer (§7.1).
    heartbeat = Heartbeat(server_ping_every=10, pong_within=30)
    buckets: ClassVar = {"trades": (200, 10.0), "instruments": (200, 10.0)}  # 200 req / 10 s per endpoint (§7.1)
    #: Spot trades by limit and page: `limit * (page - 1) <= 100000` (§7.3; Gate's API doc of GET
    #: /spot/trades), whatever the time range holds; a deeper page is refused with 400 (Gate's error
    #: shape; its exact words for this case are not documented). Tests scale it down.
    max_page_offset: ClassVar[int] = 100_000
    # Spot keeps a delisted pair `untradable` with `delisting_time` ("expected time to remove the
    # shelves") until it is purged; futures keep a delisted contract as `status: delisted`,
    # `in_delisting: true` (GATE-DOCS `GET /spot/currency_pairs`, `GET /futures/{settle}/contracts`
    # via coincise; third party: gocryptotrader#2018 reads "delisting status and when it will be
    # purged"). Halted: spot `untradable` ("cannot be traded"), futures `circuit_breaker`.
    delisted_states: ClassVar = {"gate-spot": "untradable", "gate-futures": "delisted"}
    halted_states: ClassVar = {"gate-spot": "untradable", "gate-futures": "circuit_breaker"}

    def __init__(self, venue_id, sim):
        super().__init__(venue_id, sim)
        self.futures = venue_id == "gate-futures"
        self.prefix = "futures" if self.futures else "spot"
        self.ws_path = "/v4/ws/usdt" if self.futures else "/ws/v4/"
        self.wire = template(venue_id, f"{self.prefix}.trades")
        self.wire_size_decimal = template(venue_id, "futures.trades size-decimal") if self.futures else None
        self.wire_rest = template(venue_id, "REST trades")
        self.wire_rest_size_decimal = template(venue_id, "REST trades size-decimal") if self.futures else None
        self.rate_limited_body = self.error_body(label="TOO_MANY_REQUESTS", message="Request Rate Limit Exceeded")
        # Spot create_time_ms has a fraction (`1788336082402.208000`): microseconds.
        self.resolution_ns = 1_000_000 if self.futures else 1_000
        if self.futures:
            self.route("GET", "/api/v4/futures/usdt/contracts", self.rest_contracts, "instruments")
            self.route("GET", "/api/v4/futures/usdt/trades", self.rest_trades, "trades")
        else:
            self.route("GET", "/api/v4/spot/currency_pairs", self.rest_pairs, "instruments")
            self.route("GET", "/api/v4/spot/trades", self.rest_trades, "trades")
        # One host serves spot and futures; ccxt's load_markets reads these for either. Margin
        # and BTC-settled contracts are not simulated: their lists are empty.
        self.route("GET", "/api/v4/spot/currencies", self.rest_currencies, "instruments")
        self.route("GET", "/api/v4/margin/currency_pairs", lambda q: (200, []), "instruments")
        self.route("GET", "/api/v4/futures/btc/contracts", lambda q: (200, []), "instruments")

    def symbol_for(self, base):
        return f"{base}_USDT"

    def instrument(self, asset):
        return make_instrument(self.venue_id, self.symbol_for(asset.base), asset, contracts=self.futures)

    def ws_role(self, path, headers):
        if path != self.ws_path:
            return None
        # With `X-Gate-Size-Decimal: 1` futures sizes arrive as strings (§8).
        return "size-decimal" if self.futures and headers.get("X-Gate-Size-Decimal") == "1" else "public"

    def on_open(self, client):
        client.dialect = "size-decimal" if client.role == "size-decimal" else ""

    def _reply(self, client: VenueClient, name: str, req_id: Any, **fields: Any) -> None:
        now = self.sim.now_ns()
        # A refusal echoes the request's payload and a trace id of its own (the documented failed
        # attempt); the other replies' templates have no place for them.
        fields.setdefault("payload", [])
        trace_id = f"{self.sim.conn_rng.getrandbits(128):032x}"
        client.send(
            self.control(
                name, req_id, time=now // 10**9, time_ms=_ms(now), conn_id=client.conn_id, trace_id=trace_id, **fields
            )
        )

    def on_text(self, client, text):
        msg = loads(text)
        channel = msg.get("channel") if isinstance(msg, dict) else None
        req_id = msg.get("id") if isinstance(msg, dict) else None
        if channel == f"{self.prefix}.ping":
            client.answer_ping()
            return self._reply(client, "pong", req_id)
        trades = f"{self.prefix}.trades"
        event = msg.get("event") if isinstance(msg, dict) else None
        payload = msg.get("payload") if isinstance(msg, dict) else None
        if channel != trades or event not in ("subscribe", "unsubscribe") or not isinstance(payload, list):
            return self._reply(
                client,
                "error",
                req_id,
                channel=channel or "",
                event=event or "",
                code=1,
                message="invalid argument struct",
            )
        unknown = [p for p in payload if not isinstance(p, str) or self.instrument_or_none(p) is None]
        if unknown:
            word = "contract" if self.futures else "currency pair"
            return self._reply(
                client,
                "error",
                req_id,
                channel=trades,
                event=event,
                payload=payload,
                code=2,
                message=f"unknown {word} {unknown[0]}",
            )
        for p in payload:  # subscriptions are additive across requests (§7.1)
            (self.sim.subscribe if event == "subscribe" else self.sim.unsubscribe)(client, f"{trades}:{p}")
        # the 2026 spot ack echoes the payload and has no `error` key (its template)
        self._reply(client, "subscribe ack", req_id, event=event, payload=payload)

    def publications(self, inst, fills):
        topic = f"{self.prefix}.trades:{inst.symbol}"
        if self.futures:
            # One message per match; `size` is signed contracts: positive = taker buy (§8).
            now = fills[-1].ts_ns
            rows = [
                {
                    "id": f.num_id,
                    "size": self._int_size(inst, f),
                    "create_time": f.ts_ns // 10**9,
                    "create_time_ms": _ms(f.ts_ns),
                    "price": inst.price_text(f.price),
                    "contract": inst.symbol,
                }
                for f in fills
            ]
            exact = [r | {"size": self._signed_size(inst, f)} for r, f in zip(rows, fills, strict=True)]
            assert self.wire_size_decimal is not None
            frames = {
                "": self.wire.render(rows, time=now // 10**9, time_ms=_ms(now)),
                "size-decimal": self.wire_size_decimal.render(exact, time=now // 10**9, time_ms=_ms(now)),
            }
            return [Publication(topic, frames, [self.trade(inst, f) for f in fills], "trades")]
        # Spot: one message per taker order and price; `range` spans the market ids it covers and
        # `id_market` is the last of them (here `id` equals it, as in the 2026 capture) (§7.2).
        out = []
        for level in _levels(fills):
            first, last = level[0], level[-1]
            qty = inst.qty_text(sum(f.qty for f in level))
            ts = last.ts_ns
            frame = self.wire.render(
                time=ts // 10**9,
                time_ms=_ms(ts),
                id=last.num_id,
                id_market=last.num_id,
                create_time=ts // 10**9,
                create_time_ms=f"{_ms(ts)}.{ts % 1_000_000:06d}",
                side=last.side,
                currency_pair=inst.symbol,
                amount=qty,
                price=inst.price_text(last.price),
                range=f"{first.num_id}-{last.num_id}",
                stock=inst.base,
                money=inst.quote,
            )
            out.append(Publication(topic, {"": frame}, [self.trade(inst, last, qty=qty)], "trades"))
        return out

    def shutdown_notice(self, client):
        # Gate futures announces a service upgrade on `futures.system`; spot has no such notice (§12).
        if not self.futures:
            return None
        now = self.sim.now_ns()
        return self.control("futures.system", time=now // 10**9, time_ms=_ms(now))

    # -- futures sizes (§8)

    @staticmethod
    def _signed_size(inst: Instrument, f: Fill) -> str:
        """The exact signed contract count, as sent with `X-Gate-Size-Decimal: 1`."""
        return ("" if f.side == "buy" else "-") + inst.qty_text(f.qty)

    @staticmethod
    def _int_size(inst: Instrument, f: Fill) -> int:
        """What Gate sends without `X-Gate-Size-Decimal: 1`: an integer count of contracts,
        truncated toward zero on decimal-enabled contracts (1.7 -> 1, 0.25 -> 0) (§8)."""
        return f.qty // 10**inst.qty_places * (1 if f.side == "buy" else -1)

    def _size_decimal(self) -> bool:
        return self.request_headers.get("X-Gate-Size-Decimal") == "1"

    # -- REST (§7.3, §8)

    def _error(self, msg):
        return self.error_body(label="INVALID_PARAM_VALUE", message=msg)

    def rest_trades(self, q):
        key = "contract" if self.futures else "currency_pair"
        inst = self.instrument_or_none(q.get(key))
        if inst is None:
            label = "INVALID_CURRENCY_PAIR" if not self.futures else "CONTRACT_NOT_FOUND"
            raise BadRequest(self.error_body(label=label, message=f"unknown {key} {q.get(key)}"))
        limit = self.int_param(q, "limit", 100, 1, 1000, self._error)
        now_s = self.sim.now_ns() // 10**9
        to = self.int_param(q, "to", now_s, 0, 2**40, self._error)
        # Spot: "by default, queries the last 30 days".
        frm = self.int_param(q, "from", None if self.futures else to - 30 * 86_400, 0, 2**40, self._error)
        if self.futures:
            skip = self.int_param(q, "offset", 0, 0, 10**9, self._error)
        else:
            page = self.int_param(q, "page", 1, 1, 10**9, self._error)
            if limit * (page - 1) > self.max_page_offset:
                raise BadRequest(self._error(f"limit * (page - 1) must not exceed {self.max_page_offset}"))
            skip = limit * (page - 1)
        history = self.sim.history(inst.symbol)
        if not self.futures:
            # Spot keeps 30 days ("by default, queries the last 30 days", VENUES §7.3, §11 item 4);
            # what the real API answers for an older `from` is not documented: empty rows here.
            oldest = (now_s - 30 * 86_400) * 10**9
            history = history[bisect.bisect_left(history, oldest, key=lambda f: f.ts_ns) :]
        hi = bisect.bisect_left(history, (to + 1) * 10**9, key=lambda f: f.ts_ns)
        lo = 0 if frm is None else bisect.bisect_left(history, frm * 10**9, key=lambda f: f.ts_ns)
        hi = max(lo, hi - skip)
        rows = history[max(lo, hi - limit) : hi][::-1]  # newest first
        if self.futures:
            exact = self._size_decimal()
            size = self._signed_size if exact else self._int_size
            wire = self.wire_rest_size_decimal if exact else self.wire_rest
            assert wire is not None
            return 200, wire.fill(
                {
                    "id": f.num_id,
                    # Both seconds with three decimals, whatever create_time_ms's name says (§8, the template's source).
                    "create_time": _s3(f.ts_ns),
                    "create_time_ms": _s3(f.ts_ns),
                    "contract": inst.symbol,
                    "size": size(inst, f),
                    "price": inst.price_text(f.price),
                }
                for f in rows
            )
        # Public rows: per fill, with sequence_id = the WS id_market of that fill (§7.3).
        return 200, self.wire_rest.fill(
            {
                "id": f.trade_id,
                "create_time": f.ts_ns // 10**9,
                "create_time_ms": f"{_ms(f.ts_ns)}.{f.ts_ns % 1_000_000:06d}"[:-3],
                "currency_pair": inst.symbol,
                "side": f.side,
                "amount": inst.qty_text(f.qty),
                "price": inst.price_text(f.price),
                "sequence_id": f.trade_id,
            }
            for f in rows
        )

    def rest_pairs(self, q):
        return 200, [
            {
                "id": i.symbol,
                "base": i.base,
                "quote": i.quote,
                "fee": "0.2",
                "min_base_amount": i.lot,
                "min_quote_amount": "3",
                "amount_precision": i.qty_places,
                "precision": i.price_places,
                # before it opens: untradable, with the opening time (docs/VENUES.md §12)
                "trade_status": self.list_state(i, "tradable", "untradable"),
                "sell_start": (i.listed_at_ns or 0) // 10**9,
                "buy_start": (i.listed_at_ns or 0) // 10**9,
                "delisting_time": (i.delisted_at_ns or 0) // 10**9,
            }
            for i in self.on_list()
        ]

    def rest_currencies(self, q):
        # The shape of Gate's GET /api/v4/spot/currencies (wallets are not simulated: all disabled).
        coins = sorted({i.base for i in self.listed()} | {"USDT"})
        return 200, [
            {
                "currency": c,
                "name": c,
                "delisted": False,
                "withdraw_disabled": True,
                "withdraw_delayed": False,
                "deposit_disabled": True,
                "trade_disabled": False,
                "fixed_rate": "",
                "chain": c,
                "chains": [
                    {
                        "name": c,
                        "addr": "",
                        "withdraw_disabled": True,
                        "withdraw_delayed": False,
                        "deposit_disabled": True,
                    }
                ],
            }
            for c in coins
        ]

    def rest_contracts(self, q):
        return 200, [
            {
                "name": i.symbol,
                "type": "direct",
                "quanto_multiplier": i.contract_value,
                "order_price_round": i.tick,
                "order_size_min": 1,
                "order_size_max": 1000000,
                "enable_decimal": i.qty_places > 0,
                "in_delisting": i.delisted(self.sim.now_ns()),
                "status": self.list_state(i, "trading", "prelaunch"),
                "create_time": (i.listed_at_ns or 1_585_526_400_000_000_000) // 10**9,
                "delisted_time": (i.delisted_at_ns or 0) // 10**9,
            }
            for i in self.on_list()
        ]


# ---------------------------------------------------------------------------------------------
# Phemex spot and USDⓈ-M perpetual (§9)

PHEMEX_SCALE = 8  # spot prices (Ep) and the simulated base currencies' values (Ev) are x 10^8


class Phemex(Venue):
    ws_path = ""  # "wss://ws.phemex.com": further URI not allowed (§9.1)
    resolution_ns = 1
    strictly_increasing_ts = True
    batch_interval = 0.020  # "Incremental messages are published with 20ms interval" (§9.2)
    heartbeat = Heartbeat(client_ping_within=30, protocol_ping_is_heartbeat=True)
    buckets: ClassVar = {"ip": (5000, 300.0)}  # REST 5,000 / 5 min per IP (§9.1)
    snapshot_size = 200
    max_subscriptions = 20  # per connection (§9.1)
    max_connections = 5  # per client, spot and contract together: one gateway (§9.1)
    # "Contract which delisted has status with 'Delisted'" (PHX-DOCS _contract.md, `GET
    # /public/products`). Spot products come in the same answer with the same `status` field and
    # ccxt reads both as active only when `Listed`; that spot keeps its delisted ones too is
    # inferred, not documented. No halt state is documented.
    delisted_states: ClassVar = {"phemex-perp": "Delisted", "phemex-spot": "Delisted"}

    def __init__(self, venue_id, sim):
        super().__init__(venue_id, sim)
        # Open connections of the client on the gateway; the Simulator gives phemex-spot and
        # phemex-perp the same set (share_phemex_gateway), so the sixth across both is refused.
        self.gateway: set[VenueClient] = set()
        self.refused = 0
        self.turnover_served: dict[str, str] = {}
        self.perp = venue_id == "phemex-perp"
        self.method = "trade_p" if self.perp else "trade"
        self.rows_key = "trades_p" if self.perp else "trades"
        self.wire = template(venue_id, self.rows_key)
        self.wire_rest = template(venue_id, "REST trades")
        self.rate_limited_body = self.error_body("REST rate limited")
        self.sequence = 10**8  # the gateway's message sequence, shared by all symbols
        self.route("GET", "/public/products", self.rest_products, "ip")
        self.route("GET", "/public/cfg/v2/products", self.rest_products, "ip")
        self.route("GET", "/md/v2/trade" if self.perp else "/md/trade", self.rest_trades, "ip")
        if not self.perp:  # the docs name /md/trade; ccxt reads spot trades (live) from /v1/md/trade
            self.route("GET", "/v1/md/trade", self.rest_trades, "ip")
        # The v1 (coin-margined) contract list, which ccxt's load_markets reads beside the v2 one:
        # none are simulated, so it is empty.
        self.route("GET", "/v1/exchange/public/products", lambda q: (200, {"code": 0, "msg": "OK", "data": []}), "ip")
        self.route(
            "GET", "/md/v3/ticker/24hr/all" if self.perp else "/md/spot/ticker/24hr/all", self.rest_tickers, "ip"
        )

    def on_open(self, client):
        self.gateway.add(client)

    def refuse_connection(self):
        for c in [c for c in self.gateway if c.closed]:
            self.gateway.discard(c)
        if len(self.gateway) >= self.max_connections:
            # How Phemex refuses is not documented; a handshake refusal says it plainly.
            self.refused += 1
            return 429, self.error_body(
                "handshake refused", message=f"too many connections: {self.max_connections} per client"
            )
        return None

    def turnover(self, inst) -> int:
        """A fixed 24 h turnover in USDT per instrument (the simulator has no 24 h behind it):
        its weight, spread by a checksum of its symbol so that no two are equal."""
        return int(inst.weight * 10**9) + zlib.crc32(inst.symbol.encode()) % 10**6

    def rest_tickers(self, q):
        rows: list[dict[str, Any]] = []
        for i in self.listed():
            t = self.turnover(i)
            self.turnover_served[i.symbol] = str(t)
            if self.perp:
                rows.append({"symbol": i.symbol, "lastRp": i.price_text(i.start_price_units), "turnoverRv": str(t)})
            else:
                rows.append({"symbol": i.symbol, "lastEp": i.start_price_units, "turnoverEv": t * 10**PHEMEX_SCALE})
        return 200, {"error": None, "id": 0, "result": rows}

    def symbol_for(self, base):
        return f"{base}USDT" if self.perp else f"s{base}USDT"

    def instrument(self, asset):
        # Spot sends scaled integers; a parser inserts the point, so the text has all 8 decimals.
        pad = None if self.perp else PHEMEX_SCALE
        return make_instrument(self.venue_id, self.symbol_for(asset.base), asset, price_pad=pad, qty_pad=pad)

    def id_scheme(self, inst):
        return ContentIds()

    def ws_role(self, path, headers):
        return "public" if path in ("/", "/ws") else None

    def _fields(self, inst: Instrument, f: Fill) -> dict[str, Any]:
        """One trade row's values: perp prices and sizes as decimal text, spot as integers x 10^8."""
        if self.perp:
            return {
                "ts": f.ts_ns,
                "side": _side_cap(f.side),
                "price": inst.price_text(f.price),
                "qty": inst.qty_text(f.qty),
            }
        return {
            "ts": f.ts_ns,
            "side": _side_cap(f.side),
            "price": f.price * 10 ** (PHEMEX_SCALE - inst.price_places),
            "qty": f.qty * 10 ** (PHEMEX_SCALE - inst.qty_places),
        }

    def _next_sequence(self) -> int:
        self.sequence += 1 + self.sim.conn_rng.randrange(0, 40)  # order-book messages share it
        return self.sequence

    def _message(self, inst: Instrument, fills: list[Fill], kind: str) -> str:
        rows = [self._fields(inst, f) for f in fills]
        return self.wire.render(rows, sequence=self._next_sequence(), symbol=inst.symbol, type=kind)

    def _reply(self, client: VenueClient, name: str, req_id: Any, **fields: Any) -> None:
        client.send(self.control(name, id=req_id, **fields))

    def on_text(self, client, text):
        msg = loads(text)
        if not isinstance(msg, dict):
            return self._reply(client, "error", None, code=6001, message="invalid argument")
        method, params, req_id = msg.get("method"), msg.get("params"), msg.get("id")
        if method == "server.ping":
            client.heartbeat()
            return self._reply(client, "pong", req_id)
        if method == f"{self.method}.subscribe":
            # One symbol per request; a snapshot of the most recent trades follows the ack (§9.2).
            # An unknown symbol: error 6001 "invalid argument" with the request's id (a captured
            # refusal; docs/VENUES.md §12 "Subscribe failures").
            if not isinstance(params, list) or len(params) != 1 or self.instrument_or_none(params[0]) is None:
                return self._reply(client, "error", req_id, code=6001, message="invalid argument")
            topic = params[0]
            if topic not in client.topics and len(client.topics) >= self.max_subscriptions:
                return self._reply(client, "error", req_id, code=6001, message="too many subscriptions")
            self.sim.subscribe(client, topic)
            self._reply(client, "ack", req_id)
            inst = self.sim.instruments[topic]
            return client.send(self._message(inst, self._snapshot(topic), "snapshot"))
        if method == f"{self.method}.unsubscribe":
            for topic in params or list(client.topics):
                self.sim.unsubscribe(client, topic)
            return self._reply(client, "ack", req_id)
        self._reply(client, "error", req_id, code=6001, message="invalid argument")

    def _snapshot(self, symbol: str) -> list[Fill]:
        return trailing(self.sim.history(symbol), self.snapshot_size)[::-1]  # newest first

    def publications(self, inst, fills):
        return [
            Publication(
                inst.symbol,
                {"": self._message(inst, fills, "incremental")},
                [self.trade(inst, f) for f in fills],
                "trades",
            )
        ]

    # -- REST (§9.3)

    def rest_trades(self, q):
        inst = self.instrument_or_none(q.get("symbol"))
        if inst is None:
            return 200, self.error_body(code=6001, message="invalid argument")
        rows = [self._fields(inst, f) for f in self._snapshot(inst.symbol)]
        return 200, self.wire_rest.fill(rows, sequence=self.sequence, symbol=inst.symbol)

    def rest_products(self, q):
        products, perps = [], []
        for i in self.on_list():
            status = self.list_state(i, "Listed", "Listed")
            if self.perp:
                perps.append(
                    {
                        "symbol": i.symbol,
                        "type": "PerpetualV2",
                        "baseCurrency": i.base,
                        "quoteCurrency": i.quote,
                        "settleCurrency": "USDT",
                        "status": status,
                        "tickSize": i.tick,
                        "qtyStepSize": i.lot,
                        "pricePrecision": i.price_places,
                        "listTime": _ms(i.listed_at_ns or 1_585_526_400_000_000_000),
                    }
                )
            else:
                products.append(
                    {
                        "symbol": i.symbol,
                        "type": "Spot",
                        "displaySymbol": f"{i.base} / {i.quote}",
                        "baseCurrency": i.base,
                        "quoteCurrency": i.quote,
                        "priceScale": PHEMEX_SCALE,
                        "ratioScale": PHEMEX_SCALE,
                        "status": status,
                        "tickSize": i.tick,
                        "baseTickSize": i.lot,
                        "listTime": _ms(i.listed_at_ns or 1_585_526_400_000_000_000),
                    }
                )
        currencies = [
            {"currency": c, "valueScale": PHEMEX_SCALE, "status": "Listed"}
            for c in sorted({i.base for i in self.listed()} | {"USDT"})
        ]
        return 200, {
            "code": 0,
            "msg": "OK",
            "data": {"currencies": currencies, "products": products, "perpProductsV2": perps},
        }


FAMILIES: dict[str, type[Venue]] = {
    "binance-spot": Binance,
    "binance-usdm": BinanceUsdm,
    "bybit-spot": Bybit,
    "bybit-linear": Bybit,
    "okx-spot": Okx,
    "okx-swap": Okx,
    "kucoin-spot": Kucoin,
    "kucoin-futures": Kucoin,
    "gate-spot": Gate,
    "gate-futures": Gate,
    "phemex-spot": Phemex,
    "phemex-perp": Phemex,
}
VENUE_IDS = tuple(FAMILIES)
