//! Compressed sealed segments (`.pwzst`, docs/FORMAT.md "Compressed segment"): queries read the
//! same as from plain segments, readers in flight survive a compression, a crash at any step
//! keeps one readable copy, and damaged compressed bytes are reported and skipped frame by frame.
//!
//! Where a test needs the file layout it parses it from the spec here, not through the library.

// The workspace's rust-version is 1.80: `is_multiple_of` (1.87) is not available there.
#![allow(clippy::manual_is_multiple_of)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pumpwatch_core::log::compress::{self, CompressedSegment};
use pumpwatch_core::log::reader::{self, LogReader, SegmentView, TradeQuery};
use pumpwatch_core::log::segment;
use pumpwatch_core::log::{LogConfig, LogWriter};
use pumpwatch_core::record::{Marker, MarkerKind, Quarantined, Trade};
use pumpwatch_core::venue::{self, Venue};

const T0: i64 = 1_790_370_834_848_000_000;
const MS: i64 = 1_000_000;

fn trade(i: u64) -> Trade {
    let venue = venue::ALL[(i % 12) as usize];
    let symbol = ["BTCUSDT", "BTC-USDT-SWAP", "ETH_USDT"][(i % 3) as usize];
    let id = if i % 4 == 0 { format!("{:016x}", i * 7919) } else { (9_000_000_000 + i).to_string() };
    let price = format!("{}.{:02}", 83_000 + i % 977, i % 100);
    let qty = ["0.001", "1", "0.2500"][(i % 3) as usize];
    // Exchange times mostly rising with a few backfilled ones, as from twelve venues.
    let ts = T0 + (i as i64) * MS - if i % 97 == 0 { 400 * MS } else { 0 };
    Trade::new(venue.id(), symbol, &id, &price, qty, if i % 2 == 0 { "buy" } else { "sell" }, ts, ts + 2 * MS, 0)
        .expect("valid trade")
}

fn cfg(level: i32) -> LogConfig {
    cfg_sized(level, 1 << 18)
}

fn cfg_sized(level: i32, segment_max_bytes: u64) -> LogConfig {
    LogConfig {
        fsync_interval: Duration::from_secs(3600),
        segment_max_bytes,
        prealloc_chunk: 64 << 10,
        zstd_level: level,
        ..LogConfig::default()
    }
}

/// Appends `n` trades in batches, with a marker and a quarantined frame every few batches.
fn fill(w: &mut LogWriter, n: u64) {
    let mut i = 0;
    while i < n {
        let batch: Vec<Trade> = (i..(i + 500).min(n)).map(trade).collect();
        w.append_trades(batch.iter().map(Trade::as_ref)).expect("append");
        if i % 2000 == 0 {
            w.append_marker(&Marker {
                kind: MarkerKind::GapFound,
                venue: Some(Venue::OkxSwap),
                symbol: "BTC-USDT-SWAP".into(),
                ts_ns: T0 + i as i64 * MS,
                from_ts_ns: T0 + i as i64 * MS - 5 * MS,
                to_ts_ns: T0 + i as i64 * MS,
                from_id: "10".into(),
                to_id: "12".into(),
                detail: format!("batch {i}"),
            })
            .expect("marker");
            w.append_quarantined(&Quarantined::new(Some(Venue::GateSpot), T0 + i as i64 * MS, "not JSON", b"{garbage"))
                .expect("quarantined");
        }
        i += 500;
    }
}

