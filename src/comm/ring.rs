//! Ring all-reduce over MPI point-to-point.
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
//! (nccl-tests' "bus bandwidth" factor). Within a step the segment travels in
//! chunks of [`CHUNK_BYTES`] with non-blocking sends and receives: while
//! chunk j + 1 is on the wire, chunk j is added (reduce-scatter) or converted
//! (bf16 wire), so each chunk is added while it is still in cache.
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
//! Error bound (derived in docs/allreduce.md): for one element with terms
//! x_1..x_n in ring order, write each rounding as a factor (1 + θ_j), |θ_j|
//! ≤ t_j. The computed sum is p_n = Σ_i x_i Π_{j≥i} (1 + θ_j), so, barring
//! overflow and underflow,
//!
//! ```text
//!   |p_n − Σ x_i| ≤ (Π_j (1 + t_j) − 1) · Σ_i |x_i|
//! ```
//!
//! f32 wire: n − 1 f32 additions, t = u32 = 2^-24. bf16 wire: the first
//! term is rounded to bf16 before it is sent (t = u16 = 2^-8), then each of
//! the n − 1 hops adds in f32 and rounds to bf16 (t = (1 + 2^-24)(1 + 2^-8)
//! − 1); so the bound is (1 + 2^-8)^n (1 + 2^-24)^(n−1) − 1 ≈ n · 2^-8
//! times Σ|x_i| (for bf16 data the first rounding is exact: n − 1 factors of
//! 2^-8). [`error_bound`] computes these; `bench allreduce -c 1` checks them
//! against MPI_Allreduce on random data ([`self_check_random`]).

use std::cell::{OnceCell, RefCell};
use std::ops::Range;

use half::bf16;
use half::slice::HalfFloatSliceExt;
use mpi::datatype::Equivalence;
use mpi::point_to_point::{Destination, Source};
use mpi::request::{WaitGuard, scope};
use mpi::topology::{Communicator as _, SimpleCommunicator};

use super::mpi::MpiComm;
use super::{Communicator, Wire};
use crate::error::Result;

/// Bytes per message within a ring step (the pipeline's grain). Smaller
/// chunks overlap more but pay MPI's per-message handshake more often.
/// Measured on the 2-core VM (docs/allreduce.md): at 2 ranks 256 KiB–1 MiB
/// are within noise of each other and 64–128 KiB are slower; at 4 ranks on
/// 2 cores bigger chunks help a little (fewer switches between ranks).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Tag of every ring message. Messages are matched by order (MPI never
/// lets two messages between the same pair with the same tag overtake each
/// other) and both sides cut the same segments into the same chunks.
const TAG: i32 = 7;

