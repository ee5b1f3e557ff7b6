//! The job registry: entries written atomically, found by id or unique
//! prefix, removed on drop, and stale entries (dead processes) cleaned up.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use floe_core::JobId;
use floe_rest::registry::{self, list_in, lookup_in, register_in};
use floe_rest::{RegistryEntry, RestError};

const A: JobId = JobId::from_u128(0xaaaa_0000_0000_0000_0000_0000_0000_0001);
const B: JobId = JobId::from_u128(0xaaab_0000_0000_0000_0000_0000_0000_0002);
const C: JobId = JobId::from_u128(0xcccc_0000_0000_0000_0000_0000_0000_0003);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn register_writes_the_entry_and_drop_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("registry");
    let reg = register_in(&dir, A, "KeyedCount", addr(8081)).unwrap();
    assert_eq!(reg.path(), dir.join(format!("{A}.json")));
    // Only the entry: the temporary file was renamed into place.
    assert_eq!(files(&dir), vec![format!("{A}.json")]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.path()).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "job_id": A.to_string(),
            "name": "KeyedCount",
            "rest_address": "127.0.0.1:8081",
            "pid": std::process::id(),
        })
    );
    // Private to this user.
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        list_in(&dir),
        vec![RegistryEntry {
            job_id: A.to_string(),
            name: "KeyedCount".into(),
            rest_address: "127.0.0.1:8081".into(),
            pid: std::process::id(),
        }]
    );
    drop(reg);
    assert!(files(&dir).is_empty());
    assert!(list_in(&dir).is_empty());
}

#[test]
fn lookup_by_full_id_or_unique_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _a = register_in(dir, A, "one", addr(1001)).unwrap();
    let _b = register_in(dir, B, "two", addr(1002)).unwrap();
    let _c = register_in(dir, C, "three", addr(1003)).unwrap();
    let listed: Vec<String> = list_in(dir).into_iter().map(|e| e.job_id).collect();
    assert_eq!(listed, vec![A.to_string(), B.to_string(), C.to_string()]);

    assert_eq!(lookup_in(dir, &A.to_string()).unwrap().name, "one");
    assert_eq!(
        lookup_in(dir, &B.to_string().to_uppercase()).unwrap().name,
        "two"
    );
    assert_eq!(lookup_in(dir, "cc").unwrap().rest_address, "127.0.0.1:1003");
    assert_eq!(lookup_in(dir, "aaab").unwrap().name, "two");

    match lookup_in(dir, "aaa") {
        Err(e @ RestError::AmbiguousJobId { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("aaa") && msg.contains("ambiguous"), "{msg}");
            assert!(
                msg.contains(&A.to_string()) && msg.contains(&B.to_string()),
                "{msg}"
            );
        }
        other => panic!("expected an ambiguity error, got {other:?}"),
    }
    for missing in ["dddd", "", "ffffffffffffffffffffffffffffffff"] {
        match lookup_in(dir, missing) {
            Err(e @ RestError::UnknownJob { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(missing), "{msg}");
                assert!(msg.contains(&dir.display().to_string()), "{msg}");
            }
            other => panic!("expected an unknown-job error for {missing:?}, got {other:?}"),
        }
    }
}

#[test]
fn entries_of_dead_processes_are_removed_and_junk_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _live = register_in(dir, A, "live", addr(1)).unwrap();
    // A job that was killed: its process is gone, its entry stayed.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    for (id, pid) in [(B, dead_pid), (C, 0)] {
        let stale = RegistryEntry {
            job_id: id.to_string(),
            name: "killed".into(),
            rest_address: "127.0.0.1:2".into(),
            pid,
        };
        std::fs::write(
            dir.join(format!("{id}.json")),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
    }
    // Not entries: garbage, a temporary file, another file type.
    std::fs::write(dir.join("garbage.json"), b"{ not json").unwrap();
    std::fs::write(dir.join(format!(".{C}.json.1.tmp")), b"{").unwrap();
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();

    let listed: Vec<String> = list_in(dir).into_iter().map(|e| e.name).collect();
    assert_eq!(listed, vec!["live"]);
    let left = files(dir);
    assert!(!left.contains(&format!("{B}.json")), "{left:?}");
    assert!(!left.contains(&format!("{C}.json")), "{left:?}");
    // Files that are not entries are left alone.
    assert!(left.contains(&"garbage.json".to_string()), "{left:?}");
    assert!(left.contains(&"notes.txt".to_string()), "{left:?}");
    assert!(matches!(
        lookup_in(dir, &B.to_string()),
        Err(RestError::UnknownJob { .. })
    ));
}

#[test]
fn a_missing_registry_lists_nothing_and_an_unwritable_one_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(list_in(&tmp.path().join("absent")).is_empty());
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let err = register_in(&file.join("sub"), A, "x", addr(1)).unwrap_err();
    assert!(matches!(err, RestError::Registry { .. }), "{err:?}");
    assert!(err.to_string().contains("a-file"), "{err}");
}

#[test]
fn the_default_directory_is_per_user_under_the_temp_dir() {
    // Read-only check of the environment-derived default (no env changes:
    // tests run in parallel).
    let dir = registry::dir();
    match std::env::var_os(registry::REGISTRY_DIR_ENV) {
        Some(d) if !d.is_empty() => assert_eq!(dir, Path::new(&d)),
        _ => {
            let uid = std::fs::metadata("/proc/self").unwrap().uid();
            assert_eq!(dir, std::env::temp_dir().join(format!("floe-jobs-{uid}")));
        }
    }
}
