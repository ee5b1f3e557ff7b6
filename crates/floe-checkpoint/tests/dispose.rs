//! Disposing of a savepoint and discarding checkpoints delete only what a
//! verified `_metadata` (or, for an aborted snapshot, this process's own
//! writes) vouches for: a directory that merely holds a file named
//! `_metadata` — empty, another tool's, a copied `chk-<n>`, or a Floe
//! `_metadata` beside unrelated files — is refused with nothing deleted.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use floe_checkpoint::format::{self, FileKind};
use floe_checkpoint::{CheckpointStorage, SavepointStorage, StateHandle, StorageError};
use floe_core::JobId;

/// Every file under `dir` with its bytes (symbolic links as their target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in read.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            out.insert(
                p.clone(),
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            );
        } else if meta.is_dir() {
            out.insert(p.clone(), b"<dir>".to_vec());
            out.extend(tree(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn metadata(id: u64, is_savepoint: bool, files: &[StateHandle]) -> Vec<u8> {
    common::metadata_listing(id, is_savepoint, &files.iter().collect::<Vec<_>>())
}

/// A completed savepoint with two state files under `target`.
fn savepoint(target: &Path) -> (PathBuf, Vec<StateHandle>) {
    let sp = SavepointStorage::create(target.to_str().unwrap(), JobId::random()).unwrap();
    let files: Vec<StateHandle> = (0..2)
        .map(|i| {
            sp.write_state_file_with(
                &format!("count-{i}-keyed"),
                FileKind::KeyedState,
                8,
                |out| {
                    out.extend_from_slice(format!("state {i}").as_bytes());
                    Ok::<_, String>(())
                },
            )
            .unwrap()
        })
        .collect();
    sp.complete(&metadata(7, true, &files)).unwrap();
    let dir = PathBuf::from(sp.location().strip_prefix("file://").unwrap());
    (dir, files)
}

fn dispose(dir: &Path) -> Result<(), StorageError> {
    SavepointStorage::open(dir.to_str().unwrap())?.dispose()
}

/// Asserts that disposing of `dir` is refused, deletes nothing, and says
/// `why`.
fn refused(dir: &Path, why: &str) {
    let before = tree(dir);
    assert!(!before.is_empty());
    let err = dispose(dir).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(why), "expected {why:?} in: {msg}");
    assert!(matches!(err, StorageError::DeleteRefused { .. }), "{msg}");
    assert!(msg.contains("nothing was deleted"), "{msg}");
    assert_eq!(tree(dir), before, "something was deleted: {msg}");
}

#[test]
fn a_savepoint_is_disposed_of_completely() {
    let target = tempfile::tempdir().unwrap();
    let (dir, _) = savepoint(target.path());
    // A staging file an interrupted write left beside a listed file.
    std::fs::write(dir.join("count-0-keyed#3"), b"partial").unwrap();
    dispose(&dir).unwrap();
    assert!(!dir.exists());
    // Only the savepoint went.
    assert!(target.path().exists());
}

#[test]
fn an_empty_or_foreign_metadata_file_is_refused() {
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("not-a-savepoint");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("important.txt"), b"user data").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/more.txt"), b"user data").unwrap();

    std::fs::write(dir.join("_metadata"), b"").unwrap();
    refused(&dir, "not a Floe snapshot's");
    std::fs::write(dir.join("_metadata"), br#"{"another tool": true}"#).unwrap();
    refused(&dir, "not a Floe snapshot's");
    // A Floe frame of the wrong kind, and one whose payload is not metadata.
    std::fs::write(
        dir.join("_metadata"),
        format::encode(FileKind::KeyedState, b"x"),
    )
    .unwrap();
    refused(&dir, "not a Floe snapshot's");
    std::fs::write(
        dir.join("_metadata"),
        format::encode(FileKind::Metadata, b"\x04junk"),
    )
    .unwrap();
    refused(&dir, "not a Floe snapshot's");
    // A corrupted Floe `_metadata`.
    let mut bytes = format::encode(FileKind::Metadata, &metadata(1, true, &[]));
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join("_metadata"), bytes).unwrap();
    refused(&dir, "corrupted");
}

#[test]
fn a_copied_checkpoint_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let storage =
        CheckpointStorage::from_url(&format!("file://{}", root.path().display())).unwrap();
    let job = storage.job(JobId::random());
    let file = job
        .write_state_file(4, "count-0-keyed", FileKind::KeyedState, b"state")
        .unwrap();
    job.complete_checkpoint(4, &metadata(4, false, &[file]))
        .unwrap();
    let copy = root.path().join("copied-chk-4");
    std::fs::create_dir(&copy).unwrap();
    let chk = root
        .path()
        .canonicalize()
        .unwrap()
        .join(job.job_id().to_string())
        .join("chk-4");
    for name in ["_metadata", "count-0-keyed"] {
        std::fs::copy(chk.join(name), copy.join(name)).unwrap();
    }
    refused(&copy, "is checkpoint 4's, not a savepoint's");
}

