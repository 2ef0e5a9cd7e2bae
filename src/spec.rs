//! What the model is: input width, shared trunk, one head per task.

use serde::{Deserialize, Serialize};

use crate::tasks::{TaskColumns, TaskSpec};

/// Nonlinearity after each trunk layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// GELU, tanh approximation (PyTorch `GELU(approximate="tanh")`).
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
