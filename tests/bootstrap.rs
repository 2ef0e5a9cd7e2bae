//! Starting ranks without MPI (`--bootstrap env`), launch/local.sh, and the
//! launch scripts. Runs in both builds (with and without the `mpi` cargo
//! feature); the few cases that need one of them say so.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Run, root, run_with_timeout, without_launcher_env};

/// Anything here that takes longer has hung.
const HANG: Duration = Duration::from_secs(120);

/// `ringtrain ARGS` with `vars`, alone.
fn ringtrain(vars: &[(&str, &str)], args: &[&str]) -> Run {
    common::alone(vars, args, HANG)
}

/// `launch/local.sh N -- PROGRAM ARGS`.
fn local(n: usize, program: &str, args: &[&str]) -> Run {
    common::local_sh(n, &[], program, args, HANG)
}

fn bin_str() -> String {
    common::bin().to_string_lossy().into_owned()
}

fn local_sh() -> PathBuf {
    root().join("launch/local.sh")
}

#[test]
fn one_rank_with_env_bootstrap_trains_on_cpu() {
    let r = ringtrain(
        &[],
        &[
            "--bootstrap",
            "env",
            "train",
            "--steps",
            "3",
            "--global-batch",
            "8",
        ],
    );
    r.ok();
    assert!(r.stdout.contains("step      3/3"), "{}", r.context());
    // The same with launcher variables that say one rank.
    let r = ringtrain(
        &[("RANK", "0"), ("WORLD_SIZE", "1")],
        &[
            "train",
            "--bootstrap",
            "env",
            "--steps",
            "3",
            "--global-batch",
            "8",
        ],
    );
    r.ok();
    assert!(r.stdout.contains("step      3/3"), "{}", r.context());
}

#[test]
fn info_says_how_the_world_was_started() {
    let r = ringtrain(&[], &["--bootstrap", "env", "info"]);
    r.ok();
    assert!(
        r.stdout
            .contains("world: 1 rank(s), bootstrap env, communicator single"),
        "{}",
        r.context()
    );
    assert!(
        r.stdout.contains("bootstrap: env: no launcher"),
        "{}",
        r.context()
    );
    assert!(r.stdout.contains("rank 0: host"), "{}", r.context());

    // The flag is global: also after the subcommand.
    let r = ringtrain(
        &[("RANK", "0"), ("WORLD_SIZE", "1")],
        &["info", "--bootstrap", "env"],
    );
    r.ok();
    assert!(
        r.stdout
            .contains("bootstrap: env: RANK/WORLD_SIZE from torchrun-style variables"),
        "{}",
        r.context()
    );

    // auto without any launcher: one rank without MPI (a singleton
    // MPI_Init would cost ~0.4 s for nothing); info still names the MPI
    // library the build links.
    let r = ringtrain(&[], &["info"]);
    r.ok();
    let want = if cfg!(feature = "mpi") {
        "bootstrap: auto: built with MPI, but one process and no launcher: no MPI needed"
    } else {
        "bootstrap: auto: built without MPI"
    };
    assert!(r.stdout.contains(want), "{}", r.context());
    assert!(r.stdout.contains("bootstrap env,"), "{}", r.context());
    if cfg!(feature = "mpi") {
        assert!(
            r.stdout
                .contains("mpi library: not initialised (bootstrap env); linked: Open MPI"),
            "{}",
            r.context()
        );
        // OpenMPI's TCP settings for the ring: set, unless the user chose.
        assert!(
            r.stdout.contains(
                "openmpi tcp: btl_tcp_eager_limit, btl_tcp_rndv_eager_limit, \
                 btl_tcp_max_send_size = 524288 B each, set by ringtrain"
            ),
            "{}",
            r.context()
        );
        // A small gradient's messages within a host go without a handshake.
        assert!(
            r.stdout.contains(
                "openmpi shared memory: btl_vader_eager_limit = 32768 B, set by ringtrain"
            ),
            "{}",
            r.context()
        );
        // No probing for a fabric the host lacks: pml = ob1 unless a fabric
        // device is there (CI's host has none) or the user chose.
        assert!(
            r.stdout.contains(
                "openmpi fabric: pml = ob1, set by ringtrain (no fabric device on this host"
            ) || r
                .stdout
                .contains("on this host: OpenMPI chooses its transport"),
            "{}",
            r.context()
        );
        let r = ringtrain(&[("OMPI_MCA_pml", "ucx")], &["info"]);
        r.ok();
        assert!(
            r.stdout.contains(
                "openmpi fabric: OMPI_MCA_pml=ucx set by the user: OpenMPI chooses its transport"
            ),
            "{}",
            r.context()
        );
        let r = ringtrain(&[("OMPI_MCA_btl_vader_eager_limit", "4096")], &["info"]);
        r.ok();
        assert!(
            r.stdout.contains(
                "openmpi shared memory: OMPI_MCA_btl_vader_eager_limit=4096 set by the user: \
                 OpenMPI's shared-memory settings left alone"
            ),
            "{}",
            r.context()
        );
        let r = ringtrain(&[("OMPI_MCA_btl_tcp_max_send_size", "131072")], &["info"]);
        r.ok();
        assert!(
            r.stdout.contains(
                "openmpi tcp: OMPI_MCA_btl_tcp_max_send_size=131072 set by the user: \
                 OpenMPI's TCP settings left alone"
            ),
            "{}",
            r.context()
        );
    }
    // Every backend and precision this build has.
    assert!(
        r.stdout
            .contains("backends: cpu (f32, reference), cuda (f32, bf16 with --precision bf16"),
        "{}",
        r.context()
    );
}

