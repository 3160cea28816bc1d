//! Compressed sealed segments (`.pwzst`, docs/FORMAT.md "Compressed segment").
//!
//! A sealed segment is rewritten as one zstd frame per index block plus a frame table that
//! carries the block's index entry, so a window query decompresses only the blocks whose time
//! range overlaps it. Decompressing every frame in order behind the plain header reproduces the
//! sealed `.pwlog` byte for byte (damaged bytes included): compression never loses anything.
//!
//! The file is written under a temporary name, synced, checked against the plain segment and
//! renamed; only then is the plain segment removed. [`recover`] finishes or discards a
//! compression a crash interrupted, so the directory always holds one readable copy.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memmap2::{Mmap, MmapOptions};

use super::fault;
use super::index::{self, IndexEntry};
use super::segment::{self, HeaderCheck, HEADER_LEN, STATE_SEALED};
use crate::{Error, Result};

pub const ZMAGIC: [u8; 8] = *b"PUMPWZST";
pub const ZVERSION: u16 = 1;
pub const ZHEADER_LEN: usize = 64;
/// The frame table follows the file's own header and the plain segment's header.
pub const TABLE_AT: usize = ZHEADER_LEN + HEADER_LEN;
pub const FRAME_ENTRY_LEN: usize = 64;
pub const MAX_LEVEL: i32 = 22;
pub const DEFAULT_LEVEL: i32 = 3;
/// The largest block the index makes: a block closes at the record that takes it to
/// `BLOCK_BYTES` or more, so it is under `BLOCK_BYTES` plus one whole record.
const MAX_BLOCK: usize = index::BLOCK_BYTES as usize + crate::record::FRAME_HEADER + crate::record::MAX_PAYLOAD;

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// The file's own 64-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZHeader {
    pub frames: u32,
    pub seq: u64,
    /// Length of the plain segment (its published end).
    pub plain_len: u64,
    /// File offset of the first frame: `TABLE_AT + 64 * frames`.
    pub data_at: u64,
    pub level: i32,
}

