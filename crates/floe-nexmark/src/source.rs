//! The Nexmark stream as a Floe source.
//!
//! Like the official Flink source, the stream is cut into one split per
//! source subtask (unless the configuration fixes the number), each split
//! a contiguous range of event ids on its own event-time timeline. A
//! reader's position is, per split, the number of events it emitted: the
//! generator recomputes any event from its number, so a restore resumes
//! exactly where the checkpoint was taken, and a restore at another
//! parallelism hands whole splits (with their positions and timelines) to
//! the new subtasks.

use std::time::{Duration, Instant};

use floe_runtime::{
    NonRecoverable, Source, SourceReader, SourceStatus, SplitId, TaskInfo, WatermarkStrategy,
};

use crate::config::{NexmarkConfig, Split};
use crate::error::NexmarkError;
use crate::generator::NexmarkGenerator;
use crate::model::Event;

/// How far out of order events may be: the official suite declares
/// `WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND`.
pub const OUT_OF_ORDERNESS: Duration = Duration::from_secs(4);

/// The suite's event time: each event stamped with its `date_time`,
/// watermarks [`OUT_OF_ORDERNESS`] behind the newest event, per split.
pub fn watermark_strategy() -> WatermarkStrategy<Event> {
    WatermarkStrategy::for_bounded_out_of_orderness(OUT_OF_ORDERNESS)
        .with_timestamp_assigner(|e: &Event, _| e.date_time())
}

/// A source of the Nexmark stream (`Source<Event>`).
///
/// ```ignore
/// let source = NexmarkSource::new(NexmarkConfig::new(1_000_000))?;
/// let events = env.from_source_with_watermarks(source, watermark_strategy(), "nexmark");
/// ```
#[derive(Debug, Clone)]
pub struct NexmarkSource {
    generator: NexmarkGenerator,
    rate: Option<f64>,
}

impl NexmarkSource {
    /// The stream of `config` (validated here, so a bad one fails before
    /// the job starts).
    pub fn new(config: NexmarkConfig) -> Result<Self, NexmarkError> {
        Ok(Self::from_generator(NexmarkGenerator::new(config)?))
    }

    /// The stream of an existing generator.
    pub fn from_generator(generator: NexmarkGenerator) -> Self {
        NexmarkSource {
            generator,
            rate: None,
        }
    }

    /// Emits at most `events_per_second` events per second of wall-clock
    /// time, all subtasks together (by default, as fast as possible, as
    /// the suite's `max-emit-speed`). Event time is unaffected. Each split
    /// has an equal share of the rate and a subtask the sum of its
    /// splits', so the rate holds at any parallelism and after rescaling,
    /// with more subtasks than splits too, while the splits have events.
    pub fn with_rate(mut self, events_per_second: f64) -> Result<Self, NexmarkError> {
        if !(events_per_second.is_finite() && events_per_second > 0.0) {
            return Err(NexmarkError::Config {
                field: "rate",
                reason: format!(
                    "must be a positive number of events per second, got {events_per_second}"
                ),
            });
        }
        self.rate = Some(events_per_second);
        Ok(self)
    }

    /// The generator (to recompute the stream outside a job).
    pub fn generator(&self) -> &NexmarkGenerator {
        &self.generator
    }
}

impl Source<Event> for NexmarkSource {
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<Event>>> {
        Ok(Box::new(self.reader(info)))
    }
}

impl NexmarkSource {
    /// The reader of subtask `info.subtask_index`: the splits `s` with
    /// `s mod parallelism == index`.
    fn reader(&self, info: &TaskInfo) -> NexmarkReader {
        let generators = self
            .generator
            .config()
            .generators
            .unwrap_or(info.parallelism);
        let splits = self
            .generator
            .splits(generators)
            .into_iter()
            .filter(|s| s.index % info.parallelism == info.subtask_index)
            .map(|split| SplitPosition { split, next: 0 })
            .collect();
        let mut reader = NexmarkReader {
            generator: self.generator.clone(),
            splits,
            polled: 0,
            finished: Vec::new(),
            source_rate: self.rate,
            rate: None,
            started: None,
            emitted: 0,
        };
        reader.rate = reader.reader_rate();
        reader
    }
}

/// A split and how many of its events were emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SplitPosition {
    split: Split,
    next: u64,
}

impl SplitPosition {
    /// The split's name for its watermarks: its first id (unique in the
    /// stream).
    fn id(&self) -> SplitId {
        self.split.first_event_id
    }
}

struct NexmarkReader {
    generator: NexmarkGenerator,
    /// Splits with events left.
    splits: Vec<SplitPosition>,
    /// The split the last poll read.
    polled: SplitId,
    /// Splits read to their end since the last look.
    finished: Vec<SplitId>,
    /// The whole source's rate limit.
    source_rate: Option<f64>,
    /// This reader's: see [`NexmarkReader::reader_rate`].
    rate: Option<f64>,
    started: Option<Instant>,
    emitted: u64,
}

