//! The Nexmark queries: `floe run nexmark --query qN --events N [--tps T]
//! [--seed S] [--rate R] [--output <dir>] [-p N]`.
//!
//! Each query is written with the public DataStream API as a Flink user
//! would write it against the official suite's SQL (`queries/q*.sql` in
//! the shared Nexmark harness), over the stream of [`floe_nexmark`]'s
//! source with the suite's event time (date_time, 4 s out of orderness).
//! The queries live in one module per kind ([`simple`]: no state;
//! [`joins`]: regular joins with connected streams); this
//! module holds what they share: the query names, the source, the bids
//! view, how rows print, and [`build`], which both `floe run nexmark` and
//! `floe bench nexmark` go through so that they run the same job.
//!
//! Rows print as the SQL's columns, comma-separated; with `--output` they
//! go to part files through the exactly-once file sink.

mod joins;
mod simple;
mod windowed;

pub use joins::*;
pub use simple::*;
pub use windowed::*;

use std::path::Path;

use clap::{Parser, ValueEnum};
use floe::JobArgs;
use floe::api::stream::Record;
use floe::prelude::*;
use floe_nexmark::{Bid, Event, NexmarkConfig, NexmarkSource, watermark_strategy};

/// A query of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Query {
    /// Pass-through of bids.
    Q0,
    /// Currency conversion: bid prices in euros.
    Q1,
    /// Selection: bids on every 123rd auction.
    Q2,
    /// Local item suggestion: category-10 auctions of sellers in OR, ID, CA.
    Q3,
    /// Average winning price per category.
    Q4,
    /// Hot items: the auctions with the most bids per sliding window.
    Q5,
    /// Highest bid: the bids with the highest price per window.
    Q7,
    /// Monitor new users: persons who open an auction in the window they
    /// registered in.
    Q8,
    /// Winning bid of each auction.
    Q9,
    /// User sessions: bids per bidder and session.
    Q11,
    /// Bids per bidder and processing-time window.
    Q12,
}

impl Query {
    /// Whether its rows carry event times (every query but q12, whose
    /// windows are on the wall clock): what the benchmark's latency needs.
    pub fn has_event_time_rows(self) -> bool {
        self != Query::Q12
    }
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
            Query::Q4 => "q4",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Q9 => "q9",
            Query::Q11 => "q11",
            Query::Q12 => "q12",
        })
    }
}

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "nexmark",
    about = "Nexmark queries over the generated auction stream"
)]
pub struct Args {
    /// The query.
    #[arg(long, value_enum)]
    pub query: Query,
    /// Events to generate (persons, auctions and bids, 1 : 3 : 46).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Events per second of event time, all source subtasks together
    /// (spaces the timestamps; emission is as fast as possible).
    #[arg(long, default_value_t = floe_nexmark::DEFAULT_TPS,
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64 / 2))]
    pub tps: u32,
    /// Seed of the generated fields.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Emit at most this many events per second of wall-clock time in all.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the rows into part files in this directory (exactly once with
    /// checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

/// A query's result row, printed as the SQL's columns.
pub trait Row: floe::api::stream::Record {
    /// Appends the row's line (without a newline).
    fn write_line(&self, buf: &mut String);
}

/// The generated stream with the suite's event time.
pub fn events(
    env: &StreamEnvironment,
    config: NexmarkConfig,
    rate: Option<f64>,
) -> anyhow::Result<DataStream<Event>> {
    let mut source = NexmarkSource::new(config)?;
    if let Some(rate) = rate {
        source = source.with_rate(rate)?;
    }
    Ok(env
        .from_source_with_watermarks(source, watermark_strategy(), "Nexmark Source")
        .uid("nexmark-source"))
}

/// The bids of the stream (the suite's `bid` view).
pub fn bids(events: &DataStream<Event>) -> DataStream<Bid> {
    events
        .flat_map(|e: Event, out: &mut Collector<'_, Bid>| {
            if let Event::Bid(b) = e {
                out.collect(b)
            }
        })
        .name("Bids")
        .uid("bids")
}

