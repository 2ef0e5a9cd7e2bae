//! The phase clock of a step: each phase's seconds into [`StepTimes`] and,
//! when tracing, the same interval as one event of the timeline, so the
//! step itself needs one line per phase for both.

use std::time::Instant;

use serde_json::json;

use crate::gradsync::SyncReport;
use crate::trace::{COMM, COMPUTE, Trace};

/// Seconds spent in each phase of a step.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    pub data: f64,
    pub forward: f64,
    pub backward: f64,
    /// Communication on the critical path: the small control all-reduces
    /// and the wait for gradient buckets after backward.
    pub comm: f64,
    /// All-reduce time of the gradient buckets, overlapped or not, and
    /// the part of it the compute thread waited for.
    pub grad_comm: f64,
    pub grad_exposed: f64,
    pub update: f64,
    pub total: f64,
}

/// The phases a step's time is split into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// This rank's slice of the batch (the wait for it when read ahead).
    Data,
    Forward,
    Backward,
    /// A small all-reduce of control values (label counts, losses).
    Control,
    Update,
}

impl Phase {
    /// The event name on the timeline; control all-reduces have none.
    fn span(self) -> Option<&'static str> {
        match self {
            Phase::Data => Some("data"),
            Phase::Forward => Some("forward"),
            Phase::Backward => Some("backward"),
            Phase::Update => Some("update"),
            Phase::Control => None,
        }
    }
}

/// Times one step at a time (see the module comment).
pub struct PhaseClock {
    pub trace: Option<Trace>,
    step: u64,
    start: Instant,
    times: StepTimes,
}

impl PhaseClock {
    pub fn new() -> Self {
        PhaseClock {
            trace: None,
            step: 0,
            start: Instant::now(),
            times: StepTimes::default(),
        }
    }

    /// Step `step` starts now.
    pub fn begin(&mut self, step: u64) {
        self.step = step;
        self.start = Instant::now();
        self.times = StepTimes::default();
    }

    /// `phase` ran from `start` to now.
    pub fn record(&mut self, phase: Phase, start: Instant) {
        let end = Instant::now();
        let s = (end - start).as_secs_f64();
        let t = &mut self.times;
        match phase {
            Phase::Data => t.data += s,
            Phase::Forward => t.forward += s,
            Phase::Backward => t.backward += s,
            Phase::Control => t.comm += s,
            Phase::Update => t.update += s,
        }
        if let (Some(tr), Some(name)) = (&mut self.trace, phase.span()) {
            tr.span(name, COMPUTE, start, end, json!({ "step": self.step }));
        }
    }

    /// The wait for the gradient all-reduce, from `start` to now, and what
    /// `sync` says each bucket cost (one event per bucket on the
    /// communication track).
    pub fn record_sync(&mut self, start: Instant, sync: &SyncReport) {
        let end = Instant::now();
        let t = &mut self.times;
        t.comm += (end - start).as_secs_f64();
        (t.grad_comm, t.grad_exposed) = (sync.comm_s, sync.exposed_s);
        if let Some(tr) = &mut self.trace {
            let step = self.step;
            tr.span(
                "wait for all-reduce",
                COMPUTE,
                start,
                end,
                json!({ "step": step }),
            );
            for b in &sync.buckets {
                let args = json!({ "step": step, "bucket": b.bucket, "bytes": 4 * b.floats });
                tr.span("all-reduce", COMM, b.start, b.end, args);
            }
        }
    }

    /// The outer all-reduce of the parameters (`--sync local`), from
    /// `start` to now: its time counts as communication on the critical
    /// path, and it is one event, "outer all-reduce", on the
    /// communication track.
    pub fn record_outer(&mut self, start: Instant, sync: &SyncReport, bytes: u64) {
        let end = Instant::now();
        let t = &mut self.times;
        let s = (end - start).as_secs_f64();
        t.comm += s;
        t.grad_comm += sync.comm_s;
        t.grad_exposed += s;
        if let Some(tr) = &mut self.trace {
            let args = json!({ "step": self.step, "bytes_sent": bytes });
            tr.span("outer all-reduce", COMM, start, end, args);
        }
    }

    /// The step's times, its total up to now.
    pub fn finish(&mut self) -> StepTimes {
        self.times.total = self.start.elapsed().as_secs_f64();
        self.times
    }
}

impl Default for PhaseClock {
    fn default() -> Self {
        Self::new()
    }
}
