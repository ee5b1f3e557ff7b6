//! Triggers (Flink's `Trigger`s): when a window's contents are emitted,
//! and whether they are kept.
//!
//! A trigger is called for every element added to a window and for every
//! timer it set for the window; it answers with a [`TriggerResult`].
//! Everything it remembers lives in the [`TriggerContext`]: timers, and
//! small per-window values (a count, the next firing time), which the
//! window operator keeps as keyed state under the window, so they are in
//! every checkpoint and merge when session windows merge.
//!
//! Triggers are generic over their context (static dispatch: a call per
//! element costs no virtual call), so a user's trigger implements the
//! same trait with the same methods.

use std::time::Duration;

use floe_state::{StateValue, TimeDomain};

use super::Window;

/// What a trigger decides (Flink's `TriggerResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerResult {
    /// Nothing happens.
    Continue,
    /// The window function runs on the contents, which are kept.
    Fire,
    /// The contents are dropped without being emitted.
    Purge,
    /// The window function runs, then the contents are dropped.
    FireAndPurge,
}

impl TriggerResult {
    /// Whether the window function runs.
    pub fn is_fire(self) -> bool {
        matches!(self, TriggerResult::Fire | TriggerResult::FireAndPurge)
    }

    /// Whether the contents are dropped.
    pub fn is_purge(self) -> bool {
        matches!(self, TriggerResult::Purge | TriggerResult::FireAndPurge)
    }
}

/// What a trigger can do for the window it is called for (Flink's
/// `Trigger.TriggerContext` and `OnMergeContext`).
pub trait TriggerContext {
    /// The operator's event time.
    fn current_watermark(&self) -> i64;
    /// The task's clock.
    fn current_processing_time(&self) -> i64;
    /// Calls the trigger back at `time` in event time, for this key and
    /// window (once per time: setting it again is a no-op).
    fn register_event_time_timer(&mut self, time: i64) -> anyhow::Result<()>;
    /// Calls the trigger back at `time` in processing time.
    fn register_processing_time_timer(&mut self, time: i64) -> anyhow::Result<()>;
    /// Deletes an event-time timer of this key and window.
    fn delete_event_time_timer(&mut self, time: i64) -> anyhow::Result<()>;
    /// Deletes a processing-time timer of this key and window.
    fn delete_processing_time_timer(&mut self, time: i64) -> anyhow::Result<()>;
    /// The trigger's value `name` for this key and window.
    fn get_state<S: StateValue>(&mut self, name: &str) -> anyhow::Result<Option<S>>;
    /// Sets (or, with `None`, clears) the value `name` for this key and
    /// window.
    fn set_state<S: StateValue>(&mut self, name: &str, value: Option<S>) -> anyhow::Result<()>;
    /// While merging windows: folds the merged windows' values `name`
    /// into this (the merged) window's with `reduce`, and clears theirs
    /// (Flink's `mergePartitionedState`).
    fn merge_state<S: StateValue>(
        &mut self,
        name: &str,
        reduce: impl Fn(S, S) -> S,
    ) -> anyhow::Result<()>;
}

