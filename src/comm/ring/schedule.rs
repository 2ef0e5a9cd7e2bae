//! The ring's schedule: pure index arithmetic (which segment a rank sends
//! and receives at each step, which chunk of it), unit-tested below.

use std::ops::Range;

/// Segment `k` of a buffer of `len` elements split over `n` ranks: the
/// first `len % n` segments have one element more than the others.
pub fn segment(len: usize, n: usize, k: usize) -> Range<usize> {
    let (q, r) = (len / n, len % n);
    let start = k * q + k.min(r);
    start..start + q + usize::from(k < r)
}

/// (segment sent, segment received and reduced) by rank `r` at
/// reduce-scatter step `s` (0 ≤ s < n − 1).
pub fn reduce_scatter_step(r: usize, n: usize, s: usize) -> (usize, usize) {
    ((r + n - s) % n, (r + 2 * n - s - 1) % n)
}

/// The segment whose full sum rank `r` holds after reduce-scatter.
pub fn owned_segment(r: usize, n: usize) -> usize {
    (r + 1) % n
}

/// (segment sent, segment received) by rank `r` at all-gather step `s`.
pub fn all_gather_step(r: usize, n: usize, s: usize) -> (usize, usize) {
    ((r + 1 + n - s) % n, (r + n - s) % n)
}

/// Chunk `j` (of at most `c` elements) of a segment of `len` elements;
/// empty past the end.
pub fn chunk(len: usize, c: usize, j: usize) -> Range<usize> {
    (j * c).min(len)..((j + 1) * c).min(len)
}

/// `(&buf[a], &mut buf[b])` for disjoint ranges.
pub(super) fn split_disjoint<T>(
    buf: &mut [T],
    a: Range<usize>,
    b: Range<usize>,
) -> (&[T], &mut [T]) {
    if a.end <= b.start {
        let (lo, hi) = buf.split_at_mut(b.start);
        (&lo[a], &mut hi[..b.len()])
    } else {
        debug_assert!(b.end <= a.start, "overlapping ranges {a:?} {b:?}");
        let (lo, hi) = buf.split_at_mut(a.start);
        (&hi[..a.len()], &mut lo[b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_partition_the_buffer() {
        for n in 1..=6 {
            for len in 0..=3 * n {
                let mut next = 0;
                for k in 0..n {
                    let s = segment(len, n, k);
                    assert_eq!(s.start, next, "len {len} n {n} k {k}");
                    assert!(s.len() == len / n || s.len() == len / n + 1);
                    next = s.end;
                }
                assert_eq!(next, len, "len {len} n {n}");
            }
        }
    }

    #[test]
    fn chunks_partition_a_segment() {
        for c in [1, 2, 3, 7] {
            for len in 0..40usize {
                let mut next = 0;
                for j in 0..len.div_ceil(c) {
                    let r = chunk(len, c, j);
                    assert_eq!(r.start, next);
                    assert!(!r.is_empty() && r.len() <= c);
                    next = r.end;
                }
                assert_eq!(next, len);
                assert!(chunk(len, c, len.div_ceil(c)).is_empty());
            }
        }
    }

    /// Runs the schedule symbolically: each rank's segment k is the set of
    /// ranks whose terms it holds. Reduce-scatter must deliver each
    /// segment's full set to its owner exactly once per term; all-gather
    /// must give every rank every full segment. Also checks that what a
    /// rank receives is what its predecessor sends, step by step.
    #[test]
    fn schedule_reduces_and_gathers_everything() {
        for n in 1..=7usize {
            // held[r][k]: count of each rank's term in rank r's segment k.
            let mut held: Vec<Vec<Vec<u32>>> = (0..n)
                .map(|r| {
                    (0..n)
                        .map(|_| (0..n).map(|t| u32::from(t == r)).collect())
                        .collect()
                })
                .collect();
            for s in 0..n.saturating_sub(1) {
                let sent: Vec<_> = (0..n)
                    .map(|r| {
                        let (tx, _) = reduce_scatter_step(r, n, s);
                        (tx, held[r][tx].clone())
                    })
                    .collect();
                for r in 0..n {
                    let (_, rx) = reduce_scatter_step(r, n, s);
                    let (k, terms) = &sent[(r + n - 1) % n];
                    assert_eq!(*k, rx, "n {n} step {s} rank {r}");
                    for (h, t) in held[r][rx].iter_mut().zip(terms) {
                        *h += t;
                    }
                }
            }
            for (r, h) in held.iter().enumerate() {
                assert_eq!(h[owned_segment(r, n)], vec![1; n], "n {n} rank {r}");
            }
            let mut full: Vec<Vec<bool>> = (0..n)
                .map(|r| (0..n).map(|k| k == owned_segment(r, n)).collect())
                .collect();
            for s in 0..n.saturating_sub(1) {
                let sent: Vec<usize> = (0..n).map(|r| all_gather_step(r, n, s).0).collect();
                for (r, (f, &k)) in full.iter().zip(&sent).enumerate() {
                    assert!(f[k], "n {n}: rank {r} sends a partial segment");
                }
                for r in 0..n {
                    let (_, rx) = all_gather_step(r, n, s);
                    assert_eq!(sent[(r + n - 1) % n], rx);
                    assert!(!full[r][rx], "n {n}: segment {rx} arrives twice at {r}");
                    full[r][rx] = true;
                }
            }
            assert!(full.iter().flatten().all(|&f| f), "n {n}");
        }
    }

    #[test]
    fn split_disjoint_either_order() {
        let mut v: Vec<u32> = (0..10).collect();
        let (a, b) = split_disjoint(&mut v, 0..3, 5..9);
        assert_eq!((a, &*b), (&[0, 1, 2][..], &[5, 6, 7, 8][..]));
        let (a, b) = split_disjoint(&mut v, 6..10, 2..4);
        assert_eq!((a, &*b), (&[6, 7, 8, 9][..], &[2, 3][..]));
        let (a, b) = split_disjoint(&mut v, 4..4, 4..6);
        assert_eq!((a.len(), b.len()), (0, 2));
        let (a, b) = split_disjoint(&mut v, 4..6, 4..4);
        assert_eq!((a.len(), b.len()), (2, 0));
    }
}
