//! Mapping of `pumpwatch_core::Error` to the exception classes of `pumpwatch.errors`.

use pyo3::prelude::*;

use pumpwatch_core::Error;

pub(crate) fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let class = match &e {
            Error::Locked { .. } => "StoreLockedError",
            Error::DiskFull { .. } => "DiskFullError",
            Error::InvalidInput(_) => "InvalidInputError",
            Error::InvalidTrade(_) => "InvalidTradeError",
            Error::Format { .. } => "CorruptLogError",
            Error::Closed => "StoreClosedError",
            Error::Io { .. } => "StoreError",
        };
        let errno = match &e {
            Error::DiskFull { source, .. } | Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        };
        let made = py.import("pumpwatch.errors").and_then(|m| m.getattr(class)).and_then(|cls| match (class, errno) {
            ("DiskFullError", Some(n)) => cls.call1((n, e.to_string())),
            _ => cls.call1((e.to_string(),)),
        });
        match made {
            Ok(obj) => PyErr::from_value(obj),
            Err(import_err) => import_err,
        }
    })
}

pub(crate) fn invalid(msg: String) -> PyErr {
    to_py(Error::InvalidInput(msg))
}
