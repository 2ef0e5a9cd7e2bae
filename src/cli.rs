//! Command-line interface (clap). Values given here override the config
//! file, which overrides the defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::backend::device::Device;
use crate::config::{OptimizerKind, Schedule, TrainConfig};
use crate::error::{Error, Result};
use crate::spec::Activation;
use crate::world::{BootstrapMode, BootstrapOptions};

pub mod help;
mod sync;
pub use sync::SyncArgs;

#[derive(Parser, Debug)]
#[command(
    name = "ringtrain",
    version,
    about = "Data-parallel multi-task training: launch with `mpirun -np N ringtrain train`"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How each process learns its rank and the world size.
    #[arg(long, global = true, value_enum, default_value_t = BootstrapMode::Auto)]
    pub bootstrap: BootstrapMode,
    /// Directory all ranks see, where rank 0 publishes what the others need
    /// when MPI is not used [default: $RINGTRAIN_RENDEZVOUS].
    #[arg(long, global = true, value_name = "DIR")]
    pub rendezvous: Option<PathBuf>,
    /// Seconds a rank waits at start-up: for rank 0's rendezvous file
    /// (without MPI), or with MPI for MPI_Init and the first exchanges
    /// until the watchdog is up (0: no limit there).
    #[arg(long, global = true, value_name = "SECONDS", default_value = "120", value_parser = parse_seconds)]
    pub rendezvous_timeout: Duration,
}

impl Cli {
    /// What the world's bootstrap needs from the command line (and the
    /// RINGTRAIN_RENDEZVOUS default of `--rendezvous`).
    pub fn bootstrap_options(&self) -> BootstrapOptions {
        BootstrapOptions {
            mode: self.bootstrap,
            rendezvous: self.rendezvous.clone().or_else(|| {
                std::env::var_os("RINGTRAIN_RENDEZVOUS")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            }),
            rendezvous_timeout: self.rendezvous_timeout,
        }
    }

    /// Whether this command's collectives run over NCCL (decided from the
    /// command line alone, before the world's communicator exists):
    /// `--comm nccl`, or `--comm auto` with `--device cuda` on more than
    /// one rank (one GPU rank needs no communication library).
    pub fn wants_nccl(&self, world_size: usize) -> bool {
        use crate::comm::CommKind;
        let gpu = |kind: Option<CommKind>, device: Device| match kind {
            Some(CommKind::Nccl) => true,
            None | Some(CommKind::Auto) => device == Device::Cuda && world_size > 1,
            Some(_) => false,
        };
        match &self.command {
            Command::Train(a) => gpu(a.comm.comm, a.device),
            Command::Bench(BenchCommand::Train(a)) => gpu(a.comm.comm, a.device),
            Command::Bench(BenchCommand::Allreduce(a)) => a.comm == crate::comm::CommKind::Nccl,
            Command::Info | Command::Data(_) | Command::Plot(_) => false,
        }
    }
}

/// A positive number of seconds (fractions allowed).
fn parse_seconds(s: &str) -> std::result::Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train the multi-task model (synchronous data-parallel SGD).
    Train(Box<TrainArgs>),
    /// Print the world (ranks, hosts, MPI library) and the available backends.
    Info,
    /// Dataset tools.
    #[command(subcommand)]
    Data(DataCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Draw a PNG: training curves of a --metrics-out file, or busbw of
    /// `bench allreduce --json` output (told apart by the records). No MPI.
    Plot(PlotArgs),
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A `train --metrics-out` file, or `bench allreduce --json` output
    /// (one object per run; several runs may be appended to one file).
    pub input: PathBuf,
    /// The PNG to write (replaced atomically).
    #[arg(short = 'o', long = "out", value_name = "PNG")]
    pub out: PathBuf,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(320..=8000))]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(240..=8000))]
    pub height: u32,
    /// Title over the panels [default: the kind of plot and the file's name].
    #[arg(long)]
    pub title: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write the embedded synthetic dataset as a dataset directory (.npy or CSV files).
    Synth {
        /// Directory to create (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
        /// File format: npy (train/x.npy, ...) or csv (train.csv, val.csv).
        #[arg(long, value_enum, default_value_t = DataFormat::Npy)]
        format: DataFormat,
        /// Seed of the generated samples.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Training samples.
        #[arg(long, default_value_t = 65536)]
        train: usize,
        /// Validation samples.
        #[arg(long, default_value_t = 8192)]
        val: usize,
    },
}

