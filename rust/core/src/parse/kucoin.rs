//! KuCoin spot (`/market/match:<SYMBOL>`, subject `trade.l3match`) and futures
//! (`/contractMarket/execution:<SYMBOL>`, subject `match`). One trade per message.
//!
//! * `data`: symbol `symbol`, id `sequence` when present, else `tradeId` (REST backfill rows carry
//!   only `sequence`, and older spot symbols' `tradeId` is a 24-hex ObjectId: keying trades on
//!   `sequence` lets a backfill dedupe against the stream; on newer symbols and futures the two are
//!   equal), price `price`
//!   (string, or a JSON number in some futures frames), qty `size` (string on spot, integer
//!   contracts on futures), side `side` (taker), time in ns: `ts` (futures, integer > 2^53, taken
//!   from its text) or else `time` (spot, string). No id sequence (`sequence` skips values).
//! * control: `type` `welcome` -> Welcome, `ack` -> SubscribeAck, `pong` -> Pong, `error` ->
//!   Error; `message` pushes of other topics, any other type, and echoed requests -> Other.

use super::json::Doc;
use super::*;

pub(super) fn parse(doc: &Doc<'_>, sink: &mut Sink<'_>) -> PResult<()> {
    let root = root_object(doc)?;
    let [ty, topic, data] = doc.pick(root, ["type", "topic", "data"]);
    let ty = str_field(doc, need(ty, field("type"))?, field("type"))?;
    match &*ty {
        b"message" => {
            let topic = str_field(doc, need(topic, field("topic"))?, field("topic"))?;
            if topic.starts_with(b"/market/match:") || topic.starts_with(b"/contractMarket/execution:") {
                let data = object(doc, need(data, field("data"))?, field("data"))?;
                trade(doc, data, sink)
            } else {
                sink.other();
                Ok(())
            }
        }
        b"welcome" => {
            sink.welcome();
            Ok(())
        }
        b"ack" => {
            sink.set_control(|detail| Control::SubscribeAck { detail });
            Ok(())
        }
        b"pong" => {
            sink.pong();
            Ok(())
        }
        b"error" => {
            sink.set_control(|detail| Control::Error { detail });
            Ok(())
        }
        _ => {
            sink.other();
            Ok(())
        }
    }
}

