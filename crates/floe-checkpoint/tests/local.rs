//! Checkpoint storage on local disk and in JobManager memory: the storage
//! contract, damaged files, discard boundaries, resolving restore paths,
//! URL errors and concurrent use.

mod common;

use std::path::Path;

use floe_checkpoint::storage::JOBMANAGER_MAX_STATE_SIZE;
use floe_checkpoint::{
    CheckpointConfig, CheckpointStorage, FileKind, FormatError, StorageError, StorageKind,
};
use floe_core::JobId;

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn local_storage_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_url(&file_url(dir.path())).unwrap();
    assert_eq!(storage.kind(), StorageKind::LocalFileSystem);
    let job_id = common::exercise_storage(&storage);
    common::large_files_read_back_exactly(&storage);

    // On disk exactly as Flink lays it out, with no staging leftovers.
    let canonical = dir.path().canonicalize().unwrap();
    let job_dir = canonical.join(job_id.to_string());
    let mut entries: Vec<String> = std::fs::read_dir(&job_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["chk-10", "chk-2"]);
    let mut files: Vec<String> = std::fs::read_dir(job_dir.join("chk-10"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["_metadata", "keyed-0"]);
    let raw = std::fs::read(job_dir.join("chk-10/_metadata")).unwrap();
    assert_eq!(&raw[..4], b"FLOE");
}

/// How many of a file's pages are in the page cache (`mincore`).
fn cached_pages(path: &Path) -> usize {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let mut flags = vec![0u8; len.div_ceil(4096)];
    // SAFETY: a read-only mapping of an open file, only probed and unmapped.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len, flags.as_mut_ptr()), 0);
        libc::munmap(addr, len);
    }
    flags.iter().filter(|&&f| f & 1 == 1).count()
}

/// Large state and shared files skip the page cache on a file system that
/// does direct I/O (checkpoints are written every interval and read only
/// on restore), read back exactly, and keep put-if-absent and overwrite.
#[test]
fn large_local_files_bypass_the_page_cache() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.path().join("probe"))
        .is_ok();
    std::fs::remove_file(dir.path().join("probe")).unwrap();
    let storage = CheckpointStorage::from_url(&file_url(dir.path())).unwrap();
    let job_id = common::fresh_job_id();
    let job = storage.job(job_id);
    let payload: Vec<u8> = (0..(6 << 20) + 5).map(|i| (i % 251) as u8).collect();
    let handle = job
        .write_state_file(3, "keyed-0", FileKind::KeyedState, &payload)
        .unwrap();
    let file = dir
        .path()
        .canonicalize()
        .unwrap()
        .join(format!("{job_id}/chk-3/keyed-0"));
    if direct {
        assert!(
            cached_pages(&file) <= 1,
            "{} pages cached",
            cached_pages(&file)
        );
        // The same bytes written through the page cache stay cached: the
        // probe can tell the difference.
        let cached = dir.path().join("cached");
        std::fs::write(&cached, &payload).unwrap();
        assert!(cached_pages(&cached) > payload.len() / 4096 / 2);
        std::fs::remove_file(cached).unwrap();
    } else {
        eprintln!(
            "no direct I/O in {}: only the contents are checked",
            dir.path().display()
        );
    }
    assert_eq!(
        job.read_state_file(&handle, FileKind::KeyedState).unwrap(),
        payload
    );

    // Written once: a second write of the name is refused, the first kept.
    let other = vec![7u8; 2 << 20];
    let err = job
        .write_state_file(3, "keyed-0", FileKind::KeyedState, &other)
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        job.read_state_file(&handle, FileKind::KeyedState).unwrap(),
        payload
    );

    // Shared files are overwritten in place (a re-upload of the same SST).
    for fill in [1u8, 2] {
        let shared = vec![fill; 3 << 20];
        let handle = job
            .write_shared_file("sst-000001", shared.len(), |out| {
                out.extend_from_slice(&shared);
                Ok::<_, String>(())
            })
            .unwrap();
        assert_eq!(
            job.read_state_file(&handle, FileKind::SharedState).unwrap(),
            shared
        );
    }
    let names: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["keyed-0"], "staging files left behind");
}

#[test]
fn jobmanager_storage_meets_the_contract() {
    let storage = CheckpointStorage::from_url("jobmanager").unwrap();
    assert_eq!(storage.kind(), StorageKind::JobManager);
    assert_eq!(storage.url(), "jobmanager");
    common::exercise_storage(&storage);
}

