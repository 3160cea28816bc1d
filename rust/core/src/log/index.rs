//! The sparse time index: one entry per ~64 KiB block of records with the block's exchange-time
//! range, so a window query reads only the blocks that can hold its trades. It is a hint: any
//! entry that fails its CRC or does not chain is ignored and the records are scanned instead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::fault;
use super::scan;
use super::segment::{self, HEADER_LEN};
use crate::record::{self, FRAME_HEADER};
use crate::{Error, Result};

pub const INDEX_MAGIC: [u8; 8] = *b"PWINDEX1";
pub const INDEX_VERSION: u16 = 1;
pub const INDEX_HEADER_LEN: usize = 16;
pub const ENTRY_LEN: usize = 48;
pub const BLOCK_BYTES: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub start: u64,
    pub end: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub trades: u32,
    pub others: u32,
}

impl IndexEntry {
    fn empty(start: u64) -> IndexEntry {
        IndexEntry { start, end: start, min_ts: i64::MAX, max_ts: i64::MIN, trades: 0, others: 0 }
    }

    /// Whether the block may hold a trade with `start <= ts < end`.
    #[inline]
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.trades > 0 && self.min_ts < end && self.max_ts >= start
    }

    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.start.to_le_bytes());
        b[8..16].copy_from_slice(&self.end.to_le_bytes());
        b[16..24].copy_from_slice(&self.min_ts.to_le_bytes());
        b[24..32].copy_from_slice(&self.max_ts.to_le_bytes());
        b[32..36].copy_from_slice(&self.trades.to_le_bytes());
        b[36..40].copy_from_slice(&self.others.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<IndexEntry> {
        if b.len() < ENTRY_LEN {
            return None;
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if crc32c::crc32c(&b[0..40]) != u32_at(40) {
            return None;
        }
        Some(IndexEntry {
            start: u64_at(0),
            end: u64_at(8),
            min_ts: u64_at(16) as i64,
            max_ts: u64_at(24) as i64,
            trades: u32_at(32),
            others: u32_at(36),
        })
    }
}

/// Accumulates records into blocks as they are appended (or walked during recovery).
#[derive(Clone, Debug)]
pub struct BlockBuilder {
    current: IndexEntry,
}

impl BlockBuilder {
    pub fn new(start: u64) -> BlockBuilder {
        BlockBuilder { current: IndexEntry::empty(start) }
    }

    /// Continues filling a block that recovery found unfinished.
    pub fn resume(partial: IndexEntry) -> BlockBuilder {
        BlockBuilder { current: partial }
    }

    /// Extends the block over bytes that hold no valid record (a damaged span).
    pub fn skip_to(&mut self, off: u64) {
        self.current.end = self.current.end.max(off);
    }

    /// Adds the record at `off`; returns the finished block when this record completes one.
    #[inline]
    pub fn observe(&mut self, off: u64, payload: &[u8]) -> Option<IndexEntry> {
        let c = &mut self.current;
        debug_assert_eq!(off, c.end);
        c.end = off + (FRAME_HEADER + payload.len()) as u64;
        match record::peek_trade_ts(payload) {
            Some(ts) => {
                c.trades += 1;
                c.min_ts = c.min_ts.min(ts);
                c.max_ts = c.max_ts.max(ts);
            }
            None => c.others += 1,
        }
        if c.end - c.start >= BLOCK_BYTES {
            let done = *c;
            *c = IndexEntry::empty(done.end);
            Some(done)
        } else {
            None
        }
    }

    /// The unfinished block, if it holds any record.
    pub fn pending(&self) -> Option<IndexEntry> {
        (self.current.end > self.current.start).then_some(self.current)
    }
}

fn index_header() -> [u8; INDEX_HEADER_LEN] {
    let mut h = [0u8; INDEX_HEADER_LEN];
    h[0..8].copy_from_slice(&INDEX_MAGIC);
    h[8..10].copy_from_slice(&INDEX_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(ENTRY_LEN as u16).to_le_bytes());
    h
}

/// The valid, chained entries of an index file that lie within `segment_end`.
pub fn read_index(path: &Path, segment_end: u64) -> Vec<IndexEntry> {
    let mut bytes = Vec::new();
    let ok = File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).is_ok();
    if !ok || bytes.len() < INDEX_HEADER_LEN || bytes[0..8] != INDEX_MAGIC {
        return Vec::new();
    }
    let mut out = Vec::with_capacity((bytes.len() - INDEX_HEADER_LEN) / ENTRY_LEN);
    let mut expect_start = HEADER_LEN as u64;
    for chunk in bytes[INDEX_HEADER_LEN..].chunks_exact(ENTRY_LEN) {
        match IndexEntry::decode(chunk) {
            Some(e) if e.start == expect_start && e.end > e.start && e.end <= segment_end => {
                expect_start = e.end;
                out.push(e);
            }
            _ => break,
        }
    }
    out
}

