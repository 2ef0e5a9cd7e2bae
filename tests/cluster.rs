//! ringtrain across simulated hosts (launch/sim-cluster.sh): network and
//! UTS namespaces joined by rate-limited veth links, OpenMPI started over
//! its rsh launcher with an agent that enters a host's namespaces.
//!
//! A custom harness (Cargo.toml: `harness = false`, tests/sim): where
//! network namespaces are refused (no root / CAP_NET_ADMIN) every test
//! prints "skipped: ..." and is reported *ignored*, never passed. After
//! every test, passed or failed, the harness checks that no namespace,
//! link, /etc/netns entry or state directory with the test's prefix is
//! left. The time bounds below only catch hangs.

mod common;
mod libtest_args;
mod sim;

#[cfg(feature = "mpi")]
mod tests {
    use std::time::Duration;

    use super::common::{self, read_params, rel_diff, tempdir};
    use super::sim::{Cluster, Skip, leftovers};

    /// Two hosts x two ranks: `ringtrain info` names both hosts and counts
    /// local ranks per host; each host has its own hostname and address.
    pub fn info_shows_two_hosts_and_local_ranks_per_host() -> Result<(), Skip> {
        let c = Cluster::up(2, None)?;
        let r = c.exec(1, &["sh", "-c", "hostname; ip -o -4 addr show dev eth0"]);
        r.ok();
        assert!(
            r.stdout.starts_with(&format!("{}\n", c.host(1))),
            "{}",
            r.context()
        );
        assert!(r.stdout.contains("10.77.0.2/24"), "{}", r.context());

        let r = c.ringtrain(4, &["info"], &[]);
        r.ok();
        for (rank, host, local) in [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)] {
            let line = format!(
                "rank {rank}: host {}, local rank {local} of 2, world size 4",
                c.host(host)
            );
            assert!(
                r.stdout.contains(&line),
                "{line:?} missing\n{}",
                r.context()
            );
        }
        c.down();
        Ok(())
    }

    /// 2 hosts x 2 ranks over 1 Gbit/s links against 1 rank, same global
    /// batch: the saved parameters agree to the world-size tolerance, with
    /// the ring all-reduce and with MPI_Allreduce.
    pub fn world_size_invariance_2_hosts_x_2_ranks_ring_and_mpi() -> Result<(), Skip> {
        let c = Cluster::up(2, Some("1gbit"))?;
        let tmp = tempdir("cluster-wsi");
        let dir = tmp.path();
        let args = |out: &str, comm: &str| -> Vec<String> {
            [
                "train",
                "--steps",
                "12",
                "--global-batch",
                "30",
                "--eval-every",
                "0",
                "--hidden",
                "32,16",
                "--comm",
                comm,
                "--save",
                out,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let one = dir.join("n1.safetensors");
        let a = args(one.to_str().unwrap(), "mpi");
        common::mpirun(1, &a.iter().map(String::as_str).collect::<Vec<_>>()).ok();
        let one = read_params(&one);
        for comm in ["ring", "mpi"] {
            let out = dir.join(format!("n4-{comm}.safetensors"));
            let a = args(out.to_str().unwrap(), comm);
            let r = c.ringtrain(4, &a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
            r.ok();
            assert!(
                r.stderr.contains("4 rank(s)") || r.stdout.contains("4 rank(s)"),
                "{}",
                r.context()
            );
            // Ranks on two hosts: the ring's chunks travel as MPI messages
            // (one host would use shared memory).
            if comm == "ring" {
                assert!(
                    r.stdout
                        .contains("all-reduce ring (ring over MPI messages)"),
                    "{}",
                    r.context()
                );
            }
            let d = rel_diff(&read_params(&out), &one);
            eprintln!("--comm {comm}: 2 hosts x 2 ranks vs 1 rank: relative difference {d:e}");
            assert!(
                d <= 1e-5,
                "--comm {comm}: 4 ranks on 2 hosts differ from 1 rank: {d:e}"
            );
        }
        c.down();
        Ok(())
    }

    fn watchdog_lines(r: &common::Run) -> Vec<&str> {
        r.stderr
            .lines()
            .filter(|l| l.contains("ringtrain: watchdog"))
            .collect()
    }

    /// Rank 3 (on the second host) dies by SIGKILL at step 3: the job ends
    /// long before --comm-timeout, the death is named, nothing is left on
    /// either host. The watchdog connections of host 1's ranks go to rank
    /// 0's host address (a 127.0.0.1 there reaches nothing).
    pub fn a_rank_killed_on_the_second_host_is_named() -> Result<(), Skip> {
        let c = Cluster::up(2, Some("1gbit"))?;
        let r = c.ringtrain(
            4,
            &[
                "train",
                "--hidden",
                "32",
                "--steps",
                "200",
                "--global-batch",
                "8",
                "--log-every",
                "10",
                "--comm-timeout",
                "30",
            ],
            &[("RINGTRAIN_FAULT", "kill@3:3")],
        );
        assert_ne!(r.code, Some(0), "{}", r.context());
        // A hang bound (timeout + a few seconds), not a speed test.
        assert!(r.elapsed < Duration::from_secs(40), "{}", r.context());
        let lines = watchdog_lines(&r);
        assert!(lines.len() <= 1, "{}", r.context());
        assert!(
            lines.iter().any(|l| l.contains(": rank 3 is gone: "))
                || r.stderr.contains("process rank 3 "),
            "{}",
            r.context()
        );
        assert!(!r.stdout.contains("step    200/200"));
        let left = c.wait_empty(Duration::from_secs(20));
        assert!(left.is_empty(), "processes left on the hosts: {left:?}");
        c.down();
        Ok(())
    }

    /// Rank 3 (second host) stops making progress at step 3: rank 0's
    /// watchdog on the first host names it, within the timeout's reach.
    pub fn a_rank_stalled_on_the_second_host_is_named() -> Result<(), Skip> {
        let c = Cluster::up(2, Some("1gbit"))?;
        let r = c.ringtrain(
            4,
            &[
                "train",
                "--hidden",
                "32",
                "--steps",
                "50",
                "--global-batch",
                "8",
                "--log-every",
                "10",
                "--comm-timeout",
                "3",
            ],
            &[("RINGTRAIN_FAULT", "stall@3:3")],
        );
        assert_ne!(r.code, Some(0), "{}", r.context());
        assert!(r.elapsed < Duration::from_secs(30), "{}", r.context());
        let lines = watchdog_lines(&r);
        assert_eq!(
            lines.len(),
            1,
            "exactly one watchdog message\n{}",
            r.context()
        );
        let m = lines[0];
        assert!(m.contains("did not complete within 3 s"), "{m}");
        assert!(
            m.contains("not arrived: rank 3 (computing at step 3"),
            "{m}"
        );
        let left = c.wait_empty(Duration::from_secs(20));
        assert!(left.is_empty(), "processes left on the hosts: {left:?}");
        c.down();
        Ok(())
    }

    /// The pid of ringtrain's rank `rank` on host `host`, when it runs.
    fn rank_pid(c: &Cluster, host: usize, rank: usize) -> Option<i32> {
        let want = format!("OMPI_COMM_WORLD_RANK={rank}");
        c.pids(host).iter().find_map(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).ok()?;
            let env = std::fs::read(format!("/proc/{p}/environ")).ok()?;
            let is_rank = env.split(|b| *b == 0).any(|v| v == want.as_bytes());
            (comm.trim() == "ringtrain" && is_rank).then(|| p.parse().ok())?
        })
    }

    /// Rank 3 (second host) is stopped with SIGSTOP in the middle of a run:
    /// its watchdog reporter stops too, and rank 0 on the first host names
    /// it ("no word from it") after --comm-timeout; the stopped process
    /// is not left behind.
    pub fn a_rank_stopped_on_the_second_host_is_named() -> Result<(), Skip> {
        let c = Cluster::up(2, Some("1gbit"))?;
        let tmp = tempdir("cluster-stop");
        let metrics = tmp.path().join("m.jsonl");
        let metrics_arg = metrics.to_string_lossy().into_owned();
        let r = std::thread::scope(|sc| {
            let run = sc.spawn(|| {
                c.ringtrain(
                    4,
                    &[
                        "train",
                        "--hidden",
                        "32",
                        "--steps",
                        "1000000",
                        "--global-batch",
                        "8",
                        "--log-every",
                        "100000",
                        "--eval-every",
                        "0",
                        "--comm-timeout",
                        "5",
                        "--metrics-out",
                        &metrics_arg,
                    ],
                    &[],
                )
            });
            // Stop rank 3 once the job trains: every rank is past start-up
            // and watched. (Stopped inside MPI_Init, before ringtrain's own
            // code runs, a rank is the launcher's to notice, not ours: on a
            // loaded machine 2 s after its process appeared was too soon.)
            let training = || {
                std::fs::read_to_string(&metrics).is_ok_and(|m| m.contains("\"type\":\"train\""))
            };
            let mut pid = None;
            for _ in 0..2400 {
                pid = rank_pid(&c, 1, 3).filter(|_| training());
                if pid.is_some() || run.is_finished() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let pid = pid.expect("rank 3 never trained on host 1");
            std::thread::sleep(Duration::from_millis(500));
            // SAFETY: kill(2) on a pid of a process of our own job.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
            run.join().expect("run thread")
        });
        assert_ne!(r.code, Some(0), "{}", r.context());
        assert!(r.elapsed < Duration::from_secs(100), "{}", r.context());
        let lines = watchdog_lines(&r);
        assert_eq!(
            lines.len(),
            1,
            "exactly one watchdog message\n{}",
            r.context()
        );
        let m = lines[0];
        // Two clocks run out about together: rank 3's silence ("for 5 s"
        // or "for 5.1 s": the monitor's tick) and the collective the
        // others wait in for it. Either names rank 3.
        let silent = m.contains(": rank 3 is gone: no word from it for 5")
            && m.contains("the process is stopped or its host unreachable");
        let stuck = m.contains("did not complete within 5 s") && m.contains("not arrived: rank 3");
        assert!(silent || stuck, "{m}");
        let left = c.wait_empty(Duration::from_secs(20));
        assert!(left.is_empty(), "processes left on the hosts: {left:?}");
        c.down();
        Ok(())
    }

    /// Nothing with the run's prefix is left: after `down` with a process
    /// still running on a host, after a test that fails (panics) with a
    /// cluster up, and after an `up` that fails half way.
    pub fn everything_is_gone_after_down_also_after_failures() -> Result<(), Skip> {
        // A failing test: the guard brings the cluster down on unwinding.
        let mut prefix = String::new();
        let mut sleeper = None;
        // Quiet while failing on purpose (no panic message or backtrace).
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let c = match Cluster::up(2, Some("100mbit")) {
                Ok(c) => c,
                Err(s) => return Err(s),
            };
            prefix = c.prefix.clone();
            let mut cmd = super::sim::script_cmd(&c.prefix, &["exec", "1", "sleep", "600"]);
            sleeper = Some(
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn sleep"),
            );
            // Wait until the sleep runs on host 1.
            for _ in 0..100 {
                if !c.pids(1).is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(!c.pids(1).is_empty(), "sleep did not start on host 1");
            panic!("a test failing with a cluster up");
        }));
        std::panic::set_hook(hook);
        match failed {
            Ok(Err(skip)) => return Err(skip),
            Ok(Ok(())) => unreachable!(),
            Err(_) => {}
        }
        assert_eq!(leftovers(&prefix), Vec::<String>::new());
        let mut sleeper = sleeper.expect("sleeper");
        // The process on host 1 was killed by down (a hang bound only).
        let mut gone = false;
        for _ in 0..200 {
            if sleeper.try_wait().expect("wait").is_some() {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(gone, "the process on host 1 survived down");

        // An `up` that fails half way removes what it created.
        let p = super::sim::fresh_prefix();
        let mut cmd = super::sim::script_cmd(&p, &["up", "3", "--link", "1gbit"]);
        cmd.env("SIM_CLUSTER_FAIL_AT", "1");
        let r = common::run_with_timeout(cmd, Duration::from_secs(60));
        assert_eq!(r.code, Some(1), "{}", r.context());
        assert!(r.stderr.contains("up failed; removing"), "{}", r.context());
        assert_eq!(leftovers(&p), Vec::<String>::new());

        // A plain up/down.
        let c = Cluster::up(3, Some("10gbit"))?;
        assert_eq!(c.exec(2, &["hostname"]).ok().stdout.trim(), c.host(2));
        c.down();
        Ok(())
    }

    /// Bad usage exits 2; an unprivileged user gets the distinct code 3.
    pub fn usage_errors_and_no_privileges_have_their_exit_codes() -> Result<(), Skip> {
        let p = super::sim::fresh_prefix();
        for bad in [
            &["up", "0"][..],
            &["up", "2", "--link", "fast"],
            &["frobnicate"],
        ] {
            let r =
                common::run_with_timeout(super::sim::script_cmd(&p, bad), Duration::from_secs(30));
            assert_eq!(r.code, Some(2), "{bad:?}\n{}", r.context());
        }
        // As nobody (when this runs as root and setpriv exists).
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let setpriv = std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok();
        if root && setpriv {
            let mut cmd = std::process::Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"])
                .arg(super::sim::script())
                .args(["--prefix", &p, "up", "1"]);
            let r = common::run_with_timeout(cmd, Duration::from_secs(30));
            assert_eq!(r.code, Some(super::sim::EXIT_NOPRIV), "{}", r.context());
            assert!(r.stderr.contains("no privileges"), "{}", r.context());
        }
        Ok(())
    }
}

#[cfg(feature = "mpi")]
fn main() {
    use tests::*;
    sim::harness(&[
        (
            "cluster_usage_errors_and_no_privileges_have_their_exit_codes",
            usage_errors_and_no_privileges_have_their_exit_codes,
        ),
        (
            "cluster_info_shows_two_hosts_and_local_ranks_per_host",
            info_shows_two_hosts_and_local_ranks_per_host,
        ),
        (
            "cluster_world_size_invariance_2_hosts_x_2_ranks_ring_and_mpi",
            world_size_invariance_2_hosts_x_2_ranks_ring_and_mpi,
        ),
        (
            "cluster_a_rank_killed_on_the_second_host_is_named",
            a_rank_killed_on_the_second_host_is_named,
        ),
        (
            "cluster_a_rank_stalled_on_the_second_host_is_named",
            a_rank_stalled_on_the_second_host_is_named,
        ),
        (
            "cluster_a_rank_stopped_on_the_second_host_is_named",
            a_rank_stopped_on_the_second_host_is_named,
        ),
        (
            "cluster_everything_is_gone_after_down_also_after_failures",
            everything_is_gone_after_down_also_after_failures,
        ),
    ]);
}

/// The build without MPI: the runs need mpirun; nothing to run.
#[cfg(not(feature = "mpi"))]
fn main() {
    sim::harness(&[]);
}
