//! What the stream looks like: how many events, how fast event time
//! advances, the proportions and skews, and how it is cut into splits.
//!
//! The defaults are the official suite's (`NexmarkConfiguration`, and the
//! `nexmark` table source as Flink's harness creates it: first event id 1,
//! first event number 1, as many generators as source subtasks).

use serde::{Deserialize, Serialize};

use crate::error::NexmarkError;

/// The event number of a split's first event. Flink's table source starts
/// every split at 1, so the first event of a split has time
/// `base + 1 × delay` and id `first_event_id + 1`.
pub(crate) const FIRST_EVENT_NUMBER: u64 = 1;

/// The official suite's default event-time rate (`nexmark.yaml`'s `TPS`).
pub const DEFAULT_TPS: u32 = 10_000_000;

/// 2015-07-15T00:00:00Z, the reference generator's fixed base time (Flink's
/// harness uses the wall clock instead, which makes runs differ; a fixed
/// one keeps ours reproducible).
pub const DEFAULT_BASE_TIME_MS: i64 = 1_436_918_400_000;

/// Everything that determines the generated stream.
///
/// Two runs with equal configurations (and the same number of generators)
/// produce identical events; the defaults give the official suite's
/// distributions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexmarkConfig {
    /// Events in total, over all splits; 0 means unbounded (as in the
    /// suite: as many as internal counters allow).
    pub events: u64,
    /// Events per second of event time, all generators together (the
    /// suite's `TPS`, `first-event.rate`): only spaces timestamps, it does
    /// not pace emission.
    pub tps: u32,
    /// The number of splits (Flink's `numEventGenerators`); `None` means
    /// one per source subtask, as Flink's harness does.
    pub generators: Option<u32>,
    /// Seeds every field drawn at random (the official generator is
    /// unseeded; see the crate docs).
    pub seed: u64,
    /// Event time of event number 0, epoch ms.
    pub base_time_ms: i64,
    /// Added to every event number to make its id (Flink's table source
    /// uses 1).
    pub first_event_id: u64,
    /// Persons per `person + auction + bid` events.
    pub person_proportion: u32,
    /// Auctions per `person + auction + bid` events.
    pub auction_proportion: u32,
    /// Bids per `person + auction + bid` events.
    pub bid_proportion: u32,
    /// A bid is for a hot auction with probability `1 - 1/ratio`.
    pub hot_auction_ratio: u32,
    /// An auction is by a hot seller with probability `1 - 1/ratio`.
    pub hot_sellers_ratio: u32,
    /// A bid is by a hot bidder with probability `1 - 1/ratio`.
    pub hot_bidders_ratio: u32,
    /// Auctions in flight at once, per generator (bids pick among the
    /// latest this many).
    pub num_in_flight_auctions: u32,
    /// People considered active (sellers and bidders pick among the latest
    /// this many).
    pub num_active_people: u32,
    /// Average size of a person, bytes (the `extra` field pads to it).
    pub avg_person_byte_size: u32,
    /// Average size of an auction, bytes.
    pub avg_auction_byte_size: u32,
    /// Average size of a bid, bytes.
    pub avg_bid_byte_size: u32,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: 0,
            tps: DEFAULT_TPS,
            generators: None,
            seed: 0,
            base_time_ms: DEFAULT_BASE_TIME_MS,
            first_event_id: 1,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            num_in_flight_auctions: 100,
            num_active_people: 1000,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
        }
    }
}

impl NexmarkConfig {
    /// The suite's defaults with `events` events.
    pub fn new(events: u64) -> Self {
        NexmarkConfig {
            events,
            ..Default::default()
        }
    }