#[test]
fn local_sh_starts_ranks_with_prefixed_output() {
    let r = local(2, &bin_str(), &["--bootstrap", "env", "info"]);
    r.ok();
    for rank in 0..2 {
        assert!(
            r.stdout
                .contains(&format!("[rank {rank}] rank {rank}: host")),
            "{}",
            r.context()
        );
        assert!(
            r.stdout
                .contains(&format!("local rank {rank} of 2, world size 2")),
            "{}",
            r.context()
        );
    }
    assert!(
        r.stdout
            .contains("[rank 0] world: 2 rank(s), bootstrap env"),
        "{}",
        r.context()
    );
    // A fresh run id and rendezvous directory, the same on both ranks.
    assert!(
        r.stdout.contains("[rank 0] rendezvous: /"),
        "{}",
        r.context()
    );
    // The header is rank 0's alone.
    assert_eq!(
        r.stdout.matches("world: 2 rank(s)").count(),
        1,
        "{}",
        r.context()
    );
    // Every line carries its rank.
    assert!(
        r.stdout
            .lines()
            .all(|l| l.starts_with("[rank 0] ") || l.starts_with("[rank 1] ")),
        "{}",
        r.context()
    );

    // --bootstrap auto picks env under local.sh in either build (an MPI
    // singleton per process would be two worlds of one rank).
    let r = local(2, &bin_str(), &["info"]);
    r.ok();
    assert!(
        r.stdout
            .contains("[rank 0] world: 2 rank(s), bootstrap env"),
        "{}",
        r.context()
    );
    assert!(
        r.stdout.contains("[rank 1] rank 1: host"),
        "{}",
        r.context()
    );
}

#[test]
fn more_than_one_rank_on_cpu_without_mpi_is_refused_once() {
    let r = local(
        2,
        &bin_str(),
        &["--bootstrap", "env", "train", "--steps", "3"],
    );
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert!(r.elapsed < Duration::from_secs(30), "{}", r.context());
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("ringtrain: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one message, from rank 0\n{}", r.context());
    let msg = lines[0];
    assert!(
        msg.starts_with("[rank 0] ringtrain: error: "),
        "{}",
        r.context()
    );
    assert!(msg.contains("2 ranks were started without MPI"), "{msg}");
    assert!(msg.contains("mpirun"), "{msg}");
    if !cfg!(feature = "mpi") {
        assert!(msg.contains("libopenmpi-dev"), "{msg}");
        assert!(msg.contains("default features"), "{msg}");
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.context());
    assert!(!r.stdout.contains("step"), "{}", r.context());

    // Each rank alone, as launched by hand: the same, printed by rank 0
    // only; every rank exits 2.
    for rank in ["0", "1"] {
        let r = ringtrain(
            &[
                ("RANK", rank),
                ("WORLD_SIZE", "2"),
                ("RINGTRAIN_RUN_ID", "t"),
            ],
            &["--bootstrap", "env", "train", "--steps", "3"],
        );
        assert_eq!(r.code, Some(2), "{}", r.context());
        let printed = r.stderr.contains("2 ranks were started without MPI");
        assert_eq!(printed, rank == "0", "rank {rank}\n{}", r.context());
    }
}

