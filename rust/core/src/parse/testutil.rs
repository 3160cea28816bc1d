//! Shared test helpers: sample-file checks, venue frames rendered from the simulator's wire
//! templates, and the mutation ("never panic") harness.
use std::fmt::Display;

use super::*;

mod wire;

/// Line `n` (1-based) of a sample file's text.
pub fn line(text: &str, n: usize) -> &str {
    lines(text).nth(n - 1).unwrap()
}

/// Parses `line`, panicking with the error message if it fails.
pub fn parse_ok(venue: Venue, line: &str, ctx: &ParseContext) -> ParsedFrame {
    let mut out = ParsedFrame::new();
    if let Err(e) = parse_frame(venue, line.as_bytes(), ctx, &mut out) {
        panic!("{} line failed: {e}\n{line}", venue.id());
    }
    check_invariants(venue, &out);
    out
}

/// Everything a successful parse promises.
pub fn check_invariants(venue: Venue, out: &ParsedFrame) {
    assert!(out.trades.is_empty() != out.control.is_none(), "exactly one of trades / control");
    for i in 0..out.trades.len() {
        let t = out.trade(i, venue, 0);
        if let Err(e) = t.check() {
            panic!("trade {i} fails TradeRef::check: {e} ({t:?})");
        }
        assert!(is_plain_decimal(t.price) && is_plain_decimal(t.qty));
        assert!(t.qty.first() != Some(&b'-'));
        let p = &out.trades[i];
        assert_eq!(p.seq_first.is_some(), p.seq_last.is_some());
        if let (Some(a), Some(b)) = (p.seq_first, p.seq_last) {
            assert!(a <= b);
        }
        assert!(p.ts_ns >= 0);
    }
}

/// Expected values of one trade.
pub struct Want<'s> {
    pub symbol: &'s str,
    pub id: &'s str,
    pub price: &'s str,
    pub qty: &'s str,
    pub side: Side,
    pub ts_ns: i64,
    pub flags: u16,
    pub seq: Option<(u64, u64)>,
}

pub fn assert_trade(out: &ParsedFrame, venue: Venue, i: usize, w: &Want<'_>) {
    let t = out.trade(i, venue, 0);
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    assert_eq!(s(t.symbol), w.symbol, "symbol");
    assert_eq!(s(t.trade_id), w.id, "id");
    assert_eq!(s(t.price), w.price, "price");
    assert_eq!(s(t.qty), w.qty, "qty");
    assert_eq!(t.side, w.side, "side");
    assert_eq!(t.ts_ns, w.ts_ns, "ts_ns");
    assert_eq!(t.flags, w.flags, "flags");
    let p = &out.trades[i];
    assert_eq!(p.seq_first.zip(p.seq_last), w.seq, "seq");
}

pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim().is_empty())
}

/// Parses every line; all must yield trades (or, with `control`, a control message).
pub fn all_parse(venue: Venue, text: &str, control: bool, ctx: &ParseContext) -> usize {
    let mut n = 0;
    for line in lines(text) {
        let out = parse_ok(venue, line, ctx);
        if control {
            assert!(out.control.is_some(), "expected control for {line}");
        } else {
            assert!(!out.trades.is_empty(), "expected trades for {line}");
        }
        n += 1;
    }
    n
}

fn try_parse(venue: Venue, frame: &[u8], ctx: &ParseContext, out: &mut ParsedFrame) {
    match parse_frame(venue, frame, ctx, out) {
        Ok(()) => check_invariants(venue, out),
        Err(e) => {
            assert!(out.trades.is_empty() && out.control.is_none() && out.arena.is_empty());
            assert!(!e.0.is_empty());
        }
    }
}

/// Spans of the JSON scalars (and containers) in a frame, found with the crate's tokenizer.
fn value_spans(line: &[u8]) -> Vec<(usize, usize, json::Kind)> {
    let mut nodes = Vec::new();
    let mut stack = Vec::new();
    json::parse_into(line, &mut nodes, &mut stack).unwrap();
    nodes
        .iter()
        .map(|n| {
            let (s, e) = if n.kind == json::Kind::Str {
                (n.start as usize - 1, n.end as usize + 1)
            } else {
                (n.start as usize, n.end as usize)
            };
            (s, e, n.kind)
        })
        .collect()
}

