//! Reading the log: segment views (the writer's own, or read-only maps in another process),
//! window queries through the sparse index, markers, quarantined frames, and `verify`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::compress::CompressedSegment;
use super::index::{self, IndexEntry};
use super::scan::{self, Span};
use super::segment::{self, ActiveMap, HeaderCheck, HEADER_LEN, LOCK_FILE, LOG_DIR, STATE_SEALED};
use super::DamageReport;
use crate::record::{self, Marker, Record, FRAME_HEADER, KIND_MARKER, KIND_QUARANTINE};
use crate::venue::Venue;
use crate::{Error, Result};

pub enum SegmentBytes {
    ReadOnly(Mmap),
    Active(Arc<ActiveMap>),
    /// A sealed segment stored compressed: read block by block.
    Compressed(CompressedSegment),
}

/// An immutable view of one segment up to `end`: what a query reads. Plain and compressed
/// segments read the same through [`SegmentView::for_each_record`] and
/// [`SegmentView::records_from`]; offsets are always positions in the plain segment.
#[derive(Clone)]
pub struct SegmentView {
    pub seq: u64,
    pub name: String,
    pub bytes: Arc<SegmentBytes>,
    pub end: usize,
    pub entries: Arc<Vec<IndexEntry>>,
}

thread_local! {
    /// Decompressed block of the record walk running on this thread.
    static BLOCK_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl SegmentView {
    /// The mapped bytes of a plain segment up to `end`; `None` for a compressed one.
    pub fn plain_bytes(&self) -> Option<&[u8]> {
        match &*self.bytes {
            SegmentBytes::ReadOnly(m) => Some(&m[..self.end.min(m.len())]),
            SegmentBytes::Active(a) => Some(a.bytes(self.end)),
            SegmentBytes::Compressed(_) => None,
        }
    }

    pub fn is_compressed(&self) -> bool {
        matches!(&*self.bytes, SegmentBytes::Compressed(_))
    }

    /// Byte ranges to read for records: the index blocks `want` selects, then the un-indexed tail.
    fn ranges(&self, want: impl Fn(&IndexEntry) -> bool) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for e in self.entries.iter() {
            if want(e) {
                let (s, t) = (e.start as usize, e.end as usize);
                match out.last_mut() {
                    Some(last) if last.1 == s => last.1 = t,
                    _ => out.push((s, t)),
                }
            }
        }
        let indexed_end = self.entries.last().map_or(HEADER_LEN, |e| e.end as usize);
        if indexed_end < self.end {
            out.push((indexed_end, self.end));
        }
        out
    }

    /// Calls `f(offset, payload)` for every valid record of the blocks `want` selects (and of
    /// the un-indexed tail), in log order. Damaged bytes are skipped.
    pub fn for_each_record(&self, want: impl Fn(&IndexEntry) -> bool, mut f: impl FnMut(usize, &[u8])) {
        match &*self.bytes {
            SegmentBytes::Compressed(cs) => BLOCK_SCRATCH.with(|scratch| {
                let mut buf = std::mem::take(&mut *scratch.borrow_mut());
                for (i, b) in cs.blocks.iter().enumerate() {
                    if !want(&b.entry) {
                        continue;
                    }
                    // A damaged frame yields nothing (or, for a run, what decoded): `verify` says so.
                    let _ = cs.read_block(i, &mut buf);
                    let base = b.entry.start as usize;
                    scan::walk(&buf, 0, buf.len(), |off, p| f(base + off, p));
                }
                *scratch.borrow_mut() = buf;
            }),
            _ => {
                let data = self.plain_bytes().unwrap_or(&[]);
                for (s, t) in self.ranges(want) {
                    scan::walk(data, s, t, &mut f);
                }
            }
        }
    }

    /// Walks the records at or after `from` (a record boundary, e.g. a tail cursor) up to `end`,
    /// in log order, while `f(offset, payload)` returns true. Returns the damaged spans skipped
    /// (offsets in the plain segment; a frame of a compressed segment that does not decode is
    /// one span).
    pub fn records_from(&self, from: usize, mut f: impl FnMut(usize, &[u8]) -> bool) -> Vec<Span> {
        let mut damaged = Vec::new();
        match &*self.bytes {
            SegmentBytes::Compressed(cs) => {
                let mut buf = Vec::new();
                for (i, b) in cs.blocks.iter().enumerate() {
                    if (b.entry.end as usize) <= from {
                        continue;
                    }
                    let base = b.entry.start as usize;
                    if cs.read_block(i, &mut buf).is_err() && buf.is_empty() {
                        damaged.push(Span { start: base.max(from), end: b.entry.end as usize });
                        continue;
                    }
                    let skip = from.saturating_sub(base).min(buf.len());
                    let (go_on, spans) = walk_while(&buf, skip, buf.len(), |off, p| f(base + off, p));
                    damaged.extend(spans.into_iter().map(|s| Span { start: base + s.start, end: base + s.end }));
                    if (buf.len() as u64) < b.entry.end - b.entry.start {
                        damaged.push(Span { start: base + buf.len(), end: b.entry.end as usize });
                    }
                    if !go_on {
                        break;
                    }
                }
            }
            _ => {
                let data = self.plain_bytes().unwrap_or(&[]);
                damaged = walk_while(data, from.max(HEADER_LEN), self.end, f).1;
            }
        }
        damaged
    }
}

