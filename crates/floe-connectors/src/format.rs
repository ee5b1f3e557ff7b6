//! How sinks turn records into lines.

use std::any::Any;
use std::fmt::{Debug, Display, Write};
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

impl<T: Debug + 'static> LineFormat<T> {
    /// What Flink's `print()` writes (a record's `toString()`): the
    /// record's `Debug` form, so any record type can be printed, except
    /// that `String` and `&'static str` records are written as they are,
    /// without quotes. The type check is on `T` alone, so each
    /// monomorphised format keeps one branch.
    pub fn debug() -> Self {
        LineFormat(Arc::new(|r, buf| match raw_str(r) {
            Some(s) => buf.push_str(s),
            None => {
                let _ = write!(buf, "{r:?}");
            }
        }))
    }
}

/// The text of a `String` or `&'static str` record; `None` for any other
/// type.
#[inline]
fn raw_str<T: 'static>(record: &T) -> Option<&str> {
    let any: &dyn Any = record;
    any.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| any.downcast_ref::<&'static str>().copied())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line<T: Debug + 'static>(record: T) -> String {
        let mut buf = String::new();
        LineFormat::debug().format(&record, &mut buf);
        buf
    }

    #[test]
    fn debug_prints_any_record_and_strings_raw() {
        assert_eq!(line((3u64, 7u64)), "(3, 7)");
        assert_eq!(line(Some(-1i32)), "Some(-1)");
        assert_eq!(line(String::from("a \"b\"")), "a \"b\"");
        assert_eq!(line("plain"), "plain");
        // Only a whole record is raw: a string inside another type is
        // shown by that type's `Debug`.
        assert_eq!(line((String::from("k"), 1u8)), "(\"k\", 1)");
    }
}
