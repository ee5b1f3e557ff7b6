//! Native (incremental) snapshots of the RocksDB backend, through the
//! public API with a stand-in for checkpoint storage: a map of uploaded
//! files, filled exactly as the runtime's uploader does (new files
//! uploaded under their shared name, the others referenced).
#![cfg(feature = "rocksdb")]

use std::collections::HashMap;

use floe_state::native::{NativeSharedFile, SharedFileRef, SstSource};
use floe_state::{
    HeapConfig, KeyGroupRange, KeyedStateBackend, KeyedStateSnapshot, ListStateDescriptor,
    RocksDbConfig, StateBackendKind, StateBackendSettings, StateError, ValueStateDescriptor,
    key_group_for_key,
};

#[path = "timers/model.rs"]
mod model;

const MAX_P: u32 = 128;

fn incremental() -> StateBackendSettings {
    StateBackendSettings {
        kind: StateBackendKind::RocksDb,
        heap: HeapConfig::default(),
        rocksdb: RocksDbConfig {
            incremental: true,
            ..RocksDbConfig::default()
        },
    }
}

fn all() -> KeyGroupRange {
    KeyGroupRange::new(0, (MAX_P - 1) as u16)
}

fn set_key(b: &mut KeyedStateBackend<u64>, key: u64) {
    b.set_current_key(key, key_group_for_key(&key, MAX_P))
        .unwrap();
}

/// Checkpoint storage stand-in: uploaded shared files by path.
#[derive(Default)]
struct Shared {
    files: HashMap<String, Vec<u8>>,
}

/// What one checkpoint wrote.
struct Written {
    manifest: Vec<u8>,
    uploaded: u64,
    full: u64,
}

impl Shared {
    /// Uploads a native snapshot as the runtime does and returns its
    /// manifest with the bytes uploaded and the full size.
    fn upload(&mut self, s: &KeyedStateSnapshot) -> Written {
        let native = s
            .native()
            .expect("an incremental RocksDB snapshot is native");
        let (mut uploaded, mut full) = (0, 0);
        let mut shared = Vec::new();
        for f in native.sst() {
            let path = match &f.source {
                SstSource::Upload => {
                    let bytes = std::fs::read(native.dir().join(&f.name)).unwrap();
                    uploaded += bytes.len() as u64;
                    let path = format!("job/shared/{}", f.shared_name);
                    self.files.insert(path.clone(), bytes);
                    path
                }
                SstSource::OwnShared => {
                    let path = format!("job/shared/{}", f.shared_name);
                    assert!(self.files.contains_key(&path), "{path} was never uploaded");
                    path
                }
                SstSource::At(r) => r.path.clone(),
            };
            full += f.size;
            shared.push(NativeSharedFile {
                name: f.name.clone(),
                shared_name: f.shared_name.clone(),
                file: SharedFileRef { path, size: f.size },
            });
        }
        let mut manifest = Vec::new();
        s.encode_native_into(shared, &mut manifest).unwrap();
        let private = manifest.len() as u64;
        Written {
            manifest,
            uploaded: uploaded + private,
            full: full + private,
        }
    }

    fn fetch(
        &self,
        f: &SharedFileRef,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        self.files
            .get(&f.path)
            .cloned()
            .ok_or_else(|| format!("{} not found", f.path).into())
    }
}

