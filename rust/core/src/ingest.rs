//! The ingest path: frame bytes in, trades on disk. Parse (one parser per venue), drop
//! duplicates (redundant connections and backfills overlap), check the per-symbol id sequence
//! where the venue has one, append to the log and the ring, and tell the caller what to act on:
//! gaps to backfill, control frames, frames that could not be parsed (kept raw in the log).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use crate::log::LogWriter;
use crate::parse::{self, ParseContext, ParsedFrame};
use crate::record::{frame_into, Marker, MarkerKind, Quarantined, TradeRef};
use crate::venue::Venue;
use crate::Result;

/// Whether a venue's trade ids form a per-symbol consecutive sequence (docs/VENUES.md): the ones
/// where a hole can be seen and backfilled by id.
pub fn has_id_sequence(v: Venue) -> bool {
    matches!(
        v,
        Venue::BinanceSpot
            | Venue::BinanceUsdm
            | Venue::OkxSpot
            | Venue::OkxSwap
            | Venue::GateSpot
            | Venue::GateFutures
    )
}

/// The ids `<first>-<last>` an AGGREGATED record covers (Binance USDⓈ-M `aggTrades` `f..l`):
/// the record takes that range of the id sequence, as an OKX trade with a `count` does.
pub fn aggregated_ids(trade_id: &[u8]) -> Option<(u64, u64)> {
    let dash = trade_id.iter().position(|&b| b == b'-')?;
    let first = crate::decimal::canonical_u64(trade_id.get(..dash)?)?;
    let last = crate::decimal::canonical_u64(trade_id.get(dash + 1..)?)?;
    (first <= last).then_some((first, last))
}

/// The quarantine reason of a frame some of whose trades were left out (`parse::ParsedFrame::rejected`).
pub fn rejected_reason(venue: Venue, rejected: &[String], taken: usize) -> String {
    format!(
        "{}: {} of {} trades left out (the others are stored): {}",
        venue.id(),
        rejected.len(),
        rejected.len() + taken,
        rejected.join("; ")
    )
}

/// Something the caller must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestEvent {
    /// Ids `first_missing..=last_missing` of `symbol` never arrived: backfill them.
    Gap { venue: Venue, symbol: String, first_missing: u64, last_missing: u64, from_ts_ns: i64, to_ts_ns: i64 },
    /// A gap is now complete (every missing id arrived, e.g. from a backfill).
    GapFilled { venue: Venue, symbol: String, first_missing: u64, last_missing: u64 },
    /// A frame that carries no trade: ack, pong, welcome, shutdown notice, error...
    Control { venue: Venue, kind: &'static str, detail: String },
    /// A frame that could not be parsed; it is in the log as a quarantined record.
    Quarantined { venue: Venue, reason: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub frames: u64,
    pub trades: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    pub gaps: u64,
    pub gaps_filled: u64,
}

/// Ids recently seen on a symbol without an id sequence: the window a reconnect's REST
/// "recent trades" or a redundant connection can overlap. Keys are `id_key` hashes already, so
/// the set hashes them no further.
struct RecentIds {
    order: VecDeque<u64>,
    set: HashSet<u64, BuildHasherDefault<PreHashed>>,
}

impl RecentIds {
    fn new() -> RecentIds {
        RecentIds { order: VecDeque::new(), set: HashSet::default() }
    }

    /// True when `key` is new (and remembers it).
    fn insert(&mut self, key: u64, cap: usize) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

struct SymbolState {
    venue: Venue,
    name: Box<[u8]>,
    /// Highest id seen on a sequenced venue, and the exchange time of that trade.
    last_id: Option<u64>,
    last_ts_ns: i64,
    /// Holes (inclusive id ranges) still waiting for their trades.
    open_gaps: Vec<(u64, u64)>,
    recent: Option<RecentIds>,
    /// The batch whose undo list already holds this symbol's sequence state from before it.
    saved_in_batch: u64,
}

impl SymbolState {
    fn new(venue: Venue, name: &[u8]) -> SymbolState {
        SymbolState {
            venue,
            name: name.into(),
            last_id: None,
            last_ts_ns: 0,
            open_gaps: Vec::new(),
            recent: None,
            saved_in_batch: 0,
        }
    }
}

/// Most open gaps kept per symbol; past it the oldest is forgotten (the marker stays in the log).
const MAX_OPEN_GAPS: usize = 1024;

enum Verdict {
    Store,
    Duplicate,
}

/// A hasher for the short keys of the hot path (symbols, trade ids), eight bytes a step with a
/// folded 64x64->128-bit multiply (the foldhash / wyhash step), which carries every input bit into
/// every output bit: SipHash's flood resistance buys nothing for names a venue's instrument list
/// gave us, and its cost is paid on every trade. (A plain multiply step, as in FxHash, only
/// carries bits upwards, and sequential ids such as `5052329090` and `5052329820` collided.)
struct ShortKeyHasher(u64);

impl Default for ShortKeyHasher {
    fn default() -> Self {
        ShortKeyHasher(0x243f_6a88_85a3_08d3)
    }
}

const MIX_K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl std::hash::Hasher for ShortKeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.0, MIX_K)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = folded_multiply(h ^ u64::from_le_bytes(w), MIX_K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = folded_multiply(h ^ u64::from_le_bytes(w), MIX_K);
        }
        self.0 = h;
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = folded_multiply(self.0 ^ n as u64, MIX_K);
    }
}

