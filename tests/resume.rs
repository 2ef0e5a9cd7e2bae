//! Checkpoints and resume through the real binary under mpirun: a run
//! stopped and resumed equals the uninterrupted run (bit for bit at the
//! same world size, within the world-size tolerance at another), a crash
//! in the middle of a checkpoint write leaves the previous one usable,
//! damaged checkpoints and mismatched settings are refused.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{mpirun, mpirun_env, read_params, rel_diff, run_with_timeout, tempdir};

const STEPS: &str = "16";

/// The run every test continues: 16 steps, 2 or 3 uneven slices.
fn base<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "--steps",
        STEPS,
        "--global-batch",
        "30",
        "--hidden",
        "32,16",
        "--eval-every",
        "0",
        "--log-every",
        "4",
    ];
    a.extend_from_slice(extra);
    a
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The uninterrupted run's final parameters.
fn uninterrupted(dir: &Path, np: usize, extra: &[&str]) -> Vec<f32> {
    let out = dir.join(format!("full-{np}.safetensors"));
    let mut a = base(extra);
    a.extend(["--save", s(&out)]);
    mpirun(np, &a).ok();
    read_params(&out)
}

/// Stops after `stop` steps, then resumes on `np2` ranks to the end.
fn stop_and_resume(dir: &Path, np1: usize, np2: usize, stop: &str, extra: &[&str]) -> Vec<f32> {
    let ck = dir.join("ck");
    let mut a = base(extra);
    a.extend(["--checkpoint-dir", s(&ck), "--stop-after", stop]);
    let first = mpirun(np1, &a);
    first.ok();
    assert!(
        first
            .stdout
            .contains(&format!("stopped after step {stop}/{STEPS}")),
        "{}",
        first.stdout
    );
    let out = dir.join("resumed.safetensors");
    let mut b = base(extra);
    b.extend([
        "--checkpoint-dir",
        s(&ck),
        "--resume",
        "auto",
        "--save",
        s(&out),
    ]);
    let second = mpirun(np2, &b);
    second.ok();
    assert!(
        second.stdout.contains(&format!(
            "at step {stop}/{STEPS} (written by {np1} rank(s))"
        )),
        "{}",
        second.stdout
    );
    read_params(&out)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn resume_is_bit_identical_adamw() {
    let tmp = tempdir("resume-adamw");
    let dir = tmp.path();
    let full = uninterrupted(dir, 2, &[]);
    let resumed = stop_and_resume(dir, 2, 2, "7", &[]);
    assert_eq!(bits(&resumed), bits(&full));
}

#[test]
fn resume_is_bit_identical_sgd_momentum() {
    // The first SGD step differs from the others (v = g): resuming after
    // step 1 checks that the update count travels with the checkpoint.
    let tmp = tempdir("resume-sgd");
    let dir = tmp.path();
    let extra = ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9"];
    let full = uninterrupted(dir, 2, &extra);
    let resumed = stop_and_resume(dir, 2, 2, "1", &extra);
    assert_eq!(bits(&resumed), bits(&full));
}

#[test]
fn resume_on_more_ranks_continues_the_same_run() {
    let tmp = tempdir("resume-2to3");
    let dir = tmp.path();
    let full = uninterrupted(dir, 2, &[]);
    let resumed = stop_and_resume(dir, 2, 3, "8", &[]);
    let d = rel_diff(&resumed, &full);
    eprintln!("2 ranks then 3 vs 2 throughout: relative difference {d:e}");
    assert!(d <= 1e-5, "{d:e}");
}

#[test]
fn checkpoints_are_kept_and_readable_as_the_saved_model() {
    let tmp = tempdir("resume-keep");
    let dir = tmp.path();
    let ck = dir.join("ck");
    let save = dir.join("final.safetensors");
    let a = base(&[
        "--checkpoint-dir",
        s(&ck),
        "--checkpoint-every",
        "3",
        "--keep",
        "2",
        "--save",
        s(&save),
    ]);
    mpirun(2, &a).ok();
    let mut names: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock") // the run's lock file (see docs/files.md)
        .collect();
    names.sort();
    // Every 3 steps and at the end (16); the newest two stay; the run
    // reached its last step (FINISHED, for launch/resume-loop.sh).
    assert_eq!(names, ["FINISHED", "step-00000015", "step-00000016"]);
    let last = ck.join("step-00000016");
    for f in [
        "model.safetensors",
        "optim.safetensors",
        "state.json",
        "COMPLETE",
    ] {
        assert!(last.join(f).is_file(), "{f} missing");
    }
    // The checkpoint's parameters are the saved model, tensor for tensor.
    assert_eq!(
        bits(&read_params(&last.join("model.safetensors"))),
        bits(&read_params(&save))
    );
    // A new run must not write into another run's checkpoints.
    let r = mpirun(2, &base(&["--checkpoint-dir", s(&ck)]));
    r.one_error(2, "already holds checkpoints");
    // Resuming a finished run trains nothing and succeeds.
    let r = mpirun(2, &base(&["--checkpoint-dir", s(&ck), "--resume", "auto"]));
    r.ok();
    assert!(r.stdout.contains("at step 16/16"), "{}", r.stdout);
}

#[test]
fn metrics_continue_without_duplicates() {
    let tmp = tempdir("resume-metrics");
    let dir = tmp.path();
    let ck = dir.join("ck");
    let m = dir.join("m.jsonl");
    let mut a = base(&["--checkpoint-dir", s(&ck), "--metrics-out", s(&m)]);
    a.extend(["--checkpoint-every", "4", "--stop-after", "10"]);
    mpirun(2, &a).ok();
    // A crash after step 10 would have left records past the checkpoint
    // at 8; here `--resume` names that older checkpoint explicitly.
    let at8 = ck.join("step-00000008");
    let b = base(&[
        "--checkpoint-dir",
        s(&ck),
        "--metrics-out",
        s(&m),
        "--resume",
        s(&at8),
    ]);
    mpirun(2, &b).ok();
    let steps: Vec<u64> = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=16).collect::<Vec<u64>>());
}

