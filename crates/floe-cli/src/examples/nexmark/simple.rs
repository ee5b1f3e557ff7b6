//! The queries without windows or joins: q0 (pass-through), q1 (currency
//! conversion) and q2 (selection).

use std::fmt::Write as _;

use floe::prelude::*;
use floe_nexmark::{Bid, Event};
use serde::{Deserialize, Serialize};

use super::{Row, bids};

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
