//! The wrappers that count an operator's records and watermarks into its
//! [`OperatorIo`]: one in front of the operator (what it receives), one in
//! front of what it emits into. One relaxed atomic add per batch, never
//! per record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_core::{Batch, CheckpointBarrier, Watermark, WatermarkStatus};

use crate::checkpoint::{CheckpointNotification, TaskInit, TaskSnapshot};
use crate::error::TaskError;
use crate::metrics::{NativeMetric, OperatorIo};
use crate::operator::Operator;
use crate::queryable::StateQuery;

/// Which side of an operator a [`Metered`] link counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeteredSide {
    /// In front of the operator: `numRecordsIn`, `currentInputWatermark`.
    Input,
    /// Between the operator and its downstream: `numRecordsOut`,
    /// `currentOutputWatermark`.
    Output,
    /// Behind a source reader: what it reads is both its input and its
    /// output (Flink's source operators count both).
    Source,
}

/// How often an operator's native metrics are read.
const NATIVE_EVERY: Duration = Duration::from_secs(1);

/// Batches between two looks at the clock for [`NATIVE_EVERY`]: the clock
/// is not read per batch.
const NATIVE_CHECK_BATCHES: u32 = 256;

/// A chain link that counts what passes through it, then hands it on.
pub struct Metered<T> {
    inner: Box<dyn Operator<T>>,
    io: Arc<OperatorIo>,
    side: MeteredSide,
    /// Batches since the clock was last looked at (input side only).
    batches: u32,
    /// When the operator's native metrics are read next.
    native_due: Instant,
    /// Reused for each read.
    native: Vec<NativeMetric>,
}

impl<T> Metered<T> {
    /// Counts into `io` what reaches `inner`.
    pub fn new(inner: Box<dyn Operator<T>>, io: Arc<OperatorIo>, side: MeteredSide) -> Self {
        Metered {
            inner,
            io,
            side,
            batches: 0,
            native_due: Instant::now(),
            native: Vec::new(),
        }
    }

    /// Reads the operator's native metrics into its `OperatorIo` once
    /// [`NATIVE_EVERY`] has passed (the input-side link only: it wraps the
    /// operator itself).
    fn refresh_native(&mut self) {
        if self.side != MeteredSide::Input {
            return;
        }
        let now = Instant::now();
        if now < self.native_due {
            return;
        }
        self.native_due = now + NATIVE_EVERY;
        self.native.clear();
        self.inner.native_metrics(&mut self.native);
        if !self.native.is_empty() {
            self.io.set_native(&self.native);
        }
    }
}

impl<T: Send> Operator<T> for Metered<T> {
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.inner.open(init)
    }

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        let n = batch.len();
        match self.side {
            MeteredSide::Input => {
                self.io.add_in(n);
                self.batches += 1;
                if self.batches == NATIVE_CHECK_BATCHES {
                    self.batches = 0;
                    self.refresh_native();
                }
            }
            MeteredSide::Output => self.io.add_out(n),
            MeteredSide::Source => {
                self.io.add_in(n);
                self.io.add_out(n);
            }
        }
        self.inner.process_batch(batch)
    }

    fn process_watermark(&mut self, watermark: Watermark) -> Result<(), TaskError> {
        match self.side {
            MeteredSide::Input => self.io.set_input_watermark(watermark.0),
            MeteredSide::Output | MeteredSide::Source => self.io.set_output_watermark(watermark.0),
        }
        self.inner.process_watermark(watermark)
    }

    fn process_watermark_status(&mut self, status: WatermarkStatus) -> Result<(), TaskError> {
        self.inner.process_watermark_status(status)
    }

    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
        self.inner.on_processing_time(now_ms)
    }

    fn process_barrier(
        &mut self,
        barrier: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        self.inner.process_barrier(barrier, snapshot)?;
        // The snapshot wrote what the operator held back (a write-back
        // cache) into its backend: the figures a checkpoint leaves are
        // read now, whenever they were last.
        self.native_due = Instant::now();
        self.refresh_native();
        Ok(())
    }

    fn notify_checkpoint(&mut self, notification: CheckpointNotification) -> Result<(), TaskError> {
        self.inner.notify_checkpoint(notification)
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        // The task is about to wait for input: a quiet operator's figures
        // are read here.
        self.refresh_native();
        self.inner.flush()
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.inner.finish()
    }

    fn query_state(&mut self, query: StateQuery) -> Option<StateQuery> {
        self.inner.query_state(query)
    }
}
