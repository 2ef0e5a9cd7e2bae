//! Collective communication between ranks.
//!
//! [`Communicator`] is what the rest of the program sees: sum/average
//! all-reduce of f32 buffers, small f64/u64 reductions and gathers for
//! control data, broadcast and barrier. `mpi` implements it over
//! MPI_COMM_WORLD; `single` is the world of one rank (no MPI needed);
//! `nccl` carries them between GPU ranks, with or without MPI.

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "mpi")]
pub mod mpi_in_place;
pub mod nccl;
#[cfg(feature = "mpi")]
pub mod ompi_params;
#[cfg(feature = "mpi")]
pub mod ring;
pub mod single;

use half::bf16;

use crate::error::{Error, Result};
use crate::world::World;

/// Which implementation carries the collectives (`--comm`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum CommKind {
    /// MPI_Allreduce.
    Mpi,
    /// The ring all-reduce written out over MPI point-to-point (`ring/`).
    Ring,
    /// NCCL between GPUs (`nccl.rs`): every collective of the run.
    Nccl,
    /// The default for the backend: ring on CPU; on GPU NCCL when there
    /// is more than one rank.
    Auto,
}

/// `RINGTRAIN_RING_SHM=off` keeps the ring on MPI messages (for
/// side-by-side measurements); anything else lets it use shared memory
/// when every rank is on one host (`ring/shm.rs`).
pub const RING_SHM_ENV: &str = "RINGTRAIN_RING_SHM";

/// Whether this rank's [`RING_SHM_ENV`] lets the ring use shared memory
/// (anything but `off`, spaces trimmed, or unset).
pub fn ring_shm_wanted() -> bool {
    std::env::var(RING_SHM_ENV).map_or(true, |v| v.trim() != "off")
}

/// What the ring's chunks will travel through in `world`, for the run's
/// header: shared memory when every rank is on one host and this rank's
/// `RINGTRAIN_RING_SHM` is not `off`, else MPI messages. (The ring agrees
/// on it collectively when it starts, and rank 0 prints a note if it has
/// to fall back.)
pub fn ring_transport(world: &World) -> &'static str {
    match world.size > 1 && world.local_size == world.size && ring_shm_wanted() {
        true => "shared memory",
        false => "MPI messages",
    }
}

/// Element type on the wire for the f32 all-reduce (`--wire`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    F32,
    /// Send bf16 (half the bytes), accumulate in f32.
    Bf16,
}

pub trait Communicator {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Short name for logs ("mpi", "single", "nccl").
    fn name(&self) -> &'static str;
    /// What carries the data, for the ring ("shared memory, ...", "MPI
    /// point-to-point, ..."); `None` where the name says it all. Collective
    /// on first use.
    fn transport(&self) -> Option<String> {
        None
    }
    /// The NCCL communicator, when this is one (for device gradients).
    fn nccl(&self) -> Option<&nccl::NcclComm> {
        None
    }
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Element-wise sum over ranks of bf16 data, in place (accumulated in
    /// f32, rounded to bf16 once at the end).
    fn all_reduce_sum_bf16(&self, buf: &mut [bf16]) -> Result<()>;
    /// Element-wise sum over ranks of `input` into `output` (out of place,
    /// like `ncclAllReduce(sendbuff, recvbuff, ..)`): `input` is left as it
    /// was, every element of `output` is written, and the result is the one
    /// [`all_reduce_sum`](Self::all_reduce_sum) would leave in a copy of
    /// `input`. Panics unless the lengths are equal. The default copies
    /// `input` into `output` and reduces there in place.
    fn all_reduce_sum_into(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        output.copy_from_slice(input);
        self.all_reduce_sum(output)
    }
    /// [`all_reduce_sum_bf16`](Self::all_reduce_sum_bf16) out of place, as
    /// [`all_reduce_sum_into`](Self::all_reduce_sum_into).
    fn all_reduce_sum_bf16_into(&self, input: &[bf16], output: &mut [bf16]) -> Result<()> {
        output.copy_from_slice(input);
        self.all_reduce_sum_bf16(output)
    }
    /// Element-wise sum over ranks of small control values, in place.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Every rank's value, indexed by rank.
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>>;
    /// Every rank's `mine` (the same length on all ranks), concatenated in
    /// rank order.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<u8>>;
    /// Root's bytes to every rank (all ranks pass buffers of the same length).
    fn broadcast(&self, root: usize, buf: &mut [u8]) -> Result<()>;
    fn barrier(&self) -> Result<()>;

    /// g ← (1/n) Σ g_i: the synchronous-SGD gradient average.
    fn all_reduce_avg(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)?;
        let n = self.size();
        if n > 1 {
            let inv = 1.0 / n as f32;
            buf.iter_mut().for_each(|v| *v *= inv);
        }
        Ok(())
    }
}

/// Makes a rank-local outcome collective: if any rank failed, every rank
/// returns an error, the lowest failing rank its own and the others
/// [`Error::OtherRank`] (so exactly one message is printed). Call it at the
/// same point on every rank.
pub fn agree<T>(comm: &dyn Communicator, local: Result<T>) -> Result<T> {
    let failed = comm.all_gather_u64(local.is_err() as u64)?;
    match failed.iter().position(|&f| f != 0) {
        None => local,
        Some(r) if r == comm.rank() => local,
        Some(r) => Err(Error::OtherRank(r)),
    }
}

/// Checks that a value (a hash) is the same on every rank; the error names
/// the ranks that differ from rank 0 (rank 0 reports it, the others return
/// [`Error::OtherRank`]).
pub fn check_same(comm: &dyn Communicator, what: &str, value: u64) -> Result<()> {
    let all = comm.all_gather_u64(value)?;
    let odd: Vec<String> = (0..all.len())
        .filter(|&r| all[r] != all[0])
        .map(|r| r.to_string())
        .collect();
    if odd.is_empty() {
        Ok(())
    } else if comm.rank() != 0 {
        Err(Error::OtherRank(0))
    } else {
        Err(Error::Consistency(format!(
            "{what} differs from rank 0 on rank(s) {}",
            odd.join(", ")
        )))
    }
}

/// The plain communicator of `world` (MPI_Allreduce, f32 wire) for set-up
/// and control messages. Without MPI this is the one-rank communicator, so
/// check [`World::check_collectives`] first when the world has more than
/// one rank.
pub fn control(world: &World) -> Box<dyn Communicator> {
    create(world.size, CommKind::Mpi, Wire::F32)
}

/// The host communicator for this process: `kind` and `wire` as
/// configured. Callable from any thread (the overlap thread makes its
/// own), but two communicators of a process must never run collectives at
/// the same time. NCCL communicators are made once per process by
/// [`nccl::world_comm`]; here `Nccl` is taken as `Auto`.
pub fn create(size: usize, kind: CommKind, wire: Wire) -> Box<dyn Communicator> {
    #[cfg(feature = "mpi")]
    if crate::world::mpi_is_up() {
        return match kind {
            CommKind::Mpi => Box::new(mpi::MpiComm::world()),
            CommKind::Ring | CommKind::Auto | CommKind::Nccl => {
                Box::new(ring::RingComm::world(wire))
            }
        };
    }
    let _ = (size, kind, wire);
    Box::new(single::Single)
}
