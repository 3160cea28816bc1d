"""The pure-Python venue parsers against the real frames in tests/samples/ (a copy of shared/samples/).

Every line of every venue's sample files is parsed: trade files must yield at least one trade per
line, control files a control message per line. A hand-picked set of lines per venue is checked
field by field against values read off the frames by hand.

The sample index (``SAMPLE_FILES``, ``sample_lines(venue)``...) lives in venue_samples.py.
"""

from __future__ import annotations

import pytest

from pumpwatch.purepy.parse import FrameError, ParseContext, parse
from venue_samples import FOREIGN_FILES, SAMPLE_FILES, SAMPLES_DIR, foreign_lines, line_of, sample_lines

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

# (venue, file, line number, expected trades at index -> dict, total trade count)
EXPECTED = [
    # Binance spot: combined @trade, m=true -> taker sold.
    (
        "binance-spot",
        "binance_spot.jsonl",
        3,
        {
            0: T(
                "binance-spot",
                "BTCUSDT",
                "5052328858",
                "107407.88000000",
                "0.00024000",
                "sell",
                1751132780368000000,
                seq=(5052328858, 5052328858),
            )
        },
        1,
    ),
    # Raw payload, m=false -> taker bought.
    (
        "binance-spot",
        "binance_spot.jsonl",
        4,
        {
            0: T(
                "binance-spot",
                "SOLFDUSD",
                "94442617",
                "136.20000000",
                "0.06200000",
                "buy",
                1718713969545000000,
                seq=(94442617, 94442617),
            )
        },
        1,
    ),
    # Old shape with b/a order ids.
    (
        "binance-spot",
        "binance_spot.jsonl",
        6,
        {
            0: T(
                "binance-spot",
                "BTCUSDT",
                "1235805672",
                "37396.04000000",
                "0.09252000",
                "buy",
                1643135979291000000,
                seq=(1235805672, 1235805672),
            )
        },
        1,
    ),
    # aggTrade: id = a, no sequence.
    (
        "binance-spot",
        "binance_spot.jsonl",
        2,
        {0: T("binance-spot", "LRCBTC", "9213679", "0.00000638", "177.00000000", "buy", 1633998534486000000)},
        1,
    ),
    (
        "binance-spot",
        "binance_spot.tardis.jsonl",
        1,
        {
            0: T(
                "binance-spot",
                "BNBBTC",
                "40756030",
                "0.00426990",
                "33.82000000",
                "buy",
                1554076800940000000,
                seq=(40756030, 40756030),
            )
        },
        1,
    ),
    # Binance USDⓈ-M
    (
        "binance-usdm",
        "binance_usdm.jsonl",
        1,
        {
            0: T(
                "binance-usdm",
                "BTCUSDT",
                "8121136411",
                "83680.00",
                "0.001",
                "sell",
                1790370834848000000,
                seq=(8121136411, 8121136411),
            )
        },
        1,
    ),
    (
        "binance-usdm",
        "binance_usdm.jsonl",
        2,
        {
            0: T(
                "binance-usdm",
                "1000PEPEUSDT",
                "2804511605",
                "0.0044478",
                "10403",
                "buy",
                1790371723021000000,
                RPI,
                (2804511605, 2804511605),
            )
        },
        1,
    ),
    (
        "binance-usdm",
        "binance_usdm.jsonl",
        4,
        {
            0: T(
                "binance-usdm",
                "BTCUSDT",
                "7979344737",
                "0",
                "0",
                "sell",
                1787151602037000000,
                NON_TRADE,
                (7979344737, 7979344737),
            )
        },
        1,
    ),
    (
        "binance-usdm",
        "binance_usdm.jsonl",
        6,
        {
            0: T(
                "binance-usdm",
                "BTCUSDT",
                "7950493454",
                "0",
                "0",
                "sell",
                1785780046071000000,
                NON_TRADE,
                (7950493454, 7950493454),
            )
        },
        1,
    ),
    (
        "binance-usdm",
        "binance_usdm.jsonl",
        7,
        {
            0: T(
                "binance-usdm",
                "BTCUSDT",
                "7950493455",
                "63884.20",
                "0.01",
                "sell",
                1785780046071000000,
                0,
                (7950493455, 7950493455),
            )
        },
        1,
    ),
    (
        "binance-usdm",
        "binance_usdm.jsonl",
        8,
        {
            0: T(
                "binance-usdm",
                "BTCUSDT",
                "3280342045",
                "21845.10",
                "0.001",
                "buy",
                1676160600269000000,
                0,
                (3280342045, 3280342045),
            )
        },
        1,
    ),
    (
        "binance-usdm",
        "binance_usdm.jsonl",
        9,
        {0: T("binance-usdm", "GASUSDT", "3863267", "6.279000", "141.2", "buy", 1698796799890000000)},
        1,
    ),
    # 2019 aggTrade without "a": id "<f>-<l>".
    (
        "binance-usdm",
        "binance_usdm.tardis.jsonl",
        1,
        {0: T("binance-usdm", "BTCUSDT", "181349-181349", "10223.74", "0.236", "buy", 1568693103463000000)},
        1,
    ),
    (
        "binance-usdm",
        "binance_usdm.tardis.jsonl",
        3,
        {
            0: T(
                "binance-usdm",
                "ETHUSDT",
                "73701056",
                "2366.55",
                "0.070",
                "sell",
                1596034530235000000,
                INSURANCE_FUND,
                (73701056, 73701056),
            )
        },
        1,
    ),
    # Bybit spot
    (
        "bybit-spot",
        "bybit_spot.jsonl",
        1,
        {0: T("bybit-spot", "ETHUSDT", "2280000001739247417", "1923.28", "0.04537", "sell", 1786310821917000000)},
        1,
    ),
    (
        "bybit-spot",
        "bybit_spot.jsonl",
        4,
        {
            0: T("bybit-spot", "ETHUSDT", "2280000001739247420", "1923.29", "0.0008", "buy", 1786310826369000000),
            1: T("bybit-spot", "ETHUSDT", "2280000001739247421", "1923.29", "0.00032", "buy", 1786310826369000000),
        },
        2,
    ),
    (
        "bybit-spot",
        "bybit_spot.tardis.jsonl",
        2,
        {0: T("bybit-spot", "BTCUSDC", "2240000000041223438", "28528.98", "0.00433", "buy", 1680688979998000000)},
        1,
    ),
    # Bybit linear
    (
        "bybit-linear",
        "bybit_linear.jsonl",
        1,
        {
            0: T(
                "bybit-linear",
                "BTCUSDT",
                "a9188a0a-82bc-50de-be60-03eedbe3cdd7",
                "65114.20",
                "0.004",
                "sell",
                1786310819680000000,
            )
        },
        1,
    ),
    (
        "bybit-linear",
        "bybit_linear.jsonl",
        2,
        {
            0: T(
                "bybit-linear",
                "ETHUSDT",
                "19d7df56-4f10-5290-a969-d9d9f2c74cc3",
                "1922.50",
                "0.01",
                "buy",
                1786310820346000000,
            ),
            2: T(
                "bybit-linear",
                "ETHUSDT",
                "600c96a7-10e6-5814-80d5-a1427918f84f",
                "1922.50",
                "0.10",
                "buy",
                1786310820346000000,
            ),
        },
        5,
    ),
    (
        "bybit-linear",
        "bybit_linear.jsonl",
        9,
        {
            0: T(
                "bybit-linear",
                "SOLUSDT",
                "58624845-f0ac-5d41-8209-e6ab34151fbd",
                "77.300",
                "0.1",
                "sell",
                1786310821941000000,
            )
        },
        1,
    ),
    (
        "bybit-linear",
        "bybit_linear.tardis.jsonl",
        2,
        {
            0: T(
                "bybit-linear",
                "LTCUSDT",
                "4c7b6bdc-b4a3-5716-9c7b-bbe01dc7072f",
                "94.53",
                "0.4",
                "buy",
                1680688979983000000,
            )
        },
        1,
    ),
    # OKX spot
    (
        "okx-spot",
        "okx_spot.jsonl",
        2,
        {
            0: T(
                "okx-spot",
                "BTC-USDT",
                "338476308",
                "30243.5",
                "0.001",
                "buy",
                1652459226050000000,
                seq=(338476308, 338476308),
            )
        },
        1,
    ),
    (
        "okx-spot",
        "okx_spot.jsonl",
        6,
        {
            0: T(
                "okx-spot",
                "BTC-USDT",
                "674510826",
                "95634.9",
                "0.00011186",
                "buy",
                1740394561685000000,
                seq=(674510826, 674510826),
            )
        },
        1,
    ),
    (
        "okx-spot",
        "okx.tardis.jsonl",
        1,
        {
            0: T(
                "okx-spot",
                "CRV-USDT",
                "21300150",
                "3.973",
                "13.491146",
                "buy",
                1639999319938000000,
                seq=(21300150, 21300150),
            )
        },
        1,
    ),
    # OKX swap (and a dated future recorded with it)
    (
        "okx-swap",
        "okx_swap.jsonl",
        2,
        {0: T("okx-swap", "BTC-USD-220527", "7849", "30218.8", "1", "buy", 1652459199958000000, seq=(7849, 7849))},
        1,
    ),
    (
        "okx-swap",
        "okx.tardis.jsonl",
        3,
        {
            0: T(
                "okx-swap",
                "BTC-USDT-SWAP",
                "148266905",
                "48938.5",
                "5",
                "buy",
                1640131236050000000,
                seq=(148266905, 148266905),
            )
        },
        1,
    ),
    # KuCoin spot
    (
        "kucoin-spot",
        "kucoin_spot.jsonl",
        3,
        {
            0: T(
                "kucoin-spot",
                "DAPPT-BTC",
                "1612701563873",
                "0.000000112",
                "1355.35",
                "buy",
                1619378327739050725,
            )
        },
        1,
    ),
    (
        "kucoin-spot",
        "kucoin_spot.jsonl",
        5,
        {0: T("kucoin-spot", "BTC-USDT", "11067996711960577", "67523", "0.003", "buy", 1729843222921000000)},
        1,
    ),
    (
        "kucoin-spot",
        "kucoin_spot.tardis.jsonl",
        3,
        {0: T("kucoin-spot", "XRP-USDT", "1622936939836", "0.37587", "66.5603", "sell", 1660608033110362773)},
        1,
    ),
    # KuCoin futures: price as a JSON number, size in contracts, ts an integer above 2**53.
    (
        "kucoin-futures",
        "kucoin_futures.jsonl",
        1,
        {0: T("kucoin-futures", "ETHUSDCM", "31443494", "23083", "35", "buy", 1677279296134648800)},
        1,
    ),
    (
        "kucoin-futures",
        "kucoin_futures.jsonl",
        2,
        {0: T("kucoin-futures", "XBTUSDTM", "1794100537695", "90503.9", "2", "buy", 1731898619520000000)},
        1,
    ),
    (
        "kucoin-futures",
        "kucoin_futures.tardis.jsonl",
        2,
        {0: T("kucoin-futures", "XBTUSDTM", "1728107666597", "39615", "1", "sell", 1706068863101000000)},
        1,
    ),
    # Gate spot: 2021 global id (no sequence) and 2026 id_market/range.
    (
        "gate-spot",
        "gateio_spot.jsonl",
        3,
        {0: T("gate-spot", "NEO_BTC", "816995982", "0.0018753000", "1.0700000000", "sell", 1619093547078008000)},
        1,
    ),
    (
        "gate-spot",
        "gateio_spot.jsonl",
        4,
        {
            0: T(
                "gate-spot",
                "BTC_USDT",
                "217831625",
                "77474",
                "0.000021",
                "sell",
                1788336082402208000,
                seq=(217831625, 217831625),
            )
        },
        1,
    ),
    (
        "gate-spot",
        "gateio_spot.jsonl",
        1,
        {0: T("gate-spot", "DIS_USDT", "816995772", "121.5800000000", "0.2010000000", "sell", 1619093543708264200)},
        1,
    ),
    # Gate futures: signed size, seconds-only time in 2020 frames.
    (
        "gate-futures",
        "gateio_futures.jsonl",
        1,
        {
            0: T(
                "gate-futures",
                "BTC_USDT",
                "825348721",
                "76520",
                "2",
                "sell",
                1788347173767000000,
                seq=(825348721, 825348721),
            )
        },
        1,
    ),
    (
        "gate-futures",
        "gateio_futures.tardis.jsonl",
        2,
        {
            0: T(
                "gate-futures",
                "ETH_USDT",
                "1696009",
                "225.5",
                "22",
                "sell",
                1593561623000000000,
                seq=(1696009, 1696009),
            )
        },
        1,
    ),
    (
        "gate-futures",
        "gateio_futures.tardis.jsonl",
        3,
        {
            0: T(
                "gate-futures",
                "BTC_USDT",
                "13654526",
                "45300",
                "1",
                "buy",
                1614556850860000000,
                seq=(13654526, 13654526),
            ),
            2: T(
                "gate-futures",
                "BTC_USDT",
                "13654528",
                "45300",
                "999",
                "buy",
                1614556850860000000,
                seq=(13654528, 13654528),
            ),
        },
        3,
    ),
    # Phemex spot: scaled integers (price 10^8, qty 10^8 by default).
    (
        "phemex-spot",
        "phemex_spot.jsonl",
        2,
        {
            0: T(
                "phemex-spot",
                "sGRTUSDT",
                "1625342244579310618:b:0.67522000:640.00000000",
                "0.67522000",
                "640.00000000",
                "buy",
                1625342244579310618,
            )
        },
        1,
    ),
    (
        "phemex-spot",
        "phemex_spot.jsonl",
        4,
        {
            0: T(
                "phemex-spot",
                "sENJUSDT",
                "1625342249643920283:b:1.13913000:13.38000000",
                "1.13913000",
                "13.38000000",
                "buy",
                1625342249643920283,
            )
        },
        1,
    ),
    (
        "phemex-spot",
        "phemex.tardis.jsonl",
        3,
        {
            0: T(
                "phemex-spot",
                "sETHUSDT",
                "1591268224163281134:b:240.25000000:0.10576000",
                "240.25000000",
                "0.10576000",
                "buy",
                1591268224163281134,
            )
        },
        1,
    ),
    # Phemex USDⓈ-M perpetual: real strings.
    (
        "phemex-perp",
        "phemex.tardis.jsonl",
        6,
        {
            0: T(
                "phemex-perp",
                "BTCUSDT",
                "1669198793402790477:b:16545.6:0.7",
                "16545.6",
                "0.7",
                "buy",
                1669198793402790477,
            )
        },
        1,
    ),
    (
        "phemex-perp",
        "phemex.tardis.jsonl",
        7,
        {
            0: T(
                "phemex-perp",
                "XRPUSDT",
                "1669198857616162039:b:0.3758:244.65",
                "0.3758",
                "244.65",
                "buy",
                1669198857616162039,
            )
        },
        1,
    ),
]


@pytest.mark.parametrize("venue,file,lineno,want,count", EXPECTED, ids=[f"{e[0]}:{e[1]}:{e[2]}" for e in EXPECTED])
def test_exact_values(venue, file, lineno, want, count):
    r = parse(venue, line_of(file, lineno))
    assert r.control is None
    assert len(r.trades) == count
    for i, t in want.items():
        assert r.trades[i] == t


def test_every_venue_has_exact_checks():
    assert {e[0] for e in EXPECTED} == set(SAMPLE_FILES)


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
    ],
)
def test_more_control_frames(venue, frame, kind):
    r = parse(venue, frame)
    assert r.trades == [] and r.control is not None
    assert r.control[0] == kind
    assert r.control[1] == ("" if kind in ("pong", "welcome") else frame)


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
