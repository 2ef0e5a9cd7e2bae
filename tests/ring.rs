//! The ring all-reduce (src/comm/ring/), reached through the binary:
//! `bench allreduce -c 1` checks every element of every row against the
//! exact result and, in the in-place column, also cross-checks the
//! communicator against MPI_Allreduce on random data (within the proven
//! error bound, and bit-identical on every rank). The out-of-place column
//! runs `all_reduce_sum_into` (`all_reduce_sum_bf16_into` for bf16 data)
//! into an output filled with NaN, so it also counts output elements left
//! unwritten, input elements the call changed, and, on random data,
//! elements whose bits differ from the in-place result. Each case runs the
//! ring (and MPI, as the control) at 1, 2, 3 and 5 ranks over sizes chosen to
//! hit the edge cases: 0 elements, fewer elements than ranks, lengths not
//! divisible by the rank count, and segments of several 256 KiB chunks
//! with a partial last chunk.
#![cfg(feature = "mpi")]

mod common;

use std::sync::{Mutex, MutexGuard};

const RANKS: [usize; 4] = [1, 2, 3, 5];

/// Sizes in bytes: 0, then 2, 4, 8, ... 4096 (counts 0, 1, 2, 4, ..., so
/// fewer elements than ranks, and remainders 1..n−1 mod 3 and mod 5).
const SMALL: [&str; 6] = ["-b", "0", "-e", "4K", "-f", "2"];
/// 28 · 3^k bytes up to 1.6 MB: odd float counts 7 · 3^k up to 413343,
/// so the ring's 256 KiB chunks (65536 floats) split segments into several
/// chunks with a partial last one (3.2 chunks per segment at 2 ranks, 1.3
/// at 5; bf16 counts are twice the floats, in chunks twice as long).
const LARGE: [&str; 6] = ["-b", "28", "-e", "2M", "-f", "3"];

/// One MPI job at a time: they share two cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A data row of the table: (count, #wrong out-of-place, #wrong in-place).
fn rows(stdout: &str) -> Vec<(usize, String, String)> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // size count type redop root | time algbw busbw #wrong (out of
            // place) | time algbw busbw #wrong (in place), as nccl-tests.
            assert!(f.len() >= 13, "short row: {l}");
            (
                f[1].parse().expect("count"),
                f[8].to_string(),
                f[12].to_string(),
            )
        })
        .collect()
}

/// The counts a size sequence must produce (as the bench computes them).
fn expected_counts(sizes: &[&str; 6], elem: usize) -> Vec<usize> {
    let num = |s: &str| -> usize {
        let (digits, unit) = match s.as_bytes().last() {
            Some(b'K') => (&s[..s.len() - 1], 1 << 10),
            Some(b'M') => (&s[..s.len() - 1], 1 << 20),
            _ => (s, 1),
        };
        digits.parse::<usize>().unwrap() * unit
    };
    let (min, max, f) = (num(sizes[1]), num(sizes[3]), num(sizes[5]));
    let mut out = vec![];
    let mut s = min;
    while s <= max {
        out.push(s / elem);
        s = s.max(1) * f;
    }
    out
}

/// Runs `bench allreduce -c 1` with `args` at `np` ranks over both size
/// sequences and asserts exit 0 and 0 wrong elements in every row.
fn check(np: usize, args: &[&str]) {
    check_env(np, args, &[]);
}

/// [`check`] with environment variables for the ranks.
fn check_env(np: usize, args: &[&str], env: &[(&str, &str)]) {
    let elem = if args.contains(&"bfloat16") { 2 } else { 4 };
    for sizes in [&SMALL, &LARGE] {
        let mut full = vec!["bench", "allreduce", "-c", "1", "-n", "2", "-w", "1"];
        full.extend_from_slice(sizes);
        full.extend_from_slice(args);
        let run = {
            let _one = serial();
            let mut cmd = common::mpirun_command(np, &full);
            cmd.envs(env.iter().copied());
            common::run_with_timeout(cmd, std::time::Duration::from_secs(300))
        };
        let ctx = format!(
            "np {np}: ringtrain {}\n--- exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            full.join(" "),
            run.code,
            run.stdout,
            run.stderr
        );
        assert_eq!(run.code, Some(0), "{ctx}");
        let rows = rows(&run.stdout);
        let counts: Vec<usize> = rows.iter().map(|r| r.0).collect();
        assert_eq!(counts, expected_counts(sizes, elem), "{ctx}");
        for (count, oop, ip) in &rows {
            assert_eq!(
                (oop.as_str(), ip.as_str()),
                ("0", "0"),
                "count {count}\n{ctx}"
            );
        }
        assert!(
            run.stdout.contains("# Out of bounds values : 0 OK"),
            "{ctx}"
        );
    }
}

