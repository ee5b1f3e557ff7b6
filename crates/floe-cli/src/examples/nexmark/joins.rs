//! The join queries, written with connected streams and keyed co-process
//! functions as a Flink DataStream user writes regular joins: q3 (local
//! item suggestion: auctions joined with their sellers).
//!
//! Both joins are unwindowed, as in the SQL; what each keeps in state,
//! and where it differs from the SQL's changelog, is in `docs/nexmark.md`.

use std::fmt::Write as _;

use floe::prelude::*;
use floe_nexmark::{Auction, Event, Person};
use serde::{Deserialize, Serialize};

use super::Row;

/// The persons of the stream (the suite's `person` view).
pub fn persons(events: &DataStream<Event>) -> DataStream<Person> {
    events
        .flat_map(|e: Event, out: &mut Collector<'_, Person>| {
            if let Event::Person(p) = e {
                out.collect(p)
            }
        })
        .name("Persons")
        .uid("persons")
}

/// The auctions of the stream (the suite's `auction` view).
pub fn auctions(events: &DataStream<Event>) -> DataStream<Auction> {
    events
        .flat_map(|e: Event, out: &mut Collector<'_, Auction>| {
            if let Event::Auction(a) = e {
                out.collect(a)
            }
        })
        .name("Auctions")
        .uid("auctions")
}

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
#[derive(Clone, Default)]
struct LocalItemJoin {
    seller: Option<ValueState<Seller>>,
    waiting: Option<ListState<u64>>,
}

impl KeyedCoProcessFunction<u64, Auction, Person, LocalItem> for LocalItemJoin {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.seller = Some(ctx.get_state(&ValueStateDescriptor::new("seller"))?);
        self.waiting = Some(ctx.get_list_state(&ListStateDescriptor::new("waiting-auctions"))?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        auction: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, LocalItem>,
    ) -> anyhow::Result<()> {
        match self.seller.as_ref().expect("opened").value(ctx)? {
            Some(Seller::Local { name, city, state }) => out.collect(LocalItem {
                name,
                city,
                state,
                id: auction.id,
            }),
            Some(Seller::Elsewhere) => {}
            None => self
                .waiting
                .as_ref()
                .expect("opened")
                .add(ctx, auction.id)?,
        }
        Ok(())
    }

    fn process_element2(
        &mut self,
        person: Person,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, LocalItem>,
    ) -> anyhow::Result<()> {
        let waiting = self.waiting.as_ref().expect("opened");
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
        self.seller.as_ref().expect("opened").update(ctx, seller)?;
        Ok(())
    }
}

/// q3: `(name, city, state, auction id)` of every category-10 auction
/// whose seller lives in Oregon, Idaho or California.
pub fn q3(events: &DataStream<Event>) -> DataStream<LocalItem> {
    let auctions = auctions(events)
        .filter(|a: &Auction| a.category == Q3_CATEGORY)
        .name("Category 10")
        .uid("q3-category");
    auctions
        .key_by(|a: &Auction| a.seller)
        .connect(&persons(events).key_by(|p: &Person| p.id))
        .process(LocalItemJoin::default())
        .name("Local Item Suggestion")
        .uid("q3-join")
}
