//! The command line of libtest, read the way libtest reads it, for the
//! test executables with a harness of their own (tests/nvrtc.rs, and
//! tests/cluster.rs and tests/slurm.rs through tests/sim).
//!
//! An option's value is not a name filter: `--test-threads 1` or
//! `--skip two_` once made those harnesses run nothing and say "ok".

/// libtest's options that take a value as the next argument.
const WITH_VALUE: [&str; 7] = [
    "--test-threads",
    "--skip",
    "--logfile",
    "--color",
    "--format",
    "--shuffle-seed",
    "-Z",
];

/// Which tests a command line selects.
#[derive(Debug, Default)]
pub struct Selection {
    /// `--list`: print the names, run nothing.
    pub list: bool,
    exact: bool,
    filters: Vec<String>,
    skips: Vec<String>,
}

impl Selection {
    pub fn from_env() -> Self {
        Self::parse(std::env::args().skip(1))
    }

    pub fn parse(args: impl IntoIterator<Item = String>) -> Self {
        let mut s = Self::default();
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--list" => s.list = true,
                "--exact" => s.exact = true,
                "--skip" => s.skips.extend(args.next()),
                _ if a.starts_with("--skip=") => s.skips.push(a["--skip=".len()..].to_string()),
                _ if WITH_VALUE.contains(&a.as_str()) => {
                    args.next();
                }
                _ if a.starts_with('-') => {}
                _ => s.filters.push(a),
            }
        }
        s
    }

    fn matches(&self, name: &str, pattern: &str) -> bool {
        if self.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    }

    /// Like libtest: any filter matches (or there is none), and no skip.
    pub fn selects(&self, name: &str) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(name, f)))
            && !self.skips.iter().any(|s| self.matches(name, s))
    }
}
