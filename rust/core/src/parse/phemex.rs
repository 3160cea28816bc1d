//! Phemex spot (`trade.subscribe`, `sXXX` symbols, scaled integers) and USDⓈ-M perpetual
//! (`trade_p.subscribe`, `trades_p` rows with real decimal strings).
//!
//! * a row is `[timestamp_ns, side, price, qty]` (extra elements ignored); side `Buy`/`Sell` is
//!   the taker side; the timestamp is an integer > 2^53, taken from its text.
//! * phemex-spot `trades`: price and qty are non-negative JSON integers scaled by 10^scale; they
//!   become decimal text by inserting the point and keeping every digit (`769100000` at scale 8 is
//!   `7.69100000`). Scales come from `ParseContext::set_phemex_spot_scales` (price 8, qty 8 when not
//!   set). The symbol must start with `s`: COIN-M contracts (`BTCUSD`, also `trades` with scaled
//!   integers but other scales) are refused rather than mis-scaled. A spot frame with `trades_p`
//!   rows is read like the perpetual one.
//! * phemex-perp `trades_p`: price and qty are the strings as sent. A `trades` frame (COIN-M
//!   scaled integers) is an error: not one of PumpWatch's venues.
//! * `"type":"snapshot"` (sent on every (re)subscribe) -> SNAPSHOT flag on each trade.
//! * no trade id exists: the id is the content key `<ts_ns>:<b|s>:<price>:<qty>`, and the k-th
//!   (k >= 2) identical row within one frame gets `#<k>` appended. The store dedups Phemex by this
//!   key, so a reconnect snapshot overlapping already-recorded trades adds nothing; two identical
//!   fills in the same nanosecond arriving in different frames collapse into one until a
//!   snapshot holding both restores the second (`#2`). No id sequence.
//! * an empty row list is `Control::Other`.
//! * control: `{"error":null,"id":..,"result":{"status":"success"}}` -> SubscribeAck;
//!   `"result":"pong"` -> Pong; a non-null `error` -> Error; other results and echoed requests
//!   (`method`) -> Other.

use super::json::Doc;
use super::*;

pub(super) fn parse(doc: &Doc<'_>, sink: &mut Sink<'_>, ctx: &ParseContext, spot: bool) -> PResult<()> {
    let root = root_object(doc)?;
    let [trades, trades_p, symbol, ty, error, result, method] =
        doc.pick(root, ["trades", "trades_p", "symbol", "type", "error", "result", "method"]);
    if trades.is_some() || trades_p.is_some() {
        let (rows, scaled) = match (trades, trades_p) {
            (Some(t), _) if spot => (t, true),
            (_, Some(t)) => (t, false),
            _ => {
                return fail(
                    "a \"trades\" frame (COIN-M contract, scaled integers) is not a phemex-perp frame; \
                     USDⓈ-M perpetuals send \"trades_p\" (trade_p.subscribe)"
                        .to_owned(),
                )
            }
        };
        return trade_rows(doc, sink, ctx, rows, scaled, symbol, ty);
    }
    if error.is_some() || result.is_some() {
        if error.is_some_and(|e| !doc.is_null(e)) {
            sink.set_control(|detail| Control::Error { detail });
            return Ok(());
        }
        let r = result.unwrap_or(usize::MAX);
        if doc.str_cow(r).is_some_and(|s| &*s == b"pong") {
            sink.pong();
            return Ok(());
        }
        if doc.kind(r) == json::Kind::Obj {
            let [status] = doc.pick(r, ["status"]);
            if status.and_then(|s| doc.str_cow(s)).is_some_and(|s| &*s == b"success") {
                sink.set_control(|detail| Control::SubscribeAck { detail });
                return Ok(());
            }
        }
        sink.other();
        return Ok(());
    }
    if method.is_some() {
        sink.other();
        return Ok(());
    }
    fail(
        "not a Phemex trade push or response (no \"trades\", \"trades_p\", \"result\", \"error\" or \"method\")"
            .to_owned(),
    )
}

