"""Record payloads of the segment log in plain Python: trades, markers and quarantined raw frames.

The byte layout is docs/FORMAT.md's, shared with `rust/core/src/record.rs` (this module mirrors
it): the codes, the fixed parts, decoding with the Rust reader's validity rules, and encoding with
the Rust writer's validation. Every multi-byte integer is little-endian. Depends on nothing else
of the log.
"""

from __future__ import annotations

import json
import operator
import re
import struct
from decimal import Decimal
from typing import NamedTuple

import crc32c

FRAME_HEADER = 8
MAX_PAYLOAD = 16 << 20

KIND_TRADE = 1
KIND_MARKER = 2
KIND_QUARANTINE = 3
TRADE_FIXED = 33
MARKER_FIXED = 32
QUARANTINE_FIXED = 16

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1
FLAG_NON_TRADE = 32
FLAGS_ALL = 0x3FF
TEXT_MAX = 255
DETAIL_MAX = 0xFFFF
# A quarantined frame is cut so that its record, with the longest reason, still fits one frame.
QUARANTINE_RAW_MAX = MAX_PAYLOAD - QUARANTINE_FIXED - DETAIL_MAX

# Venue code = position + 1; codes are part of the format: never renumber, only append.
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
MARKER_KINDS = (
    "connection_up",
    "connection_down",
    "gap_found",
    "gap_filled",
    "gap_unfillable",
    "subscription_set",
    "recorder_start",
    "recorder_stop",
)
SIDES = ("buy", "sell")

_VENUE_CODE = {venue: code for code, venue in enumerate(VENUES, 1)}
_MARKER_CODE = {kind: code for code, kind in enumerate(MARKER_KINDS, 1)}
_SIDE_CODE = {side.encode(): code for code, side in enumerate(SIDES, 1)}
# Indexed by code; code 0 is "no venue" where the format allows it. No side or marker kind has
# code 0: it is rejected before those two are indexed.
_VENUE_BY_CODE = (None,) + VENUES
_MARKER_BY_CODE = ("",) + MARKER_KINDS
_SIDE_BY_CODE = ("",) + SIDES

FRAME_STRUCT = struct.Struct("<II")
_TRADE = struct.Struct("<BBBBHBBqqQB")
_MARKER = struct.Struct("<BBBBBBHqqq")
_QUARANTINE = struct.Struct("<BBHIq")

_PLAIN_DECIMAL = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?")


class TradeRecord(NamedTuple):
    """A trade as read back; field order is the column order of `Store.query`."""

    venue: str
    symbol: str
    trade_id: str
    price: str
    qty: str
    side: str
    ts_ns: int
    recv_ns: int
    flags: int


class MarkerRecord(NamedTuple):
    """A coverage fact; field order is the column order of `Store.markers`."""

    kind: str
    venue: str | None
    symbol: str
    ts_ns: int
    from_ts_ns: int
    to_ts_ns: int
    from_id: str
    to_id: str
    detail: str


class QuarantinedRecord(NamedTuple):
    """A frame that could not be parsed; the tuple `Store.quarantined` returns."""

    venue: str | None
    recv_ns: int
    reason: str
    raw: bytes


class Undecodable(Exception):
    """A payload whose CRC matched but whose fields do not add up: damage, not data."""


def _text(b: bytes, rule: str = "[text] marker text is not UTF-8") -> str:
    # Text that is not UTF-8 breaks a rule of the format (docs/FORMAT.md): the frame is damage.
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise Undecodable(rule) from None


def _optional_venue(code: int) -> str | None:
    if code >= len(_VENUE_BY_CODE):
        raise Undecodable("[venue] unknown venue code")
    return _VENUE_BY_CODE[code]


