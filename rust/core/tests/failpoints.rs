//! Every named fault point of the segment log (`log::fault`), made to fail: the writer either
//! stores the records or says exactly which it did not, a reader and `verify` agree afterwards,
//! and nothing panics. Run with `cargo test -p pumpwatch-core --features failpoints`.
//!
//! The counting is against what the test appended (a model), never against another query.
#![cfg(feature = "failpoints")]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use pumpwatch_core::log::fault;
use pumpwatch_core::log::reader::{self, LogReader, MarkerQuery, TradeQuery};
use pumpwatch_core::log::{LogConfig, LogWriter};
use pumpwatch_core::record::{MarkerKind, Trade};
use pumpwatch_core::Venue;

const T0: i64 = 1_790_370_834_848_000_000;
const MS: i64 = 1_000_000;
const BATCH: u64 = 10;
/// Batches appended, and those appended while the point fails: a segment (64 KiB) holds about 80
/// batches, so the window spans a roll (new segment, seal, index rewrite, directory sync).
const BATCHES: u64 = 180;
const FAULT_FROM: u64 = 60;
const FAULT_TO: u64 = 130;

/// Trade `i` of one symbol: id `i`, one per millisecond.
fn trade(i: u64) -> Trade {
    let ts = T0 + i as i64 * MS;
    Trade::new("binance-spot", "BTCUSDT", &i.to_string(), "83680.01", "0.00120", "buy", ts, ts + 5 * MS, 0)
        .expect("valid trade")
}

fn batch(b: u64) -> Vec<Trade> {
    (b * BATCH..(b + 1) * BATCH).map(trade).collect()
}

fn cfg() -> LogConfig {
    LogConfig {
        // Every batch committed before the append returns: every sync point is on the append path.
        fsync_interval: Duration::ZERO,
        segment_max_bytes: 1 << 16,
        prealloc_chunk: 4096,
        zstd_level: 1,
        ..LogConfig::default()
    }
}

/// Trade ids stored, as a reader in another process sees them (no duplicate allowed).
fn stored_ids(dir: &Path) -> Vec<u64> {
    let mut r = LogReader::open(dir).expect("reader");
    let views = r.views().expect("views");
    let cols = reader::query_trades(&views, &TradeQuery::window(i64::MIN, i64::MAX)).expect("query");
    (0..cols.len).map(|i| std::str::from_utf8(cols.trade_id.get(i)).unwrap().parse().unwrap()).collect()
}

/// Ids named lost by `gap_unfillable` markers (inclusive id spans of binance-spot BTCUSDT).
fn named_lost(dir: &Path) -> BTreeSet<u64> {
    let mut r = LogReader::open(dir).expect("reader");
    let views = r.views().expect("views");
    let mut out = BTreeSet::new();
    for m in reader::query_markers(&views, &MarkerQuery { start_ns: i64::MIN, end_ns: i64::MAX }) {
        if m.kind == MarkerKind::GapUnfillable && m.venue == Some(Venue::BinanceSpot) {
            let (a, b): (u64, u64) = (m.from_id.parse().unwrap(), m.to_id.parse().unwrap());
            assert!(m.detail.contains("disk"), "the marker says why: {}", m.detail);
            assert_eq!((m.from_ts_ns, m.to_ts_ns), (trade(a).ts_ns, trade(b).ts_ns), "exact time span");
            out.extend(a..=b);
        }
    }
    out
}

fn check_reader_and_verify_agree(dir: &Path, stored: &[u64]) {
    let report = reader::verify(dir).expect("verify");
    assert!(report.ok(), "verify finds no damage: {report:?}");
    assert_eq!(report.trades, stored.len() as u64, "verify and the reader agree");
    let unique: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "no trade stored twice");
}

