//! Properties of training through the real binary under mpirun:
//! world-size invariance, determinism, and that the model learns.
#![cfg(feature = "mpi")]

mod common;

use common::{mpirun, read_params, rel_diff, short_run, tempdir};

/// A short run at a fixed global batch; returns the saved parameters.
fn train(np: usize, dir: &std::path::Path, tag: &str, extra: &[&str]) -> Vec<f32> {
    let out = dir.join(format!("{tag}.safetensors"));
    let out_s = out.to_str().unwrap();
    let mut args = short_run(&["--save", out_s]);
    args.extend_from_slice(extra);
    mpirun(np, &args).ok();
    read_params(&out)
}

#[test]
fn world_size_invariance_adamw() {
    let tmp = tempdir("wsi-adamw");
    let dir = tmp.path();
    // 30 samples: 2 and 4 ranks split it unequally (15/15, 8/7/8/7).
    let one = train(1, dir, "n1", &[]);
    for np in [2, 3, 4] {
        let many = train(np, dir, &format!("n{np}"), &[]);
        let d = rel_diff(&many, &one);
        eprintln!("{np} ranks vs 1: relative difference {d:e}");
        assert!(d <= 1e-5, "{np} ranks differ from 1 rank: {d:e}");
    }
}

#[test]
fn world_size_invariance_sgd_momentum_with_clipping() {
    let tmp = tempdir("wsi-sgd");
    let dir = tmp.path();
    let extra = [
        "--optimizer",
        "sgd",
        "--momentum",
        "0.9",
        "--lr",
        "0.05",
        "--weight-decay",
        "0.01",
        "--clip-norm",
        "0.5",
        "--activation",
        "tanh",
    ];
    let one = train(1, dir, "n1", &extra);
    for np in [2, 3] {
        let d = rel_diff(&train(np, dir, &format!("n{np}"), &extra), &one);
        eprintln!("{np} ranks vs 1: relative difference {d:e}");
        assert!(d <= 1e-5, "{np} ranks differ from 1 rank: {d:e}");
    }
}

#[test]
fn identical_runs_give_bit_identical_parameters() {
    let tmp = tempdir("determinism");
    let dir = tmp.path();
    let a = train(2, dir, "a", &[]);
    let b = train(2, dir, "b", &[]);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    // And the seed matters.
    let c = train(2, dir, "c", &["--seed", "5"]);
    assert!(rel_diff(&c, &a) > 1e-3);
}

/// Reading each batch during the previous step (`--prefetch on`) or at the
/// start of its own (`off`) feeds the same data: the same parameters, bit
/// for bit, also with micro-batches.
#[test]
fn prefetching_the_next_batch_changes_nothing() {
    let tmp = tempdir("prefetch");
    let dir = tmp.path();
    let extra = ["--accum-steps", "2"];
    let on = train(2, dir, "on", &[&extra[..], &["--prefetch", "on"]].concat());
    let off = train(
        2,
        dir,
        "off",
        &[&extra[..], &["--prefetch", "off"]].concat(),
    );
    assert_eq!(
        on.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        off.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

/// The ring over shared memory (all ranks on one host, the default here)
/// and over MPI messages (`RINGTRAIN_RING_SHM=off`, what ranks on
/// different hosts use) add the same terms in the same order: the same
/// parameters, bit for bit. The model's gradient (over 65,536 floats)
/// spans several shared-memory slots per segment.
#[test]
fn ring_over_shared_memory_and_over_mpi_give_the_same_bits() {
    let tmp = tempdir("ring-transports");
    let dir = tmp.path();
    for (np, wire) in [(2, "f32"), (3, "f32"), (3, "bf16")] {
        let params = |tag: &str, shm: &str| {
            let out = dir.join(format!("{tag}-{np}-{wire}.safetensors"));
            let args = [
                "train",
                "--steps",
                "6",
                "--global-batch",
                "30",
                "--eval-every",
                "0",
                "--hidden",
                "256,256",
                "--comm",
                "ring",
                "--wire",
                wire,
                "--save",
                out.to_str().unwrap(),
            ];
            let mut cmd = common::mpirun_command(np, &args);
            cmd.env("RINGTRAIN_RING_SHM", shm);
            common::run_with_timeout(cmd, std::time::Duration::from_secs(300)).ok();
            read_params(&out)
        };
        let shm = params("shm", "auto");
        let mpi = params("mpi", "off");
        assert!(shm.len() > 65_536, "{}", shm.len());
        assert!(
            shm.iter()
                .zip(&mpi)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{np} ranks, wire {wire}: relative difference {:e}",
            rel_diff(&shm, &mpi)
        );
    }
}

#[test]
fn learns_every_task_beyond_its_trivial_baseline() {
    let tmp = tempdir("learning");
    let dir = tmp.path();
    let metrics = dir.join("m.jsonl");
    mpirun(
        2,
        &[
            "train",
            "--steps",
            "300",
            "--global-batch",
            "128",
            "--eval-every",
            "0",
            "--metrics-out",
            metrics.to_str().unwrap(),
        ],
    )
    .ok();
    let text = std::fs::read_to_string(&metrics).unwrap();
    let eval: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|v| v["type"] == "eval")
        .expect("an eval record");
    let t = &eval["tasks"];
    let f = |task: &str, key: &str| t[task][key].as_f64().unwrap();
    // Majority-class accuracy and the mean predictor (R² = 0) are the baselines.
    assert!(
        f("shape", "accuracy") > f("shape", "baseline_accuracy") + 0.25,
        "{t}"
    );
    assert!(
        f("flag", "accuracy") > f("flag", "baseline_accuracy") + 0.1,
        "{t}"
    );
    assert!(f("flag", "auc") > 0.85, "{t}");
    assert!(f("size", "r2") > 0.5, "{t}");
    // One record per step plus the final evaluation.
    let train_lines = text
        .lines()
        .filter(|l| l.contains("\"type\":\"train\""))
        .count();
    assert_eq!(train_lines, 300);
    // The run record (the overlap chosen) comes first, then the steps.
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0]["type"], "run", "{}", records[0]);
    assert!(records[0]["overlap"].is_boolean(), "{}", records[0]);
    let first = &records[1];
    for key in [
        "step",
        "loss",
        "lr",
        "grad_norm",
        "step_time_s",
        "comm_time_s",
        "allreduce_time_s",
        "exposed_allreduce_s",
        "samples_per_s",
    ] {
        assert!(first[key].is_number(), "train record lacks {key}: {first}");
    }
    for task in ["shape", "size", "flag"] {
        assert!(first["losses"][task].is_number(), "{first}");
    }
}

