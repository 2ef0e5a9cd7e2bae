//! `ringtrain bench allreduce`: nccl-tests' table and footer, JSON, the
//! result check (and that it catches a wrong element), and user errors.
#![cfg(feature = "mpi")]

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::Run;

/// A failing check or a bad flag must end the job this fast (no hang).
const QUICK: Duration = Duration::from_secs(60);

/// One MPI job at a time: they share two cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn bench(np: usize, args: &[&str]) -> Run {
    let mut full = vec!["bench", "allreduce"];
    full.extend_from_slice(args);
    let _one = serial();
    common::mpirun_timeout(np, &full, QUICK)
}

fn ctx(run: &Run) -> String {
    format!(
        "--- exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
        run.code, run.elapsed, run.stdout, run.stderr
    )
}

/// The data rows, split into fields.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[test]
fn table_has_the_nccl_tests_columns_and_footer() {
    let run = bench(
        2,
        &["-b", "1K", "-e", "64K", "-f", "4", "-n", "3", "-w", "1"],
    );
    run.ok();
    let c = ctx(&run);
    let out = &run.stdout;
    // Rank 0 alone prints: one header.
    assert_eq!(out.matches("# nThread 1 nRanks 2").count(), 1, "{c}");
    let header = out
        .lines()
        .find(|l| l.contains("size") && l.contains("count"))
        .unwrap_or_else(|| panic!("no column header\n{c}"));
    let names: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    assert_eq!(
        &names[..13],
        [
            "size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
            "algbw", "busbw", "#wrong"
        ],
        "{c}"
    );
    // Then the α-β model's and the shared-memory bound's columns.
    assert_eq!(
        &names[13..],
        ["model", "x(oop)", "x(ip)", "bound", "%(oop)", "%(ip)"],
        "{c}"
    );
    assert!(
        out.contains("out-of-place") && out.contains("in-place"),
        "{c}"
    );
    // Out-of-place is the communicator's own out-of-place call, no copy.
    assert!(
        out.contains("# out-of-place: all_reduce_sum_into(input, output), no copy"),
        "{c}"
    );
    let rows = rows(out);
    let sizes: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(sizes, ["1024", "4096", "16384", "65536"], "{c}");
    for r in &rows {
        assert_eq!(
            r[1].parse::<usize>().unwrap() * 4,
            r[0].parse::<usize>().unwrap()
        );
        assert_eq!((r[2].as_str(), r[3].as_str()), ("float", "sum"), "{c}");
        // nccl-tests' positions: root -1 (all-reduce), busbw 7 and 11.
        assert_eq!(r[4], "-1", "{c}");
        for i in [5, 6, 7, 9, 10, 11] {
            let v: f64 = r[i].parse().unwrap_or_else(|_| panic!("column {i}\n{c}"));
            assert!(v.is_finite() && v >= 0.0, "{c}");
        }
        // busbw = algbw · 2(n−1)/n = algbw at 2 ranks.
        assert_eq!(r[6], r[7], "{c}");
        assert_eq!((r[8].as_str(), r[12].as_str()), ("0", "0"), "{c}");
        // Both ranks share this host: the bound is measured, and the
        // percentage is busbw over it.
        let bound: f64 = r[16].parse().unwrap_or_else(|_| panic!("bound\n{c}"));
        assert!(bound > 0.0, "{c}");
        let pct: f64 = r[18].trim_end_matches('%').parse().unwrap();
        let busbw: f64 = r[11].parse().unwrap();
        assert!(
            (pct - 100.0 * busbw / bound).abs() <= 1.0 + 0.01 * pct,
            "{c}"
        );
    }
    assert!(out.contains("# Out of bounds values : 0 OK"), "{c}");
    assert!(out.contains("# Avg bus bandwidth    : "), "{c}");
    assert!(out.contains("alpha") && out.contains("beta"), "{c}");
}

