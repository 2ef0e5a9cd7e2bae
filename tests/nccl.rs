//! NCCL: the error paths on a machine without a GPU (run everywhere), and
//! the GPU tests, `#[ignore = "needs a GPU"]`, which benches/gpu.sh runs
//! with `--include-ignored` on the lent GPU machine.
//!
//! Built here and carried to a machine without cargo, these tests find
//! the binary and the repository through RINGTRAIN_BIN and RINGTRAIN_ROOT
//! when set (gpu.sh sets them), else where cargo built them.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Run, read_params, rel_diff, tempdir};
use ringtrain::comm::Communicator;
use ringtrain::comm::nccl::{self, NcclComm};

const HANG: Duration = Duration::from_secs(300);

fn bin() -> String {
    common::bin().to_string_lossy().into_owned()
}

/// `ringtrain ARGS` alone, with `vars`.
fn ringtrain(vars: &[(&str, &str)], args: &[&str]) -> Run {
    common::alone(vars, args, HANG)
}

/// `launch/local.sh N -- PROGRAM ARGS` with `vars`.
fn local(n: usize, vars: &[(&str, &str)], program: &str, args: &[&str]) -> Run {
    common::local_sh(n, vars, program, args, HANG)
}

fn error_lines(r: &Run) -> Vec<String> {
    r.stderr
        .lines()
        .filter(|l| l.contains("ringtrain: error:"))
        .map(String::from)
        .collect()
}

/// Exit 2, no panic, exactly one error message (containing `fragment`).
fn one_error(r: &Run, fragment: &str) -> String {
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert!(!r.stderr.contains("panicked"), "{}", r.context());
    let lines = error_lines(r);
    assert_eq!(lines.len(), 1, "exactly one message\n{}", r.context());
    assert!(lines[0].contains(fragment), "{}", r.context());
    lines[0].clone()
}

// ---------------------------------------------------------------------------
// Without a GPU.

/// Whether this machine can run NCCL (then the no-GPU tests have nothing
/// to check).
fn nccl_usable() -> bool {
    nccl::probe().is_ok()
}

#[test]
fn comm_nccl_without_a_gpu_is_one_clear_error_on_every_rank() {
    if nccl_usable() {
        eprintln!("skipped: this machine has a GPU and NCCL");
        return;
    }
    // One rank: the benchmark and training.
    for args in [
        &["bench", "allreduce", "--comm", "nccl"][..],
        &["train", "--comm", "nccl", "--steps", "1"][..],
        &["bench", "train", "--comm", "nccl", "--iters", "1"][..],
    ] {
        let r = ringtrain(&[], args);
        let msg = one_error(&r, "--comm nccl");
        assert!(msg.contains("GPU") || msg.contains("libnccl.so"), "{msg}");
    }
    // Two ranks without MPI: rank 0 says it, rank 1 learns it from the
    // rendezvous file and exits 2 without a word.
    let r = local(
        2,
        &[],
        &bin(),
        &["--bootstrap", "env", "bench", "allreduce", "--comm", "nccl"],
    );
    let msg = one_error(&r, "--comm nccl");
    assert!(msg.starts_with("[rank 0] "), "{}", r.context());
    // --comm auto with --device cuda on two ranks means NCCL, too.
    let r = local(
        2,
        &[],
        &bin(),
        &[
            "--bootstrap",
            "env",
            "train",
            "--device",
            "cuda",
            "--steps",
            "1",
        ],
    );
    one_error(&r, "--comm nccl");
    // `info` says why, without failing.
    let r = ringtrain(&[], &["--bootstrap", "env", "info"]);
    assert_eq!(r.code, Some(0), "{}", r.context());
    assert!(r.stdout.contains("nccl: not usable: "), "{}", r.context());
}

