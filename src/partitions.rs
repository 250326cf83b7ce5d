//! One [`Pipeline`] per input partition: the unit of state that moves between instances when
//! a Kafka consumer group rebalances.
//!
//! The input topic is keyed by grid cell, so every cell's events arrive on one partition and
//! the state of a partition (panes, views, dedup set, alert state, fraud counts) is
//! independent of the others. Keeping one pipeline per partition makes that independence
//! structural: a partition's state is snapshotted, released on revoke and restored on
//! assignment as a whole, and which events are late depends only on that partition's own
//! records (its own watermark), never on how partitions interleave — so a replay after a
//! crash gives byte-identical outputs.
//!
//! The read side (live view, API, gauges) merges over the owned partitions: the operator
//! watermark is the minimum of the partitions' watermarks, cell counts are summed.
//!
//! Non-Kafka sources (simulator, file) use a single partition 0 whose pipeline keeps the
//! processing-time idle advance of [`crate::window::watermark`].
//!
//! Like [`Pipeline`], this is synchronous: time is an argument, no tasks or locks. With engine
//! threads ([`PartitionedPipelines::with_engine_threads`]), a batch's partitions run side by
//! side inside [`PartitionedPipelines::process_admitted_batch`], which returns when all have
//! finished: the caller still sees one call that takes the batch and leaves its outputs.

// No panic path reachable from input, state or configuration (README "Security").

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::fraud::{FraudSettings, FraudTracker};
use crate::grid::{CellIndex, GridRegistry};
use crate::metrics::Metrics;
use crate::pipeline::{AdmittedRecord, Outputs, Pipeline, PipelineSettings, PipelineState};
use crate::proto::Alert;
use crate::rules::RuleSet;
use crate::source::SourceRecord;
use crate::state::SnapshotError;
use crate::time::NEVER_MILLIS;
use crate::window::PaneKey;

/// What a source hands the pipeline task, in order.
#[derive(Debug)]
pub enum SourceMessage {
    /// Records to process.
    Records(Vec<SourceRecord>),
    /// Records whose stateless stages the source already ran (the Kafka consumer does, on its
    /// own thread, so that the pipeline task only runs the stateful ones).
    Admitted(Vec<AdmittedRecord>),
    /// Kafka: partitions now owned, each with the state to start from. Sent before any of
    /// their records.
    Assigned(Vec<AssignedPartition>),
    /// Kafka: partitions being taken away. Sent after every record of theirs; the consumer
    /// waits for the reply — the next offsets whose snapshots the state topic acknowledged,
    /// which it commits — before it releases them.
    Revoked {
        /// Source partition ids.
        partitions: Vec<u32>,
        /// Where the pipeline answers with `(source partition, next offset)` to commit.
        done: std::sync::mpsc::SyncSender<Vec<(u32, u64)>>,
    },
}

/// A partition handed to this instance by a rebalance.
#[derive(Debug)]
pub struct AssignedPartition {
    /// Source partition id.
    pub partition: u32,
    /// Its state from the latest snapshot in the state topic, decoded, and the offset the
    /// consumer resumes at; `None` when there is no usable snapshot (the consumer resumes at
    /// the committed offset).
    pub restored: Option<(PipelineState, u64)>,
}

/// What a new partition pipeline is built from.
pub struct PipelineFactory {
    /// Window, dedup and decode settings of every partition pipeline.
    pub settings: PipelineSettings,
    /// Communities, cells and devices (shared).
    pub registry: Arc<GridRegistry>,
    /// The rules new partitions start with (replaced on reload).
    pub rules: RuleSet,
    /// Where the pipelines count.
    pub metrics: Arc<Metrics>,
    /// Source name for metrics and dead letters.
    pub source_name: &'static str,
    /// When set, every partition tracks the fraud target.
    pub fraud_settings: Option<FraudSettings>,
}

impl PipelineFactory {
    /// A pipeline with empty state.
    fn new_pipeline(&self) -> Pipeline {
        let mut pipeline = Pipeline::new(
            self.settings.clone(),
            self.registry.clone(),
            self.rules.clone(),
            self.metrics.clone(),
            self.source_name,
        );
        if let Some(fraud_settings) = &self.fraud_settings {
            pipeline.enable_fraud_tracking(FraudTracker::new(fraud_settings));
        }
        pipeline
    }
}

/// One partition this instance owns.
pub struct OwnedPartition {
    /// The partition's pipeline and state.
    pub pipeline: Pipeline,
    /// Position after the last record processed (the Kafka offset to resume from); `None`
    /// before the first record of a partition without a restored snapshot.
    pub next_position: Option<u64>,
    /// `next_position` of the last snapshot the state topic acknowledged (nothing to write
    /// while unchanged).
    pub snapshotted_position: Option<u64>,
    /// Wall time of the partition's latest record: an idle partition stops holding the
    /// operator watermark back.
    pub last_record_wall_millis: Option<i64>,
    /// Cooldown-suppressed repeats per rule already added to
    /// `gridwatch_alerts_suppressed_total` (the engine counts them; metrics get the growth).
    exported_suppressed_repeats: BTreeMap<String, u64>,
}

