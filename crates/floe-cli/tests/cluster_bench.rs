//! `floe bench cluster-keyed-count` with tiny numbers: its JSON lines
//! parse, both modes ran every record, the summary has the ratio, and no
//! process it started outlives it.

use std::process::Command;

use serde_json::Value;

const FLOE: &str = env!("CARGO_BIN_EXE_floe");

/// Whether `pid` is a live (not zombie) `floe` process.
fn floe_alive(pid: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state …`: the state follows the last ')'.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    state != Some("Z") && String::from_utf8_lossy(&cmdline).contains("floe")
}

#[test]
fn cluster_keyed_count_reports_both_modes_and_stops_its_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(FLOE)
        .current_dir(dir.path())
        .args(["bench", "cluster-keyed-count", "--records", "20000"])
        .args(["--keys", "100", "--pairs", "1"])
        .output()
        .expect("run floe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);

    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "two runs and a summary:\n{stdout}");
    for l in &lines {
        assert_eq!(l["bench"], "cluster-keyed-count", "{l}");
        assert_eq!(l["records"], 20000, "{l}");
        assert_eq!(l["keys"], 100, "{l}");
        assert_eq!(l["parallelism"], 2, "{l}");
        assert_eq!(l["backend"], "hashmap", "{l}");
    }
    let run = |mode: &str| {
        lines
            .iter()
            .find(|l| l["mode"] == mode)
            .unwrap_or_else(|| panic!("no {mode} line:\n{stdout}"))
    };
    for mode in ["embedded", "cluster"] {
        let r = run(mode);
        assert_eq!(r["pair"], 0, "{r}");
        assert!(r["records_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["wall_secs"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The embedded run went first in the first pair.
    assert_eq!(lines[0]["mode"], "embedded");
    assert_eq!(lines[0]["first"], true);
    assert!(run("embedded")["net_bytes_per_record"].is_null());
    // Half the keys belong to the other TaskManager: their records crossed
    // a data connection. (The loopback bound is not compared: other
    // processes' loopback traffic during the idle baseline can push it
    // below the exact figure.)
    let cluster = run("cluster");
    let net = cluster["net_bytes_per_record"]
        .as_f64()
        .unwrap_or_else(|| panic!("no network bytes: {cluster}\n{stderr}"));
    assert!(net > 0.1 && net < 100.0, "{cluster}");
    assert!(
        cluster["loopback_bytes_per_record"].is_number(),
        "{cluster}"
    );

    let summary = &lines[2];
    assert_eq!(summary["mode"], "summary");
    assert_eq!(summary["pairs"], 1);
    let ratio = summary["median_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio.is_finite(), "{summary}");
    assert_eq!(summary["ratios"].as_array().unwrap().len(), 1);
    assert!(summary["yardstick_records_per_sec"].as_f64().unwrap() > 0.0);

    let pids = &summary["pids"];
    let mut all: Vec<u64> = vec![pids["jobmanager"].as_u64().unwrap()];
    for key in ["taskmanagers", "runs"] {
        all.extend(
            pids[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap()),
        );
    }
    assert_eq!(all.len(), 1 + 2 + 2, "{summary}");
    let alive: Vec<u64> = all.into_iter().filter(|p| floe_alive(*p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
}
