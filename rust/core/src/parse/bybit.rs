//! Bybit v5 spot and linear: `publicTrade.<SYMBOL>` pushes, several fills per frame.
//!
//! * each element of `data`: symbol `s`, id `i` (numeric string on spot, UUID on linear; text
//!   kept), price `p`, qty `v`, time `T` (ms), side `S` (taker side), `BT` true -> BLOCK_TRADE,
//!   `RPI` true -> RPI. No id sequence (`seq_first`/`seq_last` are `None`): spot ids have holes,
//!   linear ids are UUIDs, and `seq` is shared by the fills of one match.
//! * an empty `data` list and pushes of other topics are `Control::Other`.
//! * control: `success:false` -> Error; `op` `ping`/`pong` or `ret_msg` `pong` -> Pong;
//!   `op:"subscribe"` with `success:true` -> SubscribeAck; other ops and echoed requests -> Other.

use super::json::Doc;
use super::*;

pub(super) fn parse(doc: &Doc<'_>, sink: &mut Sink<'_>) -> PResult<()> {
    let root = root_object(doc)?;
    let [topic, data, success, op, ret_msg] = doc.pick(root, ["topic", "data", "success", "op", "ret_msg"]);
    if let Some(topic) = topic {
        let t = str_field(doc, topic, field("topic"))?;
        if !t.starts_with(b"publicTrade.") {
            sink.other();
            return Ok(());
        }
        let data = need(data, field("data"))?;
        if doc.kind(data) != json::Kind::Arr {
            return fail(format!("field \"data\" is {}, not an array of trades", doc.kind_name(data)));
        }
        for (i, el) in doc.elements(data).enumerate() {
            sink.one_of_many(|sink| trade(doc, el, i, sink));
        }
        sink.none_taken();
        return Ok(());
    }
    if success.is_some() || op.is_some() {
        let ok = match success {
            None => None,
            Some(s) => match doc.kind(s) {
                json::Kind::True => Some(true),
                json::Kind::False => Some(false),
                _ => return fail(format!("field \"success\" is {}, not a boolean", doc.kind_name(s))),
            },
        };
        let op = match op {
            Some(o) => Some(str_field(doc, o, field("op"))?),
            None => None,
        };
        let pong_msg = ret_msg.and_then(|r| doc.str_cow(r)).is_some_and(|m| &*m == b"pong");
        if ok == Some(false) {
            sink.set_control(|detail| Control::Error { detail });
        } else if pong_msg || op.as_deref().is_some_and(|o| o == b"ping" || o == b"pong") {
            sink.pong();
        } else if ok == Some(true) && op.as_deref() == Some(b"subscribe") {
            sink.set_control(|detail| Control::SubscribeAck { detail });
        } else {
            sink.other();
        }
        return Ok(());
    }
    fail("not a Bybit trade push or op response (no \"topic\", \"op\" or \"success\")".to_owned())
}