/// The key count of the size test: 1,000,000 by default (a debug build
/// writes them in a few seconds); `FLOE_INCREMENTAL_KEYS=10000000` runs the
/// issue's full size.
fn size_test_keys() -> u64 {
    std::env::var("FLOE_INCREMENTAL_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// With 1 % of the keys updated between two checkpoints, the second one
/// uploads well under 10 % of the full state.
#[test]
fn second_checkpoint_uploads_only_what_changed() {
    let keys = size_test_keys();
    let mut b = KeyedStateBackend::<u64>::new(incremental(), "count", all(), MAX_P).unwrap();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    for k in 0..keys {
        set_key(&mut b, k);
        count.update(&mut b, k).unwrap();
    }
    let mut shared = Shared::default();
    let first = shared.upload(&b.snapshot_for_checkpoint(1, None));
    assert_eq!(first.uploaded, first.full, "the first checkpoint is full");
    for k in (0..keys).step_by(100) {
        set_key(&mut b, k);
        count.update(&mut b, k + 1).unwrap();
    }
    let second = shared.upload(&b.snapshot_for_checkpoint(2, Some(1)));
    let ratio = second.uploaded as f64 / second.full as f64;
    eprintln!(
        "keys {keys}: first checkpoint {} bytes; second uploads {} of {} bytes ({:.2} %)",
        first.full,
        second.uploaded,
        second.full,
        ratio * 100.0
    );
    assert!(
        ratio < 0.05,
        "second checkpoint uploads {:.1} %",
        ratio * 100.0
    );
}

/// Writes `n` keys of a value and a list state and takes native checkpoint 1.
fn checkpointed(n: u64, shared: &mut Shared) -> (KeyedStateBackend<u64>, Written) {
    let mut b = KeyedStateBackend::<u64>::new(incremental(), "op", all(), MAX_P).unwrap();
    let v = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let l = b
        .get_list_state(&ListStateDescriptor::<String>::new("l"))
        .unwrap();
    for k in 0..n {
        set_key(&mut b, k);
        v.update(&mut b, k * 3).unwrap();
        l.add(&mut b, format!("a{k}")).unwrap();
        l.add(&mut b, format!("b{k}")).unwrap();
    }
    let w = shared.upload(&b.snapshot_for_checkpoint(1, None));
    (b, w)
}

fn check_values(b: &mut KeyedStateBackend<u64>, keys: impl Iterator<Item = u64>) {
    let v = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let l = b
        .get_list_state(&ListStateDescriptor::<String>::new("l"))
        .unwrap();
    for k in keys {
        set_key(b, k);
        assert_eq!(v.value(b).unwrap(), Some(k * 3), "key {k}");
        assert_eq!(
            l.get(b).unwrap().collect::<Vec<_>>(),
            vec![format!("a{k}"), format!("b{k}")],
            "key {k}"
        );
    }
}

/// Restored at the same parallelism in the same job, the database's files
/// are referenced by the next checkpoint instead of uploaded again.
#[test]
fn restore_in_place_reuses_the_restored_files() {
    let mut shared = Shared::default();
    let (_, w) = checkpointed(2_000, &mut shared);
    let mut r = KeyedStateBackend::<u64>::new(incremental(), "op", all(), MAX_P).unwrap();
    r.restore_native([w.manifest.as_slice()], 1, true, &|f| shared.fetch(f))
        .unwrap();
    check_values(&mut r, 0..2_000);
    let next = r.snapshot_for_checkpoint(2, Some(1));
    let native = next.native().unwrap();
    assert!(!native.sst().is_empty());
    for f in native.sst() {
        assert!(
            matches!(f.source, SstSource::At(_)),
            "{} is uploaded again",
            f.name
        );
    }
    // A restore of another job's checkpoint (not reusable) uploads it all.
    let mut other = KeyedStateBackend::<u64>::new(incremental(), "op", all(), MAX_P).unwrap();
    other
        .restore_native([w.manifest.as_slice()], 1, false, &|f| shared.fetch(f))
        .unwrap();
    let first = other.snapshot_for_checkpoint(5, Some(1));
    assert!(
        first
            .native()
            .unwrap()
            .sst()
            .iter()
            .all(|f| f.source == SstSource::Upload)
    );
}

/// A native checkpoint taken at parallelism 1 restores into two RocksDB
/// subtasks (each keeps its key groups only) and into the heap backend.
#[test]
fn native_checkpoints_rescale_and_switch_to_the_heap() {
    let mut shared = Shared::default();
    let (_, w) = checkpointed(3_000, &mut shared);
    let halves = [
        KeyGroupRange::for_operator_index(MAX_P, 2, 0),
        KeyGroupRange::for_operator_index(MAX_P, 2, 1),
    ];
    let mut total = 0;
    for range in halves {
        let mut r = KeyedStateBackend::<u64>::new(incremental(), "op", range, MAX_P).unwrap();
        r.restore_native([w.manifest.as_slice()], 1, true, &|f| shared.fetch(f))
            .unwrap();
        let mine: Vec<u64> = (0..3_000)
            .filter(|k| range.contains(key_group_for_key(k, MAX_P)))
            .collect();
        check_values(&mut r, mine.iter().copied());
        let keys: usize = r.keys_per_key_group("v").unwrap().iter().sum();
        assert_eq!(keys, mine.len(), "only the key groups of {range:?}");
        total += keys;
    }
    assert_eq!(total, 3_000);
    let mut h =
        KeyedStateBackend::<u64>::new(StateBackendKind::HashMap, "op", all(), MAX_P).unwrap();
    h.restore_native([w.manifest.as_slice()], 1, false, &|f| shared.fetch(f))
        .unwrap();
    check_values(&mut h, 0..3_000);
}

/// A natively restored state is checked against the serializer identity
/// its manifest recorded: another type is refused (and stays restorable),
/// a migration is refused with the way out (natively restored values are
/// not rewritten: a savepoint is), and the heap, which restores the same
/// checkpoint canonically, migrates it.
#[test]
fn natively_restored_state_is_checked_against_its_identity() {
    let mut shared = Shared::default();
    let (_, w) = checkpointed(50, &mut shared);
    let mut r = KeyedStateBackend::<u64>::new(incremental(), "op", all(), MAX_P).unwrap();
    r.restore_native([w.manifest.as_slice()], 1, true, &|f| shared.fetch(f))
        .unwrap();
    let err = r
        .get_state(&ValueStateDescriptor::<u32>::new("v"))
        .unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ValueState<u64>") && msg.contains("ValueState<u32>"),
        "{msg}"
    );
    let migrated = ValueStateDescriptor::<u128>::new("v").with_migration(|old: u64| old.into());
    let err = r.get_state(&migrated).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleRestore { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("savepoint"), "{err}");
    assert!(r.restore_refusal().is_some());
    check_values(&mut r, 0..50);

    let mut h =
        KeyedStateBackend::<u64>::new(StateBackendKind::HashMap, "op", all(), MAX_P).unwrap();
    h.restore_native([w.manifest.as_slice()], 1, false, &|f| shared.fetch(f))
        .unwrap();
    let v = h.get_state(&migrated).unwrap();
    for k in 0..50 {
        set_key(&mut h, k);
        assert_eq!(v.value(&mut h).unwrap(), Some(u128::from(k * 3)));
    }
    assert!(h.restore_refusal().is_none());
}

/// A missing shared file is a clear error naming it.
#[test]
fn a_missing_shared_file_is_a_clear_error() {
    let mut shared = Shared::default();
    let (_, w) = checkpointed(100, &mut shared);
    shared.files.clear();
    let mut r = KeyedStateBackend::<u64>::new(incremental(), "op", all(), MAX_P).unwrap();
    let err = r
        .restore_native([w.manifest.as_slice()], 1, true, &|f| shared.fetch(f))
        .unwrap_err();
    assert!(
        matches!(&err, StateError::FetchSharedFile { path, reason, .. }
            if path.starts_with("job/shared/") && reason.to_string().ends_with("not found")),
        "{err:?}"
    );
    // A storage fault: a restart may cure it.
    assert!(!err.is_permanent());
    let err = err.to_string();
    assert!(
        err.contains("cannot download shared state file job/shared/"),
        "{err}"
    );
}

/// Two checkpoints built on the same base (the first one never
/// completed) upload a new file under distinct names: the registry may
/// delete the first one's upload while the second is in flight, so they
/// must never share a path.
#[test]
fn checkpoints_on_the_same_base_never_share_an_upload_path() {
    let mut shared = Shared::default();
    let (mut b, _) = checkpointed(500, &mut shared);
    let v = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    for k in 0..50 {
        set_key(&mut b, k);
        v.update(&mut b, 7).unwrap();
    }
    let uploads = |s: &KeyedStateSnapshot| -> Vec<String> {
        s.native()
            .unwrap()
            .sst()
            .iter()
            .filter(|f| f.source == SstSource::Upload)
            .map(|f| f.shared_name.clone())
            .collect()
    };
    let second = b.snapshot_for_checkpoint(2, Some(1));
    let third = b.snapshot_for_checkpoint(3, Some(1));
    let (a, c) = (uploads(&second), uploads(&third));
    assert!(!a.is_empty() && !c.is_empty());
    for name in &a {
        assert!(!c.contains(name), "{name} uploaded by checkpoints 2 and 3");
    }
}

/// Timers live in the queue's column family, so native checkpoints carry
/// them: a second, incremental checkpoint after timers fired and others
/// were set restores in place, rescaled, and on the heap, each with exactly
/// the pending timers of its key groups; a restore that does not register
/// the queue carries it into a canonical snapshot.
#[test]
fn native_checkpoints_carry_timers() {
    use floe_state::TimeDomain;
    let mut shared = Shared::default();
    let mut b = KeyedStateBackend::<u64>::new(incremental(), "op", all(), MAX_P).unwrap();
    let v = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let q = b.timer_queue::<u32>("timers").unwrap();
    let mut m = model::fill(&mut b, &q, 5_000, 700);
    for k in 0..100 {
        set_key(&mut b, k);
        v.update(&mut b, k).unwrap();
    }
    let at_first = m.clone();
    let first = shared.upload(&b.snapshot_for_checkpoint(1, None));
    for domain in TimeDomain::ALL {
        for _ in 0..700 {
            let want = m.poll(domain, 900);
            assert_eq!(model::poll(&mut b, &q, domain, 900), want);
        }
    }
    for k in 0..300 {
        model::register(
            &mut b,
            &q,
            &mut m,
            TimeDomain::EventTime,
            k,
            3,
            5_000 + k as i64,
        );
    }
    let second = shared.upload(&b.snapshot_for_checkpoint(2, Some(1)));
    assert!(
        second.uploaded < second.full,
        "the second checkpoint is incremental"
    );

    let halves = [
        KeyGroupRange::for_operator_index(MAX_P, 2, 0),
        KeyGroupRange::for_operator_index(MAX_P, 2, 1),
    ];
    for range in [all(), halves[0], halves[1]] {
        let mut r = KeyedStateBackend::<u64>::new(incremental(), "op", range, MAX_P).unwrap();
        r.restore_native([second.manifest.as_slice()], 2, true, &|f| shared.fetch(f))
            .unwrap();
        let rq = r.timer_queue::<u32>("timers").unwrap();
        model::assert_drains_as(&mut r, &rq, &m.restrict(range));
    }
    let mut h =
        KeyedStateBackend::<u64>::new(StateBackendKind::HashMap, "op", all(), MAX_P).unwrap();
    h.restore_native([second.manifest.as_slice()], 2, false, &|f| shared.fetch(f))
        .unwrap();
    let hq = h.timer_queue::<u32>("timers").unwrap();
    model::assert_drains_as(&mut h, &hq, &m);

    // The first checkpoint still holds the timers as they were then; a
    // restore that registers only the value state carries the queue into
    // a canonical snapshot, which the heap restores.
    let mut r = KeyedStateBackend::<u64>::new(incremental(), "op", all(), MAX_P).unwrap();
    r.restore_native([first.manifest.as_slice()], 1, false, &|f| shared.fetch(f))
        .unwrap();
    r.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let canonical = r.snapshot().encode().unwrap();
    let mut h =
        KeyedStateBackend::<u64>::new(StateBackendKind::HashMap, "op", all(), MAX_P).unwrap();
    h.restore([canonical.as_slice()]).unwrap();
    let hq = h.timer_queue::<u32>("timers").unwrap();
    model::assert_drains_as(&mut h, &hq, &at_first);
}
