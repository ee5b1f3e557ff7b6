//! Untrusted snapshot bytes: arbitrary bytes and mutations of valid files
//! fed to the frame reader, the `_metadata` decoder and the handle-path
//! check must give errors, never a panic, and never an allocation driven by
//! a length read from the input (a counting allocator bounds the largest
//! single allocation by the input's size).
//!
//! Bounded: each property runs a fixed number of cases (seconds in CI).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use floe_checkpoint::format::{self, FileKind};
use floe_checkpoint::storage::validate_handle_path;
use floe_checkpoint::{
    CheckpointMetadata, METADATA_FORMAT_VERSION, OperatorSnapshotInfo, StateHandle,
    SubtaskStateMeta,
};
use proptest::prelude::*;

/// Records the largest single allocation while armed.
struct Counting;

static ARMED: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) != 0 {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) != 0 {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` on `input`; fails if a single allocation exceeds what the
/// input can justify (serde caps a preallocation at 1 MiB).
fn bounded<R>(input: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    let _guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(1, Ordering::Relaxed);
    let r = f(input);
    ARMED.store(0, Ordering::Relaxed);
    let largest = LARGEST.load(Ordering::Relaxed);
    let limit = (1 << 20) + 64 * input.len();
    assert!(
        largest <= limit,
        "an allocation of {largest} bytes from {} input bytes",
        input.len()
    );
    r
}

fn handle(path: &str, size: u64) -> StateHandle {
    StateHandle {
        path: path.into(),
        size,
        checksum: Some(size * 0x9e37_79b9),
    }
}

/// A valid `_metadata` payload with every kind of entry.
fn metadata() -> Vec<u8> {
    let info = OperatorSnapshotInfo {
        name: "Count".into(),
        parallelism: 2,
        max_parallelism: 128,
        max_parallelism_explicit: true,
    };
    let subtask = |i: u32| SubtaskStateMeta {
        subtask: i,
        keyed: Some(handle(&format!("job/chk-3/count-{i}-keyed"), 1000)),
        raw: Some(vec![1, 2, 3]),
        operator: Some(handle(&format!("job/chk-3/count-{i}-operator"), 40)),
        channel: Some(handle(&format!("job/chk-3/count-{i}-channel"), 30)),
        keyed_native: Some(handle(&format!("job/chk-3/count-{i}-keyed-native"), 70)),
        shared: vec![handle("job/shared/0123456789abcdef-2-000007.sst", 5000)],
    };
    CheckpointMetadata {
        format_version: METADATA_FORMAT_VERSION,
        checkpoint_id: 3,
        timestamp_ms: 1_700_000_000_000,
        is_savepoint: false,
        operator_info: BTreeMap::from([("count".to_string(), info)]),
        operators: BTreeMap::from([("count".to_string(), vec![subtask(0), subtask(1)])]),
    }
    .encode()
}

fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (
        proptest::collection::vec((0..len, any::<u8>()), 1..6),
        0..=len,
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(move |(flips, cut, tail)| {
            let mut b = valid.clone();
            for (at, v) in flips {
                b[at] = v;
            }
            b.truncate(cut.max(1));
            b.extend(tail);
            b
        })
}

/// Decodes a `_metadata` payload and checks every path it lists, as a
/// restore or a dispose does before touching a file.
fn read_metadata(bytes: &[u8]) {
    if let Ok(m) = CheckpointMetadata::decode(bytes) {
        for f in m.own_files().iter().chain(m.shared_files().iter()) {
            let _ = validate_handle_path(&f.path);
        }
        // Whatever decodes round-trips.
        if m.format_version == METADATA_FORMAT_VERSION {
            assert_eq!(CheckpointMetadata::decode(&m.encode()).unwrap(), m);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        bounded(&bytes, |b| {
            for kind in FileKind::ALL {
                let _ = format::decode(b, kind, "f");
            }
            read_metadata(b);
        });
    }

    #[test]
    fn mutated_metadata_is_an_error_or_a_faithful_decode(bytes in mutated(metadata())) {
        bounded(&bytes, read_metadata);
    }

    #[test]
    fn a_mutated_frame_never_decodes(at in 0usize..200, v in any::<u8>()) {
        let good = format::encode(FileKind::Metadata, &metadata());
        let mut bad = good.clone();
        let at = at % bad.len();
        prop_assume!(bad[at] != v);
        bad[at] = v;
        prop_assert!(bounded(&bad, |b| format::decode(b, FileKind::Metadata, "f").is_err()));
    }

    #[test]
    fn handle_paths_never_escape(path in "[a-z./\\\\]{0,12}") {
        if validate_handle_path(&path).is_ok() {
            prop_assert!(!path.is_empty() && !path.starts_with('/'));
            prop_assert!(path.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
        }
    }
}

#[test]
fn huge_length_prefixes_allocate_nothing_large() {
    let valid = metadata();
    for at in 0..valid.len() {
        let mut bytes = valid[..at].to_vec();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        bytes.extend_from_slice(&valid[at..]);
        bounded(&bytes, read_metadata);
    }
}