/// Frames of `venue` in the shape the venue sends, rendered from the simulator's wire templates
/// (`sim/wire/<venue>.json`, the templates the simulator sends from), with consecutive ids from
/// `first_id`: what a recorder receives most of the time. A value a template has no place for is
/// left out, as in the simulator (Binance spot has no `X`).
pub fn venue_frames(venue: Venue, n: usize, first_id: u64) -> Vec<Vec<u8>> {
    let message = match venue {
        Venue::BinanceSpot | Venue::BinanceUsdm => "@trade combined",
        Venue::BybitSpot | Venue::BybitLinear => "publicTrade",
        Venue::OkxSpot | Venue::OkxSwap => "trades-all",
        Venue::KucoinSpot => "/market/match",
        Venue::KucoinFutures => "/contractMarket/execution",
        Venue::GateSpot => "spot.trades",
        Venue::GateFutures => "futures.trades",
        Venue::PhemexSpot => "trades",
        Venue::PhemexPerp => "trades_p",
    };
    let template = wire::Template::new(venue, message);
    (0..n as u64)
        .map(|i| {
            let id = first_id + i;
            let ms = 1_790_000_000_000u64 + i;
            let ns = ms * 1_000_000;
            let side = if i & 1 == 0 { "buy" } else { "sell" };
            let side_cap = if i & 1 == 0 { "Buy" } else { "Sell" };
            let m = i & 1 == 1;
            let price = ["64995.9", "64997.40", "65000.4", "64993.35"][(i % 4) as usize];
            let qty = ["0.0134", "0.00039", "10403", "1.5"][(i % 4) as usize];
            let render = |fields: &[(&str, &dyn Display)], row: &[(&str, &dyn Display)]| {
                template.render(fields, if row.is_empty() { &[] } else { std::slice::from_ref(&row) })
            };
            let f = match venue {
                Venue::BinanceSpot | Venue::BinanceUsdm => render(
                    &[
                        ("stream", &"btcusdt@trade"),
                        ("E", &(ms + 1)),
                        ("T", &ms),
                        ("s", &"BTCUSDT"),
                        ("t", &id),
                        ("p", &price),
                        ("q", &qty),
                        ("X", &"MARKET"),
                        ("m", &m),
                    ],
                    &[],
                ),
                Venue::BybitSpot => render(
                    &[("topic", &"publicTrade.BTCUSDT"), ("ts", &(ms + 1))],
                    &[
                        ("i", &(2_282_000_001_863_167_963u64 + i)),
                        ("T", &ms),
                        ("p", &price),
                        ("v", &qty),
                        ("S", &side_cap),
                        ("seq", &(350_716_468_399u64 + i)),
                        ("s", &"BTCUSDT"),
                        ("RPI", &false),
                    ],
                ),
                Venue::BybitLinear => render(
                    &[("topic", &"publicTrade.BTCUSDT"), ("ts", &(ms + 1))],
                    &[
                        ("T", &ms),
                        ("s", &"BTCUSDT"),
                        ("S", &side_cap),
                        ("v", &qty),
                        ("p", &price),
                        ("L", &"ZeroPlusTick"),
                        ("i", &format!("0856d748-770c-596b-8b96-{id:012x}")),
                        ("RPI", &false),
                        ("seq", &(132_144_967_094u64 + i)),
                    ],
                ),
                Venue::OkxSpot | Venue::OkxSwap => {
                    let inst = if venue == Venue::OkxSpot { "BTC-USDT" } else { "BTC-USDT-SWAP" };
                    render(
                        &[("channel_inst", &inst)],
                        &[
                            ("instId", &inst),
                            ("tradeId", &id),
                            ("px", &price),
                            ("sz", &qty),
                            ("side", &side),
                            ("ts", &ms),
                        ],
                    )
                }
                Venue::KucoinSpot => render(
                    &[
                        ("topic", &"/market/match:BTC-USDT"),
                        ("makerOrderId", &"58e96db5f46313b3fd0cd7f5"),
                        ("price", &price),
                        ("sequence", &id),
                        ("side", &side),
                        ("size", &qty),
                        ("symbol", &"BTC-USDT"),
                        ("takerOrderId", &"4cc30049acdd6d4980dd7f06"),
                        ("time", &ns),
                        ("tradeId", &id),
                    ],
                    &[],
                ),
                Venue::KucoinFutures => render(
                    &[
                        ("topic", &"/contractMarket/execution:XBTUSDTM"),
                        ("sn", &id),
                        ("symbol", &"XBTUSDTM"),
                        ("sequence", &id),
                        ("side", &side),
                        ("size", &(1 + i % 30)),
                        ("price", &price),
                        ("takerOrderId", &"332534640481690703"),
                        ("makerOrderId", &"117574116467317674"),
                        ("tradeId", &id),
                        ("ts", &ns),
                    ],
                    &[],
                ),
                Venue::GateSpot => render(
                    &[
                        ("time", &(ms / 1000)),
                        ("time_ms", &ms),
                        ("id", &id),
                        ("id_market", &id),
                        ("create_time", &(ms / 1000)),
                        ("create_time_ms", &format!("{ms}.000000")),
                        ("side", &side),
                        ("currency_pair", &"BTC_USDT"),
                        ("amount", &qty),
                        ("price", &price),
                        ("range", &format!("{id}-{id}")),
                        ("stock", &"BTC"),
                        ("money", &"USDT"),
                    ],
                    &[],
                ),
                Venue::GateFutures => render(
                    &[("time", &(ms / 1000)), ("time_ms", &ms)],
                    &[
                        ("id", &id),
                        ("size", &(if m { -1 } else { 1 } * (1 + i % 80) as i64)),
                        ("create_time", &(ms / 1000)),
                        ("create_time_ms", &ms),
                        ("price", &price),
                        ("contract", &"BTC_USDT"),
                    ],
                ),
                Venue::PhemexSpot => render(
                    &[("sequence", &id), ("symbol", &"sBTCUSDT"), ("type", &"incremental")],
                    &[
                        ("ts", &ns),
                        ("side", &side_cap),
                        ("price", &(6_499_540_000_000u64 + i % 1000 * 10_000)),
                        ("qty", &(412_000 + i % 1000)),
                    ],
                ),
                Venue::PhemexPerp => render(
                    &[("sequence", &id), ("symbol", &"BTCUSDT"), ("type", &"incremental")],
                    &[("ts", &ns), ("side", &side_cap), ("price", &price), ("qty", &qty)],
                ),
            };
            f.into_bytes()
        })
        .collect()
}

