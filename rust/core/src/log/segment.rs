//! Segment files: naming, the 64-byte header, and the memory maps the writer and readers use.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions, MmapRaw};

use super::fault;
use crate::{record, Error, Result};

pub const MAGIC: [u8; 8] = *b"PUMPWLOG";
/// Version 2 adds the seal (bytes 48..64 of a sealed segment's header); version 1 segments
/// (no seal) read as before.
pub const FORMAT_VERSION: u16 = 2;
/// The first format version whose sealed segments carry a seal.
pub const SEAL_VERSION: u16 = 2;
pub const HEADER_LEN: usize = 64;
pub const STATE_ACTIVE: u32 = 0;
pub const STATE_SEALED: u32 = 1;
const STATE_AT: usize = 36;
const PUBLISHED_END_AT: usize = 40;
const SEAL_RECORDS_AT: usize = 48;
const SEAL_CHAIN_AT: usize = 56;
const SEAL_CRC_AT: usize = 60;

// The names of the log's files, in one place (docs/FORMAT.md "Data directory"): a data directory
// holds `LOCK` and `log/`; `log/` holds, per segment `seq` (20 digits), `<seq>.pwlog` (the
// segment) and `<seq>.pwidx` (its time index), or once compressed `<seq>.pwzst`; a `.tmp` suffix
// marks a file being written, never read as the real one.

/// The log directory inside a data directory.
pub const LOG_DIR: &str = "log";
/// The writer's lock file inside a data directory (held with `flock` while a writer runs).
pub const LOCK_FILE: &str = "LOCK";
pub const SEGMENT_EXT: &str = "pwlog";
pub const INDEX_EXT: &str = "pwidx";
pub const COMPRESSED_EXT: &str = "pwzst";
const TMP_SUFFIX: &str = ".tmp";

pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:020}.{SEGMENT_EXT}")
}

pub fn compressed_file_name(seq: u64) -> String {
    format!("{seq:020}.{COMPRESSED_EXT}")
}

pub fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension(INDEX_EXT)
}

/// Where an index file is written before it is renamed over `index` (`<seq>.pwidx.tmp`).
pub fn index_tmp_path(index: &Path) -> PathBuf {
    index.with_extension(format!("{INDEX_EXT}{TMP_SUFFIX}"))
}

/// Where a compressed copy is written before it is renamed into place (`<seq>.pwzst.tmp`).
pub fn compressed_tmp_path(log_dir: &Path, seq: u64) -> PathBuf {
    log_dir.join(format!("{}{TMP_SUFFIX}", compressed_file_name(seq)))
}

/// Whether a file name is an unfinished compressed copy (removed by recovery).
pub fn is_compressed_tmp_name(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX).and_then(|n| n.strip_suffix(COMPRESSED_EXT)).is_some_and(|n| n.ends_with('.'))
}

pub fn is_compressed_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == COMPRESSED_EXT)
}

/// The sequence number a segment file name stands for, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    parse_seq(name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?)
}

/// The sequence number a compressed segment file name stands for, if it is one.
pub fn parse_compressed_name(name: &str) -> Option<u64> {
    parse_seq(name.strip_suffix(COMPRESSED_EXT)?.strip_suffix('.')?)
}

fn parse_seq(stem: &str) -> Option<u64> {
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A segment's files: `(seq, plain .pwlog, compressed .pwzst)`.
pub type SegmentFiles = (u64, Option<PathBuf>, Option<PathBuf>);

/// Segments of a log directory, in order. Both files are present only for an instant while a
/// compression finishes (or after a crash then).
pub fn list_segment_files(log_dir: &Path) -> Result<Vec<SegmentFiles>> {
    let rd = match std::fs::read_dir(log_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", log_dir.display()), e)),
    };
    let mut found: std::collections::BTreeMap<u64, (Option<PathBuf>, Option<PathBuf>)> = Default::default();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", log_dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_segment_name(name) {
            found.entry(seq).or_default().0 = Some(entry.path());
        } else if let Some(seq) = parse_compressed_name(name) {
            found.entry(seq).or_default().1 = Some(entry.path());
        }
    }
    Ok(found.into_iter().map(|(seq, (p, c))| (seq, p, c)).collect())
}

