//! Helpers for tests on a simulated cluster (launch/sim-cluster.sh): a
//! guard that brings a cluster up and always down again, the check that
//! nothing of a run is left behind, and a small test harness (these test
//! files set `harness = false` in Cargo.toml) that reports a test skipped
//! as *ignored* — with a visible "skipped: ..." line — when network
//! namespaces are refused, so that a skip is never counted as a pass.
#![allow(dead_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, Run};

/// The exit code of launch/sim-cluster.sh for "no privileges".
pub const EXIT_NOPRIV: i32 = 3;

/// Why a test did not run.
#[derive(Debug)]
pub struct Skip(pub String);

/// Every prefix a test brought up (checked for leftovers after the test).
static PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A fresh prefix: "rt" + 6 hex digits from the pid and a counter.
pub fn fresh_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let v = (std::process::id().wrapping_mul(31).wrapping_add(n * 0x9e37)) & 0xff_ffff;
    let p = format!("rt{v:06x}");
    PREFIXES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(p.clone());
    p
}

pub fn script() -> PathBuf {
    common::root().join("launch/sim-cluster.sh")
}

/// `launch/sim-cluster.sh --prefix P ARGS...`, not started yet.
pub fn script_cmd(prefix: &str, args: &[&str]) -> Command {
    let mut cmd = common::without_launcher_env(Command::new("bash"));
    cmd.arg(script()).args(["--prefix", prefix]).args(args);
    cmd.env_remove("SIM_PREFIX");
    cmd
}

/// A simulated cluster, brought down when dropped (also on a panic).
pub struct Cluster {
    pub prefix: String,
    pub n: usize,
}

impl Cluster {
    /// `up N [--link RATE]`; `Err(Skip)` when namespaces are refused.
    pub fn up(n: usize, link: Option<&str>) -> Result<Cluster, Skip> {
        Self::up_env(n, link, &[])
    }

    pub fn up_env(n: usize, link: Option<&str>, env: &[(&str, &str)]) -> Result<Cluster, Skip> {
        let prefix = fresh_prefix();
        let ns = n.to_string();
        let mut args = vec!["up", ns.as_str()];
        if let Some(l) = link {
            args.extend(["--link", l]);
        }
        let mut cmd = script_cmd(&prefix, &args);
        cmd.envs(env.iter().copied());
        let r = common::run_with_timeout(cmd, Duration::from_secs(60));
        if r.code == Some(EXIT_NOPRIV) {
            return Err(Skip(format!(
                "no network namespaces here ({})",
                r.stderr.trim()
            )));
        }
        assert_eq!(r.code, Some(0), "sim-cluster up failed\n{}", r.context());
        assert!(
            r.stdout.contains(&format!("SIM_PREFIX={prefix}")),
            "{}",
            r.context()
        );
        Ok(Cluster { prefix, n })
    }

