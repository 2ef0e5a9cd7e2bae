//! Each task's own gradient at the last shared layer (the top trunk
//! Linear's weight W), for GradNorm and the task diagnostics: the
//! backward of one task's loss through the heads and that one layer, on
//! the activations the last forward left, into buffers of its own.

use super::Model;
use super::layout::LinearAt;
use crate::backend::{Backend, Gemm, LossArgs};

/// Scratch for [`Model::task_grads`]; `grads` holds, per task, the
/// gradient of W then of the bias: [tasks × (out·inp + out)].
pub struct TaskGradProbe<B: Backend> {
    dout: B::Buf,
    dh: B::Buf,
    stats: B::Buf,
    pub grads: B::Buf,
    /// The top trunk Linear.
    pub top: LinearAt,
    pub tasks: usize,
}

impl<B: Backend> TaskGradProbe<B> {
    /// None without a trunk layer (nothing is shared).
    pub fn new(be: &B, model: &Model<B>) -> Option<Self> {
        let top = *model.layout.trunk.last()?;
        let tasks = model.spec.tasks.len();
        Some(TaskGradProbe {
            dout: be.alloc(model.max_rows * model.cols.out_cols),
            dh: be.alloc_act(model.max_rows * top.out),
            stats: be.alloc(tasks),
            grads: be.alloc(tasks * Self::stride_of(&top)),
            top,
            tasks,
        })
    }

    fn stride_of(top: &LinearAt) -> usize {
        top.out * top.inp + top.out
    }

    /// Floats per task in `grads`.
    pub fn stride(&self) -> usize {
        Self::stride_of(&self.top)
    }

    /// Only the weight part of task `t`'s slot.
    pub fn weight_range(&self, t: usize) -> std::ops::Range<usize> {
        let lo = t * self.stride();
        lo..lo + self.top.out * self.top.inp
    }
}

impl<B: Backend> Model<B> {
    /// For each task t: the gradient of `losses[t].grad_scale`·(sum of
    /// task t's per-label losses) with respect to the top trunk Linear,
    /// from the last forward's `rows` rows, into the probe's slot of t
    /// (added to what is there if `accumulate`).
    pub fn task_grads(
        &self,
        be: &B,
        params: &B::Buf,
        probe: &mut TaskGradProbe<B>,
        losses: &[LossArgs],
        rows: usize,
        accumulate: bool,
    ) {
        let beta = if accumulate { 1.0 } else { 0.0 };
        let heads = self.layout.heads;
        let last = self.layout.trunk.len() - 1;
        let input = if last == 0 {
            &self.x
        } else {
            &self.h[last - 1]
        };
        for t in 0..losses.len() {
            // dout of task t alone: the other tasks' columns scaled by 0.
            for (u, &a) in losses.iter().enumerate() {
                let a = LossArgs {
                    grad_scale: if u == t { a.grad_scale } else { 0.0 },
                    stat: u,
                    accumulate: false,
                    ..a
                };
                be.task_loss(
                    a,
                    &self.out,
                    &self.labels,
                    &mut probe.dout,
                    &mut probe.stats,
                );
            }
            be.gemm(
                Gemm {
                    b_off: heads.w,
                    ..Gemm::new(rows, heads.inp, heads.out, false, false)
                },
                &probe.dout,
                params,
                &mut probe.dh,
            );
            let slot = t * probe.stride();
            let lin = LinearAt {
                w: slot,
                b: slot + probe.top.out * probe.top.inp,
                ..probe.top
            };
            be.act_backward_col_sum(
                self.spec.activation,
                rows,
                lin.out,
                &self.z[last],
                &self.h[last],
                &mut probe.dh,
                &mut probe.grads,
                lin.b,
                beta,
            );
            Self::weight_grad(be, &lin, rows, &probe.dh, input, &mut probe.grads, beta);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The probe against the model's own backward with one task's scale.
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::layout::ParamLayout;
    use crate::rng;
    use crate::spec::{Activation, ModelSpec};
    use crate::tasks::{TaskKind, TaskSpec};

    #[test]
    fn each_task_slot_equals_the_backward_of_that_task_alone() {
        let t = |name: &str, kind| TaskSpec {
            name: name.into(),
            kind,
            weight: 1.0,
        };
        let spec = ModelSpec {
            input_dim: 4,
            hidden: vec![6, 5],
            activation: Activation::Gelu,
            tasks: vec![
                t("c", TaskKind::Classify { classes: 3 }),
                t("r", TaskKind::Regress { dim: 2 }),
                t("b", TaskKind::Binary),
            ],
        };
        let be = Cpu::<f32>::new();
        let rows = 9;
        let mut m = Model::new(&be, spec.clone(), rows);
        let n = ParamLayout::new(&spec).total;
        let init: Vec<f32> = (0..n)
            .map(|i| 0.3 * rng::normal(5, 1, i as u64) as f32)
            .collect();
        let mut params = be.alloc(n);
        be.upload(&init, &mut params, 0);
        let x: Vec<f32> = (0..rows * 4)
            .map(|i| rng::normal(5, 2, i as u64) as f32)
            .collect();
        let mut labels = vec![];
        for r in 0..rows {
            labels.push((r % 3) as f32);
            labels.push(rng::normal(5, 3, r as u64) as f32);
            labels.push(if r == 4 { f32::NAN } else { 0.5 });
            labels.push((r % 2) as f32);
        }
        be.upload(&x, &mut m.x, 0);
        be.upload(&labels, &mut m.labels, 0);
        m.forward(&be, &params, rows);
        let cols = m.cols.clone();
        let args = |scales: [f32; 3]| -> Vec<LossArgs> {
            (0..3)
                .map(|t| LossArgs::for_task(spec.tasks[t].kind, &cols, t, rows, scales[t], false))
                .collect()
        };
        let mut probe = TaskGradProbe::new(&be, &m).unwrap();
        m.task_grads(
            &be,
            &params,
            &mut probe,
            &args([0.7, 1.3, 0.4]),
            rows,
            false,
        );
        let mut got = vec![0f32; 3 * probe.stride()];
        be.download(&probe.grads, 0, &mut got);

        let top = *m.layout.trunk.last().unwrap();
        for (t, scale) in [0.7f32, 1.3, 0.4].into_iter().enumerate() {
            let mut s = [0.0; 3];
            s[t] = scale;
            let mut grads = be.alloc(n);
            let mut stats = be.alloc(4);
            m.forward(&be, &params, rows);
            m.backward(
                &be,
                &params,
                &mut grads,
                &mut stats,
                &args(s),
                rows,
                false,
                &mut |_| {},
            );
            let mut want = vec![0f32; n];
            be.download(&grads, 0, &mut want);
            let want_w = &want[top.w..top.w + top.out * top.inp];
            let want_b = &want[top.b..top.b + top.out];
            let slot = &got[t * probe.stride()..(t + 1) * probe.stride()];
            let (got_w, got_b) = slot.split_at(top.out * top.inp);
            for (g, w) in got_w.iter().chain(got_b).zip(want_w.iter().chain(want_b)) {
                assert!(
                    (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "task {t}: {g} vs {w}"
                );
            }
        }
    }
}
