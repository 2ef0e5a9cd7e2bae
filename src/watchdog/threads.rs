//! The watchdog's threads: on rank 0 the acceptor, one reader per rank
//! and the monitor; on the other ranks the reporter.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{EXIT_CODE, HEARTBEAT, Link, POLL, Shared, WRITE_TIMEOUT, exit_now, lock, spawn, wire};

/// Rank 0: accepts connections until every other rank has said hello
/// with the job's token. Each handshake runs on a thread of its own with a
/// short deadline and a bounded line, so a silent, slow or hostile peer
/// never holds up a rank's hello; a peer without the token is dropped.
pub(super) fn accept(listener: TcpListener, s: Arc<Shared>, token: u64, size: usize) {
    let _ = listener.set_nonblocking(true);
    let pending = Arc::new(AtomicUsize::new(0));
    // A short command may end before a rank's hello is taken: accept on
    // for a moment after the stop, so that rank gets its goodbye.
    let mut stopped: Option<Instant> = None;
    while !every_rank_connected(&s) {
        if s.stop.load(Ordering::SeqCst) {
            let at = *stopped.get_or_insert_with(Instant::now);
            if at.elapsed() > HELLO_DEADLINE {
                return;
            }
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        // A flood of connections gets no more threads than this.
        if pending.load(Ordering::SeqCst) >= MAX_HANDSHAKES {
            continue;
        }
        pending.fetch_add(1, Ordering::SeqCst);
        let (s2, p2) = (s.clone(), pending.clone());
        let started = spawn("ringtrain-watchdog-hello", move || {
            let hello = handshake(stream, &s2, token, size);
            p2.fetch_sub(1, Ordering::SeqCst);
            if let Some((rank, reader)) = hello {
                read_rank(rank, reader, s2);
            }
        });
        if started.is_err() {
            pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Handshakes in progress at most (each a thread for at most
/// `HELLO_DEADLINE`).
const MAX_HANDSHAKES: usize = 64;
/// How long a peer has for its whole hello line.
const HELLO_DEADLINE: Duration = Duration::from_secs(2);
/// The longest hello line (a real one is ~30 bytes).
const MAX_HELLO: usize = 128;
/// The longest report line a rank sends (a real one is < 200 bytes).
const MAX_LINE: u64 = 4096;
const ACCEPT_POLL: Duration = Duration::from_millis(10);

pub(super) fn every_rank_connected(s: &Shared) -> bool {
    lock(&s.views).iter().all(|v| v.link != Link::Pending)
}

/// Reads a peer's hello (within `HELLO_DEADLINE`, at most `MAX_HELLO`
/// bytes) and, when it is a rank of this job not yet connected, registers
/// it; returns the rank and the reader for its reports.
fn handshake(
    stream: TcpStream,
    s: &Shared,
    token: u64,
    size: usize,
) -> Option<(usize, BufReader<TcpStream>)> {
    let _ = stream.set_nonblocking(false);
    let deadline = Instant::now() + HELLO_DEADLINE;
    // One byte at a time: the rank's reports may follow its hello at once,
    // and must stay unread for `read_rank`.
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        if (&stream).read(&mut byte).ok()? == 0 {
            return None;
        }
        if byte[0] == b'\n' {
            break;
        }
        if line.len() == MAX_HELLO {
            return None;
        }
        line.push(byte[0]);
    }
    let rank = match wire::Msg::parse(std::str::from_utf8(&line).ok()?) {
        Some(wire::Msg::Hello { rank, token: t }) if t == token && rank > 0 && rank < size => rank,
        _ => return None, // not one of ours
    };
    let _ = stream.set_read_timeout(None);
    let writer = stream.try_clone().ok()?;
    let _ = writer.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = writer.set_nodelay(true);
    {
        let mut views = lock(&s.views);
        if views[rank].link != Link::Pending {
            return None;
        }
        // The writer first: once the link is open, a goodbye must reach it.
        lock(&s.out)[rank] = Some(writer);
        views[rank].link = Link::Open;
        views[rank].heard = Instant::now();
    }
    let reader = BufReader::new(stream);
    Some((rank, reader))
}

/// Rank 0: applies one rank's reports to its view until the connection
/// closes; a close without a goodbye is judged at once.
pub(super) fn read_rank(rank: usize, mut r: BufReader<TcpStream>, s: Arc<Shared>) {
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded: a line without an end is a broken rank, not a reason
        // to grow rank 0's memory.
        let got = match (&mut r).take(MAX_LINE).read_line(&mut line) {
            Ok(n) if n as u64 == MAX_LINE && !line.ends_with('\n') => Ok(0),
            got => got,
        };
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

/// Reads what rank 0 sent that is still in the socket (bounded: what its
/// buffer holds) and obeys it: exits on an exit line; returns whether rank
/// 0 had announced an abort. Called when the connection broke, so that a
/// rank 0 that ended the job and then exited is not reported lost.
fn obey_what_is_left(stream: &TcpStream, buf: &mut Vec<u8>) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut chunk = [0u8; 4096];
    for _ in 0..256 {
        match (&*stream).read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let mut aborting = false;
    for line in wire::take_lines(buf) {
        match wire::Msg::parse(&line) {
            Some(wire::Msg::Exit(code)) => exit_now(code),
            Some(wire::Msg::Abort) => aborting = true,
            _ => {}
        }
    }
    aborting
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
                // Rank 0's exit line may be waiting unread: the write
                // failed because rank 0 has exited since sending it.
                let aborting = obey_what_is_left(&stream, &mut buf);
                s.lost_root(root_aborting || aborting);
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
            Err(_) => {
                let aborting = obey_what_is_left(&stream, &mut buf);
                s.lost_root(root_aborting || aborting)
            }
        }
        if m.inside && m.since.elapsed() > fallback && root_heard.elapsed() > fallback {
            crate::say!(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines rank 0 sent before its end of the connection closed are still
    /// read (here an abort notice; an exit line would end the process).
    #[test]
    fn lines_left_in_a_closed_connection_are_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut root = TcpStream::connect(addr).unwrap();
        let (rank, _) = listener.accept().unwrap();
        let line = wire::Msg::Abort.encode() + &wire::Msg::Alive.encode();
        root.write_all(line.as_bytes()).unwrap();
        drop(root);
        let mut buf = vec![];
        // The bytes may still be on their way on a loaded machine.
        let t0 = Instant::now();
        while !obey_what_is_left(&rank, &mut buf) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "abort line never read"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Nothing left: no abort.
        assert!(!obey_what_is_left(&rank, &mut buf));
    }
}
