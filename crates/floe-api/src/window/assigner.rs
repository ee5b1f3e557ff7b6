//! Window assigners (Flink's `WindowAssigner`s): the windows an element
//! belongs to, from its timestamp (event time) or the task's clock
//! (processing time).
//!
//! Sizes and gaps are checked when the job is built: a zero size, or an
//! offset not smaller than the size (the slide for sliding windows),
//! panics there with the reason, as Flink's constructors throw, before any
//! record is read.

use std::sync::Arc;
use std::time::Duration;

use floe_core::NO_TIMESTAMP;

use super::trigger::DefaultTrigger;
use super::{GlobalWindow, TimeWindow, Window};

/// Why an element could not be assigned to windows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// An event-time assigner got a record without a timestamp.
    #[error(
        "a record has no timestamp; event-time windows need one: assign timestamps and watermarks on the stream (assign_timestamps_and_watermarks, or a source with a WatermarkStrategy), or use processing-time windows"
    )]
    NoTimestamp,
    /// A dynamic session gap was zero or negative for an element.
    #[error("a dynamic session gap must be positive, the gap extractor returned {gap_ms} ms")]
    NonPositiveGap {
        /// The gap the extractor returned.
        gap_ms: i64,
    },
}

/// What an assigner may read besides the element: the task's processing
/// time, which processing-time windows are cut from.
#[derive(Debug, Clone, Copy)]
pub struct AssignerContext {
    /// The task's clock now, in milliseconds.
    pub processing_time: i64,
}

/// Puts elements into windows (Flink's `WindowAssigner`); cloned once per
/// subtask.
pub trait WindowAssigner<T>: Clone + Send + Sync + 'static {
    /// The windows it makes.
    type W: Window;

    /// Adds the windows `element` (with event time `timestamp`, or
    /// [`NO_TIMESTAMP`]) belongs to, to `out`.
    fn assign_windows(
        &self,
        element: &T,
        timestamp: i64,
        ctx: &AssignerContext,
        out: &mut Vec<Self::W>,
    ) -> Result<(), WindowError>;

    /// Whether its windows are in event time: they end when the watermark
    /// passes them, and elements behind the watermark are late.
    fn is_event_time(&self) -> bool;

    /// Whether its windows merge (sessions): the operator then keeps a
    /// per-key [`super::MergingWindowSet`].
    fn is_merging(&self) -> bool {
        false
    }

    /// For sliding windows: how they are cut, so that reduce and aggregate
    /// can keep one partial result per slice instead of one per window.
    fn slicing(&self) -> Option<Slicing> {
        None
    }

    /// The trigger used unless the job sets one: the window's end in its
    /// time domain.
    fn default_trigger(&self) -> DefaultTrigger {
        if self.is_event_time() {
            DefaultTrigger::EventTime
        } else {
            DefaultTrigger::ProcessingTime
        }
    }
}

/// Milliseconds of a duration, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The timestamp an assigner cuts windows from.
fn time_of(event_time: bool, timestamp: i64, ctx: &AssignerContext) -> Result<i64, WindowError> {
    if !event_time {
        return Ok(ctx.processing_time);
    }
    if timestamp == NO_TIMESTAMP {
        return Err(WindowError::NoTimestamp);
    }
    Ok(timestamp)
}

/// How sliding windows are cut: windows of `size` ms starting every
/// `slide` ms from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    /// Window length.
    pub size: i64,
    /// Distance between window starts.
    pub slide: i64,
    /// Shift of the window starts.
    pub offset: i64,
}

impl Slicing {
    /// The slice length: the largest that divides both the size and the
    /// slide, so every window is a whole number of slices.
    pub fn slice(&self) -> i64 {
        let (mut a, mut b) = (self.size, self.slide);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }

    /// The windows holding the slice starting at `slice_start`, latest
    /// first.
    pub fn windows_of_slice(&self, slice_start: i64) -> impl Iterator<Item = TimeWindow> + '_ {
        let last = TimeWindow::start_with_offset(slice_start, self.offset, self.slide);
        let first_end = slice_start.saturating_add(self.slice());
        (0..)
            .map(move |i| last - i * self.slide)
            .take_while(move |s| s.saturating_add(self.size) >= first_end)
            .map(move |s| TimeWindow::new(s, s.saturating_add(self.size)))
    }

    /// The slice starts making up `window`, in order.
    pub fn slices_of(&self, window: &TimeWindow) -> impl Iterator<Item = i64> + '_ {
        let slice = self.slice();
        let start = window.start;
        (0..self.size / slice).map(move |i| start + i * slice)
    }
}

