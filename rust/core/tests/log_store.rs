//! Integration tests of the segment log (`log::*`, `record`, `ring`) through the public API.
//!
//! docs/FORMAT.md is the reference. Where a test needs to know what is on disk (record
//! boundaries, index blocks, header fields) it parses the files itself, straight from the spec,
//! rather than through the library: a mistake shared by the writer and the reader still shows.
//!
//! Every comparison is against a brute-force model of what was appended (`expected`), never
//! against another query.

// The workspace's rust-version is 1.80: `is_multiple_of` (1.87) and `is_none_or` (1.82) are
// not available there.
#![allow(clippy::manual_is_multiple_of, clippy::unnecessary_map_or)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use pumpwatch_core::log::index::{self, IndexEntry, BLOCK_BYTES};
use pumpwatch_core::log::reader::{self, LogReader, SegmentView, StrColumn, TradeColumns, TradeQuery};
use pumpwatch_core::log::segment::{self, Header, HeaderCheck, STATE_ACTIVE, STATE_SEALED};
use pumpwatch_core::log::writer::SharedLog;
use pumpwatch_core::log::{LogConfig, LogWriter};
use pumpwatch_core::record::{self, flags, Marker, MarkerKind, Side, Trade};
use pumpwatch_core::ring::{self, RingReader};
use pumpwatch_core::venue::{self, Venue};
use pumpwatch_core::Error;

// =============================================================================================
// Builders
// =============================================================================================

/// An exchange time in 2026: realistic magnitudes, far from the i64 edges.
const T0: i64 = 1_790_370_834_848_000_000;
const MS: i64 = 1_000_000;
const HEADER_LEN: usize = 64;
const STATE_AT: u64 = 36;

/// The one trade builder. `i` picks every field from a spread of real-world shapes, so any
/// batch covers them all: numeric ids (stored as a u64), hex (KuCoin/OKX style), UUID (Bybit),
/// leading zeros (must stay text), the 20-digit u64 edge; prices with tiny fractions, trailing
/// zeros and a negative sign; every venue; plain, dashed and prefixed symbols; flags that do
/// not affect queries. It never sets `NON_TRADE`: tests that need one set it themselves.
/// `recv_ns - ts_ns - 1000 == i`, so a trade read back tells which `i` it was built from.
fn trade(i: u64, ts: i64) -> Trade {
    let venue = venue::ALL[(i % 12) as usize];
    let symbol = ["BTCUSDT", "BTC-USDT-SWAP", "sBTCUSDT", "1000PEPEUSDT", "ETH_USDT"][(i / 12 % 5) as usize];
    let trade_id = match i % 5 {
        0 => (8_121_136_411 + i).to_string(),
        1 => format!("{:024x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        2 => format!("a519448f-56e5-58e6-90a1-{i:012x}"),
        3 => format!("00{i}"),
        _ => (u64::MAX - i).to_string(),
    };
    let price = match i % 4 {
        0 => "0.0000001117".to_owned(),
        1 => "83680.00".to_owned(),
        2 => "-2".to_owned(),
        _ => format!("{}.{:02}", 100 + i % 997, i % 100),
    };
    let qty = match i % 3 {
        0 => "0.001".to_owned(),
        1 => "1".to_owned(),
        _ => format!("{i}.{}1", "0".repeat((i % 7) as usize)),
    };
    let side = if i % 2 == 0 { "buy" } else { "sell" };
    let fl = [0, 0, flags::RPI, flags::BACKFILL, flags::INTERNAL | flags::BLOCK_TRADE][(i / 5 % 5) as usize];
    Trade::new(venue.id(), symbol, &trade_id, &price, &qty, side, ts, ts + 1_000 + i as i64, fl).expect("valid trade")
}

fn marker(ts: i64) -> Marker {
    Marker {
        kind: MarkerKind::GapFound,
        venue: Some(Venue::OkxSwap),
        symbol: "BTC-USDT-SWAP".into(),
        ts_ns: ts,
        from_ts_ns: ts - 5 * MS,
        to_ts_ns: ts,
        from_id: "10".into(),
        to_id: "20".into(),
        detail: "a marker between trades: must not show up in trade queries".into(),
    }
}

/// Small segments and reservations so rolls, re-reservations and index blocks all happen
/// within a few thousand trades. No test here simulates a power cut, so group commit is slow.
fn cfg(segment_max_bytes: u64) -> LogConfig {
    LogConfig {
        fsync_interval: Duration::from_secs(3600),
        segment_span: Duration::from_secs(3600),
        segment_max_bytes,
        prealloc_chunk: 64 << 10,
        // These tests read sealed segments' plain files; compression has its own (compressed.rs).
        zstd_level: 0,
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn open(dir: &Path, cfg: LogConfig) -> LogWriter {
    match LogWriter::open(dir, cfg) {
        Ok(w) => w,
        Err(e) => panic!("opening the writer on {}: {e}", dir.display()),
    }
}

fn append(w: &mut LogWriter, batch: &[Trade]) {
    let n = w.append_trades(batch.iter().map(Trade::as_ref)).expect("append");
    assert_eq!(n, batch.len(), "append_trades reports the batch size");
}

/// splitmix64: deterministic, dependency-free randomness, so a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// =============================================================================================
// Queries and the reference model
// =============================================================================================

/// Every trade, non-trades included: what "the log holds" means in these tests.
fn everything() -> TradeQuery {
    TradeQuery { include_non_trades: true, ..TradeQuery::window(i64::MIN, i64::MAX) }
}

fn columns_to_trades(c: &TradeColumns) -> Vec<Trade> {
    for (name, col) in [
        ("venue", &c.venue),
        ("symbol", &c.symbol),
        ("trade_id", &c.trade_id),
        ("price", &c.price),
        ("qty", &c.qty),
        ("side", &c.side),
    ] {
        assert_eq!(col.offsets.len(), c.len + 1, "{name} column has one offset per row plus one");
    }
    assert_eq!((c.ts_ns.len(), c.recv_ns.len(), c.flags.len()), (c.len, c.len, c.len));
    // Built field by field (not with `Trade::new`): what came back is compared as it is.
    let text = |col: &StrColumn, i: usize| String::from_utf8(col.get(i).to_vec()).expect("utf-8 column");
    (0..c.len)
        .map(|i| Trade {
            venue: Venue::from_id_bytes(c.venue.get(i)).expect("venue id"),
            symbol: text(&c.symbol, i),
            trade_id: text(&c.trade_id, i),
            price: text(&c.price, i),
            qty: text(&c.qty, i),
            side: Side::parse(c.side.get(i)).expect("side"),
            ts_ns: c.ts_ns[i],
            recv_ns: c.recv_ns[i],
            flags: c.flags[i],
        })
        .collect()
}

fn query(views: &[SegmentView], q: &TradeQuery) -> Vec<Trade> {
    columns_to_trades(&reader::query_trades(views, q).expect("query"))
}

/// Everything the writer's own process sees.
fn collect(w: &mut LogWriter) -> Vec<Trade> {
    query(&w.views().expect("writer views"), &everything())
}

fn collect_reader(r: &mut LogReader) -> Vec<Trade> {
    query(&r.views().expect("reader views"), &everything())
}

/// The brute-force model of a query: filter what was appended, then a *stable* sort by
/// exchange time, so equal times keep append order exactly as FORMAT.md requires.
fn expected(appended: &[Trade], q: &TradeQuery) -> Vec<Trade> {
    let wanted = |t: &Trade| {
        t.ts_ns >= q.start_ns
            && t.ts_ns < q.end_ns
            && (q.include_non_trades || t.flags & flags::NON_TRADE == 0)
            && q.venues.map_or(true, |m| m & (1 << t.venue.code()) != 0)
            && q.symbols.as_ref().map_or(true, |s| s.iter().any(|s| s.as_slice() == t.symbol.as_bytes()))
    };
    let mut v: Vec<Trade> = appended.iter().filter(|t| wanted(t)).cloned().collect();
    v.sort_by_key(|t| t.ts_ns);
    v
}

/// `assert_eq!` on thousands of trades prints megabytes; this names the first difference.
#[track_caller]
fn assert_same(got: &[Trade], want: &[Trade], what: &str) {
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!(
            "{what}: first difference at row {i} of {}/{}:\n got  {:?}\n want {:?}",
            got.len(),
            want.len(),
            got[i],
            want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: same rows, but {} returned and {} expected", got.len(), want.len());
}

// =============================================================================================
// Reading the files directly, from FORMAT.md
// =============================================================================================

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    segment::list_segments(&dir.join("log")).expect("list segments")
}

fn read_header(path: &Path) -> Header {
    let mut b = [0u8; HEADER_LEN];
    File::open(path).and_then(|mut f| f.read_exact(&mut b)).expect("read header");
    match segment::decode_header(&b) {
        HeaderCheck::Ok(h) => h,
        other => panic!("header of {} is {other:?}", path.display()),
    }
}

fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).expect("open for patching");
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(bytes).unwrap();
}

struct Frame {
    off: usize,
    payload: Vec<u8>,
}

impl Frame {
    fn end(&self) -> usize {
        self.off + 8 + self.payload.len()
    }
}

/// The records of a clean segment, parsed from the spec: `len u32 | crc32c u32 | payload` from
/// offset 64 until a zero length (preallocated tail) or the end of the file (sealed).
fn parse_frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut off = HEADER_LEN;
    while off + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let payload = &bytes[off + 8..off + 8 + len];
        let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap());
        assert_eq!(crc32c::crc32c(payload), crc, "CRC of the frame at {off}");
        out.push(Frame { off, payload: payload.to_vec() });
        off += 8 + len;
    }
    out
}

