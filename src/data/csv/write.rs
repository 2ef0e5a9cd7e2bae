//! Writing any dataset as a CSV directory.

use std::fs::File;
use std::path::Path;

use super::{TASKS_FILE, split_file};
use crate::data::dir::{prepare_empty_dir, task_tables};
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::tasks::{TaskColumns, TaskKind};

/// Rows generated per `fill` call when writing a dataset.
const WRITE_CHUNK: usize = 4096;

/// The header names `write_dataset_csv` uses: `x0..`, then each task's
/// default column names.
fn default_header(ds: &dyn Dataset) -> Vec<String> {
    let mut names: Vec<String> = (0..ds.input_dim()).map(|j| format!("x{j}")).collect();
    for t in ds.tasks() {
        match t.kind.label_dim() {
            1 => names.push(t.name.clone()),
            d => names.extend((0..d).map(|j| format!("{}_{j}", t.name))),
        }
    }
    names
}

/// Writes any dataset as a CSV directory: `train.csv`, `val.csv` (inputs
/// `x0..`, then the label columns; a missing label is an empty field) and
/// `tasks.toml`, written last. `dir` must not exist or be empty.
pub fn write_dataset_csv(ds: &dyn Dataset, dir: &Path) -> Result<()> {
    let tasks = ds.tasks();
    crate::tasks::validate_tasks(tasks)
        .map_err(|m| Error::config(format!("{}: {m}", ds.describe())))?;
    prepare_empty_dir(dir)?;
    for split in [Split::Train, Split::Val] {
        write_split(ds, split, &split_file(dir, split))?;
    }
    let from = ds.describe().replace(['\n', '\r'], " ");
    let text = format!(
        "# ringtrain dataset written from {from}\n\
         # train.csv and val.csv: inputs x0..x{}, then one column per label\n\
         # (a task's name, or name_0, name_1, ... for regress with dim > 1).\n\
         inputs = [\"x*\"]\n{}",
        ds.input_dim() - 1,
        task_tables(tasks)
    );
    let path = dir.join(TASKS_FILE);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

fn write_split(ds: &dyn Dataset, split: Split, path: &Path) -> Result<()> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let (n, d) = (ds.len(split), ds.input_dim());
    // Only valid rows are written, so the result always opens and validates.
    ds.validate_rows(split, 0, n)?;
    let cols = TaskColumns::new(ds.tasks());
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let io = |e| Error::io(path, e);
    writeln!(out, "{}", default_header(ds).join(",")).map_err(io)?;
    let mut line = String::new();
    let mut start = 0;
    while start < n {
        let idx: Vec<u64> = (start as u64..n.min(start + WRITE_CHUNK) as u64).collect();
        let mut x = vec![0.0; idx.len() * d];
        let mut labels = vec![0.0; idx.len() * cols.label_cols];
        ds.fill(split, &idx, &mut x, &mut labels)?;
        for (xr, lr) in x.chunks_exact(d).zip(labels.chunks_exact(cols.label_cols)) {
            line.clear();
            for v in xr {
                // Display of f32 prints the shortest text that reads back
                // to the same bits.
                let _ = write!(line, "{v},");
            }
            for (t, &off) in ds.tasks().iter().zip(&cols.label_off) {
                for &v in &lr[off..off + t.kind.label_dim()] {
                    match (v.is_nan(), t.kind) {
                        (true, _) => {}
                        (false, TaskKind::Regress { .. }) => {
                            let _ = write!(line, "{v}");
                        }
                        // Validated: a small whole number.
                        (false, _) => {
                            let _ = write!(line, "{}", v as i64);
                        }
                    }
                    line.push(',');
                }
            }
            line.pop();
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(io)?;
        }
        start += idx.len();
    }
    out.flush().map_err(io)
}
