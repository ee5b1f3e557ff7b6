//! Every kind of keyed state used through real jobs at parallelism 1, 2 and 4,
//! checked against a plain `HashMap` model computed over the same input.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{group_by_key, splitmix};
use floe::prelude::*;

const PARALLELISMS: [u32; 3] = [1, 2, 4];

fn word_key(i: u64) -> String {
    const WORDS: [&str; 7] = ["alpha", "beta", "gamma", "delta", "", "ünïcödé", "a b"];
    let r = splitmix(i);
    format!("{}-{}", WORDS[(r % 7) as usize], (r >> 8) % 5)
}

// ---------------------------------------------------------------------------
// ValueState: per String key, a running (count, sum), cleared on multiples of 50.
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct CountSum {
    count: Option<ValueState<u64>>,
    sum: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<String, (String, u64), (String, (u64, u64))> for CountSum {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, String>) -> anyhow::Result<()> {
        self.count = Some(ctx.get_state(&ValueStateDescriptor::new("count"))?);
        self.sum = Some(ctx.get_state(&ValueStateDescriptor::new("sum"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, v): (String, u64),
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, (String, (u64, u64))>,
    ) -> anyhow::Result<()> {
        assert_eq!(ctx.current_key(), &k, "current key is the record's key");
        let (count, sum) = (self.count.as_ref().unwrap(), self.sum.as_ref().unwrap());
        if v % 50 == 0 {
            count.clear(ctx)?;
            sum.clear(ctx)?;
            assert_eq!(count.value(ctx)?, None, "cleared value state is empty");
            out.collect((k, (0, 0)));
            return Ok(());
        }
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        let s = sum.value(ctx)?.unwrap_or(0) + v;
        count.update(ctx, n)?;
        sum.update(ctx, s)?;
        out.collect((k, (n, s)));
        Ok(())
    }
}

#[test]
fn value_state_with_string_keys() {
    let input: Vec<(String, u64)> = (0..3000)
        .map(|i| (word_key(i), splitmix(i + 1_000_000) % 1000))
        .collect();
    // Model: the expected output sequence per key.
    let mut model: HashMap<String, (u64, u64)> = HashMap::new();
    let mut expected: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for (k, v) in &input {
        let e = model.entry(k.clone()).or_default();
        if v % 50 == 0 {
            *e = (0, 0);
        } else {
            *e = (e.0 + 1, e.1 + v);
        }
        expected.entry(k.clone()).or_default().push(*e);
    }
    assert!(expected.len() >= 30, "the input has many keys");
    for p in PARALLELISMS {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.from_collection(input.clone())
            .key_by(|(k, _): &(String, u64)| k.clone())
            .process(CountSum::default())
            .sink_to(sink, "collect");
        env.execute("value-state").unwrap();
        let got = group_by_key(&out.snapshot());
        assert_eq!(
            got, expected,
            "running (count, sum) per key at parallelism {p}"
        );
    }
}

// ---------------------------------------------------------------------------
// ListState: per u64 key, the recent values (add, add_all, get, update, clear).
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Recent {
    list: Option<ListState<u64>>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, Vec<u64>)> for Recent {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.list = Some(ctx.get_list_state(&ListStateDescriptor::new("recent"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, v): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, Vec<u64>)>,
    ) -> anyhow::Result<()> {
        let list = self.list.as_ref().unwrap();
        if v % 41 == 0 {
            list.clear(ctx)?;
        } else if v % 7 == 0 {
            list.add_all(ctx, [v, v + 1])?;
        } else {
            list.add(ctx, v)?;
        }
        let l: Vec<u64> = list.get(ctx)?.collect();
        if l.len() > 8 {
            list.update(ctx, l[l.len() - 4..].to_vec())?;
        }
        out.collect((k, list.get(ctx)?.collect()));
        Ok(())
    }
}

#[test]
fn list_state_keeps_recent_values_per_key() {
    let input: Vec<(u64, u64)> = (0..2000)
        .map(|i| (splitmix(i) % 37, splitmix(i + 77) % 500))
        .collect();
    let mut model: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut expected: BTreeMap<u64, Vec<Vec<u64>>> = BTreeMap::new();
    for (k, v) in &input {
        let l = model.entry(*k).or_default();
        if v % 41 == 0 {
            l.clear();
        } else if v % 7 == 0 {
            l.extend([*v, v + 1]);
        } else {
            l.push(*v);
        }
        if l.len() > 8 {
            *l = l[l.len() - 4..].to_vec();
        }
        expected.entry(*k).or_default().push(l.clone());
    }
    for p in PARALLELISMS {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.from_collection(input.clone())
            .key_by(|(k, _): &(u64, u64)| *k)
            .process(Recent::default())
            .sink_to(sink, "collect");
        env.execute("list-state").unwrap();
        let got = group_by_key(&out.snapshot());
        assert_eq!(got, expected, "lists per key at parallelism {p}");
    }
}

// ---------------------------------------------------------------------------
// MapState: per String key, value bucket -> occurrences; a bucket reaching 4
// occurrences is removed.
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Occurrences {
    map: Option<MapState<u64, u64>>,
}

impl KeyedProcessFunction<String, (String, u64), (String, Vec<(u64, u64)>)> for Occurrences {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, String>) -> anyhow::Result<()> {
        self.map = Some(ctx.get_map_state(&MapStateDescriptor::new("occurrences"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, v): (String, u64),
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, (String, Vec<(u64, u64)>)>,
    ) -> anyhow::Result<()> {
        let map = self.map.as_ref().unwrap();
        let bucket = v % 5;
        let before = map.get(ctx, &bucket)?;
        assert_eq!(map.contains(ctx, &bucket)?, before.is_some());
        let n = before.unwrap_or(0) + 1;
        if n == 4 {
            assert_eq!(map.remove(ctx, &bucket)?, Some(3));
        } else {
            map.put(ctx, bucket, n)?;
        }
        let mut entries = map.entries(ctx)?.collect::<Vec<_>>();
        entries.sort();
        assert_eq!(map.is_empty(ctx)?, entries.is_empty());
        let mut keys = map.keys(ctx)?.collect::<Vec<_>>();
        keys.sort();
        assert_eq!(keys, entries.iter().map(|e| e.0).collect::<Vec<_>>());
        let mut values = map.values(ctx)?.collect::<Vec<_>>();
        values.sort();
        let mut expected_values: Vec<u64> = entries.iter().map(|e| e.1).collect();
        expected_values.sort();
        assert_eq!(values, expected_values);
        out.collect((k, entries));
        Ok(())
    }
}

#[test]
fn map_state_counts_occurrences_per_key() {
    let input: Vec<(String, u64)> = (0..2500)
        .map(|i| (word_key(i + 5), splitmix(i + 3) % 1000))
        .collect();
    let mut model: HashMap<String, BTreeMap<u64, u64>> = HashMap::new();
    let mut expected: BTreeMap<String, Vec<Vec<(u64, u64)>>> = BTreeMap::new();
    for (k, v) in &input {
        let m = model.entry(k.clone()).or_default();
        let n = m.get(&(v % 5)).copied().unwrap_or(0) + 1;
        if n == 4 {
            m.remove(&(v % 5));
        } else {
            m.insert(v % 5, n);
        }
        expected
            .entry(k.clone())
            .or_default()
            .push(m.iter().map(|(a, b)| (*a, *b)).collect());
    }
    for p in PARALLELISMS {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.from_collection(input.clone())
            .key_by(|(k, _): &(String, u64)| k.clone())
            .process(Occurrences::default())
            .sink_to(sink, "collect");
        env.execute("map-state").unwrap();
        let got = group_by_key(&out.snapshot());
        assert_eq!(got, expected, "map entries per key at parallelism {p}");
    }
}

// ---------------------------------------------------------------------------
// ReducingState: per (u32, String) key, the running maximum. The input comes
// from a parallel generator, so arrival order per key varies; the maximum
// must not depend on it.
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct RunningMax {
    max: Option<ReducingState<i64>>,
}

impl KeyedProcessFunction<(u32, String), ((u32, String), i64), ((u32, String), i64)>
    for RunningMax
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, (u32, String)>) -> anyhow::Result<()> {
        self.max = Some(
            ctx.get_reducing_state(&ReducingStateDescriptor::new("max", |a: i64, b: i64| {
                a.max(b)
            }))?,
        );
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, v): ((u32, String), i64),
        ctx: &mut KeyedContext<'_, (u32, String)>,
        out: &mut Collector<'_, ((u32, String), i64)>,
    ) -> anyhow::Result<()> {
        let max = self.max.as_ref().unwrap();
        let before = max.get(ctx)?;
        let now = max.add(ctx, v)?;
        assert_eq!(now, before.map_or(v, |b| b.max(v)));
        assert_eq!(max.get(ctx)?, Some(now));
        out.collect((k, now));
        Ok(())
    }
}

