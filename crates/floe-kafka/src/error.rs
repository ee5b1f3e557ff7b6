//! What can go wrong talking to Kafka, typed so callers can tell a broker
//! that is down (retry elsewhere) from a request the broker refused (an
//! error code) from bytes that make no sense (a bug or a foreign server).

use kafka_protocol::ResponseError;

/// An error of the Kafka client, naming the broker or the request.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// No TCP connection could be made to any address of a broker.
    #[error("cannot connect to Kafka broker {broker}: {source}")]
    Connect {
        /// The `host:port` tried.
        broker: String,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// An established connection broke or timed out mid-request.
    #[error("Kafka broker {broker} did not answer {api}: {source}")]
    Io {
        /// The `host:port` of the connection.
        broker: String,
        /// The request that was in flight.
        api: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A request or response could not be encoded or decoded.
    #[error("cannot {what} for Kafka broker {broker}: {message}")]
    Codec {
        /// The `host:port` of the connection.
        broker: String,
        /// What was being done (`encode Fetch`, `decode a record batch`).
        what: String,
        /// The codec's message.
        message: String,
    },
    /// The broker answered with an error code.
    #[error("Kafka {api} failed{}: {error} (code {})", context.as_deref().map(|c| format!(" for {c}")).unwrap_or_default(), error.code())]
    Broker {
        /// The request.
        api: &'static str,
        /// What the error is about (a topic partition, a transactional id).
        context: Option<String>,
        /// The error code, as the protocol defines it.
        error: ResponseError,
    },
    /// The broker supports none of the versions of a request this client
    /// speaks.
    #[error(
        "Kafka broker {broker} does not support {api} in a version Floe speaks ({ours}); the broker offers {theirs}"
    )]
    UnsupportedVersion {
        /// The `host:port` of the broker.
        broker: String,
        /// The request.
        api: &'static str,
        /// The versions this client speaks.
        ours: String,
        /// The versions the broker offers (`none` if it lacks the API).
        theirs: String,
    },
    /// A topic the job names does not exist.
    #[error("Kafka topic '{0}' does not exist")]
    UnknownTopic(String),
    /// Something the client needs is missing from the cluster's metadata.
    #[error("Kafka metadata: {0}")]
    Metadata(String),
    /// A bad setting (an unknown property, an unparsable value).
    #[error("Kafka configuration: {0}")]
    Config(String),
    /// A required setting of a builder was never given.
    #[error("Kafka source: {0} is required and was not set")]
    MissingSetting(&'static str),
    /// A property key this client does not know (a typo would otherwise be
    /// silently ignored).
    #[error("Kafka property '{0}' is unknown")]
    UnknownProperty(String),
    /// A known property with a value that does not parse or is out of
    /// range.
    #[error("Kafka property '{key}' = '{value}': {reason}")]
    InvalidProperty {
        /// The property key.
        key: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes a broker sent for a partition are not readable record batches.
    #[error("corrupt records from Kafka broker {broker} for {partition}: {message}")]
    CorruptRecords {
        /// The topic partition.
        partition: String,
        /// The broker that sent them.
        broker: String,
        /// What is wrong.
        message: String,
    },
    /// A position a reader needs does not exist and the reset strategy is
    /// `none` (no committed offset, or an offset out of range).
    #[error("Kafka {partition}: {what}, and the offset reset strategy is 'none'")]
    NoOffset {
        /// The topic partition.
        partition: String,
        /// What is missing.
        what: String,
    },
}

impl KafkaError {
    /// True for errors a retry (perhaps after refreshing metadata or
    /// reconnecting) can cure: a lost connection, a leader that moved, a
    /// coordinator that is loading.
    pub fn is_retriable(&self) -> bool {
        match self {
            KafkaError::Connect { .. } | KafkaError::Io { .. } => true,
            KafkaError::Broker { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// The broker's error code, if the broker refused.
    pub fn broker_error(&self) -> Option<ResponseError> {
        match self {
            KafkaError::Broker { error, .. } => Some(*error),
            _ => None,
        }
    }
}

/// Turns a response's error code into a [`KafkaError::Broker`].
pub(crate) fn check(
    api: &'static str,
    code: i16,
    context: impl FnOnce() -> String,
) -> Result<(), KafkaError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(KafkaError::Broker {
            api,
            context: Some(context()),
            error,
        }),
    }
}