fn wait_compressed(w: &LogWriter) {
    let c = w.compressor().expect("compression is on");
    assert!(c.wait_idle(Duration::from_secs(120)), "compression did not finish in 2 minutes");
    let stats = w.compression_stats();
    assert_eq!(stats.errors, 0, "compression errors: {:?}", stats.last_error);
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Every query a tool makes, rendered comparably.
fn everything(views: &[SegmentView]) -> (Vec<String>, Vec<String>, usize) {
    let q = TradeQuery { include_non_trades: true, ..TradeQuery::window(i64::MIN, i64::MAX) };
    let c = reader::query_trades(views, &q).expect("query");
    let trades = (0..c.len)
        .map(|k| {
            let s = |col: &reader::StrColumn| String::from_utf8_lossy(col.get(k)).into_owned();
            format!(
                "{} {} {} {} {} {} {} {}",
                s(&c.venue),
                s(&c.symbol),
                s(&c.trade_id),
                s(&c.price),
                s(&c.qty),
                s(&c.side),
                c.ts_ns[k],
                c.recv_ns[k]
            )
        })
        .collect();
    let markers = reader::query_markers(views, &reader::MarkerQuery { start_ns: i64::MIN, end_ns: i64::MAX })
        .iter()
        .map(|m| format!("{m:?}"))
        .collect();
    let quarantined = reader::query_quarantined(views, i64::MIN, i64::MAX).len();
    (trades, markers, quarantined)
}

fn window(views: &[SegmentView], start: i64, end: i64) -> Vec<(i64, i64)> {
    let c = reader::query_trades(views, &TradeQuery::window(start, end)).expect("query");
    c.ts_ns.iter().copied().zip(c.recv_ns.iter().copied()).collect()
}

/// Two directories with the same appends, one compressed and one plain.
fn twins(n: u64) -> (tempfile::TempDir, tempfile::TempDir) {
    let (zdir, pdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, level) in [(&zdir, 3), (&pdir, 0)] {
        let mut w = LogWriter::open(dir.path(), cfg(level)).unwrap();
        fill(&mut w, n);
        w.seal_active().unwrap();
        if level > 0 {
            wait_compressed(&w);
        }
    }
    (zdir, pdir)
}

#[test]
fn compressed_segments_read_exactly_like_plain_ones() {
    let n = 30_000;
    let (zdir, pdir) = twins(n);
    let compressed = files(zdir.path(), "pwzst");
    let plain = files(pdir.path(), "pwlog");
    assert!(compressed.len() >= 5, "several segments sealed and compressed: {compressed:?}");
    // Every sealed segment is compressed; only the new active one stays plain, with its index.
    assert_eq!(compressed.len() + 1, plain.len());
    assert_eq!(files(zdir.path(), "pwlog").len(), 1);
    assert_eq!(files(zdir.path(), "pwidx").len(), 1);

    // Byte for byte: the frames decoded in order are the plain segment's records.
    for (z, p) in compressed.iter().zip(&plain) {
        let raw = fs::read(z).unwrap();
        let frames = u32::from_le_bytes(raw[12..16].try_into().unwrap()) as usize;
        let mut records = Vec::new();
        for k in 0..frames {
            let e = &raw[128 + 64 * k..128 + 64 * (k + 1)];
            let off = u64::from_le_bytes(e[40..48].try_into().unwrap()) as usize;
            let len = u32::from_le_bytes(e[48..52].try_into().unwrap()) as usize;
            records.extend(zstd::stream::decode_all(&raw[off..off + len]).unwrap());
        }
        assert_eq!(records, fs::read(p).unwrap()[64..], "{} decodes to the plain records", z.display());
        assert_eq!(&raw[64 + 36..64 + 40], &1u32.to_le_bytes(), "the plain header inside says sealed");
    }

    let mut zr = LogReader::open(zdir.path()).unwrap();
    let mut pr = LogReader::open(pdir.path()).unwrap();
    let (zv, pv) = (zr.views().unwrap(), pr.views().unwrap());
    assert!(zv.iter().filter(|v| v.is_compressed()).count() == compressed.len());
    let (zt, zm, zq) = everything(&zv);
    let (pt, pm, pq) = everything(&pv);
    assert_eq!(zt.len() as u64, n, "every appended trade reads back");
    assert_eq!(zt, pt, "trades identical to the plain log");
    assert_eq!(zm, pm, "markers identical");
    assert_eq!((zq, zm.len()), (pq, (n as usize).div_ceil(2000)));
    // Windows of many sizes and places, including ones that hit backfilled trades.
    for (k, span) in [(1u64, 1), (7, 40), (50, 2_000), (123, 9_000), (299, 400)] {
        let start = T0 + (k * 97) as i64 * MS - 450 * MS;
        let end = start + span * MS;
        assert_eq!(window(&zv, start, end), window(&pv, start, end), "window {k}");
    }
    // The record walk a log tail uses: from any record boundary, the same records at the same
    // offsets, and it stops when asked.
    for (z, p) in zv.iter().zip(&pv) {
        let mut all: Vec<(usize, Vec<u8>)> = Vec::new();
        assert!(p
            .records_from(0, |off, rec| {
                all.push((off, rec.to_vec()));
                true
            })
            .is_empty());
        for from in [0, all.len() / 3, all.len().saturating_sub(1)] {
            let from_off = all.get(from).map_or(0, |r| r.0);
            let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
            let damaged = z.records_from(from_off, |off, rec| {
                got.push((off, rec.to_vec()));
                got.len() < 1000
            });
            assert!(damaged.is_empty());
            let want: Vec<_> = all.iter().filter(|r| r.0 >= from_off).take(1000).cloned().collect();
            assert_eq!(got, want, "segment {} from record {from}", z.seq);
        }
    }
    let zs = reader::verify(zdir.path()).unwrap();
    let ps = reader::verify(pdir.path()).unwrap();
    assert!(zs.ok(), "{zs:?}");
    assert_eq!(
        (zs.segments, zs.records, zs.trades, zs.markers, zs.quarantined),
        (ps.segments, ps.records, ps.trades, ps.markers, ps.quarantined)
    );
}

#[test]
fn level_zero_leaves_sealed_segments_plain() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(dir.path(), cfg(0)).unwrap();
    fill(&mut w, 10_000);
    w.seal_active().unwrap();
    assert!(w.compressor().is_none());
    drop(w);
    assert!(files(dir.path(), "pwzst").is_empty());
    assert!(files(dir.path(), "pwlog").len() > 3);
    // Opening again with compression on compresses what was left plain.
    let w = LogWriter::open(dir.path(), cfg(3)).unwrap();
    wait_compressed(&w);
    assert_eq!(files(dir.path(), "pwlog").len(), 1, "only the active segment stays plain");
    let mut r = LogReader::open(dir.path()).unwrap();
    assert_eq!(everything(&r.views().unwrap()).0.len(), 10_000);
    assert!(LogWriter::open(tempfile::tempdir().unwrap().path(), cfg(23)).is_err(), "level 23 is refused");
}

