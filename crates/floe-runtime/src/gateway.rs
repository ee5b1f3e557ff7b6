//! What the JobManager and a TaskManager tell each other about one run of
//! a job: the payloads the cluster's control plane carries as opaque
//! bytes (its RPCs carry the job id and attempt beside them, for fencing).
//!
//! The runtime's own messages ([`TaskCommand`], [`CoordinatorEvent`],
//! [`TaskReport`]) hold things that do not cross a process boundary —
//! errors with sources, channels — so each has a wire form here, and the
//! conversions are the only place the two meet. Encoded with postcard
//! behind a version byte; the encodings are pinned in the tests.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_checkpoint::SubtaskStateMeta;
use floe_core::{CheckpointBarrier, CheckpointKind, JobId};
use floe_state::{QueryFormat, QueryValue};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    AckStats, CheckpointNotification, CoordinatorEvent, StoreError, TaskCommand,
};
use crate::error::{FailureCause, NonRecoverable, OperatorFailure, TaskError};
use crate::plan::PlanSignature;
use crate::queryable::{QueryError, QueryReply, QueryResult, QueryableStateRegistry};
use crate::task_manager::TaskReport;

/// The version byte in front of every payload (2: a deployment carries
/// the parallelism a restart on fewer slots runs at; 3: metrics reports
/// carry the bytes a task received over the network).
pub const GATEWAY_VERSION: u8 = 3;

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Written by a Floe speaking another version of these payloads.
    #[error("payload version {found}, this Floe speaks version {GATEWAY_VERSION}")]
    Version {
        /// The version found.
        found: u8,
    },
    /// Not a payload of this kind.
    #[error("malformed payload: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes `value` behind the version byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![GATEWAY_VERSION])
        .expect("gateway payloads hold nothing postcard cannot encode")
}

/// Decodes a payload [`encode`] wrote.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, GatewayError> {
    match bytes.split_first() {
        Some((&GATEWAY_VERSION, body)) => Ok(postcard::from_bytes(body)?),
        Some((&found, _)) => Err(GatewayError::Version { found }),
        None => Err(GatewayError::Version { found: 0 }),
    }
}

/// How a TaskManager builds the job's graph: by running the same job
/// function the JobManager ran, with the same arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEntry {
    /// The job's name in the binary's set of jobs.
    pub name: String,
    /// Its arguments, as given to `floe run`.
    pub args: Vec<String>,
}

/// Which state a run starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestorePoint {
    /// A completed checkpoint in the job's checkpoint storage.
    Checkpoint(u64),
    /// A savepoint or retained checkpoint at this path (`-s`).
    Snapshot(String),
}

/// A TaskManager of the run, as every other one reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPeer {
    /// Its id.
    pub id: String,
    /// Its data-plane address (`host:port`).
    pub data_address: String,
}

/// Everything a TaskManager needs to run its share of one run (Flink's
/// `TaskDeploymentDescriptor`, for all of a TaskManager's tasks at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDeployment {
    /// How to build the graph.
    pub job: JobEntry,
    /// What the graph must plan to; a TaskManager whose build differs refuses.
    pub signature: PlanSignature,
    /// The TaskManagers of the run.
    pub peers: Vec<RunPeer>,
    /// Per chain, per subtask: the index in `peers` of the TaskManager
    /// that runs it.
    pub placement: Vec<Vec<u32>>,
    /// Which of `peers` the receiver is.
    pub this_peer: u32,
    /// The state to start from.
    pub restore: Option<RestorePoint>,
    /// The parallelism every operator is capped at when the run restarts
    /// on fewer slots than the job asks for
    /// ([`crate::plan::cap_parallelism`]); `signature` is of the capped graph.
    pub rescaled_to: Option<u32>,
}

/// A question about one key of a queryable state, for the TaskManagers of
/// a run (the JobManager cannot read a JSON key as the state's key type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateQueryRequest {
    /// The queryable name.
    pub name: String,
    /// The key as JSON text.
    pub key: String,
}

/// A TaskManager's answer to a [`StateQueryRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateQueryAnswer {
    /// A subtask here owns the key (or the key or the state is refused
    /// here): its state as JSON text, `None` when it has none.
    Answered(Result<Option<String>, QueryError>),
    /// No subtask here owns the key; the queryable states known here.
    NotHere {
        /// Their names.
        states: Vec<String>,
    },
}

