//! No silent hangs: a watchdog on every rank (`--comm-timeout`).
//!
//! MPI calls cannot be interrupted and MPI runs at THREAD_SERIALIZED, so
//! the watchdog never touches MPI. It talks over a TCP side channel
//! instead: rank 0 listens, every other rank connects to it (rank 0's
//! address travels through `Communicator::all_gather_bytes`, so this works
//! with any communicator), and a thread on each rank reports the rank's
//! [`Mark`] (collective number, step, operation, in or out) when it changes
//! and every 0.5 s.
//!
//! Rank 0's monitor ends the job, after ONE message, when
//! * some rank has been inside collective #k for longer than the timeout:
//!   the message names the step, the operation and the ranks not in #k
//!   (unless each of those is busy with long local work that reports
//!   progress at least once per timeout: rank 0 writing a checkpoint, see
//!   [`Marker::busy`]);
//! * a rank's connection closes without a goodbye (killed, OOM, crashed):
//!   at once;
//! * a rank has not been heard from for longer than the timeout.
//!
//! It tells every rank to exit with [`EXIT_CODE`], then exits itself. A
//! rank that loses rank 0 without a goodbye exits likewise, and a rank
//! stuck in a collective for well past the timeout exits on its own if
//! rank 0 has not ended the job and has fallen silent (rank 0's monitor
//! says it is alive every 0.5 s). A clean end sends goodbyes; a rank that
//! ends the job itself (MPI_Abort after its own message) says so first,
//! so that its disappearance is not reported a second time.
//!
//! Test switches: `RINGTRAIN_WATCHDOG_PORT` (rank 0's port, default any
//! free one) and `RINGTRAIN_WATCHDOG_HOST` (the address of rank 0 the
//! other ranks connect to; default 127.0.0.1 on rank 0's host, rank 0's
//! host name elsewhere).

mod judge;
mod marker;
mod net;
mod threads;
mod watched;
mod wire;

pub use judge::{Link, Verdict, View, judge};
pub use marker::{Busy, Inside, Mark, Marker};
pub use watched::{Watched, WatchedSync};

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::comm::{Communicator, agree};
use crate::error::{Error, Result};
use crate::gradsync::GradBuckets;
use crate::world::World;

/// The exit code of every rank the watchdog ends.
pub const EXIT_CODE: i32 = crate::startup_guard::EXIT_CODE;
pub const PORT_ENV: &str = "RINGTRAIN_WATCHDOG_PORT";
pub const HOST_ENV: &str = "RINGTRAIN_WATCHDOG_HOST";

