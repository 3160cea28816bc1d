"""End to end: the recorder (`python -m pumpwatch run`) fed Binance USDⓈ-M single-trade frames over
WebSocket on 127.0.0.1 by another process (`python -m pumpwatch.sim.feeder`) at a fixed rate.

For each rate: the feeder sends `rate x seconds` frames with consecutive ids; the recorder stores
them; then the log is read back. A rate is sustained when every id sent is stored exactly once and
the recorder kept up: the lag from the trade's send time (the frame's `T`) to its receive time
stayed under LAG_LIMIT_S the whole run. RSS of the recorder is sampled from /proc throughout.

Goal (issue #4): >= 141,000 trades/s stored (1.5x the ~94,000/s cryptofeed 2.4 delivers to a
callback here, storing nothing), RSS flat under 300 MB over 10 minutes.

    python -m pytest benches/bench_end_to_end.py --benchmark-only -s           # steps, 4 s each
    PUMPWATCH_E2E_SECONDS=600 PUMPWATCH_E2E_RATE=150000 python -m pytest benches/bench_end_to_end.py -s -k long
    PUMPWATCH_E2E_RATES=100000,150000 ...                                      # other steps
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pumpwatch

STEP_SECONDS = float(os.environ.get("PUMPWATCH_E2E_STEP_SECONDS", "4"))
LONG_SECONDS = float(os.environ.get("PUMPWATCH_E2E_SECONDS", "0"))
LAG_LIMIT_S = 0.5
RATES = {
    "rust": [int(r) for r in os.environ.get("PUMPWATCH_E2E_RATES", "50000,100000,150000,200000,250000").split(",")],
    "purepy": [
        int(r) for r in os.environ.get("PUMPWATCH_E2E_RATES_PUREPY", "10000,20000,40000,60000,80000").split(",")
    ],
}


def _config(path: Path, ws_origin: str, engine: str, ca_file: str | None = None) -> None:
    lines = [
        'metrics_address = "127.0.0.1:0"',
        "discovery_refresh_s = 0",
        "window_merge_s = 0",
        "[upbit]",
        "enabled = false",
        "[log]",
        f'engine = "{engine}"',
    ]
    if ca_file:
        lines += ["[tls]", f'ca_file = "{ca_file}"']
    for venue in pumpwatch.VENUES:
        if venue == "binance-usdm":
            # REST is never needed (no id is lost on loopback TCP); a dead port says so if it were.
            lines += [
                f"[venues.{venue}]",
                'symbols = ["BTCUSDT"]',
                f'ws_url = "{ws_origin}"',
                'rest_url = "http://127.0.0.1:9"',
            ]
        else:
            lines += [f"[venues.{venue}]", "enabled = false"]
    path.write_text("\n".join(lines) + "\n")


def _rss_mb(pid: int) -> tuple[float, float] | None:
    """(resident memory, of which anonymous) in MB: the rest is file pages of the mapped log
    segment, page cache the kernel reclaims under pressure."""
    try:
        fields = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in open(f"/proc/{pid}/status")
            if line.startswith(("VmRSS:", "RssAnon:"))
        }
    except (OSError, ValueError, IndexError):
        return None
    return (fields["VmRSS"], fields["RssAnon"]) if len(fields) == 2 else None


def _status(address: str) -> dict:
    return json.loads(urllib.request.urlopen(f"http://{address}/status", timeout=5).read())


def _count_stored(data: Path, sent: dict, since_ns: int) -> tuple[int, int, int, float, float]:
    """Stored trades, ids stored more than once, ids sent and not stored, and the lag (receive
    minus send time) max and p99, read back from the log a few seconds of exchange time at a time
    (a 10-minute run holds ~100 M trades)."""
    first, n = sent["first_id"], sent["sent"]
    seen = np.zeros(n, dtype=np.uint8)
    stored = outside = 0
    lag_max = 0
    lags = []
    end = time.time_ns()
    with pumpwatch.Store.open_readonly(data) as reader:
        for start in range(since_ns - 1_000_000_000, end + 1_000_000_000, 5_000_000_000):
            t = reader.query(start, start + 5_000_000_000, venues=["binance-usdm"], include_non_trades=True)
            if not t.num_rows:
                continue
            ids = pc.subtract(pc.cast(t.column("trade_id"), pa.int64()), first).to_numpy()
            inside = (ids >= 0) & (ids < n)
            outside += int((~inside).sum())
            np.add.at(seen, ids[inside], 1)
            stored += t.num_rows
            lag = pc.subtract(t.column("recv_ns"), t.column("ts_ns")).to_numpy()
            lag_max = max(lag_max, int(lag.max()))
            lags.append(lag[:: max(1, len(lag) // 2000)])
    all_lags = np.concatenate(lags) if lags else np.zeros(1, dtype=np.int64)
    duplicates = int(np.maximum(seen.astype(np.int64) - 1, 0).sum()) + outside
    return (
        stored,
        duplicates,
        int((seen == 0).sum()),
        round(lag_max / 1e9, 3),
        round(float(np.quantile(all_lags, 0.99)) / 1e9, 3),
    )


def run_step(rate: int, seconds: float, engine: str, workdir: Path, tls: bool = False) -> dict:
    """One run at `rate` frames/s for `seconds`; what was sent, stored, the lag and the RSS.
    `tls`: over wss:// (the feeder's test CA trusted through [tls] ca_file), as against the venues."""
    tag = f"{engine}-{rate}{'-tls' if tls else ''}"
    data, cfg, log_path = workdir / f"data-{tag}", workdir / f"cfg-{tag}.toml", workdir / f"rec-{tag}.log"
    feeder = subprocess.Popen(
        [sys.executable, "-m", "pumpwatch.sim.feeder", "--rate", str(rate), "--seconds", str(seconds)]
        + (["--tls"] if tls else []),
        stdout=subprocess.PIPE,
        text=True,
    )
    recorder = None
    started_ns = time.time_ns()
    samples: list[tuple[float, tuple[float, float]]] = []
    try:
        hello = json.loads(feeder.stdout.readline())
        _config(cfg, hello["ws_origin"], engine, hello.get("ca_file"))
        with open(log_path, "w") as out:
            recorder = subprocess.Popen(
                [sys.executable, "-m", "pumpwatch", "run", "--config", str(cfg), "--data-dir", str(data)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        address = None
        deadline = time.monotonic() + 60
        while address is None and time.monotonic() < deadline and recorder.poll() is None:
            m = re.search(r"/status and /metrics on http://(127\.0\.0\.1:\d+)", log_path.read_text())
            address = m and m.group(1)
            time.sleep(0.05)
        assert address, log_path.read_text()[-2000:]
        stop = threading.Event()
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                rss = _rss_mb(recorder.pid)
                if rss is not None:
                    samples.append((time.monotonic() - t0, rss))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = json.loads(feeder.stdout.readline())
        feeder.wait(30)
        # The recorder has received everything once the feeder's socket drained; give the last
        # frames a moment to be ingested (or, if it fell behind, to be worked off).
        last, still = -1, time.monotonic()
        while time.monotonic() - still < 3:
            n = _status(address)["ingest"]["trades"]
            if n >= sent["sent"]:
                break
            if n != last:
                last, still = n, time.monotonic()
            time.sleep(0.1)
        stop.set()
        sampler.join()
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait(120) == 128 + signal.SIGTERM, log_path.read_text()[-2000:]
    finally:
        for p in (feeder, recorder):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    stored, duplicates, missing, lag_max_s, lag_p99_s = _count_stored(data, sent, started_ns)
    rss = [s[1][0] for s in samples]
    anon = [s[1][1] for s in samples]
    result = {
        "engine": engine,
        "tls": tls,
        "rate": rate,
        "seconds": seconds,
        "sent": sent["sent"],
        "stored": stored,
        "missing": missing,
        "duplicates": duplicates,
        "feeder_behind_max": sent["behind_max"],
        "lag_max_s": lag_max_s,
        "lag_p99_s": lag_p99_s,
        "rss_mb_first": round(rss[0], 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "rss_mb_last": round(rss[-1], 1) if rss else None,
        "anon_mb_first": round(anon[0], 1) if anon else None,
        "anon_mb_max": round(max(anon), 1) if anon else None,
        "anon_mb_last": round(anon[-1], 1) if anon else None,
        "achieved_rate": round(sent["sent"] / sent["seconds"]) if sent["seconds"] else 0,
        "rss_samples": [
            (round(t, 1), round(r[0], 1), round(r[1], 1)) for t, r in samples[:: max(1, len(samples) // 40)]
        ],
    }
    result["sustained"] = (
        result["sent"] == int(rate * seconds)
        and result["missing"] == 0
        and result["duplicates"] == 0
        and result["lag_max_s"] <= LAG_LIMIT_S
    )
    return result


def _steps(engine: str, tls: bool = False) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="pw-e2e-") as d:
        for rate in RATES[engine]:
            r = run_step(rate, STEP_SECONDS, engine, Path(d), tls)
            print(
                f"\n{engine:6}{' wss' if tls else ' ws '} {rate:>8,}/s: sent {r['sent']:,} stored {r['stored']:,} missing {r['missing']} "
                f"dups {r['duplicates']} lag max {r['lag_max_s']} s p99 {r['lag_p99_s']} s "
                f"RSS {r['rss_mb_first']}->{r['rss_mb_max']} MB (anon {r['anon_mb_first']}->{r['anon_mb_max']}) "
                f"fed at {r['achieved_rate']:,}/s {'SUSTAINED' if r['sustained'] else 'not sustained'}",
                flush=True,
            )
            results.append(r)
            if not r["sustained"]:
                break
    return results


@pytest.mark.parametrize(
    "engine,tls", [("rust", False), ("rust", True), ("purepy", False)], ids=["rust", "rust-tls", "purepy"]
)
@pytest.mark.benchmark(group="end-to-end")
def test_sustained_zero_loss_rate(benchmark, engine, tls):
    results = benchmark.pedantic(lambda: _steps(engine, tls), rounds=1, iterations=1)
    best = max((r["rate"] for r in results if r["sustained"]), default=0)
    goal = 150_000 if tls else 141_000  # over TLS: issue 12
    benchmark.extra_info.update(
        {
            "engine": engine,
            "tls": tls,
            "sustained_rate": best,
            "steps": results,
            "goal_rate": goal,
            "reference_cryptofeed_rate": 94_000,
        }
    )
    print(
        f"\n{engine}{' over TLS' if tls else ''}: highest rate sustained with zero loss: {best:,} trades/s (goal {goal:,})"
    )
    # Loss is never acceptable, at any rate: a rate the recorder cannot keep up with must end in
    # backpressure (the feeder waits), never in a missing or doubled trade.
    assert all(r["missing"] == 0 and r["duplicates"] == 0 for r in results), results


@pytest.mark.skipif(LONG_SECONDS <= 0, reason="set PUMPWATCH_E2E_SECONDS (e.g. 600) for the long run")
@pytest.mark.benchmark(group="end-to-end-long")
@pytest.mark.timeout(int(LONG_SECONDS) + 900)  # the run itself, then reading ~100 M trades back
def test_long_run_rss(benchmark):
    engine = os.environ.get("PUMPWATCH_E2E_ENGINE", "rust")
    rate = int(os.environ.get("PUMPWATCH_E2E_RATE", "150000"))
    with tempfile.TemporaryDirectory(prefix="pw-e2e-long-") as d:
        r = benchmark.pedantic(lambda: run_step(rate, LONG_SECONDS, engine, Path(d)), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    print(f"\nlong run {engine} {rate:,}/s for {LONG_SECONDS:.0f} s: {r}")
    assert r["missing"] == 0 and r["duplicates"] == 0, r
