//! Collectives over MPI_COMM_WORLD (rsmpi).

use std::cell::RefCell;

use mpi::collective::SystemOperation;
use mpi::topology::Communicator as _;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{CommunicatorCollectives, Root};

use super::Communicator;
use crate::error::Result;

pub struct MpiComm {
    world: SimpleCommunicator,
    /// For an MPI whose MPI_IN_PLACE is unknown (see `mpi_in_place`): a
    /// receive buffer, grown once and reused.
    scratch: RefCell<Vec<f32>>,
}

impl MpiComm {
    /// MPI must be initialised (see `world::World`).
    pub fn world() -> Self {
        MpiComm {
            world: SimpleCommunicator::world(),
            scratch: RefCell::new(vec![]),
        }
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn name(&self) -> &'static str {
        "mpi"
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        if super::mpi_in_place::all_reduce_sum_in_place(&self.world, buf) {
            return Ok(());
        }
        let mut scratch = self.scratch.borrow_mut();
        if scratch.len() < buf.len() {
            scratch.resize(buf.len(), 0.0);
        }
        let out = &mut scratch[..buf.len()];
        self.world
            .all_reduce_into(&*buf, out, SystemOperation::sum());
        buf.copy_from_slice(out);
        Ok(())
    }
    /// MPI_Allreduce is out of place already: straight from `input`.
    fn all_reduce_sum_into(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        assert_eq!(input.len(), output.len(), "all_reduce_sum_into lengths");
        self.world
            .all_reduce_into(input, output, SystemOperation::sum());
        Ok(())
    }
    fn all_reduce_sum_bf16(&self, buf: &mut [half::bf16]) -> Result<()> {
        // MPI has no bf16 type: reduce in f32, round once.
        let mut wide: Vec<f32> = buf.iter().map(|v| v.to_f32()).collect();
        self.all_reduce_sum(&mut wide)?;
        for (b, w) in buf.iter_mut().zip(&wide) {
            *b = half::bf16::from_f32(*w);
        }
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        if super::mpi_in_place::all_reduce_sum_in_place(&self.world, buf) {
            return Ok(());
        }
        let mut out = vec![0f64; buf.len()];
        self.world
            .all_reduce_into(&*buf, &mut out[..], SystemOperation::sum());
        buf.copy_from_slice(&out);
        Ok(())
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        let mut out = vec![0u64; self.size()];
        self.world.all_gather_into(&value, &mut out[..]);
        Ok(out)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; mine.len() * self.size()];
        self.world.all_gather_into(mine, &mut out[..]);
        Ok(out)
    }
    fn broadcast(&self, root: usize, buf: &mut [u8]) -> Result<()> {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}
