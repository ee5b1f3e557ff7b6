//! Event time on any stream: `assign_timestamps_and_watermarks`, and the
//! operator behind it (Flink's `TimestampsAndWatermarksOperator`).
//!
//! Watermarks are best generated in the source, per split (see
//! [`StreamEnvironment::from_source_with_watermarks`](crate::StreamEnvironment::from_source_with_watermarks));
//! this operator is for streams whose timestamps are only known after some
//! processing. It runs one generator per subtask, replaces the
//! timestamps of the records passing through, and drops the watermarks
//! and idleness of its input (only the end of event time passes), as
//! Flink's does.

use std::marker::PhantomData;

use floe_core::{Batch, CheckpointBarrier, Watermark, WatermarkStatus};
use floe_runtime::checkpoint::{CheckpointNotification, TaskInit, TaskSnapshot};
use floe_runtime::graph::{VertexKind, unbox};
use floe_runtime::processing_time::ProcessingTimeService;
use floe_runtime::{
    Operator, StateQuery, TaskError, TaskInfo, WatermarkGenerator, WatermarkOutput,
    WatermarkStrategy,
};

use crate::env::MakeKind;
use crate::stream::{DataStream, Record};

/// Stamps records with the strategy's timestamps and emits its watermarks.
pub(crate) struct TimestampsAndWatermarksOp<T> {
    strategy: WatermarkStrategy<T>,
    generator: Box<dyn WatermarkGenerator<T>>,
    output: WatermarkOutput,
    /// The last watermark sent downstream.
    emitted: i64,
    /// The last status sent downstream.
    idle: bool,
    /// Processing time of the last record, for idleness.
    last_active_ms: i64,
    next_emit_ms: i64,
    interval_ms: i64,
    time: ProcessingTimeService,
    next: Box<dyn Operator<T>>,
    _t: PhantomData<fn(T)>,
}

impl<T: Send + 'static> TimestampsAndWatermarksOp<T> {
    pub(crate) fn new(strategy: WatermarkStrategy<T>, next: Box<dyn Operator<T>>) -> Self {
        TimestampsAndWatermarksOp {
            generator: strategy.create_generator(),
            strategy,
            output: WatermarkOutput::default(),
            emitted: i64::MIN,
            idle: false,
            last_active_ms: 0,
            next_emit_ms: i64::MAX,
            interval_ms: 200,
            time: ProcessingTimeService::default(),
            next,
            _t: PhantomData,
        }
    }

    /// Sends what the generator declared since the last look.
    fn forward_output(&mut self) -> Result<(), TaskError> {
        let idle = self.output.is_idle();
        if !idle && self.idle {
            self.idle = false;
            self.next
                .process_watermark_status(WatermarkStatus::Active)?;
        }
        let wm = self.output.watermark();
        if !idle && wm.0 > self.emitted {
            self.emitted = wm.0;
            self.next.process_watermark(wm)?;
        }
        if idle && !self.idle {
            self.idle = true;
            self.next.process_watermark_status(WatermarkStatus::Idle)?;
        }
        Ok(())
    }
}

impl<T: Send + 'static> Operator<T> for TimestampsAndWatermarksOp<T> {
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.next.open(init)?;
        self.time = init.time.clone();
        self.interval_ms = init.auto_watermark_interval_ms();
        let now = self.time.now_ms();
        self.last_active_ms = now;
        self.next_emit_ms = now.saturating_add(self.interval_ms);
        self.time.request_wakeup(self.next_emit_ms);
        Ok(())
    }

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        if batch.is_empty() {
            return Ok(());
        }
        if !batch.is_timed() {
            batch
                .timestamps
                .resize(batch.records.len(), floe_core::NO_TIMESTAMP);
        }
        let (strategy, generator, output) = (&self.strategy, &mut self.generator, &mut self.output);
        for (r, ts) in batch.records.iter().zip(batch.timestamps.iter_mut()) {
            *ts = strategy.assign(r, *ts);
            generator.on_event(r, *ts, output);
        }
        if self.idle {
            self.output.mark_active();
        }
        if self.strategy.idleness().is_some() {
            self.last_active_ms = self.time.now_ms();
        }
        self.next.process_batch(batch)?;
        // A generator that emits on events (punctuated watermarks).
        self.forward_output()
    }

    fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
        // Upstream event time is replaced by this operator's; only the end
        // of the input passes, so that everything downstream fires.
        if wm == Watermark::MAX && self.emitted != i64::MAX {
            self.emitted = i64::MAX;
            return self.next.process_watermark(wm);
        }
        Ok(())
    }

    fn process_watermark_status(&mut self, _: WatermarkStatus) -> Result<(), TaskError> {
        Ok(())
    }

    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
        if now_ms >= self.next_emit_ms {
            self.generator.on_periodic_emit(&mut self.output);
            if let Some(timeout) = self.strategy.idleness() {
                let timeout = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
                if now_ms.saturating_sub(self.last_active_ms) >= timeout {
                    self.output.mark_idle();
                }
            }
            self.forward_output()?;
            self.next_emit_ms = now_ms.saturating_add(self.interval_ms);
        }
        self.time.request_wakeup(self.next_emit_ms);
        self.next.on_processing_time(now_ms)
    }

    fn process_barrier(
        &mut self,
        b: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        // Nothing to keep: after a restore the generator starts again and
        // event time catches up from the replayed records, as in Flink.
        self.next.process_barrier(b, snapshot)
    }

    fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        self.next.notify_checkpoint(n)
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        self.next.flush()
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.next.finish()
    }

    fn query_state(&mut self, q: StateQuery) -> Option<StateQuery> {
        self.next.query_state(q)
    }
}

impl<T: Record> DataStream<T> {
    /// Gives every record the timestamp `strategy` assigns and generates
    /// watermarks from them, one generator per subtask (Flink's
    /// `assignTimestampsAndWatermarks`). Chained to its input: it costs no
    /// exchange.
    pub fn assign_timestamps_and_watermarks(
        &self,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        let make: MakeKind = Box::new(move |_| {
            let strategy = strategy.clone();
            VertexKind::Operator(std::sync::Arc::new(move |_info: &TaskInfo, down, _side| {
                let next = unbox::<Box<dyn Operator<T>>>(down, "operator output");
                let op: Box<dyn Operator<T>> =
                    Box::new(TimestampsAndWatermarksOp::new(strategy.clone(), next));
                Box::new(op)
            }))
        });
        self.add_consumer("Timestamps/Watermarks", make, None, false)
    }
}
