//! The multi-task model on any [`Backend`]: forward through the trunk and
//! the stacked heads, masked task losses, backward into the flat gradient
//! buffer. Hand-written, no autograd: the backward is the forward read in
//! reverse, one GEMM pair per Linear.

pub mod layout;
pub mod probe;

use crate::backend::{Backend, Gemm, LossArgs};
use crate::spec::ModelSpec;
use crate::tasks::TaskColumns;
use layout::{LinearAt, ParamLayout};

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

impl<B: Backend> Model<B> {
    pub fn new(be: &B, spec: ModelSpec, max_rows: usize) -> Self {
        let layout = ParamLayout::new(&spec);
        let cols = spec.columns();
        let widest = spec.hidden.iter().copied().max().unwrap_or(0);
        let per_layer = |be: &B| -> Vec<B::Buf> {
            spec.hidden
                .iter()
                .map(|&w| be.alloc_act(max_rows * w))
                .collect()
        };
        Model {
            x: be.alloc(max_rows * spec.input_dim),
            labels: be.alloc(max_rows * cols.label_cols),
            z: per_layer(be),
            h: per_layer(be),
            out: be.alloc(max_rows * cols.out_cols),
            dout: be.alloc(max_rows * cols.out_cols),
            dh: [
                be.alloc_act(max_rows * widest),
                be.alloc_act(max_rows * widest),
            ],
            layout,
            cols,
            max_rows,
            spec,
        }
    }

