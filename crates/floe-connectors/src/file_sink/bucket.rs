//! Which bucket (subdirectory of the output directory) a record goes to
//! (Flink's `BucketAssigner`).

use std::fmt::Write;
use std::sync::Arc;

/// What a bucket assigner may look at besides the record.
#[derive(Debug, Clone, Copy)]
pub struct BucketContext {
    /// The subtask's processing time, ms since the epoch.
    pub current_processing_time_ms: u64,
}

type AssignFn<T> = dyn Fn(&T, &BucketContext, &mut String) + Send + Sync;

/// Assigns each record a bucket id: a relative path under the output
/// directory (`""` is the directory itself; `/` nests). Each bucket holds
/// its own part files.
pub struct BucketAssigner<T>(Arc<AssignFn<T>>);

impl<T> Clone for BucketAssigner<T> {
    fn clone(&self) -> Self {
        BucketAssigner(self.0.clone())
    }
}

impl<T> BucketAssigner<T> {
    /// A bucket id computed from the record (Flink: a custom
    /// `BucketAssigner`), e.g. `BucketAssigner::from_fn(|e: &Event| e.country.clone())`.
    pub fn from_fn(f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        BucketAssigner(Arc::new(move |r, _, id| id.push_str(&f(r))))
    }

    /// Writes the bucket id of `record` into `id` (cleared first).
    pub fn assign(&self, record: &T, ctx: &BucketContext, id: &mut String) {
        id.clear();
        (self.0)(record, ctx, id);
    }
}

/// Everything in the output directory itself (Flink's
/// `BasePathBucketAssigner`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BasePathBucketAssigner;

impl<T> From<BasePathBucketAssigner> for BucketAssigner<T> {
    fn from(_: BasePathBucketAssigner) -> Self {
        BucketAssigner(Arc::new(|_, _, _| {}))
    }
}

/// One bucket per processing-time period, named by a date-time pattern
/// (Flink's default `DateTimeBucketAssigner`, `yyyy-MM-dd--HH`: one bucket
/// per hour), in UTC.
///
/// Pattern letters, as in Java's `DateTimeFormatter`: `yyyy` (or `y`,
/// `yyy`: the full year), `yy` (two digits), `M`/`MM` month, `d`/`dd` day,
/// `H`/`HH` hour (0-23), `m`/`mm` minute, `s`/`ss` second; one letter is
/// unpadded, two are zero-padded. Text in single quotes is literal (`''` is
/// a quote); any other character that is not a letter is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTimeBucketAssigner {
    pattern: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Field(Field, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// Why a date-time bucket pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateTimePatternError {
    /// A letter this assigner does not map (only `y M d H m s` are).
    #[error(
        "unsupported letter '{letter}' in date-time bucket pattern {pattern:?}: supported are y, M, d, H, m, s; quote literal text with '…'"
    )]
    UnsupportedLetter {
        /// The pattern.
        pattern: String,
        /// The letter.
        letter: char,
    },
    /// A quote was opened and never closed.
    #[error("unterminated quote in date-time bucket pattern {pattern:?}")]
    UnterminatedQuote {
        /// The pattern.
        pattern: String,
    },
}

impl Default for DateTimeBucketAssigner {
    /// Flink's default pattern, `yyyy-MM-dd--HH`.
    fn default() -> Self {
        DateTimeBucketAssigner::with_format(Self::DEFAULT_FORMAT).expect("the default parses")
    }
}

impl DateTimeBucketAssigner {
    /// Flink's default pattern: one bucket per hour.
    pub const DEFAULT_FORMAT: &'static str = "yyyy-MM-dd--HH";

    /// The assigner with Flink's default pattern.
    pub fn new() -> Self {
        Self::default()
    }

