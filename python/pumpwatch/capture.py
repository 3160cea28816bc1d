"""Listing capture: for each ticker of a KRW listing, the trades of every venue instrument of that
asset from `t0 - before` to `t0 + after` (exchange time), taken from the recording, with what was
covered and what was lost, written atomically as an event folder:

    events/<TICKER>_<t0 yyyymmddThhmmssZ>/
        trades.parquet   every trade of the window, all venues, exact decimal text
        event.json       the notice, t0, detection, window, instrument mapping, per-venue coverage
        analysis.json    the pump measured (pumpwatch.analysis)
        chart.png        price per venue normalised to the reference, volume below (pumpwatch.chart)

The recording is read through a *source*: anything with the `query`/`markers` methods of
`pumpwatch.store.ReadOnlyStore` (the writer's own `Store`, a reader in another process, or a
database replica), so a capture from the daemon and one from `pumpwatch capture` agree.

Coverage is read from the markers the recorder writes: a venue is complete over the window unless
an unfillable-gap marker, an id gap not yet closed, a connection still down, or a span in which the
recorder was not running says otherwise (each lost span is named with its reason).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import faults
from ._core import SEQUENCED_VENUES, VENUES
from .errors import InvalidInputError
from .net import write_atomic
from .redact import redact_tree
from .schema import TRADE_SCHEMA
from .venues import split_multiplier

if TYPE_CHECKING:  # the scheduler's collaborators, loaded by whoever runs it
    import asyncio
    import logging

    from .config import CaptureSettings
    from .upbit import ListingTrigger

NS = 1_000_000_000
DEFAULT_BEFORE_S = 20.0
DEFAULT_AFTER_S = 20.0
#: After `t0 + after`, how long the daemon waits for late frames and backfills before it cuts.
DEFAULT_GRACE_S = 10.0
#: How far before the window the markers are read to know each connection's state at its start.
MARKER_LOOKBACK_NS = 6 * 3600 * NS
#: How long a restart may last for a sequenced venue's ids to still prove the hole filled (the
#: collector seeds each symbol's last id from this far back; see collector.RESTART_LOOKBACK_NS).
RESTART_SEEDED_NS = 15 * 60 * NS
#: How far before the window a venue's reference price (its last trade before t0) is looked for.
REFERENCE_LOOKBACK_NS = 3600 * NS
EVENTS_DIR = "events"
INSTRUMENTS_DIR = "instruments"

#: Parquet columns of trades.parquet: the log's trade columns (price and quantity as the venue's
#: exact decimal text) plus the two times as UTC timestamps for tools that want them.
EVENT_TRADE_SCHEMA = pa.schema(
    list(TRADE_SCHEMA)
    + [
        pa.field("exchange_time", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("receive_time", pa.timestamp("ns", tz="UTC"), nullable=False),
    ]
)


class CaptureError(InvalidInputError):
    """A capture that cannot be made as asked (bad ticker, bad window)."""


class TradeSource(Protocol):
    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        venues: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
        *,
        include_non_trades: bool = False,
    ) -> pa.Table: ...

    def markers(self, start_ns: int | None = None, end_ns: int | None = None) -> pa.Table: ...


# ---------------------------------------------------------------------------------------------
# Names and times


_TICKER_CHARS = re.compile(r"[^A-Z0-9]")


def safe_ticker(ticker: str) -> str:
    """The ticker as it may appear in a folder name: upper-case letters and digits only, so nothing
    in an announcement (`../../x`, `0G/..`, a NUL) can name a path outside the events folder."""
    if not isinstance(ticker, str):
        raise CaptureError(f"a ticker is text, not {type(ticker).__name__}")
    cleaned = _TICKER_CHARS.sub("", ticker.upper())[:32]
    if not cleaned:
        raise CaptureError(f"ticker {ticker!r} has no letters or digits; give the coin's ticker, e.g. 0G or PEPE")
    return cleaned


def utc_stamp(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // NS, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(ts_ns: int) -> str:
    """ISO-8601 UTC with nanoseconds (exact: no float on the way)."""
    secs, frac = divmod(int(ts_ns), NS)
    return datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def event_name(ticker: str, t0_ns: int) -> str:
    return f"{safe_ticker(ticker)}_{utc_stamp(t0_ns)}"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h)?\s*$")
_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": NS, "m": 60 * NS, "h": 3600 * NS, None: NS}


def parse_duration_ns(text: str | float | int) -> int:
    """`"20s"`, `"1.5s"`, `"500ms"`, `"2m"`, `20` (seconds) -> ns."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise CaptureError(f"duration {text} is negative")
        return round(text * NS)
    m = _DURATION.match(str(text))
    if not m:
        raise CaptureError(f"duration {text!r} is not like 20s, 1.5s, 500ms or 2m")
    number, unit = m.groups()
    whole, _, frac = number.partition(".")
    scale = _UNIT_NS[unit]
    return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)


