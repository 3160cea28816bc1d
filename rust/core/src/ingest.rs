//! The ingest path: frame bytes in, trades on disk. Parse (one parser per venue), drop
//! duplicates (redundant connections and backfills overlap), check the per-symbol id sequence
//! where the venue has one, append to the log and the ring, and tell the caller what to act on:
//! gaps to backfill, control frames, frames that could not be parsed (kept raw in the log).

use std::collections::{HashMap, HashSet, VecDeque};


use crate::log::LogWriter;
use crate::parse::{self, ParseContext, ParsedFrame};
use crate::record::{frame_into, Marker, MarkerKind, Quarantined, TradeRef};
use crate::venue::Venue;
use crate::Result;

/// Whether a venue's trade ids form a per-symbol consecutive sequence (VENUES.md): the ones
/// where a hole can be seen and backfilled by id.
pub fn has_id_sequence(v: Venue) -> bool {
    matches!(
        v,
        Venue::BinanceSpot | Venue::BinanceUsdm | Venue::OkxSpot | Venue::OkxSwap | Venue::GateSpot | Venue::GateFutures
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
/// "recent trades" or a redundant connection can overlap.
struct RecentIds {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl RecentIds {
    fn new() -> RecentIds {
        RecentIds { order: VecDeque::new(), set: HashSet::new() }
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

#[derive(Default)]
struct SymbolState {
    /// Highest id seen on a sequenced venue, and the exchange time of that trade.
    last_id: Option<u64>,
    last_ts_ns: i64,
    /// Holes (inclusive id ranges) still waiting for their trades.
    open_gaps: Vec<(u64, u64)>,
    recent: Option<RecentIds>,
}

/// Most open gaps kept per symbol; past it the oldest is forgotten (the marker stays in the log).
const MAX_OPEN_GAPS: usize = 1024;

enum Verdict {
    Store,
    Duplicate,
}

/// A hasher for the short keys of the hot path (symbols): SipHash's flood resistance buys
/// nothing for names a venue's instrument list gave us.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type SymbolMap = HashMap<Box<[u8]>, SymbolState, std::hash::BuildHasherDefault<Fnv>>;

/// The state of a symbol, created on its first trade.
fn symbol_state<'m>(symbols: &'m mut [SymbolMap], venue: Venue, symbol: &[u8]) -> &'m mut SymbolState {
    let map = &mut symbols[venue.code() as usize];
    if !map.contains_key(symbol) {
        map.insert(symbol.into(), SymbolState::default());
    }
    // Present: inserted just above if it was not.
    map.get_mut(symbol).expect("symbol state present")
}

/// 64-bit FNV-1a: cheap, and collisions among a few thousand recent ids are negligible.
fn id_key(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How to take back what `judge` recorded for a batch that then failed to reach the log, so that
/// a retry of the same frames is not mistaken for duplicates.
/// Symbols are named by a hash of their text so that recording an undo allocates nothing on the
/// hot path; a rollback (rare: the log refused an append) finds them by scanning.
enum Undo {
    Recent { venue: Venue, symbol: u64, key: u64 },
    Sequence { venue: Venue, symbol: u64, last_id: Option<u64>, last_ts_ns: i64, open_gaps: Vec<(u64, u64)> },
}

pub struct Ingestor {
    pub ctx: ParseContext,
    undo: Vec<Undo>,
    frame: ParsedFrame,
    symbols: Vec<SymbolMap>,
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
            symbols: (0..=crate::venue::ALL.len()).map(|_| SymbolMap::default()).collect(),
            recent_cap: recent_ids_per_symbol.max(1),
            scratch: Vec::with_capacity(64 << 10),
            stats: IngestStats::default(),
        }
    }

    fn state(&mut self, venue: Venue, symbol: &[u8]) -> &mut SymbolState {
        symbol_state(&mut self.symbols, venue, symbol)
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
        let st = symbol_state(&mut self.symbols, venue, t.symbol);
        let Some((first, last)) = seq else {
            let recent = st.recent.get_or_insert_with(RecentIds::new);
            let key = id_key(t.trade_id);
            if !recent.insert(key, cap) {
                return Verdict::Duplicate;
            }
            self.undo.push(Undo::Recent { venue, symbol: id_key(t.symbol), key });
            return Verdict::Store;
        };
        self.undo.push(Undo::Sequence {
            venue,
            symbol: id_key(t.symbol),
            last_id: st.last_id,
            last_ts_ns: st.last_ts_ns,
            open_gaps: st.open_gaps.clone(),
        });
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
    fn stage_frame(&mut self, venue: Venue, frame: &[u8], recv_ns: i64, buf: &mut Vec<u8>, events: &mut Vec<IngestEvent>) -> usize {
        self.stats.frames += 1;
        let mut parsed = std::mem::take(&mut self.frame);
        let mut stored = 0;
        match parse::parse_frame(venue, frame, &self.ctx, &mut parsed) {
            Err(e) => {
                let reason = e.to_string();
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
                for i in 0..parsed.trades.len() {
                    let t = parsed.trade(i, venue, recv_ns);
                    let p = &parsed.trades[i];
                    let seq = p.seq_first.zip(p.seq_last);
                    match self.judge(venue, &t, seq, recv_ns, events, &mut markers) {
                        // The parsers only emit what the log accepts; `check` guards the format.
                        Verdict::Store if t.check().is_ok() => {
                            frame_into(buf, |out| t.encode_payload(out));
                            stored += 1;
                        }
                        Verdict::Store => {}
                        Verdict::Duplicate => self.stats.duplicates += 1,
                    }
                }
                self.write_markers(&markers, buf);
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
            let (venue, symbol) = match &u {
                Undo::Recent { venue, symbol, .. } | Undo::Sequence { venue, symbol, .. } => (*venue, *symbol),
            };
            let Some(st) = self.symbols[venue.code() as usize].iter_mut().find(|(k, _)| id_key(k) == symbol).map(|(_, v)| v) else {
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
    pub fn ingest_frame(&mut self, log: &mut LogWriter, venue: Venue, frame: &[u8], recv_ns: i64, events: &mut Vec<IngestEvent>) -> Result<usize> {
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
        self.undo.clear();
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
        self.undo.clear();
        let mut markers = Vec::new();
        let mut stored = 0;
        for (n, t) in trades.into_iter().enumerate() {
            if let Err(e) = t.check() {
                self.rollback();
                self.scratch = buf;
                return Err(crate::Error::InvalidTrade(format!("row {n} of the batch: {e}")));
            }
            let seq = if has_id_sequence(t.venue) { t.trade_id_num().map(|n| (n, n)) } else { None };
            match self.judge(t.venue, &t, seq, t.recv_ns, events, &mut markers) {
                Verdict::Store => {
                    frame_into(&mut buf, |out| t.encode_payload(out));
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
        self.symbols[venue.code() as usize].get(symbol.as_bytes()).map(|s| s.open_gaps.clone()).unwrap_or_default()
    }

    /// The last id seen on a sequenced symbol.
    pub fn last_id(&self, venue: Venue, symbol: &str) -> Option<u64> {
        self.symbols[venue.code() as usize].get(symbol.as_bytes()).and_then(|s| s.last_id)
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
