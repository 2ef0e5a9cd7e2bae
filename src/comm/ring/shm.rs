//! The ring's links when every rank is on one host: a one-way channel in
//! shared memory from each rank to the next, instead of MPI messages.
//!
//! Channel `c` carries rank c's chunks to rank c + 1 (mod n): [`SLOTS`]
//! slots of [`SLOT_BYTES`] and two counters, chunks written and chunks
//! read, each moved by one side only. The writer copies a chunk into slot
//! `written % SLOTS` once `written − read < SLOTS`; the reader adds the
//! chunk straight from the slot into its output (reduce-scatter) or copies
//! it out (all-gather), then counts it read. So a chunk costs one copy in
//! and one pass out, where MPI's shared-memory transport costs a copy in,
//! a copy out, and then the add. The counters run on across calls; both
//! sides cut a segment into the same chunks, so sizes need no header.
//!
//! A side that must wait spins, then polls between `sched_yield`s (which
//! give a shared core to whoever else wants it), and only after 20 ms
//! sleeps on a futex that the other side wakes when it moves the counter:
//! a rank that waits long (its peer evaluates, or stalls) stops using its
//! core.
//!
//! The segment is a file in /dev/shm, made by rank 0 with `O_EXCL` and
//! mode 0600 under a random name, filled up front (`posix_fallocate`: a
//! full /dev/shm fails here, not with SIGBUS in the middle of a step),
//! opened by the other ranks after checking that it is a regular file of
//! this user and of the size expected, and unlinked by rank 0 once every
//! rank has it mapped. Any failure on any rank makes every rank use MPI
//! (the choice is agreed collectively).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::MmapMut;
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::topology::{Communicator as _, SimpleCommunicator};

/// Bytes per slot: one chunk, small enough that a chunk just written is
/// still in cache when the peer reads it. Slots per channel: how many
/// chunks the writer may run ahead. Chosen by `bench allreduce` at 2 ranks
/// (64 KiB–64 MiB, 3 alternated rounds of 32 KiB × 8, 64 KiB × 4 and × 8,
/// 128 KiB × 4 and × 8, 256 KiB × 4): 32 KiB slots were slowest at every
/// size, the others within each other's noise, 128 KiB × 8 never far
/// behind the best. A channel is then 1 MiB, /dev/shm holds n of them.
pub(super) const SLOT_BYTES: usize = 128 * 1024;
pub(super) const SLOTS: usize = 8;
/// The counters' cache lines, then the slots.
const HEADER: usize = 256;
const CHANNEL: usize = HEADER + SLOTS * SLOT_BYTES;
/// Spins before polling between yields, and how long to poll before
/// sleeping on the futex ([`wait`]).
const SPINS: u32 = 200;
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The counters at the head of a channel, each on its own cache line.
#[repr(C)]
struct Counters {
    written: AtomicU32,
    _pad0: [u8; 60],
    read: AtomicU32,
    _pad1: [u8; 60],
    /// 1 while the writer sleeps (waiting for `read` to move).
    writer_sleeps: AtomicU32,
    _pad2: [u8; 60],
    /// 1 while the reader sleeps (waiting for `written` to move).
    reader_sleeps: AtomicU32,
    _pad3: [u8; 60],
}
const _: () = assert!(size_of::<Counters>() <= HEADER);

/// This rank's two channels in the mapped segment.
pub(super) struct ShmLinks {
    /// Kept for its lifetime; all access goes through `base`.
    _map: Option<MmapMut>,
    base: *mut u8,
    /// Offsets of the channel to the next rank and from the previous one.
    outbox: usize,
    inbox: usize,
}

// The map is only touched through the channel protocol below.
unsafe impl Send for ShmLinks {}

impl ShmLinks {
    /// Maps the segment shared by the `n` ranks of `comm` (collective).
    /// `None` on every rank unless every rank could map it, or when the
    /// ranks are not all on one host, or `RINGTRAIN_RING_SHM=off` on any.
    pub(super) fn open(comm: &SimpleCommunicator) -> Option<ShmLinks> {
        let (rank, n) = (comm.rank() as usize, comm.size() as usize);
        let wanted = crate::comm::ring_shm_wanted();
        let local = comm.split_shared(comm.rank());
        let one_host = local.size() as usize == n;
        if !all(comm, wanted && one_host) {
            return None;
        }
        let bytes = n * CHANNEL;
        // Rank 0 makes the segment and sends its name (empty: it failed).
        let mut name = [0u8; 64];
        let made = (rank == 0).then(|| create(bytes));
        if let Some(Ok((path, _))) = &made {
            name[..path.len()].copy_from_slice(path.as_bytes());
        }
        comm.process_at_rank(0).broadcast_into(&mut name[..]);
        let len = name.iter().position(|&b| b == 0).unwrap_or(0);
        let path = std::str::from_utf8(&name[..len]).unwrap_or("");
        let map = match made {
            Some(made) => made.map(|(_, map)| map).map_err(|e| e.to_string()),
            None if path.is_empty() => Err("rank 0 could not make it".into()),
            None => attach(path, bytes),
        };
        let ok = all(comm, map.is_ok());
        if rank == 0 && !path.is_empty() {
            // Every rank has it mapped (or gave up): no name is needed any
            // more, and nothing is left behind in /dev/shm.
            let _ = std::fs::remove_file(path);
        }
        if !ok && rank == 0 {
            static NOTE: std::sync::Once = std::sync::Once::new();
            let why = match &map {
                Err(e) => format!("rank 0: {e}"),
                Ok(_) => "another rank could not map rank 0's segment".into(),
            };
            NOTE.call_once(|| {
                crate::say!(
                    "ringtrain: note: the ranks could not share memory in /dev/shm ({why}); the ring's chunks go over MPI messages"
                )
            });
        }
        let mut map = map.ok().filter(|_| ok)?;
        Some(ShmLinks::at(map.as_mut_ptr(), Some(map), rank, n))
    }

