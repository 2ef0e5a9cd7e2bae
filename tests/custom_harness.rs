//! Checks how the test executables with a harness of their own
//! (tests/nvrtc.rs, tests/cluster.rs, tests/slurm.rs) read libtest's
//! command line (tests/libtest_args).

#[allow(dead_code)] // from_env: used by those executables only
mod libtest_args;

use libtest_args::Selection;

fn sel(args: &[&str]) -> Selection {
    Selection::parse(args.iter().map(|a| a.to_string()))
}

#[test]
fn option_values_are_not_filters() {
    let name = "nvrtc_compiles_every_kernel_for_sm80_and_sm90";
    for args in [
        &[][..],
        &["--include-ignored", "--test-threads", "1"],
        &["--test-threads=1", "--nocapture"],
        &["--skip", "kernel_bandwidth_report", "--skip", "two_"],
        &[
            "--color",
            "never",
            "--format",
            "pretty",
            "-Z",
            "unstable-options",
        ],
        &["--logfile", "x.log", "--shuffle-seed", "7", "-q"],
    ] {
        assert!(sel(args).selects(name), "{args:?}");
    }
}

#[test]
fn filters_skips_and_exact_select_like_libtest() {
    let name = "cluster_a_rank_killed_on_the_second_host_is_named";
    assert!(sel(&["killed"]).selects(name));
    assert!(sel(&["stalled", "killed"]).selects(name));
    assert!(!sel(&["stalled"]).selects(name));
    assert!(!sel(&["--skip", "killed"]).selects(name));
    assert!(!sel(&["--skip=killed"]).selects(name));
    assert!(!sel(&["killed", "--skip", "cluster_"]).selects(name));
    assert!(!sel(&["--exact", "killed"]).selects(name));
    assert!(sel(&["--exact", name]).selects(name));
    assert!(sel(&["--exact", "--skip", "killed", name]).selects(name));
    assert!(sel(&["--list"]).list);
    assert!(!sel(&["--test-threads", "1"]).list);
}
