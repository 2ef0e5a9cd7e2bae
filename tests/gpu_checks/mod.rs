//! The checks of the GPU backend against the CPU reference (`Cpu<f32>`),
//! op by op on fresh random inputs, and 20 training steps end to end,
//! written once for any [`GpuRuntime`]: tests/gpu.rs runs them on a real
//! GPU (cudarc), tests/gpu_emu.rs on the CPU emulator of the kernels.
//!
//! Outputs the op must write are poisoned with NaN first, so an element
//! the kernel skips shows up as NaN in ‖gpu − cpu‖/‖cpu‖.
#![allow(dead_code)]

use ringtrain::app::model_spec;
use ringtrain::backend::cpu::Cpu;
use ringtrain::backend::gpu::{GpuBackend, GpuBuf, GpuRuntime};
use ringtrain::backend::{Backend, Gemm, LossArgs, UpdateArgs, UpdateRule};
use ringtrain::comm::single::Single;
use ringtrain::config::{OptimizerKind, TrainConfig};
use ringtrain::data::synthetic::Synthetic;
use ringtrain::model::layout::{ParamLayout, init_params};
use ringtrain::rng;
use ringtrain::spec::Activation;
use ringtrain::tasks::TaskKind;
use ringtrain::train::Trainer;
use ringtrain::watchdog::Watchdog;

pub const F32_TOL: f64 = 1e-5;

pub const BF16_TOL: f64 = 1e-2;

pub fn randn(n: usize, stream: u64) -> Vec<f32> {
    (0..n)
        .map(|i| rng::normal(42, stream, i as u64) as f32)
        .collect()
}

pub fn rel(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    let num: f64 = gpu
        .iter()
        .zip(cpu)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = cpu.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

pub fn close(what: &str, gpu: &[f32], cpu: &[f32]) {
    let r = rel(gpu, cpu);
    assert!(
        r <= F32_TOL,
        "{what}: ‖gpu − cpu‖/‖cpu‖ = {r:e} (> {F32_TOL:e})"
    );
}

pub fn up<R: GpuRuntime>(g: &GpuBackend<R>, v: &[f32]) -> GpuBuf<R::Mem> {
    let mut b = g.alloc(v.len());
    g.upload(v, &mut b, 0);
    b
}

pub fn down<R: GpuRuntime>(g: &GpuBackend<R>, b: &GpuBuf<R::Mem>, len: usize) -> Vec<f32> {
    let mut v = vec![0f32; len];
    g.download(b, 0, &mut v);
    v
}

/// The f64 CPU backend on f32 data, rounded back: the reference for sums
/// over many elements, where a sequential f32 sum is itself off by more
/// than the tolerance (≈ ε·√n).
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
pub fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn nan(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

pub fn upload_download_zero_round_trip<R: GpuRuntime>(g: &GpuBackend<R>) {
    let x = randn(1000, 1);
    let mut b = up(g, &x);
    assert_eq!(down(g, &b, 1000), x);
    g.zero(&mut b, 10, 20);
    let y = down(g, &b, 1000);
    assert!(y[10..30].iter().all(|&v| v == 0.0));
    assert_eq!(&y[..10], &x[..10]);
    assert_eq!(&y[30..], &x[30..]);
    let nf = up(g, &[1.0, f32::NAN, f32::INFINITY, 2.0]);
    assert_eq!(g.count_nonfinite(&nf, 4), 2);
}

pub fn gemm_matches_cpu_in_every_transpose_with_offsets<R: GpuRuntime>(g: &GpuBackend<R>) {
    let c = Cpu::<f32>::new();
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
                let mut gc = up(g, &init);
                g.gemm(gm, &up(g, &a), &up(g, &b), &mut gc);
                let got = down(g, &gc, co + m * n);
                let what = format!("gemm {m}x{n}x{k} ta={ta} tb={tb} α={alpha} β={beta}");
                close(&what, &got, &want);
                assert_eq!(&got[..co], &c0[..co], "{what}: wrote before c_off");
            }
        }
    }
}

