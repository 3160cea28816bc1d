//! The one writer of a data directory: recovery on open, appends through the map, group
//! commit, rolling and sealing segments.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::compress::{self, CompressionStats, Compressor};
use super::fault;
use super::hold::{Hold, LostSpan};
use super::index::{self, BlockBuilder, IndexAppender, IndexEntry, BLOCK_BYTES};
use super::reader::{SegmentBytes, SegmentSet, SegmentView};
use super::scan::Span;
use super::segment::{
    self, ActiveMap, Header, HeaderCheck, HEADER_LEN, LOCK_FILE, LOG_DIR, STATE_ACTIVE, STATE_SEALED,
};
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
    /// Ranges an earlier commit failed on. After a failed msync/fsync the kernel may have marked
    /// their pages clean without them reaching the disk, so syncing again would prove nothing:
    /// they are written again from the map (the page cache still holds them) first.
    rewrite: Vec<(Arc<ActiveMap>, usize, usize)>,
}

/// A commit that failed: the error, and every range it was to make durable (they are treated as
/// not written until a later commit of them succeeds).
pub struct SyncFailure {
    pub error: std::io::Error,
    ranges: Vec<(Arc<ActiveMap>, usize, usize)>,
}

impl SyncJob {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.datasync.is_none() && self.rewrite.is_empty()
    }

    pub fn run(self) -> std::io::Result<()> {
        self.run_or_return().map_err(|f| f.error)
    }

    /// Runs the commit; on failure hands back what it was to make durable.
    pub fn run_or_return(self) -> std::result::Result<(), SyncFailure> {
        match self.run_ranges() {
            Ok(()) => Ok(()),
            Err(error) => {
                let mut ranges = self.rewrite;
                ranges.extend(self.ranges);
                if let Some(m) = self.datasync {
                    // The size change of the file must be committed again too.
                    ranges.push((m, 0, 0));
                }
                Err(SyncFailure { error, ranges })
            }
        }
    }

    fn run_ranges(&self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        for (map, from, to) in &self.rewrite {
            // Records are never written again once published, so writing the same bytes from here
            // races with nothing; the header is not rewritten here (the writer publishes into it
            // concurrently): the writer dirties it again itself (`take_sync_job`).
            let from = (*from).max(HEADER_LEN);
            if *to > from {
                fault::point(fault::REWRITE)?;
                map.file.write_all_at(&map.bytes(*to)[from..*to], from as u64)?;
            }
            fault::point(fault::FDATASYNC)?;
            map.file.sync_data()?;
        }
        for (map, from, to) in &self.ranges {
            map.sync_range(*from, *to)?;
            // On disk now: out of the resident set (the header page stays: it is rewritten).
            map.release((*from).max(HEADER_LEN), *to);
        }
        if let Some(map) = &self.datasync {
            fault::point(fault::FDATASYNC)?;
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
    /// An index append failed (full disk): the index file stops growing; sealing rewrites it
    /// whole from `entries`, and until then readers scan past its last entry.
    index_behind: bool,
}

/// The writer's account of disk trouble, for status pages and alerts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskState {
    /// Nonzero while records are being held because the disk is full (when it began).
    pub full_since_ns: i64,
    /// Nonzero while records are held or not durable because the disk failed (EIO...).
    pub error_since_ns: i64,
    /// The error (operation and path) that started the current episode.
    pub reason: String,
    pub held_records: u64,
    pub held_bytes: u64,
    /// Records published but whose commit to disk failed, not yet committed again.
    pub unsynced_bytes: u64,
    /// Trades that fell out of the hold this episode (named in markers once the disk has room).
    pub lost_trades_pending: u64,
    /// Over the writer's life: trades lost (each named by a `gap_unfillable` marker), episodes.
    pub lost_trades: u64,
    pub lost_other: u64,
    pub episodes: u64,
    pub commit_failures: u64,
    pub last_error: String,
    /// The active segment's index file stopped growing (a failed append); the seal rewrites it.
    pub index_behind: bool,
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
    /// Records the disk refused, kept until it has room again (see `hold`); only when
    /// `hold_limit` is nonzero, else the append fails with the error.
    hold: Option<Hold>,
    hold_limit: usize,
    hold_retry: Duration,
    /// Ranges a commit failed on: treated as not written until a commit of them succeeds.
    unsynced: Vec<(Arc<ActiveMap>, usize, usize)>,
    disk: DiskState,
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
            if segment::is_compressed_path(path) {
                continue; // only sealed segments are ever compressed
            }
            let map = segment::map_readonly(path)?;
            let needs_seal = match map.as_deref().map(segment::decode_header) {
                Some(HeaderCheck::Ok(h)) => h.state != STATE_SEALED,
                Some(HeaderCheck::NewerVersion(v)) => {
                    return Err(Error::Format {
                        path: path.clone(),
                        detail: format!("format version {v} is newer than this PumpWatch; upgrade"),
                    })
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
                let sealed_already = segment::is_compressed_path(&path)
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
                if seq < active.map.seq && !segment::is_compressed_path(&path) {
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
            hold: None,
            hold_limit: 0,
            hold_retry: Duration::from_secs(1),
            unsynced: Vec::new(),
            disk: DiskState::default(),
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
    pub fn append_rows<'a>(
        &mut self,
        rows: impl IntoIterator<Item = std::result::Result<TradeRef<'a>, String>>,
    ) -> Result<usize> {
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
    ///
    /// With a hold (`set_hold`), a disk that refuses the frames (full, or failing) does not fail
    /// the append: the frames are kept in memory and written when the disk has room again (see
    /// `disk_state`); without one the error is returned and nothing of the frames is lost that
    /// the error does not name.
    pub fn append_frames(&mut self, frames: &[u8]) -> Result<()> {
        if let Some(e) = self.sync_error.take() {
            if self.hold_limit == 0 {
                return Err(Error::Io {
                    context: "the disk reported an error while committing earlier records (they are \
                              written again at the next commit; check the disk)"
                        .into(),
                    source: std::io::Error::other(e),
                });
            }
        }
        if self.hold.is_some() {
            self.try_release();
        }
        if let Some(h) = self.hold.as_mut() {
            // Still refused: after what is already held, in order.
            h.push(frames);
            self.push_ring(frames);
            return Ok(());
        }
        if let Err((written, e)) = self.write_frames(frames, true) {
            if self.hold_limit == 0 || !is_disk_trouble(&e) {
                return Err(e);
            }
            self.start_hold(&e);
            let rest = &frames[written..];
            if let Some(h) = self.hold.as_mut() {
                h.push(rest);
            }
            self.push_ring(rest);
            return Ok(());
        }
        if self.cfg.fsync_interval.is_zero() {
            if let Err(e) = self.sync_now() {
                if self.hold_limit == 0 {
                    return Err(e);
                }
                // Named in `disk_state` and written again at the next commit.
            }
        }
        Ok(())
    }

    /// Keeps appends in memory (newest `limit` bytes) while the disk refuses them, instead of
    /// failing them; 0 turns it off. `retry` is how often the disk is tried again.
    pub fn set_hold(&mut self, limit: usize, retry: Duration) {
        self.hold_limit = limit;
        self.hold_retry = retry;
    }

    /// What the disk refused so far and what is held (for `/status`).
    pub fn disk_state(&self) -> DiskState {
        let mut d = self.disk.clone();
        if let Some(h) = &self.hold {
            d.held_records = h.records;
            d.held_bytes = h.bytes as u64;
            d.lost_trades_pending = h.lost_trades();
        }
        d.index_behind = self.active.index_behind;
        d.unsynced_bytes = self.unsynced.iter().map(|(_, f, t)| (t.saturating_sub(*f)) as u64).sum();
        d
    }

    /// Trades that fell out of the hold and are not yet named in the log (their markers are
    /// written first when the disk has room again).
    pub fn pending_losses(&self) -> Vec<LostSpan> {
        self.hold.as_ref().map(|h| h.lost.clone()).unwrap_or_default()
    }

    fn start_hold(&mut self, e: &Error) {
        let full = matches!(e, Error::DiskFull { .. });
        let now = now_ns();
        // The operation and path, without the advice meant for a caller whose append failed.
        let reason = match e {
            Error::DiskFull { path, needed: 0, source } => format!("no space left ({source}) at {}", path.display()),
            Error::DiskFull { path, needed, source } => {
                format!("no space left ({source}) reserving {needed} bytes for {}", path.display())
            }
            other => other.to_string(),
        };
        self.disk.episodes += 1;
        self.disk.last_error = reason.clone();
        self.disk.reason = reason.clone();
        if full {
            self.disk.full_since_ns = now;
        } else if self.disk.error_since_ns == 0 {
            self.disk.error_since_ns = now;
        }
        let mut h = Hold::new(self.hold_limit, now, reason, full);
        h.next_try = Instant::now() + self.hold_retry;
        self.hold = Some(h);
    }

    /// Tries to write what is held (when its retry time has come): first the markers naming what
    /// fell out, then the held records in order. Stops at the first refusal, keeping the rest.
    pub fn try_release(&mut self) {
        let Some(mut h) = self.hold.take() else { return };
        if Instant::now() < h.next_try {
            self.hold = Some(h);
            return;
        }
        h.next_try = Instant::now() + self.hold_retry;
        let result = self.release(&mut h);
        match result {
            Ok(()) => {
                self.disk.full_since_ns = 0;
                if self.unsynced.is_empty() {
                    self.disk.error_since_ns = 0;
                    self.disk.reason.clear();
                }
            }
            Err(e) => {
                self.disk.last_error = e.to_string();
                self.hold = Some(h);
            }
        }
    }

    fn release(&mut self, h: &mut Hold) -> Result<()> {
        let markers = h.loss_markers(now_ns());
        if !markers.is_empty() {
            let mut buf = Vec::new();
            for m in &markers {
                frame_into(&mut buf, |out| m.encode_payload(out));
            }
            self.write_frames(&buf, false).map_err(|(_, e)| e)?;
            self.disk.lost_trades += h.lost_trades();
            self.disk.lost_other += h.lost_other;
            h.clear_lost();
        }
        while let Some(front) = h.front() {
            let r = self.write_frames(front, false);
            match r {
                Ok(()) => h.consumed_front(usize::MAX),
                Err((written, e)) => {
                    h.consumed_front(written);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Pushes the trades of `frames` to the live ring (frames that were held, not written).
    fn push_ring(&mut self, frames: &[u8]) {
        let Some(ring) = self.ring.as_mut() else { return };
        let mut off = 0;
        while off + FRAME_HEADER <= frames.len() {
            let plen = frame_payload_len(frames, off);
            let payload = &frames[off + FRAME_HEADER..off + FRAME_HEADER + plen];
            if payload.first() == Some(&record::KIND_TRADE) {
                ring.push(payload);
            }
            off += FRAME_HEADER + plen;
        }
    }

    /// Writes frames in pieces that fit a segment; on an error, how many bytes were written.
    fn write_frames(&mut self, frames: &[u8], to_ring: bool) -> std::result::Result<(), (usize, Error)> {
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
                self.write_piece(&frames[start..off], to_ring).map_err(|e| (start, e))?;
                start = off;
            }
            off += len;
        }
        if off > start {
            self.write_piece(&frames[start..off], to_ring).map_err(|e| (start, e))?;
        }
        Ok(())
    }

    /// Writes one piece (it fits a segment) and publishes it: all of it, or on an error nothing.
    fn write_piece(&mut self, piece: &[u8], to_ring: bool) -> Result<()> {
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
                // The index is a hint: one that cannot grow (a full disk) costs readers a scan,
                // never a record. A failed append may have left part of an entry, so appending
                // stops until the seal rewrites the index whole.
                if !a.index_behind && a.index.append(&done).is_err() {
                    a.index_behind = true;
                }
            }
            if let (Some(ring), true) = (self.ring.as_mut(), to_ring) {
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
        if let (Some(ring), true, true) = (self.ring.as_mut(), skipped > 0, to_ring) {
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
        if let Err(e) = seal(&mut old) {
            // Its records since the last commit may not be on disk: commit them again with the
            // next commit (the header it could not seal is sealed by the next open's recovery).
            if old.end > old.dirty_from {
                self.unsynced.push((old.map.clone(), old.dirty_from, old.end));
            }
            return Err(e);
        }
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
        let rewrite = self.check_unsynced();
        let a = &mut self.active;
        if rewrite.iter().any(|(m, _, _)| Arc::ptr_eq(m, &a.map)) {
            // The header's page may have been marked clean by the failed commit: storing the
            // published end again dirties it, so the header range below is really written.
            a.map.publish_end(a.end as u64);
            a.size_changed = true;
            if a.dirty_from == a.end {
                self.pending.push((a.map.clone(), 0, HEADER_LEN));
            }
        }
        let mut ranges = std::mem::take(&mut self.pending);
        if a.end > a.dirty_from {
            // Records first, then the header that publishes them.
            ranges.push((a.map.clone(), a.dirty_from, a.end));
            ranges.push((a.map.clone(), 0, HEADER_LEN));
            a.dirty_from = a.end;
        }
        let datasync = std::mem::take(&mut a.size_changed).then(|| a.map.clone());
        self.last_sync = Instant::now();
        SyncJob { ranges, datasync, rewrite }
    }

    /// The ranges a commit failed on whose records the page cache still holds intact (they are
    /// written again from it). A filesystem may drop the pages of a failed write-back instead of
    /// keeping them: then the map shows what the disk has, the records are gone, and they are
    /// named lost (`gap_unfillable`, the time span of the index blocks they were in) instead.
    fn check_unsynced(&mut self) -> Vec<(Arc<ActiveMap>, usize, usize)> {
        let ranges = std::mem::take(&mut self.unsynced);
        if ranges.is_empty() {
            return ranges;
        }
        let mut keep = Vec::with_capacity(ranges.len());
        let mut markers = Vec::new();
        for (map, from, to) in ranges {
            let start = from.max(HEADER_LEN);
            let intact = to <= start || {
                let outcome = super::scan::walk(map.bytes(to), start, to, |_, _| {});
                outcome.valid_end == to && outcome.damaged.is_empty() && outcome.torn.is_none()
            };
            if intact {
                keep.push((map, from, to));
                continue;
            }
            let (mut min_ts, mut max_ts, mut records) = (i64::MAX, i64::MIN, 0u64);
            let blocks = if Arc::ptr_eq(&map, &self.active.map) {
                self.active.entries.iter().copied().chain(self.active.block.pending()).collect::<Vec<_>>()
            } else {
                Vec::new()
            };
            for e in blocks.iter().filter(|e| (e.start as usize) < to && (e.end as usize) > start) {
                min_ts = min_ts.min(e.min_ts);
                max_ts = max_ts.max(e.max_ts);
                records += (e.trades + e.others) as u64;
            }
            let now = now_ns();
            self.disk.lost_other += 1;
            markers.push(Marker {
                kind: record::MarkerKind::GapUnfillable,
                venue: None,
                symbol: String::new(),
                ts_ns: now,
                from_ts_ns: if min_ts <= max_ts { min_ts } else { self.disk.error_since_ns },
                to_ts_ns: if min_ts <= max_ts { max_ts } else { now },
                from_id: String::new(),
                to_id: String::new(),
                detail: format!(
                    "disk error: the records at {} bytes {start}..{to} could not be committed ({}) and the page cache no longer holds them; \
                     lost, at most {records} records (their index blocks' time span)",
                    map.path.display(),
                    self.disk.reason
                ),
            });
        }
        if !markers.is_empty() {
            let mut buf = Vec::new();
            for m in &markers {
                frame_into(&mut buf, |out| m.encode_payload(out));
            }
            match self.hold.as_mut() {
                Some(h) => h.push(&buf),
                None => {
                    if let Err((_, e)) = self.write_frames(&buf, false) {
                        self.disk.last_error = e.to_string();
                    }
                }
            }
        }
        keep
    }

    /// A commit failed: what it was to make durable is treated as not written, and written again
    /// (then committed) by the next commit; the disk state names it until then.
    pub fn commit_failed(&mut self, f: SyncFailure) {
        let msg = format!("committing the log in {} to disk failed: {}", self.log_dir.display(), f.error);
        self.disk.commit_failures += 1;
        if self.disk.error_since_ns == 0 {
            self.disk.error_since_ns = now_ns();
        }
        self.disk.reason = msg.clone();
        self.disk.last_error = msg.clone();
        let mut ranges = f.ranges;
        ranges.append(&mut self.unsynced);
        self.unsynced = ranges;
        self.sync_error = Some(msg);
    }

    /// A commit that wrote failed ranges again succeeded: they are durable now.
    pub fn commit_succeeded(&mut self, rewrote: bool) {
        if rewrote && self.unsynced.is_empty() && self.disk.error_since_ns != 0 && self.hold.is_none() {
            self.disk.error_since_ns = 0;
            self.disk.reason.clear();
        }
    }

    /// Runs a commit job taken from this writer and accounts for its outcome.
    fn run_job(&mut self, job: SyncJob) -> Result<()> {
        let rewrote = !job.rewrite.is_empty();
        match job.run_or_return() {
            Ok(()) => {
                self.commit_succeeded(rewrote);
                Ok(())
            }
            Err(f) => {
                let e = Error::io(format!("committing the log in {} to disk (the records since the last commit are written again at the next one)", self.log_dir.display()), std::io::Error::new(f.error.kind(), f.error.to_string()));
                self.commit_failed(f);
                Err(e)
            }
        }
    }

    pub fn sync_due(&self) -> bool {
        self.last_sync.elapsed() >= self.cfg.fsync_interval
    }

    pub fn record_sync_error(&mut self, e: std::io::Error) {
        self.sync_error = Some(e.to_string());
    }

    /// Commits everything appended so far to disk now.
    pub fn sync_now(&mut self) -> Result<()> {
        let job = self.take_sync_job();
        self.run_job(job)
    }

    /// Commits, and writes what is held if the disk has room; an error names what is still not
    /// on disk (for a close: those records are lost with this process).
    pub fn settle(&mut self) -> Result<()> {
        if let Some(h) = self.hold.as_mut() {
            h.next_try = Instant::now();
        }
        self.try_release();
        let synced = self.sync_now();
        if let Some(h) = &self.hold {
            let spans: Vec<String> = h
                .lost
                .iter()
                .map(|l| {
                    format!(
                        "{} {} {} trades ids {}..{} ts {}..{}",
                        l.venue.id(),
                        l.symbol,
                        l.trades,
                        l.from_id,
                        l.to_id,
                        l.from_ts_ns,
                        l.to_ts_ns
                    )
                })
                .collect();
            return Err(Error::Io {
                context: format!(
                    "{} records held in memory since {} ns could not be written to {} ({}); they are lost with this process{}. Free disk space before stopping the recorder",
                    h.records,
                    h.since_ns,
                    self.log_dir.display(),
                    h.reason,
                    if spans.is_empty() { String::new() } else { format!(", as are {} that fell out earlier", spans.join("; ")) }
                ),
                source: std::io::Error::from_raw_os_error(if h.disk_full { libc::ENOSPC } else { libc::EIO }),
            });
        }
        if let Err(e) = synced {
            let spans: Vec<String> = self
                .unsynced
                .iter()
                .filter(|(_, f, t)| t > f)
                .map(|(m, f, t)| format!("{} bytes {}..{}", m.path.display(), f.max(&HEADER_LEN), t))
                .collect();
            return Err(Error::Io {
                context: format!(
                    "{e}; not durable: {}",
                    if spans.is_empty() { "the file sizes".to_owned() } else { spans.join(", ") }
                ),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            });
        }
        Ok(())
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
        self.settle()?;
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
    // time_t and c_long are i64 here but not on every target: the casts stay.
    #[allow(clippy::unnecessary_cast)]
    (ts.tv_sec as i64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as i64)
}

/// An error of the disk (full, or failing) rather than of the input: appends are held through it.
fn is_disk_trouble(e: &Error) -> bool {
    matches!(e, Error::DiskFull { .. } | Error::Io { .. })
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
        let header =
            segment::encode_header(&Header { seq, created_ns, state: STATE_ACTIVE, published_end: HEADER_LEN as u64 });
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
            index_behind: false,
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
    let file_len =
        std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len() as usize;
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
            return Err(Error::Format {
                path: path.to_owned(),
                detail: format!("format version {v} is newer than this PumpWatch; upgrade"),
            })
        }
        HeaderCheck::Damaged => {
            map.write_at(
                0,
                &segment::encode_header(&Header {
                    seq,
                    created_ns: now_ns(),
                    state: STATE_ACTIVE,
                    published_end: HEADER_LEN as u64,
                }),
            );
            report.headers_repaired.push(name.clone());
            now_ns()
        }
    };

    // Blocks the index vouches for are checked record by record on both cores; the walk (with
    // resync and torn-tail detection) starts after the last block that checks out.
    let data = map.bytes(file_len);
    let trusted = index::verified_prefix(data, &index::read_index(&segment::index_path(path), file_len as u64));
    let trusted_records: u64 = trusted.iter().map(|e| (e.trades + e.others) as u64).sum();
    let walk_from = trusted.last().map_or(HEADER_LEN, |e| e.end as usize);
    let (walked, mut outcome) = index::build_index_from(data, walk_from, file_len, published);
    outcome.records += trusted_records;
    let valid_end = outcome.valid_end;
    // The seal's chain over the records kept: the trusted blocks by their frames' lengths, the
    // rest walked as readers walk it (damage skipped).
    let mut crc_chain = index::chain_of_verified(data, &trusted);
    super::scan::walk(data, walk_from, valid_end, |off, _| crc_chain = segment::chain_frame(crc_chain, &data[off..]));
    let mut entries = trusted;
    entries.extend(walked);
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
    fault::point(fault::FTRUNCATE)
        .and_then(|_| map.file.set_len(valid_end as u64))
        .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
    // A reopen on a nearly full disk keeps what the file already holds and reserves more later,
    // as appends do (the hold takes over when even that fails): the recorder always starts again.
    let wanted = (valid_end as u64).next_multiple_of(cfg.prealloc_chunk).min(map_len as u64).max(valid_end as u64);
    let allocated = allocate_or_less(&map, wanted, valid_end as u64)?;
    map.publish_end(valid_end as u64);
    map.sync_range(0, HEADER_LEN).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    fault::point(fault::FSYNC)
        .and_then(|_| map.file.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;

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
        index_behind: false,
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
    fault::point(fault::FTRUNCATE).and_then(|_| a.map.file.set_len(a.end as u64)).map_err(|e| io("truncating", e))?;
    fault::point(fault::FSYNC).and_then(|_| a.map.file.sync_all()).map_err(|e| io("syncing", e))?;
    // The seal (docs/FORMAT.md): end and totals under a CRC of their own. Written before the
    // state, so a reader that sees the state sealed sees the seal whole.
    let records = a.entries.iter().map(|e| u64::from(e.trades) + u64::from(e.others)).sum();
    let header = segment::sealed_header(
        a.map.seq,
        a.created_ns,
        &segment::Seal { published_end: a.end as u64, records, crc_chain: a.crc_chain },
    );
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
                if w.hold_limit == 0 {
                    return Err(Error::io("committing the log to disk", std::io::Error::other(e)));
                }
            }
            w.try_release();
            Ok(w.take_sync_job())
        })?;
        let rewrote = !job.rewrite.is_empty();
        match job.run_or_return() {
            Ok(()) => self.with(|w| {
                w.commit_succeeded(rewrote);
                Ok(())
            }),
            Err(f) => {
                let e = Error::io(
                    "committing the log to disk (the records since the last commit are written again at the next one)",
                    std::io::Error::new(f.error.kind(), f.error.to_string()),
                );
                let _ = self.with(|w| {
                    w.commit_failed(f);
                    Ok(())
                });
                Err(e)
            }
        }
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
                    w.settle()
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
            // A stop that came while a commit ran was notified to no one: look before waiting.
            if *g {
                return;
            }
            let (g, _) = cv.wait_timeout(g, interval).unwrap_or_else(|p| p.into_inner());
            if *g {
                return;
            }
        }
        let job = match poisoned(writer.lock()).as_mut() {
            Some(w) => {
                // Held records go out as soon as the disk has room, appends or not.
                w.try_release();
                w.take_sync_job()
            }
            None => return,
        };
        if job.is_empty() {
            continue;
        }
        let rewrote = !job.rewrite.is_empty();
        let outcome = job.run_or_return();
        if let Some(w) = poisoned(writer.lock()).as_mut() {
            match outcome {
                Ok(()) => w.commit_succeeded(rewrote),
                Err(f) => w.commit_failed(f),
            }
        }
    }
}
