//! Queryable state of running jobs, read through the real proxy and server
//! sockets with the Rust client: a keyed running count whose values only
//! grow while the job runs and end at exactly N / K per key; list, map and
//! `as_queryable_state` states; and every error a user can run into.
//!
//! The jobs union the counted input with a source that never ends, so they
//! keep running (and answering) after the counted input is exhausted.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::with_timeout;
use floe::prelude::*;
use floe::queryable::{QueryClientError, QueryableStateClient, QueryableStateService};
use floe::runtime::QueryError;
use floe::runtime::job_manager::JobClient;

const RECORDS: u64 = 30_000;
const KEYS: u64 = 50;

/// Emits nothing and never ends: keeps a job running until cancelled.
#[derive(Clone)]
struct Forever;

struct ForeverReader;

impl SourceReader<(u64, u64)> for ForeverReader {
    fn poll_next(&mut self, _: &mut Vec<(u64, u64)>, _: usize) -> anyhow::Result<SourceStatus> {
        std::thread::sleep(Duration::from_millis(5));
        Ok(SourceStatus::NothingAvailable)
    }
}

impl Source<(u64, u64)> for Forever {
    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<(u64, u64)>>> {
        Ok(Box::new(ForeverReader))
    }
}

/// Counts per key (queryable `count`), keeps every value seen per key in
/// a list (queryable `history`) and the count per value parity in a map
/// (queryable `parity`).
#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64>>,
    history: Option<ListState<u64>>,
    parity: Option<MapState<bool, u64>>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for Count {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.count =
            Some(ctx.get_state(&ValueStateDescriptor::new("count").set_queryable("count"))?);
        self.history = Some(
            ctx.get_list_state(&ListStateDescriptor::new("history").set_queryable("history"))?,
        );
        self.parity =
            Some(ctx.get_map_state(&MapStateDescriptor::new("parity").set_queryable("parity"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, v): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        let c = self.count.as_ref().expect("opened");
        let n = c.value(ctx)?.unwrap_or(0) + v;
        c.update(ctx, n)?;
        if n <= 3 {
            self.history.as_ref().expect("opened").add(ctx, n)?;
        }
        let parity = self.parity.as_ref().expect("opened");
        let even = n % 2 == 0;
        let seen = parity.get(ctx, &even)?.unwrap_or(0);
        parity.put(ctx, even, seen + 1)?;
        out.collect((key, n));
        Ok(())
    }
}

/// Starts the counting job (queryable state on unless `enabled` is false)
/// and the latest-value / reduced `as_queryable_state` streams beside it.
fn start(enabled: bool, rate: f64) -> JobClient {
    start_on("hashmap", enabled, rate)
}

fn start_on(backend: &str, enabled: bool, rate: f64) -> JobClient {
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    env.set_config("state.backend.type", backend);
    env.set_config(
        "queryable-state.enable",
        if enabled { "true" } else { "false" },
    );
    env.set_config("queryable-state.proxy.ports", "0");
    env.set_config("queryable-state.server.ports", "0");
    let input = env
        .from_source(
            GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)).with_rate(rate),
            "Generator",
        )
        .uid("generator")
        .union(&[env.from_source(Forever, "Forever").uid("forever")]);
    let keyed = input.key_by(|(k, _): &(u64, u64)| *k);
    keyed.process(Count::default()).uid("count");
    keyed
        .as_queryable_state("latest", ValueStateDescriptor::new("latest"))
        .uid("latest");
    keyed
        .as_queryable_state(
            "sum",
            ReducingStateDescriptor::new("sum", |a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1)),
        )
        .uid("sum");
    env.execute_async("queryable").unwrap()
}

/// The proxy the jobs of this process registered with.
fn proxy() -> QueryableStateClient {
    let service = QueryableStateService::running().expect("the service runs");
    let addr = service.proxy_address();
    QueryableStateClient::new(&addr.ip().to_string(), addr.port())
}

/// Waits until every subtask announced the job's `count` state (each key
/// answers, found or not).
async fn await_queryable(qs: &QueryableStateClient, job: floe::core::JobId) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in 0..KEYS {
        while qs
            .get_kv_state::<u64, u64>(job, "count", &key)
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "state never became queryable");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn queried_counts_only_grow_and_end_exactly_at_the_final_counts() {
    counts_grow_and_end_exact("hashmap");
}

/// The same queries answered from live RocksDB state.
#[cfg(feature = "rocksdb")]
#[test]
fn queries_read_live_rocksdb_state() {
    counts_grow_and_end_exact("rocksdb");
}

