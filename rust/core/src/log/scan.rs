//! Walking frames: the one place that decides what a valid record is, used by recovery,
//! readers and `verify` alike.

use std::convert::Infallible;
use std::ops::ControlFlow;

use crate::record::{self, FRAME_HEADER, KIND_MARKER, KIND_QUARANTINE, KIND_TRADE, MAX_PAYLOAD};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkOutcome {
    /// Offset just past the last valid frame.
    pub valid_end: usize,
    /// Invalid bytes between valid frames: reported and skipped.
    pub damaged: Vec<Span>,
    /// Invalid, non-zero bytes after the last valid frame (a torn or corrupt tail).
    pub torn: Option<Span>,
    pub records: u64,
}

#[inline]
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The payload of the valid frame starting at `off`, if there is one inside `bytes[..end]`.
#[inline]
pub fn frame_at(bytes: &[u8], off: usize, end: usize) -> Option<&[u8]> {
    check_frame(bytes, off, end).ok()
}

/// The frame at `off` inside `bytes[..end]`: its payload when valid, else the rule it breaks
/// (`[rule] what is wrong`, the rules of docs/FORMAT.md). The one place validity is decided.
#[inline]
pub fn check_frame(bytes: &[u8], off: usize, end: usize) -> Result<&[u8], &'static str> {
    let end = end.min(bytes.len());
    if off.checked_add(FRAME_HEADER).is_none_or(|h| h > end) {
        return Err("[bounds] frame header runs past the readable end");
    }
    let len = le_u32(bytes, off) as usize;
    if len == 0 {
        return Err("[length] zero frame length before the end of the records");
    }
    if len > MAX_PAYLOAD {
        return Err("[length] frame length over 16 MiB");
    }
    if off + FRAME_HEADER + len > end {
        return Err("[bounds] frame runs past the readable end");
    }
    let payload = &bytes[off + FRAME_HEADER..off + FRAME_HEADER + len];
    // The kind first: resync tries every offset, and this rejects nearly all without a CRC.
    if !matches!(payload[0], KIND_TRADE | KIND_MARKER | KIND_QUARANTINE) {
        return Err("[kind] unknown record kind");
    }
    // The unaligned-load CRC-32C of `record::payload_crc`: payloads start anywhere, and this is
    // the check every record of every query pays.
    if record::payload_crc(payload) != le_u32(bytes, off + 4) {
        return Err(CRC_MISMATCH);
    }
    if payload[0] == KIND_TRADE {
        let t = record::decode_trade(payload)?;
        record::check_trade_fields(&t)?;
    } else {
        record::decode(payload)?;
    }
    Ok(payload)
}

const CRC_MISMATCH: &str = "[crc] payload CRC-32C does not match";

/// Why the bytes of a damaged span at `start` were not a record: the rule the frame there
/// breaks, said so that a CRC failure and a rule broken under a good CRC read differently.
pub fn damage_reason(bytes: &[u8], start: usize, end: usize) -> String {
    let rule = match check_frame(bytes, start, end) {
        // A kind byte hit by damage fails the CRC too: say the CRC, the check that covers it.
        Err(r) if r.starts_with("[kind]") => {
            let len = le_u32(bytes, start) as usize;
            let payload = &bytes[start + FRAME_HEADER..start + FRAME_HEADER + len];
            if crc32c::crc32c(payload) != le_u32(bytes, start + 4) {
                CRC_MISMATCH
            } else {
                r
            }
        }
        Err(r) => r,
        Ok(_) => "[bounds] frame crosses a block boundary",
    };
    format!("{rule}; the bytes up to the next valid record are skipped")
}

/// First non-zero byte in `bytes[from..end]`.
pub fn first_nonzero(bytes: &[u8], from: usize, end: usize) -> Option<usize> {
    let end = end.min(bytes.len());
    if from >= end {
        return None;
    }
    let region = &bytes[from..end];
    let mut i = 0;
    // Word at a time: the preallocated tail of an active segment is mostly zeros.
    while i + 64 <= region.len() {
        if region[i..i + 64].iter().any(|&b| b != 0) {
            break;
        }
        i += 64;
    }
    region[i..].iter().position(|&b| b != 0).map(|p| from + i + p)
}

/// Last non-zero byte in `bytes[from..end]`.
fn last_nonzero(bytes: &[u8], from: usize, end: usize) -> Option<usize> {
    let end = end.min(bytes.len());
    if from >= end {
        return None;
    }
    bytes[from..end].iter().rposition(|&b| b != 0).map(|p| from + p)
}

