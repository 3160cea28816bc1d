//! Venue trade-frame parsers: one WebSocket text frame in, trades (or a control message) out.
//!
//! The hot path allocates nothing per trade once a `ParsedFrame` has been used a few times: the
//! frame is tokenised into a reusable tape (`json::tape`, a small strict JSON parser that keeps
//! every number's exact text, so no integer is ever rounded through `f64` and no dependency
//! feature such as `arbitrary_precision` is needed), and every text field of every trade is
//! copied into one reusable byte arena. Control frames allocate their `detail` string.
//!
//! Rules shared by every venue (the venue files say the rest; the real frames in `tests/samples/`,
//! the repository's copy of `shared/samples/`, are their tests):
//!
//! * price and quantity are the venue's text, byte for byte (`"83680.00"` stays `83680.00`); a JSON
//!   number is taken as its literal text when that is a plain decimal; Phemex spot scaled integers
//!   become decimal text by inserting the point (`769100000` at scale 8 is `7.69100000`). Every
//!   price and quantity emitted satisfies `decimal::is_plain_decimal`; a quantity is never negative.
//! * times are converted exactly from their text (`"1606292218213.4578"` ms is
//!   `1606292218213457800` ns: fraction digits padded or cut to the unit), with checked arithmetic.
//! * side is the taker's side.
//! * a frame is trades (at least one), a control message, or an error; an error leaves `out`
//!   empty. In a frame of several trades (Bybit, OKX, Gate, Phemex arrays) a trade that does not
//!   parse is left out and its reason kept in `ParsedFrame::rejected`: the frame's other trades
//!   stand, and the caller quarantines the frame naming only the bad ones. A frame whose trades
//!   all fail is an error, as a frame of one bad trade always was. A frame that is valid JSON of a known non-trade kind (acks, pongs, pushes of other
//!   channels, an empty trade list, a request frame echoed into a recording) is
//!   `Control::Other`; a frame of no known shape is an error, so that the caller quarantines it.
//! * `Control` details are the frame's text (surrounding whitespace removed) cut to at most
//!   `DETAIL_MAX` bytes on a character boundary; the pure-Python parser produces the same text.
//! * nothing here panics on any input: every access to external data is checked.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use crate::decimal::{canonical_u64, is_plain_decimal};
use crate::record::{Side, TradeRef};
use crate::venue::Venue;
use json::{parse_u64, Scalar};

mod binance;
mod bybit;
mod fast;
mod gate;
pub(crate) mod json;
mod kucoin;
mod okx;
mod phemex;

pub use crate::record::flags;

/// Longest `Control` detail, in bytes.
pub const DETAIL_MAX: usize = 1024;
/// Deepest JSON nesting accepted (real frames nest at most 4 levels).
pub const MAX_DEPTH: usize = 128;
/// Largest frame accepted, in bytes.
pub const MAX_FRAME: usize = 64 << 20;
/// Longest text field (symbol, id, price, qty) the log can store.
const MAX_TEXT: usize = u8::MAX as usize;

/// One trade of a frame; its text fields are byte ranges into `ParsedFrame::arena`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedTrade {
    pub symbol: Range<u32>,
    pub trade_id: Range<u32>,
    pub price: Range<u32>,
    pub qty: Range<u32>,
    pub side: Side,
    pub ts_ns: i64,
    pub flags: u16,
    /// First and last id of the venue's per-symbol consecutive id sequence that this trade
    /// covers: Binance `t` (USDⓈ-M including NA/ADL/INSURANCE_FUND frames), OKX
    /// `tradeId-count+1..=tradeId`, Gate spot `range` (else `id_market`), Gate futures `id`.
    /// `None` for venues without such a sequence (Bybit, KuCoin, Phemex) and for Binance
    /// `aggTrade` and pre-2025 Gate spot frames (global `id` only).
    pub seq_first: Option<u64>,
    pub seq_last: Option<u64>,
}

/// A frame that carries no trade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    SubscribeAck { detail: String },
    Pong,
    Welcome,
    ShutdownNotice { detail: String },
    Error { detail: String },
    Other { detail: String },
}

impl Control {
    /// The kind's name, as the pure-Python parser spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Control::SubscribeAck { .. } => "subscribe_ack",
            Control::Pong => "pong",
            Control::Welcome => "welcome",
            Control::ShutdownNotice { .. } => "shutdown_notice",
            Control::Error { .. } => "error",
            Control::Other { .. } => "other",
        }
    }

    /// The frame text kept with the control message (empty for `Pong`).
    pub fn detail(&self) -> &str {
        match self {
            Control::SubscribeAck { detail }
            | Control::ShutdownNotice { detail }
            | Control::Error { detail }
            | Control::Other { detail } => detail,
            Control::Pong => "",
            Control::Welcome => "",
        }
    }
}