/// Segment files of a log directory, in order: the plain file when there is one, else the
/// compressed one (`is_compressed_path` tells which).
pub fn list_segments(log_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    Ok(list_segment_files(log_dir)?
        .into_iter()
        .filter_map(|(seq, plain, compressed)| plain.or(compressed).map(|p| (seq, p)))
        .collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub created_ns: i64,
    pub state: u32,
    pub published_end: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    Ok(Header),
    /// Magic or CRC wrong, or too short: damage (a writer repairs it from the file name).
    Damaged,
    /// A valid header from a newer PumpWatch.
    NewerVersion(u16),
}

pub fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    b[16..24].copy_from_slice(&h.seq.to_le_bytes());
    b[24..32].copy_from_slice(&h.created_ns.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b[STATE_AT..STATE_AT + 4].copy_from_slice(&h.state.to_le_bytes());
    b[PUBLISHED_END_AT..PUBLISHED_END_AT + 8].copy_from_slice(&h.published_end.to_le_bytes());
    b
}

pub fn decode_header(b: &[u8]) -> HeaderCheck {
    if b.len() < HEADER_LEN || b[0..8] != MAGIC {
        return HeaderCheck::Damaged;
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    if crc32c::crc32c(&b[0..32]) != u32_at(32) {
        return HeaderCheck::Damaged;
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version > FORMAT_VERSION {
        return HeaderCheck::NewerVersion(version);
    }
    HeaderCheck::Ok(Header {
        seq: u64_at(16),
        created_ns: u64_at(24) as i64,
        state: u32_at(STATE_AT),
        published_end: u64_at(PUBLISHED_END_AT),
    })
}

/// What a sealed segment's seal vouches for: its published end and its totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seal {
    pub published_end: u64,
    /// Valid records in `[64, published_end)`.
    pub records: u64,
    /// CRC-32C of the 4-byte CRC fields of those records, concatenated in log order.
    pub crc_chain: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealCheck {
    /// Not sealed (active), or a header that is damaged.
    Unsealed,
    /// Sealed by format version 1, which had no seal: the published end is taken as it is.
    Legacy,
    Ok(Seal),
    /// Sealed, but the seal's CRC does not match its bytes: the published end and totals are
    /// not to be trusted (a reader reads to the end of the file).
    Altered,
}

/// The seal of a segment header (whose header CRC checked out, see `decode_header`).
pub fn check_seal(b: &[u8]) -> SealCheck {
    if b.len() < HEADER_LEN || !matches!(decode_header(b), HeaderCheck::Ok(h) if h.state == STATE_SEALED) {
        return SealCheck::Unsealed;
    }
    if u16::from_le_bytes([b[8], b[9]]) < SEAL_VERSION {
        return SealCheck::Legacy;
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if crc32c::crc32c(&b[0..SEAL_CRC_AT]) != u32_at(SEAL_CRC_AT) {
        return SealCheck::Altered;
    }
    SealCheck::Ok(Seal {
        published_end: u64_at(PUBLISHED_END_AT),
        records: u64_at(SEAL_RECORDS_AT),
        crc_chain: u32_at(SEAL_CHAIN_AT),
    })
}

/// The header of a segment sealed with `seal`: the current format version, state sealed, the
/// published end and totals, and the seal's CRC over bytes 0..60.
pub fn sealed_header(seq: u64, created_ns: i64, seal: &Seal) -> [u8; HEADER_LEN] {
    let mut b = encode_header(&Header { seq, created_ns, state: STATE_SEALED, published_end: seal.published_end });
    b[SEAL_RECORDS_AT..SEAL_RECORDS_AT + 8].copy_from_slice(&seal.records.to_le_bytes());
    b[SEAL_CHAIN_AT..SEAL_CHAIN_AT + 4].copy_from_slice(&seal.crc_chain.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..SEAL_CRC_AT]);
    b[SEAL_CRC_AT..SEAL_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Folds one record's frame (its 8-byte header first) into a seal's CRC chain.
#[inline]
pub fn chain_frame(chain: u32, frame: &[u8]) -> u32 {
    record::crc_append_u32(chain, u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]))
}

/// The writer's map of its active segment. The virtual range is reserved once for the whole
/// segment; the file behind it grows by `fallocate`, and nothing is ever written past what was
/// allocated, so a full disk is an error from `fallocate`, never a SIGBUS.
pub struct ActiveMap {
    pub seq: u64,
    pub path: PathBuf,
    pub file: File,
    map: MmapRaw,
    pub map_len: usize,
}

impl ActiveMap {
    pub fn open(path: &Path, seq: u64, map_len: usize) -> Result<ActiveMap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(format!("opening segment {}", path.display()), e))?;
        let map = MmapOptions::new()
            .len(map_len)
            .map_raw(&file)
            .map_err(|e| Error::io(format!("mapping segment {}", path.display()), e))?;
        Ok(ActiveMap { seq, path: path.to_owned(), file, map, map_len })
    }

    /// The first `len` bytes. Safety of the aliasing: the writer only writes past the published
    /// end, and `len` never exceeds what was allocated; bytes before the published end are
    /// never written again.
    pub fn bytes(&self, len: usize) -> &[u8] {
        let len = len.min(self.map_len);
        // SAFETY: the mapping is `map_len` bytes long and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), len) }
    }

    /// Copies `data` to `off`. The caller guarantees `off + data.len()` is allocated and that
    /// no reader is reading there yet (it is past the published end).
    pub fn write_at(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.map_len, "write past the segment's mapping");
        // SAFETY: bounds checked above; single writer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(off), data.len()) }
    }

    /// Publishes a new end: every byte before it is complete. Release order makes the records
    /// visible to readers in other processes before the end that covers them.
    pub fn publish_end(&self, end: u64) {
        // SAFETY: offset 40 of a page-aligned mapping is 8-aligned; the header is allocated.
        let cell = unsafe { &*(self.map.as_mut_ptr().add(PUBLISHED_END_AT) as *const AtomicU64) };
        cell.store(end, Ordering::Release);
    }

    pub fn set_state(&self, state: u32) {
        self.write_at(STATE_AT, &state.to_le_bytes());
    }

    /// Faults in `[from, to)` for writing without changing its contents (`MADV_POPULATE_WRITE`).
    pub fn populate_for_write(&self, from: usize, to: usize) {
        let page = 4096;
        let from = from / page * page;
        let to = to.min(self.map_len);
        if to <= from {
            return;
        }
        // SAFETY: the range lies inside the mapping; the advice does not modify memory.
        unsafe {
            libc::madvise(self.map.as_mut_ptr().add(from) as *mut libc::c_void, to - from, libc::MADV_POPULATE_WRITE);
        }
    }

    /// Drops the pages wholly inside `[from, to)` from this process's page tables
    /// (`MADV_DONTNEED`), once they are on disk: the mapping is shared, so their contents stay in
    /// the file and the page cache and a later read faults them back in. Without it, every page
    /// written stays in the recorder's resident memory until its segment rolls (up to the segment
    /// size); with it, resident memory stays flat however much is recorded.
    pub fn release(&self, from: usize, to: usize) {
        let page = 4096;
        let from = from.div_ceil(page) * page;
        let to = to.min(self.map_len) / page * page;
        if to <= from {
            return;
        }
        // SAFETY: the range lies inside the mapping, which is MAP_SHARED and file-backed: the
        // advice discards no data (it only unmaps pages, which stay in the page cache).
        unsafe {
            libc::madvise(self.map.as_mut_ptr().add(from) as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
        }
    }

    /// Writes the given range of the map to disk (msync).
    pub fn sync_range(&self, from: usize, to: usize) -> std::io::Result<()> {
        if to > from {
            fault::point(fault::MSYNC)?;
            self.map.flush_range(from, to - from)?;
        }
        Ok(())
    }
}

/// Drops the pages wholly inside `[from, to)` of a read-only file mapping from this process's
/// resident set (`MADV_DONTNEED`): they stay in the file and the page cache, and a later read
/// faults them back in. For passes over a whole sealed segment (compression) that would otherwise
/// leave the segment's size in the recorder's resident memory.
pub fn drop_mapped_pages(map: &Mmap, from: usize, to: usize) {
    let page = 4096;
    let from = from.div_ceil(page) * page;
    let to = to.min(map.len()) / page * page;
    if to <= from {
        return;
    }
    // SAFETY: the range lies inside `map`, a file-backed mapping: the advice discards no data.
    unsafe {
        libc::madvise(map.as_ptr().add(from) as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
    }
}

/// Reads the published end of a mapped segment with acquire order (pairs with `publish_end`).
pub fn load_published_end(bytes: &[u8]) -> u64 {
    if bytes.len() < HEADER_LEN {
        return 0;
    }
    // SAFETY: as in `publish_end`; loads never write to the (possibly read-only) mapping.
    let cell = unsafe { &*(bytes.as_ptr().add(PUBLISHED_END_AT) as *const AtomicU64) };
    cell.load(Ordering::Acquire)
}

pub fn load_state(bytes: &[u8]) -> u32 {
    if bytes.len() < HEADER_LEN {
        return STATE_SEALED;
    }
    u32::from_le_bytes([bytes[STATE_AT], bytes[STATE_AT + 1], bytes[STATE_AT + 2], bytes[STATE_AT + 3]])
}

/// A read-only map of a whole segment file as it is now.
pub fn map_readonly(path: &Path) -> Result<Option<Mmap>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening segment {}", path.display()), e)),
    };
    let len = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the file is append-only while mapped; readers stay below the published end,
    // which never passes the file's length.
    let map = unsafe { MmapOptions::new().len(len as usize).map(&file) }
        .map_err(|e| Error::io(format!("mapping segment {}", path.display()), e))?;
    Ok(Some(map))
}

