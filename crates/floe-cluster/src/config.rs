//! The cluster's configuration keys (Flink's names and defaults) and the
//! settings each role reads from them, validated once when a role starts.
//!
//! The keys are declared here, next to their only reader, and repeated in
//! `floe_core::config::KNOWN_KEYS` so that every part of Floe knows them; a
//! test keeps the two in step. The process roles refuse keys no part of
//! Floe knows ([`check_known_keys`]): a typo in a cluster's configuration
//! should stop it at start, not silently leave a default in force.

use std::time::Duration;

use floe_core::config::{
    ConfigOption, options as core_options, parse_duration_value, parse_positive_u32,
};
use floe_core::{ConfigError, Configuration};

/// Why a role's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterConfigError {
    /// A value does not parse (the error names key and value).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Keys no part of Floe reads.
    #[error("unknown configuration key(s): {}", .0.join(", "))]
    UnknownKeys(Vec<String>),
    /// Two values that contradict each other.
    #[error("{0}")]
    Inconsistent(String),
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .map_err(|e| format!("not a port number 0..=65535 ({e})"))
}

fn parse_host(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(t.to_string())
    }
}

fn parse_location(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.contains("://") {
        Ok(t.to_string())
    } else {
        Err("expected a URL: file:///absolute/path, s3://bucket/path, gs://…, az://…".into())
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration_value(s)? {
        d if d < Duration::from_millis(1) => Err("must be at least 1 ms".into()),
        d => Ok(d),
    }
}

/// The cluster's keys.
pub mod options {
    use super::*;

    /// How often each side sends a heartbeat.
    pub const HEARTBEAT_INTERVAL: ConfigOption<Duration> = ConfigOption {
        key: "heartbeat.interval",
        description: "Time between two heartbeats, sent both ways between the JobManager and each TaskManager (default 10 s; at least 1 ms, less than heartbeat.timeout).",
        parse: parse_positive_duration,
    };

    /// How long silence means loss.
    pub const HEARTBEAT_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "heartbeat.timeout",
        description: "Time without any heartbeat after which the JobManager declares a TaskManager lost, and a TaskManager its JobManager (default 50 s).",
        parse: parse_positive_duration,
    };

    /// Refused connections in a row that mean loss before the timeout.
    pub const HEARTBEAT_RPC_FAILURE_THRESHOLD: ConfigOption<u32> = ConfigOption {
        key: "heartbeat.rpc-failure-threshold",
        description: "Heartbeat RPCs in a row that find the target's endpoint refusing connections (its process is gone) after which it is declared lost without waiting for heartbeat.timeout (default 2, as in Flink).",
        parse: parse_positive_u32,
    };

    /// Where the JobManager's RPC endpoint is.
    pub const JOBMANAGER_RPC_ADDRESS: ConfigOption<String> = ConfigOption {
        key: "jobmanager.rpc.address",
        description: "Host the JobManager's RPC endpoint binds to and TaskManagers connect to (default localhost).",
        parse: parse_host,
    };

    /// The JobManager's RPC port.
    pub const JOBMANAGER_RPC_PORT: ConfigOption<u16> = ConfigOption {
        key: "jobmanager.rpc.port",
        description: "Port of the JobManager's RPC endpoint; 0 picks a free port (default 6123, as in Flink).",
        parse: parse_port,
    };

    /// Slots a TaskManager offers.
    pub const TASKMANAGER_SLOTS: ConfigOption<u32> = ConfigOption {
        key: "taskmanager.numberOfTaskSlots",
        description: "Task slots a TaskManager offers: how many parallel subtask pipelines it runs (default 1).",
        parse: parse_positive_u32,
    };

    /// The TaskManager's address.
    pub const TASKMANAGER_HOST: ConfigOption<String> = ConfigOption {
        key: "taskmanager.host",
        description: "Address a TaskManager binds its RPC endpoint to and advertises to the JobManager (default: the local address of the interface that routes to the JobManager).",
        parse: parse_host,
    };

    /// The TaskManager's RPC port.
    pub const TASKMANAGER_RPC_PORT: ConfigOption<u16> = ConfigOption {
        key: "taskmanager.rpc.port",
        description: "Port of a TaskManager's RPC endpoint; 0 picks a free port (default 0).",
        parse: parse_port,
    };

    /// The TaskManager's data port.
    pub const TASKMANAGER_DATA_PORT: ConfigOption<u16> = ConfigOption {
        key: "taskmanager.data.port",
        description: "Port of a TaskManager's data plane (the connections between TaskManagers), advertised at registration; 0 picks a free port (default 0).",
        parse: parse_port,
    };

    /// How long a TaskManager tries to register.
    pub const TASKMANAGER_REGISTRATION_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "taskmanager.registration.timeout",
        description: "How long a TaskManager tries to register with the JobManager (at start, and again after losing it) before it gives up and exits (default 5 min).",
        parse: parse_positive_duration,
    };

    /// The first wait of a registration attempt.
    pub const REGISTRATION_INITIAL_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "cluster.registration.initial-timeout",
        description: "Time a first registration attempt may take, and the wait after it fails; each further attempt doubles it up to cluster.registration.max-timeout (default 100 ms).",
        parse: parse_positive_duration,
    };

    /// The longest wait of a registration attempt.
    pub const REGISTRATION_MAX_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "cluster.registration.max-timeout",
        description: "Longest time a registration attempt may take, and longest wait between attempts (default 30 s).",
        parse: parse_positive_duration,
    };

    /// `slot.request.timeout` (Flink's key).
    pub const SLOT_REQUEST_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "slot.request.timeout",
        description: "How long a job's run waits for enough free task slots on the registered TaskManagers before its deployment fails (default 5 min, as in Flink).",
        parse: parse_positive_duration,
    };

    /// `jobmanager.adaptive-scheduler.resource-stabilization-timeout`
    /// (Flink's key).
    pub const RESOURCE_STABILIZATION_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "jobmanager.adaptive-scheduler.resource-stabilization-timeout",
        description: "How long a restart waits for the task slots its job needs before it runs at the slots that are left, with the key groups spread over fewer subtasks (default 10 s, as in Flink; a first run always waits slot.request.timeout for its full parallelism).",
        parse: parse_positive_duration,
    };

    /// `high-availability.storageDir` (Flink's key).
    pub const HA_STORAGE_DIR: ConfigOption<String> = ConfigOption {
        key: "high-availability.storageDir",
        description: "Where the JobManager keeps its jobs (submissions and generation claims) so that a restarted JobManager recovers them from their latest checkpoints: a file://, s3://, gs:// or az:// URL every JobManager process sees (Flink's key; unset: jobs do not survive a JobManager restart).",
        parse: parse_location,
    };

    /// Every key above with its description (kept in step with
    /// `floe_core::config::KNOWN_KEYS` by a test).
    pub const ALL: &[(&str, &str)] = &[
        (HEARTBEAT_INTERVAL.key, HEARTBEAT_INTERVAL.description),
        (HEARTBEAT_TIMEOUT.key, HEARTBEAT_TIMEOUT.description),
        (
            HEARTBEAT_RPC_FAILURE_THRESHOLD.key,
            HEARTBEAT_RPC_FAILURE_THRESHOLD.description,
        ),
        (
            JOBMANAGER_RPC_ADDRESS.key,
            JOBMANAGER_RPC_ADDRESS.description,
        ),
        (JOBMANAGER_RPC_PORT.key, JOBMANAGER_RPC_PORT.description),
        (TASKMANAGER_SLOTS.key, TASKMANAGER_SLOTS.description),
        (TASKMANAGER_HOST.key, TASKMANAGER_HOST.description),
        (TASKMANAGER_RPC_PORT.key, TASKMANAGER_RPC_PORT.description),
        (TASKMANAGER_DATA_PORT.key, TASKMANAGER_DATA_PORT.description),
        (
            TASKMANAGER_REGISTRATION_TIMEOUT.key,
            TASKMANAGER_REGISTRATION_TIMEOUT.description,
        ),
        (
            REGISTRATION_INITIAL_TIMEOUT.key,
            REGISTRATION_INITIAL_TIMEOUT.description,
        ),
        (
            REGISTRATION_MAX_TIMEOUT.key,
            REGISTRATION_MAX_TIMEOUT.description,
        ),
        (SLOT_REQUEST_TIMEOUT.key, SLOT_REQUEST_TIMEOUT.description),
        (
            RESOURCE_STABILIZATION_TIMEOUT.key,
            RESOURCE_STABILIZATION_TIMEOUT.description,
        ),
        (HA_STORAGE_DIR.key, HA_STORAGE_DIR.description),
    ];
}

