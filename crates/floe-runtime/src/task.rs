//! The loops that drive a task: one for a source chain, one for a chain fed
//! by input channels.

use crossbeam_channel::Receiver;
use floe_core::{Batch, StreamMessage, Watermark};

use crate::channel::{CANCEL_POLL, CancelFlag, GateEvent, InputGate};
use crate::context::TaskInfo;
use crate::error::TaskError;
use crate::operator::Operator;
use crate::source::{SourceReader, SourceStatus};

/// A deployable task: a chain plus the loop that feeds it.
pub trait TaskDriver: Send {
    /// Runs the task to its end, its failure, or cancellation.
    fn run(self: Box<Self>, cancel: &CancelFlag) -> Result<(), TaskError>;
}

/// Combines the watermarks of several input channels: the task's watermark is
/// the minimum over channels that have not ended, and only moves forward.
#[derive(Debug)]
pub struct WatermarkValve {
    per_channel: Vec<Option<i64>>,
    emitted: i64,
}

impl WatermarkValve {
    /// A valve for `n` channels.
    pub fn new(n: usize) -> Self {
        WatermarkValve {
            per_channel: vec![Some(i64::MIN); n],
            emitted: i64::MIN,
        }
    }

    fn advance(&mut self) -> Option<Watermark> {
        let min = self.per_channel.iter().flatten().min().copied()?;
        (min > self.emitted).then(|| {
            self.emitted = min;
            Watermark(min)
        })
    }

    /// Channel `ch` reported `wm`; the combined watermark if it advanced.
    pub fn update(&mut self, ch: usize, wm: Watermark) -> Option<Watermark> {
        if let Some(cur) = &mut self.per_channel[ch] {
            *cur = (*cur).max(wm.0);
        }
        self.advance()
    }

    /// Channel `ch` ended and no longer holds the watermark back.
    pub fn end(&mut self, ch: usize) -> Option<Watermark> {
        self.per_channel[ch] = None;
        self.advance()
    }
}

/// A task whose chain is fed by input channels.
pub struct InputTask<T> {
    gate: InputGate<T>,
    head: Box<dyn Operator<T>>,
    valve: WatermarkValve,
    info: TaskInfo,
}

impl<T: Send> InputTask<T> {
    /// A task reading `receivers` into `head`.
    pub fn new(
        receivers: Vec<Receiver<StreamMessage<T>>>,
        head: Box<dyn Operator<T>>,
        info: TaskInfo,
    ) -> Self {
        let valve = WatermarkValve::new(receivers.len());
        InputTask {
            gate: InputGate::new(receivers),
            head,
            valve,
            info,
        }
    }
}

impl<T: Send> TaskDriver for InputTask<T> {
    fn run(mut self: Box<Self>, cancel: &CancelFlag) -> Result<(), TaskError> {
        let info = self.info.clone();
        info.guard_task(|| {
            self.head.open()?;
            loop {
                if cancel.is_cancelled() {
                    return Err(TaskError::Cancelled);
                }
                match self.gate.poll()? {
                    GateEvent::Message(_, StreamMessage::Records(mut batch)) => {
                        self.head.process_batch(&mut batch)?
                    }
                    GateEvent::Message(ch, StreamMessage::Watermark(wm)) => {
                        if let Some(wm) = self.valve.update(ch, wm) {
                            self.head.process_watermark(wm)?;
                        }
                    }
                    // Alignment over several inputs arrives with checkpointing;
                    // until then barriers pass straight through.
                    GateEvent::Message(_, StreamMessage::Barrier(b)) => {
                        self.head.process_barrier(b)?
                    }
                    GateEvent::Message(ch, StreamMessage::EndOfInput) => {
                        if let Some(wm) = self.valve.end(ch) {
                            self.head.process_watermark(wm)?;
                        }
                    }
                    GateEvent::Idle => {
                        self.head.flush()?;
                        self.gate.wait(CANCEL_POLL);
                    }
                    GateEvent::Ended => return self.head.finish(),
                }
            }
        })
    }
}

/// A task whose chain is fed by a source reader.
pub struct SourceTask<T> {
    reader: Box<dyn SourceReader<T>>,
    head: Box<dyn Operator<T>>,
    info: TaskInfo,
    batch_size: usize,
}

impl<T: Send> SourceTask<T> {
    /// A task polling `reader` in batches of `batch_size` into `head`.
    pub fn new(
        reader: Box<dyn SourceReader<T>>,
        head: Box<dyn Operator<T>>,
        info: TaskInfo,
        batch_size: usize,
    ) -> Self {
        SourceTask {
            reader,
            head,
            info,
            batch_size,
        }
    }
}

impl<T: Send> TaskDriver for SourceTask<T> {
    fn run(mut self: Box<Self>, cancel: &CancelFlag) -> Result<(), TaskError> {
        let info = self.info.clone();
        info.guard_task(|| {
            self.head.open()?;
            info.guard(|| self.reader.open(&info))?;
            let mut batch = Batch::with_capacity(self.batch_size, false);
            let result = loop {
                if cancel.is_cancelled() {
                    break Err(TaskError::Cancelled);
                }
                let status = match info
                    .guard(|| self.reader.poll_next(&mut batch.records, self.batch_size))
                {
                    Ok(s) => s,
                    Err(e) => break Err(e),
                };
                if !batch.is_empty()
                    && let Err(e) = self.head.process_batch(&mut batch)
                {
                    break Err(e);
                }
                match status {
                    SourceStatus::MoreAvailable => {}
                    SourceStatus::NothingAvailable => {
                        if let Err(e) = self.head.flush() {
                            break Err(e);
                        }
                    }
                    SourceStatus::Finished => break Ok(()),
                }
            };
            let closed = info.guard(|| self.reader.close());
            result?;
            closed?;
            self.head.finish()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valve_emits_minimum_and_only_forward() {
        let mut v = WatermarkValve::new(2);
        assert_eq!(v.update(0, Watermark(10)), None);
        assert_eq!(v.update(1, Watermark(5)), Some(Watermark(5)));
        assert_eq!(v.update(1, Watermark(20)), Some(Watermark(10)));
        assert_eq!(v.update(1, Watermark(3)), None);
        assert_eq!(v.end(0), Some(Watermark(20)));
    }
}