/// `scan::walk` that stops when `f` returns false: (whether it walked to the end, damaged spans).
/// Invalid bytes with no valid record after them are reported as a damaged span too.
fn walk_while(data: &[u8], start: usize, end: usize, mut f: impl FnMut(usize, &[u8]) -> bool) -> (bool, Vec<Span>) {
    let end = end.min(data.len());
    let mut spans = Vec::new();
    let mut off = start;
    while off < end {
        if let Some(p) = scan::frame_at(data, off, end) {
            if !f(off, p) {
                return (false, spans);
            }
            off += FRAME_HEADER + p.len();
            continue;
        }
        match scan::resync(data, off + 1, end) {
            Some(next) => {
                spans.push(Span { start: off, end: next });
                off = next;
            }
            None => {
                if scan::first_nonzero(data, off, end).is_some() {
                    spans.push(Span { start: off, end });
                }
                break;
            }
        }
    }
    (true, spans)
}

/// Which trades a query wants.
#[derive(Clone, Debug)]
pub struct TradeQuery {
    pub start_ns: i64,
    pub end_ns: i64,
    /// Bit `code` set for each wanted venue; `None` = all.
    pub venues: Option<u16>,
    pub symbols: Option<Vec<Vec<u8>>>,
    /// Records that consume an id but are not trades (Binance USDⓈ-M `X=NA`).
    pub include_non_trades: bool,
}

impl TradeQuery {
    pub fn window(start_ns: i64, end_ns: i64) -> TradeQuery {
        TradeQuery { start_ns, end_ns, venues: None, symbols: None, include_non_trades: false }
    }

    pub fn venue_mask(venues: &[Venue]) -> u16 {
        venues.iter().fold(0u16, |m, v| m | (1 << v.code()))
    }

    #[inline]
    fn wants(&self, t: &record::TradeRef<'_>) -> bool {
        if !self.include_non_trades && t.flags & record::flags::NON_TRADE != 0 {
            return false;
        }
        if let Some(mask) = self.venues {
            if mask & (1 << t.venue.code()) == 0 {
                return false;
            }
        }
        if let Some(symbols) = &self.symbols {
            if !symbols.iter().any(|s| s.as_slice() == t.symbol) {
                return false;
            }
        }
        true
    }
}

/// A string column in Arrow's layout: `offsets[i]..offsets[i+1]` into `data`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StrColumn {
    pub offsets: Vec<i32>,
    pub data: Vec<u8>,
}

impl StrColumn {
    fn with_capacity(n: usize, bytes: usize) -> StrColumn {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        StrColumn { offsets, data: Vec::with_capacity(bytes) }
    }
    #[inline]
    fn push(&mut self, s: &[u8]) {
        self.data.extend_from_slice(s);
        self.close_value();
    }
    #[inline]
    fn close_value(&mut self) {
        // Checked by `TradeColumns::check_size` before building.
        self.offsets.push(self.data.len() as i32);
    }
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// Query result, column by column, ready to become a `pyarrow.Table` without a copy per value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TradeColumns {
    pub len: usize,
    pub venue: StrColumn,
    pub symbol: StrColumn,
    pub trade_id: StrColumn,
    pub price: StrColumn,
    pub qty: StrColumn,
    pub side: StrColumn,
    pub ts_ns: Vec<i64>,
    pub recv_ns: Vec<i64>,
    pub flags: Vec<u16>,
}

/// Where pass 2 of a query finds a hit's record: in a plain view's map, or copied out of a
/// decompressed block (compressed views) into one buffer.
const COPIED: u32 = u32::MAX;

