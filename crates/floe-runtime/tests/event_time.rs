//! Event time through real tasks: a source task generating watermarks per
//! split (with an idle split and a lagging one), and an input task
//! combining two channels by Flink's valve rules. Processing time is a
//! manual clock, so the outcome does not depend on the machine's speed.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use floe_core::{
    Batch, CheckpointBarrier, JobId, NO_TIMESTAMP, StreamMessage, Watermark, WatermarkStatus,
};
use floe_runtime::channel::CancelFlag;
use floe_runtime::checkpoint::{CheckpointNotification, TaskEnvironment, TaskInit, TaskSnapshot};
use floe_runtime::processing_time::{ManualClock, ProcessingClock, ProcessingTimeService};
use floe_runtime::task::{InputTask, SourceTask, TaskDriver};
use floe_runtime::{
    Operator, SourceReader, SourceStatus, SplitId, TaskError, TaskInfo, WatermarkStrategy,
};

/// What reached the end of the chain.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Records(Vec<i64>),
    Watermark(i64),
    Status(WatermarkStatus),
    Finished,
}

/// The end of the chain: reports every element to the test.
struct Recorder(Sender<Seen>);

impl<T: Send> Operator<T> for Recorder {
    fn open(&mut self, _: &TaskInit) -> Result<(), TaskError> {
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        let ts = if batch.is_timed() {
            batch.timestamps.clone()
        } else {
            vec![NO_TIMESTAMP; batch.len()]
        };
        batch.clear();
        let _ = self.0.send(Seen::Records(ts));
        Ok(())
    }

    fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
        let _ = self.0.send(Seen::Watermark(wm.0));
        Ok(())
    }

    fn process_watermark_status(&mut self, s: WatermarkStatus) -> Result<(), TaskError> {
        let _ = self.0.send(Seen::Status(s));
        Ok(())
    }

    fn on_processing_time(&mut self, _: i64) -> Result<(), TaskError> {
        Ok(())
    }

    fn process_barrier(
        &mut self,
        _: CheckpointBarrier,
        _: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    fn notify_checkpoint(&mut self, _: CheckpointNotification) -> Result<(), TaskError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        let _ = self.0.send(Seen::Finished);
        Ok(())
    }
}

/// A reader fed by the test: `(split, event time)` records, one per poll.
struct FedReader {
    input: Receiver<(SplitId, i64)>,
    split: SplitId,
}

impl SourceReader<(SplitId, i64)> for FedReader {
    fn poll_next(
        &mut self,
        out: &mut Vec<(SplitId, i64)>,
        _: usize,
    ) -> anyhow::Result<SourceStatus> {
        match self.input.recv_timeout(Duration::from_millis(5)) {
            Ok(r) => {
                self.split = r.0;
                out.push(r);
                Ok(SourceStatus::MoreAvailable)
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(SourceStatus::NothingAvailable),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(SourceStatus::Finished),
        }
    }

    fn current_split(&self) -> SplitId {
        self.split
    }
}

fn info(name: &str) -> TaskInfo {
    TaskInfo {
        job_id: JobId::random(),
        job_name: Arc::from("event-time"),
        operator_name: Arc::from(name),
        uid: Arc::from(name),
        subtask_index: 0,
        parallelism: 1,
        max_parallelism: 128,
    }
}

fn env(clock: &ManualClock) -> TaskEnvironment {
    let mut env = TaskEnvironment::new(CancelFlag::new(), 0);
    env.init.time = ProcessingTimeService::new(ProcessingClock::Manual(clock.clone()));
    env.init.auto_watermark_interval = Duration::from_millis(10);
    env
}

/// Waits for the next element that is not an (empty) record batch.
fn next_time_event(seen: &Receiver<Seen>) -> Seen {
    loop {
        match seen
            .recv_timeout(Duration::from_secs(10))
            .expect("the task went quiet")
        {
            Seen::Records(_) => continue,
            other => return other,
        }
    }
}

#[track_caller]
fn await_records(seen: &Receiver<Seen>, expected: &[i64]) {
    match seen.recv_timeout(Duration::from_secs(10)).expect("records") {
        Seen::Records(ts) => assert_eq!(ts, expected),
        other => panic!("expected records {expected:?}, got {other:?}"),
    }
}

#[test]
fn a_source_takes_the_minimum_over_active_splits_and_goes_idle() {
    let clock = ManualClock::new(0);
    let (feed, input) = crossbeam_channel::unbounded();
    let (tx, seen) = crossbeam_channel::unbounded();
    let strategy = WatermarkStrategy::<(SplitId, i64)>::for_monotonous_timestamps()
        .with_timestamp_assigner(|r, _| r.1)
        .with_idleness(Duration::from_millis(100));
    let task = SourceTask::new(
        Box::new(FedReader { input, split: 0 }),
        Box::new(Recorder(tx)),
        info("source"),
        16,
    )
    .with_watermarks(strategy);
    let env = env(&clock);
    let handle = std::thread::spawn(move || Box::new(task).run(&env));

    // Two splits: the slower one holds event time back.
    feed.send((1, 1_000)).unwrap();
    await_records(&seen, &[1_000]);
    feed.send((2, 500)).unwrap();
    await_records(&seen, &[500]);
    clock.set_ms(10);
    assert_eq!(next_time_event(&seen), Seen::Watermark(499));

    // Split 1 moves on while split 2 is quiet: still held back ...
    feed.send((1, 2_000)).unwrap();
    await_records(&seen, &[2_000]);
    clock.set_ms(20);
    feed.send((1, 3_000)).unwrap();
    await_records(&seen, &[3_000]);
    // ... until split 2 has been quiet for the idle timeout.
    clock.set_ms(110);
    assert_eq!(next_time_event(&seen), Seen::Watermark(2_999));

    // Every split quiet: the source is idle and holds no one back.
    clock.set_ms(300);
    assert_eq!(next_time_event(&seen), Seen::Status(WatermarkStatus::Idle));

    // A record makes its split, and the source, active again, before the
    // record goes down.
    feed.send((2, 3_500)).unwrap();
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(10)).unwrap(),
        Seen::Status(WatermarkStatus::Active)
    );
    await_records(&seen, &[3_500]);
    clock.set_ms(310);
    assert_eq!(next_time_event(&seen), Seen::Watermark(3_499));

    // The end of the input is the end of event time.
    drop(feed);
    assert_eq!(next_time_event(&seen), Seen::Watermark(i64::MAX));
    assert_eq!(next_time_event(&seen), Seen::Finished);
    handle.join().unwrap().unwrap();
}

