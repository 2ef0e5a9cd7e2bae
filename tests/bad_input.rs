//! User errors under `mpirun -np 2`: a bad flag, value, file or config
//! ends every rank with exit code 2 and ONE clear message (not one per
//! rank), quickly (no hang), and writes nothing.
//!
//! Each case runs with an existing `--save` file (which must be left
//! byte-identical) and a `--metrics-out` path (which must not be created),
//! unless the case is about one of those flags itself.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::Run;
use tempfile::TempDir;

/// A user error is found before any training step: a run that ends with
/// one takes about a second of its own work (2–4 s with MPI start-up on
/// a loaded 2-core machine). Whether it trained is checked by what it
/// printed and wrote, not by the clock, which a busy machine stretches; a
/// run still going after this is killed and its test fails as "hung"
/// (sooner than `common::mpirun`'s 300 s, which is meant for training).
const HANG: Duration = Duration::from_secs(90);

const RANKS: usize = 2;

/// What the pre-existing `--save` file holds: not parameters, so it also
/// cannot be mistaken for a file written by a run.
const SENTINEL: &[u8] = b"sentinel: this file must survive a failed run unchanged\n";

/// One MPI job at a time: the runs share two cores, and the elapsed-time
/// check should measure a run, not the queue.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Who prints the one message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Msg {
    /// clap's usage error, printed by rank 0 only (`error: ...`).
    Clap,
    /// `ringtrain: error: ...`, printed by one rank after all agreed.
    Ringtrain,
}

/// Runs `mpirun -np 2 ringtrain ARGS` (plus output flags, see the module
/// comment) in a fresh directory and checks it ended as one user error
/// whose message contains `fragment`.
fn expect_user_error(name: &str, args: &[&str], kind: Msg, fragment: &str) -> Run {
    let out_tmp = common::tempdir(&format!("bad-{name}-out"));
    let out = out_tmp.path();
    let save = out.join("existing.safetensors");
    let metrics = out.join("metrics.jsonl");
    std::fs::write(&save, SENTINEL).expect("write sentinel");
    let mut full: Vec<&str> = args.to_vec();
    if !args.contains(&"--save") {
        full.extend(["--save", s(&save)]);
    }
    if !args.contains(&"--metrics-out") {
        full.extend(["--metrics-out", s(&metrics)]);
    }
    let run = {
        let _one = serial();
        common::mpirun_timeout(RANKS, &full, HANG)
    };
    let ctx = format!(
        "case {name}: ringtrain {}\n--- exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
        full.join(" "),
        run.code,
        run.elapsed,
        run.stdout,
        run.stderr
    );

    assert_eq!(run.code, Some(2), "exit code must be 2\n{ctx}");
    assert!(
        !run.stdout.contains("step "),
        "a training step ran before the error\n{ctx}"
    );
    for bad in [
        "panicked",
        "internal error",
        "MPI_ABORT",
        "rank 1: error",
        "rank 0: error",
    ] {
        assert!(!run.stderr.contains(bad), "unexpected {bad:?}\n{ctx}");
    }

    // Exactly one message, naming the problem.
    let hits = run.stderr.matches(fragment).count();
    assert_eq!(
        hits, 1,
        "{fragment:?} must appear exactly once in stderr\n{ctx}"
    );
    let ours: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("ringtrain: error"))
        .collect();
    match kind {
        Msg::Ringtrain => {
            assert_eq!(
                ours.len(),
                1,
                "one `ringtrain: error` line, not one per rank\n{ctx}"
            );
            // The message may go on over a few lines (a TOML error shows
            // the offending line), so the fragment follows the prefix.
            let at = run.stderr.find("ringtrain: error: ").unwrap_or(usize::MAX);
            assert!(
                ours[0].starts_with("ringtrain: error: ")
                    && run.stderr.find(fragment).is_some_and(|f| f > at),
                "the message must carry {fragment:?}\n{ctx}"
            );
        }
        Msg::Clap => {
            assert!(ours.is_empty(), "clap errors are clap's own message\n{ctx}");
            let errors = run
                .stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count();
            assert_eq!(errors, 1, "one clap error, from rank 0 only\n{ctx}");
            assert_eq!(
                run.stderr.matches("Usage:").count(),
                1,
                "one usage line\n{ctx}"
            );
        }
    }

    // Nothing written.
    assert!(!run.stdout.contains("saved parameters"), "{ctx}");
    assert_eq!(
        std::fs::read(&save).ok().as_deref(),
        Some(SENTINEL),
        "the existing --save file was changed or removed\n{ctx}"
    );
    assert!(!metrics.exists(), "--metrics-out file was created\n{ctx}");
    let mut left: Vec<String> = std::fs::read_dir(out)
        .expect("list output dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["existing.safetensors"],
        "files appeared in the output dir\n{ctx}"
    );
    run
}

