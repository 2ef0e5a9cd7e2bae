//! Training checkpoints: everything a run needs to continue bit for bit.
//!
//! ```text
//! DIR/step-00000300/
//!     model.safetensors   the parameters, named and shaped as `--save`
//!                         writes them (PyTorch loads this file as is)
//!     optim.safetensors   optimizer state per parameter, PyTorch's names:
//!                         exp_avg.<param>, exp_avg_sq.<param> (AdamW) or
//!                         momentum_buffer.<param> (SGD)
//!     state.json          steps done, updates applied, sampler position,
//!                         the config, the world size, the task weighting's
//!                         state (learned s_t/w_t, loss windows; absent
//!                         under static weights), and the size and
//!                         SHA-256 of both safetensors files
//!     COMPLETE            the SHA-256 of state.json; written last
//! ```
//!
//! Rank 0 writes everything into a hidden temporary directory, fsyncs each
//! file, renames the directory into place, fsyncs DIR, and only then writes
//! COMPLETE (atomically). A directory without COMPLETE is not a checkpoint,
//! so a crash at any point leaves the earlier ones as they were. Loading
//! verifies the whole chain of checksums.
//!
//! There is no other random state to save: the sampler draws the global
//! batch of step k from (seed, k) alone, so the seed and the step are the
//! data position. Under `--balance auto` the partition of the global batch
//! and the smoothed speeds it came from are kept too (`balance`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::local::{self, LOCAL_FILE, LocalState};
use crate::checkpoint::{params_from_bytes, params_to_bytes};
use crate::config::{OptimizerKind, TrainConfig};
use crate::data::partition::BalanceState;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::layout::ParamLayout;
use crate::spec::ModelSpec;

mod select;
pub use select::{Damaged, load_newest};

pub const COMPLETE: &str = "COMPLETE";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIM_FILE: &str = "optim.safetensors";
pub const STATE_FILE: &str = "state.json";
const FORMAT: &str = "ringtrain-checkpoint";
const VERSION: u32 = 1;

/// What a run is at a step boundary, on every rank alike.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Steps done: the next step to run is `step` (0-based).
    pub step: u64,
    /// Optimizer updates applied (skipped non-finite steps do not count).
    pub updates: u64,
    /// Non-finite steps skipped in a row just before `step`.
    pub skips_in_a_row: u64,
    pub params: Vec<f32>,
    /// Momentum (SGD), or first then second moments (AdamW).
    pub opt_state: Vec<f32>,
    /// `--sync local`: the outer momentum and every rank's own state
    /// (`params` is then the shared θ, `opt_state` rank 0's).
    pub local: Option<LocalState>,
    /// The task weighting's state (src/train/weighting.rs), if it has one.
    pub weighting: Option<Value>,
    /// `--balance auto`: the partition in use and the smoothed speeds.
    pub balance: Option<BalanceState>,
}

/// The contents of state.json.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    step: u64,
    updates: u64,
    skips_in_a_row: u64,
    /// Where the data stream stands: global batch `next_step` of `seed`.
    sampler: SamplerPosition,
    world_size: usize,
    config: TrainConfig,
    files: BTreeMap<String, FileSum>,
    /// Learned task weights, loss windows (`[tasks] weighting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_weighting: Option<Value>,
    /// Absent in checkpoints of runs without `--balance auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    balance: Option<BalanceState>,
}

