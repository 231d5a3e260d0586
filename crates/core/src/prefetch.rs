//! Hashing memory another core has just written, at the hash's own speed.
//!
//! [`crate::threaded_io`] reads files into batches on one thread and hashes them on another, so
//! a batch's cache lines sit in the other core's cache when the hash starts on them. SHA-256
//! asks for its input one dependent 64-byte block at a time and waits for each line in turn.
//! [`in_pieces`] feeds a hasher small pieces with the CPU asked, a few KiB ahead, for the lines
//! it will want next, so that they travel while the hash computes. docs/bench.md ("Hashing")
//! has the measurements. This is the one place strata uses `unsafe`: the hint itself.

/// Bytes of one cache line, the unit a prefetch brings in.
const LINE: usize = 64;
/// Bytes handed to the consumer at a time by [`in_pieces`].
const PIECE: usize = 1 << 10;
/// How far past the piece being consumed [`in_pieces`] has asked for the lines.
const AHEAD: usize = 4 << 10;

/// Call `each` on `data` in order, in pieces of at most [`PIECE`] bytes, having asked for the
/// lines up to [`AHEAD`] bytes past each piece first. The hints are spread evenly (one piece's
/// worth per piece): asked for in bursts of 4 KiB pieces 8–16 KiB ahead, the same hash ran no
/// faster than after copying the batch.
pub(crate) fn in_pieces(data: &[u8], mut each: impl FnMut(&[u8])) {
    let mut hinted = 0;
    let mut end = 0;
    for piece in data.chunks(PIECE) {
        end += piece.len();
        while hinted < (end + AHEAD).min(data.len()) {
            line(&data[hinted..]);
            hinted += LINE;
        }
        each(piece);
    }
}

/// Hint that the cache line holding `bytes[0]` will be read soon; nothing if `bytes` is empty.
#[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
#[expect(
    unsafe_code,
    reason = "a prefetch hint; no safe form of the instruction in std"
)]
fn line(bytes: &[u8]) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    if let Some(first) = bytes.first() {
        // SAFETY: `_mm_prefetch` is only a hint: it reads nothing the program can observe and
        // cannot fault, whatever the address. It needs SSE, which the cfg above requires (and
        // every x86_64 CPU has).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(first).cast::<i8>()) }
    }
}

/// No hint on other targets: the hash reads the lines as it goes.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
fn line(_bytes: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_once_in_order_in_short_pieces_whatever_the_length() {
        let data: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i * 13 + i / 251) as u8)
            .collect();
        for len in [
            0,
            1,
            63,
            PIECE - 1,
            PIECE,
            PIECE + 1,
            AHEAD + 3,
            data.len() - 1,
            data.len(),
        ] {
            let mut seen = Vec::new();
            let mut longest = 0;
            in_pieces(&data[..len], |piece| {
                longest = longest.max(piece.len());
                seen.extend_from_slice(piece);
            });
            assert_eq!(seen, &data[..len], "{len} bytes");
            assert!(longest <= PIECE, "{len} bytes: a piece of {longest}");
        }
    }

    #[test]
    fn a_hint_at_the_last_byte_or_past_the_end_is_harmless() {
        let data = [7u8; 3];
        line(&data[2..]);
        line(&data[3..]);
    }
}
