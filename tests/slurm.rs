//! launch/slurm.sbatch under a real Slurm (launch/sim-slurm.sh: slurmctld
//! on a login host, one slurmd per simulated host, munge), 2 nodes x 2
//! ranks: `srun --mpi=pmix`, mpirun inside the allocation, and a job that
//! is sent SIGUSR1, requeued and resumed from its checkpoint.
//!
//! A custom harness (Cargo.toml: `harness = false`, tests/sim): without
//! network namespaces, or where Slurm cannot be installed, every test
//! prints "skipped: ..." and is reported *ignored*, never passed. Job
//! files live under target/ (each simulated node has a /tmp of its own).
//! The time bounds only catch hangs.

mod common;
mod libtest_args;
mod sim;

#[cfg(feature = "mpi")]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use super::common::read_params;
    use super::sim::{Cluster, Skip};

    const ROOT_OK: [(&str, &str); 2] = [
        ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
        ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
    ];

    /// A fresh directory every node sees (not /tmp).
    fn jobdir(name: &str) -> PathBuf {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("slurm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create job dir");
        d
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 path")
    }

    /// `sbatch -N 2 --wait` of launch/slurm.sbatch with `launch`; the
    /// job's output.
    fn batch(
        c: &Cluster,
        dir: &Path,
        launch: &str,
        extra_env: &[(&str, &str)],
        args: &[&str],
    ) -> String {
        let out = dir.join(format!("{launch}.out"));
        let output = format!("--output={}", s(&out));
        let mut cmd = vec![
            "sbatch",
            "-N",
            "2",
            "--wait",
            output.as_str(),
            "launch/slurm.sbatch",
        ];
        cmd.extend_from_slice(args);
        let mut env = vec![("LAUNCH", launch)];
        env.extend_from_slice(&ROOT_OK);
        env.extend_from_slice(extra_env);
        let r = c.slurm(&cmd, &env, Duration::from_secs(240));
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert_eq!(
            r.code,
            Some(0),
            "LAUNCH={launch}\n{}\n--- job output\n{text}",
            r.context()
        );
        text
    }

    /// A 2-node batch job starts 4 ranks, 2 per node, with srun --mpi=pmix
    /// and with mpirun inside the allocation.
    pub fn two_node_batch_job_with_srun_pmix_and_with_mpirun() -> Result<(), Skip> {
        let c = Cluster::slurm_up(2)?;
        let dir = jobdir("two-node");
        for launch in ["pmix", "mpirun"] {
            let out = batch(&c, &dir, launch, &[], &["info"]);
            assert!(out.contains(&format!("launch {launch}")), "{out}");
            for (rank, host, local) in [(0, 1, 0), (1, 1, 1), (2, 2, 0), (3, 2, 1)] {
                let line = format!(
                    "rank {rank}: host {}, local rank {local} of 2, world size 4",
                    c.host(host)
                );
                assert!(
                    out.contains(&line),
                    "LAUNCH={launch}: {line:?} missing\n{out}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        c.down();
        Ok(())
    }

    const TRAIN: [&str; 11] = [
        "train",
        "--hidden",
        "64,64",
        "--steps",
        "120",
        "--global-batch",
        "64",
        "--eval-every",
        "0",
        "--checkpoint-every",
        "10",
    ];

    /// With RESUME_DIR, a job sent SIGUSR1 (as `--signal=B:USR1@T` would)
    /// is requeued by launch/resume-loop.sh, starts again and resumes from
    /// its checkpoint: the final parameters are bit-identical to those of
    /// an uninterrupted job.
    pub fn requeued_job_resumes_bit_identical() -> Result<(), Skip> {
        let c = Cluster::slurm_up(2)?;
        let dir = jobdir("requeue");

        // The uninterrupted job.
        let reference = dir.join("ref.safetensors");
        let ref_ck = dir.join("ref-ck");
        let mut args = TRAIN.to_vec();
        args.extend(["--save", s(&reference)]);
        let out = batch(&c, &dir, "pmix", &[("RESUME_DIR", s(&ref_ck))], &args);
        assert!(
            out.contains("resume-loop.sh: done after 1 attempt(s)"),
            "{out}"
        );

        // The same job, sent SIGUSR1 once its second checkpoint is written.
        let saved = dir.join("requeued.safetensors");
        let ck = dir.join("ck");
        let log = dir.join("requeued.out");
        let output = format!("--output={}", s(&log));
        let mut args = TRAIN.to_vec();
        args.extend(["--save", s(&saved)]);
        let mut cmd = vec![
            "sbatch",
            "--parsable",
            "-N",
            "2",
            "--requeue",
            "--open-mode=append",
            output.as_str(),
            "launch/slurm.sbatch",
        ];
        cmd.extend_from_slice(&args);
        let mut env = vec![("LAUNCH", "pmix"), ("RESUME_DIR", s(&ck))];
        env.extend_from_slice(&ROOT_OK);
        let r = c.slurm(&cmd, &env, Duration::from_secs(60));
        r.ok();
        let job = r.stdout.trim().split(';').next().unwrap_or("").to_string();
        assert!(job.parse::<u64>().is_ok(), "job id: {}", r.context());

        let start = Instant::now();
        let second = ck.join("step-00000020").join("COMPLETE");
        while !second.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no checkpoint at step 20"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c.slurm(
            &["scancel", "--signal=USR1", "--batch", &job],
            &[],
            Duration::from_secs(30),
        )
        .ok();
        // Requeued (pending), started again, done: squeue forgets it.
        let start = Instant::now();
        loop {
            let q = c.slurm(
                &["squeue", "-h", "-j", &job, "-o", "%T"],
                &[],
                Duration::from_secs(30),
            );
            if q.code == Some(0) && q.stdout.trim().is_empty() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "job {job} still queued: {}\n{}",
                q.stdout,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains(&format!("requeueing Slurm job {job}")),
            "{text}"
        );
        assert!(text.contains("resumed from "), "{text}");
        assert!(text.contains("resume-loop.sh: done"), "{text}");
        assert!(saved.exists(), "no parameters saved\n{text}");
        assert!(
            read_params(&saved) == read_params(&reference),
            "the requeued job's parameters differ from the uninterrupted job's\n{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        c.down();
        Ok(())
    }
}

#[cfg(feature = "mpi")]
fn main() {
    use tests::*;
    sim::harness(&[
        (
            "slurm_two_node_batch_job_with_srun_pmix_and_with_mpirun",
            two_node_batch_job_with_srun_pmix_and_with_mpirun,
        ),
        (
            "slurm_requeued_job_resumes_bit_identical",
            requeued_job_resumes_bit_identical,
        ),
    ]);
}

/// The build without MPI: the jobs need MPI; nothing to run.
#[cfg(not(feature = "mpi"))]
fn main() {
    sim::harness(&[]);
}
