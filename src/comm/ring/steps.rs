//! One ring step: a segment goes to the next rank while the previous
//! rank's arrives. Over MPI it is cut into chunks of [`CHUNK_BYTES`] with
//! non-blocking sends and receives, chunk j + 1 on the wire while chunk j
//! is added (reduce-scatter) or stored (all-gather). Over shared memory
//! (`shm.rs`) it is cut into slots of [`SLOT_BYTES`]: each chunk is copied
//! into the channel to the next rank, then the previous rank's chunk is
//! added or stored straight from its slot.

use std::ops::Range;

use mpi::datatype::Equivalence;
use mpi::point_to_point::{Destination, Source};
use mpi::request::{WaitGuard, scope};
use mpi::topology::Communicator as _;

use super::hops::Hops;
use super::schedule::{chunk, split_disjoint};
use super::shm::{SLOT_BYTES, ShmLinks};
use super::{CHUNK_BYTES, Ring};

/// Tag of every ring message. Messages are matched by order (MPI never
/// lets two messages between the same pair with the same tag overtake each
/// other) and both sides cut the same segments into the same chunks.
const TAG: i32 = 7;

/// Elements of `W` per chunk.
pub(super) fn chunk_elems<W>() -> usize {
    CHUNK_BYTES / size_of::<W>()
}

impl Ring<'_> {
    /// Reduce-scatter step: `wire[tx]` (or `first[tx]`) goes to the next
    /// rank while the previous rank's partial sums for `rx` land in `slots`
    /// and are reduced with the own values (`src[rx]`, if given) into
    /// `wire[rx]`, chunk j + 1 in flight while chunk j is added.
    pub(super) fn reduce_step<H: Hops>(
        &self,
        wire: &mut [H::W],
        first: Option<&[H::W]>,
        tx: Range<usize>,
        rx: Range<usize>,
        src: Option<&[H::W]>,
        slots: &mut [H::W],
        hops: &mut H,
    ) {
        if let Some(shm) = self.shm {
            return reduce_step_shm(shm, wire, first, tx, rx, src, hops);
        }
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
    pub(super) fn gather_step<H: Hops>(
        &self,
        wire: &mut [H::W],
        tx: Range<usize>,
        rx: Range<usize>,
        hops: &mut H,
    ) {
        if let Some(shm) = self.shm {
            return gather_step_shm(shm, wire, tx, rx, hops);
        }
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

/// [`Ring::reduce_step`] over shared memory: chunk j of `wire[tx]` (or
/// `first[tx]`) goes to the next rank, then the previous rank's chunk j is
/// reduced from its slot with the own values into `wire[rx]`. The same
/// additions in the same order as over MPI, so the same bits.
fn reduce_step_shm<H: Hops>(
    shm: &ShmLinks,
    wire: &mut [H::W],
    first: Option<&[H::W]>,
    tx: Range<usize>,
    rx: Range<usize>,
    src: Option<&[H::W]>,
    hops: &mut H,
) {
    let own = src.map(|s| &s[rx.clone()]);
    let (send, recv) = match first {
        Some(first) => (&first[tx], &mut wire[rx.clone()]),
        None => split_disjoint(wire, tx, rx.clone()),
    };
    exchange_shm(shm, send, recv.len(), |here, got| {
        let range = rx.start + here.start..rx.start + here.end;
        let own = own.map(|o| &o[here.clone()]);
        hops.reduce(range, own, &mut recv[here], got);
    });
}

/// [`Ring::gather_step`] over shared memory: chunk j of the final sums
/// `wire[tx]` goes to the next rank, then the previous rank's chunk j is
/// copied from its slot into `wire[rx]` and stored.
fn gather_step_shm<H: Hops>(
    shm: &ShmLinks,
    wire: &mut [H::W],
    tx: Range<usize>,
    rx: Range<usize>,
    hops: &mut H,
) {
    let (send, recv) = split_disjoint(wire, tx, rx.clone());
    exchange_shm(shm, send, recv.len(), |here, got| {
        let range = rx.start + here.start..rx.start + here.end;
        recv[here.clone()].copy_from_slice(got);
        hops.store(range, &recv[here]);
    });
}

/// The last reduce-scatter step fused with the first all-gather step,
/// over shared memory: chunk j of `wire[tx]` (or `first[tx]`) goes to the
/// next rank, the previous rank's chunk j of `own` (this rank's segment)
/// is reduced into its final sums and stored, which go on to the next
/// rank at once, while they are still in cache (the unfused all-gather
/// read them back from memory: one pass over half the buffer at 2 ranks);
/// then the previous rank's final chunk j of `rx` is copied out of its
/// slot. Each channel carries a reduce-scatter chunk then an all-gather
/// chunk, and is read in that order. The same additions in the same
/// order, so the same bits. `tx` and `rx` are the same segment at 2 ranks:
/// chunk j is sent before its final sums overwrite it.
#[allow(clippy::too_many_arguments)]
pub(super) fn reduce_gather_step_shm<H: Hops>(
    shm: &ShmLinks,
    wire: &mut [H::W],
    first: Option<&[H::W]>,
    tx: Range<usize>,
    own: Range<usize>,
    rx: Range<usize>,
    src: Option<&[H::W]>,
    hops: &mut H,
) {
    let c = SLOT_BYTES / size_of::<H::W>();
    let chunks = [tx.len(), own.len(), rx.len()]
        .into_iter()
        .max()
        .unwrap_or(0);
    for j in 0..chunks.div_ceil(c) {
        let out = chunk(tx.len(), c, j);
        if !out.is_empty() {
            let send = match first {
                Some(first) => &first[tx.start + out.start..tx.start + out.end],
                None => &wire[tx.start + out.start..tx.start + out.end],
            };
            shm.send(send);
        }
        let here = chunk(own.len(), c, j);
        if !here.is_empty() {
            let range = own.start + here.start..own.start + here.end;
            shm.recv(here.len(), |got| {
                let mine = src.map(|s| &s[range.clone()]);
                hops.reduce(range.clone(), mine, &mut wire[range.clone()], got);
            });
            hops.store(range.clone(), &wire[range.clone()]);
            shm.send(&wire[range]);
        }
        let back = chunk(rx.len(), c, j);
        if !back.is_empty() {
            let range = rx.start + back.start..rx.start + back.end;
            shm.recv(back.len(), |got: &[H::W]| {
                wire[range.clone()].copy_from_slice(got);
            });
            hops.store(range.clone(), &wire[range]);
        }
    }
}

/// One step's chunks through the shared-memory channels, slot-sized chunk
/// j at a time: chunk j of `send` to the next rank, then the previous
/// rank's chunk j of a segment of `recv_len` elements handed to `take`
/// (its place in the segment, the slot's elements). Empty chunks (the two
/// segments differ by at most one element) are neither sent nor awaited.
fn exchange_shm<W: Copy>(
    shm: &ShmLinks,
    send: &[W],
    recv_len: usize,
    mut take: impl FnMut(Range<usize>, &[W]),
) {
    let c = SLOT_BYTES / size_of::<W>();
    for j in 0..send.len().max(recv_len).div_ceil(c) {
        let out = chunk(send.len(), c, j);
        if !out.is_empty() {
            shm.send(&send[out]);
        }
        let here = chunk(recv_len, c, j);
        if !here.is_empty() {
            shm.recv(here.len(), |got| take(here.clone(), got));
        }
    }
}
