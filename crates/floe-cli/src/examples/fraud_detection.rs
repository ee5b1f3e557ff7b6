//! Flink's fraud-detection tutorial in event time:
//! `floe run fraud-detection [--transactions N] [--accounts N] [--rate <tx/s>] [--output <dir>] [-p N]`.
//!
//! For each account, a small transaction (under 1.00) followed by a large
//! one (over 500.00) within one minute of event time raises an alert,
//! printed as `<account> <time of the large transaction> <small> <large>`.
//! A `ValueState` flag remembers the small transaction; an event-time timer
//! one minute after it clears the flag, as the tutorial's processing-time
//! timer does. Transactions are generated (deterministically, one every
//! 10 s of event time, timestamps increasing), so a run's alerts can be
//! computed independently.

use std::time::Duration;

use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;
use serde::{Deserialize, Serialize};

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "fraud-detection",
    about = "Alerts on a small then a large transaction"
)]
pub struct Args {
    /// How many transactions to generate.
    #[arg(long, default_value_t = 10_000)]
    pub transactions: u64,
    /// Over how many accounts.
    #[arg(long, default_value_t = 5)]
    pub accounts: u64,
    /// Generate at most this many transactions per second (all subtasks).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write alerts into part files in this directory (exactly once with
    /// checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

/// A small amount, in cents.
const SMALL: u64 = 100;
/// A large amount, in cents.
const LARGE: u64 = 50_000;
/// How long a small transaction stays suspicious.
const ONE_MINUTE: i64 = 60_000;
/// Event time of the first transaction.
const START_MS: i64 = 1_700_000_000_000;

/// One generated transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The account.
    pub account: u64,
    /// In cents.
    pub amount: u64,
    /// Event time, ms since the epoch.
    pub timestamp: i64,
}

/// Transaction `i` of a run over `accounts` accounts: one every 10 s,
/// about 1 in 10 small and 1 in 20 large.
pub fn transaction(i: u64, accounts: u64) -> Transaction {
    let r = mix(i);
    let amount = match r % 20 {
        0 | 1 => r % SMALL,                  // small: under 1.00
        2 => LARGE + 1 + (r >> 8) % 100_000, // large: over 500.00
        _ => SMALL + (r >> 8) % (LARGE - SMALL),
    };
    Transaction {
        account: (r >> 32) % accounts.max(1),
        amount,
        timestamp: START_MS + i as i64 * 10_000,
    }
}

/// SplitMix64's finalizer: a fixed, well-spread pseudo-random function of
/// the index, so that a run is reproducible.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The tutorial's `FraudDetector`, with an event-time timer.
#[derive(Clone)]
pub struct FraudDetector {
    /// The small transaction's amount, while it is under a minute old.
    flag: ValueState<u64>,
    /// When it stops being suspicious (and its timer fires).
    timer: ValueState<i64>,
}

impl Default for FraudDetector {
    fn default() -> Self {
        FraudDetector {
            flag: ValueState::new("flag"),
            timer: ValueState::new("timer-state"),
        }
    }
}

impl KeyedProcessFunction<u64, Transaction, (u64, String)> for FraudDetector {
    fn process_element(
        &mut self,
        tx: Transaction,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, String)>,
    ) -> anyhow::Result<()> {
        let (flag, timer) = (&self.flag, &self.timer);
        if let Some(small) = flag.value(ctx)? {
            let deadline = timer.value(ctx)?.unwrap_or(i64::MIN);
            // The timer clears the flag once the watermark passes the
            // deadline; a transaction after the deadline that arrives
            // before that must not alert either.
            if tx.amount > LARGE && tx.timestamp < deadline {
                out.collect((
                    tx.account,
                    format!("{} {} {}", tx.timestamp, cents(small), cents(tx.amount)),
                ));
            }
            // Any transaction after a small one ends the suspicion.
            ctx.timer_service().delete_event_time_timer(deadline)?;
            flag.clear(ctx)?;
            timer.clear(ctx)?;
        }
        if tx.amount < SMALL {
            let at = tx.timestamp + ONE_MINUTE;
            flag.update(ctx, tx.amount)?;
            timer.update(ctx, at)?;
            ctx.timer_service().register_event_time_timer(at)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _timestamp: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        _out: &mut Collector<'_, (u64, String)>,
    ) -> anyhow::Result<()> {
        // A minute passed: the small transaction is no longer suspicious.
        self.flag.clear(ctx)?;
        self.timer.clear(ctx)?;
        Ok(())
    }
}

fn cents(c: u64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// The alerts of a run, computed without Floe (for tests): per account,
/// in event-time order, a large transaction within a minute of the small
/// one directly before it.
pub fn expected_alerts(transactions: u64, accounts: u64) -> Vec<(u64, String)> {
    let mut flagged: std::collections::HashMap<u64, Transaction> = Default::default();
    let mut alerts = Vec::new();
    for i in 0..transactions {
        let tx = transaction(i, accounts);
        if let Some(small) = flagged.remove(&tx.account)
            && tx.timestamp < small.timestamp + ONE_MINUTE
            && tx.amount > LARGE
        {
            alerts.push((
                tx.account,
                format!(
                    "{} {} {}",
                    tx.timestamp,
                    cents(small.amount),
                    cents(tx.amount)
                ),
            ));
        }
        if tx.amount < SMALL {
            flagged.insert(tx.account, tx);
        }
    }
    alerts
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("fraud-detection", &args);
    let env = StreamEnvironment::from_job_args(&args);
    let accounts = opts.accounts;
    anyhow::ensure!(accounts > 0, "--accounts must be at least 1");
    let mut source = GeneratorSource::new(opts.transactions, move |i| transaction(i, accounts));
    if let Some(rate) = opts.rate {
        anyhow::ensure!(rate > 0.0, "--rate must be positive, got {rate}");
        source = source.with_rate(rate);
    }
    let strategy = WatermarkStrategy::for_monotonous_timestamps()
        .with_timestamp_assigner(|tx: &Transaction, _| tx.timestamp)
        .with_idleness(Duration::from_secs(5));
    // One source subtask, as the tutorial's: each account's transactions
    // then reach the detector in event-time order, which "directly
    // before" needs (the detector itself runs at the job's parallelism).
    let alerts = env
        .from_source_with_watermarks(source, strategy, "Transactions")
        .uid("transactions")
        .set_parallelism(1)
        .key_by(|tx: &Transaction| tx.account)
        .process(FraudDetector::default())
        .name("Fraud Detector")
        .uid("fraud-detector");
    super::write_pairs(&alerts, opts.output.as_deref());
    env.execute("Fraud Detection")?;
    Ok(())
}
