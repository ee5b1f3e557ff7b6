//! State schema compatibility (Flink's state schema evolution): what a
//! snapshot records about how each state's bytes were written, how a
//! restore compares that with what the job declares now, and the
//! migrations that let a state's type change.
//!
//! Every state in a snapshot carries a [`SerializerIdentity`] beside its
//! name and kind: the codec, the codec's format version and the Rust type
//! names of what is stored (a value, a list element, a map key and value).
//! When the job registers the state again, the two are compared once, at
//! registration (never per record), with one of three outcomes
//! ([`SchemaCompatibility`]):
//!
//! - *compatible as is*: same codec and types, the bytes are used as they
//!   are;
//! - *compatible after migration*: the descriptor declares a migration
//!   ([`StateMigration`], e.g. `ValueStateDescriptor::with_migration`)
//!   whose old type is the snapshot's; every restored value is converted
//!   before the state is loaded, on either backend and at any parallelism;
//! - *incompatible*: anything else. Postcard is not self-describing, so
//!   bytes written as one type may well decode as another (a `u64` count
//!   read as `u32`) and silently change meaning: the restore is refused
//!   with [`StateError::IncompatibleSchema`](crate::StateError), which no
//!   restart can cure.
//!
//! Snapshots written before identities existed record none: their states
//! are accepted as they were (the bytes must still decode), and a
//! migration applies to them when the type name they recorded is the
//! migration's old type.
//!
//! On the wire the identity follows the state's existing meta info, and its
//! presence is flagged in the kind byte with [`SCHEMA_KIND_FLAG`], as
//! [`TTL_KIND_FLAG`](crate::ttl::TTL_KIND_FLAG) marks TTL state: old
//! snapshots never set the flag and read unchanged.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::types::StateValue;

/// In a snapshot's state kind code (and an operator state's mode code): a
/// [`SerializerIdentity`] follows the state's type name. Codes are small,
/// so snapshots written before identities never set it.
pub const SCHEMA_KIND_FLAG: u8 = 0x40;

/// The codec every state is written with today.
pub const POSTCARD_CODEC: &str = "postcard";

/// The format version of [`POSTCARD_CODEC`]: postcard's wire format is
/// stable across its 1.x releases. A change of encoding (another codec, a
/// new postcard major version) takes a new version, and the restore of
/// state written with the old one then needs a migration.
pub const POSTCARD_FORMAT_VERSION: u32 = 1;

/// How one state's bytes were written: what a restore needs to know to
/// tell whether the state it declares now can read them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SerializerIdentity {
    /// The codec ([`POSTCARD_CODEC`]).
    pub codec: String,
    /// The codec's format version ([`POSTCARD_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The Rust types of what is stored, as `std::any::type_name` spells
    /// them: the value (value, reducing state), the element (list state),
    /// the accumulator (aggregating state), the user key and then the
    /// value (map and broadcast state), the namespace (timer queues).
    pub types: Vec<String>,
    /// For a self-describing codec, the schema the values were written
    /// with; `None` for postcard, whose bytes carry no schema.
    pub schema: Option<String>,
}

impl SerializerIdentity {
    /// The identity of state stored with postcard as `types`.
    pub fn postcard(types: &[&str]) -> Self {
        SerializerIdentity {
            codec: POSTCARD_CODEC.to_string(),
            format_version: POSTCARD_FORMAT_VERSION,
            types: types.iter().map(|t| t.to_string()).collect(),
            schema: None,
        }
    }

    /// The state as a user declares it, e.g. `MapState<alloc::string::String, u64>`,
    /// for error messages.
    pub fn describe(&self, kind: impl fmt::Display) -> String {
        let mut s = format!("{kind}<{}>", self.types.join(", "));
        if self.codec != POSTCARD_CODEC || self.format_version != POSTCARD_FORMAT_VERSION {
            s.push_str(&format!(" ({} v{})", self.codec, self.format_version));
        }
        s
    }
}

/// Whether a restored state can be used as the job declares it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCompatibility {
    /// The bytes are read as they are: the same codec and types, or a
    /// snapshot older than identities (accepted as before).
    CompatibleAsIs,
    /// The declared migration converts every restored value first.
    CompatibleAfterMigration,
    /// Neither: the restore must be refused.
    Incompatible,
}