/// The input offset a new snapshot of `owned` would cover, when one is due: the partition
/// has a position (it processed a record or was restored) and moved since its last
/// acknowledged snapshot. `None` means nothing new to write.
pub fn snapshot_due(owned: &OwnedPartition) -> Option<u64> {
    let next_position = owned.next_position?;
    if owned.snapshotted_position == Some(next_position) {
        return None;
    }
    Some(next_position)
}

/// Adds the growth of `owned`'s per-rule suppressed-repeat counts to the metric. A count
/// lower than the one exported (the engine restarted counting) counts from zero.
fn export_suppressed_repeats(owned: &mut OwnedPartition, metrics: &Metrics) {
    for (rule, counters) in &owned.pipeline.rules().stats().per_rule {
        let current = counters.suppressed_repeats;
        let exported = owned
            .exported_suppressed_repeats
            .entry(rule.clone())
            .or_default();
        let growth = current.checked_sub(*exported).unwrap_or(current);
        *exported = current;
        if growth > 0 {
            metrics
                .alerts_suppressed
                .with_label_values(&[rule.as_str()])
                .inc_by(growth);
        }
    }
}

/// Threads that run the engines of a batch's partitions side by side
/// (`kafka.engine_threads`). Each partition's records still go through its own engine in
/// input order, and its outputs stay in that order; only different partitions' engines run
/// at once, which their independence (see the module's documentation) allows.
struct EngineThreads {
    /// The threads (`engine-<n>`), kept for the service's lifetime.
    pool: rayon::ThreadPool,
    /// One output buffer per partition of the batch being processed, reused between batches.
    outputs_by_partition: Vec<Outputs>,
}

/// The engine threads could not be started (the operating system refused a thread).
#[derive(Debug, thiserror::Error)]
#[error("starting {threads} engine threads failed: {source}")]
pub struct EngineThreadsError {
    threads: usize,
    source: rayon::ThreadPoolBuildError,
}

/// The pipelines of the partitions this instance owns.
pub struct PartitionedPipelines {
    /// How partitions that appear are set up.
    factory: PipelineFactory,
    /// Owned partitions by source partition id.
    partitions: BTreeMap<u32, OwnedPartition>,
    /// Wall-clock silence after which a partition no longer holds the operator watermark
    /// back (`window.idle_timeout`; never by default).
    operator_idle_timeout_millis: i64,
    /// When set, a batch spanning several partitions runs their engines on these threads.
    engine_threads: Option<EngineThreads>,
}

impl PartitionedPipelines {
    /// No partitions yet: they appear with their first record or on assignment.
    pub fn new(factory: PipelineFactory) -> PartitionedPipelines {
        PartitionedPipelines {
            factory,
            partitions: BTreeMap::new(),
            operator_idle_timeout_millis: NEVER_MILLIS,
            engine_threads: None,
        }
    }

    /// Runs the engines of a batch's partitions on `threads` threads of their own
    /// ([`PartitionedPipelines::process_admitted_batch`]); 0 or 1 keeps them on the caller's
    /// thread, one after the other.
    pub fn with_engine_threads(
        mut self,
        threads: usize,
    ) -> Result<PartitionedPipelines, EngineThreadsError> {
        if threads <= 1 {
            self.engine_threads = None;
            return Ok(self);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("engine-{index}"))
            .build()
            .map_err(|source| EngineThreadsError { threads, source })?;
        self.engine_threads = Some(EngineThreads {
            pool,
            outputs_by_partition: Vec::new(),
        });
        Ok(self)
    }

    /// Lets partitions without a record for `idle_timeout_millis` of wall time stop holding
    /// the operator watermark back.
    pub fn with_operator_idle_timeout(mut self, idle_timeout_millis: i64) -> PartitionedPipelines {
        self.operator_idle_timeout_millis = idle_timeout_millis.max(0);
        self
    }

    /// The partition's entry, created empty when it is new.
    fn owned(&mut self, partition: u32) -> &mut OwnedPartition {
        let factory = &self.factory;
        self.partitions
            .entry(partition)
            .or_insert_with(|| OwnedPartition {
                pipeline: factory.new_pipeline(),
                next_position: None,
                snapshotted_position: None,
                last_record_wall_millis: None,
                exported_suppressed_repeats: BTreeMap::new(),
            })
    }

    /// Processes one record in its partition's pipeline at wall time `wall_millis`.
    pub fn process(&mut self, record: SourceRecord, wall_millis: i64, outputs: &mut Outputs) {
        let owned = self.owned_after(record.partition, record.position, wall_millis);
        owned.pipeline.process(record, wall_millis, outputs);
    }

    /// [`PartitionedPipelines::process`] of a record whose stateless stages have run.
    pub fn process_admitted(
        &mut self,
        record: &mut AdmittedRecord,
        wall_millis: i64,
        outputs: &mut Outputs,
    ) {
        let owned = self.owned_after(record.partition, record.position, wall_millis);
        owned
            .pipeline
            .process_admitted(record, wall_millis, outputs);
    }

