//! Checkpoints of a [`KeyedDb`] and restoring (possibly rescaling) from them.

use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamilyDescriptor, IngestExternalFileOptions, SstFileWriter};

use crate::db::{Db, DirCleanup, EntryIter, KeyedDb, cf_name, state_names_of};
use crate::error::RocksDbError;
use crate::key::KeyGroupRange;
use crate::resources::{RocksDbResources, WritePattern};

/// What a checkpoint file is, for incremental uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointFileKind {
    /// An SST file: immutable once written, so a file already uploaded by
    /// an earlier checkpoint of the same database can be referenced instead
    /// of uploaded again. Names (`000123.sst`) are unique only within one
    /// database's lineage: another subtask, or a database restored from the
    /// same checkpoint twice, may reuse a name for different contents, so an
    /// uploader must key shared files by (database identity, name), not by
    /// name alone.
    Sst,
    /// Everything else (`MANIFEST-*`, `CURRENT`, `OPTIONS-*`, empty WAL
    /// files): small, rewritten by every checkpoint, always uploaded.
    Meta,
}

/// One file of a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFile {
    /// The file name (no directory).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether it is a shareable SST file.
    pub kind: CheckpointFileKind,
}

/// The files of a checkpoint taken by [`KeyedDb::checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFiles {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its files, sorted by name.
    pub files: Vec<CheckpointFile>,
}

impl CheckpointFiles {
    /// Lists the files of a checkpoint directory.
    pub fn list(dir: impl Into<PathBuf>) -> Result<Self, RocksDbError> {
        let dir = dir.into();
        let read =
            std::fs::read_dir(&dir).map_err(|e| RocksDbError::io("list checkpoint", &dir, e))?;
        let mut files = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| RocksDbError::io("list checkpoint", &dir, e))?;
            let meta = entry
                .metadata()
                .map_err(|e| RocksDbError::io("stat checkpoint file", entry.path(), e))?;
            if !meta.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = if is_sst(&name) {
                CheckpointFileKind::Sst
            } else {
                CheckpointFileKind::Meta
            };
            files.push(CheckpointFile {
                name,
                size: meta.len(),
                kind,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(CheckpointFiles { dir, files })
    }

    /// The shareable SST files.
    pub fn sst_files(&self) -> impl Iterator<Item = &CheckpointFile> {
        self.files
            .iter()
            .filter(|f| f.kind == CheckpointFileKind::Sst)
    }

    /// The files that must be uploaded every time.
    pub fn meta_files(&self) -> impl Iterator<Item = &CheckpointFile> {
        self.files
            .iter()
            .filter(|f| f.kind == CheckpointFileKind::Meta)
    }

    /// Total size in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn is_sst(name: &str) -> bool {
    name.ends_with(".sst")
}

/// Size at which a restore's ingested SST file is cut, so one huge key-group
/// range does not become one huge file that compaction must rewrite whole.
const INGEST_FILE_BYTES: u64 = 64 << 20;

impl KeyedDb {
    /// The synchronous part of a snapshot: flushes every state's memtable
    /// (writes skip the WAL, so unflushed data would be missing) and takes a
    /// RocksDB checkpoint into `dir`, which must not exist yet (its parent
    /// must). SST files are hard links to the live ones, so this costs a
    /// flush plus a few metadata files, whatever the state's size.
    pub fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<CheckpointFiles, RocksDbError> {
        let dir = dir.as_ref();
        self.flush()?;
        let cp = Checkpoint::new(&self.db)
            .map_err(|e| RocksDbError::db("checkpoint", self.path(), None, e))?;
        cp.create_checkpoint(dir)
            .map_err(|e| RocksDbError::db("checkpoint", dir, None, e))?;
        CheckpointFiles::list(dir)
    }