/// Trades of `views` matching `q`, ordered by exchange time (ties in log order).
pub fn query_trades(views: &[SegmentView], q: &TradeQuery) -> Result<TradeColumns> {
    // Pass 1: find the matching records (time, where) in log order.
    let mut hits: Vec<(i64, u32, u64)> = Vec::new();
    let mut copied: Vec<u8> = Vec::new();
    for (vi, view) in views.iter().enumerate() {
        if let SegmentBytes::Compressed(cs) = &*view.bytes {
            let wanted: Vec<usize> =
                (0..cs.blocks.len()).filter(|&i| cs.blocks[i].entry.overlaps(q.start_ns, q.end_ns)).collect();
            let base = copied.len() as u64;
            let (found, records) = compressed_hits(cs, &wanted, q);
            hits.extend(found.into_iter().map(|(ts, off)| (ts, COPIED, base + off)));
            copied.extend_from_slice(&records);
            continue;
        }
        view.for_each_record(
            |e| e.overlaps(q.start_ns, q.end_ns),
            |off, payload| {
                if let Some(ts) = record::peek_trade_ts(payload) {
                    if ts >= q.start_ns && ts < q.end_ns {
                        if let Ok(t) = record::decode_trade(payload) {
                            if q.wants(&t) {
                                hits.push((ts, vi as u32, off as u64));
                            }
                        }
                    }
                }
            },
        );
    }
    // Stable: equal times keep log order.
    hits.sort_by_key(|h| h.0);
    let source = |vi: u32| -> &[u8] {
        if vi == COPIED {
            &copied
        } else {
            views[vi as usize].plain_bytes().unwrap_or(&[])
        }
    };

    // Pass 2: decode in output order into columns.
    let n = hits.len();
    let mut text_bytes = 0usize;
    for &(_, vi, off) in &hits {
        text_bytes += payload_at(source(vi), off as usize).len();
    }
    if text_bytes > i32::MAX as usize {
        return Err(Error::InvalidInput(format!(
            "the window holds {n} trades, more text than one Arrow string column can hold; \
             query a shorter window"
        )));
    }
    let mut c = TradeColumns {
        len: n,
        venue: StrColumn::with_capacity(n, n * 12),
        symbol: StrColumn::with_capacity(n, n * 10),
        trade_id: StrColumn::with_capacity(n, n * 12),
        price: StrColumn::with_capacity(n, n * 10),
        qty: StrColumn::with_capacity(n, n * 8),
        side: StrColumn::with_capacity(n, n * 4),
        ts_ns: Vec::with_capacity(n),
        recv_ns: Vec::with_capacity(n),
        flags: Vec::with_capacity(n),
    };
    for &(_, vi, off) in &hits {
        let payload = payload_at(source(vi), off as usize);
        let Ok(t) = record::decode_trade(payload) else { continue };
        c.venue.push(t.venue.id().as_bytes());
        c.symbol.push(t.symbol);
        record::render_id(payload, t.trade_id, &mut c.trade_id.data);
        c.trade_id.close_value();
        c.price.push(t.price);
        c.qty.push(t.qty);
        c.side.push(t.side.as_str().as_bytes());
        c.ts_ns.push(t.ts_ns);
        c.recv_ns.push(t.recv_ns);
        c.flags.push(t.flags);
    }
    Ok(c)
}

/// Pass 1 of a query over the blocks `wanted` of a compressed segment: the matching trades as
/// (time, offset into the returned buffer), in log order, with their records copied into the
/// buffer (the decompressed blocks do not outlive the pass). Many blocks are split over two
/// threads: decompressing is most of the work, and a window's blocks are independent.
fn compressed_hits(cs: &CompressedSegment, wanted: &[usize], q: &TradeQuery) -> (Vec<(i64, u64)>, Vec<u8>) {
    let scan = |part: &[usize]| {
        let mut found = Vec::new();
        let mut records = Vec::new();
        let mut buf = Vec::new();
        for &i in part {
            // A damaged frame yields nothing (or, for a run, what decoded): `verify` says so.
            let _ = cs.read_block(i, &mut buf);
            scan::walk(&buf, 0, buf.len(), |_, payload| {
                let Some(ts) = record::peek_trade_ts(payload) else { return };
                if ts < q.start_ns || ts >= q.end_ns {
                    return;
                }
                if let Ok(t) = record::decode_trade(payload) {
                    if q.wants(&t) {
                        found.push((ts, records.len() as u64));
                        records.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                        records.extend_from_slice(&[0u8; 4]);
                        records.extend_from_slice(payload);
                    }
                }
            });
        }
        (found, records)
    };
    if wanted.len() < 16 {
        return scan(wanted);
    }
    let (a, b) = wanted.split_at(wanted.len() / 2);
    let ((mut found, mut records), second) = std::thread::scope(|s| {
        let other = s.spawn(|| scan(b));
        let mine = scan(a);
        (mine, other.join())
    });
    let (found_b, records_b) = match second {
        Ok(r) => r,
        Err(_) => scan(b), // the helper thread panicked (it cannot on data): do its half here
    };
    let base = records.len() as u64;
    found.extend(found_b.into_iter().map(|(ts, off)| (ts, base + off)));
    records.extend_from_slice(&records_b);
    (found, records)
}

/// The payload of the frame at `off` (found valid in pass 1).
fn payload_at(data: &[u8], off: usize) -> &[u8] {
    let len = u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
    &data[off + FRAME_HEADER..off + FRAME_HEADER + len]
}

/// Which markers a query wants: those whose time or span touches `[start_ns, end_ns)`.
#[derive(Clone, Copy, Debug)]
pub struct MarkerQuery {
    pub start_ns: i64,
    pub end_ns: i64,
}

pub fn query_markers(views: &[SegmentView], q: &MarkerQuery) -> Vec<Marker> {
    let mut out = Vec::new();
    for view in views {
        view.for_each_record(
            |e| e.others > 0,
            |_, payload| {
                if payload[0] != KIND_MARKER {
                    return;
                }
                if let Ok(Record::Marker(m)) = record::decode(payload) {
                    let at = m.ts_ns >= q.start_ns && m.ts_ns < q.end_ns;
                    let span =
                        m.from_ts_ns != 0 && m.to_ts_ns != 0 && m.from_ts_ns < q.end_ns && m.to_ts_ns >= q.start_ns;
                    if at || span {
                        out.push(m);
                    }
                }
            },
        );
    }
    out
}

/// A quarantined frame as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantinedFrame {
    pub venue: Option<Venue>,
    pub recv_ns: i64,
    pub reason: String,
    pub raw: Vec<u8>,
}

