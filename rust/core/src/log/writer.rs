//! The one writer of a data directory: recovery on open, appends through the map, group
//! commit, rolling and sealing segments.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::compress::{self, CompressionStats, Compressor};
use super::index::{self, BlockBuilder, IndexAppender, IndexEntry, BLOCK_BYTES};
use super::reader::{self, SegmentBytes, SegmentSet, SegmentView, LOCK_FILE, LOG_DIR};
use super::scan::Span;
use super::segment::{self, ActiveMap, Header, HeaderCheck, HEADER_LEN, STATE_ACTIVE, STATE_SEALED};
use super::{now_ns, DamageReport};
use crate::record::{self, frame_into, Marker, Quarantined, TradeRef, FRAME_HEADER, MAX_PAYLOAD};
use crate::ring::{RingShared, RingWriter};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Group commit period; zero commits every batch before `append` returns.
    pub fsync_interval: Duration,
    /// A segment is rolled once it is this old.
    pub segment_span: Duration,
    /// A segment is rolled before it would pass this size.
    pub segment_max_bytes: u64,
    /// Disk is reserved for the active segment in steps of this size.
    pub prealloc_chunk: u64,
    /// zstd level sealed segments are compressed with, in the background; 0 keeps them plain.
    pub zstd_level: i32,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            fsync_interval: Duration::from_secs(1),
            segment_span: Duration::from_secs(3600),
            segment_max_bytes: 1 << 30,
            prealloc_chunk: 64 << 20,
            zstd_level: compress::DEFAULT_LEVEL,
        }
    }
}

impl LogConfig {
    pub fn check(&self) -> Result<()> {
        if self.segment_max_bytes < (1 << 16) {
            return Err(Error::InvalidInput(format!(
                "segment_max_bytes {} is too small; use at least 65536",
                self.segment_max_bytes
            )));
        }
        if self.segment_max_bytes > (1 << 40) {
            return Err(Error::InvalidInput(format!(
                "segment_max_bytes {} is too large; use at most 1 TiB",
                self.segment_max_bytes
            )));
        }
        if self.segment_span.is_zero() {
            return Err(Error::InvalidInput("segment_span must be positive".into()));
        }
        if self.prealloc_chunk < 4096 {
            return Err(Error::InvalidInput("prealloc_chunk must be at least 4096 bytes".into()));
        }
        if !(0..=compress::MAX_LEVEL).contains(&self.zstd_level) {
            return Err(Error::InvalidInput(format!(
                "zstd_level {} is out of range; use 1 (fastest) to {} (smallest), 3 being the default, or 0 to keep sealed segments uncompressed",
                self.zstd_level,
                compress::MAX_LEVEL
            )));
        }
        Ok(())
    }

    fn map_len(&self) -> usize {
        // Room for a segment at its limit plus one record that is larger than the rest allowed.
        (self.segment_max_bytes as usize + MAX_PAYLOAD + FRAME_HEADER + HEADER_LEN).next_multiple_of(4096)
    }

    fn piece_limit(&self) -> usize {
        self.segment_max_bytes as usize - HEADER_LEN
    }
}

/// What recovery found and did when the writer opened the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: u64,
    pub records_in_active: u64,
    /// Bytes cut off the end of the active segment (a torn or corrupt tail).
    pub truncated: Vec<DamageReport>,
    /// Where the cut bytes were saved, for forensics.
    pub saved_to: Vec<PathBuf>,
    /// Damaged spans between valid records: kept in place, skipped by readers.
    pub damaged: Vec<DamageReport>,
    /// Segments left active by a crash and sealed now.
    pub sealed: Vec<String>,
    pub headers_repaired: Vec<String>,
    /// Compressions a crash interrupted, finished or discarded (never both copies lost).
    pub compression: Vec<String>,
}

/// Durability work to do outside the writer's lock.
pub struct SyncJob {
    ranges: Vec<(Arc<ActiveMap>, usize, usize)>,
    datasync: Option<Arc<ActiveMap>>,
}

impl SyncJob {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.datasync.is_none()
    }

    pub fn run(self) -> std::io::Result<()> {
        for (map, from, to) in &self.ranges {
            map.sync_range(*from, *to)?;
            // On disk now: out of the resident set (the header page stays: it is rewritten).
            map.release((*from).max(HEADER_LEN), *to);
        }
        if let Some(map) = self.datasync {
            map.file.sync_data()?;
        }
        Ok(())
    }
}

