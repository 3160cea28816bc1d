//! The seal of a sealed segment (docs/FORMAT.md, "The seal"): what the writer writes, and what
//! readers and `verify` make of a seal that is altered, a file cut or extended after sealing, and
//! a record replaced under a good CRC. The byte-level corpus over every rule, shared with the
//! pure-Python reader, is tests/test_log_contract.py.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pumpwatch_core::log::reader::{self, query_trades, LogReader, TradeQuery};
use pumpwatch_core::log::segment::{self, Seal, SealCheck, HEADER_LEN};
use pumpwatch_core::log::{LogConfig, LogWriter};
use pumpwatch_core::record::{self, Trade, FRAME_HEADER};

const T0: i64 = 1_790_370_834_848_000_000;

fn trade(i: u64) -> Trade {
    let id = if i.is_multiple_of(3) { format!("a519448f-{i:08x}") } else { (8_121_136_411 + i).to_string() };
    Trade::new(
        "okx-swap",
        "BTC-USDT-SWAP",
        &id,
        "83680.00",
        "0.001",
        if i.is_multiple_of(2) { "buy" } else { "sell" },
        T0 + i as i64,
        T0 + i as i64 + 9,
        0,
    )
    .expect("valid trade")
}

fn cfg() -> LogConfig {
    LogConfig {
        fsync_interval: Duration::from_secs(3600),
        segment_span: Duration::from_secs(3600),
        segment_max_bytes: 1 << 20,
        prealloc_chunk: 64 << 10,
        zstd_level: 0,
    }
}

/// A log of `n` trades in one sealed segment (and an empty active one); the sealed file's path.
fn sealed_log(dir: &Path, n: u64) -> PathBuf {
    let mut w = LogWriter::open(dir, cfg()).expect("open");
    let trades: Vec<Trade> = (0..n).map(trade).collect();
    w.append_trades(trades.iter().map(Trade::as_ref)).expect("append");
    w.roll().expect("roll");
    drop(w);
    dir.join("log").join(segment::segment_file_name(1))
}

/// (offset, frame bytes) of every record of a clean plain segment.
fn frames(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = HEADER_LEN;
    while off + FRAME_HEADER <= bytes.len() {
        let len = u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]) as usize;
        out.push((off, bytes[off..off + FRAME_HEADER + len].to_vec()));
        off += FRAME_HEADER + len;
    }
    out
}

fn all_trades(dir: &Path) -> usize {
    let mut r = LogReader::open(dir).expect("reader");
    let views = r.views().expect("views");
    query_trades(&views, &TradeQuery::window(i64::MIN, i64::MAX)).expect("query").len
}

fn findings(v: &reader::VerifyReport) -> Vec<(u64, u64, String)> {
    v.damaged
        .iter()
        .chain(&v.torn_tail)
        .chain(&v.headers)
        .map(|d| (d.offset, d.length, d.reason.split(']').next().unwrap_or("").to_owned() + "]"))
        .collect()
}

#[test]
fn the_writer_seals_the_end_count_and_crc_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = sealed_log(dir.path(), 500);
    let bytes = fs::read(&path).unwrap();
    let fr = frames(&bytes);
    let chain = fr.iter().fold(0, |c, (_, f)| segment::chain_frame(c, f));
    assert_eq!(
        segment::check_seal(&bytes),
        SealCheck::Ok(Seal { published_end: bytes.len() as u64, records: 500, crc_chain: chain })
    );
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), segment::FORMAT_VERSION);
    let v = reader::verify(dir.path()).unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.trades, 500);
}

#[test]
fn a_lowered_end_is_named_and_hides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = sealed_log(dir.path(), 500);
    let mut bytes = fs::read(&path).unwrap();
    let cut = frames(&bytes)[100].0 as u64;
    bytes[40..48].copy_from_slice(&cut.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let v = reader::verify(dir.path()).unwrap();
    assert_eq!(findings(&v), vec![(36, 28, "[seal]".to_owned())]);
    assert_eq!(v.trades, 500);
    assert_eq!(all_trades(dir.path()), 500, "a query reads past an end the seal does not vouch for");
}

#[test]
fn bytes_added_or_cut_after_sealing_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = sealed_log(dir.path(), 200);
    let clean = fs::read(&path).unwrap();
    let size = clean.len() as u64;

    let mut longer = clean.clone();
    longer.extend_from_slice(&[0u8; 100]);
    fs::write(&path, &longer).unwrap();
    let v = reader::verify(dir.path()).unwrap();
    assert_eq!(findings(&v), vec![(size, 100, "[extended]".to_owned())]);
    assert_eq!(all_trades(dir.path()), 200);

    let last = frames(&clean).last().unwrap().0;
    fs::write(&path, &clean[..last]).unwrap();
    let v = reader::verify(dir.path()).unwrap();
    assert_eq!(findings(&v), vec![(last as u64, size - last as u64, "[truncated]".to_owned())]);
    assert_eq!(all_trades(dir.path()), 199);
}

#[test]
fn a_record_replaced_under_a_good_crc_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = sealed_log(dir.path(), 200);
    let mut bytes = fs::read(&path).unwrap();
    let (off, frame) = frames(&bytes)[50].clone();
    // Another valid trade of the same length: a price digit changed, the CRC made good again.
    let mut payload = frame[FRAME_HEADER..].to_vec();
    let at = record::TRADE_FIXED + payload[3] as usize;
    payload[at] = b'9';
    bytes[off + 4..off + 8].copy_from_slice(&record::payload_crc(&payload).to_le_bytes());
    bytes[off + FRAME_HEADER..off + frame.len()].copy_from_slice(&payload);
    fs::write(&path, &bytes).unwrap();
    let v = reader::verify(dir.path()).unwrap();
    assert_eq!(
        findings(&v),
        vec![(HEADER_LEN as u64, bytes.len() as u64 - HEADER_LEN as u64, "[seal-totals]".to_owned())]
    );
    assert_eq!(v.trades, 200);
}

#[test]
fn a_segment_recovered_after_a_crash_is_sealed_with_the_records_it_kept() {
    let live = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(live.path(), cfg()).expect("open");
    let trades: Vec<Trade> = (0..300).map(trade).collect();
    w.append_trades(trades.iter().map(Trade::as_ref)).expect("append");
    // The files as a crash leaves them: the active segment, its index, nothing sealed.
    fs::create_dir_all(dir.path().join("log")).unwrap();
    for e in fs::read_dir(live.path().join("log")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dir.path().join("log").join(e.file_name())).unwrap();
    }
    drop(w);
    let mut w = LogWriter::open(dir.path(), cfg()).expect("reopen");
    w.append_trades(trades[..10].iter().map(Trade::as_ref)).expect("append");
    w.roll().expect("roll");
    drop(w);
    let bytes = fs::read(dir.path().join("log").join(segment::segment_file_name(1))).unwrap();
    assert!(matches!(segment::check_seal(&bytes), SealCheck::Ok(s) if s.records == 310));
    assert!(reader::verify(dir.path()).unwrap().ok());
}
