//! Task weights that move during training: the λ_t of L = Σ λ_t L_t.
//!
//! ```text
//! static       λ_t as given
//! uncertainty  Kendall, Gal & Cipolla 2018: a learned s_t = log σ_t² per
//!              task; L = Σ c_t·e^(−s_t)·L_t + s_t/2, c_t = 1/2 for regress,
//!              1 for classify and binary; s trained by the model's optimizer
//! dwa          Liu, Johns & Davison 2019: λ_t = T·softmax_t(r/τ), r_t the
//!              ratio of task t's mean loss over the last two windows of W
//!              steps (λ_t = 1 until two windows are complete)
//! gradnorm     Chen et al. 2018: learned w_t, renormalised to Σ w_t = T;
//!              G_t = w_t·‖∇_W L_t‖ at the last shared layer W is pulled
//!              towards mean(G)·r_t^α, r_t = (L_t/L_t(0)) / mean(L/L(0))
//! ```
//!
//! Every input is global (the all-reduced per-task losses, the all-reduced
//! per-task gradients), and the arithmetic is f64 on the host, the same on
//! every rank: the weights, and so the parameters, do not depend on the
//! number of ranks. The learned values (s_t, w_t) get the model's update
//! rule and learning rate, without weight decay or clipping. GradNorm's
//! rule steps on ln w_t (gradient w_t·∂/∂w_t): a fixed-size step of AdamW
//! on w itself swings a weight that settles near 0.001 (a task whose
//! gradient is 100× the others') between that and the floor every few
//! steps; on ln w the step is relative and the weight settles.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{OptimConfig, OptimizerKind, TaskWeighting, TasksConfig};
use crate::tasks::{TaskKind, TaskSpec};

/// Everything the weighting carries from one step to the next; it goes
/// into checkpoints (as JSON: f64 values round-trip exactly).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightingState {
    pub method: TaskWeighting,
    /// uncertainty: s_t; gradnorm: w_t; empty otherwise.
    pub learned: Vec<f64>,
    /// The update rule's state for `learned`: momentum (SGD), or m then v
    /// (AdamW).
    pub moments: Vec<f64>,
    pub updates: u64,
    /// gradnorm: L_t(0), each task's first global loss.
    pub initial_loss: Vec<Option<f64>>,
    /// dwa: the open window's loss sums, steps with a loss, and length.
    pub window_sum: Vec<f64>,
    pub window_count: Vec<u64>,
    pub window_steps: u64,
    /// dwa: mean losses of the last complete window and the one before.
    pub last_mean: Vec<Option<f64>>,
    pub before_mean: Vec<Option<f64>>,
    /// dwa: the weights in force.
    pub dwa_lambda: Vec<f64>,
}

/// Per-task gradients at the last shared layer, over the global batch.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskGradStats {
    /// ‖∇_W L_t‖ of each task (unweighted).
    pub norms: Vec<f64>,
    /// cos(∇_W L_a, ∇_W L_b) for every pair a < b, in that order (NaN
    /// when either gradient is zero).
    pub cosines: Vec<(usize, usize, f64)>,
}

impl TaskGradStats {
    /// From the flat [T × len] gradients.
    pub fn from_grads(grads: &[f32], tasks: usize) -> Self {
        let len = grads.len() / tasks.max(1);
        let g = |t: usize| &grads[t * len..(t + 1) * len];
        let dot = |a: usize, b: usize| -> f64 {
            g(a).iter()
                .zip(g(b))
                .map(|(&x, &y)| x as f64 * y as f64)
                .sum()
        };
        let norms: Vec<f64> = (0..tasks).map(|t| dot(t, t).sqrt()).collect();
        let mut cosines = vec![];
        for a in 0..tasks {
            for b in a + 1..tasks {
                let denom = norms[a] * norms[b];
                let c = if denom > 0.0 {
                    dot(a, b) / denom
                } else {
                    f64::NAN
                };
                cosines.push((a, b, c));
            }
        }
        TaskGradStats { norms, cosines }
    }
}

/// The weights of a run and how they move.
pub struct TaskWeights {
    cfg: TasksConfig,
    kinds: Vec<TaskKind>,
    /// The user's λ_t (used by `static` only).
    given: Vec<f64>,
    pub state: WeightingState,
}

