//! The whole-city detector's learned history across restarts, on the state topic.
//!
//! The detector learns its levels from the panes it reads back on start: the rules' longest
//! window plus a day, about three days, while a level rests on `[baseline] weeks` (four) of
//! history. So after every restart the district and cluster rules would judge against a level
//! that is mostly the seeded prior, for weeks. Instead, the instance that publishes whole-city
//! alerts writes the detector's closed hours ([`WholeCityDetector::learned_history`]) to the
//! state topic whenever one more hour closed (at most every `kafka.snapshot_interval`), and
//! every instance reads the newest on start, before it catches up: the hours before what it
//! reads back come from there ([`WholeCityDetector::restore_learned_history`]). A history that
//! cannot be read or decoded is counted and logged, and the detector starts from the panes
//! alone, as it did before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;

use crate::grid::{GridRegistry, RegistryShape};
use crate::metrics::Metrics;
use crate::rules::whole_city::WholeCityDetector;
use crate::rules::BaselineState;
use crate::state::kafka::{StateReader, StateWriter};

/// A read of the state topic under way (blocking, off the runtime).
type Read = tokio::task::JoinHandle<Result<Option<Vec<u8>>, crate::kafka::KafkaError>>;

/// Reads and writes the learned history; see the module documentation.
pub struct LearnedHistoryStore {
    /// Kept until a read came through: one that failed (a broker outage at start) is tried
    /// again every interval, and nothing is written meanwhile, so that an instance that could
    /// not read the history never overwrites it with the few days it learned alone.
    reader: Option<Arc<StateReader>>,
    /// The read under way, if any.
    reading: Option<Read>,
    last_read_started_millis: Option<i64>,
    writer: Arc<StateWriter>,
    /// Whether this instance publishes whole-city alerts (it owns input partition 0): set by
    /// the pipeline task, and only the publisher writes.
    publishing: Arc<AtomicBool>,
    /// Least wall time between two writes (`kafka.snapshot_interval`).
    interval_millis: i64,
    /// How long a read or write may take (`kafka.state_timeout`).
    timeout: Duration,
    registry: Arc<GridRegistry>,
    metrics: Arc<Metrics>,
    /// What was last written (or restored): written again only once it changed.
    last_written: Option<BaselineState>,
    last_write_started_millis: Option<i64>,
    /// The write under way, if any (one at a time), and what it writes.
    writing: Option<(tokio::task::JoinHandle<bool>, BaselineState)>,
}

impl std::fmt::Debug for LearnedHistoryStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LearnedHistoryStore")
            .field("publishing", &self.publishing.load(Ordering::Relaxed))
            .field("last_write_started_millis", &self.last_write_started_millis)
            .finish_non_exhaustive()
    }
}

/// What [`LearnedHistoryStore::new`] takes besides the clients.
#[derive(Debug, Clone)]
pub struct LearnedHistorySettings {
    /// Least time between two writes.
    pub interval: Duration,
    /// How long a read or write may take.
    pub timeout: Duration,
}

impl LearnedHistoryStore {
    /// A store over the state topic's `reader` and `writer`; `publishing` says whether this
    /// instance writes.
    pub fn new(
        reader: StateReader,
        writer: StateWriter,
        publishing: Arc<AtomicBool>,
        settings: LearnedHistorySettings,
        registry: Arc<GridRegistry>,
        metrics: Arc<Metrics>,
    ) -> LearnedHistoryStore {
        LearnedHistoryStore {
            reader: Some(Arc::new(reader)),
            reading: None,
            last_read_started_millis: None,
            writer: Arc::new(writer),
            publishing,
            interval_millis: i64::try_from(settings.interval.as_millis()).unwrap_or(i64::MAX),
            timeout: settings.timeout,
            registry,
            metrics,
            last_written: None,
            last_write_started_millis: None,
            writing: None,
        }
    }

