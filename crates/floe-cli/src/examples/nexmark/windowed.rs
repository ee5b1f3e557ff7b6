//! The windowed queries: q5 (hot items).
//!
//! Each is the suite's SQL ported to DataStream windows as a Flink user
//! would write it. Where SQL and DataStream differ, Floe follows Flink's
//! DataStream semantics:
//!
//! - A window's rows leave once, when the watermark passes its end (the
//!   event-time trigger), not as the changelog of updates a SQL job's
//!   regular join or group-by would send: each split's times never go
//!   back, so no element is behind the suite's 4 s watermark and this one
//!   emission is the final result.
//!
//! Windows are reduced or aggregated as elements arrive (one counter or
//! one running maximum per window); elements are projected to what the
//! row needs before they enter a window, since a window operator stores
//! and copies what it is given.

use std::fmt::Write as _;
use std::time::Duration;

use floe::prelude::*;
use floe_nexmark::{Bid, Event};
use serde::{Deserialize, Serialize};

use super::{Row, bids};

/// The size of q5's windows (`INTERVAL '10' SECOND`).
const WINDOW: Duration = Duration::from_secs(10);
/// How often q5's sliding windows start (the SQL's `HOP` slide).
const HOT_ITEMS_SLIDE: Duration = Duration::from_secs(2);

/// An auction with the most bids of a sliding window (q5's row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HotItem {
    pub auction: u64,
    /// Bids on it in the window.
    pub num: u64,
}

/// An auction's bid count in one sliding window: q5's first stage, keyed
/// by the window's end for the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct AuctionWindowCount {
    auction: u64,
    num: u64,
    /// The window's end (exclusive), epoch ms: what identifies it.
    window_end: i64,
}

impl Row for HotItem {
    /// q5's columns: auction, num.
    fn write_line(&self, buf: &mut String) {
        let _ = write!(buf, "{},{}", self.auction, self.num);
    }
}

/// Counts a window's elements (SQL's `count(*)`).
#[derive(Debug, Clone, Copy, Default)]
struct CountAll;

impl AggregateFunction for CountAll {
    type In = u64;
    type Acc = u64;
    type Out = u64;

    fn create_accumulator(&self) -> u64 {
        0
    }

    #[inline]
    fn add(&self, _: u64, acc: &mut u64) {
        *acc += 1;
    }

    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }

    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Tags an auction's count with its window's end (q5's first stage).
#[derive(Debug, Clone, Copy)]
struct WithWindowEnd;

impl ProcessWindowFunction<u64, u64, AuctionWindowCount, TimeWindow> for WithWindowEnd {
    fn process(
        &mut self,
        auction: &u64,
        ctx: &mut WindowContext<'_, u64, TimeWindow>,
        counts: Vec<u64>,
        out: &mut Collector<'_, AuctionWindowCount>,
    ) -> anyhow::Result<()> {
        let window_end = ctx.window().end;
        for num in counts {
            out.collect(AuctionWindowCount {
                auction: *auction,
                num,
                window_end,
            });
        }
        Ok(())
    }
}

/// The elements with the largest value of a window, ties kept: q5's
/// auctions with the most bids.
struct MaxWithTies<T>(std::marker::PhantomData<fn(T)>);

impl<T> MaxWithTies<T> {
    /// The aggregate, for elements of type `T`.
    const fn new() -> Self {
        MaxWithTies(std::marker::PhantomData)
    }
}

impl<T> Clone for MaxWithTies<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for MaxWithTies<T> {}

/// What [`MaxWithTies`] orders by.
trait Ranked: floe::api::stream::Record {
    /// The value compared.
    fn rank(&self) -> u64;
}

impl Ranked for AuctionWindowCount {
    #[inline]
    fn rank(&self) -> u64 {
        self.num
    }
}

impl<T: Ranked> AggregateFunction for MaxWithTies<T> {
    type In = T;
    /// The elements sharing the largest rank so far (usually one).
    type Acc = Vec<T>;
    type Out = Vec<T>;

    fn create_accumulator(&self) -> Vec<T> {
        Vec::new()
    }

    #[inline]
    fn add(&self, value: T, acc: &mut Vec<T>) {
        match acc.first().map(Ranked::rank) {
            Some(max) if value.rank() < max => {}
            Some(max) if value.rank() == max => acc.push(value),
            _ => {
                acc.clear();
                acc.push(value);
            }
        }
    }

    fn get_result(&self, acc: &Vec<T>) -> Vec<T> {
        acc.clone()
    }

    fn merge(&self, mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
        for v in b {
            self.add(v, &mut a);
        }
        a
    }
}

/// Emits each element of a window's result list, unchanged or mapped.
#[derive(Clone, Copy)]
struct Flatten<F>(F);

impl<K, T, OUT, F> ProcessWindowFunction<K, Vec<T>, OUT, TimeWindow> for Flatten<F>
where
    K: floe::state::Key,
    T: Send + 'static,
    OUT: Send + 'static,
    F: Fn(T) -> OUT + Clone + Send + 'static,
{
    fn process(
        &mut self,
        _: &K,
        _: &mut WindowContext<'_, K, TimeWindow>,
        lists: Vec<Vec<T>>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        for v in lists.into_iter().flatten() {
            out.collect((self.0)(v));
        }
        Ok(())
    }
}

/// q5: per sliding window (10 s, every 2 s), the auctions with the most
/// bids, each with its count.
///
/// Bids are counted per auction and window as they arrive (sliding
/// windows kept per 2 s slice); each count leaves tagged with its window's
/// end when the window closes; a second stage keyed by that end keeps the
/// counts equal to the largest, in a window that closes as soon as all
/// first-stage results for the end have arrived.
pub fn q5(events: &DataStream<Event>) -> DataStream<HotItem> {
    bids(events)
        .map(|b: Bid| b.auction)
        .name("Auction")
        .uid("q5-auction")
        .key_by(|auction: &u64| *auction)
        .window(SlidingWindows::event_time(WINDOW, HOT_ITEMS_SLIDE))
        .aggregate_with(CountAll, WithWindowEnd)
        .name("Bids per Auction and Window")
        .uid("q5-count")
        .key_by(|c: &AuctionWindowCount| c.window_end)
        .window(TumblingWindows::event_time(HOT_ITEMS_SLIDE))
        .aggregate_with(
            MaxWithTies::<AuctionWindowCount>::new(),
            Flatten(|c: AuctionWindowCount| HotItem {
                auction: c.auction,
                num: c.num,
            }),
        )
        .name("Most Bids per Window")
        .uid("q5-max")
}
