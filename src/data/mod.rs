//! Data: where samples come from and which ones each rank takes.
//!
//! A [`Dataset`] hands out rows by *global sample index*, so any rank can
//! build exactly its slice of the global batch without talking to the others.
//! [`sampler`] decides which global indices form the batch of a step; it
//! depends only on (seed, step), never on the number of ranks.

pub mod csv;
pub mod dir;
pub mod labels;
pub mod npy;
pub mod partition;
pub mod sampler;
pub mod synthetic;
#[cfg(test)]
pub(crate) mod test_util;

use crate::error::Result;
use crate::tasks::{TaskColumns, TaskSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// A multi-task dataset addressed by global sample index.
pub trait Dataset: Send + Sync {
    /// Short description for logs ("synthetic(seed=1)", a directory path).
    fn describe(&self) -> String;
    fn input_dim(&self) -> usize;
    /// The tasks with their default loss weights.
    fn tasks(&self) -> &[TaskSpec];
    fn len(&self, split: Split) -> usize;
    /// Writes the rows of `indices` (each `< len(split)`): inputs into
    /// `x[i*input_dim..]` and labels into `labels[i*label_cols..]`, where
    /// label columns follow [`TaskColumns`] and a missing label is NaN.
    fn fill(&self, split: Split, indices: &[u64], x: &mut [f32], labels: &mut [f32]) -> Result<()>;
    /// Checks rows `lo..hi` of a split for values training cannot use
    /// (non-finite inputs, class labels out of range, binary labels not 0/1).
    /// Ranks each check a slice and agree on the outcome, so the whole
    /// dataset is checked once, up front.
    fn validate_rows(&self, split: Split, lo: usize, hi: usize) -> Result<()>;
    /// Memory the dataset holds or allocates at once beyond what is mapped
    /// from files (a CSV row index and its read buffer), for the
    /// pre-flight memory estimate.
    fn resident_bytes(&self) -> u64 {
        0
    }
    /// Whether `split`'s rows are all in memory already, so that filling a
    /// batch is a copy (nothing worth reading ahead).
    fn in_memory(&self, _split: Split) -> bool {
        false
    }
    /// The generated dataset, which a run may materialise once
    /// (src/app/synthetic.rs); None for data read from files.
    fn as_synthetic(&self) -> Option<&synthetic::Synthetic> {
        None
    }
}

/// Label columns of a dataset's tasks.
pub fn columns(ds: &dyn Dataset) -> TaskColumns {
    TaskColumns::new(ds.tasks())
}

/// Checks the arguments of [`Dataset::fill`]: buffer sizes match the batch
/// and every index is inside the split. Shared by the implementations.
pub(crate) fn check_fill_args(
    ds: &dyn Dataset,
    split: Split,
    indices: &[u64],
    x: &[f32],
    labels: &[f32],
) -> Result<()> {
    let bad = |msg: String| Err(crate::error::Error::data(ds.describe(), msg));
    let b = indices.len();
    let (d, l) = (ds.input_dim(), columns(ds).label_cols);
    if x.len() != b * d || labels.len() != b * l {
        return bad(format!(
            "fill of {b} rows needs buffers of {} inputs and {} labels, got {} and {}",
            b * d,
            b * l,
            x.len(),
            labels.len()
        ));
    }
    let n = ds.len(split);
    match indices.iter().find(|&&i| i >= n as u64) {
        Some(i) => bad(format!(
            "sample index {i} outside the {} split of {n} rows",
            split.name()
        )),
        None => Ok(()),
    }
}