def parse_time_ns(text: str | int) -> int:
    """A moment as ISO-8601 (`2025-09-22T05:00:00Z`, an offset, or no zone = UTC; fractional seconds
    kept to the ns) or an epoch number in s, ms, us or ns (told apart by size)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return _epoch_ns(text)
    s = str(text).strip()
    if re.fullmatch(r"\d+", s):
        return _epoch_ns(int(s))
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?", s)
    if not m:
        raise CaptureError(f"time {text!r} is not ISO-8601 (e.g. 2025-09-22T05:00:00Z) nor an epoch number")
    base, frac, zone = m.groups()
    try:
        dt = datetime.fromisoformat(base.replace(" ", "T") + ({None: "+00:00", "Z": "+00:00"}.get(zone, zone)))
    except ValueError as e:
        raise CaptureError(f"time {text!r}: {e}") from None
    return int(dt.timestamp()) * NS + (int(frac.ljust(9, "0")) if frac else 0)


def _epoch_ns(n: int) -> int:
    if n < 10**11:
        return n * NS  # seconds
    if n < 10**14:
        return n * 1_000_000  # ms
    if n < 10**17:
        return n * 1_000  # us
    return n


# ---------------------------------------------------------------------------------------------
# Which instruments are the ticker's


@dataclass(frozen=True)
class MappedInstrument:
    """One venue instrument of the captured asset, with what converts its numbers: a price is per
    `base_multiplier` units of the asset (`1000PEPE`), a quantity is `contract_multiplier` base
    units (OKX, Gate and KuCoin futures contracts)."""

    venue: str
    symbol: str
    kind: str
    base: str
    base_multiplier: int = 1
    contract_multiplier: str = "1"
    source: str = "instrument list"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def save_instruments(data_dir: str | os.PathLike[str], venue: str, instruments: Iterable[Any]) -> None:
    """Keeps the venue's instrument list (union over time, so an event of a coin delisted later still
    maps) where a capture in any process finds it: `instruments/<venue>.json`, written atomically."""
    folder = os.path.join(os.fspath(data_dir), INSTRUMENTS_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{venue}.json")
    faults.check("instruments", path)
    known = _load_json(path) or {}
    now = time.time_ns()
    for i in instruments:
        entry = known.get(i.symbol, {"first_seen_ns": now})
        entry.update(
            symbol=i.symbol,
            base=i.base,
            asset=i.asset or split_multiplier(i.base)[0],
            base_multiplier=int(i.base_multiplier),
            kind=str(getattr(i.kind, "value", i.kind)),
            quote=i.quote,
            contract_multiplier=str(i.contract_multiplier),
            last_seen_ns=now,
        )
        known[i.symbol] = entry
    _write_atomic(path, json.dumps(known, indent=1, sort_keys=True).encode())


def _load_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a damaged catalogue: fall back to symbol names rather than fail a capture


# How each venue spells a USDT instrument of base B; the base then loses its denomination prefix.
_SYMBOL_BASE = {
    "binance-spot": (re.compile(r"^([A-Z0-9]+)USDT$"), "spot"),
    "binance-usdm": (re.compile(r"^([A-Z0-9]+)USDT$"), "perpetual"),
    "bybit-spot": (re.compile(r"^([A-Z0-9]+)USDT$"), "spot"),
    "bybit-linear": (re.compile(r"^([A-Z0-9]+)USDT$"), "perpetual"),
    "okx-spot": (re.compile(r"^([A-Z0-9]+)-USDT$"), "spot"),
    "okx-swap": (re.compile(r"^([A-Z0-9]+)-USDT-SWAP$"), "perpetual"),
    "kucoin-spot": (re.compile(r"^([A-Z0-9]+)-USDT$"), "spot"),
    "kucoin-futures": (re.compile(r"^([A-Z0-9]+)USDTM$"), "perpetual"),
    "gate-spot": (re.compile(r"^([A-Z0-9]+)_USDT$"), "spot"),
    "gate-futures": (re.compile(r"^([A-Z0-9]+)_USDT$"), "perpetual"),
    "phemex-spot": (re.compile(r"^s([A-Z0-9]+)USDT$"), "spot"),
    "phemex-perp": (re.compile(r"^([A-Z0-9]+)USDT$"), "perpetual"),
}
_ALIASES = {"XBT": "BTC"}  # KuCoin


def map_instruments(
    ticker: str,
    data_dir: str | os.PathLike[str] | None,
    symbols_seen: dict[str, set[str]],
    venues: Iterable[str] = VENUES,
) -> dict[str, list[MappedInstrument]]:
    """Every venue instrument whose asset is `ticker`: from the instrument lists the recorder kept
    (with contract sizes), else from the symbols in the recording by each venue's naming rule
    (contract sizes then unknown: taken as 1, and said so)."""
    asset = ticker.upper()
    out: dict[str, list[MappedInstrument]] = {}
    for venue in venues:
        found: list[MappedInstrument] = []
        catalogue = (
            _load_json(os.path.join(os.fspath(data_dir), INSTRUMENTS_DIR, f"{venue}.json")) if data_dir else None
        )
        if isinstance(catalogue, dict):
            for entry in catalogue.values():
                try:
                    if entry.get("asset", "").upper() == asset and entry.get("quote", "USDT") == "USDT":
                        found.append(
                            MappedInstrument(
                                venue,
                                entry["symbol"],
                                entry.get("kind", ""),
                                entry.get("base", asset),
                                int(entry.get("base_multiplier", 1)),
                                str(entry.get("contract_multiplier", "1")),
                            )
                        )
                except (AttributeError, KeyError, TypeError, ValueError):
                    continue
        rule = _SYMBOL_BASE.get(venue)
        if not found and rule is not None:
            pattern, kind = rule
            for symbol in sorted(symbols_seen.get(venue, ())):
                m = pattern.match(symbol)
                if not m:
                    continue
                base = _ALIASES.get(m.group(1), m.group(1))
                a, mult = split_multiplier(base)
                if a == asset:
                    found.append(MappedInstrument(venue, symbol, kind, base, mult, "1", source="symbol name"))
        if found:
            out[venue] = sorted(found, key=lambda i: i.symbol)
    return out


# ---------------------------------------------------------------------------------------------
# Coverage


@dataclass
class LostSpan:
    from_ns: int
    to_ns: int
    reason: str
    symbol: str = ""  # "" = every instrument of the venue

    def to_dict(self) -> dict:
        return {
            "symbol": self.symbol or "*",
            "from_ns": self.from_ns,
            "to_ns": self.to_ns,
            "from": iso(self.from_ns),
            "to": iso(self.to_ns),
            "seconds": round((self.to_ns - self.from_ns) / NS, 3),
            "reason": self.reason,
        }


def _ranges_touch(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


def _id_range(m: dict) -> tuple[int, int] | None:
    try:
        return int(m["from_id"]), int(m["to_id"])
    except (TypeError, ValueError):
        return None


def venue_coverage(
    venue: str,
    symbols: set[str],
    markers: list[dict],
    start_ns: int,
    end_ns: int,
    now_ns: int,
    last_recv_before: dict[int, int] | None = None,
) -> tuple[str, list[LostSpan]]:
    """What the recording of `venue` (instruments `symbols`) misses inside `[start_ns, end_ns)`,
    from the markers in log order: `("complete" | "partial" | "not recorded" | "unknown", spans)`.

    - unfillable-gap markers name their span;
    - an id gap found and not (yet) filled or named unfillable is lost as far as we know;
    - spans in which no connection of the venue was up: after a reconnect within one run of the
      recorder the collector backfills and names what it cannot, so those are covered by the two
      rules above; but before the venue's first connection, while the recorder was not running, and
      after a connection that is still down, nothing could be recorded (sequenced venues excepted
      across a short restart: their ids prove the hole filled or name it);
    `last_recv_before[i]`: the last receive time of this venue before the i-th `recorder_start`
    (when the run before it ended without `recorder_stop`, i.e. was killed)."""
    sequenced = venue in SEQUENCED_VENUES
    lost: list[LostSpan] = []
    if not markers or (markers[0]["kind"] == "recorder_start" and markers[0]["ts_ns"] > end_ns):
        # No recorder run reaches the window (data ingested from a file, or a window in the future).
        return "unknown", []

    def ours(m: dict) -> bool:
        return m["venue"] == venue and (not m["symbol"] or m["symbol"] in symbols)

    # 1. Liveness: walk recorder runs and connection states in log order. `dark_since`: no
    # connection of the venue up since then; `dark_covered`: the collector will backfill that span
    # and name what it cannot (a reconnect within a run, or a short restart of a sequenced venue).
    up: set[str] = set()
    running = markers[0]["kind"] != "recorder_start"  # a run that began before the lookback
    dark_since: int | None = None
    dark_reason, dark_covered = "", True
    last_seen = markers[0]["ts_ns"]
    start_index = 0
    ever_up = bool(running)
    for m in markers:
        kind, ts = m["kind"], m["ts_ns"]
        if kind == "recorder_start":
            if running and dark_since is None:  # the run before was killed: dark from its last sign of life
                dark_since = (last_recv_before or {}).get(start_index) or last_seen
            if dark_since is None:  # the first run in sight: nothing was recorded before it
                dark_since, dark_reason, dark_covered = -(2**62), "not yet recording", False
            else:
                dark_reason = "recorder not running"
                dark_covered = sequenced and ts - dark_since <= RESTART_SEEDED_NS
            running, ever_up = True, False
            up.clear()
            start_index += 1
        elif kind == "recorder_stop":
            if dark_since is None:
                dark_since = ts
            dark_reason, dark_covered = "recorder not running", False
            running = False
            up.clear()
        elif m["venue"] == venue and kind in ("connection_up", "connection_down"):
            name = (m["detail"] or "").split(":", 1)[0]
            if kind == "connection_up":
                if not up and dark_since is not None:
                    if not dark_covered:
                        lost.append(LostSpan(dark_since, ts, dark_reason))
                    dark_since = None
                up.add(name)
                ever_up = True
            else:
                up.discard(name)
                if not up and dark_since is None:
                    dark_since, dark_reason, dark_covered = ts, "disconnected", True
        last_seen = ts
    if dark_since is not None:
        if running and not ever_up:
            dark_reason = "venue not connected"
        elif dark_reason == "disconnected":
            dark_reason = "venue disconnected, still down when captured"
        lost.append(LostSpan(dark_since, max(now_ns, end_ns), dark_reason))

    # 2. Id gaps still open, and what the collector named unfillable.
    closers = [m for m in markers if m["kind"] in ("gap_filled", "gap_unfillable") and ours(m)]
    for m in markers:
        if not ours(m):
            continue
        if m["kind"] == "gap_unfillable":
            lost.append(LostSpan(m["from_ts_ns"], m["to_ts_ns"], "unfillable gap: " + (m["detail"] or ""), m["symbol"]))
        elif m["kind"] == "gap_found":
            ids = _id_range(m)
            closed = ids is not None and any(
                c["symbol"] == m["symbol"] and (r := _id_range(c)) is not None and _ranges_touch(*ids, *r)
                for c in closers
            )
            if not closed:
                lost.append(
                    LostSpan(
                        m["from_ts_ns"],
                        m["to_ts_ns"],
                        f"id gap {m['from_id']}..{m['to_id']} not backfilled",
                        m["symbol"],
                    )
                )

    clipped = []
    for s in lost:
        a, b = max(s.from_ns, start_ns), min(s.to_ns, end_ns)
        if a < b:
            clipped.append(LostSpan(a, b, s.reason, s.symbol))
    clipped.sort(key=lambda s: (s.from_ns, s.to_ns))
    if any(s.reason == "venue not connected" and s.from_ns <= start_ns and s.to_ns >= end_ns for s in clipped):
        return "not recorded", clipped
    return ("partial" if clipped else "complete"), clipped


def _first_seen(data_dir: str, venue: str, symbols: set[str]) -> int | None:
    """When the recorder first saw one of `symbols` on the venue's instrument list (any state): a
    venue that opens the coin after the window shows up with it."""
    catalogue = _load_json(os.path.join(data_dir, INSTRUMENTS_DIR, f"{venue}.json"))
    if not isinstance(catalogue, dict):
        return None
    seen = [e.get("first_seen_ns") for s, e in catalogue.items() if s in symbols and isinstance(e, dict)]
    return min((x for x in seen if isinstance(x, int)), default=None)


def _same_span(a: LostSpan, b: LostSpan) -> bool:
    return a.symbol == b.symbol and _ranges_touch(a.from_ns, a.to_ns, b.from_ns, b.to_ns)


def listing_start(
    source: TradeSource, venue: str, symbols: set[str], markers: list[dict], start_ns: int, end_ns: int
) -> dict:
    """When the coin first traded on `venue` (its earliest trade recorded from 10 min before the
    window to its end) and when PumpWatch subscribed it (the `subscription_set` marker the
    recorder writes for an instrument added after its start, else the venue's last connection
    up before the window), per venue and per instrument (issue 13). `late`: spans of the window
    before an instrument's subscription that nothing proves empty: recording began after the
    window's start and the recorder did not fetch (or could not fetch) what traded before; the
    recorder's `gap_filled` "listing:" marker is that proof (REST walked back to the window start
    or to the venue's first trade of it)."""
    subscribed: dict[str, int] = {}
    proven: dict[str, int] = {}
    connection_up = None
    for m in markers:
        if m["venue"] != venue:
            continue
        if m["kind"] == "connection_up" and m["ts_ns"] <= start_ns:
            connection_up = m["ts_ns"]
        elif (
            m["symbol"] in symbols and m["kind"] == "subscription_set" and (m["detail"] or "").startswith("subscribed")
        ):
            subscribed.setdefault(m["symbol"], m["ts_ns"])
        elif m["symbol"] in symbols and m["kind"] == "gap_filled" and (m["detail"] or "").startswith("listing:"):
            proven[m["symbol"]] = max(proven.get(m["symbol"], 0), m["to_ts_ns"])
    t = source.query(start_ns - 600 * NS, end_ns, venues=[venue], symbols=sorted(symbols))
    firsts: dict[str, int] = {}
    for sym, ts in zip(t.column("symbol").to_pylist(), t.column("ts_ns").to_pylist(), strict=False):
        if sym in symbols and (sym not in firsts or ts < firsts[sym]):
            firsts[sym] = ts
    late = []
    for sym, sub in subscribed.items():
        if start_ns < sub and proven.get(sym, 0) < sub:
            late.append(
                LostSpan(
                    start_ns,
                    min(sub, end_ns),
                    "subscribed after the window began (a listing's "
                    "instrument the venue opened late) and its earlier trades were not fetched",
                    sym,
                )
            )
    first_trade = min(firsts.values(), default=None)
    sub_all = [subscribed.get(s) for s in symbols]
    sub_ns = min((x for x in sub_all if x is not None), default=connection_up)
    return {
        "first_trade_ns": first_trade,
        "first_trade": iso(first_trade) if first_trade is not None else None,
        "subscribed_ns": sub_ns,
        "subscribed": iso(sub_ns) if sub_ns is not None else None,
        "per_instrument": {
            s: {"first_trade_ns": firsts.get(s), "subscribed_ns": subscribed.get(s, connection_up)}
            for s in sorted(symbols)
        },
        "late": late,
    }


