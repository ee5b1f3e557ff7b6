//! Partitioning and topology: chains of stateless operators, union, rebalance,
//! broadcast, forward, fan-out, per-operator parallelism and key-group routing.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::{TaggingSink, sorted, splitmix};
use floe::prelude::*;
use floe::state::key_group::operator_index_for_key_group;
use floe::state::{KeyGroupRange, key_group_for_key};

#[test]
fn map_filter_flat_map_chain() {
    const N: u64 = 10_000;
    let mut expected = Vec::new();
    for i in 0..N {
        let x = i * 3;
        if x % 2 == 0 {
            expected.push(x.to_string());
            if x % 4 == 0 {
                expected.push(format!("{x}+"));
            }
        }
    }
    for p in [1, 2, 4] {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.from_sequence(0, N - 1)
            .map(|x: u64| x * 3)
            .filter(|x: &u64| x % 2 == 0)
            .flat_map(|x: u64, out: &mut Collector<'_, String>| {
                out.collect(x.to_string());
                if x % 4 == 0 {
                    out.collect(format!("{x}+"));
                }
            })
            .sink_to(sink, "collect");
        env.execute("chain").unwrap();
        assert_eq!(
            sorted(out.snapshot()),
            sorted(expected.clone()),
            "parallelism {p}"
        );
    }
}

#[test]
fn union_of_three_streams_with_unequal_parallelism() {
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let a = env.from_collection((0..100u64).collect()); // parallelism 1
    let b = env
        .from_source(GeneratorSource::new(500, |i| 1000 + i), "b")
        .set_parallelism(3);
    let c = env.from_sequence(5000, 5999); // parallelism 2
    let (sink, out) = TaggingSink::new();
    a.union(&[b, c])
        .map(|x: u64| x + 1)
        .set_parallelism(2)
        .sink_to(sink, "collect")
        .set_parallelism(2);
    env.execute("union").unwrap();
    let expected: Vec<u64> = (0..100)
        .chain(1000..1500)
        .chain(5000..6000)
        .map(|x| x + 1)
        .collect();
    assert_eq!(sorted(out.values()), expected, "each record exactly once");
    assert_eq!(out.finished(), BTreeSet::from([0, 1]));
}

#[test]
fn union_into_a_keyed_operator() {
    let env = StreamEnvironment::new();
    env.set_parallelism(3);
    let a = env.from_collection((0..300u64).map(|i| (i % 7, 1u64)).collect());
    let b = env.from_source(GeneratorSource::new(700, |i| (i % 7, 1u64)), "b");
    let (sink, out) = CollectSink::new();
    a.union(&[b])
        .key_by(|(k, _): &(u64, u64)| *k)
        .sum(|(_, n): &mut (u64, u64)| n)
        .sink_to(sink, "collect");
    env.execute("union-keyed").unwrap();
    let mut finals: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, n) in out.snapshot() {
        let f = finals.entry(k).or_default();
        *f = (*f).max(n);
    }
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for i in (0..300).chain(0..700) {
        *expected.entry(i % 7).or_default() += 1;
    }
    assert_eq!(finals, expected);
    assert_eq!(out.len(), 1000);
}

#[test]
fn union_of_a_stream_with_itself_delivers_each_record_twice() {
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let s = env.from_sequence(0, 99);
    let (sink, out) = CollectSink::new();
    s.union(std::slice::from_ref(&s))
        .map(|x: u64| x)
        .sink_to(sink, "collect");
    env.execute("self-union").unwrap();
    let expected: Vec<u64> = sorted((0..100).chain(0..100).collect());
    assert_eq!(sorted(out.snapshot()), expected);
}

#[test]
fn rebalance_from_one_sender_deals_round_robin() {
    let env = StreamEnvironment::new();
    env.set_parallelism(4);
    let (sink, out) = TaggingSink::new();
    env.from_collection((0..1000u64).collect())
        .rebalance()
        .sink_to(sink, "collect");
    env.execute("rebalance").unwrap();
    let by = out.by_subtask();
    assert_eq!(by.len(), 4);
    for (s, records) in &by {
        assert_eq!(records.len(), 250, "subtask {s} gets a quarter");
        // A single sender deals in order, so subtask s gets s, s+4, s+8, ...
        assert!(
            records.iter().all(|r| r % 4 == *s as u64),
            "subtask {s}: round robin"
        );
    }
    assert_eq!(sorted(out.values()), (0..1000).collect::<Vec<_>>());
}

