//! The segment log: an append-only, crash-safe, memory-mapped record log (docs/FORMAT.md).
//!
//! One writer per data directory ([`LogWriter`]); any number of readers in other processes
//! ([`LogReader`]) read up to what the writer has published. Recovery ([`scan::walk`]) is small,
//! separate and shared by the writer, the readers and `verify`.

pub mod compress;
pub mod fault;
pub mod hold;
pub mod index;
pub mod reader;
pub mod scan;
pub mod segment;
pub mod tail;
pub mod writer;

pub use compress::CompressionStats;
pub use reader::{LogReader, MarkerQuery, TradeColumns, TradeQuery, VerifyProgress, VerifyReport};
pub use segment::FORMAT_VERSION;
pub use writer::{LogConfig, LogWriter, RecoveryReport, SyncJob};

/// Where in the log something was found damaged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamageReport {
    pub segment: String,
    pub offset: u64,
    pub length: u64,
    pub reason: String,
}

pub fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
