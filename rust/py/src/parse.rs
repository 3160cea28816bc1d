//! `parse_frame`: the Rust parser on one frame, storing nothing.

use pyo3::prelude::*;

use pumpwatch_core::parse::{self as vparse, ParseContext, ParsedFrame};
use pumpwatch_core::Venue;

use crate::convert::frame_bytes;
use crate::errors::{to_py, FrameError};
use crate::trade::Trade;

/// What `parse_frame` returns: the trades, the span of the venue's id sequence each one covers
/// (first, last; None where the venue has no sequence), the control message (kind, detail) if the
/// frame was one, and the reasons of the trades left out.
pub(crate) type ParsedForPython = (Vec<Trade>, Vec<Option<(u64, u64)>>, Option<(&'static str, String)>, Vec<String>);

/// Parses one frame with the Rust parser, storing nothing: `(trades, sequences, control, rejected)`,
/// where `sequences[i]` is the id range trade `i` covers on venues with an id sequence and
/// `rejected` says why each trade left out of a multi-trade frame did not parse.
#[pyfunction]
#[pyo3(signature = (venue, frame, recv_ns = 0, phemex_spot_scales = None))]
pub(crate) fn parse_frame<'py>(
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
        return Err(FrameError::new_err(e.to_string()));
    }
    let trades = (0..out.trades.len()).map(|i| Trade { inner: out.trade(i, venue, recv_ns).to_owned() }).collect();
    let seqs = out.trades.iter().map(|t| t.seq_first.zip(t.seq_last)).collect();
    let control = out.control.as_ref().map(|c| (c.kind(), c.detail().to_owned()));
    Ok((trades, seqs, control, std::mem::take(&mut out.rejected)))
}
