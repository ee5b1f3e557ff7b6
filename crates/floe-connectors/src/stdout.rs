//! Standard output (Flink's `print()`).

use std::io::Write;

use anyhow::Context;
use floe_runtime::{SinkWriter, TaskInfo};

use crate::format::LineFormat;

/// Writes one line per record to stdout. Each batch is written with one call
/// under the stdout lock, so lines of parallel subtasks never mix.
#[derive(Clone)]
pub struct StdoutSink<T> {
    format: LineFormat<T>,
    buf: String,
}

impl<T: std::fmt::Display> StdoutSink<T> {
    /// Prints each record's `Display` form.
    pub fn new() -> Self {
        Self::with_format(LineFormat::display())
    }
}

impl<T: std::fmt::Display> Default for StdoutSink<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> StdoutSink<T> {
    /// Prints with a custom line format.
    pub fn with_format(format: LineFormat<T>) -> Self {
        StdoutSink {
            format,
            buf: String::new(),
        }
    }
}

impl<T: Send + 'static> SinkWriter<T> for StdoutSink<T> {
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        Ok(())
    }

    fn write(&mut self, value: T) -> anyhow::Result<()> {
        self.write_batch(&mut vec![value])
    }

    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        self.buf.clear();
        self.format.format_batch(batch, &mut self.buf);
        let mut out = std::io::stdout().lock();
        out.write_all(self.buf.as_bytes())
            .context("cannot write to stdout")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        std::io::stdout()
            .lock()
            .flush()
            .context("cannot write to stdout")
    }
}
