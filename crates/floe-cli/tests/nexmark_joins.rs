//! The Nexmark join queries against an independent batch model over the
//! same generated events — plain loops and hash maps over the whole
//! stream, none of the job's code — at parallelism 1 and 3; one printed
//! line per row type.

use std::collections::HashMap;

use floe::prelude::*;
use floe_cli::examples::nexmark::{self, LocalItem, Row};
use floe_nexmark::{Event, NexmarkConfig, NexmarkGenerator, Person};

const EVENTS: u64 = 100_000;
const SEED: u64 = 7;
/// 100,000 events span 100 s of event time (each split's, at any
/// parallelism).
const TPS: u32 = 1_000;

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
}
