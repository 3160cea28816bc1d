"""Exceptions PumpWatch raises. Each message says what happened and what to do about it.

The Rust core raises these same classes (rust/py/src/errors.rs imports each by name once and
checks they are all here when the extension loads), so callers catch one set of exceptions
whichever path (Rust or pure Python) did the work. Renaming a class means renaming it there too.
"""


class StoreError(Exception):
    """Base class for errors of the trade store."""


class StoreLockedError(StoreError):
    """Another process already holds the data directory for writing."""


class DiskFullError(StoreError, OSError):
    """The disk (or the process's file-size limit) has no room for the batch; nothing stored was touched."""


class CorruptLogError(StoreError):
    """A file in the data directory is not a readable PumpWatch log file."""


class StoreClosedError(StoreError):
    """The store was closed."""


class InvalidInputError(StoreError, ValueError):
    """A value handed to PumpWatch (a trade field, a setting) is not valid."""


class InvalidTradeError(InvalidInputError):
    """A trade in a batch is not valid; the batch was not written."""


class ConfigError(InvalidInputError):
    """The configuration file or a setting in it is not valid (pumpwatch.config raises it)."""


class FrameError(ValueError):
    """A venue frame could not be parsed (the ingest path quarantines such frames instead)."""


class DataDirError(StoreError):
    """The data directory cannot be written (read-only, not ours, not a directory): refused at
    start, before any connection opens. `errno` and `path` say what the OS said about which path."""

    def __init__(self, message: str, errno: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.path = path


# ---------------------------------------------------------------------------------------------
# Exit codes of the `pumpwatch` command (the README has the table). Configuration, disk and
# signals each have their own, so a supervisor (systemd, a script) can tell them apart.

EXIT_OK = 0
EXIT_FAILURE = 1  # the command could not do what was asked (bad argument, no daemon, verify found damage)
EXIT_USAGE = 2  # the command line itself (argparse)
EXIT_SOFTWARE = 70  # an unexpected error: a bug, reported with its traceback
EXIT_DISK = 74  # the data directory or a file in it could not be written or read (full, read-only, EIO)
EXIT_LOCKED = 75  # another recorder holds the data directory: try again once it stopped
EXIT_CONFIG = 78  # pumpwatch.toml or a setting is wrong, or an optional dependency it needs is missing
EXIT_SIGNAL = 128  # + the signal: stopped cleanly by SIGINT (130) or SIGTERM (143)

_DISK_ERRNOS = {
    "ENOSPC",
    "EDQUOT",
    "EFBIG",
    "EIO",
    "EROFS",
    "EACCES",
    "EPERM",
    "ENOTDIR",
    "EISDIR",
    "ENOENT",
    "EEXIST",
    "ENXIO",
    "EUCLEAN",
    "ENOTEMPTY",
}


def disk_advice(err: int | None, path: str | None = None) -> str:
    """What a person does about an OS error of a file operation."""
    import errno
    import os

    p = path or "the data directory"
    name = errno.errorcode.get(err or 0, "")
    if name in ("ENOSPC", "EDQUOT", "EFBIG"):
        return (
            f"free space on the filesystem of {p}"
            + (f" (df -h {path})" if path else "")
            + ", or lower [log] retention_days / disk_budget_bytes, then start again"
        )
    if name == "EROFS":
        return f"the filesystem of {p} is read-only: remount it read-write or choose another --data-dir"
    if name in ("EACCES", "EPERM"):
        user = os.environ.get("USER") or str(os.getuid())
        return f"user {user} may not write {p}: fix its owner or mode (chown/chmod) or choose another --data-dir"
    if name == "EIO":
        return f"the disk under {p} reported an I/O error: check the kernel log (dmesg) and the disk before going on"
    if name in ("ENOTDIR", "EEXIST"):
        return f"a file stands where a directory is needed ({p}): move it away or choose another --data-dir"
    if name == "ENOENT":
        return f"{p} does not exist: create it or correct the path"
    return "check the path and the disk, then start again"


def exit_code_for(e: BaseException) -> int:
    """The exit code for an exception that ends the command."""
    import errno

    if isinstance(e, (ConfigError, ImportError)):
        return EXIT_CONFIG
    if isinstance(e, StoreLockedError):
        return EXIT_LOCKED
    if isinstance(e, (DiskFullError, DataDirError)):
        return EXIT_DISK
    if isinstance(e, OSError) and errno.errorcode.get(e.errno or 0, "") in _DISK_ERRNOS and e.filename is not None:
        return EXIT_DISK
    if isinstance(e, StoreError) and _os_error_in(e) in _DISK_ERRNOS:
        return EXIT_DISK  # an I/O error of the Rust log (msync, fsync, rename...), its errno in the text
    if isinstance(e, (StoreError, OSError, ValueError)):
        return EXIT_FAILURE
    return EXIT_SOFTWARE


def _os_error_in(e: BaseException) -> str:
    """The errno name quoted in a Rust I/O error's text (`... (os error 5)`), or ""."""
    import errno
    import re

    m = re.search(r"\(os error (\d+)\)", str(e))
    return errno.errorcode.get(int(m.group(1)), "") if m else ""


def describe(e: BaseException, command: str = "") -> str:
    """One line for the person at the terminal: what failed, on which path, and what to do. Secrets
    (DSN passwords, API keys) are taken out."""
    import errno

    from .redact import redact

    what = f"pumpwatch {command}".strip()
    if isinstance(e, ImportError):
        text = str(e)
        if "pip install" not in text:
            name = e.name or text
            text = f"the Python package {name!r} is not installed: pip install {name}"
        return redact(f"{what}: {text}")
    if isinstance(e, OSError) and not isinstance(e, StoreError) and e.errno is not None and e.strerror:
        path = None if e.filename is None else str(e.filename)
        on = f" ({path}" + (f" -> {e.filename2}" if e.filename2 else "") + ")" if path else ""
        code = errno.errorcode.get(e.errno, str(e.errno))
        return redact(f"{what}: {e.strerror} [{code}]{on}; {disk_advice(e.errno, path)}")
    if isinstance(e, OSError) and isinstance(e, StoreError) and e.strerror:
        return redact(f"{what}: {e.strerror}")  # DiskFullError: the message already says what to do
    name = _os_error_in(e)
    if isinstance(e, StoreError) and name in _DISK_ERRNOS:
        return redact(f"{what}: {e}; {disk_advice(getattr(errno, name))}")
    return redact(f"{what}: {e}")