/// For keys that are hashes already.
#[derive(Default)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = folded_multiply(self.0 ^ u64::from(b), MIX_K);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A key for a trade id in a symbol's recent-id window: 64 well-mixed bits, so collisions among
/// the few thousand ids of a window are negligible.
#[inline]
fn id_key(id: &[u8]) -> u64 {
    let mut h = ShortKeyHasher::default();
    std::hash::Hasher::write_usize(&mut h, id.len());
    std::hash::Hasher::write(&mut h, id);
    std::hash::Hasher::finish(&h)
}

/// Every symbol's state, found by venue and name.
struct Symbols {
    index: Vec<HashMap<Box<[u8]>, u32, BuildHasherDefault<ShortKeyHasher>>>,
    states: Vec<SymbolState>,
    /// The symbol found last: frames of a subscription come in runs of one symbol.
    last: Option<u32>,
}

impl Symbols {
    fn new() -> Symbols {
        Symbols {
            index: (0..=crate::venue::ALL.len()).map(|_| HashMap::default()).collect(),
            states: Vec::new(),
            last: None,
        }
    }

    /// The index of a symbol's state, created on its first trade.
    #[inline]
    fn find_or_add(&mut self, venue: Venue, symbol: &[u8]) -> u32 {
        if let Some(i) = self.last {
            if let Some(st) = self.states.get(i as usize) {
                if st.venue == venue && *st.name == *symbol {
                    return i;
                }
            }
        }
        let map = &mut self.index[venue.code() as usize];
        let i = match map.get(symbol) {
            Some(&i) => i,
            None => {
                let i = self.states.len() as u32;
                self.states.push(SymbolState::new(venue, symbol));
                map.insert(symbol.into(), i);
                i
            }
        };
        self.last = Some(i);
        i
    }

    fn find(&self, venue: Venue, symbol: &[u8]) -> Option<&SymbolState> {
        self.index[venue.code() as usize].get(symbol).and_then(|&i| self.states.get(i as usize))
    }
}

/// How to take back what `judge` recorded for a batch that then failed to reach the log, so that
/// a retry of the same frames is not mistaken for duplicates. A sequenced symbol's state is saved
/// once per batch, before the batch first changes it.
enum Undo {
    Recent { symbol: u32, key: u64 },
    Sequence { symbol: u32, last_id: Option<u64>, last_ts_ns: i64, open_gaps: Vec<(u64, u64)> },
}

pub struct Ingestor {
    pub ctx: ParseContext,
    undo: Vec<Undo>,
    /// Counts batches, so that a symbol's state is saved for undo once per batch.
    batch: u64,
    frame: ParsedFrame,
    symbols: Symbols,
    recent_cap: usize,
    scratch: Vec<u8>,
    pub stats: IngestStats,
}

