//! No silent hangs (`--comm-timeout`): a stalled rank is named by the
//! watchdog, a killed rank ends the job, a slow-but-alive job is left
//! alone. Faults come from the test-only `RINGTRAIN_FAULT` switch.
//!
//! The bounds below only detect hangs: a run still going after them is
//! killed and the test fails; how fast a run ends is not measured.
#![cfg(feature = "mpi")]

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::Run;

/// A run still going after this has hung.
const HANG: Duration = Duration::from_secs(120);

/// One MPI job at a time: the runs share two cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `mpirun -np N ringtrain train` on a small model, `fault` injected.
fn train(np: usize, fault: Option<&str>, args: &[&str]) -> Run {
    let base = ["train", "--hidden", "32", "--log-every", "10"];
    let mut cmd = common::mpirun_command(np, &[&base[..], args].concat());
    match fault {
        Some(f) => cmd.env("RINGTRAIN_FAULT", f),
        None => cmd.env_remove("RINGTRAIN_FAULT"),
    };
    common::run_with_timeout(cmd, HANG)
}

fn watchdog_lines(r: &Run) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.contains("ringtrain: watchdog"))
        .collect()
}

#[test]
fn a_stalled_rank_is_named_and_the_job_ends() {
    let _s = serial();
    let r = train(
        2,
        Some("stall@1:3"),
        &[
            "--steps",
            "50",
            "--global-batch",
            "8",
            "--comm-timeout",
            "3",
        ],
    );
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    let lines = watchdog_lines(&r);
    assert_eq!(
        lines.len(),
        1,
        "exactly one watchdog message:\n{}",
        r.stderr
    );
    let m = lines[0];
    assert!(m.contains("watchdog: step 3: "), "{m}");
    assert!(m.contains("all-reduce"), "names the operation: {m}");
    assert!(m.contains("did not complete within 3 s"), "{m}");
    assert!(m.contains("waiting in it: rank 0;"), "{m}");
    assert!(
        m.contains("not arrived: rank 1 (computing at step 3"),
        "{m}"
    );
    assert!(!r.stdout.contains("step     50/50"));
}

#[test]
fn a_stalled_rank_of_three_is_named_among_the_waiting() {
    let _s = serial();
    let r = train(
        3,
        Some("stall@2:2"),
        &[
            "--steps",
            "50",
            "--global-batch",
            "9",
            "--comm-timeout",
            "3",
            "--no-overlap",
        ],
    );
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    let lines = watchdog_lines(&r);
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    let m = lines[0];
    assert!(m.contains("watchdog: step 2: "), "{m}");
    assert!(m.contains("waiting in it: ranks 0,1;"), "{m}");
    assert!(m.contains("not arrived: rank 2 ("), "{m}");
}

#[test]
fn a_killed_rank_ends_the_job_within_the_timeout() {
    let _s = serial();
    let r = train(
        3,
        Some("kill@2:3"),
        &[
            "--steps",
            "200",
            "--global-batch",
            "9",
            "--comm-timeout",
            "60",
        ],
    );
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    // Within the timeout: the death is noticed at once, not after 60 s.
    assert!(r.elapsed < Duration::from_secs(60), "{:?}", r.elapsed);
    // The watchdog names it (mpirun, which also sees the SIGKILL, may
    // end the job first; its notice names the rank as well).
    let lines = watchdog_lines(&r);
    assert!(lines.len() <= 1, "{}", r.stderr);
    assert!(
        lines.iter().any(|l| l.contains(": rank 2 is gone: "))
            || r.stderr.contains("process rank 2 "),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("step    200/200"));
}

#[test]
fn a_killed_rank_0_ends_the_job_too() {
    let _s = serial();
    let r = train(
        2,
        Some("kill@0:3"),
        &[
            "--steps",
            "200",
            "--global-batch",
            "8",
            "--comm-timeout",
            "60",
        ],
    );
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(60), "{:?}", r.elapsed);
    assert!(
        r.stderr.contains("lost the connection to rank 0") || r.stderr.contains("process rank 0 "),
        "{}",
        r.stderr
    );
}

#[test]
fn a_slow_but_alive_job_is_left_alone() {
    let _s = serial();
    for extra in [
        &["--overlap", "on"][..],
        &["--comm", "mpi", "--no-overlap"][..],
    ] {
        let mut args = vec![
            "--steps",
            "60",
            "--global-batch",
            "32",
            "--eval-every",
            "20",
            "--comm-timeout",
            "2",
        ];
        args.extend_from_slice(extra);
        let r = train(2, None, &args);
        r.ok();
        assert!(r.stdout.contains("step     60/60"), "{}", r.stdout);
        assert!(watchdog_lines(&r).is_empty(), "{}", r.stderr);
    }
}

