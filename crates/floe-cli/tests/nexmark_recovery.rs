//! Every Nexmark query as a user runs it — `floe run nexmark` in a real
//! process, rows into the exactly-once file sink, checkpoints every 50 ms —
//! commits exactly the rows of its failure-free run after
//!
//! - a SIGKILL in the middle of the run (after a completed checkpoint) and
//!   a restore from that checkpoint, and
//! - a stop with a savepoint at p = 2 and a restore from it at p = 3.
//!
//! The failure-free rows themselves are checked against batch
//! computations in `nexmark.rs`, `nexmark_windows.rs` and
//! `nexmark_joins.rs`; here the point is that failures and rescaling
//! change nothing. Rescaling keeps the generator's splits (and so their
//! event-time timelines), which is why p = 3 must equal p = 2.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{Running, Sandbox};

/// Events per run: the fixed size.
const EVENTS: &str = "1000000";
/// Events per run on RocksDB, which a debug build runs several times
/// slower: the point there is the backend's restore, not the size.
const ROCKSDB_EVENTS: &str = "200000";
/// Events per second of event time: 1,000,000 events span 100 s, so that
/// the windowed queries fire many windows, some before and some after
/// the failure.
const TPS: &str = "10000";
const SEED: &str = "7";
/// About how long a run that is interrupted lasts: its emission is capped
/// at events / `RUN_SECONDS` per second, so that the failure lands mid-run.
const RUN_SECONDS: u64 = 5;

/// What a run leaves to compare: its committed rows, sorted.
fn committed(out: &Path) -> Vec<String> {
    let mut rows: Vec<String> = common::read_committed(out)
        .lines()
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// A query and how its rows are compared: as they are, or reduced to what
/// does not depend on timing (a query over processing time).
struct Case {
    query: &'static str,
    normalize: fn(Vec<String>) -> Vec<String>,
}

fn as_is(rows: Vec<String>) -> Vec<String> {
    rows
}

/// The queries checked here: q1 stands for the stateless ones; every
/// stateful query is listed.
const CASES: &[Case] = &[
    Case {
        query: "q1",
        normalize: as_is,
    },
    Case {
        query: "q3",
        normalize: as_is,
    },
    Case {
        query: "q4",
        normalize: rows_per_category,
    },
    Case {
        query: "q5",
        normalize: as_is,
    },
    Case {
        query: "q7",
        normalize: as_is,
    },
    Case {
        query: "q8",
        normalize: as_is,
    },
    Case {
        query: "q9",
        normalize: as_is,
    },
    Case {
        query: "q11",
        normalize: as_is,
    },
    Case {
        query: "q12",
        normalize: bids_per_bidder,
    },
];

/// q12's windows are on the wall clock, so which window a bid lands in
/// depends on timing; each bidder's count summed over its windows does
/// not.
fn bids_per_bidder(rows: Vec<String>) -> Vec<String> {
    let mut counts = std::collections::BTreeMap::<u64, u64>::new();
    for row in rows {
        let mut cols = row.split(',');
        let (Some(bidder), Some(count)) = (cols.next(), cols.next()) else {
            panic!("q12 row {row:?}");
        };
        *counts.entry(bidder.parse().unwrap()).or_default() += count.parse::<u64>().unwrap();
    }
    counts
        .into_iter()
        .map(|(b, n)| format!("{b}: {n} bids"))
        .collect()
}

/// q4 emits a category's running average each time one of its auctions
/// closes; the averages on the way depend on how the closing auctions of
/// parallel subtasks interleave, the number of rows per category does
/// not (one per winner; the final averages are checked in
/// `nexmark_joins.rs`).
fn rows_per_category(rows: Vec<String>) -> Vec<String> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for row in rows {
        let category = row.split(',').next().unwrap_or_default().to_string();
        *counts.entry(category).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(c, n)| format!("{c}: {n} rows"))
        .collect()
}

/// Runs of one query in one sandbox.
struct Runs<'a> {
    sb: &'a Sandbox,
    query: &'static str,
    /// Flags of every run (the state backend).
    flags: Vec<String>,
    events: &'static str,
}

