//! Window joins and co-groups of two streams (Flink's `join(..).where(..)
//! .equalTo(..).window(..).apply(..)` and `coGroup`), and windows over a
//! whole stream (`window_all`).
//!
//! As in Flink, a windowed join is a co-group: both streams, tagged with
//! their side, are unioned, keyed by their join keys and windowed; when a
//! window fires, its elements are split back into the two sides and the
//! function runs on them (a join on every pair). So the buffered elements
//! are window contents in keyed state, checkpointed, rescaled and cleaned
//! up with their window.

use std::marker::PhantomData;

use floe_state::Key;
use serde::{Deserialize, Serialize};

use super::assigner::WindowAssigner;
use super::stream::WindowedStream;
use super::trigger::{DefaultTrigger, Trigger};
use crate::functions::Collector;
use crate::stream::{DataStream, Record};

/// An element of a two-stream window, tagged with the stream it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinSide<A, B> {
    /// From the stream `join` / `co_group` was called on.
    Left(A),
    /// From the other stream.
    Right(B),
}

/// Marks a [`TwoStreamWindow`] whose function sees matching pairs.
pub struct Join;

/// Marks a [`TwoStreamWindow`] whose function sees both sides whole.
pub struct CoGroup;

/// Two streams to combine, before their keys are given (Flink's
/// `JoinedStreams` / `CoGroupedStreams`).
pub struct TwoStreams<A, B, Kind> {
    left: DataStream<A>,
    right: DataStream<B>,
    _kind: PhantomData<fn() -> Kind>,
}

/// The left key given (Flink's `where`).
pub struct TwoStreamsWhere<A, B, K, KA, Kind> {
    streams: TwoStreams<A, B, Kind>,
    left_key: KA,
    _k: PhantomData<fn() -> K>,
}

/// Both keys given (Flink's `equalTo`).
pub struct TwoStreamsEqual<A, B, K, KA, KB, Kind> {
    streams: TwoStreams<A, B, Kind>,
    left_key: KA,
    right_key: KB,
    _k: PhantomData<fn() -> K>,
}

/// Keyed on both sides and windowed, before the function (Flink's
/// `WithWindow`).
pub struct TwoStreamWindow<A, B, K, KS, Asg, Tr, Kind> {
    windowed: WindowedStream<JoinSide<A, B>, K, KS, Asg, Tr>,
    _kind: PhantomData<fn() -> Kind>,
}

impl<A: Record> DataStream<A> {
    /// Joins this stream with `other` on equal keys within windows (Flink's
    /// `join`): every pair of a left and a right element with the same
    /// key in the same window.
    pub fn join<B: Record>(&self, other: &DataStream<B>) -> TwoStreams<A, B, Join> {
        TwoStreams {
            left: self.clone(),
            right: other.clone(),
            _kind: PhantomData,
        }
    }

    /// Groups this stream and `other` by key within windows (Flink's
    /// `coGroup`): per key and window, both sides' elements, either of
    /// which may be empty (outer joins are written with it).
    pub fn co_group<B: Record>(&self, other: &DataStream<B>) -> TwoStreams<A, B, CoGroup> {
        TwoStreams {
            left: self.clone(),
            right: other.clone(),
            _kind: PhantomData,
        }
    }

    /// Windows over the whole stream, not per key (Flink's `windowAll`):
    /// one window operator subtask sees every element.
    #[allow(clippy::type_complexity)]
    pub fn window_all<Asg: WindowAssigner<A>>(
        &self,
        assigner: Asg,
    ) -> WindowedStream<A, (), fn(&A) -> (), Asg, DefaultTrigger> {
        let keyed = self.key_by(unit_key as fn(&A) -> ());
        keyed.window(assigner).non_parallel()
    }
}

fn unit_key<A>(_: &A) {}

impl<A: Record, B: Record, Kind> TwoStreams<A, B, Kind> {
    /// The left stream's key (Flink's `where`).
    pub fn where_key<K: Key, KA>(self, key: KA) -> TwoStreamsWhere<A, B, K, KA, Kind>
    where
        KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    {
        TwoStreamsWhere {
            streams: self,
            left_key: key,
            _k: PhantomData,
        }
    }
}

impl<A: Record, B: Record, K: Key, KA, Kind> TwoStreamsWhere<A, B, K, KA, Kind>
where
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
{
    /// The right stream's key, compared with the left's (Flink's
    /// `equalTo`).
    pub fn equal_to<KB>(self, key: KB) -> TwoStreamsEqual<A, B, K, KA, KB, Kind>
    where
        KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        TwoStreamsEqual {
            streams: self.streams,
            left_key: self.left_key,
            right_key: key,
            _k: PhantomData,
        }
    }
}

