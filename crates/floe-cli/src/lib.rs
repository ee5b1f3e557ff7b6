//! The `floe` command-line tool and the example jobs it ships.
//!
//! Example jobs are ordinary job functions taking [`floe::JobArgs`]; the
//! `floe` binary runs them by name (`floe run wordcount …`), and each also has
//! a stand-alone job binary, as a user's job would.

pub mod bench;
mod child;
pub mod cluster_bench;
pub mod examples;
pub mod kafka_bench;
pub mod nexmark_bench;
pub mod overhead_bench;
pub mod query_bench;
pub mod recovery_bench;
pub mod snapshot_tools;
pub mod timers_bench;

/// Peak resident set size of this process in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    peak_rss_bytes_at("/proc/self/status")
}

/// Peak resident set size of process `pid` (a benchmark's child).
pub fn peak_rss_bytes_of(pid: u32) -> Option<u64> {
    peak_rss_bytes_at(&format!("/proc/{pid}/status"))
}

/// `VmHWM` of a `/proc/<pid>/status` file, in bytes.
fn peak_rss_bytes_at(status_file: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_file).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