/// Answers `request` from the subtasks of this process that registered in
/// `registry`; `done` gets the answer, from a task's thread when one of
/// them owns the key.
pub fn answer_state_query(
    registry: &QueryableStateRegistry,
    request: StateQueryRequest,
    done: Box<dyn FnOnce(StateQueryAnswer) + Send>,
) {
    let name = request.name;
    let states: Vec<String> = registry.states().into_iter().map(|d| d.name).collect();
    if !states.contains(&name) {
        return done(StateQueryAnswer::NotHere { states });
    }
    let key = match serde_json::from_str::<serde_json::Value>(&request.key) {
        Ok(key) => key,
        Err(e) => {
            return done(StateQueryAnswer::Answered(Err(QueryError::Failed {
                name,
                reason: format!("the key is not JSON: {e}"),
            })));
        }
    };
    let key = match registry.encode_json_key(&name, &key) {
        Ok(key) => key,
        Err(e) => return done(StateQueryAnswer::Answered(Err(e))),
    };
    if !registry.serves_key(&name, &key) {
        return done(StateQueryAnswer::NotHere { states });
    }
    // The reply is called once by the owning task, or not at all when
    // `submit` refuses; the refusal is then the answer.
    let done = Arc::new(Mutex::new(Some(done)));
    let finish = {
        let done = done.clone();
        move |answer: StateQueryAnswer| {
            if let Some(done) = done.lock().unwrap_or_else(|p| p.into_inner()).take() {
                done(answer);
            }
        }
    };
    let reply_name = name.clone();
    let on_reply = finish.clone();
    let reply: QueryReply = Box::new(move |result| {
        on_reply(StateQueryAnswer::Answered(result.and_then(
            |value| match value {
                None => Ok(None),
                Some(QueryValue::Json(json)) => Ok(Some(json.to_string())),
                Some(QueryValue::Postcard(_)) => Err(QueryError::Failed {
                    name: reply_name,
                    reason: "the task answered in binary instead of JSON".into(),
                }),
            },
        )))
    });
    if let Err(e) = registry.submit(&name, key, QueryFormat::Json, None, reply) {
        finish(StateQueryAnswer::Answered(Err(e)));
    }
}

/// The answer to a query of state `name` of job `job_id` from the answers
/// of every TaskManager of its run: the one whose subtask owns the key, or
/// why none could.
pub fn combine_state_answers(
    job_id: JobId,
    name: &str,
    answers: Vec<Result<StateQueryAnswer, String>>,
) -> QueryResult {
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut unreachable = Vec::new();
    for answer in answers {
        match answer {
            Ok(StateQueryAnswer::Answered(result)) => {
                return result.and_then(|text| {
                    text.map(|t| {
                        serde_json::from_str(&t).map(QueryValue::Json).map_err(|e| {
                            QueryError::Failed {
                                name: name.to_string(),
                                reason: format!("the answer is not JSON: {e}"),
                            }
                        })
                    })
                    .transpose()
                });
            }
            Ok(StateQueryAnswer::NotHere { states }) => known.extend(states),
            Err(why) => unreachable.push(why),
        }
    }
    if known.contains(name) || !unreachable.is_empty() {
        // The state exists (or a TaskManager that may hold it did not
        // answer), but no running subtask owns the key.
        let mut reason = "no running subtask of the cluster holds the key".to_string();
        if !unreachable.is_empty() {
            reason = format!("{reason} ({})", unreachable.join("; "));
        }
        return Err(QueryError::NotRunning {
            name: name.to_string(),
            reason,
        });
    }
    Err(QueryError::UnknownState {
        job_id: job_id.to_string(),
        name: name.to_string(),
        available: if known.is_empty() {
            "none".into()
        } else {
            known.into_iter().collect::<Vec<_>>().join(", ")
        },
    })
}

/// A command from the JobManager to one task, or to the TaskManager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskManagerCommand {
    /// For one task, by its index in the job.
    Task {
        /// The task.
        task: u32,
        /// What it is told.
        command: WireTaskCommand,
    },
    /// Snapshot `checkpoint_id` is a savepoint written to `directory`
    /// (sent before its barrier is injected).
    SavepointTarget {
        /// The snapshot.
        checkpoint_id: u64,
        /// The savepoint's directory.
        directory: String,
    },
}

