//! The CPU backend's element-wise work in as few passes as possible, written
//! so that the compiler vectorises it: bias + activation in one pass over
//! the GEMM output, the activation's backward together with the bias
//! gradient's column sum, a sum of squares with independent partial sums,
//! a branch-free tanh for f32 (GELU's tanh form), and the loss heads with
//! each exponential computed once.
//!
//! The plain loops in `cpu.rs` (`act_fwd`, `act_grad`, the `reference`
//! module) stay the readable definition; the tests below hold these fused
//! paths to them.

use super::cpu::Elem;
use crate::spec::Activation;
use crate::tasks::TaskKind;

// GELU, tanh form: 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))).
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_K: f64 = 0.044715;

/// e^x for f32 without branches or calls (Cephes' expf: x = n ln2 + r,
/// a degree-6 polynomial in r, 2^n from the exponent bits); about 1 ulp.
/// NaN stays NaN; the argument is clamped to [-87, 88] (finite results).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2) by the 1.5·2^23 trick (round to nearest even):
    // t's low mantissa bits hold n.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // n is in [-126, 127] after the clamp: 2^n is a normal f32. Its
    // exponent comes from t's bits (t = 1.5·2^23 + n), not from `n as
    // i32`: that cast saturates and maps NaN to 0, which the compiler
    // does one lane at a time; integer ops on the bits stay in vectors.
    let n_bits = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let scale = f32::from_bits((n_bits.wrapping_add(127) as u32) << 23);
    y * scale
}

/// tanh for f32 without branches or calls: Cephes' odd polynomial below
/// |x| = 0.625, 1 − 2/(e^{2|x|} + 1) above; within a few ulp of tanh.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small = x + x
        * z
        * ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z + 0.133_314_42) * z
            - 0.333_332_82);
    let e = exp_f32(2.0 * a);
    let big = 1.0 - 2.0 / (e + 1.0);
    // Both are odd in x: the sign of x (also that of -0.0) is the result's.
    (if a < 0.625 { small } else { big }).copysign(x)
}

#[inline(always)]
fn relu<T: Elem>(z: T) -> T {
    // Like torch.relu, NaN stays NaN.
    if z < T::zero() { T::zero() } else { z }
}

#[inline(always)]
fn gelu<T: Elem>(z: T) -> T {
    let u = T::of64(GELU_C) * (z + T::of64(GELU_K) * z * z * z);
    T::of64(0.5) * z * (T::one() + u.tanh_fast())
}

#[inline(always)]
fn gelu_grad<T: Elem>(z: T) -> T {
    let c = T::of64(GELU_C);
    let k = T::of64(GELU_K);
    let t = (c * (z + k * z * z * z)).tanh_fast();
    let half = T::of64(0.5);
    half * (T::one() + t)
        + half * z * (T::one() - t * t) * c * (T::one() + T::of64(3.0) * k * z * z)
}

/// act(z) with the fast tanh (the definition is `cpu::act_fwd`).
#[inline(always)]
pub fn act_fwd_fast<T: Elem>(act: Activation, z: T) -> T {
    match act {
        Activation::Relu => relu(z),
        Activation::Tanh => z.tanh_fast(),
        Activation::Gelu => gelu(z),
    }
}

/// act'(z) with the fast tanh, given h = act(z) (the definition is
/// `cpu::act_grad`).
#[inline(always)]
pub fn act_grad_fast<T: Elem>(act: Activation, z: T, h: T) -> T {
    match act {
        Activation::Relu => {
            if z > T::zero() {
                T::one()
            } else {
                T::zero()
            }
        }
        Activation::Tanh => T::one() - h * h,
        Activation::Gelu => gelu_grad(z),
    }
}

/// z[r, :] += bias and h = f(z), one pass (each row: read z, write z and h).
#[inline(always)]
fn bias_map<T: Elem>(cols: usize, bias: &[T], z: &mut [T], h: &mut [T], f: impl Fn(T) -> T) {
    for (zr, hr) in z.chunks_exact_mut(cols).zip(h.chunks_exact_mut(cols)) {
        for ((zv, hv), &b) in zr.iter_mut().zip(hr.iter_mut()).zip(bias) {
            let v = *zv + b;
            *zv = v;
            *hv = f(v);
        }
    }
}

