//! `--sync local` through the real binary under mpirun: H = 1 plain
//! averaging is every-step sync; the outer update (α < 1, Nesterov μ > 0)
//! against a reference written here; determinism and bit-identical resume
//! between and at outer steps; bytes, trace and evaluation; the learning
//! check against every-step sync.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};

use common::{mpirun, mpirun_timeout, read_params, rel_diff, tempdir};
use ringtrain::checkpoint::training::{self, Loaded, Snapshot};
use ringtrain::config::{OptimizerKind, TrainConfig};
use ringtrain::data::synthetic::Synthetic;
use ringtrain::model::layout::ParamLayout;
use ringtrain::spec::ModelSpec;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The synthetic dataset as CSV with every missing label filled in (0 is
/// a valid label of every task), so that every rank's slice holds the
/// same number of labels of each task.
fn complete_dataset(dir: &Path) -> PathBuf {
    let d = dir.join("complete");
    let d_s = s(&d);
    common::single(&[
        "data", "synth", "--out", d_s, "--format", "csv", "--train", "512", "--val", "64",
    ])
    .ok();
    for f in ["train.csv", "val.csv"] {
        let p = d.join(f);
        let text = std::fs::read_to_string(&p).unwrap();
        let filled: Vec<String> = text
            .lines()
            .map(|l| {
                l.split(',')
                    .map(|c| if c.is_empty() { "0" } else { c })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        std::fs::write(&p, filled.join("\n") + "\n").unwrap();
    }
    d
}

#[test]
fn h1_plain_averaging_equals_every_step_sync() {
    let tmp = tempdir("local-h1");
    let dir = tmp.path();
    let data = complete_dataset(dir);
    let run = |tag: &str, steps: &str, extra: &[&str]| {
        let out = dir.join(format!("{tag}.safetensors"));
        let mut a = vec![
            "train",
            "--data",
            s(&data),
            "--steps",
            steps,
            "--global-batch",
            "64",
            "--hidden",
            "32,16",
            "--eval-every",
            "0",
            "--optimizer",
            "sgd",
            "--momentum",
            "0",
            "--lr",
            "0.1",
            "--clip-norm",
            "0",
            "--save",
            s(&out),
        ];
        a.extend_from_slice(extra);
        mpirun(4, &a).ok();
        read_params(&out)
    };
    let every = run("every", "12", &["--sync", "every-step"]);
    let local = run(
        "local",
        "12",
        &[
            "--sync",
            "local",
            "--local-steps",
            "1",
            "--outer-lr",
            "1",
            "--outer-momentum",
            "0",
        ],
    );
    let fewer = run("fewer", "6", &["--sync", "every-step"]);
    let d = rel_diff(&local, &every);
    eprintln!("local H=1 vs every-step: relative difference {d:e}");
    assert!(d <= 1e-6, "{d:e}");
    // Steps move the parameters by far more than the tolerance.
    let moved = rel_diff(&every, &fewer);
    eprintln!("12 steps vs 6: relative difference {moved:e}");
    assert!(moved > 1e-3, "{moved:e}");
}

/// What every run of the reference test shares: 3 ranks, α = 0.7,
/// Nesterov μ = 0.9, a constant learning rate (so the number of steps
/// does not change a step).
fn outer_args<'a>(steps: &'a str, h: &'a str, ck: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "--steps",
        steps,
        "--global-batch",
        "30",
        "--hidden",
        "32,16",
        "--eval-every",
        "0",
        "--schedule",
        "constant",
        "--sync",
        "local",
        "--local-steps",
        h,
        "--outer-lr",
        "0.7",
        "--outer-momentum",
        "0.9",
        "--checkpoint-dir",
        ck,
    ];
    a.extend_from_slice(extra);
    a
}

fn spec() -> (ModelSpec, ParamLayout) {
    let mut cfg = TrainConfig::default();
    cfg.model.hidden = vec![32, 16];
    let d = TrainConfig::default().data;
    let data = Synthetic::new(d.synthetic_seed, d.synthetic_train, d.synthetic_val);
    let spec = ringtrain::app::model_spec(&cfg, &data).unwrap();
    let layout = ParamLayout::new(&spec);
    (spec, layout)
}

fn load(ck: &Path, step: u64) -> Loaded {
    let (spec, layout) = spec();
    let p = ck.join(training::step_dir_name(step));
    training::load(&p, &spec, &layout, OptimizerKind::Adamw).unwrap()
}

/// The outer update as the issue states it, in f64.
fn reference(
    theta: &[f32],
    v: &[f32],
    ranks: &[Vec<f32>],
    alpha: f64,
    mu: f64,
) -> (Vec<f32>, Vec<f32>) {
    let n = ranks.len() as f64;
    let mut t2 = vec![];
    let mut v2 = vec![];
    for i in 0..theta.len() {
        let avg: f64 = ranks.iter().map(|r| r[i] as f64).sum::<f64>() / n;
        let delta = theta[i] as f64 - avg;
        let v = mu * v[i] as f64 + delta;
        let step = if mu > 0.0 { delta + mu * v } else { v };
        t2.push((theta[i] as f64 - alpha * step) as f32);
        v2.push(v as f32);
    }
    (t2, v2)
}

fn ranks_params(l: &Loaded) -> Vec<Vec<f32>> {
    let local = l
        .state
        .local
        .as_ref()
        .expect("local state in the checkpoint");
    local.ranks.iter().map(|r| r.params.clone()).collect()
}

#[test]
fn outer_update_matches_the_reference_3_ranks_2_outer_steps() {
    let tmp = tempdir("local-outer");
    let dir = tmp.path();
    // The run under test: H = 3, two outer steps.
    let real = dir.join("real");
    mpirun(
        3,
        &outer_args("6", "3", s(&real), &["--checkpoint-every", "3"]),
    )
    .ok();
    // A probe that never merges (H = 100): each rank's θ_r after the
    // three local steps of a round, from its checkpoint.
    let probe = dir.join("probe");
    mpirun(
        3,
        &outer_args("100", "100", s(&probe), &["--stop-after", "3"]),
    )
    .ok();
    let p3 = load(&probe, 3);
    let theta0 = p3.state.params.clone();
    let (t1, v1) = reference(
        &theta0,
        &vec![0.0; theta0.len()],
        &ranks_params(&p3),
        0.7,
        0.9,
    );
    let r3 = load(&real, 3);
    let d = rel_diff(&r3.state.params, &t1);
    eprintln!("outer step 1: θ relative difference {d:e}");
    assert!(d <= 1e-6, "θ after outer step 1: {d:e}");
    let rv = &r3.state.local.as_ref().unwrap().momentum;
    let dv = rel_diff(rv, &v1);
    eprintln!("outer step 1: v relative difference {dv:e}");
    assert!(dv <= 1e-4, "v after outer step 1: {dv:e}");
    assert!(rel_diff(&t1, &theta0) > 1e-4, "the first round moved θ");

    // Round 2: the probe continues from the real run's state after the
    // first outer step (θ_r = θ¹ on every rank, inner states as they are).
    let mut st = p3.state.clone();
    st.params = r3.state.params.clone();
    let local = st.local.as_mut().unwrap();
    local.momentum = rv.clone();
    for r in &mut local.ranks {
        r.params = r3.state.params.clone();
    }
    let (spec, layout) = spec();
    let snap = Snapshot {
        spec: &spec,
        layout: &layout,
        config: &p3.config,
        world_size: 3,
        state: &st,
    };
    training::save(&probe, &snap, &|| {}, || {}).unwrap();
    mpirun(
        3,
        &outer_args(
            "100",
            "100",
            s(&probe),
            &["--resume", "auto", "--stop-after", "6"],
        ),
    )
    .ok();
    let p6 = load(&probe, 6);
    let (t2, _) = reference(&r3.state.params, rv, &ranks_params(&p6), 0.7, 0.9);
    let r6 = load(&real, 6);
    let d = rel_diff(&r6.state.params, &t2);
    eprintln!("outer step 2: θ relative difference {d:e}");
    assert!(d <= 1e-6, "θ after outer step 2: {d:e}");
}

fn det_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "--steps",
        "16",
        "--global-batch",
        "30",
        "--hidden",
        "32,16",
        "--eval-every",
        "0",
        "--sync",
        "local",
        "--local-steps",
        "4",
        "--outer-lr",
        "0.7",
        "--outer-momentum",
        "0.9",
    ];
    a.extend_from_slice(extra);
    a
}

