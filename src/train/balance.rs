//! Load balancing (`--balance even|static|auto`): how many samples of each
//! global batch every rank takes.
//!
//! The global batch of a step is fixed by (seed, step) and gradients are
//! weighted by sample counts (loss scales λ_t·n/N_t with N_t the global
//! label counts), so the slices may have any sizes and the step still
//! computes the global-batch mean gradient. Only float rounding differs
//! between partitions.
//!
//! * `even`: sizes differ by at most one (`sampler::shard`).
//! * `static`: in proportion to `--balance-weights`, fixed for the run.
//! * `auto`: every rank measures its compute time (forward + backward, not
//!   the waits) per sample; every `--balance-every` steps the ranks add up
//!   a one-hot vector of those numbers (one small all-reduce, exact: all
//!   other entries are 0), smooth them the same way, and each computes the
//!   same new partition from the same numbers ([`plan`]): proportional to
//!   speed, at least `--accum-steps` samples per rank (one per micro-batch),
//!   at most [`MAX_SHARE`]× the even share (the workspace is sized for
//!   that), and only when the predicted step time improves by more than
//!   [`HYSTERESIS`] (so the plan does not oscillate on noise).

use std::ops::Range;

use crate::comm::Communicator;
use crate::config::{BalanceMode, LoopConfig};
use crate::data::partition::{BalanceState, Partition};
use crate::error::{Error, Result};

/// `auto` never gives a rank more than this many times the even share:
/// the workspaces (activations, the host batch) are sized for it.
pub const MAX_SHARE: usize = 4;
/// A new plan is adopted only when it shortens the predicted step
/// (the slowest rank's slice × its time per sample) by more than this.
pub const HYSTERESIS: f64 = 0.05;
/// Weight of the newest window in the smoothed time per sample.
pub const SMOOTHING: f64 = 0.5;

/// What a re-plan decided (for the log line and the metrics record).
#[derive(Clone, Debug, PartialEq)]
pub struct Replan {
    pub partition: Partition,
    /// The smoothed seconds per sample the plan was made from.
    pub secs_per_sample: Vec<f64>,
}

/// This rank's view of the partition, and (auto) its measurements.
#[derive(Clone, Debug)]
pub struct Balancer {
    mode: BalanceMode,
    every: u64,
    rank: usize,
    min: usize,
    max: usize,
    partition: Partition,
    /// Smoothed seconds per sample of every rank, the same on all ranks;
    /// empty before the first exchange.
    secs_per_sample: Vec<f64>,
    /// This rank's compute since the last exchange.
    window_secs: f64,
    window_rows: usize,
    /// The first step of a process (allocations, cold caches) is not
    /// measured.
    warm: bool,
}

/// The fewest samples a rank takes: one per micro-batch.
pub fn min_slice(t: &LoopConfig) -> usize {
    t.accum_steps.max(1)
}

/// The most samples any rank can take under `t` on `world` ranks: what
/// the workspaces must hold.
pub fn max_slice(t: &LoopConfig, world: usize) -> usize {
    let total = t.global_batch;
    let world = world.max(1);
    let even = total.div_ceil(world);
    match t.balance {
        BalanceMode::Even => even,
        BalanceMode::Static => static_partition(t, world)
            .sizes
            .into_iter()
            .max()
            .unwrap_or(even),
        BalanceMode::Auto => {
            let rest = (world - 1) * min_slice(t);
            (MAX_SHARE * even).min(total.saturating_sub(rest)).max(even)
        }
    }
}

/// The checks that depend on the number of ranks (the global batch holds
/// at least `--accum-steps` samples per rank: checked before this).
pub fn check(t: &LoopConfig, world: usize) -> Result<()> {
    if t.balance == BalanceMode::Static && t.balance_weights.len() != world {
        return Err(Error::config(format!(
            "--balance-weights has {} weight(s) for {world} rank(s): give one per rank",
            t.balance_weights.len()
        )));
    }
    Ok(())
}

