//! Record payloads of the segment log: trades, markers and quarantined raw frames.
//!
//! The byte layout is specified in docs/FORMAT.md and is shared with the pure-Python path
//! (`pumpwatch.purepy`): change one, change both, and bump `log::FORMAT_VERSION`.
//! Every multi-byte integer is little-endian.

use crate::decimal;
use crate::venue::Venue;
use crate::{Error, Result};

pub const KIND_TRADE: u8 = 1;
pub const KIND_MARKER: u8 = 2;
pub const KIND_QUARANTINE: u8 = 3;

/// Frame header: payload length then CRC-32C of the payload (the Kafka rule).
pub const FRAME_HEADER: usize = 8;
/// Largest payload a frame may claim; a larger length is damage, not data.
pub const MAX_PAYLOAD: usize = 16 << 20;

pub const TRADE_FIXED: usize = 33;
pub const MARKER_FIXED: usize = 32;
pub const QUARANTINE_FIXED: usize = 16;

/// Trade flags (u16). Part of the format.
pub mod flags {
    /// Binance USDⓈ-M / Bybit retail-price-improvement fill.
    pub const RPI: u16 = 1;
    pub const INSURANCE_FUND: u16 = 2;
    pub const ADL: u16 = 4;
    /// Gate `is_internal` (insurance / ADL takeover).
    pub const INTERNAL: u16 = 8;
    pub const BLOCK_TRADE: u16 = 16;
    /// Consumes a trade id but is not a trade (Binance USDⓈ-M `X=NA`).
    pub const NON_TRADE: u16 = 32;
    /// Came from a REST backfill rather than the live stream.
    pub const BACKFILL: u16 = 64;
    /// Came from a snapshot sent on (re)subscribe (Phemex).
    pub const SNAPSHOT: u16 = 128;
    /// One record for several trades, as the venue aggregated them (Binance USDⓈ-M `aggTrades`
    /// rows filling a hole without an API key: the id is `<f>-<l>`, the qty their sum).
    pub const AGGREGATED: u16 = 256;
    /// A trade whose type field has a value PumpWatch does not know (Binance USDⓈ-M `X` other
    /// than MARKET/RPI/INSURANCE_FUND/ADL/NA): stored as sent, marked so it can be told apart.
    pub const UNKNOWN_TYPE: u16 = 512;
    pub const ALL: u16 = 1023;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Side {
    Buy = 1,
    Sell = 2,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
    pub fn from_code(c: u8) -> Option<Side> {
        match c {
            1 => Some(Side::Buy),
            2 => Some(Side::Sell),
            _ => None,
        }
    }
    /// The aggressor (taker) side as text: `buy` or `sell`, case-insensitive.
    pub fn parse(s: &[u8]) -> Result<Side> {
        if s.eq_ignore_ascii_case(b"buy") {
            Ok(Side::Buy)
        } else if s.eq_ignore_ascii_case(b"sell") {
            Ok(Side::Sell)
        } else {
            Err(Error::InvalidInput(format!(
                "side {:?} is not \"buy\" or \"sell\" (the taker's side)",
                String::from_utf8_lossy(s)
            )))
        }
    }
}

/// A normalized trade, owning its text fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Trade {
    pub venue: Venue,
    pub symbol: String,
    pub trade_id: String,
    pub price: String,
    pub qty: String,
    pub side: Side,
    pub ts_ns: i64,
    pub recv_ns: i64,
    pub flags: u16,
}

/// A trade whose text fields borrow from a frame, a column buffer or the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TradeRef<'a> {
    pub venue: Venue,
    pub symbol: &'a [u8],
    pub trade_id: &'a [u8],
    pub price: &'a [u8],
    pub qty: &'a [u8],
    pub side: Side,
    pub ts_ns: i64,
    pub recv_ns: i64,
    pub flags: u16,
}

impl Trade {
    pub fn as_ref(&self) -> TradeRef<'_> {
        TradeRef {
            venue: self.venue,
            symbol: self.symbol.as_bytes(),
            trade_id: self.trade_id.as_bytes(),
            price: self.price.as_bytes(),
            qty: self.qty.as_bytes(),
            side: self.side,
            ts_ns: self.ts_ns,
            recv_ns: self.recv_ns,
            flags: self.flags,
        }
    }

    /// Builds a trade, checking every field the way the log will.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        venue: &str,
        symbol: &str,
        trade_id: &str,
        price: &str,
        qty: &str,
        side: &str,
        ts_ns: i64,
        recv_ns: i64,
        flags: u16,
    ) -> Result<Trade> {
        let t = Trade {
            venue: Venue::parse(venue)?,
            symbol: symbol.to_owned(),
            trade_id: trade_id.to_owned(),
            price: price.to_owned(),
            qty: qty.to_owned(),
            side: Side::parse(side.as_bytes())?,
            ts_ns,
            recv_ns,
            flags,
        };
        t.as_ref().check()?;
        Ok(t)
    }
}