// ---------------------------------------------------------------- .npy files

/// A NumPy .npy v1.0 file: magic, version 1.0, u16 header length, the
/// header dict padded with spaces and '\n' to a multiple of 64 bytes, data.
fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(
        &u16::try_from(dict.len())
            .expect("short header")
            .to_le_bytes(),
    );
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

fn write_npy_i64(path: &Path, values: &[i64]) {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, npy_bytes("<i8", &[values.len()], &data)).expect("write .npy");
}

/// A small valid dataset directory (64 train, 16 val rows) from
/// `ringtrain data synth`, to be broken by the caller; the directory is
/// `ds` inside the returned temp dir.
fn synth_dataset(name: &str) -> (TempDir, PathBuf) {
    let tmp = common::tempdir(&format!("bad-{name}-data"));
    let dir = tmp.path().join("ds");
    let _one = serial();
    common::single(&[
        "data",
        "synth",
        "--out",
        s(&dir),
        "--train",
        "64",
        "--val",
        "16",
    ])
    .ok();
    for f in ["tasks.toml", "train/x.npy", "train/shape.npy", "val/x.npy"] {
        assert!(dir.join(f).is_file(), "data synth wrote no {f}");
    }
    (tmp, dir)
}

/// Training flags for the 64-row datasets: short, small, batch that fits.
fn data_args(dir: &Path) -> Vec<&str> {
    vec![
        "train",
        "--data",
        s(dir),
        "--steps",
        "2",
        "--global-batch",
        "16",
        "--hidden",
        "8",
    ]
}

// ------------------------------------------------------------ flags, values

#[test]
fn unknown_flag_is_one_clap_error() {
    expect_user_error(
        "flag",
        &["train", "--no-such-flag"],
        Msg::Clap,
        "'--no-such-flag'",
    );
}

#[test]
fn negative_lr() {
    expect_user_error(
        "lr",
        &["train", "--steps", "2", "--lr=-1"],
        Msg::Ringtrain,
        "--lr must be a positive number, got -1",
    );
}

/// `--lr -1` (with a space): clap reads `-1` as a flag, not a value, so this
/// is clap's usage error; still one message from rank 0 and exit code 2.
#[test]
fn negative_lr_as_separate_word() {
    expect_user_error(
        "lr-space",
        &["train", "--steps", "2", "--lr", "-1"],
        Msg::Clap,
        "'-1'",
    );
}

#[test]
fn momentum_out_of_range() {
    expect_user_error(
        "momentum",
        &[
            "train",
            "--steps",
            "2",
            "--optimizer",
            "sgd",
            "--momentum",
            "1.5",
        ],
        Msg::Ringtrain,
        "--momentum must be in [0, 1), got 1.5",
    );
}

#[test]
fn zero_steps() {
    expect_user_error(
        "steps",
        &["train", "--steps", "0"],
        Msg::Ringtrain,
        "--steps must be at least 1",
    );
}

