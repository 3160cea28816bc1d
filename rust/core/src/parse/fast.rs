//! The cursor the per-venue shortcuts read frames with: one pass over the bytes, no token tape,
//! for frames laid out exactly as the venue sends them (no whitespace, no escapes, plain ASCII
//! strings, canonical integers). Every reader here returns `None` on anything else, and the
//! shortcut then leaves the frame to the general parser; so a shortcut can only ever take a frame
//! whose meaning is unambiguous, and what it takes is held to the general parser's output by tests.

/// Which scalar texts the readers accept.
pub(super) struct Cursor<'a> {
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
        let rest = self.b.get(start..)?;
        for (n, &c) in rest.iter().enumerate() {
            if c == b'"' {
                self.i = start + n + 1;
                return rest.get(..n);
            }
            if !(0x20..0x7f).contains(&c) || c == b'\\' {
                return None;
            }
        }
        None
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
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// A canonical unsigned integer literal (`0` or no leading zero, fits u64): its text and value.
    #[inline]
    pub fn uint(&mut self) -> Option<(&'a [u8], u64)> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(d))?;
            self.i += 1;
        }
        let digits = self.b.get(start..self.i)?;
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        Some((digits, v))
    }

    /// A canonical unsigned integer inside quotes: `"123"`.
    #[inline]
    pub fn uint_str(&mut self) -> Option<(&'a [u8], u64)> {
        if !self.byte(b'"') {
            return None;
        }
        let r = self.uint()?;
        if self.byte(b'"') {
            Some(r)
        } else {
            None
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

/// Milliseconds to ns, `None` past i64.
#[inline]
pub(super) fn ms_to_ns(ms: u64) -> Option<i64> {
    ms.checked_mul(1_000_000).and_then(|v| i64::try_from(v).ok())
}

/// Copies `bytes` into the arena; its range there.
#[inline]
pub(super) fn put(arena: &mut Vec<u8>, bytes: &[u8]) -> std::ops::Range<u32> {
    let start = arena.len() as u32;
    arena.extend_from_slice(bytes);
    start..arena.len() as u32
}