#[test]
fn local_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/checkpoints");
    let storage = CheckpointStorage::from_url(&file_url(&nested)).unwrap();
    assert!(nested.is_dir());
    assert_eq!(
        storage.url(),
        file_url(&nested.canonicalize().unwrap()).as_str()
    );
    // A trailing slash names the same directory.
    let again = CheckpointStorage::from_url(&format!("{}/", file_url(&nested))).unwrap();
    assert_eq!(again.url(), storage.url());
}

#[test]
fn damaged_files_are_errors_naming_the_file_and_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_url(&file_url(dir.path())).unwrap();
    let job = storage.job(common::fresh_job_id());
    let handle = job
        .write_state_file(5, "state", FileKind::KeyedState, b"0123456789abcdef")
        .unwrap();
    job.complete_checkpoint(5, &common::metadata_listing(5, false, &[&handle]))
        .unwrap();
    let chk = dir
        .path()
        .canonicalize()
        .unwrap()
        .join(job.job_id().to_string())
        .join("chk-5");
    let state_file = chk.join("state");
    let metadata_file = chk.join("_metadata");
    let good_state = std::fs::read(&state_file).unwrap();
    let good_metadata = std::fs::read(&metadata_file).unwrap();
    let state_url = format!("{}/chk-5/state", job.job_location());
    let metadata_url = format!("{}/chk-5/_metadata", job.job_location());

    let mut flipped = good_state.clone();
    flipped[20] ^= 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated in the payload",
            good_state[..good_state.len() - 7].to_vec(),
        ),
        ("truncated in the header", good_state[..9].to_vec()),
        ("empty", Vec::new()),
        ("a flipped bit", flipped),
        ("not a Floe file", b"PAR1 not ours at all".to_vec()),
    ];
    for (what, bytes) in &cases {
        std::fs::write(&state_file, bytes).unwrap();
        let err = job
            .read_state_file(&handle, FileKind::KeyedState)
            .unwrap_err();
        assert!(matches!(err, StorageError::Format(_)), "{what}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(&state_url), "{what}: {msg}");
        // Nothing was deleted or repaired, and the checkpoint still counts.
        assert_eq!(&std::fs::read(&state_file).unwrap(), bytes, "{what}");
        assert_eq!(job.completed_checkpoints().unwrap(), vec![5], "{what}");
    }
    let not_ours = job
        .read_state_file(&handle, FileKind::KeyedState)
        .unwrap_err();
    assert!(
        matches!(not_ours, StorageError::Format(FormatError::BadMagic { .. })),
        "{not_ours}"
    );
    std::fs::write(&state_file, &good_state).unwrap();
    assert_eq!(
        job.read_state_file(&handle, FileKind::KeyedState).unwrap(),
        b"0123456789abcdef"
    );

    // A damaged `_metadata`.
    std::fs::write(&metadata_file, &good_metadata[..good_metadata.len() - 1]).unwrap();
    let err = job.read_metadata(5).unwrap_err();
    assert!(err.to_string().contains(&metadata_url), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    // A state file put in place of `_metadata`.
    std::fs::write(&metadata_file, &good_state).unwrap();
    let err = job.read_metadata(5).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Format(FormatError::WrongKind {
                expected: FileKind::Metadata,
                found: FileKind::KeyedState,
                ..
            })
        ),
        "{err}"
    );
    assert!(state_file.exists() && metadata_file.exists());
    assert_eq!(job.completed_checkpoints().unwrap(), vec![5]);
}

