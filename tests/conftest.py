"""Shared test helpers: deterministic trade batches in the shapes venues really send."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

import pumpwatch

SYMBOLS = {
    "binance-spot": "BTCUSDT",
    "binance-usdm": "1000PEPEUSDT",
    "bybit-linear": "ETHUSDT",
    "okx-swap": "BTC-USDT-SWAP",
    "kucoin-spot": "DAPPT-BTC",
    "gate-spot": "BTC_USDT",
    "phemex-spot": "sBTCUSDT",
}
PRICES = ["83680.00", "0.0000001117", "107407.88000000", "0.0044478", "1922.52", "7.69100000", "0"]
IDS = ["8121136411", "6085c09769bc506996295e36", "a519448f-56e5-58e6-90a1-004086e0e530", "007", "0"]
T0 = 1_790_370_834_848_000_000


def make_trades(n: int, seed: int = 0, t0: int = T0, spread_ns: int = 10_000_000_000) -> list[pumpwatch.Trade]:
    """`n` trades over `spread_ns` of exchange time, every venue and id shape, not time-sorted."""
    rng = random.Random(seed)
    venues = list(SYMBOLS)
    out = []
    for i in range(n):
        v = venues[i % len(venues)]
        ts = t0 + rng.randrange(spread_ns)
        tid = str(10_000_000 + i) if i % 3 else f"{IDS[i % len(IDS)]}-{i}"
        out.append(
            pumpwatch.Trade(
                v,
                SYMBOLS[v],
                tid,
                PRICES[i % len(PRICES)],
                f"{rng.randrange(1, 10**6)}.{rng.randrange(10**4):04d}",
                "buy" if rng.random() < 0.5 else "sell",
                ts,
                ts + rng.randrange(1_000_000, 50_000_000),
                flags=(pumpwatch.FLAGS["RPI"] if i % 17 == 0 else 0),
            )
        )
    return out


def trades_table(trades: list[pumpwatch.Trade]) -> pa.Table:
    return pa.Table.from_pylist([t.to_dict() for t in trades], schema=pumpwatch.TRADE_SCHEMA)


def expected_rows(trades, start=None, end=None, venues=None, symbols=None) -> list[dict]:
    """What a query must return, computed the obvious way: filter, then stable sort by time."""
    rows = [
        t.to_dict()
        for t in trades
        if (start is None or t.ts_ns >= start)
        and (end is None or t.ts_ns < end)
        and (venues is None or t.venue in venues)
        and (symbols is None or t.symbol in symbols)
        and not (t.flags & pumpwatch.FLAGS["NON_TRADE"])
    ]
    rows.sort(key=lambda r: r["ts_ns"])
    return rows


def read_pty(primary: int) -> bytes:
    """Everything written to the terminal side of a pty until its other end closed, then closes
    `primary` (tests that run the CLI on a terminal read its stderr this way)."""
    import os

    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
    return out


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


# ---------------------------------------------------------------------------------------------
# The quick loop: `pytest -m "not slow"`. Tests that run the daemon, a soak, a real database, tmux,
# or many thousands of generated cases are marked here, in one place; every other test must finish
# within UNMARKED_TIMEOUT_S (a test that needs longer is slow and belongs in this table).

UNMARKED_TIMEOUT_S = 60
#: Whole modules: every test in them carries these markers.
SLOW_MODULES = {
    "test_soak": ("slow", "soak"),
    "test_sink_postgres": ("slow", "postgres"),
    "test_event_simulate": ("slow",),
    "test_listing_scenarios": ("slow",),
    "test_lifecycle": ("slow",),
    "test_ccxt_witness": ("slow",),
    "test_disk_full_hold": ("slow",),
    "test_full_disk_daemon": ("slow",),
    "test_venue_faithful": ("slow",),
    "test_terminal": ("slow",),
    "test_history": ("slow",),
}
#: Single tests (by function name) in modules that are otherwise quick.
SLOW_TESTS = {
    "test_truncated_tail_keeps_every_complete_record",
    "test_flipped_bytes_lose_only_the_damaged_records",
    "test_sigkill_at_random_moments_loses_no_acknowledged_batch",
    "test_file_size_limit_is_a_clear_error_and_the_writer_recovers",
    "test_full_disk_is_a_clear_error_and_nothing_stored_is_damaged",
    "test_any_plain_decimal_and_id_round_trip_exactly",
    "test_torn_tail_recovery_keeps_exactly_the_complete_records",
    "test_every_metric_the_rules_and_dashboard_use_is_served",
    "test_run_simulate_records_answers_status_and_stops_cleanly_on_sigterm",
    "test_dropped_frames_and_disconnects_leave_no_hole_on_sequenced_venues",
    "test_windowed_venues_store_every_trade_or_name_the_hole",
    "test_events_report_export_and_verify_commands",
    "test_a_run_with_a_dsn_password_and_an_api_key_shows_neither",
    "test_a_listing_only_memory_holds_at_exit_makes_the_run_exit_74_with_the_commands_to_capture_it",
    # Recorder runs against the simulator (refusals and OKX's channel): their unit tests stay quick.
    "test_after_the_fallback_a_lost_push_is_a_gap_of_its_count_and_is_filled",
    "test_a_login_requirement_met_on_reconnect_moves_the_running_recorder_without_loss",
    "test_refused_trades_all_falls_back_to_trades_and_stores_every_fill",
    "test_an_unknown_instrument_is_refused_on_the_fallback_channel_too",
    "test_without_a_login_requirement_trades_all_stays",
    "test_one_unknown_symbol_costs_the_others_nothing",
    "test_a_refused_listing_is_asked_for_again_when_the_instrument_list_opens_it",
    "test_a_symbol_the_venue_goes_on_refusing_is_named_once",
    "test_two_unknown_okx_instruments_in_one_request_are_both_named",
    "test_okx_taking_the_rest_of_a_refused_request_costs_nothing_either",
    "test_a_symbol_the_list_already_shows_trading_is_asked_for_again_quietly",
    "test_okx_asks_for_a_refused_listing_again_when_the_instrument_list_opens_it",
}


# ---------------------------------------------------------------------------------------------
# Parallel runs. pyproject's addopts runs the suite on pytest-xdist workers (`-n`, `--dist
# loadgroup`): most tests wait on sockets, child processes and timers rather than on the CPU, so
# more workers than cores pay. `-n 0` runs in one process (for --pdb); so does `-p no:xdist` for
# tests/, for which addopts' two options are accepted here and ignored (benches/ always run in one
# process: use `-n 0` there).
#: Modules whose module-scoped fixture runs a recorder, a simulated listing or a database: their
#: tests stay on one worker so it runs once (a group per module).
ONE_WORKER_MODULES = {
    "test_ccxt_witness",
    "test_event_simulate",
    "test_sink_postgres",
}
#: Real-time scenarios that run all twelve simulated venues and a recorder (each keeps about a
#: core busy for up to a minute, and judges what arrived in time): two queues, so at most two of
#: them run at once on the two cores, whatever -n is. Module names (all its tests) or test names;
#: the queues are balanced by their durations (about three minutes each on an idle machine).
TWELVE_VENUE_QUEUES = {
    "test_full_disk_daemon": "twelve-venues-a",
    "test_event_simulate": "twelve-venues-a",
    "test_run_simulate_records_answers_status_and_stops_cleanly_on_sigterm": "twelve-venues-a",
    "test_every_metric_the_rules_and_dashboard_use_is_served": "twelve-venues-a",
    "test_soak": "twelve-venues-b",
    "test_a_run_with_a_dsn_password_and_an_api_key_shows_neither": "twelve-venues-b",
    "test_a_listing_only_memory_holds_at_exit_makes_the_run_exit_74_with_the_commands_to_capture_it": "twelve-venues-b",
    "test_live_dashboard_in_tmux_at_three_sizes": "twelve-venues-b",
    "test_ccxt_witness": "twelve-venues-b",
}


def pytest_addoption(parser, pluginmanager):
    if not pluginmanager.has_plugin("xdist"):
        parser.addoption("--numprocesses", dest="numprocesses", default=0, help="(pytest-xdist is off)")
        parser.addoption("--dist", dest="dist", default="no", help="(pytest-xdist is off)")


def _queue_of(nodeid: str) -> str | None:
    """The worker queue a test shares with others (TWELVE_VENUE_QUEUES, ONE_WORKER_MODULES), or None."""
    path, _, rest = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1].removesuffix(".py")
    test = rest.split("[", 1)[0]
    queue = TWELVE_VENUE_QUEUES.get(module) or TWELVE_VENUE_QUEUES.get(test)
    return queue or (module if module in ONE_WORKER_MODULES else None)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent with -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` with the queues above. (xdist_group marks reach xdist's scheduler through
    test ids that a plugin rewrites, which pytest 9.2's node ids no longer allow: they would be
    ignored silently.) Every other test goes to whichever worker is free."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class Queues(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _queue_of(nodeid) or super()._split_scope(nodeid)

    return Queues(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        for name in SLOW_MODULES.get(module, ()):
            item.add_marker(name)
        if item.originalname in SLOW_TESTS:
            item.add_marker("slow")
        marked = any(item.get_closest_marker(m) for m in ("slow", "soak", "postgres"))
        if not marked and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNMARKED_TIMEOUT_S))