    /// Reads the newest learned history on start (blocking IO off the runtime) and hands it
    /// to `detector`, before its catch-up.
    pub async fn restore_into(&mut self, detector: &mut WholeCityDetector) {
        let Some(read) = self.start_read(crate::time::wall_clock_millis()) else {
            return;
        };
        self.on_read(read.await, detector);
    }

    fn start_read(&mut self, wall_millis: i64) -> Option<Read> {
        let reader = self.reader.clone()?;
        let timeout = self.timeout;
        self.last_read_started_millis = Some(wall_millis);
        Some(tokio::task::spawn_blocking(move || {
            reader.read_learned_history(timeout)
        }))
    }

    /// Handles a read's result: the history restored (or none, or refused), or, if the read
    /// failed, the reader kept to try again.
    fn on_read(
        &mut self,
        read: Result<Result<Option<Vec<u8>>, crate::kafka::KafkaError>, tokio::task::JoinError>,
        detector: &mut WholeCityDetector,
    ) {
        let bytes = match read {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => {
                tracing::info!("no learned history of the whole-city detector on the state topic; it learns from the panes it reads back");
                self.count("none");
                self.reader = None;
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "the whole-city detector's learned history could not be read; tried again at the next interval, and not written meanwhile");
                self.count("read_failed");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "reading the whole-city detector's learned history was aborted; tried again at the next interval");
                self.count("read_failed");
                return;
            }
        };
        self.reader = None;
        match crate::state::decode_learned_history(&bytes, &RegistryShape::of(&self.registry)) {
            Ok(history) => {
                tracing::info!(
                    learned_hours = history.most_closed_hours(),
                    "whole-city detector's learned history restored"
                );
                self.count("restored");
                self.last_written = Some(history.clone());
                detector.restore_learned_history(history);
            }
            Err(error) => {
                tracing::warn!(%error, "the whole-city detector's learned history on the state topic was refused; it learns from the panes it reads back");
                self.count("refused");
            }
        }
    }

    /// While no read has come through: hands over a finished one, or starts another once the
    /// interval has passed. Returns whether a read came through.
    fn read_has_come_through(
        &mut self,
        detector: &mut WholeCityDetector,
        wall_millis: i64,
    ) -> bool {
        if self.reader.is_none() {
            return true;
        }
        if let Some(reading) = self.reading.take() {
            if !reading.is_finished() {
                self.reading = Some(reading);
                return false;
            }
            if let Some(read) = reading.now_or_never() {
                self.on_read(read, detector);
            }
            return self.reader.is_none();
        }
        let interval_passed = self
            .last_read_started_millis
            .is_none_or(|started| wall_millis.saturating_sub(started) >= self.interval_millis);
        if interval_passed {
            self.reading = self.start_read(wall_millis);
        }
        false
    }

    /// Once a tick: retries a read that failed; then writes the detector's learned history if
    /// a read came through, this instance publishes, the detector has caught up, no write is
    /// under way, the interval has passed since the last one, and an hour closed since.
    pub fn on_tick(&mut self, detector: &mut WholeCityDetector, wall_millis: i64) {
        if !self.read_has_come_through(detector, wall_millis) {
            return;
        }
        if !self.publishing.load(Ordering::Relaxed) || detector.is_catching_up() {
            return;
        }
        if let Some((task, _)) = &self.writing {
            if !task.is_finished() {
                return;
            }
        }
        if let Some((task, history)) = self.writing.take() {
            // Finished: written, or to be tried again.
            if task
                .now_or_never()
                .is_some_and(|written| written.unwrap_or(false))
            {
                self.last_written = Some(history);
            }
        }
        let waited_long_enough = self
            .last_write_started_millis
            .is_none_or(|started| wall_millis.saturating_sub(started) >= self.interval_millis);
        let Some(watermark_millis) = detector.watermark_millis() else {
            return;
        };
        if !waited_long_enough {
            return;
        }
        let history = detector.learned_history();
        if self.last_written.as_ref() == Some(&history) {
            return;
        }
        let bytes = match crate::state::learned_history_snapshot(&history, &self.registry) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "the whole-city detector's learned history could not be encoded");
                self.count("write_failed");
                return;
            }
        };
        self.last_write_started_millis = Some(wall_millis);
        let writer = self.writer.clone();
        let metrics = self.metrics.clone();
        let timeout = self.timeout;
        let task = tokio::spawn(async move {
            let result = writer
                .write_learned_history(&bytes, watermark_millis, timeout)
                .await;
            let outcome = match &result {
                Ok(()) => "written",
                Err(error) => {
                    tracing::warn!(%error, "the whole-city detector's learned history was not written; tried again at the next interval");
                    "write_failed"
                }
            };
            metrics
                .whole_city_learned_history
                .with_label_values(&[outcome])
                .inc();
            result.is_ok()
        });
        self.writing = Some((task, history));
    }

    fn count(&self, result: &str) {
        self.metrics
            .whole_city_learned_history
            .with_label_values(&[result])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::whole_city::WATERMARK_GRACE_MILLIS;
    use crate::rules::{Baseline, RuleSet};

    fn store_without_a_broker(metrics: &Arc<Metrics>) -> LearnedHistoryStore {
        let mut config = crate::config::Config::default().kafka;
        // Nothing listens there: every read fails within its timeout.
        config.brokers = "127.0.0.1:1".to_string();
        LearnedHistoryStore::new(
            StateReader::create(&config).unwrap(),
            StateWriter::create(&config).unwrap(),
            Arc::new(AtomicBool::new(true)),
            LearnedHistorySettings {
                interval: Duration::ZERO,
                timeout: Duration::from_millis(300),
            },
            GridRegistry::embedded(),
            metrics.clone(),
        )
    }

    #[tokio::test]
    async fn a_record_that_is_not_a_learned_history_is_refused_counted_and_never_adopted() {
        let metrics = Arc::new(Metrics::new(&["kafka"], "test").unwrap());
        let mut store = store_without_a_broker(&metrics);
        let rules = RuleSet::embedded_default(60_000).unwrap();
        let mut detector = WholeCityDetector::new(&rules, Baseline::embedded());
        store.on_read(
            Ok(Ok(Some(b"GWSNAP06 not a history".to_vec()))),
            &mut detector,
        );
        let count = |result: &str| {
            metrics
                .whole_city_learned_history
                .with_label_values(&[result])
                .get()
        };
        assert_eq!(count("refused"), 1);
        assert_eq!(count("restored"), 0);
        assert_eq!(detector.learned_hours(), 0);
        assert!(store.reader.is_none(), "a refused record is not read again");
        assert!(store.last_written.is_none(), "the next write replaces it");
    }

    #[tokio::test]
    async fn a_failed_read_is_tried_again_and_nothing_is_written_until_one_comes_through() {
        let registry = GridRegistry::embedded();
        let metrics = Arc::new(Metrics::new(&["kafka"], "test").unwrap());
        let mut store = store_without_a_broker(&metrics);
        let read_failed = || {
            metrics
                .whole_city_learned_history
                .with_label_values(&["read_failed"])
                .get()
        };
        let rules = RuleSet::embedded_default(60_000).unwrap();
        let mut detector = WholeCityDetector::new(&rules, Baseline::embedded());
        store.restore_into(&mut detector).await;
        assert_eq!(read_failed(), 1);

        // Caught up, publishing, with a watermark: a write would be due, but no read came
        // through, so the tick tries the read again instead.
        detector.finish_catch_up(&registry);
        detector.hear_watermark(3_600_000, 0);
        detector.advance(WATERMARK_GRACE_MILLIS, &registry, &mut Vec::new());
        let now = crate::time::wall_clock_millis;
        store.on_tick(&mut detector, now());
        assert!(store.reading.is_some(), "a second read started");
        assert!(store.writing.is_none(), "nothing written");
        while store
            .reading
            .as_ref()
            .is_some_and(|read| !read.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store.on_tick(&mut detector, now());
        assert_eq!(read_failed(), 2);
        assert!(store.writing.is_none(), "still nothing written");
        assert!(store.reader.is_some(), "tried again at the next interval");
    }
}
