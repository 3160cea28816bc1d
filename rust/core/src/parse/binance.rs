//! Binance spot and USDⓈ-M futures: `<symbol>@trade` (and `@aggTrade`) frames, raw or wrapped in
//! the combined-stream envelope `{"stream":"btcusdt@trade","data":{...}}`.
//!
//! * trade (`"e":"trade"`): id `t` (text kept), `seq_first = seq_last = t` (per-symbol consecutive;
//!   USDⓈ-M counts `X` = `NA`/`ADL`/`INSURANCE_FUND` frames), price `p`, qty `q`, time `T` (ms),
//!   side from `m` (`m=true`: the buyer is the maker, so the taker sold).
//! * USDⓈ-M `X`: `MARKET` -> 0, `RPI` -> RPI, `INSURANCE_FUND` -> INSURANCE_FUND, `ADL` -> ADL,
//!   `NA` -> NON_TRADE (a spent id: emitted as a trade with price "0" qty "0" as sent, so the id
//!   sequence stays whole); absent (older frames) -> 0; any other value -> UNKNOWN_TYPE (still a
//!   trade and an id of the sequence: Binance adds values, VENUES §12).
//! * aggTrade (`"e":"aggTrade"`, not what PumpWatch subscribes to): a trade with id `a` and no
//!   sequence (aggregate ids are another id space than `t`); a frame without `a` (seen in 2019
//!   USDⓈ-M data) gets the id `"<f>-<l>"`.
//! * control: `{"result":null,"id":..}` -> SubscribeAck (any other `result`, e.g. a
//!   LIST_SUBSCRIPTIONS answer -> Other); `{"code":..,"msg":..}` or `{"error":{..}}` -> Error;
//!   `serverShutdown` event -> ShutdownNotice; other events and echoed requests (`method`) -> Other.

use super::json::Doc;
use super::*;

#[derive(Default)]
struct Fields {
    data: Option<usize>,
    e: Option<usize>,
    result: Option<usize>,
    code: Option<usize>,
    error: Option<usize>,
    method: Option<usize>,
    s: Option<usize>,
    t: Option<usize>,
    p: Option<usize>,
    q: Option<usize>,
    tt: Option<usize>,
    m: Option<usize>,
    x: Option<usize>,
    a: Option<usize>,
    f: Option<usize>,
    l: Option<usize>,
}

fn scan(doc: &Doc<'_>, obj: usize) -> Fields {
    let [data, e, result, code, error, method, s, t, p, q, tt, m, x, a, f, l] = doc.pick(
        obj,
        ["data", "e", "result", "code", "error", "method", "s", "t", "p", "q", "T", "m", "X", "a", "f", "l"],
    );
    Fields { data, e, result, code, error, method, s, t, p, q, tt, m, x, a, f, l }
}

pub(super) fn parse(doc: &Doc<'_>, sink: &mut Sink<'_>) -> PResult<()> {
    let root = root_object(doc)?;
    let top = scan(doc, root);
    let (fs, wrapped) = match top.data {
        Some(d) => (scan(doc, object(doc, d, field("data"))?), true),
        None => (top, false),
    };
    if let Some(e) = fs.e {
        let ev = str_field(doc, e, field("e"))?;
        return match &*ev {
            b"trade" => trade(doc, &fs, sink, false),
            b"aggTrade" => trade(doc, &fs, sink, true),
            b"serverShutdown" => {
                sink.set_control(|detail| Control::ShutdownNotice { detail });
                Ok(())
            }
            _ => {
                sink.other();
                Ok(())
            }
        };
    }
    if wrapped {
        return fail("combined-stream \"data\" has no event type \"e\"".to_owned());
    }
    if fs.error.is_some_and(|v| !doc.is_null(v)) || fs.code.is_some() {
        sink.set_control(|detail| Control::Error { detail });
        return Ok(());
    }
    if let Some(r) = fs.result {
        if doc.is_null(r) {
            sink.set_control(|detail| Control::SubscribeAck { detail });
        } else {
            sink.other();
        }
        return Ok(());
    }
    if fs.method.is_some() {
        sink.other();
        return Ok(());
    }
    fail("not a Binance trade, ack, error or event frame (no \"e\", \"result\", \"code\" or \"method\")".to_owned())
}