#[test]
fn zero_width_layer() {
    expect_user_error(
        "hidden",
        &["train", "--steps", "2", "--hidden", "0,4"],
        Msg::Ringtrain,
        "--hidden: every layer width must be at least 1",
    );
}

#[test]
fn global_batch_smaller_than_world() {
    expect_user_error(
        "batch",
        &["train", "--steps", "2", "--global-batch", "1"],
        Msg::Ringtrain,
        "--global-batch 1 is smaller than the number of ranks (2)",
    );
}

#[test]
fn task_weight_for_unknown_task() {
    expect_user_error(
        "task-weight",
        &["train", "--steps", "2", "--task-weight", "nosuchtask=1"],
        Msg::Ringtrain,
        "unknown task \"nosuchtask\"",
    );
}

#[test]
fn task_weight_without_value() {
    expect_user_error(
        "task-weight-syntax",
        &["train", "--steps", "2", "--task-weight", "shape"],
        Msg::Ringtrain,
        "expected NAME=WEIGHT",
    );
}

#[test]
fn config_file_with_unknown_key() {
    let tmp = common::tempdir("bad-config");
    let dir = tmp.path();
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, "[train]\nsteps = 2\nstepz = 3\n").expect("write config");
    let run = expect_user_error(
        "config",
        &["train", "--config", s(&cfg)],
        Msg::Ringtrain,
        "unknown field `stepz`",
    );
    assert!(
        run.stderr.contains("run.toml"),
        "the message names the file\n{}",
        run.stderr
    );
}

#[test]
fn config_key_in_the_wrong_table_names_the_right_one() {
    let tmp = common::tempdir("bad-config-table");
    let cfg = tmp.path().join("run.toml");
    std::fs::write(&cfg, "[train]\nsteps = 2\nlr = 0.1\n").expect("write config");
    expect_user_error(
        "config-table",
        &["train", "--config", s(&cfg)],
        Msg::Ringtrain,
        "`lr` belongs in [optim]",
    );
}

#[test]
fn data_that_is_no_dataset_directory_points_to_the_format_and_synth() {
    let tmp = common::tempdir("bad-data-dir");
    let dir = tmp.path();
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for (name, path, what) in [
        ("data-missing", dir.join("nosuchdir"), "no such directory"),
        ("data-no-tasks", empty, "no tasks.toml in it"),
    ] {
        let run = expect_user_error(
            name,
            &["train", "--steps", "2", "--data", s(&path)],
            Msg::Ringtrain,
            &format!("--data {}: {what}", path.display()),
        );
        for pointer in ["docs/data-format.md", "ringtrain data synth --out DIR"] {
            assert!(run.stderr.contains(pointer), "{name}: {}", run.stderr);
        }
    }
}

#[test]
fn np_given_to_ringtrain_hints_at_mpirun() {
    let run = expect_user_error(
        "np",
        &["-np", "2", "train"],
        Msg::Clap,
        "tip: ranks are started by a launcher",
    );
    assert!(
        run.stderr.contains("mpirun -np 4 ringtrain train"),
        "{}",
        run.stderr
    );
}

