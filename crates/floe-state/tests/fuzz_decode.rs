//! Restoring state from untrusted bytes: arbitrary bytes and mutations of
//! valid snapshots fed to the keyed, native and operator state decoders and
//! through a restore into a backend must give errors, never a panic, and
//! never an allocation driven by a length read from the input (a counting
//! allocator bounds the largest single allocation by the input's size).
//!
//! Bounded: each property runs a fixed number of cases (seconds in CI).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use floe_state::native::NativeKeyedStateFile;
use floe_state::operator::{OperatorStateFile, OperatorStateStore};
use floe_state::{
    KeyGroupRange, KeyedStateBackend, KeyedStateFile, ListStateDescriptor, MapStateDescriptor,
    StateBackendKind, ValueStateDescriptor, key_group_for_key,
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

/// One measured section at a time (tests run on several threads).
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` on `input` and fails if any single allocation it made exceeds
/// what the input can justify: serde caps a preallocation at 1 MiB, and
/// decoded data is at most a small multiple of the input.
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

const MAX_P: u32 = 128;

/// A valid keyed snapshot with value, list and map state.
fn keyed_snapshot() -> Vec<u8> {
    let mut b = KeyedStateBackend::<u64>::new(
        StateBackendKind::HashMap,
        "op",
        KeyGroupRange::new(0, (MAX_P - 1) as u16),
        MAX_P,
    )
    .unwrap();
    let value = b
        .get_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    let map = b
        .get_map_state(&MapStateDescriptor::<String, u64>::new("map"))
        .unwrap();
    for k in 0..20u64 {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        value.update(&mut b, k * 3).unwrap();
        list.add(&mut b, k).unwrap();
        list.add(&mut b, k + 1).unwrap();
        map.put(&mut b, format!("u{k}"), k).unwrap();
    }
    b.snapshot().encode().unwrap()
}

/// Restores `bytes` into a fresh heap backend and reads every key of every
/// state: the whole path a restored keyed state file takes.
fn restore_keyed(bytes: &[u8]) {
    let mut b = KeyedStateBackend::<u64>::new(
        StateBackendKind::HashMap,
        "op",
        KeyGroupRange::new(0, (MAX_P - 1) as u16),
        MAX_P,
    )
    .unwrap();
    if b.restore([bytes]).is_err() {
        return;
    }
    let Ok(value) = b.get_state(&ValueStateDescriptor::<u64>::new("value")) else {
        return;
    };
    let Ok(list) = b.get_list_state(&ListStateDescriptor::<u64>::new("list")) else {
        return;
    };
    let Ok(map) = b.get_map_state(&MapStateDescriptor::<String, u64>::new("map")) else {
        return;
    };
    for k in 0..20u64 {
        if b.set_current_key(k, key_group_for_key(&k, MAX_P)).is_err() {
            return;
        }
        let _ = value.value(&mut b);
        let _ = list.get(&mut b);
        let _ = map.get(&mut b, &format!("u{k}"));
    }
}

/// A valid operator state file with a list state.
fn operator_snapshot() -> Vec<u8> {
    let mut store = OperatorStateStore::new("op", None);
    let list = store
        .get_list_state(&ListStateDescriptor::<u64>::new("offsets"))
        .unwrap();
    for v in 0..10 {
        list.add(&mut store, v).unwrap();
    }
    store.snapshot(0, 1).unwrap()
}

fn restore_operator(bytes: &[u8]) {
    let mut store = OperatorStateStore::new("op", None);
    if store.restore(&[bytes], 0, 2).is_err() {
        return;
    }
    if let Ok(list) = store.get_list_state(&ListStateDescriptor::<u64>::new("offsets")) {
        let _ = list.get(&store);
    }
}

/// A valid input with some bytes changed, cut or extended.
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

/// Length prefixes that claim far more than the input holds (a varint of
/// 2^32 - 1), at every position of a valid file.
fn huge_length_at(valid: &[u8], at: usize) -> Vec<u8> {
    let mut b = valid[..at].to_vec();
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    b.extend_from_slice(&valid[at..]);
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        bounded(&bytes, |b| {
            let _ = KeyedStateFile::decode(b);
            let _ = NativeKeyedStateFile::decode(b);
            let _ = OperatorStateFile::decode(b);
            // The unaligned checkpoint's in-flight records, as a task decodes them.
            let _ = postcard::from_bytes::<Vec<(u32, Vec<u64>, Vec<u16>)>>(b);
            restore_keyed(b);
            restore_operator(b);
        });
    }

    #[test]
    fn mutated_keyed_snapshots_are_errors_not_panics(bytes in mutated(keyed_snapshot())) {
        bounded(&bytes, |b| {
            let _ = NativeKeyedStateFile::decode(b);
            restore_keyed(b);
        });
    }

    #[test]
    fn mutated_operator_state_is_an_error_not_a_panic(bytes in mutated(operator_snapshot())) {
        bounded(&bytes, restore_operator);
    }
}

#[test]
fn huge_length_prefixes_allocate_nothing_large() {
    for valid in [keyed_snapshot(), operator_snapshot()] {
        for at in 0..valid.len() {
            let bytes = huge_length_at(&valid, at);
            bounded(&bytes, |b| {
                let _ = NativeKeyedStateFile::decode(b);
                let _ = postcard::from_bytes::<Vec<(u32, Vec<u64>, Vec<u16>)>>(b);
                restore_keyed(b);
                restore_operator(b);
            });
        }
    }
}