#[test]
fn json_parses_with_the_same_rows() {
    let run = bench(
        3,
        &[
            "-b", "4K", "-e", "16K", "-f", "2", "-n", "2", "-d", "bfloat16", "-o", "avg", "--json",
        ],
    );
    run.ok();
    let c = ctx(&run);
    let v: serde_json::Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{c}"));
    assert_eq!(v["ranks"], 3, "{c}");
    assert_eq!(v["comm"], "ring", "{c}");
    assert_eq!(v["wire"], "bf16", "{c}");
    assert_eq!(v["wrong"], 0, "{c}");
    let rows = v["rows"].as_array().expect("rows");
    let sizes: Vec<u64> = rows.iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [4096, 8192, 16384], "{c}");
    for r in rows {
        assert_eq!(
            r["count"].as_u64().unwrap() * 2,
            r["size"].as_u64().unwrap()
        );
        assert_eq!(
            (&r["type"], &r["redop"]),
            (&"bfloat16".into(), &"avg".into())
        );
        for p in ["out_of_place", "in_place"] {
            assert_eq!(r[p]["wrong"], 0, "{c}");
            let (alg, bus) = (
                r[p]["algbw"].as_f64().unwrap(),
                r[p]["busbw"].as_f64().unwrap(),
            );
            assert!(r[p]["time_us"].as_f64().unwrap() > 0.0, "{c}");
            assert!((bus - alg * 4.0 / 3.0).abs() <= 1e-9 * bus.max(1.0), "{c}");
        }
        assert!(r["x_in_place"].as_f64().unwrap() > 0.0, "{c}");
        assert!(r["shm_bound_busbw"].as_f64().unwrap() > 0.0, "{c}");
    }
    assert!(v["model"]["alpha_us"].as_f64().unwrap() > 0.0, "{c}");
    assert!(v["model"]["beta_gbps"].as_f64().unwrap() > 0.0, "{c}");
}

#[test]
fn no_check_prints_not_available() {
    let run = bench(2, &["-b", "1K", "-e", "1K", "-n", "1", "-c", "0"]);
    run.ok();
    let rows = rows(&run.stdout);
    assert_eq!(rows.len(), 1, "{}", ctx(&run));
    assert_eq!((rows[0][8].as_str(), rows[0][12].as_str()), ("N/A", "N/A"));
}

/// `--corrupt` changes one element on the last rank: each placement of
/// each row must count exactly 1 wrong element, the footer must say
/// FAILED, and every rank must exit non-zero with one message.
#[test]
fn a_wrong_element_is_reported_and_fails_the_run() {
    for (np, extra) in [
        (2, vec![]),
        (3, vec!["-d", "bfloat16"]),
        (2, vec!["--wire", "bf16"]),
    ] {
        let mut args = vec!["-b", "64", "-e", "64K", "-f", "16", "-n", "1", "--corrupt"];
        args.extend(extra);
        let run = bench(np, &args);
        let c = ctx(&run);
        assert_eq!(run.code, Some(2), "{c}");
        assert!(run.elapsed < QUICK, "{c}");
        let rows = rows(&run.stdout);
        assert_eq!(rows.len(), 3, "{c}");
        for r in &rows {
            assert_eq!((r[8].as_str(), r[12].as_str()), ("1", "1"), "{c}");
        }
        assert!(
            run.stdout.contains("# Out of bounds values : 6 FAILED"),
            "{c}"
        );
        assert_eq!(run.stderr.matches("ringtrain: error:").count(), 1, "{c}");
        assert!(run.stderr.contains("6 wrong elements"), "{c}");
    }
}

