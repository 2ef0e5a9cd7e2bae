//! `[sync]`: how ranks share what they learn. Every step (the gradient
//! average g = (1/n) Σ g_i), or locally: each rank takes H steps alone,
//! then the ranks average their parameters and apply one outer update
//! (src/train/local.rs).

use serde::{Deserialize, Serialize};

use crate::comm::Wire;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// All-reduce the gradients every step (synchronous data parallel).
    EveryStep,
    /// H local steps per rank, then an all-reduce of the parameters and
    /// the outer update (DiLoCo-style).
    Local,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub mode: SyncMode,
    /// H: steps each rank takes alone between two outer updates.
    pub local_steps: u64,
    /// α: the outer learning rate (1: plain model averaging).
    pub outer_lr: f32,
    /// μ: outer momentum, Nesterov when > 0.
    pub outer_momentum: f32,
    /// Element type of the parameter all-reduce on the wire.
    pub outer_wire: Wire,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            mode: SyncMode::EveryStep,
            local_steps: 8,
            outer_lr: 1.0,
            outer_momentum: 0.0,
            outer_wire: Wire::F32,
        }
    }
}

impl SyncConfig {
    pub fn is_local(&self) -> bool {
        self.mode == SyncMode::Local
    }

    /// Checks the values (`--outer-wire bf16` with MPI or NCCL is
    /// refused by [`super::TrainConfig::validate`], as `--wire bf16` is).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.local_steps == 0 {
            return bad("--local-steps must be at least 1".into());
        }
        let a = self.outer_lr;
        if !(a.is_finite() && a > 0.0 && a <= 2.0) {
            return bad(format!("--outer-lr must be in (0, 2], got {a}"));
        }
        let m = self.outer_momentum;
        if !(m.is_finite() && (0.0..1.0).contains(&m)) {
            return bad(format!("--outer-momentum must be in [0, 1), got {m}"));
        }
        Ok(())
    }

    /// One line for the run's header.
    pub fn describe(&self) -> String {
        match self.mode {
            SyncMode::EveryStep => "sync: every step (gradient all-reduce)".into(),
            SyncMode::Local => format!(
                "sync: local, {} step(s) per outer update, outer lr {}, outer momentum {}{}, parameters on the wire as {}",
                self.local_steps,
                self.outer_lr,
                self.outer_momentum,
                if self.outer_momentum > 0.0 {
                    " (Nesterov)"
                } else {
                    ""
                },
                match self.outer_wire {
                    Wire::F32 => "f32",
                    Wire::Bf16 => "bf16",
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused() {
        SyncConfig::default().validate().unwrap();
        for (h, a, m) in [
            (0, 1.0, 0.0),
            (1, 0.0, 0.0),
            (1, f32::NAN, 0.0),
            (1, 1.0, 1.0),
        ] {
            let c = SyncConfig {
                local_steps: h,
                outer_lr: a,
                outer_momentum: m,
                ..SyncConfig::default()
            };
            assert!(c.validate().is_err(), "{h} {a} {m}");
        }
    }
}
