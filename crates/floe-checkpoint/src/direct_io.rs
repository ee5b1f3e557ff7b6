//! Large checkpoint files on local disk, written around the page cache.
//!
//! A checkpoint writes tens of megabytes every interval that are read back
//! only by a restore, which is rare. Through the page cache each such write
//! costs the kernel a copy into freshly allocated cache pages, and deleting
//! the retired checkpoint frees them again: about 40 ms of CPU per 45 MB on
//! the benchmark machine, as much as encoding the state, and CPU the job
//! pays for. Written with `O_DIRECT` from a reused aligned buffer, the
//! device takes the bytes from that buffer and the kernel copies nothing.
//!
//! Files are published as object_store's `LocalFileSystem` with fsync
//! publishes them, so both writers can share one directory: a staging file
//! `<name>#<n>` (which its listings skip), synced, then hard-linked into
//! place (put-if-absent) or renamed over it (overwrite), and the directory
//! synced. A file system without `O_DIRECT` (tmpfs, some network file
//! systems) refuses it with `EINVAL`; the caller then falls back to the
//! object store.

use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// Alignment of buffer addresses, file offsets and lengths: the largest
/// logical block size of common devices, so it satisfies any of them.
const ALIGN: usize = 4096;

/// Bytes per `write`: large enough that the per-call cost vanishes, small
/// enough that the copy into the buffer stays in cache.
pub(crate) const CHUNK: usize = 1 << 20;

/// A `CHUNK`-byte buffer aligned to `ALIGN`, reused from file to file.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
}

// SAFETY: the buffer is plain owned memory, never aliased.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    const LAYOUT: Layout = match Layout::from_size_align(CHUNK, ALIGN) {
        Ok(layout) => layout,
        Err(_) => panic!("invalid direct I/O buffer layout"),
    };

    /// A new buffer (zeroed, so its padding never leaks old memory).
    pub(crate) fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::LAYOUT) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(Self::LAYOUT));
        AlignedBuf { ptr }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `CHUNK` initialized bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), CHUNK) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::LAYOUT) }
    }
}

/// How a written file is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// Only if no file is at the destination yet.
    Create,
    /// Replacing whatever is there.
    Overwrite,
}

/// What became of a direct write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The file is in place and durable.
    Written,
    /// `Publish::Create` found a file at the destination; nothing changed.
    Exists,
    /// The file system does not do direct I/O; nothing was written.
    Unsupported,
}

/// Why a direct write failed: the file and the operating system's reason.
#[derive(Debug)]
pub(crate) struct DirectWriteError {
    pub(crate) path: PathBuf,
    pub(crate) source: std::io::Error,
}

/// Writes `data` to `dest` with direct I/O through `buf`, then publishes it.
/// Missing parent directories are created. On any failure the staging
/// file is removed and the destination is untouched.
pub(crate) fn write_file(
    dest: &Path,
    data: &[u8],
    publish: Publish,
    buf: &mut AlignedBuf,
) -> Result<Outcome, DirectWriteError> {
    let (file, staging) = match open_staging(dest) {
        Ok(Some(opened)) => opened,
        Ok(None) => return Ok(Outcome::Unsupported),
        Err(e) => return Err(e),
    };
    let result = write_and_publish(file, &staging, dest, data, publish, buf);
    if !matches!(result, Ok(Outcome::Written)) {
        let _ = std::fs::remove_file(&staging);
    }
    result
}

/// A new staging file beside `dest`, opened for direct I/O; `None` if the
/// file system refuses direct I/O.
fn open_staging(dest: &Path) -> Result<Option<(File, PathBuf)>, DirectWriteError> {
    let mut created_parents = false;
    let mut n = 1u32;
    loop {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&staging);
        match opened {
            Ok(file) => return Ok(Some((file, staging))),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == ErrorKind::NotFound && !created_parents => {
                created_parents = true;
                create_parents(dest)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Linux creates the file before it refuses the flag.
                let _ = std::fs::remove_file(&staging);
                return Ok(None);
            }
            Err(source) => {
                return Err(DirectWriteError {
                    path: staging,
                    source,
                });
            }
        }
    }
}

/// Creates `dest`'s missing ancestors and syncs the directory each new one
/// was made in, so they survive a crash with the file.
fn create_parents(dest: &Path) -> Result<(), DirectWriteError> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    let mut missing = Vec::new();
    let mut dir = parent;
    while !dir.exists() {
        missing.push(dir);
        match dir.parent() {
            Some(up) => dir = up,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            // Another upload made it meanwhile.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(DirectWriteError {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        if let Some(up) = dir.parent() {
            sync_dir(up)?;
        }
    }
    Ok(())
}