#[test]
fn a_failing_rank_stops_the_others() {
    let r = local(
        2,
        "bash",
        &[
            "-c",
            r#"echo "hello from $RANK"; if [ "$RANK" = 1 ]; then exit 3; fi; sleep 60"#,
        ],
    );
    assert_eq!(r.code, Some(3), "{}", r.context());
    assert!(
        r.elapsed < Duration::from_secs(20),
        "the other rank was not stopped\n{}",
        r.context()
    );
    assert!(
        r.stdout.contains("[rank 0] hello from 0"),
        "{}",
        r.context()
    );
    assert!(
        r.stdout.contains("[rank 1] hello from 1"),
        "{}",
        r.context()
    );
    assert!(
        r.stderr.contains("rank 1 exited with status 3"),
        "{}",
        r.context()
    );

    // All succeed: 0; the environment is each rank's own.
    let r = local(
        3,
        "bash",
        &[
            "-c",
            r#"echo "$RANK/$WORLD_SIZE local $LOCAL_RANK/$LOCAL_WORLD_SIZE run ${RINGTRAIN_RUN_ID:+set} dir $([ -d "$RINGTRAIN_RENDEZVOUS" ] && echo ok)"; echo "to stderr" >&2"#,
        ],
    );
    r.ok();
    for rank in 0..3 {
        assert!(
            r.stdout.contains(&format!(
                "[rank {rank}] {rank}/3 local {rank}/3 run set dir ok"
            )),
            "{}",
            r.context()
        );
        assert!(
            r.stderr.contains(&format!("[rank {rank}] to stderr")),
            "{}",
            r.context()
        );
    }
}

#[test]
fn usage_errors_are_printed_by_rank_0_only() {
    let r = ringtrain(&[("RANK", "1"), ("WORLD_SIZE", "2")], &["--no-such-flag"]);
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert!(
        r.stderr.is_empty() && r.stdout.is_empty(),
        "{}",
        r.context()
    );
    let r = ringtrain(&[("RANK", "0"), ("WORLD_SIZE", "2")], &["--no-such-flag"]);
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert!(r.stderr.starts_with("error:"), "{}", r.context());
    let r = ringtrain(&[], &["info", "--bootstrap", "sometimes"]);
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert!(r.stderr.contains("sometimes"), "{}", r.context());
    // --help needs no MPI and no launcher.
    let r = ringtrain(&[], &["--help"]);
    r.ok();
    assert!(r.stdout.contains("--bootstrap"), "{}", r.context());
    assert!(r.stdout.contains("--rendezvous-timeout"), "{}", r.context());
}

