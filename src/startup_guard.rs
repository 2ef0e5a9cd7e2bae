//! The start-up guard: the part of a run before the watchdog exists.
//!
//! The watchdog is set up by a collective, after MPI_Init and the first
//! agreements between ranks. A rank that is stopped, killed without a
//! trace or unreachable before that point would leave the others waiting
//! inside MPI_Init or that first collective for ever, silently. So before
//! MPI_Init each rank starts a timer thread of its own (no network needed):
//! if the watchdog (or, for commands without one, the first collectives)
//! is not up within `--rendezvous-timeout`, the rank says what it was
//! waiting for and ends with the watchdog's exit code. Rank 0 speaks
//! first; the others wait 2 s more, so that a launcher tearing the job
//! down after rank 0 usually leaves one message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The exit code of a rank the guard ends: the watchdog's
/// (`watchdog::EXIT_CODE` is this one).
pub const EXIT_CODE: i32 = 3;

static DISARMED: AtomicBool = AtomicBool::new(false);

/// Starts the guard of this process (`timeout` zero: none).
pub fn arm(timeout: Duration, rank: usize) {
    if timeout.is_zero() {
        return;
    }
    let t0 = Instant::now();
    let grace = if rank == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs(2)
    };
    let spawned = std::thread::Builder::new()
        .name("ringtrain-startup-guard".into())
        .spawn(move || {
            while t0.elapsed() < timeout + grace {
                if DISARMED.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if DISARMED.load(Ordering::SeqCst) {
                return;
            }
            crate::say!(
                "ringtrain: rank {rank}: start-up did not finish within {} s \
                 (--rendezvous-timeout): MPI_Init or the first exchange between the ranks \
                 is still waiting, for a rank that was stopped, crashed or cannot be \
                 reached; ending this rank",
                timeout.as_secs_f64().round()
            );
            // SAFETY: _exit is async-signal-safe and takes no locks (the
            // main thread may be inside MPI_Init).
            unsafe { libc::_exit(EXIT_CODE) }
        });
    // Without a thread there is no guard; the run itself goes on.
    drop(spawned);
}

/// Start-up is over (every rank reached the watchdog, or the first
/// collectives): the guard stands down.
pub fn disarm() {
    DISARMED.store(true, Ordering::SeqCst);
}
