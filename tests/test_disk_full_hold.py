"""Recording through a full disk (issue 14, the store's side): the recorder's store keeps taking
records while the disk refuses them, holds the newest `ring_bytes` in memory, and when the disk
has room again writes a `gap_unfillable` marker naming exactly what fell out, then the rest.

Counted against what this test sent: every trade is stored, or inside a named gap, never both.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

import pumpwatch
import pumpwatch.purepy
from pumpwatch.collector import Collector
from pumpwatch.config import Config, VenueSettings
from pumpwatch.sim import Simulator
from pumpwatch.status import metrics_text
from pumpwatch.store import disk_line

T0 = 1_790_370_834_848_000_000
PER_BATCH = 100

WRITER = textwrap.dedent(
    """
    import json, resource, sys, time, pumpwatch, pumpwatch.purepy
    T0, PER = %d, %d
    ENGINE = {"rust": pumpwatch.Store, "purepy": pumpwatch.purepy.Store}[sys.argv[2]]
    def batch(b):
        return [pumpwatch.Trade("binance-spot", "BTCUSDT", str(b * PER + j), "77474.10", "0.000021", "sell",
                                T0 + (b * PER + j) * 1_000_000, T0 + (b * PER + j) * 1_000_000 + 5_000_000)
                for j in range(PER)]
    store = ENGINE(sys.argv[1], fsync_interval=0.05, segment_max_bytes=1 << 20, ring_bytes=64 << 10,
                   hold_on_disk_full=True)
    b = 0
    for _ in range(20):                      # room enough: stored as usual
        store.append_trades(batch(b)); b += 1
    # The file-size limit stands in for a full disk (EFBIG, like ENOSPC, is "no space"): the
    # first segment was reserved whole at open; the next cannot grow past 512 KiB.
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 10, resource.RLIM_INFINITY))
    full_at = None
    for _ in range(1100):                    # about 5 MB more than the disk takes: never raises
        store.append_trades(batch(b)); b += 1
        if full_at is None and store.disk_state()["full_since_ns"]:
            full_at = b - 1
    during = store.disk_state()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    deadline = time.time() + 30              # the commit thread tries the disk again by itself
    while store.disk_state()["held_records"] and time.time() < deadline:
        time.sleep(0.05)
    after = store.disk_state()
    store.close()
    print(json.dumps({"sent": b * PER, "full_at": full_at, "during": during, "after": after}), flush=True)
    """
    % (T0, PER_BATCH)
)


def _lost_ids(reader) -> tuple[set[int], list[dict]]:
    lost: set[int] = set()
    markers = [m for m in reader.markers().to_pylist() if m["kind"] == "gap_unfillable"]
    for m in markers:
        a, b = int(m["from_id"]), int(m["to_id"])
        assert (m["from_ts_ns"], m["to_ts_ns"]) == (T0 + a * 1_000_000, T0 + b * 1_000_000), m
        lost.update(range(a, b + 1))
    return lost, markers


@pytest.mark.parametrize("engine", ["rust", "purepy"])
def test_full_disk_holds_the_newest_and_names_what_fell_out(tmp_path, engine):
    """The same for both engines (`[log] engine`): the plain-Python store holds as hold.rs does."""
    data = tmp_path / "d"
    out = subprocess.run([sys.executable, "-c", WRITER, str(data), engine], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    during, after = res["during"], res["after"]
    assert during["full_since_ns"] > 0 and "no space left" in during["reason"], during
    assert 0 < during["held_bytes"] <= 64 << 10, during
    assert during["lost_trades_pending"] > 0, during
    assert after["full_since_ns"] == 0 and after["held_records"] == 0, after

    with pumpwatch.ReadOnlyStore(data) as r:
        stored_ids = [int(x) for x in r.query().column("trade_id").to_pylist()]
        lost, markers = _lost_ids(r)
    stored = set(stored_ids)
    sent = set(range(res["sent"]))
    assert len(stored) == len(stored_ids), "no trade stored twice"
    assert stored.isdisjoint(lost), "a trade is stored or named lost, not both"
    assert stored | lost == sent, f"missing, unnamed: {sorted(sent - stored - lost)[:10]}"
    assert len(lost) == after["lost_trades"] > 0
    assert min(lost) >= res["full_at"] * PER_BATCH, "only trades of the full episode are lost"
    assert all("disk full" in m["detail"] for m in markers), markers
    report = pumpwatch.verify(data)
    assert report["ok"] and report["trades"] == len(stored), report


@pytest.mark.parametrize("engine", ["rust", "purepy"])
def test_without_a_hold_a_full_disk_still_raises(tmp_path, engine):
    """A plain Store (tools, tests) keeps its contract: DiskFullError, nothing stored damaged."""
    code = textwrap.dedent(
        """
        import resource, sys, pumpwatch, pumpwatch.purepy
        ENGINE = {"rust": pumpwatch.Store, "purepy": pumpwatch.purepy.Store}[sys.argv[2]]
        store = ENGINE(sys.argv[1], fsync_interval=0, segment_max_bytes=4 << 20)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, resource.RLIM_INFINITY))
        try:
            for b in range(3000):
                store.append_trades([pumpwatch.Trade("gate-spot", "BTC_USDT", str(b * 100 + j), "1", "1", "buy",
                                                     1_700_000_000_000_000_000 + b * 100 + j, 1) for j in range(100)])
        except pumpwatch.DiskFullError:
            print("FULL", store.disk_state()["full_since_ns"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "d"), engine], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["FULL", "0"], out.stderr


