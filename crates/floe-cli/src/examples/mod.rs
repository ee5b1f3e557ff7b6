//! Example jobs, runnable as `floe run <name> [args]`.

pub mod count_window_average;
pub mod keyed_count;
pub mod wordcount;

use clap::Parser;
use floe::JobArgs;

/// A job entry point.
pub type JobMain = fn(JobArgs) -> anyhow::Result<()>;

/// The examples by name.
pub const EXAMPLES: &[(&str, &str, JobMain)] = &[
    (
        "wordcount",
        "Counts words of a text file or a socket stream",
        wordcount::run,
    ),
    (
        "keyed-count",
        "Running count per key over generated records",
        keyed_count::run,
    ),
    (
        "count-window-average",
        "Average of every two values per key (the seed's CountWindowAverage)",
        count_window_average::run,
    ),
];

/// Looks an example up by name.
pub fn find(name: &str) -> Option<JobMain> {
    EXAMPLES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, f)| *f)
}

/// Parses a job's own arguments (what Floe's flags left over), the clap way:
/// `--help` prints the job's help and exits 0; a usage error prints the
/// error with the job's usage and exits 2.
pub fn parse_job_args<P: Parser>(name: &str, args: &JobArgs) -> P {
    P::parse_from(std::iter::once(name.to_string()).chain(args.job_args().iter().cloned()))
}
