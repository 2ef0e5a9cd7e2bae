//! Which global sample indices form the batch of a step, and which part of
//! it each rank takes.
//!
//! The global batch of a step depends only on (seed, step): every epoch is a
//! fresh pseudo-random permutation of the training set, computed per index
//! with no memory, so any rank can compute any position of any epoch and a
//! run resumed at step `s` sees exactly the batches it would have seen.

use std::ops::Range;

pub use crate::rng::mix64 as splitmix64;

/// Hashes a short sequence of words into one well-mixed u64.
pub fn hash_words(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x243f_6a88_85a3_08d3, |h, &w| splitmix64(h ^ splitmix64(w)))
}

const ROUNDS: usize = 4;

/// A pseudo-random bijection on `0..n`, evaluated per index in O(1)
/// (expected) time and no memory.
///
/// A balanced Feistel network permutes the `2*half_bits`-bit domain
/// `0..4^half_bits`, the smallest such domain holding `n`; values that land
/// at or above `n` are fed through again ("cycle walking"), which stays a
/// bijection on `0..n`. The domain is below `4n`, so fewer than four passes
/// through the network are needed on average.
#[derive(Clone, Debug)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [u64; ROUNDS],
}

impl Permutation {
    pub fn new(n: u64, seed: u64, epoch: u64) -> Self {
        let mut half_bits = 0u32;
        while half_bits < 32 && (1u128 << (2 * half_bits)) < n as u128 {
            half_bits += 1;
        }
        let base = hash_words(&[seed, epoch]);
        let keys = std::array::from_fn(|r| splitmix64(base ^ splitmix64(r as u64)));
        Permutation { n, half_bits, keys }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The image of `i`; `i` must be below `n`.
    pub fn apply(&self, i: u64) -> u64 {
        debug_assert!(i < self.n, "index {i} outside permutation of {}", self.n);
        let mut x = self.feistel(i);
        // `i < n` is in the cycle of the Feistel permutation containing it,
        // so walking along that cycle reaches a value below `n`.
        while x >= self.n {
            x = self.feistel(x);
        }
        x
    }

    fn feistel(&self, x: u64) -> u64 {
        let h = self.half_bits;
        let mask = if h == 0 { 0 } else { u64::MAX >> (64 - h) };
        let (mut left, mut right) = ((x >> h) & mask, x & mask);
        for &k in &self.keys {
            let f = splitmix64(right ^ k) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << h) | right
    }
}

/// The global sample indices of the batch at `step`: position
/// `p = step*global_batch + j` is element `p % n` of epoch `p / n`'s
/// permutation. Returns an empty batch when `n == 0`.
pub fn global_batch(seed: u64, step: u64, global_batch: usize, n: usize) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    let n128 = n as u128;
    let start = step as u128 * global_batch as u128;
    let mut out = Vec::with_capacity(global_batch);
    let mut epoch = start / n128;
    let mut perm = Permutation::new(n as u64, seed, epoch as u64);
    for j in 0..global_batch as u128 {
        let p = start + j;
        // A batch spans few epochs; derive new keys only when it changes.
        if p / n128 != epoch {
            epoch = p / n128;
            perm = Permutation::new(n as u64, seed, epoch as u64);
        }
        out.push(perm.apply((p % n128) as u64));
    }
    out
}

/// The contiguous slice of `0..total` that `rank` of `world` takes: sizes
/// differ by at most one, and slices are empty when `total < world`.
/// Returns an empty range for `world == 0` or `rank >= world`.
pub fn shard(total: usize, rank: usize, world: usize) -> Range<usize> {
    if world == 0 || rank >= world {
        return 0..0;
    }
    let at = |r: usize| (total as u128 * r as u128 / world as u128) as usize;
    at(rank)..at(rank + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_bijection(p: &Permutation) -> bool {
        let n = p.len() as usize;
        let mut seen = vec![false; n];
        for i in 0..n as u64 {
            let y = p.apply(i) as usize;
            if y >= n || seen[y] {
                return false;
            }
            seen[y] = true;
        }
        true
    }

    #[test]
    fn permutation_is_bijection() {
        for n in [1u64, 2, 3, 4, 5, 7, 16, 17, 1000, 4096, 4097] {
            for seed in [0, 1, 42] {
                for epoch in [0, 1, 9] {
                    let p = Permutation::new(n, seed, epoch);
                    assert!(is_bijection(&p), "n={n} seed={seed} epoch={epoch}");
                }
            }
        }
    }

    #[test]
    fn permutation_differs_between_epochs_and_seeds() {
        let n = 1000;
        let image = |seed, epoch| {
            let p = Permutation::new(n, seed, epoch);
            (0..n).map(|i| p.apply(i)).collect::<Vec<_>>()
        };
        let base = image(7, 0);
        assert_ne!(base, image(7, 1));
        assert_ne!(base, image(8, 0));
        assert_ne!(base, (0..n).collect::<Vec<_>>());
        assert_eq!(base, image(7, 0));
    }

    #[test]
    fn permutation_large_domain() {
        let p = Permutation::new(u64::MAX, 3, 0);
        let y = p.apply(u64::MAX - 1);
        assert!(y < u64::MAX);
        let q = Permutation::new(1 << 40, 3, 0);
        assert!(q.apply(12345) < 1 << 40);
    }

    #[test]
    fn global_batch_covers_each_epoch_once() {
        let (n, gb) = (100usize, 7usize);
        // 100 steps of 7 = 7 epochs exactly.
        let all: Vec<u64> = (0..100).flat_map(|s| global_batch(5, s, gb, n)).collect();
        for epoch in all.chunks(n) {
            let mut e = epoch.to_vec();
            e.sort_unstable();
            assert_eq!(e, (0..n as u64).collect::<Vec<_>>());
        }
        assert_ne!(&all[..n], &all[n..2 * n]);
        assert_eq!(global_batch(5, 3, gb, n), all[21..28].to_vec());
        assert!(global_batch(5, 3, gb, 0).is_empty());
    }

    #[test]
    fn shards_partition_total() {
        for total in [0usize, 1, 2, 3, 7, 10, 64, 100, 1001] {
            for world in 1..=17 {
                let mut next = 0;
                let (mut lo, mut hi) = (usize::MAX, 0);
                for rank in 0..world {
                    let r = shard(total, rank, world);
                    assert_eq!(r.start, next, "total={total} world={world}");
                    next = r.end;
                    lo = lo.min(r.len());
                    hi = hi.max(r.len());
                }
                assert_eq!(next, total);
                assert!(hi - lo <= 1);
            }
        }
        assert_eq!(shard(10, 0, 0), 0..0);
        assert_eq!(shard(10, 3, 2), 0..0);
    }
}
