"""Venue trade-frame parsers in plain Python (stdlib only).

The same rules, and the same output text, as the Rust parsers in ``rust/core/src/parse/``: a
frame parses to the same trades (same price/qty/id text, side, ns time, flags, id range) or the
same control kind and detail, or fails in both. The rules are written out in the Rust module docs;
in short:

* price and quantity are the venue's text exactly (``"83680.00"`` stays ``"83680.00"``); a JSON
  number is taken by its literal text (never through ``float``); Phemex spot scaled integers
  become decimal text by inserting the point. Every price/qty is a plain decimal
  ``-?[0-9]+(\\.[0-9]+)?`` and a quantity is never negative.
* times are exact integers of nanoseconds, converted from the text (``"1606292218213.4578"`` ms
  -> ``1606292218213457800``).
* ``side`` is the taker's side, ``"buy"`` or ``"sell"``.
* in a frame of several trades (Bybit, OKX, Gate, Phemex arrays) a trade that does not parse is
  left out and its reason kept in ``ParseResult.rejected``; the others stand. A frame whose
  trades all fail raises, with every reason.
* a frame yields trades (at least one), or a control ``(kind, detail)`` where kind is one of
  ``subscribe_ack``, ``pong``, ``welcome``, ``shutdown_notice``, ``error``, ``other`` and detail is
  the frame text (whitespace-trimmed, at most 1024 UTF-8 bytes; empty for pong/welcome), or
  raises :class:`FrameError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import accumulate

__all__ = [
    "ADL",
    "AGGREGATED",
    "BACKFILL",
    "BLOCK_TRADE",
    "INSURANCE_FUND",
    "INTERNAL",
    "NON_TRADE",
    "RPI",
    "SNAPSHOT",
    "UNKNOWN_TYPE",
    "VENUES",
    "FrameError",
    "ParseContext",
    "ParseResult",
    "parse",
]

# Trade flags (docs/FORMAT.md).
RPI = 1
INSURANCE_FUND = 2
ADL = 4
INTERNAL = 8
BLOCK_TRADE = 16
NON_TRADE = 32
BACKFILL = 64
SNAPSHOT = 128
AGGREGATED = 256
UNKNOWN_TYPE = 512

VENUES = (
    "binance-spot",
    "binance-usdm",
    "bybit-spot",
    "bybit-linear",
    "okx-spot",
    "okx-swap",
    "kucoin-spot",
    "kucoin-futures",
    "gate-spot",
    "gate-futures",
    "phemex-spot",
    "phemex-perp",
)

DETAIL_MAX = 1024
MAX_DEPTH = 128
MAX_FRAME = 64 << 20
MAX_TEXT = 255
MAX_SCALE = 30
PHEMEX_SPOT_PRICE_SCALE = 8
PHEMEX_SPOT_DEFAULT_QTY_SCALE = 8

_U64_MAX = (1 << 64) - 1
_I64_MAX = (1 << 63) - 1
_WS = " \t\n\r"
_MISSING = object()


from ..errors import FrameError  # one exception for both paths  # noqa: E402


@dataclass(slots=True)
class ParseResult:
    trades: list[dict] = field(default_factory=list)
    control: tuple[str, str] | None = None
    rejected: list[str] = field(default_factory=list)  # why each left-out trade did not parse


class _Many(list):
    """The trades of a multi-trade frame, with the reasons of those left out."""

    __slots__ = ("rejected",)

    def __init__(self) -> None:
        super().__init__()
        self.rejected: list[str] = []

    def take(self, parse_one, *args) -> None:
        try:
            self.append(parse_one(*args))
        except FrameError as e:
            self.rejected.append(str(e))

    def result(self):
        """The trades; `_OTHER` for an empty array."""
        return self if self or self.rejected else _OTHER


class ParseContext:
    """Per-symbol facts some frames need: Phemex spot price/qty scales (default 8 and 8)."""

    __slots__ = ("_phemex_spot",)

    def __init__(self) -> None:
        self._phemex_spot: dict[str, tuple[int, int]] = {}

    def set_phemex_spot_scales(self, symbol: str, price_scale: int, qty_scale: int) -> None:
        for name, v in (("price_scale", price_scale), ("qty_scale", qty_scale)):
            if not isinstance(v, int) or not 0 <= v <= 255:
                raise ValueError(f"{name} must be an int in 0..=255, got {v!r}")
        self._phemex_spot[symbol] = (price_scale, qty_scale)

    def phemex_spot_scales(self, symbol: str) -> tuple[int, int]:
        return self._phemex_spot.get(symbol, (PHEMEX_SPOT_PRICE_SCALE, PHEMEX_SPOT_DEFAULT_QTY_SCALE))


_DEFAULT_CTX = ParseContext()


# --- JSON ------------------------------------------------------------------------------------


class _Num(str):
    """The literal text of a JSON number."""

    __slots__ = ()


def _bad_constant(name: str):
    raise FrameError(f"invalid JSON value {name}")


_decode = json.JSONDecoder(parse_float=_Num, parse_int=_Num, parse_constant=_bad_constant).decode

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NON_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _too_deep(text: str) -> bool:
    # Cheap filter first: only a frame with more than MAX_DEPTH opening brackets can be too deep.
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    brackets = _NON_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH


def _load(text: str):
    if _too_deep(text):
        raise FrameError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return _decode(text)
    except json.JSONDecodeError as e:
        raise FrameError(f"invalid JSON: {e}") from None
    except RecursionError:
        raise FrameError("JSON nested too deeply") from None


def _kind(v) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "a boolean"
    t = type(v)
    if t is _Num:
        return "a number"
    if t is str:
        return "a string"
    if t is dict:
        return "an object"
    if t is list:
        return "an array"
    return "missing"


def _show(s: str) -> str:
    return repr(s[:40]) + ("..." if len(s) > 40 else "")


def _f(name: str, idx: int | None) -> str:
    return f'field "{name}"' if idx is None else f'trade {idx} field "{name}"'


# --- field readers (the same rules as rust/core/src/parse/mod.rs) ----------------------------

_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_UINT = re.compile(r"[0-9]+")
_TIME = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


def _need(obj: dict, key: str, idx: int | None = None):
    try:
        return obj[key]
    except KeyError:
        raise FrameError(f"{_f(key, idx)} is missing") from None


def _stored(s: str, name: str, idx: int | None) -> str:
    """Checks a text that will be stored: valid UTF-8 (no lone surrogate), at most 255 bytes."""
    if s.isascii():
        n = len(s)
    else:
        try:
            n = len(s.encode("utf-8"))
        except UnicodeEncodeError:
            raise FrameError(
                f"{_f(name, idx)} is a string with a bad escape: lone UTF-16 surrogate in \\u escape"
            ) from None
    if n > MAX_TEXT:
        raise FrameError(f"{_f(name, idx)} {_show(s)} is {n} bytes long; at most {MAX_TEXT} are stored")
    return s


def _text(v, name: str, idx: int | None = None) -> str:
    if type(v) is not str:
        raise FrameError(f"{_f(name, idx)} is {_kind(v)}, not a string")
    if not v:
        raise FrameError(f"{_f(name, idx)} is an empty string")
    return _stored(v, name, idx)


def _decimal(v, name: str, idx: int | None, allow_negative: bool) -> str:
    t = type(v)
    if t is not str and t is not _Num:
        raise FrameError(f"{_f(name, idx)} is {_kind(v)}, not a decimal string or number")
    if not _DECIMAL.fullmatch(v):
        raise FrameError(
            f"{_f(name, idx)} {_show(v)} is not a plain decimal (digits with an optional point, no exponent)"
        )
    if not allow_negative and v[0] == "-":
        raise FrameError(f"{_f(name, idx)} {_show(v)} is negative")
    if len(v) > MAX_TEXT:
        raise FrameError(f"{_f(name, idx)} {_show(v)} is {len(v)} bytes long; at most {MAX_TEXT} are stored")
    return v if t is str else str(v)


def _canonical_u64(s: str) -> int | None:
    if 0 < len(s) <= 20 and s.isascii() and s.isdigit() and (len(s) == 1 or s[0] != "0"):
        n = int(s)
        if n <= _U64_MAX:
            return n
    return None


def _id(v, name: str, idx: int | None = None) -> tuple[str, int | None]:
    t = type(v)
    if t is _Num:
        if not _UINT.fullmatch(v):
            raise FrameError(f"{_f(name, idx)} {_show(v)} is not a non-negative integer")
        v = str(v)
    elif t is str:
        if not v:
            raise FrameError(f"{_f(name, idx)} is an empty string")
    else:
        raise FrameError(f"{_f(name, idx)} is {_kind(v)}, not a string or integer id")
    s = _stored(v, name, idx)
    return s, _canonical_u64(s)


def _seq_id(v, name: str, idx: int | None = None) -> tuple[str, int]:
    s, n = _id(v, name, idx)
    if n is None:
        raise FrameError(
            f"{_f(name, idx)} {_show(s)} is not a canonical unsigned integer (the venue's ids are consecutive integers)"
        )
    return s, n


def _uint(v, name: str, idx: int | None = None) -> int:
    t = type(v)
    if t is not str and t is not _Num:
        raise FrameError(f"{_f(name, idx)} is {_kind(v)}, not an unsigned integer")
    if _UINT.fullmatch(v):
        digits = v.lstrip("0")
        if len(digits) <= 20:
            n = int(digits or "0")
            if n <= _U64_MAX:
                return n
    raise FrameError(f"{_f(name, idx)} {_show(v)} is not an unsigned integer that fits 64 bits")


def _time_ns(v, name: str, idx: int | None, unit_digits: int) -> int:
    """A non-negative time in units of 10**unit_digits ns (0 ns, 6 ms, 9 s), exact."""
    t = type(v)
    if t is not str and t is not _Num:
        raise FrameError(f"{_f(name, idx)} is {_kind(v)}, not a timestamp number or string")
    if len(v) <= 18 and v.isascii() and v.isdigit():  # the common case: a plain integer that fits
        ns = int(v) * 10**unit_digits
        if ns <= _I64_MAX:
            return ns
    m = _TIME.fullmatch(v)
    if m is not None:
        whole, frac = m.groups()
        whole = whole.lstrip("0")
        if len(whole) <= 19:
            ns = int(whole or "0") * 10**unit_digits
            if unit_digits:
                ns += int((frac or "")[:unit_digits].ljust(unit_digits, "0"))
            if ns <= _I64_MAX:
                return ns
    raise FrameError(
        f"{_f(name, idx)} {_show(v)} is not a non-negative timestamp (digits with an optional fraction) "
        "that fits i64 nanoseconds"
    )


def _flag(obj: dict, key: str, idx: int | None = None) -> bool:
    v = obj.get(key)
    if v is True:
        return True
    if v is False or v is None:
        return False
    raise FrameError(f"{_f(key, idx)} is {_kind(v)}, not a boolean")


_SIDES = {"buy": "buy", "Buy": "buy", "BUY": "buy", "sell": "sell", "Sell": "sell", "SELL": "sell"}


def _side(v, name: str, idx: int | None = None) -> str:
    if type(v) is not str:
        raise FrameError(f"{_f(name, idx)} is {_kind(v)}, not a string")
    s = _SIDES.get(v)
    if s is None:
        low = v.lower() if v.isascii() else ""
        if low not in ("buy", "sell"):
            raise FrameError(f'{_f(name, idx)} {_show(v)} is not "buy" or "sell"')
        s = low
    return s


def _str(v, name: str, idx: int | None = None) -> str:
    if type(v) is not str:
        raise FrameError(f"{_f(name, idx)} is {_kind(v)}, not a string")
    return v


def _root(d) -> dict:
    if type(d) is not dict:
        raise FrameError(f"frame is {_kind(d)}, not a JSON object")
    return d


def _detail(text: str) -> str:
    t = text.strip(_WS)
    if len(t) * 4 > DETAIL_MAX:
        b = t.encode("utf-8")
        if len(b) > DETAIL_MAX:
            t = b[:DETAIL_MAX].decode("utf-8", "ignore")
    return t


def _trade(venue, symbol, trade_id, price, qty, side, ts_ns, flags, seq_first, seq_last) -> dict:
    return {
        "venue": venue,
        "symbol": symbol,
        "trade_id": trade_id,
        "price": price,
        "qty": qty,
        "side": side,
        "ts_ns": ts_ns,
        "flags": flags,
        "seq_first": seq_first,
        "seq_last": seq_last,
    }


# --- venues ----------------------------------------------------------------------------------
# Each returns a list of trades, or a control (kind, detail-or-None); detail None = frame text.

_ACK = ("subscribe_ack", None)
_ERROR = ("error", None)
_OTHER = ("other", None)
_SHUTDOWN = ("shutdown_notice", None)
_PONG = ("pong", "")
_WELCOME = ("welcome", "")

_BINANCE_X = {"MARKET": 0, "RPI": RPI, "INSURANCE_FUND": INSURANCE_FUND, "ADL": ADL, "NA": NON_TRADE}


def _binance(venue: str, d, ctx):
    d = _root(d)
    wrapped = "data" in d
    if wrapped:
        p = d["data"]
        if type(p) is not dict:
            raise FrameError(f'field "data" is {_kind(p)}, not an object')
    else:
        p = d
    if "e" in p:
        e = _str(p["e"], "e")
        if e == "trade":
            return [_binance_trade(venue, p, False)]
        if e == "aggTrade":
            return [_binance_trade(venue, p, True)]
        if e == "serverShutdown":
            return _SHUTDOWN
        return _OTHER
    if wrapped:
        raise FrameError('combined-stream "data" has no event type "e"')
    if p.get("error") is not None or "code" in p:
        return _ERROR
    if "result" in p:
        return _ACK if p["result"] is None else _OTHER
    if "method" in p:
        return _OTHER
    raise FrameError('not a Binance trade, ack, error or event frame (no "e", "result", "code" or "method")')


def _binance_trade(venue: str, p: dict, agg: bool) -> dict:
    flags = 0
    if "X" in p:
        x = _str(p["X"], "X")
        # A value Binance added since: still a trade and an id of the sequence (VENUES §12).
        flags = _BINANCE_X.get(x, UNKNOWN_TYPE)
    m = _need(p, "m")
    if m is True:
        side = "sell"
    elif m is False:
        side = "buy"
    else:
        raise FrameError(f'field "m" is {_kind(m)}, not a boolean')
    ts = _time_ns(_need(p, "T"), "T", None, 6)
    symbol = _text(_need(p, "s"), "s")
    seq = None
    if not agg:
        tid, seq = _seq_id(_need(p, "t"), "t")
    elif "a" in p:
        tid, _ = _id(p["a"], "a")
    else:
        if "f" not in p:
            raise FrameError('field "a" is missing')
        first = _uint(p["f"], "f")
        last = _uint(_need(p, "l"), "l")
        tid = f"{first}-{last}"
    price = _decimal(_need(p, "p"), "p", None, True)
    qty = _decimal(_need(p, "q"), "q", None, False)
    return _trade(venue, symbol, tid, price, qty, side, ts, flags, seq, seq)


def _bybit(venue: str, d, ctx):
    d = _root(d)
    if "topic" in d:
        topic = _str(d["topic"], "topic")
        if not topic.startswith("publicTrade."):
            return _OTHER
        data = _need(d, "data")
        if type(data) is not list:
            raise FrameError(f'field "data" is {_kind(data)}, not an array of trades')
        out = _Many()
        for i, el in enumerate(data):
            out.take(_bybit_trade, venue, el, i)
        return out.result()
    if "success" in d or "op" in d:
        ok = d.get("success", _MISSING)
        if ok is not _MISSING and ok is not True and ok is not False:
            raise FrameError(f'field "success" is {_kind(ok)}, not a boolean')
        op = _str(d["op"], "op") if "op" in d else None
        ret_msg = d.get("ret_msg")
        if ok is False:
            return _ERROR
        if (type(ret_msg) is str and ret_msg == "pong") or op in ("ping", "pong"):
            return _PONG
        if ok is True and op == "subscribe":
            return _ACK
        return _OTHER
    raise FrameError('not a Bybit trade push or op response (no "topic", "op" or "success")')


def _bybit_trade(venue: str, o, i: int) -> dict:
    if type(o) is not dict:
        raise FrameError(f"trade {i} is {_kind(o)}, not an object")
    flags = 0
    if _flag(o, "BT", i):
        flags |= BLOCK_TRADE
    if _flag(o, "RPI", i):
        flags |= RPI
    side = _side(_need(o, "S", i), "S", i)
    ts = _time_ns(_need(o, "T", i), "T", i, 6)
    symbol = _text(_need(o, "s", i), "s", i)
    tid, _ = _id(_need(o, "i", i), "i", i)
    price = _decimal(_need(o, "p", i), "p", i, True)
    qty = _decimal(_need(o, "v", i), "v", i, False)
    return _trade(venue, symbol, tid, price, qty, side, ts, flags, None, None)


def _okx(venue: str, d, ctx):
    d = _root(d)
    if "event" in d:
        ev = _str(d["event"], "event")
        if ev == "subscribe":
            return _ACK
        if ev == "error":
            return _ERROR
        if ev == "notice":
            return _SHUTDOWN
        return _OTHER
    if "data" in d:
        arg = _need(d, "arg")
        if type(arg) is not dict:
            raise FrameError(f'field "arg" is {_kind(arg)}, not an object')
        if "channel" not in arg:
            raise FrameError('field "arg.channel" is missing')
        channel = _str(arg["channel"], "arg.channel")
        if channel != "trades" and channel != "trades-all":
            return _OTHER
        data = d["data"]
        if type(data) is not list:
            raise FrameError(f'field "data" is {_kind(data)}, not an array of trades')
        arg_inst = arg.get("instId", _MISSING)
        out = _Many()
        for i, el in enumerate(data):
            out.take(_okx_trade, venue, el, i, arg_inst)
        return out.result()
    if "op" in d:
        return _OTHER
    raise FrameError('not an OKX trade push or event (no "event", "data" or "op")')


def _okx_trade(venue: str, o, i: int, arg_inst) -> dict:
    if type(o) is not dict:
        raise FrameError(f"trade {i} is {_kind(o)}, not an object")
    side = _side(_need(o, "side", i), "side", i)
    ts = _time_ns(_need(o, "ts", i), "ts", i, 6)
    count = _uint(o["count"], "count", i) if "count" in o else 1
    if count == 0:
        raise FrameError(f"{_f('count', i)} is 0; an aggregated trade covers at least one id")
    inst = o.get("instId", arg_inst)
    if inst is _MISSING:
        raise FrameError(f"{_f('instId', i)} is missing (and so is arg.instId)")
    symbol = _text(inst, "instId", i)
    tid, last = _seq_id(_need(o, "tradeId", i), "tradeId", i)
    first = last - (count - 1)
    if first < 0:
        raise FrameError(f"{_f('count', i)} {count} is larger than tradeId {last}")
    price = _decimal(_need(o, "px", i), "px", i, True)
    qty = _decimal(_need(o, "sz", i), "sz", i, False)
    return _trade(venue, symbol, tid, price, qty, side, ts, 0, first, last)


def _kucoin(venue: str, d, ctx):
    d = _root(d)
    ty = _str(_need(d, "type"), "type")
    if ty == "message":
        topic = _str(_need(d, "topic"), "topic")
        if topic.startswith("/market/match:") or topic.startswith("/contractMarket/execution:"):
            data = _need(d, "data")
            if type(data) is not dict:
                raise FrameError(f'field "data" is {_kind(data)}, not an object')
            return [_kucoin_trade(venue, data)]
        return _OTHER
    if ty == "welcome":
        return _WELCOME
    if ty == "ack":
        return _ACK
    if ty == "pong":
        return _PONG
    if ty == "error":
        return _ERROR
    return _OTHER


def _kucoin_trade(venue: str, o: dict) -> dict:
    side = _side(_need(o, "side"), "side")
    if "ts" in o:
        ts = _time_ns(o["ts"], "ts", None, 0)
    elif "time" in o:
        ts = _time_ns(o["time"], "time", None, 0)
    else:
        raise FrameError('field "ts" (futures) or "time" (spot) is missing')
    symbol = _text(_need(o, "symbol"), "symbol")
    # `sequence` keys the trade where present (REST backfill rows carry only it), else `tradeId`.
    tid, _ = _id(o["sequence"], "sequence") if "sequence" in o else _id(_need(o, "tradeId"), "tradeId")
    price = _decimal(_need(o, "price"), "price", None, True)
    qty = _decimal(_need(o, "size"), "size", None, False)
    return _trade(venue, symbol, tid, price, qty, side, ts, 0, None, None)


def _gate(venue: str, d, ctx):
    d = _root(d)
    futures = venue == "gate-futures"
    channel = _str(_need(d, "channel"), "channel")
    if channel.endswith(".pong"):
        return _PONG
    if d.get("error") is not None:
        return _ERROR
    event = _str(_need(d, "event"), "event")
    if event == "subscribe":
        r = d.get("result")
        if r is None:
            return _OTHER
        status = r.get("status") if type(r) is dict else None
        return _ACK if type(status) is str and status == "success" else _ERROR
    if event == "update" or event == "all":
        if futures and channel == "futures.system":  # a service upgrade will close the connection (VENUES §12)
            r = d.get("result")
            kind = r.get("type") if type(r) is dict else None
            return _SHUTDOWN if type(kind) is str and kind == "upgrade" else _OTHER
        if channel != ("futures.trades" if futures else "spot.trades"):
            return _OTHER
        r = _need(d, "result")
        one = _gate_futures_trade if futures else _gate_spot_trade
        if type(r) is dict:
            return [one(venue, r, 0)]
        if type(r) is list:
            out = _Many()
            for i, el in enumerate(r):
                out.take(_gate_element, one, venue, el, i)
            return out.result()
        raise FrameError(f'field "result" is {_kind(r)}, not a trade object or array')
    return _OTHER


def _gate_element(one, venue: str, el, i: int) -> dict:
    if type(el) is not dict:
        raise FrameError(f"trade {i} is {_kind(el)}, not an object")
    return one(venue, el, i)


def _gate_time(o: dict, i: int) -> int:
    ms = o.get("create_time_ms")
    if ms is not None:
        return _time_ns(ms, "create_time_ms", i, 6)
    if "create_time" in o:
        return _time_ns(o["create_time"], "create_time", i, 9)
    raise FrameError(f'{_f("create_time_ms", i)} and "create_time" are missing')


def _gate_range(v, i: int) -> tuple[int, int]:
    text = _str(v, "range", i)
    a, dash, b = text.partition("-")
    if dash and _UINT.fullmatch(a) and _UINT.fullmatch(b):
        a_digits, b_digits = a.lstrip("0"), b.lstrip("0")
        if len(a_digits) <= 20 and len(b_digits) <= 20:
            first, last = int(a_digits or "0"), int(b_digits or "0")
            if first <= last <= _U64_MAX:
                return first, last
    raise FrameError(f'{_f("range", i)} {_show(text)} is not "start-end" with start <= end')


def _gate_spot_trade(venue: str, o: dict, i: int) -> dict:
    side = _side(_need(o, "side", i), "side", i)
    ts = _gate_time(o, i)
    rng = o.get("range")
    rng = None if rng is None else _gate_range(rng, i)
    symbol = _text(_need(o, "currency_pair", i), "currency_pair", i)
    id_market = o.get("id_market")
    if id_market is not None:
        tid, n = _seq_id(id_market, "id_market", i)
        if rng is None:
            rng = (n, n)
    else:
        tid, _ = _id(_need(o, "id", i), "id", i)
    price = _decimal(_need(o, "price", i), "price", i, True)
    qty = _decimal(_need(o, "amount", i), "amount", i, False)
    first, last = rng if rng is not None else (None, None)
    return _trade(venue, symbol, tid, price, qty, side, ts, 0, first, last)


def _gate_futures_trade(venue: str, o: dict, i: int) -> dict:
    flags = INTERNAL if _flag(o, "is_internal", i) else 0
    ts = _gate_time(o, i)
    symbol = _text(_need(o, "contract", i), "contract", i)
    tid, n = _seq_id(_need(o, "id", i), "id", i)
    price = _decimal(_need(o, "price", i), "price", i, True)
    size = _decimal(_need(o, "size", i), "size", i, True)
    if not size.strip("-0."):
        raise FrameError(f"{_f('size', i)} {_show(size)} is zero: no taker side")
    if size[0] == "-":
        qty, side = size[1:], "sell"
    else:
        qty, side = size, "buy"
    return _trade(venue, symbol, tid, price, qty, side, ts, flags, n, n)


def _phemex(venue: str, d, ctx: ParseContext):
    d = _root(d)
    spot = venue == "phemex-spot"
    if "trades" in d or "trades_p" in d:
        if spot and "trades" in d:
            rows, scaled = d["trades"], True
        elif "trades_p" in d:
            rows, scaled = d["trades_p"], False
        else:
            raise FrameError(
                'a "trades" frame (COIN-M contract, scaled integers) is not a phemex-perp frame; '
                'USDⓈ-M perpetuals send "trades_p" (trade_p.subscribe)'
            )
        return _phemex_rows(venue, d, rows, scaled, ctx).result()
    if "error" in d or "result" in d:
        if d.get("error") is not None:
            return _ERROR
        r = d.get("result")
        if type(r) is str and r == "pong":
            return _PONG
        if type(r) is dict:
            status = r.get("status")
            if type(status) is str and status == "success":
                return _ACK
        return _OTHER
    if "method" in d:
        return _OTHER
    raise FrameError('not a Phemex trade push or response (no "trades", "trades_p", "result", "error" or "method")')


def _scaled(v, scale: int, name: str, idx: int) -> str:
    if type(v) is not _Num:
        raise FrameError(f"{_f(name, idx)} is {_kind(v)}, not a scaled integer")
    if not _UINT.fullmatch(v):
        raise FrameError(f"{_f(name, idx)} {_show(v)} is not a non-negative scaled integer")
    if scale == 0:
        s = str(v)
    elif len(v) > scale:
        s = f"{v[:-scale]}.{v[-scale:]}"
    else:
        s = "0." + "0" * (scale - len(v)) + v
    if len(s) > MAX_TEXT:
        raise FrameError(f"{_f(name, idx)} {_show(s)} is {len(s)} bytes long; at most {MAX_TEXT} are stored")
    return s


def _phemex_rows(venue: str, d: dict, rows, scaled: bool, ctx: ParseContext) -> _Many:
    rows_name = "trades" if scaled else "trades_p"
    if type(rows) is not list:
        raise FrameError(f'field "{rows_name}" is {_kind(rows)}, not an array of rows')
    flags = 0
    if "type" in d:
        ty = _str(d["type"], "type")
        if ty == "snapshot":
            flags = SNAPSHOT
        elif ty != "incremental":
            raise FrameError(f'field "type" {_show(ty)} is not "snapshot" or "incremental"')
    symbol = _text(_need(d, "symbol"), "symbol")
    price_scale = qty_scale = 0
    if scaled:
        if not symbol.startswith("s"):
            raise FrameError(
                f"symbol {_show(symbol)} is not a Phemex spot symbol (they start with 's'); "
                "COIN-M contract frames are not supported"
            )
        price_scale, qty_scale = ctx.phemex_spot_scales(symbol)
        if price_scale > MAX_SCALE or qty_scale > MAX_SCALE:
            raise FrameError(f"configured scales ({price_scale}, {qty_scale}) of {symbol} are larger than {MAX_SCALE}")
    out = _Many()
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        out.take(_phemex_row, venue, symbol, row, i, rows_name, scaled, price_scale, qty_scale, flags, seen)
    return out


def _phemex_row(venue, symbol, row, i, rows_name, scaled, price_scale, qty_scale, flags, seen) -> dict:
    if type(row) is not list:
        raise FrameError(f'row {i} of "{rows_name}" is {_kind(row)}, not an array')
    if len(row) < 4:
        raise FrameError(f'row {i} of "{rows_name}" has fewer than 4 elements [ts, side, price, qty]')
    ts = _time_ns(row[0], "timestamp", i, 0)
    side = _side(row[1], "side", i)
    if scaled:
        price = _scaled(row[2], price_scale, "priceEp", i)
        qty = _scaled(row[3], qty_scale, "qty", i)
    else:
        price = _decimal(row[2], "price", i, True)
        qty = _decimal(row[3], "qty", i, False)
    # No trade id exists: the content key, with #k for the k-th identical row in the frame.
    tid = f"{ts}:{side[0]}:{price}:{qty}"
    base = tid
    k = seen.get(base, 0) + 1
    if k > 1:
        tid = f"{tid}#{k}"
    if len(tid) > MAX_TEXT:
        raise FrameError(f"{_f('id', i)} {_show(tid)} is {len(tid)} bytes long; at most {MAX_TEXT} are stored")
    seen[base] = k  # only rows taken count as the same content (as in Rust's push_row)
    return _trade(venue, symbol, tid, price, qty, side, ts, flags, None, None)


_PARSERS = {
    "binance-spot": _binance,
    "binance-usdm": _binance,
    "bybit-spot": _bybit,
    "bybit-linear": _bybit,
    "okx-spot": _okx,
    "okx-swap": _okx,
    "kucoin-spot": _kucoin,
    "kucoin-futures": _kucoin,
    "gate-spot": _gate,
    "gate-futures": _gate,
    "phemex-spot": _phemex,
    "phemex-perp": _phemex,
}


def parse(venue: str, frame: bytes | str, ctx: ParseContext | None = None) -> ParseResult:
    """Parses one WebSocket text frame of ``venue``.

    Returns the frame's trades or its control message; raises :class:`FrameError` when the frame
    cannot be parsed (and ``ValueError`` for an unknown venue id).
    """
    parser = _PARSERS.get(venue)
    if parser is None:
        raise ValueError(f"unknown venue {venue!r}; the venues are: {', '.join(VENUES)}")
    try:
        if isinstance(frame, str):
            text = frame
            if len(text) > MAX_FRAME // 4 and len(text.encode("utf-8")) > MAX_FRAME:
                raise FrameError(f"frame is larger than the {MAX_FRAME} bytes accepted")
            if not text.isascii():
                text.encode("utf-8")
        else:
            if len(frame) > MAX_FRAME:
                raise FrameError(f"frame of {len(frame)} bytes is larger than the {MAX_FRAME} accepted")
            text = bytes(frame).decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError) as e:  # what decode() and encode() raise: both have .start
        raise FrameError(f"{venue}: frame is not valid UTF-8 (bad byte at offset {e.start})") from None
    except FrameError as e:
        raise FrameError(f"{venue}: {e}") from None
    try:
        if venue.startswith("okx-") and text.strip(_WS) == "pong":
            return ParseResult([], _PONG)
        if not text.strip(_WS):
            raise FrameError("frame is empty (no JSON value)")
        got = parser(venue, _load(text), ctx if ctx is not None else _DEFAULT_CTX)
    except FrameError as e:
        raise FrameError(f"{venue}: {e}") from None
    if isinstance(got, list):
        rejected = getattr(got, "rejected", [])
        if rejected and not got:  # every trade failed: the frame is refused, with every reason
            raise FrameError(f"{venue}: " + "; ".join(rejected))
        return ParseResult(list(got), None, list(rejected))
    kind, detail = got
    return ParseResult([], (kind, _detail(text) if detail is None else detail))
