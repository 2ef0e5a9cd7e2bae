//! Marks every collective for the watchdog: a communicator wrapper and a
//! gradient-sync wrapper (the wait for the gradient buckets, which covers
//! the communication thread's all-reduces).

use half::bf16;

use super::Marker;
use crate::comm::Communicator;
use crate::error::Result;
use crate::gradsync::{GradBuckets, SyncReport};

/// `inner` with each collective marked (entered, left) under its name.
pub struct Watched<'a> {
    pub(super) inner: &'a dyn Communicator,
    pub(super) marker: Marker,
}

impl Communicator for Watched<'_> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    /// The NCCL communicator underneath, for the device gradient sync
    /// (its final wait is marked by `WatchedSync`).
    fn nccl(&self) -> Option<&crate::comm::nccl::NcclComm> {
        self.inner.nccl()
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let _in = self.marker.enter("all-reduce");
        self.inner.all_reduce_sum(buf)
    }
    fn all_reduce_sum_bf16(&self, buf: &mut [bf16]) -> Result<()> {
        let _in = self.marker.enter("all-reduce (bf16)");
        self.inner.all_reduce_sum_bf16(buf)
    }
    fn all_reduce_sum_into(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        let _in = self.marker.enter("all-reduce");
        self.inner.all_reduce_sum_into(input, output)
    }
    fn all_reduce_sum_bf16_into(&self, input: &[bf16], output: &mut [bf16]) -> Result<()> {
        let _in = self.marker.enter("all-reduce (bf16)");
        self.inner.all_reduce_sum_bf16_into(input, output)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let _in = self.marker.enter("all-reduce of control values");
        self.inner.all_reduce_sum_f64(buf)
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        let _in = self.marker.enter("all-gather");
        self.inner.all_gather_u64(value)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<u8>> {
        let _in = self.marker.enter("all-gather");
        self.inner.all_gather_bytes(mine)
    }
    fn broadcast(&self, root: usize, buf: &mut [u8]) -> Result<()> {
        let _in = self.marker.enter("broadcast");
        self.inner.broadcast(root, buf)
    }
    fn barrier(&self) -> Result<()> {
        let _in = self.marker.enter("barrier");
        self.inner.barrier()
    }
    fn all_reduce_avg(&self, buf: &mut [f32]) -> Result<()> {
        let _in = self.marker.enter("all-reduce");
        self.inner.all_reduce_avg(buf)
    }
}

/// The gradient sync with its final wait marked as one collective,
/// "gradient all-reduce".
pub struct WatchedSync {
    pub(super) inner: Box<dyn GradBuckets>,
    pub(super) marker: Marker,
}

impl GradBuckets for WatchedSync {
    fn ready(&mut self, lo: usize) {
        self.inner.ready(lo)
    }
    fn finish(&mut self) -> Result<SyncReport> {
        let _in = self.marker.enter("gradient all-reduce");
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::single::Single;

    #[test]
    fn every_call_is_one_marked_collective() {
        let marker = Marker::on();
        let w = Watched {
            inner: &Single,
            marker: marker.clone(),
        };
        let mut f = [1.0f32; 4];
        w.all_reduce_avg(&mut f).unwrap();
        w.all_reduce_sum_f64(&mut [1.0]).unwrap();
        w.barrier().unwrap();
        assert_eq!(w.all_gather_u64(7).unwrap(), vec![7]);
        let m = marker.get().unwrap();
        assert_eq!((m.seq, m.op, m.inside), (4, "all-gather", false));
        assert_eq!(w.name(), "single");
    }
}