fn reducing_record(i: u64) -> ((u32, String), i64) {
    let r = splitmix(i);
    (
        ((r % 13) as u32, format!("k{}", (r >> 16) % 3)),
        (splitmix(r) % 100_000) as i64 - 50_000,
    )
}

#[test]
fn reducing_state_keeps_running_max() {
    const N: u64 = 5000;
    let mut model: HashMap<(u32, String), (i64, usize)> = HashMap::new();
    for i in 0..N {
        let (k, v) = reducing_record(i);
        let e = model.entry(k).or_insert((i64::MIN, 0));
        *e = (e.0.max(v), e.1 + 1);
    }
    for p in PARALLELISMS {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.from_source(GeneratorSource::new(N, reducing_record), "gen")
            .key_by(|(k, _): &((u32, String), i64)| k.clone())
            .process(RunningMax::default())
            .sink_to(sink, "collect");
        env.execute("reducing-state").unwrap();
        let got = group_by_key(&out.snapshot());
        assert_eq!(got.len(), model.len());
        for (k, outs) in &got {
            let (max, count) = model[k];
            assert_eq!(outs.len(), count, "one output per input of {k:?} (p={p})");
            assert!(
                outs.windows(2).all(|w| w[0] <= w[1]),
                "running max of {k:?} never decreases (p={p})"
            );
            assert_eq!(*outs.last().unwrap(), max, "final max of {k:?} (p={p})");
        }
    }
}

