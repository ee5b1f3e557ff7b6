//! `floe`: run jobs and benchmarks, and control running jobs (list,
//! savepoint, cancel, stop, checkpoints) through their REST API.

mod client;
mod cluster;

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
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

/// Floe's job flags that `floe run` takes before the job's name (they may
/// also appear among the job's arguments).
#[derive(Debug, clap::Args)]
struct RunFlags {
    /// Default parallelism of the job's operators.
    #[arg(short = 'p', long = "parallelism", value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: Option<u32>,
    /// Configuration file (default: $FLOE_CONF_DIR/floe-conf.yaml, then ./conf/floe-conf.yaml).
    #[arg(long)]
    config: Option<String>,
    /// A configuration value, key=value (repeatable).
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    dynamic: Vec<String>,
    /// Restore from a savepoint (or a retained checkpoint's chk-<n> directory).
    #[arg(short = 's', long = "fromSavepoint", value_name = "SAVEPOINT_PATH")]
    from_savepoint: Option<String>,
    /// With -s: skip savepoint state that maps to no operator of the job.
    #[arg(short = 'n', long = "allowNonRestoredState")]
    allow_non_restored_state: bool,
    /// Start from a retained checkpoint: a job's checkpoint directory (its
    /// latest completed checkpoint) or a chk-<n> directory.
    #[arg(long = "fromCheckpoint", value_name = "CHECKPOINT_PATH")]
    from_checkpoint: Option<String>,
    /// Submit to a cluster: the JobManager's REST address (host:port)
    /// instead of running here.
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    jobmanager: Option<String>,
    /// With -m: return once the job is submitted instead of waiting for
    /// its end.
    #[arg(short = 'd', long = "detached", requires = "jobmanager")]
    detached: bool,
}

