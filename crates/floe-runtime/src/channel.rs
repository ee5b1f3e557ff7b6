//! Channels between tasks.
//!
//! Every pair of (upstream subtask, downstream subtask) on an exchange gets
//! its own bounded channel of batches. A full channel blocks its sender, so a
//! slow consumer backpressures its producers and memory stays bounded by
//! `capacity × batch size` per channel. Per-pair channels also let a receiver
//! tell its inputs apart, which barrier alignment needs.
//!
//! The sending side is the [`OutputChannel`] trait so a network channel can
//! replace the local one; the receiving side is always a local receiver (a
//! network input would be a reader thread feeding one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
        loop {
            if cancel.is_cancelled() {
                return Err(TaskError::Cancelled);
            }
            match self.0.send_timeout(msg, CANCEL_POLL) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(m)) => msg = m,
                Err(SendTimeoutError::Disconnected(_)) => return Err(TaskError::Cancelled),
            }
        }
    }
}

/// A bounded in-process channel holding at most `capacity` messages.
pub fn local_channel<T: Send>(
    capacity: usize,
) -> (LocalOutputChannel<T>, Receiver<StreamMessage<T>>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    (LocalOutputChannel(tx), rx)
}

/// What an input gate produced.
pub enum GateEvent<T> {
    /// A message from input channel `channel`.
    Message(usize, StreamMessage<T>),
    /// Nothing is available right now; the caller may flush before waiting.
    Idle,
    /// Every input channel has delivered its end of input.
    Ended,
}

/// All input channels of one subtask, read fairly.
pub struct InputGate<T> {
    receivers: Vec<Receiver<StreamMessage<T>>>,
    ended: Vec<bool>,
    /// Channels held back during barrier alignment.
    blocked: Vec<bool>,
    open_channels: usize,
    next: usize,
}

impl<T: Send> InputGate<T> {
    /// A gate over `receivers`.
    pub fn new(receivers: Vec<Receiver<StreamMessage<T>>>) -> Self {
        let n = receivers.len();
        InputGate {
            receivers,
            ended: vec![false; n],
            blocked: vec![false; n],
            open_channels: n,
            next: 0,
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

    /// The next available message without blocking, round-robin over the
    /// channels that have not ended.
    pub fn poll(&mut self) -> Result<GateEvent<T>, TaskError> {
        if self.open_channels == 0 {
            return Ok(GateEvent::Ended);
        }
        let n = self.receivers.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.ended[i] || self.blocked[i] {
                continue;
            }
            match self.receivers[i].try_recv() {
                Ok(msg) => {
                    if matches!(msg, StreamMessage::EndOfInput) {
                        self.ended[i] = true;
                        self.open_channels -= 1;
                    }
                    self.next = i + 1;
                    return Ok(GateEvent::Message(i, msg));
                }
                Err(TryRecvError::Empty) => {}
                // The sender vanished without an end of input: it failed or
                // was cancelled.
                Err(TryRecvError::Disconnected) => return Err(TaskError::Cancelled),
            }
        }
        Ok(GateEvent::Idle)
    }

    /// Blocks until some open channel has a message or `timeout` passes.
    pub fn wait(&mut self, timeout: Duration) {
        let open: Vec<usize> = (0..self.receivers.len())
            .filter(|i| !self.ended[*i] && !self.blocked[*i])
            .collect();
        match open.as_slice() {
            [] => {}
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
