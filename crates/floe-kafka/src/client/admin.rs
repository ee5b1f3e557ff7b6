//! Topic administration: what tests, examples and benchmarks need to set a
//! cluster up (Flink leaves this to Kafka's own tools; a job never calls
//! it).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;

use super::KafkaCluster;
use crate::error::KafkaError;

/// CreateTopics is sent at v5+ semantics at most (v7 adds topic ids to the
/// answer, harmless).
const CREATE_TOPICS_CAP: i16 = 7;

impl KafkaCluster {
    /// Creates `topic` with `partitions` partitions and the given
    /// replication factor; an existing topic is an error unless
    /// `if_not_exists`.
    pub fn create_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        if_not_exists: bool,
    ) -> Result<(), KafkaError> {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(super::topic_name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor),
            ])
            .with_timeout_ms(self.config().request_timeout.as_millis() as i32);
        let response = self.any_broker()?.send(&request, CREATE_TOPICS_CAP)?;
        for t in response.topics {
            match ResponseError::try_from_code(t.error_code) {
                None => {}
                Some(ResponseError::TopicAlreadyExists) if if_not_exists => {}
                Some(error) => {
                    return Err(KafkaError::Broker {
                        api: "CreateTopics",
                        context: Some(format!(
                            "topic '{topic}'{}",
                            t.error_message
                                .map(|m| format!(" ({})", m.as_str()))
                                .unwrap_or_default()
                        )),
                        error,
                    });
                }
            }
        }
        Ok(())
    }
}