/// The result of parsing one frame; reuse one across frames to keep the hot path allocation-free.
#[derive(Debug, Default)]
pub struct ParsedFrame {
    pub trades: Vec<ParsedTrade>,
    pub arena: Vec<u8>,
    pub control: Option<Control>,
    /// Why each left-out trade of a multi-trade frame did not parse (`trade 2 field "size" ...`),
    /// in frame order; empty for a frame whose every trade parsed.
    pub rejected: Vec<String>,
    nodes: Vec<json::Node>,
    stack: Vec<u32>,
}

impl ParsedFrame {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.trades.clear();
        self.arena.clear();
        self.control = None;
        self.rejected.clear();
        self.nodes.clear();
        self.stack.clear();
    }

    /// The bytes of one of this frame's text ranges.
    pub fn text(&self, r: &Range<u32>) -> &[u8] {
        self.arena.get(r.start as usize..r.end as usize).unwrap_or(&[])
    }

    /// Trade `i` as a `TradeRef` borrowing from the arena. Panics if `i >= self.trades.len()`.
    pub fn trade(&self, i: usize, venue: Venue, recv_ns: i64) -> TradeRef<'_> {
        let t = &self.trades[i];
        TradeRef {
            venue,
            symbol: self.text(&t.symbol),
            trade_id: self.text(&t.trade_id),
            price: self.text(&t.price),
            qty: self.text(&t.qty),
            side: t.side,
            ts_ns: t.ts_ns,
            recv_ns,
            flags: t.flags,
        }
    }
}

/// Per-symbol facts some venues' frames need to be read exactly.
#[derive(Clone, Debug, Default)]
pub struct ParseContext {
    phemex_spot: HashMap<String, (u8, u8)>,
}

/// Phemex spot price scale: "All spot symbols use the same price scale factor (Ep) = 8".
pub const PHEMEX_SPOT_PRICE_SCALE: u8 = 8;
/// Phemex spot quantity scale when the symbol's base currency `valueScale` is not configured.
pub const PHEMEX_SPOT_DEFAULT_QTY_SCALE: u8 = 8;
/// Largest scale accepted (keeps the decimal text within the log's 255-byte field).
pub const MAX_SCALE: u8 = 30;

impl ParseContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the scales of a Phemex spot symbol (`sBTCUSDT`): price scale (8 for every spot
    /// symbol) and quantity scale (the base currency's `valueScale` from `/public/cfg/v2/products`).
    pub fn set_phemex_spot_scales(&mut self, symbol: &str, price_scale: u8, qty_scale: u8) {
        self.phemex_spot.insert(symbol.to_owned(), (price_scale, qty_scale));
    }

    /// The (price, qty) scales of a Phemex spot symbol; (8, 8) unless configured.
    pub fn phemex_spot_scales(&self, symbol: &str) -> (u8, u8) {
        self.phemex_spot.get(symbol).copied().unwrap_or((PHEMEX_SPOT_PRICE_SCALE, PHEMEX_SPOT_DEFAULT_QTY_SCALE))
    }
}

/// Why a frame could not be parsed; the message says what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

pub(crate) type PResult<T> = Result<T, ParseError>;

pub(crate) fn fail<T>(msg: String) -> PResult<T> {
    Err(ParseError(msg))
}

/// Parses one frame of `venue` into `out` (cleared first). On error `out` is left empty.
pub fn parse_frame(venue: Venue, frame: &[u8], ctx: &ParseContext, out: &mut ParsedFrame) -> Result<(), ParseError> {
    out.clear();
    let r = parse_inner(venue, frame, ctx, out);
    match r {
        Ok(()) if out.trades.is_empty() && !out.rejected.is_empty() => {
            // Every trade of the frame failed: the frame is refused whole, with their reasons.
            let msg = format!("{}: {}", venue.id(), out.rejected.join("; "));
            out.clear();
            Err(ParseError(msg))
        }
        Ok(()) => {
            if out.trades.is_empty() && out.control.is_none() {
                out.clear();
                return Err(ParseError(format!("{}: frame carried neither trades nor a control message", venue.id())));
            }
            Ok(())
        }
        Err(ParseError(msg)) => {
            out.clear();
            Err(ParseError(format!("{}: {msg}", venue.id())))
        }
    }
}

fn parse_inner(venue: Venue, frame: &[u8], ctx: &ParseContext, out: &mut ParsedFrame) -> PResult<()> {
    if shortcut(venue, frame, ctx, out) {
        return Ok(());
    }
    parse_general(venue, frame, ctx, out)
}

