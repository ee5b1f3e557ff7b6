//! How sinks turn records into lines.

use std::fmt::{Display, Write};
use std::sync::Arc;

/// Appends one record's line (without the newline) to a buffer.
type FormatFn<T> = dyn Fn(&T, &mut String) + Send + Sync;

/// How a sink renders a record as one line.
pub struct LineFormat<T>(Arc<FormatFn<T>>);

impl<T> Clone for LineFormat<T> {
    fn clone(&self) -> Self {
        LineFormat(self.0.clone())
    }
}

impl<T: Display> LineFormat<T> {
    /// The record's `Display` form.
    pub fn display() -> Self {
        LineFormat(Arc::new(|r, buf| {
            let _ = write!(buf, "{r}");
        }))
    }
}

impl<T> LineFormat<T> {
    /// A custom format.
    pub fn new(f: impl Fn(&T, &mut String) + Send + Sync + 'static) -> Self {
        LineFormat(Arc::new(f))
    }

    /// Appends one record's line, without the newline, to `buf`.
    pub fn format(&self, record: &T, buf: &mut String) {
        (self.0)(record, buf);
    }

    /// Formats every record of `batch` as a line into `buf`, draining it.
    pub fn format_batch(&self, batch: &mut Vec<T>, buf: &mut String) {
        for r in batch.drain(..) {
            (self.0)(&r, buf);
            buf.push('\n');
        }
    }
}