/// The index FORMAT.md prescribes for `frames`: blocks from offset 64, each closed at the first
/// record boundary at or past 64 KiB, with the exchange-time range of its trades.
fn reference_index(frames: &[Frame]) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    let mut cur: Option<IndexEntry> = None;
    for f in frames {
        let e = cur.get_or_insert(IndexEntry {
            start: f.off as u64,
            end: f.off as u64,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            trades: 0,
            others: 0,
        });
        e.end = f.end() as u64;
        if f.payload[0] == record::KIND_TRADE {
            let ts = i64::from_le_bytes(f.payload[8..16].try_into().unwrap());
            e.trades += 1;
            e.min_ts = e.min_ts.min(ts);
            e.max_ts = e.max_ts.max(ts);
        } else {
            e.others += 1;
        }
        if e.end - e.start >= BLOCK_BYTES {
            out.extend(cur.take());
        }
    }
    out.extend(cur);
    out
}

/// Checks what sealing promises (state 1, file cut to the published end, a complete `.pwidx`
/// that is exactly the spec's index of the records) and returns the segment's records.
#[track_caller]
fn assert_sealed_segment(path: &Path) -> Vec<Frame> {
    let bytes = fs::read(path).unwrap();
    let h = read_header(path);
    assert_eq!(h.state, STATE_SEALED, "{} is sealed", path.display());
    assert_eq!(bytes.len() as u64, h.published_end, "{} is cut to its published end", path.display());
    let frames = parse_frames(&bytes);
    assert_eq!(frames.last().map_or(HEADER_LEN, Frame::end) as u64, h.published_end, "records fill {}", path.display());

    let idx = segment::index_path(path);
    let raw = fs::read(&idx).expect("sealed segment has a .pwidx");
    assert_eq!(&raw[0..8], b"PWINDEX1");
    assert_eq!(u16::from_le_bytes([raw[8], raw[9]]), 1, "index version");
    assert_eq!(u16::from_le_bytes([raw[10], raw[11]]), 48, "index entry length");
    let entries = index::read_index(&idx, h.published_end);
    assert_eq!(raw.len(), 16 + 48 * entries.len(), "every entry of {} is valid and chained", idx.display());
    assert_eq!(entries, reference_index(&frames), "index of {}", path.display());
    frames
}

/// Frames of the active segment up to its published end.
fn active_frames(path: &Path) -> Vec<Frame> {
    let h = read_header(path);
    assert_eq!(h.state, STATE_ACTIVE, "{} is active", path.display());
    let bytes = fs::read(path).unwrap();
    let frames = parse_frames(&bytes[..h.published_end as usize]);
    assert_eq!(frames.last().map_or(HEADER_LEN, Frame::end) as u64, h.published_end);
    frames
}

/// The trade payloads of the whole log in log order (segment, then offset), from the files.
fn trade_payloads_in_log_order(dir: &Path) -> Vec<Vec<u8>> {
    let files = segment_files(dir);
    let mut out = Vec::new();
    for (k, (_, p)) in files.iter().enumerate() {
        let frames = if k + 1 < files.len() { assert_sealed_segment(p) } else { active_frames(p) };
        out.extend(frames.into_iter().filter(|f| f.payload[0] == record::KIND_TRADE).map(|f| f.payload));
    }
    out
}

// =============================================================================================
// 1. Round trip, window bounds, filters, order
// =============================================================================================

