//! `ringtrain bench allreduce`: nccl-tests' `all_reduce_perf` for this
//! program's communicators: the same flags, the same table, plus the ring's
//! α–β model measured in the same run (docs/allreduce.md).
//!
//! For each size, out-of-place (`all_reduce_sum_into`: a separate output
//! buffer, the input left untouched, like `ncclAllReduce(sendbuff,
//! recvbuff, ..)`) and then in-place: `-w` warm-up iterations, then `-n`
//! timed ones back to back after a barrier; a row's time is each rank's
//! mean, the maximum over ranks. With `-c 1` one more run on fresh inputs
//! is checked element by element against the exact result (out of place:
//! into an output poisoned with NaN, and the input must be unchanged).
//!
//! Inputs are small integers, rank r element i = 1 + h(r, i) mod ⌊256/n⌋
//! (h a hash): every partial sum is an integer ≤ 256, exact in f32 and in
//! bf16, so a sum must match exactly whatever the order of additions, and
//! an average within the rounding of one scaling.
//!
//! `--comm nccl` runs the same rows on device buffers (`nccl.rs` here):
//! ncclAllReduce in place and out of place, timed with CUDA events.

mod bounds;
mod nccl;

use std::time::Instant;

use half::bf16;
use serde_json::json;

use crate::cli::BenchAllreduceArgs;
use crate::comm::{CommKind, Communicator, Wire, agree};
use crate::error::{Error, Result};
use crate::world::World;

pub fn run(a: &BenchAllreduceArgs, world: &World, ctl: &dyn Communicator) -> Result<()> {
    let n = world.size;
    let opts = agree(ctl, Options::from_args(a, n))?;
    if opts.kind == CommKind::Nccl {
        return nccl::run(&opts, world, ctl);
    }
    let comm = crate::comm::create(n, opts.kind, opts.wire);
    let model = alpha_beta(&opts, n, ctl)?;
    let mut rows = Vec::with_capacity(opts.sizes.len());
    for &bytes in &opts.sizes {
        let count = bytes / opts.dtype.bytes();
        rows.push(match opts.dtype {
            Dtype::Float => measure::<f32>(&opts, count, &*comm, ctl)?,
            Dtype::Bfloat16 => measure::<bf16>(&opts, count, &*comm, ctl)?,
        });
    }
    report(&opts, world, ctl, comm.name(), None, model, &rows)
}

/// Prints the table (or JSON) on rank 0; an error on every rank when an
/// element was wrong.
fn report(
    opts: &Options,
    world: &World,
    ctl: &dyn Communicator,
    comm: &'static str,
    nccl: Option<String>,
    model: Option<Model>,
    rows: &[Row],
) -> Result<()> {
    let n = world.size;
    let wrong: u64 = rows
        .iter()
        .flat_map(|r| [r.out_of_place.wrong, r.in_place.wrong])
        .map(|w| w.unwrap_or(0))
        .sum();
    let hosts = ranks_and_hosts(world, ctl)?;
    if world.is_root() {
        let report = Report {
            opts,
            n,
            comm,
            library: world.mpi_library.as_deref().unwrap_or("none"),
            nccl,
            hosts: &hosts,
            model,
            rows,
            wrong,
        };
        if opts.json {
            println!("{}", report.json());
        } else {
            report.print_table();
        }
    }
    match (wrong, world.is_root()) {
        (0, _) => Ok(()),
        (_, true) => Err(Error::Comm(format!("{wrong} wrong elements"))),
        (_, false) => Err(Error::OtherRank(0)),
    }
}

// ---------------------------------------------------------------------------
// Options.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    Float,
    Bfloat16,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::Float => "float",
            Dtype::Bfloat16 => "bfloat16",
        }
    }
    fn bytes(self) -> usize {
        match self {
            Dtype::Float => 4,
            Dtype::Bfloat16 => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Sum,
    Avg,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Sum => "sum",
            Op::Avg => "avg",
        }
    }
}

