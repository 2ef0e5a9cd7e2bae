//! The checks of `-c 1`: integer inputs against their exact sums, inputs
//! left unchanged, out of place against in place, and random data against
//! MPI_Allreduce within the proven error bounds (bounds.rs).

use super::elem::{Elem, exact_sum, input};
use super::options::Options;
use crate::cli::ReduceOp;
#[cfg(feature = "mpi")]
use crate::comm::CommKind;
use crate::comm::Communicator;
use crate::error::Result;

/// Elements of `got` (this rank's result) that differ from the exact
/// result; with `--corrupt` the last rank first adds 1 to one of them.
pub(super) fn count_wrong<T: Elem>(got: &mut [T], o: &Options, rank: usize, n: usize) -> u64 {
    if o.corrupt && rank == n - 1 && !got.is_empty() {
        let k = got.len() / 2;
        let v = got[k].to_f32();
        // bf16 cannot hold 257: go down instead.
        got[k] = if T::from_f32(v + 1.0).to_f32() != v {
            T::from_f32(v + 1.0)
        } else {
            T::from_f32(v - 1.0)
        };
    }
    let mut wrong = 0;
    for (i, v) in got.iter().enumerate() {
        let (sum, v) = (exact_sum(i, n), v.to_f32() as f64);
        let ok = match o.op {
            ReduceOp::Sum => v == sum,
            ReduceOp::Avg => (v - sum / n as f64).abs() <= T::AVG_TOL * sum / n as f64,
        };
        wrong += u64::from(!ok);
    }
    wrong
}

/// Elements of `src` (rank `rank`'s input) that are no longer the input.
pub(super) fn changed_inputs<T: Elem>(src: &[T], rank: usize, n: usize) -> u64 {
    let changed = src
        .iter()
        .enumerate()
        .filter(|&(i, v)| v.to_f32() != input(rank, i, n) as f32)
        .count();
    changed as u64
}

/// Out of place against in place on random data (uniform in [−1, 1),
/// different on every rank): elements of the out-of-place result whose
/// bits differ from the in-place result, plus input elements the
/// out-of-place call changed. Both are 0 for every communicator here (the
/// ring runs the same summation either way; MPI makes the same call).
pub(super) fn out_of_place_check<T: Elem>(
    count: usize,
    comm: &dyn Communicator,
    ctl: &dyn Communicator,
) -> Result<u64> {
    let (seed, rank) = (0x0b_5eed ^ count as u64, ctl.rank() as u64);
    let x: Vec<T> = (0..count as u64)
        .map(|i| T::from_f32((2.0 * crate::rng::uniform(seed, rank, i) - 1.0) as f32))
        .collect();
    let mut in_place = x.clone();
    T::reduce(comm, None, &mut in_place, ReduceOp::Sum)?;
    let input = x.clone();
    let mut out = vec![T::from_f32(f32::NAN); count];
    T::reduce(comm, Some(&input), &mut out, ReduceOp::Sum)?;
    let bits = |v: &T| v.to_f32().to_bits();
    let differ = out
        .iter()
        .zip(&in_place)
        .filter(|(a, b)| bits(a) != bits(b))
        .count();
    let changed = input
        .iter()
        .zip(&x)
        .filter(|(a, b)| bits(a) != bits(b))
        .count();
    Ok((differ + changed) as u64)
}

/// The random-data cross-check against MPI_Allreduce (bounds.rs); 0 without
/// MPI (one rank, nothing to compare).
pub(super) fn random_check<T: Elem>(
    o: &Options,
    count: usize,
    comm: &dyn Communicator,
    ctl: &dyn Communicator,
) -> Result<u64> {
    #[cfg(feature = "mpi")]
    if crate::world::mpi_is_up() {
        let n = ctl.size();
        use super::bounds;
        let bound = match o.kind {
            CommKind::Mpi => bounds::mpi_error_bound(n, T::BF16),
            _ => bounds::error_bound(n, o.wire, T::BF16),
        };
        let seed = 0x5eed ^ count as u64;
        let c = bounds::self_check_random(
            comm,
            bound,
            ctl,
            bounds::mpi_error_bound(n, T::BF16),
            count,
            seed,
            T::BF16,
        )?;
        return Ok(c.wrong());
    }
    let _ = (o, count, comm, ctl);
    Ok(0)
}