#[test]
fn a_reader_keeps_reading_across_a_compression() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(dir.path(), cfg(0)).unwrap();
    fill(&mut w, 12_000);
    w.seal_active().unwrap();
    drop(w);
    let mut r = LogReader::open(dir.path()).unwrap();
    let before_views = r.views().unwrap();
    assert!(before_views.iter().all(|v| !v.is_compressed()));
    let before = everything(&before_views);
    // Compressed under the reader's feet (the writer reopened with compression on).
    let w = LogWriter::open(dir.path(), cfg(3)).unwrap();
    wait_compressed(&w);
    // Views taken before still read (their maps outlive the unlinked files) ...
    assert_eq!(everything(&before_views), before);
    // ... and the next refresh switches to the compressed files.
    let after_views = r.views().unwrap();
    assert!(after_views.iter().filter(|v| v.is_compressed()).count() >= 3);
    assert_eq!(everything(&after_views), before);
    assert_eq!(before.0.len(), 12_000);
}

/// A sealed segment before compression: its sequence number, its bytes, its index bytes.
type SegmentCopies = (u64, Vec<u8>, Vec<u8>);

/// A log whose sealed segments are compressed, plus a plain copy of each (as before compressing).
fn compressed_with_plain_copies(n: u64) -> (tempfile::TempDir, Vec<SegmentCopies>) {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB segments: 16 blocks, so 16 frames each.
    let mut w = LogWriter::open(dir.path(), cfg_sized(0, 1 << 20)).unwrap();
    fill(&mut w, n);
    w.seal_active().unwrap();
    drop(w);
    let log = dir.path().join("log");
    let plain: Vec<(u64, Vec<u8>, Vec<u8>)> = segment::list_segments(&log)
        .unwrap()
        .into_iter()
        .filter_map(|(seq, p)| {
            let bytes = fs::read(&p).unwrap();
            let idx = fs::read(segment::index_path(&p)).unwrap_or_default();
            let sealed = bytes.len() >= 64 && bytes[36..40] == 1u32.to_le_bytes();
            sealed.then_some((seq, bytes, idx))
        })
        .collect();
    for (seq, _, _) in &plain {
        compress::compress_segment(&log, *seq, 3).unwrap().expect("compressed");
    }
    (dir, plain)
}

