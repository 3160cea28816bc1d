"""`pumpwatch history` against the simulator with the real venues' rate limits (issue 17).

Figures: events rebuilt per minute (venue REST only, and with Upbit's list paged at the watcher's
default 3 s a page), and REST requests per event per venue (median over events whose coin the
venue lists; the first event also pays each venue's instrument list), and per venue whose list
lacks the coin but whose history reaches the window (asked anyway: delisted since, or never listed). Every venue request goes through the venue's own budget from
pumpwatch.venues (docs/VENUES.md §12: Binance 6,000 weight/min, OKX history-trades 20 / 2 s, Gate 200
/ 10 s, ...), so the rates are the ones a real run gets; the simulator's windows hold `ORDERS_PER_S`
taker orders a second around t0, pumping 8x at first (a busy listing: ~1,000 trades a venue).

    PYTHONPATH=python python3 benches/bench_history.py            # prints the figures
    python3 -m pytest -q benches/bench_history.py -s
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from pumpwatch.capture import EVENTS_DIR
from pumpwatch.history import UPBIT_INTERVAL_S, HistoryRun
from pumpwatch.sim import Simulator
from pumpwatch.sim.history import seed_history
from pumpwatch.sim.upbit import SimUpbit
from pumpwatch.upbit import WatcherSettings

LISTINGS = 12
ORDERS_PER_S = 8.0


async def measure(listings: int = LISTINGS, orders_per_s: float = ORDERS_PER_S) -> dict:
    with tempfile.TemporaryDirectory() as d:
        async with Simulator(seed=7, trades_per_s=2) as sim, SimUpbit(seed=7, min_interval_s=0.01) as upbit:
            upbit.add_year(listings=listings)
            seed_history(sim, upbit, orders_per_s=orders_per_s)
            watcher = WatcherSettings(base_url=upbit.base_url, interval_s=0.02, market_url="")
            run = HistoryRun(d, watcher=watcher, venue_urls={v: s.rest_url for v, s in sim.venues.items()}, chart=True)
            clock = time.perf_counter()
            result = await run.run(time.time_ns() - 366 * 86_400 * 10**9)
            took = time.perf_counter() - clock
            # which venues listed each event's coin (today's list has it): the others were asked anyway
            listed = {
                name: {
                    v
                    for v, m in json.loads(Path(d, EVENTS_DIR, name, "event.json").read_text())[
                        "instrument_mapping"
                    ].items()
                    if m and m[0].get("source") == "instrument list"
                }
                for name in result.built
            }
    events = len(result.built)
    later = list(result.requests.items())[1:]  # the first event also paid every instrument list
    per_venue = {v: statistics.median([r[v] for n, r in later if r[v] and v in listed[n]] or [0]) for v in sim.venues}
    # a venue whose list lacks the coin, asked for its history anyway (delisted since, or never listed)
    unlisted = {
        v: statistics.median([r[v] for n, r in later if r[v] and v not in listed[n]] or [0]) for v in sim.venues
    }
    upbit_s = result.upbit_requests * UPBIT_INTERVAL_S  # at the watcher's default pace
    return {
        "events": events,
        "seconds": round(took, 2),
        "events_per_min": round(events / took * 60, 1),
        "events_per_min_with_upbit_paging": round(events / (took + upbit_s) * 60, 1),
        "upbit_pages": result.upbit_requests,
        "requests_per_event": per_venue,
        "requests_per_event_total": sum(per_venue.values()),
        "requests_per_unlisted_venue": unlisted,
        "failed": result.failed,
        "listings": len(result.listings),
    }


def test_history_rebuild_rate():
    figures = asyncio.run(measure())
    print(figures)
    assert figures["events"] == figures["listings"] >= LISTINGS and not figures["failed"]


if __name__ == "__main__":
    print(asyncio.run(measure()))
