//! Barrier alignment: when a task with several input channels takes its
//! snapshot, and which channels it holds meanwhile.

use std::time::Duration;

use floe_checkpoint::{CheckpointConfig, CheckpointingMode};
use floe_core::CheckpointBarrier;

/// How a task with several input channels treats barriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlignmentMode {
    /// Hold each channel after its barrier until every channel delivered it
    /// (exactly-once).
    #[default]
    Aligned,
    /// Hold nothing; snapshot when the last barrier arrives (at-least-once:
    /// records after the barrier on early channels may be in the snapshot's
    /// state and be replayed again after a failure).
    AtLeastOnce,
    /// Exactly-once without waiting: snapshot at the first barrier and
    /// persist the records that were still in flight on the other channels
    /// (channel state), replayed before new input on restore. With a
    /// non-zero `aligned_timeout` a task starts aligned and switches to
    /// unaligned when its alignment has lasted that long.
    Unaligned {
        /// How long to align before switching (zero: never align).
        aligned_timeout: Duration,
    },
}

impl AlignmentMode {
    /// The mode a checkpoint configuration asks for: its mode, and with
    /// unaligned checkpoints enabled in exactly-once mode, unaligned after
    /// its aligned-checkpoint timeout.
    pub fn of(config: &CheckpointConfig) -> Self {
        match config.mode() {
            CheckpointingMode::ExactlyOnce if config.is_unaligned_effective() => {
                AlignmentMode::Unaligned {
                    aligned_timeout: config.aligned_checkpoint_timeout(),
                }
            }
            CheckpointingMode::ExactlyOnce => AlignmentMode::Aligned,
            CheckpointingMode::AtLeastOnce => AlignmentMode::AtLeastOnce,
        }
    }

    /// `config` set to take checkpoints in this mode: the inverse of
    /// [`AlignmentMode::of`], for code that thinks in modes
    /// (`configure_checkpointing(|c| AlignmentMode::AtLeastOnce.apply_to(c))`).
    pub fn apply_to(self, config: CheckpointConfig) -> CheckpointConfig {
        match self {
            AlignmentMode::Aligned => config
                .with_mode(CheckpointingMode::ExactlyOnce)
                .with_unaligned_enabled(false),
            AlignmentMode::AtLeastOnce => config
                .with_mode(CheckpointingMode::AtLeastOnce)
                .with_unaligned_enabled(false),
            AlignmentMode::Unaligned { aligned_timeout } => config
                .with_mode(CheckpointingMode::ExactlyOnce)
                .with_unaligned_enabled(true)
                .with_aligned_checkpoint_timeout(aligned_timeout),
        }
    }
}

/// What the aligner asks of its task.
#[derive(Debug, PartialEq, Eq)]
pub enum AlignmentAction {
    /// Nothing yet.
    Wait,
    /// Stop reading this channel until the checkpoint is taken.
    Block(usize),
    /// Every channel delivered the barrier: snapshot, forward, unblock all.
    Complete(CheckpointBarrier),
    /// A newer checkpoint's barrier arrived while an older one was aligning
    /// (the older one was aborted upstream): unblock every channel, then
    /// block `block` for the newer one.
    Superseded {
        /// The channel to hold for the newer checkpoint (aligned mode).
        block: Option<usize>,
    },
}

/// Tracks which channels have delivered the barrier of the checkpoint in
/// progress. Channels that have ended count as delivered.
#[derive(Debug)]
pub struct BarrierAligner {
    mode: AlignmentMode,
    ended: Vec<bool>,
    current: Option<(CheckpointBarrier, Vec<bool>)>,
}

impl BarrierAligner {
    /// An aligner for `channels` input channels.
    pub fn new(channels: usize, mode: AlignmentMode) -> Self {
        BarrierAligner {
            mode,
            ended: vec![false; channels],
            current: None,
        }
    }

    /// True while a checkpoint is being aligned.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// The barrier being aligned, if any.
    pub fn current_barrier(&self) -> Option<CheckpointBarrier> {
        self.current.as_ref().map(|(b, _)| *b)
    }

    fn complete_if_done(&mut self) -> Option<AlignmentAction> {
        let (_, seen) = self.current.as_ref()?;
        if seen.iter().zip(&self.ended).all(|(s, e)| *s || *e) {
            let (b, _) = self.current.take().expect("checked above");
            return Some(AlignmentAction::Complete(b));
        }
        None
    }

