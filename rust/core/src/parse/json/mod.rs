//! The JSON tokenizer of the parsers, in two readers over one set of lexical rules (this file:
//! whitespace, digit runs and their values, plain string runs, unescaping): the strict tape
//! (`tape`, RFC 8259, every token's raw text kept, for any frame) and the one-pass cursor
//! (`cursor`, for frames laid out exactly as a venue sends them, which the per-venue shortcuts read
//! without a tape). Numbers are never converted through `f64`: a number is its text. The tape's
//! string scan stays its own byte loop (it must accept escapes and UTF-8, which end a plain run):
//! measured with callgrind, skipping plain runs with `plain_run` there cost 4% more instructions.

mod cursor;
mod tape;

pub use cursor::Cursor;
pub use tape::{parse_into, Doc, Kind, Node, Scalar};

#[inline]
pub fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

pub fn trim_ws(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| !is_ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !is_ws(c)).map_or(start, |p| p + 1);
    b.get(start..end).unwrap_or(&[])
}

#[inline]
pub fn skip_ws(src: &[u8], mut pos: usize) -> usize {
    while let Some(&b) = src.get(pos) {
        if !is_ws(b) {
            break;
        }
        pos += 1;
    }
    pos
}

/// How many bytes at the start of `b` are printable ASCII other than `"` and `\\`: the content
/// of a string that needs no unescaping. (A byte at a time: the strings of a trade frame are
/// short, and measured, eight-bytes-a-step tests were slower on them.)
#[inline]
pub fn plain_run(b: &[u8]) -> usize {
    b.iter().position(|&c| !(0x20..0x7f).contains(&c) || c == b'"' || c == b'\\').unwrap_or(b.len())
}

/// How many bytes at the start of `b` are ASCII digits.
#[inline]
pub fn digit_run(b: &[u8]) -> usize {
    b.iter().position(|c| !c.is_ascii_digit()).unwrap_or(b.len())
}

/// The value of a run of ASCII digits (as `digit_run` found it), `None` past u64. Up to 19
/// digits cannot overflow, so the common case needs no checked arithmetic.
#[inline]
pub fn digits_value(d: &[u8]) -> Option<u64> {
    if d.len() > 19 {
        return parse_u64(d);
    }
    Some(d.iter().fold(0u64, |v, &c| v * 10 + u64::from(c.wrapping_sub(b'0'))))
}

/// Parses `digits` (ASCII digits only, non-empty) as u64, `None` on overflow or other bytes.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn hex4(h: Option<&[u8]>) -> Option<u32> {
    let h = h?;
    let mut v = 0u32;
    for &b in h {
        v = v * 16 + (b as char).to_digit(16)?;
    }
    Some(v)
}

/// Decodes the content of an escaped string, handing out UTF-8 pieces. Lone surrogates are
/// an error (they have no UTF-8 form), or U+FFFD when `lossy`.
pub fn unescape_with(raw: &[u8], lossy: bool, mut emit: impl FnMut(&[u8])) -> Result<(), &'static str> {
    let mut i = 0;
    while i < raw.len() {
        let run_end = raw.get(i..).and_then(|r| r.iter().position(|&c| c == b'\\')).map_or(raw.len(), |p| i + p);
        if run_end > i {
            emit(raw.get(i..run_end).unwrap_or(&[]));
            i = run_end;
            continue;
        }
        let simple = match raw.get(i + 1) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => 0,
            _ => return Err("invalid escape"),
        };
        if raw.get(i + 1) != Some(&b'u') {
            emit(&[simple]);
            i += 2;
            continue;
        }
        let cp = hex4(raw.get(i + 2..i + 6)).ok_or("invalid \\u escape")?;
        i += 6;
        let ch = if (0xD800..0xDC00).contains(&cp) {
            let lo = if raw.get(i..i + 2) == Some(b"\\u") { hex4(raw.get(i + 2..i + 6)) } else { None };
            match lo {
                Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                    i += 6;
                    char::from_u32(0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00))
                }
                _ => None,
            }
        } else {
            char::from_u32(cp)
        };
        let ch = match ch {
            Some(c) => c,
            None if lossy => char::REPLACEMENT_CHARACTER,
            None => return Err("lone UTF-16 surrogate in \\u escape"),
        };
        let mut buf = [0u8; 4];
        emit(ch.encode_utf8(&mut buf).as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_agree_with_their_definitions() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let alphabet = b"0123456789\"\\ \x1f\x7f\x80\xffaZ.-:,{}\t";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    // Mostly digits and letters, so that long runs occur.
                    if r % 4 == 0 {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    } else if r % 3 == 0 {
                        b'A' + (r >> 8) as u8 % 26
                    } else {
                        b'0' + (r >> 8) as u8 % 10
                    }
                })
                .collect();
            let plain =
                b.iter().position(|&c| !((0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')).unwrap_or(b.len());
            assert_eq!(plain_run(&b), plain, "{b:?}");
            let digits = b.iter().position(|c| !c.is_ascii_digit()).unwrap_or(b.len());
            assert_eq!(digit_run(&b), digits, "{b:?}");
            let d = &b[..digits];
            assert_eq!(digits_value(d), if d.is_empty() { Some(0) } else { parse_u64(d) }, "{d:?}");
            let mut c = Cursor::new(&b);
            let s = c.ascii_str();
            let inner = b.get(1..).map(|r| {
                r.iter().position(|&c| !((0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')).unwrap_or(r.len())
            });
            let closed = inner.filter(|&n| b.first() == Some(&b'"') && b.get(1 + n) == Some(&b'"'));
            if let Some(n) = closed {
                assert_eq!(s, Some(&b[1..1 + n]));
            } else {
                assert_eq!(s, None);
            }
        }
        for d in [
            "18446744073709551615",
            "18446744073709551616",
            "9999999999999999999",
            "00000000000000000000001",
            "12345678",
            "1234567890123456",
        ] {
            assert_eq!(digits_value(d.as_bytes()), parse_u64(d.as_bytes()), "{d}");
        }
    }
}
