//! Windows (Flink's DataStream "Windows"): what a window is, which windows
//! an element belongs to ([`assigner`]), how session windows merge
//! ([`merging`]), and when a window fires ([`trigger`]).
//!
//! A window is a namespace of keyed state: its contents and its triggers'
//! timers live in the keyed backend under the window, so they are
//! checkpointed, rescaled and restored like any keyed state.

pub mod assigner;
pub mod evictor;
pub mod join;
pub mod merging;
mod operator;
mod sliced;
mod stream;
pub mod trigger;

use std::fmt::Debug;

use floe_state::Namespace;
use serde::{Deserialize, Serialize};

pub use assigner::{
    AssignerContext, DynamicSessionWindows, GlobalWindows, SessionWindows, Slicing, SlidingWindows,
    TumblingWindows, WindowAssigner, WindowError,
};
pub use evictor::{
    CountEvictor, DeltaEvictor, Evictor, EvictorContext, NoEvictor, TimeEvictor, TimestampedValue,
};
pub use join::{
    CoGroup, Join, JoinSide, TwoStreamWindow, TwoStreams, TwoStreamsEqual, TwoStreamsWhere,
};
pub use merging::{Merge, MergingWindowSet};
pub use operator::{ProcessWindowFunction, WindowContext};
pub use stream::{EvictingWindowedStream, WindowedStream};
pub use trigger::{
    ContinuousEventTimeTrigger, ContinuousProcessingTimeTrigger, CountTrigger, DefaultTrigger,
    EventTimeTrigger, NeverTrigger, ProcessingTimeTrigger, PurgingTrigger, Trigger, TriggerContext,
    TriggerResult,
};

/// What every window type gives the window operator: an identity to
/// namespace state and timers by (`Namespace`), an order (sessions merge
/// in it), and the last instant it covers, when it fires and after which
/// it is late. Windows are small values (`Copy`): the operator passes
/// them around per element.
pub trait Window: Namespace + Ord + Debug + Copy {
    /// The largest timestamp that still belongs to the window (Flink's
    /// `maxTimestamp()`): an event-time window fires when the watermark
    /// reaches it.
    fn max_timestamp(&self) -> i64;

    /// Whether the two windows overlap or touch, so that merging windows
    /// of this type would merge them.
    fn intersects(&self, other: &Self) -> bool;

    /// The smallest window covering both.
    fn cover(&self, other: &Self) -> Self;

    /// `[start, end)` as this window type, if it is a span of time (how
    /// sliding windows' slices are made).
    fn from_bounds(_start: i64, _end: i64) -> Option<Self> {
        None
    }

    /// The span of time the window covers, if it is one.
    fn bounds(&self) -> Option<(i64, i64)> {
        None
    }
}

/// A window of time `[start, end)` in milliseconds (Flink's `TimeWindow`),
/// event or processing time depending on its assigner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeWindow {
    /// The first millisecond in the window.
    pub start: i64,
    /// The first millisecond after the window.
    pub end: i64,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }

    /// The start of the window of `size` ms, shifted by `offset` ms, that
    /// holds `timestamp` (Flink's `getWindowStartWithOffset`; correct for
    /// negative timestamps too).
    pub fn start_with_offset(timestamp: i64, offset: i64, size: i64) -> i64 {
        let remainder = (timestamp - offset) % size;
        if remainder < 0 {
            timestamp - (remainder + size)
        } else {
            timestamp - remainder
        }
    }
}

impl Window for TimeWindow {
    #[inline]
    fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    /// Flink's `intersects`: sessions `[0, 5)` and `[5, 10)` merge.
    #[inline]
    fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    #[inline]
    fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }

    #[inline]
    fn from_bounds(start: i64, end: i64) -> Option<Self> {
        Some(TimeWindow::new(start, end))
    }

    #[inline]
    fn bounds(&self) -> Option<(i64, i64)> {
        Some((self.start, self.end))
    }
}

/// The one window of [`GlobalWindows`]: every element of a key, until a
/// trigger fires (Flink's `GlobalWindow`); it never ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GlobalWindow;

impl Window for GlobalWindow {
    #[inline]
    fn max_timestamp(&self) -> i64 {
        i64::MAX
    }

    fn intersects(&self, _: &GlobalWindow) -> bool {
        true
    }

    fn cover(&self, _: &GlobalWindow) -> GlobalWindow {
        GlobalWindow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_follow_flink_for_any_sign() {
        // Flink's TimeWindowTest: getWindowStartWithOffset.
        assert_eq!(TimeWindow::start_with_offset(7, 0, 7), 7);
        assert_eq!(TimeWindow::start_with_offset(6, 0, 7), 0);
        assert_eq!(TimeWindow::start_with_offset(-1, 0, 7), -7);
        assert_eq!(TimeWindow::start_with_offset(-7, 0, 7), -7);
        assert_eq!(TimeWindow::start_with_offset(-8, 0, 7), -14);
        assert_eq!(TimeWindow::start_with_offset(5, 2, 7), 2);
        assert_eq!(TimeWindow::start_with_offset(1, 2, 7), -5);
        assert_eq!(TimeWindow::start_with_offset(-3, -2, 7), -9);
    }

    #[test]
    fn windows_touching_intersect_and_cover() {
        let a = TimeWindow::new(0, 5);
        let b = TimeWindow::new(5, 10);
        let c = TimeWindow::new(11, 12);
        assert!(a.intersects(&b) && b.intersects(&a));
        assert!(!b.intersects(&c));
        assert_eq!(a.cover(&c), TimeWindow::new(0, 12));
        assert_eq!(a.max_timestamp(), 4);
        assert_eq!(GlobalWindow.max_timestamp(), i64::MAX);
    }
}
