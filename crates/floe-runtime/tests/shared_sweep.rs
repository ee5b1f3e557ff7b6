//! The sweep of a job's `shared/` directory between runs, on real files:
//! it deletes only files of Floe's shared-state naming that no completed
//! checkpoint references.

use std::collections::{BTreeMap, BTreeSet};

use floe_checkpoint::{
    CheckpointMetadata, CheckpointStorage, JobCheckpointStorage, METADATA_FORMAT_VERSION,
    StateHandle, StorageError, SubtaskStateMeta,
};
use floe_core::JobId;
use floe_runtime::checkpoint::{StoreError, sweep_unreferenced};

fn shared(job: &JobCheckpointStorage, name: &str) -> StateHandle {
    job.write_shared_file(name, 3, |out: &mut Vec<u8>| {
        out.extend_from_slice(b"sst");
        Ok::<_, String>(())
    })
    .unwrap()
}

fn complete(job: &JobCheckpointStorage, id: u64, files: &[&StateHandle]) {
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

fn names(files: impl IntoIterator<Item = StateHandle>) -> BTreeSet<String> {
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
        shared(&job, "000000000000000a-1-000001.sst"),
        shared(&job, "000000000000000b-1-000002.sst"),
        shared(&job, "000000000000000c-2-000003.sst"),
    );
    let late = shared(&job, "000000000000000d-3-000004.sst");
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
    let a = shared(&job, "000000000000000a-1-000001.sst");
    let stray = shared(&job, "000000000000000e-2-000005.sst");
    let orphan = shared(&job, "000000000000000f-3-000006.sst");
    complete(&job, 1, &[&a]);
    // Checkpoint 2's metadata, truncated: it might reference `stray`.
    complete(&job, 2, &[&stray]);
    let metadata = dir.path().join(job_id.to_string()).join("chk-2/_metadata");
    let bytes = std::fs::read(&metadata).unwrap();
    std::fs::write(&metadata, &bytes[..bytes.len() - 3]).unwrap();

    let err = sweep_unreferenced(&job).unwrap_err();
    // A storage fault (the frame does not verify), naming the file.
    assert!(
        matches!(err, StoreError::Storage(StorageError::Format(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("chk-2"), "{err}");
    // Not even the file no checkpoint references is deleted.
    assert_eq!(
        names(job.list_shared_files().unwrap()),
        names([a, stray, orphan])
    );
}

/// Files in `shared/` that are not of Floe's naming (another tool's, a
/// user's notes, a subdirectory) are not Floe's: no sweep and no discard of
/// the shared directory deletes them.
#[test]
fn files_not_of_floes_naming_are_never_swept_or_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_url(&format!("file://{}", dir.path().display())).unwrap();
    let job_id = JobId::random();
    let job = storage.job(job_id);
    let floe_file = shared(&job, "00000000000000aa-1-000001.sst");
    let shared_dir = dir
        .path()
        .canonicalize()
        .unwrap()
        .join(job_id.to_string())
        .join("shared");
    std::fs::write(shared_dir.join("notes.txt"), b"keep me").unwrap();
    std::fs::write(shared_dir.join("000001.sst"), b"keep me").unwrap();
    std::fs::create_dir(shared_dir.join("sub")).unwrap();
    std::fs::write(
        shared_dir.join("sub/00000000000000bb-1-000001.sst"),
        b"keep me",
    )
    .unwrap();

    let swept = sweep_unreferenced(&job).unwrap();
    assert_eq!(names(swept), names([floe_file]));
    let removal = job.discard_shared().unwrap();
    assert!(removal.deleted.is_empty(), "{removal:?}");
    assert_eq!(removal.left.len(), 3, "{removal:?}");
    for keep in [
        "notes.txt",
        "000001.sst",
        "sub/00000000000000bb-1-000001.sst",
    ] {
        assert_eq!(
            std::fs::read(shared_dir.join(keep)).unwrap(),
            b"keep me",
            "{keep}"
        );
    }
    // Once only Floe's files were there, the directory goes with them.
    for keep in ["notes.txt", "000001.sst"] {
        std::fs::remove_file(shared_dir.join(keep)).unwrap();
    }
    std::fs::remove_dir_all(shared_dir.join("sub")).unwrap();
    shared(&job, "00000000000000aa-4-000009.sst");
    let removal = job.discard_shared().unwrap();
    assert_eq!(removal.deleted.len(), 1, "{removal:?}");
    assert!(!shared_dir.exists());
}
