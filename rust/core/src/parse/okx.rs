//! OKX v5 SPOT and SWAP: `trades` (aggregated per taker order and price, with `count`) and
//! `trades-all` (one fill per push) channels. `okx-spot` and `okx-swap` share this parser; the
//! venue is not checked against the instrument type (`-SWAP` suffix) because the recorder knows
//! which instruments it subscribed to on which venue.
//!
//! * each element of `data`: symbol `instId` (the push's `arg.instId` when absent), id `tradeId`
//!   (text kept; must be a canonical integer), price `px`, qty `sz` (contracts on SWAP), side
//!   `side` (taker), time `ts` (ms string). Sequence: `tradeId-count+1 ..= tradeId` (`count`
//!   defaults to 1; `trades-all` has none): an aggregated push covers `count` consecutive ids.
//! * an empty `data` list and pushes of other channels are `Control::Other`.
//! * control: the text frame `pong` -> Pong; `event` `subscribe` -> SubscribeAck, `error` ->
//!   Error, `notice` (sent 60 s before a service-upgrade disconnect) -> ShutdownNotice, any other
//!   event (`unsubscribe`, `login`, `channel-conn-count`) -> Other; echoed requests (`op`) -> Other.

use super::json::Doc;
use super::*;

pub(super) fn parse(doc: &Doc<'_>, sink: &mut Sink<'_>) -> PResult<()> {
    let root = root_object(doc)?;
    let [event, arg, data, op] = doc.pick(root, ["event", "arg", "data", "op"]);
    if let Some(ev) = event {
        let ev = str_field(doc, ev, field("event"))?;
        match &*ev {
            b"subscribe" => sink.set_control(|detail| Control::SubscribeAck { detail }),
            b"error" => sink.set_control(|detail| Control::Error { detail }),
            b"notice" => sink.set_control(|detail| Control::ShutdownNotice { detail }),
            _ => sink.other(),
        }
        return Ok(());
    }
    if let Some(data) = data {
        let arg = object(doc, need(arg, field("arg"))?, field("arg"))?;
        let [channel, arg_inst] = doc.pick(arg, ["channel", "instId"]);
        let channel = str_field(doc, need(channel, field("arg.channel"))?, field("arg.channel"))?;
        if &*channel != b"trades" && &*channel != b"trades-all" {
            sink.other();
            return Ok(());
        }
        if doc.kind(data) != json::Kind::Arr {
            return fail(format!("field \"data\" is {}, not an array of trades", doc.kind_name(data)));
        }
        for (i, el) in doc.elements(data).enumerate() {
            sink.one_of_many(|sink| trade(doc, el, i, arg_inst, sink));
        }
        sink.none_taken();
        return Ok(());
    }
    if op.is_some() {
        sink.other();
        return Ok(());
    }
    fail("not an OKX trade push or event (no \"event\", \"data\" or \"op\")".to_owned())
}

