"""OKX never goes silent for want of a login (docs/VENUES.md §4.1, §4.2).

OKX documents `trades-all` (one fill per push, on /ws/v5/business) as public, but ccxt logs in before
subscribing to it. Should OKX refuse it with "Please log in" (60011), the recorder moves that venue to
the public `trades` channel on /ws/v5/public: the same fills, aggregated per taker order and price, each
push covering `count` ids under the last one (`tradeId == last + count`). It says so in the log, in a
marker and in /status, and its gap detection stays right. The simulator refuses `trades-all` as OKX
would when `login_required` names it; the recorder's old behaviour stored nothing from OKX there.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
from decimal import Decimal
from typing import Any

import pytest

import pumpwatch
from pumpwatch.collector import Collector
from pumpwatch.config import Config, ConnectionSettings, VenueSettings
from pumpwatch.dashboard import render
from pumpwatch.sim import Simulator, SimVenue
from pumpwatch.venues import okx

pytestmark = pytest.mark.timeout(60)

#: The refusal as OKX sends it to a request with an id (the simulator's `login required with id`).
LOGIN_REQUIRED = '{"id":"1","event":"error","code":"60011","msg":"Please log in","connId":"a4d3ae55"}'


# -- the venue description


def test_a_login_refusal_of_trades_all_moves_the_spec_to_trades_on_the_public_path():
    for spec in (okx.SPOT, okx.SWAP):
        assert spec.trade_channel() == "trades-all on /ws/v5/business"
        fallback = spec.fallback_channel(LOGIN_REQUIRED)
        assert fallback is not None
        assert fallback.connect_url() == "wss://ws.okx.com:8443/ws/v5/public"
        assert fallback.trade_channel() == "trades on /ws/v5/public"
        symbol = "BTC-USDT-SWAP" if spec is okx.SWAP else "BTC-USDT"
        [frame] = fallback.subscribe_frames([symbol])
        assert json.loads(frame)["args"] == [{"channel": "trades", "instId": symbol}]
        # Everything else about the venue stays: limits, backfill, budgets.
        assert dataclasses.replace(fallback, channel=spec.channel, ws_path=spec.ws_path) == spec
        # `trades` is the last resort: a refusal there is not answered by another move.
        assert fallback.fallback_channel(LOGIN_REQUIRED) is None
    # The channel refused to a client not on OKX's whitelist (60029) is met the same way.
    whitelist = '{"event":"error","msg":"Only users who are in the whitelist are allowed to subscribe to this channel.","code":"60029","connId":"a4d3ae55"}'
    assert okx.SPOT.fallback_channel(whitelist) == okx.SPOT.fallback_channel(LOGIN_REQUIRED)


@pytest.mark.parametrize(
    "detail",
    [
        # Other refusals are not about a login: a wrong path or instrument, a bad request.
        '{"id":"1","event":"error","code":"60018","msg":"Wrong URL or channel:trades-all,instId:X doesn\'t exist."}',
        '{"id":"1512","event":"error","code":"60012","msg":"Invalid request: …","connId":"a4d3ae55"}',
        '{"event":"error","msg":"Illegal request: …","code":"60012","connId":"0808af6c"}',
    ],
)
def test_other_errors_keep_the_channel(detail):
    assert okx.SPOT.fallback_channel(detail) is None


def test_after_the_move_a_60018_for_the_old_channel_is_left_alone():
    """A 60018 naming `trades-all` after the move to `trades` answers a request of the socket being
    replaced: acting on it would ask again there, in `trades` on /ws/v5/business, and every symbol
    would be refused. The `trades` answers of the new sockets are read as before."""
    moved = okx.SPOT.fallback_channel(LOGIN_REQUIRED)
    assert moved is not None
    old = '{"id":"3","event":"error","code":"60018","msg":"Wrong URL or channel:trades-all,instId:NOPE-USDT doesn\'t exist."}'
    new = old.replace("trades-all", "trades").replace('"3"', '"4"')
    assert (okx.SPOT.rejected_request(old), okx.SPOT.refused_symbols(old)) == (3, ["NOPE-USDT"])
    assert (moved.rejected_request(old), moved.refused_symbols(old)) == (None, [])
    assert (moved.rejected_request(new), moved.refused_symbols(new)) == (4, ["NOPE-USDT"])
    assert (okx.SPOT.rejected_request(new), okx.SPOT.refused_symbols(new)) == (None, [])


def test_other_venues_have_one_channel():
    from pumpwatch.venues import SPECS

    for venue, spec in SPECS.items():
        if spec.exchange != "okx":
            assert spec.trade_channel() is None and spec.fallback_channel(LOGIN_REQUIRED) is None, venue


# -- the simulator refuses as OKX does


class _Socket:
    def __init__(self, role: str):
        self.role, self.dialect, self.conn_id, self.path = role, "", "c0ffee", "/"
        self.query: dict[str, str] = {}
        self.topics: set[str] = set()
        self.state: dict[str, Any] = {}
        self.closed = False
        self.sent: list[Any] = []

    def send(self, frame, *, data=False):
        self.sent.append(frame)

    def close(self, code=1000, reason=""):
        self.closed = True

    def heartbeat(self):
        pass

    def answer_ping(self):
        pass


def test_the_simulator_refuses_trades_all_without_login_only_when_told():
    sim = SimVenue("okx-spot", seed=5, trades_per_s=0, symbols=["BTC"])
    ask = {"op": "subscribe", "args": [{"channel": "trades-all", "instId": "BTC-USDT"}]}
    socket = _Socket("business")
    sim.protocol.on_text(socket, json.dumps(ask | {"id": "1"}))
    assert json.loads(socket.sent[0])["event"] == "subscribe"  # public, as documented

    sim.protocol.login_required = frozenset({"trades-all"})
    for req_id in ("7", None):
        socket = _Socket("business")
        sim.protocol.on_text(socket, json.dumps(ask if req_id is None else ask | {"id": req_id}))
        [answer] = [json.loads(f) for f in socket.sent]
        expected = {"event": "error", "msg": "Please log in", "code": "60011", "connId": "c0ffee"}
        assert answer == (expected if req_id is None else {"id": req_id, **expected})
        assert sim.subscribers("BTC-USDT") == 0
    # `trades` on /public stays open to anyone.
    socket = _Socket("public")
    sim.protocol.on_text(socket, json.dumps({"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]}))
    assert json.loads(socket.sent[0])["event"] == "subscribe"


@pytest.mark.parametrize("takes_the_rest", [False, True])
@pytest.mark.parametrize("req_id", ["7", None])
def test_the_simulator_answers_each_unknown_instrument_with_a_60018_naming_it(req_id, takes_the_rest):
    """One 60018 per unknown argument, naming its channel and instId, with the request's id when it
    had one, in argument order. The other arguments: not subscribed (the strictest reading, the
    default), or acknowledged and subscribed (what third parties saw). The spec reads each answer
    as a refusal of that instrument alone, never as the channel refused."""
    sim = SimVenue("okx-spot", seed=5, trades_per_s=0, symbols=["BTC", "ETH"])
    sim.protocol.takes_the_rest_of_a_refused_request = takes_the_rest
    insts = ["BTC-USDT", "NOPE-USDT", "ETH-USDT", "ZZZ-USDT"]
    ask: dict[str, Any] = {"op": "subscribe", "args": [{"channel": "trades-all", "instId": i} for i in insts]}
    socket = _Socket("business")
    sim.protocol.on_text(socket, json.dumps(ask if req_id is None else {"id": req_id, **ask}))
    answers = [json.loads(f) for f in socket.sent]
    errors = [a for a in answers if a["event"] == "error"]
    assert [(e["code"], e.get("id")) for e in errors] == [("60018", req_id)] * 2
    assert "channel:trades-all,instId:NOPE-USDT doesn't exist" in errors[0]["msg"]
    assert "channel:trades-all,instId:ZZZ-USDT doesn't exist" in errors[1]["msg"]
    if takes_the_rest:
        assert [a.get("arg", {}).get("instId") or a["msg"].split("instId:")[1].split()[0] for a in answers] == insts
        assert socket.topics == {"trades-all:BTC-USDT", "trades-all:ETH-USDT"}
    else:
        assert answers == errors
        assert socket.topics == set()
    for frame, inst in zip([f for f in socket.sent if '"error"' in f], ("NOPE-USDT", "ZZZ-USDT"), strict=True):
        assert okx.SPOT.refused_symbols(frame) == [inst]
        assert okx.SPOT.rejected_request(frame) == (None if req_id is None else int(req_id))
        assert okx.SPOT.fallback_channel(frame) is None


def test_a_scenario_can_require_the_login_on_okx_only(tmp_path):
    from pumpwatch.sim.__main__ import load_scenario

    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps([[3, "okx-spot", "require_login", ["trades-all"]], [3.5, "okx-spot", "disconnect_all"]]))
    assert load_scenario(str(ok), ["okx-spot"])[0] == (3.0, "okx-spot", "require_login", ("trades-all",))
    for venue, channel in (("*", "trades-all"), ("binance-spot", "trades-all"), ("okx-spot", "trades")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([[3, venue, "require_login", [channel]]]))
        with pytest.raises(argparse.ArgumentTypeError, match="require_login takes an OKX venue"):
            load_scenario(str(bad), ["okx-spot", "binance-spot"])
    with pytest.raises(ValueError, match="no channel"):
        SimVenue("binance-spot", trades_per_s=0).require_login("trades-all")


# -- the recorder against it


async def _record(
    data_dir,
    *,
    login_required: bool,
    seconds: float,
    faults=(),
    redundancy: int = 1,
    symbols: tuple[str, ...] = ("BTC-USDT", "ETH-USDT"),
):
    """Records okx-spot's `symbols` from the simulator for `seconds`; `faults`: (at s, what to do
    to the simulated venue) in time order."""
    venue = "okx-spot"
    sim = Simulator([venue], seed=11, trades_per_s=80.0, backlog=20)
    if login_required:
        sim.venues[venue].protocol.login_required = frozenset({"trades-all"})
    await sim.start()
    try:
        urls = sim.urls()
        cfg = Config(
            data_dir=str(data_dir),
            metrics_address="127.0.0.1:0",
            connection=ConnectionSettings(rotation_overlap_s=0.2, redundancy=redundancy),
            venues={
                v: VenueSettings(
                    enabled=v == venue,
                    ws_url=urls[v]["ws_origin"] if v == venue else "",
                    rest_url=urls[v]["rest_url"] if v == venue else "",
                    symbols=list(symbols) if v == venue else [],
                )
                for v in pumpwatch.VENUES
            },
        )
        store = pumpwatch.Store(data_dir)
        collector = Collector(cfg, store)
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        t = 0.0
        for at, fault in faults:
            await asyncio.sleep(at - t)
            t = at
            fault(sim.venues[venue])
        await asyncio.sleep(seconds - t)
        stop.set()
        await task
        whole = collector.status()
        status = whole["venues"][venue]
        status["dashboard"] = "\n".join(render({**whole, "log_bytes": 0, "disk_free_bytes": 0}, 220))
        fills = sim.venues[venue].sent_trades(channel="trades-all")
        aggregated = sim.venues[venue].sent_trades(channel="trades")
        store.close()
        return status, fills, aggregated
    finally:
        await sim.stop()


def _stored(data_dir) -> list[dict]:
    reader = pumpwatch.Store.open_readonly(data_dir)
    return [r for r in reader.query(include_non_trades=False).to_pylist() if r["venue"] == "okx-spot"]


KEY = ("symbol", "trade_id", "price", "qty", "side", "ts_ns")
BACKFILL = pumpwatch.FLAGS["BACKFILL"]


def _check_every_fill_held_once(rows: list[dict], fills: list[dict], symbol: str) -> list[int]:
    """The rows of `symbol`, in id order, hold every fill the venue made between the first and the
    last of them exactly once: a live `trades` row stands for the fills since the row before it
    (its `count`: one taker order at one price, sizes summed), a backfilled row for one fill.
    Returns each row's count after the first, in id order."""
    by_id = {int(t["trade_id"]): t for t in fills if t["symbol"] == symbol}
    mine = sorted((int(r["trade_id"]), r) for r in rows if r["symbol"] == symbol)
    assert len(mine) > 10, f"{symbol}: {len(mine)} rows"
    assert len({i for i, _ in mine}) == len(mine), f"{symbol}: an id stored twice"
    counts = []
    for (prev, _), (last, row) in itertools.pairwise(mine):
        covered = [by_id[i] for i in range(prev + 1, last + 1)]
        counts.append(len(covered))
        assert {(f["price"], f["side"]) for f in covered} == {(row["price"], row["side"])}, (symbol, last)
        assert sum(Decimal(f["qty"]) for f in covered) == Decimal(row["qty"]), (symbol, last)
        assert max(f["ts_ns"] for f in covered) == row["ts_ns"]
        if row["flags"] & BACKFILL:
            assert len(covered) == 1, f"{symbol}: backfilled row {last} is not one fill"
    return counts


