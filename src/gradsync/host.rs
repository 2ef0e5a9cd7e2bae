//! The gradient sync of host buffers: buckets all-reduced on a
//! communication thread while backward goes on below them.
//!
//! With overlap on, a communication thread (with its own communicator)
//! all-reduces each bucket as soon as backward reports that every gradient
//! at or above its start is final; `finish` waits for the rest. With
//! overlap off the same buckets are reduced one after another after
//! backward on the calling thread, so both modes compute bit-identical
//! results.

use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{BucketTiming, GradBuckets, SyncOptions, SyncReport};
use crate::comm::{CommKind, Communicator, Wire, create};
use crate::error::{Error, Result};

/// The flat gradient buffer, shared with the communication thread.
#[derive(Clone, Copy)]
struct GradPtr(*mut f32);
// SAFETY: the buffer outlives the thread (GradSync joins it on drop), and
// the two threads never touch the same elements at the same time: a bucket
// is handed to the thread only after backward has finished writing it, and
// the compute thread does not touch it again until `finish` returns.
unsafe impl Send for GradPtr {}

struct Job {
    bucket: usize,
    range: Range<usize>,
    grads: GradPtr,
}

type Done = (usize, Instant, Instant, Result<()>);

enum Engine {
    /// Reduce on the calling thread, after backward.
    After(Box<dyn Communicator>),
    /// A communication thread with its own communicator.
    Thread {
        jobs: Option<Sender<Job>>,
        done: Receiver<Done>,
        handle: Option<JoinHandle<()>>,
    },
}

/// Averages the gradient buffer over ranks, bucket by bucket.
pub struct GradSync {
    buckets: Vec<Range<usize>>,
    grads: GradPtr,
    len: usize,
    engine: Engine,
    /// Buckets handed out this step, and their timings once done.
    launched: usize,
    timings: Vec<BucketTiming>,
}

impl GradSync {
    /// Buckets of the `len` floats at `grads`, over `size` ranks, as `opts`
    /// say (its bucket size is not used: the buckets are given).
    ///
    /// # Safety
    /// The `len` floats at `grads` must stay allocated and unmoved for the
    /// life of this value, and nobody else may touch a bucket between
    /// `ready` handing it out and `finish` returning.
    pub unsafe fn new(
        grads: *mut f32,
        len: usize,
        buckets: Vec<Range<usize>>,
        size: usize,
        opts: &SyncOptions,
    ) -> Self {
        let (kind, wire) = (opts.kind, opts.wire);
        let engine = if opts.overlap && size > 1 {
            let (jobs, job_rx) = channel::<Job>();
            let (done_tx, done) = channel::<Done>();
            let handle = std::thread::Builder::new()
                .name("ringtrain-comm".into())
                .spawn(move || comm_thread(size, kind, wire, job_rx, done_tx))
                .expect("spawn the communication thread");
            Engine::Thread {
                jobs: Some(jobs),
                done,
                handle: Some(handle),
            }
        } else {
            Engine::After(create(size, kind, wire))
        };
        GradSync {
            buckets,
            grads: GradPtr(grads),
            len,
            engine,
            launched: 0,
            timings: vec![],
        }
    }

    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }
}

impl GradBuckets for GradSync {
    /// Backward reports that every gradient at offset ≥ `lo` is final:
    /// start the buckets that became complete.
    fn ready(&mut self, lo: usize) {
        let Engine::Thread {
            jobs: Some(jobs), ..
        } = &self.engine
        else {
            return;
        };
        while self.launched < self.buckets.len() && self.buckets[self.launched].start >= lo {
            let job = Job {
                bucket: self.launched,
                range: self.buckets[self.launched].clone(),
                grads: self.grads,
            };
            // A send fails only if the thread is gone; `finish` reports it.
            let _ = jobs.send(job);
            self.launched += 1;
        }
    }

    /// Completes the all-reduce of every bucket; afterwards the buffer holds
    /// g = (1/n) Σ g_i on every rank.
    fn finish(&mut self) -> Result<SyncReport> {
        let wait_start = Instant::now();
        self.ready(0);
        let result = match &mut self.engine {
            Engine::After(comm) => {
                // SAFETY: no other thread exists; `len` is the buffer's length.
                let grads = unsafe { std::slice::from_raw_parts_mut(self.grads.0, self.len) };
                for (b, r) in self.buckets.iter().enumerate() {
                    let start = Instant::now();
                    comm.all_reduce_avg(&mut grads[r.clone()])?;
                    self.timings.push(BucketTiming {
                        bucket: b,
                        floats: r.len(),
                        start,
                        end: Instant::now(),
                    });
                }
                Ok(())
            }
            Engine::Thread { done, .. } => {
                let mut first_err = Ok(());
                for _ in 0..self.launched {
                    let (b, start, end, r) = done
                        .recv()
                        .map_err(|_| Error::Comm("communication thread died".into()))?;
                    if first_err.is_ok() {
                        first_err = r;
                    }
                    self.timings.push(BucketTiming {
                        bucket: b,
                        floats: self.buckets[b].len(),
                        start,
                        end,
                    });
                }
                first_err
            }
        };
        let exposed_s = match self.engine {
            Engine::After(_) => 0.0,
            Engine::Thread { .. } => wait_start.elapsed().as_secs_f64(),
        };
        self.launched = 0;
        result?;
        let buckets = std::mem::take(&mut self.timings);
        let comm_s: f64 = buckets
            .iter()
            .map(|t| (t.end - t.start).as_secs_f64())
            .sum();
        Ok(SyncReport {
            // Without overlap every second of communication is exposed.
            exposed_s: if exposed_s == 0.0 { comm_s } else { exposed_s },
            comm_s,
            buckets,
        })
    }
}

impl Drop for GradSync {
    fn drop(&mut self) {
        if let Engine::Thread { jobs, handle, .. } = &mut self.engine {
            drop(jobs.take()); // the thread's loop ends
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

fn comm_thread(size: usize, kind: CommKind, wire: Wire, jobs: Receiver<Job>, done: Sender<Done>) {
    let comm = create(size, kind, wire);
    for job in jobs {
        let start = Instant::now();
        // SAFETY: see GradPtr; the range lies inside the buffer.
        let slice = unsafe {
            std::slice::from_raw_parts_mut(job.grads.0.add(job.range.start), job.range.len())
        };
        let r = comm.all_reduce_avg(slice);
        if done.send((job.bucket, start, Instant::now(), r)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_rank_finish_is_identity() {
        let mut g: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let keep = g.clone();
        let b = super::super::plan_buckets(&[0..30, 30..64, 64..100], 16);
        let opts = SyncOptions {
            kind: CommKind::Mpi,
            wire: Wire::F32,
            overlap: true,
            bucket_floats: 16,
        };
        // SAFETY: `g` outlives `s` (dropped below) and is not touched meanwhile.
        let mut s = unsafe { GradSync::new(g.as_mut_ptr(), g.len(), b, 1, &opts) };
        s.ready(40);
        let r = s.finish().unwrap();
        assert_eq!(r.buckets.len(), s.num_buckets());
        drop(s);
        assert_eq!(g, keep);
    }
}
