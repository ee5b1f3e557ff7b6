//! Interval joins of two keyed streams (Flink's
//! `KeyedStream.intervalJoin(..).between(lower, upper).process(..)`):
//! every pair of a left element `a` and a right element `b` with the same
//! key and `a.ts + lower <= b.ts <= a.ts + upper`, in event time.
//!
//! Each side's elements wait in keyed state (a map from timestamp to the
//! elements with it), each new element is matched against the other side's
//! buffer, and an event-time timer per element removes it once the
//! watermark has passed the last time a partner could arrive, as Flink's
//! `IntervalJoinOperator` does. Elements behind the watermark when they
//! arrive are dropped, as there.

use std::marker::PhantomData;

use floe_runtime::{CheckpointListener, CheckpointedFunction, TaskInfo};
use floe_state::{Key, KeyedStateBackend, MapState, MapStateDescriptor, TimeDomain, Timer};

use crate::functions::Collector;
use crate::keyed_op::{KeyedCx, KeyedLogic, stamp};
use crate::stream::{DataStream, KeyedStream, Record};
use crate::window::JoinSide;

/// The timers' namespace: whose buffer a cleanup timer empties.
const LEFT: u8 = 0;
const RIGHT: u8 = 1;

/// The timestamps of a joined pair, for the join function (Flink's
/// `ProcessJoinFunction.Context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalJoinContext {
    /// The left element's timestamp.
    pub left_timestamp: i64,
    /// The right element's timestamp.
    pub right_timestamp: i64,
}

impl IntervalJoinContext {
    /// The pair's timestamp: the later of the two, which the output
    /// carries.
    pub fn timestamp(&self) -> i64 {
        self.left_timestamp.max(self.right_timestamp)
    }
}

/// Two keyed streams to join by interval (Flink's `IntervalJoin`).
pub struct IntervalJoin<A, B, K, KA, KB> {
    left: KeyedStream<A, K, KA>,
    right: KeyedStream<B, K, KB>,
}

/// The interval given (Flink's `IntervalJoined`).
pub struct IntervalJoined<A, B, K, KA, KB> {
    join: IntervalJoin<A, B, K, KA, KB>,
    lower: i64,
    upper: i64,
    lower_inclusive: bool,
    upper_inclusive: bool,
}

impl<A: Record, K: Key, KA> KeyedStream<A, K, KA>
where
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
{
    /// Joins this stream with `other` on equal keys and nearby event
    /// times (Flink's `intervalJoin`); both need timestamps.
    pub fn interval_join<B: Record, KB>(
        &self,
        other: &KeyedStream<B, K, KB>,
    ) -> IntervalJoin<A, B, K, KA, KB>
    where
        KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        IntervalJoin {
            left: self.clone(),
            right: other.clone(),
        }
    }
}

impl<A, B, K, KA, KB> IntervalJoin<A, B, K, KA, KB> {
    /// Pairs `a` with each `b` whose timestamp is within
    /// `[a.ts + lower_ms, a.ts + upper_ms]` (either may be negative).
    ///
    /// # Panics
    /// When `lower_ms > upper_ms` (an empty interval: a job that can never
    /// join anything is a mistake to report when it is built).
    pub fn between(self, lower_ms: i64, upper_ms: i64) -> IntervalJoined<A, B, K, KA, KB> {
        assert!(
            lower_ms <= upper_ms,
            "an interval join's lower bound ({lower_ms} ms) must not be above its upper bound ({upper_ms} ms)"
        );
        IntervalJoined {
            join: self,
            lower: lower_ms,
            upper: upper_ms,
            lower_inclusive: true,
            upper_inclusive: true,
        }
    }
}

impl<A, B, K, KA, KB> IntervalJoined<A, B, K, KA, KB>
where
    A: Record,
    B: Record,
    K: Key,
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    /// Leaves out pairs exactly at the lower bound.
    pub fn lower_bound_exclusive(mut self) -> Self {
        self.lower_inclusive = false;
        self
    }

    /// Leaves out pairs exactly at the upper bound.
    pub fn upper_bound_exclusive(mut self) -> Self {
        self.upper_inclusive = false;
        self
    }

    /// Calls `f(left, right, ctx, out)` for every pair in the interval;
    /// what it emits carries the later of the two timestamps (Flink's
    /// `process(ProcessJoinFunction)`).
    pub fn process<OUT: Record, F>(self, f: F) -> DataStream<OUT>
    where
        F: FnMut(&A, &B, &IntervalJoinContext, &mut Collector<'_, OUT>) -> anyhow::Result<()>
            + Clone
            + Send
            + 'static,
    {
        // Exclusive bounds are inclusive ones a millisecond inside, as in
        // Flink.
        let lower = if self.lower_inclusive {
            self.lower
        } else {
            self.lower.saturating_add(1)
        };
        let upper = if self.upper_inclusive {
            self.upper
        } else {
            self.upper.saturating_sub(1)
        };
        let (ka, kb) = (
            self.join.left.key_selector().clone(),
            self.join.right.key_selector().clone(),
        );
        let left = self.join.left.stream().map(JoinSide::<A, B>::Left);
        let right = self.join.right.stream().map(JoinSide::<A, B>::Right);
        let key = move |e: &JoinSide<A, B>| match e {
            JoinSide::Left(a) => ka(a),
            JoinSide::Right(b) => kb(b),
        };
        left.union(&[right]).key_by(key).keyed_logic(
            "Interval Join",
            IntervalJoinLogic {
                lower,
                upper,
                function: f,
                left: None,
                right: None,
                _t: PhantomData,
            },
        )
    }
}

