//! Word count: `floe run wordcount (--input <file> | --socket <host:port>) [--output <dir>] [-p N]`.
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
    #[arg(long, conflicts_with = "socket", required_unless_present = "socket")]
    pub input: Option<std::path::PathBuf>,
    /// host:port of a text server to read lines from (e.g. `nc -lk 7000`).
    #[arg(long)]
    pub socket: Option<String>,
    /// Write `<word> <count>` lines into part files in this directory
    /// (exactly once with checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
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
        (None, None) => unreachable!("clap requires one"),
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
    super::write_pairs(&counts, opts.output.as_deref());
    env.execute("WordCount")?;
    Ok(())
}
