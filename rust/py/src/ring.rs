//! `TradeRing` and `RingReader`: the live ring of recent trades, read without touching the log.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use pumpwatch_core::record;
use pumpwatch_core::ring::{self, RingReader as CoreRingReader, RingShared, RingWriter};

use crate::trade::Trade;

pub(crate) fn decode_payloads(py: Python<'_>, data: &[u8], lens: &[usize]) -> PyResult<Vec<Py<Trade>>> {
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
    pub(crate) inner: Mutex<CoreRingReader>,
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
    #[pyo3(signature = (max_trades = 1_048_576))] // 1 << 20, a literal so that Python sees it
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
    #[pyo3(signature = (capacity_bytes = 67_108_864))] // 64 MiB, a literal so that Python sees it
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