/// The `static` partition: sizes in proportion to the weights.
fn static_partition(t: &LoopConfig, world: usize) -> Partition {
    if t.balance_weights.len() != world {
        return Partition::even(t.global_batch, world);
    }
    let cost: Vec<f64> = t.balance_weights.iter().map(|w| 1.0 / w).collect();
    let sizes = split(&cost, t.global_batch, min_slice(t), t.global_batch);
    Partition { sizes }
}

impl Balancer {
    /// The partition a run starts with (`auto` starts even).
    pub fn new(t: &LoopConfig, rank: usize, world: usize) -> Self {
        let partition = match t.balance {
            BalanceMode::Static => static_partition(t, world),
            BalanceMode::Even | BalanceMode::Auto => Partition::even(t.global_batch, world),
        };
        Balancer {
            mode: t.balance,
            every: t.balance_every.max(1),
            rank,
            min: min_slice(t),
            max: max_slice(t, world),
            partition,
            secs_per_sample: Vec::new(),
            window_secs: 0.0,
            window_rows: 0,
            warm: false,
        }
    }

    pub fn mode(&self) -> BalanceMode {
        self.mode
    }

    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// This rank's positions in every global batch.
    pub fn range(&self) -> Range<usize> {
        self.partition.range(self.rank)
    }

    /// The largest slice this rank may be given.
    pub fn max_slice(&self) -> usize {
        self.max
            .max(self.partition.sizes.iter().copied().max().unwrap_or(0))
    }

    /// Adds one step's compute (forward + backward of `rows` samples).
    pub fn record(&mut self, rows: usize, secs: f64) {
        if self.mode != BalanceMode::Auto {
            return;
        }
        if !self.warm {
            self.warm = true;
            return;
        }
        self.window_secs += secs;
        self.window_rows += rows;
    }

    /// Whether the ranks re-plan after `step` (0-based): under `auto`,
    /// after every `--balance-every`-th step, counted from the run's start
    /// (so a resumed run re-plans at the same steps).
    pub fn due(&self, step: u64) -> bool {
        self.mode == BalanceMode::Auto && (step + 1) % self.every == 0
    }

    /// The exchange and the plan (call on every rank when [`due`]): the
    /// new partition, if it changed.
    ///
    /// [`due`]: Balancer::due
    pub fn replan(&mut self, comm: &dyn Communicator) -> Result<Option<Replan>> {
        let n = self.partition.world();
        let mut v = vec![0.0; 2 * n];
        v[self.rank] = self.window_secs;
        v[n + self.rank] = self.window_rows as f64;
        comm.all_reduce_sum_f64(&mut v)?;
        (self.window_secs, self.window_rows) = (0.0, 0);
        let window: Vec<f64> = (0..n)
            .map(|r| match v[n + r] > 0.0 && v[r] > 0.0 {
                true => v[r] / v[n + r],
                false => f64::NAN,
            })
            .collect();
        self.secs_per_sample = smooth(&self.secs_per_sample, &window);
        let total = self.partition.total();
        let new = plan(
            &self.partition.sizes,
            &self.secs_per_sample,
            total,
            self.min,
            self.max,
            HYSTERESIS,
        );
        Ok(new.map(|sizes| {
            self.partition = Partition { sizes };
            Replan {
                partition: self.partition.clone(),
                secs_per_sample: self.secs_per_sample.clone(),
            }
        }))
    }

    /// What a checkpoint keeps (`auto` only).
    pub fn state(&self) -> Option<BalanceState> {
        (self.mode == BalanceMode::Auto).then(|| BalanceState {
            partition: self.partition.clone(),
            secs_per_sample: self.secs_per_sample.clone(),
        })
    }

