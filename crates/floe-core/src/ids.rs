//! Identifiers that users see in logs, the CLI and (later) the REST API.

use std::fmt;
use std::str::FromStr;

/// The identity of one job run, printed as 32 lowercase hex characters like
/// Flink's `JobID`, so scripts that parse Flink's output keep working.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u128);

impl JobId {
    /// A fresh random id; two runs of the same job never share one.
    pub fn random() -> Self {
        JobId(rand::random::<u128>())
    }

    /// Wraps a known value (tests, parsing).
    pub const fn from_u128(v: u128) -> Self {
        JobId(v)
    }

    /// The raw value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// Why a string is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job id {input:?}: expected 32 hexadecimal characters")]
pub struct JobIdParseError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for JobId {
    type Err = JobIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || JobIdParseError {
            input: s.to_string(),
        };
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        u128::from_str_radix(s, 16).map(JobId).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_32_hex_chars_and_parses_back() {
        let id = JobId::from_u128(0xab);
        assert_eq!(id.to_string(), "000000000000000000000000000000ab");
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        let r = JobId::random().to_string();
        assert_eq!(r.len(), 32);
    }

    #[test]
    fn rejects_malformed_ids() {
        assert!("xyz".parse::<JobId>().is_err());
        assert!("g0000000000000000000000000000000".parse::<JobId>().is_err());
        assert!("+0000000000000000000000000000000".parse::<JobId>().is_err());
    }
}