def decode_payload(p: bytes) -> TradeRecord | MarkerRecord | QuarantinedRecord:
    """Decodes a payload whose CRC matched; raises Undecodable when it is inconsistent.

    Checks exactly what the Rust reader checks (docs/FORMAT.md, "Validity rules"): kind, codes,
    that field lengths add up, and the field rules; the message starts with the rule's tag.
    """
    kind = p[0]
    if kind == KIND_TRADE:
        if len(p) < TRADE_FIXED:
            raise Undecodable("[size] trade record shorter than its fixed part")
        _, venue, side, ls, flags, lp, lq, ts_ns, recv_ns, id_num, li = _TRADE.unpack_from(p)
        if not 1 <= venue < len(_VENUE_BY_CODE):
            raise Undecodable("[venue] unknown venue code")
        if not 1 <= side < len(_SIDE_BY_CODE):
            raise Undecodable("[side] unknown side code")
        if len(p) != TRADE_FIXED + ls + lp + lq + li:
            raise Undecodable("[size] trade record length does not match its fields")
        at_price = TRADE_FIXED + ls
        at_qty = at_price + lp
        at_id = at_qty + lq
        if flags & ~FLAGS_ALL:
            raise Undecodable("[flags] trade flags have bits no PumpWatch flag uses")
        if not ls:
            raise Undecodable("[symbol] trade symbol is empty")
        symbol = _text(p[TRADE_FIXED:at_price], "[symbol] trade symbol is not UTF-8")
        price, qty = bytes(p[at_price:at_qty]), bytes(p[at_qty:at_id])
        if not _PLAIN_DECIMAL.fullmatch(price):
            raise Undecodable("[price] trade price is not a plain decimal")
        if not _PLAIN_DECIMAL.fullmatch(qty):
            raise Undecodable("[qty] trade quantity is not a plain decimal")
        return TradeRecord(
            VENUES[venue - 1],  # a trade always names its venue (checked above)
            symbol,
            _text(p[at_id:], "[trade-id] trade id text is not UTF-8") if li else str(id_num),
            price.decode("ascii"),
            qty.decode("ascii"),
            _SIDE_BY_CODE[side],
            ts_ns,
            recv_ns,
            flags,
        )
    if kind == KIND_MARKER:
        if len(p) < MARKER_FIXED:
            raise Undecodable("[size] marker record shorter than its fixed part")
        _, venue, marker_kind, ls, lf, lt, ld, ts_ns, from_ts_ns, to_ts_ns = _MARKER.unpack_from(p)
        if not 1 <= marker_kind < len(_MARKER_BY_CODE):
            raise Undecodable("[marker-kind] unknown marker kind code")
        venue_id = _optional_venue(venue)
        if len(p) != MARKER_FIXED + ls + lf + lt + ld:
            raise Undecodable("[size] marker record length does not match its fields")
        at_from = MARKER_FIXED + ls
        at_to = at_from + lf
        at_detail = at_to + lt
        return MarkerRecord(
            _MARKER_BY_CODE[marker_kind],
            venue_id,
            _text(p[MARKER_FIXED:at_from]),
            ts_ns,
            from_ts_ns,
            to_ts_ns,
            _text(p[at_from:at_to]),
            _text(p[at_to:at_detail]),
            _text(p[at_detail:]),
        )
    if kind == KIND_QUARANTINE:
        if len(p) < QUARANTINE_FIXED:
            raise Undecodable("[size] quarantine record shorter than its fixed part")
        _, venue, lr, lw, recv_ns = _QUARANTINE.unpack_from(p)
        venue_id = _optional_venue(venue)
        if len(p) != QUARANTINE_FIXED + lr + lw:
            raise Undecodable("[size] quarantine record length does not match its fields")
        at_raw = QUARANTINE_FIXED + lr
        reason = _text(p[QUARANTINE_FIXED:at_raw], "[text] quarantine reason is not UTF-8")
        return QuarantinedRecord(venue_id, recv_ns, reason, bytes(p[at_raw:]))
    raise Undecodable("[kind] unknown record kind")


