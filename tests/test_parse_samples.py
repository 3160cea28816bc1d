"""The pure-Python venue parsers against the real frames in tests/samples/ (a copy of shared/samples/).

Every line of every venue's sample files is parsed: trade files must yield at least one trade per
line, control files a control message per line. A hand-picked set of lines per venue is checked
field by field against values read off the frames by hand: the table tests/data/real_frames.json,
which the Rust parser runs too (here through pumpwatch._core, and in rust/core/tests/real_frames.rs).

The sample index (``SAMPLE_FILES``, ``sample_lines(venue)``...) lives in venue_samples.py.
"""

from __future__ import annotations

import pytest

from pumpwatch import _core
from pumpwatch.purepy.parse import FrameError, ParseContext, parse
from venue_samples import (
    FOREIGN_FILES,
    SAMPLE_FILES,
    SAMPLES_DIR,
    flag_bits,
    foreign_lines,
    line_of,
    real_frames,
    sample_lines,
)

# --- every line ------------------------------------------------------------------------------


def test_every_file_is_indexed():
    on_disk = {p.name for p in SAMPLES_DIR.glob("*.jsonl")}
    indexed = {f for files in SAMPLE_FILES.values() for f in files} | {
        f for files in FOREIGN_FILES.values() for f in files
    }
    assert on_disk == indexed


def test_line_counts():
    counts = {v: sum(1 for s in sample_lines(v) if s.kind == "trade") for v in SAMPLE_FILES}
    assert counts == {
        "binance-spot": 8,
        "binance-usdm": 13,
        "bybit-spot": 7,
        "bybit-linear": 12,
        "okx-spot": 9,
        "okx-swap": 3,
        "kucoin-spot": 8,
        "kucoin-futures": 4,
        "gate-spot": 5,
        "gate-futures": 4,
        "phemex-spot": 11,
        "phemex-perp": 2,
    }


@pytest.mark.parametrize("venue", list(SAMPLE_FILES))
def test_every_sample_line_parses(venue):
    lines = sample_lines(venue)
    assert any(s.kind == "trade" for s in lines)
    for s in lines:
        try:
            r = parse(venue, s.text)
        except FrameError as e:
            pytest.fail(f"{s.file}:{s.lineno}: {e}")
        where = f"{s.file}:{s.lineno}"
        if s.kind == "trade":
            assert r.control is None and len(r.trades) >= 1, where
            for t in r.trades:
                assert t["venue"] == venue
                assert {type(t[k]) for k in ("symbol", "trade_id", "price", "qty")} == {str}, where
                assert t["side"] in ("buy", "sell")
                assert isinstance(t["ts_ns"], int) and 0 < t["ts_ns"] < 2**63
                assert (t["seq_first"] is None) == (t["seq_last"] is None)
        else:
            assert r.trades == [] and r.control is not None, where
        # bytes and str frames parse the same
        assert parse(venue, s.text.encode()) == r


@pytest.mark.parametrize("venue", ["phemex-spot", "phemex-perp"])
def test_foreign_markets_are_refused(venue):
    lines = foreign_lines(venue)
    assert len(lines) == 7  # 4 phemex_contract lines + 3 COIN-M (LINKUSD) lines in phemex.tardis
    for s in lines:
        with pytest.raises(FrameError, match="COIN-M"):
            parse(venue, s.text)


# --- exact values ----------------------------------------------------------------------------


def T(venue, symbol, trade_id, price, qty, side, ts_ns, flags=0, seq=None):
    return {
        "venue": venue,
        "symbol": symbol,
        "trade_id": trade_id,
        "price": price,
        "qty": qty,
        "side": side,
        "ts_ns": ts_ns,
        "flags": flags,
        "seq_first": None if seq is None else seq[0],
        "seq_last": None if seq is None else seq[1],
    }


RPI, INSURANCE_FUND, ADL, INTERNAL, BLOCK_TRADE, NON_TRADE, SNAPSHOT = 1, 2, 4, 8, 16, 32, 128

# --- the table of real frames: both parsers, every field -------------------------------------
# tests/data/real_frames.json (read in venue_samples.py) holds the hand-picked sample lines with
# every field of the trades expected; rust/core/tests/real_frames.rs runs the same table against
# the Rust parser directly, and test_real_frames_rust here through pumpwatch._core.

REAL_FRAMES = real_frames()
_IDS = [f"{f['venue']}:{f['file']}:{f['line']}" for f in REAL_FRAMES]


def _want(venue, t):
    """A table trade as the pure-Python parser's dict."""
    seq = None if t["seq_first"] is None else (int(t["seq_first"]), int(t["seq_last"]))
    return T(
        venue, t["symbol"], t["trade_id"], t["price"], t["qty"], t["side"], int(t["ts_ns"]), flag_bits(t["flags"]), seq
    )


