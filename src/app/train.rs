//! `ringtrain train`: set-up (every check agreed by all ranks before any
//! work), the loop, evaluation and the saved parameters.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::synthetic::Shared;
use crate::app::{model_spec, open_dataset, preflight};
use crate::backend::Backend;
use crate::backend::cpu::Cpu;
use crate::backend::cuda::{CudaBackend, CudaOptions};
use crate::backend::device::{Choice, choose};
use crate::checkpoint::local;
use crate::checkpoint::training::{self, Snapshot, TrainState, opt_state_len};
use crate::checkpoint::{load_params, save_params_with};
use crate::cli::TrainArgs;
use crate::comm::{CommKind, Communicator, agree, check_same};
use crate::config::{Prefetch, TaskWeighting, TrainConfig};
use crate::data::{Dataset, Split, sampler};
use crate::error::{Error, Result};
use crate::fault;
use crate::model::layout::{ParamLayout, checksum, init_params};
use crate::report::Reporter;
use crate::spec::ModelSpec;
use crate::trace::Trace;
use crate::train::Trainer;
use crate::train::overlap::OverlapChoice;
use crate::train::weighting::TaskWeights;
use crate::watchdog::Watchdog;
use crate::world::World;

pub fn run(args: &TrainArgs, world: &World, comm: &dyn Communicator) -> Result<()> {
    let cfg = agree(comm, args.to_config())?;
    check_same(comm, "the effective configuration", config_hash(&cfg))?;
    // Before anything is written (the metrics file): a missing GPU is an
    // error like a bad flag.
    let choice = choose(args.device, args.precision, world.local_rank, comm)?;
    if let Choice::Cpu { .. } = choice {
        agree(comm, crate::app::check_cpu_comm(&cfg))?;
    }
    // From here every collective is watched (--comm-timeout).
    let wd = Watchdog::start(world, comm, cfg.comm_timeout())?;
    let watched = wd.watch(comm);
    let comm: &dyn Communicator = &watched;
    // Shared with the thread that reads batches ahead.
    let data: Arc<dyn Dataset> = agree(comm, open_dataset(&cfg))?.into();
    let spec = agree(comm, model_spec(&cfg, &*data))?;
    agree(comm, check_batch(&cfg, &*data, comm.size()))?;
    agree(comm, check_data_slice(&*data, comm))?;
    // Synthetic rows drawn more than once: generated once, on spare
    // cores during the steps or else up front, spread over the ranks.
    let gpu = matches!(choice, Choice::Cuda { .. });
    let params = ParamLayout::new(&spec).total;
    let threads = crate::backend::cpu_gemm::gemm_threads();
    let spare = crate::app::synthetic::background_pays(gpu, params, threads)
        && crate::train::overlap::spare_core_here(gpu, world.local_size);
    let shared = crate::app::synthetic::share(&cfg, &*data, comm, spare)?;
    // Before anything is allocated or written: the model fits in memory,
    // and every output can be written (rank 0 writes them).
    let most = crate::train::balance::max_slice(&cfg.train, comm.size());
    let rows = most.div_ceil(cfg.train.accum_steps);
    let ranks_here = world.local_size.max(1);
    agree(
        comm,
        preflight::check_memory(&cfg, &spec, rows.max(1), ranks_here, data.resident_bytes()),
    )?;
    let outputs = match world.is_root() {
        true => preflight::check_outputs(&cfg, &spec, world.size),
        false => Ok(()),
    };
    agree(comm, outputs)?;

    let layout = ParamLayout::new(&spec);
    let fault = fault::from_env();
    let mut init = agree(
        comm,
        match &cfg.train.init {
            Some(p) => load_params(p, &spec, &layout),
            None => Ok(init_params(&layout, cfg.train.seed)),
        },
    )?;
    fault::on_init(fault, world.rank, &mut init);
    check_same(comm, "checksum of the initial parameters", checksum(&init))?;
    // Rank 0, which writes the checkpoints, holds their directory for
    // the whole run: a second run on it is refused, not interleaved.
    let _ckpt_lock = agree(
        comm,
        match (&cfg.checkpoint.dir, world.is_root()) {
            (Some(dir), true) => training::lock_dir(dir).map(Some),
            _ => Ok(None),
        },
    )?;
    let resumed = resume_point(&cfg, comm, &spec, &layout)?;
    let first_step = resumed.as_ref().map_or(0, |r| r.state.step);
    // Rank 0 draws a progress bar on a terminal; every rank must know.
    let root_has_terminal = comm.all_gather_u64(std::io::stderr().is_terminal() as u64)?[0] == 1;
    let bar = args.progress.bar(root_has_terminal);
    let rep = agree(
        comm,
        Reporter::new(
            world.is_root(),
            &spec.tasks,
            cfg.train.steps,
            cfg.train.log_every,
            cfg.train.global_batch,
            cfg.train.metrics_out.as_deref(),
            bar,
            resumed.as_ref().map(|_| first_step),
        ),
    )?;

    let ctx = Run {
        cfg: &cfg,
        spec: &spec,
        data: &*data,
        world,
        comm,
        wd: &wd,
        resumed: resumed.as_ref(),
        fault,
        shared,
    };
    match choice {
        Choice::Cuda { ordinal } => {
            let opts = CudaOptions::from_env().with_precision(args.precision);
            let be = agree(comm, CudaBackend::new(ordinal, opts))?;
            let label = be.name();
            let mut tr = Trainer::new(&cfg, spec.clone(), comm, &wd, data.clone(), be, &init);
            tr.prefetch = prefetch_for(&cfg, world, &*data, true);
            train_loop(&ctx, tr, rep, &label)
        }
        choice @ Choice::Cpu { .. } => {
            let be = Cpu::<f32>::new();
            let mut tr = Trainer::new(&cfg, spec.clone(), comm, &wd, data.clone(), be, &init);
            tr.prefetch = prefetch_for(&cfg, world, &*data, false);
            train_loop(&ctx, tr, rep, &choice.cpu_label())
        }
    }
}

