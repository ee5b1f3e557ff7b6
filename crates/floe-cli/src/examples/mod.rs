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
use std::time::Duration;

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

/// How an example's `--output` file sink rolls and buckets its part
/// files. Without flags the examples keep rolling on every checkpoint into
/// the output directory itself, so their output shows up one checkpoint
/// after it was computed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FileSinkArgs {
    /// Roll part files at this many bytes (Flink's `DefaultRollingPolicy`,
    /// files span checkpoints) instead of at every checkpoint.
    #[arg(long, value_name = "BYTES")]
    pub roll_size: Option<u64>,
    /// With `--roll-size`: also roll part files open this long (default
    /// 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "roll_size")]
    pub roll_interval: Option<Duration>,
    /// With `--roll-size`: also roll part files not written this long
    /// (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "roll_size")]
    pub roll_inactivity: Option<Duration>,
    /// Bucket part files into subdirectories by processing time in this
    /// Java-style pattern (e.g. `yyyy-MM-dd--HH`, Flink's default).
    #[arg(long, value_name = "PATTERN", value_parser = parse_bucket_format)]
    pub bucket_format: Option<DateTimeBucketAssigner>,
    /// Compact: a bucket's rolled part files wait, hidden, until together
    /// they hold this many bytes, and are then concatenated into one part
    /// file (Flink's `FileCompactStrategy` size threshold).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub compact_threshold: Option<u64>,
    /// Compact: a bucket's waiting part files are concatenated at the N-th
    /// checkpoint since the first of them (Flink's
    /// `enableCompactionOnCheckpoint`); bounds how long output stays hidden.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub compact_every: Option<u32>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    floe::core::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_bucket_format(s: &str) -> Result<DateTimeBucketAssigner, String> {
    DateTimeBucketAssigner::with_format(s).map_err(|e| e.to_string())
}

impl FileSinkArgs {
    /// The exactly-once file sink writing `format` into `dir` as the flags
    /// say.
    pub fn sink<T>(&self, dir: &Path, format: LineFormat<T>) -> FileSink<T> {
        let sink = FileSink::for_row_format(dir, format);
        let sink = match self.roll_size {
            Some(size) => {
                let mut policy = DefaultRollingPolicy::builder().with_max_part_size(size);
                if let Some(d) = self.roll_interval {
                    policy = policy.with_rollover_interval(d);
                }
                if let Some(d) = self.roll_inactivity {
                    policy = policy.with_inactivity_interval(d);
                }
                sink.with_rolling_policy(policy)
            }
            None => sink.with_rolling_policy(OnCheckpointRollingPolicy::build()),
        };
        let sink = match &self.bucket_format {
            Some(a) => sink.with_bucket_assigner(a.clone()),
            None => sink.with_bucket_assigner(BasePathBucketAssigner),
        };
        match self.compact_strategy() {
            Some(strategy) => sink.enable_compact(strategy, ConcatFileCompactor::new()),
            None => sink,
        }
    }

    /// The compaction `--compact-threshold` and `--compact-every` ask for.
    fn compact_strategy(&self) -> Option<FileCompactStrategy> {
        if self.compact_threshold.is_none() && self.compact_every.is_none() {
            return None;
        }
        let mut b = FileCompactStrategy::builder();
        if let Some(bytes) = self.compact_threshold {
            b = b.size_threshold(bytes);
        }
        if let Some(n) = self.compact_every {
            b = b.enable_compaction_on_checkpoint(n);
        }
        // Both flags are at least 1 (clap checked) and one is set.
        Some(
            b.build()
                .expect("--compact-threshold/--compact-every form a valid strategy"),
        )
    }
}

/// Writes `<a> <b>` lines for a stream of pairs: to part files in the
/// directory `output` through the exactly-once [`FileSink`] (rolling on
/// every checkpoint into `output` itself), or to stdout.
pub fn write_pairs<A, B>(stream: &DataStream<(A, B)>, output: Option<&Path>)
where
    A: std::fmt::Display + 'static,
    B: std::fmt::Display + 'static,
    (A, B): Record,
{
    write_pairs_with(stream, output, &FileSinkArgs::default());
}

/// [`write_pairs`] with the file sink configured by `sink`.
pub fn write_pairs_with<A, B>(
    stream: &DataStream<(A, B)>,
    output: Option<&Path>,
    sink: &FileSinkArgs,
) where
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
            .sink_to(sink.sink(dir, format), "File Sink")
            .uid("file-sink"),
        None => stream
            .sink_to(StdoutSink::with_format(format), "Print to Std. Out")
            .uid("stdout-sink"),
    };
}
