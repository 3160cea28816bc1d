"""`pumpwatch run`: the recorder process. Opens the store, starts the collector (and, with
`--simulate`, the simulator of all twelve venues on 127.0.0.1 with a scenario of faults), serves
/status and /metrics, shows a dashboard on a terminal or logs a status line otherwise, and on
SIGTERM/SIGINT (or `--duration`) stops cleanly: connections closed, log committed and sealed."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .capture import CaptureScheduler
from .collector import Collector
from .config import Config, register_secrets
from .errors import DataDirError, disk_advice
from .redact import redact_tree
from .retention import log_bytes
from .status import disk_free, serve_status
from .store import RecorderStore, Store, disk_line

if TYPE_CHECKING:  # the simulator, the watcher and the sink load only when configured
    from .sim import Simulator
    from .sim.upbit import SimUpbit
    from .sink.postgres import PostgresSink
    from .upbit import ListingTrigger, UpbitWatcher

#: A simulator fault: seconds after start, venue, the SimVenue method, its arguments.
Fault = tuple[float, str, str, tuple[Any, ...]]
#: An Upbit notice of the scenario: seconds after start, title, the tickers it must trigger.
Notice = tuple[float, str, tuple[str, ...]]

log = logging.getLogger("pumpwatch")

#: The API key given to the simulated venues (they accept any).
SIM_API_KEY = "pumpwatch-simulator"

#: The `--simulate` faults: what happens to which venue when, so a new user sees the recorder find
#: holes, backfill them, name what it cannot fill, and ride out a pump, within a minute.
SCENARIO: list[Fault] = [
    (8.0, "binance-spot", "disconnect_all", ()),
    (14.0, "okx-swap", "drop_frames", (3,)),
    (20.0, "gate-spot", "malformed_frames", (2,)),
    (26.0, "bybit-linear", "disconnect_all", ()),
    (32.0, "binance-usdm", "burst", (50.0, 5.0)),
    (40.0, "kucoin-spot", "duplicate_frames", (5,)),
    (46.0, "gate-futures", "drop_frames", (2,)),
]


#: The Upbit notices of the `--simulate` scenario: a listing within the first minute (late enough
#: that its 20 s before t0 are recorded), and a caution notice that names a ticker and must not
#: trigger.
UPBIT_SCENARIO: list[Notice] = [
    (24.0, "제로지(0G) KRW, USDT 마켓 디지털 자산 추가", ("0G",)),
    (35.0, "[거래] 거래 유의 종목 지정 안내 (DOGE)", ()),
]

#: How each simulated venue reacts to the listing: (seconds after t0 its pump starts, price
#: multiple). Venues not named do not list the coin (the event reports them absent).
LISTING_PUMPS = {
    "binance-spot": (0.25, 1.6),
    "binance-usdm": (0.35, 1.55),
    "bybit-spot": (0.6, 1.5),
    "bybit-linear": (0.5, 1.5),
    "okx-spot": (0.8, 1.45),
    "okx-swap": (0.7, 1.45),
    "kucoin-spot": (1.2, 1.4),
    "gate-spot": (1.5, 1.35),
    "gate-futures": (1.4, 1.35),
    "phemex-perp": (2.0, 1.3),
}


@dataclass
class SimScenario:
    """What `--simulate` plays: faults per venue, Upbit notices (seconds after start), the listed
    coin's pump per venue, the CDN delay of the board (the detection delay), the capture grace.
    After `run`, `simulator` and `upbit` hold the stand-ins (what they sent is the truth)."""

    faults: list[Fault] = field(default_factory=lambda: list(SCENARIO))
    notices: list[Notice] = field(default_factory=lambda: list(UPBIT_SCENARIO))
    listing: str = "0G"
    pumps: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(LISTING_PUMPS))
    cdn_delay_s: float = 0.0
    capture_grace_s: float = 4.0
    trades_per_s: float = 40.0
    simulator: Simulator | None = None
    upbit: SimUpbit | None = None


class ListingLog:
    """What the watcher detected (it logs each itself), for /status, handed on to capture."""

    def __init__(self) -> None:
        self.triggers: list[dict] = []
        self.captures: CaptureScheduler | None = None
        self.collector: Collector | None = None

    async def __call__(self, t: ListingTrigger) -> None:
        if self.collector is not None and t.capture_tickers:
            # First: every venue relists and subscribes the coin now (issue 13).
            self.collector.on_listing(t.capture_tickers, t.detected_ns)
        # Named in /status before capture scheduling runs: whatever that meets, the listing is on record.
        self.triggers.append(
            {
                "notice_id": t.notice_id,
                "title": t.title,
                "tickers": list(t.tickers),
                "t0_ns": t.t0_ns,
                "detected_ns": t.detected_ns,
                "delay_ms": round(t.delay_ns / 1e6, 1),
                "capture": t.capture,
            }
        )
        if self.captures is not None:
            await self.captures.on_trigger(t)


#: What the recorder writes under the data directory besides the log's own files.
DATA_SUBDIRS = ("log", "events", "instruments")


def check_data_dir(data_dir: str | os.PathLike[str]) -> str:
    """Refuses a data directory the recorder could not write (read-only filesystem, another user's,
    a file in its place), naming the path and the cause, before any connection opens: better no
    start than a recorder that connects to twelve venues and cannot keep a trade. A full disk is
    not refused here (the store says so when it cannot allocate). Returns the absolute path."""
    path = os.path.abspath(os.fspath(data_dir))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise DataDirError(
            f"cannot create the data directory {path}: {e.strerror} "
            f"({errno.errorcode.get(e.errno or 0, e.errno)}); {disk_advice(e.errno, path)}",
            e.errno,
            path,
        ) from None
    for sub in ("",) + DATA_SUBDIRS:
        folder = os.path.join(path, sub) if sub else path
        if sub and not os.path.lexists(folder):
            continue  # created when first needed, in a directory just proven writable
        probe = os.path.join(folder, f".pumpwatch-write-check-{os.getpid()}")
        try:
            if not os.path.isdir(folder):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder)
            # Creating a file (no data: a full disk is not a reason to refuse) proves the directory
            # takes new files; os.access would miss a read-only mount seen through root.
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise DataDirError(
                f"data directory {folder} is not writable: {e.strerror} "
                f"({errno.errorcode.get(e.errno or 0, e.errno)}); {disk_advice(e.errno, folder)}",
                e.errno,
                folder,
            ) from None
    return path


def open_store(cfg: Config) -> RecorderStore:
    """The store the recorder writes through: the Rust path, or with `[log] engine = "purepy"`
    the plain-Python one (same log, same ingest rules; the benchmarks' baseline)."""
    if cfg.log.engine == "purepy":
        from . import purepy

        log.info("ingest path: pure Python (pumpwatch.purepy)")
        return purepy.Store(
            cfg.data_dir,
            fsync_interval=cfg.log.fsync_interval,
            segment_span_s=cfg.log.segment_span_s,
            segment_max_bytes=cfg.log.segment_max_bytes,
            ring_bytes=cfg.log.ring_bytes,
            zstd_level=cfg.log.zstd_level,
            hold_on_disk_full=True,
        )
    return Store(
        cfg.data_dir,
        fsync_interval=cfg.log.fsync_interval,
        segment_span_s=cfg.log.segment_span_s,
        segment_max_bytes=cfg.log.segment_max_bytes,
        ring_bytes=cfg.log.ring_bytes,
        zstd_level=cfg.log.zstd_level,
        hold_on_disk_full=True,
    )


async def _maintain(
    cfg: Config, store: RecorderStore, warnings: list[str], stop: asyncio.Event, every_s: float = 60.0
) -> None:
    """Retention and the low-disk watchdog, every minute while the recorder runs."""
    from .retention import RetentionPolicy, apply_retention, low_disk

    policy = RetentionPolicy(
        max_age_s=cfg.log.retention_days * 86_400.0,
        max_bytes=cfg.log.disk_budget_bytes,
        low_disk_bytes=cfg.log.low_disk_bytes,
    )
    while not stop.is_set():
        try:
            apply_retention(cfg.data_dir, store.active_segment_seq(), policy)
            warning = low_disk(cfg.data_dir, policy)
        except OSError as e:
            warning = f"retention failed: {e}"
        warnings[:] = [warning] if warning else []
        if warning:
            log.warning("%s", warning)
        # While the disk is full, retention (by its own rules) runs every few seconds: space it
        # frees lets the held records out sooner.
        disk = store.disk_state()
        try:
            await asyncio.wait_for(stop.wait(), min(every_s, 5.0) if disk.get("full_since_ns") else every_s)
        except TimeoutError:
            pass


async def _run_scenario(sim: Simulator, faults: list[Fault]) -> None:
    t0 = time.monotonic()
    for at, venue, fault, args in faults:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        if venue in sim.venues:
            log.info("simulator: %s %s%s", venue, fault, args)
            getattr(sim.venues[venue], fault)(*args)


def _status_with_disk(
    collector: Collector,
    cfg: Config,
    watcher: UpbitWatcher | None = None,
    listings: ListingLog | None = None,
    warnings: list[str] | None = None,
    captures: CaptureScheduler | None = None,
    sink: PostgresSink | None = None,
) -> Callable[[], dict]:
    def status() -> dict:
        st = collector.status()
        if sink is not None:
            st["sink"] = {"postgres": sink.status()}
        st["warnings"] = list(warnings or [])
        if watcher is not None:
            st["upbit"] = {"metrics": watcher.metrics(), "listings": listings.triggers if listings else []}
        if captures is not None:
            st["captures"] = captures.status()
        st["disk_free_bytes"] = disk_free(cfg.data_dir)
        st["log_bytes"] = log_bytes(cfg.data_dir)  # plain and zstd-compressed segments
        st["compression"] = collector.store.compression_stats()
        return redact_tree(st)  # errors from a database or a venue may quote a DSN or a key

    return status


async def _report(
    status_fn: Callable[[], dict], stop: asyncio.Event, interactive: bool, done: asyncio.Event | None = None
) -> None:
    if interactive:
        from .dashboard import live

        await live(status_fn, stop, done)
        return
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 10)
        except TimeoutError:
            st = status_fn()
            parts = " ".join(f"{v}={s['trades']}" for v, s in st["venues"].items())
            log.info(
                "status uptime_s=%.0f frames=%d trades=%d duplicates=%d gaps=%d quarantined=%d %s",
                st["uptime_s"],
                st["ingest"]["frames"],
                st["ingest"]["trades"],
                st["ingest"]["duplicates"],
                st["ingest"]["gaps"],
                st["ingest"]["quarantined"],
                parts,
            )
            if disk_line(st.get("disk")):
                log.warning("%s", disk_line(st.get("disk")))


