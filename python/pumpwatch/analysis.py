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
from typing import Any

import pyarrow as pa

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
    t = format(d, "f")
    return t


def analyse_venue(prices: list[str], qtys: list[str], sides: list[str], ts: list[int], *, t0_ns: int,
                  price_divisor: list[int], qty_factor: list[Decimal], symbols: list[str],
                  thresholds: dict, reference: tuple[Decimal, int, str] | None = None) -> dict[str, Any]:
    """The measures of one venue over trades in exchange-time order (see the module doc).
    `reference`: the last trade before the window (price per asset unit, time, symbol), for a
    venue with no trade between the window's start and t0."""
    move, pump = Decimal(str(thresholds["move_pct"])), Decimal(str(thresholds["pump_pct"]))
    ref, ref_ts, ref_symbol = reference if reference else (None, None, None)
    before = {"trades": 0, "base": Decimal(0), "quote": Decimal(0), "buy_base": Decimal(0), "sell_base": Decimal(0), "buys": 0, "sells": 0}
    after = {"trades": 0, "base": Decimal(0), "quote": Decimal(0), "buy_base": Decimal(0), "sell_base": Decimal(0), "buys": 0, "sells": 0}
    first = peak = trough = first_move = None
    pump_up_ts = pump_down_ts = None
    for i in range(len(prices)):
        p = Decimal(prices[i])
        if price_divisor[i] != 1:
            p = p / price_divisor[i]
        base = Decimal(qtys[i]) * qty_factor[i]
        quote = p * base
        t = ts[i]
        side = sides[i]
        if t < t0_ns:
            ref, ref_ts, ref_symbol = p, t, symbols[i]
            bucket = before
        else:
            bucket = after
            if first is None:
                first = (t, p, symbols[i])
            if peak is None or p > peak[1]:
                peak = (t, p)
            if trough is None or p < trough[1]:
                trough = (t, p)
            if ref is not None and (first_move is None or pump_up_ts is None or pump_down_ts is None):
                change = (p / ref - 1) * 100
                if first_move is None and abs(change) >= move:
                    first_move = (t, "up" if change > 0 else "down", p)
                if pump_up_ts is None and change >= pump:
                    pump_up_ts = t
                if pump_down_ts is None and change <= -pump:
                    pump_down_ts = t
        bucket["trades"] += 1
        bucket["base"] += base
        bucket["quote"] += quote
        if side == "buy":
            bucket["buys"] += 1
            bucket["buy_base"] += base
        elif side == "sell":
            bucket["sells"] += 1
            bucket["sell_base"] += base

    def volume(b: dict) -> dict:
        vwap = (b["quote"] / b["base"]).quantize(_VWAP_PLACES) if b["base"] else None
        return {"trades": b["trades"], "base_volume": _text(b["base"]), "quote_volume": _text(b["quote"]),
                "buys": b["buys"], "sells": b["sells"], "buy_base_volume": _text(b["buy_base"]),
                "sell_base_volume": _text(b["sell_base"]),
                "buy_share": round(float(b["buy_base"] / b["base"]), 4) if b["base"] else None,
                "vwap": _text(vwap) if vwap is not None else None}

    out: dict[str, Any] = {
        "reference": None if ref is None else {"price": _text(ref), "ts_ns": ref_ts, "ms_before_t0": round((t0_ns - ref_ts) / 1e6, 3), "symbol": ref_symbol},
        "first_after": None if first is None else {"price": _text(first[1]), "ts_ns": first[0], "ms_after_t0": round((first[0] - t0_ns) / 1e6, 3), "symbol": first[2]},
        "peak": None if peak is None else {"price": _text(peak[1]), "ts_ns": peak[0], "ms_after_t0": round((peak[0] - t0_ns) / 1e6, 3)},
        "trough": None if trough is None else {"price": _text(trough[1]), "ts_ns": trough[0], "ms_after_t0": round((trough[0] - t0_ns) / 1e6, 3)},
        "max_rise_pct": _pct(peak[1], ref) if peak and ref else None,
        "max_fall_pct": _pct(trough[1], ref) if trough and ref else None,
        "time_to_peak_ms": round((peak[0] - t0_ns) / 1e6, 3) if peak else None,
        "first_move": None if first_move is None else {"ts_ns": first_move[0], "ms_after_t0": round((first_move[0] - t0_ns) / 1e6, 3),
                                                       "direction": first_move[1], "price": _text(first_move[2])},
        "before": volume(before),
        "after": volume(after),
        "pump_threshold_crossed_ms": None if pump_up_ts is None else round((pump_up_ts - t0_ns) / 1e6, 3),
        "dump_threshold_crossed_ms": None if pump_down_ts is None else round((pump_down_ts - t0_ns) / 1e6, 3),
    }
    out["verdict"] = _verdict(out, pump_up_ts, pump_down_ts)
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