/// [`TaskCommand`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireTaskCommand {
    /// Inject a barrier: (id, timestamp, kind, last completed).
    TriggerCheckpoint(u64, u64, u8, Option<u64>),
    /// Checkpoint completed.
    Complete(u64),
    /// Checkpoint aborted.
    Aborted(u64),
    /// Exit after the final checkpoint.
    Terminate,
    /// Stop with drain: end the input now.
    EndInput,
}

impl From<&TaskCommand> for WireTaskCommand {
    fn from(c: &TaskCommand) -> Self {
        match c {
            TaskCommand::TriggerCheckpoint(b) => WireTaskCommand::TriggerCheckpoint(
                b.id,
                b.timestamp_ms,
                match b.kind {
                    CheckpointKind::Checkpoint => 0,
                    CheckpointKind::Savepoint => 1,
                    CheckpointKind::StopSavepoint => 2,
                },
                b.last_completed,
            ),
            TaskCommand::Notify(CheckpointNotification::Complete(id)) => {
                WireTaskCommand::Complete(*id)
            }
            TaskCommand::Notify(CheckpointNotification::Aborted(id)) => {
                WireTaskCommand::Aborted(*id)
            }
            TaskCommand::Terminate => WireTaskCommand::Terminate,
            TaskCommand::EndInput => WireTaskCommand::EndInput,
        }
    }
}

impl TryFrom<WireTaskCommand> for TaskCommand {
    type Error = String;

    fn try_from(c: WireTaskCommand) -> Result<Self, String> {
        Ok(match c {
            WireTaskCommand::TriggerCheckpoint(id, timestamp_ms, kind, last_completed) => {
                TaskCommand::TriggerCheckpoint(CheckpointBarrier {
                    id,
                    timestamp_ms,
                    kind: match kind {
                        0 => CheckpointKind::Checkpoint,
                        1 => CheckpointKind::Savepoint,
                        2 => CheckpointKind::StopSavepoint,
                        k => return Err(format!("unknown checkpoint kind {k}")),
                    },
                    last_completed,
                })
            }
            WireTaskCommand::Complete(id) => {
                TaskCommand::Notify(CheckpointNotification::Complete(id))
            }
            WireTaskCommand::Aborted(id) => {
                TaskCommand::Notify(CheckpointNotification::Aborted(id))
            }
            WireTaskCommand::Terminate => TaskCommand::Terminate,
            WireTaskCommand::EndInput => TaskCommand::EndInput,
        })
    }
}

/// What a TaskManager reports about its tasks of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskManagerEvent {
    /// A task's snapshot was written.
    Ack {
        /// The checkpoint.
        checkpoint_id: u64,
        /// The task.
        task: u32,
        /// Its operators' entries.
        states: Vec<(String, SubtaskStateMeta)>,
        /// Bytes written.
        bytes: u64,
        /// Durations and sizes.
        stats: WireAckStats,
    },
    /// A task could not take or write its snapshot.
    Decline {
        /// The checkpoint.
        checkpoint_id: u64,
        /// The task.
        task: u32,
        /// Why, in words.
        reason: String,
    },
    /// A task's input ended; it stays for the final checkpoint.
    TaskFinished(u32),
    /// A task ended (Flink's `TaskExecutionState`).
    TaskEnded(TaskOutcome),
    /// Every task of the run on this TaskManager ended and every snapshot
    /// upload they started is acknowledged or declined.
    RunEnded,
    /// The counters of the run's operator subtasks here since the run
    /// started, sent every second and once more before `RunEnded`.
    Metrics(Vec<crate::metrics::SubtaskCounters>),
}

