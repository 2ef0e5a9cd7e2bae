//! Ring all-reduce, written out: over shared memory when every rank is on
//! one host (`shm.rs`), over MPI point-to-point otherwise.
//!
//! A buffer of `len` elements is cut into `n` segments, one per rank, whose
//! sizes differ by at most one ([`segment`]). Rank `r` only ever sends to
//! `r + 1` and receives from `r − 1` (mod n):
//!
//! 1. reduce-scatter, steps `s = 0 .. n−1`: send segment `r − s`, receive
//!    segment `r − s − 1` and add our own values to it. A segment thus
//!    travels once around the ring collecting one term per rank; after n − 1
//!    steps rank r holds the full sum of segment `r + 1`.
//! 2. all-gather, steps `s = 0 .. n−1`: send segment `r + 1 − s`, receive
//!    segment `r − s` and keep it. After n − 1 steps every rank has every
//!    sum.
//!
//! Each of the 2(n − 1) steps moves about len/n elements per rank, all ranks
//! at once, so a rank sends 2(n − 1)/n · len elements in total whatever n is
//! (nccl-tests' "bus bandwidth" factor). Over MPI, within a step the segment
//! travels in chunks of [`CHUNK_BYTES`] with non-blocking sends and
//! receives: while chunk j + 1 is on the wire, chunk j is added
//! (reduce-scatter) or converted (bf16 wire), so each chunk is added while
//! it is still in cache. Over shared memory a chunk is copied into a slot
//! of the channel to the next rank and added (or copied out) by that rank
//! straight from the slot.
//!
//! Each element's sum is formed in one fixed order (around the ring from the
//! segment's first sender), and its final value is computed once, by the
//! segment's owner, and copied bit for bit to everyone else: every rank ends
//! with bit-identical results, run after run.
//!
//! Out of place ([`Communicator::all_reduce_sum_into`]) is the same ring
//! given the input as a separate source: the first send of each segment
//! goes straight from the input, each reduce-scatter step writes own term
//! (read from the input) + received partial sum into the output, and
//! all-gather receives land in the output. No copy of the buffer, the same
//! additions in the same order, so the same bits as in place.
//!
//! # Wire formats and their error
//!
//! With [`Wire::F32`] the ring adds in f32 exactly like any f32 summation of
//! n terms. With [`Wire::Bf16`] (f32 data) every transfer carries bf16 (half
//! the bytes) and accumulation is in f32: a rank adds the bf16 partial sum it
//! receives to its own f32 values and rounds the result to bf16 to forward
//! it; the owner rounds the full sum to bf16 and every rank, owner included,
//! stores that bf16 value. [`Communicator::all_reduce_sum_bf16`] runs the
//! same ring on bf16 data.
//!
//! Each rounding's error bound is derived in docs/allreduce.md; the
//! benchmark computes the bounds and checks the ring against MPI_Allreduce
//! with them (`bench allreduce -c 1`, in `bench/allreduce/bounds.rs`).
//!
//! The files: this one is the communicator and [`Ring::all_reduce`], the
//! ring itself (a reduce-scatter loop and an all-gather loop);
//! `schedule.rs` the index arithmetic (which segment, which chunk);
//! `steps.rs` one chunked step, over MPI or shared memory; `shm.rs` the
//! shared-memory channels; `hops.rs` what a hop
//! adds and stores for each wire format; `bf16_ops.rs` the SIMD bf16
//! conversions those hops use.

mod bf16_ops;
mod hops;
pub mod schedule;
mod shm;
mod steps;

use std::cell::{OnceCell, RefCell};

use half::bf16;
use half::slice::HalfFloatSliceExt;
use mpi::topology::{Communicator as _, SimpleCommunicator};

use super::mpi::MpiComm;
use super::{Communicator, Wire};
use crate::error::Result;
pub use hops::sum_in_ring_order;
use hops::{Bf16Sum, F32OverBf16, F32Sum, Hops};
use schedule::{all_gather_step, owned_segment, reduce_scatter_step, segment};
use shm::ShmLinks;
use steps::chunk_elems;

/// Bytes per message within a ring step (the pipeline's grain). Smaller
/// chunks overlap more but pay MPI's per-message handshake more often.
/// Measured on the 2-core VM (docs/allreduce.md): at 2 ranks 256 KiB–1 MiB
/// are within noise of each other and 64–128 KiB are slower; at 4 ranks on
/// 2 cores bigger chunks help a little (fewer switches between ranks).
pub const CHUNK_BYTES: usize = 256 * 1024;

pub struct RingComm {
    mpi: MpiComm,
    wire: Wire,
    /// The ring's links, made by the first all-reduce (collective, like
    /// every all-reduce), not by `world()`, which may be called from any
    /// thread at any time.
    ring: OnceCell<Links>,
    /// Receive and staging buffers: grown on demand, reused by every call.
    scratch: RefCell<Scratch>,
}

