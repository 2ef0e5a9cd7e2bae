//! The ring's error bounds and the random-data cross-check of `bench
//! allreduce -c 1` against MPI_Allreduce.
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

#![cfg_attr(not(feature = "mpi"), allow(dead_code))]

use half::bf16;

use crate::comm::{Communicator, Wire};
use crate::error::Result;

/// Unit roundoff of f32 (24-bit significand) and bf16 (8-bit significand).
pub const U_F32: f64 = 1.0 / (1u64 << 24) as f64;
pub const U_BF16: f64 = 1.0 / 256.0;

/// Largest |computed − exact| / Σ_i |x_i| of one element of
/// `comm::ring::RingComm::all_reduce_sum` (`bf16_data` false) or `all_reduce_sum_bf16`
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

    /// The bound holds on random data summed with the ring's own
    /// arithmetic, and is not vacuous: the worst case seen comes within a
    /// small factor of it.
    #[cfg(feature = "mpi")]
    #[test]
    fn bf16_error_within_bound() {
        use crate::comm::ring::sum_in_ring_order;
        for n in 1..=8usize {
            let (mut worst_wire, mut worst_data) = (0f64, 0f64);
            for trial in 0..20_000u64 {
                let x: Vec<f32> = (0..n as u64)
                    .map(|r| (2.0 * crate::rng::uniform(n as u64, r, trial) - 1.0) as f32)
                    .collect();
                let abs: f64 = x.iter().map(|v| v.abs() as f64).sum();
                let exact: f64 = x.iter().map(|&v| v as f64).sum();
                let got = sum_in_ring_order(&x, Wire::Bf16, false) as f64;
                let e = (got - exact).abs() / abs;
                assert!(
                    e <= error_bound(n, Wire::Bf16, false),
                    "n {n}: {x:?} -> {got}"
                );
                worst_wire = worst_wire.max(e / error_bound(n, Wire::Bf16, false));

                let xb: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
                let abs: f64 = xb.iter().map(|v| v.abs() as f64).sum();
                let exact: f64 = xb.iter().map(|&v| v as f64).sum();
                let got = sum_in_ring_order(&xb, Wire::Bf16, true) as f64;
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
