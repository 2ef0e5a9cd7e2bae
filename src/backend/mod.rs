//! The compute backend: buffers and the ops of one training step.
//!
//! The model and the training loop are written once against [`Backend`];
//! `cpu` is the reference implementation and a CUDA backend implements the
//! same ops as kernels. All matrices are row-major and contiguous; an op
//! addresses a matrix as (buffer, element offset) so that parameters and
//! gradients can stay views into one flat buffer. Scalars a step produces
//! (loss sums, the gradient norm) go into a small `stats` buffer so that a
//! device backend never has to stop for them; the host reads it when logging.

pub mod cpu;
pub mod cpu_fused;
pub mod cpu_gemm;
pub mod cuda;
pub mod device;
pub mod gpu;

use std::sync::Arc;

use crate::spec::Activation;
use crate::tasks::TaskKind;

/// Where a buffer's f32 elements live, for code outside the backend that
/// moves them between ranks (the gradient sync).
pub enum Memory {
    /// Host memory that does not move while the buffer lives.
    Host { ptr: *mut f32, len: usize },
    /// CUDA device memory, written by work queued on `stream`.
    Cuda {
        ptr: u64,
        len: usize,
        stream: Arc<cudarc::driver::CudaStream>,
    },
    /// Not reachable from outside the backend (f64 test buffers, the
    /// kernel emulator's memory).
    Opaque,
}

/// C[m,n] = alpha · op(A) · op(B) + beta · C, row-major, op = transpose or not.
/// A is [m,k] (or [k,m] if `trans_a`), B is [k,n] (or [n,k] if `trans_b`).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub a_off: usize,
    pub b_off: usize,
    pub c_off: usize,
    pub alpha: f32,
    pub beta: f32,
}

impl Gemm {
    /// C = op(A) · op(B) over whole buffers (offsets 0, alpha 1, beta 0);
    /// set the other fields with struct update syntax.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            a_off: 0,
            b_off: 0,
            c_off: 0,
            alpha: 1.0,
            beta: 0.0,
        }
    }
}

/// One task's loss over a [rows, out_cols] output matrix.
#[derive(Clone, Copy, Debug)]
pub struct LossArgs {
    pub kind: TaskKind,
    pub rows: usize,
    /// Width of the whole output matrix and the task's first column in it.
    pub out_cols: usize,
    pub out_off: usize,
    /// Width of the whole label matrix and the task's first column in it.
    pub label_cols: usize,
    pub label_off: usize,
    /// d(total loss)/d(sum of this task's per-label losses): λ_t · n / N_t.
    pub grad_scale: f32,
    /// Where the unscaled sum of per-label losses goes in `stats`.
    pub stat: usize,
    /// Add the sum to `stats[stat]` instead of overwriting it (micro-batches).
    pub accumulate: bool,
}

impl LossArgs {
    /// The loss of task `t` over `rows` rows, its columns taken from `cols`;
    /// the sum goes to `stats[t]`.
    pub fn for_task(
        kind: TaskKind,
        cols: &crate::tasks::TaskColumns,
        t: usize,
        rows: usize,
        grad_scale: f32,
        accumulate: bool,
    ) -> Self {
        LossArgs {
            kind,
            rows,
            out_cols: cols.out_cols,
            out_off: cols.out_off[t],
            label_cols: cols.label_cols,
            label_off: cols.label_off[t],
            grad_scale,
            stat: t,
            accumulate,
        }
    }
}

/// Hyper-parameters of one optimizer update. Clipping reads the squared
/// gradient norm from `stats[norm_sq_stat]`, so it needs no host round trip.
#[derive(Clone, Copy, Debug)]
pub struct UpdateArgs {
    pub lr: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (None: no clipping).
    pub clip: Option<f32>,
    pub norm_sq_stat: usize,
    pub rule: UpdateRule,
}

#[derive(Clone, Copy, Debug)]
pub enum UpdateRule {
    /// PyTorch SGD: v = μ v + g + wd·p (v = g + wd·p on the first step); p -= lr v.
    Sgd { momentum: f32, first_step: bool },
    /// PyTorch AdamW: p -= lr·wd·p, then the Adam step with bias correction.
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
        /// 1-based step count for bias correction.
        step: u64,
    },
}

pub trait Backend {
    /// A buffer of the backend's compute elements.
    type Buf;

