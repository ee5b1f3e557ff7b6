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
            splits: vec![range.clone()],
            emitted: 0,
            rate: self.rate.map(|r| r / info.parallelism as f64),
            started: None,
            generate: self.generate.clone(),
            polled: range.end,
            finished: Vec::new(),
        }))
    }
}

/// Reads its index ranges (splits) in order: its own share, or after a
/// rescaling restore the remaining ranges of the old subtasks it took over.
struct GeneratorReader<T> {
    /// Remaining ranges, `next..end`, in the order they are read.
    splits: Vec<std::ops::Range<u64>>,
    /// Records emitted since open (for the rate limit).
    emitted: u64,
    rate: Option<f64>,
    started: Option<Instant>,
    generate: Arc<dyn Fn(u64) -> T + Send + Sync>,
    /// The range (split, named by its end) the last poll read from.
    polled: u64,
    /// Ranges read to their end since the last look, by their end.
    finished: Vec<u64>,
}

/// A generator position: the remaining ranges as `(next, end)` pairs of
/// little-endian u64s (16 bytes per range).
fn encode_splits(splits: &[std::ops::Range<u64>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(splits.len() * 16);
    for r in splits {
        out.extend_from_slice(&r.start.to_le_bytes());
        out.extend_from_slice(&r.end.to_le_bytes());
    }
    out
}

fn decode_splits(state: &[u8]) -> anyhow::Result<Vec<std::ops::Range<u64>>> {
    anyhow::ensure!(
        state.len() % 16 == 0,
        "generator position must be a multiple of 16 bytes, got {}",
        state.len()
    );
    state
        .chunks_exact(16)
        .map(|c| {
            let next = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let end = u64::from_le_bytes(c[8..].try_into().expect("8 bytes"));
            anyhow::ensure!(next <= end, "generator range {next}..{end} is reversed");
            Ok(next..end)
        })
        .collect()
}

impl<T: Send> SourceReader<T> for GeneratorReader<T> {
    /// Each index range is a split, named by its end (which never moves
    /// while the range is read).
    fn current_split(&self) -> floe_runtime::SplitId {
        self.polled
    }

    fn finished_splits(&mut self, out: &mut Vec<floe_runtime::SplitId>) {
        out.append(&mut self.finished);
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(encode_splits(&self.splits))
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.restore_splits(vec![state.to_vec()])
    }

    fn restore_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut splits = Vec::new();
        for state in &states {
            // A position that does not decode never will: no restart helps.
            splits.extend(decode_splits(state).map_err(floe_runtime::NonRecoverable::wrap)?);
        }
        splits.retain(|r| !r.is_empty());
        if let Some(first) = splits.first() {
            self.polled = first.end;
        }
        self.splits = splits;
        Ok(())
    }

    #[inline]
    fn poll_next(&mut self, out: &mut Vec<T>, max: usize) -> anyhow::Result<SourceStatus> {
        let Some(split) = self.splits.first_mut() else {
            return Ok(SourceStatus::Finished);
        };
        let mut limit = split.end.min(split.start + max as u64);
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let allowed = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
            if allowed <= self.emitted {
                let wait = (self.emitted + 1) as f64 / rate - started.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.05)));
                return Ok(SourceStatus::NothingAvailable);
            }
            limit = limit.min(split.start + (allowed - self.emitted));
        }
        let g = &self.generate;
        out.extend((split.start..limit).map(|i| g(i)));
        self.emitted += limit - split.start;
        split.start = limit;
        self.polled = split.end;
        if split.is_empty() {
            self.finished.push(split.end);
            self.splits.remove(0);
        }
        Ok(if self.splits.is_empty() {
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
    fn position_format_is_pinned() {
        let splits = vec![3u64..10, 20..20];
        let bytes = encode_splits(&splits);
        assert_eq!(
            bytes,
            [
                3, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0,
                0, 0, 0, 0, 0
            ]
        );
        assert_eq!(decode_splits(&bytes).unwrap(), splits);
        assert!(decode_splits(&[1, 2, 3]).is_err());
    }

    #[test]
    fn rescaled_readers_read_every_remaining_record_once() {
        let source = GeneratorSource::new(1000, |i| i);
        let info = |i, p| TaskInfo {
            job_id: floe_core::JobId::from_u128(1),
            job_name: "test".into(),
            operator_name: "generator".into(),
            uid: "generator".into(),
            subtask_index: i,
            parallelism: p,
            max_parallelism: 128,
        };
        // Two readers read part of their share, then the positions are
        // taken over by three readers (old s goes to new s mod 3) and by one.
        let mut seen = Vec::new();
        let mut positions = Vec::new();
        for i in 0..2 {
            let mut r = source.create_reader(&info(i, 2)).unwrap();
            let mut out = Vec::new();
            r.poll_next(&mut out, 100 + 50 * i as usize).unwrap();
            seen.extend(out);
            positions.push(r.snapshot_state().unwrap());
        }
        for new_p in [3u32, 1] {
            let mut all = seen.clone();
            for j in 0..new_p {
                let mut r = source.create_reader(&info(j, new_p)).unwrap();
                let mine: Vec<Vec<u8>> = (0..2u32)
                    .filter(|s| s % new_p == j)
                    .map(|s| positions[s as usize].clone())
                    .collect();
                r.restore_splits(mine).unwrap();
                let mut out = Vec::new();
                while r.poll_next(&mut out, 64).unwrap() != SourceStatus::Finished {}
                all.extend(out);
            }
            all.sort_unstable();
            assert_eq!(
                all,
                (0..1000).collect::<Vec<u64>>(),
                "new parallelism {new_p}"
            );
        }
    }

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
