//! Crash points for failure tests: `FLOE_KILL_AT=<point>[@<n>]` makes the
//! process kill itself with SIGKILL the `n`-th time (default: first) it
//! reaches `<point>`.
//!
//! Crash tests need a process to die at one exact phase of a checkpoint or
//! a commit (after a pre-commit, after `_metadata` was written, between two
//! renames), which a signal sent from outside at a random moment cannot
//! hit reliably. The points sit on checkpoint paths only, never per record;
//! without the variable a point costs one relaxed load.
//!
//! Points: `sink.before-pre-commit`, `sink.after-pre-commit`,
//! `checkpoint.after-metadata`, `sink.commit` (before each committed file);
//! the file sink's compaction (on its compaction threads, or in a restore):
//! `compact.start` (a plan begins), `compact.before-publish` (the compacted
//! file is written and synced under its hidden name),
//! `compact.after-publish` (it is renamed to its committed name, the inputs
//! are all still there), `compact.remove-input` (before each input is
//! removed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable that arms a crash point.
pub const ENV: &str = "FLOE_KILL_AT";

struct Armed {
    point: String,
    nth: u32,
    hits: AtomicU32,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let (point, nth) = match spec.split_once('@') {
                Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                point,
                nth: nth.max(1),
                hits: AtomicU32::new(0),
            })
        })
        .as_ref()
}

/// Reaches crash point `point`: kills the process (SIGKILL) when armed for
/// it and this is the armed hit.
pub fn hit(point: &str) {
    let Some(a) = armed() else { return };
    if a.point != point {
        return;
    }
    if a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.nth {
        eprintln!("floe: crash point {point} reached; killing the process (SIGKILL)");
        // SAFETY: kill(2) on our own pid with a valid signal number.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