fn trade(doc: &Doc<'_>, fs: &Fields, sink: &mut Sink<'_>, agg: bool) -> PResult<()> {
    let mut flags = 0u16;
    if let Some(x) = fs.x {
        let xv = str_field(doc, x, field("X"))?;
        flags = match &*xv {
            b"MARKET" => 0,
            b"RPI" => flags::RPI,
            b"INSURANCE_FUND" => flags::INSURANCE_FUND,
            b"ADL" => flags::ADL,
            b"NA" => flags::NON_TRADE,
            _ => flags::UNKNOWN_TYPE,
        };
    }
    let m = need(fs.m, field("m"))?;
    let side = match doc.kind(m) {
        json::Kind::True => Side::Sell,
        json::Kind::False => Side::Buy,
        _ => return fail(format!("field \"m\" is {}, not a boolean", doc.kind_name(m))),
    };
    let ts_ns = time_ns(doc, need(fs.tt, field("T"))?, field("T"), 6)?;
    let symbol = sink.text(doc, need(fs.s, field("s"))?, field("s"))?;
    let (trade_id, seq) = if !agg {
        let (r, n) = seq_id(sink.id(doc, need(fs.t, field("t"))?, field("t"))?, field("t"), sink)?;
        (r, Some(n))
    } else if let Some(a) = fs.a {
        (sink.id(doc, a, field("a"))?.0, None)
    } else {
        let first = uint(doc, need(fs.f, field("a"))?, field("f"))?;
        let last = uint(doc, need(fs.l, field("l"))?, field("l"))?;
        let start = sink.arena.len();
        push_u64(sink.arena, first);
        sink.arena.push(b'-');
        push_u64(sink.arena, last);
        (sink.finish(start, field("a"))?, None)
    };
    let price = sink.decimal(doc, need(fs.p, field("p"))?, field("p"), true)?;
    let qty = sink.decimal(doc, need(fs.q, field("q"))?, field("q"), false)?;
    sink.push(ParsedTrade { symbol, trade_id, price, qty, side, ts_ns, flags, seq_first: seq, seq_last: seq });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const SPOT: &str = include_str!("../../../../tests/samples/binance_spot.jsonl");
    const SPOT_TARDIS: &str = include_str!("../../../../tests/samples/binance_spot.tardis.jsonl");
    const USDM: &str = include_str!("../../../../tests/samples/binance_usdm.jsonl");
    const USDM_TARDIS: &str = include_str!("../../../../tests/samples/binance_usdm.tardis.jsonl");
    const USDM_CONTROL: &str = include_str!("../../../../tests/samples/binance_usdm.control.jsonl");

    #[test]
    fn every_sample_line_parses() {
        let ctx = ParseContext::new();
        assert_eq!(all_parse(Venue::BinanceSpot, SPOT, false, &ctx), 6);
        assert_eq!(all_parse(Venue::BinanceSpot, SPOT_TARDIS, false, &ctx), 2);
        assert_eq!(all_parse(Venue::BinanceUsdm, USDM, false, &ctx), 9);
        assert_eq!(all_parse(Venue::BinanceUsdm, USDM_TARDIS, false, &ctx), 4);
        assert_eq!(all_parse(Venue::BinanceUsdm, USDM_CONTROL, true, &ctx), 1);
        assert_eq!(all_parse(Venue::BinanceSpot, USDM_CONTROL, true, &ctx), 1);
    }

    #[test]
    fn usdm_values_and_flags() {
        let ctx = ParseContext::new();
        let v = Venue::BinanceUsdm;
        // NA id followed by the next MARKET id: the sequence stays whole.
        let na = parse_ok(v, line(USDM, 6), &ctx);
        let mkt = parse_ok(v, line(USDM, 7), &ctx);
        assert_eq!(na.trades[0].flags, flags::NON_TRADE);
        assert_eq!(na.trades[0].seq_last.unwrap() + 1, mkt.trades[0].seq_first.unwrap());
    }

    #[test]
    fn control_frames() {
        let ctx = ParseContext::new();
        let v = Venue::BinanceUsdm;
        let c = |f: &str| parse_ok(v, f, &ctx).control.unwrap();
        assert_eq!(
            c(r#"{"result":null,"id":1}"#),
            Control::SubscribeAck { detail: r#"{"result":null,"id":1}"#.into() }
        );
        assert_eq!(c(r#"{"result":["btcusdt@trade"],"id":3}"#).kind(), "other");
        assert_eq!(c(r#"{"code":2,"msg":"Invalid request: unknown variant"}"#).kind(), "error");
        assert_eq!(c(r#"{"error":{"code":2,"msg":"Invalid request"},"id":4}"#).kind(), "error");
        assert_eq!(c(r#"{"e":"serverShutdown","E":1746671534000}"#).kind(), "shutdown_notice");
        assert_eq!(
            c(r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1746671534000}}"#).kind(),
            "shutdown_notice"
        );
        assert_eq!(c(r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}"#).kind(), "other");
        assert_eq!(c(r#"{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1}}"#).kind(), "other");
        let mut out = ParsedFrame::new();
        for bad in [
            r#"{"stream":"btcusdt@trade","data":[1]}"#,
            r#"{"stream":"btcusdt@trade","data":{"E":1}}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":-1,"p":"1","q":"1","T":1,"m":true}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":1.5,"p":"1","q":"1","T":1,"m":true}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":"0x1","p":"1","q":"1","T":1,"m":true}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":1,"p":1e-7,"q":"1","T":1,"m":true}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"-1","T":1,"m":true}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":"true"}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":92233720368548,"m":true}"#,
            r#"{"e":"trade","s":"","t":1,"p":"1","q":"1","T":1,"m":true}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","m":true}"#,
            r#"{"e":1}"#,
            r#"{"x":1}"#,
        ] {
            let r = parse_frame(v, bad.as_bytes(), &ctx, &mut out);
            assert!(r.is_err(), "{bad}");
            assert!(r.unwrap_err().0.starts_with("binance-usdm: "));
        }
        // A JSON number price is taken by its text.
        let out =
            parse_ok(v, r#"{"e":"trade","s":"X","t":18446744073709551615,"p":12.50,"q":3,"T":0,"m":false}"#, &ctx);
        assert_eq!(out.trade(0, v, 0).price, b"12.50");
        assert_eq!(out.trades[0].seq_first, Some(u64::MAX));
    }

    #[test]
    fn duplicate_keys_take_the_last() {
        let ctx = ParseContext::new();
        let out =
            parse_ok(Venue::BinanceSpot, r#"{"e":"trade","s":"A","t":1,"t":2,"p":"1","q":"1","T":1,"m":true}"#, &ctx);
        assert_eq!(out.trade(0, Venue::BinanceSpot, 0).trade_id, b"2");
    }

    #[test]
    fn buffers_are_reused() {
        let ctx = ParseContext::new();
        let mut out = ParsedFrame::new();
        let f = line(USDM, 1).as_bytes();
        parse_frame(Venue::BinanceUsdm, f, &ctx, &mut out).unwrap();
        let (cap_a, cap_t) = (out.arena.capacity(), out.trades.capacity());
        for _ in 0..1000 {
            parse_frame(Venue::BinanceUsdm, f, &ctx, &mut out).unwrap();
        }
        assert_eq!((out.arena.capacity(), out.trades.capacity()), (cap_a, cap_t));
    }

    /// Throughput smoke test: `cargo test -p pumpwatch-core --release -- --ignored --nocapture throughput`.
    #[test]
    #[ignore = "timing only; meaningful in a release build"]
    fn throughput() {
        let ctx = ParseContext::new();
        let mut out = ParsedFrame::new();
        for (v, f) in [(Venue::BinanceUsdm, line(USDM, 1)), (Venue::BinanceSpot, line(SPOT, 4))] {
            let n = 2_000_000u32;
            let t = std::time::Instant::now();
            let mut trades = 0usize;
            for _ in 0..n {
                parse_frame(v, std::hint::black_box(f.as_bytes()), &ctx, &mut out).unwrap();
                trades += out.trades.len();
            }
            let dt = t.elapsed();
            assert_eq!(trades, n as usize);
            println!(
                "{}: {:.0} ns/frame, {:.2} M frames/s",
                v.id(),
                dt.as_nanos() as f64 / f64::from(n),
                f64::from(n) / dt.as_secs_f64() / 1e6
            );
        }
    }

    #[test]
    fn mutations_never_panic() {
        let ctx = ParseContext::new();
        let mut n = 0;
        for (v, text) in [
            (Venue::BinanceSpot, SPOT),
            (Venue::BinanceSpot, SPOT_TARDIS),
            (Venue::BinanceUsdm, USDM),
            (Venue::BinanceUsdm, USDM_TARDIS),
            (Venue::BinanceUsdm, USDM_CONTROL),
        ] {
            n += mutate_all(v, text, &ctx);
        }
        assert!(n > 10_000, "{n}");
    }
}

/// The hot path's shortcut for the frame PumpWatch receives millions of times a second: a
/// combined-stream `@trade` frame laid out exactly as Binance sends it (string and integer values,
/// no escapes, no unknown keys). It reads the bytes once, with no token tape. Anything it does not
/// recognise to the last byte returns false and the general parser decides, so the two can never
/// disagree on a frame the shortcut accepts (tests hold them to that on generated frames).
pub(super) fn fast_trade(frame: &[u8], arena: &mut Vec<u8>, trades: &mut Vec<ParsedTrade>) -> bool {
    fast_trade_inner(frame, arena, trades).is_some()
}

fn fast_trade_inner(frame: &[u8], arena: &mut Vec<u8>, trades: &mut Vec<ParsedTrade>) -> Option<()> {
    use super::fast::{ms_to_ns, put};
    use super::json::Cursor;
    let mut c = Cursor::new(frame);
    // The stream name is not stored; only printable ASCII is taken (the general parser refuses
    // a frame that is not UTF-8).
    if !c.lit(b"{\"stream\":") {
        return None;
    }
    c.ascii_str()?;
    if !c.lit(b",\"data\":{") {
        return None;
    }
    let (mut s, mut t, mut p, mut q, mut tt, mut m, mut x) = (None, None, None, None, None, None, None);
    let mut seen = 0u16;
    loop {
        let key = c.key()?;
        let bit = match key {
            b"e" => {
                if c.ascii_str()? != b"trade" {
                    return None;
                }
                1
            }
            b"E" => {
                c.skip_uint()?;
                2
            }
            b"st" => {
                c.skip_uint()?;
                4
            }
            b"s" => {
                // Symbols are letters and digits; anything else is the general parser's to judge.
                s = Some(c.text().filter(|s| s.iter().all(u8::is_ascii_alphanumeric))?);
                8
            }
            b"t" => {
                t = Some(c.uint()?);
                16
            }
            b"p" => {
                p = Some(c.decimal_str(true)?);
                32
            }
            b"q" => {
                q = Some(c.decimal_str(false)?);
                64
            }
            b"T" => {
                tt = Some(c.uint()?.1);
                128
            }
            b"m" => {
                m = Some(c.boolean()?);
                256
            }
            b"M" => {
                c.boolean()?;
                512
            }
            b"X" => {
                x = Some(c.ascii_str()?);
                1024
            }
            _ => return None,
        };
        if seen & bit != 0 {
            return None; // a repeated key: the general parser's rule decides
        }
        seen |= bit;
        if !c.next_or_close(b'}')? {
            break;
        }
    }
    if !c.byte(b'}') || !c.at_end() || seen & 1 == 0 {
        return None;
    }
    let (symbol, (id_text, id), price, qty, ts_ns, taker_sold) = (s?, t?, p?, q?, ms_to_ns(tt?)?, m?);
    let flags = match x {
        None | Some(b"MARKET") => 0,
        Some(b"RPI") => flags::RPI,
        Some(b"INSURANCE_FUND") => flags::INSURANCE_FUND,
        Some(b"ADL") => flags::ADL,
        Some(b"NA") => flags::NON_TRADE,
        Some(_) => flags::UNKNOWN_TYPE,
    };
    let symbol = put(arena, symbol);
    let trade_id = put(arena, id_text);
    let price = put(arena, price);
    let qty = put(arena, qty);
    trades.push(ParsedTrade {
        symbol,
        trade_id,
        price,
        qty,
        side: if taker_sold { Side::Sell } else { Side::Buy },
        ts_ns,
        flags,
        seq_first: Some(id),
        seq_last: Some(id),
    });
    Some(())
}

#[cfg(test)]
mod fast_tests {
    use super::super::testutil::*;
    use super::*;

    /// The shortcut and the general parser give the same trades on every frame the shortcut takes,
    /// and the shortcut declines what it does not know.
    #[test]
    fn shortcut_agrees_with_the_general_parser() {
        let ctx = ParseContext::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut taken = 0;
        for i in 0..20_000u64 {
            let r = next();
            let x = ["", r#","X":"MARKET""#, r#","X":"RPI""#, r#","X":"NA""#, r#","X":"ADL""#, r#","X":"WEIRD""#]
                [(r % 6) as usize];
            let st = if r & 64 != 0 { r#","st":1"# } else { "" };
            let price = ["107407.88000000", "0.0044478", "0", "-1.5", "1e5", "83680.00", "01.5"][(r >> 8) as usize % 7];
            let qty = ["0.00024000", "10403", "-2", "0"][(r >> 12) as usize % 4];
            let sym = ["BTCUSDT", "1000PEPEUSDT", "BTC\\u0055SDT", "", "BT C"][(r >> 16) as usize % 5];
            let stream = ["btcusdt@trade", "btc\u{e9}usdt@trade"][(r >> 28) as usize % 2];
            let t = [format!("{}", 5_052_328_858 + i), "007".to_owned(), "18446744073709551616".to_owned()]
                [(r >> 20) as usize % 3]
                .clone();
            let tt = ["1751132780368", "99999999999999999", "1751132780368.5"][(r >> 24) as usize % 3];
            let m = if r & 1 == 0 { "true" } else { "false" };
            let frame = format!(
                r#"{{"stream":"{stream}","data":{{"e":"trade","E":1751132780369,"s":"{sym}","t":{t},"p":"{price}","q":"{qty}","T":{tt},"m":{m},"M":true{x}{st}}}}}"#
            );
            let (mut arena, mut trades) = (Vec::new(), Vec::new());
            let fast = fast_trade(frame.as_bytes(), &mut arena, &mut trades);
            let mut general = ParsedFrame::new();
            let slow = super::super::parse_general(Venue::BinanceUsdm, frame.as_bytes(), &ctx, &mut general);
            if fast {
                taken += 1;
                assert!(slow.is_ok(), "shortcut took a frame the parser refuses: {frame}");
                assert_eq!(trades, general.trades, "{frame}");
                assert_eq!(arena, general.arena, "{frame}");
            }
        }
        assert!(taken > 150, "the shortcut took only {taken} frames");
        // The shape Binance sends today is the one it takes.
        let (mut arena, mut trades) = (Vec::new(), Vec::new());
        assert!(fast_trade(
            line(include_str!("../../../../tests/samples/binance_usdm.jsonl"), 1).as_bytes(),
            &mut arena,
            &mut trades
        ));
        // Real frames of every shape in the samples go the same way whether or not it takes them.
        for line in lines(include_str!("../../../../tests/samples/binance_usdm.jsonl")) {
            let _ = parse_ok(Venue::BinanceUsdm, line, &ctx);
        }
    }
}