fn trade(doc: &Doc<'_>, obj: usize, i: usize, arg_inst: Option<usize>, sink: &mut Sink<'_>) -> PResult<()> {
    if doc.kind(obj) != json::Kind::Obj {
        return fail(format!("trade {i} is {}, not an object", doc.kind_name(obj)));
    }
    let [inst, id, px, sz, side_v, ts, count] = doc.pick(obj, ["instId", "tradeId", "px", "sz", "side", "ts", "count"]);
    let side = side(doc, need(side_v, tfield("side", i))?, tfield("side", i))?;
    let ts_ns = time_ns(doc, need(ts, tfield("ts", i))?, tfield("ts", i), 6)?;
    let count = match count {
        Some(c) => uint(doc, c, tfield("count", i))?,
        None => 1,
    };
    if count == 0 {
        return fail(format!("{} is 0; an aggregated trade covers at least one id", tfield("count", i)));
    }
    let inst = match inst.or(arg_inst) {
        Some(v) => v,
        None => return fail(format!("{} is missing (and so is arg.instId)", tfield("instId", i))),
    };
    let symbol = sink.text(doc, inst, tfield("instId", i))?;
    let (trade_id, last) =
        seq_id(sink.id(doc, need(id, tfield("tradeId", i))?, tfield("tradeId", i))?, tfield("tradeId", i), sink)?;
    let first = match last.checked_sub(count - 1) {
        Some(f) => f,
        None => {
            return fail(format!("{} {count} is larger than tradeId {last}", tfield("count", i)));
        }
    };
    let price = sink.decimal(doc, need(px, tfield("px", i))?, tfield("px", i), true)?;
    let qty = sink.decimal(doc, need(sz, tfield("sz", i))?, tfield("sz", i), false)?;
    sink.push(ParsedTrade {
        symbol,
        trade_id,
        price,
        qty,
        side,
        ts_ns,
        flags: 0,
        seq_first: Some(first),
        seq_last: Some(last),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const SPOT: &str = include_str!("../../../../tests/samples/okx_spot.jsonl");
    const SWAP: &str = include_str!("../../../../tests/samples/okx_swap.jsonl");
    const TARDIS: &str = include_str!("../../../../tests/samples/okx.tardis.jsonl");
    const CONTROL: &str = include_str!("../../../../tests/samples/okx.control.jsonl");

    fn venue_of(line: &str) -> Venue {
        if line.contains("-SWAP\"") {
            Venue::OkxSwap
        } else {
            Venue::OkxSpot
        }
    }

    #[test]
    fn every_sample_line_parses() {
        let ctx = ParseContext::new();
        assert_eq!(all_parse(Venue::OkxSpot, SPOT, false, &ctx), 7);
        assert_eq!(all_parse(Venue::OkxSwap, SWAP, false, &ctx), 2);
        for v in [Venue::OkxSpot, Venue::OkxSwap] {
            assert_eq!(all_parse(v, CONTROL, true, &ctx), 4);
        }
        for l in lines(TARDIS) {
            let out = parse_ok(venue_of(l), l, &ctx);
            assert!(!out.trades.is_empty());
        }
    }

    #[test]
    fn values() {
        let ctx = ParseContext::new();
        // `trades-all` channel.
        let out = parse_ok(Venue::OkxSpot, line(TARDIS, 2), &ctx);
        assert_eq!(out.trade(0, Venue::OkxSpot, 0).trade_id, b"84834539");
    }

    #[test]
    fn count_gives_the_id_range() {
        let ctx = ParseContext::new();
        // The documentation's example: tradeId 130639474 with count 3 covers 130639472..=130639474.
        let f = r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3","source":"0","seqId":1234}]}"#;
        let out = parse_ok(Venue::OkxSpot, f, &ctx);
        assert_eq!((out.trades[0].seq_first, out.trades[0].seq_last), (Some(130639472), Some(130639474)));
        let mut o = ParsedFrame::new();
        for bad in [
            r#"{"arg":{"channel":"trades","instId":"A"},"data":[{"instId":"A","tradeId":"2","px":"1","sz":"1","side":"buy","ts":"1","count":"4"}]}"#,
            r#"{"arg":{"channel":"trades","instId":"A"},"data":[{"instId":"A","tradeId":"2","px":"1","sz":"1","side":"buy","ts":"1","count":"0"}]}"#,
            r#"{"arg":{"channel":"trades","instId":"A"},"data":[{"instId":"A","tradeId":"ab","px":"1","sz":"1","side":"buy","ts":"1"}]}"#,
            r#"{"arg":{"channel":"trades","instId":"A"},"data":[{"instId":"A","tradeId":"2","px":"1","sz":"1","side":"buy","ts":"1.5e3"}]}"#,
            r#"{"arg":{"channel":"trades","instId":"A"},"data":{}}"#,
            r#"{"data":[]}"#,
            r#"{"arg":{"instId":"A"},"data":[]}"#,
        ] {
            assert!(parse_frame(Venue::OkxSpot, bad.as_bytes(), &ctx, &mut o).is_err(), "{bad}");
        }
        // instId falls back to the push's arg.
        let f = r#"{"arg":{"channel":"trades-all","instId":"ETH-USDT"},"data":[{"tradeId":"7","px":"1","sz":"1","side":"sell","ts":"1"}]}"#;
        let out = parse_ok(Venue::OkxSpot, f, &ctx);
        assert_eq!(out.trade(0, Venue::OkxSpot, 0).symbol, b"ETH-USDT");
    }

    #[test]
    fn control_frames() {
        let ctx = ParseContext::new();
        let c = |f: &str| parse_ok(Venue::OkxSwap, f, &ctx).control.unwrap();
        assert_eq!(c("pong"), Control::Pong);
        assert_eq!(c(" pong\n"), Control::Pong);
        assert_eq!(c(line(CONTROL, 1)).kind(), "other");
        assert_eq!(
            c(line(CONTROL, 2)),
            Control::SubscribeAck {
                detail: r#"{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USD-220527"}}"#.into()
            }
        );
        assert_eq!(
            c(r#"{"id":"1512","event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}"#).kind(),
            "error"
        );
        assert_eq!(
            c(r#"{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade. Please reconnect.","connId":"a4d3ae55"}"#).kind(),
            "shutdown_notice"
        );
        assert_eq!(c(r#"{"event":"unsubscribe","arg":{"channel":"trades","instId":"BTC-USDT"}}"#).kind(), "other");
        assert_eq!(c(r#"{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"last":"1"}]}"#).kind(), "other");
        assert_eq!(c(r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[]}"#).kind(), "other");
        let mut o = ParsedFrame::new();
        assert!(parse_frame(Venue::OkxSpot, b"ping", &ctx, &mut o).is_err());
        assert!(parse_frame(Venue::BinanceSpot, b"pong", &ctx, &mut o).is_err());
    }

    #[test]
    fn mutations_never_panic() {
        let ctx = ParseContext::new();
        let mut n = 0;
        for (v, text) in
            [(Venue::OkxSpot, SPOT), (Venue::OkxSwap, SWAP), (Venue::OkxSpot, TARDIS), (Venue::OkxSwap, CONTROL)]
        {
            n += mutate_all(v, text, &ctx);
        }
        assert!(n > 10_000, "{n}");
    }
}

/// The hot path's shortcut for a trade push as OKX sends it: `{"arg":{...},"data":[{...},...]}`
/// on the `trades` or `trades-all` channel, plain strings, members in any order. It reads the bytes
/// once, with no token tape; anything else (an event, another channel, escapes, numbers where
/// OKX sends strings, a repeated key, an empty `data`) returns `None` and the general parser
/// decides, so the two never disagree on a frame the shortcut takes (tests hold them to that).
pub(super) fn fast_trades(frame: &[u8], arena: &mut Vec<u8>, trades: &mut Vec<ParsedTrade>) -> Option<()> {
    use super::fast::{ms_to_ns_text, once, put};
    use super::json::Cursor;
    let mut c = Cursor::new(frame);
    // `arg` first (its instId names the trades of elements without one), then `data`.
    if !c.lit(b"{\"arg\":") {
        return None;
    }
    let (mut channel, mut arg_inst) = (None, None);
    c.object(|c, key| match key {
        b"channel" => once(&mut channel, c.ascii_str()),
        b"instId" => once(&mut arg_inst, c.text()),
        _ => c.skip_scalar(),
    })?;
    if !matches!(channel, Some(b"trades" | b"trades-all")) || !c.lit(b",\"data\":") {
        return None;
    }
    c.array(|c| {
        let (mut inst, mut id, mut px, mut sz, mut side, mut ts, mut count) =
            (None, None, None, None, None, None, None);
        c.object(|c, key| match key {
            b"instId" => once(&mut inst, c.text()),
            b"tradeId" => once(&mut id, c.text()),
            b"px" => once(&mut px, c.decimal_str(true)),
            b"sz" => once(&mut sz, c.decimal_str(false)),
            b"side" => once(&mut side, c.side()),
            b"ts" => once(&mut ts, c.ascii_str()),
            b"count" => once(&mut count, c.ascii_str()),
            _ => c.skip_scalar(),
        })?;
        let last = canonical_u64(id?)?;
        let count = match count {
            Some(t) => parse_u64(t)?,
            None => 1,
        };
        let first = last.checked_sub(count.checked_sub(1)?)?;
        let ts_ns = ms_to_ns_text(ts?)?;
        let (symbol, side) = (inst.or(arg_inst)?, side?);
        let (price, qty) = (px?, sz?);
        let symbol = put(arena, symbol);
        let trade_id = put(arena, id?);
        let price = put(arena, price);
        let qty = put(arena, qty);
        trades.push(ParsedTrade {
            symbol,
            trade_id,
            price,
            qty,
            side,
            ts_ns,
            flags: 0,
            seq_first: Some(first),
            seq_last: Some(last),
        });
        Some(())
    })?;
    (c.byte(b'}') && c.at_end()).then_some(())
}

#[cfg(test)]
mod fast_tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn shortcut_agrees_with_the_general_parser() {
        for v in [Venue::OkxSpot, Venue::OkxSwap] {
            let mut base: Vec<String> =
                venue_frames(v, 2, 661_349_180).into_iter().map(|f| String::from_utf8(f).unwrap()).collect();
            base.push(r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"661349185","px":"65000","sz":"0.003","side":"sell","ts":"1790000000000","count":"3"}]}"#.into());
            base.push(r#"{"arg":{"channel":"trades-all","instId":"ETH-USDT"},"data":[{"tradeId":"5","px":"-1.5","sz":"2","side":"BUY","ts":"1790000000000.25"},{"instId":"X-Y","tradeId":"6","px":"1","sz":"0","side":"sell","ts":"0"}]}"#.into());
            let (tried, taken) = shortcut_agrees(v, &base, include_str!("../../../../tests/samples/okx_spot.jsonl"));
            assert!(taken * 20 > tried, "{}: the shortcut took only {taken} of {tried}", v.id());
        }
    }
}
