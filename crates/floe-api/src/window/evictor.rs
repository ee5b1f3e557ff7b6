//! Evictors (Flink's `Evictor`s): remove elements from a firing window
//! before and/or after its function runs, so the function sees (and the
//! window keeps) only some of them: the last `n`, the most recent span of
//! time, those close enough to the last one.
//!
//! A window with an evictor keeps every element (with its timestamp) even
//! for `reduce` and `aggregate`, which then fold the elements that are left
//! when the window fires, as in Flink's `EvictingWindowOperator`.

use std::sync::Arc;
use std::time::Duration;

use super::Window;

/// An element of a window with its timestamp (Flink's `TimestampedValue`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimestampedValue<T> {
    /// The element.
    pub value: T,
    /// Its event timestamp, if the stream has them.
    pub timestamp: Option<i64>,
}

/// What an evictor may read besides the elements.
#[derive(Debug, Clone, Copy)]
pub struct EvictorContext {
    /// The operator's event time.
    pub current_watermark: i64,
    /// The task's clock.
    pub current_processing_time: i64,
}

/// Removes elements from a firing window (Flink's `Evictor`); cloned once
/// per subtask. `elements` are in arrival order; what an evictor removes
/// from the vector is gone from the window.
pub trait Evictor<T, W: Window>: Clone + Send + 'static {
    /// Before the window function runs.
    fn evict_before(
        &mut self,
        elements: &mut Vec<TimestampedValue<T>>,
        window: &W,
        ctx: &EvictorContext,
    );

    /// After the window function ran.
    fn evict_after(
        &mut self,
        _elements: &mut Vec<TimestampedValue<T>>,
        _window: &W,
        _ctx: &EvictorContext,
    ) {
    }
}

/// Keeps the last `n` elements (Flink's `CountEvictor`), before the
/// function runs or, with [`CountEvictor::after`], after.
#[derive(Debug, Clone, Copy)]
pub struct CountEvictor {
    max_count: usize,
    after: bool,
}

impl CountEvictor {
    /// Keeps the last `n` elements before the function runs.
    pub fn of(n: usize) -> Self {
        CountEvictor {
            max_count: n,
            after: false,
        }
    }

    /// Evicts after the function instead.
    pub fn after(mut self) -> Self {
        self.after = true;
        self
    }

    fn evict<T>(&self, elements: &mut Vec<TimestampedValue<T>>) {
        if elements.len() > self.max_count {
            elements.drain(..elements.len() - self.max_count);
        }
    }
}

impl<T, W: Window> Evictor<T, W> for CountEvictor {
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, _: &W, _: &EvictorContext) {
        if !self.after {
            self.evict(elements);
        }
    }

    fn evict_after(&mut self, elements: &mut Vec<TimestampedValue<T>>, _: &W, _: &EvictorContext) {
        if self.after {
            self.evict(elements);
        }
    }
}

/// Keeps the elements less than `span` older than the newest one
/// (Flink's `TimeEvictor`: those at or before `newest - span` go); a
/// window whose elements have no timestamps is left alone.
#[derive(Debug, Clone, Copy)]
pub struct TimeEvictor {
    span: i64,
    after: bool,
}

impl TimeEvictor {
    /// Keeps the last `span` of event time before the function runs.
    pub fn of(span: Duration) -> Self {
        TimeEvictor {
            span: i64::try_from(span.as_millis()).unwrap_or(i64::MAX),
            after: false,
        }
    }

    /// Evicts after the function instead.
    pub fn after(mut self) -> Self {
        self.after = true;
        self
    }

    fn evict<T>(&self, elements: &mut Vec<TimestampedValue<T>>) {
        if elements.iter().any(|e| e.timestamp.is_none()) {
            return;
        }
        let Some(newest) = elements.iter().filter_map(|e| e.timestamp).max() else {
            return;
        };
        let cut = newest.saturating_sub(self.span);
        elements.retain(|e| e.timestamp.is_some_and(|t| t > cut));
    }
}

impl<T, W: Window> Evictor<T, W> for TimeEvictor {
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, _: &W, _: &EvictorContext) {
        if !self.after {
            self.evict(elements);
        }
    }

    fn evict_after(&mut self, elements: &mut Vec<TimestampedValue<T>>, _: &W, _: &EvictorContext) {
        if self.after {
            self.evict(elements);
        }
    }
}

