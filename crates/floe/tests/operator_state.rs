//! Operator state in running jobs: list, union list and broadcast state
//! and raw keyed and operator state come back after a failover exactly as
//! the restored checkpoint recorded them (same parallelism), and
//! checkpoint notifications reach user functions with Flink's contract.
//!
//! Each function records what it wrote at every checkpoint and what it got
//! back on restore; the test compares the two for the checkpoint the job
//! restored from. A failure is injected once, after checkpoint 2 completed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::with_timeout;
use floe::prelude::*;
use floe::runtime::restart::RestartStrategy;
use floe::state::key_group_for_key;

/// What one test observes, shared with its functions.
#[derive(Default)]
struct Observed {
    /// (subtask, checkpoint) → what `snapshot_state` wrote.
    written: Mutex<HashMap<(u32, u64), Vec<String>>>,
    /// (subtask, restored checkpoint) → what `initialize_state` read.
    restored: Mutex<Vec<(u32, u64, Vec<String>)>>,
    /// Per subtask, the completed ids notified, in arrival order.
    completed: Mutex<BTreeMap<u32, Vec<u64>>>,
    /// Highest completed id notified to anyone.
    max_completed: AtomicU64,
    /// Cleared once the failure was injected.
    armed: AtomicBool,
}

impl Observed {
    fn new() -> Arc<Self> {
        let o = Arc::new(Observed::default());
        o.armed.store(true, Ordering::SeqCst);
        o
    }

    fn completed(&self, subtask: u32, id: u64) {
        self.completed
            .lock()
            .unwrap()
            .entry(subtask)
            .or_default()
            .push(id);
        self.max_completed.fetch_max(id, Ordering::SeqCst);
    }

    /// Panics once, the first time it is asked after checkpoint 2 completed.
    fn maybe_fail(&self) {
        if self.max_completed.load(Ordering::SeqCst) >= 2
            && self.armed.swap(false, Ordering::SeqCst)
        {
            panic!("injected failure after checkpoint 2");
        }
    }

    /// Asserts that every subtask restored what it wrote at the restored
    /// checkpoint (`combine` turns all subtasks' writes into what one
    /// subtask should get back), and that notifications only grow.
    fn check(&self, parallelism: u32, combine: impl Fn(u32, &[Vec<String>]) -> Vec<String>) -> u64 {
        let restored = self.restored.lock().unwrap().clone();
        assert_eq!(
            restored.len(),
            parallelism as usize,
            "one restore per subtask: {restored:?}"
        );
        let written = self.written.lock().unwrap();
        let cp = restored[0].1;
        for (subtask, c, got) in &restored {
            assert_eq!(*c, cp, "every subtask restores the same checkpoint");
            let all: Vec<Vec<String>> = (0..parallelism)
                .map(|s| {
                    written
                        .get(&(s, cp))
                        .unwrap_or_else(|| panic!("subtask {s} wrote nothing at checkpoint {cp}"))
                        .clone()
                })
                .collect();
            assert_eq!(
                got,
                &combine(*subtask, &all),
                "subtask {subtask} at checkpoint {cp}"
            );
        }
        for (subtask, ids) in self.completed.lock().unwrap().iter() {
            // Per run, ids only grow; the restart starts a new run after
            // the restored checkpoint, so the sequence as a whole grows too.
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "subtask {subtask}: {ids:?}"
            );
        }
        cp
    }
}

fn env_with_checkpoints(parallelism: u32) -> StreamEnvironment {
    let env = StreamEnvironment::new();
    env.set_parallelism(parallelism);
    env.enable_checkpointing(Duration::from_millis(20));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 1,
        delay: Duration::from_millis(10),
    });
    env
}

/// Keeps a split list (its own records' count, as text), a union list
/// (one entry per subtask) and reads a broadcast map.
#[derive(Clone)]
struct Tracker {
    observed: Arc<Observed>,
    rules: MapStateDescriptor<String, u32>,
    list: Option<OperatorListState<String>>,
    union: Option<OperatorListState<String>>,
    broadcast: Option<BroadcastState<String, u32>>,
    seen: u64,
    subtask: u32,
}