#[test]
fn an_input_task_forwards_the_minimum_of_its_active_channels() {
    let clock = ManualClock::new(0);
    let (tx, seen) = crossbeam_channel::unbounded();
    let (c0, r0) = crossbeam_channel::unbounded::<StreamMessage<u32>>();
    let (c1, r1) = crossbeam_channel::unbounded::<StreamMessage<u32>>();
    let task = InputTask::new(vec![r0, r1], Box::new(Recorder(tx)), info("input"));
    let env = env(&clock);
    let handle = std::thread::spawn(move || Box::new(task).run(&env));
    let wm =
        |c: &Sender<StreamMessage<u32>>, t| c.send(StreamMessage::Watermark(Watermark(t))).unwrap();
    let status =
        |c: &Sender<StreamMessage<u32>>, s| c.send(StreamMessage::WatermarkStatus(s)).unwrap();

    // Records keep their timestamps across the channel.
    let mut batch = Batch::from_records(vec![1, 2]);
    batch.timestamps = vec![7, 8];
    c0.send(StreamMessage::Records(batch)).unwrap();
    await_records(&seen, &[7, 8]);

    // Channels are read fairly, not in the order the test sends to
    // them: a record after a channel's message, seen at the end, shows
    // that the message was processed.
    let processed = |c: &Sender<StreamMessage<u32>>| {
        c.send(StreamMessage::Records(Batch::from_records(vec![0])))
            .unwrap();
        await_records(&seen, &[NO_TIMESTAMP]);
    };
    wm(&c0, 10);
    processed(&c0);
    wm(&c1, 5);
    assert_eq!(next_time_event(&seen), Seen::Watermark(5));
    // The slow channel goes idle: it no longer holds time back.
    status(&c1, WatermarkStatus::Idle);
    assert_eq!(next_time_event(&seen), Seen::Watermark(10));
    wm(&c0, 20);
    assert_eq!(next_time_event(&seen), Seen::Watermark(20));
    // It resumes behind: it neither pulls time back nor holds it ...
    status(&c1, WatermarkStatus::Active);
    wm(&c1, 15);
    processed(&c1);
    wm(&c0, 30);
    assert_eq!(next_time_event(&seen), Seen::Watermark(30));
    // ... until it has caught up; from then on it counts again.
    wm(&c1, 40);
    processed(&c1);
    wm(&c0, 50);
    assert_eq!(next_time_event(&seen), Seen::Watermark(40));

    // An ended channel leaves the minimum (upstream sources send the end
    // of event time before they end, so nothing is held back).
    c0.send(StreamMessage::EndOfInput).unwrap();
    // Read before or after channel 0's end, 45 is the minimum (channel 0
    // stood at 50): an ended channel holds nothing back.
    wm(&c1, 45);
    assert_eq!(next_time_event(&seen), Seen::Watermark(45));
    c1.send(StreamMessage::EndOfInput).unwrap();
    assert_eq!(next_time_event(&seen), Seen::Finished);
    handle.join().unwrap().unwrap();
}
