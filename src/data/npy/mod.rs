//! NumPy `.npy` files: memory-mapped reading (a rank only touches the pages
//! of the rows it reads) and atomic writing.
//!
//! Format: magic `\x93NUMPY`, version bytes, header length (u16 for 1.0,
//! u32 for 2.0/3.0), then a Python dict literal with `descr`,
//! `fortran_order` and `shape`, then the raw C-order data.//!
//! `header.rs` parses and writes the header; this file maps the data and
//! reads rows, and writes whole arrays.

mod header;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
use header::encode_header;
pub use header::{Dtype, Header, parse_header};

/// A memory-mapped, C-order `.npy` array read row by row.
#[derive(Debug)]
pub struct NpyArray {
    path: PathBuf,
    dtype: Dtype,
    shape: Vec<usize>,
    mmap: Mmap,
    data_offset: usize,
}

impl NpyArray {
    /// Maps the file and checks its header and size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < 10 {
            return Err(Error::data(&path, "file too short to be a .npy file"));
        }
        // SAFETY: the map is read-only; as with any mmap, another process
        // truncating or rewriting the file while we run is not guarded
        // against (the writer in this module replaces files by rename,
        // which leaves existing maps intact).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let header = parse_header(&mmap).map_err(|m| Error::data(&path, m))?;
        if header.shape.is_empty() {
            return Err(Error::data(
                &path,
                "holds a scalar (shape ()); expected an array with one row per sample",
            ));
        }
        check_size(&header, mmap.len()).map_err(|m| Error::data(&path, m))?;
        Ok(NpyArray {
            path,
            dtype: header.dtype,
            shape: header.shape,
            mmap,
            data_offset: header.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of rows (`shape[0]`).
    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    /// Elements per row: the product of `shape[1..]` (1 for 1-D arrays).
    pub fn row_width(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Reads row `i` into `out` (length `row_width()`), converting to f32.
    pub fn read_row_f32(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let w = self.row_width();
        if i >= self.rows() || out.len() != w {
            return Err(Error::data(
                &self.path,
                format!(
                    "read of row {i} into {} values, but the array has {} rows of {w}",
                    out.len(),
                    self.rows()
                ),
            ));
        }
        // In bounds: the size check at open covers rows() * w elements.
        let size = self.dtype.size();
        let start = self.data_offset + i * w * size;
        let src = &self.mmap[start..start + w * size];
        convert_to_f32(self.dtype, src, out);
        Ok(())
    }
}

/// Checks that the file holds exactly the data the header promises.
fn check_size(h: &Header, file_len: usize) -> std::result::Result<(), String> {
    let data_len = h
        .shape
        .iter()
        .try_fold(h.dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or("shape too large")?;
    let expected = h.data_offset as u128 + data_len as u128;
    let found = file_len as u128;
    if found < expected {
        Err(format!(
            "truncated: shape {:?} of {} needs {expected} bytes, file has {found}",
            h.shape,
            h.dtype.name()
        ))
    } else if found > expected {
        Err(format!(
            "{} bytes beyond the data for shape {:?} of {}",
            found - expected,
            h.shape,
            h.dtype.name()
        ))
    } else {
        Ok(())
    }
}

/// Decodes `N`-byte little-endian elements at any alignment.
fn decode<const N: usize>(src: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(N)) {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        *o = f(b);
    }
}

fn convert_to_f32(dtype: Dtype, src: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => decode(src, out, f32::from_le_bytes),
        Dtype::F64 => decode(src, out, |b| f64::from_le_bytes(b) as f32),
        Dtype::I8 => decode(src, out, |b| i8::from_le_bytes(b) as f32),
        Dtype::I16 => decode(src, out, |b| i16::from_le_bytes(b) as f32),
        Dtype::I32 => decode(src, out, |b| i32::from_le_bytes(b) as f32),
        Dtype::I64 => decode(src, out, |b| i64::from_le_bytes(b) as f32),
        Dtype::U8 => decode(src, out, |b| u8::from_le_bytes(b) as f32),
        Dtype::U16 => decode(src, out, |b| u16::from_le_bytes(b) as f32),
        Dtype::U32 => decode(src, out, |b| u32::from_le_bytes(b) as f32),
        Dtype::U64 => decode(src, out, |b| u64::from_le_bytes(b) as f32),
        Dtype::Bool => decode(src, out, |b: [u8; 1]| f32::from(b[0] != 0)),
    }
}

/// Writes a float32 array.
pub fn write_f32(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    write_array(path.as_ref(), Dtype::F32, shape, data.len(), |w| {
        data.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
    })
}

/// Writes an int64 array.
pub fn write_i64(path: impl AsRef<Path>, shape: &[usize], data: &[i64]) -> Result<()> {
    write_array(path.as_ref(), Dtype::I64, shape, data.len(), |w| {
        data.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
    })
}

/// Writes header and data to a temporary file beside `path`, then renames
/// it over `path`, so readers never see a half-written array.
fn write_array(
    path: &Path,
    dtype: Dtype,
    shape: &[usize],
    len: usize,
    body: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(len) {
        return Err(Error::data(
            path,
            format!("cannot write {len} values as shape {shape:?}"),
        ));
    }
    let header = encode_header(dtype, shape);
    crate::fsutil::write_atomic_with(path, crate::fsutil::Access::Shared, |w| {
        w.write_all(&header)?;
        body(w)
    })
}