    /// Sets the event-time rate.
    pub fn with_tps(mut self, tps: u32) -> Self {
        self.tps = tps;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Fixes the number of splits (instead of one per source subtask).
    pub fn with_generators(mut self, generators: u32) -> Self {
        self.generators = Some(generators);
        self
    }

    /// Checks every value the generator divides by or draws below.
    pub fn validate(&self) -> Result<(), NexmarkError> {
        let positive = [
            ("tps", self.tps),
            ("person_proportion", self.person_proportion),
            ("auction_proportion", self.auction_proportion),
            ("bid_proportion", self.bid_proportion),
            ("hot_auction_ratio", self.hot_auction_ratio),
            ("hot_sellers_ratio", self.hot_sellers_ratio),
            ("hot_bidders_ratio", self.hot_bidders_ratio),
            ("num_active_people", self.num_active_people),
            ("generators", self.generators.unwrap_or(1)),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(NexmarkError::Config {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        // Java's ints: the generator draws `nextInt(bound)` below these.
        let ints = [
            ("tps", self.tps),
            ("hot_auction_ratio", self.hot_auction_ratio),
            ("hot_sellers_ratio", self.hot_sellers_ratio),
            ("hot_bidders_ratio", self.hot_bidders_ratio),
            ("num_active_people", self.num_active_people),
            ("num_in_flight_auctions", self.num_in_flight_auctions),
        ];
        for (field, value) in ints {
            if value > i32::MAX as u32 / 2 {
                return Err(NexmarkError::Config {
                    field,
                    reason: format!("{value} is too large (at most {})", i32::MAX / 2),
                });
            }
        }
        if u64::from(self.total_proportion()) > 1 << 20 {
            return Err(NexmarkError::Config {
                field: "person_proportion + auction_proportion + bid_proportion",
                reason: "must be at most 1,048,576".into(),
            });
        }
        Ok(())
    }

    /// `person + auction + bid` proportions: one "epoch" of event ids.
    pub fn total_proportion(&self) -> u32 {
        self.person_proportion + self.auction_proportion + self.bid_proportion
    }

    /// The events to generate in all: `events`, or for an unbounded stream
    /// the reference generator's cap (`Long.MAX_VALUE / (total proportion
    /// × largest average size)`).
    pub fn max_events(&self) -> u64 {
        if self.events > 0 {
            return self.events;
        }
        let biggest = self
            .avg_person_byte_size
            .max(self.avg_auction_byte_size)
            .max(self.avg_bid_byte_size)
            .max(1);
        i64::MAX as u64 / (u64::from(self.total_proportion()) * u64::from(biggest))
    }

    /// The splits for `generators` parallel generators, as Flink's
    /// `GeneratorConfig.split(n)` cuts them: contiguous ranges of event ids
    /// (the last one takes the remainder), each on its own event-time
    /// timeline that starts at the base time and advances `generators`
    /// times slower than `tps`, so that all splits together produce `tps`
    /// events per second of event time and cover the same span.
    pub fn splits(&self, generators: u32) -> Vec<Split> {
        let n = u64::from(generators.max(1));
        let max = self.max_events();
        let sub = max / n;
        (0..n)
            .map(|i| Split {
                index: i as u32,
                first_event_id: self.first_event_id + i * sub,
                events: if i == n - 1 { max - sub * (n - 1) } else { sub },
                generators: n as u32,
            })
            .collect()
    }
}

/// One generator's share of the stream: a contiguous range of event ids
/// on its own event-time timeline.
///
/// Event `k` (from 0) of the split has event number `1 + k` on the
/// timeline (its time is `base + (1 + k) × generators / tps`) and id
/// `first_event_id + 1 + k` (its kind and every random field derive from
/// the id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Split {
    /// Its position among the splits it was cut with.
    pub index: u32,
    /// Flink's per-split `firstEventId`.
    pub first_event_id: u64,
    /// Events in the split.
    pub events: u64,
    /// How many splits the stream was cut into (sets the timeline's pace).
    pub generators: u32,
}

impl Split {
    /// The id of the split's event `k`.
    #[inline]
    pub fn event_id(&self, k: u64) -> u64 {
        self.first_event_id + FIRST_EVENT_NUMBER + k
    }
}
