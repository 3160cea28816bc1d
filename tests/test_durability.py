"""The no-loss promise of the store: SIGKILL at random moments, torn and corrupted tails, a second
writer, a reader in another process, a full disk. Every check counts what was acknowledged."""

from __future__ import annotations

import os
import random
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
from conftest import make_trades

HEADER_LEN = 64

WRITER = textwrap.dedent(
    """
    import sys, pumpwatch
    path, run, fsync = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    store = pumpwatch.Store(path, fsync_interval=fsync, segment_max_bytes=1 << 20)
    batch = 0
    while True:
        trades = [
            pumpwatch.Trade("binance-spot", "BTCUSDT", str((run * 100000 + batch) * 1000 + j),
                            "107407.88", "0.001", "buy", 1_700_000_000_000_000_000 + batch * 1000 + j, 1)
            for j in range(200)
        ]
        store.append_trades(trades)
        print(batch, flush=True)   # the batch is acknowledged only after append_trades returned
        batch += 1
    """
)


def _acknowledged_ids(run: int, lines: list[str]) -> set[int]:
    ids = set()
    for line in lines:
        if line.strip().isdigit():
            b = int(line)
            ids.update((run * 100000 + b) * 1000 + j for j in range(200))
    return ids


def test_sigkill_at_random_moments_loses_no_acknowledged_batch(tmp_path):
    rng = random.Random(1234)
    data = tmp_path / "data"
    acknowledged: set[int] = set()
    for run in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data), str(run), rng.choice(["0", "0.01", "1"])],
            stdout=subprocess.PIPE,
            text=True,
        )
        # Wait until it is really appending, then kill it mid-stream.
        first = proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        acknowledged |= _acknowledged_ids(run, [first, *rest.splitlines()])

        with pumpwatch.Store(data) as store:
            ids = [int(i) for i in store.query().column("trade_id").to_pylist()]
        assert len(ids) == len(set(ids)), f"duplicates after run {run}"
        missing = acknowledged - set(ids)
        assert not missing, f"run {run}: {len(missing)} acknowledged trades lost"
        report = pumpwatch.verify(data)
        assert report["ok"], {k: report[k] for k in ("damaged", "torn_tail", "headers")}
    assert len(acknowledged) > 12 * 200


def _record_spans(segment: Path) -> list[tuple[int, int]]:
    raw = segment.read_bytes()
    spans, off = [], HEADER_LEN
    while off + 8 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, off)
        if length == 0:
            break
        spans.append((off, off + 8 + length))
        off += 8 + length
    return spans


def _only_segment(data: Path) -> Path:
    (seg,) = sorted((data / "log").glob("*.pwlog"))
    return seg