impl TaskWeights {
    pub fn new(cfg: &TasksConfig, tasks: &[TaskSpec], optimizer: OptimizerKind) -> Self {
        let n = tasks.len();
        let learned = match cfg.weighting {
            TaskWeighting::Uncertainty => vec![0.0; n],
            TaskWeighting::Gradnorm => vec![1.0; n],
            TaskWeighting::Static | TaskWeighting::Dwa => vec![],
        };
        let moments = vec![
            0.0;
            learned.len()
                * match optimizer {
                    OptimizerKind::Sgd => 1,
                    OptimizerKind::Adamw => 2,
                }
        ];
        TaskWeights {
            cfg: cfg.clone(),
            kinds: tasks.iter().map(|t| t.kind).collect(),
            given: tasks.iter().map(|t| t.weight as f64).collect(),
            state: WeightingState {
                method: cfg.weighting,
                learned,
                moments,
                updates: 0,
                initial_loss: vec![None; n],
                window_sum: vec![0.0; n],
                window_count: vec![0; n],
                window_steps: 0,
                last_mean: vec![None; n],
                before_mean: vec![None; n],
                dwa_lambda: vec![1.0; n],
            },
        }
    }

    pub fn method(&self) -> TaskWeighting {
        self.cfg.weighting
    }

    /// The weight on each task's mean loss in this step's gradient.
    pub fn lambdas(&self) -> Vec<f64> {
        let s = &self.state;
        match self.cfg.weighting {
            TaskWeighting::Static => self.given.clone(),
            TaskWeighting::Uncertainty => self
                .kinds
                .iter()
                .zip(&s.learned)
                .map(|(&k, &st)| uncertainty_factor(k) * (-st).exp())
                .collect(),
            TaskWeighting::Dwa => s.dwa_lambda.clone(),
            TaskWeighting::Gradnorm => s.learned.clone(),
        }
    }

    /// The objective: Σ λ_t L_t over the tasks with labels, plus Σ s_t/2
    /// under uncertainty weighting.
    pub fn total_loss(&self, losses: &[f64]) -> f64 {
        let data: f64 = self
            .lambdas()
            .iter()
            .zip(losses)
            .filter(|(_, l)| !l.is_nan())
            .map(|(w, l)| w * l)
            .sum();
        match self.cfg.weighting {
            TaskWeighting::Uncertainty => data + self.state.learned.iter().sum::<f64>() / 2.0,
            _ => data,
        }
    }

    /// Whether the weights need every step's global losses.
    pub fn needs_losses(&self) -> bool {
        self.cfg.weighting != TaskWeighting::Static
    }

    /// Whether step `step` (0-based) needs the per-task gradients at the
    /// last shared layer: GradNorm at every step, the diagnostics every
    /// `stats_every` steps.
    pub fn needs_task_grads(&self, step: u64) -> bool {
        self.cfg.weighting == TaskWeighting::Gradnorm || self.stats_due(step)
    }

    /// Whether any of `steps` steps needs them (the probe's buffers).
    pub fn ever_needs_task_grads(&self, steps: u64) -> bool {
        let n = self.cfg.stats_every;
        self.cfg.weighting == TaskWeighting::Gradnorm || (n > 0 && n <= steps)
    }

    /// Whether step `step` writes a diagnostics record.
    pub fn stats_due(&self, step: u64) -> bool {
        let n = self.cfg.stats_every;
        n > 0 && (step + 1) % n == 0
    }

    /// Moves the weights after an applied update, from this step's global
    /// per-task losses (NaN: no label of the task in the batch) and, for
    /// GradNorm, the per-task gradients.
    pub fn update(
        &mut self,
        losses: &[f64],
        grads: Option<&TaskGradStats>,
        lr: f32,
        o: &OptimConfig,
    ) {
        match self.cfg.weighting {
            TaskWeighting::Static => {}
            TaskWeighting::Uncertainty => {
                let g = self.uncertainty_grad(losses);
                self.step_learned(&g, lr, o);
            }
            TaskWeighting::Dwa => self.dwa_add(losses),
            TaskWeighting::Gradnorm => {
                let stats = grads.expect("GradNorm needs the per-task gradients");
                let g = self.gradnorm_grad(losses, &stats.norms);
                let w = std::mem::take(&mut self.state.learned);
                let g_log: Vec<f64> = g.iter().zip(&w).map(|(g, w)| g * w).collect();
                self.state.learned = w.iter().map(|w| w.ln()).collect();
                self.step_learned(&g_log, lr, o);
                self.state.learned = self.state.learned.iter().map(|u| u.exp()).collect();
                renormalise(&mut self.state.learned);
            }
        }
    }