@pytest.mark.parametrize("frame", REAL_FRAMES, ids=_IDS)
def test_real_frames_pure_python(frame):
    ctx = ParseContext()
    for symbol, (p, q) in frame.get("phemex_spot_scales", {}).items():
        ctx.set_phemex_spot_scales(symbol, p, q)
    r = parse(frame["venue"], line_of(frame["file"], frame["line"]), ctx)
    assert r.control is None
    assert len(r.trades) == frame["trade_count"]
    for t in frame["trades"]:
        assert r.trades[t["index"]] == _want(frame["venue"], t)


@pytest.mark.parametrize("frame", REAL_FRAMES, ids=_IDS)
def test_real_frames_rust(frame):
    scales = {s: tuple(pq) for s, pq in frame.get("phemex_spot_scales", {}).items()} or None
    text = line_of(frame["file"], frame["line"])
    trades, seqs, control, rejected = _core.parse_frame(frame["venue"], text, phemex_spot_scales=scales)
    assert control is None and rejected == []
    assert len(trades) == frame["trade_count"]
    for t in frame["trades"]:
        got, seq = trades[t["index"]], seqs[t["index"]]
        assert {
            "venue": got.venue,
            "symbol": got.symbol,
            "trade_id": got.trade_id,
            "price": got.price,
            "qty": got.qty,
            "side": got.side,
            "ts_ns": got.ts_ns,
            "flags": got.flags,
            "seq_first": None if seq is None else seq[0],
            "seq_last": None if seq is None else seq[1],
        } == _want(frame["venue"], t)


def test_real_frames_cover_every_venue_and_name_real_flags():
    assert {f["venue"] for f in REAL_FRAMES} == set(SAMPLE_FILES)
    names = {n for f in REAL_FRAMES for t in f["trades"] for n in t["flags"].split("|") if n}
    assert names and {n: _core.FLAGS[n] for n in names} == {n: flag_bits(n) for n in names}
    # One entry per frame and context: two entries for one frame could disagree unseen.
    keys = {(f["venue"], f["file"], f["line"], str(f.get("phemex_spot_scales"))) for f in REAL_FRAMES}
    assert len(keys) == len(REAL_FRAMES)


CONTROL = [
    ("binance-usdm", "binance_usdm.control.jsonl", 1, "subscribe_ack"),
    ("bybit-spot", "bybit_spot.control.jsonl", 1, "other"),  # the request as sent
    ("bybit-spot", "bybit_spot.control.jsonl", 2, "subscribe_ack"),
    ("bybit-linear", "bybit_linear.control.jsonl", 2, "subscribe_ack"),
    ("okx-spot", "okx.control.jsonl", 1, "other"),
    ("okx-swap", "okx.control.jsonl", 3, "subscribe_ack"),
    ("kucoin-spot", "kucoin_spot.control.jsonl", 1, "other"),
    ("kucoin-spot", "kucoin_spot.control.jsonl", 2, "welcome"),
    ("kucoin-spot", "kucoin_spot.control.jsonl", 3, "subscribe_ack"),
    ("gate-spot", "gateio_spot.control.jsonl", 1, "other"),
    ("gate-spot", "gateio_spot.control.jsonl", 2, "subscribe_ack"),
    ("gate-spot", "gateio_spot.control.jsonl", 3, "subscribe_ack"),
    ("gate-futures", "gateio_futures.control.jsonl", 2, "subscribe_ack"),
    ("phemex-spot", "phemex.control.jsonl", 1, "other"),
    ("phemex-perp", "phemex.control.jsonl", 2, "subscribe_ack"),
]


@pytest.mark.parametrize("venue,file,lineno,kind", CONTROL, ids=[f"{c[0]}:{c[1]}:{c[2]}" for c in CONTROL])
def test_control_lines(venue, file, lineno, kind):
    text = line_of(file, lineno)
    r = parse(venue, text)
    assert r.trades == []
    assert r.control == (kind, "" if kind == "welcome" else text.strip())


