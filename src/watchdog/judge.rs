//! Rank 0's decision, from what every rank last reported: is the job
//! fine, is a collective stuck (and who has not arrived), or is a rank
//! gone? Pure functions of the reports and the time, so they are tested
//! without processes.

use std::time::{Duration, Instant};

/// The state of rank 0's connection to a rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet (set-up).
    Pending,
    Open,
    /// The rank said goodbye: it finished (or left after an agreed error).
    Bye,
    /// The rank is ending the job itself (MPI_Abort after its own message).
    Aborting,
    /// The connection closed without a goodbye: the process is gone.
    Lost,
}

/// What rank 0 knows about one rank.
#[derive(Clone, Debug)]
pub struct View {
    pub seq: u64,
    pub step: u64,
    pub op: String,
    pub inside: bool,
    /// When it entered or left `op` (rank 0's clock).
    pub since: Instant,
    /// When rank 0 last heard from it.
    pub heard: Instant,
    pub link: Link,
    /// Long local work it reported, and when that last made progress.
    pub busy: Option<(String, Instant)>,
}

impl View {
    pub fn new(now: Instant) -> Self {
        View {
            seq: 0,
            step: 0,
            op: "set-up".into(),
            inside: false,
            since: now,
            heard: now,
            link: Link::Pending,
            busy: None,
        }
    }

    /// Busy with local work that made progress within `timeout`.
    fn busy_and_moving(&self, now: Instant, timeout: Duration) -> bool {
        self.link == Link::Open
            && self
                .busy
                .as_ref()
                .is_some_and(|(_, p)| now.saturating_duration_since(*p) <= timeout)
    }

    /// "inside \"barrier\" (collective #7) for 3.1 s at step 2" /
    /// "computing at step 3, left \"all-reduce\" 3.1 s ago".
    fn doing(&self, now: Instant) -> String {
        let ago = secs(now.saturating_duration_since(self.since));
        if let Some((what, progress)) = &self.busy {
            let quiet = secs(now.saturating_duration_since(*progress));
            return format!("{what} at step {}, no progress for {quiet} s", self.step);
        }
        if self.inside {
            format!(
                "inside \"{}\" (collective #{}) for {ago} s at step {}",
                self.op, self.seq, self.step
            )
        } else {
            format!(
                "computing at step {}, left \"{}\" {ago} s ago",
                self.step, self.op
            )
        }
    }
}

/// Why the job must end.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// A collective has not completed within the timeout.
    Stuck {
        step: u64,
        op: String,
        seq: u64,
        timeout: Duration,
        /// Ranks inside it.
        waiting: Vec<usize>,
        /// Ranks not in it, each with what it was doing.
        missing: Vec<(usize, String)>,
        /// Ranks in collective #`seq` under another name than `op` (one
        /// of them is a collective that not every rank calls).
        mismatched: Vec<(usize, String)>,
    },
    /// A rank's process is gone, or silent for longer than the timeout.
    Gone {
        rank: usize,
        /// The furthest step any rank reported.
        step: u64,
        why: String,
        /// The rank's last report.
        last: String,
    },
}

