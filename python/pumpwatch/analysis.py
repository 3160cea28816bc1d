"""The pump measured: per venue and across venues, from the trades of an event window.

Per venue (its instruments of the asset together, prices per one unit of the asset, quantities in
units of the asset: `1000PEPE` prices divided by 1000, contracts multiplied by their size):
reference price (the last trade before t0), the first trade after t0, peak and trough after t0 with
their times, largest rise and largest fall from the reference in percent, time to peak, volume
(base and quote) and trade count before and after t0, the buy/sell split, VWAP before and after, the
first move past `move_pct` and its direction, and a verdict: `pump` only when the price rose
`pump_pct` above the reference *before* it ever fell `pump_pct` below it; falling that far first
is a `dump`, whatever came later (a dump is not a pump).
Across venues: which venue moved first and every other venue's lag in ms, the verdict of the
venues together, and the totals.

Prices, volumes and VWAPs are exact decimals (text); percentages and ms are rounded floats, being
measurements rather than amounts.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # numpy loads with the analysis that uses it
    import numpy as np

DEFAULT_THRESHOLDS = {
    #: A move of this many percent from the reference is a move (first mover and lead-lag); above
    #: the tick noise of a small coin, far below a listing pump.
    "move_pct": 2.0,
    #: A rise of this many percent, moving up first, is a pump (a fall as large, first, a dump).
    "pump_pct": 5.0,
}
_VWAP_PLACES = Decimal(1).scaleb(-12)


def _pct(price: Decimal, ref: Decimal) -> float:
    return round(float((price / ref - 1) * 100), 4)


def _text(d: Decimal) -> str:
    """A decimal as plain text (never exponent notation)."""
    return format(d, "f")


def _scale_of(col: pa.Array) -> int:
    """The most decimals any value of a decimal-text column has."""
    dot = pc.find_substring(col, ".")
    places = pc.if_else(pc.equal(dot, -1), 0, pc.subtract(pc.subtract(pc.utf8_length(col), dot), 1))
    return int(pc.max(places).as_py() or 0)


def _unscaled(col: pa.Array) -> tuple[list[int], int]:
    """Decimal text as exact integers at one scale: `(["0.10", "2.5"]) -> ([10, 250], 2)`. The
    cast to decimal128 parses; values are read from its 128-bit words without a Python object
    per value (values beyond 64 bits, rare, are assembled from both words)."""
    import numpy as np

    scale = _scale_of(col)
    dec = col.cast(pa.decimal128(38, scale))
    words = np.frombuffer(dec.buffers()[1], dtype=np.int64)[2 * dec.offset : 2 * (dec.offset + len(dec))]
    low, high = words[0::2], words[1::2]
    values = low.tolist()
    for i in np.flatnonzero(high != (low >> 63)).tolist():  # not a sign-extended 64-bit value
        values[i] = (int(high[i]) << 64) | (int(low[i]) & 0xFFFF_FFFF_FFFF_FFFF)
    return values, scale


def _first_at_or_past(
    prices: list[str],
    divisor: np.ndarray[Any, Any],
    approx: np.ndarray[Any, Any],
    start: int,
    threshold: Decimal,
    up: bool,
) -> int | None:
    """The first index from `start` whose exact price (per asset unit) is at or past `threshold`:
    floats find the candidates, Decimal decides, so the answer is exact."""
    import numpy as np

    guard = float(threshold)
    cand = (
        np.flatnonzero(approx[start:] >= guard * (1 - 1e-9))
        if up
        else np.flatnonzero(approx[start:] <= guard * (1 + 1e-9))
    )
    for j in cand.tolist():
        i = start + j
        p = Decimal(prices[i]) / int(divisor[i])
        if (p >= threshold) if up else (p <= threshold):
            return i
    return None


def analyse_venue(
    table: pa.Table,
    *,
    t0_ns: int,
    sizes: dict[str, tuple[int, Decimal]],
    thresholds: dict,
    reference: tuple[Decimal, int, str] | None = None,
) -> dict[str, Any]:
    """The measures of one venue's trades (see the module doc), `table` in exchange-time order.
    `sizes`: per symbol (price divisor, base units per quantity unit). `reference`: the last trade
    before the window (price per asset unit, time, symbol), for a venue with none in it before t0."""
    from itertools import compress
    from operator import mul

    import numpy as np

    move, pump = Decimal(str(thresholds["move_pct"])), Decimal(str(thresholds["pump_pct"]))
    n = table.num_rows
    ts = table.column("ts_ns").to_numpy()
    symbols = table.column("symbol").to_pylist()
    prices = table.column("price").to_pylist()
    price_col = table.column("price").combine_chunks()
    qty_col = table.column("qty").combine_chunks()
    symbol_col = table.column("symbol")
    distinct = pc.unique(symbol_col).to_pylist()
    groups = {
        s: (
            pc.equal(symbol_col, s).to_numpy(zero_copy_only=False).astype(bool)
            if len(distinct) > 1
            else np.ones(n, bool)
        )
        for s in distinct
    }
    divisor = np.ones(n, dtype=np.int64)
    for s, g in groups.items():
        divisor[g] = sizes.get(s, (1, Decimal(1)))[0]
    approx = price_col.cast(pa.float64()).to_numpy(zero_copy_only=False) / divisor
    k = int(np.searchsorted(ts, t0_ns, side="left"))  # trades [0, k) before t0, [k, n) after

    def exact(i: int) -> Decimal:
        return Decimal(prices[i]) / int(divisor[i])

    ref: Decimal | None
    if k > 0:
        ref, ref_ts, ref_symbol = exact(k - 1), int(ts[k - 1]), symbols[k - 1]
    elif reference:
        ref, ref_ts, ref_symbol = reference
    else:
        ref, ref_ts, ref_symbol = None, 0, ""  # no reference: its time and symbol are never read

    # Volumes, exact: unscaled integers, products summed as Python ints, one scale-down at the end.
    p_int, p_scale = _unscaled(price_col)
    q_int, q_scale = _unscaled(qty_col)
    notional = list(map(mul, p_int, q_int))
    side = table.column("side")
    buys = pc.equal(side, "buy").to_numpy(zero_copy_only=False).astype(bool)
    sells = pc.equal(side, "sell").to_numpy(zero_copy_only=False).astype(bool)

    def volume(lo: int, hi: int) -> dict:
        part = np.zeros(n, bool)
        part[lo:hi] = True
        base = quote = buy_base = sell_base = Decimal(0)
        for s, g in groups.items():
            bm, size = sizes.get(s, (1, Decimal(1)))
            sel = part & g
            base += size * sum(compress(q_int, sel.tolist()))
            quote += (size / bm) * sum(compress(notional, sel.tolist()))
            buy_base += size * sum(compress(q_int, (sel & buys).tolist()))
            sell_base += size * sum(compress(q_int, (sel & sells).tolist()))
        base, buy_base, sell_base = (x.scaleb(-q_scale) for x in (base, buy_base, sell_base))
        quote = quote.scaleb(-(p_scale + q_scale))
        vwap = (quote / base).quantize(_VWAP_PLACES) if base else None
        return {
            "trades": hi - lo,
            "base_volume": _text(base),
            "quote_volume": _text(quote),
            "buys": int((buys[lo:hi]).sum()),
            "sells": int((sells[lo:hi]).sum()),
            "buy_base_volume": _text(buy_base),
            "sell_base_volume": _text(sell_base),
            "buy_share": round(float(buy_base / base), 4) if base else None,
            "vwap": _text(vwap) if vwap is not None else None,
        }

    first = peak = trough = first_move = pump_up = pump_down = None
    if k < n:
        first = k
        after = approx[k:]
        # float search for the extreme, exact among the values tied with it in float
        hi_f, lo_f = after.max(), after.min()
        peak = max((k + int(j) for j in np.flatnonzero(after >= hi_f * (1 - 1e-12))), key=lambda i: (exact(i), -i))
        trough = min((k + int(j) for j in np.flatnonzero(after <= lo_f * (1 + 1e-12))), key=lambda i: (exact(i), i))
        if ref is not None:
            up_i = _first_at_or_past(prices, divisor, approx, k, ref * (1 + move / 100), True)
            down_i = _first_at_or_past(prices, divisor, approx, k, ref * (1 - move / 100), False)
            moves = [(i, d) for i, d in ((up_i, "up"), (down_i, "down")) if i is not None]
            first_move = min(moves) if moves else None
            pump_up = _first_at_or_past(prices, divisor, approx, k, ref * (1 + pump / 100), True)
            pump_down = _first_at_or_past(prices, divisor, approx, k, ref * (1 - pump / 100), False)

    def at(i: int | None, **extra: Any) -> dict | None:
        if i is None:
            return None
        return {
            "price": _text(exact(i)),
            "ts_ns": int(ts[i]),
            "ms_after_t0": round((int(ts[i]) - t0_ns) / 1e6, 3),
            **extra,
        }

    def ms(i: int | None) -> float | None:
        return None if i is None else round((int(ts[i]) - t0_ns) / 1e6, 3)

    out: dict[str, Any] = {
        "reference": None
        if ref is None
        else {
            "price": _text(ref),
            "ts_ns": ref_ts,
            "ms_before_t0": round((t0_ns - ref_ts) / 1e6, 3),
            "symbol": ref_symbol,
        },
        "first_after": at(first, symbol=symbols[first]) if first is not None else None,
        "peak": at(peak),
        "trough": at(trough),
        "max_rise_pct": _pct(exact(peak), ref) if peak is not None and ref else None,
        "max_fall_pct": _pct(exact(trough), ref) if trough is not None and ref else None,
        "time_to_peak_ms": ms(peak),
        "first_move": None if first_move is None else at(first_move[0], direction=first_move[1]),
        "before": volume(0, k),
        "after": volume(k, n),
        "pump_threshold_crossed_ms": ms(pump_up),
        "dump_threshold_crossed_ms": ms(pump_down),
    }
    out["verdict"] = _verdict(out, pump_up, pump_down)
    return out


def _verdict(v: dict, up_ts: int | None, down_ts: int | None) -> str:
    if v["reference"] is None:
        return "no reference price"
    if v["first_after"] is None:
        return "no trades after t0"
    if up_ts is not None and (down_ts is None or up_ts < down_ts):
        return "pump"
    if down_ts is not None:
        return "dump"
    return "no pump"


def analyse(
    trades: pa.Table,
    mapping: dict,
    t0_ns: int,
    detected_ns: int | None = None,
    *,
    thresholds: dict | None = None,
    earlier: pa.Table | None = None,
) -> dict[str, Any]:
    """Per-venue measures and the cross-venue view of an event's trades (`mapping`: venue ->
    MappedInstrument list, giving each symbol's price divisor and contract size). `earlier`: trades
    before the window, where a venue without a trade between the window's start and t0 finds its
    reference price (its last one)."""
    th = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    sizes = {
        v: {i.symbol: (int(i.base_multiplier), Decimal(i.contract_multiplier) * int(i.base_multiplier)) for i in insts}
        for v, insts in mapping.items()
    }
    venues: dict[str, Any] = {}
    with localcontext() as ctx:
        ctx.prec = 60
        for venue in sorted(pc.unique(trades.column("venue")).to_pylist()):
            rows = trades.filter(pc.equal(trades.column("venue"), venue))
            # exchange-time order; ties keep log order (sort_indices is stable)
            rows = rows.take(pc.sort_indices(rows, sort_keys=[("ts_ns", "ascending")]))
            reference = None
            if earlier is not None and earlier.num_rows and pc.min(rows.column("ts_ns")).as_py() >= t0_ns:
                reference = _last_trade(earlier, venue, sizes.get(venue, {}))
            venues[venue] = analyse_venue(
                rows, t0_ns=t0_ns, sizes=sizes.get(venue, {}), thresholds=th, reference=reference
            )
        return {
            "t0_ns": t0_ns,
            "detected_ns": detected_ns,
            "thresholds": th,
            "venues": venues,
            "across": _across(venues, th),
        }


def _last_trade(earlier: pa.Table, venue: str, sizes: dict) -> tuple[Decimal, int, str] | None:
    best = None
    for v, sym, price, ts in zip(
        earlier.column("venue").to_pylist(),
        earlier.column("symbol").to_pylist(),
        earlier.column("price").to_pylist(),
        earlier.column("ts_ns").to_pylist(),
        strict=False,
    ):
        if v == venue and (best is None or ts >= best[1]):
            best = (price, ts, sym)
    if best is None:
        return None
    divisor = sizes.get(best[2], (1, None))[0]
    return Decimal(best[0]) / divisor, best[1], best[2]


def _across(venues: dict[str, Any], th: dict) -> dict[str, Any]:
    movers = sorted(
        (
            (v["first_move"]["ts_ns"], name, v["first_move"]["direction"])
            for name, v in venues.items()
            if v["first_move"]
        )
    )
    leader = movers[0] if movers else None
    verdicts = {name: v["verdict"] for name, v in venues.items()}
    pumps = sorted(n for n, s in verdicts.items() if s == "pump")
    dumps = sorted(n for n, s in verdicts.items() if s == "dump")
    rises = [(v["max_rise_pct"], n) for n, v in venues.items() if v["max_rise_pct"] is not None]
    falls = [(v["max_fall_pct"], n) for n, v in venues.items() if v["max_fall_pct"] is not None]
    quote_after = sum((Decimal(v["after"]["quote_volume"]) for v in venues.values()), Decimal(0))
    quote_before = sum((Decimal(v["before"]["quote_volume"]) for v in venues.values()), Decimal(0))
    if pumps and len(pumps) > len(dumps):
        verdict = "pump"
    elif dumps and len(dumps) > len(pumps):
        verdict = "dump"
    elif pumps or dumps:
        verdict = "mixed"
    else:
        verdict = "no pump"
    return {
        "verdict": verdict,
        "pump_venues": pumps,
        "dump_venues": dumps,
        "first_mover": None if leader is None else {"venue": leader[1], "direction": leader[2], "ts_ns": leader[0]},
        "lead_lag_ms": {} if leader is None else {name: round((ts - leader[0]) / 1e6, 3) for ts, name, _ in movers},
        "max_rise": None if not rises else {"venue": max(rises)[1], "pct": max(rises)[0]},
        "max_fall": None if not falls else {"venue": min(falls)[1], "pct": min(falls)[0]},
        "trades_before": sum(v["before"]["trades"] for v in venues.values()),
        "trades_after": sum(v["after"]["trades"] for v in venues.values()),
        "quote_volume_before": _text(quote_before),
        "quote_volume_after": _text(quote_after),
    }
