//! The asynchronous part of a snapshot (TaskManager role): uploader
//! threads encode and write what tasks handed over at a barrier, then
//! acknowledge to the coordinator (or decline).

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use floe_checkpoint::{StateHandle, SubtaskStateMeta};

use super::error::{PayloadError, StoreError};
use super::messages::CoordinatorEvent;
use super::stats::AckStats;
use super::store::{CheckpointStore, FRAME_OVERHEAD, SharedStateStore, StateFileKind};
use super::task_snapshot::{OperatorState, TaskSnapshot};

/// Encodes and writes task snapshots off the task threads, then acknowledges.
pub struct SnapshotUploader;

impl SnapshotUploader {
    /// Starts `threads` upload threads reading `snapshots`.
    pub fn start(
        threads: usize,
        snapshots: Receiver<(usize, TaskSnapshot)>,
        store: Arc<dyn CheckpointStore>,
        events: Sender<CoordinatorEvent>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..threads.max(1))
            .map(|i| {
                let (snapshots, store, events) = (snapshots.clone(), store.clone(), events.clone());
                std::thread::Builder::new()
                    .name(format!("snapshot-uploader-{i}"))
                    .spawn(move || {
                        for (task, snapshot) in snapshots.iter() {
                            let id = snapshot.barrier.id;
                            let started = Instant::now();
                            let (sync, alignment, unaligned) =
                                (snapshot.sync, snapshot.alignment, snapshot.unaligned);
                            let event = match Self::write(snapshot, store.as_ref()) {
                                Ok((states, bytes, mut stats)) => {
                                    stats.sync = sync;
                                    stats.alignment = alignment;
                                    stats.unaligned = unaligned;
                                    stats.async_ = started.elapsed();
                                    CoordinatorEvent::Ack {
                                        checkpoint_id: id,
                                        task,
                                        states,
                                        bytes,
                                        stats,
                                    }
                                }
                                Err(reason) => CoordinatorEvent::Decline {
                                    checkpoint_id: id,
                                    task,
                                    reason,
                                },
                            };
                            if events.send(event).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("spawn snapshot uploader")
            })
            .collect()
    }

    #[allow(clippy::type_complexity)]
    fn write(
        snapshot: TaskSnapshot,
        store: &dyn CheckpointStore,
    ) -> Result<(Vec<(String, SubtaskStateMeta)>, u64, AckStats), StoreError> {
        let id = snapshot.barrier.id;
        let mut states: Vec<(String, SubtaskStateMeta)> =
            Vec::with_capacity(snapshot.operators.len() + 1);
        let mut stats = AckStats::default();
        let mut bytes = 0;
        // One metadata entry per (uid, subtask), whatever kinds of state
        // the operator contributed.
        fn entry<'a>(
            states: &'a mut Vec<(String, SubtaskStateMeta)>,
            uid: &str,
            subtask: u32,
        ) -> &'a mut SubtaskStateMeta {
            let i = match states
                .iter()
                .position(|(u, m)| u == uid && m.subtask == subtask)
            {
                Some(i) => i,
                None => {
                    states.push((
                        uid.to_string(),
                        SubtaskStateMeta {
                            subtask,
                            keyed: None,
                            raw: None,
                            operator: None,
                            channel: None,
                            keyed_native: None,
                            shared: Vec::new(),
                        },
                    ));
                    states.len() - 1
                }
            };
            &mut states[i].1
        }
        let write_bytes = |name: &str, kind: StateFileKind, payload: &[u8]| {
            store.write_state(id, name, kind, payload.len(), &mut |out| {
                out.extend_from_slice(payload);
                Ok(())
            })
        };
        for op in snapshot.operators {
            let size = match op.state {
                OperatorState::Keyed(k) if k.native().is_some() => {
                    let meta = entry(&mut states, &op.uid, op.subtask);
                    let (size, referenced) = Self::write_native(id, &op.uid, &k, store, meta)?;
                    stats.referenced_bytes += referenced;
                    size
                }
                OperatorState::Keyed(k) => {
                    let name = format!("{}-{}-keyed", op.uid, op.subtask);
                    let file = store.write_state(
                        id,
                        &name,
                        StateFileKind::Keyed,
                        k.size_hint(),
                        &mut |out| Ok(k.encode_into(out)?),
                    )?;
                    let size = file.size;
                    entry(&mut states, &op.uid, op.subtask).keyed = Some(file);
                    size
                }
                OperatorState::Operator(payload) => {
                    let name = format!("{}-{}-operator", op.uid, op.subtask);
                    let file = write_bytes(&name, StateFileKind::Operator, &payload)?;
                    let size = file.size;
                    entry(&mut states, &op.uid, op.subtask).operator = Some(file);
                    size
                }
                OperatorState::Raw(raw) => {
                    let size = raw.len() as u64;
                    entry(&mut states, &op.uid, op.subtask).raw = Some(raw);
                    size
                }
            };
            bytes += size;
            stats.operator_bytes.push((op.uid.to_string(), size));
        }
        if let Some((uid, subtask, records)) = snapshot.channel_state {
            let name = format!("{uid}-{subtask}-channel");
            let file = write_bytes(&name, StateFileKind::Channel, &records)?;
            bytes += file.size;
            stats.channel_bytes = file.size;
            stats.operator_bytes.push((uid.to_string(), file.size));
            // Beside the head operator's own state, when it has any.
            entry(&mut states, &uid, subtask).channel = Some(file);
        }
        Ok((states, bytes, stats))
    }
}

