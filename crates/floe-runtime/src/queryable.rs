//! Queryable state inside a job: which subtask holds which queryable state,
//! and how a query gets there and back.
//!
//! When a keyed operator opens, every state it declared with
//! `set_queryable(name)` is announced to the job's
//! [`QueryableStateRegistry`] together with the subtask's query inbox. A
//! query (from the network proxy or the REST API) names the state and
//! carries the key as postcard bytes; the registry hashes those bytes to the
//! key group exactly as `key_by` does, picks the subtask that owns it, and
//! answers it from the [`QueryView`] that subtask publishes (heap backend:
//! its key-group maps, shared copy-on-write, at most
//! `queryable-state.max-staleness` old) on the asker's thread. Without a
//! fresh enough view (RocksDB, a view not yet published or too old, a
//! staleness of zero) it puts a [`StateQuery`] in the subtask's inbox; the
//! task drains its inbox between batches and answers from the live backend,
//! seeing every record processed before it. Either way a query never stops
//! processing and takes no lock on the hot path.
//!
//! Each run of the job (every restart) announces its subtasks anew; between
//! runs the states stay known but unavailable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crossbeam_channel::Sender;
use floe_core::{JobId, KeyGroup};
use floe_state::key_group::{key_group_for_key_bytes, operator_index_for_key_group};
use floe_state::{QueryFormat, QueryValue, QueryView, StateKind, ViewLookup};
use serde::{Deserialize, Serialize};

/// Why a query got no answer. Serializable: the network protocol carries it
/// to the client unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum QueryError {
    /// No job with this id runs here.
    #[error("unknown job {job_id}")]
    UnknownJob {
        /// The id asked for.
        job_id: String,
    },
    /// The job runs without `queryable-state.enable: true`.
    #[error(
        "queryable state is disabled for job {job_id}: start it with queryable-state.enable: true"
    )]
    Disabled {
        /// The job.
        job_id: String,
    },
    /// The job has no state queryable under this name.
    #[error("job {job_id} has no queryable state '{name}' (queryable states: {available})")]
    UnknownState {
        /// The job.
        job_id: String,
        /// The name asked for.
        name: String,
        /// The names it has, comma-separated (`none` when it has none).
        available: String,
    },
    /// The key is not of the state's key type.
    #[error("wrong key type for queryable state '{name}': its keys are {expected}; {reason}")]
    WrongKeyType {
        /// The state.
        name: String,
        /// The state's key type.
        expected: String,
        /// What did not fit.
        reason: String,
    },
    /// The subtask holding the key is not running (the job is restarting,
    /// finishing, or has not opened the operator yet).
    #[error(
        "queryable state '{name}' is not available: subtask {subtask} of '{operator}' is not running ({reason})"
    )]
    Unavailable {
        /// The state.
        name: String,
        /// The operator holding it.
        operator: String,
        /// The subtask owning the key.
        subtask: u32,
        /// Why.
        reason: String,
    },
    /// Reading or encoding the state failed.
    #[error("query of state '{name}' failed: {reason}")]
    Failed {
        /// The state.
        name: String,
        /// Why.
        reason: String,
    },
    /// No running subtask answers for the key: the job on a cluster is
    /// between runs, or the TaskManager holding the key did not answer.
    #[error("queryable state '{name}' is not available: {reason}")]
    NotRunning {
        /// The state.
        name: String,
        /// Why.
        reason: String,
    },
}

/// What a query gets: the key's state, `None` when the key has none.
pub type QueryResult = Result<Option<QueryValue>, QueryError>;

/// Where a query's answer goes (a channel or a future's sender, called once
/// on whichever thread answers).
pub type QueryReply = Box<dyn FnOnce(QueryResult) + Send>;

/// One query on its way to the subtask that owns its key.
pub struct StateQuery {
    /// The queryable name.
    pub name: Arc<str>,
    /// The key, postcard-encoded (as `key_by` hashes it).
    pub key: Vec<u8>,
    /// The key's group, computed when routing.
    pub key_group: KeyGroup,
    /// How the answer is to be encoded.
    pub format: QueryFormat,
    /// Taken by `answer`; a query dropped unanswered (its task ended
    /// first) answers "unavailable" from `Drop`, so no asker waits forever.
    reply: Option<QueryReply>,
}

impl StateQuery {
    /// Sends the answer.
    pub fn answer(mut self, result: QueryResult) {
        if let Some(reply) = self.reply.take() {
            reply(result)
        }
    }
}