/// How far apart two elements are, for [`DeltaEvictor`].
pub type DeltaFn<T> = Arc<dyn Fn(&T, &T) -> f64 + Send + Sync>;

/// Keeps the elements whose `delta` to the last element is below
/// `threshold` (Flink's `DeltaEvictor`).
pub struct DeltaEvictor<T> {
    threshold: f64,
    delta: DeltaFn<T>,
    after: bool,
}

impl<T> Clone for DeltaEvictor<T> {
    fn clone(&self) -> Self {
        DeltaEvictor {
            threshold: self.threshold,
            delta: self.delta.clone(),
            after: self.after,
        }
    }
}

impl<T> DeltaEvictor<T> {
    /// Evicts, before the function runs, every element `e` with
    /// `delta(e, last) >= threshold`.
    pub fn of(threshold: f64, delta: impl Fn(&T, &T) -> f64 + Send + Sync + 'static) -> Self {
        DeltaEvictor {
            threshold,
            delta: Arc::new(delta),
            after: false,
        }
    }

    /// Evicts after the function instead.
    pub fn after(mut self) -> Self {
        self.after = true;
        self
    }

    fn evict(&self, elements: &mut Vec<TimestampedValue<T>>)
    where
        T: Clone,
    {
        let Some(last) = elements.last().map(|e| e.value.clone()) else {
            return;
        };
        elements.retain(|e| (self.delta)(&e.value, &last) < self.threshold);
    }
}

impl<T: Clone + Send + 'static, W: Window> Evictor<T, W> for DeltaEvictor<T> {
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, _: &W, _: &EvictorContext) {
        if !self.after {
            self.evict(elements);
        }
    }

    fn evict_after(&mut self, elements: &mut Vec<TimestampedValue<T>>, _: &W, _: &EvictorContext) {
        if self.after {
            self.evict(elements);
        }
    }
}

/// Evicts nothing: a window without an evictor.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvictor;

impl<T, W: Window> Evictor<T, W> for NoEvictor {
    #[inline]
    fn evict_before(&mut self, _: &mut Vec<TimestampedValue<T>>, _: &W, _: &EvictorContext) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::TimeWindow;

    fn values(ts: &[i64]) -> Vec<TimestampedValue<i64>> {
        ts.iter()
            .map(|&t| TimestampedValue {
                value: t,
                timestamp: Some(t),
            })
            .collect()
    }

    const CTX: EvictorContext = EvictorContext {
        current_watermark: 0,
        current_processing_time: 0,
    };
    const W: TimeWindow = TimeWindow { start: 0, end: 100 };

    #[test]
    fn count_evictor_keeps_the_last_n() {
        let mut e = values(&[1, 2, 3, 4, 5]);
        Evictor::<i64, TimeWindow>::evict_before(&mut CountEvictor::of(2), &mut e, &W, &CTX);
        assert_eq!(e, values(&[4, 5]));
        let mut e = values(&[1, 2, 3]);
        let mut after = CountEvictor::of(1).after();
        Evictor::<i64, TimeWindow>::evict_before(&mut after, &mut e, &W, &CTX);
        assert_eq!(e.len(), 3);
        Evictor::<i64, TimeWindow>::evict_after(&mut after, &mut e, &W, &CTX);
        assert_eq!(e, values(&[3]));
    }

    #[test]
    fn time_evictor_keeps_the_newest_span() {
        let mut e = values(&[10, 50, 20, 45, 49]);
        let mut t = TimeEvictor::of(Duration::from_millis(5));
        Evictor::<i64, TimeWindow>::evict_before(&mut t, &mut e, &W, &CTX);
        assert_eq!(e, values(&[50, 49]));
        // Elements without timestamps: nothing is evicted.
        let mut e = vec![TimestampedValue {
            value: 1,
            timestamp: None,
        }];
        Evictor::<i64, TimeWindow>::evict_before(&mut t, &mut e, &W, &CTX);
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn delta_evictor_keeps_those_close_to_the_last() {
        let mut e = values(&[1, 9, 3, 10]);
        let mut d = DeltaEvictor::of(5.0, |a: &i64, b: &i64| (a - b).abs() as f64);
        Evictor::<i64, TimeWindow>::evict_before(&mut d, &mut e, &W, &CTX);
        assert_eq!(e, values(&[9, 10]));
    }
}