    /// Restores the state of the subtask owning `range` into `working_dir`
    /// (which must not exist or be empty) from checkpoints of the previous
    /// run, each given with the key-group range of the subtask that took it.
    /// Column families (states) are matched by name.
    ///
    /// * One source whose range equals `range`: its files are hard-linked
    ///   (SST files; copied if linking fails, e.g. across file systems) or
    ///   copied (metadata) into the working directory and opened in place.
    /// * Otherwise (rescaling): the source with the largest key-group
    ///   overlap is the base and is opened in place the same way; its key
    ///   groups outside `range` are dropped (whole SST files first with
    ///   `delete_files_in_range`, the rest with `delete_range`); then the
    ///   overlapping key groups of every other source are read from a
    ///   read-only open of that checkpoint and **ingested as SST files**.
    ///
    /// Ingestion rather than write batches: the copied data bypasses the
    /// memtables, so it neither competes for the shared write-buffer budget
    /// with other subtasks restoring at the same time nor triggers a cascade
    /// of flushes and L0 compactions; each ingested file covers a key range
    /// no other data of the database overlaps, so RocksDB places it directly
    /// in the bottom level and it is never rewritten just to sort it. The
    /// files are written sorted straight from the source iterator (merge
    /// operands already folded) and moved, not copied, into the database.
    pub fn restore(
        working_dir: impl Into<PathBuf>,
        resources: &RocksDbResources,
        range: KeyGroupRange,
        sources: Vec<(PathBuf, KeyGroupRange)>,
    ) -> Result<KeyedDb, RocksDbError> {
        const OP: &str = "KeyedDb::restore";
        let range = range.validate(OP)?;
        let mut overlapping = Vec::new();
        for (dir, src) in &sources {
            let src = src.validate(OP)?;
            if let Some(clip) = src.intersect(&range) {
                overlapping.push((dir.clone(), src, clip));
            }
        }
        let mut clips: Vec<KeyGroupRange> = overlapping.iter().map(|(_, _, c)| *c).collect();
        clips.sort_by_key(|c| c.start);
        if let Some(w) = clips.windows(2).find(|w| w[1].start <= w[0].end) {
            return Err(RocksDbError::invalid(
                OP,
                format!("source ranges {} and {} overlap", w[0], w[1]),
            ));
        }

        let path = working_dir.into();
        let non_empty = std::fs::read_dir(&path).map(|mut d| d.next().is_some());
        match non_empty {
            Ok(true) => {
                return Err(RocksDbError::invalid(
                    OP,
                    format!("working directory {} is not empty", path.display()),
                ));
            }
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RocksDbError::io("inspect working directory", &path, e)),
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| RocksDbError::io("create working directory", &path, e))?;
        // From here on a failure removes the half-restored directory.
        let cleanup = DirCleanup {
            path: path.clone(),
            remove: true,
        };

        let Some(base_idx) = (0..overlapping.len()).max_by_key(|&i| {
            // Largest overlap; on ties the first source.
            (overlapping[i].2.len(), std::cmp::Reverse(i))
        }) else {
            tracing::info!(path = %path.display(), %range, "no checkpoint overlaps the key-group range; starting empty");
            return KeyedDb::open_in(cleanup, resources, range, true);
        };
        let (base_dir, base_range, _) = overlapping.remove(base_idx);
        link_checkpoint(&base_dir, &path)?;
        let mut db = KeyedDb::open_in(cleanup, resources, range, true).map_err(|e| match e {
            // A checkpoint that does not open is reported against it.
            RocksDbError::Db {
                operation, reason, ..
            } => RocksDbError::Db {
                operation,
                path: base_dir.clone(),
                state: None,
                reason,
            },
            other => other,
        })?;
        tracing::info!(
            path = %path.display(), %range, base = %base_range, base_dir = %base_dir.display(),
            others = overlapping.len(), "restoring keyed state from checkpoints"
        );