/// How often the watchdog threads look at the marks and the socket.
const POLL: Duration = Duration::from_millis(100);
/// A rank reports at least this often, changed or not.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Bytes of rank 0's address record in the all-gather.
const RECORD: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A write to a peer that takes longer is given up (a peer that does not
/// read must not block the watchdog).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The watchdog of this rank; dropping it says goodbye (a clean end).
pub struct Watchdog {
    shared: Option<Arc<Shared>>,
    marker: Marker,
    thread: Option<JoinHandle<()>>,
}

/// What the watchdog threads of one process share.
struct Shared {
    rank: usize,
    timeout: Duration,
    marker: Marker,
    /// Set by a clean end or an abort: judge nothing more.
    stop: AtomicBool,
    /// Set by the one thread that ends the job.
    ending: AtomicBool,
    /// Writers: on rank 0 one per rank (by rank), elsewhere `[rank 0]`.
    out: Mutex<Vec<Option<TcpStream>>>,
    /// Rank 0: what every rank last reported.
    views: Mutex<Vec<View>>,
}

/// The watchdog of this process, for [`before_abort`].
static ACTIVE: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

impl Watchdog {
    /// No watchdog (`--comm-timeout 0`, one rank): marks nothing.
    pub fn off() -> Self {
        Watchdog {
            shared: None,
            marker: Marker::off(),
            thread: None,
        }
    }

    /// Starts the watchdog on every rank: a collective call (all ranks,
    /// same point, same `timeout`). Zero `timeout` or one rank: off.
    /// A rank that cannot set up the side channel fails the call on every
    /// rank (one message, exit 2).
    pub fn start(world: &World, comm: &dyn Communicator, timeout: Duration) -> Result<Self> {
        let started = Self::start_on_every_rank(world, comm, timeout);
        // From here the watchdog (or nothing, when off) guards the run.
        crate::startup_guard::disarm();
        started
    }

    fn start_on_every_rank(
        world: &World,
        comm: &dyn Communicator,
        timeout: Duration,
    ) -> Result<Self> {
        let (rank, size) = (comm.rank(), comm.size());
        if timeout.is_zero() || size < 2 {
            return Ok(Watchdog::off());
        }
        // Every rank on one host (the launcher says so): loopback only.
        let all_local = world.local_size == size;
        let listen_ip = net::listen_ip(all_local, &world.host);
        let listener = agree(
            comm,
            if rank == 0 {
                net::bind(listen_ip).map(Some)
            } else {
                Ok(None)
            },
        )?;
        let now = Instant::now();
        let mut views = vec![View::new(now); if rank == 0 { size } else { 0 }];
        if let Some(v) = views.first_mut() {
            v.link = Link::Open;
        }
        let marker = Marker::on();
        let shared = Arc::new(Shared {
            rank,
            timeout,
            marker: marker.clone(),
            stop: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            out: Mutex::new(
                (0..if rank == 0 { size } else { 1 })
                    .map(|_| None)
                    .collect(),
            ),
            views: Mutex::new(views),
        });

        // Rank 0 accepts from now on; the others learn where it listens.
        // A failure on rank 0 leaves its record empty: every rank then
        // fails here together (rank 0 with the reason).
        let mut record = [0u8; RECORD];
        let mut root_failed = None;
        if let Some(l) = listener {
            let token = net::token();
            let started = l.local_addr().map_err(|e| fail(rank, e)).and_then(|a| {
                let s = shared.clone();
                spawn("ringtrain-watchdog-accept", move || {
                    threads::accept(l, s, token, size)
                })
                .map(|_| a.port())
            });
            match started {
                Ok(port) => {
                    let text = net::Record {
                        port,
                        token,
                        ip: listen_ip,
                        host: world.host.clone(),
                    }
                    .encode();
                    let n = text.len().min(RECORD);
                    record[..n].copy_from_slice(&text.as_bytes()[..n]);
                }
                Err(e) => root_failed = Some(e),
            }
        }
        let all = comm.all_gather_bytes(&record)?;
        if let Some(e) = root_failed {
            return Err(e);
        }
        let rec = match net::Record::parse(&all[..RECORD]) {
            Ok(r) => r,
            Err(_) if all[0] == 0 => return Err(Error::OtherRank(0)),
            Err(e) => return Err(e),
        };
        let stream = agree(
            comm,
            if rank == 0 {
                Ok(None)
            } else {
                crate::fault::before_watchdog_connect(crate::fault::from_env(), rank);
                net::connect(&rec, &world.host, rank).map(Some)
            },
        )?;

        let thread = match stream {
            None => {
                let s = shared.clone();
                spawn("ringtrain-watchdog", move || threads::monitor(s))?
            }
            Some(stream) => {
                lock(&shared.out)[0] = Some(stream.try_clone().map_err(|e| fail(rank, e))?);
                let s = shared.clone();
                spawn("ringtrain-watchdog", move || threads::report(stream, s))?
            }
        };
        *lock(&ACTIVE) = Some(shared.clone());
        crate::world::set_before_abort(before_abort);
        Ok(Watchdog {
            shared: Some(shared),
            marker,
            thread: Some(thread),
        })
    }

    /// The marks of this rank (off when the watchdog is).
    pub fn marker(&self) -> &Marker {
        &self.marker
    }

    /// The training loop is at `step` (named in the watchdog's message).
    pub fn set_step(&self, step: u64) {
        self.marker.set_step(step)
    }

    /// `comm` with every collective marked.
    pub fn watch<'a>(&self, comm: &'a dyn Communicator) -> Watched<'a> {
        Watched {
            inner: comm,
            marker: self.marker.clone(),
        }
    }

    /// `sync` with its final wait marked as one collective.
    pub fn watch_grads(&self, sync: Box<dyn GradBuckets>) -> Box<dyn GradBuckets> {
        Box::new(WatchedSync {
            inner: sync,
            marker: self.marker.clone(),
        })
    }
}

impl Drop for Watchdog {
    /// A clean end: stop watching, then say goodbye (rank 0 to every rank,
    /// the others to rank 0), so that the end is not taken for a death.
    fn drop(&mut self) {
        let Some(s) = self.shared.take() else { return };
        s.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join(); // within one POLL
        }
        // A rank whose hello is still being read (a short command can end
        // first) must get the goodbye too.
        let t0 = Instant::now();
        while !threads::every_rank_connected(&s) && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(2));
        }
        s.send_all(&wire::Msg::Bye);
        let mut active = lock(&ACTIVE);
        if active.as_ref().is_some_and(|a| Arc::ptr_eq(a, &s)) {
            *active = None;
        }
    }
}

