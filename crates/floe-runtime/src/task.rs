//! The loops that drive a task: one for a source chain, one for a chain fed
//! by input channels.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use floe_core::{
    Batch, CheckpointBarrier, CheckpointKind, StreamMessage, Watermark, WatermarkStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel::{CANCEL_POLL, GateEvent, InputChannel, InputGate};
use crate::checkpoint::{
    AlignmentAction, AlignmentMode, BarrierAligner, CheckpointNotification, OperatorSnapshot,
    OperatorState, TaskCommand, TaskEnvironment, TaskSnapshot,
};
use crate::context::TaskInfo;
use crate::error::{FailureCause, NonRecoverable, TaskError};
use crate::operator::Operator;
use crate::source::{PositionRedistribution, SourceReader, SourceStatus};
use crate::watermark::{SourceTimeUpdate, SplitWatermarks, ValveOutput, WatermarkValve};

/// A deployable task: a chain plus the loop that feeds it.
pub trait TaskDriver: Send {
    /// Runs the task to its end, its failure, or cancellation.
    fn run(self: Box<Self>, env: &TaskEnvironment) -> Result<(), TaskError>;
}

/// A task whose chain is fed by input channels.
pub struct InputTask<T> {
    gate: InputGate<T>,
    head: Box<dyn Operator<T>>,
    valve: WatermarkValve,
    info: TaskInfo,
    /// Highest checkpoint this task has snapshotted (or given up): its
    /// barriers arriving later on other channels need nothing more.
    last_started: u64,
    /// When the first barrier of the alignment in progress arrived.
    align_started: Option<Instant>,
    /// An unaligned snapshot waiting for its channel state.
    unaligned: Option<TaskSnapshot>,
}

impl<T: Send + Clone + Serialize + DeserializeOwned> InputTask<T> {
    /// A task reading `receivers` (local or remote input channels) into
    /// `head`.
    pub fn new<C: Into<InputChannel<T>>>(
        receivers: Vec<C>,
        head: Box<dyn Operator<T>>,
        info: TaskInfo,
    ) -> Self {
        let valve = WatermarkValve::new(receivers.len());
        InputTask {
            gate: InputGate::new(receivers),
            head,
            valve,
            info,
            last_started: 0,
            align_started: None,
            unaligned: None,
        }
    }

    /// Runs the synchronous part of the snapshot for `barrier` through the
    /// chain (which forwards the barrier downstream).
    fn snapshot(&mut self, barrier: CheckpointBarrier) -> Result<TaskSnapshot, TaskError> {
        let mut snapshot = TaskSnapshot::new(barrier);
        snapshot.alignment = self
            .align_started
            .take()
            .map_or(Duration::ZERO, |t| t.elapsed());
        let started = Instant::now();
        self.head.process_barrier(barrier, &mut snapshot)?;
        snapshot.sync = started.elapsed();
        self.last_started = barrier.id;
        Ok(snapshot)
    }

    /// Applies what the aligner decided.
    fn align(&mut self, action: AlignmentAction, env: &TaskEnvironment) -> Result<(), TaskError> {
        match action {
            AlignmentAction::Wait => {}
            AlignmentAction::Block(ch) => self.gate.block(ch),
            AlignmentAction::Superseded { block } => {
                self.align_started = Some(Instant::now());
                self.gate.unblock_all();
                if let Some(ch) = block {
                    self.gate.block(ch);
                }
            }
            AlignmentAction::Complete(barrier) => {
                let snapshot = self.snapshot(barrier)?;
                self.gate.unblock_all();
                env.submit(snapshot)?;
            }
        }
        Ok(())
    }