/// The per-venue shortcuts for trade frames as each venue sends them (one pass over the bytes,
/// no token tape): true when one took the frame. A shortcut declines anything it does not know
/// to the last byte, and then `out` is left empty for the general parser, which decides.
pub(crate) fn shortcut(venue: Venue, frame: &[u8], ctx: &ParseContext, out: &mut ParsedFrame) -> bool {
    if frame.len() > MAX_FRAME {
        return false; // the general parser refuses it, with the reason
    }
    let (arena, trades) = (&mut out.arena, &mut out.trades);
    let taken = match venue {
        Venue::BinanceSpot | Venue::BinanceUsdm => binance::fast_trade(frame, arena, trades),
        Venue::OkxSpot | Venue::OkxSwap => okx::fast_trades(frame, arena, trades).is_some(),
        Venue::BybitSpot | Venue::BybitLinear => bybit::fast_trades(frame, arena, trades).is_some(),
        Venue::KucoinSpot | Venue::KucoinFutures => kucoin::fast_trade(frame, arena, trades).is_some(),
        Venue::GateSpot => gate::fast_trades(frame, arena, trades, false).is_some(),
        Venue::GateFutures => gate::fast_trades(frame, arena, trades, true).is_some(),
        Venue::PhemexSpot => phemex::fast_trades(frame, arena, trades, ctx, true).is_some(),
        Venue::PhemexPerp => phemex::fast_trades(frame, arena, trades, ctx, false).is_some(),
    };
    if !taken {
        // A shortcut may decline after taking some trades of the frame.
        out.arena.clear();
        out.trades.clear();
    }
    taken
}

/// Every venue's parser, on the token tape of the frame.
pub(crate) fn parse_general(venue: Venue, frame: &[u8], ctx: &ParseContext, out: &mut ParsedFrame) -> PResult<()> {
    if frame.len() > MAX_FRAME {
        return fail(format!("frame of {} bytes is larger than the {MAX_FRAME} accepted", frame.len()));
    }
    if let Err(e) = std::str::from_utf8(frame) {
        return fail(format!("frame is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()));
    }
    if matches!(venue, Venue::OkxSpot | Venue::OkxSwap) && json::trim_ws(frame) == b"pong" {
        out.control = Some(Control::Pong);
        return Ok(());
    }
    let ParsedFrame { trades, arena, control, rejected, nodes, stack } = out;
    json::parse_into(frame, nodes, stack).map_err(ParseError)?;
    let doc = json::Doc { src: frame, nodes };
    let mut sink = Sink { trades, arena, control, rejected, frame };
    match venue {
        Venue::BinanceSpot | Venue::BinanceUsdm => binance::parse(&doc, &mut sink),
        Venue::BybitSpot | Venue::BybitLinear => bybit::parse(&doc, &mut sink),
        Venue::OkxSpot | Venue::OkxSwap => okx::parse(&doc, &mut sink),
        Venue::KucoinSpot | Venue::KucoinFutures => kucoin::parse(&doc, &mut sink),
        Venue::GateSpot => gate::parse(&doc, &mut sink, false),
        Venue::GateFutures => gate::parse(&doc, &mut sink, true),
        Venue::PhemexSpot => phemex::parse(&doc, &mut sink, ctx, true),
        Venue::PhemexPerp => phemex::parse(&doc, &mut sink, ctx, false),
    }
}

/// The frame's text for a `Control` detail: JSON whitespace trimmed, cut to `DETAIL_MAX` bytes on
/// a character boundary.
pub(crate) fn detail_of(frame: &[u8]) -> String {
    let t = json::trim_ws(frame);
    let mut cut = t.len().min(DETAIL_MAX);
    // Back up to a character boundary (a UTF-8 continuation byte is 0b10xx_xxxx).
    while cut > 0 && cut < t.len() && t.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
        cut -= 1;
    }
    String::from_utf8_lossy(t.get(..cut).unwrap_or(&[])).into_owned()
}

/// Names a field in error messages: `"p"` or `trade 3 field "p"`.
#[derive(Clone, Copy)]
pub(crate) struct Field<'s> {
    pub name: &'s str,
    pub idx: Option<usize>,
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.idx {
            Some(i) => write!(f, "trade {i} field \"{}\"", self.name),
            None => write!(f, "field \"{}\"", self.name),
        }
    }
}

pub(crate) fn field(name: &str) -> Field<'_> {
    Field { name, idx: None }
}

pub(crate) fn tfield(name: &str, idx: usize) -> Field<'_> {
    Field { name, idx: Some(idx) }
}

