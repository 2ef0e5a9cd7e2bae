//! `bench allreduce --comm nccl`: the same rows on device buffers of each
//! rank's GPU (the one its NCCL communicator uses). A row's time is
//! measured with CUDA events around `-n` back-to-back ncclAllReduce calls
//! on the communicator's stream, after `-w` warm-up calls and a barrier;
//! out of place reads `src` and writes `dst`, in place reduces `dst`.
//! With `-c 1` one more call on fresh inputs is copied back and checked
//! against the exact integer result (out of place: into a NaN-poisoned
//! output, and the input must be unchanged).

use cudarc::driver::sys::{CUdeviceptr, CUevent_flags};
use cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr, DriverError, ValidAsZeroBits};
use cudarc::nccl::NcclType;
use half::bf16;

use super::check::{changed_inputs, count_wrong};
use super::elem::{Elem, input};
use super::options::Options;
use super::output::report;
use super::timing::{Row, Timing, over_ranks};
use crate::cli::{Datatype, ReduceOp};
use crate::comm::Communicator;
use crate::comm::nccl::{NcclComm, version_string};
use crate::error::{Error, Result};
use crate::world::World;

pub(super) fn run(o: &Options, world: &World, ctl: &dyn Communicator) -> Result<()> {
    let nc = ctl
        .nccl()
        .ok_or_else(|| Error::Comm("--comm nccl: this run has no NCCL communicator".into()))?;
    let mut rows = Vec::with_capacity(o.sizes.len());
    for &bytes in &o.sizes {
        let count = bytes / o.dtype.bytes();
        rows.push(match o.dtype {
            Datatype::Float => measure::<f32>(o, count, nc, ctl)?,
            Datatype::Bfloat16 => measure::<bf16>(o, count, nc, ctl)?,
        });
    }
    let version = Some(version_string(nc.version()));
    report(o, world, ctl, "nccl", None, version, None, &rows)
}

fn cuda(what: &'static str) -> impl Fn(DriverError) -> Error {
    move |e| Error::Comm(format!("CUDA {what} failed: {e}"))
}

fn measure<T: Elem + DeviceRepr + NcclType + ValidAsZeroBits>(
    o: &Options,
    count: usize,
    nc: &NcclComm,
    ctl: &dyn Communicator,
) -> Result<Row> {
    let (rank, n) = (ctl.rank(), ctl.size());
    let s = nc.stream();
    // At least one element, so that a 0-byte row still has buffers.
    let host: Vec<T> = (0..count.max(1))
        .map(|i| T::from_f32(input(rank, i, n) as f32))
        .collect();
    let src = s.clone_htod(&host).map_err(cuda("copy to the GPU"))?;
    let mut dst = s
        .alloc_zeros::<T>(host.len())
        .map_err(cuda("allocating GPU memory"))?;
    // All work below runs on the one stream `s`: raw pointers suffice.
    let sp: CUdeviceptr = src.device_ptr(s).0;
    let dp: CUdeviceptr = dst.device_ptr_mut(s).0;
    let ctx = s.context();
    let timing_event = || {
        ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda("creating an event"))
    };
    let (start, end) = (timing_event()?, timing_event()?);
    let avg = o.op == ReduceOp::Avg;
    let mut row = Row::new(count);
    for in_place in [false, true] {
        let send = if in_place { dp } else { sp };
        // SAFETY: `send` and `dp` are buffers of at least `count` T on the
        // communicator's GPU, used only on its stream.
        let once = || unsafe { nc.all_reduce_device::<T>(send, dp, count, avg) };
        s.memcpy_dtod(&src, &mut dst)
            .map_err(cuda("copy on the GPU"))?;
        for _ in 0..o.warmup {
            once()?;
        }
        ctl.barrier()?;
        start.record(s).map_err(cuda("recording an event"))?;
        for _ in 0..o.iters {
            once()?;
        }
        end.record(s).map_err(cuda("recording an event"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(cuda("reading the event time"))?;
        // Over ranks as -a says, like the other communicators' rows.
        let seconds = over_ranks(ctl, ms as f64 / 1e3 / o.iters as f64, o.average)?;

        let wrong = if o.check {
            if in_place {
                s.memcpy_dtod(&src, &mut dst)
                    .map_err(cuda("copy on the GPU"))?;
            } else {
                // An element the all-reduce fails to write stays NaN: wrong.
                let nan = vec![T::from_f32(f32::NAN); host.len()];
                s.memcpy_htod(&nan, &mut dst)
                    .map_err(cuda("copy to the GPU"))?;
            }
            once()?;
            let mut got = s.clone_dtoh(&dst).map_err(cuda("copy from the GPU"))?;
            let mut bad = count_wrong(&mut got[..count], o, rank, n);
            if !in_place {
                let now = s.clone_dtoh(&src).map_err(cuda("copy from the GPU"))?;
                bad += changed_inputs(&now[..count], rank, n);
            }
            Some(ctl.all_gather_u64(bad)?.iter().sum())
        } else {
            None
        };
        row.set(in_place, Timing { seconds, wrong });
    }
    Ok(row)
}
