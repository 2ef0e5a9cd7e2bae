//! The dataset directory format:
//!
//! ```text
//! DIR/tasks.toml        the tasks, in order:
//!                         [[task]]
//!                         name = "shape"
//!                         kind = "classify"   # classify | regress | binary
//!                         classes = 4         # classify only
//!                         # dim = 2           # regress only
//!                         weight = 1.0        # optional default loss weight
//! DIR/train/x.npy       inputs [N, d], any numeric dtype (read as f32)
//! DIR/train/<task>.npy  classify: integer [N] (or [N, 1]), -1 = missing
//!                       binary: integer 0/1 with -1 = missing,
//!                               or float 0/1 with NaN = missing
//!                       regress: float [N, dim] (or [N] if dim == 1),
//!                               NaN = missing
//! DIR/val/...           the same files for the validation split
//! ```
//!
//! Arrays are memory-mapped, so a rank reads only the rows it is given.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::labels::{BadLabel, check_label, mark_missing};
use super::npy::{self, NpyArray};
use super::{Dataset, Split, check_fill_args};
use crate::error::{Error, Result};
use crate::tasks::{TaskColumns, TaskKind, TaskSpec, validate_tasks};

const TASKS_FILE: &str = "tasks.toml";
const INPUTS_FILE: &str = "x.npy";
/// Rows generated per `fill` call when writing a dataset.
const WRITE_CHUNK: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksFile {
    task: Vec<TaskSpec>,
}

/// The arrays of one split.
#[derive(Debug)]
struct SplitFiles {
    n: usize,
    x: NpyArray,
    /// One array per task, in task order.
    labels: Vec<NpyArray>,
}

/// A dataset stored in the directory format above.
#[derive(Debug)]
pub struct DirDataset {
    dir: PathBuf,
    tasks: Vec<TaskSpec>,
    cols: TaskColumns,
    input_dim: usize,
    train: SplitFiles,
    val: SplitFiles,
}

impl DirDataset {
    /// Reads `tasks.toml` and maps every array, checking their shapes.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        require_dir(&dir)?;
        let tasks = read_tasks(&dir.join(TASKS_FILE))?;
        let train = open_split(&dir.join(Split::Train.name()), &tasks)?;
        let val = open_split(&dir.join(Split::Val.name()), &tasks)?;
        let input_dim = train.x.row_width();
        if val.x.row_width() != input_dim {
            return Err(Error::data(
                val.x.path(),
                format!(
                    "has {} input columns, but {} has {input_dim}",
                    val.x.row_width(),
                    train.x.path().display()
                ),
            ));
        }
        Ok(DirDataset {
            dir,
            cols: TaskColumns::new(&tasks),
            tasks,
            input_dim,
            train,
            val,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn split(&self, split: Split) -> &SplitFiles {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }
}

fn require_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(Error::data(
            dir,
            "is not a directory (--data takes a dataset directory: tasks.toml with \
             train/ and val/ .npy files, or with train.csv and val.csv; see docs/data-format.md)",
        ))
    }
}

/// Parses and validates `tasks.toml`.
fn read_tasks(path: &Path) -> Result<Vec<TaskSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::data(path, msg);
    // serde cannot deny unknown keys through the flattened task kind, so
    // they are checked on the raw table first.
    let table: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
    check_task_keys(&table).map_err(bad)?;
    let file: TasksFile = toml::from_str(&text).map_err(|e| bad(format!("{e}")))?;
    validate_tasks(&file.task).map_err(bad)?;
    Ok(file.task)
}

/// The tasks of a parsed `tasks.toml` table (the CSV format's, with its
/// own keys removed): keys checked, then validated.
pub(super) fn tasks_from_table(path: &Path, table: toml::Table) -> Result<Vec<TaskSpec>> {
    let bad = |msg: String| Error::data(path, msg);
    check_task_keys(&table).map_err(bad)?;
    let file: TasksFile = table.try_into().map_err(|e| bad(format!("{e}")))?;
    validate_tasks(&file.task).map_err(bad)?;
    Ok(file.task)
}

