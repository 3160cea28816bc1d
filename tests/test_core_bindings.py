"""The Rust bindings as Python sees them. They raise the classes of `pumpwatch.errors` (the ones the
pure-Python path raises), the same class object every time, with the core's message; a full disk
keeps its errno. Their signatures show the real defaults (what `_core.pyi` and stubtest hold)."""

from __future__ import annotations

import errno
import inspect
import subprocess
import sys
import textwrap

import crc32c
import pyarrow as pa
import pytest

import pumpwatch
from pumpwatch import _core, errors

TRADE = dict(
    venue="binance-spot",
    symbol="BTCUSDT",
    trade_id="1",
    price="83680.00",
    qty="0.001",
    side="buy",
    ts_ns=1_790_000_000_000_000_000,
    recv_ns=1_790_000_000_001_000_000,
)


def _raised(action) -> BaseException:
    with pytest.raises(Exception) as info:
        action()
    return info.value


def _newer_format(data_dir) -> None:
    """Rewrites the segment header of `data_dir` as a PumpWatch of the next format version would."""
    seg = next((data_dir / "log").glob("*.pwlog"))
    raw = bytearray(seg.read_bytes())
    raw[8:10] = (_core.FORMAT_VERSION + 1).to_bytes(2, "little")
    raw[32:36] = crc32c.crc32c(bytes(raw[0:32])).to_bytes(4, "little")
    seg.write_bytes(bytes(raw))


def test_each_core_error_is_the_python_class_every_time(tmp_path):
    data_dir = tmp_path / "data"
    store = pumpwatch.Store(data_dir)
    store.append_trades([pumpwatch.Trade(**TRADE)])
    bad_row = pa.Table.from_pylist([{**TRADE, "price": "1,5", "flags": 0}], schema=pumpwatch.TRADE_SCHEMA)
    cases = [
        (errors.StoreLockedError, lambda: pumpwatch.Store(data_dir), "already open for writing"),
        (errors.InvalidInputError, lambda: pumpwatch.Trade(**{**TRADE, "venue": "nope"}), 'unknown venue "nope"'),
        (errors.InvalidTradeError, lambda: store.append_trades(bad_row), "row 0"),
        (errors.FrameError, lambda: _core.parse_frame("binance-spot", b"garbage"), "at byte 0"),
    ]
    for cls, action, text in cases:
        first, second = _raised(action), _raised(action)
        assert type(first) is cls and type(second) is cls, (cls, first, second)
        assert text in str(first) and str(first) == str(second)
    store.close()
    closed = [_raised(lambda: store.append_trades([pumpwatch.Trade(**TRADE)])) for _ in range(2)]
    assert [type(e) for e in closed] == [errors.StoreClosedError] * 2
    assert "open it again" in str(closed[0])

    _newer_format(data_dir)
    newer = [_raised(lambda: pumpwatch.Store(data_dir)) for _ in range(2)]
    assert [type(e) for e in newer] == [errors.CorruptLogError] * 2
    assert "newer" in str(newer[0]) and "upgrade" in str(newer[0])


def test_a_full_disk_raises_disk_full_error_with_its_errno(tmp_path):
    """The file-size limit stands in for a full disk (EFBIG is "no space" to the core), in a child
    process so the limit touches nothing of the test run."""
    code = textwrap.dedent(
        """
        import resource, sys, pumpwatch
        store = pumpwatch.Store(sys.argv[1], fsync_interval=0, segment_max_bytes=4 << 20)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        raised = []
        for b in range(100000):
            try:
                store.append_trades([pumpwatch.Trade("gate-spot", "BTC_USDT", str(b * 100 + j), "77474", "0.000021",
                                                     "sell", 1_700_000_000_000_000_000 + b * 100 + j, 1)
                                     for j in range(100)])
            except pumpwatch.DiskFullError as e:
                raised.append(e)
                if len(raised) == 2:
                    break
        a, b = raised
        print(type(a) is type(b) is pumpwatch.errors.DiskFullError, isinstance(a, OSError), a.errno, b.errno,
              a.strerror == str(a.args[1]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True", str(errno.EFBIG), str(errno.EFBIG), "True"], out.stderr


def test_a_missing_exception_class_fails_the_import_by_name():
    """The bindings check `pumpwatch.errors` when the extension loads: a broken install says which
    class is missing at import, instead of failing at the first error."""
    code = textwrap.dedent(
        """
        import sys, types
        fake = types.ModuleType("pumpwatch.errors")
        sys.modules["pumpwatch.errors"] = fake
        try:
            import pumpwatch._core
        except AttributeError as e:
            print("AttributeError", e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("AttributeError") and "StoreError" in out.stdout, (out.stdout, out.stderr)


def _callables_of_core():
    for name in _core.__all__:
        obj = getattr(_core, name)
        if isinstance(obj, type):
            yield name, obj
            yield from ((f"{name}.{m}", v) for m, v in vars(obj).items() if callable(v) and not m.startswith("__"))
        elif callable(obj):
            yield name, obj


def test_every_default_is_visible_to_python():
    """PyO3 shows a default written as an expression (`64 << 20`, `String::new()`) as `...`; the
    bindings write literals so `inspect.signature`, help() and stubtest see the real value."""
    hidden = {
        name: [p.name for p in inspect.signature(f).parameters.values() if p.default is Ellipsis]
        for name, f in _callables_of_core()
    }
    assert {name: params for name, params in hidden.items() if params} == {}
    assert inspect.signature(_core.LogWriter).parameters["ring_bytes"].default == 128 << 20
    assert inspect.signature(_core.LogWriter.append_marker).parameters["detail"].default == ""