impl RunFlags {
    /// The flags as a job binary takes them (`-m` and `-d` are the CLI's).
    fn into_argv(self) -> Vec<String> {
        let mut argv: Vec<String> = Vec::new();
        if let Some(p) = self.parallelism {
            argv.extend(["-p".to_string(), p.to_string()]);
        }
        if let Some(c) = self.config {
            argv.extend(["--config".to_string(), c]);
        }
        for d in self.dynamic {
            argv.extend(["-D".to_string(), d]);
        }
        if let Some(s) = self.from_savepoint {
            argv.extend(["-s".to_string(), s]);
        }
        if self.allow_non_restored_state {
            argv.push("-n".to_string());
        }
        if let Some(c) = self.from_checkpoint {
            argv.extend(["--fromCheckpoint".to_string(), c]);
        }
        argv
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an example job by name, or a job binary by path.
    ///
    /// Examples: wordcount, keyed-count, count-window-average (see `floe examples`).
    /// Floe's job flags may appear before the job or anywhere among its arguments:
    /// -p/--parallelism N, --config <file>, -D key=value, -s/--fromSavepoint <path>,
    /// -n/--allowNonRestoredState, --fromCheckpoint <path>. Durations in configuration
    /// accept Flink's forms (500 ms, 1s, 1 min; a bare number is milliseconds).
    #[command(
        after_help = "Run `floe run <job> --help` for a job's own arguments.",
        override_usage = "floe run [OPTIONS] <JOB> [ARGS]..."
    )]
    Run {
        #[command(flatten)]
        flags: RunFlags,
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
    /// List the jobs running on this host (from the job registry) or at -m.
    List {
        /// Also list jobs that ended but whose process is still running.
        #[arg(short = 'a', long = "all")]
        all: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Take a savepoint of a running job, or dispose of one with -d.
    ///
    /// Waits for the savepoint and prints `Savepoint completed. Path: <location>`.
    /// Without a target directory, the job's state.savepoints.dir is used.
    #[command(
        override_usage = "floe savepoint [OPTIONS] <JOB_ID> [TARGET_DIRECTORY]\n       floe savepoint -d <SAVEPOINT_PATH>"
    )]
    Savepoint {
        /// The job's id (a unique prefix is enough).
        #[arg(value_name = "JOB_ID", required_unless_present = "dispose")]
        job_id: Option<String>,
        /// Where to write the savepoint (a directory or URL).
        #[arg(value_name = "TARGET_DIRECTORY")]
        target_directory: Option<String>,
        /// Dispose of (delete) the savepoint at this path instead.
        #[arg(
            short = 'd',
            long = "dispose",
            value_name = "SAVEPOINT_PATH",
            conflicts_with_all = ["job_id", "target_directory", "jobmanager"]
        )]
        dispose: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Cancel a running job, optionally taking a savepoint first (-s).
    #[command(override_usage = "floe cancel [OPTIONS] [-s [TARGET_DIRECTORY]] <JOB_ID>")]
    Cancel {
        /// Take a savepoint (to this directory, else state.savepoints.dir), then cancel.
        #[arg(
            short = 's',
            long = "withSavepoint",
            value_name = "TARGET_DIRECTORY",
            num_args = 0..=1
        )]
        with_savepoint: Option<Option<String>>,
        /// The job's id (a unique prefix is enough).
        #[arg(value_name = "JOB_ID")]
        job_id: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Stop a running job with a savepoint: sources stop, the savepoint is taken, the job finishes.
    Stop {
        /// Where to write the savepoint (default: state.savepoints.dir).
        #[arg(short = 'p', long = "savepointPath", value_name = "DIRECTORY")]
        savepoint_path: Option<String>,
        /// End the input and flush everything in flight (timers, buffers) before the savepoint.
        #[arg(short = 'd', long = "drain")]
        drain: bool,
        /// The job's id (a unique prefix is enough).
        #[arg(value_name = "JOB_ID")]
        job_id: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Show a running job's checkpoint counts and most recent checkpoints and savepoints.
    Checkpoints {
        /// The job's id (a unique prefix is enough).
        #[arg(value_name = "JOB_ID")]
        job_id: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Read the live state of one key of a running job's queryable state (queryable-state.enable).
    Query {
        /// The job's id (a unique prefix is enough).
        #[arg(value_name = "JOB_ID")]
        job_id: String,
        /// The queryable state's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// The key as JSON (42, "word", [1,2]); text that is not JSON is a string key.
        #[arg(value_name = "KEY", allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Run a cluster JobManager: TaskManagers register with it; it serves the REST API.
    ///
    /// Prints `JobManager RPC: <host:port>` and `REST endpoint: http://<host:port>` to
    /// stderr and serves until SIGTERM or SIGINT. The control plane of issue 21: jobs
    /// cannot be submitted to a cluster yet (docs/cluster.md).
    Jobmanager {
        /// host:port of the RPC endpoint (default: jobmanager.rpc.address and
        /// jobmanager.rpc.port, localhost:6123).
        #[arg(long = "rpc-address", value_name = "HOST:PORT")]
        rpc_address: Option<String>,
        /// Configuration file (default: $FLOE_CONF_DIR/floe-conf.yaml, then ./conf/floe-conf.yaml).
        #[arg(long)]
        config: Option<String>,
        /// A configuration value, key=value (repeatable); unknown keys are errors.
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
    },
    /// Run a cluster TaskManager that registers with a JobManager.
    ///
    /// Prints `TaskManager <id> registered with <host:port>` on each (re-)registration and
    /// serves until SIGTERM or SIGINT; exits non-zero when it cannot register within
    /// taskmanager.registration.timeout.
    Taskmanager {
        /// The JobManager's RPC address.
        #[arg(long = "jobmanager", value_name = "HOST:PORT")]
        jobmanager: String,
        /// Address (host or host:port) to bind the RPC endpoint to and advertise (default:
        /// taskmanager.host and taskmanager.rpc.port).
        #[arg(long, value_name = "ADDRESS")]
        bind: Option<String>,
        /// Task slots (default: taskmanager.numberOfTaskSlots, 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        slots: Option<u32>,
        /// Configuration file (default: $FLOE_CONF_DIR/floe-conf.yaml, then ./conf/floe-conf.yaml).
        #[arg(long)]
        config: Option<String>,
        /// A configuration value, key=value (repeatable); unknown keys are errors.
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
    },
    /// Start or stop a local cluster: a JobManager and TaskManagers as detached processes.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Describe a savepoint or retained checkpoint: operators by uid, state names and kinds, key groups, sizes.
    Info {
        /// The savepoint or checkpoint directory (or its _metadata file).
        #[arg(value_name = "PATH")]
        path: String,
    },
}

/// `floe cluster`: a local cluster of detached processes.
#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Start a JobManager and N TaskManagers, wait until all registered, print their addresses.
    ///
    /// Pid files and logs go to the cluster directory.
    Start {
        /// TaskManagers to start.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        taskmanagers: u32,
        /// Task slots per TaskManager (default: taskmanager.numberOfTaskSlots, 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        slots: Option<u32>,
        /// Configuration file passed to every process.
        #[arg(long)]
        config: Option<String>,
        /// A configuration value passed to every process, key=value (repeatable).
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
        /// Directory for pid files and logs (default: $FLOE_CLUSTER_DIR, else ./.floe-cluster).
        #[arg(long, value_name = "DIR")]
        cluster_dir: Option<std::path::PathBuf>,
    },
    /// Stop the cluster's processes (SIGTERM, then SIGKILL after the grace period) and remove the pid files.
    Stop {
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(long, default_value_t = 10)]
        grace: u64,
        /// Directory of the pid files (default: $FLOE_CLUSTER_DIR, else ./.floe-cluster).
        #[arg(long, value_name = "DIR")]
        cluster_dir: Option<std::path::PathBuf>,
    },
}