    /// Takes an unaligned snapshot now: the barrier overtakes what is in
    /// flight on the channels that have not delivered it (`delivered` have).
    fn start_unaligned(
        &mut self,
        barrier: CheckpointBarrier,
        delivered: &[usize],
        env: &TaskEnvironment,
    ) -> Result<(), TaskError> {
        if let Some(older) = self.unaligned.take() {
            // Still waiting for in-flight records of an older checkpoint:
            // give it up here; the coordinator subsumes or expires it.
            tracing::debug!(
                checkpoint = older.barrier.id,
                "unaligned checkpoint superseded before its channel state was complete"
            );
            self.gate.abort_recording();
        }
        let mut snapshot = self.snapshot(barrier)?;
        snapshot.unaligned = true;
        self.gate.unblock_all();
        self.gate.start_recording(barrier.id, delivered);
        self.unaligned = Some(snapshot);
        self.finish_unaligned(env)
    }

    /// Submits the unaligned snapshot once its channel state is complete.
    fn finish_unaligned(&mut self, env: &TaskEnvironment) -> Result<(), TaskError> {
        if self.unaligned.is_none() {
            return Ok(());
        }
        let Some(recording) = self.gate.take_complete_recording() else {
            return Ok(());
        };
        let mut snapshot = self.unaligned.take().expect("checked above");
        if !recording.batches.is_empty() {
            let encode = || {
                let mut bytes = postcard::to_allocvec(&recording.batches)?;
                // Timestamps follow the batches only when there are any,
                // so a recording without event time keeps the older format.
                if recording.timestamps.iter().any(|t| !t.is_empty()) {
                    bytes = postcard::to_extend(&recording.timestamps, bytes)?;
                }
                Ok::<_, postcard::Error>(bytes)
            };
            let bytes = encode().map_err(|e| {
                self.info.failure(FailureCause::Error(anyhow::anyhow!(
                    "cannot encode in-flight records for checkpoint {}: {e}",
                    snapshot.barrier.id
                )))
            })?;
            snapshot.channel_state = Some((self.info.uid.clone(), self.info.subtask_index, bytes));
        }
        env.submit(snapshot)
    }

    /// A barrier arrived on channel `ch`.
    fn on_barrier(
        &mut self,
        ch: usize,
        barrier: CheckpointBarrier,
        aligner: &mut BarrierAligner,
        env: &TaskEnvironment,
    ) -> Result<(), TaskError> {
        if barrier.id <= self.last_started {
            // Snapshotted already (unaligned: the gate accounted for it).
            return Ok(());
        }
        // Savepoints are always aligned.
        if env.alignment
            == (AlignmentMode::Unaligned {
                aligned_timeout: Duration::ZERO,
            })
            && !barrier.kind.is_savepoint()
        {
            return self.start_unaligned(barrier, &[ch], env);
        }
        if !aligner.in_progress() {
            self.align_started = Some(Instant::now());
        }
        let action = aligner.on_barrier(ch, barrier);
        self.align(action, env)
    }

    /// Aligned-checkpoint timeout: switches an alignment that has lasted
    /// too long to an unaligned snapshot. Returns how long until it would.
    fn check_alignment_timeout(
        &mut self,
        aligner: &mut BarrierAligner,
        env: &TaskEnvironment,
    ) -> Result<Option<Duration>, TaskError> {
        let AlignmentMode::Unaligned { aligned_timeout } = env.alignment else {
            return Ok(None);
        };
        let Some(started) = self.align_started.filter(|_| aligner.in_progress()) else {
            return Ok(None);
        };
        if aligner
            .current_barrier()
            .is_some_and(|b| b.kind.is_savepoint())
        {
            // Savepoints are always aligned.
            return Ok(None);
        }
        let elapsed = started.elapsed();
        if elapsed < aligned_timeout {
            return Ok(Some(aligned_timeout - elapsed));
        }
        let (barrier, pending) = aligner.abandon().expect("alignment in progress");
        let delivered: Vec<usize> = (0..self.gate.num_channels())
            .filter(|c| !pending.contains(c))
            .collect();
        tracing::debug!(
            checkpoint = barrier.id,
            "alignment exceeded {aligned_timeout:?}; switching to an unaligned checkpoint"
        );
        self.start_unaligned(barrier, &delivered, env)?;
        Ok(None)
    }