impl<A: Record, B: Record, K: Key, KA, KB, Kind> TwoStreamsEqual<A, B, K, KA, KB, Kind>
where
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    /// Windows both streams together by key with `assigner`.
    #[allow(clippy::type_complexity)]
    pub fn window<Asg: WindowAssigner<JoinSide<A, B>>>(
        self,
        assigner: Asg,
    ) -> TwoStreamWindow<
        A,
        B,
        K,
        impl Fn(&JoinSide<A, B>) -> K + Clone + Send + Sync + 'static,
        Asg,
        DefaultTrigger,
        Kind,
    > {
        let left = self.streams.left.map(JoinSide::<A, B>::Left);
        let right = self.streams.right.map(JoinSide::<A, B>::Right);
        let (ka, kb) = (self.left_key, self.right_key);
        let key = move |e: &JoinSide<A, B>| match e {
            JoinSide::Left(a) => ka(a),
            JoinSide::Right(b) => kb(b),
        };
        TwoStreamWindow {
            windowed: left.union(&[right]).key_by(key).window(assigner),
            _kind: PhantomData,
        }
    }
}

impl<A, B, K, KS, Asg, Tr, Kind> TwoStreamWindow<A, B, K, KS, Asg, Tr, Kind>
where
    A: Record,
    B: Record,
    K: Key,
    KS: Fn(&JoinSide<A, B>) -> K + Clone + Send + Sync + 'static,
    Asg: WindowAssigner<JoinSide<A, B>>,
    Tr: Trigger<JoinSide<A, B>, Asg::W>,
{
    /// Fires with `trigger` instead of the assigner's default.
    pub fn trigger<Tr2: Trigger<JoinSide<A, B>, Asg::W>>(
        self,
        trigger: Tr2,
    ) -> TwoStreamWindow<A, B, K, KS, Asg, Tr2, Kind> {
        TwoStreamWindow {
            windowed: self.windowed.trigger(trigger),
            _kind: PhantomData,
        }
    }

    /// Keeps windows for `lateness` after their end (see
    /// [`WindowedStream::allowed_lateness`]).
    pub fn allowed_lateness(self, lateness: std::time::Duration) -> Self {
        TwoStreamWindow {
            windowed: self.windowed.allowed_lateness(lateness),
            _kind: PhantomData,
        }
    }

    /// Runs `f(key, left, right, out)` per key and window, each side in
    /// arrival order.
    fn co_group_with<OUT: Record, F>(self, name: &str, mut f: F) -> DataStream<OUT>
    where
        F: FnMut(&K, Vec<A>, Vec<B>, &mut Collector<'_, OUT>) -> anyhow::Result<()>
            + Clone
            + Send
            + 'static,
    {
        self.windowed
            .apply(
                move |key: &K, _: &Asg::W, elements: Vec<JoinSide<A, B>>, out| {
                    let (mut left, mut right) = (Vec::new(), Vec::new());
                    for e in elements {
                        match e {
                            JoinSide::Left(a) => left.push(a),
                            JoinSide::Right(b) => right.push(b),
                        }
                    }
                    f(key, left, right, out)
                },
            )
            .name(name)
    }
}

impl<A, B, K, KS, Asg, Tr> TwoStreamWindow<A, B, K, KS, Asg, Tr, Join>
where
    A: Record,
    B: Record,
    K: Key,
    KS: Fn(&JoinSide<A, B>) -> K + Clone + Send + Sync + 'static,
    Asg: WindowAssigner<JoinSide<A, B>>,
    Tr: Trigger<JoinSide<A, B>, Asg::W>,
{
    /// Emits `f(left, right)` for every pair with equal keys in a window
    /// (Flink's `apply(JoinFunction)`): an inner join.
    pub fn apply<OUT: Record, F>(self, f: F) -> DataStream<OUT>
    where
        F: Fn(&A, &B) -> OUT + Clone + Send + Sync + 'static,
    {
        self.flat_apply(move |a: &A, b: &B, out: &mut Collector<'_, OUT>| out.collect(f(a, b)))
    }

    /// Calls `f(left, right, out)` for every pair with equal keys in a
    /// window, emitting any number of records (Flink's
    /// `apply(FlatJoinFunction)`).
    pub fn flat_apply<OUT: Record, F>(self, f: F) -> DataStream<OUT>
    where
        F: Fn(&A, &B, &mut Collector<'_, OUT>) + Clone + Send + Sync + 'static,
    {
        self.co_group_with("Window Join", move |_, left, right, out| {
            for a in &left {
                for b in &right {
                    f(a, b, out);
                }
            }
            Ok(())
        })
    }
}

impl<A, B, K, KS, Asg, Tr> TwoStreamWindow<A, B, K, KS, Asg, Tr, CoGroup>
where
    A: Record,
    B: Record,
    K: Key,
    KS: Fn(&JoinSide<A, B>) -> K + Clone + Send + Sync + 'static,
    Asg: WindowAssigner<JoinSide<A, B>>,
    Tr: Trigger<JoinSide<A, B>, Asg::W>,
{
    /// Calls `f(key, left, right, out)` per key and window that has
    /// elements on either side (Flink's `apply(CoGroupFunction)`).
    pub fn apply<OUT: Record, F>(self, f: F) -> DataStream<OUT>
    where
        F: FnMut(&K, Vec<A>, Vec<B>, &mut Collector<'_, OUT>) -> anyhow::Result<()>
            + Clone
            + Send
            + 'static,
    {
        self.co_group_with("Window CoGroup", f)
    }
}
