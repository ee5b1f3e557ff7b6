//! The credit protocol as a peer sees it on the wire, driven by hand.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;

use common::*;
use floe_core::{JobId, StreamMessage, Watermark};
use floe_network::wire::{self, ChannelKey, Message, Parsed};
use floe_runtime::channel::{CancelFlag, GateEvent, InputGate};
use floe_runtime::remote::encode_message;

/// Reads one whole message from a raw socket, owned: (key, credits or
/// backlog, payload).
fn read_message(raw: &mut TcpStream) -> (ChannelKey, u32, Vec<u8>, bool) {
    let mut len = [0u8; 4];
    raw.read_exact(&mut len).unwrap();
    let mut buf = len.to_vec();
    buf.resize(4 + u32::from_le_bytes(len) as usize, 0);
    raw.read_exact(&mut buf[4..]).unwrap();
    match wire::parse(&buf, 1 << 20).unwrap() {
        Parsed::Message(Message::Credit { key, credits }, _) => (key, credits, vec![], true),
        Parsed::Message(
            Message::Data {
                key,
                backlog,
                payload,
            },
            _,
        ) => (key, backlog, payload.to_vec(), false),
        Parsed::Incomplete(_) => unreachable!("read whole"),
    }
}

fn watermark(n: i64) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_message(&StreamMessage::<u64>::Watermark(Watermark(n)), &mut frame).unwrap();
    frame
}

/// The whole capacity is granted at registration; then credits come back
/// in batches of a quarter of the capacity, not one message per frame.
#[test]
fn credits_are_granted_up_front_and_returned_in_batches() {
    let b = env(70);
    let job = JobId::from_u128(70);
    let mut raw = raw_peer(&b, 71);
    let key = ChannelKey {
        job,
        attempt: 0,
        channel: ch(0, 0, 0),
    };
    let inp = input(&b, job, 0, &raw_peer_addr(71), key.channel, 8);
    assert_eq!(read_message(&mut raw), (key, 8, vec![], true));

    let mut bytes = Vec::new();
    for i in 0..8 {
        wire::put_data(&mut bytes, &key, 0, &watermark(i));
    }
    raw.write_all(&bytes).unwrap();
    let mut gate = InputGate::new(vec![inp]);
    let mut got = 0;
    while got < 8 {
        match gate.poll().unwrap() {
            GateEvent::Message(_, StreamMessage::Watermark(Watermark(n))) => {
                assert_eq!(n, got);
                got += 1;
            }
            GateEvent::Idle => gate.wait::<()>(std::time::Duration::from_millis(10), None),
            _ => panic!("unexpected message"),
        }
    }
    for _ in 0..4 {
        assert_eq!(read_message(&mut raw), (key, 2, vec![], true));
    }
}

/// Without credit a sender's frames wait on their channel (the backlog);
/// when credit arrives they leave first, in order, each announcing how
/// many are still behind it.
#[test]
fn held_back_frames_announce_their_backlog_and_leave_in_order() {
    let a = env(72);
    let job = JobId::from_u128(72);
    let mut raw = raw_peer(&a, 73);
    let key = ChannelKey {
        job,
        attempt: 0,
        channel: ch(0, 0, 0),
    };
    let mut out = output(&a, job, 0, &raw_peer_addr(73), key.channel);
    // Two frames fit the backlog (send returns at once); the third waits.
    let cancel = CancelFlag::new();
    for i in 0..2 {
        out.send(StreamMessage::Watermark(Watermark(i)), &cancel)
            .unwrap();
    }
    let sender = thread::spawn(move || {
        out.send(StreamMessage::Watermark(Watermark(2)), &CancelFlag::new())
            .unwrap();
    });
    let mut credit = Vec::new();
    wire::put_credit(&mut credit, &key, 3);
    raw.write_all(&credit).unwrap();
    assert_eq!(read_message(&mut raw), (key, 1, watermark(0), false));
    assert_eq!(read_message(&mut raw), (key, 0, watermark(1), false));
    assert_eq!(read_message(&mut raw), (key, 0, watermark(2), false));
    sender.join().unwrap();
}
