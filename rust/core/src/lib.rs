//! PumpWatch core: everything that touches a trade between the socket and the disk.
//!
//! Pure Rust, no Python: the bindings in `rust/py` are a thin layer over this crate, and
//! `cargo test` runs without libpython.

pub mod decimal;
pub mod error;
pub mod ingest;
pub mod log;
pub mod parse;
pub mod record;
pub mod ring;
pub mod venue;

pub use error::{Error, Result};
pub use record::{Marker, MarkerKind, Quarantined, Record, Side, Trade};
pub use venue::Venue;
