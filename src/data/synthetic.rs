//! The embedded default dataset: three tasks that all depend on one latent
//! vector, so a shared trunk helps every head.
//!
//! Each sample draws a latent `z ∈ R^8 ~ N(0, I)`; the input is
//! `x = tanh(A z) + 0.1 ε` (32 values), and the labels are
//! - `shape` (classify, 4 classes): `argmax(C z + 0.3 ε)`,
//! - `size` (regress, dim 2): `[sin(w1·z), (w2·z)²/2 − 0.5] + 0.1 ε`,
//! - `flag` (binary): `w3·z + 0.5 tanh(w4·z) + 0.3 ε > 0.3`,
//!
//! each missing (NaN) with probability 0.15, 0.25 and 0.10. `A`, `C` and the
//! `w`s come from the dataset seed; every sample is a pure function of
//! (seed, split, index), generated on demand (about 4–5 µs a row, mostly
//! `ln`/`sin`/`cos`/`tanh`). A run that draws each row more than once can
//! generate a split once, spread over its ranks, and install it
//! ([`Synthetic::generate`], [`Synthetic::install`]), or keep each row as
//! it is first generated and have a background thread generate the rest
//! ([`Synthetic::keep`], [`Synthetic::generate_rest`]): later fills copy
//! the same values from memory.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::sampler::{hash_words, splitmix64};
use super::{Dataset, Split, check_fill_args};
use crate::error::Result;
use crate::tasks::{TaskKind, TaskSpec};

const LATENT: usize = 8;
const INPUT: usize = 32;
const CLASSES: usize = 4;
/// Label columns: shape, size (2), flag.
const LABELS: usize = 4;
/// Floats of one generated row: its inputs, then its labels.
pub const ROW_FLOATS: usize = INPUT + LABELS;
const MISSING: [f64; 3] = [0.15, 0.25, 0.10];
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Tags separating the random streams of one sample (and the parameters).
#[derive(Clone, Copy)]
enum Stream {
    Latent = 1,
    InputNoise,
    ShapeNoise,
    SizeNoise,
    FlagNoise,
    Missing,
    Params,
}

/// Counter-based random numbers: value `k` of the stream `key`.
#[derive(Clone, Copy)]
struct Rng {
    key: u64,
}

impl Rng {
    fn new(words: &[u64]) -> Self {
        Rng {
            key: hash_words(words),
        }
    }

