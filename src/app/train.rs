//! `ringtrain train`: set-up (every check agreed by all ranks before any
//! work), the loop, evaluation and the saved parameters.

use std::io::IsTerminal;

use crate::app::{model_spec, open_dataset};
use crate::backend::Backend;
use crate::backend::cpu::Cpu;
use crate::backend::cuda::sync::HostStagedSync;
use crate::backend::cuda::{CudaBackend, CudaOptions};
use crate::backend::device::{Choice, choose};
use crate::checkpoint::{load_params, save_params};
use crate::cli::TrainArgs;
use crate::comm::bucket::plan_buckets;
use crate::comm::{Communicator, agree, check_same};
use crate::config::TrainConfig;
use crate::data::{Dataset, Split, sampler};
use crate::error::{Error, Result};
use crate::fault;
use crate::model::layout::{ParamLayout, checksum, init_params};
use crate::model::spec::ModelSpec;
use crate::report::Reporter;
use crate::trace::Trace;
use crate::train::{GradBuckets, Trainer, host_grad_sync};
use crate::world::World;

pub fn run(args: &TrainArgs, world: &World, comm: &dyn Communicator) -> Result<()> {
    let cfg = agree(comm, args.to_config())?;
    let data = agree(comm, open_dataset(&cfg))?;
    let spec = agree(comm, model_spec(&cfg, &*data))?;
    agree(comm, check_batch(&cfg, &*data, comm.size()))?;
    agree(comm, check_data_slice(&*data, comm))?;
    // Before anything is written (the metrics file): a missing GPU is an
    // error like a bad flag.
    let choice = choose(&args.device, args.precision, world.local_rank, comm)?;

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
    // Rank 0 draws a progress bar on a terminal; every rank must know.
    let root_has_terminal = comm.all_gather_u64(std::io::stderr().is_terminal() as u64)?[0] == 1;
    let rep = agree(
        comm,
        Reporter::new(
            world.is_root(),
            &spec.tasks,
            cfg.train.steps,
            cfg.train.log_every,
            cfg.train.global_batch,
            cfg.train.metrics_out.as_deref(),
            root_has_terminal,
        ),
    )?;

    let ctx = Run {
        cfg: &cfg,
        spec: &spec,
        data: &*data,
        world,
        comm,
    };
    match choice {
        Choice::Cuda { ordinal } => {
            let opts = CudaOptions::from_env().with_precision(args.precision);
            let be = agree(comm, CudaBackend::new(ordinal, opts))?;
            let label = be.name();
            let make_sync = cuda_grad_sync(&cfg, comm.size(), be.stream().clone());
            let tr = Trainer::new(&cfg, spec.clone(), comm, make_sync, &*data, be, &init);
            train_loop(&ctx, tr, rep, &label, fault)
        }
        choice @ Choice::Cpu { .. } => {
            let make_sync = host_grad_sync(&cfg, comm.size());
            let be = Cpu::<f32>::new();
            let tr = Trainer::new(&cfg, spec.clone(), comm, make_sync, &*data, be, &init);
            train_loop(&ctx, tr, rep, &choice.cpu_label(), fault)
        }
    }
}

/// The gradient sync of the CUDA backend: none for one rank, else through
/// host memory with the host communicator (`HostStagedSync`). An NCCL
/// sync on the compute stream slots in here, by `cfg.comm.kind`.
pub fn cuda_grad_sync<'g>(
    cfg: &'g TrainConfig,
    size: usize,
    stream: std::sync::Arc<cudarc::driver::CudaStream>,
) -> impl Fn(&mut cudarc::driver::CudaSlice<f32>, &ParamLayout) -> Box<dyn GradBuckets> + 'g {
    move |grads, layout| {
        use cudarc::driver::DevicePtr;
        let ptr = grads.device_ptr(&stream).0;
        let buckets = plan_buckets(layout, cfg.comm.bucket_kib * 1024 / 4);
        Box::new(HostStagedSync::new(
            ptr,
            layout.total,
            stream.clone(),
            buckets,
            size,
            cfg.comm.kind,
            cfg.comm.wire,
        ))
    }
}

