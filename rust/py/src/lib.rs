//! `pumpwatch._core`: thin PyO3 bindings over `pumpwatch-core`. Conversions and error mapping
//! only; long work runs with the GIL released (`py.detach`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use pumpwatch_core::log::reader::{self, QuarantinedFrame, SegmentView, StrColumn};
use pumpwatch_core::log::tail::{self as log_tail, Cursor, TailBatch};
use pumpwatch_core::log::{self as plog, writer::SharedLog, LogConfig, MarkerQuery, TradeColumns, TradeQuery};
use pumpwatch_core::record::{self, Marker, MarkerKind, Quarantined, Side, TradeRef};
use pumpwatch_core::ring::{self, RingReader as CoreRingReader, RingShared, RingWriter};
use pumpwatch_core::{Error, Venue};

fn to_py(e: Error) -> PyErr {
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

fn invalid(msg: String) -> PyErr {
    to_py(Error::InvalidInput(msg))
}

/// Text of an exact decimal given as `str`, `int` or `decimal.Decimal`; floats are refused
/// because they have already lost the venue's digits.
fn decimal_text(field: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(s.to_str()?.to_owned());
    }
    if v.is_instance_of::<pyo3::types::PyBool>() || v.is_instance_of::<pyo3::types::PyFloat>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be exact: pass the venue's text (e.g. \"83680.00\") or a decimal.Decimal, not {}",
            v.get_type().name()?
        )));
    }
    if v.is_instance_of::<pyo3::types::PyInt>() {
        return Ok(v.str()?.to_str()?.to_owned());
    }
    if v.get_type().name()?.to_str()? == "Decimal" {
        // `format(d, "f")` writes no exponent: Decimal("1.117E-7") -> "0.0000001117".
        return v.call_method1("__format__", ("f",))?.extract::<String>();
    }
    Err(PyTypeError::new_err(format!("{field} must be a str, int or decimal.Decimal, not {}", v.get_type().name()?)))
}

/// One trade as the venue reported it: exact decimal text, taker side, times in ns UTC.
#[pyclass(frozen, module = "pumpwatch._core", eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Trade {
    inner: record::Trade,
}

#[pymethods]
impl Trade {
    #[new]
    #[pyo3(signature = (venue, symbol, trade_id, price, qty, side, ts_ns, recv_ns, flags = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        venue: &str,
        symbol: &str,
        trade_id: &Bound<'_, PyAny>,
        price: &Bound<'_, PyAny>,
        qty: &Bound<'_, PyAny>,
        side: &str,
        ts_ns: i64,
        recv_ns: i64,
        flags: u16,
    ) -> PyResult<Trade> {
        let trade_id = if trade_id.is_instance_of::<pyo3::types::PyInt>() {
            trade_id.str()?.to_str()?.to_owned()
        } else {
            trade_id.extract::<String>().map_err(|_| PyTypeError::new_err("trade_id must be a str or an int"))?
        };
        let price = decimal_text("price", price)?;
        let qty = decimal_text("qty", qty)?;
        let inner =
            record::Trade::new(venue, symbol, &trade_id, &price, &qty, side, ts_ns, recv_ns, flags).map_err(to_py)?;
        Ok(Trade { inner })
    }

    #[getter]
    fn venue(&self) -> &'static str {
        self.inner.venue.id()
    }
    #[getter]
    fn symbol(&self) -> &str {
        &self.inner.symbol
    }
    #[getter]
    fn trade_id(&self) -> &str {
        &self.inner.trade_id
    }
    /// The id as an integer when it is a canonical decimal id, else None.
    #[getter]
    fn trade_id_num(&self) -> Option<u64> {
        self.inner.as_ref().trade_id_num()
    }
    /// Exact decimal text as the venue sent it; `decimal.Decimal(trade.price)` for arithmetic.
    #[getter]
    fn price(&self) -> &str {
        &self.inner.price
    }
    #[getter]
    fn qty(&self) -> &str {
        &self.inner.qty
    }
    #[getter]
    fn side(&self) -> &'static str {
        self.inner.side.as_str()
    }
    #[getter]
    fn ts_ns(&self) -> i64 {
        self.inner.ts_ns
    }
    #[getter]
    fn recv_ns(&self) -> i64 {
        self.inner.recv_ns
    }
    #[getter]
    fn flags(&self) -> u16 {
        self.inner.flags
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("venue", self.venue())?;
        d.set_item("symbol", &self.inner.symbol)?;
        d.set_item("trade_id", &self.inner.trade_id)?;
        d.set_item("price", &self.inner.price)?;
        d.set_item("qty", &self.inner.qty)?;
        d.set_item("side", self.side())?;
        d.set_item("ts_ns", self.inner.ts_ns)?;
        d.set_item("recv_ns", self.inner.recv_ns)?;
        d.set_item("flags", self.inner.flags)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let t = &self.inner;
        format!(
            "Trade(venue={:?}, symbol={:?}, trade_id={:?}, price={:?}, qty={:?}, side={:?}, ts_ns={}, recv_ns={}, flags={})",
            t.venue.id(),
            t.symbol,
            t.trade_id,
            t.price,
            t.qty,
            t.side.as_str(),
            t.ts_ns,
            t.recv_ns,
            t.flags
        )
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let t = &self.inner;
        let cls = py.get_type::<Trade>().into_any();
        let args =
            (t.venue.id(), &t.symbol, &t.trade_id, &t.price, &t.qty, t.side.as_str(), t.ts_ns, t.recv_ns, t.flags)
                .into_pyobject(py)?
                .into_any();
        Ok((cls, args))
    }
}

