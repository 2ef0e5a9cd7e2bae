//! The CUDA backend against the CPU reference (`Cpu<f32>`), op by op on
//! fresh random inputs, and 20 training steps end to end.
//!
//! Every test needs a GPU and is `#[ignore]`d, so without one it shows as
//! ignored, never passed; launch/test.sh adds `--include-ignored` when
//! `nvidia-smi -L` works. Run by hand with
//! `cargo test --release --test gpu -- --include-ignored`. Run without a
//! usable GPU, each fails and says why (it never passes vacuously).
//!
//! Outputs the op must write are poisoned with NaN on the GPU first, so
//! an element the kernel skips shows up as NaN in ‖gpu − cpu‖/‖cpu‖.

use cudarc::driver::CudaSlice;
use ringtrain::app::model_spec;
use ringtrain::app::train::cuda_grad_sync;
use ringtrain::backend::cpu::Cpu;
use ringtrain::backend::cuda::probe::{Probe, probe};
use ringtrain::backend::cuda::{CudaBackend, CudaOptions};
use ringtrain::backend::{Backend, Gemm, LossArgs, UpdateArgs, UpdateRule};
use ringtrain::comm::single::Single;
use ringtrain::config::{OptimizerKind, TrainConfig};
use ringtrain::data::synthetic::Synthetic;
use ringtrain::model::layout::{ParamLayout, init_params};
use ringtrain::model::spec::Activation;
use ringtrain::rng;
use ringtrain::tasks::TaskKind;
use ringtrain::train::{Trainer, host_grad_sync};

const F32_TOL: f64 = 1e-5;

fn gpu() -> CudaBackend {
    gpu_with(CudaOptions::default())
}

fn gpu_with(opts: CudaOptions) -> CudaBackend {
    match probe() {
        Probe::Usable { .. } => CudaBackend::new(0, opts).unwrap_or_else(|e| panic!("{e}")),
        Probe::Unusable(why) => panic!("this test needs a GPU: {why}"),
    }
}

const BF16_TOL: f64 = 1e-2;

fn randn(n: usize, stream: u64) -> Vec<f32> {
    (0..n)
        .map(|i| rng::normal(42, stream, i as u64) as f32)
        .collect()
}

