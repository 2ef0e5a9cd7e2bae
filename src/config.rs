//! One `TrainConfig`: defaults, then a TOML file, then command-line
//! overrides, validated as a whole before anything runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::comm::{CommKind, Wire};
use crate::error::{Error, Result};
use crate::spec::Activation;

pub mod sync;
pub use sync::{SyncConfig, SyncMode};
pub mod balance;
pub use balance::BalanceMode;
pub mod overlap;
pub use overlap::Overlap;
mod table_hint;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: LoopConfig,
    pub optim: OptimConfig,
    pub comm: CommConfig,
    pub checkpoint: CheckpointConfig,
    /// Gradients every step, or local steps and an outer update.
    pub sync: SyncConfig,
    /// Per-task loss weights λ_t overriding the dataset's defaults.
    pub task_weights: BTreeMap<String, f32>,
    /// How the task weights move during training, and task diagnostics.
    pub tasks: TasksConfig,
}

/// `[tasks]`: dynamic task weighting (src/train/weighting.rs) and the
/// per-task gradient diagnostics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    pub weighting: TaskWeighting,
    /// DWA: steps per loss window W (the paper's epoch).
    pub dwa_window: u64,
    /// DWA: softmax temperature τ.
    pub dwa_temperature: f64,
    /// GradNorm: the asymmetry α.
    pub gradnorm_alpha: f64,
    /// Per-task gradient norms and cosines every N steps (0: off).
    pub stats_every: u64,
    /// Learning rate of the learned weights (s_t, w_t), constant; None:
    /// the model's learning rate at each step.
    pub weight_lr: Option<f32>,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            weighting: TaskWeighting::Static,
            dwa_window: 50,
            dwa_temperature: 2.0,
            gradnorm_alpha: 1.5,
            stats_every: 0,
            weight_lr: None,
        }
    }
}

/// How the loss weights λ_t are set (see src/train/weighting.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TaskWeighting {
    /// λ_t as given (tasks.toml, [task_weights], --task-weight).
    Static,
    /// Kendall, Gal & Cipolla 2018: learned log-variances s_t.
    Uncertainty,
    /// Liu, Johns & Davison 2019: dynamic weight average.
    Dwa,
    /// Chen et al. 2018: learned weights balancing gradient norms.
    Gradnorm,
}

impl TaskWeighting {
    pub fn name(self) -> &'static str {
        match self {
            TaskWeighting::Static => "static",
            TaskWeighting::Uncertainty => "uncertainty",
            TaskWeighting::Dwa => "dwa",
            TaskWeighting::Gradnorm => "gradnorm",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub hidden: Vec<usize>,
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset directory (tasks.toml + .npy or CSV files); None: the
    /// embedded synthetic set.
    pub path: Option<PathBuf>,
    /// Seed and sizes of the embedded synthetic dataset.
    pub synthetic_seed: u64,
    pub synthetic_train: usize,
    pub synthetic_val: usize,
    /// Read the next step's batch on a helper thread while the current
    /// step computes: on, off (at the start of each step, on the compute
    /// thread), or auto (on for GPU ranks, and for CPU ranks when this
    /// host has a core their GEMM threads leave free).
    pub prefetch: Prefetch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    pub steps: u64,
    pub global_batch: usize,
    /// Seeds parameter init and the order of samples.
    pub seed: u64,
    /// Validate every N steps and at the end (0: only at the end).
    pub eval_every: u64,
    /// Print a training line every N steps (when not on a TTY).
    pub log_every: u64,
    pub save: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub metrics_out: Option<PathBuf>,
    /// Split each rank's slice of the global batch into this many
    /// micro-batches; gradients are accumulated and communicated once.
    pub accum_steps: usize,
    /// Chrome-trace timeline of every rank (forward, backward, each
    /// bucket's all-reduce, update).
    pub trace: Option<PathBuf>,
    /// What a NaN/Inf loss or gradient does: end the run, or skip the update.
    pub on_nonfinite: NonFinitePolicy,
    /// With `skip`: end the run after this many skipped updates in a row.
    pub max_skips: u64,
    /// How the global batch is split over the ranks: even, static
    /// (`balance_weights`), or auto (by measured speed, re-planned every
    /// `balance_every` steps). See src/train/balance.rs.
    pub balance: BalanceMode,
    pub balance_weights: Vec<f64>,
    pub balance_every: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Prefetch {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NonFinitePolicy {
    Abort,
    Skip,
}

/// Training checkpoints (src/checkpoint/training.rs) and resuming from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Directory of `step-NNNNNNNN/` checkpoints; None: no checkpoints.
    pub dir: Option<PathBuf>,
    /// Write one every N steps (0: only at the end and at --stop-after).
    pub every: u64,
    /// Keep the newest K complete checkpoints.
    pub keep: usize,
    /// "auto" (the newest in `dir`, or a fresh start) or a checkpoint path.
    pub resume: Option<String>,
    /// End the run cleanly after this many steps, with a checkpoint, as a
    /// preemption would; the schedule is still that of `steps`.
    pub stop_after: Option<u64>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: None,
            every: 0,
            keep: 3,
            resume: None,
            stop_after: None,
        }
    }
}

