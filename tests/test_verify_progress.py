"""`verify` tells how far it is: `pumpwatch.verify(dir, progress=...)` calls back with bytes and
segments done, ends with every byte of the log, stops when the callback raises (Ctrl-C too), and
`pumpwatch verify` shows the fraction: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import itertools
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pumpwatch
from conftest import make_trades, read_pty, trades_table
from pumpwatch import cli
from pumpwatch.retention import log_bytes

PACKAGE_ROOT = Path(pumpwatch.__file__).resolve().parents[1]


def _segment_files(d: Path) -> list[Path]:
    return sorted(p for p in (d / "log").iterdir() if p.suffix in (".pwlog", ".pwzst"))


def _files_as_they_are(d: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of the data directory: size, modification time and contents."""
    return {
        str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    """Several sealed segments, the older ones zstd-compressed, the last one plain."""
    d = tmp_path_factory.mktemp("verifyprogress") / "data"
    with pumpwatch.Store(d, segment_max_bytes=1 << 20) as store:
        for k in range(6):
            store.append_trades(make_trades(12_000, seed=k))
    assert len(_segment_files(d)) >= 4
    return d


def _slow_listener(calls: list[tuple[int, int, int, int]]):
    """A callback slower than the bindings' 50 ms between two calls: every telling of the core
    (each segment at least) reaches it, so what it sees is the whole sequence."""

    def progress(done: int, total: int, segments_done: int, segments_total: int) -> None:
        calls.append((done, total, segments_done, segments_total))
        time.sleep(0.055)

    return progress


def test_the_last_call_reports_every_byte_of_the_log_and_calls_never_go_back(log_dir):
    calls: list[tuple[int, int, int, int]] = []
    report = pumpwatch.verify(log_dir, progress=_slow_listener(calls))
    assert report["ok"] and report["trades"] == 72_000
    files = _segment_files(log_dir)
    total = sum(p.stat().st_size for p in files)
    assert total == log_bytes(log_dir)
    assert calls[0] == (0, total, 0, len(files))
    assert calls[-1] == (total, total, len(files), len(files))
    for before, after in itertools.pairwise(calls):
        assert after[0] >= before[0] and after[2] >= before[2], (before, after)
        assert after[1::2] == (total, len(files))
    # Each segment is told done, with its bytes.
    done_at = {c[2]: c[0] for c in calls}
    for k in range(1, len(files) + 1):
        assert done_at[k] == sum(p.stat().st_size for p in files[:k]), k
    assert report == pumpwatch.verify(log_dir), "the same report with or without a callback"


def test_a_fast_verify_calls_at_least_first_and_last(log_dir):
    calls = []
    pumpwatch.verify(log_dir, lambda *told: calls.append(told))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] == log_bytes(log_dir)


def test_an_exception_from_the_callback_stops_verify_and_propagates(log_dir):
    before = _files_as_they_are(log_dir)
    for raised in (RuntimeError("stop here"), KeyboardInterrupt()):
        calls: list[tuple[int, ...]] = []

        def progress(*told, raised=raised, calls=calls):
            calls.append(told)
            if len(calls) == 2:
                raise raised

        with pytest.raises(type(raised)):
            pumpwatch.verify(log_dir, progress=_slow_then(progress))
        assert len(calls) == 2, "no call after the one that raised"
        assert calls[-1][2] < calls[-1][3], "it stopped before the last segment"
    assert _files_as_they_are(log_dir) == before, "verify changed nothing on disk"


def _slow_then(progress):
    def slow(*told):
        time.sleep(0.055)  # every telling of the core reaches Python (see _slow_listener)
        progress(*told)

    return slow


@pytest.fixture(scope="module")
def big_log(tmp_path_factory) -> Path:
    """2 M records (~200 MB): a walk long enough for a signal to arrive in the middle of it."""
    d = tmp_path_factory.mktemp("verifyprogress-big") / "data"
    table = trades_table(make_trades(50_000))
    with pumpwatch.Store(d, segment_max_bytes=64 << 20, zstd_level=0) as store:
        for _ in range(40):
            store.append_trades(table)
    return d


class _Alarm(Exception):
    pass


def _alarm(signum, frame):
    raise _Alarm


