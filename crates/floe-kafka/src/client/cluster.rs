//! The cluster as a client sees it: brokers, which broker leads each
//! partition, and a connection per broker, opened when first needed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::connection::BrokerConnection;
use crate::error::{KafkaError, check};

/// How to reach a cluster: the settings every Kafka client shares.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` pairs to learn the cluster from (Kafka's
    /// `bootstrap.servers`).
    pub bootstrap_servers: Vec<String>,
    /// Sent with every request, for the broker's logs and quotas
    /// (`client.id`).
    pub client_id: String,
    /// Bound on connecting and on every request (`request.timeout.ms`).
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Parses Kafka's comma-separated `bootstrap.servers`.
    pub fn new(bootstrap_servers: &str) -> Result<Self, KafkaError> {
        let servers: Vec<String> = bootstrap_servers
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(KafkaError::Config(
                "bootstrap.servers is empty: give at least one host:port".into(),
            ));
        }
        for s in &servers {
            if s.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(KafkaError::Config(format!(
                    "bootstrap server '{s}' is not host:port"
                )));
            }
        }
        Ok(ClientConfig {
            bootstrap_servers: servers,
            client_id: "floe".to_string(),
            request_timeout: Duration::from_secs(30),
        })
    }
}

/// A topic partition: the unit Kafka orders records in, and a split of a
/// Kafka source.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition's index within the topic.
    pub partition: i32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What a coordinator coordinates (FindCoordinator's key type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorKind {
    /// A consumer group's offsets.
    Group,
    /// A transactional producer's transactions.
    Transaction,
}

/// A client's view of one Kafka cluster.
pub struct KafkaCluster {
    config: ClientConfig,
    /// Broker addresses by id, from the last metadata.
    brokers: HashMap<i32, String>,
    /// Partition leaders by topic, from the last metadata.
    leaders: BTreeMap<String, Vec<i32>>,
    connections: HashMap<i32, BrokerConnection>,
    /// A connection to whichever bootstrap server answered, for requests
    /// any broker can serve.
    bootstrap: Option<BrokerConnection>,
}

/// The Metadata version filled in (v10+ adds topic ids, which Floe does
/// not use; names are still sent).
const METADATA_CAP: i16 = 12;
/// FindCoordinator v4 takes a list of keys; Floe asks for one at a time.
const FIND_COORDINATOR_CAP: i16 = 4;

