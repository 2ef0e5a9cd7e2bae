//! The subcommands, as the binary runs them on every rank.

pub mod data;
pub mod info;
pub mod plot;
pub mod preflight;
pub mod summary;
pub mod synthetic;
pub mod train;

use crate::comm::CommKind;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::data::csv::{CsvDataset, is_csv_dir};
use crate::data::dir::DirDataset;
use crate::data::synthetic::Synthetic;
use crate::error::{Error, Result};
use crate::spec::ModelSpec;

/// The dataset a config names: a directory (CSV files when it holds a
/// `train.csv`, else .npy files), or the embedded synthetic set.
pub fn open_dataset(cfg: &TrainConfig) -> Result<Box<dyn Dataset>> {
    if let Some(dir) = &cfg.data.path {
        check_data_dir(dir)?;
    }
    Ok(match &cfg.data.path {
        Some(dir) if is_csv_dir(dir) => Box::new(CsvDataset::open(dir)?),
        Some(dir) => Box::new(DirDataset::open(dir)?),
        None => Box::new(Synthetic::new(
            cfg.data.synthetic_seed,
            cfg.data.synthetic_train,
            cfg.data.synthetic_val,
        )),
    })
}

/// The model for a config and a dataset: the dataset's tasks with loss
/// weights from the config where given.
pub fn model_spec(cfg: &TrainConfig, data: &dyn Dataset) -> Result<ModelSpec> {
    let mut tasks = data.tasks().to_vec();
    for (name, &w) in &cfg.task_weights {
        match tasks.iter_mut().find(|t| &t.name == name) {
            Some(t) => t.weight = w,
            None => {
                let known: Vec<&str> = data.tasks().iter().map(|t| t.name.as_str()).collect();
                return Err(Error::config(format!(
                    "task weight for unknown task {name:?}; the dataset has tasks {}",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(ModelSpec {
        input_dim: data.input_dim(),
        hidden: cfg.model.hidden.clone(),
        activation: cfg.model.activation,
        tasks,
    })
}

/// The CPU backend all-reduces host buffers (MPI or the ring): `--comm
/// nccl` is for GPU ranks.
pub fn check_cpu_comm(cfg: &TrainConfig) -> Result<()> {
    if cfg.comm.kind == CommKind::Nccl {
        return Err(Error::config(
            "--comm nccl all-reduces GPU gradients and needs --device cuda; the CPU backend \
             uses --comm ring or mpi",
        ));
    }
    Ok(())
}

/// What a dataset directory is and how to get one, for `--data` errors.
const DATA_HELP: &str = "a dataset directory holds tasks.toml with train/ and val/ .npy \
     files, or with train.csv and val.csv (docs/data-format.md); `ringtrain data synth --out DIR` \
     writes an example one";

/// `--data DIR` names a directory with a tasks.toml, or the error says
/// which flag, what is missing, and where to read about the format.
pub fn check_data_dir(dir: &std::path::Path) -> Result<()> {
    let what = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no such directory",
        Err(e) => return Err(Error::io(dir, e)),
        Ok(m) if !m.is_dir() => "not a directory",
        Ok(_) if !dir.join("tasks.toml").exists() => "no tasks.toml in it",
        Ok(_) => return Ok(()),
    };
    Err(Error::config(format!(
        "--data {}: {what}; {DATA_HELP}",
        dir.display()
    )))
}

/// `--device cuda` on several ranks runs every collective over NCCL, which
/// is set up before the backend: check the GPU first, so that a rank
/// without one gives the message one rank gives (no usable GPU, and why),
/// not NCCL's. Agreed over MPI when it is up (one message); without MPI the
/// NCCL set-up reports as before.
pub fn check_gpu_before_nccl(cli: &crate::cli::Cli, world: &crate::world::World) -> Result<()> {
    use crate::backend::cuda::probe::{Probe, probe};
    use crate::backend::device::Device;
    use crate::cli::{BenchCommand, Command};
    let device = match &cli.command {
        Command::Train(a) => a.device,
        Command::Bench(BenchCommand::Train(a)) => a.device,
        _ => return Ok(()),
    };
    if device != Device::Cuda || !crate::world::mpi_is_up() {
        return Ok(());
    }
    let ctl = crate::comm::control(world);
    let mine = match probe() {
        Probe::Usable { .. } => Ok(()),
        Probe::Unusable(why) => Err(Error::Gpu(format!(
            "--device cuda: no usable GPU on rank {} ({why})",
            world.rank
        ))),
    };
    crate::comm::agree(&*ctl, mine)
}
