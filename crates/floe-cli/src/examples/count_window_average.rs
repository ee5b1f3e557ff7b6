//! The seed's CountWindowAverage: for each key, every two values emit their
//! average, kept in a `ValueState<(u64, u64)>` of (count, sum).
//!
//! `floe run count-window-average [--input <file>] [--output <path>] [-p N]`;
//! the input has one `<key> <value>` pair per line (by default the seed's
//! `(1,3) (1,5) (1,7) (1,4) (1,2)`), the output `<key> <average>` lines.

use anyhow::Context;
use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "count-window-average",
    about = "Average of every two values per key"
)]
pub struct Args {
    /// File of `<key> <value>` lines (unsigned integers).
    #[arg(long)]
    pub input: Option<std::path::PathBuf>,
    /// Write `<key> <average>` lines into part files in this directory
    /// (exactly once with checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

/// Keyed rich flat-map keeping (count, sum) per key; emits the average and
/// clears the state every second value.
#[derive(Clone)]
pub struct CountWindowAverage {
    sum: ValueState<(u64, u64)>,
}

impl Default for CountWindowAverage {
    fn default() -> Self {
        CountWindowAverage {
            sum: ValueState::new("average"),
        }
    }
}

impl RichFlatMapFunction<u64, (u64, u64), (u64, u64)> for CountWindowAverage {
    fn flat_map(
        &mut self,
        (key, value): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        let state = &self.sum;
        let (count, sum) = state.value(ctx)?.unwrap_or((0, 0));
        let sum = sum
            .checked_add(value)
            .ok_or_else(|| anyhow::anyhow!("sum of values for key {key} overflows u64"))?;
        let count = count + 1;
        if count >= 2 {
            out.collect((key, sum / count));
            state.clear(ctx)?;
        } else {
            state.update(ctx, (count, sum))?;
        }
        Ok(())
    }
}

fn parse_pairs(text: &str, path: &std::path::Path) -> anyhow::Result<Vec<(u64, u64)>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let mut it = l.split_whitespace().map(str::parse::<u64>);
            match (it.next(), it.next(), it.next()) {
                (Some(Ok(k)), Some(Ok(v)), None) => Ok((k, v)),
                _ => anyhow::bail!(
                    "{}:{}: expected `<key> <value>` (unsigned integers), got {l:?}",
                    path.display(),
                    i + 1
                ),
            }
        })
        .collect()
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("count-window-average", &args);
    let input = match &opts.input {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read input file {}", p.display()))?;
            parse_pairs(&text, p)?
        }
        None => vec![(1, 3), (1, 5), (1, 7), (1, 4), (1, 2)],
    };
    let env = StreamEnvironment::from_job_args(&args);
    let averages = env
        .from_collection(input)
        .uid("pairs")
        .key_by(|(k, _): &(u64, u64)| *k)
        .flat_map(CountWindowAverage::default())
        .name("Count Window Average")
        .uid("count-window-average");
    super::write_pairs(&averages, opts.output.as_deref());
    env.execute("CountWindowAverage")?;
    Ok(())
}