/// Defines `pub fn $name<T: Elem>(args)` that runs `$body` (an
/// `#[inline(always)]` fn with the same arguments) compiled for AVX2 when
/// the CPU has it (8 f32 lanes instead of the baseline's 4), else as
/// compiled for the baseline. The same operations per element in the same
/// order (no FMA contraction, no reassociation): the same bits either way.
macro_rules! with_avx2 {
    ($(#[$doc:meta])* fn $name:ident = $body:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub fn $name<T: Elem>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn wide<T: Elem>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: this CPU has AVX2 (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

with_avx2! {
    /// z[r, :] += bias for every row of `z` ([rows, cols]); then h = act(z) in
    /// the same pass (h untouched if `act` or `h` is None).
    fn bias_act = bias_act_body(
        act: Option<Activation>,
        cols: usize,
        bias: &[T],
        z: &mut [T],
        h: Option<&mut [T]>
    )
}

#[inline(always)]
fn bias_act_body<T: Elem>(
    act: Option<Activation>,
    cols: usize,
    bias: &[T],
    z: &mut [T],
    h: Option<&mut [T]>,
) {
    let (act, h) = match (act, h) {
        (Some(act), Some(h)) => (act, h),
        _ => {
            for row in z.chunks_exact_mut(cols) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v = *v + b;
                }
            }
            return;
        }
    };
    let h = &mut h[..z.len()];
    // One monomorphised loop per activation: no match inside the loop.
    match act {
        Activation::Relu => bias_map(cols, bias, z, h, relu),
        Activation::Tanh => bias_map(cols, bias, z, h, T::tanh_fast),
        Activation::Gelu => bias_map(cols, bias, z, h, gelu),
    }
}

#[inline(always)]
fn grad_map<T: Elem>(z: &[T], h: &[T], dh: &mut [T], g: impl Fn(T, T) -> T) {
    for ((d, &zv), &hv) in dh.iter_mut().zip(z).zip(h) {
        *d = *d * g(zv, hv);
    }
}

with_avx2! {
    /// dh = dh ⊙ act'(z) over equal-length slices.
    fn act_backward = act_backward_body(act: Activation, z: &[T], h: &[T], dh: &mut [T])
}

#[inline(always)]
fn act_backward_body<T: Elem>(act: Activation, z: &[T], h: &[T], dh: &mut [T]) {
    match act {
        Activation::Relu => grad_map(z, h, dh, |z, h| act_grad_fast(Activation::Relu, z, h)),
        Activation::Tanh => grad_map(z, h, dh, |z, h| act_grad_fast(Activation::Tanh, z, h)),
        Activation::Gelu => grad_map(z, h, dh, |z, _| gelu_grad(z)),
    }
}

#[inline(always)]
fn grad_col_map<T: Elem>(
    cols: usize,
    z: &[T],
    h: &[T],
    dh: &mut [T],
    out: &mut [T],
    g: impl Fn(T, T) -> T,
) {
    for ((zr, hr), dr) in z
        .chunks_exact(cols)
        .zip(h.chunks_exact(cols))
        .zip(dh.chunks_exact_mut(cols))
    {
        for (((d, &zv), &hv), o) in dr.iter_mut().zip(zr).zip(hr).zip(out.iter_mut()) {
            let v = *d * g(zv, hv);
            *d = v;
            *o = *o + v;
        }
    }
}

with_avx2! {
    /// dh = dh ⊙ act'(z) ([rows, cols], row-major) and out = beta · out +
    /// Σ_rows dh in the same pass (beta 0 overwrites, as in BLAS).
    fn act_backward_col_sum = act_backward_col_sum_body(
        act: Activation,
        cols: usize,
        z: &[T],
        h: &[T],
        dh: &mut [T],
        out: &mut [T],
        beta: T
    )
}

#[inline(always)]
fn act_backward_col_sum_body<T: Elem>(
    act: Activation,
    cols: usize,
    z: &[T],
    h: &[T],
    dh: &mut [T],
    out: &mut [T],
    beta: T,
) {
    let out = &mut out[..cols];
    for v in out.iter_mut() {
        *v = if beta == T::zero() {
            T::zero()
        } else {
            *v * beta
        };
    }
    let n = dh.len();
    let (z, h) = (&z[..n], &h[..n]);
    match act {
        Activation::Relu => grad_col_map(cols, z, h, dh, out, |z, h| {
            act_grad_fast(Activation::Relu, z, h)
        }),
        Activation::Tanh => grad_col_map(cols, z, h, dh, out, |z, h| {
            act_grad_fast(Activation::Tanh, z, h)
        }),
        Activation::Gelu => grad_col_map(cols, z, h, dh, out, |z, _| gelu_grad(z)),
    }
}

/// Σ x² with 16 independent partial sums (a single running sum is one
/// dependent add per element and cannot be vectorised).
pub fn sum_squares<T: Elem>(x: &[T]) -> T {
    const W: usize = 16;
    let mut acc = [T::zero(); W];
    let chunks = x.chunks_exact(W);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..W {
            acc[i] = acc[i] + c[i] * c[i];
        }
    }
    let mut s = tail.iter().fold(T::zero(), |s, &v| s + v * v);
    for a in acc {
        s = s + a;
    }
    s
}

