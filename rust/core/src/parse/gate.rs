//! Gate v4 spot (`spot.trades`) and USDT futures (`futures.trades`) `update` pushes.
//!
//! Spot (`result` is one object; an array of them is accepted too):
//! * symbol `currency_pair`, price `price`, qty `amount`, side `side` (taker).
//! * id: `id_market` when present (per-market consecutive, equals REST `sequence_id`), else `id`
//!   (pre-2025 frames: an all-market id, so no sequence).
//! * sequence: `range` `"start-end"` when present, else `id_market..=id_market`, else none.
//! * time: `create_time_ms` (ms, string with a fraction such as `"1606292218213.4578"`, converted
//!   exactly), else `create_time` (s).
//!
//! Futures (`result` is an array):
//! * symbol `contract`, id `id` (sequence `id..=id`), price `price`; `size` is signed contracts
//!   (integer, or a decimal string with `X-Gate-Size-Decimal`): positive = taker buy, negative =
//!   taker sell, qty = its absolute value's text; a zero size is an error (no side).
//! * `is_internal: true` (insurance fund / ADL takeover) -> INTERNAL.
//! * time: `create_time_ms` (ms), else `create_time` (s).
//!
//! Futures `futures.system` with `result.type == "upgrade"` (a service upgrade will close the
//! connection, VENUES §12) -> ShutdownNotice; other system messages -> Other.
//!
//! Both: an empty `result` and pushes of other channels are `Control::Other`. Control: a
//! `*.pong` channel -> Pong; a non-null `error` -> Error; `event:"subscribe"` with
//! `result.status == "success"` -> SubscribeAck (another status -> Error; no `result`: the echoed
//! request -> Other); any other event (`unsubscribe`) -> Other.

use super::json::Doc;
use super::*;

pub(super) fn parse(doc: &Doc<'_>, sink: &mut Sink<'_>, futures: bool) -> PResult<()> {
    let root = root_object(doc)?;
    let [channel, event, result, error] = doc.pick(root, ["channel", "event", "result", "error"]);
    let channel = str_field(doc, need(channel, field("channel"))?, field("channel"))?;
    if channel.ends_with(b".pong") {
        sink.pong();
        return Ok(());
    }
    if error.is_some_and(|e| !doc.is_null(e)) {
        sink.set_control(|detail| Control::Error { detail });
        return Ok(());
    }
    let event = str_field(doc, need(event, field("event"))?, field("event"))?;
    match &*event {
        b"subscribe" => {
            match result.filter(|r| !doc.is_null(*r)) {
                None => sink.other(),
                Some(r) => {
                    let [status] = doc.pick(r, ["status"]);
                    if status.and_then(|s| doc.str_cow(s)).is_some_and(|s| &*s == b"success") {
                        sink.set_control(|detail| Control::SubscribeAck { detail });
                    } else {
                        sink.set_control(|detail| Control::Error { detail });
                    }
                }
            }
            Ok(())
        }
        b"update" | b"all" => {
            let want: &[u8] = if futures { b"futures.trades" } else { b"spot.trades" };
            if futures && &*channel == b"futures.system" {
                let kind = result
                    .filter(|r| doc.kind(*r) == json::Kind::Obj)
                    .and_then(|r| doc.pick(r, ["type"])[0])
                    .and_then(|v| doc.str_cow(v));
                if kind.is_some_and(|k| &*k == b"upgrade") {
                    sink.set_control(|detail| Control::ShutdownNotice { detail });
                } else {
                    sink.other();
                }
                return Ok(());
            }
            if &*channel != want {
                sink.other();
                return Ok(());
            }
            let result = need(result, field("result"))?;
            match doc.kind(result) {
                json::Kind::Obj => one(doc, result, 0, sink, futures)?,
                json::Kind::Arr => {
                    for (i, el) in doc.elements(result).enumerate() {
                        sink.one_of_many(|sink| {
                            if doc.kind(el) != json::Kind::Obj {
                                return fail(format!("trade {i} is {}, not an object", doc.kind_name(el)));
                            }
                            one(doc, el, i, sink, futures)
                        });
                    }
                }
                _ => {
                    return fail(format!("field \"result\" is {}, not a trade object or array", doc.kind_name(result)))
                }
            }
            sink.none_taken();
            Ok(())
        }
        _ => {
            sink.other();
            Ok(())
        }
    }
}

fn one(doc: &Doc<'_>, obj: usize, i: usize, sink: &mut Sink<'_>, futures: bool) -> PResult<()> {
    if futures {
        futures_trade(doc, obj, i, sink)
    } else {
        spot_trade(doc, obj, i, sink)
    }
}

