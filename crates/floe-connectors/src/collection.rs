//! In-memory collections: a source for tests and small jobs, and a sink that
//! collects results for assertions.

use std::sync::{Arc, Mutex};

use floe_runtime::{SinkWriter, Source, SourceReader, SourceStatus, TaskInfo};

/// Emits the elements of a vector in order (Flink's `fromCollection`). Runs
/// with parallelism 1.
#[derive(Debug, Clone)]
pub struct CollectionSource<T> {
    items: Arc<Vec<T>>,
}

impl<T> CollectionSource<T> {
    /// A source over `items`.
    pub fn new(items: Vec<T>) -> Self {
        CollectionSource {
            items: Arc::new(items),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Source<T> for CollectionSource<T> {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(CollectionReader {
            items: self.items.clone(),
            next: 0,
        }))
    }
}

struct CollectionReader<T> {
    items: Arc<Vec<T>>,
    next: usize,
}

impl<T: Clone + Send + Sync> SourceReader<T> for CollectionReader<T> {
    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok((self.next as u64).to_le_bytes().to_vec())
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        // A position that does not fit never will: no restart helps.
        use floe_runtime::NonRecoverable;
        let next = u64::from_le_bytes(state.try_into().map_err(|_| {
            NonRecoverable::new(format!(
                "collection position must be 8 bytes, got {}",
                state.len()
            ))
        })?) as usize;
        if next > self.items.len() {
            return Err(NonRecoverable::new(format!(
                "collection position {next} beyond its {} elements",
                self.items.len()
            ))
            .into());
        }
        self.next = next;
        Ok(())
    }

    fn poll_next(&mut self, out: &mut Vec<T>, max: usize) -> anyhow::Result<SourceStatus> {
        let end = self.items.len().min(self.next + max);
        out.extend_from_slice(&self.items[self.next..end]);
        self.next = end;
        Ok(if end == self.items.len() {
            SourceStatus::Finished
        } else {
            SourceStatus::MoreAvailable
        })
    }
}

/// The records a [`CollectSink`] received, shared by all its subtasks.
#[derive(Debug)]
pub struct CollectedRecords<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for CollectedRecords<T> {
    fn clone(&self) -> Self {
        CollectedRecords(self.0.clone())
    }
}

impl<T: Clone> CollectedRecords<T> {
    /// A copy of everything collected so far (in arrival order per subtask).
    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Number of records collected so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Collects every record into memory, for tests.
#[derive(Debug)]
pub struct CollectSink<T> {
    shared: CollectedRecords<T>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        CollectSink {
            shared: self.shared.clone(),
        }
    }
}

impl<T> CollectSink<T> {
    /// A sink and the handle to read what it collected.
    pub fn new() -> (Self, CollectedRecords<T>) {
        let shared = CollectedRecords(Arc::new(Mutex::new(Vec::new())));
        (
            CollectSink {
                shared: shared.clone(),
            },
            shared,
        )
    }
}

impl<T: Send + 'static> SinkWriter<T> for CollectSink<T> {
    fn write(&mut self, value: T) -> anyhow::Result<()> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(value);
        Ok(())
    }

    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(batch);
        Ok(())
    }
}