#[test]
fn discard_touches_nothing_outside_the_checkpoint_directory() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_url(&file_url(dir.path())).unwrap();
    let job = storage.job(common::fresh_job_id());
    let job_dir = dir
        .path()
        .canonicalize()
        .unwrap()
        .join(job.job_id().to_string());
    // Incremental-state directories and a file beside the chk dirs.
    for keep in ["shared/sst-1", "taskowned/log-1", "chk-1-notes.txt"] {
        let p = job_dir.join(keep);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"keep me").unwrap();
    }
    // A directory outside the storage, linked from inside the checkpoint.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), b"keep me").unwrap();
    let one = job
        .write_state_file(1, "keyed-0", FileKind::KeyedState, b"state")
        .unwrap();
    job.complete_checkpoint(1, &common::metadata_listing(1, false, &[&one]))
        .unwrap();
    std::os::unix::fs::symlink(outside.path(), job_dir.join("chk-1/link")).unwrap();
    let eleven = job
        .write_state_file(11, "keyed-0", FileKind::KeyedState, b"state")
        .unwrap();
    job.complete_checkpoint(11, &common::metadata_listing(11, false, &[&eleven]))
        .unwrap();

    let removal = job.discard_checkpoint(1).unwrap();

    // The link is not the checkpoint's: it stays, and so does chk-1.
    assert_eq!(removal.left.len(), 1, "{removal:?}");
    assert!(removal.left[0].ends_with("/chk-1/link"), "{removal:?}");
    assert!(!job_dir.join("chk-1/keyed-0").exists());
    assert!(!job_dir.join("chk-1/_metadata").exists());
    std::fs::remove_file(job_dir.join("chk-1/link")).unwrap();
    assert_eq!(job.completed_checkpoints().unwrap(), vec![11]);
    for keep in ["shared/sst-1", "taskowned/log-1", "chk-1-notes.txt"] {
        assert_eq!(
            std::fs::read(job_dir.join(keep)).unwrap(),
            b"keep me",
            "{keep}"
        );
    }
    assert_eq!(
        std::fs::read(outside.path().join("precious")).unwrap(),
        b"keep me"
    );
    assert!(job_dir.join("chk-11/_metadata").exists());
}

#[test]
fn a_chk_directory_without_metadata_is_not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_url(&file_url(dir.path())).unwrap();
    let job = storage.job(common::fresh_job_id());
    let job_dir = dir
        .path()
        .canonicalize()
        .unwrap()
        .join(job.job_id().to_string());
    job.write_state_file(4, "keyed-0", FileKind::KeyedState, b"state")
        .unwrap();
    // Leftovers of a crash: an empty chk dir, one with a stray file, and
    // directories whose names are not checkpoint ids.
    for d in ["chk-5", "chk-6", "chk-007", "chk-x", "savepoint-1"] {
        std::fs::create_dir_all(job_dir.join(d)).unwrap();
    }
    std::fs::write(job_dir.join("chk-6/keyed-0"), b"partial").unwrap();
    std::fs::write(job_dir.join("chk-007/_metadata"), b"odd").unwrap();
    assert_eq!(job.completed_checkpoints().unwrap(), Vec::<u64>::new());
    assert_eq!(job.latest_completed().unwrap(), None);
    job.complete_checkpoint(4, b"done").unwrap();
    assert_eq!(job.completed_checkpoints().unwrap(), vec![4]);
}