/// Raw bytes of a contiguous buffer (a pyarrow Buffer, bytes, memoryview).
enum AnyBuf {
    // bytes export format "B", pyarrow buffers "b": both are plain bytes here.
    U8(#[allow(dead_code)] PyBuffer<u8>),
    I8(#[allow(dead_code)] PyBuffer<i8>),
}

struct RawBuf {
    _buf: AnyBuf,
    ptr: usize,
    len: usize,
}

impl RawBuf {
    fn new(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<RawBuf> {
        let (ptr, len, contiguous, buf) = match PyBuffer::<u8>::get(obj) {
            Ok(b) => (b.buf_ptr() as usize, b.len_bytes(), b.is_c_contiguous(), AnyBuf::U8(b)),
            Err(_) => {
                let b = PyBuffer::<i8>::get(obj).map_err(|e| PyTypeError::new_err(format!("{what}: {e}")))?;
                (b.buf_ptr() as usize, b.len_bytes(), b.is_c_contiguous(), AnyBuf::I8(b))
            }
        };
        if !contiguous {
            return Err(PyValueError::new_err(format!("{what}: buffer is not contiguous")));
        }
        Ok(RawBuf { _buf: buf, ptr, len })
    }
    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the PyBuffer keeps the exporter's memory alive and unmoved while we hold it.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

/// A string column as Arrow lays it out: int32 offsets (from `offset`) into UTF-8 data.
struct StrCol {
    offsets: RawBuf,
    data: RawBuf,
    offset: usize,
    name: &'static str,
}

impl StrCol {
    fn get(&self, i: usize) -> Result<&[u8], String> {
        let o = self.offsets.bytes();
        let at = (self.offset + i) * 4;
        let read = |k: usize| -> Option<usize> {
            let b = o.get(k..k + 4)?;
            usize::try_from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
        };
        let (s, e) = match (read(at), read(at + 4)) {
            (Some(s), Some(e)) if s <= e => (s, e),
            _ => return Err(format!("column {} has offsets outside its buffer", self.name)),
        };
        self.data.bytes().get(s..e).ok_or_else(|| format!("column {} has offsets outside its data", self.name))
    }
}

struct I64Col {
    data: RawBuf,
    offset: usize,
    name: &'static str,
}

impl I64Col {
    fn get(&self, i: usize) -> Result<i64, String> {
        let at = (self.offset + i) * 8;
        let b = self
            .data
            .bytes()
            .get(at..at + 8)
            .ok_or_else(|| format!("column {} is shorter than the table", self.name))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }
}

struct Columns {
    n: usize,
    venue: StrCol,
    symbol: StrCol,
    trade_id: StrCol,
    price: StrCol,
    qty: StrCol,
    side: StrCol,
    ts_ns: I64Col,
    recv_ns: I64Col,
    flags: Option<(RawBuf, usize)>,
}

impl Columns {
    fn venue_at(&self, i: usize, last: &mut Option<(usize, usize, Venue)>) -> Result<Venue, String> {
        let v = self.venue.get(i)?;
        // Tables are usually long runs of one venue: reuse the last lookup.
        if let Some((p, l, venue)) = *last {
            if l == v.len() && self.venue.data.bytes().get(p..p + l) == Some(v) {
                return Ok(venue);
            }
        }
        let venue = Venue::from_id_bytes(v).ok_or_else(|| format!("unknown venue {:?}", String::from_utf8_lossy(v)))?;
        let p = v.as_ptr() as usize - self.venue.data.ptr;
        *last = Some((p, v.len(), venue));
        Ok(venue)
    }

    fn row(&self, i: usize, last_venue: &mut Option<(usize, usize, Venue)>) -> Result<TradeRef<'_>, String> {
        let side = match self.side.get(i)? {
            b"buy" => Side::Buy,
            b"sell" => Side::Sell,
            other => Side::parse(other).map_err(|e| e.to_string())?,
        };
        let flags = match &self.flags {
            Some((buf, off)) => {
                let at = (off + i) * 2;
                let b = buf.bytes().get(at..at + 2).ok_or("column flags is shorter than the table")?;
                u16::from_le_bytes([b[0], b[1]])
            }
            None => 0,
        };
        Ok(TradeRef {
            venue: self.venue_at(i, last_venue)?,
            symbol: self.symbol.get(i)?,
            trade_id: self.trade_id.get(i)?,
            price: self.price.get(i)?,
            qty: self.qty.get(i)?,
            side,
            ts_ns: self.ts_ns.get(i)?,
            recv_ns: self.recv_ns.get(i)?,
            flags,
        })
    }
}

fn str_col(spec: &Bound<'_, PyAny>, name: &'static str) -> PyResult<StrCol> {
    let (offsets, data, offset): (Bound<'_, PyAny>, Bound<'_, PyAny>, usize) = spec.extract()?;
    Ok(StrCol { offsets: RawBuf::new(&offsets, name)?, data: RawBuf::new(&data, name)?, offset, name })
}

fn i64_col(spec: &Bound<'_, PyAny>, name: &'static str) -> PyResult<I64Col> {
    let (data, offset): (Bound<'_, PyAny>, usize) = spec.extract()?;
    Ok(I64Col { data: RawBuf::new(&data, name)?, offset, name })
}

fn str_column_to_py<'py>(py: Python<'py>, c: &StrColumn) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
    // SAFETY: i32 has no padding; the bytes are the little-endian offsets Arrow expects.
    let offs = unsafe { std::slice::from_raw_parts(c.offsets.as_ptr() as *const u8, c.offsets.len() * 4) };
    (PyBytes::new(py, offs), PyBytes::new(py, &c.data))
}

fn columns_to_py<'py>(py: Python<'py>, c: &TradeColumns) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("n", c.len)?;
    for (name, col) in [
        ("venue", &c.venue),
        ("symbol", &c.symbol),
        ("trade_id", &c.trade_id),
        ("price", &c.price),
        ("qty", &c.qty),
        ("side", &c.side),
    ] {
        d.set_item(name, str_column_to_py(py, col))?;
    }
    let as_bytes = |v: &[i64]| unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 8) };
    d.set_item("ts_ns", PyBytes::new(py, as_bytes(&c.ts_ns)))?;
    d.set_item("recv_ns", PyBytes::new(py, as_bytes(&c.recv_ns)))?;
    let flags = unsafe { std::slice::from_raw_parts(c.flags.as_ptr() as *const u8, c.flags.len() * 2) };
    d.set_item("flags", PyBytes::new(py, flags))?;
    Ok(d)
}