def test_a_signal_while_the_walk_runs_in_rust_stops_it(big_log):
    """A signal arrives while Rust walks without the GIL (Ctrl-C's case): the bindings run its
    Python handler at their next check and the walk stops with what the handler raised; the
    callback is not what raised it (it is not on the traceback). SIGALRM stands in for SIGINT so
    that a late signal could not stop the whole test session."""
    calls = []

    def progress(*told):
        calls.append(told)
        if len(calls) == 1:
            signal.setitimer(signal.ITIMER_REAL, 0.01)  # fires once this call has returned

    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        with pytest.raises(_Alarm) as raised:
            pumpwatch.verify(big_log, progress=progress)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert all(c[0] < c[1] for c in calls), f"verify had finished before the signal: {calls}"
    assert not any(entry.name == "progress" for entry in raised.traceback), "raised by the bindings' check"


def test_verify_without_a_terminal_prints_the_fraction_on_stderr(log_dir):
    r = subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", "verify", "--data-dir", str(log_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    total, n = log_bytes(log_dir), len(_segment_files(log_dir))
    lines = r.stderr.splitlines()
    assert lines[0] == f"verifying {total / 1e9:,.2f} GB of log in {log_dir}"
    assert lines[-1] == f"verify: 100% ({total / 1e9:,.2f} of {total / 1e9:,.2f} GB, {n} of {n} segments)"
    assert "log is intact" in r.stdout and "verify:" not in r.stdout


def test_verify_on_a_terminal_draws_a_bar_with_the_fraction(log_dir):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pumpwatch.cli", "verify", "--data-dir", str(log_dir), "--json"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "COLUMNS": "100"},
    )
    os.close(secondary)
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 0
    err = read_pty(primary)
    n = len(_segment_files(log_dir))
    text = err.decode(errors="replace")
    # The bar's last frame (drawn, then cleared: transient) names the whole fraction.
    assert "100%" in text and f"{n}/{n} segments" in text and "verifying" in text, text
    assert pumpwatch.verify(log_dir) == {k: v for k, v in json.loads(out).items() if k != "gaps"}


def test_ctrl_c_in_the_cli_exits_130_and_says_nothing_changed(log_dir, monkeypatch, capsys):
    before = _files_as_they_are(log_dir)
    shown_call = cli._VerifyShown.__call__

    def interrupted(self, done, total, segments_done, segments_total):
        shown_call(self, done, total, segments_done, segments_total)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli._VerifyShown, "__call__", interrupted)
    assert cli.main(["verify", "--data-dir", str(log_dir)]) == 130
    err = capsys.readouterr().err
    n = len(_segment_files(log_dir))
    assert f"interrupted at 0% (0.00 of {log_bytes(log_dir) / 1e9:,.2f} GB, 0 of {n} segments)" in err
    assert "nothing was changed" in err
    assert _files_as_they_are(log_dir) == before


def test_while_the_recorder_writes_the_live_segment_counts_as_listed(tmp_path):
    """The writer's segment is preallocated and grows: verify counts it at its size when listed,
    reads it up to the published end, and still ends at exactly the total it announced."""
    d = tmp_path / "data"
    with pumpwatch.Store(d, segment_max_bytes=1 << 20) as store:
        for k in range(4):
            store.append_trades(make_trades(5_000, seed=k))
        calls: list[tuple[int, ...]] = []

        def progress(*told):
            calls.append(told)
            if len(calls) == 1:
                store.append_trades(make_trades(3_000, seed=9))  # during the walk: after the listing

        report = pumpwatch.verify(d, progress=progress)
        assert report["ok"] and report["writer_running"]
        assert report["trades"] in (20_000, 23_000)  # the published end when the live segment is read
    total = calls[0][1]
    assert calls[-1] == (total, total, calls[0][3], calls[0][3])
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))


def test_verify_of_a_directory_without_a_log_is_an_error_not_an_intact_log(tmp_path, capsys):
    """A mistyped --data-dir once reported "log is intact" and exited 0."""
    from pumpwatch.cli import main
    from pumpwatch.errors import InvalidInputError

    for where, said in ((tmp_path / "typo", "does not exist"), (tmp_path, "holds no recording")):
        with pytest.raises(InvalidInputError, match=said):
            pumpwatch.verify(where)
        assert main(["verify", "--data-dir", str(where)]) == 1
        err = capsys.readouterr().err
        assert said in err and "--data-dir" in err and "intact" not in err
    pumpwatch.Store(tmp_path / "d").close()  # an empty recording is intact
    assert pumpwatch.verify(tmp_path / "d")["ok"]
