//! Library error type. Every variant is something a user can cause or fix;
//! the binary maps all of them to exit code 2 (see `main.rs`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag value, config entry or combination of them.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data file that exists but whose contents are wrong.
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },

    /// A parameter file (safetensors) that cannot be used.
    #[error("{path}: {msg}")]
    Params { path: PathBuf, msg: String },

    /// A training checkpoint that cannot be used (incomplete, corrupted,
    /// from another model or config).
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    /// A NaN/Inf loss or gradient under `--on-nonfinite abort`, or too
    /// many skipped updates in a row.
    #[error("{0}")]
    NonFinite(String),

    /// Ranks disagree about something that must be identical everywhere.
    #[error("ranks disagree: {0}")]
    Consistency(String),

    /// Another rank reported an error; it prints the message.
    #[error("rank {0} reported an error (see its message)")]
    OtherRank(usize),

    /// The GPU cannot be used (no device, a CUDA library missing, a
    /// kernel that does not compile or load).
    #[error("GPU: {0}")]
    Gpu(String),

    /// The communication layer failed.
    #[error("communication: {0}")]
    Comm(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}