/// Decides when a window fires (Flink's `Trigger`); cloned once per
/// subtask. Only `on_element` must be written: a trigger that sets no
/// timer and keeps no state needs nothing else.
pub trait Trigger<T, W: Window>: Clone + Send + 'static {
    /// An element (with event time `timestamp`) was added to `window`.
    fn on_element<C: TriggerContext>(
        &mut self,
        element: &T,
        timestamp: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult>;

    /// An event-time timer this trigger set for `window` is due.
    fn on_event_time<C: TriggerContext>(
        &mut self,
        _time: i64,
        _window: &W,
        _ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }

    /// A processing-time timer this trigger set for `window` is due.
    fn on_processing_time<C: TriggerContext>(
        &mut self,
        _time: i64,
        _window: &W,
        _ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }

    /// Whether it can be used with merging (session) windows: it then
    /// implements [`Self::on_merge`].
    fn can_merge(&self) -> bool {
        false
    }

    /// Whether it fires exactly as the event-time or processing-time
    /// trigger does (at the window's end, and again for each late element
    /// within the allowed lateness): sliding windows with such a trigger
    /// are kept per slice (see the windows guide).
    fn fires_at_window_end(&self) -> bool {
        false
    }

    /// Windows merged into `window`: set its timers and merge its state.
    fn on_merge<C: TriggerContext>(&mut self, _window: &W, _ctx: &mut C) -> anyhow::Result<()> {
        anyhow::bail!("this trigger does not support merging windows")
    }

    /// `window` is gone: delete its timers and state.
    fn clear<C: TriggerContext>(&mut self, _window: &W, _ctx: &mut C) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Fires when the watermark passes the window's end (Flink's
/// `EventTimeTrigger`, the default of event-time windows); an element
/// arriving after that but within the allowed lateness fires it again.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventTimeTrigger;

impl<T, W: Window> Trigger<T, W> for EventTimeTrigger {
    fn fires_at_window_end(&self) -> bool {
        true
    }

    #[inline]
    fn on_element<C: TriggerContext>(
        &mut self,
        _: &T,
        _: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        if window.max_timestamp() <= ctx.current_watermark() {
            // Late but within the allowed lateness: fire at once.
            return Ok(TriggerResult::Fire);
        }
        ctx.register_event_time_timer(window.max_timestamp())?;
        Ok(TriggerResult::Continue)
    }

    fn on_event_time<C: TriggerContext>(
        &mut self,
        time: i64,
        window: &W,
        _: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        })
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<C: TriggerContext>(&mut self, window: &W, ctx: &mut C) -> anyhow::Result<()> {
        if window.max_timestamp() > ctx.current_watermark() {
            ctx.register_event_time_timer(window.max_timestamp())?;
        }
        Ok(())
    }

    fn clear<C: TriggerContext>(&mut self, window: &W, ctx: &mut C) -> anyhow::Result<()> {
        ctx.delete_event_time_timer(window.max_timestamp())
    }
}

/// Fires when the task's clock passes the window's end (Flink's
/// `ProcessingTimeTrigger`, the default of processing-time windows).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessingTimeTrigger;

impl<T, W: Window> Trigger<T, W> for ProcessingTimeTrigger {
    fn fires_at_window_end(&self) -> bool {
        true
    }

    #[inline]
    fn on_element<C: TriggerContext>(
        &mut self,
        _: &T,
        _: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        ctx.register_processing_time_timer(window.max_timestamp())?;
        Ok(TriggerResult::Continue)
    }

