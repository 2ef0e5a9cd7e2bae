//! Load balancing (`--balance`) through the real binary under mpirun: any
//! partition of the global batch gives the same parameters as the even one
//! (within the world-size tolerance), `auto` moves work away from a slow
//! rank, and a resumed run continues with the checkpoint's partition.
//! No timing is asserted: which partition `auto` picks depends on timing,
//! only the direction of the move is checked.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;

use common::{mpirun, mpirun_env, mpirun_timeout, read_params, rel_diff, short_run, tempdir};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A short run at global batch 30; returns stdout and the saved parameters.
fn train(np: usize, dir: &Path, tag: &str, extra: &[&str]) -> (String, Vec<f32>) {
    let out = dir.join(format!("{tag}.safetensors"));
    let mut args = short_run(&["--save", s(&out)]);
    args.extend_from_slice(extra);
    let r = mpirun(np, &args);
    r.ok();
    (r.stdout.clone(), read_params(&out))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The `partition` records of a metrics file: (step, sizes).
fn partitions(metrics: &Path) -> Vec<(u64, Vec<usize>)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "partition")
        .map(|v| {
            let sizes = v["sizes"].as_array().unwrap();
            let sizes = sizes.iter().map(|n| n.as_u64().unwrap() as usize);
            (v["step"].as_u64().unwrap(), sizes.collect())
        })
        .collect()
}

#[test]
fn uneven_static_partitions_match_the_even_one() {
    let tmp = tempdir("balance-static");
    let dir = tmp.path();
    // One rank with a single sample, at 2 and 3 ranks; and micro-batches
    // (at least one sample each: 3/27).
    let cases: [(usize, &str, &str, &[&str]); 3] = [
        (2, "1,29", "1/29", &[]),
        (3, "1,20,9", "1/20/9", &[]),
        (2, "1,100", "3/27", &["--accum-steps", "3"]),
    ];
    for (np, weights, sizes, extra) in cases {
        let (_, even) = train(np, dir, &format!("even-{np}"), extra);
        let args = [
            &["--balance", "static", "--balance-weights", weights],
            extra,
        ]
        .concat();
        let (out, uneven) = train(np, dir, &format!("static-{np}"), &args);
        assert!(
            out.contains(&format!("balance: static: {sizes} samples per rank")),
            "{out}"
        );
        let d = rel_diff(&uneven, &even);
        eprintln!("{np} ranks, static {sizes} vs even: relative difference {d:e}");
        assert!(d <= 1e-5, "{np} ranks, {sizes}: {d:e}");
        // static is bit-deterministic run to run.
        let (_, again) = train(np, dir, &format!("again-{np}"), &args);
        assert_eq!(bits(&again), bits(&uneven), "{np} ranks, {sizes}");
    }
}

#[test]
fn auto_moves_work_away_from_a_slow_rank() {
    let tmp = tempdir("balance-auto");
    let dir = tmp.path();
    let m = dir.join("m.jsonl");
    let out = dir.join("auto.safetensors");
    let base = [
        "train",
        "--steps",
        "40",
        "--global-batch",
        "600",
        "--hidden",
        "64,64",
        "--eval-every",
        "0",
        "--log-every",
        "10",
    ];
    let auto = [
        &base[..],
        &[
            "--balance",
            "auto",
            "--balance-every",
            "5",
            "--metrics-out",
            s(&m),
            "--save",
            s(&out),
            // A batch read ahead for the old partition is read again.
            "--prefetch",
            "on",
        ],
    ]
    .concat();
    // Rank 2 three times as slow (the margin covers the noise of three
    // ranks sharing the cores of a small test machine).
    let r = mpirun_env(3, &auto, &[("RINGTRAIN_FAULT", "slow@2:3")]);
    r.ok();
    let plans = partitions(&m);
    assert_eq!(plans[0], (0, vec![200, 200, 200]), "{}", r.stdout);
    for (step, sizes) in &plans {
        assert_eq!(sizes.iter().sum::<usize>(), 600, "step {step}");
        assert!(sizes.iter().all(|&n| n >= 1), "step {step}: {sizes:?}");
        assert_eq!(step % 5, 0, "re-plans only every 5 steps");
    }
    let (_, last) = plans.last().unwrap();
    assert!(plans.len() > 1, "never re-planned\n{}", r.stdout);
    assert!(last[2] < 200, "the slow rank kept its share: {plans:?}");
    assert!(
        r.stdout.contains("balance: after step "),
        "no log line\n{}",
        r.stdout
    );
    // Whatever the partitions, the parameters are those of the even run
    // up to float rounding.
    let even_out = dir.join("even.safetensors");
    let even = [&base[..], &["--save", s(&even_out)]].concat();
    mpirun(3, &even).ok();
    let d = rel_diff(&read_params(&out), &read_params(&even_out));
    eprintln!("auto {plans:?} vs even: relative difference {d:e}");
    assert!(d <= 1e-5, "{d:e}");
}

