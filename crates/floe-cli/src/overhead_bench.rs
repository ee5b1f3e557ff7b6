//! Checkpoint overhead: `floe bench keyed-count --pairs N --checkpoint-interval …`
//! runs the yardstick N times without and N times with checkpoints,
//! interleaved (off, on, off, on, …), each run in a fresh process, and
//! reports every run and the overhead.
//!
//! Interleaving pairs each run with checkpoints with the run without them
//! just before it, so slow drift of the machine (other load, how many huge
//! pages the tables get) cancels within a pair. The mean of the pairs' own
//! overheads is the figure to quote; the overhead between the two columns'
//! medians is reported too, and understates when runs drift.

use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// What the comparison keeps of one run's JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFigures {
    /// Records per second.
    pub records_per_sec: f64,
    /// Peak resident set size of the run's process.
    pub peak_rss_bytes: u64,
    /// Checkpoints completed.
    pub checkpoints_completed: usize,
    /// Mean checkpoint duration, in ms.
    pub checkpoint_duration_ms_mean: f64,
    /// Mean bytes written per checkpoint.
    pub checkpoint_bytes_mean: f64,
}

/// The JSON line of `--pairs`.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    /// Benchmark name.
    pub benchmark: &'static str,
    /// Off/on pairs run.
    pub pairs: usize,
    /// The runs without checkpoints, in order.
    pub off: Vec<RunFigures>,
    /// The runs with checkpoints, in order (`on[i]` ran right after `off[i]`).
    pub on: Vec<RunFigures>,
    /// Mean over the pairs of `(off - on) / off`, in percent (positive:
    /// checkpoints cost throughput).
    pub overhead_pct_mean: f64,
    /// The same between the medians of the two columns, in percent.
    pub overhead_pct_of_medians: f64,
}

/// Runs `pairs` interleaved pairs of `floe` with `off_args` and `on_args`
/// (the arguments of `floe` itself, e.g. `bench keyed-count …`).
pub fn run(
    pairs: usize,
    off_args: &[String],
    on_args: &[String],
) -> anyhow::Result<OverheadReport> {
    let (mut off, mut on) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    for _ in 0..pairs {
        off.push(one_run(off_args)?);
        on.push(one_run(on_args)?);
    }
    let rate = |runs: &[RunFigures]| runs.iter().map(|r| r.records_per_sec).collect::<Vec<_>>();
    let (mean, of_medians) = overhead(&rate(&off), &rate(&on));
    Ok(OverheadReport {
        benchmark: "checkpoint-overhead",
        pairs,
        off,
        on,
        overhead_pct_mean: mean,
        overhead_pct_of_medians: of_medians,
    })
}

/// One run in a fresh process: its report is the last line it prints.
fn one_run(args: &[String]) -> anyhow::Result<RunFigures> {
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the run `floe {}` failed ({})",
        args.join(" "),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .ok_or_else(|| anyhow::anyhow!("the run `floe {}` printed no report", args.join(" ")))?;
    serde_json::from_str(last)
        .map_err(|e| anyhow::anyhow!("the run's report is not the expected JSON ({e}): {last}"))
}

/// `(mean of the pairs' overheads, overhead of the medians)`, in percent.
pub fn overhead(off: &[f64], on: &[f64]) -> (f64, f64) {
    assert_eq!(off.len(), on.len(), "runs come in pairs");
    if off.is_empty() {
        return (0.0, 0.0);
    }
    let pct = |off: f64, on: f64| (off - on) / off * 100.0;
    let mean = off.iter().zip(on).map(|(&a, &b)| pct(a, b)).sum::<f64>() / off.len() as f64;
    (mean, pct(median(off), median(on)))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_of_pairs_and_of_medians() {
        // Pairs lose 10 %, 5 % and 20 %: mean 11.67 %.
        let (mean, of_medians) = overhead(&[10.0, 20.0, 15.0], &[9.0, 19.0, 12.0]);
        assert!((mean - 35.0 / 3.0).abs() < 1e-9, "{mean}");
        // Medians 15 and 12: 20 %.
        assert!((of_medians - 20.0).abs() < 1e-9, "{of_medians}");
        // Drift: every pair loses 10 % while the machine slows down; the
        // medians of an even count average the middle two.
        let (mean, of_medians) = overhead(&[20.0, 10.0], &[18.0, 9.0]);
        assert!((mean - 10.0).abs() < 1e-9);
        assert!((of_medians - 10.0).abs() < 1e-9);
        assert_eq!(overhead(&[], &[]), (0.0, 0.0));
    }
}