    fn on_processing_time<C: TriggerContext>(
        &mut self,
        _: i64,
        _: &W,
        _: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(TriggerResult::Fire)
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<C: TriggerContext>(&mut self, window: &W, ctx: &mut C) -> anyhow::Result<()> {
        if window.max_timestamp() > ctx.current_processing_time() {
            ctx.register_processing_time_timer(window.max_timestamp())?;
        }
        Ok(())
    }

    fn clear<C: TriggerContext>(&mut self, window: &W, ctx: &mut C) -> anyhow::Result<()> {
        ctx.delete_processing_time_timer(window.max_timestamp())
    }
}

/// Never fires (Flink's `GlobalWindows.NeverTrigger`, the default of
/// global windows, which need a trigger of the user's).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverTrigger;

impl<T, W: Window> Trigger<T, W> for NeverTrigger {
    fn on_element<C: TriggerContext>(
        &mut self,
        _: &T,
        _: i64,
        _: &W,
        _: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<C: TriggerContext>(&mut self, _: &W, _: &mut C) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The trigger a window assigner implies (Flink's
/// `getDefaultTrigger()`): event time for event-time windows, processing
/// time for processing-time ones, never for global windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultTrigger {
    /// [`EventTimeTrigger`].
    EventTime,
    /// [`ProcessingTimeTrigger`].
    ProcessingTime,
    /// [`NeverTrigger`].
    Never,
}

impl<T, W: Window> Trigger<T, W> for DefaultTrigger {
    fn fires_at_window_end(&self) -> bool {
        *self != DefaultTrigger::Never
    }

    #[inline]
    fn on_element<C: TriggerContext>(
        &mut self,
        element: &T,
        timestamp: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        match self {
            DefaultTrigger::EventTime => {
                EventTimeTrigger.on_element(element, timestamp, window, ctx)
            }
            DefaultTrigger::ProcessingTime => {
                ProcessingTimeTrigger.on_element(element, timestamp, window, ctx)
            }
            DefaultTrigger::Never => Ok(TriggerResult::Continue),
        }
    }

    fn on_event_time<C: TriggerContext>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        match self {
            DefaultTrigger::EventTime => {
                Trigger::<T, W>::on_event_time(&mut EventTimeTrigger, time, window, ctx)
            }
            _ => Ok(TriggerResult::Continue),
        }
    }

    fn on_processing_time<C: TriggerContext>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        match self {
            DefaultTrigger::ProcessingTime => {
                Trigger::<T, W>::on_processing_time(&mut ProcessingTimeTrigger, time, window, ctx)
            }
            _ => Ok(TriggerResult::Continue),
        }
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<C: TriggerContext>(&mut self, window: &W, ctx: &mut C) -> anyhow::Result<()> {
        match self {
            DefaultTrigger::EventTime => {
                Trigger::<T, W>::on_merge(&mut EventTimeTrigger, window, ctx)
            }
            DefaultTrigger::ProcessingTime => {
                Trigger::<T, W>::on_merge(&mut ProcessingTimeTrigger, window, ctx)
            }
            DefaultTrigger::Never => Ok(()),
        }
    }

    fn clear<C: TriggerContext>(&mut self, window: &W, ctx: &mut C) -> anyhow::Result<()> {
        match self {
            DefaultTrigger::EventTime => Trigger::<T, W>::clear(&mut EventTimeTrigger, window, ctx),
            DefaultTrigger::ProcessingTime => {
                Trigger::<T, W>::clear(&mut ProcessingTimeTrigger, window, ctx)
            }
            DefaultTrigger::Never => Ok(()),
        }
    }
}

/// The state name of [`CountTrigger`]'s count.
const COUNT: &str = "count";
/// The state name of the continuous triggers' next firing time.
const FIRE_TIME: &str = "fire-time";

/// Fires every `n` elements of a window (Flink's `CountTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct CountTrigger {
    max_count: u64,
}

impl CountTrigger {
    /// Fires once a window holds `n` elements since it last fired.
    pub fn of(n: u64) -> Self {
        CountTrigger { max_count: n }
    }
}

impl<T, W: Window> Trigger<T, W> for CountTrigger {
    fn on_element<C: TriggerContext>(
        &mut self,
        _: &T,
        _: i64,
        _: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        let count = ctx.get_state::<u64>(COUNT)?.unwrap_or(0) + 1;
        if count >= self.max_count {
            ctx.set_state::<u64>(COUNT, None)?;
            return Ok(TriggerResult::Fire);
        }
        ctx.set_state(COUNT, Some(count))?;
        Ok(TriggerResult::Continue)
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<C: TriggerContext>(&mut self, _: &W, ctx: &mut C) -> anyhow::Result<()> {
        ctx.merge_state::<u64>(COUNT, |a, b| a + b)
    }

    fn clear<C: TriggerContext>(&mut self, _: &W, ctx: &mut C) -> anyhow::Result<()> {
        ctx.set_state::<u64>(COUNT, None)
    }
}

/// Turns every `Fire` of another trigger into `FireAndPurge` (Flink's
/// `PurgingTrigger`): each firing emits only what came since the last.
#[derive(Debug, Clone, Copy)]
pub struct PurgingTrigger<Tr> {
    inner: Tr,
}

impl<Tr> PurgingTrigger<Tr> {
    /// Purges after every firing of `trigger`.
    pub fn of(trigger: Tr) -> Self {
        PurgingTrigger { inner: trigger }
    }
}

fn purging(r: TriggerResult) -> TriggerResult {
    if r.is_fire() {
        TriggerResult::FireAndPurge
    } else {
        r
    }
}

impl<T, W: Window, Tr: Trigger<T, W>> Trigger<T, W> for PurgingTrigger<Tr> {
    fn on_element<C: TriggerContext>(
        &mut self,
        element: &T,
        timestamp: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(purging(
            self.inner.on_element(element, timestamp, window, ctx)?,
        ))
    }

    fn on_event_time<C: TriggerContext>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(purging(self.inner.on_event_time(time, window, ctx)?))
    }

    fn on_processing_time<C: TriggerContext>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        Ok(purging(self.inner.on_processing_time(time, window, ctx)?))
    }

    fn can_merge(&self) -> bool {
        self.inner.can_merge()
    }

    fn on_merge<C: TriggerContext>(&mut self, window: &W, ctx: &mut C) -> anyhow::Result<()> {
        self.inner.on_merge(window, ctx)
    }

    fn clear<C: TriggerContext>(&mut self, window: &W, ctx: &mut C) -> anyhow::Result<()> {
        self.inner.clear(window, ctx)
    }
}

fn interval_ms(d: Duration) -> i64 {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    assert!(
        ms > 0,
        "a continuous trigger needs an interval of at least 1 ms"
    );
    ms
}