fn marker_to_py<'py>(py: Python<'py>, m: &Marker) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", m.kind.as_str())?;
    d.set_item("venue", m.venue.map(|v| v.id()))?;
    d.set_item("symbol", &m.symbol)?;
    d.set_item("ts_ns", m.ts_ns)?;
    d.set_item("from_ts_ns", m.from_ts_ns)?;
    d.set_item("to_ts_ns", m.to_ts_ns)?;
    d.set_item("from_id", &m.from_id)?;
    d.set_item("to_id", &m.to_id)?;
    d.set_item("detail", &m.detail)?;
    Ok(d)
}

fn quarantined_to_py<'py>(py: Python<'py>, q: &QuarantinedFrame) -> PyResult<Bound<'py, PyAny>> {
    Ok((q.venue.map(|v| v.id()), q.recv_ns, &q.reason, PyBytes::new(py, &q.raw)).into_pyobject(py)?.into_any())
}

fn parse_venue_opt(v: Option<&str>) -> PyResult<Option<Venue>> {
    v.map(|s| Venue::parse(s).map_err(to_py)).transpose()
}

fn trade_query(
    start_ns: i64,
    end_ns: i64,
    venues: Option<Vec<String>>,
    symbols: Option<Vec<String>>,
    include_non_trades: bool,
) -> PyResult<TradeQuery> {
    let venues = match venues {
        Some(vs) => {
            let parsed = vs.iter().map(|v| Venue::parse(v)).collect::<Result<Vec<_>, _>>().map_err(to_py)?;
            Some(TradeQuery::venue_mask(&parsed))
        }
        None => None,
    };
    Ok(TradeQuery {
        start_ns,
        end_ns,
        venues,
        symbols: symbols.map(|s| s.into_iter().map(String::into_bytes).collect()),
        include_non_trades,
    })
}