/// The verdict on `views` (indexed by rank) at `now`, or None while the
/// job is fine. A lost connection is reported at once; a collective only
/// once some rank has been inside it for longer than `timeout`.
pub fn judge(views: &[View], now: Instant, timeout: Duration) -> Option<Verdict> {
    let since = |t: Instant| now.saturating_duration_since(t);
    let job_step = views.iter().map(|v| v.step).max().unwrap_or(0);
    for (rank, v) in views.iter().enumerate() {
        let why = match v.link {
            Link::Lost => "its watchdog connection closed without a goodbye (the process \
                           was killed, crashed or ran out of memory)"
                .to_string(),
            Link::Open if since(v.heard) > timeout => format!(
                "no word from it for {} s (the process is stopped or its host unreachable)",
                secs(since(v.heard))
            ),
            Link::Pending if since(v.heard) > timeout => format!(
                "it did not connect to the watchdog within {} s",
                secs(timeout)
            ),
            _ => continue,
        };
        return Some(Verdict::Gone {
            rank,
            step: job_step,
            why,
            last: v.doing(now),
        });
    }
    // The rank stuck longest in a collective names it.
    let (_, stuck) = views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.inside && since(v.since) > timeout)
        .max_by_key(|(r, v)| (since(v.since), std::cmp::Reverse(*r)))?;
    let k = stuck.seq;
    let mut waiting = vec![];
    let mut missing = vec![];
    let mut mismatched = vec![];
    let mut excused = true;
    for (rank, v) in views.iter().enumerate() {
        if v.inside && v.seq == k {
            waiting.push(rank);
            if v.op != stuck.op {
                mismatched.push((rank, v.op.clone()));
            }
        } else if v.seq < k || v.link == Link::Bye || v.link == Link::Aborting {
            excused &= v.busy_and_moving(now, timeout);
            let doing = match v.link {
                Link::Bye => format!("left the job after step {}", v.step),
                Link::Aborting => format!("ended with an error at step {}", v.step),
                _ => v.doing(now),
            };
            missing.push((rank, doing));
        }
        // seq > k, or seq == k and left: it got past this collective.
    }
    // The ranks not there yet are all busy and moving (a long checkpoint
    // write): waiting for them is not a hang.
    if excused && !missing.is_empty() {
        return None;
    }
    // Every rank has arrived: the collective can complete only after the
    // last arrival, so its time starts there (a rank that waited through
    // another's long checkpoint write, and has left by now without having
    // said so yet, is not a stuck collective).
    if missing.is_empty() {
        let last = views.iter().filter(|v| v.seq >= k).map(|v| v.since).max();
        if last.is_some_and(|t| since(t) <= timeout) {
            return None;
        }
    }
    Some(Verdict::Stuck {
        step: stuck.step,
        op: stuck.op.clone(),
        seq: k,
        timeout,
        waiting,
        missing,
        mismatched,
    })
}