    /// Whether a batch's partitions run on engine threads.
    pub fn has_engine_threads(&self) -> bool {
        self.engine_threads.is_some()
    }

    /// Processes a batch of admitted records, each in its partition's pipeline, at wall time
    /// `wall_millis`: every partition's records in their input order, and its outputs in that
    /// order. With engine threads and records of several partitions, the partitions' engines
    /// run side by side, and their outputs are appended partition by partition (ascending);
    /// otherwise record by record, as [`PartitionedPipelines::process_admitted`]. The records
    /// may be reordered (by partition) in `records`.
    pub fn process_admitted_batch(
        &mut self,
        records: &mut [AdmittedRecord],
        wall_millis: i64,
        outputs: &mut Outputs,
    ) {
        let first_partition = records.first().map(|record| record.partition);
        let side_by_side = self.engine_threads.is_some()
            && records
                .iter()
                .any(|record| Some(record.partition) != first_partition);
        if !side_by_side {
            for record in records.iter_mut() {
                self.process_admitted(record, wall_millis, outputs);
            }
            return;
        }
        // Stable: each partition's records keep their order.
        records.sort_by_key(|record| record.partition);
        for record in records.iter() {
            self.owned_after(record.partition, record.position, wall_millis);
        }
        let Some(engine_threads) = self.engine_threads.as_mut() else {
            return;
        };
        let runs: Vec<&mut [AdmittedRecord]> = records
            .chunk_by_mut(|left, right| left.partition == right.partition)
            .collect();
        if engine_threads.outputs_by_partition.len() < runs.len() {
            engine_threads
                .outputs_by_partition
                .resize_with(runs.len(), Outputs::default);
        }
        // Both ascending by partition, and `owned_after` created every partition of the batch:
        // each run finds its pipeline further along the map.
        let mut owned_partitions = self.partitions.iter_mut();
        let outputs_by_partition = &mut engine_threads.outputs_by_partition;
        let mut jobs = Vec::with_capacity(runs.len());
        for (run, run_outputs) in runs.into_iter().zip(outputs_by_partition.iter_mut()) {
            let Some(partition) = run.first().map(|record| record.partition) else {
                continue;
            };
            let Some((_, owned)) = owned_partitions.find(|(owned_id, _)| **owned_id == partition)
            else {
                continue;
            };
            jobs.push((run, owned, run_outputs));
        }
        // The caller's thread takes the longest run itself while the engine threads wake up
        // for the others (a wake-up is a good part of a short batch).
        let longest = jobs
            .iter()
            .enumerate()
            .max_by_key(|(_, (run, _, _))| run.len())
            .map(|(index, _)| index);
        let inline_job = longest.map(|index| jobs.swap_remove(index));
        let run_job = |(run, owned, run_outputs): (
            &mut [AdmittedRecord],
            &mut OwnedPartition,
            &mut Outputs,
        )| {
            for record in run.iter_mut() {
                owned
                    .pipeline
                    .process_admitted(record, wall_millis, run_outputs);
            }
        };
        engine_threads.pool.in_place_scope(|scope| {
            for job in jobs {
                scope.spawn(move |_| run_job(job));
            }
            if let Some(job) = inline_job {
                run_job(job);
            }
        });
        for run_outputs in outputs_by_partition.iter_mut() {
            outputs.append(run_outputs);
        }
    }

    /// The owned `partition`, its position and activity moved past a record at `position`
    /// processed at `wall_millis`.
    fn owned_after(
        &mut self,
        partition: u32,
        position: u64,
        wall_millis: i64,
    ) -> &mut OwnedPartition {
        let owned = self.owned(partition);
        let next_position = position.saturating_add(1);
        owned.next_position = Some(
            owned
                .next_position
                .map_or(next_position, |current| current.max(next_position)),
        );
        owned.last_record_wall_millis = Some(
            owned
                .last_record_wall_millis
                .map_or(wall_millis, |latest| latest.max(wall_millis)),
        );
        owned
    }

    /// Takes ownership of `partition`: its state from `snapshot` (bytes of
    /// [`crate::state::snapshot`]) when given, else empty; `next_position` is where its input
    /// resumes. Replaces any state the partition had here.
    pub fn assign(
        &mut self,
        partition: u32,
        snapshot: Option<&[u8]>,
        next_position: Option<u64>,
    ) -> Result<(), SnapshotError> {
        let fit = crate::state::SnapshotFit::new(&self.factory.settings, &self.factory.registry);
        match snapshot
            .map(|bytes| crate::state::decode(bytes, &fit))
            .transpose()
        {
            Ok(state) => {
                self.assign_state(partition, state.map(|state| (state, next_position)));
                Ok(())
            }
            Err(error) => {
                self.assign_state(partition, None);
                Err(error)
            }
        }
    }

