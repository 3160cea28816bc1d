"""zstd compression of sealed segments (docs/FORMAT.md "Compressed segment"): every reader (Rust
store, read-only store in another process, pure-Python reader, verify) reads compressed segments as
it read them plain; a crash at any point of a compression loses nothing; damaged compressed bytes
are reported and skipped frame by frame; retention deletes compressed segments like plain ones."""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pumpwatch
import pumpwatch.purepy as purepy
from conftest import make_trades
from pumpwatch.config import ConfigError, from_dict
from pumpwatch.retention import RetentionPolicy, apply_retention, log_bytes
from pumpwatch.sim.server import SimVenue

START_NS = 1_790_000_000_000_000_000
ALL = (None, None)


def _files(data: Path, suffix: str) -> list[Path]:
    return sorted((data / "log").glob(f"*{suffix}"))


def _simulated_log(data: Path, zstd_level: int, frames_per_venue: int = 1500) -> int:
    """Frames of all twelve venues as the simulator renders them, ingested interleaved (as the
    recorder does) into small segments, with markers and a quarantined frame. Returns the number
    of trades the ingest stored."""
    frames = {
        v: SimVenue(v, seed=3).render_frames(frames_per_venue, start_ns=START_NS, spacing_ns=7_000_000)
        for v in pumpwatch.VENUES
    }
    stored = 0
    with pumpwatch.Store(data, segment_max_bytes=1 << 18, zstd_level=zstd_level) as store:
        for k in range(0, frames_per_venue, 100):
            for venue, fs in frames.items():
                n, _ = store.ingest_many(venue, [f.encode() for f in fs[k : k + 100]], START_NS + k * 7_000_000)
                stored += n
            store.append_marker("connection_up", ts_ns=START_NS + k * 7_000_000, venue="okx-swap", detail=f"k={k}")
        store.append_quarantined("gate-spot", START_NS, "not JSON", b"{half a frame")
        stats = store.ingest_stats()
        assert stats["quarantined"] == 0 and stats["trades"] == stored
        store.close(seal=True)
    return stored


def _everything(reader) -> tuple:
    """What tools read: all trades (with non-trades), windows, markers, quarantined frames."""
    windows = [
        reader.query(START_NS + a * 1_000_000_000, START_NS + b * 1_000_000_000).to_pylist()
        for a, b in ((0, 1), (3, 4), (5, 9))
    ]
    return (
        reader.query(*ALL, include_non_trades=True).to_pylist(),
        windows,
        reader.markers().to_pylist(),
        reader.quarantined(),
    )


def test_queries_read_the_same_before_and_after_compression(tmp_path):
    data = tmp_path / "d"
    stored = _simulated_log(data, zstd_level=0)
    plain_files = _files(data, ".pwlog")[:-1]  # the sealed ones; the last is the new active one
    assert len(plain_files) > 5 and not _files(data, ".pwzst")
    plain_bytes = sum(p.stat().st_size for p in plain_files)
    with pumpwatch.Store.open_readonly(data) as r:
        before = _everything(r)
    before_purepy = _everything(purepy.Store.open_readonly(data))
    assert len(before[0]) == stored > 20_000  # every trade the ingest stored, non-trades included
    assert before_purepy == before
    verified_plain = pumpwatch.verify(data)

    # The writer compresses what was sealed plain when it opens with a level.
    with pumpwatch.Store(data, segment_max_bytes=1 << 18, zstd_level=3) as store:
        assert store.wait_compressed(120)
        stats = store.compression_stats()
        assert stats["errors"] == 0 and stats["pending"] == 0 and stats["segments"] == len(plain_files)
        assert stats["plain_bytes"] == plain_bytes
        assert _everything(store) == before  # the writer's own views
    compressed = _files(data, ".pwzst")
    assert len(compressed) == len(plain_files)
    assert [p.name for p in _files(data, ".pwlog")] == [f"{len(plain_files) + 1:020d}.pwlog"]  # only the active one
    assert sum(p.stat().st_size for p in compressed) < plain_bytes / 3
    with pumpwatch.Store.open_readonly(data) as r:
        assert _everything(r) == before
    assert _everything(purepy.Store.open_readonly(data)) == before
    for v in (pumpwatch.verify(data), purepy.verify(data)):
        assert v["ok"], v
        assert {k: v[k] for k in ("segments", "records", "trades", "markers", "quarantined", "bytes")} == {
            k: verified_plain[k] for k in ("segments", "records", "trades", "markers", "quarantined", "bytes")
        }


