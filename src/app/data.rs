//! `ringtrain data synth`: the embedded dataset as a dataset directory.

use std::path::Path;

use crate::comm::{Communicator, agree};
use crate::data::dir::write_dataset_dir;
use crate::data::synthetic::Synthetic;
use crate::error::{Error, Result};

pub fn synth(
    comm: &dyn Communicator,
    out: &Path,
    seed: u64,
    train: usize,
    val: usize,
) -> Result<()> {
    let result = if comm.rank() == 0 {
        if train == 0 || val == 0 {
            Err(Error::config("--train and --val must be at least 1"))
        } else {
            write_dataset_dir(&Synthetic::new(seed, train, val), out).map(|()| {
                println!(
                    "wrote synthetic dataset (seed {seed}, {train} train + {val} val samples) to {}",
                    out.display()
                );
            })
        }
    } else {
        Ok(())
    };
    agree(comm, result)
}
