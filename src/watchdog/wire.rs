//! The side channel's messages: one text line each.
//!
//! Rank → rank 0: `H rank token` (hello), `S seq step inside ms op`
//! (state: in or past collective `seq`, entered or left `ms` ago),
//! `W ms what` (busy with `what`, last progress `ms` ago) or `W` (not
//! busy), `B` (goodbye), `A` (aborting: it printed its own error).
//! Rank 0 → rank: `X code` (exit now; rank 0 printed why), `B` (rank 0
//! finished), `A` (rank 0 is aborting), `L` (rank 0's monitor is alive).

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    Hello {
        rank: usize,
        token: u64,
    },
    State {
        seq: u64,
        step: u64,
        inside: bool,
        ago_ms: u64,
        op: String,
    },
    Work {
        /// What, and how long since its last progress.
        busy: Option<(u64, String)>,
    },
    Bye,
    Abort,
    Exit(i32),
    Alive,
}

impl Msg {
    /// The line, with its newline.
    pub fn encode(&self) -> String {
        match self {
            Msg::Hello { rank, token } => format!("H {rank} {token}\n"),
            Msg::State {
                seq,
                step,
                inside,
                ago_ms,
                op,
            } => format!("S {seq} {step} {} {ago_ms} {op}\n", *inside as u8),
            Msg::Work { busy: None } => "W\n".into(),
            Msg::Work {
                busy: Some((ms, what)),
            } => format!("W {ms} {what}\n"),
            Msg::Bye => "B\n".into(),
            Msg::Abort => "A\n".into(),
            Msg::Exit(code) => format!("X {code}\n"),
            Msg::Alive => "L\n".into(),
        }
    }

    /// One line without its newline; None if it is not a message.
    pub fn parse(line: &str) -> Option<Msg> {
        if line == "W" {
            return Some(Msg::Work { busy: None });
        }
        if let Some(rest) = line.strip_prefix("W ") {
            let (ms, what) = rest.split_once(' ')?;
            return Some(Msg::Work {
                busy: Some((ms.parse().ok()?, what.to_string())),
            });
        }
        let mut it = line.splitn(6, ' ');
        let kind = it.next()?;
        let mut num = || it.next()?.parse::<u64>().ok();
        Some(match kind {
            "H" => Msg::Hello {
                rank: num()? as usize,
                token: num()?,
            },
            "S" => {
                let (seq, step, inside, ago_ms) = (num()?, num()?, num()?, num()?);
                Msg::State {
                    seq,
                    step,
                    inside: inside != 0,
                    ago_ms,
                    op: it.next()?.to_string(),
                }
            }
            "B" => Msg::Bye,
            "A" => Msg::Abort,
            "X" => Msg::Exit(it.next()?.parse().ok()?),
            "L" => Msg::Alive,
            _ => return None,
        })
    }
}

/// Splits complete lines off the front of `buf`.
pub fn take_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let mut lines = vec![];
    while let Some(n) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=n).collect();
        lines.push(String::from_utf8_lossy(&line[..n]).into_owned());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Msg::Hello {
                rank: 3,
                token: u64::MAX,
            },
            Msg::State {
                seq: 41,
                step: 3,
                inside: true,
                ago_ms: 12,
                op: "gradient all-reduce".into(),
            },
            Msg::Work { busy: None },
            Msg::Work {
                busy: Some((1200, "writing a checkpoint".into())),
            },
            Msg::Bye,
            Msg::Abort,
            Msg::Exit(3),
            Msg::Alive,
        ] {
            let line = m.encode();
            assert!(line.ends_with('\n'));
            assert_eq!(Msg::parse(line.trim_end_matches('\n')), Some(m));
        }
        assert_eq!(Msg::parse("S 1 2"), None);
        assert_eq!(Msg::parse("Q"), None);
    }

    #[test]
    fn lines_are_split_off_whole() {
        let mut buf = b"B\nS 1 2 0 5 barr".to_vec();
        assert_eq!(take_lines(&mut buf), vec!["B".to_string()]);
        buf.extend_from_slice(b"ier\n");
        assert_eq!(take_lines(&mut buf), vec!["S 1 2 0 5 barrier".to_string()]);
        assert!(buf.is_empty());
    }
}
