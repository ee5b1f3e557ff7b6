//! Sliding windows kept per slice, for every window function (`reduce`,
//! `aggregate`, `process`, `apply`) with a trigger that fires at the
//! window's end (the default); evictors keep per-window lists.
//!
//! Flink's DataStream window operator adds every element to each of the
//! `size / slide` windows it belongs to: a copy, a state write and a
//! trigger call per window. Here the time axis is cut into slices of
//! `gcd(size, slide)`, an element is folded into its one slice's partial
//! result (or, for process functions, stored in its one slice), and a
//! window, when it fires, combines its slices' results
//! (`AggregateFunction::merge`, or the reduce function: both must be
//! associative and commutative, as slicing in Flink SQL requires) or
//! hands over their elements. Timers
//! are per window (namespaced by it), set once per slice; a slice is
//! deleted when the last window holding it is cleaned up. Lateness,
//! re-firing for late elements within it, and the late side output follow
//! the event-time trigger's rules, exactly as [`super::operator`]'s
//! operator applies them.

use floe_runtime::side_output::OutputTag;
use floe_runtime::timer_service::KeyedTimers;
use floe_runtime::{CheckpointListener, CheckpointedFunction, TaskInfo};
use floe_state::{Key, KeyedStateBackend, TimeDomain, Timer};

use super::Window;
use super::assigner::{Slicing, WindowAssigner, WindowError};
use super::operator::{
    PaneContents, WindowContext, WindowFunctionState, clear_window_function_state,
    open_window_function_state,
};
use crate::functions::Collector;
use crate::keyed_op::{KeyedCx, KeyedLogic, stamp};

/// A sliding window operator's logic, per slice.
pub(crate) struct SlicedWindowLogic<IN, A: WindowAssigner<IN>, C> {
    pub(crate) assigner: A,
    pub(crate) slicing: Slicing,
    pub(crate) contents: C,
    pub(crate) allowed_lateness: i64,
    pub(crate) late: Option<OutputTag<IN>>,
    pub(crate) function_state: Option<WindowFunctionState<A::W>>,
}

impl<IN, A: WindowAssigner<IN>, C: Clone> Clone for SlicedWindowLogic<IN, A, C> {
    fn clone(&self) -> Self {
        SlicedWindowLogic {
            assigner: self.assigner.clone(),
            slicing: self.slicing,
            contents: self.contents.clone(),
            allowed_lateness: self.allowed_lateness,
            late: self.late.clone(),
            function_state: self.function_state.clone(),
        }
    }
}

/// The timer queue of sliced windows in snapshots (another name than the
/// window operator's: their timers and state mean other things).
const SLICED_TIMERS: &str = "slice-timers";

/// The window `[start, end)` of a slicing assigner's type.
fn span<W: Window>(start: i64, end: i64) -> W {
    W::from_bounds(start, end).expect("a slicing assigner's windows are spans of time")
}

/// The `[start, end)` of a slicing assigner's window.
fn bounds<W: Window>(w: &W) -> (i64, i64) {
    w.bounds()
        .expect("a slicing assigner's windows are spans of time")
}

impl<IN, A> SlicedWindowLogic<IN, A, ()>
where
    A: WindowAssigner<IN>,
{
    /// Whether windows of `assigner` fired by `trigger` can be kept per
    /// slice: sliding windows, fired at their end.
    pub(crate) fn applies<Tr: super::Trigger<IN, A::W>>(assigner: &A, trigger: &Tr) -> bool {
        assigner.slicing().is_some()
            && trigger.fires_at_window_end()
            && A::W::from_bounds(0, 1).is_some()
    }
}

impl<IN, A, C> SlicedWindowLogic<IN, A, C>
where
    A: WindowAssigner<IN>,
{
    fn event_time(&self) -> bool {
        self.assigner.is_event_time()
    }

    fn domain(&self) -> TimeDomain {
        if self.event_time() {
            TimeDomain::EventTime
        } else {
            TimeDomain::ProcessingTime
        }
    }

    /// When a window's state may go: its end plus the lateness (event
    /// time), its end (processing time).
    fn cleanup_time(&self, w: &A::W) -> i64 {
        if self.event_time() {
            w.max_timestamp().saturating_add(self.allowed_lateness)
        } else {
            w.max_timestamp()
        }
    }

    /// The slices (as windows) of `w`.
    fn panes(&self, w: &A::W) -> Vec<A::W> {
        let slice = self.slicing.slice();
        let (start, _) = bounds(w);
        (0..self.slicing.size / slice)
            .map(|i| span(start + i * slice, start + (i + 1) * slice))
            .collect()
    }
}

