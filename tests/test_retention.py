"""Retention deletes whole sealed segments by age and by disk budget, never the active one, and
what remains stays readable; the low-disk watchdog warns."""

from __future__ import annotations

import pumpwatch
from conftest import make_trades
from pumpwatch.retention import RetentionPolicy, apply_retention, low_disk


def _log_with_segments(path, n_segments=5):
    store = pumpwatch.Store(path, segment_max_bytes=1 << 16, zstd_level=0)  # compressed: test_compression.py
    trades = make_trades(500 * n_segments, seed=31)
    for i in range(0, len(trades), 500):
        store.append_trades(trades[i : i + 500])
    return store, trades


def test_budget_deletes_oldest_sealed_segments_and_never_the_active_one(tmp_path):
    store, _ = _log_with_segments(tmp_path / "d")
    active = store._log.active_segment()[0]
    before = sorted(p.name for p in (tmp_path / "d" / "log").glob("*.pwlog"))
    assert len(before) > 3
    deleted = apply_retention(tmp_path / "d", active, RetentionPolicy(max_age_s=0, max_bytes=1))
    after = sorted(p.name for p in (tmp_path / "d" / "log").glob("*.pwlog"))
    assert deleted == before[:-1] and after == [before[-1]]  # only the active segment is left
    assert not any((tmp_path / "d" / "log" / f"{n[:-6]}.pwidx").exists() for n in deleted)
    store.append_trades(make_trades(10, seed=32))  # the writer goes on
    assert pumpwatch.verify(tmp_path / "d")["ok"]
    assert store.query().num_rows >= 10
    store.close()


def test_age_deletes_only_old_segments(tmp_path):
    store, _ = _log_with_segments(tmp_path / "d")
    active = store._log.active_segment()[0]
    assert apply_retention(tmp_path / "d", active, RetentionPolicy(max_age_s=3600, max_bytes=0)) == []
    future = 2 * 3600 * 10**9 + __import__("time").time_ns()
    deleted = apply_retention(tmp_path / "d", active, RetentionPolicy(max_age_s=3600, max_bytes=0), now_ns=future)
    assert deleted and all(int(n[:20]) < active for n in deleted)
    with pumpwatch.Store.open_readonly(tmp_path / "d") as reader:
        assert reader.query().num_rows > 0  # the active segment's trades
    store.close()


def test_low_disk_watchdog_warns(tmp_path):
    assert low_disk(tmp_path, RetentionPolicy(low_disk_bytes=1)) is None
    assert "free space" in low_disk(tmp_path, RetentionPolicy(low_disk_bytes=1 << 62))
