//! A connection that breaks fails every channel on it, promptly, and the
//! TaskManager hears which peer and why.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use floe_core::{JobId, StreamMessage, Watermark};
use floe_network::wire::{self, ChannelKey};
use floe_network::{ConnectionError, NetworkEvent, TaskManagerId};
use floe_runtime::TaskError;
use floe_runtime::channel::{CancelFlag, GateEvent, InputGate};

/// A peer that goes away: its connection is reported lost with the peer's
/// id, a sender blocked on it returns an error at once, and an input from
/// it sees its sender gone.
#[test]
fn a_vanished_peer_fails_its_channels_and_is_reported() {
    let a = env(40);
    let b = env(41);
    let job = JobId::from_u128(1);
    // b receives from a but consumes nothing: a's sender blocks.
    let _held = input(&b, job, 0, &peer(&a), ch(0, 0, 0), 1);
    let mut out = output(&a, job, 0, &peer(&b), ch(0, 0, 0));
    // a receives from b.
    let from_b = input(&a, job, 0, &peer(&b), ch(1, 0, 0), 2);
    let mut b_out = output(&b, job, 0, &peer(&a), ch(1, 0, 0));
    b_out
        .send(StreamMessage::Watermark(Watermark(5)), &CancelFlag::new())
        .unwrap();

    let (tx, rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        let cancel = CancelFlag::new();
        loop {
            if let Err(e) = out.send(StreamMessage::Watermark(Watermark(1)), &cancel) {
                tx.send(e).unwrap();
                return;
            }
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "not blocked"
    );
    // b's watermark has arrived (it would be lost in b's queue otherwise).
    let mut gate = InputGate::new(vec![from_b]);
    let first = loop {
        match gate.poll().unwrap() {
            GateEvent::Message(_, m) => break m,
            _ => gate.wait::<()>(Duration::from_millis(10), None),
        }
    };
    assert_eq!(first, StreamMessage::Watermark(Watermark(5)));
    let b_id = b.id();
    let gone = Instant::now();
    drop(b_out);
    drop(b);

    let err = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("sender still blocked");
    assert!(matches!(err, TaskError::Cancelled));
    assert!(gone.elapsed() < Duration::from_secs(5));
    sender.join().unwrap();
    match next_event(&a, 5) {
        NetworkEvent::ConnectionLost { peer, reason, .. } => {
            assert_eq!(peer, b_id);
            assert!(
                matches!(reason, ConnectionError::Closed | ConnectionError::Io { .. }),
                "{reason}"
            );
        }
        e => panic!("unexpected {e:?}"),
    }
    // The input from the vanished peer is disconnected.
    assert!(matches!(gate.poll(), Err(TaskError::Cancelled)));
    assert!(a.connected_peers().is_empty());
    // A new registration dials again (and fails: nobody listens there).
    let err = a.output(job, 0, &peer_of(b_id), ch(2, 0, 0)).err().unwrap();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

fn peer_of(id: TaskManagerId) -> floe_network::Peer {
    floe_network::Peer {
        id,
        data_addr: "127.0.0.1:1".parse().unwrap(),
    }
}

/// A peer whose socket is shut without a goodbye (as after a crash).
#[test]
fn a_reset_socket_is_reported_with_the_peer() {
    let b = env(42);
    let job = JobId::from_u128(2);
    let raw = raw_peer(&b, 43);
    let inp = input(&b, job, 0, &raw_peer_addr(43), ch(0, 0, 0), 2);
    raw.shutdown(std::net::Shutdown::Both).unwrap();
    match next_event(&b, 5) {
        NetworkEvent::ConnectionLost { peer, .. } => assert_eq!(peer, TaskManagerId(43)),
        e => panic!("unexpected {e:?}"),
    }
    let mut gate = InputGate::new(vec![inp]);
    assert!(matches!(gate.poll(), Err(TaskError::Cancelled)));
}

fn lost_reason(env: &floe_network::NetworkEnvironment) -> String {
    match next_event(env, 5) {
        e @ NetworkEvent::ConnectionLost { .. } => {
            let text = e.to_string();
            assert!(text.contains("data connection to TaskManager"), "{text}");
            text
        }
        e => panic!("unexpected {e:?}"),
    }
}

/// Garbage where a hello belongs is refused before it names a peer.
#[test]
fn bytes_that_are_not_a_hello_are_refused() {
    let b = env(44);
    let mut raw = TcpStream::connect(b.local_addr()).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    match next_event(&b, 5) {
        NetworkEvent::HandshakeFailed { reason, .. } => {
            assert!(
                reason.to_string().contains("not a Floe data connection"),
                "{reason}"
            )
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(b.connected_peers().is_empty());
}

/// A peer of another protocol version is told so, and refused.
#[test]
fn another_protocol_version_is_refused_with_both_versions() {
    let b = env(45);
    let mut raw = TcpStream::connect(b.local_addr()).unwrap();
    let mut hello = wire::encode_hello(TaskManagerId(46));
    hello[4] = 9;
    raw.write_all(&hello).unwrap();
    let mut reply = [0u8; wire::REPLY_LEN];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(
        wire::decode_reply(&reply).unwrap().1,
        wire::HandshakeStatus::VersionMismatch
    );
    match next_event(&b, 5) {
        NetworkEvent::HandshakeFailed { reason, .. } => {
            let text = reason.to_string();
            assert!(
                text.contains("version 9") && text.contains("version 1"),
                "{text}"
            );
        }
        e => panic!("unexpected {e:?}"),
    }
}

/// Malformed messages after the handshake end the connection with a
/// reason naming what was wrong, and never panic.
#[test]
fn malformed_messages_fail_the_connection_with_a_reason() {
    let b = env(47);
    let job = JobId::from_u128(3);
    let data = |key: &ChannelKey, payload: &[u8], times: usize| {
        let mut b = Vec::new();
        for _ in 0..times {
            wire::put_data(&mut b, key, 0, payload);
        }
        b
    };
    type Case<'a> = (Box<dyn Fn(&ChannelKey) -> Vec<u8> + 'a>, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(|_| vec![1, 0, 0, 0, 9]), "unknown message kind 9"),
        (Box::new(|_| vec![0, 0, 0, 0]), "empty message"),
        (
            Box::new(|_| vec![255, 255, 255, 255, 1]),
            "exceeds the limit",
        ),
        (
            Box::new(|_| vec![5, 0, 0, 0, 1, 0, 0, 0, 0]),
            "shorter than its header",
        ),
        (
            Box::new(|_| vec![2, 0, 0, 0, 2, 0]),
            "credit message of 2 bytes",
        ),
        (
            Box::new(|k| {
                let other = ChannelKey {
                    channel: ch(7, 7, 7),
                    ..*k
                };
                data(&other, &[4], 1)
            }),
            "never registered",
        ),
        (
            Box::new(|k| data(k, &[1, 2, 3], 1)),
            "watermark is not 8 bytes",
        ),
        (Box::new(|k| data(k, &[4], 3)), "beyond the granted credit"),
    ];
    for (i, (bytes, why)) in cases.into_iter().enumerate() {
        let id = 1000 + i as u128;
        let mut raw = raw_peer(&b, id);
        let key = ChannelKey {
            job,
            attempt: i as u64,
            channel: ch(0, 0, 0),
        };
        let _inp = input(&b, job, key.attempt, &raw_peer_addr(id), key.channel, 2);
        raw.write_all(&bytes(&key)).unwrap();
        let reason = lost_reason(&b);
        assert!(reason.contains(why), "case {i}: {reason} lacks {why}");
    }
}

/// The TaskManager may drop a peer the control plane declared lost: both
/// ends hear of it, the remote end with the peer's id.
#[test]
fn disconnecting_a_peer_fails_its_connection_on_both_ends() {
    let a = env(48);
    let b = env(49);
    let job = JobId::from_u128(4);
    let inp = input(&b, job, 0, &peer(&a), ch(0, 0, 0), 2);
    let _out = output(&a, job, 0, &peer(&b), ch(0, 0, 0));
    a.disconnect(b.id(), "missed 5 heartbeats");
    match next_event(&a, 5) {
        NetworkEvent::ConnectionLost { peer, reason, .. } => {
            assert_eq!(peer, b.id());
            assert!(
                reason.to_string().contains("missed 5 heartbeats"),
                "{reason}"
            );
        }
        e => panic!("unexpected {e:?}"),
    }
    match next_event(&b, 5) {
        NetworkEvent::ConnectionLost { peer, .. } => assert_eq!(peer, a.id()),
        e => panic!("unexpected {e:?}"),
    }
    assert!(matches!(
        InputGate::new(vec![inp]).poll(),
        Err(TaskError::Cancelled)
    ));
}

struct Panics;
impl floe_runtime::remote::FrameHandler for Panics {
    fn deliver(&mut self, _: &[u8]) -> Result<(), floe_runtime::remote::FrameError> {
        panic!("decoder bug");
    }
}

/// A handler that panics (a bug, not bad bytes) still fails the
/// connection visibly instead of leaving a dead reader behind.
#[test]
fn a_panicking_handler_fails_the_connection() {
    let a = env(50);
    let b = env(51);
    let job = JobId::from_u128(5);
    b.register_input(job, 0, &peer(&a), ch(0, 0, 0), 2, |_| {
        (
            Box::new(Panics) as Box<dyn floe_runtime::remote::FrameHandler>,
            (),
        )
    })
    .unwrap();
    let mut out = output(&a, job, 0, &peer(&b), ch(0, 0, 0));
    out.send(StreamMessage::EndOfInput, &CancelFlag::new())
        .unwrap();
    let reason = lost_reason(&b);
    assert!(reason.contains("decoder bug"), "{reason}");
    assert!(matches!(
        next_event(&a, 5),
        NetworkEvent::ConnectionLost { .. }
    ));
}