@pytest.mark.parametrize(
    "venue,frame,kind",
    [
        ("binance-spot", '{"code":2,"msg":"Invalid request"}', "error"),
        ("binance-spot", '{"e":"serverShutdown","E":1746671534000}', "shutdown_notice"),
        (
            "binance-spot",
            '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1746671534000}}',
            "shutdown_notice",
        ),
        ("binance-spot", '{"result":["btcusdt@trade"],"id":3}', "other"),
        ("bybit-spot", '{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}', "pong"),
        (
            "bybit-linear",
            '{"success":false,"ret_msg":"error:handler not found","conn_id":"x","op":"subscribe"}',
            "error",
        ),
        ("bybit-linear", '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[]}', "other"),
        ("okx-spot", "pong", "pong"),
        ("okx-spot", '{"event":"error","code":"60012","msg":"Invalid request"}', "error"),
        ("okx-swap", '{"event":"notice","code":"64008","msg":"The connection will soon be closed"}', "shutdown_notice"),
        ("okx-swap", '{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"last":"1"}]}', "other"),
        ("kucoin-futures", '{"id":"1545910590801","type":"pong"}', "pong"),
        ("kucoin-futures", '{"id":"1","type":"error","code":404,"data":"topic is not found"}', "error"),
        ("gate-spot", '{"time":1,"channel":"spot.pong","event":"","error":null,"result":null}', "pong"),
        ("gate-futures", '{"time":1,"channel":"futures.trades","event":"update","result":[]}', "other"),
        (
            "gate-spot",
            '{"time":1,"channel":"spot.trades","event":"subscribe","error":{"code":2,"message":"bad"}}',
            "error",
        ),
        ("phemex-perp", '{"error":null,"id":0,"result":"pong"}', "pong"),
        ("phemex-spot", '{"error":{"code":6001,"message":"invalid argument"},"id":1,"result":null}', "error"),
        ("phemex-perp", '{"sequence":1,"symbol":"BTCUSDT","trades_p":[],"type":"snapshot"}', "other"),
        (
            "gate-futures",
            '{"time":1,"channel":"futures.system","event":"update","result":{"type":"upgrade","msg":"x"}}',
            "shutdown_notice",
        ),
        # A repeated key: the last one counts, as in json.loads and every other key scan of both
        # parsers (the Rust parser once took the first here, and the engines disagreed).
        (
            "gate-futures",
            '{"time":1,"channel":"futures.system","event":"update","result":{"type":"x","type":"upgrade"}}',
            "shutdown_notice",
        ),
        (
            "gate-futures",
            '{"time":1,"channel":"futures.system","event":"update","result":{"type":"upgrade","type":"x"}}',
            "other",
        ),
    ],
)
def test_more_control_frames(venue, frame, kind):
    """Both engines name each control frame the same."""
    r = parse(venue, frame)
    assert r.trades == [] and r.control is not None
    assert r.control[0] == kind
    assert r.control[1] == ("" if kind in ("pong", "welcome") else frame)
    trades, _, control, rejected = _core.parse_frame(venue, frame)
    assert trades == [] and rejected == []
    assert control == r.control


# --- rules beyond the samples ----------------------------------------------------------------


def test_binance_na_keeps_the_id_sequence_whole():
    na = parse("binance-usdm", line_of("binance_usdm.jsonl", 6)).trades[0]
    market = parse("binance-usdm", line_of("binance_usdm.jsonl", 7)).trades[0]
    assert na["flags"] == NON_TRADE and market["flags"] == 0
    assert na["seq_last"] + 1 == market["seq_first"]


def test_okx_count_covers_an_id_range():
    frame = (
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474",'
        '"px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3","source":"0","seqId":1234}]}'
    )
    t = parse("okx-spot", frame).trades[0]
    assert (t["seq_first"], t["seq_last"]) == (130639472, 130639474)


def test_gate_spot_range_and_fractional_ms():
    frame = (
        '{"time":1606292218,"time_ms":1606292218231,"channel":"spot.trades","event":"update","result":{"id":309143071,'
        '"id_market":2390904,"create_time":1606292218,"create_time_ms":"1606292218213.4578","side":"sell",'
        '"currency_pair":"GT_USDT","amount":"16.4700000000","price":"0.4705000000","range":"2390902-2390904"}}'
    )
    t = parse("gate-spot", frame).trades[0]
    assert t == T(
        "gate-spot",
        "GT_USDT",
        "2390904",
        "0.4705000000",
        "16.4700000000",
        "sell",
        1606292218213457800,
        seq=(2390902, 2390904),
    )


def test_gate_futures_decimal_size_and_internal():
    frame = (
        '{"time":1,"channel":"futures.trades","event":"update","result":[{"id":7,"size":"-0.25","create_time":1,'
        '"create_time_ms":1700000000123,"price":"100.5","contract":"ETH_USDT","is_internal":true}]}'
    )
    t = parse("gate-futures", frame).trades[0]
    assert t == T("gate-futures", "ETH_USDT", "7", "100.5", "0.25", "sell", 1700000000123000000, INTERNAL, (7, 7))


def test_bybit_flags():
    frame = (
        '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT","S":"Sell","v":"5",'
        '"p":"1.0","i":"x","BT":true,"RPI":true}]}'
    )
    assert parse("bybit-linear", frame).trades[0]["flags"] == BLOCK_TRADE | RPI