    /// Bytes of workspace (for the memory estimate): f32 inputs, labels
    /// and head outputs; `act_bytes` per trunk activation.
    pub fn workspace_bytes(&self, act_bytes: usize) -> usize {
        let widest = self.spec.hidden.iter().copied().max().unwrap_or(0);
        let hidden: usize = self.spec.hidden.iter().sum();
        let f32s = self.spec.input_dim + self.cols.label_cols + 2 * self.cols.out_cols;
        self.max_rows * (4 * f32s + act_bytes * (2 * hidden + 2 * widest))
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
                    ..Gemm::new(rows, lin.out, lin.inp, false, true)
                },
                input,
                params,
                z,
            );
            be.bias_act(
                Some(act),
                rows,
                lin.out,
                params,
                lin.b,
                z,
                Some(&mut h_rest[0]),
            );
        }
        let heads = self.layout.heads;
        let input = self.h.last().unwrap_or(&self.x);
        be.gemm(
            Gemm {
                b_off: heads.w,
                ..Gemm::new(rows, heads.out, heads.inp, false, true)
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
                ..Gemm::new(rows, heads.inp, heads.out, false, false)
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
            // dz = dh ⊙ act'(z) and db = Σ_rows dz together, then dW.
            be.act_backward_col_sum(
                act, rows, lin.out, &self.z[l], &self.h[l], cur, grads, lin.b, beta,
            );
            let input = if l == 0 { &self.x } else { &self.h[l - 1] };
            Self::weight_grad(be, &lin, rows, cur, input, grads, beta);
            if l > 0 {
                be.gemm(
                    Gemm {
                        b_off: lin.w,
                        ..Gemm::new(rows, lin.inp, lin.out, false, false)
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
        Self::weight_grad(be, lin, rows, dz, input, grads, beta);
        be.col_sum(rows, lin.out, dz, grads, lin.b, beta);
    }

    /// dW = dz^T · input for one Linear.
    fn weight_grad(
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
                ..Gemm::new(lin.out, lin.inp, rows, true, false)
            },
            dz,
            input,
            grads,
        );
    }
}

#[cfg(test)]
mod tests {
    //! The whole model against central finite differences, in f64.
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::rng;
    use crate::spec::Activation;
    use crate::tasks::{TaskKind, TaskSpec};

    fn spec(act: Activation, hidden: Vec<usize>) -> ModelSpec {
        let t = |name: &str, kind, weight| TaskSpec {
            name: name.into(),
            kind,
            weight,
        };
        ModelSpec {
            input_dim: 5,
            hidden,
            activation: act,
            tasks: vec![
                t("c", TaskKind::Classify { classes: 3 }, 1.0),
                t("r", TaskKind::Regress { dim: 2 }, 0.7),
                t("b", TaskKind::Binary, 1.3),
            ],
        }
    }

    /// Inputs and labels of 7 rows with some labels missing (NaN).
    fn batch(rows: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..rows * 5)
            .map(|i| rng::normal(3, 1, i as u64) as f32)
            .collect();
        let mut labels = vec![];
        for r in 0..rows {
            let missing = |k: u64| rng::uniform(3, 2, (r as u64) * 8 + k) < 0.25;
            labels.push(if missing(0) { f32::NAN } else { (r % 3) as f32 });
            for d in 0..2 {
                let y = rng::normal(3, 3, (r * 2 + d) as u64) as f32;
                labels.push(if missing(1 + d as u64) { f32::NAN } else { y });
            }
            labels.push(if missing(4) { f32::NAN } else { (r % 2) as f32 });
        }
        // Every task keeps at least one label.
        labels[0] = 1.0;
        labels[1] = 0.5;
        labels[3] = 1.0;
        (x, labels)
    }

    /// Loss L = Σ λ_t (Σ per-label loss / N_t) and its gradient.
    fn loss_and_grad(
        be: &Cpu<f64>,
        m: &mut Model<Cpu<f64>>,
        params: &Vec<f64>,
        rows: usize,
        labels: &[f32],
    ) -> (f64, Vec<f64>) {
        let cols = m.cols.clone();
        let args: Vec<LossArgs> = m
            .spec
            .tasks
            .iter()
            .enumerate()
            .map(|(t, task)| {
                let w = task.kind.label_dim();
                let n = (0..rows)
                    .flat_map(|r| &labels[r * cols.label_cols + cols.label_off[t]..][..w])
                    .filter(|v| !v.is_nan())
                    .count();
                LossArgs::for_task(task.kind, &cols, t, rows, task.weight / n as f32, false)
            })
            .collect();
        let mut grads = be.alloc(m.layout.total);
        let mut stats = be.alloc(args.len());
        m.forward(be, params, rows);
        m.backward(
            be,
            params,
            &mut grads,
            &mut stats,
            &args,
            rows,
            false,
            &mut |_| {},
        );
        let loss = args
            .iter()
            .map(|a| stats[a.stat] * a.grad_scale as f64)
            .sum();
        (loss, grads)
    }

    fn check_model(act: Activation, hidden: Vec<usize>) {
        let be = Cpu::<f64>::new();
        let rows = 7;
        let mut m = Model::new(&be, spec(act, hidden), rows);
        let (x, labels) = batch(rows);
        be.upload(&x, &mut m.x, 0);
        be.upload(&labels, &mut m.labels, 0);
        let init = layout::init_params(&m.layout, 11);
        let mut params = be.alloc(m.layout.total);
        be.upload(&init, &mut params, 0);
        let (_, grads) = loss_and_grad(&be, &mut m, &params, rows, &labels);
        let eps = 1e-6;
        let mut worst: f64 = 0.0;
        for i in 0..params.len() {
            let keep = params[i];
            params[i] = keep + eps;
            let (lp, _) = loss_and_grad(&be, &mut m, &params, rows, &labels);
            params[i] = keep - eps;
            let (lm, _) = loss_and_grad(&be, &mut m, &params, rows, &labels);
            params[i] = keep;
            let fd = (lp - lm) / (2.0 * eps);
            let err = (fd - grads[i]).abs() / (1e-6 + fd.abs().max(grads[i].abs()));
            worst = worst.max(err);
            assert!(
                err < 1e-5,
                "{act:?}: param {i}: finite difference {fd} vs backward {}",
                grads[i]
            );
        }
        assert!(grads.iter().any(|g| g.abs() > 1e-3), "gradient is all zero");
        eprintln!("{act:?}: worst relative error {worst:.2e}");
    }

    #[test]
    fn whole_model_gradient_matches_finite_differences_relu() {
        check_model(Activation::Relu, vec![6, 4]);
    }

    #[test]
    fn whole_model_gradient_matches_finite_differences_gelu() {
        check_model(Activation::Gelu, vec![6, 4]);
    }

    #[test]
    fn whole_model_gradient_matches_finite_differences_tanh() {
        check_model(Activation::Tanh, vec![6, 4, 3]);
    }

    #[test]
    fn heads_only_model_gradient_matches_finite_differences() {
        check_model(Activation::Relu, vec![]);
    }

    #[test]
    fn accumulate_adds_to_existing_gradients() {
        let be = Cpu::<f64>::new();
        let rows = 7;
        let mut m = Model::new(&be, spec(Activation::Tanh, vec![4]), rows);
        let (x, labels) = batch(rows);
        be.upload(&x, &mut m.x, 0);
        be.upload(&labels, &mut m.labels, 0);
        let mut params = be.alloc(m.layout.total);
        be.upload(&layout::init_params(&m.layout, 1), &mut params, 0);
        let (_, g) = loss_and_grad(&be, &mut m, &params, rows, &labels);
        let args: Vec<LossArgs> = vec![];
        let mut acc = g.clone();
        let mut stats = be.alloc(3);
        m.forward(&be, &params, rows);
        // No losses: dout stays as computed before, so backward adds g again.
        m.backward(
            &be,
            &params,
            &mut acc,
            &mut stats,
            &args,
            rows,
            true,
            &mut |_| {},
        );
        for (a, b) in acc.iter().zip(&g) {
            assert!((a - 2.0 * b).abs() < 1e-12);
        }
    }
}
