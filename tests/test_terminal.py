"""What an operator sees in a terminal: the live dashboard of `pumpwatch run` in tmux at 80x24,
120x40 and 200x50, and the dashboard's frame from a status (fits the window, nothing cut that
matters, the why column only when something is wrong)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import pumpwatch
from conftest import read_pty
from pumpwatch import VENUES
from pumpwatch.dashboard import abbrev, compact_state, render

#: Where the imported pumpwatch lives: the child processes must run the same build (under CI a wheel in
#: site-packages; the source tree has no compiled _core there).
PACKAGE_ROOT = Path(pumpwatch.__file__).resolve().parent.parent
SIZES = [(80, 24), (120, 40), (200, 50)]
TITLE = re.compile(r"^PumpWatch  (up \d+ s|stopping|stopped after)")


def _venue_status(state: str, *, trades: int = 1234, up: int = 1, conns: int = 1, symbols: int = 5) -> dict:
    return {
        "state": state,
        "connections": conns,
        "connections_up": up,
        "redundancy": 1,
        "reconnects": 2,
        "rotations": 0,
        "last_message_age_s": 0.25,
        "pending_backfills": 0,
        "silent_symbols": [],
        "connection_states": [{"symbols": symbols}] * conns,
        "frames": 3_456_789,
        "trades": trades,
        "gaps_found": 3,
        "gaps_filled": 2,
        "gaps_unfillable": 1,
        "quarantined": 0,
        "backfilled": 17,
        "rest_errors": 0,
        "last_error": "",
    }


def _status(**overrides: dict) -> dict:
    venues = {
        v: _venue_status("recording 5 symbols on 1 connections", trades=10 ** (3 + i % 8)) for i, v in enumerate(VENUES)
    }
    venues.update(overrides)
    return {
        "uptime_s": 3601.0,
        "log_bytes": 67_100_000,
        "disk_free_bytes": 77_200_000_000,
        "venues": venues,
        "ingest": {
            "frames": 123_456_789,
            "trades": 234_567_890,
            "duplicates": 3_536,
            "gaps": 5,
            "gaps_filled": 4,
            "quarantined": 2,
        },
        "upbit": {"metrics": {"polls": 3600, "errors": 1, "response_ms_p99": 412.0, "triggers": 1}},
        "captures": {"events": [], "pending": ["0G_20250922T050000Z"]},
        "warnings": [],
    }


def test_abbrev_keeps_counts_within_five_characters():
    assert [abbrev(n) for n in (0, 9_999, 10_000, 15_240, 152_400, 1_524_000, 15_240_000_000)] == [
        "0",
        "9,999",
        "10.0k",
        "15.2k",
        "152k",
        "1.52M",
        "15.2G",
    ]
    assert all(len(abbrev(10**k + 7)) <= 5 for k in range(15))  # up to hundreds of T


@pytest.mark.parametrize("width,height", SIZES)
def test_frame_fits_the_window_with_all_twelve_venues(width, height):
    lines = render(_status(), width, height, logs=[f"log line {i}" for i in range(40)])
    assert len(lines) <= height - 1
    assert all(len(line) <= width for line in lines)
    assert sum(bool(TITLE.match(line)) for line in lines) == 1
    for venue in VENUES:  # each venue on one line, its name and state whole
        (row,) = [line for line in lines if line.split(" ", 1)[0] == venue]
        assert re.match(rf"^{venue}\s+rec 5/1\s+[\d.,]+[kMG]?\s", row), row
    assert "why" not in lines[1]  # nothing wrong: no error column
    (total,) = [line for line in lines if line.startswith("total ")]
    assert "…" not in total and total.endswith("quar 2") and "dups 3,536" in total  # the totals whole
    assert "…" not in lines[0] and "disk free 77.2 GB" in lines[0]
    assert any("log line 39" in line for line in lines)  # the newest log lines, in the pane
    assert not any(line == "log line 0" for line in lines)  # the pane is bounded
    header = lines[1].split()
    assert len(header) == len(set(header))
    if width >= 120:
        assert "frames" in header and "filled" in header  # wider windows show more columns


def test_more_width_never_shows_fewer_columns():
    widths = [len(render(_status(), w, 24)[1].split()) for w in range(60, 220, 10)]
    assert widths == sorted(widths) and widths[-1] > widths[0]


def test_why_column_only_when_a_venue_is_not_recording():
    st = _status(
        **{
            "gate-futures": _venue_status("down: connection refused: [Errno 111] Connect call failed", up=0),
            "okx-swap": _venue_status("degraded: 1/2 connections up: timeout", up=1, conns=2),
        }
    )
    lines = render(st, 80, 24)
    assert lines[1].rstrip().endswith("why")
    (gate,) = [line for line in lines if line.startswith("gate-futures ")]
    assert re.match(r"^gate-futures\s+down\s+.*connection refused", gate), gate
    (okx,) = [line for line in lines if line.startswith("okx-swap ")]
    assert re.match(r"^okx-swap\s+deg 1/2\s", okx), okx
    assert all(len(line) <= 80 for line in lines)
    assert compact_state(st["venues"]["gate-futures"]) == (
        "down",
        "connection refused: [Errno 111] Connect call failed",
    )


def test_stopped_frame_says_stopped_not_down():
    st = _status(**{v: _venue_status("down: connecting", up=0) for v in VENUES})
    lines = render(st, 80, 24, logs=["x"], phase="stopped")
    assert lines[0].startswith("PumpWatch  stopped after 3601 s")
    assert not any(" down " in line for line in lines)
    assert all(re.match(rf"^{v}\s+stopped\s", next(line for line in lines if line.startswith(v + " "))) for v in VENUES)
    assert "why" not in lines[1]


# -- the real thing, in tmux -------------------------------------------------------------------------


def _tmux(sock: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", sock, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def tmux_socket():
    if not shutil.which("tmux"):
        if os.environ.get("PUMPWATCH_CI") or os.environ.get("CI"):
            pytest.fail("tmux is missing: install Debian's tmux (.ci/run does)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    sock = f"pumpwatch-test-{uuid.uuid4().hex[:8]}"  # a private tmux server: nothing else is touched
    yield sock
    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def test_live_dashboard_in_tmux_at_three_sizes(tmux_socket, tmp_path):
    duration = 22
    env = f"PYTHONPATH={PACKAGE_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')} TERM=xterm-256color"
    for w, h in SIZES:
        cmd = (
            f"cd {tmp_path} && env {env} {sys.executable} -m pumpwatch.cli run --simulate --duration {duration} "
            f"--data-dir {tmp_path / f'd{w}'}; echo PW-EXIT=$?; sleep 600"
        )
        _tmux(tmux_socket, "new-session", "-d", "-s", f"s{w}", "-x", str(w), "-y", str(h), cmd)
    time.sleep(duration * 0.6)
    for w, _h in SIZES:  # while it records
        screen = _tmux(tmux_socket, "capture-pane", "-p", "-t", f"s{w}").splitlines()
        joined = _tmux(tmux_socket, "capture-pane", "-p", "-J", "-t", f"s{w}").splitlines()  # wrapped lines joined
        assert sum(bool(TITLE.match(line)) for line in screen) == 1, (w, "\n".join(screen))
        for venue in VENUES:
            rows = [line for line in joined if line.split(" ", 1)[0] == venue]
            assert len(rows) == 1, (w, venue, "\n".join(screen))
            assert len(rows[0].rstrip()) <= w, (w, rows[0])  # no row wraps
            assert re.match(rf"^{venue}\s+(rec|deg|down|err|start|idle)\b", rows[0]), (w, rows[0])
    # A window made smaller mid-run: the next frames fit it, no stale copy is left on the screen.
    _tmux(tmux_socket, "resize-window", "-t", "s200", "-x", "80", "-y", "24")
    time.sleep(2)
    screen = _tmux(tmux_socket, "capture-pane", "-p", "-J", "-t", "s200").splitlines()
    assert sum(bool(TITLE.match(line)) for line in screen) == 1, "\n".join(screen)
    assert [line.split(" ", 1)[0] for line in screen if line.split(" ", 1)[0] in VENUES] == list(VENUES), "\n".join(
        screen
    )
    assert all(len(line.rstrip()) <= 80 for line in screen), "\n".join(screen)
    deadline = time.monotonic() + duration + 40
    finals = {}
    while len(finals) < len(SIZES) and time.monotonic() < deadline:
        time.sleep(1)
        for w, _ in SIZES:
            history = _tmux(tmux_socket, "capture-pane", "-p", "-J", "-S", "-", "-t", f"s{w}")
            if "PW-EXIT=" in history:
                finals[w] = history
    assert len(finals) == len(SIZES), "the recorder did not stop within 40 s of --duration"
    for w, history in finals.items():
        lines = history.splitlines()
        assert "PW-EXIT=0" in history, history
        titles = [line for line in lines if TITLE.match(line)]
        assert len(titles) == 1 and titles[0].startswith("PumpWatch  stopped after"), (w, history)  # redrawn in place
        start = lines.index(titles[0])
        for venue in VENUES:
            rows = [line for line in lines if line.split(" ", 1)[0] == venue]
            assert len(rows) == 1 and re.match(rf"^{venue}\s+stopped\s", rows[0]) and lines.index(rows[0]) > start, (
                w,
                history,
            )


# -- report and events by width -------------------------------------------------------------------


@pytest.fixture(scope="module")
def event_dir(tmp_path_factory):
    from pumpwatch import capture as cap
    from test_capture import NS, T0, _pumping_store

    data = tmp_path_factory.mktemp("ev") / "d"
    with _pumping_store(data) as store:
        store.append_marker(
            "gap_unfillable",
            ts_ns=T0,
            venue="bybit-spot",
            symbol="0GUSDT",
            from_ts_ns=T0 - NS,
            to_ts_ns=T0,
            detail="the venue's recent-trades window does not reach back to the outage",
        )
        ev = cap.capture(
            store,
            cap.CaptureRequest(
                "0G",
                T0,
                notice={
                    "notice_id": 7,
                    "title": "[거래] 제로지(0G) KRW 마켓 디지털 자산 추가",
                    "markets": ["KRW"],
                    "detected_ns": T0 + 13 * NS,
                },
            ),
            data,
            chart=False,
        )
    return data, Path(ev.path)


def _cli(columns: int, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(PACKAGE_ROOT)},
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _figures(analysis: dict, venue: str) -> list[str]:
    """The figures of a venue's analysis the report shows, as analysis.json holds them."""
    a = analysis["venues"][venue]
    return [
        a["reference"]["price"],
        str(a["first_after"]["ms_after_t0"]),
        a["peak"]["price"],
        str(a["max_rise_pct"]),
        str(a["max_fall_pct"]),
        str(a["time_to_peak_ms"]),
        a["after"]["quote_volume"],
        str(a["after"]["buy_share"]),
        str(analysis["across"]["lead_lag_ms"][venue]),
        a["verdict"],
    ]


