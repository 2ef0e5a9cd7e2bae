//! The multi-task model on any [`Backend`]: forward through the trunk and
//! the stacked heads, masked task losses, backward into the flat gradient
//! buffer. Hand-written, no autograd: the backward is the forward read in
//! reverse, one GEMM pair per Linear.

pub mod layout;
pub mod spec;

use crate::backend::{Backend, Gemm, LossArgs};
use crate::tasks::TaskColumns;
use layout::{LinearAt, ParamLayout};
use spec::ModelSpec;

/// The model plus its activation workspace, sized for `max_rows` samples.
pub struct Model<B: Backend> {
    pub spec: ModelSpec,
    pub layout: ParamLayout,
    pub cols: TaskColumns,
    pub max_rows: usize,
    /// Inputs [rows, input_dim] and labels [rows, label_cols] of the batch.
    pub x: B::Buf,
    pub labels: B::Buf,
    /// Pre-activations and activations of each trunk layer, [rows, out].
    z: Vec<B::Buf>,
    h: Vec<B::Buf>,
    /// Head outputs [rows, out_cols] and their gradients.
    pub out: B::Buf,
    dout: B::Buf,
    /// Two [rows, widest layer] buffers that carry dh backwards.
    dh: [B::Buf; 2],
}

fn gemm(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Gemm {
    Gemm {
        m,
        n,
        k,
        trans_a: ta,
        trans_b: tb,
        a_off: 0,
        b_off: 0,
        c_off: 0,
        alpha: 1.0,
        beta: 0.0,
    }
}

impl<B: Backend> Model<B> {
    pub fn new(be: &B, spec: ModelSpec, max_rows: usize) -> Self {
        let layout = ParamLayout::new(&spec);
        let cols = spec.columns();
        let widest = spec.hidden.iter().copied().max().unwrap_or(0);
        let per_layer = |be: &B| -> Vec<B::Buf> {
            spec.hidden
                .iter()
                .map(|&w| be.alloc(max_rows * w))
                .collect()
        };
        Model {
            x: be.alloc(max_rows * spec.input_dim),
            labels: be.alloc(max_rows * cols.label_cols),
            z: per_layer(be),
            h: per_layer(be),
            out: be.alloc(max_rows * cols.out_cols),
            dout: be.alloc(max_rows * cols.out_cols),
            dh: [be.alloc(max_rows * widest), be.alloc(max_rows * widest)],
            layout,
            cols,
            max_rows,
            spec,
        }
    }

    /// Floats of activation workspace (for the memory estimate).
    pub fn workspace_len(&self) -> usize {
        let widest = self.spec.hidden.iter().copied().max().unwrap_or(0);
        let hidden: usize = self.spec.hidden.iter().sum();
        self.max_rows
            * (self.spec.input_dim
                + self.cols.label_cols
                + 2 * hidden
                + 2 * self.cols.out_cols
                + 2 * widest)
    }

    /// Forward pass of the first `rows` samples in `self.x` into `self.out`.
    pub fn forward(&mut self, be: &B, params: &B::Buf, rows: usize) {
        assert!(rows <= self.max_rows, "batch larger than the workspace");
        let act = self.spec.activation;
        for (l, lin) in self.layout.trunk.iter().enumerate() {
            let (h_prev, h_rest) = self.h.split_at_mut(l);
            let input = if l == 0 { &self.x } else { &h_prev[l - 1] };
            let z = &mut self.z[l];
            be.gemm(
                Gemm {
                    b_off: lin.w,
                    ..gemm(rows, lin.out, lin.inp, false, true)
                },
                input,
                params,
                z,
            );
            be.bias_act(Some(act), rows, lin.out, params, lin.b, z, Some(&mut h_rest[0]));
        }
        let heads = self.layout.heads;
        let input = self.h.last().unwrap_or(&self.x);
        be.gemm(
            Gemm {
                b_off: heads.w,
                ..gemm(rows, heads.out, heads.inp, false, true)
            },
            input,
            params,
            &mut self.out,
        );
        be.bias_act(None, rows, heads.out, params, heads.b, &mut self.out, None);
    }

    /// Task losses of the last forward (sums into `stats`) and the backward
    /// pass: gradients of Σ_t scale_t · loss_t into `grads`, added to what is
    /// there if `accumulate`. `ready` is told each Linear's gradient range
    /// as soon as it is final, heads first (for overlapped all-reduce).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        stats: &mut B::Buf,
        losses: &[LossArgs],
        rows: usize,
        accumulate: bool,
        ready: &mut dyn FnMut(&LinearAt),
    ) {
        for &a in losses {
            be.task_loss(a, &self.out, &self.labels, &mut self.dout, stats);
        }
        let beta = if accumulate { 1.0 } else { 0.0 };
        let heads = self.layout.heads;
        let top = self.h.last().unwrap_or(&self.x);
        Self::linear_grads(be, &heads, rows, &self.dout, top, grads, beta);
        ready(&heads);
        let Some(last) = self.layout.trunk.len().checked_sub(1) else {
            return;
        };
        // dh of the top trunk layer = dout · W_heads.
        be.gemm(
            Gemm {
                b_off: heads.w,
                ..gemm(rows, heads.inp, heads.out, false, false)
            },
            &self.dout,
            params,
            &mut self.dh[0],
        );
        let act = self.spec.activation;
        for l in (0..=last).rev() {
            let lin = self.layout.trunk[l];
            let [cur, next] = &mut self.dh;
            let (cur, next) = if (last - l) % 2 == 0 {
                (cur, next)
            } else {
                (next, cur)
            };
            be.act_backward(act, rows * lin.out, &self.z[l], &self.h[l], cur);
            let input = if l == 0 { &self.x } else { &self.h[l - 1] };
            Self::linear_grads(be, &lin, rows, cur, input, grads, beta);
            if l > 0 {
                be.gemm(
                    Gemm {
                        b_off: lin.w,
                        ..gemm(rows, lin.inp, lin.out, false, false)
                    },
                    cur,
                    params,
                    next,
                );
            }
            ready(&lin);
        }
    }

    /// dW = dz^T · input and db = Σ_rows dz for one Linear.
    fn linear_grads(
        be: &B,
        lin: &LinearAt,
        rows: usize,
        dz: &B::Buf,
        input: &B::Buf,
        grads: &mut B::Buf,
        beta: f32,
    ) {
        be.gemm(
            Gemm {
                c_off: lin.w,
                beta,
                ..gemm(lin.out, lin.inp, rows, true, false)
            },
            dz,
            input,
            grads,
        );
        be.col_sum(rows, lin.out, dz, grads, lin.b, beta);
    }
}