fn trade(doc: &Doc<'_>, obj: usize, sink: &mut Sink<'_>) -> PResult<()> {
    let [sym, id, seq, price, size, side_v, ts, time] =
        doc.pick(obj, ["symbol", "tradeId", "sequence", "price", "size", "side", "ts", "time"]);
    let side = side(doc, need(side_v, field("side"))?, field("side"))?;
    let ts_ns = match (ts, time) {
        (Some(v), _) => time_ns(doc, v, field("ts"), 0)?,
        (None, Some(v)) => time_ns(doc, v, field("time"), 0)?,
        (None, None) => return fail("field \"ts\" (futures) or \"time\" (spot) is missing".to_owned()),
    };
    let symbol = sink.text(doc, need(sym, field("symbol"))?, field("symbol"))?;
    let (trade_id, _) = match seq {
        Some(v) => sink.id(doc, v, field("sequence"))?,
        None => sink.id(doc, need(id, field("tradeId"))?, field("tradeId"))?,
    };
    let price = sink.decimal(doc, need(price, field("price"))?, field("price"), true)?;
    let qty = sink.decimal(doc, need(size, field("size"))?, field("size"), false)?;
    sink.push(ParsedTrade { symbol, trade_id, price, qty, side, ts_ns, flags: 0, seq_first: None, seq_last: None });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const SPOT: &str = include_str!("../../../../tests/samples/kucoin_spot.jsonl");
    const SPOT_TARDIS: &str = include_str!("../../../../tests/samples/kucoin_spot.tardis.jsonl");
    const SPOT_CONTROL: &str = include_str!("../../../../tests/samples/kucoin_spot.control.jsonl");
    const FUT: &str = include_str!("../../../../tests/samples/kucoin_futures.jsonl");
    const FUT_TARDIS: &str = include_str!("../../../../tests/samples/kucoin_futures.tardis.jsonl");

    #[test]
    fn every_sample_line_parses() {
        let ctx = ParseContext::new();
        assert_eq!(all_parse(Venue::KucoinSpot, SPOT, false, &ctx), 5);
        assert_eq!(all_parse(Venue::KucoinSpot, SPOT_TARDIS, false, &ctx), 3);
        assert_eq!(all_parse(Venue::KucoinSpot, SPOT_CONTROL, true, &ctx), 3);
        assert_eq!(all_parse(Venue::KucoinFutures, SPOT_CONTROL, true, &ctx), 3);
        assert_eq!(all_parse(Venue::KucoinFutures, FUT, false, &ctx), 2);
        assert_eq!(all_parse(Venue::KucoinFutures, FUT_TARDIS, false, &ctx), 2);
    }

    #[test]
    fn futures_values() {
        let ctx = ParseContext::new();
        let v = Venue::KucoinFutures;
        // An odd ns value that f64 cannot hold exactly survives.
        let f = r#"{"type":"message","topic":"/contractMarket/execution:X","subject":"match","data":{"symbol":"X","side":"sell","size":1,"price":"1","tradeId":"1","ts":1731898619520000001}}"#;
        assert_eq!(parse_ok(v, f, &ctx).trades[0].ts_ns, 1_731_898_619_520_000_001);
    }

    #[test]
    fn control_frames() {
        let ctx = ParseContext::new();
        let c = |f: &str| parse_ok(Venue::KucoinSpot, f, &ctx).control.unwrap();
        assert_eq!(c(line(SPOT_CONTROL, 1)).kind(), "other");
        assert_eq!(c(line(SPOT_CONTROL, 2)), Control::Welcome);
        assert_eq!(c(line(SPOT_CONTROL, 3)), Control::SubscribeAck { detail: r#"{"id":"1","type":"ack"}"#.into() });
        assert_eq!(c(r#"{"id":"1545910590801","type":"pong"}"#), Control::Pong);
        assert_eq!(
            c(r#"{"id":"1","type":"error","code":404,"data":"topic /market/matc is not found"}"#).kind(),
            "error"
        );
        assert_eq!(
            c(r#"{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker","data":{}}"#).kind(),
            "other"
        );
        let mut o = ParsedFrame::new();
        for bad in [
            r#"{"id":"1"}"#,
            r#"{"type":5}"#,
            r#"{"type":"message","topic":"/market/match:A","data":[]}"#,
            r#"{"type":"message","topic":"/market/match:A","data":{"symbol":"A","side":"buy","size":"1","price":"1","tradeId":"x"}}"#,
            r#"{"type":"message","topic":"/market/match:A","data":{"symbol":"A","side":"buy","size":"1","price":"1","tradeId":"x","time":"-1"}}"#,
            r#"{"type":"message","topic":"/market/match:A","data":{"symbol":"A","side":"buy","size":"1","price":"1","tradeId":"","time":"1"}}"#,
        ] {
            assert!(parse_frame(Venue::KucoinSpot, bad.as_bytes(), &ctx, &mut o).is_err(), "{bad}");
        }
    }

    #[test]
    fn mutations_never_panic() {
        let ctx = ParseContext::new();
        let mut n = 0;
        for (v, text) in [
            (Venue::KucoinSpot, SPOT),
            (Venue::KucoinSpot, SPOT_TARDIS),
            (Venue::KucoinSpot, SPOT_CONTROL),
            (Venue::KucoinFutures, FUT),
            (Venue::KucoinFutures, FUT_TARDIS),
        ] {
            n += mutate_all(v, text, &ctx);
        }
        assert!(n > 10_000, "{n}");
    }
}

/// The hot path's shortcut for a match message as KuCoin sends it (spot `trade.l3match`, futures
/// `match`): `"type":"message"`, a trade topic and a flat `data` object, plain strings and
/// integers, members in any order. One pass over the bytes, no token tape; anything else returns
/// `None` and the general parser decides (tests hold the two to the same output on every frame
/// the shortcut takes).
pub(super) fn fast_trade(frame: &[u8], arena: &mut Vec<u8>, trades: &mut Vec<ParsedTrade>) -> Option<()> {
    use super::fast::{once, put};
    use super::json::Cursor;
    let mut c = Cursor::new(frame);
    let (mut ty, mut topic, mut data) = (None, None, None);
    c.object(|c, key| match key {
        b"type" => once(&mut ty, c.ascii_str()),
        b"topic" => once(&mut topic, c.ascii_str()),
        b"data" => {
            let (mut sym, mut id, mut seq, mut price, mut size, mut side, mut ts, mut time) =
                (None, None, None, None, None, None, None, None);
            c.object(|c, key| match key {
                b"symbol" => once(&mut sym, c.text()),
                b"tradeId" => once(&mut id, c.id()),
                b"sequence" => once(&mut seq, c.id()),
                b"price" => once(&mut price, c.decimal(true)),
                b"size" => once(&mut size, c.decimal(false)),
                b"side" => once(&mut side, c.side()),
                b"ts" => once(&mut ts, c.uint_or_str_text()),
                b"time" => once(&mut time, c.uint_or_str_text()),
                _ => c.skip_scalar(),
            })?;
            // `sequence` names the trade when present, `ts` gives its time when present.
            once(&mut data, Some((sym?, seq.or(id)?, price?, size?, side?, ns_from_text(ts.or(time)?, 0)?)))
        }
        _ => c.skip_scalar(),
    })?;
    let topic = topic?;
    if ty? != b"message"
        || !(topic.starts_with(b"/market/match:") || topic.starts_with(b"/contractMarket/execution:"))
        || !c.at_end()
    {
        return None;
    }
    let (symbol, id, price, qty, side, ts_ns) = data?;
    let symbol = put(arena, symbol);
    let trade_id = put(arena, id);
    let price = put(arena, price);
    let qty = put(arena, qty);
    trades.push(ParsedTrade { symbol, trade_id, price, qty, side, ts_ns, flags: 0, seq_first: None, seq_last: None });
    Some(())
}

#[cfg(test)]
mod fast_tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn shortcut_agrees_with_the_general_parser() {
        for (v, samples) in [
            (Venue::KucoinSpot, include_str!("../../../../tests/samples/kucoin_spot.jsonl")),
            (Venue::KucoinFutures, include_str!("../../../../tests/samples/kucoin_futures.jsonl")),
        ] {
            let mut base: Vec<String> =
                venue_frames(v, 2, 6_575_351_717_429_231).into_iter().map(|f| String::from_utf8(f).unwrap()).collect();
            base.push(r#"{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":{"symbol":"BTC-USDT","tradeId":"6085c09769bc506996295e36","price":"1.5","size":"2","side":"SELL","time":"1790000000000000000"}}"#.into());
            base.push(r#"{"data":{"ts":1790000000000000001,"time":"5","sequence":7,"symbol":"XBTUSDTM","side":"buy","size":18,"price":65005.3},"topic":"/contractMarket/execution:XBTUSDTM","type":"message","sn":1}"#.into());
            let (tried, taken) = shortcut_agrees(v, &base, samples);
            assert!(taken * 20 > tried, "{}: the shortcut took only {taken} of {tried}", v.id());
        }
    }
}