def test_phemex_snapshot_flag_and_content_ids():
    frame = (
        '{"sequence":1,"symbol":"BTCUSDT","trades_p":[[5,"Buy","1.0","2"],[5,"Buy","1.0","2"],[5,"Sell","1.0","2"],'
        '[6,"Buy","1.0","2"],[5,"Buy","1.0","2"],[5,"Buy","1.0","20"]],"type":"snapshot"}'
    )
    trades = parse("phemex-perp", frame).trades
    assert [t["trade_id"] for t in trades] == [
        "5:b:1.0:2",
        "5:b:1.0:2#2",
        "5:s:1.0:2",
        "6:b:1.0:2",
        "5:b:1.0:2#3",
        "5:b:1.0:20",
    ]
    assert {t["flags"] for t in trades} == {SNAPSHOT}


def test_phemex_spot_configured_qty_scale():
    ctx = ParseContext()
    ctx.set_phemex_spot_scales("sBTCUSDT", 8, 6)
    t = parse("phemex-spot", line_of("phemex.tardis.jsonl", 4), ctx).trades[0]
    assert (t["price"], t["qty"]) == ("9544.88000000", "0.279100")
    t = parse("phemex-spot", line_of("phemex.tardis.jsonl", 4)).trades[0]
    assert (t["price"], t["qty"]) == ("9544.88000000", "0.00279100")


@pytest.mark.parametrize(
    "venue,frame",
    [
        ("binance-spot", ""),
        ("binance-spot", "pong"),
        ("binance-spot", "{}"),
        ("binance-spot", b"\xff"),
        ("binance-spot", '{"e":"trade","s":"A","t":1,"p":"1e-7","q":"1","T":1,"m":true}'),
        ("binance-spot", '{"e":"trade","s":"A","t":1,"p":"1","q":"-1","T":1,"m":true}'),
        ("binance-spot", '{"e":"trade","s":"A","t":1,"p":"1","q":"1","T":1,"m":"true"}'),
        ("binance-spot", '{"e":"trade","s":"A","t":1.5,"p":"1","q":"1","T":1,"m":true}'),
        ("binance-spot", '{"e":"trade","s":"A","t":1,"p":"1","q":"1","T":1,"m":true,"x":NaN}'),
        ("binance-usdm", '{"e":"trade","s":"A","t":1,"p":"1","q":"1","T":92233720368548,"m":true}'),
        ("binance-usdm", "[" * 129 + "]" * 129),
        ("bybit-spot", '{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"s":"A","S":"Up","v":"5","p":"1","i":"x"}]}'),
        ("okx-spot", "ping"),
        (
            "okx-spot",
            '{"arg":{"channel":"trades","instId":"A"},"data":[{"tradeId":"2","px":"1","sz":"1","side":"buy",'
            '"ts":"1","count":"4"}]}',
        ),
        (
            "kucoin-spot",
            '{"type":"message","topic":"/market/match:A","data":{"symbol":"A","side":"buy","size":"1",'
            '"price":"1","tradeId":"x"}}',
        ),
        (
            "gate-futures",
            '{"time":1,"channel":"futures.trades","event":"update","result":[{"id":7,"size":0,'
            '"create_time":1,"price":"1","contract":"A"}]}',
        ),
        (
            "gate-spot",
            '{"channel":"spot.trades","event":"update","result":{"id":1,"id_market":5,"create_time_ms":"1",'
            '"side":"buy","currency_pair":"A","amount":"1","price":"1","range":"6-5"}}',
        ),
        ("phemex-spot", '{"symbol":"sBTCUSDT","trades":[[5,"Buy","100","1"]],"type":"incremental"}'),
        ("phemex-perp", '{"symbol":"BTCUSDT","trades_p":[[5,"Buy","1.0"]],"type":"incremental"}'),
    ],
)
def test_bad_frames_raise_frame_error(venue, frame):
    with pytest.raises(FrameError) as e:
        parse(venue, frame)
    assert isinstance(e.value, ValueError)
    assert str(e.value).startswith(venue + ": ")


def test_unknown_venue_is_a_value_error_not_a_frame_error():
    with pytest.raises(ValueError) as e:
        parse("nasdaq", "{}")
    assert not isinstance(e.value, FrameError)


def test_truncated_and_flipped_samples_never_crash():
    for venue in SAMPLE_FILES:
        for s in sample_lines(venue)[:3]:
            b = s.text.encode()
            frames = [b[:cut] for cut in range(len(b))]
            frames += [b[:i] + bytes([c]) + b[i + 1 :] for i in range(len(b)) for c in (0x22, 0x7B, 0x5D, 0x30, 0xFF)]
            for f in frames:
                try:
                    r = parse(venue, f)
                except FrameError:
                    continue
                assert (r.control is None) != (r.trades == [])