struct Options {
    /// Row sizes in bytes, as asked (a row's count is size / element size).
    sizes: Vec<usize>,
    min_bytes: usize,
    max_bytes: usize,
    step: u64,
    dtype: Dtype,
    op: Op,
    iters: usize,
    warmup: usize,
    check: bool,
    /// Mpi, Ring or Nccl (auto resolved).
    kind: CommKind,
    wire: Wire,
    json: bool,
    corrupt: bool,
}

impl Options {
    fn from_args(a: &BenchAllreduceArgs, n: usize) -> Result<Options> {
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
        let dtype = match a.dtype.as_str() {
            "float" | "f32" | "float32" => Dtype::Float,
            "bfloat16" | "bf16" => Dtype::Bfloat16,
            other => {
                return Err(Error::config(format!(
                    "-d/--datatype {other}: expected float or bfloat16"
                )));
            }
        };
        let op = match a.op.as_str() {
            "sum" => Op::Sum,
            "avg" => Op::Avg,
            other => {
                return Err(Error::config(format!(
                    "-o/--op {other}: expected sum or avg"
                )));
            }
        };
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
        if a.wire == Wire::Bf16 && dtype == Dtype::Bfloat16 {
            return Err(Error::config(
                "--wire bf16 applies to -d float; bfloat16 data always travels as bf16",
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
            corrupt: a.corrupt,
        })
    }

    /// Bytes per element on the wire.
    fn wire_bytes(&self) -> usize {
        match (self.dtype, self.wire) {
            (Dtype::Float, Wire::F32) => 4,
            _ => 2,
        }
    }

    fn wire_name(&self) -> &'static str {
        if self.wire_bytes() == 2 {
            "bf16"
        } else {
            "f32"
        }
    }
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

// ---------------------------------------------------------------------------
// The element types.

trait Elem: Copy + Default + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
    /// The all-reduce under test: in place on `buf`, or out of place from
    /// `input` into `buf`.
    fn reduce(
        comm: &dyn Communicator,
        input: Option<&[Self]>,
        buf: &mut [Self],
        op: Op,
    ) -> Result<()>;
    /// Allowed relative error of an average (a sum must be exact).
    const AVG_TOL: f64;
    /// bf16 data (picks the error bounds of the random check).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    const BF16: bool;
}

impl Elem for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn reduce(
        comm: &dyn Communicator,
        input: Option<&[f32]>,
        buf: &mut [f32],
        op: Op,
    ) -> Result<()> {
        match (input, op) {
            (None, Op::Sum) => comm.all_reduce_sum(buf),
            (None, Op::Avg) => comm.all_reduce_avg(buf),
            (Some(input), _) => {
                comm.all_reduce_sum_into(input, buf)?;
                // What `all_reduce_avg` does after its sum.
                if op == Op::Avg && comm.size() > 1 {
                    let inv = 1.0 / comm.size() as f32;
                    buf.iter_mut().for_each(|v| *v *= inv);
                }
                Ok(())
            }
        }
    }
    // An exact sum times fl(1/n), rounded: two f32 roundings.
    const AVG_TOL: f64 = 1.0 / (1u64 << 22) as f64;
    const BF16: bool = false;
}

impl Elem for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn reduce(
        comm: &dyn Communicator,
        input: Option<&[bf16]>,
        buf: &mut [bf16],
        op: Op,
    ) -> Result<()> {
        match input {
            Some(input) => comm.all_reduce_sum_bf16_into(input, buf)?,
            None => comm.all_reduce_sum_bf16(buf)?,
        }
        if op == Op::Avg && comm.size() > 1 {
            let inv = 1.0 / comm.size() as f32;
            buf.iter_mut()
                .for_each(|v| *v = bf16::from_f32(v.to_f32() * inv));
        }
        Ok(())
    }
    // Two f32 roundings, then one to bf16.
    const AVG_TOL: f64 = 1.0 / 128.0;
    const BF16: bool = true;
}

