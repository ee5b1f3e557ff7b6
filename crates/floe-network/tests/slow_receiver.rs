//! One channel whose task consumes nothing must not stall the others on
//! the same connection (hard assertions, no timing).

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use floe_core::{JobId, StreamMessage};
use floe_runtime::TaskError;
use floe_runtime::channel::{CancelFlag, GateEvent, InputGate};

#[test]
fn a_receiver_that_consumes_nothing_stalls_only_its_own_channel() {
    let a = env(20);
    let b = env(21);
    let job = JobId::from_u128(7);
    const FAST: u32 = 6;
    const CAPACITY: usize = 4;
    // Far more frames than the slow channel's capacity plus its backlog.
    let msgs = sequence(0, 400, 256);

    let mut slow_in = InputGate::new(vec![input(&b, job, 0, &peer(&a), ch(0, 0, 0), CAPACITY)]);
    let mut slow_out = output(&a, job, 0, &peer(&b), ch(0, 0, 0));
    let (slow_done_tx, slow_done) = mpsc::channel();
    let slow_msgs = msgs.clone();
    let slow_sender = thread::spawn(move || {
        let cancel = CancelFlag::new();
        let mut sent = 0;
        for m in slow_msgs {
            if slow_out.send(m, &cancel).is_err() {
                break;
            }
            sent += 1;
        }
        slow_done_tx.send(sent).unwrap();
    });

    let fast: Vec<_> = (1..=FAST)
        .map(|r| {
            let inp = input(&b, job, 0, &peer(&a), ch(0, 0, r), CAPACITY);
            let mut out = output(&a, job, 0, &peer(&b), ch(0, 0, r));
            let to_send = msgs.clone();
            let sender = thread::spawn(move || send_all(&mut *out, &to_send));
            let want = msgs.clone();
            let receiver = thread::spawn(move || {
                let got = drain(&mut InputGate::new(vec![inp]));
                assert!(got[0] == want, "fast channel {r} differs");
            });
            (sender, receiver)
        })
        .collect();
    for (s, r) in fast {
        s.join().unwrap();
        r.join().unwrap();
    }

    // Every fast channel delivered everything while the slow one's sender
    // is still blocked on credit (it would have reported otherwise).
    assert!(
        slow_done.try_recv().is_err(),
        "the slow channel's sender finished without its receiver consuming"
    );
    let first = loop {
        match slow_in.poll().unwrap() {
            GateEvent::Message(_, m) => break m,
            _ => slow_in.wait::<()>(Duration::from_millis(10), None),
        }
    };

    // Once the slow task consumes, its channel completes in order too.
    let mut got = vec![first];
    got.extend(drain(&mut slow_in).remove(0));
    assert_eq!(
        slow_done.recv_timeout(Duration::from_secs(30)),
        Ok(msgs.len())
    );
    slow_sender.join().unwrap();
    assert_eq!(got, msgs);
    assert_eq!(a.connected_peers(), vec![b.id()]);
}

/// Releasing the attempt frees a sender blocked for credit.
#[test]
fn releasing_an_attempt_cancels_a_blocked_sender() {
    let a = env(22);
    let b = env(23);
    let job = JobId::from_u128(8);
    let inp = input(&b, job, 3, &peer(&a), ch(1, 0, 0), 1);
    let mut out = output(&a, job, 3, &peer(&b), ch(1, 0, 0));
    let (tx, rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        let cancel = CancelFlag::new();
        let r = loop {
            if let Err(e) = out.send(StreamMessage::Watermark(floe_core::Watermark(1)), &cancel) {
                break e;
            }
        };
        tx.send(r).unwrap();
    });
    // Blocked: its receiver holds one frame and consumes nothing.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    a.release_job(job, 3);
    let err = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("sender freed");
    assert!(matches!(err, TaskError::Cancelled));
    sender.join().unwrap();
    // The receiving side releases too: its input sees the sender gone.
    b.release_job(job, 3);
    let mut gate = InputGate::new(vec![inp]);
    let mut polls = 0;
    let end = loop {
        match gate.poll() {
            Err(e) => break e,
            Ok(_) => polls += 1,
        }
        assert!(polls < 10, "input never disconnected");
    };
    assert!(matches!(end, TaskError::Cancelled));
}
