//! The sparse row index of a CSV file (the byte offset of every
//! [`BLOCK`]-th row, built by streaming the file once) and reading rows
//! back by it with positioned reads.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::lex::{Field, parse_cell, parse_header, split_fields, strip_cr};
use super::{BLOCK, MAX_LINE, open_file};
use crate::error::{Error, Result};

/// Read size while indexing a file.
const SCAN_CHUNK: usize = 1 << 20;

/// One split: its file, the row index and where each value sits in a row.
#[derive(Debug)]
pub(super) struct CsvSplit {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) n: usize,
    /// Byte offset of rows 0, BLOCK, 2*BLOCK, ..., then the end of the rows.
    pub(super) blocks: Vec<u64>,
    /// Header names (for messages), in file order.
    pub(super) names: Vec<String>,
    /// Field index of each input, in input order.
    pub(super) input_fields: Vec<usize>,
    /// Field index of each label column, in [`TaskColumns`] order.
    pub(super) label_fields: Vec<usize>,
}

/// Streams `path` once: returns the header names, the sparse row index and
/// the number of rows. Blank lines are allowed only at the end.
pub(super) fn scan(path: &Path) -> Result<(Vec<String>, Vec<u64>, usize)> {
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
    let too_long = |line_no: u64| {
        bad(format!(
            "line {line_no} is longer than {} MiB (the longest line a CSV file may have)",
            MAX_LINE >> 20
        ))
    };
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
            // A file of very many short rows must end in a message, not
            // an aborted allocation (the index is 8 bytes per BLOCK rows).
            blocks.try_reserve(1).map_err(|_| {
                bad(format!(
                    "has more rows than this machine can index ({n} read so far)"
                ))
            })?;
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
            if end - line_start > MAX_LINE as u64 {
                return Err(too_long(line_no));
            }
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
        // A line without its newline yet: bounded before it is kept or
        // read further (a file of NUL bytes has no newline at all).
        if pos + got as u64 - line_start > MAX_LINE as u64 {
            return Err(too_long(line_no));
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

impl CsvSplit {
    /// Bytes this split holds (its index) and may allocate at once (the
    /// buffer of its longest block), for the memory estimate.
    pub(super) fn resident_bytes(&self) -> u64 {
        let longest = self.blocks.windows(2).map(|w| w[1] - w[0]).max();
        8 * self.blocks.len() as u64 + longest.unwrap_or(0)
    }

    /// Line number (1-based, the header is line 1) of row `i`.
    pub(super) fn line(&self, i: usize) -> usize {
        i + 2
    }

    /// Reads the block holding row `i` into `buf`; returns the block's first row.
    pub(super) fn read_block(&self, i: usize, buf: &mut Vec<u8>) -> Result<usize> {
        let b = i / BLOCK;
        let (lo, hi) = (self.blocks[b], self.blocks[b + 1]);
        buf.resize((hi - lo) as usize, 0);
        self.file
            .read_exact_at(buf, lo)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(b * BLOCK)
    }

    /// Calls `f(i, line)` for rows `lo..hi` in order, reading block by block.
    pub(super) fn for_rows(
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
    pub(super) fn parse_row(
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

    pub(super) fn err(&self, msg: String) -> Error {
        Error::data(&self.path, msg)
    }

    /// An error at row `i`, field `f`: names the line, column and header name.
    pub(super) fn at(&self, i: usize, f: usize, msg: String) -> Error {
        self.err(format!(
            "line {}, column {} ('{}'): {msg}",
            self.line(i),
            f + 1,
            self.names[f]
        ))
    }
}
