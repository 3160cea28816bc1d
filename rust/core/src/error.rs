//! Errors a user can act on: each message says what happened and what to do.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// Another process holds the data directory for writing.
    Locked {
        dir: PathBuf,
        holder: String,
    },
    /// The disk (or the process's file-size limit) has no room for the batch.
    DiskFull {
        path: PathBuf,
        needed: u64,
        source: std::io::Error,
    },
    /// A value handed to the store is not valid (bad decimal, unknown venue, field too long...).
    InvalidInput(String),
    /// A trade of a batch is not valid; the batch was not written.
    InvalidTrade(String),
    /// A file in the data directory is not a PumpWatch file or has a version we cannot read.
    Format {
        path: PathBuf,
        detail: String,
    },
    /// The store was closed.
    Closed,
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        let context = context.into();
        if is_disk_full(&source) {
            return Error::DiskFull { path: PathBuf::from(context), needed: 0, source };
        }
        Error::Io { context, source }
    }
}

pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Locked { dir, holder } => write!(
                f,
                "data directory {} is already open for writing by {holder}; stop that recorder, \
                 or open the directory read-only (Store.open_readonly) to read it while it runs",
                dir.display()
            ),
            Error::DiskFull { path, needed, source } => write!(
                f,
                "no space left to append ({source}) at {}{}; nothing already stored was touched and \
                 this batch was not written: free disk space (or lower retention) and append again",
                path.display(),
                if *needed > 0 { format!(" while reserving {needed} bytes") } else { String::new() }
            ),
            Error::InvalidInput(msg) => write!(f, "{msg}"),
            Error::InvalidTrade(msg) => write!(f, "{msg}; nothing of this batch was written"),
            Error::Format { path, detail } => write!(
                f,
                "{} is not a readable PumpWatch log file: {detail}; move it out of the data directory \
                 or run `pumpwatch verify` to see what is damaged",
                path.display()
            ),
            Error::Closed => write!(f, "the store is closed; open it again to append or query"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::DiskFull { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
