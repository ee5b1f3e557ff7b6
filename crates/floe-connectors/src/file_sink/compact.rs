//! Compaction of small part files (Flink's `FileSink.enableCompact`): when
//! a bucket's rolled files are merged ([`FileCompactStrategy`]), how
//! ([`FileCompactor`]: [`ConcatFileCompactor`], [`IdenticalFileCompactor`],
//! [`RecordWiseFileCompactor`]), the trigger that cuts a bucket's waiting
//! files into compaction units, and the threads that run them.
//!
//! The sink itself (`file_sink.rs`) records the units in its checkpoints
//! and publishes their results; nothing here touches the output directory
//! except [`FileCompactor::compact`], which writes into the file it is
//! given.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;

use crate::format::LineFormat;

/// When a file sink compacts its part files (Flink's `FileCompactStrategy`):
/// a bucket's rolled files wait, hidden, until together they hold
/// [`size_threshold`](FileCompactStrategyBuilder::size_threshold) bytes, or
/// until [`enable_compaction_on_checkpoint(n)`](FileCompactStrategyBuilder::enable_compaction_on_checkpoint)
/// checkpoints have passed since the first of them was recorded, whichever
/// comes first; then they are merged into one part file. Built with
/// [`FileCompactStrategy::builder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCompactStrategy {
    size_threshold: Option<u64>,
    num_checkpoints_before_compaction: Option<u32>,
    num_compact_threads: usize,
}

impl FileCompactStrategy {
    /// A builder with no trigger yet (Flink's
    /// `FileCompactStrategy.Builder.newBuilder()`); set at least one.
    pub fn builder() -> FileCompactStrategyBuilder {
        FileCompactStrategyBuilder::default()
    }

    /// The size trigger in bytes, if set.
    pub fn size_threshold(&self) -> Option<u64> {
        self.size_threshold
    }

    /// The checkpoint trigger, if set (Flink's
    /// `getNumCheckpointsBeforeCompaction`).
    pub fn num_checkpoints_before_compaction(&self) -> Option<u32> {
        self.num_checkpoints_before_compaction
    }

    /// Threads per sink subtask that run compactions (default 1).
    pub fn num_compact_threads(&self) -> usize {
        self.num_compact_threads
    }
}

/// Builds a [`FileCompactStrategy`]; `build` checks it.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileCompactStrategyBuilder {
    size_threshold: Option<u64>,
    num_checkpoints_before_compaction: Option<u32>,
    num_compact_threads: Option<usize>,
}

impl FileCompactStrategyBuilder {
    /// Compacts a bucket's waiting files once they hold `bytes` together
    /// (Flink's `setSizeThreshold`); at least 1. Each compacted file holds
    /// at least `bytes`, except the last ones of a bucket that the
    /// checkpoint trigger or the end of the input compacts.
    pub fn size_threshold(mut self, bytes: u64) -> Self {
        self.size_threshold = Some(bytes);
        self
    }

    /// Compacts a bucket's waiting files at the `n`-th checkpoint since
    /// the first of them was recorded (Flink's
    /// `enableCompactionOnCheckpoint`); at least 1. It bounds how long
    /// output stays invisible: `n` checkpoint intervals at most.
    pub fn enable_compaction_on_checkpoint(mut self, n: u32) -> Self {
        self.num_checkpoints_before_compaction = Some(n);
        self
    }

    /// Threads per sink subtask that run compactions, so that writing goes
    /// on meanwhile (Flink's `setNumCompactThreads`); at least 1, default 1.
    pub fn num_compact_threads(mut self, n: usize) -> Self {
        self.num_compact_threads = Some(n);
        self
    }

    /// The strategy, or which option is wrong.
    pub fn build(self) -> Result<FileCompactStrategy, FileCompactStrategyError> {
        if self.size_threshold == Some(0) {
            return Err(FileCompactStrategyError::ZeroSizeThreshold);
        }
        if self.num_checkpoints_before_compaction == Some(0) {
            return Err(FileCompactStrategyError::ZeroCheckpoints);
        }
        if self.num_compact_threads == Some(0) {
            return Err(FileCompactStrategyError::ZeroThreads);
        }
        if self.size_threshold.is_none() && self.num_checkpoints_before_compaction.is_none() {
            return Err(FileCompactStrategyError::NoTrigger);
        }
        Ok(FileCompactStrategy {
            size_threshold: self.size_threshold,
            num_checkpoints_before_compaction: self.num_checkpoints_before_compaction,
            num_compact_threads: self.num_compact_threads.unwrap_or(1),
        })
    }
}