fn full_run(dir: &Path, tag: &str) -> Vec<f32> {
    let out = dir.join(format!("{tag}.safetensors"));
    mpirun(2, &det_args(&["--save", s(&out)])).ok();
    read_params(&out)
}

fn stopped_and_resumed(dir: &Path, stop: &str) -> Vec<f32> {
    let ck = dir.join(format!("ck-{stop}"));
    mpirun(
        2,
        &det_args(&["--checkpoint-dir", s(&ck), "--stop-after", stop]),
    )
    .ok();
    let out = dir.join(format!("resumed-{stop}.safetensors"));
    let r = mpirun(
        2,
        &det_args(&[
            "--checkpoint-dir",
            s(&ck),
            "--resume",
            "auto",
            "--save",
            s(&out),
        ]),
    );
    r.ok();
    assert!(
        r.stdout.contains(&format!("at step {stop}/16")),
        "{}",
        r.stdout
    );
    read_params(&out)
}

#[test]
fn deterministic_and_resume_is_bit_identical_between_and_at_outer_steps() {
    let tmp = tempdir("local-resume");
    let dir = tmp.path();
    let a = full_run(dir, "a");
    let b = full_run(dir, "b");
    assert_eq!(bits(&a), bits(&b), "same seed and ranks: bit-identical");
    // Step 6 is inside a round (ranks differ), step 8 ends one.
    for stop in ["6", "8"] {
        let r = stopped_and_resumed(dir, stop);
        assert_eq!(bits(&r), bits(&a), "resumed after step {stop}");
    }
    // At another number of ranks: refused, one message.
    let ck = dir.join("ck-6");
    mpirun_timeout(
        3,
        &det_args(&["--checkpoint-dir", s(&ck), "--resume", "auto"]),
        std::time::Duration::from_secs(60),
    )
    .one_error(2, "resume it on 2 rank(s)");
}