/// Rank `rank`'s input element `i`: an integer in 1..=⌊256/n⌋, so that
/// every partial sum over ≤ n ranks is an integer ≤ 256 (exact in bf16).
fn input(rank: usize, i: usize, n: usize) -> u32 {
    let m = (256 / n).max(1) as u64;
    1 + (crate::rng::hash3(0xa11_4ed, rank as u64, i as u64) % m) as u32
}

/// The exact sum over ranks of element `i`.
fn exact_sum(i: usize, n: usize) -> f64 {
    (0..n).map(|r| input(r, i, n) as f64).sum()
}

// ---------------------------------------------------------------------------
// Measuring one row.

#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    /// Per-rank mean seconds per iteration, max over ranks.
    seconds: f64,
    /// Wrong elements summed over ranks; `None` without `-c 1`.
    wrong: Option<u64>,
}

struct Row {
    count: usize,
    out_of_place: Timing,
    in_place: Timing,
}

impl Row {
    fn new(count: usize) -> Self {
        Row {
            count,
            out_of_place: Timing::default(),
            in_place: Timing::default(),
        }
    }

    fn set(&mut self, in_place: bool, t: Timing) {
        if in_place {
            self.in_place = t;
        } else {
            self.out_of_place = t;
        }
    }
}

/// The slowest rank's seconds per iteration (every rank gets it).
fn slowest(ctl: &dyn Communicator, mine: f64) -> Result<f64> {
    Ok(ctl
        .all_gather_u64(mine.to_bits())?
        .into_iter()
        .map(f64::from_bits)
        .fold(0.0, f64::max))
}

fn measure<T: Elem>(
    o: &Options,
    count: usize,
    comm: &dyn Communicator,
    ctl: &dyn Communicator,
) -> Result<Row> {
    let (rank, n) = (ctl.rank(), ctl.size());
    let src: Vec<T> = (0..count)
        .map(|i| T::from_f32(input(rank, i, n) as f32))
        .collect();
    let mut dst = src.clone();
    let mut row = Row::new(count);
    for in_place in [false, true] {
        // Out-of-place: `src` reduced into `dst`, `src` untouched. In-place:
        // `dst` is reduced again and again (its values grow; only the time
        // matters here).
        dst.copy_from_slice(&src);
        let input = (!in_place).then_some(&src[..]);
        let once = |dst: &mut [T]| T::reduce(comm, input, dst, o.op);
        for _ in 0..o.warmup {
            once(&mut dst)?;
        }
        ctl.barrier()?;
        let t = Instant::now();
        for _ in 0..o.iters {
            once(&mut dst)?;
        }
        let seconds = slowest(ctl, t.elapsed().as_secs_f64() / o.iters as f64)?;

        let wrong = if o.check {
            if in_place {
                dst.copy_from_slice(&src);
            } else {
                // An element the all-reduce fails to write stays NaN: wrong.
                dst.fill(T::from_f32(f32::NAN));
            }
            once(&mut dst)?;
            let mut bad = count_wrong(&mut dst, o, rank, n);
            if in_place {
                bad += random_check::<T>(o, count, comm, ctl)?;
            } else {
                bad += changed_inputs(&src, rank, n);
                bad += out_of_place_check::<T>(count, comm, ctl)?;
            }
            let all = ctl.all_gather_u64(bad)?;
            Some(all.iter().sum())
        } else {
            None
        };
        row.set(in_place, Timing { seconds, wrong });
    }
    Ok(row)
}

