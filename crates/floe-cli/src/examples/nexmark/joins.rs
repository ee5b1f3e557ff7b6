//! The join queries, written with connected streams and keyed co-process
//! functions as a Flink DataStream user writes regular joins: q3 (local
//! item suggestion: auctions joined with their sellers), q9 (each
//! auction's winning bid) and q4 (the average winning price per
//! category, over q9's operator).
//!
//! Both joins are unwindowed, as in the SQL; what each keeps in state,
//! and where it differs from the SQL's changelog, is in `docs/nexmark.md`.

use std::fmt::Write as _;

use floe::prelude::*;
use floe_nexmark::{Auction, Bid, Event, Person};
use serde::{Deserialize, Serialize};

use super::{Pick, Row, split};

// ---------------------------------------------------------------------
// q3

/// The category q3 suggests items of.
pub const Q3_CATEGORY: u64 = 10;
/// The states q3's sellers live in.
pub const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];

/// A seller near the buyer and one of their auctions (q3's row).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LocalItem {
    pub name: String,
    pub city: String,
    pub state: String,
    /// The auction's id.
    pub id: u64,
}

impl Row for LocalItem {
    /// q3's columns: name, city, state, id.
    fn write_line(&self, buf: &mut String) {
        let _ = write!(
            buf,
            "{},{},{},{}",
            self.name, self.city, self.state, self.id
        );
    }
}

/// What q3 keeps of a person, once they arrived.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Seller {
    /// In one of [`Q3_STATES`]: their auctions are rows.
    Local {
        name: String,
        city: String,
        state: String,
    },
    /// Elsewhere: their auctions are dropped at once.
    Elsewhere,
}

/// q3's join, keyed by person id (`auction.seller = person.id`): the
/// seller in value state once they arrived, and the ids of category-10
/// auctions that arrived before their seller (the generator lets a seller
/// be up to 10 persons not created yet) in list state until they do.
#[derive(Clone)]
struct LocalItemJoin {
    seller: ValueState<Seller>,
    waiting: ListState<u64>,
}

impl Default for LocalItemJoin {
    fn default() -> Self {
        LocalItemJoin {
            seller: ValueState::new("seller"),
            waiting: ListState::new("waiting-auctions"),
        }
    }
}

impl KeyedCoProcessFunction<u64, Auction, Person, LocalItem> for LocalItemJoin {
    fn process_element1(
        &mut self,
        auction: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, LocalItem>,
    ) -> anyhow::Result<()> {
        match self.seller.value(ctx)? {
            Some(Seller::Local { name, city, state }) => out.collect(LocalItem {
                name,
                city,
                state,
                id: auction.id,
            }),
            Some(Seller::Elsewhere) => {}
            None => self.waiting.add(ctx, auction.id)?,
        }
        Ok(())
    }

    fn process_element2(
        &mut self,
        person: Person,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, LocalItem>,
    ) -> anyhow::Result<()> {
        let waiting = &self.waiting;
        let seller = if Q3_STATES.contains(&person.state.as_str()) {
            for id in waiting.get(ctx)? {
                out.collect(LocalItem {
                    name: person.name.clone(),
                    city: person.city.clone(),
                    state: person.state.clone(),
                    id,
                });
            }
            Seller::Local {
                name: person.name,
                city: person.city,
                state: person.state,
            }
        } else {
            Seller::Elsewhere
        };
        waiting.clear(ctx)?;
        self.seller.update(ctx, seller)?;
        Ok(())
    }
}

/// q3: `(name, city, state, auction id)` of every category-10 auction
/// whose seller lives in Oregon, Idaho or California.
pub fn q3(events: &DataStream<Event>) -> DataStream<LocalItem> {
    let (auctions, persons) = split(events, "q3-auctions-and-persons", |e| match e {
        Event::Auction(a) if a.category == Q3_CATEGORY => Pick::First(a),
        Event::Person(p) => Pick::Second(p),
        _ => Pick::Neither,
    });
    auctions
        .key_by(|a: &Auction| a.seller)
        .connect(&persons.key_by(|p: &Person| p.id))
        .process(LocalItemJoin::default())
        .name("Local Item Suggestion")
        .uid("q3-join")
}