/// Without a hold (a plain store): a batch the disk refuses is an error, and then either none of
/// it is stored (the write was refused) or all of it (only its commit failed: it is written again
/// and committed later). Every batch that was accepted is stored.
#[test]
fn each_point_failing_loses_nothing_it_did_not_report() {
    for (n, point) in fault::POINTS.iter().enumerate() {
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let errno = if n % 2 == 0 { "EIO" } else { "ENOSPC" };
        let mut accepted = BTreeSet::new();
        let mut refused = Vec::new();
        {
            let mut w = LogWriter::open(dir.path(), cfg()).unwrap();
            for b in 0..BATCHES {
                if b == FAULT_FROM {
                    fail::cfg(*point, &format!("return({errno})")).unwrap();
                }
                if b == FAULT_TO {
                    fail::remove(*point);
                }
                let trades = batch(b);
                match w.append_trades(trades.iter().map(Trade::as_ref)) {
                    Ok(_) => accepted.extend(b * BATCH..(b + 1) * BATCH),
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(
                            msg.contains(dir.path().to_str().unwrap()) || msg.contains("log"),
                            "{point}: error names the path: {msg}"
                        );
                        refused.push(b);
                    }
                }
            }
            w.seal_active().unwrap_or_else(|e| panic!("{point}: closing after the fault cleared: {e}"));
        }
        let stored = stored_ids(dir.path());
        check_reader_and_verify_agree(dir.path(), &stored);
        let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
        assert!(accepted.is_subset(&stored_set), "{point}: every accepted trade is stored");
        for b in &refused {
            let ids: BTreeSet<u64> = (b * BATCH..(b + 1) * BATCH).collect();
            let kept = ids.intersection(&stored_set).count();
            assert!(kept == 0 || kept == ids.len(), "{point}: batch {b} is stored whole or not at all ({kept} kept)");
        }
        let extra: Vec<u64> =
            stored_set.difference(&accepted).copied().filter(|i| !refused.contains(&(i / BATCH))).collect();
        assert!(extra.is_empty(), "{point}: nothing stored that was not appended");
        drop(scenario);
    }
}

/// With a hold (the recorder): no append fails; every trade is stored, or named lost by a
/// `gap_unfillable` marker with its exact span. With a hold larger than the episode, none is lost.
#[test]
fn each_point_failing_under_a_hold_stores_everything() {
    for (n, point) in fault::POINTS.iter().enumerate() {
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let errno = if n % 2 == 0 { "ENOSPC" } else { "EIO" };
        {
            let mut w = LogWriter::open(dir.path(), cfg()).unwrap();
            w.set_hold(16 << 20, Duration::ZERO);
            let mut triggered = false;
            for b in 0..BATCHES {
                if b == FAULT_FROM {
                    fail::cfg(*point, &format!("return({errno})")).unwrap();
                }
                if b == FAULT_TO {
                    fail::remove(*point);
                }
                let trades = batch(b);
                w.append_trades(trades.iter().map(Trade::as_ref))
                    .unwrap_or_else(|e| panic!("{point}: append under a hold: {e}"));
                let d = w.disk_state();
                triggered |= d.episodes + d.commit_failures > 0 || d.index_behind;
            }
            if !point.starts_with("log::compress") && *point != fault::REWRITE && *point != fault::INDEX_APPEND {
                // (Compression runs in the background; its failures keep the plain segment. A
                // rewrite follows a failed commit only: `a_failed_background_commit...`; an index
                // entry is appended per 64 KiB block, larger than these segments:
                // `an_index_that_cannot_grow...`.)
                assert!(triggered, "{point} was on the path and failed");
            }
            w.seal_active().unwrap_or_else(|e| panic!("{point}: closing after the fault cleared: {e}"));
            let d = w.disk_state();
            assert_eq!(
                (d.full_since_ns, d.error_since_ns, d.held_records, d.unsynced_bytes, d.index_behind),
                (0, 0, 0, 0, false),
                "{point}: {d:?}"
            );
        }
        let stored = stored_ids(dir.path());
        check_reader_and_verify_agree(dir.path(), &stored);
        assert_eq!(stored, (0..BATCHES * BATCH).collect::<Vec<_>>(), "{point}: every trade stored, in order");
        assert!(named_lost(dir.path()).is_empty());
        drop(scenario);
    }
}

