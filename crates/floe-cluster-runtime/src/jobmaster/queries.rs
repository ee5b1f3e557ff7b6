//! Queryable state of a job whose run is on the cluster: the JobManager's
//! REST endpoint asks the run's TaskManagers, and the one whose subtask
//! owns the key answers. The JobManager cannot read a JSON key as the
//! state's key type (only the tasks know it), so the key travels as JSON
//! and each TaskManager decides whether the key is its own.

use bytes::Bytes;
use floe_cluster::{JobAttempt, JobManagerHandle, TaskManagerId};
use floe_runtime::gateway::{self, StateQueryAnswer, StateQueryRequest, combine_state_answers};
use floe_runtime::queryable::{QueryError, QueryReply, RemoteStateQueries};

/// Routes the queries of one run to its TaskManagers.
pub(crate) struct ClusterQueries {
    pub job: JobAttempt,
    pub cluster: JobManagerHandle,
    pub taskmanagers: Vec<TaskManagerId>,
}

impl ClusterQueries {
    /// What TaskManager `id` answers, or why it did not.
    fn ask(
        cluster: &JobManagerHandle,
        job: JobAttempt,
        id: &TaskManagerId,
        payload: Bytes,
    ) -> Result<StateQueryAnswer, String> {
        let gw = cluster
            .taskmanager(id)
            .ok_or_else(|| format!("TaskManager {id} is no longer registered"))?;
        let answer = cluster
            .call("state query", gw.query_state(job, payload))
            .map_err(|e| format!("TaskManager {id}: {e}"))?;
        gateway::decode(&answer).map_err(|e| format!("TaskManager {id}: {e}"))
    }
}

impl RemoteStateQueries for ClusterQueries {
    fn query_json(
        &self,
        name: &str,
        key: &serde_json::Value,
        reply: QueryReply,
    ) -> Result<(), QueryError> {
        let payload = Bytes::from(gateway::encode(&StateQueryRequest {
            name: name.to_string(),
            key: key.to_string(),
        }));
        // Every TaskManager is asked at once, each call on a thread of its
        // own (blocking RPCs bounded by heartbeat.timeout): a frozen one
        // does not hold up the answer of the one that owns the key.
        let (answers_tx, answers) = crossbeam_channel::unbounded();
        for id in &self.taskmanagers {
            let (cluster, job, id, payload) =
                (self.cluster.clone(), self.job, id.clone(), payload.clone());
            let tx = answers_tx.clone();
            std::thread::Builder::new()
                .name("state-query".into())
                .spawn(move || {
                    let _ = tx.send(Self::ask(&cluster, job, &id, payload));
                })
                .map_err(|e| QueryError::Failed {
                    name: name.to_string(),
                    reason: format!("cannot start a thread for the query: {e}"),
                })?;
        }
        drop(answers_tx);
        let (job, owned) = (self.job.job, name.to_string());
        std::thread::Builder::new()
            .name("state-query".into())
            .spawn(move || {
                let mut got = Vec::new();
                for answer in answers.iter() {
                    let owner = matches!(answer, Ok(StateQueryAnswer::Answered(_)));
                    got.push(answer);
                    if owner {
                        break;
                    }
                }
                reply(combine_state_answers(job, &owned, got));
            })
            .map(|_| ())
            .map_err(|e| QueryError::Failed {
                name: name.to_string(),
                reason: format!("cannot start a thread for the query: {e}"),
            })
    }
}
