//! At-least-once and none: a plain producer, flushed at every checkpoint
//! barrier (at-least-once) so nothing acknowledged by a checkpoint is
//! still in a buffer.

use super::router::RecordRouter;
use crate::client::{Acks, ClientConfig, Producer};
use floe_runtime::context::{FunctionInitializationContext, FunctionSnapshotContext};
use floe_runtime::{CheckpointedFunction, TaskInfo};

/// The non-transactional side of [`super::KafkaSink`].
pub(crate) struct PlainWriter<T> {
    config: ClientConfig,
    acks: Acks,
    flush_at_checkpoint: bool,
    max_request_bytes: usize,
    schema: super::KafkaRecordSerializationSchema<T>,
    router: Option<RecordRouter<T>>,
    producer: Option<Producer>,
}

impl<T> Clone for PlainWriter<T> {
    fn clone(&self) -> Self {
        PlainWriter::new(
            self.config.clone(),
            self.acks,
            self.flush_at_checkpoint,
            self.max_request_bytes,
            self.schema.clone(),
        )
    }
}

impl<T> PlainWriter<T> {
    pub(crate) fn new(
        config: ClientConfig,
        acks: Acks,
        flush_at_checkpoint: bool,
        max_request_bytes: usize,
        schema: super::KafkaRecordSerializationSchema<T>,
    ) -> Self {
        PlainWriter {
            config,
            acks,
            flush_at_checkpoint,
            max_request_bytes,
            schema,
            router: None,
            producer: None,
        }
    }

    pub(crate) fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        let mut producer = Producer::new(self.config.clone(), self.acks);
        let mut router = RecordRouter::new(self.schema.clone(), info.subtask_index);
        router.refresh_partitions(&mut producer)?;
        self.router = Some(router);
        self.producer = Some(producer);
        Ok(())
    }

    pub(crate) fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        let (Some(router), Some(producer)) = (self.router.as_mut(), self.producer.as_mut()) else {
            anyhow::bail!("the Kafka sink was not opened");
        };
        router.route(batch, producer)?;
        batch.clear();
        if producer.buffered_bytes() >= self.max_request_bytes {
            producer.flush()?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.producer.as_mut() {
            let topic = self.router.as_ref().map_or("", |r| r.topic()).to_string();
            p.flush().map_err(|e| {
                anyhow::anyhow!(e).context(format!("cannot write to Kafka topic '{topic}'"))
            })?;
        }
        Ok(())
    }
}

impl<T: Send + 'static> CheckpointedFunction for PlainWriter<T> {
    fn initialize_state(
        &mut self,
        _ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    fn snapshot_state(&mut self, _ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        if self.flush_at_checkpoint {
            self.flush()?;
        }
        Ok(())
    }
}
