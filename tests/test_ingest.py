"""The ingest path: the Rust parsers agree with the pure-Python ones on every real frame and on
mutated ones; duplicates are dropped, id gaps are found, backfills close them, and a frame that
does not parse is kept raw, never raised, never dropped."""

from __future__ import annotations

import json
import random

import pytest

import pumpwatch
from pumpwatch.purepy.parse import parse as pure_parse
from venue_samples import SAMPLE_FILES, sample_lines

VENUES = list(SAMPLE_FILES)


def _rust(venue: str, frame):
    """The Rust parser's result in the pure-Python parser's shape, or the error class name."""
    try:
        r = pumpwatch.parse(venue, frame)
    except pumpwatch.FrameError:
        return "FrameError"
    trades = []
    for t, seq in zip(r.trades, r.sequences, strict=False):
        d = t.to_dict()
        del d["recv_ns"]
        d["seq_first"], d["seq_last"] = seq if seq else (None, None)
        trades.append(d)
    return trades, r.control, len(r.rejected)  # the reasons quote text each in its language


def _pure(venue: str, frame):
    try:
        r = pure_parse(venue, frame)
    except pumpwatch.FrameError:
        return "FrameError"
    return [dict(t) for t in r.trades], r.control, len(r.rejected)


@pytest.mark.parametrize("venue", VENUES)
def test_both_parsers_agree_on_every_sample_line(venue):
    lines = sample_lines(venue)
    assert lines
    for line in lines:
        rust = _rust(venue, line.text)
        assert rust == _pure(venue, line.text), f"{line.file}:{line.lineno}"
        assert rust != "FrameError", f"{line.file}:{line.lineno} must parse"


def _mutations(text: str, rng: random.Random):
    raw = text.encode()
    for cut in sorted(rng.sample(range(len(raw)), min(12, len(raw)))):
        yield raw[:cut]
    for _ in range(12):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        yield bytes(b)
    try:
        doc = json.loads(text)
    except ValueError:
        return
    yield json.dumps([doc]).encode()
    yield ("[" * 3000 + "]" * 3000).encode()
    yield text.replace('"', "'", 3).encode()
    yield text.replace("0", "99999999999999999999999999", 2).encode()


@pytest.mark.parametrize("venue", VENUES)
def test_mutated_frames_never_crash_and_both_parsers_agree(venue):
    rng = random.Random(venue)
    for line in sample_lines(venue):
        for frame in _mutations(line.text, rng):
            assert _rust(venue, frame) == _pure(venue, frame), f"{line.file}:{line.lineno} mutated {frame[:80]!r}"


@pytest.mark.parametrize("venue", VENUES)
def test_ingest_never_raises_and_quarantines_what_it_cannot_parse(data_dir, venue):
    rng = random.Random(1)
    frames = [m for line in sample_lines(venue)[:4] for m in _mutations(line.text, rng)] + [b"", b"\xff\xfe", b"{}"]
    with pumpwatch.Store(data_dir) as store:
        quarantined = 0
        for i, frame in enumerate(frames):
            n, events = store.ingest(venue, frame, 1000 + i)
            q = [e for e in events or [] if e[0] == "quarantined"]
            quarantined += len(q)
            # A frame that stored trades is quarantined only for trades it left out, and says so.
            assert (n == 0) or not q or "trades left out (the others are stored)" in q[0][2]
        kept = store.quarantined()
        assert len(kept) == quarantined == store.ingest_stats()["quarantined"] > 0
        assert {raw for _, _, _, raw in kept} <= set(frames)
        assert pumpwatch.verify(data_dir)["quarantined"] == quarantined


def binance_frame(symbol: str, t: int, price="100.5", na=False) -> str:
    x = "NA" if na else "MARKET"
    data = {
        "e": "trade",
        "E": 1,
        "T": 1_790_000_000_000 + t,
        "s": symbol,
        "t": t,
        "p": "0" if na else price,
        "q": "0" if na else "1",
        "X": x,
        "m": t % 2 == 0,
    }
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data})