#[allow(clippy::too_many_arguments)]
fn trade_rows(
    doc: &Doc<'_>,
    sink: &mut Sink<'_>,
    ctx: &ParseContext,
    rows: usize,
    scaled: bool,
    symbol: Option<usize>,
    ty: Option<usize>,
) -> PResult<()> {
    let rows_name = if scaled { "trades" } else { "trades_p" };
    if doc.kind(rows) != json::Kind::Arr {
        return fail(format!("field \"{rows_name}\" is {}, not an array of rows", doc.kind_name(rows)));
    }
    let flags = match ty {
        None => 0,
        Some(t) => match &*str_field(doc, t, field("type"))? {
            b"snapshot" => flags::SNAPSHOT,
            b"incremental" => 0,
            other => return fail(format!("field \"type\" {} is not \"snapshot\" or \"incremental\"", show(other))),
        },
    };
    let sym = sink.text(doc, need(symbol, field("symbol"))?, field("symbol"))?;
    let sym_text = sink.arena.get(sym.start as usize..sym.end as usize).unwrap_or(&[]);
    let (price_scale, qty_scale) = if scaled {
        if sym_text.first() != Some(&b's') {
            return fail(format!(
                "symbol {} is not a Phemex spot symbol (they start with 's'); COIN-M contract frames are not supported",
                show(sym_text)
            ));
        }
        let s = std::str::from_utf8(sym_text).unwrap_or("");
        let (p, q) = ctx.phemex_spot_scales(s);
        if p > MAX_SCALE || q > MAX_SCALE {
            return fail(format!("configured scales ({p}, {q}) of {s} are larger than {MAX_SCALE}"));
        }
        (p, q)
    } else {
        (0, 0)
    };
    let first_trade = sink.trades.len();
    for (i, row) in doc.elements(rows).enumerate() {
        sink.one_of_many(|sink| {
            if doc.kind(row) != json::Kind::Arr {
                return fail(format!("row {i} of \"{rows_name}\" is {}, not an array", doc.kind_name(row)));
            }
            let mut el = doc.elements(row);
            let (Some(ts_v), Some(side_v), Some(price_v), Some(qty_v)) = (el.next(), el.next(), el.next(), el.next())
            else {
                return fail(format!("row {i} of \"{rows_name}\" has fewer than 4 elements [ts, side, price, qty]"));
            };
            let ts_ns = time_ns(doc, ts_v, tfield("timestamp", i), 0)?;
            let side = side(doc, side_v, tfield("side", i))?;
            let (price, qty) = if scaled {
                (
                    scaled_decimal(doc, price_v, price_scale, tfield("priceEp", i), sink)?,
                    scaled_decimal(doc, qty_v, qty_scale, tfield("qty", i), sink)?,
                )
            } else {
                (
                    sink.decimal(doc, price_v, tfield("price", i), true)?,
                    sink.decimal(doc, qty_v, tfield("qty", i), false)?,
                )
            };
            push_row(sink, first_trade, &sym, ts_ns, side, price, qty, flags, i)
        });
    }
    sink.none_taken();
    Ok(())
}

/// Adds one row as a trade whose id is its content, `<ts_ns>:<b|s>:<price>:<qty>`, with `#<k>`
/// appended to the k-th (k >= 2) identical row of the frame (trades from `first_trade` on).
#[allow(clippy::too_many_arguments)]
fn push_row(
    sink: &mut Sink<'_>,
    first_trade: usize,
    sym: &Range<u32>,
    ts_ns: i64,
    side: Side,
    price: Range<u32>,
    qty: Range<u32>,
    flags: u16,
    i: usize,
) -> PResult<()> {
    // Content id: <ts_ns>:<b|s>:<price>:<qty>[#k].
    let start = sink.arena.len();
    push_u64(sink.arena, ts_ns as u64);
    sink.arena.extend_from_slice(if side == Side::Buy { b":b:" } else { b":s:" });
    sink.arena.extend_from_within(price.start as usize..price.end as usize);
    sink.arena.push(b':');
    sink.arena.extend_from_within(qty.start as usize..qty.end as usize);
    let base_end = sink.arena.len();
    let arena: &[u8] = sink.arena;
    let base = arena.get(start..base_end).unwrap_or(&[]);
    let dups = sink
        .trades
        .get(first_trade..)
        .unwrap_or(&[])
        .iter()
        .filter(|t| {
            t.ts_ns == ts_ns && {
                let id = arena.get(t.trade_id.start as usize..t.trade_id.end as usize).unwrap_or(&[]);
                id.len() >= base.len()
                    && id.get(..base.len()) == Some(base)
                    && (id.len() == base.len() || id.get(base.len()) == Some(&b'#'))
            }
        })
        .count();
    if dups > 0 {
        sink.arena.push(b'#');
        push_u64(sink.arena, dups as u64 + 1);
    }
    let trade_id = sink.finish(start, tfield("id", i))?;
    sink.push(ParsedTrade {
        symbol: sym.clone(),
        trade_id,
        price,
        qty,
        side,
        ts_ns,
        flags,
        seq_first: None,
        seq_last: None,
    });
    Ok(())
}

