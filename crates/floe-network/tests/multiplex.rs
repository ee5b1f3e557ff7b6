//! Many channels over one connection, in both directions at once.

mod common;

use std::thread;

use common::*;
use floe_core::JobId;
use floe_network::NetworkEnvironment;
use floe_runtime::channel::InputGate;

const EDGES: u32 = 3;
const PARALLELISM: u32 = 4;

fn base(dir: u64, edge: u32, s: u32, r: u32) -> u64 {
    ((dir * 16 + u64::from(edge)) * 16 + u64::from(s)) * 16 * 1_000_000 + u64::from(r) * 1_000_000
}

/// Starts the senders from `from` to `to` (direction `dir`): one thread
/// per sending subtask and edge, writing to its four channels in turn.
fn senders(
    from: &NetworkEnvironment,
    to: &NetworkEnvironment,
    job: JobId,
    dir: u64,
) -> Vec<thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for edge in 0..EDGES {
        for s in 0..PARALLELISM {
            let mut outs: Vec<_> = (0..PARALLELISM)
                .map(|r| output(from, job, 0, &peer(to), ch(edge, s, r)))
                .collect();
            threads.push(thread::spawn(move || {
                let seqs: Vec<_> = (0..PARALLELISM)
                    .map(|r| sequence(base(dir, edge, s, r), 24, 64))
                    .collect();
                for i in 0..seqs[0].len() {
                    for (r, out) in outs.iter_mut().enumerate() {
                        send_all(&mut **out, &seqs[r][i..i + 1]);
                    }
                }
            }));
        }
    }
    threads
}

/// Starts the receivers on `at` of what `from` sends: one gate per
/// receiving subtask and edge over its four channels; each checks that
/// every channel delivered exactly its sequence.
fn receivers(
    at: &NetworkEnvironment,
    from: &NetworkEnvironment,
    job: JobId,
    dir: u64,
) -> Vec<thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for edge in 0..EDGES {
        for r in 0..PARALLELISM {
            let inputs = (0..PARALLELISM)
                .map(|s| input(at, job, 0, &peer(from), ch(edge, s, r), 4))
                .collect();
            threads.push(thread::spawn(move || {
                let got = drain(&mut InputGate::new(inputs));
                for (s, msgs) in got.iter().enumerate() {
                    let want = sequence(base(dir, edge, s as u32, r), 24, 64);
                    assert!(*msgs == want, "edge {edge} {s} -> {r} differs");
                }
            }));
        }
    }
    threads
}

/// 3 edges × 4 × 4 channels each way between two TaskManagers share one
/// connection, and every channel delivers exactly what was sent.
#[test]
fn many_channels_share_one_connection_both_ways() {
    let a = env(10);
    let b = env(11);
    let job = JobId::from_u128(42);
    let mut threads = receivers(&b, &a, job, 0);
    threads.extend(receivers(&a, &b, job, 1));
    threads.extend(senders(&a, &b, job, 0));
    threads.extend(senders(&b, &a, job, 1));
    for t in threads {
        t.join().expect("a channel failed");
    }
    assert_eq!(a.connected_peers(), vec![b.id()]);
    assert_eq!(b.connected_peers(), vec![a.id()]);
}

/// Two TaskManagers dialing each other at the same moment end up with one
/// connection that both use.
#[test]
fn simultaneous_dials_settle_on_one_connection() {
    for round in 0..8u128 {
        let a = env(100 + 2 * round);
        let b = env(101 + 2 * round);
        let job = JobId::from_u128(round);
        let (pa, pb) = (peer(&a), peer(&b));
        let start = std::sync::Barrier::new(2);
        thread::scope(|s| {
            let t1 = s.spawn(|| {
                start.wait();
                let out = output(&a, job, 0, &pb, ch(0, 0, 0));
                let inp = input(&a, job, 0, &pb, ch(0, 0, 0), 8);
                (out, inp)
            });
            let t2 = s.spawn(|| {
                start.wait();
                let out = output(&b, job, 0, &pa, ch(0, 0, 0));
                let inp = input(&b, job, 0, &pa, ch(0, 0, 0), 8);
                (out, inp)
            });
            let (mut out_a, in_a) = t1.join().unwrap();
            let (mut out_b, in_b) = t2.join().unwrap();
            let msgs = sequence(round as u64, 3, 5);
            send_all(&mut *out_a, &msgs);
            send_all(&mut *out_b, &msgs);
            assert_eq!(drain(&mut InputGate::new(vec![in_b]))[0], msgs);
            assert_eq!(drain(&mut InputGate::new(vec![in_a]))[0], msgs);
        });
        assert_eq!(a.connected_peers(), vec![b.id()], "round {round}");
        assert_eq!(b.connected_peers(), vec![a.id()], "round {round}");
    }
}

/// A second connection from a peer that already has a live one is refused
/// as a duplicate; once the first fails, the peer may connect again.
#[test]
fn a_peer_gets_one_live_connection_at_a_time() {
    let a = env(200);
    let first = raw_peer(&a, 201);
    let (_second, status) = raw_hello(&a, 201);
    assert_eq!(status, floe_network::wire::HandshakeStatus::Duplicate);
    assert_eq!(a.connected_peers().len(), 1);
    first.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(matches!(
        next_event(&a, 5),
        floe_network::NetworkEvent::ConnectionLost { .. }
    ));
    let _third = raw_peer(&a, 201);
    assert_eq!(a.connected_peers(), vec![floe_network::TaskManagerId(201)]);
}