/// The part the continuous triggers share: a next firing time per window
/// (the state [`FIRE_TIME`]) with a timer in their domain.
#[derive(Debug, Clone, Copy)]
struct NextFire {
    interval: i64,
    domain: TimeDomain,
}

impl NextFire {
    fn register_timer<C: TriggerContext>(&self, ctx: &mut C, time: i64) -> anyhow::Result<()> {
        match self.domain {
            TimeDomain::EventTime => ctx.register_event_time_timer(time),
            TimeDomain::ProcessingTime => ctx.register_processing_time_timer(time),
        }
    }

    /// Sets the next firing one interval after `time` (at most the
    /// window's end, and never later than one already set).
    fn schedule<W: Window, C: TriggerContext>(
        &self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<()> {
        let next = time
            .saturating_add(self.interval)
            .min(window.max_timestamp());
        let next = match ctx.get_state::<i64>(FIRE_TIME)? {
            Some(current) => current.min(next),
            None => next,
        };
        ctx.set_state(FIRE_TIME, Some(next))?;
        self.register_timer(ctx, next)
    }

    /// The first element of a window: schedules from the interval's start.
    fn start<W: Window, C: TriggerContext>(
        &self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<()> {
        if ctx.get_state::<i64>(FIRE_TIME)?.is_none() {
            self.schedule(time - time % self.interval, window, ctx)?;
        }
        Ok(())
    }

    /// A timer at `time`: fires (and schedules the next) when it is the
    /// window's next firing.
    fn on_timer<W: Window, C: TriggerContext>(
        &self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        if ctx.get_state::<i64>(FIRE_TIME)? == Some(time) {
            ctx.set_state::<i64>(FIRE_TIME, None)?;
            self.schedule(time, window, ctx)?;
            return Ok(TriggerResult::Fire);
        }
        Ok(TriggerResult::Continue)
    }

    /// Keeps the earliest next firing of the merged windows.
    fn merge<C: TriggerContext>(&self, ctx: &mut C) -> anyhow::Result<()> {
        ctx.merge_state::<i64>(FIRE_TIME, i64::min)?;
        if let Some(next) = ctx.get_state::<i64>(FIRE_TIME)? {
            self.register_timer(ctx, next)?;
        }
        Ok(())
    }

    fn clear<C: TriggerContext>(&self, ctx: &mut C) -> anyhow::Result<()> {
        if let Some(next) = ctx.get_state::<i64>(FIRE_TIME)? {
            match self.domain {
                TimeDomain::EventTime => ctx.delete_event_time_timer(next)?,
                TimeDomain::ProcessingTime => ctx.delete_processing_time_timer(next)?,
            }
            ctx.set_state::<i64>(FIRE_TIME, None)?;
        }
        Ok(())
    }
}

/// Fires every `interval` of event time while a window is open, and at its
/// end (Flink's `ContinuousEventTimeTrigger`): early results of a long
/// window.
#[derive(Debug, Clone, Copy)]
pub struct ContinuousEventTimeTrigger {
    next: NextFire,
}

impl ContinuousEventTimeTrigger {
    /// Fires every `interval` of event time.
    ///
    /// # Panics
    /// When `interval` is shorter than a millisecond.
    pub fn of(interval: Duration) -> Self {
        ContinuousEventTimeTrigger {
            next: NextFire {
                interval: interval_ms(interval),
                domain: TimeDomain::EventTime,
            },
        }
    }
}

impl<T, W: Window> Trigger<T, W> for ContinuousEventTimeTrigger {
    fn on_element<C: TriggerContext>(
        &mut self,
        _: &T,
        timestamp: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        if window.max_timestamp() <= ctx.current_watermark() {
            return Ok(TriggerResult::Fire);
        }
        ctx.register_event_time_timer(window.max_timestamp())?;
        self.next.start(timestamp, window, ctx)?;
        Ok(TriggerResult::Continue)
    }

    fn on_event_time<C: TriggerContext>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        if time == window.max_timestamp() {
            return Ok(TriggerResult::Fire);
        }
        self.next.on_timer(time, window, ctx)
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<C: TriggerContext>(&mut self, _: &W, ctx: &mut C) -> anyhow::Result<()> {
        self.next.merge(ctx)
    }

    fn clear<C: TriggerContext>(&mut self, _: &W, ctx: &mut C) -> anyhow::Result<()> {
        self.next.clear(ctx)
    }
}

/// Fires every `interval` of processing time while a window gets elements
/// (Flink's `ContinuousProcessingTimeTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct ContinuousProcessingTimeTrigger {
    next: NextFire,
}

impl ContinuousProcessingTimeTrigger {
    /// Fires every `interval` of processing time.
    ///
    /// # Panics
    /// When `interval` is shorter than a millisecond.
    pub fn of(interval: Duration) -> Self {
        ContinuousProcessingTimeTrigger {
            next: NextFire {
                interval: interval_ms(interval),
                domain: TimeDomain::ProcessingTime,
            },
        }
    }
}

impl<T, W: Window> Trigger<T, W> for ContinuousProcessingTimeTrigger {
    fn on_element<C: TriggerContext>(
        &mut self,
        _: &T,
        _: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        let now = ctx.current_processing_time();
        self.next.start(now, window, ctx)?;
        Ok(TriggerResult::Continue)
    }