    /// An assigner with a Java-style pattern (see the type's docs).
    pub fn with_format(pattern: &str) -> Result<Self, DateTimePatternError> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    literal.push('\'');
                    continue;
                }
                loop {
                    match chars.next() {
                        None => {
                            return Err(DateTimePatternError::UnterminatedQuote {
                                pattern: pattern.into(),
                            });
                        }
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            literal.push('\'');
                        }
                        Some('\'') => break,
                        Some(q) => literal.push(q),
                    }
                }
            } else if c.is_ascii_alphabetic() {
                let field = match c {
                    'y' => Field::Year,
                    'M' => Field::Month,
                    'd' => Field::Day,
                    'H' => Field::Hour,
                    'm' => Field::Minute,
                    's' => Field::Second,
                    _ => {
                        return Err(DateTimePatternError::UnsupportedLetter {
                            pattern: pattern.into(),
                            letter: c,
                        });
                    }
                };
                let mut width = 1;
                while chars.peek() == Some(&c) {
                    chars.next();
                    width += 1;
                }
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                tokens.push(Token::Field(field, width));
            } else {
                literal.push(c);
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(DateTimeBucketAssigner {
            pattern: pattern.into(),
            tokens,
        })
    }

    /// The pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Writes the bucket id of processing time `ms` (since the epoch, UTC).
    pub fn format(&self, ms: u64, out: &mut String) {
        use chrono::{Datelike, Timelike};
        let time = chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default();
        let y = i64::from(time.year());
        for t in &self.tokens {
            match t {
                Token::Literal(s) => out.push_str(s),
                Token::Field(f, width) => {
                    let (v, width) = match f {
                        Field::Year if *width == 2 => (y.rem_euclid(100), 2),
                        Field::Year => (y, *width),
                        Field::Month => (i64::from(time.month()), *width),
                        Field::Day => (i64::from(time.day()), *width),
                        Field::Hour => (i64::from(time.hour()), *width),
                        Field::Minute => (i64::from(time.minute()), *width),
                        Field::Second => (i64::from(time.second()), *width),
                    };
                    let _ = write!(out, "{v:0width$}");
                }
            }
        }
    }
}

impl<T> From<DateTimeBucketAssigner> for BucketAssigner<T> {
    fn from(a: DateTimeBucketAssigner) -> Self {
        BucketAssigner(Arc::new(move |_, ctx, id| {
            a.format(ctx.current_processing_time_ms, id)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(pattern: &str, ms: u64) -> String {
        let mut s = String::new();
        DateTimeBucketAssigner::with_format(pattern)
            .unwrap()
            .format(ms, &mut s);
        s
    }

    // 2026-12-06T07:08:09.123Z
    const T: u64 = 1_796_540_889_123;

    #[test]
    fn default_pattern_is_one_bucket_per_hour() {
        let mut s = String::new();
        DateTimeBucketAssigner::new().format(T, &mut s);
        assert_eq!(s, "2026-12-06--07");
        assert_eq!(fmt("yyyy-MM-dd--HH", 0), "1970-01-01--00");
        // A leap day.
        assert_eq!(fmt("yyyy-MM-dd--HH", 951_782_400_000), "2000-02-29--00");
    }

    #[test]
    fn pattern_letters_map_like_java() {
        assert_eq!(fmt("yyyy/MM/dd/HH/mm/ss", T), "2026/12/06/07/08/09");
        assert_eq!(fmt("yy-M-d H:m:s", T), "26-12-6 7:8:9");
        assert_eq!(fmt("'date='yyyyMMdd", T), "date=20261206");
        assert_eq!(fmt("HH'h'''", T), "07h'");
    }

    #[test]
    fn unknown_letters_and_open_quotes_are_refused() {
        assert_eq!(
            DateTimeBucketAssigner::with_format("yyyy-ww"),
            Err(DateTimePatternError::UnsupportedLetter {
                pattern: "yyyy-ww".into(),
                letter: 'w'
            })
        );
        assert!(matches!(
            DateTimeBucketAssigner::with_format("'oops"),
            Err(DateTimePatternError::UnterminatedQuote { .. })
        ));
    }

    #[test]
    fn assigners_write_bucket_ids() {
        let ctx = BucketContext {
            current_processing_time_ms: T,
        };
        let mut id = String::from("stale");
        BucketAssigner::<u32>::from(BasePathBucketAssigner).assign(&1, &ctx, &mut id);
        assert_eq!(id, "");
        BucketAssigner::<u32>::from(DateTimeBucketAssigner::new()).assign(&1, &ctx, &mut id);
        assert_eq!(id, "2026-12-06--07");
        BucketAssigner::from_fn(|n: &u32| format!("n={}", n % 2)).assign(&3, &ctx, &mut id);
        assert_eq!(id, "n=1");
    }
}
