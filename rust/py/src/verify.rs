//! `verify`: the read-only walk over a data directory.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use pumpwatch_core::log::reader::{self, VerifyProgress};

use crate::convert::damage_to_py;
use crate::errors::to_py;

/// Python is asked (signals, then the callback) at most this often: the walk runs without the
/// GIL and takes it only for these moments. The first and the last telling always go through.
const TELL_EVERY: Duration = Duration::from_millis(50);

/// Walks every record of every segment of `path` and reports what it found. `progress`, when
/// given, is called as `progress(bytes_done, bytes_total, segments_done, segments_total)`; an
/// exception it raises (and Ctrl-C, with or without a callback) stops the walk and propagates.
#[pyfunction]
#[pyo3(signature = (path, progress=None))]
pub(crate) fn verify<'py>(
    py: Python<'py>,
    path: PathBuf,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let progress = progress.map(Bound::unbind);
    let walked = py.detach(|| {
        let mut told: Option<Instant> = None;
        reader::verify_with_progress(&path, |p: VerifyProgress| {
            let last = p.segments_done == p.segments_total && p.bytes_done == p.bytes_total;
            if !last && told.is_some_and(|t| t.elapsed() < TELL_EVERY) {
                return ControlFlow::Continue(());
            }
            told = Some(Instant::now());
            let asked = Python::attach(|py| {
                // Ctrl-C only sets a flag while Rust runs: this raises the KeyboardInterrupt.
                py.check_signals()?;
                if let Some(cb) = &progress {
                    cb.call1(py, (p.bytes_done, p.bytes_total, p.segments_done, p.segments_total))?;
                }
                Ok::<(), PyErr>(())
            });
            match asked {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            }
        })
    });
    let r = match walked.map_err(to_py)? {
        ControlFlow::Continue(r) => r,
        ControlFlow::Break(e) => return Err(e),
    };
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
