"""Recording through a full disk (issue 14, the store's side): the recorder's store keeps taking
records while the disk refuses them, holds the newest `ring_bytes` in memory, and when the disk
has room again writes a `gap_unfillable` marker naming exactly what fell out, then the rest.

Counted against what this test sent: every trade is stored, or inside a named gap, never both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pumpwatch
from pumpwatch.status import metrics_text
from pumpwatch.store import disk_line

T0 = 1_790_370_834_848_000_000
PER_BATCH = 100

WRITER = textwrap.dedent(
    """
    import json, resource, sys, time, pumpwatch
    T0, PER = %d, %d
    def batch(b):
        return [pumpwatch.Trade("binance-spot", "BTCUSDT", str(b * PER + j), "77474.10", "0.000021", "sell",
                                T0 + (b * PER + j) * 1_000_000, T0 + (b * PER + j) * 1_000_000 + 5_000_000)
                for j in range(PER)]
    store = pumpwatch.Store(sys.argv[1], fsync_interval=0.05, segment_max_bytes=1 << 20, ring_bytes=64 << 10,
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


def test_full_disk_holds_the_newest_and_names_what_fell_out(tmp_path):
    data = tmp_path / "d"
    out = subprocess.run([sys.executable, "-c", WRITER, str(data)], capture_output=True, text=True, timeout=300)
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


def test_without_a_hold_a_full_disk_still_raises(tmp_path):
    """A plain Store (tools, tests) keeps its contract: DiskFullError, nothing stored damaged."""
    code = textwrap.dedent(
        """
        import resource, sys, pumpwatch
        store = pumpwatch.Store(sys.argv[1], fsync_interval=0, segment_max_bytes=4 << 20)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, resource.RLIM_INFINITY))
        try:
            for b in range(3000):
                store.append_trades([pumpwatch.Trade("gate-spot", "BTC_USDT", str(b * 100 + j), "1", "1", "buy",
                                                     1_700_000_000_000_000_000 + b * 100 + j, 1) for j in range(100)])
        except pumpwatch.DiskFullError:
            print("FULL", store.disk_state()["full_since_ns"])
        """
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["FULL", "0"], out.stderr


def test_status_and_metrics_name_a_full_disk():
    disk = {"full_since_ns": 1_790_370_834_000_000_000, "error_since_ns": 0, "reason": "no space left to append (EFBIG)",
            "held_records": 1200, "held_bytes": 96_000, "unsynced_bytes": 0, "lost_trades_pending": 37,
            "lost_trades": 0, "lost_other": 0, "episodes": 1, "commit_failures": 0, "last_error": "", "index_behind": False}
    line = disk_line(disk)
    assert line.startswith("disk full since 2026-09-25 ") and "1,200 records held" in line and "37 trades fell out" in line
    text = metrics_text({"disk": disk})
    assert "pumpwatch_disk_full 1\n" in text
    assert "pumpwatch_disk_trouble_since_seconds 1790370834.0\n" in text
    assert "pumpwatch_disk_lost_trades_pending 37\n" in text
    clear = dict(disk, full_since_ns=0, held_records=0, lost_trades_pending=0)
    assert disk_line(clear) is None
    assert "pumpwatch_disk_full 0\n" in metrics_text({"disk": clear})