    /// Channel `ch` delivered `barrier`.
    pub fn on_barrier(&mut self, ch: usize, barrier: CheckpointBarrier) -> AlignmentAction {
        let mut superseded = false;
        match &mut self.current {
            Some((b, seen)) if b.id == barrier.id => seen[ch] = true,
            // A late barrier of a checkpoint already given up here.
            Some((b, _)) if barrier.id < b.id => return AlignmentAction::Wait,
            current => {
                superseded = current.is_some();
                let mut seen = vec![false; self.ended.len()];
                seen[ch] = true;
                *current = Some((barrier, seen));
            }
        }
        if let Some(done) = self.complete_if_done() {
            return done;
        }
        let block = matches!(
            self.mode,
            AlignmentMode::Aligned | AlignmentMode::Unaligned { .. }
        )
        .then_some(ch);
        match (superseded, block) {
            (true, block) => AlignmentAction::Superseded { block },
            (false, Some(ch)) => AlignmentAction::Block(ch),
            (false, None) => AlignmentAction::Wait,
        }
    }

    /// Gives up aligning the checkpoint in progress (it switches to
    /// unaligned): its barrier and the channels that have not delivered it.
    pub fn abandon(&mut self) -> Option<(CheckpointBarrier, Vec<usize>)> {
        let (barrier, seen) = self.current.take()?;
        let pending = (0..seen.len())
            .filter(|i| !seen[*i] && !self.ended[*i])
            .collect();
        Some((barrier, pending))
    }

