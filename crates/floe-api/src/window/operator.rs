//! The window operator's logic (Flink's `WindowOperator`), run by the
//! keyed operator for each record and each of its timers.
//!
//! Per record: the assigner names its windows; a window already past the
//! allowed lateness is skipped; otherwise the record goes into the
//! window's contents and the trigger decides whether the window fires
//! (its result leaves with the window's end as timestamp) or purges, and a
//! cleanup timer is set at the window's end plus the allowed lateness. An
//! element skipped by every window because it is late goes to the late
//! side output, if the job asked for one, else it is dropped.
//!
//! Everything lives in keyed state under the window: contents (per
//! [`WindowContents`]), the triggers' values, and for merging assigners
//! the key's [`MergingWindowSet`]; timers are namespaced by the window. So
//! windows are checkpointed, restored and rescaled like any keyed state.

use std::any::Any;
use std::collections::HashMap;

use floe_runtime::side_output::{OutputTag, SideOutputBuffers};
use floe_runtime::timer_service::KeyedTimers;
use floe_runtime::{CheckpointListener, CheckpointedFunction, RuntimeContext, TaskInfo};
use floe_state::{
    AggregateFunction, Key, KeyedStateAccess, KeyedStateBackend, MapState, MapStateDescriptor,
    StateValue, TimeDomain, Timer, ValueState, ValueStateDescriptor,
};

use super::Window;
use super::assigner::{AssignerContext, WindowAssigner};
use super::evictor::{Evictor, EvictorContext, NoEvictor, TimestampedValue};
use super::merging::MergingWindowSet;
use super::trigger::{Trigger, TriggerContext, TriggerResult};
use crate::functions::Collector;
use crate::keyed_op::{KeyedCx, KeyedLogic, stamp};

/// The window operator's timer queue in snapshots (Flink's
/// `"window-timers"`).
pub(crate) const WINDOW_TIMERS: &str = "window-timers";
/// Reduced or aggregated values, or element counts of process windows.
pub(crate) const CONTENTS: &str = "window-contents";
/// Partial results per slice of sliding windows.
pub(crate) const SLICES: &str = "window-slices";
/// Elements of process windows, by window and arrival.
const ELEMENTS: &str = "window-elements";
/// Elements of sliding process windows, by slice and arrival.
pub(crate) const SLICE_ELEMENTS: &str = "window-slice-elements";
/// A merging assigner's windows of the key.
const MERGING: &str = "merging-window-set";

/// What a process window function sees besides the elements (Flink's
/// `ProcessWindowFunction.Context`): the window, time, side outputs, and
/// the key's keyed state (Flink's `globalState()`).
pub struct WindowContext<'a, K: Key, W> {
    pub(super) info: &'a TaskInfo,
    pub(super) backend: &'a mut KeyedStateBackend<K>,
    pub(super) window: &'a W,
    pub(super) watermark: i64,
    pub(super) processing_time: i64,
    pub(super) side: &'a mut SideOutputBuffers,
    /// Per-window state, unless the windows merge.
    pub(super) window_state: Option<&'a WindowFunctionState<W>>,
}

/// The window functions' per-window values, by window and name, encoded:
/// one map state, so a window's values are found and cleared together
/// without knowing their types.
pub(crate) type WindowFunctionState<W> = MapState<(W, String), Vec<u8>>;

/// The state name of [`WindowFunctionState`].
pub(crate) const WINDOW_FUNCTION_STATE: &str = "window-function-state";

/// Registers the window functions' per-window state.
pub(crate) fn open_window_function_state<K: Key, W: Window>(
    backend: &mut KeyedStateBackend<K>,
) -> anyhow::Result<WindowFunctionState<W>> {
    Ok(backend.get_map_state(&MapStateDescriptor::new(WINDOW_FUNCTION_STATE))?)
}

/// Removes `window`'s per-window values (its cleanup, as Flink leaves to
/// `ProcessWindowFunction.clear`, done for the function).
pub(crate) fn clear_window_function_state<K: Key, W: Window>(
    state: &WindowFunctionState<W>,
    backend: &mut KeyedStateBackend<K>,
    window: &W,
) -> anyhow::Result<()> {
    if state.is_empty(backend)? {
        return Ok(());
    }
    for k in state.keys(backend)? {
        if k.0 == *window {
            state.remove(backend, &k)?;
        }
    }
    Ok(())
}

impl<K: Key, W: Window> WindowContext<'_, K, W> {
    /// The window being emitted.
    pub fn window(&self) -> &W {
        self.window
    }

    /// The operator's event time.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The task's clock.
    pub fn current_processing_time(&self) -> i64 {
        self.processing_time
    }

    /// The subtask.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }

    fn window_state(&self) -> anyhow::Result<&WindowFunctionState<W>> {
        self.window_state.ok_or_else(|| {
            anyhow::anyhow!(
                "per-window state is not supported with merging (session) windows, as in Flink"
            )
        })
    }

    /// The value `name` of this key and window (Flink's
    /// `windowState()`): what a function keeps between firings of one
    /// window (early and late firings). Cleared with the window.
    pub fn window_value<T: serde::de::DeserializeOwned>(
        &mut self,
        name: &str,
    ) -> anyhow::Result<Option<T>> {
        let state = self.window_state()?.clone();
        let key = (*self.window, name.to_string());
        Ok(match state.get(self.backend, &key)? {
            Some(bytes) => Some(floe_state::codec::decode(&bytes, name)?),
            None => None,
        })
    }

    /// Sets the value `name` of this key and window.
    pub fn set_window_value<T: serde::Serialize>(
        &mut self,
        name: &str,
        value: &T,
    ) -> anyhow::Result<()> {
        let state = self.window_state()?.clone();
        let bytes = floe_state::codec::encode(value, name)?;
        state.put(self.backend, (*self.window, name.to_string()), bytes)?;
        Ok(())
    }

    /// Removes the value `name` of this key and window.
    pub fn clear_window_value(&mut self, name: &str) -> anyhow::Result<()> {
        let state = self.window_state()?.clone();
        state.remove(self.backend, &(*self.window, name.to_string()))?;
        Ok(())
    }

    /// Emits `value` to the side output `tag`, with the window's end as
    /// its timestamp, like the window's main output.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
    ) -> Result<(), floe_runtime::side_output::SideOutputTypeError> {
        self.side.push(tag, value, self.window.max_timestamp())
    }
}