impl SchemaCompatibility {
    /// Compares what a snapshot recorded (`None`: written before
    /// identities) with what is `declared` now, given the identity a
    /// declared migration reads (`migrates_from`).
    pub fn of(
        recorded: Option<&SerializerIdentity>,
        declared: &SerializerIdentity,
        migrates_from: Option<&SerializerIdentity>,
    ) -> Self {
        match recorded {
            None => SchemaCompatibility::CompatibleAsIs,
            Some(r) if r == declared => SchemaCompatibility::CompatibleAsIs,
            Some(r) if migrates_from == Some(r) => SchemaCompatibility::CompatibleAfterMigration,
            Some(_) => SchemaCompatibility::Incompatible,
        }
    }
}

/// Decodes one old value at the front of the bytes and converts it:
/// the new value and how many bytes it took.
type Convert<T> = Arc<dyn Fn(&[u8]) -> Result<(T, usize), String> + Send + Sync>;

/// A conversion of restored values from the type a snapshot holds to the
/// type a descriptor declares (`T`), registered with the descriptor's
/// `with_migration`. It declares its old type, which must be the one the
/// snapshot recorded for the migration to run; it runs once per restored
/// value (list element, map value) when the state is registered, never on
/// the record path.
pub struct StateMigration<T> {
    /// `type_name` of the old value type.
    from: &'static str,
    /// The old state's type name as snapshots before identities recorded
    /// it (`(K, V)` for a map), to migrate those too.
    legacy_from: &'static str,
    convert: Convert<T>,
}

impl<T: StateValue> StateMigration<T> {
    /// A migration from `Old` with `f`; `legacy_from` is the type name
    /// snapshots before identities recorded for the old state.
    pub(crate) fn new<Old: StateValue>(
        legacy_from: &'static str,
        f: impl Fn(Old) -> T + Send + Sync + 'static,
    ) -> Self {
        StateMigration {
            from: std::any::type_name::<Old>(),
            legacy_from,
            convert: Arc::new(move |bytes: &[u8]| {
                let (old, rest) =
                    postcard::take_from_bytes::<Old>(bytes).map_err(|e| e.to_string())?;
                Ok((f(old), bytes.len() - rest.len()))
            }),
        }
    }

    /// The old value type's name.
    pub fn from_type(&self) -> &'static str {
        self.from
    }

    /// The old state's type name as pre-identity snapshots recorded it.
    pub(crate) fn legacy_from(&self) -> &'static str {
        self.legacy_from
    }

    /// Decodes one old value at the front of `bytes`, converts it and
    /// appends the new value's encoding to `out`; returns the bytes read.
    pub(crate) fn convert_into(&self, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let (value, used) = (self.convert)(bytes)?;
        out.extend_from_slice(&postcard::to_allocvec(&value).map_err(|e| e.to_string())?);
        Ok(used)
    }
}

impl<T> Clone for StateMigration<T> {
    fn clone(&self) -> Self {
        StateMigration {
            from: self.from,
            legacy_from: self.legacy_from,
            convert: self.convert.clone(),
        }
    }
}

impl<T> fmt::Debug for StateMigration<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMigration")
            .field("from", &self.from)
            .field("to", &std::any::type_name::<T>())
            .finish()
    }
}

/// How a state's per-key content is laid out in canonical bytes, for a
/// migration to walk it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentLayout {
    /// One value per key.
    Value,
    /// A sequence of values per key.
    List,
    /// A map per key; the user keys are kept as they are.
    Map,
}

/// The type-erased migration of one state's per-key content, made where
/// the types are known (the handle's registration) and run by the backend,
/// which knows the key type.
pub(crate) struct ContentMigration<'a> {
    /// The identity the migration reads.
    pub(crate) from: SerializerIdentity,
    /// The old type name of pre-identity snapshots.
    pub(crate) legacy_from: &'static str,
    /// Reads one key's old content at the front of the input, appends the
    /// new content to the output; returns the bytes read.
    pub(crate) content: Box<MigrateContent<'a>>,
}

/// Reads one key's old content at the front of the input, appends the new
/// content to the output; returns the bytes read.
pub(crate) type MigrateContent<'a> = dyn Fn(&[u8], &mut Vec<u8>) -> Result<usize, String> + 'a;

