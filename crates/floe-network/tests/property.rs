//! Random frame sizes and random consumption interleavings over real TCP:
//! every channel delivers exactly what was sent, in order.

mod common;

use std::sync::OnceLock;
use std::thread;

use common::*;
use floe_core::{Batch, JobId, StreamMessage, Watermark};
use floe_network::NetworkEnvironment;
use floe_runtime::channel::{GateEvent, InputGate};
use proptest::prelude::*;

/// Two environments shared by every case (each case is its own job), so
/// the cases also exercise a long-lived connection.
fn envs() -> &'static (NetworkEnvironment, NetworkEnvironment) {
    static ENVS: OnceLock<(NetworkEnvironment, NetworkEnvironment)> = OnceLock::new();
    ENVS.get_or_init(|| (env(60), env(61)))
}

/// A channel's messages: batches of the given sizes (0 to several
/// thousand records, so frames from a few bytes to tens of KiB), each
/// followed by a watermark, and the end of input.
fn messages(channel: usize, sizes: &[usize]) -> Vec<StreamMessage<u64>> {
    let mut out = Vec::new();
    let mut n = (channel as u64) << 40;
    for (i, &size) in sizes.iter().enumerate() {
        out.push(StreamMessage::Records(Batch {
            records: (n..n + size as u64)
                .map(|x| x.wrapping_mul(0x9e37_79b9))
                .collect(),
            key_groups: vec![],
            timestamps: vec![],
        }));
        n += size as u64;
        out.push(StreamMessage::Watermark(Watermark(i as i64)));
    }
    out.push(StreamMessage::EndOfInput);
    out
}

fn case(
    sizes: Vec<Vec<usize>>,
    capacities: Vec<usize>,
    schedule: Vec<(usize, u8)>,
) -> Result<(), TestCaseError> {
    static NEXT_JOB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let job = JobId::from_u128(NEXT_JOB.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128);
    let (a, b) = envs();
    let channels = sizes.len();
    let mut gates: Vec<InputGate<u64>> = (0..channels)
        .map(|c| {
            let inp = input(b, job, 0, &peer(a), ch(0, c as u32, 0), capacities[c]);
            InputGate::new(vec![inp])
        })
        .collect();
    let senders: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(c, s)| {
            let mut out = output(a, job, 0, &peer(b), ch(0, c as u32, 0));
            let msgs = messages(c, s);
            thread::spawn(move || send_all(&mut *out, &msgs))
        })
        .collect();
    // Consume in the random order the schedule gives (a step takes up to
    // `n` messages of one channel), then drain what is left.
    let mut got: Vec<Vec<StreamMessage<u64>>> = vec![Vec::new(); channels];
    let mut ended = vec![false; channels];
    for (c, n) in schedule {
        let c = c % channels;
        for _ in 0..n {
            if ended[c] {
                break;
            }
            match gates[c].poll().expect("input") {
                GateEvent::Message(_, m) => got[c].push(m),
                GateEvent::Idle => {
                    gates[c].wait::<()>(std::time::Duration::from_millis(1), None);
                }
                GateEvent::Ended => ended[c] = true,
            }
        }
    }
    for (c, gate) in gates.iter_mut().enumerate() {
        if !ended[c] {
            got[c].extend(drain(gate).remove(0));
        }
    }
    for s in senders {
        s.join().expect("sender");
    }
    for (c, s) in sizes.iter().enumerate() {
        prop_assert!(got[c] == messages(c, s), "channel {} differs", c);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_frames_and_consumption_arrive_as_sent(
        sizes in prop::collection::vec(
            prop::collection::vec(prop_oneof![0usize..4, 4usize..300, 300usize..5000], 1..20),
            1..5,
        ),
        capacities in prop::collection::vec(1usize..6, 5),
        schedule in prop::collection::vec((0usize..5, 0u8..8), 0..60),
    ) {
        case(sizes, capacities, schedule)?;
    }
}
