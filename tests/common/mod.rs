//! Shared helpers for tests that run the real binary, under mpirun.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary: `RINGTRAIN_BIN` when set (test executables carried to a
/// machine without cargo, see benches/gpu.sh), else cargo's.
pub fn bin() -> PathBuf {
    std::env::var_os("RINGTRAIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ringtrain")))
}

/// The repository: `RINGTRAIN_ROOT` when set, else where cargo built.
pub fn root() -> PathBuf {
    std::env::var_os("RINGTRAIN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `cmd` without the launcher variables of the environment the tests run
/// in (a CI job may itself run under Slurm or MPI).
pub fn without_launcher_env(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let launcher = ["SLURM_", "OMPI_COMM_WORLD_", "PMI_", "PMIX_"]
            .iter()
            .any(|p| k.starts_with(p));
        let named = [
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "LOCAL_WORLD_SIZE",
            "RINGTRAIN_RUN_ID",
            "RINGTRAIN_RENDEZVOUS",
            "TORCHELASTIC_RUN_ID",
        ]
        .contains(&k.as_str());
        if launcher || named {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// `ringtrain ARGS` alone (no launcher), with `vars`.
pub fn alone(vars: &[(&str, &str)], args: &[&str], timeout: Duration) -> Run {
    let mut cmd = without_launcher_env(Command::new(bin()));
    cmd.args(args).envs(vars.iter().copied());
    run_with_timeout(cmd, timeout)
}

/// `launch/local.sh N -- PROGRAM ARGS` with `vars`.
pub fn local_sh(
    n: usize,
    vars: &[(&str, &str)],
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Run {
    let mut cmd = without_launcher_env(Command::new("bash"));
    cmd.arg(root().join("launch/local.sh"))
        .arg(n.to_string())
        .arg("--")
        .arg(program)
        .args(args)
        .envs(vars.iter().copied());
    run_with_timeout(cmd, timeout)
}

/// Result of one run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Exit status, time, stdout and stderr, for a failing assertion.
    pub fn context(&self) -> String {
        format!(
            "--- exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "run failed\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Ended with `code` and exactly one `ringtrain: error` line, which
    /// contains `fragment`.
    pub fn one_error(&self, code: i32, fragment: &str) -> &Self {
        let ctx = format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        assert_eq!(self.code, Some(code), "{ctx}");
        assert_eq!(self.stderr.matches("ringtrain: error").count(), 1, "{ctx}");
        assert!(
            self.stderr.contains(fragment),
            "{fragment:?} missing\n{ctx}"
        );
        self
    }
}

/// A fresh empty directory for one test, removed when dropped; with
/// RINGTRAIN_KEEP_TEST_DIRS set in the environment it is kept, for a
/// post-mortem of a failing test.
pub fn tempdir(name: &str) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new()
        .prefix(&format!("ringtrain-test-{name}-"))
        .tempdir()
        .expect("create temp dir");
    d.disable_cleanup(std::env::var_os("RINGTRAIN_KEEP_TEST_DIRS").is_some());
    d
}

/// Runs a command with a deadline; a command still running then is killed
/// and the test fails with "hung" (a hang is a bug, never a slow pass).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (
                t_out.join().unwrap_or_default(),
                t_err.join().unwrap_or_default(),
            );
            panic!("command hung for {timeout:?}: {cmd:?}\n--- stdout\n{o}\n--- stderr\n{e}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// `mpirun -np N ringtrain ARGS...` (as root and oversubscribed where needed).
pub fn mpirun(np: usize, args: &[&str]) -> Run {
    mpirun_timeout(np, args, Duration::from_secs(300))
}

/// [`mpirun`] with its own deadline, for runs that must end quickly (a
/// user error): a hang then fails the test after `timeout`, not 300 s.
pub fn mpirun_timeout(np: usize, args: &[&str], timeout: Duration) -> Run {
    run_with_timeout(mpirun_command(np, args), timeout)
}

/// The command `mpirun -np N ringtrain ARGS...`, not started yet.
pub fn mpirun_command(np: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ])
    // Ranks beyond the core count must yield, or they spin against each other.
    .args(["--mca", "mpi_yield_when_idle", "1"])
    .arg(bin())
    .args(args);
    cmd
}

/// [`mpirun`] with extra environment variables (the fault switches).
pub fn mpirun_env(np: usize, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = mpirun_command(np, args);
    cmd.envs(env.iter().copied());
    run_with_timeout(cmd, Duration::from_secs(120))
}

/// The binary alone (a singleton MPI start).
pub fn single(args: &[&str]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(300))
}

/// Reads the f32 tensors of a safetensors file in file order, concatenated.
pub fn read_params(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("read params");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data = &bytes[8 + n..];
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// `train` with the settings of the short runs the property tests compare
/// (12 steps at global batch 30, a small model, no evaluation), then `extra`.
pub fn short_run<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--steps",
        "12",
        "--global-batch",
        "30",
        "--eval-every",
        "0",
        "--hidden",
        "32,16",
    ];
    args.extend_from_slice(extra);
    args
}