/// (rows, cols, bias offset) of the bias + activation checks. cols 24 with
/// an aligned bias: the 4-wide kernels; cols 13 or bias offset 1: the
/// scalar ones; 1500 and 700 rows: more elements than the emulator's grid
/// has threads, so grid-stride loops go round (the column stepping).
const BIAS_ACT_SHAPES: [(usize, usize, usize); 5] = [
    (37, 24, 0),
    (37, 13, 0),
    (50, 24, 1),
    (1500, 24, 0),
    (700, 13, 0),
];

pub fn bias_act_and_act_backward_match_cpu<R: GpuRuntime>(g: &GpuBackend<R>) {
    let c = Cpu::<f32>::new();
    for (rows, cols, boff) in BIAS_ACT_SHAPES {
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
            let (mut gz, mut gh) = (up(g, &z0), up(g, &nan(n)));
            g.bias_act(act, rows, cols, &up(g, &bias), boff, &mut gz, Some(&mut gh));
            let what = format!("bias_act {act:?} {rows}x{cols}+{boff}");
            close(&format!("{what} z"), &down(g, &gz, n), &z);
            let gh = down(g, &gh, n);
            match act {
                Some(_) => close(&format!("{what} h"), &gh, &h),
                None => assert!(gh.iter().all(|v| v.is_nan()), "{what}: h written"),
            }
            let Some(act) = act else { continue };
            let dh0 = randn(n, 7);
            let mut dh = dh0.clone();
            c.act_backward(act, n, &z, &h, &mut dh);
            let mut gd = up(g, &dh0);
            g.act_backward(act, n, &up(g, &z), &up(g, &h), &mut gd);
            close(
                &format!("act_backward {act:?} n={n}"),
                &down(g, &gd, n),
                &dh,
            );
        }
    }
}

pub fn col_sum_sum_squares_and_scale_match_cpu<R: GpuRuntime>(g: &GpuBackend<R>) {
    let c = Cpu::<f32>::new();
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
            let mut go = up(g, &init);
            g.col_sum(rows, cols, &up(g, &x), &mut go, off, beta);
            let got = down(g, &go, o0.len());
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
        let mut gs = up(g, &nan(3));
        g.sum_squares(&up(g, &x), n, &mut gs, 1);
        let got = down(g, &gs, 3);
        close(&format!("sum_squares n={n}"), &got[1..2], &s[1..2]);
        assert!(
            got[0].is_nan() && got[2].is_nan(),
            "sum_squares wrote other stats"
        );
        // Deterministic: the same sum twice, bit for bit.
        g.sum_squares(&up(g, &x), n, &mut gs, 1);
        assert_eq!(down(g, &gs, 3)[1].to_bits(), got[1].to_bits());

        let mut y = x.clone();
        c.scale(&mut y, n, 0.37);
        let mut gy = up(g, &x);
        g.scale(&mut gy, n, 0.37);
        close(&format!("scale n={n}"), &down(g, &gy, n), &y);
    }
}

pub fn task_losses_match_cpu_with_missing_labels_and_accumulate<R: GpuRuntime>(g: &GpuBackend<R>) {
    let c = Cpu::<f32>::new();
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
                let mut gd = up(g, &nan(rows * out_cols));
                let mut gs = up(g, &stats0);
                g.task_loss(a, &up(g, &out), &up(g, &labels), &mut gd, &mut gs);
                let got_d = down(g, &gd, rows * out_cols);
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
                let got_s = down(g, &gs, 3);
                close(&format!("{what} loss sum"), &got_s[1..2], &s[1..2]);
                assert_eq!((got_s[0], got_s[2]), (0.5, 2.0), "{what}: other stats");
            }
        }
    }
}

pub fn sgd_and_adamw_updates_match_cpu_with_and_without_clipping<R: GpuRuntime>(g: &GpuBackend<R>) {
    let c = Cpu::<f32>::new();
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
            let (mut gp, mut gst) = (up(g, &p0), up(g, &st0));
            g.update(a, n, &mut gp, &up(g, &grads), &mut gst, &up(g, &stats));
            let what = format!("{rule:?} clip {clip:?}");
            close(&format!("{what} params"), &down(g, &gp, n), &p);
            let used = match rule {
                UpdateRule::Sgd { .. } => n,
                UpdateRule::AdamW { .. } => 2 * n,
            };
            let got = down(g, &gst, 2 * n);
            close(&format!("{what} state"), &got[..used], &st[..used]);
            assert_eq!(&got[used..], &st0[used..], "{what}: state beyond len");
        }
    }
}

