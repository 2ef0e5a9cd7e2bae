//! `ringtrain info`: the world as every rank sees it, how it was started,
//! and the backends.

use crate::comm::Communicator;
use crate::error::Result;
use crate::world::World;

const HOST_BYTES: usize = 64;

pub fn run(world: &World, comm: &dyn Communicator) -> Result<()> {
    // With MPI (or one rank) rank 0 gathers every rank's line and prints
    // them in order. Started without MPI, more than one rank has no
    // communicator to gather with: each rank prints its own line.
    let gather = comm.size() == world.size;
    let mut mine = vec![0u8; 16 + HOST_BYTES];
    mine[..8].copy_from_slice(&(world.local_rank as u64).to_le_bytes());
    mine[8..16].copy_from_slice(&(world.local_size as u64).to_le_bytes());
    let host = world.host.as_bytes();
    let n = host.len().min(HOST_BYTES);
    mine[16..16 + n].copy_from_slice(&host[..n]);
    let all = if gather {
        comm.all_gather_bytes(&mine)?
    } else {
        mine
    };
    if world.is_root() {
        println!("ringtrain {}", env!("CARGO_PKG_VERSION"));
        let communicator = if gather {
            comm.name()
        } else {
            "none (no MPI: each rank alone)"
        };
        println!(
            "world: {} rank(s), bootstrap {}, communicator {communicator}",
            world.size, world.bootstrap,
        );
        println!("bootstrap: {}", world.bootstrap_reason);
        println!("mpi library: {}", mpi_library(world));
        #[cfg(feature = "mpi")]
        for (group, said) in crate::comm::ompi_params::applied() {
            println!("{group}: {said}");
        }
        println!(
            "rendezvous: {}, run id {}",
            world
                .rendezvous_dir
                .as_ref()
                .map_or_else(|| "none".to_string(), |d| d.display().to_string()),
            world.run_id.as_deref().unwrap_or("none"),
        );
        // Safe without a GPU: the probe only looks for the libraries.
        println!(
            "nccl: {}",
            match crate::comm::nccl::probe() {
                Ok(p) => format!(
                    "NCCL {} with {} GPU(s) (--comm nccl)",
                    crate::comm::nccl::version_string(p.version),
                    p.devices
                ),
                Err(e) => format!("not usable: {e}"),
            }
        );
    }
    let first = if gather { 0 } else { world.rank };
    if gather && !world.is_root() {
        return Ok(());
    }
    for (i, rec) in all.chunks_exact(16 + HOST_BYTES).enumerate() {
        let lr = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        let ls = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
        let ls = if ls == 0 { "?".into() } else { ls.to_string() };
        let h = String::from_utf8_lossy(&rec[16..])
            .trim_end_matches('\0')
            .to_string();
        println!(
            "rank {}: host {h}, local rank {lr} of {ls}, world size {}",
            first + i,
            world.size
        );
    }
    if world.is_root() {
        println!(
            "backends: cpu (f32, reference), cuda (f32, bf16 with --precision bf16; --device cuda|auto)"
        );
        // This rank's view of the GPUs (rank 0's node).
        for line in crate::backend::cuda::probe::describe() {
            println!("{line}");
        }
    }
    Ok(())
}

/// The MPI library this rank runs, or (bootstrap env) the one it is linked
/// with: MPI_Get_library_version may be called before MPI_Init.
fn mpi_library(world: &World) -> String {
    if let Some(lib) = &world.mpi_library {
        return lib.clone();
    }
    #[cfg(feature = "mpi")]
    {
        let linked = crate::world::linked_mpi_library().unwrap_or_default();
        format!("not initialised (bootstrap env); linked: {linked}")
    }
    #[cfg(not(feature = "mpi"))]
    "none (built without the mpi feature)".to_string()
}
