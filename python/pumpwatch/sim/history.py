"""The simulated past for `pumpwatch history`: every KRW listing the Upbit stand-in announced
before now gets its window on the venues' tapes, kept as each real venue keeps it (how far back,
which REST serves it: pumpwatch.sim.venues, docs/VENUES.md §11 item 4).

    upbit.add_year(listings=24)                 # a year of notices, listings among them
    truth = seed_history(simulator, upbit)      # {(ticker, t0_ns): venues that list the coin}
"""

from __future__ import annotations

import random
import time
from typing import Any

#: Share of venues (beyond Binance spot, which lists every coin here) that list a past coin.
LISTED_SHARE = 0.75


def seed_history(
    simulator: Any, upbit: Any, *, pump: float = 1.4, orders_per_s: float = 1.0
) -> dict[tuple[str, int], list[str]]:
    """Puts every past KRW listing of `upbit` (`krw_listings`, t0 before now) on the venues of
    `simulator`: each coin listed on Binance spot and on a seeded three quarters of the others,
    with its trades around t0 in their history. Returns which venues list each (ticker, t0)."""
    now = time.time_ns()
    out: dict[tuple[str, int], list[str]] = {}
    for _, (tickers, t0) in sorted(upbit.krw_listings.items(), key=lambda kv: kv[1][1]):
        if t0 >= now - 120 * 10**9:
            continue  # not past yet: the live market's business
        for ticker in tickers:
            rng = random.Random(f"{simulator_seed(simulator)}/{ticker}/{t0}")
            venues = [v for v in simulator.venues if v == "binance-spot" or rng.random() < LISTED_SHARE]
            for v in venues:
                simulator.venues[v].add_past_listing(ticker, t0, pump, orders_per_s=orders_per_s)
            out[(ticker, t0)] = venues
    return out


def simulator_seed(simulator: Any) -> int:
    return next(iter(simulator.venues.values())).seed if simulator.venues else 0