/// Why a [`FileCompactStrategy`] was refused; each names its option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileCompactStrategyError {
    /// `size_threshold(0)`.
    #[error(
        "FileCompactStrategy: size_threshold must be at least 1 byte, got 0 (leave it unset for no size trigger)"
    )]
    ZeroSizeThreshold,
    /// `enable_compaction_on_checkpoint(0)`.
    #[error(
        "FileCompactStrategy: enable_compaction_on_checkpoint must be at least 1 checkpoint, got 0"
    )]
    ZeroCheckpoints,
    /// `num_compact_threads(0)`.
    #[error("FileCompactStrategy: num_compact_threads must be at least 1, got 0")]
    ZeroThreads,
    /// Neither trigger.
    #[error(
        "FileCompactStrategy: no trigger configured: set size_threshold(bytes), enable_compaction_on_checkpoint(n), or both"
    )]
    NoTrigger,
}

/// Concatenates the files, optionally with a delimiter after each (Flink's
/// `ConcatFileCompactor`). Part files end every record with a newline, so
/// the concatenation is their records in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConcatFileCompactor {
    file_delimiter: Option<Vec<u8>>,
}

impl ConcatFileCompactor {
    /// Plain concatenation.
    pub fn new() -> Self {
        ConcatFileCompactor::default()
    }

    /// Concatenation with `delimiter` written after each file.
    pub fn with_file_delimiter(delimiter: impl Into<Vec<u8>>) -> Self {
        ConcatFileCompactor {
            file_delimiter: Some(delimiter.into()),
        }
    }
}

/// Copies exactly one file as it is (Flink's `IdenticalFileCompactor`):
/// every file is its own compaction unit, so it only delays visibility to
/// the strategy's triggers; a copy of one file is made by committing it
/// under its own name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdenticalFileCompactor;

impl IdenticalFileCompactor {
    /// The compactor.
    pub fn new() -> Self {
        IdenticalFileCompactor
    }
}

type DecodeFn<T> = dyn Fn(&str) -> anyhow::Result<T> + Send + Sync;

/// Reads every line of the files back into a record with a decoder and
/// writes it again with the sink's [`LineFormat`] (Flink's
/// `RecordWiseFileCompactor` over a `DecoderBasedReader`): for formats
/// whose records must be rewritten rather than copied. A line the decoder
/// refuses fails the compaction (and the job), naming the file.
pub struct RecordWiseFileCompactor<T> {
    decoder: Arc<DecodeFn<T>>,
}

impl<T> Clone for RecordWiseFileCompactor<T> {
    fn clone(&self) -> Self {
        RecordWiseFileCompactor {
            decoder: self.decoder.clone(),
        }
    }
}

impl<T> RecordWiseFileCompactor<T> {
    /// A compactor decoding each line (without its newline) with `decoder`.
    pub fn new(decoder: impl Fn(&str) -> anyhow::Result<T> + Send + Sync + 'static) -> Self {
        RecordWiseFileCompactor {
            decoder: Arc::new(decoder),
        }
    }
}

impl<T> std::fmt::Debug for RecordWiseFileCompactor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordWiseFileCompactor")
    }
}

/// How a compaction unit's files become one (Flink's `FileCompactor`).
#[derive(Debug)]
pub enum FileCompactor<T> {
    /// [`ConcatFileCompactor`].
    Concat(ConcatFileCompactor),
    /// [`IdenticalFileCompactor`].
    Identical(IdenticalFileCompactor),
    /// [`RecordWiseFileCompactor`].
    RecordWise(RecordWiseFileCompactor<T>),
}

impl<T> Clone for FileCompactor<T> {
    fn clone(&self) -> Self {
        match self {
            FileCompactor::Concat(c) => FileCompactor::Concat(c.clone()),
            FileCompactor::Identical(c) => FileCompactor::Identical(*c),
            FileCompactor::RecordWise(c) => FileCompactor::RecordWise(c.clone()),
        }
    }
}

impl<T> From<ConcatFileCompactor> for FileCompactor<T> {
    fn from(c: ConcatFileCompactor) -> Self {
        FileCompactor::Concat(c)
    }
}

