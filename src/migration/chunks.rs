//! How many keys go in one `MIGRATE`.
//!
//! A `MIGRATE` blocks its source until the target has restored every key it carries, and
//! every client of the source waits behind it. Keys up to `migration.big_key_bytes` go in
//! the ordinary path, `migration.batch_keys` listed at a time, so one `MIGRATE` per slot
//! could carry a hundred keys of megabytes each and hold the source for a second. So a
//! slot's listed keys go in `MIGRATE`s of at most [`MAX_KEYS`] keys and [`MAX_BYTES`] bytes
//! (by `MEMORY USAGE`): a client meets at most one such wait, and between them the source
//! serves its other clients. Measured with `ONLY=slotproxy deploy/local/rebalance-compare.sh
//! 1000000` (61 keys of ~100 bytes per slot), the steady client's p99 during the move:
//! 0.74–0.91 ms in five runs with chunks of 10–30 keys, 0.97–0.98 ms in two runs with one
//! `MIGRATE` per slot; wall time 5.2–9.1 s against 8.6–8.9 s (the latency guard's back-off
//! decides most of it). A small gain at best on this noisy machine; the byte bound is what
//! keeps large values from stalling a source.

use std::ops::Range;

/// Keys in one `MIGRATE` at most.
pub const MAX_KEYS: usize = 20;
/// Bytes (`MEMORY USAGE`) in one `MIGRATE` at most; a key larger than this goes alone.
pub const MAX_BYTES: u64 = 64 * 1024;

/// Consecutive ranges of `sizes` (one per key, in order), each at most [`MAX_KEYS`] keys
/// and [`MAX_BYTES`] bytes, or one key alone.
pub fn split(sizes: &[u64]) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(sizes.len() / MAX_KEYS + 1);
    let (mut start, mut bytes) = (0, 0u64);
    for (i, &size) in sizes.iter().enumerate() {
        let full = i - start == MAX_KEYS || (i > start && bytes + size > MAX_BYTES);
        if full {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_count_and_by_bytes() {
        assert_eq!(split(&[]), Vec::<Range<usize>>::new());
        assert_eq!(split(&[100; 3]), vec![0..3]);
        assert_eq!(split(&[100; 50]), vec![0..20, 20..40, 40..50]);
        let big = MAX_BYTES + 1;
        assert_eq!(split(&[10, big, 10, 10]), vec![0..1, 1..2, 2..4]);
        let half = MAX_BYTES / 2;
        assert_eq!(split(&[half, half, half]), vec![0..2, 2..3]);
    }
}
