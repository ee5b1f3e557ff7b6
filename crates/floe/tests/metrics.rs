//! Metrics end to end: jobs run in-process, their REST endpoint serves
//! `/metrics` over HTTP, and the exposition is parsed with a Prometheus
//! text-format parser. Counters only grow between scrapes; the keyed
//! operator's `numRecordsIn` over its subtasks is the input at the end of a
//! bounded run; checkpoint metrics match the REST checkpoint history; a
//! slow sink back-pressures its upstream, which `/backpressure` reports.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{RunningCount, with_timeout};
use floe::prelude::*;
use floe::rest::{RestAuth, RestServer};
use floe::runtime::JobControl;
use serde_json::Value;

const RECORDS: u64 = 300_000;
const KEYS: u64 = 97;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get_text(base: &str, path: &str) -> String {
    agent()
        .get(&format!("{base}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

fn get_json(base: &str, path: &str) -> Value {
    serde_json::from_str(&get_text(base, path)).unwrap()
}

/// One scrape: `(metric name, sorted labels)` → value.
type Scrape = BTreeMap<(String, Vec<(String, String)>), f64>;

fn scrape(base: &str) -> Scrape {
    let text = get_text(base, "/metrics");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not the Prometheus text format ({e}):\n{text}"));
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("{} is not a gauge: {other:?}", s.metric),
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            labels.sort();
            ((s.metric, labels), value)
        })
        .collect()
}

/// The values of `metric` whose labels include `label`.
fn values(s: &Scrape, metric: &str, label: (&str, &str)) -> Vec<f64> {
    s.iter()
        .filter(|((m, l), _)| m == metric && l.iter().any(|(k, v)| k == label.0 && v == label.1))
        .map(|(_, v)| *v)
        .collect()
}

fn job_value(s: &Scrape, metric: &str) -> f64 {
    let v = values(
        s,
        &format!("floe_jobmanager_job_{metric}"),
        ("job_name", "metrics"),
    );
    assert_eq!(v.len(), 1, "{metric}: {v:?}");
    v[0]
}

#[test]
fn counters_grow_match_the_input_and_the_checkpoint_history() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(150));
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.path().display()),
        );
        let (sink, _out) = CollectSink::new();
        env.from_source(
            GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)).with_rate(100_000.0),
            "Generator",
        )
        .uid("generator")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(RunningCount::default())
        .uid("count")
        .sink_to(sink, "Collect");
        let client = env.execute_async("metrics").unwrap();
        let control = client.control();
        let server =
            RestServer::start(control.clone(), "127.0.0.1", 0, RestAuth::default()).unwrap();
        let base = format!("http://{}", server.local_addr());
        let job = format!("/jobs/{}", control.job_id());

        // Two scrapes while the job runs: nothing that counts goes down.
        std::thread::sleep(Duration::from_millis(700));
        let first = scrape(&base);
        std::thread::sleep(Duration::from_millis(1300));
        let second = scrape(&base);
        let mut compared = 0;
        for ((name, labels), v) in &first {
            let counts = name.ends_with("_numRecordsIn")
                || name.ends_with("_numRecordsOut")
                || name.ends_with("_numberOfCompletedCheckpoints")
                || name.ends_with("_Process_CPU_Time");
            if counts {
                let later = second[&(name.clone(), labels.clone())];
                assert!(later >= *v, "{name} {labels:?} went from {v} to {later}");
                compared += 1;
            }
        }
        assert!(compared >= 8, "only {compared} counters");
        let rate = values(
            &second,
            "floe_taskmanager_job_task_operator_numRecordsInPerSecond",
            ("operator_id", "count"),
        );
        assert!(rate.iter().sum::<f64>() > 1000.0, "rates {rate:?}");

        // Checkpoint metrics against the REST history, when no checkpoint
        // completed between the two reads of the history.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let before = get_json(&base, &format!("{job}/checkpoints"));
            let s = scrape(&base);
            let after = get_json(&base, &format!("{job}/checkpoints"));
            if before["counts"] != after["counts"] || after["counts"]["completed"] == 0 {
                assert!(Instant::now() < deadline, "no stable checkpoint history");
                continue;
            }
            let latest = &after["latest"]["completed"];
            assert_eq!(
                job_value(&s, "numberOfCompletedCheckpoints"),
                after["counts"]["completed"].as_f64().unwrap()
            );
            assert_eq!(
                job_value(&s, "numberOfFailedCheckpoints"),
                after["counts"]["failed"].as_f64().unwrap()
            );
            assert_eq!(
                job_value(&s, "lastCheckpointDuration"),
                latest["end_to_end_duration"].as_f64().unwrap()
            );
            // Flink's pairs: lastCheckpointSize is the checkpointed size,
            // lastCheckpointFullSize the full one (REST `state_size`).
            assert_eq!(
                job_value(&s, "lastCheckpointSize"),
                latest["checkpointed_size"].as_f64().unwrap()
            );
            assert_eq!(
                job_value(&s, "lastCheckpointFullSize"),
                latest["state_size"].as_f64().unwrap()
            );
            let details = get_json(
                &base,
                &format!("{job}/checkpoints/details/{}", latest["id"]),
            );
            assert_eq!(&details, latest);
            break;
        }

        // While it runs: each keyed task's alignment in the latest completed
        // checkpoint, as exposed, is exactly what the task acknowledged
        // (ns; two inputs each, so the first barrier waits for the second).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !alignment_is_exposed(&control, &base) {
            assert!(Instant::now() < deadline, "no checkpoint with an alignment");
            std::thread::sleep(Duration::from_millis(50));
        }

        let result = client.wait().unwrap();
        assert_eq!(result.restarts, 0);
        // At the end of the bounded run every record went through the
        // keyed operator exactly once.
        let end = scrape(&base);
        let count_in = values(
            &end,
            "floe_taskmanager_job_task_operator_numRecordsIn",
            ("operator_id", "count"),
        );
        assert_eq!(count_in.len(), 2, "one per subtask: {count_in:?}");
        assert_eq!(count_in.iter().sum::<f64>(), RECORDS as f64);
        let source_out = values(
            &end,
            "floe_taskmanager_job_task_operator_numRecordsOut",
            ("operator_id", "generator"),
        );
        assert_eq!(source_out.iter().sum::<f64>(), RECORDS as f64);
        // The REST route agrees with the exposition.
        let summed = get_json(
            &base,
            &format!("{job}/vertices/count/subtasks/metrics?get=numRecordsIn&agg=sum"),
        );
        assert_eq!(summed[0]["sum"].as_f64(), Some(RECORDS as f64));
        drop(server);
    });
}