pub struct RingComm {
    mpi: MpiComm,
    wire: Wire,
    /// A private duplicate of MPI_COMM_WORLD, so that no other message in
    /// the program can ever match a ring message. Made by the first
    /// all-reduce (MPI_Comm_dup is collective, and so is every all-reduce),
    /// not by `world()`, which may be called from any thread at any time.
    ring: OnceCell<SimpleCommunicator>,
    /// Receive and staging buffers: grown on demand, reused by every call.
    scratch: RefCell<Scratch>,
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
        (n > 1).then(|| Ring {
            comm: self
                .ring
                .get_or_init(|| SimpleCommunicator::world().duplicate()),
            rank: self.rank(),
            n,
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

/// Elements of `W` per chunk.
fn chunk_elems<W>() -> usize {
    CHUNK_BYTES / size_of::<W>()
}

// ---------------------------------------------------------------------------
// The schedule: pure index arithmetic (unit-tested below).

/// Segment `k` of a buffer of `len` elements split over `n` ranks: the
/// first `len % n` segments have one element more than the others.
pub fn segment(len: usize, n: usize, k: usize) -> Range<usize> {
    let (q, r) = (len / n, len % n);
    let start = k * q + k.min(r);
    start..start + q + usize::from(k < r)
}

/// (segment sent, segment received and reduced) by rank `r` at
/// reduce-scatter step `s` (0 ≤ s < n − 1).
pub fn reduce_scatter_step(r: usize, n: usize, s: usize) -> (usize, usize) {
    ((r + n - s) % n, (r + 2 * n - s - 1) % n)
}

/// The segment whose full sum rank `r` holds after reduce-scatter.
pub fn owned_segment(r: usize, n: usize) -> usize {
    (r + 1) % n
}

/// (segment sent, segment received) by rank `r` at all-gather step `s`.
pub fn all_gather_step(r: usize, n: usize, s: usize) -> (usize, usize) {
    ((r + 1 + n - s) % n, (r + n - s) % n)
}

/// Chunk `j` (of at most `c` elements) of a segment of `len` elements;
/// empty past the end.
pub fn chunk(len: usize, c: usize, j: usize) -> Range<usize> {
    (j * c).min(len)..((j + 1) * c).min(len)
}

/// `(&buf[a], &mut buf[b])` for disjoint ranges.
fn split_disjoint<T>(buf: &mut [T], a: Range<usize>, b: Range<usize>) -> (&[T], &mut [T]) {
    if a.end <= b.start {
        let (lo, hi) = buf.split_at_mut(b.start);
        (&lo[a], &mut hi[..b.len()])
    } else {
        debug_assert!(b.end <= a.start, "overlapping ranges {a:?} {b:?}");
        let (lo, hi) = buf.split_at_mut(a.start);
        (&hi[..a.len()], &mut lo[b])
    }
}

// ---------------------------------------------------------------------------
// The arithmetic: what is added and stored, per wire format.

/// What a ring all-reduce computes at each point; [`Ring`] decides what
/// travels where and when. `range` is always the chunk's place in the
/// whole buffer, `wire` the same elements of the wire buffer.
trait Hops {
    /// Element type on the wire: f32, or bf16 as its u16 bits.
    type W: Equivalence + Copy + Default;
    /// Before reduce-scatter step 0: put this rank's own values for `range`
    /// into `wire` (nothing to do when the wire buffer is the data).
    fn load(&mut self, _range: Range<usize>, _wire: &mut [Self::W]) {}
    /// `wire` ← own values + `recv` (a partial sum), in wire format. The
    /// own values are `own` when the ring was given a separate source (out
    /// of place, wire = data), else wherever `Self` keeps them (`wire`
    /// itself when the wire buffer is the data).
    fn reduce(
        &mut self,
        range: Range<usize>,
        own: Option<&[Self::W]>,
        wire: &mut [Self::W],
        recv: &[Self::W],
    );
    /// `wire` holds the final sums for `range`: make them the result.
    fn store(&mut self, _range: Range<usize>, _wire: &[Self::W]) {}
}

/// f32 data, f32 wire: the wire buffer is the data (the output).
struct F32Sum;

impl Hops for F32Sum {
    type W = f32;
    // own + recv either way: the same f32 additions, bit for bit.
    fn reduce(&mut self, _: Range<usize>, own: Option<&[f32]>, wire: &mut [f32], recv: &[f32]) {
        match own {
            Some(own) => {
                let n = wire.len().min(own.len()).min(recv.len());
                let (wire, own, recv) = (&mut wire[..n], &own[..n], &recv[..n]);
                for i in 0..n {
                    wire[i] = own[i] + recv[i];
                }
            }
            None => wire.iter_mut().zip(recv).for_each(|(w, r)| *w += r),
        }
    }
}

/// bf16 data (and wire): add in f32, round to bf16 once per hop.
struct Bf16Sum;

impl Hops for Bf16Sum {
    type W = u16;
    fn reduce(&mut self, _: Range<usize>, own: Option<&[u16]>, wire: &mut [u16], recv: &[u16]) {
        match own {
            Some(own) => bf16_ops::sum_bf16(wire, own, recv),
            None => bf16_ops::add_bf16(wire, recv),
        }
    }
}

/// f32 data, bf16 wire. Own values are read from `src` (out of place) or
/// `buf` (in place), in f32, never rounded until the end; partial sums live
/// in the bf16 wire buffer; final sums are stored into `buf`. In place,
/// `buf[range]` is only overwritten after its own values were last read.
struct F32OverBf16<'a> {
    src: Option<&'a [f32]>,
    buf: &'a mut [f32],
}

impl F32OverBf16<'_> {
    fn own(&self, range: Range<usize>) -> &[f32] {
        match self.src {
            Some(src) => &src[range],
            None => &self.buf[range],
        }
    }
}

impl Hops for F32OverBf16<'_> {
    type W = u16;
    fn load(&mut self, range: Range<usize>, wire: &mut [u16]) {
        bf16_ops::round(wire, self.own(range));
    }
    // The ring's `own` is None: the own values are f32, not wire format.
    fn reduce(&mut self, range: Range<usize>, _: Option<&[u16]>, wire: &mut [u16], recv: &[u16]) {
        bf16_ops::add_f32(wire, self.own(range), recv);
    }
    // The owner stores the bf16-rounded sum too, so all ranks agree.
    fn store(&mut self, range: Range<usize>, wire: &[u16]) {
        bf16_ops::widen(&mut self.buf[range], wire);
    }
}