impl<'a> TradeRef<'a> {
    /// Validates what the log requires: exact decimals, bounded text, known flags.
    pub fn check(&self) -> Result<()> {
        decimal::check("price", self.price)?;
        decimal::check("qty", self.qty)?;
        check_text("symbol", self.symbol, true)?;
        check_text("trade_id", self.trade_id, true)?;
        if self.flags & !flags::ALL != 0 {
            return Err(Error::InvalidInput(format!(
                "flags {:#x} has bits no PumpWatch flag uses (known: 0..=0x3ff)",
                self.flags
            )));
        }
        Ok(())
    }

    pub fn to_owned(&self) -> Trade {
        // Text was validated as UTF-8 when it entered the store; lossy keeps a damaged record
        // readable instead of panicking.
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Trade {
            venue: self.venue,
            symbol: s(self.symbol),
            trade_id: s(self.trade_id),
            price: s(self.price),
            qty: s(self.qty),
            side: self.side,
            ts_ns: self.ts_ns,
            recv_ns: self.recv_ns,
            flags: self.flags,
        }
    }

    /// The numeric fast path of the trade id, when the id is a canonical integer.
    pub fn trade_id_num(&self) -> Option<u64> {
        decimal::canonical_u64(self.trade_id)
    }

    pub fn payload_len(&self) -> usize {
        let id_len = if self.trade_id_num().is_some() { 0 } else { self.trade_id.len() };
        TRADE_FIXED + self.symbol.len() + self.price.len() + self.qty.len() + id_len
    }

    /// What `check` decides, without building a message: the hot path's test, on every trade.
    #[inline]
    pub fn is_storable(&self) -> bool {
        #[inline]
        fn text_ok(s: &[u8]) -> bool {
            !s.is_empty() && s.len() <= u8::MAX as usize && (s.is_ascii() || std::str::from_utf8(s).is_ok())
        }
        self.price.len() <= u8::MAX as usize
            && self.qty.len() <= u8::MAX as usize
            && decimal::is_plain_decimal(self.price)
            && decimal::is_plain_decimal(self.qty)
            && text_ok(self.symbol)
            && text_ok(self.trade_id)
            && self.flags & !flags::ALL == 0
    }

    /// Appends the trade's payload (no frame header) to `out`. Call `check` first.
    #[inline]
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        let (id_num, id_text): (u64, &[u8]) = match self.trade_id_num() {
            Some(n) => (n, b""),
            None => (0, self.trade_id),
        };
        let mut fixed = [0u8; TRADE_FIXED];
        fixed[0] = KIND_TRADE;
        fixed[1] = self.venue.code();
        fixed[2] = self.side as u8;
        fixed[3] = self.symbol.len() as u8;
        fixed[4..6].copy_from_slice(&self.flags.to_le_bytes());
        fixed[6] = self.price.len() as u8;
        fixed[7] = self.qty.len() as u8;
        fixed[8..16].copy_from_slice(&self.ts_ns.to_le_bytes());
        fixed[16..24].copy_from_slice(&self.recv_ns.to_le_bytes());
        fixed[24..32].copy_from_slice(&id_num.to_le_bytes());
        fixed[32] = id_text.len() as u8;
        out.reserve(TRADE_FIXED + self.symbol.len() + self.price.len() + self.qty.len() + id_text.len());
        out.extend_from_slice(&fixed);
        out.extend_from_slice(self.symbol);
        out.extend_from_slice(self.price);
        out.extend_from_slice(self.qty);
        out.extend_from_slice(id_text);
    }

    /// Appends the trade as one framed record (`len | crc32c | payload`). Call `check` first.
    #[inline]
    pub fn frame_into(&self, out: &mut Vec<u8>) {
        frame_into(out, |o| self.encode_payload(o));
    }
}