/// Holds a venue's shortcut to the general parser: on each of `base` (which it must take) and
/// on every variant made by replacing one JSON value or key of one of them, wherever the
/// shortcut takes a frame the general parser takes it too, with the same trades; where it
/// declines, it leaves nothing behind. Returns (frames tried, frames the shortcut took).
/// `also` (real frames from the samples) are held to the same rule but need not be taken.
pub fn shortcut_agrees(venue: Venue, base: &[String], also: &str) -> (usize, usize) {
    let ctx = ParseContext::new();
    let mut variants: Vec<Vec<u8>> = [
        "\"buy\"",
        "\"Sell\"",
        "\"BUY\"",
        "\"x\"",
        "\"\"",
        "\"0\"",
        "\"007\"",
        "\"1\"",
        "\"-1.5\"",
        "\"1.5\"",
        "\"1.\"",
        "\"1e5\"",
        "\"1790000000000\"",
        "\"1790000000000.5\"",
        "\"1790000000000000000\"",
        "\"99999999999999999999\"",
        "\"A\\u0042C\"",
        "\"a\\\"b\"",
        "\"\u{e9}\"",
        "\"\u{7f}\"",
        "\"publicTrade.BTCUSDT\"",
        "\"publicTrade\"",
        "\"trades\"",
        "\"trades-all\"",
        "\"books\"",
        "\"message\"",
        "\"ack\"",
        "\"/market/match:X\"",
        "\"/market/level2:X\"",
        "\"1-2\"",
        "0",
        "1",
        "-1",
        "1.5",
        "-1.5",
        "-0",
        "01",
        "1e5",
        "1.5E2",
        "1790000000000",
        "1790000000000000000",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "true",
        "false",
        "null",
        "[]",
        "{}",
        "[1]",
        "{\"a\":1}",
        "[{}]",
        // Key names, so that keys are renamed and repeated.
        "\"s\"",
        "\"S\"",
        "\"T\"",
        "\"p\"",
        "\"v\"",
        "\"i\"",
        "\"BT\"",
        "\"RPI\"",
        "\"instId\"",
        "\"tradeId\"",
        "\"px\"",
        "\"sz\"",
        "\"side\"",
        "\"count\"",
        "\"ts\"",
        "\"time\"",
        "\"sequence\"",
        "\"price\"",
        "\"size\"",
        "\"symbol\"",
        "\"data\"",
        "\"topic\"",
        "\"type\"",
        "\"arg\"",
        "\"event\"",
        "\"channel\"",
        "\"success\"",
        "\"op\"",
    ]
    .iter()
    .map(|v| v.as_bytes().to_vec())
    .collect();
    variants.push(format!("\"{}\"", "7".repeat(300)).into_bytes());
    variants.push(format!("\"{}\"", "A".repeat(256)).into_bytes());
    let (mut tried, mut taken) = (0, 0);
    let mut check = |frame: &[u8], must_take: bool| {
        tried += 1;
        let mut fast = ParsedFrame::new();
        if !shortcut(venue, frame, &ctx, &mut fast) {
            assert!(!must_take, "{}: the shortcut declined {}", venue.id(), String::from_utf8_lossy(frame));
            assert!(fast.trades.is_empty() && fast.arena.is_empty() && fast.control.is_none());
            return;
        }
        taken += 1;
        let shown = String::from_utf8_lossy(frame);
        let mut general = ParsedFrame::new();
        if let Err(e) = parse_general(venue, frame, &ctx, &mut general) {
            panic!("{}: the shortcut took a frame the general parser refuses ({e}): {shown}", venue.id());
        }
        assert!(general.control.is_none() && fast.control.is_none(), "{shown}");
        assert_eq!(fast.trades.len(), general.trades.len(), "{shown}");
        for i in 0..fast.trades.len() {
            assert_eq!(fast.trade(i, venue, 0), general.trade(i, venue, 0), "trade {i} of {shown}");
            let (f, g) = (&fast.trades[i], &general.trades[i]);
            assert_eq!((f.seq_first, f.seq_last), (g.seq_first, g.seq_last), "trade {i} of {shown}");
        }
        check_invariants(venue, &fast);
    };
    let also: Vec<String> = lines(also).map(str::to_owned).collect();
    for (n, frame) in base.iter().chain(&also).enumerate() {
        let b = frame.as_bytes();
        check(b, n < base.len());
        for (s, e, _) in value_spans(b) {
            for v in &variants {
                let mut m = b[..s].to_vec();
                m.extend_from_slice(v);
                m.extend_from_slice(&b[e..]);
                check(&m, false);
            }
        }
        for m in [
            format!(" {frame}"),
            format!("{frame} "),
            format!("{frame}\n"),
            frame.replacen(':', ": ", 1),
            frame.replacen(',', " ,", 1),
        ] {
            check(m.as_bytes(), false);
        }
        for cut in 0..b.len() {
            check(&b[..cut], false);
        }
    }
    (tried, taken)
}

