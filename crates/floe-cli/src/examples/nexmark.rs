//! The Nexmark queries that need no windows:
//! `floe run nexmark --query q0|q1|q2 --events N [--tps T] [--seed S]
//! [--rate R] [--output <dir>] [-p N]`.
//!
//! Each query is written with the public DataStream API as a Flink user
//! would write it against the official suite's SQL (`queries/q*.sql` in
//! the shared Nexmark harness), over the stream of [`floe_nexmark`]'s
//! source with the suite's event time (date_time, 4 s out of orderness):
//!
//! - q0, pass-through: every bid;
//! - q1, currency conversion: every bid with its price in euros,
//!   `0.908 * price` exactly (the SQL's `DECIMAL(23, 3)`);
//! - q2, selection: `(auction, price)` of the bids whose auction id is a
//!   multiple of 123.
//!
//! Rows print as the SQL's columns, comma-separated; with `--output` they
//! go to part files through the exactly-once file sink.

use std::fmt::Write as _;
use std::path::Path;

use clap::{Parser, ValueEnum};
use floe::JobArgs;
use floe::prelude::*;
use floe_nexmark::{Bid, Event, NexmarkConfig, NexmarkSource, watermark_strategy};
use serde::{Deserialize, Serialize};

/// A query of the suite (the ones without windows so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Query {
    /// Pass-through of bids.
    Q0,
    /// Currency conversion: bid prices in euros.
    Q1,
    /// Selection: bids on every 123rd auction.
    Q2,
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
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

/// A bid with its price converted to euros (q1's row).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EuroBid {
    pub auction: u64,
    pub bidder: u64,
    /// `0.908 × price` in thousandths of a cent: the SQL's exact
    /// `DECIMAL(23, 3)`.
    pub price_milli: u64,
    pub date_time: i64,
    pub extra: String,
}

/// What q1 converts with: `0.908 * price`, as thousandths.
pub const DOLLAR_TO_EURO_MILLI: u64 = 908;

/// An auction and a bid's price (q2's row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuctionPrice {
    pub auction: u64,
    pub price: u64,
}

/// A query's result row, printed as the SQL's columns.
pub trait Row: floe::api::stream::Record {
    /// Appends the row's line (without a newline).
    fn write_line(&self, buf: &mut String);
}

impl Row for Bid {
    /// q0's columns: auction, bidder, price, dateTime, extra.
    fn write_line(&self, buf: &mut String) {
        let _ = write!(
            buf,
            "{},{},{},{},{}",
            self.auction, self.bidder, self.price, self.date_time, self.extra
        );
    }
}

impl Row for EuroBid {
    fn write_line(&self, buf: &mut String) {
        let _ = write!(
            buf,
            "{},{},{}.{:03},{},{}",
            self.auction,
            self.bidder,
            self.price_milli / 1000,
            self.price_milli % 1000,
            self.date_time,
            self.extra
        );
    }
}

impl Row for AuctionPrice {
    fn write_line(&self, buf: &mut String) {
        let _ = write!(buf, "{},{}", self.auction, self.price);
    }
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

/// q0: every bid, unchanged.
pub fn q0(events: &DataStream<Event>) -> DataStream<Bid> {
    bids(events)
}

/// q1: every bid with its price in euros.
pub fn q1(events: &DataStream<Event>) -> DataStream<EuroBid> {
    bids(events)
        .map(|b: Bid| EuroBid {
            auction: b.auction,
            bidder: b.bidder,
            price_milli: b.price * DOLLAR_TO_EURO_MILLI,
            date_time: b.date_time,
            extra: b.extra,
        })
        .name("Dollars to Euros")
        .uid("q1-convert")
}

/// q2: `(auction, price)` of the bids on auctions whose id is a multiple
/// of 123.
pub fn q2(events: &DataStream<Event>) -> DataStream<AuctionPrice> {
    bids(events)
        .filter(|b: &Bid| b.auction % 123 == 0)
        .name("Every 123rd Auction")
        .uid("q2-filter")
        .map(|b: Bid| AuctionPrice {
            auction: b.auction,
            price: b.price,
        })
        .name("Auction and Price")
        .uid("q2-project")
}

/// Writes a query's rows: to part files in `output` through the
/// exactly-once [`FileSink`], or to stdout.
pub fn write_rows<T: Row>(rows: &DataStream<T>, output: Option<&Path>) {
    let format = LineFormat::new(|row: &T, buf: &mut String| row.write_line(buf));
    match output {
        Some(dir) => rows
            .sink_to(FileSink::for_row_format(dir, format).build(), "File Sink")
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
    match opts.query {
        Query::Q0 => write_rows(&q0(&events), out),
        Query::Q1 => write_rows(&q1(&events), out),
        Query::Q2 => write_rows(&q2(&events), out),
    }
    env.execute(&format!("Nexmark {}", opts.query))?;
    Ok(())
}
