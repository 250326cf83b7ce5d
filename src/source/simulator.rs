//! [`SimulatorSource`]: the seeded simulator ([`crate::simulator`]) as a live [`Source`],
//! paced in real time or as fast as possible. The simulator's types are re-exported here, at
//! the paths the binary and the tests use.

use serde::{Deserialize, Serialize};

use super::{RecordPayload, Source, SourceError, SourceRecord};
use crate::proto::IncidentEvent;
pub use crate::simulator::{
    Scenario, ScenarioDuration, ScenarioTime, Simulator, SimulatorError, SimulatorSettings,
};

/// How [`SimulatorSource`] releases events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// Release each event when the wall clock reaches its delivery time. Start the simulator
    /// at "now": a start in the past releases the backlog as fast as possible (catching up),
    /// a start in the future waits for it.
    RealTime,
    /// Release events immediately.
    AsFastAsPossible,
}

/// The simulator as a live [`Source`].
#[derive(Debug)]
pub struct SimulatorSource {
    /// The event generator.
    simulator: Simulator,
    /// How events are released.
    pacing: Pacing,
    /// Records to deliver before ending (None: endless, a live source).
    limit: Option<u64>,
    /// Records delivered so far (positions are 1-based delivery sequence numbers).
    delivered: u64,
    /// The next event when it was drawn but is not due yet: (delivery millis, event).
    pending: Option<(i64, IncidentEvent)>,
}

impl SimulatorSource {
    /// Wraps a simulator.
    pub fn new(simulator: Simulator, pacing: Pacing) -> SimulatorSource {
        SimulatorSource {
            simulator,
            pacing,
            limit: None,
            delivered: 0,
            pending: None,
        }
    }

    /// Ends the source after `limit` records.
    pub fn with_limit(mut self, limit: u64) -> SimulatorSource {
        self.limit = Some(limit);
        self
    }

    /// Records delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    fn take_next(&mut self) -> (i64, IncidentEvent) {
        match self.pending.take() {
            Some(pending) => pending,
            None => self.simulator.next_delivery(),
        }
    }

    fn record(&mut self, event: IncidentEvent) -> SourceRecord {
        self.delivered += 1;
        SourceRecord {
            payload: RecordPayload::Event(Box::new(event)),
            partition: 0,
            position: self.delivered,
        }
    }
}

impl Source for SimulatorSource {
    fn name(&self) -> &'static str {
        "simulator"
    }

    async fn next_batch(
        &mut self,
        max_records: usize,
    ) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        let remaining = match self.limit {
            Some(limit) => limit.saturating_sub(self.delivered),
            None => u64::MAX,
        };
        if remaining == 0 {
            return Ok(None);
        }
        let batch_size = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(max_records.max(1));
        let mut batch = Vec::with_capacity(batch_size.min(4096));
        match self.pacing {
            Pacing::AsFastAsPossible => {
                while batch.len() < batch_size {
                    let (_, event) = self.take_next();
                    batch.push(self.record(event));
                }
            }
            Pacing::RealTime => {
                // The next event stays in `pending` while sleeping, so that a cancelled call
                // (e.g. in a `select!` with shutdown) loses nothing.
                let (first_delivery, first_event) = self.take_next();
                self.pending = Some((first_delivery, first_event));
                let wait_millis = first_delivery - crate::time::wall_clock_millis();
                if wait_millis > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(wait_millis as u64)).await;
                }
                let now_millis = crate::time::wall_clock_millis().max(first_delivery);
                while batch.len() < batch_size {
                    let (delivery, event) = self.take_next();
                    if delivery > now_millis {
                        self.pending = Some((delivery, event));
                        break;
                    }
                    batch.push(self.record(event));
                }
            }
        }
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::tests::{registry, settings_with_seed};
    use crate::time::timestamp_to_millis;

    #[test]
    fn simulator_source_as_fast_as_possible_honours_the_limit() {
        let simulator = Simulator::new(settings_with_seed(2), registry()).unwrap();
        let mut source = SimulatorSource::new(simulator, Pacing::AsFastAsPossible).with_limit(250);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let batches = runtime.block_on(async {
            let mut batches = Vec::new();
            while let Some(batch) = source.next_batch(100).await.unwrap() {
                batches.push(batch);
            }
            batches
        });
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let positions: Vec<u64> = batches
            .iter()
            .flatten()
            .map(|record| record.position)
            .collect();
        assert_eq!(positions, (1..=250).collect::<Vec<u64>>());
        assert!(batches
            .iter()
            .flatten()
            .all(|record| matches!(record.payload, RecordPayload::Event(_))));
    }

    #[test]
    fn simulator_source_in_real_time_releases_only_due_events() {
        let now = crate::time::wall_clock_millis();
        let settings = SimulatorSettings {
            start_millis: now + 300,
            rate_multiplier: 1_000.0,
            ..settings_with_seed(4)
        };
        let simulator = Simulator::new(settings, registry()).unwrap();
        let mut source = SimulatorSource::new(simulator, Pacing::RealTime);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let batch = source.next_batch(10_000).await.unwrap().unwrap();
            let released_at = crate::time::wall_clock_millis();
            assert!(
                released_at >= now + 300,
                "released before the first event was due"
            );
            assert!(!batch.is_empty());
            for record in &batch {
                let RecordPayload::Event(event) = &record.payload else {
                    panic!("simulator records are events");
                };
                let received = timestamp_to_millis(event.received_at.as_ref().unwrap());
                assert!(
                    received <= released_at,
                    "event released before delivery time"
                );
            }
        });
    }
}
