//! The windowed Nexmark queries (q5, q7, q8, q11, q12) against a plain
//! batch computation over the same generated events, at parallelism 1 and
//! 3 (and on RocksDB with the `rocksdb` feature), on the 1,000,000
//! events; the rows print as the SQL's columns. Failures and rescaling
//! through the CLI: `nexmark_recovery.rs`.
//!
//! The batch model assigns events to windows arithmetically. It assumes
//! no event is late, and checks it: each split's event times never go
//! back, so with the suite's 4 s watermark nothing is behind it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use floe::prelude::*;
use floe_cli::examples::nexmark::{self, BidderCount, HighestBid, HotItem, NewUser, Row};
use floe_nexmark::{Event, NexmarkConfig, NexmarkGenerator};

const EVENTS: u64 = 1_000_000;
const SEED: u64 = 7;
/// 1,000 s of event time: a hundred tumbling windows, five hundred
/// sliding ones.
const TPS: u32 = 1_000;
const WINDOW: i64 = 10_000;
const SLIDE: i64 = 2_000;
const GAP: i64 = 10_000;

fn config() -> NexmarkConfig {
    NexmarkConfig::new(EVENTS).with_seed(SEED).with_tps(TPS)
}

/// The events of the stream at parallelism `p` (one split per source
/// subtask), split after split; checks that no split goes back in time.
fn batch_events(p: u32) -> Vec<Event> {
    let generator = NexmarkGenerator::new(config()).unwrap();
    let mut events = Vec::new();
    for split in generator.splits(p) {
        let mut last = i64::MIN;
        for e in generator.split_events(split, 0) {
            assert!(
                e.date_time() >= last,
                "a split goes back in time: lateness would be possible"
            );
            last = e.date_time();
            events.push(e);
        }
    }
    events
}

fn window_start(t: i64, size: i64) -> i64 {
    t - t.rem_euclid(size)
}

/// q5 computed directly: per sliding window, the auctions with the most
/// bids.
fn model_q5(events: &[Event]) -> Vec<HotItem> {
    let mut counts: BTreeMap<(i64, u64), u64> = BTreeMap::new(); // (end, auction)
    for e in events {
        if let Event::Bid(b) = e {
            let last = window_start(b.date_time, SLIDE);
            let mut start = last;
            while start > b.date_time - WINDOW {
                *counts.entry((start + WINDOW, b.auction)).or_default() += 1;
                start -= SLIDE;
            }
        }
    }
    let mut max: BTreeMap<i64, u64> = BTreeMap::new();
    for (&(end, _), &n) in &counts {
        let m = max.entry(end).or_default();
        *m = (*m).max(n);
    }
    sorted(
        counts
            .iter()
            .filter(|((end, _), n)| max[end] == **n)
            .map(|(&(_, auction), &num)| HotItem { auction, num })
            .collect(),
    )
}

/// q7 computed directly: per tumbling window, the bids with the highest
/// price (half-open windows, see the module's docs).
fn model_q7(events: &[Event]) -> Vec<HighestBid> {
    let mut max: BTreeMap<i64, u64> = BTreeMap::new();
    for e in events {
        if let Event::Bid(b) = e {
            let m = max.entry(window_start(b.date_time, WINDOW)).or_default();
            *m = (*m).max(b.price);
        }
    }
    sorted(
        events
            .iter()
            .filter_map(|e| match e {
                Event::Bid(b) if max[&window_start(b.date_time, WINDOW)] == b.price => {
                    Some(HighestBid {
                        auction: b.auction,
                        price: b.price,
                        bidder: b.bidder,
                        date_time: b.date_time,
                        extra: b.extra.clone(),
                    })
                }
                _ => None,
            })
            .collect(),
    )
}

