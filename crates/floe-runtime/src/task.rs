//! The loops that drive a task: one for a source chain, one for a chain fed
//! by input channels.

use crossbeam_channel::Receiver;
use floe_core::{Batch, CheckpointBarrier, StreamMessage, Watermark};

use crate::channel::{CANCEL_POLL, GateEvent, InputGate};
use crate::checkpoint::{
    AlignmentAction, BarrierAligner, OperatorSnapshot, OperatorState, TaskCommand, TaskEnvironment,
    TaskSnapshot,
};
use crate::context::TaskInfo;
use crate::error::TaskError;
use crate::operator::Operator;
use crate::source::{SourceReader, SourceStatus};

/// A deployable task: a chain plus the loop that feeds it.
pub trait TaskDriver: Send {
    /// Runs the task to its end, its failure, or cancellation.
    fn run(self: Box<Self>, env: &TaskEnvironment) -> Result<(), TaskError>;
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

impl<T: Send> InputTask<T> {
    /// Applies what the aligner decided.
    fn align(&mut self, action: AlignmentAction, env: &TaskEnvironment) -> Result<(), TaskError> {
        match action {
            AlignmentAction::Wait => {}
            AlignmentAction::Block(ch) => self.gate.block(ch),
            AlignmentAction::Superseded { block } => {
                self.gate.unblock_all();
                if let Some(ch) = block {
                    self.gate.block(ch);
                }
            }
            AlignmentAction::Complete(barrier) => {
                let mut snapshot = TaskSnapshot::new(barrier);
                self.head.process_barrier(barrier, &mut snapshot)?;
                self.gate.unblock_all();
                env.submit(snapshot)?;
            }
        }
        Ok(())
    }
}

impl<T: Send> TaskDriver for InputTask<T> {
    fn run(mut self: Box<Self>, env: &TaskEnvironment) -> Result<(), TaskError> {
        let info = self.info.clone();
        let mut aligner = BarrierAligner::new(self.gate.num_channels(), env.alignment);
        info.guard_task(|| {
            self.head.open(&env.init)?;
            loop {
                if env.cancel.is_cancelled() {
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
                    GateEvent::Message(ch, StreamMessage::Barrier(b)) => {
                        let action = aligner.on_barrier(ch, b);
                        self.align(action, env)?;
                    }
                    GateEvent::Message(ch, StreamMessage::EndOfInput) => {
                        if let Some(wm) = self.valve.end(ch) {
                            self.head.process_watermark(wm)?;
                        }
                        let action = aligner.on_end(ch);
                        self.align(action, env)?;
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

impl<T: Send> SourceTask<T> {
    /// Injects a barrier: the reader's position is this operator's part of
    /// the snapshot, then the barrier runs down the chain.
    fn checkpoint(
        &mut self,
        barrier: CheckpointBarrier,
        env: &TaskEnvironment,
    ) -> Result<(), TaskError> {
        let info = &self.info;
        let reader = &mut self.reader;
        let position = info.guard(|| reader.snapshot_state())?;
        let mut snapshot = TaskSnapshot::new(barrier);
        snapshot.operators.push(OperatorSnapshot {
            uid: info.uid.clone(),
            subtask: info.subtask_index,
            state: OperatorState::Raw(position),
        });
        self.head.process_barrier(barrier, &mut snapshot)?;
        env.submit(snapshot)
    }

    /// Handles the commands that arrived since the last poll.
    fn handle_commands(&mut self, env: &TaskEnvironment) -> Result<(), TaskError> {
        let Some(commands) = &env.commands else {
            return Ok(());
        };
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                TaskCommand::TriggerCheckpoint(barrier) => self.checkpoint(barrier, env)?,
            }
        }
        Ok(())
    }

    fn run_loop(&mut self, env: &TaskEnvironment) -> Result<(), TaskError> {
        let mut batch = Batch::with_capacity(self.batch_size, false);
        loop {
            if env.cancel.is_cancelled() {
                return Err(TaskError::Cancelled);
            }
            self.handle_commands(env)?;
            let (reader, info, max) = (&mut self.reader, &self.info, self.batch_size);
            let status = info.guard(|| reader.poll_next(&mut batch.records, max))?;
            if !batch.is_empty() {
                self.head.process_batch(&mut batch)?;
            }
            match status {
                SourceStatus::MoreAvailable => {}
                SourceStatus::NothingAvailable => self.head.flush()?,
                SourceStatus::Finished => return Ok(()),
            }
        }
    }
}

impl<T: Send> TaskDriver for SourceTask<T> {
    fn run(mut self: Box<Self>, env: &TaskEnvironment) -> Result<(), TaskError> {
        let info = self.info.clone();
        info.guard_task(|| {
            self.head.open(&env.init)?;
            if let Some(position) = env
                .init
                .operator(&info.uid)
                .and_then(|r| r.raw.get(&info.subtask_index))
            {
                info.guard(|| self.reader.restore_state(position))?;
            }
            info.guard(|| self.reader.open(&info))?;
            let result = self.run_loop(env);
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