/// How the job-control commands reach a job.
#[derive(Debug, Args)]
struct Connect {
    /// The job's REST endpoint, host:port (as printed by the job); default: find the job in
    /// this host's job registry ($FLOE_REGISTRY_DIR, else <temp dir>/floe-jobs-<uid>).
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    jobmanager: Option<String>,
    /// The job's REST token (rest.auth.token), sent as a bearer token; default: $FLOE_REST_TOKEN
    /// (prefer the variable: other users can read command lines).
    #[arg(long = "token", value_name = "TOKEN")]
    token: Option<String>,
}

impl Connect {
    /// The options the client takes: the token from the flag, else from
    /// the environment.
    fn options(self) -> client::ConnectOptions {
        client::ConnectOptions {
            jobmanager: self.jobmanager,
            token: self
                .token
                .or_else(|| std::env::var(client::TOKEN_ENV).ok())
                .filter(|t| !t.is_empty()),
        }
    }
}

/// A directory or snapshot path given on the command line, relative paths
/// taken from the current directory (the job's process may run elsewhere).
/// `jobmanager` stays as it is: it names a storage, not a path.
fn local_path(path: &str) -> String {
    if path.trim().eq_ignore_ascii_case("jobmanager") {
        return path.to_string();
    }
    floe::api::absolute_location(path)
}

