//! The Nexmark join queries (q3, q4, q9) against an independent batch
//! model over the same generated events — plain loops and hash maps over
//! the whole stream, none of the job's code — at parallelism 1 and 3, on
//! the 1,000,000 events; one printed line per row type. Failures
//! and rescaling through the CLI: `nexmark_recovery.rs`.

use std::collections::{BTreeMap, HashMap};

use floe::prelude::*;
use floe_cli::examples::nexmark::{self, AuctionWinner, CategoryAverage, LocalItem, Row};
use floe_nexmark::{Auction, Bid, Event, NexmarkConfig, NexmarkGenerator, Person};

const EVENTS: u64 = 1_000_000;
const SEED: u64 = 7;
/// 1,000,000 events span 1,000 s of event time (each split's, at any
/// parallelism): auctions open for seconds and close throughout the run
/// behind the 4 s watermark, most of them before the end of input; most
/// bids on auctions not yet created wait and are dropped once the
/// watermark passes them.
const TPS: u32 = 1_000;

/// The suite's own rate: 1,000,000 events span 100 ms, every auction closes
/// at the end of input, and most bids that arrive before their auction
/// (the generator bids up to 10 auctions ahead) are valid for it, as they
/// share its millisecond: the join must keep them.
const SUITE_TPS: u32 = floe_nexmark::DEFAULT_TPS;

fn config(tps: u32) -> NexmarkConfig {
    NexmarkConfig::new(EVENTS).with_seed(SEED).with_tps(tps)
}

/// The stream the job generates at parallelism `p`, outside any job.
fn batch_events(p: u32, tps: u32) -> Vec<Event> {
    NexmarkGenerator::new(config(tps))
        .unwrap()
        .events(p)
        .collect()
}

fn run_query<T: Row>(
    p: u32,
    tps: u32,
    query: impl Fn(&DataStream<Event>) -> DataStream<T>,
) -> Vec<T> {
    let env = StreamEnvironment::new();
    env.set_parallelism(p);
    let events = nexmark::events(&env, config(tps), None).unwrap();
    let (sink, rows) = CollectSink::new();
    query(&events).sink_to(sink, "Collect");
    env.execute("nexmark joins test").unwrap();
    rows.snapshot()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// q3 computed directly: sellers in OR, ID or CA, their category-10
/// auctions.
fn model_q3(events: &[Event]) -> Vec<LocalItem> {
    let mut local: HashMap<u64, &Person> = HashMap::new();
    for e in events {
        if let Event::Person(p) = e
            && matches!(p.state.as_str(), "OR" | "ID" | "CA")
        {
            local.insert(p.id, p);
        }
    }
    let mut rows = Vec::new();
    for e in events {
        if let Event::Auction(a) = e
            && a.category == 10
            && let Some(p) = local.get(&a.seller)
        {
            rows.push(LocalItem {
                name: p.name.clone(),
                city: p.city.clone(),
                state: p.state.clone(),
                id: a.id,
            });
        }
    }
    sorted(rows)
}

/// q9 computed directly: every bid placed while its auction was open
/// (both ends included); per auction the highest price, then the earliest
/// time, then the lowest (bidder, channel, url, extra).
fn model_q9(events: &[Event]) -> Vec<AuctionWinner> {
    let auctions: HashMap<u64, &Auction> = events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((a.id, a)),
            _ => None,
        })
        .collect();
    let mut valid: HashMap<u64, Vec<&Bid>> = HashMap::new();
    for e in events {
        if let Event::Bid(b) = e
            && let Some(a) = auctions.get(&b.auction)
            && a.date_time <= b.date_time
            && b.date_time <= a.expires
        {
            valid.entry(a.id).or_default().push(b);
        }
    }
    let mut rows = Vec::new();
    for (id, mut bids) in valid {
        bids.sort_by(|x, y| {
            y.price
                .cmp(&x.price)
                .then(x.date_time.cmp(&y.date_time))
                .then(x.bidder.cmp(&y.bidder))
                .then(x.channel.cmp(&y.channel))
                .then(x.url.cmp(&y.url))
                .then(x.extra.cmp(&y.extra))
        });
        rows.push(AuctionWinner {
            auction: auctions[&id].clone(),
            bid: bids[0].clone(),
        });
    }
    sorted(rows)
}

