//! Validation metrics from sufficient statistics.
//!
//! Each rank accumulates sums over its slice of the validation set into one
//! f64 vector; one all-reduce makes them global; any rank can then finish
//! the metrics. So metrics do not depend on how samples were split.
//! AUC is computed from a histogram of logits (AUC_BINS bins over
//! [-AUC_RANGE, AUC_RANGE], ties within a bin counted as half), which keeps
//! the statistics a fixed-size sum.

use serde::Serialize;

use crate::tasks::{TaskColumns, TaskKind, TaskSpec};

pub const AUC_BINS: usize = 4096;
pub const AUC_RANGE: f32 = 16.0;

/// Offsets of each task's statistics in the shared vector.
pub struct EvalStats {
    tasks: Vec<TaskSpec>,
    cols: TaskColumns,
    offs: Vec<usize>,
    pub sums: Vec<f64>,
}

fn stat_len(kind: TaskKind) -> usize {
    match kind {
        // loss, count, correct, count per class
        TaskKind::Classify { classes } => 3 + classes,
        // loss, count, correct, positives, histograms of positives and negatives
        TaskKind::Binary => 4 + 2 * AUC_BINS,
        // loss, count, then per dim: count, sse, Σy, Σy²
        TaskKind::Regress { dim } => 2 + 4 * dim,
    }
}

/// Finished metrics of one task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskMetrics {
    pub loss: f64,
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// The trivial predictor's score on the same labels: majority-class
    /// accuracy (classify, binary); R² of the mean predictor is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_accuracy: Option<f64>,
}

fn stable_bce(x: f64, y: f64) -> f64 {
    x.max(0.0) - x * y + (-x.abs()).exp().ln_1p()
}

impl EvalStats {
    pub fn new(tasks: &[TaskSpec]) -> Self {
        let mut offs = vec![];
        let mut n = 0;
        for t in tasks {
            offs.push(n);
            n += stat_len(t.kind);
        }
        EvalStats {
            tasks: tasks.to_vec(),
            cols: TaskColumns::new(tasks),
            offs,
            sums: vec![0.0; n],
        }
    }

    /// Adds `rows` samples: head outputs [rows, out_cols], labels [rows, label_cols].
    pub fn add(&mut self, rows: usize, out: &[f32], labels: &[f32]) {
        let c = &self.cols;
        for r in 0..rows {
            for (t, task) in self.tasks.iter().enumerate() {
                let o = &out[r * c.out_cols + c.out_off[t]..][..task.kind.out_dim()];
                let y = &labels[r * c.label_cols + c.label_off[t]..][..task.kind.label_dim()];
                let s = &mut self.sums[self.offs[t]..][..stat_len(task.kind)];
                add_row(task.kind, o, y, s);
            }
        }
    }

    pub fn finish(&self) -> Vec<(String, TaskMetrics)> {
        self.tasks
            .iter()
            .enumerate()
            .map(|(t, task)| {
                let s = &self.sums[self.offs[t]..][..stat_len(task.kind)];
                (task.name.clone(), finish_task(task.kind, s))
            })
            .collect()
    }
}