impl ZHeader {
    pub fn encode(&self) -> [u8; ZHEADER_LEN] {
        let mut b = [0u8; ZHEADER_LEN];
        b[0..8].copy_from_slice(&ZMAGIC);
        b[8..10].copy_from_slice(&ZVERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(ZHEADER_LEN as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.frames.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.plain_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.data_at.to_le_bytes());
        b[40..44].copy_from_slice(&self.level.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `Ok(None)` when the header is damaged (the table still locates every frame).
    fn decode(b: &[u8], path: &Path) -> Result<Option<ZHeader>> {
        if b.len() < ZHEADER_LEN || b[0..8] != ZMAGIC || crc32c::crc32c(&b[0..44]) != u32_at(b, 44) {
            return Ok(None);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version > ZVERSION {
            return Err(Error::Format {
                path: path.to_owned(),
                detail: format!(
                    "it was written by a newer PumpWatch (compressed format {version}, this one reads up to {ZVERSION}); upgrade PumpWatch"
                ),
            });
        }
        let h = ZHeader {
            frames: u32_at(b, 12),
            seq: u64_at(b, 16),
            plain_len: u64_at(b, 24),
            data_at: u64_at(b, 32),
            level: u32_at(b, 40) as i32,
        };
        let consistent = h.data_at == (TABLE_AT as u64).saturating_add(FRAME_ENTRY_LEN as u64 * h.frames as u64)
            && h.plain_len >= HEADER_LEN as u64;
        Ok(consistent.then_some(h))
    }
}

/// One entry of the frame table: the index block a frame holds and where the frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameEntry {
    pub block: IndexEntry,
    pub offset: u64,
    pub len: u32,
    /// CRC-32C of the frame's compressed bytes.
    pub crc: u32,
}

impl FrameEntry {
    pub fn encode(&self) -> [u8; FRAME_ENTRY_LEN] {
        let mut b = [0u8; FRAME_ENTRY_LEN];
        let e = &self.block;
        b[0..8].copy_from_slice(&e.start.to_le_bytes());
        b[8..16].copy_from_slice(&e.end.to_le_bytes());
        b[16..24].copy_from_slice(&e.min_ts.to_le_bytes());
        b[24..32].copy_from_slice(&e.max_ts.to_le_bytes());
        b[32..36].copy_from_slice(&e.trades.to_le_bytes());
        b[36..40].copy_from_slice(&e.others.to_le_bytes());
        b[40..48].copy_from_slice(&self.offset.to_le_bytes());
        b[48..52].copy_from_slice(&self.len.to_le_bytes());
        b[52..56].copy_from_slice(&self.crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<FrameEntry> {
        if b.len() < FRAME_ENTRY_LEN || crc32c::crc32c(&b[0..56]) != u32_at(b, 56) {
            return None;
        }
        Some(FrameEntry {
            block: IndexEntry {
                start: u64_at(b, 0),
                end: u64_at(b, 8),
                min_ts: u64_at(b, 16) as i64,
                max_ts: u64_at(b, 24) as i64,
                trades: u32_at(b, 32),
                others: u32_at(b, 36),
            },
            offset: u64_at(b, 40),
            len: u32_at(b, 48),
            crc: u32_at(b, 52),
        })
    }
}

/// A readable piece of a compressed segment: one frame, or a run of frames whose table entries
/// are damaged (decoded in a row; its plain range comes from the entries around it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Plain range and what it holds; a run claims every time and kind, so every query reads it.
    pub entry: IndexEntry,
    pub offset: u64,
    pub len: u64,
    /// CRC of the compressed bytes; `None` for a run.
    pub crc: Option<u32>,
}

/// Damage found in the structure of a compressed file (header, frame table), in plain offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructureDamage {
    pub offset: u64,
    pub length: u64,
    pub reason: String,
}

/// A compressed segment, mapped read-only; immutable once written.
pub struct CompressedSegment {
    pub seq: u64,
    pub path: PathBuf,
    map: Option<Mmap>,
    /// The plain segment's header, as it was when sealed.
    pub plain_header: [u8; HEADER_LEN],
    pub plain_len: u64,
    pub blocks: Vec<Block>,
    pub header_ok: bool,
    pub damage: Vec<StructureDamage>,
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

impl CompressedSegment {
    /// Opens and checks the structure of a compressed segment; `None` when the file is gone.
    pub fn open(path: &Path, seq: u64) -> Result<Option<CompressedSegment>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening compressed segment {}", path.display()), e)),
        };
        let len = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len() as usize;
        let map = if len == 0 {
            None
        } else {
            // SAFETY: a compressed segment is never written after its rename.
            Some(
                unsafe { MmapOptions::new().len(len).map(&file) }
                    .map_err(|e| Error::io(format!("mapping compressed segment {}", path.display()), e))?,
            )
        };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let header = ZHeader::decode(bytes, path)?;
        let mut damage = Vec::new();
        let mut plain_header = [0u8; HEADER_LEN];
        if bytes.len() >= TABLE_AT {
            plain_header.copy_from_slice(&bytes[ZHEADER_LEN..TABLE_AT]);
        }
        let plain_ok = matches!(segment::decode_header(&plain_header), HeaderCheck::Ok(h) if h.seq == seq && h.state == STATE_SEALED);
        if header.is_none() {
            damage.push(StructureDamage {
                offset: 0,
                length: HEADER_LEN as u64,
                reason: "[header] compressed segment header damaged (magic, CRC or sizes wrong); the frame table still locates the frames".into(),
            });
        } else if !plain_ok {
            damage.push(StructureDamage {
                offset: 0,
                length: HEADER_LEN as u64,
                reason: "[header] the copy of the plain segment header inside the compressed file is damaged".into(),
            });
        }
        if let Some(h) = header {
            if h.seq != seq {
                return Err(Error::Format {
                    path: path.to_owned(),
                    detail: format!("it says it is segment {} but is named as segment {seq}", h.seq),
                });
            }
        }
        // Entries: as many as the header says, or (header damaged) up to the first frame.
        let mut slots: Vec<Option<FrameEntry>> = Vec::new();
        match header {
            Some(h) => {
                for k in 0..h.frames as usize {
                    let at = TABLE_AT + k * FRAME_ENTRY_LEN;
                    slots.push(bytes.get(at..at + FRAME_ENTRY_LEN).and_then(FrameEntry::decode));
                }
            }
            None => {
                let mut data_at = bytes.len();
                let mut at = TABLE_AT;
                while at + FRAME_ENTRY_LEN <= data_at {
                    let e = FrameEntry::decode(&bytes[at..at + FRAME_ENTRY_LEN]);
                    if let Some(e) = e {
                        data_at = data_at.min(e.offset as usize);
                    }
                    slots.push(e);
                    at += FRAME_ENTRY_LEN;
                }
            }
        }
        let data_at = header.map_or(TABLE_AT + slots.len() * FRAME_ENTRY_LEN, |h| h.data_at as usize) as u64;
        // Plain length: the header's; else the last good entry's end; else the plain header's.
        let plain_len = match header {
            Some(h) => h.plain_len,
            None => match slots.last() {
                Some(Some(e)) => e.block.end,
                _ if plain_ok => segment::load_published_end(&plain_header),
                _ => u64::MAX,
            },
        };
        // Entries must chain in both plain and compressed offsets; one that does not is treated
        // like a damaged one.
        let mut blocks = Vec::with_capacity(slots.len());
        let (mut plain_at, mut file_at) = (HEADER_LEN as u64, data_at);
        let mut k = 0;
        while k < slots.len() {
            match slots[k] {
                Some(e)
                    if e.block.start == plain_at
                        && e.offset == file_at
                        && e.block.end > e.block.start
                        && e.block.end <= plain_len =>
                {
                    blocks.push(Block { entry: e.block, offset: e.offset, len: e.len as u64, crc: Some(e.crc) });
                    plain_at = e.block.end;
                    file_at = e.offset + e.len as u64;
                    k += 1;
                }
                _ => {
                    // A run of bad entries up to the next entry that fits after it.
                    let mut j = k + 1;
                    while j < slots.len() && !slots[j].is_some_and(|e| e.block.start > plain_at && e.offset > file_at) {
                        j += 1;
                    }
                    let (plain_end, file_end) = match slots.get(j).copied().flatten() {
                        Some(next) => (next.block.start, next.offset),
                        None => (plain_len, bytes.len() as u64),
                    };
                    damage.push(StructureDamage {
                        offset: plain_at,
                        length: plain_end.saturating_sub(plain_at).min(u64::MAX / 2),
                        reason: format!(
                            "[frame-table] {} frame table entries damaged; their frames are decoded in a row",
                            j - k
                        ),
                    });
                    blocks.push(Block {
                        entry: IndexEntry {
                            start: plain_at,
                            end: plain_end,
                            min_ts: i64::MIN,
                            max_ts: i64::MAX,
                            trades: 1,
                            others: 1,
                        },
                        offset: file_at,
                        len: file_end.saturating_sub(file_at),
                        crc: None,
                    });
                    plain_at = plain_end;
                    file_at = file_end;
                    k = j;
                }
            }
        }
        let mut cs = CompressedSegment {
            seq,
            path: path.to_owned(),
            map,
            plain_header,
            plain_len,
            blocks,
            header_ok: header.is_some(),
            damage,
        };
        if cs.plain_len == u64::MAX {
            // Header and last entry both damaged: the plain length is what the last run decodes to.
            let mut out = Vec::new();
            let last = cs.blocks.len().saturating_sub(1);
            let start = cs.blocks.last().map_or(HEADER_LEN as u64, |b| b.entry.start);
            if !cs.blocks.is_empty() {
                let _ = cs.read_block(last, &mut out);
                cs.blocks[last].entry.end = start + out.len() as u64;
            }
            cs.plain_len = start + out.len() as u64;
        }
        Ok(Some(cs))
    }

    pub fn file_len(&self) -> u64 {
        self.bytes().len() as u64
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Index entries of the blocks (what queries select blocks by).
    pub fn entries(&self) -> Vec<IndexEntry> {
        self.blocks.iter().map(|b| b.entry).collect()
    }

    /// Decompresses block `i` into `out`. On damage returns why, with `out` holding what could
    /// be decoded (nothing for a frame whose CRC fails; a prefix for a run).
    /// Gives the pages of frame `i` back (see `segment::drop_mapped_pages`), after a pass that
    /// reads every frame once.
    pub fn drop_frame_pages(&self, i: usize) {
        if let (Some(map), Some(b)) = (&self.map, self.blocks.get(i)) {
            segment::drop_mapped_pages(map, b.offset as usize, b.offset.saturating_add(b.len) as usize);
        }
    }

    pub fn read_block(&self, i: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        out.clear();
        let Some(b) = self.blocks.get(i) else { return Err("no such frame".into()) };
        let bytes = self.bytes();
        let (s, t) = (b.offset as usize, b.offset.saturating_add(b.len) as usize);
        let Some(src) = bytes.get(s..t) else {
            return Err("compressed frame lies past the end of the file (file cut short)".into());
        };
        let want = b.entry.end.saturating_sub(b.entry.start) as usize;
        match b.crc {
            Some(crc) => {
                if crc32c::crc32c(src) != crc {
                    return Err("compressed frame fails its CRC; its records are skipped".into());
                }
                // A block is at most one index block plus one record past it.
                if want > MAX_BLOCK {
                    return Err(format!("frame table entry claims a block of {want} bytes, more than a block can hold; its records are skipped"));
                }
                out.reserve(want);
                let r = DECOMPRESSOR.with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
                    }
                    match d.as_mut() {
                        Some(d) => d.decompress_to_buffer(src, out).map_err(|e| e.to_string()),
                        None => Err("no decompressor".into()),
                    }
                });
                match r {
                    Ok(n) if n == want => Ok(()),
                    Ok(n) => {
                        out.clear();
                        Err(format!("compressed frame decodes to {n} bytes, its table entry says {want}; its records are skipped"))
                    }
                    Err(e) => {
                        out.clear();
                        Err(format!("compressed frame does not decode ({e}); its records are skipped"))
                    }
                }
            }
            None => {
                let mut dec = match zstd::stream::read::Decoder::with_buffer(src) {
                    Ok(d) => d,
                    Err(e) => return Err(format!("cannot start a zstd decoder: {e}")),
                };
                let mut chunk = vec![0u8; 64 << 10];
                while out.len() < want {
                    match dec.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => out.extend_from_slice(&chunk[..n]),
                        Err(e) => {
                            out.truncate(want);
                            return Err(format!("frames after a damaged table entry stop decoding ({e}); what follows in them is skipped"));
                        }
                    }
                }
                out.truncate(want);
                if out.len() < want {
                    return Err("frames after a damaged table entry decode to less than their range".into());
                }
                Ok(())
            }
        }
    }
}