#[test]
fn a_crash_while_writing_a_checkpoint_keeps_the_previous_one() {
    let tmp = tempdir("resume-crash");
    let dir = tmp.path();
    let full = uninterrupted(dir, 2, &[]);
    let ck = dir.join("ck");
    let a = base(&["--checkpoint-dir", s(&ck), "--checkpoint-every", "4"]);
    let r = mpirun_env(2, &a, &[("RINGTRAIN_FAULT", "crash-in-checkpoint@8")]);
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("injected fault"), "{}", r.stderr);
    // The interrupted write left a temporary directory, never a checkpoint.
    assert!(!ck.join("step-00000008").exists());
    assert!(ck.join("step-00000004").join("COMPLETE").is_file());
    let out = dir.join("after-crash.safetensors");
    let mut b = base(&["--checkpoint-dir", s(&ck), "--resume", "auto"]);
    b.extend(["--save", s(&out)]);
    let r = mpirun(2, &b);
    r.ok();
    assert!(r.stdout.contains("at step 4/16"), "{}", r.stdout);
    assert_eq!(bits(&read_params(&out)), bits(&full));
    // The leftover of the crashed write is cleaned up.
    let left: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A checkpoint of a 6-step stop, to damage.
fn one_checkpoint(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = dir.join("ck");
    mpirun(2, &base(&["--checkpoint-dir", s(&ck), "--stop-after", "6"])).ok();
    (ck.clone(), ck.join("step-00000006"))
}

fn expect_refused(ck: &Path, extra: &[&str], fragment: &str) {
    let mut a = base(&["--checkpoint-dir", s(ck), "--resume", "auto"]);
    a.extend_from_slice(extra);
    let r = mpirun(2, &a);
    r.one_error(2, fragment);
    assert!(!r.stdout.contains("step "), "{}", r.stdout);
}