pub(crate) fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 40 {
        let head: String = s.chars().take(40).collect();
        format!("{head:?}...")
    } else {
        format!("{s:?}")
    }
}

/// A required member: `Ok(v)` or an error naming the missing field.
pub(crate) fn need(v: Option<usize>, f: Field<'_>) -> PResult<usize> {
    match v {
        Some(v) => Ok(v),
        None => fail(format!("{f} is missing")),
    }
}

/// Where parsed trades go.
pub(crate) struct Sink<'o> {
    pub trades: &'o mut Vec<ParsedTrade>,
    pub arena: &'o mut Vec<u8>,
    pub control: &'o mut Option<Control>,
    pub rejected: &'o mut Vec<String>,
    pub frame: &'o [u8],
}

impl<'o> Sink<'o> {
    pub fn set_control(&mut self, make: fn(String) -> Control) {
        *self.control = Some(make(detail_of(self.frame)));
    }

    pub fn pong(&mut self) {
        *self.control = Some(Control::Pong);
    }

    pub fn welcome(&mut self) {
        *self.control = Some(Control::Welcome);
    }

    pub fn other(&mut self) {
        self.set_control(|detail| Control::Other { detail });
    }

    /// One trade of a multi-trade frame: when `parse_one` fails, what it added is taken back and
    /// its reason kept in `rejected`, so one bad trade does not cost the frame its good ones.
    pub fn one_of_many(&mut self, parse_one: impl FnOnce(&mut Self) -> PResult<()>) {
        let (arena, trades) = (self.arena.len(), self.trades.len());
        if let Err(ParseError(reason)) = parse_one(self) {
            self.arena.truncate(arena);
            self.trades.truncate(trades);
            self.rejected.push(reason);
        }
    }

    /// A trade array that yielded nothing: `Other` when it was empty; when trades were left out,
    /// `parse_frame` refuses the frame with their reasons.
    pub fn none_taken(&mut self) {
        if self.trades.is_empty() && self.rejected.is_empty() {
            self.other();
        }
    }

    /// The range of the text appended since `start`, checked against the log's length limit.
    pub fn finish(&self, start: usize, f: Field<'_>) -> PResult<Range<u32>> {
        let end = self.arena.len();
        let len = end.saturating_sub(start);
        if len > MAX_TEXT {
            let txt = show(self.arena.get(start..end).unwrap_or(&[]));
            return fail(format!("{f} {txt} is {len} bytes long; at most {MAX_TEXT} are stored"));
        }
        match (u32::try_from(start), u32::try_from(end)) {
            (Ok(a), Ok(b)) => Ok(a..b),
            _ => fail("frame produced more than 4 GiB of trade text".to_owned()),
        }
    }

    /// Copies a scalar's text into the arena (unescaping a string); returns the start offset.
    fn copy_scalar(&mut self, s: &Scalar<'_>, f: Field<'_>) -> PResult<usize> {
        let start = self.arena.len();
        match *s {
            Scalar::Num(raw) | Scalar::Str(raw, false) => self.arena.extend_from_slice(raw),
            Scalar::Str(raw, true) => {
                let arena = &mut *self.arena;
                if let Err(e) = json::unescape_with(raw, false, |b| arena.extend_from_slice(b)) {
                    self.arena.truncate(start);
                    return fail(format!("{f} is a string with a bad escape: {e}"));
                }
            }
        }
        Ok(start)
    }

    /// A required non-empty string (symbol).
    pub fn text(&mut self, doc: &json::Doc<'_>, v: usize, f: Field<'_>) -> PResult<Range<u32>> {
        let s = match doc.scalar(v) {
            Some(s @ Scalar::Str(..)) => s,
            _ => return fail(format!("{f} is {}, not a string", doc.kind_name(v))),
        };
        let start = self.copy_scalar(&s, f)?;
        if self.arena.len() == start {
            return fail(format!("{f} is an empty string"));
        }
        self.finish(start, f)
    }

    /// A price or quantity: a string or a JSON number whose text is a plain decimal.
    pub fn decimal(
        &mut self,
        doc: &json::Doc<'_>,
        v: usize,
        f: Field<'_>,
        allow_negative: bool,
    ) -> PResult<Range<u32>> {
        let s = match doc.scalar(v) {
            Some(s) => s,
            None => return fail(format!("{f} is {}, not a decimal string or number", doc.kind_name(v))),
        };
        let start = self.copy_scalar(&s, f)?;
        let text = self.arena.get(start..).unwrap_or(&[]);
        if !is_plain_decimal(text) {
            let shown = show(text);
            self.arena.truncate(start);
            return fail(format!("{f} {shown} is not a plain decimal (digits with an optional point, no exponent)"));
        }
        if !allow_negative && text.first() == Some(&b'-') {
            let shown = show(text);
            self.arena.truncate(start);
            return fail(format!("{f} {shown} is negative"));
        }
        self.finish(start, f)
    }

