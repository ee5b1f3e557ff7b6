//! Built-in sources and sinks.
//!
//! Sources track their read position (generator index, file and byte offset)
//! so that checkpoints can record it and recovery can rewind to it. Sinks
//! format whole batches and write them with one call, so lines from parallel
//! subtasks never interleave mid-line.

pub mod collection;
pub mod file;
pub mod file_sink;
pub mod format;
pub mod generator;
pub mod socket;
pub mod stdout;

pub use collection::{CollectSink, CollectedRecords, CollectionSource};
pub use file::{TextFileSink, TextFileSource};
pub use file_sink::{
    BasePathBucketAssigner, BucketAssigner, ConcatFileCompactor, DateTimeBucketAssigner,
    DefaultRollingPolicy, FileCompactStrategy, FileCompactor, FileSink, FileTransaction,
    IdenticalFileCompactor, OnCheckpointRollingPolicy, OutputFileConfig, RecordWiseFileCompactor,
    RollingPolicy,
};
pub use format::LineFormat;
pub use generator::GeneratorSource;
pub use socket::SocketTextSource;
pub use stdout::StdoutSink;