impl<K: Key, W> KeyedStateAccess<K> for WindowContext<'_, K, W> {
    fn keyed_state_backend(&mut self) -> &mut KeyedStateBackend<K> {
        self.backend
    }
}

/// Computes a window's result from all its elements (Flink's
/// `ProcessWindowFunction`); alone, it sees every element, after a reduce
/// or an aggregate the one combined value. Cloned once per subtask.
pub trait ProcessWindowFunction<K: Key, IN, OUT, W: Window>: Clone + Send + 'static {
    /// Registers keyed state the function keeps across windows.
    fn open(&mut self, _ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Emits the result of `key`'s window `ctx.window()` from `elements`
    /// (in arrival order).
    fn process(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, K, W>,
        elements: Vec<IN>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;
}

/// A closure as a process window function (Flink's `WindowFunction`, what
/// `apply` takes).
#[derive(Clone)]
pub(crate) struct ApplyFn<F>(pub(crate) F);

impl<K, IN, OUT, W, F> ProcessWindowFunction<K, IN, OUT, W> for ApplyFn<F>
where
    K: Key,
    W: Window,
    F: FnMut(&K, &W, Vec<IN>, &mut Collector<'_, OUT>) -> anyhow::Result<()>
        + Clone
        + Send
        + 'static,
{
    fn process(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, K, W>,
        elements: Vec<IN>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        (self.0)(key, ctx.window, elements, out)
    }
}

/// What becomes of a combined value (reduced or aggregated) when its
/// window fires.
pub(crate) trait ResultFn<K: Key, V, OUT, W: Window>: Clone + Send + 'static {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()>;
    fn emit(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, K, W>,
        value: V,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;
}

/// The combined value is the result.
#[derive(Clone, Copy)]
pub(crate) struct Direct;

impl<K: Key, V: Send + 'static, W: Window> ResultFn<K, V, V, W> for Direct {
    fn open(&mut self, _: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        Ok(())
    }

    #[inline]
    fn emit(
        &mut self,
        _: &K,
        _: &mut WindowContext<'_, K, W>,
        value: V,
        out: &mut Collector<'_, V>,
    ) -> anyhow::Result<()> {
        out.collect(value);
        Ok(())
    }
}

/// A process window function gets the combined value as its one element.
#[derive(Clone)]
pub(crate) struct ViaProcess<P>(pub(crate) P);

impl<K: Key, V, OUT, W: Window, P: ProcessWindowFunction<K, V, OUT, W>> ResultFn<K, V, OUT, W>
    for ViaProcess<P>
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        self.0.open(ctx)
    }

    fn emit(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, K, W>,
        value: V,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        self.0.process(key, ctx, vec![value], out)
    }
}

/// What a window keeps and how its function runs on it; state lives under
/// the *state window* (for merging windows, the one the merged windows'
/// contents were folded into).
pub(crate) trait WindowContents<K: Key, IN, OUT, W: Window>: Clone + Send + 'static {
    fn open(&mut self, info: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()>;
    fn add(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        state_window: &W,
        value: IN,
        timestamp: i64,
    ) -> anyhow::Result<()>;
    /// Runs the function on the contents, if there are any (a purged
    /// window fires nothing, as in Flink).
    fn emit(
        &mut self,
        ctx: &mut WindowContext<'_, K, W>,
        state_window: &W,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;
    fn clear(&mut self, backend: &mut KeyedStateBackend<K>, state_window: &W)
    -> anyhow::Result<()>;
    /// Folds `sources`' contents into `target`'s and clears theirs.
    fn merge(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        target: &W,
        sources: &[W],
    ) -> anyhow::Result<()>;
}

fn opened<S>(s: &Option<S>) -> &S {
    s.as_ref().expect("window state is registered at open")
}

fn current_key<K: Key>(backend: &KeyedStateBackend<K>) -> anyhow::Result<K> {
    backend
        .current_key()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("a window fired without a current key"))
}

/// Folds `sources`' values in `state` into `target`'s with `combine` and
/// removes theirs (Flink's `mergeNamespaces`): contents and trigger values
/// of sessions merging.
fn merge_values<K: Key, W: Window, V: StateValue>(
    state: &MapState<W, V>,
    backend: &mut KeyedStateBackend<K>,
    target: &W,
    sources: &[W],
    combine: impl Fn(V, V) -> V,
) -> anyhow::Result<()> {
    let mut acc = state.get(backend, target)?;
    for s in sources {
        if let Some(v) = state.remove(backend, s)? {
            acc = Some(match acc {
                Some(a) => combine(a, v),
                None => v,
            });
        }
    }
    if let Some(acc) = acc {
        state.put(backend, *target, acc)?;
    }
    Ok(())
}