def test_level_zero_keeps_segments_plain_and_the_level_is_configurable(tmp_path):
    data = tmp_path / "d"
    with pumpwatch.Store(data, segment_max_bytes=1 << 16, zstd_level=0) as store:
        store.append_trades(make_trades(3000, seed=1))
        store.roll()
        assert store.wait_compressed(1) and store.compression_stats()["segments"] == 0
    assert not _files(data, ".pwzst") and len(_files(data, ".pwlog")) > 3
    with pytest.raises(pumpwatch.InvalidInputError, match="zstd_level"):
        pumpwatch.Store(tmp_path / "e", zstd_level=23)
    assert from_dict({"log": {"zstd_level": 9}}).log.zstd_level == 9
    assert from_dict({}).log.zstd_level == 3
    with pytest.raises(ConfigError, match=r"log\.zstd_level"):
        from_dict({"log": {"zstd_level": 40}})


_READER = textwrap.dedent("""
    import sys, time, hashlib, pathlib
    import pumpwatch
    data, stop = sys.argv[1], pathlib.Path(sys.argv[2])
    reader = pumpwatch.Store.open_readonly(data)
    def look():
        t = reader.query()
        digest = hashlib.sha256("|".join(map(str, t.column("trade_id").to_pylist())).encode()).hexdigest()
        print(t.num_rows, digest, flush=True)
    look()
    while not stop.exists():
        look()
        time.sleep(0.01)
    look()
""")


