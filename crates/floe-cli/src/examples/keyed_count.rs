//! Keyed running count: `floe run keyed-count --records N --keys K [--rate R] [--output <path> [--roll-size B] [--bucket-format P] [--compact-threshold B] [--compact-every N] | --print [stdout|stderr]] [--count-type u64|u32] [-p N]`.
//!
//! Generates N records with key `i mod K` (u64), counts per key in a
//! `ValueState<u64>` named `count`, and writes `<key> <count>` per update
//! (`--print`: the `(key, count)` tuples as `DataStream::print()` shows
//! them, `<subtask>> (key, count)` at a parallelism above 1).
//! `--count-type u32` declares the count as `ValueState<u32>` instead: a
//! savepoint of the `u64` count is then refused (see
//! `docs/state-evolution.md`), which shows the state schema check.
//! The state is queryable as `count` when the job runs with
//! `queryable-state.enable: true` (`floe query <jobId> count <key>`).

use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "keyed-count",
    about = "Running count per key over generated records"
)]
pub struct Args {
    /// Number of records to generate.
    #[arg(long)]
    pub records: u64,
    /// Number of distinct keys (key = i mod K).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Limit the source to this many records per second in total.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write `<key> <count>` lines into part files in this directory
    /// (exactly once with checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
    /// How `--output` rolls and buckets part files.
    #[command(flatten)]
    pub file_sink: super::FileSinkArgs,
    /// Print the `(key, count)` tuples with `print()` (or `print_to_err()`
    /// for `stderr`), as a Flink job would, instead of `<key> <count>`.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "stdout", conflicts_with = "output")]
    pub print: Option<PrintTarget>,
    /// Drop the counts instead of writing them (a benchmark's sink, like
    /// Flink's `DiscardingSink`: the run measures the keyed count alone).
    #[arg(long, conflicts_with_all = ["output", "print"])]
    pub discard: bool,
    /// The type the `count` state is declared with (`u32`: a narrower
    /// type, which a savepoint of the default `u64` count refuses).
    #[arg(long, value_enum, default_value_t = CountType::U64)]
    pub count_type: CountType,
}

/// Drops every record (Flink's `DiscardingSink`).
#[derive(Debug, Clone, Copy)]
struct Discard;

impl<T: Send + 'static> SinkWriter<T> for Discard {
    fn write(&mut self, _value: T) -> anyhow::Result<()> {
        Ok(())
    }

    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        batch.clear();
        Ok(())
    }
}

/// The declared type of the `count` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CountType {
    /// `ValueState<u64>`, the job's type.
    U64,
    /// `ValueState<u32>`: an incompatible change of the job's type.
    U32,
}

/// Where `--print` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintTarget {
    /// `DataStream::print()`.
    Stdout,
    /// `DataStream::print_to_err()`.
    Stderr,
}

/// Counts records per key in a `ValueState<u64>` named `count` and emits
/// `(key, count)` after every update.
#[derive(Clone)]
pub struct CountPerKey {
    count: ValueState<u64>,
}

impl Default for CountPerKey {
    fn default() -> Self {
        let count = ValueStateDescriptor::new("count").set_queryable("count");
        CountPerKey {
            count: ValueState::from_descriptor(count),
        }
    }
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for CountPerKey {
    #[inline]
    fn process_element(
        &mut self,
        (key, value): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        let state = &self.count;
        let count = state.value(ctx)?.unwrap_or(0) + value;
        state.update(ctx, count)?;
        out.collect((key, count));
        Ok(())
    }
}

/// [`CountPerKey`] with the count declared as `ValueState<u32>`: the job
/// after an incompatible change of its state's type.
#[derive(Clone)]
pub struct NarrowCountPerKey {
    count: ValueState<u32>,
}

impl Default for NarrowCountPerKey {
    fn default() -> Self {
        NarrowCountPerKey {
            count: ValueState::new("count"),
        }
    }
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for NarrowCountPerKey {
    fn process_element(
        &mut self,
        (key, value): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        let state = &self.count;
        let count = state.value(ctx)?.unwrap_or(0) + u32::try_from(value)?;
        state.update(ctx, count)?;
        out.collect((key, u64::from(count)));
        Ok(())
    }
}

/// The generated input: N records `(i mod K, 1)`.
pub fn source(records: u64, keys: u64, rate: Option<f64>) -> GeneratorSource<(u64, u64)> {
    let s = GeneratorSource::new(records, move |i| (i % keys, 1u64));
    match rate {
        Some(r) => s.with_rate(r),
        None => s,
    }
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("keyed-count", &args);
    if opts.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        anyhow::bail!("--rate must be a positive number of records per second");
    }
    let env = StreamEnvironment::from_job_args(&args);
    let keyed = env
        .from_source(source(opts.records, opts.keys, opts.rate), "Generator")
        .uid("generator")
        .key_by(|(k, _): &(u64, u64)| *k);
    let counts = match opts.count_type {
        CountType::U64 => keyed.process(CountPerKey::default()),
        CountType::U32 => keyed.process(NarrowCountPerKey::default()),
    }
    .name("Count per Key")
    .uid("count-per-key");
    match opts.print {
        None if opts.discard => {
            counts.sink_to(Discard, "Discard");
        }
        Some(PrintTarget::Stdout) => {
            counts.print();
        }
        Some(PrintTarget::Stderr) => {
            counts.print_to_err();
        }
        None => super::write_pairs_with(&counts, opts.output.as_deref(), &opts.file_sink),
    }
    env.execute("KeyedCount")?;
    Ok(())
}