/// What one compression did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompressOutcome {
    pub seq: u64,
    pub plain_bytes: u64,
    pub compressed_bytes: u64,
    pub frames: u64,
}

fn io_err<'a>(what: &str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    let what = what.to_owned();
    move |e| Error::io(format!("{what} {}", path.display()), e)
}

/// Compresses sealed segment `seq` of `log_dir`: writes `.pwzst` (temporary name, synced,
/// read back and compared with the plain bytes, renamed), then removes the plain segment and its
/// index. `Ok(None)` when there is nothing to do (not sealed, already compressed, gone).
pub fn compress_segment(log_dir: &Path, seq: u64, level: i32) -> Result<Option<CompressOutcome>> {
    compress_segment_unless(log_dir, seq, level, &|| false)
}

/// `compress_segment` that gives up (removing its temporary file, keeping the plain segment)
/// when `cancelled()` turns true between two blocks.
/// How much of a segment a pass reads before it gives those pages back.
const RELEASE_STEP: usize = 16 << 20;

pub fn compress_segment_unless(
    log_dir: &Path,
    seq: u64,
    level: i32,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<CompressOutcome>> {
    let plain_path = log_dir.join(segment::segment_file_name(seq));
    let final_path = log_dir.join(segment::compressed_file_name(seq));
    if final_path.exists() {
        return Ok(None);
    }
    let Some(map) = segment::map_readonly(&plain_path)? else { return Ok(None) };
    let HeaderCheck::Ok(h) = segment::decode_header(&map) else { return Ok(None) };
    if h.state != STATE_SEALED || h.seq != seq {
        return Ok(None);
    }
    let plain_len = segment::load_published_end(&map);
    if plain_len < HEADER_LEN as u64
        || plain_len != map.len() as u64
        || segment::check_seal(&map) == segment::SealCheck::Altered
    {
        // A sealed file shorter or longer than its published end, or a seal that fails its CRC,
        // is damage `verify` reports: compressing up to that end could drop bytes. Leave it plain.
        return Ok(None);
    }
    let data = &map[..plain_len as usize];
    // The index is rebuilt from the records: what goes into the table is what the bytes hold.
    // Each pass over the segment gives its pages back as it goes: the recorder's resident memory
    // must not grow by a segment's size while it compresses one.
    let release = |from: usize, to: usize| segment::drop_mapped_pages(&map, from, to);
    let mut released = 0;
    let (mut blocks, _) = index::build_index_passing(data, HEADER_LEN, plain_len as usize, plain_len as usize, |at| {
        if at - released >= RELEASE_STEP {
            release(released, at);
            released = at;
        }
    });
    release(released, plain_len as usize);
    let covered = blocks.last().map_or(HEADER_LEN as u64, |e| e.end);
    if covered < plain_len {
        // Bytes after the last valid record (damage) are kept too, in a block no query reads.
        blocks.push(IndexEntry {
            start: covered,
            end: plain_len,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            trades: 0,
            others: 0,
        });
    }
    let tmp = segment::compressed_tmp_path(log_dir, seq);
    let result = write_compressed(&tmp, seq, level, &map[..HEADER_LEN], data, &blocks, cancelled, &release).and_then(
        |outcome| match outcome {
            Some(o) => check_against_plain(&tmp, seq, data, &release).map(|_| Some(o)),
            None => Ok(None),
        },
    );
    let outcome = match result {
        Ok(Some(o)) => o,
        Ok(None) => {
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            // Retention deleting the segment meanwhile (temporary file included) is no error.
            return if plain_path.exists() { Err(e) } else { Ok(None) };
        }
    };
    // Retention may have deleted the plain segment meanwhile: do not bring it back. (Retention
    // removes the temporary file first, so a deletion after this check makes the rename fail.)
    if !plain_path.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(None);
    }
    match fault::point(fault::COMPRESS_RENAME).and_then(|_| std::fs::rename(&tmp, &final_path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("renaming {}", tmp.display()), e));
        }
    }
    segment::fsync_dir(log_dir)?;
    drop(map);
    remove_plain(&plain_path)?;
    segment::fsync_dir(log_dir)?;
    Ok(Some(outcome))
}

