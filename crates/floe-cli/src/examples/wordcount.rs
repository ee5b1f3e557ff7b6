//! Word count: `floe run wordcount (--input <file> | --socket <host:port> |
//! --kafka-input <topic>) [--output <dir> | --kafka-output <topic>]
//! [--bootstrap-servers <host:port>] [-p N]`.
//!
//! Prints one line per update, `<word> <count>`; a word is a maximal run of
//! non-whitespace characters, case kept. The last line of a word carries its
//! total.

use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "wordcount",
    about = "Counts words of a text file or a socket stream"
)]
pub struct Args {
    /// Text file (or directory of files) to read.
    #[arg(long, conflicts_with_all = ["socket", "kafka_input"], required_unless_present_any = ["socket", "kafka_input"])]
    pub input: Option<std::path::PathBuf>,
    /// host:port of a text server to read lines from (e.g. `nc -lk 7000`).
    #[arg(long, conflicts_with = "kafka_input")]
    pub socket: Option<String>,
    /// A Kafka topic to read lines from (UTF-8 record values), to its end
    /// offsets at start (needs --bootstrap-servers).
    #[arg(long)]
    pub kafka_input: Option<String>,
    /// Write `<word> <count>` lines into part files in this directory
    /// (exactly once with checkpointing) instead of stdout.
    #[arg(long, conflicts_with = "kafka_output")]
    pub output: Option<std::path::PathBuf>,
    /// Write `<word> <count>` values, keyed by word, to this Kafka topic
    /// (needs --bootstrap-servers).
    #[arg(long)]
    pub kafka_output: Option<String>,
    #[command(flatten)]
    kafka: super::kafka::KafkaFlags,
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("wordcount", &args);
    let env = StreamEnvironment::from_job_args(&args);
    let lines = match (&opts.input, &opts.socket) {
        (Some(path), _) => {
            let source = TextFileSource::new([path]);
            // Fail before the job starts, with a clear error naming the input.
            source.files()?;
            env.from_source(source, "Text File").uid("text-file-source")
        }
        (None, Some(addr)) => env
            .from_source(SocketTextSource::new(addr.clone()), "Socket Stream")
            .uid("socket-source"),
        (None, None) => {
            let topic = opts
                .kafka_input
                .as_deref()
                .expect("clap requires one input");
            let source = opts
                .kafka
                .source(topic, "floe-wordcount", true, |v: &[u8]| {
                    Ok(String::from_utf8_lossy(v).into_owned())
                })?;
            env.from_source(source, "Kafka Source").uid("kafka-source")
        }
    };
    let counts = lines
        .flat_map(|line: String, out: &mut Collector<'_, (String, u64)>| {
            for word in line.split_whitespace() {
                out.collect((word.to_string(), 1));
            }
        })
        .name("Tokenizer")
        .uid("tokenizer")
        .key_by(|(word, _): &(String, u64)| word.clone())
        .sum(|(_, n): &mut (String, u64)| n)
        .name("Word Count")
        .uid("word-count");
    match &opts.kafka_output {
        Some(topic) => {
            let sink = opts.kafka.pairs_sink(topic, "wordcount")?;
            counts.sink_to(sink, "Kafka Sink").uid("kafka-sink");
        }
        None => super::write_pairs(&counts, opts.output.as_deref()),
    }
    env.execute("WordCount")?;
    Ok(())
}
