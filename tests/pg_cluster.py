"""A PostgreSQL server for the sink's tests and benchmarks: the one named by
PUMPWATCH_TEST_PG_DSN, else a throwaway cluster of this machine's PostgreSQL binaries (its own
user, a temporary directory, 127.0.0.1 on a free port), else none, with the reason.

initdb and postgres refuse to run as root, so as root the cluster runs as the `postgres` user the
Debian packages create (or `nobody`), in a directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV_DSN = "PUMPWATCH_TEST_PG_DSN"


def find_binaries() -> str | None:
    """The directory holding initdb and pg_ctl (the newest version installed), or None."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: str | None, argv: list[str], **kw) -> subprocess.CompletedProcess:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, **kw)


@contextmanager
def throwaway_cluster(bindir: str, *, durable: bool = False) -> Iterator[str]:
    """Starts a fresh cluster and yields its DSN; stops and deletes it afterwards. `durable=False`
    turns fsync off (tests kill connections and processes, never the server); benchmarks keep the
    server's defaults so their figures mean something."""
    user = None
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None:
            raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
    root = tempfile.mkdtemp(prefix="pumpwatch-pg-")
    data = os.path.join(root, "data")
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    try:
        r = _run_as(
            user,
            [
                os.path.join(bindir, "initdb"),
                "-D",
                data,
                "-U",
                "pumpwatch",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip() or r.stdout.strip()}")
        port = _start_on_a_free_port(user, bindir, data, root, durable=durable)
        yield f"postgresql://pumpwatch@127.0.0.1:{port}/postgres"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            _run_as(user, [os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"], timeout=120)
        shutil.rmtree(root, ignore_errors=True)


# The port is chosen before the server binds it, and initdb takes seconds: under parallel test
# workers another test's listener can take the port in between. The server then names the bind
# failure in its log, and only that failure is worth a new port.
_BIND_TAKEN = "could not bind IPv4 address"
_START_ATTEMPTS = 5


def _start_on_a_free_port(user: str | None, bindir: str, data: str, root: str, *, durable: bool) -> int:
    """Starts the cluster in `data` on a free port, choosing again when another process took the
    port first; returns the port. Any other failure raises with the server's log."""
    log_path = os.path.join(root, "server.log")
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = _free_port()
        opts = f"-p {port} -h 127.0.0.1 -k {root} -c max_connections=60 -c shared_buffers=128MB"
        if not durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log_before = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        r = _run_as(
            user,
            [os.path.join(bindir, "pg_ctl"), "-D", data, "-o", opts, "-l", log_path, "-w", "-t", "120", "start"],
            timeout=180,
        )
        if r.returncode == 0:
            return port
        log = ""
        if os.path.exists(log_path):
            with open(log_path) as f:
                f.seek(log_before)
                log = f.read()
        if _BIND_TAKEN in log and attempt < _START_ATTEMPTS:
            continue
        raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip() or r.stdout.strip()}\n{log[-2000:]}")
    raise AssertionError("unreachable: the last attempt returns or raises")


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def reachable(dsn: str, timeout_s: float = 30.0) -> str | None:
    """None when a connection to `dsn` works (retrying for a while), else why not."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=5):
                return None
        except psycopg.Error as e:
            if time.monotonic() > deadline:
                return str(e).strip()
            time.sleep(0.5)


@contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[tuple[str | None, str]]:
    """Yields (dsn, where it came from), or (None, why there is none)."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        problem = reachable(dsn)
        if problem:
            raise RuntimeError(f"{ENV_DSN} is set but the server does not answer: {problem}")
        yield dsn, ENV_DSN
        return
    bindir = find_binaries()
    if bindir is None:
        yield (
            None,
            (
                f"no PostgreSQL server: set {ENV_DSN}, or install PostgreSQL (apt-get install postgresql) "
                f"so a throwaway cluster can be started"
            ),
        )
        return
    with throwaway_cluster(bindir, durable=durable) as dsn:
        problem = reachable(dsn)
        if problem:
            raise RuntimeError(f"the throwaway cluster does not answer: {problem}")
        yield dsn, f"throwaway cluster ({bindir})"
