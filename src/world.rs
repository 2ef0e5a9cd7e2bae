//! Who this process is: rank, world size, local rank, and how that was
//! learnt. Also the rule that a panic on any rank ends the whole job.
//!
//! Two ways to start ranks (`--bootstrap`):
//!
//! * **mpi**: `MPI_Init`; MPI says rank and size (mpirun, `srun
//!   --mpi=pmix`, or a singleton start without a launcher).
//! * **env**: the launcher's environment says them, MPI is never touched:
//!   torchrun-style `RANK`/`WORLD_SIZE`/`LOCAL_RANK` (also what
//!   `launch/local.sh` sets), then `OMPI_COMM_WORLD_*` (mpirun starting a
//!   build without MPI), then `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID`
//!   (srun without an MPI plugin). None of them: a world of one rank.
//!
//! `auto` (the default) is MPI in a build with MPI and env in one without,
//! with one exception: a build with MPI that was started by a launcher
//! which is not MPI's (torchrun-style or Slurm-step variables saying more
//! than one rank, and no MPI launcher variable) uses env, because
//! `MPI_Init` there would make every process a separate one-rank world.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;
use crate::rendezvous::{self, Rendezvous};

/// `--bootstrap`: how this process learns its rank and the world size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BootstrapMode {
    /// MPI_Init: mpirun, srun --mpi=pmix, or one rank alone (an error in a
    /// build without MPI).
    Mpi,
    /// The launcher's variables (RANK/WORLD_SIZE/LOCAL_RANK,
    /// OMPI_COMM_WORLD_*, SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID; none: one
    /// rank); never touches MPI.
    Env,
    /// MPI_Init in a build with MPI, unless RANK/WORLD_SIZE or an srun step
    /// without an MPI plugin started more than one rank, or no launcher
    /// started this one process; env in a build without MPI.
    Auto,
}

/// How the ranks were started (what `--bootstrap` resolved to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// MPI (mpirun/srun, or a singleton MPI start without a launcher).
    Mpi,
    /// The launcher's environment (or no launcher: one rank), no MPI.
    Env,
}

impl fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bootstrap::Mpi => "mpi",
            Bootstrap::Env => "env",
        })
    }
}

/// What the command line says about starting the world.
#[derive(Clone, Debug)]
pub struct BootstrapOptions {
    pub mode: BootstrapMode,
    /// `--rendezvous` (or `RINGTRAIN_RENDEZVOUS`): a directory all ranks see.
    pub rendezvous: Option<PathBuf>,
    /// How long a rank waits for rank 0's rendezvous file.
    pub rendezvous_timeout: Duration,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            mode: BootstrapMode::Auto,
            rendezvous: None,
            rendezvous_timeout: Duration::from_secs(120),
        }
    }
}

/// The world could not be set up. `print` says whether this process
/// prints the message (rank 0 only, so it appears once per job).
#[derive(Debug)]
pub struct InitError {
    pub message: String,
    pub print: bool,
}

pub struct World {
    pub rank: usize,
    pub size: usize,
    /// Rank among the ranks on this host, and how many share the host
    /// (`local_size` is 0 when the launcher does not say).
    pub local_rank: usize,
    pub local_size: usize,
    pub host: String,
    pub bootstrap: Bootstrap,
    /// Why this bootstrap was used, for `ringtrain info` and messages
    /// (e.g. "auto: built with MPI").
    pub bootstrap_reason: String,
    /// MPI library version string, when MPI is in use.
    pub mpi_library: Option<String>,
    /// Identifies this launch (env bootstrap; see [`rendezvous::run_id_from_env`]).
    pub run_id: Option<String>,
    /// `--rendezvous` directory and timeout.
    pub rendezvous_dir: Option<PathBuf>,
    pub rendezvous_timeout: Duration,
    #[cfg(feature = "mpi")]
    universe: Option<mpi::environment::Universe>,
}

impl World {
    /// Learns rank and size as `opts` says (initialising MPI or not), and
    /// installs the panic hook.
    pub fn init(opts: &BootstrapOptions) -> Result<World, InitError> {
        let world = Self::bootstrap(opts, &|k| std::env::var(k).ok())?;
        install_panic_hook(world.rank, world.size);
        Ok(world)
    }