/// q4's final result computed directly: per category the integer
/// average of its auctions' highest valid bid.
fn model_q4(events: &[Event]) -> BTreeMap<u64, u64> {
    let auctions: HashMap<u64, &Auction> = events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((a.id, a)),
            _ => None,
        })
        .collect();
    let mut max_price: HashMap<u64, u64> = HashMap::new();
    for e in events {
        if let Event::Bid(b) = e
            && let Some(a) = auctions.get(&b.auction)
            && (a.date_time..=a.expires).contains(&b.date_time)
        {
            let m = max_price.entry(a.id).or_insert(0);
            *m = (*m).max(b.price);
        }
    }
    let mut per_category: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (id, price) in max_price {
        let t = per_category.entry(auctions[&id].category).or_insert((0, 0));
        t.0 += price;
        t.1 += 1;
    }
    per_category
        .into_iter()
        .map(|(c, (sum, n))| (c, sum / n))
        .collect()
}

#[test]
fn q3_equals_a_batch_join() {
    for p in [1u32, 3] {
        let want = model_q3(&batch_events(p, TPS));
        assert!(want.len() > 100, "p={p}: {} rows", want.len());
        let got = sorted(run_query(p, TPS, nexmark::q3));
        assert_eq!(got.len(), want.len(), "q3 at p={p}: rows");
        assert!(got == want, "q3 at p={p}: rows differ");
    }
}

#[test]
fn q9_equals_a_batch_join() {
    for (p, tps) in [(1u32, TPS), (3, TPS), (1, SUITE_TPS), (3, SUITE_TPS)] {
        let events = batch_events(p, tps);
        let want = model_q9(&events);
        let auctions = events
            .iter()
            .filter(|e| matches!(e, Event::Auction(_)))
            .count();
        assert!(
            want.len() > auctions / 2,
            "p={p} tps={tps}: {} winners of {auctions} auctions",
            want.len()
        );
        let got = sorted(run_query(p, tps, nexmark::q9));
        assert_eq!(got.len(), want.len(), "q9 at p={p} tps={tps}: rows");
        assert!(got == want, "q9 at p={p} tps={tps}: rows differ");
    }
}

#[test]
fn q4_ends_at_the_batch_averages() {
    for (p, tps) in [(1u32, TPS), (3, TPS), (3, SUITE_TPS)] {
        let events = batch_events(p, tps);
        let want = model_q4(&events);
        assert_eq!(want.len(), 5, "p={p}: five categories");
        let rows = run_query(p, tps, nexmark::q4);
        // One row per closed auction with a winner.
        assert_eq!(
            rows.len(),
            model_q9(&events).len(),
            "q4 at p={p} tps={tps}: rows"
        );
        // Each category's rows come from one subtask in order: the last is
        // the final average.
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for r in &rows {
            last.insert(r.category, r.average);
        }
        assert_eq!(last, want, "q4 at p={p} tps={tps}");
    }
}

#[test]
fn join_rows_print_as_the_sql_columns() {
    let mut line = String::new();
    LocalItem {
        name: "Peter Jones".into(),
        city: "Boise".into(),
        state: "ID".into(),
        id: 1007,
    }
    .write_line(&mut line);
    assert_eq!(line, "Peter Jones,Boise,ID,1007");

    let mut line = String::new();
    CategoryAverage {
        category: 12,
        average: 4711,
    }
    .write_line(&mut line);
    assert_eq!(line, "12,4711");

    let mut line = String::new();
    AuctionWinner {
        auction: Auction {
            id: 1001,
            item_name: "item".into(),
            description: "desc".into(),
            initial_bid: 100,
            reserve: 150,
            date_time: 10,
            expires: 20,
            seller: 1002,
            category: 11,
            extra: "ax".into(),
        },
        bid: Bid {
            auction: 1001,
            bidder: 2003,
            price: 170,
            channel: "Google".into(),
            url: "https://example.com".into(),
            date_time: 15,
            extra: "bx".into(),
        },
    }
    .write_line(&mut line);
    assert_eq!(
        line,
        "1001,item,desc,100,150,10,20,1002,11,ax,1001,2003,170,15,bx"
    );
}