/// Bad values end the job with exit 2 and one message (not one per rank).
#[test]
fn bad_flags_exit_2_with_one_message() {
    for (args, fragment) in [
        (vec!["-b", "1X"], "-b/--minbytes 1X"),
        (vec!["-e", "lots"], "-e/--maxbytes lots"),
        (vec!["-b", "2M", "-e", "1M"], "larger than"),
        (vec!["-f", "1"], "-f/--stepfactor 1"),
        (vec!["-n", "0"], "-n/--iters"),
        (vec!["-c", "2"], "-c/--check 2"),
        (
            vec!["--comm", "mpi", "--wire", "bf16"],
            "--wire bf16 needs --comm ring",
        ),
        (
            vec!["-d", "bfloat16", "--wire", "bf16"],
            "--wire bf16 applies to -d float",
        ),
        (
            vec!["--comm", "mpi", "--vs-mpi"],
            "--vs-mpi times MPI_Allreduce beside the ring",
        ),
    ] {
        let run = bench(2, &args);
        let c = format!("args {args:?}\n{}", ctx(&run));
        assert_eq!(run.code, Some(2), "{c}");
        assert!(run.elapsed < QUICK, "{c}");
        assert_eq!(run.stderr.matches("ringtrain: error:").count(), 1, "{c}");
        assert_eq!(run.stderr.matches(fragment).count(), 1, "{c}");
        assert!(rows(&run.stdout).is_empty(), "{c}");
    }
    // Unknown -d/-o values are clap's: its message, printed once.
    for (args, fragment) in [
        (
            vec!["-d", "int8"],
            "invalid value 'int8' for '--datatype <DTYPE>'",
        ),
        (vec!["-o", "prod"], "invalid value 'prod' for '--op <OP>'"),
    ] {
        let run = bench(2, &args);
        let c = format!("args {args:?}\n{}", ctx(&run));
        assert_eq!(run.code, Some(2), "{c}");
        assert!(run.elapsed < QUICK, "{c}");
        assert_eq!(run.stderr.matches("error:").count(), 1, "{c}");
        assert_eq!(run.stderr.matches(fragment).count(), 1, "{c}");
        assert!(rows(&run.stdout).is_empty(), "{c}");
        // The message arrives whole (mpirun's own notice once landed inside
        // it), and rank 0 is the first to exit: the other ranks wait for it,
        // so that mpirun's teardown cannot cut its message short.
        let whole = format!("error: {fragment}\n  [possible values: ");
        assert!(run.stderr.contains(&whole), "{c}");
        assert!(
            run.stderr.contains("For more information, try '--help'.\n"),
            "{c}"
        );
        if let Some(at) = run.stderr.find("The first process to do so was:") {
            let named = run.stderr[at..]
                .lines()
                .find(|l| l.contains("Process name:"));
            assert!(named.is_some_and(|l| l.trim_end().ends_with(",0]")), "{c}");
        }
    }
}

/// `--vs-mpi`: every row also carries MPI_Allreduce's busbw, measured in
/// the same run, and the ratio columns; the table keeps nccl-tests'
/// columns first; without the flag neither appears.
#[test]
fn vs_mpi_adds_mpi_allreduce_beside_each_row() {
    let args = ["-b", "64K", "-e", "1M", "-f", "4", "-n", "3", "-w", "1"];
    let run = bench(2, &[&args[..], &["--vs-mpi", "--json"]].concat());
    run.ok();
    let c = ctx(&run);
    let v: serde_json::Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{c}"));
    let rows_json = v["rows"].as_array().expect("rows");
    assert_eq!(rows_json.len(), 3, "{c}");
    for r in rows_json {
        for p in ["out_of_place", "in_place"] {
            assert!(r["mpi"][p]["busbw"].as_f64().unwrap() > 0.0, "{c}");
            assert!(r["mpi"][p]["time_us"].as_f64().unwrap() > 0.0, "{c}");
        }
    }
    let run = bench(2, &[&args[..], &["--vs-mpi"]].concat());
    run.ok();
    let c = ctx(&run);
    assert!(
        run.stdout.contains("# --vs-mpi: MPI_Allreduce timed"),
        "{c}"
    );
    for row in rows(&run.stdout) {
        // 13 nccl-tests columns, model (3), shm bound (3), MPI (4).
        assert_eq!(row.len(), 23, "{row:?}\n{c}");
        let x: f64 = row[22].parse().unwrap_or_else(|_| panic!("{row:?}\n{c}"));
        assert!(x > 0.0, "{c}");
    }
    let plain = bench(2, &args);
    plain.ok();
    assert!(!plain.stdout.contains("MPI_Allreduce, same run"));
    assert!(
        rows(&plain.stdout).iter().all(|r| r.len() == 19),
        "{}",
        ctx(&plain)
    );
}