# ---------------------------------------------------------------------------------------------
# The capture


@dataclass
class CaptureRequest:
    """What to capture: `ticker` around `t0_ns`, and what is known of the notice (for event.json)."""

    ticker: str
    t0_ns: int
    before_ns: int = int(DEFAULT_BEFORE_S * NS)
    after_ns: int = int(DEFAULT_AFTER_S * NS)
    notice: dict = field(default_factory=dict)  # notice_id, title, markets, detected_ns, delay_ns, ...

    def __post_init__(self) -> None:
        self.safe_ticker = safe_ticker(self.ticker)
        if self.before_ns < 0 or self.after_ns <= 0:
            raise CaptureError("the window needs before >= 0 and after > 0")
        if self.before_ns + self.after_ns > 24 * 3600 * NS:
            raise CaptureError("a capture window is at most 24 h; use `pumpwatch export` for longer spans")

    @property
    def start_ns(self) -> int:
        return self.t0_ns - self.before_ns

    @property
    def end_ns(self) -> int:
        return self.t0_ns + self.after_ns

    @property
    def name(self) -> str:
        return f"{self.safe_ticker}_{utc_stamp(self.t0_ns)}"


@dataclass
class CapturedEvent:
    path: str
    event: dict
    analysis: dict
    trades: pa.Table
    timings_ms: dict


