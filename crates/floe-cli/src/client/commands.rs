//! `floe list`, `savepoint`, `cancel`, `stop` and `checkpoints`, printing
//! what Flink's CLI prints where there is an equivalent.
//!
//! Results go to stdout (`Savepoint completed. Path: …` is the line scripts
//! read); progress and hints go to stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::format::{local_time, millis, size};
use super::{ClientError, ConnectOptions, JobTarget, RestClient, api_path, resolve};

/// How often a long operation's status is asked for.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long `cancel` waits for the job to reach a terminal state.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

const RUNNING_HEADER: &str = "------------------ Running/Restarting Jobs -------------------";
const TERMINATED_HEADER: &str = "---------------------- Terminated Jobs -----------------------";
const FOOTER: &str = "--------------------------------------------------------------";

fn is_terminal(state: &str) -> bool {
    matches!(state, "FINISHED" | "CANCELED" | "FAILED")
}

/// One job as `list` shows it.
struct Listed {
    id: String,
    name: String,
    state: String,
    start_ms: u64,
}

fn overview_jobs(client: &RestClient) -> Result<Vec<Listed>, ClientError> {
    let v = client.get("/jobs/overview")?;
    Ok(v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| Listed {
            id: j["jid"].as_str().unwrap_or("?").to_string(),
            name: j["name"].as_str().unwrap_or("?").to_string(),
            state: j["state"].as_str().unwrap_or("UNKNOWN").to_string(),
            start_ms: j["start-time"].as_u64().unwrap_or(0),
        })
        .collect())
}

/// `floe list [-a]`: the jobs running on this host (or at `-m`).
pub fn list(all: bool, connect: &ConnectOptions) -> anyhow::Result<()> {
    let token = connect.token.as_deref();
    let jobs: Vec<Listed> = match connect.jobmanager.as_deref() {
        Some(address) => overview_jobs(&RestClient::new(address, token)?)?,
        None => floe_rest::registry::list()
            .into_iter()
            .map(|entry| {
                let answer = RestClient::new(&entry.rest_address, token)
                    .map_err(|e| e.to_string())
                    .and_then(|c| overview_jobs(&c).map_err(|e| e.to_string()));
                match answer {
                    Ok(found) => {
                        found
                            .into_iter()
                            .find(|j| j.id == entry.job_id)
                            .unwrap_or(Listed {
                                id: entry.job_id.clone(),
                                name: entry.name.clone(),
                                state: "UNKNOWN".into(),
                                start_ms: 0,
                            })
                    }
                    Err(e) => {
                        eprintln!("warning: job {}: {e}", entry.job_id);
                        Listed {
                            id: entry.job_id,
                            name: entry.name,
                            state: "UNKNOWN".into(),
                            start_ms: 0,
                        }
                    }
                }
            })
            .collect(),
    };
    let (mut terminated, mut running): (Vec<Listed>, Vec<Listed>) =
        jobs.into_iter().partition(|j| is_terminal(&j.state));
    running.sort_by_key(|j| j.start_ms);
    terminated.sort_by_key(|j| j.start_ms);
    let line = |j: &Listed| {
        let start = if j.start_ms == 0 {
            "(start time unknown)".to_string()
        } else {
            local_time(j.start_ms)
        };
        format!("{start} : {} : {} ({})", j.id, j.name, j.state)
    };
    if running.is_empty() {
        println!("No running jobs.");
    } else {
        println!("{RUNNING_HEADER}");
        running.iter().for_each(|j| println!("{}", line(j)));
        println!("{FOOTER}");
    }
    if all {
        if terminated.is_empty() {
            println!("No terminated jobs.");
        } else {
            println!("{TERMINATED_HEADER}");
            terminated.iter().for_each(|j| println!("{}", line(j)));
            println!("{FOOTER}");
        }
    }
    Ok(())
}

fn request_id(answer: &Value, what: &str) -> anyhow::Result<String> {
    answer["request-id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| {
            format!("the job accepted the {what} request but sent no request-id: {answer}")
        })
}

