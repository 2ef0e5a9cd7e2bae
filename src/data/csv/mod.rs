//! CSV datasets: a directory holding
//!
//! ```text
//! DIR/tasks.toml    the tasks, as in the .npy directory format, plus the
//!                   column mapping:  inputs = ["x*"]        (optional)
//!                                    [[task]] ... columns = ["a", "b"]
//! DIR/train.csv     a header row naming the columns, then one row per sample
//! DIR/val.csv       the same columns (in any order) for the validation split
//! ```
//!
//! A task reads the column named like the task (`name_0` .. `name_{d-1}`
//! for a regress task with dim d > 1) unless it lists its `columns`; the
//! inputs are every other column unless `inputs` lists them (names or
//! `*` patterns). An empty field or NaN is a missing label.
//!
//! Nothing is loaded into memory: opening a file streams it once to build
//! a sparse index (the byte offset of every [`BLOCK`]-th row), and a rank
//! then reads, with positioned reads, only the blocks holding the rows it
//! is asked for. Each rank checks the values of its own slice of the rows.//!
//! The files: this one is the dataset ([`CsvDataset`]: opening, `fill`,
//! `validate_rows`); `mapping.rs` reads `tasks.toml` and maps header names
//! to inputs and labels; `index.rs` streams a file once into its sparse row
//! index and reads rows back by it; `lex.rs` splits a line into fields and
//! parses a cell; `write.rs` writes any dataset as CSV. The label rules are
//! the directory format's too (`data/labels.rs`).

mod index;
mod lex;
mod mapping;
#[cfg(test)]
mod tests;
mod write;

use std::fs::File;
use std::path::{Path, PathBuf};

use super::labels::{BadLabel, check_label, mark_missing};
use super::{Dataset, Split, check_fill_args};
use crate::error::{Error, Result};
use crate::tasks::{TaskColumns, TaskSpec};
use index::{CsvSplit, scan};
use lex::strip_cr;
use mapping::{check_distinct, find_columns, find_one, input_columns, read_tasks};
pub use write::write_dataset_csv;

pub const TASKS_FILE: &str = "tasks.toml";
/// Rows per index entry: the index costs 8 / BLOCK bytes per row, and a
/// row is found by reading at most BLOCK rows.
pub(super) const BLOCK: usize = 32;
/// The longest line (header or row) a CSV file may have: bounds the
/// header kept while indexing and the buffer a block is read into.
pub(super) const MAX_LINE: usize = 16 << 20;

/// The CSV file of a split inside a dataset directory.
pub fn split_file(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("{}.csv", split.name()))
}

/// Whether `dir` holds a CSV dataset (a `train.csv`) rather than `.npy` files.
pub fn is_csv_dir(dir: &Path) -> bool {
    split_file(dir, Split::Train).is_file()
}

/// A dataset stored as CSV files (see the module comment).
#[derive(Debug)]
pub struct CsvDataset {
    dir: PathBuf,
    tasks: Vec<TaskSpec>,
    cols: TaskColumns,
    train: CsvSplit,
    val: CsvSplit,
}

impl CsvDataset {
    /// Reads `tasks.toml`, indexes both CSV files and resolves the columns.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let (tasks, mapping) = read_tasks(&dir.join(TASKS_FILE))?;
        let cols = TaskColumns::new(&tasks);
        let label_names: Vec<String> = mapping.task_columns.concat();

        let train_path = split_file(&dir, Split::Train);
        let (names, blocks, n) = scan(&train_path)?;
        let label_fields = find_columns(&train_path, &names, &label_names, &tasks, &mapping)?;
        let input_names = input_columns(&train_path, &names, &label_fields, &mapping)?;
        let input_fields = input_names
            .iter()
            .map(|c| find_one(&train_path, &names, c, "input"))
            .collect::<Result<Vec<_>>>()?;
        check_distinct(&train_path, &names, &input_fields, &label_fields)?;
        let train = CsvSplit {
            file: open_file(&train_path)?,
            path: train_path,
            n,
            blocks,
            names,
            input_fields,
            label_fields,
        };

