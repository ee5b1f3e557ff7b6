//! Channels between tasks.
//!
//! Every pair of (upstream subtask, downstream subtask) on an exchange gets
//! its own bounded channel of batches. A full channel blocks its sender, so a
//! slow consumer backpressures its producers and memory stays bounded by
//! `capacity × batch size` per channel. Per-pair channels also let a receiver
//! tell its inputs apart, which barrier alignment needs.
//!
//! The sending side is the [`OutputChannel`] trait so a network channel can
//! replace the local one; the receiving side is always a local receiver,
//! an [`InputChannel`]: a network input is the network stack feeding one,
//! told through [`CreditReturn`] each time the task takes a message off it
//! (`remote.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TryRecvError};
use floe_core::StreamMessage;

use crate::error::TaskError;

/// How often a blocked task re-checks whether its job was cancelled.
pub const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Shared by all tasks of a job; set once to cancel them all.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every task to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once cancelled.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The sending end of a channel to one downstream subtask.
pub trait OutputChannel<T>: Send {
    /// Sends one message, blocking while the channel is full (backpressure);
    /// gives up with [`TaskError::Cancelled`] when the job is cancelled or the
    /// receiver is gone.
    fn send(&mut self, msg: StreamMessage<T>, cancel: &CancelFlag) -> Result<(), TaskError>;
}

/// An in-process channel.
pub struct LocalOutputChannel<T>(Sender<StreamMessage<T>>);

impl<T: Send> OutputChannel<T> for LocalOutputChannel<T> {
    #[inline]
    fn send(&mut self, msg: StreamMessage<T>, cancel: &CancelFlag) -> Result<(), TaskError> {
        let mut msg = match self.0.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(crossbeam_channel::TrySendError::Full(m)) => m,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                return Err(TaskError::Cancelled);
            }
        };
        // Full: the task is back-pressured until the send goes through.
        let blocked = Instant::now();
        let result = loop {
            if cancel.is_cancelled() {
                break Err(TaskError::Cancelled);
            }
            match self.0.send_timeout(msg, CANCEL_POLL) {
                Ok(()) => break Ok(()),
                Err(SendTimeoutError::Timeout(m)) => msg = m,
                Err(SendTimeoutError::Disconnected(_)) => break Err(TaskError::Cancelled),
            }
        };
        crate::metrics::record_back_pressure(blocked.elapsed());
        result
    }
}

/// A bounded in-process channel holding at most `capacity` messages.
pub fn local_channel<T: Send>(
    capacity: usize,
) -> (LocalOutputChannel<T>, Receiver<StreamMessage<T>>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    (LocalOutputChannel(tx), rx)
}

/// How a receiving task tells the network stack it took one message off a
/// remote channel, so the sender may send one more (credit-based flow
/// control: see `remote.rs`).
pub trait CreditReturn: Send + Sync {
    /// One message was consumed.
    fn consumed(&self);
}

/// The receiving end of one input channel: local, or fed by the network
/// stack, which is given a credit back for every message taken off it.
pub struct InputChannel<T> {
    rx: Receiver<StreamMessage<T>>,
    credits: Option<Arc<dyn CreditReturn>>,
}

impl<T> InputChannel<T> {
    /// A channel from another process whose consumption `credits` hears of.
    pub fn remote(rx: Receiver<StreamMessage<T>>, credits: Arc<dyn CreditReturn>) -> Self {
        InputChannel {
            rx,
            credits: Some(credits),
        }
    }
}

impl<T> From<Receiver<StreamMessage<T>>> for InputChannel<T> {
    fn from(rx: Receiver<StreamMessage<T>>) -> Self {
        InputChannel { rx, credits: None }
    }
}

/// What an input gate produced.
pub enum GateEvent<T> {
    /// A message from input channel `channel`.
    Message(usize, StreamMessage<T>),
    /// Nothing is available right now; the caller may flush before waiting.
    Idle,
    /// Every input channel has delivered its end of input (reported once;
    /// ended channels are still read for the barriers of checkpoints taken
    /// after the end, until their senders go away).
    Ended,
}