fn run_query<'py>(py: Python<'py>, views: Vec<SegmentView>, q: TradeQuery) -> PyResult<Bound<'py, PyDict>> {
    let cols = py.detach(move || reader::query_trades(&views, &q)).map_err(to_py)?;
    columns_to_py(py, &cols)
}

/// `tail` over `views` with the GIL released, as Arrow-style buffers (see `pumpwatch.sink`).
fn run_tail<'py>(
    py: Python<'py>,
    views: Vec<SegmentView>,
    seq: u64,
    offset: u64,
    max_records: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let b = py.detach(move || log_tail::tail(&views, Cursor::new(seq, offset), max_records)).map_err(to_py)?;
    tail_to_py(py, &b)
}

fn tail_to_py<'py>(py: Python<'py>, b: &TailBatch) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("trades", columns_to_py(py, &b.trades)?)?;
    let as_bytes = |v: &[i64]| unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 8) };
    d.set_item("trade_seq", PyBytes::new(py, as_bytes(&b.trade_seq)))?;
    d.set_item("trade_offset", PyBytes::new(py, as_bytes(&b.trade_offset)))?;
    let markers = PyList::empty(py);
    for (at, m) in &b.markers {
        let md = marker_to_py(py, m)?;
        md.set_item("seq", at.seq)?;
        md.set_item("offset", at.offset)?;
        markers.append(md)?;
    }
    d.set_item("markers", markers)?;
    d.set_item("quarantined", b.quarantined)?;
    d.set_item("records", b.records)?;
    d.set_item("next", (b.next.seq, b.next.offset))?;
    d.set_item("end", (b.end.seq, b.end.offset))?;
    d.set_item("caught_up", b.caught_up)?;
    let skipped = PyList::empty(py);
    for s in &b.skipped {
        let sd = PyDict::new(py);
        sd.set_item("from", (s.from.seq, s.from.offset))?;
        sd.set_item("resumed_at", (s.resumed_at.seq, s.resumed_at.offset))?;
        sd.set_item("segments", s.segments)?;
        skipped.append(sd)?;
    }
    d.set_item("skipped", skipped)?;
    d.set_item("damaged", b.damaged.iter().map(|x| damage_to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?;
    d.set_item("bytes_behind", b.bytes_behind)?;
    d.set_item("records_behind", b.records_behind)?;
    Ok(d)
}

fn decode_payloads(py: Python<'_>, data: &[u8], lens: &[usize]) -> PyResult<Vec<Py<Trade>>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &l in lens {
        if let Ok(t) = record::decode_trade_owned(&data[at..at + l]) {
            out.push(Py::new(py, Trade { inner: t })?);
        }
        at += l;
    }
    Ok(out)
}

/// A reader of the live trade ring.
#[pyclass(module = "pumpwatch._core")]
pub struct RingReader {
    inner: Mutex<CoreRingReader>,
}

#[pymethods]
impl RingReader {
    /// Up to `max_trades` trades not read yet, and how many were overwritten before this
    /// reader got to them (since the last poll).
    #[pyo3(signature = (max_trades = 65536))]
    fn poll(&self, py: Python<'_>, max_trades: usize) -> PyResult<(Vec<Py<Trade>>, u64)> {
        let (data, lens, missed) = {
            let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let (mut data, mut lens) = (Vec::new(), Vec::new());
            let (_, missed) = r.poll(max_trades, &mut data, &mut lens);
            (data, lens, missed)
        };
        Ok((decode_payloads(py, &data, &lens)?, missed))
    }