/// A full disk longer than the hold holds: the oldest held trades fall out; when the disk has room
/// the writer names them (one marker, exact ids and times) and stores everything else, in order.
#[test]
fn a_long_full_disk_names_exactly_what_fell_out_of_the_hold() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.fsync_interval = Duration::from_secs(3600);
    let mut w = LogWriter::open(dir.path(), c).unwrap();
    w.set_hold(8 << 10, Duration::ZERO);
    let mut b = 0u64;
    // Fill the first 4 KiB chunk, then refuse every reservation: a new chunk or a new segment.
    fail::cfg(fault::FALLOCATE, "return(ENOSPC)").unwrap();
    let mut full_from = None;
    while b < 400 {
        let trades = batch(b);
        w.append_trades(trades.iter().map(Trade::as_ref)).unwrap();
        if full_from.is_none() && w.disk_state().full_since_ns != 0 {
            full_from = Some(b);
        }
        b += 1;
    }
    let d = w.disk_state();
    assert!(d.full_since_ns != 0 && d.reason.contains("no space left"), "{d:?}");
    assert!(d.lost_trades_pending > 0 && d.held_bytes <= 8 << 10, "{d:?}");
    let lost_pending = w.pending_losses();
    fail::remove(fault::FALLOCATE);
    // The disk has room again: the next append writes the markers, then the hold, then itself.
    let trades = batch(b);
    w.append_trades(trades.iter().map(Trade::as_ref)).unwrap();
    b += 1;
    let d = w.disk_state();
    assert_eq!((d.full_since_ns, d.held_records), (0, 0), "{d:?}");
    assert_eq!(d.lost_trades, lost_pending[0].trades);
    w.seal_active().unwrap();
    drop(w);

    let stored = stored_ids(dir.path());
    check_reader_and_verify_agree(dir.path(), &stored);
    let lost = named_lost(dir.path());
    assert_eq!(lost.len() as u64, lost_pending[0].trades);
    let full_from = full_from.unwrap() * BATCH;
    assert!(*lost.first().unwrap() >= full_from, "only trades of the episode are lost");
    let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
    assert!(stored_set.is_disjoint(&lost), "a trade is stored or named lost, not both");
    let all: BTreeSet<u64> = (0..b * BATCH).collect();
    assert_eq!(stored_set.union(&lost).copied().collect::<BTreeSet<_>>(), all, "every trade stored or named lost");
    let mut sorted = stored.clone();
    sorted.sort_unstable();
    assert_eq!(stored, sorted, "stored in the order appended");
}

/// A commit (msync) that fails on the background committer is not ignored: the records are
/// written again and committed once the disk works; meanwhile the disk state names them.
#[test]
fn a_failed_background_commit_is_written_again() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.fsync_interval = Duration::from_millis(20);
    let mut log = pumpwatch_core::log::writer::SharedLog::open(dir.path(), c).unwrap();
    log.with(|w| {
        w.set_hold(1 << 20, Duration::ZERO);
        Ok(())
    })
    .unwrap();
    fail::cfg(fault::MSYNC, "return(EIO)").unwrap();
    for b in 0..20 {
        let trades = batch(b);
        log.with(|w| w.append_trades(trades.iter().map(Trade::as_ref))).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut d = log.with(|w| Ok(w.disk_state())).unwrap();
    while d.commit_failures == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        d = log.with(|w| Ok(w.disk_state())).unwrap();
    }
    assert!(d.commit_failures > 0 && d.error_since_ns != 0 && d.reason.contains("Input/output error"), "{d:?}");
    assert!(
        d.unsynced_bytes > 0 || log.with(|w| Ok(w.disk_state().unsynced_bytes)).unwrap() > 0 || d.commit_failures > 0
    );
    fail::remove(fault::MSYNC);
    // Writing the records again fails once too: still named, still retried.
    fail::cfg(fault::REWRITE, "1*return(EIO)").unwrap();
    let e = log.flush().unwrap_err().to_string();
    assert!(e.contains("written again"), "{e}");
    assert!(log.with(|w| Ok(w.disk_state().unsynced_bytes)).unwrap() > 0);
    log.flush().unwrap();
    let d = log.with(|w| Ok(w.disk_state())).unwrap();
    assert_eq!((d.error_since_ns, d.unsynced_bytes), (0, 0), "{d:?}");
    log.close(true).unwrap();
    let stored = stored_ids(dir.path());
    check_reader_and_verify_agree(dir.path(), &stored);
    assert_eq!(stored, (0..20 * BATCH).collect::<Vec<_>>());
}

