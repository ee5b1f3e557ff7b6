//! Event time: how watermarks are generated and how they are combined.
//!
//! A [`WatermarkStrategy`] says how a stream's records get their
//! timestamps and how event time advances (Flink's interface of the same
//! name). It is applied where the records enter: on a source, where each
//! split (a file, a generator range, a Kafka partition) gets its own
//! generator and the source's watermark is the minimum over its active
//! splits ([`SplitWatermarks`]); or on any stream through
//! `assign_timestamps_and_watermarks`, one generator per subtask.
//!
//! Downstream, every task combines its input channels with a
//! [`WatermarkValve`]: the minimum over the active channels, forwarded
//! only when it advances, with Flink's rules for idle inputs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use floe_core::{NO_TIMESTAMP, Watermark, WatermarkStatus};

/// What a [`WatermarkGenerator`] emits through: the highest watermark so
/// far, and whether it declared its input idle.
///
/// A plain value rather than a channel: the caller reads it after each
/// call, so a generator that emits on every event costs one comparison per
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkOutput {
    watermark: i64,
    idle: bool,
}

impl Default for WatermarkOutput {
    fn default() -> Self {
        WatermarkOutput {
            watermark: i64::MIN,
            idle: false,
        }
    }
}

impl WatermarkOutput {
    /// Declares event time `watermark`. A watermark below one emitted
    /// before is ignored (event time never goes back); any watermark makes
    /// the input active again.
    #[inline]
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.idle = false;
        if watermark.0 > self.watermark {
            self.watermark = watermark.0;
        }
    }

    /// Declares the input idle: it holds no one back until its next
    /// watermark or record.
    pub fn mark_idle(&mut self) {
        self.idle = true;
    }

    /// Declares the input active again.
    pub fn mark_active(&mut self) {
        self.idle = false;
    }

    /// The highest watermark emitted ([`Watermark::MIN`] before any).
    pub fn watermark(&self) -> Watermark {
        Watermark(self.watermark)
    }

    /// True while the generator declares its input idle.
    pub fn is_idle(&self) -> bool {
        self.idle
    }
}

/// Generates watermarks from the records it sees and on a timer (Flink's
/// `WatermarkGenerator`): `on_event` for generators that emit from the data
/// (punctuated), `on_periodic_emit` every `pipeline.auto-watermark-interval`
/// for those that emit on a schedule.
pub trait WatermarkGenerator<T>: Send {
    /// Sees every record with the timestamp it was assigned.
    fn on_event(&mut self, event: &T, timestamp: i64, output: &mut WatermarkOutput);

    /// Called periodically; most generators emit here.
    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput);
}

/// Watermarks that trail the highest timestamp seen by a fixed bound
/// (Flink's `BoundedOutOfOrdernessWatermarks`): a record up to `bound`
/// older than the newest one is still on time.
#[derive(Debug, Clone)]
pub struct BoundedOutOfOrderness {
    max_timestamp: i64,
    bound_ms: i64,
}

impl BoundedOutOfOrderness {
    /// A generator allowing records to be up to `bound` late.
    pub fn new(bound: Duration) -> Self {
        let bound_ms = i64::try_from(bound.as_millis()).unwrap_or(i64::MAX / 2);
        BoundedOutOfOrderness {
            // So that the first periodic emission (before any record) is
            // the lowest watermark, without overflow.
            max_timestamp: i64::MIN + bound_ms + 1,
            bound_ms,
        }
    }
}

impl<T> WatermarkGenerator<T> for BoundedOutOfOrderness {
    #[inline]
    fn on_event(&mut self, _: &T, timestamp: i64, _: &mut WatermarkOutput) {
        if timestamp > self.max_timestamp {
            self.max_timestamp = timestamp;
        }
    }

    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput) {
        output.emit_watermark(Watermark(self.max_timestamp - self.bound_ms - 1));
    }
}

/// Emits nothing: a stream with timestamps but no event-time progress
/// (Flink's `NoWatermarksGenerator`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWatermarks;

