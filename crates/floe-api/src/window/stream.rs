//! `KeyedStream::window(...)` and what it returns (Flink's
//! `WindowedStream`): the trigger, the allowed lateness and the late side
//! output to set, and the window function that makes it a stream again.

use std::sync::Arc;
use std::time::Duration;

use floe_runtime::side_output::OutputTag;
use floe_state::{AggregateFunction, Key};

use super::assigner::WindowAssigner;
use super::evictor::{Evictor, NoEvictor};
use super::operator::{
    AggregateContents, ApplyFn, CONTENTS, Direct, ElementContents, FoldAggregate, FoldReduce,
    PaneContents, ProcessElements, ProcessWindowFunction, ReduceContents, SLICES, TriggerStates,
    ViaProcess, WindowContents, WindowLogic,
};
use super::sliced::SlicedWindowLogic;
use super::trigger::{DefaultTrigger, Trigger};
use crate::functions::Collector;
use crate::stream::{DataStream, KeyedStream, Record};

/// A keyed stream cut into windows (Flink's `WindowedStream`), before its
/// window function.
pub struct WindowedStream<T, K, KS, A, Tr> {
    keyed: KeyedStream<T, K, KS>,
    assigner: A,
    trigger: Tr,
    allowed_lateness: i64,
    late: Option<OutputTag<T>>,
    /// One subtask for the window operator (`window_all`).
    non_parallel: bool,
}

impl<T: Record, K: Key, KS> KeyedStream<T, K, KS>
where
    KS: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    /// Cuts each key's elements into the windows of `assigner` (Flink's
    /// `window`), firing with the assigner's default trigger unless
    /// [`WindowedStream::trigger`] sets another.
    pub fn window<A: WindowAssigner<T>>(
        &self,
        assigner: A,
    ) -> WindowedStream<T, K, KS, A, DefaultTrigger> {
        WindowedStream {
            keyed: self.clone(),
            trigger: assigner.default_trigger(),
            assigner,
            allowed_lateness: 0,
            late: None,
            non_parallel: false,
        }
    }
}