/// q8 computed directly: persons and the sellers of auctions per window,
/// joined on id and window.
fn model_q8(events: &[Event]) -> Vec<NewUser> {
    let mut sellers: BTreeSet<(u64, i64)> = BTreeSet::new();
    let mut persons: BTreeSet<(u64, String, i64)> = BTreeSet::new();
    for e in events {
        match e {
            Event::Auction(a) => {
                sellers.insert((a.seller, window_start(a.date_time, WINDOW)));
            }
            Event::Person(p) => {
                persons.insert((p.id, p.name.clone(), window_start(p.date_time, WINDOW)));
            }
            Event::Bid(_) => {}
        }
    }
    sorted(
        persons
            .into_iter()
            .filter(|(id, _, start)| sellers.contains(&(*id, *start)))
            .map(|(id, name, start)| NewUser { id, name, start })
            .collect(),
    )
}

/// q11 computed directly: each bidder's bid times in order, cut where two
/// are more than the gap apart (sessions that touch merge, as in Flink).
fn model_q11(events: &[Event]) -> Vec<BidderCount> {
    let mut times: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for e in events {
        if let Event::Bid(b) = e {
            times.entry(b.bidder).or_default().push(b.date_time);
        }
    }
    let mut rows = Vec::new();
    for (bidder, mut ts) in times {
        ts.sort_unstable();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0u64);
        for t in ts {
            if t - last > GAP {
                rows.push(BidderCount {
                    bidder,
                    bid_count: n,
                    start,
                    end: last + GAP,
                });
                (start, n) = (t, 0);
            }
            last = t;
            n += 1;
        }
        rows.push(BidderCount {
            bidder,
            bid_count: n,
            start,
            end: last + GAP,
        });
    }
    sorted(rows)
}

