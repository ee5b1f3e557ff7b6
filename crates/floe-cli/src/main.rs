//! `floe`: run jobs and benchmarks.

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use floe::state::StateBackendKind;
use floe_cli::bench::KeyedCountBench;
use floe_cli::examples::{EXAMPLES, find};

/// Floe: stateful stream processing with Flink's state, checkpoint and savepoint model.
#[derive(Debug, Parser)]
#[command(name = "floe", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an example job by name, or a job binary by path.
    ///
    /// Examples: wordcount, keyed-count, count-window-average (see `floe examples`).
    /// Floe's job flags may appear before the job or anywhere among its arguments:
    /// -p/--parallelism N, --config <file>, -D key=value. Durations in configuration
    /// accept Flink's forms (500 ms, 1s, 1 min; a bare number is milliseconds).
    #[command(
        after_help = "Run `floe run <job> --help` for a job's own arguments.",
        override_usage = "floe run [OPTIONS] <JOB> [ARGS]..."
    )]
    Run {
        /// Default parallelism of the job's operators.
        #[arg(short = 'p', long = "parallelism", value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: Option<u32>,
        /// Configuration file (default: $FLOE_CONF_DIR/floe-conf.yaml, then ./conf/floe-conf.yaml).
        #[arg(long)]
        config: Option<String>,
        /// A configuration value, key=value (repeatable).
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
        /// Example name or path to a job binary, then the job's arguments (and Floe job flags).
        // One positional, so that everything after the job's name, `--help`
        // included, belongs to the job.
        #[arg(
            value_name = "JOB",
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        job: Vec<String>,
    },
    /// List the example jobs.
    Examples,
    /// Run a benchmark and print one JSON line.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// N records (key = i mod K, value 1), key_by, a ValueState<u64> running count, a discarding sink.
    KeyedCount {
        /// Records to generate.
        #[arg(long)]
        records: u64,
        /// Distinct keys.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keys: u64,
        /// Parallelism of every operator.
        #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: u32,
        /// State backend (hashmap, also accepted as heap).
        #[arg(long, default_value = "heap")]
        backend: String,
        /// A configuration value, key=value (repeatable), e.g. floe.runtime.batch-size=2048.
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
        /// Take a checkpoint every this many milliseconds.
        #[arg(long, value_name = "MS")]
        checkpoint_interval: Option<u64>,
        /// Where checkpoints go (file:///…, s3://…; default: JobManager memory).
        #[arg(long, value_name = "URL")]
        checkpoint_dir: Option<String>,
    },
}

fn run_job(
    parallelism: Option<u32>,
    config: Option<String>,
    dynamic: Vec<String>,
    job: &str,
    args: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let mut argv: Vec<String> = Vec::new();
    if let Some(p) = parallelism {
        argv.extend(["-p".to_string(), p.to_string()]);
    }
    if let Some(c) = config {
        argv.extend(["--config".to_string(), c]);
    }
    for d in dynamic {
        argv.extend(["-D".to_string(), d]);
    }
    argv.extend(args);
    if let Some(main) = find(job) {
        floe::init_logging();
        main(floe::JobArgs::parse(argv)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = Path::new(job);
    if path.is_file() {
        let status = std::process::Command::new(path)
            .args(&argv)
            .status()
            .map_err(|e| anyhow::anyhow!("cannot start job binary {}: {e}", path.display()))?;
        return Ok(match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
            None => ExitCode::from(1),
        });
    }
    let names: Vec<&str> = EXAMPLES.iter().map(|(n, _, _)| *n).collect();
    anyhow::bail!(
        "unknown job '{job}': not an example ({}) and not a job binary file",
        names.join(", ")
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            parallelism,
            config,
            dynamic,
            mut job,
        } => {
            let args = job.split_off(1);
            run_job(parallelism, config, dynamic, &job[0], args)
        }
        Command::Examples => {
            for (name, about, _) in EXAMPLES {
                println!("{name:<22} {about}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(Bench::KeyedCount {
            records,
            keys,
            parallelism,
            backend,
            dynamic,
            checkpoint_interval,
            checkpoint_dir,
        }) => (|| {
            let backend: StateBackendKind = backend
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--backend: {e}"))?;
            let mut config = floe::core::Configuration::new();
            for d in &dynamic {
                config.set_dynamic_property(d)?;
            }
            if let Some(ms) = checkpoint_interval {
                config.set("execution.checkpointing.interval", format!("{ms}ms"));
            }
            if let Some(dir) = checkpoint_dir {
                config.set("state.checkpoints.dir", dir);
            }
            let report = KeyedCountBench {
                records,
                keys,
                parallelism,
                backend,
                config,
            }
            .run()?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        })(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
