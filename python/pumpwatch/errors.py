"""Exceptions PumpWatch raises. Each message says what happened and what to do about it.

The Rust core raises these same classes (the bindings look them up here), so callers catch one
set of exceptions whichever path (Rust or pure Python) did the work.
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


class FrameError(ValueError):
    """A venue frame could not be parsed (the ingest path quarantines such frames instead)."""