/// `[data] prefetch` for this rank: on, off, or auto: off when the
/// training rows are in memory already (a batch is then a copy of a few
/// KiB: nothing to hide behind the step; see the README's "Reading
/// ahead"), else `prefetch::auto` from the GEMM threads, the ranks on this
/// host and its cores (`overlap::spare_core_here`, the overlap thread's
/// rule).
pub fn prefetch_for(cfg: &TrainConfig, world: &World, data: &dyn Dataset, gpu: bool) -> bool {
    match cfg.data.prefetch {
        Prefetch::On => true,
        Prefetch::Off => false,
        Prefetch::Auto if data.in_memory(Split::Train) => false,
        Prefetch::Auto => crate::train::overlap::spare_core_here(gpu, world.local_size),
    }
}

/// What the training loop needs besides the trainer.
struct Run<'a> {
    cfg: &'a TrainConfig,
    spec: &'a ModelSpec,
    data: &'a dyn Dataset,
    world: &'a World,
    comm: &'a dyn Communicator,
    wd: &'a Watchdog,
    resumed: Option<&'a Resumed>,
    fault: Option<fault::Fault>,
    /// How the synthetic rows read more than once were generated.
    shared: Shared,
}

/// The steps, evaluations, checkpoints and the saved parameters, on any
/// backend.
fn train_loop<B: Backend>(
    run: &Run,
    mut tr: Trainer<'_, B>,
    mut rep: Reporter,
    backend: &str,
) -> Result<()> {
    let Run {
        cfg,
        spec,
        world,
        comm,
        wd,
        resumed,
        fault,
        ..
    } = *run;
    tr.fault = fault;
    let read_ahead = tr.prefetch;
    print_header(&rep, run, tr.num_params(), backend, read_ahead, &tr.overlap);
    let first_step = resumed.map_or(0, |r| r.state.step);
    rep.run_record(first_step, tr.overlap.json())?;
    if let Some(r) = resumed {
        tr.restore(&r.state)
            .map_err(|m| Error::checkpoint(&r.path, m))?;
        rep.line(&format!(
            "resumed from {} at step {first_step}/{} (written by {} rank(s))",
            r.path.display(),
            cfg.train.steps,
            r.world_size
        ));
    }

    // From here on every rank runs the same collectives; an error on one
    // rank (an unreadable file, a broken connection) must end all of them.
    // Errors every rank has at the same point (agreed ones, NaN/Inf under
    // `abort`) return instead, for one message and a clean exit.
    let fatal = |e: Error| -> ! {
        crate::say!("ringtrain: rank {}: error: {e}", world.rank);
        world.abort(2)
    };
    let saved = resumed.and_then(|r| r.state.balance.as_ref());
    let from_checkpoint = saved.is_some() && saved == tr.balance.state().as_ref();
    rep.balance(&tr.balance, first_step, from_checkpoint)
        .unwrap_or_else(|e| fatal(e));
    if cfg.train.trace.is_some() {
        comm.barrier()?;
        tr.clock.trace = Some(Trace::new(world.rank, std::time::Instant::now()));
    }
    let steps = cfg.train.steps;
    let last = cfg.checkpoint.stop_after.unwrap_or(steps);
    let mut times = super::summary::RunTimes::start();
    for step in first_step..last {
        wd.set_step(step);
        fault::before_step(fault, world.rank, step);
        let s0 = std::time::Instant::now();
        let r = match tr.step(step, true) {
            Ok(r) => r,
            Err(e @ (Error::NonFinite(_) | Error::OtherRank(_))) => return Err(e),
            Err(e) => fatal(e),
        };
        times.step(&r.times, r.rows, s0.elapsed().as_secs_f64());
        // --sync local: a round's reports come at its exchange.
        for r in tr.reports(r) {
            rep.step(&r).unwrap_or_else(|e| fatal(e));
        }
        let done = step + 1;
        if crate::train::local::eval_due(cfg, done) {
            let e0 = std::time::Instant::now();
            let m = tr.evaluate().unwrap_or_else(|e| fatal(e));
            rep.eval(done, &m).unwrap_or_else(|e| fatal(e));
            times.eval += e0.elapsed().as_secs_f64();
        }
        let every = cfg.checkpoint.every;
        if cfg.checkpoint.dir.is_some() && ((every > 0 && done % every == 0) || done == last) {
            let c0 = std::time::Instant::now();
            settle_round(&mut tr, &mut rep, world)?;
            write_checkpoint(run, &tr, &rep, done)?;
            times.checkpoint += c0.elapsed().as_secs_f64();
        }
    }
    settle_round(&mut tr, &mut rep, world)?;
    rep.finish().unwrap_or_else(|e| fatal(e));
    for l in times.finish(comm).unwrap_or_else(|e| fatal(e)) {
        rep.line(&l);
    }
    if let (Some(trace), Some(path)) = (tr.clock.trace.take(), &cfg.train.trace) {
        trace.write(comm, path).unwrap_or_else(|e| fatal(e));
        rep.line(&format!("wrote timeline to {}", path.display()));
    }
    if last < steps {
        // Not finished (any marker is a finished run's this one continued).
        if let (Some(dir), true) = (&cfg.checkpoint.dir, world.is_root()) {
            let _ = std::fs::remove_file(dir.join(FINISHED));
        }
        rep.line(&format!(
            "stopped after step {last}/{steps} (--stop-after); continue with --resume auto"
        ));
        return Ok(());
    }

    let saved = match (&cfg.train.save, world.is_root()) {
        (Some(path), true) => {
            let meta = task_weight_metadata(spec, &tr.weights);
            save_params_with(path, spec, &tr.model.layout, &tr.params_to_host(), &meta)
                .map(|()| rep.line(&format!("saved parameters to {}", path.display())))
        }
        _ => Ok(()),
    };
    agree(comm, saved)?;
    let marked = match (&cfg.checkpoint.dir, world.is_root()) {
        (Some(dir), true) => mark_finished(dir, steps),
        _ => Ok(()),
    };
    agree(comm, marked)
}