/// nccl-tests' type names and this program's short ones name the same type.
#[test]
fn datatype_aliases() {
    for (d, name) in [("f32", "float"), ("float32", "float"), ("bf16", "bfloat16")] {
        let run = bench(1, &["-b", "1K", "-e", "1K", "-n", "1", "-w", "0", "-d", d]);
        let c = format!("-d {d}\n{}", ctx(&run));
        assert_eq!(run.code, Some(0), "{c}");
        let r = rows(&run.stdout);
        assert_eq!(r.len(), 1, "{c}");
        assert_eq!(r[0][2], name, "{c}");
    }
}

/// `--comm mpi` in place is MPI_Allreduce with MPI_IN_PLACE (no scratch
/// buffer): exact on integer data and equal on every rank, at sizes that
/// are and are not multiples of anything in particular.
#[test]
fn mpi_in_place_is_exact() {
    let run = bench(
        2,
        &[
            "--comm", "mpi", "-b", "4", "-e", "4M", "-f", "16", "-n", "2", "-w", "1",
        ],
    );
    run.ok();
    let c = ctx(&run);
    let rows = rows(&run.stdout);
    assert_eq!(rows.len(), 6, "{c}");
    for r in &rows {
        assert_eq!((r[8].as_str(), r[12].as_str()), ("0", "0"), "{c}");
    }
}

#[test]
fn nccl_tests_flags_a_g_t_and_j() {
    let tmp = common::tempdir("bench-ar-flags");
    let file = tmp.path().join("out.json");
    // -a: every nccl-tests code runs and the header says which time it is;
    // 1 (the mean over ranks) is the default, as in nccl-tests.
    for (a, says) in [
        (None, "the mean over ranks (-a 1)"),
        (Some("0"), "rank 0's (-a 0)"),
        (Some("2"), "the minimum over ranks (-a 2)"),
        (Some("3"), "the maximum over ranks (-a 3)"),
    ] {
        let mut args = vec!["-b", "1K", "-e", "2K", "-n", "2", "-w", "1"];
        if let Some(a) = a {
            args.extend(["-a", a]);
        }
        let run = bench(2, &args);
        run.ok();
        assert!(run.stdout.contains(says), "{}", ctx(&run));
        assert_eq!(rows(&run.stdout).len(), 2, "{}", ctx(&run));
    }
    // -g and -t are accepted with a note; -J writes the JSON to a file
    // and the table is still printed.
    let f = file.to_str().unwrap();
    let args = [
        "-b", "1K", "-e", "1K", "-n", "2", "-g", "2", "-t", "4", "-J", f,
    ];
    let run = bench(2, &args);
    run.ok();
    let c = ctx(&run);
    assert_eq!(run.stderr.matches("note: -g 2 ignored").count(), 1, "{c}");
    assert_eq!(run.stderr.matches("note: -t 4 ignored").count(), 1, "{c}");
    assert_eq!(rows(&run.stdout).len(), 1, "{c}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["rows"][0]["root"], -1, "{v}");
    assert_eq!(v["average"], 1, "{v}");
    // -a out of nccl-tests' range is a usage error.
    let run = bench(2, &["-a", "4"]);
    assert_eq!(run.code, Some(2), "{}", ctx(&run));
}
