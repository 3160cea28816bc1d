//! `LogWriter`: the writer of a data directory, with the ingest path (frames to the log).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use pumpwatch_core::ingest::Ingestor;
use pumpwatch_core::log::reader;
use pumpwatch_core::log::{writer::SharedLog, LogConfig, MarkerQuery};
use pumpwatch_core::record::{self, Marker, MarkerKind, Quarantined};
use pumpwatch_core::ring::{self, RingReader as CoreRingReader, RingShared};
use pumpwatch_core::{Error, Venue};

use crate::convert::{
    damage_to_py, events_to_py, frame_bytes, frame_bytes_of, i64_col, marker_to_py, parse_venue_opt, quarantined_to_py,
    str_col, trade_query, Columns, RawBuf,
};
use crate::errors::{invalid, to_py};
use crate::reader::{run_query, run_tail};
use crate::ring::RingReader;
use crate::trade::Trade;

/// The writer of a data directory (the Python `pumpwatch.Store` wraps it).
#[pyclass(module = "pumpwatch._core")]
pub struct LogWriter {
    log: Mutex<Option<SharedLog>>,
    /// Locked before the log when both are needed.
    ingestor: Mutex<Ingestor>,
    ring: Arc<RingShared>,
    path: PathBuf,
}

impl LogWriter {
    fn with_core<T>(&self, f: impl FnOnce(&SharedLog) -> Result<T, Error>) -> Result<T, Error> {
        let g = self.log.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(log) => f(log),
            None => Err(Error::Closed),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&SharedLog) -> Result<T, Error>) -> PyResult<T> {
        self.with_core(f).map_err(to_py)
    }
}

