//! Part file names (Flink's `OutputFileConfig`).

/// How part files are named: `<prefix>-<subtask>-<counter><suffix>` once
/// committed, and `.<committed name>.inprogress.<token>` while in progress
/// or pending (hidden, so readers that skip dot files never see a file
/// that may still change or disappear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFileConfig {
    prefix: String,
    suffix: String,
}

impl Default for OutputFileConfig {
    /// Prefix `part`, no suffix (Flink's defaults).
    fn default() -> Self {
        OutputFileConfig {
            prefix: "part".into(),
            suffix: String::new(),
        }
    }
}

/// Why an [`OutputFileConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputFileConfigError {
    /// The prefix or suffix would not keep part files plain, visible names
    /// inside their bucket.
    #[error("part file {what} {value:?} must not contain '/' or NUL{extra}")]
    Invalid {
        /// `prefix` or `suffix`.
        what: &'static str,
        /// The refused value.
        value: String,
        /// More on why.
        extra: &'static str,
    },
}

/// Builds an [`OutputFileConfig`] (Flink's `OutputFileConfig.builder()`);
/// `build` checks the parts.
#[derive(Debug, Clone, Default)]
pub struct OutputFileConfigBuilder(OutputFileConfig);

impl OutputFileConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> OutputFileConfigBuilder {
        OutputFileConfigBuilder::default()
    }
}

impl OutputFileConfigBuilder {
    /// The committed names' prefix (default `part`); not empty, no `/`,
    /// not starting with `.` (committed files are visible).
    pub fn with_part_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.0.prefix = prefix.into();
        self
    }

    /// The committed names' suffix, e.g. `.txt` (default empty); no `/`.
    pub fn with_part_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.0.suffix = suffix.into();
        self
    }

    /// Checks the parts (Flink's `OutputFileConfigBuilder.build()`).
    pub fn build(self) -> Result<OutputFileConfig, OutputFileConfigError> {
        let config = self.0;
        let bad = |what, value: &str, extra| {
            Err(OutputFileConfigError::Invalid {
                what,
                value: value.into(),
                extra,
            })
        };
        if config.prefix.is_empty() || config.prefix.starts_with('.') {
            return bad(
                "prefix",
                &config.prefix,
                ", be empty or start with '.' (committed files are visible)",
            );
        }
        for (what, v) in [("prefix", &config.prefix), ("suffix", &config.suffix)] {
            if v.contains(['/', '\0']) {
                return bad(what, v, "");
            }
        }
        Ok(config)
    }
}

impl OutputFileConfig {
    /// The prefix.
    pub fn part_prefix(&self) -> &str {
        &self.prefix
    }

    /// The suffix.
    pub fn part_suffix(&self) -> &str {
        &self.suffix
    }

    /// The committed name of part file `counter` of `subtask`.
    pub fn committed_name(&self, subtask: u32, counter: u64) -> String {
        format!("{}-{subtask}-{counter}{}", self.prefix, self.suffix)
    }

    /// The hidden name the file has until it is committed.
    pub fn in_progress_name(committed: &str, token: &str) -> String {
        format!(".{committed}.inprogress.{token}")
    }

    /// The subtask and counter of an in-progress name of this config, if
    /// it is one.
    pub(crate) fn parse_in_progress(&self, name: &str) -> Option<(u32, u64)> {
        let rest = name.strip_prefix('.')?.strip_prefix(&self.prefix)?;
        let rest = rest.strip_prefix('-')?;
        let (committed_tail, token) = rest.rsplit_once(".inprogress.")?;
        if !is_token(token) {
            return None;
        }
        let numbers = committed_tail.strip_suffix(&self.suffix)?;
        let (subtask, counter) = numbers.split_once('-')?;
        Some((subtask.parse().ok()?, counter.parse().ok()?))
    }
}

/// A run token: 8 lowercase hex digits.
pub(crate) fn is_token(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_flink() {
        let c = OutputFileConfig::default();
        assert_eq!(c.committed_name(3, 17), "part-3-17");
        assert_eq!(
            OutputFileConfig::in_progress_name("part-3-17", "0badf00d"),
            ".part-3-17.inprogress.0badf00d"
        );
        let c = OutputFileConfig::builder()
            .with_part_prefix("events")
            .with_part_suffix(".txt")
            .build()
            .unwrap();
        assert_eq!(c.committed_name(0, 0), "events-0-0.txt");
        assert_eq!(
            c.parse_in_progress(".events-2-41.txt.inprogress.0badf00d"),
            Some((2, 41))
        );
        assert_eq!(c.parse_in_progress(".events-2-41.txt.inprogress.x"), None);
        assert_eq!(c.parse_in_progress(".part-2-41.inprogress.0badf00d"), None);
        assert_eq!(c.parse_in_progress("events-2-41.txt"), None);
    }

    #[test]
    fn names_that_would_escape_or_hide_are_refused() {
        for (p, s) in [("", ""), (".hidden", ""), ("a/b", ""), ("part", "/x")] {
            let r = OutputFileConfig::builder()
                .with_part_prefix(p)
                .with_part_suffix(s)
                .build();
            assert!(r.is_err(), "{p:?} {s:?}");
        }
    }
}