struct Active {
    map: Arc<ActiveMap>,
    created_ns: i64,
    end: usize,
    allocated: usize,
    entries: Vec<IndexEntry>,
    block: BlockBuilder,
    index: IndexAppender,
    /// Start of the bytes not yet committed to disk.
    dirty_from: usize,
    /// End of the range already handed to the prefaulter.
    prefault_requested: usize,
    /// Records found in the segment when it was opened (0 for a new one).
    records: u64,
    size_changed: bool,
    /// The seal's CRC chain over the frame CRCs of every record so far (`segment::chain_frame`).
    crc_chain: u32,
}

pub struct LogWriter {
    pub dir: PathBuf,
    log_dir: PathBuf,
    cfg: LogConfig,
    _lock: File,
    active: Active,
    sealed: SegmentSet,
    /// Ranges of segments rolled since the last commit.
    pending: Vec<(Arc<ActiveMap>, usize, usize)>,
    scratch: Vec<u8>,
    sync_error: Option<String>,
    last_sync: Instant,
    ring: Option<RingWriter>,
    prefaulter: Option<Arc<Prefaulter>>,
    /// Background compression of sealed segments (none when `zstd_level` is 0).
    compressor: Option<(Arc<Compressor>, JoinHandle<()>)>,
    pub recovery: RecoveryReport,
    pub appended_records: u64,
}

fn lock_dir(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))?;
    // A reader probing whether a writer runs (`verify`) holds a shared lock for an instant:
    // try for a little while before saying the directory is taken.
    let mut locked = false;
    for _ in 0..50 {
        // SAFETY: plain syscall on an owned descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            locked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !locked {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "another process".to_owned(),
            h => format!("another process ({h}, see {})", path.display()),
        };
        return Err(Error::Locked { dir: dir.to_owned(), holder });
    }
    let _ = f.set_len(0);
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = writeln!(f, "pid {}", std::process::id());
    Ok(f)
}

