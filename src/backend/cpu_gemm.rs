//! The CPU backend's GEMM: which library multiplies.
//!
//! Two candidates, both dispatching on the CPU's features at run time (the
//! binary still runs on a CPU without AVX-512):
//! - `matrixmultiply` through ndarray, with its `avx512` kernel compiled in
//!   (ndarray turns matrixmultiply's default features off; Cargo.toml turns
//!   `avx512` back on);
//! - the `gemm` crate (what candle uses), with its `x86-v4` (AVX-512)
//!   kernels compiled in.
//!
//! `examples/gemm_shapes.rs` times both at the training step's real shapes
//! (forward NT, the TN weight gradients and NN input gradients of backward,
//! the skinny heads) side by side; [`CHOSEN`] takes the faster one at each
//! shape.

use std::sync::OnceLock;

use ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};

use super::Gemm;
use super::cpu::Elem;

/// A GEMM implementation the CPU backend can call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmLib {
    /// ndarray's `general_mat_mul` (matrixmultiply).
    MatrixMultiply,
    /// The `gemm` crate.
    GemmCrate,
    /// Each product by the library that is faster at its shape
    /// ([`GemmLib::for_shape`]).
    ByShape,
}

impl GemmLib {
    /// The libraries themselves.
    pub const ALL: [GemmLib; 2] = [GemmLib::MatrixMultiply, GemmLib::GemmCrate];

    pub fn name(self) -> &'static str {
        match self {
            GemmLib::MatrixMultiply => "matrixmultiply",
            GemmLib::GemmCrate => "gemm",
            GemmLib::ByShape => "by-shape",
        }
    }

    /// The library that multiplies `g`: matrixmultiply when every
    /// dimension is at least [`LARGE`], the gemm crate otherwise. Measured
    /// with `examples/gemm_shapes.rs` on the development VM (AMD EPYC,
    /// AVX2/FMA, one thread): matrixmultiply is 5–15% faster on the large
    /// products (1024×1024×256: 81 vs 72 GFLOP/s), the gemm crate 1.1–2.2×
    /// faster on the skinny ones (the 7-wide heads, a 32-wide input).
    pub fn for_shape(self, g: &Gemm) -> GemmLib {
        match self {
            GemmLib::ByShape if g.m.min(g.n).min(g.k) >= LARGE => GemmLib::MatrixMultiply,
            GemmLib::ByShape => GemmLib::GemmCrate,
            lib => lib,
        }
    }
}

/// The smallest dimension at which [`GemmLib::ByShape`] picks
/// matrixmultiply.
pub const LARGE: usize = 128;

/// The library `Cpu::gemm` uses: each product by the faster library at its
/// shape (the README's Performance section has the table).
pub const CHOSEN: GemmLib = GemmLib::ByShape;

/// The library in use: [`CHOSEN`], unless `RINGTRAIN_CPU_GEMM` names
/// another (`matrixmultiply`, `gemm` or `by-shape`; for side-by-side
/// measurements).
pub fn in_use() -> GemmLib {
    static LIB: OnceLock<GemmLib> = OnceLock::new();
    *LIB.get_or_init(|| {
        let want = std::env::var("RINGTRAIN_CPU_GEMM").unwrap_or_default();
        GemmLib::ALL
            .into_iter()
            .chain([GemmLib::ByShape])
            .find(|l| l.name() == want.trim())
            .unwrap_or(CHOSEN)
    })
}

/// GEMM threads per rank: `MATMUL_NUM_THREADS` (what `--threads` sets, and
/// what matrixmultiply reads itself), read once; at least 1.
pub fn gemm_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("MATMUL_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1)
            .max(1)
    })
}

/// Checks that every operand of `g` lies inside its buffer.
fn check_extents(g: &Gemm, a: usize, b: usize, c: usize) {
    assert!(
        g.a_off + g.m * g.k <= a && g.b_off + g.k * g.n <= b && g.c_off + g.m * g.n <= c,
        "gemm operands outside their buffers: {g:?} with buffers of {a}, {b}, {c}"
    );
}

/// C = alpha · op(A) · op(B) + beta · C with `lib` (row-major, see [`Gemm`];
/// beta 0 overwrites C without reading it).
pub fn gemm_with<T: Elem>(lib: GemmLib, g: Gemm, a: &[T], b: &[T], c: &mut [T]) {
    check_extents(&g, a.len(), b.len(), c.len());
    match lib.for_shape(&g) {
        GemmLib::MatrixMultiply => matrixmultiply_gemm(g, a, b, c),
        _ => gemm_crate_gemm(g, a, b, c),
    }
}

fn view<T>(buf: &[T], off: usize, rows: usize, cols: usize, trans: bool) -> ArrayView2<'_, T> {
    let v = ArrayView2::from_shape((rows, cols), &buf[off..off + rows * cols])
        .expect("gemm operand fits its buffer");
    if trans { v.reversed_axes() } else { v }
}

fn matrixmultiply_gemm<T: Elem>(g: Gemm, a: &[T], b: &[T], c: &mut [T]) {
    let (ar, ac) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
    let (br, bc) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
    let av = view(a, g.a_off, ar, ac, g.trans_a);
    let bv = view(b, g.b_off, br, bc, g.trans_b);
    let mut cv = ArrayViewMut2::from_shape((g.m, g.n), &mut c[g.c_off..g.c_off + g.m * g.n])
        .expect("gemm output fits its buffer");
    general_mat_mul(T::of(g.alpha), &av, &bv, T::of(g.beta), &mut cv);
}