/// Prints a panic as one `error:` line (no backtrace) for the commands that
/// only talk to jobs or read files: every failure of theirs is meant to be
/// an error message, so a panic is a bug, reported as such.
fn one_line_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error (a bug in floe, please report it): {}{at}",
            message.replace('\n', " ")
        );
    }));
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Kafka -> keyed count -> Kafka: fills an input topic with N keys, runs the
    /// kafka-keyed-count pipeline bounded at its end, checks the output, prints one JSON line.
    /// Starts a Tansu test broker unless given one.
    KafkaKeyedCount {
        /// The broker (host:port,…); default: a Tansu broker started for the run.
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Input records (key = i mod K).
        #[arg(long)]
        records: u64,
        /// Distinct keys.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keys: u64,
        /// Partitions of the input and output topics.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Parallelism of every operator.
        #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: u32,
        /// The sink's guarantee: exactly-once, at-least-once or none.
        #[arg(long, default_value = "exactly-once")]
        delivery_guarantee: String,
        /// State backend (hashmap, also accepted as heap).
        #[arg(long, default_value = "heap")]
        backend: String,
        /// A configuration value, key=value (repeatable).
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
        /// Take a checkpoint every this many milliseconds.
        #[arg(long, value_name = "MS")]
        checkpoint_interval: Option<u64>,
        /// Where checkpoints go (file:///…; default: JobManager memory).
        #[arg(long, value_name = "URL")]
        checkpoint_dir: Option<String>,
    },
    /// The Kafka broker's own produce and fetch rates with Floe's plain client (no job):
    /// the ceiling a Kafka job can approach. Starts a Tansu test broker unless given one.
    KafkaCeiling {
        /// The broker (host:port,…); default: a Tansu broker started for the run.
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Records to write and read back.
        #[arg(long, default_value_t = 2_000_000)]
        records: u64,
        /// Partitions of the fresh topic.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Bytes per record value.
        #[arg(long, default_value_t = 16)]
        value_bytes: usize,
    },
    /// keyed-count in a child process until a checkpoint holds every key's state, SIGKILL,
    /// then a restore from that checkpoint in a new process: one JSON line with the
    /// first run's records/s and checkpoints and the recovery time (spawn to first record).
    Recovery {
        /// Distinct keys: the state the checkpoint holds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keys: u64,
        /// Parallelism of every operator.
        #[arg(long, short = 'p', default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: u32,
        /// State backend (hashmap, also accepted as heap, or rocksdb).
        #[arg(long, default_value = "heap")]
        backend: String,
        /// Incremental checkpoints (RocksDB backend).
        #[arg(long)]
        incremental: bool,
        /// Take a checkpoint every this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        checkpoint_interval: u64,
        /// Where checkpoints go (file:///…, s3://…).
        #[arg(long, value_name = "URL")]
        checkpoint_dir: String,
        /// A configuration value for both runs, key=value (repeatable).
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
        /// Give up when the first run has no checkpoint of every key after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        timeout: u64,
    },
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
        /// Incremental checkpoints (RocksDB backend; needs --checkpoint-dir).
        #[arg(long)]
        incremental: bool,
        /// While the job runs, query its `count` state from another process with this many
        /// queries in flight (reports latency percentiles and queries per second).
        #[arg(long, value_name = "CONCURRENCY")]
        query_load: Option<usize>,
        /// How long the query process queries, in seconds (the job should run longer).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        query_seconds: f64,
        /// Pace the query process to about this many queries per second in all (default:
        /// as fast as the answers come), to measure what a given query rate costs the job.
        #[arg(long, value_name = "QUERIES_PER_SEC", value_parser = parse_positive_rate)]
        query_rate: Option<f64>,
        /// Measure what checkpoints cost: run N interleaved pairs, each run in a fresh
        /// process, once without and once with the checkpoint flags, and report every
        /// run with the mean overhead of the pairs (needs --checkpoint-interval).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        pairs: Option<u32>,
    },
    /// keyed-count on a local cluster it starts (a JobManager, P one-slot TaskManagers on
    /// 127.0.0.2..) versus the same job embedded, in alternating pairs: one JSON line per run
    /// (records/s, wall time, network bytes per record) and a summary with the median ratio.
    ClusterKeyedCount {
        /// Records to generate.
        #[arg(long)]
        records: u64,
        /// Distinct keys.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keys: u64,
        /// Parallelism of every operator, and TaskManagers started.
        #[arg(long, short = 'p', default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=253))]
        parallelism: u32,
        /// State backend (hashmap, also accepted as heap, or rocksdb).
        #[arg(long, default_value = "heap")]
        backend: String,
        /// Take a checkpoint every this many milliseconds.
        #[arg(long, value_name = "MS")]
        checkpoint_interval: Option<u64>,
        /// Where checkpoints go (a directory every process sees; default: JobManager memory).
        #[arg(long, value_name = "URL")]
        checkpoint_dir: Option<String>,
        /// Embedded/cluster pairs to run.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        pairs: u32,
    },
    /// N records (key = i mod K, event time +1 ms per 1,000 records per source subtask);
    /// per record a ValueState<u64> count and an event-time timer at the end of its
    /// second, which clears the count.
    Timers {
        /// Records to generate (a multiple of the parallelism).
        #[arg(long)]
        records: u64,
        /// Distinct keys.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keys: u64,
        /// Parallelism of every operator.
        #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: u32,
        /// State backend (hashmap, also accepted as heap, or rocksdb).
        #[arg(long, default_value = "heap")]
        backend: String,
        /// A configuration value, key=value (repeatable).
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
        /// Take a checkpoint every this many milliseconds.
        #[arg(long, value_name = "MS")]
        checkpoint_interval: Option<u64>,
        /// Where checkpoints go (file:///…, s3://…; default: JobManager memory).
        #[arg(long, value_name = "URL")]
        checkpoint_dir: Option<String>,
        /// Incremental checkpoints (RocksDB backend; needs --checkpoint-dir).
        #[arg(long)]
        incremental: bool,
    },
    /// A Nexmark query (q0-q5, q7-q9, q11, q12) over N generated events into a counting sink;
    /// measured from the first event generated to the last row after the final watermark
    /// (which also fires the windows still open and closes the auctions), as Flink's harness.
    Nexmark {
        /// The query.
        #[arg(long, value_enum)]
        query: floe_cli::examples::nexmark::Query,
        /// Events to generate.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// Parallelism of every operator (and number of generator splits).
        #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: u32,
        /// Events per second of event time, all splits together (the harness's NEXMARK_TPS).
        #[arg(long, default_value_t = floe_nexmark::DEFAULT_TPS,
              value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64 / 2))]
        tps: u32,
        /// State backend (hashmap, also accepted as heap, or rocksdb).
        #[arg(long, default_value = "heap")]
        backend: String,
        /// A configuration value, key=value (repeatable).
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        dynamic: Vec<String>,
        /// Take a checkpoint every this many milliseconds.
        #[arg(long, value_name = "MS")]
        checkpoint_interval: Option<u64>,
        /// Where checkpoints go (file:///…, s3://…; default: JobManager memory).
        #[arg(long, value_name = "URL")]
        checkpoint_dir: Option<String>,
        /// Incremental checkpoints (RocksDB backend; needs --checkpoint-dir).
        #[arg(long)]
        incremental: bool,
    },
    /// The query process of `keyed-count --query-load` (prints its JSON report).
    #[command(hide = true)]
    QueryLoad {
        #[arg(long)]
        proxy: std::net::SocketAddr,
        #[arg(long)]
        job: floe::core::JobId,
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        seconds: f64,
        #[arg(long, value_parser = parse_positive_rate)]
        rate: Option<f64>,
    },
}

