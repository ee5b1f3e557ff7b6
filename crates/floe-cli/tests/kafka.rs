//! `floe run kafka-keyed-count` from a Kafka topic to a Kafka topic, as a
//! real process against a real broker: killed with SIGKILL between
//! checkpoints and restored, stopped with a savepoint and resumed at
//! another parallelism. What a read-committed consumer finally sees
//! (decided by the marker-aware reader) must be every running count
//! exactly once; at-least-once must lose none.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{Running, Sandbox};
use floe_kafka::client::{Acks, Producer};
use floe_kafka::testing::{TestBroker, read_log};
use floe_kafka::{ClientConfig, TopicPartition};

const RECORDS: u64 = 30_000;
const KEYS: u64 = 97;
/// Records per second of a run that is to be interrupted (a few seconds).
const RATE: &str = "6000";

/// Writes the input: key `(i * 7919) mod KEYS` for record `i`, spread over
/// four partitions.
fn fill_input(broker: &TestBroker, topic: &str) -> BTreeMap<u64, u64> {
    broker.cluster().create_topic(topic, 4, 1, false).unwrap();
    let mut p = Producer::new(
        ClientConfig::new(broker.bootstrap_servers()).unwrap(),
        Acks::All,
    );
    let mut counts = BTreeMap::new();
    for i in 0..RECORDS {
        let key = (i * 7919) % KEYS;
        *counts.entry(key).or_insert(0) += 1;
        p.send(
            &TopicPartition::new(topic, (i % 4) as i32),
            None,
            Some(key.to_string().as_bytes()),
            1_700_000_000_000 + i as i64,
        );
    }
    p.flush().unwrap();
    counts
}

/// Every `<key> <n>` value a correct run writes: each key's counts 1..=c.
fn expected(counts: &BTreeMap<u64, u64>) -> Vec<String> {
    let mut v: Vec<String> = counts
        .iter()
        .flat_map(|(k, c)| (1..=*c).map(move |n| format!("{k} {n}")))
        .collect();
    v.sort();
    v
}

/// The values a read-committed consumer sees in `topic`, sorted, and the
/// number of transactions left open.
fn output(broker: &TestBroker, topic: &str) -> (Vec<String>, usize) {
    let log = read_log(&mut broker.cluster(), topic).unwrap();
    let mut v: Vec<String> = log
        .committed
        .values()
        .flatten()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    v.sort();
    (v, log.open_transactions)
}

struct Job<'a> {
    sb: &'a Sandbox,
    broker: &'a TestBroker,
    name: &'a str,
    guarantee: &'a str,
}

