//! Throughput of the data plane over loopback, and what one slow receiver
//! costs the other channels of its connection.
//!
//! ```text
//! cargo run --release -p floe-network --example credit_bench -- [--runs 3] [--records 50000000]
//! ```
//!
//! Prints one JSON line per run: records/s of the fast channels alone and
//! with one deliberately slow receiver on the same connection (medians of
//! three each, and their ratio; credit-based flow control should keep it
//! near 1), and the raw
//! throughput of one channel and of eight, with `u64` records in batches
//! of 1024 sent through the runtime's typed remote channels (and, for
//! comparison, one in-process channel).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use floe_core::{Batch, JobId, StreamMessage};
use floe_network::{NetworkConfig, NetworkEnvironment, Peer, TaskManagerId};
use floe_runtime::channel::{CancelFlag, GateEvent, InputChannel, InputGate, OutputChannel};
use floe_runtime::graph::{StreamType, unbox};
use floe_runtime::remote::{ChannelId, encode_message};

const BATCH: usize = 1024;
const CAPACITY: usize = 8;
/// Per-message framing of a data message on the wire.
const HEADER: usize = floe_network::wire::DATA_HEADER_LEN;

struct Pair {
    a: NetworkEnvironment,
    b: NetworkEnvironment,
}

fn pair() -> Pair {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = NetworkEnvironment::start(NetworkConfig::new(TaskManagerId(1), bind)).unwrap();
    let b = NetworkEnvironment::start(NetworkConfig::new(TaskManagerId(2), bind)).unwrap();
    Pair { a, b }
}

fn peer(env: &NetworkEnvironment) -> Peer {
    Peer {
        id: env.id(),
        data_addr: env.local_addr(),
    }
}

fn channel(i: u32) -> ChannelId {
    ChannelId {
        edge: 0,
        sender: i,
        receiver: 0,
    }
}

/// Opens channel `i` of `job` from `p.a` to `p.b`.
fn open(p: &Pair, job: JobId, i: u32) -> (Box<dyn OutputChannel<u64>>, InputChannel<u64>) {
    let ops = StreamType::<u64>::ops();
    let input =
        p.b.register_input(job, 0, &peer(&p.a), channel(i), CAPACITY, |c| {
            ops.remote_input(CAPACITY, c, Default::default())
        })
        .unwrap();
    let sink = p.a.output(job, 0, &peer(&p.b), channel(i)).unwrap();
    (
        unbox(ops.remote_output(sink), "output"),
        unbox(input, "input"),
    )
}

fn batch(start: u64) -> StreamMessage<u64> {
    StreamMessage::Records(Batch {
        records: (start..start + BATCH as u64).collect(),
        key_groups: vec![],
        timestamps: vec![],
    })
}

/// Sends `batches` batches then the end of input.
fn sender(mut out: Box<dyn OutputChannel<u64>>, batches: u64) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let cancel = CancelFlag::new();
        for i in 0..batches {
            out.send(batch(i * BATCH as u64), &cancel).unwrap();
        }
        out.send(StreamMessage::EndOfInput, &cancel).unwrap();
    })
}

/// Consumes everything, waiting `pause` after each message; returns the
/// records seen.
fn receiver(input: InputChannel<u64>, pause: Duration) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut gate = InputGate::new(vec![input]);
        let mut records = 0u64;
        let mut checksum = 0u64;
        loop {
            match gate.poll() {
                Ok(GateEvent::Message(_, StreamMessage::Records(b))) => {
                    records += b.records.len() as u64;
                    checksum = checksum.wrapping_add(b.records[b.records.len() - 1]);
                    if !pause.is_zero() {
                        thread::sleep(pause);
                    }
                }
                Ok(GateEvent::Message(..)) => {}
                Ok(GateEvent::Idle) => gate.wait::<()>(Duration::from_millis(10), None),
                Ok(GateEvent::Ended) | Err(_) => break,
            }
        }
        std::hint::black_box(checksum);
        records
    })
}

