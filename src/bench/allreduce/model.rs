//! The ring's α–β model, measured in the same run as the rows it explains.

use super::options::Options;
#[cfg(feature = "mpi")]
use super::timing::slowest;
use crate::comm::Communicator;
#[cfg(feature = "mpi")]
use crate::comm::Wire;
use crate::error::Result;

/// The ring's cost model on this machine, measured in this run with the
/// ring's own transport (`RingComm::step_seconds`): a ring step of m bytes
/// per rank takes α + m/β; an all-reduce of S wire bytes is 2(n−1) steps
/// of S/n bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Model {
    pub(super) alpha: f64,
    pub(super) beta: f64,
    /// Bytes per rank of the step that measured β.
    pub(super) beta_bytes: usize,
    pub(super) n: usize,
}

impl Model {
    pub(super) fn seconds(&self, wire_bytes: usize) -> f64 {
        let steps = 2.0 * (self.n as f64 - 1.0);
        steps * self.alpha + steps / self.n as f64 * wire_bytes as f64 / self.beta
    }
}

/// Bytes of the tiny step that measures α (one f32).
pub(super) const ALPHA_BYTES: usize = 4;
/// β is measured with the largest row's ring step, but never less than this.
#[cfg(feature = "mpi")]
const MIN_BETA_BYTES: usize = 1 << 20;

pub(super) fn alpha_beta(o: &Options, n: usize, ctl: &dyn Communicator) -> Result<Option<Model>> {
    #[cfg(feature = "mpi")]
    if n > 1 && crate::world::mpi_is_up() {
        let ring = crate::comm::ring::RingComm::world(Wire::F32);
        let alpha = slowest(ctl, ring.step_seconds(ALPHA_BYTES, 50, 500)?)?;
        let largest = o.max_bytes / o.dtype.bytes() * o.wire_bytes();
        let beta_bytes = (largest / n).max(MIN_BETA_BYTES);
        let big = slowest(
            ctl,
            ring.step_seconds(beta_bytes, o.warmup.max(2), o.iters.max(5))?,
        )?;
        // α is part of the big step too; what is left is the bandwidth term.
        let beta = beta_bytes as f64 / (big - alpha).max(1e-9);
        return Ok(Some(Model {
            alpha,
            beta,
            beta_bytes,
            n,
        }));
    }
    let _ = (o, n, ctl);
    Ok(None)
}
