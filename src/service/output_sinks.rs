//! Where the pipeline's outputs go in the service: the JSONL files, the Kafka output topics
//! and alert delivery, written, flushed and shut down together — one place instead of the
//! same block at every tick, snapshot round and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kafka::KafkaError;
use crate::metrics::Metrics;
use crate::pipeline::Outputs;
use crate::read_model::{OutputRecord, ReadModelWriter};
use crate::sink::delivery::AlertDelivery;
use crate::sink::file::{FileSinkError, JsonlFileSink};
use crate::sink::kafka::KafkaSink;

/// Why the outputs written so far are not all durable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlushError {
    /// The JSONL files could not be flushed.
    #[error("flushing the output files: {0}")]
    File(#[source] FileSinkError),
    /// The Kafka output topics did not acknowledge everything in time.
    #[error("kafka outputs not acknowledged: {0}")]
    KafkaNotAcknowledged(#[source] KafkaError),
    /// Kafka output records were dropped or not delivered since the sink started: committing
    /// input past them would lose them for good.
    #[error("{lost} kafka output records were lost")]
    KafkaRecordsLost {
        /// Records lost so far.
        lost: u64,
    },
}

/// The configured sinks; each is optional.
pub(crate) struct OutputSinks {
    /// JSONL outputs (`output.dir`).
    pub(crate) file: Option<JsonlFileSink>,
    /// Kafka output topics (`kafka.sinks.enabled`); queueing waits boundedly.
    pub(crate) kafka: Option<KafkaSink>,
    /// Alertmanager / webhook delivery; the hand-off never blocks.
    pub(crate) delivery: Option<AlertDelivery>,
    /// The city-wide read model fed in-process (simulator, file, or Kafka without output
    /// topics); `None` when it reads the output topics instead.
    pub(crate) read_model: Option<ReadModelWriter>,
    /// Counts outputs the file sink could not write.
    pub(crate) metrics: Arc<Metrics>,
}

impl OutputSinks {
    /// Hands `outputs` to every sink and clears the buffer for reuse. Failures are logged and
    /// counted, never fatal: processing goes on (a snapshot round checks durability with
    /// [`OutputSinks::flush`] before it commits anything).
    pub(crate) fn write(&mut self, outputs: &mut Outputs) {
        if outputs.is_empty() {
            return;
        }
        if let Some(read_model) = self.read_model.as_mut() {
            let started = Instant::now();
            read_model.apply_outputs(outputs, crate::time::wall_clock_millis());
            self.observe_write("read_model", started);
        }
        if let Some(delivery) = &self.delivery {
            let started = Instant::now();
            delivery.offer(&outputs.alerts);
            self.observe_write("delivery", started);
        }
        if let Some(kafka_sink) = &self.kafka {
            let started = Instant::now();
            let dropped = kafka_sink.write(outputs);
            self.observe_write("kafka", started);
            if dropped > 0 {
                tracing::error!(
                    dropped,
                    "kafka output records dropped (producer queue full or refused)"
                );
            }
        }
        if let Some(file_sink) = self.file.as_mut() {
            let started = Instant::now();
            let written = file_sink.write(outputs);
            self.observe_write("file", started);
            if let Err(error) = written {
                tracing::error!(%error, "writing outputs failed");
                let lost =
                    outputs.windows.len() + outputs.alerts.len() + outputs.dead_letters.len();
                self.metrics
                    .sink_errors
                    .with_label_values(&["file"])
                    .inc_by(lost as u64);
            }
        }
        outputs.clear();
    }

    /// Adds the time since `started` to `sink`'s `gridwatch_output_write_seconds`: where a
    /// batch's time goes once it is processed (on the Kafka path, queueing the output records
    /// in librdkafka took the pipeline as long as processing the events).
    fn observe_write(&self, sink: &str, started: Instant) {
        self.metrics
            .output_write_seconds
            .with_label_values(&[sink])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Hands this instance's status records (fraud partials, instance status) to the
    /// status topic (`kafka.sinks.status_topic`) and to the in-process read model.
    pub(crate) fn write_status(&mut self, records: Vec<OutputRecord>, wall_millis: i64) {
        if let Some(kafka_sink) = &self.kafka {
            let dropped = kafka_sink.write_status(&records);
            if dropped > 0 {
                tracing::warn!(dropped, "kafka status records dropped");
            }
        }
        if let Some(read_model) = self.read_model.as_mut() {
            for record in records {
                read_model.apply(record, wall_millis);
            }
        }
    }

    /// Publishes the in-process read model's snapshot and stream events.
    pub(crate) fn publish_read_model(&mut self, wall_millis: i64) {
        if let Some(read_model) = self.read_model.as_mut() {
            read_model.publish(wall_millis);
        }
    }

    /// Flushes the files and, with `kafka_timeout`, waits that long for the Kafka outputs to
    /// be acknowledged and checks that none was lost. Both are attempted whatever the other
    /// gives; lost Kafka records are reported first (they must stop all commits). A file
    /// flush failure is counted in `gridwatch_sink_errors_total{sink="file"}`.
    pub(crate) fn flush(&mut self, kafka_timeout: Option<Duration>) -> Result<(), FlushError> {
        let file_flushed = match self.file.as_mut().map(JsonlFileSink::flush) {
            Some(Err(error)) => {
                self.metrics.sink_errors.with_label_values(&["file"]).inc();
                Err(FlushError::File(error))
            }
            Some(Ok(())) | None => Ok(()),
        };
        let (Some(kafka_sink), Some(timeout)) = (&self.kafka, kafka_timeout) else {
            return file_flushed;
        };
        let kafka_acknowledged = kafka_sink
            .flush(timeout)
            .map_err(FlushError::KafkaNotAcknowledged);
        let lost = kafka_sink.lost_records();
        if lost > 0 {
            return Err(FlushError::KafkaRecordsLost { lost });
        }
        file_flushed.and(kafka_acknowledged)
    }

    /// Closes the files, then gives queued alerts at most `alert_delivery_grace` to be
    /// delivered. (The Kafka producer goes with the sinks: it was flushed already.)
    pub(crate) async fn shut_down(&mut self, alert_delivery_grace: Duration) {
        self.file = None;
        if let Some(delivery) = self.delivery.take() {
            delivery.shut_down(alert_delivery_grace).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::DeadLetter;

    fn file_sinks(directory: &std::path::Path) -> OutputSinks {
        OutputSinks {
            file: Some(
                JsonlFileSink::open(directory, true, crate::grid::GridRegistry::embedded())
                    .unwrap(),
            ),
            kafka: None,
            delivery: None,
            read_model: None,
            metrics: Arc::new(Metrics::new(&["file"], "test").unwrap()),
        }
    }

    #[test]
    fn written_outputs_reach_the_files_on_flush_and_the_buffer_is_reused() {
        let directory = tempfile::tempdir().unwrap();
        let mut sinks = file_sinks(directory.path());
        let mut outputs = Outputs::default();
        outputs.windows.push(crate::window::ClosedPane {
            key: crate::window::PaneKey {
                cell: crate::grid::CellIndex(0),
                event_type: crate::proto::EventType::FireSmoke as i32,
            },
            window_start_millis: 0,
            window_end_millis: 60_000,
            counts: crate::window::PaneCounts::default(),
        });
        outputs.dead_letters.push(DeadLetter {
            reason: "late".to_string(),
            ..DeadLetter::default()
        });
        sinks.write(&mut outputs);
        assert!(outputs.is_empty(), "cleared for the next batch");
        sinks.flush(Some(Duration::from_secs(1))).unwrap();
        let read = |name: &str| std::fs::read_to_string(directory.path().join(name)).unwrap();
        assert_eq!(read(crate::sink::file::WINDOWS_FILE).lines().count(), 1);
        assert_eq!(read(crate::sink::file::DEAD_LETTER_FILE).lines().count(), 1);
        assert_eq!(read(crate::sink::file::ALERTS_FILE), "");
        let write_count = |sink: &str| {
            sinks
                .metrics
                .output_write_seconds
                .with_label_values(&[sink])
                .get_sample_count()
        };
        assert_eq!(write_count("file"), 1, "one batch timed for the files");
        assert_eq!(write_count("kafka"), 0, "no kafka sink, no kafka timing");
    }

    #[test]
    fn without_sinks_writing_and_flushing_do_nothing() {
        let mut sinks = OutputSinks {
            file: None,
            kafka: None,
            delivery: None,
            read_model: None,
            metrics: Arc::new(Metrics::new(&["file"], "test").unwrap()),
        };
        let mut outputs = Outputs::default();
        outputs.alerts.push(crate::proto::Alert::default());
        sinks.write(&mut outputs);
        assert!(outputs.is_empty());
        assert!(sinks.flush(Some(Duration::from_secs(1))).is_ok());
    }
}