/// How gradients travel between ranks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommConfig {
    /// mpi (MPI_Allreduce) | ring (written out) | auto.
    pub kind: CommKind,
    /// Element type on the wire: f32, or bf16 (ring only).
    pub wire: Wire,
    /// Gradient bucket size in KiB; buckets follow the order backward
    /// produces gradients (last layer first).
    pub bucket_kib: usize,
    /// All-reduce each bucket on a communication thread as soon as it is
    /// complete, while backward continues: auto (when it can pay), on, off
    /// (`true`/`false` are read as on/off).
    pub overlap: Overlap,
    /// Seconds a collective may take before the watchdog ends the job
    /// (0: no watchdog).
    pub timeout: f64,
}

impl Default for CommConfig {
    fn default() -> Self {
        CommConfig {
            kind: CommKind::Auto,
            wire: Wire::F32,
            bucket_kib: 256,
            overlap: Overlap::Auto,
            timeout: 300.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adamw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Linear warm-up, then cosine decay to `min_lr`.
    Cosine,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub schedule: Schedule,
    /// Warm-up steps of the cosine schedule (default: 5% of the steps).
    pub warmup_steps: Option<u64>,
    pub min_lr: f32,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip_norm: f32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            hidden: vec![256, 256],
            activation: Activation::Relu,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            path: None,
            synthetic_seed: 1,
            synthetic_train: 65536,
            synthetic_val: 8192,
            prefetch: Prefetch::Auto,
        }
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            steps: 600,
            global_batch: 256,
            seed: 0,
            eval_every: 200,
            log_every: 50,
            save: None,
            init: None,
            metrics_out: None,
            accum_steps: 1,
            trace: None,
            on_nonfinite: NonFinitePolicy::Abort,
            max_skips: 3,
            balance: BalanceMode::Even,
            balance_weights: Vec::new(),
            balance_every: 50,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            optimizer: OptimizerKind::Adamw,
            lr: 2e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            schedule: Schedule::Cosine,
            warmup_steps: None,
            min_lr: 0.0,
            clip_norm: 1.0,
        }
    }
}