pub fn query_quarantined(views: &[SegmentView], start_ns: i64, end_ns: i64) -> Vec<QuarantinedFrame> {
    let mut out = Vec::new();
    for view in views {
        view.for_each_record(
            |e| e.others > 0,
            |_, payload| {
                if payload[0] != KIND_QUARANTINE {
                    return;
                }
                if let Ok(Record::Quarantined { venue, recv_ns, reason, raw }) = record::decode(payload) {
                    if recv_ns >= start_ns && recv_ns < end_ns {
                        out.push(QuarantinedFrame {
                            venue,
                            recv_ns,
                            reason: String::from_utf8_lossy(reason).into_owned(),
                            raw: raw.to_vec(),
                        });
                    }
                }
            },
        );
    }
    out
}

/// Read-only maps of the segments of a directory, refreshed on demand: segments sealed once are
/// kept; the active one is re-read (header, index) each refresh so appends show up.
#[derive(Default)]
pub struct SegmentSet {
    cached: BTreeMap<u64, SegmentView>,
    sealed: BTreeMap<u64, bool>,
}

impl SegmentSet {
    /// Views of every segment with a sequence number below `below` (all when `None`).
    pub fn refresh(&mut self, log_dir: &Path, below: Option<u64>) -> Result<Vec<SegmentView>> {
        let listed = segment::list_segments(log_dir)?;
        let present: Vec<u64> = listed.iter().map(|(s, _)| *s).collect();
        self.cached.retain(|seq, _| present.contains(seq));
        self.sealed.retain(|seq, _| present.contains(seq));
        let mut out = Vec::new();
        for (seq, path) in listed {
            if below.is_some_and(|b| seq >= b) {
                continue;
            }
            let compressed = segment::is_compressed_path(&path);
            if self.sealed.get(&seq).copied().unwrap_or(false) {
                if let Some(v) = self.cached.get(&seq).filter(|v| v.is_compressed() == compressed) {
                    out.push(v.clone());
                    continue;
                }
            }
            let view = if compressed {
                self.load_compressed(seq, &path)?
            } else {
                match self.load(seq, &path, below.is_some())? {
                    Some(v) => Some(v),
                    // The plain file went away since the listing: its compression just finished.
                    None => self.load_compressed(seq, &log_dir.join(segment::compressed_file_name(seq)))?,
                }
            };
            if let Some(view) = view {
                out.push(view);
            }
        }
        Ok(out)
    }

    fn load_compressed(&mut self, seq: u64, path: &Path) -> Result<Option<SegmentView>> {
        let Some(cs) = CompressedSegment::open(path, seq)? else { return Ok(None) };
        let view = SegmentView {
            seq,
            name: segment::compressed_file_name(seq),
            end: cs.plain_len as usize,
            entries: Arc::new(cs.entries()),
            bytes: Arc::new(SegmentBytes::Compressed(cs)),
        };
        self.cached.insert(seq, view.clone());
        self.sealed.insert(seq, true);
        Ok(Some(view))
    }

    fn load(&mut self, seq: u64, path: &Path, writer_side: bool) -> Result<Option<SegmentView>> {
        // Reuse the current map unless the file has grown past it.
        let reuse = self.cached.get(&seq).and_then(|v| match &*v.bytes {
            SegmentBytes::ReadOnly(m) => {
                let published = segment::load_published_end(m) as usize;
                (published <= m.len()).then(|| v.bytes.clone())
            }
            SegmentBytes::Active(_) | SegmentBytes::Compressed(_) => None,
        });
        let bytes = match reuse {
            Some(b) => b,
            None => match segment::map_readonly(path)? {
                Some(m) => Arc::new(SegmentBytes::ReadOnly(m)),
                None => return Ok(None),
            },
        };
        let SegmentBytes::ReadOnly(map) = &*bytes else { return Ok(None) };
        let (end, sealed) = match segment::decode_header(map) {
            HeaderCheck::Ok(h) => {
                let published = segment::load_published_end(map) as usize;
                let sealed = segment::load_state(map) == STATE_SEALED || writer_side;
                // A seal that fails its CRC vouches for no end: read the whole file, validating
                // (as with a damaged header), so a lowered end hides nothing.
                let untrusted = h.state == STATE_SEALED && segment::check_seal(map) == segment::SealCheck::Altered;
                let end =
                    if (sealed && h.state != STATE_SEALED) || untrusted { map.len() } else { published.min(map.len()) };
                (end, sealed)
            }
            HeaderCheck::NewerVersion(v) => {
                return Err(Error::Format {
                    path: path.to_owned(),
                    detail: format!(
                        "it was written by a newer PumpWatch (format {v}, this one reads up to {}); \
                         upgrade PumpWatch",
                        segment::FORMAT_VERSION
                    ),
                })
            }
            // A damaged header: the records are still there; read the whole file, validating.
            HeaderCheck::Damaged => (map.len(), writer_side),
        };
        let end = end.max(HEADER_LEN.min(map.len()));
        let mut entries = index::read_index(&segment::index_path(path), end as u64);
        let indexed_to = entries.last().map_or(HEADER_LEN, |e| e.end as usize);
        if sealed && indexed_to < end {
            // A sealed segment never changes: build its index once instead of scanning per query.
            entries = index::build_index(map, end).0;
        }
        let view = SegmentView {
            seq,
            name: segment::segment_file_name(seq),
            bytes: bytes.clone(),
            end,
            entries: Arc::new(entries),
        };
        self.cached.insert(seq, view.clone());
        self.sealed.insert(seq, sealed);
        Ok(Some(view))
    }
}