/// Fixed-size, non-overlapping windows (Flink's
/// `TumblingEventTimeWindows` / `TumblingProcessingTimeWindows`): every
/// element is in exactly one.
#[derive(Debug, Clone, Copy)]
pub struct TumblingWindows {
    size: i64,
    offset: i64,
    event_time: bool,
}

impl TumblingWindows {
    /// Event-time windows of `size`, aligned to the epoch.
    ///
    /// # Panics
    /// When `size` is shorter than a millisecond.
    pub fn event_time(size: Duration) -> Self {
        Self::new(size, true)
    }

    /// Processing-time windows of `size`, aligned to the epoch.
    ///
    /// # Panics
    /// When `size` is shorter than a millisecond.
    pub fn processing_time(size: Duration) -> Self {
        Self::new(size, false)
    }

    fn new(size: Duration, event_time: bool) -> Self {
        let size = millis(size);
        assert!(size > 0, "tumbling windows need a size of at least 1 ms");
        TumblingWindows {
            size,
            offset: 0,
            event_time,
        }
    }

    /// Shifts the windows by `offset_ms` (negative allowed), e.g. days in
    /// UTC+8 are `with_offset_ms(-8 * 3600 * 1000)`.
    ///
    /// # Panics
    /// When `|offset_ms|` is not smaller than the size.
    pub fn with_offset_ms(mut self, offset_ms: i64) -> Self {
        assert!(
            offset_ms.unsigned_abs() < self.size.unsigned_abs(),
            "a tumbling window offset must be smaller than the size ({} ms), got {offset_ms} ms",
            self.size
        );
        self.offset = offset_ms;
        self
    }

    /// Shifts the windows by `offset`; see [`Self::with_offset_ms`].
    pub fn with_offset(self, offset: Duration) -> Self {
        self.with_offset_ms(millis(offset))
    }
}

impl<T> WindowAssigner<T> for TumblingWindows {
    type W = TimeWindow;

    #[inline]
    fn assign_windows(
        &self,
        _: &T,
        timestamp: i64,
        ctx: &AssignerContext,
        out: &mut Vec<TimeWindow>,
    ) -> Result<(), WindowError> {
        let t = time_of(self.event_time, timestamp, ctx)?;
        let start = TimeWindow::start_with_offset(t, self.offset, self.size);
        out.push(TimeWindow::new(start, start.saturating_add(self.size)));
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }
}

/// Windows of `size` starting every `slide` (Flink's
/// `SlidingEventTimeWindows` / `SlidingProcessingTimeWindows`): an
/// element is in `size / slide` of them (rounded up).
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindows {
    size: i64,
    slide: i64,
    offset: i64,
    event_time: bool,
}

impl SlidingWindows {
    /// Event-time windows of `size` every `slide`.
    ///
    /// # Panics
    /// When `size` or `slide` is shorter than a millisecond.
    pub fn event_time(size: Duration, slide: Duration) -> Self {
        Self::new(size, slide, true)
    }

    /// Processing-time windows of `size` every `slide`.
    ///
    /// # Panics
    /// When `size` or `slide` is shorter than a millisecond.
    pub fn processing_time(size: Duration, slide: Duration) -> Self {
        Self::new(size, slide, false)
    }

    fn new(size: Duration, slide: Duration, event_time: bool) -> Self {
        let (size, slide) = (millis(size), millis(slide));
        assert!(
            size > 0 && slide > 0,
            "sliding windows need a size and a slide of at least 1 ms, got {size} ms and {slide} ms"
        );
        SlidingWindows {
            size,
            slide,
            offset: 0,
            event_time,
        }
    }

    /// Shifts the windows by `offset_ms` (negative allowed).
    ///
    /// # Panics
    /// When `|offset_ms|` is not smaller than the slide.
    pub fn with_offset_ms(mut self, offset_ms: i64) -> Self {
        assert!(
            offset_ms.unsigned_abs() < self.slide.unsigned_abs(),
            "a sliding window offset must be smaller than the slide ({} ms), got {offset_ms} ms",
            self.slide
        );
        self.offset = offset_ms;
        self
    }

    /// Shifts the windows by `offset`; see [`Self::with_offset_ms`].
    pub fn with_offset(self, offset: Duration) -> Self {
        self.with_offset_ms(millis(offset))
    }

    /// The window size in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.size
    }

    /// The slide in milliseconds.
    pub fn slide_ms(&self) -> i64 {
        self.slide
    }
}

impl<T> WindowAssigner<T> for SlidingWindows {
    type W = TimeWindow;

    fn slicing(&self) -> Option<Slicing> {
        Some(Slicing {
            size: self.size,
            slide: self.slide,
            offset: self.offset,
        })
    }

