//! State descriptors: what a function declares in `open()`.
//!
//! A descriptor names a state and fixes its kind and value type. The name is
//! the state's identity across snapshots, so registering the same name twice
//! with another kind or type is an error rather than a silent reinterpretation.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::schema::{SCHEMA_KIND_FLAG, SerializerIdentity, StateMigration};
use crate::ttl::{StateTtlConfig, TTL_KIND_FLAG};
use crate::types::{MapKey, StateValue};

/// The kinds of keyed state: the five a function declares with a
/// descriptor, and timer queues, which share their name space and their
/// place in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A list per key.
    List,
    /// A map per key.
    Map,
    /// A value folded by a reduce function.
    Reducing,
    /// An accumulator folded by an aggregate function.
    Aggregating,
    /// A timer queue (see [`crate::timer`]): per key group, the pending
    /// timers of both time domains.
    Timers,
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateKind::Value => "ValueState",
            StateKind::List => "ListState",
            StateKind::Map => "MapState",
            StateKind::Reducing => "ReducingState",
            StateKind::Aggregating => "AggregatingState",
            StateKind::Timers => "TimerQueue",
        })
    }
}

impl StateKind {
    /// The kind's code in snapshots; never renumber.
    pub fn code(self) -> u8 {
        match self {
            StateKind::Value => 0,
            StateKind::List => 1,
            StateKind::Map => 2,
            StateKind::Reducing => 3,
            StateKind::Aggregating => 4,
            StateKind::Timers => 5,
        }
    }

    /// The kind of a snapshot code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            3 => StateKind::Reducing,
            4 => StateKind::Aggregating,
            5 => StateKind::Timers,
            _ => return None,
        })
    }
}

/// Name, kind, declared value type and serializer identity of one state
/// in a snapshot.
///
/// On the wire (postcard) it is the tuple `(name, kind, value_type)`,
/// followed by the [`SerializerIdentity`] when there is one, which the kind
/// byte then flags with [`SCHEMA_KIND_FLAG`]: snapshots written before
/// identities read unchanged (as `serializer: None`), and a state carried
/// from one of them is written back byte for byte as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMeta {
    /// The state's name (its identity).
    pub name: String,
    /// [`StateKind`] as its stable code, with
    /// [`TTL_KIND_FLAG`](crate::ttl::TTL_KIND_FLAG) set for a TTL state
    /// (never [`SCHEMA_KIND_FLAG`]: that is `serializer`'s, on the wire).
    pub kind: u8,
    /// The Rust type the state was declared with (`(K, V)` for a map), as
    /// snapshots before identities recorded it.
    pub value_type: String,
    /// How the state's values were written; `None` in snapshots written
    /// before identities existed (accepted as they are on restore).
    pub serializer: Option<SerializerIdentity>,
}

impl StateMeta {
    /// The state's kind; `None` for a code this version does not know.
    pub fn state_kind(&self) -> Option<StateKind> {
        StateKind::from_code(self.kind & !TTL_KIND_FLAG)
    }

    /// Whether the state has a TTL (its values carry timestamps).
    pub fn has_ttl(&self) -> bool {
        self.kind & TTL_KIND_FLAG != 0
    }

    /// The snapshot code of `kind`, with the TTL flag when `ttl`.
    pub(crate) fn code_of(kind: StateKind, ttl: bool) -> u8 {
        kind.code() | if ttl { TTL_KIND_FLAG } else { 0 }
    }
}

impl Serialize for StateMeta {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let flag = if self.serializer.is_some() {
            SCHEMA_KIND_FLAG
        } else {
            0
        };
        let mut t = serializer.serialize_tuple(3 + usize::from(self.serializer.is_some()))?;
        t.serialize_element(&self.name)?;
        t.serialize_element(&(self.kind | flag))?;
        t.serialize_element(&self.value_type)?;
        if let Some(identity) = &self.serializer {
            t.serialize_element(identity)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for StateMeta {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetaVisitor;
        impl<'de> serde::de::Visitor<'de> for MetaVisitor {
            type Value = StateMeta;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a state's name, kind, value type and serializer identity")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StateMeta, A::Error> {
                use serde::de::Error;
                let missing = |i| A::Error::invalid_length(i, &self);
                let name: String = seq.next_element()?.ok_or_else(|| missing(0))?;
                let kind: u8 = seq.next_element()?.ok_or_else(|| missing(1))?;
                let value_type: String = seq.next_element()?.ok_or_else(|| missing(2))?;
                let serializer = if kind & SCHEMA_KIND_FLAG != 0 {
                    Some(seq.next_element()?.ok_or_else(|| missing(3))?)
                } else {
                    None
                };
                Ok(StateMeta {
                    name,
                    kind: kind & !SCHEMA_KIND_FLAG,
                    value_type,
                    serializer,
                })
            }
        }
        // Postcard reads tuple elements on demand: the fourth only when
        // the kind flags it.
        deserializer.deserialize_tuple(4, MetaVisitor)
    }
}