impl<T, K, KS, A, Tr> WindowedStream<T, K, KS, A, Tr>
where
    T: Record,
    K: Key,
    KS: Fn(&T) -> K + Clone + Send + Sync + 'static,
    A: WindowAssigner<T>,
    Tr: Trigger<T, A::W>,
{
    /// Fires with `trigger` instead of the assigner's default (Flink's
    /// `trigger`).
    pub fn trigger<Tr2: Trigger<T, A::W>>(self, trigger: Tr2) -> WindowedStream<T, K, KS, A, Tr2> {
        WindowedStream {
            keyed: self.keyed,
            assigner: self.assigner,
            trigger,
            allowed_lateness: self.allowed_lateness,
            late: self.late,
            non_parallel: self.non_parallel,
        }
    }

    /// Runs the window operator in one subtask (`window_all`: every
    /// element has the same key).
    pub(crate) fn non_parallel(mut self) -> Self {
        self.non_parallel = true;
        self
    }

    /// Keeps event-time windows for `lateness` after their end: a late
    /// element within it is added and fires the window again (Flink's
    /// `allowedLateness`; default zero).
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Sends elements too late for all their windows to the side output
    /// `tag` instead of dropping them (Flink's `sideOutputLateData`); read
    /// it with `side_output(&tag)` on the windowed result.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late = Some(tag.clone());
        self
    }

    fn build<OUT: Record, C>(self, name: &str, contents: C) -> DataStream<OUT>
    where
        C: WindowContents<K, T, OUT, A::W>,
    {
        let logic = WindowLogic {
            assigner: self.assigner,
            trigger: self.trigger,
            contents,
            allowed_lateness: self.allowed_lateness,
            late: self.late,
            merging: None,
            function_state: None,
            trigger_states: TriggerStates::default(),
            windows: Vec::new(),
        };
        let out = self.keyed.keyed_logic(name, logic);
        if self.non_parallel {
            out.set_parallelism(1)
        } else {
            out
        }
    }

    /// Removes elements of a firing window with `evictor` before and/or
    /// after the window function (Flink's `evictor`); the window then
    /// keeps every element, also for `reduce` and `aggregate`.
    pub fn evictor<E: Evictor<T, A::W>>(
        self,
        evictor: E,
    ) -> EvictingWindowedStream<T, K, KS, A, Tr, E> {
        EvictingWindowedStream {
            windowed: self,
            evictor,
        }
    }

    /// Builds with contents that combine (reduce, aggregate): per slice
    /// when the windows slide and fire at their end, else per window.
    fn build_combining<OUT: Record, C, S>(
        self,
        name: &str,
        contents: C,
        sliced: S,
    ) -> DataStream<OUT>
    where
        C: WindowContents<K, T, OUT, A::W>,
        S: PaneContents<K, T, OUT, A::W>,
    {
        let Some(slicing) = self
            .assigner
            .slicing()
            .filter(|_| SlicedWindowLogic::<T, A, ()>::applies(&self.assigner, &self.trigger))
        else {
            return self.build(name, contents);
        };
        let logic = SlicedWindowLogic {
            assigner: self.assigner,
            slicing,
            contents: sliced,
            allowed_lateness: self.allowed_lateness,
            late: self.late,
            function_state: None,
        };
        let out = self.keyed.keyed_logic(name, logic);
        if self.non_parallel {
            out.set_parallelism(1)
        } else {
            out
        }
    }

    /// Folds each window's elements with `reduce(accumulated, new)` as
    /// they arrive (one value stored per window) and emits the result
    /// when it fires (Flink's `reduce`).
    pub fn reduce<R>(self, reduce: R) -> DataStream<T>
    where
        R: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    {
        let contents = |state_name| ReduceContents {
            reduce: reduce.clone(),
            result: Direct,
            state_name,
            state: None,
        };
        self.build_combining("Window(Reduce)", contents(CONTENTS), contents(SLICES))
    }

    /// Folds with `reduce`, then hands the window's one folded value to
    /// `function`, which sees the window (Flink's `reduce(reduce,
    /// processWindowFunction)`).
    pub fn reduce_with<OUT: Record, R, P>(self, reduce: R, function: P) -> DataStream<OUT>
    where
        R: Fn(T, T) -> T + Clone + Send + Sync + 'static,
        P: ProcessWindowFunction<K, T, OUT, A::W>,
    {
        let contents = |state_name| ReduceContents {
            reduce: reduce.clone(),
            result: ViaProcess(function.clone()),
            state_name,
            state: None,
        };
        self.build_combining(
            "Window(Reduce, Process)",
            contents(CONTENTS),
            contents(SLICES),
        )
    }

    /// Adds each element to the window's accumulator and emits
    /// `get_result` when it fires (Flink's `aggregate`).
    pub fn aggregate<F>(self, function: F) -> DataStream<F::Out>
    where
        F: AggregateFunction<In = T>,
        F::Out: Record,
    {
        let function = Arc::new(function);
        let contents = |state_name| AggregateContents {
            function: function.clone(),
            result: Direct,
            state_name,
            state: None,
        };
        self.build_combining("Window(Aggregate)", contents(CONTENTS), contents(SLICES))
    }

    /// Aggregates, then hands the window's result to `process`, which
    /// sees the window (Flink's `aggregate(aggregate,
    /// processWindowFunction)`).
    pub fn aggregate_with<OUT: Record, F, P>(self, function: F, process: P) -> DataStream<OUT>
    where
        F: AggregateFunction<In = T>,
        P: ProcessWindowFunction<K, F::Out, OUT, A::W>,
    {
        let function = Arc::new(function);
        let contents = |state_name| AggregateContents {
            function: function.clone(),
            result: ViaProcess(process.clone()),
            state_name,
            state: None,
        };
        self.build_combining(
            "Window(Aggregate, Process)",
            contents(CONTENTS),
            contents(SLICES),
        )
    }

    /// Keeps every element and hands them all to `function` when the
    /// window fires (Flink's `process`).
    pub fn process<OUT: Record, P>(self, function: P) -> DataStream<OUT>
    where
        P: ProcessWindowFunction<K, T, OUT, A::W>,
    {
        self.build_combining(
            "Window(Process)",
            ElementContents::new(NoEvictor, ProcessElements(function.clone())),
            ElementContents::per_slice(NoEvictor, ProcessElements(function)),
        )
    }

    /// Keeps every element and calls `f(key, window, elements, out)` when
    /// the window fires (Flink's `apply` with a `WindowFunction`).
    pub fn apply<OUT: Record, F>(self, f: F) -> DataStream<OUT>
    where
        F: FnMut(&K, &A::W, Vec<T>, &mut Collector<'_, OUT>) -> anyhow::Result<()>
            + Clone
            + Send
            + 'static,
    {
        self.build_combining(
            "Window(Apply)",
            ElementContents::new(NoEvictor, ProcessElements(ApplyFn(f.clone()))),
            ElementContents::per_slice(NoEvictor, ProcessElements(ApplyFn(f))),
        )
    }
}