/// What carries the ring's chunks.
struct Links {
    /// A private duplicate of MPI_COMM_WORLD, so that no other message in
    /// the program can ever match a ring message.
    comm: SimpleCommunicator,
    /// Shared-memory channels, when every rank is on one host (`shm.rs`).
    shm: Option<ShmLinks>,
}

#[derive(Default)]
struct Scratch {
    /// Two chunk slots for reduce-scatter receives (one landing while the
    /// other is added), per wire element type.
    slots_f32: Vec<f32>,
    slots_bf16: Vec<u16>,
    /// The bf16 image of an f32 buffer under `Wire::Bf16`: partial sums and
    /// final values travel from and arrive into it.
    wire_bf16: Vec<u16>,
}

impl RingComm {
    pub fn world(wire: Wire) -> Self {
        RingComm {
            mpi: MpiComm::world(),
            wire,
            ring: OnceCell::new(),
            scratch: RefCell::new(Scratch::default()),
        }
    }

    /// This rank's place in the ring; `None` in a world of one (nothing to
    /// do). Collective on first use.
    fn ring(&self) -> Option<Ring<'_>> {
        let n = self.size();
        (n > 1).then(|| {
            let links = self.ring.get_or_init(|| {
                let comm = SimpleCommunicator::world().duplicate();
                let shm = ShmLinks::open(&comm);
                Links { comm, shm }
            });
            Ring {
                comm: &links.comm,
                shm: links.shm.as_ref(),
                rank: self.rank(),
                n,
            }
        })
    }

    /// Σ over ranks into `out`: of `src` (out of place) or of `out` itself
    /// (in place, `src` = None). Both run the same ring in the same order,
    /// so their results are bit-identical.
    fn sum_f32(&self, src: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let Some(ring) = self.ring() else {
            if let Some(src) = src {
                out.copy_from_slice(src);
            }
            return Ok(());
        };
        let mut scratch = self.scratch.borrow_mut();
        let Scratch {
            slots_f32,
            slots_bf16,
            wire_bf16,
        } = &mut *scratch;
        match self.wire {
            // The wire buffer is the output; own terms come from `src`.
            Wire::F32 => ring.all_reduce(out, src, slots::<f32>(slots_f32), &mut F32Sum),
            // Own terms are read (as f32) from `src` or `out`, partial sums
            // travel in the bf16 scratch, final sums are widened into `out`.
            Wire::Bf16 => {
                let wire = grown(wire_bf16, out.len());
                let hops = &mut F32OverBf16 { src, buf: out };
                ring.all_reduce(wire, None, slots::<u16>(slots_bf16), hops);
            }
        }
        Ok(())
    }

    /// [`Self::sum_f32`] for bf16 data (bf16 wire: the data is the wire).
    fn sum_bf16(&self, src: Option<&[bf16]>, out: &mut [bf16]) -> Result<()> {
        let Some(ring) = self.ring() else {
            if let Some(src) = src {
                out.copy_from_slice(src);
            }
            return Ok(());
        };
        let mut scratch = self.scratch.borrow_mut();
        let slots = slots::<u16>(&mut scratch.slots_bf16);
        let src: Option<&[u16]> = src.map(|s| s.reinterpret_cast());
        ring.all_reduce(out.reinterpret_cast_mut(), src, slots, &mut Bf16Sum);
        Ok(())
    }

    /// Mean seconds of one bare ring step of `bytes` per rank: every rank
    /// sends `bytes` to the next rank while receiving as many from the
    /// previous one, in the ring's own chunks, with no arithmetic. This is
    /// the ruler of the α–β model (`bench allreduce`): α is this time for a
    /// tiny message, β = bytes / (time − α) for a large one. Collective.
    pub fn step_seconds(&self, bytes: usize, warmup: usize, iters: usize) -> Result<f64> {
        let Some(ring) = self.ring() else {
            return Ok(0.0);
        };
        let m = bytes.div_ceil(size_of::<f32>()).max(1);
        // Not the scratch buffers: this is a benchmark, not a hot path.
        let mut buf = vec![1.0f32; 2 * m];
        for _ in 0..warmup {
            ring.gather_step(&mut buf, 0..m, m..2 * m, &mut F32Sum);
        }
        self.mpi.barrier()?;
        let t = std::time::Instant::now();
        for _ in 0..iters {
            ring.gather_step(&mut buf, 0..m, m..2 * m, &mut F32Sum);
        }
        Ok(t.elapsed().as_secs_f64() / iters.max(1) as f64)
    }
}