#[test]
fn round_trip_window_bounds_filters_and_order() {
    let dir = tempdir();
    let mut w = open(dir.path(), cfg(1 << 20));
    let mut appended: Vec<Trade> = Vec::new();

    // Exchange times come out of order and each value repeats about six times, so both the
    // sort and the tie rule (append order) are exercised. Batch sizes vary from 1 to 500.
    let mut i = 0u64;
    for (b, &size) in [1usize, 2, 3, 50, 7, 200, 1, 400, 33, 500].iter().cycle().take(30).enumerate() {
        let batch: Vec<Trade> = (0..size)
            .map(|_| {
                let mut t = trade(i, T0 + ((i * 7919) % 600) as i64 * MS);
                if i % 17 == 5 {
                    t.flags |= flags::NON_TRADE;
                }
                i += 1;
                t
            })
            .collect();
        append(&mut w, &batch);
        appended.extend(batch);
        if b % 4 == 0 {
            w.append_marker(&marker(T0 + 300 * MS)).unwrap();
        }
    }
    // The edges of id storage (number vs text) and of the decimal text, one per row.
    let edges = [
        ("0", "0.0000001117", "0.1"),
        ("18446744073709551615", "83680.00", "0.00"),
        ("18446744073709551616", "-2", "-0.5"),
        ("007", "0", "1"),
        ("6085c09769bc506996295e36", "107407.88000000", "10403"),
        ("a519448f-56e5-58e6-90a1-004086e0e530", "-0", "000.000"),
        ("1-2", "99999999999999999999999999999.9", "1"),
    ];
    let batch: Vec<Trade> = edges
        .iter()
        .enumerate()
        .map(|(k, (id, price, qty))| {
            Trade::new("binance-usdm", "BTCUSDT", id, price, qty, "sell", T0 + 123 * MS, T0, flags::RPI)
                .unwrap_or_else(|e| panic!("edge {k}: {e}"))
        })
        .collect();
    append(&mut w, &batch);
    appended.extend(batch);

    // Exact round trip of every field, in time order with ties in append order.
    let all = collect(&mut w);
    assert_same(&all, &expected(&appended, &everything()), "everything");
    let mut got_edges =
        all.iter().filter(|t| t.ts_ns == T0 + 123 * MS && t.venue == Venue::BinanceUsdm && t.recv_ns == T0);
    for (id, price, qty) in edges {
        let t = got_edges.next().expect("edge row");
        assert_eq!((t.trade_id.as_str(), t.price.as_str(), t.qty.as_str()), (id, price, qty));
    }

    let views = w.views().unwrap();
    let check = |q: &TradeQuery, what: &str| -> Vec<Trade> {
        let got = query(&views, q);
        assert_same(&got, &expected(&appended, q), what);
        got
    };

    // NON_TRADE is excluded unless asked for.
    let default = check(&TradeQuery::window(i64::MIN, i64::MAX), "default excludes non-trades");
    let non_trades = appended.iter().filter(|t| t.flags & flags::NON_TRADE != 0).count();
    assert!(non_trades > 100);
    assert_eq!(default.len(), appended.len() - non_trades);
    assert!(default.iter().all(|t| t.flags & flags::NON_TRADE == 0));

    // Window bounds: start inclusive, end exclusive.
    let (a, b) = (T0 + 100 * MS, T0 + 150 * MS);
    let win = check(&TradeQuery::window(a, b), "window");
    assert!(win.iter().any(|t| t.ts_ns == a), "a trade at the start is included");
    assert!(win.iter().all(|t| t.ts_ns < b), "a trade at the end is excluded");
    assert!(appended.iter().any(|t| t.ts_ns == b), "the test has a trade exactly at the end");
    let one = check(&TradeQuery::window(a, a + 1), "one-nanosecond window");
    assert!(!one.is_empty() && one.iter().all(|t| t.ts_ns == a));
    assert!(check(&TradeQuery::window(a, a), "empty window").is_empty());
    assert!(check(&TradeQuery::window(a + 1, a + MS), "window between trades").is_empty());
    assert!(check(&TradeQuery::window(T0 + 600 * MS, i64::MAX), "after the last").is_empty());

    // Venue mask and symbol filters, alone and together.
    let venues = Some(TradeQuery::venue_mask(&[Venue::BinanceUsdm, Venue::OkxSwap, Venue::PhemexPerp]));
    let by_venue = check(&TradeQuery { venues, ..TradeQuery::window(i64::MIN, i64::MAX) }, "venue mask");
    assert!(
        !by_venue.is_empty()
            && by_venue.iter().all(|t| [Venue::BinanceUsdm, Venue::OkxSwap, Venue::PhemexPerp].contains(&t.venue))
    );
    let symbols = Some(vec![b"BTCUSDT".to_vec(), b"sBTCUSDT".to_vec()]);
    let by_symbol =
        check(&TradeQuery { symbols: symbols.clone(), ..TradeQuery::window(i64::MIN, i64::MAX) }, "symbols");
    assert!(!by_symbol.is_empty() && by_symbol.iter().all(|t| t.symbol == "BTCUSDT" || t.symbol == "sBTCUSDT"));
    let both = check(
        &TradeQuery { venues, symbols, include_non_trades: true, ..TradeQuery::window(a, b) },
        "venue + symbol + window",
    );
    assert!(!both.is_empty());
    check(&TradeQuery { venues: Some(0), ..TradeQuery::window(i64::MIN, i64::MAX) }, "empty venue mask");
    check(
        &TradeQuery { symbols: Some(vec![b"NOPE".to_vec()]), ..TradeQuery::window(i64::MIN, i64::MAX) },
        "unknown symbol",
    );

    // A bad row rejects its whole batch, names the row, and writes nothing.
    let before = w.active_segment();
    let good = trade(1, T0);
    let mut bad = good.as_ref();
    bad.price = b"1e-7";
    match w.append_trades([good.as_ref(), bad]) {
        Err(e @ Error::InvalidTrade(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("row 1 of the batch") && msg.contains("1e-7"),
                "the message names the row and value: {msg}"
            );
        }
        other => panic!("a batch with a bad price was not rejected as InvalidTrade: {other:?}"),
    }
    assert_eq!(w.active_segment(), before, "nothing of a rejected batch is written");
    assert_eq!(collect(&mut w).len(), appended.len());
}

// =============================================================================================
// 2. The sparse index against brute force
// =============================================================================================

#[test]
fn index_queries_match_brute_force_for_random_windows() {
    let dir = tempdir();
    let config = cfg(1 << 20);
    let mut w = open(dir.path(), config.clone());
    let mut rng = Rng(0x00c0_ffee);
    let mut appended: Vec<Trade> = Vec::new();

    // Live trades move forward with jitter (so neighbours are out of order); now and then a
    // REST backfill appends a burst of old trades, and single stragglers arrive late. Blocks
    // therefore have overlapping, non-monotonic [min, max] ranges.
    let n = 30_000u64;
    let mut i = 0u64;
    while i < n {
        // Mostly small batches (copied through the map); every so often one of several hundred
        // KiB, which goes through `pwrite` and may be split across a segment boundary.
        let size = if rng.below(40) == 0 { 3_500 + rng.below(2_000) } else { 1 + rng.below(250) };
        let backfill_from = (rng.below(25) == 0 && i > 1000).then(|| T0 + rng.below(i - 500) as i64 * MS);
        let batch: Vec<Trade> = (0..size)
            .map(|k| {
                let ts = match backfill_from {
                    Some(from) => from + k as i64 * (MS / 3),
                    None if rng.below(500) == 0 => T0 + i as i64 * MS - rng.below(30_000) as i64 * MS,
                    None => T0 + i as i64 * MS + rng.below(3) as i64 * MS,
                };
                let mut t = trade(i, ts);
                if backfill_from.is_some() {
                    t.flags |= flags::BACKFILL;
                }
                i += 1;
                t
            })
            .collect();
        append(&mut w, &batch);
        appended.extend(batch);
    }

    // The files: several sealed segments, each with the spec's index; the active one's index
    // holds exactly its finished blocks.
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "1 MiB segments rolled: {} segments", files.len());
    let (last, sealed) = files.split_last().unwrap();
    let mut on_disk = 0;
    for (_, p) in sealed {
        let frames = assert_sealed_segment(p);
        assert!(reference_index(&frames).len() >= 10, "many 64 KiB blocks per segment");
        on_disk += frames.len();
    }
    let frames = active_frames(&last.1);
    on_disk += frames.len();
    assert_eq!(on_disk, appended.len());
    let finished: Vec<IndexEntry> =
        reference_index(&frames).into_iter().filter(|e| e.end - e.start >= BLOCK_BYTES).collect();
    assert_eq!(
        index::read_index(&segment::index_path(&last.1), u64::MAX),
        finished,
        "active index holds its finished blocks"
    );

    let t_max = T0 + n as i64 * MS + 5 * MS;
    let windows: Vec<(i64, i64)> = (0..120)
        .map(|k| {
            // Start on an existing time half of the time, so the inclusive bound matters.
            let start = if k % 2 == 0 {
                appended[rng.below(n) as usize].ts_ns
            } else {
                T0 - 40_000 * MS + rng.below((t_max - T0 + 40_000 * MS) as u64) as i64
            };
            let width = [1, MS, 37 * MS, 400 * MS, 3_000 * MS, 20_000 * MS][rng.below(6) as usize];
            let end = if k % 3 == 0 { appended[rng.below(n) as usize].ts_ns.max(start) } else { start + width };
            (start, end)
        })
        .chain([(i64::MIN, i64::MAX), (T0, T0 + 1), (t_max, i64::MAX)])
        .collect();

    let mut reader = LogReader::open(dir.path()).unwrap();
    let (wv, rv) = (w.views().unwrap(), reader.views().unwrap());
    let mut nonempty = 0;
    for &(a, b) in &windows {
        let q = TradeQuery::window(a, b);
        let want = expected(&appended, &q);
        nonempty += usize::from(!want.is_empty());
        assert_same(&query(&wv, &q), &want, &format!("writer, window [{a}, {b})"));
        assert_same(&query(&rv, &q), &want, &format!("reader, window [{a}, {b})"));
    }
    assert!(nonempty > 60, "most windows hold trades ({nonempty})");

    // Windows that touch a block's [min, max] by a single nanosecond on either side: the
    // overlap test of the index must keep (or drop) exactly these blocks.
    let mut blocks = Vec::new();
    for (k, (_, p)) in files.iter().enumerate() {
        let bytes = fs::read(p).unwrap();
        let end = if k + 1 < files.len() { bytes.len() } else { read_header(p).published_end as usize };
        blocks.extend(reference_index(&parse_frames(&bytes[..end])));
    }
    for e in &blocks {
        for (a, b) in
            [(e.min_ts, e.min_ts + 1), (e.min_ts - 1, e.min_ts), (e.max_ts, e.max_ts + 1), (e.max_ts + 1, e.max_ts + 2)]
        {
            let q = TradeQuery::window(a, b);
            let want = expected(&appended, &q);
            assert_same(&query(&wv, &q), &want, &format!("writer, edge window [{a}, {b})"));
            assert_same(&query(&rv, &q), &want, &format!("reader, edge window [{a}, {b})"));
        }
    }

    // The index is a hint: damage an entry of a sealed segment's index and of the active
    // one's; a new reader must fall back to the records and return the same.
    for path in [&sealed[1].1, &last.1] {
        let idx = segment::index_path(path);
        let mut raw = fs::read(&idx).unwrap();
        let entries = (raw.len() - 16) / 48;
        assert!(entries >= 1, "{} has entries to damage", idx.display());
        // The second entry's min_ts (or the only one's): its CRC no longer matches.
        raw[16 + 48 * entries.min(2).saturating_sub(1) + 20] ^= 0x10;
        fs::write(&idx, raw).unwrap();
    }
    let mut fresh = LogReader::open(dir.path()).unwrap();
    let fv = fresh.views().unwrap();
    for &(a, b) in windows.iter().step_by(4) {
        let q = TradeQuery::window(a, b);
        assert_same(&query(&fv, &q), &expected(&appended, &q), &format!("damaged index, window [{a}, {b})"));
    }

    // And after a restart (the active index rebuilt by recovery).
    drop((wv, rv, fv, w));
    let mut w = open(dir.path(), config);
    assert_eq!(w.recovery.truncated, vec![]);
    assert_eq!(w.recovery.damaged, vec![]);
    let wv = w.views().unwrap();
    for &(a, b) in windows.iter().step_by(4) {
        let q = TradeQuery::window(a, b);
        assert_same(&query(&wv, &q), &expected(&appended, &q), &format!("after reopen, window [{a}, {b})"));
    }
}