impl SnapshotUploader {
    /// Writes a native keyed snapshot: uploads its new SST files to the
    /// job's `shared/` directory, references the others, and writes the
    /// manifest. Returns the bytes written and the bytes referenced.
    fn write_native(
        id: u64,
        uid: &str,
        k: &floe_state::KeyedStateSnapshot,
        store: &dyn CheckpointStore,
        meta: &mut SubtaskStateMeta,
    ) -> Result<(u64, u64), StoreError> {
        use floe_state::native::{NativeSharedFile, SharedFileRef, SstSource};
        let native = k.native().expect("checked by the caller");
        let shared_dir = shared_dir(store, id)?;
        let prefix = shared_dir.prefix();
        let (mut written, mut referenced) = (0, 0);
        let mut shared = Vec::with_capacity(native.sst().len());
        for f in native.sst() {
            let file = match &f.source {
                // Referenced: the coordinator fills in the checksum the
                // registry carries from the checkpoint that uploaded it.
                SstSource::At(r) => StateHandle {
                    path: r.path.clone(),
                    size: r.size,
                    checksum: None,
                },
                SstSource::OwnShared => StateHandle {
                    path: format!("{prefix}{}", f.shared_name),
                    size: f.size + FRAME_OVERHEAD,
                    checksum: None,
                },
                SstSource::Upload => {
                    let path = native.dir().join(&f.name);
                    let file = shared_dir.write_shared(
                        id,
                        &f.shared_name,
                        f.size as usize,
                        &mut |out| {
                            use std::io::Read;
                            std::fs::File::open(&path)
                                .and_then(|mut file| file.read_to_end(out))
                                .map(|_| ())
                                .map_err(|source| PayloadError::Read {
                                    path: path.clone(),
                                    source,
                                })
                        },
                    )?;
                    written += file.size;
                    file
                }
            };
            if !matches!(f.source, SstSource::Upload) {
                referenced += file.size;
            }
            shared.push(NativeSharedFile {
                name: f.name.clone(),
                shared_name: f.shared_name.clone(),
                file: SharedFileRef {
                    path: file.path.clone(),
                    size: file.size,
                },
            });
            if !meta.shared.iter().any(|s| s.path == file.path) {
                meta.shared.push(file);
            }
        }
        let manifest = store.write_state(
            id,
            &format!("{uid}-{}-keyed-native", meta.subtask),
            StateFileKind::KeyedNative,
            4096,
            &mut |out| Ok(k.encode_native_into(shared.clone(), out)?),
        )?;
        written += manifest.size;
        meta.keyed_native = Some(manifest);
        Ok((written, referenced))
    }
}

/// The shared directory incremental state of snapshot `id` goes to: a store
/// without one refuses the snapshot loudly (the task declines it) rather
/// than writing it somewhere it would never be cleaned up.
fn shared_dir(
    store: &dyn CheckpointStore,
    id: u64,
) -> Result<Arc<dyn SharedStateStore>, StoreError> {
    store.shared_state().ok_or(StoreError::NoSharedDirectory {
        checkpoint_id: id,
        reason: "incremental state needs checkpoint storage with a shared directory",
    })
}

#[cfg(test)]
mod tests {
    use super::super::targets::SnapshotTargets;
    use super::super::testing::MemoryStore;
    use super::*;

    #[test]
    fn a_store_without_a_shared_directory_refuses_incremental_state() {
        let err = shared_dir(&MemoryStore::default(), 7)
            .err()
            .expect("no shared directory");
        assert!(
            matches!(
                err,
                StoreError::NoSharedDirectory {
                    checkpoint_id: 7,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "snapshot 7 cannot hold incremental state: incremental state needs checkpoint storage with a shared directory"
        );
        assert!(shared_dir(&MemoryStore::with_shared_dir(), 7).is_ok());
        // Routing keeps the answer of the store it routes to.
        let targets = SnapshotTargets::new(Some(Arc::new(MemoryStore::default())));
        assert!(shared_dir(&targets, 7).is_err());
        assert!(shared_dir(&SnapshotTargets::new(None), 7).is_err());
    }

    #[test]
    fn a_savepoint_refuses_incremental_state() {
        let dir = tempfile::tempdir().unwrap();
        let savepoint = floe_checkpoint::SavepointStorage::create(
            &format!("file://{}", dir.path().display()),
            floe_core::JobId::random(),
        )
        .unwrap();
        let targets = SnapshotTargets::new(Some(Arc::new(MemoryStore::with_shared_dir())));
        targets.register_savepoint(3, Arc::new(savepoint));
        let shared = shared_dir(&targets, 3).expect("the checkpoints' directory");
        let err = shared
            .write_shared(3, "x.sst", 1, &mut |out| {
                out.push(1);
                Ok(())
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("savepoints are self-contained"),
            "{err}"
        );
        // A checkpoint id goes through.
        shared
            .write_shared(4, "y.sst", 1, &mut |out| {
                out.push(1);
                Ok(())
            })
            .unwrap();
    }
}