def test_gap_is_found_marked_and_closed_by_a_backfill(data_dir):
    with pumpwatch.Store(data_dir) as store:
        for t in [100, 101, 102]:
            assert store.ingest("binance-usdm", binance_frame("BTCUSDT", t), 5)[0] == 1
        n, events = store.ingest("binance-usdm", binance_frame("BTCUSDT", 106), 6)
        assert n == 1
        assert events == [
            ("gap", "binance-usdm", "BTCUSDT", 103, 105, 1_790_000_000_102_000_000, 1_790_000_000_106_000_000)
        ]
        assert store.open_gaps("binance-usdm", "BTCUSDT") == [(103, 105)]
        # A redundant connection delivering the same frames adds nothing.
        for t in [101, 102, 106]:
            assert store.ingest("binance-usdm", binance_frame("BTCUSDT", t), 7) == (0, None)
        # The NA placeholder consumes an id: no gap at 107 -> 108.
        assert store.ingest("binance-usdm", binance_frame("BTCUSDT", 107, na=True), 8) == (1, None)
        assert store.ingest("binance-usdm", binance_frame("BTCUSDT", 108), 8) == (1, None)
        backfill = [
            pumpwatch.Trade(
                "binance-usdm",
                "BTCUSDT",
                str(t),
                "100.5",
                "1",
                "buy",
                1_790_000_000_000_000_000 + t * 1_000_000,
                9,
                flags=pumpwatch.FLAGS["BACKFILL"],
            )
            for t in [103, 104, 105, 106]
        ]
        n, events = store.ingest_trades(backfill)
        assert n == 3  # 106 was already stored
        assert events == [("gap_filled", "binance-usdm", "BTCUSDT", 105, 105)]
        assert store.open_gaps("binance-usdm", "BTCUSDT") == []
        ids = store.query().column("trade_id").to_pylist()
        assert sorted(ids) == [str(t) for t in range(100, 109) if t != 107]
        assert [m["kind"] for m in store.markers().to_pylist()] == ["gap_found", "gap_filled"]
        assert store.query(include_non_trades=True).num_rows == 9
        stats = store.ingest_stats()
        assert (stats["gaps"], stats["gaps_filled"], stats["duplicates"]) == (1, 1, 4)


def test_okx_aggregated_trades_cover_their_id_range(data_dir):
    def okx(trade_id: int, count: int) -> str:
        return json.dumps(
            {
                "arg": {"channel": "trades", "instId": "BTC-USDT"},
                "data": [
                    {
                        "instId": "BTC-USDT",
                        "tradeId": str(trade_id),
                        "px": "42219.9",
                        "sz": "0.1",
                        "side": "buy",
                        "ts": "1630048897897",
                        "count": str(count),
                    }
                ],
            }
        )

    with pumpwatch.Store(data_dir) as store:
        assert store.ingest("okx-spot", okx(120, 1), 1) == (1, None)
        assert store.ingest("okx-spot", okx(123, 3), 1) == (1, None)  # 121..123: no hole
        _n, events = store.ingest("okx-spot", okx(130, 2), 1)  # 129..130: 124..128 missing
        assert events[0][:5] == ("gap", "okx-spot", "BTC-USDT", 124, 128)


def test_venues_without_ids_in_sequence_drop_repeats(data_dir):
    lines = [line.text for line in sample_lines("bybit-linear") if line.kind == "trade"]
    with pumpwatch.Store(data_dir) as store:
        first, _ = store.ingest_many("bybit-linear", lines, 5)
        again, _ = store.ingest_many("bybit-linear", lines, 6)
        assert first > 0 and again == 0
        assert store.query().num_rows == first


