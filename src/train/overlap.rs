//! Whether this run overlaps the gradient all-reduce with backward
//! (`[comm] overlap = auto`), decided once per run, the same on every rank.
//!
//! The communication thread pays only when it has something to overlap
//! (more than one rank, more than one bucket: with a single bucket the
//! all-reduce starts when backward ends anyway) and a core to run on. On a
//! rank whose cores all compute (2 ranks bound to 2 cores, one thread
//! each), the thread competes with backward for the same core: measured at
//! `--hidden 64` on 2 ranks, overlap made the step 5.7× slower than
//! `--no-overlap`. So auto is on only when every rank has a core beyond its
//! GEMM threads (the same count as `[data] prefetch = auto`), or on GPU
//! ranks, whose host thread is free while the device computes.

use std::ops::Range;

use crate::backend::Memory;
use crate::comm::Communicator;
use crate::config::{Overlap, TrainConfig};
use crate::error::Result;
use crate::gradsync::plan_buckets;

/// What a run chose, and why (for the header and the JSON records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlapChoice {
    /// What was asked: auto, on or off.
    pub mode: Overlap,
    /// Whether a communication thread all-reduces during backward.
    pub on: bool,
    /// Why, in a few words.
    pub why: String,
}

impl OverlapChoice {
    /// "on (auto: 3 buckets, a core free for the communication thread)".
    pub fn describe(&self) -> String {
        format!("{} ({})", if self.on { "on" } else { "off" }, self.why)
    }

    /// `{"overlap": true, "overlap_mode": "auto", "overlap_why": "..."}`
    /// fields for JSON records.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "overlap": self.on,
            "overlap_mode": self.mode,
            "overlap_why": self.why,
        })
    }
}

/// The decision from the run's shape: `ranks`, the gradient `buckets`,
/// and whether every rank has a core free for the communication thread.
pub fn decide(mode: Overlap, ranks: usize, buckets: usize, spare_core: bool) -> OverlapChoice {
    let choice = |on: bool, why: String| OverlapChoice { mode, on, why };
    if ranks <= 1 {
        return choice(false, "1 rank: nothing to all-reduce".into());
    }
    match mode {
        Overlap::On => choice(true, "--overlap on".into()),
        Overlap::Off => choice(false, "--overlap off".into()),
        Overlap::Auto if buckets <= 1 => choice(
            false,
            "auto: one bucket, which starts when backward ends".into(),
        ),
        Overlap::Auto if !spare_core => choice(
            false,
            "auto: no core free for the communication thread".into(),
        ),
        Overlap::Auto => choice(
            true,
            format!("auto: {buckets} buckets, a core free for the communication thread"),
        ),
    }
}

/// Whether this rank has a core beyond its GEMM threads: see
/// [`super::prefetch::auto`] (`local_ranks`: the ranks on this host).
pub fn spare_core_here(gpu: bool, local_ranks: usize) -> bool {
    let threads = crate::backend::cpu_gemm::gemm_threads();
    let affinity = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let host = usize::try_from(online).unwrap_or(affinity).max(affinity);
    super::prefetch::auto(gpu, threads, local_ranks, affinity, host)
}

/// A hash of this host's name (equal on the ranks of one host).
fn host_id() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = match rc {
        0 => &buf[..buf.iter().position(|&b| b == 0).unwrap_or(buf.len())],
        _ => &[][..],
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// The run's choice, agreed over `comm` (a core is free only if it is on
/// every rank): gradient `layers` in buckets of `bucket_floats`, on a GPU
/// (`gpu`) or the CPU. Collective: every rank calls it once.
pub fn resolve(
    mode: Overlap,
    comm: &dyn Communicator,
    layers: &[Range<usize>],
    bucket_floats: usize,
    gpu: bool,
) -> Result<OverlapChoice> {
    let ranks = comm.size();
    let buckets = plan_buckets(layers, bucket_floats.max(1)).len();
    let spare = match (ranks, mode) {
        (1, _) | (_, Overlap::On | Overlap::Off) => false,
        _ => {
            let me = host_id();
            let hosts = comm.all_gather_u64(me)?;
            let local = hosts.iter().filter(|&&h| h == me).count();
            let spare = spare_core_here(gpu, local);
            comm.all_gather_u64(spare as u64)?.iter().all(|&s| s == 1)
        }
    };
    Ok(decide(mode, ranks, buckets, spare))
}

/// The trainer's choice for `cfg` (collective unless `--sync local`,
/// whose gradients are not all-reduced): gradients in `grads`, whose
/// layers are `layers`. A failed agreement (the communicator is broken,
/// which the first step reports) counts as no core free.
pub fn for_trainer(
    cfg: &TrainConfig,
    comm: &dyn Communicator,
    layers: &[Range<usize>],
    grads: Memory,
) -> OverlapChoice {
    let mode = cfg.comm.overlap;
    if cfg.sync.is_local() {
        return OverlapChoice {
            mode,
            on: false,
            why: "local steps: gradients are not all-reduced".into(),
        };
    }
    let bucket_floats = cfg.comm.bucket_kib * 1024 / 4;
    let gpu = matches!(grads, Memory::Cuda { .. });
    resolve(mode, comm, layers, bucket_floats, gpu).unwrap_or_else(|_| {
        let buckets = plan_buckets(layers, bucket_floats.max(1)).len();
        decide(mode, comm.size(), buckets, false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rank_never_overlaps() {
        for mode in [Overlap::Auto, Overlap::On, Overlap::Off] {
            let c = decide(mode, 1, 5, true);
            assert!(!c.on, "{mode:?}");
            assert_eq!(c.mode, mode);
        }
    }

    #[test]
    fn on_and_off_are_obeyed() {
        for (buckets, spare) in [(1, false), (1, true), (8, false), (8, true)] {
            assert!(decide(Overlap::On, 2, buckets, spare).on);
            assert!(!decide(Overlap::Off, 2, buckets, spare).on);
        }
    }

    #[test]
    fn auto_needs_buckets_to_overlap_and_a_free_core() {
        // The tiny model: one bucket.
        assert!(!decide(Overlap::Auto, 2, 1, true).on);
        // Every core computes (2 ranks bound to 2 cores).
        let c = decide(Overlap::Auto, 2, 17, false);
        assert!(!c.on);
        assert!(c.why.contains("no core free"), "{}", c.why);
        let c = decide(Overlap::Auto, 4, 17, true);
        assert!(c.on);
        assert_eq!(
            c.describe(),
            "on (auto: 17 buckets, a core free for the communication thread)"
        );
    }

    #[test]
    fn json_names_the_mode_and_the_choice() {
        let j = decide(Overlap::Auto, 2, 1, true).json();
        assert_eq!(j["overlap"], false);
        assert_eq!(j["overlap_mode"], "auto");
        assert!(j["overlap_why"].as_str().unwrap().contains("one bucket"));
    }
}