/// Runs the window function on `window` from its slices, stamped with its
/// end.
fn fire<K: Key, IN, OUT, W: Window, C: PaneContents<K, IN, OUT, W>>(
    contents: &mut C,
    function_state: Option<&WindowFunctionState<W>>,
    cx: &mut KeyedCx<'_, K, W>,
    timers: &KeyedTimers<W>,
    window: &W,
    panes: &[W],
    out: &mut floe_core::Batch<OUT>,
) -> anyhow::Result<()> {
    let from = out.records.len();
    let mut ctx = WindowContext {
        info: cx.info,
        backend: &mut *cx.backend,
        window,
        watermark: timers.watermark(),
        processing_time: timers.now_ms(),
        side: &mut *cx.side,
        window_state: function_state,
    };
    contents.emit_panes(&mut ctx, panes, &mut Collector::new(&mut out.records))?;
    stamp(out, from, window.max_timestamp());
    Ok(())
}

impl<K, IN, OUT, A, C> KeyedLogic<K, IN, OUT> for SlicedWindowLogic<IN, A, C>
where
    K: Key,
    IN: Clone + Send + 'static,
    A: WindowAssigner<IN>,
    C: PaneContents<K, IN, OUT, A::W>,
{
    type N = A::W;

    fn timer_queue(&self) -> Option<&'static str> {
        Some(SLICED_TIMERS)
    }

    fn open(&mut self, info: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()> {
        self.function_state = Some(open_window_function_state(backend)?);
        self.contents.open(info, backend)
    }

    fn process_element(
        &mut self,
        value: IN,
        mut cx: KeyedCx<'_, K, A::W>,
        out: &mut floe_core::Batch<OUT>,
    ) -> anyhow::Result<()> {
        let timers = cx
            .timers
            .ok_or_else(|| anyhow::anyhow!("a window operator without its timers"))?;
        let timestamp = cx.timestamp;
        let watermark = timers.watermark();
        // The clock only for processing-time windows: reading it per
        // element cost event-time windows 2 % of Nexmark q5.
        let time = if self.event_time() {
            if timestamp == floe_core::NO_TIMESTAMP {
                return Err(WindowError::NoTimestamp.into());
            }
            timestamp
        } else {
            timers.now_ms()
        };
        let slice = self.slicing.slice();
        let slice_start = super::TimeWindow::start_with_offset(time, self.slicing.offset, slice);
        let pane: A::W = span(slice_start, slice_start + slice);
        let event_time = self.event_time();
        // The windows that still take it (not past their cleanup).
        let windows: Vec<A::W> = self
            .slicing
            .windows_of_slice(slice_start)
            .map(|w| span(w.start, w.end))
            .filter(|w| !(event_time && self.cleanup_time(w) <= watermark))
            .collect();
        if windows.is_empty() {
            if event_time
                && timestamp.saturating_add(self.allowed_lateness) <= watermark
                && let Some(tag) = &self.late
            {
                cx.side.push(tag, value, timestamp)?;
            }
            return Ok(());
        }
        let new_pane = !self.contents.has(cx.backend, &pane)?;
        self.contents.add(cx.backend, &pane, value, timestamp)?;
        let domain = self.domain();
        for w in &windows {
            if event_time && w.max_timestamp() <= watermark {
                // Fired already, within the lateness: fires again with the
                // late element, as the event-time trigger does.
                let panes = self.panes(w);
                fire(
                    &mut self.contents,
                    self.function_state.as_ref(),
                    &mut cx,
                    timers,
                    w,
                    &panes,
                    out,
                )?;
            } else if new_pane {
                cx.backend
                    .register_timer(timers.queue(), domain, w.max_timestamp(), *w)?;
                if domain == TimeDomain::ProcessingTime {
                    timers.time().request_wakeup(w.max_timestamp());
                }
            }
            if new_pane {
                let cleanup = self.cleanup_time(w);
                if cleanup != w.max_timestamp() && cleanup != i64::MAX {
                    cx.backend
                        .register_timer(timers.queue(), domain, cleanup, *w)?;
                }
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        domain: TimeDomain,
        timer: Timer<K, A::W>,
        mut cx: KeyedCx<'_, K, A::W>,
        out: &mut floe_core::Batch<OUT>,
    ) -> anyhow::Result<()> {
        if domain != self.domain() {
            return Ok(());
        }
        let timers = cx
            .timers
            .ok_or_else(|| anyhow::anyhow!("a window operator without its timers"))?;
        let w = timer.namespace;
        let panes = self.panes(&w);
        if timer.timestamp == w.max_timestamp() {
            fire(
                &mut self.contents,
                self.function_state.as_ref(),
                &mut cx,
                timers,
                &w,
                &panes,
                out,
            )?;
        }
        if timer.timestamp == self.cleanup_time(&w) {
            // The slices no later window holds: those before the next
            // window's start.
            let next_start = bounds(&w).0.saturating_add(self.slicing.slide);
            for p in panes.iter().filter(|p| bounds(*p).0 < next_start) {
                self.contents.clear(cx.backend, p)?;
            }
            if let Some(state) = &self.function_state {
                clear_window_function_state(state, cx.backend, &w)?;
            }
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