    /// Continues from a checkpoint's state; false (and nothing changes)
    /// unless this is `auto` on the same number of ranks, with the same
    /// global batch and a partition within this run's bounds.
    pub fn restore(&mut self, st: &BalanceState) -> bool {
        let p = &st.partition;
        let fits = self.mode == BalanceMode::Auto
            && p.world() == self.partition.world()
            && p.total() == self.partition.total()
            && p.sizes.iter().all(|&s| (self.min..=self.max).contains(&s))
            && (st.secs_per_sample.is_empty() || st.secs_per_sample.len() == p.world());
        if fits {
            self.partition = p.clone();
            self.secs_per_sample = st.secs_per_sample.clone();
        }
        fits
    }
}

/// The smoothed seconds per sample: the newest window weighted by
/// [`SMOOTHING`]; a rank without a measurement (NaN) keeps its old value.
pub fn smooth(prev: &[f64], window: &[f64]) -> Vec<f64> {
    window
        .iter()
        .enumerate()
        .map(
            |(r, &w)| match prev.get(r).copied().filter(|p| p.is_finite()) {
                Some(p) if w.is_finite() => SMOOTHING * w + (1.0 - SMOOTHING) * p,
                Some(p) => p,
                None => w,
            },
        )
        .collect()
}

/// The new sizes for seconds-per-sample `secs`, or None to keep
/// `current`: no usable measurement for some rank, the same sizes, or a
/// predicted step time (max over ranks of size × secs) not shorter than
/// `current`'s by more than the fraction `hysteresis`. A pure function of
/// its arguments, so every rank computes the same plan.
pub fn plan(
    current: &[usize],
    secs: &[f64],
    total: usize,
    min: usize,
    max: usize,
    hysteresis: f64,
) -> Option<Vec<usize>> {
    if secs.len() != current.len() || secs.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return None;
    }
    let new = split(secs, total, min, max);
    let step = |sizes: &[usize]| {
        sizes
            .iter()
            .zip(secs)
            .map(|(&n, &s)| n as f64 * s)
            .fold(0.0, f64::max)
    };
    let in_bounds =
        current.iter().sum::<usize>() == total && current.iter().all(|&n| (min..=max).contains(&n));
    let better = step(&new) < (1.0 - hysteresis) * step(current);
    (new != current && (better || !in_bounds)).then_some(new)
}

