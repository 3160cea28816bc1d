//! `verify`: the read-only walk over a data directory.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use pumpwatch_core::log::reader;

use crate::convert::damage_to_py;
use crate::errors::to_py;

/// Walks every record of every segment of `path` and reports what it found.
#[pyfunction]
pub(crate) fn verify<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let r = py.detach(|| reader::verify(&path)).map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("ok", r.ok())?;
    d.set_item("segments", r.segments)?;
    d.set_item("records", r.records)?;
    d.set_item("trades", r.trades)?;
    d.set_item("markers", r.markers)?;
    d.set_item("quarantined", r.quarantined)?;
    d.set_item("bytes", r.bytes)?;
    d.set_item("writer_running", r.writer_running)?;
    d.set_item("damaged", r.damaged.iter().map(|x| damage_to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?;
    d.set_item("torn_tail", r.torn_tail.iter().map(|x| damage_to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?;
    d.set_item("headers", r.headers.iter().map(|x| damage_to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?;
    Ok(d)
}
