"""TLS as in production: the simulator serves wss:// and https:// with a certificate from a test
CA made at start; the recorder verifies certificates as against the venues. Untrusted, it refuses
to connect and says so (venue, host, reason) in /status and the log; with `[tls] ca_file` naming
the CA, it records every trade the simulator sent."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import pumpwatch
from pumpwatch.collector import Collector
from pumpwatch.config import Config, ConfigError, TlsSettings, VenueSettings, from_dict
from pumpwatch.connection import http_fetch
from pumpwatch.net import venue_fetch
from pumpwatch.sim import Simulator
from pumpwatch.venues import HttpRequest

pytestmark = pytest.mark.timeout(60)

VENUE = "binance-spot"
KEY = ("symbol", "trade_id", "price", "qty", "side", "ts_ns")


async def _record(data_dir, sim: Simulator, ca_file: str, seconds: float, *, symbols=(), until=None):
    """Records for `seconds`, or until `until(venue status)` holds (at most 20 s: a loaded machine)."""
    urls = sim.urls()[VENUE]
    cfg = Config(
        data_dir=str(data_dir),
        metrics_address="127.0.0.1:0",
        venues={
            v: VenueSettings(
                enabled=v == VENUE,
                symbols=tuple(symbols) if v == VENUE else (),
                ws_url=urls["ws_origin"] if v == VENUE else "",
                rest_url=urls["rest_url"] if v == VENUE else "",
            )
            for v in pumpwatch.VENUES
        },
        tls=TlsSettings(ca_file=ca_file),
    )
    store = pumpwatch.Store(data_dir)
    collector = Collector(cfg, store)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    loop = asyncio.get_running_loop()
    deadline, least = loop.time() + (20.0 if until else seconds), loop.time() + seconds
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        status = collector.status()
        if until is not None and until(status["venues"][VENUE]) and loop.time() >= least:
            break
    status = collector.status()
    stop.set()
    await task
    store.close()
    return status


def test_simulator_serves_tls_only_to_clients_that_trust_its_ca():
    async def go():
        async with Simulator([VENUE], seed=1, tls=True, trades_per_s=0) as sim:
            urls = sim.urls()[VENUE]
            assert urls["ws_url"].startswith("wss://127.0.0.1:") and urls["rest_url"].startswith("https://127.0.0.1:")
            assert urls["ca_file"] == sim.ca_file
            assert Path(sim.ca_file).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
            request = HttpRequest("GET", "/api/v3/exchangeInfo")
            body = await venue_fetch(sim.ca_file)(urls["rest_url"], request)
            assert b'"symbols"' in body
            with pytest.raises(OSError, match=r"TLS certificate of 127\.0\.0\.1:\d+ not trusted"):
                await http_fetch(urls["rest_url"], request)  # the system's CAs only

    asyncio.run(go())


def test_untrusted_certificate_is_refused_and_named_in_status_and_log(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pumpwatch")

    async def go():
        async with Simulator([VENUE], seed=1, tls=True, trades_per_s=50) as sim:
            # Symbols given: no discovery, so the WebSocket connect is what meets the certificate.
            status = await _record(tmp_path / "d", sim, "", 1.0, symbols=["BTCUSDT"], until=lambda v: v["last_error"])
            return status, sim.venues[VENUE].client_count, sim.urls()[VENUE]["ws_origin"]

    status, clients, origin = asyncio.run(go())
    host = origin.removeprefix("wss://")
    venue = status["venues"][VENUE]
    assert venue["connections_up"] == 0 and clients == 0
    error = venue["last_error"]
    assert f"TLS certificate of {host} not trusted (unable to get local issuer certificate)" in error, error
    assert "[tls] ca_file" in error
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(VENUE in m and host in m and "not trusted" in m for m in logged), logged
    reader = pumpwatch.Store.open_readonly(tmp_path / "d")
    assert reader.query(include_non_trades=False).num_rows == 0


def test_with_the_ca_configured_every_trade_sent_is_recorded(tmp_path):
    async def go():
        async with Simulator([VENUE], seed=2, tls=True, trades_per_s=80, backlog=20) as sim:
            status = await _record(tmp_path / "d", sim, sim.ca_file, 4.0)
            return status, sim.venues[VENUE].sent_trades()

    status, sent = asyncio.run(go())
    assert status["venues"][VENUE]["last_error"] == ""
    stored = pumpwatch.Store.open_readonly(tmp_path / "d").query(include_non_trades=False).to_pylist()
    rows = {tuple(r[k] for k in KEY) for r in stored if r["venue"] == VENUE}
    ids: dict[str, list[int]] = {}
    for r in rows:
        ids.setdefault(r[0], []).append(int(r[1]))
    in_span = {
        tuple(t[k] for k in KEY)
        for t in sent
        if t["symbol"] in ids and min(ids[t["symbol"]]) <= int(t["trade_id"]) <= max(ids[t["symbol"]])
    }
    assert len(in_span) > 100
    assert in_span <= rows, f"{len(in_span - rows)} trades sent over TLS but not stored"


def test_ca_file_is_checked_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"tls\.ca_file .* does not exist"):
        from_dict({"tls": {"ca_file": str(tmp_path / "missing.pem")}})
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a readable PEM file"):
        from_dict({"tls": {"ca_file": str(bad)}})
    with pytest.raises(ConfigError, match=r"unknown setting tls\.verify"):
        from_dict({"tls": {"verify": False}})  # there is no switch that turns verification off


def test_untrusted_certificate_on_the_instrument_list_names_the_host(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pumpwatch")

    async def go():
        async with Simulator([VENUE], seed=1, tls=True, trades_per_s=50) as sim:
            # Discovery over REST meets the certificate first.
            status = await _record(tmp_path / "d", sim, "", 0.5, until=lambda v: "not trusted" in v["last_error"])
            return status, sim.urls()[VENUE]["rest_url"]

    status, rest_url = asyncio.run(go())
    host = rest_url.removeprefix("https://")
    venue = status["venues"][VENUE]
    assert venue["state"].startswith("down: instrument list failed") and venue["connections"] == 0
    assert f"TLS certificate of {host} not trusted (unable to get local issuer certificate)" in venue["last_error"]
    logged = [r.getMessage() for r in caplog.records]
    assert any(VENUE in m and f"{host} not trusted" in m for m in logged), logged


def test_upbit_watcher_verifies_the_stand_in_and_triggers_with_the_ca(tmp_path):
    from pumpwatch.sim.upbit import SimNotice, SimUpbit
    from pumpwatch.tls import TestCA
    from pumpwatch.upbit import Backoff, UpbitWatcher

    async def watch(sim: SimUpbit, data_dir, ca_file: str) -> tuple[list, dict]:
        backoff = Backoff(initial_s=0.2, max_s=0.5, jitter=0.0)
        w = UpbitWatcher(
            data_dir,
            base_url=sim.base_url,
            market_url="",
            seed=1,
            interval_s=0.1,
            request_timeout_s=1.0,
            rate_backoff=backoff,
            error_backoff=backoff,
            ca_file=ca_file,
        )
        async with w:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while w.triggers.empty() and loop.time() < deadline and (ca_file or w.metrics().get("errors", 0) < 3):
                await asyncio.sleep(0.05)
            metrics = w.metrics()
        out = []
        while not w.triggers.empty():
            out.append(w.triggers.get_nowait())
        return out, metrics

    async def go():
        with TestCA() as ca:
            async with SimUpbit(seed=3, min_interval_s=0.05, tls=ca) as sim:
                assert sim.base_url.startswith("https://127.0.0.1:")
                sim.schedule(SimNotice("제로지(0G) KRW 마켓 디지털 자산 추가", expect=("0G",)), 0.2)
                refused = await watch(sim, tmp_path / "a", "")
                trusted = await watch(sim, tmp_path / "b", ca.ca_file)
                return refused, trusted, [s for s in sim.served if s.path == "/api/v1/announcements"]

    (refused, refused_metrics), (trusted, _), served = asyncio.run(go())
    assert refused == [] and refused_metrics.get("errors", 0) >= 3, refused_metrics  # untrusted: nothing read
    assert "certificate" in (refused_metrics["last_backoff_reason"] or ""), refused_metrics
    assert [t.tickers for t in trusted] == [("0G",)]
    assert served, "the trusted watcher's polls reached the stand-in over TLS"