#[test]
fn resume_continues_with_the_checkpoints_partition() {
    let tmp = tempdir("balance-resume");
    let dir = tmp.path();
    let ck = dir.join("ck");
    let m = dir.join("m.jsonl");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--steps",
            "30",
            "--global-batch",
            "600",
            "--hidden",
            "64,64",
            "--eval-every",
            "0",
            "--balance",
            "auto",
            "--balance-every",
            "5",
            "--checkpoint-dir",
            s(&ck),
            "--metrics-out",
            s(&m),
        ]
        .iter()
        .map(|v| v.to_string())
        .collect();
        a.extend(extra.iter().map(|v| v.to_string()));
        a
    };
    let fault = [("RINGTRAIN_FAULT", "slow@2:3")];
    let first = args(&["--stop-after", "20"]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    mpirun_env(3, &first, &fault).ok();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ck.join("step-00000020").join("state.json")).unwrap(),
    )
    .unwrap();
    let saved: Vec<String> = state["balance"]["partition"]["sizes"]
        .as_array()
        .expect("the checkpoint holds the partition")
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        state["balance"]["secs_per_sample"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let before = partitions(&m);
    let last = before.last().unwrap().1.clone();
    let as_text: Vec<String> = last.iter().map(|n| n.to_string()).collect();
    assert_eq!(saved, as_text, "the checkpoint has the partition in use");

    let second = args(&["--resume", "auto"]);
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let r = mpirun_env(3, &second, &fault);
    r.ok();
    let line = format!(
        "balance: auto, from the checkpoint: {} samples per rank",
        saved.join("/")
    );
    assert!(r.stdout.contains(&line), "{line:?} missing\n{}", r.stdout);
    // The metrics file continues: the earlier records, then re-plans
    // after step 20 only.
    let after = partitions(&m);
    assert_eq!(after[..before.len()], before[..]);
    assert!(after[before.len()..].iter().all(|(step, _)| *step > 20));
}

#[test]
fn bad_balance_settings_end_every_rank_with_one_message() {
    let hang = std::time::Duration::from_secs(60);
    let run = |extra: &[&str]| {
        let a = [&["train", "--steps", "2", "--global-batch", "30"], extra].concat();
        mpirun_timeout(3, &a, hang)
    };
    run(&["--balance", "static", "--balance-weights", "1,2"])
        .one_error(2, "--balance-weights has 2 weight(s) for 3 rank(s)");
    run(&["--balance", "static"]).one_error(2, "--balance static needs --balance-weights");
    run(&["--balance-weights", "1,1,1"]).one_error(2, "is for --balance static");
    run(&["--balance", "static", "--balance-weights", "1,-1,1"])
        .one_error(2, "must be a positive number");
    run(&["--balance", "auto", "--balance-every", "0"]).one_error(2, "--balance-every");
}

/// `bench train --json` says how often auto's partition changed and after
/// which step it last did (what benches/balance.sh reports as settling);
/// a static partition never changes.
#[test]
fn bench_train_reports_the_partition_changes() {
    let bench = |mode: &[&str], fault: &str| {
        #[rustfmt::skip]
        let mut args = vec![
            "bench", "train", "--json", "--iters", "10", "--warmup", "10",
            "--hidden", "32", "--batch-per-rank", "200", "--balance-every", "5",
        ];
        args.extend_from_slice(mode);
        let r = mpirun_env(2, &args, &[("RINGTRAIN_FAULT", fault)]);
        r.ok();
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        v["balance"].clone()
    };
    let b = bench(
        &["--balance", "static", "--balance-weights", "1,2"],
        "slow@1:4",
    );
    assert_eq!(b["changes"], 0, "{b}");
    assert!(b["last_change_step"].is_null(), "{b}");
    assert_eq!(b["partition"], serde_json::json!([133, 267]), "{b}");
    let b = bench(&["--balance", "auto"], "slow@1:4");
    let changes = b["changes"].as_u64().unwrap();
    let last = b["last_change_step"].as_u64().unwrap();
    assert!(changes >= 1 && (last + 1) % 5 == 0 && last < 20, "{b}");
    let sizes: Vec<u64> = serde_json::from_value(b["partition"].clone()).unwrap();
    assert!(
        sizes[1] < sizes[0] && sizes.iter().sum::<u64>() == 400,
        "{b}"
    );
}