/// Elements of `got` (this rank's result) that differ from the exact
/// result; with `--corrupt` the last rank first adds 1 to one of them.
fn count_wrong<T: Elem>(got: &mut [T], o: &Options, rank: usize, n: usize) -> u64 {
    if o.corrupt && rank == n - 1 && !got.is_empty() {
        let k = got.len() / 2;
        let v = got[k].to_f32();
        // bf16 cannot hold 257: go down instead.
        got[k] = if T::from_f32(v + 1.0).to_f32() != v {
            T::from_f32(v + 1.0)
        } else {
            T::from_f32(v - 1.0)
        };
    }
    let mut wrong = 0;
    for (i, v) in got.iter().enumerate() {
        let (sum, v) = (exact_sum(i, n), v.to_f32() as f64);
        let ok = match o.op {
            Op::Sum => v == sum,
            Op::Avg => (v - sum / n as f64).abs() <= T::AVG_TOL * sum / n as f64,
        };
        wrong += u64::from(!ok);
    }
    wrong
}

/// Elements of `src` (rank `rank`'s input) that are no longer the input.
fn changed_inputs<T: Elem>(src: &[T], rank: usize, n: usize) -> u64 {
    let changed = src
        .iter()
        .enumerate()
        .filter(|&(i, v)| v.to_f32() != input(rank, i, n) as f32)
        .count();
    changed as u64
}

/// Out of place against in place on random data (uniform in [−1, 1),
/// different on every rank): elements of the out-of-place result whose
/// bits differ from the in-place result, plus input elements the
/// out-of-place call changed. Both are 0 for every communicator here (the
/// ring runs the same summation either way; MPI makes the same call).
fn out_of_place_check<T: Elem>(
    count: usize,
    comm: &dyn Communicator,
    ctl: &dyn Communicator,
) -> Result<u64> {
    let (seed, rank) = (0x0b_5eed ^ count as u64, ctl.rank() as u64);
    let x: Vec<T> = (0..count as u64)
        .map(|i| T::from_f32((2.0 * crate::rng::uniform(seed, rank, i) - 1.0) as f32))
        .collect();
    let mut in_place = x.clone();
    T::reduce(comm, None, &mut in_place, Op::Sum)?;
    let input = x.clone();
    let mut out = vec![T::from_f32(f32::NAN); count];
    T::reduce(comm, Some(&input), &mut out, Op::Sum)?;
    let bits = |v: &T| v.to_f32().to_bits();
    let differ = out
        .iter()
        .zip(&in_place)
        .filter(|(a, b)| bits(a) != bits(b))
        .count();
    let changed = input
        .iter()
        .zip(&x)
        .filter(|(a, b)| bits(a) != bits(b))
        .count();
    Ok((differ + changed) as u64)
}

/// The random-data cross-check against MPI_Allreduce (bounds.rs); 0 without
/// MPI (one rank, nothing to compare).
fn random_check<T: Elem>(
    o: &Options,
    count: usize,
    comm: &dyn Communicator,
    ctl: &dyn Communicator,
) -> Result<u64> {
    #[cfg(feature = "mpi")]
    if crate::world::mpi_is_up() {
        let n = ctl.size();
        let bound = match o.kind {
            CommKind::Mpi => bounds::mpi_error_bound(n, T::BF16),
            _ => bounds::error_bound(n, o.wire, T::BF16),
        };
        let seed = 0x5eed ^ count as u64;
        let c = bounds::self_check_random(
            comm,
            bound,
            ctl,
            bounds::mpi_error_bound(n, T::BF16),
            count,
            seed,
            T::BF16,
        )?;
        return Ok(c.wrong());
    }
    let _ = (o, count, comm, ctl);
    Ok(0)
}

// ---------------------------------------------------------------------------
// The α–β model.

/// The ring's cost model on this machine, measured in this run with the
/// ring's own transport (`RingComm::step_seconds`): a ring step of m bytes
/// per rank takes α + m/β; an all-reduce of S wire bytes is 2(n−1) steps
/// of S/n bytes.
#[derive(Clone, Copy, Debug)]
struct Model {
    alpha: f64,
    beta: f64,
    /// Bytes per rank of the step that measured β.
    beta_bytes: usize,
    n: usize,
}

