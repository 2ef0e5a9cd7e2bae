//! `ringtrain bench train` (filled in below).
use crate::cli::BenchTrainArgs;
use crate::comm::Communicator;
use crate::error::Result;
use crate::world::World;
pub fn run(_a: &BenchTrainArgs, _w: &World, _c: &dyn Communicator) -> Result<()> {
    Ok(())
}