impl TrainConfig {
    /// Defaults overlaid with a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| {
            let e = e.to_string();
            let hint = table_hint::wrong_table(&e).map(|h| format!("\n{h}"));
            let e = if hint.is_some() { e.trim_end() } else { &e };
            Error::Config(format!(
                "{}: {e}{}",
                path.display(),
                hint.unwrap_or_default()
            ))
        })
    }

    /// Checks every value that does not depend on the data or the world.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let t = &self.train;
        let o = &self.optim;
        if t.steps == 0 {
            return bad("--steps must be at least 1".into());
        }
        if t.global_batch == 0 {
            return bad("--global-batch must be at least 1".into());
        }
        if t.accum_steps == 0 {
            return bad("--accum-steps must be at least 1".into());
        }
        balance::validate(t.balance, &t.balance_weights, t.balance_every)?;
        if self.comm.bucket_kib == 0 {
            return bad("--bucket-kib must be at least 1".into());
        }
        let to = self.comm.timeout;
        if !(to == 0.0 || (to.is_finite() && (1.0..=1e6).contains(&to))) {
            return bad(format!(
                "--comm-timeout must be 0 (off) or between 1 and 1000000 seconds, got {to}"
            ));
        }
        if self.comm.wire == Wire::Bf16 && self.comm.kind == CommKind::Mpi {
            return bad("--wire bf16 needs --comm ring (MPI has no bf16 reduction)".into());
        }
        if self.comm.wire == Wire::Bf16 && self.comm.kind == CommKind::Nccl {
            return bad("--wire bf16 needs --comm ring (NCCL all-reduces f32 gradients)".into());
        }
        self.sync.validate()?;
        // The weights move with global losses and gradients, which local
        // steps do not have.
        let k = &self.tasks;
        if self.sync.is_local() && (k.weighting != TaskWeighting::Static || k.stats_every > 0) {
            return bad(format!(
                "--sync local works with static task weights only (got --task-weighting {}{}): the weights follow global losses and gradients, which ranks training alone do not share",
                k.weighting.name(),
                if k.stats_every > 0 {
                    ", --task-stats-every"
                } else {
                    ""
                }
            ));
        }
        if self.sync.is_local()
            && self.sync.outer_wire == Wire::Bf16
            && self.comm.kind != CommKind::Ring
            && self.comm.kind != CommKind::Auto
        {
            return bad("--outer-wire bf16 needs --comm ring (MPI and NCCL reduce f32)".into());
        }
        if self.model.hidden.contains(&0) {
            return bad("--hidden: every layer width must be at least 1".into());
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", o.lr));
        }
        if !(o.momentum.is_finite() && (0.0..1.0).contains(&o.momentum)) {
            return bad(format!("--momentum must be in [0, 1), got {}", o.momentum));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay must be >= 0, got {}",
                o.weight_decay
            ));
        }
        for (name, b) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                return bad(format!("optim.{name} must be in [0, 1), got {b}"));
            }
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return bad(format!("optim.eps must be > 0, got {}", o.eps));
        }
        if !(o.min_lr.is_finite() && o.min_lr >= 0.0 && o.min_lr <= o.lr) {
            return bad(format!("--min-lr must be in [0, lr], got {}", o.min_lr));
        }
        if self.warmup_steps() > t.steps {
            return bad(format!(
                "--warmup-steps ({}) exceeds --steps ({})",
                self.warmup_steps(),
                t.steps
            ));
        }
        if !(o.clip_norm.is_finite() && o.clip_norm >= 0.0) {
            return bad(format!("--clip-norm must be >= 0, got {}", o.clip_norm));
        }
        for (task, w) in &self.task_weights {
            if !(w.is_finite() && *w >= 0.0) {
                return bad(format!("weight of task {task} must be >= 0, got {w}"));
            }
        }
        let k = &self.tasks;
        if k.dwa_window == 0 {
            return bad("--dwa-window must be at least 1".into());
        }
        if !(k.dwa_temperature.is_finite() && k.dwa_temperature > 0.0) {
            return bad(format!(
                "--dwa-temperature must be > 0, got {}",
                k.dwa_temperature
            ));
        }
        if !(k.gradnorm_alpha.is_finite() && k.gradnorm_alpha >= 0.0) {
            return bad(format!(
                "--gradnorm-alpha must be >= 0, got {}",
                k.gradnorm_alpha
            ));
        }
        if let Some(lr) = k.weight_lr {
            if !(lr.is_finite() && lr > 0.0) {
                return bad(format!("--task-weight-lr must be > 0, got {lr}"));
            }
        }
        let probes = k.weighting == TaskWeighting::Gradnorm || k.stats_every > 0;
        if probes && self.model.hidden.is_empty() {
            return bad(
                "--task-weighting gradnorm and --task-stats-every need a shared layer (--hidden is empty)"
                    .into(),
            );
        }
        if self.data.path.is_none()
            && (self.data.synthetic_train == 0 || self.data.synthetic_val == 0)
        {
            return bad("synthetic dataset sizes must be at least 1".into());
        }
        for p in [&t.save, &t.metrics_out, &t.trace].into_iter().flatten() {
            check_output_path(p)?;
        }
        self.validate_checkpoint()
    }

    fn validate_checkpoint(&self) -> Result<()> {
        let c = &self.checkpoint;
        let bad = |m: &str| Err(Error::Config(m.into()));
        if c.keep == 0 {
            return bad("--keep must be at least 1");
        }
        if c.dir.is_none() {
            if c.every > 0 {
                return bad("--checkpoint-every needs --checkpoint-dir");
            }
            if c.stop_after.is_some() {
                return bad("--stop-after needs --checkpoint-dir (the run resumes from it)");
            }
            if c.resume.as_deref() == Some("auto") {
                return bad("--resume auto needs --checkpoint-dir (where to look)");
            }
        }
        if let Some(k) = c.stop_after {
            if k == 0 || k > self.train.steps {
                return Err(Error::Config(format!(
                    "--stop-after {k} must be in 1..={} (--steps)",
                    self.train.steps
                )));
            }
        }
        if let Some(d) = &c.dir {
            if d.exists() && !d.is_dir() {
                return Err(Error::Config(format!(
                    "--checkpoint-dir {}: exists and is not a directory",
                    d.display()
                )));
            }
        }
        if self.train.on_nonfinite == NonFinitePolicy::Skip && self.train.max_skips == 0 {
            return bad("--max-skips must be at least 1 with --on-nonfinite skip");
        }
        Ok(())
    }

    /// The watchdog's timeout (zero: off).
    pub fn comm_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.comm.timeout)
    }

    pub fn warmup_steps(&self) -> u64 {
        self.optim.warmup_steps.unwrap_or(self.train.steps / 20)
    }

    /// Learning rate at a 0-based step.
    pub fn lr_at(&self, step: u64) -> f32 {
        let o = &self.optim;
        let warmup = self.warmup_steps();
        match o.schedule {
            Schedule::Constant => o.lr,
            Schedule::Cosine => {
                if step < warmup {
                    return o.lr * (step + 1) as f32 / warmup as f32;
                }
                let span = (self.train.steps - warmup).max(1) as f64;
                let frac = (step - warmup) as f64 / span;
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * frac).cos());
                (o.min_lr as f64 + (o.lr - o.min_lr) as f64 * cos) as f32
            }
        }
    }
}