/// `--sync local`, inside a round (a checkpoint, or the run stops): the
/// round's step records are exchanged now and reported. NaN/Inf errors
/// return (every rank has them); any other error ends the job.
fn settle_round<B: Backend>(
    tr: &mut Trainer<'_, B>,
    rep: &mut Reporter,
    world: &World,
) -> Result<()> {
    let fatal = |e: Error| -> ! {
        crate::say!("ringtrain: rank {}: error: {e}", world.rank);
        world.abort(2)
    };
    let reports = match tr.settle_round() {
        Ok(r) => r,
        Err(e @ (Error::NonFinite(_) | Error::OtherRank(_))) => return Err(e),
        Err(e) => fatal(e),
    };
    for r in reports {
        rep.step(&r).unwrap_or_else(|e| fatal(e));
    }
    Ok(())
}

/// The file in `--checkpoint-dir` that says the run reached its last step
/// (a run stopped by `--stop-after` or a signal has none), for
/// launch/resume-loop.sh and other scripts; see docs/files.md.
pub const FINISHED: &str = "FINISHED";

fn mark_finished(dir: &Path, steps: u64) -> Result<()> {
    let text = format!("finished: step {steps}/{steps}\n");
    crate::fsutil::write_atomic(&dir.join(FINISHED), text.as_bytes())
}

