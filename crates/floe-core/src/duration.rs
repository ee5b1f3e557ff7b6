//! Durations written the way Flink users write them: `500 ms`, `500ms`, `1s`,
//! `1 min`, `2 h`; a bare number means milliseconds.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationParseError {
    /// Nothing but whitespace.
    #[error("empty duration")]
    Empty,
    /// No leading digits.
    #[error("duration {0:?} does not start with a number")]
    NoNumber(String),
    /// The number does not fit.
    #[error("duration {0:?} is too large")]
    Overflow(String),
    /// A unit that is not one of Flink's.
    #[error(
        "duration {input:?} has unknown unit {unit:?} (use ns, us, ms, s, min, h or d, or their long names)"
    )]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: String,
    },
}

/// Nanoseconds per unit, for every spelling Flink's `TimeUtils` accepts.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1_000_000,
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "micro" | "micros" | "microsecond" | "microseconds" => 1_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
        "h" | "hour" | "hours" => 3_600_000_000_000,
        "d" | "day" | "days" => 86_400_000_000_000,
        _ => return None,
    })
}

/// Parses a duration in Flink's notation.
pub fn parse_duration(input: &str) -> Result<Duration, DurationParseError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationParseError::Empty);
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits_end == 0 {
        return Err(DurationParseError::NoNumber(input.to_string()));
    }
    let value: u128 = s[..digits_end]
        .parse()
        .map_err(|_| DurationParseError::Overflow(input.to_string()))?;
    let unit = s[digits_end..].trim().to_ascii_lowercase();
    let per = unit_nanos(&unit).ok_or_else(|| DurationParseError::UnknownUnit {
        input: input.to_string(),
        unit: unit.clone(),
    })?;
    let nanos = value
        .checked_mul(per)
        .filter(|n| *n <= u64::MAX as u128 * 1_000_000_000)
        .ok_or_else(|| DurationParseError::Overflow(input.to_string()))?;
    Ok(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_flink_forms() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500 ms").unwrap(), ms(500));
        assert_eq!(parse_duration("500ms").unwrap(), ms(500));
        assert_eq!(parse_duration("500").unwrap(), ms(500));
        assert_eq!(parse_duration("1s").unwrap(), ms(1000));
        assert_eq!(parse_duration("1 min").unwrap(), ms(60_000));
        assert_eq!(parse_duration("2 h").unwrap(), ms(7_200_000));
        assert_eq!(parse_duration("1 d").unwrap(), ms(86_400_000));
        assert_eq!(parse_duration("10 SECONDS").unwrap(), ms(10_000));
        assert_eq!(parse_duration("3 us").unwrap(), Duration::from_micros(3));
        assert_eq!(parse_duration(" 7ns ").unwrap(), Duration::from_nanos(7));
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert_eq!(parse_duration(""), Err(DurationParseError::Empty));
        assert!(matches!(
            parse_duration("ms"),
            Err(DurationParseError::NoNumber(_))
        ));
        assert!(matches!(
            parse_duration("5 fortnights"),
            Err(DurationParseError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999999999999999999999 d"),
            Err(DurationParseError::Overflow(_))
        ));
        assert!(parse_duration("-5 s").is_err());
    }
}