// =============================================================================================
// 3. Rolling by size and by time, sealing, reopening
// =============================================================================================

#[test]
fn rolls_by_size_seals_segments_and_reopen_continues() {
    let dir = tempdir();
    let config = cfg(1 << 16);
    let mut w = open(dir.path(), config.clone());
    let mut appended: Vec<Trade> = Vec::new();
    // Ten trades per millisecond: runs of equal times straddle segment boundaries, so the tie
    // rule must hold across segments too (segment, then offset).
    for b in 0..60u64 {
        let batch: Vec<Trade> = (b * 100..(b + 1) * 100).map(|i| trade(i, T0 + (i / 10) as i64 * MS)).collect();
        append(&mut w, &batch);
        appended.extend(batch);
    }

    let files = segment_files(dir.path());
    assert!(files.len() >= 8, "64 KiB segments rolled by size: {} segments", files.len());
    assert_eq!(
        files.iter().map(|f| f.0).collect::<Vec<_>>(),
        (1..=files.len() as u64).collect::<Vec<_>>(),
        "sequence numbers 1, 2, ..."
    );
    let (last, sealed) = files.split_last().unwrap();
    let mut firsts = Vec::new(); // index (into `appended`) of each segment's first trade
    let mut count = 0;
    for (_, p) in sealed {
        let frames = assert_sealed_segment(p);
        assert!(read_header(p).published_end <= config.segment_max_bytes);
        firsts.push(count);
        count += frames.len();
    }
    let frames = active_frames(&last.1);
    firsts.push(count);
    count += frames.len();
    assert_eq!(count, appended.len());
    assert_eq!(w.active_segment(), (last.0, frames.last().unwrap().end()));

    // Queries spanning segments: everything, and windows around each boundary.
    assert_same(&collect(&mut w), &expected(&appended, &everything()), "all segments");
    let views = w.views().unwrap();
    assert_eq!(views.len(), files.len());
    for &f in &firsts[1..] {
        let t = appended[f].ts_ns;
        let q = TradeQuery::window(t - 3 * MS, t + 3 * MS);
        assert_same(&query(&views, &q), &expected(&appended, &q), &format!("window around the boundary at trade {f}"));
    }
    let q = TradeQuery::window(appended[firsts[1] + 5].ts_ns, appended[firsts[5] - 5].ts_ns);
    assert_same(&query(&views, &q), &expected(&appended, &q), "window over four segments");
    drop(views);

    // Reopen after a plain drop: the last segment continues, nothing to recover.
    drop(w);
    let mut w = open(dir.path(), config.clone());
    assert_eq!(w.active_segment().0, last.0, "reopen continues in the last segment");
    assert_eq!(w.recovery.segments, files.len() as u64);
    assert_eq!(w.recovery.records_in_active, frames.len() as u64);
    assert!(
        w.recovery.truncated.is_empty()
            && w.recovery.damaged.is_empty()
            && w.recovery.sealed.is_empty()
            && w.recovery.headers_repaired.is_empty(),
        "{:?}",
        w.recovery
    );
    let more: Vec<Trade> = (6000..6005).map(|i| trade(i, T0 + 600 * MS)).collect();
    append(&mut w, &more);
    appended.extend(more);
    assert_same(&collect(&mut w), &expected(&appended, &everything()), "after reopen and append");

    // Sealing: the segment is sealed and a fresh one is started, also across a reopen.
    let sealed_seq = w.active_segment().0;
    w.seal_active().unwrap();
    assert_eq!(w.active_segment(), (sealed_seq + 1, HEADER_LEN));
    assert_sealed_segment(&segment_files(dir.path())[sealed_seq as usize - 1].1);
    drop(w);
    let mut w = open(dir.path(), config.clone());
    assert_eq!(w.active_segment(), (sealed_seq + 1, HEADER_LEN), "after a sealed close, appends go to a new segment");
    assert_same(&collect(&mut w), &expected(&appended, &everything()), "after sealed close");

    // A last segment that is sealed with no successor (the empty one removed): a new one.
    w.seal_active().unwrap(); // nothing appended: no roll, the empty segment stays
    drop(w);
    let files = segment_files(dir.path());
    let (empty_seq, empty_path) = files.last().unwrap().clone();
    assert_eq!(empty_seq, sealed_seq + 1);
    fs::remove_file(segment::index_path(&empty_path)).unwrap();
    fs::remove_file(&empty_path).unwrap();
    let mut w = open(dir.path(), config);
    assert_eq!(w.active_segment(), (sealed_seq + 1, HEADER_LEN), "a new segment after the sealed last one");
    assert_eq!(w.recovery.records_in_active, 0);
    assert_same(&collect(&mut w), &expected(&appended, &everything()), "after a sealed last segment");
}

#[test]
fn rolls_by_time_and_a_segment_keeps_its_age_across_reopen() {
    let dir = tempdir();
    let span = Duration::from_millis(5);
    let config = LogConfig { segment_span: span, ..cfg(1 << 20) };
    let mut w = open(dir.path(), config.clone());
    let mut appended: Vec<Trade> = Vec::new();
    // One batch per round, a sleep well past the span between rounds (the writer reads a
    // coarse clock, a few ms behind): every batch after the first must start a new segment,
    // and no batch is split (one piece, one time check).
    for round in 0..4u64 {
        let batch: Vec<Trade> = (round * 20..round * 20 + 20).map(|i| trade(i, T0 + i as i64 * MS)).collect();
        append(&mut w, &batch);
        appended.extend(batch);
        std::thread::sleep(span * 5);
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 4, "one segment per round");
    for (_, p) in &files[..3] {
        assert_eq!(assert_sealed_segment(p).len(), 20, "a round's batch fills its segment");
    }
    assert_eq!(active_frames(&files[3].1).len(), 20);
    assert_same(&collect(&mut w), &expected(&appended, &everything()), "across time rolls");

    // After a restart the last segment is reused (it is not rolled on open), but its age
    // comes from its header: it is already too old, so the next append rolls.
    drop(w);
    let mut w = open(dir.path(), config);
    assert_eq!(w.active_segment().0, 4, "reopen continues in the last segment");
    let batch: Vec<Trade> = (80..90).map(|i| trade(i, T0 + i as i64 * MS)).collect();
    append(&mut w, &batch);
    appended.extend(batch);
    assert_eq!(w.active_segment().0, 5, "the old segment rolled on the first append");
    assert_sealed_segment(&segment_files(dir.path())[3].1);
    assert_same(&collect(&mut w), &expected(&appended, &everything()), "after reopen and time roll");
}