    /// Host I's name.
    pub fn host(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// `sim-cluster.sh mpirun ARGS...` with `env`, killed after `timeout`.
    pub fn mpirun(&self, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Run {
        let mut cmd = script_cmd(&self.prefix, &["mpirun"]);
        cmd.args(args).envs(env.iter().copied());
        cmd.env_remove("RINGTRAIN_FAULT");
        cmd.envs(env.iter().copied());
        common::run_with_timeout(cmd, timeout)
    }

    /// `mpirun -np N ringtrain ARGS...` across the hosts.
    pub fn ringtrain(&self, np: usize, args: &[&str], env: &[(&str, &str)]) -> Run {
        let np = np.to_string();
        let bin = common::bin();
        let mut all = vec!["-np", np.as_str(), bin.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        self.mpirun(&all, env, Duration::from_secs(120))
    }

    /// `sim-cluster.sh exec HOST CMD...`.
    pub fn exec(&self, host: usize, cmd: &[&str]) -> Run {
        let h = host.to_string();
        let mut c = script_cmd(&self.prefix, &["exec", &h]);
        c.args(cmd);
        common::run_with_timeout(c, Duration::from_secs(60))
    }

    /// The pids of the processes on host I (`ip netns pids`).
    pub fn pids(&self, i: usize) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.host(i)])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Waits (up to `bound`, a hang bound) until no process is left on
    /// any host; returns what is left then.
    pub fn wait_empty(&self, bound: Duration) -> Vec<(String, Vec<String>)> {
        let start = Instant::now();
        loop {
            let left: Vec<(String, Vec<String>)> = (0..self.n)
                .map(|i| (self.host(i), self.pids(i)))
                .filter(|(_, p)| !p.is_empty())
                .collect();
            if left.is_empty() || start.elapsed() > bound {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `down`, asserting success.
    pub fn down(self) {
        let prefix = self.prefix.clone();
        std::mem::forget(self);
        let r = common::run_with_timeout(script_cmd(&prefix, &["down"]), Duration::from_secs(60));
        assert_eq!(r.code, Some(0), "sim-cluster down failed\n{}", r.context());
        assert_eq!(leftovers(&prefix), Vec::<String>::new());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ =
            common::run_with_timeout(script_cmd(&self.prefix, &["down"]), Duration::from_secs(60));
    }
}

/// Everything with the run's prefix that still exists: namespaces, links
/// in the root namespace, /etc/netns entries, the state directory.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    let tag = format!("{prefix}-");
    for args in [&["netns", "list"][..], &["-o", "link", "show"][..]] {
        if let Ok(out) = Command::new("ip").args(args).output() {
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if l.contains(&tag) {
                    left.push(format!("ip {}: {l}", args.join(" ")));
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/etc/netns") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&tag) {
                left.push(format!("/etc/netns/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    let state = std::env::var("SIM_STATE_DIR").unwrap_or_else(|_| "/run/ringtrain-sim".into());
    let st = PathBuf::from(state).join(prefix);
    if st.exists() {
        left.push(st.display().to_string());
    }
    left
}

/// One test: Ok(()) ran and passed, Err(Skip) did not run.
pub type TestFn = fn() -> Result<(), Skip>;

/// Runs `tests` like libtest (`--list`, name filters, `--skip`, `--exact`), in
/// order, one at a time; after each, checks that none of the clusters it
/// brought up left anything behind. Prints libtest's lines, so that
/// launch/test.sh counts a skipped test as ignored.
pub fn harness(tests: &[(&str, TestFn)]) {
    let selection = crate::libtest_args::Selection::from_env();
    if selection.list {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let chosen: Vec<&(&str, TestFn)> = tests.iter().filter(|(n, _)| selection.selects(n)).collect();
    let filtered = tests.len() - chosen.len();
    println!(
        "\nrunning {} test{}",
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" }
    );
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failures = Vec::new();
    for (name, f) in chosen {
        PREFIXES.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let result = catch_unwind(AssertUnwindSafe(f));
        let prefixes = std::mem::take(&mut *PREFIXES.lock().unwrap_or_else(|e| e.into_inner()));
        let left: Vec<String> = prefixes.iter().flat_map(|p| leftovers(p)).collect();
        match result {
            Ok(Ok(())) if left.is_empty() => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Ok(Err(Skip(why))) if left.is_empty() => {
                println!("skipped: {why}");
                println!("test {name} ... ignored");
                ignored += 1;
            }
            Ok(_) => {
                println!("test {name} ... FAILED");
                failures.push((name, format!("left behind: {left:?}")));
                failed += 1;
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                println!("test {name} ... FAILED");
                let extra = if left.is_empty() {
                    String::new()
                } else {
                    format!("\nalso left behind: {left:?}")
                };
                failures.push((name, format!("{msg}{extra}")));
                failed += 1;
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, msg) in &failures {
            println!("---- {name} ----\n{msg}\n");
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; {filtered} filtered out\n"
    );
    if failed > 0 {
        std::process::exit(101);
    }
}

/// The exit code of launch/sim-slurm.sh when Slurm cannot be installed.
pub const EXIT_NO_SLURM: i32 = 4;

impl Cluster {
    /// `launch/sim-slurm.sh up N`: a login/controller host (h0) and N
    /// Slurm nodes (h1..hN). `Err(Skip)` without namespaces or Slurm.
    pub fn slurm_up(n: usize) -> Result<Cluster, Skip> {
        let prefix = fresh_prefix();
        let mut cmd = common::without_launcher_env(Command::new("bash"));
        cmd.arg(common::root().join("launch/sim-slurm.sh"))
            .args(["--prefix", &prefix, "up", &n.to_string()])
            .env_remove("SIM_PREFIX");
        let r = common::run_with_timeout(cmd, Duration::from_secs(300));
        match r.code {
            Some(EXIT_NOPRIV) => {
                return Err(Skip(format!(
                    "no network namespaces here ({})",
                    r.stderr.trim()
                )));
            }
            Some(EXIT_NO_SLURM) => {
                return Err(Skip(format!(
                    "Slurm could not be installed ({})",
                    r.stderr.trim()
                )));
            }
            _ => {}
        }
        assert_eq!(r.code, Some(0), "sim-slurm up failed\n{}", r.context());
        Ok(Cluster { prefix, n: n + 1 })
    }

    /// `launch/sim-slurm.sh exec CMD...` (on the login host, SLURM_CONF
    /// set), in the repository root, with `env`.
    pub fn slurm(&self, cmd: &[&str], env: &[(&str, &str)], timeout: Duration) -> Run {
        let mut c = common::without_launcher_env(Command::new("bash"));
        c.arg(common::root().join("launch/sim-slurm.sh"))
            .args(["--prefix", &self.prefix, "exec"])
            .args(cmd)
            .current_dir(common::root())
            .env_remove("SIM_PREFIX")
            .env_remove("RESUME_DIR")
            .env_remove("LAUNCH")
            .envs(env.iter().copied());
        common::run_with_timeout(c, timeout)
    }
}
