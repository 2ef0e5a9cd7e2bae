//! `ringtrain data synth`: the embedded dataset as a dataset directory
//! (.npy or CSV files).

use std::path::Path;

use crate::cli::DataFormat;
use crate::comm::{Communicator, agree};
use crate::data::csv::write_dataset_csv;
use crate::data::dir::write_dataset_dir;
use crate::data::synthetic::Synthetic;
use crate::error::{Error, Result};

pub fn synth(
    comm: &dyn Communicator,
    out: &Path,
    format: DataFormat,
    seed: u64,
    train: usize,
    val: usize,
) -> Result<()> {
    let result = if comm.rank() == 0 {
        if train == 0 || val == 0 {
            Err(Error::config("--train and --val must be at least 1"))
        } else {
            let syn = Synthetic::new(seed, train, val);
            match format {
                DataFormat::Npy => write_dataset_dir(&syn, out),
                DataFormat::Csv => write_dataset_csv(&syn, out),
            }
            .map(|()| {
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
