//! The arithmetic of the ring, per wire format: what a hop adds and what
//! the result is; [`super::Ring`] decides what travels where and when.

use std::ops::Range;

use half::bf16;
use mpi::datatype::Equivalence;

use super::bf16_ops;
use crate::comm::Wire;

/// What a ring all-reduce computes at each point; [`Ring`] decides what
/// travels where and when. `range` is always the chunk's place in the
/// whole buffer, `wire` the same elements of the wire buffer.
pub(super) trait Hops {
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
pub(super) struct F32Sum;

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
pub(super) struct Bf16Sum;

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
pub(super) struct F32OverBf16<'a> {
    pub(super) src: Option<&'a [f32]>,
    pub(super) buf: &'a mut [f32],
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

/// One element's all-reduce as the ring computes it, with the ring's own
/// arithmetic: `x` holds the ranks' terms in ring order (the segment's
/// first sender first), `bf16_data` says the terms are bf16 values (the
/// bf16 ring, whatever `wire`). A model of one element, for checking the
/// error bounds of `bench allreduce` without MPI.
pub fn sum_in_ring_order(x: &[f32], wire: Wire, bf16_data: bool) -> f32 {
    let Some((&first, rest)) = x.split_first() else {
        return 0.0;
    };
    if bf16_data {
        let mut wire = [bf16::from_f32(first).to_bits()];
        for &xi in rest {
            let recv = wire;
            wire[0] = bf16::from_f32(xi).to_bits();
            Bf16Sum.reduce(0..1, None, &mut wire, &recv);
        }
        return bf16::from_bits(wire[0]).to_f32();
    }
    match wire {
        Wire::F32 => {
            let mut wire = [first];
            for &xi in rest {
                let recv = wire;
                wire[0] = xi;
                F32Sum.reduce(0..1, None, &mut wire, &recv);
            }
            wire[0]
        }
        Wire::Bf16 => {
            let mut wire = [0u16];
            let mut own = [first];
            F32OverBf16 {
                src: None,
                buf: &mut own,
            }
            .load(0..1, &mut wire);
            for &xi in rest {
                let recv = wire;
                let mut own = [xi];
                F32OverBf16 {
                    src: None,
                    buf: &mut own,
                }
                .reduce(0..1, None, &mut wire, &recv);
            }
            let mut out = [0f32];
            F32OverBf16 {
                src: None,
                buf: &mut out,
            }
            .store(0..1, &wire);
            out[0]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 ring is a plain f32 summation in ring order.
    #[test]
    fn f32_ring_adds_in_ring_order() {
        let x = [1.0f32, 1e-8, -1.0, 0.25];
        let want = x.iter().fold(0.0f32, |acc, &v| v + acc);
        assert_eq!(sum_in_ring_order(&x, Wire::F32, false), want);
        assert_eq!(sum_in_ring_order(&[], Wire::Bf16, false), 0.0);
        // One term: bf16 wire rounds it once, bf16 data is exact.
        assert_eq!(sum_in_ring_order(&[1.0 + 1e-3], Wire::Bf16, false), 1.0);
    }
}