fn poisoned<T>(r: std::sync::LockResult<MutexGuard<'_, T>>) -> MutexGuard<'_, T> {
    r.unwrap_or_else(|p| p.into_inner())
}

impl LogWriter {
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<LogWriter> {
        cfg.check()?;
        let log_dir = dir.join(LOG_DIR);
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| Error::io(format!("creating data directory {}", log_dir.display()), e))?;
        let lock = lock_dir(dir)?;
        let mut recovery = RecoveryReport { compression: compress::recover(&log_dir)?, ..Default::default() };
        let segments = segment::list_segments(&log_dir)?;
        recovery.segments = segments.len() as u64;

        // Older segments a crash left active: recover and seal them.
        let (last, older) = match segments.split_last() {
            Some((last, older)) => (Some(last.clone()), older.to_vec()),
            None => (None, Vec::new()),
        };
        for (seq, path) in &older {
            if compress::is_compressed_path(path) {
                continue; // only sealed segments are ever compressed
            }
            let map = segment::map_readonly(path)?;
            let needs_seal = match map.as_deref().map(segment::decode_header) {
                Some(HeaderCheck::Ok(h)) => h.state != STATE_SEALED,
                Some(HeaderCheck::NewerVersion(v)) => {
                    return Err(Error::Format { path: path.clone(), detail: format!("format version {v} is newer than this PumpWatch; upgrade") })
                }
                Some(HeaderCheck::Damaged) | None => true,
            };
            drop(map);
            if needs_seal {
                let mut a = recover_active(dir, path, *seq, &cfg, &mut recovery)?;
                seal(&mut a)?;
                recovery.sealed.push(segment::segment_file_name(*seq));
            }
        }

        let active = match last {
            Some((seq, path)) => {
                // A compressed segment is sealed by definition.
                let sealed_already = compress::is_compressed_path(&path)
                    || matches!(
                        segment::map_readonly(&path)?.as_deref().map(segment::decode_header),
                        Some(HeaderCheck::Ok(Header { state: STATE_SEALED, .. }))
                    );
                if sealed_already {
                    create_segment(&log_dir, seq + 1, &cfg)?
                } else {
                    let a = recover_active(dir, &path, seq, &cfg, &mut recovery)?;
                    recovery.records_in_active = a.records;
                    a
                }
            }
            None => create_segment(&log_dir, 1, &cfg)?,
        };
        segment::fsync_dir(&log_dir)?;
        let compressor = if cfg.zstd_level > 0 {
            let (c, handle) = Compressor::start(&log_dir, cfg.zstd_level)?;
            // Sealed segments left plain (by a crash, an older PumpWatch or level 0) go first.
            for (seq, path) in segment::list_segments(&log_dir)? {
                if seq < active.map.seq && !compress::is_compressed_path(&path) {
                    c.request_backlog(seq);
                }
            }
            Some((c, handle))
        } else {
            None
        };
        Ok(LogWriter {
            dir: dir.to_owned(),
            log_dir,
            cfg,
            _lock: lock,
            active,
            sealed: SegmentSet::default(),
            pending: Vec::new(),
            scratch: Vec::with_capacity(1 << 20),
            sync_error: None,
            last_sync: Instant::now(),
            ring: None,
            prefaulter: None,
            compressor,
            recovery,
            appended_records: 0,
        })
    }

    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// Every trade appended from now on is also pushed to `ring` for live readers.
    pub fn attach_ring(&mut self, ring: RingWriter) {
        self.ring = Some(ring);
    }

    /// Appends a batch of trades. Every trade is checked first: a bad one rejects the whole
    /// batch (naming its row) and nothing of it is written.
    pub fn append_trades<'a>(&mut self, trades: impl IntoIterator<Item = TradeRef<'a>>) -> Result<usize> {
        self.append_rows(trades.into_iter().map(Ok))
    }

    /// Like `append_trades`, for rows whose extraction can itself fail (columns from Python):
    /// rows are encoded as they come, with no per-row allocation.
    pub fn append_rows<'a>(&mut self, rows: impl IntoIterator<Item = std::result::Result<TradeRef<'a>, String>>) -> Result<usize> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let mut n = 0usize;
        for row in rows {
            let checked = row.and_then(|t| t.check().map(|_| t).map_err(|e| e.to_string()));
            match checked {
                Ok(t) => frame_into(&mut buf, |out| t.encode_payload(out)),
                Err(e) => {
                    self.scratch = buf;
                    return Err(Error::InvalidTrade(format!("row {n} of the batch: {e}")));
                }
            }
            n += 1;
        }
        let r = self.append_frames(&buf);
        // Keep the buffer for the next batch, unless one huge batch made it huge.
        if buf.capacity() <= 256 << 20 {
            self.scratch = buf;
        }
        r.map(|_| n)
    }

    pub fn append_marker(&mut self, m: &Marker) -> Result<()> {
        m.check()?;
        let mut buf = Vec::with_capacity(64 + m.detail.len());
        frame_into(&mut buf, |out| m.encode_payload(out));
        self.append_frames(&buf)
    }

    pub fn append_quarantined(&mut self, q: &Quarantined) -> Result<()> {
        q.check()?;
        let mut buf = Vec::with_capacity(32 + q.raw.len() + q.reason.len());
        frame_into(&mut buf, |out| q.encode_payload(out));
        self.append_frames(&buf)
    }

    /// Appends whole frames (as `record::frame_into` builds them) and publishes them.
    pub fn append_frames(&mut self, frames: &[u8]) -> Result<()> {
        if let Some(e) = self.sync_error.take() {
            return Err(Error::Io {
                context: "the disk reported an error while committing earlier records (they may not \
                          survive a power loss; check the disk)"
                    .into(),
                source: std::io::Error::other(e),
            });
        }
        let limit = self.cfg.piece_limit();
        let mut start = 0;
        let mut off = 0;
        if frames.len() <= limit {
            // The usual case: the batch fits one segment, no need to walk it for split points.
            off = frames.len();
        }
        // Split at record boundaries so each piece fits one segment.
        while off < frames.len() {
            let len = FRAME_HEADER + frame_payload_len(frames, off);
            if off > start && off + len - start > limit {
                self.write_piece(&frames[start..off])?;
                start = off;
            }
            off += len;
        }
        if off > start {
            self.write_piece(&frames[start..off])?;
        }
        if self.cfg.fsync_interval.is_zero() {
            self.sync_now()?;
        }
        Ok(())
    }

    fn write_piece(&mut self, piece: &[u8]) -> Result<()> {
        let a = &self.active;
        let too_old = coarse_now_ns().saturating_sub(a.created_ns) >= self.cfg.segment_span.as_nanos() as i64;
        let too_big = a.end + piece.len() > self.cfg.segment_max_bytes as usize;
        if a.end > HEADER_LEN && (too_old || too_big) {
            self.roll()?;
        }
        let a = &mut self.active;
        let need = a.end + piece.len();
        if need > a.allocated {
            let chunk = (need as u64).next_multiple_of(self.cfg.prealloc_chunk).min(a.map.map_len as u64);
            let exact = (need as u64).next_multiple_of(4096).min(a.map.map_len as u64);
            a.allocated = allocate_or_less(&a.map, chunk, exact)? as usize;
            a.size_changed = true;
        }
        let base = a.end;
        a.map.write_at(base, piece);
        // Of a piece larger than the ring, only the tail can still be in it once the piece is
        // pushed: the trades before it are counted as skipped (readers see them as missed)
        // instead of being written only to be overwritten.
        let ring_from = self.ring.as_ref().map_or(usize::MAX, |r| piece.len().saturating_sub(r.capacity_bytes()));
        let mut skipped = 0u64;
        // The seal's chain takes the piece only once it is published (below).
        let mut crc_chain = a.crc_chain;
        let mut off = 0;
        while off < piece.len() {
            let plen = frame_payload_len(piece, off);
            let payload = &piece[off + FRAME_HEADER..off + FRAME_HEADER + plen];
            if let Some(done) = a.block.observe((base + off) as u64, payload) {
                a.entries.push(done);
                a.index.append(&done)?;
            }
            if let Some(ring) = self.ring.as_mut() {
                if payload[0] == record::KIND_TRADE {
                    if off < ring_from {
                        skipped += 1;
                    } else {
                        if skipped > 0 {
                            ring.skip(std::mem::take(&mut skipped));
                        }
                        ring.push(payload);
                    }
                }
            }
            crc_chain = segment::chain_frame(crc_chain, &piece[off..]);
            off += FRAME_HEADER + plen;
            self.appended_records += 1;
        }
        if let (Some(ring), true) = (self.ring.as_mut(), skipped > 0) {
            ring.skip(skipped);
        }
        if let (Some(ring), Some(p)) = (self.ring.as_mut(), &self.prefaulter) {
            if let Some((from, to)) = ring.prepare_due() {
                p.request_ring(ring.shared(), from, to);
            }
        }
        a.end = base + piece.len();
        a.crc_chain = crc_chain;
        a.map.publish_end(a.end as u64);
        if let Some(p) = &self.prefaulter {
            // Reserve the next chunk before the appends reach it, so the prefaulter can prepare
            // its pages in time. A full disk here is not an error yet: the append that needs the
            // space reports it.
            if a.allocated < a.end + 2 * PREFAULT_AHEAD && a.allocated < a.map.map_len {
                let next = (a.allocated as u64 + self.cfg.prealloc_chunk).min(a.map.map_len as u64);
                if segment::allocate(&a.map.file, next, &a.map.path).is_ok() {
                    a.allocated = next as usize;
                    a.size_changed = true;
                }
            }
            if a.prefault_requested < (a.end + PREFAULT_AHEAD).min(a.allocated) {
                let to = (a.end + 2 * PREFAULT_AHEAD).min(a.allocated);
                p.request(a.map.clone(), a.prefault_requested.max(a.end), to);
                a.prefault_requested = to;
            }
        }
        Ok(())
    }

    /// Seals the active segment and starts the next. The new one is created first, so a full
    /// disk leaves the writer on its current segment.
    pub fn roll(&mut self) -> Result<()> {
        let next = create_segment(&self.log_dir, self.active.map.seq + 1, &self.cfg)?;
        let mut old = std::mem::replace(&mut self.active, next);
        seal(&mut old)?;
        segment::fsync_dir(&self.log_dir)?;
        if let Some((c, _)) = &self.compressor {
            c.request(old.map.seq);
        }
        Ok(())
    }

    /// What background compression has done so far (zeros when `zstd_level` is 0).
    pub fn compression_stats(&self) -> CompressionStats {
        self.compressor.as_ref().map(|(c, _)| c.stats()).unwrap_or_default()
    }

    /// A handle to wait on background compression without holding the writer.
    pub fn compressor(&self) -> Option<Arc<Compressor>> {
        self.compressor.as_ref().map(|(c, _)| c.clone())
    }

    /// Takes what must be committed; run it without holding the writer.
    pub fn take_sync_job(&mut self) -> SyncJob {
        let a = &mut self.active;
        let mut ranges = std::mem::take(&mut self.pending);
        if a.end > a.dirty_from {
            // Records first, then the header that publishes them.
            ranges.push((a.map.clone(), a.dirty_from, a.end));
            ranges.push((a.map.clone(), 0, HEADER_LEN));
            a.dirty_from = a.end;
        }
        let datasync = std::mem::take(&mut a.size_changed).then(|| a.map.clone());
        self.last_sync = Instant::now();
        SyncJob { ranges, datasync }
    }

    pub fn sync_due(&self) -> bool {
        self.last_sync.elapsed() >= self.cfg.fsync_interval
    }

    pub fn record_sync_error(&mut self, e: std::io::Error) {
        self.sync_error = Some(e.to_string());
    }

    /// Commits everything appended so far to disk now.
    pub fn sync_now(&mut self) -> Result<()> {
        self.take_sync_job().run().map_err(|e| Error::io("committing the log to disk", e))
    }

    /// A view of the active segment as published now.
    pub fn active_view(&self) -> SegmentView {
        let a = &self.active;
        SegmentView {
            seq: a.map.seq,
            name: segment::segment_file_name(a.map.seq),
            bytes: Arc::new(SegmentBytes::Active(a.map.clone())),
            end: a.end,
            entries: Arc::new(a.entries.clone()),
        }
    }

    /// Views of every segment, oldest first: what a query from the writer's process reads.
    pub fn views(&mut self) -> Result<Vec<SegmentView>> {
        let mut v = self.sealed.refresh(&self.log_dir, Some(self.active.map.seq))?;
        v.push(self.active_view());
        Ok(v)
    }

    pub fn active_segment(&self) -> (u64, usize) {
        (self.active.map.seq, self.active.end)
    }

    /// Commits and seals the active segment, so the next open starts a fresh one.
    pub fn seal_active(&mut self) -> Result<()> {
        self.sync_now()?;
        if self.active.end > HEADER_LEN {
            self.roll()?;
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    /// Lets the compressor finish the segments this writer sealed (and drop the backlog it found
    /// at open) before the directory's lock is released, so that no other writer finds a
    /// compression half done (were this process killed instead, the next open finishes or
    /// discards it).
    fn drop(&mut self) {
        if let Some((c, handle)) = self.compressor.take() {
            c.stop();
            let _ = handle.join();
        }
    }
}

/// Reserves `chunk` bytes of the segment, or, when the disk cannot give that much, only the
/// `least` the next write needs: a nearly full disk is used to its last block before appends fail.
fn allocate_or_less(map: &ActiveMap, chunk: u64, least: u64) -> Result<u64> {
    match segment::allocate(&map.file, chunk, &map.path) {
        Err(Error::DiskFull { .. }) if least < chunk => {
            segment::allocate(&map.file, least, &map.path)?;
            Ok(least)
        }
        other => other.map(|_| chunk),
    }
}

/// Wall clock to a few milliseconds, at a fraction of the cost of the precise one: the segment
/// time roll is checked on every append and needs no better.
fn coarse_now_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: plain syscall (vDSO) writing into a local.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return now_ns();
    }
    (ts.tv_sec as i64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as i64)
}