/// Flink's default JobManager RPC port.
pub const DEFAULT_JOBMANAGER_RPC_PORT: u16 = 6123;

/// Flink's default REST port, which the JobManager role uses when
/// `rest.port` is unset (a job's own endpoint keeps its default of 0).
pub const DEFAULT_JOBMANAGER_REST_PORT: u16 = 8081;

/// Refuses keys that no part of Floe reads.
pub fn check_known_keys(config: &Configuration) -> Result<(), ClusterConfigError> {
    let unknown = config.unknown_keys();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ClusterConfigError::UnknownKeys(
            unknown.into_iter().map(String::from).collect(),
        ))
    }
}

/// Heartbeat timing, the same on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Time between two heartbeats.
    pub interval: Duration,
    /// Silence after which the other side is lost.
    pub timeout: Duration,
    /// Refused connections in a row after which the other side is lost.
    pub rpc_failure_threshold: u32,
}

impl HeartbeatConfig {
    /// Reads and checks `heartbeat.*`: the interval must be shorter than
    /// the timeout, or every target would be lost between two heartbeats.
    pub fn from_configuration(config: &Configuration) -> Result<Self, ClusterConfigError> {
        let interval = config
            .get(&options::HEARTBEAT_INTERVAL)?
            .unwrap_or(Duration::from_secs(10));
        let timeout = config
            .get(&options::HEARTBEAT_TIMEOUT)?
            .unwrap_or(Duration::from_secs(50));
        if interval >= timeout {
            return Err(ClusterConfigError::Inconsistent(format!(
                "heartbeat.interval ({} ms) must be less than heartbeat.timeout ({} ms)",
                interval.as_millis(),
                timeout.as_millis()
            )));
        }
        Ok(HeartbeatConfig {
            interval,
            timeout,
            rpc_failure_threshold: config
                .get(&options::HEARTBEAT_RPC_FAILURE_THRESHOLD)?
                .unwrap_or(2),
        })
    }
}