// ---------------------------------------------------------------------
// q9 and q4

/// An auction and its winning bid (q9's row).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuctionWinner {
    pub auction: Auction,
    pub bid: Bid,
}

impl Row for AuctionWinner {
    /// q9's columns: the auction's (id, itemName, description,
    /// initialBid, reserve, dateTime, expires, seller, category, extra),
    /// then the bid's (auction, bidder, price, bid_dateTime, bid_extra).
    fn write_line(&self, buf: &mut String) {
        let (a, b) = (&self.auction, &self.bid);
        let _ = write!(
            buf,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            a.id,
            a.item_name,
            a.description,
            a.initial_bid,
            a.reserve,
            a.date_time,
            a.expires,
            a.seller,
            a.category,
            a.extra,
            b.auction,
            b.bidder,
            b.price,
            b.date_time,
            b.extra
        );
    }
}

/// A category and the average winning price of its closed auctions so
/// far (q4's row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CategoryAverage {
    pub category: u64,
    /// Cents, truncated as the SQL's `AVG` over `BIGINT` is.
    pub average: u64,
}

impl Row for CategoryAverage {
    /// q4's columns: id (the category), final (the average).
    fn write_line(&self, buf: &mut String) {
        let _ = write!(buf, "{},{}", self.category, self.average);
    }
}

/// Whether `bid` counts for `auction`: placed while it was open, both
/// ends included (the SQL's `BETWEEN`).
pub fn in_auction(auction: &Auction, bid: &Bid) -> bool {
    auction.date_time <= bid.date_time && bid.date_time <= auction.expires
}

/// Whether `bid` beats `current`: a higher price; at the same price the
/// earlier bid; at the same price and time (the SQL leaves this tie
/// open) the one that sorts first by bidder, then channel, url and extra.
pub fn beats(bid: &Bid, current: &Bid) -> bool {
    bid.price > current.price
        || (bid.price == current.price
            && (bid.date_time < current.date_time
                || (bid.date_time == current.date_time
                    && (&bid.bidder, &bid.channel, &bid.url, &bid.extra)
                        < (
                            &current.bidder,
                            &current.channel,
                            &current.url,
                            &current.extra,
                        ))))
}

/// The join of q9 (and q4), keyed by auction id: the auction in value
/// state from its arrival to its close (an event-time timer at
/// `expires`), the best valid bid so far beside it. Bids that arrive
/// before their auction (the generator bids on auctions up to 10 ahead)
/// wait in list state with a timer at their own time: once the watermark
/// passes a bid's time, no auction arriving later can have opened before
/// it (no event is behind the watermark with the suite's event time), so
/// the bid is dropped then.
#[derive(Clone)]
struct WinningBidJoin {
    auction: ValueState<Auction>,
    best: ValueState<Bid>,
    early: ListState<Bid>,
}

impl Default for WinningBidJoin {
    fn default() -> Self {
        WinningBidJoin {
            auction: ValueState::new("auction"),
            best: ValueState::new("best-bid"),
            early: ListState::new("early-bids"),
        }
    }
}

impl WinningBidJoin {
    fn offer(
        &self,
        ctx: &mut KeyedContext<'_, u64>,
        auction: &Auction,
        bid: Bid,
    ) -> anyhow::Result<()> {
        if !in_auction(auction, &bid) {
            return Ok(());
        }
        let best = &self.best;
        if best.value(ctx)?.is_none_or(|current| beats(&bid, &current)) {
            best.update(ctx, bid)?;
        }
        Ok(())
    }
}

