//! Reading keyed state from outside the job (queryable state).
//!
//! A query reaches the subtask that owns its key and is answered from the
//! live backend on the task thread. The answer is the key's whole per-key
//! state — a value, a list, a map, an accumulator — in the format the asker
//! reads: postcard bytes for the Rust client (decoded as the type it names),
//! JSON for the REST API and the CLI.

use serde::Serialize;

use crate::codec;
use crate::descriptor::StateKind;
use crate::error::StateError;

/// How a query wants the answer encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFormat {
    /// Postcard, the stable binary encoding (what snapshots use).
    Postcard,
    /// A JSON value (REST and CLI).
    Json,
}

/// A key's state, encoded for the asker.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// Postcard bytes of the per-key state.
    Postcard(Vec<u8>),
    /// The per-key state as JSON.
    Json(serde_json::Value),
}

impl QueryValue {
    /// Encodes one key's state as `format`.
    pub fn encode<S: Serialize + ?Sized>(
        value: &S,
        format: QueryFormat,
        what: &str,
    ) -> Result<Self, StateError> {
        match format {
            QueryFormat::Postcard => Ok(QueryValue::Postcard(codec::encode(value, what)?)),
            QueryFormat::Json => serde_json::to_value(value)
                .map(QueryValue::Json)
                .map_err(|e| StateError::Codec {
                    action: "encode",
                    what: format!("{what} as JSON"),
                    reason: e.to_string(),
                }),
        }
    }
}

/// Why a query's key bytes are not one key of the state's key type: the
/// reason of a "wrong key type" answer. Typed so a caller can tell bytes
/// that do not decode from a key with bytes left over; the answer sent to
/// a client (the runtime's `QueryError::WrongKeyType`, which crosses the
/// network) carries its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryKeyError {
    /// The bytes do not decode as the key type (postcard's reason; not
    /// the error's `source`, as the message includes it).
    #[error("the query's key does not decode as one: {0}")]
    Decode(postcard::Error),
    /// One key decoded, with bytes left over: a key of another type.
    #[error("the query's key has {extra} byte(s) more than one of that type")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

/// Decodes a query's key: the postcard bytes of exactly one `K` (nothing
/// may be left over). The error says why not, for a "wrong key type" answer.
pub fn decode_query_key<K: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<K, QueryKeyError> {
    match postcard::take_from_bytes::<K>(bytes) {
        Ok((key, [])) => Ok(key),
        Ok((_, rest)) => Err(QueryKeyError::TrailingBytes { extra: rest.len() }),
        Err(e) => Err(QueryKeyError::Decode(e)),
    }
}

/// One queryable state of a backend, as announced to the job's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryableStateInfo<'a> {
    /// The name queries use.
    pub queryable_name: &'a str,
    /// The state's own name.
    pub state_name: &'a str,
    /// Its kind: what a query returns per key (a value, a list, a map…).
    pub kind: StateKind,
    /// The type it was declared with (the value, list element, map entry
    /// or accumulator type), for error messages.
    pub declared_type: &'static str,
}