// =============================================================================================
// 4. A reader in the same process follows the writer
// =============================================================================================

#[test]
fn reader_sees_every_batch_without_reopening_across_rolls() {
    let dir = tempdir();
    // 4 KiB reservations: the file grows under the reader's map again and again. Segments of
    // 512 KiB leave room for pieces large enough to be written with `pwrite`.
    let config = LogConfig { prealloc_chunk: 4096, ..cfg(1 << 19) };
    let mut w = open(dir.path(), config);
    let mut r = LogReader::open(dir.path()).unwrap();
    assert!(collect_reader(&mut r).is_empty(), "a fresh log reads empty");

    let mut appended: Vec<Trade> = Vec::new();
    let mut segments_seen = std::collections::BTreeSet::new();
    let mut next = 0u64;
    for b in 0..45u64 {
        let size = if b % 10 == 5 { 4_000 } else { 50 };
        let batch: Vec<Trade> = (next..next + size).map(|i| trade(i, T0 + ((i * 31) % 2000) as i64 * MS)).collect();
        next += size;
        append(&mut w, &batch);
        appended.extend(batch);
        segments_seen.insert(w.active_segment().0);
        assert_same(&collect_reader(&mut r), &expected(&appended, &everything()), &format!("reader after batch {b}"));
        let q = TradeQuery::window(T0 + 500 * MS, T0 + 900 * MS);
        assert_same(
            &query(&r.views().unwrap(), &q),
            &expected(&appended, &q),
            &format!("reader window after batch {b}"),
        );
    }
    assert!(segments_seen.len() >= 3, "the reader followed {} segments", segments_seen.len());
    assert!(reader::writer_running(dir.path()));
}

// =============================================================================================
// 5. Recovery
// =============================================================================================

/// A log of `n` trades (monotonic times, so `expected` is append order) in one active
/// segment, closed by a plain drop as a crash would leave it. Returns the appended trades,
/// the segment's path and its records.
fn crashed_log(dir: &Path, config: &LogConfig, n: u64) -> (Vec<Trade>, PathBuf, Vec<Frame>) {
    let mut w = open(dir, config.clone());
    let trades: Vec<Trade> = (0..n).map(|i| trade(i, T0 + i as i64 * MS)).collect();
    for chunk in trades.chunks(97) {
        append(&mut w, chunk);
    }
    drop(w);
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    let path = files[0].1.clone();
    let frames = active_frames(&path);
    assert_eq!(frames.len() as u64, n);
    (trades, path, frames)
}

fn assert_clean(w: &LogWriter) {
    let r = &w.recovery;
    assert!(
        r.truncated.is_empty() && r.damaged.is_empty() && r.sealed.is_empty() && r.headers_repaired.is_empty(),
        "clean reopen: {r:?}"
    );
}

#[test]
fn recovery_truncation_at_every_offset_of_the_last_three_records() {
    let src = tempdir();
    let config = cfg(1 << 20);
    // Enough records that the first 64 KiB block is finished and indexed; the cuts fall in
    // the unfinished one.
    let (trades, path, frames) = crashed_log(src.path(), &config, 1200);
    let pristine = fs::read(&path).unwrap();
    let pristine_idx = fs::read(segment::index_path(&path)).unwrap();
    assert!(pristine_idx.len() > 16, "a finished block is indexed");
    let name = path.file_name().unwrap().to_owned();
    let n = frames.len();
    let (from, to) = (frames[n - 3].off, frames[n - 1].end());

    for cut in from..=to {
        let dir = tempdir();
        fs::create_dir(dir.path().join("log")).unwrap();
        let seg = dir.path().join("log").join(&name);
        fs::write(&seg, &pristine[..cut]).unwrap();
        fs::write(segment::index_path(&seg), &pristine_idx).unwrap();

        let complete = frames.iter().filter(|f| f.end() <= cut).count();
        let boundary = frames[..complete].last().unwrap().end();
        let mut w = open(dir.path(), config.clone());

        // Exactly the complete records remain.
        assert_eq!(w.recovery.records_in_active, complete as u64, "cut {cut}");
        assert_same(&collect(&mut w), &trades[..complete], &format!("cut at {cut}"));
        assert_eq!(w.active_segment().1, boundary, "cut {cut}: appends continue after the last complete record");

        // The torn bytes (from the boundary to the last non-zero byte) are reported and saved.
        let torn_end = pristine[boundary..cut].iter().rposition(|&b| b != 0).map(|p| boundary + p + 1);
        // Our payloads are shorter than 256 bytes, so a frame's first byte is never zero: every
        // cut inside a record leaves something torn to report.
        assert_eq!(torn_end.is_some(), cut != boundary, "cut {cut}");
        match torn_end {
            Some(end) => {
                let got: Vec<(&str, u64, u64)> =
                    w.recovery.truncated.iter().map(|d| (d.segment.as_str(), d.offset, d.length)).collect();
                assert_eq!(got, vec![(name.to_str().unwrap(), boundary as u64, (end - boundary) as u64)], "cut {cut}");
                assert_eq!(w.recovery.saved_to.len(), 1);
                assert_eq!(
                    fs::read(&w.recovery.saved_to[0]).unwrap(),
                    &pristine[boundary..end],
                    "cut {cut}: saved bytes"
                );
            }
            None => assert_eq!(w.recovery.truncated, vec![], "cut {cut}: nothing torn"),
        }
        assert_eq!(w.recovery.damaged, vec![], "cut {cut}");

        // Nothing of the torn record is left for a later append to run into.
        let after = fs::read(&seg).unwrap();
        assert!(after[boundary..].iter().all(|&b| b == 0), "cut {cut}: zeros after the last record");

        // New appends after recovery are readable, now and after another restart.
        let new: Vec<Trade> = (0..2).map(|k| trade(10_000 + k, T0 + 1_000_000 * MS + k as i64)).collect();
        append(&mut w, &new);
        let mut want = trades[..complete].to_vec();
        want.extend(new);
        assert_same(&collect(&mut w), &want, &format!("cut {cut}: after append"));
        drop(w);
        let mut w = open(dir.path(), config.clone());
        assert_clean(&w);
        assert_same(&collect(&mut w), &want, &format!("cut {cut}: after second reopen"));
    }
}