def _ids_in(data: Path) -> list[str]:
    with pumpwatch.Store(data) as store:
        return store.query().column("trade_id").to_pylist()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One closed, unsealed segment of 300 trades, each id its position."""
    data = tmp_path_factory.mktemp("pristine") / "data"
    trades = [
        pumpwatch.Trade("okx-spot", "BTC-USDT", str(i), "30243.5", "0.001", "buy", 1_700_000_000_000_000_000 + i, 0)
        for i in range(300)
    ]
    with pumpwatch.Store(data) as store:
        for i in range(0, 300, 30):
            store.append_trades(trades[i : i + 30])
    return data


def _copy(pristine: Path, tmp_path: Path, k: int) -> tuple[Path, Path]:
    d = tmp_path / f"case{k}"
    shutil.copytree(pristine, d, copy_function=_copy_skipping_zeros)
    return d, _only_segment(d)


def _copy_skipping_zeros(src: str, dst: str) -> None:
    """The same bytes, but runs of zeros (a segment's 64 MiB reservation past its data) are left to
    the filesystem instead of written: a case costs kilobytes of writes, not 64 MiB."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        while chunk := f.read(1 << 20):
            if chunk.count(0) == len(chunk):
                g.seek(len(chunk), os.SEEK_CUR)
            else:
                g.write(chunk)
        g.truncate()


def _flip(segment: Path, at: int, mask: int) -> None:
    """XORs one byte in place (the file is not read and written whole)."""
    with open(segment, "r+b") as f:
        f.seek(at)
        (b,) = f.read(1)
        f.seek(at)
        f.write(bytes([b ^ mask]))


def test_truncated_tail_keeps_every_complete_record(pristine, tmp_path):
    rng = random.Random(7)
    spans = _record_spans(_only_segment(pristine))
    assert len(spans) == 300
    data_end = spans[-1][1]
    for k in range(25):
        d, seg = _copy(pristine, tmp_path, k)
        cut = rng.randrange(HEADER_LEN, data_end)
        with open(seg, "r+b") as f:
            f.truncate(cut)
        complete = [str(i) for i, (_, end) in enumerate(spans) if end <= cut]
        assert _ids_in(d) == complete, f"cut at {cut}"
        # After recovery the log is clean and takes appends again.
        with pumpwatch.Store(d) as store:
            store.append_trades(
                [pumpwatch.Trade("okx-spot", "BTC-USDT", "999999", "1", "1", "sell", 1_800_000_000_000_000_000, 0)]
            )
        assert _ids_in(d)[-1] == "999999"
        assert pumpwatch.verify(d)["ok"]
        shutil.rmtree(d)


def test_flipped_bytes_lose_only_the_damaged_records(pristine, tmp_path):
    rng = random.Random(11)
    spans = _record_spans(_only_segment(pristine))
    data_end = spans[-1][1]
    for k in range(40):
        d, seg = _copy(pristine, tmp_path, k)
        hits = sorted(rng.randrange(0, data_end + 4096) for _ in range(rng.randint(1, 3)))
        for p in hits:
            _flip(seg, p, rng.randrange(1, 256))
        before = pumpwatch.verify(d)
        damaged_records = {i for i, (s, e) in enumerate(spans) for p in hits if s <= p < e}
        if damaged_records or any(p >= data_end for p in hits) or any(p < 32 for p in hits):
            assert not before["ok"], f"verify missed damage at {hits}"
        expected = [str(i) for i in range(300) if i not in damaged_records]
        assert _ids_in(d) == expected, f"flips at {hits}"
        shutil.rmtree(d)


def test_verify_names_a_damaged_span(pristine, tmp_path):
    d, seg = _copy(pristine, tmp_path, 0)
    spans = _record_spans(seg)
    raw = bytearray(seg.read_bytes())
    start, end = spans[150]
    raw[start + 12] ^= 0xFF
    seg.write_bytes(bytes(raw))
    report = pumpwatch.verify(d)
    assert report["damaged"] == [
        {"segment": seg.name, "offset": start, "length": end - start, "reason": report["damaged"][0]["reason"]}
    ]
    assert report["trades"] == 299
    result = subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", "verify", "--data-dir", str(d)], capture_output=True, text=True
    )
    assert result.returncode == 1 and f"at byte {start:,}" in result.stdout


def test_second_writer_is_refused_and_first_keeps_working(data_dir):
    code = f"import pumpwatch; pumpwatch.Store({str(data_dir)!r})"
    with pumpwatch.Store(data_dir) as store:
        store.append_trades(make_trades(10))
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode != 0
        assert "StoreLockedError" in other.stderr
        assert f"pid {os.getpid()}" in other.stderr and "open_readonly" in other.stderr
        with pytest.raises(pumpwatch.StoreLockedError):
            pumpwatch.Store(data_dir)
        store.append_trades(make_trades(10, seed=2))
        assert store.query().num_rows == 20
    # Released on close: the other process can open it now.
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


READER = textwrap.dedent(
    """
    import sys, time, pumpwatch
    reader = pumpwatch.Store.open_readonly(sys.argv[1])
    print(reader.query().num_rows, flush=True)
    target = int(sys.argv[2])
    deadline = time.time() + 60
    while time.time() < deadline:
        n = reader.query().num_rows
        if n >= target:
            print(n, flush=True)
            break
        time.sleep(0.01)
    """
)


def test_reader_in_another_process_sees_appends_as_they_happen(data_dir):
    with pumpwatch.Store(data_dir, segment_max_bytes=1 << 16) as store:
        store.append_trades(make_trades(100))
        proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(data_dir), "5100"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "100"
        # Enough to roll several segments while the reader watches.
        for i in range(10):
            store.append_trades(make_trades(500, seed=100 + i))
        out, _ = proc.communicate(timeout=60)
        assert out.strip() == "5100"