fn remove_plain(plain_path: &Path) -> Result<()> {
    match fault::point(fault::COMPRESS_REMOVE).and_then(|_| std::fs::remove_file(plain_path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("removing {}", plain_path.display()), e)),
    }
    let _ = std::fs::remove_file(segment::index_path(plain_path));
    Ok(())
}

/// Writes the compressed file; `None` when cancelled.
#[allow(clippy::too_many_arguments)] // one call site; a struct for it would only rename the list
fn write_compressed(
    tmp: &Path,
    seq: u64,
    level: i32,
    plain_header: &[u8],
    data: &[u8],
    blocks: &[IndexEntry],
    cancelled: &dyn Fn() -> bool,
    release: &dyn Fn(usize, usize),
) -> Result<Option<CompressOutcome>> {
    fault::point(fault::COMPRESS_WRITE).map_err(io_err("writing", tmp))?;
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(tmp).map_err(io_err("creating", tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let n = blocks.len();
    let data_at = (TABLE_AT + n * FRAME_ENTRY_LEN) as u64;
    w.write_all(&vec![0u8; data_at as usize]).map_err(io_err("writing", tmp))?;
    let mut cctx = zstd::bulk::Compressor::new(level).map_err(|e| Error::io("starting zstd", e))?;
    cctx.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .map_err(|e| Error::io("configuring zstd", e))?;
    let mut table = Vec::with_capacity(n * FRAME_ENTRY_LEN);
    let mut buf = Vec::new();
    let mut at = data_at;
    for e in blocks {
        if cancelled() {
            return Ok(None);
        }
        buf.clear();
        buf.reserve(zstd::zstd_safe::compress_bound((e.end - e.start) as usize));
        cctx.compress_to_buffer(&data[e.start as usize..e.end as usize], &mut buf)
            .map_err(|err| Error::io("compressing a block", err))?;
        release(e.start as usize, e.end as usize);
        w.write_all(&buf).map_err(io_err("writing", tmp))?;
        let len =
            u32::try_from(buf.len()).map_err(|_| Error::InvalidInput("a compressed block is over 4 GiB".into()))?;
        table.extend_from_slice(&FrameEntry { block: *e, offset: at, len, crc: crc32c::crc32c(&buf) }.encode());
        at += buf.len() as u64;
    }
    let mut file = w.into_inner().map_err(|e| Error::io(format!("writing {}", tmp.display()), e.into_error()))?;
    let header = ZHeader { frames: n as u32, seq, plain_len: data.len() as u64, data_at, level };
    file.seek(SeekFrom::Start(0)).map_err(io_err("writing", tmp))?;
    file.write_all(&header.encode()).map_err(io_err("writing", tmp))?;
    file.write_all(plain_header).map_err(io_err("writing", tmp))?;
    file.write_all(&table).map_err(io_err("writing", tmp))?;
    fault::point(fault::COMPRESS_FSYNC).and_then(|_| file.sync_all()).map_err(io_err("syncing", tmp))?;
    Ok(Some(CompressOutcome { seq, plain_bytes: data.len() as u64, compressed_bytes: at, frames: n as u64 }))
}

/// Reads a compressed file back and compares every frame with the plain bytes it stands for.
fn check_against_plain(path: &Path, seq: u64, plain: &[u8], release: &dyn Fn(usize, usize)) -> Result<()> {
    let bad = |detail: String| Error::Format { path: path.to_owned(), detail };
    let Some(cs) = CompressedSegment::open(path, seq)? else {
        return Err(bad("it vanished while being written".into()));
    };
    if !cs.header_ok
        || !cs.damage.is_empty()
        || cs.plain_len != plain.len() as u64
        || cs.plain_header[..] != plain[..HEADER_LEN]
    {
        return Err(bad("its header or frame table does not read back as written".into()));
    }
    let mut out = Vec::new();
    let mut at = HEADER_LEN as u64;
    for (i, b) in cs.blocks.iter().enumerate() {
        cs.read_block(i, &mut out).map_err(|e| bad(format!("frame {i}: {e}")))?;
        if b.crc.is_none() || b.entry.start != at || out[..] != plain[b.entry.start as usize..b.entry.end as usize] {
            return Err(bad(format!("frame {i} does not decode to the plain bytes it was made from")));
        }
        release(b.entry.start as usize, b.entry.end as usize);
        cs.drop_frame_pages(i);
        at = b.entry.end;
    }
    if at != plain.len() as u64 {
        return Err(bad("its frames do not cover the whole segment".into()));
    }
    Ok(())
}

/// Finishes or discards compressions a crash interrupted: temporary files are removed; where a
/// segment is both plain and compressed, the compressed copy is kept only when it decodes to
/// exactly the plain bytes (then the plain copy goes), else it is removed. Returns what it did.
pub fn recover(log_dir: &Path) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let rd = match std::fs::read_dir(log_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(notes),
        Err(e) => return Err(Error::io(format!("listing {}", log_dir.display()), e)),
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if segment::is_compressed_tmp_name(&name) {
            std::fs::remove_file(entry.path()).map_err(io_err("removing", &entry.path()))?;
            notes.push(format!("{name}: unfinished compression removed (the plain segment is kept)"));
        }
    }
    for (seq, plain, compressed) in segment::list_segment_files(log_dir)? {
        let (Some(plain), Some(compressed)) = (plain, compressed) else { continue };
        let keep_compressed = match segment::map_readonly(&plain)? {
            Some(map) => {
                let end = segment::load_published_end(&map);
                let sealed = matches!(segment::decode_header(&map), HeaderCheck::Ok(h) if h.state == STATE_SEALED);
                sealed
                    && end <= map.len() as u64
                    && check_against_plain(&compressed, seq, &map[..end as usize], &|a, b| {
                        segment::drop_mapped_pages(&map, a, b)
                    })
                    .is_ok()
            }
            None => true,
        };
        if keep_compressed {
            remove_plain(&plain)?;
            notes.push(format!("{}: compression finished (plain copy removed)", segment::segment_file_name(seq)));
        } else {
            std::fs::remove_file(&compressed).map_err(io_err("removing", &compressed))?;
            notes.push(format!(
                "{}: incomplete compressed copy removed (the plain segment is kept)",
                segment::compressed_file_name(seq)
            ));
        }
    }
    segment::fsync_dir(log_dir)?;
    Ok(notes)
}

/// Compression counters for status pages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompressionStats {
    pub segments: u64,
    pub plain_bytes: u64,
    pub compressed_bytes: u64,
    pub seconds: f64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub pending: u64,
}

