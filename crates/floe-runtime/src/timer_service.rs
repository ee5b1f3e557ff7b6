//! Timers of keyed functions: what `ctx.timer_service()` gives a
//! function, and how a keyed operator fires its due timers.
//!
//! Timers are keyed state (floe-state keeps them per key group, in every
//! snapshot); this module is the runtime around them (Flink's
//! `InternalTimerServiceImpl` and `KeyedProcessOperator`'s timer side):
//! the operator's current watermark, processing-time wake-ups, and firing
//! in slices. A watermark that makes many timers due fires them a slice at
//! a time; between slices the task serves barriers, queries, cancellation
//! and REST, and the watermark is forwarded only once every timer it made
//! due has fired (Flink's interruptible timers).

use std::time::{Duration, Instant};

use floe_core::Watermark;
use floe_state::{
    Key, KeyedStateAccess, KeyedStateBackend, Namespace, StateError, TimeDomain, Timer, TimerQueue,
};

pub use crate::context::TimerAccess;
use crate::context::{KeyedContext, TaskInfo};
use crate::processing_time::ProcessingTimeService;

/// The name of the timer queue of a keyed process function (Flink's
/// `"user-timers"`), in snapshots.
pub const USER_TIMERS: &str = "user-timers";

/// How long one slice of timer firing may run before the task gets to
/// serve what waits (barriers, queries, cancellation).
const SLICE: Duration = Duration::from_millis(10);

/// Why a timer could not be set or deleted.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// The function has no timer service (only process functions on a
    /// keyed stream have one, as in Flink).
    #[error(
        "operator '{operator}' has no timer service: timers are available in KeyedProcessFunction"
    )]
    Unavailable {
        /// The operator.
        operator: String,
    },
    /// The state backend refused it.
    #[error(transparent)]
    State(#[from] StateError),
}

impl<'a, K: Key> KeyedContext<'a, K> {
    /// Time and timers (Flink's `ctx.timerService()`): the current
    /// watermark and processing time, and timers for the current key.
    /// Setting a timer fails with [`TimerError::Unavailable`] outside a
    /// `KeyedProcessFunction`.
    pub fn timer_service(&mut self) -> TimerService<'_, 'a, K> {
        TimerService { ctx: self }
    }
}

/// A keyed function's view of time and its timers (Flink's
/// `TimerService`): timers are set for the current key, fire once, and
/// are unique per key and timestamp in each domain.
pub struct TimerService<'c, 'a, K: Key> {
    pub(crate) ctx: &'c mut KeyedContext<'a, K>,
}

impl<K: Key> TimerService<'_, '_, K> {
    fn access(&self) -> Result<TimerAccess<'_>, TimerError> {
        self.ctx.timers.ok_or_else(|| TimerError::Unavailable {
            operator: self.ctx.task_info().operator_name.to_string(),
        })
    }

    /// The operator's event time: the last watermark it received
    /// (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.ctx.timers.map_or(i64::MIN, |t| t.watermark)
    }

    /// The processing time now, in milliseconds since the epoch (from the
    /// job's clock, which tests may move by hand).
    pub fn current_processing_time(&self) -> i64 {
        match self.ctx.timers {
            Some(t) => t.time.now_ms(),
            None => crate::processing_time::ProcessingClock::System.now_ms(),
        }
    }

    /// Calls `on_timer` for the current key once the watermark reaches
    /// `timestamp`.
    pub fn register_event_time_timer(&mut self, timestamp: i64) -> Result<(), TimerError> {
        let queue = *self.access()?.queue;
        self.ctx.keyed_state_backend().register_timer(
            &queue,
            TimeDomain::EventTime,
            timestamp,
            (),
        )?;
        Ok(())
    }

    /// Calls `on_timer` for the current key once processing time reaches
    /// `timestamp`.
    pub fn register_processing_time_timer(&mut self, timestamp: i64) -> Result<(), TimerError> {
        let access = self.access()?;
        let (queue, time) = (*access.queue, access.time.clone());
        self.ctx.keyed_state_backend().register_timer(
            &queue,
            TimeDomain::ProcessingTime,
            timestamp,
            (),
        )?;
        time.request_wakeup(timestamp);
        Ok(())
    }

    /// Deletes the current key's event-time timer at `timestamp`, if any.
    pub fn delete_event_time_timer(&mut self, timestamp: i64) -> Result<(), TimerError> {
        let queue = *self.access()?.queue;
        self.ctx.keyed_state_backend().delete_timer(
            &queue,
            TimeDomain::EventTime,
            timestamp,
            &(),
        )?;
        Ok(())
    }

    /// Deletes the current key's processing-time timer at `timestamp`, if
    /// any.
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) -> Result<(), TimerError> {
        let queue = *self.access()?.queue;
        self.ctx.keyed_state_backend().delete_timer(
            &queue,
            TimeDomain::ProcessingTime,
            timestamp,
            &(),
        )?;
        Ok(())
    }
}

/// What `on_timer` sees (Flink's `OnTimerContext`): the timer's key as the
/// current key with its state, the domain and timestamp of the timer, and
/// the timer service to set further timers.
pub struct OnTimerContext<'a, K: Key> {
    ctx: KeyedContext<'a, K>,
    domain: TimeDomain,
    timestamp: i64,
}

impl<'a, K: Key> OnTimerContext<'a, K> {
    /// The context of a firing timer.
    pub fn new(ctx: KeyedContext<'a, K>, domain: TimeDomain, timestamp: i64) -> Self {
        OnTimerContext {
            ctx,
            domain,
            timestamp,
        }
    }