#[test]
fn rebalance_spreads_a_skewed_stream_between_equal_parallelism() {
    // Only source subtask 0 emits (subtask 1's share is filtered away).
    let build = |rebalance: bool| {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        let (sink, out) = TaggingSink::new();
        let s = env.from_sequence(0, 1999).filter(|x: &u64| *x < 1000);
        let s = if rebalance {
            s.rebalance()
        } else {
            s.forward()
        };
        s.sink_to(sink, "collect");
        env.execute("skew").unwrap();
        out
    };
    let rebalanced = build(true).by_subtask();
    assert_eq!(rebalanced[&0].len(), 500);
    assert_eq!(rebalanced[&1].len(), 500);

    // Forward keeps each subtask's records on the same subtask, in order.
    let forwarded = build(false).by_subtask();
    assert_eq!(forwarded[&0], (0..1000).collect::<Vec<u64>>());
    assert!(!forwarded.contains_key(&1));
}

#[test]
fn forward_with_equal_parallelism_keeps_records_on_their_subtask() {
    let env = StreamEnvironment::new();
    env.set_parallelism(3);
    let (sink, out) = TaggingSink::new();
    env.from_sequence(0, 899)
        .map(|x: u64| x * 2)
        .forward()
        .map(|x: u64| x + 1)
        .forward()
        .sink_to(sink, "collect");
    env.execute("forward").unwrap();
    let by = out.by_subtask();
    for s in 0..3u64 {
        // Generator shares are contiguous: subtask s has s*300 .. (s+1)*300.
        let expected: Vec<u64> = (s * 300..(s + 1) * 300).map(|x| x * 2 + 1).collect();
        assert_eq!(by[&(s as u32)], expected, "subtask {s}");
    }
}

#[test]
fn broadcast_delivers_every_record_to_every_subtask() {
    let env = StreamEnvironment::new();
    env.set_parallelism(3);
    let (sink, out) = TaggingSink::new();
    env.from_collection((0..100u64).collect())
        .broadcast()
        .sink_to(sink, "collect");
    env.execute("broadcast").unwrap();
    let by = out.by_subtask();
    assert_eq!(by.len(), 3);
    for s in 0..3 {
        assert_eq!(
            by[&s],
            (0..100).collect::<Vec<_>>(),
            "subtask {s}, in order"
        );
    }

    // From a parallel producer into more consumers.
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let (sink, out) = TaggingSink::new();
    env.from_sequence(0, 499)
        .broadcast()
        .map(|x: u64| x)
        .set_parallelism(3)
        .sink_to(sink, "collect")
        .set_parallelism(3);
    env.execute("broadcast-2").unwrap();
    let by = out.by_subtask();
    assert_eq!(by.len(), 3);
    for (s, records) in by {
        assert_eq!(sorted(records), (0..500).collect::<Vec<_>>(), "subtask {s}");
    }
}

#[test]
fn fan_out_gives_every_consumer_the_full_stream() {
    for p in [1, 2] {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let s = env.from_sequence(0, 2999);
        let (a, out_a) = CollectSink::new();
        let (b, out_b) = CollectSink::new();
        let (c, out_c) = CollectSink::new();
        s.map(|x: u64| x * 10).sink_to(a, "a");
        s.filter(|x: &u64| x % 3 == 0).sink_to(b, "b");
        s.sink_to(c, "c");
        env.execute("fan-out").unwrap();
        assert_eq!(
            sorted(out_a.snapshot()),
            (0..3000).map(|x| x * 10).collect::<Vec<_>>()
        );
        assert_eq!(
            sorted(out_b.snapshot()),
            (0..3000).filter(|x| x % 3 == 0).collect::<Vec<_>>()
        );
        assert_eq!(sorted(out_c.snapshot()), (0..3000).collect::<Vec<_>>());
    }
}

/// Emits, per record, where it was processed: (key, subtask, parallelism,
/// max parallelism).
#[derive(Clone, Default)]
struct WhereAmI;

impl KeyedProcessFunction<u64, u64, (u64, u32, u32, u32)> for WhereAmI {
    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u32, u32, u32)>,
    ) -> anyhow::Result<()> {
        assert_eq!(*ctx.current_key(), value);
        let info = ctx.task_info();
        out.collect((
            value,
            info.subtask_index,
            info.parallelism,
            info.max_parallelism,
        ));
        Ok(())
    }
}

