//! `[train] balance`: how the global batch is split over the ranks (the
//! plan itself is `train::balance`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `even`: sizes differ by at most one (the default). `static`: in
/// proportion to `balance_weights`, one per rank. `auto`: in proportion
/// to the speeds the ranks measure, re-planned every `balance_every` steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BalanceMode {
    #[default]
    Even,
    Static,
    Auto,
}

/// The checks that do not depend on the number of ranks (that one is
/// `train::balance::check`).
pub fn validate(mode: BalanceMode, weights: &[f64], every: u64) -> Result<()> {
    let bad = |m: String| Err(Error::Config(m));
    match mode {
        BalanceMode::Static if weights.is_empty() => {
            return bad("--balance static needs --balance-weights (one weight per rank)".into());
        }
        BalanceMode::Even | BalanceMode::Auto if !weights.is_empty() => {
            return bad("--balance-weights is for --balance static".into());
        }
        _ => {}
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
        return bad(format!(
            "--balance-weights: every weight must be a positive number, got {w}"
        ));
    }
    if every == 0 {
        return bad("--balance-every must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_inconsistent_settings() {
        assert!(validate(BalanceMode::Even, &[], 50).is_ok());
        assert!(validate(BalanceMode::Static, &[1.0, 2.0], 50).is_ok());
        assert!(validate(BalanceMode::Auto, &[], 1).is_ok());
        assert!(validate(BalanceMode::Static, &[], 50).is_err());
        assert!(validate(BalanceMode::Auto, &[1.0], 50).is_err());
        assert!(validate(BalanceMode::Static, &[1.0, 0.0], 50).is_err());
        assert!(validate(BalanceMode::Static, &[1.0, f64::NAN], 50).is_err());
        assert!(validate(BalanceMode::Auto, &[], 0).is_err());
    }
}