def quote(value) -> str:
    """Quotes a value the way the Rust side's error messages do ({:?})."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _frame(payload: bytes) -> bytes:
    return FRAME_STRUCT.pack(len(payload), crc32c.crc32c(payload)) + payload


def _utf8(field: str, value) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text (str), not {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} is not valid UTF-8") from None


def _text_bytes(field: str, value, required: bool) -> bytes:
    """A short text field: at most 255 bytes of UTF-8, non-empty when required."""
    b = _utf8(field, value)
    if required and not b:
        raise ValueError(f"{field} is empty")
    if len(b) > TEXT_MAX:
        raise ValueError(f"{field} is {len(b)} bytes long; at most {TEXT_MAX} are stored")
    return b


def _decimal_bytes(field: str, value) -> bytes:
    if isinstance(value, Decimal):
        value = format(value, "f")  # never an exponent; NaN and Infinity fail the check below
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif not isinstance(value, str):
        raise ValueError(
            f'{field} must be exact: pass the venue\'s text (e.g. "83680.00") or a decimal.Decimal, '
            f"not {type(value).__name__}"
        )
    b = value.encode("utf-8", "replace")
    if len(b) > TEXT_MAX:
        raise ValueError(f"{field} is {len(b)} characters long; at most {TEXT_MAX} are stored")
    if not _PLAIN_DECIMAL.fullmatch(b):
        raise ValueError(
            f'{field} {quote(value)} is not a plain decimal like "83680.00" or "0.0000001117" '
            f"(no exponent, no spaces, no float): pass the venue's text or a Decimal"
        )
    return b


def _int64(field: str, value) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{field} must be an integer (ns since the Unix epoch), not {type(value).__name__}") from None
    if not I64_MIN <= n <= I64_MAX:
        raise ValueError(f"{field} {n} does not fit a signed 64-bit integer")
    return n


def _venue_code(value, optional: bool) -> int:
    if value is None and optional:
        return 0
    code = _VENUE_CODE.get(value) if isinstance(value, str) else None
    if code is None:
        raise ValueError(f"unknown venue {quote(value)}; the venues are: {', '.join(VENUES)}")
    return code


def _canonical_u64(b: bytes) -> int | None:
    """The id as a number when its text is the canonical decimal of a u64 ("0" or no leading zero)."""
    if not b or len(b) > 20 or (len(b) > 1 and b[0] == 0x30) or not b.isdigit():
        return None
    n = int(b)
    return n if n <= U64_MAX else None


def encode_trade(venue, symbol, trade_id, price, qty, side, ts_ns, recv_ns, flags) -> tuple[bytes, int]:
    """The framed trade and its exchange time; ValueError says which field is wrong and why."""
    venue_code = _venue_code(venue, optional=False)
    side_code = _SIDE_CODE.get(side.encode("utf-8", "replace").lower()) if isinstance(side, str) else None
    if side_code is None:
        raise ValueError(f'side {quote(side)} is not "buy" or "sell" (the taker\'s side)')
    price_b = _decimal_bytes("price", price)
    qty_b = _decimal_bytes("qty", qty)
    symbol_b = _text_bytes("symbol", symbol, required=True)
    if isinstance(trade_id, int) and not isinstance(trade_id, bool):
        trade_id = str(trade_id)  # venues send numeric ids as JSON numbers
    id_b = _text_bytes("trade_id", trade_id, required=True)
    try:
        flags = operator.index(flags)
    except TypeError:
        raise ValueError(f"flags must be an integer, not {type(flags).__name__}") from None
    if not 0 <= flags <= FLAGS_ALL:
        raise ValueError(f"flags {flags:#x} has bits no PumpWatch flag uses (known: 0..=0x3ff)")
    ts_ns = _int64("ts_ns", ts_ns)
    recv_ns = _int64("recv_ns", recv_ns)
    id_num = _canonical_u64(id_b)
    id_text = b"" if id_num is not None else id_b
    fixed = _TRADE.pack(
        KIND_TRADE,
        venue_code,
        side_code,
        len(symbol_b),
        flags,
        len(price_b),
        len(qty_b),
        ts_ns,
        recv_ns,
        id_num or 0,
        len(id_text),
    )
    return _frame(b"".join((fixed, symbol_b, price_b, qty_b, id_text))), ts_ns


def encode_marker(kind, venue, symbol, ts_ns, from_ts_ns, to_ts_ns, from_id, to_id, detail) -> bytes:
    marker_code = _MARKER_CODE.get(kind) if isinstance(kind, str) else None
    if marker_code is None:
        raise ValueError(f"unknown marker kind {quote(kind)}; the kinds are: {', '.join(MARKER_KINDS)}")
    venue_code = _venue_code(venue, optional=True)
    symbol_b = _text_bytes("marker symbol", symbol, required=False)
    from_b = _text_bytes("marker from_id", from_id, required=False)
    to_b = _text_bytes("marker to_id", to_id, required=False)
    detail_b = _utf8("marker detail", detail)
    if len(detail_b) > DETAIL_MAX:
        raise ValueError(f"marker detail is {len(detail_b)} bytes; at most {DETAIL_MAX} are stored")
    fixed = _MARKER.pack(
        KIND_MARKER,
        venue_code,
        marker_code,
        len(symbol_b),
        len(from_b),
        len(to_b),
        len(detail_b),
        _int64("ts_ns", ts_ns),
        _int64("from_ts_ns", from_ts_ns),
        _int64("to_ts_ns", to_ts_ns),
    )
    return _frame(b"".join((fixed, symbol_b, from_b, to_b, detail_b)))


def encode_quarantined(venue, recv_ns, reason, raw) -> bytes:
    venue_code = _venue_code(venue, optional=True)
    recv_ns = _int64("recv_ns", recv_ns)
    _utf8("reason", reason)
    # A text websocket frame is kept as the UTF-8 bytes it arrived as.
    raw = _utf8("raw", raw) if isinstance(raw, str) else bytes(raw)
    if len(raw) > QUARANTINE_RAW_MAX:
        # Cut, and say so, so that one frame fits one record (as the Rust side does).
        reason += f" (frame of {len(raw)} bytes cut to {QUARANTINE_RAW_MAX})"
        raw = raw[:QUARANTINE_RAW_MAX]
    # Cut at a character boundary: the dropped partial character is the only invalid UTF-8.
    reason_b = reason.encode()[:DETAIL_MAX].decode("utf-8", "ignore").encode()
    fixed = _QUARANTINE.pack(KIND_QUARANTINE, venue_code, len(reason_b), len(raw), recv_ns)
    return _frame(b"".join((fixed, reason_b, raw)))