    fn on_processing_time<C: TriggerContext>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut C,
    ) -> anyhow::Result<TriggerResult> {
        self.next.on_timer(time, window, ctx)
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<C: TriggerContext>(&mut self, _: &W, ctx: &mut C) -> anyhow::Result<()> {
        self.next.merge(ctx)
    }

    fn clear<C: TriggerContext>(&mut self, _: &W, ctx: &mut C) -> anyhow::Result<()> {
        self.next.clear(ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;
    use crate::window::TimeWindow;

    /// A trigger context over plain collections: one key, windows as
    /// namespaces, timers as sets.
    #[derive(Default)]
    struct TestContext {
        window: Option<TimeWindow>,
        merged: Vec<TimeWindow>,
        watermark: i64,
        now: i64,
        event_timers: BTreeSet<(i64, TimeWindow)>,
        processing_timers: BTreeSet<(i64, TimeWindow)>,
        state: HashMap<(String, TimeWindow), Vec<u8>>,
    }

    impl TestContext {
        fn w(&self) -> TimeWindow {
            self.window.expect("a window is set")
        }
    }

    impl TriggerContext for TestContext {
        fn current_watermark(&self) -> i64 {
            self.watermark
        }
        fn current_processing_time(&self) -> i64 {
            self.now
        }
        fn register_event_time_timer(&mut self, time: i64) -> anyhow::Result<()> {
            let w = self.w();
            self.event_timers.insert((time, w));
            Ok(())
        }
        fn register_processing_time_timer(&mut self, time: i64) -> anyhow::Result<()> {
            let w = self.w();
            self.processing_timers.insert((time, w));
            Ok(())
        }
        fn delete_event_time_timer(&mut self, time: i64) -> anyhow::Result<()> {
            let w = self.w();
            self.event_timers.remove(&(time, w));
            Ok(())
        }
        fn delete_processing_time_timer(&mut self, time: i64) -> anyhow::Result<()> {
            let w = self.w();
            self.processing_timers.remove(&(time, w));
            Ok(())
        }
        fn get_state<S: StateValue>(&mut self, name: &str) -> anyhow::Result<Option<S>> {
            Ok(self
                .state
                .get(&(name.to_string(), self.w()))
                .map(|b| postcard::from_bytes(b).unwrap()))
        }
        fn set_state<S: StateValue>(&mut self, name: &str, value: Option<S>) -> anyhow::Result<()> {
            let k = (name.to_string(), self.w());
            match value {
                Some(v) => self.state.insert(k, postcard::to_allocvec(&v).unwrap()),
                None => self.state.remove(&k),
            };
            Ok(())
        }
        fn merge_state<S: StateValue>(
            &mut self,
            name: &str,
            reduce: impl Fn(S, S) -> S,
        ) -> anyhow::Result<()> {
            let mut acc: Option<S> = self.get_state(name)?;
            for m in self.merged.clone() {
                if let Some(b) = self.state.remove(&(name.to_string(), m)) {
                    let v: S = postcard::from_bytes(&b).unwrap();
                    acc = Some(match acc {
                        Some(a) => reduce(a, v),
                        None => v,
                    });
                }
            }
            self.set_state(name, acc)
        }
    }

    fn at(w: TimeWindow) -> TestContext {
        TestContext {
            window: Some(w),
            watermark: i64::MIN,
            ..TestContext::default()
        }
    }

    #[test]
    fn event_time_trigger_fires_at_the_window_end() {
        let w = TimeWindow::new(0, 10);
        let mut ctx = at(w);
        let mut t = EventTimeTrigger;
        assert_eq!(
            t.on_element(&(), 3, &w, &mut ctx).unwrap(),
            TriggerResult::Continue
        );
        assert_eq!(ctx.event_timers, BTreeSet::from([(9, w)]));
        assert_eq!(
            Trigger::<(), _>::on_event_time(&mut t, 9, &w, &mut ctx).unwrap(),
            TriggerResult::Fire
        );
        assert_eq!(
            Trigger::<(), _>::on_event_time(&mut t, 5, &w, &mut ctx).unwrap(),
            TriggerResult::Continue
        );
        // Behind the watermark (allowed lateness): fires at once.
        ctx.watermark = 9;
        assert_eq!(
            t.on_element(&(), 3, &w, &mut ctx).unwrap(),
            TriggerResult::Fire
        );
        Trigger::<(), _>::clear(&mut t, &w, &mut ctx).unwrap();
        assert!(ctx.event_timers.is_empty());
    }

    #[test]
    fn count_trigger_fires_every_n_and_merges_counts() {
        let w = TimeWindow::new(0, 10);
        let mut ctx = at(w);
        let mut t = CountTrigger::of(3);
        let results: Vec<_> = (0..7)
            .map(|_| t.on_element(&(), 0, &w, &mut ctx).unwrap())
            .collect();
        use TriggerResult::*;
        assert_eq!(
            results,
            [Continue, Continue, Fire, Continue, Continue, Fire, Continue]
        );
        // Merging [0, 10) (count 1) and [20, 30) (count 1) into [0, 30).
        let other = TimeWindow::new(20, 30);
        ctx.window = Some(other);
        t.on_element(&(), 0, &other, &mut ctx).unwrap();
        let merged = TimeWindow::new(0, 30);
        ctx.window = Some(merged);
        ctx.merged = vec![w, other];
        Trigger::<(), _>::on_merge(&mut t, &merged, &mut ctx).unwrap();
        assert_eq!(ctx.get_state::<u64>(COUNT).unwrap(), Some(2));
        assert_eq!(t.on_element(&(), 0, &merged, &mut ctx).unwrap(), Fire);
    }

    #[test]
    fn purging_trigger_purges_what_fires() {
        let w = TimeWindow::new(0, 10);
        let mut ctx = at(w);
        let mut t = PurgingTrigger::of(CountTrigger::of(2));
        assert_eq!(
            t.on_element(&(), 0, &w, &mut ctx).unwrap(),
            TriggerResult::Continue
        );
        assert_eq!(
            t.on_element(&(), 0, &w, &mut ctx).unwrap(),
            TriggerResult::FireAndPurge
        );
    }

    #[test]
    fn continuous_event_time_trigger_fires_every_interval_and_at_the_end() {
        // A window [0, 100) firing every 30 ms of event time.
        let w = TimeWindow::new(0, 100);
        let mut ctx = at(w);
        let mut t = ContinuousEventTimeTrigger::of(Duration::from_millis(30));
        t.on_element(&(), 7, &w, &mut ctx).unwrap();
        assert_eq!(ctx.event_timers, BTreeSet::from([(30, w), (99, w)]));
        let mut fired = Vec::new();
        // Fire timers in order as a watermark of 99 would.
        while let Some(&(time, _)) = ctx.event_timers.first() {
            ctx.event_timers.remove(&(time, w));
            ctx.watermark = time;
            if Trigger::<(), _>::on_event_time(&mut t, time, &w, &mut ctx)
                .unwrap()
                .is_fire()
            {
                fired.push(time);
            }
        }
        assert_eq!(fired, [30, 60, 90, 99]);
    }

    #[test]
    fn processing_time_triggers_use_the_clock() {
        let w = TimeWindow::new(0, 100);
        let mut ctx = at(w);
        ctx.now = 45;
        let mut t = ContinuousProcessingTimeTrigger::of(Duration::from_millis(20));
        t.on_element(&(), 0, &w, &mut ctx).unwrap();
        assert_eq!(ctx.processing_timers, BTreeSet::from([(60, w)]));
        assert!(
            Trigger::<(), _>::on_processing_time(&mut t, 60, &w, &mut ctx)
                .unwrap()
                .is_fire()
        );
        assert_eq!(ctx.processing_timers, BTreeSet::from([(60, w), (80, w)]));
        let mut p = ProcessingTimeTrigger;
        p.on_element(&(), 0, &w, &mut ctx).unwrap();
        assert!(ctx.processing_timers.contains(&(99, w)));
    }
}