    /// Replays the in-flight records of the checkpoint this task restores
    /// from, before any new input.
    fn replay_channel_state(&mut self, env: &TaskEnvironment) -> Result<(), TaskError> {
        let Some(restore) = env.init.operator(&self.info.uid) else {
            return Ok(());
        };
        if let Some(old) = restore
            .channel
            .keys()
            .find(|s| **s >= self.info.parallelism)
        {
            return Err(self.info.failure(FailureCause::Error(
                NonRecoverable::new(format!(
                    "cannot restore at parallelism {}: the checkpoint holds in-flight records of subtask {old} (an unaligned checkpoint restores only at the parallelism it was taken with; take a savepoint or an aligned checkpoint to rescale)",
                    self.info.parallelism
                ))
                .into(),
            )));
        }
        let Some(bytes) = restore.channel.get(&self.info.subtask_index) else {
            return Ok(());
        };
        type Batches<T> = Vec<(u32, Vec<T>, Vec<floe_core::KeyGroup>)>;
        let decode = || {
            let (batches, rest) = postcard::take_from_bytes::<Batches<T>>(bytes)?;
            let timestamps: Vec<Vec<i64>> = if rest.is_empty() {
                Vec::new()
            } else {
                postcard::from_bytes(rest)?
            };
            Ok::<_, postcard::Error>((batches, timestamps))
        };
        let (batches, timestamps) = decode().map_err(|e| {
            self.info.failure(FailureCause::Error(
                NonRecoverable::new(format!(
                    "cannot decode the in-flight records of checkpoint {}: {e}",
                    env.init.restore.as_ref().map_or(0, |r| r.checkpoint_id)
                ))
                .into(),
            ))
        })?;
        let mut timestamps = timestamps.into_iter();
        for (_, records, key_groups) in batches {
            let timestamps = timestamps.next().unwrap_or_default();
            let mut batch = Batch {
                records,
                key_groups,
                timestamps,
            };
            self.head.process_batch(&mut batch)?;
        }
        Ok(())
    }
}

/// Passes what a watermark valve decided down the chain.
fn forward_time<T>(head: &mut dyn Operator<T>, out: ValveOutput) -> Result<(), TaskError> {
    match out {
        ValveOutput::Watermark(wm) => head.process_watermark(wm),
        ValveOutput::Status(status) => head.process_watermark_status(status),
    }
}

/// Passes checkpoint notifications that arrived since the last look down a
/// chain fed by input channels (only sources are triggered). True when the
/// job told its tasks to exit (after its final checkpoint, or a stop's
/// savepoint).
fn deliver_notifications<T>(
    head: &mut dyn Operator<T>,
    env: &TaskEnvironment,
) -> Result<bool, TaskError> {
    let Some(commands) = &env.commands else {
        return Ok(false);
    };
    while let Ok(cmd) = commands.try_recv() {
        match cmd {
            TaskCommand::Notify(n) => head.notify_checkpoint(n)?,
            TaskCommand::Terminate => return Ok(true),
            TaskCommand::TriggerCheckpoint(_) | TaskCommand::EndInput => {}
        }
    }
    Ok(false)
}

/// Answers the queryable-state queries waiting in the task's inbox (the
/// chain's keyed operators read their live state); called between batches.
#[inline]
fn serve_queries<T>(head: &mut dyn Operator<T>, env: &TaskEnvironment) {
    let Some(queries) = &env.queries else {
        return;
    };
    while let Ok(query) = queries.try_recv() {
        if let Some(unanswered) = head.query_state(query) {
            let name = unanswered.name.to_string();
            unanswered.answer(Err(crate::queryable::QueryError::Failed {
                name,
                reason: "no operator of the task it was routed to holds it".into(),
            }));
        }
    }
}