/// Records/s of `channels` channels each carrying `records` records, with
/// (optionally) one more channel on the same connection whose receiver
/// takes a message only every 5 ms.
fn run(p: &Pair, job: u128, channels: u32, records: u64, with_slow: bool) -> f64 {
    let job = JobId::from_u128(job);
    let batches = records / BATCH as u64;
    let stop_slow = Arc::new(AtomicBool::new(false));
    let slow = with_slow.then(|| {
        let (mut out, input) = open(p, job, 1000);
        let stop = Arc::clone(&stop_slow);
        let s = thread::spawn(move || {
            let cancel = CancelFlag::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if out.send(batch(i), &cancel).is_err() {
                    break;
                }
                i += BATCH as u64;
            }
        });
        (s, receiver(input, Duration::from_millis(5)))
    });
    let opened: Vec<_> = (0..channels).map(|i| open(p, job, i)).collect();
    let start = Instant::now();
    let (senders, receivers): (Vec<_>, Vec<_>) = opened
        .into_iter()
        .map(|(out, input)| (sender(out, batches), receiver(input, Duration::ZERO)))
        .unzip();
    let mut seen = 0;
    for r in receivers {
        seen += r.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(seen, batches * BATCH as u64 * u64::from(channels));
    if let Some((s, r)) = slow {
        stop_slow.store(true, Ordering::Relaxed);
        // Frees the slow sender (blocked on credit) and its receiver.
        p.a.release_job(job, 0);
        p.b.release_job(job, 0);
        s.join().unwrap();
        r.join().unwrap();
    }
    seen as f64 / elapsed
}

/// Records/s of one in-process channel of the same capacity: what the
/// network path is compared with.
fn run_local(records: u64) -> f64 {
    let ops = StreamType::<u64>::ops();
    let (tx, rx) = ops.channel(CAPACITY);
    let batches = records / BATCH as u64;
    let start = Instant::now();
    let s = sender(unbox(tx, "output"), batches);
    let seen = receiver(unbox(rx, "input"), Duration::ZERO).join().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    s.join().unwrap();
    assert_eq!(seen, batches * BATCH as u64);
    seen as f64 / elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut runs = 3;
    let mut records: u64 = 50_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--records" => {
                records = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--records N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let mut frame = Vec::new();
    encode_message(&batch(records / 2), &mut frame).unwrap();
    let wire_bytes_per_record = (frame.len() + HEADER) as f64 / BATCH as f64;
    const FAST: u32 = 4;
    let p = pair();
    let mut job = 0u128;
    let mut next = || {
        job += 1;
        job
    };
    for run_no in 0..runs {
        let fast_records = records / u64::from(FAST);
        // Three pairs, alternating which goes first so warm-up favours
        // neither; the medians damp a noisy shared machine.
        let mut alone = Vec::new();
        let mut with_slow = Vec::new();
        for pair_no in 0..3 {
            if pair_no % 2 == 0 {
                alone.push(run(&p, next(), FAST, fast_records, false));
                with_slow.push(run(&p, next(), FAST, fast_records, true));
            } else {
                with_slow.push(run(&p, next(), FAST, fast_records, true));
                alone.push(run(&p, next(), FAST, fast_records, false));
            }
        }
        let (alone, with_slow) = (median(alone), median(with_slow));
        let one = run(&p, next(), 1, records, false);
        let local = run_local(records);
        let eight = run(&p, next(), 8, records / 8, false);
        println!(
            "{}",
            serde_json::json!({
                "bench": "network-credit",
                "run": run_no,
                "batch_records": BATCH,
                "channel_capacity": CAPACITY,
                "fast_channels": FAST,
                "fast_alone_records_per_s": alone.round(),
                "fast_with_slow_records_per_s": with_slow.round(),
                "ratio_with_slow_to_alone": (with_slow / alone * 1000.0).round() / 1000.0,
                "one_channel_records_per_s": one.round(),
                "one_channel_bytes_per_s": (one * wire_bytes_per_record).round(),
                "one_local_channel_records_per_s": local.round(),
                "eight_channels_records_per_s": eight.round(),
                "eight_channels_bytes_per_s": (eight * wire_bytes_per_record).round(),
                "wire_bytes_per_record": (wire_bytes_per_record * 100.0).round() / 100.0,
            })
        );
    }
}
