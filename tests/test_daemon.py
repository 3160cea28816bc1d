"""`pumpwatch run --simulate` end to end, in its own process: it records all twelve venues,
answers /status, /metrics and `pumpwatch status` while it runs, and on SIGTERM stops cleanly
with the log committed, sealed and intact."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

import pumpwatch

pytestmark = pytest.mark.timeout(120)


def test_run_simulate_records_answers_status_and_stops_cleanly_on_sigterm(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pumpwatch.cli", "run", "--simulate", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = None
        deadline = time.time() + 30
        while address is None and time.time() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"/status and /metrics on http://(127\.0\.0\.1:\d+)", line)
            address = m.group(1) if m else None
        assert address, "the daemon never said where it serves /status"
        time.sleep(6)
        st = json.loads(
            subprocess.run(
                [sys.executable, "-m", "pumpwatch.cli", "status", "--address", address, "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert set(st["venues"]) == set(pumpwatch.VENUES)
        assert st["upbit"]["metrics"]["notices_seen"] > 0  # the Upbit stand-in's board was read
        assert all(v["trades"] > 0 and v["connections"] == 1 for v in st["venues"].values()), st["venues"]
        metrics = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
        assert 'pumpwatch_venue_trades{venue="okx-swap"}' in metrics and "pumpwatch_ingest_trades_total" in metrics
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM  # stopped by a signal, cleanly (README: exit codes)
    assert "log sealed" in out
    report = pumpwatch.verify(data)
    assert report["ok"] and report["trades"] >= st["ingest"]["trades"]
    with pumpwatch.Store.open_readonly(data) as reader:
        kinds = [m["kind"] for m in reader.markers().to_pylist()]
    assert kinds[0] == "recorder_start" and kinds[-1] == "recorder_stop"
    assert kinds.count("connection_up") >= 12


def test_status_without_a_daemon_says_what_to_do():
    r = subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", "status", "--address", "127.0.0.1:1"], capture_output=True, text=True
    )
    assert r.returncode == 1 and "pumpwatch run" in r.stderr


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "pumpwatch.toml"
    cfg.write_text("[venues.binance]\nenabled = true\n")
    r = subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", "run", "--config", str(cfg), "--duration", "1"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 78 and "unknown venue [venues.binance]" in r.stderr  # EX_CONFIG
    assert "Traceback" not in r.stderr