fn trade(doc: &Doc<'_>, obj: usize, i: usize, sink: &mut Sink<'_>) -> PResult<()> {
    if doc.kind(obj) != json::Kind::Obj {
        return fail(format!("trade {i} is {}, not an object", doc.kind_name(obj)));
    }
    let [tt, s, side_v, v, p, id, bt, rpi] = doc.pick(obj, ["T", "s", "S", "v", "p", "i", "BT", "RPI"]);
    let mut flags = 0u16;
    if flag(doc, bt, tfield("BT", i))? {
        flags |= flags::BLOCK_TRADE;
    }
    if flag(doc, rpi, tfield("RPI", i))? {
        flags |= flags::RPI;
    }
    let side = side(doc, need(side_v, tfield("S", i))?, tfield("S", i))?;
    let ts_ns = time_ns(doc, need(tt, tfield("T", i))?, tfield("T", i), 6)?;
    let symbol = sink.text(doc, need(s, tfield("s", i))?, tfield("s", i))?;
    let (trade_id, _) = sink.id(doc, need(id, tfield("i", i))?, tfield("i", i))?;
    let price = sink.decimal(doc, need(p, tfield("p", i))?, tfield("p", i), true)?;
    let qty = sink.decimal(doc, need(v, tfield("v", i))?, tfield("v", i), false)?;
    sink.push(ParsedTrade { symbol, trade_id, price, qty, side, ts_ns, flags, seq_first: None, seq_last: None });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const SPOT: &str = include_str!("../../../../tests/samples/bybit_spot.jsonl");
    const SPOT_TARDIS: &str = include_str!("../../../../tests/samples/bybit_spot.tardis.jsonl");
    const SPOT_CONTROL: &str = include_str!("../../../../tests/samples/bybit_spot.control.jsonl");
    const LINEAR: &str = include_str!("../../../../tests/samples/bybit_linear.jsonl");
    const LINEAR_TARDIS: &str = include_str!("../../../../tests/samples/bybit_linear.tardis.jsonl");
    const LINEAR_CONTROL: &str = include_str!("../../../../tests/samples/bybit_linear.control.jsonl");

    #[test]
    fn every_sample_line_parses() {
        let ctx = ParseContext::new();
        assert_eq!(all_parse(Venue::BybitSpot, SPOT, false, &ctx), 5);
        assert_eq!(all_parse(Venue::BybitSpot, SPOT_TARDIS, false, &ctx), 2);
        assert_eq!(all_parse(Venue::BybitSpot, SPOT_CONTROL, true, &ctx), 2);
        assert_eq!(all_parse(Venue::BybitLinear, LINEAR, false, &ctx), 10);
        assert_eq!(all_parse(Venue::BybitLinear, LINEAR_TARDIS, false, &ctx), 2);
        assert_eq!(all_parse(Venue::BybitLinear, LINEAR_CONTROL, true, &ctx), 2);
    }

    #[test]
    fn flags_and_control() {
        let ctx = ParseContext::new();
        let v = Venue::BybitLinear;
        let f = r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT","S":"Sell","v":"5","p":"1.0","i":"x","BT":true,"RPI":true}]}"#;
        let out = parse_ok(v, f, &ctx);
        assert_eq!(out.trades[0].flags, flags::BLOCK_TRADE | flags::RPI);
        let c = |f: &str| parse_ok(v, f, &ctx).control.unwrap();
        assert_eq!(c(line(LINEAR_CONTROL, 2)).kind(), "subscribe_ack");
        assert_eq!(c(line(SPOT_CONTROL, 2)).kind(), "subscribe_ack");
        assert_eq!(c(line(SPOT_CONTROL, 1)).kind(), "other");
        assert_eq!(
            c(r#"{"success":true,"ret_msg":"pong","conn_id":"0970e817-426e-429a-a679-ff7f55e0b16a","op":"ping"}"#),
            Control::Pong
        );
        assert_eq!(c(r#"{"req_id":"1","op":"pong","args":["1675418560633"],"conn_id":"x"}"#), Control::Pong);
        assert_eq!(
            c(r#"{"success":false,"ret_msg":"error:handler not found","conn_id":"x","req_id":"","op":"subscribe"}"#)
                .kind(),
            "error"
        );
        assert_eq!(c(r#"{"success":true,"ret_msg":"","conn_id":"x","op":"unsubscribe"}"#).kind(), "other");
        assert_eq!(c(r#"{"topic":"orderbook.1.BTCUSDT","type":"snapshot","data":{}}"#).kind(), "other");
        assert_eq!(c(r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[]}"#).kind(), "other");
        let mut out = ParsedFrame::new();
        for bad in [
            r#"{"topic":"publicTrade.BTCUSDT","data":{}}"#,
            r#"{"topic":"publicTrade.BTCUSDT"}"#,
            r#"{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"s":"A","S":"Up","v":"5","p":"1","i":"x"}]}"#,
            r#"{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"s":"A","S":"Buy","v":"5","p":"1","i":"x","BT":"no"}]}"#,
            r#"{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"s":"A","S":"Buy","v":"5","p":"1"}]}"#,
            r#"{"success":"yes","op":"subscribe"}"#,
            r#"{"ret_msg":"pong"}"#,
        ] {
            assert!(parse_frame(v, bad.as_bytes(), &ctx, &mut out).is_err(), "{bad}");
        }
        // A bad element beside a good trade costs only itself (issue 11).
        let one_bad = r#"{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"s":"A","S":"Buy","v":"5","p":"1","i":"x"},3]}"#;
        parse_frame(v, one_bad.as_bytes(), &ctx, &mut out).unwrap();
        assert_eq!(
            (out.trades.len(), out.rejected.as_slice()),
            (1, &["trade 1 is a number, not an object".to_owned()][..])
        );
    }

    #[test]
    fn mutations_never_panic() {
        let ctx = ParseContext::new();
        let mut n = 0;
        for (v, text) in [
            (Venue::BybitSpot, SPOT),
            (Venue::BybitSpot, SPOT_TARDIS),
            (Venue::BybitSpot, SPOT_CONTROL),
            (Venue::BybitLinear, LINEAR_TARDIS),
            (Venue::BybitLinear, LINEAR_CONTROL),
        ] {
            n += mutate_all(v, text, &ctx);
        }
        // The long linear file: the first three lines (one and several fills).
        let head: String = lines(LINEAR).take(3).collect::<Vec<_>>().join("\n");
        n += mutate_all(Venue::BybitLinear, &head, &ctx);
        assert!(n > 10_000, "{n}");
    }
}

/// The hot path's shortcut for a `publicTrade` push as Bybit sends it: `topic`, `ts`, `type` and a
/// non-empty `data` array of trade objects, plain strings, members in any order. One pass over
/// the bytes, no token tape; anything else returns `None` and the general parser decides (tests
/// hold the two to the same output on every frame the shortcut takes).
pub(super) fn fast_trades(frame: &[u8], arena: &mut Vec<u8>, trades: &mut Vec<ParsedTrade>) -> Option<()> {
    use super::fast::{once, put};
    use super::json::Cursor;
    let mut c = Cursor::new(frame);
    let (mut topic, mut data) = (None, None);
    c.object(|c, key| match key {
        b"topic" => once(&mut topic, c.ascii_str()),
        b"ts" | b"type" => c.skip_scalar(),
        b"data" => {
            let r = c.array(|c| {
                let (mut tt, mut s, mut side, mut v, mut p, mut id, mut bt, mut rpi) =
                    (None, None, None, None, None, None, None, None);
                c.object(|c, key| match key {
                    b"T" => once(&mut tt, c.uint_or_str_text()),
                    b"s" => once(&mut s, c.text()),
                    b"S" => once(&mut side, c.side()),
                    b"v" => once(&mut v, c.decimal(false)),
                    b"p" => once(&mut p, c.decimal(true)),
                    b"i" => once(&mut id, c.id()),
                    b"BT" => once(&mut bt, c.flag()),
                    b"RPI" => once(&mut rpi, c.flag()),
                    _ => c.skip_scalar(),
                })?;
                let mut flags = 0u16;
                if bt == Some(true) {
                    flags |= flags::BLOCK_TRADE;
                }
                if rpi == Some(true) {
                    flags |= flags::RPI;
                }
                let ts_ns = ns_from_text(tt?, 6)?;
                let (symbol, id, price, qty, side) = (s?, id?, p?, v?, side?);
                let symbol = put(arena, symbol);
                let trade_id = put(arena, id);
                let price = put(arena, price);
                let qty = put(arena, qty);
                trades.push(ParsedTrade {
                    symbol,
                    trade_id,
                    price,
                    qty,
                    side,
                    ts_ns,
                    flags,
                    seq_first: None,
                    seq_last: None,
                });
                Some(())
            });
            once(&mut data, r)
        }
        _ => None,
    })?;
    (topic?.starts_with(b"publicTrade.") && data.is_some() && c.at_end()).then_some(())
}

#[cfg(test)]
mod fast_tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn shortcut_agrees_with_the_general_parser() {
        for (v, samples) in [
            (Venue::BybitSpot, include_str!("../../../../tests/samples/bybit_spot.jsonl")),
            (Venue::BybitLinear, include_str!("../../../../tests/samples/bybit_linear.jsonl")),
        ] {
            let mut base: Vec<String> =
                venue_frames(v, 2, 1).into_iter().map(|f| String::from_utf8(f).unwrap()).collect();
            base.push(r#"{"topic":"publicTrade.ETHUSDT","ts":1,"type":"snapshot","data":[{"T":1790000000000,"s":"ETHUSDT","S":"Sell","v":"0.5","p":"1923.28","i":"2280000001739247417","BT":true,"RPI":null},{"T":"1790000000001","s":"ETHUSDT","S":"buy","v":2,"p":-1.5,"i":17,"BT":false,"RPI":true}]}"#.into());
            let (tried, taken) = shortcut_agrees(v, &base, samples);
            assert!(taken * 20 > tried, "{}: the shortcut took only {taken} of {tried}", v.id());
        }
    }
}