pub(crate) fn check_text(field: &str, s: &[u8], required: bool) -> Result<()> {
    if required && s.is_empty() {
        return Err(Error::InvalidInput(format!("{field} is empty")));
    }
    if s.len() > u8::MAX as usize {
        return Err(Error::InvalidInput(format!("{field} is {} bytes long; at most 255 are stored", s.len())));
    }
    if std::str::from_utf8(s).is_err() {
        return Err(Error::InvalidInput(format!("{field} is not valid UTF-8")));
    }
    Ok(())
}

/// Marker kinds. Part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MarkerKind {
    ConnectionUp = 1,
    ConnectionDown = 2,
    GapFound = 3,
    GapFilled = 4,
    GapUnfillable = 5,
    SubscriptionSet = 6,
    RecorderStart = 7,
    RecorderStop = 8,
}

pub const MARKER_KINDS: [MarkerKind; 8] = [
    MarkerKind::ConnectionUp,
    MarkerKind::ConnectionDown,
    MarkerKind::GapFound,
    MarkerKind::GapFilled,
    MarkerKind::GapUnfillable,
    MarkerKind::SubscriptionSet,
    MarkerKind::RecorderStart,
    MarkerKind::RecorderStop,
];

impl MarkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MarkerKind::ConnectionUp => "connection_up",
            MarkerKind::ConnectionDown => "connection_down",
            MarkerKind::GapFound => "gap_found",
            MarkerKind::GapFilled => "gap_filled",
            MarkerKind::GapUnfillable => "gap_unfillable",
            MarkerKind::SubscriptionSet => "subscription_set",
            MarkerKind::RecorderStart => "recorder_start",
            MarkerKind::RecorderStop => "recorder_stop",
        }
    }
    pub fn from_code(c: u8) -> Option<MarkerKind> {
        MARKER_KINDS.get((c as usize).wrapping_sub(1)).copied()
    }
    pub fn parse(s: &str) -> Result<MarkerKind> {
        MARKER_KINDS.iter().copied().find(|k| k.as_str() == s).ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown marker kind {s:?}; the kinds are: {}",
                MARKER_KINDS.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// A fact about coverage: a connection went up or down, a gap was found, filled or could not be.
/// `from_*`/`to_*` bound the span it speaks of (0 / empty when not known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub kind: MarkerKind,
    pub venue: Option<Venue>,
    pub symbol: String,
    pub ts_ns: i64,
    pub from_ts_ns: i64,
    pub to_ts_ns: i64,
    pub from_id: String,
    pub to_id: String,
    pub detail: String,
}

impl Marker {
    pub fn check(&self) -> Result<()> {
        check_text("marker symbol", self.symbol.as_bytes(), false)?;
        check_text("marker from_id", self.from_id.as_bytes(), false)?;
        check_text("marker to_id", self.to_id.as_bytes(), false)?;
        if self.detail.len() > u16::MAX as usize {
            return Err(Error::InvalidInput(format!(
                "marker detail is {} bytes; at most 65535 are stored",
                self.detail.len()
            )));
        }
        Ok(())
    }

    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        out.push(KIND_MARKER);
        out.push(self.venue.map_or(0, Venue::code));
        out.push(self.kind as u8);
        out.push(self.symbol.len() as u8);
        out.push(self.from_id.len() as u8);
        out.push(self.to_id.len() as u8);
        out.extend_from_slice(&(self.detail.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.ts_ns.to_le_bytes());
        out.extend_from_slice(&self.from_ts_ns.to_le_bytes());
        out.extend_from_slice(&self.to_ts_ns.to_le_bytes());
        out.extend_from_slice(self.symbol.as_bytes());
        out.extend_from_slice(self.from_id.as_bytes());
        out.extend_from_slice(self.to_id.as_bytes());
        out.extend_from_slice(self.detail.as_bytes());
    }
}

/// A frame that could not be parsed, kept raw so that nothing that reached us is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub venue: Option<Venue>,
    pub recv_ns: i64,
    pub reason: String,
    pub raw: Vec<u8>,
}

impl Quarantined {
    /// The raw bytes are cut (and the cut said in the reason) so one frame fits one record.
    pub fn new(venue: Option<Venue>, recv_ns: i64, reason: &str, raw: &[u8]) -> Quarantined {
        let limit = MAX_PAYLOAD - QUARANTINE_FIXED - u16::MAX as usize;
        let mut reason = reason.to_owned();
        let raw = if raw.len() > limit {
            reason.push_str(&format!(" (frame of {} bytes cut to {limit})", raw.len()));
            &raw[..limit]
        } else {
            raw
        };
        truncate_utf8(&mut reason, u16::MAX as usize);
        Quarantined { venue, recv_ns, reason, raw: raw.to_vec() }
    }

