//! NaN/Inf handling through the real binary: one rank's bad input makes
//! the global loss non-finite; every rank sees it at the same step and
//! either skips the update or ends the run, with one message naming the
//! step and the task.
#![cfg(feature = "mpi")]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Run, read_params, run_with_timeout, tempdir};

fn train_with_fault(fault: &str, extra: &[&str], save: &std::path::Path) -> Run {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .args(["--mca", "mpi_yield_when_idle", "1"])
        .arg(common::bin())
        .args(["train", "--steps", "12", "--global-batch", "16"])
        .args(["--hidden", "16", "--eval-every", "0", "--log-every", "1"])
        .arg("--save")
        .arg(save)
        .args(extra)
        .env("RINGTRAIN_FAULT", fault);
    run_with_timeout(cmd, Duration::from_secs(120))
}

#[test]
fn abort_names_the_step_and_the_task() {
    let dir = tempdir("nonfinite-abort");
    let save = dir.join("p.safetensors");
    let r = train_with_fault("nan@1:4", &[], &save);
    assert_eq!(r.code, Some(4), "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("ringtrain: error").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("ringtrain: error: step 5: the loss of task flag is NaN"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("step      4/12"), "{}", r.stdout);
    assert!(!r.stdout.contains("step      5/12"), "{}", r.stdout);
    assert!(!save.exists());
}

#[test]
fn skip_leaves_the_update_out_and_carries_on() {
    let dir = tempdir("nonfinite-skip");
    let save = dir.join("p.safetensors");
    let r = train_with_fault("nan@0:2-3", &["--on-nonfinite", "skip"], &save);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout.matches("update skipped").count(),
        2,
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("; update skipped (2 in a row, at most 3)"),
        "{}",
        r.stdout
    );
    assert!(read_params(&save).iter().all(|v| v.is_finite()));
}

#[test]
fn too_many_skips_in_a_row_end_the_run() {
    let dir = tempdir("nonfinite-many");
    let save = dir.join("p.safetensors");
    let r = train_with_fault(
        "nan@1:2-11",
        &["--on-nonfinite", "skip", "--max-skips", "2"],
        &save,
    );
    assert_eq!(r.code, Some(4), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("step 5: the loss of task flag is NaN; 3 updates skipped in a row, more than --max-skips 2"),
        "{}",
        r.stderr
    );
}
