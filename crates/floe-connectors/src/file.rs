//! Text files: a line source and a line sink.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use floe_runtime::{NonRecoverable, SinkWriter, Source, SourceReader, SourceStatus, TaskInfo};

use crate::format::LineFormat;

/// Reads text files line by line (Flink's `readTextFile`). Files are dealt to
/// subtasks round robin; a directory stands for the files in it, in name
/// order. Each reader knows its position (file and byte offset), which a
/// checkpoint records so recovery can resume exactly there.
///
/// In a directory, as in Flink's file sources, names starting with `.` or
/// `_` are hidden and skipped: a file sink's in-progress and pending part
/// files, `_SUCCESS` markers, editors' temporary files. Like
/// `readTextFile` (and unlike Flink's newer `FileSource`) subdirectories are
/// not read; they are skipped with a warning, and so are links that lead
/// nowhere. A path named explicitly is read whatever its name. Positions
/// name their file, so a restore resumes in the very file it was reading
/// or fails naming it; positions written before hidden names were skipped
/// (which counted them) are read by the listing they were taken against.
#[derive(Debug, Clone)]
pub struct TextFileSource {
    paths: Vec<PathBuf>,
}

impl TextFileSource {
    /// A source over `paths` (files or directories).
    pub fn new<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Self {
        TextFileSource {
            paths: paths
                .into_iter()
                .map(|p| p.as_ref().to_path_buf())
                .collect(),
        }
    }

    /// Every input file, directories expanded; a missing or unreadable path is
    /// an error naming it.
    pub fn files(&self) -> anyhow::Result<Vec<PathBuf>> {
        self.listing(false)
    }

    /// The input files; `with_hidden` lists hidden names too, as Floe did
    /// before it skipped them: what positions of that format index.
    fn listing(&self, with_hidden: bool) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for p in &self.paths {
            let meta = std::fs::metadata(p)
                .with_context(|| format!("cannot read input path {}", p.display()))?;
            if meta.is_dir() {
                files.extend(list_input_dir(p, with_hidden)?);
            } else {
                files.push(p.clone());
            }
        }
        Ok(files)
    }
}

/// Whether a directory entry is hidden from the source (Flink's default
/// file filter: a leading `.` or `_`).
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    matches!(name.as_encoded_bytes().first(), Some(b'.' | b'_'))
}

/// The input files of directory `dir`, in name order: visible regular
/// files, and links to them. Subdirectories and broken links are skipped
/// with a warning, hidden names silently (unless `with_hidden`).
fn list_input_dir(dir: &Path, with_hidden: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let listing = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list input directory {}", dir.display()))?;
    for entry in listing {
        let entry =
            entry.with_context(|| format!("cannot list input directory {}", dir.display()))?;
        let path = entry.path();
        if !with_hidden && is_hidden(&entry.file_name()) {
            tracing::debug!(file = %path.display(), "skipping a hidden input file");
            continue;
        }
        // Follows links: a link to a file is read, one to nowhere is not.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(m) if m.is_dir() => tracing::warn!(
                directory = %path.display(),
                "skipping a subdirectory of the input directory (subdirectories are not read)"
            ),
            Ok(_) => tracing::warn!(
                file = %path.display(),
                "skipping an input entry that is not a regular file"
            ),
            Err(e) if entry.file_type().is_ok_and(|t| t.is_symlink()) => tracing::warn!(
                link = %path.display(),
                "skipping a broken link in the input directory: {e}"
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read input file {}", path.display()));
            }
        }
    }
    files.sort();
    Ok(files)
}

impl Source<String> for TextFileSource {
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<String>>> {
        let files = self.files()?;
        let splits = (0..files.len())
            .filter(|i| *i as u32 % info.parallelism == info.subtask_index)
            .map(|i| (i, 0))
            .collect();
        Ok(Box::new(TextFileReader {
            source: self.clone(),
            files,
            splits,
            reader: None,
            line: Vec::new(),
            polled: 0,
            finished: Vec::new(),
        }))
    }
}