    fn bootstrap(opts: &BootstrapOptions, get: &Getter) -> Result<World, InitError> {
        let launched_by_mpi = mpi_launcher(get);
        let env = EnvWorld::from_vars(get);
        let (use_mpi, reason) = match opts.mode {
            BootstrapMode::Mpi => {
                if !cfg!(feature = "mpi") {
                    return Err(InitError {
                        message: "--bootstrap mpi: this ringtrain was built without MPI \
                                  (cargo feature `mpi`). Use --bootstrap env, or install \
                                  libopenmpi-dev and openmpi-bin (launch/setup.sh does) and \
                                  build with the default features: cargo build --release"
                            .to_string(),
                        print: env_says_root(get),
                    });
                }
                (true, "mpi: --bootstrap mpi".to_string())
            }
            BootstrapMode::Env => (false, "env:".to_string()),
            BootstrapMode::Auto if !cfg!(feature = "mpi") => {
                (false, "auto: built without MPI;".to_string())
            }
            BootstrapMode::Auto => match (launched_by_mpi, &env) {
                (Some(var), _) => (
                    true,
                    format!("auto: built with MPI, started by an MPI launcher ({var} is set)"),
                ),
                (None, Ok(e)) if e.size > 1 && e.auto_may_use => (
                    false,
                    format!(
                        "auto: built with MPI, but no MPI launcher started these {} ranks;",
                        e.size
                    ),
                ),
                // One process that no launcher started: nothing to
                // communicate, and a singleton MPI_Init costs ~0.4 s (it
                // spawns a helper daemon).
                (None, Ok(e)) if e.source_vars == "none" => (
                    false,
                    "auto: built with MPI, but one process and no launcher: no MPI needed;"
                        .to_string(),
                ),
                (None, _) => (true, "auto: built with MPI".to_string()),
            },
        };
        let mut world = if use_mpi {
            // Until the watchdog is up, a rank that never arrives must not
            // leave the others waiting in MPI_Init for ever.
            let rank = env.as_ref().map_or(0, |e| e.rank);
            crate::startup_guard::arm(opts.rendezvous_timeout, rank);
            let w = Self::bootstrap_mpi(reason);
            // MPI did not start these processes (e.g. srun without
            // --mpi=pmix): each would train alone as a world of one.
            if let (1, Ok(e)) = (w.size, &env) {
                if e.size > 1 && e.auto_may_use {
                    return Err(InitError {
                        message: format!(
                            "--bootstrap mpi: MPI started a world of 1 rank, but {} say {} \
                             ranks: MPI did not start them. Start them with mpirun (or srun \
                             --mpi=pmix), or use --bootstrap env",
                            e.source_vars, e.size
                        ),
                        print: e.rank == 0,
                    });
                }
            }
            w
        } else {
            // This process cannot tell its rank, so it cannot leave the
            // message to rank 0: every process with the problem prints it.
            let e = env.map_err(|message| InitError {
                message: format!("bootstrap env: {message}"),
                print: true,
            })?;
            let reason = format!("{reason} {}", e.source);
            let run_id = rendezvous::run_id_from(get);
            if e.size > 1 && run_id.is_none() {
                return Err(InitError {
                    message: format!(
                        "bootstrap env: {} ranks but no run id to tell this launch from \
                         earlier ones: set RINGTRAIN_RUN_ID to a fresh value on every rank \
                         (launch/local.sh does), or start the ranks with srun \
                         (SLURM_JOB_ID), torchrun (TORCHELASTIC_RUN_ID) or mpirun \
                         (PMIX_NAMESPACE)",
                        e.size
                    ),
                    print: e.rank == 0,
                });
            }
            World {
                rank: e.rank,
                size: e.size,
                local_rank: e.local_rank,
                local_size: e.local_size,
                host: hostname(get),
                bootstrap: Bootstrap::Env,
                bootstrap_reason: reason,
                mpi_library: None,
                run_id,
                rendezvous_dir: None,
                rendezvous_timeout: opts.rendezvous_timeout,
                #[cfg(feature = "mpi")]
                universe: None,
            }
        };
        world.rendezvous_dir = opts.rendezvous.clone();
        world.rendezvous_timeout = opts.rendezvous_timeout;
        if world.run_id.is_none() {
            world.run_id = rendezvous::run_id_from(get);
        }
        Ok(world)
    }

