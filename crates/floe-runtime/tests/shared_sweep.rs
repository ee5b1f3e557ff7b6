//! The sweep of a job's `shared/` directory between runs, on real files.

use std::collections::{BTreeMap, BTreeSet};

use floe_checkpoint::{CheckpointStorage, JobCheckpointStorage};
use floe_core::JobId;
use floe_runtime::coordinator::{
    CheckpointMetadata, METADATA_FORMAT_VERSION, StateFile, SubtaskStateMeta,
};
use floe_runtime::shared_state::sweep_unreferenced;

fn shared(job: &JobCheckpointStorage, name: &str) -> StateFile {
    job.write_shared_file(name, 3, |out: &mut Vec<u8>| {
        out.extend_from_slice(b"sst");
        Ok::<_, String>(())
    })
    .unwrap()
}

fn complete(job: &JobCheckpointStorage, id: u64, files: &[&StateFile]) {
    let subtask = SubtaskStateMeta {
        subtask: 0,
        keyed: None,
        raw: None,
        operator: None,
        channel: None,
        keyed_native: None,
        shared: files.iter().map(|f| (*f).clone()).collect(),
    };
    let meta = CheckpointMetadata {
        format_version: METADATA_FORMAT_VERSION,
        checkpoint_id: id,
        timestamp_ms: 0,
        is_savepoint: false,
        operator_info: BTreeMap::new(),
        operators: BTreeMap::from([("count".to_string(), vec![subtask])]),
    };
    job.complete_checkpoint(id, &meta.encode()).unwrap();
}

fn names(files: impl IntoIterator<Item = StateFile>) -> BTreeSet<String> {
    files
        .into_iter()
        .map(|f| f.path.rsplit('/').next().unwrap().to_string())
        .collect()
}

#[test]
fn files_no_completed_checkpoint_references_are_swept_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_url(&format!("file://{}", dir.path().display())).unwrap();
    let job = storage.job(JobId::random());
    let (a, b, c) = (
        shared(&job, "a.sst"),
        shared(&job, "b.sst"),
        shared(&job, "c.sst"),
    );
    let late = shared(&job, "late.sst");
    complete(&job, 1, &[&a, &b]);
    complete(&job, 2, &[&b, &c]);

    let swept = sweep_unreferenced(&job).unwrap();
    assert_eq!(names(swept), names([late]));
    let left = job.list_shared_files().unwrap();
    assert_eq!(names(left), names([a, b, c]));
    // Nothing left to sweep.
    assert!(sweep_unreferenced(&job).unwrap().is_empty());
}

#[test]
fn an_unreadable_metadata_file_stops_the_sweep_before_any_delete() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_url(&format!("file://{}", dir.path().display())).unwrap();
    let job_id = JobId::random();
    let job = storage.job(job_id);
    let a = shared(&job, "a.sst");
    let stray = shared(&job, "stray.sst");
    let orphan = shared(&job, "orphan.sst");
    complete(&job, 1, &[&a]);
    // Checkpoint 2's metadata, truncated: it might reference `stray`.
    complete(&job, 2, &[&stray]);
    let metadata = dir.path().join(job_id.to_string()).join("chk-2/_metadata");
    let bytes = std::fs::read(&metadata).unwrap();
    std::fs::write(&metadata, &bytes[..bytes.len() - 3]).unwrap();

    let err = sweep_unreferenced(&job).unwrap_err();
    assert!(err.contains("checkpoint 2"), "{err}");
    // Not even the file no checkpoint references is deleted.
    assert_eq!(
        names(job.list_shared_files().unwrap()),
        names([a, stray, orphan])
    );
}