    /// A trade id: a non-empty string, or a non-negative JSON integer. Returns the id's range and
    /// its value when the text is a canonical unsigned integer.
    pub fn id(&mut self, doc: &json::Doc<'_>, v: usize, f: Field<'_>) -> PResult<(Range<u32>, Option<u64>)> {
        let s = match doc.scalar(v) {
            Some(Scalar::Num(raw)) if !is_uint_text(raw) => {
                return fail(format!("{f} {} is not a non-negative integer", show(raw)));
            }
            Some(s) => s,
            None => return fail(format!("{f} is {}, not a string or integer id", doc.kind_name(v))),
        };
        let start = self.copy_scalar(&s, f)?;
        if self.arena.len() == start {
            return fail(format!("{f} is an empty string"));
        }
        let r = self.finish(start, f)?;
        let num = canonical_u64(self.arena.get(start..).unwrap_or(&[]));
        Ok((r, num))
    }

    pub fn push(&mut self, t: ParsedTrade) {
        self.trades.push(t);
    }
}

/// Appends the decimal digits of `n`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(i..).unwrap_or(&[]));
}

fn is_uint_text(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
}

/// A required id that must be a canonical unsigned integer (for a sequence).
pub(crate) fn seq_id(r: (Range<u32>, Option<u64>), f: Field<'_>, sink: &Sink<'_>) -> PResult<(Range<u32>, u64)> {
    match r.1 {
        Some(n) => Ok((r.0, n)),
        None => fail(format!(
            "{f} {} is not a canonical unsigned integer (the venue's ids are consecutive integers)",
            show(sink.arena.get(r.0.start as usize..r.0.end as usize).unwrap_or(&[]))
        )),
    }
}

/// An unsigned integer from a JSON integer or a string of digits.
pub(crate) fn uint(doc: &json::Doc<'_>, v: usize, f: Field<'_>) -> PResult<u64> {
    let Some(raw) = doc.scalar_text(v) else {
        return fail(format!("{f} is {}, not an unsigned integer", doc.kind_name(v)));
    };
    match parse_u64(&raw) {
        Some(n) => Ok(n),
        None => fail(format!("{f} {} is not an unsigned integer that fits 64 bits", show(&raw))),
    }
}