def test_status_and_metrics_name_a_full_disk():
    disk = {
        "full_since_ns": 1_790_370_834_000_000_000,
        "error_since_ns": 0,
        "reason": "no space left to append (EFBIG)",
        "held_records": 1200,
        "held_bytes": 96_000,
        "unsynced_bytes": 0,
        "lost_trades_pending": 37,
        "lost_trades": 0,
        "lost_other": 0,
        "episodes": 1,
        "commit_failures": 0,
        "last_error": "",
        "index_behind": False,
    }
    line = disk_line(disk)
    assert (
        line.startswith("disk full since 2026-09-25 ") and "1,200 records held" in line and "37 trades fell out" in line
    )
    assert line.endswith("free disk space (or lower retention)")
    failing = dict(disk, full_since_ns=0, error_since_ns=1_790_370_834_000_000_000, unsynced_bytes=4096)
    assert disk_line(failing).startswith("disk error since ") and disk_line(failing).endswith(
        "check the disk (dmesg, SMART)"
    )
    assert "pumpwatch_disk_error 1\n" in metrics_text({"disk": failing})
    text = metrics_text({"disk": disk})
    assert "pumpwatch_disk_full 1\n" in text
    assert "pumpwatch_disk_trouble_since_seconds 1790370834.0\n" in text
    assert "pumpwatch_disk_lost_trades_pending 37\n" in text
    clear = dict(disk, full_since_ns=0, held_records=0, lost_trades_pending=0)
    assert disk_line(clear) is None
    assert "pumpwatch_disk_full 0\n" in metrics_text({"disk": clear})


# --- The collector on a real small filesystem, against the simulator ------------------------------

SIM_VENUES = ["binance-spot", "okx-spot"]


