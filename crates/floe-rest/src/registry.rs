//! The job registry: how the `floe` CLI finds the jobs running on this host.
//!
//! Each job runs its own REST endpoint on a port of its choosing (any free
//! one by default), so a CLI invocation cannot guess where a job listens.
//! Every running job therefore writes `<dir>/<job id>.json` —
//! `{"job_id", "name", "rest_address", "pid"}` — and removes it when it ends.
//! A job killed without a chance to clean up leaves its file behind;
//! [`list`] notices that the process is gone and removes the file.
//!
//! The directory is `$FLOE_REGISTRY_DIR` if set, else
//! `<temp dir>/floe-jobs-<uid>`: per user, because the entries say where to
//! send cancel and savepoint requests, and one user's CLI must not be pointed
//! at a server another user planted. The `*_in` functions take the directory
//! explicitly, for tests and tools that keep several registries without
//! touching the process environment.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use floe_core::JobId;
use serde::{Deserialize, Serialize};

use crate::error::RestError;

/// The environment variable that overrides the registry directory.
pub const REGISTRY_DIR_ENV: &str = "FLOE_REGISTRY_DIR";

/// One running job as recorded in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// The job's id (32 lowercase hex characters).
    pub job_id: String,
    /// The job's name.
    pub name: String,
    /// Where its REST endpoint listens, `host:port`.
    pub rest_address: String,
    /// The process running the job, to detect entries of jobs that died.
    pub pid: u32,
}

/// A job's registry entry; removing it when dropped, so a job that ends
/// normally (or unwinds from a panic) unregisters itself.
#[derive(Debug)]
#[must_use = "the registry entry is removed as soon as the Registration is dropped"]
pub struct Registration {
    path: PathBuf,
}

impl Registration {
    /// The entry's file, for diagnostics.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "cannot remove the job's registry entry"
            ),
        }
    }
}

/// The registry directory: `$FLOE_REGISTRY_DIR`, else
/// `<temp dir>/floe-jobs-<uid>`.
pub fn dir() -> PathBuf {
    match std::env::var_os(REGISTRY_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::temp_dir().join(format!("floe-jobs-{}", current_uid())),
    }
}

/// Records a running job in the registry ([`dir`]) so that the CLI finds it.
pub fn register(
    job_id: JobId,
    name: &str,
    rest_addr: SocketAddr,
) -> Result<Registration, RestError> {
    register_in(&dir(), job_id, name, rest_addr)
}

/// [`register`] in a given registry directory.
///
/// The entry is written to a temporary file and renamed into place, so a
/// reader never sees a half-written entry.
pub fn register_in(
    dir: &Path,
    job_id: JobId,
    name: &str,
    rest_addr: SocketAddr,
) -> Result<Registration, RestError> {
    ensure_dir(dir)?;
    let entry = RegistryEntry {
        job_id: job_id.to_string(),
        name: name.to_string(),
        rest_address: rest_addr.to_string(),
        pid: std::process::id(),
    };
    let path = dir.join(format!("{}.json", entry.job_id));
    let tmp = dir.join(format!(".{}.json.{}.tmp", entry.job_id, entry.pid));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| RestError::Registry { path: p, source }
    };
    let json = serde_json::to_vec_pretty(&entry).expect("a registry entry serializes");
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(io(&path)(e));
    }
    Ok(Registration { path })
}

/// The jobs running on this host, by job id.
///
/// Entries whose process no longer exists are removed; unreadable entries
/// are skipped (with a warning). A missing directory means no jobs.
pub fn list() -> Vec<RegistryEntry> {
    list_in(&dir())
}

/// [`list`] in a given registry directory.
pub fn list_in(dir: &Path) -> Vec<RegistryEntry> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for file in read.flatten() {
        let path = file.path();
        let name = file.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let entry = match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<RegistryEntry>(&b).map_err(|e| e.to_string()))
        {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable job registry entry");
                continue;
            }
        };
        if !process_alive(entry.pid) {
            tracing::debug!(job = %entry.job_id, pid = entry.pid, "removing the registry entry of a job whose process is gone");
            let _ = fs::remove_file(&path);
            continue;
        }
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    entries
}

/// The running job whose id is `job_id_or_prefix`, or the only one whose id
/// starts with it (ids are long; a unique prefix is enough, as with git).
pub fn lookup(job_id_or_prefix: &str) -> Result<RegistryEntry, RestError> {
    lookup_in(&dir(), job_id_or_prefix)
}

/// [`lookup`] in a given registry directory.
pub fn lookup_in(dir: &Path, job_id_or_prefix: &str) -> Result<RegistryEntry, RestError> {
    let wanted = job_id_or_prefix.trim().to_ascii_lowercase();
    let unknown = || RestError::UnknownJob {
        job_id: job_id_or_prefix.to_string(),
        dir: dir.to_path_buf(),
    };
    if wanted.is_empty() {
        return Err(unknown());
    }
    let entries = list_in(dir);
    if let Some(exact) = entries.iter().find(|e| e.job_id == wanted) {
        return Ok(exact.clone());
    }
    let mut matches: Vec<RegistryEntry> = entries
        .into_iter()
        .filter(|e| e.job_id.starts_with(&wanted))
        .collect();
    match matches.len() {
        0 => Err(unknown()),
        1 => Ok(matches.remove(0)),
        _ => Err(RestError::AmbiguousJobId {
            prefix: job_id_or_prefix.to_string(),
            matches: matches.into_iter().map(|e| e.job_id).collect(),
        }),
    }
}

/// Creates the directory (private to this user) or checks that the existing
/// one is this user's.
fn ensure_dir(dir: &Path) -> Result<(), RestError> {
    let err = |source| RestError::Registry {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let meta = fs::metadata(dir).map_err(err)?;
    let me = current_uid();
    if meta.uid() != me {
        return Err(RestError::RegistryNotOwned {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Whether `pid` is a live process (a zombie counts as gone: the job ended).
fn process_alive(pid: u32) -> bool {
    // pid 0 and negative pids address process groups in kill(2): never ours.
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    if cfg!(target_os = "linux") {
        return match fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state != "Z" && state != "X"),
            Err(_) => false,
        };
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(raw, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_absurd_pids_are_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
        assert!(!process_alive(i32::MAX as u32));
    }

    #[test]
    fn a_reaped_child_is_gone_and_a_zombie_counts_as_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not yet reaped: a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!process_alive(pid), "an exited child is not alive");
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
