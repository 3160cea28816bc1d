//! `LogReader`: reads a data directory without locking it, and the queries both it and the
//! writer run with the GIL released.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use pumpwatch_core::log::reader::{self, SegmentView};
use pumpwatch_core::log::tail::{self as log_tail, Cursor};
use pumpwatch_core::log::{MarkerQuery, TradeQuery};

use crate::convert::{columns_to_py, marker_to_py, quarantined_to_py, tail_to_py, trade_query};
use crate::errors::to_py;

pub(crate) fn run_query<'py>(py: Python<'py>, views: Vec<SegmentView>, q: TradeQuery) -> PyResult<Bound<'py, PyDict>> {
    let cols = py.detach(move || reader::query_trades(&views, &q)).map_err(to_py)?;
    columns_to_py(py, &cols)
}

/// `tail` over `views` with the GIL released, as Arrow-style buffers (see `pumpwatch.sink`).
pub(crate) fn run_tail<'py>(
    py: Python<'py>,
    views: Vec<SegmentView>,
    seq: u64,
    offset: u64,
    max_records: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let b = py.detach(move || log_tail::tail(&views, Cursor::new(seq, offset), max_records)).map_err(to_py)?;
    tail_to_py(py, &b)
}

/// Reads a data directory without locking it, while a writer may be appending.
#[pyclass(module = "pumpwatch._core")]
pub struct LogReader {
    inner: Mutex<reader::LogReader>,
}

impl LogReader {
    fn views(&self, py: Python<'_>) -> PyResult<Vec<SegmentView>> {
        py.detach(|| self.inner.lock().unwrap_or_else(|p| p.into_inner()).views()).map_err(to_py)
    }
}

#[pymethods]
impl LogReader {
    #[new]
    fn new(path: PathBuf) -> PyResult<LogReader> {
        Ok(LogReader { inner: Mutex::new(reader::LogReader::open(&path).map_err(to_py)?) })
    }

    #[pyo3(signature = (start_ns, end_ns, venues = None, symbols = None, include_non_trades = false))]
    fn query_columns<'py>(
        &self,
        py: Python<'py>,
        start_ns: i64,
        end_ns: i64,
        venues: Option<Vec<String>>,
        symbols: Option<Vec<String>>,
        include_non_trades: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let q = trade_query(start_ns, end_ns, venues, symbols, include_non_trades)?;
        let views = self.views(py)?;
        run_query(py, views, q)
    }

    fn markers<'py>(&self, py: Python<'py>, start_ns: i64, end_ns: i64) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let views = self.views(py)?;
        let ms = py.detach(|| reader::query_markers(&views, &MarkerQuery { start_ns, end_ns }));
        ms.iter().map(|m| marker_to_py(py, m)).collect()
    }

    /// Records in log order from the cursor `(seq, offset)` (`(0, 0)`: the oldest the log holds),
    /// about `max_records` of them; see `pumpwatch.sink.LogTail`.
    #[pyo3(signature = (seq, offset, max_records = 65536))]
    fn tail<'py>(&self, py: Python<'py>, seq: u64, offset: u64, max_records: usize) -> PyResult<Bound<'py, PyDict>> {
        let views = self.views(py)?;
        run_tail(py, views, seq, offset, max_records)
    }

    fn quarantined<'py>(&self, py: Python<'py>, start_ns: i64, end_ns: i64) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let views = self.views(py)?;
        let qs = py.detach(|| reader::query_quarantined(&views, start_ns, end_ns));
        qs.iter().map(|q| quarantined_to_py(py, q)).collect()
    }
}