@pytest.mark.parametrize("redundancy", [1, 2])
def test_refused_trades_all_falls_back_to_trades_and_stores_every_fill(tmp_path, redundancy):
    # With redundancy 2 both twins are refused; the first refusal moves both, and it is named once.
    status, fills, aggregated = asyncio.run(
        _record(tmp_path / "d", login_required=True, seconds=3.5, redundancy=redundancy)
    )
    rows = _stored(tmp_path / "d")
    # The old behaviour recorded nothing at all here.
    assert len(rows) > 30, f"OKX recorded {len(rows)} trades after refusing trades-all"
    # Named once: in /status (the channel recorded and why) and in a marker.
    assert status["channel"] == "trades on /ws/v5/public"
    assert "60011" in status["channel_fallback"] and "trades-all on /ws/v5/business" in status["channel_fallback"]
    assert f"okx-spot  {status['channel_fallback']}"[:200] in status["dashboard"]
    reader = pumpwatch.Store.open_readonly(tmp_path / "d")
    notes = [m for m in reader.markers().to_pylist() if "60011" in (m["detail"] or "")]
    assert len(notes) == 1, "the fallback is named once in the log's markers"
    assert status["connections"] == redundancy and status["rotations"] == redundancy
    assert status["gaps_found"] == 0 and not any(r["flags"] & BACKFILL for r in rows)
    for symbol in ("BTC-USDT", "ETH-USDT"):
        # Every aggregated push the venue sent in the span recorded is stored, as sent.
        ids = sorted(int(r["trade_id"]) for r in rows if r["symbol"] == symbol)
        in_span = {
            tuple(t[k] for k in KEY)
            for t in aggregated
            if t["symbol"] == symbol and ids[0] <= int(t["trade_id"]) <= ids[-1]
        }
        assert in_span == {tuple(r[k] for k in KEY) for r in rows if r["symbol"] == symbol}
        counts = _check_every_fill_held_once(rows, fills, symbol)
        assert max(counts) > 1, f"{symbol}: no push aggregated several fills"


