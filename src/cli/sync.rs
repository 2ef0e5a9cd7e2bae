//! The `[sync]` flags (`train` and `bench train`).

use clap::Args;

use crate::comm::Wire;
use crate::config::{SyncMode, TrainConfig};

#[derive(Args, Debug, Default)]
pub struct SyncArgs {
    /// How ranks share what they learn: every-step (average the gradients
    /// each step) or local (each rank takes --local-steps steps alone,
    /// then the parameters are averaged and the outer update applied).
    #[arg(long, value_enum)]
    pub sync: Option<SyncMode>,
    /// H: steps per rank between two outer updates (--sync local).
    #[arg(long, value_name = "H")]
    pub local_steps: Option<u64>,
    /// α: outer learning rate (1: plain model averaging).
    #[arg(long, value_name = "ALPHA")]
    pub outer_lr: Option<f32>,
    /// μ: outer momentum, Nesterov when > 0.
    #[arg(long, value_name = "MU")]
    pub outer_momentum: Option<f32>,
    /// Element type of the parameter all-reduce: f32, or bf16 (ring).
    #[arg(long, value_enum)]
    pub outer_wire: Option<Wire>,
}

impl SyncArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        let s = &mut c.sync;
        if let Some(m) = self.sync {
            s.mode = m;
        }
        if let Some(h) = self.local_steps {
            s.local_steps = h;
        }
        if let Some(a) = self.outer_lr {
            s.outer_lr = a;
        }
        if let Some(m) = self.outer_momentum {
            s.outer_momentum = m;
        }
        if let Some(w) = self.outer_wire {
            s.outer_wire = w;
        }
    }
}