impl<T> From<IdenticalFileCompactor> for FileCompactor<T> {
    fn from(c: IdenticalFileCompactor) -> Self {
        FileCompactor::Identical(c)
    }
}

impl<T> From<RecordWiseFileCompactor<T>> for FileCompactor<T> {
    fn from(c: RecordWiseFileCompactor<T>) -> Self {
        FileCompactor::RecordWise(c)
    }
}

impl<T> FileCompactor<T> {
    /// The most files one compaction unit may hold.
    pub fn max_inputs(&self) -> usize {
        match self {
            FileCompactor::Identical(_) => 1,
            _ => usize::MAX,
        }
    }

    /// True when compacting a single file reproduces it byte for byte, so
    /// a unit of one file is committed as it is instead of copied.
    pub fn keeps_a_single_file(&self) -> bool {
        match self {
            FileCompactor::Concat(c) => c.file_delimiter.is_none(),
            FileCompactor::Identical(_) => true,
            FileCompactor::RecordWise(_) => false,
        }
    }

    /// Writes the compaction of `inputs`, in order, into `out` (records
    /// rewritten with `format` by a record-wise compactor). Does not sync.
    pub fn compact(
        &self,
        inputs: &[PathBuf],
        format: &LineFormat<T>,
        out: &mut File,
    ) -> anyhow::Result<()> {
        match self {
            FileCompactor::Identical(_) if inputs.len() != 1 => anyhow::bail!(
                "IdenticalFileCompactor copies exactly one file, not {}",
                inputs.len()
            ),
            FileCompactor::Concat(ConcatFileCompactor { file_delimiter }) => {
                for input in inputs {
                    copy_file(input, out)?;
                    if let Some(d) = file_delimiter {
                        out.write_all(d).context("cannot write a compacted file")?;
                    }
                }
                Ok(())
            }
            FileCompactor::Identical(_) => copy_file(&inputs[0], out),
            FileCompactor::RecordWise(RecordWiseFileCompactor { decoder }) => {
                let mut w = BufWriter::with_capacity(64 * 1024, out);
                let (mut raw, mut line) = (Vec::new(), String::new());
                for input in inputs {
                    let f = File::open(input)
                        .with_context(|| format!("cannot open {}", input.display()))?;
                    let mut r = BufReader::with_capacity(64 * 1024, f);
                    let mut number = 0u64;
                    loop {
                        raw.clear();
                        let n = r
                            .read_until(b'\n', &mut raw)
                            .with_context(|| format!("cannot read {}", input.display()))?;
                        if n == 0 {
                            break;
                        }
                        number += 1;
                        if raw.last() == Some(&b'\n') {
                            raw.pop();
                        }
                        let text = std::str::from_utf8(&raw).with_context(|| {
                            format!("line {number} of {} is not UTF-8", input.display())
                        })?;
                        let record = decoder(text).with_context(|| {
                            format!("cannot decode line {number} of {}", input.display())
                        })?;
                        line.clear();
                        format.format(&record, &mut line);
                        line.push('\n');
                        w.write_all(line.as_bytes())
                            .context("cannot write a compacted file")?;
                    }
                }
                w.flush().context("cannot write a compacted file")
            }
        }
    }
}

/// Appends `input` to `out` (`copy_file_range` between two files).
fn copy_file(input: &Path, out: &mut File) -> anyhow::Result<()> {
    let mut f = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    std::io::copy(&mut f, out)
        .with_context(|| format!("cannot copy {} into a compacted file", input.display()))?;
    Ok(())
}

/// One bucket's files waiting for compaction, in the order they rolled,
/// and the checkpoint at which its checkpoint trigger started counting
/// (Flink's `CompactTrigger`, one per bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiting<F> {
    pub(crate) files: Vec<F>,
    pub(crate) since_checkpoint: u64,
}

impl<F> Waiting<F> {
    /// Appends files rolled before checkpoint `checkpoint_id`; an empty
    /// bucket's trigger starts counting at it.
    pub(crate) fn add(&mut self, files: impl IntoIterator<Item = F>, checkpoint_id: u64) {
        let was_empty = self.files.is_empty();
        self.files.extend(files);
        if was_empty && !self.files.is_empty() {
            self.since_checkpoint = checkpoint_id;
        }
    }