/// The next offset at or after `from` where a valid frame starts.
pub fn resync(bytes: &[u8], from: usize, end: usize) -> Option<usize> {
    match resync_before(bytes, from, usize::MAX, end) {
        Resync::Found(o) => Some(o),
        Resync::Later(_) | Resync::Never => None,
    }
}

/// What `resync_before` found.
#[derive(Debug, PartialEq, Eq)]
enum Resync {
    Found(usize),
    /// No frame starts before `until`: the search goes on at this offset (at or past `until`).
    Later(usize),
    Never,
}

/// `resync`, trying only offsets before `until`, so that a long damaged span is crossed in steps.
fn resync_before(bytes: &[u8], from: usize, until: usize, end: usize) -> Resync {
    let end = end.min(bytes.len());
    let mut o = from;
    while o + FRAME_HEADER < end {
        if o >= until {
            return Resync::Later(o);
        }
        if bytes[o..o + 4] == [0, 0, 0, 0] {
            // A frame's length has a non-zero byte within its first four: jump to the next
            // non-zero byte minus three instead of trying every zero offset.
            let Some(nz) = first_nonzero(bytes, o + 4, end) else { return Resync::Never };
            o = (nz.saturating_sub(3)).max(o + 1);
            continue;
        }
        if frame_at(bytes, o, end).is_some() {
            return Resync::Found(o);
        }
        o += 1;
    }
    Resync::Never
}

/// A damaged span is searched for the next record this many bytes at a time, the walk's caller
/// told between two steps (`verify`'s progress and Ctrl-C go on over a long damaged span).
const RESYNC_STEP: usize = 1 << 20;

/// Walks the frames of `bytes[start..end]`, calling `on_record(offset, payload)` for each valid
/// one, skipping damaged spans, and reporting a torn tail.
pub fn walk(bytes: &[u8], start: usize, end: usize, on_record: impl FnMut(usize, &[u8])) -> WalkOutcome {
    walk_published(bytes, start, end, end, on_record)
}

/// `walk`, where only an invalid frame before `published` is damage to skip: past the published
/// end an invalid frame ends the records, because an append that did not finish may have copied
/// its later bytes before its earlier ones (memcpy does), leaving valid-looking records after the
/// hole that were never acknowledged.
pub fn walk_published(
    bytes: &[u8],
    start: usize,
    end: usize,
    published: usize,
    mut on_record: impl FnMut(usize, &[u8]),
) -> WalkOutcome {
    let walked = walk_published_until(bytes, start, end, published, |off, p| {
        if let Some(p) = p {
            on_record(off, p);
        }
        ControlFlow::<Infallible>::Continue(())
    });
    match walked {
        ControlFlow::Continue(out) => out,
        ControlFlow::Break(never) => match never {},
    }
}

/// `walk_published` that `on_record` can stop (`verify` is stopped by its caller, e.g. Ctrl-C):
/// `Break` comes back at once, with what the walk found so far dropped. `on_record(off, None)`:
/// the walk is searching a damaged span, at `off` (every `RESYNC_STEP` bytes).
pub fn walk_published_until<B>(
    bytes: &[u8],
    start: usize,
    end: usize,
    published: usize,
    on_record: impl FnMut(usize, Option<&[u8]>) -> ControlFlow<B>,
) -> ControlFlow<B, WalkOutcome> {
    walk_stepped(bytes, start, end, published, RESYNC_STEP, on_record)
}

