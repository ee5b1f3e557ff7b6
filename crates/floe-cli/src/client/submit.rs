//! `floe run -m <host:port> <job> [args]`: submit a job to a cluster's
//! JobManager (Flink's `POST /jars/{jar}/run`, the job's name as the jar)
//! and, unless detached, wait for its end.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::{RestClient, api_path};

/// How often a waiting client asks for the job's state.
const POLL: Duration = Duration::from_millis(300);

/// Submits `job` with `args` to the JobManager at `address`; prints the
/// job's id; without `detached`, waits for the job to end: success if it
/// finished, an error with its cause otherwise.
pub fn submit(
    address: &str,
    token: Option<&str>,
    job: &str,
    args: Vec<String>,
    detached: bool,
) -> anyhow::Result<ExitCode> {
    let client = RestClient::new(address, token)?;
    let answer = client
        .post(
            &api_path(&["jars", job, "run"]),
            &json!({ "programArgsList": args }),
        )
        .map_err(|e| {
            anyhow::anyhow!("cannot submit '{job}' to the JobManager at {address}: {e}")
        })?;
    let id = answer
        .get("jobid")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            anyhow::anyhow!("the JobManager at {address} answered without a jobid: {answer}")
        })?
        .to_string();
    println!("Job has been submitted with JobID {id}");
    if detached {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let details = client
            .get(&api_path(&["jobs", &id]))
            .map_err(|e| anyhow::anyhow!("lost track of job {id} at {address}: {e}"))?;
        match details.get("state").and_then(Value::as_str) {
            Some("FINISHED") => {
                println!("Job with JobID {id} has finished.");
                return Ok(ExitCode::SUCCESS);
            }
            Some(state @ ("FAILED" | "CANCELED")) => {
                let cause = client
                    .get(&api_path(&["jobs", &id, "exceptions"]))
                    .ok()
                    .and_then(|e| {
                        e.get("root-exception")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                anyhow::bail!(
                    "job {id} ended {state}{}",
                    if cause.is_empty() {
                        String::new()
                    } else {
                        format!(": {cause}")
                    }
                );
            }
            _ => std::thread::sleep(POLL),
        }
    }
}