/// Waits, delivering checkpoint notifications, until the coordinator tells
/// the task to exit (`Ok`) or the job is cancelled.
fn await_termination<T>(
    head: &mut dyn Operator<T>,
    env: &TaskEnvironment,
) -> Result<(), TaskError> {
    let Some(commands) = &env.commands else {
        return Err(TaskError::Cancelled);
    };
    loop {
        if env.cancel.is_cancelled() {
            return Err(TaskError::Cancelled);
        }
        match commands.recv_timeout(CANCEL_POLL) {
            Ok(TaskCommand::Notify(n)) => head.notify_checkpoint(n)?,
            Ok(TaskCommand::Terminate) => return Ok(()),
            Ok(TaskCommand::TriggerCheckpoint(_) | TaskCommand::EndInput) => {}
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(TaskError::Cancelled);
            }
        }
    }
}

impl<T: Send + Clone + Serialize + DeserializeOwned> TaskDriver for InputTask<T> {
    fn run(mut self: Box<Self>, env: &TaskEnvironment) -> Result<(), TaskError> {
        let info = self.info.clone();
        let mut aligner = BarrierAligner::new(self.gate.num_channels(), env.alignment);
        info.guard_task(|| {
            self.head.open(&env.init)?;
            self.replay_channel_state(env)?;
            let mut finished = false;
            loop {
                if env.cancel.is_cancelled() {
                    return Err(TaskError::Cancelled);
                }
                if deliver_notifications(self.head.as_mut(), env)? {
                    // Finished, or stopped with a savepoint (no end-of-input
                    // flush then, as in Flink's stop without drain).
                    return Ok(());
                }
                serve_queries(self.head.as_mut(), env);
                // A finished chain gets no more processing time (Flink
                // quiesces the timer service before `finish`): its timers
                // would emit after the end of its output.
                if !finished && let Some(now) = env.init.time.take_due() {
                    self.head.on_processing_time(now)?;
                }
                let deadline = self.check_alignment_timeout(&mut aligner, env)?;
                let event = match self.gate.poll() {
                    // An upstream task exited without an end of input: the
                    // job is being cancelled (the flag follows), or a stop's
                    // savepoint completed and every task is told to exit —
                    // then this task's commit notification and its own
                    // termination are on their way and must not be lost.
                    Err(TaskError::Cancelled) if !env.cancel.is_cancelled() => {
                        return await_termination(self.head.as_mut(), env);
                    }
                    event => event?,
                };
                match event {
                    GateEvent::Message(_, StreamMessage::Records(mut batch)) => {
                        self.head.process_batch(&mut batch)?
                    }
                    GateEvent::Message(ch, StreamMessage::Watermark(wm)) => {
                        let head = &mut self.head;
                        self.valve
                            .on_watermark(ch, wm, |o| forward_time(head.as_mut(), o))?;
                    }
                    GateEvent::Message(ch, StreamMessage::WatermarkStatus(status)) => {
                        let head = &mut self.head;
                        self.valve
                            .on_status(ch, status, |o| forward_time(head.as_mut(), o))?;
                    }
                    GateEvent::Message(ch, StreamMessage::Barrier(b)) if self.gate.is_ended(ch) => {
                        // A checkpoint taken after this channel ended: it
                        // counts as delivered, unless every channel ended —
                        // then all input is in the state, so snapshot now.
                        if self.gate.all_ended() && b.id > self.last_started {
                            let snapshot = self.snapshot(b)?;
                            env.submit(snapshot)?;
                        }
                    }
                    GateEvent::Message(ch, StreamMessage::Barrier(b)) => {
                        self.on_barrier(ch, b, &mut aligner, env)?;
                    }
                    GateEvent::Message(ch, StreamMessage::EndOfInput) => {
                        let head = &mut self.head;
                        self.valve.on_end(ch, |o| forward_time(head.as_mut(), o))?;
                        let action = aligner.on_end(ch);
                        self.align(action, env)?;
                    }
                    GateEvent::Idle => {
                        self.head.flush()?;
                        let wait = deadline.map_or(CANCEL_POLL, |d| d.min(CANCEL_POLL));
                        let wait = if finished {
                            wait
                        } else {
                            env.init.time.wait_bound(wait)
                        };
                        let idle = Instant::now();
                        self.gate.wait(wait, env.queries.as_ref());
                        if let Some(times) = &env.times {
                            times.add_idle(idle.elapsed());
                        }
                    }
                    GateEvent::Ended => {
                        self.finish_unaligned(env)?;
                        self.head.finish()?;
                        if !env.awaits_final_checkpoint() {
                            return Ok(());
                        }
                        // Stay for the checkpoints still to come (the
                        // job's final one commits what sinks hold).
                        if !finished {
                            env.report_finished();
                        }
                        finished = true;
                    }
                }
                self.finish_unaligned(env)?;
            }
        })
    }
}