/// Mutates a valid frame in many ways; every result must be `Err` or a valid `Ok`, never a panic.
pub fn mutate_all(venue: Venue, text: &str, ctx: &ParseContext) -> usize {
    let mut out = ParsedFrame::new();
    let mut count = 0usize;
    let replacements: &[&[u8]] = &[
        b"null",
        b"true",
        b"false",
        b"0",
        b"-1",
        b"1e400",
        b"-0.0",
        b"1.5",
        b"18446744073709551616",
        b"9223372036854775807",
        b"99999999999999999999999999999999999999999999999999",
        b"\"\"",
        b"\"x\"",
        b"\"-5\"",
        b"\"1e5\"",
        b"\"\\ud800\"",
        b"\"\\u0041\\n\"",
        b"\"99999999999999999999999999.5\"",
        b"[]",
        b"{}",
        b"[[[[[[[[[[1]]]]]]]]]]",
        b"{\"a\":{\"b\":{\"c\":[1,2,{}]}}}",
        b"[1,\"Buy\",2,3]",
        b"[[1,\"Buy\",2,3],[1,\"Sell\",2,3]]",
    ];
    let deep: Vec<u8> = {
        let mut v = vec![b'['; 5000];
        v.extend_from_slice(&[b']'; 5000]);
        v
    };
    let long_str: Vec<u8> = {
        let mut v = vec![b'"'];
        v.extend_from_slice(&[b'7'; 300]);
        v.push(b'"');
        v
    };
    for line in lines(text) {
        let b = line.as_bytes();
        // Truncation at every offset.
        for cut in 0..=b.len() {
            try_parse(venue, &b[..cut], ctx, &mut out);
            count += 1;
        }
        // Byte flips.
        for i in 0..b.len() {
            for v in [0u8, b'"', b'{', b']', b'\\', b'9', b'-', b'.', 0x80, 0xff, b' ', b'e'] {
                let mut m = b.to_vec();
                m[i] = v;
                try_parse(venue, &m, ctx, &mut out);
                count += 1;
            }
        }
        // Every value replaced with wrong types, huge numbers, deep nesting.
        for (s, e, _) in value_spans(b) {
            let mut reps: Vec<&[u8]> = replacements.to_vec();
            reps.push(&deep);
            reps.push(&long_str);
            for r in reps {
                let mut m = b[..s].to_vec();
                m.extend_from_slice(r);
                m.extend_from_slice(&b[e..]);
                try_parse(venue, &m, ctx, &mut out);
                count += 1;
            }
            // Value removed (leaves `"k":,` or a dangling comma).
            let mut m = b[..s].to_vec();
            m.extend_from_slice(&b[e..]);
            try_parse(venue, &m, ctx, &mut out);
            count += 1;
        }
        // Whole-frame oddities.
        for m in [
            format!("  {line}  \n"),
            format!("[{line}]"),
            format!("{line}{line}"),
            format!("{{\"stream\":\"x\",\"data\":{line}}}"),
            format!("{{\"data\":{line}}}"),
        ] {
            try_parse(venue, m.as_bytes(), ctx, &mut out);
            count += 1;
        }
    }
    for m in [&b""[..], b" ", b"pong", b"ping", b"null", b"[]", b"{}", b"\"x\"", b"1", &deep, b"{\"a\":1}garbage"] {
        try_parse(venue, m, ctx, &mut out);
        count += 1;
    }
    count
}

