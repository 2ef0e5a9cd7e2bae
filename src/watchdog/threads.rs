//! The watchdog's threads: on rank 0 the acceptor, one reader per rank
//! and the monitor; on the other ranks the reporter.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{
    CONNECT_TIMEOUT, EXIT_CODE, HEARTBEAT, Link, POLL, Shared, WRITE_TIMEOUT, exit_now, lock,
    spawn, wire,
};

/// Rank 0: accepts one connection per other rank (hello with the job's
/// token), and starts a reader for each.
pub(super) fn accept(listener: TcpListener, s: Arc<Shared>, token: u64, size: usize) {
    let mut connected = 1;
    while connected < size && !s.stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(stream);
        let mut hello = String::new();
        let rank = match reader
            .read_line(&mut hello)
            .ok()
            .and(wire::Msg::parse(hello.trim_end()))
        {
            Some(wire::Msg::Hello { rank, token: t }) if t == token && rank > 0 && rank < size => {
                rank
            }
            _ => continue, // not one of ours
        };
        {
            let mut views = lock(&s.views);
            if views[rank].link != Link::Pending {
                continue;
            }
            views[rank].link = Link::Open;
            views[rank].heard = Instant::now();
        }
        let _ = reader.get_ref().set_read_timeout(None);
        let _ = writer.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = writer.set_nodelay(true);
        lock(&s.out)[rank] = Some(writer);
        let s2 = s.clone();
        if spawn("ringtrain-watchdog-read", move || {
            read_rank(rank, reader, s2)
        })
        .is_err()
        {
            // Without a reader this rank falls silent and is reported.
            continue;
        }
        connected += 1;
    }
}

/// Rank 0: applies one rank's reports to its view until the connection
/// closes; a close without a goodbye is judged at once.
pub(super) fn read_rank(rank: usize, mut r: BufReader<TcpStream>, s: Arc<Shared>) {
    let mut line = String::new();
    loop {
        line.clear();
        let got = r.read_line(&mut line);
        let now = Instant::now();
        let mut views = lock(&s.views);
        let v = &mut views[rank];
        match got {
            Ok(n) if n > 0 => {
                v.heard = now;
                match wire::Msg::parse(line.trim_end()) {
                    Some(wire::Msg::State {
                        seq,
                        step,
                        inside,
                        ago_ms,
                        op,
                    }) => {
                        (v.seq, v.step, v.inside) = (seq, step, inside);
                        v.since = now
                            .checked_sub(Duration::from_millis(ago_ms))
                            .unwrap_or(now);
                        v.op = op;
                    }
                    Some(wire::Msg::Work { busy }) => {
                        v.busy = busy.map(|(ms, what)| {
                            let p = now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
                            (what, p)
                        });
                    }
                    Some(wire::Msg::Bye) => v.link = Link::Bye,
                    Some(wire::Msg::Abort) => v.link = Link::Aborting,
                    _ => {}
                }
            }
            _ => {
                if v.link == Link::Open {
                    v.link = Link::Lost;
                }
                drop(views);
                s.check();
                return;
            }
        }
    }
}

/// Rank 0: judges every POLL until the clean end, and tells the other
/// ranks every HEARTBEAT that it is judging (so that a rank waiting long,
/// for a checkpoint rank 0 writes, does not end itself).
pub(super) fn monitor(s: Arc<Shared>) {
    let mut said = Instant::now();
    while !s.stop.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        s.check();
        if said.elapsed() >= HEARTBEAT {
            s.send_all(&wire::Msg::Alive);
            said = Instant::now();
        }
    }
}

/// Another rank: reports the marks to rank 0, obeys rank 0, and exits on
/// its own when rank 0 is gone or a collective lasts far past the timeout.
pub(super) fn report(stream: TcpStream, s: Arc<Shared>) {
    // Rank 0 ends a stuck job at `timeout`; this is the fallback for a
    // rank 0 that cannot say so.
    let fallback = s.timeout + s.timeout / 4 + Duration::from_secs(2);
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buf = vec![];
    let mut chunk = [0u8; 256];
    let mut sent: Option<(u64, u64, bool, bool)> = None;
    let mut sent_at = Instant::now();
    let mut root_aborting = false;
    let mut root_heard = Instant::now();
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(m) = s.marker.get() else { return };
        let key = (m.seq, m.step, m.inside, m.busy.is_some());
        if sent != Some(key) || sent_at.elapsed() >= HEARTBEAT {
            let state = wire::Msg::State {
                seq: m.seq,
                step: m.step,
                inside: m.inside,
                ago_ms: m.since.elapsed().as_millis() as u64,
                op: m.op.to_string(),
            };
            let work = wire::Msg::Work {
                busy: m
                    .busy
                    .map(|w| (m.progress.elapsed().as_millis() as u64, w.to_string())),
            };
            let lines = state.encode() + &work.encode();
            let w = lock(&s.out)[0]
                .as_ref()
                .map(|mut w| w.write_all(lines.as_bytes()));
            if let Some(Err(_)) = w {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                s.lost_root(root_aborting);
            }
            (sent, sent_at) = (Some(key), Instant::now());
        }
        match (&stream).read(&mut chunk) {
            Ok(0) => s.lost_root(root_aborting),
            Ok(n) => {
                root_heard = Instant::now();
                buf.extend_from_slice(&chunk[..n]);
                for line in wire::take_lines(&mut buf) {
                    match wire::Msg::parse(&line) {
                        // Rank 0 printed why.
                        Some(wire::Msg::Exit(code)) => exit_now(code),
                        // Rank 0 finished cleanly: nothing left to watch.
                        Some(wire::Msg::Bye) => return,
                        Some(wire::Msg::Abort) => root_aborting = true,
                        _ => {}
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => s.lost_root(root_aborting),
        }
        if m.inside && m.since.elapsed() > fallback && root_heard.elapsed() > fallback {
            eprintln!(
                "ringtrain: watchdog: rank {}: step {}: \"{}\" did not complete within {} s \
                 and rank 0 fell silent without ending the job; ending this rank",
                s.rank,
                m.step,
                m.op,
                fallback.as_secs_f64().round()
            );
            exit_now(EXIT_CODE);
        }
    }
}
