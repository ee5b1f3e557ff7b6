//! The three kinds of Nexmark events, with the fields (in `snake_case`)
//! of the official suite's `person`, `auction` and `bid` tables.
//!
//! Times are epoch milliseconds, as the suite's `TIMESTAMP(3)` columns;
//! prices are cents (the suite's `BIGINT`), exact.

use serde::{Deserialize, Serialize};

/// A new person: someone who may sell (auctions) or buy (bids).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Person {
    /// Person id (the first is 1000).
    pub id: u64,
    /// "First Last" from small fixed lists, so queries find matches.
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    /// A two-letter US state, one of six (q3 filters on `OR`, `ID`, `CA`).
    pub state: String,
    /// Event time, epoch ms.
    pub date_time: i64,
    /// Padding to the configured average event size.
    pub extra: String,
}

/// A new auction of one item by one seller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Auction {
    /// Auction id (the first is 1000).
    pub id: u64,
    pub item_name: String,
    pub description: String,
    /// Cents.
    pub initial_bid: u64,
    /// Cents; never below `initial_bid`.
    pub reserve: u64,
    /// Event time, epoch ms.
    pub date_time: i64,
    /// When the auction closes, epoch ms (after `date_time`).
    pub expires: i64,
    /// A person id.
    pub seller: u64,
    /// One of five categories, 10..=14.
    pub category: u64,
    /// Padding to the configured average event size.
    pub extra: String,
}

/// A bid on an auction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// An auction id; mostly one of the recent (in-flight) auctions.
    pub auction: u64,
    /// A person id, offset by 1000 more than `Person::id` as the official
    /// generator does (see the crate docs).
    pub bidder: u64,
    /// Cents.
    pub price: u64,
    /// `Google`, `Facebook`, `Baidu`, `Apple` or `channel-<n>`.
    pub channel: String,
    pub url: String,
    /// Event time, epoch ms.
    pub date_time: i64,
    /// Padding to the configured average event size.
    pub extra: String,
}

/// One event of the stream (the suite's `event_type` 0, 1, 2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

/// Which kind of event an event id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Person,
    Auction,
    Bid,
}

impl Event {
    /// Its event time (epoch ms): what the recommended watermark strategy
    /// stamps records with.
    #[inline]
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// Person, auction or bid.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Person(_) => EventKind::Person,
            Event::Auction(_) => EventKind::Auction,
            Event::Bid(_) => EventKind::Bid,
        }
    }

    /// The bid, if it is one (what q0–q2 read).
    #[inline]
    pub fn into_bid(self) -> Option<Bid> {
        match self {
            Event::Bid(b) => Some(b),
            _ => None,
        }
    }
}
