//! A restore uses exactly the files the checkpoint wrote: a state file
//! swapped for another intact Floe file of the same size and name (the
//! same subtask's file of the previous checkpoint) is refused, naming the
//! file and both checksums, and the refusal deletes nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::with_timeout;
use floe::prelude::*;
use floe::runtime::JobError;

const KEYS: u64 = 64;

/// A running count per key kept as fixed-width bytes, so every checkpoint's
/// keyed state file has the same size once every key was seen.
#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<[u8; 8]>>,
}

impl KeyedProcessFunction<u64, u64, (u64, u64)> for Count {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.count = Some(ctx.get_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        key: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        let state = self.count.as_ref().expect("opened");
        let c = state.value(ctx)?.map_or(0, u64::from_le_bytes) + 1;
        state.update(ctx, c.to_le_bytes())?;
        out.collect((key, c));
        Ok(())
    }
}

fn start(
    dir: &Path,
    restore: Option<&str>,
) -> Result<floe::runtime::job_manager::JobClient, JobError> {
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(50));
    env.set_config(
        "state.checkpoints.dir",
        &format!("file://{}", dir.join("chk").display()),
    );
    env.set_config("state.checkpoints.num-retained", "2");
    env.set_config(
        "execution.checkpointing.externalized-checkpoint-retention",
        "RETAIN_ON_CANCELLATION",
    );
    if let Some(path) = restore {
        env.set_restore_from_savepoint(path, false);
    }
    let (sink, _out) = CollectSink::new();
    env.from_source(
        GeneratorSource::new(1_000_000, |i| i % KEYS).with_rate(20_000.0),
        "Generator",
    )
    .uid("generator")
    .key_by(|k: &u64| *k)
    .process(Count::default())
    .uid("count")
    .sink_to(sink, "Collect");
    env.execute_async("integrity")
}

/// The completed checkpoint directories of the one job under `chk`, by id.
fn completed(chk: &Path) -> BTreeMap<u64, PathBuf> {
    let mut out = BTreeMap::new();
    for job in std::fs::read_dir(chk).into_iter().flatten().flatten() {
        for c in std::fs::read_dir(job.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = c.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_prefix("chk-").and_then(|n| n.parse().ok())
                && c.path().join("_metadata").exists()
            {
                out.insert(id, c.path());
            }
        }
    }
    out
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn a_keyed_state_file_swapped_for_the_previous_checkpoints_is_refused_by_name() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let client = start(dir.path(), None).unwrap();
        // Two retained checkpoints taken after every key was seen.
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            assert!(Instant::now() < deadline, "no checkpoints");
            if let Some((&id, _)) = completed(&dir.path().join("chk")).iter().next_back() {
                break id;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        while completed(&dir.path().join("chk"))
            .keys()
            .filter(|&&id| id > first)
            .count()
            < 2
        {
            assert!(Instant::now() < deadline, "no checkpoints");
            std::thread::sleep(Duration::from_millis(10));
        }
        client.cancel();
        assert!(matches!(client.wait(), Err(JobError::Cancelled { .. })));

        let retained = completed(&dir.path().join("chk"));
        let ids: Vec<u64> = retained.keys().copied().collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        let (older, newer) = (&retained[&ids[0]], &retained[&ids[1]]);
        // Keyed state files have the same names in every checkpoint.
        let keyed: Vec<String> = std::fs::read_dir(newer)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("count-") && n.contains("-keyed"))
            .collect();
        assert_eq!(keyed.len(), 2, "{keyed:?}");
        let name = &keyed[0];
        let (old_bytes, new_bytes) = (
            std::fs::read(older.join(name)).unwrap(),
            std::fs::read(newer.join(name)).unwrap(),
        );
        assert_eq!(old_bytes.len(), new_bytes.len(), "the swap keeps the size");
        assert_ne!(
            old_bytes, new_bytes,
            "the state moved on between checkpoints"
        );
        std::fs::write(newer.join(name), &old_bytes).unwrap();
        let before = tree(&dir.path().join("chk"));

        let err = match start(
            dir.path().join("restored").as_path(),
            Some(newer.to_str().unwrap()),
        ) {
            Ok(client) => {
                client.cancel();
                let _ = client.wait();
                panic!("the job started from a checkpoint with a swapped state file");
            }
            Err(e) => e.to_string(),
        };
        assert!(err.contains(name.as_str()), "the file is named: {err}");
        assert!(err.contains("checksum"), "{err}");
        assert!(err.contains("is not the file the snapshot wrote"), "{err}");
        assert_eq!(tree(&dir.path().join("chk")), before, "nothing deleted");
    });
}
