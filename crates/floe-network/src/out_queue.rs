//! The outgoing side of a connection: one byte queue that every channel
//! appends whole messages to, drained by the connection's writer thread.
//!
//! Tasks only copy a frame into the queue under a short lock; the writer
//! swaps the whole queue out and writes it with one system call while the
//! tasks fill the other buffer. Under load, many frames leave in one write
//! without waiting for a timer, and an idle connection sends each frame at
//! once. The two buffers are reused, so the steady state allocates nothing.

use std::sync::{Condvar, Mutex};

use crate::wire::{self, ChannelKey};

struct Pending {
    /// Whole messages not yet handed to the writer.
    bytes: Vec<u8>,
    /// The writer sleeps until there is something to write.
    writer_waiting: bool,
    /// No more bytes are accepted; the writer ends.
    closed: bool,
}

/// The bytes a connection still has to send.
pub(crate) struct OutQueue {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl OutQueue {
    pub(crate) fn new() -> Self {
        OutQueue {
            pending: Mutex::new(Pending {
                bytes: Vec::with_capacity(256 << 10),
                writer_waiting: false,
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Appends a message written by `put` (dropped once closed).
    #[inline]
    fn push(&self, put: impl FnOnce(&mut Vec<u8>)) {
        let mut p = self.pending.lock().expect("out queue lock");
        if p.closed {
            return;
        }
        put(&mut p.bytes);
        if p.writer_waiting {
            p.writer_waiting = false;
            self.wake.notify_one();
        }
    }

    /// Queues one data message.
    #[inline]
    pub(crate) fn push_data(&self, key: &ChannelKey, backlog: u32, payload: &[u8]) {
        self.push(|b| wire::put_data(b, key, backlog, payload));
    }

    /// Queues one credit announcement.
    pub(crate) fn push_credit(&self, key: &ChannelKey, credits: u32) {
        self.push(|b| wire::put_credit(b, key, credits));
    }

    /// Waits for bytes and swaps them into `out` (which must be empty);
    /// false once the queue is closed.
    pub(crate) fn take(&self, out: &mut Vec<u8>) -> bool {
        debug_assert!(out.is_empty());
        let mut p = self.pending.lock().expect("out queue lock");
        loop {
            if p.closed {
                return false;
            }
            if !p.bytes.is_empty() {
                std::mem::swap(&mut p.bytes, out);
                return true;
            }
            p.writer_waiting = true;
            p = self.wake.wait(p).expect("out queue lock");
        }
    }

    /// Refuses further bytes and wakes the writer to end.
    pub(crate) fn close(&self) {
        let mut p = self.pending.lock().expect("out queue lock");
        p.closed = true;
        p.bytes = Vec::new();
        self.wake.notify_all();
    }
}
