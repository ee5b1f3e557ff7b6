//! Helpers shared by the integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe::prelude::*;

/// Runs `f` on its own thread and fails the test if it does not return within
/// `secs` seconds (a hung job must fail the test, not hang the suite).
pub fn with_timeout<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("job did not finish within {secs} s (hang?)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: re-raise its panic here.
            match handle.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => unreachable!("closure returned without sending"),
            }
        }
    }
}

/// SplitMix64: a deterministic pseudo-random sequence for test inputs.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one sink subtask saw when it opened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenedSubtask {
    pub operator: String,
    pub uid: String,
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
}

/// Shared state of a [`TaggingSink`].
pub struct Tagged<T> {
    /// (subtask index, record), in arrival order per subtask.
    pub records: Vec<(u32, T)>,
    /// One entry per opened subtask.
    pub opened: Vec<OpenedSubtask>,
    /// Subtask indices whose `finish` ran.
    pub finished: Vec<u32>,
}

/// A sink that remembers which subtask received each record, which subtasks
/// opened (with their `TaskInfo`), and which finished.
pub struct TaggingSink<T> {
    shared: Arc<Mutex<Tagged<T>>>,
    subtask: Option<u32>,
}

impl<T> Clone for TaggingSink<T> {
    fn clone(&self) -> Self {
        TaggingSink {
            shared: self.shared.clone(),
            subtask: None,
        }
    }
}

/// Read side of a [`TaggingSink`].
pub struct TaggedHandle<T>(Arc<Mutex<Tagged<T>>>);

impl<T: Clone> TaggedHandle<T> {
    pub fn records(&self) -> Vec<(u32, T)> {
        self.0.lock().unwrap().records.clone()
    }

    pub fn values(&self) -> Vec<T> {
        self.records().into_iter().map(|(_, r)| r).collect()
    }

    pub fn opened(&self) -> Vec<OpenedSubtask> {
        let mut o = self.0.lock().unwrap().opened.clone();
        o.sort();
        o
    }

    pub fn finished(&self) -> BTreeSet<u32> {
        self.0.lock().unwrap().finished.iter().copied().collect()
    }

    /// Records per subtask index, in arrival order.
    pub fn by_subtask(&self) -> BTreeMap<u32, Vec<T>> {
        let mut m: BTreeMap<u32, Vec<T>> = BTreeMap::new();
        for (s, r) in self.records() {
            m.entry(s).or_default().push(r);
        }
        m
    }
}

impl<T> TaggingSink<T> {
    pub fn new() -> (Self, TaggedHandle<T>) {
        let shared = Arc::new(Mutex::new(Tagged {
            records: Vec::new(),
            opened: Vec::new(),
            finished: Vec::new(),
        }));
        (
            TaggingSink {
                shared: shared.clone(),
                subtask: None,
            },
            TaggedHandle(shared),
        )
    }
}

impl<T: Send + 'static> SinkWriter<T> for TaggingSink<T> {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.subtask = Some(info.subtask_index);
        self.shared.lock().unwrap().opened.push(OpenedSubtask {
            operator: info.operator_name.to_string(),
            uid: info.uid.to_string(),
            subtask: info.subtask_index,
            parallelism: info.parallelism,
            max_parallelism: info.max_parallelism,
        });
        Ok(())
    }

    fn write(&mut self, value: T) -> anyhow::Result<()> {
        let s = self.subtask.expect("write after open");
        self.shared.lock().unwrap().records.push((s, value));
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        let s = self.subtask.expect("finish after open");
        self.shared.lock().unwrap().finished.push(s);
        Ok(())
    }
}

/// Groups `(key, value)` outputs by key, keeping their order.
pub fn group_by_key<K: Ord + Clone, V: Clone>(records: &[(K, V)]) -> BTreeMap<K, Vec<V>> {
    let mut m: BTreeMap<K, Vec<V>> = BTreeMap::new();
    for (k, v) in records {
        m.entry(k.clone()).or_default().push(v.clone());
    }
    m
}

/// Sorted copy.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// A keyed running count kept in value state "count": `(key, v)` in,
/// `(key, sum of v so far)` out. The job most snapshot tests run, because
/// its output says exactly which records a restored run saw.
#[derive(Clone, Default)]
pub struct RunningCount {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for RunningCount {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.count = Some(ctx.get_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, v): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        let state = self.count.as_ref().expect("opened");
        let c = state.value(ctx)?.unwrap_or(0) + v;
        state.update(ctx, c)?;
        out.collect((key, c));
        Ok(())
    }
}