fn count_trades(dir: &Path) -> usize {
    let mut r = LogReader::open(dir).unwrap();
    everything(&r.views().unwrap()).0.len()
}

#[test]
fn a_crash_at_any_step_of_a_compression_keeps_one_readable_copy() {
    let n = 45_000;
    let (dir, plain) = compressed_with_plain_copies(n);
    assert!(plain.len() >= 3, "three sealed segments");
    let log = dir.path().join("log");
    let (s1, s2, s3) = (plain[0].0, plain[1].0, plain[2].0);
    let zname = |s: u64| log.join(segment::compressed_file_name(s));
    let pname = |s: u64| log.join(segment::segment_file_name(s));
    let half = |s: u64| {
        let z = fs::read(zname(s)).unwrap();
        z[..z.len() / 2].to_vec()
    };
    // Crash while writing: a temporary file, plain segment still there.
    fs::write(log.join(format!("{}.tmp", segment::compressed_file_name(s1))), half(s1)).unwrap();
    fs::rename(zname(s1), log.join("keep1")).unwrap();
    fs::write(pname(s1), &plain[0].1).unwrap();
    // Crash after the rename, before the plain segment was removed: both, compressed complete.
    fs::write(pname(s2), &plain[1].1).unwrap();
    fs::write(segment::index_path(&pname(s2)), &plain[1].2).unwrap();
    // Both, the compressed one cut short (a file system that lost the end of it).
    let cut = half(s3);
    fs::write(zname(s3), &cut).unwrap();
    fs::write(pname(s3), &plain[2].1).unwrap();

    // Readers meanwhile read every trade once (the plain copy where both are there).
    assert_eq!(count_trades(dir.path()), n as usize);
    let v = reader::verify(dir.path()).unwrap();
    assert!(v.ok() && v.trades == n, "{v:?}");

    let w = LogWriter::open(dir.path(), cfg_sized(3, 1 << 20)).unwrap();
    let notes = w.recovery.compression.join("\n");
    assert!(notes.contains("unfinished compression removed"), "{notes}");
    assert!(notes.contains(&format!("{}: compression finished", segment::segment_file_name(s2))), "{notes}");
    assert!(
        notes.contains(&format!("{}: incomplete compressed copy removed", segment::compressed_file_name(s3))),
        "{notes}"
    );
    wait_compressed(&w);
    drop(w);
    // Everything compressed again, nothing lost, no leftovers.
    for s in [s1, s2, s3] {
        assert!(zname(s).exists() && !pname(s).exists() && !segment::index_path(&pname(s)).exists(), "segment {s}");
    }
    assert!(fs::read_dir(&log).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    assert_eq!(count_trades(dir.path()), n as usize);
    assert!(reader::verify(dir.path()).unwrap().ok());
}

/// Frame table entry `k` of a compressed file: (plain start, plain end, trades, frame offset, frame length).
fn entry(raw: &[u8], k: usize) -> (u64, u64, u32, usize, usize) {
    let e = &raw[128 + 64 * k..128 + 64 * (k + 1)];
    let u64_at = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().unwrap());
    (u64_at(0), u64_at(8), u32_at(32), u64_at(40) as usize, u32_at(48) as usize)
}