impl NexmarkReader {
    /// The source's rate times this reader's share of the splits (each
    /// split `1 / generators` of it), so the readers hold the source's
    /// rate together whichever splits each owns.
    fn reader_rate(&self) -> Option<f64> {
        let rate = self.source_rate?;
        let share: f64 = self
            .splits
            .iter()
            .map(|p| 1.0 / f64::from(p.split.generators))
            .sum();
        Some(rate * share)
    }
}

/// Version of the position format.
const POSITION_VERSION: u8 = 1;
/// Bytes per split in a position.
const SPLIT_BYTES: usize = 4 + 8 + 8 + 4 + 8;

/// A reader's position: a version byte, then per split its index,
/// first id, events, generators and next event, little-endian.
fn encode(splits: &[SplitPosition]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + splits.len() * SPLIT_BYTES);
    out.push(POSITION_VERSION);
    for p in splits {
        out.extend_from_slice(&p.split.index.to_le_bytes());
        out.extend_from_slice(&p.split.first_event_id.to_le_bytes());
        out.extend_from_slice(&p.split.events.to_le_bytes());
        out.extend_from_slice(&p.split.generators.to_le_bytes());
        out.extend_from_slice(&p.next.to_le_bytes());
    }
    out
}

fn decode(state: &[u8]) -> Result<Vec<SplitPosition>, NexmarkError> {
    let bad = |reason: String| NexmarkError::Position(reason);
    let (&version, rest) = state
        .split_first()
        .ok_or_else(|| bad("empty position".into()))?;
    if version != POSITION_VERSION {
        return Err(bad(format!(
            "unknown position version {version} (this build reads {POSITION_VERSION})"
        )));
    }
    if rest.len() % SPLIT_BYTES != 0 {
        return Err(bad(format!(
            "{} bytes is not a whole number of {SPLIT_BYTES}-byte splits",
            rest.len()
        )));
    }
    rest.chunks_exact(SPLIT_BYTES)
        .map(|c| {
            let u32_at = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().expect("4 bytes"));
            let u64_at = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
            let p = SplitPosition {
                split: Split {
                    index: u32_at(0),
                    first_event_id: u64_at(4),
                    events: u64_at(12),
                    generators: u32_at(20),
                },
                next: u64_at(24),
            };
            if p.next > p.split.events || p.split.generators == 0 {
                return Err(bad(format!("inconsistent split {p:?}")));
            }
            Ok(p)
        })
        .collect()
}

impl SourceReader<Event> for NexmarkReader {
    fn current_split(&self) -> SplitId {
        self.polled
    }

    fn finished_splits(&mut self, out: &mut Vec<SplitId>) {
        out.append(&mut self.finished);
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(encode(&self.splits))
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.restore_splits(vec![state.to_vec()])
    }