    pub fn check(&self) -> Result<()> {
        if self.reason.len() > u16::MAX as usize || QUARANTINE_FIXED + self.reason.len() + self.raw.len() > MAX_PAYLOAD
        {
            return Err(Error::InvalidInput(format!(
                "quarantined frame of {} bytes with a reason of {} bytes does not fit one record; build it with Quarantined::new",
                self.raw.len(),
                self.reason.len()
            )));
        }
        Ok(())
    }

    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        out.push(KIND_QUARANTINE);
        out.push(self.venue.map_or(0, Venue::code));
        out.extend_from_slice(&(self.reason.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.raw.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.recv_ns.to_le_bytes());
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(&self.raw);
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// One decoded record, borrowing from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Trade(TradeRef<'a>),
    Marker(Marker),
    Quarantined { venue: Option<Venue>, recv_ns: i64, reason: &'a [u8], raw: &'a [u8] },
}

fn le_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    le_i64(b, at) as u64
}

/// Reads only the kind and, for a trade, its exchange time: what a window scan needs before
/// deciding whether to decode the rest.
#[inline]
pub fn peek_trade_ts(payload: &[u8]) -> Option<i64> {
    if payload.len() >= TRADE_FIXED && payload[0] == KIND_TRADE {
        Some(le_i64(payload, 8))
    } else {
        None
    }
}

/// Decodes a payload whose CRC already matched. A payload that is well framed but internally
/// inconsistent is an error (the caller reports it as damage), never a panic.
pub fn decode(p: &[u8]) -> std::result::Result<Record<'_>, &'static str> {
    match p.first() {
        Some(&KIND_TRADE) => decode_trade(p).map(Record::Trade),
        Some(&KIND_MARKER) => {
            if p.len() < MARKER_FIXED {
                return Err("[size] marker record shorter than its fixed part");
            }
            let kind = MarkerKind::from_code(p[2]).ok_or("[marker-kind] unknown marker kind code")?;
            let venue =
                if p[1] == 0 { None } else { Some(Venue::from_code(p[1]).ok_or("[venue] unknown venue code")?) };
            let (ls, lf, lt) = (p[3] as usize, p[4] as usize, p[5] as usize);
            let ld = u16::from_le_bytes([p[6], p[7]]) as usize;
            if p.len() != MARKER_FIXED + ls + lf + lt + ld {
                return Err("[size] marker record length does not match its fields");
            }
            let mut at = MARKER_FIXED;
            // Text that is not UTF-8 breaks a rule of the format: damage, never handed on.
            let mut take = |n: usize| {
                let s = std::str::from_utf8(&p[at..at + n]).map(str::to_owned);
                at += n;
                s.map_err(|_| "[text] marker text is not UTF-8")
            };
            let symbol = take(ls)?;
            let from_id = take(lf)?;
            let to_id = take(lt)?;
            let detail = take(ld)?;
            Ok(Record::Marker(Marker {
                kind,
                venue,
                symbol,
                ts_ns: le_i64(p, 8),
                from_ts_ns: le_i64(p, 16),
                to_ts_ns: le_i64(p, 24),
                from_id,
                to_id,
                detail,
            }))
        }
        Some(&KIND_QUARANTINE) => {
            if p.len() < QUARANTINE_FIXED {
                return Err("[size] quarantine record shorter than its fixed part");
            }
            let venue =
                if p[1] == 0 { None } else { Some(Venue::from_code(p[1]).ok_or("[venue] unknown venue code")?) };
            let lr = u16::from_le_bytes([p[2], p[3]]) as usize;
            let lraw = u32::from_le_bytes([p[4], p[5], p[6], p[7]]) as usize;
            if p.len() != QUARANTINE_FIXED + lr + lraw {
                return Err("[size] quarantine record length does not match its fields");
            }
            if std::str::from_utf8(&p[QUARANTINE_FIXED..QUARANTINE_FIXED + lr]).is_err() {
                return Err("[text] quarantine reason is not UTF-8");
            }
            Ok(Record::Quarantined {
                venue,
                recv_ns: le_i64(p, 8),
                reason: &p[QUARANTINE_FIXED..QUARANTINE_FIXED + lr],
                raw: &p[QUARANTINE_FIXED + lr..],
            })
        }
        _ => Err("[kind] unknown record kind"),
    }
}

