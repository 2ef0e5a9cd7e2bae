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
//! is asked for. Each rank checks the values of its own slice of the rows.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::dir::{prepare_empty_dir, task_tables, tasks_from_table};
use super::{Dataset, Split, check_fill_args};
use crate::error::{Error, Result};
use crate::tasks::{TaskColumns, TaskKind, TaskSpec};

pub const TASKS_FILE: &str = "tasks.toml";
/// Rows per index entry: the index costs 8 / BLOCK bytes per row, and a
/// row is found by reading at most BLOCK rows.
const BLOCK: usize = 32;
/// Read size while indexing a file.
const SCAN_CHUNK: usize = 1 << 20;
/// Rows generated per `fill` call when writing a dataset.
const WRITE_CHUNK: usize = 4096;

/// The CSV file of a split inside a dataset directory.
pub fn split_file(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("{}.csv", split.name()))
}

/// Whether `dir` holds a CSV dataset (a `train.csv`) rather than `.npy` files.
pub fn is_csv_dir(dir: &Path) -> bool {
    split_file(dir, Split::Train).is_file()
}

/// One split: its file, the row index and where each value sits in a row.
#[derive(Debug)]
struct CsvSplit {
    path: PathBuf,
    file: File,
    n: usize,
    /// Byte offset of rows 0, BLOCK, 2*BLOCK, ..., then the end of the rows.
    blocks: Vec<u64>,
    /// Header names (for messages), in file order.
    names: Vec<String>,
    /// Field index of each input, in input order.
    input_fields: Vec<usize>,
    /// Field index of each label column, in [`TaskColumns`] order.
    label_fields: Vec<usize>,
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

/// The column mapping of `tasks.toml`.
struct Mapping {
    /// Input column names or `*` patterns; None: every column not used by a task.
    inputs: Option<Vec<String>>,
    /// Per task, its label column names (label_dim of them).
    task_columns: Vec<Vec<String>>,
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

fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads `tasks.toml`: the tasks as in the directory format, plus the
/// optional top-level `inputs` and per-task `columns`.
fn read_tasks(path: &Path) -> Result<(Vec<TaskSpec>, Mapping)> {
    let bad = |msg: String| Error::data(path, msg);
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut table: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
    let inputs = match table.remove("inputs") {
        None => None,
        Some(v) => Some(string_list(&v).ok_or_else(|| {
            bad("inputs: expected a list of column names or patterns, e.g. [\"x*\"]".into())
        })?),
    };
    // Take each task's `columns` out before the shared checks see it.
    let mut given: Vec<Option<Vec<String>>> = vec![];
    if let Some(toml::Value::Array(list)) = table.get_mut("task") {
        for (i, t) in list.iter_mut().enumerate() {
            let Some(t) = t.as_table_mut() else { continue };
            given.push(match t.remove("columns") {
                None => None,
                Some(v) => Some(string_list(&v).ok_or_else(|| {
                    bad(format!(
                        "task {}: columns: expected a column name or a list of them",
                        i + 1
                    ))
                })?),
            });
        }
    }
    let tasks = tasks_from_table(path, table)?;
    let mut task_columns = vec![];
    for (t, cols) in tasks.iter().zip(given) {
        let d = t.kind.label_dim();
        let cols = cols.unwrap_or_else(|| match d {
            1 => vec![t.name.clone()],
            _ => (0..d).map(|j| format!("{}_{j}", t.name)).collect(),
        });
        if cols.len() != d {
            return Err(bad(format!(
                "task '{}' ({} with {d} label column(s)) lists {} column(s)",
                t.name,
                t.kind.name(),
                cols.len()
            )));
        }
        task_columns.push(cols);
    }
    Ok((
        tasks,
        Mapping {
            inputs,
            task_columns,
        },
    ))
}

/// A TOML string, or a non-empty list of strings.
fn string_list(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    }
}

/// The header names, shortened for messages.
fn header_list(names: &[String]) -> String {
    const SHOW: usize = 12;
    let mut s = names
        .iter()
        .take(SHOW)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s += &format!(", ... ({} columns)", names.len());
    }
    s
}

