//! `KafkaSource::builder()`: Flink's `KafkaSourceBuilder`, with its method
//! and property names, checked once in [`KafkaSourceBuilder::build`].

use std::sync::Arc;
use std::time::Duration;

use super::KafkaSource;
use super::config::SourceProperties;
use super::deserializer::KafkaRecordDeserializationSchema;
use super::offsets::{OffsetResetStrategy, OffsetsInitializer};
use crate::client::ClientConfig;
use crate::error::KafkaError;

/// Which topics a source reads.
#[derive(Debug, Clone)]
pub enum Subscription {
    /// These topics; each must exist when a reader opens.
    Topics(Vec<String>),
    /// Every topic whose whole name matches the pattern (Java's
    /// `Pattern.matcher(topic).matches()`), including topics created
    /// later, found by partition discovery.
    Pattern(regex::Regex),
}

impl Subscription {
    /// True if `topic` belongs to the subscription.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Subscription::Topics(ts) => ts.iter().any(|t| t == topic),
            Subscription::Pattern(p) => p.is_match(topic),
        }
    }
}

/// Everything a reader needs, fixed when the source is built.
pub(crate) struct SourceSettings<T> {
    pub(crate) client: ClientConfig,
    pub(crate) properties: SourceProperties,
    pub(crate) subscription: Subscription,
    pub(crate) starting: OffsetsInitializer,
    pub(crate) stopping: Option<OffsetsInitializer>,
    pub(crate) auto_offset_reset: OffsetResetStrategy,
    pub(crate) commit_on_checkpoint: bool,
    pub(crate) discovery_interval: Option<Duration>,
    pub(crate) deserializer: Arc<dyn KafkaRecordDeserializationSchema<T>>,
}

/// Builds a [`KafkaSource`] (Flink's `KafkaSourceBuilder`): bootstrap
/// servers, a subscription and a deserializer are required; everything
/// else has Flink's and Kafka's defaults.
pub struct KafkaSourceBuilder<T> {
    bootstrap_servers: Option<String>,
    subscription: Option<Result<Subscription, KafkaError>>,
    group_id: Option<String>,
    starting: OffsetsInitializer,
    stopping: Option<OffsetsInitializer>,
    deserializer: Option<Arc<dyn KafkaRecordDeserializationSchema<T>>>,
    properties: Vec<(String, String)>,
}

impl<T> Default for KafkaSourceBuilder<T> {
    fn default() -> Self {
        KafkaSourceBuilder {
            bootstrap_servers: None,
            subscription: None,
            group_id: None,
            starting: OffsetsInitializer::earliest(),
            stopping: None,
            deserializer: None,
            properties: Vec::new(),
        }
    }
}

impl<T: Send + 'static> KafkaSourceBuilder<T> {
    /// The brokers to learn the cluster from: `host:port,host:port`.
    pub fn set_bootstrap_servers(mut self, servers: &str) -> Self {
        self.bootstrap_servers = Some(servers.to_string());
        self
    }

    /// Reads these topics (replaces an earlier subscription).
    pub fn set_topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        self.subscription = Some(if topics.is_empty() {
            Err(KafkaError::Config("set_topics was given no topic".into()))
        } else {
            Ok(Subscription::Topics(topics))
        });
        self
    }

    /// Reads every topic whose whole name matches `pattern` (a regular
    /// expression; replaces an earlier subscription).
    pub fn set_topic_pattern(mut self, pattern: &str) -> Self {
        self.subscription = Some(
            regex::Regex::new(&format!("^(?:{pattern})$"))
                .map(Subscription::Pattern)
                .map_err(|e| KafkaError::Config(format!("topic pattern '{pattern}': {e}"))),
        );
        self
    }

    /// The consumer group offsets are committed to (and read from by
    /// [`OffsetsInitializer::committed_offsets`]).
    pub fn set_group_id(mut self, group_id: &str) -> Self {
        self.group_id = Some(group_id.to_string());
        self
    }

    /// Where a fresh job starts reading (default: earliest). A restored
    /// job resumes at its checkpointed offsets instead.
    pub fn set_starting_offsets(mut self, initializer: OffsetsInitializer) -> Self {
        self.starting = initializer;
        self
    }

    /// Makes the source bounded: each partition stops at the offset
    /// `stopping` names, resolved once when a reader first opens, and the
    /// source finishes when every partition has.
    pub fn set_bounded(mut self, stopping: OffsetsInitializer) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// How Kafka records become the stream's records.
    pub fn set_deserializer(
        mut self,
        deserializer: impl KafkaRecordDeserializationSchema<T>,
    ) -> Self {
        self.deserializer = Some(Arc::new(deserializer));
        self
    }

    /// Deserializes only each record's value with `f` (null values are
    /// skipped); shorthand for `set_deserializer(value_only(f))`.
    pub fn set_value_only_deserializer<F>(self, f: F) -> Self
    where
        F: Fn(&[u8]) -> anyhow::Result<T> + Send + Sync + 'static,
    {
        self.set_deserializer(super::deserializer::value_only(f))
    }

    /// A client property (`fetch.max.wait.ms`, `isolation.level`,
    /// `partition.discovery.interval.ms`, …; the list and defaults are in
    /// docs/kafka.md). Checked by [`build`](Self::build).
    pub fn set_property(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.to_string(), value.to_string()));
        self
    }

    /// Checks every setting and builds the source.
    pub fn build(self) -> Result<KafkaSource<T>, KafkaError> {
        let mut properties = SourceProperties::default();
        for (k, v) in &self.properties {
            properties.set(k, v)?;
        }
        if let Some(s) = self.bootstrap_servers {
            properties.bootstrap_servers = Some(s);
        }
        if let Some(g) = self.group_id {
            properties.group_id = Some(g);
        }
        let servers = properties
            .bootstrap_servers
            .clone()
            .ok_or(KafkaError::MissingSetting("bootstrap.servers"))?;
        let mut client = ClientConfig::new(&servers)?;
        client.request_timeout = properties.request_timeout;
        let subscription = self.subscription.ok_or(KafkaError::MissingSetting(
            "a subscription (set_topics or set_topic_pattern)",
        ))??;
        let deserializer = self.deserializer.ok_or(KafkaError::MissingSetting(
            "a deserializer (set_deserializer)",
        ))?;
        let group = properties.group_id.is_some();
        if !group
            && (self.starting.needs_group()
                || self.stopping.as_ref().is_some_and(|s| s.needs_group()))
        {
            return Err(KafkaError::MissingSetting(
                "group.id (committed offsets are a group's)",
            ));
        }
        let commit_on_checkpoint = match properties.commit_offsets_on_checkpoint {
            Some(true) if !group => {
                return Err(KafkaError::InvalidProperty {
                    key: "commit.offsets.on.checkpoint".into(),
                    value: "true".into(),
                    reason: "needs group.id (set_group_id)".into(),
                });
            }
            Some(on) => on,
            None => group,
        };
        let auto_offset_reset = properties
            .auto_offset_reset
            .unwrap_or_else(|| self.starting.auto_offset_reset());
        let discovery_interval = properties.discovery_interval(self.stopping.is_some());
        Ok(KafkaSource {
            settings: Arc::new(SourceSettings {
                client,
                properties,
                subscription,
                starting: self.starting,
                stopping: self.stopping,
                auto_offset_reset,
                commit_on_checkpoint,
                discovery_interval,
                deserializer,
            }),
        })
    }
}