    #[cfg(feature = "mpi")]
    fn bootstrap_mpi(reason: String) -> World {
        use mpi::topology::Communicator as _;
        // Serialized: one thread at a time calls MPI (a communication
        // thread may own the collectives while the compute thread runs).
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .expect("MPI is initialised once, here");
        let world = universe.world();
        let local = world.split_shared(world.rank());
        World {
            rank: world.rank() as usize,
            size: world.size() as usize,
            local_rank: local.rank() as usize,
            local_size: local.size() as usize,
            host: mpi::environment::processor_name().unwrap_or_else(|_| "?".into()),
            bootstrap: Bootstrap::Mpi,
            bootstrap_reason: reason,
            mpi_library: linked_mpi_library(),
            run_id: None,
            rendezvous_dir: None,
            rendezvous_timeout: Duration::from_secs(120),
            universe: Some(universe),
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn bootstrap_mpi(_reason: String) -> World {
        unreachable!("--bootstrap mpi is refused in a build without MPI")
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Whether this world can run the CPU collectives: one rank always
    /// can, more ranks only over MPI (GPU ranks use NCCL instead, see
    /// `comm::nccl::world_comm`; main.rs does not call this for them). The error is the message for the
    /// user (print it on rank 0 only, then exit 2 on every rank).
    pub fn check_collectives(&self) -> std::result::Result<(), String> {
        if self.size <= 1 || mpi_is_up() {
            return Ok(());
        }
        let n = self.size;
        let how = if cfg!(feature = "mpi") {
            format!(
                "To run on {n} ranks, start them with mpirun (mpirun -np {n} ringtrain ...) and \
                 --bootstrap auto or mpi."
            )
        } else {
            format!(
                "This ringtrain was built without MPI: to run on {n} ranks, install \
                 libopenmpi-dev and openmpi-bin (launch/setup.sh does), build with the default \
                 features (cargo build --release) and start the ranks with mpirun (mpirun -np \
                 {n} ringtrain ...)."
            )
        };
        Err(format!(
            "{n} ranks were started without MPI (bootstrap {}), and the CPU backend needs MPI \
             for its collectives. {how} Without MPI, one rank runs alone (WORLD_SIZE=1), or GPU \
             ranks communicate over NCCL (--comm nccl).",
            self.bootstrap_reason
        ))
    }

    /// The rendezvous of this run (env bootstrap with more than one rank):
    /// the directory and run id, or a message saying which is missing.
    pub fn rendezvous(&self) -> Result<Rendezvous> {
        let dir = self.rendezvous_dir.clone().ok_or_else(|| {
            crate::error::Error::config(format!(
                "{} ranks without MPI need --rendezvous DIR (or RINGTRAIN_RENDEZVOUS): a \
                 directory every rank sees (a shared filesystem across nodes)",
                self.size
            ))
        })?;
        let run_id = self.run_id.clone().ok_or_else(|| {
            crate::error::Error::config(
                "the rendezvous needs a run id: set RINGTRAIN_RUN_ID (or run under Slurm or \
                 torchrun)",
            )
        })?;
        Ok(Rendezvous {
            dir,
            run_id,
            timeout: self.rendezvous_timeout,
        })
    }

    /// Ends this process with `code` after shutting MPI down cleanly.
    /// Every rank must call it at the same point (after an agreed outcome).
    pub fn exit(mut self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        drop(self.universe.take()); // MPI_Finalize
        let _ = &mut self;
        std::process::exit(code)
    }

    /// Ends every rank of the job at once (MPI_Abort), from any one rank.
    /// Without MPI it ends this process; the launcher ends the others.
    pub fn abort(&self, code: i32) -> ! {
        abort_job(self.size, code)
    }
}

/// Run just before this rank ends the whole job itself (set by the
/// watchdog, which tells its peers, so that this rank's end is not reported
/// as a second, misleading message). It must not block.
static BEFORE_ABORT: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs before [`World::abort`] and the panic hook end the job
/// (the first call wins; later calls are ignored).
pub fn set_before_abort(hook: fn()) {
    let _ = BEFORE_ABORT.set(hook);
}

fn abort_job(size: usize, code: i32) -> ! {
    if let Some(hook) = BEFORE_ABORT.get() {
        hook();
    }
    #[cfg(feature = "mpi")]
    if size > 1 && mpi_is_up() {
        use mpi::topology::Communicator as _;
        mpi::topology::SimpleCommunicator::world().abort(code);
    }
    let _ = size;
    std::process::exit(code)
}

/// A panic on one rank must not leave the others waiting in a collective:
/// print where it happened, then abort the whole job.
fn install_panic_hook(rank: usize, size: usize) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // println! on a closed stdout (`ringtrain info | head`): the reader
        // has gone, so end quietly, with the status a process killed by
        // SIGPIPE has, not as an internal error.
        if is_closed_output(info) {
            abort_job(size, 128 + libc::SIGPIPE);
        }
        crate::say!("ringtrain: rank {rank}: internal error, aborting all ranks");
        default(info);
        abort_job(size, 101);
    }));
}