/// A reduce function's running value per window (Flink's `reduce`).
#[derive(Clone)]
pub(crate) struct ReduceContents<T, R, F, W> {
    pub(crate) reduce: R,
    pub(crate) result: F,
    /// The map state's name: per window, or per slice.
    pub(crate) state_name: &'static str,
    pub(crate) state: Option<MapState<W, T>>,
}

impl<K, T, OUT, R, F, W> WindowContents<K, T, OUT, W> for ReduceContents<T, R, F, W>
where
    K: Key,
    T: StateValue,
    W: Window,
    R: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    F: ResultFn<K, T, OUT, W>,
{
    fn open(&mut self, info: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()> {
        self.state = Some(backend.get_map_state(&MapStateDescriptor::new(self.state_name))?);
        self.result
            .open(&mut RuntimeContext::new(info, Some(backend)))
    }

    #[inline]
    fn add(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        w: &W,
        value: T,
        _: i64,
    ) -> anyhow::Result<()> {
        let state = opened(&self.state);
        let next = match state.get(backend, w)? {
            Some(acc) => (self.reduce)(acc, value),
            None => value,
        };
        state.put(backend, *w, next)?;
        Ok(())
    }

    fn emit(
        &mut self,
        ctx: &mut WindowContext<'_, K, W>,
        w: &W,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        let Some(value) = opened(&self.state).get(ctx.backend, w)? else {
            return Ok(());
        };
        let key = current_key(ctx.backend)?;
        self.result.emit(&key, ctx, value, out)
    }

    fn clear(&mut self, backend: &mut KeyedStateBackend<K>, w: &W) -> anyhow::Result<()> {
        opened(&self.state).remove(backend, w)?;
        Ok(())
    }

    fn merge(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        target: &W,
        sources: &[W],
    ) -> anyhow::Result<()> {
        merge_values(opened(&self.state), backend, target, sources, &self.reduce)
    }
}

/// Contents kept as one combinable value per state window (reduce,
/// aggregate), so a window can be emitted from several: the slices of a
/// sliding window.
pub(crate) trait PaneContents<K: Key, IN, OUT, W: Window>:
    WindowContents<K, IN, OUT, W>
{
    /// Whether `w` has a value.
    fn has(&self, backend: &mut KeyedStateBackend<K>, w: &W) -> anyhow::Result<bool>;

    /// Combines the values of `panes` (in order; missing ones skipped) and
    /// runs the function on the result for `ctx.window()`; emits nothing
    /// when no pane has a value.
    fn emit_panes(
        &mut self,
        ctx: &mut WindowContext<'_, K, W>,
        panes: &[W],
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;
}

impl<K, T, OUT, R, F, W> PaneContents<K, T, OUT, W> for ReduceContents<T, R, F, W>
where
    K: Key,
    T: StateValue,
    W: Window,
    R: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    F: ResultFn<K, T, OUT, W>,
{
    fn has(&self, backend: &mut KeyedStateBackend<K>, w: &W) -> anyhow::Result<bool> {
        Ok(opened(&self.state).contains(backend, w)?)
    }

    fn emit_panes(
        &mut self,
        ctx: &mut WindowContext<'_, K, W>,
        panes: &[W],
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        let state = opened(&self.state);
        let mut acc: Option<T> = None;
        for p in panes {
            if let Some(v) = state.get(ctx.backend, p)? {
                acc = Some(match acc {
                    Some(a) => (self.reduce)(a, v),
                    None => v,
                });
            }
        }
        let Some(value) = acc else {
            return Ok(());
        };
        let key = current_key(ctx.backend)?;
        self.result.emit(&key, ctx, value, out)
    }
}

/// An aggregate function's accumulator per window (Flink's `aggregate`).
pub(crate) struct AggregateContents<A: AggregateFunction, F, W> {
    pub(crate) function: std::sync::Arc<A>,
    pub(crate) result: F,
    /// The map state's name: per window, or per slice.
    pub(crate) state_name: &'static str,
    pub(crate) state: Option<MapState<W, A::Acc>>,
}

impl<A: AggregateFunction, F: Clone, W> Clone for AggregateContents<A, F, W> {
    fn clone(&self) -> Self {
        AggregateContents {
            function: self.function.clone(),
            result: self.result.clone(),
            state_name: self.state_name,
            state: self.state.clone(),
        }
    }
}

impl<K, A, OUT, F, W> WindowContents<K, A::In, OUT, W> for AggregateContents<A, F, W>
where
    K: Key,
    A: AggregateFunction,
    W: Window,
    F: ResultFn<K, A::Out, OUT, W>,
{
    fn open(&mut self, info: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()> {
        self.state = Some(backend.get_map_state(&MapStateDescriptor::new(self.state_name))?);
        self.result
            .open(&mut RuntimeContext::new(info, Some(backend)))
    }

    #[inline]
    fn add(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        w: &W,
        value: A::In,
        _: i64,
    ) -> anyhow::Result<()> {
        let state = opened(&self.state);
        let mut acc = match state.get(backend, w)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        self.function.add(value, &mut acc);
        state.put(backend, *w, acc)?;
        Ok(())
    }

    fn emit(
        &mut self,
        ctx: &mut WindowContext<'_, K, W>,
        w: &W,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        let Some(acc) = opened(&self.state).get(ctx.backend, w)? else {
            return Ok(());
        };
        let key = current_key(ctx.backend)?;
        let value = self.function.get_result(&acc);
        self.result.emit(&key, ctx, value, out)
    }

    fn clear(&mut self, backend: &mut KeyedStateBackend<K>, w: &W) -> anyhow::Result<()> {
        opened(&self.state).remove(backend, w)?;
        Ok(())
    }

    fn merge(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        target: &W,
        sources: &[W],
    ) -> anyhow::Result<()> {
        let f = &self.function;
        merge_values(opened(&self.state), backend, target, sources, |a, b| {
            f.merge(a, b)
        })
    }
}

impl<K, A, OUT, F, W> PaneContents<K, A::In, OUT, W> for AggregateContents<A, F, W>
where
    K: Key,
    A: AggregateFunction,
    W: Window,
    F: ResultFn<K, A::Out, OUT, W>,
{
    fn has(&self, backend: &mut KeyedStateBackend<K>, w: &W) -> anyhow::Result<bool> {
        Ok(opened(&self.state).contains(backend, w)?)
    }

    fn emit_panes(
        &mut self,
        ctx: &mut WindowContext<'_, K, W>,
        panes: &[W],
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        let state = opened(&self.state);
        let mut acc: Option<A::Acc> = None;
        for p in panes {
            if let Some(v) = state.get(ctx.backend, p)? {
                acc = Some(match acc {
                    Some(a) => self.function.merge(a, v),
                    None => v,
                });
            }
        }
        let Some(acc) = acc else {
            return Ok(());
        };
        let key = current_key(ctx.backend)?;
        let value = self.function.get_result(&acc);
        self.result.emit(&key, ctx, value, out)
    }
}

/// What runs on a window's elements when it fires: a process window
/// function, or, in a window with an evictor, a reduce or an aggregate
/// folding the elements left.
pub(crate) trait ElementsFn<K: Key, T, OUT, W: Window>: Clone + Send + 'static {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()>;
    fn apply(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, K, W>,
        elements: Vec<T>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;
}

/// A process window function on the elements.
#[derive(Clone)]
pub(crate) struct ProcessElements<P>(pub(crate) P);

impl<K: Key, T, OUT, W: Window, P: ProcessWindowFunction<K, T, OUT, W>> ElementsFn<K, T, OUT, W>
    for ProcessElements<P>
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        self.0.open(ctx)
    }

    fn apply(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, K, W>,
        elements: Vec<T>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        self.0.process(key, ctx, elements, out)
    }
}

/// The elements folded with a reduce function, then a result function.
#[derive(Clone)]
pub(crate) struct FoldReduce<R, F>(pub(crate) R, pub(crate) F);

impl<K, T, OUT, W, R, F> ElementsFn<K, T, OUT, W> for FoldReduce<R, F>
where
    K: Key,
    T: Send + 'static,
    W: Window,
    R: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    F: ResultFn<K, T, OUT, W>,
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        self.1.open(ctx)
    }

    fn apply(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, K, W>,
        elements: Vec<T>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        match elements.into_iter().reduce(&self.0) {
            Some(v) => self.1.emit(key, ctx, v, out),
            None => Ok(()),
        }
    }
}