/// Called just before this rank ends the whole job itself (MPI_Abort after
/// its own message, a panic): tells the peers, so that this rank's
/// disappearance is not reported as a second, misleading message. Never
/// blocks on a lock (it runs in the panic hook).
pub fn before_abort() {
    let Ok(active) = ACTIVE.try_lock() else {
        return;
    };
    let Some(s) = active.as_ref() else { return };
    s.stop.store(true, Ordering::SeqCst);
    if let Ok(out) = s.out.try_lock() {
        for mut w in out.iter().flatten() {
            let _ = w.write_all(wire::Msg::Abort.encode().as_bytes());
        }
    }
}

impl Shared {
    /// Writes `msg` to every peer; errors are ignored (a gone peer is
    /// noticed by its reader).
    fn send_all(&self, msg: &wire::Msg) {
        let line = msg.encode();
        for mut w in lock(&self.out).iter().flatten() {
            let _ = w.write_all(line.as_bytes());
        }
    }

    /// Rank 0: judges the reports and ends the job if it must.
    fn check(&self) {
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let verdict = {
            let mut views = lock(&self.views);
            if let (Some(m), Some(v)) = (self.marker.get(), views.first_mut()) {
                (v.seq, v.step, v.inside, v.since, v.heard) =
                    (m.seq, m.step, m.inside, m.since, now);
                v.busy = m.busy.map(|w| (w.to_string(), m.progress));
                if v.op != m.op {
                    v.op = m.op.to_string();
                }
            }
            judge(&views, now, self.timeout)
        };
        if let Some(v) = verdict {
            self.end_job(&v.message());
        }
    }

    /// Rank 0: prints the one message, tells every rank to exit, exits.
    fn end_job(&self, message: &str) {
        if self.ending.swap(true, Ordering::SeqCst) {
            return; // another thread is ending the job
        }
        crate::say!("{message}");
        self.send_all(&wire::Msg::Exit(EXIT_CODE));
        // End each connection after the exit line (FIN, not the reset a
        // close with unread reports would send, which can overtake it), and
        // give the ranks a moment to read it: each then ends quietly
        // instead of reporting rank 0 lost.
        for w in lock(&self.out).iter().flatten() {
            let _ = w.shutdown(std::net::Shutdown::Write);
        }
        // Until each rank has closed its end (it read the line and exited),
        // or 2 s: a close of ours with its reports unread would reset the
        // connection, and a reset can discard the line before it is read.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2)
            && lock(&self.views)
                .iter()
                .skip(1)
                .any(|v| v.link == Link::Open)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        exit_now(EXIT_CODE)
    }

    /// A rank other than 0: rank 0 went away without a goodbye.
    fn lost_root(&self, quiet: bool) -> ! {
        // When the launcher is tearing the job down (rank 0 ended it, or
        // another rank died), this rank is stopped in a moment anyway:
        // wait for that before claiming rank 0 was lost. 3 s: stopping the
        // ranks of a second host took longer than 0.5 s with busy cores,
        // and once longer than 1 s on an idle machine (CI, a rank killed
        // on the second of two simulated hosts while mpirun killed rank 0
        // before its exit line went out). A rank 0 that really died is
        // reported 3 s late, within any --comm-timeout.
        std::thread::sleep(Duration::from_secs(3));
        if !quiet {
            let step = self.marker.get().map_or(0, |m| m.step);
            crate::say!(
                "ringtrain: watchdog: rank {}: step {step}: lost the connection to rank 0 \
                 without a goodbye (rank 0 was killed, crashed or ran out of memory, or its \
                 host is unreachable); ending this rank",
                self.rank
            );
        }
        exit_now(EXIT_CODE)
    }
}

/// Ends this process at once with `code`, from a watchdog thread while the
/// main thread may be blocked inside an MPI call.
///
/// `_exit`, not `std::process::exit`: `exit` would run the C atexit
/// handlers (MPI's among them) on this thread while the main thread is
/// still inside MPI, and such a handler can block on a lock the stuck
/// call holds, which would turn the watchdog itself into a hang. `_exit`
/// ends the process in the kernel: no handler runs, the sockets close
/// (so the peers notice at once), and the launcher (mpirun) sees a
/// non-zero exit and ends the remaining ranks. stderr is unbuffered, so
/// the message already printed is not lost. Buffered output (the last
/// lines of `--metrics-out`) may be: the run has failed anyway, and
/// `--save` files are written atomically, so none is left half-written.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no locks.
    unsafe { libc::_exit(code) }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::Comm(format!("watchdog: cannot start a thread: {e}")))
}

fn fail(rank: usize, e: std::io::Error) -> Error {
    Error::Comm(format!("watchdog: rank {rank}: {e}"))
}

/// A panic elsewhere while a lock was held leaves the data usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
