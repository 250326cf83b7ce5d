//! How the service keeps partition state across restarts, one of three ways:
//! - [`Checkpointing::None`]: it does not (state starts empty).
//! - [`Checkpointing::File`]: partition 0 (the simulator's or the file's) is snapshotted to
//!   `state.snapshot_path` every `state.snapshot_interval` and at shutdown, and restored from
//!   it at start.
//! - [`Checkpointing::Kafka`]: every owned partition is snapshotted to the state topic every
//!   `kafka.snapshot_interval`, on revoke and at shutdown, and the input offsets those
//!   acknowledged snapshots cover are committed. Which partitions are due, at which offset, is
//!   decided by [`PartitionedPipelines::snapshots_due`] (unit-tested without a broker).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::partitions::PartitionedPipelines;
use crate::source::kafka::KafkaSource;
use crate::state::kafka::{SnapshotRecord, StateWriter};

/// The service's way of keeping state across restarts.
pub(crate) enum Checkpointing {
    /// State is not kept.
    None,
    /// Partition 0's state in a file.
    File(FileCheckpoint),
    /// Every partition's state in the state topic, with offsets committed behind it.
    Kafka(KafkaCheckpoint),
}

impl Checkpointing {
    /// The Kafka consumer, with a Kafka source.
    pub(crate) fn kafka_source(&self) -> Option<&KafkaSource> {
        match self {
            Checkpointing::Kafka(kafka) => Some(&kafka.source),
            Checkpointing::None | Checkpointing::File(_) => None,
        }
    }
}

/// Snapshots of partition 0 in a file.
pub(crate) struct FileCheckpoint {
    /// `state.snapshot_path`.
    path: PathBuf,
    /// `state.snapshot_interval`.
    interval: Duration,
    /// When the last snapshot was written (or the service started).
    last_written: Instant,
}

impl FileCheckpoint {
    /// Snapshots to `path` every `interval`.
    pub(crate) fn new(path: PathBuf, interval: Duration) -> FileCheckpoint {
        FileCheckpoint {
            path,
            interval,
            last_written: Instant::now(),
        }
    }

    /// Restores partition 0 from the file, if there is one; a file that cannot be read or
    /// restored (it does not fit the running settings or registry) is logged and counted, and
    /// the partition starts empty.
    pub(crate) fn restore(&self, pipelines: &mut PartitionedPipelines, metrics: &Metrics) {
        let path = &self.path;
        let count = |result: &str| {
            metrics
                .state_restores
                .with_label_values(&["file", result])
                .inc()
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                count("empty");
                return;
            }
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot read state snapshot; starting empty");
                count("invalid");
                return;
            }
        };
        match pipelines.assign(0, Some(&bytes), None) {
            Ok(()) => {
                tracing::info!(path = %path.display(), bytes = bytes.len(), "state restored from snapshot");
                count("restored");
            }
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot restore state snapshot; starting empty");
                count("invalid");
            }
        }
    }

    /// Whether the interval has passed since the last snapshot.
    pub(crate) fn is_due(&self) -> bool {
        self.last_written.elapsed() >= self.interval
    }

    /// Writes partition 0's snapshot (to a temporary file, then renamed: a crash never leaves
    /// half a snapshot). Failures are logged; the next interval tries again.
    pub(crate) fn write(&mut self, pipelines: &PartitionedPipelines, metrics: &Metrics) {
        self.last_written = Instant::now();
        let Some((_, owned)) = pipelines.partitions().next() else {
            return;
        };
        let bytes = match crate::state::snapshot(&owned.pipeline) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "state snapshot failed");
                return;
            }
        };
        let temporary_path = self.path.with_extension("tmp");
        let written = std::fs::write(&temporary_path, &bytes)
            .and_then(|()| std::fs::rename(&temporary_path, &self.path));
        match written {
            Ok(()) => metrics.state_snapshot_bytes.set(bytes.len() as i64),
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "writing state snapshot failed")
            }
        }
    }
}

/// Snapshots of every owned partition in the state topic, and the consumer whose offsets
/// they let commit.
pub(crate) struct KafkaCheckpoint {
    /// The Kafka consumer: commits offsets, reports lag and reachability.
    pub(crate) source: KafkaSource,
    /// Writes partition snapshots to the state topic.
    state_writer: StateWriter,
    /// `kafka.snapshot_interval`: how often partitions are snapshotted and committed.
    interval: Duration,
    /// `kafka.state_timeout`: how long a snapshot round (revoke, shutdown) may wait.
    pub(crate) state_timeout: Duration,
    /// When the last periodic round started.
    last_round: Instant,
}

impl KafkaCheckpoint {
    /// Checkpointing of `source`'s partitions through `state_writer`.
    pub(crate) fn new(
        source: KafkaSource,
        state_writer: StateWriter,
        interval: Duration,
        state_timeout: Duration,
    ) -> KafkaCheckpoint {
        KafkaCheckpoint {
            source,
            state_writer,
            interval,
            state_timeout,
            last_round: Instant::now(),
        }
    }

    /// Whether a periodic round is due (the interval passed and the cluster answers); when
    /// it is, the round counts as started now.
    pub(crate) fn start_periodic_round(&mut self) -> bool {
        let broker_reachable = self
            .source
            .progress()
            .broker_reachable
            .load(Ordering::Relaxed);
        if !broker_reachable || self.last_round.elapsed() < self.interval {
            return false;
        }
        self.last_round = Instant::now();
        true
    }