    /// Latest window first, as Flink lists them.
    fn assign_windows(
        &self,
        _: &T,
        timestamp: i64,
        ctx: &AssignerContext,
        out: &mut Vec<TimeWindow>,
    ) -> Result<(), WindowError> {
        let t = time_of(self.event_time, timestamp, ctx)?;
        let mut start = TimeWindow::start_with_offset(t, self.offset, self.slide);
        while start > t.saturating_sub(self.size) {
            out.push(TimeWindow::new(start, start.saturating_add(self.size)));
            start -= self.slide;
        }
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }
}

/// Session windows with a fixed gap (Flink's `EventTimeSessionWindows` /
/// `ProcessingTimeSessionWindows`): an element opens `[t, t + gap)`, and
/// windows of a key that overlap or touch merge into one session.
#[derive(Debug, Clone, Copy)]
pub struct SessionWindows {
    gap: i64,
    event_time: bool,
}

impl SessionWindows {
    /// Event-time sessions that close after `gap` without an element.
    ///
    /// # Panics
    /// When `gap` is shorter than a millisecond.
    pub fn event_time_with_gap(gap: Duration) -> Self {
        Self::new(gap, true)
    }

    /// Processing-time sessions that close after `gap` without an element.
    ///
    /// # Panics
    /// When `gap` is shorter than a millisecond.
    pub fn processing_time_with_gap(gap: Duration) -> Self {
        Self::new(gap, false)
    }

    fn new(gap: Duration, event_time: bool) -> Self {
        let gap = millis(gap);
        assert!(gap > 0, "session windows need a gap of at least 1 ms");
        SessionWindows { gap, event_time }
    }
}

impl<T> WindowAssigner<T> for SessionWindows {
    type W = TimeWindow;

    fn assign_windows(
        &self,
        _: &T,
        timestamp: i64,
        ctx: &AssignerContext,
        out: &mut Vec<TimeWindow>,
    ) -> Result<(), WindowError> {
        let t = time_of(self.event_time, timestamp, ctx)?;
        out.push(TimeWindow::new(t, t.saturating_add(self.gap)));
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }

    fn is_merging(&self) -> bool {
        true
    }
}

/// Session windows whose gap each element chooses (Flink's
/// `DynamicEventTimeSessionWindows` / `DynamicProcessingTimeSessionWindows`).
pub struct DynamicSessionWindows<T> {
    gap: Arc<dyn Fn(&T) -> Duration + Send + Sync>,
    event_time: bool,
}

impl<T> Clone for DynamicSessionWindows<T> {
    fn clone(&self) -> Self {
        DynamicSessionWindows {
            gap: self.gap.clone(),
            event_time: self.event_time,
        }
    }
}

impl<T> DynamicSessionWindows<T> {
    /// Event-time sessions whose gap after an element is `gap(element)`.
    pub fn event_time(gap: impl Fn(&T) -> Duration + Send + Sync + 'static) -> Self {
        DynamicSessionWindows {
            gap: Arc::new(gap),
            event_time: true,
        }
    }

    /// Processing-time sessions whose gap after an element is
    /// `gap(element)`.
    pub fn processing_time(gap: impl Fn(&T) -> Duration + Send + Sync + 'static) -> Self {
        DynamicSessionWindows {
            gap: Arc::new(gap),
            event_time: false,
        }
    }
}

impl<T: 'static> WindowAssigner<T> for DynamicSessionWindows<T> {
    type W = TimeWindow;

    fn assign_windows(
        &self,
        element: &T,
        timestamp: i64,
        ctx: &AssignerContext,
        out: &mut Vec<TimeWindow>,
    ) -> Result<(), WindowError> {
        let t = time_of(self.event_time, timestamp, ctx)?;
        let gap = millis((self.gap)(element));
        if gap <= 0 {
            return Err(WindowError::NonPositiveGap { gap_ms: gap });
        }
        out.push(TimeWindow::new(t, t.saturating_add(gap)));
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }

    fn is_merging(&self) -> bool {
        true
    }
}

/// One window per key holding everything (Flink's `GlobalWindows`): it
/// never ends, so it needs a trigger (a count, a custom one) to ever fire.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalWindows;

impl GlobalWindows {
    /// The assigner.
    pub fn create() -> Self {
        GlobalWindows
    }
}

impl<T> WindowAssigner<T> for GlobalWindows {
    type W = GlobalWindow;

    fn assign_windows(
        &self,
        _: &T,
        _: i64,
        _: &AssignerContext,
        out: &mut Vec<GlobalWindow>,
    ) -> Result<(), WindowError> {
        out.push(GlobalWindow);
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        false
    }