#[cfg(feature = "mpi")]
#[test]
fn comm_nccl_without_a_gpu_under_mpirun_is_one_error() {
    if nccl_usable() {
        eprintln!("skipped: this machine has a GPU and NCCL");
        return;
    }
    let r = common::mpirun_timeout(
        2,
        &["bench", "allreduce", "--comm", "nccl"],
        Duration::from_secs(120),
    );
    one_error(&r, "--comm nccl");
}

#[test]
fn nccl_ranks_without_mpi_need_a_rendezvous_directory() {
    // Checked before any GPU is touched: the same on every machine.
    for rank in ["0", "1"] {
        let r = ringtrain(
            &[
                ("RANK", rank),
                ("WORLD_SIZE", "2"),
                ("RINGTRAIN_RUN_ID", "nccl-no-rdzv"),
            ],
            &["--bootstrap", "env", "bench", "allreduce", "--comm", "nccl"],
        );
        assert_eq!(r.code, Some(2), "rank {rank}\n{}", r.context());
        assert!(!r.stderr.contains("panicked"), "{}", r.context());
        let printed = r.stderr.contains("--rendezvous");
        assert_eq!(printed, rank == "0", "only rank 0 prints\n{}", r.context());
    }
}

#[test]
fn a_rank_whose_rank_0_never_comes_times_out_with_a_message() {
    let tmp = tempdir("nccl-lonely");
    let dir = tmp.path();
    let r = ringtrain(
        &[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("RINGTRAIN_RUN_ID", "nccl-lonely"),
        ],
        &[
            "--bootstrap",
            "env",
            "--rendezvous",
            dir.to_str().unwrap(),
            "--rendezvous-timeout",
            "0.5",
            "bench",
            "allreduce",
            "--comm",
            "nccl",
        ],
    );
    one_error(&r, "timed out");
}

// ---------------------------------------------------------------------------
// On a GPU.

/// This process's NCCL communicator of one rank.
fn one_rank_comm() -> NcclComm {
    let p = nccl::probe().unwrap_or_else(|e| panic!("{e}"));
    let stream = nccl::open_stream(0).unwrap();
    let id = nccl::new_id().unwrap();
    NcclComm::new(stream, 0, 1, id, p.version).unwrap()
}

/// The collectives every communicator has, checked on `c` (any size):
/// rank r contributes values made from r.
fn check_collectives(c: &dyn Communicator) {
    let (r, n) = (c.rank(), c.size());
    let tri = (n * (n + 1) / 2) as f32; // Σ (r + 1)
    let mut v: Vec<f32> = (0..1000).map(|i| (r + 1) as f32 * (i % 7) as f32).collect();
    c.all_reduce_sum(&mut v).unwrap();
    for (i, x) in v.iter().enumerate() {
        assert_eq!(*x, tri * (i % 7) as f32, "all_reduce_sum element {i}");
    }
    let mut avg = vec![(r + 1) as f32; 33];
    c.all_reduce_avg(&mut avg).unwrap();
    assert!(avg.iter().all(|x| (x - tri / n as f32).abs() <= 1e-6 * tri));
    let mut f = vec![0.5 * r as f64, 1.0];
    c.all_reduce_sum_f64(&mut f).unwrap();
    assert_eq!(f, vec![0.5 * (n * (n - 1) / 2) as f64, n as f64]);
    let mut h = vec![half::bf16::from_f32((r + 1) as f32); 17];
    c.all_reduce_sum_bf16(&mut h).unwrap();
    assert!(h.iter().all(|x| x.to_f32() == tri));
    let input: Vec<f32> = (0..100).map(|i| i as f32 + r as f32).collect();
    let mut out = vec![f32::NAN; 100];
    c.all_reduce_sum_into(&input, &mut out).unwrap();
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, x)| *x == (n * i + n * (n - 1) / 2) as f32)
    );
    let root = n - 1;
    let mut b = vec![r as u8; 300];
    c.broadcast(root, &mut b).unwrap();
    assert!(b.iter().all(|&x| x as usize == root), "broadcast");
    let g = c.all_gather_u64(10 * r as u64 + 7).unwrap();
    assert_eq!(g, (0..n as u64).map(|q| 10 * q + 7).collect::<Vec<_>>());
    let bytes = c.all_gather_bytes(&[r as u8, 0xab, r as u8]).unwrap();
    let want: Vec<u8> = (0..n as u8).flat_map(|q| [q, 0xab, q]).collect();
    assert_eq!(bytes, want);
    c.barrier().unwrap();
    // An error on one rank reaches all of them.
    let local = if r == n - 1 {
        Err(ringtrain::error::Error::Comm("boom".into()))
    } else {
        Ok(())
    };
    match ringtrain::comm::agree(c, local) {
        Err(ringtrain::error::Error::OtherRank(q)) => assert!(r != n - 1 && q == n - 1),
        Err(e) => assert!(r == n - 1 && e.to_string().contains("boom")),
        Ok(()) => panic!("agree lost the error"),
    }
}