/// The elements folded with an aggregate function, then a result
/// function.
pub(crate) struct FoldAggregate<A, F>(pub(crate) std::sync::Arc<A>, pub(crate) F);

impl<A, F: Clone> Clone for FoldAggregate<A, F> {
    fn clone(&self) -> Self {
        FoldAggregate(self.0.clone(), self.1.clone())
    }
}

impl<K, OUT, W, A, F> ElementsFn<K, A::In, OUT, W> for FoldAggregate<A, F>
where
    K: Key,
    W: Window,
    A: AggregateFunction,
    F: ResultFn<K, A::Out, OUT, W>,
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        self.1.open(ctx)
    }

    fn apply(
        &mut self,
        key: &K,
        ctx: &mut WindowContext<'_, K, W>,
        elements: Vec<A::In>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let mut acc = self.0.create_accumulator();
        for e in elements {
            self.0.add(e, &mut acc);
        }
        let value = self.0.get_result(&acc);
        self.1.emit(key, ctx, value, out)
    }
}

/// Every element of a window with its timestamp, for a process window
/// function or an evictor (Flink's `process` / `apply`, and
/// `EvictingWindowOperator`): one map entry per element, numbered in
/// arrival order, and the window's count, so adding an element writes one
/// entry instead of rewriting the window's list.
#[derive(Clone)]
pub(crate) struct ElementContents<T, E, F, W> {
    pub(crate) evictor: E,
    pub(crate) function: F,
    /// The map states' names (counts, elements): per window, or per
    /// slice.
    pub(crate) state_names: (&'static str, &'static str),
    pub(crate) elements: Option<MapState<(W, u32), (T, i64)>>,
    pub(crate) counts: Option<MapState<W, u32>>,
}

impl<T: StateValue, E, F, W: Window> ElementContents<T, E, F, W> {
    /// An element store per window running `function` when a window
    /// fires.
    pub(crate) fn new(evictor: E, function: F) -> Self {
        ElementContents {
            evictor,
            function,
            state_names: (CONTENTS, ELEMENTS),
            elements: None,
            counts: None,
        }
    }

