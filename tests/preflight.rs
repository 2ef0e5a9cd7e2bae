//! What can be checked before training is checked before training, with
//! one message and exit 2, and without the allocation or the work that
//! would have failed: absurd model sizes (from a flag or a tasks.toml),
//! `--init` of something that is not a model file, outputs that cannot be
//! written.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Run, bin, run_with_timeout};

/// A run that ends with a user error is killed (and the test fails as
/// "hung") after this.
const HANG: Duration = Duration::from_secs(120);

/// `mpirun -np 2 ringtrain ARGS` under an address-space limit of 3 GB per
/// process, so any attempt to allocate a huge model or read a huge file
/// into memory would abort instead of ending with exit 2.
fn capped(args: &[&str]) -> Run {
    let mut cmd = Command::new("prlimit");
    cmd.arg("--as=3000000000")
        .arg("--")
        .args([
            "mpirun",
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
        ])
        .args(["--mca", "mpi_yield_when_idle", "1"])
        .arg(bin())
        .args(args);
    run_with_timeout(cmd, HANG)
}

const SHORT: &[&str] = &["train", "--steps", "2", "--eval-every", "0"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    SHORT.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn a_huge_hidden_layer_is_refused_before_allocating() {
    capped(&args(&["--hidden", "100000,100000"])).one_error(2, "--hidden (now 100000,100000)");
}

#[test]
fn huge_classes_in_tasks_toml_are_refused_before_allocating() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let data = data.to_str().unwrap();
    common::single(&[
        "data", "synth", "--out", data, "--train", "512", "--val", "64",
    ])
    .ok();
    let toml = Path::new(data).join("tasks.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("classes = 4"), "{text}");
    std::fs::write(
        &toml,
        text.replace("classes = 4", "classes = 10000000000000"),
    )
    .unwrap();
    capped(&args(&["--data", data])).one_error(2, "classes in tasks.toml");
}

#[test]
fn init_from_a_large_file_that_is_not_safetensors_reads_only_its_header() {
    let d = tempfile::tempdir().unwrap();
    // Larger than the address-space cap, and sparse: no disk used.
    let f = d.path().join("zeros.bin");
    std::fs::File::create(&f).unwrap().set_len(4 << 30).unwrap();
    capped(&args(&["--init", f.to_str().unwrap()])).one_error(2, "not a valid safetensors file");
    capped(&args(&["--init", "/dev/zero"])).one_error(2, "not a regular file");
}

/// A directory no process of this test can create files in: read-only
/// permissions, and for root (which ignores them) a read-only tmpfs
/// mounted over it. None where neither is possible.
struct ReadOnlyDir {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl ReadOnlyDir {
    fn new() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut mounted = false;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=1m", "ringtrain-test"])
                .arg(dir.path())
                .status();
            if !st.is_ok_and(|s| s.success()) {
                return None;
            }
            mounted = true;
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        // Really unwritable?
        if std::fs::write(dir.path().join("probe"), b"x").is_ok() {
            return None;
        }
        Some(ReadOnlyDir { dir, mounted })
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

#[test]
fn save_into_a_read_only_directory_is_refused_before_the_first_step() {
    let Some(ro) = ReadOnlyDir::new() else {
        println!(
            "skipped: cannot make a read-only directory here (not root, and chmod is ignored)"
        );
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let metrics = out.path().join("metrics.jsonl");
    let save = ro.dir.path().join("model.safetensors");
    let r = capped(&args(&[
        "--save",
        save.to_str().unwrap(),
        "--metrics-out",
        metrics.to_str().unwrap(),
    ]));
    r.one_error(2, "--save");
    assert!(r.stderr.contains("cannot write there"), "{}", r.context());
    // Found before training: not one record written.
    assert!(
        !metrics.exists(),
        "metrics written before the check\n{}",
        r.context()
    );
}

#[test]
fn a_checkpoint_dir_that_cannot_be_created_is_refused_before_the_first_step() {
    let out = tempfile::tempdir().unwrap();
    // Its parent is a file: no directory can ever be made there.
    let file = out.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let ckpt = file.join("ckpt");
    let metrics = out.path().join("metrics.jsonl");
    let r = capped(&args(&[
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
        "--metrics-out",
        metrics.to_str().unwrap(),
    ]));
    r.one_error(2, "--checkpoint-dir");
    assert!(!metrics.exists(), "{}", r.context());
}

#[test]
fn a_csv_file_without_newlines_is_one_error_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let data = data.to_str().unwrap();
    common::single(&[
        "data", "synth", "--out", data, "--format", "csv", "--train", "512", "--val", "64",
    ])
    .ok();
    // 4 GiB of NUL bytes (sparse: no disk used), larger than the cap: one
    // "header line" that must not be kept, nor read to its end.
    let f = std::fs::File::create(Path::new(data).join("train.csv")).unwrap();
    f.set_len(4 << 30).unwrap();
    capped(&args(&["--data", data])).one_error(2, "line 1 is longer than 16 MiB");
}

#[test]
fn a_npy_header_of_nested_brackets_is_one_error_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let data = data.to_str().unwrap();
    common::single(&[
        "data", "synth", "--out", data, "--train", "512", "--val", "64",
    ])
    .ok();
    // A version-2 header (4-byte length) of 200,000 nested brackets.
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}1{}, }}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    std::fs::write(Path::new(data).join("train/x.npy"), bytes).unwrap();
    capped(&args(&["--data", data])).one_error(2, "deeper than 8 levels");
}

#[test]
fn outputs_replace_a_symbolic_link_and_never_write_through_it() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    let save = d.path().join("model.safetensors");
    let metrics = d.path().join("metrics.jsonl");
    for link in [&save, &metrics] {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    common::single(&args(&[
        "--save",
        save.to_str().unwrap(),
        "--metrics-out",
        metrics.to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    for out in [&save, &metrics] {
        let m = std::fs::symlink_metadata(out).unwrap();
        assert!(m.file_type().is_file(), "{out:?} is still a link");
    }
    // Nothing else was left beside them (no temporaries, no probes).
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 3);
}