/// `posix_fallocate`: reserve disk blocks so writes through the map cannot hit a full disk.
pub fn allocate(file: &File, len: u64, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let len_off = libc::off_t::try_from(len)
        .map_err(|_| Error::InvalidInput(format!("segment size {len} is too large for this system")))?;
    let rc = match fault::point(fault::FALLOCATE) {
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        // SAFETY: plain syscall on an owned descriptor.
        Ok(()) => unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len_off) },
    };
    if rc != 0 {
        let e = std::io::Error::from_raw_os_error(rc);
        if crate::error::is_disk_full(&e) {
            return Err(Error::DiskFull { path: path.to_owned(), needed: len, source: e });
        }
        return Err(Error::io(format!("reserving {len} bytes for {}", path.display()), e));
    }
    Ok(())
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    fault::point(fault::DIR_FSYNC)
        .and_then(|_| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = Header { seq: 42, created_ns: 1_700_000_000_000_000_000, state: STATE_ACTIVE, published_end: 64 };
        let b = encode_header(&h);
        assert_eq!(decode_header(&b), HeaderCheck::Ok(h));
        for i in 0..32 {
            let mut d = b;
            d[i] ^= 1;
            assert_ne!(decode_header(&d), HeaderCheck::Ok(h), "flip at {i}");
        }
        assert_eq!(parse_segment_name(&segment_file_name(7)), Some(7));
        assert_eq!(check_seal(&b), SealCheck::Unsealed);
    }

    #[test]
    fn seal_covers_the_published_end_and_totals() {
        let seal = Seal { published_end: 4096, records: 41, crc_chain: 0xdead_beef };
        let b = sealed_header(3, 1_700_000_000_000_000_000, &seal);
        assert_eq!(check_seal(&b), SealCheck::Ok(seal));
        assert!(matches!(decode_header(&b), HeaderCheck::Ok(h) if h.state == STATE_SEALED && h.published_end == 4096));
        for i in 36..64 {
            let mut d = b;
            d[i] ^= 1;
            let got = check_seal(&d);
            assert!(got == SealCheck::Altered || (i < 40 && got == SealCheck::Unsealed), "flip at {i}: {got:?}");
        }
        // A version 1 sealed header has no seal: read as before.
        let mut v1 = encode_header(&Header { seq: 3, created_ns: 5, state: STATE_SEALED, published_end: 64 });
        v1[8..10].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&v1[0..32]);
        v1[32..36].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(check_seal(&v1), SealCheck::Legacy);
        assert_eq!(parse_segment_name("7.pwlog"), None);
    }
}
