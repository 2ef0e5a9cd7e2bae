//! `--resume auto`: the newest checkpoint of a directory that verifies.
//!
//! A crash during preemption can leave the newest checkpoint damaged (a
//! file truncated or flipped on its way to disk after COMPLETE was
//! written). Damage is what the checksums find; such a checkpoint is
//! skipped, with a warning naming it, and the next older one is tried.
//! Anything else (another model, another optimizer) is the same for every
//! checkpoint of the directory and is an error at once.

use std::path::{Path, PathBuf};

use super::{Loaded, interpret, list_complete, read_verified};
use crate::config::OptimizerKind;
use crate::error::{Error, Result};
use crate::model::layout::ParamLayout;
use crate::spec::ModelSpec;

/// A checkpoint passed over, and why.
#[derive(Debug)]
pub struct Damaged {
    pub path: PathBuf,
    pub error: Error,
}

/// The newest complete checkpoint in `dir` whose checksums verify, loaded
/// for this model, with the newer ones passed over as damaged (newest
/// first). None when `dir` holds no complete checkpoint. When none of them
/// verifies, the error is the newest one's, followed by how many older ones
/// failed too: a fresh start would silently throw the run away.
pub fn load_newest(
    dir: &Path,
    spec: &ModelSpec,
    layout: &ParamLayout,
    opt: OptimizerKind,
) -> Result<Option<(PathBuf, Loaded, Vec<Damaged>)>> {
    let mut damaged = vec![];
    for (_, path) in list_complete(dir)?.into_iter().rev() {
        match read_verified(&path) {
            Ok((m, files)) => {
                let loaded = interpret(&path, m, files, spec, layout, opt)?;
                return Ok(Some((path, loaded, damaged)));
            }
            Err(error) => damaged.push(Damaged { path, error }),
        }
    }
    let mut rest = damaged.into_iter();
    match rest.next() {
        None => Ok(None),
        Some(newest) if rest.len() == 0 => Err(newest.error),
        Some(newest) => {
            let older = format!(
                "the {} older checkpoint(s) here do not verify either",
                rest.len()
            );
            Err(match newest.error {
                Error::Checkpoint { path, msg } => {
                    Error::checkpoint(path, format!("{msg}; {older}"))
                }
                e => e,
            })
        }
    }
}