    /// The same store per slice of sliding windows.
    pub(crate) fn per_slice(evictor: E, function: F) -> Self {
        ElementContents {
            state_names: (SLICES, SLICE_ELEMENTS),
            ..Self::new(evictor, function)
        }
    }

    /// `w`'s elements in arrival order, if it has any.
    fn read<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
        w: &W,
    ) -> anyhow::Result<Option<Vec<TimestampedValue<T>>>> {
        let Some(n) = opened(&self.counts).get(backend, w)? else {
            return Ok(None);
        };
        let elements = opened(&self.elements);
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            if let Some((value, ts)) = elements.get(backend, &(*w, i))? {
                out.push(TimestampedValue {
                    value,
                    timestamp: (ts != floe_core::NO_TIMESTAMP).then_some(ts),
                });
            }
        }
        Ok(Some(out))
    }

    fn push<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
        w: &W,
        value: T,
        ts: i64,
    ) -> anyhow::Result<()> {
        let counts = opened(&self.counts);
        let n = counts.get(backend, w)?.unwrap_or(0);
        opened(&self.elements).put(backend, (*w, n), (value, ts))?;
        counts.put(backend, *w, n + 1)?;
        Ok(())
    }

    fn remove_all<K: Key>(&self, backend: &mut KeyedStateBackend<K>, w: &W) -> anyhow::Result<()> {
        let Some(n) = opened(&self.counts).remove(backend, w)? else {
            return Ok(());
        };
        let elements = opened(&self.elements);
        for i in 0..n {
            elements.remove(backend, &(*w, i))?;
        }
        Ok(())
    }

    /// Replaces `w`'s elements with `kept`.
    fn rewrite<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
        w: &W,
        kept: Vec<TimestampedValue<T>>,
    ) -> anyhow::Result<()> {
        self.remove_all(backend, w)?;
        for e in kept {
            self.push(
                backend,
                w,
                e.value,
                e.timestamp.unwrap_or(floe_core::NO_TIMESTAMP),
            )?;
        }
        Ok(())
    }
}

