//! The source's client properties: Kafka consumer and Flink
//! `KafkaSourceOptions` keys, their defaults, and their parsing. Every key
//! is checked when the source is built, so a typo or an unparsable value
//! is an error naming the key rather than a silently ignored setting.

use std::time::Duration;

use super::offsets::OffsetResetStrategy;
use crate::client::Isolation;
use crate::error::KafkaError;

/// Flink's default `partition.discovery.interval.ms` for an unbounded
/// source: five minutes.
pub const DEFAULT_DISCOVERY_INTERVAL_MS: i64 = 300_000;

/// The properties a Kafka source understands, parsed, with Kafka's and
/// Flink's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProperties {
    /// `bootstrap.servers` (also `set_bootstrap_servers`).
    pub bootstrap_servers: Option<String>,
    /// `group.id` (also `set_group_id`).
    pub group_id: Option<String>,
    /// `client.id`: the whole client id, the same for every subtask.
    pub client_id: Option<String>,
    /// `client.id.prefix`: subtask `i` is `<prefix>-<i>` (Flink's option).
    pub client_id_prefix: Option<String>,
    /// `request.timeout.ms` (30 s): bound on every request, and how long
    /// a retriable fetch failure may last before the task fails.
    pub request_timeout: Duration,
    /// `fetch.max.wait.ms` (500): how long a broker may hold a fetch for
    /// data; each poll waits at most 100 ms so the task stays responsive.
    pub fetch_max_wait_ms: i32,
    /// `fetch.min.bytes` (1).
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes` (50 MiB).
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes` (1 MiB).
    pub max_partition_fetch_bytes: i32,
    /// `isolation.level` (`read_uncommitted`, Kafka's default).
    pub isolation: Isolation,
    /// `check.crcs` (true).
    pub check_crcs: bool,
    /// `partition.discovery.interval.ms`: `None` when not set (five
    /// minutes unbounded, off bounded).
    pub partition_discovery_interval_ms: Option<i64>,
    /// `commit.offsets.on.checkpoint`: `None` when not set (true when a
    /// group id is set).
    pub commit_offsets_on_checkpoint: Option<bool>,
    /// `auto.offset.reset`: `None` when not set (the starting offsets
    /// initializer's strategy).
    pub auto_offset_reset: Option<OffsetResetStrategy>,
}

impl Default for SourceProperties {
    fn default() -> Self {
        SourceProperties {
            bootstrap_servers: None,
            group_id: None,
            client_id: None,
            client_id_prefix: None,
            request_timeout: Duration::from_millis(30_000),
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            isolation: Isolation::ReadUncommitted,
            check_crcs: true,
            partition_discovery_interval_ms: None,
            commit_offsets_on_checkpoint: None,
            auto_offset_reset: None,
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> KafkaError {
    KafkaError::InvalidProperty {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn number<N: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    key: &str,
    value: &str,
    min: N,
) -> Result<N, KafkaError> {
    let n: N = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a number"))?;
    if n < min {
        return Err(invalid(key, value, format!("must be at least {min}")));
    }
    Ok(n)
}

fn boolean(key: &str, value: &str) -> Result<bool, KafkaError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "must be true or false")),
    }
}

fn non_empty(key: &str, value: &str) -> Result<String, KafkaError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(key, value, "must not be empty"));
    }
    Ok(v.to_string())
}

