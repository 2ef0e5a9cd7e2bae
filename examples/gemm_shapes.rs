//! The CPU GEMM libraries side by side at the training step's real shapes.
//!
//!     cargo run --release --example gemm_shapes [-- REPEATS]
//!
//! For each model (the default 32 -> 256,256 -> 7, the wide 256 ->
//! 1024,1024,1024 -> 7 and a tiny 32 -> 64 -> 7, 256 rows) it lists every
//! GEMM of one step — forward NT, the weight gradients TN and the input
//! gradients NN of backward, the skinny head GEMMs included — and times each
//! library on it, and `by-shape` (each product by the library
//! `GemmLib::for_shape` picks: what ringtrain uses), interleaved, median of
//! REPEATS rounds; then the sum over the step, and the chosen library's
//! time over the fastest library's at each shape. Threads:
//! `MATMUL_NUM_THREADS` (1 if unset). `CPU_TIME=1` times by the thread's CPU
//! time (one thread), which other processes sharing the machine disturb far
//! less than wall time.

use std::time::Instant;

use ringtrain::backend::Gemm;
use ringtrain::backend::cpu_gemm::{CHOSEN, GemmLib, gemm_threads, gemm_with};

/// The GEMMs of one training step (same shapes and transposes as
/// `Model::forward`/`backward`).
fn step_gemms(input: usize, hidden: &[usize], out: usize, rows: usize) -> Vec<Gemm> {
    let widths: Vec<usize> = std::iter::once(input)
        .chain(hidden.iter().copied())
        .chain([out])
        .collect();
    let mut v = vec![];
    for w in widths.windows(2) {
        v.push(Gemm::new(rows, w[1], w[0], false, true));
    }
    for (i, w) in widths.windows(2).enumerate().rev() {
        v.push(Gemm::new(w[1], w[0], rows, true, false));
        if i > 0 {
            v.push(Gemm::new(rows, w[0], w[1], false, false));
        }
    }
    v
}

fn label(g: &Gemm) -> String {
    let t = |b| if b { 'T' } else { 'N' };
    format!("{}x{}x{} {}{}", g.m, g.n, g.k, t(g.trans_a), t(g.trans_b))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// This thread's CPU time in seconds (1 thread: what the GEMM itself took,
/// not the time other processes on a shared machine had the core).
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Seconds per call of `lib` on `g` (enough calls for ~10 ms): wall time,
/// or with `CPU_TIME=1` and one thread, this thread's CPU time.
fn time(lib: GemmLib, g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> f64 {
    let flops = 2.0 * (g.m * g.n * g.k) as f64;
    let calls = ((1e9 / flops) as usize).clamp(3, 20_000);
    gemm_with(lib, g, a, b, c);
    let cpu = cpu_time();
    let (t0, c0) = (Instant::now(), thread_cpu_s());
    for _ in 0..calls {
        gemm_with(lib, g, a, b, c);
    }
    let s = if cpu {
        thread_cpu_s() - c0
    } else {
        t0.elapsed().as_secs_f64()
    };
    s / calls as f64
}

/// Seconds of the library ringtrain uses ([`CHOSEN`]), if it was timed.
fn chosen(libs: &[GemmLib], secs: &[f64]) -> f64 {
    libs.iter()
        .position(|&l| l == CHOSEN)
        .map_or(f64::NAN, |i| secs[i])
}

fn cpu_time() -> bool {
    gemm_threads() == 1 && std::env::var("CPU_TIME").is_ok_and(|v| v == "1")
}

fn main() {
    // matrixmultiply uses every physical core when MATMUL_NUM_THREADS is
    // unset; ringtrain sets it from --threads (1 by default): do the same.
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        // SAFETY: first thing in main, before any other thread exists.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", "1") };
    }
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // LIB=gemm or LIB=matrixmultiply times one library alone (for perf).
    let only = std::env::var("LIB").unwrap_or_default();
    let libs: Vec<GemmLib> = GemmLib::ALL
        .into_iter()
        .chain([GemmLib::ByShape])
        .filter(|l| only.is_empty() || l.name() == only)
        .collect();
    println!(
        "GEMM libraries, f32, {} thread(s), {} time, median of {repeats} interleaved rounds; chosen: {}",
        gemm_threads(),
        if cpu_time() { "thread CPU" } else { "wall" },
        CHOSEN.name()
    );
    let cases: [(&str, Vec<Gemm>); 4] = [
        (
            "reference shapes",
            vec![
                Gemm::new(1024, 1024, 1024, false, false),
                Gemm::new(7, 256, 256, false, false),
            ],
        ),
        (
            "default model 32 -> 256,256 -> 7",
            step_gemms(32, &[256, 256], 7, 256),
        ),
        (
            "wide model 256 -> 1024,1024,1024 -> 7",
            step_gemms(256, &[1024, 1024, 1024], 7, 256),
        ),
        ("tiny model 32 -> 64 -> 7", step_gemms(32, &[64], 7, 256)),
    ];
    for (name, gemms) in cases {
        println!("\n{name}");
        print!("{:<22}", "m x n x k op");
        for &l in &libs {
            print!(" {:>16}", format!("{} GFLOP/s", l.name()));
        }
        println!(" {:>14}", "chosen / best");
        let mut total = vec![0.0; libs.len()];
        let mut flops_total = 0.0;
        // The sum over shapes of the fastest library at each.
        let mut best_total = 0.0;
        for g in gemms {
            let len = |r: usize, c: usize| r * c;
            let a: Vec<f32> = (0..len(g.m, g.k)).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..len(g.k, g.n)).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut c = vec![0f32; g.m * g.n];
            let mut t = vec![vec![]; libs.len()];
            for _ in 0..repeats {
                for (i, &l) in libs.iter().enumerate() {
                    t[i].push(time(l, g, &a, &b, &mut c));
                }
            }
            let flops = 2.0 * (g.m * g.n * g.k) as f64;
            flops_total += flops;
            print!("{:<22}", label(&g));
            let med: Vec<f64> = t.into_iter().map(median).collect();
            for (i, s) in med.iter().enumerate() {
                total[i] += s;
                print!(" {:>16.1}", flops / s / 1e9);
            }
            let best = med.iter().copied().fold(f64::INFINITY, f64::min);
            best_total += best;
            println!(" {:>14.2}", chosen(&libs, &med) / best);
        }
        print!("{:<22}", "whole step");
        for s in &total {
            print!(" {:>16.1}", flops_total / s / 1e9);
        }
        let ms: Vec<String> = total.iter().map(|s| format!("{:.3}", 1e3 * s)).collect();
        println!(
            " {:>14.2}   (ms: {}; best library per shape {:.3})",
            chosen(&libs, &total) / best_total,
            ms.join(" / "),
            1e3 * best_total
        );
    }
}
