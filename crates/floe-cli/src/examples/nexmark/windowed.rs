//! The windowed queries: q5 (hot items), q7 (highest bid), q8 (monitor
//! new users), q11 (user sessions) and q12 (processing-time windows).
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
//! - Windows are half-open, `[start, end)`. q7's SQL matches bids `BETWEEN
//!   window_end - 10 s AND window_end`, both ends included, so a bid at
//!   exactly a window's end (the first millisecond of the next window) is
//!   also compared with the previous window's maximum. Floe's q7 compares
//!   each bid with its own window's maximum only, as the query means
//!   ("the highest bids of each window") and as a windowed DataStream job
//!   does; a bid at a boundary whose price also equals the previous
//!   window's maximum is the only row that differs.
//! - q12's processing-time windows still open when a bounded input ends
//!   fire then ([`ProcessingTimeOrEndOfInput`]); Flink's streaming mode
//!   drops them (it quiesces processing-time timers at the end of input),
//!   which would leave a benchmark's last windows uncounted.
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

use super::{Pick, Row, bids, split};

/// The size of q5's, q7's, q8's and q12's windows (the SQL's `INTERVAL
/// '10' SECOND`).
const WINDOW: Duration = Duration::from_secs(10);
/// How often q5's sliding windows start (the SQL's `HOP` slide).
const HOT_ITEMS_SLIDE: Duration = Duration::from_secs(2);
/// q11's session gap: a bidder's session ends 10 s after its last bid.
const SESSION_GAP: Duration = Duration::from_secs(10);

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

/// A bid with the highest price of its window (q7's row), its columns in
/// the order the SQL's `SELECT` writes them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HighestBid {
    pub auction: u64,
    pub price: u64,
    pub bidder: u64,
    pub date_time: i64,
    pub extra: String,
}

/// A person who opened an auction in the window they registered in (q8's
/// row).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NewUser {
    pub id: u64,
    pub name: String,
    /// The window's start, epoch ms.
    pub start: i64,
}

/// A bidder's bids in one window (q11's sessions, q12's processing-time
/// windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BidderCount {
    pub bidder: u64,
    pub bid_count: u64,
    /// The window's start, epoch ms.
    pub start: i64,
    /// The window's end (exclusive), epoch ms; for a session, its last
    /// bid plus the gap (SQL's `SESSION_END`).
    pub end: i64,
}

impl Row for HotItem {
    /// q5's columns: auction, num.
    fn write_line(&self, buf: &mut String) {
        let _ = write!(buf, "{},{}", self.auction, self.num);
    }
}

impl Row for HighestBid {
    /// q7's columns as its SQL selects them: auction, price, bidder,
    /// dateTime, extra. (The sink table names its second and third
    /// columns `bidder, price`; the `INSERT` fills them by position.)
    fn write_line(&self, buf: &mut String) {
        let _ = write!(
            buf,
            "{},{},{},{},{}",
            self.auction, self.price, self.bidder, self.date_time, self.extra
        );
    }
}

impl Row for NewUser {
    /// q8's columns: id, name, stime.
    fn write_line(&self, buf: &mut String) {
        let _ = write!(buf, "{},{},{}", self.id, self.name, self.start);
    }
}