/// The state backend and configuration a benchmark's flags ask for.
fn bench_config(
    backend: &str,
    dynamic: &[String],
    checkpoint_interval: Option<u64>,
    checkpoint_dir: Option<String>,
    incremental: bool,
) -> anyhow::Result<(StateBackendKind, floe::core::Configuration)> {
    let backend: StateBackendKind = backend
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--backend: {e}"))?;
    let mut config = floe::core::Configuration::new();
    for d in dynamic {
        config.set_dynamic_property(d)?;
    }
    if let Some(ms) = checkpoint_interval {
        config.set("execution.checkpointing.interval", format!("{ms}ms"));
    }
    if let Some(dir) = checkpoint_dir {
        config.set("state.checkpoints.dir", dir);
    }
    if incremental {
        if backend != StateBackendKind::RocksDb {
            anyhow::bail!("--incremental needs --backend rocksdb");
        }
        config.set("state.backend.incremental", "true");
    }
    Ok((backend, config))
}

/// Prints a benchmark's report as its one JSON line.
fn print_json(report: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string(report)?);
    Ok(ExitCode::SUCCESS)
}

/// A rate: a finite number greater than zero.
fn parse_positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("must be a number greater than 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn run_job(mut flags: RunFlags, job: &str, args: Vec<String>) -> anyhow::Result<ExitCode> {
    if let Some(jobmanager) = flags.jobmanager.take() {
        if let Some(path) = flags.config.take() {
            // The cluster cannot read a file here: its settings travel
            // with the submission as -D pairs, before the command line's,
            // which win.
            let file = floe::core::Configuration::from_yaml_file(std::path::Path::new(&path))
                .map_err(|e| anyhow::anyhow!("--config: {e}"))?;
            let mut dynamic: Vec<String> = file.iter().map(|(k, v)| format!("{k}={v}")).collect();
            dynamic.append(&mut flags.dynamic);
            flags.dynamic = dynamic;
        }
        // Paths the cluster reads are made absolute here, where they were
        // meant.
        flags.from_savepoint = flags
            .from_savepoint
            .map(|s| floe::api::absolute_location(&s));
        flags.from_checkpoint = flags
            .from_checkpoint
            .map(|s| floe::api::absolute_location(&s));
        let detached = flags.detached;
        let mut argv = flags.into_argv();
        argv.extend(args);
        let token = std::env::var(client::TOKEN_ENV).ok();
        return client::submit::submit(&jobmanager, token.as_deref(), job, argv, detached);
    }
    let mut argv = flags.into_argv();
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

/// `floe cancel`'s operands: `-s <jobId>` means a savepoint to the default
/// directory (the value belongs to the job id, as in Flink's CLI).
fn cancel_operands(
    with_savepoint: Option<Option<String>>,
    job_id: Option<String>,
) -> (String, Option<Option<String>>) {
    match (with_savepoint, job_id) {
        (ws, Some(job)) => (job, ws),
        (Some(Some(job)), None) => (job, Some(None)),
        (_, None) => {
            let mut cli = Cli::command();
            let cancel = cli
                .find_subcommand_mut("cancel")
                .expect("the cancel command");
            cancel
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "the following required arguments were not provided:\n  <JOB_ID>",
                )
                .exit()
        }
    }
}