/// `total` samples over ranks whose sample costs `cost[r]`, each rank
/// between `min` and `max` samples, minimising the largest `size × cost`
/// (so sizes come out in proportion to 1/cost): every rank starts at
/// `min`, then each further sample goes to the rank that would finish it
/// first (ties: the lower rank). Needs `cost.len() × min ≤ total ≤
/// cost.len() × max`; outside that, sizes are clamped and may not sum to
/// `total`.
pub fn split(cost: &[f64], total: usize, min: usize, max: usize) -> Vec<usize> {
    let n = cost.len();
    let mut sizes = vec![min.min(total / n.max(1)); n];
    let mut left = total - sizes.iter().sum::<usize>();
    while left > 0 {
        let next = (0..n).filter(|&r| sizes[r] < max).min_by(|&a, &b| {
            let fa = (sizes[a] + 1) as f64 * cost[a];
            let fb = (sizes[b] + 1) as f64 * cost[b];
            fa.total_cmp(&fb).then(a.cmp(&b))
        });
        let Some(r) = next else { break };
        // Rank r would win again while its next sample finishes before the
        // best of the others' (ties: the lower rank): give it all of those
        // at once (one at a time would be O(total · n)).
        let other = (0..n)
            .filter(|&q| q != r && sizes[q] < max)
            .map(|q| ((sizes[q] + 1) as f64 * cost[q], q))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let take = match other {
            None => left,
            Some((f, q)) => {
                let wins = |j: usize| {
                    let fr = (sizes[r] + j) as f64 * cost[r];
                    fr.total_cmp(&f).then(r.cmp(&q)).is_lt()
                };
                let mut k = ((f / cost[r]) as usize)
                    .saturating_sub(sizes[r])
                    .clamp(1, left);
                while k > 1 && !wins(k) {
                    k -= 1;
                }
                while k < left && wins(k + 1) {
                    k += 1;
                }
                k
            }
        };
        let take = take.min(left).min(max - sizes[r]);
        sizes[r] += take;
        left -= take;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The greedy split, one sample at a time: the reference.
    fn split_slow(cost: &[f64], total: usize, min: usize, max: usize) -> Vec<usize> {
        let n = cost.len();
        let mut sizes = vec![min; n];
        for _ in n * min..total {
            let r = (0..n)
                .filter(|&r| sizes[r] < max)
                .min_by(|&a, &b| {
                    let fa = (sizes[a] + 1) as f64 * cost[a];
                    let fb = (sizes[b] + 1) as f64 * cost[b];
                    fa.total_cmp(&fb).then(a.cmp(&b))
                })
                .unwrap();
            sizes[r] += 1;
        }
        sizes
    }

    #[test]
    fn split_preserves_the_sum_and_respects_the_bounds() {
        let costs: [&[f64]; 5] = [
            &[1.0, 1.0, 2.0],
            &[1.0, 1e-6],
            &[3.0, 1.0, 1.0, 0.5],
            &[1.0],
            &[0.7, 0.7, 0.7],
        ];
        for cost in costs {
            for total in [cost.len(), 7, 30, 256, 1001] {
                for min in [1, 2] {
                    if min * cost.len() > total {
                        continue;
                    }
                    let even = total.div_ceil(cost.len());
                    for max in [total, (4 * even).min(total)] {
                        let s = split(cost, total, min, max);
                        assert_eq!(s.iter().sum::<usize>(), total, "{cost:?} {total}");
                        assert!(s.iter().all(|&n| n >= min && n <= max), "{s:?}");
                        assert_eq!(s, split_slow(cost, total, min, max), "{cost:?} {total}");
                    }
                }
            }
        }
    }

    #[test]
    fn split_is_proportional_to_speed() {
        // One of three ranks twice as slow: 2/5, 2/5, 1/5.
        assert_eq!(split(&[1.0, 1.0, 2.0], 30, 1, 30), vec![12, 12, 6]);
        assert_eq!(split(&[2.0, 1.0, 1.0], 250, 1, 250), vec![50, 100, 100]);
        // A very slow rank keeps its minimum of one sample.
        assert_eq!(split(&[1.0, 1e-6], 30, 1, 30), vec![1, 29]);
        // The cap holds even against a very fast rank.
        assert_eq!(split(&[1.0, 1.0, 1e-6], 30, 1, 20), vec![5, 5, 20]);
    }

    #[test]
    fn plan_keeps_the_partition_within_the_hysteresis() {
        let even = [10, 10, 10];
        // Equal speeds: nothing to change.
        assert_eq!(plan(&even, &[1.0, 1.0, 1.0], 30, 1, 30, 0.05), None);
        // 3% apart: a one-sample move would gain less than 5%.
        assert_eq!(plan(&even, &[1.0, 1.0, 1.03], 30, 1, 30, 0.05), None);
        // Twice as slow: move work away from rank 2.
        assert_eq!(
            plan(&even, &[1.0, 1.0, 2.0], 30, 1, 30, 0.05),
            Some(vec![12, 12, 6])
        );
        // Once there, small noise keeps it.
        assert_eq!(plan(&[12, 12, 6], &[1.0, 1.04, 2.0], 30, 1, 30, 0.05), None);
        // Without usable numbers, nothing changes.
        assert_eq!(plan(&even, &[1.0, f64::NAN, 2.0], 30, 1, 30, 0.05), None);
        assert_eq!(plan(&even, &[1.0, 0.0, 2.0], 30, 1, 30, 0.05), None);
        assert_eq!(plan(&even, &[1.0, 2.0], 30, 1, 30, 0.05), None);
        // A partition outside the bounds is always replaced.
        assert_eq!(
            plan(&[28, 1, 1], &[1.0, 1.0, 1.0], 30, 2, 30, 0.05),
            Some(vec![10, 10, 10])
        );
    }

    #[test]
    fn plan_is_deterministic() {
        let secs = [1.3e-4, 0.9e-4, 2.7e-4, 1.1e-4];
        let a = plan(&[64, 64, 64, 64], &secs, 256, 1, 256, 0.05);
        for _ in 0..10 {
            assert_eq!(plan(&[64, 64, 64, 64], &secs, 256, 1, 256, 0.05), a);
        }
        assert!(a.is_some());
    }

    #[test]
    fn smoothing_averages_windows_and_keeps_missing_ones() {
        assert_eq!(smooth(&[], &[2.0, 4.0]), vec![2.0, 4.0]);
        assert_eq!(smooth(&[2.0, 4.0], &[4.0, f64::NAN]), vec![3.0, 4.0]);
        let s = smooth(&[], &[f64::NAN]);
        assert!(s[0].is_nan());
        assert_eq!(smooth(&[f64::NAN], &[1.0]), vec![1.0]);
    }

    fn cfg(mode: BalanceMode, weights: &[f64], gb: usize, accum: usize) -> LoopConfig {
        LoopConfig {
            global_batch: gb,
            accum_steps: accum,
            balance: mode,
            balance_weights: weights.to_vec(),
            balance_every: 5,
            ..LoopConfig::default()
        }
    }

    #[test]
    fn workspaces_hold_the_largest_slice() {
        assert_eq!(max_slice(&cfg(BalanceMode::Even, &[], 30, 1), 4), 8);
        let st = cfg(BalanceMode::Static, &[1.0, 29.0], 30, 1);
        assert_eq!(Balancer::new(&st, 0, 2).partition().sizes, vec![1, 29]);
        assert_eq!(max_slice(&st, 2), 29);
        // auto: 4× the even share, less what the others must keep.
        assert_eq!(max_slice(&cfg(BalanceMode::Auto, &[], 30, 1), 3), 28);
        assert_eq!(max_slice(&cfg(BalanceMode::Auto, &[], 300, 2), 3), 296);
        assert_eq!(max_slice(&cfg(BalanceMode::Auto, &[], 1000, 1), 10), 400);
        // micro-batches: at least one sample each.
        let st = cfg(BalanceMode::Static, &[1.0, 100.0], 30, 3);
        assert_eq!(Balancer::new(&st, 0, 2).partition().sizes, vec![3, 27]);
        assert!(check(&st, 2).is_ok());
        assert!(check(&st, 3).is_err());
    }

    #[test]
    fn auto_re_plans_on_schedule_and_restores_only_a_fitting_state() {
        let t = cfg(BalanceMode::Auto, &[], 30, 1);
        let b = Balancer::new(&t, 1, 3);
        assert_eq!(b.range(), 10..20);
        assert!(!b.due(0) && b.due(4) && !b.due(5) && b.due(9));
        assert!(!Balancer::new(&cfg(BalanceMode::Even, &[], 30, 1), 0, 3).due(4));
        let st = BalanceState {
            partition: Partition {
                sizes: vec![12, 12, 6],
            },
            secs_per_sample: vec![1.0, 1.0, 2.0],
        };
        let mut b2 = b.clone();
        assert!(b2.restore(&st));
        assert_eq!(b2.range(), 12..24);
        assert_eq!(b2.state(), Some(st.clone()));
        let mut other_world = Balancer::new(&t, 1, 2);
        assert!(!other_world.restore(&st));
        assert_eq!(other_world.partition().sizes, vec![15, 15]);
        let mut not_auto = Balancer::new(&cfg(BalanceMode::Even, &[], 30, 1), 1, 3);
        assert!(!not_auto.restore(&st));
        assert_eq!(not_auto.state(), None);
    }
}
