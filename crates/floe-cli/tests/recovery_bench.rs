//! `floe bench recovery` with small numbers: the first run is killed only
//! after a checkpoint that holds every key completed, the second restores
//! it (the latest completed checkpoint) and processes records, the JSON
//! line reports both, and no process it started outlives it.

use std::process::Command;

use serde_json::Value;

const FLOE: &str = env!("CARGO_BIN_EXE_floe");

/// The pids of live (not zombie) `floe run` processes whose command line
/// mentions `marker`.
fn floe_runs_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            == Some("Z");
        if !zombie && cmdline.contains(" run ") && cmdline.contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn recovery_restores_the_checkpoint_holding_every_key_and_stops_its_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let checkpoints = format!("file://{}/ck", dir.path().display());
    let keys = 40_000u64;
    let out = Command::new(FLOE)
        .current_dir(dir.path())
        .args(["bench", "recovery", "--keys", &keys.to_string(), "-p", "2"])
        .args([
            "--checkpoint-interval",
            "200",
            "--checkpoint-dir",
            &checkpoints,
        ])
        .args(["--timeout", "120"])
        .output()
        .expect("run floe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    assert_eq!(r["benchmark"], "recovery", "{r}");
    assert_eq!(r["keys"], keys, "{r}");
    assert_eq!(r["backend"], "hashmap", "{r}");
    assert_eq!(r["checkpoint_interval_ms"], 200, "{r}");
    // Killed only once every key had state: at least K records counted.
    assert!(r["records_before_kill"].as_u64().unwrap() >= keys, "{r}");
    let checkpoints = r["checkpoints"].as_array().expect("checkpoints");
    let covering = r["covering_checkpoint_id"].as_u64().unwrap();
    let restored = r["restored_checkpoint_id"].as_u64().unwrap();
    assert!(
        checkpoints.iter().any(|c| c["id"] == covering),
        "the covering checkpoint is among those seen: {r}"
    );
    assert!(restored >= covering, "{r}");
    for c in checkpoints {
        assert!(c["full_bytes"].as_u64().unwrap() > 0, "{r}");
        // Heap checkpoints are full: they write what they consist of.
        assert_eq!(c["full_bytes"], c["checkpointed_bytes"], "{r}");
    }
    // The covering checkpoint holds every key's count: at least a byte
    // per key (varint key and count, about 3.6 bytes per key here).
    let covering_size = checkpoints
        .iter()
        .find(|c| c["id"] == covering)
        .and_then(|c| c["full_bytes"].as_u64())
        .unwrap();
    assert!(covering_size > keys, "{r}");
    // The killed run's files are still there (nothing cleaned them up),
    // and the restored checkpoint is one of them.
    let path = r["covering_checkpoint_path"].as_str().unwrap();
    let local = path.strip_prefix("file://").expect("a file URL");
    assert!(
        std::path::Path::new(local).join("_metadata").exists() || restored > covering,
        "{path}"
    );
    let rest_up = r["rest_up_seconds"].as_f64().unwrap();
    let recovery = r["recovery_seconds"].as_f64().unwrap();
    assert!(rest_up > 0.0 && recovery > rest_up, "{r}");
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(r["restore_peak_rss_bytes"].as_u64().unwrap() > 0, "{r}");
    let marker = dir.path().to_string_lossy().to_string();
    assert!(
        floe_runs_with(&marker).is_empty(),
        "a job the benchmark started is still running"
    );
}
