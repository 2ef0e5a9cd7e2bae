//! The training loop. One step, top to bottom:
//!
//! ```text
//! batch  = the global batch of (seed, step); this rank takes its slice
//!          (read on a helper thread during the previous step; its size
//!          set by the partition, see train/balance.rs)
//! counts = Σ_ranks present labels per task   -> loss scales λ_t·n/N_t
//! for each micro-batch of the slice:
//!     out   = model.forward(x)
//!     grads += model.backward(losses)        one flat buffer; on the last
//!                                            micro-batch each finished bucket
//!                                            starts its all-reduce at once
//! grads  = (1/n) Σ_ranks grads               wait for the buckets in flight
//! params = optimizer(params, grads)          identical on every rank
//! every K steps (--balance auto): a new partition from the ranks' speeds
//! ```

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{Backend, LossArgs, UpdateArgs, UpdateRule};
use crate::checkpoint::training::{TrainState, opt_state_len};
use crate::comm::Communicator;
use crate::config::{NonFinitePolicy, OptimizerKind, TrainConfig};
use crate::data::{Dataset, Split, sampler};
use crate::error::{Error, Result};
use crate::gradsync::{self, GradBuckets, SyncOptions};
use crate::metrics::{EvalStats, TaskMetrics};
use crate::model::Model;
use crate::model::probe::TaskGradProbe;
use crate::spec::ModelSpec;
use crate::watchdog::Watchdog;

pub mod balance;
pub mod clock;
pub mod local;
pub mod overlap;
pub mod prefetch;
pub mod weighting;

use balance::{Balancer, Replan};
pub use clock::StepTimes;
use clock::{Phase, PhaseClock};
use prefetch::{Ahead, HostBatch, Loader, Reader};
use weighting::{TaskGradStats, TaskWeights};

/// What one step measured, for logs and metrics.
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    pub step: u64,
    pub lr: f32,
    /// Σ λ_t L_t and each L_t (NaN if no label of the task was present).
    pub loss: f64,
    pub task_losses: Vec<f64>,
    pub grad_norm: f32,
    /// Bytes this rank sent (= received) in this step's gradient or
    /// parameter all-reduce, and in all steps of the run up to this one
    /// (the ring's count, [`local::ring_bytes`]).
    pub bytes_sent: u64,
    pub bytes_sent_total: u64,
    /// `--sync local`: an outer update followed this step.
    pub outer_step: bool,
    /// The task weights λ_t of this step's loss.
    pub lambdas: Vec<f64>,
    /// Per-task gradients at the last shared layer, when measured.
    pub task_grads: Option<TaskGradStats>,
    /// Why the update was skipped (a NaN/Inf loss or gradient), if it was.
    pub skipped: Option<String>,
    pub times: StepTimes,
    /// Samples this rank computed.
    pub rows: usize,
    /// The partition chosen after this step (`--balance auto`), if it changed.
    pub replan: Option<Replan>,
}