#[test]
fn damaged_checkpoints_are_refused() {
    let tmp = tempdir("resume-damaged");
    let dir = tmp.path();
    let (ck, at) = one_checkpoint(dir);
    let model = at.join("model.safetensors");
    let good = std::fs::read(&model).unwrap();
    let mut flipped = good.clone();
    let i = good.len() - 100;
    flipped[i] ^= 1;
    std::fs::write(&model, &flipped).unwrap();
    expect_refused(&ck, &[], "model.safetensors does not match its checksum");
    std::fs::write(&model, &good[..good.len() - 64]).unwrap();
    expect_refused(&ck, &[], "truncated");
    std::fs::write(&model, &good).unwrap();
    let optim = at.join("optim.safetensors");
    std::fs::write(&optim, b"").unwrap();
    expect_refused(&ck, &[], "optim.safetensors does not match its checksum");
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let tmp = tempdir("resume-settings");
    let dir = tmp.path();
    let (ck, _) = one_checkpoint(dir);
    expect_refused(
        &ck,
        &["--lr", "0.01"],
        "optim.lr = 0.002 in the checkpoint, 0.01 now",
    );
    expect_refused(&ck, &["--hidden", "32,8"], "saved model is input");
    // Settings that do not change the trajectory may differ.
    mpirun(
        3,
        &base(&[
            "--checkpoint-dir",
            s(&ck),
            "--resume",
            "auto",
            "--bucket-kib",
            "1",
            "--comm",
            "mpi",
        ]),
    )
    .ok();
}

#[test]
fn ranks_with_different_settings_are_refused() {
    // One rank started with another learning rate (an MPMD launch).
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe"]);
    for (i, lr) in ["0.002", "0.002", "0.003"].into_iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", "1"]).arg(common::bin());
        cmd.args(base(&["--lr", lr]));
    }
    let r = run_with_timeout(cmd, Duration::from_secs(60));
    r.one_error(
        2,
        "the effective configuration differs from rank 0 on rank(s) 2",
    );
}

#[test]
fn resume_loop_recovers_from_a_failed_rank() {
    // Rank 1 fails at step 10 on the first attempt only; the loop restarts
    // the job, which resumes from the checkpoint at step 8 and finishes
    // with the parameters of a run that never failed.
    let tmp = tempdir("resume-loop");
    let dir = tmp.path();
    let full = uninterrupted(dir, 2, &[]);
    let (ck, out) = (dir.join("ck"), dir.join("looped.safetensors"));
    let bin = common::bin();
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/launch/resume-loop.sh"
    ))
    .args([
        "--checkpoint-dir",
        s(&ck),
        "--delay",
        "0",
        "--max-attempts",
        "3",
    ])
    .args(["--", "mpirun", "--allow-run-as-root", "--oversubscribe"])
    .args(["-np", "2", "--mca", "mpi_yield_when_idle", "1"])
    .arg(&bin)
    .args(base(&["--checkpoint-every", "4", "--save", s(&out)]))
    .env("RINGTRAIN_FAULT", "panic@1:10")
    .env("RINGTRAIN_FAULT_ONCE", dir.join("fired"));
    let r = run_with_timeout(cmd, Duration::from_secs(240));
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("injected fault"), "{}", r.stderr);
    assert!(r.stdout.contains("at step 8/16"), "{}", r.stdout);
    assert_eq!(bits(&read_params(&out)), bits(&full));
}

#[test]
fn a_killed_rank_ends_the_job_and_the_run_resumes_exactly() {
    let tmp = tempdir("resume-kill");
    let dir = tmp.path();
    let full = uninterrupted(dir, 3, &[]);
    let ck = dir.join("ck");
    let a = base(&[
        "--checkpoint-dir",
        s(&ck),
        "--checkpoint-every",
        "4",
        "--comm-timeout",
        "10",
    ]);
    let r = mpirun_env(3, &a, &[("RINGTRAIN_FAULT", "kill@2:10")]);
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    // Ended by the watchdog or by mpirun, well within the test's deadline.
    assert!(r.elapsed < Duration::from_secs(60), "{:?}", r.elapsed);
    assert!(!r.stdout.contains("step     16/16"), "{}", r.stdout);
    let out = dir.join("after-kill.safetensors");
    let mut b = base(&["--checkpoint-dir", s(&ck), "--resume", "auto"]);
    b.extend(["--save", s(&out)]);
    let r = mpirun(3, &b);
    r.ok();
    assert!(r.stdout.contains("at step 8/16"), "{}", r.stdout);
    assert_eq!(bits(&read_params(&out)), bits(&full));
}

