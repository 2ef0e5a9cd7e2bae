//! `--progress` under mpirun, whose ranks see no terminal: `bar` draws the
//! bar anyway (on stderr) and its first frame already shows step 1's
//! figures; `lines` (what `auto` picks without a terminal) prints step
//! lines on stdout and draws nothing.
#![cfg(feature = "mpi")]

mod common;

use common::mpirun;

fn run(progress: &str) -> common::Run {
    let r = mpirun(2, &["train", "--steps", "30", "--progress", progress]);
    r.ok();
    r
}

#[test]
fn bar_draws_under_mpirun_and_its_first_frame_is_step_one() {
    let r = run("bar");
    let first = r.stderr.split('\r').next().unwrap();
    assert!(
        first.contains("step      1/30 | loss "),
        "first frame: {first:?}"
    );
    // Escape codes and carriage returns: a bar being redrawn.
    assert!(r.stderr.contains("\x1b[") && r.stderr.matches('\r').count() >= 10);
    assert!(r.stderr.contains("step     30/30"), "{}", r.context());
    assert!(!r.stdout.contains("step      1/30"), "{}", r.context());
}

#[test]
fn lines_print_step_lines_and_no_bar() {
    for progress in ["lines", "auto"] {
        let r = run(progress);
        assert!(
            r.stdout.contains("step      1/30 | loss "),
            "{}",
            r.context()
        );
        assert!(
            r.stdout.contains("step     30/30 | loss "),
            "{}",
            r.context()
        );
        assert!(
            !r.stderr.contains('\r') && !r.stderr.contains("\x1b["),
            "{}",
            r.context()
        );
    }
}