/// The file formats of a dataset directory (docs/data-format.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataFormat {
    Npy,
    Csv,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time the training step, split into phases, against a GEMM-only baseline.
    Train(BenchTrainArgs),
    /// All-reduce bandwidth, in the columns of nccl-tests' all_reduce_perf.
    Allreduce(BenchAllreduceArgs),
}

/// nccl-tests' own short flags, so `all_reduce_perf` users need no manual.
#[derive(Args, Debug)]
pub struct BenchAllreduceArgs {
    /// Smallest message size in bytes (K, M, G suffixes).
    #[arg(short = 'b', long = "minbytes", default_value = "32M")]
    pub min_bytes: String,
    /// Largest message size in bytes (K, M, G suffixes).
    #[arg(short = 'e', long = "maxbytes", default_value = "32M")]
    pub max_bytes: String,
    /// Multiply the size by this factor between rows.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    pub step_factor: u64,
    /// Timed iterations per size.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    pub iters: u64,
    /// Warm-up iterations per size.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    pub warmup: u64,
    /// Data type (also f32, float32; bf16).
    #[arg(short = 'd', long = "datatype", value_enum, default_value_t = Datatype::Float)]
    pub dtype: Datatype,
    /// Reduction.
    #[arg(short = 'o', long = "op", value_enum, default_value_t = ReduceOp::Sum)]
    pub op: ReduceOp,
    /// Check results (1) or not (0).
    #[arg(short = 'c', long = "check", default_value_t = 1)]
    pub check: u8,
    /// All-reduce implementation: mpi, ring, nccl (GPU buffers), auto.
    #[arg(long, value_enum, default_value_t = crate::comm::CommKind::Auto)]
    pub comm: crate::comm::CommKind,
    /// Element type on the wire: f32, or bf16 (ring; accumulates in f32).
    #[arg(long, value_enum, default_value_t = crate::comm::Wire::F32)]
    pub wire: crate::comm::Wire,
    /// Print JSON (one object) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON object to FILE (nccl-tests' -J; the table is
    /// still printed).
    #[arg(short = 'J', long = "output_file", value_name = "FILE")]
    pub output_file: Option<std::path::PathBuf>,
    /// The time reported: 0 rank 0's, 1 the average over ranks, 2 the
    /// minimum, 3 the maximum (as nccl-tests).
    #[arg(short = 'a', long = "average", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub average: u8,
    /// Also time MPI_Allreduce on the same buffers right after each size
    /// (in the same run, so both see the same machine) and print the
    /// ring's busbw over it (--comm ring)
    #[arg(long = "vs-mpi")]
    pub vs_mpi: bool,
    /// nccl-tests' GPUs per thread: accepted; here every rank drives one
    /// device (start more ranks instead), so any other value only prints a note.
    #[arg(short = 'g', long = "ngpus", value_name = "N")]
    pub ngpus: Option<u32>,
    /// nccl-tests' threads per process: accepted; here one thread per
    /// rank, so any other value only prints a note.
    #[arg(short = 't', long = "nthreads", value_name = "N")]
    pub nthreads: Option<u32>,
    /// Test-only: corrupt one element of the result on the last rank, so
    /// the check must report it.
    #[arg(long, hide = true)]
    pub corrupt: bool,
}

/// `bench allreduce -d`: the element type, by nccl-tests' names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Datatype {
    #[value(alias = "f32", alias = "float32")]
    Float,
    #[value(alias = "bf16")]
    Bfloat16,
}

/// `bench allreduce -o`: the reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReduceOp {
    Sum,
    Avg,
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// Compute device: cpu, cuda, or auto (the GPU when every rank has one).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// f32, or bf16 (CUDA only): activations stored and GEMM operands in
    /// bf16; f32 accumulation, weights, gradients, optimizer state, losses.
    #[arg(long, value_enum, default_value_t = crate::backend::device::Precision::F32)]
    pub precision: crate::backend::device::Precision,
    /// Samples per rank per step (the global batch is this times the ranks).
    #[arg(long, default_value_t = 256)]
    pub batch_per_rank: usize,
    /// Timed steps (after the warm-up).
    #[arg(long, default_value_t = 50)]
    pub iters: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 1)]
    pub accum_steps: usize,
    #[command(flatten)]
    pub balance: BalanceArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub comm: CommArgs,
    #[command(flatten)]
    pub sync: SyncArgs,
}

