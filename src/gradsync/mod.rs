//! Gradient synchronisation: g = (1/n) Σ g_i over the ranks, bucket by
//! bucket, overlapped with backward where the hardware allows.
//!
//! This is the one place that knows how gradients travel between ranks.
//! The trainer sees only [`GradBuckets`] (`ready(lo)` while backward runs,
//! `finish()` after it) and asks [`create`] for one; [`create`] picks the
//! implementation from where the gradient buffer lives and which
//! communicator the run has:
//!
//! | gradients | communicator | implementation |
//! |---|---|---|
//! | host memory | any | [`host::GradSync`]: buckets all-reduced on a communication thread (or after backward with `--no-overlap`) |
//! | CUDA device | NCCL, > 1 rank | [`nccl::NcclGradSync`]: in-place `ncclAllReduce(ncclAvg)` per bucket on the NCCL stream, ordered by CUDA events |
//! | CUDA device | MPI/ring | [`staged::HostStagedSync`]: download, host all-reduce, upload |
//! | elsewhere (kernel emulator) | one rank | [`NoSync`] |
//!
//! A new way of synchronising (local steps with an outer update, per-task
//! gradient statistics, ...) is one more implementation of [`GradBuckets`]
//! in this directory and one more arm in [`create`]. Buckets come from
//! [`plan::plan_buckets`] over the model's layer ranges, so nothing here
//! depends on the model.

pub mod host;
pub mod nccl;
pub mod plan;
pub mod staged;

use std::ops::Range;
use std::time::Instant;

use crate::backend::Memory;
use crate::comm::{CommKind, Communicator, Wire};
use crate::error::{Error, Result};

pub use plan::plan_buckets;

/// Averages the gradient buffer over ranks, bucket by bucket, as backward
/// finishes them.
pub trait GradBuckets {
    /// Every gradient at offset ≥ `lo` is final.
    fn ready(&mut self, lo: usize);
    /// Waits until the whole buffer holds g = (1/n) Σ g_i.
    fn finish(&mut self) -> Result<SyncReport>;
}

/// When each bucket's all-reduce ran (for the timeline).
#[derive(Clone, Debug)]
pub struct BucketTiming {
    pub bucket: usize,
    pub floats: usize,
    pub start: Instant,
    pub end: Instant,
}

/// What the gradient all-reduce of one step cost.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// Seconds the all-reduces ran, overlapped or not.
    pub comm_s: f64,
    /// Seconds the compute thread waited for them after backward.
    pub exposed_s: f64,
    pub buckets: Vec<BucketTiming>,
}

/// How gradients are synchronised (the `[comm]` settings that matter here).
#[derive(Clone, Copy, Debug)]
pub struct SyncOptions {
    /// The host communicator (`--comm`); NCCL is taken from the run's
    /// communicator instead.
    pub kind: CommKind,
    pub wire: Wire,
    /// All-reduce buckets while backward runs (off: after it).
    pub overlap: bool,
    /// Target bucket size in floats (`--bucket-kib` · 256).
    pub bucket_floats: usize,
}

/// The gradient sync for a buffer at `grads`, whose layers (contiguous,
/// ascending ranges of floats) are `layers`, over `comm`'s ranks. Never
/// fails: a sync that cannot be set up reports its error at the first
/// `finish`, which every rank reaches at the same step.
///
/// # Safety
/// The buffer behind `grads` must stay allocated and unmoved while the
/// returned value lives, and must not be touched between `ready` handing
/// a bucket out and `finish` returning (backward writes below `lo` only).
pub unsafe fn create(
    comm: &dyn Communicator,
    opts: &SyncOptions,
    grads: Memory,
    layers: &[Range<usize>],
) -> Box<dyn GradBuckets> {
    let size = comm.size();
    let buckets = plan_buckets(layers, opts.bucket_floats.max(1));
    match grads {
        // SAFETY: as the caller promises.
        Memory::Host { ptr, len } => {
            Box::new(unsafe { host::GradSync::new(ptr, len, buckets, size, opts) })
        }
        Memory::Cuda { ptr, len, stream } => {
            if size == 1 {
                Box::new(NoSync)
            } else if let Some(nc) = comm.nccl() {
                or_failing(nccl::NcclGradSync::new(nc, &stream, ptr, len, buckets))
            } else {
                Box::new(staged::HostStagedSync::new(
                    ptr, len, stream, buckets, size, opts,
                ))
            }
        }
        Memory::Opaque if size == 1 => Box::new(NoSync),
        Memory::Opaque => Box::new(FailedSync(Some(Error::Comm(format!(
            "the gradients of this backend cannot be all-reduced over {size} ranks"
        ))))),
    }
}

/// One rank: the gradients are already the average.
pub struct NoSync;

impl GradBuckets for NoSync {
    fn ready(&mut self, _lo: usize) {}
    fn finish(&mut self) -> Result<SyncReport> {
        Ok(SyncReport::default())
    }
}

/// A sync whose set-up failed: `finish` returns the error.
pub struct FailedSync(Option<Error>);

impl GradBuckets for FailedSync {
    fn ready(&mut self, _lo: usize) {}
    fn finish(&mut self) -> Result<SyncReport> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| Error::Comm("the gradient sync could not be set up".into())))
    }
}

/// `r`'s sync, or one that reports `r`'s error at the first `finish`.
fn or_failing<S: GradBuckets + 'static>(r: Result<S>) -> Box<dyn GradBuckets> {
    match r {
        Ok(s) => Box::new(s),
        Err(e) => Box::new(FailedSync(Some(e))),
    }
}