#[test]
fn recovery_keeps_every_record_around_a_damaged_one() {
    let dir = tempdir();
    let config = cfg(1 << 20);
    let (trades, path, frames) = crashed_log(dir.path(), &config, 1500);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mid = frames.len() / 2;
    let hit = &frames[mid];
    write_at(&path, (hit.off + 8 + hit.payload.len() / 2) as u64, &[hit.payload[hit.payload.len() / 2] ^ 0x40]);
    let span = (hit.off as u64, (frames[mid + 1].off - hit.off) as u64);
    let mut survivors = trades.clone();
    survivors.remove(mid);

    // verify sees it before any writer touches the directory.
    let v = reader::verify(dir.path()).unwrap();
    assert!(!v.writer_running);
    assert_eq!(
        v.damaged.iter().map(|d| (d.segment.as_str(), d.offset, d.length)).collect::<Vec<_>>(),
        vec![(name.as_str(), span.0, span.1)]
    );
    assert!(v.torn_tail.is_empty() && v.headers.is_empty(), "{v:?}");
    assert_eq!(v.trades, frames.len() as u64 - 1);

    // Recovery keeps the damaged bytes in place, names them, and keeps every other record.
    let mut w = open(dir.path(), config.clone());
    assert_eq!(
        w.recovery.damaged.iter().map(|d| (d.segment.as_str(), d.offset, d.length)).collect::<Vec<_>>(),
        vec![(name.as_str(), span.0, span.1)]
    );
    assert_eq!(w.recovery.truncated, vec![]);
    assert_eq!(w.recovery.records_in_active, frames.len() as u64 - 1);
    assert_same(&collect(&mut w), &survivors, "writer after recovery");
    let v = reader::verify(dir.path()).unwrap();
    assert!(v.writer_running);
    assert_eq!(v.damaged.iter().map(|d| (d.offset, d.length)).collect::<Vec<_>>(), vec![span]);

    // Appends after the gap fill more index blocks (which no longer chain from offset 64):
    // the writer, a separate reader, window queries and a restart all agree.
    let more: Vec<Trade> = (1500..2500).map(|i| trade(i, T0 + i as i64 * MS)).collect();
    for chunk in more.chunks(100) {
        append(&mut w, chunk);
    }
    survivors.extend(more);
    let mut r = LogReader::open(dir.path()).unwrap();
    assert_same(&collect(&mut w), &survivors, "writer after appends");
    assert_same(&collect_reader(&mut r), &survivors, "reader after appends");
    for (a, b) in [(700, 800), (749, 751), (0, 10), (1400, 2100), (2400, 2600)] {
        let q = TradeQuery::window(T0 + a * MS, T0 + b * MS);
        assert_same(&query(&w.views().unwrap(), &q), &expected(&survivors, &q), &format!("writer window {a}..{b}"));
        assert_same(&query(&r.views().unwrap(), &q), &expected(&survivors, &q), &format!("reader window {a}..{b}"));
    }
    w.seal_active().unwrap();
    drop(w);
    let mut w = open(dir.path(), config);
    assert_clean(&w);
    assert_same(&collect(&mut w), &survivors, "after sealing and reopening");
    assert_same(
        &collect_reader(&mut LogReader::open(dir.path()).unwrap()),
        &survivors,
        "fresh reader of the sealed segment",
    );
    let v = reader::verify(dir.path()).unwrap();
    assert_eq!(
        v.damaged.iter().map(|d| (d.offset, d.length)).collect::<Vec<_>>(),
        vec![span],
        "damage is kept in place"
    );
}

#[test]
fn recovery_cuts_garbage_in_the_preallocated_tail() {
    let dir = tempdir();
    let config = cfg(1 << 20);
    let (trades, path, frames) = crashed_log(dir.path(), &config, 200);
    let end = frames.last().unwrap().end();
    let file_len = fs::metadata(&path).unwrap().len() as usize;
    assert!(file_len >= end + 500, "the tail is preallocated");
    let mut rng = Rng(7);
    let mut garbage: Vec<u8> = (0..300).map(|_| rng.next() as u8).collect();
    garbage[0] |= 1;
    garbage[299] |= 0x80;
    write_at(&path, (end + 100) as u64, &garbage);

    let v = reader::verify(dir.path()).unwrap();
    assert_eq!(v.torn_tail.iter().map(|d| (d.offset, d.length)).collect::<Vec<_>>(), vec![(end as u64, 400)]);

    let mut w = open(dir.path(), config.clone());
    assert_eq!(w.recovery.truncated.iter().map(|d| (d.offset, d.length)).collect::<Vec<_>>(), vec![(end as u64, 400)]);
    assert_eq!(fs::read(&w.recovery.saved_to[0]).unwrap()[100..], garbage[..]);
    assert_eq!(w.recovery.records_in_active, 200);
    assert_same(&collect(&mut w), &trades, "all records kept");
    assert!(fs::read(&path).unwrap()[end..].iter().all(|&b| b == 0), "garbage cut");

    let mut all = trades;
    let new: Vec<Trade> = (200..230).map(|i| trade(i, T0 + i as i64 * MS)).collect();
    append(&mut w, &new);
    all.extend(new);
    assert_same(&collect(&mut w), &all, "appends over the cut garbage");
    drop(w);
    let mut w = open(dir.path(), config);
    assert_clean(&w);
    assert_same(&collect(&mut w), &all, "after reopen");
    assert!(reader::verify(dir.path()).unwrap().ok());
}

#[test]
fn recovery_repairs_a_damaged_header() {
    let dir = tempdir();
    let config = cfg(1 << 20);
    let (trades, path, frames) = crashed_log(dir.path(), &config, 300);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    write_at(&path, 3, &[b"PUMPWLOG"[3] ^ 0x20]);
    let mut raw = [0u8; HEADER_LEN];
    File::open(&path).and_then(|mut f| f.read_exact(&mut raw)).unwrap();
    assert_eq!(segment::decode_header(&raw), HeaderCheck::Damaged);

    let v = reader::verify(dir.path()).unwrap();
    assert_eq!(v.headers.iter().map(|d| d.segment.as_str()).collect::<Vec<_>>(), vec![name.as_str()]);
    assert_eq!(v.trades, 300, "verify still reads the records");
    assert_same(
        &collect_reader(&mut LogReader::open(dir.path()).unwrap()),
        &trades,
        "a reader reads through a damaged header",
    );

    let mut w = open(dir.path(), config.clone());
    assert_eq!(w.recovery.headers_repaired, vec![name]);
    assert!(w.recovery.truncated.is_empty() && w.recovery.damaged.is_empty());
    assert_same(&collect(&mut w), &trades, "records intact");
    let h = read_header(&path);
    assert_eq!((h.seq, h.state, h.published_end), (1, STATE_ACTIVE, frames.last().unwrap().end() as u64));

    let mut all = trades;
    let new: Vec<Trade> = (300..310).map(|i| trade(i, T0 + i as i64 * MS)).collect();
    append(&mut w, &new);
    all.extend(new);
    drop(w);
    let mut w = open(dir.path(), config);
    assert_clean(&w);
    assert_same(&collect(&mut w), &all, "after repair, append and reopen");
    assert!(reader::verify(dir.path()).unwrap().ok());
}

#[test]
fn recovery_seals_an_older_segment_left_active() {
    let dir = tempdir();
    let config = cfg(1 << 20);
    let mut w = open(dir.path(), config.clone());
    let mut appended: Vec<Trade> = Vec::new();
    for seg in 0..3u64 {
        let batch: Vec<Trade> = (seg * 700..seg * 700 + 700).map(|i| trade(i, T0 + i as i64 * MS)).collect();
        append(&mut w, &batch);
        appended.extend(batch);
        if seg < 2 {
            w.roll().unwrap();
        }
    }
    drop(w);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    let first = &files[0].1;
    let frames = assert_sealed_segment(first);

    // A crash between creating segment 2 and sealing segment 1 leaves 1 active. The state is
    // outside the header CRC, so the header stays valid.
    write_at(first, STATE_AT, &STATE_ACTIVE.to_le_bytes());
    assert_eq!(read_header(first).state, STATE_ACTIVE);

    let mut w = open(dir.path(), config);
    assert_eq!(w.recovery.sealed, vec![first.file_name().unwrap().to_string_lossy().into_owned()]);
    assert!(w.recovery.truncated.is_empty() && w.recovery.damaged.is_empty(), "{:?}", w.recovery);
    assert_eq!(assert_sealed_segment(first).len(), frames.len(), "sealed again, same records");
    assert_eq!(w.active_segment().0, 3, "the last segment stays the active one");
    assert_same(&collect(&mut w), &expected(&appended, &everything()), "all segments after recovery");
}