fn write_and_publish(
    mut file: File,
    staging: &Path,
    dest: &Path,
    data: &[u8],
    publish: Publish,
    buf: &mut AlignedBuf,
) -> Result<Outcome, DirectWriteError> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DirectWriteError { path, source }
    };
    let buf = buf.as_mut_slice();
    for chunk in data.chunks(CHUNK) {
        buf[..chunk.len()].copy_from_slice(chunk);
        // The last chunk is padded to the alignment (with zeros: no old
        // bytes reach the disk) and the file cut back to its length below.
        let padded = chunk.len().next_multiple_of(ALIGN);
        buf[chunk.len()..padded].fill(0);
        match file.write(&buf[..padded]) {
            Ok(n) if n == padded => {}
            Ok(_) => {
                return Err(DirectWriteError {
                    path: staging.to_path_buf(),
                    source: std::io::Error::new(ErrorKind::WriteZero, "short direct write"),
                });
            }
            // Opened, but refused on the first write (a file system that
            // accepts the flag and not the I/O, or a stricter alignment).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Outcome::Unsupported),
            Err(source) => {
                return Err(DirectWriteError {
                    path: staging.to_path_buf(),
                    source,
                });
            }
        }
    }
    if data.len() % ALIGN != 0 {
        file.set_len(data.len() as u64).map_err(at(staging))?;
    }
    file.sync_all().map_err(at(staging))?;
    drop(file);
    match publish {
        Publish::Overwrite => std::fs::rename(staging, dest).map_err(at(dest))?,
        Publish::Create => {
            match std::fs::hard_link(staging, dest) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(Outcome::Exists),
                Err(source) => return Err(at(dest)(source)),
            }
            // Published already: a staging name left behind is harmless
            // (listings skip it), failing the write now would not be.
            let _ = std::fs::remove_file(staging);
        }
    }
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(Outcome::Written)
}

fn sync_dir(dir: &Path) -> Result<(), DirectWriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| DirectWriteError {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory on a file system with direct I/O, or `None`
    /// (the test is then skipped, saying so).
    fn direct_dir() -> Option<tempfile::TempDir> {
        let dir = tempfile::tempdir().unwrap();
        if direct_io_works(dir.path()) {
            return Some(dir);
        }
        eprintln!("skipped: no direct I/O on {}", dir.path().display());
        None
    }

    /// Whether `dir`'s file system does direct I/O at all.
    fn direct_io_works(dir: &Path) -> bool {
        let probe = dir.join("probe");
        let ok = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        let _ = std::fs::remove_file(probe);
        ok
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 4096) as u8).collect()
    }

    #[test]
    fn writes_exactly_the_bytes_at_every_length_around_the_alignment() {
        let Some(dir) = direct_dir() else {
            return;
        };
        let mut buf = AlignedBuf::new();
        for len in [
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 12345,
        ] {
            let data = pattern(len);
            let dest = dir.path().join(format!("f{len}"));
            let outcome = write_file(&dest, &data, Publish::Create, &mut buf).unwrap();
            assert_eq!(outcome, Outcome::Written, "length {len}");
            assert_eq!(std::fs::read(&dest).unwrap(), data, "length {len}");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains('#')),
            "staging files left: {names:?}"
        );
    }

    #[test]
    fn create_keeps_an_existing_file_and_overwrite_replaces_it() {
        let Some(dir) = direct_dir() else {
            return;
        };
        let dest = dir.path().join("a/b/file");
        let mut buf = AlignedBuf::new();
        let first = pattern(2 * CHUNK + 7);
        assert_eq!(
            write_file(&dest, &first, Publish::Create, &mut buf).unwrap(),
            Outcome::Written
        );
        let second = vec![9u8; CHUNK + 3];
        assert_eq!(
            write_file(&dest, &second, Publish::Create, &mut buf).unwrap(),
            Outcome::Exists
        );
        assert_eq!(std::fs::read(&dest).unwrap(), first);
        assert_eq!(
            write_file(&dest, &second, Publish::Overwrite, &mut buf).unwrap(),
            Outcome::Written
        );
        assert_eq!(std::fs::read(&dest).unwrap(), second);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("file")]);
    }

    #[test]
    fn a_file_system_without_direct_io_is_reported_not_failed() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() || direct_io_works(shm) {
            eprintln!("skipped: no tmpfs without direct I/O at /dev/shm");
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let dest = dir.path().join("file");
        let mut buf = AlignedBuf::new();
        assert_eq!(
            write_file(&dest, &pattern(CHUNK), Publish::Create, &mut buf).unwrap(),
            Outcome::Unsupported
        );
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
