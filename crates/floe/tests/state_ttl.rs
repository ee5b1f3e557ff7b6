//! State TTL through a real job on the job's processing-time clock (a
//! manual one): a value written at t is visible until t + ttl and gone
//! after, on both backends; with OnReadAndWrite a read keeps it alive.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{TaggingSink, with_timeout};
use floe::prelude::*;

/// The phase before the first.
const NOT_STARTED: u32 = u32::MAX;

/// Phase `p` emits `(key, p)` for every key once; phase 0 ends the input.
#[derive(Clone)]
struct Phases {
    keys: u64,
    phase: Arc<AtomicU32>,
}

struct PhasesReader {
    keys: u64,
    phase: Arc<AtomicU32>,
    emitted: u32,
}

impl Source<(u64, u32)> for Phases {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<(u64, u32)>>> {
        Ok(Box::new(PhasesReader {
            keys: self.keys,
            phase: self.phase.clone(),
            emitted: 0,
        }))
    }
}

impl SourceReader<(u64, u32)> for PhasesReader {
    fn poll_next(&mut self, out: &mut Vec<(u64, u32)>, _: usize) -> anyhow::Result<SourceStatus> {
        match self.phase.load(Ordering::Acquire) {
            0 => Ok(SourceStatus::Finished),
            p if p != NOT_STARTED && p > self.emitted => {
                out.extend((0..self.keys).map(|k| (k, p)));
                self.emitted = p;
                Ok(SourceStatus::MoreAvailable)
            }
            _ => {
                std::thread::sleep(Duration::from_millis(2));
                Ok(SourceStatus::NothingAvailable)
            }
        }
    }
}

/// Phase 1 writes every key's value; later phases read it and report
/// whether it was still there.
#[derive(Clone)]
struct WriteThenRead {
    ttl: StateTtlConfig,
    value: Option<ValueState<u32>>,
}

impl KeyedProcessFunction<u64, (u64, u32), (u64, u32, Option<u32>)> for WriteThenRead {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        let desc = ValueStateDescriptor::new("v").enable_time_to_live(self.ttl.clone());
        self.value = Some(ctx.get_state(&desc)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, phase): (u64, u32),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u32, Option<u32>)>,
    ) -> anyhow::Result<()> {
        let v = self.value.as_ref().expect("opened");
        if phase == 1 {
            v.update(ctx, 1)?;
            out.collect((k, phase, Some(1)));
        } else {
            out.collect((k, phase, v.value(ctx)?));
        }
        Ok(())
    }
}

/// Runs phases 1.. with the clock at `times[p - 1]` before phase p; returns
/// what each read phase saw, per phase: how many keys still had a value.
fn run(backend: StateBackendKind, ttl: StateTtlConfig, times: &[i64]) -> Vec<usize> {
    let times = times.to_vec();
    with_timeout(60, move || {
        let keys = 20u64;
        let clock = ManualClock::new(times[0]);
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.set_state_backend(backend);
        env.set_processing_clock(ProcessingClock::Manual(clock.clone()));
        let (sink, handle) = TaggingSink::new();
        // Not started yet (the reader waits); then phases 1..; 0 ends.
        let gate = Arc::new(AtomicU32::new(NOT_STARTED));
        env.from_source(
            Phases {
                keys,
                phase: gate.clone(),
            },
            "phases",
        )
        .key_by(|r: &(u64, u32)| r.0)
        .process(WriteThenRead { ttl, value: None })
        .sink_to(sink, "seen");
        let client = env.execute_async("ttl").unwrap();
        let mut seen = Vec::new();
        for (i, t) in times.iter().enumerate() {
            clock.set_ms(*t);
            let p = i as u32 + 1;
            gate.store(p, Ordering::Release);
            let want = keys as usize * p as usize;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while handle.values().len() < want && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let values = handle.values();
            assert_eq!(values.len(), want, "phase {p} answered");
            if p > 1 {
                seen.push(
                    values
                        .iter()
                        .filter(|(_, ph, v)| *ph == p && v.is_some())
                        .count(),
                );
            }
        }
        gate.store(0, Ordering::Release);
        client.wait().unwrap();
        seen
    })
}

fn backends() -> Vec<StateBackendKind> {
    let mut b = vec![StateBackendKind::HashMap];
    if cfg!(feature = "rocksdb") {
        b.push(StateBackendKind::RocksDb);
    }
    b
}

#[test]
fn values_expire_after_their_ttl() {
    for backend in backends() {
        let ttl = StateTtlConfig::new(Duration::from_millis(1_000));
        // Written at 1_000_000; read at +999 (alive), +1_000 (expired:
        // a value is gone once ttl has passed), +5_000.
        let seen = run(backend, ttl, &[1_000_000, 1_000_999, 1_001_000, 1_005_000]);
        assert_eq!(seen, vec![20, 0, 0], "{backend:?}");
    }
}

#[test]
fn a_read_keeps_a_value_alive_with_on_read_and_write() {
    for backend in backends() {
        let ttl = StateTtlConfig::new_builder(Duration::from_millis(1_000))
            .update_ttl_on_read_and_write()
            .build();
        // Each read within the ttl refreshes it: alive at +900, +1_800,
        // +2_700; then nobody reads for longer than the ttl.
        let seen = run(
            backend,
            ttl,
            &[1_000_000, 1_000_900, 1_001_800, 1_002_700, 1_004_000],
        );
        assert_eq!(seen, vec![20, 20, 20, 0], "{backend:?}");
    }
}
