//! The seed's BufferingSink: a sink that buffers records and hands them on
//! in blocks of `threshold`, keeping the buffer in operator `ListState` so a
//! failure loses nothing that was buffered at the last checkpoint.
//!
//! `floe run buffering-sink --records N [--threshold T] [--rate R]
//! [--output <file>] [-p N]`: the records are the numbers `0..N`; each
//! block is appended to `<file>` (or printed) as one line per record. The
//! sink is at-least-once: after a failure, blocks sent after the restored
//! checkpoint are sent again.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "buffering-sink",
    about = "Buffers records in a sink, kept in operator ListState"
)]
pub struct Args {
    /// Number of records (the numbers 0..N).
    #[arg(long)]
    pub records: u64,
    /// Records per block.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub threshold: u64,
    /// Limit the source to this many records per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Append blocks to this file instead of printing them.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

/// Buffers records and sends them in blocks; the buffer is operator state.
#[derive(Clone)]
pub struct BufferingSink<T> {
    threshold: usize,
    output: Option<std::path::PathBuf>,
    buffer: Vec<T>,
    state: Option<OperatorListState<T>>,
    /// Elements restored from a checkpoint when the subtask started.
    pub restored: usize,
}

impl<T> BufferingSink<T> {
    /// A sink sending blocks of `threshold` to `output` (or stdout).
    pub fn new(threshold: usize, output: Option<std::path::PathBuf>) -> Self {
        BufferingSink {
            threshold,
            output,
            buffer: Vec::new(),
            state: None,
            restored: 0,
        }
    }
}

impl<T: std::fmt::Display> BufferingSink<T> {
    /// Sends the buffered block and empties the buffer.
    fn send(&mut self) -> anyhow::Result<()> {
        let mut block = String::new();
        for r in self.buffer.drain(..) {
            block.push_str(&r.to_string());
            block.push('\n');
        }
        match &self.output {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(block.as_bytes()))
                .with_context(|| format!("cannot append to {}", path.display())),
            None => Ok(std::io::stdout().lock().write_all(block.as_bytes())?),
        }
    }
}

impl<T: floe::state::StateValue + std::fmt::Display> SinkWriter<T> for BufferingSink<T> {
    fn write(&mut self, value: T) -> anyhow::Result<()> {
        self.buffer.push(value);
        if self.buffer.len() >= self.threshold {
            self.send()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        Some(self)
    }
}

impl<T: floe::state::StateValue + std::fmt::Display> CheckpointedFunction for BufferingSink<T> {
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        let state = ctx
            .operator_state_store()
            .get_list_state(&ListStateDescriptor::new("buffered-elements"))?;
        if ctx.is_restored() {
            self.buffer.extend(state.get(ctx)?.iter().cloned());
            self.restored = self.buffer.len();
        }
        self.state = Some(state);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        let state = self.state.as_ref().expect("initialized");
        state.update(ctx, self.buffer.clone())?;
        Ok(())
    }
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("buffering-sink", &args);
    if opts.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        anyhow::bail!("--rate must be a positive number of records per second");
    }
    let env = StreamEnvironment::from_job_args(&args);
    let source = GeneratorSource::new(opts.records, |i| i);
    let source = match opts.rate {
        Some(r) => source.with_rate(r),
        None => source,
    };
    env.from_source(source, "Numbers")
        .uid("numbers")
        .sink_to(
            BufferingSink::<u64>::new(opts.threshold as usize, opts.output),
            "Buffering Sink",
        )
        .uid("buffering-sink");
    env.execute("BufferingSink")?;
    Ok(())
}