/// Declares a [`crate::ValueState`].
#[derive(Debug, Clone)]
pub struct ValueStateDescriptor<T> {
    pub(crate) name: String,
    pub(crate) queryable: Option<String>,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) migration: Option<StateMigration<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ValueStateDescriptor<T> {
    /// A value state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            migration: None,
            _t: PhantomData,
        }
    }

    /// Converts the values a snapshot holds as `Old` into `T` when the
    /// state is restored (Flink's state schema evolution, made explicit):
    /// `.with_migration(|old: u32| -> u64 { old.into() })`. The
    /// migration runs once per restored value when the state is
    /// registered, on either backend and at any parallelism, and only for
    /// a snapshot that recorded `Old` as the state's type; a restore that
    /// already holds the declared type ignores it. Without a migration, a
    /// snapshot of another type is refused (see [`crate::schema`]).
    pub fn with_migration<Old: StateValue>(
        mut self,
        migrate: impl Fn(Old) -> T + Send + Sync + 'static,
    ) -> Self {
        self.migration = Some(StateMigration::new::<Old>(
            std::any::type_name::<Old>(),
            migrate,
        ));
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Declares a [`crate::ListState`].
#[derive(Debug, Clone)]
pub struct ListStateDescriptor<T> {
    pub(crate) name: String,
    pub(crate) queryable: Option<String>,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) migration: Option<StateMigration<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ListStateDescriptor<T> {
    /// A list state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ListStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            migration: None,
            _t: PhantomData,
        }
    }

    /// Converts the values a snapshot holds as `Old` into `T` when the
    /// state is restored (Flink's state schema evolution, made explicit):
    /// `.with_migration(|old: u32| -> u64 { old.into() })`. The
    /// migration runs once per restored list element when the state is
    /// registered, on either backend and at any parallelism, and only for
    /// a snapshot that recorded `Old` as the state's type; a restore that
    /// already holds the declared type ignores it. Without a migration, a
    /// snapshot of another type is refused (see [`crate::schema`]).
    pub fn with_migration<Old: StateValue>(
        mut self,
        migrate: impl Fn(Old) -> T + Send + Sync + 'static,
    ) -> Self {
        self.migration = Some(StateMigration::new::<Old>(
            std::any::type_name::<Old>(),
            migrate,
        ));
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Declares a [`crate::MapState`].
#[derive(Debug, Clone)]
pub struct MapStateDescriptor<UK, UV> {
    pub(crate) name: String,
    pub(crate) queryable: Option<String>,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) migration: Option<StateMigration<UV>>,
    _t: PhantomData<fn() -> (UK, UV)>,
}

impl<UK, UV> MapStateDescriptor<UK, UV> {
    /// A map state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            migration: None,
            _t: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<UK: MapKey, UV: StateValue> MapStateDescriptor<UK, UV> {
    /// Converts the map values a snapshot holds as `Old` into `UV` when
    /// the state is restored, keeping the user keys (Flink's state schema
    /// evolution, made explicit): `.with_migration(|old: u64| old.to_string())`.
    /// The migration runs once per restored entry when the state is
    /// registered, on either backend and at any parallelism, and only for
    /// a snapshot that recorded `Old` as the map's value type; a restore
    /// that already holds the declared types ignores it. Without a
    /// migration, a snapshot of other types is refused (see
    /// [`crate::schema`]).
    pub fn with_migration<Old: StateValue>(
        mut self,
        migrate: impl Fn(Old) -> UV + Send + Sync + 'static,
    ) -> Self {
        self.migration = Some(StateMigration::new::<Old>(
            std::any::type_name::<(UK, Old)>(),
            migrate,
        ));
        self
    }
}

/// The shared reduce function of a [`ReducingStateDescriptor`].
pub type ReduceFn<T> = Arc<dyn Fn(T, T) -> T + Send + Sync>;

/// Declares a [`crate::ReducingState`]: every `add` folds the new value into
/// the stored one with `reduce`.
#[derive(Clone)]
pub struct ReducingStateDescriptor<T> {
    pub(crate) name: String,
    pub(crate) queryable: Option<String>,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) migration: Option<StateMigration<T>>,
    pub(crate) reduce: ReduceFn<T>,
}

