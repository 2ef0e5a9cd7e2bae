//! What rank 0 shows and records: a progress bar on a terminal (plain lines
//! otherwise), evaluation lines, and the JSON Lines metrics file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use indicatif::ProgressBar;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::metrics::TaskMetrics;
use crate::tasks::TaskSpec;
use crate::train::StepReport;
use crate::train::balance::{Balancer, Replan};

mod bar;
pub use bar::Progress;

pub struct Reporter {
    root: bool,
    bar: Option<ProgressBar>,
    /// Draw a bar (made at the first step, see `bar`).
    wants_bar: bool,
    metrics: Option<(BufWriter<File>, std::path::PathBuf)>,
    tasks: Vec<TaskSpec>,
    steps: u64,
    log_every: u64,
    global_batch: usize,
    /// When this process started reporting (`wall_s` in the records).
    start: std::time::Instant,
}

impl Reporter {
    /// On rank 0 only: opens the metrics file and the progress bar.
    pub fn new(
        root: bool,
        tasks: &[TaskSpec],
        steps: u64,
        log_every: u64,
        global_batch: usize,
        metrics_out: Option<&Path>,
        terminal_bar_anywhere: bool,
        resumed_at: Option<u64>,
    ) -> Result<Self> {
        let metrics = match metrics_out {
            Some(p) if root => Some((
                BufWriter::new(open_metrics(p, resumed_at)?),
                p.to_path_buf(),
            )),
            _ => None,
        };
        Ok(Reporter {
            root,
            bar: None,
            wants_bar: root && terminal_bar_anywhere,
            metrics,
            tasks: tasks.to_vec(),
            steps,
            log_every,
            global_batch,
            start: std::time::Instant::now(),
        })
    }

    /// A line on stdout from rank 0 (above the bar, if there is one).
    pub fn line(&self, s: &str) {
        if !self.root {
            return;
        }
        match &self.bar {
            Some(b) => b.println(s),
            None => say(s),
        }
    }

    fn record(&mut self, v: Value) -> Result<()> {
        if let Some((w, p)) = &mut self.metrics {
            writeln!(w, "{v}").map_err(|e| Error::io(p.clone(), e))?;
        }
        Ok(())
    }

    pub fn step(&mut self, r: &StepReport) -> Result<()> {
        if !self.root {
            return Ok(());
        }
        if let Some(why) = &r.skipped {
            self.line(&format!("ringtrain: warning: {why}"));
        }
        if let Some(p) = &r.replan {
            self.replan(r.step + 1, p)?;
        }
        let sps = self.global_batch as f64 / r.times.total;
        let per_task: Vec<String> = self
            .tasks
            .iter()
            .zip(&r.task_losses)
            .map(|(t, l)| format!("{} {:.4}", t.name, l))
            .collect();
        let summary = format!(
            "loss {:.4} | {} | lr {:.2e} | gnorm {:.3} | {:.0} samples/s",
            r.loss,
            per_task.join(" "),
            r.lr,
            r.grad_norm,
            sps
        );
        // The bar's text carries the step count: every frame shows one step.
        let counted = format!("step {:>6}/{} | {summary}", r.step + 1, self.steps);
        match &self.bar {
            _ if self.wants_bar && self.bar.is_none() => {
                self.bar = Some(bar::new_bar(self.steps, r.step + 1, counted));
            }
            Some(b) => {
                b.set_message(counted);
                b.set_position(r.step + 1);
            }
            None => {
                let n = r.step + 1;
                let every = self.log_every > 0 && n % self.log_every == 0;
                if every || n == 1 || n == self.steps {
                    say(&format!("step {n:>6}/{} | {summary}", self.steps));
                }
            }
        }
        let losses: Map<String, Value> = self
            .tasks
            .iter()
            .zip(&r.task_losses)
            .map(|(t, &l)| (t.name.clone(), json!(l)))
            .collect();
        let t = &r.times;
        self.record(json!({
            "type": "train",
            "step": r.step + 1,
            "loss": r.loss,
            "losses": losses,
            "lr": r.lr,
            "grad_norm": r.grad_norm,
            "step_time_s": t.total,
            "comm_time_s": t.comm,
            "allreduce_time_s": t.grad_comm,
            "exposed_allreduce_s": t.grad_exposed,
            "forward_time_s": t.forward,
            "backward_time_s": t.backward,
            "update_time_s": t.update,
            "samples_per_s": sps,
            "skipped": r.skipped.is_some(),
            // The ring all-reduce's count (sent = received per rank).
            "bytes_sent": r.bytes_sent,
            "bytes_received": r.bytes_sent,
            "bytes_sent_total": r.bytes_sent_total,
            "bytes_received_total": r.bytes_sent_total,
            "outer_step": r.outer_step,
            "wall_s": self.start.elapsed().as_secs_f64(),
            "task_weights": self.per_task(&r.lambdas),
        }))?;
        match &r.task_grads {
            Some(g) => self.task_stats(r, g),
            None => Ok(()),
        }
    }

    /// One value per task, keyed by task name.
    fn per_task(&self, values: &[f64]) -> Value {
        let m: Map<String, Value> = self
            .tasks
            .iter()
            .zip(values)
            .map(|(t, &v)| (t.name.clone(), json!(v)))
            .collect();
        Value::Object(m)
    }

