"""The pure-Python path of PumpWatch: the reference implementation, in plain Python.

It reads and writes the same on-disk log as the Rust core (docs/FORMAT.md), byte for byte. It is
the baseline the benchmarks measure the Rust path against, and the oracle the differential tests
compare it with: when the two disagree, the format spec decides which one is wrong.
"""

# Binding the function after its module is imported keeps `pumpwatch.purepy.parse` the function
# (importing a submodule would otherwise set the package attribute to the module).
from .parse import ParseContext, ParseResult, parse
from .store import Store, verify

__all__ = ["ParseContext", "ParseResult", "Store", "parse", "verify"]