impl Drop for StateQuery {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            reply(Err(QueryError::Unavailable {
                name: self.name.to_string(),
                operator: String::new(),
                subtask: 0,
                reason: "its task ended before answering".into(),
            }));
        }
    }
}

impl std::fmt::Debug for StateQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateQuery")
            .field("name", &self.name)
            .field("key_group", &self.key_group)
            .finish()
    }
}

/// Converts a JSON key to the postcard bytes of the state's key type;
/// monomorphized where the key type is known (the keyed operator).
pub type JsonKeyEncoder = fn(&serde_json::Value) -> Result<Vec<u8>, String>;

/// One subtask's announcement of a queryable state.
#[derive(Debug, Clone)]
pub struct QueryableRegistration {
    /// The queryable name.
    pub name: String,
    /// The state's own name.
    pub state_name: String,
    /// Its kind.
    pub kind: StateKind,
    /// The operator's uid.
    pub operator_uid: String,
    /// The operator's display name.
    pub operator_name: String,
    /// The key type's name.
    pub key_type: &'static str,
    /// The declared value type's name.
    pub declared_type: &'static str,
    /// The operator's number of key groups.
    pub max_parallelism: u32,
    /// The operator's number of subtasks.
    pub parallelism: u32,
    /// The announcing subtask.
    pub subtask: u32,
    /// JSON key → postcard key.
    pub json_key: JsonKeyEncoder,
}

impl QueryableRegistration {
    /// The key group of `key` (postcard bytes) and the subtask owning it.
    fn owner(&self, key: &[u8]) -> (KeyGroup, u32) {
        let key_group = key_group_for_key_bytes(key, self.max_parallelism);
        let owner = operator_index_for_key_group(self.max_parallelism, self.parallelism, key_group);
        (key_group, owner)
    }
}

/// A queryable state of the job, as the REST API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryableStateDescription {
    /// The queryable name.
    pub name: String,
    /// The state's own name.
    pub state_name: String,
    /// Its kind (`ValueState`, …).
    pub kind: StateKind,
    /// The operator's uid.
    pub operator_uid: String,
    /// The key type.
    pub key_type: String,
    /// The declared value type.
    pub declared_type: String,
}

struct Entry {
    info: QueryableRegistration,
    /// Per subtask, its inbox in the current run.
    inboxes: Vec<Option<Sender<StateQuery>>>,
    /// Per subtask, the view its task publishes (heap backend), read
    /// before the inbox is bothered.
    views: Vec<Option<QueryView>>,
}

/// How old a published view may be when it answers a query, unless
/// `queryable-state.max-staleness` says otherwise.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_millis(10);

/// Where a job's queries go when its tasks run in other processes (a
/// cluster's TaskManagers): only they can read a JSON key as the state's
/// key type, so the key travels as JSON.
pub trait RemoteStateQueries: Send + Sync {
    /// Routes a query for `key` of state `name`; the answer goes to `reply`.
    fn query_json(
        &self,
        name: &str,
        key: &serde_json::Value,
        reply: QueryReply,
    ) -> Result<(), QueryError>;
}

/// The queryable states of one job and where their subtasks listen.
pub struct QueryableStateRegistry {
    job_id: JobId,
    enabled: bool,
    max_staleness: Duration,
    states: RwLock<BTreeMap<String, Entry>>,
    /// Set while the job's current run is in other processes.
    remote: RwLock<Option<Arc<dyn RemoteStateQueries>>>,
    /// Whether a run of the job was ever in other processes.
    served_remotely: AtomicBool,
}

impl QueryableStateRegistry {
    /// The registry of job `job_id`; `enabled` is `queryable-state.enable`.
    pub fn new(job_id: JobId, enabled: bool) -> Self {
        QueryableStateRegistry {
            job_id,
            enabled,
            max_staleness: DEFAULT_MAX_STALENESS,
            states: RwLock::new(BTreeMap::new()),
            remote: RwLock::new(None),
            served_remotely: AtomicBool::new(false),
        }
    }

    /// Sends queries to `remote` (a run on a cluster) until
    /// [`QueryableStateRegistry::clear_remote`].
    pub fn set_remote(&self, remote: Arc<dyn RemoteStateQueries>) {
        self.served_remotely.store(true, Ordering::Relaxed);
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = Some(remote);
    }

