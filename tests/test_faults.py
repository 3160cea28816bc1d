"""A listing survives write failures (issue 14, Python side): the pending capture and the Upbit
watcher state are kept in memory while the disk refuses them and written once it takes them again;
an event folder that cannot be written is retried and named until it is; after a restart nothing
that was written is lost. Faults come from the named fail points (`pumpwatch.faults`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from pumpwatch import capture as cap
from pumpwatch import faults
from pumpwatch.config import CaptureSettings
from test_capture import T0, _pumping_store, _trigger

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _no_faults_left():
    faults.disarm()
    yield
    faults.disarm()


async def _until(cond, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_fail_points_raise_what_a_full_disk_raises_and_cost_nothing_when_off(tmp_path):
    faults.check("events.pending", tmp_path)  # nothing armed: no error
    faults.arm("events.pending", "enospc", times=2)
    for _ in range(2):
        with pytest.raises(OSError) as e:
            faults.check("events.pending", tmp_path / "x")
        assert e.value.errno == 28 and e.value.filename == str(tmp_path / "x")
    faults.check("events.pending")  # spent after two
    faults.arm_from_env("upbit.state=eio*1, instruments=erofs")
    with pytest.raises(OSError) as e:
        faults.check("upbit.state")
    assert e.value.errno == 5
    faults.check("upbit.state")
    with pytest.raises(ValueError, match="unknown fail point"):
        faults.arm("events.pendng")


def test_a_trigger_whose_pending_capture_and_event_cannot_be_written_is_kept_and_written_when_the_disk_recovers(
    tmp_path, caplog
):
    data = tmp_path / "d"
    settings = CaptureSettings(grace_s=0.0, chart=False)
    with _pumping_store(data) as store:
        store.flush()

        async def go():
            faults.arm("events.pending", "enospc")
            faults.arm("events.folder", "enospc")
            s = cap.CaptureScheduler(data, settings, retry_initial_s=0.05, retry_max_s=0.1)
            await s.on_trigger(_trigger(["0G"], T0))  # the old scheduler raised here and dropped the listing
            await _until(lambda: s.unwritten.get("0G_20260921T141320Z", {}).get("attempts", 0) >= 2)
            st = s.status()
            assert st["pending"] == ["0G_20260921T141320Z"] and st["pending_unsaved_since"] is not None
            assert "No space left on device" in st["pending_unsaved_error"]
            [u] = st["unwritten"]
            assert (
                u["event"] == "0G_20260921T141320Z" and "No space left" in u["error"] and u["path"].endswith(u["event"])
            )
            assert not (data / "events" / "pending.json").exists()
            assert not (data / "events" / "0G_20260921T141320Z").exists()
            # space comes back for pending.json first: it is written with the capture in it
            faults.disarm("events.pending")
            await _until(lambda: (data / "events" / "pending.json").exists())
            assert list(json.loads((data / "events" / "pending.json").read_text())) == ["0G_20260921T141320Z"]
            assert s.status()["pending_unsaved_since"] is None
            faults.disarm("events.folder")
            await _until(lambda: not s.pending)
            await s.stop()
            return s

        with caplog.at_level(logging.INFO, logger="pumpwatch.capture"):
            s = asyncio.run(go())
    assert [e["event"] for e in s.done] == ["0G_20260921T141320Z"] and s.status()["unwritten"] == []
    event = json.loads((data / "events" / "0G_20260921T141320Z" / "event.json").read_text())
    assert event["venues"]["binance-spot"]["trades"] == 400
    assert json.loads((data / "events" / "pending.json").read_text()) == {}
    text = caplog.text
    assert "not saved to" in text and "kept in memory" in text and "event 0G_20260921T141320Z not written" in text
    assert "written after earlier failures" in text


def test_a_restart_after_a_disk_full_episode_still_makes_the_pending_capture(tmp_path):
    data = tmp_path / "d"
    settings = CaptureSettings(grace_s=0.0, chart=False)
    with _pumping_store(data) as store:
        store.flush()

        async def first_run():
            faults.arm("events.folder", "enospc")
            s = cap.CaptureScheduler(data, settings, retry_initial_s=0.05, retry_max_s=0.1)
            await s.on_trigger(_trigger(["0G", "X2"], T0))
            await _until(lambda: len(s.unwritten) == 2)
            await s.stop()  # the daemon stops while the disk is still full
            return s

        s1 = asyncio.run(first_run())
        assert s1.lost_at_exit() == []  # pending.json holds both
        assert not os.path.exists(data / "events" / "0G_20260921T141320Z")
        faults.disarm()

        async def second_run():
            s = cap.CaptureScheduler(data, settings, retry_initial_s=0.05)
            s.start()
            await _until(lambda: not s.pending)
            await s.stop()
            return s

        s2 = asyncio.run(second_run())
    assert sorted(e["event"] for e in s2.done) == ["0G_20260921T141320Z", "X2_20260921T141320Z"]
    assert (data / "events" / "0G_20260921T141320Z" / "event.json").exists()


def test_a_listing_only_memory_holds_at_exit_is_named_with_the_command_that_captures_it(tmp_path, caplog):
    data = tmp_path / "d"
    settings = CaptureSettings(grace_s=0.0, after_s=3600.0, chart=False)  # its window is far from complete

    async def go():
        faults.arm("events.pending", "eio")
        s = cap.CaptureScheduler(data, settings, retry_initial_s=0.05)
        await s.on_trigger(_trigger(["0G"], T0))
        await s.stop()
        return s

    with caplog.at_level(logging.INFO, logger="pumpwatch.capture"):
        s = asyncio.run(go())
    assert s.lost_at_exit() == ["0G_20260921T141320Z"]
    assert "pumpwatch capture 0G --at 2026-09-21T14:13:20.000000000Z" in caplog.text


def test_the_upbit_watcher_state_is_kept_and_saved_once_the_disk_takes_it(tmp_path, caplog):
    from pumpwatch.upbit import UpbitWatcher

    async def go():
        w = UpbitWatcher(tmp_path, base_url="http://127.0.0.1:1")
        w.state_retry_initial_s = w.state_retry_max_s = 0.05
        faults.arm("upbit.state", "enospc")
        w.state.seen.add(4321)
        w._save_soon()
        await _until(lambda: w.metrics()["state_unsaved_since_ns"] is not None)
        await asyncio.sleep(0.2)  # several retries fail
        assert not (tmp_path / "upbit_state.json").exists()
        assert "No space left" in w.metrics()["state_unsaved_error"]
        w.state.seen.add(4322)  # a change while unsaved is in the next write
        w._save_soon()
        faults.disarm()
        await _until(lambda: w.metrics()["state_unsaved_since_ns"] is None)
        return w

    with caplog.at_level(logging.INFO, logger="pumpwatch"):
        asyncio.run(go())
    assert {4321, 4322} <= set(json.loads((tmp_path / "upbit_state.json").read_text())["seen"])
    assert "kept in memory" in caplog.text and "saved to" in caplog.text
