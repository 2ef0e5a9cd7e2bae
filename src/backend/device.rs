//! `--device auto|cpu|cuda`: which backend this run uses, agreed by all
//! ranks (every rank calls [`choose`] at the same point; it runs
//! collectives).

use super::cuda::probe::{Probe, device_for, probe};
use crate::comm::{Communicator, agree};
use crate::error::{Error, Result};

/// `--precision`: f32 everywhere, or bf16 GEMM operands (CUDA only;
/// accumulation, master weights, optimizer state and losses stay f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// The backend a run uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The CPU backend; with `--device auto`, why not the GPU.
    Cpu { no_gpu: Option<String> },
    /// The CUDA backend on this device ordinal.
    Cuda { ordinal: usize },
}

impl Choice {
    /// The backend as the run header names it: "cpu f32", "cpu f32 (no
    /// GPU: libcuda.so not found)". The CUDA backend names itself.
    pub fn cpu_label(&self) -> String {
        match self {
            Choice::Cpu { no_gpu: Some(why) } => format!("cpu f32 (no GPU: {why})"),
            _ => "cpu f32".into(),
        }
    }
}

/// `--device`: which backend a run asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The GPU when every rank has a usable one, else the CPU (says why).
    Auto,
    /// The CPU backend (the reference).
    #[default]
    Cpu,
    /// The CUDA backend; an error on every rank if some rank has no GPU.
    Cuda,
}

/// Decides the backend on every rank alike. `cuda` without a usable GPU
/// on some rank is an error on all ranks (the lowest such rank prints
/// why); `auto` takes the GPU only when every rank has one, else the CPU
/// with the reason. The GPU is the local rank modulo the device count.
pub fn choose(
    device: Device,
    precision: Precision,
    local_rank: usize,
    comm: &dyn Communicator,
) -> Result<Choice> {
    let choice = choose_backend(device, local_rank, comm)?;
    // Every rank made the same choice: the same error everywhere.
    if precision == Precision::Bf16 {
        if let Choice::Cpu { no_gpu } = &choice {
            let why = no_gpu
                .as_deref()
                .map_or(String::new(), |w| format!(" (no GPU: {w})"));
            return agree(
                comm,
                Err(Error::config(format!(
                    "--precision bf16 needs the CUDA backend; this run uses the CPU{why}"
                ))),
            );
        }
    }
    Ok(choice)
}

fn choose_backend(device: Device, local_rank: usize, comm: &dyn Communicator) -> Result<Choice> {
    if device == Device::Cpu {
        return Ok(Choice::Cpu { no_gpu: None });
    }
    let found = probe();
    if device == Device::Cuda {
        let mine = match &found {
            Probe::Usable { count } => Ok(Choice::Cuda {
                ordinal: device_for(local_rank, *count),
            }),
            Probe::Unusable(why) => Err(Error::Gpu(format!(
                "--device cuda: no usable GPU on rank {} ({why})",
                comm.rank()
            ))),
        };
        return agree(comm, mine);
    }
    // auto: the GPU only if every rank has one.
    let usable = comm.all_gather_u64(matches!(found, Probe::Usable { .. }) as u64)?;
    match (found, usable.iter().position(|&u| u == 0)) {
        (Probe::Usable { count }, None) => Ok(Choice::Cuda {
            ordinal: device_for(local_rank, count),
        }),
        (Probe::Unusable(why), _) => Ok(Choice::Cpu { no_gpu: Some(why) }),
        (Probe::Usable { .. }, Some(r)) => Ok(Choice::Cpu {
            no_gpu: Some(format!("rank {r} has none")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::single::Single;

    #[test]
    fn cpu_is_chosen_without_probing() {
        assert_eq!(
            choose(Device::Cpu, Precision::F32, 0, &Single).unwrap(),
            Choice::Cpu { no_gpu: None }
        );
        let e = choose(Device::Cpu, Precision::Bf16, 0, &Single)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--precision bf16 needs the CUDA backend"), "{e}");
    }

    #[test]
    fn auto_falls_back_to_the_cpu_with_a_reason_when_no_gpu() {
        if let Probe::Unusable(why) = probe() {
            let c = choose(Device::Auto, Precision::F32, 0, &Single).unwrap();
            assert_eq!(
                c,
                Choice::Cpu {
                    no_gpu: Some(why.clone())
                }
            );
            assert_eq!(c.cpu_label(), format!("cpu f32 (no GPU: {why})"));
            let e = choose(Device::Cuda, Precision::F32, 0, &Single)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--device cuda: no usable GPU") && e.contains(&why),
                "{e}"
            );
        }
    }
}