    /// What the trades not read yet say of each symbol's live flow, without a Python object per
    /// trade: `([(venue, symbol, sightings, last receive ns)], missed)`, a sighting being the
    /// trades received at one instant (one frame). Backfilled, snapshot and non-trade records are
    /// not counted. For watchers of silent subscriptions.
    #[pyo3(signature = (max_trades = 1 << 20))]
    fn poll_activity(&self, py: Python<'_>, max_trades: usize) -> (Vec<(&'static str, String, u64, i64)>, u64) {
        py.detach(|| {
            let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let (mut data, mut lens) = (Vec::new(), Vec::new());
            let (_, missed) = r.poll(max_trades, &mut data, &mut lens);
            let rows = ring::live_activity(&data, &lens)
                .into_iter()
                .map(|a| (a.venue.id(), String::from_utf8_lossy(&a.symbol).into_owned(), a.sightings, a.last_recv_ns))
                .collect();
            (rows, missed)
        })
    }

    /// Trades missed since this reader was created.
    #[getter]
    fn missed(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).missed
    }
}

/// A standalone ring of recent trades (the store has its own; see `Store.ring_reader`).
#[pyclass(module = "pumpwatch._core")]
pub struct TradeRing {
    writer: Mutex<RingWriter>,
    shared: Arc<RingShared>,
}

#[pymethods]
impl TradeRing {
    #[new]
    #[pyo3(signature = (capacity_bytes = 64 << 20))]
    fn new(capacity_bytes: usize) -> TradeRing {
        let (writer, shared) = ring::ring(capacity_bytes);
        TradeRing { writer: Mutex::new(writer), shared }
    }

    fn push(&self, trades: Vec<PyRef<'_, Trade>>) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = Vec::new();
        for t in trades {
            buf.clear();
            t.inner.as_ref().encode_payload(&mut buf);
            w.push(&buf);
        }
    }