impl BroadcastProcessFunction<u64, (String, u32), u64> for Tracker {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut ReadOnlyContext<'_>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        self.observed.maybe_fail();
        let factor = self
            .broadcast
            .as_ref()
            .unwrap()
            .get(ctx, &"factor".to_string())?
            .copied()
            .unwrap_or(1);
        self.seen += 1;
        out.collect(v * u64::from(factor));
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        (k, v): (String, u32),
        ctx: &mut BroadcastContext<'_>,
        _: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        self.broadcast.as_ref().unwrap().put(ctx, k, v)?;
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        Some(self)
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        Some(self)
    }
}

impl CheckpointedFunction for Tracker {
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        self.subtask = ctx.task_info().subtask_index;
        let store = ctx.operator_state_store();
        let list = store.get_list_state(&ListStateDescriptor::<String>::new("seen"))?;
        let union = store.get_union_list_state(&ListStateDescriptor::<String>::new("all-seen"))?;
        let broadcast = store.get_broadcast_state(&self.rules)?;
        if let Some(c) = ctx.restored_checkpoint_id() {
            let mut got: Vec<String> = list.get(ctx)?.iter().map(|s| format!("list {s}")).collect();
            let mut union_got: Vec<String> = union
                .get(ctx)?
                .iter()
                .map(|s| format!("union {s}"))
                .collect();
            union_got.sort();
            got.extend(union_got);
            let mut rules: Vec<String> = broadcast
                .entries(ctx)?
                .map(|(k, v)| format!("rule {k}={v}"))
                .collect();
            rules.sort();
            got.extend(rules);
            self.observed
                .restored
                .lock()
                .unwrap()
                .push((self.subtask, c, got));
            self.seen = list.get(ctx)?.first().map_or(0, |s| s.parse().unwrap());
        }
        (self.list, self.union, self.broadcast) = (Some(list), Some(union), Some(broadcast));
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        let entry = format!("{}", self.seen);
        self.list
            .as_ref()
            .unwrap()
            .update(ctx, vec![entry.clone()])?;
        let union = format!("{}:{}", self.subtask, self.seen);
        self.union
            .as_ref()
            .unwrap()
            .update(ctx, vec![union.clone()])?;
        let mut rules: Vec<String> = self
            .broadcast
            .as_ref()
            .unwrap()
            .entries(ctx)?
            .map(|(k, v)| format!("rule {k}={v}"))
            .collect();
        rules.sort();
        let mut w = vec![format!("list {entry}"), format!("union {union}")];
        w.extend(rules);
        self.observed
            .written
            .lock()
            .unwrap()
            .insert((self.subtask, ctx.checkpoint_id()), w);
        Ok(())
    }
}

impl CheckpointListener for Tracker {
    fn notify_checkpoint_complete(&mut self, id: u64) -> anyhow::Result<()> {
        self.observed.completed(self.subtask, id);
        Ok(())
    }
}

#[test]
fn list_union_and_broadcast_state_come_back_unchanged_after_failover() {
    let observed = Observed::new();
    let o = observed.clone();
    let result = with_timeout(60, move || {
        let env = env_with_checkpoints(2);
        let rules = MapStateDescriptor::<String, u32>::new("rules");
        let bcast = env
            .from_collection(vec![("factor".to_string(), 3u32), ("other".to_string(), 7)])
            .broadcast_with(rules.clone());
        let (sink, out) = CollectSink::new();
        env.from_source(
            GeneratorSource::new(20_000, |i| i).with_rate(25_000.0),
            "Numbers",
        )
        .connect(&bcast)
        .process(Tracker {
            observed: o,
            rules,
            list: None,
            union: None,
            broadcast: None,
            seen: 0,
            subtask: 0,
        })
        .uid("tracker")
        .sink_to(sink, "Collect");
        let r = env.execute("operator-state").unwrap();
        (r, out.snapshot().len())
    });
    let (r, emitted) = result;
    assert_eq!(r.restarts, 1, "the injected failure restarted the job once");
    assert!(
        emitted >= 20_000,
        "every number was processed at least once"
    );
    let cp = observed.check(2, |subtask, all| {
        // Own list; every subtask's union entry; the same rules.
        let mut want = vec![all[subtask as usize][0].clone()];
        let mut unions: Vec<String> = all.iter().map(|w| w[1].clone()).collect();
        unions.sort();
        want.extend(unions);
        want.extend(all[subtask as usize][2..].iter().cloned());
        want
    });
    assert!(cp >= 2, "restored from a checkpoint after 2: {cp}");
    let written = observed.written.lock().unwrap();
    assert!(
        written[&(0, cp)].iter().any(|w| w == "rule factor=3"),
        "broadcast state was in the checkpoint: {:?}",
        written[&(0, cp)]
    );
    // Every completed checkpoint was notified to the function, and only
    // completed ones.
    let completed: Vec<u64> = r
        .checkpoints
        .iter()
        .filter(|c| {
            matches!(
                c.status,
                floe::runtime::checkpoint::CheckpointStatus::Completed
            )
        })
        .map(|c| c.id)
        .collect();
    for (subtask, ids) in observed.completed.lock().unwrap().iter() {
        for id in ids {
            assert!(
                completed.contains(id),
                "subtask {subtask} notified of {id}, not completed"
            );
        }
        assert_eq!(
            ids.last(),
            completed.last(),
            "subtask {subtask}: the final checkpoint was notified"
        );
    }
}