fn frame_payload_len(frames: &[u8], off: usize) -> usize {
    u32::from_le_bytes([frames[off], frames[off + 1], frames[off + 2], frames[off + 3]]) as usize
}

fn create_segment(log_dir: &Path, seq: u64, cfg: &LogConfig) -> Result<Active> {
    let path = log_dir.join(segment::segment_file_name(seq));
    let created_ns = now_ns();
    let build = || -> Result<Active> {
        let map = ActiveMap::open(&path, seq, cfg.map_len())?;
        let chunk = cfg.prealloc_chunk.min(cfg.segment_max_bytes).max(4096);
        let allocated = allocate_or_less(&map, chunk, 4096)? as usize;
        let header = segment::encode_header(&Header {
            seq,
            created_ns,
            state: STATE_ACTIVE,
            published_end: HEADER_LEN as u64,
        });
        map.write_at(0, &header);
        map.sync_range(0, HEADER_LEN).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        let idx_path = segment::index_path(&path);
        index::write_index(&idx_path, &[])?;
        let index = IndexAppender::open(&idx_path)?;
        Ok(Active {
            map: Arc::new(map),
            created_ns,
            end: HEADER_LEN,
            allocated,
            entries: Vec::new(),
            block: BlockBuilder::new(HEADER_LEN as u64),
            index,
            dirty_from: HEADER_LEN,
            prefault_requested: HEADER_LEN,
            records: 0,
            size_changed: true,
            crc_chain: 0,
        })
    };
    build().inspect_err(|_| {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(segment::index_path(&path));
    })
}