#[test]
fn records_in_active_counts_the_active_segment_only() {
    let dir = tempdir();
    let config = cfg(1 << 20);
    let mut w = open(dir.path(), config.clone());
    append(&mut w, &(0..700).map(|i| trade(i, T0 + i as i64 * MS)).collect::<Vec<_>>());
    w.roll().unwrap();
    append(&mut w, &(700..710).map(|i| trade(i, T0 + i as i64 * MS)).collect::<Vec<_>>());
    w.seal_active().unwrap();
    drop(w);
    // Segment 1 left active, segment 2 sealed and last (its empty successor never reached
    // the directory): the writer seals 1 and starts segment 3, which holds no record.
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    fs::remove_file(segment::index_path(&files[2].1)).unwrap();
    fs::remove_file(&files[2].1).unwrap();
    write_at(&files[0].1, STATE_AT, &STATE_ACTIVE.to_le_bytes());

    let mut w = open(dir.path(), config);
    assert_eq!(w.recovery.sealed.len(), 1);
    assert_eq!(w.active_segment(), (3, HEADER_LEN));
    assert_eq!(collect(&mut w).len(), 710);
    assert_eq!(w.recovery.records_in_active, 0, "the active segment is new and empty");
}

// =============================================================================================
// 6. One writer per directory
// =============================================================================================

#[test]
fn a_second_writer_is_refused_and_the_first_keeps_appending() {
    let dir = tempdir();
    let config = cfg(1 << 20);
    let mut first = open(dir.path(), config.clone());
    append(&mut first, &[trade(1, T0)]);

    match LogWriter::open(dir.path(), config.clone()) {
        Err(e @ Error::Locked { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&dir.path().display().to_string()), "the message names the directory: {msg}");
            assert!(msg.contains(&format!("pid {}", std::process::id())), "the message names the holder: {msg}");
        }
        Err(e) => panic!("expected Error::Locked, got {e:?}"),
        Ok(_) => panic!("a second writer opened a locked directory"),
    }

    // The refused open changed nothing: the first writer goes on, and its data is all there.
    append(&mut first, &[trade(2, T0 + MS), trade(3, T0 + 2 * MS)]);
    assert_same(&collect(&mut first), &[trade(1, T0), trade(2, T0 + MS), trade(3, T0 + 2 * MS)], "first writer");
    assert_eq!(fs::read_to_string(dir.path().join("LOCK")).unwrap().trim(), format!("pid {}", std::process::id()));
    drop(first);
    let mut again = open(dir.path(), config);
    assert_clean(&again);
    assert_eq!(collect(&mut again).len(), 3, "the lock is released with the writer");
}

#[test]
fn probing_for_a_writer_never_makes_a_writer_fail_to_open() {
    let dir = tempdir();
    let config = cfg(1 << 16);
    drop(open(dir.path(), config.clone())); // creates LOCK
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // What `pumpwatch verify` or a dashboard does while a recorder (re)starts.
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                reader::writer_running(dir.path());
            }
        });
        let outcomes: Vec<Option<String>> =
            (0..200).map(|_| LogWriter::open(dir.path(), config.clone()).err().map(|e| e.to_string())).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed); // before any assert: the probe must end
        let refused: Vec<&String> = outcomes.iter().flatten().collect();
        assert!(
            refused.is_empty(),
            "{} of 200 opens refused with no writer running, e.g. {}",
            refused.len(),
            refused[0]
        );
    });
}

// =============================================================================================
// 7. SharedLog: appends from several threads under group commit
// =============================================================================================

#[test]
fn shared_log_takes_appends_from_two_threads() {
    let dir = tempdir();
    let config = LogConfig { fsync_interval: Duration::from_millis(10), ..cfg(1 << 18) };
    let mut log = SharedLog::open(dir.path(), config.clone()).unwrap();
    const BATCHES: u64 = 150;
    const PER_BATCH: u64 = 20;
    std::thread::scope(|s| {
        for thread in 0..2u64 {
            let log = &log;
            s.spawn(move || {
                for b in 0..BATCHES {
                    // Ids encode (thread, sequence); both threads use the same times.
                    let batch: Vec<Trade> = (0..PER_BATCH)
                        .map(|k| trade(thread * 1_000_000 + b * PER_BATCH + k, T0 + (b * PER_BATCH + k) as i64 * MS))
                        .collect();
                    log.with(|w| w.append_trades(batch.iter().map(Trade::as_ref))).unwrap();
                    if b % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(2)); // let the committer run in between
                    }
                    if b % 50 == 0 {
                        log.flush().unwrap();
                    }
                }
            });
        }
    });
    log.close(false).unwrap();
    assert!(matches!(log.with(|w| Ok(w.appended_records)), Err(Error::Closed)), "a closed log refuses work");

    let mut w = open(dir.path(), config);
    assert_clean(&w);
    let all = collect(&mut w);
    assert_eq!(all.len() as u64, 2 * BATCHES * PER_BATCH);
    let mut want: Vec<Trade> = (0..2u64)
        .flat_map(|t| (0..BATCHES * PER_BATCH).map(move |i| trade(t * 1_000_000 + i, T0 + i as i64 * MS)))
        .collect();
    let mut got = all.clone();
    let key = |t: &Trade| (t.ts_ns, t.recv_ns);
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_same(&got, &want, "every trade of both threads, once");
    // In log order, batches never interleave (`with` holds the writer for a whole batch) and
    // each thread's batches keep the order it appended them in.
    let built_from = |t: &Trade| (t.recv_ns - t.ts_ns - 1_000) as u64;
    let in_log: Vec<u64> = trade_payloads_in_log_order(dir.path())
        .iter()
        .map(|p| built_from(&record::decode_trade_owned(p).unwrap()))
        .collect();
    assert_eq!(in_log.len() as u64, 2 * BATCHES * PER_BATCH);
    for (k, batch) in in_log.chunks(PER_BATCH as usize).enumerate() {
        assert!(
            batch[0] % PER_BATCH == 0 && batch.windows(2).all(|p| p[1] == p[0] + 1),
            "log batch {k} is one whole batch: {batch:?}"
        );
    }
    for t in 0..2u64 {
        let mine: Vec<u64> = in_log.iter().copied().filter(|i| i / 1_000_000 == t).collect();
        assert_eq!(
            mine,
            (0..BATCHES * PER_BATCH).map(|i| t * 1_000_000 + i).collect::<Vec<_>>(),
            "thread {t} in append order"
        );
    }
}

// =============================================================================================
// 9. The live ring gets what the log gets
// =============================================================================================

fn drain(r: &mut RingReader) -> Vec<Vec<u8>> {
    let (mut out, mut lens) = (Vec::new(), Vec::new());
    while r.poll(1024, &mut out, &mut lens).0 > 0 {}
    assert_eq!(r.missed, 0, "a ring large enough for the test loses nothing");
    let mut at = 0;
    lens.iter()
        .map(|&l| {
            at += l;
            out[at - l..at].to_vec()
        })
        .collect()
}

#[test]
fn ring_receives_every_appended_trade() {
    let dir = tempdir();
    let mut w = open(dir.path(), cfg(1 << 16));
    let (ring_writer, shared) = ring::ring(4 << 20);
    let mut live = RingReader::new(shared.clone(), false);
    w.attach_ring(ring_writer);

    let mut appended: Vec<Trade> = Vec::new();
    for b in 0..20u64 {
        let batch: Vec<Trade> = (b * 60..(b + 1) * 60)
            .map(|i| {
                let mut t = trade(i, T0 + ((i * 13) % 500) as i64 * MS);
                if i % 9 == 0 {
                    t.flags |= flags::NON_TRADE; // the ring carries every trade record
                }
                t
            })
            .collect();
        append(&mut w, &batch);
        appended.extend(batch);
        w.append_marker(&marker(T0)).unwrap(); // markers are not pushed to the ring
    }
    assert!(segment_files(dir.path()).len() > 1, "the appends rolled segments");

    let late = drain(&mut RingReader::new(shared, true));
    let live = drain(&mut live);
    assert_eq!(live, late, "a reader from the start and one from the oldest entry agree");
    let decoded: Vec<Trade> =
        live.iter().map(|p| record::decode_trade_owned(p).expect("ring payload decodes")).collect();
    assert_same(&decoded, &appended, "ring, in append order");

    // Byte for byte the payloads of the log's trade records.
    assert_eq!(live, trade_payloads_in_log_order(dir.path()));
}

