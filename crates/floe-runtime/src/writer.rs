//! Record writers: the last link of a chain that feeds an exchange.
//!
//! A writer buffers records per downstream channel and sends a batch when it
//! is full, when the task goes idle (`flush`) or before a control element.
//! The partitioning decides the channel: forward (same index), rebalance
//! (round robin), broadcast (all) or key group (hash of the key).

use floe_core::{Batch, CheckpointBarrier, KeyGroup, StreamMessage, Watermark, WatermarkStatus};
use floe_state::{Key, KeyGroupRouter};

use crate::channel::{CancelFlag, OutputChannel};
use crate::checkpoint::{CheckpointNotification, TaskInit, TaskSnapshot};
use crate::context::TaskInfo;
use crate::error::{FailureCause, TaskError};
use crate::operator::Operator;

/// The channels of one exchange as seen by one sending subtask, each with its
/// pending batch.
pub struct ChannelSet<T> {
    channels: Vec<Box<dyn OutputChannel<T>>>,
    buffers: Vec<Batch<T>>,
    batch_size: usize,
    keyed: bool,
    /// The stream carries timestamps: new buffers get room for them (set
    /// by the first timestamped batch, so a stream without event time
    /// never allocates the column).
    timed: bool,
    cancel: CancelFlag,
}

impl<T: Send + Clone> ChannelSet<T> {
    /// Channels to the downstream subtasks, in subtask order.
    pub fn new(
        channels: Vec<Box<dyn OutputChannel<T>>>,
        batch_size: usize,
        keyed: bool,
        cancel: CancelFlag,
    ) -> Self {
        let buffers = (0..channels.len())
            .map(|_| Batch::with_capacity(batch_size, keyed))
            .collect();
        ChannelSet {
            channels,
            buffers,
            batch_size,
            keyed,
            timed: false,
            cancel,
        }
    }

    /// Number of downstream channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// True without channels (never, for a built graph).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Sends channel `i`'s pending batch, if any.
    #[inline]
    pub fn send_buffer(&mut self, i: usize) -> Result<(), TaskError> {
        if self.buffers[i].is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.buffers[i],
            Batch::with_layout(self.batch_size, self.keyed, self.timed),
        );
        self.channels[i].send(StreamMessage::Records(batch), &self.cancel)
    }

    /// Adds a record for channel `i`, sending the batch when it is full.
    #[inline]
    pub fn push(&mut self, i: usize, record: T) -> Result<(), TaskError> {
        let b = &mut self.buffers[i];
        b.records.push(record);
        if b.records.len() >= self.batch_size {
            self.send_buffer(i)?;
        }
        Ok(())
    }

    /// Adds a record with its key group for channel `i`.
    #[inline]
    pub fn push_keyed(&mut self, i: usize, record: T, kg: KeyGroup) -> Result<(), TaskError> {
        let b = &mut self.buffers[i];
        b.records.push(record);
        b.key_groups.push(kg);
        if b.records.len() >= self.batch_size {
            self.send_buffer(i)?;
        }
        Ok(())
    }

    /// Adds a record with its timestamp (and key group, when `kg` is
    /// given) for channel `i`.
    #[inline]
    pub fn push_timed(
        &mut self,
        i: usize,
        record: T,
        kg: Option<KeyGroup>,
        timestamp: i64,
    ) -> Result<(), TaskError> {
        let b = &mut self.buffers[i];
        b.records.push(record);
        if let Some(kg) = kg {
            b.key_groups.push(kg);
        }
        b.timestamps.push(timestamp);
        if b.records.len() >= self.batch_size {
            self.send_buffer(i)?;
        }
        Ok(())
    }

    /// Notes that the stream carries timestamps, so new buffers are made
    /// with room for them.
    #[inline]
    fn mark_timed(&mut self, batch: &Batch<T>) {
        if !self.timed && batch.is_timed() {
            self.timed = true;
        }
    }

    /// Sends every pending batch.
    pub fn flush(&mut self) -> Result<(), TaskError> {
        (0..self.channels.len()).try_for_each(|i| self.send_buffer(i))
    }

    /// Flushes, then sends a control element to every channel.
    pub fn broadcast_control(&mut self, msg: StreamMessage<T>) -> Result<(), TaskError> {
        self.flush()?;
        for ch in &mut self.channels {
            ch.send(msg.clone(), &self.cancel)?;
        }
        Ok(())
    }

    /// The pending batch of channel `i` (forward writers swap into it).
    fn buffer_mut(&mut self, i: usize) -> &mut Batch<T> {
        &mut self.buffers[i]
    }
}

