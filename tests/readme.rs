//! The README's quick start, run: `launch/run.sh` trains with
//! `mpirun -np 2 ringtrain train`; every line the README shows of that
//! run must be what the run prints (numbers within 2e-3, for GEMMs that
//! round differently; samples/s and times are not compared).
#![cfg(feature = "mpi")]

mod common;

/// The lines of the README's first code block after "## What a run prints".
fn documented_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let section = readme
        .split("## What a run prints")
        .nth(1)
        .expect("README has the section");
    let block = section.split("```").nth(1).expect("a code block");
    block
        .lines()
        .map(str::to_string)
        .filter(|l| !l.trim().is_empty() && l.trim() != "...")
        .collect()
}

/// The numbers of a line, in order (integers and decimals, signs kept).
fn numbers(line: &str) -> Vec<f64> {
    let mut out = vec![];
    let mut cur = String::new();
    for c in line.chars().chain([' ']) {
        if c.is_ascii_digit()
            || c == '.'
            || (c == '-' && cur.is_empty())
            || c == 'e' && !cur.is_empty()
        {
            cur.push(c);
        } else {
            if let Ok(v) = cur.trim_end_matches('.').parse::<f64>() {
                out.push(v);
            }
            cur.clear();
        }
    }
    out
}

/// The words of a line (numbers left out).
fn words(line: &str) -> Vec<&str> {
    line.split(|c: char| c.is_whitespace() || c == '|')
        .filter(|w| !w.is_empty() && numbers(w).is_empty())
        .collect()
}

#[test]
fn the_quick_start_prints_what_the_readme_shows() {
    let run = common::mpirun(2, &["train"]);
    run.ok();
    let printed = format!("{}{}", run.stdout, run.stderr);
    for doc in documented_lines() {
        if doc.starts_with("summary:") || doc.starts_with("ringtrain:") {
            continue; // times, rates and the MPI library of the machine it ran on
        }
        let key: String = doc.chars().take_while(|c| *c != '|').collect();
        let head = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let got = printed
            .lines()
            .find(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ") == head)
            .unwrap_or_else(|| panic!("README line not printed: {doc}\n--- printed\n{printed}"));
        assert_eq!(words(got), words(&doc), "README: {doc}\nrun:    {got}");
        let (mut a, mut b) = (numbers(got), numbers(&doc));
        if doc.starts_with("step ") {
            // The step's samples/s.
            a.pop();
            b.pop();
        }
        assert_eq!(a.len(), b.len(), "README: {doc}\nrun:    {got}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 2e-3 * (1.0 + y.abs()),
                "README: {doc}\nrun:    {got}"
            );
        }
    }
}
