//! Tailing the log: every record in log order from a cursor up to the published end, for
//! replication (the PostgreSQL sink), by a reader in another process (`LogReader`) or by the
//! writer's own process.
//!
//! A cursor is a position in the log: segment sequence number and byte offset of the next record
//! to read. Bytes are read through `SegmentView::data()` only, so sealed segments kept in another
//! form (compressed) read the same. What the tail cannot deliver it reports instead of dropping
//! silently: segments deleted (retention) before the tail got to them, and damaged spans the
//! reader resynchronised over.

use super::reader::{SegmentView, StrColumn, TradeColumns};
use super::scan;
use super::segment::HEADER_LEN;
use super::DamageReport;
use crate::record::{self, Marker, Record, FRAME_HEADER, KIND_MARKER, KIND_QUARANTINE, KIND_TRADE};
use crate::{Error, Result};

/// A position in the log: the next record to read is at `offset` of segment `seq`.
/// `Cursor::START` (segment 0) means "the oldest record the log still holds".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub seq: u64,
    pub offset: u64,
}

impl Cursor {
    pub const START: Cursor = Cursor { seq: 0, offset: 0 };

    pub fn new(seq: u64, offset: u64) -> Cursor {
        Cursor { seq, offset }
    }
}

/// Records the tail could not read because their segments were deleted first (retention ran
/// while the reader lagged, or a segment was removed by hand).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedSpan {
    /// Where reading should have gone on.
    pub from: Cursor,
    /// Where it did go on: the start of the next segment that exists.
    pub resumed_at: Cursor,
    /// Segments missing from `from.seq` up to (not including) `resumed_at.seq`.
    pub segments: u64,
}

/// The most records one call returns: keeps every string column far below Arrow's 2 GiB limit
/// (a trade carries at most ~1 KiB of text).
pub const MAX_RECORDS_PER_CALL: usize = 1_000_000;

/// What one `tail` call read.
#[derive(Clone, Debug, Default)]
pub struct TailBatch {
    /// Trades (non-trades included: they keep id sequences whole) in log order.
    pub trades: TradeColumns,
    /// Log position of each trade: segment and byte offset of its record.
    pub trade_seq: Vec<i64>,
    pub trade_offset: Vec<i64>,
    /// Markers in log order, with their positions.
    pub markers: Vec<(Cursor, Marker)>,
    /// Quarantined raw frames passed over (counted; a replica keeps trades and markers).
    pub quarantined: u64,
    /// Records read (trades + markers + quarantined).
    pub records: u64,
    /// Where the next call goes on.
    pub next: Cursor,
    /// The published end of the log when this call read it.
    pub end: Cursor,
    /// Whether `next` is the published end (nothing more to read right now).
    pub caught_up: bool,
    pub skipped: Vec<SkippedSpan>,
    pub damaged: Vec<DamageReport>,
    /// Bytes of records between `next` and `end` (exact).
    pub bytes_behind: u64,
    /// Records between `next` and `end`: exact for whole index blocks, estimated by size for the
    /// block `next` is inside and for the part of the active segment not indexed yet.
    pub records_behind: u64,
}

fn push_str(c: &mut StrColumn, s: &[u8]) {
    if c.offsets.is_empty() {
        c.offsets.push(0);
    }
    c.data.extend_from_slice(s);
    // At most MAX_RECORDS_PER_CALL trades of at most ~1 KiB of text: fits i32.
    c.offsets.push(c.data.len() as i32);
}

fn empty_columns() -> TradeColumns {
    let col = || StrColumn { offsets: vec![0], data: Vec::new() };
    TradeColumns {
        len: 0,
        venue: col(),
        symbol: col(),
        trade_id: col(),
        price: col(),
        qty: col(),
        side: col(),
        ts_ns: Vec::new(),
        recv_ns: Vec::new(),
        flags: Vec::new(),
    }
}