#[test]
fn bytes_trace_and_evaluation_at_outer_boundaries() {
    let tmp = tempdir("local-metrics");
    let dir = tmp.path();
    let (m_every, m_local) = (dir.join("every.jsonl"), dir.join("local.jsonl"));
    let trace = dir.join("trace.json");
    let common = [
        "train",
        "--steps",
        "20",
        "--global-batch",
        "30",
        "--hidden",
        "32,16",
        "--eval-every",
        "5",
    ];
    let mut a = common.to_vec();
    a.extend(["--metrics-out", s(&m_every)]);
    mpirun(2, &a).ok();
    let mut b = common.to_vec();
    b.extend([
        "--metrics-out",
        s(&m_local),
        "--trace",
        s(&trace),
        "--sync",
        "local",
        "--local-steps",
        "8",
    ]);
    let r = mpirun(2, &b);
    r.ok();
    assert!(
        r.stdout.contains("sync: local, 8 step(s) per outer update"),
        "{}",
        r.stdout
    );

    let (spec, layout) = spec();
    let per_step = 4 * layout.total as u64; // 2(n−1)/n · 4 bytes, n = 2
    // Local mode: each step's record (loss sums and label counts per
    // task, skipped, ends the run: f64) goes in the round's exchange.
    let per_record = 8 * (2 * spec.tasks.len() as u64 + 2);
    let read = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let every = read(&m_every);
    let train: Vec<_> = every.iter().filter(|v| v["type"] == "train").collect();
    assert!(
        train
            .iter()
            .all(|v| v["bytes_sent"] == per_step && v["bytes_received"] == per_step)
    );
    assert_eq!(train.last().unwrap()["bytes_sent_total"], 20 * per_step);

    let local = read(&m_local);
    let train: Vec<_> = local.iter().filter(|v| v["type"] == "train").collect();
    let outer: Vec<u64> = train
        .iter()
        .filter(|v| v["outer_step"] == true)
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(outer, vec![8, 16, 20]);
    for v in &train {
        let records = match v["step"].as_u64().unwrap() {
            8 | 16 => 8,
            20 => 4,
            _ => 0,
        };
        let want = if v["outer_step"] == true { per_step } else { 0 } + records * per_record;
        assert_eq!(v["bytes_sent"], want, "{v}");
        assert_eq!(v["bytes_received"], want, "{v}");
    }
    // Inside a round: what the earlier exchanges sent.
    let at =
        |step: u64| train.iter().find(|v| v["step"] == step).unwrap()["bytes_sent_total"].clone();
    assert_eq!(at(12), per_step + 8 * per_record);
    assert_eq!(at(20), 3 * per_step + 20 * per_record);
    // Evaluation at the first outer boundary after every 5 steps, and at
    // the end.
    let evals: Vec<u64> = local
        .iter()
        .filter(|v| v["type"] == "eval")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(evals, vec![8, 16, 20]);
    let t = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        t.matches("\"outer all-reduce\"").count(),
        2 * 3,
        "one per rank and outer step"
    );
    // The event counts the round's exchange with the parameters.
    let bytes = format!("\"bytes_sent\":{}", per_step + 8 * per_record);
    assert_eq!(
        t.matches(&bytes).count(),
        2 * 2,
        "{bytes} at steps 8 and 16"
    );
}

