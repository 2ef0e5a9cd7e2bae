//! `ringtrain info`: the world as every rank sees it, and the backends.

use crate::comm::Communicator;
use crate::error::Result;
use crate::world::World;

const HOST_BYTES: usize = 64;

pub fn run(world: &World, comm: &dyn Communicator) -> Result<()> {
    // Each rank's (local rank, local size, host), gathered to print in order.
    let mut mine = vec![0u8; 16 + HOST_BYTES];
    mine[..8].copy_from_slice(&(world.local_rank as u64).to_le_bytes());
    mine[8..16].copy_from_slice(&(world.local_size as u64).to_le_bytes());
    let host = world.host.as_bytes();
    let n = host.len().min(HOST_BYTES);
    mine[16..16 + n].copy_from_slice(&host[..n]);
    let all = comm.all_gather_bytes(&mine)?;
    if !world.is_root() {
        return Ok(());
    }
    println!("ringtrain {}", env!("CARGO_PKG_VERSION"));
    println!(
        "world: {} rank(s), bootstrap {:?}, communicator {}",
        world.size,
        world.bootstrap,
        comm.name()
    );
    println!(
        "mpi library: {}",
        world
            .mpi_library
            .as_deref()
            .unwrap_or("none (built without the mpi feature)")
    );
    for (r, rec) in all.chunks_exact(16 + HOST_BYTES).enumerate() {
        let lr = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        let ls = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
        let h = String::from_utf8_lossy(&rec[16..])
            .trim_end_matches('\0')
            .to_string();
        println!("rank {r}: host {h}, local rank {lr} of {ls}");
    }
    println!("backends: cpu (f32, reference), cuda (not in this build)");
    Ok(())
}
