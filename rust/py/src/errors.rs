//! Mapping of `pumpwatch_core::Error` to the exception classes of `pumpwatch.errors`.
//!
//! The classes are defined once, in Python (python/pumpwatch/errors.py), because the pure-Python
//! path raises them too: callers catch one set whichever path did the work. Each is imported on
//! first use and its type object cached (`import_exception!`), so raising one costs no module
//! lookup and needs no GIL until Python sees it.

use pyo3::prelude::*;

use pumpwatch_core::Error;

pyo3::import_exception!(pumpwatch.errors, StoreError);
pyo3::import_exception!(pumpwatch.errors, StoreLockedError);
pyo3::import_exception!(pumpwatch.errors, DiskFullError);
pyo3::import_exception!(pumpwatch.errors, CorruptLogError);
pyo3::import_exception!(pumpwatch.errors, StoreClosedError);
pyo3::import_exception!(pumpwatch.errors, InvalidInputError);
pyo3::import_exception!(pumpwatch.errors, InvalidTradeError);
pyo3::import_exception!(pumpwatch.errors, FrameError);

/// Names of the classes above, checked when the module loads (see `check_classes`).
const CLASSES: [&str; 8] = [
    "StoreError",
    "StoreLockedError",
    "DiskFullError",
    "CorruptLogError",
    "StoreClosedError",
    "InvalidInputError",
    "InvalidTradeError",
    "FrameError",
];

/// Imports `pumpwatch.errors` and checks every class the bindings raise is there, so that a broken
/// install fails at `import pumpwatch` with the name of what is missing, not with a panic at the
/// first error (`import_exception!` panics when its import fails).
pub(crate) fn check_classes(py: Python<'_>) -> PyResult<()> {
    let module = py.import("pumpwatch.errors")?;
    for name in CLASSES {
        module.getattr(name)?;
    }
    Ok(())
}

/// The exception for an error of the core, its message the core's text. A full disk's errno
/// stays on the exception (`DiskFullError` is an `OSError`: `e.errno`, `e.strerror`).
pub(crate) fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Locked { .. } => StoreLockedError::new_err(message),
        Error::DiskFull { source, .. } => match source.raw_os_error() {
            Some(errno) => DiskFullError::new_err((errno, message)),
            None => DiskFullError::new_err(message),
        },
        Error::InvalidInput(_) => InvalidInputError::new_err(message),
        Error::InvalidTrade(_) => InvalidTradeError::new_err(message),
        Error::Format { .. } => CorruptLogError::new_err(message),
        Error::Closed => StoreClosedError::new_err(message),
        Error::Io { .. } => StoreError::new_err(message),
    }
}

pub(crate) fn invalid(msg: String) -> PyErr {
    to_py(Error::InvalidInput(msg))
}