/// One subtask's reader over its splits: the files dealt to it, or after a
/// rescaling restore the remaining files of the old subtasks it took over.
struct TextFileReader {
    /// The source, for the listing that old positions index.
    source: TextFileSource,
    /// Every input file; splits refer to them by index.
    files: Vec<PathBuf>,
    /// Remaining splits in reading order: (file index, byte offset of the
    /// next line). The first one is being read.
    splits: Vec<(usize, u64)>,
    /// The first split's open file, positioned at its offset.
    reader: Option<BufReader<File>>,
    line: Vec<u8>,
    /// The file (split) the last poll read from; a poll never crosses
    /// from one file to the next, so that event time is tracked per file.
    polled: usize,
    /// Files read to their end since the last look.
    finished: Vec<usize>,
}

impl TextFileReader {
    fn open_current(&mut self) -> anyhow::Result<()> {
        let (index, resume_at) = self.splits[0];
        let path = &self.files[index];
        let mut f = File::open(path)
            .with_context(|| format!("cannot open input file {}", path.display()))?;
        if resume_at > 0 {
            use std::io::{Seek, SeekFrom};
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if resume_at > len {
                // The input changed since the snapshot: no restart helps.
                return Err(NonRecoverable::new(format!(
                    "cannot resume input file {} at byte {resume_at}: it has only {len} bytes (was it changed?)",
                    path.display()
                ))
                .into());
            }
            f.seek(SeekFrom::Start(resume_at))
                .with_context(|| format!("cannot seek in input file {}", path.display()))?;
        }
        self.reader = Some(BufReader::with_capacity(256 * 1024, f));
        Ok(())
    }

    /// Positions name files by path (see `snapshot_state`), resolved
    /// against this source's own input files: a snapshot cannot name any
    /// other file, and one whose file is gone or renamed is refused by name
    /// rather than resumed in a neighbour.
    fn decode_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut splits = Vec::new();
        let mut legacy_files = None;
        for state in &states {
            if let Some(mut rest) = state.strip_prefix(POSITION_MAGIC.as_slice()) {
                while !rest.is_empty() {
                    let (offset, path, tail) = decode_named_split(rest)?;
                    rest = tail;
                    let index = self
                        .files
                        .iter()
                        .position(|f| f.as_os_str().as_encoded_bytes() == path)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "text file position names input file {}, which is not among this source's input files (did the input change?)",
                                String::from_utf8_lossy(path)
                            )
                        })?;
                    splits.push((index, offset));
                }
                continue;
            }
            // Before positions named their file: (index, offset) pairs into
            // the listing that still counted hidden names.
            anyhow::ensure!(
                state.len() % 16 == 0,
                "text file position must be a multiple of 16 bytes, got {}",
                state.len()
            );
            let legacy = match &mut legacy_files {
                Some(files) => files,
                None => legacy_files.insert(self.source.listing(true)?),
            };
            for c in state.chunks_exact(16) {
                let index = u64::from_le_bytes(c[..8].try_into().expect("8 bytes")) as usize;
                let offset = u64::from_le_bytes(c[8..].try_into().expect("8 bytes"));
                let path = legacy.get(index).ok_or_else(|| {
                    anyhow::anyhow!(
                        "text file position names input file {index}, but there are only {} input files (did the input change?)",
                        legacy.len()
                    )
                })?;
                let index = self.files.iter().position(|f| f == path).ok_or_else(|| {
                    anyhow::anyhow!(
                        "text file position was reading {}, a hidden file this source no longer reads; remove it from the input, or restore from a newer snapshot",
                        path.display()
                    )
                })?;
                splits.push((index, offset));
            }
        }
        splits.sort_unstable();
        self.splits = splits;
        self.reader = None;
        Ok(())
    }
}

/// What a position in the named format starts with (older positions are
/// bare 16-byte pairs, whose first bytes are a small file index).
const POSITION_MAGIC: [u8; 4] = *b"FTP2";

