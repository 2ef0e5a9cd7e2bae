//! Test-only fault injection, so the tests can prove that failures end the
//! job instead of hanging it. Set `RINGTRAIN_FAULT` to one of:
//!
//! - `panic@R:S`  rank R panics at the start of step S (0-based)
//! - `stall@R:S`  rank R sleeps for ever at the start of step S (the
//!   watchdog must name it)
//! - `kill@R:S`  rank R sends itself SIGKILL at the start of step S (a
//!   real death, like the OOM killer's: no handler, no message)
//! - `perturb-init@R`  rank R changes one initial parameter (the start-up
//!   checksum must catch it)
//! - `slow-start@R:MS`  rank R waits MS milliseconds before it connects
//!   to rank 0's watchdog (a rank on a slow remote host)
//! - `nan@R:S` or `nan@R:S-E`  rank R puts a NaN into its first input row
//!   at step S (steps S..=E), so that the step's loss is not finite
//! - `crash-in-checkpoint@S`  rank 0 aborts in the middle of writing the
//!   checkpoint after step S (one file of it written)
//! - `slow-checkpoint@S:SECS`  rank 0's checkpoint write after step S takes
//!   SECS seconds more, reporting progress every 0.1 s (a slow file system)
//! - `stall-in-checkpoint@S`  rank 0's checkpoint write after step S stops
//!   for ever without progress (a hung file system)
//! - `slow@R:FACTOR`  rank R's compute (forward + backward) takes FACTOR
//!   times as long: it sleeps (FACTOR-1) × the time measured (a slower
//!   node, for `--balance auto`). `slow@R:FACTOR:ALL`: every rank's compute
//!   takes ALL times as long, rank R's FACTOR × ALL (mostly sleeping, so
//!   that ranks sharing few cores hardly compete for them: a benchmark of
//!   the balancer on a small machine). Held as `milli`: [FACTOR, ALL] in
//!   thousandths, so that the fault stays `Eq`.
//!
//! - `stop-at-startup@R`  rank R (as its launcher numbers it) stops itself
//!   with SIGSTOP before MPI_Init (a rank frozen before the watchdog
//!   exists: the start-up guard must end the job)
//!
//! With `RINGTRAIN_FAULT_ONCE=FILE` as well, a fault that fires creates
//! FILE, and no fault is configured while FILE exists: a job that is
//! restarted (by launch/resume-loop.sh) then runs clean the second time.
//!
//! Unset (always, in real runs) it costs one environment lookup at start.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    PanicAt { rank: usize, step: u64 },
    StallAt { rank: usize, step: u64 },
    KillAt { rank: usize, step: u64 },
    PerturbInit { rank: usize },
    NanInput { rank: usize, first: u64, last: u64 },
    CrashInCheckpoint { step: u64 },
    SlowCheckpoint { step: u64, secs: u64 },
    StallInCheckpoint { step: u64 },
    SlowStart { rank: usize, ms: u64 },
    Slow { rank: usize, milli: [u64; 2] },
    StopAtStartup { rank: usize },
}

pub const ENV: &str = "RINGTRAIN_FAULT";
pub const ONCE_ENV: &str = "RINGTRAIN_FAULT_ONCE";

/// With [`ONCE_ENV`]: records that the fault fired, before it does.
fn firing() {
    if let Some(marker) = std::env::var_os(ONCE_ENV) {
        let _ = std::fs::write(marker, b"fired\n");
    }
}

/// The fault configured for this process, if any (a malformed value is
/// ignored with a warning: this is a test switch, not user input).
pub fn from_env() -> Option<Fault> {
    let v = std::env::var(ENV).ok()?;
    if std::env::var_os(ONCE_ENV).is_some_and(|m| std::path::Path::new(&m).exists()) {
        return None;
    }
    let parsed = parse(&v);
    if parsed.is_none() {
        crate::say!("ringtrain: ignoring malformed {ENV}={v:?}");
    }
    parsed
}

fn parse(v: &str) -> Option<Fault> {
    let (kind, at) = v.split_once('@')?;
    let rank_step = || -> Option<(usize, u64)> {
        let (r, s) = at.split_once(':')?;
        Some((r.parse().ok()?, s.parse().ok()?))
    };
    match kind {
        "panic" => rank_step().map(|(rank, step)| Fault::PanicAt { rank, step }),
        "stall" => rank_step().map(|(rank, step)| Fault::StallAt { rank, step }),
        "kill" => rank_step().map(|(rank, step)| Fault::KillAt { rank, step }),
        "slow-start" => {
            let (r, ms) = at.split_once(':')?;
            Some(Fault::SlowStart {
                rank: r.parse().ok()?,
                ms: ms.parse().ok()?,
            })
        }
        "slow" => {
            let (r, f) = at.split_once(':')?;
            let (f, all) = f.split_once(':').unwrap_or((f, "1"));
            let milli = |v: &str| {
                let v: f64 = v.parse().ok()?;
                let ok = v.is_finite() && (1.0..=1000.0).contains(&v);
                ok.then(|| (v * 1000.0).round() as u64)
            };
            Some(Fault::Slow {
                rank: r.parse().ok()?,
                milli: [milli(f)?, milli(all)?],
            })
        }
        "stop-at-startup" => Some(Fault::StopAtStartup {
            rank: at.parse().ok()?,
        }),
        "perturb-init" => Some(Fault::PerturbInit {
            rank: at.parse().ok()?,
        }),
        "nan" => {
            let (r, steps) = at.split_once(':')?;
            let (first, last) = match steps.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => (steps.parse().ok()?, steps.parse().ok()?),
            };
            Some(Fault::NanInput {
                rank: r.parse().ok()?,
                first,
                last,
            })
        }
        "crash-in-checkpoint" => Some(Fault::CrashInCheckpoint {
            step: at.parse().ok()?,
        }),
        "slow-checkpoint" => {
            let (step, secs) = at.split_once(':')?;
            Some(Fault::SlowCheckpoint {
                step: step.parse().ok()?,
                secs: secs.parse().ok()?,
            })
        }
        "stall-in-checkpoint" => Some(Fault::StallInCheckpoint {
            step: at.parse().ok()?,
        }),
        _ => None,
    }
}

