"""Errors a person can act on (issue 14): an unwritable data directory is refused before any
connection opens; every fatal error is one line naming what failed, the path and what to do; exit
codes tell configuration, disk and signals apart; a missing optional dependency is one line;
secrets (a DSN password, an API key) appear in no log, error, /status or event file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import pumpwatch
from pumpwatch import config as config_mod
from pumpwatch import daemon, errors, redact
from test_capture import T0, _pumping_store

pytestmark = pytest.mark.timeout(120)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _cli(*args, env=None, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def read_only_dir(tmp_path):
    """A data directory on a filesystem remounted read-only (needs root, as in CI)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        if IN_CI:
            pytest.fail("CI runs as root and must be able to mount a tmpfs")
        pytest.skip("cannot mount a tmpfs here (needs root)")
    (mnt / "data").mkdir()
    (mnt / "data" / "events").mkdir()
    assert subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode == 0
    yield mnt / "data"
    subprocess.run(["umount", "-l", str(mnt)])


def test_a_read_only_data_dir_is_refused_before_any_connection_opens(read_only_dir):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.5)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    cfg = config_mod.Config(data_dir=str(read_only_dir), metrics_address="127.0.0.1:0")
    cfg = dataclasses.replace(
        cfg,
        venues={
            v: dataclasses.replace(s, ws_url=url.replace("http", "ws"), rest_url=url) for v, s in cfg.venues.items()
        },
        upbit=dataclasses.replace(cfg.upbit, url=url, market_url=url + "/v1/market/all"),
    )
    with pytest.raises(errors.DataDirError) as e:
        asyncio.run(daemon.run(cfg, duration=2.0, interactive=False))
    assert str(read_only_dir) in str(e.value) and "read-only" in str(e.value) and "remount" in str(e.value)
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing connected: no venue, no Upbit
    listener.close()
    r = _cli("run", "--simulate", "--data-dir", str(read_only_dir), "--duration", "5")
    assert r.returncode == errors.EXIT_DISK, r.stderr
    [line] = r.stderr.strip().splitlines()  # one line, no traceback, and nothing was started before it
    assert line.startswith("pumpwatch run: data directory") and str(read_only_dir) in line and "EROFS" in line


def test_a_file_where_the_data_dir_should_be_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    r = _cli("run", "--simulate", "--data-dir", str(tmp_path / "data"), "--duration", "5")
    assert r.returncode == errors.EXIT_DISK
    assert str(tmp_path / "data") in r.stderr and "move it away or choose another --data-dir" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_disk_error_names_the_path_and_what_to_do_and_exits_74(tmp_path):
    with _pumping_store(tmp_path / "d") as store:
        store.flush()
    out = tmp_path / "x.parquet"
    r = _cli(
        "export",
        "--from",
        str(T0 - 10**10),
        "--to",
        str(T0),
        "-o",
        str(out),
        "--data-dir",
        str(tmp_path / "d"),
        env={"PUMPWATCH_FAILPOINTS": "export=enospc"},
    )
    assert r.returncode == errors.EXIT_DISK, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("pumpwatch export: No space left on device [ENOSPC]") and str(out) in line
    assert "free space on the filesystem of" in line and not out.exists()


def test_exit_codes_tell_configuration_disk_lock_and_bugs_apart():
    assert errors.exit_code_for(config_mod.ConfigError("x")) == errors.EXIT_CONFIG == 78
    assert errors.exit_code_for(ImportError("no psycopg")) == errors.EXIT_CONFIG
    assert errors.exit_code_for(pumpwatch.DiskFullError(28, "no space left to append")) == errors.EXIT_DISK == 74
    assert errors.exit_code_for(OSError(5, "Input/output error", "/d/events/x")) == errors.EXIT_DISK
    assert (
        errors.exit_code_for(pumpwatch.StoreError("msync /d/log/1.seg: Input/output error (os error 5)"))
        == errors.EXIT_DISK
    )
    assert errors.exit_code_for(pumpwatch.StoreLockedError("held")) == errors.EXIT_LOCKED == 75
    assert errors.exit_code_for(pumpwatch.InvalidInputError("bad ticker")) == errors.EXIT_FAILURE == 1
    assert errors.exit_code_for(KeyError("bug")) == errors.EXIT_SOFTWARE == 70
    line = errors.describe(pumpwatch.StoreError("msync /d/log/1.seg: Input/output error (os error 5)"), "run")
    assert "/d/log/1.seg" in line and "dmesg" in line


