//! What rank 0 prints: nccl-tests' table (or one JSON object), with the
//! ranks and hosts, the α–β model and the verdict of the checks.

use serde_json::json;

use super::model::{ALPHA_BYTES, Model};
use super::options::Options;
use super::timing::{Row, Timing};
use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::world::World;

/// Prints the table (or JSON) on rank 0; an error on every rank when an
/// element was wrong.
pub(super) fn report(
    opts: &Options,
    world: &World,
    ctl: &dyn Communicator,
    comm: &'static str,
    transport: Option<String>,
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
            transport,
            library: world.mpi_library.as_deref().unwrap_or("none"),
            nccl,
            hosts: &hosts,
            model,
            rows,
            wrong,
        };
        for note in &opts.notes {
            crate::say!("ringtrain: note: {note}");
        }
        if let Some(path) = &opts.output_file {
            let text = format!("{}\n", report.json());
            crate::fsutil::write_atomic(path, text.as_bytes())?;
        }
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
    /// What carries the ring's data (`Communicator::transport`).
    transport: Option<String>,
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
        let chunk = match &self.transport {
            Some(t) => format!("  transport: {t}"),
            None => String::new(),
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
            "# time: each rank's mean over -n iterations run back to back after a barrier; {} (-a {}).",
            o.average.name(),
            o.average as u8
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
        if self.rows.iter().any(|r| r.shm_bound.is_some()) {
            println!(
                "# shm bound: busbw of 3(n-1) passes over S/n bytes per rank at one thread's memcpy speed (every"
            );
            println!(
                "#   rank copying at once, this run) = 2/3 x memcpy GB/s; %: busbw / bound (src/bench/allreduce/shm_bound.rs)."
            );
        } else {
            println!("# shm bound: N/A (one rank, or ranks on more than one host)");
        }
        if o.vs_mpi {
            println!(
                "# --vs-mpi: MPI_Allreduce timed on the same buffers right after each row, the same way (not checked:"
            );
            println!(
                "#   -c 1 cross-checks the two); x = MPI time / {} time, above 1 where {} is faster.",
                self.comm, self.comm
            );
        }
        println!("#");
        let vs = o.vs_mpi;
        println!(
            "#{:>79}{:>32}{:>24}{:>21}{}",
            "out-of-place",
            "in-place",
            "ring alpha-beta model",
            "shm bound",
            if vs {
                format!("{:>37}", "MPI_Allreduce, same run")
            } else {
                String::new()
            }
        );
        let names = format!(
            "# {:>10} {:>12} {:>8} {:>6} {:>6} {:>8} {:>7} {:>7} {:>6} {:>8} {:>7} {:>7} {:>6} {:>9} {:>6} {:>6} {:>7} {:>6} {:>6}",
            "size",
            "count",
            "type",
            "redop",
            "root",
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
            "x(ip)",
            "bound",
            "%(oop)",
            "%(ip)"
        );
        let extra = |a: &str, b: &str, c: &str, d: &str| match vs {
            true => format!(" {a:>10} {b:>9} {c:>7} {d:>7}"),
            false => String::new(),
        };
        println!(
            "{names}{}",
            extra("busbw(oop)", "busbw(ip)", "x(oop)", "x(ip)")
        );

        let units = format!(
            "# {:>10} {:>12} {:>8} {:>6} {:>6} {:>8} {:>7} {:>7} {:>6} {:>8} {:>7} {:>7} {:>6} {:>9} {:>6} {:>6} {:>7} {:>6} {:>6}",
            "(B)",
            "(elements)",
            "",
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
            "",
            "(GB/s)",
            "",
            ""
        );
        println!("{units}{}", extra("(GB/s)", "(GB/s)", "", ""));
        for row in self.rows {
            let mut line = format!(
                "  {:>10} {:>12} {:>8} {:>6} {:>6}",
                self.bytes(row),
                row.count,
                o.dtype.name(),
                o.op.name(),
                -1
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
            match row.shm_bound {
                Some(b) if b > 0.0 => {
                    let pct = |t: &Timing| 100.0 * self.bandwidth(row, t).1 / b;
                    line += &format!(
                        " {b:>7.2} {:>5.0}% {:>5.0}%",
                        pct(&row.out_of_place),
                        pct(&row.in_place)
                    )
                }
                _ => line += &format!(" {:>7} {:>6} {:>6}", "N/A", "N/A", "N/A"),
            }
            if let Some((oop, ip)) = &row.mpi {
                let bus = |t: &Timing| self.bandwidth(row, t).1;
                let x = |mine: &Timing, mpi: &Timing| match mine.seconds > 0.0 {
                    true => format!("{:.2}", mpi.seconds / mine.seconds),
                    false => "N/A".into(),
                };
                line += &format!(
                    " {:>10.2} {:>9.2} {:>7} {:>7}",
                    bus(oop),
                    bus(ip),
                    x(&row.out_of_place, oop),
                    x(&row.in_place, ip)
                );
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
                    "root": -1,
                    "out_of_place": timing(&row.out_of_place),
                    "in_place": timing(&row.in_place),
                    "model_us": model.map(|m| m * 1e6),
                    "x_out_of_place": model.map(|m| row.out_of_place.seconds / m),
                    "x_in_place": model.map(|m| row.in_place.seconds / m),
                    "shm_bound_busbw": row.shm_bound,
                    "mpi": row.mpi.map(|(oop, ip)| json!({
                        "out_of_place": timing(&oop),
                        "in_place": timing(&ip),
                    })),
                })
            })
            .collect();
        json!({
            "bench": "allreduce",
            "ranks": self.n,
            "comm": self.comm,
            "wire": o.wire_name(),
            "transport": self.transport,
            "mpi": self.library,
            "nccl": self.nccl,
            "iters": o.iters,
            "warmup": o.warmup,
            "check": o.check,
            "time": format!("per-rank mean over iterations, {}", o.average.name()),
            "average": o.average as u8,
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