impl Communicator for RingComm {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn size(&self) -> usize {
        self.mpi.size()
    }
    fn name(&self) -> &'static str {
        "ring"
    }
    /// Shared memory when every rank is on one host (`shm.rs`), else MPI
    /// point-to-point.
    fn transport(&self) -> Option<String> {
        Some(match self.ring() {
            Some(r) if r.shm.is_some() => format!(
                "shared memory ({} slots of {} B per rank)",
                shm::SLOTS,
                shm::SLOT_BYTES
            ),
            Some(_) => format!("MPI point-to-point (chunks of {CHUNK_BYTES} B)"),
            None => "none (one rank)".to_string(),
        })
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.sum_f32(None, buf)
    }
    /// No copy: this rank's terms are read from `input`, partial and final
    /// sums are written into `output` (module doc).
    fn all_reduce_sum_into(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        assert_eq!(input.len(), output.len(), "all_reduce_sum_into lengths");
        self.sum_f32(Some(input), output)
    }
    /// bf16 on the wire whatever `wire` says (the data is bf16 already).
    fn all_reduce_sum_bf16(&self, buf: &mut [bf16]) -> Result<()> {
        self.sum_bf16(None, buf)
    }
    fn all_reduce_sum_bf16_into(&self, input: &[bf16], output: &mut [bf16]) -> Result<()> {
        assert_eq!(
            input.len(),
            output.len(),
            "all_reduce_sum_bf16_into lengths"
        );
        self.sum_bf16(Some(input), output)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.mpi.all_reduce_sum_f64(buf)
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        self.mpi.all_gather_u64(value)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<u8>> {
        self.mpi.all_gather_bytes(mine)
    }
    fn broadcast(&self, root: usize, buf: &mut [u8]) -> Result<()> {
        self.mpi.broadcast(root, buf)
    }
    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }
}

/// `v` grown to at least `len` elements; its first `len`.
fn grown<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// The two reduce-scatter receive slots for wire type `W`.
fn slots<W: Copy + Default>(v: &mut Vec<W>) -> &mut [W] {
    grown(v, 2 * chunk_elems::<W>())
}

// ---------------------------------------------------------------------------
// The ring.

/// One rank's place in the ring, for the duration of one call.
struct Ring<'c> {
    comm: &'c SimpleCommunicator,
    shm: Option<&'c ShmLinks>,
    rank: usize,
    n: usize,
}

impl Ring<'_> {
    /// The whole all-reduce of `wire` (see the module doc), `slots` being
    /// two chunks of receive space. `src`, when given, holds this rank's
    /// own values in wire format (out of place): they are sent and added
    /// from there, and `wire` is never read before it was written. All of
    /// `wire` is written: the owned segment at the last reduce-scatter
    /// step, segment `r` (sent from `src` at step 0) in all-gather, every
    /// other one in both. Without `src` the own values are in `wire` (in
    /// place) or kept by `hops` (bf16 wire).
    fn all_reduce<H: Hops>(
        &self,
        wire: &mut [H::W],
        src: Option<&[H::W]>,
        slots: &mut [H::W],
        hops: &mut H,
    ) {
        let (n, r, len) = (self.n, self.rank, wire.len());
        let seg = |k| segment(len, n, k);
        if let Some(shm) = self.shm.filter(|_| n > 1) {
            return self.all_reduce_shm(shm, wire, src, hops);
        }
        for s in 0..n - 1 {
            let (send, recv) = reduce_scatter_step(r, n, s);
            // Step 0 sends own values, every later step a partial sum that
            // the step before left in `wire`.
            let first = if s == 0 { src } else { None };
            if s == 0 && src.is_none() {
                hops.load(seg(send), &mut wire[seg(send)]);
            }
            self.reduce_step(wire, first, seg(send), seg(recv), src, slots, hops);
        }
        let own = seg(owned_segment(r, n));
        hops.store(own.clone(), &wire[own]);
        for s in 0..n - 1 {
            let (send, recv) = all_gather_step(r, n, s);
            self.gather_step(wire, seg(send), seg(recv), hops);
        }
    }

    /// [`Ring::all_reduce`] over shared memory: the same steps, with the
    /// last reduce-scatter step and the first all-gather step fused
    /// ([`steps::reduce_gather_step_shm`]).
    fn all_reduce_shm<H: Hops>(
        &self,
        shm: &ShmLinks,
        wire: &mut [H::W],
        src: Option<&[H::W]>,
        hops: &mut H,
    ) {
        let (n, r, len) = (self.n, self.rank, wire.len());
        let seg = |k| segment(len, n, k);
        // Step 0 sends own values (from `src`, or loaded into `wire`),
        // every later step a partial sum that the step before left there.
        let (send0, _) = reduce_scatter_step(r, n, 0);
        if src.is_none() {
            hops.load(seg(send0), &mut wire[seg(send0)]);
        }
        for s in 0..n - 2 {
            let (send, recv) = reduce_scatter_step(r, n, s);
            let first = if s == 0 { src } else { None };
            self.reduce_step(wire, first, seg(send), seg(recv), src, &mut [], hops);
        }
        let (send, own) = reduce_scatter_step(r, n, n - 2);
        let (_, recv) = all_gather_step(r, n, 0);
        let first = if n == 2 { src } else { None };
        steps::reduce_gather_step_shm(shm, wire, first, seg(send), seg(own), seg(recv), src, hops);
        for s in 1..n - 1 {
            let (send, recv) = all_gather_step(r, n, s);
            self.gather_step(wire, seg(send), seg(recv), hops);
        }
    }
}