    fn name(&self) -> String;
    /// A zero-filled buffer of `len` elements.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// A zero-filled buffer for `len` activations (pre-activations,
    /// activations and their gradients inside the trunk), which a backend
    /// may store in lower precision (`--precision bf16`); `upload` and
    /// `download` still speak f32.
    fn alloc_act(&self, len: usize) -> Self::Buf {
        self.alloc(len)
    }
    /// Bytes per element of [`Backend::alloc_act`] buffers.
    fn act_elem_bytes(&self) -> usize {
        4
    }
    /// Copies host values into `dst[off..off + src.len()]`.
    fn upload(&self, src: &[f32], dst: &mut Self::Buf, off: usize);
    /// Copies `src[off..off + dst.len()]` to the host.
    fn download(&self, src: &Self::Buf, off: usize, dst: &mut [f32]);
    /// Where `buf` lives (for the gradient sync); the default: nowhere
    /// another module can reach.
    fn memory(&self, buf: &mut Self::Buf) -> Memory {
        let _ = buf;
        Memory::Opaque
    }
    /// Sets `buf[off..off + len]` to zero.
    fn zero(&self, buf: &mut Self::Buf, off: usize, len: usize);

    fn gemm(&self, g: Gemm, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf);
    /// z[r, :] += bias for every row; then h = act(z) (h untouched if None).
    fn bias_act(
        &self,
        act: Option<Activation>,
        rows: usize,
        cols: usize,
        bias: &Self::Buf,
        bias_off: usize,
        z: &mut Self::Buf,
        h: Option<&mut Self::Buf>,
    );
    /// dz = dh ⊙ act'(z), in place in `dh`. `h = act(z)` is given as well
    /// (relu and tanh derivatives are cheaper from it).
    fn act_backward(
        &self,
        act: Activation,
        len: usize,
        z: &Self::Buf,
        h: &Self::Buf,
        dh: &mut Self::Buf,
    );
    /// [`Backend::act_backward`] on a [rows, cols] matrix, then
    /// [`Backend::col_sum`] of the result into `out[off..]` (the bias
    /// gradient): the CPU backend does both in one pass.
    #[allow(clippy::too_many_arguments)]
    fn act_backward_col_sum(
        &self,
        act: Activation,
        rows: usize,
        cols: usize,
        z: &Self::Buf,
        h: &Self::Buf,
        dh: &mut Self::Buf,
        out: &mut Self::Buf,
        off: usize,
        beta: f32,
    ) {
        self.act_backward(act, rows * cols, z, h, dh);
        self.col_sum(rows, cols, dh, out, off, beta);
    }
    /// out[off + c] = beta · out[off + c] + Σ_r x[r, c] (bias gradients);
    /// beta 0 overwrites `out` without reading it, as in BLAS (and `gemm`).
    fn col_sum(
        &self,
        rows: usize,
        cols: usize,
        x: &Self::Buf,
        out: &mut Self::Buf,
        off: usize,
        beta: f32,
    );
    /// One task's masked loss: writes Σ per-label loss to `stats[a.stat]` and
    /// `a.grad_scale` · dℓ/d(output) into the task's columns of `dout`
    /// (zero for rows whose label is missing).
    fn task_loss(
        &self,
        a: LossArgs,
        out: &Self::Buf,
        labels: &Self::Buf,
        dout: &mut Self::Buf,
        stats: &mut Self::Buf,
    );
    /// stats[stat] = Σ x[i]² over the first `len` elements.
    fn sum_squares(&self, x: &Self::Buf, len: usize, stats: &mut Self::Buf, stat: usize);
    /// Multiplies the first `len` elements by `s`.
    fn scale(&self, x: &mut Self::Buf, len: usize, s: f32);
    /// One optimizer update of the first `len` parameters. `state` holds
    /// the optimizer's per-parameter state: momentum (SGD), or m then v
    /// (AdamW, 2·len elements).
    fn update(
        &self,
        a: UpdateArgs,
        len: usize,
        params: &mut Self::Buf,
        grads: &Self::Buf,
        state: &mut Self::Buf,
        stats: &Self::Buf,
    );
}

/// The scale clipping applies for a squared norm: min(1, max / ‖g‖).
pub fn clip_scale(clip: Option<f32>, norm_sq: f32) -> f32 {
    match clip {
        Some(c) if norm_sq.sqrt() > c => c / norm_sq.sqrt(),
        _ => 1.0,
    }
}