impl<T: StateValue> ReducingStateDescriptor<T> {
    /// A reducing state called `name` folding with `reduce(stored, new)`.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(T, T) -> T + Send + Sync + 'static,
    ) -> Self {
        ReducingStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            migration: None,
            reduce: Arc::new(reduce),
        }
    }

    /// Converts the values a snapshot holds as `Old` into `T` when the
    /// state is restored (Flink's state schema evolution, made explicit):
    /// `.with_migration(|old: u32| -> u64 { old.into() })`. The
    /// migration runs once per restored value when the state is
    /// registered, on either backend and at any parallelism, and only for
    /// a snapshot that recorded `Old` as the state's type; a restore that
    /// already holds the declared type ignores it. Without a migration, a
    /// snapshot of another type is refused (see [`crate::schema`]).
    pub fn with_migration<Old: StateValue>(
        mut self,
        migrate: impl Fn(Old) -> T + Send + Sync + 'static,
    ) -> Self {
        self.migration = Some(StateMigration::new::<Old>(
            std::any::type_name::<Old>(),
            migrate,
        ));
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T> fmt::Debug for ReducingStateDescriptor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReducingStateDescriptor")
            .field("name", &self.name)
            .field("queryable", &self.queryable)
            .field("ttl", &self.ttl)
            .field("migration", &self.migration)
            .finish()
    }
}

/// Flink's `AggregateFunction`: folds inputs into an accumulator and reads a
/// result from it. Unlike a reduce, input, accumulator and result may differ
/// (e.g. an average keeps `(sum, count)` and returns `sum / count`).
pub trait AggregateFunction: Send + Sync + 'static {
    /// What is added.
    type In;
    /// What is stored.
    type Acc: StateValue;
    /// What is read.
    type Out;
    /// A fresh accumulator, used for the first value of a key.
    fn create_accumulator(&self) -> Self::Acc;
    /// Folds one value into the accumulator.
    fn add(&self, value: Self::In, acc: &mut Self::Acc);
    /// The result for an accumulator.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Combines two accumulators (merging windows, combining partial results).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// Declares a [`crate::AggregatingState`].
pub struct AggregatingStateDescriptor<F> {
    pub(crate) name: String,
    pub(crate) queryable: Option<String>,
    pub(crate) ttl: Option<StateTtlConfig>,
    /// A `StateMigration<F::Acc>` (erased: the struct does not bound `F`).
    pub(crate) migration: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) function: Arc<F>,
}

