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

/// How [`share`] materialised the splits a run reads more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shared {
    /// Not synthetic, or no split is read more than once.
    Nothing,
    /// Generated before the first step, spread over the ranks.
    UpFront,
    /// Being generated on a thread that runs only on a core nothing else
    /// wants; until a split is in memory its rows are generated on demand
    /// (the same bits).
    Background,
}

/// A step's compute per row (forward and backward: about 6 flops a
/// parameter, over the GEMM threads) from which a thread reading ahead
/// keeps up with generating the rows on demand: a row costs about 3 µs,
/// and 300,000 flops about 4.5 µs of a step on the 2-core development VM.
/// Below it (a tiny model: `train --hidden 64 --global-batch 32`) the
/// hand-off to that thread each step costs more than generating every row
/// up front on all cores.
const BACKGROUND_MIN_FLOPS_PER_ROW: usize = 300_000;

/// Whether generating rows on a spare core during the steps beats doing
/// it up front, for a CPU rank with `params` parameters and
/// `gemm_threads` threads (a GPU step is far faster than the host
/// generates rows: never).
pub fn background_pays(gpu: bool, params: usize, gemm_threads: usize) -> bool {
    !gpu && 6 * params / gemm_threads.max(1) >= BACKGROUND_MIN_FLOPS_PER_ROW
}

/// Materialises the splits of `data` (if synthetic) that `cfg`'s run
/// reads more than once: in the background where every rank has a core
/// to spare and [`background_pays`] (`spare_core`: both, on this rank),
/// else up front, spread over the ranks. Collective: every rank calls it.
pub fn share(
    cfg: &TrainConfig,
    data: &dyn Dataset,
    comm: &dyn Communicator,
    spare_core: bool,
) -> Result<Shared> {
    let Some(syn) = data.as_synthetic() else {
        return Ok(Shared::Nothing);
    };
    let evals = evaluations(cfg);
    let splits: Vec<Split> = [Split::Train, Split::Val]
        .into_iter()
        .filter(|&s| {
            pays(
                s,
                syn.len(s),
                cfg.train.steps,
                cfg.train.global_batch,
                evals,
            )
        })
        .collect();
    if splits.is_empty() {
        return Ok(Shared::Nothing);
    }
    let spare_everywhere = comm
        .all_gather_u64(u64::from(spare_core))?
        .iter()
        .all(|&s| s == 1);
    if spare_everywhere {
        if generate_in_background(syn.clone(), splits.clone()) {
            return Ok(Shared::Background);
        }
        // No thread: this rank generates every row itself (not a
        // collective: the other ranks may have started theirs).
        for split in splits {
            syn.generate_rest(split);
        }
        return Ok(Shared::UpFront);
    }
    for split in splits {
        match split {
            Split::Train => install(syn, split, comm)?,
            // Each rank evaluates its own slice of the validation rows:
            // kept as the first evaluation generates them, none gathered.
            Split::Val => syn.keep(split),
        }
    }
    Ok(Shared::UpFront)
}

/// Keeps the rows of `splits` once generated, and generates the rest (the
/// training rows first: the steps read them from the start) on a new
/// thread of the lowest priority, so that it never takes a core from the
/// step. False if no thread could be started.
fn generate_in_background(syn: Synthetic, splits: Vec<Split>) -> bool {
    // Rows the steps generate meanwhile are kept too: no row is made twice.
    for &split in &splits {
        syn.keep(split);
    }
    std::thread::Builder::new()
        .name("synthetic-rows".into())
        .spawn(move || {
            run_only_on_idle_cores();
            for split in splits {
                syn.generate_rest(split);
            }
        })
        .is_ok()
}

/// SCHED_IDLE for the calling thread: it runs only when no other thread
/// wants the core (else the lowest nice value, if that is refused).
fn run_only_on_idle_cores() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread; `param` outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        // SAFETY: no pointers; on Linux `who` 0 is the calling thread.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    }
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
    let all = comm.all_gather_bytes(&le_bytes(&mine))?;
    syn.install(split, &all[..rows * ROW_FLOATS * 4])
}

/// `values` as little-endian bytes (on a little-endian host, the same
/// memory: the split's megabytes are not copied).
fn le_bytes(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: the bytes of initialised f32s are initialised u8s, with
        // alignment 1, covering exactly the slice's memory.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        std::borrow::Cow::Borrowed(bytes)
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
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
    fn background_pays_only_for_a_step_slower_than_its_rows() {
        // The default model (76,039 parameters), one GEMM thread: yes.
        assert!(background_pays(false, 76_039, 1));
        // Its step on two threads, a tiny model, or a GPU: no.
        assert!(!background_pays(false, 76_039, 2));
        assert!(!background_pays(false, 7_000, 1));
        assert!(!background_pays(true, 10_000_000, 1));
        assert!(!background_pays(false, 0, 0));
    }

    /// With a spare core, `share` returns at once and a thread at the
    /// lowest priority brings every split the run rereads into memory.
    #[test]
    fn a_spare_core_generates_in_the_background() {
        let mut cfg = TrainConfig::default();
        cfg.train.steps = 100;
        cfg.train.global_batch = 64;
        cfg.train.eval_every = 10;
        let syn = Synthetic::new(5, 1000, 100);
        let comm = crate::comm::single::Single;
        assert_eq!(share(&cfg, &syn, &comm, true).unwrap(), Shared::Background);
        let start = std::time::Instant::now();
        while !(syn.is_installed(Split::Train) && syn.is_installed(Split::Val)) {
            // A bound for a hang, not for speed (about 3 ms of work).
            assert!(start.elapsed().as_secs() < 120, "rows never installed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // No spare core: up front; a short run: nothing.
        let syn = Synthetic::new(5, 1000, 100);
        assert_eq!(share(&cfg, &syn, &comm, false).unwrap(), Shared::UpFront);
        assert!(syn.is_installed(Split::Train));
        // Validation rows: kept as the first evaluation reads them.
        assert!(!syn.is_installed(Split::Val));
        let idx: Vec<u64> = (0..100).collect();
        let (mut x, mut l) = (vec![0.0; 100 * 32], vec![0.0; 100 * 4]);
        syn.fill(Split::Val, &idx, &mut x, &mut l).unwrap();
        assert!(syn.is_installed(Split::Val));
        cfg.train.steps = 2;
        cfg.train.eval_every = 0;
        let syn = Synthetic::new(5, 1000, 100);
        assert_eq!(share(&cfg, &syn, &comm, true).unwrap(), Shared::Nothing);
        assert!(!syn.is_installed(Split::Train));
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