/// Converts a non-negative decimal text in a unit of 10^-9 * 10^`unit_digits` seconds to ns:
/// `"1606292218213.4578"` with unit ms (6 digits) is 1606292218213457800. Fraction digits beyond
/// the unit are cut (sub-ns), missing ones padded. `None` if not `[0-9]+(\.[0-9]+)?` or overflow.
pub(crate) fn ns_from_text(text: &[u8], unit_digits: u32) -> Option<i64> {
    let (int, frac) = match text.iter().position(|&b| b == b'.') {
        Some(p) => (text.get(..p)?, Some(text.get(p + 1..)?)),
        None => (text, None),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if let Some(fr) = frac {
        if fr.is_empty() || !fr.iter().all(u8::is_ascii_digit) {
            return None;
        }
    }
    // Leading zeros do not change the value; skip them so that long zero runs do not overflow.
    let int = match int.iter().position(|&b| b != b'0') {
        Some(p) => int.get(p..)?,
        None => &[][..],
    };
    let mut v: i64 = 0;
    for &b in int {
        v = v.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    v = v.checked_mul(10i64.checked_pow(unit_digits)?)?;
    let fr = frac.unwrap_or(&[]);
    let mut f: i64 = 0;
    for i in 0..unit_digits as usize {
        let d = fr.get(i).map_or(0, |&b| i64::from(b - b'0'));
        f = f * 10 + d;
    }
    v.checked_add(f)
}

/// A time field in `unit_digits` (0 ns, 3 us, 6 ms, 9 s) from a JSON number or string.
pub(crate) fn time_ns(doc: &json::Doc<'_>, v: usize, f: Field<'_>, unit_digits: u32) -> PResult<i64> {
    let Some(raw) = doc.scalar_text(v) else {
        return fail(format!("{f} is {}, not a timestamp number or string", doc.kind_name(v)));
    };
    match ns_from_text(&raw, unit_digits) {
        Some(ns) => Ok(ns),
        None => fail(format!(
            "{f} {} is not a non-negative timestamp (digits with an optional fraction) that fits i64 nanoseconds",
            show(&raw)
        )),
    }
}

/// An optional boolean flag: absent or null is false.
pub(crate) fn flag(doc: &json::Doc<'_>, v: Option<usize>, f: Field<'_>) -> PResult<bool> {
    let Some(v) = v else { return Ok(false) };
    match doc.kind(v) {
        json::Kind::True => Ok(true),
        json::Kind::False | json::Kind::Null => Ok(false),
        _ => fail(format!("{f} is {}, not a boolean", doc.kind_name(v))),
    }
}

/// The taker side from `buy`/`sell` text (any ASCII case).
pub(crate) fn side(doc: &json::Doc<'_>, v: usize, f: Field<'_>) -> PResult<Side> {
    match doc.str_cow(v) {
        Some(s) => match Side::parse(&s) {
            Ok(side) => Ok(side),
            Err(_) => fail(format!("{f} {} is not \"buy\" or \"sell\"", show(&s))),
        },
        None => fail(format!("{f} is {}, not a string", doc.kind_name(v))),
    }
}

/// A required string value as bytes (unescaped), for matching envelope fields.
pub(crate) fn str_field<'a>(doc: &json::Doc<'a>, v: usize, f: Field<'_>) -> PResult<std::borrow::Cow<'a, [u8]>> {
    match doc.str_cow(v) {
        Some(s) => Ok(s),
        None => fail(format!("{f} is {}, not a string", doc.kind_name(v))),
    }
}

/// The object at `v`, or an error naming the field.
pub(crate) fn object(doc: &json::Doc<'_>, v: usize, f: Field<'_>) -> PResult<usize> {
    if doc.kind(v) == json::Kind::Obj {
        Ok(v)
    } else {
        fail(format!("{f} is {}, not an object", doc.kind_name(v)))
    }
}

/// The root of the frame, which must be an object.
pub(crate) fn root_object(doc: &json::Doc<'_>) -> PResult<usize> {
    if doc.kind(0) == json::Kind::Obj {
        Ok(0)
    } else {
        fail(format!("frame is {}, not a JSON object", doc.kind_name(0)))
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_conversion_is_exact() {
        assert_eq!(ns_from_text(b"1606292218213.4578", 6), Some(1_606_292_218_213_457_800));
        assert_eq!(ns_from_text(b"1788336082402.208000", 6), Some(1_788_336_082_402_208_000));
        assert_eq!(ns_from_text(b"1619093546958.116", 6), Some(1_619_093_546_958_116_000));
        assert_eq!(ns_from_text(b"1682689046123.0", 6), Some(1_682_689_046_123_000_000));
        assert_eq!(ns_from_text(b"1.1234567891", 6), Some(1_123_456));
        assert_eq!(ns_from_text(b"1751132780368", 6), Some(1_751_132_780_368_000_000));
        assert_eq!(ns_from_text(b"1625342244127840967", 0), Some(1_625_342_244_127_840_967));
        assert_eq!(ns_from_text(b"9223372036854775807", 0), Some(i64::MAX));
        assert_eq!(ns_from_text(b"9223372036854775808", 0), None);
        assert_eq!(ns_from_text(b"9223372036855", 6), None);
        assert_eq!(ns_from_text(b"0000000000000000000000001", 9), Some(1_000_000_000));
        for bad in [&b""[..], b"-1", b"1e5", b"1.", b".5", b"1.2.3", b" 1", b"+1"] {
            assert_eq!(ns_from_text(bad, 6), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn escaped_keys_and_values_are_decoded() {
        let frame = br#"{"e":"trade","E":1,"\u0073":"BTC\u0055SDT","t":5,"p":"1.5","q":"2","T":1000,"m":false}"#;
        let mut out = ParsedFrame::new();
        parse_frame(Venue::BinanceSpot, frame, &ParseContext::new(), &mut out).unwrap();
        assert_eq!(out.trade(0, Venue::BinanceSpot, 0).symbol, b"BTCUSDT");
        // A lone surrogate in a field we keep is an error, elsewhere it is ignored.
        let bad = br#"{"e":"trade","s":"\ud800","t":5,"p":"1.5","q":"2","T":1000,"m":false}"#;
        assert!(parse_frame(Venue::BinanceSpot, bad, &ParseContext::new(), &mut out).is_err());
        let ignored = br#"{"e":"trade","x":"\ud800","s":"A","t":5,"p":"1.5","q":"2","T":1000,"m":false}"#;
        parse_frame(Venue::BinanceSpot, ignored, &ParseContext::new(), &mut out).unwrap();
    }

    #[test]
    fn detail_is_trimmed_and_cut_on_char_boundary() {
        assert_eq!(detail_of(b"  {\"a\":1}\n"), "{\"a\":1}");
        let mut long = String::from("{\"x\":\"");
        while long.len() < DETAIL_MAX + 10 {
            long.push('é');
        }
        long.push_str("\"}");
        let d = detail_of(long.as_bytes());
        assert!(d.len() <= DETAIL_MAX && d.len() >= DETAIL_MAX - 1);
        assert!(long.starts_with(&d));
    }

    /// Parse time per frame of every venue, the shortcut against the general parser:
    /// `cargo test -p pumpwatch-core --release --lib -- --ignored --nocapture parse_throughput`
    /// (`PUMPWATCH_THROUGHPUT_DIR=<dir>` reads `<dir>/<venue>.jsonl`, e.g. the simulator's frames).
    #[test]
    #[ignore = "timing only; meaningful in a release build"]
    fn parse_throughput() {
        let ctx = ParseContext::new();
        let mut out = ParsedFrame::new();
        for v in crate::venue::ALL {
            let frames: Vec<Vec<u8>> = match std::env::var("PUMPWATCH_THROUGHPUT_DIR") {
                Ok(dir) => std::fs::read_to_string(format!("{dir}/{}.jsonl", v.id()))
                    .unwrap()
                    .lines()
                    .take(20_000)
                    .map(|l| l.as_bytes().to_vec())
                    .collect(),
                Err(_) => testutil::venue_frames(v, 20_000, 1_000_000),
            };
            let time = |f: &mut dyn FnMut(&[u8]) -> usize| {
                let mut best = f64::MAX;
                let mut trades = 0;
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    trades = frames.iter().map(|fr| f(std::hint::black_box(fr))).sum::<usize>();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                (best * 1e9 / frames.len() as f64, trades)
            };
            let (fast, n_fast) = time(&mut |fr| {
                out.clear();
                if shortcut(v, fr, &ctx, &mut out) {
                    out.trades.len()
                } else {
                    0
                }
            });
            let (general, n_general) = time(&mut |fr| {
                out.clear();
                parse_general(v, fr, &ctx, &mut out).map_or(0, |_| out.trades.len())
            });
            assert_eq!(n_fast, n_general, "{}", v.id());
            println!(
                "parse {:>14}: shortcut {fast:.0} ns/frame, general parser {general:.0} ns/frame ({:.2} trades/frame)",
                v.id(),
                n_fast as f64 / frames.len() as f64
            );
        }
    }

    /// A frame past `MAX_FRAME` is refused whatever its shape, shortcut or not.
    #[test]
    fn oversized_frames_are_refused_by_every_path() {
        let ctx = ParseContext::new();
        let mut out = ParsedFrame::new();
        let name = "a".repeat(MAX_FRAME);
        let frame = format!(
            r#"{{"stream":"{name}","data":{{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":true}}}}"#
        );
        assert!(!shortcut(Venue::BinanceSpot, frame.as_bytes(), &ctx, &mut out));
        let e = parse_frame(Venue::BinanceSpot, frame.as_bytes(), &ctx, &mut out).unwrap_err();
        assert!(e.0.contains("larger than"), "{e}");
        let small = frame.replacen(&name, "btcusdt@trade", 1);
        assert!(shortcut(Venue::BinanceSpot, small.as_bytes(), &ctx, &mut out));
    }

    #[test]
    fn invalid_utf8_and_garbage_are_errors() {
        let mut out = ParsedFrame::new();
        let ctx = ParseContext::new();
        for v in crate::venue::ALL {
            for f in [&b"\xff"[..], b"", b"   ", b"{\"a\":\"\xc3\"}", b"nonsense", b"{}", b"[]", b"null"] {
                assert!(parse_frame(v, f, &ctx, &mut out).is_err(), "{} {:?}", v.id(), f);
            }
        }
    }
}

#[cfg(test)]
mod one_bad_trade {
    //! A frame of several trades with one bad trade keeps its good ones (issue 11 item 2).
    use super::*;

    /// Frames of three trades whose middle one is bad, per venue with multi-trade frames.
    const FRAMES: &[(Venue, &str, &str)] = &[
        (
            Venue::BybitLinear,
            r#"{"topic":"publicTrade.ETHUSDT","type":"snapshot","ts":1,"data":[{"T":1786310820346,"s":"ETHUSDT","S":"Buy","v":"0.01","p":"1922.50","i":"a"},{"T":1786310820346,"s":"ETHUSDT","S":"Up","v":"1.30","p":"1922.50","i":"b"},{"T":1786310820346,"s":"ETHUSDT","S":"Sell","v":"0.10","p":"1922.50","i":"c"}]}"#,
            "trade 1 field \"S\"",
        ),
        (
            Venue::OkxSwap,
            r#"{"arg":{"channel":"trades-all","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP","tradeId":"10","px":"5.1","sz":"1","side":"sell","ts":"1652459215150"},{"instId":"BTC-USDT-SWAP","tradeId":"11","px":"5.1","sz":"-1","side":"sell","ts":"1652459215150"},{"instId":"BTC-USDT-SWAP","tradeId":"12","px":"5.1","sz":"2","side":"buy","ts":"1652459215150"}]}"#,
            "trade 1 field \"sz\"",
        ),
        (
            Venue::GateFutures,
            r#"{"time":1,"channel":"futures.trades","event":"update","result":[{"id":7,"size":-2,"create_time_ms":1788347173767,"price":"76520","contract":"SOL_USDT"},{"id":8,"size":0,"create_time_ms":1788347173767,"price":"76520","contract":"SOL_USDT"},{"id":9,"size":"0.25","create_time_ms":1788347173767,"price":"76520","contract":"SOL_USDT"}]}"#,
            "trade 1 field \"size\" \"0\" is zero",
        ),
        (
            Venue::PhemexPerp,
            r#"{"sequence":1,"symbol":"BTCUSDT","trades_p":[[1669198793402790477,"Buy","16545.6","0.7"],[1669198793402790478,"Buy",[1],"0.7"],[1669198793402790479,"Sell","16545.5","0.1"]],"type":"incremental"}"#,
            "trade 1 field \"price\"",
        ),
    ];

    #[test]
    fn the_good_trades_of_a_frame_stand_and_the_bad_one_is_named() {
        let ctx = ParseContext::new();
        let mut out = ParsedFrame::new();
        for &(venue, frame, why) in FRAMES {
            parse_frame(venue, frame.as_bytes(), &ctx, &mut out).unwrap_or_else(|e| panic!("{}: {e}", venue.id()));
            assert_eq!(out.trades.len(), 2, "{}", venue.id());
            assert_eq!(out.rejected.len(), 1, "{}", venue.id());
            assert!(out.rejected[0].starts_with(why), "{}: {}", venue.id(), out.rejected[0]);
            assert!(out.control.is_none());
            // The shortcut declined: it never leaves a trade out.
            let mut fast = ParsedFrame::new();
            assert!(!shortcut(venue, frame.as_bytes(), &ctx, &mut fast), "{}", venue.id());
        }
        // Gate: the left-out trade's text does not linger in the arena or shift the others.
        parse_frame(Venue::GateFutures, FRAMES[2].1.as_bytes(), &ctx, &mut out).unwrap();
        let t = out.trade(1, Venue::GateFutures, 0);
        assert_eq!((t.trade_id, t.qty, t.side), (&b"9"[..], &b"0.25"[..], Side::Buy));
    }

    #[test]
    fn a_frame_whose_every_trade_fails_is_refused_with_every_reason() {
        let ctx = ParseContext::new();
        let mut out = ParsedFrame::new();
        let frame = br#"{"time":1,"channel":"futures.trades","event":"update","result":[{"id":8,"size":0,"create_time_ms":1,"price":"1","contract":"X"},{"id":9,"size":"-0","create_time_ms":1,"price":"1","contract":"X"}]}"#;
        let e = parse_frame(Venue::GateFutures, frame, &ctx, &mut out).unwrap_err();
        assert!(e.0.starts_with("gate-futures: trade 0 field \"size\""), "{e}");
        assert!(e.0.contains("; trade 1 field \"size\""), "{e}");
        assert!(out.trades.is_empty() && out.rejected.is_empty() && out.control.is_none());
    }
}

#[cfg(test)]
mod gate_system_notice {
    use super::*;

    #[test]
    fn a_futures_upgrade_notice_asks_for_a_rotation() {
        // Gate futures WS doc changelog (coincise docs/gateio, 2026): a service upgrade notice.
        let notice = br#"{"time":1782378978,"time_ms":1782378978107,"channel":"futures.system","event":"update","result":{"type":"upgrade","msg":"The connection will soon be closed for a service upgrade. Please reconnect."}}"#;
        let ctx = ParseContext::new();
        let mut out = ParsedFrame::new();
        parse_frame(Venue::GateFutures, notice, &ctx, &mut out).unwrap();
        assert_eq!(out.control.as_ref().map(|c| c.kind()), Some("shutdown_notice"));
        let other = br#"{"time":1,"channel":"futures.system","event":"update","result":{"type":"invalid_sbe_schema_id","msg":"x"}}"#;
        parse_frame(Venue::GateFutures, other, &ctx, &mut out).unwrap();
        assert_eq!(out.control.as_ref().map(|c| c.kind()), Some("other"));
    }
}