fn each_size(args: &[&str]) {
    for np in RANKS {
        check(np, args);
    }
}

#[test]
fn ring_f32() {
    each_size(&["--comm", "ring", "-d", "float"]);
}

#[test]
fn ring_f32_avg() {
    each_size(&["--comm", "ring", "-d", "float", "-o", "avg"]);
}

#[test]
fn ring_bf16_data() {
    each_size(&["--comm", "ring", "-d", "bfloat16"]);
}

#[test]
fn ring_bf16_data_avg() {
    each_size(&["--comm", "ring", "-d", "bfloat16", "-o", "avg"]);
}

/// f32 data over a bf16 wire: exact for the integer inputs (every partial
/// sum is an integer ≤ 256), within the documented bound on random data.
#[test]
fn ring_bf16_wire() {
    each_size(&["--comm", "ring", "--wire", "bf16"]);
}

#[test]
fn ring_bf16_wire_avg() {
    each_size(&["--comm", "ring", "--wire", "bf16", "-o", "avg"]);
}

/// `auto` is the ring.
#[test]
fn auto_is_the_ring() {
    let run = {
        let _one = serial();
        common::mpirun(
            2,
            &["bench", "allreduce", "-b", "1K", "-e", "1K", "-n", "1"],
        )
    };
    run.ok();
    assert!(run.stdout.contains("# comm: ring"), "{}", run.stdout);
}

/// On one host the ring's chunks go through shared memory (the checks
/// above ran it there); `RINGTRAIN_RING_SHM=off` keeps them on MPI
/// messages, which is what ranks on different hosts use, and must pass
/// the same checks.
#[test]
fn ring_over_mpi_messages() {
    let off = [(SHM_ENV, "off")];
    for np in [2, 3] {
        check_env(np, &["--comm", "ring", "-d", "float"], &off);
        check_env(np, &["--comm", "ring", "--wire", "bf16"], &off);
        check_env(np, &["--comm", "ring", "-d", "bfloat16", "-o", "avg"], &off);
    }
    for (env, want) in [
        (&[][..], "transport: shared memory"),
        (&off[..], "transport: MPI point-to-point"),
    ] {
        let args = ["bench", "allreduce", "-b", "1K", "-e", "1K", "-n", "1"];
        let run = {
            let _one = serial();
            let mut cmd = common::mpirun_command(2, &args);
            cmd.envs(env.iter().copied());
            common::run_with_timeout(cmd, std::time::Duration::from_secs(300))
        };
        run.ok();
        assert!(run.stdout.contains(want), "{want}\n{}", run.stdout);
    }
}

const SHM_ENV: &str = "RINGTRAIN_RING_SHM";

/// The control: MPI_Allreduce through the same bench and checks.
#[test]
fn mpi_f32_and_bf16() {
    each_size(&["--comm", "mpi", "-d", "float"]);
    each_size(&["--comm", "mpi", "-d", "bfloat16"]);
}

/// Where /dev/shm has no room for the ring's segment (a container's small
/// /dev/shm), rank 0 says so once and the ring runs over MPI messages,
/// with the same checks passing. Run in a private mount namespace with a
/// 64 KiB tmpfs on /dev/shm; skipped where that needs privileges we lack.
#[test]
fn a_full_dev_shm_falls_back_to_mpi_messages() {
    let small = "mount -t tmpfs -o size=64k ringtrain-test /dev/shm";
    let can = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", small])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can {
        println!("skipped: cannot mount a tmpfs on /dev/shm in a mount namespace (needs root)");
        return;
    }
    let args = ["bench", "allreduce", "-b", "1M", "-e", "1M", "-n", "2"];
    let mpirun = common::mpirun_command(2, &args);
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "sh", "-c", &format!("{small} && exec \"$@\""), "sh"])
        .arg(mpirun.get_program())
        .args(mpirun.get_args());
    let run = {
        let _one = serial();
        common::run_with_timeout(cmd, std::time::Duration::from_secs(300))
    };
    run.ok();
    let note = "the ranks could not share memory in /dev/shm (rank 0: No space left on device";
    assert_eq!(run.stderr.matches(note).count(), 1, "{}", run.context());
    assert!(
        run.stdout.contains("transport: MPI point-to-point")
            && run.stdout.contains("# Out of bounds values : 0 OK"),
        "{}",
        run.context()
    );
}
