//! The sending side of one channel: credit, backlog, and the task's sink.
//!
//! A sending task may put a frame on the connection only with a credit
//! from the receiver. Without one, the frame waits on its own channel
//! (up to `send_backlog_frames`, announced as the backlog) and then the
//! task blocks on its own channel's condition variable. Nothing here
//! touches the connection or another channel while waiting, so a channel
//! without credit never holds back the frames of the others.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use floe_runtime::TaskError;
use floe_runtime::channel::{CANCEL_POLL, CancelFlag};
use floe_runtime::remote::FrameSink;

use crate::error::ConnectionError;
use crate::out_queue::OutQueue;
use crate::wire::ChannelKey;

/// Why a sending channel closed.
#[derive(Debug, Clone)]
pub(crate) enum Closed {
    /// The job attempt was released (cancelled, failed or superseded).
    Released,
    /// The connection failed.
    ConnectionLost(ConnectionError),
}

struct SendState {
    /// Frames the receiver has room for.
    credit: u32,
    /// Frames handed over without credit, oldest first.
    backlog: VecDeque<Vec<u8>>,
    /// Emptied backlog buffers, reused for later frames.
    spare: Vec<Vec<u8>>,
    /// A task is blocked in `send`.
    waiting: bool,
    /// A sink was handed out (a second one is refused).
    attached: bool,
    closed: Option<Closed>,
}

/// One channel this TaskManager sends on. Created by whichever comes
/// first: the local task asking for its sink, or the receiver's first
/// credit (the receiver may be deployed before the sender).
pub(crate) struct OutboundChannel {
    key: ChannelKey,
    state: Mutex<SendState>,
    credit_arrived: Condvar,
    out: Arc<OutQueue>,
    backlog_limit: usize,
}

impl OutboundChannel {
    pub(crate) fn new(key: ChannelKey, out: Arc<OutQueue>, backlog_limit: usize) -> Arc<Self> {
        Arc::new(OutboundChannel {
            key,
            state: Mutex::new(SendState {
                credit: 0,
                backlog: VecDeque::new(),
                spare: Vec::new(),
                waiting: false,
                attached: false,
                closed: None,
            }),
            credit_arrived: Condvar::new(),
            out,
            backlog_limit,
        })
    }

    /// Marks the channel as having its sink; false if it already had one.
    pub(crate) fn attach(&self) -> bool {
        let mut st = self.state.lock().expect("send lock");
        !std::mem::replace(&mut st.attached, true)
    }

    /// Adds `n` credits from the receiver: backlogged frames go out first,
    /// in order, then a blocked task is woken.
    pub(crate) fn grant(&self, n: u32) {
        let mut st = self.state.lock().expect("send lock");
        if st.closed.is_some() {
            return;
        }
        st.credit = st.credit.saturating_add(n);
        while st.credit > 0 {
            let Some(frame) = st.backlog.pop_front() else {
                break;
            };
            st.credit -= 1;
            let behind = st.backlog.len() as u32;
            self.out.push_data(&self.key, behind, &frame);
            st.spare.push(frame);
        }
        if st.waiting {
            self.credit_arrived.notify_all();
        }
    }

    /// Fails every present and future `send` of the channel.
    pub(crate) fn close(&self, why: Closed) {
        let mut st = self.state.lock().expect("send lock");
        if st.closed.is_none() {
            st.closed = Some(why);
        }
        st.backlog.clear();
        st.spare.clear();
        self.credit_arrived.notify_all();
    }

    fn send(&self, frame: &[u8], cancel: &CancelFlag) -> Result<(), TaskError> {
        let mut st = self.state.lock().expect("send lock");
        loop {
            if let Some(why) = &st.closed {
                match why {
                    Closed::Released => {
                        tracing::debug!(channel = %self.key, "send on a released channel");
                    }
                    Closed::ConnectionLost(reason) => {
                        tracing::debug!(channel = %self.key, %reason, "send on a lost connection");
                    }
                }
                return Err(TaskError::Cancelled);
            }
            if st.credit > 0 && st.backlog.is_empty() {
                st.credit -= 1;
                drop(st);
                // Only this task adds to the backlog, and it is empty, so
                // no frame of this channel can overtake this one.
                self.out.push_data(&self.key, 0, frame);
                return Ok(());
            }
            if st.backlog.len() < self.backlog_limit {
                let mut held = st.spare.pop().unwrap_or_default();
                held.clear();
                held.extend_from_slice(frame);
                st.backlog.push_back(held);
                return Ok(());
            }
            if cancel.is_cancelled() {
                return Err(TaskError::Cancelled);
            }
            st.waiting = true;
            st = self
                .credit_arrived
                .wait_timeout(st, CANCEL_POLL)
                .expect("send lock")
                .0;
            st.waiting = false;
        }
    }
}

/// The [`FrameSink`] a sending task writes its channel's frames to.
pub(crate) struct NetworkSink(pub(crate) Arc<OutboundChannel>);

impl FrameSink for NetworkSink {
    #[inline]
    fn send(&mut self, frame: &[u8], cancel: &CancelFlag) -> Result<(), TaskError> {
        self.0.send(frame, cancel)
    }
}
