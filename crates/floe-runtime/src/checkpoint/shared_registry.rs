//! The shared-state registry: which incremental-state files under a job's
//! `shared/` directory are still needed, and when one may be deleted.
//!
//! An SST file uploaded by checkpoint n is referenced by every later
//! checkpoint that still contains it, so it cannot be deleted with n. The
//! registry counts, per file, the retained checkpoints that reference it. A
//! file whose count drops to zero is not deleted at once: a checkpoint
//! already in flight may reference it (tasks build on the latest completed
//! checkpoint at trigger time), so it waits until every checkpoint that was
//! pending at that moment has completed or been aborted. A completing
//! checkpoint that references a waiting file takes it back.
//!
//! Only files under the job's own `shared/` directory are ever deleted:
//! files of the job this one was restored from belong to that job's
//! retained checkpoints.

use std::collections::{HashMap, HashSet};

use floe_checkpoint::StateHandle;

use super::error::StoreError;
use super::store::{CheckpointStore, read_checkpoint_metadata};

/// Reference counts of a job's shared files (see the module docs).
#[derive(Debug, Default)]
pub struct SharedStateRegistry {
    /// This job's `shared/` prefix; other files are never deleted.
    own_prefix: Option<String>,
    /// Retained checkpoints referencing each file, by path.
    refs: HashMap<String, (StateHandle, usize)>,
    /// Unreferenced files, each with the highest checkpoint id pending
    /// when it became unreferenced (`None`: nothing was pending).
    waiting: HashMap<String, (StateHandle, Option<u64>)>,
}

impl SharedStateRegistry {
    /// A registry that may delete files under `own_prefix` (`<job>/shared/`);
    /// `None` deletes nothing (storage without a shared directory).
    pub fn new(own_prefix: Option<String>) -> Self {
        SharedStateRegistry {
            own_prefix,
            ..Default::default()
        }
    }

    fn owned(&self, file: &StateHandle) -> bool {
        self.own_prefix
            .as_deref()
            .is_some_and(|p| file.path.starts_with(p))
    }

    /// A checkpoint referencing `files` (each once) completed or was found
    /// retained on restart.
    pub fn register<'a>(&mut self, files: impl IntoIterator<Item = &'a StateHandle>) {
        for f in files {
            let waiting = self.waiting.remove(&f.path).map(|(w, _)| w);
            let entry = self
                .refs
                .entry(f.path.clone())
                .or_insert_with(|| (waiting.unwrap_or_else(|| f.clone()), 0));
            // Keep a checksum once one checkpoint recorded it.
            if entry.0.checksum.is_none() {
                entry.0.checksum = f.checksum;
            }
            entry.1 += 1;
        }
    }

    /// A retained checkpoint referencing `files` was discarded while
    /// `max_pending` was the highest checkpoint in flight.
    pub fn unregister<'a>(
        &mut self,
        files: impl IntoIterator<Item = &'a StateHandle>,
        max_pending: Option<u64>,
    ) {
        for f in files {
            let Some(entry) = self.refs.get_mut(&f.path) else {
                continue;
            };
            entry.1 -= 1;
            if entry.1 == 0 {
                let (file, _) = self.refs.remove(&f.path).expect("present");
                if self.owned(&file) {
                    self.waiting.insert(file.path.clone(), (file, max_pending));
                }
            }
        }
    }

    /// An aborted checkpoint had written or referenced `files`: those no
    /// retained checkpoint references become deletable (same rule).
    pub fn release<'a>(
        &mut self,
        files: impl IntoIterator<Item = &'a StateHandle>,
        max_pending: Option<u64>,
    ) {
        for f in files {
            if !self.refs.contains_key(&f.path) && self.owned(f) {
                let tag = self
                    .waiting
                    .get(&f.path)
                    .map_or(max_pending, |(_, t)| (*t).max(max_pending));
                self.waiting.insert(f.path.clone(), (f.clone(), tag));
            }
        }
    }

    /// The waiting files that no pending checkpoint can reference any more
    /// (every checkpoint pending when they became unreferenced is over;
    /// `min_pending` is the oldest in flight now), removed from the
    /// registry: the caller deletes them.
    pub fn take_deletable(&mut self, min_pending: Option<u64>) -> Vec<StateHandle> {
        let ready: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, (_, tag))| match (tag, min_pending) {
                (None, _) | (_, None) => true,
                (Some(t), Some(m)) => m > *t,
            })
            .map(|(p, _)| p.clone())
            .collect();
        ready
            .into_iter()
            .filter_map(|p| self.waiting.remove(&p).map(|(f, _)| f))
            .collect()
    }

    /// The checksum recorded for a shared file the registry knows
    /// (referenced or waiting): a checkpoint that references a file rather
    /// than uploading it records the uploader's checksum.
    pub fn checksum_of(&self, path: &str) -> Option<u64> {
        self.refs
            .get(path)
            .map(|(f, _)| f)
            .or_else(|| self.waiting.get(path).map(|(f, _)| f))
            .and_then(|f| f.checksum)
    }

    /// Files referenced by retained checkpoints.
    pub fn referenced(&self) -> usize {
        self.refs.len()
    }
}