impl<T> WatermarkGenerator<T> for NoWatermarks {
    fn on_event(&mut self, _: &T, _: i64, _: &mut WatermarkOutput) {}

    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

type GeneratorFactory<T> = dyn Fn() -> Box<dyn WatermarkGenerator<T>> + Send + Sync;
type Assigner<T> = dyn Fn(&T, i64) -> i64 + Send + Sync;

/// How a stream's records get their timestamps and how its event time
/// advances (Flink's `WatermarkStrategy`).
///
/// Built from one of the constructors and refined with
/// [`with_timestamp_assigner`](Self::with_timestamp_assigner) and
/// [`with_idleness`](Self::with_idleness). Cheap to clone: every split and
/// subtask makes its own generator from the shared factory.
pub struct WatermarkStrategy<T> {
    generator: Arc<GeneratorFactory<T>>,
    assigner: Option<Arc<Assigner<T>>>,
    idleness: Option<Duration>,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        WatermarkStrategy {
            generator: self.generator.clone(),
            assigner: self.assigner.clone(),
            idleness: self.idleness,
        }
    }
}

impl<T> std::fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("assigner", &self.assigner.is_some())
            .field("idleness", &self.idleness)
            .finish_non_exhaustive()
    }
}

impl<T: 'static> WatermarkStrategy<T> {
    /// Watermarks trailing the highest timestamp by `bound`: records at
    /// most `bound` out of order are on time.
    pub fn for_bounded_out_of_orderness(bound: Duration) -> Self {
        Self::for_generator(move || BoundedOutOfOrderness::new(bound))
    }

    /// Timestamps that never decrease within a split: the watermark is the
    /// highest timestamp seen (minus one millisecond, so records at that
    /// very timestamp are still on time).
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness(Duration::ZERO)
    }

    /// No watermarks (records may still carry timestamps).
    pub fn no_watermarks() -> Self {
        Self::for_generator(|| NoWatermarks)
    }

    /// A custom generator, made once per split or subtask.
    pub fn for_generator<G, F>(make: F) -> Self
    where
        G: WatermarkGenerator<T> + 'static,
        F: Fn() -> G + Send + Sync + 'static,
    {
        WatermarkStrategy {
            generator: Arc::new(move || Box::new(make()) as Box<dyn WatermarkGenerator<T>>),
            assigner: None,
            idleness: None,
        }
    }

    /// Takes each record's timestamp from the record: `assign(record,
    /// previous)` where `previous` is the timestamp it already had
    /// ([`NO_TIMESTAMP`] if none). Without an assigner records keep the
    /// timestamp they have.
    pub fn with_timestamp_assigner<F>(mut self, assign: F) -> Self
    where
        F: Fn(&T, i64) -> i64 + Send + Sync + 'static,
    {
        self.assigner = Some(Arc::new(assign));
        self
    }

    /// Marks a split (or subtask) idle after `timeout` of processing time
    /// without records, so it does not hold back event time downstream;
    /// its next record makes it active again.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idleness = Some(timeout);
        self
    }

    /// The idle timeout, if any.
    pub fn idleness(&self) -> Option<Duration> {
        self.idleness
    }

    /// A new generator for one split or subtask.
    pub fn create_generator(&self) -> Box<dyn WatermarkGenerator<T>> {
        (self.generator)()
    }

    /// The timestamp of `record`, which had `previous`.
    #[inline]
    pub fn assign(&self, record: &T, previous: i64) -> i64 {
        match &self.assigner {
            Some(a) => a(record, previous),
            None => previous,
        }
    }

    /// True when the strategy computes timestamps (otherwise records keep
    /// theirs, and a stream without any stays without).
    pub fn has_assigner(&self) -> bool {
        self.assigner.is_some()
    }
}

/// The identity of a source split, as a reader names it (a file's index,
/// a generator range's start, a Kafka partition).
pub type SplitId = u64;

/// One split's event time: its generator, its idleness, when it last had a
/// record.
struct SplitTime<T> {
    generator: Box<dyn WatermarkGenerator<T>>,
    output: WatermarkOutput,
    /// Processing time of its last record (or of its creation).
    last_active_ms: i64,
}

/// Per-split watermark generation for one source subtask (Flink's
/// `WatermarkOutputMultiplexer` behind `SourceOutputWithWatermarks`): each
/// split has its own generator, and the subtask's watermark is the
/// minimum over the splits that are active. A split that finished leaves
/// the minimum; a subtask whose splits are all idle (or that has none) is
/// idle itself.
pub struct SplitWatermarks<T> {
    strategy: WatermarkStrategy<T>,
    splits: BTreeMap<SplitId, SplitTime<T>>,
    emitted: i64,
    idle: bool,
    /// Processing time of the subtask's last record (or of the first
    /// emission): without any split it is idle once that is the idle
    /// timeout ago.
    last_active_ms: Option<i64>,
}