#[derive(Default)]
struct Queue {
    /// Segments to compress: (seq, backlog). Backlog = found plain when the writer opened; the
    /// others were sealed by this writer.
    seqs: VecDeque<(u64, bool)>,
    busy: bool,
    busy_with_backlog: bool,
    stop: bool,
    stats: CompressionStats,
}

/// The writer's background compressor: one thread, lower CPU priority than the appends, working
/// through sealed segments in order. Never touches the active segment.
///
/// On close it finishes the segments this writer sealed (at most the last one or two: closing
/// stays quick) and leaves the backlog found at open for the next writer, abandoning one in
/// progress between two blocks.
pub struct Compressor {
    log_dir: PathBuf,
    level: i32,
    abandon: std::sync::atomic::AtomicBool,
    queue: Mutex<Queue>,
    wake: Condvar,
    idle: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Compressor {
    pub fn start(log_dir: &Path, level: i32) -> Result<(Arc<Compressor>, JoinHandle<()>)> {
        let c = Arc::new(Compressor {
            log_dir: log_dir.to_owned(),
            level,
            abandon: std::sync::atomic::AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let worker = c.clone();
        let handle = std::thread::Builder::new()
            .name("pumpwatch-zstd".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::io("starting the compression thread", e))?;
        Ok((c, handle))
    }

    /// Queues a segment this writer has just sealed.
    pub fn request(&self, seq: u64) {
        self.push(seq, false);
    }

    /// Queues a sealed segment found plain when the writer opened.
    pub fn request_backlog(&self, seq: u64) {
        self.push(seq, true);
    }

    fn push(&self, seq: u64, backlog: bool) {
        let mut q = lock(&self.queue);
        if !q.seqs.iter().any(|(s, _)| *s == seq) {
            q.seqs.push_back((seq, backlog));
            q.stats.pending = q.seqs.len() as u64;
        }
        self.wake.notify_one();
    }

    /// Lets the thread finish the segments this writer sealed, drops the backlog, then ends.
    pub fn stop(&self) {
        let mut q = lock(&self.queue);
        q.stop = true;
        q.seqs.retain(|(_, backlog)| !backlog);
        if q.busy && q.busy_with_backlog {
            self.abandon.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.wake.notify_all();
    }

    pub fn stats(&self) -> CompressionStats {
        let q = lock(&self.queue);
        let mut s = q.stats.clone();
        s.pending = q.seqs.len() as u64 + q.busy as u64;
        s
    }

    /// Waits until nothing is queued or running; false on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.queue);
        while q.busy || !q.seqs.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self.idle.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    fn run(&self) {
        // Appends come first: this thread yields the CPU to them (Linux: per-thread nice).
        // SAFETY: plain syscalls on the calling thread.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
        loop {
            let (seq, backlog) = {
                let mut q = lock(&self.queue);
                loop {
                    if let Some((s, backlog)) = q.seqs.pop_front() {
                        q.busy = true;
                        q.busy_with_backlog = backlog;
                        break (s, backlog);
                    }
                    if q.stop {
                        self.idle.notify_all();
                        return;
                    }
                    self.idle.notify_all();
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let t0 = Instant::now();
            let abandon = || backlog && self.abandon.load(std::sync::atomic::Ordering::Relaxed);
            let r = compress_segment_unless(&self.log_dir, seq, self.level, &abandon);
            let mut q = lock(&self.queue);
            q.busy = false;
            match r {
                Ok(Some(o)) => {
                    q.stats.segments += 1;
                    q.stats.plain_bytes += o.plain_bytes;
                    q.stats.compressed_bytes += o.compressed_bytes;
                    q.stats.seconds += t0.elapsed().as_secs_f64();
                }
                Ok(None) => {}
                Err(e) => {
                    // The plain segment stays and stays readable; the next open tries again.
                    q.stats.errors += 1;
                    q.stats.last_error = Some(format!("compressing segment {seq}: {e}"));
                }
            }
            q.stats.pending = q.seqs.len() as u64;
            if q.seqs.is_empty() {
                self.idle.notify_all();
            }
        }
    }
}