/// Whether `/metrics` showed each keyed task's (vertex 1's) alignment in
/// the latest completed checkpoint exactly as acknowledged, with some time
/// spent aligning; false when a checkpoint completed meanwhile or none
/// aligned for a measurable time yet.
fn alignment_is_exposed(control: &JobControl, base: &str) -> bool {
    let Some(last) = control.checkpoint_history().latest_completed else {
        return false;
    };
    let s = scrape(base);
    if control
        .checkpoint_history()
        .latest_completed
        .is_none_or(|now| now.id != last.id)
    {
        return false;
    }
    let mut keyed = 0;
    let mut waited = false;
    for (task, ack) in &last.acks {
        let position = &last.layout[*task];
        if !position.vertices.contains(&1) {
            continue;
        }
        keyed += 1;
        let index = position.subtask.to_string();
        let ns: Vec<f64> = s
            .iter()
            .filter(|((m, l), _)| {
                m == "floe_taskmanager_job_task_checkpointAlignmentTime"
                    && l.contains(&("task_id".to_string(), "count".to_string()))
                    && l.contains(&("subtask_index".to_string(), index.clone()))
            })
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(ns, vec![ack.alignment_duration.as_nanos() as f64]);
        waited |= ns[0] > 0.0;
    }
    assert_eq!(keyed, 2, "both keyed subtasks acknowledged");
    waited
}

/// Sleeps per batch: its upstream can only wait on a full channel.
#[derive(Clone)]
struct SlowSink;

impl SinkWriter<u64> for SlowSink {
    fn write(&mut self, _: u64) -> anyhow::Result<()> {
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }

    fn write_batch(&mut self, batch: &mut Vec<u64>) -> anyhow::Result<()> {
        std::thread::sleep(Duration::from_millis(20));
        batch.clear();
        Ok(())
    }
}