/// Recovery of a segment that was being written: keep every valid record, skip (and report)
/// damaged spans between valid records, cut a torn tail exactly after the last valid record.
fn recover_active(dir: &Path, path: &Path, seq: u64, cfg: &LogConfig, report: &mut RecoveryReport) -> Result<Active> {
    let name = segment::segment_file_name(seq);
    let file_len = std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len() as usize;
    let map_len = cfg.map_len().max(file_len.next_multiple_of(4096));
    let map = ActiveMap::open(path, seq, map_len)?;
    if file_len < HEADER_LEN {
        segment::allocate(&map.file, HEADER_LEN as u64, path)?;
    }
    let file_len = file_len.max(HEADER_LEN);
    let header = segment::decode_header(map.bytes(HEADER_LEN));
    // Damage is skipped only within what was published; past it the first invalid frame ends
    // the records (an unfinished append). A damaged header publishes nothing we can trust.
    let published = match header {
        HeaderCheck::Ok(_) => (segment::load_published_end(map.bytes(HEADER_LEN)) as usize).clamp(HEADER_LEN, file_len),
        _ => file_len,
    };
    let created_ns = match header {
        HeaderCheck::Ok(h) => h.created_ns,
        HeaderCheck::NewerVersion(v) => {
            return Err(Error::Format { path: path.to_owned(), detail: format!("format version {v} is newer than this PumpWatch; upgrade") })
        }
        HeaderCheck::Damaged => {
            map.write_at(0, &segment::encode_header(&Header { seq, created_ns: now_ns(), state: STATE_ACTIVE, published_end: HEADER_LEN as u64 }));
            report.headers_repaired.push(name.clone());
            now_ns()
        }
    };

    // Blocks the index vouches for are checked record by record on both cores; the walk (with
    // resync and torn-tail detection) starts after the last block that checks out.
    let data = map.bytes(file_len);
    let trusted = reader::verified_prefix(data, &index::read_index(&segment::index_path(path), file_len as u64));
    let trusted_records: u64 = trusted.iter().map(|e| (e.trades + e.others) as u64).sum();
    let walk_from = trusted.last().map_or(HEADER_LEN, |e| e.end as usize);
    let (walked, mut outcome) = reader::build_index_from(data, walk_from, file_len, published);
    outcome.records += trusted_records;
    let mut entries = trusted;
    entries.extend(walked);
    let valid_end = outcome.valid_end;
    // The seal's chain over the records kept, walked as readers walk them (damage skipped).
    let mut crc_chain = 0;
    super::scan::walk(data, HEADER_LEN, valid_end, |off, _| crc_chain = segment::chain_frame(crc_chain, &data[off..]));
    for Span { start, end } in &outcome.damaged {
        report.damaged.push(DamageReport {
            segment: name.clone(),
            offset: *start as u64,
            length: (end - start) as u64,
            reason: "damaged bytes between valid records, kept in place and skipped".into(),
        });
    }
    if let Some(Span { start, end }) = outcome.torn {
        let cut = &map.bytes(end)[start..end];
        let saved = save_cut_bytes(dir, &name, start, cut);
        report.truncated.push(DamageReport {
            segment: name.clone(),
            offset: start as u64,
            length: (end - start) as u64,
            reason: "torn or corrupt tail after the last valid record, cut off".into(),
        });
        if let Some(p) = saved {
            report.saved_to.push(p);
        }
    }
    // Cut everything after the last valid record, then reserve again: the reserved bytes read
    // as zeros, so the next append cannot be confused with left-over garbage.
    map.file.set_len(valid_end as u64).map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
    let allocated = (valid_end as u64).next_multiple_of(cfg.prealloc_chunk).min(map_len as u64).max(valid_end as u64);
    segment::allocate(&map.file, allocated, path)?;
    map.publish_end(valid_end as u64);
    map.sync_range(0, HEADER_LEN).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    map.file.sync_all().map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;

    // The last block is unfinished unless it is full: keep filling it.
    let unfinished = entries.last().is_some_and(|e| e.end as usize == valid_end && e.end - e.start < BLOCK_BYTES);
    let block = match entries.pop() {
        Some(partial) if unfinished => BlockBuilder::resume(partial),
        Some(full) => {
            entries.push(full);
            BlockBuilder::new(valid_end as u64)
        }
        None => BlockBuilder::new(valid_end as u64),
    };
    let idx_path = segment::index_path(path);
    index::write_index(&idx_path, &entries)?;
    let index = IndexAppender::open(&idx_path)?;
    Ok(Active {
        map: Arc::new(map),
        created_ns,
        end: valid_end,
        allocated: allocated as usize,
        entries,
        block,
        index,
        dirty_from: valid_end,
        prefault_requested: valid_end,
        records: outcome.records,
        size_changed: false,
        crc_chain,
    })
}

