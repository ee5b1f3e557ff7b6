//! The `_metadata` payload of checkpoints and savepoints is a stable
//! format: pinned byte for byte, so an accidental change cannot slip
//! through, and a snapshot of another format version is refused clearly.

use std::collections::BTreeMap;

use floe_checkpoint::{
    CheckpointMetadata, METADATA_FORMAT_VERSION, MetadataError, OperatorSnapshotInfo, StateHandle,
    SubtaskStateMeta,
};

fn sample() -> CheckpointMetadata {
    let mut operator_info = BTreeMap::new();
    operator_info.insert(
        "count".to_string(),
        OperatorSnapshotInfo {
            name: "Count".into(),
            parallelism: 2,
            max_parallelism: 128,
            max_parallelism_explicit: false,
        },
    );
    let mut operators = BTreeMap::new();
    operators.insert(
        "count".to_string(),
        vec![SubtaskStateMeta {
            subtask: 1,
            keyed: Some(StateHandle {
                path: "k".into(),
                size: 300,
                checksum: Some(0x0123_4567_89ab_cdef),
            }),
            raw: Some(vec![7, 8]),
            operator: None,
            channel: None,
            keyed_native: None,
            shared: vec![StateHandle {
                path: "s".into(),
                size: 9,
                checksum: Some(7),
            }],
        }],
    );
    CheckpointMetadata {
        format_version: METADATA_FORMAT_VERSION,
        checkpoint_id: 5,
        timestamp_ms: 1000,
        is_savepoint: true,
        operator_info,
        operators,
    }
}

#[test]
fn metadata_encoding_is_pinned() {
    let bytes = sample().encode();
    assert_eq!(bytes, PINNED_V4);
    assert_eq!(CheckpointMetadata::decode(&bytes).unwrap(), sample());
}

/// Format version 4: an optional checksum after each file's size
/// (`1, 239, …, 1`: `Some(0x0123456789abcdef)`; `1, 7`: `Some(7)`).
#[rustfmt::skip]
const PINNED_V4: &[u8] = &[
    4, 5, 232, 7, 1, 1, 5, 99, 111, 117, 110, 116, 5, 67, 111, 117, 110, 116, 2, 128, 1, 0,
    1, 5, 99, 111, 117, 110, 116, 1, 1, 1, 1, 107, 172, 2,
    1, 239, 155, 175, 205, 248, 172, 209, 145, 1,
    1, 2, 7, 8, 0, 0, 0, 1, 1, 115, 9,
    1, 7,
];

/// Version 3 (before checksums) still reads: the bytes the pinned test
/// held until version 4, as Floe wrote them at commit 38883bb; its files
/// have no checksum to verify.
#[test]
fn version_3_metadata_still_reads() {
    let v3 = [
        3, 5, 232, 7, 1, 1, 5, 99, 111, 117, 110, 116, 5, 67, 111, 117, 110, 116, 2, 128, 1, 0, 1,
        5, 99, 111, 117, 110, 116, 1, 1, 1, 1, 107, 172, 2, 1, 2, 7, 8, 0, 0, 0, 1, 1, 115, 9,
    ];
    let mut want = sample();
    want.format_version = 3;
    for s in want.operators.values_mut().flatten() {
        for f in s.keyed.iter_mut().chain(s.shared.iter_mut()) {
            f.checksum = None;
        }
    }
    assert_eq!(CheckpointMetadata::decode(&v3).unwrap(), want);
}

/// Version 2 (before incremental checkpoints) still reads: the bytes the
/// previous pinned test held, as written by Floe until then.
#[test]
fn version_2_metadata_still_reads() {
    let v2 = [
        2, 5, 232, 7, 1, 1, 5, 99, 111, 117, 110, 116, 5, 67, 111, 117, 110, 116, 2, 128, 1, 0, 1,
        5, 99, 111, 117, 110, 116, 1, 1, 1, 1, 107, 172, 2, 1, 2, 7, 8, 0, 0,
    ];
    let mut want = sample();
    want.format_version = 2;
    for s in want.operators.values_mut().flatten() {
        s.shared.clear();
        for f in s.keyed.iter_mut() {
            f.checksum = None;
        }
    }
    assert_eq!(CheckpointMetadata::decode(&v2).unwrap(), want);
}

#[test]
fn another_format_version_is_refused_by_name() {
    let mut m = sample();
    m.format_version = 1;
    let err = CheckpointMetadata::decode(&m.encode()).unwrap_err();
    assert_eq!(err, MetadataError::UnsupportedVersion { found: 1 });
    assert!(err.to_string().contains("format version 1"), "{err}");
    m.format_version = 5;
    let err = CheckpointMetadata::decode(&m.encode()).unwrap_err();
    assert_eq!(err, MetadataError::UnsupportedVersion { found: 5 });
    assert!(matches!(
        CheckpointMetadata::decode(&[2, 0xff]),
        Err(MetadataError::Invalid { version: 2, .. })
    ));
    assert!(matches!(
        CheckpointMetadata::decode(&[]),
        Err(MetadataError::NoVersion { .. })
    ));
    // Bytes after a valid payload are not ignored.
    let mut longer = sample().encode();
    longer.push(0);
    let err = CheckpointMetadata::decode(&longer).unwrap_err();
    assert_eq!(
        err,
        MetadataError::TrailingBytes {
            version: 4,
            extra: 1
        }
    );
    assert!(
        err.to_string()
            .ends_with("1 unexpected bytes after the end"),
        "{err}"
    );
}