#[derive(Serialize, Deserialize)]
struct SamplerPosition {
    seed: u64,
    next_step: u64,
    global_batch: usize,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct FileSum {
    bytes: u64,
    sha256: String,
}

/// A checkpoint loaded and verified.
pub struct Loaded {
    pub state: TrainState,
    pub config: TrainConfig,
    pub world_size: usize,
}

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

use crate::digest::sha256_hex;

fn file_sum(bytes: &[u8]) -> FileSum {
    FileSum {
        bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

/// Optimizer state tensors: (name, offset into the state buffer, shape).
fn optim_entries(layout: &ParamLayout, opt: OptimizerKind) -> Vec<(String, usize, Vec<usize>)> {
    let moments: &[&str] = match opt {
        OptimizerKind::Sgd => &["momentum_buffer"],
        OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
    };
    moments
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            layout.entries.iter().map(move |e| {
                (
                    format!("{m}.{}", e.name),
                    i * layout.total + e.offset,
                    e.shape.clone(),
                )
            })
        })
        .collect()
}

/// Length of the optimizer state buffer.
pub fn opt_state_len(layout: &ParamLayout, opt: OptimizerKind) -> usize {
    match opt {
        OptimizerKind::Sgd => layout.total,
        OptimizerKind::Adamw => 2 * layout.total,
    }
}

fn optim_to_bytes(layout: &ParamLayout, opt: OptimizerKind, state: &[f32]) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = state.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut views = vec![];
    for (name, off, shape) in optim_entries(layout, opt) {
        let len: usize = shape.iter().product();
        let v = TensorView::new(Dtype::F32, shape, &bytes[4 * off..4 * (off + len)])
            .map_err(|e| Error::Comm(format!("safetensors: {e}")))?;
        views.push((name, v));
    }
    safetensors::serialize(views, None).map_err(|e| Error::Comm(format!("safetensors: {e}")))
}

