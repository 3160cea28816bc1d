"""`pumpwatch.sim`: local stand-ins for the twelve venues, on 127.0.0.1 only.

Each `SimVenue` speaks its exchange's protocol as docs/VENUES.md describes it (URL paths, subscribe /
ack / error frames, heartbeats and their timeouts, trade message shapes, id semantics, REST
instrument lists and backfill with their limits), generates seeded trades, remembers exactly which
trades it sent, and injects faults on demand. `Simulator` runs several (all twelve by default).

    async with Simulator(seed=1, trades_per_s=50) as sim:
        print(sim.urls())                       # venue -> ws_url, rest_url, ws_origin
        venue = sim.venues["binance-spot"]
        venue.drop_frames(3)                    # a client must notice the hole and backfill it
        ...
        venue.sent_trades("BTCUSDT")            # the truth, as a correct parser produces it

`python -m pumpwatch.sim` serves them from the command line.
"""

from .server import Simulator, SimVenue
from .venues import VENUE_IDS, Heartbeat, SentTrade

__all__ = ["VENUE_IDS", "Heartbeat", "SentTrade", "SimVenue", "Simulator"]