fn trade_time(doc: &Doc<'_>, ms: Option<usize>, s: Option<usize>, i: usize) -> PResult<i64> {
    match (ms, s) {
        (Some(v), _) if !doc.is_null(v) => time_ns(doc, v, tfield("create_time_ms", i), 6),
        (_, Some(v)) => time_ns(doc, v, tfield("create_time", i), 9),
        _ => fail(format!("{} and \"create_time\" are missing", tfield("create_time_ms", i))),
    }
}

/// Parses `"start-end"` into two u64 with start <= end.
fn parse_range(text: &[u8]) -> Option<(u64, u64)> {
    let dash = text.iter().position(|&b| b == b'-')?;
    let a = parse_u64(text.get(..dash)?)?;
    let b = parse_u64(text.get(dash + 1..)?)?;
    (a <= b).then_some((a, b))
}

fn spot_trade(doc: &Doc<'_>, obj: usize, i: usize, sink: &mut Sink<'_>) -> PResult<()> {
    let [id, id_market, ct, ct_ms, side_v, pair, amount, price, range] = doc.pick(
        obj,
        ["id", "id_market", "create_time", "create_time_ms", "side", "currency_pair", "amount", "price", "range"],
    );
    let side = side(doc, need(side_v, tfield("side", i))?, tfield("side", i))?;
    let ts_ns = trade_time(doc, ct_ms, ct, i)?;
    let range = match range.filter(|r| !doc.is_null(*r)) {
        None => None,
        Some(r) => {
            let text = str_field(doc, r, tfield("range", i))?;
            match parse_range(&text) {
                Some(ab) => Some(ab),
                None => {
                    return fail(format!(
                        "{} {} is not \"start-end\" with start <= end",
                        tfield("range", i),
                        show(&text)
                    ));
                }
            }
        }
    };
    let symbol = sink.text(doc, need(pair, tfield("currency_pair", i))?, tfield("currency_pair", i))?;
    let (trade_id, seq) = match id_market.filter(|v| !doc.is_null(*v)) {
        Some(m) => {
            let f = tfield("id_market", i);
            let (r, n) = seq_id(sink.id(doc, m, f)?, f, sink)?;
            (r, Some(range.unwrap_or((n, n))))
        }
        None => {
            let (r, _) = sink.id(doc, need(id, tfield("id", i))?, tfield("id", i))?;
            (r, range)
        }
    };
    let price = sink.decimal(doc, need(price, tfield("price", i))?, tfield("price", i), true)?;
    let qty = sink.decimal(doc, need(amount, tfield("amount", i))?, tfield("amount", i), false)?;
    sink.push(ParsedTrade {
        symbol,
        trade_id,
        price,
        qty,
        side,
        ts_ns,
        flags: 0,
        seq_first: seq.map(|s| s.0),
        seq_last: seq.map(|s| s.1),
    });
    Ok(())
}