    /// Uniform in the open interval (0, 1): value `k` of a SplitMix64
    /// sequence started at `key`.
    fn uniform(self, k: u64) -> f64 {
        let bits = splitmix64(self.key.wrapping_add(k.wrapping_mul(GOLDEN))) >> 11;
        (bits as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal `k` by Box-Muller: normals `2m` and `2m+1` are the
    /// cosine and sine branches of uniform pair `m`.
    fn normal(self, k: u64) -> f64 {
        let m = k / 2;
        let (u1, u2) = (self.uniform(2 * m), self.uniform(2 * m + 1));
        let angle = std::f64::consts::TAU * u2;
        let branch = if k % 2 == 0 { angle.cos() } else { angle.sin() };
        (-2.0 * u1.ln()).sqrt() * branch
    }

    /// Normals 0..N, the same values as `normal(k)` for each k, each
    /// uniform pair drawn once for both of its branches (N even).
    fn normals<const N: usize>(self) -> [f64; N] {
        let mut out = [0.0; N];
        for (m, pair) in out.chunks_exact_mut(2).enumerate() {
            let m = m as u64;
            let (u1, u2) = (self.uniform(2 * m), self.uniform(2 * m + 1));
            let angle = std::f64::consts::TAU * u2;
            let r = (-2.0 * u1.ln()).sqrt();
            pair[0] = r * angle.cos();
            pair[1] = r * angle.sin();
        }
        out
    }
}

type Vec8 = [f64; LATENT];

fn dot(a: &Vec8, b: &Vec8) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The synthetic multi-task dataset.
#[derive(Clone, Debug)]
pub struct Synthetic {
    seed: u64,
    n_train: usize,
    n_val: usize,
    tasks: Vec<TaskSpec>,
    a: [Vec8; INPUT],
    c: [Vec8; CLASSES],
    /// Unit vectors, so each `w·z` is N(0, 1).
    w: [Vec8; 4],
    /// Each split's rows kept in memory (if they are), shared by clones.
    kept: Arc<[Kept; 2]>,
}

/// One generated row: its inputs, then its labels.
type Row = [f32; ROW_FLOATS];

/// The rows of one split kept in memory, once [`Synthetic::keep`] asked
/// for it: each is generated once, by whichever thread needs it first.
#[derive(Debug, Default)]
struct Kept {
    rows: OnceLock<Box<[KeptRow]>>,
    /// How many rows are set.
    filled: AtomicUsize,
}

impl Kept {
    /// The rows (`n` of them), allocated empty on the first call.
    fn start(&self, n: usize) -> &[KeptRow] {
        self.rows
            .get_or_init(|| (0..n).map(|_| KeptRow::default()).collect())
    }

    /// Sets row `i` unless another thread did or is doing so (the same
    /// bits either way).
    fn put(&self, cells: &[KeptRow], i: usize, row: &Row) {
        if cells[i].put(row) {
            self.filled.fetch_add(1, Ordering::Release);
        }
    }
}

/// One kept row, written once by the thread that claims it. Nothing ever
/// waits on it: a reader that finds it not ready generates the row itself,
/// and a second writer gives up. (With a lock, a step could wait for the
/// background thread, which runs at `SCHED_IDLE`: only when a core is
/// idle.)
struct KeptRow {
    /// EMPTY, WRITING (claimed) or READY.
    state: AtomicU8,
    row: UnsafeCell<Row>,
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

// SAFETY: `row` is written only by the one thread whose claim (EMPTY to
// WRITING) succeeded, before it publishes READY with Release; it is read
// only after READY was seen with Acquire, and never written again.
unsafe impl Sync for KeptRow {}

impl KeptRow {
    fn get(&self) -> Option<Row> {
        // SAFETY: READY (Acquire) means the write is complete and final.
        (self.state.load(Ordering::Acquire) == READY).then(|| unsafe { *self.row.get() })
    }

    /// Whether no thread has claimed the row yet.
    fn unclaimed(&self) -> bool {
        self.state.load(Ordering::Relaxed) == EMPTY
    }

    /// Whether this call stored `row` (false: another thread has it).
    fn put(&self, row: &Row) -> bool {
        let claim =
            self.state
                .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed);
        if claim.is_err() {
            return false;
        }
        // SAFETY: the claim makes this the only thread to touch `row`.
        unsafe { *self.row.get() = *row };
        self.state.store(READY, Ordering::Release);
        true
    }
}

impl Default for KeptRow {
    fn default() -> Self {
        KeptRow {
            state: AtomicU8::new(EMPTY),
            row: UnsafeCell::new([0.0; ROW_FLOATS]),
        }
    }
}

impl std::fmt::Debug for KeptRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeptRow({})", self.state.load(Ordering::Relaxed))
    }
}

impl Synthetic {
    pub fn new(seed: u64, n_train: usize, n_val: usize) -> Self {
        let param = |which: u64, scale: f64| -> Vec8 {
            let rng = Rng::new(&[seed, Stream::Params as u64, which]);
            std::array::from_fn(|j| rng.normal(j as u64) * scale)
        };
        let unit = |which: u64| -> Vec8 {
            let v = param(which, 1.0);
            let norm = dot(&v, &v).sqrt().max(1e-12);
            v.map(|x| x / norm)
        };
        let a = std::array::from_fn(|i| param(i as u64, 1.0 / (LATENT as f64).sqrt()));
        // Rows of equal norm keep the four classes roughly balanced.
        let scale = (LATENT as f64).sqrt();
        let c = std::array::from_fn(|i| unit(100 + i as u64).map(|v| v * scale));
        let w = std::array::from_fn(|i| unit(200 + i as u64));
        Synthetic {
            seed,
            n_train,
            n_val,
            tasks: default_tasks(),
            a,
            c,
            w,
            kept: Arc::new([Kept::default(), Kept::default()]),
        }
    }

