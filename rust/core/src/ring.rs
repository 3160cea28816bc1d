//! A lock-free ring of the most recent trades: one writer (the ingest path), any number of
//! readers (dashboard rates, capture of the newest seconds). The writer overwrites the oldest
//! entries and never waits; a reader that falls behind learns how many trades it missed.
//!
//! Entries are variable length (the trade's log payload), stored in `AtomicU64` words so that
//! a reader racing the writer reads torn values, never undefined behaviour; a seqlock-style
//! check of `tail` after the copy tells the reader whether what it copied was overwritten.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

const PAD: u64 = u64::MAX;
const ENTRY_HEADER_WORDS: u64 = 2;

pub struct RingShared {
    words: Box<[AtomicU64]>,
    /// Words in the ring: a power of two, so a position's slot is `pos & mask` (no division on
    /// the writer's path, which pushes millions of entries a second).
    cap: u64,
    mask: u64,
    /// End of the published entries (word position, grows forever).
    head: AtomicU64,
    /// Start of the oldest entry still intact; moved forward before anything is overwritten.
    tail: AtomicU64,
    /// Sequence number the next pushed entry gets.
    next_seq: AtomicU64,
}

/// How far ahead of the writer, in words, a fresh ring's pages are prepared (16 MiB).
const PREPARE_AHEAD_WORDS: u64 = 2 << 20;

impl RingShared {
    /// Faults in the pages of words `from..to` (positions below `cap`) for writing, without
    /// changing them (`MADV_POPULATE_WRITE`), so the writer's first lap over a fresh ring does not
    /// take a page fault every 4 KiB. Best effort: without the advice the writer faults instead.
    pub fn populate_for_write(&self, from: u64, to: u64) {
        let (from, to) = (from.min(self.cap) as usize, to.min(self.cap) as usize);
        let Some(words) = self.words.get(from..to) else { return };
        if words.is_empty() {
            return;
        }
        let page = 4096usize;
        let start = words.as_ptr() as usize;
        let end = start + std::mem::size_of_val(words);
        let aligned = start / page * page;
        // SAFETY: the advice only prefaults pages; it never changes memory. The range may begin
        // before the words, on their first page, which belongs to this same live allocation's
        // mapping or to memory the process owns (the advice leaves it unchanged either way).
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, end - aligned, libc::MADV_POPULATE_WRITE);
        }
    }

    #[inline]
    fn slot(&self, pos: u64) -> u64 {
        pos & self.mask
    }

    #[inline]
    fn word(&self, pos: u64) -> u64 {
        self.words[self.slot(pos) as usize].load(Ordering::Relaxed)
    }
}

/// Creates a ring holding about `capacity_bytes` of entries (rounded to a power of two words,
/// at least 4 KiB).
pub fn ring(capacity_bytes: usize) -> (RingWriter, Arc<RingShared>) {
    let cap = (capacity_bytes / 8).next_power_of_two().max(512) as u64;
    let words = (0..cap).map(|_| AtomicU64::new(0)).collect::<Vec<_>>().into_boxed_slice();
    let shared = Arc::new(RingShared {
        words,
        cap,
        mask: cap - 1,
        head: AtomicU64::new(0),
        tail: AtomicU64::new(0),
        next_seq: AtomicU64::new(0),
    });
    (RingWriter { shared: shared.clone(), dropped_too_large: 0, prepared_to: 0 }, shared)
}

fn entry_words(len: usize) -> u64 {
    ENTRY_HEADER_WORDS + len.div_ceil(8) as u64
}

/// Length in words of the entry (or padding) at `pos`, as the writer wrote it.
fn span_at(s: &RingShared, pos: u64) -> u64 {
    let idx = s.slot(pos);
    if s.cap - idx < ENTRY_HEADER_WORDS {
        return s.cap - idx;
    }
    match s.word(pos + 1) {
        PAD => s.cap - idx,
        len => entry_words(len as usize),
    }
}

pub struct RingWriter {
    shared: Arc<RingShared>,
    pub dropped_too_large: u64,
    /// Words whose pages were handed out for preparing (`prepare_due`); the ring's first lap only.
    prepared_to: u64,
}

impl RingWriter {
    pub fn shared(&self) -> Arc<RingShared> {
        self.shared.clone()
    }

    /// Bytes of entries the ring holds at most.
    pub fn capacity_bytes(&self) -> usize {
        (self.shared.cap * 8) as usize
    }