/// Control-element handling shared by all writers.
macro_rules! control_methods {
    () => {
        fn open(&mut self, _: &TaskInit) -> Result<(), TaskError> {
            Ok(())
        }

        fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
            self.channels
                .broadcast_control(StreamMessage::Watermark(wm))
        }

        fn process_watermark_status(&mut self, status: WatermarkStatus) -> Result<(), TaskError> {
            self.channels
                .broadcast_control(StreamMessage::WatermarkStatus(status))
        }

        fn on_processing_time(&mut self, _: i64) -> Result<(), TaskError> {
            Ok(())
        }

        fn process_barrier(
            &mut self,
            b: CheckpointBarrier,
            _: &mut TaskSnapshot,
        ) -> Result<(), TaskError> {
            self.channels.broadcast_control(StreamMessage::Barrier(b))
        }

        fn notify_checkpoint(&mut self, _: CheckpointNotification) -> Result<(), TaskError> {
            // Downstream tasks hear from the coordinator themselves.
            Ok(())
        }

        fn flush(&mut self) -> Result<(), TaskError> {
            self.channels.flush()
        }

        fn finish(&mut self) -> Result<(), TaskError> {
            self.channels.broadcast_control(StreamMessage::EndOfInput)
        }
    };
}

/// Sends everything to the downstream subtask with the same index.
pub struct ForwardWriter<T> {
    channels: ChannelSet<T>,
}

impl<T: Send + Clone> ForwardWriter<T> {
    /// A writer over exactly one channel.
    pub fn new(channels: ChannelSet<T>) -> Self {
        assert_eq!(channels.len(), 1, "a forward writer has one channel");
        ForwardWriter { channels }
    }
}

impl<T: Send + Clone> Operator<T> for ForwardWriter<T> {
    control_methods!();

    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        let buf = self.channels.buffer_mut(0);
        if buf.is_empty() {
            // Hand the incoming allocation over instead of copying records.
            std::mem::swap(buf, batch);
            batch.clear();
        } else {
            if buf.timestamps.len() == buf.records.len() && batch.is_timed() {
                buf.timestamps.append(&mut batch.timestamps);
            } else if buf.is_timed() || batch.is_timed() {
                // A timestamped and an untimestamped batch meet (only at a
                // union of streams with and without event time): the
                // records without one get `NO_TIMESTAMP`.
                buf.timestamps
                    .resize(buf.records.len(), floe_core::NO_TIMESTAMP);
                batch
                    .timestamps
                    .resize(batch.records.len(), floe_core::NO_TIMESTAMP);
                buf.timestamps.append(&mut batch.timestamps);
            }
            buf.records.append(&mut batch.records);
            buf.key_groups.clear();
        }
        if self.channels.buffer_mut(0).len() >= self.channels.batch_size {
            self.channels.send_buffer(0)?;
        }
        Ok(())
    }
}

/// Deals records round robin over all downstream subtasks.
pub struct RebalanceWriter<T> {
    channels: ChannelSet<T>,
    next: usize,
}

impl<T: Send + Clone> RebalanceWriter<T> {
    /// A writer starting at channel `start` (the sender's index, to spread
    /// several senders' first records).
    pub fn new(channels: ChannelSet<T>, start: usize) -> Self {
        let next = start % channels.len();
        RebalanceWriter { channels, next }
    }
}