    /// Rank `rank`'s channels in the segment of `n` channels at `base`.
    fn at(base: *mut u8, map: Option<MmapMut>, rank: usize, n: usize) -> ShmLinks {
        ShmLinks {
            base,
            _map: map,
            outbox: rank * CHANNEL,
            inbox: ((rank + n - 1) % n) * CHANNEL,
        }
    }

    fn counters(&self, at: usize) -> &Counters {
        // SAFETY: `at` is a channel's offset inside the map, HEADER bytes
        // are reserved there, and Counters is atomics and padding only.
        unsafe { &*(self.base.add(at) as *const Counters) }
    }

    fn slot(&self, at: usize, i: u32) -> *mut u8 {
        let off = at + HEADER + (i as usize % SLOTS) * SLOT_BYTES;
        // The map is shared memory written by two processes; all access
        // goes through raw pointers under the counters' protocol.
        self.base.wrapping_add(off)
    }

    /// Copies `data` (at most [`SLOT_BYTES`]) into the next slot to the
    /// next rank, waiting for a free one.
    pub(super) fn send<W: Copy>(&self, data: &[W]) {
        let bytes = std::mem::size_of_val(data);
        assert!(bytes <= SLOT_BYTES, "chunk of {bytes} B");
        let c = self.counters(self.outbox);
        let w = c.written.load(Ordering::Relaxed);
        wait(&c.read, &c.writer_sleeps, |read| {
            w.wrapping_sub(read) < SLOTS as u32
        });
        // SAFETY: the slot is free (the reader has counted it read), the
        // reader touches it again only after `written` moves past it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr() as *const u8,
                self.slot(self.outbox, w),
                bytes,
            );
        }
        publish(&c.written, w.wrapping_add(1), &c.reader_sleeps);
    }

    /// Waits for the next chunk from the previous rank (`len` elements),
    /// hands it to `f` in place, then frees its slot.
    pub(super) fn recv<W: Copy>(&self, len: usize, f: impl FnOnce(&[W])) {
        assert!(
            len * size_of::<W>() <= SLOT_BYTES,
            "chunk of {len} elements"
        );
        let c = self.counters(self.inbox);
        let r = c.read.load(Ordering::Relaxed);
        wait(&c.written, &c.reader_sleeps, |written| written != r);
        // SAFETY: the writer filled this slot before moving `written`
        // past it (Acquire in `wait`) and will not touch it until `read`
        // moves; slots are 64-byte aligned, W is f32 or u16.
        let got = unsafe { std::slice::from_raw_parts(self.slot(self.inbox, r) as *const W, len) };
        f(got);
        publish(&c.read, r.wrapping_add(1), &c.writer_sleeps);
    }
}

/// True on every rank when `mine` is true on every rank.
fn all(comm: &SimpleCommunicator, mine: bool) -> bool {
    let mut every = vec![0u8; comm.size() as usize];
    comm.all_gather_into(&(mine as u8), &mut every[..]);
    every.iter().all(|&b| b == 1)
}