fn save_cut_bytes(dir: &Path, segment_name: &str, offset: usize, bytes: &[u8]) -> Option<PathBuf> {
    const KEEP_AT_MOST: usize = 64 << 20;
    let rdir = dir.join("recovered");
    std::fs::create_dir_all(&rdir).ok()?;
    let p = rdir.join(format!("{segment_name}.{offset}.{}.torn", now_ns()));
    std::fs::write(&p, &bytes[..bytes.len().min(KEEP_AT_MOST)]).ok()?;
    Some(p)
}

/// Seals a segment: final index, header state and end, file cut to its records, all synced.
fn seal(a: &mut Active) -> Result<()> {
    let path = a.map.path.clone();
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", path.display()), e);
    if let Some(p) = a.block.pending() {
        a.entries.push(p);
        a.block = BlockBuilder::new(p.end);
    }
    a.map.sync_range(HEADER_LEN.min(a.dirty_from), a.end).map_err(|e| io("syncing", e))?;
    // Cut to the records before the state says sealed: a crash in between leaves an active
    // segment (recovered and sealed on open), never a sealed one with bytes past its end.
    a.map.file.set_len(a.end as u64).map_err(|e| io("truncating", e))?;
    a.map.file.sync_all().map_err(|e| io("syncing", e))?;
    // The seal (docs/FORMAT.md): end and totals under a CRC of their own. Written before the
    // state, so a reader that sees the state sealed sees the seal whole.
    let records = a.entries.iter().map(|e| u64::from(e.trades) + u64::from(e.others)).sum();
    let header = segment::sealed_header(a.map.seq, a.created_ns, &segment::Seal { published_end: a.end as u64, records, crc_chain: a.crc_chain });
    a.map.write_at(48, &header[48..HEADER_LEN]);
    a.map.write_at(0, &header[0..36]);
    a.map.set_state(STATE_SEALED);
    a.map.publish_end(a.end as u64);
    a.map.sync_range(0, HEADER_LEN).map_err(|e| io("syncing", e))?;
    a.dirty_from = a.end;
    index::write_index(&segment::index_path(&path), &a.entries)
}

