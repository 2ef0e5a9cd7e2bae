//! One row: `-w` warm-up iterations, then `-n` timed ones back to back
//! after a barrier, out of place and then in place; with `-c 1` one more
//! checked run (check.rs).

use std::time::Instant;

use super::check::{changed_inputs, count_wrong, out_of_place_check, random_check};
use super::elem::{Elem, input};
use super::options::Options;
use crate::comm::Communicator;
use crate::error::Result;

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Timing {
    /// Per-rank mean seconds per iteration, max over ranks.
    pub(super) seconds: f64,
    /// Wrong elements summed over ranks; `None` without `-c 1`.
    pub(super) wrong: Option<u64>,
}

pub(super) struct Row {
    pub(super) count: usize,
    pub(super) out_of_place: Timing,
    pub(super) in_place: Timing,
    /// The shared-memory bound (busbw GB/s) when every rank is on one host
    /// (shm_bound.rs).
    pub(super) shm_bound: Option<f64>,
    /// `--vs-mpi`: MPI_Allreduce's (out of place, in place) timings of the
    /// same row, measured right after it.
    pub(super) mpi: Option<(Timing, Timing)>,
}

impl Row {
    pub(super) fn new(count: usize) -> Self {
        Row {
            count,
            out_of_place: Timing::default(),
            in_place: Timing::default(),
            shm_bound: None,
            mpi: None,
        }
    }

    pub(super) fn set(&mut self, in_place: bool, t: Timing) {
        if in_place {
            self.in_place = t;
        } else {
            self.out_of_place = t;
        }
    }
}

/// The slowest rank's seconds per iteration (every rank gets it).
pub(super) fn slowest(ctl: &dyn Communicator, mine: f64) -> Result<f64> {
    over_ranks(ctl, mine, Average::Max)
}

/// `-a`: how the ranks' times make the one reported (nccl-tests' codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Average {
    Rank0 = 0,
    Mean = 1,
    Min = 2,
    Max = 3,
}

impl Average {
    pub(super) fn from_code(a: u8) -> Average {
        match a {
            0 => Average::Rank0,
            2 => Average::Min,
            3 => Average::Max,
            _ => Average::Mean,
        }
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Average::Rank0 => "rank 0's",
            Average::Mean => "the mean over ranks",
            Average::Min => "the minimum over ranks",
            Average::Max => "the maximum over ranks",
        }
    }
}

/// The ranks' values combined as `how` says (every rank gets it).
pub(super) fn over_ranks(ctl: &dyn Communicator, mine: f64, how: Average) -> Result<f64> {
    let all: Vec<f64> = ctl
        .all_gather_u64(mine.to_bits())?
        .into_iter()
        .map(f64::from_bits)
        .collect();
    Ok(combine(&all, how))
}

fn combine(all: &[f64], how: Average) -> f64 {
    match how {
        Average::Rank0 => all[0],
        Average::Mean => all.iter().sum::<f64>() / all.len() as f64,
        Average::Min => all.iter().copied().fold(f64::INFINITY, f64::min),
        Average::Max => all.iter().copied().fold(0.0, f64::max),
    }
}

/// One row of `comm`; `check` runs the checks of `-c 1` after the timing.
pub(super) fn measure<T: Elem>(
    o: &Options,
    count: usize,
    comm: &dyn Communicator,
    ctl: &dyn Communicator,
    check: bool,
) -> Result<Row> {
    let (rank, n) = (ctl.rank(), ctl.size());
    let src: Vec<T> = (0..count)
        .map(|i| T::from_f32(input(rank, i, n) as f32))
        .collect();
    let mut dst = src.clone();
    let mut row = Row::new(count);
    for in_place in [false, true] {
        // Out-of-place: `src` reduced into `dst`, `src` untouched. In-place:
        // `dst` is reduced again and again (its values grow; only the time
        // matters here).
        dst.copy_from_slice(&src);
        let input = (!in_place).then_some(&src[..]);
        let once = |dst: &mut [T]| T::reduce(comm, input, dst, o.op);
        for _ in 0..o.warmup {
            once(&mut dst)?;
        }
        ctl.barrier()?;
        let t = Instant::now();
        for _ in 0..o.iters {
            once(&mut dst)?;
        }
        let seconds = over_ranks(ctl, t.elapsed().as_secs_f64() / o.iters as f64, o.average)?;

        let wrong = if check {
            if in_place {
                dst.copy_from_slice(&src);
            } else {
                // An element the all-reduce fails to write stays NaN: wrong.
                dst.fill(T::from_f32(f32::NAN));
            }
            once(&mut dst)?;
            let mut bad = count_wrong(&mut dst, o, rank, n);
            if in_place {
                bad += random_check::<T>(o, count, comm, ctl)?;
            } else {
                bad += changed_inputs(&src, rank, n);
                bad += out_of_place_check::<T>(count, comm, ctl)?;
            }
            let all = ctl.all_gather_u64(bad)?;
            Some(all.iter().sum())
        } else {
            None
        };
        row.set(in_place, Timing { seconds, wrong });
    }
    Ok(row)
}

#[cfg(test)]
mod average_tests {
    use super::*;

    #[test]
    fn ranks_times_combine_as_nccl_tests_a() {
        let t = [3.0, 1.0, 2.0];
        assert_eq!(combine(&t, Average::from_code(0)), 3.0);
        assert_eq!(combine(&t, Average::from_code(1)), 2.0);
        assert_eq!(combine(&t, Average::from_code(2)), 1.0);
        assert_eq!(combine(&t, Average::from_code(3)), 3.0);
    }
}
