//! The protocol client against a real broker.

use floe_kafka::testing::TestBroker;
use floe_kafka::{ClientConfig, KafkaCluster, KafkaError};

#[test]
fn metadata_lists_created_topics_and_refuses_unknown_ones() {
    let Some(broker) = TestBroker::start_or_skip("metadata") else {
        return;
    };
    let mut cluster = broker.cluster();
    cluster.create_topic("orders", 4, 1, false).unwrap();
    cluster.create_topic("orders", 4, 1, true).unwrap();
    let err = cluster.create_topic("orders", 4, 1, false).unwrap_err();
    assert!(err.to_string().contains("TopicAlreadyExists"), "{err}");
    let counts = cluster
        .refresh_metadata(Some(&["orders".to_string()]))
        .unwrap();
    assert_eq!(counts.get("orders"), Some(&4));
    let err = cluster
        .refresh_metadata(Some(&["missing".to_string()]))
        .unwrap_err();
    assert!(
        matches!(err, KafkaError::UnknownTopic(ref t) if t == "missing"),
        "{err}"
    );
}

#[test]
fn a_refused_connection_names_the_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cluster = KafkaCluster::new(ClientConfig::new(&format!("127.0.0.1:{port}")).unwrap());
    let err = cluster.refresh_metadata(None).unwrap_err();
    assert!(matches!(err, KafkaError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.is_retriable());
}

#[test]
fn bad_bootstrap_servers_are_refused() {
    for bad in ["", " , ", "localhost", "host:port"] {
        let err = ClientConfig::new(bad).unwrap_err();
        assert!(matches!(err, KafkaError::Config(_)), "{bad}: {err}");
    }
}