/// Replaces an index file with `entries` (write to a temporary name, then rename).
pub fn write_index(path: &Path, entries: &[IndexEntry]) -> Result<()> {
    let tmp = segment::index_tmp_path(path);
    let mut buf = Vec::with_capacity(INDEX_HEADER_LEN + entries.len() * ENTRY_LEN);
    buf.extend_from_slice(&index_header());
    for e in entries {
        buf.extend_from_slice(&e.encode());
    }
    fault::point(fault::INDEX_WRITE)
        .and_then(|_| std::fs::write(&tmp, &buf))
        .map_err(|e| Error::io(format!("writing index {}", tmp.display()), e))?;
    fault::point(fault::INDEX_RENAME)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("renaming index {}", path.display()), e))
}

/// Appends entries to the active segment's index as blocks complete.
pub struct IndexAppender {
    file: File,
    path: std::path::PathBuf,
}

impl IndexAppender {
    /// Opens `path` for appending; the caller has just rewritten it with `write_index`.
    pub fn open(path: &Path) -> Result<IndexAppender> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening index {}", path.display()), e))?;
        Ok(IndexAppender { file, path: path.to_owned() })
    }

    pub fn append(&mut self, e: &IndexEntry) -> Result<()> {
        fault::point(fault::INDEX_APPEND)
            .and_then(|_| self.file.write_all(&e.encode()))
            .map_err(|err| Error::io(format!("appending to the time index {}", self.path.display()), err))
    }
}

/// Builds a segment's index by walking it (when its index file is missing or short).
pub fn build_index(data: &[u8], end: usize) -> (Vec<IndexEntry>, scan::WalkOutcome) {
    build_index_from(data, HEADER_LEN, end, end)
}

/// Builds the index entries of `data[start..end]` by walking its records (damage is skipped
/// only before `published`; see `scan::walk_published`).
pub fn build_index_from(
    data: &[u8],
    start: usize,
    end: usize,
    published: usize,
) -> (Vec<IndexEntry>, scan::WalkOutcome) {
    build_index_passing(data, start, end, published, |_| {})
}

/// `build_index_from`, telling `passed` the end of each record walked (a caller that maps the
/// bytes can give back the pages behind it as the walk goes).
pub fn build_index_passing(
    data: &[u8],
    start: usize,
    end: usize,
    published: usize,
    mut passed: impl FnMut(usize),
) -> (Vec<IndexEntry>, scan::WalkOutcome) {
    let mut builder = BlockBuilder::new(start as u64);
    let mut entries = Vec::new();
    let mut last_end = start as u64;
    let outcome = scan::walk_published(data, start, end, published, |off, payload| {
        if off as u64 != last_end {
            // A damaged span was skipped: the block spans it, so the entries keep chaining and a
            // query walks (and resyncs over) the damage instead of losing the index after it.
            builder.skip_to(off as u64);
        }
        if let Some(done) = builder.observe(off as u64, payload) {
            entries.push(done);
        }
        last_end = (off + FRAME_HEADER + payload.len()) as u64;
        passed(last_end as usize);
    });
    if let Some(p) = builder.pending() {
        entries.push(p);
    }
    (entries, outcome)
}

/// Whether every record of the block `e` is valid and the block holds exactly what its entry says.
fn block_checks_out(data: &[u8], e: &IndexEntry) -> bool {
    let (mut off, end) = (e.start as usize, e.end as usize);
    let mut check = BlockBuilder::new(e.start);
    let mut done = None;
    while off < end {
        let Some(p) = scan::frame_at(data, off, end) else { return false };
        done = check.observe(off as u64, p).or(done);
        off += FRAME_HEADER + p.len();
    }
    let seen = done.or(check.pending());
    seen.is_some_and(|s| {
        s.end == e.end && s.trades == e.trades && s.others == e.others && s.min_ts == e.min_ts && s.max_ts == e.max_ts
    })
}

