//! What can be checked before training, checked before training: that the
//! model fits in this host's memory (before anything is allocated), that
//! every output can be written, and that a checkpoint fits on its disk.
//! Each check returns the one message for the user; the caller agrees the
//! outcome across ranks.

use std::path::Path;

use crate::config::{OptimizerKind, TrainConfig};
use crate::error::{Error, Result};
use crate::spec::ModelSpec;

const GIB: f64 = (1u64 << 30) as f64;

/// Optimizer floats per parameter (SGD momentum; AdamW m and v).
fn state_per_param(opt: OptimizerKind) -> f64 {
    match opt {
        OptimizerKind::Sgd => 1.0,
        OptimizerKind::Adamw => 2.0,
    }
}

/// Refuses a model whose training state (parameters, gradients, optimizer
/// state, the workspace for `rows` rows per micro-batch) and the dataset's
/// own `data_bytes` (a CSV row index) would not fit in the memory this
/// process may use, shared by `ranks_here` ranks of this host. The model's
/// estimate is computed without allocating anything.
pub fn check_memory(
    cfg: &TrainConfig,
    spec: &ModelSpec,
    rows: usize,
    ranks_here: usize,
    data_bytes: u64,
) -> Result<()> {
    let model = spec.memory_estimate_bytes(rows, state_per_param(cfg.optim.optimizer), 4.0);
    let need = model + data_bytes as f64;
    let Some((avail, what)) = available_memory() else {
        return Ok(());
    };
    let share = avail / ranks_here.max(1) as f64;
    if need <= share {
        return Ok(());
    }
    if data_bytes as f64 > model {
        return Err(Error::config(format!(
            "the dataset's row index needs about {:.1} GiB per rank (CSV files with very many \
             rows), but {what} allows {:.1} GiB{}: store it as .npy files instead \
             (docs/data-format.md), which are mapped, not indexed",
            data_bytes as f64 / GIB,
            share / GIB,
            per_rank_note(ranks_here),
        )));
    }
    let widths: Vec<String> = spec.hidden.iter().map(|h| h.to_string()).collect();
    let outputs: f64 = spec.tasks.iter().map(|t| t.kind.out_dim() as f64).sum();
    Err(Error::config(format!(
        "the model needs about {:.1} GiB per rank ({:.3e} parameters with gradients and {} \
         state, and {} rows of activations), but {} allows {:.1} GiB{}: make it smaller with \
         --hidden (now {}), fewer task outputs (now {outputs}: classes in tasks.toml), or fewer \
         rows per rank (--global-batch, --accum-steps)",
        need / GIB,
        spec.param_count_f64(),
        match cfg.optim.optimizer {
            OptimizerKind::Sgd => "SGD momentum",
            OptimizerKind::Adamw => "AdamW",
        },
        rows,
        what,
        share / GIB,
        per_rank_note(ranks_here),
        widths.join(","),
    )))
}

fn per_rank_note(ranks_here: usize) -> String {
    if ranks_here > 1 {
        format!(" for each of the {ranks_here} ranks on this host")
    } else {
        String::new()
    }
}