/// How the global batch is split over the ranks (`[train] balance`).
#[derive(Args, Debug)]
pub struct BalanceArgs {
    /// even (sizes differ by at most one), static (by --balance-weights),
    /// or auto (by the speeds the ranks measure, every --balance-every
    /// steps). Any partition gives the global-batch mean gradient.
    #[arg(long, value_enum)]
    pub balance: Option<crate::config::BalanceMode>,
    /// With --balance static: one relative speed per rank, e.g. 1,1,2.
    #[arg(long, value_delimiter = ',', value_name = "W,W,...")]
    pub balance_weights: Option<Vec<f64>>,
    /// With --balance auto: re-plan every K steps.
    #[arg(long, value_name = "K")]
    pub balance_every: Option<u64>,
}

impl BalanceArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        if let Some(m) = self.balance {
            c.train.balance = m;
        }
        if let Some(w) = &self.balance_weights {
            c.train.balance_weights = w.clone();
        }
        if let Some(k) = self.balance_every {
            c.train.balance_every = k;
        }
    }
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Trunk layer widths, comma-separated (e.g. 256,256).
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Nonlinearity after each trunk layer.
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// Compute threads per rank for the CPU GEMMs (ranks are the unit of
    /// parallelism; raise this only with fewer ranks than cores). 1..=4.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4))]
    pub threads: u64,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML config file (examples/train.toml lists every key with its
    /// default); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dataset directory: tasks.toml + .npy files, or + train.csv/val.csv
    /// (docs/data-format.md) [default: the embedded synthetic set].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Read the next step's batch on a helper thread during the current
    /// step: on, off, or auto (off when the training rows are in memory
    /// already: synthetic rows that a run draws more than once and generates
    /// up front; else on for GPU ranks, and for CPU ranks when the host has
    /// a core their GEMM threads leave free, until the rows are all in
    /// memory).
    #[arg(long, value_enum)]
    pub prefetch: Option<crate::config::Prefetch>,
    /// Training steps (one global batch each).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Samples per step over all ranks (split as evenly as possible).
    #[arg(long)]
    pub global_batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f32>,
    /// Optimizer: sgd (with momentum) or adamw.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// SGD momentum (0: plain SGD).
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Decoupled weight decay (AdamW), or L2 added to the gradient (SGD).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    /// Warm-up steps of the cosine schedule [default: 5% of --steps].
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Learning rate at the end of the cosine decay.
    #[arg(long)]
    pub min_lr: Option<f32>,
    /// Clip the global gradient norm (0 disables).
    #[arg(long)]
    pub clip_norm: Option<f32>,
    /// Seed of the initial parameters and of the batch order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validate every N steps and at the end (0: only at the end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Print a training line every N steps, and at the first and last
    /// step (0: only those two); with --progress lines.
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Progress on rank 0: bar (also under mpirun, whose ranks see no
    /// terminal), lines (every --log-every steps), auto (the bar when rank
    /// 0's stderr is a terminal).
    #[arg(long, value_enum, default_value_t = crate::report::Progress::Auto)]
    pub progress: crate::report::Progress,
    /// Write the final parameters here (safetensors, PyTorch names).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Start from parameters saved by --save.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Write one JSON object per step and per evaluation (JSON Lines).
    #[arg(long)]
    pub metrics_out: Option<PathBuf>,
    /// Split each rank's slice into K micro-batches, communicate once.
    #[arg(long)]
    pub accum_steps: Option<usize>,
    /// Write a Chrome-trace timeline of all ranks (chrome://tracing, Perfetto).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Loss weight of a task, NAME=WEIGHT (repeatable).
    #[arg(long = "task-weight", value_name = "NAME=WEIGHT")]
    pub task_weight: Vec<String>,
    /// What a NaN/Inf loss or gradient does (detected over all ranks).
    #[arg(long, value_enum)]
    pub on_nonfinite: Option<crate::config::NonFinitePolicy>,
    /// With --on-nonfinite skip: end the run after M skipped updates in a row.
    #[arg(long, value_name = "M")]
    pub max_skips: Option<u64>,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    #[command(flatten)]
    pub balance: BalanceArgs,
    /// Compute device: cpu, cuda, or auto (the GPU when every rank has one).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// f32, or bf16 (CUDA only): activations stored and GEMM operands in
    /// bf16; f32 accumulation, weights, gradients, optimizer state, losses.
    #[arg(long, value_enum, default_value_t = crate::backend::device::Precision::F32)]
    pub precision: crate::backend::device::Precision,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub comm: CommArgs,
    #[command(flatten)]
    pub sync: SyncArgs,
    #[command(flatten)]
    pub tasks: TaskArgs,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// Write training checkpoints (parameters, optimizer state, step,
    /// config) into DIR/step-NNNNNNNN/.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// A checkpoint every N steps (0: only at the end and at --stop-after).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Keep the newest K checkpoints.
    #[arg(long, value_name = "K")]
    pub keep: Option<usize>,
    /// Continue from a checkpoint: `auto` (the newest in --checkpoint-dir,
    /// or a fresh start if there is none) or a checkpoint directory.
    #[arg(long, value_name = "auto|PATH")]
    pub resume: Option<String>,
    /// End cleanly after step K with a checkpoint, as a preemption would
    /// (the schedule stays that of --steps).
    #[arg(long, value_name = "K")]
    pub stop_after: Option<u64>,
}

impl CheckpointArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        let k = &mut c.checkpoint;
        if self.checkpoint_dir.is_some() {
            k.dir = self.checkpoint_dir.clone();
        }
        if let Some(n) = self.checkpoint_every {
            k.every = n;
        }
        if let Some(n) = self.keep {
            k.keep = n;
        }
        if self.resume.is_some() {
            k.resume = self.resume.clone();
        }
        if self.stop_after.is_some() {
            k.stop_after = self.stop_after;
        }
    }
}