/// The index cannot grow (its append fails): no record is refused, readers still find every
/// trade, and the seal writes the index whole.
#[test]
fn an_index_that_cannot_grow_costs_no_record() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.fsync_interval = Duration::from_secs(3600);
    c.segment_max_bytes = 1 << 20;
    let mut w = LogWriter::open(dir.path(), c).unwrap();
    w.set_hold(1 << 20, Duration::ZERO);
    fail::cfg(fault::INDEX_APPEND, "return(ENOSPC)").unwrap();
    let n = 300u64; // about 240 KiB: several index blocks
    for b in 0..n {
        let trades = batch(b);
        w.append_trades(trades.iter().map(Trade::as_ref)).unwrap();
    }
    assert!(w.disk_state().index_behind);
    assert_eq!(stored_ids(dir.path()), (0..n * BATCH).collect::<Vec<_>>(), "a reader scans past the index");
    fail::remove(fault::INDEX_APPEND);
    w.seal_active().unwrap();
    drop(w);
    let stored = stored_ids(dir.path());
    check_reader_and_verify_agree(dir.path(), &stored);
    assert_eq!(stored, (0..n * BATCH).collect::<Vec<_>>());
    let log_dir = dir.path().join("log");
    let first = pumpwatch_core::log::segment::list_segments(&log_dir).unwrap()[0].1.clone();
    let len = std::fs::metadata(&first).map(|m| m.len()).unwrap_or(0);
    if !pumpwatch_core::log::segment::is_compressed_path(&first) {
        let idx = pumpwatch_core::log::index::read_index(&pumpwatch_core::log::segment::index_path(&first), len);
        assert!(idx.len() >= 3, "the seal wrote the whole index: {} entries", idx.len());
    }
}

/// Closing while the disk is still full: the close says how many records are lost with the
/// process and which trades fell out earlier; what was stored opens, reads and verifies.
#[test]
fn closing_while_still_full_names_what_is_lost_and_the_log_reopens() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.fsync_interval = Duration::from_secs(3600);
    let mut log = pumpwatch_core::log::writer::SharedLog::open(dir.path(), c.clone()).unwrap();
    log.with(|w| {
        w.set_hold(4 << 10, Duration::ZERO);
        Ok(())
    })
    .unwrap();
    fail::cfg(fault::FALLOCATE, "return(ENOSPC)").unwrap();
    for b in 0..100 {
        let trades = batch(b);
        log.with(|w| w.append_trades(trades.iter().map(Trade::as_ref))).unwrap();
    }
    let d = log.with(|w| Ok(w.disk_state())).unwrap();
    assert!(d.held_records > 0 && d.lost_trades_pending > 0, "{d:?}");
    let e = log.close(false).unwrap_err().to_string();
    assert!(e.contains(&format!("{} records held in memory", d.held_records)), "{e}");
    assert!(e.contains(&format!("binance-spot BTCUSDT {} trades", d.lost_trades_pending)), "{e}");
    assert!(e.contains("Free disk space"), "{e}");
    drop(log);
    fail::remove(fault::FALLOCATE);
    let stored = stored_ids(dir.path());
    check_reader_and_verify_agree(dir.path(), &stored);
    let n = stored.len() as u64;
    assert!(n > 0 && n + d.held_records + d.lost_trades_pending == 100 * BATCH, "{n} stored");
    assert_eq!(stored, (0..n).collect::<Vec<_>>(), "what was stored is the head, in order");
    // A new writer opens the directory and appends after it.
    let mut w = LogWriter::open(dir.path(), c).unwrap();
    let trades = batch(100);
    w.append_trades(trades.iter().map(Trade::as_ref)).unwrap();
    w.seal_active().unwrap();
    drop(w);
    let again = stored_ids(dir.path());
    check_reader_and_verify_agree(dir.path(), &again);
    assert_eq!(again.len() as u64, n + BATCH);
}