/// One named split: offset (u64 LE), path length (u32 LE), path bytes;
/// returns them and the rest.
fn decode_named_split(bytes: &[u8]) -> anyhow::Result<(u64, &[u8], &[u8])> {
    let torn = || anyhow::anyhow!("text file position is torn ({} bytes left)", bytes.len());
    let offset = u64::from_le_bytes(bytes.get(..8).ok_or_else(torn)?.try_into().expect("8"));
    let len = u32::from_le_bytes(bytes.get(8..12).ok_or_else(torn)?.try_into().expect("4"));
    let end = 12usize.checked_add(len as usize).ok_or_else(torn)?;
    let path = bytes.get(12..end).ok_or_else(torn)?;
    Ok((offset, path, &bytes[end..]))
}

impl SourceReader<String> for TextFileReader {
    /// Position: [`POSITION_MAGIC`], then the remaining splits, each the
    /// byte offset of the next line (u64 LE) and its file's path (u32 LE
    /// length, bytes): the path, not an index, so that a changed listing
    /// cannot make a restore resume in another file.
    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut out = POSITION_MAGIC.to_vec();
        for (index, offset) in &self.splits {
            let path = self.files[*index].as_os_str().as_encoded_bytes();
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path);
        }
        Ok(out)
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.restore_splits(vec![state.to_vec()])
    }

    /// Each input file is a split (its index in the listing).
    fn current_split(&self) -> floe_runtime::SplitId {
        self.polled as floe_runtime::SplitId
    }

    fn finished_splits(&mut self, out: &mut Vec<floe_runtime::SplitId>) {
        out.extend(self.finished.drain(..).map(|i| i as floe_runtime::SplitId));
    }

    fn restore_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        // A position that does not fit the input never will.
        self.decode_splits(states).map_err(NonRecoverable::wrap)
    }

    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        // Fail fast on every assigned file, not only on the first one.
        for (index, _) in &self.splits {
            let f = &self.files[*index];
            File::open(f).with_context(|| format!("cannot open input file {}", f.display()))?;
        }
        Ok(())
    }

    fn poll_next(&mut self, out: &mut Vec<String>, max: usize) -> anyhow::Result<SourceStatus> {
        let mut n = 0;
        while n < max {
            let Some(&(index, start)) = self.splits.first() else {
                return Ok(SourceStatus::Finished);
            };
            if self.reader.is_none() {
                self.open_current()?;
            }
            let reader = self.reader.as_mut().expect("opened above");
            self.line.clear();
            let read = reader.read_until(b'\n', &mut self.line).with_context(|| {
                format!(
                    "cannot read input file {} at byte {start}",
                    self.files[index].display(),
                )
            })?;
            if read == 0 {
                self.reader = None;
                self.splits.remove(0);
                self.finished.push(index);
                if n > 0 {
                    // The next file is another split: its records go in
                    // the next poll.
                    return Ok(SourceStatus::MoreAvailable);
                }
                continue;
            }
            self.polled = index;
            self.splits[0].1 += read as u64;
            let mut bytes = self.line.as_slice();
            if let Some(b) = bytes.strip_suffix(b"\n") {
                bytes = b.strip_suffix(b"\r").unwrap_or(b);
            }
            let line = std::str::from_utf8(bytes).with_context(|| {
                format!(
                    "input file {} is not valid UTF-8 in the line at byte {start}",
                    self.files[index].display()
                )
            })?;
            out.push(line.to_string());
            n += 1;
        }
        Ok(SourceStatus::MoreAvailable)
    }
}

/// Writes one line per record. With parallelism 1 the path is the output
/// file; with more, the path is a directory holding one `part-<subtask>` file
/// per subtask (Flink's `writeAsText`). An existing output is an error unless
/// overwriting was asked for.
pub struct TextFileSink<T> {
    path: PathBuf,
    format: LineFormat<T>,
    overwrite: bool,
    /// The file this subtask writes, decided in `open`.
    file: Option<PathBuf>,
    writer: Option<BufWriter<File>>,
    buf: String,
}