/// The field index of column `name`; it must appear exactly once.
fn find_one(path: &Path, names: &[String], name: &str, what: &str) -> Result<usize> {
    let mut hits = names.iter().enumerate().filter(|(_, n)| *n == name);
    match (hits.next(), hits.next()) {
        (Some((i, _)), None) => Ok(i),
        (Some(_), Some(_)) => Err(Error::data(
            path,
            format!("column '{name}' ({what}) appears more than once in the header"),
        )),
        (None, _) => Err(Error::data(
            path,
            format!(
                "no column '{name}' ({what}) in the header; it has {}",
                header_list(names)
            ),
        )),
    }
}

/// Field indices of the label columns, in task-column order.
fn find_columns(
    path: &Path,
    names: &[String],
    label_names: &[String],
    tasks: &[TaskSpec],
    mapping: &Mapping,
) -> Result<Vec<usize>> {
    let mut out = vec![];
    let owners = tasks.iter().zip(&mapping.task_columns);
    for (t, cols) in owners {
        for c in cols {
            out.push(find_one(path, names, c, &format!("task '{}'", t.name))?);
        }
    }
    debug_assert_eq!(out.len(), label_names.len());
    Ok(out)
}

/// Whether `name` matches a pattern where `*` stands for any text.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    true
}

/// The input column names, in the order of the train header: those that
/// `inputs` names or matches, or every column no task uses.
fn input_columns(
    path: &Path,
    names: &[String],
    label_fields: &[usize],
    mapping: &Mapping,
) -> Result<Vec<String>> {
    let chosen: Vec<String> = match &mapping.inputs {
        None => names
            .iter()
            .enumerate()
            .filter(|(i, _)| !label_fields.contains(i))
            .map(|(_, n)| n.clone())
            .collect(),
        Some(patterns) => {
            for p in patterns {
                if !names.iter().any(|n| glob(p, n)) {
                    return Err(Error::data(
                        path,
                        format!(
                            "inputs: '{p}' (tasks.toml) matches no column; the header has {}",
                            header_list(names)
                        ),
                    ));
                }
            }
            names
                .iter()
                .filter(|n| patterns.iter().any(|p| glob(p, n)))
                .cloned()
                .collect()
        }
    };
    if chosen.is_empty() {
        return Err(Error::data(
            path,
            "no input columns: every column is a task's label",
        ));
    }
    Ok(chosen)
}

/// No column may be both an input and a label, or the label of two tasks.
fn check_distinct(path: &Path, names: &[String], inputs: &[usize], labels: &[usize]) -> Result<()> {
    let all: Vec<usize> = labels.iter().chain(inputs).copied().collect();
    for (k, f) in all.iter().enumerate() {
        if all[..k].contains(f) {
            return Err(Error::data(
                path,
                format!(
                    "column '{}' is used twice (as a label and an input, or by two tasks)",
                    names[*f]
                ),
            ));
        }
    }
    Ok(())
}