impl TailBatch {
    fn take(&mut self, seq: u64, off: usize, payload: &[u8]) {
        self.records += 1;
        match payload[0] {
            KIND_TRADE => {
                // The walk only hands over records that decode.
                let Ok(t) = record::decode_trade(payload) else { return };
                let c = &mut self.trades;
                push_str(&mut c.venue, t.venue.id().as_bytes());
                push_str(&mut c.symbol, t.symbol);
                record::render_id(payload, t.trade_id, &mut c.trade_id.data);
                c.trade_id.offsets.push(c.trade_id.data.len() as i32);
                push_str(&mut c.price, t.price);
                push_str(&mut c.qty, t.qty);
                push_str(&mut c.side, t.side.as_str().as_bytes());
                c.ts_ns.push(t.ts_ns);
                c.recv_ns.push(t.recv_ns);
                c.flags.push(t.flags);
                c.len += 1;
                self.trade_seq.push(seq as i64);
                self.trade_offset.push(off as i64);
            }
            KIND_MARKER => {
                if let Ok(Record::Marker(m)) = record::decode(payload) {
                    self.markers.push((Cursor::new(seq, off as u64), m));
                }
            }
            KIND_QUARANTINE => self.quarantined += 1,
            _ => {}
        }
    }
}

/// Reads the records of `view` from `from` in log order until `budget` records are taken or the
/// view's end is reached; returns where it stopped (always a record boundary or the view's end).
fn read_segment(view: &SegmentView, from: usize, budget: &mut usize, is_last: bool, out: &mut TailBatch) -> usize {
    let Some(data) = view.plain_bytes() else {
        // A compressed (sealed) segment: its blocks are decoded by the view; offsets stay those
        // of the plain segment, so a cursor saved before the compression still points right.
        if *budget == 0 {
            return from;
        }
        let mut stopped_at = None;
        let damaged = view.records_from(from, |off, payload| {
            out.take(view.seq, off, payload);
            *budget -= 1;
            if *budget == 0 {
                stopped_at = Some(off + FRAME_HEADER + payload.len());
            }
            *budget > 0
        });
        for span in damaged {
            out.damaged.push(DamageReport {
                segment: view.name.clone(),
                offset: span.start as u64,
                length: (span.end - span.start) as u64,
                reason:
                    "damaged bytes in a compressed segment (offsets in the decompressed segment); skipped by the tail"
                        .into(),
            });
        }
        return stopped_at.unwrap_or(view.end);
    };
    let end = view.end.min(data.len());
    let mut off = from;
    while off < end && *budget > 0 {
        // The same validity rule as `scan::walk` (one frame at a time, so a call stops after
        // `budget` records instead of checking the rest of a large segment every time).
        if let Some(payload) = scan::frame_at(data, off, end) {
            out.take(view.seq, off, payload);
            *budget -= 1;
            off += FRAME_HEADER + payload.len();
            continue;
        }
        match scan::resync(data, off + 1, end) {
            Some(next) => {
                out.damaged.push(DamageReport {
                    segment: view.name.clone(),
                    offset: off as u64,
                    length: (next - off) as u64,
                    reason: "bytes between valid records fail their length or CRC check; skipped by the tail".into(),
                });
                off = next;
            }
            None if !is_last => {
                out.damaged.push(DamageReport {
                    segment: view.name.clone(),
                    offset: off as u64,
                    length: (end - off) as u64,
                    reason: "invalid bytes up to the end of a sealed segment; skipped by the tail".into(),
                });
                off = end;
            }
            // In the segment being written, invalid bytes with nothing valid after them yet stay
            // unread: once the writer appends after them they are a damaged span (reported then),
            // and a writer's recovery may still cut them as a torn tail.
            None => break,
        }
    }
    off
}

/// Records of `view` from `from` to its end: exact for index blocks wholly after `from`, prorated
/// by bytes for the block `from` falls in and for the part not indexed yet.
fn records_after(view: &SegmentView, from: usize) -> u64 {
    let end = view.end;
    if from >= end {
        return 0;
    }
    let (mut exact, mut prorated) = (0u64, 0f64);
    let (mut idx_records, mut idx_bytes) = (0u64, 0u64);
    for e in view.entries.iter() {
        let n = (e.trades + e.others) as u64;
        idx_records += n;
        idx_bytes += e.end - e.start;
        let (s, t) = (e.start as usize, e.end as usize);
        if s >= from {
            exact += n;
        } else if t > from {
            prorated += n as f64 * (t - from) as f64 / (t - s) as f64;
        }
    }
    let indexed_end = view.entries.last().map_or(HEADER_LEN, |e| e.end as usize);
    let tail_from = indexed_end.max(from);
    if end > tail_from {
        // A typical trade record is ~80 bytes; the segment's own average when it has one.
        let per_record = if idx_records > 0 { idx_bytes as f64 / idx_records as f64 } else { 80.0 };
        prorated += (end - tail_from) as f64 / per_record;
    }
    exact + prorated.round() as u64
}