    fn restore_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut splits = Vec::new();
        for state in &states {
            // A position that does not decode never will: no restart helps.
            splits.extend(decode(state).map_err(NonRecoverable::wrap)?);
        }
        splits.retain(|p| p.next < p.split.events);
        self.splits = splits;
        self.rate = self.reader_rate();
        Ok(())
    }

    fn poll_next(&mut self, out: &mut Vec<Event>, max: usize) -> anyhow::Result<SourceStatus> {
        // The split furthest behind in event time (exactly: event number
        // times generators, in units of 1/tps), so that the splits a
        // reader took over after rescaling advance together (each holds
        // back the watermark while it is behind).
        let Some(i) = (0..self.splits.len()).min_by_key(|&i| {
            let p = &self.splits[i];
            (
                u128::from(p.next) * u128::from(p.split.generators),
                p.split.index,
            )
        }) else {
            return Ok(SourceStatus::Finished);
        };
        let mut n = max.max(1) as u64;
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let allowed = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
            if allowed <= self.emitted {
                let wait = (self.emitted + 1) as f64 / rate - started.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.05)));
                return Ok(SourceStatus::NothingAvailable);
            }
            n = n.min(allowed - self.emitted);
        }
        let p = &mut self.splits[i];
        let end = p.split.events.min(p.next + n);
        out.extend((p.next..end).map(|k| self.generator.event(&p.split, k)));
        self.emitted += end - p.next;
        p.next = end;
        self.polled = p.id();
        if p.next == p.split.events {
            self.finished.push(p.id());
            self.splits.remove(i);
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

    fn info(i: u32, p: u32) -> TaskInfo {
        TaskInfo {
            job_id: floe_core::JobId::from_u128(1),
            job_name: "test".into(),
            operator_name: "nexmark".into(),
            uid: "nexmark".into(),
            subtask_index: i,
            parallelism: p,
            max_parallelism: 128,
        }
    }

    fn drain(r: &mut dyn SourceReader<Event>, max: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while r.poll_next(&mut out, max).unwrap() != SourceStatus::Finished {}
        out
    }

    #[test]
    fn position_format_is_pinned() {
        let splits = [SplitPosition {
            split: Split {
                index: 1,
                first_event_id: 501,
                events: 500,
                generators: 2,
            },
            next: 7,
        }];
        let bytes = encode(&splits);
        assert_eq!(
            bytes,
            [
                1, 1, 0, 0, 0, 245, 1, 0, 0, 0, 0, 0, 0, 244, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 7,
                0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(decode(&bytes).unwrap(), splits);
        assert!(decode(&[]).is_err());
        assert!(decode(&[2]).is_err());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn readers_restored_at_any_parallelism_finish_every_split_once() {
        let source = NexmarkSource::new(NexmarkConfig::new(3_000)).unwrap();
        let expected: Vec<Event> = source.generator().events(2).collect();
        // Two readers read part of their split, then their positions are
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
                all.extend(drain(r.as_mut(), 64));
            }
            let key = |e: &Event| format!("{e:?}");
            all.sort_by_key(key);
            let mut want = expected.clone();
            want.sort_by_key(key);
            assert!(all == want, "new parallelism {new_p}");
        }
    }

    #[test]
    fn splits_taken_over_advance_together() {
        let source = NexmarkSource::new(NexmarkConfig::new(2_000)).unwrap();
        let positions: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                let mut r = source.create_reader(&info(i, 2)).unwrap();
                r.snapshot_state().unwrap()
            })
            .collect();
        let mut r = source.create_reader(&info(0, 1)).unwrap();
        r.restore_splits(positions).unwrap();
        // Polls alternate between the two splits (equal timelines).
        let mut order = Vec::new();
        for _ in 0..4 {
            let mut out = Vec::new();
            r.poll_next(&mut out, 10).unwrap();
            order.push(r.current_split());
        }
        assert_eq!(order, [1, 1001, 1, 1001]);
    }

    /// The readers' rates add up to the source's at any parallelism, with
    /// more splits than subtasks too, and after rescaling from 2 to 3
    /// subtasks (one reader without a split) and from 3 splits at 2 to 1.
    #[test]
    fn reader_rates_add_up_to_the_source_rate() {
        // Each reader's rate at parallelism p, restored from `positions`
        // as the runtime hands them out (old subtask s to new s mod p).
        let rates = |source: &NexmarkSource, positions: Option<&[Vec<u8>]>, p: u32| {
            (0..p)
                .map(|j| {
                    let mut r = source.reader(&info(j, p));
                    if let Some(positions) = positions {
                        let mine = (0..positions.len())
                            .filter(|s| *s as u32 % p == j)
                            .map(|s| positions[s].clone())
                            .collect();
                        r.restore_splits(mine).unwrap();
                    }
                    r.rate.unwrap()
                })
                .collect::<Vec<f64>>()
        };
        let positions = |source: &NexmarkSource, p: u32| {
            (0..p)
                .map(|i| {
                    let mut r = source.reader(&info(i, p));
                    r.poll_next(&mut Vec::new(), 10 * (i as usize + 1)).unwrap();
                    r.snapshot_state().unwrap()
                })
                .collect::<Vec<Vec<u8>>>()
        };
        let close = |got: Vec<f64>, want: &[f64]| {
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-9, "{got:?}, not {want:?}");
            }
        };
        let source = NexmarkSource::new(NexmarkConfig::new(3_000))
            .unwrap()
            .with_rate(600.0)
            .unwrap();
        close(rates(&source, None, 2), &[300.0, 300.0]);
        let at_2 = positions(&source, 2);
        close(rates(&source, Some(&at_2), 3), &[300.0, 300.0, 0.0]);

        let three_splits = NexmarkSource::new(NexmarkConfig::new(3_000).with_generators(3))
            .unwrap()
            .with_rate(600.0)
            .unwrap();
        close(rates(&three_splits, None, 2), &[400.0, 200.0]);
        let at_2 = positions(&three_splits, 2);
        close(rates(&three_splits, Some(&at_2), 1), &[600.0]);
    }

    #[test]
    fn a_rate_paces_emission() {
        let source = NexmarkSource::new(NexmarkConfig::new(100))
            .unwrap()
            .with_rate(1_000.0)
            .unwrap();
        let t = Instant::now();
        let mut r = source.create_reader(&info(0, 1)).unwrap();
        assert_eq!(drain(r.as_mut(), 1_000).len(), 100);
        assert!(
            t.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t.elapsed()
        );
        assert!(
            NexmarkSource::new(NexmarkConfig::new(1))
                .unwrap()
                .with_rate(0.0)
                .is_err()
        );
    }
}