    /// Which clock the firing timer follows.
    pub fn time_domain(&self) -> TimeDomain {
        self.domain
    }

    /// The firing timer's timestamp.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key the timer was set for.
    pub fn current_key(&self) -> &K {
        self.ctx.current_key()
    }

    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.ctx.task_info()
    }

    /// Time and timers, as in `process_element`.
    pub fn timer_service(&mut self) -> TimerService<'_, 'a, K> {
        self.ctx.timer_service()
    }

    /// Emits `value` to the side output `tag`, with the timer's timestamp
    /// in event time.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &crate::side_output::OutputTag<X>,
        value: X,
    ) -> Result<(), crate::side_output::SideOutputTypeError> {
        self.ctx.output(tag, value)
    }
}

impl<K: Key> KeyedStateAccess<K> for OnTimerContext<'_, K> {
    fn keyed_state_backend(&mut self) -> &mut KeyedStateBackend<K> {
        self.ctx.keyed_state_backend()
    }
}

/// One keyed operator's timers: the registered queue, the operator's
/// watermark, and a watermark whose timers are still firing.
///
/// `N` is the timers' namespace: `()` for a process function's timers
/// (unique per key and timestamp), the window for a window operator's
/// (unique per key, window and timestamp, as Flink's
/// `InternalTimerService<W>`).
pub struct KeyedTimers<N: Namespace = ()> {
    queue: TimerQueue<N>,
    watermark: i64,
    time: ProcessingTimeService,
    /// A watermark received whose due timers have not all fired yet: it is
    /// forwarded once they have.
    pending: Option<Watermark>,
}

/// How a slice of firing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Every due timer fired.
    AllDue,
    /// The slice's time is up; more are due.
    SliceEnded,
}

impl KeyedTimers<()> {
    /// Registers a process function's queue ([`USER_TIMERS`]) in
    /// `backend`; see [`KeyedTimers::open_queue`].
    pub fn open<K: Key>(
        backend: &mut KeyedStateBackend<K>,
        time: ProcessingTimeService,
    ) -> Result<Self, StateError> {
        Self::open_queue(backend, USER_TIMERS, time)
    }

    /// The access a keyed context of this operator gets.
    #[inline]
    pub fn access(&self) -> TimerAccess<'_> {
        TimerAccess {
            queue: &self.queue,
            watermark: self.watermark,
            time: &self.time,
        }
    }
}

impl<N: Namespace> KeyedTimers<N> {
    /// Registers the operator's queue `name` in `backend` (restoring its
    /// timers) and asks for a wake-up for its earliest processing-time
    /// timer, which after a restore may already be due and then fires at
    /// once.
    pub fn open_queue<K: Key>(
        backend: &mut KeyedStateBackend<K>,
        name: &str,
        time: ProcessingTimeService,
    ) -> Result<Self, StateError> {
        let queue = backend.timer_queue::<N>(name)?;
        if let Some(at) = backend.next_timer(&queue, TimeDomain::ProcessingTime) {
            time.request_wakeup(at);
        }
        Ok(KeyedTimers {
            queue,
            watermark: i64::MIN,
            time,
            pending: None,
        })
    }

    /// The queue, for an operator that sets timers itself (a window
    /// operator's triggers).
    pub fn queue(&self) -> &TimerQueue<N> {
        &self.queue
    }

    /// The processing-time service, for asking a wake-up at a timer set
    /// outside [`TimerService`].
    pub fn time(&self) -> &ProcessingTimeService {
        &self.time
    }

    /// The processing time now, on the job's clock.
    pub fn now_ms(&self) -> i64 {
        self.time.now_ms()
    }

    /// The operator's current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// A watermark arrived: it becomes the operator's event time, and its
    /// due timers are to fire before it is forwarded.
    pub fn advance_watermark(&mut self, wm: Watermark) {
        if wm.0 > self.watermark {
            self.watermark = wm.0;
        }
        self.pending = Some(wm);
    }

    /// True while a watermark's timers are still firing.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes the pending watermark once its timers have all fired.
    pub fn take_pending(&mut self) -> Option<Watermark> {
        self.pending.take()
    }

    /// Fires the due timers of `domain` (event time: up to the watermark;
    /// processing time: up to `now_ms`) one at a time through `on_timer`,
    /// for at most one slice when `sliced`. The backend's current key is
    /// the timer's key during each call.
    pub fn fire<K: Key, E: From<StateError>>(
        &mut self,
        backend: &mut KeyedStateBackend<K>,
        domain: TimeDomain,
        now_ms: i64,
        sliced: bool,
        mut on_timer: impl FnMut(&mut KeyedStateBackend<K>, &Self, Timer<K, N>) -> Result<(), E>,
    ) -> Result<Fired, E> {
        let up_to = match domain {
            TimeDomain::EventTime => self.watermark,
            TimeDomain::ProcessingTime => now_ms,
        };
        let started = Instant::now();
        let mut n = 0u32;
        while let Some(timer) = backend.poll_timer(&self.queue, domain, up_to)? {
            backend.set_current_key(timer.key.clone(), timer.key_group)?;
            on_timer(backend, self, timer)?;
            n += 1;
            if sliced && n % 256 == 0 && started.elapsed() >= SLICE {
                // Come back at once, after the task served what waits.
                self.time.request_wakeup(i64::MIN);
                return Ok(Fired::SliceEnded);
            }
        }
        if domain == TimeDomain::ProcessingTime
            && let Some(at) = backend.next_timer(&self.queue, TimeDomain::ProcessingTime)
        {
            self.time.request_wakeup(at);
        }
        Ok(Fired::AllDue)
    }
}