fn add_row(kind: TaskKind, o: &[f32], y: &[f32], s: &mut [f64]) {
    match kind {
        TaskKind::Classify { .. } => {
            if y[0].is_nan() {
                return;
            }
            let c = y[0] as usize;
            let mx = o.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = o.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln() + mx;
            let pred = argmax(o);
            s[0] += lse - o[c] as f64;
            s[1] += 1.0;
            s[2] += (pred == c) as u8 as f64;
            s[3 + c] += 1.0;
        }
        TaskKind::Binary => {
            if y[0].is_nan() {
                return;
            }
            let (x, pos) = (o[0], y[0] > 0.5);
            s[0] += stable_bce(x as f64, y[0] as f64);
            s[1] += 1.0;
            s[2] += ((x > 0.0) == pos) as u8 as f64;
            s[3] += pos as u8 as f64;
            let b = (((x.clamp(-AUC_RANGE, AUC_RANGE) + AUC_RANGE) / (2.0 * AUC_RANGE))
                * AUC_BINS as f32) as usize;
            let b = b.min(AUC_BINS - 1);
            s[4 + if pos { 0 } else { AUC_BINS } + b] += 1.0;
        }
        TaskKind::Regress { .. } => {
            for (d, (&p, &t)) in o.iter().zip(y).enumerate() {
                if t.is_nan() {
                    continue;
                }
                let e = (p - t) as f64;
                s[0] += e * e;
                s[1] += 1.0;
                let q = &mut s[2 + 4 * d..][..4];
                q[0] += 1.0;
                q[1] += e * e;
                q[2] += t as f64;
                q[3] += (t as f64) * (t as f64);
            }
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn finish_task(kind: TaskKind, s: &[f64]) -> TaskMetrics {
    let n = s[1];
    let div = |a: f64| if n > 0.0 { a / n } else { f64::NAN };
    let mut m = TaskMetrics {
        loss: div(s[0]),
        count: n as u64,
        accuracy: None,
        auc: None,
        rmse: None,
        r2: None,
        baseline_accuracy: None,
    };
    match kind {
        TaskKind::Classify { classes } => {
            m.accuracy = Some(div(s[2]));
            let top = s[3..3 + classes].iter().fold(0.0f64, |a, &b| a.max(b));
            m.baseline_accuracy = Some(div(top));
        }
        TaskKind::Binary => {
            m.accuracy = Some(div(s[2]));
            m.baseline_accuracy = Some(div(s[3].max(n - s[3])));
            m.auc = Some(auc_from_histograms(
                &s[4..4 + AUC_BINS],
                &s[4 + AUC_BINS..4 + 2 * AUC_BINS],
            ));
        }
        TaskKind::Regress { dim } => {
            m.rmse = Some(div(s[0]).sqrt());
            // R² per output dimension, averaged (sklearn's uniform_average).
            let mut r2 = 0.0;
            for d in 0..dim {
                let q = &s[2 + 4 * d..][..4];
                let sst = q[3] - q[2] * q[2] / q[0];
                r2 += 1.0 - q[1] / sst;
            }
            m.r2 = Some(r2 / dim as f64);
        }
    }
    m
}

/// P(score of a positive > score of a negative), ties counted as half.
fn auc_from_histograms(pos: &[f64], neg: &[f64]) -> f64 {
    let (np, nn) = (pos.iter().sum::<f64>(), neg.iter().sum::<f64>());
    if np == 0.0 || nn == 0.0 {
        return f64::NAN;
    }
    let mut neg_below = 0.0;
    let mut wins = 0.0;
    for (p, n) in pos.iter().zip(neg) {
        wins += p * (neg_below + 0.5 * n);
        neg_below += n;
    }
    wins / (np * nn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(kind: TaskKind) -> TaskSpec {
        TaskSpec {
            name: "t".into(),
            kind,
            weight: 1.0,
        }
    }

    #[test]
    fn classify_accuracy_and_baseline() {
        let mut e = EvalStats::new(&[task(TaskKind::Classify { classes: 3 })]);
        let out = [2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 2.0, 0.0, 9.0, 9.0, 9.0];
        let y = [0.0, 1.0, 0.0, f32::NAN];
        e.add(4, &out, &y);
        let m = &e.finish()[0].1;
        assert_eq!(m.count, 3);
        assert!((m.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.baseline_accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn auc_is_exact_for_separated_scores_and_half_for_ties() {
        let mut e = EvalStats::new(&[task(TaskKind::Binary)]);
        e.add(4, &[3.0, 2.0, -1.0, -2.0], &[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(e.finish()[0].1.auc, Some(1.0));
        let mut e = EvalStats::new(&[task(TaskKind::Binary)]);
        e.add(2, &[1.0, 1.0], &[1.0, 0.0]);
        assert_eq!(e.finish()[0].1.auc, Some(0.5));
    }

    #[test]
    fn regress_r2_of_mean_predictor_is_zero_and_perfect_is_one() {
        let mut e = EvalStats::new(&[task(TaskKind::Regress { dim: 1 })]);
        e.add(3, &[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]);
        let m = &e.finish()[0].1;
        assert!(m.r2.unwrap().abs() < 1e-12);
        let mut e = EvalStats::new(&[task(TaskKind::Regress { dim: 1 })]);
        e.add(3, &[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        assert!((e.finish()[0].1.r2.unwrap() - 1.0).abs() < 1e-12);
    }
}
