"""The one atomic file write."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, durable: bool = True) -> None:
    """Replaces `path` with `data` so that a crash at any point leaves the old or the new content,
    never a mix or an empty file. `durable`: the file and its directory entry are fsynced before
    this returns (state a restart depends on); False only for files nothing depends on after a
    crash (a simulator's URL list).

    The temporary file sits next to `path` (same filesystem, so the rename is atomic) and is named
    `.<name>.<pid>.tmp`, so two processes never write the same one.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