/// Deletes every file in the job's `shared/` directory that no completed
/// checkpoint references, and returns them.
///
/// The registry deletes what it knows about, but three kinds of file
/// escape it: uploads of a checkpoint its task then declined, uploads that
/// finished after their run's coordinator stopped, and files waiting for
/// deletion when a failover replaced the registry. Call this only while no
/// upload can be in flight (between two runs, after the uploaders
/// stopped). Nothing is deleted unless every completed checkpoint's
/// metadata could be read: a file a checkpoint might reference is kept.
pub fn sweep_unreferenced(store: &dyn CheckpointStore) -> Result<Vec<StateHandle>, StoreError> {
    let Some(shared) = store.shared_state() else {
        // No shared directory: nothing can be stray in it.
        return Ok(Vec::new());
    };
    let prefix = shared.prefix();
    let listed = shared.list_shared()?;
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let mut referenced = HashSet::new();
    for id in store.completed()? {
        let meta = read_checkpoint_metadata(store, id)?;
        referenced.extend(meta.shared_files().into_iter().map(|f| f.path));
    }
    let stray: Vec<StateHandle> = listed
        .into_iter()
        .filter(|f| f.path.starts_with(&prefix) && !referenced.contains(&f.path))
        .collect();
    for f in &stray {
        shared.delete_shared(f)?;
    }
    Ok(stray)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> StateHandle {
        StateHandle {
            path: format!("job/shared/{name}"),
            size: 10,
            checksum: None,
        }
    }

    #[test]
    fn a_file_goes_when_its_last_checkpoint_goes_and_nothing_in_flight_needs_it() {
        let mut r = SharedStateRegistry::new(Some("job/shared/".into()));
        r.register([&f("a"), &f("b")]); // chk 1
        r.register([&f("b"), &f("c")]); // chk 2
        r.unregister([&f("a"), &f("b")], None); // chk 1 discarded
        assert_eq!(r.take_deletable(None), vec![f("a")]);
        assert_eq!(r.referenced(), 2);
        // Discarded while chk 3 is in flight: kept until 3 is over.
        r.unregister([&f("b"), &f("c")], Some(3));
        assert!(r.take_deletable(Some(3)).is_empty());
        // Chk 3 completes referencing c: c is taken back, b goes.
        r.register([&f("c")]);
        let mut gone = r.take_deletable(None);
        gone.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(gone, vec![f("b")]);
        assert!(r.take_deletable(None).is_empty());
    }

    #[test]
    fn files_of_aborted_checkpoints_go_unless_referenced() {
        let mut r = SharedStateRegistry::new(Some("job/shared/".into()));
        r.register([&f("old")]);
        r.release([&f("old"), &f("new")], Some(7));
        assert!(r.take_deletable(Some(5)).is_empty(), "5 was pending at 7");
        assert_eq!(r.take_deletable(Some(8)), vec![f("new")]);
    }

    #[test]
    fn files_of_another_job_are_never_deleted() {
        let mut r = SharedStateRegistry::new(Some("job/shared/".into()));
        let other = StateHandle {
            path: "other-job/shared/x".into(),
            size: 1,
            checksum: None,
        };
        r.register([&other]);
        r.unregister([&other], None);
        r.release([&other], None);
        assert!(r.take_deletable(None).is_empty());
    }
}
