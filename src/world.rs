//! Who this process is: rank, world size, local rank, and how that was
//! learnt. Also the rule that a panic on any rank ends the whole job.

use crate::comm::{CommKind, Communicator, Wire};

/// How the ranks were started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// MPI (mpirun/srun, or a singleton MPI start without a launcher).
    Mpi,
    /// No MPI in this build: a world of one rank.
    Single,
}

pub struct World {
    pub rank: usize,
    pub size: usize,
    /// Rank among the ranks on this host, and how many share the host.
    pub local_rank: usize,
    pub local_size: usize,
    pub host: String,
    pub bootstrap: Bootstrap,
    /// MPI library version string, when MPI is in use.
    pub mpi_library: Option<String>,
    #[cfg(feature = "mpi")]
    universe: Option<mpi::environment::Universe>,
}

impl World {
    /// Initialises MPI (when built with it) and installs the panic hook.
    pub fn init() -> World {
        let world = Self::bootstrap();
        install_panic_hook(world.rank, world.size);
        world
    }

    #[cfg(feature = "mpi")]
    fn bootstrap() -> World {
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
            mpi_library: mpi::environment::library_version()
                .ok()
                .map(|v| v.split([',', '\n']).next().unwrap_or("").trim().to_string()),
            universe: Some(universe),
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn bootstrap() -> World {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            local_size: 1,
            host: std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
            bootstrap: Bootstrap::Single,
            mpi_library: None,
        }
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// The plain communicator (MPI_Allreduce, f32 wire) for set-up and
    /// control messages.
    pub fn comm(&self) -> Box<dyn Communicator> {
        crate::comm::create(self.size, CommKind::Mpi, Wire::F32)
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
    pub fn abort(&self, code: i32) -> ! {
        abort_job(self.size, code)
    }
}

fn abort_job(size: usize, code: i32) -> ! {
    #[cfg(feature = "mpi")]
    if size > 1 {
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
        eprintln!("ringtrain: rank {rank}: internal error, aborting all ranks");
        default(info);
        abort_job(size, 101);
    }));
}

/// Whether MPI has been initialised in this process (and not finalised).
#[cfg(feature = "mpi")]
pub fn mpi_is_up() -> bool {
    mpi::environment::is_initialized() && !mpi::environment::is_finalized()
}