/// A commit fails and the filesystem drops the failed pages (the map then shows what the disk has,
/// simulated by overwriting them): the records cannot be written again, so they are named lost,
/// with the time span of their index blocks, instead of garbage being committed as records.
#[test]
fn records_the_page_cache_lost_after_a_failed_commit_are_named_lost() {
    use std::os::unix::fs::FileExt;
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.fsync_interval = Duration::from_secs(3600);
    let mut w = LogWriter::open(dir.path(), c).unwrap();
    w.set_hold(1 << 20, Duration::ZERO);
    for b in 0..10 {
        let trades = batch(b);
        w.append_trades(trades.iter().map(Trade::as_ref)).unwrap();
    }
    w.sync_now().unwrap();
    let (seq, durable_end) = w.active_segment();
    for b in 10..20 {
        let trades = batch(b);
        w.append_trades(trades.iter().map(Trade::as_ref)).unwrap();
    }
    fail::cfg(fault::MSYNC, "return(EIO)").unwrap();
    assert!(w.sync_now().is_err());
    fail::remove(fault::MSYNC);
    assert!(w.disk_state().unsynced_bytes > 0);
    let path = dir.path().join("log").join(pumpwatch_core::log::segment::segment_file_name(seq));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xAB; 300], (durable_end + 500) as u64).unwrap();
    w.sync_now().unwrap();
    let d = w.disk_state();
    assert_eq!((d.unsynced_bytes, d.lost_other), (0, 1), "{d:?}");
    w.seal_active().unwrap();
    drop(w);

    let mut r = LogReader::open(dir.path()).unwrap();
    let views = r.views().unwrap();
    let lost: Vec<_> = reader::query_markers(&views, &MarkerQuery { start_ns: i64::MIN, end_ns: i64::MAX })
        .into_iter()
        .filter(|m| m.kind == MarkerKind::GapUnfillable)
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].detail.contains("page cache no longer holds"), "{}", lost[0].detail);
    let stored = stored_ids(dir.path());
    let report = reader::verify(dir.path()).unwrap();
    assert!(!report.damaged.is_empty(), "verify reports the damaged bytes: {report:?}");
    assert_eq!(report.trades, stored.len() as u64, "verify and the reader agree");
    let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
    let missing: Vec<u64> = (0..20 * BATCH).filter(|i| !stored_set.contains(i)).collect();
    assert!(!missing.is_empty());
    for i in &missing {
        let ts = trade(*i).ts_ns;
        assert!(
            *i >= 10 * BATCH && lost[0].from_ts_ns <= ts && ts <= lost[0].to_ts_ns,
            "trade {i} missing outside the named span"
        );
    }
}

/// A recorder restarted on a nearly full disk opens its log again: reopening the active segment
/// reserves what its records already hold when the disk cannot give a whole chunk more (before,
/// the reopen failed with "no space left" and the recorder could not start again).
#[test]
fn a_reopen_on_a_nearly_full_disk_keeps_the_log_and_starts() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(dir.path(), cfg()).unwrap();
    for b in 0..7 {
        let trades = batch(b);
        w.append_trades(trades.iter().map(Trade::as_ref)).unwrap();
    }
    drop(w); // killed: the segment is left active
             // The disk has no room for another chunk: the first reservation of the reopen is refused.
    fail::cfg(fault::FALLOCATE, "1*return(ENOSPC)").unwrap();
    let mut w = LogWriter::open(dir.path(), cfg()).expect("the log reopens on a nearly full disk");
    fail::remove(fault::FALLOCATE);
    let trades = batch(7);
    w.append_trades(trades.iter().map(Trade::as_ref)).unwrap();
    w.seal_active().unwrap();
    drop(w);
    let stored = stored_ids(dir.path());
    check_reader_and_verify_agree(dir.path(), &stored);
    assert_eq!(stored, (0..8 * BATCH).collect::<Vec<_>>(), "every trade once, in order");
}
