//! `--sync local`: each rank trains alone for H steps, then the ranks
//! merge (DiLoCo-style local SGD with an outer update).
//!
//! ```text
//! every step:   θ_r ← inner_optimizer(θ_r, g_r)     g_r: this rank's own
//!                                                   slice, no all-reduce
//! every H steps (and after the last step):
//!     Δ   = (1/n) Σ_r (θ − θ_r)                     one all-reduce of the
//!         = θ − (1/n) Σ_r θ_r                       ranks' parameter changes
//!                                                   (f32 or bf16)
//!     v   ← μ·v + Δ                                 θ: the shared parameters
//!                                                   of the last outer step
//!     θ   ← θ − α·(μ > 0 ? Δ + μ·v : v)             (Nesterov when μ > 0)
//!     θ_r ← θ
//! ```
//!
//! α = 1, μ = 0 is plain model averaging. The ranks send their change
//! θ − θ_r rather than θ_r (the same sum): with `--outer-wire bf16` the
//! rounding is then relative to the change, not to the parameters. θ and v live on the host (the
//! outer update is an axpy every H steps) and are the same on every rank;
//! each rank keeps its own inner optimizer state across outer steps. The
//! all-reduce is a [`GradBuckets`] of the run's kind (ring, MPI, NCCL on
//! device buffers) over a second buffer of the backend, so the GPU path
//! runs the same code.
//!
//! Within a round the loss scales are over this rank's own labels (a
//! per-rank mean: no all-reduce averages afterwards), and no collective
//! runs between two outer steps: a rank never waits for another inside a
//! round. Each rank keeps one record per step (its loss sums and label
//! counts per task, whether it skipped the step's update, whether that
//! ends the run) and the round's records go in ONE f64 all-reduce at the
//! outer boundary, before the parameters (also at a checkpoint inside a
//! round, which is collective anyway). Only then are the round's step
//! lines and metrics records written, with the global losses.
//!
//! NaN/Inf in local mode: a rank whose own step has a non-finite loss or
//! gradient leaves its own update out (its θ_r and inner state stay as
//! they were; the other ranks' updates of that step stand), counts it in
//! its own updates-skipped-in-a-row, and goes on. At the next exchange
//! every rank sees every rank's records, so all take the same decision:
//! under `--on-nonfinite abort`, or when a rank skipped more than
//! `--max-skips` updates in a row, every rank stops there with one
//! message naming the first such step (before the round's parameters are
//! merged); under `skip` the step line warns "update skipped on k of n
//! rank(s)". The ranks' update counts may then differ (AdamW's bias
//! correction counts each rank's own); checkpoints keep each rank's.

use std::time::Instant;

use crate::backend::Backend;
use crate::checkpoint::local::{self, LocalState};
use crate::checkpoint::training::opt_state_len;
use crate::comm::{Communicator, Wire};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::gradsync::{self, GradBuckets, SyncOptions};
use crate::model::layout::ParamLayout;
use crate::watchdog::Watchdog;

use super::clock::Phase;
use super::{StepReport, Trainer};
use crate::config::NonFinitePolicy;
use crate::error::Error;

/// The outer state and the parameter all-reduce of a local-mode run.
pub struct Outer<B: Backend> {
    /// H, α, μ.
    pub local_steps: u64,
    pub alpha: f32,
    pub mu: f32,
    /// θ: the shared parameters after the last outer step.
    pub theta: Vec<f32>,
    /// v: the outer momentum.
    pub v: Vec<f32>,
    /// (1/n) Σ (θ − θ_r) over the ranks; declared before `delta`, so
    /// dropped first (it may hold a pointer into that buffer).
    sync: Box<dyn GradBuckets>,
    /// θ − θ_r, then Δ (a buffer of the backend, for NCCL).
    delta: B::Buf,
    scratch: Vec<f32>,
    /// Bytes one parameter all-reduce sends (and receives) per rank.
    pub bytes_per_outer: u64,
    /// The exchange of the round's step records (see the module comment).
    round: Round,
}