/// Called in `main` before the world exists; `rank` is what the launcher's
/// variables say.
pub fn at_startup(rank: Option<usize>) {
    if let (Some(Fault::StopAtStartup { rank: r }), Some(me)) = (from_env(), rank) {
        if r == me {
            firing();
            // SAFETY: raise with a valid signal number has no preconditions.
            unsafe { libc::raise(libc::SIGSTOP) };
        }
    }
}

/// Called at the start of every step.
pub fn before_step(fault: Option<Fault>, rank: usize, step: u64) {
    match fault {
        Some(Fault::PanicAt { rank: r, step: s }) if (r, s) == (rank, step) => {
            firing();
            panic!("injected fault: {ENV} panic at step {step}")
        }
        Some(Fault::StallAt { rank: r, step: s }) if (r, s) == (rank, step) => {
            firing();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Some(Fault::KillAt { rank: r, step: s }) if (r, s) == (rank, step) => {
            firing();
            // SAFETY: plain system calls on this process.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            unreachable!("SIGKILL cannot be caught")
        }
        _ => {}
    }
}

/// Called on the initial parameters before they are compared.
/// Called by every rank just before it connects to rank 0's watchdog.
pub fn before_watchdog_connect(fault: Option<Fault>, rank: usize) {
    if let Some(Fault::SlowStart { rank: r, ms }) = fault {
        if r == rank {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

pub fn on_init(fault: Option<Fault>, rank: usize, params: &mut [f32]) {
    if fault == Some(Fault::PerturbInit { rank }) {
        if let Some(p) = params.first_mut() {
            *p += 1.0;
        }
    }
}

/// Called after each forward + backward that took `took`: `slow@R:F[:A]`
/// stretches rank R's to F×A times as long, the others' to A times.
pub fn stretch_compute(fault: Option<Fault>, rank: usize, took: std::time::Duration) {
    if let Some(Fault::Slow { rank: r, milli }) = fault {
        let own = if r == rank { milli[0] } else { 1000 };
        let f = (own * milli[1]) as f64 / 1e6;
        if f > 1.0 {
            std::thread::sleep(took.mul_f64(f - 1.0));
        }
    }
}

/// Called on this rank's inputs of every step.
pub fn on_batch(fault: Option<Fault>, rank: usize, step: u64, x: &mut [f32]) {
    if let Some(Fault::NanInput {
        rank: r,
        first,
        last,
    }) = fault
    {
        if r == rank && (first..=last).contains(&step) {
            if let Some(v) = x.first_mut() {
                *v = f32::NAN;
            }
        }
    }
}

/// Called between the files of the checkpoint after `steps_done` steps;
/// `progress` tells the watchdog the write is moving.
pub fn in_checkpoint_write(fault: Option<Fault>, steps_done: u64, progress: &dyn Fn()) {
    match fault {
        Some(Fault::CrashInCheckpoint { step }) if step == steps_done => {
            firing();
            crate::say!(
                "ringtrain: injected fault: {ENV} crash while writing the checkpoint of step {steps_done}"
            );
            std::process::abort();
        }
        Some(Fault::SlowCheckpoint { step, secs }) if step == steps_done => {
            firing();
            let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            while std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(100));
                progress();
            }
        }
        Some(Fault::StallInCheckpoint { step }) if step == steps_done => {
            firing();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            parse("panic@1:3"),
            Some(Fault::PanicAt { rank: 1, step: 3 })
        );
        assert_eq!(
            parse("perturb-init@0"),
            Some(Fault::PerturbInit { rank: 0 })
        );
        assert_eq!(
            parse("nan@1:4-6"),
            Some(Fault::NanInput {
                rank: 1,
                first: 4,
                last: 6
            })
        );
        assert_eq!(
            parse("crash-in-checkpoint@8"),
            Some(Fault::CrashInCheckpoint { step: 8 })
        );
        assert_eq!(
            parse("stall@1:3"),
            Some(Fault::StallAt { rank: 1, step: 3 })
        );
        assert_eq!(parse("kill@2:0"), Some(Fault::KillAt { rank: 2, step: 0 }));
        assert_eq!(
            parse("stop-at-startup@1"),
            Some(Fault::StopAtStartup { rank: 1 })
        );
        assert_eq!(parse("stop-at-startup@x"), None);
        assert_eq!(
            parse("slow-checkpoint@4:6"),
            Some(Fault::SlowCheckpoint { step: 4, secs: 6 })
        );
        assert_eq!(
            parse("stall-in-checkpoint@4"),
            Some(Fault::StallInCheckpoint { step: 4 })
        );
        assert_eq!(
            parse("slow@2:2"),
            Some(Fault::Slow {
                rank: 2,
                milli: [2000, 1000]
            })
        );
        assert_eq!(
            parse("slow@0:1.5:8"),
            Some(Fault::Slow {
                rank: 0,
                milli: [1500, 8000]
            })
        );
        assert_eq!(parse("slow@0:2:x"), None);
        assert_eq!(parse("slow@0:0.5"), None);
        assert_eq!(parse("kill@2"), None);
        assert_eq!(parse("panic@x"), None);
        assert_eq!(parse("explode@1"), None);
    }
}