/// Reads up to about `max_records` records in log order from `from` across `views` (oldest
/// first, as `SegmentSet::refresh` / `LogWriter::views` give them). Segments missing between the
/// cursor and the next one that exists are reported in `skipped`; damaged spans in `damaged`.
/// A cursor past the end of the log (the directory was replaced) is an error that says so.
pub fn tail(views: &[SegmentView], from: Cursor, max_records: usize) -> Result<TailBatch> {
    let mut out = TailBatch { trades: empty_columns(), next: from, end: from, ..Default::default() };
    let Some(last) = views.last() else {
        out.caught_up = true;
        return Ok(out);
    };
    out.end = Cursor::new(last.seq, last.end as u64);
    let past_end = || {
        Err(Error::InvalidInput(format!(
            "the tail's cursor (segment {}, byte {}) is past the end of the log (segment {}, byte {}): the \
             data directory was replaced or restored from an older copy since the cursor was saved; reset \
             the cursor of this collector to start over from the oldest record",
            from.seq, from.offset, last.seq, last.end
        )))
    };
    if from.seq > last.seq {
        return past_end();
    }
    let mut i = views.iter().position(|v| v.seq >= from.seq).unwrap_or(views.len() - 1);
    let mut cur = from;
    if views[i].seq != from.seq {
        let resumed_at = Cursor::new(views[i].seq, HEADER_LEN as u64);
        if from.seq != 0 {
            out.skipped.push(SkippedSpan { from, resumed_at, segments: views[i].seq - from.seq });
        }
        cur = resumed_at;
    }
    let mut budget = max_records.clamp(1, MAX_RECORDS_PER_CALL);
    loop {
        let v = &views[i];
        let is_last = i + 1 == views.len();
        let start = (cur.offset as usize).max(HEADER_LEN);
        if start > v.end {
            return past_end();
        }
        let stopped = read_segment(v, start, &mut budget, is_last, &mut out);
        cur = Cursor::new(v.seq, stopped as u64);
        if stopped < v.end || is_last {
            break;
        }
        // A later segment exists only once this one is complete: the writer publishes each
        // piece it writes and creates the next segment before writing there.
        let next = &views[i + 1];
        let resumed_at = Cursor::new(next.seq, HEADER_LEN as u64);
        if next.seq > v.seq + 1 {
            out.skipped.push(SkippedSpan {
                from: Cursor::new(v.seq + 1, HEADER_LEN as u64),
                resumed_at,
                segments: next.seq - v.seq - 1,
            });
        }
        cur = resumed_at;
        i += 1;
        if budget == 0 {
            break;
        }
    }
    out.next = cur;
    out.caught_up = cur.seq == last.seq && cur.offset as usize >= last.end;
    for v in &views[i..] {
        let from = if v.seq == cur.seq { (cur.offset as usize).max(HEADER_LEN) } else { HEADER_LEN };
        out.bytes_behind += v.end.saturating_sub(from) as u64;
        out.records_behind += records_after(v, from);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::reader::LogReader;
    use crate::log::{LogConfig, LogWriter};
    use crate::record::{MarkerKind, Trade};
    use std::time::Duration;

    fn cfg(segment_max_bytes: u64) -> LogConfig {
        LogConfig {
            fsync_interval: Duration::from_secs(3600),
            segment_span: Duration::from_secs(3600),
            segment_max_bytes,
            prealloc_chunk: 64 << 10,
            zstd_level: 0,
        }
    }

    fn trade(i: u64) -> Trade {
        let ts = 1_790_370_834_848_000_000 + (i as i64 % 7) * 1000;
        Trade::new("okx-spot", "BTC-USDT", &format!("{}", 1000 + i), "30243.50", "0.001", "buy", ts, ts + 5, 0).unwrap()
    }

    fn marker(i: u64) -> Marker {
        Marker {
            kind: MarkerKind::ConnectionDown,
            venue: None,
            symbol: String::new(),
            ts_ns: i as i64,
            from_ts_ns: 0,
            to_ts_ns: 0,
            from_id: String::new(),
            to_id: String::new(),
            detail: format!("m{i}"),
        }
    }

    /// Appends `n` trades (a marker after every 100th) in batches; returns the trade ids in order.
    fn fill(w: &mut LogWriter, first: u64, n: u64) -> Vec<String> {
        let mut ids = Vec::new();
        let mut i = first;
        while i < first + n {
            let batch: Vec<Trade> = (i..(i + 37).min(first + n)).map(trade).collect();
            w.append_trades(batch.iter().map(Trade::as_ref)).unwrap();
            for t in &batch {
                ids.push(t.trade_id.clone());
                if (t.trade_id.parse::<u64>().unwrap() - 1000) % 100 == 99 {
                    w.append_marker(&marker(i)).unwrap();
                }
            }
            i += batch.len() as u64;
        }
        ids
    }

    fn ids(b: &TailBatch) -> Vec<String> {
        (0..b.trades.len).map(|i| String::from_utf8(b.trades.trade_id.get(i).to_vec()).unwrap()).collect()
    }

    /// Tails everything with `step` records per call; returns ids, markers and the last batch.
    fn drain(views: &[SegmentView], mut c: Cursor, step: usize) -> (Vec<String>, usize, TailBatch, Cursor) {
        let (mut all, mut markers) = (Vec::new(), 0);
        loop {
            let b = tail(views, c, step).unwrap();
            assert!(b.records as usize <= step, "a call returns at most its budget");
            all.extend(ids(&b));
            markers += b.markers.len();
            assert!(b.next >= c, "the cursor never goes back");
            c = b.next;
            if b.caught_up {
                return (all, markers, b, c);
            }
            assert!(b.records > 0 || !b.skipped.is_empty(), "a call that is not caught up makes progress");
        }
    }

    #[test]
    fn reads_every_record_once_in_log_order_across_segments_and_resumes_from_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), cfg(64 << 10)).unwrap();
        let written = fill(&mut w, 0, 6000);
        let views = w.views().unwrap();
        assert!(views.len() > 4, "small segments: the log rolled");
        for step in [1, 7, 1000, 1_000_000] {
            let (got, markers, last, _) = drain(&views, Cursor::START, step);
            assert_eq!(got, written, "step {step}");
            assert_eq!(markers, 60);
            assert_eq!((last.bytes_behind, last.records_behind), (0, 0));
        }
        // Resume: stop half way, append more, go on from the saved cursor.
        let first = tail(&views, Cursor::START, 3000).unwrap();
        assert!(!first.caught_up && first.records == 3000);
        // 3060 records are left; the estimate is within 10 %.
        assert!(first.records_behind > 2750 && first.records_behind < 3370, "estimate {}", first.records_behind);
        let more = fill(&mut w, 6000, 500);
        let views = w.views().unwrap();
        let (rest, _, _, _) = drain(&views, first.next, 333);
        let mut all = ids(&first);
        all.extend(rest);
        let expected: Vec<String> = written.iter().chain(more.iter()).cloned().collect();
        // 3000 records include markers, so compare the trades only.
        assert_eq!(all, expected);
    }

    #[test]
    fn compressed_segments_tail_the_same_and_cursors_saved_before_compression_stay_valid() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), LogConfig { zstd_level: 3, ..cfg(64 << 10) }).unwrap();
        let written = fill(&mut w, 0, 6000);
        // A cursor saved while the segments were still plain...
        let half = tail(&w.views().unwrap(), Cursor::START, 2500).unwrap();
        assert!(w.compressor().expect("compression is on").wait_idle(Duration::from_secs(60)));
        let views = w.views().unwrap();
        assert!(views.iter().filter(|v| v.plain_bytes().is_none()).count() > 3, "sealed segments were compressed");
        for step in [1, 7, 1000, 1_000_000] {
            let (got, markers, last, _) = drain(&views, Cursor::START, step);
            assert_eq!(got, written, "step {step}");
            assert_eq!(markers, 60);
            assert!(last.damaged.is_empty());
        }
        // ...goes on from the same record in the compressed copy.
        let (rest, _, _, _) = drain(&views, half.next, 100);
        let mut all = ids(&half);
        all.extend(rest);
        assert_eq!(all, written);
    }

    #[test]
    fn a_reader_in_another_process_sees_the_same_records_as_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), cfg(64 << 10)).unwrap();
        let written = fill(&mut w, 0, 2000);
        let mut r = LogReader::open(dir.path()).unwrap();
        let (got, _, last, end) = drain(&r.views().unwrap(), Cursor::START, 256);
        assert_eq!(got, written);
        assert_eq!(end, last.end);
        // Appends after the reader caught up show up on its next refresh.
        let more = fill(&mut w, 2000, 100);
        let (got, _, _, _) = drain(&r.views().unwrap(), end, 256);
        assert_eq!(got, more);
    }

    #[test]
    fn segments_deleted_before_the_tail_read_them_are_reported_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), cfg(64 << 10)).unwrap();
        let written = fill(&mut w, 0, 8000);
        let views = w.views().unwrap();
        assert!(views.len() >= 8, "{} segments", views.len());
        let first = tail(&views, Cursor::START, 10).unwrap();
        // Retention deletes segments 1..=3 (the cursor is inside segment 1).
        for seq in 1..=3u64 {
            std::fs::remove_file(dir.path().join("log").join(crate::log::segment::segment_file_name(seq))).unwrap();
        }
        let mut r = LogReader::open(dir.path()).unwrap();
        let views = r.views().unwrap();
        assert_eq!(views[0].seq, 4);
        let b = tail(&views, first.next, 1_000_000).unwrap();
        assert_eq!(
            b.skipped,
            vec![SkippedSpan { from: first.next, resumed_at: Cursor::new(4, HEADER_LEN as u64), segments: 3 }]
        );
        let got = ids(&b);
        assert_eq!(got.last(), written.last());
        assert!(got.len() < written.len() - 10);
        // A hole in the middle (a segment removed by hand) is reported the same way.
        std::fs::remove_file(dir.path().join("log").join(crate::log::segment::segment_file_name(6))).unwrap();
        let views = r.views().unwrap();
        let b = tail(&views, Cursor::new(5, HEADER_LEN as u64), 1_000_000).unwrap();
        assert_eq!(
            b.skipped,
            vec![SkippedSpan {
                from: Cursor::new(6, HEADER_LEN as u64),
                resumed_at: Cursor::new(7, HEADER_LEN as u64),
                segments: 1
            }]
        );
        // Starting from scratch on a log whose head is gone is not a skip: it never was read.
        assert!(tail(&views, Cursor::START, 10).unwrap().skipped.is_empty());
    }

    #[test]
    fn a_damaged_span_is_reported_and_skipped_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), cfg(1 << 30)).unwrap();
        let written = fill(&mut w, 0, 300);
        w.sync_now().unwrap();
        drop(w);
        let seg = dir.path().join("log").join(crate::log::segment::segment_file_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        // Flip a byte inside the 11th record's payload.
        let mut off = HEADER_LEN;
        for _ in 0..10 {
            off += FRAME_HEADER + u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        }
        bytes[off + FRAME_HEADER + 20] ^= 0x55;
        std::fs::write(&seg, &bytes).unwrap();
        let mut r = LogReader::open(dir.path()).unwrap();
        let (got, _, _, _) = drain(&r.views().unwrap(), Cursor::START, 1_000_000);
        let mut expected = written.clone();
        expected.remove(10);
        assert_eq!(got, expected);
        let b = tail(&r.views().unwrap(), Cursor::START, 1_000_000).unwrap();
        assert_eq!(b.damaged.len(), 1);
        assert_eq!(b.damaged[0].offset as usize, off);
    }

    #[test]
    fn a_cursor_past_the_end_of_the_log_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), cfg(1 << 30)).unwrap();
        fill(&mut w, 0, 10);
        let views = w.views().unwrap();
        for c in [Cursor::new(9, HEADER_LEN as u64), Cursor::new(1, 1 << 20)] {
            let e = tail(&views, c, 10).unwrap_err().to_string();
            assert!(e.contains("past the end of the log") && e.contains("reset"), "{e}");
        }
        let b = tail(&[], Cursor::START, 10).unwrap();
        assert!(b.caught_up && b.records == 0);
    }
}