impl<K, T, OUT, E, F, W> WindowContents<K, T, OUT, W> for ElementContents<T, E, F, W>
where
    K: Key,
    T: StateValue,
    W: Window,
    E: Evictor<T, W>,
    F: ElementsFn<K, T, OUT, W>,
{
    fn open(&mut self, info: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()> {
        let (counts, elements) = self.state_names;
        self.counts = Some(backend.get_map_state(&MapStateDescriptor::new(counts))?);
        self.elements = Some(backend.get_map_state(&MapStateDescriptor::new(elements))?);
        self.function
            .open(&mut RuntimeContext::new(info, Some(backend)))
    }

    #[inline]
    fn add(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        w: &W,
        value: T,
        timestamp: i64,
    ) -> anyhow::Result<()> {
        self.push(backend, w, value, timestamp)
    }

    fn emit(
        &mut self,
        ctx: &mut WindowContext<'_, K, W>,
        w: &W,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        let Some(mut elements) = self.read(ctx.backend, w)? else {
            return Ok(());
        };
        let n = elements.len();
        let ectx = EvictorContext {
            current_watermark: ctx.watermark,
            current_processing_time: ctx.processing_time,
        };
        self.evictor.evict_before(&mut elements, ctx.window, &ectx);
        let key = current_key(ctx.backend)?;
        let values = elements.iter().map(|e| e.value.clone()).collect();
        self.function.apply(&key, ctx, values, out)?;
        self.evictor.evict_after(&mut elements, ctx.window, &ectx);
        if elements.len() != n {
            self.rewrite(ctx.backend, w, elements)?;
        }
        Ok(())
    }

    fn clear(&mut self, backend: &mut KeyedStateBackend<K>, w: &W) -> anyhow::Result<()> {
        self.remove_all(backend, w)
    }

    fn merge(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        target: &W,
        sources: &[W],
    ) -> anyhow::Result<()> {
        for s in sources {
            if let Some(values) = self.read(backend, s)? {
                self.remove_all(backend, s)?;
                for v in values {
                    self.push(
                        backend,
                        target,
                        v.value,
                        v.timestamp.unwrap_or(floe_core::NO_TIMESTAMP),
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Sliding process windows per slice: an element is stored once, in its
/// slice, and a firing window reads its slices' elements, slice by slice
/// (arrival order within a slice). Evictors need the window's own
/// element list, so only the evictor-less store is kept per slice.
impl<K, T, OUT, F, W> PaneContents<K, T, OUT, W> for ElementContents<T, NoEvictor, F, W>
where
    K: Key,
    T: StateValue,
    W: Window,
    F: ElementsFn<K, T, OUT, W>,
{
    fn has(&self, backend: &mut KeyedStateBackend<K>, w: &W) -> anyhow::Result<bool> {
        Ok(opened(&self.counts).contains(backend, w)?)
    }

    fn emit_panes(
        &mut self,
        ctx: &mut WindowContext<'_, K, W>,
        panes: &[W],
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        let mut values = Vec::new();
        for p in panes {
            if let Some(elements) = self.read(ctx.backend, p)? {
                values.extend(elements.into_iter().map(|e| e.value));
            }
        }
        if values.is_empty() {
            return Ok(());
        }
        let key = current_key(ctx.backend)?;
        self.function.apply(&key, ctx, values, out)
    }
}

/// The handles of the triggers' per-window values, registered on first
/// use as map states from window to value (`trigger-<name>`).
#[derive(Default)]
pub(crate) struct TriggerStates {
    handles: HashMap<String, Box<dyn Any + Send>>,
}

impl Clone for TriggerStates {
    /// Handles belong to one backend: a clone (another subtask) registers
    /// its own.
    fn clone(&self) -> Self {
        TriggerStates::default()
    }
}

impl TriggerStates {
    fn handle<K: Key, W: Window, S: StateValue>(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        name: &str,
    ) -> anyhow::Result<MapState<W, S>> {
        if let Some(h) = self.handles.get(name) {
            return h.downcast_ref::<MapState<W, S>>().cloned().ok_or_else(|| {
                anyhow::anyhow!("the trigger uses its state '{name}' with two different types")
            });
        }
        let h: MapState<W, S> =
            backend.get_map_state(&MapStateDescriptor::new(format!("trigger-{name}")))?;
        self.handles.insert(name.to_string(), Box::new(h.clone()));
        Ok(h)
    }
}

/// The trigger's view of one key and window.
struct TriggerCx<'a, K: Key, W: Window> {
    backend: &'a mut KeyedStateBackend<K>,
    timers: &'a KeyedTimers<W>,
    states: &'a mut TriggerStates,
    window: W,
    /// While merging: the windows merged into `window`.
    merged: &'a [W],
}

impl<K: Key, W: Window> TriggerContext for TriggerCx<'_, K, W> {
    fn current_watermark(&self) -> i64 {
        self.timers.watermark()
    }

    fn current_processing_time(&self) -> i64 {
        self.timers.now_ms()
    }

    fn register_event_time_timer(&mut self, time: i64) -> anyhow::Result<()> {
        self.backend.register_timer(
            self.timers.queue(),
            TimeDomain::EventTime,
            time,
            self.window,
        )?;
        Ok(())
    }

    fn register_processing_time_timer(&mut self, time: i64) -> anyhow::Result<()> {
        self.backend.register_timer(
            self.timers.queue(),
            TimeDomain::ProcessingTime,
            time,
            self.window,
        )?;
        self.timers.time().request_wakeup(time);
        Ok(())
    }

    fn delete_event_time_timer(&mut self, time: i64) -> anyhow::Result<()> {
        self.backend.delete_timer(
            self.timers.queue(),
            TimeDomain::EventTime,
            time,
            &self.window,
        )?;
        Ok(())
    }

    fn delete_processing_time_timer(&mut self, time: i64) -> anyhow::Result<()> {
        self.backend.delete_timer(
            self.timers.queue(),
            TimeDomain::ProcessingTime,
            time,
            &self.window,
        )?;
        Ok(())
    }

    fn get_state<S: StateValue>(&mut self, name: &str) -> anyhow::Result<Option<S>> {
        let h = self.states.handle::<K, W, S>(self.backend, name)?;
        Ok(h.get(self.backend, &self.window)?)
    }

    fn set_state<S: StateValue>(&mut self, name: &str, value: Option<S>) -> anyhow::Result<()> {
        let h = self.states.handle::<K, W, S>(self.backend, name)?;
        match value {
            Some(v) => h.put(self.backend, self.window, v)?,
            None => {
                h.remove(self.backend, &self.window)?;
            }
        }
        Ok(())
    }

    fn merge_state<S: StateValue>(
        &mut self,
        name: &str,
        reduce: impl Fn(S, S) -> S,
    ) -> anyhow::Result<()> {
        let h = self.states.handle::<K, W, S>(self.backend, name)?;
        merge_values(&h, self.backend, &self.window, self.merged, reduce)
    }
}

/// A window operator's logic: assigner, trigger, contents, lateness.
pub(crate) struct WindowLogic<IN, A: WindowAssigner<IN>, Tr, C> {
    pub(crate) assigner: A,
    pub(crate) trigger: Tr,
    pub(crate) contents: C,
    /// Milliseconds a window is kept after its end for late elements.
    pub(crate) allowed_lateness: i64,
    /// Where elements too late for every window go.
    pub(crate) late: Option<OutputTag<IN>>,
    pub(crate) merging: Option<MergingState<A::W>>,
    pub(crate) function_state: Option<WindowFunctionState<A::W>>,
    pub(crate) trigger_states: TriggerStates,
    pub(crate) windows: Vec<A::W>,
}

impl<IN, A: WindowAssigner<IN>, Tr: Clone, C: Clone> Clone for WindowLogic<IN, A, Tr, C> {
    fn clone(&self) -> Self {
        WindowLogic {
            assigner: self.assigner.clone(),
            trigger: self.trigger.clone(),
            contents: self.contents.clone(),
            allowed_lateness: self.allowed_lateness,
            late: self.late.clone(),
            merging: self.merging.clone(),
            function_state: self.function_state.clone(),
            trigger_states: self.trigger_states.clone(),
            windows: Vec::new(),
        }
    }
}

/// The parts of the logic a record or timer works with, borrowed apart.
struct Parts<'a, K: Key, IN, W: Window, Tr, C> {
    cx: KeyedCx<'a, K, W>,
    timers: &'a KeyedTimers<W>,
    trigger: &'a mut Tr,
    contents: &'a mut C,
    states: &'a mut TriggerStates,
    /// Per-window state of the function, unless the windows merge.
    function_state: Option<&'a WindowFunctionState<W>>,
    event_time: bool,
    allowed_lateness: i64,
    _in: std::marker::PhantomData<fn(IN)>,
}

impl<'a, K: Key, IN, W: Window, Tr: Trigger<IN, W>, C> Parts<'a, K, IN, W, Tr, C> {
    fn trigger_cx<'b>(&'b mut self, window: W, merged: &'b [W]) -> TriggerCx<'b, K, W> {
        TriggerCx {
            backend: &mut *self.cx.backend,
            timers: self.timers,
            states: &mut *self.states,
            window,
            merged,
        }
    }

    /// Calls the trigger for `window` (merging `merged` into it).
    fn with_trigger<R>(
        &mut self,
        window: W,
        merged: &[W],
        f: impl FnOnce(&mut Tr, &mut TriggerCx<'_, K, W>) -> R,
    ) -> R {
        let mut t = TriggerCx {
            backend: &mut *self.cx.backend,
            timers: self.timers,
            states: &mut *self.states,
            window,
            merged,
        };
        f(self.trigger, &mut t)
    }

    /// When `window`'s state goes: its end plus the allowed lateness in
    /// event time (never, for a window that does not end), its end in
    /// processing time.
    fn cleanup_time(&self, window: &W) -> i64 {
        if self.event_time {
            window.max_timestamp().saturating_add(self.allowed_lateness)
        } else {
            window.max_timestamp()
        }
    }

    fn is_window_late(&self, window: &W) -> bool {
        self.event_time && self.cleanup_time(window) <= self.timers.watermark()
    }

    fn cleanup_timer(&mut self, window: &W, set: bool) -> anyhow::Result<()> {
        let at = self.cleanup_time(window);
        if at == i64::MAX {
            return Ok(());
        }
        let event_time = self.event_time;
        let mut t = self.trigger_cx(*window, &[]);
        match (event_time, set) {
            (true, true) => t.register_event_time_timer(at),
            (true, false) => t.delete_event_time_timer(at),
            (false, true) => t.register_processing_time_timer(at),
            (false, false) => t.delete_processing_time_timer(at),
        }
    }

    /// Runs the window function on `window` (contents under
    /// `state_window`), its output stamped with the window's end.
    fn fire<OUT>(
        &mut self,
        window: &W,
        state_window: &W,
        out: &mut floe_core::Batch<OUT>,
    ) -> anyhow::Result<()>
    where
        C: WindowContents<K, IN, OUT, W>,
    {
        let from = out.records.len();
        let mut ctx = WindowContext {
            info: self.cx.info,
            backend: &mut *self.cx.backend,
            window,
            watermark: self.timers.watermark(),
            processing_time: self.timers.now_ms(),
            side: &mut *self.cx.side,
            window_state: self.function_state,
        };
        self.contents.emit(
            &mut ctx,
            state_window,
            &mut Collector::new(&mut out.records),
        )?;
        stamp(out, from, window.max_timestamp());
        Ok(())
    }

    /// Applies a trigger's decision.
    fn apply<OUT>(
        &mut self,
        result: TriggerResult,
        window: &W,
        state_window: &W,
        out: &mut floe_core::Batch<OUT>,
    ) -> anyhow::Result<()>
    where
        C: WindowContents<K, IN, OUT, W>,
    {
        if result.is_fire() {
            self.fire(window, state_window, out)?;
        }
        if result.is_purge() {
            self.contents.clear(self.cx.backend, state_window)?;
        }
        Ok(())
    }
}

impl<IN, A, Tr, C> WindowLogic<IN, A, Tr, C>
where
    A: WindowAssigner<IN>,
{
    fn parts<'a, K: Key>(
        &'a mut self,
        cx: KeyedCx<'a, K, A::W>,
    ) -> anyhow::Result<Parts<'a, K, IN, A::W, Tr, C>> {
        let timers = cx
            .timers
            .ok_or_else(|| anyhow::anyhow!("a window operator without its timers"))?;
        Ok(Parts {
            timers,
            cx,
            trigger: &mut self.trigger,
            contents: &mut self.contents,
            states: &mut self.trigger_states,
            function_state: if self.assigner.is_merging() {
                None
            } else {
                self.function_state.as_ref()
            },
            event_time: self.assigner.is_event_time(),
            allowed_lateness: self.allowed_lateness,
            _in: std::marker::PhantomData,
        })
    }
}

/// A merging assigner's windows of a key, as `(window, state window)`
/// pairs in keyed state.
pub(crate) type MergingState<W> = ValueState<Vec<(W, W)>>;

fn merging_set<K: Key, W: Window>(
    state: &Option<MergingState<W>>,
    backend: &mut KeyedStateBackend<K>,
) -> anyhow::Result<Option<MergingWindowSet<W>>> {
    Ok(match state {
        Some(s) => Some(MergingWindowSet::from_pairs(
            s.value(backend)?.unwrap_or_default(),
        )),
        None => None,
    })
}

fn store_merging_set<K: Key, W: Window>(
    state: &Option<MergingState<W>>,
    backend: &mut KeyedStateBackend<K>,
    set: Option<MergingWindowSet<W>>,
) -> anyhow::Result<()> {
    if let (Some(s), Some(set)) = (state, set) {
        if set.is_empty() {
            s.clear(backend)?;
        } else {
            s.update(backend, set.pairs().collect())?;
        }
    }
    Ok(())
}

impl<K, IN, OUT, A, Tr, C> KeyedLogic<K, IN, OUT> for WindowLogic<IN, A, Tr, C>
where
    K: Key,
    IN: Clone + Send + 'static,
    A: WindowAssigner<IN>,
    Tr: Trigger<IN, A::W>,
    C: WindowContents<K, IN, OUT, A::W>,
{
    type N = A::W;

    fn timer_queue(&self) -> Option<&'static str> {
        Some(WINDOW_TIMERS)
    }

    fn open(&mut self, info: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()> {
        if self.assigner.is_merging() {
            anyhow::ensure!(
                self.trigger.can_merge(),
                "a merging window assigner (session windows) cannot be used with a trigger that does not support merging"
            );
            self.merging = Some(backend.get_state(&ValueStateDescriptor::new(MERGING))?);
        }
        self.function_state = Some(open_window_function_state(backend)?);
        self.contents.open(info, backend)
    }

    fn process_element(
        &mut self,
        value: IN,
        cx: KeyedCx<'_, K, A::W>,
        out: &mut floe_core::Batch<OUT>,
    ) -> anyhow::Result<()> {
        let timestamp = cx.timestamp;
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        let processing_time = cx.timers.map_or(0, KeyedTimers::now_ms);
        self.assigner.assign_windows(
            &value,
            timestamp,
            &AssignerContext { processing_time },
            &mut windows,
        )?;
        let merging = self.merging.clone();
        let late = self.late.clone();
        let mut p = self.parts(cx)?;
        let mut set = merging_set(&merging, p.cx.backend)?;
        let mut skipped = true;
        for w in windows.iter().copied() {
            let (window, state_window) = match set.as_mut() {
                None => (w, w),
                Some(set) => {
                    let (actual, merge) = set.add_window(w);
                    if let Some(m) = merge {
                        let late_result = if p.event_time {
                            m.result.max_timestamp().saturating_add(p.allowed_lateness)
                                <= p.timers.watermark()
                        } else {
                            m.result.max_timestamp() <= p.timers.now_ms()
                        };
                        anyhow::ensure!(
                            !late_result,
                            "merging windows {:?} into {:?} would end it before the current time ({}); a window's end cannot move behind the watermark by merging",
                            m.merged,
                            m.result,
                            p.timers.watermark()
                        );
                        p.with_trigger(m.result, &m.merged, |tr, t| tr.on_merge(&m.result, t))?;
                        for merged in &m.merged {
                            p.with_trigger(*merged, &[], |tr, t| tr.clear(merged, t))?;
                            p.cleanup_timer(merged, false)?;
                        }
                        p.contents
                            .merge(p.cx.backend, &m.state_result, &m.merged_state)?;
                    }
                    if p.is_window_late(&actual) {
                        set.retire_window(&actual);
                        continue;
                    }
                    let state_window = set
                        .state_window(&actual)
                        .ok_or_else(|| anyhow::anyhow!("window {actual:?} has no state window"))?;
                    (actual, state_window)
                }
            };
            if set.is_none() && p.is_window_late(&window) {
                continue;
            }
            skipped = false;
            p.contents
                .add(p.cx.backend, &state_window, value.clone(), timestamp)?;
            let result = p.with_trigger(window, &[], |tr, t| {
                tr.on_element(&value, timestamp, &window, t)
            })?;
            p.apply(result, &window, &state_window, out)?;
            p.cleanup_timer(&window, true)?;
        }
        store_merging_set(&merging, p.cx.backend, set)?;
        if skipped
            && p.event_time
            && timestamp.saturating_add(p.allowed_lateness) <= p.timers.watermark()
            && let Some(tag) = &late
        {
            p.cx.side.push(tag, value, timestamp)?;
        }
        self.windows = windows;
        Ok(())
    }

    fn on_timer(
        &mut self,
        domain: TimeDomain,
        timer: Timer<K, A::W>,
        cx: KeyedCx<'_, K, A::W>,
        out: &mut floe_core::Batch<OUT>,
    ) -> anyhow::Result<()> {
        let window = timer.namespace;
        let merging = self.merging.clone();
        let mut p = self.parts(cx)?;
        let mut set = merging_set(&merging, p.cx.backend)?;
        let state_window = match set.as_ref() {
            None => window,
            // A timer of a window merged away: its trigger state went with
            // the merge, nothing is left to do (as in Flink).
            Some(set) => match set.state_window(&window) {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        let result = p.with_trigger(window, &[], |tr, t| match domain {
            TimeDomain::EventTime => tr.on_event_time(timer.timestamp, &window, t),
            TimeDomain::ProcessingTime => tr.on_processing_time(timer.timestamp, &window, t),
        })?;
        p.apply(result, &window, &state_window, out)?;
        let cleanup_domain = if p.event_time {
            TimeDomain::EventTime
        } else {
            TimeDomain::ProcessingTime
        };
        if domain == cleanup_domain && timer.timestamp == p.cleanup_time(&window) {
            p.contents.clear(p.cx.backend, &state_window)?;
            p.with_trigger(window, &[], |tr, t| tr.clear(&window, t))?;
            if let Some(state) = p.function_state {
                clear_window_function_state(state, p.cx.backend, &window)?;
            }
            if let Some(set) = set.as_mut() {
                set.retire_window(&window);
            }
        }
        store_merging_set(&merging, p.cx.backend, set)
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
