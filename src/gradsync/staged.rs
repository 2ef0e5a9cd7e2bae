//! Gradient averaging for the CUDA backend through host memory: download
//! the whole gradient buffer, all-reduce it with the host communicator
//! (mpi/ring, as `--comm` says), upload it. Correct and simple, not fast:
//! the NCCL path replaces it. With one rank it does nothing.

use std::sync::Arc;

use cudarc::driver::CudaStream;
use cudarc::driver::sys::CUdeviceptr;

use super::host::GradSync;
use super::{GradBuckets, SyncOptions, SyncReport};
use crate::error::{Error, Result};

pub struct HostStagedSync {
    /// The host all-reduce of `host`, bucketed as on the CPU, not
    /// overlapped (first: dropped before `host`).
    inner: Option<GradSync>,
    grads: CUdeviceptr,
    host: Vec<f32>,
    stream: Arc<CudaStream>,
}

impl HostStagedSync {
    /// `grads` is the device pointer of the `len`-float gradient buffer
    /// (it must outlive this value); `stream` the compute stream.
    pub fn new(
        grads: CUdeviceptr,
        len: usize,
        stream: Arc<CudaStream>,
        buckets: Vec<std::ops::Range<usize>>,
        size: usize,
        opts: &SyncOptions,
    ) -> Self {
        let mut host = if size > 1 { vec![0f32; len] } else { vec![] };
        let opts = SyncOptions {
            overlap: false,
            ..*opts
        };
        // SAFETY: the Vec's heap buffer never moves and lives as long as
        // `inner` (dropped first: fields drop in order); only `finish`
        // touches it, around the inner sync's own `finish`.
        let inner = (size > 1)
            .then(|| unsafe { GradSync::new(host.as_mut_ptr(), len, buckets, size, &opts) });
        HostStagedSync {
            inner,
            grads,
            host,
            stream,
        }
    }
}

fn cuda(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Comm(format!("{what}: {e}"))
}

impl GradBuckets for HostStagedSync {
    fn ready(&mut self, _lo: usize) {}

    fn finish(&mut self) -> Result<SyncReport> {
        let Some(inner) = &mut self.inner else {
            return Ok(SyncReport::default());
        };
        let s = self.stream.cu_stream();
        // SAFETY: `grads` points at `host.len()` floats of a live buffer;
        // the stream is synchronised before the host reads or frees `host`.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut self.host, self.grads, s) }
            .map_err(|e| cuda("download gradients", e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda("synchronize", e))?;
        let report = inner.finish()?;
        // SAFETY: as above; synchronised before `host` is touched again.
        unsafe { cudarc::driver::result::memcpy_htod_async(self.grads, &self.host, s) }
            .map_err(|e| cuda("upload gradients", e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda("synchronize", e))?;
        Ok(report)
    }
}
