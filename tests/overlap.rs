//! Bucketed all-reduce overlapped with backward, gradient accumulation and
//! the timeline, through the real binary.
#![cfg(feature = "mpi")]

mod common;

use common::{mpirun, read_params, rel_diff, tempdir};

fn train(np: usize, dir: &std::path::Path, tag: &str, extra: &[&str]) -> Vec<f32> {
    train_run(np, dir, tag, extra).1
}

/// The run's stdout and its saved parameters.
fn train_run(np: usize, dir: &std::path::Path, tag: &str, extra: &[&str]) -> (String, Vec<f32>) {
    let out = dir.join(format!("{tag}.safetensors"));
    let mut args = vec![
        "train",
        "--steps",
        "10",
        "--global-batch",
        "48",
        "--eval-every",
        "0",
        "--hidden",
        "64,32",
        "--save",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = mpirun(np, &args);
    r.ok();
    (r.stdout, read_params(&out))
}

/// The header's overlap, e.g. "on (--overlap on)".
fn overlap_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find_map(|l| l.split_once(", overlap ").map(|(_, o)| o))
        .unwrap_or_else(|| panic!("no overlap in the header:\n{stdout}"))
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn overlap_on_and_off_give_bit_identical_parameters() {
    let tmp = tempdir("overlap-bits");
    let dir = tmp.path();
    // Small buckets: one per layer, so several are in flight during backward.
    for comm in ["ring", "mpi"] {
        let on = train(
            2,
            dir,
            &format!("{comm}-on"),
            &["--comm", comm, "--bucket-kib", "1", "--overlap", "on"],
        );
        let off = train(
            2,
            dir,
            &format!("{comm}-off"),
            &["--comm", comm, "--bucket-kib", "1", "--no-overlap"],
        );
        assert!(bits_equal(&on, &off), "{comm}: overlap changed the result");
    }
    let on3 = train(
        3,
        dir,
        "ring3-on",
        &["--bucket-kib", "4", "--overlap", "on"],
    );
    let off3 = train(3, dir, "ring3-off", &["--bucket-kib", "4", "--no-overlap"]);
    assert!(bits_equal(&on3, &off3));
}

#[test]
fn the_chosen_overlap_is_reported_and_changes_no_bit() {
    let tmp = tempdir("overlap-auto");
    let dir = tmp.path();
    let metrics = dir.join("m.jsonl");
    // 1 KiB buckets: several, so only the cores decide auto's choice.
    let (out, auto) = train_run(
        2,
        dir,
        "auto",
        &[
            "--bucket-kib",
            "1",
            "--metrics-out",
            metrics.to_str().unwrap(),
        ],
    );
    let line = overlap_line(&out);
    assert!(
        line.starts_with("on (auto: ") || line.starts_with("off (auto: "),
        "{line}"
    );
    let run: serde_json::Value = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["type"] == "run")
        .expect("a run record");
    assert_eq!(run["overlap_mode"], "auto");
    assert_eq!(run["overlap"], line.starts_with("on"));
    assert_eq!(run["step"], 0);
    for (tag, flags, want) in [
        ("on", &["--overlap", "on"][..], "on (--overlap on)"),
        ("off", &["--overlap", "off"][..], "off (--overlap off)"),
        ("no", &["--no-overlap"][..], "off (--overlap off)"),
    ] {
        let mut extra = vec!["--bucket-kib", "1"];
        extra.extend_from_slice(flags);
        let (out, p) = train_run(2, dir, tag, &extra);
        assert_eq!(overlap_line(&out), want);
        assert!(bits_equal(&p, &auto), "{tag}: not the parameters of auto");
    }
    // One bucket (the default 256 KiB holds this model): nothing to overlap.
    let (out, _) = train_run(2, dir, "one", &[]);
    assert_eq!(
        overlap_line(&out),
        "off (auto: one bucket, which starts when backward ends)"
    );
    let (out, _) = train_run(1, dir, "single", &[]);
    assert_eq!(overlap_line(&out), "off (1 rank: nothing to all-reduce)");
    // Both spellings at once are refused.
    let r = mpirun(
        1,
        &["train", "--steps", "1", "--overlap", "on", "--no-overlap"],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
}

#[test]
fn accumulated_micro_batches_match_one_large_batch() {
    let tmp = tempdir("accum");
    let dir = tmp.path();
    let one = train(1, dir, "k1", &[]);
    for (np, k) in [(1, 4), (2, 3), (3, 2)] {
        let acc = train(
            np,
            dir,
            &format!("n{np}k{k}"),
            &["--accum-steps", &k.to_string()],
        );
        let d = rel_diff(&acc, &one);
        eprintln!("{np} ranks x {k} micro-batches vs 1 x 1: {d:e}");
        assert!(d <= 1e-5, "{np} ranks, {k} micro-batches: {d:e}");
    }
}

#[test]
fn bf16_wire_trains_close_to_f32() {
    let tmp = tempdir("bf16-wire");
    let dir = tmp.path();
    let f32w = train(2, dir, "f32", &["--comm", "ring"]);
    let bf16w = train(2, dir, "bf16", &["--comm", "ring", "--wire", "bf16"]);
    let d = rel_diff(&bf16w, &f32w);
    eprintln!("bf16 wire vs f32 wire after 10 steps: {d:e}");
    assert!(d > 0.0, "bf16 wire made no difference: is it used?");
    assert!(d < 1e-2, "{d:e}");
}

#[test]
fn trace_has_one_all_reduce_per_bucket_per_step() {
    let tmp = tempdir("trace");
    let dir = tmp.path();
    let trace = dir.join("t.json");
    // Layers in backward order: heads (231 floats), trunk.2 (2080),
    // trunk.0 (2112). 4 KiB = 1024-float buckets: [heads + trunk.2], [trunk.0].
    train(
        2,
        dir,
        "t",
        &[
            "--bucket-kib",
            "4",
            "--overlap",
            "on",
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    for rank in 0..2 {
        let of = |name: &str| {
            events
                .iter()
                .filter(|e| e["pid"] == rank && e["name"] == name && e["ph"] == "X")
                .collect::<Vec<_>>()
        };
        let ar = of("all-reduce");
        assert_eq!(ar.len(), 10 * 2, "rank {rank}: 2 buckets x 10 steps");
        for step in 0..10 {
            let mut buckets: Vec<u64> = ar
                .iter()
                .filter(|e| e["args"]["step"] == step)
                .map(|e| e["args"]["bucket"].as_u64().unwrap())
                .collect();
            buckets.sort();
            assert_eq!(buckets, vec![0, 1]);
        }
        for phase in ["forward", "backward", "update"] {
            assert_eq!(of(phase).len(), 10, "rank {rank} {phase}");
        }
        assert!(
            ar.iter()
                .all(|e| e["tid"] == 1 && e["dur"].as_f64().unwrap() >= 0.0)
        );
        let bytes: Vec<u64> = ar
            .iter()
            .take(2)
            .map(|e| e["args"]["bytes"].as_u64().unwrap())
            .collect();
        assert_eq!(bytes, vec![4 * (231 + 2080), 4 * 2112]);
    }
}