/// Reads a data directory while a writer (in this or another process) appends to it.
pub struct LogReader {
    pub dir: PathBuf,
    set: SegmentSet,
}

impl LogReader {
    pub fn open(dir: &Path) -> Result<LogReader> {
        if !dir.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{} is not a PumpWatch data directory (it does not exist); pass the directory \
                 the recorder writes to (`--data-dir`)",
                dir.display()
            )));
        }
        Ok(LogReader { dir: dir.to_owned(), set: SegmentSet::default() })
    }

    pub fn views(&mut self) -> Result<Vec<SegmentView>> {
        self.set.refresh(&self.dir.join(LOG_DIR), None)
    }
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: u64,
    pub records: u64,
    pub trades: u64,
    pub markers: u64,
    pub quarantined: u64,
    pub bytes: u64,
    pub damaged: Vec<DamageReport>,
    pub torn_tail: Vec<DamageReport>,
    pub headers: Vec<DamageReport>,
    pub writer_running: bool,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.damaged.is_empty() && self.torn_tail.is_empty() && self.headers.is_empty()
    }
}

/// Whether a writer holds the directory's lock right now.
pub fn writer_running(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = File::open(dir.join(LOCK_FILE)) else { return false };
    // SAFETY: plain syscalls on an owned descriptor.
    let got = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if got {
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
    }
    !got
}

/// Walks every record of every segment and reports what is damaged. Read-only.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    match verify_with_progress(dir, |_| ControlFlow::<Infallible>::Continue(()))? {
        ControlFlow::Continue(report) => Ok(report),
        ControlFlow::Break(never) => match never {},
    }
}

/// How far `verify` is. Bytes are the sizes on disk, when the walk began, of the segment files it
/// reads (plain or compressed: what `pumpwatch.retention.log_bytes` counts, except while a
/// compression finishes, when the plain file is read); a segment's bytes are done as the walk
/// passes them (compressed ones frame by frame), and all of them once the segment is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub segments_done: u64,
    pub segments_total: u64,
}

/// Within a segment, progress is told every this many bytes: a 1 GB segment moves a bar ~250
/// times, and one comparison per record is all the walk pays between two tellings.
pub const VERIFY_PROGRESS_STEP: u64 = 4 << 20;

/// Tells `on_progress` how far the walk is: once before it starts, every
/// [`VERIFY_PROGRESS_STEP`] bytes within a segment, and after each segment (the last telling has
/// `bytes_done == bytes_total` and `segments_done == segments_total`). Never backwards.
struct Ticker<F> {
    on_progress: F,
    at: VerifyProgress,
    segment_base: u64,
    segment_size: u64,
    next: u64,
}

impl<B, F: FnMut(VerifyProgress) -> ControlFlow<B>> Ticker<F> {
    fn begin_segment(&mut self, size: u64) {
        self.segment_base = self.at.bytes_done;
        self.segment_size = size;
        self.next = VERIFY_PROGRESS_STEP;
    }

    /// The walk of the current segment is at byte `within` of its file.
    #[inline]
    fn passed(&mut self, within: u64) -> ControlFlow<B> {
        if within < self.next {
            return ControlFlow::Continue(());
        }
        self.next = within.saturating_add(VERIFY_PROGRESS_STEP);
        // A file that grew since the listing (the live segment) is counted as it was listed.
        self.tell(self.segment_base + within.min(self.segment_size))
    }

    fn end_segment(&mut self) -> ControlFlow<B> {
        self.at.segments_done += 1;
        self.tell(self.segment_base + self.segment_size)
    }

    fn tell(&mut self, done: u64) -> ControlFlow<B> {
        self.at.bytes_done = self.at.bytes_done.max(done);
        (self.on_progress)(self.at)
    }
}

/// [`verify`], telling `on_progress` how far it is (see [`Ticker`]); `on_progress` returning
/// `Break` stops the walk at once and comes back as `Ok(Break)`.
pub fn verify_with_progress<B>(
    dir: &Path,
    on_progress: impl FnMut(VerifyProgress) -> ControlFlow<B>,
) -> Result<ControlFlow<B, VerifyReport>> {
    let mut report = VerifyReport { writer_running: writer_running(dir), ..Default::default() };
    let segments = segment::list_segments(&dir.join(LOG_DIR))?;
    let last = segments.last().map(|(s, _)| *s);
    // A file gone since the listing (retention) counts 0 and is skipped below as before.
    let sizes: Vec<u64> = segments.iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).collect();
    let mut ticker = Ticker {
        on_progress,
        at: VerifyProgress {
            bytes_total: sizes.iter().sum(),
            segments_total: segments.len() as u64,
            ..Default::default()
        },
        segment_base: 0,
        segment_size: 0,
        next: 0,
    };
    if let ControlFlow::Break(b) = ticker.tell(0) {
        return Ok(ControlFlow::Break(b));
    }
    for ((seq, path), size) in segments.into_iter().zip(sizes) {
        ticker.begin_segment(size);
        if let ControlFlow::Break(b) = verify_segment(&mut report, dir, seq, &path, last, &mut ticker)? {
            return Ok(ControlFlow::Break(b));
        }
        if let ControlFlow::Break(b) = ticker.end_segment() {
            return Ok(ControlFlow::Break(b));
        }
    }
    Ok(ControlFlow::Continue(report))
}