pub struct Trainer<'a, B: Backend> {
    pub cfg: &'a TrainConfig,
    pub spec: ModelSpec,
    comm: &'a dyn Communicator,
    /// g = (1/n) Σ g_i over the ranks. Declared before `grads`, so it is
    /// dropped first: it may hold a pointer into that buffer.
    sync: Box<dyn GradBuckets>,
    pub be: B,
    pub model: Model<B>,
    pub params: B::Buf,
    grads: B::Buf,
    /// Momentum (SGD) or first and second moments (AdamW).
    opt_state: B::Buf,
    /// Per-task loss sums, then the squared gradient norm.
    stats: B::Buf,
    /// The task weights λ_t and how they move (`[tasks] weighting`).
    pub weights: TaskWeights,
    /// Each task's own gradient at the last shared layer (GradNorm and
    /// `--task-stats-every`); None when neither is on.
    probe: Option<TaskGradProbe<B>>,
    /// The batch of the current step (also scratch for `evaluate`).
    host: HostBatch,
    /// The next step's batch, read during the current one; and a buffer
    /// for the one after.
    ahead: Option<Ahead>,
    spare: Option<HostBatch>,
    loader: Loader,
    /// The thread that reads ahead, started at the first step that does.
    reader: Option<Reader>,
    /// Times the phases of each step, and traces them (`clock.trace`).
    pub clock: PhaseClock,
    /// Optimizer updates applied so far (AdamW's bias correction counts
    /// these, not steps: a skipped step is no update).
    pub updates: u64,
    /// Updates skipped in a row because of NaN/Inf values.
    pub skips_in_a_row: u64,
    /// `--sync local`: the shared θ, the outer momentum and the parameter
    /// all-reduce (None: gradients are averaged every step).
    outer: Option<local::Outer<B>>,
    /// Test-only fault injection (`RINGTRAIN_FAULT`), normally None.
    pub fault: Option<crate::fault::Fault>,
    /// Read the next step's batch during the current one (see
    /// [`prefetch::auto`]; `new` sets it from `[data] prefetch`, auto
    /// counting as on).
    pub prefetch: bool,
    /// Stop reading ahead once the training rows are all in memory (a
    /// batch is then a copy: nothing to hide; `[data] prefetch = auto`
    /// while synthetic rows are generated in the background).
    pub prefetch_until_in_memory: bool,
    /// How many samples of each global batch every rank takes.
    pub balance: Balancer,
    /// Whether the gradient all-reduce overlaps backward, and why
    /// (`[comm] overlap`, decided in `new`).
    pub overlap: overlap::OverlapChoice,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// A trainer on `be` starting from the parameters `init`; its gradient
    /// all-reduce (chosen by [`gradsync::create`]) has its wait watched by
    /// `wd` (pass [`Watchdog::off`] for none).
    pub fn new(
        cfg: &'a TrainConfig,
        spec: ModelSpec,
        comm: &'a dyn Communicator,
        wd: &Watchdog,
        data: Arc<dyn Dataset>,
        be: B,
        init: &[f32],
    ) -> Self {
        let balance = Balancer::new(&cfg.train, comm.rank(), comm.size());
        let shard = balance.range();
        // The workspace holds one micro-batch of the largest slice.
        let max_rows = balance.max_slice().div_ceil(cfg.train.accum_steps).max(1);
        let model = Model::new(&be, spec.clone(), max_rows);
        let n = model.layout.total;
        let mut grads = be.alloc(n);
        let bucket_floats = cfg.comm.bucket_kib * 1024 / 4;
        let layers = model.layout.layer_ranges();
        let overlap = overlap::for_trainer(cfg, comm, &layers, be.memory(&mut grads));
        let opts = SyncOptions {
            kind: cfg.comm.kind,
            wire: cfg.comm.wire,
            overlap: overlap.on,
            bucket_floats,
        };
        // SAFETY: `sync` is declared before `grads` in `Trainer`, so it is
        // dropped (its communication thread joined) before the buffer is
        // freed; the buffer never moves; and only backward below `lo` and
        // the update after `finish` write it.
        let sync = match cfg.sync.is_local() {
            // Local mode: the gradients stay this rank's own.
            true => Box::new(gradsync::NoSync),
            false => unsafe { gradsync::create(comm, &opts, be.memory(&mut grads), &layers) },
        };
        let sync = wd.watch_grads(sync);
        let outer = cfg
            .sync
            .is_local()
            .then(|| local::Outer::new(cfg, &be, comm, wd, &model.layout, init));
        let mut params = be.alloc(n);
        be.upload(init, &mut params, 0);
        let state_len = opt_state_len(&model.layout, cfg.optim.optimizer);
        let weights = TaskWeights::new(&cfg.tasks, &spec.tasks, cfg.optim.optimizer);
        let probe = weights
            .ever_needs_task_grads(cfg.train.steps)
            .then(|| TaskGradProbe::new(&be, &model))
            .flatten();
        let slice = balance.max_slice().max(max_rows);
        let loader = Loader {
            data,
            seed: cfg.train.seed,
            global_batch: cfg.train.global_batch,
            shard,
            input_dim: spec.input_dim,
            label_cols: model.cols.label_cols,
            rank: comm.rank(),
        };
        Trainer {
            host: HostBatch::zeros(slice, spec.input_dim, model.cols.label_cols),
            ahead: None,
            spare: None,
            loader,
            reader: None,
            grads,
            opt_state: be.alloc(state_len),
            stats: be.alloc(spec.tasks.len() + 1),
            weights,
            probe,
            params,
            model,
            spec,
            cfg,
            comm,
            sync,
            be,
            clock: PhaseClock::new(),
            updates: 0,
            skips_in_a_row: 0,
            outer,
            fault: None,
            prefetch: cfg.data.prefetch != crate::config::Prefetch::Off,
            prefetch_until_in_memory: cfg.data.prefetch == crate::config::Prefetch::Auto,
            balance,
            overlap,
        }
    }

    pub fn num_params(&self) -> usize {
        self.model.layout.total
    }

    /// Bytes held per rank: parameters, gradients, optimizer state, activations.
    pub fn memory_estimate_bytes(&self) -> usize {
        let n = self.num_params();
        let state = opt_state_len(&self.model.layout, self.cfg.optim.optimizer);
        4 * (2 * n + state) + self.model.workspace_bytes(self.be.act_elem_bytes())
    }

    pub fn params_to_host(&self) -> Vec<f32> {
        let mut p = vec![0.0; self.num_params()];
        self.be.download(&self.params, 0, &mut p);
        p
    }

    /// The state after `steps_done` steps, for a checkpoint.
    pub fn snapshot(&self, steps_done: u64) -> TrainState {
        let mut opt_state = vec![0.0; opt_state_len(&self.model.layout, self.cfg.optim.optimizer)];
        self.be.download(&self.opt_state, 0, &mut opt_state);
        TrainState {
            step: steps_done,
            updates: self.updates,
            skips_in_a_row: self.skips_in_a_row,
            params: match &self.outer {
                Some(o) => o.theta.clone(),
                None => self.params_to_host(),
            },
            opt_state,
            local: None,
            weighting: self.weights.to_json(),
            balance: self.balance.state(),
        }
    }

    /// Continues from a checkpoint's state; an error says what in it does
    /// not fit this run.
    pub fn restore(&mut self, st: &TrainState) -> std::result::Result<(), String> {
        self.weights.restore(st.weighting.as_ref())?;
        self.be.upload(&st.params, &mut self.params, 0);
        self.be.upload(&st.opt_state, &mut self.opt_state, 0);
        self.updates = st.updates;
        self.skips_in_a_row = st.skips_in_a_row;
        if let Some(l) = &st.local {
            self.restore_local(&st.params, l);
        }
        if let Some(b) = &st.balance {
            if self.balance.restore(b) {
                self.loader.shard = self.balance.range();
            }
        }
        Ok(())
    }

    /// One synchronous data-parallel SGD step. The global per-task losses
    /// cost one more small all-reduce; `want_losses` false skips it (the
    /// report's losses are then NaN). The next step's batch is read on a
    /// helper thread meanwhile (if `self.prefetch`).
    pub fn step(&mut self, step: u64, want_losses: bool) -> Result<StepReport> {
        self.clock.begin(step);
        let t = Instant::now();
        let rows = self.take_batch(step)?;
        self.clock.record(Phase::Data, t);
        if self.prefetch
            && self.prefetch_until_in_memory
            && self.loader.data.in_memory(Split::Train)
        {
            // Nothing is requested ahead at this point: the thread is idle.
            self.prefetch = false;
            self.reader = None;
        }
        if self.prefetch && self.reader.is_none() {
            // Without a thread, read each batch in its own step.
            self.reader = Reader::start().ok();
            self.prefetch = self.reader.is_some();
        }
        let Some(reader) = self.reader.as_ref().filter(|_| self.prefetch) else {
            return self.compute(step, rows, want_losses);
        };

        let spare = match self.spare.take() {
            Some(b) => b,
            None => self.host.same_size(),
        };
        reader.request(&self.loader, step + 1, self.fault, spare);
        let mut report = self.compute(step, rows, want_losses);
        if let Some(reader) = self.reader.as_mut() {
            // The wait for the next batch is this step's data time.
            let t = Instant::now();
            self.ahead = Some(reader.receive());
            if let Ok(r) = &mut report {
                let wait = t.elapsed().as_secs_f64();
                r.times.data += wait;
                r.times.total += wait;
            }
        }
        report
    }

    /// This rank's slice of the global batch of (seed, step) into
    /// `self.host`: the one read ahead (unless the partition changed
    /// since), or read now; returns its rows.
    fn take_batch(&mut self, step: u64) -> Result<usize> {
        match self.ahead.take() {
            Some(Ahead {
                step: s,
                shard,
                batch,
            }) if s == step && shard == self.loader.shard => {
                let read = std::mem::replace(&mut self.host, batch?);
                self.spare = Some(read);
            }
            _ => self.loader.load(step, self.fault, &mut self.host)?,
        }
        Ok(self.loader.shard.len())
    }

    /// The step on the batch in `self.host`, top to bottom.
    fn compute(&mut self, step: u64, rows: usize, want_losses: bool) -> Result<StepReport> {
        // Each task's loss is the mean over the labels present in the whole
        // global batch, so every rank needs the global counts N_t.
        let t = Instant::now();
        // (In local mode the ranks' own counts: no gradient average.)
        let mut counts = self.local_label_counts(rows);
        if self.outer.is_none() {
            self.comm.all_reduce_sum_f64(&mut counts)?;
        }
        self.clock.record(Phase::Control, t);

        // The task weights λ_t of this step; GradNorm and the diagnostics
        // also take each task's own gradient at the last shared layer.
        let lambdas = self.weights.lambdas();
        let probe = self.probe.is_some() && self.weights.needs_task_grads(step);
        let want_losses = want_losses || self.weights.needs_losses();

        // Forward and backward per micro-batch, gradients accumulating in
        // one buffer; in the last backward, finished buckets start their
        // all-reduce while the layers below are still being computed.
        let k = self.cfg.train.accum_steps;
        let t = Instant::now();
        for j in 0..k {
            self.forward_backward(sampler::shard(rows, j, k), &counts, &lambdas, j, probe);
        }
        self.balance.record(rows, self.compute_seconds(t));

        // g = (1/n) Σ g_i once the buckets still in flight are done.
        let t = Instant::now();
        let sync = self.sync.finish()?;
        self.clock.record_sync(t, &sync);

        // Global per-task losses and the gradient norm: the same numbers on
        // every rank, so every rank takes the same branch below.
        let t = Instant::now();
        let (task_losses, grad_norm, nonfinite) = match self.outer {
            None => self.global_losses(&counts, want_losses)?,
            Some(_) => self.local_losses(&counts)?,
        };
        let task_grads = match probe {
            true => Some(self.global_task_grads()?),
            false => None,
        };
        self.clock.record(Phase::Control, t);

        // The identical update on every rank, unless something is NaN/Inf.
        let t = Instant::now();
        let lr = self.cfg.lr_at(step);
        let skipped = match nonfinite {
            None => {
                self.update(lr);
                let o = &self.cfg.optim;
                self.weights
                    .update(&task_losses, task_grads.as_ref(), lr, o);
                None
            }
            Some(what) if self.outer.is_some() => Some(self.skip_local(step, what)),
            Some(what) => Some(self.skip_nonfinite(step, what)?),
        };
        self.clock.record(Phase::Update, t);

        // Local mode, every H steps: merge the ranks' parameters.
        let outer_step = self.outer_step(step, skipped.is_some())?;
        let (bytes_sent, bytes_sent_total) = self.step_bytes(step);

        // Every --balance-every steps (auto) the ranks share their speeds
        // and all move to the same new partition.
        let replan = self.rebalance(step)?;

        let loss = self.weights.total_loss(&task_losses);
        Ok(StepReport {
            step,
            lr,
            loss,
            task_losses,
            grad_norm,
            bytes_sent,
            bytes_sent_total,
            outer_step,
            lambdas,
            task_grads: task_grads.filter(|_| self.weights.stats_due(step)),
            skipped,
            times: self.clock.finish(),
            rows,
            replan,
        })
    }

    /// Seconds since `t` of the forward and backward passes; under
    /// `--balance auto` on a device backend, once their queued work is
    /// done (a one-element download waits for it; `stats` is no bucket's).
    fn compute_seconds(&self, t: Instant) -> f64 {
        if self.balance.mode() == crate::config::BalanceMode::Auto {
            self.be.download(&self.stats, 0, &mut [0f32]);
        }
        t.elapsed().as_secs_f64()
    }

    /// Under `--balance auto`, after every K-th step: the new partition
    /// of the global batch (the same on every rank), if it changed.
    fn rebalance(&mut self, step: u64) -> Result<Option<Replan>> {
        if !self.balance.due(step) {
            return Ok(None);
        }
        let t = Instant::now();
        let replan = self.balance.replan(self.comm)?;
        self.loader.shard = self.balance.range();
        self.clock.record(Phase::Control, t);
        Ok(replan)
    }

    /// Forward and backward of micro-batch `j` (rows `mb` of the slice),
    /// adding to the gradients of the earlier micro-batches.
    /// With `probe`, each task's gradient at the last shared layer too.
    fn forward_backward(
        &mut self,
        mb: Range<usize>,
        counts: &[f64],
        lambdas: &[f64],
        j: usize,
        probe: bool,
    ) {
        let (d, lc) = (self.spec.input_dim, self.model.cols.label_cols);
        let (n, first, last) = (mb.len(), j == 0, j + 1 == self.cfg.train.accum_steps);
        self.be
            .upload(&self.host.x[mb.start * d..mb.end * d], &mut self.model.x, 0);
        self.be.upload(
            &self.host.labels[mb.start * lc..mb.end * lc],
            &mut self.model.labels,
            0,
        );

        let start = Instant::now();
        self.model.forward(&self.be, &self.params, n);
        self.clock.record(Phase::Forward, start);

        let t = Instant::now();
        let losses = self.loss_args(n, counts, lambdas, !first);
        let sync = &mut self.sync;
        self.model.backward(
            &self.be,
            &self.params,
            &mut self.grads,
            &mut self.stats,
            &losses,
            n,
            !first,
            &mut |lin| {
                if last {
                    sync.ready(lin.w)
                }
            },
        );
        if probe {
            // Unweighted and not ×n: the sum over ranks is ∇_W L_t.
            let ones = vec![1.0 / self.comm.size() as f64; lambdas.len()];
            let args = self.loss_args(n, counts, &ones, !first);
            let p = self.probe.as_mut().expect("probe allocated");
            self.model
                .task_grads(&self.be, &self.params, p, &args, n, !first);
        }
        crate::fault::stretch_compute(self.fault, self.comm.rank(), start.elapsed());
        self.clock.record(Phase::Backward, t);
    }

    /// Each task's gradient at the last shared layer over the global batch
    /// (one all-reduce of tasks × the layer's weights), as norms and cosines.
    fn global_task_grads(&mut self) -> Result<TaskGradStats> {
        let p = self.probe.as_ref().expect("probe allocated");
        let mut all = vec![0f32; p.tasks * p.stride()];
        self.be.download(&p.grads, 0, &mut all);
        let mut w: Vec<f32> = (0..p.tasks)
            .flat_map(|t| all[p.weight_range(t)].to_vec())
            .collect();
        self.comm.all_reduce_sum(&mut w)?;
        Ok(TaskGradStats::from_grads(&w, p.tasks))
    }

    /// Clipping and the optimizer update, from the averaged gradients (the
    /// squared norm is in `stats` already).
    fn update(&mut self, lr: f32) {
        let n = self.num_params();
        let args = self.update_args(lr);
        self.updates += 1;
        self.skips_in_a_row = 0;
        self.be.update(
            args,
            n,
            &mut self.params,
            &self.grads,
            &mut self.opt_state,
            &self.stats,
        );
    }

    /// Per-task mean losses over the global batch (NaN unless `want`), the
    /// gradient norm, and what is not finite among them. Without `want`
    /// only the gradient norm is checked (the local losses are not global).
    fn global_losses(
        &mut self,
        counts: &[f64],
        want: bool,
    ) -> Result<(Vec<f64>, f32, Option<String>)> {
        let ntask = self.spec.tasks.len();
        self.be
            .sum_squares(&self.grads, self.num_params(), &mut self.stats, ntask);
        let mut stats = vec![0f32; ntask + 1];
        self.be.download(&self.stats, 0, &mut stats);
        let norm = stats[ntask].sqrt();
        let mut sums: Vec<f64> = stats[..ntask].iter().map(|&v| v as f64).collect();
        if want {
            self.comm.all_reduce_sum_f64(&mut sums)?;
        }
        let bad: Vec<String> = (0..ntask)
            .filter(|&t| want && !sums[t].is_finite())
            .map(|t| format!("{} is {}", self.spec.tasks[t].name, sums[t]))
            .collect();
        let nonfinite = if !bad.is_empty() {
            Some(format!("the loss of task {}", bad.join(", task ")))
        } else if !norm.is_finite() {
            Some(self.nonfinite_gradient(norm))
        } else {
            None
        };
        let losses = match want {
            false => vec![f64::NAN; ntask],
            true => sums
                .iter()
                .zip(counts)
                .map(|(&s, &c)| if c > 0.0 { s / c } else { f64::NAN })
                .collect(),
        };
        Ok((losses, norm, nonfinite))
    }

    /// Names the first parameter whose averaged gradient is not finite
    /// (the same on every rank: the gradients are).
    fn nonfinite_gradient(&self, norm: f32) -> String {
        let mut g = vec![0f32; self.num_params()];
        self.be.download(&self.grads, 0, &mut g);
        let first = self
            .model
            .layout
            .entries
            .iter()
            .find(|e| g[e.range()].iter().any(|v| !v.is_finite()));
        match first {
            Some(e) => format!("the gradient of {} is not finite (norm {norm})", e.name),
            None => format!("the gradient norm is {norm}"),
        }
    }

    /// A step whose loss or gradient is NaN/Inf: under `skip` the update is
    /// left out (up to `max_skips` in a row), under `abort` the run ends.
    /// Every rank gets here at the same step with the same message.
    fn skip_nonfinite(&mut self, step: u64, what: String) -> Result<String> {
        self.skips_in_a_row += 1;
        let msg = format!("step {}: {what}", step + 1);
        let t = &self.cfg.train;
        match t.on_nonfinite {
            NonFinitePolicy::Abort => Err(Error::NonFinite(format!(
                "{msg}; stopping (--on-nonfinite abort; `skip` would leave such updates out)"
            ))),
            NonFinitePolicy::Skip if self.skips_in_a_row > t.max_skips => {
                Err(Error::NonFinite(format!(
                    "{msg}; {} updates skipped in a row, more than --max-skips {}",
                    self.skips_in_a_row, t.max_skips
                )))
            }
            NonFinitePolicy::Skip => Ok(format!(
                "{msg}; update skipped ({} in a row, at most {})",
                self.skips_in_a_row, t.max_skips
            )),
        }
    }

    /// Present labels per task among this rank's rows (elements for regress).
    fn local_label_counts(&self, rows: usize) -> Vec<f64> {
        let cols = &self.model.cols;
        self.spec
            .tasks
            .iter()
            .enumerate()
            .map(|(t, task)| {
                let w = task.kind.label_dim();
                (0..rows)
                    .map(|r| {
                        let at = r * cols.label_cols + cols.label_off[t];
                        self.host.labels[at..at + w]
                            .iter()
                            .filter(|v| !v.is_nan())
                            .count() as f64
                    })
                    .sum()
            })
            .collect()
    }

    /// Each task's loss with gradient scale λ_t·n/N_t.
    fn loss_args(
        &self,
        rows: usize,
        global_counts: &[f64],
        lambdas: &[f64],
        accumulate: bool,
    ) -> Vec<LossArgs> {
        let cols = &self.model.cols;
        let n = self.grad_ranks();
        self.spec
            .tasks
            .iter()
            .enumerate()
            .map(|(t, task)| {
                // ×n because the all-reduce averages over ranks (n = 1
                // in local mode: the counts are this rank's own).
                let scale = if global_counts[t] > 0.0 {
                    (lambdas[t] * n / global_counts[t]) as f32
                } else {
                    0.0
                };
                LossArgs::for_task(task.kind, cols, t, rows, scale, accumulate)
            })
            .collect()
    }

    fn update_args(&self, lr: f32) -> UpdateArgs {
        let o = &self.cfg.optim;
        UpdateArgs {
            lr,
            weight_decay: o.weight_decay,
            clip: (o.clip_norm > 0.0).then_some(o.clip_norm),
            norm_sq_stat: self.spec.tasks.len(),
            rule: match o.optimizer {
                OptimizerKind::Sgd => UpdateRule::Sgd {
                    momentum: o.momentum,
                    first_step: self.updates == 0,
                },
                OptimizerKind::Adamw => UpdateRule::AdamW {
                    beta1: o.beta1,
                    beta2: o.beta2,
                    eps: o.eps,
                    step: self.updates + 1,
                },
            },
        }
    }

    /// Metrics on the validation split, sharded over ranks and all-reduced.
    pub fn evaluate(&mut self) -> Result<Vec<(String, TaskMetrics)>> {
        let n_val = self.loader.data.len(Split::Val);
        let mine = sampler::shard(n_val, self.comm.rank(), self.comm.size());
        let mut stats = EvalStats::new(&self.spec.tasks);
        let chunk = self.model.max_rows;
        let cols = self.model.cols.clone();
        let mut out = vec![0f32; chunk * cols.out_cols];
        let mut lo = mine.start;
        while lo < mine.end {
            let hi = (lo + chunk).min(mine.end);
            let rows = hi - lo;
            let idx: Vec<u64> = (lo as u64..hi as u64).collect();
            let (x, l) = (rows * self.spec.input_dim, rows * cols.label_cols);
            self.loader.data.fill(
                Split::Val,
                &idx,
                &mut self.host.x[..x],
                &mut self.host.labels[..l],
            )?;
            self.be.upload(&self.host.x[..x], &mut self.model.x, 0);
            self.model.forward(&self.be, &self.params, rows);
            self.be
                .download(&self.model.out, 0, &mut out[..rows * cols.out_cols]);
            stats.add(rows, &out, &self.host.labels[..l]);
            lo = hi;
        }
        self.comm.all_reduce_sum_f64(&mut stats.sums)?;
        Ok(stats.finish())
    }
}