/// Whether a panic is std's "failed printing to stdout/stderr" on a closed
/// pipe.
fn is_closed_output(info: &std::panic::PanicHookInfo) -> bool {
    let p = info.payload();
    let msg = p
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("");
    msg.starts_with("failed printing to std") && msg.contains("Broken pipe")
}

/// Whether MPI has been initialised in this process (and not finalised).
#[cfg(feature = "mpi")]
pub fn mpi_is_up() -> bool {
    mpi::environment::is_initialized() && !mpi::environment::is_finalized()
}

/// Whether MPI has been initialised in this process: never, without MPI.
#[cfg(not(feature = "mpi"))]
pub fn mpi_is_up() -> bool {
    false
}

/// Reads one environment variable (a closure, so tests need not touch the
/// process environment).
pub type Getter = dyn Fn(&str) -> Option<String>;

/// Whether this process is rank 0 as far as the launcher's environment
/// tells, before any bootstrap: no launcher variable names another rank.
/// Used to print a command-line error once per job.
pub fn env_says_root(get: &Getter) -> bool {
    [
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "PMIX_RANK",
        "SLURM_PROCID",
        "RANK",
    ]
    .iter()
    .filter_map(|k| get(k))
    .all(|v| v.trim().parse::<u64>().map_or(true, |r| r == 0))
}

/// Ends a rank that found the same error as every other rank before the
/// world exists, and left reporting it to rank 0. It waits a moment first:
/// a launcher tears the job down when the first rank exits with an error,
/// and rank 0 must have written its message by then.
pub fn exit_after_root_reports(code: i32) -> ! {
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::process::exit(code)
}

/// The MPI library this build links ("Open MPI v4.1.4"): the first part of
/// MPI_Get_library_version, which may be called before MPI_Init.
#[cfg(feature = "mpi")]
pub fn linked_mpi_library() -> Option<String> {
    mpi::environment::library_version()
        .ok()
        .map(|v| v.split([',', '\n']).next().unwrap_or("").trim().to_string())
}

/// This process's rank as its launcher's variables say, if they do.
pub fn env_rank() -> Option<usize> {
    EnvWorld::from_vars(&|k| std::env::var(k).ok())
        .ok()
        .map(|e| e.rank)
}

/// [`env_says_root`] for this process.
pub fn process_is_env_root() -> bool {
    env_says_root(&|k| std::env::var(k).ok())
}

/// The variable that shows an MPI launcher started this process, if any.
fn mpi_launcher(get: &Getter) -> Option<&'static str> {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"]
        .into_iter()
        .find(|k| get(k).is_some())
}

fn hostname(get: &Getter) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| get("HOSTNAME"))
        .unwrap_or_else(|| "localhost".into())
}

/// Rank and size from the launcher's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvWorld {
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    /// 0 when the launcher does not say.
    pub local_size: usize,
    /// Where they came from, for `info` ("RANK/WORLD_SIZE from
    /// torchrun-style variables").
    pub source: String,
    /// The variable names, short ("RANK/WORLD_SIZE").
    pub source_vars: &'static str,
    /// Whether `--bootstrap auto` in a build with MPI may trust these
    /// variables over MPI (torchrun-style, or a Slurm job step).
    auto_may_use: bool,
}

