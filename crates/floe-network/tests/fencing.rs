//! Job attempts fence each other: stale registrations are refused, stale
//! frames dropped, and a newer attempt releases the older one's channels.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use floe_core::{JobId, StreamMessage, Watermark};
use floe_network::NetworkError;
use floe_network::wire::{self, ChannelKey};
use floe_runtime::TaskError;
use floe_runtime::channel::{GateEvent, InputGate};
use floe_runtime::remote::encode_message;

#[test]
fn a_registration_for_an_older_attempt_is_refused_naming_both() {
    let a = env(30);
    let b = env(31);
    let job = JobId::from_u128(5);
    let _in = input(&b, job, 2, &peer(&a), ch(0, 0, 0), 2);
    let err = b
        .output(job, 1, &peer(&a), ch(0, 0, 1))
        .err()
        .expect("stale attempt accepted");
    assert!(
        matches!(
            err,
            NetworkError::StaleAttempt {
                requested: 1,
                newest: 2,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("attempt 1") && text.contains("attempt 2"),
        "{text}"
    );
    b.release_job(job, 2);
    let err = b.output(job, 2, &peer(&a), ch(0, 0, 1)).err().unwrap();
    assert!(
        matches!(err, NetworkError::Released { attempt: 2, .. }),
        "{err}"
    );
}

#[test]
fn a_newer_attempt_releases_the_older_ones_channels() {
    let a = env(32);
    let b = env(33);
    let job = JobId::from_u128(6);
    let old = input(&b, job, 1, &peer(&a), ch(0, 0, 0), 2);
    let _new = input(&b, job, 2, &peer(&a), ch(0, 0, 0), 2);
    let mut gate = InputGate::new(vec![old]);
    assert!(matches!(gate.poll(), Err(TaskError::Cancelled)));
}

/// Frames of an attempt older than the newest registered are dropped
/// without failing the connection; the current attempt's still arrive.
#[test]
fn frames_of_a_stale_attempt_are_dropped() {
    let b = env(34);
    let job = JobId::from_u128(9);
    let raw_id = 35;
    let mut raw = raw_peer(&b, raw_id);
    let _old = input(&b, job, 1, &raw_peer_addr(raw_id), ch(0, 0, 0), 4);
    let current = input(&b, job, 2, &raw_peer_addr(raw_id), ch(0, 0, 0), 4);

    let mut frame = Vec::new();
    let mut bytes = Vec::new();
    for (attempt, mark) in [(1, 111), (0, 222), (2, 333)] {
        encode_message(
            &StreamMessage::<u64>::Watermark(Watermark(mark)),
            &mut frame,
        )
        .unwrap();
        let key = ChannelKey {
            job,
            attempt,
            channel: ch(0, 0, 0),
        };
        wire::put_data(&mut bytes, &key, 0, &frame);
    }
    raw.write_all(&bytes).unwrap();

    let mut gate = InputGate::new(vec![current]);
    let got = loop {
        match gate.poll().unwrap() {
            GateEvent::Message(_, m) => break m,
            _ => gate.wait::<()>(Duration::from_millis(20), None),
        }
    };
    assert_eq!(got, StreamMessage::Watermark(Watermark(333)));
    assert!(b.events().try_recv().is_err(), "the connection failed");
    assert_eq!(b.connected_peers().len(), 1);
}