/// One row of one task's loss and gradient, bit for bit
/// `reference::row_loss`, with each exponential computed once: softmax
/// cross-entropy keeps e^(v − max) in `dout` between its sum and its
/// normalisation (the reference computes it twice); BCE shares e^(−|x|)
/// between the sigmoid and the loss when x ≥ 0. MSE is one pass already.
#[inline]
pub fn row_loss<T: Elem>(kind: TaskKind, out: &[T], y: &[T], dout: &mut [T], scale: T) -> T {
    match kind {
        TaskKind::Classify { .. } => {
            if y[0].is_nan() {
                dout.fill(T::zero());
                return T::zero();
            }
            let c = y[0].f32() as usize;
            let mx = out.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
            let mut sum = T::zero();
            for (d, &v) in dout.iter_mut().zip(out) {
                *d = (v - mx).exp();
                sum = sum + *d;
            }
            for d in dout.iter_mut() {
                *d = *d / sum * scale;
            }
            dout[c] = dout[c] - scale;
            sum.ln() + mx - out[c]
        }
        TaskKind::Binary => {
            if y[0].is_nan() {
                dout[0] = T::zero();
                return T::zero();
            }
            let x = out[0];
            let e = (-x.abs()).exp();
            let e_neg = if x >= T::zero() { e } else { (-x).exp() };
            let sig = T::one() / (T::one() + e_neg);
            dout[0] = (sig - y[0]) * scale;
            x.max(T::zero()) - x * y[0] + e.ln_1p()
        }
        TaskKind::Regress { .. } => {
            let mut l = T::zero();
            for ((d, &o), &t) in dout.iter_mut().zip(out).zip(y) {
                if t.is_nan() {
                    *d = T::zero();
                } else {
                    let e = o - t;
                    l = l + e * e;
                    *d = T::of(2.0) * e * scale;
                }
            }
            l
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{act_fwd, act_grad, reference};
    use crate::rng::normal;

    const ACTS: [Activation; 3] = [Activation::Relu, Activation::Tanh, Activation::Gelu];

    fn randn<T: Elem>(n: usize, stream: u64, sd: f64) -> Vec<T> {
        (0..n)
            .map(|i| T::of64(sd * normal(9, stream, i as u64)))
            .collect()
    }

    /// ‖a − b‖ / ‖b‖, the norm the GPU checks use.
    fn rel<T: Elem>(a: &[T], b: &[T]) -> f64 {
        let (mut d, mut n) = (0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (x.to_f64().unwrap(), y.to_f64().unwrap());
            d += (x - y) * (x - y);
            n += y * y;
        }
        (d / n.max(1e-300)).sqrt()
    }

    #[test]
    fn fast_exp_and_tanh_are_within_a_few_ulp() {
        let mut worst_exp: f64 = 0.0;
        let mut worst_tanh: f64 = 0.0;
        for i in -200_000..=200_000 {
            let x = i as f32 * 4.3e-4; // -86 .. 86
            let e = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst_exp = worst_exp.max((e - want).abs() / want);
            let x = i as f32 * 1.1e-4; // -22 .. 22
            let t = tanh_f32(x) as f64;
            let want = (x as f64).tanh();
            worst_tanh = worst_tanh.max((t - want).abs() / want.abs().max(1e-30));
        }
        eprintln!("worst relative error: exp {worst_exp:.2e}, tanh {worst_tanh:.2e}");
        assert!(worst_exp < 4.0 * f32::EPSILON as f64, "exp {worst_exp}");
        assert!(worst_tanh < 4.0 * f32::EPSILON as f64, "tanh {worst_tanh}");
        assert!(tanh_f32(f32::NAN).is_nan() && exp_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(1e30), 1.0);
        assert_eq!(tanh_f32(-1e30), -1.0);
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(exp_f32(-1e4), exp_f32(-87.0));
    }

    #[test]
    fn fast_activations_match_the_definitions() {
        for act in ACTS {
            for i in -4000..=4000 {
                let z = i as f32 * 2.5e-3;
                let (f, g) = (act_fwd_fast(act, z), act_grad_fast(act, z, act_fwd(act, z)));
                let (wf, wg) = (act_fwd(act, z), act_grad(act, z, act_fwd(act, z)));
                assert!(
                    (f - wf).abs() <= 4e-7 * (1.0 + wf.abs()),
                    "{act:?}({z}): {f} vs {wf}"
                );
                assert!(
                    (g - wg).abs() <= 4e-7 * (1.0 + wg.abs()),
                    "{act:?}'({z}): {g} vs {wg}"
                );
            }
            // f64 uses the library tanh: exact.
            let z = 0.37f64;
            assert_eq!(act_fwd_fast(act, z), act_fwd(act, z));
            assert!(act_fwd_fast(act, f32::NAN).is_nan());
        }
    }

    fn fused_matches_reference<T: Elem>(tol: f64) {
        let (rows, cols) = (13, 37);
        for act in ACTS {
            let bias: Vec<T> = randn(cols, 1, 0.5);
            let z0: Vec<T> = randn(rows * cols, 2, 2.0);
            let (mut z, mut h) = (z0.clone(), vec![T::zero(); rows * cols]);
            bias_act(Some(act), cols, &bias, &mut z, Some(&mut h));
            let (mut rz, mut rh) = (z0.clone(), vec![T::zero(); rows * cols]);
            reference::bias_act(Some(act), rows, cols, &bias, &mut rz, Some(&mut rh));
            assert_eq!(z, rz, "{act:?}: bias add");
            assert!(rel(&h, &rh) <= tol, "{act:?}: act {}", rel(&h, &rh));

            let dh0: Vec<T> = randn(rows * cols, 3, 1.0);
            for beta in [0.0, 1.0, 0.5] {
                let out0: Vec<T> = {
                    let mut o = randn(cols + 3, 4, 1.0);
                    o[0] = T::nan(); // beta 0 must overwrite
                    o
                };
                let (mut dh, mut out) = (dh0.clone(), out0.clone());
                act_backward_col_sum(act, cols, &z, &h, &mut dh, &mut out[..cols], T::of(beta));
                let (mut rdh, mut rout) = (dh0.clone(), out0.clone());
                reference::act_backward(act, &rz, &rh, &mut rdh);
                reference::col_sum(rows, cols, &rdh, &mut rout[..cols], beta);
                if beta != 0.0 {
                    out[0] = T::zero();
                    rout[0] = T::zero();
                }
                assert!(rel(&dh, &rdh) <= tol, "{act:?}: dz {}", rel(&dh, &rdh));
                assert!(rel(&out, &rout) <= tol, "{act:?}: db {}", rel(&out, &rout));
                assert_eq!(out[cols..], out0[cols..], "wrote past the bias");

                let mut dh2 = dh0.clone();
                act_backward(act, &z, &h, &mut dh2);
                assert!(rel(&dh2, &rdh) <= tol, "{act:?}: act_backward");
            }
        }
        // Bias only (the heads).
        let bias: Vec<T> = randn(cols, 5, 1.0);
        let z0: Vec<T> = randn(rows * cols, 6, 1.0);
        let mut z = z0.clone();
        bias_act(None, cols, &bias, &mut z, None);
        let mut rz = z0;
        reference::bias_act(None, rows, cols, &bias, &mut rz, None);
        assert_eq!(z, rz);
    }

    /// The dispatching entry points (AVX2 copies where the CPU has them)
    /// and the bodies as compiled for the baseline give the same bits.
    #[test]
    fn the_avx2_copies_give_the_same_bits() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (rows, cols) = (37, 129);
        let z0: Vec<f32> = randn(rows * cols, 1, 3.0);
        let bias: Vec<f32> = randn(cols, 2, 1.0);
        let dh0: Vec<f32> = randn(rows * cols, 3, 1.0);
        for act in [Activation::Relu, Activation::Tanh, Activation::Gelu] {
            let (mut z1, mut z2) = (z0.clone(), z0.clone());
            let (mut h1, mut h2) = (vec![0f32; z0.len()], vec![0f32; z0.len()]);
            bias_act(Some(act), cols, &bias, &mut z1, Some(&mut h1));
            bias_act_body(Some(act), cols, &bias, &mut z2, Some(&mut h2));
            assert_eq!((bits(&z1), bits(&h1)), (bits(&z2), bits(&h2)), "{act:?}");
            let (mut d1, mut d2) = (dh0.clone(), dh0.clone());
            let (mut o1, mut o2) = (vec![0.5f32; cols], vec![0.5f32; cols]);
            act_backward_col_sum(act, cols, &z1, &h1, &mut d1, &mut o1, 0.25);
            act_backward_col_sum_body(act, cols, &z1, &h1, &mut d2, &mut o2, 0.25);
            assert_eq!((bits(&d1), bits(&o1)), (bits(&d2), bits(&o2)), "{act:?}");
            let (mut d1, mut d2) = (dh0.clone(), dh0.clone());
            act_backward(act, &z1, &h1, &mut d1);
            act_backward_body(act, &z1, &h1, &mut d2);
            assert_eq!(bits(&d1), bits(&d2), "{act:?}");
        }
    }

    #[test]
    fn fused_ops_match_the_reference_f32() {
        // The GPU checks hold kernels to 1e-5 of the CPU: this is 10× tighter.
        fused_matches_reference::<f32>(1e-6);
    }

    #[test]
    fn fused_ops_match_the_reference_f64() {
        fused_matches_reference::<f64>(1e-14);
    }

    #[test]
    fn sum_squares_matches_the_running_sum() {
        for n in [0, 1, 15, 16, 17, 1000, 4099] {
            let x: Vec<f64> = randn(n, 7, 1.0);
            let want = x.iter().fold(0.0, |s, v| s + v * v);
            let got = sum_squares(&x);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1.0),
                "{n}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn fused_loss_heads_are_the_reference_bit_for_bit() {
        fn check<T: Elem>() {
            let kinds = [
                TaskKind::Classify { classes: 4 },
                TaskKind::Binary,
                TaskKind::Regress { dim: 2 },
            ];
            let mut seed = 7u64;
            let mut next = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
            };
            for kind in kinds {
                let (w, lw) = (kind.out_dim(), kind.label_dim());
                for i in 0..4000 {
                    let spread = [0.1, 3.0, 40.0][i % 3];
                    let out: Vec<T> = (0..w).map(|_| T::of((next() * spread) as f32)).collect();
                    let y: Vec<T> = (0..lw)
                        .map(|_| match (i % 11, kind) {
                            (0, _) => T::of(f32::NAN),
                            (_, TaskKind::Classify { classes }) => T::of(
                                ((next() + 1.0) * 0.5 * classes as f64).min(3.0).floor() as f32,
                            ),
                            (_, TaskKind::Binary) => T::of((next() > 0.0) as u8 as f32),
                            _ => T::of(next() as f32),
                        })
                        .collect();
                    let scale = T::of(0.37);
                    let (mut d1, mut d2) = (vec![T::of(9.0); w], vec![T::of(-9.0); w]);
                    let l1 = super::super::cpu::reference::row_loss(kind, &out, &y, &mut d1, scale);
                    let l2 = row_loss(kind, &out, &y, &mut d2, scale);
                    let bits = |v: T| num_traits::ToPrimitive::to_f64(&v).unwrap().to_bits();
                    assert_eq!(bits(l1), bits(l2), "{kind:?} {i}");
                    for (&a, &b) in d1.iter().zip(&d2) {
                        assert_eq!(bits(a), bits(b), "{kind:?} {i}");
                    }
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }
}