    /// Takes ownership of `partition` with a decoded state and the position its input resumes
    /// at, or empty. Replaces any state the partition had here.
    pub fn assign_state(&mut self, partition: u32, restored: Option<(PipelineState, Option<u64>)>) {
        let mut pipeline = self.factory.new_pipeline();
        let resumed_position = match restored {
            Some((state, next_position)) => {
                pipeline.restore_state(state);
                next_position
            }
            None => None,
        };
        self.partitions.insert(
            partition,
            OwnedPartition {
                pipeline,
                next_position: resumed_position,
                snapshotted_position: resumed_position,
                last_record_wall_millis: None,
                exported_suppressed_repeats: BTreeMap::new(),
            },
        );
    }

    /// Gives up `partition`, returning its state (for a last snapshot).
    pub fn revoke(&mut self, partition: u32) -> Option<OwnedPartition> {
        let mut owned = self.partitions.remove(&partition)?;
        export_suppressed_repeats(&mut owned, &self.factory.metrics);
        Some(owned)
    }

    /// Adds the repeats each rule's device cooldown absorbed since the last call to
    /// `gridwatch_alerts_suppressed_total{rule}` (called on every tick).
    pub fn export_suppressed_repeats(&mut self) {
        for owned in self.partitions.values_mut() {
            export_suppressed_repeats(owned, &self.factory.metrics);
        }
    }

    /// The owned partitions, by source partition id.
    pub fn partitions(&self) -> impl Iterator<Item = (u32, &OwnedPartition)> {
        self.partitions
            .iter()
            .map(|(partition, owned)| (*partition, owned))
    }

    /// One owned partition, to record its snapshot position.
    pub fn partition_mut(&mut self, partition: u32) -> Option<&mut OwnedPartition> {
        self.partitions.get_mut(&partition)
    }

    /// One owned partition.
    pub fn partition(&self, partition: u32) -> Option<&OwnedPartition> {
        self.partitions.get(&partition)
    }

    /// The partitions a snapshot round writes, with the input offset each snapshot covers
    /// (exclusive): among `only` (every owned partition when `None`), those that are
    /// [`snapshot_due`]. With the offsets committed only after the state topic acknowledged
    /// these snapshots, a restart resumes each partition exactly where its state stops
    /// (effectively once).
    pub fn snapshots_due(&self, only: Option<&[u32]>) -> Vec<(u32, u64)> {
        self.partitions
            .iter()
            .filter(|(partition, _)| only.is_none_or(|selected| selected.contains(partition)))
            .filter_map(|(partition, owned)| Some((*partition, snapshot_due(owned)?)))
            .collect()
    }

    /// Records that the state topic acknowledged the snapshots of `acknowledged`
    /// (`(partition, next offset)` pairs): they are not written again until their partitions
    /// move on.
    pub fn mark_snapshotted(&mut self, acknowledged: &[(u32, u64)]) {
        for (partition, next_position) in acknowledged {
            if let Some(owned) = self.partitions.get_mut(partition) {
                owned.snapshotted_position = Some(*next_position);
            }
        }
    }

    /// Advances every partition by wall time (see [`Pipeline::advance`]).
    pub fn advance(&mut self, wall_millis: i64, outputs: &mut Outputs) {
        for owned in self.partitions.values_mut() {
            owned.pipeline.advance(wall_millis, outputs);
        }
    }

    /// End of input: closes every open window of every partition.
    pub fn finish(&mut self, wall_millis: i64, outputs: &mut Outputs) {
        for owned in self.partitions.values_mut() {
            owned.pipeline.finish(wall_millis, outputs);
        }
    }

    /// Adds every pipeline's local counts to the shared Prometheus metrics (see
    /// [`Pipeline::flush_metrics`]).
    pub fn flush_metrics(&mut self) {
        for owned in self.partitions.values_mut() {
            owned.pipeline.flush_metrics();
        }
    }

    /// New rules for every partition (and for partitions that appear later).
    pub fn replace_rules(&mut self, rules: RuleSet, wall_millis: i64, outputs: &mut Outputs) {
        for owned in self.partitions.values_mut() {
            owned
                .pipeline
                .replace_rules(rules.clone(), wall_millis, outputs);
        }
        self.factory.rules = rules;
    }

    /// The registry every partition resolves against.
    pub fn registry(&self) -> &Arc<GridRegistry> {
        &self.factory.registry
    }

    /// The operator watermark at wall time `wall_millis`: the minimum over the partitions
    /// that have a watermark and had a record within the operator idle timeout; when every
    /// such partition is idle, the maximum (nothing holds it back). For display and metrics:
    /// each partition's windows close by its own watermark.
    pub fn watermark_millis(&self, wall_millis: i64) -> Option<i64> {
        let is_active = |owned: &OwnedPartition| {
            owned.last_record_wall_millis.is_some_and(|latest| {
                wall_millis.saturating_sub(latest) < self.operator_idle_timeout_millis
            })
        };
        let active_minimum = self
            .partitions
            .values()
            .filter(|owned| is_active(owned))
            .filter_map(|owned| owned.pipeline.watermark_millis())
            .min();
        active_minimum.or_else(|| {
            self.partitions
                .values()
                .filter_map(|owned| owned.pipeline.watermark_millis())
                .max()
        })
    }