#[test]
fn a_panic_is_reported_once_not_again_by_the_watchdog() {
    let _s = serial();
    let r = train(
        2,
        Some("panic@1:3"),
        &[
            "--steps",
            "50",
            "--global-batch",
            "8",
            "--comm-timeout",
            "30",
        ],
    );
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("rank 1: internal error"), "{}", r.stderr);
    assert!(watchdog_lines(&r).is_empty(), "{}", r.stderr);
}

/// Before the watchdog exists: a rank frozen before MPI_Init leaves the
/// others in MPI_Init. They end after `--rendezvous-timeout` (the start-up
/// guard), one message from a rank that is not the frozen one, exit 3.
#[test]
fn a_rank_frozen_before_mpi_init_ends_the_job_after_the_start_up_timeout() {
    let _s = serial();
    for frozen in [1usize, 0] {
        let fault = format!("stop-at-startup@{frozen}");
        let r = train(
            2,
            Some(&fault),
            &["--steps", "5", "--rendezvous-timeout", "3"],
        );
        let c = format!("{fault}\n{}", r.stderr);
        assert_eq!(r.code, Some(3), "{c}");
        let lines: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.contains("start-up did not finish"))
            .collect();
        assert_eq!(lines.len(), 1, "{c}");
        let waiting = 1 - frozen;
        let want = format!("ringtrain: rank {waiting}: start-up did not finish within 3 s");
        assert!(lines[0].starts_with(&want), "{c}");
        assert!(lines[0].contains("MPI_Init"), "{c}");
    }
}

#[test]
fn a_bad_timeout_is_a_user_error() {
    let _s = serial();
    for bad in ["-1", "0.5", "abc"] {
        let flag = format!("--comm-timeout={bad}");
        let r = train(2, None, &["--steps", "5", &flag]);
        assert_eq!(r.code, Some(2), "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("--comm-timeout"), "{bad}: {}", r.stderr);
    }
}

#[test]
fn bench_train_runs_watched() {
    let _s = serial();
    #[rustfmt::skip]
    let args = [
        "bench", "train", "--iters", "20", "--warmup", "2",
        "--hidden", "32", "--batch-per-rank", "16", "--comm-timeout", "2",
    ];
    let r = common::mpirun_timeout(2, &args, HANG);
    r.ok();
    assert!(r.stdout.contains("bench train: 2 rank(s)"), "{}", r.stdout);
    assert!(watchdog_lines(&r).is_empty(), "{}", r.stderr);
}

/// 2 ranks, 6 steps, a checkpoint every 4 into `dir`, `--comm-timeout 2`.
fn train_with_checkpoints(fault: &str, dir: &std::path::Path) -> Run {
    let d = dir.to_string_lossy().into_owned();
    #[rustfmt::skip]
    let args = [
        "--steps", "6", "--global-batch", "8", "--comm-timeout", "2",
        "--checkpoint-dir", &d, "--checkpoint-every", "4",
    ];
    train(2, Some(fault), &args)
}

/// Rank 0 writing a checkpoint for longer than the timeout while the
/// other rank waits is not a hang as long as the write moves on: the job
/// finishes and the checkpoint is there.
#[test]
fn a_slow_checkpoint_write_that_moves_is_waited_for() {
    let _s = serial();
    let tmp = common::tempdir("wd-slow-ckpt");
    let dir = tmp.path();
    let r = train_with_checkpoints("slow-checkpoint@4:6", dir);
    assert_eq!(r.code, Some(0), "{}", r.context());
    assert!(watchdog_lines(&r).is_empty(), "{}", r.stderr);
    assert!(
        dir.join("step-00000004/COMPLETE").exists(),
        "{}",
        r.context()
    );
    assert!(
        dir.join("step-00000006/COMPLETE").exists(),
        "{}",
        r.context()
    );
}

/// A checkpoint write that stops moving (a hung file system) is named:
/// the job ends with the watchdog's exit code and one message.
#[test]
fn a_checkpoint_write_that_stops_is_named() {
    let _s = serial();
    let tmp = common::tempdir("wd-stalled-ckpt");
    let dir = tmp.path();
    let r = train_with_checkpoints("stall-in-checkpoint@4", dir);
    assert_eq!(r.code, Some(3), "{}", r.context());
    let lines = watchdog_lines(&r);
    assert_eq!(lines.len(), 1, "one watchdog message:\n{}", r.stderr);
    assert!(
        lines[0].contains("not arrived: rank 0 (writing a checkpoint at step 4, no progress for"),
        "{}",
        lines[0]
    );
}
