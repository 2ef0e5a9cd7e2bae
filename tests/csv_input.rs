//! CSV datasets through the real binary under `mpirun -np 2`: the same
//! training result as the .npy directory format, and bad files ending
//! every rank with exit code 2 and one message naming file, line, column.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{mpirun, mpirun_timeout, read_params, single, tempdir};

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// `ringtrain data synth --format FORMAT` into `dir`.
fn synth(dir: &Path, format: &str, train: &str, val: &str) {
    single(&[
        "data",
        "synth",
        "--format",
        format,
        "--out",
        s(dir),
        "--train",
        train,
        "--val",
        val,
    ])
    .ok();
}

#[test]
fn csv_trains_exactly_like_the_npy_directory() {
    let tmp = tempdir("csv-vs-npy");
    let dir = tmp.path();
    let (csv, npy) = (dir.join("csv"), dir.join("npy"));
    synth(&csv, "csv", "300", "50");
    synth(&npy, "npy", "300", "50");
    for f in ["tasks.toml", "train.csv", "val.csv"] {
        assert!(
            csv.join(f).is_file(),
            "data synth --format csv wrote no {f}"
        );
    }
    let (a, b) = (dir.join("csv.st"), dir.join("npy.st"));
    let args = |data: &Path, save: &Path| -> Vec<String> {
        [
            "train",
            "--data",
            s(data),
            "--steps",
            "8",
            "--global-batch",
            "40",
            "--hidden",
            "16",
            "--eval-every",
            "4",
            "--save",
            s(save),
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |v: Vec<String>| {
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        let r = mpirun(2, &v);
        r.ok();
        r
    };
    let run_a = run(args(&csv, &a));
    let run_b = run(args(&npy, &b));
    let (pa, pb) = (read_params(&a), read_params(&b));
    assert!(!pa.is_empty() && pa.len() == pb.len());
    assert!(
        pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()),
        "CSV and .npy training must give bit-identical parameters"
    );
    let evals = |o: &str| -> Vec<String> {
        o.lines()
            .filter(|l| l.starts_with("eval"))
            .map(String::from)
            .collect()
    };
    assert_eq!(evals(&run_a.stdout), evals(&run_b.stdout));
    assert_eq!(evals(&run_a.stdout).len(), 2);
    assert!(run_a.stdout.contains("(csv)"), "{}", run_a.stdout);
}

/// A 64-row CSV dataset from `data synth`, for a case to break.
fn csv_dataset(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempdir(&format!("csv-bad-{name}"));
    let dir = tmp.path().join("ds");
    synth(&dir, "csv", "64", "16");
    (tmp, dir)
}

/// Replaces field `col` (0-based) of line `line` (1-based; the header is
/// line 1) of a CSV file.
fn set_field(path: &Path, line: usize, col: usize, value: &str) {
    let text = std::fs::read_to_string(path).expect("read csv");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut fields: Vec<&str> = lines[line - 1].split(',').collect();
    fields[col] = value;
    lines[line - 1] = fields.join(",");
    std::fs::write(path, lines.join("\n") + "\n").expect("write csv");
}

/// Trains on `dir` under 2 ranks and checks: exit 2, quickly, one
/// `ringtrain: error` line carrying `fragment` once, naming `file`.
fn expect_user_error(tmp: &Path, dir: &Path, fragment: &str, file: &str) {
    let save = tmp.join("never.st");
    let args = [
        "train",
        "--data",
        s(dir),
        "--steps",
        "2",
        "--global-batch",
        "16",
        "--hidden",
        "8",
        "--save",
        s(&save),
    ];
    let run = mpirun_timeout(2, &args, Duration::from_secs(90));
    let ctx = format!(
        "exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
        run.code, run.elapsed, run.stdout, run.stderr
    );
    assert_eq!(run.code, Some(2), "{ctx}");
    assert!(run.elapsed < Duration::from_secs(30), "not quick: {ctx}");
    assert_eq!(
        run.stderr.matches(fragment).count(),
        1,
        "{fragment:?}: {ctx}"
    );
    let ours: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("ringtrain: error"))
        .collect();
    assert_eq!(ours.len(), 1, "one message, not one per rank: {ctx}");
    assert!(
        ours[0].contains(file) && ours[0].contains(fragment),
        "{ctx}"
    );
    for bad in ["panicked", "MPI_ABORT", "rank 0: error", "rank 1: error"] {
        assert!(!run.stderr.contains(bad), "{bad}: {ctx}");
    }
    assert!(!save.exists(), "parameters were saved: {ctx}");
}

/// Line 62 holds row 60, which only the last rank checks.
#[test]
fn bad_number_names_line_and_column() {
    let (tmp, dir) = csv_dataset("number");
    set_field(&dir.join("train.csv"), 62, 3, "1.2.3");
    expect_user_error(
        tmp.path(),
        &dir,
        "line 62, column 4 ('x3'): '1.2.3' is not a number",
        "train.csv",
    );
}

#[test]
fn class_label_out_of_range() {
    let (tmp, dir) = csv_dataset("label");
    set_field(&dir.join("val.csv"), 3, 32, "9");
    expect_user_error(
        tmp.path(),
        &dir,
        "line 3, column 33 ('shape'): label 9 out of range for task 'shape' with 4 classes",
        "val.csv",
    );
}

#[test]
fn ragged_row() {
    let (tmp, dir) = csv_dataset("ragged");
    set_field(&dir.join("train.csv"), 10, 5, "1,2");
    expect_user_error(
        tmp.path(),
        &dir,
        "line 10 has 37 fields, but the header has 36",
        "train.csv",
    );
}

#[test]
fn missing_task_column() {
    let (tmp, dir) = csv_dataset("column");
    set_field(&dir.join("train.csv"), 1, 35, "flagg");
    expect_user_error(
        tmp.path(),
        &dir,
        "no column 'flag' (task 'flag') in the header",
        "train.csv",
    );
}

#[test]
fn inputs_pattern_matching_nothing() {
    let (tmp, dir) = csv_dataset("inputs");
    let toml = dir.join("tasks.toml");
    let text = std::fs::read_to_string(&toml).expect("read tasks.toml");
    std::fs::write(
        &toml,
        text.replace("inputs = [\"x*\"]", "inputs = [\"feat*\"]"),
    )
    .expect("write tasks.toml");
    expect_user_error(
        tmp.path(),
        &dir,
        "inputs: 'feat*' (tasks.toml) matches no column",
        "train.csv",
    );
}

#[test]
fn unterminated_quote() {
    let (tmp, dir) = csv_dataset("quote");
    set_field(&dir.join("train.csv"), 40, 7, "\"0.5");
    expect_user_error(
        tmp.path(),
        &dir,
        "line 40: field 8 has an unterminated quote",
        "train.csv",
    );
}
