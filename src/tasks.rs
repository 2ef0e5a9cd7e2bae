//! Task kinds: what a head predicts, how its loss and metrics are defined.
//!
//! Every task's labels travel as f32 columns of one label matrix, with NaN for
//! a missing label: `classify` and `binary` take one column (class index, or
//! 0/1), `regress` takes `dim` columns. A task's loss is the mean over the
//! labels present in the global batch (per element for `regress`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TaskKind {
    /// K-way softmax cross-entropy; metric accuracy.
    Classify { classes: usize },
    /// D outputs, mean squared error; metrics RMSE and R².
    Regress { dim: usize },
    /// One logit, sigmoid binary cross-entropy; metrics accuracy and AUC.
    Binary,
}

impl TaskKind {
    /// Width of the head's output (logits or predictions).
    pub fn out_dim(&self) -> usize {
        match *self {
            TaskKind::Classify { classes } => classes,
            TaskKind::Regress { dim } => dim,
            TaskKind::Binary => 1,
        }
    }
    /// Number of f32 label columns this task occupies in the label matrix.
    pub fn label_dim(&self) -> usize {
        match *self {
            TaskKind::Classify { .. } | TaskKind::Binary => 1,
            TaskKind::Regress { dim } => dim,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Classify { .. } => "classify",
            TaskKind::Regress { .. } => "regress",
            TaskKind::Binary => "binary",
        }
    }
}

/// One task of the multi-task model: its name (used for files, head
/// parameter names and metric keys), its kind and its loss weight λ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: TaskKind,
    #[serde(default = "one")]
    pub weight: f32,
}

fn one() -> f32 {
    1.0
}

/// Column offsets of each task in the label matrix and in the head output.
#[derive(Clone, Debug)]
pub struct TaskColumns {
    pub label_off: Vec<usize>,
    pub out_off: Vec<usize>,
    pub label_cols: usize,
    pub out_cols: usize,
}

impl TaskColumns {
    pub fn new(tasks: &[TaskSpec]) -> Self {
        let (mut l, mut o) = (0, 0);
        let (mut label_off, mut out_off) = (vec![], vec![]);
        for t in tasks {
            label_off.push(l);
            out_off.push(o);
            l += t.kind.label_dim();
            o += t.kind.out_dim();
        }
        TaskColumns {
            label_off,
            out_off,
            label_cols: l,
            out_cols: o,
        }
    }
}

/// Checks that task names are usable as file and tensor names and unique.
pub fn validate_tasks(tasks: &[TaskSpec]) -> Result<(), String> {
    if tasks.is_empty() {
        return Err("at least one task is required".into());
    }
    for (i, t) in tasks.iter().enumerate() {
        if t.name.is_empty()
            || !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "task name {:?}: use letters, digits, '_' and '-' only",
                t.name
            ));
        }
        if tasks[..i].iter().any(|u| u.name == t.name) {
            return Err(format!("task name {:?} appears twice", t.name));
        }
        match t.kind {
            TaskKind::Classify { classes } if classes < 2 => {
                return Err(format!("task {}: classify needs classes >= 2", t.name));
            }
            TaskKind::Regress { dim } if dim < 1 => {
                return Err(format!("task {}: regress needs dim >= 1", t.name));
            }
            _ => {}
        }
        if !(t.weight.is_finite() && t.weight >= 0.0) {
            return Err(format!(
                "task {}: weight must be finite and >= 0, got {}",
                t.name, t.weight
            ));
        }
    }
    Ok(())
}