/// The interval join operator's logic.
struct IntervalJoinLogic<A, B, F> {
    lower: i64,
    upper: i64,
    function: F,
    left: Option<MapState<i64, Vec<A>>>,
    right: Option<MapState<i64, Vec<B>>>,
    _t: PhantomData<fn(A, B)>,
}

impl<A, B, F: Clone> Clone for IntervalJoinLogic<A, B, F> {
    fn clone(&self) -> Self {
        IntervalJoinLogic {
            lower: self.lower,
            upper: self.upper,
            function: self.function.clone(),
            left: self.left.clone(),
            right: self.right.clone(),
            _t: PhantomData,
        }
    }
}

/// The timer queue of interval joins in snapshots.
const INTERVAL_JOIN_TIMERS: &str = "interval-join-timers";

/// Adds `value` at `ts` to `buffer`.
fn buffer<K: Key, T: Record>(
    state: &MapState<i64, Vec<T>>,
    backend: &mut KeyedStateBackend<K>,
    ts: i64,
    value: T,
) -> anyhow::Result<()> {
    let mut bucket = state.get(backend, &ts)?.unwrap_or_default();
    bucket.push(value);
    state.put(backend, ts, bucket)?;
    Ok(())
}

impl<K, A, B, OUT, F> KeyedLogic<K, JoinSide<A, B>, OUT> for IntervalJoinLogic<A, B, F>
where
    K: Key,
    A: Record,
    B: Record,
    F: FnMut(&A, &B, &IntervalJoinContext, &mut Collector<'_, OUT>) -> anyhow::Result<()>
        + Clone
        + Send
        + 'static,
{
    type N = u8;

    fn timer_queue(&self) -> Option<&'static str> {
        Some(INTERVAL_JOIN_TIMERS)
    }

    fn open(&mut self, _: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()> {
        self.left = Some(backend.get_map_state(&MapStateDescriptor::new("left-buffer"))?);
        self.right = Some(backend.get_map_state(&MapStateDescriptor::new("right-buffer"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        value: JoinSide<A, B>,
        cx: KeyedCx<'_, K, u8>,
        out: &mut floe_core::Batch<OUT>,
    ) -> anyhow::Result<()> {
        let ts = cx.timestamp;
        anyhow::ensure!(
            ts != floe_core::NO_TIMESTAMP,
            "an interval join needs record timestamps on both streams (assign_timestamps_and_watermarks)"
        );
        let timers = cx
            .timers
            .ok_or_else(|| anyhow::anyhow!("an interval join without its timers"))?;
        // Behind the watermark: it can only pair with elements already
        // cleaned up (Flink drops it too).
        if ts < timers.watermark() {
            return Ok(());
        }
        let (left, right) = (
            self.left.as_ref().expect("opened"),
            self.right.as_ref().expect("opened"),
        );
        let backend = cx.backend;
        // The other side's timestamps this one pairs with, and when this
        // element can have no partner left (its cleanup time).
        match value {
            JoinSide::Left(a) => {
                let (from, to) = (ts.saturating_add(self.lower), ts.saturating_add(self.upper));
                for (rts, bs) in right.entries(backend)? {
                    if rts < from || rts > to {
                        continue;
                    }
                    let ctx = IntervalJoinContext {
                        left_timestamp: ts,
                        right_timestamp: rts,
                    };
                    for b in &bs {
                        let start = out.records.len();
                        (self.function)(&a, b, &ctx, &mut Collector::new(&mut out.records))?;
                        stamp(out, start, ctx.timestamp());
                    }
                }
                buffer(left, backend, ts, a)?;
                let cleanup = if self.upper > 0 {
                    ts.saturating_add(self.upper)
                } else {
                    ts
                };
                backend.register_timer(timers.queue(), TimeDomain::EventTime, cleanup, LEFT)?;
            }
            JoinSide::Right(b) => {
                let (from, to) = (ts.saturating_sub(self.upper), ts.saturating_sub(self.lower));
                for (lts, as_) in left.entries(backend)? {
                    if lts < from || lts > to {
                        continue;
                    }
                    let ctx = IntervalJoinContext {
                        left_timestamp: lts,
                        right_timestamp: ts,
                    };
                    for a in &as_ {
                        let start = out.records.len();
                        (self.function)(a, &b, &ctx, &mut Collector::new(&mut out.records))?;
                        stamp(out, start, ctx.timestamp());
                    }
                }
                buffer(right, backend, ts, b)?;
                let cleanup = if self.lower < 0 {
                    ts.saturating_sub(self.lower)
                } else {
                    ts
                };
                backend.register_timer(timers.queue(), TimeDomain::EventTime, cleanup, RIGHT)?;
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: TimeDomain,
        timer: Timer<K, u8>,
        cx: KeyedCx<'_, K, u8>,
        _: &mut floe_core::Batch<OUT>,
    ) -> anyhow::Result<()> {
        // The buffer bucket whose elements this timer was set for.
        let t = timer.timestamp;
        if timer.namespace == LEFT {
            let ts = if self.upper > 0 {
                t.saturating_sub(self.upper)
            } else {
                t
            };
            self.left
                .as_ref()
                .expect("opened")
                .remove(cx.backend, &ts)?;
        } else {
            let ts = if self.lower < 0 {
                t.saturating_add(self.lower)
            } else {
                t
            };
            self.right
                .as_ref()
                .expect("opened")
                .remove(cx.backend, &ts)?;
        }
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        None
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        None
    }
}