/// The memory this process may still use, and what limits it: the least
/// of the host's available memory, its cgroup's limit and its own address
/// space and data limits. None when none of them can be read.
fn available_memory() -> Option<(f64, String)> {
    let mut best: Option<(f64, String)> = None;
    let mut consider = |bytes: Option<f64>, what: &str| {
        if let Some(b) = bytes {
            if best.as_ref().is_none_or(|(x, _)| b < *x) {
                best = Some((b.max(0.0), what.to_string()));
            }
        }
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    consider(
        meminfo
            .as_deref()
            .and_then(|m| kib_field(m, "MemAvailable:")),
        "this host's available memory",
    );
    let cgroup = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    if let (Some(max), Some(cur)) = (cgroup("memory.max"), cgroup("memory.current")) {
        if let (Ok(max), Ok(cur)) = (max.trim().parse::<f64>(), cur.trim().parse::<f64>()) {
            consider(Some(max - cur), "the memory limit of this job's cgroup");
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").ok();
    for (res, field, what) in [
        (
            libc::RLIMIT_AS,
            "VmSize:",
            "the address-space limit (ulimit -v)",
        ),
        (
            libc::RLIMIT_DATA,
            "VmData:",
            "the data-size limit (ulimit -d)",
        ),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(res, &mut lim) } == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
            let used = status
                .as_deref()
                .and_then(|s| kib_field(s, field))
                .unwrap_or(0.0);
            consider(Some(lim.rlim_cur as f64 - used), what);
        }
    }
    best
}

/// "NAME:   123 kB" → bytes.
fn kib_field(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: f64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Every output of the run can be created: `--save`, `--metrics-out`,
/// `--trace` (a file can be made in their directories) and the checkpoint
/// directory (it or its parent), which must also have room for one
/// checkpoint of a run on `ranks` ranks. Run by the rank that writes them
/// (rank 0).
pub fn check_outputs(cfg: &TrainConfig, spec: &ModelSpec, ranks: usize) -> Result<()> {
    let t = &cfg.train;
    for (flag, path) in [
        ("--save", &t.save),
        ("--metrics-out", &t.metrics_out),
        ("--trace", &t.trace),
    ] {
        if let Some(p) = path {
            can_create_in(parent_of(p)).map_err(|e| cannot_write(flag, p, &e))?;
        }
    }
    if let Some(dir) = &cfg.checkpoint.dir {
        let existing = if dir.is_dir() {
            dir.as_path()
        } else {
            parent_of(dir)
        };
        can_create_in(existing).map_err(|e| cannot_write("--checkpoint-dir", dir, &e))?;
        let need = checkpoint_need_bytes(cfg, spec, ranks);
        if let Some(free) = free_bytes(existing) {
            if free < need {
                return Err(Error::config(format!(
                    "--checkpoint-dir {}: a checkpoint needs about {:.1} MiB but its disk has \
                     {:.1} MiB free",
                    dir.display(),
                    need / (1 << 20) as f64,
                    free / (1 << 20) as f64
                )));
            }
        }
    }
    Ok(())
}

/// Bytes of one checkpoint: model + optimizer safetensors, a few KiB of
/// headers and state; `--sync local` adds local.safetensors, the outer
/// momentum and every rank's parameters and optimizer state.
fn checkpoint_need_bytes(cfg: &TrainConfig, spec: &ModelSpec, ranks: usize) -> f64 {
    let p = spec.param_count_f64();
    let copy = 4.0 * p * (1.0 + state_per_param(cfg.optim.optimizer));
    let local = match cfg.sync.is_local() {
        true => 4.0 * p + ranks as f64 * copy,
        false => 0.0,
    };
    copy + local + 65536.0
}

fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Creates (and removes) a file of a random name in `dir`: the only
/// reliable test of writability (permissions, read-only mounts, root).
fn can_create_in(dir: &Path) -> std::io::Result<()> {
    tempfile::Builder::new()
        .prefix(".ringtrain-probe-")
        .tempfile_in(dir)
        .map(drop)
}

fn cannot_write(flag: &str, p: &Path, e: &std::io::Error) -> Error {
    Error::config(format!(
        "{flag} {}: cannot write there ({e}); checked before training so no work is lost",
        p.display()
    ))
}

/// Bytes free for an unprivileged writer on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes the struct; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Activation;
    use crate::tasks::{TaskKind, TaskSpec};

    fn spec(hidden: Vec<usize>, classes: usize) -> ModelSpec {
        ModelSpec {
            input_dim: 10,
            hidden,
            activation: Activation::Relu,
            tasks: vec![TaskSpec {
                name: "a".into(),
                kind: TaskKind::Classify { classes },
                weight: 1.0,
            }],
        }
    }

    #[test]
    fn the_estimate_counts_what_the_model_allocates() {
        let s = spec(vec![8, 4], 3);
        // 10·8+8 + 8·4+4 + 4·3+3 = 139 parameters.
        assert_eq!(s.param_count_f64(), 139.0);
        let layout = crate::model::layout::ParamLayout::new(&s);
        assert_eq!(layout.total as f64, s.param_count_f64());
        // Parameters, gradients, one state float each; 2 rows of workspace:
        // x 10 + labels 1 + 2 × out 3 f32s, 2 × (8 + 4) + 2 × 8 activations.
        let want = 4.0 * 3.0 * 139.0 + 2.0 * (4.0 * 17.0 + 4.0 * 40.0);
        assert_eq!(s.memory_estimate_bytes(2, 1.0, 4.0), want);
    }

    #[test]
    fn absurd_models_are_refused_without_allocating() {
        let cfg = TrainConfig::default();
        let e = check_memory(&cfg, &spec(vec![100_000, 100_000], 3), 256, 1, 0).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("--hidden (now 100000,100000)"), "{e}");
        let e = check_memory(&cfg, &spec(vec![64], 10_000_000_000_000), 256, 2, 0).unwrap_err();
        assert!(e.to_string().contains("classes in tasks.toml"), "{e}");
        check_memory(&cfg, &spec(vec![64, 64], 3), 256, 2, 0).unwrap();
        // A CSV index larger than the machine: named as the dataset's.
        let e = check_memory(&cfg, &spec(vec![64, 64], 3), 256, 1, 1 << 60).unwrap_err();
        assert!(
            e.to_string().contains("the dataset's row index needs"),
            "{e}"
        );
    }

    #[test]
    fn a_local_sync_checkpoint_counts_every_ranks_state() {
        let mut cfg = TrainConfig::default();
        let sp = spec(vec![8], 3);
        let p = sp.param_count_f64();
        // AdamW: parameters and two moments, 12 bytes per parameter.
        assert_eq!(checkpoint_need_bytes(&cfg, &sp, 4), 12.0 * p + 65536.0);
        cfg.sync.mode = crate::config::SyncMode::Local;
        let want = 12.0 * p + 4.0 * p + 4.0 * 12.0 * p + 65536.0;
        assert_eq!(checkpoint_need_bytes(&cfg, &sp, 4), want);
    }

    #[test]
    fn outputs_in_missing_or_unwritable_places_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::default();
        cfg.train.save = Some(d.path().join("m.safetensors"));
        cfg.checkpoint.dir = Some(d.path().join("ckpt"));
        check_outputs(&cfg, &spec(vec![8], 3), 1).unwrap();
        cfg.train.metrics_out = Some(d.path().join("no/such/dir/m.jsonl"));
        let e = check_outputs(&cfg, &spec(vec![8], 3), 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--metrics-out") && e.contains("cannot write there"),
            "{e}"
        );
    }
}