#[test]
fn a_panic_on_one_rank_ends_the_whole_job() {
    let mut cmd = std::process::Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(common::bin())
        .args(["train", "--steps", "50", "--global-batch", "8"])
        .env("RINGTRAIN_FAULT", "panic@1:3");
    let r = common::run_with_timeout(cmd, std::time::Duration::from_secs(60));
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("rank 1: internal error"), "{}", r.stderr);
    assert!(!r.stdout.contains("step     50/50"));
}

#[test]
fn differing_initial_parameters_are_refused() {
    let mut cmd = std::process::Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", "3"])
        .arg(common::bin())
        .args(["train", "--steps", "5", "--global-batch", "9"])
        .env("RINGTRAIN_FAULT", "perturb-init@2");
    let r = common::run_with_timeout(cmd, std::time::Duration::from_secs(60));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("ringtrain: error").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("checksum of the initial parameters differs from rank 0 on rank(s) 2"),
        "{}",
        r.stderr
    );
}

#[test]
fn gemm_threads_do_not_change_the_result() {
    let tmp = tempdir("threads");
    let dir = tmp.path();
    let a = train(1, dir, "t1", &["--threads", "1"]);
    let b = train(1, dir, "t2", &["--threads", "2"]);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// `--prefetch auto` reads no batch ahead when the training rows are in
/// memory already (a synthetic split the run draws from more than once is
/// generated once, up front): a batch is then a copy, cheaper than the
/// hand-off to a helper thread. Otherwise, unbound with a core to spare,
/// it reads ahead; `on` always does.
#[test]
fn auto_reads_ahead_only_rows_not_in_memory() {
    let tmp = tempdir("prefetch-auto");
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[data]\nsynthetic_train = 64\nsynthetic_val = 16\n[model]\nhidden = [8]\n",
    )
    .unwrap();
    let header = |steps: &str, prefetch: &str| {
        let args = [
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--steps",
            steps,
            "--global-batch",
            "32",
            "--eval-every",
            "0",
            "--prefetch",
            prefetch,
        ];
        let r = common::alone(&[], &args, std::time::Duration::from_secs(120));
        r.ok();
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("data: "))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("no data line\n{}", r.context()))
    };
    // 4 steps x 32 rows from 64: the rows are installed, nothing read ahead.
    assert!(!header("4", "auto").contains("read ahead"));
    assert!(header("4", "on").contains("read ahead"));
    // 2 steps x 32 rows: generated on demand; read ahead with a core to spare.
    let spare = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
    assert_eq!(header("2", "auto").contains("read ahead"), spare);
}

/// With a core to spare, the default model's rows are generated on it
/// during the steps (a thread at the lowest priority; each row kept once
/// made) instead of up front: the same rows, so the same parameters as
/// the up-front path (`--threads 2` leaves no core to spare; the GEMM
/// threads do not change the bits, above).
#[test]
fn rows_generated_in_the_background_train_the_same_bits() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        println!("skipped: one core, nothing to spare");
        return;
    }
    let tmp = tempdir("background-rows");
    let run = |threads: &str| {
        let out = tmp.path().join(format!("t{threads}.safetensors"));
        // 300 x 256 rows from 65,536, validation read 3 times: both kept.
        let args = [
            "train",
            "--steps",
            "300",
            "--eval-every",
            "100",
            "--threads",
            threads,
            "--save",
            out.to_str().unwrap(),
        ];
        let r = common::alone(&[], &args, std::time::Duration::from_secs(300));
        r.ok();
        let data = r.stdout.lines().find(|l| l.starts_with("data: "));
        let data = data.unwrap_or_else(|| panic!("no data line\n{}", r.context()));
        (data.to_string(), read_params(&out))
    };
    let (bg_line, bg) = run("1");
    let (up_line, up) = run("2");
    assert!(
        bg_line.contains("generated on a spare core, read ahead until then"),
        "{bg_line}"
    );
    assert!(!up_line.contains("spare core"), "{up_line}");
    assert_eq!(bg.len(), up.len());
    assert!(bg.iter().zip(&up).all(|(a, b)| a.to_bits() == b.to_bits()));
}