#[test]
fn device_cuda_on_two_ranks_without_a_gpu_says_so_not_nccl() {
    // The message of one rank (tests/device.rs), once, whatever the
    // machine has: RINGTRAIN_NO_GPU makes every rank GPU-less.
    let _one = serial();
    let args = ["train", "--device", "cuda", "--steps", "2"];
    let run = common::mpirun_env(RANKS, &args, &[("RINGTRAIN_NO_GPU", "1")]);
    let ctx = format!("--- stdout\n{}\n--- stderr\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(2), "{ctx}");
    let want =
        "ringtrain: error: GPU: --device cuda: no usable GPU on rank 0 (RINGTRAIN_NO_GPU is set)";
    assert_eq!(run.stderr.matches(want).count(), 1, "{ctx}");
    assert_eq!(run.stderr.matches("ringtrain: error").count(), 1, "{ctx}");
    assert!(!run.stderr.contains("NCCL"), "{ctx}");
}

#[test]
fn missing_config_file() {
    let tmp = common::tempdir("bad-config-missing");
    let dir = tmp.path();
    let cfg = dir.join("no-such-config.toml");
    expect_user_error(
        "config-missing",
        &["train", "--config", s(&cfg)],
        Msg::Ringtrain,
        "no-such-config.toml",
    );
}

// ----------------------------------------------------------------- outputs

#[test]
fn save_into_missing_directory() {
    let tmp = common::tempdir("bad-save-dir");
    let dir = tmp.path();
    let target = dir.join("no-such-dir").join("model.safetensors");
    expect_user_error(
        "save-dir",
        &["train", "--steps", "2", "--save", s(&target)],
        Msg::Ringtrain,
        "does not exist",
    );
    assert!(
        !dir.join("no-such-dir").exists(),
        "the directory was created"
    );
}

#[test]
fn metrics_out_is_a_directory() {
    let tmp = common::tempdir("bad-metrics-dir");
    let dir = tmp.path();
    let target = dir.join("metrics");
    std::fs::create_dir(&target).expect("mkdir");
    expect_user_error(
        "metrics-dir",
        &["train", "--steps", "2", "--metrics-out", s(&target)],
        Msg::Ringtrain,
        "is a directory",
    );
    assert_eq!(
        std::fs::read_dir(&target).expect("list").count(),
        0,
        "wrote into the directory"
    );
}

// -------------------------------------------------------------------- data

#[test]
fn missing_data_directory() {
    let tmp = common::tempdir("bad-data-missing");
    let dir = tmp.path();
    let missing = dir.join("no-such-dataset");
    expect_user_error(
        "data-missing",
        &["train", "--steps", "2", "--data", s(&missing)],
        Msg::Ringtrain,
        "no-such-dataset",
    );
}

#[test]
fn malformed_inputs_file() {
    let (_tmp, dir) = synth_dataset("garbage");
    std::fs::write(
        dir.join("train/x.npy"),
        b"garbage bytes, certainly not NumPy\x00\x01\x02",
    )
    .expect("write garbage");
    let run = expect_user_error(
        "data-garbage",
        &data_args(&dir),
        Msg::Ringtrain,
        "not a .npy file",
    );
    assert!(
        run.stderr.contains("train/x.npy"),
        "names the file\n{}",
        run.stderr
    );
}

#[test]
fn labels_with_other_row_count() {
    let (_tmp, dir) = synth_dataset("rows");
    write_npy_i64(&dir.join("train/shape.npy"), &[0; 48]);
    let run = expect_user_error(
        "data-rows",
        &data_args(&dir),
        Msg::Ringtrain,
        "has 48 rows, but x.npy beside it has 64",
    );
    assert!(
        run.stderr.contains("train/shape.npy"),
        "names the file\n{}",
        run.stderr
    );
}

/// Row 60 of 64 is in the last rank's slice only (rank 1 checks rows
/// 32..64): the error must still end every rank, with one message.
#[test]
fn class_label_out_of_range_seen_by_last_rank_only() {
    let (_tmp, dir) = synth_dataset("label");
    let mut labels = vec![0i64; 64];
    labels[60] = 7;
    write_npy_i64(&dir.join("train/shape.npy"), &labels);
    let run = expect_user_error(
        "data-label",
        &data_args(&dir),
        Msg::Ringtrain,
        "label 7 at row 60 out of range for task 'shape' with 4 classes",
    );
    assert!(
        run.stderr.contains("train/shape.npy"),
        "names the file\n{}",
        run.stderr
    );
}

/// A NaN in the last element of the training inputs (last rank's slice).
#[test]
fn non_finite_input() {
    let (_tmp, dir) = synth_dataset("nan");
    let path = dir.join("train/x.npy");
    let mut bytes = std::fs::read(&path).expect("read x.npy");
    let header = String::from_utf8_lossy(&bytes[10..bytes.len().min(128)]).into_owned();
    assert!(
        header.contains("'<f4'"),
        "data synth writes float32 inputs: {header}"
    );
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).expect("write x.npy");
    let run = expect_user_error(
        "data-nan",
        &data_args(&dir),
        Msg::Ringtrain,
        "non-finite input NaN at row 63",
    );
    assert!(
        run.stderr.contains("train/x.npy"),
        "names the file\n{}",
        run.stderr
    );
}

