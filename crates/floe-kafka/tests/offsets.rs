//! Starting and stopping offsets, read through the source's readers
//! against a real broker.

mod common;

use std::collections::BTreeMap;

use common::*;
use floe::runtime::SourceStatus;
use floe_kafka::client::OffsetSpec;
use floe_kafka::testing::TestBroker;
use floe_kafka::{KafkaError, OffsetResetStrategy, OffsetsInitializer, TopicPartition};

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

#[test]
fn earliest_latest_and_timestamp_starts() {
    let Some(broker) = TestBroker::start_or_skip("starts") else {
        return;
    };
    topic_with(&broker, "t", 2, 100);

    // Earliest, bounded by latest: everything there is.
    let source = builder(&broker, &["t"])
        .set_bounded(OffsetsInitializer::latest())
        .build()
        .unwrap();
    assert_exactly(&read_to_end(&mut *reader(&source, 0, 1)), "t", 2, 0..100);

    // Latest: only what is written after the reader opened.
    let source = builder(&broker, &["t"])
        .set_starting_offsets(OffsetsInitializer::latest())
        .build()
        .unwrap();
    let mut r = reader(&source, 0, 1);
    let mut batch = Vec::new();
    assert_eq!(
        r.poll_next(&mut batch, 100).unwrap(),
        SourceStatus::NothingAvailable
    );
    assert!(batch.is_empty());
    produce(&broker, "t", 2, 100, 30);
    let (out, _) = read_n(&mut *r, 60);
    assert_exactly(&out, "t", 2, 100..130);

    // Timestamp: record i is stamped 1_000 + i. The test broker answers
    // every ListOffsets by timestamp with 0 (docs/kafka.md), so this part
    // runs only on a broker that honours it.
    let honours_timestamps = broker
        .cluster()
        .list_offsets(&[tp(0)], OffsetSpec::Timestamp(1_000_000))
        .unwrap()[&tp(0)]
        != 0;
    if !honours_timestamps {
        eprintln!("the broker ignores ListOffsets timestamps: timestamp starts not checked");
        return;
    }
    let source = builder(&broker, &["t"])
        .set_starting_offsets(OffsetsInitializer::timestamp(1_090))
        .set_bounded(OffsetsInitializer::latest())
        .build()
        .unwrap();
    assert_exactly(&read_to_end(&mut *reader(&source, 0, 1)), "t", 2, 90..130);
    // A timestamp after every record starts at the end.
    let source = builder(&broker, &["t"])
        .set_starting_offsets(OffsetsInitializer::timestamp(1_000_000))
        .set_bounded(OffsetsInitializer::latest())
        .build()
        .unwrap();
    assert!(read_to_end(&mut *reader(&source, 0, 1)).is_empty());
}

#[test]
fn committed_and_specified_offsets() {
    let Some(broker) = TestBroker::start_or_skip("committed") else {
        return;
    };
    topic_with(&broker, "t", 3, 50);
    let mut cluster = broker.cluster();
    cluster
        .commit_offsets("g", &BTreeMap::from([(tp(0), 10), (tp(1), 45)]))
        .unwrap();
    assert_eq!(
        cluster
            .fetch_committed_offsets("g", &[tp(0), tp(1), tp(2)])
            .unwrap(),
        BTreeMap::from([(tp(0), 10), (tp(1), 45)])
    );

    // Committed, and partition 2 (nothing committed) per the strategy.
    for (reset, p2_from) in [
        (OffsetResetStrategy::Earliest, 0),
        (OffsetResetStrategy::Latest, 50),
    ] {
        let source = builder(&broker, &["t"])
            .set_group_id("g")
            .set_starting_offsets(OffsetsInitializer::committed_offsets(reset))
            .set_bounded(OffsetsInitializer::latest())
            .build()
            .unwrap();
        let got = by_partition(&read_to_end(&mut *reader(&source, 0, 1)));
        let firsts: Vec<Option<i64>> = (0..3)
            .map(|p| got.get(&("t".to_string(), p)).map(|r| r[0].0))
            .collect();
        let counts: Vec<usize> = (0..3)
            .map(|p| got.get(&("t".to_string(), p)).map_or(0, Vec::len))
            .collect();
        assert_eq!(firsts[..2], [Some(10), Some(45)], "{reset:?}");
        assert_eq!(counts, [40, 5, (50 - p2_from) as usize], "{reset:?}");
    }

    // No committed offset and strategy none: an error naming the partition.
    let source = builder(&broker, &["t"])
        .set_group_id("g")
        .set_starting_offsets(OffsetsInitializer::committed_offsets(
            OffsetResetStrategy::None,
        ))
        .build()
        .unwrap();
    let info = info(0, 1);
    let mut r = floe::runtime::Source::create_reader(&source, &info).unwrap();
    let err = r.open(&info).unwrap_err();
    let kafka = err.downcast_ref::<KafkaError>().expect("a KafkaError");
    assert!(matches!(kafka, KafkaError::NoOffset { .. }), "{err:#}");
    assert!(format!("{err:#}").contains("t-2"), "{err:#}");

    // Specified offsets; missing partitions from earliest.
    let source = builder(&broker, &["t"])
        .set_starting_offsets(OffsetsInitializer::offsets(BTreeMap::from([
            (tp(0), 7),
            (tp(2), 49),
        ])))
        .set_bounded(OffsetsInitializer::offsets(BTreeMap::from([
            (tp(0), 9),
            (tp(1), 3),
            (tp(2), 50),
        ])))
        .build()
        .unwrap();
    let got = by_partition(&read_to_end(&mut *reader(&source, 0, 1)));
    let offsets = |p: i32| -> Vec<i64> {
        got.get(&("t".to_string(), p))
            .map(|r| r.iter().map(|(o, _)| *o).collect())
            .unwrap_or_default()
    };
    assert_eq!(offsets(0), [7, 8]);
    assert_eq!(offsets(1), [0, 1, 2]);
    assert_eq!(offsets(2), [49]);
}

#[test]
fn bounded_splits_finish_one_by_one_and_empty_ones_at_once() {
    let Some(broker) = TestBroker::start_or_skip("bounded") else {
        return;
    };
    topic_with(&broker, "t", 2, 20);
    broker.cluster().create_topic("empty", 1, 1, false).unwrap();
    let source = builder(&broker, &["t", "empty"])
        .set_bounded(OffsetsInitializer::offsets_or(
            BTreeMap::from([(tp(0), 5)]),
            OffsetResetStrategy::Latest,
        ))
        .build()
        .unwrap();
    let mut r = reader(&source, 0, 1);
    let mut finished = Vec::new();
    r.finished_splits(&mut finished);
    assert_eq!(finished.len(), 1, "the empty topic's split ends at once");
    let out = read_to_end(&mut *r);
    let got = by_partition(&out);
    assert_eq!(got[&("t".to_string(), 0)].len(), 5);
    assert_eq!(got[&("t".to_string(), 1)].len(), 20);
    r.finished_splits(&mut finished);
    assert_eq!(finished.len(), 3, "every split reported finished");
    // A later poll stays finished.
    assert_eq!(
        r.poll_next(&mut Vec::new(), 10).unwrap(),
        SourceStatus::Finished
    );
}
