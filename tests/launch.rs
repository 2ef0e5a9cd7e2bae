//! The launch scripts: every one parses (`bash -n`) and prints its
//! `--help`; the single-node mpirun script trains end to end; the Slurm
//! script runs its mpirun-in-the-allocation path outside Slurm (mpirun
//! then uses this node); the resume loop retries a failing command.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Run, run_with_timeout, tempdir};

fn launch_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("launch")
}

fn script(name: &str) -> PathBuf {
    launch_dir().join(name)
}

/// `bash SCRIPT ARGS...` with extra environment, under a deadline.
fn bash(name: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Run {
    let mut cmd = Command::new("bash");
    cmd.arg(script(name)).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, timeout)
}

fn quick(name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    bash(name, args, env, Duration::from_secs(30))
}

fn scripts() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(launch_dir())
        .expect("list launch/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh") || n.ends_with(".sbatch"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_script_parses_and_has_help() {
    let names = scripts();
    for want in ["mpirun.sh", "resume-loop.sh", "slurm.sbatch", "local.sh"] {
        assert!(names.iter().any(|n| n == want), "launch/{want} missing");
    }
    for name in &names {
        let mut cmd = Command::new("bash");
        cmd.arg("-n").arg(script(name));
        let syntax = run_with_timeout(cmd, Duration::from_secs(30));
        assert_eq!(syntax.code, Some(0), "bash -n {name}: {}", syntax.stderr);
        // --help must work without Slurm, MPI or a build.
        let help = quick(name, &["--help"], &[("SLURM_JOB_ID", "")]);
        assert_eq!(help.code, Some(0), "{name} --help: {help:?}");
        assert!(
            help.stdout.contains("Usage"),
            "{name} --help prints no usage: {}",
            help.stdout
        );
    }
}

#[test]
fn slurm_script_outside_slurm_refuses_to_run() {
    let r = quick("slurm.sbatch", &["train"], &[("SLURM_JOB_ID", "")]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("not inside a Slurm job"), "{r:?}");
    let help = quick("slurm.sbatch", &["--help"], &[]);
    for knob in [
        "NCCL_DEBUG",
        "NCCL_SOCKET_IFNAME",
        "NCCL_IB_DISABLE",
        "OMPI_MCA_btl",
        "RESUME_DIR",
    ] {
        assert!(help.stdout.contains(knob), "--help mentions {knob}");
    }
}

#[test]
fn mpirun_script_chooses_binding() {
    let dry = |np: &str, extra: &[&str]| {
        let args = [&["--dry-run", "-np", np], extra].concat();
        let r = quick("mpirun.sh", &args, &[]);
        assert_eq!(r.code, Some(0), "{r:?}");
        r.stderr
    };
    let one = dry("1", &[]);
    assert!(one.contains("--bind-to core --map-by core"), "{one}");
    assert!(
        one.contains(" train") && !one.contains("--oversubscribe"),
        "{one}"
    );
    let many = dry("4096", &["info"]);
    assert!(many.contains("--oversubscribe --bind-to none"), "{many}");
    let bad = quick("mpirun.sh", &["-np", "zero"], &[]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let threads = quick(
        "mpirun.sh",
        &["--dry-run", "-np", "1", "train", "--threads", "x"],
        &[],
    );
    assert_eq!(threads.code, Some(2), "{threads:?}");
}

#[cfg(feature = "mpi")]
#[test]
fn mpirun_script_trains_with_two_ranks() {
    let bin = common::bin();
    let r = bash(
        "mpirun.sh",
        &[
            "-np",
            "2",
            "train",
            "--steps",
            "3",
            "--global-batch",
            "16",
            "--hidden",
            "8",
        ],
        &[("RINGTRAIN_BIN", bin.to_str().expect("UTF-8 path"))],
        Duration::from_secs(300),
    );
    r.ok();
    assert!(r.stdout.contains("2 rank(s) via"), "{}", r.stdout);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("eval")),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("mpirun.sh: 2 rank(s)"), "{}", r.stderr);
}

