//! How the commands print times and sizes.

/// A timestamp (ms since the epoch) in local time, `dd.MM.yyyy HH:mm:ss` as
/// Flink's `list` prints it; UTC (marked) if the local time is unknown.
pub fn local_time(ms: u64) -> String {
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers
    // are valid for the call, and localtime_r is the thread-safe variant.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            None
        } else {
            Some(tm)
        }
    };
    match tm {
        Some(tm) => format!(
            "{:02}.{:02}.{:04} {:02}:{:02}:{:02}",
            tm.tm_mday,
            tm.tm_mon + 1,
            tm.tm_year + 1900,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        None => utc_time(ms),
    }
}

/// A timestamp (ms since the epoch) in UTC, marked, in `list`'s layout.
fn utc_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%d.%m.%Y %H:%M:%S UTC")
        .to_string()
}

/// Bytes as B, KiB, MiB or GiB with one decimal.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Milliseconds as `ms` below ten seconds, else seconds with one decimal.
pub fn millis(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_sizes_and_durations() {
        assert_eq!(utc_time(0), "01.01.1970 00:00:00 UTC");
        assert_eq!(utc_time(1_704_067_200_000), "01.01.2024 00:00:00 UTC");
        assert_eq!(
            utc_time(951_782_400_000 + 3_723_000),
            "29.02.2000 01:02:03 UTC"
        );
        assert_eq!(local_time(0).len(), "01.01.1970 00:00:00".len());
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(millis(42), "42 ms");
        assert_eq!(millis(12_345), "12.3 s");
    }
}