// ---------------------------------------------------------------------------
// AggregatingState: per u64 key, the average with a custom AggregateFunction.
// ---------------------------------------------------------------------------

struct Average;

impl AggregateFunction for Average {
    type In = u64;
    type Acc = (u64, u64);
    type Out = f64;

    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }

    fn add(&self, value: u64, acc: &mut (u64, u64)) {
        acc.0 += value;
        acc.1 += 1;
    }

    fn get_result(&self, acc: &(u64, u64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }

    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

#[derive(Clone, Default)]
struct AvgFn {
    avg: Option<AggregatingState<Average>>,
    /// Number of `close` calls, shared by all subtasks.
    closed: Arc<AtomicU32>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, f64)> for AvgFn {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.avg =
            Some(ctx.get_aggregating_state(&AggregatingStateDescriptor::new("avg", Average))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, v): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, f64)>,
    ) -> anyhow::Result<()> {
        let avg = self.avg.as_ref().unwrap();
        avg.add(ctx, v)?;
        out.collect((k, avg.get(ctx)?.expect("an average after add")));
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn aggregating_state_computes_average_per_key() {
    const N: u64 = 6000;
    let rec = |i: u64| (splitmix(i) % 50, splitmix(i ^ 0xabc) % 1000);
    let mut model: HashMap<u64, (u64, u64)> = HashMap::new();
    for i in 0..N {
        let (k, v) = rec(i);
        let e = model.entry(k).or_default();
        *e = (e.0 + v, e.1 + 1);
    }
    for p in PARALLELISMS {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        let f = AvgFn::default();
        let closed = f.closed.clone();
        env.from_source(GeneratorSource::new(N, rec), "gen")
            .key_by(|(k, _): &(u64, u64)| *k)
            .process(f)
            .sink_to(sink, "collect");
        env.execute("aggregating-state").unwrap();
        assert_eq!(closed.load(Ordering::SeqCst), p, "close() once per subtask");
        let got = group_by_key(&out.snapshot());
        assert_eq!(got.len(), model.len());
        for (k, outs) in &got {
            let (sum, count) = model[k];
            assert_eq!(outs.len() as u64, count, "one output per input (p={p})");
            // Sums of integers are exact, so the final average is too.
            assert_eq!(
                *outs.last().unwrap(),
                sum as f64 / count as f64,
                "average of key {k} (p={p})"
            );
        }
    }
}

#[test]
fn aggregate_function_merge_combines_partial_accumulators() {
    let f = Average;
    let mut a = f.create_accumulator();
    let mut b = f.create_accumulator();
    [1, 2, 3].into_iter().for_each(|v| f.add(v, &mut a));
    [10, 20].into_iter().for_each(|v| f.add(v, &mut b));
    assert_eq!(f.get_result(&f.merge(a, b)), 36.0 / 5.0);
}

// ---------------------------------------------------------------------------
// State of different operators and keys is isolated.
// ---------------------------------------------------------------------------

/// Counts records per key in a value state named "count"; emits (key, count).
#[derive(Clone, Default)]
struct Counter {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for Counter {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.count = Some(ctx.get_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, _): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        let c = self.count.as_ref().unwrap();
        let n = c.value(ctx)?.unwrap_or(0) + 1;
        c.update(ctx, n)?;
        out.collect((k, n));
        Ok(())
    }
}

#[test]
fn two_operators_with_the_same_state_name_have_separate_state() {
    // Stage 1 counts by k % 10; stage 2 re-keys its output by the count and
    // counts again with a state of the same name.
    let input: Vec<(u64, u64)> = (0..1000).map(|i| (i % 10, i)).collect();
    for p in PARALLELISMS {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.from_collection(input.clone())
            .key_by(|(k, _): &(u64, u64)| *k)
            .process(Counter::default())
            .map(|(_, n): (u64, u64)| (n, 0u64))
            .key_by(|(n, _): &(u64, u64)| *n)
            .process(Counter::default())
            .sink_to(sink, "collect");
        env.execute("isolation").unwrap();
        // Stage 1 emits counts 1..=100 for each of the 10 keys, so stage 2 sees
        // every count exactly 10 times.
        let got = group_by_key(&out.snapshot());
        assert_eq!(got.len(), 100);
        for (n, outs) in got {
            assert!((1..=100).contains(&n));
            assert_eq!(outs, (1..=10).collect::<Vec<u64>>(), "count {n} (p={p})");
        }
    }
}

// ---------------------------------------------------------------------------
// RichMapFunction and RichFlatMapFunction on a keyed stream.
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct SeqNo {
    seq: Option<ValueState<u32>>,
}

impl RichMapFunction<String, String, (String, u32)> for SeqNo {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, String>) -> anyhow::Result<()> {
        self.seq = Some(ctx.get_state(&ValueStateDescriptor::new("seq"))?);
        Ok(())
    }

    fn map(
        &mut self,
        w: String,
        ctx: &mut KeyedContext<'_, String>,
    ) -> anyhow::Result<(String, u32)> {
        let s = self.seq.as_ref().unwrap();
        let n = s.value(ctx)?.unwrap_or(0) + 1;
        s.update(ctx, n)?;
        Ok((w, n))
    }
}

