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

    /// Limits the whole source to `records_per_second`, at any
    /// parallelism and after rescaling: each split (index range) has the
    /// share of the rate it has of the records, and a subtask reads its
    /// splits at the sum of theirs, so a restored job keeps the rate while
    /// its splits have records left, even with more subtasks than splits.
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
        Ok(Box::new(self.reader(info)))
    }
}

impl<T: Send + 'static> GeneratorSource<T> {
    /// The reader of subtask `info.subtask_index`: its share of the
    /// records as one split.
    fn reader(&self, info: &TaskInfo) -> GeneratorReader<T> {
        let range = share(self.count, info.subtask_index, info.parallelism);
        let split = Split {
            first: range.start,
            next: range.start,
            end: range.end,
            total: Some(self.count),
        };
        let mut reader = GeneratorReader {
            splits: vec![split],
            emitted: 0,
            source_rate: self.rate,
            parallelism: info.parallelism,
            rate: None,
            started: None,
            generate: self.generate.clone(),
            polled: range.end,
            finished: Vec::new(),
        };
        reader.rate = reader.reader_rate();
        reader
    }
}

/// One split: an index range as the source cut it, and how far it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    /// The range's first index when it was cut.
    first: u64,
    /// The next index to generate; `next..end` is left.
    next: u64,
    end: u64,
    /// The source's record count when the range was cut, of which the
    /// range `first..end` has its share of the rate. `None` for ranges
    /// restored from a position written before Floe recorded it (their
    /// `first` is where that position was).
    total: Option<u64>,
}

impl Split {
    fn is_empty(&self) -> bool {
        self.next == self.end
    }

    /// The split's share of the source's rate, if known.
    fn rate_share(&self) -> Option<f64> {
        let total = self.total?;
        Some(if total == 0 {
            0.0
        } else {
            (self.end - self.first) as f64 / total as f64
        })
    }
}

/// Reads its splits in order: its own share, or after a rescaling restore
/// the remaining ranges of the old subtasks it took over.
struct GeneratorReader<T> {
    /// Splits with records left, in the order they are read.
    splits: Vec<Split>,
    /// Records emitted since open (for the rate limit).
    emitted: u64,
    /// The whole source's rate limit.
    source_rate: Option<f64>,
    /// The number of subtasks (the share of the rate of splits whose share
    /// is unknown).
    parallelism: u32,
    /// This reader's rate limit: see [`GeneratorReader::reader_rate`].
    rate: Option<f64>,
    started: Option<Instant>,
    generate: Arc<dyn Fn(u64) -> T + Send + Sync>,
    /// The split (named by its end) the last poll read from.
    polled: u64,
    /// Splits read to their end since the last look, by their end.
    finished: Vec<u64>,
}

impl<T> GeneratorReader<T> {
    /// The source's rate times the shares of this reader's splits: the
    /// readers of any parallelism, whichever splits each took over, hold
    /// the source's rate together. Without a recorded share (positions
    /// written by earlier versions) an equal share per subtask, as before.
    fn reader_rate(&self) -> Option<f64> {
        let rate = self.source_rate?;
        let shares: Option<f64> = self.splits.iter().map(Split::rate_share).sum();
        Some(match shares {
            Some(s) => rate * s,
            None => rate / f64::from(self.parallelism),
        })
    }
}

/// The version byte of the position format that records each range's cut.
const POSITION_VERSION: u8 = 1;
/// Bytes per range in a version-1 position: first, next, end, total.
const SPLIT_BYTES: usize = 32;
/// Bytes per range in a position without a version byte (written before
/// version 1): next, end.
const LEGACY_SPLIT_BYTES: usize = 16;