/// Polls `savepoints/{trigger}` until it completes; the savepoint's
/// location, or an error carrying the failure cause.
fn wait_for_savepoint(target: &JobTarget, trigger: &str) -> anyhow::Result<String> {
    let path = api_path(&["jobs", &target.job_id, "savepoints", trigger]);
    eprint!("Waiting for response...");
    let started = Instant::now();
    let mut last_dot = started;
    let result = loop {
        std::thread::sleep(POLL_INTERVAL);
        let answer = match target.client.get(&path) {
            Ok(a) => a,
            Err(e @ ClientError::Unreachable { .. }) => {
                break Err(anyhow::Error::new(e).context(format!(
                    "lost contact with job {} while waiting for savepoint request {trigger}, so its outcome is unknown",
                    target.job_id
                )));
            }
            Err(e) => break Err(e.into()),
        };
        match answer["status"]["id"].as_str() {
            Some("IN_PROGRESS") => {
                if last_dot.elapsed() >= Duration::from_secs(1) {
                    eprint!(".");
                    let _ = std::io::stderr().flush();
                    last_dot = Instant::now();
                }
            }
            Some("COMPLETED") => {
                let op = &answer["operation"];
                if let Some(location) = op["location"].as_str() {
                    break Ok(location.to_string());
                }
                let cause = &op["failure-cause"];
                let reason = cause["stack-trace"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| cause.to_string());
                break Err(anyhow::anyhow!(
                    "savepoint of job {} failed: {reason}",
                    target.job_id
                ));
            }
            _ => {
                break Err(anyhow::anyhow!(
                    "unexpected savepoint status from {}: {answer}",
                    target.client.address()
                ));
            }
        }
    };
    eprintln!();
    result
}

fn print_completed(location: &str) {
    println!("Savepoint completed. Path: {location}");
    eprintln!(
        "You can resume your program from this savepoint with: floe run -s {location} <job> [args]"
    );
}