/// The writer shared between appending threads and a background committer that runs the group
/// commit every `fsync_interval` outside the writer's lock.
pub struct SharedLog {
    writer: Arc<Mutex<Option<LogWriter>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    committer: Option<JoinHandle<()>>,
    prefaulter: Arc<Prefaulter>,
    prefault_thread: Option<JoinHandle<()>>,
}

/// How far ahead of the append position pages are prepared.
const PREFAULT_AHEAD: usize = 16 << 20;

/// Prepares the pages the writer is about to fill (`MADV_POPULATE_WRITE`) on another thread,
/// so the append path copies into ready pages instead of taking a page fault (and the kernel's
/// zeroing of the page) every 4 KiB: the segment's, and the ring's on its first lap (a fresh
/// ring's pages cost the append path as much as the segment's did). It never changes the
/// contents of a page.
pub struct Prefaulter {
    job: Mutex<PrefaultJobs>,
    cv: Condvar,
}

#[derive(Default)]
struct PrefaultJobs {
    segment: Option<(Arc<ActiveMap>, usize, usize)>,
    ring: Option<(Arc<RingShared>, u64, u64)>,
    stop: bool,
}

impl Prefaulter {
    fn new() -> Prefaulter {
        Prefaulter { job: Mutex::new(PrefaultJobs::default()), cv: Condvar::new() }
    }

    fn request(&self, map: Arc<ActiveMap>, from: usize, to: usize) {
        let mut g = poisoned(self.job.lock());
        g.segment = Some(match g.segment.take() {
            // Still pending on the same segment: widen it.
            Some((m, f, _)) if Arc::ptr_eq(&m, &map) => (m, f.min(from), to),
            _ => (map, from, to),
        });
        self.cv.notify_one();
    }