impl Verdict {
    /// The one line rank 0 prints before it ends the job.
    pub fn message(&self) -> String {
        match self {
            Verdict::Stuck {
                step,
                op,
                seq,
                timeout,
                waiting,
                missing,
                mismatched,
            } => {
                let not_arrived = if missing.is_empty() {
                    "none (every rank is inside it: the collective itself is stuck)".to_string()
                } else {
                    missing
                        .iter()
                        .map(|(r, d)| format!("rank {r} ({d})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mismatch = if mismatched.is_empty() {
                    String::new()
                } else {
                    let who: Vec<String> = mismatched
                        .iter()
                        .map(|(r, o)| format!("rank {r} in \"{o}\""))
                        .collect();
                    format!(
                        "; the ranks disagree on collective #{seq}: {} (a collective that not \
                         every rank calls?)",
                        who.join(", ")
                    )
                };
                format!(
                    "ringtrain: watchdog: step {step}: \"{op}\" (collective #{seq}) did not \
                     complete within {} s; waiting in it: {}; not arrived: {not_arrived}\
                     {mismatch}; ending the job",
                    secs(*timeout),
                    ranks(waiting)
                )
            }
            Verdict::Gone {
                rank,
                step,
                why,
                last,
            } => format!(
                "ringtrain: watchdog: step {step}: rank {rank} is gone: {why}; its last \
                 report: {last}; ending the job"
            ),
        }
    }
}

/// "rank 0" or "ranks 0,2,3".
fn ranks(rs: &[usize]) -> String {
    let list: Vec<String> = rs.iter().map(|r| r.to_string()).collect();
    match rs.len() {
        1 => format!("rank {}", list[0]),
        _ => format!("ranks {}", list.join(",")),
    }
}

/// Seconds with at most one decimal ("3", "31.2").
fn secs(d: Duration) -> String {
    let s = (d.as_secs_f64() * 10.0).round() / 10.0;
    format!("{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(3);

    fn at(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// A connected rank at collective `seq` of `step`, in it or past it
    /// since `since` seconds, heard from at `heard`.
    fn view(t0: Instant, seq: u64, step: u64, inside: bool, since: f64, heard: f64) -> View {
        View {
            seq,
            step,
            op: if inside {
                "all-reduce"
            } else {
                "gradient all-reduce"
            }
            .into(),
            inside,
            since: at(t0, since),
            heard: at(t0, heard),
            link: Link::Open,
            busy: None,
        }
    }

    #[test]
    fn a_rank_busy_writing_a_checkpoint_is_waited_for_while_it_moves() {
        let t0 = Instant::now();
        let busy = |progress: f64| {
            let mut v = view(t0, 40, 8, false, 0.5, 99.9);
            v.busy = Some(("writing a checkpoint".into(), at(t0, progress)));
            v
        };
        // Rank 0 writes for 100 s; the others wait in #41 far past T.
        let moving = vec![
            busy(99.0),
            view(t0, 41, 8, true, 1.0, 99.9),
            view(t0, 41, 8, true, 1.0, 99.9),
        ];
        assert_eq!(judge(&moving, at(t0, 100.0), T), None);
        // A write that stopped moving is named, with how long it has been quiet.
        let mut stalled = moving.clone();
        stalled[0] = busy(90.0);
        let v = judge(&stalled, at(t0, 100.0), T).expect("stuck");
        let m = v.message();
        assert!(
            m.contains(
                "not arrived: rank 0 (writing a checkpoint at step 8, no progress for 10 s)"
            ),
            "{m}"
        );
        // A busy rank does not excuse another one that is missing.
        let mut two = moving.clone();
        two[2] = view(t0, 40, 8, false, 0.5, 99.9);
        assert!(judge(&two, at(t0, 100.0), T).is_some());
    }

    #[test]
    fn a_fast_job_is_fine() {
        let t0 = Instant::now();
        let views = vec![
            view(t0, 40, 3, true, 9.0, 9.9),
            view(t0, 39, 3, false, 8.0, 9.8),
            view(t0, 40, 3, true, 9.5, 9.9),
        ];
        assert_eq!(judge(&views, at(t0, 10.0), T), None);
    }

    #[test]
    fn a_rank_that_has_not_arrived_is_named() {
        let t0 = Instant::now();
        let views = vec![
            view(t0, 41, 3, true, 1.0, 9.9),
            view(t0, 40, 3, false, 0.5, 9.8), // stalled before #41
            view(t0, 41, 3, true, 1.2, 9.9),
        ];
        let v = judge(&views, at(t0, 10.0), T).expect("stuck");
        let Verdict::Stuck {
            step,
            seq,
            waiting,
            missing,
            ..
        } = &v
        else {
            panic!("{v:?}")
        };
        assert_eq!((*step, *seq), (3, 41));
        assert_eq!(waiting, &[0, 2]);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].0, 1);
        let m = v.message();
        assert!(
            m.starts_with("ringtrain: watchdog: step 3: \"all-reduce\""),
            "{m}"
        );
        assert!(m.contains("within 3 s; waiting in it: ranks 0,2;"), "{m}");
        assert!(
            m.contains(
                "not arrived: rank 1 (computing at step 3, left \"gradient all-reduce\" 9.5 s ago)"
            ),
            "{m}"
        );
    }

    #[test]
    fn the_longest_wait_decides_and_later_ranks_count_as_arrived() {
        let t0 = Instant::now();
        let views = vec![
            view(t0, 7, 1, false, 0.0, 9.9), // behind: not arrived
            view(t0, 8, 2, true, 2.0, 9.9),  // stuck longest
            view(t0, 8, 2, false, 2.5, 9.9), // passed #8 already
            view(t0, 9, 2, true, 8.0, 9.9),  // ahead, not yet past the timeout
        ];
        let Some(Verdict::Stuck {
            seq,
            waiting,
            missing,
            ..
        }) = judge(&views, at(t0, 10.0), T)
        else {
            panic!()
        };
        assert_eq!(seq, 8);
        assert_eq!(waiting, vec![1]);
        assert_eq!(missing.iter().map(|m| m.0).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn ranks_in_different_operations_are_pointed_out() {
        let t0 = Instant::now();
        let mut views = vec![
            view(t0, 5, 1, true, 0.0, 9.9),
            view(t0, 5, 1, true, 0.5, 9.9),
        ];
        views[1].op = "barrier".into();
        let m = judge(&views, at(t0, 10.0), T).unwrap().message();
        assert!(
            m.contains("; the ranks disagree on collective #5: rank 1 in \"barrier\""),
            "{m}"
        );
        assert!(m.ends_with("; ending the job"), "{m}");
    }

    #[test]
    fn a_collective_is_timed_from_its_last_arrival() {
        let t0 = Instant::now();
        // Rank 1 waited 6 s for rank 0's checkpoint write; rank 0 has just
        // arrived (or already left): not stuck.
        let mut views = vec![
            view(t0, 26, 4, true, 9.9, 9.9),
            view(t0, 26, 4, true, 4.0, 9.9),
        ];
        assert_eq!(judge(&views, at(t0, 10.0), T), None);
        views[0].inside = false;
        assert_eq!(judge(&views, at(t0, 10.0), T), None);
        // Both inside for longer than the timeout since the last arrival.
        views[0].inside = true;
        views[0].since = at(t0, 6.5);
        let v = judge(&views, at(t0, 10.0), T).expect("stuck");
        assert!(v.message().contains("not arrived: none"), "{}", v.message());
    }

    #[test]
    fn all_inside_means_the_collective_itself_is_stuck() {
        let t0 = Instant::now();
        let views = vec![
            view(t0, 5, 0, true, 0.0, 9.9),
            view(t0, 5, 0, true, 0.1, 9.9),
        ];
        let v = judge(&views, at(t0, 10.0), T).unwrap();
        assert!(v.message().contains("not arrived: none"), "{}", v.message());
    }

    #[test]
    fn a_lost_connection_is_reported_at_once() {
        let t0 = Instant::now();
        let mut views = vec![
            view(t0, 5, 3, true, 9.9, 9.9),
            view(t0, 5, 3, true, 9.9, 9.9),
            view(t0, 4, 2, false, 9.0, 9.9),
        ];
        views[2].link = Link::Lost;
        let v = judge(&views, at(t0, 10.0), T).expect("gone");
        assert!(
            matches!(
                v,
                Verdict::Gone {
                    rank: 2,
                    step: 3,
                    ..
                }
            ),
            "{v:?}"
        );
        let m = v.message();
        assert!(
            m.starts_with("ringtrain: watchdog: step 3: rank 2 is gone:"),
            "{m}"
        );
        assert!(m.contains("out of memory"), "{m}");
        assert!(m.contains("its last report: computing at step 2"), "{m}");
    }

    #[test]
    fn silence_longer_than_the_timeout_is_a_loss_and_goodbyes_are_not() {
        let t0 = Instant::now();
        let mut views = vec![
            view(t0, 5, 3, false, 9.0, 9.9),
            view(t0, 5, 3, false, 1.0, 1.0),
        ];
        let v = judge(&views, at(t0, 10.0), T).expect("silent");
        assert!(
            v.message().contains("no word from it for 9 s"),
            "{}",
            v.message()
        );
        views[1].link = Link::Bye;
        assert_eq!(judge(&views, at(t0, 10.0), T), None);
        views[1].link = Link::Pending;
        let v = judge(&views, at(t0, 10.0), T).unwrap();
        assert!(v.message().contains("did not connect"), "{}", v.message());
    }

    #[test]
    fn a_rank_that_left_early_has_not_arrived() {
        let t0 = Instant::now();
        let mut views = vec![
            view(t0, 9, 5, true, 1.0, 9.9),
            view(t0, 8, 5, false, 1.0, 1.0),
        ];
        views[1].link = Link::Bye;
        let v = judge(&views, at(t0, 10.0), T).unwrap();
        assert!(
            v.message()
                .contains("not arrived: rank 1 (left the job after step 5)"),
            "{}",
            v.message()
        );
    }
}