/// The step records of the round so far, until they are exchanged.
#[derive(Default)]
struct Round {
    /// This step's loss sums and label counts per task (`local_losses`).
    sums: Vec<f64>,
    counts: Vec<f64>,
    /// One record per step: sums, counts, skipped (0/1), ends the run
    /// (0/1); and its step. Summed over the ranks at the exchange.
    control: Vec<f64>,
    steps: Vec<u64>,
    /// The last exchange's sums (records of `reduced_steps`) and bytes,
    /// until `Trainer::reports` hands the reports on.
    reduced: Vec<f64>,
    reduced_steps: Vec<u64>,
    /// This rank's reports of the round, waiting for the global values.
    reports: Vec<StepReport>,
}

impl<B: Backend> Outer<B> {
    /// The outer state of a run starting from `init` (θ = init, v = 0).
    pub fn new(
        cfg: &TrainConfig,
        be: &B,
        comm: &dyn Communicator,
        wd: &Watchdog,
        layout: &ParamLayout,
        init: &[f32],
    ) -> Self {
        let n = layout.total;
        let mut delta = be.alloc(n);
        let opts = SyncOptions {
            kind: cfg.comm.kind,
            wire: cfg.sync.outer_wire,
            overlap: true,
            bucket_floats: (cfg.comm.bucket_kib * 1024 / 4).max(1),
        };
        // SAFETY: `sync` is declared before `delta` in `Outer`, so it is
        // dropped first; the buffer never moves (moving `B::Buf` moves its
        // handle, not the memory); and it is written only before `ready`
        // and after `finish`.
        let sync =
            unsafe { gradsync::create(comm, &opts, be.memory(&mut delta), &layout.layer_ranges()) };
        let wire = wire_bytes(comm, cfg.sync.outer_wire);
        Outer {
            local_steps: cfg.sync.local_steps,
            alpha: cfg.sync.outer_lr,
            mu: cfg.sync.outer_momentum,
            theta: init.to_vec(),
            v: vec![0.0; n],
            sync: wd.watch_grads(sync),
            delta,
            scratch: vec![0.0; n],
            bytes_per_outer: ring_bytes(n, wire, comm.size()),
            round: Round::default(),
        }
    }
}

/// The outer update, in place, from Δ = θ − (1/n) Σ_r θ_r:
/// v ← μ·v + Δ; θ ← θ − α·(μ > 0 ? Δ + μ·v : v).
pub fn outer_update(theta: &mut [f32], v: &mut [f32], delta: &[f32], alpha: f32, mu: f32) {
    for ((t, m), &delta) in theta.iter_mut().zip(v.iter_mut()).zip(delta) {
        *m = mu * *m + delta;
        let step = if mu > 0.0 { delta + mu * *m } else { *m };
        *t -= alpha * step;
    }
}

/// Whether an outer step follows step `done` (1-based count of steps
/// done): every H steps, and after the last step of the run, so that the
/// saved and evaluated parameters are the shared θ.
pub fn is_outer_boundary(done: u64, h: u64, steps: u64) -> bool {
    done % h.max(1) == 0 || done == steps
}

/// Outer steps among the first `done` steps.
pub fn outer_steps_through(done: u64, h: u64, steps: u64) -> u64 {
    let h = h.max(1);
    done / h + u64::from(done == steps && done % h != 0)
}

/// Whether to evaluate after step `done`: every `eval_every` steps and at
/// the end; in local mode at the first outer boundary at or after each
/// such step (evaluation is on the shared θ).
pub fn eval_due(cfg: &TrainConfig, done: u64) -> bool {
    let (every, steps) = (cfg.train.eval_every, cfg.train.steps);
    if done == steps {
        return true;
    }
    if every == 0 {
        return false;
    }
    if !cfg.sync.is_local() {
        return done % every == 0;
    }
    let h = cfg.sync.local_steps.max(1);
    if !is_outer_boundary(done, h, steps) {
        return false;
    }
    let prev = done.saturating_sub(h);
    done / every > prev / every
}