fn gemm_crate_gemm<T: Elem>(g: Gemm, a: &[T], b: &[T], c: &mut [T]) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    let (m, n, k) = (g.m as isize, g.n as isize, g.k as isize);
    // (row stride, column stride) of op(A) [m,k] and op(B) [k,n].
    let (a_rs, a_cs) = if g.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if g.trans_b { (1, k) } else { (n, 1) };
    let par = match gemm_threads() {
        1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    let c = &mut c[g.c_off..g.c_off + g.m * g.n];
    let a = &a[g.a_off..g.a_off + g.m * g.k];
    let b = &b[g.b_off..g.b_off + g.k * g.n];
    // SAFETY: the three slices hold op(A), op(B) and C at the strides given
    // (checked above: every index i·rs + j·cs stays inside its slice); C
    // does not alias A or B (it is a distinct &mut). The gemm crate computes
    // dst = alpha·dst + beta·lhs·rhs, so our beta is its alpha and our
    // alpha its beta; with read_dst false it never reads C (BLAS beta 0).
    unsafe {
        gemm::gemm(
            g.m,
            g.n,
            g.k,
            c.as_mut_ptr(),
            1,
            n,
            g.beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::of(g.beta),
            T::of(g.alpha),
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::normal;

    fn randn<T: Elem>(n: usize, stream: u64) -> Vec<T> {
        (0..n)
            .map(|i| T::of64(normal(5, stream, i as u64)))
            .collect()
    }

    /// The textbook triple loop.
    fn naive(g: Gemm, a: &[f64], b: &[f64], c: &mut [f64]) {
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = 0.0;
                for p in 0..g.k {
                    let av = if g.trans_a {
                        a[g.a_off + p * g.m + i]
                    } else {
                        a[g.a_off + i * g.k + p]
                    };
                    let bv = if g.trans_b {
                        b[g.b_off + j * g.k + p]
                    } else {
                        b[g.b_off + p * g.n + j]
                    };
                    s += av * bv;
                }
                let cv = &mut c[g.c_off + i * g.n + j];
                let old = if g.beta == 0.0 {
                    0.0
                } else {
                    g.beta as f64 * *cv
                };
                *cv = g.alpha as f64 * s + old;
            }
        }
    }

    fn check<T: Elem>(tol: f64) {
        let shapes = [
            (1, 1, 1),
            (7, 33, 65),
            (33, 7, 17),
            (64, 48, 1),
            (5, 130, 9),
            (17, 19, 300),
        ];
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-1.5, 0.25)] {
                    let g = Gemm {
                        a_off: 3,
                        b_off: 5,
                        c_off: 2,
                        alpha,
                        beta,
                        ..Gemm::new(m, n, k, ta, tb)
                    };
                    let a: Vec<f64> = randn(3 + m * k + 4, si as u64 * 3);
                    let b: Vec<f64> = randn(5 + k * n + 1, si as u64 * 3 + 1);
                    let mut c0: Vec<f64> = randn(2 + m * n + 3, si as u64 * 3 + 2);
                    if beta == 0.0 {
                        c0[2] = f64::NAN; // must not survive beta 0
                    }
                    let mut want = c0.clone();
                    naive(g, &a, &b, &mut want);
                    let to = |v: &[f64]| v.iter().map(|&x| T::of64(x)).collect::<Vec<T>>();
                    for lib in GemmLib::ALL {
                        let mut c = to(&c0);
                        gemm_with(lib, g, &to(&a), &to(&b), &mut c);
                        for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                            let got = got.to_f64().unwrap();
                            let inside = i >= 2 && i < 2 + m * n;
                            if !inside {
                                let keep = T::of64(c0[i]).to_f64().unwrap();
                                assert_eq!(
                                    got.to_bits(),
                                    keep.to_bits(),
                                    "{lib:?} wrote outside C"
                                );
                                continue;
                            }
                            let err = (got - w).abs() / (1.0 + w.abs());
                            assert!(
                                err < tol,
                                "{lib:?} {m}x{n}x{k} ta {ta} tb {tb} alpha {alpha} beta {beta} [{i}]: {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn by_shape_takes_matrixmultiply_only_when_every_dimension_is_large() {
        let pick = |m, n, k| GemmLib::ByShape.for_shape(&Gemm::new(m, n, k, false, true));
        assert_eq!(pick(256, 256, 256), GemmLib::MatrixMultiply);
        assert_eq!(pick(LARGE, LARGE, LARGE), GemmLib::MatrixMultiply);
        assert_eq!(pick(256, 7, 256), GemmLib::GemmCrate);
        assert_eq!(pick(256, 256, 32), GemmLib::GemmCrate);
        assert_eq!(pick(LARGE - 1, 1024, 1024), GemmLib::GemmCrate);
        // A library named outright is used for every shape.
        for lib in GemmLib::ALL {
            assert_eq!(lib.for_shape(&Gemm::new(7, 7, 7, false, false)), lib);
            assert_eq!(lib.for_shape(&Gemm::new(512, 512, 512, true, false)), lib);
        }
    }

    #[test]
    fn both_libraries_match_the_triple_loop_f64() {
        check::<f64>(1e-12);
    }

    #[test]
    fn both_libraries_match_the_triple_loop_f32() {
        check::<f32>(1e-4);
    }
}