@pytest.mark.parametrize("columns", [80, 120])
def test_report_shows_every_venue_and_figure_whole(event_dir, columns):
    data, folder = event_dir
    analysis = json.loads((folder / "analysis.json").read_text())
    event = json.loads((folder / "event.json").read_text())
    out = _cli(columns, "report", "0G", "--data-dir", str(data))
    assert "…" not in out
    words = set(re.split(r"[\s│┃,+]+", out))
    for venue in event["venues"]:
        assert venue in words, (venue, out)
    for venue in analysis["venues"]:
        for figure in _figures(analysis, venue):
            assert figure in words, (venue, figure, out)
    assert all(len(line) <= columns for line in out.splitlines())


def test_report_wide_forces_the_table_and_json_is_analysis_as_stored(event_dir):
    data, folder = event_dir
    out = _cli(80, "report", "0G", "--data-dir", str(data), "--wide")
    assert "…" not in out
    analysis = json.loads((folder / "analysis.json").read_text())
    for venue in analysis["venues"]:  # one table row per venue holds all its figures
        (row,) = [line for line in out.splitlines() if line.startswith(f"│ {venue} ")]
        assert all(f in re.split(r"[\s│+]+", row) for f in _figures(analysis, venue)), row
    assert _cli(80, "report", "0G", "--data-dir", str(data), "--json") == (folder / "analysis.json").read_text()