/// The NCCL gradient sync on a device buffer holding rank + 1 + step
/// everywhere: afterwards (n + 1) / 2 + step everywhere, read on the
/// compute stream. One sync over several steps, as in training: from the
/// second step on, `comm_s` is the previous step's all-reduce time, read
/// although this step's first bucket started before `finish`.
fn check_grad_sync(c: &NcclComm) {
    use cudarc::driver::DevicePtrMut;
    use ringtrain::gradsync::nccl::NcclGradSync;
    use ringtrain::gradsync::{GradBuckets, plan_buckets};
    use ringtrain::model::layout::ParamLayout;
    use ringtrain::spec::{Activation, ModelSpec};
    use ringtrain::tasks::{TaskKind, TaskSpec};
    let layout = ParamLayout::new(&ModelSpec {
        input_dim: 20,
        hidden: vec![64, 32, 16],
        activation: Activation::Relu,
        tasks: vec![TaskSpec {
            name: "a".into(),
            kind: TaskKind::Classify { classes: 5 },
            weight: 1.0,
        }],
    });
    let (r, n) = (c.rank(), c.size());
    let compute: Arc<_> = c.stream().context().new_stream().unwrap();
    let mut g = compute.alloc_zeros::<f32>(layout.total).unwrap();
    let (ptr, guard) = g.device_ptr_mut(&compute);
    drop(guard);
    // Small buckets: several, launched as "backward" reaches them.
    let buckets = plan_buckets(&layout.layer_ranges(), 500);
    let mut sync = NcclGradSync::new(c, &compute, ptr, layout.total, buckets)
        .unwrap_or_else(|e| panic!("{e}"));
    for step in 0..4 {
        let host = vec![(r + 1 + step) as f32; layout.total];
        compute.memcpy_htod(&host, &mut g).unwrap();
        for lo in [layout.trunk[2].w, layout.trunk[1].w, layout.trunk[0].w] {
            sync.ready(lo);
        }
        let report = sync.finish().unwrap();
        if step == 0 {
            assert_eq!(report.comm_s, 0.0, "no step before the first");
        } else {
            assert!(
                report.comm_s > 0.0 && report.comm_s < 10.0,
                "step {step}: the previous step's all-reduce took {} s",
                report.comm_s
            );
        }
        let got = compute.clone_dtoh(&g).unwrap();
        let want = (n * (n + 1) / 2 + n * step) as f32 / n as f32;
        assert!(
            got.iter().all(|x| (x - want).abs() <= 1e-6 * want),
            "grad sync step {step}: want {want}, got {:?}",
            &got[..4]
        );
    }
}

#[test]
#[ignore = "needs a GPU"]
fn one_rank_nccl_collectives_and_gradient_sync() {
    let c = one_rank_comm();
    check_collectives(&c);
    check_grad_sync(&c);
}