#[pymethods]
impl LogWriter {
    #[new]
    // segment_max_bytes 1 GiB, ring_bytes 128 MiB: literals, so that Python sees the defaults.
    #[pyo3(signature = (path, fsync_interval = 1.0, segment_span_s = 3600.0, segment_max_bytes = 1_073_741_824, ring_bytes = 134_217_728, zstd_level = 3))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        fsync_interval: f64,
        segment_span_s: f64,
        segment_max_bytes: u64,
        ring_bytes: usize,
        zstd_level: i32,
    ) -> PyResult<LogWriter> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && (0.0..1e9).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(invalid(format!("{name} must be a number of seconds >= 0, not {v}")))
            }
        };
        let cfg = LogConfig {
            fsync_interval: secs("fsync_interval", fsync_interval)?,
            segment_span: secs("segment_span_s", segment_span_s)?,
            segment_max_bytes,
            zstd_level,
            ..LogConfig::default()
        };
        let p = path.clone();
        let log = py.detach(move || SharedLog::open(&p, cfg)).map_err(to_py)?;
        let (ring_writer, ring) = ring::ring(ring_bytes);
        log.with(|w| {
            w.attach_ring(ring_writer);
            Ok(())
        })
        .map_err(to_py)?;
        Ok(LogWriter { log: Mutex::new(Some(log)), ingestor: Mutex::new(Ingestor::default()), ring, path })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Appends a list of `Trade`; returns when the batch is in the log.
    fn append_trades(&self, py: Python<'_>, trades: &Bound<'_, PyList>) -> PyResult<usize> {
        let mut owned: Vec<record::Trade> = Vec::with_capacity(trades.len());
        for (i, item) in trades.iter().enumerate() {
            let t = item.cast::<Trade>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "item {i} of the batch is a {}, not a pumpwatch.Trade",
                    item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
            })?;
            owned.push(t.get().inner.clone());
        }
        py.detach(|| self.with(|log| log.with(|w| w.append_trades(owned.iter().map(|t| t.as_ref())))))
    }

    /// Appends a columnar batch given as Arrow buffers (see `pumpwatch.store`).
    #[pyo3(signature = (n, venue, symbol, trade_id, price, qty, side, ts_ns, recv_ns, flags = None))]
    #[allow(clippy::too_many_arguments)]
    fn append_columns(
        &self,
        py: Python<'_>,
        n: usize,
        venue: &Bound<'_, PyAny>,
        symbol: &Bound<'_, PyAny>,
        trade_id: &Bound<'_, PyAny>,
        price: &Bound<'_, PyAny>,
        qty: &Bound<'_, PyAny>,
        side: &Bound<'_, PyAny>,
        ts_ns: &Bound<'_, PyAny>,
        recv_ns: &Bound<'_, PyAny>,
        flags: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let cols = Columns {
            n,
            venue: str_col(venue, "venue")?,
            symbol: str_col(symbol, "symbol")?,
            trade_id: str_col(trade_id, "trade_id")?,
            price: str_col(price, "price")?,
            qty: str_col(qty, "qty")?,
            side: str_col(side, "side")?,
            ts_ns: i64_col(ts_ns, "ts_ns")?,
            recv_ns: i64_col(recv_ns, "recv_ns")?,
            flags: match flags {
                Some(f) => {
                    let (data, offset): (Bound<'_, PyAny>, usize) = f.extract()?;
                    Some((RawBuf::new(&data, "flags")?, offset))
                }
                None => None,
            },
        };
        py.detach(|| {
            // Rows are checked and encoded one by one; a bad row rejects the whole batch.
            let mut last = None;
            let rows = (0..cols.n).map(|i| cols.row(i, &mut last));
            self.with_core(|log| log.with(|w| w.append_rows(rows)))
        })
        .map_err(to_py)
    }

    // Defaults are literals so that Python sees them (`inspect.signature`, stubtest): an
    // expression such as `String::new()` shows as `...`.
    #[pyo3(signature = (kind, ts_ns, venue = None, symbol = "", from_ts_ns = 0, to_ts_ns = 0, from_id = "", to_id = "", detail = ""))]
    #[allow(clippy::too_many_arguments)]
    fn append_marker(
        &self,
        kind: &str,
        ts_ns: i64,
        venue: Option<&str>,
        symbol: &str,
        from_ts_ns: i64,
        to_ts_ns: i64,
        from_id: &str,
        to_id: &str,
        detail: &str,
    ) -> PyResult<()> {
        let m = Marker {
            kind: MarkerKind::parse(kind).map_err(to_py)?,
            venue: parse_venue_opt(venue)?,
            symbol: symbol.to_owned(),
            ts_ns,
            from_ts_ns,
            to_ts_ns,
            from_id: from_id.to_owned(),
            to_id: to_id.to_owned(),
            detail: detail.to_owned(),
        };
        self.with(|log| log.with(|w| w.append_marker(&m)))
    }

    fn append_quarantined(&self, venue: Option<&str>, recv_ns: i64, reason: &str, raw: &[u8]) -> PyResult<()> {
        let q = Quarantined::new(parse_venue_opt(venue)?, recv_ns, reason, raw);
        self.with(|log| log.with(|w| w.append_quarantined(&q)))
    }

    /// Commits everything appended so far to disk.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.with(|log| log.flush()))
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
        let views = py.detach(|| self.with(|log| log.with(|w| w.views())))?;
        run_query(py, views, q)
    }

    fn markers<'py>(&self, py: Python<'py>, start_ns: i64, end_ns: i64) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let views = py.detach(|| self.with(|log| log.with(|w| w.views())))?;
        let ms = py.detach(|| reader::query_markers(&views, &MarkerQuery { start_ns, end_ns }));
        ms.iter().map(|m| marker_to_py(py, m)).collect()
    }

    fn quarantined<'py>(&self, py: Python<'py>, start_ns: i64, end_ns: i64) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let views = py.detach(|| self.with(|log| log.with(|w| w.views())))?;
        let qs = py.detach(|| reader::query_quarantined(&views, start_ns, end_ns));
        qs.iter().map(|q| quarantined_to_py(py, q)).collect()
    }

    /// Records in log order from the cursor `(seq, offset)` (`(0, 0)`: the oldest the log holds),
    /// about `max_records` of them; see `pumpwatch.sink.LogTail`.
    #[pyo3(signature = (seq, offset, max_records = 65536))]
    fn tail<'py>(&self, py: Python<'py>, seq: u64, offset: u64, max_records: usize) -> PyResult<Bound<'py, PyDict>> {
        let views = py.detach(|| self.with(|log| log.with(|w| w.views())))?;
        run_tail(py, views, seq, offset, max_records)
    }

    #[pyo3(signature = (from_oldest = false))]
    fn ring_reader(&self, from_oldest: bool) -> RingReader {
        RingReader { inner: Mutex::new(CoreRingReader::new(self.ring.clone(), from_oldest)) }
    }

    /// What recovery found when the directory was opened.
    fn recovery_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.with(|log| log.with(|w| Ok(w.recovery.clone())))?;
        let d = PyDict::new(py);
        d.set_item("segments", r.segments)?;
        d.set_item("records_in_active", r.records_in_active)?;
        d.set_item("truncated", r.truncated.iter().map(|x| damage_to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?;
        d.set_item("damaged", r.damaged.iter().map(|x| damage_to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?;
        d.set_item("saved_to", r.saved_to)?;
        d.set_item("sealed", r.sealed)?;
        d.set_item("headers_repaired", r.headers_repaired)?;
        d.set_item("compression", r.compression)?;
        Ok(d)
    }

    /// Background compression of sealed segments so far: segments, plain_bytes,
    /// compressed_bytes, seconds, pending, errors, last_error.
    fn compression_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|log| log.with(|w| Ok(w.compression_stats())))?;
        let d = PyDict::new(py);
        d.set_item("segments", s.segments)?;
        d.set_item("plain_bytes", s.plain_bytes)?;
        d.set_item("compressed_bytes", s.compressed_bytes)?;
        d.set_item("seconds", s.seconds)?;
        d.set_item("pending", s.pending)?;
        d.set_item("errors", s.errors)?;
        d.set_item("last_error", s.last_error)?;
        Ok(d)
    }

    /// Waits (GIL released, the writer not held) until every sealed segment queued for
    /// compression is done; False when `timeout_s` passed first.
    fn wait_compressed(&self, py: Python<'_>, timeout_s: f64) -> PyResult<bool> {
        let c = self.with(|log| log.with(|w| Ok(w.compressor())))?;
        let timeout = Duration::from_secs_f64(if timeout_s.is_finite() { timeout_s.clamp(0.0, 1e9) } else { 1e9 });
        Ok(match c {
            Some(c) => py.detach(|| c.wait_idle(timeout)),
            None => true,
        })
    }

    /// Keeps appends in memory (the newest `limit_bytes`) while the disk refuses them, instead of
    /// raising; the disk is tried again every `retry_s`. 0 turns it off.
    fn set_hold(&self, limit_bytes: usize, retry_s: f64) -> PyResult<()> {
        let retry = Duration::from_secs_f64(if retry_s.is_finite() { retry_s.clamp(0.0, 3600.0) } else { 1.0 });
        self.with(|log| {
            log.with(|w| {
                w.set_hold(limit_bytes, retry);
                Ok(())
            })
        })
    }

    /// Disk trouble so far: full_since_ns, error_since_ns (0 when none), reason, held_records,
    /// held_bytes, unsynced_bytes, lost_trades_pending, lost_trades, lost_other, episodes,
    /// commit_failures, last_error, index_behind.
    fn disk_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|log| log.with(|w| Ok(w.disk_state())))?;
        let d = PyDict::new(py);
        d.set_item("full_since_ns", s.full_since_ns)?;
        d.set_item("error_since_ns", s.error_since_ns)?;
        d.set_item("reason", s.reason)?;
        d.set_item("held_records", s.held_records)?;
        d.set_item("held_bytes", s.held_bytes)?;
        d.set_item("unsynced_bytes", s.unsynced_bytes)?;
        d.set_item("lost_trades_pending", s.lost_trades_pending)?;
        d.set_item("lost_trades", s.lost_trades)?;
        d.set_item("lost_other", s.lost_other)?;
        d.set_item("episodes", s.episodes)?;
        d.set_item("commit_failures", s.commit_failures)?;
        d.set_item("last_error", s.last_error)?;
        d.set_item("index_behind", s.index_behind)?;
        Ok(d)
    }

    /// Active segment number and its published length in bytes.
    fn active_segment(&self) -> PyResult<(u64, usize)> {
        self.with(|log| log.with(|w| Ok(w.active_segment())))
    }

    /// Seals the active segment now and starts a new one.
    fn roll(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.with(|log| log.with(|w| w.roll())))
    }

    /// Commits, optionally seals, and releases the directory. Idempotent.
    #[pyo3(signature = (seal = false))]
    fn close(&self, py: Python<'_>, seal: bool) -> PyResult<()> {
        let taken = self.log.lock().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Some(mut log) => py.detach(move || log.close(seal)).map_err(to_py),
            None => Ok(()),
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Parses and stores one frame: (trades stored, events or None). A frame that does not
    /// parse is kept raw (quarantined) and reported as an event; it never raises.
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        venue: &str,
        frame: &Bound<'py, PyAny>,
        recv_ns: i64,
    ) -> PyResult<(usize, Option<Bound<'py, PyList>>)> {
        let venue = Venue::parse(venue).map_err(to_py)?;
        let bytes = frame_bytes(frame)?;
        let mut events = Vec::new();
        let mut ing = self.ingestor.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.with(|log| log.with(|w| ing.ingest_frame(w, venue, bytes, recv_ns, &mut events)))?;
        Ok((n, events_to_py(py, &events)?))
    }

    /// The batch form of `ingest`: many frames of one venue, one append, the GIL released.
    /// `recv_ns` is one time for all frames or one per frame.
    fn ingest_many<'py>(
        &self,
        py: Python<'py>,
        venue: &str,
        frames: &Bound<'py, PyList>,
        recv_ns: &Bound<'py, PyAny>,
    ) -> PyResult<(usize, Option<Bound<'py, PyList>>)> {
        let venue = Venue::parse(venue).map_err(to_py)?;
        // A tuple holds every frame for the call whatever else happens to the list while the GIL
        // is released, and is made in one C call (no reference counting per frame from here).
        let held = frames.to_tuple();
        let slices = held.iter_borrowed().map(frame_bytes_of).collect::<PyResult<Vec<&[u8]>>>()?;
        let times: Vec<i64> = match recv_ns.extract::<i64>() {
            Ok(t) => vec![t; slices.len()],
            Err(_) => recv_ns.extract::<Vec<i64>>()?,
        };
        if times.len() != slices.len() {
            return Err(invalid(format!("{} frames but {} receive times", slices.len(), times.len())));
        }
        let mut events = Vec::new();
        let n = py
            .detach(|| {
                let mut ing = self.ingestor.lock().unwrap_or_else(|p| p.into_inner());
                self.with_core(|log| {
                    log.with(|w| {
                        ing.ingest_frames(w, venue, slices.iter().copied().zip(times.iter().copied()), &mut events)
                    })
                })
            })
            .map_err(to_py)?;
        Ok((n, events_to_py(py, &events)?))
    }

    /// Stores trades from a REST backfill or a snapshot through the same duplicate and
    /// sequence checks as frames.
    fn ingest_trades<'py>(
        &self,
        py: Python<'py>,
        trades: &Bound<'py, PyList>,
    ) -> PyResult<(usize, Option<Bound<'py, PyList>>)> {
        let mut owned: Vec<record::Trade> = Vec::with_capacity(trades.len());
        for (i, item) in trades.iter().enumerate() {
            let t = item
                .cast::<Trade>()
                .map_err(|_| PyTypeError::new_err(format!("item {i} of the batch is not a pumpwatch.Trade")))?;
            owned.push(t.get().inner.clone());
        }
        let mut events = Vec::new();
        let n = py
            .detach(|| {
                let mut ing = self.ingestor.lock().unwrap_or_else(|p| p.into_inner());
                self.with_core(|log| log.with(|w| ing.ingest_trades(w, owned.iter().map(|t| t.as_ref()), &mut events)))
            })
            .map_err(to_py)?;
        Ok((n, events_to_py(py, &events)?))
    }

    /// Scales of a Phemex spot symbol (from the product list): price (8) and quantity.
    fn set_phemex_spot_scales(&self, symbol: &str, price_scale: u8, qty_scale: u8) {
        self.ingestor.lock().unwrap_or_else(|p| p.into_inner()).ctx.set_phemex_spot_scales(
            symbol,
            price_scale,
            qty_scale,
        );
    }

    /// Counters of the ingest path.
    fn ingest_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.ingestor.lock().unwrap_or_else(|p| p.into_inner()).stats.clone();
        let d = PyDict::new(py);
        d.set_item("frames", s.frames)?;
        d.set_item("trades", s.trades)?;
        d.set_item("duplicates", s.duplicates)?;
        d.set_item("quarantined", s.quarantined)?;
        d.set_item("gaps", s.gaps)?;
        d.set_item("gaps_filled", s.gaps_filled)?;
        Ok(d)
    }

    /// Id ranges of `symbol` still missing (inclusive), oldest first.
    fn open_gaps(&self, venue: &str, symbol: &str) -> PyResult<Vec<(u64, u64)>> {
        let venue = Venue::parse(venue).map_err(to_py)?;
        Ok(self.ingestor.lock().unwrap_or_else(|p| p.into_inner()).open_gaps(venue, symbol))
    }

    /// Continues a symbol's id sequence from the log after a restart.
    fn seed_last_id(&self, venue: &str, symbol: &str, last_id: u64, last_ts_ns: i64) -> PyResult<()> {
        let venue = Venue::parse(venue).map_err(to_py)?;
        self.ingestor.lock().unwrap_or_else(|p| p.into_inner()).seed_last_id(venue, symbol, last_id, last_ts_ns);
        Ok(())
    }

    /// Reopens an unfilled hole of a sequenced symbol (ids `first..=last`) after a restart.
    fn seed_open_gap(&self, venue: &str, symbol: &str, first: u64, last: u64) -> PyResult<()> {
        let venue = Venue::parse(venue).map_err(to_py)?;
        self.ingestor.lock().unwrap_or_else(|p| p.into_inner()).seed_open_gap(venue, symbol, first, last);
        Ok(())
    }

    /// Remembers ids the log already holds for a symbol without an id sequence (after a restart).
    fn seed_recent_ids(&self, venue: &str, symbol: &str, ids: Vec<String>) -> PyResult<()> {
        let venue = Venue::parse(venue).map_err(to_py)?;
        self.ingestor.lock().unwrap_or_else(|p| p.into_inner()).seed_recent_ids(
            venue,
            symbol,
            ids.iter().map(|s| s.as_bytes()),
        );
        Ok(())
    }
}