impl Runs<'_> {
    /// `floe run nexmark` for the query into `out`, checkpointing into
    /// `ckpt`, with the registry in `registry` (for `floe stop`).
    fn job(&self, name: &str, parallelism: &str, extra: &[&str]) -> std::process::Command {
        let dir = self.sb.path(name);
        let out = dir.join("out").display().to_string();
        let checkpoints = format!(
            "state.checkpoints.dir=file://{}",
            dir.join("ckpt").display()
        );
        let mut args = vec!["run"];
        args.extend(extra);
        args.extend([
            "nexmark",
            "--query",
            self.query,
            "--events",
            self.events,
            "--tps",
            TPS,
            "--seed",
            SEED,
            "-p",
            parallelism,
            "--output",
            &out,
            "-D",
            "execution.checkpointing.interval=50ms",
            "-D",
            &checkpoints,
        ]);
        let mut cmd = self.sb.floe(&args);
        cmd.args(&self.flags)
            .env("FLOE_REGISTRY_DIR", dir.join("registry"));
        cmd
    }

    /// The emission cap of a run to interrupt.
    fn rate(&self) -> String {
        (self.events.parse::<u64>().unwrap() / RUN_SECONDS).to_string()
    }

    fn dir(&self, name: &str, sub: &str) -> PathBuf {
        self.sb.path(name).join(sub)
    }

    fn failure_free(&self) -> Vec<String> {
        common::run(&mut self.job("free", "2", &[])).ok();
        committed(&self.dir("free", "out"))
    }

    fn wait_for_checkpoint(&self, name: &str, process: &mut Running) {
        common::wait_for_checkpoint(&self.dir(name, "ckpt"), process, self.query);
    }

    fn killed_and_restored(&self) -> Vec<String> {
        let mut first = common::start(self.job("kill", "2", &[]).args(["--rate", &self.rate()]));
        self.wait_for_checkpoint("kill", &mut first);
        let killed = first.kill();
        assert!(!killed.status.success(), "{}: not killed", self.query);
        let job = common::job_dir(&self.dir("kill", "ckpt"));
        let from = job.display().to_string();
        common::run(self.job("kill", "2", &[]).args(["--fromCheckpoint", &from])).ok();
        committed(&self.dir("kill", "out"))
    }

    fn rescaled_through_a_savepoint(&self) -> Vec<String> {
        let registry = self.dir("rescale", "registry");
        let mut first = common::start(self.job("rescale", "2", &[]).args(["--rate", &self.rate()]));
        self.wait_for_checkpoint("rescale", &mut first);
        let id = common::registered_job(&registry)
            .unwrap_or_else(|| panic!("{}: no job in {}", self.query, registry.display()));
        let savepoints = self.dir("rescale", "sp").display().to_string();
        let stop = common::run(
            self.sb
                .floe(["stop", "--savepointPath", &savepoints, &id])
                .env("FLOE_REGISTRY_DIR", &registry),
        )
        .ok();
        first.finish().ok();
        let savepoint = common::savepoint_path(&stop);
        common::run(&mut self.job("rescale", "3", &["-s", &savepoint])).ok();
        committed(&self.dir("rescale", "out"))
    }
}

/// The state backend's flags: the heap, or RocksDB with incremental
/// checkpoints in the sandbox.
fn backend_flags(sb: &Sandbox, rocksdb: bool) -> Vec<String> {
    if !rocksdb {
        return Vec::new();
    }
    let local = format!(
        "state.backend.rocksdb.localdir={}",
        sb.path("rocksdb").display()
    );
    [
        "-D",
        "state.backend.type=rocksdb",
        "-D",
        &local,
        "-D",
        "state.backend.incremental=true",
    ]
    .map(String::from)
    .to_vec()
}

fn check(case: &Case, rocksdb: bool) {
    let sb = Sandbox::new();
    let runs = Runs {
        sb: &sb,
        query: case.query,
        flags: backend_flags(&sb, rocksdb),
        events: if rocksdb { ROCKSDB_EVENTS } else { EVENTS },
    };
    let want = (case.normalize)(runs.failure_free());
    assert!(!want.is_empty(), "{}: no rows", case.query);
    eprintln!("{}: {} rows failure-free", case.query, want.len());
    let got = (case.normalize)(runs.killed_and_restored());
    assert_eq!(got.len(), want.len(), "{}: rows after SIGKILL", case.query);
    assert!(got == want, "{}: rows after SIGKILL differ", case.query);
    let got = (case.normalize)(runs.rescaled_through_a_savepoint());
    assert_eq!(got.len(), want.len(), "{}: rows after 2 -> 3", case.query);
    assert!(
        got == want,
        "{}: rows after rescaling 2 -> 3 differ",
        case.query
    );
}

#[test]
fn every_query_survives_sigkill_and_rescaling_exactly_once() {
    for case in CASES {
        let started = Instant::now();
        check(case, false);
        eprintln!("{}: {:.1} s", case.query, started.elapsed().as_secs_f64());
    }
}

/// The same on RocksDB with incremental checkpoints, for a query of each
/// kind of state: sliced sliding windows (q5), session windows (q11) and
/// a keyed co-process join with timers (q9).
#[cfg(feature = "rocksdb")]
#[test]
fn on_rocksdb_every_kind_of_state_survives_sigkill_and_rescaling() {
    for case in CASES
        .iter()
        .filter(|c| ["q5", "q9", "q11"].contains(&c.query))
    {
        let started = Instant::now();
        check(case, true);
        eprintln!("{}: {:.1} s", case.query, started.elapsed().as_secs_f64());
    }
}