impl KafkaCluster {
    /// A view of the cluster `config` names; connects lazily.
    pub fn new(config: ClientConfig) -> Self {
        KafkaCluster {
            config,
            brokers: HashMap::new(),
            leaders: BTreeMap::new(),
            connections: HashMap::new(),
            bootstrap: None,
        }
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A connection to any broker: the first bootstrap server that answers.
    pub fn any_broker(&mut self) -> Result<&mut BrokerConnection, KafkaError> {
        if self.bootstrap.is_none() {
            let mut last = None;
            for server in &self.config.bootstrap_servers {
                match BrokerConnection::connect(
                    server,
                    &self.config.client_id,
                    self.config.request_timeout,
                ) {
                    Ok(c) => {
                        self.bootstrap = Some(c);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if self.bootstrap.is_none() {
                return Err(last.expect("at least one bootstrap server"));
            }
        }
        Ok(self.bootstrap.as_mut().expect("connected"))
    }

    /// A connection to broker `id`, as the last metadata locates it.
    pub fn broker(&mut self, id: i32) -> Result<&mut BrokerConnection, KafkaError> {
        if !self.connections.contains_key(&id) {
            let addr = self.brokers.get(&id).cloned().ok_or_else(|| {
                KafkaError::Metadata(format!("broker {id} is not in the cluster's metadata"))
            })?;
            let conn = BrokerConnection::connect(
                &addr,
                &self.config.client_id,
                self.config.request_timeout,
            )?;
            self.connections.insert(id, conn);
        }
        Ok(self.connections.get_mut(&id).expect("inserted"))
    }

    /// Forgets broker `id`'s connection (after an I/O error, so the next
    /// request reconnects) and the bootstrap connection if it is the same
    /// address.
    pub fn disconnect(&mut self, id: i32) {
        self.connections.remove(&id);
        if let (Some(addr), Some(b)) = (self.brokers.get(&id), &self.bootstrap)
            && b.broker() == addr
        {
            self.bootstrap = None;
        }
    }

    /// Forgets every connection (after an error whose broker is unknown).
    pub fn disconnect_all(&mut self) {
        self.connections.clear();
        self.bootstrap = None;
    }

    /// Refreshes brokers and partition leaders of `topics` (all topics if
    /// `None`) and returns each topic's partition count. A named topic that
    /// does not exist is an error; `None` lists what exists.
    pub fn refresh_metadata(
        &mut self,
        topics: Option<&[String]>,
    ) -> Result<BTreeMap<String, i32>, KafkaError> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(super::topic_name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response: MetadataResponse = match self.any_broker()?.send(&request, METADATA_CAP) {
            Ok(r) => r,
            Err(e) => {
                self.bootstrap = None;
                return Err(e);
            }
        };
        for b in &response.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        let mut counts = BTreeMap::new();
        for t in response.topics {
            let Some(name) = t.name.map(|n| n.0.to_string()) else {
                continue;
            };
            match ResponseError::try_from_code(t.error_code) {
                None => {}
                Some(ResponseError::UnknownTopicOrPartition) => {
                    return Err(KafkaError::UnknownTopic(name));
                }
                Some(error) => {
                    return Err(KafkaError::Broker {
                        api: "Metadata",
                        context: Some(format!("topic '{name}'")),
                        error,
                    });
                }
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in &t.partitions {
                let i = p.partition_index as usize;
                if i >= leaders.len() {
                    leaders.resize(i + 1, -1);
                }
                leaders[i] = p.leader_id.0;
            }
            counts.insert(name.clone(), leaders.len() as i32);
            self.leaders.insert(name, leaders);
        }
        Ok(counts)
    }

    /// The broker leading `tp` per the last metadata (refresh first if
    /// unknown).
    pub fn leader(&self, tp: &TopicPartition) -> Option<i32> {
        self.leaders
            .get(&tp.topic)
            .and_then(|l| l.get(tp.partition as usize))
            .copied()
            .filter(|id| *id >= 0)
    }

    /// The leader of `tp`, refreshing metadata once if it is unknown.
    pub fn leader_of(&mut self, tp: &TopicPartition) -> Result<i32, KafkaError> {
        if let Some(l) = self.leader(tp) {
            return Ok(l);
        }
        self.refresh_metadata(Some(std::slice::from_ref(&tp.topic)))?;
        self.leader(tp).ok_or_else(|| {
            KafkaError::Metadata(format!("partition {tp} has no leader (it may not exist)"))
        })
    }

    /// The broker coordinating `key` (a group id or a transactional id),
    /// added to the known brokers; its id is returned for [`Self::broker`].
    pub fn find_coordinator(
        &mut self,
        kind: CoordinatorKind,
        key: &str,
    ) -> Result<i32, KafkaError> {
        let key_type = match kind {
            CoordinatorKind::Group => 0,
            CoordinatorKind::Transaction => 1,
        };
        let conn = self.any_broker()?;
        let version = conn.version::<FindCoordinatorRequest>(FIND_COORDINATOR_CAP)?;
        let key = StrBytes::from_string(key.to_string());
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_coordinator_keys(vec![key.clone()])
        } else {
            FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_key(key.clone())
        };
        let response = conn.send(&request, version)?;
        let (code, node, host, port) = if version >= 4 {
            let c = response.coordinators.into_iter().next().ok_or_else(|| {
                KafkaError::Metadata(format!(
                    "FindCoordinator answered no coordinator for '{key}'"
                ))
            })?;
            (c.error_code, c.node_id, c.host, c.port)
        } else {
            (
                response.error_code,
                response.node_id,
                response.host,
                response.port,
            )
        };
        check("FindCoordinator", code, || format!("'{key}'"))?;
        let BrokerId(id) = node;
        let addr = format!("{}:{}", host.as_str(), port);
        if self.brokers.get(&id) != Some(&addr) {
            self.connections.remove(&id);
            self.brokers.insert(id, addr);
        }
        Ok(id)
    }
}
