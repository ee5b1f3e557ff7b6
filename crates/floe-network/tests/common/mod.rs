//! Helpers shared by the integration tests: environments on loopback and
//! typed channels built the way the runtime builds them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use floe_core::{Batch, CheckpointBarrier, CheckpointKind, JobId, StreamMessage, Watermark};
use floe_network::{NetworkConfig, NetworkEnvironment, Peer, TaskManagerId};
use floe_runtime::channel::{CancelFlag, GateEvent, InputChannel, InputGate, OutputChannel};
use floe_runtime::graph::{StreamType, unbox};
use floe_runtime::remote::ChannelId;

/// An environment with id `id` on a free loopback port.
pub fn env(id: u128) -> NetworkEnvironment {
    env_with(id, |_| {})
}

/// Same, with settings adjusted by `tune`.
pub fn env_with(id: u128, tune: impl FnOnce(&mut NetworkConfig)) -> NetworkEnvironment {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = NetworkConfig::new(TaskManagerId(id), bind);
    config.handshake_timeout = Duration::from_secs(3);
    tune(&mut config);
    NetworkEnvironment::start(config).expect("start network environment")
}

/// How others reach `env`.
pub fn peer(env: &NetworkEnvironment) -> Peer {
    Peer {
        id: env.id(),
        data_addr: env.local_addr(),
    }
}

pub fn ch(edge: u32, sender: u32, receiver: u32) -> ChannelId {
    ChannelId {
        edge,
        sender,
        receiver,
    }
}

/// A typed input channel of `u64` records from `from`.
pub fn input(
    env: &NetworkEnvironment,
    job: JobId,
    attempt: u64,
    from: &Peer,
    channel: ChannelId,
    capacity: usize,
) -> InputChannel<u64> {
    let ops = StreamType::<u64>::ops();
    let any = env
        .register_input(job, attempt, from, channel, capacity, |credits| {
            ops.remote_input(capacity, credits, Default::default())
        })
        .expect("register input");
    unbox::<InputChannel<u64>>(any, "input channel")
}

/// A typed output channel of `u64` records to `to`.
pub fn output(
    env: &NetworkEnvironment,
    job: JobId,
    attempt: u64,
    to: &Peer,
    channel: ChannelId,
) -> Box<dyn OutputChannel<u64>> {
    let ops = StreamType::<u64>::ops();
    let sink = env.output(job, attempt, to, channel).expect("output");
    unbox::<Box<dyn OutputChannel<u64>>>(ops.remote_output(sink), "output channel")
}

/// Every message a gate delivers until all its channels ended, per channel.
pub fn drain(gate: &mut InputGate<u64>) -> Vec<Vec<StreamMessage<u64>>> {
    let mut got: Vec<Vec<StreamMessage<u64>>> = vec![Vec::new(); gate.num_channels()];
    loop {
        match gate.poll().expect("input gate") {
            GateEvent::Message(i, m) => got[i].push(m),
            GateEvent::Idle => gate.wait::<()>(Duration::from_millis(20), None),
            GateEvent::Ended => return got,
        }
    }
}

/// A channel's test sequence: `batches` batches of `batch` records
/// numbered from `base`, a watermark after each, a barrier every fourth,
/// and the end of input.
pub fn sequence(base: u64, batches: usize, batch: usize) -> Vec<StreamMessage<u64>> {
    let mut out = Vec::new();
    let mut n = base;
    for b in 0..batches {
        let records: Vec<u64> = (n..n + batch as u64).collect();
        n += batch as u64;
        out.push(StreamMessage::Records(Batch {
            records,
            key_groups: vec![],
            timestamps: vec![],
        }));
        out.push(StreamMessage::Watermark(Watermark(b as i64)));
        if b % 4 == 3 {
            out.push(StreamMessage::Barrier(CheckpointBarrier {
                id: b as u64 / 4 + 1,
                timestamp_ms: 1_000 + b as u64,
                kind: CheckpointKind::Checkpoint,
                last_completed: None,
            }));
        }
    }
    out.push(StreamMessage::EndOfInput);
    out
}

/// Sends every message of `msgs`, panicking on failure.
pub fn send_all(out: &mut dyn OutputChannel<u64>, msgs: &[StreamMessage<u64>]) {
    let cancel = CancelFlag::new();
    for m in msgs {
        out.send(m.clone(), &cancel).expect("send");
    }
}

/// A hand-driven peer on a raw socket: says hello as `id` and checks the
/// reply, so a test can write any bytes it likes afterwards.
pub fn raw_peer(to: &NetworkEnvironment, id: u128) -> std::net::TcpStream {
    let (s, status) = raw_hello(to, id);
    assert_eq!(status, floe_network::wire::HandshakeStatus::Accepted);
    s
}

/// Says hello as `id` on a raw socket and returns the acceptor's verdict.
pub fn raw_hello(
    to: &NetworkEnvironment,
    id: u128,
) -> (std::net::TcpStream, floe_network::wire::HandshakeStatus) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(to.local_addr()).unwrap();
    s.write_all(&floe_network::wire::encode_hello(TaskManagerId(id)))
        .unwrap();
    let mut reply = [0u8; floe_network::wire::REPLY_LEN];
    s.read_exact(&mut reply).unwrap();
    let (hello, status) = floe_network::wire::decode_reply(&reply).unwrap();
    assert_eq!(hello.id, to.id());
    (s, status)
}

/// The peer a raw socket claims to be (it is never dialed: the
/// environment finds the raw connection by id).
pub fn raw_peer_addr(id: u128) -> Peer {
    Peer {
        id: TaskManagerId(id),
        data_addr: "127.0.0.1:9".parse().unwrap(),
    }
}

/// The next event, or a panic after `secs` seconds.
pub fn next_event(env: &NetworkEnvironment, secs: u64) -> floe_network::NetworkEvent {
    env.events()
        .recv_timeout(Duration::from_secs(secs))
        .expect("no network event")
}