    /// Cuts the waiting files into compaction units at checkpoint
    /// `checkpoint_id`, as Flink's trigger fires: in order, a unit ends
    /// where the files since the last cut reach the size threshold; what
    /// is left goes too once `n` checkpoints have counted (this one the
    /// `n`-th) or at the end of the input, and otherwise waits. Units are
    /// split to at most `max_inputs` files.
    pub(crate) fn cut(
        &mut self,
        strategy: &FileCompactStrategy,
        size: impl Fn(&F) -> u64,
        checkpoint_id: u64,
        end_of_input: bool,
        max_inputs: usize,
    ) -> Vec<Vec<F>> {
        let mut units: Vec<Vec<F>> = Vec::new();
        if let Some(threshold) = strategy.size_threshold {
            let mut unit = Vec::new();
            let mut bytes = 0u64;
            for f in std::mem::take(&mut self.files) {
                bytes = bytes.saturating_add(size(&f));
                unit.push(f);
                if bytes >= threshold {
                    units.push(std::mem::take(&mut unit));
                    bytes = 0;
                }
            }
            if !units.is_empty() {
                // The files after the last cut arrived now (before, the
                // bucket held less than the threshold): they start a new
                // count.
                self.since_checkpoint = checkpoint_id;
            }
            self.files = unit;
        }
        let due = strategy.num_checkpoints_before_compaction.is_some_and(|n| {
            checkpoint_id.saturating_sub(self.since_checkpoint) + 1 >= u64::from(n)
        });
        if !self.files.is_empty() && (due || end_of_input) {
            units.push(std::mem::take(&mut self.files));
        }
        if max_inputs == usize::MAX {
            return units;
        }
        let mut split = Vec::with_capacity(units.len());
        for unit in units {
            let mut it = unit.into_iter().peekable();
            while it.peek().is_some() {
                split.push(it.by_ref().take(max_inputs.max(1)).collect());
            }
        }
        split
    }
}

impl<F> Default for Waiting<F> {
    fn default() -> Self {
        Waiting {
            files: Vec::new(),
            since_checkpoint: 0,
        }
    }
}

type Work<J, R> = Arc<dyn Fn(J) -> anyhow::Result<R> + Send + Sync>;

/// What a job of a [`CompactService`] came to.
pub(crate) type Done<R> = (u64, anyhow::Result<R>);

/// The threads that run compactions off the task thread (Flink's
/// `CompactService`): jobs in, `(id, result)` out, in any order (a job
/// that panics is an error). Dropping it lets every queued job finish and
/// joins the threads, so no compaction of a finished or failed subtask
/// runs on beside its successor.
pub(crate) struct CompactService<J, R> {
    jobs: Option<Sender<(u64, J)>>,
    results: Receiver<Done<R>>,
    threads: Vec<JoinHandle<()>>,
    outstanding: usize,
}

impl<J: Send + 'static, R: Send + 'static> CompactService<J, R> {
    /// `threads` threads named `name-<i>` running `work`.
    pub(crate) fn start(
        name: &str,
        threads: usize,
        work: impl Fn(J) -> anyhow::Result<R> + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let work: Work<J, R> = Arc::new(work);
        let (jobs, inbox) = std::sync::mpsc::channel::<(u64, J)>();
        let inbox = Arc::new(Mutex::new(inbox));
        let (done, results) = std::sync::mpsc::channel();
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let (inbox, done, work) = (inbox.clone(), done.clone(), work.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        loop {
                            let next = inbox.lock().map(|rx| rx.recv());
                            let Ok(Ok((id, job))) = next else { break };
                            let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(job)))
                                .unwrap_or_else(|panic| {
                                    Err(anyhow::anyhow!(
                                        "a compaction panicked: {}",
                                        panic_message(panic.as_ref())
                                    ))
                                });
                            if done.send((id, result)).is_err() {
                                break;
                            }
                        }
                    })?,
            );
        }
        Ok(CompactService {
            jobs: Some(jobs),
            results,
            threads: handles,
            outstanding: 0,
        })
    }

    /// Queues job `id`.
    pub(crate) fn submit(&mut self, id: u64, job: J) {
        if let Some(jobs) = &self.jobs
            && jobs.send((id, job)).is_ok()
        {
            self.outstanding += 1;
        }
    }

    /// Results that are ready, without waiting.
    pub(crate) fn ready(&mut self) -> Vec<Done<R>> {
        let out: Vec<Done<R>> = self.results.try_iter().collect();
        self.outstanding -= out.len();
        out
    }

    /// Every outstanding result, waiting for them.
    pub(crate) fn wait_all(&mut self) -> Vec<Done<R>> {
        let mut out = Vec::with_capacity(self.outstanding);
        while self.outstanding > 0 {
            match self.results.recv() {
                Ok(r) => {
                    self.outstanding -= 1;
                    out.push(r);
                }
                Err(_) => break,
            }
        }
        out
    }
}

