//! The async Rust client (Flink's `QueryableStateClient`).
//!
//! ```no_run
//! # async fn f(job_id: floe_core::JobId) -> Result<(), floe_queryable::QueryClientError> {
//! let client = floe_queryable::QueryableStateClient::new("127.0.0.1", 9069);
//! let count: Option<u64> = client.get_kv_state(job_id, "count", &7u64).await?;
//! # Ok(()) }
//! ```
//!
//! One client keeps one connection to the proxy, opened on the first query
//! and opened again after it broke. Concurrent calls share it: each request
//! carries an id, the proxy answers as the owning tasks do, and a reader
//! task hands each answer to its caller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use floe_core::JobId;
use floe_runtime::QueryError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{self, KvRequest, KvResponse, ProtocolError};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryClientError {
    /// The proxy could not be reached.
    #[error("cannot connect to the queryable-state proxy at {address}: {reason}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        reason: String,
    },
    /// The connection broke before the answer came.
    #[error("connection to the queryable-state proxy at {address} lost: {reason}")]
    ConnectionLost {
        /// `host:port`.
        address: String,
        /// Why.
        reason: String,
    },
    /// The job refused the query (unknown job or state, wrong key type,
    /// disabled, unavailable).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The key could not be encoded.
    #[error("cannot encode the key of a query of '{name}': {reason}")]
    Key {
        /// The state.
        name: String,
        /// Why.
        reason: String,
    },
    /// The state's value is not of the type asked for.
    #[error("the value of queryable state '{name}' does not decode as {expected}: {reason}")]
    ValueType {
        /// The state.
        name: String,
        /// The type asked for.
        expected: &'static str,
        /// Why.
        reason: String,
    },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<KvResponse>>>>;

/// One open connection: requests go to its writer task, answers come from
/// its reader task.
struct Connection {
    requests: mpsc::UnboundedSender<KvRequest>,
    pending: Pending,
    /// Why the connection died, once it did.
    broken: Arc<Mutex<Option<String>>>,
}

/// A client of one queryable-state proxy.
pub struct QueryableStateClient {
    address: String,
    next_id: AtomicU64,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl QueryableStateClient {
    /// A client of the proxy at `host:port` (no connection until the first
    /// query).
    pub fn new(host: &str, port: u16) -> Self {
        QueryableStateClient {
            address: format!("{host}:{port}"),
            next_id: AtomicU64::new(1),
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// The live state of `key` in job `job_id`'s state queryable as
    /// `name`, decoded as `V` (a value state's value, a list state's
    /// `Vec<T>`, a map state's `HashMap<UK, UV>`, an accumulator); `None`
    /// when the key has no state.
    pub async fn get_kv_state<K: Serialize + ?Sized, V: DeserializeOwned>(
        &self,
        job_id: JobId,
        name: &str,
        key: &K,
    ) -> Result<Option<V>, QueryClientError> {
        let key = postcard::to_allocvec(key).map_err(|e| QueryClientError::Key {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        let bytes = self.query_raw(job_id, name, key, None).await?;
        bytes
            .map(|b| match postcard::take_from_bytes::<V>(&b) {
                Ok((v, [])) => Ok(v),
                Ok((_, rest)) => Err(QueryClientError::ValueType {
                    name: name.to_string(),
                    expected: std::any::type_name::<V>(),
                    reason: format!("{} byte(s) left over", rest.len()),
                }),
                Err(e) => Err(QueryClientError::ValueType {
                    name: name.to_string(),
                    expected: std::any::type_name::<V>(),
                    reason: e.to_string(),
                }),
            })
            .transpose()
    }

    /// Sends one query with a postcard-encoded key and returns the state's
    /// postcard bytes. `subtask` is for a server port (already routed).
    pub async fn query_raw(
        &self,
        job_id: JobId,
        name: &str,
        key: Vec<u8>,
        subtask: Option<u32>,
    ) -> Result<Option<Vec<u8>>, QueryClientError> {
        let connection = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        connection
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let request = KvRequest {
            id,
            job_id: job_id.to_string(),
            name: name.to_string(),
            key,
            subtask,
        };
        // The connection may have broken since it was handed out (its
        // waiters were cleared before this one was added): then the
        // request must not wait for an answer that cannot come.
        let broken = connection
            .broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if broken || connection.requests.send(request).is_err() {
            connection
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        match rx.await {
            Ok(response) => Ok(response.result?),
            Err(_) => Err(QueryClientError::ConnectionLost {
                address: self.address.clone(),
                reason: connection
                    .broken
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "closed".into()),
            }),
        }
    }

    /// The open connection, or a new one when there is none or it broke.
    async fn connection(&self) -> Result<Arc<Connection>, QueryClientError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref()
            && c.broken.lock().unwrap_or_else(|p| p.into_inner()).is_none()
        {
            return Ok(c.clone());
        }
        let c = Arc::new(self.connect().await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<Connection, QueryClientError> {
        let fail = |reason: String| QueryClientError::Connect {
            address: self.address.clone(),
            reason,
        };
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let mut read = tokio::io::BufReader::new(read);
        // A proxy at its connection limit closes new connections at once.
        let closed_early = |e: ProtocolError| {
            match e {
            ProtocolError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                fail("the proxy closed the connection before answering the hello (it may be serving its limit of connections, queryable-state.max-connections)".into())
            }
            e => fail(e.to_string()),
        }
        };
        protocol::write_frames(&mut write, &protocol::hello())
            .await
            .map_err(closed_early)?;
        protocol::read_hello(&mut read)
            .await
            .map_err(closed_early)?;
        let pending: Pending = Arc::default();
        let broken: Arc<Mutex<Option<String>>> = Arc::default();
        let (requests, mut outgoing) = mpsc::unbounded_channel::<KvRequest>();
        let fail_all = {
            let (pending, broken) = (pending.clone(), broken.clone());
            move |reason: String| {
                let mut b = broken.lock().unwrap_or_else(|p| p.into_inner());
                b.get_or_insert(reason);
                // Dropping the senders wakes every waiting caller.
                pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
        };
        let writer_fail = fail_all.clone();
        tokio::spawn(async move {
            let mut frames = Vec::new();
            while let Some(first) = outgoing.recv().await {
                frames.clear();
                let mut r = protocol::encode_frame(&first, &mut frames);
                while r.is_ok()
                    && let Ok(more) = outgoing.try_recv()
                {
                    r = protocol::encode_frame(&more, &mut frames);
                }
                if let Err(e) = match r {
                    Ok(()) => protocol::write_frames(&mut write, &frames).await,
                    Err(e) => Err(e),
                } {
                    writer_fail(e.to_string());
                    return;
                }
            }
        });
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                match protocol::read_frame::<_, KvResponse>(
                    &mut read,
                    &mut buf,
                    protocol::MAX_FRAME,
                )
                .await
                {
                    Ok(Some(response)) => {
                        let waiter = reader_pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&response.id);
                        if let Some(w) = waiter {
                            let _ = w.send(response);
                        }
                    }
                    Ok(None) => {
                        fail_all("the proxy closed the connection".into());
                        return;
                    }
                    Err(e) => {
                        fail_all(match e {
                            ProtocolError::Io(e) => e.to_string(),
                            e => e.to_string(),
                        });
                        return;
                    }
                }
            }
        });
        Ok(Connection {
            requests,
            pending,
            broken,
        })
    }
}
