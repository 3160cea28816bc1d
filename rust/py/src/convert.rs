//! Conversions between Python objects and the core's types: exact decimal text, Arrow column
//! buffers in and out, frame bytes, and the dicts and tuples the Python package reads.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use pumpwatch_core::ingest::IngestEvent;
use pumpwatch_core::log::reader::{QuarantinedFrame, StrColumn};
use pumpwatch_core::log::tail::TailBatch;
use pumpwatch_core::log::{self as plog, TradeColumns, TradeQuery};
use pumpwatch_core::record::{Marker, Side, TradeRef};
use pumpwatch_core::Venue;

use crate::errors::to_py;

/// Text of an exact decimal given as `str`, `int` or `decimal.Decimal`; floats are refused
/// because they have already lost the venue's digits.
pub(crate) fn decimal_text(field: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
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

/// Raw bytes of a contiguous buffer (a pyarrow Buffer, bytes, memoryview).
pub(crate) enum AnyBuf {
    // bytes export format "B", pyarrow buffers "b": both are plain bytes here.
    U8(#[allow(dead_code)] PyBuffer<u8>),
    I8(#[allow(dead_code)] PyBuffer<i8>),
}

pub(crate) struct RawBuf {
    _buf: AnyBuf,
    ptr: usize,
    len: usize,
}

impl RawBuf {
    pub(crate) fn new(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<RawBuf> {
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
pub(crate) struct StrCol {
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

pub(crate) struct I64Col {
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

pub(crate) struct Columns {
    pub(crate) n: usize,
    pub(crate) venue: StrCol,
    pub(crate) symbol: StrCol,
    pub(crate) trade_id: StrCol,
    pub(crate) price: StrCol,
    pub(crate) qty: StrCol,
    pub(crate) side: StrCol,
    pub(crate) ts_ns: I64Col,
    pub(crate) recv_ns: I64Col,
    pub(crate) flags: Option<(RawBuf, usize)>,
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

    pub(crate) fn row(&self, i: usize, last_venue: &mut Option<(usize, usize, Venue)>) -> Result<TradeRef<'_>, String> {
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

pub(crate) fn str_col(spec: &Bound<'_, PyAny>, name: &'static str) -> PyResult<StrCol> {
    let (offsets, data, offset): (Bound<'_, PyAny>, Bound<'_, PyAny>, usize) = spec.extract()?;
    Ok(StrCol { offsets: RawBuf::new(&offsets, name)?, data: RawBuf::new(&data, name)?, offset, name })
}

pub(crate) fn i64_col(spec: &Bound<'_, PyAny>, name: &'static str) -> PyResult<I64Col> {
    let (data, offset): (Bound<'_, PyAny>, usize) = spec.extract()?;
    Ok(I64Col { data: RawBuf::new(&data, name)?, offset, name })
}

pub(crate) fn str_column_to_py<'py>(py: Python<'py>, c: &StrColumn) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
    // SAFETY: i32 has no padding; the bytes are the little-endian offsets Arrow expects.
    let offs = unsafe { std::slice::from_raw_parts(c.offsets.as_ptr() as *const u8, c.offsets.len() * 4) };
    (PyBytes::new(py, offs), PyBytes::new(py, &c.data))
}

pub(crate) fn columns_to_py<'py>(py: Python<'py>, c: &TradeColumns) -> PyResult<Bound<'py, PyDict>> {
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

pub(crate) fn marker_to_py<'py>(py: Python<'py>, m: &Marker) -> PyResult<Bound<'py, PyDict>> {
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

pub(crate) fn quarantined_to_py<'py>(py: Python<'py>, q: &QuarantinedFrame) -> PyResult<Bound<'py, PyAny>> {
    Ok((q.venue.map(|v| v.id()), q.recv_ns, &q.reason, PyBytes::new(py, &q.raw)).into_pyobject(py)?.into_any())
}

pub(crate) fn parse_venue_opt(v: Option<&str>) -> PyResult<Option<Venue>> {
    v.map(|s| Venue::parse(s).map_err(to_py)).transpose()
}

pub(crate) fn trade_query(
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

pub(crate) fn tail_to_py<'py>(py: Python<'py>, b: &TailBatch) -> PyResult<Bound<'py, PyDict>> {
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

pub(crate) fn damage_to_py<'py>(py: Python<'py>, d: &plog::DamageReport) -> PyResult<Bound<'py, PyDict>> {
    let o = PyDict::new(py);
    o.set_item("segment", &d.segment)?;
    o.set_item("offset", d.offset)?;
    o.set_item("length", d.length)?;
    o.set_item("reason", &d.reason)?;
    Ok(o)
}

/// Frame bytes from `bytes` or `str` (websockets hands text frames as `str`), borrowed for as
/// long as the object is: exact `bytes` take one C call (this runs once per frame, millions of
/// times a second, and each call through the stable ABI counts).
pub(crate) fn frame_bytes_of<'a>(obj: Borrowed<'a, '_, PyAny>) -> PyResult<&'a [u8]> {
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

pub(crate) fn frame_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    frame_bytes_of(obj.as_borrowed())
}

pub(crate) fn event_to_py<'py>(py: Python<'py>, e: &IngestEvent) -> PyResult<Bound<'py, PyAny>> {
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

pub(crate) fn events_to_py<'py>(py: Python<'py>, events: &[IngestEvent]) -> PyResult<Option<Bound<'py, PyList>>> {
    if events.is_empty() {
        return Ok(None);
    }
    let l = PyList::empty(py);
    for e in events {
        l.append(event_to_py(py, e)?)?;
    }
    Ok(Some(l))
}