    /// Channel `ch` ended; it may complete the alignment in progress.
    pub fn on_end(&mut self, ch: usize) -> AlignmentAction {
        self.ended[ch] = true;
        self.complete_if_done().unwrap_or(AlignmentAction::Wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{GateEvent, InputGate};
    use floe_core::{Batch, CheckpointKind, StreamMessage};

    fn b(id: u64) -> CheckpointBarrier {
        CheckpointBarrier {
            id,
            timestamp_ms: 0,
            kind: CheckpointKind::Checkpoint,
            last_completed: None,
        }
    }

    #[test]
    fn a_mode_round_trips_through_the_configuration() {
        for mode in [
            AlignmentMode::Aligned,
            AlignmentMode::AtLeastOnce,
            AlignmentMode::Unaligned {
                aligned_timeout: Duration::ZERO,
            },
            AlignmentMode::Unaligned {
                aligned_timeout: Duration::from_secs(3),
            },
        ] {
            let config = mode.apply_to(CheckpointConfig::default());
            assert_eq!(AlignmentMode::of(&config), mode);
        }
        // Unaligned only applies in exactly-once mode, as in Flink.
        let config = CheckpointConfig::default()
            .with_mode(CheckpointingMode::AtLeastOnce)
            .with_unaligned_enabled(true);
        assert_eq!(AlignmentMode::of(&config), AlignmentMode::AtLeastOnce);
    }

    #[test]
    fn aligned_blocks_until_every_channel_delivered() {
        let mut a = BarrierAligner::new(3, AlignmentMode::Aligned);
        assert_eq!(a.on_barrier(1, b(1)), AlignmentAction::Block(1));
        assert_eq!(a.on_barrier(0, b(1)), AlignmentAction::Block(0));
        assert!(a.in_progress());
        assert_eq!(a.on_barrier(2, b(1)), AlignmentAction::Complete(b(1)));
        assert!(!a.in_progress());
    }

    #[test]
    fn ended_channels_count_as_delivered() {
        let mut a = BarrierAligner::new(2, AlignmentMode::Aligned);
        assert_eq!(a.on_barrier(0, b(4)), AlignmentAction::Block(0));
        assert_eq!(a.on_end(1), AlignmentAction::Complete(b(4)));
        let mut a = BarrierAligner::new(2, AlignmentMode::Aligned);
        assert_eq!(a.on_end(1), AlignmentAction::Wait);
        assert_eq!(a.on_barrier(0, b(5)), AlignmentAction::Complete(b(5)));
    }

    #[test]
    fn at_least_once_never_blocks() {
        let mut a = BarrierAligner::new(2, AlignmentMode::AtLeastOnce);
        assert_eq!(a.on_barrier(0, b(1)), AlignmentAction::Wait);
        assert_eq!(a.on_barrier(1, b(1)), AlignmentAction::Complete(b(1)));
    }

    #[test]
    fn newer_barrier_supersedes_and_older_is_ignored() {
        let mut a = BarrierAligner::new(2, AlignmentMode::Aligned);
        assert_eq!(a.on_barrier(0, b(1)), AlignmentAction::Block(0));
        assert_eq!(
            a.on_barrier(1, b(2)),
            AlignmentAction::Superseded { block: Some(1) }
        );
        assert_eq!(a.on_barrier(0, b(1)), AlignmentAction::Wait);
        assert_eq!(a.on_barrier(0, b(2)), AlignmentAction::Complete(b(2)));
    }

    fn records(r: &[u32]) -> StreamMessage<u32> {
        StreamMessage::Records(Batch::from_records(r.to_vec()))
    }

    /// What the gate delivers until it is idle, as `(channel, records or
    /// a barrier id)`.
    fn drain(gate: &mut InputGate<u32>) -> Vec<(usize, Result<Vec<u32>, u64>)> {
        let mut out = Vec::new();
        while let GateEvent::Message(ch, msg) = gate.poll().unwrap() {
            out.push((
                ch,
                match msg {
                    StreamMessage::Records(b) => Ok(b.records),
                    StreamMessage::Barrier(b) => Err(b.id),
                    _ => continue,
                },
            ));
        }
        out
    }

    /// Unaligned after an aligned timeout: the barrier overtakes the
    /// records buffered ahead of it on the other channel, which become the
    /// checkpoint's channel state and are still processed, in order.
    #[test]
    fn unaligned_barrier_overtakes_buffered_records_and_captures_them() {
        let (tx0, rx0) = crossbeam_channel::unbounded();
        let (tx1, rx1) = crossbeam_channel::unbounded();
        tx0.send(StreamMessage::Barrier(b(1))).unwrap();
        tx0.send(records(&[10])).unwrap();
        // Channel 1 is backlogged: two batches ahead of its barrier.
        tx1.send(records(&[1, 2])).unwrap();
        tx1.send(records(&[3])).unwrap();
        tx1.send(StreamMessage::Barrier(b(1))).unwrap();
        tx1.send(records(&[4])).unwrap();
        let mut gate = InputGate::new(vec![rx0, rx1]);
        let mut a = BarrierAligner::new(
            2,
            AlignmentMode::Unaligned {
                aligned_timeout: Duration::from_secs(1),
            },
        );
        // The first barrier: aligned at first, channel 0 is held.
        let GateEvent::Message(0, StreamMessage::Barrier(first)) = gate.poll().unwrap() else {
            panic!("channel 0's barrier first");
        };
        assert_eq!(a.on_barrier(0, first), AlignmentAction::Block(0));
        gate.block(0);
        // The aligned timeout passes: the task gives up aligning and
        // snapshots now; the barrier overtakes channel 1's backlog.
        let (barrier, pending) = a.abandon().expect("alignment in progress");
        assert_eq!((barrier.id, pending.as_slice()), (1, &[1][..]));
        assert!(!a.in_progress());
        gate.unblock_all();
        gate.start_recording(barrier.id, &[0]);
        let recording = gate
            .take_complete_recording()
            .expect("channel 1's barrier was already in the channel");
        let captured: Vec<(u32, Vec<u32>)> = recording
            .batches
            .into_iter()
            .map(|(ch, r, _)| (ch, r))
            .collect();
        assert_eq!(captured, vec![(1, vec![1, 2]), (1, vec![3])]);
        // Everything is still processed, each channel in its order, and
        // nothing after the barrier was captured.
        let delivered = drain(&mut gate);
        let of = |c: usize| -> Vec<_> {
            delivered
                .iter()
                .filter(|(ch, _)| *ch == c)
                .map(|(_, m)| m.clone())
                .collect()
        };
        assert_eq!(of(0), vec![Ok(vec![10])]);
        assert_eq!(
            of(1),
            vec![Ok(vec![1, 2]), Ok(vec![3]), Err(1), Ok(vec![4])]
        );
    }

    /// Unaligned from the start: records that reach the gate after the
    /// snapshot but before their channel's barrier are captured too, and
    /// the channel state is complete only once that barrier arrived.
    #[test]
    fn unaligned_channel_state_is_complete_when_every_barrier_arrived() {
        let (tx0, rx0) = crossbeam_channel::unbounded();
        let (tx1, rx1) = crossbeam_channel::unbounded();
        tx1.send(records(&[1])).unwrap();
        let mut gate = InputGate::new(vec![rx0, rx1]);
        // Channel 0's barrier was taken at once; channel 1's is not there.
        gate.start_recording(1, &[0]);
        assert!(gate.take_complete_recording().is_none());
        tx1.send(records(&[2])).unwrap();
        tx1.send(StreamMessage::Barrier(b(1))).unwrap();
        tx1.send(records(&[3])).unwrap();
        tx0.send(records(&[10])).unwrap();
        assert_eq!(drain(&mut gate).len(), 5);
        let recording = gate.take_complete_recording().expect("complete");
        let captured: Vec<Vec<u32>> = recording.batches.into_iter().map(|(_, r, _)| r).collect();
        assert_eq!(
            captured,
            vec![vec![1], vec![2]],
            "only channel 1, up to its barrier"
        );
    }
}
