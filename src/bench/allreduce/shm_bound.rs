//! The shared-memory bound of an all-reduce on one host, measured in the
//! same run: what the ring could reach if moving data cost nothing but
//! passes over memory.
//!
//! Per rank, an all-reduce of S bytes on n ranks of one host is n − 1
//! reduce-scatter steps (a segment of S/n bytes copied in from the
//! neighbour, then added to this rank's own) and n − 1 all-gather steps (a
//! segment copied in): 3(n − 1) passes over S/n bytes, if an add costs what
//! a copy does. With M the bandwidth of one thread's memcpy of S/n bytes
//! (measured on every rank at once, so that ranks share the memory bus as
//! the all-reduce does), the time is 3(n − 1)/n · S/M, and the bus bandwidth
//! 2(n − 1)/n · S/t = ⅔ M, whatever n.

use std::time::Instant;

use super::timing::slowest;
use crate::comm::Communicator;
use crate::error::Result;

/// The bound in GB/s of bus bandwidth for an all-reduce of `bytes` on `n`
/// ranks of one host (a collective: every rank copies at once).
pub(super) fn busbw_bound(bytes: usize, n: usize, ctl: &dyn Communicator) -> Result<f64> {
    let seg = (bytes / n).max(1);
    let src = vec![1u8; seg];
    let mut dst = vec![0u8; seg];
    // Enough copies to time (about 64 MiB moved), at least 5.
    let reps = ((64 << 20) / seg).clamp(5, 10_000);
    dst.copy_from_slice(&src);
    ctl.barrier()?;
    let t = Instant::now();
    for _ in 0..reps {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let per_copy = slowest(ctl, t.elapsed().as_secs_f64() / reps as f64)?;
    let memcpy = seg as f64 / per_copy.max(1e-12);
    Ok(2.0 / 3.0 * memcpy / 1e9)
}