    /// The run in other processes that `remote` serves ended (a newer
    /// run's is left alone): until the next one, queries are refused as
    /// not running.
    pub fn clear_remote(&self, remote: &Arc<dyn RemoteStateQueries>) {
        let mut current = self.remote.write().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|c| std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(remote)))
        {
            *current = None;
        }
    }

    /// Answers a query for the JSON `key` of state `name` as JSON: where
    /// the job's tasks run, here or (through [`RemoteStateQueries`]) on a
    /// cluster's TaskManagers.
    pub fn query_json(
        &self,
        name: &str,
        key: &serde_json::Value,
        reply: QueryReply,
    ) -> Result<(), QueryError> {
        self.check_enabled()?;
        let remote = self
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match remote {
            Some(remote) => remote.query_json(name, key, reply),
            // Served by a cluster's TaskManagers, and none runs the job now.
            None if self.served_remotely.load(Ordering::Relaxed) => Err(QueryError::NotRunning {
                name: name.to_string(),
                reason: "the job is restarting or not running on the cluster".into(),
            }),
            None => {
                let key = self.encode_json_key(name, key)?;
                self.submit(name, key, QueryFormat::Json, None, reply)
            }
        }
    }

    /// Whether a subtask running here owns `key` (postcard bytes) of state
    /// `name`: a process running some of a job's subtasks answers only
    /// for those.
    pub fn serves_key(&self, name: &str, key: &[u8]) -> bool {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = states.get(name) else {
            return false;
        };
        let (_, owner) = entry.info.owner(key);
        entry
            .inboxes
            .get(owner as usize)
            .is_some_and(Option::is_some)
    }

    /// Sets `queryable-state.max-staleness`: how old the state a query is
    /// answered from off the task thread may be; zero sends every query to
    /// the owning task.
    pub fn with_max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self
    }

    /// `queryable-state.max-staleness`.
    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Whether queries are served (`queryable-state.enable`).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The job.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// Announces that a subtask of the current run serves state
    /// `registration.name` through `inbox`, and through `view` when its
    /// backend publishes one. Two operators using one name is an error
    /// naming both.
    pub fn register(
        &self,
        registration: QueryableRegistration,
        inbox: Sender<StateQuery>,
        view: Option<QueryView>,
    ) -> Result<(), String> {
        let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
        let entry = states
            .entry(registration.name.clone())
            .or_insert_with(|| Entry {
                info: registration.clone(),
                inboxes: Vec::new(),
                views: Vec::new(),
            });
        if entry.info.operator_uid != registration.operator_uid {
            return Err(format!(
                "queryable state name '{}' is used by operators '{}' and '{}'; queryable names must be unique within a job",
                registration.name, entry.info.operator_name, registration.operator_name
            ));
        }
        // A restart may bring another parallelism (never another key type:
        // the job graph is the same).
        if entry.info.parallelism != registration.parallelism
            || entry.info.max_parallelism != registration.max_parallelism
        {
            entry.inboxes.clear();
            entry.views.clear();
        }
        let subtasks = registration.parallelism as usize;
        entry.inboxes.resize(subtasks, None);
        entry.views.resize(subtasks, None);
        entry.inboxes[registration.subtask as usize] = Some(inbox);
        entry.views[registration.subtask as usize] = view;
        entry.info = registration;
        Ok(())
    }

    /// Forgets the inboxes of the run that ended (states stay known).
    pub fn end_run(&self) {
        let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
        for e in states.values_mut() {
            e.inboxes.iter_mut().for_each(|i| *i = None);
            e.views.iter_mut().for_each(|v| *v = None);
        }
    }

    /// The job's queryable states.
    pub fn states(&self) -> Vec<QueryableStateDescription> {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        states
            .values()
            .map(|e| QueryableStateDescription {
                name: e.info.name.clone(),
                state_name: e.info.state_name.clone(),
                kind: e.info.kind,
                operator_uid: e.info.operator_uid.clone(),
                key_type: e.info.key_type.to_string(),
                declared_type: e.info.declared_type.to_string(),
            })
            .collect()
    }

    /// Routes a query for the key whose postcard bytes are `key` to the
    /// subtask that owns it; the answer goes to `reply` (on the task's
    /// thread). `subtask`, when given, is the subtask the asker expects
    /// (a server addressed directly): a key it does not own is refused.
    pub fn submit(
        &self,
        name: &str,
        key: Vec<u8>,
        format: QueryFormat,
        subtask: Option<u32>,
        reply: QueryReply,
    ) -> Result<(), QueryError> {
        self.check_enabled()?;
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        let entry = self.entry(&states, name)?;
        let info = &entry.info;
        let (key_group, owner) = info.owner(&key);
        if let Some(s) = subtask
            && s != owner
        {
            return Err(QueryError::Unavailable {
                name: name.to_string(),
                operator: info.operator_name.clone(),
                subtask: s,
                reason: format!("the key is in key group {key_group}, owned by subtask {owner}"),
            });
        }
        // Looked up and answered without the registry's lock: a large value
        // must not hold up other queries or a registration.
        let view = entry.views.get(owner as usize).cloned().flatten();
        let key_type = info.key_type;
        drop(states);
        if let Some(view) = view {
            match view.lookup(key_group, &key, format, name) {
                ViewLookup::Answered(result) => {
                    reply(result.map_err(|e| QueryError::Failed {
                        name: name.to_string(),
                        reason: e.to_string(),
                    }));
                    return Ok(());
                }
                ViewLookup::WrongKey(reason) => {
                    reply(Err(QueryError::WrongKeyType {
                        name: name.to_string(),
                        expected: key_type.to_string(),
                        reason: reason.to_string(),
                    }));
                    return Ok(());
                }
                // Not fresh enough: the owning task answers.
                ViewLookup::AskTask => {}
            }
        }
        self.submit_to_task(name, key, format, reply)
    }

    /// Puts a query into the inbox of the subtask that owns its key.
    fn submit_to_task(
        &self,
        name: &str,
        key: Vec<u8>,
        format: QueryFormat,
        reply: QueryReply,
    ) -> Result<(), QueryError> {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        let entry = self.entry(&states, name)?;
        let info = &entry.info;
        let (key_group, owner) = info.owner(&key);
        let unavailable = |reason: &str| QueryError::Unavailable {
            name: name.to_string(),
            operator: info.operator_name.clone(),
            subtask: owner,
            reason: reason.to_string(),
        };
        let inbox = entry
            .inboxes
            .get(owner as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| unavailable("the job is restarting or not running"))?;
        inbox
            .send(StateQuery {
                name: Arc::from(name),
                key,
                key_group,
                format,
                reply: Some(reply),
            })
            .map_err(|e| {
                // Not delivered: answer here (not from Drop), with the
                // owning subtask named.
                let mut q = e.into_inner();
                q.reply = None;
                unavailable("the task has exited")
            })
    }

    /// Converts a JSON key to the postcard bytes of state `name`'s key type.
    pub fn encode_json_key(
        &self,
        name: &str,
        key: &serde_json::Value,
    ) -> Result<Vec<u8>, QueryError> {
        self.check_enabled()?;
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        let entry = self.entry(&states, name)?;
        (entry.info.json_key)(key).map_err(|reason| QueryError::WrongKeyType {
            name: name.to_string(),
            expected: entry.info.key_type.to_string(),
            reason: format!("the key {key} does not convert: {reason}"),
        })
    }

    fn check_enabled(&self) -> Result<(), QueryError> {
        if self.enabled {
            Ok(())
        } else {
            Err(QueryError::Disabled {
                job_id: self.job_id.to_string(),
            })
        }
    }

    fn entry<'a>(
        &self,
        states: &'a BTreeMap<String, Entry>,
        name: &str,
    ) -> Result<&'a Entry, QueryError> {
        states.get(name).ok_or_else(|| {
            let names: Vec<&str> = states.keys().map(String::as_str).collect();
            QueryError::UnknownState {
                job_id: self.job_id.to_string(),
                name: name.to_string(),
                available: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            }
        })
    }
}