impl Model {
    fn seconds(&self, wire_bytes: usize) -> f64 {
        let steps = 2.0 * (self.n as f64 - 1.0);
        steps * self.alpha + steps / self.n as f64 * wire_bytes as f64 / self.beta
    }
}

/// Bytes of the tiny step that measures α (one f32).
const ALPHA_BYTES: usize = 4;
/// β is measured with the largest row's ring step, but never less than this.
#[cfg(feature = "mpi")]
const MIN_BETA_BYTES: usize = 1 << 20;

fn alpha_beta(o: &Options, n: usize, ctl: &dyn Communicator) -> Result<Option<Model>> {
    #[cfg(feature = "mpi")]
    if n > 1 && crate::world::mpi_is_up() {
        let ring = crate::comm::ring::RingComm::world(Wire::F32);
        let max_over_ranks = |s: f64| -> Result<f64> {
            Ok(ctl
                .all_gather_u64(s.to_bits())?
                .into_iter()
                .map(f64::from_bits)
                .fold(0.0, f64::max))
        };
        let alpha = max_over_ranks(ring.step_seconds(ALPHA_BYTES, 50, 500)?)?;
        let largest = o.max_bytes / o.dtype.bytes() * o.wire_bytes();
        let beta_bytes = (largest / n).max(MIN_BETA_BYTES);
        let big =
            max_over_ranks(ring.step_seconds(beta_bytes, o.warmup.max(2), o.iters.max(5))?)?;
        // α is part of the big step too; what is left is the bandwidth term.
        let beta = beta_bytes as f64 / (big - alpha).max(1e-9);
        return Ok(Some(Model {
            alpha,
            beta,
            beta_bytes,
            n,
        }));
    }
    let _ = (o, n, ctl);
    Ok(None)
}

// ---------------------------------------------------------------------------
// Output.

/// "rank pid host" for every rank, in rank order.
fn ranks_and_hosts(world: &World, ctl: &dyn Communicator) -> Result<Vec<(u64, String)>> {
    const HOST: usize = 64;
    let pids = ctl.all_gather_u64(std::process::id() as u64)?;
    let mut mine = [0u8; HOST];
    let h = world.host.as_bytes();
    mine[..h.len().min(HOST)].copy_from_slice(&h[..h.len().min(HOST)]);
    let all = ctl.all_gather_bytes(&mine)?;
    Ok(pids
        .into_iter()
        .zip(all.chunks(HOST))
        .map(|(p, h)| {
            let end = h.iter().position(|&b| b == 0).unwrap_or(HOST);
            (p, String::from_utf8_lossy(&h[..end]).into_owned())
        })
        .collect())
}

struct Report<'a> {
    opts: &'a Options,
    n: usize,
    comm: &'static str,
    library: &'a str,
    /// "2.27.3" with --comm nccl.
    nccl: Option<String>,
    hosts: &'a [(u64, String)],
    model: Option<Model>,
    rows: &'a [Row],
    wrong: u64,
}