/// Bytes one rank sends (and receives) in a ring all-reduce of `floats`
/// elements of `elem` bytes over `n` ranks: 2(n−1)/n of the buffer.
/// MPI and NCCL choose their own algorithms; this is the ring's count.
pub fn ring_bytes(floats: usize, elem: usize, n: usize) -> u64 {
    if n <= 1 {
        return 0;
    }
    (2 * (n - 1) as u64 * floats as u64 * elem as u64) / n as u64
}

/// f64 values of one step's record in the round's exchange: the loss
/// sums and label counts per task, skipped, ends the run.
pub fn record_len(tasks: usize) -> usize {
    2 * tasks + 2
}

/// Bytes per element on the wire: NCCL all-reduces f32 whatever `wire`.
pub fn wire_bytes(comm: &dyn Communicator, wire: Wire) -> usize {
    match (wire, comm.nccl().is_some()) {
        (Wire::Bf16, false) => 2,
        _ => 4,
    }
}

impl<B: Backend> Trainer<'_, B> {
    /// Ranks the gradient average divides by: n when the gradients are
    /// all-reduced every step, 1 in local mode (a per-rank mean).
    pub(super) fn grad_ranks(&self) -> f64 {
        match self.outer {
            Some(_) => 1.0,
            None => self.comm.size() as f64,
        }
    }

    /// Bytes this rank sends (= receives) in step `step` (0-based) and in
    /// all steps up to and including it: the gradient all-reduce every
    /// step, or the parameter all-reduce at outer boundaries.
    pub(super) fn step_bytes(&self, step: u64) -> (u64, u64) {
        let done = step + 1;
        match &self.outer {
            None => {
                let wire = wire_bytes(self.comm, self.cfg.comm.wire);
                let per = ring_bytes(self.num_params(), wire, self.comm.size());
                (per, per * done)
            }
            Some(o) => {
                let (h, steps) = (o.local_steps, self.cfg.train.steps);
                let now = u64::from(is_outer_boundary(done, h, steps));
                let total = outer_steps_through(done, h, steps);
                (now * o.bytes_per_outer, total * o.bytes_per_outer)
            }
        }
    }

    /// Bytes per step this rank sends (= receives): this run's mode
    /// amortised (local: one parameter all-reduce per H steps), and what
    /// every-step sync would send (one gradient all-reduce per step).
    pub fn bytes_per_step(&self) -> (f64, u64) {
        let wire = wire_bytes(self.comm, self.cfg.comm.wire);
        let every = ring_bytes(self.num_params(), wire, self.comm.size());
        match &self.outer {
            None => (every as f64, every),
            Some(o) => {
                let rec = self.record_bytes() as f64;
                (o.bytes_per_outer as f64 / o.local_steps as f64 + rec, every)
            }
        }
    }

    /// Bytes one step's record adds to the round's exchange (the ring's
    /// count of [`record_len`] f64 values).
    pub fn record_bytes(&self) -> u64 {
        ring_bytes(record_len(self.spec.tasks.len()), 8, self.comm.size())
    }

    /// Local mode's losses and NaN/Inf check, on this rank alone (no
    /// collective): its gradient norm (for clipping, into `stats` like the
    /// every-step path), its own mean losses, and what is not finite. The
    /// loss sums and label counts are kept for the step's record.
    pub(super) fn local_losses(
        &mut self,
        counts: &[f64],
    ) -> Result<(Vec<f64>, f32, Option<String>)> {
        let ntask = self.spec.tasks.len();
        self.be
            .sum_squares(&self.grads, self.num_params(), &mut self.stats, ntask);
        let mut stats = vec![0f32; ntask + 1];
        self.be.download(&self.stats, 0, &mut stats);
        let norm = stats[ntask].sqrt();
        let sums: Vec<f64> = stats[..ntask].iter().map(|&s| s as f64).collect();
        let losses = mean_losses(&sums, counts);
        let nonfinite = match nonfinite_tasks(&self.spec, &sums) {
            Some(bad) => Some(bad),
            None if !norm.is_finite() => Some(format!("the local gradient norm is {norm}")),
            None => None,
        };
        if let Some(o) = &mut self.outer {
            (o.round.sums, o.round.counts) = (sums, counts.to_vec());
        }
        Ok((losses, norm, nonfinite))
    }

    /// A local step whose loss or gradient is NaN/Inf: this rank leaves
    /// its own update out and goes on; whether the run ends is decided at
    /// the next exchange, by every rank alike (see the module comment).
    pub(super) fn skip_local(&mut self, step: u64, what: String) -> String {
        self.skips_in_a_row += 1;
        format!("step {}: {what} on this rank", step + 1)
    }

    /// Appends step `step`'s record to the round (`skipped`: this rank
    /// left the update out).
    fn record_step(&mut self, step: u64, skipped: bool) {
        let t = &self.cfg.train;
        let fatal = skipped
            && (t.on_nonfinite == NonFinitePolicy::Abort || self.skips_in_a_row > t.max_skips);
        let Some(o) = &mut self.outer else {
            return;
        };
        let r = &mut o.round;
        r.control.extend_from_slice(&r.sums);
        r.control.extend_from_slice(&r.counts);
        r.control.push(f64::from(u8::from(skipped)));
        r.control.push(f64::from(u8::from(fatal)));
        r.steps.push(step);
    }

    /// The round's one exchange: every rank's step records summed (one f64
    /// all-reduce), kept for [`Trainer::reports`]. A record that ends the
    /// run ends it on every rank here, with one message. Collective; a
    /// no-op when no record is waiting (the same on every rank).
    fn exchange(&mut self) -> Result<()> {
        let (ntask, size) = (self.spec.tasks.len(), self.comm.size());
        let Some(o) = &mut self.outer else {
            return Ok(());
        };
        let r = &mut o.round;
        if r.steps.is_empty() {
            return Ok(());
        }
        let mut v = std::mem::take(&mut r.control);
        self.comm.all_reduce_sum_f64(&mut v)?;
        let m = record_len(ntask);
        let first_fatal = v
            .chunks_exact(m)
            .zip(&r.steps)
            .find(|(c, _)| c[m - 1] > 0.0);
        if let Some((c, &step)) = first_fatal {
            let what = describe(&self.spec, c, size);
            let last = r.steps.last().copied().unwrap_or(step);
            let t = &self.cfg.train;
            let why = match t.on_nonfinite {
                NonFinitePolicy::Abort => {
                    "stopping (--on-nonfinite abort; `skip` would leave such updates out)".into()
                }
                NonFinitePolicy::Skip => format!(
                    "a rank skipped more than --max-skips {} updates in a row",
                    t.max_skips
                ),
            };
            return Err(Error::NonFinite(format!(
                "step {}: {what}; {why} (--sync local: seen at the exchange after step {})",
                step + 1,
                last + 1
            )));
        }
        r.reduced = v;
        r.reduced_steps = std::mem::take(&mut r.steps);
        Ok(())
    }

    /// The step reports ready for the reporter. Every-step sync: `r`
    /// itself. Local mode: `r` waits with the round's others until their
    /// records are exchanged (at the outer step, or [`Trainer::settle_round`]);
    /// then all of them, with the global losses, which steps some rank
    /// skipped, and the exchange's bytes counted at its step.
    pub fn reports(&mut self, r: StepReport) -> Vec<StepReport> {
        let per_record = self.record_bytes();
        let size = self.comm.size();
        let Some(o) = &mut self.outer else {
            return vec![r];
        };
        o.round.reports.push(r);
        let round = &mut o.round;
        let settled = round.reduced_steps.len();
        if settled == 0 || round.reports.len() < settled {
            return vec![];
        }
        let mut out: Vec<StepReport> = round.reports.drain(..settled).collect();
        let v = std::mem::take(&mut round.reduced);
        round.reduced_steps.clear();
        let m = record_len(self.spec.tasks.len());
        let before = out[0].step;
        let last = out.len() - 1;
        for (i, (r, c)) in out.iter_mut().zip(v.chunks_exact(m)).enumerate() {
            let ntask = (m - 2) / 2;
            r.task_losses = mean_losses(&c[..ntask], &c[ntask..2 * ntask]);
            r.loss = self.weights.total_loss(&r.task_losses);
            let skipped_on = c[m - 2];
            r.skipped = (skipped_on > 0.0).then(|| {
                format!(
                    "step {}: {}; update skipped on {skipped_on} of {size} rank(s) (--sync local: each rank skips its own; at most {} in a row)",
                    r.step + 1,
                    describe(&self.spec, c, size),
                    self.cfg.train.max_skips
                )
            });
            // Records sent before this exchange, and by it at its step.
            match i == last {
                false => r.bytes_sent_total += before * per_record,
                true => {
                    r.bytes_sent += (last as u64 + 1) * per_record;
                    r.bytes_sent_total += (r.step + 1) * per_record;
                }
            }
        }
        out
    }

    /// Before a checkpoint inside a round (or when the run stops there):
    /// exchanges the round's records so far and returns their reports
    /// (collective; none in every-step mode or at an outer boundary).
    pub fn settle_round(&mut self) -> Result<Vec<StepReport>> {
        self.exchange()?;
        let Some(o) = &mut self.outer else {
            return Ok(vec![]);
        };
        match o.round.reports.pop() {
            Some(r) => Ok(self.reports(r)),
            None => Ok(vec![]),
        }
    }

    /// After step `step`'s update (or its skip, `skipped`): the step's
    /// record joins the round; at an outer boundary, the round's records
    /// are exchanged, then the ranks' parameters all-reduced and the outer
    /// update applied (see the module comment). Returns whether it ran.
    pub(super) fn outer_step(&mut self, step: u64, skipped: bool) -> Result<bool> {
        let steps = self.cfg.train.steps;
        let Some(o) = &self.outer else {
            return Ok(false);
        };
        if !is_outer_boundary(step + 1, o.local_steps, steps) {
            self.record_step(step, skipped);
            return Ok(false);
        }
        self.record_step(step, skipped);
        let records = self
            .outer
            .as_ref()
            .map_or(0, |o| o.round.steps.len() as u64);
        let control = records * self.record_bytes();
        let t = Instant::now();
        self.exchange()?;
        let Some(o) = &mut self.outer else {
            return Ok(false);
        };
        self.be.download(&self.params, 0, &mut o.scratch);
        for (d, &t) in o.scratch.iter_mut().zip(&o.theta) {
            *d = t - *d;
        }
        self.be.upload(&o.scratch, &mut o.delta, 0);
        o.sync.ready(0);
        let report = o.sync.finish()?;
        self.clock
            .record_outer(t, &report, o.bytes_per_outer + control);

        let t = Instant::now();
        self.be.download(&o.delta, 0, &mut o.scratch);
        outer_update(&mut o.theta, &mut o.v, &o.scratch, o.alpha, o.mu);
        self.be.upload(&o.theta, &mut self.params, 0);
        self.clock.record(Phase::Update, t);
        Ok(true)
    }

    /// Every rank's own state, gathered for a checkpoint (collective; None
    /// in every-step mode).
    pub fn local_state(&self) -> Result<Option<LocalState>> {
        let Some(o) = &self.outer else {
            return Ok(None);
        };
        let params = self.params_to_host();
        let mut opt = vec![0.0; opt_state_len(&self.model.layout, self.cfg.optim.optimizer)];
        self.be.download(&self.opt_state, 0, &mut opt);
        let mine = local::RankState {
            params,
            opt_state: opt,
            counters: [self.updates, self.skips_in_a_row],
        };
        local::gather(self.comm, &o.v, &mine).map(Some)
    }

    /// Continues from a checkpoint's local state: θ is the checkpoint's
    /// parameters (`theta`), this rank's own parameters and inner state
    /// come from `l`.
    pub(super) fn restore_local(&mut self, theta: &[f32], l: &LocalState) {
        let me = &l.ranks[self.comm.rank()];
        self.be.upload(&me.params, &mut self.params, 0);
        self.be.upload(&me.opt_state, &mut self.opt_state, 0);
        [self.updates, self.skips_in_a_row] = me.counters;
        if let Some(o) = &mut self.outer {
            o.theta.copy_from_slice(theta);
            o.v.copy_from_slice(&l.momentum);
        }
    }
}

