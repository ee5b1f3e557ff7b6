//! The storage contract every kind of checkpoint storage must meet, run
//! against local disk, JobManager memory and a real S3-compatible server.

#![allow(dead_code)]

use std::collections::BTreeMap;

use floe_checkpoint::{
    CheckpointMetadata, CheckpointStorage, FileKind, FormatError, METADATA_FORMAT_VERSION,
    StateHandle, StorageError, SubtaskStateMeta,
};
use floe_core::JobId;

/// A real `_metadata` payload listing `files` (each as the keyed state of
/// one subtask): what a discard or dispose reads to know a snapshot's files.
pub fn metadata_listing(id: u64, is_savepoint: bool, files: &[&StateHandle]) -> Vec<u8> {
    let subtasks = files
        .iter()
        .enumerate()
        .map(|(i, f)| SubtaskStateMeta {
            subtask: i as u32,
            keyed: Some((*f).clone()),
            raw: None,
            operator: None,
            channel: None,
            keyed_native: None,
            shared: Vec::new(),
        })
        .collect();
    CheckpointMetadata {
        format_version: METADATA_FORMAT_VERSION,
        checkpoint_id: id,
        timestamp_ms: 0,
        is_savepoint,
        operator_info: BTreeMap::new(),
        operators: BTreeMap::from([("op".to_string(), subtasks)]),
    }
    .encode()
}

/// A job id different for every call, so tests sharing a storage never meet.
pub fn fresh_job_id() -> JobId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    JobId::from_u128((u128::from(std::process::id()) << 64) | u128::from(n))
}