/// Why a source stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopEnd {
    /// The input is over (or was ended by a stop with drain).
    InputEnded,
    /// The job told its tasks to exit (a stop's savepoint completed).
    Terminated,
}

/// A task whose chain is fed by a source reader.
pub struct SourceTask<T> {
    reader: Box<dyn SourceReader<T>>,
    head: Box<dyn Operator<T>>,
    info: TaskInfo,
    batch_size: usize,
    /// Event time per split, when the source has a watermark strategy.
    event_time: Option<SplitWatermarks<T>>,
    /// Processing time of the next periodic watermark emission.
    next_emit_ms: i64,
    finished_splits: Vec<crate::watermark::SplitId>,
}

impl<T: Send + 'static> SourceTask<T> {
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
            event_time: None,
            next_emit_ms: i64::MAX,
            finished_splits: Vec::new(),
        }
    }

    /// Stamps records and generates watermarks per split with `strategy`
    /// (Flink's `fromSource(source, strategy, name)`).
    pub fn with_watermarks(mut self, strategy: crate::watermark::WatermarkStrategy<T>) -> Self {
        self.event_time = Some(SplitWatermarks::new(strategy));
        self
    }

    /// Stamps the batch just polled, lets its split's generator see it,
    /// and hands it down the chain with what its split's event time
    /// decided: an idle source becomes active before the records, a
    /// watermark a generator emitted on them follows them.
    fn emit_polled(
        &mut self,
        batch: &mut Batch<T>,
        env: &TaskEnvironment,
    ) -> Result<(), TaskError> {
        let Some(et) = &mut self.event_time else {
            if !batch.is_empty() {
                self.head.process_batch(batch)?;
            }
            return Ok(());
        };
        let mut update = SourceTimeUpdate::default();
        if !batch.is_empty() {
            let now = env.init.time.now_ms();
            let split = self.reader.current_split();
            let native = self.reader.record_timestamps();
            update = et.on_records_with_timestamps(
                split,
                &batch.records,
                native,
                &mut batch.timestamps,
                now,
            );
        }
        self.reader.finished_splits(&mut self.finished_splits);
        for id in self.finished_splits.drain(..) {
            et.finish_split(id);
        }
        if let Some(WatermarkStatus::Active) = update.status {
            self.head
                .process_watermark_status(WatermarkStatus::Active)?;
        }
        if !batch.is_empty() {
            self.head.process_batch(batch)?;
        }
        if let Some(wm) = update.watermark {
            self.head.process_watermark(wm)?;
        }
        Ok(())
    }

    /// The periodic watermark emission, when it is due.
    fn emit_periodic(&mut self, now_ms: i64, env: &TaskEnvironment) -> Result<(), TaskError> {
        let Some(et) = &mut self.event_time else {
            return Ok(());
        };
        if now_ms < self.next_emit_ms {
            env.init.time.request_wakeup(self.next_emit_ms);
            return Ok(());
        }
        let update = et.on_periodic_emit(now_ms);
        self.next_emit_ms = now_ms.saturating_add(env.init.auto_watermark_interval_ms());
        env.init.time.request_wakeup(self.next_emit_ms);
        if let Some(WatermarkStatus::Active) = update.status {
            self.head
                .process_watermark_status(WatermarkStatus::Active)?;
        }
        if let Some(wm) = update.watermark {
            self.head.process_watermark(wm)?;
        }
        if let Some(WatermarkStatus::Idle) = update.status {
            self.head.process_watermark_status(WatermarkStatus::Idle)?;
        }
        Ok(())
    }

    /// Processing time reached a wake-up: the periodic emission, then the
    /// chain's own timers.
    fn on_processing_time(&mut self, env: &TaskEnvironment) -> Result<(), TaskError> {
        if let Some(now) = env.init.time.take_due() {
            self.emit_periodic(now, env)?;
            self.head.on_processing_time(now)?;
        }
        Ok(())
    }
}

