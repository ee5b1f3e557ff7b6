//! Standard output and standard error (Flink's `print()` and
//! `printToErr()`).

use std::io::Write;

use anyhow::Context;
use floe_runtime::{SinkWriter, TaskInfo};

use crate::format::LineFormat;

/// The stream a [`StdoutSink`] writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Stdout,
    Stderr,
}

/// Writes one line per record to stdout (or stderr). Each batch is written
/// with one call under the stream's lock, so lines of parallel subtasks
/// never mix.
#[derive(Clone)]
pub struct StdoutSink<T> {
    format: LineFormat<T>,
    target: Target,
    /// Whether lines start with `<subtask index + 1>> ` when the sink runs
    /// in more than one subtask, as Flink's print sink does.
    subtask_prefix: bool,
    /// The prefix of this subtask's lines, set by `open`.
    prefix: String,
    buf: String,
}

impl<T: std::fmt::Debug + 'static> StdoutSink<T> {
    /// Flink's print sink: each record's `Debug` form (a `String` as it is,
    /// see [`LineFormat::debug`]), prefixed with `<subtask index + 1>> `
    /// when the sink has more than one subtask, so parallel output shows
    /// which subtask printed what.
    pub fn new() -> Self {
        StdoutSink {
            subtask_prefix: true,
            ..Self::with_format(LineFormat::debug())
        }
    }
}

impl<T: std::fmt::Debug + 'static> Default for StdoutSink<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> StdoutSink<T> {
    /// Prints exactly the lines `format` writes, without a subtask prefix
    /// at any parallelism: for output that scripts parse.
    pub fn with_format(format: LineFormat<T>) -> Self {
        StdoutSink {
            format,
            target: Target::Stdout,
            subtask_prefix: false,
            prefix: String::new(),
            buf: String::new(),
        }
    }

    /// Writes to standard error instead (Flink's `printToErr()`), e.g. to
    /// keep records apart from a job's other output.
    pub fn to_stderr(mut self) -> Self {
        self.target = Target::Stderr;
        self
    }

    /// Formats `batch` into `self.buf`, one prefixed line per record.
    fn format_lines(&mut self, batch: &mut Vec<T>) {
        self.buf.clear();
        for record in batch.drain(..) {
            self.buf.push_str(&self.prefix);
            self.format.format(&record, &mut self.buf);
            self.buf.push('\n');
        }
    }
}

impl<T: Send + 'static> SinkWriter<T> for StdoutSink<T> {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.prefix = if self.subtask_prefix && info.parallelism > 1 {
            format!("{}> ", info.subtask_index + 1)
        } else {
            String::new()
        };
        Ok(())
    }

    fn write(&mut self, value: T) -> anyhow::Result<()> {
        self.write_batch(&mut vec![value])
    }

    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        self.format_lines(batch);
        let bytes = self.buf.as_bytes();
        match self.target {
            Target::Stdout => std::io::stdout().lock().write_all(bytes),
            Target::Stderr => std::io::stderr().lock().write_all(bytes),
        }
        .with_context(|| format!("cannot write to {}", self.target.name()))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match self.target {
            Target::Stdout => std::io::stdout().lock().flush(),
            Target::Stderr => std::io::stderr().lock().flush(),
        }
        .with_context(|| format!("cannot write to {}", self.target.name()))
    }
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Stdout => "stdout",
            Target::Stderr => "stderr",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(subtask_index: u32, parallelism: u32) -> TaskInfo {
        TaskInfo {
            job_id: floe_core::JobId::from_u128(1),
            job_name: "test".into(),
            operator_name: "Print to Std. Out".into(),
            uid: "print".into(),
            subtask_index,
            parallelism,
            max_parallelism: 128,
        }
    }

    fn lines<T: Send + 'static>(mut sink: StdoutSink<T>, info: &TaskInfo, batch: Vec<T>) -> String {
        let mut batch = batch;
        sink.open(info).unwrap();
        sink.format_lines(&mut batch);
        sink.buf
    }

    #[test]
    fn print_prefixes_the_subtask_only_when_parallel() {
        let pairs = || vec![(1u64, 2u64), (3, 4)];
        assert_eq!(
            lines(StdoutSink::new(), &info(0, 1), pairs()),
            "(1, 2)\n(3, 4)\n"
        );
        assert_eq!(
            lines(StdoutSink::new().to_stderr(), &info(2, 3), pairs()),
            "3> (1, 2)\n3> (3, 4)\n"
        );
        assert_eq!(
            lines(StdoutSink::new(), &info(0, 2), vec![String::from("a b")]),
            "1> a b\n"
        );
    }

    #[test]
    fn a_custom_format_is_never_prefixed() {
        let format = LineFormat::new(|(a, b): &(u64, u64), buf: &mut String| {
            use std::fmt::Write;
            let _ = write!(buf, "{a} {b}");
        });
        assert_eq!(
            lines(StdoutSink::with_format(format), &info(1, 2), vec![(5, 6)]),
            "5 6\n"
        );
    }
}