/// [`AckStats`] on the wire, durations in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAckStats {
    /// Bytes written per operator uid.
    pub operator_bytes: Vec<(String, u64)>,
    /// Bytes of channel state.
    pub channel_bytes: u64,
    /// Synchronous part.
    pub sync_us: u64,
    /// Asynchronous part.
    pub async_us: u64,
    /// Alignment.
    pub alignment_us: u64,
    /// Snapshotted unaligned.
    pub unaligned: bool,
    /// Shared bytes referenced, not written.
    pub referenced_bytes: u64,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl From<&AckStats> for WireAckStats {
    fn from(s: &AckStats) -> Self {
        WireAckStats {
            operator_bytes: s.operator_bytes.clone(),
            channel_bytes: s.channel_bytes,
            sync_us: micros(s.sync),
            async_us: micros(s.async_),
            alignment_us: micros(s.alignment),
            unaligned: s.unaligned,
            referenced_bytes: s.referenced_bytes,
        }
    }
}

impl From<WireAckStats> for AckStats {
    fn from(s: WireAckStats) -> Self {
        AckStats {
            operator_bytes: s.operator_bytes,
            channel_bytes: s.channel_bytes,
            sync: Duration::from_micros(s.sync_us),
            async_: Duration::from_micros(s.async_us),
            alignment: Duration::from_micros(s.alignment_us),
            unaligned: s.unaligned,
            referenced_bytes: s.referenced_bytes,
        }
    }
}

impl TaskManagerEvent {
    /// The wire form of a coordinator event a task or uploader sent; `None`
    /// for events only the JobManager raises.
    pub fn of_coordinator_event(e: &CoordinatorEvent) -> Option<Self> {
        Some(match e {
            CoordinatorEvent::Ack {
                checkpoint_id,
                task,
                states,
                bytes,
                stats,
            } => TaskManagerEvent::Ack {
                checkpoint_id: *checkpoint_id,
                task: *task as u32,
                states: states.clone(),
                bytes: *bytes,
                stats: stats.into(),
            },
            CoordinatorEvent::Decline {
                checkpoint_id,
                task,
                reason,
            } => TaskManagerEvent::Decline {
                checkpoint_id: *checkpoint_id,
                task: *task as u32,
                reason: reason.to_string(),
            },
            CoordinatorEvent::TaskFinished(t) => TaskManagerEvent::TaskFinished(*t as u32),
            CoordinatorEvent::TriggerSavepoint(_) | CoordinatorEvent::Shutdown => return None,
        })
    }

    /// The coordinator event this is, if it is one; `taskmanager` names
    /// the sender in a decline's reason.
    pub fn into_coordinator_event(self, taskmanager: &str) -> Option<CoordinatorEvent> {
        Some(match self {
            TaskManagerEvent::Ack {
                checkpoint_id,
                task,
                states,
                bytes,
                stats,
            } => CoordinatorEvent::Ack {
                checkpoint_id,
                task: task as usize,
                states,
                bytes,
                stats: stats.into(),
            },
            TaskManagerEvent::Decline {
                checkpoint_id,
                task,
                reason,
            } => CoordinatorEvent::Decline {
                checkpoint_id,
                task: task as usize,
                reason: StoreError::Other(format!("on TaskManager {taskmanager}: {reason}").into()),
            },
            TaskManagerEvent::TaskFinished(t) => CoordinatorEvent::TaskFinished(t as usize),
            TaskManagerEvent::TaskEnded(_)
            | TaskManagerEvent::RunEnded
            | TaskManagerEvent::Metrics(_) => return None,
        })
    }
}

/// How a task ended, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// The task's index in the job.
    pub task: u32,
    /// Its display name.
    pub name: String,
    /// How it ended.
    pub result: TaskResult,
}

/// A task's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskResult {
    /// Its input ended and its chain finished.
    Finished,
    /// It was cancelled.
    Cancelled,
    /// An operator failed.
    Failed {
        /// The operator's name.
        operator: String,
        /// Its uid.
        uid: String,
        /// Subtask index.
        subtask: u32,
        /// Parallelism.
        parallelism: u32,
        /// The failure, with its causes (`{:#}`).
        message: String,
        /// A panic rather than an error.
        panic: bool,
        /// A restart cannot cure it.
        non_recoverable: bool,
    },
}

