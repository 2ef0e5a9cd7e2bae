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
    pub batch: Result<HostBatch>,
}
