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
    }
}
