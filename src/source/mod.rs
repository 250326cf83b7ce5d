//! Sources: where records come from before `decode` sees them.
//!
//! A [`Source`] hands the pipeline batches of [`SourceRecord`]s. Each record carries its payload
//! (encoded bytes to decode, an already-structured event, or bytes that could not even be
//! framed), the input partition (watermarks are tracked per partition) and a position inside
//! that partition (for dead letters and, later, Kafka offset commits).
//!
//! Implementations:
//! - [`simulator::SimulatorSource`]: the seeded simulator of the 162 communities
//!   ([`simulator::Simulator`]), paced in real time or as fast as possible.
//! - [`file::FileSource`]: replay of a JSONL or length-delimited protobuf file
//!   ([`file::FileReader`] is the synchronous iterator underneath; [`file::EventWriter`] writes
//!   such files).
//! - [`kafka::KafkaSource`]: Kafka topics consumed in a consumer group.

// No panic path reachable from input, state or configuration (README "Security").

pub mod file;
pub mod kafka;
pub mod simulator;

use crate::decode::InputFormat;
use crate::proto::IncidentEvent;

/// What a source hands the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordPayload {
    /// Bytes to decode in `format` (one JSON line, or one protobuf message without its length
    /// prefix).
    Encoded {
        /// The record's bytes, exactly as framed from the input.
        bytes: bytes::Bytes,
        /// How to decode them.
        format: InputFormat,
    },
    /// An already-structured event (the simulator), still validated by the pipeline.
    Event(Box<IncidentEvent>),
    /// Bytes that could not even be framed (e.g. a truncated length-delimited stream);
    /// dead-lettered as `invalid_protobuf` / `invalid_json` with `detail`.
    Unframed {
        /// The bytes that could not be framed (possibly capped), kept for the dead letter.
        bytes: bytes::Bytes,
        /// The format the input was supposed to be in (selects the dead-letter reason).
        format: InputFormat,
        /// Why framing failed, for the dead letter's detail.
        detail: String,
    },
    /// A record larger than the record limit: only its first bytes were kept (a file line is
    /// skipped without being buffered whole); dead-lettered as `oversized`.
    Oversized {
        /// The record's first bytes (at most the limit).
        prefix: bytes::Bytes,
        /// The record's whole size.
        total_bytes: u64,
    },
}

/// One record read from a source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    /// The record's content.
    pub payload: RecordPayload,
    /// Input partition (0 for simulator and files; a dense (topic, partition) id for Kafka) —
    /// state and watermarks are per partition.
    pub partition: u32,
    /// Position within the partition: 1-based line number for JSONL, byte offset for protobuf,
    /// 1-based delivery sequence for the simulator, the offset for Kafka.
    pub position: u64,
}

/// Errors a source can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file (or "-" style label) the error happened on.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An event could not be serialized to JSON.
    #[error("cannot serialize event {event_id:?} to JSON: {source}")]
    Serialize {
        /// Id of the event that failed.
        event_id: String,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The simulator settings are invalid.
    #[error(transparent)]
    Simulator(#[from] simulator::SimulatorError),
    /// A blocking reader task panicked or was cancelled.
    #[error("source reader task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// An earlier read failed so badly that the file's reader was lost with its task.
    #[error("the reader of {path} was lost by an earlier failed read")]
    ReaderLost {
        /// The file being read.
        path: String,
    },
}

/// An async source of records (simulator, file); the Kafka consumer runs on its own thread
/// ([`kafka::KafkaSource`]) because its rebalance callbacks must block.
pub trait Source: Send {
    /// Name used in metrics labels and dead letters ("simulator", "file", "kafka").
    fn name(&self) -> &'static str;

    /// Next batch of at most `max_records`; `Ok(None)` at end of input (never for live
    /// sources). A returned batch is never empty.
    fn next_batch(
        &mut self,
        max_records: usize,
    ) -> impl std::future::Future<Output = Result<Option<Vec<SourceRecord>>, SourceError>> + Send;
}