/// What a task's operators need to announce their queryable states: the
/// job's registry and this task's inbox.
#[derive(Clone)]
pub struct QueryableTaskHandle {
    /// The job's registry.
    pub registry: Arc<QueryableStateRegistry>,
    /// This task's inbox (its receiver is drained by the task loop).
    pub inbox: Sender<StateQuery>,
}

impl std::fmt::Debug for QueryableTaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryableTaskHandle")
            .finish_non_exhaustive()
    }
}

/// The JSON-key encoder for key type `K`.
pub fn json_key_encoder<K: serde::de::DeserializeOwned + Serialize>(
    key: &serde_json::Value,
) -> Result<Vec<u8>, String> {
    let key: K = K::deserialize(key).map_err(|e| e.to_string())?;
    postcard::to_allocvec(&key).map_err(|e| e.to_string())
}

impl QueryableTaskHandle {
    /// Announces the queryable states `backend` holds for subtask `info`
    /// (called once the function registered its states, and again when it
    /// registers more later).
    pub fn announce<K: floe_state::Key>(
        &self,
        backend: &mut floe_state::KeyedStateBackend<K>,
        info: &crate::context::TaskInfo,
    ) -> Result<(), crate::error::TaskError> {
        let states: Vec<_> = backend
            .queryable_states()
            .map(|s| {
                (
                    s.queryable_name.to_string(),
                    s.state_name.to_string(),
                    s.kind,
                    s.declared_type,
                )
            })
            .collect();
        let max_staleness = self.registry.max_staleness();
        for (queryable_name, state_name, kind, declared_type) in states {
            let view = if max_staleness.is_zero() {
                None
            } else {
                backend.query_view(&queryable_name, max_staleness)
            };
            let registration = QueryableRegistration {
                name: queryable_name,
                state_name,
                kind,
                operator_uid: info.uid.to_string(),
                operator_name: info.operator_name.to_string(),
                key_type: std::any::type_name::<K>(),
                declared_type,
                max_parallelism: info.max_parallelism,
                parallelism: info.parallelism,
                subtask: info.subtask_index,
                json_key: json_key_encoder::<K>,
            };
            self.registry
                .register(registration, self.inbox.clone(), view)
                .map_err(|reason| {
                    info.failure(crate::error::FailureCause::Error(anyhow::anyhow!(reason)))
                })?;
        }
        Ok(())
    }
}

