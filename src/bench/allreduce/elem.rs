//! The element types of `-d` and the integer inputs whose sums are exact
//! in both.

use half::bf16;

use crate::cli::ReduceOp;
use crate::comm::Communicator;
use crate::error::Result;

pub(super) trait Elem: Copy + Default + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
    /// The all-reduce under test: in place on `buf`, or out of place from
    /// `input` into `buf`.
    fn reduce(
        comm: &dyn Communicator,
        input: Option<&[Self]>,
        buf: &mut [Self],
        op: ReduceOp,
    ) -> Result<()>;
    /// Allowed relative error of an average (a sum must be exact).
    const AVG_TOL: f64;
    /// bf16 data (picks the error bounds of the random check).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    const BF16: bool;
}

impl Elem for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn reduce(
        comm: &dyn Communicator,
        input: Option<&[f32]>,
        buf: &mut [f32],
        op: ReduceOp,
    ) -> Result<()> {
        match (input, op) {
            (None, ReduceOp::Sum) => comm.all_reduce_sum(buf),
            (None, ReduceOp::Avg) => comm.all_reduce_avg(buf),
            (Some(input), _) => {
                comm.all_reduce_sum_into(input, buf)?;
                // What `all_reduce_avg` does after its sum.
                if op == ReduceOp::Avg && comm.size() > 1 {
                    let inv = 1.0 / comm.size() as f32;
                    buf.iter_mut().for_each(|v| *v *= inv);
                }
                Ok(())
            }
        }
    }
    // An exact sum times fl(1/n), rounded: two f32 roundings.
    const AVG_TOL: f64 = 1.0 / (1u64 << 22) as f64;
    const BF16: bool = false;
}

impl Elem for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn reduce(
        comm: &dyn Communicator,
        input: Option<&[bf16]>,
        buf: &mut [bf16],
        op: ReduceOp,
    ) -> Result<()> {
        match input {
            Some(input) => comm.all_reduce_sum_bf16_into(input, buf)?,
            None => comm.all_reduce_sum_bf16(buf)?,
        }
        if op == ReduceOp::Avg && comm.size() > 1 {
            let inv = 1.0 / comm.size() as f32;
            buf.iter_mut()
                .for_each(|v| *v = bf16::from_f32(v.to_f32() * inv));
        }
        Ok(())
    }
    // Two f32 roundings, then one to bf16.
    const AVG_TOL: f64 = 1.0 / 128.0;
    const BF16: bool = true;
}

/// Rank `rank`'s input element `i`: an integer in 1..=⌊256/n⌋, so that
/// every partial sum over ≤ n ranks is an integer ≤ 256 (exact in bf16).
pub(super) fn input(rank: usize, i: usize, n: usize) -> u32 {
    let m = (256 / n).max(1) as u64;
    1 + (crate::rng::hash3(0xa11_4ed, rank as u64, i as u64) % m) as u32
}

/// The exact sum over ranks of element `i`.
pub(super) fn exact_sum(i: usize, n: usize) -> f64 {
    (0..n).map(|r| input(r, i, n) as f64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_keep_every_partial_sum_exact_in_bf16() {
        for n in [1, 2, 3, 5, 64, 256] {
            for i in 0..1000 {
                let mut partial = 0u32;
                for r in 0..n {
                    partial += input(r, i, n);
                    assert!(partial <= 256);
                    assert_eq!(bf16::from_f32(partial as f32).to_f32(), partial as f32);
                }
            }
        }
    }
}