/// Mean losses from sums and label counts (NaN where a task had none).
fn mean_losses(sums: &[f64], counts: &[f64]) -> Vec<f64> {
    sums.iter()
        .zip(counts)
        .map(|(&s, &c)| if c > 0.0 { s / c } else { f64::NAN })
        .collect()
}

/// "the loss of task a is NaN, task b is inf" for the tasks whose loss
/// sum is not finite, if any.
fn nonfinite_tasks(spec: &crate::spec::ModelSpec, sums: &[f64]) -> Option<String> {
    let bad: Vec<String> = (spec.tasks.iter().zip(sums))
        .filter(|(_, s)| !s.is_finite())
        .map(|(t, s)| format!("{} is {s}", t.name))
        .collect();
    (!bad.is_empty()).then(|| format!("the loss of task {}", bad.join(", task ")))
}

/// What was not finite in an exchanged record `c` (summed over ranks).
fn describe(spec: &crate::spec::ModelSpec, c: &[f64], size: usize) -> String {
    let ntask = spec.tasks.len();
    let skipped_on = c[2 * ntask];
    match nonfinite_tasks(spec, &c[..ntask]) {
        Some(what) => format!("{what} (summed over the ranks)"),
        None => format!("the local gradient of {skipped_on} of {size} rank(s) is not finite"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_counts() {
        assert!(is_outer_boundary(8, 8, 20));
        assert!(!is_outer_boundary(9, 8, 20));
        assert!(is_outer_boundary(20, 8, 20));
        assert_eq!(outer_steps_through(7, 8, 20), 0);
        assert_eq!(outer_steps_through(16, 8, 20), 2);
        assert_eq!(outer_steps_through(20, 8, 20), 3);
        assert_eq!(outer_steps_through(24, 8, 24), 3);
        assert_eq!(ring_bytes(1000, 4, 1), 0);
        assert_eq!(ring_bytes(1000, 4, 4), 6000);
    }

    #[test]
    fn eval_at_boundaries() {
        let mut c = TrainConfig::default();
        (c.train.steps, c.train.eval_every) = (100, 10);
        c.sync.mode = crate::config::SyncMode::Local;
        c.sync.local_steps = 8;
        let due: Vec<u64> = (1..=100).filter(|&d| eval_due(&c, d)).collect();
        assert_eq!(due, vec![16, 24, 32, 40, 56, 64, 72, 80, 96, 100]);
    }

    #[test]
    fn averaging_and_nesterov() {
        let (mut t, mut v) = (vec![1.0f32, 2.0], vec![0.0f32; 2]);
        outer_update(&mut t, &mut v, &[0.5, -1.0], 1.0, 0.0);
        assert_eq!(t, vec![0.5, 3.0]);
        let (mut t, mut v) = (vec![1.0f32], vec![0.5f32]);
        outer_update(&mut t, &mut v, &[1.0], 0.5, 0.5);
        // Δ = 1, v = 0.25 + 1 = 1.25, θ = 1 − 0.5·(1 + 0.625) = 0.1875
        assert_eq!((t[0], v[0]), (0.1875, 1.25));
    }
}
