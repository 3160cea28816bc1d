"""The collector against the simulator: frames dropped on the wire and disconnects leave no
hole on venues whose ids show one (every trade the simulator sent, in the span recorded, is in the
log exactly once); on venues without ids in sequence, every trade is stored or lies inside an
unfillable-gap marker."""

from __future__ import annotations

import asyncio

import pytest

import pumpwatch
from pumpwatch.collector import Collector
from pumpwatch.config import Config, VenueSettings
from pumpwatch.sim import Simulator

pytestmark = pytest.mark.timeout(120)

SEQUENCED = ["binance-spot", "binance-usdm", "okx-spot", "okx-swap", "gate-spot", "gate-futures"]
WINDOWED = ["bybit-spot", "kucoin-spot", "phemex-perp"]


async def _record(data_dir, venues, faults, seconds):
    sim = Simulator(venues, seed=3, trades_per_s=60.0, backlog=50)
    await sim.start()
    try:
        urls = sim.urls()
        cfg = Config(
            data_dir=str(data_dir),
            metrics_address="127.0.0.1:0",
            # With a key Binance USDⓈ-M fills holes with single trades (test_venue_faithful covers keyless).
            venues={
                v: VenueSettings(
                    enabled=v in venues,
                    ws_url=urls[v]["ws_origin"] if v in venues else "",
                    rest_url=urls[v]["rest_url"] if v in venues else "",
                    api_key="sim-key",
                )
                for v in pumpwatch.VENUES
            },
        )
        store = pumpwatch.Store(data_dir)
        collector = Collector(cfg, store)
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        t = 0.0
        for at, venue, fault, args in faults:
            await asyncio.sleep(at - t)
            t = at
            getattr(sim.venues[venue], fault)(*args)
        await asyncio.sleep(seconds - t)
        stop.set()
        await task
        # Let backfills still running finish their pages: the test compares the log at rest.
        status = collector.status()
        sent = {v: sim.venues[v].sent_trades() for v in venues}
        store.close()
        return status, sent
    finally:
        await sim.stop()


KEY = ("symbol", "trade_id", "price", "qty", "side", "ts_ns")


def test_dropped_frames_and_disconnects_leave_no_hole_on_sequenced_venues(tmp_path):
    faults = [
        (2.0, "binance-spot", "drop_frames", (4,)),
        (2.5, "okx-spot", "drop_frames", (3,)),
        (3.0, "gate-futures", "drop_frames", (2,)),
        (3.5, "binance-usdm", "disconnect_all", ()),
        (4.0, "gate-spot", "duplicate_frames", (5,)),
        (4.5, "okx-swap", "malformed_frames", (2,)),
    ]
    status, sent = asyncio.run(_record(tmp_path / "d", SEQUENCED, faults, 8.0))
    reader = pumpwatch.Store.open_readonly(tmp_path / "d")
    stored = reader.query(include_non_trades=False).to_pylist()
    report = []
    for venue in SEQUENCED:
        rows = [tuple(r[k] for k in KEY) for r in stored if r["venue"] == venue]
        assert len(rows) == len(set(rows)), f"{venue}: a trade stored twice"
        by_symbol: dict[str, list[int]] = {}
        for r in rows:
            by_symbol.setdefault(r[0], []).append(int(r[1]))
        expected = set()
        for t in sent[venue]:
            ids = by_symbol.get(t["symbol"])
            # The span recorded: from the first trade the recorder saw to the last.
            if ids and min(ids) <= int(t["trade_id"]) <= max(ids):
                expected.add(tuple(t[k] for k in KEY))
        missing = expected - set(rows)
        report.append(f"{venue}: {len(rows)} stored, {len(expected)} sent in span, {len(missing)} missing")
        assert not missing, f"{venue}: {len(missing)} trades lost, e.g. {sorted(missing)[:3]}"
        assert len(rows) > 50
    print("\n".join(report))
    gaps = sum(v["gaps_found"] for v in status["venues"].values())
    assert gaps >= 3 and status["ingest"]["quarantined"] == 2
    kinds = [m["kind"] for m in reader.markers().to_pylist()]
    # Every hole is closed by its backfill or named unfillable (Binance USDⓈ-M REST never serves
    # the ids its NA placeholders consumed, so a dropped placeholder leaves a named remainder).
    assert kinds.count("gap_found") == gaps
    assert kinds.count("gap_filled") + kinds.count("gap_unfillable") >= gaps
    assert "recorder_start" in kinds and "recorder_stop" in kinds and "connection_down" in kinds


def test_windowed_venues_store_every_trade_or_name_the_hole(tmp_path):
    faults = [(2.0, v, "disconnect_all", ()) for v in WINDOWED] + [(4.0, "kucoin-spot", "stall", (1.0,))]
    _status, sent = asyncio.run(_record(tmp_path / "d", WINDOWED, faults, 8.0))
    reader = pumpwatch.Store.open_readonly(tmp_path / "d")
    stored = reader.query().to_pylist()
    unfillable = [m for m in reader.markers().to_pylist() if m["kind"] == "gap_unfillable"]
    for venue in WINDOWED:
        rows = {(r["symbol"], r["trade_id"]) for r in stored if r["venue"] == venue}
        # The span recorded: from the first trade that came live (backfills reach further back,
        # to before the recorder started, which it never claimed to have) to the last.
        live = [r["ts_ns"] for r in stored if r["venue"] == venue and not r["flags"] & pumpwatch.FLAGS["BACKFILL"]]
        first_ts, last_ts = min(live), max(live)
        holes = [(m["symbol"], m["from_ts_ns"], m["to_ts_ns"]) for m in unfillable if m["venue"] == venue]
        for t in sent[venue]:
            if not first_ts <= t["ts_ns"] <= last_ts or (t["symbol"], t["trade_id"]) in rows:
                continue
            assert any(s == t["symbol"] and a <= t["ts_ns"] <= b for s, a, b in holes), (
                f"{venue}: trade {t['trade_id']} at {t['ts_ns']} neither stored nor inside an unfillable-gap marker"
            )