    /// Currently firing alerts of every partition, ordered by fingerprint.
    pub fn active_alerts(&self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self
            .partitions
            .values()
            .flat_map(|owned| owned.pipeline.active_alerts())
            .collect();
        alerts.sort_by(|left, right| left.fingerprint.cmp(&right.fingerprint));
        alerts
    }

    /// The hottest cells over view `view_index`, summed over partitions.
    pub fn top_cells(&self, view_index: usize, top_n: usize) -> Vec<(CellIndex, u64)> {
        let mut totals_by_cell: BTreeMap<CellIndex, u64> = BTreeMap::new();
        for owned in self.partitions.values() {
            for (cell, events) in owned.pipeline.top_cells(view_index, top_n) {
                let total = totals_by_cell.entry(cell).or_default();
                *total = total.saturating_add(events);
            }
        }
        let mut ranked: Vec<(CellIndex, u64)> = totals_by_cell.into_iter().collect();
        ranked.sort_by(|left, right| right.1.cmp(&left.1).then(left.0.cmp(&right.0)));
        ranked.truncate(top_n);
        ranked
    }

    /// Events of one cell per event type and view, summed over partitions.
    pub fn cell_activity(&self, cell: CellIndex) -> Vec<(i32, Vec<u64>)> {
        let mut by_type: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
        for owned in self.partitions.values() {
            for (event_type, counts) in owned.pipeline.cell_activity(cell) {
                let totals = by_type.entry(event_type).or_default();
                if totals.len() < counts.len() {
                    totals.resize(counts.len(), 0);
                }
                for (total, count) in totals.iter_mut().zip(counts) {
                    *total = total.saturating_add(count);
                }
            }
        }
        by_type.into_iter().collect()
    }

    /// Per-(cell, type) counts of closed panes in a view, over every partition.
    pub fn view_counts(&self, view_index: usize) -> Vec<(PaneKey, u64)> {
        self.partitions
            .values()
            .flat_map(|owned| owned.pipeline.views().counts(view_index))
            .collect()
    }