@pytest.fixture
def tiny_filesystem(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        if os.geteuid() == 0:
            pytest.fail(f"cannot mount a tmpfs as root: {r.stderr.strip()}")
        pytest.skip("mounting a small tmpfs needs root (CI runs as root); the RLIMIT_FSIZE test covers the store")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def _fill(path) -> None:
    """Writes a ballast file until the filesystem has no byte left."""
    chunk = b"\1" * (64 << 10)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        try:
            while True:
                f.write(b"\1" * 512)
        except OSError:
            pass


async def _record_through_full_disk(data_dir, ballast, engine):
    sim = Simulator(SIM_VENUES, seed=5, trades_per_s=80.0, backlog=20)
    await sim.start()
    try:
        urls = sim.urls()
        cfg = Config(
            data_dir=str(data_dir),
            metrics_address="127.0.0.1:0",
            venues={
                v: VenueSettings(
                    enabled=v in SIM_VENUES,
                    ws_url=urls[v]["ws_origin"] if v in SIM_VENUES else "",
                    rest_url=urls[v]["rest_url"] if v in SIM_VENUES else "",
                )
                for v in pumpwatch.VENUES
            },
        )
        # A new segment every second, so the full disk refuses a new segment during the episode;
        # a 4 KiB hold (the smallest ring), so some of the episode's trades must fall out.
        settings = dict(segment_span_s=1.0, segment_max_bytes=1 << 20, ring_bytes=4096, hold_on_disk_full=True)
        if engine == "purepy":
            store = pumpwatch.purepy.Store(data_dir, **settings)
        else:
            store = pumpwatch.Store(data_dir, zstd_level=0, **settings)
        collector = Collector(cfg, store)
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        await asyncio.sleep(2.0)
        _fill(ballast)
        during = None
        for _ in range(40):
            await asyncio.sleep(0.1)
            st = collector.status()
            if st["disk"]["full_since_ns"] and st["disk"]["lost_trades_pending"]:
                during = st
                break
        await asyncio.sleep(1.0)
        metrics = metrics_text(collector.status())
        os.unlink(ballast)
        await asyncio.sleep(3.0)
        stop.set()
        await task
        after = collector.status()
        sent = {v: sim.venues[v].sent_trades() for v in SIM_VENUES}
        store.close()
        return during, metrics, after, sent
    finally:
        await sim.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", ["rust", "purepy"])
def test_collector_keeps_its_connections_through_a_full_disk(tiny_filesystem, engine):
    data = tiny_filesystem / "data"
    during, metrics, after, sent = asyncio.run(_record_through_full_disk(data, tiny_filesystem / "ballast", engine))
    assert during is not None, "the disk filled and trades fell out of the hold"
    assert "pumpwatch_disk_full 1\n" in metrics and during["disk"]["summary"].startswith("disk full since ")
    assert after["disk"]["summary"] == ""
    assert after["disk"]["full_since_ns"] == 0 and after["disk"]["held_records"] == 0, after["disk"]
    assert after["disk"]["lost_trades"] > 0
    for v in SIM_VENUES:
        assert after["venues"][v]["reconnects"] == 0, f"{v}: the full disk cost a connection: {after['venues'][v]}"

    reader = pumpwatch.Store.open_readonly(data)
    stored = reader.query().to_pylist()
    holes = [m for m in reader.markers().to_pylist() if m["kind"] == "gap_unfillable"]
    assert holes and all("disk full" in m["detail"] for m in holes), holes
    named = 0
    for venue in SIM_VENUES:
        rows = [(r["symbol"], r["trade_id"]) for r in stored if r["venue"] == venue]
        assert len(rows) == len(set(rows)), f"{venue}: a trade stored twice"
        rows_set = set(rows)
        live = [r["ts_ns"] for r in stored if r["venue"] == venue]
        first_ts, last_ts = min(live), max(live)
        for t in sent[venue]:
            if not first_ts <= t["ts_ns"] <= last_ts or (t["symbol"], t["trade_id"]) in rows_set:
                continue
            inside = [
                m
                for m in holes
                if m["venue"] == venue
                and m["symbol"] == t["symbol"]
                and m["from_ts_ns"] <= t["ts_ns"] <= m["to_ts_ns"]
                and int(m["from_id"]) <= int(t["trade_id"]) <= int(m["to_id"])
            ]
            assert inside, f"{venue}: trade {t['trade_id']} at {t['ts_ns']} neither stored nor inside a named gap"
            named += 1
    assert named == after["disk"]["lost_trades"], (named, after["disk"])
    report = pumpwatch.verify(data)
    assert report["ok"] and report["trades"] == len(stored), report
