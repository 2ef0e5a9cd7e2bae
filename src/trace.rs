//! `--trace FILE.json`: a Chrome-trace timeline (chrome://tracing,
//! Perfetto) of every rank: one process per rank, the compute thread's
//! phases on one track and each bucket's all-reduce on another.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use crate::comm::Communicator;
use crate::error::Result;
use crate::fsutil::write_atomic;

pub const COMPUTE: u32 = 0;
pub const COMM: u32 = 1;

pub struct Trace {
    /// Taken right after a barrier, so the ranks' clocks roughly agree.
    t0: Instant,
    rank: usize,
    events: Vec<Value>,
}

impl Trace {
    pub fn new(rank: usize, t0: Instant) -> Self {
        Trace {
            t0,
            rank,
            events: vec![],
        }
    }

    /// A complete event ("ph": "X") from `start` to `end`.
    pub fn span(&mut self, name: &str, track: u32, start: Instant, end: Instant, args: Value) {
        let us = |t: Instant| t.saturating_duration_since(self.t0).as_secs_f64() * 1e6;
        self.events.push(json!({
            "name": name,
            "cat": if track == COMM { "comm" } else { "compute" },
            "ph": "X",
            "ts": us(start),
            "dur": us(end) - us(start),
            "pid": self.rank,
            "tid": track,
            "args": args,
        }));
    }

    /// Gathers every rank's events and writes one file from rank 0.
    /// Collective: every rank calls it.
    pub fn write(self, comm: &dyn Communicator, path: &Path) -> Result<()> {
        let mine = serde_json::to_vec(&self.events).expect("events serialise");
        let longest = comm.all_gather_u64(mine.len() as u64)?;
        let width = longest.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = mine;
        padded.resize(width, b' ');
        let all = comm.all_gather_bytes(&padded)?;
        if comm.rank() != 0 {
            return Ok(());
        }
        let mut events = vec![];
        for (r, chunk) in all.chunks(width.max(1)).enumerate().take(comm.size()) {
            events.push(json!({"name": "process_name", "ph": "M", "pid": r,
                               "args": {"name": format!("rank {r}")}}));
            events.push(
                json!({"name": "thread_name", "ph": "M", "pid": r, "tid": COMPUTE,
                               "args": {"name": "compute"}}),
            );
            events.push(
                json!({"name": "thread_name", "ph": "M", "pid": r, "tid": COMM,
                               "args": {"name": "all-reduce"}}),
            );
            if width > 0 {
                let ev: Vec<Value> = serde_json::from_slice(chunk).expect("own JSON");
                events.extend(ev);
            }
        }
        let doc = json!({ "traceEvents": events, "displayTimeUnit": "ms" });
        write_atomic(path, doc.to_string().as_bytes())
    }
}