@pytest.mark.parametrize("columns", [80, 120])
def test_events_shows_name_t0_and_figures_whole(event_dir, columns):
    data, _ = event_dir
    out = _cli(columns, "events", "--data-dir", str(data))
    (row,) = json.loads(_cli(columns, "events", "--data-dir", str(data), "--json"))
    assert "…" not in out and all(len(line) <= columns for line in out.splitlines())
    words = set(re.split(r"[\s│┃,+]+", out))
    for figure in (row["event"], row["t0"][:23] + "Z", f"{row['trades']:,}", row["verdict"], str(row["max_rise"])):
        assert figure in words, (figure, out)


def test_verify_shows_progress_on_a_terminal_and_keeps_json_clean(event_dir):
    import pty

    data, _ = event_dir
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pumpwatch.cli", "verify", "--data-dir", str(data), "--json"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
    )
    os.close(secondary)
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 0
    err = read_pty(primary)
    assert b"verifying" in err and b"GB of log in" in err  # the spinner, on stderr
    assert json.loads(out)["ok"] is True  # stdout: the JSON alone


def test_status_command_prints_the_dashboard_at_the_terminal_width():
    import asyncio
    import threading

    from pumpwatch.status import serve_status

    ready = threading.Event()
    box: dict = {}

    def serve() -> None:
        async def main() -> None:
            server = await serve_status("127.0.0.1:0", _status)
            box["address"] = "%s:%d" % server.sockets[0].getsockname()[:2]
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()
            server.close()

        box["loop"] = asyncio.new_event_loop()
        box["loop"].run_until_complete(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        out = _cli(80, "status", "--address", box["address"])
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        t.join(10)
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert [line.split()[0] for line in lines if line.split() and line.split()[0] in VENUES] == list(VENUES)