/// The leading entries of `entries` whose blocks check out, verified on two threads.
pub fn verified_prefix(data: &[u8], entries: &[IndexEntry]) -> Vec<IndexEntry> {
    let half = entries.len() / 2;
    let (a, b) = entries.split_at(half);
    let first_bad = |part: &[IndexEntry]| part.iter().position(|e| !block_checks_out(data, e));
    let (bad_a, bad_b) = std::thread::scope(|s| {
        let other = s.spawn(|| first_bad(b));
        let mine = first_bad(a);
        (mine, other.join().unwrap_or(Some(0)))
    });
    let good = match (bad_a, bad_b) {
        (Some(i), _) => i,
        (None, Some(j)) => half + j,
        (None, None) => entries.len(),
    };
    entries[..good].to_vec()
}

/// The seal's CRC chain over the records of `verified`: leading blocks `verified_prefix` has just
/// checked record by record, so they start at the first record and follow each other without a
/// gap. It steps by the frames' lengths instead of checking every record a second time on one core
/// (that second check made reopening a 1 GB segment six times slower than the parallel one alone).
pub fn chain_of_verified(data: &[u8], verified: &[IndexEntry]) -> u32 {
    let (Some(first), Some(last)) = (verified.first(), verified.last()) else { return 0 };
    let end = (last.end as usize).min(data.len());
    let (mut chain, mut off) = (0, first.start as usize);
    while off + FRAME_HEADER <= end {
        let len = u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        if len == 0 {
            break;
        }
        chain = segment::chain_frame(chain, &data[off..]);
        off += FRAME_HEADER + len;
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_chain() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pwidx");
        let a = IndexEntry { start: 64, end: 70000, min_ts: 5, max_ts: 9, trades: 3, others: 1 };
        let b = IndexEntry { start: 70000, end: 140000, min_ts: 1, max_ts: 2, trades: 1, others: 0 };
        let gap = IndexEntry { start: 150000, end: 160000, min_ts: 1, max_ts: 2, trades: 1, others: 0 };
        write_index(&p, &[a, b, gap]).unwrap();
        assert_eq!(read_index(&p, 1 << 20), vec![a, b]);
        assert_eq!(read_index(&p, 100000), vec![a]);
        let mut raw = std::fs::read(&p).unwrap();
        raw[INDEX_HEADER_LEN + 3] ^= 1;
        std::fs::write(&p, raw).unwrap();
        assert!(read_index(&p, 1 << 20).is_empty());
        assert!(a.overlaps(9, 10) && !a.overlaps(10, 20) && a.overlaps(0, 6) && !a.overlaps(0, 5));
    }

    /// The chain of the trusted blocks, stepped by lengths, and the rest walked, is the chain a
    /// reader's walk of the whole segment folds (damage skipped), with and without damage.
    #[test]
    fn the_chain_of_verified_blocks_plus_the_walked_rest_is_the_whole_walk() {
        use crate::record::{frame_into, Trade};
        let mut data = vec![0u8; HEADER_LEN];
        let mut offs = Vec::new();
        for i in 0..6000i64 {
            offs.push(data.len());
            let t = Trade::new("okx-spot", "BTC-USDT", &format!("{}", 1000 + i), "30243.5", "0.001", "buy", i, i, 0)
                .unwrap();
            frame_into(&mut data, |o| t.as_ref().encode_payload(o));
        }
        let end = data.len();
        let (entries, _) = build_index_from(&data, HEADER_LEN, end, end);
        assert!(entries.len() >= 4, "several blocks: {}", entries.len());
        let whole_walk = |d: &[u8]| {
            let mut chain = 0;
            scan::walk(d, HEADER_LEN, end, |off, _| chain = segment::chain_frame(chain, &d[off..]));
            chain
        };
        let mut damaged = data.clone();
        damaged[offs[4000] + 12] ^= 0x5a;
        for d in [&data, &damaged] {
            let trusted = verified_prefix(d, &entries);
            let walk_from = trusted.last().map_or(HEADER_LEN, |e| e.end as usize);
            let mut chain = chain_of_verified(d, &trusted);
            scan::walk(d, walk_from, end, |off, _| chain = segment::chain_frame(chain, &d[off..]));
            assert_eq!(chain, whole_walk(d));
        }
        assert_eq!(verified_prefix(&data, &entries).len(), entries.len());
        let kept = verified_prefix(&damaged, &entries).len();
        assert!(kept > 0 && kept < entries.len());
        assert_ne!(whole_walk(&data), whole_walk(&damaged));
        assert_eq!(chain_of_verified(&data, &[]), 0);
    }
}