/// The `--save` metadata of the task weights: the method and the final
/// λ_t per task (JSON).
fn task_weight_metadata(spec: &ModelSpec, w: &TaskWeights) -> Vec<(&'static str, String)> {
    let lambdas: serde_json::Map<String, serde_json::Value> = spec
        .tasks
        .iter()
        .zip(w.lambdas())
        .map(|(t, l)| (t.name.clone(), serde_json::json!(l)))
        .collect();
    vec![
        ("ringtrain.task_weighting", w.method().name().to_string()),
        (
            "ringtrain.task_weights",
            serde_json::Value::Object(lambdas).to_string(),
        ),
    ]
}

/// A stable hash of the whole configuration, compared across ranks before
/// anything depends on it.
fn config_hash(cfg: &TrainConfig) -> u64 {
    let json = serde_json::to_vec(cfg).expect("config serialises");
    crate::digest::hash64(&[&json])
}

/// Rank 0 writes the checkpoint after `done` steps; every rank learns
/// whether that worked. The others wait meanwhile; the watchdog gives
/// rank 0 the time as long as the write reports progress.
fn write_checkpoint<B: Backend>(r: &Run, tr: &Trainer<B>, rep: &Reporter, done: u64) -> Result<()> {
    let (cfg, world, comm, fault) = (r.cfg, r.world, r.comm, r.fault);
    let Some(dir) = &cfg.checkpoint.dir else {
        return Ok(());
    };
    // The checkpoint is step-<done>: the watchdog names that step.
    r.wd.set_step(done);
    // --sync local: every rank's own state, gathered to all (collective).
    let local = tr.local_state()?;
    let written = if world.is_root() {
        let busy = r.wd.marker().busy("writing a checkpoint");
        let progress = || busy.progress();
        let state = TrainState {
            local,
            ..tr.snapshot(done)
        };
        let snap = Snapshot {
            spec: &tr.spec,
            layout: &tr.model.layout,
            config: cfg,
            world_size: comm.size(),
            state: &state,
        };
        let between_files = || fault::in_checkpoint_write(fault, done, &progress);
        training::save(dir, &snap, &progress, between_files).and_then(|path| {
            training::retain(dir, cfg.checkpoint.keep)?;
            rep.line(&format!("checkpoint: {}", path.display()));
            Ok(())
        })
    } else {
        Ok(())
    };
    agree(comm, written)
}

/// Where this run starts: a verified checkpoint (read by rank 0, sent to
/// the others, whose file systems need not see it), or None for step 0.
fn resume_point(
    cfg: &TrainConfig,
    comm: &dyn Communicator,
    spec: &ModelSpec,
    layout: &ParamLayout,
) -> Result<Option<Resumed>> {
    let found = agree(
        comm,
        match comm.rank() {
            0 => find_checkpoint(cfg, spec, layout),
            _ => Ok(None),
        },
    )?;
    let mut head = [0u64; 5];
    if let Some(r) = &found {
        let s = &r.state;
        head = [1, s.step, s.updates, s.skips_in_a_row, r.world_size as u64];
    }
    let mut bytes: Vec<u8> = head.iter().flat_map(|v| v.to_le_bytes()).collect();
    comm.broadcast(0, &mut bytes)?;
    let head: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    if head[0] == 0 {
        return Ok(None);
    }
    let mut r = found.unwrap_or_else(|| Resumed {
        path: PathBuf::new(),
        world_size: head[4] as usize,
        state: TrainState {
            step: head[1],
            updates: head[2],
            skips_in_a_row: head[3],
            params: vec![0.0; layout.total],
            opt_state: vec![0.0; opt_state_len(layout, cfg.optim.optimizer)],
            local: None,
            weighting: None,
            balance: None,
        },
    });
    broadcast_f32(comm, &mut r.state.params)?;
    broadcast_f32(comm, &mut r.state.opt_state)?;
    let opt_len = r.state.opt_state.len();
    r.state.local = local::broadcast(comm, r.state.local.take(), layout.total, opt_len)?;
    r.state.weighting = broadcast_serde(comm, r.state.weighting.take())?;
    r.state.balance = broadcast_serde(comm, r.state.balance.take())?;
    check_same(
        comm,
        "checksum of the resumed parameters",
        checksum(&r.state.params),
    )?;
    Ok(Some(r))
}

struct Resumed {
    path: PathBuf,
    world_size: usize,
    state: TrainState,
}