#[test]
fn inconsistent_launcher_variables_are_user_errors() {
    for (vars, fragment) in [
        (
            &[("RANK", "2"), ("WORLD_SIZE", "2")][..],
            "rank 2 of a world of 2",
        ),
        (&[("RANK", "one"), ("WORLD_SIZE", "2")][..], "RANK=\"one\""),
        (&[("RANK", "0")][..], "WORLD_SIZE is not"),
        (
            &[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "x")][..],
            "SLURM_NTASKS",
        ),
        // Two ranks need a run id (no launcher set one here).
        (
            &[("RANK", "0"), ("WORLD_SIZE", "2")][..],
            "RINGTRAIN_RUN_ID",
        ),
    ] {
        let r = ringtrain(vars, &["--bootstrap", "env", "info"]);
        assert_eq!(r.code, Some(2), "{vars:?}\n{}", r.context());
        assert!(
            r.stderr.starts_with("ringtrain: error: bootstrap env: ")
                && r.stderr.contains(fragment),
            "{vars:?}: want {fragment:?}\n{}",
            r.context()
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.context());
    }
}

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_bootstrap_in_a_build_without_mpi_is_refused() {
    let r = ringtrain(&[], &["--bootstrap", "mpi", "info"]);
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert!(r.stderr.contains("built without MPI"), "{}", r.context());
    assert!(r.stderr.contains("libopenmpi-dev"), "{}", r.context());
}

#[cfg(feature = "mpi")]
#[test]
fn mpirun_starts_an_mpi_world_unless_told_otherwise() {
    let r = common::mpirun_timeout(2, &["info"], HANG);
    r.ok();
    assert!(
        r.stdout
            .contains("world: 2 rank(s), bootstrap mpi, communicator mpi"),
        "{}",
        r.context()
    );
    assert!(
        r.stdout
            .contains("bootstrap: auto: built with MPI, started by an MPI launcher"),
        "{}",
        r.context()
    );
    // --bootstrap env under mpirun: OpenMPI's variables, MPI untouched.
    let r = common::mpirun_timeout(2, &["--bootstrap", "env", "info"], HANG);
    r.ok();
    assert!(
        r.stdout
            .contains("bootstrap: env: OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE from OpenMPI's"),
        "{}",
        r.context()
    );
    assert!(r.stdout.contains("rank 1: host"), "{}", r.context());

    // --bootstrap mpi where MPI did not start the ranks: refused (rank 0
    // says why), not two separate one-rank worlds.
    let r = local(2, &bin_str(), &["--bootstrap", "mpi", "info"]);
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert_eq!(
        r.stderr.matches("MPI did not start them").count(),
        1,
        "{}",
        r.context()
    );
    assert!(!r.stdout.contains("world:"), "{}", r.context());
}

#[test]
fn launch_scripts_parse_and_explain_themselves() {
    let launch = root().join("launch");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&launch)
        .expect("launch/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh" || e == "sbatch"))
        .collect();
    scripts.sort();
    assert!(
        scripts.iter().any(|p| p.ends_with("slurm.sbatch")),
        "{scripts:?}"
    );
    assert!(
        scripts.iter().any(|p| p.ends_with("local.sh")),
        "{scripts:?}"
    );
    for s in &scripts {
        let mut cmd = Command::new("bash");
        cmd.arg("-n").arg(s);
        let r = run_with_timeout(cmd, HANG);
        assert_eq!(r.code, Some(0), "bash -n {}\n{}", s.display(), r.context());
    }
    for (script, fragment) in [
        ("slurm.sbatch", "LAUNCH picks how the ranks start"),
        ("slurm.sbatch", "NCCL_SOCKET_IFNAME"),
        ("local.sh", "Usage: launch/local.sh N"),
    ] {
        let mut cmd = without_launcher_env(Command::new("bash"));
        cmd.arg(launch.join(script)).arg("--help");
        let r = run_with_timeout(cmd, HANG);
        r.ok();
        assert!(
            r.stdout.contains(fragment),
            "{script} --help\n{}",
            r.context()
        );
        assert!(
            !r.stdout.lines().any(|l| l.starts_with('#')),
            "{script} --help\n{}",
            r.context()
        );
    }
    // Misuse is an error with a message, not a hang.
    for args in [
        &["0", "--", "true"][..],
        &["2"][..],
        &["x", "--", "true"][..],
    ] {
        let mut cmd = without_launcher_env(Command::new("bash"));
        cmd.arg(local_sh()).args(args);
        let r = run_with_timeout(cmd, HANG);
        assert_eq!(r.code, Some(2), "local.sh {args:?}\n{}", r.context());
        assert!(r.stderr.contains("local.sh"), "{}", r.context());
    }
}