impl<T> Clone for TextFileSink<T> {
    /// A fresh, unopened writer for another subtask.
    fn clone(&self) -> Self {
        TextFileSink {
            path: self.path.clone(),
            format: self.format.clone(),
            overwrite: self.overwrite,
            file: None,
            writer: None,
            buf: String::new(),
        }
    }
}

impl<T: std::fmt::Display> TextFileSink<T> {
    /// A sink writing each record's `Display` form.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_format(path, LineFormat::display())
    }
}

impl<T> TextFileSink<T> {
    /// A sink with a custom line format.
    pub fn with_format(path: impl Into<PathBuf>, format: LineFormat<T>) -> Self {
        TextFileSink {
            path: path.into(),
            format,
            overwrite: false,
            file: None,
            writer: None,
            buf: String::new(),
        }
    }

    /// Replace an existing output instead of failing.
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }
}

impl<T: Send + 'static> SinkWriter<T> for TextFileSink<T> {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        // Only checks here: the file is created with the first record (or at
        // the end of an empty input), so a job that fails while starting —
        // a missing input, a refused connection — leaves an existing output
        // exactly as it was.
        let file = if info.parallelism == 1 {
            if self.path.is_dir() {
                anyhow::bail!(
                    "output path {} is a directory; expected a file",
                    self.path.display()
                );
            }
            self.path.clone()
        } else {
            if self.path.is_file() {
                anyhow::bail!(
                    "output path {} is a file; a sink with parallelism {} writes a directory of part files",
                    self.path.display(),
                    info.parallelism
                );
            }
            self.path.join(format!("part-{}", info.subtask_index))
        };
        if !self.overwrite && file.exists() {
            anyhow::bail!(
                "output file {} already exists (not overwriting it)",
                file.display()
            );
        }
        self.file = Some(file);
        Ok(())
    }

    fn write(&mut self, value: T) -> anyhow::Result<()> {
        self.write_batch(&mut vec![value])
    }

    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        self.buf.clear();
        self.format.format_batch(batch, &mut self.buf);
        self.writer()?;
        let w = self.writer.as_mut().expect("created above");
        w.write_all(self.buf.as_bytes())
            .with_context(|| format!("cannot write output {}", self.path.display()))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()
                .with_context(|| format!("cannot write output {}", self.path.display()))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        // An empty input still produces its (empty) output file.
        self.writer()?;
        self.flush()
    }
}