/// A rank of `two_ranks_on_one_gpu_nccl_collectives`, which starts this
/// test binary twice through launch/local.sh with RINGTRAIN_NCCL_WORKER=1;
/// run on its own, it has nothing to do.
#[test]
#[ignore = "needs a GPU; a rank started by two_ranks_on_one_gpu_nccl_collectives"]
fn nccl_worker_rank() {
    if std::env::var_os("RINGTRAIN_NCCL_WORKER").is_none() {
        eprintln!("not started as a worker rank: nothing to do");
        return;
    }
    let opts = ringtrain::world::BootstrapOptions {
        mode: ringtrain::world::BootstrapMode::Env,
        rendezvous: std::env::var_os("RINGTRAIN_RENDEZVOUS").map(PathBuf::from),
        rendezvous_timeout: Duration::from_secs(60),
    };
    let world = ringtrain::world::World::init(&opts).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(world.size, 2);
    let c = nccl::world_comm(&world).unwrap_or_else(|e| panic!("{e}"));
    check_collectives(&c);
    check_grad_sync(&c);
    println!("worker rank {} ok", world.rank);
}

/// Both ranks on GPU 0 when there is one GPU (NCCL >= 2.30 with
/// NCCL_MULTI_RANK_GPU_ENABLE=1), else one GPU each.
const TWO_RANKS: [(&str, &str); 1] = [("NCCL_MULTI_RANK_GPU_ENABLE", "1")];

#[test]
#[ignore = "needs a GPU"]
fn two_ranks_on_one_gpu_nccl_collectives() {
    let me = std::env::current_exe().unwrap();
    let vars = [TWO_RANKS[0], ("RINGTRAIN_NCCL_WORKER", "1")];
    let r = local(
        2,
        &vars,
        me.to_str().unwrap(),
        &[
            "--exact",
            "nccl_worker_rank",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.context());
    for rank in 0..2 {
        assert!(
            r.stdout.contains(&format!("worker rank {rank} ok")),
            "{}",
            r.context()
        );
    }
}

#[test]
#[ignore = "needs a GPU"]
fn two_ranks_bench_allreduce_nccl_is_exact() {
    for (dtype, op) in [("float", "sum"), ("float", "avg"), ("bfloat16", "sum")] {
        let r = local(
            2,
            &TWO_RANKS,
            &bin(),
            &[
                "--bootstrap",
                "env",
                "bench",
                "allreduce",
                "--comm",
                "nccl",
                "-b",
                "4",
                "-e",
                "4M",
                "-f",
                "16",
                "-n",
                "3",
                "-w",
                "1",
                "-d",
                dtype,
                "-o",
                op,
            ],
        );
        assert_eq!(r.code, Some(0), "{dtype} {op}\n{}", r.context());
        assert!(
            r.stdout.contains("Out of bounds values : 0 OK"),
            "{}",
            r.context()
        );
    }
}

/// The world-size invariance of tests/training.rs on GPUs: 1 rank, then 2
/// ranks over NCCL (on one GPU), the same global batch.
#[test]
#[ignore = "needs a GPU"]
fn two_nccl_ranks_train_to_the_parameters_of_one() {
    let tmp = tempdir("nccl-wsi");
    let dir = tmp.path();
    let train = |n: usize, tag: &str| -> Vec<f32> {
        let out = dir.join(format!("{tag}.safetensors"));
        let args = [
            "--bootstrap",
            "env",
            "train",
            "--device",
            "cuda",
            "--comm",
            "nccl",
            "--steps",
            "12",
            "--global-batch",
            "30",
            "--eval-every",
            "0",
            "--hidden",
            "32,16",
            "--bucket-kib",
            "1",
            "--save",
            out.to_str().unwrap(),
        ];
        let r = local(n, &TWO_RANKS, &bin(), &args);
        assert_eq!(r.code, Some(0), "{n} rank(s)\n{}", r.context());
        read_params(&out)
    };
    let one = train(1, "n1");
    let two = train(2, "n2");
    let d = rel_diff(&two, &one);
    eprintln!("2 NCCL ranks vs 1: relative difference {d:e}");
    assert!(d <= 1e-5, "2 ranks differ from 1 rank: {d:e}");
}
