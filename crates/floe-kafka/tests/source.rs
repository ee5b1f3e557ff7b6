//! The Kafka source in real Floe jobs against a real broker: every record
//! exactly once and in partition order at any parallelism.

mod common;

use common::*;
use floe::prelude::*;
use floe_kafka::OffsetsInitializer;
use floe_kafka::testing::TestBroker;

#[test]
fn every_record_once_in_partition_order_at_parallelism_1_2_3() {
    let Some(broker) = TestBroker::start_or_skip("parallelism") else {
        return;
    };
    topic_with(&broker, "orders", 4, 1_500);
    for parallelism in 1..=3 {
        let source = builder(&broker, &["orders"])
            .set_bounded(OffsetsInitializer::latest())
            .build()
            .unwrap();
        let out = with_timeout(60, move || {
            let env = StreamEnvironment::new();
            env.set_parallelism(parallelism);
            let (sink, out) = CollectSink::new();
            env.from_source(source, "Kafka").sink_to(sink, "Collect");
            env.execute("kafka-parallelism").unwrap();
            out
        });
        assert_exactly(&out.snapshot(), "orders", 4, 0..1_500);
    }
}