impl<T> TextFileSink<T> {
    /// The open writer, creating the file (and its directory) on first use.
    fn writer(&mut self) -> anyhow::Result<&mut BufWriter<File>> {
        if self.writer.is_none() {
            let file = self.file.as_ref().expect("open() decides the file");
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("cannot create output directory {}", parent.display())
                })?;
            }
            let f = File::create(file)
                .with_context(|| format!("cannot create output file {}", file.display()))?;
            self.writer = Some(BufWriter::with_capacity(256 * 1024, f));
        }
        Ok(self.writer.as_mut().expect("created above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TaskInfo {
        TaskInfo {
            job_id: floe_core::JobId::from_u128(1),
            job_name: "test".into(),
            operator_name: "Text File".into(),
            uid: "text".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
        }
    }

    fn position(index: u64, offset: u64) -> Vec<u8> {
        [index.to_le_bytes(), offset.to_le_bytes()].concat()
    }

    /// A restored position names a file only by its index among the
    /// source's own input files, so a crafted one can reach no other file:
    /// an index beyond them, a torn position or an offset beyond the file
    /// is refused as non-recoverable; a valid one resumes in the file.
    #[test]
    fn crafted_positions_reach_no_other_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir(&input).unwrap();
        std::fs::write(input.join("a.txt"), "one\ntwo\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "secret\n").unwrap();
        let source = TextFileSource::new([&input]);
        let mut named_outside = POSITION_MAGIC.to_vec();
        let secret = dir.path().join("secret.txt");
        let secret = secret.as_os_str().as_encoded_bytes();
        named_outside.extend_from_slice(&0u64.to_le_bytes());
        named_outside.extend_from_slice(&(secret.len() as u32).to_le_bytes());
        named_outside.extend_from_slice(secret);
        let mut torn = named_outside.clone();
        torn.truncate(torn.len() - 1);
        for (state, needle) in [
            (position(1, 0), "names input file 1, but there are only 1"),
            (position(u64::MAX, 0), "but there are only 1"),
            (vec![0; 15], "multiple of 16 bytes"),
            (named_outside, "secret.txt, which is not among"),
            (torn, "torn"),
        ] {
            let mut reader = source.create_reader(&info()).unwrap();
            let err = reader.restore_splits(vec![state]).unwrap_err();
            assert!(NonRecoverable::is_in(&err), "{err:#}");
            assert!(err.to_string().contains(needle), "{err:#}");
        }
        let mut reader = source.create_reader(&info()).unwrap();
        reader.restore_splits(vec![position(0, 100)]).unwrap();
        reader.open(&info()).unwrap();
        let err = reader.poll_next(&mut Vec::new(), 10).unwrap_err();
        assert!(NonRecoverable::is_in(&err), "{err:#}");
        assert!(err.to_string().contains("a.txt"), "{err:#}");

        let mut reader = source.create_reader(&info()).unwrap();
        reader.restore_splits(vec![position(0, 4)]).unwrap();
        reader.open(&info()).unwrap();
        let mut out = Vec::new();
        while reader.poll_next(&mut out, 10).unwrap() != SourceStatus::Finished {}
        assert_eq!(out, vec!["two"]);
    }

    /// Reads `reader` to its end.
    fn read_all(mut reader: Box<dyn SourceReader<String>>) -> Vec<String> {
        reader.open(&info()).unwrap();
        let mut out = Vec::new();
        while reader.poll_next(&mut out, 10).unwrap() != SourceStatus::Finished {}
        out
    }

    /// A position names its file, so a restore after the listing changed
    /// (a file added in front) resumes in the very file it was reading,
    /// where an index would have moved it to a neighbour.
    #[test]
    fn positions_follow_their_file_when_the_listing_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.txt"), "b1\nb2\n").unwrap();
        std::fs::write(dir.path().join("c.txt"), "c1\n").unwrap();
        let source = TextFileSource::new([dir.path()]);
        let mut reader = source.create_reader(&info()).unwrap();
        reader.open(&info()).unwrap();
        let mut out = Vec::new();
        reader.poll_next(&mut out, 1).unwrap();
        assert_eq!(out, ["b1"]);
        let position = reader.snapshot_state().unwrap();
        assert!(position.starts_with(&POSITION_MAGIC));

        std::fs::write(dir.path().join("a.txt"), "a1\n").unwrap();
        let mut restored = source.create_reader(&info()).unwrap();
        restored.restore_splits(vec![position]).unwrap();
        assert_eq!(read_all(restored), ["b2", "c1"]);
    }

    /// Positions written before hidden names were skipped index the
    /// listing that counted them: they resume in the same file, and one
    /// that was reading a hidden file is refused naming it.
    #[test]
    fn positions_of_the_index_format_resume_in_the_file_they_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".hidden"), "h1\n").unwrap();
        std::fs::write(dir.path().join("a.txt"), "a1\na2\n").unwrap();
        std::fs::write(dir.path().join("b.txt"), "b1\n").unwrap();
        let source = TextFileSource::new([dir.path()]);
        // Old listing: .hidden, a.txt, b.txt. Position: a.txt after "a1\n",
        // then all of b.txt.
        let mut reader = source.create_reader(&info()).unwrap();
        reader
            .restore_splits(vec![[position(1, 3), position(2, 0)].concat()])
            .unwrap();
        assert_eq!(read_all(reader), ["a2", "b1"]);

        let mut reader = source.create_reader(&info()).unwrap();
        let err = reader.restore_splits(vec![position(0, 0)]).unwrap_err();
        assert!(NonRecoverable::is_in(&err), "{err:#}");
        assert!(err.to_string().contains(".hidden"), "{err:#}");
    }
}