/// The in-flight records an unaligned checkpoint persists: everything that
/// left a channel after the task took its snapshot and before that
/// channel's barrier arrived, per channel in arrival order.
pub struct ChannelRecording<T> {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// Channels whose barrier has not arrived yet.
    pending: Vec<bool>,
    /// `(channel, records, key groups)` batches in arrival order.
    pub batches: Vec<(u32, Vec<T>, Vec<floe_core::KeyGroup>)>,
    /// Each batch's timestamps (parallel to `batches`; empty vectors on a
    /// stream without event time). Kept apart from `batches` so the bytes
    /// of a recording without timestamps are those of the format before
    /// event time, and older checkpoints decode unchanged.
    pub timestamps: Vec<Vec<i64>>,
}

impl<T: Clone> ChannelRecording<T> {
    /// Accounts for a message taken off channel `ch`.
    fn record(&mut self, ch: usize, msg: &StreamMessage<T>) {
        if !self.pending[ch] {
            return;
        }
        match msg {
            StreamMessage::Records(b) => {
                self.batches
                    .push((ch as u32, b.records.clone(), b.key_groups.clone()));
                self.timestamps.push(b.timestamps.clone());
            }
            StreamMessage::Barrier(b) if b.id >= self.checkpoint_id => self.pending[ch] = false,
            StreamMessage::EndOfInput => self.pending[ch] = false,
            _ => {}
        }
    }

    fn is_complete(&self) -> bool {
        !self.pending.iter().any(|p| *p)
    }
}

/// All input channels of one subtask, read fairly.
pub struct InputGate<T> {
    receivers: Vec<Receiver<StreamMessage<T>>>,
    /// Per channel, whom to tell of each message taken (remote channels).
    credits: Vec<Option<Arc<dyn CreditReturn>>>,
    /// Messages an unaligned checkpoint took off a channel ahead of
    /// processing (they were already recorded); served before the channel.
    overtaken: Vec<VecDeque<StreamMessage<T>>>,
    ended: Vec<bool>,
    /// Ended channels whose sender is gone.
    gone: Vec<bool>,
    end_reported: bool,
    /// Channels held back during barrier alignment.
    blocked: Vec<bool>,
    open_channels: usize,
    next: usize,
    recording: Option<ChannelRecording<T>>,
}

impl<T: Send + Clone> InputGate<T> {
    /// A gate over `channels`.
    pub fn new<C: Into<InputChannel<T>>>(channels: Vec<C>) -> Self {
        let n = channels.len();
        let (receivers, credits) = channels
            .into_iter()
            .map(|c| {
                let c = c.into();
                (c.rx, c.credits)
            })
            .unzip();
        InputGate {
            receivers,
            credits,
            overtaken: (0..n).map(|_| VecDeque::new()).collect(),
            ended: vec![false; n],
            gone: vec![false; n],
            end_reported: false,
            blocked: vec![false; n],
            open_channels: n,
            next: 0,
            recording: None,
        }
    }

    /// Stops reading channel `ch` until [`InputGate::unblock_all`].
    pub fn block(&mut self, ch: usize) {
        self.blocked[ch] = true;
    }

