//! `pumpwatch._core`: thin PyO3 bindings over `pumpwatch-core`. Conversions and error mapping
//! only; long work runs with the GIL released (`py.detach`).

mod convert;
mod errors;
mod parse;
mod reader;
mod ring;
mod trade;
mod verify;
mod writer;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use pumpwatch_core::log as plog;
use pumpwatch_core::record;

use crate::reader::LogReader;
use crate::ring::{RingReader, TradeRing};
use crate::trade::Trade;
use crate::writer::LogWriter;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::check_classes(m.py())?;
    m.add_class::<Trade>()?;
    m.add_class::<LogWriter>()?;
    m.add_class::<LogReader>()?;
    m.add_class::<TradeRing>()?;
    m.add_class::<RingReader>()?;
    m.add_function(wrap_pyfunction!(verify::verify, m)?)?;
    m.add_function(wrap_pyfunction!(parse::parse_frame, m)?)?;
    m.add("FORMAT_VERSION", plog::FORMAT_VERSION)?;
    m.add("VENUES", pumpwatch_core::venue::ALL.iter().map(|v| v.id()).collect::<Vec<_>>())?;
    let sequenced: Vec<&str> = pumpwatch_core::venue::ALL
        .iter()
        .filter(|v| pumpwatch_core::ingest::has_id_sequence(**v))
        .map(|v| v.id())
        .collect();
    m.add("SEQUENCED_VENUES", pyo3::types::PyFrozenSet::new(m.py(), &sequenced)?)?;
    let flags = PyDict::new(m.py());
    for (name, v) in [
        ("RPI", record::flags::RPI),
        ("INSURANCE_FUND", record::flags::INSURANCE_FUND),
        ("ADL", record::flags::ADL),
        ("INTERNAL", record::flags::INTERNAL),
        ("BLOCK_TRADE", record::flags::BLOCK_TRADE),
        ("NON_TRADE", record::flags::NON_TRADE),
        ("BACKFILL", record::flags::BACKFILL),
        ("SNAPSHOT", record::flags::SNAPSHOT),
        ("AGGREGATED", record::flags::AGGREGATED),
        ("UNKNOWN_TYPE", record::flags::UNKNOWN_TYPE),
    ] {
        flags.set_item(name, v)?;
    }
    m.add("FLAGS", flags)?;
    Ok(())
}