/// Refuses keys that a task of its kind does not take (typos would
/// otherwise be ignored silently).
fn check_task_keys(table: &toml::Table) -> std::result::Result<(), String> {
    let Some(toml::Value::Array(tasks)) = table.get("task") else {
        return Err("expected a list of [[task]] tables".into());
    };
    for (i, task) in tasks.iter().enumerate() {
        let toml::Value::Table(t) = task else {
            return Err(format!("task {}: expected a [[task]] table", i + 1));
        };
        let kind = t.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let extra: &[&str] = match kind {
            "classify" => &["classes"],
            "regress" => &["dim"],
            _ => &[],
        };
        let allowed = |k: &str| ["name", "kind", "weight"].contains(&k) || extra.contains(&k);
        if let Some(key) = t.keys().find(|k| !allowed(k)) {
            let name = t.get("name").and_then(|n| n.as_str()).unwrap_or("?");
            return Err(format!(
                "task {} ('{name}'): unknown key '{key}' for kind '{kind}' \
                 (allowed: name, kind, weight{})",
                i + 1,
                extra.iter().map(|e| format!(", {e}")).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// Maps `x.npy` and the task files of one split directory.
fn open_split(sdir: &Path, tasks: &[TaskSpec]) -> Result<SplitFiles> {
    require_dir(sdir)?;
    let x = NpyArray::open(sdir.join(INPUTS_FILE))?;
    if x.shape().len() != 2 || x.shape()[1] == 0 {
        return Err(Error::data(
            x.path(),
            format!(
                "expected inputs of shape [N, d] with d >= 1, found {:?}",
                x.shape()
            ),
        ));
    }
    let n = x.rows();
    if n == 0 {
        return Err(Error::data(x.path(), "the split has no rows"));
    }
    let labels = tasks
        .iter()
        .map(|t| open_labels(&sdir.join(format!("{}.npy", t.name)), t, n))
        .collect::<Result<Vec<_>>>()?;
    Ok(SplitFiles { n, x, labels })
}

/// Maps the label file of `task`, checking its shape against `n` rows.
fn open_labels(path: &Path, task: &TaskSpec, n: usize) -> Result<NpyArray> {
    let a = NpyArray::open(path)?;
    let shape = a.shape();
    let width = task.kind.label_dim();
    let ok = match shape {
        [_] => width == 1,
        [_, w] => *w == width,
        _ => false,
    };
    if !ok {
        let expected = if width == 1 {
            "[N] or [N, 1]".to_string()
        } else {
            format!("[N, {width}]")
        };
        let what = match task.kind {
            TaskKind::Regress { dim } => format!("regress task '{}' with dim {dim}", task.name),
            k => format!("{} task '{}'", k.name(), task.name),
        };
        return Err(Error::data(
            path,
            format!("expected shape {expected} for {what}, found {shape:?}"),
        ));
    }
    if a.rows() != n {
        return Err(Error::data(
            path,
            format!("has {} rows, but {INPUTS_FILE} beside it has {n}", a.rows()),
        ));
    }
    Ok(a)
}

impl Dataset for DirDataset {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn input_dim(&self) -> usize {
        self.input_dim
    }

    fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }

    fn len(&self, split: Split) -> usize {
        self.split(split).n
    }

    fn fill(&self, split: Split, indices: &[u64], x: &mut [f32], labels: &mut [f32]) -> Result<()> {
        check_fill_args(self, split, indices, x, labels)?;
        let files = self.split(split);
        let rows = x
            .chunks_exact_mut(self.input_dim)
            .zip(labels.chunks_exact_mut(self.cols.label_cols));
        for (&i, (xr, lr)) in indices.iter().zip(rows) {
            // In range: check_fill_args compared every index with `n`.
            let i = i as usize;
            files.x.read_row_f32(i, xr)?;
            for ((t, a), &off) in self
                .tasks
                .iter()
                .zip(&files.labels)
                .zip(&self.cols.label_off)
            {
                let out = &mut lr[off..off + t.kind.label_dim()];
                a.read_row_f32(i, out)?;
                mark_missing(t.kind, out);
            }
        }
        Ok(())
    }

    fn validate_rows(&self, split: Split, lo: usize, hi: usize) -> Result<()> {
        let files = self.split(split);
        if lo > hi || hi > files.n {
            return Err(Error::data(
                &self.dir,
                format!(
                    "rows {lo}..{hi} requested from the {} split of {} rows",
                    split.name(),
                    files.n
                ),
            ));
        }
        let mut row = vec![0.0f32; self.input_dim.max(self.cols.label_cols)];
        for i in lo..hi {
            let xr = &mut row[..self.input_dim];
            files.x.read_row_f32(i, xr)?;
            if let Some((j, v)) = xr.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::data(
                    files.x.path(),
                    format!("non-finite input {v} at row {i}, column {j}"),
                ));
            }
            for (t, a) in self.tasks.iter().zip(&files.labels) {
                let lr = &mut row[..t.kind.label_dim()];
                a.read_row_f32(i, lr)?;
                check_label(t.kind, lr)
                    .map_err(|bad| Error::data(a.path(), label_message(t, i, bad)))?;
            }
        }
        Ok(())
    }
}

/// The message for a bad label of task `t` at row `i` of a `.npy` file.
fn label_message(t: &TaskSpec, i: usize, bad: BadLabel) -> String {
    let name = &t.name;
    match bad {
        BadLabel::OutOfRange { value: v, classes } => format!(
            "label {v} at row {i} out of range for task '{name}' with {classes} classes \
             (use -1 for missing)"
        ),
        BadLabel::NotBinary { value: v } => format!(
            "label {v} at row {i} of binary task '{name}' is not 0 or 1 \
             (use -1, or NaN in a float file, for missing)"
        ),
        BadLabel::Infinite {
            column: j,
            value: v,
        } => format!(
            "infinite label {v} at row {i}, column {j} of regress task '{name}' \
             (use NaN for missing)"
        ),
    }
}

/// Writes any dataset in the directory format: inputs as float32, classify
/// and binary labels as int64 with -1 for missing, regress labels as float32
/// with NaN for missing. `dir` must not exist or be empty; `tasks.toml` is
/// written last, so an interrupted write leaves no openable dataset.
pub fn write_dataset_dir(ds: &dyn Dataset, dir: &Path) -> Result<()> {
    let tasks = ds.tasks();
    validate_tasks(tasks).map_err(|m| Error::config(format!("{}: {m}", ds.describe())))?;
    prepare_empty_dir(dir)?;
    for split in [Split::Train, Split::Val] {
        write_split(ds, split, &dir.join(split.name()))?;
    }
    let path = dir.join(TASKS_FILE);
    std::fs::write(&path, tasks_toml(ds)).map_err(|e| Error::io(&path, e))
}

/// Creates `dir`, or accepts it if it exists and is empty; never deletes.
pub(super) fn prepare_empty_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::data(
                    dir,
                    "exists and is not empty; choose a new or empty directory",
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Label columns of one task, in the dtype they are written with.
enum LabelBuf {
    Int(Vec<i64>),
    Float(Vec<f32>),
}

fn write_split(ds: &dyn Dataset, split: Split, sdir: &Path) -> Result<()> {
    let (n, d) = (ds.len(split), ds.input_dim());
    // Only valid rows are written, so the result always opens and validates.
    ds.validate_rows(split, 0, n)?;
    std::fs::create_dir_all(sdir).map_err(|e| Error::io(sdir, e))?;
    let cols = TaskColumns::new(ds.tasks());
    let mut x_all = Vec::with_capacity(n * d);
    let mut bufs: Vec<LabelBuf> = ds
        .tasks()
        .iter()
        .map(|t| match t.kind {
            TaskKind::Regress { dim } => LabelBuf::Float(Vec::with_capacity(n * dim)),
            _ => LabelBuf::Int(Vec::with_capacity(n)),
        })
        .collect();
    let mut start = 0;
    while start < n {
        let idx: Vec<u64> = (start as u64..n.min(start + WRITE_CHUNK) as u64).collect();
        let mut x = vec![0.0; idx.len() * d];
        let mut labels = vec![0.0; idx.len() * cols.label_cols];
        ds.fill(split, &idx, &mut x, &mut labels)?;
        x_all.extend_from_slice(&x);
        for row in labels.chunks_exact(cols.label_cols) {
            for ((t, buf), &off) in ds.tasks().iter().zip(&mut bufs).zip(&cols.label_off) {
                let vals = &row[off..off + t.kind.label_dim()];
                match buf {
                    LabelBuf::Float(v) => v.extend_from_slice(vals),
                    // Validated above: NaN or an exact small integer.
                    LabelBuf::Int(v) => v.push(if vals[0].is_nan() { -1 } else { vals[0] as i64 }),
                }
            }
        }
        start += idx.len();
    }
    npy::write_f32(sdir.join(INPUTS_FILE), &[n, d], &x_all)?;
    for (t, buf) in ds.tasks().iter().zip(&bufs) {
        let path = sdir.join(format!("{}.npy", t.name));
        match buf {
            LabelBuf::Int(v) => npy::write_i64(path, &[n], v)?,
            LabelBuf::Float(v) => npy::write_f32(path, &[n, t.kind.label_dim()], v)?,
        }
    }
    Ok(())
}

/// The `tasks.toml` text for `ds`. Task names are validated (letters,
/// digits, '_', '-'), so quoting them needs no escaping.
fn tasks_toml(ds: &dyn Dataset) -> String {
    let from = ds.describe().replace(['\n', '\r'], " ");
    let s = format!(
        "# ringtrain dataset written from {from}\n\
         # train/ and val/ hold x.npy [N, {}] and one <task>.npy per task.\n",
        ds.input_dim()
    );
    s + &task_tables(ds.tasks())
}

/// The `[[task]]` tables of `tasks.toml` for `tasks`.
pub(super) fn task_tables(tasks: &[TaskSpec]) -> String {
    let mut s = String::new();
    for t in tasks {
        s += &format!(
            "\n[[task]]\nname = \"{}\"\nkind = \"{}\"\n",
            t.name,
            t.kind.name()
        );
        match t.kind {
            TaskKind::Classify { classes } => s += &format!("classes = {classes}\n"),
            TaskKind::Regress { dim } => s += &format!("dim = {dim}\n"),
            TaskKind::Binary => {}
        }
        // `{:?}` keeps a decimal point or exponent, so TOML reads a float.
        s += &format!("weight = {:?}\n", t.weight);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::Synthetic;

    use crate::data::test_util::{TempDir, err, fill, same, temp_dir};

    #[test]
    fn synthetic_roundtrip() {
        let tmp = temp_dir("dir-roundtrip");
        // Not there yet: the writer makes it.
        let out = tmp.path().join("ds");
        let syn = Synthetic::new(5, 5000, 300);
        write_dataset_dir(&syn, &out).unwrap();
        let ds = DirDataset::open(&out).unwrap();
        assert_eq!(ds.tasks(), syn.tasks());
        assert_eq!(ds.input_dim(), syn.input_dim());
        for split in [Split::Train, Split::Val] {
            let n = syn.len(split) as u64;
            assert_eq!(ds.len(split) as u64, n);
            ds.validate_rows(split, 0, n as usize).unwrap();
            let idx: Vec<u64> = (0..n).rev().step_by(3).chain([0, n - 1, 7]).collect();
            let (x1, l1) = fill(&syn, split, &idx);
            let (x2, l2) = fill(&ds, split, &idx);
            assert!(same(&x1, &x2) && same(&l1, &l2), "{split:?}");
            assert!(l2.iter().any(|v| v.is_nan()));
        }
        // Never writes into a non-empty directory, and leaves it alone.
        let msg = err(write_dataset_dir(&syn, &out));
        assert!(msg.contains("not empty"), "{msg}");
        assert!(DirDataset::open(&out).is_ok());
    }

    #[test]
    fn weights_and_empty_dir() {
        let tmp = temp_dir("dir-weights");
        let syn = Synthetic::new(1, 10, 4);
        let tasks: Vec<TaskSpec> = syn
            .tasks()
            .iter()
            .cloned()
            .zip([0.25, 2.0, 1e-7])
            .map(|(t, w)| TaskSpec { weight: w, ..t })
            .collect();
        let wrapped = WithTasks(syn, tasks.clone());
        write_dataset_dir(&wrapped, tmp.path()).unwrap();
        assert_eq!(DirDataset::open(tmp.path()).unwrap().tasks(), &tasks[..]);
    }

    /// A dataset with other task weights.
    struct WithTasks(Synthetic, Vec<TaskSpec>);

    impl Dataset for WithTasks {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn input_dim(&self) -> usize {
            self.0.input_dim()
        }
        fn tasks(&self) -> &[TaskSpec] {
            &self.1
        }
        fn len(&self, split: Split) -> usize {
            self.0.len(split)
        }
        fn fill(&self, split: Split, i: &[u64], x: &mut [f32], l: &mut [f32]) -> Result<()> {
            self.0.fill(split, i, x, l)
        }
        fn validate_rows(&self, split: Split, lo: usize, hi: usize) -> Result<()> {
            self.0.validate_rows(split, lo, hi)
        }
    }

    const N: usize = 20;
    const TOML: &str = "[[task]]\nname = \"shape\"\nkind = \"classify\"\nclasses = 4\n\n\
                        [[task]]\nname = \"size\"\nkind = \"regress\"\ndim = 2\nweight = 0.5\n\n\
                        [[task]]\nname = \"flag\"\nkind = \"binary\"\n";

    /// A small hand-written valid dataset; returns its directory.
    fn handmade(tag: &str) -> TempDir {
        let tmp = temp_dir(tag);
        std::fs::write(tmp.path().join(TASKS_FILE), TOML).unwrap();
        for split in ["train", "val"] {
            let s = tmp.path().join(split);
            std::fs::create_dir_all(&s).unwrap();
            let x: Vec<f32> = (0..N * 3).map(|i| i as f32).collect();
            npy::write_f32(s.join("x.npy"), &[N, 3], &x).unwrap();
            let shape: Vec<i64> = (0..N as i64)
                .map(|i| if i % 5 == 0 { -1 } else { i % 4 })
                .collect();
            npy::write_i64(s.join("shape.npy"), &[N, 1], &shape).unwrap();
            let size: Vec<f32> = (0..N * 2)
                .map(|i| if i == 3 { f32::NAN } else { i as f32 })
                .collect();
            npy::write_f32(s.join("size.npy"), &[N, 2], &size).unwrap();
            let flag: Vec<f32> = (0..N).map(|i| [0.0, 1.0, f32::NAN][i % 3]).collect();
            npy::write_f32(s.join("flag.npy"), &[N], &flag).unwrap();
        }
        tmp
    }

    #[test]
    fn reads_handmade_dataset() {
        let tmp = handmade("read");
        let ds = DirDataset::open(tmp.path()).unwrap();
        assert_eq!((ds.input_dim(), ds.len(Split::Val)), (3, N));
        assert_eq!(ds.tasks()[1].weight, 0.5);
        assert_eq!(ds.tasks()[0].weight, 1.0);
        ds.validate_rows(Split::Train, 0, N).unwrap();
        let (x, l) = fill(&ds, Split::Train, &[1, 0, 5]);
        assert_eq!(&x[..3], &[3.0, 4.0, 5.0]);
        assert!(same(&l[..4], &[1.0, 2.0, f32::NAN, 1.0]));
        assert!(
            l[4].is_nan() && l[8].is_nan(),
            "-1 class labels read as NaN"
        );
        assert!(l[11].is_nan(), "NaN float binary label stays NaN");
        assert!(ds.validate_rows(Split::Train, 3, N + 1).is_err());
    }

    #[test]
    fn validation_catches_bad_values() {
        let tmp = handmade("validate");
        let s = tmp.path().join("train");
        let mut shape: Vec<i64> = vec![0; N];
        shape[12] = 7;
        npy::write_i64(s.join("shape.npy"), &[N], &shape).unwrap();
        let ds = DirDataset::open(tmp.path()).unwrap();
        ds.validate_rows(Split::Train, 0, 12).unwrap();
        let msg = err(ds.validate_rows(Split::Train, 0, N));
        assert!(msg.contains("label 7 at row 12 out of range for task 'shape' with 4 classes (use -1 for missing)"), "{msg}");
        assert!(msg.contains("shape.npy"), "{msg}");

        npy::write_i64(s.join("shape.npy"), &[N], &[0; N]).unwrap();
        let mut flag = vec![1i64; N];
        flag[4] = 2;
        npy::write_i64(s.join("flag.npy"), &[N], &flag).unwrap();
        let msg = err(DirDataset::open(tmp.path())
            .unwrap()
            .validate_rows(Split::Train, 0, N));
        assert!(
            msg.contains("flag.npy") && msg.contains("label 2 at row 4"),
            "{msg}"
        );

        npy::write_i64(s.join("flag.npy"), &[N], &[-1; N]).unwrap();
        let mut x = vec![0.0f32; N * 3];
        x[2 * 3 + 1] = f32::INFINITY;
        npy::write_f32(s.join("x.npy"), &[N, 3], &x).unwrap();
        let msg = err(DirDataset::open(tmp.path())
            .unwrap()
            .validate_rows(Split::Train, 0, N));
        assert!(
            msg.contains("x.npy") && msg.contains("row 2, column 1"),
            "{msg}"
        );

        npy::write_f32(s.join("x.npy"), &[N, 3], &[0.0; N * 3]).unwrap();
        let mut size = vec![f32::NAN; N * 2];
        size[9] = f32::NEG_INFINITY;
        npy::write_f32(s.join("size.npy"), &[N, 2], &size).unwrap();
        let msg = err(DirDataset::open(tmp.path())
            .unwrap()
            .validate_rows(Split::Train, 0, N));
        assert!(
            msg.contains("size.npy") && msg.contains("row 4, column 1"),
            "{msg}"
        );
    }

    #[test]
    fn shape_errors_name_the_file() {
        let tmp = handmade("shapes");
        let s = tmp.path().join("val");
        npy::write_f32(s.join("size.npy"), &[N, 3], &[0.0; N * 3]).unwrap();
        let msg = err(DirDataset::open(tmp.path()));
        assert!(msg.contains("val/size.npy"), "{msg}");
        assert!(
            msg.contains("expected shape [N, 2] for regress task 'size' with dim 2, found [20, 3]"),
            "{msg}"
        );

        npy::write_f32(s.join("size.npy"), &[N - 1, 2], &[0.0; (N - 1) * 2]).unwrap();
        let msg = err(DirDataset::open(tmp.path()));
        assert!(msg.contains("size.npy") && msg.contains("19 rows"), "{msg}");

        npy::write_f32(s.join("size.npy"), &[N, 2], &[0.0; N * 2]).unwrap();
        npy::write_f32(s.join("x.npy"), &[N, 4], &[0.0; N * 4]).unwrap();
        let msg = err(DirDataset::open(tmp.path()));
        assert!(
            msg.contains("val/x.npy") && msg.contains("4 input columns"),
            "{msg}"
        );

        npy::write_f32(s.join("x.npy"), &[N * 3], &[0.0; N * 3]).unwrap();
        let msg = err(DirDataset::open(tmp.path()));
        assert!(msg.contains("val/x.npy") && msg.contains("[N, d]"), "{msg}");

        npy::write_f32(s.join("x.npy"), &[N, 3], &[0.0; N * 3]).unwrap();
        npy::write_i64(s.join("shape.npy"), &[N, 2], &[0; N * 2]).unwrap();
        let msg = err(DirDataset::open(tmp.path()));
        assert!(
            msg.contains("expected shape [N] or [N, 1] for classify task 'shape', found [20, 2]"),
            "{msg}"
        );
    }

    #[test]
    fn missing_files_are_named() {
        let tmp = handmade("missing");
        std::fs::remove_file(tmp.path().join("val/flag.npy")).unwrap();
        let msg = err(DirDataset::open(tmp.path()));
        assert!(msg.contains("val/flag.npy"), "{msg}");
        std::fs::remove_dir_all(tmp.path().join("val")).unwrap();
        let msg = err(DirDataset::open(tmp.path()));
        assert!(msg.contains("val"), "{msg}");
        std::fs::remove_file(tmp.path().join(TASKS_FILE)).unwrap();
        let msg = err(DirDataset::open(tmp.path()));
        assert!(msg.contains("tasks.toml"), "{msg}");
        let nowhere = tmp.path().join("nowhere");
        let msg = err(DirDataset::open(&nowhere));
        assert!(msg.contains("nowhere"), "{msg}");
    }

    #[test]
    fn tasks_toml_errors() {
        let tmp = handmade("toml");
        let path = tmp.path().join(TASKS_FILE);
        let cases = [
            (
                "[[task]]\nname = \"a\"\nkind = \"regress\"\nclasses = 3\n",
                "unknown key 'classes'",
            ),
            (
                "[[task]]\nname = \"a\"\nkind = \"binary\"\nwieght = 3.0\n",
                "unknown key 'wieght'",
            ),
            ("[[task]]\nname = \"a\"\nkind = \"ranking\"\n", "ranking"),
            ("[[task]]\nname = \"a\"\nkind = \"classify\"\n", "classes"),
            (
                "[[task]]\nname = \"a\"\nkind = \"classify\"\nclasses = 1\n",
                "classes >= 2",
            ),
            ("[[task]]\nname = \"a b\"\nkind = \"binary\"\n", "letters"),
            ("task = 3\n", "[[task]]"),
            (
                "[[task]]\nname = \"a\"\nkind = \"binary\"\n[extra]\n",
                "extra",
            ),
            ("[[task\n", "tasks.toml"),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let msg = err(DirDataset::open(tmp.path()));
            assert!(
                msg.contains(want) && msg.contains("tasks.toml"),
                "{text:?}: {msg}"
            );
        }
        // An integer weight is accepted as a float.
        std::fs::write(
            &path,
            "[[task]]\nname = \"flag\"\nkind = \"binary\"\nweight = 2\n",
        )
        .unwrap();
        assert_eq!(DirDataset::open(tmp.path()).unwrap().tasks()[0].weight, 2.0);
    }
}