#[inline]
pub fn decode_trade(p: &[u8]) -> std::result::Result<TradeRef<'_>, &'static str> {
    if p.len() < TRADE_FIXED || p[0] != KIND_TRADE {
        return Err("[size] trade record shorter than its fixed part");
    }
    let venue = Venue::from_code(p[1]).ok_or("[venue] unknown venue code")?;
    let side = Side::from_code(p[2]).ok_or("[side] unknown side code")?;
    let (ls, lp, lq, li) = (p[3] as usize, p[6] as usize, p[7] as usize, p[32] as usize);
    if p.len() != TRADE_FIXED + ls + lp + lq + li {
        return Err("[size] trade record length does not match its fields");
    }
    let symbol = &p[TRADE_FIXED..TRADE_FIXED + ls];
    let price = &p[TRADE_FIXED + ls..TRADE_FIXED + ls + lp];
    let qty = &p[TRADE_FIXED + ls + lp..TRADE_FIXED + ls + lp + lq];
    let id_text = &p[TRADE_FIXED + ls + lp + lq..];
    Ok(TradeRef {
        venue,
        symbol,
        // A numeric id is stored as its number only; the caller renders it (see `render_id`).
        trade_id: id_text,
        price,
        qty,
        side,
        ts_ns: le_i64(p, 8),
        recv_ns: le_i64(p, 16),
        flags: u16::from_le_bytes([p[4], p[5]]),
    })
}

/// The field rules of a decoded trade (docs/FORMAT.md, "Validity rules"): what ingest checks
/// before writing, checked again on reading so that a frame breaking one (its CRC fine) is
/// damage, never a row. `decode_trade` checks only the layout; this, the contents.
#[inline]
pub fn check_trade_fields(t: &TradeRef<'_>) -> std::result::Result<(), &'static str> {
    #[inline]
    fn utf8(s: &[u8]) -> bool {
        s.is_ascii() || std::str::from_utf8(s).is_ok()
    }
    if t.flags & !flags::ALL != 0 {
        return Err("[flags] trade flags have bits no PumpWatch flag uses");
    }
    if t.symbol.is_empty() {
        return Err("[symbol] trade symbol is empty");
    }
    if !utf8(t.symbol) {
        return Err("[symbol] trade symbol is not UTF-8");
    }
    if !decimal::is_plain_decimal(t.price) {
        return Err("[price] trade price is not a plain decimal");
    }
    if !decimal::is_plain_decimal(t.qty) {
        return Err("[qty] trade quantity is not a plain decimal");
    }
    if !utf8(t.trade_id) {
        return Err("[trade-id] trade id text is not UTF-8");
    }
    Ok(())
}

/// The stored numeric id of a trade payload (meaningful when its id text is empty).
#[inline]
pub fn trade_id_num(p: &[u8]) -> u64 {
    le_u64(p, 24)
}

/// Writes a trade's id as text: the stored text, or the decimal of the stored number.
#[inline]
pub fn render_id(payload: &[u8], id_text: &[u8], out: &mut Vec<u8>) {
    if id_text.is_empty() {
        let mut buf = [0u8; 20];
        let mut n = trade_id_num(payload);
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&buf[i..]);
    } else {
        out.extend_from_slice(id_text);
    }
}

/// Decodes a trade payload into an owned `Trade` with its id rendered.
pub fn decode_trade_owned(p: &[u8]) -> std::result::Result<Trade, &'static str> {
    let t = decode_trade(p)?;
    let mut id = Vec::new();
    render_id(p, t.trade_id, &mut id);
    let mut owned = t.to_owned();
    owned.trade_id = String::from_utf8_lossy(&id).into_owned();
    Ok(owned)
}

/// CRC-32C of a record payload, as the `crc32c` crate computes it. Payloads are short (a trade
/// is about 80 bytes) and start anywhere: the crate aligns its 8-byte steps with byte steps first
/// (each as slow as an 8-byte one); unaligned 8-byte loads need no such start, which on the
/// ingest path, where every trade is checksummed, takes about half the time.
#[inline]
pub fn payload_crc(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc32c_sse42(data) };
    }
    crc32c::crc32c(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut crc = u64::from(!0u32);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(b));
    }
    let mut crc = crc as u32;
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&rest[..4]);
        crc = _mm_crc32_u32(crc, u32::from_le_bytes(b));
        rest = &rest[4..];
    }
    for &b in rest {
        crc = _mm_crc32_u8(crc, b);
    }
    !crc
}

