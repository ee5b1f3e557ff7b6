//! State schema compatibility across a savepoint (issue 25), on every
//! backend this build has: each restored state is checked against the
//! serializer identity its snapshot recorded, with three outcomes.
//!
//! - *compatible as is*: the same types restore as they always did;
//! - *compatible after migration*: `ValueState<u32>` declared again as
//!   `ValueState<u64>` with `with_migration`, and a map whose values change
//!   from `u64` to `String`, read correctly after the restore, also when the
//!   key groups move to 3 subtasks from 2;
//! - *incompatible*: `u64` → `u32` and `MapState<String, u64>` →
//!   `MapState<String, String>` without a migration are refused before any
//!   record is processed, with one error naming the uid, the state and both
//!   types, and — checkpointing on, a restart strategy that would retry —
//!   the job fails at its first attempt.
//!
//! The job counts per key (`count`) and per key and page (`page-counts`).
//! Its first run reads the first `FIRST` records and is stopped with a
//! savepoint; the next run reads on from there (the collection source's
//! position is in the savepoint) to the end of the input, so exactly once
//! means its last count per key and per page is the count over the whole
//! input.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::with_timeout;
use floe::connectors::CollectedRecords;
use floe::prelude::*;
use floe::runtime::JobError;
use floe::runtime::job_manager::JobClient;
use floe::runtime::restart::RestartStrategy;

const KEYS: u64 = 7;
const PAGES: u64 = 3;
/// Records the first run reads before its savepoint.
const FIRST: usize = 420;
/// Records in the whole input.
const TOTAL: usize = 840;
const UID: &str = "page-stats";

/// Record `i`: key `i mod KEYS`, a page that changes every `KEYS` records.
fn input(n: usize) -> Vec<(u64, String)> {
    (0..n as u64)
        .map(|i| (i % KEYS, format!("p{}", (i / KEYS) % PAGES)))
        .collect()
}

/// What every version of the job emits per record: key, count of the key,
/// page, count of the page for the key.
type Out = (u64, u64, String, u64);

/// Opens of the functions of one test (each test has its own counter).
type Opens = Arc<AtomicU32>;

/// Version 1: `ValueState<u32>` and `MapState<String, u64>`.
#[derive(Clone)]
struct V1 {
    opens: Opens,
    count: Option<ValueState<u32>>,
    pages: Option<MapState<String, u64>>,
}

impl KeyedProcessFunction<u64, (u64, String), Out> for V1 {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.count = Some(ctx.get_state(&ValueStateDescriptor::new("count"))?);
        self.pages = Some(ctx.get_map_state(&MapStateDescriptor::new("page-counts"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, page): (u64, String),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Out>,
    ) -> anyhow::Result<()> {
        let (count, pages) = (self.count.as_ref().unwrap(), self.pages.as_ref().unwrap());
        let c = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, c)?;
        let p = pages.get(ctx, &page)?.unwrap_or(0) + 1;
        pages.put(ctx, page.clone(), p)?;
        out.collect((key, u64::from(c), page, p));
        Ok(())
    }
}

/// Version 2: the count widened to `u64` and the page counts kept as text,
/// each with a one-line migration from version 1's types.
#[derive(Clone)]
struct V2 {
    opens: Opens,
    count: Option<ValueState<u64>>,
    pages: Option<MapState<String, String>>,
}

impl KeyedProcessFunction<u64, (u64, String), Out> for V2 {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.count = Some(ctx.get_state(
            &ValueStateDescriptor::new("count").with_migration(|old: u32| -> u64 { old.into() }),
        )?);
        self.pages = Some(ctx.get_map_state(
            &MapStateDescriptor::new("page-counts").with_migration(|old: u64| old.to_string()),
        )?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, page): (u64, String),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Out>,
    ) -> anyhow::Result<()> {
        let (count, pages) = (self.count.as_ref().unwrap(), self.pages.as_ref().unwrap());
        let c = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, c)?;
        let p = match pages.get(ctx, &page)? {
            Some(text) => text.parse::<u64>()? + 1,
            None => 1,
        };
        pages.put(ctx, page.clone(), p.to_string())?;
        out.collect((key, c, page, p));
        Ok(())
    }
}

/// Version 3: version 1 with the page counts as text and no migration.
#[derive(Clone)]
struct V3 {
    opens: Opens,
}