def test_an_unknown_instrument_is_refused_on_the_fallback_channel_too(tmp_path):
    """trades-all refused for want of a login, and one instId OKX does not know: the move to
    `trades` goes on, the unknown one is refused there (60018 naming `trades`), named, and the
    others' every fill is held."""
    symbols = ("BTC-USDT", "NOPE-USDT", "ETH-USDT")
    status, fills, _ = asyncio.run(_record(tmp_path / "d", login_required=True, seconds=3.0, symbols=symbols))
    rows = _stored(tmp_path / "d")
    assert status["channel"] == "trades on /ws/v5/public" and "60011" in status["channel_fallback"]
    assert status["refused_symbols"] == ["NOPE-USDT"], status
    assert "NOPE-USDT" not in {r["symbol"] for r in rows}
    for symbol in ("BTC-USDT", "ETH-USDT"):
        _check_every_fill_held_once(rows, fills, symbol)


def test_without_a_login_requirement_trades_all_stays(tmp_path):
    status, fills, _ = asyncio.run(_record(tmp_path / "d", login_required=False, seconds=2.5))
    rows = _stored(tmp_path / "d")
    assert status["channel"] == "trades-all on /ws/v5/business" and status["channel_fallback"] == ""
    assert "refused" not in status["dashboard"]
    assert rows and {tuple(r[k] for k in KEY) for r in rows} <= {tuple(t[k] for k in KEY) for t in fills}