/// Writes, per key group it owns, the number of records it saw there as
/// raw keyed state, and its total as raw operator state.
#[derive(Clone)]
struct RawCounter {
    observed: Arc<Observed>,
    per_group: BTreeMap<u16, u64>,
    total: u64,
    subtask: u32,
}

fn describe_raw(per_group: &BTreeMap<u16, u64>, total: u64) -> Vec<String> {
    let mut v: Vec<String> = per_group
        .iter()
        .map(|(kg, n)| format!("kg {kg}: {n}"))
        .collect();
    v.push(format!("total {total}"));
    v
}

impl KeyedProcessFunction<u64, u64, u64> for RawCounter {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        self.observed.maybe_fail();
        let kg = key_group_for_key(ctx.current_key(), ctx.task_info().max_parallelism);
        *self.per_group.entry(kg).or_default() += 1;
        self.total += 1;
        out.collect(v);
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        Some(self)
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        Some(self)
    }
}

impl CheckpointedFunction for RawCounter {
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        self.subtask = ctx.task_info().subtask_index;
        let Some(c) = ctx.restored_checkpoint_id() else {
            return Ok(());
        };
        for (kg, bytes) in ctx.raw_keyed_state() {
            self.per_group
                .insert(*kg, u64::from_le_bytes(bytes.as_slice().try_into()?));
        }
        for part in ctx.raw_operator_state() {
            self.total += u64::from_le_bytes(part.as_slice().try_into()?);
        }
        self.observed.restored.lock().unwrap().push((
            self.subtask,
            c,
            describe_raw(&self.per_group, self.total),
        ));
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        for (kg, n) in &self.per_group {
            ctx.raw_keyed_output(*kg)?
                .extend_from_slice(&n.to_le_bytes());
        }
        ctx.raw_operator_output()
            .extend_from_slice(&self.total.to_le_bytes());
        self.observed.written.lock().unwrap().insert(
            (self.subtask, ctx.checkpoint_id()),
            describe_raw(&self.per_group, self.total),
        );
        Ok(())
    }
}

impl CheckpointListener for RawCounter {
    fn notify_checkpoint_complete(&mut self, id: u64) -> anyhow::Result<()> {
        self.observed.completed(self.subtask, id);
        Ok(())
    }
}

#[test]
fn raw_keyed_and_operator_state_round_trip_through_a_checkpoint() {
    let observed = Observed::new();
    let o = observed.clone();
    let r = with_timeout(60, move || {
        let env = env_with_checkpoints(2);
        let (sink, _) = CollectSink::new();
        env.from_source(
            GeneratorSource::new(20_000, |i| i).with_rate(25_000.0),
            "Numbers",
        )
        .key_by(|v: &u64| v % 50)
        .process(RawCounter {
            observed: o,
            per_group: BTreeMap::new(),
            total: 0,
            subtask: 0,
        })
        .uid("raw-counter")
        .sink_to(sink, "Collect");
        env.execute("raw-state").unwrap()
    });
    assert_eq!(r.restarts, 1);
    // Same parallelism: each subtask gets back its own key groups and its
    // own raw operator part.
    let cp = observed.check(2, |subtask, all| all[subtask as usize].clone());
    assert!(cp >= 2);
    let written = observed.written.lock().unwrap();
    let groups = written[&(0, cp)].len() + written[&(1, cp)].len() - 2;
    assert!(groups > 10, "raw keyed state of many key groups: {groups}");
}
