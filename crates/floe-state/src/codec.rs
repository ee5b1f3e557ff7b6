//! The stable binary encoding of keys and state values.
//!
//! Floe uses postcard: compact (varints), fast, and with a documented wire
//! format that is stable across its 1.x releases, so bytes written by one
//! version of Floe (key hashes, snapshots, savepoints) read the same in the
//! next. Key hashing encodes into a stack buffer, so routing a record costs no
//! allocation for keys up to [`STACK_KEY_BYTES`] bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StateError;

/// Encoded keys up to this size are hashed without touching the heap.
pub const STACK_KEY_BYTES: usize = 256;

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>, StateError> {
    postcard::to_allocvec(value).map_err(|e| StateError::Codec {
        action: "encode",
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes a value, requiring that every byte is consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StateError> {
    let err = |reason: String| StateError::Codec {
        action: "decode",
        what: what.to_string(),
        reason,
    };
    let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(err(format!("{} trailing bytes", rest.len())));
    }
    Ok(v)
}

/// Calls `f` with the canonical bytes of `key`, on the stack when they fit.
///
/// # Panics
/// If the key cannot be serialized at all (a `Serialize` impl that fails),
/// which would make key-group assignment impossible.
#[inline]
pub fn with_key_bytes<K: Serialize + ?Sized, R>(key: &K, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; STACK_KEY_BYTES];
    match postcard::to_slice(key, &mut buf) {
        Ok(bytes) => f(bytes),
        Err(postcard::Error::SerializeBufferFull) => {
            let v = postcard::to_allocvec(key).expect("key type must be serializable");
            f(&v)
        }
        Err(e) => panic!("key type must be serializable: {e}"),
    }
}