#[inline]
fn walk_stepped<B>(
    bytes: &[u8],
    start: usize,
    end: usize,
    published: usize,
    resync_step: usize,
    mut on_record: impl FnMut(usize, Option<&[u8]>) -> ControlFlow<B>,
) -> ControlFlow<B, WalkOutcome> {
    let end = end.min(bytes.len());
    let mut out = WalkOutcome { valid_end: start, ..Default::default() };
    let mut off = start;
    loop {
        if let Some(payload) = frame_at(bytes, off, end) {
            on_record(off, Some(payload))?;
            out.records += 1;
            off += FRAME_HEADER + payload.len();
            out.valid_end = off;
            continue;
        }
        if off >= end {
            break;
        }
        let resynced = if off < published {
            let mut from = off + 1;
            loop {
                match resync_before(bytes, from, from.saturating_add(resync_step), end) {
                    Resync::Found(next) => break Some(next),
                    Resync::Never => break None,
                    Resync::Later(at) => {
                        on_record(at, None)?;
                        from = at;
                    }
                }
            }
        } else {
            None
        };
        match resynced {
            Some(next) => {
                out.damaged.push(Span { start: off, end: next });
                off = next;
            }
            None => {
                if let Some(last) = last_nonzero(bytes, off, end) {
                    out.torn = Some(Span { start: off, end: last + 1 });
                }
                break;
            }
        }
    }
    ControlFlow::Continue(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{frame_into, Trade};

    fn log_of(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = vec![0u8; 64];
        let mut offs = Vec::new();
        for i in 0..n {
            offs.push(buf.len());
            let t = Trade::new(
                "okx-spot",
                "BTC-USDT",
                &format!("{}", 1000 + i),
                "30243.5",
                "0.001",
                "buy",
                i as i64,
                i as i64,
                0,
            )
            .unwrap();
            frame_into(&mut buf, |o| t.as_ref().encode_payload(o));
        }
        (buf, offs)
    }

    /// A frame whose CRC is fine but whose payload breaks rule `tag` is invalid, and its reason
    /// names that rule, not the length or the CRC.
    #[test]
    fn a_rule_broken_under_a_good_crc_is_damage_with_its_own_reason() {
        let (buf, offs) = log_of(3);
        let (off, next) = (offs[1], offs[2]);
        type Patch = fn(&mut Vec<u8>);
        let cases: [(&str, Patch); 9] = [
            ("[kind]", |p| p[0] = 9),
            ("[venue]", |p| p[1] = 13),
            ("[side]", |p| p[2] = 3),
            ("[size]", |p| p[6] += 1),
            ("[flags]", |p| p[5] = 4), // 0x400: past the last flag (0x200)
            ("[symbol]", |p| p[33] = 0xff),
            ("[price]", |p| {
                let at = 33 + p[3] as usize;
                p[at] = b'e';
            }),
            ("[qty]", |p| {
                let at = 33 + p[3] as usize + p[6] as usize;
                p[at] = b' ';
            }),
            ("[symbol]", |p| {
                // Empty symbol: its bytes become a text id, the length stays.
                let ls = p[3];
                let sym: Vec<u8> = p[33..33 + ls as usize].to_vec();
                p.drain(33..33 + ls as usize);
                p.extend_from_slice(&sym);
                p[3] = 0;
                p[32] = ls;
            }),
        ];
        for (tag, patch) in cases {
            let mut b = buf.clone();
            let mut payload = b[off + FRAME_HEADER..next].to_vec();
            patch(&mut payload);
            assert_eq!(payload.len(), next - off - FRAME_HEADER, "{tag}: same length");
            let crc = crc32c::crc32c(&payload);
            b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
            b[off + FRAME_HEADER..next].copy_from_slice(&payload);
            let err = check_frame(&b, off, b.len()).expect_err(tag);
            assert!(err.starts_with(tag), "{tag}: {err}");
            let mut seen = Vec::new();
            let w = walk(&b, 64, b.len(), |o, _| seen.push(o));
            assert_eq!(seen, vec![offs[0], offs[2]], "{tag}");
            assert_eq!(w.damaged, vec![Span { start: off, end: next }], "{tag}");
            assert!(damage_reason(&b, off, b.len()).starts_with(tag), "{tag}");
        }
        // An id kept as text that is not UTF-8.
        let t = Trade::new("okx-spot", "BTC-USDT", "a519448f", "30243.5", "0.001", "buy", 1, 1, 0).unwrap();
        let mut p = Vec::new();
        t.as_ref().encode_payload(&mut p);
        let last = p.len() - 1;
        p[last] = 0xc3;
        let mut f = Vec::new();
        frame_into(&mut f, |o| o.extend_from_slice(&p));
        assert!(check_frame(&f, 0, f.len()).expect_err("id").starts_with("[trade-id]"));
        // The same damage without a good CRC is a CRC failure, whatever byte was hit.
        let mut b = buf.clone();
        b[off + FRAME_HEADER] = 9;
        assert!(damage_reason(&b, off, b.len()).starts_with("[crc]"));
        let mut b = buf;
        b[off..off + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(damage_reason(&b, off, b.len()).starts_with("[length]"));
    }

    /// Crossing a damaged span in steps (told between two) finds what one search finds, for
    /// every single byte flipped and for a long stretch of garbage; a `Break` at a step stops it.
    #[test]
    fn a_damaged_span_crossed_in_steps_walks_as_one_search_does() {
        let (mut buf, offs) = log_of(8);
        buf.extend(std::iter::repeat_n(0, 256));
        let stepped = |b: &[u8], step: usize| {
            let (mut seen, mut steps) = (Vec::new(), Vec::new());
            let w = walk_stepped(b, 64, b.len(), b.len(), step, |o, p| {
                match p {
                    Some(_) => seen.push(o),
                    None => steps.push(o),
                }
                ControlFlow::<()>::Continue(())
            });
            let ControlFlow::Continue(w) = w else { panic!("nothing asked to stop") };
            (w, seen, steps)
        };
        for pos in 64..buf.len() {
            let mut b = buf.clone();
            b[pos] ^= 0x5a;
            let mut seen = Vec::new();
            let whole = walk(&b, 64, b.len(), |o, _| seen.push(o));
            for step in [1, 3, 50] {
                let (w, s, _) = stepped(&b, step);
                assert_eq!((w, s), (whole.clone(), seen.clone()), "flip at {pos}, step {step}");
            }
        }
        // Garbage over records 2 to 5: told every step of the way, in order, inside the span.
        let mut b = buf.clone();
        for (i, x) in b[offs[2] + 1..offs[6] - 1].iter_mut().enumerate() {
            *x = 0xa5 ^ (i as u8).wrapping_mul(31);
        }
        let whole = walk(&b, 64, b.len(), |_, _| {});
        assert_eq!(whole.damaged, vec![Span { start: offs[2], end: offs[6] }]);
        let (w, seen, steps) = stepped(&b, 16);
        assert_eq!(w, whole);
        assert_eq!(seen, [offs[0], offs[1], offs[6], offs[7]]);
        assert!(steps.len() >= (offs[6] - offs[2]) / 16 - 1, "{steps:?}");
        assert!(steps.windows(2).all(|s| s[0] < s[1]) && steps.iter().all(|&o| o > offs[2] && o < offs[6]));
        let mut told = 0;
        let stopped = walk_stepped(&b, 64, b.len(), b.len(), 16, |_, p| {
            told += 1;
            if p.is_none() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((stopped, told), (ControlFlow::Break(()), 3), "two records, then the first step");
    }

    #[test]
    fn clean_log_with_zero_tail() {
        let (mut buf, offs) = log_of(10);
        let valid = buf.len();
        buf.extend(std::iter::repeat_n(0, 4096));
        let w = walk(&buf, 64, buf.len(), |_, _| {});
        assert_eq!(w.records, 10);
        assert_eq!(w.valid_end, valid);
        assert!(w.damaged.is_empty() && w.torn.is_none());
        assert_eq!(offs.len(), 10);
    }

    #[test]
    fn every_single_byte_flip_loses_at_most_the_hit_record() {
        let (mut buf, offs) = log_of(6);
        let data_end = buf.len();
        buf.extend(std::iter::repeat_n(0, 256));
        for pos in 64..buf.len() {
            let mut b = buf.clone();
            b[pos] ^= 0x5a;
            let mut seen = Vec::new();
            let w = walk(&b, 64, b.len(), |o, _| seen.push(o));
            if pos < data_end {
                let hit = offs.iter().rposition(|&o| o <= pos).unwrap();
                let mut expected = offs.clone();
                expected.remove(hit);
                assert_eq!(seen, expected, "flip at {pos}");
            } else {
                assert_eq!(seen, offs, "flip in the zero tail at {pos}");
                assert_eq!(w.valid_end, data_end);
                assert_eq!(w.torn, Some(Span { start: data_end, end: pos + 1 }));
            }
        }
    }

    #[test]
    fn past_the_published_end_an_invalid_frame_ends_the_records() {
        let (mut buf, offs) = log_of(6);
        let data_end = buf.len();
        buf.extend(std::iter::repeat_n(0, 256));
        // An unfinished append copied its last record but not the one before it.
        buf[offs[4]..offs[5]].fill(0);
        let w = walk_published(&buf, 64, buf.len(), offs[4], |_, _| {});
        assert_eq!((w.records, w.valid_end), (4, offs[4]));
        assert_eq!(w.torn, Some(Span { start: offs[4], end: data_end }));
        assert!(w.damaged.is_empty());
        // Within the published part the same hole is damage, skipped.
        let w = walk_published(&buf, 64, buf.len(), data_end, |_, _| {});
        assert_eq!((w.records, w.damaged.len()), (5, 1));
    }

    #[test]
    fn truncation_keeps_every_complete_record() {
        let (buf, offs) = log_of(5);
        let ends: Vec<usize> = offs.iter().skip(1).copied().chain([buf.len()]).collect();
        for cut in 64..=buf.len() {
            let w = walk(&buf[..cut], 64, cut, |_, _| {});
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(w.records as usize, complete, "cut at {cut}");
            assert_eq!(w.valid_end, ends.iter().copied().rfind(|&e| e <= cut).unwrap_or(64));
        }
    }
}
