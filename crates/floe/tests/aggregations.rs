//! Built-in aggregations of a KeyedStream with Flink's semantics: `sum`,
//! `min` and `max` update only the given field (the other fields are those of
//! the key's first record), `reduce` folds whole records, and every input
//! record emits the key's updated value.

mod common;

use std::collections::BTreeMap;

use common::{group_by_key, splitmix};
use floe::prelude::*;

type Rec = (String, i64, u64);

fn input() -> Vec<Rec> {
    (0..1500u64)
        .map(|i| {
            let r = splitmix(i);
            (
                format!("key-{}", r % 23),
                (splitmix(r) % 2001) as i64 - 1000,
                i,
            )
        })
        .collect()
}

/// The expected running outputs per key of folding `f` over each key's
/// records in input order (the first record passes through unchanged).
fn expected_running(input: &[Rec], f: impl Fn(&Rec, &Rec) -> Rec) -> BTreeMap<String, Vec<Rec>> {
    let mut acc: BTreeMap<String, Rec> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<Rec>> = BTreeMap::new();
    for r in input {
        let next = match acc.get(&r.0) {
            None => r.clone(),
            Some(a) => f(a, r),
        };
        acc.insert(r.0.clone(), next.clone());
        out.entry(r.0.clone()).or_default().push(next);
    }
    out
}

fn run(
    p: u32,
    build: impl FnOnce(KeyedStream<Rec, String, fn(&Rec) -> String>) -> DataStream<Rec>,
) -> BTreeMap<String, Vec<Rec>> {
    let env = StreamEnvironment::new();
    env.set_parallelism(p);
    let (sink, out) = CollectSink::new();
    let key: fn(&Rec) -> String = |r| r.0.clone();
    build(env.from_collection(input()).key_by(key)).sink_to(sink, "collect");
    env.execute("aggregation").unwrap();
    let records: Vec<(String, Rec)> = out
        .snapshot()
        .into_iter()
        .map(|r| (r.0.clone(), r))
        .collect();
    group_by_key(&records)
}

#[test]
fn sum_updates_only_the_field_and_emits_every_update() {
    let expected = expected_running(&input(), |a, r| (a.0.clone(), a.1 + r.1, a.2));
    // Sanity of the model: field 2 stays the first record's.
    for outs in expected.values() {
        assert!(outs.iter().all(|o| o.2 == outs[0].2));
    }
    for p in [1, 2, 4] {
        let got = run(p, |k| k.sum(|r: &mut Rec| &mut r.1));
        assert_eq!(got, expected, "sum at parallelism {p}");
    }
}

#[test]
fn min_updates_only_the_field() {
    let expected = expected_running(&input(), |a, r| (a.0.clone(), a.1.min(r.1), a.2));
    for p in [1, 2, 4] {
        let got = run(p, |k| k.min(|r: &mut Rec| &mut r.1));
        assert_eq!(got, expected, "min at parallelism {p}");
    }
}

#[test]
fn max_updates_only_the_field() {
    let expected = expected_running(&input(), |a, r| (a.0.clone(), a.1.max(r.1), a.2));
    for p in [1, 2, 4] {
        let got = run(p, |k| k.max(|r: &mut Rec| &mut r.1));
        assert_eq!(got, expected, "max at parallelism {p}");
    }
}

#[test]
fn reduce_folds_whole_records() {
    // Sum of field 1, latest index in field 2.
    let f = |a: &Rec, r: &Rec| (a.0.clone(), a.1 + r.1, r.2.max(a.2));
    let expected = expected_running(&input(), f);
    for p in [1, 2, 4] {
        let got = run(p, |k| k.reduce(move |a: Rec, r: Rec| f(&a, &r)));
        assert_eq!(got, expected, "reduce at parallelism {p}");
    }
}

#[test]
fn sum_of_a_float_field_and_word_count() {
    let env = StreamEnvironment::new();
    env.set_parallelism(3);
    let (sink, out) = CollectSink::new();
    env.from_collection(vec![
        ("a".to_string(), 0.5f64),
        ("b".to_string(), 1.0),
        ("a".to_string(), 0.25),
        ("a".to_string(), 2.0),
    ])
    .key_by(|(k, _): &(String, f64)| k.clone())
    .sum(|(_, x): &mut (String, f64)| x)
    .sink_to(sink, "collect");
    env.execute("float-sum").unwrap();
    let got = group_by_key(&out.snapshot());
    assert_eq!(got["a"], vec![0.5, 0.75, 2.75]);
    assert_eq!(got["b"], vec![1.0]);

    // The word count of the crate docs.
    let text = "to be or not to be that is the question to be";
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let (sink, out) = CollectSink::new();
    env.from_collection(vec![text.to_string()])
        .flat_map(|line: String, out: &mut Collector<'_, (String, u64)>| {
            for w in line.split_whitespace() {
                out.collect((w.to_string(), 1));
            }
        })
        .key_by(|(w, _): &(String, u64)| w.clone())
        .sum(|(_, n): &mut (String, u64)| n)
        .sink_to(sink, "collect");
    env.execute("wordcount").unwrap();
    let finals: BTreeMap<String, u64> = group_by_key(&out.snapshot())
        .into_iter()
        .map(|(w, counts)| {
            assert_eq!(counts, (1..=counts.len() as u64).collect::<Vec<_>>());
            (w, *counts.last().unwrap())
        })
        .collect();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for w in text.split_whitespace() {
        *expected.entry(w.to_string()).or_default() += 1;
    }
    assert_eq!(finals, expected);
}