impl EnvWorld {
    /// Reads the first launcher's variables present, in this order:
    /// torchrun-style, OpenMPI's, Slurm's; none: one rank. The error says
    /// which variable is wrong.
    pub fn from_vars(get: &Getter) -> std::result::Result<EnvWorld, String> {
        let num = |k: &str| -> std::result::Result<Option<usize>, String> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|_| format!("{k}={v:?} is not a non-negative integer")),
            }
        };
        let both = |rk: &str, sk: &str| -> std::result::Result<Option<(usize, usize)>, String> {
            match (num(rk)?, num(sk)?) {
                (Some(r), Some(s)) => Ok(Some((r, s))),
                (None, None) => Ok(None),
                (Some(_), None) => Err(format!("{rk} is set but {sk} is not")),
                (None, Some(_)) => Err(format!("{sk} is set but {rk} is not")),
            }
        };
        let (rank, size, local_rank, local_size, vars, what, auto_may_use) =
            if let Some((r, s)) = both("RANK", "WORLD_SIZE")? {
                let lr = num("LOCAL_RANK")?;
                let ls = num("LOCAL_WORLD_SIZE")?;
                // Without LOCAL_RANK, assume one host (local = global).
                let (lr, ls) = match (lr, ls) {
                    (Some(lr), ls) => (lr, ls.unwrap_or(0)),
                    (None, Some(ls)) => (r, ls),
                    (None, None) => (r, s),
                };
                (
                    r,
                    s,
                    lr,
                    ls,
                    "RANK/WORLD_SIZE",
                    "torchrun-style variables",
                    true,
                )
            } else if let Some((r, s)) = both("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")? {
                let lr = num("OMPI_COMM_WORLD_LOCAL_RANK")?.unwrap_or(r);
                let ls = num("OMPI_COMM_WORLD_LOCAL_SIZE")?.unwrap_or(0);
                (
                    r,
                    s,
                    lr,
                    ls,
                    "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE",
                    "OpenMPI's launcher variables",
                    false,
                )
            } else if let Some((r, s)) = both("SLURM_PROCID", "SLURM_NTASKS")? {
                let lr = num("SLURM_LOCALID")?.unwrap_or(0);
                let ls = slurm_local_size(get).unwrap_or(0);
                (
                    r,
                    s,
                    lr,
                    ls,
                    "SLURM_PROCID/SLURM_NTASKS",
                    "Slurm's variables",
                    // A job step started by srun, not the batch script itself.
                    get("SLURM_STEP_ID").is_some(),
                )
            } else {
                return Ok(EnvWorld {
                    rank: 0,
                    size: 1,
                    local_rank: 0,
                    local_size: 1,
                    source: "no launcher variables (RANK/WORLD_SIZE, OMPI_COMM_WORLD_*, \
                             SLURM_PROCID/SLURM_NTASKS): one rank"
                        .into(),
                    source_vars: "none",
                    auto_may_use: false,
                });
            };
        if size == 0 {
            return Err(format!("{vars} says a world of 0 ranks"));
        }
        if rank >= size {
            return Err(format!(
                "{vars} say rank {rank} of a world of {size} ranks (the rank must be below \
                 the size)"
            ));
        }
        if local_size > 0 && local_rank >= local_size {
            return Err(format!(
                "local rank {local_rank} is not below the local size {local_size} ({what})"
            ));
        }
        if local_rank >= size || local_size > size {
            return Err(format!(
                "local rank {local_rank} of {local_size} does not fit a world of {size} ({what})"
            ));
        }
        Ok(EnvWorld {
            rank,
            size,
            local_rank,
            local_size,
            source: format!("{vars} from {what}"),
            source_vars: vars,
            auto_may_use,
        })
    }
}

