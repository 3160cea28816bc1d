"""The seeded market behind a simulated venue: instruments, taker orders and their fills, trade ids.

Every number is an integer count of the instrument's smallest unit (a price in ticks' decimals, a
quantity in lots' decimals), so the text a venue sends is exact at its tick and lot size and never
passes through a float. Randomness comes from one `random.Random` per venue and symbol, seeded from
the simulator seed, so the same seed gives the same trades (ids, prices, sizes, sides) in the same
order; only timestamps come from the wall clock.

A taker order sweeps one or more price levels; each level is filled by one or more maker orders;
each fill is one trade with its own id. How fills become frames (one per fill, one per level with a
`count`/`range`, one per order, one per 20 ms batch) is the venue's business (venues.py); the id
semantics of each venue are here, in the `IdScheme` classes.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------
# Exact decimal text


def places_of(text: str) -> int:
    """Digits after the point: `"0.010"` -> 3, `"1"` -> 0."""
    return len(text.partition(".")[2])


def to_units(text: str, places: int) -> int:
    """`"0.01"` at 4 places -> 100. The text must not have more places than asked for."""
    whole, _, frac = text.partition(".")
    if len(frac) > places:
        raise ValueError(f"{text!r} has more than {places} decimal places")
    return int(whole or "0") * 10**places + int(frac.ljust(places, "0") or "0")


def units_text(units: int, places: int, pad: int | None = None) -> str:
    """`units` x 10^-places as decimal text. `pad=None` trims trailing zeros (`"65140.5"`, `"77474"`);
    `pad=n` (n >= places) writes exactly n decimals (`"107407.88000000"`)."""
    if units < 0:
        return "-" + units_text(-units, places, pad)
    if pad is not None:
        units *= 10 ** (pad - places)
        places = pad
    if places == 0:
        return str(units)
    digits = str(units).rjust(places + 1, "0")
    whole, frac = digits[:-places], digits[-places:]
    if pad is None:
        frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


# ---------------------------------------------------------------------------------------------
# Assets and instruments


@dataclass(frozen=True)
class Asset:
    """What an asset looks like everywhere: its starting price, tick, lot and share of activity.

    `contract` gives, per derivatives venue that quotes in contracts, (base units per contract,
    contracts per lot) - OKX `ctVal`/`lotSz`, Gate `quanto_multiplier`, KuCoin `multiplier`.
    """

    base: str
    price: str
    tick: str
    lot: str
    weight: float
    contract: dict[str, tuple[str, str]] = field(default_factory=dict)


ASSETS: dict[str, Asset] = {
    a.base: a
    for a in (
        Asset(
            "BTC",
            "65000.0",
            "0.1",
            "0.00001",
            0.4,
            {"okx-swap": ("0.01", "0.01"), "gate-futures": ("0.0001", "1"), "kucoin-futures": ("0.001", "1")},
        ),
        # Gate ETH and SOL are decimal-enabled contracts (`enable_decimal`): fills of 1.7 or 0.25
        # contracts happen, and only `X-Gate-Size-Decimal: 1` shows them (VENUES §8).
        Asset(
            "ETH",
            "1900.00",
            "0.01",
            "0.0001",
            0.3,
            {"okx-swap": ("0.1", "0.01"), "gate-futures": ("0.01", "0.1"), "kucoin-futures": ("0.01", "1")},
        ),
        Asset(
            "SOL",
            "77.000",
            "0.001",
            "0.01",
            0.2,
            {"okx-swap": ("1", "0.01"), "gate-futures": ("1", "0.01"), "kucoin-futures": ("0.1", "1")},
        ),
        Asset(
            "DOGE",
            "0.10000",
            "0.00001",
            "1",
            0.1,
            {"okx-swap": ("1000", "0.01"), "gate-futures": ("10", "1"), "kucoin-futures": ("100", "1")},
        ),
    )
}
DEFAULT_BASES = tuple(ASSETS)


def asset_for(base: str) -> Asset:
    """A catalogue asset, or a small-cap one for any other ticker (`0G`, a new listing)."""
    if base in ASSETS:
        return ASSETS[base]
    return Asset(
        base,
        "0.1000",
        "0.0001",
        "0.1",
        0.15,
        {"okx-swap": ("10", "0.1"), "gate-futures": ("1", "1"), "kucoin-futures": ("1", "1")},
    )


@dataclass
class Instrument:
    """One venue's market for one asset, with the venue's number formatting.

    Prices are integers at `price_places` decimals, quantities at `qty_places` (in contracts where
    the venue quotes contracts). `price_pad`/`qty_pad`: None trims trailing zeros, n writes n
    decimals (Binance spot writes 8, Bybit linear and Binance USDⓈ-M write the tick's decimals).
    """

    venue: str
    symbol: str
    base: str
    quote: str
    price_places: int
    tick_units: int
    qty_places: int
    lot_units: int
    start_price_units: int
    weight: float
    contract_value: str | None = None  # base units per contract, None on spot
    price_pad: int | None = None
    qty_pad: int | None = None
    listed_at_ns: int | None = None  # None: listed before the simulator started
    pump: float | None = None  # a scheduled listing's (or pump's) price multiple
    pump_at_ns: int | None = None  # when the pump starts, if not at the listing (an Upbit announcement)
    delisted_at_ns: int | None = None  # from then on: no trades; the list drops it or shows it closed
    # From `halted_at_ns` until `resumes_at_ns`: no trades, listed in the venue's halt state,
    # subscribable (SimVenue.halt); then it trades again.
    halted_at_ns: int | None = None
    resumes_at_ns: int | None = None
    # From then on in the instrument list in the venue's pre-trading state (subscribable, no trades)
    # until `listed_at_ns` opens it (docs/VENUES.md §12); None: it appears when it opens.
    preopen_at_ns: int | None = None

    @property
    def tick(self) -> str:
        return units_text(self.tick_units, self.price_places)

    @property
    def lot(self) -> str:
        return units_text(self.lot_units, self.qty_places)

    def price_text(self, units: int) -> str:
        return units_text(units, self.price_places, self.price_pad)

    def qty_text(self, units: int) -> str:
        return units_text(units, self.qty_places, self.qty_pad)

    def listed(self, now_ns: int) -> bool:
        """On the instrument list (trading or pre-trading): a subscription to it is accepted."""
        if self.delisted_at_ns is not None and now_ns >= self.delisted_at_ns:
            return False
        if self.preopen_at_ns is not None and now_ns >= self.preopen_at_ns:
            return True
        return self.listed_at_ns is None or now_ns >= self.listed_at_ns

    def delisted(self, now_ns: int) -> bool:
        """Delisted: trades no more, not subscribable (the venue's list drops it or keeps it closed)."""
        return self.delisted_at_ns is not None and now_ns >= self.delisted_at_ns

    def halted(self, now_ns: int) -> bool:
        """Listed and subscribable, trading stopped for now (it resumes)."""
        if self.halted_at_ns is None or now_ns < self.halted_at_ns:
            return False
        return self.resumes_at_ns is None or now_ns < self.resumes_at_ns

    def pre_trading(self, now_ns: int) -> bool:
        """Listed, not open yet: the venue's list shows its pre-trading state."""
        return self.listed(now_ns) and self.listed_at_ns is not None and now_ns < self.listed_at_ns


def make_instrument(
    venue: str,
    symbol: str,
    asset: Asset,
    *,
    quote: str = "USDT",
    contracts: bool = False,
    price_pad: int | None = None,
    qty_pad: int | None = None,
    pad_to_tick: bool = False,
) -> Instrument:
    """The instrument of `asset` on `venue`; `contracts` quotes sizes in the asset's contracts there."""
    price_places = places_of(asset.tick)
    if contracts:
        contract_value, lot = asset.contract[venue]
    else:
        contract_value, lot = None, asset.lot
    qty_places = places_of(lot)
    if pad_to_tick:
        price_pad, qty_pad = price_places, qty_places
    return Instrument(
        venue=venue,
        symbol=symbol,
        base=asset.base,
        quote=quote,
        price_places=price_places,
        tick_units=to_units(asset.tick, price_places),
        qty_places=qty_places,
        lot_units=to_units(lot, qty_places),
        start_price_units=to_units(asset.price, price_places),
        weight=asset.weight,
        contract_value=contract_value,
        price_pad=price_pad,
        qty_pad=qty_pad,
    )


# ---------------------------------------------------------------------------------------------
# Fills


@dataclass(slots=True)
class Fill:
    """One trade (or, with `placeholder`, a Binance USDⓈ-M `X=NA` record that only spends an id).

    `order` numbers the taker order within its symbol, `level` the price level within the order:
    fills sharing both are what OKX `trades` and Gate `spot.trades` aggregate into one message.
    `num_id` is the id as an integer where the venue's ids are numeric (for REST paging), and
    `extra` holds what else the venue stamps on it (Bybit `seq`, KuCoin `sequence`, order ids...).
    """

    symbol: str
    order: int
    level: int
    side: str  # the taker's: "buy" or "sell"
    price: int
    qty: int
    ts_ns: int = 0
    trade_id: str = ""
    num_id: int | None = None
    placeholder: bool = False
    rpi: bool = False
    extra: dict = field(default_factory=dict)


# Shape of a taker order: how many price levels it sweeps and how many makers fill each level.
LEVEL_WEIGHTS = (0.85, 0.12, 0.03)  # 1, 2 or 3 levels
EXTRA_MAKER_P = 0.25  # each further maker at a level, up to MAX_MAKERS
MAX_MAKERS = 5
MEAN_FILLS_PER_ORDER = sum((i + 1) * w for i, w in enumerate(LEVEL_WEIGHTS)) * sum(
    EXTRA_MAKER_P**k for k in range(MAX_MAKERS)
)
# Typical order notional (USDT) and per-order price volatility (fraction of price).
MEDIAN_NOTIONAL = 400.0
ORDER_VOLATILITY = 0.00005
PUMP_RAMP_S = 20.0  # a listing reaches its pump price over this long
PUMP_RATE = 8.0  # and trades this many times its normal rate at first, decaying over PUMP_RAMP_S


class Tape:
    """One instrument's market: random-walk price, taker orders and the fills' ids.

    `rng` is seeded from (seed, venue, symbol) alone, so a symbol's trades do not depend on what
    else the venue lists or on timing.
    """

    def __init__(self, inst: Instrument, seed: int, ids: IdScheme):
        self.inst = inst
        self.rng = random.Random(f"{seed}/{inst.venue}/{inst.symbol}")
        self.ids = ids
        ids.start(self.rng, inst)
        self.mid = inst.start_price_units // inst.tick_units  # in ticks
        self.orders = 0
        self.last_ts_ns = 0
        # Poisson arrivals in "activity time": one unit of it is one expected order, whatever the
        # current rate, so bursts change only how fast activity time runs, not the draws.
        # Arrivals draw from their own generator: how many orders fall into one clock tick
        # depends on timing, and must not shift the draws that shape the orders.
        self.arrivals = random.Random(f"{seed}/{inst.venue}/{inst.symbol}/arrivals")
        self.activity = 0.0
        self.next_arrival = self.arrivals.expovariate(1.0)
        contract = float(inst.contract_value or 1)
        price = inst.start_price_units / 10**inst.price_places
        lot = inst.lot_units / 10**inst.qty_places * contract
        self._median_lots = max(1.0, MEDIAN_NOTIONAL / (price * lot))
        self._sigma_ticks = max(0.6, ORDER_VOLATILITY * inst.start_price_units / inst.tick_units)

    def _pump_start_ns(self) -> int | None:
        inst = self.inst
        if inst.pump is None:
            return None
        return inst.pump_at_ns if inst.pump_at_ns is not None else inst.listed_at_ns

    def intensity(self, now_ns: int) -> float:
        """Rate multiple from a pump: PUMP_RATE once it starts, decaying to 1; 1 before."""
        start = self._pump_start_ns()
        if start is None or now_ns < start:
            return 1.0
        age = (now_ns - start) / 1e9
        return 1.0 + (PUMP_RATE - 1.0) * math.exp(-age / PUMP_RAMP_S)

    def _pump_target(self, ts_ns: int) -> float | None:
        start_ns, pump = self._pump_start_ns(), self.inst.pump  # no pump: no start either
        if start_ns is None or pump is None or ts_ns < start_ns:
            return None
        progress = min(1.0, max(0.0, (ts_ns - start_ns) / 1e9 / PUMP_RAMP_S))
        start = self.inst.start_price_units / self.inst.tick_units
        return start * (1.0 + (pump - 1.0) * progress)

    def next_order(self, ts_ns: int, resolution_ns: int = 1, strictly_increasing: bool = False) -> list[Fill]:
        """The fills of the next taker order at `ts_ns` (truncated to the venue's resolution and
        kept monotonic per symbol), with ids assigned."""
        rng = self.rng
        ts = ts_ns - ts_ns % resolution_ns
        floor = self.last_ts_ns + (resolution_ns if strictly_increasing else 0)
        ts = max(ts, floor)
        self.last_ts_ns = ts
        target = self._pump_target(ts)
        buy_p = 0.5
        step = rng.gauss(0.0, self._sigma_ticks)
        if target is not None:
            step += (target - self.mid) * 0.2
            buy_p = 0.7 if target > self.mid else 0.5
        self.mid = max(10, self.mid + round(step))
        side = "buy" if rng.random() < buy_p else "sell"
        r, levels = rng.random(), 1
        while levels < len(LEVEL_WEIGHTS) and r >= sum(LEVEL_WEIGHTS[:levels]):
            levels += 1
        self.orders += 1
        fills: list[Fill] = []
        direction = 1 if side == "buy" else -1
        for level in range(levels):
            price = (self.mid + direction * level) * self.inst.tick_units
            makers = 1
            while makers < MAX_MAKERS and rng.random() < EXTRA_MAKER_P:
                makers += 1
            for _ in range(makers):
                lots = max(1, round(self._median_lots * rng.lognormvariate(0.0, 1.0)))
                fills.append(Fill(self.inst.symbol, self.orders, level, side, price, lots * self.inst.lot_units, ts))
        if strictly_increasing:  # one ns apart, so no two fills ever share a content key
            for i, f in enumerate(fills):
                f.ts_ns = ts + i
            self.last_ts_ns = ts + len(fills) - 1
        if direction > 0:
            self.mid += levels - 1  # the book moved where the order swept it
        else:
            self.mid = max(10, self.mid - (levels - 1))
        return self.ids.assign(rng, fills)


# ---------------------------------------------------------------------------------------------
# Trade id semantics, one class per kind (VENUES §0 "Trade id consecutive per symbol?")


class IdScheme:
    """Stamps ids on an order's fills. The default: no id at all (Phemex)."""

    def start(self, rng: random.Random, inst: Instrument) -> None:
        pass

    def assign(self, rng: random.Random, fills: list[Fill]) -> list[Fill]:
        return fills


class ConsecutiveIds(IdScheme):
    """Per-symbol consecutive integers (Binance spot `t`, OKX `tradeId`, Gate `id_market` and
    futures `id`). With `placeholder_p`, an `X=NA` record spends an id before a fill now and then
    (Binance USDⓈ-M: ids stay consecutive on the stream only if those frames are counted)."""

    def __init__(self, low: int, high: int, placeholder_p: float = 0.0, rpi_p: float = 0.0):
        self.low, self.high = low, high
        self.placeholder_p = placeholder_p
        self.rpi_p = rpi_p
        self.next_id = 0

    def start(self, rng, inst):
        self.next_id = rng.randrange(self.low, self.high)

    def _take(self, fill: Fill) -> Fill:
        fill.num_id = self.next_id
        fill.trade_id = str(self.next_id)
        self.next_id += 1
        return fill

    def assign(self, rng, fills):
        out = []
        for f in fills:
            if self.placeholder_p and rng.random() < self.placeholder_p:
                out.append(self._take(Fill(f.symbol, f.order, f.level, "sell", 0, 0, f.ts_ns, placeholder=True)))
            f.rpi = self.rpi_p > 0 and rng.random() < self.rpi_p
            out.append(self._take(f))
        return out


class BybitSpotIds(IdScheme):
    """19-digit numeric ids with a per-symbol prefix (2290... BTCUSDT, 2280... ETHUSDT) that skip
    now and then with no disconnect; `seq` is shared by the fills of one match (VENUES §3.2)."""

    HOLE_P = 0.05

    def start(self, rng, inst):
        self.next_id = (2200 + rng.randrange(10, 100)) * 10**15 + rng.randrange(10**9, 10**10)
        self.seq = rng.randrange(10**11, 10**12)

    def assign(self, rng, fills):
        self.seq += rng.randrange(1, 500)
        for f in fills:
            if rng.random() < self.HOLE_P:
                self.next_id += rng.randrange(2, 15)
            f.num_id = self.next_id
            f.trade_id = str(self.next_id)
            f.extra["seq"] = self.seq
            f.rpi = rng.random() < 0.02
            self.next_id += 1
        return fills


class BybitLinearIds(IdScheme):
    """UUID ids (no order to check) and a `seq` shared by the fills of one match (VENUES §3.2)."""

    def start(self, rng, inst):
        self.seq = rng.randrange(10**11, 10**12)

    def assign(self, rng, fills):
        self.seq += rng.randrange(1, 5000)
        for f in fills:
            f.trade_id = str(uuid.UUID(int=rng.getrandbits(128), version=5))
            f.extra["seq"] = self.seq
            f.rpi = rng.random() < 0.02
        return fills


def _object_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


class KucoinIds(IdScheme):
    """`sequence` increases but skips values spent on order-book events; `tradeId` is the
    sequence (newer symbols, and futures) or a 24-hex ObjectId (older spot symbols) (VENUES §5, §6).
    Maker and taker order ids ride along in `extra`: ObjectIds on spot, 18-digit numbers on
    futures (`"247822202957807616"`)."""

    def __init__(self, numeric: bool, numeric_orders: bool = False):
        self.numeric = numeric
        self.order_id = (lambda rng: str(rng.randrange(10**17, 10**18))) if numeric_orders else _object_id

    def start(self, rng, inst):
        self.sequence = rng.randrange(10**12, 10**13) if not self.numeric else rng.randrange(10**15, 10**16)
        self.object_id = rng.getrandbits(64) << 32

    def assign(self, rng, fills):
        taker = self.order_id(rng)
        for f in fills:
            self.sequence += rng.randrange(1, 5)
            f.extra["sequence"] = self.sequence
            f.extra["taker"] = taker
            f.extra["maker"] = self.order_id(rng)
            # A correct parser keys KuCoin trades on `sequence` (REST rows carry only it); the
            # frame's `tradeId` is the sequence or, on older spot symbols, an ObjectId.
            f.num_id = self.sequence
            f.trade_id = str(self.sequence)
            if self.numeric:
                f.extra["trade_id_field"] = f.trade_id
            else:
                self.object_id += rng.randrange(1, 3)
                f.extra["trade_id_field"] = f"{self.object_id:024x}"
        return fills


class ContentIds(IdScheme):
    """No trade id at all (Phemex): the parsers key a trade by its content,
    `<ts_ns>:<b|s>:<price>:<qty>` with the decimal text they produce. Timestamps are kept strictly
    increasing per symbol (`Tape.next_order(strictly_increasing=True)`) so no two fills share a key."""

    def start(self, rng, inst):
        self.inst = inst

    def assign(self, rng, fills):
        for f in fills:
            f.trade_id = f"{f.ts_ns}:{f.side[0]}:{self.inst.price_text(f.price)}:{self.inst.qty_text(f.qty)}"
        return fills