/// LAUNCH=mpirun as Slurm would run it (SLURM_* set by hand): mpirun
/// starts the ranks on this node.
#[cfg(feature = "mpi")]
#[test]
fn slurm_script_mpirun_path_runs_outside_slurm() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        println!("skipped: binding 2 ranks to cores needs 2 cores, this machine has {cores}");
        return;
    }
    let bin = common::bin();
    let repo = env!("CARGO_MANIFEST_DIR");
    let r = bash(
        "slurm.sbatch",
        &["info"],
        &[
            ("LAUNCH", "mpirun"),
            ("SLURM_JOB_ID", "4242"),
            ("SLURM_JOB_NODELIST", "localhost"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_CPUS_PER_TASK", "1"),
            ("SLURM_SUBMIT_DIR", repo),
            ("RINGTRAIN_BIN", bin.to_str().expect("UTF-8 path")),
            ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
            ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
        ],
        Duration::from_secs(120),
    );
    r.ok();
    assert!(r.stderr.contains("launch mpirun"), "{}", r.stderr);
    assert!(r.stdout.contains("rank 1"), "{}", r.stdout);
}

/// A command that fails `fails` times, then succeeds; it logs its
/// arguments, one line per attempt.
/// What ringtrain does at the end of a finished run: `FINISHED` in the
/// `--checkpoint-dir` (resume-loop.sh calls exit 0 without it "stopped").
const FAKE_FINISHED: &str = "while [ $# -gt 0 ]; do \
     if [ \"$1\" = --checkpoint-dir ]; then touch \"$2/FINISHED\"; fi; shift; done\n";

fn fake_command(dir: &Path, fails: u32, code: u32) -> PathBuf {
    let path = dir.join("fake.sh");
    let text = format!(
        "#!/usr/bin/env bash\n\
         state={state}\n\
         n=$(cat \"$state\" 2>/dev/null || echo 0); n=$((n + 1)); echo \"$n\" >\"$state\"\n\
         echo \"$*\" >>{log}\n\
         [ \"$n\" -gt {fails} ] || exit {code}\n\
         {finished}",
        state = dir.join("count").display(),
        log = dir.join("log").display(),
        finished = FAKE_FINISHED,
    );
    std::fs::write(&path, text).expect("write fake command");
    path
}