/// Streams `path` once: returns the header names, the sparse row index and
/// the number of rows. Blank lines are allowed only at the end.
fn scan(path: &Path) -> Result<(Vec<String>, Vec<u64>, usize)> {
    let mut file = open_file(path)?;
    let bad = |msg: String| Error::data(path, msg);
    let mut buf = vec![0u8; SCAN_CHUNK];
    let mut header: Vec<u8> = vec![];
    let mut in_header = true;
    let mut pos: u64 = 0; // file offset of buf[0]
    let mut line_start: u64 = 0;
    let mut line_no: u64 = 1;
    let mut prev: u8 = b'\n'; // the byte before the current position
    let mut blank_line: Option<u64> = None;
    let mut blocks: Vec<u64> = vec![];
    let mut n = 0usize;
    let mut data_end: u64 = 0;
    // Registers the line [line_start, end) ending at a newline (or EOF).
    let mut end_line = |line_start: u64,
                        end: u64,
                        last: u8,
                        line_no: u64,
                        blank_line: &mut Option<u64>,
                        next: u64|
     -> Result<()> {
        let len = end - line_start;
        if len == 0 || (len == 1 && last == b'\r') {
            blank_line.get_or_insert(line_no);
            return Ok(());
        }
        if let Some(b) = *blank_line {
            return Err(bad(format!(
                "line {b} is empty; blank lines are allowed only at the end of the file"
            )));
        }
        if n % BLOCK == 0 {
            blocks.push(line_start);
        }
        n += 1;
        data_end = next;
        Ok(())
    };
    loop {
        let got = read_some(&mut file, &mut buf).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        let chunk = &buf[..got];
        let mut from = 0usize;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            let end = pos + nl as u64;
            let last = if nl > 0 { chunk[nl - 1] } else { prev };
            if in_header {
                header.extend_from_slice(&chunk[from..nl]);
                in_header = false;
            } else {
                end_line(line_start, end, last, line_no, &mut blank_line, end + 1)?;
            }
            line_start = end + 1;
            line_no += 1;
            from = nl + 1;
        }
        if in_header {
            header.extend_from_slice(&chunk[from..]);
        }
        prev = chunk[got - 1];
        pos += got as u64;
    }
    if in_header && header.is_empty() {
        return Err(bad(
            "is empty: expected a header row naming the columns".into()
        ));
    }
    if !in_header && line_start < pos {
        end_line(line_start, pos, prev, line_no, &mut blank_line, pos)?;
    }
    if n == 0 {
        return Err(bad("has a header but no rows".into()));
    }
    blocks.push(data_end);
    let names = parse_header(&header).map_err(bad)?;
    Ok((names, blocks, n))
}