/// FNV-1a of `frames`, each followed by a newline (as a `.jsonl` file of them would be).
fn fnv1a(frames: &[Vec<u8>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in frames.iter().flat_map(|f| f.iter().chain(b"\n")) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The frames rendered from the wire templates are, byte for byte, the frames these tests wrote by
/// hand before (moved from a test that held both side by side): the first two of every venue in
/// full, and the 20,000 of the throughput test (`parse_throughput`) by length and hash, so that its
/// figures stay comparable with those measured before.
#[test]
fn venue_frames_are_the_frames_written_by_hand_before() {
    let want: [(Venue, usize, u64, [&str; 2]); 12] = [
        (
            Venue::BinanceSpot,
            3_105_000,
            0x03e0949ceb3116ef,
            [
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1790000000001,"s":"BTCUSDT","t":1000000,"p":"64995.9","q":"0.0134","T":1790000000000,"m":false,"M":true}}"#,
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1790000000002,"s":"BTCUSDT","t":1000001,"p":"64997.40","q":"0.00039","T":1790000000001,"m":true,"M":true}}"#,
            ],
        ),
        (
            Venue::BinanceUsdm,
            3_325_000,
            0xe09b8f61769e9f67,
            [
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1790000000001,"T":1790000000000,"s":"BTCUSDT","t":1000000,"p":"64995.9","q":"0.0134","X":"MARKET","m":false,"st":1}}"#,
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1790000000002,"T":1790000000001,"s":"BTCUSDT","t":1000001,"p":"64997.40","q":"0.00039","X":"MARKET","m":true,"st":1}}"#,
            ],
        ),
        (
            Venue::BybitSpot,
            4_345_000,
            0xa9cc7cb28b404953,
            [
                r#"{"topic":"publicTrade.BTCUSDT","ts":1790000000001,"type":"snapshot","data":[{"i":"2282000001863167963","T":1790000000000,"p":"64995.9","v":"0.0134","S":"Buy","seq":350716468399,"s":"BTCUSDT","BT":false,"RPI":false}]}"#,
                r#"{"topic":"publicTrade.BTCUSDT","ts":1790000000002,"type":"snapshot","data":[{"i":"2282000001863167964","T":1790000000001,"p":"64997.40","v":"0.00039","S":"Sell","seq":350716468400,"s":"BTCUSDT","BT":false,"RPI":false}]}"#,
            ],
        ),
        (
            Venue::BybitLinear,
            5_065_000,
            0x2eb1e50321ff0fab,
            [
                r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1790000000001,"data":[{"T":1790000000000,"s":"BTCUSDT","S":"Buy","v":"0.0134","p":"64995.9","L":"ZeroPlusTick","i":"0856d748-770c-596b-8b96-0000000f4240","BT":false,"RPI":false,"seq":132144967094}]}"#,
                r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1790000000002,"data":[{"T":1790000000001,"s":"BTCUSDT","S":"Sell","v":"0.00039","p":"64997.40","L":"ZeroPlusTick","i":"0856d748-770c-596b-8b96-0000000f4241","BT":false,"RPI":false,"seq":132144967095}]}"#,
            ],
        ),
        (
            Venue::OkxSpot,
            3_605_000,
            0xfd7c67865d9a907d,
            [
                r#"{"arg":{"channel":"trades-all","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1000000","px":"64995.9","sz":"0.0134","side":"buy","source":"0","ts":"1790000000000"}]}"#,
                r#"{"arg":{"channel":"trades-all","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1000001","px":"64997.40","sz":"0.00039","side":"sell","source":"0","ts":"1790000000001"}]}"#,
            ],
        ),
        (
            Venue::OkxSwap,
            3_805_000,
            0x6dbc8df270653f9d,
            [
                r#"{"arg":{"channel":"trades-all","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP","tradeId":"1000000","px":"64995.9","sz":"0.0134","side":"buy","source":"0","ts":"1790000000000"}]}"#,
                r#"{"arg":{"channel":"trades-all","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP","tradeId":"1000001","px":"64997.40","sz":"0.00039","side":"sell","source":"0","ts":"1790000000001"}]}"#,
            ],
        ),
        (
            Venue::KucoinSpot,
            6_465_000,
            0xef4398850ad092dd,
            [
                r#"{"topic":"/market/match:BTC-USDT","type":"message","subject":"trade.l3match","data":{"makerOrderId":"58e96db5f46313b3fd0cd7f5","price":"64995.9","sequence":"1000000","side":"buy","size":"0.0134","symbol":"BTC-USDT","takerOrderId":"4cc30049acdd6d4980dd7f06","time":"1790000000000000000","tradeId":"1000000","type":"match"}}"#,
                r#"{"topic":"/market/match:BTC-USDT","type":"message","subject":"trade.l3match","data":{"makerOrderId":"58e96db5f46313b3fd0cd7f5","price":"64997.40","sequence":"1000001","side":"sell","size":"0.00039","symbol":"BTC-USDT","takerOrderId":"4cc30049acdd6d4980dd7f06","time":"1790000000001000000","tradeId":"1000001","type":"match"}}"#,
            ],
        ),
        (
            Venue::KucoinFutures,
            6_033_997,
            0xf06bec3bdce9c4a5,
            [
                r#"{"topic":"/contractMarket/execution:XBTUSDTM","type":"message","subject":"match","sn":1000000,"data":{"symbol":"XBTUSDTM","sequence":1000000,"side":"buy","size":1,"price":"64995.9","takerOrderId":"332534640481690703","makerOrderId":"117574116467317674","tradeId":"1000000","ts":1790000000000000000}}"#,
                r#"{"topic":"/contractMarket/execution:XBTUSDTM","type":"message","subject":"match","sn":1000001,"data":{"symbol":"XBTUSDTM","sequence":1000001,"side":"sell","size":2,"price":"64997.40","takerOrderId":"332534640481690703","makerOrderId":"117574116467317674","tradeId":"1000001","ts":1790000000001000000}}"#,
            ],
        ),
        (
            Venue::GateSpot,
            6_805_000,
            0x4205e95cd1dab01d,
            [
                r#"{"time":1790000000,"time_ms":1790000000000,"channel":"spot.trades","event":"update","result":{"id":1000000,"id_market":1000000,"create_time":1790000000,"create_time_ms":"1790000000000.000000","side":"buy","currency_pair":"BTC_USDT","amount":"0.0134","price":"64995.9","range":"1000000-1000000","stock":"BTC","money":"USDT","trade_mode":0}}"#,
                r#"{"time":1790000000,"time_ms":1790000000001,"channel":"spot.trades","event":"update","result":{"id":1000001,"id_market":1000001,"create_time":1790000000,"create_time_ms":"1790000000001.000000","side":"sell","currency_pair":"BTC_USDT","amount":"0.00039","price":"64997.40","range":"1000001-1000001","stock":"BTC","money":"USDT","trade_mode":0}}"#,
            ],
        ),
        (
            Venue::GateFutures,
            4_417_750,
            0xd993819e665ecb83,
            [
                r#"{"time":1790000000,"time_ms":1790000000000,"channel":"futures.trades","event":"update","result":[{"id":1000000,"size":1,"create_time":1790000000,"create_time_ms":1790000000000,"price":"64995.9","contract":"BTC_USDT"}]}"#,
                r#"{"time":1790000000,"time_ms":1790000000001,"channel":"futures.trades","event":"update","result":[{"id":1000001,"size":-2,"create_time":1790000000,"create_time_ms":1790000000001,"price":"64997.40","contract":"BTC_USDT"}]}"#,
            ],
        ),
        (
            Venue::PhemexSpot,
            2_450_000,
            0x4f47a45d6e05de85,
            [
                r#"{"sequence":1000000,"symbol":"sBTCUSDT","trades":[[1790000000000000000,"Buy",6499540000000,412000]],"type":"incremental"}"#,
                r#"{"sequence":1000001,"symbol":"sBTCUSDT","trades":[[1790000000001000000,"Sell",6499540010000,412001]],"type":"incremental"}"#,
            ],
        ),
        (
            Venue::PhemexPerp,
            2_425_000,
            0xaf48c3c1caa4092d,
            [
                r#"{"sequence":1000000,"symbol":"BTCUSDT","trades_p":[[1790000000000000000,"Buy","64995.9","0.0134"]],"type":"incremental"}"#,
                r#"{"sequence":1000001,"symbol":"BTCUSDT","trades_p":[[1790000000001000000,"Sell","64997.40","0.00039"]],"type":"incremental"}"#,
            ],
        ),
    ];
    assert_eq!(want.map(|w| w.0), crate::venue::ALL);
    for (venue, len, hash, first) in want {
        let frames = venue_frames(venue, 20_000, 1_000_000);
        for (frame, w) in frames.iter().zip(first) {
            assert_eq!(String::from_utf8_lossy(frame), w, "{}", venue.id());
        }
        let got = (frames.iter().map(|f| f.len() + 1).sum::<usize>(), fnv1a(&frames));
        assert_eq!(got, (len, hash), "{}: the throughput frames changed", venue.id());
    }
}
