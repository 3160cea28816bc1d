//! The table of real frames (tests/data/real_frames.json) against the Rust parser: every listed
//! trade of every listed sample line, field by field. tests/test_parse_samples.py runs the same
//! table against the pure-Python parser and through `pumpwatch._core.parse_frame`, so one set of
//! hand-read values holds both parsers.

use std::path::PathBuf;

use pumpwatch_core::parse::{parse_frame, ParseContext, ParsedFrame};
use pumpwatch_core::record::flags;
use pumpwatch_core::Venue;
use serde_json::Value;

const TABLE: &str = include_str!("../../../tests/data/real_frames.json");

/// Line `n` (1-based) of a sample file: tests/samples/ is the repository's copy of shared/samples/.
fn sample_line(file: &str, n: usize) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/samples").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().nth(n - 1).unwrap_or_else(|| panic!("{file} has no line {n}")).to_owned()
}

/// `"RPI|NON_TRADE"` as bits; the names are those of `record::flags` (docs/FORMAT.md "Codes").
fn flag_bits(names: &str) -> u16 {
    names
        .split('|')
        .filter(|n| !n.is_empty())
        .map(|n| match n {
            "RPI" => flags::RPI,
            "INSURANCE_FUND" => flags::INSURANCE_FUND,
            "ADL" => flags::ADL,
            "INTERNAL" => flags::INTERNAL,
            "BLOCK_TRADE" => flags::BLOCK_TRADE,
            "NON_TRADE" => flags::NON_TRADE,
            "BACKFILL" => flags::BACKFILL,
            "SNAPSHOT" => flags::SNAPSHOT,
            "AGGREGATED" => flags::AGGREGATED,
            "UNKNOWN_TYPE" => flags::UNKNOWN_TYPE,
            other => panic!("unknown flag name {other:?} in the table"),
        })
        .fold(0, |a, b| a | b)
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("{key} is not text in {v}")).to_owned()
}

fn opt_u64(v: &Value, key: &str) -> Option<u64> {
    match &v[key] {
        Value::Null => None,
        Value::String(s) => Some(s.parse().unwrap_or_else(|e| panic!("{key} {s:?}: {e}"))),
        other => panic!("{key} is {other}, not text or null"),
    }
}

#[test]
fn every_table_frame_parses_to_its_trades() {
    let table: Value = serde_json::from_str(TABLE).expect("tests/data/real_frames.json is JSON");
    let frames = table["frames"].as_array().expect("a frames list");
    let mut checked = 0;
    let mut venues = std::collections::BTreeSet::new();
    for f in frames {
        let venue = Venue::parse(f["venue"].as_str().unwrap()).unwrap();
        let (file, line) = (text(f, "file"), f["line"].as_u64().unwrap() as usize);
        let at = format!("{} {file}:{line}", venue.id());
        let mut ctx = ParseContext::new();
        if let Some(scales) = f.get("phemex_spot_scales").and_then(Value::as_object) {
            for (symbol, pq) in scales {
                ctx.set_phemex_spot_scales(symbol, pq[0].as_u64().unwrap() as u8, pq[1].as_u64().unwrap() as u8);
            }
        }
        let mut out = ParsedFrame::new();
        parse_frame(venue, sample_line(&file, line).as_bytes(), &ctx, &mut out).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(out.control.is_none() && out.rejected.is_empty(), "{at}");
        assert_eq!(out.trades.len() as u64, f["trade_count"].as_u64().unwrap(), "{at}: trade count");
        for w in f["trades"].as_array().unwrap() {
            let i = w["index"].as_u64().unwrap() as usize;
            let t = out.trade(i, venue, 0);
            let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            let at = format!("{at} trade {i}");
            assert_eq!(s(t.symbol), text(w, "symbol"), "{at}: symbol");
            assert_eq!(s(t.trade_id), text(w, "trade_id"), "{at}: trade_id");
            assert_eq!(s(t.price), text(w, "price"), "{at}: price");
            assert_eq!(s(t.qty), text(w, "qty"), "{at}: qty");
            assert_eq!(t.side.as_str(), text(w, "side"), "{at}: side");
            assert_eq!(t.ts_ns.to_string(), text(w, "ts_ns"), "{at}: ts_ns");
            assert_eq!(t.flags, flag_bits(&text(w, "flags")), "{at}: flags");
            let p = &out.trades[i];
            assert_eq!((p.seq_first, p.seq_last), (opt_u64(w, "seq_first"), opt_u64(w, "seq_last")), "{at}: seq");
            checked += 1;
        }
        venues.insert(venue.id());
    }
    assert_eq!(venues.len(), pumpwatch_core::venue::ALL.len(), "every venue has real frames in the table");
    assert!(checked >= frames.len(), "every frame lists at least one trade");
}
