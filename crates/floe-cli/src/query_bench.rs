//! Queryable-state load: `floe bench keyed-count --query-load` runs the
//! yardstick with its `count` state queryable and, while it runs, a second
//! process (`floe bench query-load`, this module) queries random keys
//! through the proxy from `concurrency` pipelined tasks on one connection,
//! recording every query's latency.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floe::core::JobId;
use floe::queryable::{QueryClientError, QueryableStateClient};
use floe::runtime::QueryError;
use serde::{Deserialize, Serialize};

/// What the query process measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryLoadReport {
    /// Concurrent queries in flight.
    pub concurrency: usize,
    /// The pace asked for, in queries per second (`None`: unpaced).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Queries answered (found or not found).
    pub queries: u64,
    /// Queries that failed (other than the job ending).
    pub errors: u64,
    /// Measured span, in seconds.
    pub seconds: f64,
    /// `queries / seconds`.
    pub queries_per_sec: f64,
    /// Median latency, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, in microseconds.
    pub p999_us: f64,
    /// Largest latency, in microseconds.
    pub max_us: f64,
}

/// The query process's settings.
#[derive(Debug, Clone)]
pub struct QueryLoad {
    /// The proxy.
    pub proxy: SocketAddr,
    /// The job.
    pub job: JobId,
    /// The queryable state.
    pub name: String,
    /// Keys are drawn from `0..keys`.
    pub keys: u64,
    /// Queries in flight at once.
    pub concurrency: usize,
    /// How long to query (less if the job ends first).
    pub seconds: f64,
    /// Queries per second in all, spread over the workers (`None`: each
    /// worker sends its next query as soon as the last is answered).
    pub rate: Option<f64>,
}

impl QueryLoad {
    /// Waits until the state answers, then queries for the set time (or
    /// until the job is gone) and reports.
    pub fn run(&self) -> anyhow::Result<QueryLoadReport> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.run_async())
    }

    async fn run_async(&self) -> anyhow::Result<QueryLoadReport> {
        let client = std::rc::Rc::new(QueryableStateClient::new(
            &self.proxy.ip().to_string(),
            self.proxy.port(),
        ));
        let ready = Instant::now() + Duration::from_secs(30);
        while client
            .get_kv_state::<u64, u64>(self.job, &self.name, &0)
            .await
            .is_err()
        {
            anyhow::ensure!(
                Instant::now() < ready,
                "state '{}' of job {} did not become queryable within 30 s",
                self.name,
                self.job
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(self.seconds);
        let local = tokio::task::LocalSet::new();
        let mut workers = Vec::new();
        // Per worker, the time between two queries when paced.
        let gap = self
            .rate
            .map(|r| Duration::from_secs_f64(self.concurrency as f64 / r));
        for w in 0..self.concurrency {
            let (client, job, name, keys) =
                (client.clone(), self.job, self.name.clone(), self.keys);
            workers.push(local.spawn_local(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                // xorshift: a different key sequence per worker, no locking.
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1).wrapping_mul(0x2545_f491);
                let mut sent = 0u32;
                while Instant::now() < end {
                    // Paced: ahead of schedule by a timer tick or more, wait
                    // (a worker that falls behind catches up in a burst).
                    if let Some(gap) = gap {
                        let due = start + gap * sent;
                        if due > Instant::now() + Duration::from_millis(1) {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        sent += 1;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % keys;
                    let t = Instant::now();
                    match client.get_kv_state::<u64, u64>(job, &name, &key).await {
                        Ok(_) => latencies.push(t.elapsed().as_nanos() as u64),
                        // The job finished or went away: the run is over.
                        Err(QueryClientError::Query(QueryError::UnknownJob { .. }))
                        | Err(QueryClientError::Query(QueryError::Unavailable { .. }))
                        | Err(QueryClientError::ConnectionLost { .. })
                        | Err(QueryClientError::Connect { .. }) => break,
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors, Instant::now())
            }));
        }
        let results = local
            .run_until(async move {
                let mut all = Vec::new();
                for w in workers {
                    all.push(w.await);
                }
                all
            })
            .await;
        let mut latencies = Vec::new();
        let mut errors = 0;
        let mut last = start;
        for r in results {
            let (l, e, t) = r?;
            latencies.extend(l);
            errors += e;
            last = last.max(t);
        }
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |ns| *ns as f64 / 1e3)
        };
        let seconds = last.duration_since(start).as_secs_f64();
        Ok(QueryLoadReport {
            concurrency: self.concurrency,
            rate: self.rate,
            queries: latencies.len() as u64,
            errors,
            seconds,
            queries_per_sec: latencies.len() as f64 / seconds.max(1e-9),
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            max_us: latencies.last().map_or(0.0, |ns| *ns as f64 / 1e3),
        })
    }
}
