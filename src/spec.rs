//! What the model is: input width, shared trunk, one head per task.

use serde::{Deserialize, Serialize};

use crate::tasks::{TaskColumns, TaskSpec};

/// Nonlinearity after each trunk layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// GELU, tanh approximation (PyTorch `GELU(approximate="tanh")`);
    /// `gelu_tanh` in files (spec metadata, config), `gelu` also read.
    #[serde(rename = "gelu_tanh", alias = "gelu")]
    #[value(alias = "gelu_tanh")]
    Gelu,
    Tanh,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::Tanh => "tanh",
        }
    }
    /// The exact function, as files name it (`gelu_tanh`: not erf GELU).
    pub fn exact_name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu_tanh",
            a => a.name(),
        }
    }
    /// The matching PyTorch module, for the spec stored beside saved weights.
    pub fn torch_module(self) -> &'static str {
        match self {
            Activation::Relu => "nn.ReLU()",
            Activation::Gelu => "nn.GELU(approximate='tanh')",
            Activation::Tanh => "nn.Tanh()",
        }
    }
}

/// The multi-task model: `trunk = [Linear, act] * len(hidden)`, then one
/// `Linear` head per task reading the last trunk output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub input_dim: usize,
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub tasks: Vec<TaskSpec>,
}

impl ModelSpec {
    /// Width of the representation the heads read.
    pub fn trunk_out(&self) -> usize {
        self.hidden.last().copied().unwrap_or(self.input_dim)
    }
    pub fn columns(&self) -> TaskColumns {
        TaskColumns::new(&self.tasks)
    }
    /// (in, out) of each trunk layer.
    pub fn trunk_dims(&self) -> Vec<(usize, usize)> {
        let mut dims = vec![];
        let mut d = self.input_dim;
        for &h in &self.hidden {
            dims.push((d, h));
            d = h;
        }
        dims
    }
    /// Parameters of the model, as f64 so that absurd sizes (from a flag
    /// or a tasks.toml) are counted without overflow before anything is
    /// allocated.
    pub fn param_count_f64(&self) -> f64 {
        let linear = |i: usize, o: usize| i as f64 * o as f64 + o as f64;
        let trunk: f64 = self
            .trunk_dims()
            .into_iter()
            .map(|(i, o)| linear(i, o))
            .sum();
        let out: f64 = self.tasks.iter().map(|t| t.kind.out_dim() as f64).sum();
        trunk + linear(self.trunk_out(), 1) * out
    }

    /// Bytes of one rank's training state for `rows` rows per micro-batch:
    /// parameters and gradients, `state_per_param` optimizer floats per
    /// parameter, and the workspace (inputs, labels, outputs and their
    /// gradients in f32; pre-activations, activations and their gradients
    /// in `act_bytes` per element), as `Model` allocates them.
    pub fn memory_estimate_bytes(&self, rows: usize, state_per_param: f64, act_bytes: f64) -> f64 {
        let p = self.param_count_f64();
        let hidden: f64 = self.hidden.iter().map(|&h| h as f64).sum();
        let widest = self.hidden.iter().copied().max().unwrap_or(0) as f64;
        let out: f64 = self.tasks.iter().map(|t| t.kind.out_dim() as f64).sum();
        let labels: f64 = self.tasks.iter().map(|t| t.kind.label_dim() as f64).sum();
        let f32s = self.input_dim as f64 + labels + 2.0 * out;
        let workspace = rows as f64 * (4.0 * f32s + act_bytes * (2.0 * hidden + 2.0 * widest));
        4.0 * (2.0 + state_per_param) * p + workspace
    }

    /// Floating-point operations of one training step per sample
    /// (GEMMs only: 2·in·out forward, 4·in·out backward, 2·in·out for the
    /// first layer's backward, which needs no input gradient).
    pub fn train_flops_per_sample(&self) -> f64 {
        let mut f = 0.0;
        let mut first = true;
        for (i, o) in self.trunk_dims() {
            let io = (i * o) as f64;
            f += 2.0 * io + if first { 2.0 * io } else { 4.0 * io };
            first = false;
        }
        let io = (self.trunk_out() * self.columns().out_cols) as f64;
        f + 2.0 * io + if self.hidden.is_empty() { 2.0 } else { 4.0 } * io
    }
}
