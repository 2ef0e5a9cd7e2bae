//! The all-reduce of device gradients over NCCL, overlapped with
//! backward: each bucket is all-reduced in place with
//! `ncclAllReduce(.., ncclAvg, ..)` on the NCCL stream as soon as backward
//! has finished it, ordered by CUDA events, with no host synchronisation.
//! Averaging is NCCL's: after `finish` the buffer holds g = (1/n) Σ g_i.

use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::sys::{CUdeviceptr, CUevent_flags};
use cudarc::driver::{CudaEvent, CudaStream};
use cudarc::nccl::sys as ns;

use super::{GradBuckets, SyncReport};
use crate::comm::nccl::{Handle, NcclComm, cuda_error};
use crate::error::{Error, Result};

/// The [`GradBuckets`] of device gradients over NCCL (see the module
/// comment).
pub struct NcclGradSync {
    h: Rc<Handle>,
    /// The backend's stream: backward writes the gradients there, the
    /// update reads them there.
    compute: Arc<CudaStream>,
    grads: CUdeviceptr,
    buckets: Vec<Range<usize>>,
    /// Buckets launched this step.
    launched: usize,
    /// Recorded on the compute stream when buckets become final.
    ready_ev: CudaEvent,
    /// Recorded on the communication stream after the last bucket.
    done_ev: CudaEvent,
    /// Around this step's all-reduces on the communication stream (timing).
    t0: CudaEvent,
    t1: CudaEvent,
    /// t0 and t1 hold a finished step not yet read.
    timed: bool,
    /// The previous step's all-reduce time, read before this step records
    /// t0 again (its first bucket can start during backward, before
    /// `finish`).
    last_comm_s: f64,
    /// The first error of `ready`, reported by `finish`.
    error: Option<Error>,
}

impl NcclGradSync {
    /// The sync of a buffer of `len` f32 at `grads` (a raw pointer into
    /// the backend's device buffer, which must outlive the returned value),
    /// written by backward on `stream`, in `buckets`. `nc` must be on the
    /// same GPU as `stream`.
    pub fn new(
        nc: &NcclComm,
        stream: &Arc<CudaStream>,
        grads: CUdeviceptr,
        len: usize,
        buckets: Vec<Range<usize>>,
    ) -> Result<Self> {
        if buckets.first().map_or(0, |b| b.end) != len {
            return Err(Error::Comm(format!(
                "gradient buffer of {len} floats, but the buckets cover {}",
                buckets.first().map_or(0, |b| b.end)
            )));
        }
        if stream.context().ordinal() != nc.ordinal() {
            return Err(Error::Comm(format!(
                "the compute stream is on GPU {} but the NCCL communicator on GPU {}",
                stream.context().ordinal(),
                nc.ordinal()
            )));
        }
        let h = nc.handle();
        let ctx = h.stream().context();
        let ev = |flags| {
            ctx.new_event(flags)
                .map_err(cuda_error("creating an event"))
        };
        Ok(NcclGradSync {
            compute: stream.clone(),
            grads,
            buckets,
            launched: 0,
            ready_ev: ev(None)?,
            done_ev: ev(None)?,
            t0: ev(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
            t1: ev(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
            timed: false,
            last_comm_s: 0.0,
            error: None,
            h,
        })
    }

    /// Starts every bucket whose start is ≥ `lo` not started yet: the
    /// communication stream waits for the compute stream's work so far,
    /// then one in-place ncclAllReduce(ncclAvg) per bucket.
    fn launch(&mut self, lo: usize) -> Result<()> {
        let first = self.launched;
        let mut end = first;
        while end < self.buckets.len() && self.buckets[end].start >= lo {
            end += 1;
        }
        if end == first {
            return Ok(());
        }
        if first == 0 {
            self.read_last_step()?;
        }
        let comm_stream = self.h.stream();
        self.ready_ev
            .record(&self.compute)
            .map_err(cuda_error("recording an event"))?;
        comm_stream
            .wait(&self.ready_ev)
            .map_err(cuda_error("waiting for an event"))?;
        if first == 0 {
            self.t0
                .record(comm_stream)
                .map_err(cuda_error("recording an event"))?;
        }
        for b in &self.buckets[first..end] {
            let p = self.grads + (b.start * std::mem::size_of::<f32>()) as CUdeviceptr;
            // SAFETY: the bucket lies inside the gradient buffer (the
            // layout's length was checked); backward has finished it (the
            // wait above) and does not touch it again this step.
            unsafe {
                self.h
                    .all_reduce::<f32>(p, p, b.len(), ns::ncclRedOp_t::ncclAvg)?
            };
        }
        self.launched = end;
        Ok(())
    }

    /// Reads the previous step's t0..t1 into `last_comm_s`, once. In
    /// training its t1 is already complete, so this does not wait: the
    /// compute stream waited for it (`done_ev`) before the loss download
    /// that followed `finish` (Trainer::global_losses), and the host
    /// waited for that download.
    fn read_last_step(&mut self) -> Result<()> {
        if self.timed {
            self.timed = false;
            self.last_comm_s =
                self.t0
                    .elapsed_ms(&self.t1)
                    .map_err(cuda_error("reading the all-reduce time"))? as f64
                    / 1e3;
        }
        Ok(())
    }
}

impl GradBuckets for NcclGradSync {
    fn ready(&mut self, lo: usize) {
        if self.error.is_none() {
            if let Err(e) = self.launch(lo) {
                self.error = Some(e);
            }
        }
    }

    /// Launches what is left, then makes the compute stream wait for the
    /// communication stream: the host does not wait. `comm_s` is the GPU
    /// time of the PREVIOUS step's all-reduces (CUDA events, read a step
    /// late so that reading them does not stall); `exposed_s` the host
    /// time spent here; no per-bucket timings.
    fn finish(&mut self) -> Result<SyncReport> {
        let start = Instant::now();
        self.ready(0);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        // Read when this step's first bucket was launched (read_last_step).
        let comm_s = std::mem::take(&mut self.last_comm_s);
        let comm_stream = self.h.stream();
        self.t1
            .record(comm_stream)
            .map_err(cuda_error("recording an event"))?;
        self.done_ev
            .record(comm_stream)
            .map_err(cuda_error("recording an event"))?;
        self.compute
            .wait(&self.done_ev)
            .map_err(cuda_error("waiting for an event"))?;
        self.launched = 0;
        self.timed = true;
        Ok(SyncReport {
            comm_s,
            exposed_s: start.elapsed().as_secs_f64(),
            buckets: vec![],
        })
    }
}