/// `verify` of the segment `seq` listed at `path`, plain or compressed.
fn verify_segment<B, F: FnMut(VerifyProgress) -> ControlFlow<B>>(
    report: &mut VerifyReport,
    dir: &Path,
    seq: u64,
    path: &Path,
    last: Option<u64>,
    ticker: &mut Ticker<F>,
) -> Result<ControlFlow<B>> {
    let name = segment::segment_file_name(seq);
    if segment::is_compressed_path(path) {
        return verify_compressed(report, seq, path, ticker);
    }
    let Some(map) = segment::map_readonly(path)? else {
        let compressed = dir.join(LOG_DIR).join(segment::compressed_file_name(seq));
        if compressed.exists() {
            // Compressed since the listing.
            return verify_compressed(report, seq, &compressed, ticker);
        }
        report.headers.push(DamageReport {
            segment: name,
            offset: 0,
            length: 0,
            reason: "[header] empty segment file".into(),
        });
        return Ok(ControlFlow::Continue(()));
    };
    report.segments += 1;
    let live = report.writer_running && Some(seq) == last;
    verify_plain(report, &name, path, &map, live, ticker)
}

fn damage(segment: &str, offset: u64, length: u64, reason: impl Into<String>) -> DamageReport {
    DamageReport { segment: segment.to_owned(), offset, length, reason: reason.into() }
}

/// What a walk of a segment's records adds up to: what a seal vouches for, and the counts.
#[derive(Default)]
struct Totals {
    records: u64,
    crc_chain: u32,
    counts: [u64; 4],
}

impl Totals {
    fn add(&mut self, frame: &[u8], payload: &[u8]) {
        self.records += 1;
        self.crc_chain = segment::chain_frame(self.crc_chain, frame);
        self.counts[payload[0] as usize & 3] += 1;
    }
}

/// Names every way the records differ from what the seal says, unless damage already reported
/// in the segment (`found_before`: the report's size before it was checked) accounts for it.
fn check_totals(report: &mut VerifyReport, name: &str, seal: &segment::Seal, totals: &Totals, found_before: usize) {
    if report_size(report) > found_before {
        return;
    }
    let span = seal.published_end.saturating_sub(HEADER_LEN as u64);
    if totals.records != seal.records {
        report.damaged.push(damage(
            name,
            HEADER_LEN as u64,
            span,
            format!(
                "[seal-totals] the seal counts {} records, the segment holds {} valid ones: records were lost or added after sealing",
                seal.records, totals.records
            ),
        ));
    } else if totals.crc_chain != seal.crc_chain {
        report.damaged.push(damage(
            name,
            HEADER_LEN as u64,
            span,
            "[seal-totals] the records' CRCs do not chain to the seal's checksum: records were replaced after sealing",
        ));
    }
}

fn report_size(r: &VerifyReport) -> usize {
    r.damaged.len() + r.torn_tail.len() + r.headers.len()
}

/// Checks index entries against the records they describe: an entry that passes its own CRC
/// but not the records could make a query skip a block.
/// Entries over `damaged` spans (already reported) are not checked: the damage explains them.
fn check_index(report: &mut VerifyReport, name: &str, blocks: &BlockTally<'_>, damaged: &[Span], what: &str) {
    for (i, e) in blocks.entries.iter().enumerate() {
        if damaged.iter().any(|d| (d.start as u64) < e.end && (d.end as u64) > e.start) {
            continue;
        }
        if !blocks.holds(i) {
            report.damaged.push(damage(
                name,
                e.start,
                e.end.saturating_sub(e.start),
                format!("[index] {what} entry {i} does not match the records of its block (counts, times or bounds)"),
            ));
        }
    }
}

/// What the records walked add up to per index block: the records that start in a block count
/// for it; one that runs past its block's end spoils the block.
struct BlockTally<'a> {
    entries: &'a [IndexEntry],
    seen: Vec<(u32, u32, i64, i64, bool)>,
    k: usize,
}

