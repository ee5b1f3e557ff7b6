//! State descriptors: what a function declares in `open()`.
//!
//! A descriptor names a state and fixes its kind and value type. The name is
//! the state's identity across snapshots, so registering the same name twice
//! with another kind or type is an error rather than a silent reinterpretation.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ttl::{StateTtlConfig, TTL_KIND_FLAG};
use crate::types::StateValue;

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

/// Name, kind and declared value type of one state in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// The state's name (its identity).
    pub name: String,
    /// [`StateKind`] as its stable code, with
    /// [`TTL_KIND_FLAG`](crate::ttl::TTL_KIND_FLAG) set for a TTL state.
    pub kind: u8,
    /// The Rust type the state was declared with (informational: a value
    /// is compatible when its bytes decode as the new type).
    pub value_type: String,
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

/// Declares a [`crate::ValueState`].
#[derive(Debug, Clone)]
pub struct ValueStateDescriptor<T> {
    pub(crate) name: String,
    pub(crate) queryable: Option<String>,
    pub(crate) ttl: Option<StateTtlConfig>,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ValueStateDescriptor<T> {
    /// A value state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            _t: PhantomData,
        }
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
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ListStateDescriptor<T> {
    /// A list state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ListStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            _t: PhantomData,
        }
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
    _t: PhantomData<fn() -> (UK, UV)>,
}

impl<UK, UV> MapStateDescriptor<UK, UV> {
    /// A map state called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            _t: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
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
            reduce: Arc::new(reduce),
        }
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
    pub(crate) function: Arc<F>,
}

impl<F: AggregateFunction> AggregatingStateDescriptor<F> {
    /// An aggregating state called `name` folding with `function`.
    pub fn new(name: impl Into<String>, function: F) -> Self {
        AggregatingStateDescriptor {
            name: name.into(),
            queryable: None,
            ttl: None,
            function: Arc::new(function),
        }
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