impl<'a> ContentMigration<'a> {
    /// The content migration of `migration` (if any) for a state laid out
    /// as `layout` (with TTL timestamps when `ttl`); `identity_types` gives
    /// the identity's types from the old value type, and `user_key_len`
    /// measures a map's user key.
    pub(crate) fn of<V: StateValue>(
        migration: Option<&'a StateMigration<V>>,
        identity_types: impl FnOnce(&'static str) -> Vec<&'static str>,
        layout: ContentLayout,
        ttl: bool,
        user_key_len: fn(&[u8]) -> Result<usize, String>,
    ) -> Option<Self> {
        let m = migration?;
        Some(ContentMigration {
            from: SerializerIdentity::postcard(&identity_types(m.from_type())),
            legacy_from: m.legacy_from(),
            content: Box::new(move |input, out| {
                migrate_content(input, out, layout, ttl, &user_key_len, &|b, o| {
                    m.convert_into(b, o)
                })
            }),
        })
    }
}

/// For states without user keys: never called.
pub(crate) fn no_user_key(_: &[u8]) -> Result<usize, String> {
    Err("this state has no user keys".into())
}

/// Rewrites one key's content (laid out as `layout`, with TTL timestamps
/// before each value when `ttl`) with `value` converting each value;
/// `user_key_len` measures a map's user key. Returns the bytes read.
pub(crate) fn migrate_content(
    input: &[u8],
    out: &mut Vec<u8>,
    layout: ContentLayout,
    ttl: bool,
    user_key_len: &dyn Fn(&[u8]) -> Result<usize, String>,
    value: &MigrateContent<'_>,
) -> Result<usize, String> {
    let mut at = 0;
    let one_value = |at: &mut usize, out: &mut Vec<u8>| -> Result<(), String> {
        if ttl {
            let stamp = input
                .get(*at..*at + 8)
                .ok_or("a TTL timestamp is cut short")?;
            out.extend_from_slice(stamp);
            *at += 8;
        }
        *at += value(&input[*at..], out)?;
        Ok(())
    };
    match layout {
        ContentLayout::Value => one_value(&mut at, out)?,
        ContentLayout::List | ContentLayout::Map => {
            let (n, rest) = postcard::take_from_bytes::<usize>(input).map_err(|e| e.to_string())?;
            at = input.len() - rest.len();
            push_len(out, n)?;
            for _ in 0..n {
                if layout == ContentLayout::Map {
                    let len = user_key_len(&input[at..])?;
                    out.extend_from_slice(&input[at..at + len]);
                    at += len;
                }
                one_value(&mut at, out)?;
            }
        }
    }
    Ok(at)
}

/// Appends postcard's encoding of a sequence length.
pub(crate) fn push_len(out: &mut Vec<u8>, n: usize) -> Result<(), String> {
    out.extend_from_slice(&postcard::to_allocvec(&n).map_err(|e| e.to_string())?);
    Ok(())
}

/// The encoded length of the `T` at the front of `bytes`.
pub(crate) fn encoded_len<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<usize, String> {
    let (_, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())?;
    Ok(bytes.len() - rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_outcomes() {
        let u32_ = SerializerIdentity::postcard(&["u32"]);
        let u64_ = SerializerIdentity::postcard(&["u64"]);
        use SchemaCompatibility::*;
        assert_eq!(SchemaCompatibility::of(None, &u64_, None), CompatibleAsIs);
        assert_eq!(
            SchemaCompatibility::of(Some(&u64_), &u64_, None),
            CompatibleAsIs
        );
        assert_eq!(
            SchemaCompatibility::of(Some(&u32_), &u64_, Some(&u32_)),
            CompatibleAfterMigration
        );
        assert_eq!(
            SchemaCompatibility::of(Some(&u32_), &u64_, None),
            Incompatible
        );
        assert_eq!(
            SchemaCompatibility::of(Some(&u64_), &u32_, Some(&u32_)),
            Incompatible
        );
        // A migration is not needed when nothing changed.
        assert_eq!(
            SchemaCompatibility::of(Some(&u64_), &u64_, Some(&u32_)),
            CompatibleAsIs
        );
    }

    #[test]
    fn a_map_migration_keeps_user_keys_and_ttl_stamps() {
        let m = StateMigration::<String>::new::<u64>("", |v| format!("{v}!"));
        let old: Vec<(String, ([u8; 8], u64))> = vec![("a".into(), ([1; 8], 300))];
        let bytes = postcard::to_allocvec(&old).unwrap();
        let mut out = Vec::new();
        let used = migrate_content(
            &bytes,
            &mut out,
            ContentLayout::Map,
            true,
            &encoded_len::<String>,
            &|b, o| m.convert_into(b, o),
        )
        .unwrap();
        assert_eq!(used, bytes.len());
        let new: Vec<(String, ([u8; 8], String))> = postcard::from_bytes(&out).unwrap();
        assert_eq!(new, vec![("a".to_string(), ([1; 8], "300!".to_string()))]);
    }
}