def test_ingest_many_stores_what_ingest_one_by_one_stores(tmp_path):
    frames = [line.text for v in VENUES for line in sample_lines(v)]
    venue_of = [v for v in VENUES for _ in sample_lines(v)]
    with pumpwatch.Store(tmp_path / "a") as a, pumpwatch.Store(tmp_path / "b") as b:
        for v, f in zip(venue_of, frames, strict=False):
            a.ingest(v, f, 7)
        for v in VENUES:
            b.ingest_many(v, [line.text for line in sample_lines(v)], 7)
        assert (
            a.query(include_non_trades=True)
            .sort_by("trade_id")
            .equals(b.query(include_non_trades=True).sort_by("trade_id"))
        )
        assert a.ingest_stats() == b.ingest_stats()


def test_ingest_many_takes_bytes_str_and_bytes_subclasses_and_names_anything_else(data_dir):
    class Frame(bytes):
        pass

    def binance(i: int) -> str:
        return (
            '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":%d,"p":"1.5","q":"2",'
            '"T":1751132780368,"m":true,"M":true}}' % i
        )

    with pumpwatch.Store(data_dir) as store:
        n, events = store.ingest_many("binance-spot", [binance(1).encode(), binance(2), Frame(binance(3).encode())], 5)
        assert (n, events) == (3, None)
        with pytest.raises(TypeError, match="bytes or str, not int"):
            store.ingest_many("binance-spot", [binance(4).encode(), 7], 5)
        with pytest.raises(TypeError, match="bytes or str, not bytearray"):
            store.ingest("binance-spot", bytearray(binance(4).encode()), 5)
        # Nothing of a refused batch was stored or remembered: its frames go in on a retry.
        assert store.ingest_many("binance-spot", [binance(4), binance(5)], 5)[0] == 2
        assert store.query().column("trade_id").to_pylist() == ["1", "2", "3", "4", "5"]


def test_phemex_spot_scales_come_from_the_product_list(data_dir):
    frame = '{"sequence":1,"symbol":"sSUSHIUSDT","trades":[[1625342244127840967,"Buy",769100000,168200000]],"type":"incremental"}'
    with pumpwatch.Store(data_dir) as store:
        store.set_phemex_spot_scales("sSUSHIUSDT", 8, 6)
        store.ingest("phemex-spot", frame, 1)
        row = store.query().to_pylist()[0]
    assert (row["price"], row["qty"]) == ("7.69100000", "168.200000")


def test_both_paths_ingest_to_the_same_log_and_events(tmp_path):
    """The pure-Python ingest path is the oracle: the same frames give the same trades, markers,
    quarantined frames, events and counters on both paths."""
    import pumpwatch.purepy as purepy

    rng = random.Random(5)
    work = []
    for v in VENUES:
        lines = [line.text for line in sample_lines(v)]
        work += [(v, f) for f in lines]
        work += [(v, m) for line in lines[:2] for m in _mutations(line, rng)]
        work += [(v, f) for f in lines[:3]]  # a redundant connection's copies
    work += [("binance-usdm", binance_frame("ETHUSDT", t)) for t in [1, 2, 5, 6, 6, 9, 3]]
    results = {}
    for name, cls in {"rust": pumpwatch.Store, "purepy": purepy.Store}.items():
        with cls(tmp_path / name) as store:
            events = []
            for i, (venue, frame) in enumerate(work):
                n, evs = store.ingest(venue, frame, 1_000 + i)
                events.append((n, [e if e[0] != "quarantined" else e[:2] for e in evs or []]))
            backfill = [
                pumpwatch.Trade("binance-usdm", "ETHUSDT", str(t), "1", "1", "buy", 1_790_000_000_000_000_000, 7)
                for t in [3, 4, 7, 8]
            ]
            events.append(store.ingest_trades(backfill))
            results[name] = (
                store.query(include_non_trades=True).to_pylist(),
                store.markers().to_pylist(),
                [(v, t, raw) for v, t, _, raw in store.quarantined()],
                events,
                store.ingest_stats(),
                store.open_gaps("binance-usdm", "ETHUSDT"),
            )
    for part, a, b in zip(
        ["trades", "markers", "quarantined", "events", "stats", "gaps"],
        results["rust"],
        results["purepy"],
        strict=False,
    ):
        assert a == b, part
    assert results["rust"][5] == []  # 3..4 and 7..8 filled by the backfill