#[test]
fn jobmanager_storage_refuses_state_over_five_mebibytes() {
    let storage = CheckpointStorage::from_url("jobmanager").unwrap();
    let job = storage.job(JobId::from_u128(7));
    let at_limit = vec![7u8; JOBMANAGER_MAX_STATE_SIZE];
    let handle = job
        .write_state_file(1, "big", FileKind::KeyedState, &at_limit)
        .unwrap();
    assert_eq!(
        job.read_state_file(&handle, FileKind::KeyedState)
            .unwrap()
            .len(),
        JOBMANAGER_MAX_STATE_SIZE
    );
    let over = vec![7u8; JOBMANAGER_MAX_STATE_SIZE + 1];
    let err = job
        .write_state_file(1, "bigger", FileKind::KeyedState, &over)
        .unwrap_err();
    assert!(matches!(err, StorageError::StateTooLarge { .. }), "{err}");
    let msg = err.to_string();
    for part in [
        "jobmanager",
        "bigger",
        "5 MiB",
        "state.checkpoints.dir",
        "file://",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    // Disk has no such limit.
    let dir = tempfile::tempdir().unwrap();
    let disk = CheckpointStorage::from_url(&file_url(dir.path())).unwrap();
    disk.job(JobId::from_u128(7))
        .write_state_file(1, "bigger", FileKind::KeyedState, &over)
        .unwrap();
}

#[test]
fn unusable_urls_are_errors_naming_the_url() {
    let cases = [
        "hdfs://namenode/checkpoints",
        "http://example.com/ckpt",
        "relative/path",
        "/absolute/but/no/scheme",
        "file://otherhost/tmp/x",
        "s3://",
        "file:///tmp/x?versioned=true",
        "",
        // Parsed leniently these would be /relative, /./ckpts and the root.
        "file:relative",
        "file:./ckpts",
        "file:///",
        "FILE:relative",
        "s3:bucket/prefix",
    ];
    for url in cases {
        let err = CheckpointStorage::from_url(url).unwrap_err();
        assert!(
            matches!(err, StorageError::UnsupportedUrl { .. }),
            "{url}: {err}"
        );
        assert!(
            err.to_string().contains(&format!("{url:?}")),
            "{url}: {err}"
        );
    }
    assert!(
        !std::path::Path::new("/relative").exists(),
        "file:relative created /relative"
    );
    // file:/absolute is the short form of file:///absolute (Flink's too).
    let dir = tempfile::tempdir().unwrap();
    let short = format!("file:{}", dir.path().join("short").display());
    CheckpointStorage::from_url(&short).unwrap();
    assert!(dir.path().join("short").is_dir());
    // A file URL whose directory cannot be created names the directory.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let err = CheckpointStorage::from_url(&file_url(&blocker.join("sub"))).unwrap_err();
    assert!(matches!(err, StorageError::CreateDirectory { .. }), "{err}");
    assert!(err.to_string().contains("a-file/sub"), "{err}");
}

#[test]
fn cloud_urls_construct_without_contacting_anything() {
    let s3 = CheckpointStorage::from_url_with_vars(
        "s3://bucket/some/prefix",
        &[
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_REGION", "eu-west-1"),
        ],
    )
    .unwrap();
    assert_eq!(s3.kind(), StorageKind::S3);
    assert_eq!(s3.url(), "s3://bucket/some/prefix");
    assert_eq!(
        s3.job(JobId::from_u128(1)).checkpoint_location(3),
        "s3://bucket/some/prefix/00000000000000000000000000000001/chk-3"
    );
    let gs = CheckpointStorage::from_url_with_vars(
        "gs://bucket/ckpt",
        &[("GOOGLE_BUCKET", "ignored-url-wins")],
    )
    .unwrap();
    assert_eq!(gs.kind(), StorageKind::GoogleCloudStorage);
    assert_eq!(gs.url(), "gs://bucket/ckpt");
    let az = CheckpointStorage::from_url_with_vars(
        "az://container/ckpt",
        &[
            ("AZURE_STORAGE_ACCOUNT_NAME", "floetest"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "ZmxvZQ=="),
        ],
    )
    .unwrap();
    assert_eq!(az.kind(), StorageKind::Azure);
    assert_eq!(az.url(), "az://container/ckpt");
    let bucket_only = CheckpointStorage::from_url_with_vars("s3://bucket", &[]).unwrap();
    assert_eq!(bucket_only.url(), "s3://bucket");
    // From the process environment, as a job would.
    let from_env = CheckpointStorage::from_url("s3a://bucket/ckpt").unwrap();
    assert_eq!(from_env.kind(), StorageKind::S3);
    // A client that cannot be configured names the URL and the reason.
    let err = CheckpointStorage::from_url_with_vars("az://container/ckpt", &[]).unwrap_err();
    assert!(matches!(err, StorageError::Backend { .. }), "{err}");
    assert!(err.to_string().contains("az://container/ckpt"), "{err}");
}

#[test]
fn config_selects_the_storage() {
    let memory = CheckpointStorage::for_config(&CheckpointConfig::default()).unwrap();
    assert_eq!(memory.kind(), StorageKind::JobManager);
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig::default().with_checkpoint_dir(Some(file_url(dir.path())));
    let disk = CheckpointStorage::for_config(&config).unwrap();
    assert_eq!(disk.kind(), StorageKind::LocalFileSystem);
}

#[test]
fn restore_paths_resolve_to_a_completed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = file_url(&dir.path().canonicalize().unwrap());
    let storage = CheckpointStorage::from_url(&root).unwrap();
    let job = storage.job(common::fresh_job_id());
    for id in [3, 7] {
        let h = job
            .write_state_file(id, "keyed-0", FileKind::KeyedState, b"s")
            .unwrap();
        job.complete_checkpoint(id, &common::metadata_listing(id, false, &[&h]))
            .unwrap();
    }
    job.write_state_file(8, "keyed-0", FileKind::KeyedState, b"s")
        .unwrap();
    let job_dir = job.job_location();
    let plain_path = job_dir.strip_prefix("file://").unwrap().to_string();

    for (given, expected) in [
        (job_dir.clone(), 7),
        (format!("{job_dir}/"), 7),
        (plain_path.clone(), 7),
        (format!("{job_dir}/chk-3"), 3),
        (format!("{job_dir}/chk-3/"), 3),
        (format!("{job_dir}/chk-3/_metadata"), 3),
        (format!("{plain_path}/chk-7"), 7),
    ] {
        let resolved = CheckpointStorage::resolve_checkpoint(&given)
            .unwrap_or_else(|e| panic!("{given}: {e}"));
        assert_eq!(resolved.checkpoint_id, expected, "{given}");
        assert_eq!(resolved.job.job_id(), job.job_id(), "{given}");
        assert_eq!(
            floe_checkpoint::CheckpointMetadata::decode(
                &resolved.job.read_metadata(expected).unwrap()
            )
            .unwrap()
            .checkpoint_id,
            expected
        );
    }

    // chk-8 never completed; chk-9 does not exist.
    for id in [8, 9] {
        let err =
            CheckpointStorage::resolve_checkpoint(&format!("{job_dir}/chk-{id}")).unwrap_err();
        assert!(
            matches!(err, StorageError::NotCompleted { checkpoint_id, .. } if checkpoint_id == id),
            "{err}"
        );
        assert!(err.to_string().contains("_metadata"), "{err}");
    }
    // A job directory with no completed checkpoint.
    let empty = storage.job(common::fresh_job_id());
    empty
        .write_state_file(1, "keyed-0", FileKind::KeyedState, b"s")
        .unwrap();
    let err = CheckpointStorage::resolve_checkpoint(&empty.job_location()).unwrap_err();
    assert!(
        matches!(err, StorageError::NoCompletedCheckpoint { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&empty.job_location()), "{err}");
    // Resolving never creates directories.
    let missing = dir.path().join("missing");
    let err = CheckpointStorage::resolve_checkpoint(&format!(
        "{}/{}/chk-1",
        missing.display(),
        job.job_id()
    ))
    .unwrap_err();
    assert!(
        matches!(err, StorageError::DirectoryNotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!missing.exists());
    // Paths that are not checkpoint paths at all.
    for bad in [
        root.clone(),
        format!("{root}/not-a-job/chk-3"),
        format!("{job_dir}/shared"),
        "jobmanager".to_string(),
        "relative/chk-1".to_string(),
    ] {
        let err = CheckpointStorage::resolve_checkpoint(&bad).unwrap_err();
        assert!(
            matches!(err, StorageError::NotACheckpointPath { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(&bad), "{bad}: {err}");
    }
}

#[test]
fn many_threads_share_one_storage() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_url(&file_url(dir.path())).unwrap();
    let job = storage.job(common::fresh_job_id());
    std::thread::scope(|s| {
        for subtask in 0..8u32 {
            let job = job.clone();
            s.spawn(move || {
                for checkpoint in 1..=5u64 {
                    let payload = format!("subtask {subtask} checkpoint {checkpoint}");
                    let handle = job
                        .write_state_file(
                            checkpoint,
                            &format!("keyed-{subtask}"),
                            FileKind::KeyedState,
                            payload.as_bytes(),
                        )
                        .unwrap();
                    assert_eq!(
                        job.read_state_file(&handle, FileKind::KeyedState).unwrap(),
                        payload.as_bytes()
                    );
                }
            });
        }
    });
    // Racing completions: exactly one wins each checkpoint.
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let job = job.clone();
                s.spawn(move || {
                    (1..=5u64)
                        .filter(|id| job.complete_checkpoint(*id, b"m").is_ok())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 5);
    assert_eq!(job.completed_checkpoints().unwrap(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn calling_from_inside_an_async_runtime_is_an_error_not_a_panic() {
    let storage = CheckpointStorage::from_url("jobmanager").unwrap();
    let job = storage.job(JobId::from_u128(1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = runtime.block_on(async { job.completed_checkpoints().unwrap_err() });
    assert!(
        matches!(err, StorageError::InsideAsyncRuntime { .. }),
        "{err}"
    );
    // Dropping the last handle inside a runtime does not panic either.
    drop(storage);
    runtime.block_on(async move { drop(job) });
}