/// Polls the job until it reached a terminal state or its endpoint is gone
/// (the job's process ended); its last known state.
fn wait_for_end(target: &JobTarget, limit: Duration) -> anyhow::Result<String> {
    let path = api_path(&["jobs", &target.job_id]);
    let started = Instant::now();
    let mut state = String::from("UNKNOWN");
    while started.elapsed() < limit {
        match target.client.get(&path) {
            Ok(v) => {
                state = v["state"].as_str().unwrap_or("UNKNOWN").to_string();
                if is_terminal(&state) {
                    return Ok(state);
                }
            }
            // The job ended and took its endpoint with it.
            Err(ClientError::Unreachable { .. }) => return Ok(state),
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    bail!(
        "job {} was asked to cancel but is still {state} after {} s",
        target.job_id,
        limit.as_secs()
    )
}

/// `floe savepoint <jobId> [targetDirectory]`.
pub fn savepoint(
    job: &str,
    target_directory: Option<&str>,
    connect: &ConnectOptions,
) -> anyhow::Result<()> {
    let target = resolve(job, connect)?;
    eprintln!("Triggering savepoint for job {}.", target.job_id);
    let answer = target.client.post(
        &api_path(&["jobs", &target.job_id, "savepoints"]),
        &json!({ "target-directory": target_directory, "cancel-job": false }),
    )?;
    let trigger = request_id(&answer, "savepoint")?;
    let location = wait_for_savepoint(&target, &trigger)?;
    print_completed(&location);
    Ok(())
}

/// `floe cancel [-s [targetDirectory]] <jobId>`: `with_savepoint` is the
/// `-s` option (absent, without or with a directory).
pub fn cancel(
    job: &str,
    with_savepoint: Option<Option<&str>>,
    connect: &ConnectOptions,
) -> anyhow::Result<()> {
    let target = resolve(job, connect)?;
    let id = target.job_id.clone();
    match with_savepoint {
        None => {
            eprintln!("Cancelling job {id}.");
            target
                .client
                .patch(&format!("{}?mode=cancel", api_path(&["jobs", &id])))?;
        }
        Some(dir) => {
            eprintln!(
                "Cancelling job {id} with a savepoint to {}.",
                dir.unwrap_or("the default savepoint directory (state.savepoints.dir)")
            );
            let answer = target.client.post(
                &api_path(&["jobs", &id, "savepoints"]),
                &json!({ "target-directory": dir, "cancel-job": true }),
            )?;
            let trigger = request_id(&answer, "savepoint")?;
            let location = wait_for_savepoint(&target, &trigger)?;
            print_completed(&location);
        }
    }
    let state = wait_for_end(&target, CANCEL_WAIT)?;
    match state.as_str() {
        "FINISHED" => println!("Job {id} finished before it was cancelled."),
        "FAILED" => bail!("job {id} failed while being cancelled"),
        _ => println!("Cancelled job {id}."),
    }
    Ok(())
}

/// `floe stop [--savepointPath <dir>] [--drain] <jobId>`.
pub fn stop(
    job: &str,
    savepoint_path: Option<&str>,
    drain: bool,
    connect: &ConnectOptions,
) -> anyhow::Result<()> {
    let target = resolve(job, connect)?;
    let id = &target.job_id;
    eprintln!(
        "Suspending job {id}{}.",
        if drain {
            " after draining its input"
        } else {
            ""
        }
    );
    let answer = target.client.post(
        &api_path(&["jobs", id, "stop"]),
        &json!({ "targetDirectory": savepoint_path, "drain": drain }),
    )?;
    let trigger = request_id(&answer, "stop")?;
    let location = wait_for_savepoint(&target, &trigger)?;
    print_completed(&location);
    Ok(())
}

/// `floe checkpoints <jobId>`: counts and the most recent checkpoints and
/// savepoints as a table.
pub fn checkpoints(job: &str, connect: &ConnectOptions) -> anyhow::Result<()> {
    let target = resolve(job, connect)?;
    let id = &target.job_id;
    let details = target.client.get(&api_path(&["jobs", id]))?;
    let stats = target.client.get(&api_path(&["jobs", id, "checkpoints"]))?;
    let counts = &stats["counts"];
    let n = |k: &str| counts[k].as_u64().unwrap_or(0);
    println!(
        "Job {id} ({}, {}): {} completed, {} failed, {} in progress",
        details["name"].as_str().unwrap_or("?"),
        details["state"].as_str().unwrap_or("UNKNOWN"),
        n("completed"),
        n("failed"),
        n("in_progress"),
    );
    let restored = &stats["latest"]["restored"];
    if let Some(path) = restored["external_path"].as_str() {
        println!(
            "Restored from {} {} ({path})",
            if restored["is_savepoint"].as_bool() == Some(true) {
                "savepoint"
            } else {
                "checkpoint"
            },
            restored["id"]
        );
    }
    let history = stats["history"].as_array().cloned().unwrap_or_default();
    if history.is_empty() {
        println!("No checkpoints yet.");
        return Ok(());
    }
    let mut rows = vec![[
        "ID".to_string(),
        "STATUS".into(),
        "TYPE".into(),
        "TRIGGERED".into(),
        "DURATION".into(),
        "SIZE".into(),
        "PATH".into(),
    ]];
    for h in &history {
        let failed = h["status"] == "FAILED";
        rows.push([
            h["id"].to_string(),
            h["status"].as_str().unwrap_or("?").to_string(),
            if h["is_savepoint"].as_bool() == Some(true) {
                "savepoint"
            } else {
                "checkpoint"
            }
            .into(),
            h["trigger_timestamp"]
                .as_u64()
                .map_or_else(|| "?".into(), local_time),
            h["end_to_end_duration"]
                .as_u64()
                .map_or_else(|| "?".into(), millis),
            h["state_size"].as_u64().map_or_else(|| "?".into(), size),
            if failed {
                format!("failed: {}", h["failure_message"].as_str().unwrap_or("?"))
            } else {
                h["external_path"].as_str().unwrap_or("-").to_string()
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
    let total = n("total");
    if total > history.len() as u64 {
        println!("(the {} most recent of {total})", history.len());
    }
    Ok(())
}

/// `floe query <jobId> <name> <key>`: the live state of one key of a
/// queryable state, as JSON on stdout. The key is JSON (`42`, `"word"`,
/// `[1,2]`); anything that is not JSON is taken as a string, so `floe query
/// <job> counts hello` works for string keys. A key without state prints
/// `not found` and is no failure.
pub fn query(job: &str, name: &str, key: &str, connect: &ConnectOptions) -> anyhow::Result<()> {
    let key_json: Value =
        serde_json::from_str(key).unwrap_or_else(|_| Value::String(key.to_string()));
    let target = resolve(job, connect)?;
    let id = &target.job_id;
    let answer = target.client.get_with_query(
        &api_path(&["jobs", id, "state", name]),
        &[("key", &key_json.to_string())],
    )?;
    if answer["found"].as_bool() == Some(true) {
        println!("{}", answer["value"]);
    } else {
        println!("not found: key {key_json} has no state in '{name}'");
    }
    Ok(())
}