#[derive(Args, Debug)]
pub struct CommArgs {
    /// Gradient all-reduce: mpi (MPI_Allreduce), ring (written out), nccl
    /// (GPU ranks; NCCL then carries every collective), auto (ring on CPU,
    /// nccl on more than one GPU rank).
    #[arg(long, value_enum)]
    pub comm: Option<crate::comm::CommKind>,
    /// Element type on the wire: f32, or bf16 (ring; accumulates in f32).
    #[arg(long, value_enum)]
    pub wire: Option<crate::comm::Wire>,
    /// Gradient bucket size in KiB.
    #[arg(long)]
    pub bucket_kib: Option<usize>,
    /// All-reduce buckets after backward instead of overlapping with it
    /// (the same as --overlap off).
    #[arg(long, conflicts_with = "overlap")]
    pub no_overlap: bool,
    /// Overlap the bucket all-reduces with backward on a communication
    /// thread: auto (on with more than one rank, more than one bucket and a
    /// core free for that thread; the header says which), on, off.
    #[arg(long, value_enum)]
    pub overlap: Option<crate::config::Overlap>,
    /// Seconds a collective may take before the watchdog ends the job,
    /// naming the step, the operation and the ranks missing (0: off).
    #[arg(long, value_name = "SECONDS")]
    pub comm_timeout: Option<f64>,
}

impl CommArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        if let Some(k) = self.comm {
            c.comm.kind = k;
        }
        if let Some(w) = self.wire {
            c.comm.wire = w;
        }
        if let Some(b) = self.bucket_kib {
            c.comm.bucket_kib = b;
        }
        if let Some(o) = self.overlap {
            c.comm.overlap = o;
        }
        if self.no_overlap {
            c.comm.overlap = crate::config::Overlap::Off;
        }
        if let Some(t) = self.comm_timeout {
            c.comm.timeout = t;
        }
    }
}

impl ModelArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        if let Some(h) = &self.hidden {
            c.model.hidden = h.clone();
        }
        if let Some(a) = self.activation {
            c.model.activation = a;
        }
    }
}