#[test]
fn a_damaged_frame_is_reported_and_skipped_without_losing_other_frames() {
    let n = 30_000;
    let (dir, plain) = compressed_with_plain_copies(n);
    let log = dir.path().join("log");
    let seq = plain[1].0;
    let path = log.join(segment::compressed_file_name(seq));
    let mut raw = fs::read(&path).unwrap();
    let (start, end, lost, off, len) = entry(&raw, 2);
    assert!(lost > 0);
    raw[off + len / 2] ^= 0x40;
    fs::write(&path, &raw).unwrap();

    let v = reader::verify(dir.path()).unwrap();
    assert!(!v.ok());
    assert_eq!(v.damaged.len(), 1, "{v:?}");
    let d = &v.damaged[0];
    assert_eq!(
        (d.segment.as_str(), d.offset, d.length),
        (segment::compressed_file_name(seq).as_str(), start, end - start)
    );
    assert!(d.reason.contains("CRC"), "{}", d.reason);
    assert_eq!(v.trades, n - lost as u64, "only the damaged frame's trades are missing");
    assert_eq!(count_trades(dir.path()), (n - lost as u64) as usize);

    // A damaged table entry: reported, and every trade still reads (its frame is located from its neighbours).
    let mut raw = fs::read(&path).unwrap();
    raw[off + len / 2] ^= 0x40; // repair the frame
    raw[128 + 64 * 3 + 5] ^= 0x01;
    fs::write(&path, &raw).unwrap();
    let v = reader::verify(dir.path()).unwrap();
    assert!(v.damaged.is_empty() && v.headers.len() == 1 && v.trades == n, "{v:?}");
    assert!(v.headers[0].reason.contains("frame table"), "{:?}", v.headers);
    assert_eq!(count_trades(dir.path()), n as usize);

    // A damaged header as well: the table still locates every frame.
    raw[20] ^= 0x01;
    fs::write(&path, &raw).unwrap();
    let cs = CompressedSegment::open(&path, seq).unwrap().unwrap();
    assert!(!cs.header_ok);
    assert_eq!(cs.plain_len, plain[1].1.len() as u64);
    assert_eq!(count_trades(dir.path()), n as usize);
    let v = reader::verify(dir.path()).unwrap();
    assert_eq!((v.trades, v.headers.len()), (n, 2), "{v:?}");

    // A file cut short loses only the frames past the cut.
    let cut_at = entry(&raw, 4).3 + 10;
    fs::write(&path, &raw[..cut_at]).unwrap();
    let frames = u32::from_le_bytes(raw[12..16].try_into().unwrap()) as usize;
    let kept: u32 = (0..4).map(|k| entry(&raw, k).2).sum();
    let gone: u32 = (4..frames).map(|k| entry(&raw, k).2).sum();
    assert!(gone > 0);
    let v = reader::verify(dir.path()).unwrap();
    let total_in_seg = kept + gone;
    assert_eq!(v.trades, n - gone as u64, "{v:?}");
    assert!(total_in_seg > 0);
}

#[test]
fn closing_finishes_what_this_writer_sealed_and_leaves_the_backlog_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let n = 40_000;
    let mut w = LogWriter::open(dir.path(), cfg_sized(0, 1 << 20)).unwrap();
    fill(&mut w, n);
    w.seal_active().unwrap();
    drop(w);
    let backlog = files(dir.path(), "pwlog").len() - 1;
    assert!(backlog >= 3);
    // A slow level, closed at once: the backlog found at open is not waited for.
    let mut w = LogWriter::open(dir.path(), cfg_sized(19, 1 << 20)).unwrap();
    fill(&mut w, 1_000);
    w.seal_active().unwrap(); // this writer's own sealed segment: compressed before close returns
    let own = w.active_segment().0 - 1;
    drop(w);
    let log = dir.path().join("log");
    assert!(log.join(segment::compressed_file_name(own)).exists(), "the segment this writer sealed is compressed");
    assert!(!log.join(segment::segment_file_name(own)).exists());
    assert!(files(dir.path(), "pwlog").len() > 1, "the backlog is left (plain) for the next writer");
    assert!(fs::read_dir(&log).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    assert_eq!(count_trades(dir.path()), (n + 1_000) as usize);
    assert!(reader::verify(dir.path()).unwrap().ok());
    let w = LogWriter::open(dir.path(), cfg_sized(1, 1 << 20)).unwrap();
    wait_compressed(&w);
    drop(w);
    assert_eq!(files(dir.path(), "pwlog").len(), 1);
    assert_eq!(count_trades(dir.path()), (n + 1_000) as usize);
}
