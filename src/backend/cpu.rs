//! The reference backend: plain loops and ndarray GEMMs on host memory.
//!
//! Generic over the element type so the finite-difference tests can run the
//! very same code in f64; training uses `Cpu<f32>`.

use std::marker::PhantomData;

use ndarray::LinalgScalar;
use num_traits::Float;

use super::cpu_fused as fused;
use super::{Backend, Gemm, LossArgs, Memory, UpdateArgs, UpdateRule, clip_scale};
use crate::spec::Activation;

/// Element types the CPU backend computes in.
pub trait Elem: Float + LinalgScalar + Send + Sync + std::fmt::Debug + 'static {
    fn of(x: f32) -> Self;
    fn of64(x: f64) -> Self;
    fn f32(self) -> f32;
    /// The buffer as f32, when it is f32 (training); f64 is for tests.
    fn as_f32(buf: &mut [Self]) -> Option<&mut [f32]>;
    /// tanh as the fused ops compute it: the library's in f64, a
    /// branch-free vectorisable one within a few ulp in f32.
    fn tanh_fast(self) -> Self;
}
impl Elem for f32 {
    fn as_f32(buf: &mut [Self]) -> Option<&mut [f32]> {
        Some(buf)
    }
    fn of(x: f32) -> Self {
        x
    }
    fn of64(x: f64) -> Self {
        x as f32
    }
    fn f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn tanh_fast(self) -> Self {
        super::cpu_fused::tanh_f32(self)
    }
}
impl Elem for f64 {
    fn as_f32(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn of(x: f32) -> Self {
        x as f64
    }
    fn of64(x: f64) -> Self {
        x
    }
    fn f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn tanh_fast(self) -> Self {
        self.tanh()
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu<T = f32>(PhantomData<T>);

impl<T> Cpu<T> {
    pub fn new() -> Self {
        Cpu(PhantomData)
    }
}

// GELU, tanh form: 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))).
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_K: f64 = 0.044715;

pub fn act_fwd<T: Elem>(act: Activation, z: T) -> T {
    match act {
        // Like torch.relu, NaN stays NaN (`max` would hide it).
        Activation::Relu => {
            if z < T::zero() {
                T::zero()
            } else {
                z
            }
        }
        Activation::Tanh => z.tanh(),
        Activation::Gelu => {
            let u = T::of64(GELU_C) * (z + T::of64(GELU_K) * z * z * z);
            T::of64(0.5) * z * (T::one() + u.tanh())
        }
    }
}

pub fn act_grad<T: Elem>(act: Activation, z: T, h: T) -> T {
    match act {
        Activation::Relu => {
            if z > T::zero() {
                T::one()
            } else {
                T::zero()
            }
        }
        Activation::Tanh => T::one() - h * h,
        Activation::Gelu => {
            let c = T::of64(GELU_C);
            let k = T::of64(GELU_K);
            let t = (c * (z + k * z * z * z)).tanh();
            let half = T::of64(0.5);
            half * (T::one() + t)
                + half * z * (T::one() - t * t) * c * (T::one() + T::of64(3.0) * k * z * z)
        }
    }
}

impl<T: Elem> Backend for Cpu<T> {
    type Buf = Vec<T>;

    fn name(&self) -> String {
        format!("cpu({})", std::any::type_name::<T>())
    }
    fn alloc(&self, len: usize) -> Vec<T> {
        vec![T::zero(); len]
    }
    fn memory(&self, buf: &mut Vec<T>) -> Memory {
        match T::as_f32(buf) {
            Some(f) => Memory::Host {
                ptr: f.as_mut_ptr(),
                len: f.len(),
            },
            None => Memory::Opaque,
        }
    }
    fn upload(&self, src: &[f32], dst: &mut Vec<T>, off: usize) {
        for (d, &s) in dst[off..off + src.len()].iter_mut().zip(src) {
            *d = T::of(s);
        }
    }
    fn download(&self, src: &Vec<T>, off: usize, dst: &mut [f32]) {
        let n = dst.len();
        for (d, &s) in dst.iter_mut().zip(&src[off..off + n]) {
            *d = s.f32();
        }
    }
    fn zero(&self, buf: &mut Vec<T>, off: usize, len: usize) {
        buf[off..off + len].fill(T::zero());
    }

    fn gemm(&self, g: Gemm, a: &Vec<T>, b: &Vec<T>, c: &mut Vec<T>) {
        super::cpu_gemm::gemm_with(super::cpu_gemm::in_use(), g, a, b, c);
    }

    fn bias_act(
        &self,
        act: Option<Activation>,
        rows: usize,
        cols: usize,
        bias: &Vec<T>,
        bias_off: usize,
        z: &mut Vec<T>,
        h: Option<&mut Vec<T>>,
    ) {
        let h = h.map(|h| &mut h[..rows * cols]);
        fused::bias_act(
            act,
            cols,
            &bias[bias_off..bias_off + cols],
            &mut z[..rows * cols],
            h,
        );
    }

    fn act_backward(&self, act: Activation, len: usize, z: &Vec<T>, h: &Vec<T>, dh: &mut Vec<T>) {
        fused::act_backward(act, &z[..len], &h[..len], &mut dh[..len]);
    }

    fn act_backward_col_sum(
        &self,
        act: Activation,
        rows: usize,
        cols: usize,
        z: &Vec<T>,
        h: &Vec<T>,
        dh: &mut Vec<T>,
        out: &mut Vec<T>,
        off: usize,
        beta: f32,
    ) {
        let n = rows * cols;
        fused::act_backward_col_sum(
            act,
            cols,
            &z[..n],
            &h[..n],
            &mut dh[..n],
            &mut out[off..off + cols],
            T::of(beta),
        );
    }

    fn col_sum(
        &self,
        rows: usize,
        cols: usize,
        x: &Vec<T>,
        out: &mut Vec<T>,
        off: usize,
        beta: f32,
    ) {
        reference::col_sum(rows, cols, x, &mut out[off..off + cols], beta);
    }

    fn task_loss(
        &self,
        a: LossArgs,
        out: &Vec<T>,
        labels: &Vec<T>,
        dout: &mut Vec<T>,
        stats: &mut Vec<T>,
    ) {
        let (w, lw) = (a.kind.out_dim(), a.kind.label_dim());
        let scale = T::of(a.grad_scale);
        let mut total = T::zero();
        for r in 0..a.rows {
            let o = r * a.out_cols + a.out_off;
            let l = r * a.label_cols + a.label_off;
            total = total
                + fused::row_loss(
                    a.kind,
                    &out[o..o + w],
                    &labels[l..l + lw],
                    &mut dout[o..o + w],
                    scale,
                );
        }
        stats[a.stat] = if a.accumulate {
            stats[a.stat] + total
        } else {
            total
        };
    }

    fn sum_squares(&self, x: &Vec<T>, len: usize, stats: &mut Vec<T>, stat: usize) {
        stats[stat] = fused::sum_squares(&x[..len]);
    }

    fn scale(&self, x: &mut Vec<T>, len: usize, s: f32) {
        let s = T::of(s);
        for v in &mut x[..len] {
            *v = *v * s;
        }
    }

    fn update(
        &self,
        a: UpdateArgs,
        len: usize,
        params: &mut Vec<T>,
        grads: &Vec<T>,
        state: &mut Vec<T>,
        stats: &Vec<T>,
    ) {
        let c = T::of(clip_scale(a.clip, stats[a.norm_sq_stat].f32()));
        let (lr, wd) = (T::of(a.lr), T::of(a.weight_decay));
        let p = &mut params[..len];
        let g = &grads[..len];
        match a.rule {
            UpdateRule::Sgd {
                momentum,
                first_step,
            } => {
                let mu = T::of(momentum);
                let v = &mut state[..len];
                for i in 0..len {
                    let gi = g[i] * c + wd * p[i];
                    v[i] = if momentum == 0.0 || first_step {
                        gi
                    } else {
                        mu * v[i] + gi
                    };
                    p[i] = p[i] - lr * v[i];
                }
            }
            UpdateRule::AdamW {
                beta1,
                beta2,
                eps,
                step,
            } => {
                let (b1, b2, eps) = (T::of(beta1), T::of(beta2), T::of(eps));
                let bc1 = T::one() - b1.powi(step as i32);
                let bc2 = T::one() - b2.powi(step as i32);
                let (m, v) = state[..2 * len].split_at_mut(len);
                for i in 0..len {
                    let gi = g[i] * c;
                    p[i] = p[i] - lr * wd * p[i];
                    m[i] = b1 * m[i] + (T::one() - b1) * gi;
                    v[i] = b2 * v[i] + (T::one() - b2) * gi * gi;
                    let mhat = m[i] / bc1;
                    let vhat = v[i] / bc2;
                    p[i] = p[i] - lr * mhat / (vhat.sqrt() + eps);
                }
            }
        }
    }
}

/// The plain, one-op-per-pass definitions of the element-wise ops, which
/// the fused paths (`cpu_fused`) are tested against.
pub mod reference {
    use super::{Elem, act_fwd, act_grad};
    use crate::spec::Activation;
    use crate::tasks::TaskKind;

    /// Per-row loss of one task and its gradient (both zero where the label
    /// is missing). `out` and `dout` are the task's slice of the row; `y`
    /// its label columns.
    pub fn row_loss<T: Elem>(kind: TaskKind, out: &[T], y: &[T], dout: &mut [T], scale: T) -> T {
        match kind {
            TaskKind::Classify { .. } => {
                if y[0].is_nan() {
                    dout.fill(T::zero());
                    return T::zero();
                }
                let c = y[0].f32() as usize;
                let mx = out.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
                let sum = out.iter().fold(T::zero(), |s, &v| s + (v - mx).exp());
                for (d, &v) in dout.iter_mut().zip(out) {
                    *d = (v - mx).exp() / sum * scale;
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
                let sig = T::one() / (T::one() + (-x).exp());
                dout[0] = (sig - y[0]) * scale;
                // BCE with logits, stable: max(x,0) - x y + log(1 + e^-|x|).
                x.max(T::zero()) - x * y[0] + (-x.abs()).exp().ln_1p()
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

    /// z[r, :] += bias for every row; then h = act(z) (h untouched if None).
    pub fn bias_act<T: Elem>(
        act: Option<Activation>,
        rows: usize,
        cols: usize,
        bias: &[T],
        z: &mut [T],
        h: Option<&mut [T]>,
    ) {
        let z = &mut z[..rows * cols];
        for row in z.chunks_exact_mut(cols) {
            for (v, &bb) in row.iter_mut().zip(bias) {
                *v = *v + bb;
            }
        }
        if let (Some(act), Some(h)) = (act, h) {
            for (hv, &zv) in h[..rows * cols].iter_mut().zip(z.iter()) {
                *hv = act_fwd(act, zv);
            }
        }
    }

    /// dh = dh ⊙ act'(z).
    pub fn act_backward<T: Elem>(act: Activation, z: &[T], h: &[T], dh: &mut [T]) {
        for ((d, &zv), &hv) in dh.iter_mut().zip(z).zip(h) {
            *d = *d * act_grad(act, zv, hv);
        }
    }

    /// out[c] = beta · out[c] + Σ_r x[r, c]; beta 0 overwrites.
    pub fn col_sum<T: Elem>(rows: usize, cols: usize, x: &[T], out: &mut [T], beta: f32) {
        let o = &mut out[..cols];
        // BLAS convention: beta 0 overwrites (a NaN left in `out` by an
        // earlier step must not survive as 0 · NaN).
        let beta = T::of(beta);
        for v in o.iter_mut() {
            *v = if beta == T::zero() {
                T::zero()
            } else {
                *v * beta
            };
        }
        for row in x[..rows * cols].chunks_exact(cols) {
            for (v, &xv) in o.iter_mut().zip(row) {
                *v = *v + xv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every op against central finite differences (f64) or a direct formula.
    use super::*;
    use crate::rng::normal;
    use crate::tasks::TaskKind;

    fn randn(n: usize, stream: u64) -> Vec<f64> {
        (0..n).map(|i| normal(7, stream, i as u64)).collect()
    }

    fn assert_close(fd: f64, an: f64, what: &str) {
        let err = (fd - an).abs() / (1e-7 + fd.abs().max(an.abs()));
        assert!(
            err < 1e-6,
            "{what}: finite difference {fd} vs analytic {an}"
        );
    }

    #[test]
    fn activation_derivatives_match_finite_differences() {
        for act in [Activation::Relu, Activation::Gelu, Activation::Tanh] {
            for &z in &[-2.3, -0.7, -0.05, 0.03, 0.4, 1.9, 4.0] {
                let eps = 1e-6;
                let fd = (act_fwd(act, z + eps) - act_fwd(act, z - eps)) / (2.0 * eps);
                let an = act_grad(act, z, act_fwd(act, z));
                assert_close(fd, an, &format!("{act:?} at {z}"));
            }
        }
    }

    #[test]
    fn nan_propagates_and_beta_zero_overwrites() {
        for act in [Activation::Relu, Activation::Gelu, Activation::Tanh] {
            assert!(act_fwd(act, f64::NAN).is_nan(), "{act:?}(NaN)");
        }
        // A NaN left in the output by an earlier step does not survive.
        let be = Cpu::<f64>::new();
        let mut out = vec![f64::NAN; 3];
        be.col_sum(2, 3, &vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &mut out, 0, 0.0);
        assert_eq!(out, vec![5.0, 7.0, 9.0]);
    }

    #[test]
    fn act_backward_multiplies_incoming_gradient() {
        let be = Cpu::<f64>::new();
        let z = randn(10, 1);
        let h: Vec<f64> = z.iter().map(|&v| act_fwd(Activation::Gelu, v)).collect();
        let mut dh = randn(10, 2);
        let keep = dh.clone();
        be.act_backward(Activation::Gelu, 10, &z, &h, &mut dh);
        for i in 0..10 {
            assert_close(
                keep[i] * act_grad(Activation::Gelu, z[i], h[i]),
                dh[i],
                "dz",
            );
        }
    }

    /// Masked loss of every kind: gradient of Σ per-label loss against FD,
    /// zero gradient where labels are missing, and the sum itself.
    #[test]
    fn task_losses_match_finite_differences() {
        let be = Cpu::<f64>::new();
        let kinds = [
            TaskKind::Classify { classes: 4 },
            TaskKind::Regress { dim: 3 },
            TaskKind::Binary,
        ];
        for kind in kinds {
            let rows = 6;
            let w = kind.out_dim();
            let lw = kind.label_dim();
            // The task sits at column 1 of a wider output and label matrix.
            let (out_cols, label_cols) = (w + 2, lw + 1);
            let mut out = randn(rows * out_cols, 3);
            let mut labels = vec![0.0; rows * label_cols];
            for r in 0..rows {
                for j in 0..lw {
                    labels[r * label_cols + 1 + j] = match kind {
                        TaskKind::Classify { .. } => (r % 4) as f64,
                        TaskKind::Binary => (r % 2) as f64,
                        TaskKind::Regress { .. } => normal(7, 4, (r * lw + j) as u64),
                    };
                }
            }
            labels[2 * label_cols + 1] = f64::NAN; // row 2 missing (first column)
            let a = LossArgs {
                kind,
                rows,
                out_cols,
                out_off: 1,
                label_cols,
                label_off: 1,
                grad_scale: 0.5,
                stat: 1,
                accumulate: false,
            };
            let loss = |out: &Vec<f64>| {
                let mut d = vec![0.0; rows * out_cols];
                let mut s = vec![0.0; 2];
                be.task_loss(a, out, &labels, &mut d, &mut s);
                (s[1], d)
            };
            let (_, dout) = loss(&out);
            let eps = 1e-6;
            for r in 0..rows {
                for c in 0..out_cols {
                    let i = r * out_cols + c;
                    let keep = out[i];
                    out[i] = keep + eps;
                    let lp = loss(&out).0;
                    out[i] = keep - eps;
                    let lm = loss(&out).0;
                    out[i] = keep;
                    let fd = 0.5 * (lp - lm) / (2.0 * eps);
                    assert_close(fd, dout[i], &format!("{kind:?} [{r},{c}]"));
                }
            }
            // Columns outside the task and the missing row get no gradient.
            for r in 0..rows {
                assert_eq!(dout[r * out_cols], 0.0);
                assert_eq!(dout[r * out_cols + out_cols - 1], 0.0);
            }
            if !matches!(kind, TaskKind::Regress { .. }) {
                assert!(
                    dout[2 * out_cols + 1..2 * out_cols + 1 + w]
                        .iter()
                        .all(|&v| v == 0.0)
                );
            }
        }
    }

    #[test]
    fn loss_values_match_textbook_formulas() {
        let be = Cpu::<f64>::new();
        let run = |kind, out: Vec<f64>, y: Vec<f64>| {
            let a = LossArgs {
                kind,
                rows: 1,
                out_cols: out.len(),
                out_off: 0,
                label_cols: y.len(),
                label_off: 0,
                grad_scale: 1.0,
                stat: 0,
                accumulate: false,
            };
            let mut d = vec![0.0; out.len()];
            let mut s = vec![0.0];
            be.task_loss(a, &out, &y, &mut d, &mut s);
            s[0]
        };
        let ce = run(
            TaskKind::Classify { classes: 3 },
            vec![1.0, 2.0, 3.0],
            vec![0.0],
        );
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((ce - (lse - 1.0)).abs() < 1e-12);
        let bce = run(TaskKind::Binary, vec![0.3], vec![1.0]);
        let p = 1.0 / (1.0 + (-0.3f64).exp());
        assert!((bce + p.ln()).abs() < 1e-12);
        // Large logits stay finite.
        assert!(run(TaskKind::Binary, vec![-800.0], vec![1.0]).is_finite());
        assert!(
            run(
                TaskKind::Classify { classes: 2 },
                vec![900.0, -900.0],
                vec![1.0]
            )
            .is_finite()
        );
        let mse = run(
            TaskKind::Regress { dim: 2 },
            vec![1.0, 5.0],
            vec![3.0, f64::NAN],
        );
        assert!((mse - 4.0).abs() < 1e-12);
    }

    #[test]
    fn linear_layer_gradients_match_finite_differences() {
        // Z = X W^T + b, L = Σ G ⊙ Z: dW = G^T X, db = Σ_rows G, dX = G W.
        let be = Cpu::<f64>::new();
        let (rows, inp, out) = (5, 4, 3);
        let x = randn(rows * inp, 5);
        let mut wb = randn(out * inp + out, 6);
        let g = randn(rows * out, 8);
        let forward = |wb: &Vec<f64>, x: &Vec<f64>| {
            let mut z = vec![0.0; rows * out];
            be.gemm(Gemm::new(rows, out, inp, false, true), x, wb, &mut z);
            be.bias_act(None, rows, out, wb, out * inp, &mut z, None);
            z.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut grads = vec![0.0; out * inp + out];
        let gemm = Gemm::new;
        be.gemm(gemm(out, inp, rows, true, false), &g, &x, &mut grads);
        be.col_sum(rows, out, &g, &mut grads, out * inp, 0.0);
        let mut dx = vec![0.0; rows * inp];
        be.gemm(gemm(rows, inp, out, false, false), &g, &wb, &mut dx);
        let eps = 1e-6;
        for i in 0..wb.len() {
            let keep = wb[i];
            wb[i] = keep + eps;
            let lp = forward(&wb, &x);
            wb[i] = keep - eps;
            let lm = forward(&wb, &x);
            wb[i] = keep;
            assert_close((lp - lm) / (2.0 * eps), grads[i], &format!("dW/db {i}"));
        }
        let mut x2 = x.clone();
        for i in 0..x.len() {
            x2[i] = x[i] + eps;
            let lp = forward(&wb, &x2);
            x2[i] = x[i] - eps;
            let lm = forward(&wb, &x2);
            x2[i] = x[i];
            assert_close((lp - lm) / (2.0 * eps), dx[i], &format!("dX {i}"));
        }
    }

    #[test]
    fn sgd_and_adamw_follow_pytorch_semantics() {
        let be = Cpu::<f64>::new();
        let p0 = vec![1.0, -2.0];
        let g = vec![0.5, 0.25];
        let stats = vec![g.iter().map(|v| v * v).sum::<f64>()];
        // SGD, momentum 0.9, wd 0.1, two steps with the same gradient.
        let mut p = p0.clone();
        let mut v = vec![0.0; 2];
        for step in 0..2 {
            let a = UpdateArgs {
                lr: 0.1,
                weight_decay: 0.1,
                clip: None,
                norm_sq_stat: 0,
                rule: UpdateRule::Sgd {
                    momentum: 0.9,
                    first_step: step == 0,
                },
            };
            be.update(a, 2, &mut p, &g, &mut v, &stats);
        }
        // Step 1: v = g + wd p0; p1 = p0 - lr v. Step 2: v = 0.9 v + g + wd p1.
        for i in 0..2 {
            let v1 = g[i] + 0.1 * p0[i];
            let p1 = p0[i] - 0.1 * v1;
            let v2 = 0.9 * v1 + g[i] + 0.1 * p1;
            assert!((p[i] - (p1 - 0.1 * v2)).abs() < 1e-6, "sgd {i}");
        }
        // AdamW one step: p = p(1 - lr wd) - lr · ĝ/(|ĝ| + eps) with ĝ = g.
        let mut p = p0.clone();
        let mut mv = vec![0.0; 4];
        let a = UpdateArgs {
            lr: 0.01,
            weight_decay: 0.1,
            clip: None,
            norm_sq_stat: 0,
            rule: UpdateRule::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                step: 1,
            },
        };
        be.update(a, 2, &mut p, &g, &mut mv, &stats);
        for i in 0..2 {
            let want = p0[i] * (1.0 - 0.001) - 0.01 * g[i] / (g[i].abs() + 1e-8);
            assert!((p[i] - want).abs() < 1e-6, "adamw {i}: {} vs {want}", p[i]);
        }
    }

    #[test]
    fn clipping_scales_the_gradient_to_the_max_norm() {
        let be = Cpu::<f64>::new();
        let g = vec![3.0, 4.0]; // norm 5
        let stats = vec![25.0];
        let mut p = vec![0.0, 0.0];
        let mut v = vec![0.0; 2];
        let a = UpdateArgs {
            lr: 1.0,
            weight_decay: 0.0,
            clip: Some(1.0),
            norm_sq_stat: 0,
            rule: UpdateRule::Sgd {
                momentum: 0.0,
                first_step: true,
            },
        };
        be.update(a, 2, &mut p, &g, &mut v, &stats);
        assert!((p[0] + 0.6).abs() < 1e-6 && (p[1] + 0.8).abs() < 1e-6);
    }
}
