//! The error type of the RocksDB storage layer.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Each variant names where
/// (the database directory, the state) and what (the operation), so that a
/// failure surfacing in a job's log can be traced without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum RocksDbError {
    /// RocksDB itself reported an error (I/O, corruption, invalid options…).
    #[error("rocksdb {operation} failed{} in {}: {reason}", state_suffix(.state), .path.display())]
    Db {
        /// The operation that failed (`"get"`, `"open"`, `"checkpoint"`…).
        operation: &'static str,
        /// The database (or checkpoint) directory.
        path: PathBuf,
        /// The state (column family) involved, if any.
        state: Option<String>,
        /// RocksDB's own message.
        reason: String,
    },
    /// A file-system operation around RocksDB failed (creating, listing,
    /// linking or removing directories and files).
    #[error("{operation} failed on {}: {source}", .path.display())]
    Io {
        /// The operation that failed (`"create working directory"`…).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes do not follow this crate's layout (a key that does not
    /// parse, a list value shorter than its count header…): the database or
    /// checkpoint is corrupt or was not written by this crate.
    #[error("corrupt data{} in {}: {reason}", state_suffix(.state), .path.display())]
    Corrupt {
        /// The database (or checkpoint) directory.
        path: PathBuf,
        /// The state (column family) involved, if any.
        state: Option<String>,
        /// What did not parse.
        reason: String,
    },
    /// The caller passed something this layer cannot act on (an unknown
    /// state id, a key group outside the supported range, overlapping
    /// restore sources, a non-empty working directory…).
    #[error("invalid argument to {operation}: {reason}")]
    InvalidArgument {
        /// The operation that was called.
        operation: &'static str,
        /// Why the argument was rejected.
        reason: String,
    },
}

fn state_suffix(state: &Option<String>) -> String {
    match state {
        Some(s) => format!(" for state '{s}'"),
        None => String::new(),
    }
}

impl RocksDbError {
    /// A RocksDB failure of `operation` on `path` (and `state`).
    pub(crate) fn db(
        operation: &'static str,
        path: impl Into<PathBuf>,
        state: Option<&str>,
        err: rocksdb::Error,
    ) -> Self {
        RocksDbError::Db {
            operation,
            path: path.into(),
            state: state.map(str::to_string),
            reason: err.into_string(),
        }
    }

    /// A file-system failure of `operation` on `path`.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        RocksDbError::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    /// Stored bytes that do not parse.
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        state: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        RocksDbError::Corrupt {
            path: path.into(),
            state: state.map(str::to_string),
            reason: reason.into(),
        }
    }

    /// A rejected argument.
    pub(crate) fn invalid(operation: &'static str, reason: impl Into<String>) -> Self {
        RocksDbError::InvalidArgument {
            operation,
            reason: reason.into(),
        }
    }
}