impl Report<'_> {
    fn bytes(&self, row: &Row) -> usize {
        row.count * self.opts.dtype.bytes()
    }
    /// (algbw, busbw) in GB/s.
    fn bandwidth(&self, row: &Row, t: &Timing) -> (f64, f64) {
        let alg = if t.seconds > 0.0 {
            self.bytes(row) as f64 / t.seconds / 1e9
        } else {
            0.0
        };
        let n = self.n as f64;
        (alg, alg * 2.0 * (n - 1.0) / n)
    }
    fn model_seconds(&self, row: &Row) -> Option<f64> {
        self.model
            .map(|m| m.seconds(row.count * self.opts.wire_bytes()))
    }
    fn avg_busbw(&self) -> f64 {
        let all: Vec<f64> = self
            .rows
            .iter()
            .flat_map(|r| {
                [
                    self.bandwidth(r, &r.out_of_place).1,
                    self.bandwidth(r, &r.in_place).1,
                ]
            })
            .collect();
        if all.is_empty() {
            0.0
        } else {
            all.iter().sum::<f64>() / all.len() as f64
        }
    }

    fn print_table(&self) {
        let o = self.opts;
        println!(
            "# nThread 1 nRanks {} minBytes {} maxBytes {} step: {}(factor) warmup iters: {} iters: {} validation: {}",
            self.n,
            o.min_bytes,
            o.max_bytes,
            o.step,
            o.warmup,
            o.iters,
            u8::from(o.check)
        );
        let chunk = match o.kind {
            CommKind::Ring => format!("  chunk: {} B", chunk_bytes()),
            _ => String::new(),
        };
        let nccl = match &self.nccl {
            Some(v) => format!("  NCCL: {v}"),
            None => String::new(),
        };
        println!(
            "# comm: {}  wire: {}{chunk}  MPI: {}{nccl}",
            self.comm,
            o.wire_name(),
            self.library
        );
        println!("#");
        println!("# Using ranks");
        for (r, (pid, host)) in self.hosts.iter().enumerate() {
            println!("#  Rank {r:2} Pid {pid:6} on {host}");
        }
        println!("#");
        println!(
            "# time: each rank's mean over -n iterations run back to back after a barrier; the max over ranks."
        );
        println!(
            "# out-of-place: all_reduce_sum_into(input, output), no copy: the input is read, never written; the"
        );
        println!("#   output is a separate buffer (like ncclAllReduce(sendbuff, recvbuff, ...)).");
        println!(
            "# #wrong: elements that differ from the exact result of integer inputs, summed over ranks. The in-place"
        );
        println!(
            "#   column also counts a run on random data where {} and MPI_Allreduce (the reference) differ by more",
            self.comm
        );
        println!(
            "#   than their proven error bounds, or where a rank's bits differ from rank 0's (docs/allreduce.md);"
        );
        println!(
            "#   the out-of-place column output elements left unwritten, changed input elements, and on random data"
        );
        println!("#   result bits that differ from the in-place result.");
        if self.nccl.is_some() {
            println!(
                "# nccl: device buffers on each rank's GPU, time from CUDA events; #wrong counts the integer check"
            );
            println!("#   (and, out of place, changed input elements) only.");
        }
        match self.model {
            Some(m) => {
                println!(
                    "# ring alpha-beta model: alpha {:.2} us per step ({ALPHA_BYTES} B ring exchange), beta {:.3} GB/s ({} B ring exchange);",
                    m.alpha * 1e6,
                    m.beta / 1e9,
                    m.beta_bytes
                );
                println!(
                    "#   model = 2(n-1)*alpha + 2(n-1)/n * S/beta, S = bytes on the wire; x = time / model."
                );
            }
            None => println!("# ring alpha-beta model: N/A (one rank)"),
        }
        println!("#");
        println!(
            "#{:>72}{:>32}{:>24}",
            "out-of-place", "in-place", "ring alpha-beta model"
        );
        println!(
            "# {:>10} {:>12} {:>8} {:>6} {:>8} {:>7} {:>7} {:>6} {:>8} {:>7} {:>7} {:>6} {:>9} {:>6} {:>6}",
            "size",
            "count",
            "type",
            "redop",
            "time",
            "algbw",
            "busbw",
            "#wrong",
            "time",
            "algbw",
            "busbw",
            "#wrong",
            "model",
            "x(oop)",
            "x(ip)"
        );
        println!(
            "# {:>10} {:>12} {:>8} {:>6} {:>8} {:>7} {:>7} {:>6} {:>8} {:>7} {:>7} {:>6} {:>9} {:>6} {:>6}",
            "(B)",
            "(elements)",
            "",
            "",
            "(us)",
            "(GB/s)",
            "(GB/s)",
            "",
            "(us)",
            "(GB/s)",
            "(GB/s)",
            "",
            "(us)",
            "",
            ""
        );
        for row in self.rows {
            let mut line = format!(
                "  {:>10} {:>12} {:>8} {:>6}",
                self.bytes(row),
                row.count,
                o.dtype.name(),
                o.op.name()
            );
            for t in [&row.out_of_place, &row.in_place] {
                let (alg, bus) = self.bandwidth(row, t);
                let wrong = t.wrong.map_or("N/A".to_string(), |w| w.to_string());
                line += &format!(
                    " {:>8} {alg:>7.2} {bus:>7.2} {wrong:>6}",
                    time_us(t.seconds)
                );
            }
            match self.model_seconds(row) {
                Some(m) if m > 0.0 => {
                    line += &format!(
                        " {:>9} {:>6.2} {:>6.2}",
                        time_us(m),
                        row.out_of_place.seconds / m,
                        row.in_place.seconds / m
                    )
                }
                _ => line += &format!(" {:>9} {:>6} {:>6}", "N/A", "N/A", "N/A"),
            }
            println!("{line}");
        }
        if o.check {
            println!(
                "# Out of bounds values : {} {}",
                self.wrong,
                if self.wrong == 0 { "OK" } else { "FAILED" }
            );
        } else {
            println!("# Out of bounds values : N/A (-c 0)");
        }
        println!("# Avg bus bandwidth    : {:.4} ", self.avg_busbw());
        println!("#");
    }

    fn json(&self) -> serde_json::Value {
        let o = self.opts;
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|row| {
                let timing = |t: &Timing| {
                    let (alg, bus) = self.bandwidth(row, t);
                    json!({ "time_us": t.seconds * 1e6, "algbw": alg, "busbw": bus, "wrong": t.wrong })
                };
                let model = self.model_seconds(row).filter(|&m| m > 0.0);
                json!({
                    "size": self.bytes(row),
                    "count": row.count,
                    "type": o.dtype.name(),
                    "redop": o.op.name(),
                    "out_of_place": timing(&row.out_of_place),
                    "in_place": timing(&row.in_place),
                    "model_us": model.map(|m| m * 1e6),
                    "x_out_of_place": model.map(|m| row.out_of_place.seconds / m),
                    "x_in_place": model.map(|m| row.in_place.seconds / m),
                })
            })
            .collect();
        json!({
            "bench": "allreduce",
            "ranks": self.n,
            "comm": self.comm,
            "wire": o.wire_name(),
            "chunk_bytes": chunk_bytes(),
            "mpi": self.library,
            "nccl": self.nccl,
            "iters": o.iters,
            "warmup": o.warmup,
            "check": o.check,
            "time": "per-rank mean over iterations, max over ranks",
            "model": self.model.map(|m| json!({
                "alpha_us": m.alpha * 1e6,
                "beta_gbps": m.beta / 1e9,
                "beta_bytes": m.beta_bytes,
            })),
            "rows": rows,
            "wrong": o.check.then_some(self.wrong),
            "avg_busbw": self.avg_busbw(),
        })
    }
}

/// nccl-tests' time format: fewer decimals as the number grows.
fn time_us(seconds: f64) -> String {
    let us = seconds * 1e6;
    if us >= 10_000.0 {
        format!("{us:.0}")
    } else if us >= 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.2}")
    }
}

fn chunk_bytes() -> usize {
    #[cfg(feature = "mpi")]
    return crate::comm::ring::CHUNK_BYTES;
    #[cfg(not(feature = "mpi"))]
    0
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

    #[test]
    fn inputs_keep_every_partial_sum_exact_in_bf16() {
        for n in [1, 2, 3, 5, 64, 256] {
            for i in 0..1000 {
                let mut partial = 0u32;
                for r in 0..n {
                    partial += input(r, i, n);
                    assert!(partial <= 256);
                    assert_eq!(bf16::from_f32(partial as f32).to_f32(), partial as f32);
                }
            }
        }
    }
}
