//! The progress bar: `--progress bar|lines|auto`, and where it draws.
//!
//! mpirun's ranks write to pipes, never to a terminal, so `auto` shows
//! plain lines under mpirun even when the user watches a terminal at the
//! other end; `--progress bar` draws the bar there anyway (escape codes
//! through mpirun's forwarding, which keeps them). The bar is made at the
//! first step, after the set-up lines, so its first frame already carries
//! a step's figures.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// `train --progress`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// The bar when rank 0's stderr is a terminal, else lines.
    #[default]
    Auto,
    /// A progress bar on stderr, terminal or not (under mpirun).
    Bar,
    /// A line every --log-every steps on stdout.
    Lines,
}

impl Progress {
    /// Whether rank 0 draws a bar, given whether its stderr is a terminal.
    pub fn bar(self, root_has_terminal: bool) -> bool {
        match self {
            Progress::Auto => root_has_terminal,
            Progress::Bar => true,
            Progress::Lines => false,
        }
    }
}

/// A bar of `steps` at `position` showing `message`, drawn on stderr: its
/// first frame is already complete.
pub fn new_bar(steps: u64, position: u64, message: String) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(Stderr::new()), 5)
    };
    let b = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::hidden());
    b.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} [{elapsed_precise}<{eta_precise}] {wide_msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_position(position);
    b.set_message(message);
    b.set_draw_target(target);
    b.tick();
    b
}

/// stderr as a terminal it may not be (a pipe to mpirun): the width is
/// the controlling terminal's when there is one, else $COLUMNS, else 100.
#[derive(Debug)]
struct Stderr {
    width: u16,
}

impl Stderr {
    fn new() -> Self {
        Stderr {
            width: tty_width().unwrap_or(100),
        }
    }
    fn put(&self, s: &str) -> std::io::Result<()> {
        std::io::stderr().write_all(s.as_bytes())
    }
}

fn tty_width() -> Option<u16> {
    let from_tty = std::fs::File::open("/dev/tty").ok().and_then(|f| {
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCGWINSZ fills a winsize on a descriptor we own.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
        (ok && ws.ws_col > 0).then_some(ws.ws_col)
    });
    from_tty.or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
}

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        self.width
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}A"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}B"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}C"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}D"))
        } else {
            Ok(())
        }
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