/// The text a panic carried.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl<J, R> Drop for CompactService<J, R> {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(size: Option<u64>, checkpoints: Option<u32>) -> FileCompactStrategy {
        let mut b = FileCompactStrategy::builder();
        if let Some(s) = size {
            b = b.size_threshold(s);
        }
        if let Some(n) = checkpoints {
            b = b.enable_compaction_on_checkpoint(n);
        }
        b.build().unwrap()
    }

    #[test]
    fn invalid_strategies_name_their_option() {
        let e = |b: FileCompactStrategyBuilder| b.build().unwrap_err().to_string();
        assert!(e(FileCompactStrategy::builder()).contains("no trigger"));
        assert!(e(FileCompactStrategy::builder().size_threshold(0)).contains("size_threshold"));
        assert!(
            e(FileCompactStrategy::builder()
                .size_threshold(0)
                .enable_compaction_on_checkpoint(3))
            .contains("size_threshold")
        );
        assert!(
            e(FileCompactStrategy::builder().enable_compaction_on_checkpoint(0))
                .contains("enable_compaction_on_checkpoint")
        );
        assert!(
            e(FileCompactStrategy::builder()
                .size_threshold(1)
                .num_compact_threads(0))
            .contains("num_compact_threads")
        );
        let s = strategy(Some(10), None);
        assert_eq!(
            (
                s.size_threshold(),
                s.num_checkpoints_before_compaction(),
                s.num_compact_threads()
            ),
            (Some(10), None, 1)
        );
        let s = FileCompactStrategy::builder()
            .enable_compaction_on_checkpoint(4)
            .num_compact_threads(3)
            .build()
            .unwrap();
        assert_eq!(
            (s.size_threshold(), s.num_checkpoints_before_compaction()),
            (None, Some(4))
        );
        assert_eq!(s.num_compact_threads(), 3);
    }

    /// Files are their sizes; cuts at checkpoint `id`.
    fn cut(w: &mut Waiting<u64>, s: &FileCompactStrategy, id: u64, end: bool) -> Vec<Vec<u64>> {
        w.cut(s, |f| *f, id, end, usize::MAX)
    }

    #[test]
    fn the_size_trigger_cuts_units_where_they_reach_the_threshold() {
        let s = strategy(Some(10), None);
        let mut w = Waiting::default();
        w.add([4, 4], 1);
        assert!(cut(&mut w, &s, 1, false).is_empty(), "8 bytes wait");
        w.add([1, 7, 12, 3], 2);
        assert_eq!(cut(&mut w, &s, 2, false), [vec![4, 4, 1, 7], vec![12]]);
        assert_eq!(w.files, [3]);
        assert_eq!(w.since_checkpoint, 2);
        // Without a checkpoint trigger, the rest waits for more data or the
        // end of the input.
        assert!(cut(&mut w, &s, 50, false).is_empty());
        assert_eq!(cut(&mut w, &s, 51, true), [vec![3]]);
        assert!(w.files.is_empty());
    }

    #[test]
    fn the_checkpoint_trigger_fires_at_the_nth_checkpoint_since_the_first_file() {
        let s = strategy(None, Some(3));
        let mut w = Waiting::default();
        assert!(cut(&mut w, &s, 1, false).is_empty(), "nothing waits");
        w.add([1], 2);
        assert!(cut(&mut w, &s, 2, false).is_empty());
        w.add([2], 3);
        assert!(cut(&mut w, &s, 3, false).is_empty());
        // Checkpoint 4 is the third since the first file (recorded by 2).
        w.add([3], 4);
        assert_eq!(cut(&mut w, &s, 4, false), [vec![1, 2, 3]]);
        // The next file starts a new count.
        w.add([5], 6);
        assert!(cut(&mut w, &s, 7, false).is_empty());
        assert_eq!(cut(&mut w, &s, 8, false), [vec![5]]);
        // Every checkpoint: each one's files.
        let s = strategy(None, Some(1));
        w.add([6, 7], 9);
        assert_eq!(cut(&mut w, &s, 9, false), [vec![6, 7]]);
    }

    #[test]
    fn both_triggers_together_and_identical_units_of_one() {
        let s = strategy(Some(10), Some(2));
        let mut w = Waiting::default();
        w.add([6, 6, 3], 5);
        assert_eq!(cut(&mut w, &s, 5, false), [vec![6, 6]]);
        assert_eq!(w.since_checkpoint, 5);
        assert_eq!(cut(&mut w, &s, 6, false), [vec![3]], "second checkpoint");
        w.add([1, 2, 3], 7);
        let units = w.cut(&s, |f| *f, 7, true, 1);
        assert_eq!(units, [vec![1], vec![2], vec![3]]);
    }

    fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn compact(c: &FileCompactor<u32>, inputs: &[PathBuf], out: &std::path::Path) -> String {
        let mut f = File::create(out).unwrap();
        c.compact(inputs, &LineFormat::display(), &mut f).unwrap();
        drop(f);
        std::fs::read_to_string(out).unwrap()
    }

    #[test]
    fn compactors_concatenate_copy_or_rewrite_records() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(tmp.path(), "a", "1\n2\n");
        let b = write(tmp.path(), "b", "3\n");
        let out = tmp.path().join("out");
        let concat = FileCompactor::from(ConcatFileCompactor::new());
        assert_eq!(compact(&concat, &[a.clone(), b.clone()], &out), "1\n2\n3\n");
        assert!(concat.keeps_a_single_file());
        let delimited = FileCompactor::from(ConcatFileCompactor::with_file_delimiter("--\n"));
        assert_eq!(
            compact(&delimited, &[a.clone(), b.clone()], &out),
            "1\n2\n--\n3\n--\n"
        );
        assert!(!delimited.keeps_a_single_file());
        let identical = FileCompactor::<u32>::from(IdenticalFileCompactor::new());
        assert_eq!(compact(&identical, std::slice::from_ref(&b), &out), "3\n");
        assert_eq!(identical.max_inputs(), 1);
        let mut f = File::create(&out).unwrap();
        let err = identical
            .compact(&[a.clone(), b.clone()], &LineFormat::display(), &mut f)
            .unwrap_err();
        assert!(err.to_string().contains("exactly one file"), "{err:#}");
        // Record-wise: each line decoded, then written with the format.
        let doubled = FileCompactor::from(RecordWiseFileCompactor::new(|l: &str| {
            Ok(l.parse::<u32>()? * 2)
        }));
        assert_eq!(compact(&doubled, &[a.clone(), b], &out), "2\n4\n6\n");
        let bad = write(tmp.path(), "bad", "1\nx\n");
        let mut f = File::create(&out).unwrap();
        let err = doubled
            .compact(&[a, bad], &LineFormat::display(), &mut f)
            .unwrap_err();
        assert!(format!("{err:#}").contains("line 2 of"), "{err:#}");
        let missing = tmp.path().join("missing");
        let err = concat.compact(&[missing], &LineFormat::display(), &mut f);
        assert!(err.is_err());
    }

    #[test]
    fn the_service_runs_every_job_reports_panics_and_drop_waits_for_them() {
        let ran = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = ran.clone();
        let mut s = CompactService::start("test-compact", 2, move |n: u64| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            r.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            assert!(n != 3, "three");
            Ok(n * 10)
        })
        .unwrap();
        for i in 1..=4 {
            s.submit(i, i);
        }
        let mut done: Vec<(u64, Result<u64, String>)> = s
            .wait_all()
            .into_iter()
            .map(|(id, r)| (id, r.map_err(|e| e.to_string())))
            .collect();
        done.sort_unstable();
        assert_eq!(
            done,
            [
                (1, Ok(10)),
                (2, Ok(20)),
                (3, Err("a compaction panicked: three".into())),
                (4, Ok(40))
            ]
        );
        assert!(s.ready().is_empty());
        for i in 5..=8 {
            s.submit(i, i);
        }
        drop(s);
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 36);
    }
}