impl TrainArgs {
    /// Defaults, then the config file, then these flags; then validated.
    pub fn to_config(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_file(p)?,
            None => TrainConfig::default(),
        };
        self.model.apply(&mut c);
        macro_rules! set {
            ($flag:ident => $($field:tt)+) => {
                if let Some(v) = self.$flag.clone() {
                    c.$($field)+ = v;
                }
            };
        }
        set!(steps => train.steps);
        set!(global_batch => train.global_batch);
        set!(seed => train.seed);
        set!(eval_every => train.eval_every);
        set!(log_every => train.log_every);
        set!(lr => optim.lr);
        set!(optimizer => optim.optimizer);
        set!(momentum => optim.momentum);
        set!(weight_decay => optim.weight_decay);
        set!(schedule => optim.schedule);
        if self.warmup_steps.is_some() {
            c.optim.warmup_steps = self.warmup_steps;
        }
        set!(min_lr => optim.min_lr);
        set!(clip_norm => optim.clip_norm);
        set!(accum_steps => train.accum_steps);
        set!(on_nonfinite => train.on_nonfinite);
        set!(max_skips => train.max_skips);
        self.comm.apply(&mut c);
        self.sync.apply(&mut c);
        self.checkpoint.apply(&mut c);
        self.tasks.apply(&mut c);
        self.balance.apply(&mut c);
        if self.trace.is_some() {
            c.train.trace = self.trace.clone();
        }
        if self.data.is_some() {
            c.data.path = self.data.clone();
        }
        if let Some(p) = self.prefetch {
            c.data.prefetch = p;
        }
        if self.save.is_some() {
            c.train.save = self.save.clone();
        }
        if self.init.is_some() {
            c.train.init = self.init.clone();
        }
        if self.metrics_out.is_some() {
            c.train.metrics_out = self.metrics_out.clone();
        }
        for tw in &self.task_weight {
            let (name, w) = tw.split_once('=').ok_or_else(|| {
                Error::config(format!("--task-weight {tw:?}: expected NAME=WEIGHT"))
            })?;
            let w: f32 = w.parse().map_err(|_| {
                Error::config(format!("--task-weight {tw:?}: {w:?} is not a number"))
            })?;
            c.task_weights.insert(name.to_string(), w);
        }
        c.validate()?;
        Ok(c)
    }
}

/// Sets the GEMM thread count before any GEMM runs (the GEMM library reads
/// MATMUL_NUM_THREADS once). Called first thing in `main`, before MPI or
/// any other thread exists; `--threads` is validated again by clap later.
pub fn set_gemm_threads_from_args() {
    let args: Vec<String> = std::env::args().collect();
    let mut threads = "1".to_string();
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--threads=") {
            threads = v.to_string();
        } else if a == "--threads" {
            threads = args.get(i + 1).cloned().unwrap_or_default();
        }
    }
    if std::env::var_os("MATMUL_NUM_THREADS").is_none()
        || args.iter().any(|a| a.starts_with("--threads"))
    {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads) };
    }
}

/// Task weighting and diagnostics (`[tasks]`, src/train/weighting.rs).
#[derive(Args, Debug)]
pub struct TaskArgs {
    /// How the loss weights λ_t move: static (as given), uncertainty
    /// (learned log-variances), dwa (dynamic weight average), gradnorm
    /// (learned weights balancing gradient norms)
    #[arg(long, value_enum)]
    pub task_weighting: Option<crate::config::TaskWeighting>,
    /// DWA: steps per loss window; the weights change once per window
    #[arg(long, value_name = "W")]
    pub dwa_window: Option<u64>,
    /// DWA: softmax temperature τ
    #[arg(long, value_name = "T")]
    pub dwa_temperature: Option<f64>,
    /// GradNorm: asymmetry α, how hard tasks that train slower are pulled
    /// up
    #[arg(long, value_name = "ALPHA")]
    pub gradnorm_alpha: Option<f64>,
    /// Every N steps: per-task gradient norms at the last shared layer,
    /// their pairwise cosines and λ_t, into --metrics-out (0: never)
    #[arg(long, value_name = "N")]
    pub task_stats_every: Option<u64>,
    /// Learning rate of the learned task weights (uncertainty's s_t,
    /// GradNorm's w_t), constant; without it the model's learning rate
    /// at each step
    #[arg(long, value_name = "LR")]
    pub task_weight_lr: Option<f32>,
}

impl TaskArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        let k = &mut c.tasks;
        if let Some(v) = self.task_weighting {
            k.weighting = v;
        }
        if let Some(v) = self.dwa_window {
            k.dwa_window = v;
        }
        if let Some(v) = self.dwa_temperature {
            k.dwa_temperature = v;
        }
        if let Some(v) = self.gradnorm_alpha {
            k.gradnorm_alpha = v;
        }
        if let Some(v) = self.task_stats_every {
            k.stats_every = v;
        }
        if self.task_weight_lr.is_some() {
            k.weight_lr = self.task_weight_lr;
        }
    }
}