/// A windowed stream with an evictor (Flink's `WindowedStream.evictor`):
/// every element is kept, and the function runs on those the evictor
/// leaves.
pub struct EvictingWindowedStream<T, K, KS, A, Tr, E> {
    windowed: WindowedStream<T, K, KS, A, Tr>,
    evictor: E,
}

impl<T, K, KS, A, Tr, E> EvictingWindowedStream<T, K, KS, A, Tr, E>
where
    T: Record,
    K: Key,
    KS: Fn(&T) -> K + Clone + Send + Sync + 'static,
    A: WindowAssigner<T>,
    Tr: Trigger<T, A::W>,
    E: Evictor<T, A::W>,
{
    /// Folds the elements left with `reduce` when the window fires.
    pub fn reduce<R>(self, reduce: R) -> DataStream<T>
    where
        R: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    {
        let contents = ElementContents::new(self.evictor, FoldReduce(reduce, Direct));
        self.windowed.build("EvictingWindow(Reduce)", contents)
    }

    /// Folds the elements left with `reduce`, then runs `function` on the
    /// result.
    pub fn reduce_with<OUT: Record, R, P>(self, reduce: R, function: P) -> DataStream<OUT>
    where
        R: Fn(T, T) -> T + Clone + Send + Sync + 'static,
        P: ProcessWindowFunction<K, T, OUT, A::W>,
    {
        let contents = ElementContents::new(self.evictor, FoldReduce(reduce, ViaProcess(function)));
        self.windowed
            .build("EvictingWindow(Reduce, Process)", contents)
    }

    /// Aggregates the elements left when the window fires.
    pub fn aggregate<F>(self, function: F) -> DataStream<F::Out>
    where
        F: AggregateFunction<In = T>,
        F::Out: Record,
    {
        let contents =
            ElementContents::new(self.evictor, FoldAggregate(Arc::new(function), Direct));
        self.windowed.build("EvictingWindow(Aggregate)", contents)
    }

    /// Aggregates the elements left, then runs `process` on the result.
    pub fn aggregate_with<OUT: Record, F, P>(self, function: F, process: P) -> DataStream<OUT>
    where
        F: AggregateFunction<In = T>,
        P: ProcessWindowFunction<K, F::Out, OUT, A::W>,
    {
        let contents = ElementContents::new(
            self.evictor,
            FoldAggregate(Arc::new(function), ViaProcess(process)),
        );
        self.windowed
            .build("EvictingWindow(Aggregate, Process)", contents)
    }

    /// Runs `function` on the elements left.
    pub fn process<OUT: Record, P>(self, function: P) -> DataStream<OUT>
    where
        P: ProcessWindowFunction<K, T, OUT, A::W>,
    {
        let contents = ElementContents::new(self.evictor, ProcessElements(function));
        self.windowed.build("EvictingWindow(Process)", contents)
    }

    /// Calls `f(key, window, elements left, out)`.
    pub fn apply<OUT: Record, F>(self, f: F) -> DataStream<OUT>
    where
        F: FnMut(&K, &A::W, Vec<T>, &mut Collector<'_, OUT>) -> anyhow::Result<()>
            + Clone
            + Send
            + 'static,
    {
        let contents = ElementContents::new(self.evictor, ProcessElements(ApplyFn(f)));
        self.windowed.build("EvictingWindow(Apply)", contents)
    }
}
