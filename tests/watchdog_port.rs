//! Nobody outside the job can delay or end it through the watchdog's port:
//! silent, slow and streaming connections made while the ranks start are
//! handled beside the ranks' own hellos, and dropped.
#![cfg(feature = "mpi")]

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{mpirun_command, run_with_timeout};

/// A port free right now (the job's rank 0 is told to listen there).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to the port as soon as it listens (bounded wait).
fn connect_when_open(port: u16, until: Instant) -> Option<TcpStream> {
    while Instant::now() < until {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn strangers_on_the_watchdog_port_do_not_stop_the_job() {
    let port = free_port();
    let mut cmd = mpirun_command(
        2,
        &[
            "train",
            "--steps",
            "60",
            "--eval-every",
            "0",
            "--comm-timeout",
            "3",
        ],
    );
    // Rank 1 is held back 1.5 s, as a rank on a slow remote host would be,
    // so the strangers reach rank 0 first.
    cmd.env("RINGTRAIN_WATCHDOG_PORT", port.to_string())
        .env("RINGTRAIN_FAULT", "slow-start@1:1500");
    let until = Instant::now() + Duration::from_secs(120);
    let (run, streamed) = std::thread::scope(|s| {
        let job = s.spawn(|| run_with_timeout(cmd, Duration::from_secs(300)));
        // Three silent connections, held open through the whole run.
        let silent: Vec<TcpStream> = (0..3)
            .filter_map(|_| connect_when_open(port, until))
            .collect();
        // One byte every 0.5 s, no newline.
        let slow = s.spawn(move || {
            let Some(mut c) = connect_when_open(port, until) else {
                return;
            };
            for _ in 0..20 {
                if c.write_all(b"H").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        // 300 MB without a newline: rank 0 must stop reading it.
        let stream = s.spawn(move || {
            let Some(mut c) = connect_when_open(port, until) else {
                return 0;
            };
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            while sent < 300 << 20 {
                match c.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            sent
        });
        let run = job.join().unwrap();
        drop(silent);
        slow.join().unwrap();
        (run, stream.join().unwrap())
    });
    run.ok();
    assert!(
        !run.stderr.contains("watchdog"),
        "the watchdog spoke\n{}",
        run.context()
    );
    // Rank 0 closed the stream instead of buffering it.
    assert!(streamed < 300 << 20, "rank 0 read all {streamed} bytes");
}
