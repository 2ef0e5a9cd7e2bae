//! The `ringtrain` binary: every rank runs this same program.

use ringtrain::cli::{BenchCommand, Command, DataCommand};
use ringtrain::comm::Communicator;
use ringtrain::error::Error;
use ringtrain::world::{self, World};
use ringtrain::{app, bench};

fn main() {
    // First, before any thread exists (it sets an environment variable).
    ringtrain::cli::set_gemm_threads_from_args();
    // Also before any thread: OpenMPI parameters (TCP for the ring; no
    // probing for an absent fabric).
    #[cfg(feature = "mpi")]
    ringtrain::comm::ompi_params::apply();
    // Parse before the world exists: `--bootstrap` decides whether MPI is
    // initialised at all. Every rank parses the same arguments, so all fail
    // alike; the one the launcher's environment calls rank 0 prints.
    let cli = match ringtrain::cli::help::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if !world::process_is_env_root() {
                if e.use_stderr() {
                    world::exit_after_root_reports(e.exit_code());
                }
                std::process::exit(e.exit_code());
            }
            // `--help` and `--version` go to stdout, errors to stderr.
            let styled = e.render();
            let mut text = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                styled.ansi().to_string()
            } else {
                styled.to_string()
            };
            let args: Vec<String> = std::env::args().collect();
            if e.use_stderr() {
                if let Some(tip) = ringtrain::cli::help::usage_hint(&args) {
                    text = format!("{}\n\n{tip}", text.trim_end());
                }
                ringtrain::say!("{}", text.trim_end());
            } else {
                let _ = e.print();
            }
            std::process::exit(e.exit_code());
        }
    };
    // `plot` only reads a file and draws: no world, no MPI. Started by a
    // launcher on several ranks, the launcher's rank 0 alone draws (one
    // PNG written once, one line printed).
    if let Command::Plot(a) = &cli.command {
        if !world::process_is_env_root() {
            std::process::exit(0);
        }
        match app::plot::run(a) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                ringtrain::say!("ringtrain: error: {e}");
                std::process::exit(2);
            }
        }
    }
    ringtrain::fault::at_startup(world::env_rank());
    let world = match World::init(&cli.bootstrap_options()) {
        Ok(w) => w,
        Err(e) => {
            if !e.print {
                world::exit_after_root_reports(2);
            }
            ringtrain::say!("ringtrain: error: {}", e.message);
            std::process::exit(2);
        }
    };
    // GPU ranks run every collective over NCCL (with or without MPI);
    // everything else but `info` needs MPI when there is more than one rank.
    if cli.wants_nccl(world.size) {
        match app::check_gpu_before_nccl(&cli, &world) {
            Ok(()) => {}
            Err(Error::OtherRank(_)) => world.exit(2),
            Err(e) => {
                ringtrain::say!("ringtrain: error: {e}");
                world.exit(2)
            }
        }
    }
    let comm: Box<dyn Communicator> = if cli.wants_nccl(world.size) {
        match ringtrain::comm::nccl::world_comm(&world) {
            Ok(c) => Box::new(c),
            Err(e) => {
                // Another rank failed and printed the reason.
                if !matches!(e, Error::OtherRank(_)) {
                    ringtrain::say!("ringtrain: error: {e}");
                }
                world.exit(2)
            }
        }
    } else {
        if !matches!(cli.command, Command::Info) {
            if let Err(msg) = world.check_collectives() {
                if world.is_root() {
                    ringtrain::say!("ringtrain: error: {msg}");
                }
                world.exit(2);
            }
        }
        ringtrain::comm::control(&world)
    };
    // Commands without a watchdog: the world and its first collective are
    // up, start-up is over (train and bench train end it when their
    // watchdog is up).
    if !matches!(
        cli.command,
        Command::Train(_) | Command::Bench(BenchCommand::Train(_))
    ) {
        ringtrain::startup_guard::disarm();
    }
    let result = match &cli.command {
        Command::Train(a) => app::train::run(a, &world, &*comm),
        Command::Info => app::info::run(&world, &*comm),
        Command::Data(DataCommand::Synth {
            out,
            format,
            seed,
            train,
            val,
        }) => app::data::synth(&*comm, out, *format, *seed, *train, *val),
        Command::Bench(BenchCommand::Train(a)) => bench::train::run(a, &world, &*comm),
        Command::Bench(BenchCommand::Allreduce(a)) => bench::allreduce::run(a, &world, &*comm),
        Command::Plot(a) => app::plot::run(a),
    };
    drop(comm);
    match result {
        Ok(()) => world.exit(0),
        // Another rank failed and printed the reason.
        Err(Error::OtherRank(_)) => world.exit(2),
        // Every rank found the same NaN/Inf at the same step: one message.
        Err(e @ Error::NonFinite(_)) => {
            if world.is_root() {
                ringtrain::say!("ringtrain: error: {e}");
            }
            world.exit(4)
        }
        Err(e) => {
            ringtrain::say!("ringtrain: error: {e}");
            world.exit(2)
        }
    }
}