/// Lets the job-control commands end quietly when their output is piped
/// into a reader that stops early (`floe checkpoints <id> | head`), like
/// other Unix tools, instead of panicking on a broken pipe.
fn die_quietly_on_broken_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE at the start of
    // a command, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::List { .. }
            | Command::Savepoint { .. }
            | Command::Cancel { .. }
            | Command::Stop { .. }
            | Command::Checkpoints { .. }
            | Command::Query { .. }
            | Command::Info { .. }
    ) {
        die_quietly_on_broken_pipe();
        one_line_panics();
    }
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Run { flags, mut job } => {
            let args = job.split_off(1);
            run_job(flags, &job[0], args)
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
            incremental,
            query_load,
            query_seconds,
            query_rate,
            pairs,
        }) => (|| {
            if let Some(pairs) = pairs {
                let Some(ms) = checkpoint_interval else {
                    anyhow::bail!(
                        "--pairs compares runs with and without checkpoints: give --checkpoint-interval"
                    );
                };
                if query_load.is_some() {
                    anyhow::bail!("--pairs and --query-load cannot be combined");
                }
                let mut off: Vec<String> = ["bench", "keyed-count"].map(String::from).to_vec();
                off.extend(["--records".into(), records.to_string()]);
                off.extend(["--keys".into(), keys.to_string()]);
                off.extend(["-p".into(), parallelism.to_string()]);
                off.extend(["--backend".into(), backend.clone()]);
                for d in &dynamic {
                    off.extend(["-D".into(), d.clone()]);
                }
                let mut on = off.clone();
                on.extend(["--checkpoint-interval".into(), ms.to_string()]);
                if let Some(dir) = &checkpoint_dir {
                    on.extend(["--checkpoint-dir".into(), dir.clone()]);
                }
                if incremental {
                    on.push("--incremental".into());
                }
                let report = floe_cli::overhead_bench::run(pairs as usize, &off, &on)?;
                return print_json(&report);
            }
            let (backend, config) = bench_config(
                &backend,
                &dynamic,
                checkpoint_interval,
                checkpoint_dir,
                incremental,
            )?;
            let report = KeyedCountBench {
                records,
                keys,
                parallelism,
                backend,
                config,
                query_load: query_load.map(|concurrency| floe_cli::bench::QueryLoadOptions {
                    concurrency: concurrency.max(1),
                    seconds: query_seconds,
                    rate: query_rate,
                }),
            }
            .run()?;
            print_json(&report)
        })(),
        Command::Bench(Bench::Recovery {
            keys,
            parallelism,
            backend,
            incremental,
            checkpoint_interval,
            checkpoint_dir,
            dynamic,
            timeout,
        }) => (|| {
            let kind: StateBackendKind = backend
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--backend: {e}"))?;
            if incremental && kind != StateBackendKind::RocksDb {
                anyhow::bail!("--incremental needs --backend rocksdb");
            }
            let report = floe_cli::recovery_bench::RecoveryBench {
                keys,
                parallelism,
                backend: kind.to_string(),
                incremental,
                checkpoint_interval_ms: checkpoint_interval,
                checkpoint_dir,
                dynamic,
                timeout: std::time::Duration::from_secs(timeout),
            }
            .run()?;
            print_json(&report)
        })(),
        Command::Bench(Bench::ClusterKeyedCount {
            records,
            keys,
            parallelism,
            backend,
            checkpoint_interval,
            checkpoint_dir,
            pairs,
        }) => (|| {
            floe_cli::cluster_bench::ClusterKeyedCountBench {
                records,
                keys,
                parallelism,
                backend: backend
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--backend: {e}"))?,
                checkpoint_interval,
                checkpoint_dir,
                pairs,
            }
            .run(&mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        })(),
        Command::Bench(Bench::Timers {
            records,
            keys,
            parallelism,
            backend,
            dynamic,
            checkpoint_interval,
            checkpoint_dir,
            incremental,
        }) => (|| {
            let (backend, config) = bench_config(
                &backend,
                &dynamic,
                checkpoint_interval,
                checkpoint_dir,
                incremental,
            )?;
            let report = floe_cli::timers_bench::TimersBench {
                records,
                keys,
                parallelism,
                backend,
                config,
                records_per_ms: floe_cli::timers_bench::RECORDS_PER_MS,
            }
            .run()?;
            print_json(&report)
        })(),
        Command::Bench(Bench::Nexmark {
            query,
            events,
            parallelism,
            tps,
            backend,
            dynamic,
            checkpoint_interval,
            checkpoint_dir,
            incremental,
        }) => (|| {
            let (backend, config) = bench_config(
                &backend,
                &dynamic,
                checkpoint_interval,
                checkpoint_dir,
                incremental,
            )?;
            let report = floe_cli::nexmark_bench::NexmarkBench {
                query,
                events,
                tps,
                parallelism,
                backend,
                config,
            }
            .run()?;
            print_json(&report)
        })(),
        Command::Bench(Bench::KafkaKeyedCount {
            bootstrap_servers,
            records,
            keys,
            partitions,
            parallelism,
            delivery_guarantee,
            backend,
            dynamic,
            checkpoint_interval,
            checkpoint_dir,
        }) => (|| {
            let (backend, config) = bench_config(
                &backend,
                &dynamic,
                checkpoint_interval,
                checkpoint_dir,
                false,
            )?;
            let report = floe_cli::kafka_bench::KafkaKeyedCountBench {
                bootstrap_servers,
                records,
                keys,
                partitions,
                parallelism,
                guarantee: delivery_guarantee
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--delivery-guarantee: {e}"))?,
                backend,
                config,
            }
            .run()?;
            print_json(&report)
        })(),
        Command::Bench(Bench::KafkaCeiling {
            bootstrap_servers,
            records,
            partitions,
            value_bytes,
        }) => (|| {
            let report = floe_cli::kafka_bench::KafkaCeiling {
                bootstrap_servers,
                records,
                partitions,
                value_bytes,
            }
            .run()?;
            print_json(&report)
        })(),
        Command::Bench(Bench::QueryLoad {
            proxy,
            job,
            keys,
            concurrency,
            seconds,
            rate,
        }) => (|| {
            let report = floe_cli::query_bench::QueryLoad {
                proxy,
                job,
                name: "count".into(),
                keys,
                concurrency: concurrency.max(1),
                seconds,
                rate,
            }
            .run()?;
            print_json(&report)
        })(),
        Command::List { all, connect } => ok(client::commands::list(all, &connect.options())),
        Command::Savepoint {
            dispose: Some(path),
            ..
        } => ok(floe_cli::snapshot_tools::dispose(&local_path(&path))),
        Command::Savepoint {
            job_id,
            target_directory,
            connect,
            ..
        } => ok(client::commands::savepoint(
            job_id
                .as_deref()
                .expect("clap requires a job id without -d"),
            target_directory.map(|d| local_path(&d)).as_deref(),
            &connect.options(),
        )),
        Command::Cancel {
            with_savepoint,
            job_id,
            connect,
        } => {
            let (job, with_savepoint) = cancel_operands(with_savepoint, job_id);
            let with_savepoint = with_savepoint.map(|d| d.map(|d| local_path(&d)));
            ok(client::commands::cancel(
                &job,
                with_savepoint.as_ref().map(|d| d.as_deref()),
                &connect.options(),
            ))
        }
        Command::Stop {
            savepoint_path,
            drain,
            job_id,
            connect,
        } => ok(client::commands::stop(
            &job_id,
            savepoint_path.map(|d| local_path(&d)).as_deref(),
            drain,
            &connect.options(),
        )),
        Command::Checkpoints { job_id, connect } => {
            ok(client::commands::checkpoints(&job_id, &connect.options()))
        }
        Command::Query {
            job_id,
            name,
            key,
            connect,
        } => ok(client::commands::query(
            &job_id,
            &name,
            &key,
            &connect.options(),
        )),
        Command::Info { path } => ok(floe_cli::snapshot_tools::info(&local_path(&path))),
        Command::Jobmanager {
            rpc_address,
            config,
            dynamic,
        } => cluster::roles::jobmanager(rpc_address, config.as_deref(), &dynamic),
        Command::Taskmanager {
            jobmanager,
            bind,
            slots,
            config,
            dynamic,
        } => cluster::roles::taskmanager(jobmanager, bind, slots, config.as_deref(), &dynamic),
        Command::Cluster(ClusterCommand::Start {
            taskmanagers,
            slots,
            config,
            dynamic,
            cluster_dir,
        }) => ok(cluster::local::start(cluster::local::StartOptions {
            dir: cluster::local::cluster_dir(cluster_dir),
            taskmanagers,
            slots,
            config,
            dynamic,
        })),
        Command::Cluster(ClusterCommand::Stop { grace, cluster_dir }) => ok(cluster::local::stop(
            &cluster::local::cluster_dir(cluster_dir),
            std::time::Duration::from_secs(grace),
            true,
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