impl<T: Send + Clone> Operator<T> for RebalanceWriter<T> {
    control_methods!();

    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        let n = self.channels.len();
        batch.key_groups.clear();
        self.channels.mark_timed(batch);
        if batch.is_timed() {
            for (r, ts) in batch.records.drain(..).zip(batch.timestamps.drain(..)) {
                self.channels.push_timed(self.next, r, None, ts)?;
                self.next += 1;
                if self.next == n {
                    self.next = 0;
                }
            }
            return Ok(());
        }
        for r in batch.records.drain(..) {
            self.channels.push(self.next, r)?;
            self.next += 1;
            if self.next == n {
                self.next = 0;
            }
        }
        Ok(())
    }
}

/// Sends every record to every downstream subtask.
pub struct BroadcastWriter<T> {
    channels: ChannelSet<T>,
}

impl<T: Send + Clone> BroadcastWriter<T> {
    /// A writer over all downstream channels.
    pub fn new(channels: ChannelSet<T>) -> Self {
        BroadcastWriter { channels }
    }
}

impl<T: Send + Clone> Operator<T> for BroadcastWriter<T> {
    control_methods!();

    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        let n = self.channels.len();
        batch.key_groups.clear();
        self.channels.mark_timed(batch);
        if batch.is_timed() {
            for (r, ts) in batch.records.drain(..).zip(batch.timestamps.drain(..)) {
                for i in 0..n - 1 {
                    self.channels.push_timed(i, r.clone(), None, ts)?;
                }
                self.channels.push_timed(n - 1, r, None, ts)?;
            }
            return Ok(());
        }
        for r in batch.records.drain(..) {
            for i in 0..n - 1 {
                self.channels.push(i, r.clone())?;
            }
            self.channels.push(n - 1, r)?;
        }
        Ok(())
    }
}

/// Routes each record to the subtask owning its key's key group, and sends
/// the key group along so the receiver never hashes the key again.
pub struct KeyGroupWriter<T, K, F> {
    channels: ChannelSet<T>,
    router: KeyGroupRouter,
    key_selector: F,
    /// Where a failing key selector is reported.
    sender: TaskInfo,
    target_name: std::sync::Arc<str>,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<T: Send + Clone, K: Key, F: Fn(&T) -> K + Send> KeyGroupWriter<T, K, F> {
    /// A writer for a keyed exchange into operator `target_name` with
    /// `channels.len()` subtasks and `max_parallelism` key groups.
    pub fn new(
        channels: ChannelSet<T>,
        max_parallelism: u32,
        key_selector: F,
        sender: TaskInfo,
        target_name: std::sync::Arc<str>,
    ) -> Self {
        let router = KeyGroupRouter::new(max_parallelism, channels.len() as u32);
        KeyGroupWriter {
            channels,
            router,
            key_selector,
            sender,
            target_name,
            _k: std::marker::PhantomData,
        }
    }
}

impl<T: Send + Clone, K: Key, F: Fn(&T) -> K + Send> Operator<T> for KeyGroupWriter<T, K, F> {
    control_methods!();

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        batch.key_groups.clear();
        let Self {
            channels,
            router,
            key_selector,
            sender,
            target_name,
            ..
        } = self;
        channels.mark_timed(batch);
        let routed = sender.guard_task(|| {
            if batch.is_timed() {
                for (r, ts) in batch.records.drain(..).zip(batch.timestamps.drain(..)) {
                    let (kg, target) = router.route(&key_selector(&r));
                    channels.push_timed(target, r, Some(kg), ts)?;
                }
                return Ok(());
            }
            for r in batch.records.drain(..) {
                let (kg, target) = router.route(&key_selector(&r));
                channels.push_keyed(target, r, kg)?;
            }
            Ok(())
        });
        routed.map_err(|e| match e {
            TaskError::Operator(mut f) => {
                if let FailureCause::Panic(msg) = &f.cause {
                    f.cause = FailureCause::Panic(format!(
                        "{msg} (in the key selector of the key_by into '{target_name}')"
                    ));
                }
                TaskError::Operator(f)
            }
            other => other,
        })
    }
}