def analyse(trades: pa.Table, mapping: dict, t0_ns: int, detected_ns: int | None = None, *,
            thresholds: dict | None = None, earlier: pa.Table | None = None) -> dict[str, Any]:
    """Per-venue measures and the cross-venue view of an event's trades (`mapping`: venue ->
    MappedInstrument list, giving each symbol's price divisor and contract size). `earlier`: trades
    before the window, where a venue without a trade between the window's start and t0 finds its
    reference price (its last one)."""
    th = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    conv = {(v, i.symbol): (int(i.base_multiplier), Decimal(i.contract_multiplier) * int(i.base_multiplier))
            for v, insts in mapping.items() for i in insts}
    cols = {n: trades.column(n).to_pylist() for n in ("venue", "symbol", "price", "qty", "side", "ts_ns")}
    rows_by_venue: dict[str, list[int]] = {}
    for i, v in enumerate(cols["venue"]):
        rows_by_venue.setdefault(v, []).append(i)
    venues: dict[str, Any] = {}
    with localcontext() as ctx:
        ctx.prec = 50
        for venue, rows in sorted(rows_by_venue.items()):
            rows.sort(key=lambda r: cols["ts_ns"][r])  # stable: ties stay in log order
            sym = [cols["symbol"][r] for r in rows]
            factors = [conv.get((venue, s), (1, Decimal(1))) for s in sym]
            reference = None
            if earlier is not None and earlier.num_rows and not any(cols["ts_ns"][r] < t0_ns for r in rows):
                reference = _last_trade(earlier, venue, conv)
            venues[venue] = analyse_venue(
                [cols["price"][r] for r in rows], [cols["qty"][r] for r in rows], [cols["side"][r] for r in rows],
                [cols["ts_ns"][r] for r in rows], t0_ns=t0_ns, price_divisor=[f[0] for f in factors],
                qty_factor=[f[1] for f in factors], symbols=sym, thresholds=th, reference=reference)
        return {"t0_ns": t0_ns, "detected_ns": detected_ns, "thresholds": th, "venues": venues,
                "across": _across(venues, th)}


def _last_trade(earlier: pa.Table, venue: str, conv: dict) -> tuple[Decimal, int, str] | None:
    best = None
    for v, sym, price, ts in zip(earlier.column("venue").to_pylist(), earlier.column("symbol").to_pylist(),
                                 earlier.column("price").to_pylist(), earlier.column("ts_ns").to_pylist()):
        if v == venue and (best is None or ts >= best[1]):
            best = (price, ts, sym)
    if best is None:
        return None
    divisor = conv.get((venue, best[2]), (1, None))[0]
    return Decimal(best[0]) / divisor, best[1], best[2]


def _across(venues: dict[str, Any], th: dict) -> dict[str, Any]:
    movers = sorted(((v["first_move"]["ts_ns"], name, v["first_move"]["direction"]) for name, v in venues.items() if v["first_move"]))
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