fn rel(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    let num: f64 = gpu
        .iter()
        .zip(cpu)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = cpu.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn close(what: &str, gpu: &[f32], cpu: &[f32]) {
    let r = rel(gpu, cpu);
    assert!(
        r <= F32_TOL,
        "{what}: ‖gpu − cpu‖/‖cpu‖ = {r:e} (> {F32_TOL:e})"
    );
}

fn up(g: &CudaBackend, v: &[f32]) -> CudaSlice<f32> {
    let mut b = g.alloc(v.len());
    g.upload(v, &mut b, 0);
    b
}

fn down(g: &CudaBackend, b: &CudaSlice<f32>, len: usize) -> Vec<f32> {
    let mut v = vec![0f32; len];
    g.download(b, 0, &mut v);
    v
}

/// The f64 CPU backend on f32 data, rounded back: the reference for sums
/// over many elements, where a sequential f32 sum is itself off by more
/// than the tolerance (≈ ε·√n).
fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn nan(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

#[test]
#[ignore = "needs a GPU"]
fn upload_download_zero_round_trip() {
    let g = gpu();
    let x = randn(1000, 1);
    let mut b = up(&g, &x);
    assert_eq!(down(&g, &b, 1000), x);
    g.zero(&mut b, 10, 20);
    let y = down(&g, &b, 1000);
    assert!(y[10..30].iter().all(|&v| v == 0.0));
    assert_eq!(&y[..10], &x[..10]);
    assert_eq!(&y[30..], &x[30..]);
    let nf = up(&g, &[1.0, f32::NAN, f32::INFINITY, 2.0]);
    assert_eq!(g.count_nonfinite(&nf, 4).unwrap(), 2);
}

#[test]
#[ignore = "needs a GPU"]
fn gemm_matches_cpu_in_every_transpose_with_offsets() {
    let (g, c) = (gpu(), Cpu::<f32>::new());
    for (m, n, k) in [(37, 29, 13), (64, 128, 256), (1, 7, 5), (130, 3, 1)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (2.0, -0.25)] {
                let (ao, bo, co) = (3, 5, 7);
                let a = randn(ao + m * k, 2);
                let b = randn(bo + k * n, 3);
                let c0 = randn(co + m * n, 4);
                let gm = Gemm {
                    a_off: ao,
                    b_off: bo,
                    c_off: co,
                    alpha,
                    beta,
                    ..Gemm::new(m, n, k, ta, tb)
                };
                let mut want = c0.clone();
                c.gemm(gm, &a, &b, &mut want);
                // beta = 0 must overwrite: poison the output region.
                let mut init = c0.clone();
                if beta == 0.0 {
                    init[co..].fill(f32::NAN);
                }
                let mut gc = up(&g, &init);
                g.gemm(gm, &up(&g, &a), &up(&g, &b), &mut gc);
                let got = down(&g, &gc, co + m * n);
                let what = format!("gemm {m}x{n}x{k} ta={ta} tb={tb} α={alpha} β={beta}");
                close(&what, &got, &want);
                assert_eq!(&got[..co], &c0[..co], "{what}: wrote before c_off");
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn bias_act_and_act_backward_match_cpu() {
    let (g, c) = (gpu(), Cpu::<f32>::new());
    // cols 24: float4 path; cols 13: scalar path; bias offset 1: unaligned.
    for (rows, cols, boff) in [(37, 24, 0), (37, 13, 0), (50, 24, 1)] {
        for act in [
            None,
            Some(Activation::Relu),
            Some(Activation::Gelu),
            Some(Activation::Tanh),
        ] {
            let n = rows * cols;
            let bias = randn(boff + cols, 5);
            let z0 = randn(n, 6);
            let (mut z, mut h) = (z0.clone(), vec![0f32; n]);
            c.bias_act(act, rows, cols, &bias, boff, &mut z, Some(&mut h));
            let (mut gz, mut gh) = (up(&g, &z0), up(&g, &nan(n)));
            g.bias_act(
                act,
                rows,
                cols,
                &up(&g, &bias),
                boff,
                &mut gz,
                Some(&mut gh),
            );
            let what = format!("bias_act {act:?} {rows}x{cols}+{boff}");
            close(&format!("{what} z"), &down(&g, &gz, n), &z);
            let gh = down(&g, &gh, n);
            match act {
                Some(_) => close(&format!("{what} h"), &gh, &h),
                None => assert!(gh.iter().all(|v| v.is_nan()), "{what}: h written"),
            }
            let Some(act) = act else { continue };
            let dh0 = randn(n, 7);
            let mut dh = dh0.clone();
            c.act_backward(act, n, &z, &h, &mut dh);
            let mut gd = up(&g, &dh0);
            g.act_backward(act, n, &up(&g, &z), &up(&g, &h), &mut gd);
            close(
                &format!("act_backward {act:?} n={n}"),
                &down(&g, &gd, n),
                &dh,
            );
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn col_sum_sum_squares_and_scale_match_cpu() {
    let (g, c) = (gpu(), Cpu::<f32>::new());
    for (rows, cols) in [(1, 1), (37, 13), (1000, 70), (4096, 33)] {
        let x = randn(rows * cols, 8);
        for beta in [0.0, 1.0, 0.5] {
            let off = 3;
            let o0 = randn(off + cols + 2, 9);
            let mut want64 = f64s(&o0);
            Cpu::<f64>::new().col_sum(rows, cols, &f64s(&x), &mut want64, off, beta);
            let want = f32s(&want64);
            let mut init = o0.clone();
            if beta == 0.0 {
                init[off..off + cols].fill(f32::NAN);
            }
            let mut go = up(&g, &init);
            g.col_sum(rows, cols, &up(&g, &x), &mut go, off, beta);
            let got = down(&g, &go, o0.len());
            close(&format!("col_sum {rows}x{cols} β={beta}"), &got, &want);
            assert_eq!(&got[..off], &o0[..off]);
            assert_eq!(&got[off + cols..], &o0[off + cols..]);
        }
    }
    for n in [1, 3, 4, 1001, 1 << 20, (1 << 20) + 3] {
        let x = randn(n, 10);
        let mut s = vec![0f32; 3];
        let mut s64 = f64s(&s);
        Cpu::<f64>::new().sum_squares(&f64s(&x), n, &mut s64, 1);
        s = f32s(&s64);
        let mut gs = up(&g, &nan(3));
        g.sum_squares(&up(&g, &x), n, &mut gs, 1);
        let got = down(&g, &gs, 3);
        close(&format!("sum_squares n={n}"), &got[1..2], &s[1..2]);
        assert!(
            got[0].is_nan() && got[2].is_nan(),
            "sum_squares wrote other stats"
        );
        // Deterministic: the same sum twice, bit for bit.
        g.sum_squares(&up(&g, &x), n, &mut gs, 1);
        assert_eq!(down(&g, &gs, 3)[1].to_bits(), got[1].to_bits());

        let mut y = x.clone();
        c.scale(&mut y, n, 0.37);
        let mut gy = up(&g, &x);
        g.scale(&mut gy, n, 0.37);
        close(&format!("scale n={n}"), &down(&g, &gy, n), &y);
    }
}

#[test]
#[ignore = "needs a GPU"]
fn task_losses_match_cpu_with_missing_labels_and_accumulate() {
    let (g, c) = (gpu(), Cpu::<f32>::new());
    let kinds = [
        TaskKind::Classify { classes: 5 },
        TaskKind::Regress { dim: 3 },
        TaskKind::Binary,
    ];
    for rows in [1, 37, 3000] {
        for kind in kinds {
            let (w, lw) = (kind.out_dim(), kind.label_dim());
            let (out_cols, label_cols) = (w + 3, lw + 2);
            let out = randn(rows * out_cols, 11);
            let mut labels = randn(rows * label_cols, 12);
            for r in 0..rows {
                for j in 0..lw {
                    let v = &mut labels[r * label_cols + 1 + j];
                    *v = match kind {
                        TaskKind::Classify { classes } => (r % classes) as f32,
                        TaskKind::Binary => (r % 2) as f32,
                        TaskKind::Regress { .. } => *v,
                    };
                    if rng::uniform(1, 13, (r * lw + j) as u64) < 0.2 {
                        *v = f32::NAN;
                    }
                }
            }
            for accumulate in [false, true] {
                let a = LossArgs {
                    kind,
                    rows,
                    out_cols,
                    out_off: 2,
                    label_cols,
                    label_off: 1,
                    grad_scale: 0.3,
                    stat: 1,
                    accumulate,
                };
                let stats0 = vec![0.5f32, 1.25, 2.0];
                let (mut d, mut s) = (vec![0f32; rows * out_cols], stats0.clone());
                c.task_loss(a, &out, &labels, &mut d, &mut s);
                // The loss sum over up to 3000 rows: f64 reference.
                let mut s64 = f64s(&stats0);
                let mut d64 = f64s(&d);
                Cpu::<f64>::new().task_loss(a, &f64s(&out), &f64s(&labels), &mut d64, &mut s64);
                s[1] = s64[1] as f32;
                let mut gd = up(&g, &nan(rows * out_cols));
                let mut gs = up(&g, &stats0);
                g.task_loss(a, &up(&g, &out), &up(&g, &labels), &mut gd, &mut gs);
                let got_d = down(&g, &gd, rows * out_cols);
                let what = format!("{kind:?} rows={rows} acc={accumulate}");
                // The task's columns are written; the others are untouched.
                let cols = |v: &[f32], inside: bool| -> Vec<f32> {
                    (0..rows * out_cols)
                        .filter(|i| ((2..2 + w).contains(&(i % out_cols))) == inside)
                        .map(|i| v[i])
                        .collect()
                };
                close(
                    &format!("{what} dout"),
                    &cols(&got_d, true),
                    &cols(&d, true),
                );
                assert!(
                    cols(&got_d, false).iter().all(|v| v.is_nan()),
                    "{what}: wrote outside the task"
                );
                let got_s = down(&g, &gs, 3);
                close(&format!("{what} loss sum"), &got_s[1..2], &s[1..2]);
                assert_eq!((got_s[0], got_s[2]), (0.5, 2.0), "{what}: other stats");
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn sgd_and_adamw_updates_match_cpu_with_and_without_clipping() {
    let (g, c) = (gpu(), Cpu::<f32>::new());
    let n = 10_003;
    let p0 = randn(n, 20);
    let grads = randn(n, 21);
    let st0 = [randn(n, 22), randn(n, 23)]
        .concat()
        .iter()
        .map(|v| v.abs())
        .collect::<Vec<_>>();
    let norm_sq: f32 = grads.iter().map(|v| v * v).sum();
    let stats = vec![7.0, norm_sq];
    let rules = [
        UpdateRule::Sgd {
            momentum: 0.9,
            first_step: true,
        },
        UpdateRule::Sgd {
            momentum: 0.9,
            first_step: false,
        },
        UpdateRule::Sgd {
            momentum: 0.0,
            first_step: false,
        },
        UpdateRule::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 1,
        },
        UpdateRule::AdamW {
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            step: 17,
        },
    ];
    for rule in rules {
        for clip in [None, Some(1.0), Some(1e6)] {
            let a = UpdateArgs {
                lr: 0.05,
                weight_decay: 0.01,
                clip,
                norm_sq_stat: 1,
                rule,
            };
            let (mut p, mut st) = (p0.clone(), st0.clone());
            c.update(a, n, &mut p, &grads, &mut st, &stats);
            let (mut gp, mut gst) = (up(&g, &p0), up(&g, &st0));
            g.update(a, n, &mut gp, &up(&g, &grads), &mut gst, &up(&g, &stats));
            let what = format!("{rule:?} clip {clip:?}");
            close(&format!("{what} params"), &down(&g, &gp, n), &p);
            let used = match rule {
                UpdateRule::Sgd { .. } => n,
                UpdateRule::AdamW { .. } => 2 * n,
            };
            let got = down(&g, &gst, 2 * n);
            close(&format!("{what} state"), &got[..used], &st[..used]);
            assert_eq!(&got[used..], &st0[used..], "{what}: state beyond len");
        }
    }
}

/// K steps of the whole trainer on each backend from the same start.
fn train_both(
    optimizer: OptimizerKind,
    activation: Activation,
    steps: u64,
) -> (Vec<f32>, Vec<f32>) {
    train_both_with(optimizer, activation, steps, CudaOptions::default(), 1e-4)
}

fn train_both_with(
    optimizer: OptimizerKind,
    activation: Activation,
    steps: u64,
    opts: CudaOptions,
    loss_tol: f64,
) -> (Vec<f32>, Vec<f32>) {
    let mut cfg = TrainConfig::default();
    cfg.model.hidden = vec![64, 48];
    cfg.model.activation = activation;
    cfg.optim.optimizer = optimizer;
    cfg.optim.lr = if optimizer == OptimizerKind::Adamw {
        1e-3
    } else {
        0.05
    };
    cfg.train.global_batch = 96;
    cfg.train.steps = steps;
    cfg.train.accum_steps = 2;
    cfg.data.synthetic_train = 4096;
    let data = Synthetic::new(cfg.data.synthetic_seed, cfg.data.synthetic_train, 64);
    let spec = model_spec(&cfg, &data).expect("spec");
    let init = init_params(&ParamLayout::new(&spec), 3);
    let comm = Single;

    let mut cpu = Trainer::new(
        &cfg,
        spec.clone(),
        &comm,
        host_grad_sync(&cfg, 1),
        &data,
        Cpu::<f32>::new(),
        &init,
    );
    let be = gpu_with(opts);
    let sync = cuda_grad_sync(&cfg, &comm, be.stream().clone());
    let mut gpu_tr = Trainer::new(&cfg, spec.clone(), &comm, sync, &data, be, &init);
    for step in 0..steps {
        let a = cpu.step(step, true).expect("cpu step");
        let b = gpu_tr.step(step, true).expect("gpu step");
        let r = (a.loss - b.loss).abs() / a.loss.abs().max(1e-12);
        assert!(
            r < loss_tol,
            "step {step}: loss cpu {} gpu {}",
            a.loss,
            b.loss
        );
    }
    (gpu_tr.params_to_host(), cpu.params_to_host())
}

#[test]
#[ignore = "needs a GPU"]
fn twenty_training_steps_match_cpu_sgd() {
    let (g, c) = train_both(OptimizerKind::Sgd, Activation::Gelu, 20);
    close("params after 20 SGD steps", &g, &c);
}

#[test]
#[ignore = "needs a GPU"]
fn twenty_training_steps_match_cpu_adamw() {
    let (g, c) = train_both(OptimizerKind::Adamw, Activation::Relu, 20);
    // AdamW's step is ≈ lr·sign(g) where |g| is tiny, so a rounding-level
    // difference that flips a tiny gradient's sign moves that parameter by
    // ≈ 2·lr: a looser bound than SGD's, still far below 20 steps' change.
    let r = rel(&g, &c);
    assert!(r <= 1e-3, "params after 20 AdamW steps: {r:e}");
}

/// Not a check: each element-wise or fused kernel's effective bandwidth
/// (bytes it must move / time) beside a device-to-device memcpy measured
/// in the same run, for docs/gpu-validation.md. Print with
/// `cargo test --release --test gpu kernel_bandwidth -- --include-ignored --nocapture`.
#[test]
#[ignore = "needs a GPU"]
fn kernel_bandwidth_report() {
    use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
    let g = gpu();
    let n: usize = 1 << 26; // 64 Mi floats, 256 MiB per buffer
    let mk = |v: f32| {
        let mut b = g.alloc(n);
        g.upload(&vec![v; n], &mut b, 0);
        b
    };
    let (mut a, mut b, c) = (mk(0.5), mk(0.25), mk(0.125));
    let mut state = g.alloc(2 * n);
    let mut stats = g.alloc(4);
    let s = g.stream().clone();
    let time = |f: &mut dyn FnMut()| -> f64 {
        f(); // warm-up
        let reps = 10;
        let t0 = s.record_event(Some(CU_EVENT_DEFAULT)).expect("event");
        for _ in 0..reps {
            f();
        }
        let t1 = s.record_event(Some(CU_EVENT_DEFAULT)).expect("event");
        t0.elapsed_ms(&t1).expect("elapsed") as f64 / 1e3 / reps as f64
    };
    let gbs = |bytes_per_elem: usize, secs: f64| (bytes_per_elem * n) as f64 / secs / 1e9;
    let mut rows: Vec<(&str, usize, f64)> = vec![];
    let t = time(&mut || s.memcpy_dtod(&c, &mut a).expect("memcpy"));
    rows.push(("memcpy d2d (read + write)", 8, t));
    let t = time(&mut || g.scale(&mut a, n, 1.0));
    rows.push(("scale", 8, t));
    let (cols, r) = (1024, n / 1024);
    let t = time(&mut || g.bias_act(Some(Activation::Gelu), r, cols, &c, 0, &mut a, Some(&mut b)));
    rows.push(("bias_act gelu (z rw, h w)", 12, t));
    let t = time(&mut || g.act_backward(Activation::Gelu, n, &c, &c, &mut a));
    rows.push(("act_backward gelu", 16, t));
    let t = time(&mut || g.sum_squares(&c, n, &mut stats, 0));
    rows.push(("sum_squares", 4, t));
    let sgd = UpdateArgs {
        lr: 1e-6,
        weight_decay: 0.0,
        clip: Some(1.0),
        norm_sq_stat: 0,
        rule: UpdateRule::Sgd {
            momentum: 0.9,
            first_step: false,
        },
    };
    let t = time(&mut || g.update(sgd, n, &mut a, &c, &mut state, &stats));
    rows.push(("sgd update", 20, t));
    let adamw = UpdateArgs {
        rule: UpdateRule::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 1,
        },
        ..sgd
    };
    let t = time(&mut || g.update(adamw, n, &mut a, &c, &mut state, &stats));
    rows.push(("adamw update", 28, t));
    let t = time(&mut || g.col_sum(r, cols, &c, &mut b, 0, 0.0));
    rows.push(("col_sum", 4, t));
    let memcpy = gbs(rows[0].1, rows[0].2);
    println!("{} ({} floats per buffer)", g.name(), n);
    println!(
        "{:<28} {:>10} {:>10} {:>9}",
        "kernel", "ms", "GB/s", "vs memcpy"
    );
    for (name, bytes, t) in rows {
        let bw = gbs(bytes, t);
        println!(
            "{name:<28} {:>10.3} {:>10.1} {:>8.0}%",
            1e3 * t,
            bw,
            100.0 * bw / memcpy
        );
    }
}

#[test]
#[ignore = "needs a GPU"]
fn bf16_gemm_matches_cpu_within_1e2() {
    let opts = CudaOptions {
        bf16: true,
        ..CudaOptions::default()
    };
    let (g, c) = (gpu_with(opts), Cpu::<f32>::new());
    for (m, n, k) in [(37, 29, 13), (256, 128, 512)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for beta in [0.0, 1.0] {
                let gm = Gemm {
                    a_off: 1,
                    beta,
                    ..Gemm::new(m, n, k, ta, tb)
                };
                let (a, b, c0) = (randn(1 + m * k, 30), randn(k * n, 31), randn(m * n, 32));
                let mut want = c0.clone();
                c.gemm(gm, &a, &b, &mut want);
                let init = if beta == 0.0 { nan(m * n) } else { c0.clone() };
                let mut gc = up(&g, &init);
                g.gemm(gm, &up(&g, &a), &up(&g, &b), &mut gc);
                let r = rel(&down(&g, &gc, m * n), &want);
                assert!(
                    r <= BF16_TOL,
                    "bf16 gemm {m}x{n}x{k} ta={ta} tb={tb} β={beta}: {r:e}"
                );
                // bf16 operands really are used: not bit-equal to f32.
                assert!(r > 0.0, "bf16 gemm {m}x{n}x{k} equals f32 exactly");
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU"]
fn twenty_training_steps_bf16_stay_close_to_cpu() {
    let opts = CudaOptions {
        bf16: true,
        ..CudaOptions::default()
    };
    let (g, c) = train_both_with(OptimizerKind::Sgd, Activation::Gelu, 20, opts, 2e-2);
    let r = rel(&g, &c);
    assert!(
        r <= BF16_TOL,
        "params after 20 SGD steps, bf16 GEMMs: {r:e}"
    );
}