    /// Reads every channel again.
    pub fn unblock_all(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    /// Number of input channels.
    pub fn num_channels(&self) -> usize {
        self.receivers.len()
    }

    /// True once channel `ch` delivered its end of input.
    pub fn is_ended(&self, ch: usize) -> bool {
        self.ended[ch]
    }

    /// True once every channel delivered its end of input.
    pub fn all_ended(&self) -> bool {
        self.open_channels == 0
    }

    /// Starts persisting the in-flight records of checkpoint
    /// `checkpoint_id` on every channel that has neither ended nor
    /// delivered its barrier (`delivered`), and lets the barrier overtake
    /// them: what those channels hold right now is taken off them at once
    /// (recorded, and processed later in order), so the checkpoint does not
    /// wait for a backlog to be processed.
    pub fn start_recording(&mut self, checkpoint_id: u64, delivered: &[usize]) {
        let pending: Vec<bool> = (0..self.receivers.len())
            .map(|i| !self.ended[i] && !delivered.contains(&i))
            .collect();
        let mut rec = ChannelRecording {
            checkpoint_id,
            pending,
            batches: Vec::new(),
            timestamps: Vec::new(),
        };
        for ch in 0..self.receivers.len() {
            while rec.pending[ch] {
                match self.receivers[ch].try_recv() {
                    Ok(msg) => {
                        if let Some(c) = &self.credits[ch] {
                            c.consumed();
                        }
                        rec.record(ch, &msg);
                        self.overtaken[ch].push_back(msg);
                    }
                    Err(_) => break,
                }
            }
        }
        self.recording = Some(rec);
    }

    /// The finished recording once every channel delivered its barrier.
    pub fn take_complete_recording(&mut self) -> Option<ChannelRecording<T>> {
        if self.recording.as_ref()?.is_complete() {
            return self.recording.take();
        }
        None
    }

    /// Drops the recording in progress (a newer checkpoint superseded it).
    pub fn abort_recording(&mut self) {
        self.recording = None;
    }

    /// Takes the next message of channel `ch`, if any.
    #[inline]
    fn fetch(&mut self, ch: usize) -> Result<Option<StreamMessage<T>>, TaskError> {
        if let Some(msg) = self.overtaken[ch].pop_front() {
            return Ok(Some(msg));
        }
        match self.receivers[ch].try_recv() {
            Ok(msg) => {
                if let Some(c) = &self.credits[ch] {
                    c.consumed();
                }
                if let Some(rec) = &mut self.recording {
                    rec.record(ch, &msg);
                }
                Ok(Some(msg))
            }
            Err(TryRecvError::Empty) => Ok(None),
            // After its end of input a sender may leave (its job ended).
            Err(TryRecvError::Disconnected) if self.ended[ch] => {
                self.gone[ch] = true;
                Ok(None)
            }
            // The sender vanished without an end of input: it failed or
            // was cancelled.
            Err(TryRecvError::Disconnected) => Err(TaskError::Cancelled),
        }
    }

    /// The next available message without blocking, round-robin over the
    /// channels (ended ones still deliver barriers).
    pub fn poll(&mut self) -> Result<GateEvent<T>, TaskError> {
        if self.open_channels == 0 && !self.end_reported {
            self.end_reported = true;
            return Ok(GateEvent::Ended);
        }
        let n = self.receivers.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.gone[i] || self.blocked[i] {
                continue;
            }
            if let Some(msg) = self.fetch(i)? {
                if matches!(msg, StreamMessage::EndOfInput) {
                    self.ended[i] = true;
                    self.open_channels -= 1;
                }
                self.next = i + 1;
                return Ok(GateEvent::Message(i, msg));
            }
        }
        Ok(GateEvent::Idle)
    }

    /// Blocks until some open channel has a message, `also` (the task's
    /// query inbox) has one, or `timeout` passes.
    pub fn wait<Q>(&mut self, timeout: Duration, also: Option<&Receiver<Q>>) {
        let open: Vec<usize> = (0..self.receivers.len())
            .filter(|i| !self.gone[*i] && !self.blocked[*i])
            .collect();
        if open.iter().any(|i| !self.overtaken[*i].is_empty()) {
            return;
        }
        if let Some(also) = also {
            if !also.is_empty() {
                return;
            }
            let mut sel = crossbeam_channel::Select::new();
            for i in &open {
                sel.recv(&self.receivers[*i]);
            }
            sel.recv(also);
            let _ = sel.ready_timeout(timeout);
            return;
        }
        match open.as_slice() {
            [] => std::thread::sleep(timeout.min(CANCEL_POLL)),
            [i] => {
                // Single input: a plain blocking peek is cheaper than a select.
                let rx = &self.receivers[*i];
                if rx.is_empty() {
                    let mut sel = crossbeam_channel::Select::new();
                    sel.recv(rx);
                    let _ = sel.ready_timeout(timeout);
                }
            }
            many => {
                let mut sel = crossbeam_channel::Select::new();
                for i in many {
                    sel.recv(&self.receivers[*i]);
                }
                let _ = sel.ready_timeout(timeout);
            }
        }
    }
}