/// `crc32c::crc32c_append(crc, &v.to_le_bytes())`: one step of a seal's chain, which folds one
/// record's CRC per record on the ingest path and over a whole segment at recovery, where the
/// crate's call (its dispatch, its alignment steps) cost more than the step itself.
#[inline]
pub fn crc_append_u32(crc: u32, v: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc32c_u32_sse42(crc, v) };
    }
    crc32c::crc32c_append(crc, &v.to_le_bytes())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_u32_sse42(crc: u32, v: u32) -> u32 {
    !std::arch::x86_64::_mm_crc32_u32(!crc, v)
}

/// Appends one framed record (`len | crc32c | payload`) built by `fill` to `out`.
#[inline]
pub fn frame_into(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    fill(out);
    let len = out.len() - start - FRAME_HEADER;
    let crc = payload_crc(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trade {
        Trade::new(
            "binance-usdm",
            "BTCUSDT",
            "8121136411",
            "83680.00",
            "0.001",
            "sell",
            1790370834848000000,
            1790370834900000000,
            flags::RPI,
        )
        .unwrap()
    }

    #[test]
    fn trade_round_trips_with_numeric_and_text_ids() {
        for id in ["8121136411", "0", "6085c09769bc506996295e36", "a519448f-56e5-58e6-90a1-004086e0e530", "007"] {
            let mut t = sample();
            t.trade_id = id.into();
            let mut buf = Vec::new();
            t.as_ref().encode_payload(&mut buf);
            assert_eq!(buf.len(), t.as_ref().payload_len());
            let back = decode_trade_owned(&buf).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn marker_and_quarantine_round_trip() {
        let m = Marker {
            kind: MarkerKind::GapUnfillable,
            venue: Some(Venue::OkxSwap),
            symbol: "BTC-USDT-SWAP".into(),
            ts_ns: 5,
            from_ts_ns: 1,
            to_ts_ns: 2,
            from_id: "10".into(),
            to_id: "20".into(),
            detail: "REST reach exceeded".into(),
        };
        let mut buf = Vec::new();
        m.encode_payload(&mut buf);
        assert_eq!(decode(&buf).unwrap(), Record::Marker(m));
        let q = Quarantined::new(None, 7, "bad json", b"{\"x\":");
        let mut buf = Vec::new();
        q.encode_payload(&mut buf);
        match decode(&buf).unwrap() {
            Record::Quarantined { venue, recv_ns, reason, raw } => {
                assert_eq!((venue, recv_ns, reason, raw), (None, 7, &b"bad json"[..], &b"{\"x\":"[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inconsistent_payloads_are_errors_not_panics() {
        let mut buf = Vec::new();
        sample().as_ref().encode_payload(&mut buf);
        for cut in 0..buf.len() {
            let _ = decode(&buf[..cut]);
        }
        for i in 0..buf.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = buf.clone();
                b[i] = v;
                let _ = decode(&b);
            }
        }
    }

    #[test]
    fn payload_crc_is_crc32c() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..9 {
            for end in start..data.len() {
                assert_eq!(payload_crc(&data[start..end]), crc32c::crc32c(&data[start..end]), "{start}..{end}");
            }
        }
        assert_eq!(payload_crc(b"123456789"), 0xe306_9283); // the CRC-32C check value
    }

    #[test]
    fn crc_append_u32_is_the_crates_append_of_four_bytes() {
        let mut chain = 0u32;
        for i in 0..10_000u32 {
            let v = i.wrapping_mul(2_654_435_761) ^ (i << 7);
            let next = crc_append_u32(chain, v);
            assert_eq!(next, crc32c::crc32c_append(chain, &v.to_le_bytes()), "step {i}");
            chain = next;
        }
        assert_eq!(crc_append_u32(0, 0), crc32c::crc32c(&[0, 0, 0, 0]));
    }

    #[test]
    fn check_rejects_bad_fields() {
        assert!(Trade::new("binance-spot", "BTCUSDT", "1", "1e-7", "1", "buy", 0, 0, 0).is_err());
        assert!(Trade::new("binance-spot", "BTCUSDT", "1", "1", "1", "taker", 0, 0, 0).is_err());
        assert!(Trade::new("nasdaq", "BTCUSDT", "1", "1", "1", "buy", 0, 0, 0).is_err());
        assert!(Trade::new("binance-spot", "", "1", "1", "1", "buy", 0, 0, 0).is_err());
        assert!(Trade::new("binance-spot", "X", "1", "1", "1", "buy", 0, 0, 0x400).is_err());
        // 0x100 AGGREGATED and 0x200 UNKNOWN_TYPE are flags
    }
}