/// Rank 0: a new segment of `bytes` under a random name, mapped.
fn create(bytes: usize) -> std::io::Result<(String, MmapMut)> {
    let mut tag = [0u8; 12];
    File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut tag))?;
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let path = format!("/dev/shm/ringtrain-{}-{hex}", std::process::id());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)?;
    let filled = || -> std::io::Result<MmapMut> {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain call on an fd we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        // SAFETY: the file is ours (O_EXCL), nobody truncates it.
        unsafe { MmapMut::map_mut(&file) }
    };
    match filled() {
        Ok(map) => Ok((path, map)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// The other ranks: rank 0's segment, if it is what rank 0 made.
fn attach(path: &str, bytes: usize) -> Result<MmapMut, String> {
    if !path.starts_with("/dev/shm/ringtrain-") || path[9..].contains('/') {
        return Err(format!("unexpected name {path:?}"));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let ours = meta.is_file() && meta.uid() == me && meta.mode() & 0o077 == 0;
    if !ours || meta.len() != bytes as u64 {
        return Err(format!("{path} is not the segment rank 0 made"));
    }
    // SAFETY: checked above: our own private file of the expected size.
    unsafe { MmapMut::map_mut(&file) }.map_err(|e| format!("{path}: {e}"))
}

/// Waits until `ready(word)`: spins, then keeps checking between
/// `sched_yield`s (a core of its own is not given up, a shared one is) for
/// up to [`POLL`], then sleeps on `word`'s futex with `sleeps` set so that
/// the other side wakes it. Sleeping early costs: a vCPU that went idle
/// takes tens of microseconds or more to wake (measured: a 2-rank `bench
/// train` step's all-reduce went from 0.2–0.6 ms to 1.2–1.5 ms when the
/// wait slept after 2,000 spins).
fn wait(word: &AtomicU32, sleeps: &AtomicU32, ready: impl Fn(u32) -> bool) {
    for _ in 0..SPINS {
        if ready(word.load(Ordering::Acquire)) {
            return;
        }
        std::hint::spin_loop();
    }
    let start = std::time::Instant::now();
    while start.elapsed() < POLL {
        if ready(word.load(Ordering::Acquire)) {
            return;
        }
        std::thread::yield_now();
    }
    loop {
        sleeps.store(1, Ordering::SeqCst);
        let seen = word.load(Ordering::SeqCst);
        if ready(seen) {
            sleeps.store(0, Ordering::Relaxed);
            return;
        }
        futex_wait(word, seen);
    }
}

/// Moves `word` to `value` and wakes the other side if it sleeps.
fn publish(word: &AtomicU32, value: u32, sleeps: &AtomicU32) {
    word.store(value, Ordering::SeqCst);
    if sleeps.load(Ordering::SeqCst) != 0 {
        futex_wake(word);
    }
}

/// Sleeps while `word` holds `seen` (at most 10 ms: a missed wake-up
/// costs time, never a hang).
fn futex_wait(word: &AtomicU32, seen: u32) {
    let ten_ms = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 in shared memory (not
    // the private variant: the waker is another process).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            seen,
            &ten_ms as *const libc::timespec,
            std::ptr::null::<u32>(),
            0,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring's pattern on threads sharing one segment: every rank sends
    /// chunk j to the next, then takes chunk j from the previous one.
    /// Sizes vary from one element to a full slot, the counters wrap
    /// around the slots many times, and some ranks stall now and then (longer than
    /// [`POLL`]) so that the others sleep on the futex and must be woken.
    #[test]
    fn chunks_arrive_in_order_and_intact() {
        for n in [2usize, 3] {
            let mut map = MmapMut::map_anon(n * CHANNEL).unwrap();
            let base = map.as_mut_ptr() as usize;
            let full = SLOT_BYTES / 4;
            let len = |j: usize| [1, 7, full, full - 1, 1000][j % 5];
            let value = |r: usize, j: usize, i: usize| (r * 1_000_003 + j * 7919 + i) as f32;
            std::thread::scope(|s| {
                for r in 0..n {
                    s.spawn(move || {
                        let links = ShmLinks::at(base as *mut u8, None, r, n);
                        let prev = (r + n - 1) % n;
                        let mut buf = vec![0f32; full];
                        for j in 0..200 {
                            if (j + r) % 37 == 0 {
                                std::thread::sleep(std::time::Duration::from_millis(30));
                            }
                            for (i, b) in buf[..len(j)].iter_mut().enumerate() {
                                *b = value(r, j, i);
                            }
                            links.send(&buf[..len(j)]);
                            links.recv::<f32>(len(j), |got| {
                                for (i, &g) in got.iter().enumerate() {
                                    assert_eq!(g, value(prev, j, i), "n {n} rank {r} chunk {j}");
                                }
                            });
                        }
                    });
                }
            });
            drop(map);
        }
    }

    /// A writer may run [`SLOTS`] chunks ahead of its reader, no more.
    #[test]
    fn the_writer_waits_for_a_free_slot() {
        let mut map = MmapMut::map_anon(2 * CHANNEL).unwrap();
        let base = map.as_mut_ptr() as usize;
        let sent = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let links = ShmLinks::at(base as *mut u8, None, 0, 2);
                for j in 0..SLOTS + 2 {
                    links.send(&[j as u32]);
                    sent.store(j + 1, Ordering::SeqCst);
                }
            });
            // Wait (no deadline: a slow machine is not a failure) until it
            // filled every slot, then give it time to overrun them.
            while sent.load(Ordering::SeqCst) < SLOTS {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(sent.load(Ordering::SeqCst), SLOTS);
            let links = ShmLinks::at(base as *mut u8, None, 1, 2);
            for j in 0..SLOTS + 2 {
                links.recv::<u32>(1, |got| assert_eq!(got, [j as u32]));
            }
        });
        drop(map);
    }
}
