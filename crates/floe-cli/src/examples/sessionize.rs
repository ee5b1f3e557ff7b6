//! Sessions per user in event time, with keyed state and an event-time
//! timer per session (the window API comes later):
//! `floe run sessionize (--input <file|dir> | --socket <host:port>) --gap <duration>
//! [--out-of-orderness <duration>] [--rate <events/s>] [--output <dir>] [-p N]`.
//!
//! Reads `<user> <epoch ms>` lines. A user's events less than `gap` apart
//! in event time form one session, merged as Flink's session windows merge
//! theirs (each event opens `[t, t + gap)`; overlapping ones join, also when
//! an out-of-order event bridges two). A session closes when the watermark
//! passes its end; each closed session prints `<user> <first event ms>
//! <last event ms> <events>`. At the end of a bounded input the final
//! watermark closes every open session. Events later than the watermark
//! allows (their session already closed) are dropped, as Flink drops late
//! window elements.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;
use serde::{Deserialize, Serialize};

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(name = "sessionize", about = "Sessions per user in event time")]
pub struct Args {
    /// File of `<user> <epoch ms>` lines, or a directory of such files
    /// (each file is a split with its own watermark).
    #[arg(long, conflicts_with = "socket", required_unless_present = "socket")]
    pub input: Option<std::path::PathBuf>,
    /// host:port of a server sending such lines.
    #[arg(long)]
    pub socket: Option<String>,
    /// Events of a user less than this apart form one session (Flink's
    /// duration notation: `30 s`, `5min`, `500ms`).
    #[arg(long, value_parser = parse_duration)]
    pub gap: Duration,
    /// How far out of order events may arrive and still count.
    #[arg(long, value_parser = parse_duration, default_value = "0 ms")]
    pub out_of_orderness: Duration,
    /// Read at most this many lines per second per subtask.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the sessions into part files in this directory (exactly once
    /// with checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    floe::core::parse_duration(s).map_err(|e| e.to_string())
}

/// One open session of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its first event's time.
    pub first: i64,
    /// Its last event's time.
    pub last: i64,
    /// Events in it.
    pub events: u64,
}

impl Session {
    /// Where its window ends: events from here on start another session.
    fn end(&self, gap: i64) -> i64 {
        self.last.saturating_add(gap)
    }

    /// The timer that closes it: the last millisecond of its window, as
    /// Flink's window `maxTimestamp()`.
    fn timer(&self, gap: i64) -> i64 {
        self.end(gap) - 1
    }
}

/// Per user: the open sessions (few, ordered by start; more than one only
/// while out-of-order events may still bridge them).
#[derive(Clone)]
pub struct Sessionize {
    gap_ms: i64,
    open: ValueState<Vec<Session>>,
}

impl Sessionize {
    /// Sessions with `gap`.
    pub fn new(gap: Duration) -> Self {
        Sessionize {
            gap_ms: i64::try_from(gap.as_millis())
                .unwrap_or(i64::MAX / 4)
                .max(1),
            open: ValueState::new("open-sessions"),
        }
    }
}