/// A non-negative JSON integer scaled by 10^scale, written as exact decimal text.
fn scaled_decimal(doc: &Doc<'_>, v: usize, scale: u8, f: Field<'_>, sink: &mut Sink<'_>) -> PResult<Range<u32>> {
    let digits = match doc.scalar(v) {
        Some(Scalar::Num(raw)) if raw.iter().all(u8::is_ascii_digit) => raw,
        Some(Scalar::Num(raw)) => return fail(format!("{f} {} is not a non-negative scaled integer", show(raw))),
        _ => return fail(format!("{f} is {}, not a scaled integer", doc.kind_name(v))),
    };
    let start = sink.arena.len();
    write_scaled(sink.arena, digits, scale as usize);
    sink.finish(start, f)
}

/// Inserts a decimal point `scale` digits from the right of `digits` (canonical integer text).
pub(crate) fn write_scaled(out: &mut Vec<u8>, digits: &[u8], scale: usize) {
    if scale == 0 {
        out.extend_from_slice(digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + (scale - digits.len()), b'0');
        out.extend_from_slice(digits);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const SPOT: &str = include_str!("../../../../tests/samples/phemex_spot.jsonl");
    const CONTRACT: &str = include_str!("../../../../tests/samples/phemex_contract.jsonl");
    const TARDIS: &str = include_str!("../../../../tests/samples/phemex.tardis.jsonl");
    const CONTROL: &str = include_str!("../../../../tests/samples/phemex.control.jsonl");

    /// Which of our venues a phemex.tardis line belongs to (None: COIN-M, not ours).
    fn venue_of(line: &str) -> Option<Venue> {
        if line.contains("\"trades_p\"") {
            Some(Venue::PhemexPerp)
        } else if line.contains("\"symbol\":\"s") {
            Some(Venue::PhemexSpot)
        } else {
            None
        }
    }

    #[test]
    fn every_sample_line_parses() {
        let ctx = ParseContext::new();
        assert_eq!(all_parse(Venue::PhemexSpot, SPOT, false, &ctx), 8);
        assert_eq!(all_parse(Venue::PhemexSpot, CONTROL, true, &ctx), 2);
        assert_eq!(all_parse(Venue::PhemexPerp, CONTROL, true, &ctx), 2);
        let mut out = ParsedFrame::new();
        let mut ours = 0;
        for l in lines(TARDIS) {
            match venue_of(l) {
                Some(v) => {
                    assert!(!parse_ok(v, l, &ctx).trades.is_empty());
                    ours += 1;
                }
                None => {
                    // COIN-M: refused by both of our Phemex venues.
                    for v in [Venue::PhemexSpot, Venue::PhemexPerp] {
                        assert!(parse_frame(v, l.as_bytes(), &ctx, &mut out).is_err(), "{l}");
                    }
                }
            }
        }
        assert_eq!(ours, 5);
        for l in lines(CONTRACT) {
            for v in [Venue::PhemexSpot, Venue::PhemexPerp] {
                let e = parse_frame(v, l.as_bytes(), &ctx, &mut out).unwrap_err();
                assert!(e.0.contains("COIN-M"), "{e}");
            }
        }
    }

    #[test]
    fn snapshot_flag_and_duplicate_ids() {
        let ctx = ParseContext::new();
        let v = Venue::PhemexPerp;
        let f = r#"{"sequence":1,"symbol":"BTCUSDT","trades_p":[[5,"Buy","1.0","2"],[5,"Buy","1.0","2"],[5,"Sell","1.0","2"],[6,"Buy","1.0","2"],[5,"Buy","1.0","2"],[5,"Buy","1.0","20"]],"type":"snapshot"}"#;
        let out = parse_ok(v, f, &ctx);
        let ids: Vec<String> =
            (0..out.trades.len()).map(|i| String::from_utf8(out.trade(i, v, 0).trade_id.to_vec()).unwrap()).collect();
        assert_eq!(ids, ["5:b:1.0:2", "5:b:1.0:2#2", "5:s:1.0:2", "6:b:1.0:2", "5:b:1.0:2#3", "5:b:1.0:20"]);
        assert!(out.trades.iter().all(|t| t.flags == flags::SNAPSHOT));
        let c = |f: &str| parse_ok(v, f, &ctx).control.unwrap();
        assert_eq!(c(r#"{"sequence":1,"symbol":"BTCUSDT","trades_p":[],"type":"snapshot"}"#).kind(), "other");
        assert_eq!(c(line(CONTROL, 1)).kind(), "other");
        assert_eq!(c(line(CONTROL, 2)).kind(), "subscribe_ack");
        assert_eq!(c(r#"{"error":null,"id":0,"result":"pong"}"#), Control::Pong);
        assert_eq!(c(r#"{"error":{"code":6001,"message":"invalid argument"},"id":1,"result":null}"#).kind(), "error");
        let mut o = ParsedFrame::new();
        for (venue, bad) in [
            (Venue::PhemexPerp, r#"{"symbol":"BTCUSDT","trades_p":[[5,"Buy","1.0"]],"type":"incremental"}"#),
            (Venue::PhemexPerp, r#"{"symbol":"BTCUSDT","trades_p":[[5e3,"Buy","1.0","1"]],"type":"incremental"}"#),
            (Venue::PhemexPerp, r#"{"symbol":"BTCUSDT","trades_p":[[5,"Buy","1.0","1"]],"type":"delta"}"#),
            (Venue::PhemexPerp, r#"{"symbol":"BTCUSDT","trades_p":{},"type":"incremental"}"#),
            (Venue::PhemexPerp, r#"{"trades_p":[[5,"Buy","1.0","1"]],"type":"incremental"}"#),
            (Venue::PhemexSpot, r#"{"symbol":"sBTCUSDT","trades":[[5,"Buy","100","1"]],"type":"incremental"}"#),
            (Venue::PhemexSpot, r#"{"symbol":"sBTCUSDT","trades":[[5,"Buy",-100,1]],"type":"incremental"}"#),
            (Venue::PhemexSpot, r#"{"symbol":"sBTCUSDT","trades":[[5,"Buy",1.5,1]],"type":"incremental"}"#),
            (Venue::PhemexSpot, r#"{"symbol":"sBTCUSDT","trades":[[5,"Hold",1,1]],"type":"incremental"}"#),
            (Venue::PhemexSpot, r#"{"sequence":1}"#),
        ] {
            assert!(parse_frame(venue, bad.as_bytes(), &ctx, &mut o).is_err(), "{bad}");
        }
    }

    #[test]
    fn scaled_text() {
        let s = |d: &str, k: usize| {
            let mut v = Vec::new();
            write_scaled(&mut v, d.as_bytes(), k);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(s("769100000", 8), "7.69100000");
        assert_eq!(s("1228700", 8), "0.01228700");
        assert_eq!(s("0", 8), "0.00000000");
        assert_eq!(s("64000000000", 8), "640.00000000");
        assert_eq!(s("100000000", 8), "1.00000000");
        assert_eq!(s("12", 0), "12");
        assert_eq!(s("12345678901234567890123", 4), "1234567890123456789.0123");
    }

    #[test]
    fn mutations_never_panic() {
        let ctx = ParseContext::new();
        let mut n = 0;
        for (v, text) in [
            (Venue::PhemexSpot, SPOT),
            (Venue::PhemexSpot, TARDIS),
            (Venue::PhemexPerp, TARDIS),
            (Venue::PhemexSpot, CONTRACT),
            (Venue::PhemexPerp, CONTROL),
        ] {
            n += mutate_all(v, text, &ctx);
        }
        let mut big = ParseContext::new();
        big.set_phemex_spot_scales("sSUSHIUSDT", 255, 255);
        n += mutate_all(Venue::PhemexSpot, line(SPOT, 1), &big);
        assert!(n > 10_000, "{n}");
    }
}

/// The hot path's shortcut for a trade push as Phemex sends it: `sequence`, `symbol` (before the
/// rows), `trades` (spot, scaled integers) or `trades_p` (strings) rows `[ts, side, price, qty]`
/// and `type`, members in any order otherwise. One pass over the bytes, no token tape; the rows
/// become trades exactly as `trade_rows` makes them (`push_row`); anything else returns `None` and
/// the general parser decides (tests hold the two to the same output on every frame it takes).
pub(super) fn fast_trades(
    frame: &[u8],
    arena: &mut Vec<u8>,
    trades: &mut Vec<ParsedTrade>,
    ctx: &ParseContext,
    spot: bool,
) -> Option<()> {
    use super::fast::once;
    use super::json::Cursor;
    let mut c = Cursor::new(frame);
    let mut control = None;
    let mut rejected = Vec::new(); // the shortcut declines a bad row instead of leaving it out
    let mut sink = Sink { trades, arena, control: &mut control, rejected: &mut rejected, frame };
    let (mut symbol, mut rows, mut flags) = (None::<Range<u32>>, None, None);
    c.object(|c, key| match key {
        b"symbol" => {
            let text = c.text()?;
            once(&mut symbol, Some(super::fast::put(sink.arena, text)))
        }
        b"type" => once(
            &mut flags,
            match c.ascii_str()? {
                b"snapshot" => Some(flags::SNAPSHOT),
                b"incremental" => Some(0),
                _ => None,
            },
        ),
        b"trades" | b"trades_p" => {
            let scaled = key == b"trades";
            let sym = symbol.clone()?;
            let scales = if scaled {
                let text = sink.arena.get(sym.start as usize..sym.end as usize)?;
                if !spot || text.first() != Some(&b's') {
                    return None;
                }
                let (p, q) = ctx.phemex_spot_scales(std::str::from_utf8(text).ok()?);
                if p > MAX_SCALE || q > MAX_SCALE {
                    return None;
                }
                (p as usize, q as usize)
            } else {
                (0, 0)
            };
            let first_trade = sink.trades.len();
            let mut i = 0;
            let r = c.array(|c| {
                if !c.byte(b'[') {
                    return None;
                }
                let ts_ns = ns_from_text(c.uint_or_str_text()?, 0)?;
                let side = (c.byte(b',')).then(|| c.side())??;
                if !c.byte(b',') {
                    return None;
                }
                let (price, qty) = if scaled {
                    let p = scaled_fast(c, sink.arena, scales.0)?;
                    let q = c.byte(b',').then(|| scaled_fast(c, sink.arena, scales.1))??;
                    (p, q)
                } else {
                    let p = super::fast::put(sink.arena, c.decimal(true)?);
                    let q = super::fast::put(sink.arena, c.byte(b',').then(|| c.decimal(false))??);
                    (p, q)
                };
                // Extra elements of a row are ignored (plain scalars only).
                while c.byte(b',') {
                    c.skip_scalar()?;
                }
                if !c.byte(b']') {
                    return None;
                }
                push_row(&mut sink, first_trade, &sym, ts_ns, side, price, qty, 0, i).ok()?;
                i += 1;
                Some(())
            });
            once(&mut rows, r)
        }
        b"sequence" => c.skip_scalar(),
        _ => None,
    })?;
    rows?;
    if !c.at_end() {
        return None;
    }
    // `type` may come after the rows: its flag is set on them now.
    let flags = flags.unwrap_or(0);
    for t in sink.trades.iter_mut() {
        t.flags = flags;
    }
    Some(())
}

/// A scaled integer as `scaled_decimal` reads it: a non-negative JSON integer literal.
fn scaled_fast(c: &mut super::json::Cursor<'_>, arena: &mut Vec<u8>, scale: usize) -> Option<Range<u32>> {
    let (digits, _) = c.uint()?;
    let start = arena.len();
    write_scaled(arena, digits, scale);
    if arena.len() - start > u8::MAX as usize {
        return None;
    }
    Some(start as u32..arena.len() as u32)
}

#[cfg(test)]
mod fast_tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn shortcut_agrees_with_the_general_parser() {
        let mut spot: Vec<String> = venue_frames(Venue::PhemexSpot, 2, 100_000_030)
            .into_iter()
            .map(|f| String::from_utf8(f).unwrap())
            .collect();
        spot.push(r#"{"sequence":1,"symbol":"sBTCUSDT","trades":[[1790000000000000000,"Sell",6499540000000,412000],[1790000000000000000,"Sell",6499540000000,412000],[1790000000000000001,"buy",1,0,7]],"type":"snapshot"}"#.into());
        spot.push(r#"{"symbol":"sETHUSDT","trades_p":[["1790000000000000000","Buy","1.5","2"]]}"#.into());
        let (tried, taken) =
            shortcut_agrees(Venue::PhemexSpot, &spot, include_str!("../../../../tests/samples/phemex_spot.jsonl"));
        assert!(taken * 20 > tried, "phemex-spot: the shortcut took only {taken} of {tried}");
        let mut perp: Vec<String> = venue_frames(Venue::PhemexPerp, 2, 100_000_026)
            .into_iter()
            .map(|f| String::from_utf8(f).unwrap())
            .collect();
        perp.push(r#"{"sequence":100000026,"symbol":"BTCUSDT","trades_p":[[1790000000000000000,"Sell","64998.5","0.00224"],[1790000000000000000,"Sell","64998.5","0.00224"],[1790000000000000000,"Sell","64998.5","0.00224"],[1790000000000000004,"Buy",-1,2]],"type":"snapshot"}"#.into());
        let (tried, taken) =
            shortcut_agrees(Venue::PhemexPerp, &perp, include_str!("../../../../tests/samples/phemex.tardis.jsonl"));
        assert!(taken * 20 > tried, "phemex-perp: the shortcut took only {taken} of {tried}");
    }
}
