//! `Trade`: one trade as a Python object.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use pumpwatch_core::record;

use crate::convert::decimal_text;
use crate::errors::to_py;

/// One trade as the venue reported it: exact decimal text, taker side, times in ns UTC.
#[pyclass(frozen, module = "pumpwatch._core", eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Trade {
    pub(crate) inner: record::Trade,
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