/// `read` that retries when interrupted.
fn read_some(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// The column names of a header line (UTF-8, optional BOM, quotes allowed).
fn parse_header(line: &[u8]) -> std::result::Result<Vec<String>, String> {
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| "line 1 (the header) is not UTF-8")?;
    let mut fields = vec![];
    let line = strip_cr(text.as_bytes());
    split_fields(line, &mut fields).map_err(|m| format!("line 1: {m}"))?;
    let names: Vec<String> = fields
        .iter()
        .map(|f| {
            let s = String::from_utf8_lossy(&line[f.start..f.end])
                .trim()
                .to_string();
            if f.quoted { s.replace("\"\"", "\"") } else { s }
        })
        .collect();
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(format!("line 1 (the header): column {} has no name", i + 1));
    }
    Ok(names)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One field of a row: the byte range of its text in the line (inside the
/// quotes if quoted).
#[derive(Clone, Copy)]
struct Field {
    start: usize,
    end: usize,
    quoted: bool,
}

/// Splits a line (without its newline) at commas, honouring double quotes
/// (`""` inside quotes is a literal quote). A newline inside quotes is not
/// supported: such a field is unterminated on its line.
fn split_fields(line: &[u8], out: &mut Vec<Field>) -> std::result::Result<(), String> {
    out.clear();
    let mut i = 0;
    loop {
        // Spaces before an opening quote are allowed.
        let lead = line[i..].iter().take_while(|b| **b == b' ').count();
        if line.get(i + lead) == Some(&b'"') {
            let start = i + lead + 1;
            let mut j = start;
            loop {
                match line[j..].iter().position(|b| *b == b'"') {
                    None => {
                        return Err(format!(
                            "field {} has an unterminated quote (newlines inside \
                             quoted fields are not supported)",
                            out.len() + 1
                        ));
                    }
                    Some(q) if line.get(j + q + 1) == Some(&b'"') => j += q + 2,
                    Some(q) => {
                        j += q;
                        break;
                    }
                }
            }
            out.push(Field {
                start,
                end: j,
                quoted: true,
            });
            let after = j + 1;
            let trail = line[after..].iter().take_while(|b| **b == b' ').count();
            match line.get(after + trail) {
                None => return Ok(()),
                Some(b',') => i = after + trail + 1,
                Some(_) => {
                    return Err(format!(
                        "field {} has text after its closing quote",
                        out.len()
                    ));
                }
            }
        } else {
            match line[i..].iter().position(|b| *b == b',') {
                Some(c) => {
                    out.push(Field {
                        start: i,
                        end: i + c,
                        quoted: false,
                    });
                    i += c + 1;
                }
                None => {
                    out.push(Field {
                        start: i,
                        end: line.len(),
                        quoted: false,
                    });
                    return Ok(());
                }
            }
        }
    }
}

/// A numeric cell: empty (or blank) is NaN; otherwise a decimal number,
/// `nan` or `inf` as Rust reads them.
fn parse_cell(bytes: &[u8]) -> Option<f32> {
    let s = std::str::from_utf8(bytes).ok()?.trim();
    if s.is_empty() {
        return Some(f32::NAN);
    }
    s.parse::<f32>().ok()
}

/// Whether a raw classify/binary label value means "missing".
fn is_missing(v: f32) -> bool {
    v == -1.0 || v.is_nan()
}

impl CsvSplit {
    /// Line number (1-based, the header is line 1) of row `i`.
    fn line(&self, i: usize) -> usize {
        i + 2
    }

    /// Reads the block holding row `i` into `buf`; returns the block's first row.
    fn read_block(&self, i: usize, buf: &mut Vec<u8>) -> Result<usize> {
        let b = i / BLOCK;
        let (lo, hi) = (self.blocks[b], self.blocks[b + 1]);
        buf.resize((hi - lo) as usize, 0);
        self.file
            .read_exact_at(buf, lo)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(b * BLOCK)
    }

    /// Calls `f(i, line)` for rows `lo..hi` in order, reading block by block.
    fn for_rows(
        &self,
        lo: usize,
        hi: usize,
        mut f: impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut buf = vec![];
        let mut i = lo;
        while i < hi {
            let first = self.read_block(i, &mut buf)?;
            for (k, line) in buf.split(|b| *b == b'\n').enumerate() {
                let row = first + k;
                if row >= hi || k >= BLOCK {
                    break;
                }
                if row >= i {
                    f(row, strip_cr(line))?;
                }
            }
            i = (first + BLOCK).min(hi);
        }
        Ok(())
    }

    /// Parses one row into `x` (inputs) and `labels` (raw label values:
    /// -1 and NaN are not yet turned into "missing").
    fn parse_row(
        &self,
        i: usize,
        line: &[u8],
        fields: &mut Vec<Field>,
        x: &mut [f32],
        labels: &mut [f32],
    ) -> Result<()> {
        let line_no = self.line(i);
        split_fields(line, fields).map_err(|m| self.err(format!("line {line_no}: {m}")))?;
        if fields.len() != self.names.len() {
            return Err(self.err(format!(
                "line {line_no} has {} fields, but the header has {}",
                fields.len(),
                self.names.len()
            )));
        }
        let targets = x.iter_mut().zip(&self.input_fields);
        let targets = targets.chain(labels.iter_mut().zip(&self.label_fields));
        for (out, &f) in targets {
            let text = &line[fields[f].start..fields[f].end];
            *out = parse_cell(text).ok_or_else(|| {
                let shown = String::from_utf8_lossy(text);
                self.at(i, f, format!("'{}' is not a number", shown.trim()))
            })?;
        }
        Ok(())
    }

    fn err(&self, msg: String) -> Error {
        Error::data(&self.path, msg)
    }

    /// An error at row `i`, field `f`: names the line, column and header name.
    fn at(&self, i: usize, f: usize, msg: String) -> Error {
        self.err(format!(
            "line {}, column {} ('{}'): {msg}",
            self.line(i),
            f + 1,
            self.names[f]
        ))
    }
}

impl Dataset for CsvDataset {
    fn describe(&self) -> String {
        format!("{} (csv)", self.dir.display())
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
                if !matches!(t.kind, TaskKind::Regress { .. }) && is_missing(lr[off]) {
                    lr[off] = f32::NAN;
                }
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
                if let Err((j, msg)) = check_label(t, vals) {
                    return Err(s.at(i, s.label_fields[off + j], msg));
                }
            }
            Ok(())
        })
    }
}

