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
/// index this listing, so a snapshot taken before hidden names were
/// skipped, of a directory that held some, resumes in the wrong files:
/// restore such a snapshot only after removing the hidden files it read.
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
        let mut files = Vec::new();
        for p in &self.paths {
            let meta = std::fs::metadata(p)
                .with_context(|| format!("cannot read input path {}", p.display()))?;
            if meta.is_dir() {
                files.extend(list_input_dir(p)?);
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
/// with a warning, hidden names silently.
fn list_input_dir(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let listing = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list input directory {}", dir.display()))?;
    for entry in listing {
        let entry =
            entry.with_context(|| format!("cannot list input directory {}", dir.display()))?;
        let path = entry.path();
        if is_hidden(&entry.file_name()) {
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
            files,
            splits,
            reader: None,
            line: Vec::new(),
        }))
    }
}

/// One subtask's reader over its splits: the files dealt to it, or after a
/// rescaling restore the remaining files of the old subtasks it took over.
struct TextFileReader {
    /// Every input file; splits refer to them by index.
    files: Vec<PathBuf>,
    /// Remaining splits in reading order: (file index, byte offset of the
    /// next line). The first one is being read.
    splits: Vec<(usize, u64)>,
    /// The first split's open file, positioned at its offset.
    reader: Option<BufReader<File>>,
    line: Vec<u8>,
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

    /// Positions are indexes into this source's own input files (see
    /// `snapshot_state`): a snapshot cannot name any other file.
    fn decode_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut splits = Vec::new();
        for state in &states {
            anyhow::ensure!(
                state.len() % 16 == 0,
                "text file position must be a multiple of 16 bytes, got {}",
                state.len()
            );
            for c in state.chunks_exact(16) {
                let index = u64::from_le_bytes(c[..8].try_into().expect("8 bytes")) as usize;
                let offset = u64::from_le_bytes(c[8..].try_into().expect("8 bytes"));
                anyhow::ensure!(
                    index < self.files.len(),
                    "text file position names input file {index}, but there are only {} input files (did the input change?)",
                    self.files.len()
                );
                splits.push((index, offset));
            }
        }
        splits.sort_unstable();
        self.splits = splits;
        self.reader = None;
        Ok(())
    }
}

impl SourceReader<String> for TextFileReader {
    /// Position: the remaining splits, each (file index among all input
    /// files, byte offset of the next line) as two little-endian u64s.
    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.splits.len() * 16);
        for (index, offset) in &self.splits {
            out.extend_from_slice(&(*index as u64).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        Ok(out)
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.restore_splits(vec![state.to_vec()])
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
                continue;
            }
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
        for (state, needle) in [
            (position(1, 0), "names input file 1, but there are only 1"),
            (position(u64::MAX, 0), "but there are only 1"),
            (vec![0; 15], "multiple of 16 bytes"),
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
}
