//! The Nexmark benchmark's event stream for Floe: the generator and a
//! source.
//!
//! Nexmark models an online auction house: people register
//! ([`Person`]), open auctions ([`Auction`]) and bid ([`Bid`]), in the
//! proportions 1 : 3 : 46, with most auctions by a few hot sellers and most
//! bids on a few hot auctions by a few hot bidders. Its queries are the
//! common yardstick of stream processors; Floe runs them next to Flink's
//! harness (`bench/nexmark` in the shared tree), so this crate reproduces
//! the stream that harness generates rather than an approximation:
//!
//! - the same distributions, draw for draw: every field comes from a port
//!   of Java's `SplittableRandom` called in the order of the reference
//!   `PersonGenerator`, `AuctionGenerator` and `BidGenerator`, with their
//!   constants (ids from 1000, 5 categories, hot batches of 100, in-flight
//!   auctions, active people, `extra` padding to 200/500/100 bytes), and
//!   their quirks (bidder ids carry `FIRST_PERSON_ID` twice, channel 1's
//!   URL ends in `channel_id=-2147483648`);
//! - the same splits and event time as Flink's source: the stream of
//!   `events` is cut into one contiguous range of ids per generator
//!   ([`NexmarkConfig::splits`]), and every split has its own timeline
//!   starting at the base time and advancing `generators / tps` per event,
//!   so that together they run at `tps` and cover the same span. Results
//!   of time-based queries therefore depend on the number of generators,
//!   as Flink's do.
//!
//! Where Flink's generator is not reproducible, this one is: it draws
//! each event from its own random seeded by the configuration's seed and
//! the event id (the reference draws from one unseeded random per
//! generator), and its one-off tables (the string `extra` is cut from, the
//! URLs) from the seed too; and its base time is fixed by default (the
//! harness takes the wall clock). An event is thus a pure function of the
//! configuration, its split and its position, which is what makes the
//! source rewindable and lets tests recompute the stream
//! ([`NexmarkGenerator::events`]).
//!
//! # Checking against the Java generator
//!
//! `java/check.sh` (needs a JDK and the Flink jars the harness installs;
//! not part of CI) compiles `java/NexmarkDump.java` against the harness's
//! generator classes, feeds them per-event randoms seeded as ours, and
//! diffs their events with `cargo run -p floe-nexmark --example dump`:
//! every field but the contents of `extra` and `url` (drawn from tables the
//! JVM fills from an unseeded random) must match. Last run (OpenJDK 17,
//! the harness at its `UPSTREAM_COMMIT`): 200,000 events with 1 and 3
//! generators, and 1,000,000 events with 2 generators, seed 7 and
//! `tps` 10,000: identical, line for line.

mod config;
mod error;
mod generator;
mod model;
mod random;
mod source;

pub use config::{DEFAULT_BASE_TIME_MS, DEFAULT_TPS, NexmarkConfig, Split};
pub use error::NexmarkError;
pub use generator::NexmarkGenerator;
pub use model::{Auction, Bid, Event, EventKind, Person};
pub use source::{NexmarkSource, OUT_OF_ORDERNESS, watermark_strategy};
