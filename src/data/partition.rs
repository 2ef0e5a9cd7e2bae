//! A partition of the global batch into one contiguous slice per rank, of
//! any sizes (`--balance`, see `train::balance`), and what a checkpoint
//! keeps of it.
//!
//! Rank r takes positions `sizes[0] + … + sizes[r-1]` up to, not
//! including, that plus `sizes[r]`. Gradients are weighted by sample
//! counts (the loss scales use the global label counts), so any partition
//! gives the global-batch mean gradient.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::sampler;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Samples per rank, in rank order; they sum to the global batch.
    pub sizes: Vec<usize>,
}

impl Partition {
    /// The even split of [`sampler::shard`]: sizes differ by at most one.
    pub fn even(total: usize, world: usize) -> Self {
        Partition {
            sizes: (0..world)
                .map(|r| sampler::shard(total, r, world).len())
                .collect(),
        }
    }

    pub fn total(&self) -> usize {
        self.sizes.iter().sum()
    }

    pub fn world(&self) -> usize {
        self.sizes.len()
    }

    /// The positions of the global batch that `rank` takes (empty for a
    /// rank outside the partition).
    pub fn range(&self, rank: usize) -> Range<usize> {
        if rank >= self.sizes.len() {
            return 0..0;
        }
        let start: usize = self.sizes[..rank].iter().sum();
        start..start + self.sizes[rank]
    }

    /// `12/12/6`, for log lines.
    pub fn describe(&self) -> String {
        let s: Vec<String> = self.sizes.iter().map(|n| n.to_string()).collect();
        s.join("/")
    }
}

/// The load balancer's state as a checkpoint keeps it: the partition in
/// use and the smoothed seconds of compute per sample of every rank (the
/// same numbers on every rank). Absent for `even` and `static`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalanceState {
    pub partition: Partition,
    /// Empty until the first exchange of measured speeds.
    pub secs_per_sample: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_matches_the_shards_and_ranges_tile_the_batch() {
        for (total, world) in [(30, 4), (7, 3), (1, 1), (256, 5)] {
            let p = Partition::even(total, world);
            assert_eq!(p.total(), total);
            for r in 0..world {
                assert_eq!(p.range(r), sampler::shard(total, r, world));
            }
        }
        let p = Partition {
            sizes: vec![1, 20, 9],
        };
        assert_eq!(p.range(0), 0..1);
        assert_eq!(p.range(1), 1..21);
        assert_eq!(p.range(2), 21..30);
        assert_eq!(p.range(3), 0..0);
        assert_eq!(p.describe(), "1/20/9");
    }
}