    /// d/ds_t of c_t·e^(−s_t)·L_t + s_t/2 (no data term without labels).
    fn uncertainty_grad(&self, losses: &[f64]) -> Vec<f64> {
        self.kinds
            .iter()
            .zip(&self.state.learned)
            .zip(losses)
            .map(|((&k, &s), &l)| {
                let data = if l.is_nan() {
                    0.0
                } else {
                    uncertainty_factor(k) * (-s).exp() * l
                };
                0.5 - data
            })
            .collect()
    }

    /// d/dw_t of Σ_t |G_t − mean(G)·r_t^α| with the target held constant,
    /// over the tasks with a loss this step (the others get 0).
    fn gradnorm_grad(&mut self, losses: &[f64], norms: &[f64]) -> Vec<f64> {
        let st = &mut self.state;
        for (init, &l) in st.initial_loss.iter_mut().zip(losses) {
            if init.is_none() && l.is_finite() && l > 0.0 {
                *init = Some(l);
            }
        }
        let active: Vec<usize> = (0..losses.len())
            .filter(|&t| losses[t].is_finite() && st.initial_loss[t].is_some())
            .filter(|&t| norms[t].is_finite())
            .collect();
        let mut grad = vec![0.0; losses.len()];
        if active.is_empty() {
            return grad;
        }
        let k = active.len() as f64;
        let g_of = |t: usize| st.learned[t] * norms[t];
        let mean_g = active.iter().map(|&t| g_of(t)).sum::<f64>() / k;
        let ratio = |t: usize| losses[t] / st.initial_loss[t].expect("active");
        let mean_ratio = active.iter().map(|&t| ratio(t)).sum::<f64>() / k;
        for &t in &active {
            let r = ratio(t) / mean_ratio;
            let target = mean_g * r.powf(self.cfg.gradnorm_alpha);
            let diff = g_of(t) - target;
            // d|x|/dx = sign(x), 0 at 0.
            let sign = if diff > 0.0 {
                1.0
            } else if diff < 0.0 {
                -1.0
            } else {
                0.0
            };
            grad[t] = sign * norms[t];
        }
        grad
    }

    /// DWA: adds this step's losses to the open window; a full window
    /// becomes the last one, and the weights are recomputed.
    fn dwa_add(&mut self, losses: &[f64]) {
        let st = &mut self.state;
        for (t, &l) in losses.iter().enumerate() {
            if l.is_finite() {
                st.window_sum[t] += l;
                st.window_count[t] += 1;
            }
        }
        st.window_steps += 1;
        if st.window_steps < self.cfg.dwa_window {
            return;
        }
        let n = losses.len();
        st.before_mean = std::mem::take(&mut st.last_mean);
        st.last_mean = (0..n)
            .map(|t| (st.window_count[t] > 0).then(|| st.window_sum[t] / st.window_count[t] as f64))
            .collect();
        st.window_sum = vec![0.0; n];
        st.window_count = vec![0; n];
        st.window_steps = 0;
        st.dwa_lambda = dwa_weights(&st.last_mean, &st.before_mean, self.cfg.dwa_temperature);
    }

