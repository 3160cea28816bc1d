//! What the writer keeps in memory while the disk refuses records (full, or failing), and the
//! exact account of what had to be dropped.
//!
//! The recorder keeps its connections when the disk is full: records go on being accepted and are
//! held here, newest kept, up to a bound (the ring's size). When the bound is passed the oldest
//! records fall out, and what fell out is counted per venue and symbol (exchange-time span, first
//! and last trade id), so that when the disk has room again the writer first stores one
//! `gap_unfillable` marker per symbol naming exactly what was lost and why, then everything held,
//! in the order it came.

use std::collections::VecDeque;
use std::time::Instant;

use crate::record::{self, Marker, MarkerKind, FRAME_HEADER, KIND_TRADE};
use crate::venue::Venue;

/// Trades of one symbol that fell out of the hold: their exact span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostSpan {
    pub venue: Venue,
    pub symbol: String,
    pub trades: u64,
    pub from_ts_ns: i64,
    pub to_ts_ns: i64,
    /// First and last trade id lost (in log order; ids of one symbol are contiguous in the hold,
    /// so every trade of the symbol between them was lost and none outside).
    pub from_id: String,
    pub to_id: String,
}

pub struct Hold {
    pub limit: usize,
    pub since_ns: i64,
    /// Why the disk refused: the error of the write that failed, with its path.
    pub reason: String,
    pub disk_full: bool,
    batches: VecDeque<Vec<u8>>,
    pub bytes: usize,
    pub records: u64,
    pub lost: Vec<LostSpan>,
    /// Markers and quarantined frames that fell out (they carry no trade span).
    pub lost_other: u64,
    pub next_try: Instant,
}

impl Hold {
    pub fn new(limit: usize, since_ns: i64, reason: String, disk_full: bool) -> Hold {
        Hold {
            limit,
            since_ns,
            reason,
            disk_full,
            batches: VecDeque::new(),
            bytes: 0,
            records: 0,
            lost: Vec::new(),
            lost_other: 0,
            next_try: Instant::now(),
        }
    }

    /// Keeps whole frames (as `record::frame_into` builds them); drops the oldest past the limit.
    pub fn push(&mut self, frames: &[u8]) {
        if frames.is_empty() {
            return;
        }
        self.records += count_frames(frames);
        self.bytes += frames.len();
        self.batches.push_back(frames.to_vec());
        while self.bytes > self.limit {
            let Some(front) = self.batches.front_mut() else { break };
            // Drop frames off the front of the oldest batch until under the limit or it is empty.
            let mut off = 0;
            while off < front.len() && self.bytes - off > self.limit {
                let plen = payload_len(front, off);
                let payload = &front[off + FRAME_HEADER..off + FRAME_HEADER + plen];
                note_lost(&mut self.lost, &mut self.lost_other, payload);
                self.records -= 1;
                off += FRAME_HEADER + plen;
            }
            self.bytes -= off;
            if off == front.len() {
                self.batches.pop_front();
            } else {
                front.drain(..off);
            }
        }
    }

    pub fn front(&self) -> Option<&[u8]> {
        self.batches.front().map(Vec::as_slice)
    }

    /// The oldest batch was written up to `written` bytes (all of it when `written` is its length).
    pub fn consumed_front(&mut self, written: usize) {
        let Some(front) = self.batches.front_mut() else { return };
        let written = written.min(front.len());
        self.records -= count_frames(&front[..written]);
        self.bytes -= written;
        if written == front.len() {
            self.batches.pop_front();
        } else {
            front.drain(..written);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn lost_trades(&self) -> u64 {
        self.lost.iter().map(|l| l.trades).sum()
    }

    /// One `gap_unfillable` marker per symbol that lost trades, and one for the other records.
    pub fn loss_markers(&self, now_ns: i64) -> Vec<Marker> {
        let why = format!(
            "{} since {} ns ({}): held in memory up to {} bytes, the oldest fell out before the disk had room again",
            if self.disk_full { "disk full" } else { "disk error" },
            self.since_ns,
            self.reason,
            self.limit
        );
        let mut out: Vec<Marker> = self
            .lost
            .iter()
            .map(|l| Marker {
                kind: MarkerKind::GapUnfillable,
                venue: Some(l.venue),
                symbol: l.symbol.clone(),
                ts_ns: now_ns,
                from_ts_ns: l.from_ts_ns,
                to_ts_ns: l.to_ts_ns,
                from_id: l.from_id.clone(),
                to_id: l.to_id.clone(),
                detail: clip(format!("{} trades lost: {why}", l.trades)),
            })
            .collect();
        if self.lost_other > 0 {
            out.push(Marker {
                kind: MarkerKind::GapUnfillable,
                venue: None,
                symbol: String::new(),
                ts_ns: now_ns,
                from_ts_ns: self.since_ns,
                to_ts_ns: now_ns,
                from_id: String::new(),
                to_id: String::new(),
                detail: clip(format!("{} markers or quarantined frames lost: {why}", self.lost_other)),
            });
        }
        out
    }

    pub fn clear_lost(&mut self) {
        self.lost.clear();
        self.lost_other = 0;
    }
}

fn clip(mut s: String) -> String {
    if s.len() > 4000 {
        let mut cut = 4000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn payload_len(frames: &[u8], off: usize) -> usize {
    u32::from_le_bytes([frames[off], frames[off + 1], frames[off + 2], frames[off + 3]]) as usize
}

pub fn count_frames(frames: &[u8]) -> u64 {
    let mut n = 0;
    let mut off = 0;
    while off + FRAME_HEADER <= frames.len() {
        off += FRAME_HEADER + payload_len(frames, off);
        n += 1;
    }
    n
}

fn note_lost(lost: &mut Vec<LostSpan>, other: &mut u64, payload: &[u8]) {
    let t = match payload.first() {
        Some(&KIND_TRADE) => record::decode_trade(payload).ok(),
        _ => None,
    };
    let Some(t) = t else {
        *other += 1;
        return;
    };
    let mut id = Vec::new();
    record::render_id(payload, t.trade_id, &mut id);
    let id = String::from_utf8_lossy(&id).into_owned();
    match lost.iter_mut().find(|l| l.venue == t.venue && l.symbol.as_bytes() == t.symbol) {
        Some(l) => {
            l.trades += 1;
            l.from_ts_ns = l.from_ts_ns.min(t.ts_ns);
            l.to_ts_ns = l.to_ts_ns.max(t.ts_ns);
            l.to_id = id;
        }
        None => lost.push(LostSpan {
            venue: t.venue,
            symbol: String::from_utf8_lossy(t.symbol).into_owned(),
            trades: 1,
            from_ts_ns: t.ts_ns,
            to_ts_ns: t.ts_ns,
            from_id: id.clone(),
            to_id: id,
        }),
    }
}