impl<T: Send + 'static> SourceTask<T> {
    /// Injects a barrier: the reader's position is this operator's part of
    /// the snapshot, then the barrier runs down the chain. `end` is the
    /// position at the end of the input, once the reader finished.
    fn checkpoint(
        &mut self,
        barrier: CheckpointBarrier,
        end: Option<&[u8]>,
        env: &TaskEnvironment,
    ) -> Result<(), TaskError> {
        let info = &self.info;
        let reader = &mut self.reader;
        let started = Instant::now();
        let position = match end {
            Some(p) => p.to_vec(),
            None => info.guard(|| reader.snapshot_checkpoint(barrier.id))?,
        };
        let mut snapshot = TaskSnapshot::new(barrier);
        snapshot.operators.push(OperatorSnapshot {
            uid: info.uid.clone(),
            subtask: info.subtask_index,
            state: OperatorState::Raw(position),
        });
        self.head.process_barrier(barrier, &mut snapshot)?;
        snapshot.sync = started.elapsed();
        env.submit(snapshot)
    }

    /// A checkpoint notification while the reader is open: the chain
    /// first (a sink's commit), then the reader (Flink notifies operators
    /// of a task in the same order).
    fn notify(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        self.head.notify_checkpoint(n)?;
        if let CheckpointNotification::Complete(id) = n {
            let reader = &mut self.reader;
            self.info.guard(|| reader.notify_checkpoint_complete(id))?;
        }
        Ok(())
    }

    /// Handles the commands that arrived since the last poll; `Some` when
    /// the source must stop reading.
    fn handle_commands(&mut self, env: &TaskEnvironment) -> Result<Option<LoopEnd>, TaskError> {
        let Some(commands) = &env.commands else {
            return Ok(None);
        };
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                TaskCommand::TriggerCheckpoint(barrier) => {
                    self.checkpoint(barrier, None, env)?;
                    if barrier.kind == CheckpointKind::StopSavepoint
                        && let Some(end) = self.suspend(barrier.id, commands, env)?
                    {
                        return Ok(Some(end));
                    }
                }
                TaskCommand::Notify(n) => self.notify(n)?,
                TaskCommand::Terminate => return Ok(Some(LoopEnd::Terminated)),
                TaskCommand::EndInput => return Ok(Some(LoopEnd::InputEnded)),
            }
        }
        Ok(None)
    }

    /// After injecting the barrier of a stop's savepoint: emits nothing
    /// more until the savepoint completed (the job then terminates) or
    /// failed (reading resumes, as the job goes on).
    fn suspend(
        &mut self,
        savepoint: u64,
        commands: &Receiver<TaskCommand>,
        env: &TaskEnvironment,
    ) -> Result<Option<LoopEnd>, TaskError> {
        loop {
            if env.cancel.is_cancelled() {
                return Err(TaskError::Cancelled);
            }
            match commands.recv_timeout(CANCEL_POLL) {
                Ok(TaskCommand::TriggerCheckpoint(b)) => self.checkpoint(b, None, env)?,
                Ok(TaskCommand::Notify(n)) => {
                    self.notify(n)?;
                    if n == CheckpointNotification::Aborted(savepoint) {
                        tracing::info!(
                            checkpoint = savepoint,
                            "stop with savepoint failed; the source resumes"
                        );
                        return Ok(None);
                    }
                }
                Ok(TaskCommand::Terminate) => return Ok(Some(LoopEnd::Terminated)),
                Ok(TaskCommand::EndInput) => return Ok(Some(LoopEnd::InputEnded)),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(TaskError::Cancelled);
                }
            }
        }
    }

    /// After the input ended: takes part in checkpoints (at the end
    /// position) until the job's final checkpoint completed.
    fn await_final_checkpoint(
        &mut self,
        end: Vec<u8>,
        env: &TaskEnvironment,
    ) -> Result<(), TaskError> {
        let Some(commands) = env.commands.clone() else {
            return Ok(());
        };
        env.report_finished();
        loop {
            if env.cancel.is_cancelled() {
                return Err(TaskError::Cancelled);
            }
            match commands.recv_timeout(CANCEL_POLL) {
                Ok(TaskCommand::TriggerCheckpoint(b)) => self.checkpoint(b, Some(&end), env)?,
                Ok(TaskCommand::Notify(n)) => self.head.notify_checkpoint(n)?,
                Ok(TaskCommand::Terminate) => return Ok(()),
                Ok(TaskCommand::EndInput) => {}
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(TaskError::Cancelled);
                }
            }
        }
    }

    fn run_loop(&mut self, env: &TaskEnvironment) -> Result<LoopEnd, TaskError> {
        let mut batch = Batch::with_capacity(self.batch_size, false);
        loop {
            if env.cancel.is_cancelled() {
                return Err(TaskError::Cancelled);
            }
            if let Some(end) = self.handle_commands(env)? {
                return Ok(end);
            }
            self.on_processing_time(env)?;
            let (reader, info, max) = (&mut self.reader, &self.info, self.batch_size);
            let status = info.guard(|| reader.poll_next(&mut batch.records, max))?;
            self.emit_polled(&mut batch, env)?;
            match status {
                SourceStatus::MoreAvailable => {}
                SourceStatus::NothingAvailable => self.head.flush()?,
                SourceStatus::Finished => return Ok(LoopEnd::InputEnded),
            }
        }
    }
}