/// What the training loop needs besides the trainer.
struct Run<'a> {
    cfg: &'a TrainConfig,
    spec: &'a ModelSpec,
    data: &'a dyn Dataset,
    world: &'a World,
    comm: &'a dyn Communicator,
}

/// The steps, evaluations and the saved parameters, on any backend.
fn train_loop<B: Backend>(
    r: &Run,
    mut tr: Trainer<'_, B>,
    mut rep: Reporter,
    backend: &str,
    fault: Option<fault::Fault>,
) -> Result<()> {
    let Run {
        cfg,
        spec,
        data,
        world,
        comm,
    } = *r;
    print_header(&rep, world, comm, cfg, spec, data, tr.num_params(), backend);

    // From here on every rank runs the same collectives; an error on one
    // rank (an unreadable file, a full disk) must end all of them.
    let fatal = |e: Error| -> ! {
        eprintln!("ringtrain: rank {}: error: {e}", world.rank);
        world.abort(2)
    };
    if cfg.train.trace.is_some() {
        comm.barrier()?;
        tr.trace = Some(Trace::new(world.rank, std::time::Instant::now()));
    }
    let steps = cfg.train.steps;
    for step in 0..steps {
        fault::before_step(fault, world.rank, step);
        let r = tr
            .step(step, rep.needs_losses(step))
            .unwrap_or_else(|e| fatal(e));
        rep.step(&r).unwrap_or_else(|e| fatal(e));
        let done = step + 1;
        let every = cfg.train.eval_every;
        if (every > 0 && done % every == 0) || done == steps {
            let m = tr.evaluate().unwrap_or_else(|e| fatal(e));
            rep.eval(done, &m).unwrap_or_else(|e| fatal(e));
        }
    }
    rep.finish().unwrap_or_else(|e| fatal(e));
    if let (Some(trace), Some(path)) = (tr.trace.take(), &cfg.train.trace) {
        trace.write(comm, path).unwrap_or_else(|e| fatal(e));
        rep.line(&format!("wrote timeline to {}", path.display()));
    }

    let saved = match (&cfg.train.save, world.is_root()) {
        (Some(path), true) => save_params(path, spec, &tr.model.layout, &tr.params_to_host())
            .map(|()| rep.line(&format!("saved parameters to {}", path.display()))),
        _ => Ok(()),
    };
    agree(comm, saved)
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
    Ok(())
}

/// Each rank checks its slice of both splits; together they check all.
fn check_data_slice(data: &dyn Dataset, comm: &dyn Communicator) -> Result<()> {
    for split in [Split::Train, Split::Val] {
        let r = sampler::shard(data.len(split), comm.rank(), comm.size());
        data.validate_rows(split, r.start, r.end)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_header(
    rep: &Reporter,
    world: &World,
    comm: &dyn Communicator,
    cfg: &TrainConfig,
    spec: &ModelSpec,
    data: &dyn Dataset,
    params: usize,
    backend: &str,
) {
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
        "data: {} | global batch {} (~{} per rank, {} micro-batch(es)) | {} steps | {} lr {} {} schedule",
        data.describe(),
        cfg.train.global_batch,
        per_rank,
        cfg.train.accum_steps,
        cfg.train.steps,
        lower(cfg.optim.optimizer),
        cfg.optim.lr,
        lower(cfg.optim.schedule)
    ));
    let c = &cfg.comm;
    rep.line(&format!(
        "gradients: all-reduce {}, wire {}, buckets of {} KiB, overlap {}",
        lower(c.kind),
        lower(c.wire),
        c.bucket_kib,
        if c.overlap { "on" } else { "off" }
    ));
}

/// A config enum as the user spells it ("adamw", "cosine", "ring").
fn lower(v: impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}