    /// The next words whose pages should be prepared before the writer reaches them (on the
    /// ring's first lap; afterwards every page has been written once): `Some((from, to))` when the
    /// writer is within `PREPARE_AHEAD_WORDS` of what was prepared so far.
    pub fn prepare_due(&mut self) -> Option<(u64, u64)> {
        let s = &*self.shared;
        if self.prepared_to >= s.cap {
            return None;
        }
        let head = s.head.load(Ordering::Relaxed);
        if head + PREPARE_AHEAD_WORDS <= self.prepared_to {
            return None;
        }
        let from = self.prepared_to.max(head.min(s.cap));
        let to = (head + 2 * PREPARE_AHEAD_WORDS).min(s.cap);
        self.prepared_to = to;
        (to > from).then_some((from, to))
    }

    /// Counts `n` entries as pushed without writing them (they would be overwritten before any
    /// reader could see them): readers learn of them as missed.
    pub fn skip(&mut self, n: u64) {
        let s = &*self.shared;
        let seq = s.next_seq.load(Ordering::Relaxed);
        s.next_seq.store(seq + n, Ordering::Relaxed);
    }

    /// Pushes one entry, overwriting the oldest as needed. Never blocks.
    pub fn push(&mut self, payload: &[u8]) {
        let s = &*self.shared;
        let need = entry_words(payload.len());
        if need > s.cap / 2 {
            self.dropped_too_large += 1;
            return;
        }
        let head = s.head.load(Ordering::Relaxed);
        let idx = s.slot(head);
        let pad = if idx + need > s.cap { s.cap - idx } else { 0 };
        let new_head = head + pad + need;

        // Retire the entries this write will overwrite, before overwriting them.
        let mut tail = s.tail.load(Ordering::Relaxed);
        if new_head > s.cap + tail {
            while new_head > s.cap + tail {
                tail += span_at(s, tail);
            }
            s.tail.store(tail, Ordering::Relaxed);
            fence(Ordering::Release);
        }

        if pad >= ENTRY_HEADER_WORDS {
            s.words[(idx + 1) as usize].store(PAD, Ordering::Relaxed);
        }
        // After the padding the entry never wraps: its words are one contiguous run.
        let start = s.slot(head + pad) as usize;
        let Some(entry) = s.words.get(start..start + need as usize) else {
            return; // cannot happen: `need <= cap / 2` and padding keeps the run inside the ring
        };
        let seq = s.next_seq.load(Ordering::Relaxed);
        entry[0].store(seq, Ordering::Relaxed);
        entry[1].store(payload.len() as u64, Ordering::Relaxed);
        let mut chunks = payload.chunks_exact(8);
        let body = &entry[ENTRY_HEADER_WORDS as usize..];
        for (w, chunk) in body.iter().zip(&mut chunks) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        let rest = chunks.remainder();
        if let (false, Some(w)) = (rest.is_empty(), body.get(payload.len() / 8)) {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        s.next_seq.store(seq + 1, Ordering::Relaxed);
        s.head.store(new_head, Ordering::Release);
    }
}

/// A reader's cursor. Readers are independent; each keeps its own position.
pub struct RingReader {
    shared: Arc<RingShared>,
    pos: u64,
    next_seq: Option<u64>,
    /// Entries overwritten before this reader got to them, since it was created.
    pub missed: u64,
}

impl RingReader {
    /// A reader that starts at the oldest entry still held (`from_oldest`) or at the newest end.
    pub fn new(shared: Arc<RingShared>, from_oldest: bool) -> RingReader {
        let (pos, next_seq) = loop {
            let h = shared.head.load(Ordering::Acquire);
            let seq = shared.next_seq.load(Ordering::Acquire);
            let t = shared.tail.load(Ordering::Acquire);
            if shared.head.load(Ordering::Acquire) != h {
                continue;
            }
            if !from_oldest || t == h {
                break (h, Some(seq));
            }
            // Counting from the oldest entry: its sequence number is where "missed" starts.
            // (Padding at the tail is skipped by `poll`; its successor carries the count.)
            let oldest = shared.word(t);
            let intact = shared.word(t + 1) != PAD && (shared.cap - shared.slot(t)) >= ENTRY_HEADER_WORDS;
            fence(Ordering::Acquire);
            if shared.tail.load(Ordering::Relaxed) == t {
                break (t, intact.then_some(oldest));
            }
        };
        RingReader { shared, pos, next_seq, missed: 0 }
    }