/// Emits a word only the first time it is seen (deduplication).
#[derive(Clone, Default)]
struct Dedup {
    seen: Option<ValueState<bool>>,
}

impl RichFlatMapFunction<String, String, String> for Dedup {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, String>) -> anyhow::Result<()> {
        self.seen = Some(ctx.get_state(&ValueStateDescriptor::new("seen"))?);
        Ok(())
    }

    fn flat_map(
        &mut self,
        w: String,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, String>,
    ) -> anyhow::Result<()> {
        let s = self.seen.as_ref().unwrap();
        if s.value(ctx)?.is_none() {
            s.update(ctx, true)?;
            out.collect(w);
        }
        Ok(())
    }
}

#[test]
fn rich_map_and_flat_map_on_keyed_streams() {
    let words: Vec<String> = (0..900).map(|i| word_key(i % 97)).collect();
    let mut expected_seq: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for w in &words {
        let v = expected_seq.entry(w.clone()).or_default();
        v.push(v.len() as u32 + 1);
    }
    let mut distinct: Vec<String> = expected_seq.keys().cloned().collect();
    distinct.sort();
    for p in PARALLELISMS {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (seq_sink, seq_out) = CollectSink::new();
        let (dedup_sink, dedup_out) = CollectSink::new();
        let words_stream = env.from_collection(words.clone());
        words_stream
            .key_by(|w: &String| w.clone())
            .map(SeqNo::default())
            .sink_to(seq_sink, "seq");
        words_stream
            .key_by(|w: &String| w.clone())
            .flat_map(Dedup::default())
            .sink_to(dedup_sink, "dedup");
        env.execute("rich").unwrap();
        assert_eq!(group_by_key(&seq_out.snapshot()), expected_seq, "p={p}");
        assert_eq!(common::sorted(dedup_out.snapshot()), distinct, "p={p}");
    }
}