    /// One step of the model's update rule on the learned values.
    fn step_learned(&mut self, grad: &[f64], lr: f32, o: &OptimConfig) {
        let st = &mut self.state;
        let lr = self.cfg.weight_lr.unwrap_or(lr) as f64;
        let n = st.learned.len();
        match o.optimizer {
            OptimizerKind::Sgd => {
                let mu = o.momentum as f64;
                let first = mu == 0.0 || st.updates == 0;
                for ((p, v), &g) in st.learned.iter_mut().zip(&mut st.moments).zip(grad) {
                    *v = if first { g } else { mu * *v + g };
                    *p -= lr * *v;
                }
            }
            OptimizerKind::Adamw => {
                let (b1, b2, eps) = (o.beta1 as f64, o.beta2 as f64, o.eps as f64);
                let k = (st.updates + 1) as i32;
                let (bc1, bc2) = (1.0 - b1.powi(k), 1.0 - b2.powi(k));
                let (m, v) = st.moments.split_at_mut(n);
                for i in 0..n {
                    m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
                    st.learned[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                }
            }
        }
        st.updates += 1;
    }

    /// The state for a checkpoint; None under `static` (there is none).
    pub fn to_json(&self) -> Option<Value> {
        (self.cfg.weighting != TaskWeighting::Static)
            .then(|| serde_json::to_value(&self.state).expect("weighting state serialises"))
    }

    /// Continues from a checkpoint's state; an error names what does not fit.
    pub fn restore(&mut self, saved: Option<&Value>) -> Result<(), String> {
        let Some(v) = saved else {
            return match self.cfg.weighting {
                TaskWeighting::Static => Ok(()),
                m => Err(format!(
                    "holds no task weighting state; this run uses --task-weighting {}",
                    m.name()
                )),
            };
        };
        let st: WeightingState = serde_json::from_value(v.clone())
            .map_err(|e| format!("unreadable task weighting state ({e})"))?;
        let n = self.kinds.len();
        let fits = st.method == self.cfg.weighting
            && st.learned.len() == self.state.learned.len()
            && st.moments.len() == self.state.moments.len()
            && [
                st.initial_loss.len(),
                st.window_sum.len(),
                st.window_count.len(),
                st.dwa_lambda.len(),
            ]
            .iter()
            .all(|&l| l == n);
        if !fits {
            return Err(format!(
                "its task weighting state ({}) does not fit this run (--task-weighting {}, {n} tasks)",
                st.method.name(),
                self.cfg.weighting.name()
            ));
        }
        self.state = st;
        Ok(())
    }
}

/// c_t of the uncertainty weighting: 1/2 for a Gaussian likelihood
/// (regression), 1 for softmax and sigmoid likelihoods.
pub fn uncertainty_factor(kind: TaskKind) -> f64 {
    match kind {
        TaskKind::Regress { .. } => 0.5,
        TaskKind::Classify { .. } | TaskKind::Binary => 1.0,
    }
}

/// λ_t = T·exp(r_t/τ)/Σ_i exp(r_i/τ) with r_t = last_t/before_t; 1 for
/// every task until both windows have a mean for every task.
pub fn dwa_weights(last: &[Option<f64>], before: &[Option<f64>], tau: f64) -> Vec<f64> {
    let n = last.len();
    let ratios: Option<Vec<f64>> = (0..n)
        .map(|t| match (last.get(t)?, before.get(t)?) {
            (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
            _ => None,
        })
        .collect();
    let Some(r) = ratios else {
        return vec![1.0; n];
    };
    // Shifted by the largest ratio: the same softmax, no overflow.
    let top = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = r.iter().map(|x| ((x - top) / tau).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| n as f64 * x / sum).collect()
}

/// GradNorm's renormalisation Σ w_t = T, each w_t kept positive (a weight
/// that is not a positive number is set to 1e-6 first).
fn renormalise(w: &mut [f64]) {
    let floor = 1e-6;
    for x in w.iter_mut() {
        if x.is_nan() || *x <= floor {
            *x = floor;
        }
    }
    let sum: f64 = w.iter().sum();
    let n = w.len() as f64;
    for x in w.iter_mut() {
        *x *= n / sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> Vec<TaskSpec> {
        let t = |name: &str, kind| TaskSpec {
            name: name.into(),
            kind,
            weight: 1.0,
        };
        vec![
            t("a", TaskKind::Classify { classes: 3 }),
            t("b", TaskKind::Regress { dim: 2 }),
            t("c", TaskKind::Binary),
        ]
    }

    fn weights(method: TaskWeighting, window: u64) -> TaskWeights {
        let cfg = TasksConfig {
            weighting: method,
            dwa_window: window,
            ..TasksConfig::default()
        };
        TaskWeights::new(&cfg, &tasks(), OptimizerKind::Sgd)
    }

    fn sgd(lr: f32) -> (f32, OptimConfig) {
        let o = OptimConfig {
            optimizer: OptimizerKind::Sgd,
            momentum: 0.0,
            ..OptimConfig::default()
        };
        (lr, o)
    }

    #[test]
    fn uncertainty_starts_at_c_and_moves_s_by_its_gradient() {
        let mut w = weights(TaskWeighting::Uncertainty, 1);
        assert_eq!(w.lambdas(), vec![1.0, 0.5, 1.0]);
        let (lr, o) = sgd(0.1);
        // b has no labels this step: only the regulariser pulls its s.
        w.update(&[2.0, f64::NAN, 0.25], None, lr, &o);
        let lr = lr as f64;
        let want = [-lr * (0.5 - 2.0), -lr * 0.5, -lr * (0.5 - 0.25)];
        for (s, w) in w.state.learned.iter().zip(want) {
            assert!((s - w).abs() < 1e-15, "{s} vs {w}");
        }
        let l = w.lambdas();
        assert!((l[1] - 0.5 * (lr * 0.5).exp()).abs() < 1e-15);
        let total = w.total_loss(&[1.0, 1.0, 1.0]);
        let reg: f64 = w.state.learned.iter().sum::<f64>() / 2.0;
        assert!((total - (l.iter().sum::<f64>() + reg)).abs() < 1e-12);
    }

    #[test]
    fn dwa_is_one_until_two_windows_then_a_tempered_softmax() {
        let mut w = weights(TaskWeighting::Dwa, 2);
        let (lr, o) = sgd(0.1);
        for l in [[4.0, 2.0, 1.0], [4.0, 2.0, 1.0], [2.0, 2.0, 2.0]] {
            w.update(&l, None, lr, &o);
            assert_eq!(w.lambdas(), vec![1.0; 3]);
        }
        w.update(&[2.0, 2.0, f64::NAN], None, lr, &o);
        // Window means: (4, 2, 1) then (2, 2, 2): r = (0.5, 1, 2).
        let e: Vec<f64> = [0.5f64, 1.0, 2.0].iter().map(|r| (r / 2.0).exp()).collect();
        let s: f64 = e.iter().sum();
        for (got, e) in w.lambdas().iter().zip(&e) {
            assert!((got - 3.0 * e / s).abs() < 1e-12);
        }
        assert!((w.lambdas().iter().sum::<f64>() - 3.0).abs() < 1e-12);
    }

    #[test]
    fn gradnorm_raises_the_task_that_trains_slowest_and_keeps_the_sum() {
        let mut w = weights(TaskWeighting::Gradnorm, 1);
        let (lr, o) = sgd(0.01);
        let g = |norms: Vec<f64>| TaskGradStats {
            norms,
            cosines: vec![],
        };
        w.update(&[1.0, 1.0, 1.0], Some(&g(vec![1.0, 1.0, 1.0])), lr, &o);
        assert_eq!(w.state.learned, vec![1.0; 3], "balanced: no change");
        // Task a's loss has not moved, b and c halved; a's gradient is small.
        w.update(&[1.0, 0.5, 0.5], Some(&g(vec![0.5, 1.0, 1.0])), lr, &o);
        let l = w.lambdas();
        assert!(l[0] > 1.0 && l[1] < 1.0 && l[2] < 1.0, "{l:?}");
        assert!((l.iter().sum::<f64>() - 3.0).abs() < 1e-12);
    }

    /// J(θ, s) = Σ_t c_t·e^(−s_t)·L_t(θ) + s_t/2 of a small model in f64,
    /// with labels missing, through `total_loss`; its gradient from the
    /// backward with scales `lambdas()`/N_t and from `uncertainty_grad`.
    fn objective(
        w: &TaskWeights,
        m: &mut crate::model::Model<crate::backend::cpu::Cpu<f64>>,
        params: &Vec<f64>,
        rows: usize,
        counts: &[f64],
    ) -> (f64, Vec<f64>, Vec<f64>) {
        use crate::backend::{Backend, LossArgs};
        let be = crate::backend::cpu::Cpu::<f64>::new();
        let cols = m.cols.clone();
        let lambdas = w.lambdas();
        let args: Vec<LossArgs> = (0..counts.len())
            .map(|t| {
                let scale = (lambdas[t] / counts[t]) as f32;
                LossArgs::for_task(w.kinds[t], &cols, t, rows, scale, false)
            })
            .collect();
        let mut grads = be.alloc(m.layout.total);
        let mut stats = be.alloc(counts.len());
        m.forward(&be, params, rows);
        m.backward(
            &be,
            params,
            &mut grads,
            &mut stats,
            &args,
            rows,
            false,
            &mut |_| {},
        );
        let losses: Vec<f64> = (0..counts.len()).map(|t| stats[t] / counts[t]).collect();
        (w.total_loss(&losses), grads, w.uncertainty_grad(&losses))
    }

    #[test]
    fn uncertainty_objective_matches_finite_differences_in_params_and_s() {
        use crate::backend::Backend;
        use crate::backend::cpu::Cpu;
        use crate::model::{Model, layout};
        use crate::spec::{Activation, ModelSpec};
        let spec = ModelSpec {
            input_dim: 4,
            hidden: vec![5],
            activation: Activation::Tanh,
            tasks: tasks(),
        };
        let be = Cpu::<f64>::new();
        let rows = 8;
        let mut m = Model::new(&be, spec, rows);
        let x: Vec<f32> = (0..rows * 4)
            .map(|i| crate::rng::normal(9, 1, i as u64) as f32)
            .collect();
        let mut labels = vec![];
        for r in 0..rows {
            let gone = |k: usize| (r + k) % 4 == 0;
            labels.push(if gone(0) { f32::NAN } else { (r % 3) as f32 });
            for d in 0..2 {
                let y = crate::rng::normal(9, 2, (2 * r + d) as u64) as f32;
                labels.push(if gone(1 + d) { f32::NAN } else { y });
            }
            labels.push(if gone(3) { f32::NAN } else { (r % 2) as f32 });
        }
        let present = |col: usize| (0..rows).filter(|r| !labels[r * 4 + col].is_nan()).count();
        let counts = [
            present(0) as f64,
            (present(1) + present(2)) as f64,
            present(3) as f64,
        ];
        be.upload(&x, &mut m.x, 0);
        be.upload(&labels, &mut m.labels, 0);
        let mut params = be.alloc(m.layout.total);
        be.upload(&layout::init_params(&m.layout, 3), &mut params, 0);
        let mut w = weights(TaskWeighting::Uncertainty, 1);
        w.state.learned = vec![0.3, -0.7, 1.1];

        let (_, g_params, g_s) = objective(&w, &mut m, &params, rows, &counts);
        let eps = 1e-6;
        let rel = |fd: f64, g: f64| (fd - g).abs() / (1e-6 + fd.abs().max(g.abs()));
        for i in 0..params.len() {
            let keep = params[i];
            params[i] = keep + eps;
            let (jp, _, _) = objective(&w, &mut m, &params, rows, &counts);
            params[i] = keep - eps;
            let (jm, _, _) = objective(&w, &mut m, &params, rows, &counts);
            params[i] = keep;
            let fd = (jp - jm) / (2.0 * eps);
            assert!(
                rel(fd, g_params[i]) < 1e-5,
                "param {i}: {fd} vs {}",
                g_params[i]
            );
        }
        for (t, &want) in g_s.iter().enumerate() {
            let keep = w.state.learned[t];
            w.state.learned[t] = keep + eps;
            let (jp, _, _) = objective(&w, &mut m, &params, rows, &counts);
            w.state.learned[t] = keep - eps;
            let (jm, _, _) = objective(&w, &mut m, &params, rows, &counts);
            w.state.learned[t] = keep;
            let fd = (jp - jm) / (2.0 * eps);
            assert!(rel(fd, want) < 1e-6, "s_{t}: {fd} vs {want}");
        }
    }

    #[test]
    fn cosines_of_equal_and_opposite_gradients() {
        let g = [1.0f32, 2.0, 1.0, 2.0, -1.0, -2.0];
        let s = TaskGradStats::from_grads(&g, 3);
        assert!((s.norms[0] - 5f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.cosines.len(), 3);
        assert!((s.cosines[0].2 - 1.0).abs() < 1e-12);
        assert!((s.cosines[1].2 + 1.0).abs() < 1e-12);
    }

    #[test]
    fn state_round_trips_through_json_and_mismatches_are_named() {
        let mut w = weights(TaskWeighting::Uncertainty, 1);
        let (lr, o) = sgd(0.1);
        w.update(&[0.3, 1.7, 0.1], None, lr, &o);
        let json = w.to_json().unwrap();
        let text = serde_json::to_string(&json).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        let mut v = weights(TaskWeighting::Uncertainty, 1);
        v.restore(Some(&back)).unwrap();
        assert_eq!(v.state, w.state);
        let mut d = weights(TaskWeighting::Dwa, 1);
        let e = d.restore(Some(&back)).unwrap_err();
        assert!(e.contains("uncertainty") && e.contains("dwa"), "{e}");
        assert!(d.restore(None).is_err());
        assert!(weights(TaskWeighting::Static, 1).restore(None).is_ok());
    }
}