/// Bids per bidder.
fn bids_per_bidder(events: &[Event]) -> BTreeMap<u64, u64> {
    let mut counts = BTreeMap::new();
    for e in events {
        if let Event::Bid(b) = e {
            *counts.entry(b.bidder).or_default() += 1;
        }
    }
    counts
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn backends() -> Vec<StateBackendKind> {
    let mut b = vec![StateBackendKind::HashMap];
    if cfg!(feature = "rocksdb") {
        b.push(StateBackendKind::RocksDb);
    }
    b
}

/// Runs `query` over the stream at parallelism `p` on `backend`; its rows,
/// sorted.
fn run_query<T: Row + Ord>(
    p: u32,
    backend: StateBackendKind,
    query: impl Fn(&DataStream<Event>) -> DataStream<T>,
) -> Vec<T> {
    let env = StreamEnvironment::new();
    env.set_parallelism(p);
    env.set_state_backend(backend);
    let events = nexmark::events(&env, config(), None).unwrap();
    let (sink, rows) = CollectSink::new();
    query(&events).sink_to(sink, "Collect");
    env.execute("nexmark windows test").unwrap();
    sorted(rows.snapshot())
}

/// Runs `query` at parallelism 1 and 3 on every backend built in and
/// compares with `model` over the same stream.
fn check<T: Row + Ord + std::fmt::Debug>(
    name: &str,
    query: impl Fn(&DataStream<Event>) -> DataStream<T> + Copy,
    model: impl Fn(&[Event]) -> Vec<T>,
) {
    for p in [1u32, 3] {
        let want = model(&batch_events(p));
        assert!(!want.is_empty(), "{name}: the model has no rows");
        for backend in backends() {
            let got = run_query(p, backend, query);
            if got != want {
                let (g, w): (BTreeSet<&T>, BTreeSet<&T>) =
                    (got.iter().collect(), want.iter().collect());
                let extra: Vec<_> = g.difference(&w).take(5).collect();
                let missing: Vec<_> = w.difference(&g).take(5).collect();
                panic!(
                    "{name} at p={p} on {backend:?}: {} rows, want {}; extra {extra:?}, missing {missing:?}",
                    got.len(),
                    want.len()
                );
            }
        }
    }
}

#[test]
fn q5_hot_items_equal_a_batch_computation() {
    check("q5", nexmark::q5, model_q5);
}

#[test]
fn q7_highest_bids_equal_a_batch_computation() {
    check("q7", nexmark::q7, model_q7);
}

#[test]
fn q8_new_users_equal_a_batch_computation() {
    check("q8", nexmark::q8, model_q8);
}

#[test]
fn q11_sessions_equal_a_batch_computation() {
    check("q11", nexmark::q11, model_q11);
}

/// The bids per bidder q12 counted over all its windows, checking each
/// row's window and that no (bidder, window) repeats.
fn q12_sums(rows: &[BidderCount]) -> (BTreeMap<u64, u64>, BTreeSet<i64>) {
    let mut sums = BTreeMap::new();
    let mut windows = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for r in rows {
        assert_eq!(r.start.rem_euclid(WINDOW), 0, "{r:?}");
        assert_eq!(r.end - r.start, WINDOW, "{r:?}");
        assert!(r.bid_count > 0, "{r:?}");
        assert!(seen.insert((r.bidder, r.start)), "{r:?} twice");
        *sums.entry(r.bidder).or_default() += r.bid_count;
        windows.insert(r.start);
    }
    (sums, windows)
}

/// q12's windows are on the wall clock, so only what does not depend on it
/// is compared: the counts of a bidder over all windows are its bids. Once
/// with a clock that stands still (every window is open when the input
/// ends and fires then), once with one that moves 10 s every 50 ms while
/// the paced job runs (windows fire on the clock, the last at the end of
/// input, none twice).
#[test]
fn q12_counts_every_bid_once_whatever_the_clock() {
    let want = bids_per_bidder(&batch_events(1));
    for (p, moving) in [(1u32, false), (3, false), (3, true)] {
        let clock = ManualClock::new(1_000_000_000_000);
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        env.set_processing_clock(ProcessingClock::Manual(clock.clone()));
        let rate = moving.then_some(100_000.0);
        let events = nexmark::events(&env, config(), rate).unwrap();
        let (sink, rows) = CollectSink::new();
        nexmark::q12(&events).sink_to(sink, "Collect");
        let client = env.execute_async("nexmark q12 test").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = moving.then(|| {
            let (clock, stop) = (clock.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50));
                    clock.advance(Duration::from_secs(10));
                }
            })
        });
        client.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = ticker {
            t.join().unwrap();
        }
        let (sums, windows) = q12_sums(&rows.snapshot());
        // The events (bidders included) do not depend on p, only their
        // times do.
        assert!(
            sums == want,
            "q12 at p={p}, moving clock {moving}: {} bids of {} bidders counted, want {} of {}",
            sums.values().sum::<u64>(),
            sums.len(),
            want.values().sum::<u64>(),
            want.len()
        );
        if moving {
            assert!(windows.len() > 3, "the clock moved: {windows:?}");
        } else {
            assert_eq!(windows.len(), 1, "{windows:?}");
        }
    }
}

#[test]
fn rows_print_as_the_sql_columns() {
    let line = |row: &dyn Fn(&mut String)| {
        let mut s = String::new();
        row(&mut s);
        s
    };
    let hot = HotItem {
        auction: 1007,
        num: 42,
    };
    assert_eq!(line(&|b| hot.write_line(b)), "1007,42");
    let highest = HighestBid {
        auction: 1007,
        price: 99_900,
        bidder: 2001,
        date_time: 1_436_918_410_000,
        extra: "x".into(),
    };
    // The SQL selects auction, price, bidder, dateTime, extra.
    assert_eq!(
        line(&|b| highest.write_line(b)),
        "1007,99900,2001,1436918410000,x"
    );
    let user = NewUser {
        id: 1001,
        name: "Peter Jones".into(),
        start: 1_436_918_400_000,
    };
    assert_eq!(
        line(&|b| user.write_line(b)),
        "1001,Peter Jones,1436918400000"
    );
    let session = BidderCount {
        bidder: 2001,
        bid_count: 3,
        start: 1_436_918_400_000,
        end: 1_436_918_415_000,
    };
    assert_eq!(
        line(&|b| session.write_line(b)),
        "2001,3,1436918400000,1436918415000"
    );
}