impl Job<'_> {
    /// Creates the job's output topic (three partitions).
    fn create_output(&self) -> &Self {
        self.broker
            .cluster()
            .create_topic(self.name, 3, 1, false)
            .unwrap();
        self
    }

    fn dir(&self, sub: &str) -> std::path::PathBuf {
        self.sb.path(self.name).join(sub)
    }

    /// `floe run kafka-keyed-count` reading `in`, writing `<name>`,
    /// checkpointing every 100 ms.
    fn cmd(&self, parallelism: &str, extra: &[&str]) -> Command {
        let checkpoints = format!(
            "state.checkpoints.dir=file://{}",
            self.dir("ckpt").display()
        );
        let mut args = vec!["run"];
        args.extend(extra);
        args.extend([
            "kafka-keyed-count",
            "--bootstrap-servers",
            self.broker.bootstrap_servers(),
            "--input-topic",
            "in",
            "--output-topic",
            self.name,
            "--delivery-guarantee",
            self.guarantee,
            "--bounded",
            "-p",
            parallelism,
            "-D",
            "execution.checkpointing.interval=100ms",
            "-D",
            &checkpoints,
        ]);
        let mut cmd = self.sb.floe(&args);
        cmd.env("FLOE_REGISTRY_DIR", self.dir("registry"));
        cmd
    }

    fn wait_for_checkpoint(&self, process: &mut Running) {
        common::wait_for_checkpoint(&self.dir("ckpt"), process, self.name);
    }

    /// Runs at parallelism 2 and fails it twice, restoring from the
    /// latest checkpoint each time, then lets the last run finish. With
    /// exactly-once the first run kills itself (SIGKILL) at the crash
    /// point just before the sink commits a completed checkpoint's
    /// transaction, so the restore must commit it; otherwise, and for the
    /// second run, the test kills it between checkpoints, so the restore
    /// must abort what it left open. Each failed run's checkpoints are
    /// moved aside, so the next run's own land in an empty directory.
    fn killed_twice_and_restored(&self) {
        let mut restore: Option<String> = None;
        for attempt in 0..2 {
            let mut cmd = self.cmd("2", &[]);
            cmd.args(["--rate", RATE]);
            if let Some(job) = &restore {
                cmd.args(["--fromCheckpoint", job]);
            }
            // Only a transactional sink commits.
            let at_commit = attempt == 0 && self.guarantee == "exactly-once";
            let killed = if at_commit {
                cmd.env("FLOE_KILL_AT", "sink.commit@3");
                common::run(&mut cmd)
            } else {
                let mut run = common::start(&mut cmd);
                self.wait_for_checkpoint(&mut run);
                run.kill()
            };
            assert!(!killed.status.success(), "{}: not killed", self.name);
            if at_commit {
                assert!(
                    killed.stderr.contains("crash point sink.commit reached"),
                    "{}",
                    killed.stderr
                );
            }
            let aside = self.dir(&format!("ckpt-killed-{attempt}"));
            std::fs::rename(self.dir("ckpt"), &aside).unwrap();
            restore = Some(common::job_dir(&aside).display().to_string());
        }
        let job = restore.expect("killed twice");
        common::run(&mut self.cmd("2", &["--fromCheckpoint", &job])).ok();
    }

    /// Runs at parallelism 2, stops it with a savepoint, resumes at 3.
    fn rescaled_through_a_savepoint(&self) {
        let registry = self.dir("registry");
        let mut cmd = self.cmd("2", &[]);
        cmd.args(["--rate", RATE]);
        let mut first = common::start(&mut cmd);
        self.wait_for_checkpoint(&mut first);
        let id = common::registered_job(&registry).expect("a registered job");
        let savepoints = self.dir("sp").display().to_string();
        let stop = common::run(
            self.sb
                .floe(["stop", "--savepointPath", &savepoints, &id])
                .env("FLOE_REGISTRY_DIR", &registry),
        )
        .ok();
        first.finish().ok();
        let savepoint = common::savepoint_path(&stop);
        common::run(&mut self.cmd("3", &["-s", &savepoint])).ok();
    }
}

#[test]
fn keyed_count_through_kafka_survives_sigkill_and_rescaling_exactly_once() {
    let Some(broker) = TestBroker::start_or_skip("kafka keyed count") else {
        return;
    };
    let sb = Sandbox::new();
    let want = expected(&fill_input(&broker, "in"));

    let free = Job {
        sb: &sb,
        broker: &broker,
        name: "free",
        guarantee: "exactly-once",
    };
    common::run(&mut free.create_output().cmd("2", &[])).ok();
    let (got, open) = output(&broker, "free");
    assert_eq!(got, want, "failure-free run");
    assert_eq!(open, 0);

    let killed = Job {
        sb: &sb,
        broker: &broker,
        name: "killed",
        guarantee: "exactly-once",
    };
    killed.create_output().killed_twice_and_restored();
    let (got, open) = output(&broker, "killed");
    assert_eq!(got.len(), want.len(), "killed and restored: records");
    assert_eq!(got, want, "killed and restored");
    assert_eq!(open, 0, "killed and restored: a transaction is left open");

    let rescaled = Job {
        sb: &sb,
        broker: &broker,
        name: "rescaled",
        guarantee: "exactly-once",
    };
    rescaled.create_output().rescaled_through_a_savepoint();
    let (got, open) = output(&broker, "rescaled");
    assert_eq!(got, want, "rescaled 2 -> 3 through a savepoint");
    assert_eq!(open, 0);
}