pub fn bf16_gemm_matches_cpu_within_1e2<R: GpuRuntime>(g: &GpuBackend<R>) {
    let c = Cpu::<f32>::new();
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
                let mut gc = up(g, &init);
                g.gemm(gm, &up(g, &a), &up(g, &b), &mut gc);
                let r = rel(&down(g, &gc, m * n), &want);
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

/// `steps` steps of the whole trainer (one rank, 2 micro-batches) on the
/// CPU backend and on `be` from the same start; the losses agree within
/// `loss_tol` at every step. Returns (params on `be`, params on the CPU).
pub fn train_both<R: GpuRuntime>(
    be: GpuBackend<R>,
    optimizer: OptimizerKind,
    activation: Activation,
    steps: u64,
    loss_tol: f64,
) -> (Vec<f32>, Vec<f32>) {
    train_both_with(be, &base_config(optimizer, activation, steps), loss_tol)
}

/// The config of [`train_both`].
pub fn base_config(optimizer: OptimizerKind, activation: Activation, steps: u64) -> TrainConfig {
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
    cfg
}

/// [`train_both`] under any configuration (`cfg.train.steps` steps).
pub fn train_both_with<R: GpuRuntime>(
    be: GpuBackend<R>,
    cfg: &TrainConfig,
    loss_tol: f64,
) -> (Vec<f32>, Vec<f32>) {
    let (g, c, ..) = train_both_weights(be, cfg, loss_tol);
    (g, c)
}

/// [`train_both_with`], also returning the final task weights λ_t on `be`
/// and on the CPU.
pub fn train_both_weights<R: GpuRuntime>(
    be: GpuBackend<R>,
    cfg: &TrainConfig,
    loss_tol: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f64>, Vec<f64>) {
    let steps = cfg.train.steps;
    let data = std::sync::Arc::new(Synthetic::new(
        cfg.data.synthetic_seed,
        cfg.data.synthetic_train,
        64,
    ));
    let spec = model_spec(cfg, &*data).expect("spec");
    let init = init_params(&ParamLayout::new(&spec), 3);
    let comm = Single;

    let wd = Watchdog::off();
    let cpu_be = Cpu::<f32>::new();
    let mut cpu = Trainer::new(cfg, spec.clone(), &comm, &wd, data.clone(), cpu_be, &init);
    let mut gpu_tr = Trainer::new(cfg, spec.clone(), &comm, &wd, data.clone(), be, &init);
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
    (
        gpu_tr.params_to_host(),
        cpu.params_to_host(),
        gpu_tr.weights.lambdas(),
        cpu.weights.lambdas(),
    )
}

/// GradNorm (each task's gradient at the last shared layer, every step)
/// and the task diagnostics: the same weights and parameters as the CPU.
pub fn twenty_steps_with_gradnorm_and_task_stats_match_cpu<R: GpuRuntime>(be: GpuBackend<R>) {
    let mut cfg = base_config(OptimizerKind::Sgd, Activation::Gelu, 20);
    cfg.tasks.weighting = ringtrain::config::TaskWeighting::Gradnorm;
    cfg.tasks.weight_lr = Some(0.05);
    cfg.tasks.stats_every = 5;
    let (g, c, lg, lc) = train_both_weights(be, &cfg, 1e-4);
    close("params after 20 GradNorm steps", &g, &c);
    assert!(
        lc.iter().any(|l| (l - 1.0).abs() > 1e-3),
        "λ never moved: {lc:?}"
    );
    for (a, b) in lg.iter().zip(&lc) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "λ gpu {lg:?} vs cpu {lc:?}"
        );
    }
}

/// Uncertainty weighting: the learned s_t move the same way.
pub fn twenty_steps_with_uncertainty_weighting_match_cpu<R: GpuRuntime>(be: GpuBackend<R>) {
    let mut cfg = base_config(OptimizerKind::Sgd, Activation::Relu, 20);
    cfg.tasks.weighting = ringtrain::config::TaskWeighting::Uncertainty;
    cfg.tasks.weight_lr = Some(0.05);
    let (g, c, lg, lc) = train_both_weights(be, &cfg, 1e-4);
    close("params after 20 uncertainty-weighted steps", &g, &c);
    for (a, b) in lg.iter().zip(&lc) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "λ gpu {lg:?} vs cpu {lc:?}"
        );
    }
}