    #[pyo3(signature = (from_oldest = false))]
    fn reader(&self, from_oldest: bool) -> RingReader {
        RingReader { inner: Mutex::new(CoreRingReader::new(self.shared.clone(), from_oldest)) }
    }
}

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
    #[pyo3(signature = (path, fsync_interval = 1.0, segment_span_s = 3600.0, segment_max_bytes = 1 << 30, ring_bytes = 128 << 20, zstd_level = 3))]
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

    #[pyo3(signature = (kind, ts_ns, venue = None, symbol = String::new(), from_ts_ns = 0, to_ts_ns = 0, from_id = String::new(), to_id = String::new(), detail = String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn append_marker(
        &self,
        kind: &str,
        ts_ns: i64,
        venue: Option<&str>,
        symbol: String,
        from_ts_ns: i64,
        to_ts_ns: i64,
        from_id: String,
        to_id: String,
        detail: String,
    ) -> PyResult<()> {
        let m = Marker {
            kind: MarkerKind::parse(kind).map_err(to_py)?,
            venue: parse_venue_opt(venue)?,
            symbol,
            ts_ns,
            from_ts_ns,
            to_ts_ns,
            from_id,
            to_id,
            detail,
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

fn damage_to_py<'py>(py: Python<'py>, d: &plog::DamageReport) -> PyResult<Bound<'py, PyDict>> {
    let o = PyDict::new(py);
    o.set_item("segment", &d.segment)?;
    o.set_item("offset", d.offset)?;
    o.set_item("length", d.length)?;
    o.set_item("reason", &d.reason)?;
    Ok(o)
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

/// Walks every record of every segment of `path` and reports what it found.
#[pyfunction]
fn verify<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
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

/// Parses one frame with the Rust parser, storing nothing: `(trades, sequences, control, rejected)`,
/// where `sequences[i]` is the id range trade `i` covers on venues with an id sequence and
/// `rejected` says why each trade left out of a multi-trade frame did not parse.
/// What `parse_frame` returns: the trades, the span of the venue's id sequence each one covers
/// (first, last; None where the venue has no sequence), the control message (kind, detail) if the
/// frame was one, and the reasons of the trades left out.
type ParsedForPython = (Vec<Trade>, Vec<Option<(u64, u64)>>, Option<(&'static str, String)>, Vec<String>);

#[pyfunction]
#[pyo3(signature = (venue, frame, recv_ns = 0, phemex_spot_scales = None))]
fn parse_frame<'py>(
    py: Python<'py>,
    venue: &str,
    frame: &Bound<'py, PyAny>,
    recv_ns: i64,
    phemex_spot_scales: Option<std::collections::HashMap<String, (u8, u8)>>,
) -> PyResult<ParsedForPython> {
    let venue = Venue::parse(venue).map_err(to_py)?;
    let bytes = frame_bytes(frame)?;
    let mut ctx = ParseContext::new();
    for (symbol, (p, q)) in phemex_spot_scales.unwrap_or_default() {
        ctx.set_phemex_spot_scales(&symbol, p, q);
    }
    let mut out = ParsedFrame::new();
    if let Err(e) = vparse::parse_frame(venue, bytes, &ctx, &mut out) {
        let cls = py.import("pumpwatch.errors")?.getattr("FrameError")?;
        return Err(PyErr::from_value(cls.call1((e.to_string(),))?));
    }
    let trades = (0..out.trades.len()).map(|i| Trade { inner: out.trade(i, venue, recv_ns).to_owned() }).collect();
    let seqs = out.trades.iter().map(|t| t.seq_first.zip(t.seq_last)).collect();
    let control = out.control.as_ref().map(|c| (c.kind(), c.detail().to_owned()));
    Ok((trades, seqs, control, std::mem::take(&mut out.rejected)))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Trade>()?;
    m.add_class::<LogWriter>()?;
    m.add_class::<LogReader>()?;
    m.add_class::<TradeRing>()?;
    m.add_class::<RingReader>()?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(parse_frame, m)?)?;
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

// ---- ingest and parse -------------------------------------------------------------------

use pumpwatch_core::ingest::{IngestEvent, Ingestor};
use pumpwatch_core::parse::{self as vparse, ParseContext, ParsedFrame};

/// Frame bytes from `bytes` or `str` (websockets hands text frames as `str`), borrowed for as
/// long as the object is: exact `bytes` take one C call (this runs once per frame, millions of
/// times a second, and each call through the stable ABI counts).
fn frame_bytes_of<'a>(obj: Borrowed<'a, '_, PyAny>) -> PyResult<&'a [u8]> {
    let p = obj.as_ptr();
    // SAFETY: `p` is a live object for 'a (borrowed); its type pointer is read only.
    let exact_bytes = unsafe { pyo3::ffi::Py_TYPE(p) == std::ptr::addr_of_mut!(pyo3::ffi::PyBytes_Type) };
    if exact_bytes || obj.is_instance_of::<PyBytes>() {
        let mut data: *mut std::os::raw::c_char = std::ptr::null_mut();
        let mut len: pyo3::ffi::Py_ssize_t = 0;
        // SAFETY: `p` is a bytes object, whose buffer stays unchanged for its whole life.
        if unsafe { pyo3::ffi::PyBytes_AsStringAndSize(p, &mut data, &mut len) } != 0 || data.is_null() {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: as above; `len` is the buffer's length.
        return Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len.max(0) as usize) });
    }
    if obj.is_instance_of::<PyString>() {
        let mut len: pyo3::ffi::Py_ssize_t = 0;
        // SAFETY: `p` is a str; the UTF-8 buffer lives as long as the object.
        let data = unsafe { pyo3::ffi::PyUnicode_AsUTF8AndSize(p, &mut len) };
        if data.is_null() {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: as above.
        return Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len.max(0) as usize) });
    }
    Err(PyTypeError::new_err(format!("a frame must be bytes or str, not {}", obj.get_type().name()?)))
}

fn frame_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    frame_bytes_of(obj.as_borrowed())
}

fn event_to_py<'py>(py: Python<'py>, e: &IngestEvent) -> PyResult<Bound<'py, PyAny>> {
    Ok(match e {
        IngestEvent::Gap { venue, symbol, first_missing, last_missing, from_ts_ns, to_ts_ns } => {
            ("gap", venue.id(), symbol, *first_missing, *last_missing, *from_ts_ns, *to_ts_ns)
                .into_pyobject(py)?
                .into_any()
        }
        IngestEvent::GapFilled { venue, symbol, first_missing, last_missing } => {
            ("gap_filled", venue.id(), symbol, *first_missing, *last_missing).into_pyobject(py)?.into_any()
        }
        IngestEvent::Control { venue, kind, detail } => {
            ("control", venue.id(), *kind, detail).into_pyobject(py)?.into_any()
        }
        IngestEvent::Quarantined { venue, reason } => ("quarantined", venue.id(), reason).into_pyobject(py)?.into_any(),
    })
}

fn events_to_py<'py>(py: Python<'py>, events: &[IngestEvent]) -> PyResult<Option<Bound<'py, PyList>>> {
    if events.is_empty() {
        return Ok(None);
    }
    let l = PyList::empty(py);
    for e in events {
        l.append(event_to_py(py, e)?)?;
    }
    Ok(Some(l))
}