#[test]
fn at_least_once_through_kafka_loses_nothing_after_sigkill() {
    let Some(broker) = TestBroker::start_or_skip("kafka at least once") else {
        return;
    };
    let sb = Sandbox::new();
    let want = expected(&fill_input(&broker, "in"));
    let job = Job {
        sb: &sb,
        broker: &broker,
        name: "alo",
        guarantee: "at-least-once",
    };
    job.create_output().killed_twice_and_restored();
    let (mut got, _) = output(&broker, "alo");
    assert!(got.len() >= want.len());
    got.dedup();
    assert_eq!(got, want);
}

#[test]
fn bad_kafka_flags_are_refused_clearly() {
    let sb = Sandbox::new();
    // No broker at all: a refused connection names the address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    common::run(&mut sb.floe([
        "run",
        "kafka-keyed-count",
        "--bootstrap-servers",
        &addr,
        "--input-topic",
        "in",
        "--output-topic",
        "out",
        "--bounded",
    ]))
    .fails_with(&[&addr]);
    common::run(&mut sb.floe([
        "run",
        "kafka-keyed-count",
        "--input-topic",
        "in",
        "--output-topic",
        "out",
    ]))
    .fails_with(&["--bootstrap-servers"]);
    common::run(&mut sb.floe([
        "run",
        "kafka-keyed-count",
        "--bootstrap-servers",
        &addr,
        "--input-topic",
        "in",
        "--output-topic",
        "out",
        "--delivery-guarantee",
        "twice",
    ]))
    .fails_with(&["'twice'"]);
}

#[test]
fn the_kafka_benchmarks_print_a_checked_json_line() {
    if TestBroker::start_or_skip("kafka benchmarks").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let out = common::run(&mut sb.floe([
        "bench",
        "kafka-keyed-count",
        "--records",
        "20000",
        "--keys",
        "100",
        "-p",
        "2",
        "--checkpoint-interval",
        "200",
    ]))
    .ok();
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(line["bench"], "kafka-keyed-count");
    assert_eq!(line["output_records"], 20000);
    assert_eq!(line["delivery_guarantee"], "exactly-once");
    assert!(line["records_per_sec"].as_f64().unwrap() > 0.0);
    let out = common::run(&mut sb.floe(["bench", "kafka-ceiling", "--records", "20000"])).ok();
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(line["records"], 20000);
    assert!(line["produce_records_per_s"].as_f64().unwrap() > 0.0);
    assert!(line["consume_records_per_s"].as_f64().unwrap() > 0.0);
}

/// wordcount from a Kafka topic of lines to a Kafka topic of counts: each
/// word's last count equals `sort | uniq -c` over the same text.
#[test]
fn wordcount_reads_and_writes_kafka() {
    let Some(broker) = TestBroker::start_or_skip("wordcount through kafka") else {
        return;
    };
    let sb = Sandbox::new();
    let text = common::generate_text(7, 2000);
    let file = sb.write("text.txt", &text.text);
    let want = common::shell_word_counts(&[&file]);
    broker.cluster().create_topic("lines", 3, 1, false).unwrap();
    broker
        .cluster()
        .create_topic("counts", 3, 1, false)
        .unwrap();
    let mut p = Producer::new(
        ClientConfig::new(broker.bootstrap_servers()).unwrap(),
        Acks::All,
    );
    // Each line into partition 0, so the lines keep their order (words
    // are counted in any order anyway).
    for line in text.text.lines() {
        p.send(
            &TopicPartition::new("lines", 0),
            None,
            Some(line.as_bytes()),
            0,
        );
    }
    p.flush().unwrap();
    common::run(&mut sb.floe([
        "run",
        "wordcount",
        "--bootstrap-servers",
        broker.bootstrap_servers(),
        "--kafka-input",
        "lines",
        "--kafka-output",
        "counts",
        "-p",
        "2",
    ]))
    .ok();
    let (values, open) = output(&broker, "counts");
    assert_eq!(open, 0);
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for v in values {
        let (word, n) = v.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        let e = last.entry(word.to_string()).or_insert(0);
        *e = (*e).max(n);
    }
    assert_eq!(last, want);
}