/// An output file must go into an existing directory and must not be a
/// directory itself; checked up front so a long run never fails at the end.
pub fn check_output_path(p: &Path) -> Result<()> {
    if p.is_dir() {
        return Err(Error::Config(format!(
            "{}: is a directory, expected a file path",
            p.display()
        )));
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::Config(format!(
            "{}: directory {} does not exist",
            p.display(),
            parent.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_overlays() {
        TrainConfig::default().validate().unwrap();
        let c: TrainConfig = toml::from_str(
            "[train]\nsteps = 10\n[optim]\noptimizer = \"sgd\"\n[task_weights]\nshape = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.train.steps, 10);
        assert_eq!(c.optim.optimizer, OptimizerKind::Sgd);
        assert_eq!(c.task_weights["shape"], 0.5);
        assert_eq!(c.train.global_batch, LoopConfig::default().global_batch);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<TrainConfig>("[train]\nstep = 10\n").is_err());
        let mut c = TrainConfig::default();
        c.optim.lr = -1.0;
        assert!(c.validate().is_err());
        let mut c = TrainConfig::default();
        c.optim.momentum = 1.0;
        assert!(c.validate().is_err());
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY] {
            let mut c = TrainConfig::default();
            c.comm.timeout = bad;
            assert!(c.validate().is_err(), "{bad}");
        }
        let c: TrainConfig = toml::from_str("[comm]\ntimeout = 0\n").unwrap();
        assert!(c.comm_timeout().is_zero());
        c.validate().unwrap();
        let mut c = TrainConfig::default();
        (c.comm.kind, c.comm.wire) = (CommKind::Nccl, Wire::Bf16);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("NCCL"), "{e}");
        c.comm.wire = Wire::F32;
        c.validate().unwrap();
    }

    #[test]
    fn cosine_schedule_warms_up_and_decays() {
        let mut c = TrainConfig::default();
        c.train.steps = 100;
        c.optim.warmup_steps = Some(10);
        c.optim.lr = 1.0;
        assert!((c.lr_at(0) - 0.1).abs() < 1e-6);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-6);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-6);
        assert!(c.lr_at(99) < 0.01);
        assert!(c.lr_at(55) < c.lr_at(30));
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The documented example must parse to exactly the defaults.
    #[test]
    fn example_config_is_the_defaults() {
        let c: TrainConfig = toml::from_str(include_str!("../examples/train.toml")).unwrap();
        assert_eq!(c, TrainConfig::default());
    }
}