fn optim_from_bytes(
    bytes: &[u8],
    path: &Path,
    layout: &ParamLayout,
    opt: OptimizerKind,
) -> Result<Vec<f32>> {
    let bad = |m: String| Error::checkpoint(path, m);
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        bad(format!(
            "{OPTIM_FILE} is not a valid safetensors file ({e})"
        ))
    })?;
    let mut state = vec![0f32; opt_state_len(layout, opt)];
    for (name, off, shape) in optim_entries(layout, opt) {
        let t = st
            .tensor(&name)
            .map_err(|_| bad(format!("{OPTIM_FILE}: tensor {name} is missing")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
            return Err(bad(format!(
                "{OPTIM_FILE}: tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                t.dtype(),
                t.shape()
            )));
        }
        for (s, c) in state[off..].iter_mut().zip(t.data().chunks_exact(4)) {
            *s = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    Ok(state)
}

/// Creates, fills and fsyncs one file.
/// Writes `bytes` to `path` and syncs it, calling `progress` after every
/// chunk (a multi-GB write on a slow file system must not look like a hang).
fn write_synced(path: &Path, bytes: &[u8], progress: &dyn Fn()) -> Result<()> {
    use std::io::Write;
    const CHUNK: usize = 8 << 20;
    let io = |e| Error::io(path, e);
    let mut f = std::fs::File::create(path).map_err(io)?;
    for chunk in bytes.chunks(CHUNK) {
        f.write_all(chunk).map_err(io)?;
        progress();
    }
    f.sync_all().map_err(io)?;
    progress();
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// What [`save`] writes.
pub struct Snapshot<'a> {
    pub spec: &'a ModelSpec,
    pub layout: &'a ParamLayout,
    pub config: &'a TrainConfig,
    pub world_size: usize,
    pub state: &'a TrainState,
}

/// Writes the checkpoint of `snap.state.step` into `dir` (rank 0 only) and
/// returns its path. `progress` is called as the write moves on (for the
/// watchdog); `between_files` runs after the first file is on disk (the
/// test suite injects its faults there).
pub fn save(
    dir: &Path,
    snap: &Snapshot,
    progress: &dyn Fn(),
    between_files: impl Fn(),
) -> Result<PathBuf> {
    let st = snap.state;
    let opt = snap.config.optim.optimizer;
    let name = step_dir_name(st.step);
    let fin = dir.join(&name);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(p, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // A random name, removed again if anything below fails (a full disk
    // must not keep holding the space of a half-written checkpoint).
    let tmp_dir = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{name}-"))
        .tempdir_in(dir)
        .map_err(io(dir))?;
    let tmp = tmp_dir.path().to_path_buf();
    let mut written = 0usize;
    let full = |e: Error, written: usize| match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            Error::checkpoint(
                &fin,
                format!(
                    "the disk is full: {e}; this checkpoint needs about {:.1} MiB ({:.1} MiB \
                     were written and removed again)",
                    checkpoint_bytes(snap) as f64 / (1 << 20) as f64,
                    written as f64 / (1 << 20) as f64
                ),
            )
        }
        _ => e,
    };

    let model = params_to_bytes(snap.spec, snap.layout, &st.params, &[])?;
    progress();
    write_synced(&tmp.join(MODEL_FILE), &model, progress).map_err(|e| full(e, written))?;
    written += model.len();
    between_files();
    let optim = optim_to_bytes(snap.layout, opt, &st.opt_state)?;
    progress();
    write_synced(&tmp.join(OPTIM_FILE), &optim, progress).map_err(|e| full(e, written))?;
    written += optim.len();
    let mut files = BTreeMap::from([
        (MODEL_FILE.to_string(), file_sum(&model)),
        (OPTIM_FILE.to_string(), file_sum(&optim)),
    ]);
    if let Some(l) = &st.local {
        let bytes = local::to_bytes(l)?;
        write_synced(&tmp.join(LOCAL_FILE), &bytes, progress).map_err(|e| full(e, written))?;
        written += bytes.len();
        files.insert(LOCAL_FILE.to_string(), file_sum(&bytes));
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        step: st.step,
        updates: st.updates,
        skips_in_a_row: st.skips_in_a_row,
        sampler: SamplerPosition {
            seed: snap.config.train.seed,
            next_step: st.step,
            global_batch: snap.config.train.global_batch,
        },
        world_size: snap.world_size,
        config: snap.config.clone(),
        files,
        task_weighting: st.weighting.clone(),
        balance: st.balance.clone(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write_synced(&tmp.join(STATE_FILE), &json, progress).map_err(|e| full(e, written))?;
    sync_dir(&tmp);

    // An older directory of the same step (a run resumed from before it)
    // is replaced; without its COMPLETE marker first, so that no moment
    // shows a complete-looking mix.
    if fin.exists() {
        let _ = std::fs::remove_file(fin.join(COMPLETE));
        std::fs::remove_dir_all(&fin).map_err(io(&fin))?;
    }
    std::fs::rename(&tmp, &fin).map_err(io(&fin))?;
    // Renamed: nothing left for the guard to remove.
    let _ = tmp_dir.keep();
    sync_dir(dir);
    let marker = format!("sha256 {}\n", sha256_hex(&json));
    write_atomic(&fin.join(COMPLETE), marker.as_bytes())?;
    Ok(fin)
}

/// The complete checkpoints in `dir`, oldest first.
pub fn list_complete(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !dir.exists() {
        return Ok(vec![]);
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found = vec![];
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) else {
            continue;
        };
        if entry.path().join(COMPLETE).is_file() {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint in `dir`.
pub fn latest(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_complete(dir)?.pop().map(|(_, p)| p))
}

/// Deletes all but the newest `keep` complete checkpoints, and leftovers
/// of interrupted writes by other processes.
pub fn retain(dir: &Path, keep: usize) -> Result<()> {
    let all = list_complete(dir)?;
    let old = all.len().saturating_sub(keep);
    for (_, path) in &all[..old] {
        // The marker first: a half-deleted directory is never "complete".
        let _ = std::fs::remove_file(path.join(COMPLETE));
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    // The directory is locked by this run (`lock_dir`), and this run
    // writes one checkpoint at a time: every temporary directory here is
    // the leftover of a crashed write.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

/// Temporary checkpoint directories start with this.
const TMP_PREFIX: &str = ".tmp-";

/// Bytes of one checkpoint of `snap` (both safetensors files; the small
/// state files not counted).
fn checkpoint_bytes(snap: &Snapshot) -> usize {
    4 * (snap.state.params.len() + snap.state.opt_state.len())
}

/// The lock a run holds on its checkpoint directory while it runs (see
/// [`lock_dir`]); released when dropped or when the process ends.
pub struct DirLock {
    _file: std::fs::File,
}

/// Locks `dir` (created if missing) for this run: an advisory lock on
/// `dir/.lock`, which holds the owner's host and pid. A second run on the
/// same directory is refused, naming the owner. The kernel drops the lock
/// when its process ends, however it ends, so a lock file left by a dead
/// run is no obstacle (stale locks need no cleaning).
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut owner = String::new();
        let _ = file.read_to_string(&mut owner);
        let owner = owner.trim();
        return Err(Error::config(format!(
            "--checkpoint-dir {}: another run is using it ({}); give each run its own \
             directory, or wait for that run to end",
            dir.display(),
            if owner.is_empty() {
                "its lock is held"
            } else {
                owner
            }
        )));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let me = format!("host {}, pid {}\n", host.trim(), std::process::id());
    let stamped = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()));
    stamped.map_err(|e| Error::io(&path, e))?;
    Ok(DirLock { _file: file })
}

/// Reads and verifies the checkpoint at `path` for this model.
pub fn load(
    path: &Path,
    spec: &ModelSpec,
    layout: &ParamLayout,
    opt: OptimizerKind,
) -> Result<Loaded> {
    let (m, files) = read_verified(path)?;
    interpret(path, m, files, spec, layout, opt)
}

/// The files of the checkpoint at `path`, every checksum verified: an
/// error here means the checkpoint is damaged (or not one at all).
fn read_verified(path: &Path) -> Result<(Manifest, BTreeMap<&'static str, Vec<u8>>)> {
    let bad = |m: String| Error::checkpoint(path, m);
    if !path.is_dir() {
        return Err(bad("no such checkpoint directory".into()));
    }
    let marker = std::fs::read_to_string(path.join(COMPLETE)).map_err(|_| {
        bad(format!(
            "incomplete: no {COMPLETE} marker (its write was interrupted)"
        ))
    })?;
    let json = std::fs::read(path.join(STATE_FILE))
        .map_err(|e| bad(format!("cannot read {STATE_FILE} ({e})")))?;
    if marker.trim() != format!("sha256 {}", sha256_hex(&json)) {
        return Err(bad(format!(
            "{STATE_FILE} does not match the checksum in {COMPLETE} (corrupted)"
        )));
    }
    let m: Manifest =
        serde_json::from_slice(&json).map_err(|e| bad(format!("unreadable {STATE_FILE} ({e})")))?;
    if m.format != FORMAT || m.version != VERSION {
        return Err(bad(format!(
            "format {} version {}; this ringtrain reads {FORMAT} version {VERSION}",
            m.format, m.version
        )));
    }
    let mut files = BTreeMap::new();
    let has_local = m.files.contains_key(LOCAL_FILE);
    for name in [MODEL_FILE, OPTIM_FILE, LOCAL_FILE] {
        if name == LOCAL_FILE && !has_local {
            continue;
        }
        let bytes =
            std::fs::read(path.join(name)).map_err(|e| bad(format!("cannot read {name} ({e})")))?;
        let want = m
            .files
            .get(name)
            .ok_or_else(|| bad(format!("{STATE_FILE} lists no checksum for {name}")))?;
        if file_sum(&bytes) != *want {
            return Err(bad(format!(
                "{name} does not match its checksum in {STATE_FILE} ({} bytes, expected {}; corrupted or truncated)",
                bytes.len(),
                want.bytes
            )));
        }
        files.insert(name, bytes);
    }
    Ok((m, files))
}

/// A verified checkpoint's contents for this model and optimizer.
fn interpret(
    path: &Path,
    m: Manifest,
    files: BTreeMap<&'static str, Vec<u8>>,
    spec: &ModelSpec,
    layout: &ParamLayout,
    opt: OptimizerKind,
) -> Result<Loaded> {
    let bad = |m: String| Error::checkpoint(path, m);
    if m.config.optim.optimizer != opt {
        return Err(bad(format!(
            "holds {:?} optimizer state; this run uses {opt:?}",
            m.config.optim.optimizer
        )));
    }
    let params = params_from_bytes(&files[MODEL_FILE], &path.join(MODEL_FILE), spec, layout)?;
    let opt_state = optim_from_bytes(&files[OPTIM_FILE], path, layout, opt)?;
    let local = match files.get(LOCAL_FILE) {
        Some(b) => {
            let counters = [m.updates, m.skips_in_a_row];
            let l = local::from_bytes(b, layout.total, opt_state.len(), counters);
            Some(l.map_err(bad)?)
        }
        None => None,
    };
    Ok(Loaded {
        state: TrainState {
            step: m.step,
            updates: m.updates,
            skips_in_a_row: m.skips_in_a_row,
            params,
            opt_state,
            local,
            weighting: m.task_weighting,
            balance: m.balance,
        },
        config: m.config,
        world_size: m.world_size,
    })
}

/// The settings that define a run's trajectory; a resumed run must keep
/// them. Everything else (logging, outputs, communication, micro-batches,
/// prefetching, the number of ranks) may change between the two parts of
/// a run.
fn trajectory(c: &TrainConfig) -> Value {
    let d = TrainConfig::default();
    let mut t = c.clone();
    t.comm = d.comm.clone();
    t.checkpoint = d.checkpoint.clone();
    t.train.eval_every = d.train.eval_every;
    t.train.log_every = d.train.log_every;
    t.train.save = None;
    t.train.init = None;
    t.train.metrics_out = None;
    t.train.trace = None;
    t.train.accum_steps = d.train.accum_steps;
    t.train.on_nonfinite = d.train.on_nonfinite;
    t.train.max_skips = d.train.max_skips;
    t.train.balance = d.train.balance;
    t.train.balance_weights = d.train.balance_weights.clone();
    t.train.balance_every = d.train.balance_every;
    t.data.prefetch = d.data.prefetch;
    t.tasks.stats_every = d.tasks.stats_every;
    // Through text, so that f32 values read as written (0.002, not
    // 0.0020000000949949026).
    let text = serde_json::to_string(&t).expect("config serialises");
    serde_json::from_str(&text).expect("config parses back")
}

/// Refuses to resume a run under different settings: the error lists each
/// differing key with both values.
pub fn check_same_trajectory(saved: &TrainConfig, now: &TrainConfig) -> Result<(), String> {
    let mut diffs = vec![];
    diff_values("", &trajectory(saved), &trajectory(now), &mut diffs);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "was written by a run with other settings: {} (resume with the same settings, or start a new run in another --checkpoint-dir)",
            diffs.join("; ")
        ))
    }
}

