//! What the per-venue shortcuts share besides the cursor (`json::Cursor`): one-pass readers of
//! frames laid out exactly as the venue sends them, whose output tests hold to the general parser.

/// Fills a member's slot; a key seen twice declines the frame (the general parser's rule for
/// repeated keys decides it).
#[inline]
pub(super) fn once<T>(slot: &mut Option<T>, v: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v?);
    Some(())
}

/// A time in ms given as text (digits with an optional fraction, as the general parser reads
/// it), in ns.
#[inline]
pub(super) fn ms_to_ns_text(text: &[u8]) -> Option<i64> {
    super::ns_from_text(text, 6)
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
