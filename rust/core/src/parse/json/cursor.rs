//! The cursor the per-venue shortcuts read frames with: one pass over the bytes, no token tape,
//! for frames laid out exactly as the venue sends them (no whitespace, no escapes, plain ASCII
//! strings, canonical integers). Every reader here returns `None` on anything else, and the
//! shortcut then leaves the frame to the general parser; so a shortcut can only ever take a frame
//! whose meaning is unambiguous, and what it takes is held to the general parser's output by tests.

use super::{digit_run, digits_value, plain_run};
use crate::record::Side;

/// A position in a frame's bytes.
pub struct Cursor<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, i: 0 }
    }

    #[inline]
    pub fn at_end(&self) -> bool {
        self.i == self.b.len()
    }

    /// Consumes `lit` if the bytes at the cursor are exactly it.
    #[inline]
    pub fn lit(&mut self, lit: &[u8]) -> bool {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    /// Consumes one byte if it is `c`.
    #[inline]
    pub fn byte(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// `,` (true: another member follows) or `close` (false), anything else `None`.
    #[inline]
    pub fn next_or_close(&mut self, close: u8) -> Option<bool> {
        match self.b.get(self.i) {
            Some(b',') => {
                self.i += 1;
                Some(true)
            }
            Some(&c) if c == close => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// An object key followed by `:`: `"k":`. Keys are plain ASCII (what every venue sends).
    #[inline]
    pub fn key(&mut self) -> Option<&'a [u8]> {
        // One-letter keys (most of Binance's and Bybit's) without the string scan.
        if let Some([b'"', k, b'"', b':']) = self.b.get(self.i..self.i + 4) {
            if (0x20..0x7f).contains(k) && *k != b'\\' && *k != b'"' {
                let key = self.b.get(self.i + 1..self.i + 2);
                self.i += 4;
                return key;
            }
        }
        let k = self.ascii_str()?;
        if self.byte(b':') {
            Some(k)
        } else {
            None
        }
    }

    /// A string of printable ASCII without escapes; its bytes between the quotes. Printable ASCII
    /// is valid UTF-8 and unescapes to itself, so the general parser reads the same text.
    #[inline]
    pub fn ascii_str(&mut self) -> Option<&'a [u8]> {
        if !self.byte(b'"') {
            return None;
        }
        let start = self.i;
        let n = start + plain_run(self.b.get(start..)?);
        if self.b.get(n) != Some(&b'"') {
            return None;
        }
        self.i = n + 1;
        self.b.get(start..n)
    }

    /// A non-empty printable-ASCII string of at most 255 bytes (a symbol or a text id).
    #[inline]
    pub fn text(&mut self) -> Option<&'a [u8]> {
        self.ascii_str().filter(|s| !s.is_empty() && s.len() <= u8::MAX as usize)
    }

    /// A string holding a plain decimal (`-?[0-9]+(\.[0-9]+)?`, at most 255 bytes), read and
    /// checked in one pass; a leading `-` only when `negative_ok`.
    #[inline]
    pub fn decimal_str(&mut self, negative_ok: bool) -> Option<&'a [u8]> {
        if !self.byte(b'"') {
            return None;
        }
        let start = self.i;
        if negative_ok && self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        self.digits()?;
        if self.byte(b'.') {
            self.digits()?;
        }
        let end = self.i;
        if !self.byte(b'"') || end - start > u8::MAX as usize {
            return None;
        }
        self.b.get(start..end)
    }

    /// One or more ASCII digits.
    #[inline]
    fn digits(&mut self) -> Option<()> {
        let n = digit_run(self.b.get(self.i..)?);
        self.i += n;
        (n > 0).then_some(())
    }

    /// A canonical unsigned integer literal (`0` or no leading zero, fits u64): its text and value.
    #[inline]
    pub fn uint(&mut self) -> Option<(&'a [u8], u64)> {
        let start = self.i;
        let digits = self.b.get(start..start + digit_run(self.b.get(start..)?))?;
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        let v = digits_value(digits)?;
        self.i = start + digits.len();
        Some((digits, v))
    }

    /// A canonical unsigned integer literal whose value is not needed (checked all the same).
    #[inline]
    pub fn skip_uint(&mut self) -> Option<()> {
        let start = self.i;
        let digits = self.b.get(start..start + digit_run(self.b.get(start..)?))?;
        if digits.is_empty()
            || (digits.len() > 1 && digits[0] == b'0')
            || (digits.len() >= 20 && digits_value(digits).is_none())
        {
            return None;
        }
        self.i = start + digits.len();
        Some(())
    }

    /// A price or quantity as a string or as a JSON number literal that is a plain decimal
    /// (the general parser takes a number by its text): `"1.50"` or `1.50` or `18`.
    #[inline]
    pub fn decimal(&mut self, negative_ok: bool) -> Option<&'a [u8]> {
        if self.b.get(self.i) == Some(&b'"') {
            return self.decimal_str(negative_ok);
        }
        let start = self.i;
        if negative_ok && self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int = self.i;
        self.digits()?;
        // JSON allows no leading zero: "01" is not a number (the general parser refuses it).
        if self.i - int > 1 && self.b.get(int) == Some(&b'0') {
            return None;
        }
        if self.byte(b'.') {
            self.digits()?;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) || self.i - start > u8::MAX as usize {
            return None;
        }
        self.b.get(start..self.i)
    }

    /// A trade id the general parser keeps as text: a non-empty plain string of at most 255
    /// bytes, or a canonical unsigned integer literal (its digits).
    #[inline]
    pub fn id(&mut self) -> Option<&'a [u8]> {
        if self.b.get(self.i) == Some(&b'"') {
            self.text()
        } else {
            self.uint().map(|(t, _)| t)
        }
    }

    /// The taker side: `buy` or `sell` in any ASCII case, as `Side::parse` reads it.
    #[inline]
    pub fn side(&mut self) -> Option<Side> {
        Side::parse(self.ascii_str()?).ok()
    }

    /// The text of a scalar given as a plain string or a canonical unsigned integer literal (a
    /// time or a count, which the general parser reads from either).
    #[inline]
    pub fn uint_or_str_text(&mut self) -> Option<&'a [u8]> {
        if self.b.get(self.i) == Some(&b'"') {
            self.ascii_str()
        } else {
            self.uint().map(|(t, _)| t)
        }
    }

    /// Skips a member value the shortcut does not use: a plain string, a canonical unsigned
    /// integer, `true`, `false` or `null`. Anything else declines the frame.
    #[inline]
    pub fn skip_scalar(&mut self) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => self.ascii_str().map(|_| ()),
            b't' => self.lit(b"true").then_some(()),
            b'f' => self.lit(b"false").then_some(()),
            b'n' => self.lit(b"null").then_some(()),
            b'0'..=b'9' => self.skip_uint(),
            _ => None,
        }
    }

    /// An object, member by member: `member` reads the value of each key (or declines).
    #[inline]
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        if !self.byte(b'{') {
            return None;
        }
        if self.byte(b'}') {
            return Some(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            if !self.next_or_close(b'}')? {
                return Some(());
            }
        }
    }

    /// A non-empty array, element by element.
    #[inline]
    pub fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if !self.byte(b'[') {
            return None;
        }
        loop {
            element(self)?;
            if !self.next_or_close(b']')? {
                return Some(());
            }
        }
    }

    /// An optional boolean flag as the general parser reads one: `null` is false.
    #[inline]
    pub fn flag(&mut self) -> Option<bool> {
        if self.lit(b"null") {
            Some(false)
        } else {
            self.boolean()
        }
    }

    #[inline]
    pub fn boolean(&mut self) -> Option<bool> {
        if self.lit(b"true") {
            Some(true)
        } else if self.lit(b"false") {
            Some(false)
        } else {
            None
        }
    }
}
