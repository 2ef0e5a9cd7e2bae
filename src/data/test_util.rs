//! Helpers of the data modules' unit tests.

use super::{Dataset, Split};
use crate::error::Result;

pub use tempfile::TempDir;

/// A fresh, empty directory under the system temp dir, removed on drop.
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ringtrain-{tag}-"))
        .tempdir()
        .unwrap()
}

/// The inputs and labels of rows `idx` of `split`.
pub fn fill(ds: &dyn Dataset, split: Split, idx: &[u64]) -> (Vec<f32>, Vec<f32>) {
    let mut x = vec![0.0; idx.len() * ds.input_dim()];
    let mut l = vec![0.0; idx.len() * super::columns(ds).label_cols];
    ds.fill(split, idx, &mut x, &mut l).unwrap();
    (x, l)
}

/// Equal bit for bit, any NaN equal to any NaN.
pub fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits())
}

/// The error's message, or "" for Ok.
pub fn err(r: Result<impl Sized>) -> String {
    match r {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}
