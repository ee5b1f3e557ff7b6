//! The Nexmark queries against a plain batch computation over the same
//! generated events, at parallelism 1 and 3 (failures and rescaling:
//! `nexmark_recovery.rs`); `floe bench nexmark` prints its JSON line; bad
//! flags are refused clearly.

mod common;

use common::*;
use floe::prelude::*;
use floe_cli::examples::nexmark::{self, AuctionPrice, EuroBid, Row};
use floe_nexmark::{Bid, Event, NexmarkConfig, NexmarkGenerator};

const EVENTS: u64 = 1_000_000;
const SEED: u64 = 7;

fn config() -> NexmarkConfig {
    NexmarkConfig::new(EVENTS).with_seed(SEED)
}

/// The bids of the stream the job generates at parallelism `p` (one
/// generator split per source subtask), recomputed outside any job.
fn batch_bids(p: u32) -> Vec<Bid> {
    let generator = NexmarkGenerator::new(config()).unwrap();
    let mut bids = Vec::new();
    for e in generator.events(p) {
        if let Event::Bid(b) = e {
            bids.push(b);
        }
    }
    bids
}

fn run_query<T: Row + Ord>(p: u32, query: impl Fn(&DataStream<Event>) -> DataStream<T>) -> Vec<T> {
    let env = StreamEnvironment::new();
    env.set_parallelism(p);
    let events = nexmark::events(&env, config(), None).unwrap();
    let (sink, rows) = CollectSink::new();
    query(&events).sink_to(sink, "Collect");
    env.execute("nexmark test").unwrap();
    let mut rows = rows.snapshot();
    rows.sort();
    rows
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn queries_equal_a_batch_computation() {
    for p in [1u32, 3] {
        let bids = batch_bids(p);
        assert!(bids.len() > 900_000, "{}", bids.len());

        let q0 = run_query(p, nexmark::q0);
        let want = sorted(bids.clone());
        assert!(
            q0 == want,
            "q0 at p={p}: {} rows, want {}",
            q0.len(),
            want.len()
        );

        let q1 = run_query(p, nexmark::q1);
        let want: Vec<EuroBid> = sorted(
            bids.iter()
                .map(|b| EuroBid {
                    auction: b.auction,
                    bidder: b.bidder,
                    // 0.908 × price with three decimals, exactly.
                    price_milli: b.price * 908,
                    date_time: b.date_time,
                    extra: b.extra.clone(),
                })
                .collect(),
        );
        assert!(q1 == want, "q1 at p={p}");

        let q2 = run_query(p, nexmark::q2);
        let want: Vec<AuctionPrice> = sorted(
            bids.iter()
                .filter(|b| b.auction % 123 == 0)
                .map(|b| AuctionPrice {
                    auction: b.auction,
                    price: b.price,
                })
                .collect(),
        );
        assert!(!want.is_empty());
        assert_eq!(q2, want, "q2 at p={p}");
    }
}

#[test]
fn rows_print_as_the_sql_columns() {
    let mut line = String::new();
    EuroBid {
        auction: 1000,
        bidder: 2001,
        price_milli: 1_234 * 908,
        date_time: 5,
        extra: "x".into(),
    }
    .write_line(&mut line);
    assert_eq!(line, "1000,2001,1120.472,5,x");
}

#[test]
fn bench_prints_a_json_line() {
    let sb = Sandbox::new();
    let out = run(&mut sb.floe([
        "bench", "nexmark", "--query", "q2", "--events", "50000", "-p", "2", "--tps", "10000",
    ]))
    .ok();
    let last = out.stdout.lines().last().expect("a stdout line");
    let report: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last:?}"));
    for field in [
        "events_per_sec",
        "seconds",
        "peak_rss_bytes",
        "checkpoints_completed",
        "checkpoint_duration_ms_mean",
    ] {
        assert!(report.get(field).is_some(), "missing {field} in {last}");
    }
    assert_eq!(report["query"], "q2");
    assert_eq!(report["events"], 50_000);
    assert_eq!(report["tps"], 10_000);
    // The rows of the stream at p = 2, recomputed.
    let generator = NexmarkGenerator::new(NexmarkConfig::new(50_000).with_tps(10_000)).unwrap();
    let rows = generator
        .events(2)
        .filter(|e| matches!(e, Event::Bid(b) if b.auction % 123 == 0))
        .count();
    assert_eq!(report["output_rows"], rows as u64, "{last}");
    // Every row (fewer than the sample cap) carried its bid's timestamp
    // into the latency sample.
    assert_eq!(report["latency_samples"], rows as u64, "{last}");
    let p50 = report["latency_ms_p50"].as_f64().expect("a p50");
    let p99 = report["latency_ms_p99"].as_f64().expect("a p99");
    assert!(0.0 <= p50 && p50 <= p99, "{last}");
}

#[test]
fn bad_flags_are_refused_clearly() {
    let sb = Sandbox::new();
    for (args, needle) in [
        (
            vec!["bench", "nexmark", "--query", "q42", "--events", "10"],
            "possible values: q0, q1, q2, q3, q4, q5, q7, q8, q9, q11, q12",
        ),
        (
            vec!["bench", "nexmark", "--query", "q0", "--events", "0"],
            "--events",
        ),
        (
            vec![
                "bench", "nexmark", "--query", "q0", "--events", "9", "--tps", "0",
            ],
            "--tps",
        ),
        (
            vec![
                "bench",
                "nexmark",
                "--query",
                "q0",
                "--events",
                "9",
                "--backend",
                "mem",
            ],
            "--backend",
        ),
        (vec!["run", "nexmark", "--query", "q0"], "--events"),
        (
            vec![
                "run", "nexmark", "--query", "q0", "--events", "9", "--rate", "0",
            ],
            "--rate",
        ),
    ] {
        run(&mut sb.floe(&args)).fails_with(&[needle]);
    }
}