        if base_range != range {
            db.drop_outside_range()?;
        }
        let tmp = path.join("restore-ingest");
        for (dir, _, clip) in &overlapping {
            db.ingest_from(dir, *clip, &tmp)?;
        }
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| RocksDbError::io("remove ingest directory", &tmp, e))?;
        }
        Ok(db)
    }

    /// Deletes, in every state, the entries of key groups outside the range.
    fn drop_outside_range(&mut self) -> Result<(), RocksDbError> {
        let (lo, hi) = self.range.bounds();
        for name in self.present.clone() {
            let cf_n = cf_name(&name);
            let Some(cf) = self.db.cf_handle(&cf_n) else {
                continue;
            };
            let err = |op, e| RocksDbError::db(op, self.path(), Some(&name), e);
            // Below the range: ["", lo).
            if self.range.start > 0 {
                self.db
                    .delete_file_in_range_cf(cf, &[][..], &lo[..])
                    .map_err(|e| err("delete files in range", e))?;
                self.db
                    .delete_range_cf_opt(cf, &[][..], &lo[..], &self.write_opts)
                    .map_err(|e| err("delete range", e))?;
            }
            // Above the range: [hi, last key], found by seeking to the end
            // so that no key, however malformed, escapes.
            let last = {
                let mut it = self.db.raw_iterator_cf(cf);
                it.seek_to_last();
                if !it.valid() {
                    it.status().map_err(|e| err("seek", e))?;
                }
                it.key().map(<[u8]>::to_vec)
            };
            if let Some(mut last) = last
                && last.as_slice() >= &hi[..]
            {
                self.db
                    .delete_file_in_range_cf(cf, &hi[..], last.as_slice())
                    .map_err(|e| err("delete files in range", e))?;
                last.push(0); // exclusive end just past the last key
                self.db
                    .delete_range_cf_opt(cf, &hi[..], last.as_slice(), &self.write_opts)
                    .map_err(|e| err("delete range", e))?;
            }
        }
        Ok(())
    }

    /// Copies key groups `clip` of every state of checkpoint `dir` into this
    /// database by SST ingestion.
    fn ingest_from(
        &mut self,
        dir: &Path,
        clip: KeyGroupRange,
        tmp: &Path,
    ) -> Result<(), RocksDbError> {
        let source = open_read_only(dir, &self.resources)?;
        std::fs::create_dir_all(tmp)
            .map_err(|e| RocksDbError::io("create ingest directory", tmp, e))?;
        let cf_opts = self.resources.cf_options();
        let mut ingest_opts = IngestExternalFileOptions::default();
        ingest_opts.set_move_files(true);
        let mut file_no = 0usize;
        // The new column families are written as the source's were.
        let patterns = crate::options_file::write_patterns(dir);
        for name in &source.states {
            let pattern = patterns
                .get(&cf_name(name))
                .copied()
                .unwrap_or(WritePattern::WriteBack);
            let cf_n = self.ensure_cf(name, pattern)?;
            let Some(src_cf) = source.db.cf_handle(&cf_name(name)) else {
                continue;
            };
            let mut files = Vec::new();
            {
                let mut it = EntryIter::new(&source.db, src_cf, clip.start, clip.end, dir, name);
                let mut writer: Option<SstFileWriter<'_>> = None;
                let sst_err = |e| RocksDbError::db("write ingest file", tmp, Some(name), e);
                while let Some(e) = it.next_entry()? {
                    if writer.is_none() {
                        let file = tmp.join(format!("{file_no:06}.sst"));
                        file_no += 1;
                        let w = SstFileWriter::create(&cf_opts);
                        w.open(&file).map_err(sst_err)?;
                        files.push(file);
                        writer = Some(w);
                    }
                    if let Some(w) = writer.as_mut() {
                        w.put(e.raw_key, e.value).map_err(sst_err)?;
                        if w.file_size() >= INGEST_FILE_BYTES {
                            w.finish().map_err(sst_err)?;
                            writer = None;
                        }
                    }
                }
                if let Some(mut w) = writer {
                    w.finish().map_err(sst_err)?;
                }
            }
            if files.is_empty() {
                continue;
            }
            let cf = self.db.cf_handle(&cf_n).ok_or_else(|| {
                RocksDbError::invalid(
                    "KeyedDb::restore",
                    format!("column family of state '{name}' vanished"),
                )
            })?;
            self.db
                .ingest_external_file_cf_opts(cf, &ingest_opts, files)
                .map_err(|e| RocksDbError::db("ingest", self.path(), Some(name), e))?;
        }
        Ok(())
    }
}

/// A checkpoint opened read-only, with its state names.
pub(crate) struct ReadOnlyCheckpoint {
    pub(crate) db: Db,
    pub(crate) states: Vec<String>,
}

/// Opens checkpoint `dir` read-only with every column family, using the
/// shared resources (its reads are charged to the same budget).
pub(crate) fn open_read_only(
    dir: &Path,
    resources: &RocksDbResources,
) -> Result<ReadOnlyCheckpoint, RocksDbError> {
    let mut opts = resources.db_options();
    opts.create_if_missing(false);
    opts.create_missing_column_families(false);
    if !dir.join("CURRENT").is_file() {
        return Err(RocksDbError::corrupt(
            dir,
            None,
            "not a RocksDB checkpoint (no CURRENT file)",
        ));
    }
    let cfs = Db::list_cf(&opts, dir)
        .map_err(|e| RocksDbError::db("list column families", dir, None, e))?;
    let descriptors = cfs
        .iter()
        .filter(|cf| cf.as_str() != rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
        .map(|cf| ColumnFamilyDescriptor::new(cf, resources.cf_options()));
    let db = Db::open_cf_descriptors_read_only(&opts, dir, descriptors, false)
        .map_err(|e| RocksDbError::db("open read-only", dir, None, e))?;
    Ok(ReadOnlyCheckpoint {
        db,
        states: state_names_of(&cfs),
    })
}

/// Fills `dst` with the files of checkpoint `src`: SST files hard-linked
/// (they are immutable; copied when linking fails), the rest copied (RocksDB
/// rewrites or appends to them).
fn link_checkpoint(src: &Path, dst: &Path) -> Result<(), RocksDbError> {
    let files = CheckpointFiles::list(src)?;
    if !files.files.iter().any(|f| f.name == "CURRENT") {
        return Err(RocksDbError::corrupt(
            src,
            None,
            "not a RocksDB checkpoint (no CURRENT file)",
        ));
    }
    for f in &files.files {
        let from = src.join(&f.name);
        let to = dst.join(&f.name);
        let linked = f.kind == CheckpointFileKind::Sst && std::fs::hard_link(&from, &to).is_ok();
        if !linked {
            std::fs::copy(&from, &to)
                .map_err(|e| RocksDbError::io("copy checkpoint file", &from, e))?;
        }
    }
    Ok(())
}
