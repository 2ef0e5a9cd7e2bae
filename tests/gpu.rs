//! The GPU backend on a real GPU (cudarc) against the CPU reference: the
//! checks of tests/gpu_checks (op by op, and 20 training steps), plus a
//! kernel bandwidth report. tests/gpu_emu.rs runs the same checks on the
//! CPU emulator of the kernels, without a GPU.
//!
//! Every test needs a GPU and is `#[ignore]`d, so without one it shows as
//! ignored, never passed; launch/test.sh adds `--include-ignored` when
//! `nvidia-smi -L` works. Run by hand with
//! `cargo test --release --test gpu -- --include-ignored`. Run without a
//! usable GPU, each fails and says why (it never passes vacuously).

mod gpu_checks;

use gpu_checks as checks;
use ringtrain::backend::Backend;
use ringtrain::backend::UpdateArgs;
use ringtrain::backend::UpdateRule;
use ringtrain::backend::cuda::probe::{Probe, probe};
use ringtrain::backend::cuda::{CudaBackend, CudaOptions};
use ringtrain::backend::gpu::GpuRuntime;
use ringtrain::spec::Activation;

fn gpu() -> CudaBackend {
    gpu_with(CudaOptions::default())
}

fn gpu_with(opts: CudaOptions) -> CudaBackend {
    match probe() {
        Probe::Usable { .. } => CudaBackend::new(0, opts).unwrap_or_else(|e| panic!("{e}")),
        Probe::Unusable(why) => panic!("this test needs a GPU: {why}"),
    }
}

fn bf16() -> CudaBackend {
    gpu_with(CudaOptions {
        bf16: true,
        ..CudaOptions::default()
    })
}

/// One `#[ignore]`d test per check, on a fresh backend.
macro_rules! on_gpu {
    ($($name:ident($make:ident, $arg:tt)),* $(,)?) => {$(
        #[test]
        #[ignore = "needs a GPU"]
        fn $name() {
            on_gpu!(@call $name, $make, $arg);
        }
    )*};
    (@call $name:ident, $make:ident, ref) => { checks::$name(&$make()) };
    (@call $name:ident, $make:ident, own) => { checks::$name($make()) };
}

on_gpu!(
    upload_download_zero_round_trip(gpu, ref),
    gemm_matches_cpu_in_every_transpose_with_offsets(gpu, ref),
    bias_act_and_act_backward_match_cpu(gpu, ref),
    col_sum_sum_squares_and_scale_match_cpu(gpu, ref),
    task_losses_match_cpu_with_missing_labels_and_accumulate(gpu, ref),
    sgd_and_adamw_updates_match_cpu_with_and_without_clipping(gpu, ref),
    bf16_gemm_matches_cpu_within_1e2(bf16, ref),
    bf16_activation_storage_matches_cpu(bf16, ref),
    twenty_training_steps_match_cpu_sgd(gpu, own),
    twenty_training_steps_match_cpu_adamw(gpu, own),
    twenty_local_steps_match_cpu_sgd(gpu, own),
    twenty_steps_with_gradnorm_and_task_stats_match_cpu(gpu, own),
    twenty_steps_with_uncertainty_weighting_match_cpu(gpu, own),
    twenty_training_steps_bf16_stay_close_to_cpu(bf16, own),
);

/// Seconds per call of `f`, by CUDA events on `s` (where `f` queues its work).
fn time_on(s: &cudarc::driver::CudaStream, f: &mut dyn FnMut()) -> f64 {
    use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
    f(); // warm-up
    let reps = 10;
    let t0 = s.record_event(Some(CU_EVENT_DEFAULT)).expect("event");
    for _ in 0..reps {
        f();
    }
    let t1 = s.record_event(Some(CU_EVENT_DEFAULT)).expect("event");
    t0.elapsed_ms(&t1).expect("elapsed") as f64 / 1e3 / reps as f64
}

/// Not a check: each element-wise or fused kernel's effective bandwidth
/// (bytes it must move / time) beside a device-to-device memcpy measured
/// in the same run, for docs/gpu-validation.md. Print with
/// `cargo test --release --test gpu kernel_bandwidth -- --include-ignored --nocapture`.
#[test]
#[ignore = "needs a GPU"]
fn kernel_bandwidth_report() {
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
    let time = |f: &mut dyn FnMut()| time_on(&s, f);
    let gbs = |bytes_per_elem: usize, secs: f64| (bytes_per_elem * n) as f64 / secs / 1e9;
    let mut rows: Vec<(&str, usize, f64)> = vec![];
    let (pc, pa) = (g.ptr(&c, 0), g.ptr(&a, 0));
    let t = time(&mut || g.runtime().copy(pc, pa, 4 * n));
    rows.push(("memcpy d2d (read + write)", 8, t));
    let t = time(&mut || g.scale(&mut a, n, 1.0));
    rows.push(("scale", 8, t));
    let (cols, r) = (1024, n / 1024);
    let t = time(&mut || g.bias_act(Some(Activation::Gelu), r, cols, &c, 0, &mut a, Some(&mut b)));
    rows.push(("bias_act gelu (z rw, h w)", 12, t));
    // z and h in different buffers: the kernel reads both (the one
    // buffer twice would read h from cache and flatter the figure).
    let t = time(&mut || g.act_backward(Activation::Gelu, n, &c, &b, &mut a));
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
    // bf16 activation storage (--precision bf16): half the bytes.
    let gb = bf16();
    let s16 = gb.stream().clone();
    let time = |f: &mut dyn FnMut()| time_on(&s16, f);
    let mk16 = |v: f32| {
        let mut b = gb.alloc_act(n);
        gb.upload(&vec![v; n], &mut b, 0);
        b
    };
    let (mut za, mut ha, zc) = (mk16(0.5), mk16(0.25), mk16(0.125));
    let bias = gb.alloc(cols);
    let t = time(&mut || {
        gb.bias_act(
            Some(Activation::Gelu),
            r,
            cols,
            &bias,
            0,
            &mut za,
            Some(&mut ha),
        )
    });
    rows.push(("bias_act gelu bf16 (z rw, h w)", 6, t));
    let t = time(&mut || gb.act_backward(Activation::Gelu, n, &zc, &ha, &mut za));
    rows.push(("act_backward gelu bf16", 8, t));
    let t = time(&mut || gb.col_sum(r, cols, &zc, &mut b, 0, 0.0));
    rows.push(("col_sum bf16", 2, t));
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