/// Writes, completes, lists, reads and discards checkpoints of one job, and
/// checks Flink's layout, `_metadata` semantics and discard boundaries.
/// Returns the job id used.
pub fn exercise_storage(storage: &CheckpointStorage) -> JobId {
    let job_id = fresh_job_id();
    let job = storage.job(job_id);
    assert_eq!(job.job_id(), job_id);
    assert_eq!(job.completed_checkpoints().unwrap(), Vec::<u64>::new());
    assert_eq!(job.latest_completed().unwrap(), None);

    // Layout: <dir>/<job id>/chk-<n>/<file>, plus shared/ and taskowned/.
    let root = storage.url().trim_end_matches('/').to_string();
    let job_dir = format!("{root}/{job_id}");
    assert_eq!(job.job_location(), job_dir);
    assert_eq!(job.checkpoint_location(7), format!("{job_dir}/chk-7"));
    assert_eq!(job.shared_location(), format!("{job_dir}/shared"));
    assert_eq!(job.task_owned_location(), format!("{job_dir}/taskowned"));

    // State files first: the checkpoint does not exist yet.
    let keyed = job
        .write_state_file(
            1,
            "keyed-0",
            FileKind::KeyedState,
            b"keyed state of subtask 0",
        )
        .unwrap();
    assert_eq!(keyed.path, format!("{job_id}/chk-1/keyed-0"));
    assert_eq!(keyed.size, 24 + 19);
    assert_eq!(
        job.location_of(&keyed).unwrap(),
        format!("{job_dir}/chk-1/keyed-0")
    );
    let operator = job
        .write_state_file(1, "operator-0", FileKind::OperatorState, b"")
        .unwrap();
    assert_eq!(job.completed_checkpoints().unwrap(), Vec::<u64>::new());
    let err = job.read_metadata(1).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NotCompleted {
                checkpoint_id: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("{job_dir}/chk-1/_metadata")),
        "{err}"
    );

    // `_metadata` last completes it.
    let meta1 = metadata_listing(1, false, &[&keyed, &operator]);
    let metadata = job.complete_checkpoint(1, &meta1).unwrap();
    assert_eq!(metadata.path, format!("{job_id}/chk-1/_metadata"));
    assert_eq!(job.completed_checkpoints().unwrap(), vec![1]);
    assert_eq!(job.read_metadata(1).unwrap(), meta1);
    assert_eq!(
        job.read_state_file(&keyed, FileKind::KeyedState).unwrap(),
        b"keyed state of subtask 0"
    );
    assert_eq!(
        job.read_state_file(&operator, FileKind::OperatorState)
            .unwrap(),
        b""
    );

    // Put-if-absent: no second completion, no overwritten state file.
    let err = job
        .complete_checkpoint(1, b"a second completion")
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::AlreadyCompleted {
                checkpoint_id: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("{job_dir}/chk-1/_metadata")),
        "{err}"
    );
    assert_eq!(job.read_metadata(1).unwrap(), meta1);
    let err = job
        .write_state_file(1, "keyed-0", FileKind::KeyedState, b"other")
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        job.read_state_file(&keyed, FileKind::KeyedState).unwrap(),
        b"keyed state of subtask 0"
    );

    // A file read as the wrong kind names the file.
    let err = job
        .read_state_file(&keyed, FileKind::OperatorState)
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Format(FormatError::WrongKind { .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("{job_dir}/chk-1/keyed-0")),
        "{err}"
    );
    // A handle whose size disagrees with the file.
    let wrong_size = StateHandle {
        size: keyed.size + 1,
        ..keyed.clone()
    };
    let err = job
        .read_state_file(&wrong_size, FileKind::KeyedState)
        .unwrap_err();
    assert!(matches!(err, StorageError::SizeMismatch { .. }), "{err}");
    // Handles cannot point outside the storage.
    for path in [
        "../etc/passwd",
        "",
        "a//b",
        "/etc/passwd",
        "a/./b",
        "a/",
        "a\\b",
    ] {
        let bad = StateHandle {
            path: path.into(),
            size: 0,
            checksum: None,
        };
        let err = job.read_state_file(&bad, FileKind::KeyedState).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidHandle { .. }),
            "{path}: {err}"
        );
    }

    // chk-10 shares a name prefix with chk-1; chk-3 never completes.
    let tenth = job
        .write_state_file(10, "keyed-0", FileKind::KeyedState, b"ten")
        .unwrap();
    let meta10 = metadata_listing(10, false, &[&tenth]);
    job.complete_checkpoint(10, &meta10).unwrap();
    let two = job
        .write_state_file(2, "keyed-0", FileKind::KeyedState, b"two")
        .unwrap();
    job.complete_checkpoint(2, &metadata_listing(2, false, &[&two]))
        .unwrap();
    let incomplete = job
        .write_state_file(3, "keyed-0", FileKind::KeyedState, b"three")
        .unwrap();
    assert_eq!(job.completed_checkpoints().unwrap(), vec![1, 2, 10]);
    assert_eq!(job.latest_completed().unwrap(), Some(10));

    // Another job in the same storage, untouched by this one's discards.
    let other = storage.job(fresh_job_id());
    let other_handle = other
        .write_state_file(1, "keyed-0", FileKind::KeyedState, b"other job")
        .unwrap();
    other
        .complete_checkpoint(1, &metadata_listing(1, false, &[&other_handle]))
        .unwrap();
    // Handles are relative to the storage root: one job can read another's.
    assert_eq!(
        job.read_state_file(&other_handle, FileKind::KeyedState)
            .unwrap(),
        b"other job"
    );

    // Discard removes exactly chk-1.
    job.discard_checkpoint(1).unwrap();
    assert_eq!(job.completed_checkpoints().unwrap(), vec![2, 10]);
    let err = job
        .read_state_file(&keyed, FileKind::KeyedState)
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{job_dir}/chk-1/keyed-0")),
        "{err}"
    );
    assert!(matches!(
        job.read_metadata(1).unwrap_err(),
        StorageError::NotCompleted { .. }
    ));
    assert_eq!(
        job.read_state_file(&tenth, FileKind::KeyedState).unwrap(),
        b"ten"
    );
    assert_eq!(job.read_metadata(10).unwrap(), meta10);
    assert_eq!(
        job.read_state_file(&incomplete, FileKind::KeyedState)
            .unwrap(),
        b"three"
    );
    assert_eq!(other.completed_checkpoints().unwrap(), vec![1]);
    assert_eq!(
        other
            .read_state_file(&other_handle, FileKind::KeyedState)
            .unwrap(),
        b"other job"
    );
    // Idempotent, and a discarded checkpoint's id can be written afresh.
    job.discard_checkpoint(1).unwrap();
    job.discard_checkpoint(99).unwrap();
    // An incomplete checkpoint has no `_metadata`: a discard of it as a
    // completed one deletes nothing, a discard of what this handle wrote
    // for it deletes that.
    let kept = job.discard_checkpoint(3).unwrap();
    assert!(kept.deleted.is_empty(), "{kept:?}");
    assert_eq!(
        job.read_state_file(&incomplete, FileKind::KeyedState)
            .unwrap(),
        b"three"
    );
    job.discard_incomplete(3).unwrap();
    let err = job
        .read_state_file(&incomplete, FileKind::KeyedState)
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    assert_eq!(job.completed_checkpoints().unwrap(), vec![2, 10]);

    job_id
}

/// Large state files one after another, shrinking and growing (the storage
/// reuses the buffer of an uploaded file for the next): each reads back
/// exactly as written.
pub fn large_files_read_back_exactly(storage: &CheckpointStorage) {
    let job = storage.job(fresh_job_id());
    let sizes = [3 << 20, (3 << 19) + 7, 2 << 20, 5 << 20];
    let mut written = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|j| (j * 31 + i * 7) as u8).collect();
        let handle = job
            // The hint is the previous file's size, as for snapshots.
            .write_state_file_with(
                1,
                &format!("big-{i}"),
                FileKind::KeyedState,
                sizes[i.saturating_sub(1)],
                |out| {
                    out.extend_from_slice(&payload);
                    Ok::<_, String>(())
                },
            )
            .unwrap();
        assert_eq!(handle.size as usize, size + 19, "frame of file {i}");
        written.push((handle, payload));
    }
    for (i, (handle, payload)) in written.iter().enumerate() {
        let read = job.read_state_file(handle, FileKind::KeyedState).unwrap();
        assert!(read == *payload, "file {i} differs from what was written");
    }
}
