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
/// what the input can justify: serde caps a preallocation at 1 MiB of
/// elements, a hash table holding that many needs up to twice the slots
/// plus a control byte each (a map state's key group claiming 32,768
/// `(String, u64)` entries allocates a 2.06 MiB table), and decoded data
/// is at most a small multiple of the input.
fn bounded<R>(input: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    let _guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(1, Ordering::Relaxed);
    let r = f(input);
    ARMED.store(0, Ordering::Relaxed);
    let largest = LARGEST.load(Ordering::Relaxed);
    let limit = (2 << 20) + (1 << 17) + 64 * input.len();
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

/// The input proptest found (session 14): a map state's key group whose
/// entry count was mutated upwards. serde's cautious preallocation bounds
/// the table; it must stay within the limit above.
#[test]
fn a_mutated_map_length_allocates_a_bounded_table() {
    let bytes: Vec<u8> = vec![
        128, 1, 0, 127, 3, 5, 118, 97, 108, 117, 101, 64, 3, 117, 54, 52, 8, 112, 111, 115, 116,
        99, 97, 114, 100, 1, 1, 3, 117, 54, 52, 0, 4, 108, 105, 115, 116, 65, 3, 117, 54, 52, 8,
        112, 111, 115, 116, 99, 97, 114, 100, 1, 1, 3, 117, 54, 52, 0, 3, 109, 97, 112, 66, 28, 40,
        97, 108, 108, 111, 99, 58, 58, 115, 116, 114, 105, 110, 103, 58, 58, 83, 116, 114, 105,
        110, 103, 44, 32, 117, 54, 52, 41, 8, 112, 111, 115, 116, 99, 97, 114, 100, 1, 2, 21, 97,
        108, 108, 111, 99, 58, 58, 115, 116, 114, 105, 110, 103, 58, 58, 83, 116, 114, 105, 110,
        103, 3, 117, 54, 52, 0, 19, 0, 3, 0, 3, 1, 7, 21, 1, 5, 1, 7, 2, 7, 8, 2, 7, 1, 7, 1, 2,
        117, 55, 7, 12, 3, 0, 3, 1, 17, 51, 1, 5, 1, 17, 2, 17, 18, 2, 8, 1, 17, 1, 3, 117, 49, 55,
        17, 19, 3, 0, 3, 1, 9, 27, 1, 5, 1, 9, 2, 9, 10, 2, 7, 1, 9, 1, 2, 117, 57, 9, 25, 3, 0, 3,
        1, 13, 39, 1, 5, 1, 13, 2, 13, 14, 2, 8, 1, 13, 1, 3, 117, 49, 51, 13, 31, 3, 0, 3, 1, 2,
        6, 1, 5, 1, 2, 2, 2, 3, 2, 7, 1, 2, 1, 2, 117, 50, 2, 33, 3, 0, 3, 1, 14, 42, 1, 5, 1, 14,
        2, 14, 15, 2, 8, 1, 14, 1, 3, 117, 49, 52, 14, 38, 3, 0, 3, 1, 19, 57, 1, 5, 1, 19, 2, 19,
        20, 2, 8, 1, 19, 1, 3, 117, 49, 57, 19, 42, 3, 0, 3, 1, 4, 12, 1, 5, 1, 4, 2, 4, 5, 2, 7,
        1, 4, 1, 2, 117, 52, 4, 43, 3, 0, 5, 2, 10, 30, 1, 3, 1, 9, 2, 10, 2, 10, 11, 1, 2, 1, 2,
        2, 14, 2, 10, 1, 3, 117, 49, 48, 10, 1, 1, 2, 117, 49, 1, 55, 3, 0, 3, 1, 0, 0, 1, 5, 1, 0,
        2, 0, 1, 2, 7, 1, 0, 1, 2, 117, 48, 0, 57, 3, 0, 3, 1, 6, 18, 1, 5, 1, 6, 2, 6, 7, 2, 7, 1,
        6, 1, 2, 117, 54, 6, 71, 3, 0, 3, 1, 8, 24, 1, 5, 1, 8, 2, 8, 9, 2, 7, 1, 8, 1, 2, 117, 56,
        8, 77, 3, 0, 3, 1, 12, 36, 1, 5, 1, 12, 2, 12, 13, 2, 8, 1, 12, 1, 3, 117, 49, 50, 12, 81,
        3, 0, 3, 1, 18, 54, 1, 5, 1, 18, 2, 18, 19, 2, 8, 1, 18, 1, 3, 117, 49, 56, 18, 85, 3, 0,
        3, 1, 5, 15, 1, 5, 1, 5, 2, 5, 6, 2, 7, 1, 5, 1, 2, 117, 53, 5, 108, 3, 0, 3, 1, 11, 33, 1,
        5, 1, 11, 2, 11, 12, 2, 8, 1, 11, 1, 3, 117, 49, 49, 11, 118, 3, 0, 3, 1, 3, 9, 1, 5, 1, 3,
        2, 3, 4, 2, 7, 1, 3, 1, 2, 117, 51, 3, 119, 3, 0, 3, 1, 16, 48, 1, 5, 1, 16, 2, 16, 17, 2,
        8, 1, 16, 1, 3, 117, 49, 54, 16, 120, 3, 0, 3, 1, 15, 45, 1, 5, 1, 15, 2, 15, 16, 2, 8, 1,
        15, 128, 128, 2, 0, 0, 0,
    ];
    bounded(&bytes, restore_keyed);
}