    /// Ring words `from..to` (positions, as `RingWriter::prepare_due` gives them).
    fn request_ring(&self, ring: Arc<RingShared>, from: u64, to: u64) {
        let mut g = poisoned(self.job.lock());
        g.ring = Some(match g.ring.take() {
            Some((r, f, _)) if Arc::ptr_eq(&r, &ring) => (r, f.min(from), to),
            _ => (ring, from, to),
        });
        self.cv.notify_one();
    }

    fn stop(&self) {
        poisoned(self.job.lock()).stop = true;
        self.cv.notify_all();
    }

    fn run(&self) {
        loop {
            let (segment, ring) = {
                let mut g = poisoned(self.job.lock());
                while g.segment.is_none() && g.ring.is_none() && !g.stop {
                    g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                if g.stop {
                    return;
                }
                (g.segment.take(), g.ring.take())
            };
            // Best effort: an old kernel without MADV_POPULATE_WRITE just faults on write.
            if let Some((map, from, to)) = segment {
                map.populate_for_write(from, to);
            }
            if let Some((ring, from, to)) = ring {
                ring.populate_for_write(from, to);
            }
        }
    }
}

impl SharedLog {
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<SharedLog> {
        let interval = cfg.fsync_interval;
        let mut w = LogWriter::open(dir, cfg)?;
        let prefaulter = Arc::new(Prefaulter::new());
        w.prefaulter = Some(prefaulter.clone());
        let writer = Arc::new(Mutex::new(Some(w)));
        let p = prefaulter.clone();
        let prefault_thread = Some(
            std::thread::Builder::new()
                .name("pumpwatch-prefault".into())
                .spawn(move || p.run())
                .map_err(|e| Error::io("starting the prefault thread", e))?,
        );
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let committer = if interval.is_zero() {
            None
        } else {
            let (w, s) = (writer.clone(), stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("pumpwatch-commit".into())
                    .spawn(move || commit_loop(w, s, interval))
                    .map_err(|e| Error::io("starting the commit thread", e))?,
            )
        };
        Ok(SharedLog { writer, stop, committer, prefaulter, prefault_thread })
    }

    /// Runs `f` on the writer; an error if the log was closed.
    pub fn with<T>(&self, f: impl FnOnce(&mut LogWriter) -> Result<T>) -> Result<T> {
        let mut g = poisoned(self.writer.lock());
        match g.as_mut() {
            Some(w) => f(w),
            None => Err(Error::Closed),
        }
    }

    /// Commits now (outside the lock) and reports any earlier commit error.
    pub fn flush(&self) -> Result<()> {
        let job = self.with(|w| {
            if let Some(e) = w.sync_error.take() {
                return Err(Error::io("committing the log to disk", std::io::Error::other(e)));
            }
            Ok(w.take_sync_job())
        })?;
        job.run().map_err(|e| Error::io("committing the log to disk", e))
    }

    /// Stops the committer, commits, optionally seals, and releases the directory.
    pub fn close(&mut self, seal: bool) -> Result<()> {
        {
            let (m, cv) = &*self.stop;
            *poisoned(m.lock()) = true;
            cv.notify_all();
        }
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
        self.prefaulter.stop();
        if let Some(h) = self.prefault_thread.take() {
            let _ = h.join();
        }
        let taken = poisoned(self.writer.lock()).take();
        match taken {
            Some(mut w) => {
                if seal {
                    w.seal_active()
                } else {
                    w.sync_now()
                }
            }
            None => Ok(()),
        }
    }
}

impl Drop for SharedLog {
    fn drop(&mut self) {
        let _ = self.close(false);
    }
}

fn commit_loop(writer: Arc<Mutex<Option<LogWriter>>>, stop: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    let (m, cv) = &*stop;
    loop {
        {
            let g = poisoned(m.lock());
            let (g, _) = cv.wait_timeout(g, interval).unwrap_or_else(|p| p.into_inner());
            if *g {
                return;
            }
        }
        let job = match poisoned(writer.lock()).as_mut() {
            Some(w) => w.take_sync_job(),
            None => return,
        };
        if job.is_empty() {
            continue;
        }
        if let Err(e) = job.run() {
            if let Some(w) = poisoned(writer.lock()).as_mut() {
                w.record_sync_error(e);
            }
        }
    }
}
