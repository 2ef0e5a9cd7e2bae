//! `ringtrain bench allreduce` (to be written).
use crate::cli::BenchAllreduceArgs;
use crate::comm::Communicator;
use crate::error::Result;
use crate::world::World;

pub fn run(_a: &BenchAllreduceArgs, _w: &World, _c: &dyn Communicator) -> Result<()> {
    Ok(())
}