/// What the subtask should emit after a change in its splits' event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceTimeUpdate {
    /// A new (higher) watermark.
    pub watermark: Option<Watermark>,
    /// A change of the subtask's status.
    pub status: Option<WatermarkStatus>,
}

impl<T: 'static> SplitWatermarks<T> {
    /// Per-split event time under `strategy`.
    pub fn new(strategy: WatermarkStrategy<T>) -> Self {
        SplitWatermarks {
            strategy,
            splits: BTreeMap::new(),
            emitted: i64::MIN,
            idle: false,
            last_active_ms: None,
        }
    }

    /// The strategy (its assigner stamps the records).
    pub fn strategy(&self) -> &WatermarkStrategy<T> {
        &self.strategy
    }

    fn split(&mut self, id: SplitId, now_ms: i64) -> &mut SplitTime<T> {
        let strategy = &self.strategy;
        self.splits.entry(id).or_insert_with(|| SplitTime {
            generator: strategy.create_generator(),
            output: WatermarkOutput::default(),
            last_active_ms: now_ms,
        })
    }

    /// Stamps the records of one poll, all from split `id`: assigns their
    /// timestamps (into `timestamps`, parallel to `records`) and shows
    /// them to the split's generator. Returns what the subtask emits: the
    /// records make it active, and a generator that emits on events
    /// (punctuated watermarks) may have moved its watermark.
    pub fn on_records(
        &mut self,
        id: SplitId,
        records: &[T],
        timestamps: &mut Vec<i64>,
        now_ms: i64,
    ) -> SourceTimeUpdate
    where
        T: 'static,
    {
        self.on_records_with_timestamps(id, records, &[], timestamps, now_ms)
    }

    /// [`on_records`](Self::on_records) for records that carry native
    /// timestamps (`native`, parallel to `records`, or empty for none): the
    /// assigner sees each as the record's previous timestamp, and without
    /// an assigner the record keeps it.
    pub fn on_records_with_timestamps(
        &mut self,
        id: SplitId,
        records: &[T],
        native: &[i64],
        timestamps: &mut Vec<i64>,
        now_ms: i64,
    ) -> SourceTimeUpdate
    where
        T: 'static,
    {
        debug_assert!(native.is_empty() || native.len() == records.len());
        let assigner = self.strategy.assigner.clone();
        self.last_active_ms = Some(now_ms);
        let split = self.split(id, now_ms);
        split.last_active_ms = now_ms;
        split.output.mark_active();
        timestamps.clear();
        timestamps.reserve(records.len());
        for (i, r) in records.iter().enumerate() {
            let previous = native.get(i).copied().unwrap_or(NO_TIMESTAMP);
            let ts = match &assigner {
                Some(a) => a(r, previous),
                None => previous,
            };
            timestamps.push(ts);
            split.generator.on_event(r, ts, &mut split.output);
        }
        self.combine(false)
    }

    /// Split `id` will produce nothing more: it no longer holds back the
    /// watermark.
    pub fn finish_split(&mut self, id: SplitId) {
        self.splits.remove(&id);
    }

    /// The periodic emission: asks every split's generator, applies
    /// idleness, and returns what the subtask emits.
    pub fn on_periodic_emit(&mut self, now_ms: i64) -> SourceTimeUpdate {
        let idleness = self
            .strategy
            .idleness
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for split in self.splits.values_mut() {
            split.generator.on_periodic_emit(&mut split.output);
            if let Some(timeout) = idleness
                && now_ms.saturating_sub(split.last_active_ms) >= timeout
            {
                split.output.mark_idle();
            }
        }
        let since = *self.last_active_ms.get_or_insert(now_ms);
        // Without any split a subtask is idle only when the strategy
        // allows idleness, after that long without records (Flink keeps
        // it active otherwise, which holds back downstream time until
        // splits arrive).
        let idle_without_splits =
            idleness.is_some_and(|timeout| now_ms.saturating_sub(since) >= timeout);
        self.combine(idle_without_splits)
    }

    /// The minimum over active splits, and the subtask's status.
    fn combine(&mut self, idle_without_splits: bool) -> SourceTimeUpdate {
        let mut update = SourceTimeUpdate::default();
        let active = self.splits.values().filter(|s| !s.output.is_idle());
        let min = active.map(|s| s.output.watermark).min();
        let idle = match min {
            Some(_) => false,
            None if self.splits.is_empty() => idle_without_splits,
            None => true,
        };
        if idle != self.idle {
            self.idle = idle;
            update.status = Some(if idle {
                WatermarkStatus::Idle
            } else {
                WatermarkStatus::Active
            });
        }
        if let Some(min) = min
            && min > self.emitted
        {
            self.emitted = min;
            update.watermark = Some(Watermark(min));
        }
        update
    }
}

