//! Bucket planning: which ranges of the gradient buffer are all-reduced
//! together.
//!
//! Backward produces gradients from the last layer to the first, which in
//! the flat buffer is from high offsets to low. Buckets are contiguous
//! ranges of whole layers, in that order, of at least `bucket_floats` each
//! (but the last), so a bucket can start as soon as its lowest layer is done.

use std::ops::Range;

/// Buckets over `layers` (contiguous, ascending ranges that cover the
/// buffer from 0), in the order backward completes them: descending
/// offsets.
pub fn plan_buckets(layers: &[Range<usize>], bucket_floats: usize) -> Vec<Range<usize>> {
    let mut buckets: Vec<Range<usize>> = vec![];
    for r in layers.iter().rev() {
        match buckets.last_mut() {
            Some(b) if b.len() < bucket_floats => b.start = r.start,
            _ => buckets.push(r.clone()),
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layer ranges of a model with these layer sizes (in floats).
    fn layers(sizes: &[usize]) -> Vec<Range<usize>> {
        let mut lo = 0;
        sizes
            .iter()
            .map(|&n| {
                lo += n;
                lo - n..lo
            })
            .collect()
    }

    #[test]
    fn buckets_cover_the_buffer_in_backward_order() {
        for sizes in [
            vec![33],
            vec![88, 27],
            vec![704, 2080, 528, 51],
            vec![1100; 5],
        ] {
            let l = layers(&sizes);
            let total = l.last().unwrap().end;
            for floats in [1, 50, 1000, 5000, 1 << 30] {
                let b = plan_buckets(&l, floats);
                assert_eq!(b[0].end, total);
                assert_eq!(b.last().unwrap().start, 0);
                for w in b.windows(2) {
                    assert_eq!(w[0].start, w[1].end, "contiguous, descending");
                }
                // Every bucket but the last reaches the target size.
                for x in &b[..b.len() - 1] {
                    assert!(x.len() >= floats.min(total));
                }
                // Buckets start and end on layer boundaries.
                for x in &b {
                    assert!(l.iter().any(|r| r.start == x.start));
                    assert!(l.iter().any(|r| r.end == x.end));
                }
            }
        }
    }

    #[test]
    fn one_bucket_per_layer_when_buckets_are_small() {
        let l = layers(&[704, 2080, 99]);
        assert_eq!(plan_buckets(&l, 1).len(), 3);
        assert_eq!(plan_buckets(&l, 1 << 30).len(), 1);
    }
}