// -------------------------------------------------------------------- init

#[test]
fn init_from_missing_file() {
    let tmp = common::tempdir("bad-init-missing");
    let dir = tmp.path();
    let p = dir.join("no-such-init.safetensors");
    expect_user_error(
        "init-missing",
        &["train", "--steps", "2", "--init", s(&p)],
        Msg::Ringtrain,
        "no-such-init.safetensors",
    );
}

#[test]
fn init_from_garbage_file() {
    let tmp = common::tempdir("bad-init-garbage");
    let dir = tmp.path();
    let p = dir.join("garbage.safetensors");
    std::fs::write(
        &p,
        b"\xff\xff\xff\xff\xff\xff\xff\x7fnot safetensors at all",
    )
    .expect("write");
    let run = expect_user_error(
        "init-garbage",
        &["train", "--steps", "2", "--init", s(&p)],
        Msg::Ringtrain,
        "not a valid safetensors file",
    );
    assert!(
        run.stderr.contains("garbage.safetensors"),
        "names the file\n{}",
        run.stderr
    );
}

#[test]
fn init_from_other_architecture() {
    let tmp = common::tempdir("bad-init-arch");
    let dir = tmp.path();
    let a = dir.join("A.safetensors");
    {
        let _one = serial();
        common::single(&["train", "--steps", "2", "--hidden", "8", "--save", s(&a)]).ok();
    }
    assert!(a.is_file(), "the 2-step run saved no parameters");
    let run = expect_user_error(
        "init-arch",
        &["train", "--steps", "2", "--hidden", "16", "--init", s(&a)],
        Msg::Ringtrain,
        "saved model is input",
    );
    assert!(
        run.stderr.contains("A.safetensors")
            && run.stderr.contains("[8]")
            && run.stderr.contains("[16]"),
        "names the file and both architectures\n{}",
        run.stderr
    );
}

#[test]
fn stop_after_without_checkpoint_dir() {
    expect_user_error(
        "stop-after-no-dir",
        &["train", "--steps", "5", "--stop-after", "2"],
        Msg::Ringtrain,
        "--stop-after needs --checkpoint-dir",
    );
}

#[test]
fn stop_after_beyond_the_run() {
    let tmp = common::tempdir("bad-stop-after");
    let dir = tmp.path();
    expect_user_error(
        "stop-after-beyond",
        &[
            "train",
            "--steps",
            "5",
            "--checkpoint-dir",
            s(&dir.join("ck")),
            "--stop-after",
            "6",
        ],
        Msg::Ringtrain,
        "--stop-after 6 must be in 1..=5",
    );
}

#[test]
fn resume_from_missing_checkpoint() {
    let tmp = common::tempdir("bad-resume-missing");
    let dir = tmp.path();
    expect_user_error(
        "resume-missing",
        &["train", "--steps", "5", "--resume", s(&dir.join("nope"))],
        Msg::Ringtrain,
        "no such checkpoint directory",
    );
}

#[test]
fn checkpoint_dir_is_a_file() {
    let tmp = common::tempdir("bad-ckdir-file");
    let dir = tmp.path();
    let f = dir.join("file");
    std::fs::write(&f, b"x").expect("write");
    expect_user_error(
        "ckdir-file",
        &["train", "--steps", "5", "--checkpoint-dir", s(&f)],
        Msg::Ringtrain,
        "exists and is not a directory",
    );
}