/// The final validation metrics of a run on the embedded dataset.
fn final_metrics(p: &Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(p).unwrap();
    let last = text
        .lines()
        .rfind(|l| l.contains("\"type\":\"eval\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    let mut out = vec![];
    for (task, m) in v["tasks"].as_object().unwrap() {
        for key in ["accuracy", "auc", "r2"] {
            if let Some(x) = m[key].as_f64() {
                out.push((format!("{task} {key}"), x));
            }
        }
    }
    out
}

#[test]
fn local_h8_learns_as_well_as_every_step_sync() {
    let tmp = tempdir("local-learn");
    let dir = tmp.path();
    let run = |tag: &str, extra: &[&str]| {
        let m = dir.join(format!("{tag}.jsonl"));
        let mut a = vec!["train", "--eval-every", "0", "--metrics-out", s(&m)];
        a.extend_from_slice(extra);
        mpirun(4, &a).ok();
        final_metrics(&m)
    };
    let every = run("every", &[]);
    let local = run("local", &["--sync", "local", "--local-steps", "8"]);
    assert_eq!(every.len(), 4);
    for ((name, e), (_, l)) in every.iter().zip(&local) {
        eprintln!("{name}: every-step {e:.4}, local H=8 {l:.4}");
        assert!((e - l).abs() <= 0.01, "{name}: every-step {e}, local {l}");
    }
}

/// NaN/Inf in local mode: the rank whose own step is not finite leaves
/// its own update out; every rank learns of it at the round's exchange
/// (no collective inside a round) and takes the same decision there.
#[test]
fn one_ranks_nan_is_seen_by_every_rank_in_local_mode() {
    let tmp = tempdir("local-nan");
    let dir = tmp.path();
    let save = dir.join("p.safetensors");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--steps",
            "12",
            "--global-batch",
            "30",
            "--hidden",
            "32,16",
            "--eval-every",
            "0",
            "--log-every",
            "1",
            "--sync",
            "local",
            "--local-steps",
            "4",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let run = |a: &[String], fault: &str| {
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        common::mpirun_env(2, &a, &[("RINGTRAIN_FAULT", fault)])
    };
    // Abort: rank 1's input is NaN at step 5, its own loss only; both
    // ranks stop at the round's exchange (after step 8), one message, and
    // the round's steps are not reported.
    let r = run(&args(&["--save", s(&save)]), "nan@1:4");
    r.one_error(4, "step 5: the loss of task");
    r.one_error(4, "seen at the exchange after step 8");
    assert!(r.stdout.contains("step      4/12"), "{}", r.stdout);
    assert!(!r.stdout.contains("step      5/12"), "{}", r.stdout);
    assert!(!save.exists());

    // Skip: rank 1 leaves its update of step 5 out, rank 0 does not; the
    // step line says so once; rank 1 has applied one update fewer.
    let ck = dir.join("ck");
    let a = args(&["--on-nonfinite", "skip", "--save", s(&save)]);
    let mut with_ck = a.clone();
    with_ck.extend(["--checkpoint-dir".into(), s(&ck).into()]);
    let r = run(&with_ck, "nan@1:4");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout.matches("update skipped").count(),
        1,
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("step 5: the loss of task")
            && r.stdout.contains("update skipped on 1 of 2 rank(s)"),
        "{}",
        r.stdout
    );
    let skipped = read_params(&save);
    assert!(skipped.iter().all(|v| v.is_finite()));
    let l = load(&ck, 12);
    let counters: Vec<[u64; 2]> = l
        .state
        .local
        .unwrap()
        .ranks
        .iter()
        .map(|r| r.counters)
        .collect();
    assert_eq!(
        counters,
        vec![[12, 0], [11, 0]],
        "[updates, skips in a row]"
    );
    // The skip changed the run (rank 1's update of step 5 is missing).
    let clean = dir.join("clean.safetensors");
    let a = args(&["--save", s(&clean)]);
    mpirun(2, &a.iter().map(|s| s.as_str()).collect::<Vec<_>>()).ok();
    assert_ne!(bits(&read_params(&clean)), bits(&skipped));

    // More than --max-skips in a row on one rank: every rank stops at the
    // exchange, naming the step where rank 1 went over.
    let r = run(
        &args(&["--on-nonfinite", "skip", "--max-skips", "2"]),
        "nan@1:4-6",
    );
    r.one_error(4, "step 7: the loss of task");
    r.one_error(4, "more than --max-skips 2");
}

#[test]
fn a_bf16_outer_wire_rounds_the_change_and_stays_close_to_f32() {
    let tmp = tempdir("local-bf16");
    let dir = tmp.path();
    let run = |tag: &str, wire: &str| -> Vec<f32> {
        let out = dir.join(format!("{tag}.safetensors"));
        let extra = ["--comm", "ring", "--outer-wire", wire, "--save", s(&out)];
        mpirun(2, &det_args(&extra)).ok();
        read_params(&out)
    };
    let f32_wire = run("f32", "f32");
    let bf16_wire = run("bf16", "bf16");
    let d = rel_diff(&bf16_wire, &f32_wire);
    eprintln!("bf16 vs f32 outer wire after 4 outer steps: {d:e}");
    // bf16 has 8 significant bits: the rounded changes differ, a little.
    assert!(d > 0.0 && d < 1e-2, "{d:e}");
    // MPI has no bf16 reduction: refused with one message.
    mpirun(2, &det_args(&["--comm", "mpi", "--outer-wire", "bf16"])).one_error(2, "bf16");
}

#[test]
fn the_header_says_the_mode() {
    let r = mpirun(2, &det_args(&[]));
    r.ok();
    let out = &r.stdout;
    assert!(
        out.contains("gradients: not averaged; parameters: all-reduce")
            && out.contains(
                "sync: local, 4 step(s) per outer update, outer lr 0.7, outer momentum 0.9"
            ),
        "{}",
        r.context()
    );
    let r = mpirun(2, &["train", "--steps", "2"]);
    r.ok();
    assert!(r.stdout.contains("sync: every step"), "{}", r.context());
}

/// A communicator of one rank that counts the collectives called on it.
struct Counting(std::cell::Cell<u64>);

impl Counting {
    fn add(&self) -> ringtrain::error::Result<()> {
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

impl ringtrain::comm::Communicator for Counting {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn name(&self) -> &'static str {
        "counting"
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> ringtrain::error::Result<()> {
        self.add()
    }
    fn all_reduce_sum_bf16(&self, _: &mut [half::bf16]) -> ringtrain::error::Result<()> {
        self.add()
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> ringtrain::error::Result<()> {
        self.add()
    }
    fn all_gather_u64(&self, v: u64) -> ringtrain::error::Result<Vec<u64>> {
        self.add()?;
        Ok(vec![v])
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> ringtrain::error::Result<Vec<u8>> {
        self.add()?;
        Ok(mine.to_vec())
    }
    fn broadcast(&self, _: usize, _: &mut [u8]) -> ringtrain::error::Result<()> {
        self.add()
    }
    fn barrier(&self) -> ringtrain::error::Result<()> {
        self.add()
    }
}

/// No collective runs between two outer steps (so a slow rank holds the
/// others only at the outer boundary): counted on the communicator the
/// trainer is given, step by step. Every-step sync, counted the same way,
/// calls it every step. The round's reports come out at its exchange.
#[test]
fn no_collective_between_outer_steps() {
    use ringtrain::backend::cpu::Cpu;
    use ringtrain::train::Trainer;
    use ringtrain::watchdog::Watchdog;

    let counts = |local: bool| -> (Vec<u64>, Vec<usize>) {
        let mut cfg = TrainConfig::default();
        cfg.model.hidden = vec![16];
        (cfg.train.global_batch, cfg.train.steps) = (16, 10);
        if local {
            cfg.sync.mode = ringtrain::config::SyncMode::Local;
            cfg.sync.local_steps = 4;
        }
        let d = &cfg.data;
        let data = std::sync::Arc::new(Synthetic::new(d.synthetic_seed, 256, 64));
        let spec = ringtrain::app::model_spec(&cfg, &*data).unwrap();
        let init = ringtrain::model::layout::init_params(&ParamLayout::new(&spec), 1);
        let comm = Counting(Default::default());
        let wd = Watchdog::off();
        let mut tr = Trainer::new(&cfg, spec, &comm, &wd, data, Cpu::<f32>::new(), &init);
        let (mut calls, mut reported) = (vec![], vec![]);
        for step in 0..10 {
            let before = comm.0.get();
            let r = tr.step(step, true).unwrap();
            calls.push(comm.0.get() - before);
            reported.push(tr.reports(r).len());
        }
        (calls, reported)
    };
    let (calls, reported) = counts(true);
    eprintln!("local H=4, collectives per step: {calls:?}");
    for (step, &c) in calls.iter().enumerate() {
        let boundary = matches!(step + 1, 4 | 8 | 10);
        assert_eq!(c > 0, boundary, "step {}: {c} collective(s)", step + 1);
    }
    assert_eq!(reported, vec![0, 0, 0, 4, 0, 0, 0, 4, 0, 2]);
    let (calls, reported) = counts(false);
    assert!(calls.iter().all(|&c| c > 0), "every-step: {calls:?}");
    assert_eq!(reported, vec![1; 10]);
}