impl<T: Send + 'static> TaskDriver for SourceTask<T> {
    fn run(mut self: Box<Self>, env: &TaskEnvironment) -> Result<(), TaskError> {
        let info = self.info.clone();
        info.guard_task(|| {
            self.head.open(&env.init)?;
            if let Some(restore) = env.init.operator(&info.uid) {
                // The positions of the old subtasks this one takes over:
                // all of them for a reader that picks its own splits.
                let union = self.reader.position_redistribution() == PositionRedistribution::Union;
                let mut old: Vec<(u32, &Vec<u8>)> = restore
                    .raw
                    .iter()
                    .filter(|(s, _)| union || **s % info.parallelism == info.subtask_index)
                    .map(|(s, p)| (*s, p.as_ref()))
                    .collect();
                old.sort_by_key(|(s, _)| *s);
                let positions = old.into_iter().map(|(_, p)| p.clone()).collect();
                info.guard(|| self.reader.restore_splits(positions))?;
            }
            info.guard(|| self.reader.open(&info))?;
            if self.event_time.is_some() {
                // The first emission at once, then one per interval.
                self.next_emit_ms = env.init.time.now_ms();
                env.init.time.request_wakeup(self.next_emit_ms);
            }
            let result = self.run_loop(env);
            let end = match &result {
                Ok(LoopEnd::InputEnded) if env.awaits_final_checkpoint() => {
                    Some(info.guard(|| self.reader.snapshot_state())?)
                }
                _ => None,
            };
            let closed = info.guard(|| self.reader.close());
            let how = result?;
            closed?;
            if how == LoopEnd::Terminated {
                // Stopped with a savepoint: no end-of-input flush.
                return Ok(());
            }
            // The end of the input is the end of event time: every
            // event-time timer and window downstream fires (Flink's
            // MAX_WATERMARK, also sent by a stop with drain).
            self.head.process_watermark(Watermark::MAX)?;
            self.head.finish()?;
            match end {
                Some(end) => self.await_final_checkpoint(end, env),
                None => Ok(()),
            }
        })
    }
}
