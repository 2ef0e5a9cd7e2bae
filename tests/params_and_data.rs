//! Parameters in and out, dataset directories and config files, through
//! the real binary.
#![cfg(feature = "mpi")]

mod common;

use common::{mpirun, read_params, single, tempdir};

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// The header of a safetensors file as JSON.
fn header(path: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

#[test]
fn training_on_a_written_dataset_dir_equals_the_embedded_dataset() {
    let tmp = tempdir("synth-dir");
    let dir = tmp.path();
    let data = dir.join("data");
    single(&[
        "data",
        "synth",
        "--out",
        s(&data),
        "--train",
        "300",
        "--val",
        "50",
    ])
    .ok();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[data]\nsynthetic_train = 300\nsynthetic_val = 50\n[model]\nhidden = [16]\n",
    )
    .unwrap();
    let (a, b) = (dir.join("a.st"), dir.join("b.st"));
    let common = [
        "train",
        "--config",
        s(&cfg),
        "--steps",
        "8",
        "--global-batch",
        "40",
    ];
    let run_a = mpirun(2, &[&common[..], &["--save", s(&a)]].concat());
    run_a.ok();
    let run_b = mpirun(
        2,
        &[&common[..], &["--data", s(&data), "--save", s(&b)]].concat(),
    );
    run_b.ok();
    let (pa, pb) = (read_params(&a), read_params(&b));
    assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()));
    // Same metrics printed, too.
    let eval = |o: &str| o.lines().rfind(|l| l.starts_with("eval")).map(String::from);
    assert_eq!(eval(&run_a.stdout), eval(&run_b.stdout));
    assert!(eval(&run_a.stdout).is_some());
}

#[test]
fn saved_parameters_use_pytorch_names_shapes_and_carry_the_spec() {
    let tmp = tempdir("save-names");
    let dir = tmp.path();
    let out = dir.join("p.safetensors");
    mpirun(
        2,
        &[
            "train",
            "--steps",
            "2",
            "--hidden",
            "24,12",
            "--activation",
            "gelu",
            "--save",
            s(&out),
        ],
    )
    .ok();
    let h = header(&out);
    let shape = |name: &str| h[name]["shape"].clone();
    assert_eq!(shape("trunk.0.weight"), serde_json::json!([24, 32]));
    assert_eq!(shape("trunk.0.bias"), serde_json::json!([24]));
    assert_eq!(shape("trunk.2.weight"), serde_json::json!([12, 24]));
    assert_eq!(shape("heads.shape.weight"), serde_json::json!([4, 12]));
    assert_eq!(shape("heads.size.weight"), serde_json::json!([2, 12]));
    assert_eq!(shape("heads.flag.bias"), serde_json::json!([1]));
    assert_eq!(h["trunk.0.weight"]["dtype"], "F32");
    let spec: serde_json::Value =
        serde_json::from_str(h["__metadata__"]["ringtrain.spec"].as_str().unwrap()).unwrap();
    assert_eq!(spec["hidden"], serde_json::json!([24, 12]));
    // GELU's exact form (tanh), also on its own and as the PyTorch module.
    assert_eq!(spec["activation"], "gelu_tanh");
    assert_eq!(h["__metadata__"]["ringtrain.activation"], "gelu_tanh");
    assert_eq!(
        h["__metadata__"]["ringtrain.torch_activation"],
        "nn.GELU(approximate='tanh')"
    );
    assert_eq!(spec["tasks"][0]["kind"], "classify");
    assert_eq!(spec["tasks"][0]["classes"], 4);
    assert_eq!(spec["tasks"][1]["dim"], 2);
    assert_eq!(h["__metadata__"]["format"], "pt");
    // No temporary file left beside it.
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn init_starts_from_saved_parameters() {
    let tmp = tempdir("init");
    let dir = tmp.path();
    let (a, b, c) = (dir.join("a.st"), dir.join("b.st"), dir.join("c.st"));
    let base = [
        "train",
        "--hidden",
        "16",
        "--global-batch",
        "32",
        "--optimizer",
        "sgd",
    ];
    mpirun(2, &[&base[..], &["--steps", "5", "--save", s(&a)]].concat()).ok();
    // A step with a vanishing learning rate changes nothing: b == a exactly.
    let tiny = ["--steps", "1", "--lr", "1e-30", "--schedule", "constant"];
    mpirun(
        2,
        &[&base[..], &tiny[..], &["--init", s(&a), "--save", s(&b)]].concat(),
    )
    .ok();
    let (pa, pb) = (read_params(&a), read_params(&b));
    assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()));
    // Without --init the same run starts from the seeded init instead.
    mpirun(2, &[&base[..], &tiny[..], &["--save", s(&c)]].concat()).ok();
    assert!(common::rel_diff(&read_params(&c), &pa) > 1e-3);
}