/// On rank 0: the checkpoint `--resume` names, loaded and verified; and a
/// fresh run must not write into a directory holding another run's.
fn find_checkpoint(
    cfg: &TrainConfig,
    spec: &ModelSpec,
    layout: &ParamLayout,
) -> Result<Option<Resumed>> {
    let ck = &cfg.checkpoint;
    if let Some(dir) = &ck.dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let path = match (ck.resume.as_deref(), &ck.dir) {
        (None, Some(dir)) => match training::latest(dir)? {
            Some(p) => {
                return Err(Error::config(format!(
                    "--checkpoint-dir {} already holds checkpoints of a run (newest: {}); continue it with --resume auto, or choose another directory",
                    dir.display(),
                    p.display()
                )));
            }
            None => return Ok(None),
        },
        (None, None) => return Ok(None),
        (Some("auto"), Some(dir)) => {
            match training::load_newest(dir, spec, layout, cfg.optim.optimizer)? {
                Some((path, loaded, damaged)) => {
                    warn_damaged(&damaged, &path);
                    return resumable(cfg, path, loaded);
                }
                None => return Ok(None),
            }
        }
        (Some("auto"), None) => {
            return Err(Error::config("--resume auto needs --checkpoint-dir"));
        }
        (Some(p), _) => PathBuf::from(p),
    };
    let loaded = training::load(&path, spec, layout, cfg.optim.optimizer)?;
    resumable(cfg, path, loaded)
}

/// `--resume auto` passed over damaged checkpoints: say which, and why.
fn warn_damaged(damaged: &[training::Damaged], used: &Path) {
    for d in damaged {
        crate::say!(
            "ringtrain: warning: skipping damaged checkpoint {} ({}); resuming from {} instead",
            d.path.display(),
            match &d.error {
                Error::Checkpoint { msg, .. } => msg.clone(),
                e => e.to_string(),
            },
            used.display()
        );
    }
}

/// A loaded checkpoint this run may continue from.
fn resumable(
    cfg: &TrainConfig,
    path: PathBuf,
    loaded: training::Loaded,
) -> Result<Option<Resumed>> {
    let ck = &cfg.checkpoint;
    training::check_same_trajectory(&loaded.config, cfg)
        .map_err(|m| Error::checkpoint(&path, m))?;
    let step = loaded.state.step;
    if let Some(k) = ck.stop_after.filter(|&k| k <= step) {
        return Err(Error::config(format!(
            "--stop-after {k}: the checkpoint {} is already at step {step}",
            path.display()
        )));
    }
    Ok(Some(Resumed {
        path,
        world_size: loaded.world_size,
        state: loaded.state,
    }))
}

/// Rank 0's value (or None) on every rank, through JSON (f64 values
/// round-trip exactly). The length goes first, so the others can size
/// their buffer.
fn broadcast_serde<T: serde::Serialize + serde::de::DeserializeOwned>(
    comm: &dyn Communicator,
    value: Option<T>,
) -> Result<Option<T>> {
    let mut bytes = serde_json::to_vec(&value).expect("state serialises");
    let mut len = (bytes.len() as u64).to_le_bytes();
    comm.broadcast(0, &mut len)?;
    bytes.resize(u64::from_le_bytes(len) as usize, 0);
    comm.broadcast(0, &mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::config(format!("resumed state: {e}")))
}