def window_trades(source: TradeSource, req: CaptureRequest, mapping: dict[str, list[MappedInstrument]]) -> pa.Table:
    """The window's trades of the mapped instruments (inclusive of `t0 + after`), all venues."""
    symbols = sorted({i.symbol for insts in mapping.values() for i in insts})
    if not symbols:
        return pa.Table.from_pylist([], schema=source.query(0, 0).schema)
    table = source.query(req.start_ns, req.end_ns + 1, venues=sorted(mapping), symbols=symbols)
    # A symbol can exist on two venues (BTCUSDT): keep each venue's own instruments only.
    wanted = pa.array(sorted(f"{v}\x00{i.symbol}" for v, insts in mapping.items() for i in insts))
    keys = pc.binary_join_element_wise(table.column("venue"), table.column("symbol"), "\x00")
    return table.filter(pc.is_in(keys, value_set=wanted))


def _symbols_seen(source: TradeSource, req: CaptureRequest) -> dict[str, set[str]]:
    table = source.query(req.start_ns - 60 * NS, req.end_ns + 1)
    seen: dict[str, set[str]] = {}
    for row in table.select(["venue", "symbol"]).group_by(["venue", "symbol"]).aggregate([]).to_pylist():
        seen.setdefault(row["venue"], set()).add(row["symbol"])
    return seen