    /// Rows `rows` of `split`, [`ROW_FLOATS`] floats each (inputs, then
    /// labels), as `fill` writes them.
    ///
    /// Each row depends on its index alone, so the rows are split over the
    /// cores this process may run on (one thread for a rank its launcher
    /// bound to one core); the bits do not depend on the split.
    pub fn generate(&self, split: Split, rows: Range<usize>) -> Vec<f32> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // At least this many rows per thread (a thread costs ~50 µs).
        const MIN_ROWS: usize = 4096;
        let threads = cores.min(rows.len().div_ceil(MIN_ROWS));
        self.generate_on(split, rows, threads)
    }

    /// [`Synthetic::generate`] on `threads` threads.
    fn generate_on(&self, split: Split, rows: Range<usize>, threads: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows.len() * ROW_FLOATS];
        let threads = threads.max(1);
        let per = rows.len().div_ceil(threads).max(1);
        let fill = |first: usize, part: &mut [f32]| {
            for (i, r) in (first..).zip(part.chunks_exact_mut(ROW_FLOATS)) {
                let (x, labels) = r.split_at_mut(INPUT);
                self.row(split, i as u64, x, labels);
            }
        };
        if threads == 1 {
            fill(rows.start, &mut out);
            return out;
        }
        std::thread::scope(|s| {
            for (t, part) in out.chunks_mut(per * ROW_FLOATS).enumerate() {
                let fill = &fill;
                s.spawn(move || fill(rows.start + t * per, part));
            }
        });
        out
    }

    /// Keeps `all` (every row of `split`, as [`Synthetic::generate`]
    /// gives them, as little-endian bytes: what ranks exchange) for later
    /// fills. Fails if the length is not the split's.
    pub fn install(&self, split: Split, all: &[u8]) -> Result<()> {
        let want = self.len(split) * ROW_FLOATS * 4;
        if all.len() != want {
            return Err(crate::error::Error::Consistency(format!(
                "synthetic {} rows: {} bytes given, {want} expected",
                split.name(),
                all.len()
            )));
        }
        let kept = &self.kept[split_slot(split)];
        let cells = kept.start(self.len(split));
        for (i, r) in all.chunks_exact(ROW_FLOATS * 4).enumerate() {
            let mut row = [0.0; ROW_FLOATS];
            for (v, b) in row.iter_mut().zip(r.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            kept.put(cells, i, &row);
        }
        Ok(())
    }

    /// From now on, each row of `split` is kept in memory once generated.
    pub fn keep(&self, split: Split) {
        self.kept[split_slot(split)].start(self.len(split));
    }

    /// Generates every row of `split` not kept yet, on this thread, and
    /// keeps it (implies [`Synthetic::keep`]).
    pub fn generate_rest(&self, split: Split) {
        let kept = &self.kept[split_slot(split)];
        let cells = kept.start(self.len(split));
        for (i, cell) in cells.iter().enumerate() {
            if cell.unclaimed() {
                kept.put(cells, i, &self.row_of(split, i as u64));
            }
        }
    }

    /// Whether every row of `split` is in memory.
    pub fn is_installed(&self, split: Split) -> bool {
        self.kept[split_slot(split)].filled.load(Ordering::Acquire) == self.len(split)
    }

    /// 65536 training and 8192 validation samples.
    pub fn default_sizes(seed: u64) -> Self {
        Synthetic::new(seed, 65536, 8192)
    }

    /// Sample `index` of `split` as one row.
    fn row_of(&self, split: Split, index: u64) -> Row {
        let mut r = [0.0; ROW_FLOATS];
        let (x, labels) = r.split_at_mut(INPUT);
        self.row(split, index, x, labels);
        r
    }

    /// Generates sample `index` of `split` into `x` (32) and `labels` (4).
    fn row(&self, split: Split, index: u64, x: &mut [f32], labels: &mut [f32]) {
        let split_id = match split {
            Split::Train => 1,
            Split::Val => 2,
        };
        let rng = |s: Stream| Rng::new(&[self.seed, split_id, index, s as u64]);
        let latent = rng(Stream::Latent);
        let z: Vec8 = latent.normals();

        let noise: [f64; INPUT] = rng(Stream::InputNoise).normals();
        for ((xi, ai), e) in x.iter_mut().zip(&self.a).zip(noise) {
            *xi = (dot(ai, &z).tanh() + 0.1 * e) as f32;
        }

        let noise: [f64; CLASSES] = rng(Stream::ShapeNoise).normals();
        let scores = self
            .c
            .iter()
            .zip(noise)
            .map(|(ck, e)| dot(ck, &z) + 0.3 * e);
        let class = argmax(scores);

        let [e0, e1]: [f64; 2] = rng(Stream::SizeNoise).normals();
        let size0 = dot(&self.w[0], &z).sin() + 0.1 * e0;
        let size1 = dot(&self.w[1], &z).powi(2) / 2.0 - 0.5 + 0.1 * e1;

        let noise = rng(Stream::FlagNoise);
        let score = dot(&self.w[2], &z) + 0.5 * dot(&self.w[3], &z).tanh() + 0.3 * noise.normal(0);
        let flag = if score > 0.3 { 1.0 } else { 0.0 };

        let missing = rng(Stream::Missing);
        let present = |t: usize| missing.uniform(t as u64) >= MISSING[t];
        let or_nan = |keep: bool, v: f64| if keep { v as f32 } else { f32::NAN };
        labels[0] = or_nan(present(0), class as f64);
        let size_present = present(1);
        labels[1] = or_nan(size_present, size0);
        labels[2] = or_nan(size_present, size1);
        labels[3] = or_nan(present(2), flag);
    }
}