impl Row for BidderCount {
    /// q11's and q12's columns: bidder, bid_count, starttime, endtime.
    fn write_line(&self, buf: &mut String) {
        let _ = write!(
            buf,
            "{},{},{},{}",
            self.bidder, self.bid_count, self.start, self.end
        );
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
/// auctions with the most bids, q7's bids with the highest price.
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

impl Ranked for HighestBid {
    #[inline]
    fn rank(&self) -> u64 {
        self.price
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

/// Tags a bidder's count with its window (q11, q12).
#[derive(Debug, Clone, Copy)]
struct WithWindow;

impl ProcessWindowFunction<u64, u64, BidderCount, TimeWindow> for WithWindow {
    fn process(
        &mut self,
        bidder: &u64,
        ctx: &mut WindowContext<'_, u64, TimeWindow>,
        counts: Vec<u64>,
        out: &mut Collector<'_, BidderCount>,
    ) -> anyhow::Result<()> {
        let w = *ctx.window();
        for bid_count in counts {
            out.collect(BidderCount {
                bidder: *bidder,
                bid_count,
                start: w.start,
                end: w.end,
            });
        }
        Ok(())
    }
}

/// Fires a processing-time window at its end, as [`ProcessingTimeTrigger`]
/// does, and also at the end of a bounded input, so that no window still
/// open then is lost (q12).
///
/// The end of input is the final watermark (`i64::MAX`, which a source
/// sends when it is done and a stop with drain sends too): the trigger
/// sets an event-time timer there for each window. Flink's streaming
/// runtime, which quiesces processing-time timers when the input ends,
/// would drop those windows; a Flink job can keep them the same way, with a
/// trigger that registers `Long.MAX_VALUE`. The window is purged when it
/// fires there, so a processing-time timer due at the same moment fires
/// nothing more.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessingTimeOrEndOfInput;

/// The final watermark: every event-time timer is due.
const END_OF_INPUT: i64 = i64::MAX;

impl<T> Trigger<T, TimeWindow> for ProcessingTimeOrEndOfInput {
    #[inline]
    fn on_element<C: TriggerContext>(
        &mut self,
        _: &T,
        _: i64,
        window: &TimeWindow,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        ctx.register_processing_time_timer(window.max_timestamp())?;
        ctx.register_event_time_timer(END_OF_INPUT)?;
        Ok(TriggerResult::Continue)
    }

    fn on_processing_time<C: TriggerContext>(
        &mut self,
        _: i64,
        _: &TimeWindow,
        _: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(TriggerResult::Fire)
    }

    fn on_event_time<C: TriggerContext>(
        &mut self,
        time: i64,
        _: &TimeWindow,
        _: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(if time == END_OF_INPUT {
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        })
    }

    fn clear<C: TriggerContext>(&mut self, window: &TimeWindow, ctx: &mut C) -> anyhow::Result<()> {
        ctx.delete_processing_time_timer(window.max_timestamp())?;
        ctx.delete_event_time_timer(END_OF_INPUT)
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

/// q7: per tumbling 10 s window, the bids with the highest price.
///
/// In two stages so that no one subtask sees every bid: per auction and
/// window the highest-priced bids (ties kept), then over the whole stream
/// (`window_all`) the highest of those. The first stage's results carry
/// their window's end as timestamp, so they fall in the same window of
/// the second.
pub fn q7(events: &DataStream<Event>) -> DataStream<HighestBid> {
    bids(events)
        .map(|b: Bid| HighestBid {
            auction: b.auction,
            price: b.price,
            bidder: b.bidder,
            date_time: b.date_time,
            extra: b.extra,
        })
        .name("Bid Columns")
        .uid("q7-project")
        .key_by(|b: &HighestBid| b.auction)
        .window(TumblingWindows::event_time(WINDOW))
        .aggregate_with(MaxWithTies::<HighestBid>::new(), Flatten(|b| b))
        .name("Highest Bids per Auction")
        .uid("q7-partial-max")
        .window_all(TumblingWindows::event_time(WINDOW))
        .aggregate_with(MaxWithTies::<HighestBid>::new(), Flatten(|b| b))
        .name("Highest Bids")
        .uid("q7-max")
}

/// A person as q8 keeps it: id, name, registration time.
type PersonName = (u64, String, i64);

/// q8: persons who opened an auction in the same tumbling 10 s window as
/// they registered, once per person and window.
///
/// A co-group of persons (id, name, time) and auctions (their seller) on
/// `id = seller` per window; a window with both sides emits its person.
/// Only the seller of an auction is kept in the window.
pub fn q8(events: &DataStream<Event>) -> DataStream<NewUser> {
    let (persons, sellers) = split(events, "q8-persons-and-sellers", |e| match e {
        Event::Person(p) => Pick::First((p.id, p.name, p.date_time)),
        Event::Auction(a) => Pick::Second(a.seller),
        Event::Bid(_) => Pick::Neither,
    });
    let size = WINDOW.as_millis() as i64;
    persons
        .co_group(&sellers)
        .where_key(|p: &PersonName| p.0)
        .equal_to(|seller: &u64| *seller)
        .window(TumblingWindows::event_time(WINDOW))
        .apply(
            move |_: &u64, mut persons: Vec<PersonName>, sellers: Vec<u64>, out| {
                if sellers.is_empty() {
                    return Ok(());
                }
                // The SQL groups persons by (id, name) per window first.
                persons.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                persons.dedup_by(|a, b| (a.0, &a.1) == (b.0, &b.1));
                for (id, name, date_time) in persons {
                    out.collect(NewUser {
                        id,
                        name,
                        start: TimeWindow::start_with_offset(date_time, 0, size),
                    });
                }
                Ok(())
            },
        )
        .uid("q8-join")
}

/// q11: each bidder's sessions (bids at most 10 s apart) with their
/// bid count, start (first bid) and end (last bid plus the gap).
pub fn q11(events: &DataStream<Event>) -> DataStream<BidderCount> {
    bids(events)
        .map(|b: Bid| b.bidder)
        .name("Bidder")
        .uid("q11-bidder")
        .key_by(|bidder: &u64| *bidder)
        .window(SessionWindows::event_time_with_gap(SESSION_GAP))
        .aggregate_with(CountAll, WithWindow)
        .name("Bids per Session")
        .uid("q11-sessions")
}

/// q12: each bidder's bids per tumbling 10 s window of processing time
/// (wall clock), windows still open at the end of input included.
pub fn q12(events: &DataStream<Event>) -> DataStream<BidderCount> {
    bids(events)
        .map(|b: Bid| b.bidder)
        .name("Bidder")
        .uid("q12-bidder")
        .key_by(|bidder: &u64| *bidder)
        .window(TumblingWindows::processing_time(WINDOW))
        .trigger(ProcessingTimeOrEndOfInput)
        .aggregate_with(CountAll, WithWindow)
        .name("Bids per Processing-Time Window")
        .uid("q12-windows")
}