impl<F: AggregateFunction> AggregatingStateDescriptor<F> {
    /// An aggregating state called `name` folding with `function`.
    pub fn new(name: impl Into<String>, function: F) -> Self {
        AggregatingStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            migration: None,
            function: Arc::new(function),
        }
    }

    /// Converts the values a snapshot holds as `Old` into `the accumulator `F::Acc`` when the
    /// state is restored (Flink's state schema evolution, made explicit):
    /// `.with_migration(|old: u32| -> u64 { old.into() })`. The
    /// migration runs once per restored accumulator when the state is
    /// registered, on either backend and at any parallelism, and only for
    /// a snapshot that recorded `Old` as the state's type; a restore that
    /// already holds the declared type ignores it. Without a migration, a
    /// snapshot of another type is refused (see [`crate::schema`]).
    pub fn with_migration<Old: StateValue>(
        mut self,
        migrate: impl Fn(Old) -> F::Acc + Send + Sync + 'static,
    ) -> Self {
        self.migration = Some(Arc::new(StateMigration::new::<Old>(
            std::any::type_name::<Old>(),
            migrate,
        )));
        self
    }

    /// The migration of the accumulator, if one was declared.
    pub(crate) fn accumulator_migration(&self) -> Option<&StateMigration<F::Acc>> {
        self.migration.as_ref()?.downcast_ref()
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<F> Clone for AggregatingStateDescriptor<F> {
    fn clone(&self) -> Self {
        AggregatingStateDescriptor {
            name: self.name.clone(),
            queryable: self.queryable.clone(),
            ttl: self.ttl.clone(),
            migration: self.migration.clone(),
            function: self.function.clone(),
        }
    }
}

/// `set_queryable`, `queryable_name`, `enable_time_to_live` and
/// `ttl_config` for every descriptor.
macro_rules! queryable_descriptor {
    ($($ty:ident<$($g:ident),+>),+) => {$(
        impl<$($g),+> $ty<$($g),+> {
            /// Makes the state readable from outside the job under
            /// `queryable_name` (Flink's `setQueryable`), when the job runs
            /// with `queryable-state.enable: true`. The name is the job's
            /// identity for the state in queries, independent of the state
            /// name, and must be unique within the job.
            pub fn set_queryable(mut self, queryable_name: impl Into<String>) -> Self {
                self.queryable = Some(queryable_name.into());
                self
            }

            /// The name queries use, if the state is queryable.
            pub fn queryable_name(&self) -> Option<&str> {
                self.queryable.as_deref()
            }

            /// Gives the state a time to live (Flink's `enableTimeToLive`;
            /// see [`crate::ttl`]): values not written (or read, per the
            /// config) for that long expire, per element of a list and per
            /// entry of a map. A state cannot be both queryable and TTL
            /// (its registration fails, as Flink refuses it), and turning
            /// TTL on or off for a state that snapshots hold is refused on
            /// restore: the stored values change shape.
            pub fn enable_time_to_live(mut self, config: StateTtlConfig) -> Self {
                self.ttl = Some(config);
                self
            }

            /// The state's TTL, if enabled.
            pub fn ttl_config(&self) -> Option<&StateTtlConfig> {
                self.ttl.as_ref()
            }
        }
    )+};
}

queryable_descriptor!(
    ValueStateDescriptor<T>,
    ListStateDescriptor<T>,
    MapStateDescriptor<UK, UV>,
    ReducingStateDescriptor<T>,
    AggregatingStateDescriptor<F>
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A state's meta information as snapshots before identities wrote it
    /// reads with no identity, and is written back byte for byte.
    #[test]
    fn meta_without_identity_is_the_old_encoding() {
        #[rustfmt::skip]
        let old: &[u8] = &[
            5, b'c', b'o', b'u', b'n', b't', // name "count"
            0x00,                            // kind: value
            3, b'u', b'6', b'4',             // declared type "u64"
        ];
        let meta: StateMeta = postcard::from_bytes(old).unwrap();
        assert_eq!(meta.serializer, None);
        assert_eq!(meta.state_kind(), Some(StateKind::Value));
        assert_eq!(postcard::to_allocvec(&meta).unwrap(), old);
    }

    /// The serializer identity's encoding, pinned: it follows the type
    /// name, flagged with 0x40 in the kind byte.
    #[test]
    fn meta_with_identity_is_pinned() {
        let meta = StateMeta {
            name: "m".into(),
            kind: StateMeta::code_of(StateKind::Map, false),
            value_type: "(u8, u64)".into(),
            serializer: Some(SerializerIdentity::postcard(&["u8", "u64"])),
        };
        let bytes = postcard::to_allocvec(&meta).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            1, b'm',                                          // name
            0x42,                                             // kind: map (2) | identity (0x40)
            9, b'(', b'u', b'8', b',', b' ', b'u', b'6', b'4', b')', // declared type
            8, b'p', b'o', b's', b't', b'c', b'a', b'r', b'd',   // codec "postcard"
            1,                                                // format version 1
            2, 2, b'u', b'8', 3, b'u', b'6', b'4',            // types ["u8", "u64"]
            0,                                                // no schema
        ];
        assert_eq!(bytes, expected);
        assert_eq!(postcard::from_bytes::<StateMeta>(&bytes).unwrap(), meta);
    }
}
