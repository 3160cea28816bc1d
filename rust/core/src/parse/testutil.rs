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

/// Frames of `venue` in the shape the venue sends (as the simulator renders them), with
/// consecutive ids from `first_id`: what a recorder receives most of the time.
pub fn venue_frames(venue: Venue, n: usize, first_id: u64) -> Vec<Vec<u8>> {
    (0..n as u64)
        .map(|i| {
            let id = first_id + i;
            let ms = 1_790_000_000_000u64 + i;
            let side = if i & 1 == 0 { "buy" } else { "sell" };
            let side_cap = if i & 1 == 0 { "Buy" } else { "Sell" };
            let m = i & 1 == 1;
            let price = ["64995.9", "64997.40", "65000.4", "64993.35"][(i % 4) as usize];
            let qty = ["0.0134", "0.00039", "10403", "1.5"][(i % 4) as usize];
            let f = match venue {
                Venue::BinanceSpot => format!(
                    r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{},"s":"BTCUSDT","t":{id},"p":"{price}","q":"{qty}","T":{ms},"m":{m},"M":true}}}}"#,
                    ms + 1
                ),
                Venue::BinanceUsdm => format!(
                    r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{},"T":{ms},"s":"BTCUSDT","t":{id},"p":"{price}","q":"{qty}","X":"MARKET","m":{m},"st":1}}}}"#,
                    ms + 1
                ),
                Venue::BybitSpot => format!(
                    r#"{{"topic":"publicTrade.BTCUSDT","ts":{},"type":"snapshot","data":[{{"i":"{}","T":{ms},"p":"{price}","v":"{qty}","S":"{side_cap}","seq":{},"s":"BTCUSDT","BT":false,"RPI":false}}]}}"#,
                    ms + 1,
                    2_282_000_001_863_167_963u64 + i,
                    350_716_468_399u64 + i
                ),
                Venue::BybitLinear => format!(
                    r#"{{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":{},"data":[{{"T":{ms},"s":"BTCUSDT","S":"{side_cap}","v":"{qty}","p":"{price}","L":"ZeroPlusTick","i":"0856d748-770c-596b-8b96-{:012x}","BT":false,"RPI":false,"seq":{}}}]}}"#,
                    ms + 1,
                    id,
                    132_144_967_094u64 + i
                ),
                Venue::OkxSpot | Venue::OkxSwap => {
                    let inst = if venue == Venue::OkxSpot { "BTC-USDT" } else { "BTC-USDT-SWAP" };
                    format!(
                        r#"{{"arg":{{"channel":"trades-all","instId":"{inst}"}},"data":[{{"instId":"{inst}","tradeId":"{id}","px":"{price}","sz":"{qty}","side":"{side}","source":"0","ts":"{ms}"}}]}}"#
                    )
                }
                Venue::KucoinSpot => format!(
                    r#"{{"topic":"/market/match:BTC-USDT","type":"message","subject":"trade.l3match","data":{{"makerOrderId":"58e96db5f46313b3fd0cd7f5","price":"{price}","sequence":"{id}","side":"{side}","size":"{qty}","symbol":"BTC-USDT","takerOrderId":"4cc30049acdd6d4980dd7f06","time":"{}","tradeId":"{id}","type":"match"}}}}"#,
                    ms * 1_000_000
                ),
                Venue::KucoinFutures => format!(
                    r#"{{"topic":"/contractMarket/execution:XBTUSDTM","type":"message","subject":"match","sn":{id},"data":{{"symbol":"XBTUSDTM","sequence":{id},"side":"{side}","size":{},"price":"{price}","takerOrderId":"332534640481690703","makerOrderId":"117574116467317674","tradeId":"{id}","ts":{}}}}}"#,
                    1 + i % 30,
                    ms * 1_000_000
                ),
                Venue::GateSpot => format!(
                    r#"{{"time":{},"time_ms":{ms},"channel":"spot.trades","event":"update","result":{{"id":{id},"id_market":{id},"create_time":{},"create_time_ms":"{ms}.000000","side":"{side}","currency_pair":"BTC_USDT","amount":"{qty}","price":"{price}","range":"{id}-{id}","stock":"BTC","money":"USDT","trade_mode":0}}}}"#,
                    ms / 1000,
                    ms / 1000
                ),
                Venue::GateFutures => format!(
                    r#"{{"time":{},"time_ms":{ms},"channel":"futures.trades","event":"update","result":[{{"id":{id},"size":{}{},"create_time":{},"create_time_ms":{ms},"price":"{price}","contract":"BTC_USDT"}}]}}"#,
                    ms / 1000,
                    if m { "-" } else { "" },
                    1 + i % 80,
                    ms / 1000
                ),
                Venue::PhemexSpot => format!(
                    r#"{{"sequence":{id},"symbol":"sBTCUSDT","trades":[[{},"{side_cap}",{},{}]],"type":"incremental"}}"#,
                    ms * 1_000_000,
                    6_499_540_000_000u64 + i % 1000 * 10_000,
                    412_000 + i % 1000
                ),
                Venue::PhemexPerp => format!(
                    r#"{{"sequence":{id},"symbol":"BTCUSDT","trades_p":[[{},"{side_cap}","{price}","{qty}"]],"type":"incremental"}}"#,
                    ms * 1_000_000
                ),
            };
            f.into_bytes()
        })
        .collect()
}

/// The same frames as `venue_frames`, rendered from the simulator's wire templates.
pub fn template_frames(venue: Venue, n: usize, first_id: u64) -> Vec<Vec<u8>> {
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

#[test]
fn template_frames_are_the_hand_written_frames() {
    for v in crate::venue::ALL {
        for first_id in [1, 1_000_000, 5_052_328_858, 6_575_351_717_429_231] {
            let (old, new) = (venue_frames(v, 20_000, first_id), template_frames(v, 20_000, first_id));
            for (i, (o, n)) in old.iter().zip(&new).enumerate() {
                assert_eq!(String::from_utf8_lossy(n), String::from_utf8_lossy(o), "{} frame {i}", v.id());
            }
            assert_eq!(old.len(), new.len());
        }
    }
}