    /// Refreshes the state-size, watermark and active-alert gauges over every partition;
    /// `also_firing` are firing alerts this instance publishes besides its partitions' (the
    /// whole-city detector's, where it publishes them).
    pub fn update_gauges(&self, wall_millis: i64, also_firing: &[Alert]) {
        let metrics = &self.factory.metrics;
        let open_panes: usize = self
            .partitions
            .values()
            .map(|owned| owned.pipeline.open_pane_count())
            .sum();
        let dedup_entries: usize = self
            .partitions
            .values()
            .map(|owned| owned.pipeline.dedup_entry_count())
            .sum();
        metrics.open_panes.set(open_panes as i64);
        metrics.dedup_entries.set(dedup_entries as i64);
        if let Some(watermark) = self.watermark_millis(wall_millis) {
            metrics.watermark_timestamp.set(watermark as f64 / 1000.0);
            metrics
                .watermark_lag
                .set((wall_millis - watermark) as f64 / 1000.0);
        }
        let mut active_by_rule_and_severity: BTreeMap<(String, u32), i64> = BTreeMap::new();
        for rule in self.factory.rules.rules() {
            for severity in 1..=4_u32 {
                active_by_rule_and_severity.insert((rule.name().to_string(), severity), 0);
            }
        }
        for alert in self.active_alerts().iter().chain(also_firing) {
            *active_by_rule_and_severity
                .entry((alert.rule.clone(), alert.severity))
                .or_default() += 1;
        }
        for ((rule, severity), count) in active_by_rule_and_severity {
            metrics
                .alerts_active
                .with_label_values(&[rule.as_str(), &severity.to_string()])
                .set(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::IncidentEvent;
    use crate::source::RecordPayload;

    /// A factory over the embedded seeds and default rules.
    fn factory(idle_timeout_millis: i64) -> PipelineFactory {
        let mut config = crate::config::Config::default();
        config.window.idle_timeout = std::time::Duration::from_millis(idle_timeout_millis as u64);
        let rules =
            crate::rules::RuleSet::embedded_default(config.window_settings().size_millis).unwrap();
        let metrics = Arc::new(Metrics::new(&["kafka"], rules.version()).unwrap());
        PipelineFactory {
            settings: PipelineSettings::from_config(&config),
            registry: GridRegistry::embedded(),
            rules,
            metrics,
            source_name: "kafka",
            fraud_settings: None,
        }
    }

    /// An accepted event of `grid_id` at `occurred_at_millis`.
    fn record(
        grid_id: &str,
        event_id: &str,
        occurred_at_millis: i64,
        partition: u32,
        position: u64,
    ) -> SourceRecord {
        let event = IncidentEvent {
            event_id: event_id.to_string(),
            grid_id: grid_id.to_string(),
            event_type: crate::proto::EventType::Tailgating as i32,
            occurred_at: Some(crate::time::millis_to_timestamp(occurred_at_millis)),
            ..IncidentEvent::default()
        };
        SourceRecord {
            payload: RecordPayload::Event(Box::new(event)),
            partition,
            position,
        }
    }

    const T0: i64 = 1_772_409_600_000;
    const WALL: i64 = T0 + 3_600_000;

    #[test]
    fn a_busy_partition_does_not_make_a_slow_partitions_events_late() {
        let registry = GridRegistry::embedded();
        let grid_a = registry.cells()[0].grid_id.clone();
        let grid_b = registry.cells()[1].grid_id.clone();
        let mut pipelines = PartitionedPipelines::new(factory(60_000));
        let mut outputs = Outputs::default();
        // Partition 1 races ten minutes ahead; partition 2 is still at T0.
        pipelines.process(
            record(&grid_a, "a1", T0 + 600_000, 1, 0),
            WALL,
            &mut outputs,
        );
        pipelines.process(record(&grid_b, "b1", T0, 2, 0), WALL, &mut outputs);
        assert!(
            outputs.dead_letters.is_empty(),
            "{:?}",
            outputs.dead_letters
        );
        assert_eq!(pipelines.watermark_millis(WALL), Some(T0 - 10_000));
    }

    #[test]
    fn an_idle_partition_stops_holding_the_operator_watermark_back() {
        let registry = GridRegistry::embedded();
        let grid_a = registry.cells()[0].grid_id.clone();
        let grid_b = registry.cells()[1].grid_id.clone();
        let mut pipelines =
            PartitionedPipelines::new(factory(60_000)).with_operator_idle_timeout(30_000);
        let mut outputs = Outputs::default();
        pipelines.process(record(&grid_b, "b1", T0, 2, 0), WALL, &mut outputs);
        let later = WALL + 60_000;
        pipelines.process(
            record(&grid_a, "a1", T0 + 600_000, 1, 0),
            later,
            &mut outputs,
        );
        assert_eq!(
            pipelines.watermark_millis(later),
            Some(T0 + 590_000),
            "2 is idle"
        );
        assert_eq!(
            pipelines.watermark_millis(WALL),
            Some(T0 - 10_000),
            "both active"
        );
        let much_later = WALL + 600_000;
        assert_eq!(
            pipelines.watermark_millis(much_later),
            Some(T0 + 590_000),
            "both idle: the maximum"
        );
    }

    #[test]
    fn a_partition_restored_from_its_snapshot_continues_where_it_stopped() {
        let registry = GridRegistry::embedded();
        let grid = registry.cells()[0].grid_id.clone();
        let mut original = PartitionedPipelines::new(factory(60_000));
        let mut original_outputs = Outputs::default();
        for minute in 0..5_i64 {
            let event_id = format!("e{minute}");
            original.process(
                record(&grid, &event_id, T0 + minute * 60_000, 3, minute as u64),
                WALL,
                &mut original_outputs,
            );
        }
        let owned = original.revoke(3).unwrap();
        assert_eq!(owned.next_position, Some(5));
        let snapshot = crate::state::snapshot(&owned.pipeline).unwrap();

        let mut restored = PartitionedPipelines::new(factory(60_000));
        restored
            .assign(3, Some(&snapshot), owned.next_position)
            .unwrap();
        let mut continued_outputs = Outputs::default();
        restored.process(
            record(&grid, "e9", T0 + 9 * 60_000, 3, 5),
            WALL,
            &mut continued_outputs,
        );
        let mut uninterrupted = PartitionedPipelines::new(factory(60_000));
        let mut uninterrupted_outputs = Outputs::default();
        for minute in [0_i64, 1, 2, 3, 4, 9] {
            let event_id = format!("e{minute}");
            uninterrupted.process(
                record(&grid, &event_id, T0 + minute * 60_000, 3, 0),
                WALL,
                &mut uninterrupted_outputs,
            );
        }
        original_outputs.windows.extend(continued_outputs.windows);
        assert_eq!(original_outputs.windows, uninterrupted_outputs.windows);
        assert!(!original_outputs.windows.is_empty());
        assert_eq!(restored.partition(3).unwrap().next_position, Some(6));
    }

    #[test]
    fn a_snapshot_that_does_not_decode_starts_the_partition_empty() {
        let mut pipelines = PartitionedPipelines::new(factory(60_000));
        let result = pipelines.assign(7, Some(b"not a snapshot"), Some(42));
        assert!(result.is_err());
        let owned = pipelines.partition(7).unwrap();
        assert_eq!(owned.next_position, None);
        assert_eq!(owned.pipeline.watermark_millis(), None);
    }

    /// Data-gap alerts raised when one cell's events arrive every minute for six daytime
    /// hours, with the pipeline seeing the whole city or only a partition of it.
    fn data_gap_alerts_over_six_hours(partial_input: bool) -> Vec<crate::proto::Alert> {
        let registry = GridRegistry::embedded();
        let grid = registry.cells()[0].grid_id.clone();
        let mut factory = factory(60_000);
        factory.settings.partial_input = partial_input;
        let mut pipelines = PartitionedPipelines::new(factory);
        let mut outputs = Outputs::default();
        for minute in 0..360_i64 {
            let event_id = format!("e{minute}");
            let occurred_at_millis = T0 + minute * 60_000;
            pipelines.process(
                record(&grid, &event_id, occurred_at_millis, 0, minute as u64),
                occurred_at_millis + 1_000,
                &mut outputs,
            );
        }
        outputs
            .alerts
            .into_iter()
            .filter(|alert| alert.rule_kind == crate::rules::alert::RULE_KIND_DATA_GAP)
            .collect()
    }

    #[test]
    fn a_partition_reports_no_data_gaps_for_cells_it_never_consumed() {
        let whole_city = data_gap_alerts_over_six_hours(false);
        assert!(
            !whole_city.is_empty(),
            "seeing the whole city, the other cells' daytime silence is a data gap"
        );
        let one_partition = data_gap_alerts_over_six_hours(true);
        assert!(one_partition.is_empty(), "{one_partition:#?}");
    }

    /// Empty pipelines, an output buffer and the grid id of a registered cell.
    fn empty_pipelines_and_a_cell() -> (String, PartitionedPipelines, Outputs) {
        let grid = GridRegistry::embedded().cells()[0].grid_id.clone();
        let pipelines = PartitionedPipelines::new(factory(60_000));
        (grid, pipelines, Outputs::default())
    }

    #[test]
    fn a_partition_without_records_or_a_restored_snapshot_is_not_due() {
        let mut pipelines = PartitionedPipelines::new(factory(60_000));
        pipelines.assign_state(3, None);
        assert_eq!(pipelines.snapshots_due(None), []);
    }

    #[test]
    fn a_partition_is_due_at_the_offset_after_its_last_record() {
        let (grid, mut pipelines, mut outputs) = empty_pipelines_and_a_cell();
        pipelines.process(record(&grid, "a", T0, 1, 41), WALL, &mut outputs);
        pipelines.process(record(&grid, "b", T0, 1, 42), WALL, &mut outputs);
        assert_eq!(pipelines.snapshots_due(None), [(1, 43)]);
    }

    #[test]
    fn an_acknowledged_snapshot_is_not_written_again_until_new_records_arrive() {
        let (grid, mut pipelines, mut outputs) = empty_pipelines_and_a_cell();
        pipelines.process(record(&grid, "a", T0, 1, 0), WALL, &mut outputs);
        pipelines.mark_snapshotted(&[(1, 1)]);
        assert_eq!(pipelines.snapshots_due(None), []);
        pipelines.process(record(&grid, "b", T0, 1, 1), WALL, &mut outputs);
        assert_eq!(pipelines.snapshots_due(None), [(1, 2)]);
    }

    #[test]
    fn a_restored_partition_is_due_only_once_it_moves_past_its_snapshot() {
        let (grid, mut pipelines, mut outputs) = empty_pipelines_and_a_cell();
        let state = PartitionedPipelines::new(factory(60_000))
            .factory
            .new_pipeline()
            .state();
        pipelines.assign_state(2, Some((state, Some(100))));
        assert_eq!(
            pipelines.snapshots_due(None),
            [],
            "the snapshot it came from"
        );
        pipelines.process(record(&grid, "a", T0, 2, 100), WALL, &mut outputs);
        assert_eq!(pipelines.snapshots_due(None), [(2, 101)]);
    }

    #[test]
    fn a_revoke_round_snapshots_only_the_revoked_partitions() {
        let (grid, mut pipelines, mut outputs) = empty_pipelines_and_a_cell();
        for partition in [1, 2, 3] {
            pipelines.process(record(&grid, "a", T0, partition, 9), WALL, &mut outputs);
        }
        assert_eq!(pipelines.snapshots_due(Some(&[3, 1])), [(1, 10), (3, 10)]);
        assert_eq!(pipelines.snapshots_due(None).len(), 3);
    }

    #[test]
    fn repeats_absorbed_by_a_device_cooldown_are_counted_once_in_the_suppressed_metric() {
        let registry = GridRegistry::embedded();
        let cell = registry.cell(CellIndex(0));
        let device = registry.devices_in_cell(CellIndex(0))[0].device_id.clone();
        let factory = factory(60_000);
        let metrics = factory.metrics.clone();
        let mut pipelines = PartitionedPipelines::new(factory);
        let mut outputs = Outputs::default();
        for (position, event_id) in ["fire-1", "fire-2", "fire-3"].into_iter().enumerate() {
            let event = IncidentEvent {
                event_id: event_id.to_string(),
                grid_id: cell.grid_id.clone(),
                device_id: device.clone(),
                event_type: crate::proto::EventType::FireSmoke as i32,
                occurred_at: Some(crate::time::millis_to_timestamp(
                    T0 + position as i64 * 1000,
                )),
                ..IncidentEvent::default()
            };
            let record = SourceRecord {
                payload: RecordPayload::Event(Box::new(event)),
                partition: 0,
                position: position as u64,
            };
            pipelines.process(record, WALL, &mut outputs);
        }
        let suppressed_total = || {
            metrics
                .alerts_suppressed
                .with_label_values(&["life_safety"])
                .get()
        };
        assert_eq!(suppressed_total(), 0, "nothing exported before the tick");
        pipelines.export_suppressed_repeats();
        assert_eq!(suppressed_total(), 2);
        pipelines.export_suppressed_repeats();
        assert_eq!(suppressed_total(), 2, "each repeat is counted once");
        pipelines.revoke(0);
        assert_eq!(suppressed_total(), 2);
    }

    /// `count` simulator events as the Kafka consumer hands them over: each on the partition
    /// of its cell (one of `partitions`), admitted, in batches of `batch_size` records that
    /// interleave the partitions.
    fn admitted_batches(
        count: usize,
        partitions: u32,
        batch_size: usize,
    ) -> Vec<Vec<AdmittedRecord>> {
        let registry = GridRegistry::embedded();
        let settings = factory(60_000).settings;
        let admission = crate::pipeline::Admission::of_settings(&settings, registry.clone());
        let simulator_settings = crate::source::simulator::SimulatorSettings {
            seed: 11,
            start_millis: T0,
            rate_multiplier: 20.0,
            ..crate::source::simulator::SimulatorSettings::default()
        };
        let mut simulator =
            crate::source::simulator::Simulator::new(simulator_settings, registry).unwrap();
        let mut positions = vec![0_u64; partitions as usize];
        let records: Vec<AdmittedRecord> = (0..count)
            .map(|_| {
                let event = simulator.next_event();
                let partition = (xxhash_rust::xxh3::xxh3_64(event.grid_id.as_bytes())
                    % u64::from(partitions)) as u32;
                let position = positions[partition as usize];
                positions[partition as usize] += 1;
                let record = SourceRecord {
                    payload: RecordPayload::Event(Box::new(event)),
                    partition,
                    position,
                };
                admission.admit(record, WALL, Box::default())
            })
            .collect();
        let mut batches = Vec::new();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            batches.push(records.by_ref().take(batch_size).collect());
        }
        batches
    }

    #[test]
    fn engines_on_threads_leave_each_partition_the_outputs_and_state_of_one_thread() {
        const PARTITIONS: u32 = 4;
        let mut threaded = PartitionedPipelines::new(factory(60_000))
            .with_engine_threads(2)
            .unwrap();
        let mut sorted_on_one_thread = PartitionedPipelines::new(factory(60_000));
        let mut interleaved_on_one_thread = PartitionedPipelines::new(factory(60_000));
        let mut threaded_outputs = Outputs::default();
        let mut sorted_outputs = Outputs::default();
        let mut interleaved_outputs = Outputs::default();
        let batches = admitted_batches(20_000, PARTITIONS, 512)
            .into_iter()
            .zip(admitted_batches(20_000, PARTITIONS, 512))
            .zip(admitted_batches(20_000, PARTITIONS, 512));
        for ((mut threaded_batch, mut sorted_batch), mut interleaved_batch) in batches {
            threaded.process_admitted_batch(&mut threaded_batch, WALL, &mut threaded_outputs);
            sorted_batch.sort_by_key(|record| record.partition);
            for record in &mut sorted_batch {
                sorted_on_one_thread.process_admitted(record, WALL, &mut sorted_outputs);
            }
            interleaved_on_one_thread.process_admitted_batch(
                &mut interleaved_batch,
                WALL,
                &mut interleaved_outputs,
            );
        }
        // The threads append each partition's outputs in turn: what one thread writes for the
        // batch taken partition by partition.
        assert_eq!(threaded_outputs.windows, sorted_outputs.windows);
        assert_eq!(threaded_outputs.alerts, sorted_outputs.alerts);
        assert_eq!(threaded_outputs.dead_letters, sorted_outputs.dead_letters);
        assert!(threaded_outputs.windows.len() > 1_000);
        assert!(!threaded_outputs.alerts.is_empty());
        // Record by record, interleaved: the same outputs, in another order across partitions.
        let mut threaded_windows = threaded_outputs.windows.clone();
        let mut interleaved_windows = interleaved_outputs.windows.clone();
        let window_order = |left: &crate::window::ClosedPane, right: &crate::window::ClosedPane| {
            format!("{left:?}").cmp(&format!("{right:?}"))
        };
        threaded_windows.sort_by(window_order);
        interleaved_windows.sort_by(window_order);
        assert_eq!(threaded_windows, interleaved_windows);
        assert_ne!(
            threaded_outputs.windows, interleaved_outputs.windows,
            "the batches interleave partitions, so the order differs"
        );
        // Every partition's state is the same bytes, however its engine ran.
        for partition in 0..PARTITIONS {
            let snapshot_of = |pipelines: &PartitionedPipelines| {
                let owned = pipelines.partition(partition).unwrap();
                (
                    crate::state::snapshot(&owned.pipeline).unwrap(),
                    owned.next_position,
                )
            };
            let threaded_state = snapshot_of(&threaded);
            assert_eq!(threaded_state, snapshot_of(&sorted_on_one_thread));
            assert_eq!(threaded_state, snapshot_of(&interleaved_on_one_thread));
        }
    }
}