#[test]
fn flags_override_the_config_file() {
    let tmp = tempdir("config");
    let dir = tmp.path();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[train]\nsteps = 3\nglobal_batch = 16\nlog_every = 1\n[model]\nhidden = [8]\n",
    )
    .unwrap();
    let r = mpirun(2, &["train", "--config", s(&cfg)]);
    r.ok();
    assert!(r.stdout.contains("step      3/3"), "{}", r.stdout);
    assert!(r.stdout.contains("global batch 16"), "{}", r.stdout);
    let r = mpirun(2, &["train", "--config", s(&cfg), "--steps", "2"]);
    r.ok();
    assert!(r.stdout.contains("step      2/2"), "{}", r.stdout);
}

#[test]
fn info_reports_every_rank() {
    let r = mpirun(3, &["info"]);
    r.ok();
    assert!(r.stdout.contains("world: 3 rank(s)"), "{}", r.stdout);
    for rank in 0..3 {
        assert!(
            r.stdout.contains(&format!("rank {rank}: host")),
            "{}",
            r.stdout
        );
    }
    assert!(r.stdout.contains("local rank 2 of 3"), "{}", r.stdout);
    assert!(r.stdout.contains("Open MPI"), "{}", r.stdout);
}

/// The saved file alone rebuilds the model in NumPy, and that model scores
/// what ringtrain's own evaluation printed. Needs a Python with numpy and
/// safetensors (launch/test.sh provides one in RINGTRAIN_PYTHON).
#[test]
fn another_framework_rebuilds_the_model_from_the_file_alone() {
    let python = std::env::var("RINGTRAIN_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_deps = std::process::Command::new(&python)
        .args(["-c", "import numpy, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_deps {
        eprintln!("skipped: {python} lacks numpy/safetensors (launch/test.sh installs them)");
        return;
    }
    let tmp = tempdir("numpy-forward");
    let dir = tmp.path();
    let data = dir.join("data");
    single(&[
        "data",
        "synth",
        "--out",
        s(&data),
        "--train",
        "2000",
        "--val",
        "500",
    ])
    .ok();
    let model = dir.join("m.safetensors");
    let r = mpirun(
        2,
        &[
            "train",
            "--data",
            s(&data),
            "--steps",
            "60",
            "--global-batch",
            "64",
            "--activation",
            "gelu",
            "--save",
            s(&model),
        ],
    );
    r.ok();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/forward_from_file.py"
    );
    let out = std::process::Command::new(&python)
        .args([script, s(&model), s(&data)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py = String::from_utf8_lossy(&out.stdout);
    let eval = r.stdout.lines().rfind(|l| l.starts_with("eval")).unwrap();
    assert!(py.contains("activation gelu_tanh\n"), "{py}");
    for line in py.lines().filter(|l| !l.starts_with("activation ")) {
        let mut w = line.split_whitespace();
        let (task, acc) = (w.next().unwrap(), w.nth(1).unwrap().parse::<f64>().unwrap());
        let ours = format!("{task} acc {acc:.4}");
        assert!(eval.contains(&ours), "numpy: {line}; ringtrain: {eval}");
    }
    assert_eq!(py.lines().count(), 3, "{py}");
}
