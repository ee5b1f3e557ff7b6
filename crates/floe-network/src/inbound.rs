//! The receiving side of one channel: credit accounting and announcement.
//!
//! The receiver grants one credit per free slot of the task's local
//! channel, so the connection's reader can always hand a frame over
//! without waiting for the task. Credits come back as the task consumes
//! ([`CreditReturn::consumed`], one atomic add on the task's thread) and
//! are announced in batches of a quarter of the capacity: a credit message
//! per consumed frame would cost as much as the frames on a busy channel.
//! A batch never starves the task: frames held + credits gathered + credits
//! in flight always add up to the capacity, so when the sender has no
//! credit left the task still holds at least three quarters of its
//! capacity in frames. When it is draining faster than that (its queue
//! below half) and a frame arrives whose sender reports a backlog (frames
//! held back for lack of credit), the gathered credits go out at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

use floe_runtime::remote::{CreditReturn, FrameHandler};

use crate::error::ConnectionError;
use crate::out_queue::OutQueue;
use crate::wire::ChannelKey;

/// Credit state shared by the connection's reader and the receiving task.
pub(crate) struct InboundCredits {
    key: ChannelKey,
    /// Consumed frames whose credit has not been announced yet.
    unannounced: AtomicU32,
    /// Credits granted whose frames have not arrived yet.
    in_flight: AtomicU32,
    /// Announce once this many credits gathered.
    batch: u32,
    /// Frames the task's channel holds.
    capacity: u32,
    /// Set when the channel is released: its credits go nowhere.
    released: AtomicBool,
    out: Arc<OutQueue>,
}

impl InboundCredits {
    /// A channel of `capacity` slots, all granted at once by
    /// [`InboundCredits::grant_initial`].
    pub(crate) fn new(key: ChannelKey, capacity: u32, out: Arc<OutQueue>) -> Arc<Self> {
        Arc::new(InboundCredits {
            key,
            unannounced: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            batch: (capacity / 4).max(1),
            capacity,
            released: AtomicBool::new(false),
            out,
        })
    }

    /// Announces the channel's whole capacity: this is also how the sender
    /// learns that the receiver is ready.
    pub(crate) fn grant_initial(&self, capacity: u32) {
        self.in_flight.fetch_add(capacity, SeqCst);
        self.out.push_credit(&self.key, capacity);
    }

    /// Announces every gathered credit (if another thread did not just).
    fn announce(&self) {
        if self.released.load(SeqCst) {
            return;
        }
        let n = self.unannounced.swap(0, SeqCst);
        if n > 0 {
            // In flight before on the wire: the frames it pays for cannot
            // arrive before this count includes them.
            self.in_flight.fetch_add(n, SeqCst);
            self.out.push_credit(&self.key, n);
        }
    }

    /// Accounts for a frame that arrived; a frame without credit breaks
    /// the contract (it could overflow the task's channel).
    pub(crate) fn on_frame(&self, backlog: u32) -> Result<(), ConnectionError> {
        let left = self
            .in_flight
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .map_err(|_| {
                ConnectionError::Protocol(format!(
                    "frame beyond the granted credit on {}",
                    self.key
                ))
            })?
            - 1;
        if backlog > 0 {
            let gathered = self.unannounced.load(SeqCst);
            // Frames the task holds, this one included.
            let held = self.capacity.saturating_sub(left + gathered);
            if gathered > 0 && held < self.capacity / 2 {
                self.announce();
            }
        }
        Ok(())
    }

    /// Stops announcing (the channel was released or its connection lost).
    pub(crate) fn release(&self) {
        self.released.store(true, SeqCst);
    }
}

impl CreditReturn for InboundCredits {
    #[inline]
    fn consumed(&self) {
        if self.unannounced.fetch_add(1, SeqCst) + 1 >= self.batch {
            self.announce();
        }
    }
}

/// A registered input channel as the connection's reader holds it.
pub(crate) struct InboundChannel {
    pub(crate) credits: Arc<InboundCredits>,
    /// `None` once the task is gone: late frames are dropped.
    pub(crate) handler: Option<Box<dyn FrameHandler>>,
}
