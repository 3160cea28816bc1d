//! Exact decimals. A price or quantity is kept as the venue wrote it (`83680.00` stays
//! `83680.00`, `0.0000001117` stays `0.0000001117`): the text is the value, so nothing is
//! ever rounded through a float. This module only decides whether a text is a plain decimal.

/// True when `s` is `-?[0-9]+(\.[0-9]+)?`: no exponent, no sign `+`, no spaces, no empty parts.
#[inline]
pub fn is_plain_decimal(s: &[u8]) -> bool {
    let digits = match s.first() {
        Some(b'-') => &s[1..],
        _ => s,
    };
    if digits.is_empty() {
        return false;
    }
    let mut seen_dot = false;
    let mut run = 0usize;
    for &b in digits {
        match b {
            b'0'..=b'9' => run += 1,
            b'.' if !seen_dot && run > 0 => {
                seen_dot = true;
                run = 0;
            }
            _ => return false,
        }
    }
    run > 0
}

/// Checks a decimal field and says what is wrong in terms a caller can fix.
pub fn check(field: &str, s: &[u8]) -> crate::Result<()> {
    if s.len() > u8::MAX as usize {
        return Err(crate::Error::InvalidInput(format!(
            "{field} is {} characters long; at most 255 are stored",
            s.len()
        )));
    }
    if is_plain_decimal(s) {
        Ok(())
    } else {
        Err(crate::Error::InvalidInput(format!(
            "{field} {:?} is not a plain decimal like \"83680.00\" or \"0.0000001117\" \
             (no exponent, no spaces, no float): pass the venue's text or a Decimal",
            String::from_utf8_lossy(s)
        )))
    }
}

/// Parses a canonical unsigned integer id (`"0"` or no leading zeros, fits in u64), the
/// numeric fast path for id-sequence checks. Anything else (hex, UUID, `007`) is `None` and is
/// kept only as text.
pub fn canonical_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimals() {
        for ok in ["0", "83680.00", "0.0000001117", "-2", "107407.88000000", "10403"] {
            assert!(is_plain_decimal(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "-", ".5", "5.", "1e-7", "+1", " 1", "1 ", "1.2.3", "NaN", "inf", "0x10", "1,5"] {
            assert!(!is_plain_decimal(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn canonical_ids() {
        assert_eq!(canonical_u64(b"0"), Some(0));
        assert_eq!(canonical_u64(b"5052328858"), Some(5052328858));
        assert_eq!(canonical_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(canonical_u64(b"18446744073709551616"), None);
        assert_eq!(canonical_u64(b"007"), None);
        assert_eq!(canonical_u64(b"6085c09769bc506996295e36"), None);
        assert_eq!(canonical_u64(b""), None);
    }
}