pub fn twenty_training_steps_match_cpu_sgd<R: GpuRuntime>(be: GpuBackend<R>) {
    let (g, c) = train_both(be, OptimizerKind::Sgd, Activation::Gelu, 20, 1e-4);
    close("params after 20 SGD steps", &g, &c);
}

pub fn twenty_training_steps_match_cpu_adamw<R: GpuRuntime>(be: GpuBackend<R>) {
    let (g, c) = train_both(be, OptimizerKind::Adamw, Activation::Relu, 20, 1e-4);
    // AdamW's step is ≈ lr·sign(g) where |g| is tiny, so a rounding-level
    // difference that flips a tiny gradient's sign moves that parameter by
    // ≈ 2·lr: a looser bound than SGD's, still far below 20 steps' change.
    let r = rel(&g, &c);
    assert!(r <= 1e-3, "params after 20 AdamW steps: {r:e}");
}

/// `--sync local` (H = 4, α = 0.7, Nesterov μ = 0.9): the parameter
/// average and the outer update every 4 steps go through the backend's
/// buffers (upload, download) and match the CPU backend.
pub fn twenty_local_steps_match_cpu_sgd<R: GpuRuntime>(be: GpuBackend<R>) {
    let mut cfg = TrainConfig::default();
    cfg.model.hidden = vec![64, 48];
    cfg.optim.optimizer = OptimizerKind::Sgd;
    cfg.optim.lr = 0.05;
    cfg.train.global_batch = 96;
    cfg.train.steps = 20;
    cfg.data.synthetic_train = 4096;
    cfg.sync.mode = ringtrain::config::SyncMode::Local;
    cfg.sync.local_steps = 4;
    cfg.sync.outer_lr = 0.7;
    cfg.sync.outer_momentum = 0.9;
    let (g, c) = train_both_with(be, &cfg, 1e-4);
    close(
        "params after 20 local SGD steps with 5 outer updates",
        &g,
        &c,
    );
}

/// With bf16 GEMM operands (`be` made with `bf16: true`).
pub fn twenty_training_steps_bf16_stay_close_to_cpu<R: GpuRuntime>(be: GpuBackend<R>) {
    let (g, c) = train_both(be, OptimizerKind::Sgd, Activation::Gelu, 20, 2e-2);
    let r = rel(&g, &c);
    assert!(
        r <= BF16_TOL,
        "params after 20 SGD steps, bf16 GEMMs: {r:e}"
    );
}

fn close_bf16(what: &str, gpu: &[f32], cpu: &[f32]) {
    let r = rel(gpu, cpu);
    assert!(
        r <= BF16_TOL,
        "{what}: ‖gpu − cpu‖/‖cpu‖ = {r:e} (> {BF16_TOL:e})"
    );
}