/// Checks the raw label values of one task in one row; on failure, the
/// offending label column (within the task) and the problem.
fn check_label(t: &TaskSpec, values: &[f32]) -> std::result::Result<(), (usize, String)> {
    let name = &t.name;
    match t.kind {
        TaskKind::Classify { classes } => {
            let v = values[0];
            let in_range = v >= 0.0 && v < classes as f32 && v.fract() == 0.0;
            if !(in_range || is_missing(v)) {
                return Err((
                    0,
                    format!(
                        "label {v} out of range for task '{name}' with {classes} classes \
                         (integers 0..{}; empty or -1 for missing)",
                        classes - 1
                    ),
                ));
            }
        }
        TaskKind::Binary => {
            let v = values[0];
            if !(v == 0.0 || v == 1.0 || is_missing(v)) {
                return Err((
                    0,
                    format!(
                        "label {v} of binary task '{name}' is not 0 or 1 (empty or -1 for missing)"
                    ),
                ));
            }
        }
        TaskKind::Regress { .. } => {
            if let Some(j) = values.iter().position(|v| v.is_infinite()) {
                return Err((
                    j,
                    format!(
                        "infinite label {} of regress task '{name}' (empty or NaN for missing)",
                        values[j]
                    ),
                ));
            }
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dir::{DirDataset, write_dataset_dir};
    use crate::data::synthetic::Synthetic;

    use crate::data::test_util::{TempDir, err, fill, same};

    #[test]
    fn synthetic_roundtrip_equals_npy() {
        let tmp = TempDir::new("csv-roundtrip");
        let syn = Synthetic::new(3, 1000, 77);
        let (c, d) = (tmp.0.join("csv"), tmp.0.join("npy"));
        write_dataset_csv(&syn, &c).unwrap();
        write_dataset_dir(&syn, &d).unwrap();
        assert!(is_csv_dir(&c) && !is_csv_dir(&d));
        let csv = CsvDataset::open(&c).unwrap();
        let npy = DirDataset::open(&d).unwrap();
        assert_eq!(csv.tasks(), syn.tasks());
        assert_eq!(csv.input_dim(), syn.input_dim());
        for split in [Split::Train, Split::Val] {
            let n = syn.len(split) as u64;
            assert_eq!(csv.len(split) as u64, n);
            csv.validate_rows(split, 0, n as usize).unwrap();
            csv.validate_rows(split, 5, 70).unwrap();
            let idx: Vec<u64> = (0..n).rev().step_by(3).chain([0, n - 1, 31, 32]).collect();
            let (x1, l1) = fill(&npy, split, &idx);
            let (x2, l2) = fill(&csv, split, &idx);
            assert!(same(&x1, &x2) && same(&l1, &l2), "{split:?}");
            assert!(l2.iter().any(|v| v.is_nan()));
        }
        let msg = err(write_dataset_csv(&syn, &c));
        assert!(msg.contains("not empty"), "{msg}");
    }

    const TOML: &str = "[[task]]\nname = \"shape\"\nkind = \"classify\"\nclasses = 3\n\n\
                        [[task]]\nname = \"size\"\nkind = \"regress\"\ndim = 2\n\
                        columns = [\"w\", \"h\"]\n\n\
                        [[task]]\nname = \"flag\"\nkind = \"binary\"\ncolumns = \"ok\"\n";

    /// A small hand-written dataset directory with these train rows.
    fn handmade(tag: &str, toml: &str, train: &str) -> TempDir {
        let tmp = TempDir::new(tag);
        std::fs::write(tmp.0.join(TASKS_FILE), toml).unwrap();
        std::fs::write(tmp.0.join("train.csv"), train).unwrap();
        std::fs::write(
            tmp.0.join("val.csv"),
            "ok,h,w,shape,b,a\n1,2,3,0,5,6\n0,,,,7,8\n",
        )
        .unwrap();
        tmp
    }

    const TRAIN: &str = "\u{feff}a,\"b\",shape,w,h,ok\r\n\
                         1.5,-2,2,0.25,,1\r\n\
                         \"3\", 4 ,,NaN,1e3,-1\r\n\
                         5,6,-1,1,2,0\r\n\
                         \r\n";

    #[test]
    fn maps_header_names_quotes_crlf_and_missing() {
        let tmp = handmade("map", TOML, TRAIN);
        let ds = CsvDataset::open(&tmp.0).unwrap();
        assert_eq!(
            (ds.input_dim(), ds.len(Split::Train), ds.len(Split::Val)),
            (2, 3, 2)
        );
        ds.validate_rows(Split::Train, 0, 3).unwrap();
        ds.validate_rows(Split::Val, 0, 2).unwrap();
        let (x, l) = fill(&ds, Split::Train, &[1, 0, 2]);
        assert_eq!(x, [3.0, 4.0, 1.5, -2.0, 5.0, 6.0]);
        let n = f32::NAN;
        assert!(same(
            &l,
            &[n, n, 1000.0, n, 2.0, 0.25, n, 1.0, n, 1.0, 2.0, 0.0]
        ));
        // val.csv has its columns in another order.
        let (x, l) = fill(&ds, Split::Val, &[0, 1]);
        assert_eq!(x, [6.0, 5.0, 8.0, 7.0]);
        assert!(same(&l, &[0.0, 3.0, 2.0, 1.0, n, n, n, 0.0]));
    }

    #[test]
    fn inputs_patterns_and_many_rows() {
        let mut text = String::from("id,x1,x2,y,shape,w,h,ok,x10\n");
        for i in 0..100 {
            text += &format!("{i},{i},{},0,{},1,1,1,7\n", i * 2, i % 3);
        }
        let toml = format!("inputs = [\"x*\"]\n{TOML}");
        let tmp = handmade("glob", &toml, &text);
        std::fs::write(tmp.0.join("val.csv"), &text).unwrap();
        let ds = CsvDataset::open(&tmp.0).unwrap();
        assert_eq!(ds.input_dim(), 3);
        ds.validate_rows(Split::Train, 0, 100).unwrap();
        ds.validate_rows(Split::Train, 33, 64).unwrap();
        let (x, l) = fill(&ds, Split::Train, &[99, 31, 32, 64]);
        assert_eq!(
            x,
            [
                99.0, 198.0, 7.0, 31.0, 62.0, 7.0, 32.0, 64.0, 7.0, 64.0, 128.0, 7.0
            ]
        );
        assert_eq!(l[0], 0.0);
        assert!(glob("x*", "x1") && glob("*_in", "a_in") && glob("a*b*c", "aXbYc"));
        assert!(!glob("x*", "y1") && !glob("a*b*c", "acb") && !glob("ab*ba", "aba"));
    }

    #[test]
    fn bad_values_name_line_and_column() {
        let cases = [
            (
                "a,b,shape,w,h,ok\n1,2,0,0,0,0\n1,x,0,0,0,0\n",
                "line 3, column 2 ('b'): 'x' is not a number",
            ),
            (
                "a,b,shape,w,h,ok\n1,2,0,0,0,0\n1,2,0,0,0\n",
                "line 3 has 5 fields, but the header has 6",
            ),
            (
                "a,b,shape,w,h,ok\n1,,0,0,0,0\n",
                "line 2, column 2 ('b'): missing input",
            ),
            ("a,b,shape,w,h,ok\n1,inf,0,0,0,0\n", "non-finite input inf"),
            (
                "a,b,shape,w,h,ok\n1,2,3,0,0,0\n",
                "line 2, column 3 ('shape'): label 3 out of range for task 'shape' with 3 classes",
            ),
            (
                "a,b,shape,w,h,ok\n1,2,0.5,0,0,0\n",
                "label 0.5 out of range",
            ),
            (
                "a,b,shape,w,h,ok\n1,2,0,0,0,2\n",
                "column 6 ('ok'): label 2 of binary task 'flag' is not 0 or 1",
            ),
            (
                "a,b,shape,w,h,ok\n1,2,0,0,-inf,0\n",
                "column 5 ('h'): infinite label -inf",
            ),
            (
                "a,b,shape,w,h,ok\n1,\"2,0,0,0,0\n",
                "line 2: field 2 has an unterminated quote",
            ),
            (
                "a,b,shape,w,h,ok\n1,\"2\"x,0,0,0,0\n",
                "field 2 has text after its closing quote",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let tmp = handmade(&format!("bad{i}"), TOML, text);
            let ds = CsvDataset::open(&tmp.0).unwrap();
            let n = ds.len(Split::Train);
            let msg = err(ds.validate_rows(Split::Train, 0, n));
            assert!(
                msg.contains(want) && msg.contains("train.csv"),
                "{text:?}: {msg}"
            );
        }
        // A rank whose slice holds no bad row passes.
        let tmp = handmade("slice", TOML, cases[0].0);
        let ds = CsvDataset::open(&tmp.0).unwrap();
        ds.validate_rows(Split::Train, 0, 1).unwrap();
        assert!(err(ds.validate_rows(Split::Train, 1, 2)).contains("line 3"));
    }

    #[test]
    fn mapping_and_file_errors() {
        let ok = "a,b,shape,w,h,ok\n1,2,0,0,0,0\n";
        let cases: [(&str, &str, &str); 9] = [
            (
                TOML,
                "a,b,w,h,ok\n1,2,0,0,0\n",
                "no column 'shape' (task 'shape') in the header; it has 'a', 'b', 'w', 'h', 'ok'",
            ),
            (
                TOML,
                "a,a,shape,w,h,ok\n1,2,0,0,0,0\n",
                "column 'a' (input) appears more than once",
            ),
            (
                TOML,
                "a,shape,shape,w,h,ok\n1,2,0,0,0,0\n",
                "column 'shape' (task 'shape') appears more than once",
            ),
            (
                &format!("inputs = [\"z*\"]\n{TOML}"),
                ok,
                "inputs: 'z*' (tasks.toml) matches no column",
            ),
            (
                &format!("inputs = [\"a\", \"w\"]\n{TOML}"),
                ok,
                "column 'w' is used twice",
            ),
            (
                &TOML.replace("[\"w\", \"h\"]", "[\"w\"]"),
                ok,
                "task 'size' (regress with 2 label column(s)) lists 1 column(s)",
            ),
            (
                &TOML.replace("columns = \"ok\"", "columns = 3"),
                ok,
                "task 3: columns: expected",
            ),
            (
                &TOML.replace("columns = \"ok\"", "colums = \"ok\""),
                ok,
                "unknown key 'colums'",
            ),
            (TOML, "", "is empty"),
        ];
        for (i, (toml, train, want)) in cases.iter().enumerate() {
            let tmp = handmade(&format!("map{i}"), toml, train);
            let msg = err(CsvDataset::open(&tmp.0));
            assert!(msg.contains(want), "case {i}: {msg}");
        }
        let tmp = handmade("rows", TOML, "a,b,shape,w,h,ok\n\n");
        assert!(err(CsvDataset::open(&tmp.0)).contains("has a header but no rows"));
        let tmp = handmade(
            "blank",
            TOML,
            "a,b,shape,w,h,ok\n1,2,0,0,0,0\n\n1,2,0,0,0,0\n",
        );
        assert!(err(CsvDataset::open(&tmp.0)).contains("line 3 is empty"));
        // val.csv must carry the same columns.
        let tmp = handmade("val", TOML, ok);
        std::fs::write(tmp.0.join("val.csv"), "a,shape,w,h,ok\n1,0,0,0,0\n").unwrap();
        let msg = err(CsvDataset::open(&tmp.0));
        assert!(
            msg.contains("val.csv") && msg.contains("no column 'b' (input)"),
            "{msg}"
        );
        std::fs::remove_file(tmp.0.join("val.csv")).unwrap();
        assert!(err(CsvDataset::open(&tmp.0)).contains("val.csv"));
    }

    #[test]
    fn last_row_without_newline() {
        let tmp = handmade("eof", TOML, "a,b,shape,w,h,ok\n1,2,0,0,0,0\n3,4,1,1,1,1");
        let ds = CsvDataset::open(&tmp.0).unwrap();
        assert_eq!(ds.len(Split::Train), 2);
        ds.validate_rows(Split::Train, 0, 2).unwrap();
        let (x, _) = fill(&ds, Split::Train, &[1]);
        assert_eq!(x, [3.0, 4.0]);
    }
}