#[test]
fn a_slow_sink_back_pressures_its_upstream() {
    with_timeout(120, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        env.from_source(GeneratorSource::new(u64::MAX, |i| i), "Fast")
            .uid("fast")
            .rebalance()
            .sink_to(SlowSink, "Slow")
            .uid("slow");
        let client = env.execute_async("backpressure").unwrap();
        let control = client.control();
        let server =
            RestServer::start(control.clone(), "127.0.0.1", 0, RestAuth::default()).unwrap();
        let base = format!("http://{}", server.local_addr());
        let job = format!("/jobs/{}", control.job_id());
        // Past one full rate window of back pressure.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (bp, busy) = loop {
            std::thread::sleep(Duration::from_secs(1));
            let fast = get_json(&base, &format!("{job}/vertices/fast/backpressure"));
            let slow = get_json(
                &base,
                &format!("{job}/vertices/slow/metrics?get=0.busyTimeMsPerSecond"),
            );
            let busy: f64 = slow[0]["value"].as_str().unwrap().parse().unwrap();
            let ratio = fast["subtasks"][0]["ratio"].as_f64().unwrap();
            if (ratio > 0.7 && busy > 700.0) || Instant::now() > deadline {
                assert_eq!(fast["backpressureLevel"], "high", "{fast}");
                assert_eq!(fast["subtasks"][0]["backpressureLevel"], "high");
                break (ratio, busy);
            }
        };
        assert!(bp > 0.7, "upstream back-pressured ratio {bp}");
        assert!(busy > 700.0, "slow sink busy {busy} ms/s");
        let s = scrape(&base);
        let prom_bp = values(
            &s,
            "floe_taskmanager_job_task_backPressuredTimeMsPerSecond",
            ("task_id", "fast"),
        );
        assert!(prom_bp[0] > 700.0, "{prom_bp:?}");
        let slow = get_json(&base, &format!("{job}/vertices/slow/backpressure"));
        assert_eq!(slow["backpressureLevel"], "ok", "{slow}");
        client.cancel();
        let _ = client.wait();
        drop(server);
    });
}

/// RocksDB's native metrics reach `/metrics`: a bounded run writes each of
/// `DISTINCT` keys once, and after its final checkpoint RocksDB's
/// `estimate-num-keys` of the count state, summed over the subtasks, is
/// exactly that (nothing was overwritten or deleted, so the estimate is
/// exact), labelled with the state as its column family.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_native_metrics_reach_the_exposition() {
    const DISTINCT: u64 = 5_000;
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(100));
        env.set_config("state.backend.type", "rocksdb");
        env.set_config(
            "state.backend.rocksdb.localdir",
            &dir.path().join("rocksdb").display().to_string(),
        );
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.path().join("ck").display()),
        );
        env.set_config("state.backend.rocksdb.metrics.estimate-num-keys", "true");
        env.set_config("state.backend.rocksdb.metrics.total-sst-files-size", "true");
        let (sink, _out) = CollectSink::new();
        env.from_source(
            GeneratorSource::new(DISTINCT, |i| (i, 1u64)).with_rate(10_000.0),
            "Generator",
        )
        .uid("generator")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(RunningCount::default())
        .uid("count")
        .sink_to(sink, "Collect");
        let client = env.execute_async("native").unwrap();
        let control = client.control();
        let server =
            RestServer::start(control.clone(), "127.0.0.1", 0, RestAuth::default()).unwrap();
        let base = format!("http://{}", server.local_addr());
        client.wait().unwrap();
        let s = scrape(&base);
        let keys = values(
            &s,
            "floe_taskmanager_job_task_operator_rocksdb_estimate_num_keys",
            ("column_family", "count"),
        );
        assert_eq!(keys.len(), 2, "one series per subtask: {keys:?}");
        assert_eq!(keys.iter().sum::<f64>(), DISTINCT as f64);
        // A second metric switched on: one series per subtask of the state.
        let sst = values(
            &s,
            "floe_taskmanager_job_task_operator_rocksdb_total_sst_files_size",
            ("column_family", "count"),
        );
        assert_eq!(sst.len(), 2, "{sst:?}");
        // Not switched on: not reported.
        assert!(
            !s.keys()
                .any(|(m, _)| m.contains("rocksdb_block_cache_usage")),
            "only the metrics switched on"
        );
        drop(server);
    });
}

/// `metrics.io.enabled: false` leaves operators uncounted (no counting
/// link in the chain) and the job's result unchanged.
#[test]
fn io_counting_can_be_switched_off() {
    with_timeout(60, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.set_config("metrics.io.enabled", "false");
        let (sink, out) = CollectSink::new();
        env.from_source(
            GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)),
            "Generator",
        )
        .uid("generator")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(RunningCount::default())
        .uid("count")
        .sink_to(sink, "Collect");
        let client = env.execute_async("uncounted").unwrap();
        let control = client.control();
        client.wait().unwrap();
        assert_eq!(out.len() as u64, RECORDS, "every record still flows");
        let counted: u64 = control
            .metrics()
            .snapshot()
            .iter()
            .flatten()
            .map(|m| m.records_in + m.records_out)
            .sum();
        assert_eq!(counted, 0, "no operator counted");
    });
}