/// Where [`split`] sends an event.
pub enum Pick<A, B> {
    /// To the first stream.
    First(A),
    /// To the second stream.
    Second(B),
    /// Nowhere.
    Neither,
}

/// The process function behind [`split`].
struct Split<A, B> {
    second: OutputTag<B>,
    pick: fn(Event) -> Pick<A, B>,
}

impl<A, B> Clone for Split<A, B> {
    fn clone(&self) -> Self {
        Split {
            second: self.second.clone(),
            pick: self.pick,
        }
    }
}

impl<A: Record, B: Record> ProcessFunction<Event, A> for Split<A, B> {
    #[inline]
    fn process_element(
        &mut self,
        event: Event,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, A>,
    ) -> anyhow::Result<()> {
        match (self.pick)(event) {
            Pick::First(a) => out.collect(a),
            Pick::Second(b) => ctx.output(&self.second, b)?,
            Pick::Neither => {}
        }
        Ok(())
    }
}

/// Two streams out of the events in one pass, `pick` choosing (and
/// cutting down) what goes where: the first on the main output, the
/// second on a side output. Two `flat_map`s over the events would each get
/// a copy of every event (a stream with two consumers clones its records
/// for all but the last), strings and all, only to drop most of them.
pub fn split<A: Record, B: Record>(
    events: &DataStream<Event>,
    name: &str,
    pick: fn(Event) -> Pick<A, B>,
) -> (DataStream<A>, DataStream<B>) {
    let function = Split {
        second: OutputTag::new(&format!("{name}-second")),
        pick,
    };
    let first = events.process(function.clone()).name(name).uid(name);
    let second = first.side_output(&function.second);
    (first, second)
}

/// What to do with a query's rows, whatever their type: write them (`floe
/// run`) or count them (`floe bench`).
pub trait RowsSink {
    /// Adds the sink to the job.
    fn accept<T: Row>(self, rows: DataStream<T>);
}

/// Builds `query` over `events` and hands its rows to `sink`.
pub fn build(query: Query, events: &DataStream<Event>, sink: impl RowsSink) {
    match query {
        Query::Q0 => sink.accept(q0(events)),
        Query::Q1 => sink.accept(q1(events)),
        Query::Q2 => sink.accept(q2(events)),
        Query::Q3 => sink.accept(q3(events)),
        Query::Q4 => sink.accept(q4(events)),
        Query::Q5 => sink.accept(q5(events)),
        Query::Q7 => sink.accept(q7(events)),
        Query::Q8 => sink.accept(q8(events)),
        Query::Q9 => sink.accept(q9(events)),
        Query::Q11 => sink.accept(q11(events)),
        Query::Q12 => sink.accept(q12(events)),
    }
}

/// Rows to part files in a directory, or to stdout (see [`write_rows`]).
pub struct WriteRows<'a>(pub Option<&'a Path>);

impl RowsSink for WriteRows<'_> {
    fn accept<T: Row>(self, rows: DataStream<T>) {
        write_rows(&rows, self.0);
    }
}

/// Writes a query's rows: to part files in `output` through the
/// exactly-once [`FileSink`] (rolling on every checkpoint), or to stdout.
pub fn write_rows<T: Row>(rows: &DataStream<T>, output: Option<&Path>) {
    let format = LineFormat::new(|row: &T, buf: &mut String| row.write_line(buf));
    match output {
        Some(dir) => rows
            .sink_to(
                crate::examples::FileSinkArgs::default().sink(dir, format),
                "File Sink",
            )
            .uid("file-sink"),
        None => rows
            .sink_to(StdoutSink::with_format(format), "Print to Std. Out")
            .uid("stdout-sink"),
    };
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("nexmark", &args);
    if opts.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        anyhow::bail!("--rate must be a positive number of events per second");
    }
    let env = StreamEnvironment::from_job_args(&args);
    let config = NexmarkConfig::new(opts.events)
        .with_tps(opts.tps)
        .with_seed(opts.seed);
    let events = events(&env, config, opts.rate)?;
    let out = opts.output.as_deref();
    build(opts.query, &events, WriteRows(out));
    env.execute(&format!("Nexmark {}", opts.query))?;
    Ok(())
}
