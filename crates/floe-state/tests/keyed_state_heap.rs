//! The keyed-state suite (`keyed_state/suite.rs`) on the heap backend.

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::HashMap;

include!("keyed_state/suite.rs");

// Handles are checked against the heap store that made them once, when
// they are made; a handle used with another backend is checked on every
// access instead.

/// A handle made by one backend works with another that registered the
/// same state (same index, same types).
#[test]
fn handle_from_another_backend_with_the_same_state_works() {
    let mut first = backend();
    let mut second = backend();
    let desc = ValueStateDescriptor::<u64>::new("count");
    let from_first = first.get_state(&desc).unwrap();
    let from_second = second.get_state(&desc).unwrap();
    set_key(&mut second, 7);
    from_first.update(&mut second, 41).unwrap();
    assert_eq!(from_second.value(&mut second).unwrap(), Some(41));
    from_second.update(&mut second, 42).unwrap();
    assert_eq!(from_first.value(&mut second).unwrap(), Some(42));
}

/// A handle used with a backend whose state at its index has other types
/// is refused, never read as those types.
#[test]
#[should_panic(expected = "did not register it")]
fn handle_from_another_backend_with_other_types_is_refused() {
    let mut first = backend();
    let mut second = backend();
    let handle = first
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    second
        .get_state(&ValueStateDescriptor::<String>::new("name"))
        .unwrap();
    set_key(&mut second, 7);
    let _ = handle.value(&mut second);
}

/// A handle used with a backend that has no state at its index is refused.
#[test]
#[should_panic]
fn handle_from_another_backend_without_the_state_is_refused() {
    let mut first = backend();
    let mut second = backend();
    let handle = first
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    set_key(&mut second, 7);
    let _ = handle.update(&mut second, 1);
}
