//! What this rank is doing, as far as collectives go: the step, and which
//! collective it is in or last left. The compute thread writes it (one
//! uncontended lock and a clock read per collective, no system call); the
//! watchdog thread reads it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// A snapshot of the marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Collectives entered so far on this rank. Every rank runs the same
    /// collectives in the same order, so number k means the same call on
    /// every rank.
    pub seq: u64,
    pub step: u64,
    /// The collective this rank is in (`inside`) or last left.
    pub op: &'static str,
    pub inside: bool,
    /// When it entered or left `op`.
    pub since: Instant,
    /// Long work outside collectives that reports its progress (rank 0
    /// writing a checkpoint while the others wait), if any.
    pub busy: Option<&'static str>,
    /// When `busy` last made progress.
    pub progress: Instant,
}

/// Cheap handle to this rank's marks; `Marker::off()` does nothing.
#[derive(Clone, Default)]
pub struct Marker(Option<Arc<Mutex<Mark>>>);

impl Marker {
    /// Marks nothing (the watchdog is off).
    pub fn off() -> Self {
        Marker(None)
    }

    pub(crate) fn on() -> Self {
        Marker(Some(Arc::new(Mutex::new(Mark {
            seq: 0,
            step: 0,
            op: "set-up",
            inside: false,
            since: Instant::now(),
            busy: None,
            progress: Instant::now(),
        }))))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The training loop is at `step`.
    pub fn set_step(&self, step: u64) {
        if let Some(m) = &self.0 {
            lock(m).step = step;
        }
    }

    /// This rank enters collective `op`; it has left it when the guard drops.
    #[must_use = "the collective is left when the guard drops"]
    pub fn enter(&self, op: &'static str) -> Inside<'_> {
        if let Some(m) = &self.0 {
            let mut g = lock(m);
            g.seq += 1;
            g.op = op;
            g.inside = true;
            g.since = Instant::now();
        }
        Inside(self)
    }

    fn leave(&self) {
        if let Some(m) = &self.0 {
            let mut g = lock(m);
            g.inside = false;
            g.since = Instant::now();
        }
    }

    /// This rank starts long local work `what` (while other ranks may wait
    /// for it in a collective); the watchdog gives it time as long as it
    /// calls [`Busy::progress`] at least once per timeout. It ends when
    /// the guard drops.
    #[must_use = "the work ends when the guard drops"]
    pub fn busy(&self, what: &'static str) -> Busy<'_> {
        if let Some(m) = &self.0 {
            let mut g = lock(m);
            g.busy = Some(what);
            g.progress = Instant::now();
        }
        Busy(self)
    }

    pub fn get(&self) -> Option<Mark> {
        self.0.as_ref().map(|m| *lock(m))
    }
}

/// Leaves the collective on drop (also when it returned an error).
pub struct Inside<'a>(&'a Marker);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.leave()
    }
}

/// Long local work in progress; ends on drop.
pub struct Busy<'a>(&'a Marker);

impl Busy<'_> {
    /// The work has moved on (another chunk written, ...).
    pub fn progress(&self) {
        if let Some(m) = &self.0.0 {
            lock(m).progress = Instant::now();
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(m) = &self.0.0 {
            lock(m).busy = None;
        }
    }
}

/// A panic elsewhere while the lock was held leaves the marks usable.
fn lock(m: &Mutex<Mark>) -> MutexGuard<'_, Mark> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_and_leave_count_collectives() {
        let m = Marker::on();
        m.set_step(4);
        {
            let _g = m.enter("barrier");
            let s = m.get().unwrap();
            assert_eq!((s.seq, s.step, s.op, s.inside), (1, 4, "barrier", true));
        }
        let s = m.get().unwrap();
        assert_eq!((s.seq, s.op, s.inside), (1, "barrier", false));
        drop(m.enter("all-reduce"));
        assert_eq!(m.get().unwrap().seq, 2);
        let off = Marker::off();
        drop(off.enter("x"));
        assert!(off.get().is_none());
        off.busy("y").progress();
    }

    #[test]
    fn busy_marks_progress_until_dropped() {
        let m = Marker::on();
        {
            let b = m.busy("writing a checkpoint");
            let first = m.get().unwrap();
            assert_eq!(first.busy, Some("writing a checkpoint"));
            std::thread::sleep(std::time::Duration::from_millis(5));
            b.progress();
            assert!(m.get().unwrap().progress > first.progress);
        }
        assert_eq!(m.get().unwrap().busy, None);
    }
}