// =============================================================================================
// Quarantined frames: what is acknowledged must read back
// =============================================================================================

#[test]
fn an_acknowledged_quarantined_frame_reads_back() {
    let dir = tempdir();
    let mut w = open(dir.path(), cfg(1 << 20));
    append(&mut w, &[trade(0, T0)]);
    // Built field by field (the fields are public), not through `Quarantined::new`, which
    // would cut the reason.
    let q = record::Quarantined {
        venue: Some(Venue::BinanceSpot),
        recv_ns: T0,
        reason: "r".repeat(70_000),
        raw: b"{\"e\":".to_vec(),
    };
    match w.append_quarantined(&q) {
        Err(Error::InvalidInput(_)) => {} // refusing it is as good
        Err(e) => panic!("unexpected error: {e}"),
        Ok(()) => {
            append(&mut w, &[trade(1, T0 + MS)]);
            let got = reader::query_quarantined(&w.views().unwrap(), i64::MIN, i64::MAX);
            assert_eq!(got.len(), 1, "the acknowledged quarantined frame reads back");
            assert_eq!((got[0].reason.len(), got[0].raw.as_slice()), (70_000, q.raw.as_slice()));
            let v = reader::verify(dir.path()).unwrap();
            assert!(v.ok(), "an acknowledged record is not damage: {:?}", v.damaged);
        }
    }
}

// =============================================================================================
// 10. Property: any plain decimal and any id round-trips exactly
// =============================================================================================

fn decimal_text() -> impl Strategy<Value = String> {
    "-?[0-9]{1,30}(\\.[0-9]{1,30})?"
}

fn id_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "[0-9]{1,24}", "0[0-9]{0,6}", "[0-9a-f]{1,32}", "\\PC{1,40}",]
}

fn any_trade() -> impl Strategy<Value = Trade> {
    (
        0usize..12,
        "\\PC{1,24}",
        id_text(),
        decimal_text(),
        decimal_text(),
        any::<bool>(),
        i64::MIN..i64::MAX,
        any::<i64>(),
        0u16..=flags::ALL,
    )
        .prop_map(|(v, symbol, id, price, qty, buy, ts, recv, fl)| {
            Trade::new(venue::ALL[v].id(), &symbol, &id, &price, &qty, if buy { "buy" } else { "sell" }, ts, recv, fl)
                .expect("strategy makes valid trades")
        })
}

proptest! {
    // No regression file: this suite must not write next to its source.
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_decimals_and_ids_round_trip_exactly(trades in prop::collection::vec(any_trade(), 1..60), split in 0usize..60) {
        let dir = tempdir();
        let mut w = open(dir.path(), cfg(1 << 16));
        let split = split.min(trades.len());
        for part in [&trades[..split], &trades[split..]] {
            w.append_trades(part.iter().map(Trade::as_ref)).unwrap();
        }
        let got = collect(&mut w);
        let want = expected(&trades, &everything());
        prop_assert_eq!(got, want);
    }
}

// =============================================================================================
// Segments larger than 4 GiB (`LogConfig::check` accepts segment_max_bytes up to 1 TiB)
// =============================================================================================

/// Writes, sparsely, the sealed segment a writer with `segment_max_bytes` above 4 GiB leaves:
/// trade `a` at offset 64, quarantined frames of up to 16 MiB (raw bytes all zero, left as
/// holes, so the file takes about a megabyte of disk) up to offset 2^32 + 64, then trade `b`
/// there; and the index that writer builds (each 16 MiB frame closes its own block). Every
/// frame is valid per FORMAT.md. Returns the published end.
fn write_segment_past_4_gib(dir: &Path, a: &Trade, b: &Trade) -> u64 {
    use std::os::unix::fs::FileExt;
    let log = dir.join("log");
    fs::create_dir_all(&log).unwrap();
    let path = log.join(segment::segment_file_name(1));
    let f = OpenOptions::new().create(true).write(true).truncate(true).open(&path).unwrap();
    let frame_of = |t: &Trade| {
        let mut v = Vec::new();
        record::frame_into(&mut v, |o| t.as_ref().encode_payload(o));
        v
    };
    let (fa, fb) = (frame_of(a), frame_of(b));
    let b_off: u64 = (1 << 32) + HEADER_LEN as u64;

    f.write_all_at(&fa, HEADER_LEN as u64).unwrap();
    let mut off = (HEADER_LEN + fa.len()) as u64;
    let mut block =
        IndexEntry { start: HEADER_LEN as u64, end: off, min_ts: a.ts_ns, max_ts: a.ts_ns, trades: 1, others: 0 };
    let mut entries = Vec::new();
    let reason = b"sparse filler";
    let max_frame = (record::MAX_PAYLOAD + record::FRAME_HEADER) as u64;
    let frames = (b_off - off).div_ceil(max_frame);
    let (base, extra) = ((b_off - off) / frames, (b_off - off) % frames);
    let mut crcs = std::collections::HashMap::new();
    let mut chain = segment::chain_frame(0, &fa);
    for k in 0..frames {
        let size = base + u64::from(k < extra);
        let payload_len = size - record::FRAME_HEADER as u64;
        let raw_len = payload_len - record::QUARANTINE_FIXED as u64 - reason.len() as u64;
        let mut prefix = vec![record::KIND_QUARANTINE, 0];
        prefix.extend_from_slice(&(reason.len() as u16).to_le_bytes());
        prefix.extend_from_slice(&(raw_len as u32).to_le_bytes());
        prefix.extend_from_slice(&T0.to_le_bytes());
        prefix.extend_from_slice(reason);
        let crc = *crcs.entry(payload_len).or_insert_with(|| {
            let mut p = prefix.clone();
            p.resize(payload_len as usize, 0);
            crc32c::crc32c(&p)
        });
        let mut head = (payload_len as u32).to_le_bytes().to_vec();
        head.extend_from_slice(&crc.to_le_bytes());
        chain = segment::chain_frame(chain, &head);
        head.extend_from_slice(&prefix);
        f.write_all_at(&head, off).unwrap();
        off += size;
        block.end = off;
        block.others += 1;
        entries.push(block); // past 64 KiB: the block closes at this record
        block = IndexEntry { start: off, end: off, min_ts: i64::MAX, max_ts: i64::MIN, trades: 0, others: 0 };
    }
    assert_eq!(off, b_off);
    f.write_all_at(&fb, b_off).unwrap();
    let end = b_off + fb.len() as u64;
    entries.push(IndexEntry { start: b_off, end, min_ts: b.ts_ns, max_ts: b.ts_ns, trades: 1, others: 0 });
    let seal = segment::Seal { published_end: end, records: frames + 2, crc_chain: segment::chain_frame(chain, &fb) };
    f.write_all_at(&segment::sealed_header(1, T0, &seal), 0).unwrap();
    index::write_index(&segment::index_path(&path), &entries).unwrap();
    end
}

#[test]
fn a_trade_past_4_gib_in_a_segment_is_read_from_its_own_offset() {
    let dir = tempdir();
    let a = trade(1, T0);
    let b = trade(2, T0 + 1_000 * MS);
    let end = write_segment_past_4_gib(dir.path(), &a, &b);
    assert!(end > u64::from(u32::MAX));

    // The segment is well formed: verify walks every frame of it and finds nothing wrong.
    let v = reader::verify(dir.path()).unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.trades, v.quarantined), (2, 256));

    let mut r = LogReader::open(dir.path()).unwrap();
    let views = r.views().unwrap();
    // Only b's block overlaps this window; b sits at 2^32 + 64, and 64 holds a.
    let q = TradeQuery::window(T0 + 500 * MS, T0 + 1_500 * MS);
    assert_same(&query(&views, &q), std::slice::from_ref(&b), "the trade at offset 2^32 + 64");
    assert_same(&query(&views, &everything()), &[a, b], "both trades");
}
