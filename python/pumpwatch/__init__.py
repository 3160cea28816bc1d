"""PumpWatch: records every public trade on twelve overseas venues and captures Upbit KRW listing pumps.

The hot path (parsing, the segment log, the ring buffer) is Rust (`pumpwatch._core`); this package
is its Python face. `pumpwatch.purepy` does the same jobs in plain Python, as the benchmark baseline and
the oracle of differential tests.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from ._core import FLAGS, FORMAT_VERSION, VENUES, RingReader, Trade, TradeRing
from .errors import (
    CorruptLogError,
    DiskFullError,
    FrameError,
    InvalidInputError,
    InvalidTradeError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
)
from .frames import ParseResult, parse
from .store import TRADE_SCHEMA, ReadOnlyStore, Store, verify

if TYPE_CHECKING:  # loaded on first use (__getattr__ below); type checkers see their signatures
    from .dataset import load_event_trades, load_events

try:
    __version__ = _version("pumpwatch")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"


def __getattr__(name: str) -> object:
    # The research-dataset readers import the capture machinery: loaded on first use only.
    if name in ("load_events", "load_event_trades"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'pumpwatch' has no attribute {name!r}")


__all__ = [
    "FLAGS",
    "FORMAT_VERSION",
    "TRADE_SCHEMA",
    "VENUES",
    "CorruptLogError",
    "DiskFullError",
    "FrameError",
    "InvalidInputError",
    "InvalidTradeError",
    "ParseResult",
    "ReadOnlyStore",
    "RingReader",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "Trade",
    "TradeRing",
    "load_event_trades",
    "load_events",
    "parse",
    "verify",
]
