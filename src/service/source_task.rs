//! The task that pumps an async [`Source`] (simulator, file) into the pipeline's bounded
//! channel: backpressure is the channel being full. (The Kafka consumer runs on its own
//! thread instead, see [`crate::source::kafka`].)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::Health;
use crate::partitions::SourceMessage;
use crate::source::Source;
use crate::time::wall_clock_millis;

/// Records per source batch.
pub(crate) const BATCH_SIZE: usize = 1024;

/// Pulls batches from a source into the channel until cancelled or the source ends.
pub(crate) async fn source_loop<S: Source>(
    mut source: S,
    batch_sender: mpsc::Sender<SourceMessage>,
    cancel: CancellationToken,
    health: Arc<Health>,
) {
    health
        .source_ready_millis
        .store(wall_clock_millis(), Ordering::Relaxed);
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            batch = source.next_batch(BATCH_SIZE) => batch,
        };
        match batch {
            Ok(Some(records)) => {
                health
                    .source_ready_millis
                    .store(wall_clock_millis(), Ordering::Relaxed);
                if batch_sender
                    .send(SourceMessage::Records(records))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => {
                tracing::info!(source = source.name(), "source reached end of input");
                return;
            }
            Err(error) => {
                tracing::warn!(source = source.name(), %error, "source error; retrying in 1 s");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{RecordPayload, SourceError, SourceRecord};

    /// A source of `remaining` single-record batches, then the end of input.
    struct CountingSource {
        remaining: u64,
    }

    impl Source for CountingSource {
        fn name(&self) -> &'static str {
            "counting"
        }

        async fn next_batch(
            &mut self,
            _max_records: usize,
        ) -> Result<Option<Vec<SourceRecord>>, SourceError> {
            if self.remaining == 0 {
                return Ok(None);
            }
            self.remaining -= 1;
            Ok(Some(vec![SourceRecord {
                payload: RecordPayload::Event(Box::default()),
                partition: 0,
                position: self.remaining,
            }]))
        }
    }

    #[tokio::test]
    async fn every_batch_reaches_the_channel_and_the_end_of_input_closes_it() {
        let (sender, mut receiver) = mpsc::channel(1);
        let health = Arc::new(Health::default());
        let task = tokio::spawn(source_loop(
            CountingSource { remaining: 3 },
            sender,
            CancellationToken::new(),
            health.clone(),
        ));
        let mut batches = 0;
        while let Some(message) = receiver.recv().await {
            assert!(matches!(message, SourceMessage::Records(records) if records.len() == 1));
            batches += 1;
        }
        task.await.unwrap();
        assert_eq!(batches, 3);
        assert!(health.source_ready_millis.load(Ordering::Relaxed) > 0);
    }
}