impl KeyedProcessFunction<u64, (u64, String), Out> for V3 {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        ctx.get_state::<u32>(&ValueStateDescriptor::new("count"))?;
        ctx.get_map_state::<String, String>(&MapStateDescriptor::new("page-counts"))?;
        Ok(())
    }

    fn process_element(
        &mut self,
        _: (u64, String),
        _: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, Out>,
    ) -> anyhow::Result<()> {
        unreachable!("no record may reach a function whose state was refused")
    }
}

/// A collection source that, at the end of its items, waits for more
/// instead of ending, so that a savepoint can stop the job there.
#[derive(Clone)]
struct HoldOpen(CollectionSource<(u64, String)>);

struct HoldOpenReader(Box<dyn SourceReader<(u64, String)>>);

impl Source<(u64, String)> for HoldOpen {
    fn is_parallel(&self) -> bool {
        self.0.is_parallel()
    }

    fn create_reader(
        &self,
        info: &TaskInfo,
    ) -> anyhow::Result<Box<dyn SourceReader<(u64, String)>>> {
        Ok(Box::new(HoldOpenReader(self.0.create_reader(info)?)))
    }
}

impl SourceReader<(u64, String)> for HoldOpenReader {
    fn poll_next(
        &mut self,
        out: &mut Vec<(u64, String)>,
        max: usize,
    ) -> anyhow::Result<SourceStatus> {
        match self.0.poll_next(out, max)? {
            SourceStatus::Finished => {
                std::thread::sleep(Duration::from_millis(5));
                Ok(SourceStatus::NothingAvailable)
            }
            more => Ok(more),
        }
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        self.0.snapshot_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.0.restore_state(state)
    }
}

fn backends() -> Vec<&'static str> {
    let mut b = vec!["hashmap"];
    if cfg!(feature = "rocksdb") {
        b.push("rocksdb");
    }
    b
}

/// An environment on `backend` at `parallelism`, checkpointing every
/// 100 ms with storage under `dir`, restoring `savepoint` if given.
fn env(dir: &Path, backend: &str, parallelism: u32, savepoint: Option<&str>) -> StreamEnvironment {
    let env = StreamEnvironment::new();
    env.set_parallelism(parallelism);
    env.set_config("state.backend.type", backend);
    env.set_config(
        "state.backend.rocksdb.localdir",
        &dir.join("rocksdb").display().to_string(),
    );
    env.enable_checkpointing(Duration::from_millis(100));
    env.set_config(
        "state.checkpoints.dir",
        &format!("file://{}", dir.join("chk").display()),
    );
    env.set_config(
        "state.savepoints.dir",
        &format!("file://{}", dir.join("savepoints").display()),
    );
    if let Some(path) = savepoint {
        env.set_restore_from_savepoint(path, false);
    }
    env
}

/// The job with `function`, over the first `items` records of the input;
/// `hold` keeps the source open at their end.
fn build<F>(env: &StreamEnvironment, function: F, items: usize, hold: bool) -> CollectedRecords<Out>
where
    F: KeyedProcessFunction<u64, (u64, String), Out> + Clone + 'static,
{
    let records = CollectionSource::new(input(items));
    let (sink, out) = CollectSink::new();
    let stream = if hold {
        env.from_source(HoldOpen(records), "Pages")
    } else {
        env.from_source(records, "Pages")
    };
    stream
        .uid("pages")
        .key_by(|(k, _): &(u64, String)| *k)
        .process(function)
        .uid(UID)
        .sink_to(sink, "Collect");
    out
}