/// `--precision bf16` storage (`be` made with `bf16: true`): activation
/// buffers round to bf16 on upload; bias + activation, its backward, the
/// column sums and GEMMs into and out of bf16 buffers match the CPU on the
/// same (bf16-rounded) inputs within 1e-2, unwritten elements poisoned.
pub fn bf16_activation_storage_matches_cpu<R: GpuRuntime>(g: &GpuBackend<R>) {
    let c = Cpu::<f32>::new();
    let act_up = |v: &[f32]| {
        let mut b = g.alloc_act(v.len());
        g.upload(v, &mut b, 0);
        b
    };
    // Round trip: bf16 keeps 8 significant bits.
    let x = randn(1001, 40);
    let bx = act_up(&x);
    assert_eq!(g.act_elem_bytes(), 2, "not a bf16 backend");
    let back = down(g, &bx, x.len());
    for (a, b) in x.iter().zip(&back) {
        assert!(
            (a - b).abs() <= a.abs() / 256.0,
            "bf16 round trip {a} -> {b}"
        );
    }
    assert!(back != x, "activation buffers are not bf16");

    for (rows, cols, boff) in BIAS_ACT_SHAPES {
        for act in [Activation::Relu, Activation::Gelu, Activation::Tanh] {
            let n = rows * cols;
            let bias = randn(boff + cols, 41);
            let (mut gz, mut gh) = (act_up(&randn(n, 42)), act_up(&nan(n)));
            // The CPU starts from the values the GPU holds (rounded).
            let z0 = down(g, &gz, n);
            let (mut z, mut h) = (z0.clone(), vec![0f32; n]);
            c.bias_act(Some(act), rows, cols, &bias, boff, &mut z, Some(&mut h));
            g.bias_act(
                Some(act),
                rows,
                cols,
                &up(g, &bias),
                boff,
                &mut gz,
                Some(&mut gh),
            );
            let what = format!("bf16 bias_act {act:?} {rows}x{cols}+{boff}");
            close_bf16(&format!("{what} z"), &down(g, &gz, n), &z);
            close_bf16(&format!("{what} h"), &down(g, &gh, n), &h);

            let (gzr, ghr) = (down(g, &gz, n), down(g, &gh, n));
            let mut gd = act_up(&randn(n, 43));
            let mut dh = down(g, &gd, n);
            c.act_backward(act, n, &gzr, &ghr, &mut dh);
            g.act_backward(act, n, &gz, &gh, &mut gd);
            close_bf16(
                &format!("bf16 act_backward {act:?} n={n}"),
                &down(g, &gd, n),
                &dh,
            );
        }
    }
    // An odd length: the scalar backward.
    let n = 101;
    let (gz, gh) = (act_up(&randn(n, 44)), act_up(&randn(n, 45)));
    let mut gd = act_up(&randn(n, 46));
    let mut dh = down(g, &gd, n);
    c.act_backward(
        Activation::Tanh,
        n,
        &down(g, &gz, n),
        &down(g, &gh, n),
        &mut dh,
    );
    g.act_backward(Activation::Tanh, n, &gz, &gh, &mut gd);
    close_bf16("bf16 act_backward n=101", &down(g, &gd, n), &dh);

    // Column sums of a bf16 matrix into f32.
    for (rows, cols) in [(37, 13), (1000, 70)] {
        let gx = act_up(&randn(rows * cols, 47));
        let xr = down(g, &gx, rows * cols);
        for beta in [0.0, 1.0] {
            let o0 = randn(cols + 3, 48);
            let mut want = o0.clone();
            c.col_sum(rows, cols, &xr, &mut want, 3, beta);
            let mut init = o0.clone();
            if beta == 0.0 {
                init[3..].fill(f32::NAN);
            }
            let mut go = up(g, &init);
            g.col_sum(rows, cols, &gx, &mut go, 3, beta);
            let got = down(g, &go, cols + 3);
            close_bf16(&format!("bf16 col_sum {rows}x{cols} β={beta}"), &got, &want);
            assert_eq!(&got[..3], &o0[..3], "col_sum wrote before its offset");
        }
    }

    // GEMMs as the model runs them: f32 weights (cast) with a bf16 input
    // into a bf16 output (forward), and bf16 × bf16 into f32 gradients
    // with beta 1 (weight gradients over micro-batches).
    let (m, n, k) = (37, 29, 24);
    let gx = act_up(&randn(m * k, 49));
    let w = randn(n * k, 50);
    let mut gz = act_up(&nan(m * n));
    let fwd = Gemm::new(m, n, k, false, true);
    g.gemm(fwd, &gx, &up(g, &w), &mut gz);
    let mut want = vec![0f32; m * n];
    c.gemm(fwd, &down(g, &gx, m * k), &w, &mut want);
    close_bf16("bf16 gemm into bf16", &down(g, &gz, m * n), &want);

    let gdz = act_up(&randn(m * n, 51));
    let g0 = randn(n * k + 5, 52);
    let mut gg = up(g, &g0);
    let wgrad = Gemm {
        c_off: 5,
        beta: 1.0,
        ..Gemm::new(n, k, m, true, false)
    };
    g.gemm(wgrad, &gdz, &gx, &mut gg);
    let mut want = g0.clone();
    c.gemm(
        wgrad,
        &down(g, &gdz, m * n),
        &down(g, &gx, m * k),
        &mut want,
    );
    let got = down(g, &gg, n * k + 5);
    close_bf16("bf16 × bf16 gemm into f32, beta 1", &got, &want);
    assert_eq!(&got[..5], &g0[..5], "gemm wrote before c_off");
}