FULL_DISK_WRITER = textwrap.dedent(
    """
    import sys, pumpwatch
    path = sys.argv[1]
    store = pumpwatch.Store(path, fsync_interval=0, segment_max_bytes=1 << 20)
    n = 0
    try:
        for batch in range(100000):
            trades = [pumpwatch.Trade("bybit-spot", "BTCUSDT", str(batch * 1000 + j), "65140.5", "0.002705", "buy",
                                      1_700_000_000_000_000_000 + batch * 1000 + j, 1) for j in range(500)]
            store.append_trades(trades)
            n += 500
    except pumpwatch.DiskFullError as e:
        print("FULL", n, str(e).replace(chr(10), " "), flush=True)
    sys.stdin.readline()          # the test frees space, then says go on
    store.append_trades([pumpwatch.Trade("bybit-spot", "BTCUSDT", "9999999999", "1", "1", "sell", 1_800_000_000_000_000_000, 1)])
    print("AGAIN", store.query().num_rows, flush=True)
    store.close()
    """
)


@pytest.fixture
def small_filesystem(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root); the RLIMIT_FSIZE test covers a full disk")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_is_a_clear_error_and_nothing_stored_is_damaged(small_filesystem):
    data = small_filesystem / "data"
    ballast = small_filesystem / "ballast"
    ballast.write_bytes(b"\1" * (1 << 20))
    proc = subprocess.Popen(
        [sys.executable, "-c", FULL_DISK_WRITER, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline().split(" ", 2)
    assert line[0] == "FULL", line
    stored = int(line[1])
    assert stored > 0
    assert "no space left" in line[2] and "free disk space" in line[2]
    # What was stored before the disk filled is intact.
    report = pumpwatch.verify(data)
    assert report["trades"] == stored and report["ok"], report
    ballast.unlink()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    again = proc.stdout.readline().split()
    assert again == ["AGAIN", str(stored + 1)]
    assert proc.wait(timeout=30) == 0


def test_file_size_limit_is_a_clear_error_and_the_writer_recovers(tmp_path):
    """Same promise with RLIMIT_FSIZE (works without root): appends fail with DiskFullError,
    stored data stays intact, and raising the limit lets the same writer go on."""
    code = textwrap.dedent(
        """
        import resource, sys, pumpwatch
        store = pumpwatch.Store(sys.argv[1], fsync_interval=0, segment_max_bytes=4 << 20)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, resource.RLIM_INFINITY))
        n = 0
        try:
            for b in range(100000):
                store.append_trades([pumpwatch.Trade("gate-spot", "BTC_USDT", str(b * 100 + j), "77474", "0.000021", "sell",
                                                     1_700_000_000_000_000_000 + b * 100 + j, 1) for j in range(100)])
                n += 100
        except pumpwatch.DiskFullError as e:
            print("FULL", n, flush=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        store.append_trades([pumpwatch.Trade("gate-spot", "BTC_USDT", "99999999", "1", "1", "buy", 1_800_000_000_000_000_000, 1)])
        print("AGAIN", store.query().num_rows, flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    lines = out.stdout.split("\n")
    assert lines[0].startswith("FULL"), out.stderr
    stored = int(lines[0].split()[1])
    assert lines[1] == f"AGAIN {stored + 1}"
    report = pumpwatch.verify(tmp_path / "d")
    assert report["ok"] and report["trades"] == stored + 1


def test_an_unfinished_append_past_the_published_end_is_cut_not_skipped(pristine, tmp_path):
    """memcpy may copy a batch's last bytes before its first: a kill then leaves a hole followed by
    valid-looking records past the published end. Those were never acknowledged; recovery cuts at
    the hole instead of keeping them behind a 'damaged span'."""
    from pumpwatch.purepy.log.record import encode_trade

    d, seg = _copy(pristine, tmp_path, 0)
    raw = bytearray(seg.read_bytes())
    published = int.from_bytes(raw[40:48], "little")
    first, _ = encode_trade("okx-spot", "BTC-USDT", "900", "1", "1", "buy", 1_800_000_000_000_000_000, 0, 0)
    second, _ = encode_trade("okx-spot", "BTC-USDT", "901", "1", "1", "buy", 1_800_000_000_000_000_001, 0, 0)
    tail = bytes(len(first)) + second  # the first record never got copied, the second did
    raw[published : published + len(tail)] = tail
    seg.write_bytes(bytes(raw))
    ids = _ids_in(d)
    assert ids == [str(i) for i in range(300)]  # neither unacknowledged record is kept
    report = pumpwatch.verify(d)
    assert report["ok"] and report["damaged"] == []
