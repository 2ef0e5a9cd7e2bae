//! `bench allreduce`'s flags, checked and agreed on by every rank: the
//! row sizes, the element type, the reduction, the communicator.

use crate::cli::{BenchAllreduceArgs, Datatype, ReduceOp};
use crate::comm::{CommKind, Wire};
use crate::error::{Error, Result};

impl Datatype {
    pub(super) fn name(self) -> &'static str {
        match self {
            Datatype::Float => "float",
            Datatype::Bfloat16 => "bfloat16",
        }
    }
    pub(super) fn bytes(self) -> usize {
        match self {
            Datatype::Float => 4,
            Datatype::Bfloat16 => 2,
        }
    }
}

impl ReduceOp {
    pub(super) fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Avg => "avg",
        }
    }
}

pub(super) struct Options {
    /// Row sizes in bytes, as asked (a row's count is size / element size).
    pub(super) sizes: Vec<usize>,
    pub(super) min_bytes: usize,
    pub(super) max_bytes: usize,
    pub(super) step: u64,
    pub(super) dtype: Datatype,
    pub(super) op: ReduceOp,
    pub(super) iters: usize,
    pub(super) warmup: usize,
    pub(super) check: bool,
    /// Mpi, Ring or Nccl (auto resolved).
    pub(super) kind: CommKind,
    pub(super) wire: Wire,
    pub(super) json: bool,
    /// `-J FILE`: the JSON object also goes there.
    pub(super) output_file: Option<std::path::PathBuf>,
    /// `-a`: the time reported.
    pub(super) average: super::timing::Average,
    /// Notes on nccl-tests flags that do not apply here (`-g`, `-t`).
    pub(super) notes: Vec<String>,
    pub(super) corrupt: bool,
    /// `--vs-mpi`: MPI_Allreduce timed after each row, in the same run.
    pub(super) vs_mpi: bool,
}

impl Options {
    pub(super) fn from_args(a: &BenchAllreduceArgs, n: usize) -> Result<Options> {
        let min_bytes = parse_size("-b/--minbytes", &a.min_bytes)?;
        let max_bytes = parse_size("-e/--maxbytes", &a.max_bytes)?;
        if min_bytes > max_bytes {
            return Err(Error::config(format!(
                "-b/--minbytes {} is larger than -e/--maxbytes {}",
                a.min_bytes, a.max_bytes
            )));
        }
        if a.step_factor < 2 {
            return Err(Error::config(format!(
                "-f/--stepfactor {}: must be at least 2",
                a.step_factor
            )));
        }
        let (dtype, op) = (a.dtype, a.op);
        if a.iters == 0 {
            return Err(Error::config("-n/--iters must be at least 1"));
        }
        if a.check > 1 {
            return Err(Error::config(format!(
                "-c/--check {}: expected 0 or 1",
                a.check
            )));
        }
        let kind = match a.comm {
            CommKind::Mpi => CommKind::Mpi,
            CommKind::Ring | CommKind::Auto => CommKind::Ring,
            CommKind::Nccl => CommKind::Nccl,
        };
        if a.wire == Wire::Bf16 && kind == CommKind::Nccl {
            return Err(Error::config(
                "--wire bf16 is the ring's; with --comm nccl use -d bfloat16",
            ));
        }
        if a.wire == Wire::Bf16 && kind == CommKind::Mpi {
            return Err(Error::config(
                "--wire bf16 needs --comm ring (or auto): MPI_Allreduce carries f32",
            ));
        }
        if a.wire == Wire::Bf16 && dtype == Datatype::Bfloat16 {
            return Err(Error::config(
                "--wire bf16 applies to -d float; bfloat16 data always travels as bf16",
            ));
        }
        if a.vs_mpi && kind != CommKind::Ring {
            return Err(Error::config(
                "--vs-mpi times MPI_Allreduce beside the ring: it needs --comm ring (or auto)",
            ));
        }
        if n > 256 && a.check == 1 {
            return Err(Error::config(format!(
                "-c 1 checks exact integer sums up to 256, which needs at most 256 ranks (not {n}); use -c 0"
            )));
        }
        let mut sizes = vec![];
        let mut s = min_bytes;
        while s <= max_bytes {
            sizes.push(s);
            match s.max(1).checked_mul(a.step_factor as usize) {
                Some(next) => s = next,
                None => break,
            }
        }
        Ok(Options {
            sizes,
            min_bytes,
            max_bytes,
            step: a.step_factor,
            dtype,
            op,
            iters: a.iters as usize,
            warmup: a.warmup as usize,
            check: a.check == 1,
            kind,
            wire: a.wire,
            json: a.json,
            output_file: a.output_file.clone(),
            average: super::timing::Average::from_code(a.average),
            notes: nccl_tests_notes(a),
            corrupt: a.corrupt,
            vs_mpi: a.vs_mpi,
        })
    }

    /// Bytes per element on the wire.
    pub(super) fn wire_bytes(&self) -> usize {
        match (self.dtype, self.wire) {
            (Datatype::Float, Wire::F32) => 4,
            _ => 2,
        }
    }

    pub(super) fn wire_name(&self) -> &'static str {
        if self.wire_bytes() == 2 {
            "bf16"
        } else {
            "f32"
        }
    }
}

/// What `-g` and `-t` (nccl-tests' GPUs and threads per process) do here:
/// nothing, said once.
fn nccl_tests_notes(a: &BenchAllreduceArgs) -> Vec<String> {
    let mut notes = vec![];
    if let Some(g) = a.ngpus.filter(|&g| g != 1) {
        notes.push(format!(
            "-g {g} ignored: every rank drives one device; start {g} times the ranks instead"
        ));
    }
    if let Some(t) = a.nthreads.filter(|&t| t != 1) {
        notes.push(format!(
            "-t {t} ignored: one thread per rank; start {t} times the ranks instead"
        ));
    }
    notes
}

/// Bytes with an optional K, M or G suffix (powers of 1024, as nccl-tests).
fn parse_size(flag: &str, text: &str) -> Result<usize> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1usize << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|v| v.checked_mul(unit))
        .ok_or_else(|| {
            Error::config(format!(
                "{flag} {text}: expected a size in bytes with an optional K, M or G suffix"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_nccl_tests() {
        assert_eq!(parse_size("b", "8").unwrap(), 8);
        assert_eq!(parse_size("b", "1K").unwrap(), 1024);
        assert_eq!(parse_size("b", "32M").unwrap(), 32 << 20);
        assert_eq!(parse_size("b", "2g").unwrap(), 2 << 30);
        for bad in ["", "1X", "M", "-1", "1.5M", "99999999999999999999G"] {
            assert!(parse_size("b", bad).is_err(), "{bad}");
        }
    }
}