def _last_recv_before_restarts(source: TradeSource, venue: str, markers: list[dict], start_ns: int) -> dict[int, int]:
    """For each run killed without `recorder_stop`: the last receive time of `venue` before the
    next `recorder_start` (index of that start among the starts)."""
    out: dict[int, int] = {}
    running, index, prev_start = False, 0, None
    for m in markers:
        if m["kind"] == "recorder_start":
            if running and prev_start is not None and m["ts_ns"] >= start_ns - MARKER_LOOKBACK_NS:
                t = source.query(prev_start - 3600 * NS, m["ts_ns"] + 60 * NS, venues=[venue])
                recv = [r for r in t.column("recv_ns").to_pylist() if r < m["ts_ns"]]
                if recv:
                    out[index] = max(recv)
            running, prev_start = True, m["ts_ns"]
            index += 1
        elif m["kind"] == "recorder_stop":
            running = False
    return out


def capture(
    source: TradeSource,
    req: CaptureRequest,
    data_dir: str | os.PathLike[str],
    *,
    venues: Iterable[str] = VENUES,
    thresholds: dict | None = None,
    chart: bool = True,
    now_ns: int | None = None,
    source_name: str = "log",
    chart_zoom_s: float | None = None,
    mapping: dict[str, list[MappedInstrument]] | None = None,
    venue_sources: dict[str, dict] | None = None,
) -> CapturedEvent:
    """Cuts the window out of the recording and writes the event folder atomically (a reader sees
    no folder, or the whole event). Re-capturing the same ticker and t0 replaces the folder.

    `mapping`: the instruments to take (default: mapped from the data directory and the source).
    `venue_sources`: for venues whose trades did not come from the recording (a REST rebuild,
    pumpwatch.history), what their event.json entry says instead of the markers' coverage:
    `source`, `coverage`, `lost` and whatever else the caller knows of them."""
    from . import analysis as analysis_mod

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    now_ns = time.time_ns() if now_ns is None else now_ns
    data_dir = os.fspath(data_dir)
    if mapping is None:
        mapping = map_instruments(req.ticker, data_dir, _symbols_seen(source, req), venues)
    trades = window_trades(source, req, mapping)
    markers = source.markers(req.start_ns - MARKER_LOOKBACK_NS, max(now_ns, req.end_ns) + 1).to_pylist()
    timings["read"] = (time.perf_counter() - clock) * 1e3

    per_venue: dict[str, dict] = {}
    counts = {c["values"]: c["counts"] for c in pc.value_counts(trades.column("venue")).to_pylist()}
    for venue in venues:
        insts = mapping.get(venue)
        if not insts:
            per_venue[venue] = {
                "coverage": "absent",
                "trades": 0,
                "lost": [],
                "note": f"no {req.safe_ticker} instrument on this venue",
            }
            continue
        symbols = {i.symbol for i in insts}
        killed = _last_recv_before_restarts(source, venue, markers, req.start_ns)
        status, lost = venue_coverage(venue, symbols, markers, req.start_ns, req.end_ns + 1, now_ns, killed)
        first = listing_start(source, venue, symbols, markers, req.start_ns, req.end_ns + 1)
        seen = _first_seen(data_dir, venue, symbols)
        first["instrument_first_seen_ns"] = seen
        first["instrument_first_seen"] = iso(seen) if seen is not None else None
        late = [s for s in first.pop("late") if not any(_same_span(s, x) for x in lost)]
        if late:
            lost = sorted(lost + late, key=lambda x: (x.from_ns, x.to_ns))
            status = "partial" if status == "complete" else status
        per_venue[venue] = {
            "coverage": status,
            "trades": counts.get(venue, 0),
            "lost": [s.to_dict() for s in lost],
            "instruments": [i.symbol for i in insts],
            **first,
        }
    for venue, told in (venue_sources or {}).items():
        if venue in per_venue:
            per_venue[venue].update(told)
    clock2 = time.perf_counter()
    have_reference = set(
        pc.unique(trades.filter(pc.less(trades.column("ts_ns"), req.t0_ns)).column("venue")).to_pylist()
    )
    lacking = sorted(v for v in mapping if v not in have_reference)
    earlier = None
    if lacking:  # the reference is the last trade before t0, even if older than the window
        lacking_symbols = sorted({i.symbol for v in lacking for i in mapping[v]})
        earlier = source.query(
            req.start_ns - REFERENCE_LOOKBACK_NS, req.start_ns, venues=lacking, symbols=lacking_symbols
        )
    analysis = analysis_mod.analyse(
        trades, mapping, req.t0_ns, req.notice.get("detected_ns"), thresholds=thresholds, earlier=earlier
    )
    timings["analysis"] = (time.perf_counter() - clock2) * 1e3

    notice = dict(req.notice)
    detected = notice.get("detected_ns")
    event = {
        "format": 1,
        "ticker": req.ticker,
        "folder_ticker": req.safe_ticker,
        "notice": {k: notice.get(k) for k in ("notice_id", "title", "markets", "egress", "catch_up") if k in notice},
        "t0_ns": req.t0_ns,
        "t0": iso(req.t0_ns),
        "detected_ns": detected,
        "detected": iso(detected) if detected else None,
        "detection_delay_ms": round((detected - req.t0_ns) / 1e6, 3) if detected else None,
        "window": {
            "start_ns": req.start_ns,
            "end_ns": req.end_ns,
            "start": iso(req.start_ns),
            "end": iso(req.end_ns),
            "before_s": req.before_ns / NS,
            "after_s": req.after_ns / NS,
            "by": "exchange time, both ends included",
        },
        "captured_ns": now_ns,
        "captured": iso(now_ns),
        "source": source_name,
        "instrument_mapping": {v: [i.to_dict() for i in insts] for v, insts in mapping.items()},
        "venues": per_venue,
        "trades": trades.num_rows,
        "traded_anywhere": bool(trades.num_rows) or bool(mapping),
        "summary": _summary(per_venue, req.safe_ticker),
    }
    path = write_event(data_dir, req, trades, event, analysis, chart=chart, timings=timings, chart_zoom_s=chart_zoom_s)
    timings["total"] = (time.perf_counter() - clock) * 1e3
    return CapturedEvent(path, event, analysis, trades, timings)


