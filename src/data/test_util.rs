//! Helpers of the data modules' unit tests.

use std::path::PathBuf;

use super::{Dataset, Split};
use crate::error::Result;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, existing, empty directory.
    pub fn new(tag: &str) -> Self {
        let t = Self::unmade(tag);
        std::fs::create_dir_all(&t.0).unwrap();
        t
    }

    /// A fresh path that does not exist yet.
    pub fn unmade(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringtrain-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