fn futures_trade(doc: &Doc<'_>, obj: usize, i: usize, sink: &mut Sink<'_>) -> PResult<()> {
    let [id, size, ct, ct_ms, price, contract, internal] =
        doc.pick(obj, ["id", "size", "create_time", "create_time_ms", "price", "contract", "is_internal"]);
    let flags = if flag(doc, internal, tfield("is_internal", i))? { flags::INTERNAL } else { 0 };
    let ts_ns = trade_time(doc, ct_ms, ct, i)?;
    let symbol = sink.text(doc, need(contract, tfield("contract", i))?, tfield("contract", i))?;
    let f = tfield("id", i);
    let (trade_id, n) = seq_id(sink.id(doc, need(id, f)?, f)?, f, sink)?;
    let price = sink.decimal(doc, need(price, tfield("price", i))?, tfield("price", i), true)?;
    // Signed size: the sign is the taker side, the absolute value the quantity.
    let f = tfield("size", i);
    let full = sink.decimal(doc, need(size, f)?, f, true)?;
    let text = sink.arena.get(full.start as usize..full.end as usize).unwrap_or(&[]);
    let negative = text.first() == Some(&b'-');
    if !text.iter().any(|&b| (b'1'..=b'9').contains(&b)) {
        return fail(format!("{f} {} is zero: no taker side", show(text)));
    }
    let qty = if negative { full.start + 1..full.end } else { full };
    let side = if negative { Side::Sell } else { Side::Buy };
    sink.push(ParsedTrade { symbol, trade_id, price, qty, side, ts_ns, flags, seq_first: Some(n), seq_last: Some(n) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const SPOT: &str = include_str!("../../../../tests/samples/gateio_spot.jsonl");
    const SPOT_TARDIS: &str = include_str!("../../../../tests/samples/gateio_spot.tardis.jsonl");
    const SPOT_CONTROL: &str = include_str!("../../../../tests/samples/gateio_spot.control.jsonl");
    const FUT: &str = include_str!("../../../../tests/samples/gateio_futures.jsonl");
    const FUT_TARDIS: &str = include_str!("../../../../tests/samples/gateio_futures.tardis.jsonl");
    const FUT_CONTROL: &str = include_str!("../../../../tests/samples/gateio_futures.control.jsonl");

    #[test]
    fn every_sample_line_parses() {
        let ctx = ParseContext::new();
        assert_eq!(all_parse(Venue::GateSpot, SPOT, false, &ctx), 4);
        assert_eq!(all_parse(Venue::GateSpot, SPOT_TARDIS, false, &ctx), 1);
        assert_eq!(all_parse(Venue::GateSpot, SPOT_CONTROL, true, &ctx), 3);
        assert_eq!(all_parse(Venue::GateFutures, FUT, false, &ctx), 1);
        assert_eq!(all_parse(Venue::GateFutures, FUT_TARDIS, false, &ctx), 3);
        assert_eq!(all_parse(Venue::GateFutures, FUT_CONTROL, true, &ctx), 2);
    }

    #[test]
    fn spot_values() {
        let ctx = ParseContext::new();
        let v = Venue::GateSpot;
        // The documentation's example: a range of several fills.
        let f = r#"{"time":1606292218,"time_ms":1606292218231,"channel":"spot.trades","event":"update","result":{"id":309143071,"id_market":2390904,"create_time":1606292218,"create_time_ms":"1606292218213.4578","side":"sell","currency_pair":"GT_USDT","amount":"16.4700000000","price":"0.4705000000","range":"2390902-2390904"}}"#;
        let out = parse_ok(v, f, &ctx);
        assert_trade(
            &out,
            v,
            0,
            &Want {
                symbol: "GT_USDT",
                id: "2390904",
                price: "0.4705000000",
                qty: "16.4700000000",
                side: Side::Sell,
                ts_ns: 1_606_292_218_213_457_800,
                flags: 0,
                seq: Some((2390902, 2390904)),
            },
        );
    }

    #[test]
    fn futures_values() {
        let ctx = ParseContext::new();
        let v = Venue::GateFutures;
        // Decimal size string (X-Gate-Size-Decimal) and is_internal.
        let f = r#"{"time":1,"channel":"futures.trades","event":"update","result":[{"id":7,"size":"-0.25","create_time":1,"create_time_ms":1700000000123,"price":"100.5","contract":"ETH_USDT","is_internal":true}]}"#;
        let out = parse_ok(v, f, &ctx);
        assert_trade(
            &out,
            v,
            0,
            &Want {
                symbol: "ETH_USDT",
                id: "7",
                price: "100.5",
                qty: "0.25",
                side: Side::Sell,
                ts_ns: 1_700_000_000_123_000_000,
                flags: flags::INTERNAL,
                seq: Some((7, 7)),
            },
        );
    }

    #[test]
    fn control_frames() {
        let ctx = ParseContext::new();
        let c = |v: Venue, f: &str| parse_ok(v, f, &ctx).control.unwrap();
        assert_eq!(c(Venue::GateSpot, line(SPOT_CONTROL, 1)).kind(), "other");
        assert_eq!(c(Venue::GateSpot, line(SPOT_CONTROL, 2)).kind(), "subscribe_ack");
        assert_eq!(c(Venue::GateSpot, line(SPOT_CONTROL, 3)).kind(), "subscribe_ack");
        assert_eq!(c(Venue::GateFutures, line(FUT_CONTROL, 2)).kind(), "subscribe_ack");
        assert_eq!(
            c(Venue::GateSpot, r#"{"time":1,"channel":"spot.pong","event":"","error":null,"result":null}"#),
            Control::Pong
        );
        assert_eq!(
            c(Venue::GateFutures, r#"{"time":1,"channel":"futures.pong","event":"","error":null,"result":null}"#),
            Control::Pong
        );
        assert_eq!(
            c(Venue::GateSpot, r#"{"time":1,"channel":"spot.trades","event":"subscribe","error":{"code":2,"message":"unknown currency pair GT_USD"},"result":null}"#).kind(),
            "error"
        );
        assert_eq!(
            c(
                Venue::GateSpot,
                r#"{"time":1,"channel":"spot.trades","event":"unsubscribe","result":{"status":"success"}}"#
            )
            .kind(),
            "other"
        );
        assert_eq!(
            c(Venue::GateFutures, r#"{"time":1,"channel":"futures.trades","event":"update","result":[]}"#).kind(),
            "other"
        );
        assert_eq!(c(Venue::GateFutures, line(SPOT, 1)).kind(), "other");
        let mut o = ParsedFrame::new();
        for bad in [
            r#"{"time":1,"event":"update","result":[]}"#,
            r#"{"time":1,"channel":"futures.trades","event":"update","result":[{"id":7,"size":0,"create_time":1,"price":"1","contract":"A"}]}"#,
            r#"{"time":1,"channel":"futures.trades","event":"update","result":[{"id":7,"size":1.5e3,"create_time":1,"price":"1","contract":"A"}]}"#,
            r#"{"time":1,"channel":"futures.trades","event":"update","result":[{"id":"x","size":1,"create_time":1,"price":"1","contract":"A"}]}"#,
            r#"{"time":1,"channel":"futures.trades","event":"update","result":[{"id":7,"size":1,"price":"1","contract":"A"}]}"#,
            r#"{"time":1,"channel":"futures.trades","event":"update","result":"x"}"#,
        ] {
            assert!(parse_frame(Venue::GateFutures, bad.as_bytes(), &ctx, &mut o).is_err(), "{bad}");
        }
        for bad in [
            r#"{"time":1,"channel":"spot.trades","event":"update","result":{"id":1,"id_market":5,"create_time_ms":"1.5","side":"buy","currency_pair":"A","amount":"1","price":"1","range":"6-5"}}"#,
            r#"{"time":1,"channel":"spot.trades","event":"update","result":{"id":1,"id_market":5,"create_time_ms":"1.5","side":"buy","currency_pair":"A","amount":"1","price":"1","range":"5"}}"#,
            r#"{"time":1,"channel":"spot.trades","event":"update","result":{"id":1,"create_time_ms":"1.5.5","side":"buy","currency_pair":"A","amount":"1","price":"1"}}"#,
        ] {
            assert!(parse_frame(Venue::GateSpot, bad.as_bytes(), &ctx, &mut o).is_err(), "{bad}");
        }
    }

    #[test]
    fn mutations_never_panic() {
        let ctx = ParseContext::new();
        let mut n = 0;
        for (v, text) in [
            (Venue::GateSpot, SPOT),
            (Venue::GateSpot, SPOT_TARDIS),
            (Venue::GateSpot, SPOT_CONTROL),
            (Venue::GateFutures, FUT),
            (Venue::GateFutures, FUT_TARDIS),
            (Venue::GateFutures, FUT_CONTROL),
        ] {
            n += mutate_all(v, text, &ctx);
        }
        assert!(n > 10_000, "{n}");
    }
}

/// The hot path's shortcut for a `spot.trades` / `futures.trades` update as Gate sends it: the
/// envelope (`time`, `time_ms`, `channel`, `event`, `result`) and a trade object or a non-empty
/// array of them, plain strings and integers, members in any order. One pass over the bytes, no
/// token tape; anything else returns `None` and the general parser decides (tests hold the two to
/// the same output on every frame the shortcut takes).
pub(super) fn fast_trades(
    frame: &[u8],
    arena: &mut Vec<u8>,
    trades: &mut Vec<ParsedTrade>,
    futures: bool,
) -> Option<()> {
    use super::fast::once;
    use super::json::Cursor;
    let mut c = Cursor::new(frame);
    let (mut channel, mut event, mut result) = (None, None, None);
    c.object(|c, key| match key {
        b"channel" => once(&mut channel, c.ascii_str()),
        b"event" => once(&mut event, c.ascii_str()),
        b"result" => {
            let r = if c.b.get(c.i) == Some(&b'[') {
                c.array(|c| fast_one(c, arena, trades, futures))
            } else {
                fast_one(c, arena, trades, futures)
            };
            once(&mut result, r)
        }
        b"error" => None,
        _ => c.skip_scalar(),
    })?;
    let want: &[u8] = if futures { b"futures.trades" } else { b"spot.trades" };
    (channel? == want && matches!(event?, b"update" | b"all") && result.is_some() && c.at_end()).then_some(())
}

/// One trade object of a Gate update, read as `spot_trade` / `futures_trade` read it.
fn fast_one(
    c: &mut super::json::Cursor<'_>,
    arena: &mut Vec<u8>,
    trades: &mut Vec<ParsedTrade>,
    futures: bool,
) -> Option<()> {
    use super::fast::{once, put};
    let (
        mut id,
        mut id_market,
        mut ct,
        mut ct_ms,
        mut side,
        mut symbol,
        mut amount,
        mut price,
        mut range,
        mut size,
        mut internal,
    ) = (None, None, None, None, None, None, None, None, None, None, None);
    c.object(|c, key| match (key, futures) {
        (b"id", _) => once(&mut id, c.id()),
        (b"create_time", _) => once(&mut ct, c.uint_or_str_text()),
        (b"create_time_ms", _) => once(&mut ct_ms, c.uint_or_str_text()),
        (b"price", _) => once(&mut price, c.decimal(true)),
        (b"id_market", false) => once(&mut id_market, c.id()),
        (b"side", false) => once(&mut side, c.side()),
        (b"currency_pair", false) => once(&mut symbol, c.text()),
        (b"amount", false) => once(&mut amount, c.decimal(false)),
        (b"range", false) => once(&mut range, c.ascii_str()),
        (b"contract", true) => once(&mut symbol, c.text()),
        (b"size", true) => once(&mut size, c.decimal(true)),
        (b"is_internal", true) => once(&mut internal, c.flag()),
        _ => c.skip_scalar(),
    })?;
    let ts_ns = match (ct_ms, ct) {
        (Some(ms), _) => ns_from_text(ms, 6)?,
        (None, Some(s)) => ns_from_text(s, 9)?,
        (None, None) => return None,
    };
    let (symbol, price) = (symbol?, price?);
    let trade = if futures {
        let (id, size) = (id?, size?);
        let n = canonical_u64(id)?;
        // Signed size: the sign is the taker side, the absolute value the quantity; zero has no side.
        if !size.iter().any(|&b| (b'1'..=b'9').contains(&b)) {
            return None;
        }
        let (side, qty) = match size.split_first() {
            Some((b'-', abs)) => (Side::Sell, abs),
            _ => (Side::Buy, size),
        };
        let flags = if internal == Some(true) { flags::INTERNAL } else { 0 };
        (symbol, id, price, qty, side, flags, Some((n, n)))
    } else {
        let range = match range {
            Some(r) => Some(parse_range(r)?),
            None => None,
        };
        let (id, seq) = match id_market {
            Some(m) => (m, Some(range.unwrap_or((canonical_u64(m)?, canonical_u64(m)?)))),
            None => (id?, range),
        };
        if id_market.is_some() {
            canonical_u64(id)?;
        }
        (symbol, id, price, amount?, side?, 0, seq)
    };
    let (symbol, id, price, qty, side, flags, seq) = trade;
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
        seq_first: seq.map(|s| s.0),
        seq_last: seq.map(|s| s.1),
    });
    Some(())
}

#[cfg(test)]
mod fast_tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn shortcut_agrees_with_the_general_parser() {
        let mut spot: Vec<String> =
            venue_frames(Venue::GateSpot, 2, 434_029_654).into_iter().map(|f| String::from_utf8(f).unwrap()).collect();
        spot.push(r#"{"time":1,"channel":"spot.trades","event":"update","result":[{"id":5,"create_time":1790000000,"side":"BUY","currency_pair":"BTC_USDT","amount":"0.5","price":"1.5"},{"id":"7","id_market":8,"create_time_ms":"1790000000000.4578","side":"sell","currency_pair":"X_Y","amount":"1","price":"-2","range":"7-9"}]}"#.into());
        let (tried, taken) =
            shortcut_agrees(Venue::GateSpot, &spot, include_str!("../../../../tests/samples/gateio_spot.jsonl"));
        assert!(taken * 20 > tried, "gate-spot: the shortcut took only {taken} of {tried}");
        let mut fut: Vec<String> = venue_frames(Venue::GateFutures, 2, 191_453_885)
            .into_iter()
            .map(|f| String::from_utf8(f).unwrap())
            .collect();
        fut.push(r#"{"time":1,"time_ms":1,"channel":"futures.trades","event":"all","result":[{"id":191453885,"size":-64,"create_time":1790000000,"create_time_ms":1790000000000,"price":"64999.3","contract":"BTC_USDT","is_internal":true},{"id":"191453886","size":"0.5","create_time":1790000000,"price":1.25,"contract":"BTC_USDT","is_internal":null}]}"#.into());
        let (tried, taken) =
            shortcut_agrees(Venue::GateFutures, &fut, include_str!("../../../../tests/samples/gateio_futures.jsonl"));
        assert!(taken * 20 > tried, "gate-futures: the shortcut took only {taken} of {tried}");
    }
}
