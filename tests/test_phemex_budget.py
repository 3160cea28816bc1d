"""Issue 11 item 4: Phemex allows 5 concurrent connections per client on its one gateway, shared
by spot and contracts (docs/VENUES.md §9.1). The simulator refuses the sixth across both markets; the
recorder, given more symbols than fit, records the ones with the highest 24 h turnover (not the
first by name) within 5 connections in total and names the rest in its status."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pumpwatch.sim import SimVenue
from pumpwatch.sim.server import share_phemex_gateway
from pumpwatch.venues import get
from test_lifecycle import Run, wait_until

pytestmark = pytest.mark.timeout(120)

SPOT, PERP = "phemex-spot", "phemex-perp"
# Known assets (weights 0.4 ... 0.1) and small caps (0.15): by turnover, not by name.
BASES = ["BTC", "ETH", "SOL", "DOGE", "AAA", "ZZZ", "MMM", "QQQ"]


def _render(status: dict) -> str:
    from pumpwatch.dashboard import render

    return "\n".join(render(status, 220))


def test_the_simulator_refuses_the_sixth_connection_across_both_markets():
    async def go():
        spot, perp = SimVenue(SPOT, trades_per_s=1.0), SimVenue(PERP, trades_per_s=1.0)
        share_phemex_gateway(spot, perp)
        async with spot, perp:
            socks = []
            for i in range(5):
                socks.append(await connect((spot if i % 2 else perp).ws_url or (spot if i % 2 else perp).ws_origin))
            with pytest.raises(InvalidStatus) as refused:
                await connect(spot.ws_origin)
            assert refused.value.response.status_code == 429
            await socks[0].close()
            await asyncio.sleep(0.1)
            socks.append(await connect(perp.ws_origin))  # a slot freed is a slot again
            for s in socks[1:]:
                await s.close()

    asyncio.run(go())


def test_more_symbols_than_the_budget_records_the_top_turnover_ones_within_five_connections(tmp_path):
    # Two symbols per connection (instead of 20) keeps the test small: 5 connections = 10 slots
    # for 16 symbols across both markets.
    specs = {v: dataclasses.replace(get(v), max_streams_per_connection=2) for v in (SPOT, PERP)}

    async def go():
        spot = SimVenue(SPOT, seed=5, trades_per_s=8.0, symbols=BASES)
        perp = SimVenue(PERP, seed=5, trades_per_s=8.0, symbols=BASES)
        share_phemex_gateway(spot, perp)
        async with spot, perp:
            sims = {SPOT: spot, PERP: perp}
            async with Run(tmp_path / "d", sims, specs=specs, discovery_refresh_s=0) as run:
                assert await wait_until(
                    lambda: run.status(SPOT)["connections_up"] + run.status(PERP)["connections_up"] >= 5, 15
                )
                await asyncio.sleep(1.5)
                subscribed = {v: {s for sh in run.recorder(v).shards for s in sh.symbols} for v in sims}
                statuses = {v: run.status(v) for v in sims}
                dashboard = _render({**run.collector.status(), "log_bytes": 0, "disk_free_bytes": 0})
                stored = {v: {r["symbol"] for r in run.stored(v)} for v in sims}
            served = [(int(t), v, s) for v, sim in sims.items() for s, t in sim.protocol.turnover_served.items()]
            top = sorted(served, reverse=True)[:10]
            want = {v: {s for _, vv, s in top if vv == v} for v in sims}
            assert subscribed == want, "the ten symbols with the highest 24 h turnover across both markets"
            assert want != {v: set(sorted(s for _, vv, s in served if vv == v)[:5]) for v in sims}, "not by name"
            assert len(spot.protocol.gateway) <= 5 and spot.protocol.refused == 0, "never over the budget"
            for v in sims:
                left = sorted({s for _, vv, s in served if vv == v} - want[v])
                assert statuses[v]["not_recorded_symbols"] == left
                assert f"{len(left)} not recorded" in statuses[v]["state"]
                assert stored[v] <= want[v] and stored[v], v
                assert f"{v}  {len(left)} not recorded (connection budget): {', '.join(left)}" in dashboard
            run.store.close()

    asyncio.run(go())