/// Runs `function` over the first `items` records, waits until it emitted
/// `outputs` records, and stops it with a savepoint; returns its path.
fn savepoint_after<F>(
    dir: &Path,
    backend: &str,
    parallelism: u32,
    restore: Option<&str>,
    function: F,
    items: usize,
    outputs: usize,
) -> String
where
    F: KeyedProcessFunction<u64, (u64, String), Out> + Clone + 'static,
{
    let env = env(dir, backend, parallelism, restore);
    let out = build(&env, function, items, true);
    let client = env.execute_async("state-schema").expect("job starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < outputs {
        assert!(Instant::now() < deadline, "the job made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    savepoint_and_cancel(client)
}

fn savepoint_and_cancel(client: JobClient) -> String {
    let control = client.control();
    let trigger = control
        .trigger_savepoint(None, SavepointMode::Savepoint { cancel_job: true })
        .expect("trigger");
    let deadline = Instant::now() + Duration::from_secs(60);
    let location = loop {
        match control.savepoint_status(&trigger).expect("known trigger") {
            SavepointStatus::Completed { location } => break location,
            SavepointStatus::Failed { reason } => panic!("savepoint failed: {reason}"),
            SavepointStatus::InProgress => {}
        }
        assert!(Instant::now() < deadline, "savepoint did not complete");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(client.wait(), Err(JobError::Cancelled { .. })));
    location
        .strip_prefix("file://")
        .expect("a local savepoint")
        .to_string()
}

/// A savepoint of version 1 after the first `FIRST` records, at parallelism 2.
fn v1_savepoint(dir: &Path, backend: &str) -> String {
    let v1 = V1 {
        opens: Opens::default(),
        count: None,
        pages: None,
    };
    savepoint_after(dir, backend, 2, None, v1, FIRST, FIRST)
}

/// Runs `function` from `savepoint` at `parallelism` to the end of the
/// input and returns what it emitted.
fn run_to_end<F>(
    dir: &Path,
    backend: &str,
    parallelism: u32,
    savepoint: &str,
    function: F,
) -> Vec<Out>
where
    F: KeyedProcessFunction<u64, (u64, String), Out> + Clone + 'static,
{
    let env = env(dir, backend, parallelism, Some(savepoint));
    let out = build(&env, function, TOTAL, false);
    env.execute("state-schema").expect("the restored job runs");
    out.snapshot()
}

/// Checks that a run resumed at record `FIRST` and counted every record of
/// the input exactly once: its first count per key is one more than the
/// savepoint's, and its last count per key and per page is the count over
/// the whole input.
fn assert_counted_exactly_once(out: &[Out]) {
    assert_eq!(out.len(), TOTAL - FIRST, "records after the savepoint");
    let all = input(TOTAL);
    let mut per_key: BTreeMap<u64, u64> = BTreeMap::new();
    let mut per_page: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for (k, p) in &all {
        *per_key.entry(*k).or_default() += 1;
        *per_page.entry((*k, p.clone())).or_default() += 1;
    }
    let mut last_key: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut last_page: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for (k, c, p, pc) in out {
        let e = last_key.entry(*k).or_insert((*c, *c));
        e.0 = e.0.min(*c);
        e.1 = e.1.max(*c);
        let e = last_page.entry((*k, p.clone())).or_default();
        *e = (*e).max(*pc);
    }
    for (k, total) in &per_key {
        let before = input(FIRST).iter().filter(|(key, _)| key == k).count() as u64;
        assert_eq!(last_key[k], (before + 1, *total), "count of key {k}");
    }
    assert_eq!(last_page, per_page, "page counts");
}

#[test]
fn identical_types_restore_as_before() {
    for backend in backends() {
        with_timeout(180, move || {
            let dir = tempfile::tempdir().unwrap();
            let savepoint = v1_savepoint(dir.path(), backend);
            let v1 = V1 {
                opens: Opens::default(),
                count: None,
                pages: None,
            };
            let out = run_to_end(dir.path(), backend, 2, &savepoint, v1);
            assert_counted_exactly_once(&out);
        });
    }
}

fn v2() -> V2 {
    V2 {
        opens: Opens::default(),
        count: None,
        pages: None,
    }
}

/// `u32` → `u64` values and `u64` → `String` map values with migrations:
/// at the same parallelism, and rescaled 2 → 3 (key groups move between
/// subtasks, each subtask migrates the groups it takes). The migrated
/// state's next savepoint records the new types and restores as is.
#[test]
fn migrations_convert_restored_values_also_when_rescaling() {
    for backend in backends() {
        with_timeout(240, move || {
            let dir = tempfile::tempdir().unwrap();
            let savepoint = v1_savepoint(dir.path(), backend);
            for parallelism in [2, 3] {
                let out = run_to_end(dir.path(), backend, parallelism, &savepoint, v2());
                assert_counted_exactly_once(&out);
            }
            // Migrated at parallelism 3, then back to 2 as is.
            let migrated =
                savepoint_after(dir.path(), backend, 3, Some(&savepoint), v2(), FIRST, 0);
            let out = run_to_end(dir.path(), backend, 2, &migrated, v2());
            assert_counted_exactly_once(&out);
        });
    }
}

/// Restores `savepoint` into `function` with checkpointing on and a
/// restart strategy that would retry forever; returns the job's error,
/// how long it took and how often the function opened.
fn refused<F>(
    dir: &Path,
    backend: &str,
    savepoint: &str,
    function: F,
    opens: &Opens,
) -> (JobError, Duration)
where
    F: KeyedProcessFunction<u64, (u64, String), Out> + Clone + 'static,
{
    let env = env(dir, backend, 2, Some(savepoint));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: u32::MAX,
        delay: Duration::from_millis(10),
    });
    let out = build(&env, function, TOTAL, false);
    let started = Instant::now();
    let err = env
        .execute("state-schema")
        .expect_err("the restore must be refused");
    let took = started.elapsed();
    assert_eq!(out.len(), 0, "no record may be processed");
    assert_eq!(
        opens.load(Ordering::SeqCst),
        2,
        "one attempt of each of the 2 subtasks, no restart: {err}"
    );
    (err, took)
}