impl KeyedCoProcessFunction<u64, Auction, Bid, AuctionWinner> for WinningBidJoin {
    fn process_element1(
        &mut self,
        auction: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, AuctionWinner>,
    ) -> anyhow::Result<()> {
        ctx.timer_service()
            .register_event_time_timer(auction.expires)?;
        let early = &self.early;
        for bid in early.get(ctx)? {
            self.offer(ctx, &auction, bid)?;
        }
        early.clear(ctx)?;
        self.auction.update(ctx, auction)?;
        Ok(())
    }

    fn process_element2(
        &mut self,
        bid: Bid,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, AuctionWinner>,
    ) -> anyhow::Result<()> {
        match self.auction.value(ctx)? {
            Some(auction) => self.offer(ctx, &auction, bid),
            None => {
                ctx.timer_service()
                    .register_event_time_timer(bid.date_time)?;
                self.early.add(ctx, bid)?;
                Ok(())
            }
        }
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, AuctionWinner>,
    ) -> anyhow::Result<()> {
        let (auction_state, best, early) = (&self.auction, &self.best, &self.early);
        match auction_state.value(ctx)? {
            // The auction closes: its winner, if any bid was valid.
            Some(auction) if timestamp >= auction.expires => {
                if let Some(bid) = best.value(ctx)? {
                    out.collect(AuctionWinner { auction, bid });
                }
                auction_state.clear(ctx)?;
                best.clear(ctx)?;
                early.clear(ctx)?;
            }
            // An early bid's timer after its auction arrived and took it.
            Some(_) => {}
            // Early bids no auction can take any more.
            None => {
                let watermark = ctx.timer_service().current_watermark();
                let keep: Vec<Bid> = early
                    .get(ctx)?
                    .filter(|b| b.date_time > watermark)
                    .collect();
                if keep.is_empty() {
                    early.clear(ctx)?;
                } else {
                    early.update(ctx, keep)?;
                }
            }
        }
        Ok(())
    }
}

/// Every auction with its winning bid, emitted when the auction closes
/// (the watermark passes `expires`): the join q9 and q4 share.
pub fn winning_bids(events: &DataStream<Event>) -> DataStream<AuctionWinner> {
    let (auctions, bids) = split(events, "auctions-and-bids", |e| match e {
        Event::Auction(a) => Pick::First(a),
        Event::Bid(b) => Pick::Second(b),
        Event::Person(_) => Pick::Neither,
    });
    auctions
        .key_by(|a: &Auction| a.id)
        .connect(&bids.key_by(|b: &Bid| b.auction))
        .process(WinningBidJoin::default())
        .name("Winning Bids")
        .uid("winning-bids")
}

/// q9: each auction with at least one valid bid, with its winning bid.
pub fn q9(events: &DataStream<Event>) -> DataStream<AuctionWinner> {
    winning_bids(events)
}

/// q4's running average per category: a count and a sum of winning
/// prices in value state.
#[derive(Clone)]
struct AveragePrice {
    totals: ValueState<(u64, u64)>,
}

impl KeyedProcessFunction<u64, AuctionWinner, CategoryAverage> for AveragePrice {
    fn process_element(
        &mut self,
        winner: AuctionWinner,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, CategoryAverage>,
    ) -> anyhow::Result<()> {
        let totals = &self.totals;
        let (count, sum) = totals.value(ctx)?.unwrap_or((0, 0));
        let (count, sum) = (count + 1, sum + winner.bid.price);
        totals.update(ctx, (count, sum))?;
        out.collect(CategoryAverage {
            category: winner.auction.category,
            average: sum / count,
        });
        Ok(())
    }
}

/// q4: per category, the average winning price of its closed auctions,
/// emitted again each time one more of them closes.
pub fn q4(events: &DataStream<Event>) -> DataStream<CategoryAverage> {
    winning_bids(events)
        .key_by(|w: &AuctionWinner| w.auction.category)
        .process(AveragePrice {
            totals: ValueState::new("count-and-sum"),
        })
        .name("Average Price per Category")
        .uid("q4-average")
}
