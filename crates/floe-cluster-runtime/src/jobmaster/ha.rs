//! A JobManager's jobs surviving its restart (`high-availability.storageDir`):
//! the submission kept in the HA storage, the generation claimed there, and
//! the checkpoint store that refuses to commit for a superseded generation.

use std::sync::Arc;

use floe_checkpoint::StateHandle;
use floe_checkpoint::ha::HaStorage;
use floe_core::JobId;
use floe_runtime::checkpoint::{
    CheckpointStore, PayloadError, SharedStateStore, StateFileKind, StoreError,
};
use floe_runtime::gateway::JobEntry;
use serde_json::json;

/// The submission as kept in the HA storage (JSON: readable by hand).
pub(crate) fn encode_submission(entry: &JobEntry) -> Vec<u8> {
    serde_json::to_vec(&json!({ "name": entry.name, "args": entry.args }))
        .expect("a submission encodes")
}

/// Reads a submission [`encode_submission`] wrote.
pub(crate) fn decode_submission(job: JobId, bytes: &[u8]) -> Result<JobEntry, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the HA submission of job {job} is not JSON: {e}"))?;
    let name = v["name"]
        .as_str()
        .ok_or_else(|| format!("the HA submission of job {job} has no name"))?;
    let args = v["args"]
        .as_array()
        .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
        .ok_or_else(|| format!("the HA submission of job {job} has no list of args"))?;
    Ok(JobEntry {
        name: name.to_string(),
        args,
    })
}

/// A job's checkpoint store that commits a checkpoint only while this
/// JobManager's generation of the job is the newest claimed: a JobManager
/// another one took the job over from can no longer complete checkpoints.
pub(crate) struct FencedStore {
    pub inner: Arc<dyn CheckpointStore>,
    pub ha: HaStorage,
    pub job: JobId,
    pub generation: u64,
}

impl CheckpointStore for FencedStore {
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        kind: StateFileKind,
        size_hint: usize,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        self.inner
            .write_state(checkpoint_id, name, kind, size_hint, encode)
    }

    fn read_state(&self, file: &StateHandle, kind: StateFileKind) -> Result<Vec<u8>, StoreError> {
        self.inner.read_state(file, kind)
    }

    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError> {
        let newest = self.ha.generation(self.job)?;
        if newest != self.generation {
            return Err(StoreError::Other(
                format!(
                    "this JobManager holds generation {} of job {} and generation {newest} \
                     was claimed since: it may not commit checkpoint {checkpoint_id}",
                    self.generation, self.job
                )
                .into(),
            ));
        }
        self.inner.complete(checkpoint_id, metadata)
    }

    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StoreError> {
        self.inner.read_metadata(checkpoint_id)
    }

    fn discard(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        self.inner.discard(checkpoint_id)
    }

    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        self.inner.discard_incomplete(checkpoint_id)
    }

    fn completed(&self) -> Result<Vec<u64>, StoreError> {
        self.inner.completed()
    }

    fn location(&self, checkpoint_id: u64) -> Option<String> {
        self.inner.location(checkpoint_id)
    }

    fn shared_state(&self) -> Option<Arc<dyn SharedStateStore>> {
        self.inner.shared_state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_checkpoint::CheckpointStorage;

    #[test]
    fn a_superseded_generation_cannot_commit_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let url = |sub: &str| format!("file://{}/{sub}", dir.path().display());
        let job: JobId = "000000000000000000000000000000bb".parse().unwrap();
        let ha = HaStorage::open(&url("ha")).unwrap();
        ha.add_job(job, b"{}").unwrap();
        let generation = ha.claim(job).unwrap();
        let checkpoints = CheckpointStorage::from_url(&url("checkpoints"))
            .unwrap()
            .job(job);
        let store = FencedStore {
            inner: Arc::new(checkpoints),
            ha: ha.clone(),
            job,
            generation,
        };
        store.complete(1, b"metadata one").unwrap();
        assert_eq!(store.completed().unwrap(), [1]);
        // Another JobManager takes the job over.
        assert_eq!(ha.claim(job).unwrap(), generation + 1);
        let refused = store.complete(2, b"metadata two").unwrap_err().to_string();
        assert!(
            refused.contains("generation 1") && refused.contains("generation 2"),
            "{refused}"
        );
        assert_eq!(store.completed().unwrap(), [1], "nothing was committed");
    }

    #[test]
    fn a_submission_reads_back_and_a_bad_one_is_named() {
        let job: JobId = "000000000000000000000000000000aa".parse().unwrap();
        let entry = JobEntry {
            name: "keyed-count".into(),
            args: vec!["--records".into(), "10".into()],
        };
        assert_eq!(
            decode_submission(job, &encode_submission(&entry)).unwrap(),
            entry
        );
        let e = decode_submission(job, b"{\"name\": 1}").unwrap_err();
        assert!(
            e.contains("has no name") && e.contains(&job.to_string()),
            "{e}"
        );
    }
}