fn assert_names(err: &JobError, needles: &[&str]) {
    assert!(matches!(err, JobError::Failed { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in needles {
        assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
    }
}

#[test]
fn a_narrower_value_type_is_refused_at_once() {
    for backend in backends() {
        with_timeout(240, move || {
            let dir = tempfile::tempdir().unwrap();
            // Version 2's savepoint holds the count as u64.
            let v1 = v1_savepoint(dir.path(), backend);
            let savepoint = savepoint_after(dir.path(), backend, 2, Some(&v1), v2(), FIRST, 0);
            let opens = Opens::default();
            let v1 = V1 {
                opens: opens.clone(),
                count: None,
                pages: None,
            };
            let (err, took) = refused(dir.path(), backend, &savepoint, v1, &opens);
            assert_names(
                &err,
                &[
                    &format!("uid '{UID}'"),
                    "state 'count'",
                    "ValueState<u64>",
                    "ValueState<u32>",
                    "with_migration",
                    "-s",
                ],
            );
            assert!(took < Duration::from_secs(5), "refused after {took:?}");
        });
    }
}

#[test]
fn a_map_value_of_another_type_is_refused_at_once() {
    for backend in backends() {
        with_timeout(240, move || {
            let dir = tempfile::tempdir().unwrap();
            let savepoint = v1_savepoint(dir.path(), backend);
            let opens = Opens::default();
            let v3 = V3 {
                opens: opens.clone(),
            };
            let (err, took) = refused(dir.path(), backend, &savepoint, v3, &opens);
            assert_names(
                &err,
                &[
                    &format!("uid '{UID}'"),
                    "state 'page-counts'",
                    "MapState<alloc::string::String, u64>",
                    "MapState<alloc::string::String, alloc::string::String>",
                ],
            );
            assert!(took < Duration::from_secs(5), "refused after {took:?}");
        });
    }
}

/// A function that turns the refusal into a panic (`unwrap`) is not
/// restarted either: the backend remembers the refusal.
#[derive(Clone)]
struct PanicsOnRefusal {
    opens: Opens,
}

impl KeyedProcessFunction<u64, (u64, String), Out> for PanicsOnRefusal {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        ctx.get_state::<u16>(&ValueStateDescriptor::new("count"))
            .expect("the count restores");
        Ok(())
    }

    fn process_element(
        &mut self,
        _: (u64, String),
        _: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, Out>,
    ) -> anyhow::Result<()> {
        unreachable!("no record may reach a function whose state was refused")
    }
}

#[test]
fn a_refusal_the_function_panics_on_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let savepoint = v1_savepoint(dir.path(), "hashmap");
    let opens = Opens::default();
    let f = PanicsOnRefusal {
        opens: opens.clone(),
    };
    let (err, _) = with_timeout(120, {
        let dir = dir.path().to_path_buf();
        let opens = opens.clone();
        move || refused(&dir, "hashmap", &savepoint, f, &opens)
    });
    assert_names(
        &err,
        &["state 'count'", "ValueState<u32>", "ValueState<u16>"],
    );
}