/// Copies the checkpoint directory `from` to `to` (files only, one level).
fn copy_checkpoint(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn resume_auto_falls_back_past_a_damaged_newest_checkpoint() {
    // Checkpoints at steps 4 and 8; then step 8's parameters are damaged,
    // as a crash during preemption leaves them. `--resume auto` warns,
    // names it, and continues from step 4: bit for bit what resuming from
    // step 4 by hand gives.
    let tmp = tempdir("resume-fallback");
    let dir = tmp.path();
    let ck = dir.join("ck");
    let a = base(&[
        "--checkpoint-dir",
        s(&ck),
        "--checkpoint-every",
        "4",
        "--stop-after",
        "8",
    ]);
    mpirun(2, &a).ok();
    assert!(
        !ck.join("FINISHED").exists(),
        "a stopped run is not finished"
    );
    let older = dir.join("by-hand").join("step-00000004");
    copy_checkpoint(&ck.join("step-00000004"), &older);
    let model = ck.join("step-00000008").join("model.safetensors");
    let good = std::fs::read(&model).unwrap();
    std::fs::write(&model, &good[..good.len() - 64]).unwrap();

    let auto_out = dir.join("auto.safetensors");
    let r = mpirun(
        2,
        &base(&[
            "--checkpoint-dir",
            s(&ck),
            "--resume",
            "auto",
            "--save",
            s(&auto_out),
        ]),
    );
    r.ok();
    let warning = "warning: skipping damaged checkpoint";
    assert_eq!(r.stderr.matches(warning).count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("step-00000008 (model.safetensors does not match"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("resuming from"), "{}", r.stderr);
    assert!(r.stdout.contains("at step 4/16"), "{}", r.stdout);
    assert!(
        ck.join("FINISHED").is_file(),
        "a finished run leaves FINISHED"
    );

    let hand_out = dir.join("by-hand.safetensors");
    let r = mpirun(2, &base(&["--resume", s(&older), "--save", s(&hand_out)]));
    r.ok();
    assert_eq!(bits(&read_params(&auto_out)), bits(&read_params(&hand_out)));
}

#[test]
fn resume_auto_with_every_checkpoint_damaged_is_refused() {
    let tmp = tempdir("resume-all-damaged");
    let dir = tmp.path();
    let ck = dir.join("ck");
    let a = base(&[
        "--checkpoint-dir",
        s(&ck),
        "--checkpoint-every",
        "3",
        "--stop-after",
        "6",
    ]);
    mpirun(2, &a).ok();
    for step in ["step-00000003", "step-00000006"] {
        std::fs::write(ck.join(step).join("optim.safetensors"), b"").unwrap();
    }
    expect_refused(
        &ck,
        &[],
        "the 1 older checkpoint(s) here do not verify either",
    );
}

#[test]
fn resume_loop_does_not_call_a_stopped_run_done() {
    // COMMAND stops early (--stop-after) and exits 0: not FINISHED, so the
    // loop resumes; the second attempt is refused (already at that step),
    // which ends the loop with status 2, never "done".
    let tmp = tempdir("resume-loop-stop");
    let dir = tmp.path();
    let ck = dir.join("ck");
    let bin = common::bin();
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/launch/resume-loop.sh"
    ))
    .args([
        "--checkpoint-dir",
        s(&ck),
        "--delay",
        "0",
        "--max-attempts",
        "3",
    ])
    .args(["--", "mpirun", "--allow-run-as-root", "--oversubscribe"])
    .args(["-np", "2", "--mca", "mpi_yield_when_idle", "1"])
    .arg(&bin)
    .args(base(&["--stop-after", "6"]));
    let r = run_with_timeout(cmd, Duration::from_secs(240));
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("stopped before the last step"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("done after"), "{}", r.stderr);
}