/// What the JobManager role reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobManagerConfig {
    /// RPC bind host (`jobmanager.rpc.address`).
    pub rpc_host: String,
    /// RPC port (`jobmanager.rpc.port`).
    pub rpc_port: u16,
    /// REST bind address (`rest.address`).
    pub rest_address: String,
    /// REST port (`rest.port`, default 8081 here).
    pub rest_port: u16,
    /// Heartbeat timing.
    pub heartbeat: HeartbeatConfig,
    /// How long a run waits for slots (`slot.request.timeout`).
    pub slot_request_timeout: Duration,
    /// How long a restart waits for its slots before it runs on fewer
    /// (`jobmanager.adaptive-scheduler.resource-stabilization-timeout`).
    pub resource_stabilization_timeout: Duration,
    /// Where jobs survive a restart (`high-availability.storageDir`).
    pub ha_storage_dir: Option<String>,
}

impl JobManagerConfig {
    /// Reads the JobManager's keys (unknown keys are not checked here: see
    /// [`check_known_keys`]).
    pub fn from_configuration(config: &Configuration) -> Result<Self, ClusterConfigError> {
        Ok(JobManagerConfig {
            rpc_host: config
                .get(&options::JOBMANAGER_RPC_ADDRESS)?
                .unwrap_or_else(|| "localhost".into()),
            rpc_port: config
                .get(&options::JOBMANAGER_RPC_PORT)?
                .unwrap_or(DEFAULT_JOBMANAGER_RPC_PORT),
            rest_address: config
                .get(&core_options::REST_ADDRESS)?
                .unwrap_or_else(|| "127.0.0.1".into()),
            rest_port: config
                .get(&core_options::REST_PORT)?
                .unwrap_or(DEFAULT_JOBMANAGER_REST_PORT),
            heartbeat: HeartbeatConfig::from_configuration(config)?,
            slot_request_timeout: config
                .get(&options::SLOT_REQUEST_TIMEOUT)?
                .unwrap_or(Duration::from_secs(300)),
            resource_stabilization_timeout: config
                .get(&options::RESOURCE_STABILIZATION_TIMEOUT)?
                .unwrap_or(Duration::from_secs(10)),
            ha_storage_dir: config.get(&options::HA_STORAGE_DIR)?,
        })
    }
}

/// Registration retries: each attempt may take `backoff` and is followed,
/// when it fails, by a wait of `backoff`; `backoff` starts at the initial
/// timeout and doubles up to the maximum; after `timeout` in all, the
/// TaskManager gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// Total time to keep trying.
    pub timeout: Duration,
    /// The first attempt's timeout and wait.
    pub initial_backoff: Duration,
    /// The longest attempt timeout and wait.
    pub max_backoff: Duration,
}