def test_after_the_fallback_a_lost_push_is_a_gap_of_its_count_and_is_filled(tmp_path):
    status, fills, _ = asyncio.run(
        _record(tmp_path / "d", login_required=True, seconds=5.0, faults=[(2.5, lambda v: v.drop_frames(3))])
    )
    rows = _stored(tmp_path / "d")
    assert len(rows) > 50, f"OKX recorded {len(rows)} trades after refusing trades-all"
    assert status["channel"] == "trades on /ws/v5/public"
    # The dropped pushes' ids (their counts summed) were seen missing and fetched, fill by fill.
    assert status["gaps_found"] >= 1 and status["gaps_filled"] == status["gaps_found"]
    assert any(r["flags"] & BACKFILL for r in rows)
    for symbol in ("BTC-USDT", "ETH-USDT"):
        _check_every_fill_held_once(rows, fills, symbol)


def _require_login(venue) -> None:
    """OKX starts asking for a login on `trades-all` while the recorder runs: subscriptions already
    made go on, the next ones are refused; then the connection drops."""
    venue.require_login("trades-all")
    venue.disconnect_all()


def test_a_login_requirement_met_on_reconnect_moves_the_running_recorder_without_loss(tmp_path):
    status, fills, _ = asyncio.run(
        _record(tmp_path / "d", login_required=False, seconds=5.0, faults=[(2.0, _require_login)])
    )
    rows = _stored(tmp_path / "d")
    for symbol in ("BTC-USDT", "ETH-USDT"):  # recording went on to the end (the old code stopped at 2 s)
        last_fill = max(t["ts_ns"] for t in fills if t["symbol"] == symbol)
        assert max(r["ts_ns"] for r in rows if r["symbol"] == symbol) > last_fill - 1_000_000_000, symbol
    assert status["channel"] == "trades on /ws/v5/public" and "60011" in status["channel_fallback"]
    # Single fills before, aggregated pushes after, the reconnect's hole filled over REST between:
    # every fill of the span held once.
    assert status["gaps_found"] >= 1 and status["gaps_filled"] == status["gaps_found"]
    for symbol in ("BTC-USDT", "ETH-USDT"):
        counts = _check_every_fill_held_once(rows, fills, symbol)
        # One row per fill while trades-all delivered, then rows of `count` fills.
        assert counts[:10] == [1] * 10 and max(counts) > 1, f"{symbol}: {counts}"