def _resume_listings(collector: Collector, watcher: UpbitWatcher, cfg: Config) -> None:
    """After a restart: listings triggered within `listing_relist_for_s` are followed again (their
    instruments subscribed in any state, venues asked again), so a restart between a notice and
    the coin's first trade loses nothing of it."""
    now = time.time_ns()
    for ticker, v in getattr(watcher.state, "tickers", {}).items():
        triggered = v.get("detected_ns") or v.get("t0_ns", 0)
        if now - triggered < cfg.listing_relist_for_s * 1e9:
            collector.on_listing([ticker], triggered)


async def run(
    cfg: Config,
    *,
    simulate: bool = False,
    duration: float | None = None,
    seed: int = 0,
    interactive: bool | None = None,
    scenario: SimScenario | None = None,
) -> dict:
    """Runs the recorder until SIGTERM/SIGINT or `duration`; returns the final status. With
    `simulate`, plays `scenario` (default: `SimScenario()`) against the stand-ins."""
    register_secrets(cfg)
    # Before the simulator, the store or any connection: a data directory we cannot write stops here.
    check_data_dir(cfg.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stopped_by:
            stopped_by.append(sig.name)
            log.info("%s received: stopping (connections closed, log committed and sealed)", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):
            pass
    sim = None
    fault_task = None
    if not simulate:
        scenario = None  # only the simulator plays one: below, a scenario means simulating
    elif scenario is None:
        scenario = SimScenario()
    # The simulator's servers log every connection at INFO: noise beside the recorder's own log.
    logging.getLogger("pumpwatch.sim").setLevel(logging.WARNING)
    if scenario is not None:
        from .sim import Simulator

        # wss:// and https:// with a test CA made now, trusted through [tls] ca_file: the same
        # verified path as against the venues.
        sim = Simulator(seed=seed, trades_per_s=scenario.trades_per_s, backlog=200, tls=True)
        scenario.simulator = sim
        listing_at = [at for at, _, expect in scenario.notices if scenario.listing in expect]
        if listing_at:
            # Upbit publishes on a whole second (first_listed_at): the coin reacts just after it.
            t0_ns = round((time.time_ns() + listing_at[0] * 1e9) / 1e9) * 1_000_000_000
            for venue, (lag_s, multiple) in scenario.pumps.items():
                if venue in sim.venues:
                    sim.venues[venue].schedule_pump(scenario.listing, t0_ns + int(lag_s * 1e9), multiple)
        await sim.start()
        # The stand-ins take any API key; one is given so keyed REST (Binance USDⓈ-M
        # historicalTrades) serves single trades, as it would for an operator with a key.
        venues = {
            v: dataclasses.replace(
                s,
                ws_url=sim.urls()[v]["ws_origin"],
                rest_url=sim.urls()[v]["rest_url"],
                api_key=s.resolved_api_key(v) or SIM_API_KEY,
            )
            for v, s in cfg.venues.items()
            if v in sim.venues
        }
        cfg = dataclasses.replace(cfg, venues=venues, tls=dataclasses.replace(cfg.tls, ca_file=sim.ca_file or ""))
        fault_task = asyncio.create_task(_run_scenario(sim, scenario.faults))
    upbit_sim = None
    if scenario is not None and cfg.upbit.enabled:
        from .sim.upbit import SimNotice, SimUpbit

        upbit_sim = SimUpbit(
            seed=seed, min_interval_s=0.5, cdn_delay_s=scenario.cdn_delay_s, tls=sim.tls if sim is not None else None
        )
        scenario.upbit = upbit_sim
        await upbit_sim.start()
        for at, title, expect in scenario.notices:
            upbit_sim.schedule(SimNotice(title, expect=expect), at)
        cfg = dataclasses.replace(
            cfg,
            upbit=dataclasses.replace(
                cfg.upbit,
                url=upbit_sim.base_url,
                market_url=upbit_sim.market_url,
                interval_s=cfg.upbit.interval_s or 1.0,
            ),
        )
    store = open_store(cfg)
    server = None
    watcher = None
    captures = None
    sink, sink_stop, sink_task = None, asyncio.Event(), None
    listings = ListingLog()
    try:
        collector = Collector(cfg, store)
        if cfg.sink.postgres is not None:
            from .sink.postgres import PostgresSink

            # Its own stop: it stops after the collector, so the recorder's last markers ship too.
            sink = PostgresSink.from_settings(cfg.sink.postgres, cfg.data_dir)
            sink_task = asyncio.create_task(sink.run(sink_stop))
        capture_settings = cfg.capture
        if scenario is not None:  # the scenario's event should appear well within its minute
            capture_settings = dataclasses.replace(
                capture_settings, grace_s=min(capture_settings.grace_s, scenario.capture_grace_s)
            )
        captures = CaptureScheduler(cfg.data_dir, capture_settings, settled=lambda: collector.backfills_pending() == 0)
        listings.captures = captures
        # A venue that lists the coin after its event was written: the event is written again.
        collector.listen_for_listing_instruments(lambda asset, venue, symbol: captures.recapture(asset))
        captures.start()
        if cfg.upbit.enabled:
            from .upbit import UpbitWatcher

            watcher = UpbitWatcher(
                cfg.data_dir, on_trigger=listings, ca_file=cfg.tls.ca_file, **cfg.upbit.watcher_settings()
            )
            listings.collector = collector
            await watcher.start()
            _resume_listings(collector, watcher, cfg)
        warnings: list[str] = []
        status_fn = _status_with_disk(collector, cfg, watcher, listings, warnings, captures, sink)
        maintenance = asyncio.create_task(_maintain(cfg, store, warnings, stop))
        try:
            server = await serve_status(cfg.metrics_address, status_fn)
        except OSError as e:
            raise OSError(
                e.errno,
                f"cannot serve /status on {cfg.metrics_address} ({e.strerror}); set "
                f"metrics_address in pumpwatch.toml to a free 127.0.0.1 port",
            ) from None
        address = "%s:%d" % server.sockets[0].getsockname()[:2]
        log.info("recording into %s; /status and /metrics on http://%s", cfg.data_dir, address)
        if duration is not None:
            loop.call_later(duration, stop.set)
        if interactive is None:
            interactive = sys.stderr.isatty()
        stopped = asyncio.Event()  # the dashboard's last frame says stopped only once it is
        reporter = asyncio.create_task(_report(status_fn, stop, interactive, stopped))
        try:
            await collector.run(stop)
        finally:
            stopped.set()
        if sink_task is not None:
            sink_stop.set()
            await sink_task
        await reporter
        await maintenance
        if captures is not None:
            await captures.stop()  # its last try at pending.json, before the final status names what is left
        final = status_fn()
        final["address"] = address
        final["stopped_by"] = stopped_by[0] if stopped_by else None
        final["listings_not_saved"] = captures.lost_at_exit() if captures is not None else []
        return final
    finally:
        if watcher is not None:
            await watcher.stop()
        if captures is not None:
            await captures.stop()
        if sink_task is not None and not sink_task.done():
            sink_stop.set()
            await asyncio.gather(sink_task, return_exceptions=True)
        if upbit_sim is not None:
            await upbit_sim.stop()
        if fault_task:
            fault_task.cancel()
        if server:
            server.close()
        store.close(seal=True)
        if sim:
            await sim.stop()
