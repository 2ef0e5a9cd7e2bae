//! The `ringtrain` binary: every rank runs this same program.

use clap::Parser;

use ringtrain::cli::{BenchCommand, Cli, Command, DataCommand};
use ringtrain::error::Error;
use ringtrain::world::World;
use ringtrain::{app, bench};

fn main() {
    ringtrain::cli::set_gemm_threads_from_args();
    let world = World::init();
    // Parse after MPI is up so that only rank 0 prints a usage error.
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            if world.is_root() {
                let _ = e.print();
            }
            world.exit(code);
        }
    };
    let comm = world.comm();
    let result = match &cli.command {
        Command::Train(a) => app::train::run(a, &world, &*comm),
        Command::Info => app::info::run(&world, &*comm),
        Command::Data(DataCommand::Synth {
            out,
            seed,
            train,
            val,
        }) => app::data::synth(&*comm, out, *seed, *train, *val),
        Command::Bench(BenchCommand::Train(a)) => bench::train::run(a, &world, &*comm),
        Command::Bench(BenchCommand::Allreduce(a)) => bench::allreduce::run(a, &world, &*comm),
    };
    drop(comm);
    match result {
        Ok(()) => world.exit(0),
        // Another rank failed and printed the reason.
        Err(Error::OtherRank(_)) => world.exit(2),
        Err(e) => {
            eprintln!("ringtrain: error: {e}");
            world.exit(2)
        }
    }
}