impl<'a> BlockTally<'a> {
    fn new(entries: &'a [IndexEntry]) -> BlockTally<'a> {
        BlockTally { entries, seen: vec![(0, 0, i64::MAX, i64::MIN, true); entries.len()], k: 0 }
    }

    #[inline]
    fn add(&mut self, off: usize, payload: &[u8]) {
        let off = off as u64;
        while self.k < self.entries.len() && off >= self.entries[self.k].end {
            self.k += 1;
        }
        let Some(e) = self.entries.get(self.k) else { return };
        if off < e.start {
            return;
        }
        let s = &mut self.seen[self.k];
        match record::peek_trade_ts(payload) {
            Some(ts) => {
                s.0 += 1;
                s.2 = s.2.min(ts);
                s.3 = s.3.max(ts);
            }
            None => s.1 += 1,
        }
        if off + (FRAME_HEADER + payload.len()) as u64 > e.end {
            s.4 = false;
        }
    }

    fn holds(&self, i: usize) -> bool {
        let (e, s) = (&self.entries[i], &self.seen[i]);
        s.4 && (s.0, s.1, s.2, s.3) == (e.trades, e.others, e.min_ts, e.max_ts)
    }
}

/// Whether the records of the block `e` (damaged spans skipped, as queries skip them) are what
/// the entry says: the counts and the trade time range. `data[0]` is plain offset `base`.
fn block_holds(data: &[u8], base: usize, e: &IndexEntry) -> bool {
    if (e.start as usize) < HEADER_LEN.max(base) || e.end <= e.start {
        return false;
    }
    let (start, end) = (e.start as usize - base, e.end as usize - base);
    if end > data.len() {
        return false;
    }
    let (mut trades, mut others, mut min_ts, mut max_ts) = (0u32, 0u32, i64::MAX, i64::MIN);
    scan::walk(data, start, end, |_, p| match record::peek_trade_ts(p) {
        Some(ts) => {
            trades += 1;
            min_ts = min_ts.min(ts);
            max_ts = max_ts.max(ts);
        }
        None => others += 1,
    });
    (trades, others, min_ts, max_ts) == (e.trades, e.others, e.min_ts, e.max_ts)
}

/// `verify` of a plain segment: header and seal, file size against the published end, the index
/// and every record. `live`: the writer is at work on this segment.
fn verify_plain<B, F: FnMut(VerifyProgress) -> ControlFlow<B>>(
    report: &mut VerifyReport,
    name: &str,
    path: &Path,
    map: &[u8],
    live: bool,
    ticker: &mut Ticker<F>,
) -> Result<ControlFlow<B>> {
    let found_before = report_size(report);
    let size = map.len();
    let mut end = size;
    let mut published = size;
    let mut seal = None;
    match segment::decode_header(map) {
        HeaderCheck::Ok(h) => {
            published = segment::load_published_end(map) as usize;
            if h.state == STATE_SEALED {
                match segment::check_seal(map) {
                    segment::SealCheck::Altered => {
                        report.headers.push(damage(
                            name,
                            36,
                            28,
                            "[seal] the seal (state, published end, totals) fails its CRC: the published end is not trusted and the whole file is read",
                        ));
                        published = size;
                    }
                    segment::SealCheck::Ok(s) => seal = Some(s),
                    segment::SealCheck::Legacy | segment::SealCheck::Unsealed => {}
                }
                if published > size {
                    report.damaged.push(damage(
                        name,
                        size as u64,
                        (published - size) as u64,
                        "[truncated] sealed segment file ends before its published end (cut short)",
                    ));
                } else if published < size {
                    report.damaged.push(damage(
                        name,
                        published as u64,
                        (size - published) as u64,
                        "[extended] bytes after the sealed segment's published end: no reader reads them",
                    ));
                }
                end = published.min(size);
            } else if live {
                // Beyond the published end the writer is at work: not damage.
                end = published.min(size);
            }
            published = published.min(end);
        }
        HeaderCheck::NewerVersion(v) => {
            return Err(Error::Format {
                path: path.to_owned(),
                detail: format!("format version {v} is newer than this PumpWatch"),
            })
        }
        HeaderCheck::Damaged => report.headers.push(damage(
            name,
            0,
            HEADER_LEN as u64,
            "[header] segment header damaged (magic or CRC wrong); the writer repairs it on open",
        )),
    }
    let mut totals = Totals::default();
    // The index entries are checked in the same pass: each record counts for the block it starts in.
    let entries = index::read_index(&segment::index_path(path), end as u64);
    let mut blocks = BlockTally::new(&entries);
    let walked = scan::walk_published_until(map, HEADER_LEN, end, published, |off, p| {
        // `None`: a step over a damaged span, told like a record so that the bar moves over it.
        if let Some(p) = p {
            totals.add(&map[off..], p);
            blocks.add(off, p);
        }
        ticker.passed(off as u64)
    });
    let outcome = match walked {
        ControlFlow::Continue(outcome) => outcome,
        ControlFlow::Break(b) => return Ok(ControlFlow::Break(b)),
    };
    report.records += outcome.records;
    report.bytes += outcome.valid_end as u64;
    report.trades += totals.counts[1];
    report.markers += totals.counts[2];
    report.quarantined += totals.counts[3];
    for &Span { start, end: to } in &outcome.damaged {
        report.damaged.push(damage(name, start as u64, (to - start) as u64, scan::damage_reason(map, start, end)));
    }
    match outcome.torn {
        Some(Span { start, end: to }) => report.torn_tail.push(damage(
            name,
            start as u64,
            (to - start) as u64,
            format!(
                "{}: invalid bytes after the last valid record (torn write); the writer truncates them on open",
                scan::damage_reason(map, start, end)
            ),
        )),
        // Zeros where the published end says records are: they were there once.
        None if outcome.valid_end < published => report.damaged.push(damage(
            name,
            outcome.valid_end as u64,
            (published - outcome.valid_end) as u64,
            "[length] the records end (zero bytes) before the published end",
        )),
        None => {}
    }
    if let Some(s) = seal {
        check_totals(report, name, &s, &totals, found_before);
    }
    let mut explained = outcome.damaged.clone();
    explained.extend(outcome.torn);
    explained.push(Span { start: outcome.valid_end, end: published.max(outcome.valid_end) });
    check_index(report, name, &blocks, &explained, "index (.pwidx)");
    Ok(ControlFlow::Continue(()))
}

/// `verify` of a compressed segment: its header and frame table, each frame's CRC and zstd
/// checksum, and every record inside. Offsets are positions in the plain segment.
fn verify_compressed<B, F: FnMut(VerifyProgress) -> ControlFlow<B>>(
    report: &mut VerifyReport,
    seq: u64,
    path: &Path,
    ticker: &mut Ticker<F>,
) -> Result<ControlFlow<B>> {
    let name = segment::compressed_file_name(seq);
    let Some(cs) = CompressedSegment::open(path, seq)? else { return Ok(ControlFlow::Continue(())) };
    report.segments += 1;
    let found_before = report_size(report);
    for d in &cs.damage {
        report.headers.push(damage(&name, d.offset, d.length, d.reason.clone()));
    }
    // The seal travels in the copy of the plain header: it must vouch for the plain length.
    let seal = match segment::check_seal(&cs.plain_header) {
        segment::SealCheck::Ok(s) if s.published_end == cs.plain_len => Some(s),
        segment::SealCheck::Ok(s) => {
            report.headers.push(damage(
                &name,
                HEADER_LEN.min(s.published_end as usize) as u64,
                cs.plain_len.abs_diff(s.published_end),
                format!(
                    "[seal] the seal says the segment ends at {}, the compressed file holds {} bytes of it",
                    s.published_end, cs.plain_len
                ),
            ));
            Some(s)
        }
        segment::SealCheck::Altered => {
            report.headers.push(damage(&name, 36, 28, "[seal] the seal in the copied plain header fails its CRC"));
            None
        }
        segment::SealCheck::Legacy | segment::SealCheck::Unsealed => None,
    };
    // Bytes after the last frame belong to nothing.
    let frames_end = cs.blocks.last().map(|b| b.offset.saturating_add(b.len));
    if let Some(fe) = frames_end.filter(|&fe| fe < cs.file_len()) {
        report.damaged.push(damage(
            &name,
            fe,
            cs.file_len() - fe,
            "[extended] bytes after the last compressed frame (offset and length in the compressed file): no reader reads them",
        ));
    }
    let mut buf = Vec::new();
    let mut totals = Totals::default();
    let mut valid_end = HEADER_LEN as u64;
    let last = cs.blocks.len().saturating_sub(1);
    for (i, b) in cs.blocks.iter().enumerate() {
        let base = b.entry.start;
        let decoded = cs.read_block(i, &mut buf);
        if let Err(reason) = &decoded {
            let from = base + buf.len() as u64;
            report.damaged.push(damage(
                &name,
                from,
                b.entry.end.saturating_sub(from),
                format!("[frame] {reason} (offset and length in the decompressed segment)"),
            ));
        }
        let outcome = scan::walk(&buf, 0, buf.len(), |off, p| totals.add(&buf[off..], p));
        report.records += outcome.records;
        if outcome.records > 0 {
            valid_end = base + outcome.valid_end as u64;
        }
        for Span { start, end } in outcome.damaged {
            report.damaged.push(damage(
                &name,
                base + start as u64,
                (end - start) as u64,
                scan::damage_reason(&buf, start, buf.len()),
            ));
        }
        if let Some(Span { start, end }) = outcome.torn {
            // Inside a frame that is not the last, invalid bytes before the next frame's records
            // are damage between records, as in a plain segment.
            let rule = scan::damage_reason(&buf, start, buf.len());
            if i == last {
                report.torn_tail.push(damage(
                    &name,
                    base + start as u64,
                    (end - start) as u64,
                    format!("{rule}: invalid bytes after the last valid record of the segment"),
                ));
            } else {
                report.damaged.push(damage(&name, base + start as u64, (end - start) as u64, rule));
            }
        }
        // The table entry must say what the block holds (a query picks blocks by it).
        if decoded.is_ok() && b.crc.is_some() && !block_holds(&buf, base as usize, &b.entry) {
            report.damaged.push(damage(
                &name,
                base,
                b.entry.end - base,
                format!(
                    "[index] frame table entry {i} does not match the records of its block (counts, times or bounds)"
                ),
            ));
        }
        // Progress in the compressed file: the frame just checked ends there.
        if let ControlFlow::Break(b) = ticker.passed(b.offset.saturating_add(b.len)) {
            return Ok(ControlFlow::Break(b));
        }
    }
    report.bytes += valid_end;
    report.trades += totals.counts[1];
    report.markers += totals.counts[2];
    report.quarantined += totals.counts[3];
    if let Some(s) = seal {
        check_totals(report, &name, &s, &totals, found_before);
    }
    Ok(ControlFlow::Continue(()))
}
