//! Generating the synthetic dataset once per run, spread over the ranks,
//! where the run would otherwise generate its rows more than once: each
//! rank generates an equal part of a split's rows, an all-gather gives
//! every rank all of them, and later fills copy them (bit for bit the rows
//! generated on demand). The work moves from the steps (a 2-rank run on 2
//! cores would wait for it every step) to the start-up, and shrinks: a
//! default run draws each training row about 2.3 times.

use crate::comm::Communicator;
use crate::config::TrainConfig;
use crate::data::synthetic::{ROW_FLOATS, Synthetic};
use crate::data::{Dataset, Split};
use crate::error::Result;

/// A split above this many bytes is not kept in memory.
pub const MAX_BYTES: usize = 256 << 20;

/// Whether a run of `steps` draws more rows of `split` than it has
/// (`evals`: how many times the validation split is read in full).
pub fn pays(split: Split, rows: usize, steps: u64, global_batch: usize, evals: u64) -> bool {
    if rows == 0 || rows * ROW_FLOATS * 4 > MAX_BYTES {
        return false;
    }
    match split {
        Split::Train => steps.saturating_mul(global_batch as u64) > rows as u64,
        Split::Val => evals >= 2,
    }
}

/// How many full evaluations a run of `cfg` makes (at every
/// `eval_every` steps and at the end).
fn evaluations(cfg: &TrainConfig) -> u64 {
    let steps = cfg.train.steps;
    match cfg.train.eval_every {
        0 => 1,
        e => steps / e + u64::from(steps % e != 0),
    }
}

/// Materialises the splits of `data` (if synthetic) that `cfg`'s run
/// reads more than once. Collective: every rank calls it.
pub fn share(cfg: &TrainConfig, data: &dyn Dataset, comm: &dyn Communicator) -> Result<()> {
    let Some(syn) = data.as_synthetic() else {
        return Ok(());
    };
    for split in [Split::Train, Split::Val] {
        let rows = syn.len(split);
        let evals = evaluations(cfg);
        if pays(split, rows, cfg.train.steps, cfg.train.global_batch, evals) {
            install(syn, split, comm)?;
        }
    }
    Ok(())
}

/// Every row of `split`: this rank generates its part, all ranks gather.
fn install(syn: &Synthetic, split: Split, comm: &dyn Communicator) -> Result<()> {
    let rows = syn.len(split);
    let (n, r) = (comm.size(), comm.rank());
    let part = rows.div_ceil(n);
    let lo = (r * part).min(rows);
    let hi = (lo + part).min(rows);
    let mut mine = syn.generate(split, lo..hi);
    // Equal lengths for the all-gather; the padding is cut off below.
    mine.resize(part * ROW_FLOATS, 0.0);
    let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
    let all = comm.all_gather_bytes(&bytes)?;
    let mut floats: Vec<f32> = all
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    floats.truncate(rows * ROW_FLOATS);
    syn.install(split, floats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pays_only_when_rows_are_drawn_again() {
        // The default run: 600 steps x 256 from 65536 rows; 4 evaluations.
        assert!(pays(Split::Train, 65536, 600, 256, 4));
        assert!(pays(Split::Val, 8192, 600, 256, 4));
        // A short test run draws fewer rows than there are.
        assert!(!pays(Split::Train, 65536, 10, 48, 1));
        assert!(!pays(Split::Val, 8192, 10, 48, 1));
        assert!(!pays(Split::Train, 0, 600, 256, 4));
        // Too large to keep.
        assert!(!pays(Split::Train, 10_000_000, 1_000_000, 256, 4));
    }

    #[test]
    fn one_rank_installs_the_rows_generated_on_demand() {
        let syn = Synthetic::new(5, 100, 7);
        let comm = crate::comm::single::Single;
        install(&syn, Split::Val, &comm).unwrap();
        assert!(syn.is_installed(Split::Val));
        let fresh = Synthetic::new(5, 100, 7);
        let (mut a, mut la) = (vec![0.0; 7 * 32], vec![0.0; 7 * 4]);
        let (mut b, mut lb) = (a.clone(), la.clone());
        let idx: Vec<u64> = (0..7).rev().collect();
        syn.fill(Split::Val, &idx, &mut a, &mut la).unwrap();
        fresh.fill(Split::Val, &idx, &mut b, &mut lb).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!((bits(&a), bits(&la)), (bits(&b), bits(&lb)));
    }
}