def test_a_reader_in_another_process_reads_across_a_compression(tmp_path):
    data = tmp_path / "d"
    trades = make_trades(20_000, seed=7)
    with pumpwatch.Store(data, segment_max_bytes=1 << 18, zstd_level=0) as store:
        store.append_trades(trades)
        store.close(seal=True)
    stop = tmp_path / "stop"
    child = subprocess.Popen([sys.executable, "-c", _READER, str(data), str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        first = child.stdout.readline().split()
        assert int(first[0]) == 20_000
        with pumpwatch.Store(data, segment_max_bytes=1 << 18, zstd_level=3) as store:
            assert store.wait_compressed(120)
        assert len(_files(data, ".pwlog")) == 1 and len(_files(data, ".pwzst")) > 3
        stop.touch()  # the reader's last look is after every sealed segment is compressed
        out, _ = child.communicate(timeout=120)
    finally:
        child.kill()
    looks = [line.split() for line in out.splitlines()]
    assert looks, "the reader kept reading"
    assert all(look == first for look in looks), "every look, before, during and after, saw every trade"


_SLOW_COMPRESSING_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    import pumpwatch
    from conftest import make_trades
    # The highest level: compressing takes long enough to be killed in the middle of it.
    store = pumpwatch.Store(sys.argv[1], segment_max_bytes=64 << 20, zstd_level=22)
    trades = make_trades(20_000, seed=11)
    for k in range(12):
        store.append_trades(trades)
    store.roll()
    print("rolled", flush=True)
    sys.stdin.read()
""")


def test_killed_in_the_middle_of_a_compression_loses_nothing(tmp_path):
    data = tmp_path / "d"
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_COMPRESSING_WRITER, str(data), str(Path(__file__).parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "rolled"
        tmp = data / "log" / "00000000000000000001.pwzst.tmp"
        deadline = time.monotonic() + 120
        while not tmp.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert tmp.exists(), "the compression started"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        child.kill()
    assert (data / "log" / "00000000000000000001.pwlog").exists(), "the plain segment outlives a killed compression"
    # Readers meanwhile: every trade, once (the temporary file is not a segment).
    sent = 12 * 20_000
    assert pumpwatch.Store.open_readonly(data).query().num_rows == sent
    assert purepy.verify(data)["trades"] == sent
    with pumpwatch.Store(data, zstd_level=1) as store:
        assert any("unfinished compression removed" in n for n in store.recovery_report["compression"])
        assert store.wait_compressed(120)
        assert store.query().num_rows == sent
    assert not tmp.exists() and (data / "log" / "00000000000000000001.pwzst").exists()
    assert not (data / "log" / "00000000000000000001.pwlog").exists()
    assert pumpwatch.verify(data)["trades"] == sent


def _compressed_with_plain_copy(tmp_path) -> tuple[Path, Path, int]:
    """A log with three sealed segments compressed, and a copy of the plain files before."""
    data = tmp_path / "d"
    with pumpwatch.Store(data, segment_max_bytes=1 << 18, zstd_level=0) as store:
        store.append_trades(make_trades(9_000, seed=5))
        store.close(seal=True)
    copy = tmp_path / "plain"
    shutil.copytree(data / "log", copy)
    with pumpwatch.Store(data, segment_max_bytes=1 << 18, zstd_level=3) as store:
        assert store.wait_compressed(120)
    return data, copy, 9_000


@pytest.mark.parametrize("writer", ["rust", "purepy"])
def test_both_copies_after_a_crash_keep_one_and_lose_nothing(tmp_path, writer):
    data, copy, n = _compressed_with_plain_copy(tmp_path)
    log = data / "log"
    names = [p.name for p in _files(data, ".pwzst")]
    assert len(names) >= 3
    first, second, third = (name[:20] for name in names[:3])
    # Killed after the rename, before the plain copy was removed: both, the compressed one whole.
    shutil.copy(copy / f"{first}.pwlog", log)
    shutil.copy(copy / f"{first}.pwidx", log)
    # Both, the compressed one cut short (a file system that kept only part of it).
    shutil.copy(copy / f"{second}.pwlog", log)
    raw = (log / f"{second}.pwzst").read_bytes()
    (log / f"{second}.pwzst").write_bytes(raw[: len(raw) // 2])
    # Killed while writing: a temporary file beside the plain segment.
    (log / f"{third}.pwzst").rename(log / f"{third}.pwzst.tmp")
    shutil.copy(copy / f"{third}.pwlog", log)
    for reader in (pumpwatch.Store.open_readonly(data), purepy.Store.open_readonly(data)):
        assert reader.query().num_rows == n

    store = pumpwatch.Store(data, zstd_level=3) if writer == "rust" else purepy.Store(data)
    with store:
        notes = "\n".join(store.recovery_report["compression"])
        assert f"{first}.pwlog: compression finished" in notes
        assert f"{second}.pwzst: incomplete compressed copy removed" in notes
        assert store.query().num_rows == n
        if writer == "rust":
            assert store.wait_compressed(120)
    assert not (log / f"{first}.pwlog").exists() and (log / f"{first}.pwzst").exists()
    assert (log / f"{second}.pwzst").exists() == (writer == "rust")  # purepy leaves it plain: still readable
    assert not list(log.glob("*.tmp"))
    for v in (pumpwatch.verify(data), purepy.verify(data)):
        assert v["ok"] and v["trades"] == n, v


def test_damaged_compressed_bytes_are_reported_and_only_their_frame_is_skipped(tmp_path):
    data, _, n = _compressed_with_plain_copy(tmp_path)
    path = _files(data, ".pwzst")[1]
    raw = bytearray(path.read_bytes())
    frames = struct.unpack_from("<I", raw, 12)[0]
    assert frames >= 3
    start, end, _min, _max, trades, _others, offset, length = struct.unpack_from("<QQqqIIQI", raw, 128 + 64)
    raw[offset + length // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    reports = [pumpwatch.verify(data), purepy.verify(data)]
    for v in reports:
        assert not v["ok"]
        assert [(d["segment"], d["offset"], d["length"]) for d in v["damaged"]] == [(path.name, start, end - start)]
        assert "CRC" in v["damaged"][0]["reason"]
        assert v["trades"] == n - trades
    for reader in (pumpwatch.Store.open_readonly(data), purepy.Store.open_readonly(data)):
        assert reader.query().num_rows == n - trades  # every other frame still reads


def test_retention_deletes_compressed_segments_by_budget_and_age(tmp_path):
    data = tmp_path / "d"
    store = pumpwatch.Store(data, segment_max_bytes=1 << 16, zstd_level=0)
    store.append_trades(make_trades(4000, seed=2))
    store.roll()
    store.close()
    store = pumpwatch.Store(data, segment_max_bytes=1 << 16, zstd_level=3)
    assert store.wait_compressed(120)
    store.append_trades(make_trades(500, seed=3))
    store._log.roll()
    # The budget is measured on a still disk: the compression of what the roll sealed has settled
    # (it would otherwise shrink that segment between any two of these readings).
    assert store.wait_compressed(120)
    active = store._log.active_segment()[0]
    compressed = _files(data, ".pwzst")
    assert len(compressed) > 3
    on_disk = sum(p.stat().st_size for p in _files(data, ".pwzst") + _files(data, ".pwlog"))
    assert log_bytes(data) == on_disk
    # A budget that needs two segments gone: the two oldest, compressed.
    budget = on_disk - compressed[0].stat().st_size - compressed[1].stat().st_size // 2
    deleted = apply_retention(data, active, RetentionPolicy(max_age_s=0, max_bytes=budget))
    assert deleted == [compressed[0].name, compressed[1].name]
    assert log_bytes(data) <= budget
    store.append_trades(make_trades(500, seed=5))  # a plain sealed segment after compressed ones,
    store._log.roll()  # compressed in the background while the age limit deletes it
    active = store._log.active_segment()[0]
    # Age: everything sealed goes, compressed or plain, never the active segment.
    future = time.time_ns() + 10 * 3600 * 10**9
    deleted = apply_retention(data, active, RetentionPolicy(max_age_s=3600, max_bytes=0), now_ns=future)
    assert deleted and all(int(name[:20]) < active for name in deleted)
    # A segment deleted while being compressed is not brought back by the compression.
    assert store.wait_compressed(120)
    left = sorted(p.name for p in (data / "log").iterdir())
    assert left == [f"{active:020d}.pwidx", f"{active:020d}.pwlog"]
    store.append_trades(make_trades(10, seed=4))
    assert store.query().num_rows == 10
    store.close()
    assert pumpwatch.verify(data)["ok"]


def test_a_segment_both_plain_and_compressed_counts_once_against_the_budget(tmp_path):
    """Between the compressor's rename of a finished .pwzst and its unlink of the .pwlog, the
    segment is on disk twice for a moment: the budget counts it once (its compressed size), so
    retention running in that moment deletes no more than the budget asks for."""
    data, copy, _n = _compressed_with_plain_copy(tmp_path)
    log = data / "log"
    names = [p.name[:20] for p in _files(data, ".pwzst")]
    settled = log_bytes(data)
    shutil.copy(copy / f"{names[-1]}.pwlog", log)  # the newest sealed one, caught mid-compression
    assert log_bytes(data) == settled
    active = int(names[-1]) + 1
    assert apply_retention(data, active, RetentionPolicy(max_age_s=0, max_bytes=settled)) == []
    assert (log / f"{names[0]}.pwzst").exists()


def test_segments_compressed_by_the_python_reference_read_in_rust_and_match_its_blocks(tmp_path):
    from pumpwatch.purepy.store import compress_segment

    data, copy, n = _compressed_with_plain_copy(tmp_path)  # compressed by Rust
    by_python = tmp_path / "py"
    shutil.copytree(copy, by_python / "log")
    seqs = [int(p.name[:20]) for p in _files(data, ".pwzst")]
    for seq in seqs:
        assert compress_segment(by_python / "log", seq, level=3)
        assert not compress_segment(by_python / "log", seq, level=3)  # already done
    assert [p.name for p in _files(by_python, ".pwzst")] == [p.name for p in _files(data, ".pwzst")]
    for rust_file, py_file in zip(_files(data, ".pwzst"), _files(by_python, ".pwzst"), strict=False):
        r, p = rust_file.read_bytes(), py_file.read_bytes()
        frames = struct.unpack_from("<I", r, 12)[0]
        assert struct.unpack_from("<I", p, 12)[0] == frames
        assert r[24:40] == p[24:40] and r[64:128] == p[64:128]  # plain length, first frame, plain header
        # The same blocks with the same index fields (the zstd bytes may differ between library versions).
        assert [r[128 + 64 * k : 128 + 64 * k + 40] for k in range(frames)] == [
            p[128 + 64 * k : 128 + 64 * k + 40] for k in range(frames)
        ]
    with pumpwatch.Store.open_readonly(data) as a, pumpwatch.Store.open_readonly(by_python) as b:
        assert b.query().num_rows == n
        assert a.query().equals(b.query())
    for v in (pumpwatch.verify(by_python), purepy.verify(by_python)):
        assert v["ok"] and v["trades"] == n, v
