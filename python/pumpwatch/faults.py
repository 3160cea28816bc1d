"""Named fail points in the Python paths that write files, so tests can make each write fail the way
a full or failing disk does (the Rust log has its own, behind the `fail` crate's test feature).

    from pumpwatch import faults
    faults.arm("events.pending", "enospc", times=3)   # the next 3 writes of pending.json fail
    ...
    faults.disarm()                                   # all of them

or, for a daemon in another process, `PUMPWATCH_FAILPOINTS="events.pending=enospc*3,upbit.state=eio"`.

The points: `events.pending` (events/pending.json), `events.folder` (an event folder),
`upbit.state` (upbit_state.json), `instruments` (instruments/<venue>.json), `export` (the file
`pumpwatch export` writes). When nothing is armed a point costs one dict lookup of an empty dict.
"""

from __future__ import annotations

import errno
import os
import threading

ENV = "PUMPWATCH_FAILPOINTS"
POINTS = ("events.pending", "events.folder", "upbit.state", "instruments", "export")
ERRORS = {
    "enospc": errno.ENOSPC,
    "eio": errno.EIO,
    "erofs": errno.EROFS,
    "eacces": errno.EACCES,
    "edquot": errno.EDQUOT,
}

# name -> [errno, times left (None = until disarmed)]
_armed: dict[str, list] = {}
_lock = threading.Lock()


def arm(name: str, error: str = "enospc", times: int | None = None) -> None:
    """Makes the write at point `name` fail with `error` (`enospc`, `eio`, `erofs`, `eacces`,
    `edquot`), `times` times or until disarmed."""
    if name not in POINTS:
        raise ValueError(f"unknown fail point {name!r}; the points are: {', '.join(POINTS)}")
    if error not in ERRORS:
        raise ValueError(f"unknown fail point error {error!r}; use one of: {', '.join(ERRORS)}")
    with _lock:
        _armed[name] = [ERRORS[error], times]


def disarm(name: str | None = None) -> None:
    with _lock:
        if name is None:
            _armed.clear()
        else:
            _armed.pop(name, None)


def check(name: str, path: str | os.PathLike[str] | None = None) -> None:
    """Raises the armed error for point `name` (an `OSError` naming `path`, as the kernel's would)."""
    if not _armed:
        return
    with _lock:
        spec = _armed.get(name)
        if spec is None:
            return
        code, left = spec
        if left is not None:
            if left <= 1:
                del _armed[name]
            else:
                spec[1] = left - 1
    raise OSError(code, os.strerror(code), None if path is None else os.fspath(path))


def arm_from_env(value: str | None = None) -> None:
    """`name=error[*times],...` from PUMPWATCH_FAILPOINTS (read once at import)."""
    value = os.environ.get(ENV, "") if value is None else value
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, _, rest = item.partition("=")
        error, _, times = (rest or "enospc").partition("*")
        arm(name.strip(), error.strip() or "enospc", int(times) if times else None)


arm_from_env()