    fn default_trigger(&self) -> DefaultTrigger {
        DefaultTrigger::Never
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assign<A: WindowAssigner<()>>(a: &A, ts: i64, now: i64) -> Vec<A::W> {
        let mut out = Vec::new();
        a.assign_windows(
            &(),
            ts,
            &AssignerContext {
                processing_time: now,
            },
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn tumbling_windows_hold_their_timestamp() {
        let a = TumblingWindows::event_time(Duration::from_millis(5000));
        assert_eq!(assign(&a, 0, 99), [TimeWindow::new(0, 5000)]);
        assert_eq!(assign(&a, 4999, 99), [TimeWindow::new(0, 5000)]);
        assert_eq!(assign(&a, 5000, 99), [TimeWindow::new(5000, 10000)]);
        assert_eq!(assign(&a, -1, 99), [TimeWindow::new(-5000, 0)]);
        let shifted = a.with_offset_ms(1000);
        assert_eq!(assign(&shifted, 0, 99), [TimeWindow::new(-4000, 1000)]);
        let p = TumblingWindows::processing_time(Duration::from_millis(10));
        assert_eq!(assign(&p, NO_TIMESTAMP, 23), [TimeWindow::new(20, 30)]);
        let mut out = Vec::new();
        let err = WindowAssigner::<()>::assign_windows(
            &a,
            &(),
            NO_TIMESTAMP,
            &AssignerContext { processing_time: 0 },
            &mut out,
        )
        .unwrap_err();
        assert_eq!(err, WindowError::NoTimestamp);
        assert!(err.to_string().contains("assign_timestamps_and_watermarks"));
    }

    #[test]
    fn sliding_windows_list_the_latest_first() {
        // Flink's SlidingEventTimeWindowsTest: size 5000, slide 1000.
        let a = SlidingWindows::event_time(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(
            assign(&a, 0, 0),
            [
                TimeWindow::new(0, 5000),
                TimeWindow::new(-1000, 4000),
                TimeWindow::new(-2000, 3000),
                TimeWindow::new(-3000, 2000),
                TimeWindow::new(-4000, 1000),
            ]
        );
        // Not a multiple: size 5, slide 2 puts an element in 2 or 3.
        let b = SlidingWindows::event_time(Duration::from_millis(5), Duration::from_millis(2));
        assert_eq!(
            assign(&b, 4, 0),
            [
                TimeWindow::new(4, 9),
                TimeWindow::new(2, 7),
                TimeWindow::new(0, 5)
            ]
        );
    }

    #[test]
    fn sessions_open_a_gap_and_merge() {
        let a = SessionWindows::event_time_with_gap(Duration::from_millis(10));
        assert_eq!(assign(&a, 7, 0), [TimeWindow::new(7, 17)]);
        assert!(WindowAssigner::<()>::is_merging(&a));
        let d = DynamicSessionWindows::event_time(|x: &u64| Duration::from_millis(*x));
        let mut out = Vec::new();
        let ctx = AssignerContext { processing_time: 0 };
        d.assign_windows(&3, 10, &ctx, &mut out).unwrap();
        assert_eq!(out, [TimeWindow::new(10, 13)]);
        assert_eq!(
            d.assign_windows(&0, 10, &ctx, &mut out),
            Err(WindowError::NonPositiveGap { gap_ms: 0 })
        );
    }

    #[test]
    #[should_panic(expected = "smaller than the size")]
    fn an_offset_as_large_as_the_size_is_refused() {
        let _ = TumblingWindows::event_time(Duration::from_secs(1)).with_offset_ms(-1000);
    }

    #[test]
    #[should_panic(expected = "at least 1 ms")]
    fn a_zero_size_is_refused() {
        let _ = SlidingWindows::event_time(Duration::ZERO, Duration::from_secs(1));
    }

    proptest! {
        /// Against brute force: an element is in exactly the windows
        /// `[s, s + size)` with `s ≡ offset (mod slide)` that contain it.
        #[test]
        fn sliding_windows_are_exactly_those_containing_the_element(
            ts in -10_000i64..10_000,
            size in 1i64..50,
            slide in 1i64..50,
            offset_frac in 0.0f64..1.0,
        ) {
            let offset = ((slide - 1) as f64 * offset_frac) as i64;
            let a = SlidingWindows::event_time(
                Duration::from_millis(size as u64),
                Duration::from_millis(slide as u64),
            ).with_offset_ms(offset);
            let mut got = assign(&a, ts, 0);
            got.sort();
            let mut want: Vec<_> = (ts - size - slide..=ts)
                .filter(|s| (s - offset).rem_euclid(slide) == 0 && *s <= ts && ts < s + size)
                .map(|s| TimeWindow::new(s, s + size))
                .collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
