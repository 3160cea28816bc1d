//! `verify` tells how far it is: before the walk, every few MB inside a segment, after each
//! segment, never backwards, and last with every byte and segment of the listing done; a `Break`
//! from the callback stops the walk at once.

use std::fs;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use pumpwatch_core::log::reader::{self, VerifyProgress, VerifyReport, VERIFY_PROGRESS_STEP};
use pumpwatch_core::log::{LogConfig, LogWriter};
use pumpwatch_core::record::Trade;

const T0: i64 = 1_790_370_834_848_000_000;

fn trade(i: u64) -> Trade {
    let ts = T0 + i as i64 * 1_000_000;
    let side = ["buy", "sell"][(i % 2) as usize];
    Trade::new("binance-usdm", "BTCUSDT", &(8_121_136_411 + i).to_string(), "83680.10", "0.250", side, ts, ts + 1, 0)
        .expect("valid trade")
}

/// A log of `n` trades in segments of `segment_max_bytes`, compressed at `level` (0: plain),
/// everything sealed and no writer running.
fn log_of(n: u64, segment_max_bytes: u64, level: i32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        fsync_interval: Duration::from_secs(3600),
        segment_max_bytes,
        prealloc_chunk: 64 << 10,
        zstd_level: level,
        ..LogConfig::default()
    };
    let mut w = LogWriter::open(dir.path(), cfg).unwrap();
    for start in (0..n).step_by(10_000) {
        let batch: Vec<Trade> = (start..(start + 10_000).min(n)).map(trade).collect();
        w.append_trades(batch.iter().map(Trade::as_ref)).unwrap();
    }
    w.seal_active().unwrap();
    if let Some(c) = w.compressor() {
        assert!(c.wait_idle(Duration::from_secs(120)), "compression did not finish");
    }
    drop(w);
    dir
}

/// The segment files of the log and their sizes, in order.
fn segment_files(dir: &Path) -> Vec<u64> {
    let mut v: Vec<_> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pwlog" || e == "pwzst"))
        .collect();
    v.sort();
    v.iter().map(|p| fs::metadata(p).unwrap().len()).collect()
}

fn told(dir: &Path) -> (Vec<VerifyProgress>, VerifyReport) {
    let mut seen = Vec::new();
    let walked = reader::verify_with_progress(dir, |p| {
        seen.push(p);
        ControlFlow::<()>::Continue(())
    })
    .unwrap();
    let ControlFlow::Continue(report) = walked else { panic!("nothing asked verify to stop") };
    (seen, report)
}

/// What holds for every walk: first nothing done, never backwards, last everything listed done,
/// at least one telling per segment.
fn check_told(seen: &[VerifyProgress], sizes: &[u64]) {
    let total: u64 = sizes.iter().sum();
    let n = sizes.len() as u64;
    assert_eq!(seen[0], VerifyProgress { bytes_done: 0, bytes_total: total, segments_done: 0, segments_total: n });
    for w in seen.windows(2) {
        assert!(w[1].bytes_done >= w[0].bytes_done && w[1].segments_done >= w[0].segments_done, "{w:?}");
        assert_eq!((w[1].bytes_total, w[1].segments_total), (total, n));
        assert!(w[1].bytes_done <= total && w[1].segments_done <= n);
    }
    let last = seen.last().unwrap();
    assert_eq!((last.bytes_done, last.segments_done), (total, n));
    for k in 1..=n {
        let done: u64 = sizes[..k as usize].iter().sum();
        assert!(seen.iter().any(|p| p.segments_done == k && p.bytes_done == done), "segment {k} told done");
    }
}

#[test]
fn a_big_plain_segment_moves_the_bar_every_few_mb() {
    // ~100 bytes a record: 24 MiB segments, the first full, the second partly.
    let dir = log_of(400_000, 24 << 20, 0);
    let sizes = segment_files(dir.path());
    assert!(sizes.len() >= 2 && sizes[0] > 3 * VERIFY_PROGRESS_STEP, "{sizes:?}");
    let (seen, report) = told(dir.path());
    check_told(&seen, &sizes);
    let inside_first: Vec<u64> =
        seen.iter().filter(|p| p.segments_done == 0 && p.bytes_done > 0).map(|p| p.bytes_done).collect();
    assert!(inside_first.len() as u64 >= sizes[0] / VERIFY_PROGRESS_STEP - 1, "{inside_first:?}");
    assert!(inside_first.iter().all(|&b| b < sizes[0]));
    assert_eq!(report, reader::verify(dir.path()).unwrap(), "the same walk, told or not");
    assert!(report.ok() && report.records == 400_000);
}

#[test]
fn compressed_segments_are_told_in_compressed_bytes() {
    let dir = log_of(60_000, 1 << 20, 3);
    let sizes = segment_files(dir.path());
    assert!(sizes.len() > 3, "{sizes:?}");
    let (seen, report) = told(dir.path());
    check_told(&seen, &sizes);
    assert_eq!(report, reader::verify(dir.path()).unwrap());
    assert!(report.ok() && report.records == 60_000);
}

#[test]
fn an_empty_directory_tells_once_that_nothing_is_to_do() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("log")).unwrap();
    let (seen, report) = told(dir.path());
    assert_eq!(seen, vec![VerifyProgress::default()]);
    assert_eq!(report.segments, 0);
}

#[test]
fn a_break_from_the_callback_stops_the_walk_at_once() {
    let dir = log_of(400_000, 24 << 20, 0);
    for stop_at in [1, 2, 5] {
        let mut calls = 0;
        let walked = reader::verify_with_progress(dir.path(), |p| {
            calls += 1;
            if calls == stop_at {
                ControlFlow::Break(p)
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        let ControlFlow::Break(at) = walked else { panic!("the walk went on after Break") };
        assert_eq!(calls, stop_at, "no telling after the Break");
        assert!(at.segments_done < at.segments_total, "stopped before the end: {at:?}");
    }
}

#[test]
fn the_bar_moves_over_a_long_damaged_span() {
    let dir = log_of(400_000, 24 << 20, 0);
    let first = fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pwlog"))
        .min()
        .unwrap();
    // 12 MiB of garbage (no zeros) in the middle of the first segment.
    let (from, to) = (4usize << 20, 16usize << 20);
    let mut bytes = fs::read(&first).unwrap();
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut bytes[from..to] {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *b = (x >> 24) as u8 | 1;
    }
    fs::write(&first, &bytes).unwrap();
    let (seen, report) = told(dir.path());
    check_told(&seen, &segment_files(dir.path()));
    assert!(report.damaged.iter().any(|d| d.offset as usize <= from + 200 && d.offset + d.length >= to as u64));
    let inside = seen.iter().filter(|p| p.bytes_done > from as u64 && p.bytes_done < to as u64).count() as u64;
    assert!(inside >= ((to - from) as u64) / VERIFY_PROGRESS_STEP - 1, "{inside} tellings inside the damage");
}
