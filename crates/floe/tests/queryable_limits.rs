//! What a hostile peer can cost a job through its queryable-state ports,
//! measured on the process's resident memory with real sockets: peers that
//! announce huge frames and send one byte do not make the proxy (or a
//! client, facing a hostile proxy) allocate what they announced, and a
//! normal query is answered meanwhile.
//!
//! One test in this file on purpose: the test process's RSS is the
//! measurement, so nothing else may run beside it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use floe::prelude::*;
use floe::queryable::{QueryableStateClient, QueryableStateService};

const KEYS: u64 = 10;
const RECORDS: u64 = 1000;

/// Keeps the job running after the counted input is exhausted.
#[derive(Clone)]
struct Forever;

struct ForeverReader;

impl SourceReader<(u64, u64)> for ForeverReader {
    fn poll_next(&mut self, _: &mut Vec<(u64, u64)>, _: usize) -> anyhow::Result<SourceStatus> {
        std::thread::sleep(Duration::from_millis(5));
        Ok(SourceStatus::NothingAvailable)
    }
}

impl Source<(u64, u64)> for Forever {
    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<(u64, u64)>>> {
        Ok(Box::new(ForeverReader))
    }
}

/// The process's resident set, in bytes (Linux).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// A queryable-state hello, a frame header announcing `len` bytes, and
/// one byte of the body.
fn announce(len: u32) -> Vec<u8> {
    let mut bytes = floe::queryable::protocol::hello().to_vec();
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.push(0);
    bytes
}

const ATTACKERS: usize = 16;
const HUGE: u32 = 64 << 20;
/// Growth allowed: the old code allocated 16 × 64 MiB = 1 GiB here.
const BOUND: u64 = 96 << 20;

#[test]
fn peers_announcing_huge_frames_cost_little_memory_and_queries_still_work() {
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    env.set_config("queryable-state.enable", "true");
    env.set_config("queryable-state.proxy.ports", "0");
    env.set_config("queryable-state.server.ports", "0");
    let input = env
        .from_source(
            GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)),
            "Generator",
        )
        .uid("generator")
        .union(&[env.from_source(Forever, "Forever").uid("forever")]);
    input
        .key_by(|(k, _): &(u64, u64)| *k)
        .as_queryable_state(
            "sum",
            ReducingStateDescriptor::new("sum", |a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1)),
        )
        .uid("sum");
    let job = env.execute_async("limits").unwrap();
    let job_id = job.job_id();
    let proxy = QueryableStateService::running()
        .expect("the service runs")
        .proxy_address();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = QueryableStateClient::new(&proxy.ip().to_string(), proxy.port());
    let query =
        |key: u64| runtime.block_on(client.get_kv_state::<u64, (u64, u64)>(job_id, "sum", &key));
    // Every key reaches its final sum (the counted input is done).
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(3).ok().flatten() != Some((3, RECORDS / KEYS)) {
        assert!(Instant::now() < deadline, "the sums never completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = rss();

    // Sixteen peers announce 64 MiB frames; sixteen more announce frames
    // just under the request limit. All send one byte and stall.
    let mut peers = Vec::new();
    for len in [HUGE, 60 << 10] {
        for _ in 0..ATTACKERS {
            let mut s = TcpStream::connect(proxy).unwrap();
            s.write_all(&announce(len)).unwrap();
            peers.push(s);
        }
    }
    // The huge announcements are refused: the proxy answers the hello and
    // closes the connection without reading (or allocating) the body. (The
    // close may arrive as a reset, as the byte sent was never read.)
    for s in &mut peers[..ATTACKERS] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut echoed = Vec::new();
        match s.read_to_end(&mut echoed) {
            Ok(_) => assert_eq!(echoed, floe::queryable::protocol::hello()),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    // The stalled near-limit frames stay open; queries are answered
    // meanwhile.
    assert_eq!(query(7).unwrap(), Some((7, RECORDS / KEYS)));
    let grown = rss().saturating_sub(before);
    assert!(
        grown < BOUND,
        "RSS grew by {} MiB under {ATTACKERS} peers announcing {} MiB each",
        grown >> 20,
        HUGE >> 20
    );
    drop(peers);

    // The client side: a hostile "proxy" that answers the hello and then
    // announces a 64 MiB response and sends one byte, to 16 clients.
    let hostile = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hostile.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..ATTACKERS {
            let (mut s, _) = hostile.accept().unwrap();
            let mut hello = [0u8; 6];
            s.read_exact(&mut hello).unwrap();
            s.write_all(&announce(HUGE)[..]).unwrap();
            held.push(s);
        }
        // Keep the connections open until the clients gave up.
        std::thread::sleep(Duration::from_secs(5));
    });
    let before = rss();
    let clients: Vec<_> = (0..ATTACKERS)
        .map(|_| QueryableStateClient::new("127.0.0.1", addr.port()))
        .collect();
    runtime.block_on(async {
        let mut waiting = Vec::new();
        for c in &clients {
            waiting.push(c.get_kv_state::<u64, u64>(job_id, "sum", &1u64));
        }
        // None is answered; give each a moment to have read what it got.
        for w in waiting {
            let r = tokio::time::timeout(Duration::from_millis(200), w).await;
            assert!(r.is_err() || r.unwrap().is_err());
        }
    });
    let grown = rss().saturating_sub(before);
    assert!(
        grown < BOUND,
        "a client's RSS grew by {} MiB facing {ATTACKERS} proxies announcing {} MiB",
        grown >> 20,
        HUGE >> 20
    );
    drop(clients);
    server.join().unwrap();
    job.cancel();
    let _ = job.wait();
}
