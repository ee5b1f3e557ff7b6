//! Producing plainly and in transactions against a real broker, read back
//! by the marker-aware reader.

use floe_kafka::client::{Acks, Producer, end_transaction};
use floe_kafka::testing::{TestBroker, read_committed};
use floe_kafka::{ClientConfig, TopicPartition};

fn values(records: &[floe_kafka::testing::ReadRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect()
}

#[test]
fn plain_records_arrive_in_order_per_partition() {
    let Some(broker) = TestBroker::start_or_skip("plain") else {
        return;
    };
    broker.cluster().create_topic("t", 3, 1, false).unwrap();
    let mut p = Producer::new(
        ClientConfig::new(broker.bootstrap_servers()).unwrap(),
        Acks::All,
    );
    for i in 0..3000 {
        let tp = TopicPartition::new("t", i % 3);
        p.send(
            &tp,
            Some(format!("k{i}").as_bytes()),
            Some(format!("v{i}").as_bytes()),
            1000 + i as i64,
        );
        if i % 1000 == 999 {
            p.flush().unwrap();
        }
    }
    p.flush().unwrap();
    let read = read_committed(&mut broker.cluster(), "t").unwrap();
    for partition in 0..3 {
        let expected: Vec<String> = (0..3000)
            .filter(|i| i % 3 == partition)
            .map(|i| format!("v{i}"))
            .collect();
        assert_eq!(values(&read[&partition]), expected);
        let offsets: Vec<i64> = read[&partition].iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..1000).collect::<Vec<_>>());
    }
    assert_eq!(read[&1][0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(read[&1][0].timestamp, 1001);
}

#[test]
fn committed_transactions_show_aborted_and_open_ones_do_not() {
    let Some(broker) = TestBroker::start_or_skip("transactions") else {
        return;
    };
    broker.cluster().create_topic("t", 2, 1, false).unwrap();
    let config = ClientConfig::new(broker.bootstrap_servers()).unwrap();
    let tp0 = TopicPartition::new("t", 0);
    let tp1 = TopicPartition::new("t", 1);

    let mut a = Producer::transactional(config.clone(), "a", 60_000).unwrap();
    a.begin_transaction();
    a.send(&tp0, None, Some(b"committed-1"), 1);
    a.send(&tp1, None, Some(b"committed-2"), 1);
    a.commit_transaction().unwrap();
    a.begin_transaction();
    a.send(&tp0, None, Some(b"aborted"), 2);
    a.flush().unwrap();
    a.abort_transaction().unwrap();

    // Pre-committed (flushed) by one producer, committed from elsewhere
    // with the stored producer id and epoch: a restored job's path.
    let mut b = Producer::transactional(config.clone(), "b", 60_000).unwrap();
    b.begin_transaction();
    b.send(&tp1, None, Some(b"resumed"), 3);
    b.flush().unwrap();
    let handle = b.transaction().unwrap().clone();
    drop(b);
    let mut other = broker.cluster();
    end_transaction(&mut other, &handle, true).unwrap();
    // Committing again is a retry and succeeds.
    end_transaction(&mut other, &handle, true).unwrap();

    // Left open by a "crashed" producer, then re-initialised: the new
    // epoch fences it and its transaction is aborted.
    let mut c = Producer::transactional(config.clone(), "c", 60_000).unwrap();
    assert_eq!(c.transaction().unwrap().producer.epoch, 0);
    c.begin_transaction();
    c.send(&tp0, None, Some(b"lingering"), 4);
    c.flush().unwrap();
    drop(c);
    let c2 = Producer::transactional(config.clone(), "c", 60_000).unwrap();
    assert!(c2.transaction().unwrap().producer.epoch > 0);

    // And one open transaction at the end.
    let mut d = Producer::transactional(config, "d", 60_000).unwrap();
    d.begin_transaction();
    d.send(&tp1, None, Some(b"open"), 5);
    d.flush().unwrap();

    let log = floe_kafka::testing::read_log(&mut broker.cluster(), "t").unwrap();
    // Hidden: the aborted, the lingering (aborted by the re-init) and the
    // open record; only "d" is still open.
    assert_eq!((log.hidden, log.open_transactions), (3, 1));
    let read = read_committed(&mut broker.cluster(), "t").unwrap();
    assert_eq!(values(&read[&0]), ["committed-1"]);
    assert_eq!(values(&read[&1]), ["committed-2", "resumed"]);
}