/// Answers `query` from `backend` when it holds the queried state (the key
/// must decode as `K`, with no byte left over); hands it back otherwise.
pub fn answer_query<K: floe_state::Key>(
    backend: &mut floe_state::KeyedStateBackend<K>,
    query: StateQuery,
) -> Option<StateQuery> {
    if !backend
        .queryable_states()
        .any(|s| s.queryable_name == &*query.name)
    {
        return Some(query);
    }
    let name = &*query.name;
    let result = match floe_state::decode_query_key::<K>(&query.key) {
        Ok(key) => backend
            .query(name, &key, query.key_group, query.format)
            .map_err(|e| QueryError::Failed {
                name: name.to_string(),
                reason: e.to_string(),
            }),
        Err(reason) => Err(QueryError::WrongKeyType {
            name: name.to_string(),
            expected: std::any::type_name::<K>().to_string(),
            reason: reason.to_string(),
        }),
    };
    query.answer(result);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(subtask: u32) -> QueryableRegistration {
        QueryableRegistration {
            name: "count".into(),
            state_name: "count".into(),
            kind: StateKind::Value,
            operator_uid: "op".into(),
            operator_name: "Count".into(),
            key_type: "u64",
            declared_type: "u64",
            max_parallelism: 128,
            parallelism: 1,
            subtask,
            json_key: json_key_encoder::<u64>,
        }
    }

    /// A query never leaves its asker waiting: one dropped unanswered (its
    /// task ended with it in the inbox) answers "unavailable", and one sent
    /// to a task that has exited is refused at once.
    #[test]
    fn unanswered_queries_are_answered_unavailable() {
        let registry = QueryableStateRegistry::new(JobId::from_u128(1), true);
        let (inbox, queries) = crossbeam_channel::unbounded();
        registry.register(registration(0), inbox, None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let key = postcard::to_allocvec(&7u64).unwrap();
        registry
            .submit(
                "count",
                key.clone(),
                QueryFormat::Postcard,
                None,
                Box::new(move |r| tx.send(r).unwrap()),
            )
            .unwrap();
        drop(queries.recv().unwrap());
        let answer = rx.recv().unwrap().unwrap_err();
        assert!(
            answer.to_string().contains("ended before answering"),
            "{answer}"
        );
        drop(queries);
        let err = registry
            .submit("count", key, QueryFormat::Postcard, None, Box::new(|_| {}))
            .unwrap_err();
        assert!(err.to_string().contains("the task has exited"), "{err}");
        assert!(matches!(
            registry.encode_json_key("count", &serde_json::json!("x")),
            Err(QueryError::WrongKeyType { .. })
        ));
        registry.end_run();
        let err = registry
            .submit(
                "count",
                vec![7],
                QueryFormat::Postcard,
                None,
                Box::new(|_| {}),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("restarting or not running"),
            "{err}"
        );
    }
}