/// Tasks on this node from Slurm's compressed list ("2(x3),1") and
/// SLURM_NODEID.
fn slurm_local_size(get: &Getter) -> Option<usize> {
    let list = get("SLURM_STEP_TASKS_PER_NODE").or_else(|| get("SLURM_TASKS_PER_NODE"))?;
    let node: usize = get("SLURM_NODEID")?.trim().parse().ok()?;
    let mut per_node = Vec::new();
    for item in list.split(',') {
        let (n, times) = match item.split_once("(x") {
            Some((n, t)) => (n, t.strip_suffix(')')?.parse::<usize>().ok()?),
            None => (item, 1),
        };
        let n: usize = n.trim().parse().ok()?;
        per_node.extend(std::iter::repeat_n(n, times.min(1 << 16)));
    }
    per_node.get(node).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn no_launcher_is_one_rank() {
        let e = EnvWorld::from_vars(&vars(&[])).unwrap();
        assert_eq!((e.rank, e.size, e.local_rank, e.local_size), (0, 1, 0, 1));
    }

    #[test]
    fn torchrun_variables() {
        let e = EnvWorld::from_vars(&vars(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            // Ignored: torchrun's variables come first.
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
        ]))
        .unwrap();
        assert_eq!((e.rank, e.size, e.local_rank, e.local_size), (3, 4, 1, 2));
        assert!(e.source.contains("torchrun"), "{}", e.source);
    }

    #[test]
    fn openmpi_then_slurm_variables() {
        let e = EnvWorld::from_vars(&vars(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ]))
        .unwrap();
        assert_eq!((e.rank, e.size, e.local_rank, e.local_size), (1, 2, 1, 2));
        let e = EnvWorld::from_vars(&vars(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "7"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "1"),
            ("SLURM_STEP_TASKS_PER_NODE", "4,2(x2)"),
        ]))
        .unwrap();
        assert_eq!((e.rank, e.size, e.local_rank, e.local_size), (5, 7, 1, 2));
    }

    #[test]
    fn inconsistent_variables_are_errors() {
        for (pairs, fragment) in [
            (&[("RANK", "2"), ("WORLD_SIZE", "2")][..], "below the size"),
            (&[("RANK", "x"), ("WORLD_SIZE", "2")][..], "RANK=\"x\""),
            (&[("RANK", "0"), ("WORLD_SIZE", "-1")][..], "WORLD_SIZE"),
            (&[("RANK", "0")][..], "WORLD_SIZE is not"),
            (&[("RANK", "0"), ("WORLD_SIZE", "0")][..], "0 ranks"),
            (
                &[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "2")][..],
                "does not fit",
            ),
            (
                &[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")][..],
                "rank 4",
            ),
        ] {
            let err = EnvWorld::from_vars(&vars(pairs)).unwrap_err();
            assert!(err.contains(fragment), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn root_by_environment() {
        assert!(env_says_root(&vars(&[])));
        assert!(env_says_root(&vars(&[
            ("RANK", "0"),
            ("SLURM_PROCID", "0")
        ])));
        assert!(!env_says_root(&vars(&[("OMPI_COMM_WORLD_RANK", "1")])));
        // torchrun inside a Slurm step: RANK decides on node 0.
        assert!(!env_says_root(&vars(&[
            ("RANK", "3"),
            ("SLURM_PROCID", "0")
        ])));
        // Not a number: no opinion.
        assert!(env_says_root(&vars(&[("RANK", "x")])));
    }

    fn opts(mode: BootstrapMode) -> BootstrapOptions {
        BootstrapOptions {
            mode,
            ..Default::default()
        }
    }

    #[test]
    fn env_bootstrap_records_why() {
        let w = World::bootstrap(
            &opts(BootstrapMode::Env),
            &vars(&[
                ("RANK", "1"),
                ("WORLD_SIZE", "2"),
                ("RINGTRAIN_RUN_ID", "abc"),
            ]),
        )
        .unwrap();
        assert_eq!((w.rank, w.size, w.bootstrap), (1, 2, Bootstrap::Env));
        assert!(
            w.bootstrap_reason
                .starts_with("env: RANK/WORLD_SIZE from torchrun-style variables"),
            "{}",
            w.bootstrap_reason
        );
        assert_eq!(w.run_id.as_deref(), Some("abc"));
        let msg = w.check_collectives().unwrap_err();
        assert!(msg.contains("without MPI"), "{msg}");
    }

    #[test]
    fn env_bootstrap_needs_a_run_id_for_more_than_one_rank() {
        let e = World::bootstrap(
            &opts(BootstrapMode::Env),
            &vars(&[("RANK", "0"), ("WORLD_SIZE", "2")]),
        )
        .err()
        .unwrap();
        assert!(e.message.contains("RINGTRAIN_RUN_ID"), "{}", e.message);
        assert!(e.print);
        let e = World::bootstrap(
            &opts(BootstrapMode::Env),
            &vars(&[("RANK", "1"), ("WORLD_SIZE", "2")]),
        )
        .err()
        .unwrap();
        assert!(!e.print, "only rank 0 prints");
        // One rank needs none.
        let w = World::bootstrap(&opts(BootstrapMode::Env), &vars(&[])).unwrap();
        assert_eq!((w.size, w.bootstrap), (1, Bootstrap::Env));
        assert!(w.check_collectives().is_ok());
    }

    #[test]
    fn auto_with_a_non_mpi_launcher_uses_env() {
        // No MPI is initialised on this path in either build.
        let w = World::bootstrap(
            &opts(BootstrapMode::Auto),
            &vars(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("RINGTRAIN_RUN_ID", "r"),
            ]),
        )
        .unwrap();
        assert_eq!(w.bootstrap, Bootstrap::Env);
        assert!(w.bootstrap_reason.starts_with("auto: built with"));
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn mpi_bootstrap_without_mpi_is_an_error() {
        let e = World::bootstrap(&opts(BootstrapMode::Mpi), &vars(&[]))
            .err()
            .unwrap();
        assert!(e.message.contains("built without MPI"), "{}", e.message);
    }
}