impl KeyedProcessFunction<String, (String, i64), (String, String)> for Sessionize {
    fn process_element(
        &mut self,
        (_, t): (String, i64),
        ctx: &mut KeyedContext<'_, String>,
        _out: &mut Collector<'_, (String, String)>,
    ) -> anyhow::Result<()> {
        let gap = self.gap_ms;
        let event = Session {
            first: t,
            last: t,
            events: 1,
        };
        if event.timer(gap) <= ctx.timer_service().current_watermark() {
            // Its session would already have closed: late, dropped.
            return Ok(());
        }
        let state = &self.open;
        let mut sessions = state.value(ctx)?.unwrap_or_default();
        // Every open session whose window overlaps [t, t + gap) merges.
        let mut merged = event;
        let mut kept = Vec::with_capacity(sessions.len() + 1);
        for s in sessions.drain(..) {
            if s.first < t.saturating_add(gap) && t < s.end(gap) {
                ctx.timer_service().delete_event_time_timer(s.timer(gap))?;
                merged = Session {
                    first: merged.first.min(s.first),
                    last: merged.last.max(s.last),
                    events: merged.events + s.events,
                };
            } else {
                kept.push(s);
            }
        }
        ctx.timer_service()
            .register_event_time_timer(merged.timer(gap))?;
        kept.push(merged);
        kept.sort_by_key(|s| s.first);
        state.update(ctx, kept)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut OnTimerContext<'_, String>,
        out: &mut Collector<'_, (String, String)>,
    ) -> anyhow::Result<()> {
        let gap = self.gap_ms;
        let state = &self.open;
        let sessions = state.value(ctx)?.unwrap_or_default();
        let (closed, open): (Vec<Session>, Vec<Session>) = sessions
            .into_iter()
            .partition(|s| s.timer(gap) <= timestamp);
        let user = ctx.current_key().clone();
        for s in closed {
            out.collect((user.clone(), format!("{} {} {}", s.first, s.last, s.events)));
        }
        if open.is_empty() {
            state.clear(ctx)?;
        } else {
            state.update(ctx, open)?;
        }
        Ok(())
    }
}

/// `<user> <epoch ms>`; the user is any non-blank word.
pub fn parse_event(line: &str) -> anyhow::Result<(String, i64)> {
    let mut it = line.split_whitespace();
    match (it.next(), it.next().map(str::parse::<i64>), it.next()) {
        (Some(user), Some(Ok(t)), None) => Ok((user.to_string(), t)),
        _ => anyhow::bail!("expected `<user> <epoch ms>`, got {line:?}"),
    }
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("sessionize", &args);
    let env = StreamEnvironment::from_job_args(&args);
    // Timestamps come from the line; a line that does not parse gets none
    // here and fails the job, naming it, in the parse step below.
    let strategy = WatermarkStrategy::for_bounded_out_of_orderness(opts.out_of_orderness)
        .with_timestamp_assigner(|line: &String, _| {
            parse_event(line).map_or(floe::core::NO_TIMESTAMP, |(_, t)| t)
        });
    let lines = match (&opts.input, &opts.socket) {
        (Some(path), _) => {
            let source = TextFileSource::new([path]);
            source.files()?;
            env.from_source_with_watermarks(source, strategy, "Text File")
                .uid("text-file-source")
        }
        (None, Some(addr)) => env
            .from_source_with_watermarks(
                SocketTextSource::new(addr.clone()),
                strategy,
                "Socket Stream",
            )
            .uid("socket-source"),
        (None, None) => unreachable!("clap requires one"),
    };
    let lines = match opts.rate {
        Some(rate) => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive, got {rate}");
            throttle(&lines, rate)
        }
        None => lines,
    };
    let sessions = lines
        .process(ParseEvents)
        .name("Parse")
        .uid("parse")
        .key_by(|(user, _): &(String, i64)| user.clone())
        .process(Sessionize::new(opts.gap))
        .name("Sessionize")
        .uid("sessionize");
    super::write_pairs(&sessions, opts.output.as_deref());
    env.execute("Sessionize")?;
    Ok(())
}

/// Parses lines, failing the job on one that does not parse.
#[derive(Clone)]
struct ParseEvents;

impl ProcessFunction<String, (String, i64)> for ParseEvents {
    fn process_element(
        &mut self,
        line: String,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, (String, i64)>,
    ) -> anyhow::Result<()> {
        if line.trim().is_empty() {
            return Ok(());
        }
        out.collect(parse_event(&line).context("sessionize input")?);
        Ok(())
    }
}

/// Passes at most `rate` records per second per subtask (for watching a
/// job, or killing one half-way in a test).
fn throttle(lines: &DataStream<String>, rate: f64) -> DataStream<String> {
    let mut started: Option<Instant> = None;
    let mut passed = 0u64;
    lines.map(move |line| {
        let t0 = *started.get_or_insert_with(Instant::now);
        passed += 1;
        let due = Duration::from_secs_f64(passed as f64 / rate);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        line
    })
}