/// Runs 0..2000 (each key 3 times) through `WhereAmI` and checks routing.
fn check_routing(
    env_max: Option<u32>,
    op_max: Option<u32>,
    p: u32,
    expected_max: u32,
) -> Vec<common::OpenedSubtask> {
    let env = StreamEnvironment::new();
    env.set_parallelism(p);
    if let Some(m) = env_max {
        env.set_max_parallelism(m);
    }
    let (sink, out) = TaggingSink::new();
    let keys: Vec<u64> = (0..3).flat_map(|_| (0..2000).map(splitmix)).collect();
    let mut keyed = env
        .from_collection(keys)
        .key_by(|k: &u64| *k)
        .process(WhereAmI);
    if let Some(m) = op_max {
        keyed = keyed.set_max_parallelism(m);
    }
    keyed.sink_to(sink, "collect");
    env.execute("routing").unwrap();
    let mut subtask_of: HashMap<u64, u32> = HashMap::new();
    let mut used = BTreeSet::new();
    for (key, subtask, parallelism, max_p) in out.values() {
        assert_eq!(parallelism, p);
        assert_eq!(max_p, expected_max, "max parallelism seen by the operator");
        let prev = *subtask_of.entry(key).or_insert(subtask);
        assert_eq!(prev, subtask, "key {key} stays on one subtask");
        let kg = key_group_for_key(&key, max_p);
        assert!(
            KeyGroupRange::for_operator_index(max_p, p, subtask).contains(kg),
            "key {key} (key group {kg}) is in subtask {subtask}'s range"
        );
        assert_eq!(operator_index_for_key_group(max_p, p, kg), subtask);
        used.insert(subtask);
    }
    assert_eq!(subtask_of.len(), 2000);
    assert_eq!(used.len() as u32, p, "every subtask gets keys");
    out.opened()
}

#[test]
fn key_by_routes_each_key_to_the_owner_of_its_key_group() {
    for p in [1, 2, 3, 4] {
        let opened = check_routing(None, None, p, 128);
        assert!(opened.iter().all(|o| o.max_parallelism == 128));
    }
}

#[test]
fn max_parallelism_from_env_and_operator_is_respected() {
    // Job-wide: every operator gets 7 key groups.
    let opened = check_routing(Some(7), None, 3, 7);
    assert!(opened.iter().all(|o| o.max_parallelism == 7), "{opened:?}");
    // Operator-level wins over the job-wide value for that operator only.
    let opened = check_routing(Some(7), Some(13), 4, 13);
    assert!(opened.iter().all(|o| o.max_parallelism == 7), "{opened:?}");
    // Operator-level without a job-wide value.
    let opened = check_routing(None, Some(300), 2, 300);
    assert!(
        opened.iter().all(|o| o.max_parallelism == 128),
        "{opened:?}"
    );
    // As many key groups as subtasks: one key group each.
    check_routing(Some(4), None, 4, 4);
}

#[test]
fn per_operator_parallelism_names_and_uids() {
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let (sink, out) = TaggingSink::new();
    env.from_collection((0..500u64).collect())
        .map(|x: u64| x + 1)
        .set_parallelism(3)
        .key_by(|x: &u64| *x)
        .process(WhereAmI)
        .set_parallelism(4)
        .map(|(k, s, p, _): (u64, u32, u32, u32)| (k, s, p))
        .sink_to(sink, "tagged")
        .name("my sink")
        .uid("sink-uid")
        .set_parallelism(5);
    env.execute("parallelism").unwrap();
    let opened = out.opened();
    assert_eq!(
        opened.iter().map(|o| o.subtask).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(
        opened
            .iter()
            .all(|o| o.parallelism == 5 && o.operator == "my sink" && o.uid == "sink-uid")
    );
    let values = out.values();
    assert_eq!(values.len(), 500);
    assert!(values.iter().all(|(_, s, p)| *p == 4 && *s < 4));
    assert_eq!(
        values.iter().map(|v| v.1).collect::<BTreeSet<_>>().len(),
        4,
        "all four keyed subtasks used"
    );
    assert_eq!(out.finished(), BTreeSet::from([0, 1, 2, 3, 4]));
}

#[test]
fn diamond_with_tiny_batches_and_channels_does_not_deadlock() {
    let (sink, out) = TaggingSink::new();
    common::with_timeout(30, move || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.set_config("floe.runtime.batch-size", "1");
        env.set_config("floe.runtime.channel-capacity", "1");
        let s = env.from_sequence(0, 1999);
        let a = s.map(|x: u64| x * 2).set_parallelism(3);
        let b = s.flat_map(|x: u64, out: &mut Collector<'_, u64>| {
            out.collect(x * 2 + 1);
            out.collect(x * 2 + 1);
        });
        a.union(&[b])
            .key_by(|x: &u64| x % 2)
            .process(PassThrough)
            .sink_to(sink, "collect");
        env.execute("diamond").unwrap();
    });
    let values = out.values();
    assert_eq!(values.len(), 6000);
    let evens: Vec<u64> = sorted(values.iter().copied().filter(|x| x % 2 == 0).collect());
    assert_eq!(evens, (0..2000).map(|x| x * 2).collect::<Vec<_>>());
    let odds = values.iter().filter(|x| *x % 2 == 1).count();
    assert_eq!(odds, 4000);
}

/// Passes records through a keyed operator unchanged.
#[derive(Clone)]
struct PassThrough;

impl KeyedProcessFunction<u64, u64, u64> for PassThrough {
    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        assert_eq!(*ctx.current_key(), value % 2);
        out.collect(value);
        Ok(())
    }
}
