//! The bounds on what state holds: keys, values, map keys and the heap's
//! per-key storage. A leaf module, so every other one can name them
//! without importing through the crate root.

use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a key of a keyed stream must be: hashable for the heap backend,
/// serializable for stable key-group assignment and snapshots.
pub trait Key: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static> Key for T {}

/// What a state value must be: cloneable (the heap backend hands out copies)
/// and serializable (snapshots and the RocksDB backend need bytes).
pub trait StateValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateValue for T {}

/// What a map state's user key must be.
pub trait MapKey: Hash + Eq + StateValue {}
impl<T: Hash + Eq + StateValue> MapKey for T {}

/// What one key of a state holds in a store: a value, a list, a map, an
/// accumulator (the heap keeps it typed, snapshots encode it).
pub(crate) trait StateStorage:
    Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<S: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateStorage for S {}