def _summary(per_venue: dict[str, dict], ticker: str) -> str:
    traded = [v for v, d in per_venue.items() if d["coverage"] != "absent"]
    if not traded:
        return f"no venue lists {ticker}: nothing to capture"
    partial = [v for v in traded if per_venue[v]["coverage"] != "complete"]
    return f"{len(traded)} venues list {ticker}; " + (
        f"{len(partial)} not complete ({', '.join(partial)})" if partial else "all complete"
    )


def write_event(
    data_dir: str,
    req: CaptureRequest,
    trades: pa.Table,
    event: dict,
    analysis: dict,
    *,
    chart: bool = True,
    timings: dict | None = None,
    chart_zoom_s: float | None = None,
) -> str:
    """The folder is built beside its final place and renamed into it: atomic for readers."""
    events = os.path.realpath(os.path.join(data_dir, EVENTS_DIR))
    os.makedirs(events, exist_ok=True)
    final = os.path.realpath(os.path.join(events, req.name))
    if os.path.dirname(final) != events:  # safe_ticker makes this impossible; keep it impossible
        raise CaptureError(f"event folder {final!r} would be outside {events!r}")
    faults.check("events.folder", final)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{req.name}-", dir=events)
    try:
        clock = time.perf_counter()
        pq.write_table(_event_table(trades), os.path.join(tmp, "trades.parquet"), compression="zstd")
        if timings is not None:
            timings["parquet"] = (time.perf_counter() - clock) * 1e3
        _write_atomic(
            os.path.join(tmp, "analysis.json"), json.dumps(redact_tree(analysis), indent=1, ensure_ascii=False).encode()
        )
        if chart:
            try:
                from .chart import draw_event
            except ImportError as e:  # the event matters more than its picture: written without it, and said so
                event["chart_error"] = f"no chart: {e} (pip install matplotlib, then `pumpwatch capture` again)"
            else:
                clock = time.perf_counter()
                draw_event(os.path.join(tmp, "chart.png"), trades, event, analysis, zoom_s=chart_zoom_s)
                event["chart"] = "chart.png"
                if timings is not None:
                    timings["chart"] = (time.perf_counter() - clock) * 1e3
        _write_atomic(
            os.path.join(tmp, "event.json"), json.dumps(redact_tree(event), indent=1, ensure_ascii=False).encode()
        )
        _fsync_dir(tmp)
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f".old-{req.name}-", dir=events)
            os.rename(final, os.path.join(old, "event"))
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(events)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _event_table(trades: pa.Table) -> pa.Table:
    ts = trades.column("ts_ns").cast(pa.int64())
    recv = trades.column("recv_ns").cast(pa.int64())
    return pa.Table.from_arrays(
        [trades.column(n) for n in trades.column_names]
        + [ts.cast(pa.timestamp("ns", tz="UTC")), recv.cast(pa.timestamp("ns", tz="UTC"))],
        schema=EVENT_TRADE_SCHEMA,
    )


_write_atomic = write_atomic  # the network layer's one atomic write (fsynced, directory too)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Reading events back


def list_events(data_dir: str | os.PathLike[str]) -> list[dict]:
    """Every complete event folder (in-progress `.tmp-` folders are not events), oldest t0 first."""
    folder = os.path.join(os.fspath(data_dir), EVENTS_DIR)
    out = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith("."):
            continue
        event = _load_json(os.path.join(folder, name, "event.json"))
        if isinstance(event, dict):
            event["folder"] = os.path.join(folder, name)
            out.append(event)
    return sorted(out, key=lambda e: (e.get("t0_ns") or 0, e["folder"]))


def load_event(data_dir: str | os.PathLike[str], name_or_path: str) -> tuple[dict, dict]:
    """`(event.json, analysis.json)` of an event given by folder name, path, or ticker (the latest)."""
    candidates = [
        name_or_path,
        os.path.join(os.fspath(data_dir), EVENTS_DIR, os.path.basename(name_or_path.rstrip("/"))),
    ]
    for c in candidates:
        event = _load_json(os.path.join(c, "event.json"))
        if isinstance(event, dict):
            event["folder"] = os.path.abspath(c)
            return event, _load_json(os.path.join(c, "analysis.json")) or {}
    ticker = _TICKER_CHARS.sub("", name_or_path.upper())
    matches = [e for e in list_events(data_dir) if e.get("folder_ticker") == ticker]
    if matches:
        e = matches[-1]
        return e, _load_json(os.path.join(e["folder"], "analysis.json")) or {}
    raise CaptureError(
        f"no event {name_or_path!r} in {os.path.join(os.fspath(data_dir), EVENTS_DIR)}; `pumpwatch events` lists them"
    )


# ---------------------------------------------------------------------------------------------
# In the daemon