impl Default for Ingestor {
    fn default() -> Self {
        Ingestor::new(4096)
    }
}

impl Ingestor {
    /// `recent_ids_per_symbol`: how many ids of a venue without an id sequence are remembered
    /// per symbol to drop duplicates (must exceed the venue's REST "recent trades" window).
    pub fn new(recent_ids_per_symbol: usize) -> Ingestor {
        Ingestor {
            ctx: ParseContext::new(),
            frame: ParsedFrame::new(),
            undo: Vec::new(),
            batch: 0,
            symbols: Symbols::new(),
            recent_cap: recent_ids_per_symbol.max(1),
            scratch: Vec::with_capacity(64 << 10),
            stats: IngestStats::default(),
        }
    }

    /// The state of a symbol, created on its first use.
    fn state(&mut self, venue: Venue, symbol: &[u8]) -> &mut SymbolState {
        let idx = self.symbols.find_or_add(venue, symbol);
        &mut self.symbols.states[idx as usize]
    }

    /// Starts a batch: nothing of it to undo yet.
    fn begin_batch(&mut self) {
        self.undo.clear();
        self.batch += 1;
    }

    /// Decides whether a trade is new, recording gaps and filled gaps into `events` and `markers`.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        venue: Venue,
        t: &TradeRef<'_>,
        seq: Option<(u64, u64)>,
        recv_ns: i64,
        events: &mut Vec<IngestEvent>,
        markers: &mut Vec<Marker>,
    ) -> Verdict {
        let cap = self.recent_cap;
        let idx = self.symbols.find_or_add(venue, t.symbol);
        let st = &mut self.symbols.states[idx as usize];
        let Some((first, last)) = seq else {
            let recent = st.recent.get_or_insert_with(RecentIds::new);
            let key = id_key(t.trade_id);
            if !recent.insert(key, cap) {
                return Verdict::Duplicate;
            }
            self.undo.push(Undo::Recent { symbol: idx, key });
            return Verdict::Store;
        };
        if st.saved_in_batch != self.batch {
            st.saved_in_batch = self.batch;
            self.undo.push(Undo::Sequence {
                symbol: idx,
                last_id: st.last_id,
                last_ts_ns: st.last_ts_ns,
                open_gaps: st.open_gaps.clone(),
            });
        }
        let symbol = || String::from_utf8_lossy(t.symbol).into_owned();
        match st.last_id {
            None => {
                st.last_id = Some(last);
                st.last_ts_ns = t.ts_ns;
                Verdict::Store
            }
            Some(prev) if first > prev => {
                if first > prev + 1 {
                    let (a, b) = (prev + 1, first - 1);
                    if st.open_gaps.len() >= MAX_OPEN_GAPS {
                        st.open_gaps.remove(0);
                    }
                    st.open_gaps.push((a, b));
                    let (from_ts, to_ts) = (st.last_ts_ns, t.ts_ns);
                    events.push(IngestEvent::Gap {
                        venue,
                        symbol: symbol(),
                        first_missing: a,
                        last_missing: b,
                        from_ts_ns: from_ts,
                        to_ts_ns: to_ts,
                    });
                    markers.push(Marker {
                        kind: MarkerKind::GapFound,
                        venue: Some(venue),
                        symbol: symbol(),
                        ts_ns: recv_ns,
                        from_ts_ns: from_ts,
                        to_ts_ns: to_ts,
                        from_id: a.to_string(),
                        to_id: b.to_string(),
                        detail: format!("{} ids missing", b - a + 1),
                    });
                }
                st.last_id = Some(last);
                st.last_ts_ns = t.ts_ns;
                Verdict::Store
            }
            Some(prev) => {
                // At or below what we have: new only where it falls into an open gap.
                let mut fills = false;
                let mut closed = Vec::new();
                let mut i = 0;
                while i < st.open_gaps.len() {
                    let (a, b) = st.open_gaps[i];
                    if last < a || first > b {
                        i += 1;
                        continue;
                    }
                    fills = true;
                    // Cut [first, last] out of [a, b].
                    let left = (a < first).then(|| (a, first - 1));
                    let right = (last < b).then(|| (last + 1, b));
                    match (left, right) {
                        (None, None) => {
                            st.open_gaps.remove(i);
                            closed.push((a, b));
                            continue;
                        }
                        (Some(l), None) => st.open_gaps[i] = l,
                        (None, Some(r)) => st.open_gaps[i] = r,
                        (Some(l), Some(r)) => {
                            st.open_gaps[i] = l;
                            st.open_gaps.insert(i + 1, r);
                            i += 1;
                        }
                    }
                    i += 1;
                }
                if last > prev {
                    // Overlaps the end of what we had (an aggregated OKX trade): keep it.
                    st.last_id = Some(last);
                    st.last_ts_ns = t.ts_ns;
                    fills = true;
                }
                for &(a, b) in &closed {
                    // `closed` names the last remaining piece; the marker says the gap is whole.
                    events.push(IngestEvent::GapFilled { venue, symbol: symbol(), first_missing: a, last_missing: b });
                    markers.push(Marker {
                        kind: MarkerKind::GapFilled,
                        venue: Some(venue),
                        symbol: symbol(),
                        ts_ns: recv_ns,
                        from_ts_ns: 0,
                        to_ts_ns: 0,
                        from_id: a.to_string(),
                        to_id: b.to_string(),
                        detail: String::new(),
                    });
                }
                if fills {
                    Verdict::Store
                } else {
                    Verdict::Duplicate
                }
            }
        }
    }

    /// Parses one frame and encodes what it holds into `buf`: its new trades, the markers of
    /// gaps it reveals or closes, or the raw frame as a quarantined record when it does not parse.
    /// Returns how many trades it staged.
    fn stage_frame(
        &mut self,
        venue: Venue,
        frame: &[u8],
        recv_ns: i64,
        buf: &mut Vec<u8>,
        events: &mut Vec<IngestEvent>,
    ) -> usize {
        self.stats.frames += 1;
        let mut parsed = std::mem::take(&mut self.frame);
        let mut stored = 0;
        // The parsers only emit what the log accepts; this guards the format all the same, and
        // before any trade of the frame is judged, so a frame refused here leaves no trace in
        // the dedupe state and is kept whole in quarantine.
        let outcome =
            parse::parse_frame(venue, frame, &self.ctx, &mut parsed).map_err(|e| e.to_string()).and_then(|()| match (0
                ..parsed.trades.len())
                .map(|i| parsed.trade(i, venue, recv_ns))
                .find(|t| !t.is_storable())
            {
                Some(bad) => Err(format!(
                    "{}: a parsed trade cannot be stored: {}",
                    venue.id(),
                    bad.check().err().map_or_else(String::new, |e| e.to_string())
                )),
                None => Ok(()),
            });
        match outcome {
            Err(reason) => {
                let q = Quarantined::new(Some(venue), recv_ns, &reason, frame);
                frame_into(buf, |out| q.encode_payload(out));
                self.stats.quarantined += 1;
                events.push(IngestEvent::Quarantined { venue, reason });
            }
            Ok(()) => {
                if let Some(c) = parsed.control.take() {
                    events.push(IngestEvent::Control { venue, kind: c.kind(), detail: c.detail().to_owned() });
                }
                let mut markers = Vec::new();
                for (i, p) in parsed.trades.iter().enumerate() {
                    let t = parsed.trade(i, venue, recv_ns);
                    match self.judge(venue, &t, p.seq_first.zip(p.seq_last), recv_ns, events, &mut markers) {
                        Verdict::Store => {
                            t.frame_into(buf);
                            stored += 1;
                        }
                        Verdict::Duplicate => self.stats.duplicates += 1,
                    }
                }
                if !markers.is_empty() {
                    self.write_markers(&markers, buf);
                }
                if !parsed.rejected.is_empty() {
                    // Some trades of the frame did not parse: the others are stored above, and
                    // the raw frame is kept with a reason naming only the ones left out.
                    let reason = rejected_reason(venue, &parsed.rejected, parsed.trades.len());
                    let q = Quarantined::new(Some(venue), recv_ns, &reason, frame);
                    frame_into(buf, |out| q.encode_payload(out));
                    self.stats.quarantined += 1;
                    events.push(IngestEvent::Quarantined { venue, reason });
                }
            }
        }
        self.frame = parsed;
        self.stats.trades += stored as u64;
        stored
    }

    fn write_markers(&mut self, markers: &[Marker], buf: &mut Vec<u8>) {
        for m in markers {
            match m.kind {
                MarkerKind::GapFound => self.stats.gaps += 1,
                MarkerKind::GapFilled => self.stats.gaps_filled += 1,
                _ => {}
            }
            frame_into(buf, |out| m.encode_payload(out));
        }
    }

    /// Appends a staged batch; if the log refuses it, takes back what was recorded for it.
    fn commit(&mut self, log: &mut LogWriter, buf: &[u8], stored: usize) -> Result<()> {
        let r = if buf.is_empty() { Ok(()) } else { log.append_frames(buf) };
        if r.is_err() {
            self.rollback();
            self.stats.trades -= stored as u64;
        }
        self.undo.clear();
        r
    }

    /// Takes back what judging the current batch recorded, newest first.
    fn rollback(&mut self) {
        for u in std::mem::take(&mut self.undo).into_iter().rev() {
            let symbol = match &u {
                Undo::Recent { symbol, .. } | Undo::Sequence { symbol, .. } => *symbol,
            };
            let Some(st) = self.symbols.states.get_mut(symbol as usize) else {
                continue;
            };
            match u {
                Undo::Recent { key, .. } => {
                    if let Some(rec) = st.recent.as_mut() {
                        rec.set.remove(&key);
                        rec.order.retain(|k| *k != key);
                    }
                }
                Undo::Sequence { last_id, last_ts_ns, open_gaps, .. } => {
                    st.last_id = last_id;
                    st.last_ts_ns = last_ts_ns;
                    st.open_gaps = open_gaps;
                }
            }
        }
    }

    /// Parses and stores one frame. Never fails on the frame's content: a frame that does not
    /// parse is stored raw (quarantined) and reported. Errors are the log's (disk full...).
    pub fn ingest_frame(
        &mut self,
        log: &mut LogWriter,
        venue: Venue,
        frame: &[u8],
        recv_ns: i64,
        events: &mut Vec<IngestEvent>,
    ) -> Result<usize> {
        self.ingest_frames(log, venue, std::iter::once((frame, recv_ns)), events)
    }

    /// Parses and stores many frames of one venue with a single append.
    pub fn ingest_frames<'f>(
        &mut self,
        log: &mut LogWriter,
        venue: Venue,
        frames: impl IntoIterator<Item = (&'f [u8], i64)>,
        events: &mut Vec<IngestEvent>,
    ) -> Result<usize> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        self.begin_batch();
        let mut stored = 0;
        for (frame, recv_ns) in frames {
            stored += self.stage_frame(venue, frame, recv_ns, &mut buf, events);
        }
        let r = self.commit(log, &buf, stored);
        self.scratch = buf;
        r.map(|_| stored)
    }

    /// Stores trades that did not come as a frame (a REST backfill, a snapshot), through the
    /// same duplicate and sequence checks. On a sequenced venue the numeric trade id is the
    /// sequence position.
    pub fn ingest_trades<'a>(
        &mut self,
        log: &mut LogWriter,
        trades: impl IntoIterator<Item = TradeRef<'a>>,
        events: &mut Vec<IngestEvent>,
    ) -> Result<usize> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        self.begin_batch();
        let mut markers = Vec::new();
        let mut stored = 0;
        for (n, t) in trades.into_iter().enumerate() {
            if let Err(e) = t.check() {
                self.rollback();
                self.scratch = buf;
                return Err(crate::Error::InvalidTrade(format!("row {n} of the batch: {e}")));
            }
            let seq = if !has_id_sequence(t.venue) {
                None
            } else if t.flags & crate::record::flags::AGGREGATED != 0 {
                aggregated_ids(t.trade_id)
            } else {
                t.trade_id_num().map(|n| (n, n))
            };
            match self.judge(t.venue, &t, seq, t.recv_ns, events, &mut markers) {
                Verdict::Store => {
                    t.frame_into(&mut buf);
                    stored += 1;
                }
                Verdict::Duplicate => self.stats.duplicates += 1,
            }
        }
        self.write_markers(&markers, &mut buf);
        self.stats.trades += stored as u64;
        let r = self.commit(log, &buf, stored);
        self.scratch = buf;
        r.map(|_| stored)
    }

    /// Open gaps of a symbol (inclusive id ranges), oldest first.
    pub fn open_gaps(&self, venue: Venue, symbol: &str) -> Vec<(u64, u64)> {
        self.symbols.find(venue, symbol.as_bytes()).map(|s| s.open_gaps.clone()).unwrap_or_default()
    }

    /// The last id seen on a sequenced symbol.
    pub fn last_id(&self, venue: Venue, symbol: &str) -> Option<u64> {
        self.symbols.find(venue, symbol.as_bytes()).and_then(|s| s.last_id)
    }

    /// Starts a symbol's sequence where the log left it (after a restart), so the first live
    /// trade reveals the hole the restart made.
    pub fn seed_last_id(&mut self, venue: Venue, symbol: &str, last_id: u64, last_ts_ns: i64) {
        let st = self.state(venue, symbol.as_bytes());
        if st.last_id.is_none_or(|p| last_id > p) {
            st.last_id = Some(last_id);
            st.last_ts_ns = last_ts_ns;
        }
    }

    /// Reopens a hole the log shows unfilled (ids `first..=last` of a sequenced symbol) after a
    /// restart, so the backfill's trades are taken as new rather than dropped as below the last
    /// id. Ids already inside an open gap are not added twice.
    pub fn seed_open_gap(&mut self, venue: Venue, symbol: &str, first: u64, last: u64) {
        if first > last {
            return;
        }
        let st = self.state(venue, symbol.as_bytes());
        if st.open_gaps.iter().any(|&(a, b)| first <= b && a <= last) {
            return;
        }
        if st.open_gaps.len() >= MAX_OPEN_GAPS {
            st.open_gaps.remove(0);
        }
        let at = st.open_gaps.partition_point(|&(a, _)| a < first);
        st.open_gaps.insert(at, (first, last));
    }

    /// Remembers ids of a symbol without an id sequence that the log already holds (after a
    /// restart), so a REST window or snapshot overlapping them is not stored twice.
    pub fn seed_recent_ids<'a>(&mut self, venue: Venue, symbol: &str, ids: impl IntoIterator<Item = &'a [u8]>) {
        let cap = self.recent_cap;
        let recent = self.state(venue, symbol.as_bytes()).recent.get_or_insert_with(RecentIds::new);
        for id in ids {
            recent.insert(id_key(id), cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::writer::SharedLog;
    use crate::log::LogConfig;
    use crate::parse::testutil::venue_frames;

    fn binance(symbol: &str, id: u64) -> Vec<u8> {
        format!(
            r#"{{"stream":"x@trade","data":{{"e":"trade","E":1,"s":"{symbol}","t":{id},"p":"1.5","q":"2","T":{},"m":true}}}}"#,
            1_790_000_000_000u64 + id
        )
        .into_bytes()
    }

    fn ingest(
        ing: &mut Ingestor,
        w: &mut LogWriter,
        venue: Venue,
        frames: &[Vec<u8>],
        events: &mut Vec<IngestEvent>,
    ) -> Result<usize> {
        ing.ingest_frames(w, venue, frames.iter().map(|f| (f.as_slice(), 7)), events)
    }

    /// A batch the log refuses leaves no trace in the dedupe and sequence state: sent again, it
    /// is stored whole and reports its gap once, on a sequenced venue and on a windowed one.
    #[test]
    fn a_batch_the_log_refuses_is_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), LogConfig::default()).unwrap();
        let mut ing = Ingestor::default();
        let mut ev = Vec::new();
        let first: Vec<_> = (1..=100).map(|i| binance("BTCUSDT", i)).collect();
        assert_eq!(ingest(&mut ing, &mut w, Venue::BinanceSpot, &first, &mut ev).unwrap(), 100);
        // Two symbols in the batch, one with a hole at 150.
        let second: Vec<_> =
            (101..=200).filter(|&i| i != 150).flat_map(|i| [binance("BTCUSDT", i), binance("ETHUSDT", i)]).collect();
        let bybit: Vec<_> = venue_frames(Venue::BybitSpot, 50, 1);
        w.record_sync_error(std::io::Error::other("test: the disk failed"));
        assert!(ingest(&mut ing, &mut w, Venue::BinanceSpot, &second, &mut ev).is_err());
        assert_eq!(ing.last_id(Venue::BinanceSpot, "BTCUSDT"), Some(100));
        assert_eq!(ing.last_id(Venue::BinanceSpot, "ETHUSDT"), None);
        assert!(ing.open_gaps(Venue::BinanceSpot, "BTCUSDT").is_empty());
        w.record_sync_error(std::io::Error::other("test: the disk failed"));
        assert!(ingest(&mut ing, &mut w, Venue::BybitSpot, &bybit, &mut ev).is_err());
        ev.clear();
        let before = ing.stats.clone();
        assert_eq!(ingest(&mut ing, &mut w, Venue::BinanceSpot, &second, &mut ev).unwrap(), 198);
        assert_eq!(ingest(&mut ing, &mut w, Venue::BybitSpot, &bybit, &mut ev).unwrap(), 50);
        assert_eq!(ing.stats.duplicates, before.duplicates);
        let gaps: Vec<_> = ev.iter().filter(|e| matches!(e, IngestEvent::Gap { .. })).collect();
        assert_eq!(gaps.len(), 2, "{ev:?}");
        assert_eq!(ing.open_gaps(Venue::BinanceSpot, "BTCUSDT"), vec![(150, 150)]);
        assert_eq!(ing.open_gaps(Venue::BinanceSpot, "ETHUSDT"), vec![(150, 150)]);
        assert_eq!(ing.last_id(Venue::BinanceSpot, "ETHUSDT"), Some(200));
        // And now they are duplicates.
        assert_eq!(ingest(&mut ing, &mut w, Venue::BinanceSpot, &second, &mut ev).unwrap(), 0);
        assert_eq!(ingest(&mut ing, &mut w, Venue::BybitSpot, &bybit, &mut ev).unwrap(), 0);
        assert_eq!(ing.stats.duplicates, before.duplicates + 198 + 50);
    }

    /// Symbols are told apart by venue and by name whatever order their frames come in (the
    /// last-symbol shortcut must not carry one symbol's state over to another).
    #[test]
    fn interleaved_symbols_and_venues_keep_their_own_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), LogConfig::default()).unwrap();
        let mut ing = Ingestor::default();
        let mut ev = Vec::new();
        let names = ["BTCUSDT", "BTCUSDC", "ETHUSDT", "BTCUSD", "BTCUSDTT"];
        for round in 0..3u64 {
            for venue in [Venue::BinanceSpot, Venue::BinanceUsdm] {
                let frames: Vec<_> = (1..=40u64)
                    .flat_map(|i| {
                        let id = round * 40 + i;
                        // Each symbol skips a different id, once.
                        names
                            .iter()
                            .enumerate()
                            .filter(move |(k, _)| id != 10 + *k as u64 + 30 * (venue == Venue::BinanceUsdm) as u64)
                            .map(move |(_, s)| binance(s, id))
                    })
                    .collect();
                ingest(&mut ing, &mut w, venue, &frames, &mut ev).unwrap();
            }
        }
        for venue in [Venue::BinanceSpot, Venue::BinanceUsdm] {
            for (k, s) in names.iter().enumerate() {
                let hole = 10 + k as u64 + 30 * (venue == Venue::BinanceUsdm) as u64;
                assert_eq!(ing.open_gaps(venue, s), vec![(hole, hole)], "{} {s}", venue.id());
                assert_eq!(ing.last_id(venue, s), Some(120));
            }
        }
        assert_eq!(ing.stats.gaps, 10);
        assert_eq!(ing.stats.trades, 2 * 5 * 119);
    }

    /// Ids that differ get different keys in the recent-id window (a weak hash once made
    /// sequential KuCoin ids collide and dropped trades as duplicates).
    #[test]
    fn recent_id_keys_do_not_collide_on_sequential_or_similar_ids() {
        let mut seen = HashMap::new();
        let ids = (5_052_328_858u64..5_052_528_858)
            .map(|i| i.to_string())
            .chain((0..50_000u64).map(|i| format!("0856d748-770c-596b-8b96-{i:012x}")))
            .chain((0..50_000u64).map(|i| format!("6085c09769bc{i:012x}")));
        for id in ids {
            if let Some(prev) = seen.insert(id_key(id.as_bytes()), id.clone()) {
                panic!("{prev} and {id} have the same key");
            }
        }
    }

    /// Ingest throughput of batches of 10 k frames into a store as the Python `Store` runs it
    /// (shared log with its committer and prefaulter, ring attached):
    /// `cargo test -p pumpwatch-core --release --lib -- --ignored --nocapture throughput`.
    /// `PUMPWATCH_THROUGHPUT_VENUES=binance-spot,okx-spot` limits the venues (callgrind runs);
    /// `PUMPWATCH_THROUGHPUT_FRAMES` and `_REPEAT` set the frames per venue and the rounds;
    /// `PUMPWATCH_THROUGHPUT_DIR` reads the frames from `<dir>/<venue>.jsonl` instead.
    #[test]
    #[ignore = "timing only; meaningful in a release build"]
    fn ingest_throughput() {
        let only = std::env::var("PUMPWATCH_THROUGHPUT_VENUES").ok();
        let n = std::env::var("PUMPWATCH_THROUGHPUT_FRAMES").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000usize);
        let repeat = std::env::var("PUMPWATCH_THROUGHPUT_REPEAT").ok().and_then(|s| s.parse().ok()).unwrap_or(3usize);
        for venue in crate::venue::ALL {
            if only.as_deref().is_some_and(|o| !o.split(',').any(|v| v == venue.id())) {
                continue;
            }
            let from_files = std::env::var("PUMPWATCH_THROUGHPUT_DIR").is_ok();
            let frames = match std::env::var("PUMPWATCH_THROUGHPUT_DIR") {
                // Frames from files, one per line (`<dir>/<venue>.jsonl`, e.g. the simulator's).
                Ok(dir) => std::fs::read_to_string(format!("{dir}/{}.jsonl", venue.id()))
                    .unwrap()
                    .lines()
                    .cycle()
                    .take(n)
                    .map(|l| l.as_bytes().to_vec())
                    .collect(),
                Err(_) => venue_frames(venue, n, 5_052_328_858),
            };
            let mut best = f64::MAX;
            for _ in 0..repeat {
                let dir = tempfile::tempdir().unwrap();
                let log = SharedLog::open(dir.path(), LogConfig::default()).unwrap();
                let (ring_writer, _ring) = crate::ring::ring(128 << 20);
                log.with(|w| {
                    w.attach_ring(ring_writer);
                    Ok(())
                })
                .unwrap();
                let mut ing = Ingestor::default();
                let mut events = Vec::new();
                let t = std::time::Instant::now();
                let mut stored = 0;
                for chunk in frames.chunks(10_000) {
                    stored += log
                        .with(|w| {
                            ing.ingest_frames(
                                w,
                                venue,
                                chunk.iter().map(|f| (f.as_slice(), 1_790_000_000_500_000_000)),
                                &mut events,
                            )
                        })
                        .unwrap();
                }
                best = best.min(t.elapsed().as_secs_f64());
                if !from_files {
                    assert_eq!(stored, n, "{}", venue.id());
                    assert!(events.is_empty(), "{}: {:?}", venue.id(), events.first());
                }
            }
            println!(
                "ingest throughput {:>14}: {:.0} ns/frame, {:.2} M frames/s (best of {repeat})",
                venue.id(),
                best * 1e9 / n as f64,
                n as f64 / best / 1e6
            );
        }
    }
}