    /// Copies up to `max` entries into `out` (payloads back to back, with their lengths in
    /// `lens`). Returns how many it read and how many it found missed during this call.
    pub fn poll(&mut self, max: usize, out: &mut Vec<u8>, lens: &mut Vec<usize>) -> (usize, u64) {
        let s = &*self.shared;
        let mut got = 0;
        let mut missed_now = 0;
        let mut word = Vec::<u64>::new();
        while got < max {
            let head = s.head.load(Ordering::Acquire);
            if self.pos >= head {
                break;
            }
            let tail = s.tail.load(Ordering::Acquire);
            if self.pos < tail {
                self.pos = tail;
                continue;
            }
            let idx = s.slot(self.pos);
            if s.cap - idx < ENTRY_HEADER_WORDS {
                self.pos += s.cap - idx;
                continue;
            }
            let seq = s.word(self.pos);
            let len = s.word(self.pos + 1);
            let nwords = if len == PAD { 0 } else { (len as usize).div_ceil(8) as u64 };
            let fits = len == PAD || idx + ENTRY_HEADER_WORDS + nwords <= s.cap;
            word.clear();
            if len != PAD && fits {
                for i in 0..nwords {
                    word.push(s.word(self.pos + ENTRY_HEADER_WORDS + i));
                }
            }
            fence(Ordering::Acquire);
            if s.tail.load(Ordering::Relaxed) > self.pos {
                // Overwritten while we copied: what we hold may be torn. Start again at the tail.
                continue;
            }
            if len == PAD {
                self.pos += s.cap - idx;
                continue;
            }
            if !fits {
                // Cannot happen for an intact entry; stop rather than read garbage.
                break;
            }
            let expected = self.next_seq.unwrap_or(seq);
            if seq > expected {
                missed_now += seq - expected;
            }
            self.next_seq = Some(seq + 1);
            let start = out.len();
            for w in &word {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.truncate(start + len as usize);
            lens.push(len as usize);
            self.pos += ENTRY_HEADER_WORDS + nwords;
            got += 1;
        }
        self.missed += missed_now;
        (got, missed_now)
    }
}

/// Per symbol, what a batch of ring entries says of its live flow: how many times it was seen
/// (trades received at one instant, i.e. of one frame, count once) and when it was last received. Backfilled and snapshot trades are left out (they say nothing of
/// the live stream), and so are non-trades; entries that are not trade records are skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveActivity {
    pub venue: crate::venue::Venue,
    pub symbol: Vec<u8>,
    pub sightings: u64,
    pub last_recv_ns: i64,
}

pub fn live_activity(data: &[u8], lens: &[usize]) -> Vec<LiveActivity> {
    use crate::record::{decode_trade, flags};
    let skip = flags::BACKFILL | flags::SNAPSHOT | flags::NON_TRADE;
    let mut out: Vec<LiveActivity> = Vec::new();
    let mut index: std::collections::HashMap<(crate::venue::Venue, &[u8]), usize> = std::collections::HashMap::new();
    let mut at = 0;
    for &l in lens {
        let Some(p) = data.get(at..at + l) else { break };
        at += l;
        let Ok(t) = decode_trade(p) else { continue };
        if t.flags & skip != 0 {
            continue;
        }
        let i = *index.entry((t.venue, t.symbol)).or_insert_with(|| {
            out.push(LiveActivity { venue: t.venue, symbol: t.symbol.to_vec(), sightings: 0, last_recv_ns: i64::MIN });
            out.len() - 1
        });
        let a = &mut out[i];
        if t.recv_ns != a.last_recv_ns {
            a.sightings += 1;
        }
        a.last_recv_ns = a.last_recv_ns.max(t.recv_ns);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64, len: usize) -> Vec<u8> {
        let mut p = i.to_le_bytes().to_vec();
        p.resize(len.max(8), (i % 251) as u8);
        p
    }

    #[test]
    fn reader_sees_everything_when_keeping_up() {
        let (mut w, shared) = ring(4096);
        let mut r = RingReader::new(shared, true);
        let mut total = 0;
        for round in 0..50u64 {
            for i in 0..7 {
                w.push(&payload(round * 7 + i, 8 + (i as usize * 5)));
            }
            let (mut out, mut lens) = (Vec::new(), Vec::new());
            let (n, missed) = r.poll(1000, &mut out, &mut lens);
            assert_eq!((n, missed), (7, 0));
            let mut at = 0;
            for (k, l) in lens.iter().enumerate() {
                let id = u64::from_le_bytes(out[at..at + 8].try_into().unwrap());
                assert_eq!(id, round * 7 + k as u64);
                assert_eq!(&out[at..at + l], &payload(id, 8 + k * 5)[..]);
                at += l;
            }
            total += n;
        }
        assert_eq!(total, 350);
    }

    /// A fresh ring's pages are handed out for preparing ahead of the writer, each once, on the
    /// first lap only; preparing them changes no entry.
    #[test]
    fn pages_are_prepared_ahead_on_the_first_lap_only_and_keep_their_entries() {
        let (mut w, shared) = ring(64 << 20); // 8 Mi words: four steps of 2 Mi words
        let cap = 8u64 << 20;
        assert_eq!(w.prepare_due(), Some((0, 2 * PREPARE_AHEAD_WORDS)));
        assert_eq!(w.prepare_due(), None);
        let mut r = RingReader::new(shared.clone(), true);
        let mut prepared = vec![(0, 2 * PREPARE_AHEAD_WORDS)];
        let mut pushed = 0u64;
        while pushed * 513 < 3 * cap {
            w.push(&payload(pushed, 4088)); // 513 words with its header
            pushed += 1;
            if let Some(range) = w.prepare_due() {
                shared.populate_for_write(range.0, range.1);
                prepared.push(range);
            }
        }
        // Contiguous, in order, up to the end of the ring, then nothing more.
        assert_eq!(prepared.first().map(|p| p.0), Some(0));
        assert_eq!(prepared.last().map(|p| p.1), Some(cap));
        assert!(prepared.windows(2).all(|p| p[0].1 == p[1].0), "{prepared:?}");
        shared.populate_for_write(0, cap);
        let (mut out, mut lens) = (Vec::new(), Vec::new());
        let (got, missed) = r.poll(usize::MAX, &mut out, &mut lens);
        assert_eq!(got as u64 + missed, pushed);
        let last = &out[out.len() - 4088..];
        assert_eq!(last, &payload(pushed - 1, 4088)[..]);
    }

    #[test]
    fn slow_reader_is_told_what_it_missed() {
        let (mut w, shared) = ring(4096);
        let mut r = RingReader::new(shared, true);
        let n = 10_000u64;
        for i in 0..n {
            w.push(&payload(i, 40));
        }
        let (mut out, mut lens) = (Vec::new(), Vec::new());
        let (got, missed) = r.poll(usize::MAX, &mut out, &mut lens);
        assert_eq!(got as u64 + missed, n);
        assert!(missed > 0 && got > 0);
        let last = u64::from_le_bytes(out[out.len() - 40..out.len() - 32].try_into().unwrap());
        assert_eq!(last, n - 1);
    }

    #[test]
    fn concurrent_reader_gets_intact_entries_in_order() {
        let (mut w, shared) = ring(8192);
        let n = 200_000u64;
        let mut r = RingReader::new(shared, true);
        let reader = std::thread::spawn(move || {
            let (mut out, mut lens) = (Vec::new(), Vec::new());
            let (mut seen, mut last) = (0u64, None::<u64>);
            while last != Some(n - 1) {
                out.clear();
                lens.clear();
                r.poll(64, &mut out, &mut lens);
                let mut at = 0;
                for l in &lens {
                    let id = u64::from_le_bytes(out[at..at + 8].try_into().unwrap());
                    assert_eq!(&out[at..at + l], &payload(id, *l)[..], "torn entry {id}");
                    assert!(last.is_none_or(|p| id > p));
                    last = Some(id);
                    seen += 1;
                    at += l;
                }
            }
            (seen, r.missed)
        });
        for i in 0..n {
            w.push(&payload(i, 8 + (i % 40) as usize));
        }
        let (seen, missed) = reader.join().unwrap();
        assert_eq!(seen + missed, n);
    }

    #[test]
    fn live_activity_counts_live_trades_per_symbol_and_skips_backfills() {
        use crate::record::{flags, Trade};
        use crate::venue::Venue;
        let (mut w, shared) = ring(1 << 16);
        let mut r = RingReader::new(shared, false);
        let mut buf = Vec::new();
        for (i, (sym, f)) in
            [("BTCUSDT", 0), ("ETHUSDT", 0), ("BTCUSDT", flags::BACKFILL), ("BTCUSDT", 0)].iter().enumerate()
        {
            let t = Trade {
                venue: Venue::BinanceSpot,
                symbol: sym.to_string(),
                trade_id: (i + 1).to_string(),
                price: "1.5".into(),
                qty: "2".into(),
                side: crate::record::Side::Buy,
                ts_ns: 10 + i as i64,
                recv_ns: 100 + i as i64,
                flags: *f,
            };
            buf.clear();
            t.as_ref().encode_payload(&mut buf);
            w.push(&buf);
        }
        let (mut data, mut lens) = (Vec::new(), Vec::new());
        r.poll(100, &mut data, &mut lens);
        let a = live_activity(&data, &lens);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].symbol.as_slice(), a[0].sightings, a[0].last_recv_ns), (&b"BTCUSDT"[..], 2, 103));
        assert_eq!((a[1].symbol.as_slice(), a[1].sightings, a[1].last_recv_ns), (&b"ETHUSDT"[..], 1, 101));
    }
}
