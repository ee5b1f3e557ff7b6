//! Kafka keyed count: `floe run kafka-keyed-count --bootstrap-servers <host:port>
//! --input-topic <t> --output-topic <t> [--group-id g] [--delivery-guarantee
//! exactly-once|at-least-once|none] [--rate <records/s>] [--bounded] [-p N]`.
//!
//! Reads u64 keys written as UTF-8 text values, counts per key in a
//! `ValueState<u64>` (the keyed-count example's function), and writes
//! `<key> <count>` values keyed by the key, so each key's counts stay in
//! order in one partition. With `--bounded` it stops at the end offsets
//! found when it starts.

use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;

use super::kafka::{KafkaFlags, Throttle};
use super::keyed_count::CountPerKey;

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "kafka-keyed-count",
    about = "Running count per key, from a Kafka topic to a Kafka topic"
)]
pub struct Args {
    #[command(flatten)]
    kafka: KafkaFlags,
    /// The topic to read keys from (UTF-8 decimal u64 values).
    #[arg(long)]
    input_topic: String,
    /// The topic to write `<key> <count>` values to.
    #[arg(long)]
    output_topic: String,
    /// Stop at the input's end offsets found at start.
    #[arg(long)]
    bounded: bool,
    /// Pass at most this many records per second in total.
    #[arg(long)]
    rate: Option<f64>,
}

/// A key from a record value, or an error naming the value.
pub fn parse_key(value: &[u8]) -> anyhow::Result<u64> {
    let text = std::str::from_utf8(value)
        .map_err(|_| anyhow::anyhow!("a record value is not UTF-8 text"))?;
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("record value '{text}' is not a u64 key"))
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("kafka-keyed-count", &args);
    if opts.kafka.bootstrap_servers.is_none() {
        anyhow::bail!("kafka-keyed-count needs --bootstrap-servers host:port");
    }
    if opts.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        anyhow::bail!("--rate must be a positive number of records per second");
    }
    let env = StreamEnvironment::from_job_args(&args);
    let source = opts.kafka.source(
        &opts.input_topic,
        "floe-kafka-keyed-count",
        opts.bounded,
        parse_key,
    )?;
    let mut keys = env.from_source(source, "Kafka Source").uid("kafka-source");
    if let Some(rate) = opts.rate {
        keys = keys
            .process(Throttle::new(rate, env.parallelism()?))
            .name("Throttle")
            .uid("throttle");
    }
    let counts = keys
        .map(|k: u64| (k, 1u64))
        .name("Pair")
        .uid("pair")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(CountPerKey::default())
        .name("Count per Key")
        .uid("count-per-key");
    let sink = opts
        .kafka
        .pairs_sink(&opts.output_topic, "kafka-keyed-count")?;
    counts.sink_to(sink, "Kafka Sink").uid("kafka-sink");
    env.execute("KafkaKeyedCount")?;
    Ok(())
}
