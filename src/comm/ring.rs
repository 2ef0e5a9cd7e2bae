//! Ring all-reduce over MPI point-to-point (placeholder: delegates to MPI
//! until the ring is written).

use half::bf16;

use super::mpi::MpiComm;
use super::{Communicator, Wire};
use crate::error::Result;

pub struct RingComm {
    mpi: MpiComm,
    #[allow(dead_code)]
    wire: Wire,
}

impl RingComm {
    pub fn world(wire: Wire) -> Self {
        RingComm {
            mpi: MpiComm::world(),
            wire,
        }
    }
}

impl Communicator for RingComm {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn size(&self) -> usize {
        self.mpi.size()
    }
    fn name(&self) -> &'static str {
        "ring"
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.mpi.all_reduce_sum(buf)
    }
    fn all_reduce_sum_bf16(&self, buf: &mut [bf16]) -> Result<()> {
        self.mpi.all_reduce_sum_bf16(buf)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.mpi.all_reduce_sum_f64(buf)
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        self.mpi.all_gather_u64(value)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<u8>> {
        self.mpi.all_gather_bytes(mine)
    }
    fn broadcast(&self, root: usize, buf: &mut [u8]) -> Result<()> {
        self.mpi.broadcast(root, buf)
    }
    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }
}
