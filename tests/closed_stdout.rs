//! `ringtrain ... | head`: a reader that stops reading never makes
//! ringtrain panic. `train` goes on without printing (its outputs are
//! still written); short commands end quietly, with SIGPIPE's status.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, without_launcher_env};

/// Runs `ringtrain ARGS` with a stdout whose reader is already gone, so
/// every write fails with EPIPE; returns (exit code, stderr).
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe fills both descriptors, which the Files then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let (reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    let mut cmd = without_launcher_env(Command::new(bin()));
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringtrain");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    // A bound that catches a hang, not a slow machine.
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("ringtrain {args:?} hung with a closed stdout");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap_or_default())
}

#[test]
fn train_keeps_training_when_stdout_is_closed() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("m.safetensors");
    let (code, err) = with_closed_stdout(&[
        "train",
        "--steps",
        "20",
        "--log-every",
        "1",
        "--save",
        model.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    assert!(model.exists(), "the model was not saved\n{err}");
}

#[test]
fn info_ends_quietly_when_stdout_is_closed() {
    let (code, err) = with_closed_stdout(&["info"]);
    assert_eq!(code, Some(141), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
}