def test_a_missing_optional_dependency_is_one_line(tmp_path):
    cfg = tmp_path / "pumpwatch.toml"
    cfg.write_text(
        'metrics_address = "127.0.0.1:0"\n[sink.postgres]\ndsn = "postgresql://pw:Hunter2Secret@127.0.0.1:1/db"\n'
    )
    code = (
        "import sys\n"
        "class NoPsycopg:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'psycopg' or name.startswith('psycopg.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n"
        "sys.meta_path.insert(0, NoPsycopg())\n"
        "from pumpwatch.cli import main\n"
        f"sys.exit(main(['run', '--config', {str(cfg)!r}, '--data-dir', {str(tmp_path / 'd')!r}, '--duration', '3']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == errors.EXIT_CONFIG, r.stderr
    assert "Traceback" not in r.stderr and "Hunter2Secret" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("pumpwatch run:") and "pip install 'pumpwatch[postgres]'" in last


# ---------------------------------------------------------------------------------------------
# Secrets


DSN_PASSWORD = "Pw-faultspy-8d1c7e"
API_KEY = "AK-faultspy-5f2b9a0c71"


def test_redaction_masks_urls_key_value_dsns_and_registered_values():
    redact.register(API_KEY)
    redact.register_dsn(f"host=db user=pumpwatch password={DSN_PASSWORD} dbname=x")
    assert redact.redact(f"postgresql://u:{DSN_PASSWORD}@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact.redact("postgresql://u:OtherUnregistered@h/db") == "postgresql://u:***@h/db"  # by shape, unregistered
    assert redact.redact("dbname=x password=zzzUnregistered host=h") == "dbname=x password=*** host=h"
    assert redact.redact(f"signature failed for key {API_KEY}!") == "signature failed for key ***!"
    assert (
        redact.redact("ws://127.0.0.1:8080/ws and 12.5 and user@host")
        == "ws://127.0.0.1:8080/ws and 12.5 and user@host"
    )
    tree = redact.redact_tree({"a": [f"x{API_KEY}", 1, None], DSN_PASSWORD: {"b": DSN_PASSWORD}})
    assert (
        json.dumps(tree).count("***") == 3 and API_KEY not in json.dumps(tree) and DSN_PASSWORD not in json.dumps(tree)
    )


def test_log_lines_and_their_tracebacks_are_redacted(caplog):
    redact.register(API_KEY)
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    logger = logging.getLogger("pumpwatch.test_secrets")
    logging.getLogger().addHandler(handler)
    try:
        redact.install_log_filter()
        try:
            raise RuntimeError(f"venue refused key {API_KEY}")
        except RuntimeError:
            logger.exception("request with %s to %s failed", API_KEY, f"postgresql://u:{DSN_PASSWORD}@h/db")
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "request with *** to postgresql://u:***@h/db failed" in text and "venue refused key ***" in text
    assert API_KEY not in text and DSN_PASSWORD not in text


def test_a_bad_dsn_in_an_error_does_not_show_its_password(tmp_path):
    cfg = tmp_path / "pumpwatch.toml"
    cfg.write_text(f'[sink.postgres]\ndsn = "mysql://pumpwatch:{DSN_PASSWORD}@db:3306/x"\n')
    r = _cli("run", "--config", str(cfg), "--data-dir", str(tmp_path / "d"), "--duration", "1")
    assert r.returncode == errors.EXIT_CONFIG and "is not a PostgreSQL connection string" in r.stderr
    assert DSN_PASSWORD not in r.stderr and "mysql://pumpwatch:***@db:3306/x" in r.stderr


def test_a_run_with_a_dsn_password_and_an_api_key_shows_neither(tmp_path):
    """The daemon under --simulate with a PostgreSQL sink whose server is down (its errors go to the
    log and /status) and a venue API key in the environment; it is stopped with SIGINT (exit 130).
    Logs, stdout, /status and every file it wrote under events/ are searched for both secrets."""
    data = tmp_path / "data"
    cfg = tmp_path / "pumpwatch.toml"
    cfg.write_text(
        f'metrics_address = "127.0.0.1:0"\n[sink.postgres]\n'
        f'dsn = "postgresql://pumpwatch:{DSN_PASSWORD}@127.0.0.1:1/pumpwatch?connect_timeout=1"\n'
        f"reconnect_initial_s = 0.2\nreconnect_max_s = 0.5\n"
    )
    env = {**os.environ, "PUMPWATCH_BINANCE_SPOT_API_KEY": API_KEY, "PUMPWATCH_BYBIT_LINEAR_API_KEY": API_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pumpwatch.cli", "run", "--simulate", "--config", str(cfg), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stderr_lines = []
    try:
        address = None
        deadline = time.time() + 40
        while address is None and time.time() < deadline:
            line = proc.stderr.readline()
            stderr_lines.append(line)
            m = re.search(r"/status and /metrics on http://(127\.0\.0\.1:\d+)", line)
            address = m.group(1) if m else None
        assert address, "".join(stderr_lines)[-3000:]
        # the scenario's 0G listing: t0 about 24 s in, its event folder some 48 s in
        status_text, st = "", {}
        deadline = time.time() + 75
        while time.time() < deadline:
            try:
                status_text = urllib.request.urlopen(f"http://{address}/status", timeout=5).read().decode()
            except TimeoutError:  # on a loaded machine the daemon may be slow to answer: ask again
                continue
            st = json.loads(status_text)
            if st.get("captures", {}).get("events") and st["sink"]["postgres"]["last_error"]:
                break
            time.sleep(1)
        assert st.get("captures", {}).get("events"), status_text[-2000:]
        assert st["sink"]["postgres"]["errors"] > 0  # the sink did fail (and said why) while we looked
        metrics = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    written = ""
    for root, _, files in os.walk(data / "events"):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                written += fh.read().decode("latin-1")
    assert "event.json" in str(list(os.walk(data / "events")))
    everything = "".join(stderr_lines) + err + out + status_text + metrics + written
    assert "postgres sink" in everything  # its errors were logged
    for secret in (DSN_PASSWORD, API_KEY):
        assert secret not in everything


def test_a_listing_only_memory_holds_at_exit_makes_the_run_exit_74_with_the_commands_to_capture_it(tmp_path):
    """`--simulate` announces 0G 24 s in; pending.json cannot be written (fail point) and the daemon
    stops at 30 s, before the window completes: the exit says so and how to capture it by hand."""
    r = _cli(
        "run",
        "--simulate",
        "--data-dir",
        str(tmp_path / "d"),
        "--duration",
        "30",
        env={"PUMPWATCH_FAILPOINTS": "events.pending=enospc"},
        timeout=90,
    )
    assert r.returncode == errors.EXIT_DISK, r.stderr[-3000:]
    assert "CRITICAL" in r.stderr and "pumpwatch capture 0G --at " in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("pumpwatch run: saving the captures waiting to") and "pending.json" in last and "0G_" in last
