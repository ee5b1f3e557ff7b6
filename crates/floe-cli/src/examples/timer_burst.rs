//! Many event-time timers due at one watermark, in a job that stays up:
//! `floe run timer-burst --timers N [--keys K] [--output <dir>] [-p N]`.
//!
//! The source registers `N` timers over `K` keys (timer `i` is for key
//! `i mod K` at event time `START + 1 + i / K`; every registration carries
//! the event time `START`, so the watermark stays below them all), then
//! sends one record whose event time is past them all: the next watermark
//! makes every timer due at once. The source then stays idle but alive,
//! taking part in checkpoints, until the job is stopped or cancelled. Each
//! timer prints `<key> <timestamp>` when it fires.
//!
//! It shows that timers never stall checkpoints: the keyed operator fires
//! them in slices of about 10 ms and serves barriers between them, so
//! checkpoints complete while millions of timers fire (each commits the
//! timers fired before its barrier), and the REST API keeps answering.

use std::time::Duration;

use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;
use serde::{Deserialize, Serialize};

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "timer-burst",
    about = "Registers many event-time timers, then makes them all due at one watermark"
)]
pub struct Args {
    /// How many timers to register.
    #[arg(long, default_value_t = 1_000_000)]
    pub timers: u64,
    /// Over how many keys.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Write the fired timers into part files in this directory (exactly
    /// once with checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

/// The event time of every registration.
pub const START_MS: i64 = 1_700_000_000_000;

/// What the source sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Register a timer for `key` at `at`.
    Register {
        /// The key.
        key: u64,
        /// The timer's event time.
        at: i64,
    },
    /// Moves event time past every timer.
    Tick,
}

/// Timer `i` of a run over `keys` keys: its key and timestamp.
pub fn timer(i: u64, keys: u64) -> (u64, i64) {
    (i % keys, START_MS + 1 + (i / keys) as i64)
}

/// The event time of the tick: past every timer of `timers` over `keys`.
fn tick_time(timers: u64, keys: u64) -> i64 {
    START_MS + 2 + timers.div_ceil(keys) as i64
}

/// Registers the timers, then sends the tick, then idles.
#[derive(Clone)]
struct Burst {
    timers: u64,
    keys: u64,
}

struct BurstReader {
    timers: u64,
    keys: u64,
    /// The next timer to register; `timers` for the tick, past it once
    /// the tick was sent.
    next: u64,
}

impl Source<(Command, i64)> for Burst {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<(Command, i64)>>> {
        Ok(Box::new(BurstReader {
            timers: self.timers,
            keys: self.keys,
            next: 0,
        }))
    }
}

impl SourceReader<(Command, i64)> for BurstReader {
    fn poll_next(
        &mut self,
        out: &mut Vec<(Command, i64)>,
        max: usize,
    ) -> anyhow::Result<SourceStatus> {
        if self.next < self.timers {
            let end = self.timers.min(self.next + max as u64);
            out.extend((self.next..end).map(|i| {
                let (key, at) = timer(i, self.keys);
                (Command::Register { key, at }, START_MS)
            }));
            self.next = end;
            return Ok(SourceStatus::MoreAvailable);
        }
        if self.next == self.timers {
            out.push((Command::Tick, tick_time(self.timers, self.keys)));
            self.next += 1;
            return Ok(SourceStatus::MoreAvailable);
        }
        // Idle but alive until stopped or cancelled.
        std::thread::sleep(Duration::from_millis(20));
        Ok(SourceStatus::NothingAvailable)
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(self.next.to_le_bytes().to_vec())
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| anyhow::anyhow!("a timer-burst position is 8 bytes"))?;
        self.next = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Registers each timer; prints each one that fires.
#[derive(Clone)]
struct FireAll;

impl KeyedProcessFunction<u64, (Command, i64), (u64, i64)> for FireAll {
    fn process_element(
        &mut self,
        (command, _): (Command, i64),
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        if let Command::Register { at, .. } = command {
            ctx.timer_service().register_event_time_timer(at)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        out.collect((*ctx.current_key(), timestamp));
        Ok(())
    }
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("timer-burst", &args);
    let env = StreamEnvironment::from_job_args(&args);
    let strategy = WatermarkStrategy::for_monotonous_timestamps()
        .with_timestamp_assigner(|(_, t): &(Command, i64), _| *t);
    let fired = env
        .from_source_with_watermarks(
            Burst {
                timers: opts.timers,
                keys: opts.keys,
            },
            strategy,
            "Timers",
        )
        .uid("timers")
        .key_by(|(command, _): &(Command, i64)| match command {
            Command::Register { key, .. } => *key,
            Command::Tick => 0,
        })
        .process(FireAll)
        .name("Fire All")
        .uid("fire-all");
    super::write_pairs(&fired, opts.output.as_deref());
    env.execute("Timer Burst")?;
    Ok(())
}