/// Combines the watermarks of several input channels (Flink's
/// `StatusWatermarkValve`): the task's watermark is the minimum over the
/// channels that are active and have caught up, and only moves forward.
///
/// An idle channel leaves the minimum. When it becomes active again it
/// rejoins only once its watermark reached the one already emitted, so a
/// resuming input never pulls event time back. When every channel is idle
/// the task is idle, after first emitting the highest watermark among its
/// channels (nothing can arrive below it any more). An ended channel is
/// gone for good.
#[derive(Debug)]
pub struct WatermarkValve {
    channels: Vec<ChannelTime>,
    emitted: i64,
    idle: bool,
}

#[derive(Debug, Clone, Copy)]
struct ChannelTime {
    watermark: i64,
    active: bool,
    /// Counts towards the minimum: active and caught up.
    aligned: bool,
    ended: bool,
}

/// Something the valve tells the task to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValveOutput {
    /// The combined watermark advanced.
    Watermark(Watermark),
    /// The task became idle or active.
    Status(WatermarkStatus),
}

impl WatermarkValve {
    /// A valve for `n` channels, all active at the lowest watermark.
    pub fn new(n: usize) -> Self {
        WatermarkValve {
            channels: vec![
                ChannelTime {
                    watermark: i64::MIN,
                    active: true,
                    aligned: true,
                    ended: false,
                };
                n
            ],
            emitted: i64::MIN,
            idle: false,
        }
    }

    /// The watermark emitted so far.
    pub fn current(&self) -> Watermark {
        Watermark(self.emitted)
    }

    /// Channel `ch` reported `wm`.
    pub fn on_watermark<E>(
        &mut self,
        ch: usize,
        wm: Watermark,
        out: impl FnMut(ValveOutput) -> Result<(), E>,
    ) -> Result<(), E> {
        let c = &mut self.channels[ch];
        if c.ended {
            return Ok(());
        }
        // A watermark from an idle channel means it is active again.
        let mut out = out;
        if !c.active {
            return self
                .on_status(ch, WatermarkStatus::Active, &mut out)
                .and_then(|()| {
                    self.raise(ch, wm);
                    self.advance(&mut out)
                });
        }
        self.raise(ch, wm);
        self.advance(&mut out)
    }

    fn raise(&mut self, ch: usize, wm: Watermark) {
        let c = &mut self.channels[ch];
        if wm.0 > c.watermark {
            c.watermark = wm.0;
        }
        if c.active && c.watermark >= self.emitted {
            c.aligned = true;
        }
    }