/// Rank 0's values to every rank (all pass buffers of the same length).
fn broadcast_f32(comm: &dyn Communicator, v: &mut [f32]) -> Result<()> {
    if v.is_empty() {
        return Ok(());
    }
    let mut bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    comm.broadcast(0, &mut bytes)?;
    for (x, c) in v.iter_mut().zip(bytes.chunks_exact(4)) {
        *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    Ok(())
}

/// The global batch must give every rank at least one sample and must
/// fit in the training set (a batch never repeats a sample).
fn check_batch(cfg: &TrainConfig, data: &dyn Dataset, world: usize) -> Result<()> {
    let gb = cfg.train.global_batch;
    if gb < world {
        return Err(Error::config(format!(
            "--global-batch {gb} is smaller than the number of ranks ({world}): every rank needs at least one sample"
        )));
    }
    let fewest = gb / world;
    let k = cfg.train.accum_steps;
    if fewest < k {
        return Err(Error::config(format!(
            "--accum-steps {k}: with --global-batch {gb} over {world} ranks some rank has only {fewest} sample(s), fewer than the micro-batches"
        )));
    }
    let n = data.len(Split::Train);
    if gb > n {
        return Err(Error::config(format!(
            "--global-batch {gb} is larger than the training set ({n} samples)"
        )));
    }
    crate::train::balance::check(&cfg.train, world)
}

/// Each rank checks its slice of both splits; together they check all.
fn check_data_slice(data: &dyn Dataset, comm: &dyn Communicator) -> Result<()> {
    for split in [Split::Train, Split::Val] {
        let r = sampler::shard(data.len(split), comm.rank(), comm.size());
        data.validate_rows(split, r.start, r.end)?;
    }
    Ok(())
}

/// The run's header lines: world, model, data, communication.
fn print_header(
    rep: &Reporter,
    run: &Run,
    params: usize,
    backend: &str,
    read_ahead: bool,
    overlap: &OverlapChoice,
) {
    let Run {
        cfg,
        spec,
        data,
        world,
        comm,
        ..
    } = *run;
    let heads: Vec<String> = spec
        .tasks
        .iter()
        .map(|t| {
            format!(
                "{}:{}({}) λ={}",
                t.name,
                t.kind.name(),
                t.kind.out_dim(),
                t.weight
            )
        })
        .collect();
    let per_rank = sampler::shard(cfg.train.global_batch, 0, comm.size()).len();
    rep.line(&format!(
        "ringtrain: {} rank(s) via {} ({}), backend {backend}, {} thread(s)/rank",
        world.size,
        comm.name(),
        world.mpi_library.as_deref().unwrap_or("no MPI"),
        std::env::var("MATMUL_NUM_THREADS").unwrap_or_else(|_| "1".into())
    ));
    rep.line(&format!(
        "model: {} -> {:?} {} -> {} | {} parameters",
        spec.input_dim,
        spec.hidden,
        spec.activation.name(),
        heads.join(", "),
        params
    ));
    rep.line(&format!(
        "data: {}{} | global batch {} (~{} per rank, {} micro-batch(es)) | {} steps | {} lr {} {} schedule",
        data.describe(),
        match (run.shared, read_ahead) {
            (Shared::Background, true) => ", generated on a spare core, read ahead until then",
            (Shared::Background, false) => ", generated on a spare core",
            (_, true) => ", read ahead",
            (_, false) => "",
        },
        cfg.train.global_batch,
        per_rank,
        cfg.train.accum_steps,
        cfg.train.steps,
        lower(cfg.optim.optimizer),
        cfg.optim.lr,
        lower(cfg.optim.schedule)
    ));
    let w = &cfg.tasks;
    let weighting = match w.weighting {
        TaskWeighting::Static => None,
        TaskWeighting::Uncertainty => {
            Some("uncertainty (learned s_t = log σ_t², λ_t = c_t·e^(−s_t), from s_t = 0)".into())
        }
        TaskWeighting::Dwa => Some(format!(
            "dwa (windows of {} steps, τ {}; λ_t = 1 for the first two)",
            w.dwa_window, w.dwa_temperature
        )),
        TaskWeighting::Gradnorm => Some(format!(
            "gradnorm (α {}, learned w_t from 1, Σ w_t = {})",
            w.gradnorm_alpha,
            spec.tasks.len()
        )),
    };
    if let Some(how) = weighting {
        rep.line(&format!("task weights: {how}; the λ above are not used"));
    }
    if w.stats_every > 0 {
        rep.line(&format!(
            "task stats: gradient norms and cosines at the last shared layer every {} steps",
            w.stats_every
        ));
    }
    let c = &cfg.comm;
    // On CPU `auto` is the ring; say what carries its chunks.
    let ring = backend.starts_with("cpu")
        && matches!(c.kind, CommKind::Ring | CommKind::Auto)
        && run.world.size > 1;
    let kind = match ring {
        true => format!(
            "{} (ring over {})",
            lower(c.kind),
            crate::comm::ring_transport(run.world)
        ),
        false => lower(c.kind),
    };
    match cfg.sync.is_local() {
        // The parameter all-reduce of the outer step uses the same
        // communicator; no gradient is averaged.
        true => rep.line(&format!(
            "gradients: not averaged; parameters: all-reduce {} in buckets of {} KiB at each outer step",
            kind,
            c.bucket_kib
        )),
        false => rep.line(&format!(
            "gradients: all-reduce {}, wire {}, buckets of {} KiB, overlap {}",
            kind,
            lower(c.wire),
            c.bucket_kib,
            overlap.describe()
        )),
    }
    rep.line(&cfg.sync.describe());
}

/// A config enum as the user spells it ("adamw", "cosine", "ring").
fn lower(v: impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}