    /// Writes the snapshots of the partitions due among `only` (or all) and waits up to
    /// `timeout` for the state topic. Returns the `(partition, next offset)` pairs now safe to
    /// commit; nothing when a snapshot was not acknowledged. The caller made the outputs
    /// these states produced durable first; `round_started` times the whole round.
    pub(crate) async fn write_snapshots(
        &self,
        pipelines: &mut PartitionedPipelines,
        only: Option<&[u32]>,
        timeout: Duration,
        metrics: &Metrics,
        round_started: Instant,
    ) -> Vec<(u32, u64)> {
        // In step: the partition and offset each state record covers, and the records.
        let mut snapshotted: Vec<(u32, u64)> = Vec::new();
        let mut records: Vec<SnapshotRecord> = Vec::new();
        for (partition, next_offset) in pipelines.snapshots_due(only) {
            let Some((input_topic, kafka_partition)) = self.source.topic_partition_of(partition)
            else {
                continue;
            };
            let Some(owned) = pipelines.partition(partition) else {
                continue;
            };
            match crate::state::snapshot(&owned.pipeline) {
                Ok(bytes) => {
                    metrics.kafka.snapshot_size.observe(bytes.len() as f64);
                    snapshotted.push((partition, next_offset));
                    records.push(SnapshotRecord {
                        input_topic: input_topic.to_string(),
                        input_partition: kafka_partition,
                        next_offset,
                        bytes,
                    });
                }
                Err(error) => {
                    tracing::error!(%error, partition, "serializing partition state failed");
                    metrics.kafka.snapshots.with_label_values(&["failed"]).inc();
                }
            }
        }
        if records.is_empty() {
            return Vec::new();
        }
        if let Err(error) = self.state_writer.write(&records, timeout).await {
            tracing::warn!(%error, partitions = records.len(), "partition snapshots not acknowledged; offsets not committed");
            metrics
                .kafka
                .snapshots
                .with_label_values(&["failed"])
                .inc_by(records.len() as u64);
            return Vec::new();
        }
        metrics
            .kafka
            .snapshots
            .with_label_values(&["ok"])
            .inc_by(records.len() as u64);
        metrics
            .kafka
            .snapshot_duration
            .observe(round_started.elapsed().as_secs_f64());
        pipelines.mark_snapshotted(&snapshotted);
        snapshotted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::{accepted_event, pipelines, T0};

    #[test]
    fn a_file_snapshot_restores_partition_zero_as_it_was() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.snap");
        let (mut before, registry) = pipelines();
        accepted_event(&mut before, &registry.cells()[0].grid_id, "a", T0);
        let metrics = Metrics::new(&["file"], "test").unwrap();
        let mut checkpoint = FileCheckpoint::new(path.clone(), Duration::from_secs(60));
        assert!(!checkpoint.is_due(), "not before the first interval");
        checkpoint.write(&before, &metrics);
        assert!(path.exists() && !path.with_extension("tmp").exists());

        let (mut after, _) = pipelines();
        checkpoint.restore(&mut after, &metrics);
        let snapshot_of = |pipelines: &PartitionedPipelines| {
            let (_, owned) = pipelines.partitions().next().unwrap();
            crate::state::snapshot(&owned.pipeline).unwrap()
        };
        assert_eq!(snapshot_of(&after), snapshot_of(&before));
        assert_eq!(
            metrics
                .state_restores
                .with_label_values(&["file", "restored"])
                .get(),
            1
        );
    }

    #[test]
    fn a_file_snapshot_of_another_registry_is_refused_counted_and_the_partition_starts_empty() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.snap");
        let (mut before, registry) = pipelines();
        accepted_event(&mut before, &registry.cells()[0].grid_id, "a", T0);
        let metrics = Metrics::new(&["file"], "test").unwrap();
        let mut checkpoint = FileCheckpoint::new(path.clone(), Duration::from_secs(60));
        checkpoint.write(&before, &metrics);
        // Same bytes, but the fingerprint no longer names the running registry.
        let mut bytes = std::fs::read(&path).unwrap();
        let fingerprint = crate::grid::RegistryShape::of(&registry)
            .fingerprint
            .to_le_bytes();
        let at = bytes
            .windows(8)
            .position(|window| window == fingerprint)
            .expect("the snapshot carries the registry fingerprint");
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let (mut after, _) = pipelines();
        checkpoint.restore(&mut after, &metrics);
        assert_eq!(
            metrics
                .state_restores
                .with_label_values(&["file", "invalid"])
                .get(),
            1
        );
        let (_, owned) = after.partitions().next().unwrap();
        assert_eq!(owned.pipeline.open_pane_count(), 0, "started empty");
    }

    #[test]
    fn a_missing_or_corrupt_snapshot_file_starts_empty() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.snap");
        let checkpoint = FileCheckpoint::new(path.clone(), Duration::from_secs(60));
        let metrics = Metrics::new(&["file"], "test").unwrap();
        let (mut pipelines, _) = pipelines();
        checkpoint.restore(&mut pipelines, &metrics);
        assert_eq!(
            pipelines.partitions().count(),
            0,
            "no file: nothing assigned"
        );
        std::fs::write(&path, b"not a snapshot").unwrap();
        checkpoint.restore(&mut pipelines, &metrics);
        let (_, owned) = pipelines.partitions().next().unwrap();
        assert_eq!(owned.next_position, None, "partition 0 starts empty");
    }
}