/// A generator position, little-endian: the version byte, then per range
/// `first`, `next`, `end` and `total` as u64s (1 + 32n bytes, odd, so never
/// mistaken for the earlier format of `next`, `end` pairs, 16n bytes, which
/// ranges restored from such a position are written in again).
fn encode_splits(splits: &[Split]) -> Vec<u8> {
    if splits.iter().any(|s| s.total.is_none()) {
        let mut out = Vec::with_capacity(splits.len() * LEGACY_SPLIT_BYTES);
        for s in splits {
            out.extend_from_slice(&s.next.to_le_bytes());
            out.extend_from_slice(&s.end.to_le_bytes());
        }
        return out;
    }
    let mut out = Vec::with_capacity(1 + splits.len() * SPLIT_BYTES);
    out.push(POSITION_VERSION);
    for s in splits {
        for v in [s.first, s.next, s.end, s.total.unwrap_or_default()] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn decode_splits(state: &[u8]) -> anyhow::Result<Vec<Split>> {
    // The `i`-th u64 of a range's bytes.
    let at =
        |c: &[u8], i: usize| u64::from_le_bytes(c[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    if state.len() % LEGACY_SPLIT_BYTES == 0 {
        return state
            .chunks_exact(LEGACY_SPLIT_BYTES)
            .map(|c| {
                let (next, end) = (at(c, 0), at(c, 1));
                anyhow::ensure!(next <= end, "generator range {next}..{end} is reversed");
                Ok(Split {
                    first: next,
                    next,
                    end,
                    total: None,
                })
            })
            .collect();
    }
    let Some((&POSITION_VERSION, ranges)) = state.split_first() else {
        anyhow::bail!(
            "generator position of {} bytes is neither a version-{POSITION_VERSION} position nor one of 16-byte ranges",
            state.len()
        );
    };
    anyhow::ensure!(
        ranges.len() % SPLIT_BYTES == 0,
        "generator position must be a version byte and {SPLIT_BYTES}-byte ranges, got {} bytes",
        state.len()
    );
    ranges
        .chunks_exact(SPLIT_BYTES)
        .map(|c| {
            let (first, next, end, total) = (at(c, 0), at(c, 1), at(c, 2), at(c, 3));
            anyhow::ensure!(
                first <= next && next <= end && end <= total,
                "generator range {next}..{end} (cut as {first}..{end} of {total}) is inconsistent"
            );
            Ok(Split {
                first,
                next,
                end,
                total: Some(total),
            })
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
        splits.retain(|s| !s.is_empty());
        if let Some(first) = splits.first() {
            self.polled = first.end;
        }
        self.splits = splits;
        self.rate = self.reader_rate();
        Ok(())
    }

    #[inline]
    fn poll_next(&mut self, out: &mut Vec<T>, max: usize) -> anyhow::Result<SourceStatus> {
        let Some(split) = self.splits.first_mut() else {
            return Ok(SourceStatus::Finished);
        };
        let mut limit = split.end.min(split.next + max as u64);
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let allowed = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
            if allowed <= self.emitted {
                let wait = (self.emitted + 1) as f64 / rate - started.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.05)));
                return Ok(SourceStatus::NothingAvailable);
            }
            limit = limit.min(split.next + (allowed - self.emitted));
        }
        let g = &self.generate;
        out.extend((split.next..limit).map(|i| g(i)));
        self.emitted += limit - split.next;
        split.next = limit;
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
        let splits = vec![
            Split {
                first: 0,
                next: 3,
                end: 10,
                total: Some(20),
            },
            Split {
                first: 10,
                next: 20,
                end: 20,
                total: Some(20),
            },
        ];
        let bytes = encode_splits(&splits);
        let mut want = vec![1u8];
        for v in [0u64, 3, 10, 20, 10, 20, 20, 20] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(bytes, want);
        assert_eq!(decode_splits(&bytes).unwrap(), splits);
        assert_eq!(decode_splits(&[1]).unwrap(), []);
        assert!(decode_splits(&[1, 2, 3]).is_err());
        assert!(decode_splits(&[2]).is_err());
        // A range past the total it claims to be cut from.
        let mut bad = vec![1u8];
        for v in [0u64, 3, 10, 9] {
            bad.extend_from_slice(&v.to_le_bytes());
        }
        assert!(decode_splits(&bad).is_err());
    }

    /// Positions written before the format recorded each range's cut
    /// (`next`, `end` pairs) still restore, and are written back the same
    /// way, since their shares of the rate are unknown.
    #[test]
    fn positions_without_a_version_restore_as_before() {
        let legacy = [
            3, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0,
            0, 0, 0, 0,
        ];
        let splits = decode_splits(&legacy).unwrap();
        let ranges: Vec<_> = splits.iter().map(|s| (s.next, s.end, s.total)).collect();
        assert_eq!(ranges, [(3, 10, None), (20, 20, None)]);
        assert_eq!(encode_splits(&splits), legacy);
        assert_eq!(decode_splits(&[]).unwrap(), []);
    }

    fn info(i: u32, p: u32) -> TaskInfo {
        TaskInfo {
            job_id: floe_core::JobId::from_u128(1),
            job_name: "test".into(),
            operator_name: "generator".into(),
            uid: "generator".into(),
            subtask_index: i,
            parallelism: p,
            max_parallelism: 128,
        }
    }

    /// The readers at parallelism `p` restored from `positions` as the
    /// runtime hands them out (old subtask `s` to new `s mod p`).
    fn restored(
        source: &GeneratorSource<u64>,
        positions: &[Vec<u8>],
        p: u32,
    ) -> Vec<GeneratorReader<u64>> {
        (0..p)
            .map(|j| {
                let mut r = source.reader(&info(j, p));
                let mine = (0..positions.len())
                    .filter(|s| *s as u32 % p == j)
                    .map(|s| positions[s].clone())
                    .collect();
                r.restore_splits(mine).unwrap();
                r
            })
            .collect()
    }

    fn total_rate(readers: &[GeneratorReader<u64>]) -> f64 {
        readers.iter().map(|r| r.rate.unwrap()).sum()
    }

    /// The readers' rates add up to the source's at the first parallelism
    /// and after every rescaling, up or down, and more subtasks than
    /// splits (p = 2 to 3, the case: one reader idle) included;
    /// a reader's rate is its splits' shares (one split each: half).
    #[test]
    fn reader_rates_add_up_to_the_source_rate_after_rescaling() {
        let source = GeneratorSource::new(1000, |i| i).with_rate(300.0);
        for p in [1u32, 2, 3, 7] {
            let readers: Vec<_> = (0..p).map(|i| source.reader(&info(i, p))).collect();
            assert!((total_rate(&readers) - 300.0).abs() < 1e-9, "p = {p}");
        }
        let mut readers: Vec<_> = (0..2).map(|i| source.reader(&info(i, 2))).collect();
        for (i, r) in readers.iter_mut().enumerate() {
            r.poll_next(&mut Vec::new(), 10 + 20 * i).unwrap();
        }
        for path in [&[3u32][..], &[3, 2], &[3, 2, 5], &[1, 4], &[3, 2, 1]] {
            let mut positions: Vec<Vec<u8>> = readers
                .iter_mut()
                .map(|r| r.snapshot_state().unwrap())
                .collect();
            for &p in path {
                let mut now = restored(&source, &positions, p);
                let rate = total_rate(&now);
                assert!((rate - 300.0).abs() < 1e-9, "{path:?}: {rate} at p = {p}");
                positions = now
                    .iter_mut()
                    .map(|r| r.snapshot_state().unwrap())
                    .collect();
            }
        }
        let at_3 = restored(
            &source,
            &readers
                .iter_mut()
                .map(|r| r.snapshot_state().unwrap())
                .collect::<Vec<_>>(),
            3,
        );
        let rates: Vec<f64> = at_3.iter().map(|r| r.rate.unwrap()).collect();
        assert_eq!(rates, [150.0, 150.0, 0.0]);
    }

    /// Without recorded shares (an earlier version's position) each
    /// reader keeps an equal share per subtask.
    #[test]
    fn legacy_positions_share_the_rate_per_subtask() {
        let source = GeneratorSource::new(100, |i| i).with_rate(90.0);
        let legacy = |next: u64, end: u64| {
            let mut b = next.to_le_bytes().to_vec();
            b.extend_from_slice(&end.to_le_bytes());
            b
        };
        let readers = restored(&source, &[legacy(10, 50), legacy(60, 100)], 3);
        let rates: Vec<f64> = readers.iter().map(|r| r.rate.unwrap()).collect();
        assert_eq!(rates, [30.0, 30.0, 0.0]);
    }

    #[test]
    fn rescaled_readers_read_every_remaining_record_once() {
        let source = GeneratorSource::new(1000, |i| i);
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