impl RegistrationConfig {
    /// Reads `taskmanager.registration.timeout` and
    /// `cluster.registration.*`.
    pub fn from_configuration(config: &Configuration) -> Result<Self, ClusterConfigError> {
        let initial_backoff = config
            .get(&options::REGISTRATION_INITIAL_TIMEOUT)?
            .unwrap_or(Duration::from_millis(100));
        let max_backoff = config
            .get(&options::REGISTRATION_MAX_TIMEOUT)?
            .unwrap_or(Duration::from_secs(30));
        if initial_backoff > max_backoff {
            return Err(ClusterConfigError::Inconsistent(format!(
                "cluster.registration.initial-timeout ({} ms) must not exceed cluster.registration.max-timeout ({} ms)",
                initial_backoff.as_millis(),
                max_backoff.as_millis()
            )));
        }
        Ok(RegistrationConfig {
            timeout: config
                .get(&options::TASKMANAGER_REGISTRATION_TIMEOUT)?
                .unwrap_or(Duration::from_secs(300)),
            initial_backoff,
            max_backoff,
        })
    }

    /// The backoff after `backoff`: doubled, at most the maximum.
    pub fn next_backoff(&self, backoff: Duration) -> Duration {
        (backoff * 2).min(self.max_backoff)
    }
}

/// What the TaskManager role reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskManagerConfig {
    /// Bind and advertised host; `None`: the interface routing to the
    /// JobManager.
    pub host: Option<String>,
    /// RPC port.
    pub rpc_port: u16,
    /// Data port to advertise when the caller gives no data address.
    pub data_port: u16,
    /// Slots offered.
    pub slots: u32,
    /// Heartbeat timing.
    pub heartbeat: HeartbeatConfig,
    /// Registration retries.
    pub registration: RegistrationConfig,
}

impl TaskManagerConfig {
    /// Reads the TaskManager's keys.
    pub fn from_configuration(config: &Configuration) -> Result<Self, ClusterConfigError> {
        Ok(TaskManagerConfig {
            host: config.get(&options::TASKMANAGER_HOST)?,
            rpc_port: config.get(&options::TASKMANAGER_RPC_PORT)?.unwrap_or(0),
            data_port: config.get(&options::TASKMANAGER_DATA_PORT)?.unwrap_or(0),
            slots: config.get(&options::TASKMANAGER_SLOTS)?.unwrap_or(1),
            heartbeat: HeartbeatConfig::from_configuration(config)?,
            registration: RegistrationConfig::from_configuration(config)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_a_known_key_with_the_same_description() {
        for (key, description) in options::ALL {
            let known = floe_core::config::KNOWN_KEYS
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} missing from floe_core::config::KNOWN_KEYS"));
            assert_eq!(known.1, *description, "description of {key} differs");
        }
    }

    #[test]
    fn defaults_are_flinks() {
        let c = Configuration::new();
        let jm = JobManagerConfig::from_configuration(&c).unwrap();
        assert_eq!((jm.rpc_host.as_str(), jm.rpc_port), ("localhost", 6123));
        assert_eq!(jm.rest_port, 8081);
        assert_eq!(jm.heartbeat.interval, Duration::from_secs(10));
        assert_eq!(jm.heartbeat.timeout, Duration::from_secs(50));
        assert_eq!(jm.heartbeat.rpc_failure_threshold, 2);
        assert_eq!(jm.slot_request_timeout, Duration::from_secs(300));
        assert_eq!(jm.resource_stabilization_timeout, Duration::from_secs(10));
        let tm = TaskManagerConfig::from_configuration(&c).unwrap();
        assert_eq!(tm.slots, 1);
        assert_eq!((tm.rpc_port, tm.data_port), (0, 0));
        assert_eq!(tm.registration.timeout, Duration::from_secs(300));
        assert_eq!(tm.registration.initial_backoff, Duration::from_millis(100));
        assert_eq!(
            tm.registration.next_backoff(Duration::from_secs(20)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn bad_and_contradicting_values_name_their_keys() {
        let mut c = Configuration::new();
        c.set("heartbeat.interval", "2s")
            .set("heartbeat.timeout", "1s");
        let err = HeartbeatConfig::from_configuration(&c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat.interval") && err.contains("heartbeat.timeout"));
        let mut c = Configuration::new();
        c.set("taskmanager.numberOfTaskSlots", "0");
        let err = TaskManagerConfig::from_configuration(&c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("taskmanager.numberOfTaskSlots"), "{err}");
        let mut c = Configuration::new();
        c.set("heartbeat.intervall", "1s");
        let err = check_known_keys(&c).unwrap_err().to_string();
        assert_eq!(err, "unknown configuration key(s): heartbeat.intervall");
    }
}
