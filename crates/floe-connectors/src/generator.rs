//! A generator source: record `i` is `f(i)` for `i` in `0..count`, optionally
//! rate limited (Flink's `DataGeneratorSource` / `fromSequence`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_runtime::{Source, SourceReader, SourceStatus, TaskInfo};

/// Generates `count` records, split into contiguous index ranges over the
/// subtasks; with a rate limit, `rate` records per second in total.
pub struct GeneratorSource<T> {
    count: u64,
    rate: Option<f64>,
    generate: Arc<dyn Fn(u64) -> T + Send + Sync>,
}

impl<T: Send + 'static> GeneratorSource<T> {
    /// Records `generate(0) .. generate(count - 1)`.
    pub fn new(count: u64, generate: impl Fn(u64) -> T + Send + Sync + 'static) -> Self {
        GeneratorSource {
            count,
            rate: None,
            generate: Arc::new(generate),
        }
    }

    /// Limits the whole source to `records_per_second`.
    pub fn with_rate(mut self, records_per_second: f64) -> Self {
        assert!(records_per_second > 0.0, "rate must be positive");
        self.rate = Some(records_per_second);
        self
    }
}

impl GeneratorSource<u64> {
    /// The numbers `from..=to` (Flink's `fromSequence`).
    pub fn sequence(from: u64, to: u64) -> Self {
        GeneratorSource::new(to.saturating_sub(from) + 1, move |i| from + i)
    }
}

/// The share of `count` records subtask `index` of `parallelism` produces.
pub fn share(count: u64, index: u32, parallelism: u32) -> std::ops::Range<u64> {
    let (i, p) = (index as u128, parallelism as u128);
    let start = (count as u128 * i / p) as u64;
    let end = (count as u128 * (i + 1) / p) as u64;
    start..end
}

impl<T: Send + 'static> Source<T> for GeneratorSource<T> {
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<T>>> {
        let range = share(self.count, info.subtask_index, info.parallelism);
        Ok(Box::new(GeneratorReader {
            next: range.start,
            end: range.end,
            first: range.start,
            rate: self.rate.map(|r| r / info.parallelism as f64),
            started: None,
            generate: self.generate.clone(),
        }))
    }
}

struct GeneratorReader<T> {
    next: u64,
    end: u64,
    first: u64,
    rate: Option<f64>,
    started: Option<Instant>,
    generate: Arc<dyn Fn(u64) -> T + Send + Sync>,
}

impl<T: Send> SourceReader<T> for GeneratorReader<T> {
    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(self.next.to_le_bytes().to_vec())
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        let next = u64::from_le_bytes(state.try_into().map_err(|_| {
            anyhow::anyhow!("generator position must be 8 bytes, got {}", state.len())
        })?);
        anyhow::ensure!(
            (self.first..=self.end).contains(&next),
            "generator position {next} is outside this subtask's range {}..{}",
            self.first,
            self.end
        );
        self.next = next;
        // A rate limit counts from the restored position.
        self.first = next;
        Ok(())
    }

    #[inline]
    fn poll_next(&mut self, out: &mut Vec<T>, max: usize) -> anyhow::Result<SourceStatus> {
        let mut limit = self.end.min(self.next + max as u64);
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let allowed = self.first + (started.elapsed().as_secs_f64() * rate) as u64 + 1;
            if allowed <= self.next {
                let wait =
                    (self.next + 1 - self.first) as f64 / rate - started.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.05)));
                return Ok(SourceStatus::NothingAvailable);
            }
            limit = limit.min(allowed);
        }
        let g = &self.generate;
        out.extend((self.next..limit).map(|i| g(i)));
        self.next = limit;
        Ok(if self.next >= self.end {
            SourceStatus::Finished
        } else if self.rate.is_some() {
            SourceStatus::NothingAvailable
        } else {
            SourceStatus::MoreAvailable
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for count in [0u64, 1, 7, 100, 1001] {
            for p in 1..=8 {
                let mut next = 0;
                for i in 0..p {
                    let r = share(count, i, p);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, count);
            }
        }
    }
}
