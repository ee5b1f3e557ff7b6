//! Typed messages through the runtime's remote channels over real TCP.

mod common;

use std::thread;

use common::*;
use floe_core::{
    Batch, CheckpointBarrier, CheckpointKind, JobId, StreamMessage, Watermark, WatermarkStatus,
};
use floe_runtime::channel::{CancelFlag, InputChannel, InputGate, OutputChannel};
use floe_runtime::graph::{StreamType, unbox};

/// Records with key groups and timestamps, both watermark statuses, every
/// barrier kind and the end of input arrive complete, in order, in place.
#[test]
fn every_kind_of_message_arrives_in_order() {
    let a = env(1);
    let b = env(2);
    let job = JobId::from_u128(0xfeed);
    let ops = StreamType::<String>::ops();
    let input = b
        .register_input(job, 0, &peer(&a), ch(0, 0, 0), 2, |c| {
            ops.remote_input(2, c, Default::default())
        })
        .unwrap();
    let input = unbox::<InputChannel<String>>(input, "input");
    let sink = a.output(job, 0, &peer(&b), ch(0, 0, 0)).unwrap();
    let mut out = unbox::<Box<dyn OutputChannel<String>>>(ops.remote_output(sink), "output");

    let mut sent = Vec::new();
    for i in 0..50u32 {
        sent.push(StreamMessage::Records(Batch {
            records: (0..i).map(|j| format!("r{i}-{j}")).collect(),
            key_groups: (0..i as u16).collect(),
            timestamps: (0..i).map(|j| j as i64 * 10).collect(),
        }));
        sent.push(StreamMessage::Watermark(Watermark(i64::from(i) - 5)));
        if i % 7 == 0 {
            sent.push(StreamMessage::WatermarkStatus(if i % 2 == 0 {
                WatermarkStatus::Idle
            } else {
                WatermarkStatus::Active
            }));
        }
        if i % 10 == 9 {
            sent.push(StreamMessage::Barrier(CheckpointBarrier {
                id: i as u64,
                timestamp_ms: 77,
                kind: [
                    CheckpointKind::Checkpoint,
                    CheckpointKind::Savepoint,
                    CheckpointKind::StopSavepoint,
                ][i as usize % 3],
                last_completed: (i > 10).then(|| u64::from(i) - 10),
            }));
        }
    }
    sent.push(StreamMessage::EndOfInput);

    let to_send = sent.clone();
    let sender = thread::spawn(move || {
        let cancel = CancelFlag::new();
        for m in to_send {
            out.send(m, &cancel).unwrap();
        }
    });
    let mut gate = InputGate::new(vec![input]);
    let mut got = Vec::new();
    loop {
        match gate.poll().unwrap() {
            floe_runtime::channel::GateEvent::Message(_, m) => got.push(m),
            floe_runtime::channel::GateEvent::Idle => {
                gate.wait::<()>(std::time::Duration::from_millis(20), None)
            }
            floe_runtime::channel::GateEvent::Ended => break,
        }
    }
    sender.join().unwrap();
    assert_eq!(got, sent);
}

/// The receiver may register after the sender started sending: frames
/// wait for credit instead of being lost.
#[test]
fn a_sender_waits_for_a_receiver_registered_later() {
    let a = env(3);
    let b = env(4);
    let job = JobId::from_u128(1);
    let mut out = output(&a, job, 0, &peer(&b), ch(0, 0, 0));
    let msgs = sequence(0, 20, 100);
    let to_send = msgs.clone();
    let sender = thread::spawn(move || send_all(&mut *out, &to_send));
    thread::sleep(std::time::Duration::from_millis(100));
    let mut gate = InputGate::new(vec![input(&b, job, 0, &peer(&a), ch(0, 0, 0), 3)]);
    let got = drain(&mut gate);
    sender.join().unwrap();
    assert_eq!(got[0], msgs);
}
