//! The end-of-run summary of `ringtrain train`: wall time, steps, samples/s
//! over the whole run for the job and per rank (labelled), and where the
//! wall time went.
//!
//! The per-step line's samples/s is the global batch over rank 0's step
//! time; this summary is what a user compares runs by: samples trained
//! divided by the wall time of the whole run, start-up included.

use std::time::Instant;

use crate::comm::Communicator;
use crate::error::Result;
use crate::train::StepTimes;

/// Seconds since this process started, from /proc (None where /proc or its
/// format is not there).
pub fn process_age_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start_ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| (uptime - start_ticks / hz as f64).max(0.0))
}

/// Times of one rank's run, summed as the run goes.
pub struct RunTimes {
    /// Seconds from process start to the first step.
    startup: f64,
    /// When the first step began.
    t0: Instant,
    pub steps: u64,
    pub samples: u64,
    data: f64,
    compute: f64,
    comm: f64,
    pub eval: f64,
    pub checkpoint: f64,
}

/// The figures every rank contributes, in this order.
const FIELDS: usize = 8;

impl RunTimes {
    /// Call right before the first step.
    pub fn start() -> Self {
        RunTimes {
            startup: process_age_s().unwrap_or(0.0),
            t0: Instant::now(),
            steps: 0,
            samples: 0,
            data: 0.0,
            compute: 0.0,
            comm: 0.0,
            eval: 0.0,
            checkpoint: 0.0,
        }
    }

    /// One step of `samples` samples on this rank that took `wall` seconds
    /// (its times `t` end before the wait for the next batch read ahead,
    /// which counts as data here).
    pub fn step(&mut self, t: &StepTimes, samples: usize, wall: f64) {
        self.steps += 1;
        self.samples += samples as u64;
        self.data += t.data + (wall - t.total).max(0.0);
        self.comm += t.comm;
        // The rest of the step: forward, backward, update (and the little
        // between them).
        self.compute += (t.total - t.data - t.comm).max(0.0);
    }

    /// The summary lines (rank 0 prints them); a collective: every rank
    /// calls it at the same point.
    pub fn finish(&self, comm: &dyn Communicator) -> Result<Vec<String>> {
        let loop_s = self.t0.elapsed().as_secs_f64();
        let wall = self.startup + loop_s;
        let n = comm.size();
        let mut v = vec![0f64; FIELDS * n];
        v[comm.rank() * FIELDS..][..FIELDS].copy_from_slice(&[
            wall,
            self.startup,
            self.samples as f64,
            self.data,
            self.compute,
            self.comm,
            self.eval,
            self.checkpoint,
        ]);
        comm.all_reduce_sum_f64(&mut v)?;
        Ok(summary_lines(&v, n, self.steps))
    }
}

/// The lines for all ranks' figures `v` (FIELDS per rank).
fn summary_lines(v: &[f64], n: usize, steps: u64) -> Vec<String> {
    let rank = |r: usize| &v[r * FIELDS..][..FIELDS];
    let mean = |i: usize| (0..n).map(|r| rank(r)[i]).sum::<f64>() / n as f64;
    let wall = (0..n).map(|r| rank(r)[0]).fold(0.0, f64::max);
    let samples: f64 = (0..n).map(|r| rank(r)[2]).sum();
    let [startup, data, compute, comm, eval, ckpt] = [1, 3, 4, 5, 6, 7].map(mean);
    let other = (wall - startup - data - compute - comm - eval - ckpt).max(0.0);
    let pct = |s: f64| 100.0 * s / wall.max(1e-12);
    let per_rank: Vec<String> = (0..n)
        .map(|r| format!("rank {r} {:.0}", rank(r)[2] / rank(r)[0].max(1e-12)))
        .collect();
    vec![
        format!(
            "summary: {steps} steps in {wall:.2} s wall | {:.0} samples/s for the job ({} rank(s), {:.0} samples over the whole run's wall time, start-up included)",
            samples / wall.max(1e-12),
            n,
            samples
        ),
        format!(
            "summary: samples/s per rank over its wall time: {}",
            per_rank.join(", ")
        ),
        format!(
            "summary: wall time split (mean over ranks): start-up {startup:.2} s ({:.1}%), data {data:.2} s ({:.1}%), compute {compute:.2} s ({:.1}%), exposed communication {comm:.2} s ({:.1}%), evaluation {eval:.2} s ({:.1}%), checkpoints {ckpt:.2} s ({:.1}%), other {other:.2} s ({:.1}%)",
            pct(startup),
            pct(data),
            pct(compute),
            pct(comm),
            pct(eval),
            pct(ckpt),
            pct(other)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_age_is_small_and_positive() {
        let a = process_age_s().expect("/proc on Linux");
        assert!((0.0..3600.0).contains(&a), "{a}");
    }

    #[test]
    fn lines_add_up_over_ranks() {
        // Two ranks: wall 10 and 12 s, 1000 samples each.
        let v = [
            10.0, 1.0, 1000.0, 0.5, 6.0, 1.0, 0.5, 0.0, //
            12.0, 1.0, 1000.0, 0.5, 6.0, 3.0, 0.5, 0.0,
        ];
        let l = summary_lines(&v, 2, 10);
        assert!(l[0].contains("10 steps in 12.00 s wall"), "{}", l[0]);
        assert!(l[0].contains("167 samples/s for the job"), "{}", l[0]);
        assert!(l[1].contains("rank 0 100, rank 1 83"), "{}", l[1]);
        assert!(l[2].contains("exposed communication 2.00 s"), "{}", l[2]);
        assert!(l[2].contains("other 2.00 s"), "{}", l[2]);
    }
}