fn split_slot(split: Split) -> usize {
    match split {
        Split::Train => 0,
        Split::Val => 1,
    }
}

fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

fn default_tasks() -> Vec<TaskSpec> {
    let spec = |name: &str, kind| TaskSpec {
        name: name.into(),
        kind,
        weight: 1.0,
    };
    vec![
        spec("shape", TaskKind::Classify { classes: CLASSES }),
        spec("size", TaskKind::Regress { dim: 2 }),
        spec("flag", TaskKind::Binary),
    ]
}

impl Dataset for Synthetic {
    fn describe(&self) -> String {
        format!(
            "synthetic(seed={}, train={}, val={})",
            self.seed, self.n_train, self.n_val
        )
    }

    fn input_dim(&self) -> usize {
        INPUT
    }

    fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }

    fn len(&self, split: Split) -> usize {
        match split {
            Split::Train => self.n_train,
            Split::Val => self.n_val,
        }
    }

    fn fill(&self, split: Split, indices: &[u64], x: &mut [f32], labels: &mut [f32]) -> Result<()> {
        check_fill_args(self, split, indices, x, labels)?;
        let rows = x
            .chunks_exact_mut(INPUT)
            .zip(labels.chunks_exact_mut(LABELS));
        let kept = &self.kept[split_slot(split)];
        match kept.rows.get() {
            Some(cells) => {
                for (&i, (xr, lr)) in indices.iter().zip(rows) {
                    let i = i as usize;
                    let row = match cells[i].get() {
                        Some(row) => row,
                        None => {
                            let row = self.row_of(split, i as u64);
                            kept.put(cells, i, &row);
                            row
                        }
                    };
                    xr.copy_from_slice(&row[..INPUT]);
                    lr.copy_from_slice(&row[INPUT..]);
                }
            }
            None => {
                for (&i, (xr, lr)) in indices.iter().zip(rows) {
                    self.row(split, i, xr, lr);
                }
            }
        }
        Ok(())
    }

    /// Generated data is valid by construction.
    fn validate_rows(&self, _split: Split, _lo: usize, _hi: usize) -> Result<()> {
        Ok(())
    }

    /// Installed rows are in memory (src/app/synthetic.rs installs them).
    fn in_memory(&self, split: Split) -> bool {
        self.is_installed(split)
    }

    fn as_synthetic(&self) -> Option<&Synthetic> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::columns;

    fn fill_all(ds: &Synthetic, split: Split, idx: &[u64]) -> (Vec<f32>, Vec<f32>) {
        let mut x = vec![0.0; idx.len() * INPUT];
        let mut l = vec![0.0; idx.len() * LABELS];
        ds.fill(split, idx, &mut x, &mut l).unwrap();
        (x, l)
    }

    fn le(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn paired_normals_are_the_single_normals_bit_for_bit() {
        for key in 0..200u64 {
            let rng = Rng::new(&[key, 3]);
            let v: [f64; INPUT] = rng.normals();
            for (k, x) in v.iter().enumerate() {
                assert_eq!(x.to_bits(), rng.normal(k as u64).to_bits());
            }
        }
    }

    #[test]
    fn layout_matches_tasks() {
        let ds = Synthetic::new(1, 10, 5);
        let cols = columns(&ds);
        assert_eq!(
            (cols.label_cols, cols.label_off.clone()),
            (LABELS, vec![0, 1, 3])
        );
        assert_eq!(ds.describe(), "synthetic(seed=1, train=10, val=5)");
        assert_eq!(Synthetic::default_sizes(3).len(Split::Train), 65536);
        assert_eq!(Synthetic::default_sizes(3).len(Split::Val), 8192);
    }

    #[test]
    fn deterministic_and_batch_equals_rows() {
        let ds = Synthetic::new(7, 1000, 100);
        let idx = [5u64, 999, 0, 5, 321];
        let (x, l) = fill_all(&ds, Split::Train, &idx);
        let again = Synthetic::new(7, 1000, 100);
        assert_eq!((bits(&x), bits(&l)), {
            let (x2, l2) = fill_all(&again, Split::Train, &idx);
            (bits(&x2), bits(&l2))
        });
        for (j, &i) in idx.iter().enumerate() {
            let (xr, lr) = fill_all(&ds, Split::Train, &[i]);
            assert_eq!(bits(&xr), bits(&x[j * INPUT..(j + 1) * INPUT]));
            assert_eq!(bits(&lr), bits(&l[j * LABELS..(j + 1) * LABELS]));
        }
        assert_eq!(bits(&x[..INPUT]), bits(&x[3 * INPUT..4 * INPUT]));
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn rows_generated_on_several_threads_are_the_same_bits() {
        let ds = Synthetic::new(5, 1000, 10);
        let one = ds.generate_on(Split::Train, 13..1000, 1);
        for threads in [2, 3, 7] {
            let many = ds.generate_on(Split::Train, 13..1000, threads);
            assert_eq!(bits(&one), bits(&many), "{threads} threads");
        }
        assert_eq!(ds.generate_on(Split::Val, 0..0, 4).len(), 0);
    }

    #[test]
    fn installed_rows_fill_the_same_bits() {
        let ds = Synthetic::new(3, 300, 40);
        let idx = [0u64, 299, 17, 17, 150];
        let vidx = [39u64, 0, 5];
        let (x, l) = fill_all(&ds, Split::Train, &idx);
        let (vx, vl) = fill_all(&ds, Split::Val, &vidx);
        // Generated in two parts, as two ranks would.
        let clone = ds.clone();
        let mut all = ds.generate(Split::Train, 0..120);
        all.extend(ds.generate(Split::Train, 120..300));
        let all = le(&all);
        assert!(ds.install(Split::Train, &all[..40]).is_err());
        ds.install(Split::Train, &all).unwrap();
        assert!(clone.is_installed(Split::Train), "clones share the rows");
        assert!(!ds.is_installed(Split::Val));
        let (x2, l2) = fill_all(&clone, Split::Train, &idx);
        assert_eq!((bits(&x), bits(&l)), (bits(&x2), bits(&l2)));
        ds.install(Split::Val, &le(&ds.generate(Split::Val, 0..40)))
            .unwrap();
        let (vx2, vl2) = fill_all(&ds, Split::Val, &vidx);
        assert_eq!((bits(&vx), bits(&vl)), (bits(&vx2), bits(&vl2)));
        assert!(
            ds.fill(Split::Train, &[300], &mut [0.0; INPUT], &mut [0.0; LABELS])
                .is_err()
        );
    }

    /// Rows kept as fills generate them, and the rest generated by
    /// another thread meanwhile, fill the bits generated on demand.
    #[test]
    fn kept_rows_fill_the_same_bits_whichever_thread_made_them() {
        let ds = Synthetic::new(11, 3000, 50);
        let fresh = Synthetic::new(11, 3000, 50);
        let idx: Vec<u64> = (0..3000u64).map(|i| (i * 7919) % 3000).collect();
        let want = fill_all(&fresh, Split::Train, &idx);
        ds.keep(Split::Train);
        assert!(!ds.is_installed(Split::Train));
        let (a, b) = (ds.clone(), ds.clone());
        let rest = std::thread::spawn(move || a.generate_rest(Split::Train));
        // Three fills race the thread for the same rows.
        let fills: Vec<_> = (0..3)
            .map(|_| {
                let (b, idx) = (b.clone(), idx.clone());
                std::thread::spawn(move || fill_all(&b, Split::Train, &idx))
            })
            .collect();
        for f in fills {
            let got = f.join().unwrap();
            assert_eq!((bits(&got.0), bits(&got.1)), (bits(&want.0), bits(&want.1)));
        }
        rest.join().unwrap();
        assert!(ds.is_installed(Split::Train), "every row counted once");
        assert!(!ds.is_installed(Split::Val));
        let got = fill_all(&ds, Split::Train, &idx);
        assert_eq!((bits(&got.0), bits(&got.1)), (bits(&want.0), bits(&want.1)));
        // Rows kept on first use alone: in memory once each was drawn.
        ds.keep(Split::Val);
        let all: Vec<u64> = (0..50).collect();
        fill_all(&ds, Split::Val, &all[..49]);
        assert!(!ds.is_installed(Split::Val));
        fill_all(&ds, Split::Val, &all);
        assert!(ds.is_installed(Split::Val));
    }

    #[test]
    fn seeds_and_splits_differ() {
        let idx: Vec<u64> = (0..50).collect();
        let (a, _) = fill_all(&Synthetic::new(1, 100, 100), Split::Train, &idx);
        let (b, _) = fill_all(&Synthetic::new(2, 100, 100), Split::Train, &idx);
        let (c, _) = fill_all(&Synthetic::new(1, 100, 100), Split::Val, &idx);
        assert_ne!(bits(&a), bits(&b));
        assert_ne!(bits(&a), bits(&c));
    }

    #[test]
    fn rejects_bad_fill_args() {
        let ds = Synthetic::new(1, 10, 5);
        let (mut x, mut l) = (vec![0.0; INPUT], vec![0.0; LABELS]);
        assert!(ds.fill(Split::Val, &[5], &mut x, &mut l).is_err());
        assert!(ds.fill(Split::Train, &[1, 2], &mut x, &mut l).is_err());
        assert!(ds.fill(Split::Train, &[9], &mut x, &mut l).is_ok());
    }

    #[test]
    fn label_statistics() {
        let n = 20000;
        let ds = Synthetic::new(11, n, 10);
        let idx: Vec<u64> = (0..n as u64).collect();
        let (x, l) = fill_all(&ds, Split::Train, &idx);
        let rows: Vec<&[f32]> = l.chunks_exact(LABELS).collect();
        let rate = |c: usize| rows.iter().filter(|r| r[c].is_nan()).count() as f64 / n as f64;
        for (c, want) in [(0, 0.15), (1, 0.25), (3, 0.10)] {
            assert!((rate(c) - want).abs() < 0.02, "column {c}: {}", rate(c));
        }
        // Both size columns are missing together.
        assert!(rows.iter().all(|r| r[1].is_nan() == r[2].is_nan()));
        let mut counts = [0usize; CLASSES];
        for r in rows.iter().filter(|r| !r[0].is_nan()) {
            counts[r[0] as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > n / 40), "classes {counts:?}");
        let flags: Vec<f32> = rows.iter().map(|r| r[3]).filter(|v| !v.is_nan()).collect();
        assert!(flags.iter().all(|&v| v == 0.0 || v == 1.0));
        let pos = flags.iter().sum::<f32>() as f64 / flags.len() as f64;
        assert!((0.15..0.85).contains(&pos), "positive rate {pos}");
        let sizes: Vec<f32> = rows
            .iter()
            .flat_map(|r| [r[1], r[2]])
            .filter(|v| !v.is_nan())
            .collect();
        assert!(sizes.iter().all(|v| v.abs() < 20.0));
        assert!(x.iter().all(|v| v.abs() < 2.0));
    }
}