PENDING_FILE = "pending.json"
#: After a failed write (pending.json, an event folder), the next try comes after this many seconds,
#: doubling up to `RETRY_MAX_S`: a full disk that gets space back is noticed within a minute.
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0


class CaptureScheduler:
    """Turns the Upbit watcher's listing triggers into event folders once each window is complete
    (`t0 + after + grace`, and the collector's backfills settled or the grace spent again). A
    capture waiting survives a restart of the daemon (`events/pending.json`); captures run in a
    thread on a reader of their own, so recording never waits for them, and several at once are
    fine.

    No write failure loses a listing: a trigger whose pending.json cannot be written stays in
    memory and is written as soon as a write succeeds (retried with back-off); the capture runs
    when its window is complete whatever happened to pending.json; an event folder that cannot be
    written is retried until it is, and named meanwhile in `status()["unwritten"]` and the log."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        settings: CaptureSettings,
        *,
        settled: Callable[[], bool] | None = None,
        venues: Iterable[str] = VENUES,
        log: logging.Logger | None = None,
        retry_initial_s: float | None = None,
        retry_max_s: float | None = None,
    ) -> None:
        import logging

        self.data_dir = os.fspath(data_dir)
        self.settings = settings
        self.settled = settled or (lambda: True)
        self.venues = tuple(venues)
        self.log = log or logging.getLogger("pumpwatch.capture")
        self.retry_initial_s = RETRY_INITIAL_S if retry_initial_s is None else retry_initial_s
        self.retry_max_s = RETRY_MAX_S if retry_max_s is None else retry_max_s
        self.pending_path = os.path.join(self.data_dir, EVENTS_DIR, PENDING_FILE)
        loaded = _load_json(self.pending_path)
        self.pending: dict[str, dict] = loaded if isinstance(loaded, dict) else {}
        self.done: list[dict] = []
        self.failed: list[dict] = []
        #: event -> what keeps its folder from being written (error, since, attempts)
        self.unwritten: dict[str, dict] = {}
        #: pending.json is behind memory since this time (ns), with this error; None = on disk
        self.unsaved_since_ns: int | None = None
        self.unsaved_error = ""
        self._save_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        #: Events written by this run, by name: captured again when a venue lists the coin later.
        self.written: dict[str, CaptureRequest] = {}

    def start(self) -> None:
        for key in list(self.pending):
            self._schedule(key)

    async def on_trigger(self, trigger: ListingTrigger) -> None:
        if not self.settings.enabled or not trigger.capture:
            return
        notice = {
            "notice_id": trigger.notice_id,
            "title": trigger.title,
            "markets": list(trigger.markets),
            "detected_ns": trigger.detected_ns,
            "delay_ns": trigger.delay_ns,
            "egress": trigger.egress,
            "catch_up": trigger.catch_up,
        }
        for ticker in trigger.capture_tickers:
            try:
                req = CaptureRequest(
                    ticker, trigger.t0_ns, int(self.settings.before_s * NS), int(self.settings.after_s * NS), notice
                )
            except CaptureError as e:
                self.log.error("listing %s: cannot capture %r: %s", trigger.notice_id, ticker, e)
                self.failed.append({"ticker": str(ticker)[:40], "error": str(e)})
                continue
            if req.name in self.pending:
                continue
            self.pending[req.name] = {
                "ticker": ticker,
                "t0_ns": req.t0_ns,
                "before_ns": req.before_ns,
                "after_ns": req.after_ns,
                "notice": notice,
            }
            self._save()
            self.log.info(
                "capture of %s scheduled for %s (window %s .. %s)",
                req.name,
                iso(req.end_ns + int(self.settings.grace_s * NS)),
                iso(req.start_ns),
                iso(req.end_ns),
            )
            self._schedule(req.name)

    def _schedule(self, key: str) -> None:
        import asyncio

        task = asyncio.get_running_loop().create_task(self._run(key), name=f"capture {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write_pending(self) -> None:
        faults.check("events.pending", self.pending_path)
        os.makedirs(os.path.dirname(self.pending_path), exist_ok=True)
        _write_atomic(self.pending_path, json.dumps(self.pending, indent=1, ensure_ascii=False).encode())

    def _save(self) -> None:
        """pending.json now; if the disk refuses, memory keeps it and a retry loop writes it later."""
        try:
            self._write_pending()
        except OSError as e:
            if self.unsaved_since_ns is None:
                self.unsaved_since_ns = time.time_ns()
                self.log.error(
                    "captures waiting (%s) not saved to %s: %s; kept in memory and written as soon as "
                    "the disk takes it (free space on it)",
                    ", ".join(sorted(self.pending)) or "none",
                    self.pending_path,
                    e,
                )
            self.unsaved_error = f"{type(e).__name__}: {e}"
            self._retry_save_later()
            return
        if self.unsaved_since_ns is not None:
            self.log.warning(
                "captures waiting saved to %s after %.1f s of failed writes",
                self.pending_path,
                (time.time_ns() - self.unsaved_since_ns) / NS,
            )
        self.unsaved_since_ns, self.unsaved_error = None, ""

    def _retry_save_later(self) -> None:
        import asyncio

        if self._save_task is not None and not self._save_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (stopping): `stop` has made the last try

        async def retry() -> None:
            delay = self.retry_initial_s
            while self.unsaved_since_ns is not None:
                await asyncio.sleep(delay)
                self._save()
                delay = min(delay * 2, self.retry_max_s)

        self._save_task = loop.create_task(retry(), name="capture pending.json retry")

    async def _run(self, key: str) -> None:
        import asyncio

        p = self.pending[key]
        req = CaptureRequest(
            p["ticker"], int(p["t0_ns"]), int(p["before_ns"]), int(p["after_ns"]), dict(p.get("notice") or {})
        )
        grace_ns = int(self.settings.grace_s * NS)
        due = req.end_ns + grace_ns
        await asyncio.sleep(max(0.0, (due - time.time_ns()) / NS))
        deadline = time.monotonic() + self.settings.grace_s
        while not self.settled() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        delay = self.retry_initial_s
        while True:
            clock = time.perf_counter()
            try:
                ev = await asyncio.to_thread(self._capture, req)
                break
            except Exception as e:
                first = key not in self.unwritten
                u = self.unwritten.setdefault(key, {"event": key, "since_ns": time.time_ns(), "attempts": 0})
                u.update(
                    attempts=u["attempts"] + 1,
                    error=f"{type(e).__name__}: {e}"[:300],
                    path=os.path.join(self.data_dir, EVENTS_DIR, key),
                )
                if first:
                    self.log.exception(
                        "event %s not written (%s); it stays pending and is retried every %.0f-%.0f s until it is",
                        key,
                        u["error"],
                        self.retry_initial_s,
                        self.retry_max_s,
                    )
                    self.failed.append({"event": key, "error": str(e)[:300]})
                else:
                    self.log.error("event %s still not written after %d attempts: %s", key, u["attempts"], u["error"])
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
        if self.unwritten.pop(key, None) is not None:
            self.log.warning("event %s written after earlier failures", key)
        self.pending.pop(key, None)
        self._save()
        self.written[key] = req
        summary = {
            "event": key,
            "path": ev.path,
            "trades": ev.event["trades"],
            "summary": ev.event["summary"],
            "verdict": ev.analysis["across"]["verdict"],
            "ms": round((time.perf_counter() - clock) * 1e3, 1),
        }
        self.done.append(summary)
        self.log.info(
            "event %s written: %d trades, %s; %s", key, ev.event["trades"], ev.event["summary"], summary["verdict"]
        )

    def recapture(self, ticker: str) -> None:
        """A venue started listing `ticker` after its event was written: write the event again, so
        event.json names that venue with when it first saw the coin (issue 13)."""
        import asyncio

        for key, req in list(self.written.items()):
            if req.ticker.upper() != ticker.upper() or key in self.pending:
                continue

            async def again(key: str = key, req: CaptureRequest = req) -> None:
                try:
                    ev = await asyncio.to_thread(self._capture, req)
                    self.log.info(
                        "event %s written again (a venue listed %s later): %s", key, ticker, ev.event["summary"]
                    )
                except Exception as e:
                    self.log.warning("capturing %s again failed: %s", key, e)

            task = asyncio.get_running_loop().create_task(again(), name=f"recapture {key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _capture(self, req: CaptureRequest) -> CapturedEvent:
        from .store import ReadOnlyStore

        with ReadOnlyStore(self.data_dir) as source:
            return capture(
                source,
                req,
                self.data_dir,
                venues=self.venues,
                thresholds=self.settings.thresholds(),
                chart=self.settings.chart,
                chart_zoom_s=self.settings.chart_zoom_s,
            )

    async def stop(self) -> None:
        import asyncio

        if self._stopped:
            return
        self._stopped = True
        for t in list(self._tasks) + ([self._save_task] if self._save_task is not None else []):
            t.cancel()
        await asyncio.gather(
            *self._tasks, *([self._save_task] if self._save_task is not None else []), return_exceptions=True
        )
        if self.unsaved_since_ns is not None:
            self._save()  # a last try; what still fails is named by `lost_at_exit`
        for key in self.lost_at_exit():
            p = self.pending[key]
            self.log.critical(
                "listing %s is not saved anywhere (%s: %s); capture it by hand once there is space: "
                "pumpwatch capture %s --at %s",
                key,
                self.pending_path,
                self.unsaved_error,
                p["ticker"],
                iso(int(p["t0_ns"])),
            )

    def lost_at_exit(self) -> list[str]:
        """The captures waiting that only memory holds (pending.json could not be written)."""
        if self.unsaved_since_ns is None:
            return []
        on_disk = _load_json(self.pending_path)
        return sorted(k for k in self.pending if not (isinstance(on_disk, dict) and k in on_disk))

    def status(self) -> dict:
        return {
            "pending": sorted(self.pending),
            "events": self.done[-20:],
            "failed": self.failed[-20:],
            "unwritten": [dict(u, since=iso(u["since_ns"])) for u in self.unwritten.values()],
            "pending_unsaved_since": iso(self.unsaved_since_ns) if self.unsaved_since_ns is not None else None,
            "pending_unsaved_error": self.unsaved_error,
        }


def open_source(source: str | None, data_dir: str | os.PathLike[str]) -> TradeSource:
    """The recording to read: a data directory (a reader that takes no lock, safe beside a running
    daemon), or a PostgreSQL replica (`postgresql://...`, see pumpwatch.sink; its schema from
    PUMPWATCH_PG_SCHEMA, default `pumpwatch`)."""
    if source and source.startswith(("postgresql://", "postgres://")):
        try:
            from .sink.postgres import PostgresSource
        except ImportError as e:
            raise CaptureError(
                f"reading from PostgreSQL needs its driver: pip install 'pumpwatch[postgres]' ({e})"
            ) from None
        return PostgresSource(source, schema=os.environ.get("PUMPWATCH_PG_SCHEMA", "pumpwatch"))
    from .store import ReadOnlyStore

    path = os.fspath(source or data_dir)
    if not os.path.isdir(os.path.join(path, "log")):
        raise CaptureError(f"{path} holds no recording (no log/ folder); pass the --data-dir of a `pumpwatch run`")
    return ReadOnlyStore(path)