fn counts_grow_and_end_exact(backend: &'static str) {
    with_timeout(120, move || {
        let client = start_on(backend, true, 15_000.0);
        let job = client.control().job_id();
        let qs = proxy();
        runtime().block_on(async {
            await_queryable(&qs, job).await;
            let mut last: HashMap<u64, u64> = HashMap::new();
            let mut queries = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let mut done = true;
                for key in 0..KEYS {
                    let count: Option<u64> = qs.get_kv_state(job, "count", &key).await.unwrap();
                    queries += 1;
                    let count = count.unwrap_or(0);
                    let prev = last.insert(key, count).unwrap_or(0);
                    assert!(count >= prev, "key {key}: {count} after {prev}");
                    assert!(count <= RECORDS / KEYS, "key {key}: {count}");
                    done &= count == RECORDS / KEYS;
                }
                if done {
                    break;
                }
                assert!(Instant::now() < deadline, "counts did not reach the end");
            }
            assert!(queries > KEYS, "queries ran while the job counted");
            // Every state kind, at its final value.
            for key in 0..KEYS {
                let history: Option<Vec<u64>> =
                    qs.get_kv_state(job, "history", &key).await.unwrap();
                assert_eq!(history, Some(vec![1, 2, 3]), "key {key}");
                let parity: Option<HashMap<bool, u64>> =
                    qs.get_kv_state(job, "parity", &key).await.unwrap();
                let half = RECORDS / KEYS / 2;
                assert_eq!(
                    parity,
                    Some(HashMap::from([(true, half), (false, half)])),
                    "key {key}"
                );
                let latest: Option<(u64, u64)> =
                    qs.get_kv_state(job, "latest", &key).await.unwrap();
                assert_eq!(latest, Some((key, 1)));
                let sum: Option<(u64, u64)> = qs.get_kv_state(job, "sum", &key).await.unwrap();
                assert_eq!(sum, Some((key, RECORDS / KEYS)));
            }
            // A key that never occurred has no state: not found, no error.
            let none: Option<u64> = qs.get_kv_state(job, "count", &(KEYS + 1)).await.unwrap();
            assert_eq!(none, None);
        });
        client.cancel();
        let _ = client.wait();
    });
}

#[test]
fn query_errors_name_the_job_the_state_and_the_types() {
    with_timeout(120, || {
        let client = start(true, 2_000.0);
        let job = client.control().job_id();
        let disabled = start(false, 2_000.0);
        let disabled_job = disabled.control().job_id();
        let qs = proxy();
        runtime().block_on(async {
            await_queryable(&qs, job).await;
            let unknown_job = floe::core::JobId::from_u128(7);
            match qs.get_kv_state::<u64, u64>(unknown_job, "count", &1).await {
                Err(QueryClientError::Query(QueryError::UnknownJob { job_id })) => {
                    assert_eq!(job_id, unknown_job.to_string())
                }
                other => panic!("unexpected {other:?}"),
            }
            let err = qs
                .get_kv_state::<u64, u64>(job, "nope", &1)
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("no queryable state 'nope'"), "{text}");
            assert!(text.contains("count, history, latest, parity, sum"), "{text}");
            let err = qs
                .get_kv_state::<String, u64>(job, "count", &"word".to_string())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, QueryClientError::Query(QueryError::WrongKeyType { expected, .. }) if expected == "u64"),
                "{err}"
            );
            // A list asked for as one number: bytes are left over.
            let err = qs
                .get_kv_state::<u64, u64>(job, "history", &0)
                .await
                .unwrap_err();
            assert!(
                matches!(err, QueryClientError::ValueType { .. }),
                "{err}"
            );
            let err = qs
                .get_kv_state::<u64, u64>(disabled_job, "count", &1)
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("queryable-state.enable: true"), "{text}");
            // The server port takes only queries routed to its subtask.
            let service = QueryableStateService::running().unwrap();
            let server = QueryableStateClient::new("127.0.0.1", service.server_address().port());
            let key = postcard::to_allocvec(&0u64).unwrap();
            let owner = floe::state::key_group::operator_index_for_key_group(
                128,
                2,
                floe::state::key_group::key_group_for_key(&0u64, 128),
            );
            let bytes = server
                .query_raw(job, "count", key.clone(), Some(owner))
                .await
                .unwrap()
                .expect("key 0 has a count");
            assert!(postcard::from_bytes::<u64>(&bytes).unwrap() > 0);
            let err = server
                .query_raw(job, "count", key, Some(1 - owner))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("owned by subtask"), "{err}");
        });
        // Refused connections name the address.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = runtime()
            .block_on(
                QueryableStateClient::new("127.0.0.1", port)
                    .get_kv_state::<u64, u64>(job, "count", &1),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "cannot connect to the queryable-state proxy at 127.0.0.1:{port}"
            )),
            "{err}"
        );
        for c in [client, disabled] {
            c.cancel();
            let _ = c.wait();
        }
    });
}

