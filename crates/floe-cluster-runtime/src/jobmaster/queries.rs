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
    fn ask(&self, id: &TaskManagerId, payload: &Bytes) -> Result<StateQueryAnswer, String> {
        let gw = self
            .cluster
            .taskmanager(id)
            .ok_or_else(|| format!("TaskManager {id} is no longer registered"))?;
        let answer = self
            .cluster
            .call("state query", gw.query_state(self.job, payload.clone()))
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
        let routes = ClusterQueries {
            job: self.job,
            cluster: self.cluster.clone(),
            taskmanagers: self.taskmanagers.clone(),
        };
        let name = name.to_string();
        // Blocking RPCs, each bounded by heartbeat.timeout, off the REST
        // endpoint's threads.
        std::thread::Builder::new()
            .name("state-query".into())
            .spawn(move || {
                let mut answers = Vec::with_capacity(routes.taskmanagers.len());
                for id in &routes.taskmanagers {
                    let answer = routes.ask(id, &payload);
                    let owner = matches!(answer, Ok(StateQueryAnswer::Answered(_)));
                    answers.push(answer);
                    if owner {
                        break;
                    }
                }
                reply(combine_state_answers(routes.job.job, &name, answers));
            })
            .map(|_| ())
            .map_err(|e| QueryError::Failed {
                name: key.to_string(),
                reason: format!("cannot start a thread for the query: {e}"),
            })
    }
}