    /// The task diagnostics record (`--task-stats-every`): λ_t, each task's
    /// gradient norm at the last shared layer, and the pairwise cosines.
    fn task_stats(
        &mut self,
        r: &StepReport,
        g: &crate::train::weighting::TaskGradStats,
    ) -> Result<()> {
        let cosines: Map<String, Value> = g
            .cosines
            .iter()
            .map(|&(a, b, c)| {
                let key = format!("{}|{}", self.tasks[a].name, self.tasks[b].name);
                (key, json!(c))
            })
            .collect();
        self.record(json!({
            "type": "tasks",
            "step": r.step + 1,
            "task_weights": self.per_task(&r.lambdas),
            "grad_norms": self.per_task(&g.norms),
            "cosines": cosines,
        }))
    }

    /// The partition a run starts with (`--balance static|auto`; nothing
    /// for `even`): a line and a `partition` record, unless it is the
    /// one the checkpoint resumed from (its record is in the file).
    pub fn balance(&mut self, b: &Balancer, step: u64, restored: bool) -> Result<()> {
        use crate::config::BalanceMode;
        if !self.root || b.mode() == BalanceMode::Even {
            return Ok(());
        }
        let how = match b.mode() {
            BalanceMode::Auto if restored => "auto, from the checkpoint",
            BalanceMode::Auto => "auto, even to start",
            _ => "static",
        };
        let p = b.partition();
        self.line(&format!(
            "balance: {how}: {} samples per rank",
            p.describe()
        ));
        if restored {
            return Ok(());
        }
        self.record(json!({ "type": "partition", "step": step, "sizes": p.sizes }))
    }

    /// A new partition from `--balance auto`, in effect from step `step`
    /// (steps done): a line and a `partition` record.
    fn replan(&mut self, step: u64, p: &Replan) -> Result<()> {
        let ms: Vec<String> = p
            .secs_per_sample
            .iter()
            .map(|s| format!("{:.4}", 1e3 * s))
            .collect();
        self.line(&format!(
            "balance: after step {step}: {} samples per rank (ms per sample {})",
            p.partition.describe(),
            ms.join("/")
        ));
        self.record(json!({
            "type": "partition",
            "step": step,
            "sizes": p.partition.sizes,
            "secs_per_sample": p.secs_per_sample,
        }))
    }

    /// How the run (or its resumed part) from `step` is set up: a `run`
    /// record with `fields` (an object), e.g. the overlap chosen.
    pub fn run_record(&mut self, step: u64, fields: Value) -> Result<()> {
        let mut v = json!({ "type": "run", "step": step });
        if let (Some(m), Value::Object(f)) = (v.as_object_mut(), fields) {
            m.extend(f);
        }
        self.record(v)
    }

    pub fn eval(&mut self, step: u64, metrics: &[(String, TaskMetrics)]) -> Result<()> {
        if !self.root {
            return Ok(());
        }
        let parts: Vec<String> = metrics.iter().map(|(n, m)| format_task(n, m)).collect();
        self.line(&format!(
            "eval  {step:>6}/{} | {}",
            self.steps,
            parts.join(" | ")
        ));
        let tasks: Map<String, Value> = metrics
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    serde_json::to_value(m).expect("metrics serialise"),
                )
            })
            .collect();
        let wall = self.start.elapsed().as_secs_f64();
        self.record(json!({ "type": "eval", "step": step, "wall_s": wall, "tasks": tasks }))
    }

    pub fn finish(&mut self) -> Result<()> {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
        if let Some((w, p)) = &mut self.metrics {
            w.flush().map_err(|e| Error::io(p.clone(), e))?;
        }
        Ok(())
    }
}

/// The metrics file of a run: new, or on resume the old one without the
/// records of steps after `resumed_at` (a crashed run may have written
/// some), continued from there.
fn open_metrics(p: &Path, resumed_at: Option<u64>) -> Result<File> {
    let io = |e| Error::io(p, e);
    // Appended to for the whole run, so not written in one go: the file
    // is first made (atomically, a symbolic link there replaced, not
    // followed), then opened without following links.
    let append = || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
            .map_err(io)
    };
    let Some(at) = resumed_at.filter(|_| p.exists()) else {
        crate::fsutil::write_atomic(p, b"")?;
        return append();
    };
    let old = std::fs::read_to_string(p).map_err(io)?;
    let kept: String = old
        .lines()
        .filter(|l| {
            let step = serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64));
            step.is_some_and(|s| s <= at)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::fsutil::write_atomic(p, kept.as_bytes())?;
    append()
}

/// "shape acc 0.912 (base 0.301) loss 0.25" and the like.
pub fn format_task(name: &str, m: &TaskMetrics) -> String {
    let mut s = name.to_string();
    if let Some(a) = m.accuracy {
        s += &format!(" acc {a:.4}");
    }
    if let Some(a) = m.auc {
        s += &format!(" auc {a:.4}");
    }
    if let Some(b) = m.baseline_accuracy {
        s += &format!(" (majority {b:.4})");
    }
    if let Some(r) = m.rmse {
        s += &format!(" rmse {r:.4}");
    }
    if let Some(r) = m.r2 {
        s += &format!(" r2 {r:.4}");
    }
    s + &format!(" loss {:.4}", m.loss)
}

/// Whether stdout was found closed (`ringtrain train ... | head`).
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One line on stdout. Once stdout is closed the run goes on without
/// printing (its model, checkpoints and metrics file are still written):
/// a reader that stopped reading must not end the training.
fn say(s: &str) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if writeln!(std::io::stdout().lock(), "{s}").is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}