/// Holds the counting task inside `process_element` while the test says
/// so: a task provably busy, without timing it.
#[derive(Default)]
struct Gate {
    held: Mutex<bool>,
    changed: Condvar,
    /// The task is waiting at the gate.
    waiting: AtomicBool,
    /// Records the task started processing.
    entered: AtomicU64,
}

impl Gate {
    /// Called by the task for each record: waits while the gate is held.
    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut held = self.held.lock().unwrap();
        while *held {
            self.waiting.store(true, Ordering::SeqCst);
            held = self.changed.wait(held).unwrap();
        }
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// Holds the task at its next record and waits until it is there.
    fn hold(&self) {
        *self.held.lock().unwrap() = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.waiting.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the task never reached the gate");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.changed.notify_all();
    }
}

/// Counts per key, passing the gate before each record.
#[derive(Clone)]
struct GatedCount {
    count: Option<ValueState<u64>>,
    gate: Arc<Gate>,
}

impl KeyedProcessFunction<u64, (u64, u64), u64> for GatedCount {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.count =
            Some(ctx.get_state(&ValueStateDescriptor::new("count").set_queryable("count"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        _: (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        self.gate.pass();
        let c = self.count.as_ref().expect("opened");
        let n = c.value(ctx)?.unwrap_or(0) + 1;
        c.update(ctx, n)?;
        Ok(())
    }
}

/// With a published view, a query does not wait for the task that owns
/// the key (here: held inside `process_element` until the test lets it
/// go); with `queryable-state.max-staleness: 0` every query waits for it.
/// Asserted on the order of events, not on latencies.
#[test]
fn a_published_view_answers_while_the_owning_task_is_busy() {
    with_timeout(120, || {
        let start = |staleness: &str, gate: &Arc<Gate>| {
            let env = StreamEnvironment::new();
            env.set_parallelism(1);
            env.set_config("queryable-state.enable", "true");
            env.set_config("queryable-state.max-staleness", staleness);
            env.set_config("queryable-state.proxy.ports", "0");
            env.set_config("queryable-state.server.ports", "0");
            env.from_source(
                // Slow enough that every record is a batch of its own.
                GeneratorSource::new(1_000_000, |i| (i % 2, 1u64)).with_rate(4.0),
                "Generator",
            )
            .uid("generator")
            .key_by(|(k, _): &(u64, u64)| *k)
            .process(GatedCount {
                count: None,
                gate: gate.clone(),
            })
            .uid("count");
            env.execute_async("gated").unwrap()
        };
        let (viewed_gate, exact_gate) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
        let viewed = start("1 min", &viewed_gate);
        let exact = start("0 ms", &exact_gate);
        let qs = proxy();
        runtime().block_on(async {
            for job in [&viewed, &exact] {
                await_queryable_key(&qs, job.control().job_id()).await;
            }
            // The query above asked for a view; the task publishes one
            // after the batch it is in, which has ended once it started
            // two more records (one record per batch at this rate).
            let asked = viewed_gate.entered.load(Ordering::SeqCst);
            while viewed_gate.entered.load(Ordering::SeqCst) < asked + 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            viewed_gate.hold();
            let mut counts = Vec::new();
            for _ in 0..20 {
                let count: Option<u64> = qs
                    .get_kv_state(viewed.control().job_id(), "count", &0)
                    .await
                    .unwrap();
                counts.push(count.unwrap_or(0));
            }
            assert!(
                viewed_gate.waiting.load(Ordering::SeqCst),
                "every answer came while the task was held: from the view"
            );
            assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
            viewed_gate.release();

            exact_gate.hold();
            let released = Arc::new(AtomicBool::new(false));
            let query = {
                let (qs, released, job) = (proxy(), released.clone(), exact.control().job_id());
                tokio::spawn(async move {
                    let count: Option<u64> = qs.get_kv_state(job, "count", &0).await.unwrap();
                    (count, released.load(Ordering::SeqCst))
                })
            };
            // However long the task stays held, the query cannot be
            // answered before it is released.
            tokio::time::sleep(Duration::from_millis(200)).await;
            released.store(true, Ordering::SeqCst);
            exact_gate.release();
            let (count, after_release) = query.await.unwrap();
            assert!(count.is_some());
            assert!(
                after_release,
                "with staleness 0 a query was answered while the task was held"
            );
        });
        for client in [viewed, exact] {
            client.cancel();
            let _ = client.wait();
        }
    });
}

/// Waits until key 0 of `job`'s `count` state has a value.
async fn await_queryable_key(qs: &QueryableStateClient, job: floe::core::JobId) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = qs.get_kv_state::<u64, u64>(job, "count", &0).await {
            return;
        }
        assert!(Instant::now() < deadline, "state never became queryable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
