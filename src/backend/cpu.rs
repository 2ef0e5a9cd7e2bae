//! The reference backend: plain loops and ndarray GEMMs on host memory.
//!
//! Generic over the element type so the finite-difference tests can run the
//! very same code in f64; training uses `Cpu<f32>`.

use std::marker::PhantomData;

use ndarray::{ArrayView2, ArrayViewMut2, LinalgScalar, linalg::general_mat_mul};
use num_traits::Float;

use super::{Backend, Gemm, LossArgs, UpdateArgs, UpdateRule, clip_scale};
use crate::model::spec::Activation;
use crate::tasks::TaskKind;

/// Element types the CPU backend computes in.
pub trait Elem: Float + LinalgScalar + Send + Sync + std::fmt::Debug + 'static {
    fn of(x: f32) -> Self;
    fn of64(x: f64) -> Self;
    fn f32(self) -> f32;
}
impl Elem for f32 {
    fn of(x: f32) -> Self {
        x
    }
    fn of64(x: f64) -> Self {
        x as f32
    }
    fn f32(self) -> f32 {
        self
    }
}
impl Elem for f64 {
    fn of(x: f32) -> Self {
        x as f64
    }
    fn of64(x: f64) -> Self {
        x
    }
    fn f32(self) -> f32 {
        self as f32
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu<T = f32>(PhantomData<T>);

impl<T> Cpu<T> {
    pub fn new() -> Self {
        Cpu(PhantomData)
    }
}

fn view<T>(buf: &[T], off: usize, rows: usize, cols: usize, trans: bool) -> ArrayView2<'_, T> {
    let v = ArrayView2::from_shape((rows, cols), &buf[off..off + rows * cols])
        .expect("gemm operand fits its buffer");
    if trans { v.reversed_axes() } else { v }
}

// GELU, tanh form: 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))).
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_K: f64 = 0.044715;

pub fn act_fwd<T: Elem>(act: Activation, z: T) -> T {
    match act {
        Activation::Relu => z.max(T::zero()),
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

/// Per-row loss of one task and its gradient; `None` if the label is missing.
/// `out` and `dout` are the task's slice of the row; `y` its label columns.
fn row_loss<T: Elem>(kind: TaskKind, out: &[T], y: &[T], dout: &mut [T], scale: T) -> T {
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

impl<T: Elem> Backend for Cpu<T> {
    type Buf = Vec<T>;

    fn name(&self) -> String {
        format!("cpu({})", std::any::type_name::<T>())
    }
    fn alloc(&self, len: usize) -> Vec<T> {
        vec![T::zero(); len]
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
        let (ar, ac) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (br, bc) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        let av = view(a, g.a_off, ar, ac, g.trans_a);
        let bv = view(b, g.b_off, br, bc, g.trans_b);
        let mut cv = ArrayViewMut2::from_shape((g.m, g.n), &mut c[g.c_off..g.c_off + g.m * g.n])
            .expect("gemm output fits its buffer");
        general_mat_mul(T::of(g.alpha), &av, &bv, T::of(g.beta), &mut cv);
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
        let b = &bias[bias_off..bias_off + cols];
        let z = &mut z[..rows * cols];
        for row in z.chunks_exact_mut(cols) {
            for (v, &bb) in row.iter_mut().zip(b) {
                *v = *v + bb;
            }
        }
        if let (Some(act), Some(h)) = (act, h) {
            for (hv, &zv) in h[..rows * cols].iter_mut().zip(z.iter()) {
                *hv = act_fwd(act, zv);
            }
        }
    }

    fn act_backward(&self, act: Activation, len: usize, z: &Vec<T>, h: &Vec<T>, dh: &mut Vec<T>) {
        for ((d, &zv), &hv) in dh[..len].iter_mut().zip(&z[..len]).zip(&h[..len]) {
            *d = *d * act_grad(act, zv, hv);
        }
    }

    fn col_sum(&self, rows: usize, cols: usize, x: &Vec<T>, out: &mut Vec<T>, off: usize, beta: f32) {
        let o = &mut out[off..off + cols];
        let beta = T::of(beta);
        for v in o.iter_mut() {
            *v = *v * beta;
        }
        for row in x[..rows * cols].chunks_exact(cols) {
            for (v, &xv) in o.iter_mut().zip(row) {
                *v = *v + xv;
            }
        }
    }

    fn task_loss(&self, a: LossArgs, out: &Vec<T>, labels: &Vec<T>, dout: &mut Vec<T>, stats: &mut Vec<T>) {
        let (w, lw) = (a.kind.out_dim(), a.kind.label_dim());
        let scale = T::of(a.grad_scale);
        let mut total = T::zero();
        for r in 0..a.rows {
            let o = r * a.out_cols + a.out_off;
            let l = r * a.label_cols + a.label_off;
            total = total
                + row_loss(
                    a.kind,
                    &out[o..o + w],
                    &labels[l..l + lw],
                    &mut dout[o..o + w],
                    scale,
                );
        }
        stats[a.stat] = total;
    }

    fn sum_squares(&self, x: &Vec<T>, len: usize, stats: &mut Vec<T>, stat: usize) {
        stats[stat] = x[..len].iter().fold(T::zero(), |s, &v| s + v * v);
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
