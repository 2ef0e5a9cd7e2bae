//! `--device`: without a usable GPU, `cuda` is one clear error (exit 2)
//! and `auto` trains on the CPU, saying why in the run header. Runs the
//! real binary with RINGTRAIN_NO_GPU=1, so it means the same on a machine
//! that has a GPU (where the probe would otherwise find it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Run, bin, run_with_timeout};

const QUICK: Duration = Duration::from_secs(60);

fn ringtrain(args: &[&str]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.env("RINGTRAIN_NO_GPU", "1").args(args);
    run_with_timeout(cmd, QUICK)
}

const TRAIN: [&str; 6] = ["train", "--steps", "2", "--global-batch", "8", "--hidden"];

#[test]
fn device_cuda_without_a_gpu_is_a_clear_error() {
    let tmp = common::tempdir("device-cuda");
    let dir = tmp.path();
    let metrics = dir.join("m.jsonl");
    let mut args = TRAIN.to_vec();
    let m = metrics.to_str().expect("utf-8 path");
    args.extend(["8", "--device", "cuda", "--metrics-out", m]);
    let r = ringtrain(&args);
    assert!(!metrics.exists(), "wrote the metrics file before failing");
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr
            .contains("--device cuda: no usable GPU on rank 0 (RINGTRAIN_NO_GPU is set)"),
        "{r:?}"
    );
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    assert!(!r.stdout.contains("step"), "trained anyway: {r:?}");
}

#[test]
fn device_auto_without_a_gpu_trains_on_the_cpu_and_says_why() {
    let mut args = TRAIN.to_vec();
    args.extend(["8", "--device", "auto"]);
    let r = ringtrain(&args);
    r.ok();
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("backend cpu f32 (no GPU: RINGTRAIN_NO_GPU is set)"),
        "{all}"
    );
}

#[test]
fn device_cpu_says_plain_cpu() {
    let mut args = TRAIN.to_vec();
    args.extend(["8", "--device", "cpu"]);
    let r = ringtrain(&args);
    r.ok();
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("backend cpu f32, "), "{all}");
}

#[test]
fn unknown_device_is_a_config_error() {
    let r = ringtrain(&["train", "--device", "tpu"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    // clap's own message, printed once by the launcher's rank 0.
    assert!(
        r.stderr
            .contains("invalid value 'tpu' for '--device <DEVICE>'")
            && r.stderr.contains("[possible values: auto, cpu, cuda]"),
        "{r:?}"
    );
}

#[test]
fn precision_bf16_on_the_cpu_is_a_clear_error() {
    let mut args = TRAIN.to_vec();
    args.extend(["8", "--device", "auto", "--precision", "bf16"]);
    let r = ringtrain(&args);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains(
            "--precision bf16 needs the CUDA backend; this run uses the CPU (no GPU: RINGTRAIN_NO_GPU is set)"
        ),
        "{r:?}"
    );
}

/// The real probe (no RINGTRAIN_NO_GPU) never panics, whatever the
/// machine has: `info` reports a GPU line either way.
#[test]
fn info_reports_the_gpu_probe() {
    let mut cmd = Command::new(bin());
    cmd.arg("info");
    let r = run_with_timeout(cmd, QUICK);
    r.ok();
    assert!(
        r.stdout.lines().any(|l| l.starts_with("gpu")),
        "{}",
        r.stdout
    );
}

/// Two ranks: every rank exits 2, one message is printed, the one rank
/// gives: with `--comm ring` the device choice says it, with the default
/// (NCCL on several GPU ranks) and `--comm nccl` the GPU is checked before
/// NCCL's set-up, so the message is the same (no usable GPU, and why).
#[cfg(feature = "mpi")]
#[test]
fn device_cuda_without_a_gpu_ends_all_ranks_with_one_message() {
    for (comm, fragment) in [
        (
            "ring",
            "--device cuda: no usable GPU on rank 0 (RINGTRAIN_NO_GPU is set)",
        ),
        (
            "auto",
            "--device cuda: no usable GPU on rank 0 (RINGTRAIN_NO_GPU is set)",
        ),
        (
            "nccl",
            "--device cuda: no usable GPU on rank 0 (RINGTRAIN_NO_GPU is set)",
        ),
    ] {
        let mut cmd = Command::new("mpirun");
        cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
            .args(["--mca", "mpi_yield_when_idle", "1"])
            .args(["-x", "RINGTRAIN_NO_GPU=1"])
            .arg(bin())
            .args(["train", "--steps", "2", "--global-batch", "8"])
            .args(["--device", "cuda", "--comm", comm]);
        let r = run_with_timeout(cmd, QUICK);
        assert_eq!(r.code, Some(2), "{r:?}");
        assert_eq!(r.stderr.matches("ringtrain: error").count(), 1, "{r:?}");
        // With a GPU present NCCL's probe passes and the device choice
        // speaks; where none exists NCCL's set-up, which comes first, does.
        if comm == "ring" || !std::path::Path::new("/dev/nvidiactl").exists() {
            assert_eq!(r.stderr.matches(fragment).count(), 1, "{r:?}");
        }
    }
}