fn diff_values(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let sub = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                diff_values(&sub, &x[k.as_str()], &y[k.as_str()], out);
            }
        }
        _ if a != b => out.push(format!("{at} = {a} in the checkpoint, {b} now")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::partition::Partition;
    use crate::spec::Activation;
    use crate::tasks::{TaskKind, TaskSpec};

    fn spec() -> ModelSpec {
        ModelSpec {
            input_dim: 3,
            hidden: vec![4],
            activation: Activation::Relu,
            tasks: vec![TaskSpec {
                name: "c".into(),
                kind: TaskKind::Classify { classes: 2 },
                weight: 1.0,
            }],
        }
    }

    fn state(layout: &ParamLayout, step: u64) -> TrainState {
        let n = layout.total;
        TrainState {
            step,
            updates: step - 1,
            skips_in_a_row: 1,
            params: (0..n).map(|i| i as f32 * 0.5 + step as f32).collect(),
            opt_state: (0..2 * n).map(|i| -(i as f32) * 0.25).collect(),
            local: None,
            weighting: Some(serde_json::json!({ "learned": [0.1, -2.5e-7] })),
            balance: Some(BalanceState {
                partition: Partition {
                    sizes: vec![12, 12, 6],
                },
                secs_per_sample: vec![1e-4, 1.1e-4, 2.3e-4],
            }),
        }
    }

    fn save_at(dir: &Path, spec: &ModelSpec, layout: &ParamLayout, step: u64) -> PathBuf {
        let config = TrainConfig::default();
        let st = state(layout, step);
        let snap = Snapshot {
            spec,
            layout,
            config: &config,
            world_size: 2,
            state: &st,
        };
        save(dir, &snap, &|| {}, || {}).unwrap()
    }

    /// A fresh empty directory, removed on drop.
    fn tempdir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("ringtrain-ckpt-{tag}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn save_then_load_round_trips_and_retains_the_newest() {
        let (spec, tmp) = (spec(), tempdir("roundtrip"));
        let dir = tmp.path();
        let layout = ParamLayout::new(&spec);
        for step in [10, 20, 30, 40] {
            save_at(dir, &spec, &layout, step);
        }
        retain(dir, 2).unwrap();
        let steps: Vec<u64> = list_complete(dir).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![30, 40]);
        let path = latest(dir).unwrap().unwrap();
        let got = load(&path, &spec, &layout, OptimizerKind::Adamw).unwrap();
        assert_eq!(got.state, state(&layout, 40));
        assert_eq!(got.world_size, 2);
        assert_eq!(got.config, TrainConfig::default());
    }

    #[test]
    fn damaged_checkpoints_are_refused() {
        let (spec, tmp) = (spec(), tempdir("damaged"));
        let dir = tmp.path();
        let layout = ParamLayout::new(&spec);
        let path = save_at(dir, &spec, &layout, 5);
        let load_err = || {
            load(&path, &spec, &layout, OptimizerKind::Adamw)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        // A flipped byte in the parameters.
        let model = path.join(MODEL_FILE);
        let good = std::fs::read(&model).unwrap();
        let mut bytes = good.clone();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&model, &bytes).unwrap();
        assert!(
            load_err().contains("does not match its checksum"),
            "{}",
            load_err()
        );
        // Truncated.
        std::fs::write(&model, &good[..good.len() / 2]).unwrap();
        assert!(load_err().contains("truncated"), "{}", load_err());
        std::fs::write(&model, &good).unwrap();
        assert!(load(&path, &spec, &layout, OptimizerKind::Adamw).is_ok());
        // An edited manifest.
        let st = path.join(STATE_FILE);
        let text = std::fs::read_to_string(&st).unwrap();
        std::fs::write(&st, text.replace("\"step\": 5", "\"step\": 6")).unwrap();
        assert!(
            load_err().contains("does not match the checksum"),
            "{}",
            load_err()
        );
        // No marker: an interrupted write, invisible to `latest`.
        std::fs::remove_file(path.join(COMPLETE)).unwrap();
        assert!(load_err().contains("incomplete"), "{}", load_err());
        assert_eq!(latest(dir).unwrap(), None);
    }

    #[test]
    fn optimizer_state_uses_pytorch_names() {
        let spec = spec();
        let layout = ParamLayout::new(&spec);
        let names: Vec<String> = optim_entries(&layout, OptimizerKind::Adamw)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert!(names.contains(&"exp_avg.trunk.0.weight".to_string()));
        assert!(names.contains(&"exp_avg_sq.heads.c.bias".to_string()));
        let sgd = optim_entries(&layout, OptimizerKind::Sgd);
        assert_eq!(sgd[0].0, "momentum_buffer.trunk.0.weight");
    }

    #[test]
    fn a_different_trajectory_is_named_key_by_key() {
        let a = TrainConfig::default();
        let mut b = a.clone();
        b.train.log_every = 7;
        b.comm.bucket_kib = 64;
        b.train.metrics_out = Some("m.jsonl".into());
        assert!(check_same_trajectory(&a, &b).is_ok());
        b.optim.lr = 0.5;
        b.train.seed = 9;
        let e = check_same_trajectory(&a, &b).unwrap_err();
        assert!(e.contains("optim.lr = 0.002"), "{e}");
        assert!(e.contains("train.seed = 0 in the checkpoint, 9 now"), "{e}");
    }

    #[test]
    fn a_locked_directory_is_refused_and_names_its_owner() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ckpt");
        let first = lock_dir(&dir).unwrap();
        // flock locks belong to the open file: a second open conflicts
        // even within this process, as a second run's would.
        let e = lock_dir(&dir)
            .err()
            .expect("second lock refused")
            .to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(
            e.contains("another run is using it") && e.contains(&pid),
            "{e}"
        );
        drop(first);
        // Released with its holder: the lock file left behind is no obstacle.
        let _again = lock_dir(&dir).unwrap();
    }

    #[test]
    fn temporary_directories_are_random_and_leftovers_go() {
        let (spec, d) = (spec(), tempfile::tempdir().unwrap());
        let layout = ParamLayout::new(&spec);
        let leftover = d.path().join(".tmp-step-00000005-crashed");
        std::fs::create_dir_all(&leftover).unwrap();
        std::fs::write(leftover.join(MODEL_FILE), b"half").unwrap();
        save_at(d.path(), &spec, &layout, 10);
        retain(d.path(), 3).unwrap();
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["step-00000010".to_string()], "{names:?}");
    }
}