        let val_path = split_file(&dir, Split::Val);
        let (names, blocks, n) = scan(&val_path)?;
        let label_fields = find_columns(&val_path, &names, &label_names, &tasks, &mapping)?;
        let input_fields = input_names
            .iter()
            .map(|c| find_one(&val_path, &names, c, "input"))
            .collect::<Result<Vec<_>>>()?;
        let val = CsvSplit {
            file: open_file(&val_path)?,
            path: val_path,
            n,
            blocks,
            names,
            input_fields,
            label_fields,
        };
        Ok(CsvDataset {
            dir,
            tasks,
            cols,
            train,
            val,
        })
    }

    fn split(&self, split: Split) -> &CsvSplit {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }
}

pub(super) fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io(path, e))
}

impl Dataset for CsvDataset {
    fn describe(&self) -> String {
        format!("{} (csv)", self.dir.display())
    }

    fn resident_bytes(&self) -> u64 {
        self.train.resident_bytes() + self.val.resident_bytes()
    }

    fn input_dim(&self) -> usize {
        self.train.input_fields.len()
    }

    fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }

    fn len(&self, split: Split) -> usize {
        self.split(split).n
    }

    fn fill(&self, split: Split, indices: &[u64], x: &mut [f32], labels: &mut [f32]) -> Result<()> {
        check_fill_args(self, split, indices, x, labels)?;
        let s = self.split(split);
        let (d, l) = (self.input_dim(), self.cols.label_cols);
        let mut buf = vec![];
        let mut fields = vec![];
        for (k, &i) in indices.iter().enumerate() {
            // In range: check_fill_args compared every index with `n`.
            let i = i as usize;
            let first = s.read_block(i, &mut buf)?;
            let line = buf
                .split(|b| *b == b'\n')
                .nth(i - first)
                .map(strip_cr)
                .unwrap_or_default();
            let (xr, lr) = (&mut x[k * d..(k + 1) * d], &mut labels[k * l..(k + 1) * l]);
            s.parse_row(i, line, &mut fields, xr, lr)?;
            for (t, &off) in self.tasks.iter().zip(&self.cols.label_off) {
                mark_missing(t.kind, &mut lr[off..off + t.kind.label_dim()]);
            }
        }
        Ok(())
    }

    fn validate_rows(&self, split: Split, lo: usize, hi: usize) -> Result<()> {
        let s = self.split(split);
        if lo > hi || hi > s.n {
            return Err(s.err(format!(
                "rows {lo}..{hi} requested from the {} split of {} rows",
                split.name(),
                s.n
            )));
        }
        let mut x = vec![0.0f32; self.input_dim()];
        let mut labels = vec![0.0f32; self.cols.label_cols];
        let mut fields = vec![];
        s.for_rows(lo, hi, |i, line| {
            s.parse_row(i, line, &mut fields, &mut x, &mut labels)?;
            if let Some(j) = x.iter().position(|v| !v.is_finite()) {
                let what = if x[j].is_nan() {
                    "missing input (inputs must be finite numbers)".to_string()
                } else {
                    format!("non-finite input {}", x[j])
                };
                return Err(s.at(i, s.input_fields[j], what));
            }
            for (t, &off) in self.tasks.iter().zip(&self.cols.label_off) {
                let vals = &labels[off..off + t.kind.label_dim()];
                if let Err(bad) = check_label(t.kind, vals) {
                    let (j, msg) = label_message(t, bad);
                    return Err(s.at(i, s.label_fields[off + j], msg));
                }
            }
            Ok(())
        })
    }
}

/// The message for a bad label of task `t` in a CSV row, and the label
/// column (within the task) it names.
fn label_message(t: &TaskSpec, bad: BadLabel) -> (usize, String) {
    let name = &t.name;
    match bad {
        BadLabel::OutOfRange { value: v, classes } => (
            0,
            format!(
                "label {v} out of range for task '{name}' with {classes} classes \
                 (integers 0..{}; empty or -1 for missing)",
                classes - 1
            ),
        ),
        BadLabel::NotBinary { value: v } => (
            0,
            format!("label {v} of binary task '{name}' is not 0 or 1 (empty or -1 for missing)"),
        ),
        BadLabel::Infinite {
            column: j,
            value: v,
        } => (
            j,
            format!("infinite label {v} of regress task '{name}' (empty or NaN for missing)"),
        ),
    }
}
