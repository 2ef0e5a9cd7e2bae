//! `ringtrain bench allreduce`: nccl-tests' `all_reduce_perf` for this
//! program's communicators: the same flags, the same table, plus the ring's
//! α–β model measured in the same run (docs/allreduce.md).
//!
//! For each size, out-of-place (`all_reduce_sum_into`: a separate output
//! buffer, the input left untouched, like `ncclAllReduce(sendbuff,
//! recvbuff, ..)`) and then in-place: `-w` warm-up iterations, then `-n`
//! timed ones back to back after a barrier; a row's time is each rank's
//! mean, the maximum over ranks. With `-c 1` one more run on fresh inputs
//! is checked element by element against the exact result (out of place:
//! into an output poisoned with NaN, and the input must be unchanged).
//!
//! Inputs are small integers, rank r element i = 1 + h(r, i) mod ⌊256/n⌋
//! (h a hash): every partial sum is an integer ≤ 256, exact in f32 and in
//! bf16, so a sum must match exactly whatever the order of additions, and
//! an average within the rounding of one scaling.
//!
//! `--comm nccl` runs the same rows on device buffers (`nccl.rs` here):
//! ncclAllReduce in place and out of place, timed with CUDA events.//!
//! The files, split like nccl-tests' harness (`common.cu`) and its
//! collective's file: `options.rs` the flags and sizes, `elem.rs` the
//! element types and the integer inputs, `timing.rs` one row's timing loop,
//! `check.rs` the checks of `-c 1` (with the ring's error bounds in
//! `bounds.rs`), `model.rs` the α–β model, `shm_bound.rs` the shared-memory bound, `output.rs` the table and JSON;
//! `nccl.rs` the rows of `--comm nccl`.

mod bounds;
mod check;
mod elem;
mod model;
mod nccl;
mod options;
mod output;
mod shm_bound;
mod timing;

use half::bf16;

use crate::cli::{BenchAllreduceArgs, Datatype};
use crate::comm::{CommKind, Communicator, agree};
use crate::error::Result;
use crate::world::World;
use options::Options;
use output::report;
use timing::measure;

pub fn run(a: &BenchAllreduceArgs, world: &World, ctl: &dyn Communicator) -> Result<()> {
    let n = world.size;
    let opts = agree(ctl, Options::from_args(a, n))?;
    if opts.kind == CommKind::Nccl {
        return nccl::run(&opts, world, ctl);
    }
    let comm = crate::comm::create(n, opts.kind, opts.wire);
    let model = model::alpha_beta(&opts, n, ctl)?;
    let mut rows = Vec::with_capacity(opts.sizes.len());
    // The memory bound means something where all ranks share one host's
    // memory (MPI's shared-memory transport), not across hosts.
    let one_host = n > 1 && world.local_size == n;
    for &bytes in &opts.sizes {
        let count = bytes / opts.dtype.bytes();
        let mut row = match opts.dtype {
            Datatype::Float => row::<f32>(&opts, count, &*comm, ctl)?,
            Datatype::Bfloat16 => row::<bf16>(&opts, count, &*comm, ctl)?,
        };
        if one_host {
            row.shm_bound = Some(shm_bound::busbw_bound(bytes, n, ctl)?);
        }
        rows.push(row);
    }
    report(
        &opts,
        world,
        ctl,
        comm.name(),
        comm.transport(),
        None,
        model,
        &rows,
    )
}

/// One row of `comm`, then with `--vs-mpi` the same row of MPI_Allreduce
/// (`ctl`, unchecked: `-c 1` already cross-checks the two).
fn row<T: elem::Elem>(
    opts: &Options,
    count: usize,
    comm: &dyn Communicator,
    ctl: &dyn Communicator,
) -> Result<timing::Row> {
    let mut row = measure::<T>(opts, count, comm, ctl, opts.check)?;
    if opts.vs_mpi {
        let mpi = measure::<T>(opts, count, ctl, ctl, false)?;
        row.mpi = Some((mpi.out_of_place, mpi.in_place));
    }
    Ok(row)
}
