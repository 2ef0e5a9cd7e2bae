//! NaN/Inf handling through the real binary: one rank's bad input makes
//! the global loss non-finite; every rank sees it at the same step and
//! either skips the update or ends the run, with one message naming the
//! step and the task.
#![cfg(feature = "mpi")]

mod common;

use common::{Run, mpirun_env, read_params, tempdir};

fn train_with_fault(fault: &str, extra: &[&str], save: &std::path::Path) -> Run {
    let save = save.to_str().expect("UTF-8 temp path");
    let mut args = vec!["train", "--steps", "12", "--global-batch", "16"];
    args.extend(["--hidden", "16", "--eval-every", "0", "--log-every", "1"]);
    args.extend(["--save", save]);
    args.extend_from_slice(extra);
    mpirun_env(2, &args, &[("RINGTRAIN_FAULT", fault)])
}

#[test]
fn abort_names_the_step_and_the_task() {
    let tmp = tempdir("nonfinite-abort");
    let dir = tmp.path();
    let save = dir.join("p.safetensors");
    let r = train_with_fault("nan@1:4", &[], &save);
    r.one_error(4, "ringtrain: error: step 5: the loss of task flag is NaN");
    assert!(r.stdout.contains("step      4/12"), "{}", r.stdout);
    assert!(!r.stdout.contains("step      5/12"), "{}", r.stdout);
    assert!(!save.exists());
}

#[test]
fn skip_leaves_the_update_out_and_carries_on() {
    let tmp = tempdir("nonfinite-skip");
    let dir = tmp.path();
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
    let tmp = tempdir("nonfinite-many");
    let dir = tmp.path();
    let save = dir.join("p.safetensors");
    let r = train_with_fault(
        "nan@1:2-11",
        &["--on-nonfinite", "skip", "--max-skips", "2"],
        &save,
    );
    r.one_error(
        4,
        "step 5: the loss of task flag is NaN; 3 updates skipped in a row, more than --max-skips 2",
    );
}