#[test]
fn unrelated_entries_beside_a_floe_metadata_are_refused_and_untouched() {
    let target = tempfile::tempdir().unwrap();
    let (dir, _) = savepoint(target.path());
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    refused(&dir, "notes.txt");
    std::fs::remove_file(dir.join("notes.txt")).unwrap();
    std::fs::create_dir(dir.join("subdir")).unwrap();
    refused(&dir, "subdir/");
    std::fs::remove_dir(dir.join("subdir")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("link")).unwrap();
    refused(&dir, "link");
    std::fs::remove_file(dir.join("link")).unwrap();
    dispose(&dir).unwrap();
    assert!(!dir.exists());
    assert!(outside.path().exists());
}

/// A `_metadata` crafted to list files that are not the savepoint's: a
/// user's file in the directory, a path outside it.
#[test]
fn a_metadata_listing_other_files_is_refused() {
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("savepoint-crafted");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(target.path().join("precious"), b"keep me").unwrap();
    let outside = StateHandle {
        path: "../precious".into(),
        size: 7,
        checksum: None,
    };
    std::fs::write(
        dir.join("_metadata"),
        format::encode(FileKind::Metadata, &metadata(1, true, &[outside])),
    )
    .unwrap();
    refused(&dir, "not a file name in the savepoint directory");
    assert_eq!(
        std::fs::read(target.path().join("precious")).unwrap(),
        b"keep me"
    );

    // A user's file named as a state file: not a Floe frame.
    std::fs::write(dir.join("thesis.tex"), b"\\documentclass{article}").unwrap();
    let listed = StateHandle {
        path: "thesis.tex".into(),
        size: 23,
        checksum: None,
    };
    std::fs::write(
        dir.join("_metadata"),
        format::encode(FileKind::Metadata, &metadata(1, true, &[listed])),
    )
    .unwrap();
    refused(&dir, "thesis.tex");
}

/// An aborted savepoint: only what this process wrote goes; a file someone
/// else put there stays, and so does the directory.
#[test]
fn an_incomplete_savepoint_loses_only_what_was_written_for_it() {
    let target = tempfile::tempdir().unwrap();
    let sp = SavepointStorage::create(target.path().to_str().unwrap(), JobId::random()).unwrap();
    sp.write_state_file_with("count-0-keyed", FileKind::KeyedState, 1, |out| {
        out.push(1);
        Ok::<_, String>(())
    })
    .unwrap();
    let dir = PathBuf::from(sp.location().strip_prefix("file://").unwrap());
    std::fs::write(dir.join("other"), b"keep me").unwrap();
    let removal = sp.discard_incomplete().unwrap();
    assert_eq!(removal.deleted.len(), 1, "{removal:?}");
    assert_eq!(removal.left.len(), 1, "{removal:?}");
    assert!(!dir.join("count-0-keyed").exists());
    assert_eq!(std::fs::read(dir.join("other")).unwrap(), b"keep me");
    // Nothing else to delete: the directory goes once it is empty.
    std::fs::remove_file(dir.join("other")).unwrap();
    sp.discard_incomplete().unwrap();
    assert!(!dir.exists());

    // A completed savepoint is never discarded as an aborted one.
    let (done, _) = savepoint(target.path());
    let sp = SavepointStorage::open(done.to_str().unwrap()).unwrap();
    let err = sp.discard_incomplete().unwrap_err();
    assert!(matches!(err, StorageError::DeleteRefused { .. }), "{err}");
    assert!(done.join("_metadata").exists());
}

/// Discarding a checkpoint verifies its `_metadata` too: a checkpoint
/// directory whose `_metadata` is not a valid checkpoint's keeps everything.
#[test]
fn a_checkpoint_with_an_unverifiable_metadata_is_not_discarded() {
    let root = tempfile::tempdir().unwrap();
    let storage =
        CheckpointStorage::from_url(&format!("file://{}", root.path().display())).unwrap();
    let job = storage.job(JobId::random());
    let chk = root
        .path()
        .canonicalize()
        .unwrap()
        .join(job.job_id().to_string());
    let file = job
        .write_state_file(2, "count-0-keyed", FileKind::KeyedState, b"state")
        .unwrap();
    // A savepoint's metadata, another checkpoint's, and an empty one.
    for (bytes, why) in [
        (
            format::encode(
                FileKind::Metadata,
                &metadata(2, true, std::slice::from_ref(&file)),
            ),
            "a savepoint's",
        ),
        (
            format::encode(
                FileKind::Metadata,
                &metadata(3, false, std::slice::from_ref(&file)),
            ),
            "checkpoint 3's",
        ),
        (Vec::new(), "cannot be verified"),
    ] {
        std::fs::write(chk.join("chk-2/_metadata"), &bytes).unwrap();
        let before = tree(&chk);
        let err = job.discard_checkpoint(2).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(tree(&chk), before);
    }
}
