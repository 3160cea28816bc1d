"""The pure-Python path of PumpWatch: the reference implementation, in plain Python.

It reads and writes the same on-disk log as the Rust core (docs/FORMAT.md), byte for byte. It is
the baseline the benchmarks measure the Rust path against, and the oracle the differential tests
compare it with: when the two disagree, the format spec decides which one is wrong.
"""

from .store import Store, verify

__all__ = ["Store", "verify", "parse"]


def parse(venue, frame):
    """Parses one venue frame into trades (pure Python); imported on first use."""
    from .parse import parse as _p

    return _p(venue, frame)