/// The bf16 wire's arithmetic on slices (bf16 as u16 bits), written as
/// plain loops the compiler vectorizes, and compiled twice: for the
/// baseline x86-64 (SSE2) and for AVX2, chosen at run time. Conversion is
/// most of a bf16 hop's work; AVX2 makes it about 2.5× faster here.
mod bf16_ops {
    /// The f32 value of bf16 bits (exact).
    #[inline(always)]
    fn wide(b: u16) -> f32 {
        f32::from_bits(u32::from(b) << 16)
    }

    /// `x` rounded to bf16, to nearest even; NaN stays NaN (quiet). The
    /// same bits as `half::bf16::from_f32` (tested below).
    #[inline(always)]
    pub(super) fn narrow(x: f32) -> u16 {
        let b = x.to_bits();
        let nearest = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
        (if x.is_nan() {
            (b >> 16) | 0x40
        } else {
            nearest
        }) as u16
    }

    /// Defines `pub fn $name(args)` running `$body` with AVX2 when the CPU
    /// has it, else as compiled for the baseline.
    macro_rules! multiversion {
        ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
            $(#[$doc])*
            pub(super) fn $name($($arg: $ty),*) {
                #[inline(always)]
                fn body($($arg: $ty),*) $body
                #[cfg(target_arch = "x86_64")]
                {
                    // `unsafe fn`, not a safe one: the crate's MSRV (1.85)
                    // predates safe `#[target_feature]` functions.
                    #[target_feature(enable = "avx2")]
                    unsafe fn avx2($($arg: $ty),*) {
                        body($($arg),*)
                    }
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: this CPU has AVX2 (checked just above).
                        return unsafe { avx2($($arg),*) };
                    }
                }
                body($($arg),*)
            }
        };
    }

    multiversion! {
        /// `wire` ← bf16(wire + recv), added in f32.
        fn add_bf16(wire: &mut [u16], recv: &[u16]) {
            let n = wire.len().min(recv.len());
            let (wire, recv) = (&mut wire[..n], &recv[..n]);
            for i in 0..n {
                wire[i] = narrow(wide(wire[i]) + wide(recv[i]));
            }
        }
    }

    multiversion! {
        /// `wire` ← bf16(own + recv), all bf16, added in f32.
        fn sum_bf16(wire: &mut [u16], own: &[u16], recv: &[u16]) {
            let n = wire.len().min(own.len()).min(recv.len());
            let (wire, own, recv) = (&mut wire[..n], &own[..n], &recv[..n]);
            for i in 0..n {
                wire[i] = narrow(wide(own[i]) + wide(recv[i]));
            }
        }
    }

    multiversion! {
        /// `wire` ← bf16(own + recv), added in f32.
        fn add_f32(wire: &mut [u16], own: &[f32], recv: &[u16]) {
            let n = wire.len().min(own.len()).min(recv.len());
            let (wire, own, recv) = (&mut wire[..n], &own[..n], &recv[..n]);
            for i in 0..n {
                wire[i] = narrow(own[i] + wide(recv[i]));
            }
        }
    }

    multiversion! {
        /// `wire` ← bf16(own).
        fn round(wire: &mut [u16], own: &[f32]) {
            let n = wire.len().min(own.len());
            let (wire, own) = (&mut wire[..n], &own[..n]);
            for i in 0..n {
                wire[i] = narrow(own[i]);
            }
        }
    }

    multiversion! {
        /// `out` ← the f32 values of `wire`.
        fn widen(out: &mut [f32], wire: &[u16]) {
            let n = out.len().min(wire.len());
            let (out, wire) = (&mut out[..n], &wire[..n]);
            for i in 0..n {
                out[i] = wide(wire[i]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The transport.

/// One rank's place in the ring, for the duration of one call.
struct Ring<'c> {
    comm: &'c SimpleCommunicator,
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

    /// Reduce-scatter step: `wire[tx]` (or `first[tx]`) goes to the next
    /// rank while the previous rank's partial sums for `rx` land in `slots`
    /// and are reduced with the own values (`src[rx]`, if given) into
    /// `wire[rx]`, chunk j + 1 in flight while chunk j is added.
    fn reduce_step<H: Hops>(
        &self,
        wire: &mut [H::W],
        first: Option<&[H::W]>,
        tx: Range<usize>,
        rx: Range<usize>,
        src: Option<&[H::W]>,
        slots: &mut [H::W],
        hops: &mut H,
    ) {
        let c = chunk_elems::<H::W>();
        let chunks = tx.len().max(rx.len()).div_ceil(c);
        if chunks == 0 {
            return;
        }
        let own = src.map(|s| &s[rx.clone()]);
        let (send, recv) = match first {
            Some(first) => (&first[tx], &mut wire[rx.clone()]),
            None => split_disjoint(wire, tx, rx.clone()),
        };
        let (mut ready, mut landing) = slots.split_at_mut(c);
        self.exchange(
            &send[chunk(send.len(), c, 0)],
            &mut landing[..chunk(recv.len(), c, 0).len()],
            || (),
        );
        for j in 0..chunks {
            std::mem::swap(&mut ready, &mut landing); // chunk j is in `ready`
            let here = chunk(recv.len(), c, j);
            let next = chunk(recv.len(), c, j + 1).len();
            let range = rx.start + here.start..rx.start + here.end;
            let got = &ready[..here.len()];
            let own = own.map(|o| &o[here.clone()]);
            let mine = &mut recv[here];
            self.exchange(
                &send[chunk(send.len(), c, j + 1)],
                &mut landing[..next],
                || hops.reduce(range, own, mine, got),
            );
        }
    }

    /// All-gather step: final sums `wire[tx]` go to the next rank while the
    /// previous rank's arrive straight into `wire[rx]`, chunk j + 1 in
    /// flight while chunk j is stored.
    fn gather_step<H: Hops>(
        &self,
        wire: &mut [H::W],
        tx: Range<usize>,
        rx: Range<usize>,
        hops: &mut H,
    ) {
        let c = chunk_elems::<H::W>();
        let chunks = tx.len().max(rx.len()).div_ceil(c);
        if chunks == 0 {
            return;
        }
        let (send, recv) = split_disjoint(wire, tx, rx.clone());
        let first = chunk(recv.len(), c, 0);
        self.exchange(&send[chunk(send.len(), c, 0)], &mut recv[first], || ());
        for j in 0..chunks {
            let here = chunk(recv.len(), c, j);
            let (done, rest) = recv.split_at_mut(here.end);
            let got = &done[here.start..];
            let next = chunk(rest.len(), c, 0);
            let range = rx.start + here.start..rx.start + here.end;
            self.exchange(&send[chunk(send.len(), c, j + 1)], &mut rest[next], || {
                hops.store(range, got)
            });
        }
    }

    /// Posts a receive of `rx` from the previous rank and a send of `tx` to
    /// the next one (an empty slice posts nothing: the neighbour's matching
    /// slice is empty too), runs `work` while they travel, waits for both.
    fn exchange<W: Equivalence>(&self, tx: &[W], rx: &mut [W], work: impl FnOnce()) {
        let next = ((self.rank + 1) % self.n) as i32;
        let prev = ((self.rank + self.n - 1) % self.n) as i32;
        scope(|sc| {
            let _recv = (!rx.is_empty()).then(|| {
                WaitGuard::from(
                    self.comm
                        .process_at_rank(prev)
                        .immediate_receive_into_with_tag(sc, rx, TAG),
                )
            });
            let _send = (!tx.is_empty()).then(|| {
                WaitGuard::from(
                    self.comm
                        .process_at_rank(next)
                        .immediate_send_with_tag(sc, tx, TAG),
                )
            });
            work();
            // The guards wait for both transfers here.
        });
    }
}

// ---------------------------------------------------------------------------
// Error bounds and the random-data cross-check.

/// Unit roundoff of f32 (24-bit significand) and bf16 (8-bit significand).
pub const U_F32: f64 = 1.0 / (1u64 << 24) as f64;
pub const U_BF16: f64 = 1.0 / 256.0;

/// Largest |computed − exact| / Σ_i |x_i| of one element of
/// `RingComm::all_reduce_sum` (`bf16_data` false) or `all_reduce_sum_bf16`
/// (true) over `n` ranks, barring overflow and underflow: (Π_j (1 + t_j)
/// − 1) over the roundings of the element's summation (module doc,
/// docs/allreduce.md). For bf16 data "exact" is the sum of the bf16 inputs.
pub fn error_bound(n: usize, wire: Wire, bf16_data: bool) -> f64 {
    let hops = n.saturating_sub(1) as i32;
    let product = if bf16_data {
        // Inputs are bf16 already: n − 1 × (f32 add, bf16 round).
        ((1.0 + U_F32) * (1.0 + U_BF16)).powi(hops)
    } else {
        match wire {
            Wire::F32 => (1.0 + U_F32).powi(hops),
            // First term rounded to bf16, then n − 1 × (f32 add, bf16 round).
            Wire::Bf16 => (1.0 + U_BF16) * ((1.0 + U_F32) * (1.0 + U_BF16)).powi(hops),
        }
    };
    product - 1.0
}

/// The same bound for `MpiComm` (MPI_Allreduce: n − 1 f32 additions in an
/// order of MPI's choosing, which the bound does not depend on; bf16 data
/// is summed in f32 and rounded once).
pub fn mpi_error_bound(n: usize, bf16_data: bool) -> f64 {
    let sum = (1.0 + U_F32).powi(n.saturating_sub(1) as i32);
    if bf16_data {
        sum * (1.0 + U_BF16) - 1.0
    } else {
        sum - 1.0
    }
}

/// Outcome of [`self_check_random`] on this rank.
#[derive(Clone, Copy, Debug, Default)]
pub struct CrossCheck {
    /// Elements where |a − b| exceeds (bound_a + bound_b) · Σ_i |x_i|.
    pub beyond_bound: u64,
    /// Elements of `a`'s result that are not bit-identical to rank 0's.
    pub differ_from_rank0: u64,
    /// max |a − b| / allowed over this rank's elements (≤ 1 when correct).
    pub worst: f64,
}

impl CrossCheck {
    pub fn wrong(&self) -> u64 {
        self.beyond_bound + self.differ_from_rank0
    }
}

/// Sums `len` random values per rank (uniform in [−1, 1), different on
/// every rank, bf16-rounded when `bf16_data`) with communicator `a` and
/// with the reference `b` (MPI_Allreduce), and counts the elements where
/// they differ by more than the sum of their proven error bounds
/// (`bound_a`, `bound_b`: see [`error_bound`], [`mpi_error_bound`]), plus
/// those where `a`'s result is not bit-identical to rank 0's. Collective:
/// every rank calls it with the same arguments.
pub fn self_check_random(
    a: &dyn Communicator,
    bound_a: f64,
    b: &dyn Communicator,
    bound_b: f64,
    len: usize,
    seed: u64,
    bf16_data: bool,
) -> Result<CrossCheck> {
    if len == 0 {
        // Nothing to compare (and MPI_Bcast refuses an empty buffer).
        return Ok(CrossCheck::default());
    }
    let rank = b.rank() as u64;
    let x: Vec<f32> = (0..len as u64)
        .map(|i| {
            let v = (2.0 * crate::rng::uniform(seed, rank, i) - 1.0) as f32;
            if bf16_data {
                bf16::from_f32(v).to_f32()
            } else {
                v
            }
        })
        .collect();
    let (ra, rb) = if bf16_data {
        let mut xa: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut xb = xa.clone();
        a.all_reduce_sum_bf16(&mut xa)?;
        b.all_reduce_sum_bf16(&mut xb)?;
        let wide = |v: Vec<bf16>| v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
        (wide(xa), wide(xb))
    } else {
        let (mut xa, mut xb) = (x.clone(), x.clone());
        a.all_reduce_sum(&mut xa)?;
        b.all_reduce_sum(&mut xb)?;
        (xa, xb)
    };
    // Σ_i |x_i| per element, in f64 (its own error, ~n·2^-53, is covered by
    // the 1e-9 slack below).
    let mut abs: Vec<f64> = x.iter().map(|v| v.abs() as f64).collect();
    b.all_reduce_sum_f64(&mut abs)?;

    let n = b.size() as f64;
    // Underflow: each rounding may lose up to half a bf16 subnormal ulp.
    let tiny = n * 2f64.powi(-133);
    let mut out = CrossCheck::default();
    for ((&va, &vb), &s) in ra.iter().zip(&rb).zip(&abs) {
        let allowed = (bound_a + bound_b) * s * (1.0 + 1e-9) + tiny;
        let diff = (va as f64 - vb as f64).abs();
        if diff > allowed || diff.is_nan() {
            out.beyond_bound += 1;
        }
        out.worst = out.worst.max(diff / allowed);
    }

    // Bit-identical on every rank: compare with rank 0's result.
    let mut root: Vec<u8> = ra.iter().flat_map(|v| v.to_le_bytes()).collect();
    b.broadcast(0, &mut root)?;
    out.differ_from_rank0 = root
        .chunks_exact(4)
        .zip(&ra)
        .filter(|(r, v)| r != &v.to_le_bytes())
        .count() as u64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_partition_the_buffer() {
        for n in 1..=6 {
            for len in 0..=3 * n {
                let mut next = 0;
                for k in 0..n {
                    let s = segment(len, n, k);
                    assert_eq!(s.start, next, "len {len} n {n} k {k}");
                    assert!(s.len() == len / n || s.len() == len / n + 1);
                    next = s.end;
                }
                assert_eq!(next, len, "len {len} n {n}");
            }
        }
    }

    #[test]
    fn chunks_partition_a_segment() {
        for c in [1, 2, 3, 7] {
            for len in 0..40usize {
                let mut next = 0;
                for j in 0..len.div_ceil(c) {
                    let r = chunk(len, c, j);
                    assert_eq!(r.start, next);
                    assert!(!r.is_empty() && r.len() <= c);
                    next = r.end;
                }
                assert_eq!(next, len);
                assert!(chunk(len, c, len.div_ceil(c)).is_empty());
            }
        }
    }

    /// Runs the schedule symbolically: each rank's segment k is the set of
    /// ranks whose terms it holds. Reduce-scatter must deliver each
    /// segment's full set to its owner exactly once per term; all-gather
    /// must give every rank every full segment. Also checks that what a
    /// rank receives is what its predecessor sends, step by step.
    #[test]
    fn schedule_reduces_and_gathers_everything() {
        for n in 1..=7usize {
            // held[r][k]: count of each rank's term in rank r's segment k.
            let mut held: Vec<Vec<Vec<u32>>> = (0..n)
                .map(|r| {
                    (0..n)
                        .map(|_| (0..n).map(|t| u32::from(t == r)).collect())
                        .collect()
                })
                .collect();
            for s in 0..n.saturating_sub(1) {
                let sent: Vec<_> = (0..n)
                    .map(|r| {
                        let (tx, _) = reduce_scatter_step(r, n, s);
                        (tx, held[r][tx].clone())
                    })
                    .collect();
                for r in 0..n {
                    let (_, rx) = reduce_scatter_step(r, n, s);
                    let (k, terms) = &sent[(r + n - 1) % n];
                    assert_eq!(*k, rx, "n {n} step {s} rank {r}");
                    for (h, t) in held[r][rx].iter_mut().zip(terms) {
                        *h += t;
                    }
                }
            }
            for (r, h) in held.iter().enumerate() {
                assert_eq!(h[owned_segment(r, n)], vec![1; n], "n {n} rank {r}");
            }
            let mut full: Vec<Vec<bool>> = (0..n)
                .map(|r| (0..n).map(|k| k == owned_segment(r, n)).collect())
                .collect();
            for s in 0..n.saturating_sub(1) {
                let sent: Vec<usize> = (0..n).map(|r| all_gather_step(r, n, s).0).collect();
                for (r, (f, &k)) in full.iter().zip(&sent).enumerate() {
                    assert!(f[k], "n {n}: rank {r} sends a partial segment");
                }
                for r in 0..n {
                    let (_, rx) = all_gather_step(r, n, s);
                    assert_eq!(sent[(r + n - 1) % n], rx);
                    assert!(!full[r][rx], "n {n}: segment {rx} arrives twice at {r}");
                    full[r][rx] = true;
                }
            }
            assert!(full.iter().flatten().all(|&f| f), "n {n}");
        }
    }

    /// The vectorizable rounding is `half`'s, bit for bit.
    #[test]
    fn narrow_rounds_like_half() {
        let special = [
            0.0f32,
            -0.0,
            1.0,
            1.0 + 1.0 / 256.0, // a tie: stays (even)
            1.0 + 3.0 / 256.0, // a tie: rounds up (to even)
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let spread = (0..2_000_000u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)));
        for x in special.into_iter().chain(spread) {
            let (got, want) = (bf16_ops::narrow(x), bf16::from_f32(x).to_bits());
            if x.is_nan() {
                assert!(bf16::from_bits(got).is_nan(), "{x}");
            } else {
                assert_eq!(got, want, "{x:e} ({:#x})", x.to_bits());
            }
        }
        // The slice kernels agree with the scalar definitions.
        let own: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let recv: Vec<u16> = own
            .iter()
            .map(|v| bf16::from_f32(v.cos()).to_bits())
            .collect();
        let mut w = vec![0u16; own.len()];
        bf16_ops::add_f32(&mut w, &own, &recv);
        for i in 0..own.len() {
            let want = bf16::from_f32(own[i] + bf16::from_bits(recv[i]).to_f32());
            assert_eq!(w[i], want.to_bits());
        }
        let mut w2 = recv.clone();
        bf16_ops::add_bf16(&mut w2, &w);
        for i in 0..own.len() {
            let s = bf16::from_bits(recv[i]).to_f32() + bf16::from_bits(w[i]).to_f32();
            assert_eq!(w2[i], bf16::from_f32(s).to_bits());
        }
        let mut r = vec![0u16; own.len()];
        bf16_ops::round(&mut r, &own);
        let mut back = vec![0f32; own.len()];
        bf16_ops::widen(&mut back, &r);
        for i in 0..own.len() {
            assert_eq!(r[i], bf16::from_f32(own[i]).to_bits());
            assert_eq!(back[i], bf16::from_bits(r[i]).to_f32());
        }
    }

    #[test]
    fn split_disjoint_either_order() {
        let mut v: Vec<u32> = (0..10).collect();
        let (a, b) = split_disjoint(&mut v, 0..3, 5..9);
        assert_eq!((a, &*b), (&[0, 1, 2][..], &[5, 6, 7, 8][..]));
        let (a, b) = split_disjoint(&mut v, 6..10, 2..4);
        assert_eq!((a, &*b), (&[6, 7, 8, 9][..], &[2, 3][..]));
        let (a, b) = split_disjoint(&mut v, 4..4, 4..6);
        assert_eq!((a.len(), b.len()), (0, 2));
        let (a, b) = split_disjoint(&mut v, 4..6, 4..4);
        assert_eq!((a.len(), b.len()), (2, 0));
    }

    /// One element's bf16-wire ring summation done with the ring's own
    /// arithmetic ([`Hops`]): terms in ring order.
    fn ring_sum_bf16_wire(x: &[f32]) -> f32 {
        let mut wire = [0u16];
        let mut own = [x[0]];
        let mut hops = F32OverBf16 {
            src: None,
            buf: &mut own,
        };
        hops.load(0..1, &mut wire);
        for &xi in &x[1..] {
            let recv = wire;
            let mut own = [xi];
            let mut hops = F32OverBf16 {
                src: None,
                buf: &mut own,
            };
            hops.reduce(0..1, None, &mut wire, &recv);
        }
        let mut out = [0f32];
        let mut hops = F32OverBf16 {
            src: None,
            buf: &mut out,
        };
        hops.store(0..1, &wire);
        out[0]
    }

    fn ring_sum_bf16_data(x: &[f32]) -> f32 {
        let mut wire = [bf16::from_f32(x[0]).to_bits()];
        for &xi in &x[1..] {
            let recv = wire;
            wire[0] = bf16::from_f32(xi).to_bits();
            Bf16Sum.reduce(0..1, None, &mut wire, &recv);
        }
        bf16::from_bits(wire[0]).to_f32()
    }

    /// The bound holds on random data, and is not vacuous: the worst case
    /// seen comes within a small factor of it.
    #[test]
    fn bf16_error_within_bound() {
        for n in 1..=8usize {
            let (mut worst_wire, mut worst_data) = (0f64, 0f64);
            for trial in 0..20_000u64 {
                let x: Vec<f32> = (0..n as u64)
                    .map(|r| (2.0 * crate::rng::uniform(n as u64, r, trial) - 1.0) as f32)
                    .collect();
                let abs: f64 = x.iter().map(|v| v.abs() as f64).sum();
                let exact: f64 = x.iter().map(|&v| v as f64).sum();
                let got = ring_sum_bf16_wire(&x) as f64;
                let e = (got - exact).abs() / abs;
                assert!(
                    e <= error_bound(n, Wire::Bf16, false),
                    "n {n}: {x:?} -> {got}"
                );
                worst_wire = worst_wire.max(e / error_bound(n, Wire::Bf16, false));

                let xb: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
                let abs: f64 = xb.iter().map(|v| v.abs() as f64).sum();
                let exact: f64 = xb.iter().map(|&v| v as f64).sum();
                let got = ring_sum_bf16_data(&xb) as f64;
                let e = (got - exact).abs() / abs;
                let bound = error_bound(n, Wire::Bf16, true);
                assert!(e <= bound, "n {n}: {xb:?} -> {got}");
                if n > 1 {
                    worst_data = worst_data.max(e / bound);
                }
            }
            assert!(worst_wire > 0.1, "n {n}: bound is loose ({worst_wire})");
            if n > 1 {
                assert!(worst_data > 0.1, "n {n}: bound is loose ({worst_data})");
            }
        }
    }

    #[test]
    fn bounds_grow_like_n_times_u() {
        assert_eq!(error_bound(1, Wire::F32, false), 0.0);
        assert_eq!(mpi_error_bound(1, false), 0.0);
        for n in 2..=64 {
            let b = error_bound(n, Wire::Bf16, false);
            assert!(
                b >= n as f64 * U_BF16 && b <= 1.2 * n as f64 * U_BF16,
                "n {n}: {b}"
            );
            let f = error_bound(n, Wire::F32, false);
            assert!(f >= (n - 1) as f64 * U_F32 && f <= 1.01 * (n - 1) as f64 * U_F32);
        }
    }
}
