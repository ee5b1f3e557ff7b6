//! A job submitted with `execute_async` runs, fails over and ends whether
//! or not its client waits (Flink's `executeAsync`): the client here is
//! dropped at once, never waited for. One failure mid-stream is restarted from the latest
//! checkpoint; the job's end is seen through its `JobControl` alone, and
//! every key's final running count is what the input holds.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::with_timeout;
use floe::prelude::*;
use floe::runtime::JobStatus;

const RECORDS: u64 = 60_000;
const KEYS: u64 = 10;

/// Counts per key, and fails once after `fail_at` records of its subtask.
#[derive(Clone)]
struct CountFailingOnce {
    failed: Arc<AtomicBool>,
    fail_at: u64,
    seen: u64,
    count: ValueState<u64>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for CountFailingOnce {
    fn process_element(
        &mut self,
        (key, v): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        self.seen += 1;
        if self.seen == self.fail_at && !self.failed.swap(true, Ordering::SeqCst) {
            anyhow::bail!("injected failure after {} records", self.seen);
        }
        let c = self.count.value(ctx)?.unwrap_or(0) + v;
        self.count.update(ctx, c)?;
        out.collect((key, c));
        Ok(())
    }
}

#[test]
fn a_job_nobody_waits_for_restarts_after_a_failure_and_finishes() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(100));
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.path().display()),
        );
        env.set_config("restart-strategy.type", "fixed-delay");
        env.set_config("restart-strategy.fixed-delay.attempts", "3");
        env.set_config("restart-strategy.fixed-delay.delay", "10 ms");
        let (sink, out) = CollectSink::new();
        let failed = Arc::new(AtomicBool::new(false));
        env.from_source(
            GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)).with_rate(20_000.0),
            "Generator",
        )
        .uid("generator")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(CountFailingOnce {
            failed: failed.clone(),
            fail_at: RECORDS / 4,
            seen: 0,
            count: ValueState::new("count"),
        })
        .uid("count")
        .sink_to(sink, "Collect");
        let client = env.execute_async("detached").unwrap();
        let control = client.control();
        // The client is dropped, never waited for: the job goes on.
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(90);
        while control.status() != JobStatus::Finished {
            assert!(
                !control.status().is_terminal(),
                "the job ended {:?}",
                control.status()
            );
            assert!(Instant::now() < deadline, "the job never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(failed.load(Ordering::SeqCst), "the failure was injected");
        assert_eq!(control.metrics().restarts(), 1, "one restart");
        // A replay after the restore emits counts again, never other ones:
        // each key's highest count is its number of records.
        let mut highest: BTreeMap<u64, u64> = BTreeMap::new();
        for (k, c) in out.snapshot() {
            let h = highest.entry(k).or_default();
            *h = (*h).max(c);
        }
        let expected: BTreeMap<u64, u64> = (0..KEYS).map(|k| (k, RECORDS / KEYS)).collect();
        assert_eq!(highest, expected);
    });
}
