//! Lines to standard error in one `write(2)` each.
//!
//! `eprintln!` writes a formatted line piece by piece (stderr is
//! unbuffered). Under `mpirun` those pieces travel separately, so the
//! launcher's own notice ("1 process returned a non-zero exit code") or
//! another rank's line can land inside a message. One write of a whole line
//! (at most `PIPE_BUF` bytes reach a pipe atomically) keeps it in one piece.

use std::io::Write;

/// Writes `line` and a newline to standard error with a single write.
pub fn stderr_line(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

/// `eprintln!` that writes its line with one `write(2)`; see
/// [`stderr_line`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stderr::stderr_line(&format!($($arg)*))
    };
}
