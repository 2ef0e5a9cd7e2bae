//! Reading a rank's slice of a global batch, and reading the next step's
//! while the current one computes (on a helper thread, so that data
//! generation or file reads stay off the critical path: a GPU would
//! otherwise wait for the host between steps).

use std::ops::Range;

use crate::data::{Dataset, Split, sampler};
use crate::error::Result;
use crate::fault::Fault;

/// Inputs [rows, input_dim] and labels [rows, label_cols] on the host.
pub struct HostBatch {
    pub x: Vec<f32>,
    pub labels: Vec<f32>,
}

impl HostBatch {
    pub fn zeros(rows: usize, input_dim: usize, label_cols: usize) -> Self {
        HostBatch {
            x: vec![0.0; rows * input_dim],
            labels: vec![0.0; rows * label_cols],
        }
    }

    /// A zero batch of the same size.
    pub fn same_size(&self) -> Self {
        HostBatch {
            x: vec![0.0; self.x.len()],
            labels: vec![0.0; self.labels.len()],
        }
    }
}

/// What reading this rank's slice of any step's global batch needs.
#[derive(Clone)]
pub struct Loader<'a> {
    pub data: &'a dyn Dataset,
    pub seed: u64,
    pub global_batch: usize,
    /// This rank's rows of every global batch.
    pub shard: Range<usize>,
    pub input_dim: usize,
    pub label_cols: usize,
    pub rank: usize,
}

impl Loader<'_> {
    /// This rank's rows of the global batch of (seed, `step`) into the
    /// front of `b`, with the test-only fault switch applied.
    pub fn load(&self, step: u64, fault: Option<Fault>, b: &mut HostBatch) -> Result<()> {
        let rows = self.shard.len();
        let batch = sampler::global_batch(
            self.seed,
            step,
            self.global_batch,
            self.data.len(Split::Train),
        );
        self.data.fill(
            Split::Train,
            &batch[self.shard.clone()],
            &mut b.x[..rows * self.input_dim],
            &mut b.labels[..rows * self.label_cols],
        )?;
        crate::fault::on_batch(fault, self.rank, step, &mut b.x);
        Ok(())
    }
}

/// The batch of one step read ahead (or the error reading it gave).
pub struct Ahead {
    pub step: u64,
    /// The rows it was read for (the partition may change in between).
    pub shard: Range<usize>,
    pub batch: Result<HostBatch>,
}

/// Whether `[data] prefetch = auto` reads ahead: on a GPU rank always
/// (the host is idle while the GPU computes); on a CPU rank when a core
/// is left free: one of its own cores (`affinity`, bound ranks) beyond its
/// `threads` GEMM threads, or, unbound, one of the host's `host_cores`
/// beyond `local_ranks` × `threads`. On a host where every core computes,
/// the helper thread only competes with the GEMMs.
pub fn auto(
    gpu: bool,
    threads: usize,
    local_ranks: usize,
    affinity: usize,
    host_cores: usize,
) -> bool {
    if gpu {
        return true;
    }
    let threads = threads.max(1);
    if affinity < host_cores {
        threads < affinity
    } else {
        local_ranks.max(1) * threads < host_cores
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn auto_reads_ahead_only_with_a_core_to_spare() {
        use super::auto;
        assert!(auto(true, 8, 8, 8, 8), "GPU ranks always");
        assert!(auto(false, 1, 1, 2, 2), "1 rank, 1 thread, 2 cores");
        assert!(!auto(false, 1, 2, 2, 2), "2 ranks fill 2 cores");
        assert!(!auto(false, 2, 1, 2, 2), "2 GEMM threads fill 2 cores");
        assert!(auto(false, 3, 4, 16, 16), "4 ranks x 3 threads on 16 cores");
        assert!(!auto(false, 1, 4, 1, 16), "bound to one core");
        assert!(auto(false, 3, 4, 4, 16), "bound to 4 cores, 3 threads");
        assert!(auto(false, 1, 0, 2, 2), "local ranks unknown: counted as 1");
    }
}