fn attempts(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn resume_loop_retries_until_the_run_is_done() {
    let tmp = tempdir("resume-loop");
    let dir = tmp.path();
    let ckpt = dir.join("ckpt");
    let fake = fake_command(dir, 2, 1);
    let (f, c) = (fake.to_str().unwrap(), ckpt.to_str().unwrap());
    let r = quick(
        "resume-loop.sh",
        &[
            "--checkpoint-dir",
            c,
            "--delay",
            "0",
            "--",
            "bash",
            f,
            "train",
            "--steps",
            "9",
        ],
        &[],
    );
    r.ok();
    let want = format!("train --steps 9 --checkpoint-dir {c} --resume auto");
    assert_eq!(attempts(dir), [want.clone(), want.clone(), want], "{r:?}");
    assert!(ckpt.is_dir(), "the checkpoint directory is created");
    assert!(r.stderr.contains("done after 3 attempt(s)"), "{}", r.stderr);

    // Gives up after --max-attempts, with the last status.
    let dir2_tmp = tempdir("resume-loop-give-up");
    let dir2 = dir2_tmp.path();
    let fake = fake_command(dir2, 5, 3);
    let r = quick(
        "resume-loop.sh",
        &[
            "--checkpoint-dir",
            c,
            "--delay",
            "0",
            "--max-attempts",
            "2",
            "--",
            "bash",
            fake.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(3), "{r:?}");
    assert_eq!(attempts(dir2).len(), 2);

    // A user error (exit 2) is not retried; neither is NaN/Inf (exit 4):
    // a resumed run would meet it again.
    for (tag, code) in [("user-error", 2u32), ("nonfinite", 4)] {
        let tmp = tempdir(&format!("resume-loop-{tag}"));
        let dir = tmp.path();
        let fake = fake_command(dir, 5, code);
        let f = fake.to_str().unwrap();
        let args = ["--checkpoint-dir", c, "--delay", "0", "--", "bash", f];
        let r = quick("resume-loop.sh", &args, &[]);
        assert_eq!(r.code, Some(code as i32), "{r:?}");
        assert_eq!(attempts(dir).len(), 1, "exit {code} is not retried");
    }

    // No command, or no --checkpoint-dir: a usage error.
    assert_eq!(
        quick("resume-loop.sh", &["--checkpoint-dir", c], &[]).code,
        Some(2)
    );
    assert_eq!(quick("resume-loop.sh", &["--", "true"], &[]).code, Some(2));
}

/// SIGUSR1 (Slurm's warning before the time limit) stops the command and
/// ends the loop without a retry; outside Slurm with status 138.
#[test]
fn resume_loop_stops_on_usr1() {
    let tmp = tempdir("resume-loop-usr1");
    let dir = tmp.path();
    let c = dir.join("ckpt");
    let started = dir.join("started");
    let mut child = Command::new("bash")
        .arg(script("resume-loop.sh"))
        .args(["--checkpoint-dir", c.to_str().unwrap(), "--"])
        .args(["bash", "-c", "touch \"$0\"; sleep 60"])
        .arg(&started)
        .env_remove("SLURM_JOB_ID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start resume-loop.sh");
    // The command runs only after the loop has set its traps.
    let start = std::time::Instant::now();
    while !started.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "resume-loop.sh ignored SIGUSR1"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(138));
}

/// The srun paths of the Slurm script, with a fake `srun` on PATH that
/// records its arguments and environment: `--mpi=pmix` / `--mpi=none`,
/// the bootstrap flag, a fresh RINGTRAIN_RUN_ID per run step (env), and
/// RESUME_DIR wrapping the step in resume-loop.sh.
#[test]
fn slurm_script_srun_paths_with_a_fake_srun() {
    let tmp = tempdir("fake-srun");
    let dir = tmp.path();
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let log = dir.join("srun.log");
    let srun = bin_dir.join("srun");
    std::fs::write(
        &srun,
        format!(
            "#!/usr/bin/env bash\n\
             echo \"args: $* | run id: ${{RINGTRAIN_RUN_ID:-}} | rendezvous: ${{RINGTRAIN_RENDEZVOUS:-}}\" >>{}\n\
             {FAKE_FINISHED}",
            log.display()
        ),
    )
    .expect("write fake srun");
    let mut perms = std::fs::metadata(&srun).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&srun, perms).expect("chmod");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let fake_bin = dir.join("ringtrain");
    std::fs::write(&fake_bin, "").expect("touch");
    let mut perms = std::fs::metadata(&fake_bin).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake_bin, perms).expect("chmod");
    let repo = env!("CARGO_MANIFEST_DIR");
    let ckpt = dir.join("ckpt");
    let run = |launch: &str, resume: &str| {
        let _ = std::fs::remove_file(&log);
        let r = quick(
            "slurm.sbatch",
            &["train", "--steps", "5"],
            &[
                ("PATH", &path),
                ("LAUNCH", launch),
                ("RESUME_DIR", resume),
                ("SLURM_JOB_ID", "77"),
                ("SLURM_JOB_NODELIST", "node[1-2]"),
                ("SLURM_SUBMIT_DIR", repo),
                ("RDZV_ROOT", dir.join("rdzv").to_str().expect("UTF-8")),
                ("RINGTRAIN_BIN", fake_bin.to_str().expect("UTF-8")),
            ],
        );
        r.ok();
        std::fs::read_to_string(&log).unwrap_or_default()
    };
    let b = fake_bin.display();
    let pmix = run("pmix", "");
    assert!(
        pmix.starts_with("args: --mpi=pmix --kill-on-bad-exit=1 --cpu-bind=cores ")
            && pmix.contains(&format!("{b} --bootstrap mpi train --steps 5 |")),
        "{pmix}"
    );
    let env = run("env", "");
    assert!(
        env.starts_with("args: --mpi=none ")
            && env.contains(&format!("{b} --bootstrap env train --steps 5 |"))
            && env.contains("run id: 77.")
            && env.contains("rdzv/77"),
        "{env}"
    );
    let resumed = run("env", ckpt.to_str().expect("UTF-8"));
    let want = format!(
        "{b} --bootstrap env train --steps 5 --checkpoint-dir {} --resume auto |",
        ckpt.display()
    );
    assert!(
        resumed.contains(&want) && resumed.contains("run id: 77."),
        "{resumed}"
    );
    assert!(
        !dir.join("rdzv/77").exists(),
        "the rendezvous directory is removed"
    );
}