    /// Channel `ch` became idle or active.
    pub fn on_status<E>(
        &mut self,
        ch: usize,
        status: WatermarkStatus,
        mut out: impl FnMut(ValveOutput) -> Result<(), E>,
    ) -> Result<(), E> {
        let c = &mut self.channels[ch];
        if c.ended {
            return Ok(());
        }
        match status {
            WatermarkStatus::Idle if c.active => {
                c.active = false;
                c.aligned = false;
                if self.channels.iter().all(|c| !c.active) {
                    // Nothing can arrive below the highest watermark any
                    // channel reported: let the task's time catch up with
                    // it before going idle.
                    let max = self
                        .channels
                        .iter()
                        .filter(|c| !c.ended)
                        .map(|c| c.watermark)
                        .max()
                        .unwrap_or(i64::MIN);
                    if max > self.emitted {
                        self.emitted = max;
                        out(ValveOutput::Watermark(Watermark(max)))?;
                    }
                    if !self.idle {
                        self.idle = true;
                        out(ValveOutput::Status(WatermarkStatus::Idle))?;
                    }
                    Ok(())
                } else {
                    self.advance(&mut out)
                }
            }
            WatermarkStatus::Active if !c.active => {
                c.active = true;
                c.aligned = c.watermark >= self.emitted;
                if self.idle {
                    self.idle = false;
                    out(ValveOutput::Status(WatermarkStatus::Active))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Channel `ch` ended and no longer holds the watermark back.
    pub fn on_end<E>(
        &mut self,
        ch: usize,
        mut out: impl FnMut(ValveOutput) -> Result<(), E>,
    ) -> Result<(), E> {
        let c = &mut self.channels[ch];
        c.ended = true;
        c.active = false;
        c.aligned = false;
        self.advance(&mut out)
    }

    fn advance<E>(&mut self, out: &mut impl FnMut(ValveOutput) -> Result<(), E>) -> Result<(), E> {
        let min = self
            .channels
            .iter()
            .filter(|c| c.aligned)
            .map(|c| c.watermark)
            .min();
        if let Some(min) = min
            && min > self.emitted
        {
            self.emitted = min;
            // A channel that was catching up may have caught up now.
            for c in &mut self.channels {
                if c.active && !c.aligned && c.watermark >= self.emitted {
                    c.aligned = true;
                }
            }
            out(ValveOutput::Watermark(Watermark(min)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        v: &mut WatermarkValve,
        f: impl FnOnce(&mut WatermarkValve, &mut Vec<ValveOutput>),
    ) -> Vec<ValveOutput> {
        let mut out = Vec::new();
        f(v, &mut out);
        out
    }

    fn wm(v: &mut WatermarkValve, ch: usize, t: i64) -> Vec<ValveOutput> {
        run(v, |v, o| {
            v.on_watermark(ch, Watermark(t), |e| {
                o.push(e);
                Ok::<_, ()>(())
            })
            .unwrap()
        })
    }

    fn status(v: &mut WatermarkValve, ch: usize, s: WatermarkStatus) -> Vec<ValveOutput> {
        run(v, |v, o| {
            v.on_status(ch, s, |e| {
                o.push(e);
                Ok::<_, ()>(())
            })
            .unwrap()
        })
    }

    fn end(v: &mut WatermarkValve, ch: usize) -> Vec<ValveOutput> {
        run(v, |v, o| {
            v.on_end(ch, |e| {
                o.push(e);
                Ok::<_, ()>(())
            })
            .unwrap()
        })
    }

    use ValveOutput::{Status, Watermark as W};
    use WatermarkStatus::{Active, Idle};

    #[test]
    fn minimum_over_channels_only_forward() {
        let mut v = WatermarkValve::new(2);
        assert_eq!(wm(&mut v, 0, 10), vec![]);
        assert_eq!(wm(&mut v, 1, 5), vec![W(Watermark(5))]);
        assert_eq!(wm(&mut v, 1, 20), vec![W(Watermark(10))]);
        assert_eq!(wm(&mut v, 1, 3), vec![]);
        assert_eq!(end(&mut v, 0), vec![W(Watermark(20))]);
    }

    #[test]
    fn an_idle_channel_does_not_hold_back_time() {
        let mut v = WatermarkValve::new(2);
        assert_eq!(wm(&mut v, 0, 10), vec![]);
        assert_eq!(status(&mut v, 1, Idle), vec![W(Watermark(10))]);
        assert_eq!(wm(&mut v, 0, 15), vec![W(Watermark(15))]);
    }

    #[test]
    fn a_resuming_channel_rejoins_once_it_caught_up() {
        let mut v = WatermarkValve::new(2);
        status(&mut v, 1, Idle);
        assert_eq!(wm(&mut v, 0, 100), vec![W(Watermark(100))]);
        // Channel 1 resumes behind: it must not pull time back, nor hold
        // it until it reaches 100.
        assert_eq!(status(&mut v, 1, Active), vec![]);
        assert_eq!(wm(&mut v, 1, 50), vec![]);
        assert_eq!(wm(&mut v, 0, 120), vec![W(Watermark(120))]);
        // Caught up: from now on it counts.
        assert_eq!(wm(&mut v, 1, 125), vec![]);
        assert_eq!(wm(&mut v, 0, 200), vec![W(Watermark(125))]);
    }

    #[test]
    fn all_idle_emits_the_highest_then_idle_and_resumes_active() {
        let mut v = WatermarkValve::new(2);
        wm(&mut v, 0, 30);
        wm(&mut v, 1, 10);
        assert_eq!(
            status(&mut v, 1, Idle),
            vec![W(Watermark(30))],
            "channel 0 alone"
        );
        assert_eq!(status(&mut v, 0, Idle), vec![Status(Idle)]);
        assert_eq!(status(&mut v, 0, Active), vec![Status(Active)]);
        assert_eq!(wm(&mut v, 0, 40), vec![W(Watermark(40))]);
    }

    #[test]
    fn a_watermark_on_an_idle_channel_reactivates_it() {
        let mut v = WatermarkValve::new(1);
        assert_eq!(status(&mut v, 0, Idle), vec![Status(Idle)]);
        assert_eq!(wm(&mut v, 0, 7), vec![Status(Active), W(Watermark(7))]);
    }

    #[test]
    fn bounded_out_of_orderness_trails_the_maximum() {
        let mut g = BoundedOutOfOrderness::new(Duration::from_millis(100));
        let mut out = WatermarkOutput::default();
        WatermarkGenerator::<()>::on_periodic_emit(&mut g, &mut out);
        assert_eq!(out.watermark(), Watermark(i64::MIN));
        g.on_event(&(), 1_000, &mut out);
        g.on_event(&(), 900, &mut out);
        WatermarkGenerator::<()>::on_periodic_emit(&mut g, &mut out);
        assert_eq!(out.watermark(), Watermark(899));
    }

    #[test]
    fn splits_take_the_minimum_and_finished_ones_leave_it() {
        let strategy = WatermarkStrategy::<i64>::for_monotonous_timestamps()
            .with_timestamp_assigner(|r, _| *r);
        let mut s = SplitWatermarks::new(strategy);
        let mut ts = Vec::new();
        s.on_records(1, &[100, 200], &mut ts, 0);
        assert_eq!(ts, vec![100, 200]);
        s.on_records(2, &[50], &mut ts, 0);
        assert_eq!(
            s.on_periodic_emit(0).watermark,
            Some(Watermark(49)),
            "the slower split holds time back"
        );
        s.finish_split(2);
        assert_eq!(s.on_periodic_emit(0).watermark, Some(Watermark(199)));
    }

    #[test]
    fn native_timestamps_are_kept_or_shown_to_the_assigner() {
        let mut s = SplitWatermarks::new(WatermarkStrategy::<i64>::for_monotonous_timestamps());
        let mut ts = Vec::new();
        s.on_records_with_timestamps(1, &[7, 8], &[100, 200], &mut ts, 0);
        assert_eq!(
            ts,
            vec![100, 200],
            "without an assigner records keep theirs"
        );
        assert_eq!(s.on_periodic_emit(0).watermark, Some(Watermark(199)));
        let strategy = WatermarkStrategy::<i64>::for_monotonous_timestamps()
            .with_timestamp_assigner(|r, previous| previous + *r);
        let mut s = SplitWatermarks::new(strategy);
        s.on_records_with_timestamps(1, &[7, 8], &[100, 200], &mut ts, 0);
        assert_eq!(ts, vec![107, 208], "the assigner sees the native timestamp");
        s.on_records(1, &[7], &mut ts, 0);
        assert_eq!(ts, vec![NO_TIMESTAMP + 7], "none without native timestamps");
    }

    #[test]
    fn an_idle_split_leaves_the_minimum_and_all_idle_is_idle() {
        let strategy = WatermarkStrategy::<i64>::for_monotonous_timestamps()
            .with_timestamp_assigner(|r, _| *r)
            .with_idleness(Duration::from_millis(1000));
        let mut s = SplitWatermarks::new(strategy);
        let mut ts = Vec::new();
        s.on_records(1, &[100], &mut ts, 0);
        s.on_records(2, &[500], &mut ts, 0);
        assert_eq!(s.on_periodic_emit(0).watermark, Some(Watermark(99)));
        s.on_records(2, &[600], &mut ts, 900);
        // Split 1 has been quiet for a second: idle, no longer the minimum.
        assert_eq!(
            s.on_periodic_emit(1000),
            SourceTimeUpdate {
                watermark: Some(Watermark(599)),
                status: None
            }
        );
        assert_eq!(
            s.on_periodic_emit(2000),
            SourceTimeUpdate {
                watermark: None,
                status: Some(Idle)
            }
        );
        // A record makes the subtask active at once ...
        assert_eq!(
            s.on_records(1, &[700], &mut ts, 2100),
            SourceTimeUpdate {
                watermark: None,
                status: Some(Active)
            }
        );
        // ... and its generator's next emission moves time on.
        assert_eq!(
            s.on_periodic_emit(2100),
            SourceTimeUpdate {
                watermark: Some(Watermark(699)),
                status: None
            }
        );
    }
}