impl From<&TaskReport> for TaskOutcome {
    fn from(r: &TaskReport) -> Self {
        TaskOutcome {
            task: r.task as u32,
            name: r.name.clone(),
            result: match &r.result {
                Ok(()) => TaskResult::Finished,
                Err(TaskError::Cancelled) => TaskResult::Cancelled,
                Err(TaskError::Operator(f)) => TaskResult::Failed {
                    operator: f.operator.clone(),
                    uid: f.uid.clone(),
                    subtask: f.subtask,
                    parallelism: f.parallelism,
                    message: match &f.cause {
                        FailureCause::Error(e) => format!("{e:#}"),
                        FailureCause::Panic(m) => m.clone(),
                    },
                    panic: matches!(f.cause, FailureCause::Panic(_)),
                    non_recoverable: f.is_non_recoverable(),
                },
            },
        }
    }
}

impl TaskOutcome {
    /// The report the JobClient supervises by; `taskmanager` names where
    /// the task ran in a failure's message.
    pub fn into_report(self, taskmanager: &str) -> TaskReport {
        TaskReport {
            task: self.task as usize,
            name: self.name,
            result: match self.result {
                TaskResult::Finished => Ok(()),
                TaskResult::Cancelled => Err(TaskError::Cancelled),
                TaskResult::Failed {
                    operator,
                    uid,
                    subtask,
                    parallelism,
                    message,
                    panic,
                    non_recoverable,
                } => Err(TaskError::Operator(Box::new(OperatorFailure {
                    operator,
                    uid,
                    subtask,
                    parallelism,
                    cause: if panic {
                        FailureCause::Panic(message)
                    } else {
                        let e = anyhow::anyhow!("{message} (on TaskManager {taskmanager})");
                        FailureCause::Error(if non_recoverable {
                            NonRecoverable::wrap(e)
                        } else {
                            e
                        })
                    },
                }))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_pinned() {
        let cmd = TaskManagerCommand::Task {
            task: 3,
            command: WireTaskCommand::TriggerCheckpoint(7, 1000, 1, Some(6)),
        };
        assert_eq!(encode(&cmd), [3, 0, 3, 0, 7, 232, 7, 1, 1, 6]);
        let ended = TaskManagerEvent::TaskEnded(TaskOutcome {
            task: 2,
            name: "a".into(),
            result: TaskResult::Cancelled,
        });
        assert_eq!(encode(&ended), [3, 3, 2, 1, b'a', 1]);
        assert_eq!(encode(&TaskManagerEvent::RunEnded), [3, 4]);
        let metrics = TaskManagerEvent::Metrics(vec![crate::metrics::SubtaskCounters {
            vertex: 1,
            subtask: 0,
            records_in: 3,
            records_out: 2,
            idle_ns: 1,
            back_pressured_ns: 0,
            bytes_in: 4,
            running: true,
            input_watermark: -1,
            output_watermark: 0,
        }]);
        assert_eq!(encode(&metrics), [3, 5, 1, 1, 0, 3, 2, 1, 0, 4, 1, 1, 0]);
        assert_eq!(decode::<TaskManagerCommand>(&encode(&cmd)).unwrap(), cmd);
    }

    #[test]
    fn a_deployment_is_pinned() {
        let deployment = RunDeployment {
            job: JobEntry {
                name: "j".into(),
                args: vec!["-p".into()],
            },
            signature: PlanSignature {
                vertices: vec![("v".into(), "u".into(), 2, 128)],
                edges: vec![],
                chains: vec![vec![0]],
            },
            peers: vec![RunPeer {
                id: "t".into(),
                data_address: "h:1".into(),
            }],
            placement: vec![vec![0, 0]],
            this_peer: 0,
            restore: Some(RestorePoint::Checkpoint(5)),
            rescaled_to: Some(2),
        };
        let bytes = encode(&deployment);
        assert_eq!(
            bytes,
            [
                3, 1, b'j', 1, 2, b'-', b'p', // job
                1, 1, b'v', 1, b'u', 2, 128, 1, 0, 1, 1, 0, // signature
                1, 1, b't', 3, b'h', b':', b'1', // peers
                1, 2, 0, 0, 0, // placement, this peer
                1, 0, 5, // restore
                1, 2, // rescaled to
            ]
        );
        assert_eq!(decode::<RunDeployment>(&bytes).unwrap(), deployment);
    }

    #[test]
    fn the_owner_answers_a_state_query_and_otherwise_the_reason_is_named() {
        let job: JobId = "00112233445566778899aabbccddeeff".parse().unwrap();
        let not_here = |names: &[&str]| {
            Ok(StateQueryAnswer::NotHere {
                states: names.iter().map(|n| n.to_string()).collect(),
            })
        };
        let owner = Ok(StateQueryAnswer::Answered(Ok(Some("42".into()))));
        assert_eq!(
            combine_state_answers(job, "count", vec![not_here(&["count"]), owner]),
            Ok(Some(QueryValue::Json(serde_json::json!(42))))
        );
        let none = Ok(StateQueryAnswer::Answered(Ok(None)));
        assert_eq!(combine_state_answers(job, "count", vec![none]), Ok(None));
        let e = combine_state_answers(job, "counts", vec![not_here(&["count"]), not_here(&[])])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "job 00112233445566778899aabbccddeeff has no queryable state 'counts' (queryable states: count)"
        );
        let e = combine_state_answers(
            job,
            "count",
            vec![not_here(&["count"]), Err("TaskManager t: refused".into())],
        )
        .unwrap_err();
        assert!(
            matches!(&e, QueryError::NotRunning { reason, .. } if reason.contains("TaskManager t: refused")),
            "{e}"
        );
        let request = StateQueryRequest {
            name: "c".into(),
            key: "7".into(),
        };
        assert_eq!(encode(&request), [3, 1, b'c', 1, b'7']);
        let answer = StateQueryAnswer::Answered(Ok(Some("1".into())));
        assert_eq!(encode(&answer), [3, 0, 0, 1, 1, b'1']);
    }

    #[test]
    fn another_version_or_garbage_is_refused_by_name() {
        let e = decode::<TaskManagerEvent>(&[2, 4]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "payload version 2, this Floe speaks version 3"
        );
        let e = decode::<TaskManagerEvent>(&[3, 99]).unwrap_err();
        assert!(e.to_string().starts_with("malformed payload"), "{e}");
    }

    #[test]
    fn commands_survive_the_wire() {
        for cmd in [
            TaskCommand::TriggerCheckpoint(CheckpointBarrier {
                id: 9,
                timestamp_ms: 5,
                kind: CheckpointKind::StopSavepoint,
                last_completed: None,
            }),
            TaskCommand::Notify(CheckpointNotification::Complete(4)),
            TaskCommand::Notify(CheckpointNotification::Aborted(5)),
            TaskCommand::Terminate,
            TaskCommand::EndInput,
        ] {
            let wire: WireTaskCommand = decode(&encode(&WireTaskCommand::from(&cmd))).unwrap();
            let back = TaskCommand::try_from(wire).unwrap();
            assert_eq!(format!("{back:?}"), format!("{cmd:?}"));
        }
        assert!(TaskCommand::try_from(WireTaskCommand::TriggerCheckpoint(1, 1, 7, None)).is_err());
    }

    #[test]
    fn a_failure_keeps_its_message_and_whether_a_restart_can_cure_it() {
        for non_recoverable in [false, true] {
            let cause = anyhow::anyhow!("disk full").context("cannot write");
            let cause = if non_recoverable {
                NonRecoverable::wrap(cause)
            } else {
                cause
            };
            let report = TaskReport {
                task: 4,
                name: "Map (2/3)".into(),
                result: Err(TaskError::Operator(Box::new(OperatorFailure {
                    operator: "Map".into(),
                    uid: "m".into(),
                    subtask: 1,
                    parallelism: 3,
                    cause: FailureCause::Error(cause),
                }))),
            };
            let wire: TaskOutcome = decode(&encode(&TaskOutcome::from(&report))).unwrap();
            let back = wire.into_report("tm-1");
            let Err(TaskError::Operator(f)) = back.result else {
                panic!("a failure")
            };
            assert_eq!(f.is_non_recoverable(), non_recoverable);
            let text = match &f.cause {
                FailureCause::Error(e) => format!("{e:#}"),
                FailureCause::Panic(_) => unreachable!(),
            };
            assert!(
                text.contains("cannot write: disk full") && text.contains("tm-1"),
                "{text}"
            );
            assert_eq!((f.subtask, f.parallelism, back.task), (1, 3, 4));
        }
    }
}
