//! Read-modify-write throughput of a u64 counter per key, single thread: the
//! hot path of a keyed `ValueState<u64>` on the RocksDB layer.
//!
//! For each key-space size K: load K keys (counter 0), then run `ops`
//! updates on uniformly random keys: `KeyPrefix::set` + `get` (pinned) +
//! postcard decode + increment + encode into a reused buffer + `put`.
//! Prints one JSON object per K on stdout.
//!
//! ```text
//! cargo run --release -p floe-rocksdb --example rmw_bench [-- K1 K2 ...]
//! ```
//!
//! Environment: `FLOE_BENCH_OPS` (default 2,000,000 updates per K),
//! `FLOE_BENCH_BUDGET_MB` (default 256), `FLOE_BENCH_DIR` (default the
//! system temp dir).

use std::time::Instant;

use floe_rocksdb::{KeyGroupRange, KeyPrefix, KeyedDb, RocksDbResources};

const MAX_PARALLELISM: u64 = 128;

/// xorshift64*: fast, deterministic, good enough to spread keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn key_group(key: u64) -> u16 {
    ((key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % MAX_PARALLELISM) as u16
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// CPU seconds used so far by the calling thread (Linux: utime + stime
/// from `/proc/thread-self/stat`, in clock ticks of 1/100 s), or NaN
/// elsewhere. Wall-clock throughput on a shared machine swings with other
/// load; the task thread's own CPU time per record is steadier.
fn thread_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<u64> = {
        let args: Vec<u64> = std::env::args()
            .skip(1)
            .filter_map(|a| a.replace('_', "").parse().ok())
            .collect();
        if args.is_empty() {
            vec![100_000, 10_000_000]
        } else {
            args
        }
    };
    let ops = env_or("FLOE_BENCH_OPS", 2_000_000);
    let budget_mb = env_or("FLOE_BENCH_BUDGET_MB", 256);
    let base = std::env::var_os("FLOE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let resources = RocksDbResources::new((budget_mb as usize) << 20)?;

    for k in sizes {
        let dir = tempfile::Builder::new()
            .prefix("floe-rmw-")
            .tempdir_in(&base)?;
        let range = KeyGroupRange::new(0, (MAX_PARALLELISM - 1) as u16)?;
        let mut db = KeyedDb::open(dir.path().join("db"), &resources, range)?;
        let state = db.create_state("counter")?;
        let mut prefix = KeyPrefix::new();
        let mut key_buf = [0u8; 16];
        let mut value_buf = [0u8; 16];

        // Load: every key starts at 0.
        let t = Instant::now();
        let zero = postcard::to_slice(&0u64, &mut value_buf)?.to_vec();
        for key in 0..k {
            let kb = postcard::to_slice(&key, &mut key_buf)?;
            prefix.set(key_group(key), kb);
            db.put(state, &prefix, &zero)?;
        }
        let load_secs = t.elapsed().as_secs_f64();

        // Read-modify-write on random keys.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ k);
        let mut missing = 0u64;
        let t = Instant::now();
        let cpu0 = thread_cpu_secs();
        for _ in 0..ops {
            let key = rng.next() % k;
            let kb = postcard::to_slice(&key, &mut key_buf)?;
            prefix.set(key_group(key), kb);
            let current: u64 = match db.get(state, &prefix)? {
                Some(v) => postcard::from_bytes(&v)?,
                None => {
                    missing += 1;
                    0
                }
            };
            let out = postcard::to_slice(&(current + 1), &mut value_buf)?;
            db.put(state, &prefix, out)?;
        }
        let rmw_secs = t.elapsed().as_secs_f64();
        let rmw_cpu_secs = thread_cpu_secs() - cpu0;
        assert_eq!(missing, 0, "every key was loaded");

        let sst_bytes = db
            .state_property_int(state, "rocksdb.total-sst-files-size")?
            .unwrap_or(0);
        let records_per_sec = ops as f64 / rmw_secs;
        let records_per_task_cpu_sec = ops as f64 / rmw_cpu_secs;
        let load_records_per_sec = k as f64 / load_secs;
        let cache_usage_bytes = resources.cache_usage();
        println!(
            "{{\"bench\":\"rmw_u64_counter\",\"keys\":{k},\"ops\":{ops},\
             \"records_per_sec\":{records_per_sec:.0},\
             \"records_per_task_cpu_sec\":{records_per_task_cpu_sec:.0},\
             \"rmw_secs\":{rmw_secs:.2},\"task_thread_cpu_secs\":{rmw_cpu_secs:.2},\
             \"load_records_per_sec\":{load_records_per_sec:.0},\
             \"budget_mb\":{budget_mb},\"sst_bytes\":{sst_bytes},\
             \"cache_usage_bytes\":{cache_usage_bytes}}}"
        );
        drop(db);
    }
    Ok(())
}
