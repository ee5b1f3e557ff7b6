//! Example jobs, runnable as `floe run <name> [args]`.

pub mod buffering_sink;
pub mod count_window_average;
pub mod delayed_echo;
pub mod dynamic_rules;
pub mod fraud_detection;
pub mod kafka;
pub mod kafka_keyed_count;
pub mod keyed_count;
pub mod nexmark;
pub mod sessionize;
pub mod timer_burst;
pub mod wordcount;

use std::path::Path;

use clap::Parser;
use floe::JobArgs;
use floe::api::stream::Record;
use floe::prelude::*;

/// A job entry point.
pub type JobMain = fn(JobArgs) -> anyhow::Result<()>;

/// The examples by name.
pub const EXAMPLES: &[(&str, &str, JobMain)] = &[
    (
        "wordcount",
        "Counts words of a text file or a socket stream",
        wordcount::run,
    ),
    (
        "keyed-count",
        "Running count per key over generated records",
        keyed_count::run,
    ),
    (
        "kafka-keyed-count",
        "Running count per key, from a Kafka topic to a Kafka topic (exactly once)",
        kafka_keyed_count::run,
    ),
    (
        "dynamic-rules",
        "Matches user actions against broadcast patterns (broadcast state)",
        dynamic_rules::run,
    ),
    (
        "buffering-sink",
        "Buffers records in a sink, kept in operator ListState across failures",
        buffering_sink::run,
    ),
    (
        "fraud-detection",
        "Alerts on a small then a large transaction within a minute (event-time timers)",
        fraud_detection::run,
    ),
    (
        "sessionize",
        "Sessions per user in event time, closed by event-time timers",
        sessionize::run,
    ),
    (
        "delayed-echo",
        "Echoes events after a processing-time delay; counts them per event-time window",
        delayed_echo::run,
    ),
    (
        "timer-burst",
        "Makes millions of event-time timers due at one watermark while checkpointing",
        timer_burst::run,
    ),
    (
        "count-window-average",
        "Average of every two values per key (the seed's CountWindowAverage)",
        count_window_average::run,
    ),
    (
        "nexmark",
        "Nexmark queries q0-q5, q7-q9, q11 and q12 over the generated auction stream",
        nexmark::run,
    ),
];

/// Looks an example up by name.
pub fn find(name: &str) -> Option<JobMain> {
    EXAMPLES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, f)| *f)
}

/// Parses a job's own arguments (what Floe's flags left over), the clap way:
/// `--help` prints the job's help and exits 0; a usage error prints the
/// error with the job's usage and exits 2.
pub fn parse_job_args<P: Parser>(name: &str, args: &JobArgs) -> P {
    P::parse_from(std::iter::once(name.to_string()).chain(args.job_args().iter().cloned()))
}

/// Writes `<a> <b>` lines for a stream of pairs: to part files in the
/// directory `output` through the exactly-once [`FileSink`] (committed on
/// each completed checkpoint, or at the end without checkpointing), or to
/// stdout.
pub fn write_pairs<A, B>(stream: &DataStream<(A, B)>, output: Option<&Path>)
where
    A: std::fmt::Display + 'static,
    B: std::fmt::Display + 'static,
    (A, B): Record,
{
    let format = LineFormat::new(|(a, b): &(A, B), buf: &mut String| {
        use std::fmt::Write;
        let _ = write!(buf, "{a} {b}");
    });
    match output {
        Some(dir) => stream
            .sink_to(FileSink::for_row_format(dir, format).build(), "File Sink")
            .uid("file-sink"),
        None => stream
            .sink_to(StdoutSink::with_format(format), "Print to Std. Out")
            .uid("stdout-sink"),
    };
}