impl SourceProperties {
    /// Applies one property; an unknown key or a bad value is an error
    /// naming the key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), KafkaError> {
        match key {
            "bootstrap.servers" => self.bootstrap_servers = Some(non_empty(key, value)?),
            "group.id" => self.group_id = Some(non_empty(key, value)?),
            "client.id" => self.client_id = Some(non_empty(key, value)?),
            "client.id.prefix" => self.client_id_prefix = Some(non_empty(key, value)?),
            "request.timeout.ms" => {
                self.request_timeout = Duration::from_millis(number::<u64>(key, value, 1)?)
            }
            "fetch.max.wait.ms" => self.fetch_max_wait_ms = number(key, value, 0)?,
            "fetch.min.bytes" => self.fetch_min_bytes = number(key, value, 0)?,
            "fetch.max.bytes" => self.fetch_max_bytes = number(key, value, 1)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = number(key, value, 1)?,
            "isolation.level" => {
                self.isolation = match value.trim().to_ascii_lowercase().as_str() {
                    "read_uncommitted" => Isolation::ReadUncommitted,
                    "read_committed" => Isolation::ReadCommitted,
                    _ => {
                        return Err(invalid(
                            key,
                            value,
                            "must be read_uncommitted or read_committed",
                        ));
                    }
                }
            }
            "check.crcs" => self.check_crcs = boolean(key, value)?,
            "partition.discovery.interval.ms" => {
                self.partition_discovery_interval_ms = Some(number(key, value, i64::MIN)?)
            }
            "commit.offsets.on.checkpoint" => {
                self.commit_offsets_on_checkpoint = Some(boolean(key, value)?)
            }
            "auto.offset.reset" => {
                self.auto_offset_reset = Some(
                    OffsetResetStrategy::parse(value)
                        .ok_or_else(|| invalid(key, value, "must be earliest, latest or none"))?,
                )
            }
            _ => return Err(KafkaError::UnknownProperty(key.to_string())),
        }
        Ok(())
    }

    /// The client id of subtask `subtask`: `client.id` if set, else
    /// `<client.id.prefix>-<subtask>` (the prefix defaulting to the group
    /// id, else `floe-kafka-source`).
    pub fn client_id_for(&self, subtask: u32) -> String {
        if let Some(id) = &self.client_id {
            return id.clone();
        }
        let prefix = self
            .client_id_prefix
            .as_deref()
            .or(self.group_id.as_deref())
            .unwrap_or("floe-kafka-source");
        format!("{prefix}-{subtask}")
    }

    /// The discovery interval in effect: none for a bounded source or a
    /// value ≤ 0.
    pub fn discovery_interval(&self, bounded: bool) -> Option<Duration> {
        if bounded {
            return None;
        }
        let ms = self
            .partition_discovery_interval_ms
            .unwrap_or(DEFAULT_DISCOVERY_INTERVAL_MS);
        (ms > 0).then(|| Duration::from_millis(ms as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_flinks() {
        let p = SourceProperties::default();
        assert_eq!(p.request_timeout, Duration::from_secs(30));
        assert_eq!(p.fetch_max_wait_ms, 500);
        assert_eq!(p.max_partition_fetch_bytes, 1 << 20);
        assert_eq!(p.isolation, Isolation::ReadUncommitted);
        assert_eq!(p.discovery_interval(false), Some(Duration::from_secs(300)));
        assert_eq!(p.discovery_interval(true), None);
        assert_eq!(p.client_id_for(3), "floe-kafka-source-3");
    }

    #[test]
    fn properties_parse_and_bad_ones_name_their_key() {
        let mut p = SourceProperties::default();
        p.set("isolation.level", "READ_COMMITTED").unwrap();
        p.set("partition.discovery.interval.ms", "-1").unwrap();
        p.set("group.id", "g").unwrap();
        p.set("auto.offset.reset", "none").unwrap();
        assert_eq!(p.isolation, Isolation::ReadCommitted);
        assert_eq!(p.discovery_interval(false), None);
        assert_eq!(p.client_id_for(0), "g-0");
        assert_eq!(p.auto_offset_reset, Some(OffsetResetStrategy::None));
        for (key, value, needle) in [
            ("fetch.max.wait.ms", "soon", "not a number"),
            ("fetch.max.bytes", "0", "at least 1"),
            ("isolation.level", "serializable", "read_committed"),
            ("commit.offsets.on.checkpoint", "yes", "true or false"),
            ("auto.offset.reset", "smallest", "earliest"),
            ("group.id", " ", "empty"),
        ] {
            let err = p.set(key, value).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(needle), "{err}");
        }
        let err = p.set("enable.auto.commit", "true").unwrap_err();
        assert!(
            matches!(&err, KafkaError::UnknownProperty(k) if k == "enable.auto.commit"),
            "{err}"
        );
    }
}
