//! `gridwatch replay`: a file through the pipeline as fast as possible, outputs to JSONL files,
//! a summary at the end. At end of input every open window is closed and emitted.
//!
//! Replay is deterministic: the wall clock is read once at start (for the clock-skew check),
//! and the watermark never advances with processing time, so the same file always gives the
//! same outputs.

// No panic path reachable from input, state or configuration (README "Security").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::decode::InputFormat;
use crate::grid::{GridLoadError, GridRegistry};
use crate::metrics::Metrics;
use crate::pipeline::{
    Admission, AdmittedRecord, DecodedRecord, Decoding, EncodedRecord, Outputs, Pipeline,
    PipelineSettings, RecordResult, RuleStage, RuleWork, SpareEvents,
};
use crate::rules::RuleSet;
use crate::sink::file::JsonlFileSink;
use crate::source::file::{FileReader, FramedRecord};

/// What to replay and where to write.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The input file.
    pub input: PathBuf,
    /// Its format.
    pub format: InputFormat,
    /// Where `windows.jsonl`, `alerts.jsonl` and `dead_letter.jsonl` go.
    pub output_dir: PathBuf,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub show_progress: bool,
    /// Which thread runs the rules.
    pub rules_thread: RulesThread,
}

/// Which thread of a replay runs the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesThread {
    /// Their own thread on 4 or more cores, the counting thread otherwise.
    #[default]
    Auto,
    /// A thread of their own, beside the counting thread.
    Own,
    /// The counting thread, record by record.
    Counting,
}

/// Cores from which [`RulesThread::Auto`] gives the rules a thread of their own: one for each
/// busy thread (reading, counting, rules) and one for writing. On the 2-core development
/// machine the fourth thread measured 3–6 % more CPU and no less wall time (the two cores were
/// already busy, and the counting thread was the bound only by a little), so it stays off
/// there; on more cores the counting thread (six tenths of all instructions with the default
/// rules) is the bound, and splitting it leaves about a third per thread.
pub const CORES_FOR_A_RULES_THREAD: usize = 4;

impl RulesThread {
    /// Whether the rules get a thread of their own on a machine with `cores` cores.
    pub fn own_thread_with(self, cores: usize) -> bool {
        match self {
            RulesThread::Auto => cores >= CORES_FOR_A_RULES_THREAD,
            RulesThread::Own => true,
            RulesThread::Counting => false,
        }
    }
}

/// Counts of a finished replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Records read from the file.
    pub records: u64,
    /// Events accepted into windows.
    pub accepted: u64,
    /// Re-sent events counted once.
    pub duplicates: u64,
    /// Final windows written.
    pub windows: u64,
    /// Alert state changes written.
    pub alerts: u64,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Wall time of the replay.
    #[serde(skip)]
    pub elapsed: Duration,
}

impl ReplaySummary {
    /// Records per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Total dead letters.
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(formatter, "records      {}", self.records)?;
        writeln!(formatter, "accepted     {}", self.accepted)?;
        writeln!(formatter, "duplicates   {}", self.duplicates)?;
        writeln!(formatter, "windows      {}", self.windows)?;
        writeln!(formatter, "alerts       {}", self.alerts)?;
        writeln!(formatter, "dead letters {}", self.dead_letter_total())?;
        for (reason, count) in &self.dead_letters {
            writeln!(formatter, "  {reason:<24} {count}")?;
        }
        write!(
            formatter,
            "elapsed      {:.3} s ({:.0} events/s)",
            self.elapsed.as_secs_f64(),
            self.events_per_second()
        )
    }
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input could not be read.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// An output could not be written.
    #[error(transparent)]
    Sink(#[from] crate::sink::file::FileSinkError),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The grid registry (`seeds.dir`) could not be loaded.
    #[error(transparent)]
    Seeds(#[from] GridLoadError),
    /// The writing thread stopped before the end (its own error is reported instead when
    /// known).
    #[error("the output writer stopped before the end of the replay")]
    WriterStopped,
    /// A replay thread could not be started.
    #[error("cannot start a replay thread: {0}")]
    Thread(std::io::Error),
    /// The rules' thread stopped before the end (the writer's error is reported instead when
    /// known).
    #[error("the rules stopped before the end of the replay")]
    RulesStopped,
    /// A replay thread panicked (a bug; the outputs are incomplete).
    #[error("the replay's {0} thread panicked; the outputs are incomplete")]
    ThreadPanicked(&'static str),
}

/// Outputs are written in chunks of this many records.
const WRITE_EVERY_RECORDS: u64 = 4096;
/// Dead-letter payload bytes buffered before the outputs are written anyway.
const MAX_BUFFERED_DEAD_LETTER_BYTES: usize = 4 * 1024 * 1024;
/// Records handed from one thread to the next at once: large enough that the hand-off costs
/// nothing per record, small enough to keep every thread busy.
const BATCH_RECORDS: usize = 1024;
/// Batches in flight between two threads: bounds the memory a faster stage can fill while
/// letting it run ahead of a momentarily slower one. With the writer at a lower priority its
/// channel fills while it waits for a core: 32 against 8 took a 1 M-event replay from 0.50 to
/// 0.48 s (medians of 5 alternated runs) for 49 → 63 MB of peak RSS.
const BATCHES_IN_FLIGHT: usize = 32;
/// Batches waiting for the counting thread from which the reader checks the next batch itself:
/// the counting thread has that much work queued while the reader checks, so it is not kept
/// waiting (see [`CountingBacklog`]).
const CHECK_FROM_WAITING_BATCHES: usize = 1;

/// Replays `options.input` with `config`'s window, ingest and privacy settings.
///
/// Three or four threads, each a plain loop: one reads and decodes; one runs the counting
/// stages in input order ([`Pipeline::count_admitted`]: dedup, lateness, windows, the
/// watermark); the rules run on the same records in the same order ([`RuleStage::apply`]),
/// with what the counting thread decided for each, either on the counting thread record by
/// record or on a thread of their own ([`ReplayOptions::rules_thread`]); one encodes and writes
/// the outputs. The other
/// stateless stages (limits, validation, grid resolution; [`Admission::check`]) run on
/// whichever of the first two has time: the reader checks a batch when the counting thread is
/// behind (a batch already waits for it, or its channel is full, so the reader would only
/// wait; `CountingBacklog`), and the counting thread checks the batches that arrive
/// unchecked. Which thread is the slower depends on the input and the
/// rules (the stateful stages with the default rules; reading and decoding on a skewed JSON
/// stream with windows only), and a fixed split measured slower on one or the other: checking
/// on the reader always made the skewed windows-only replay 0.43 → 0.52 s. The threads hand
/// batches through bounded channels, so the outputs are exactly those of one thread doing it
/// all (the same order, the same bytes) while the cores share the work. The checks once had a
/// thread of their own, which made every event's memory cross between the cores twice instead
/// of once.
pub fn replay(
    options: &ReplayOptions,
    config: &Config,
    registry: Arc<GridRegistry>,
    rules: RuleSet,
) -> Result<ReplaySummary, ReplayError> {
    replay_loading_registry(options, config, || Ok(registry), rules)
}

/// [`replay`] with the registry loaded by `load_registry` while the reading thread already
/// decodes: decoding needs no registry, and loading it was most of a replay's start (56 of the
/// 67 M instructions of a ten-event replay, most of its 13 ms, on one core while the other
/// idled). The reader checks no batch before the registry is there.
pub fn replay_loading_registry(
    options: &ReplayOptions,
    config: &Config,
    load_registry: impl FnOnce() -> Result<Arc<GridRegistry>, GridLoadError>,
    rules: RuleSet,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let mut settings = PipelineSettings::from_config(config);
    settings.window.idle_timeout_millis = crate::time::NEVER_MILLIS;
    // The sliding views feed the HTTP API's top cells and per-cell metrics, which a replay
    // does not serve; kept, they were a tenth of the counting thread (every closed pane added
    // to and subtracted from each view) for no output.
    settings.view_spans_millis.clear();
    let reader = FileReader::open(&options.input, options.format)?
        .with_max_record_bytes(config.ingest.max_record_bytes);
    let decoding = Decoding::of_settings(&settings);
    let progress = progress_bar(options.show_progress, reader.total_bytes());
    let wall_millis = crate::time::wall_clock_millis();
    // Set once the registry is loaded; until then the reader only decodes.
    let admission_for_reader = OnceLock::new();
    let backlog = CountingBacklog::default();
    let (decoded_sender, decoded_receiver) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
    let (outputs_sender, outputs_receiver) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
    // Written outputs go back to the counting thread, which writes the next into them.
    let (written_sender, written_receiver) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
    // Batches the rules are done with go back to the reader, which decodes into their events.
    let (spent_sender, spent_receiver) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
    let mut summary = std::thread::scope(|scope| {
        let progress = &progress;
        let decoding = &decoding;
        let admission_for_reader = &admission_for_reader;
        let backlog = &backlog;
        let reader = spawn_stage(scope, "replay-read", move || {
            let channels = ReaderChannels {
                decoded: decoded_sender,
                spent: spent_receiver,
                backlog,
            };
            let stages = ReaderStages {
                decoding,
                admission: admission_for_reader,
            };
            read_and_decode(reader, stages, wall_millis, progress, channels)
        })?;
        // An error returns from here and drops the counting end of the reader's channel (as
        // every later one does): the reader stops at its next batch, and the scope ends.
        let registry = load_registry()?;
        let metrics = Arc::new(Metrics::new(&["file"], rules.version())?);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // On a thread of their own, the rules are this stage's, and the pipeline's own stay
        // idle: the counting thread asks it for each record's rule work only
        // (`count_admitted`).
        let rules_apart = options.rules_thread.own_thread_with(cores).then(|| {
            RuleStage::new(
                rules.clone(),
                registry.clone(),
                metrics.clone(),
                settings.partial_input,
            )
        });
        let sink = JsonlFileSink::open(&options.output_dir, false, registry.clone())?;
        let mut pipeline =
            Pipeline::with_decoding(decoding.clone(), settings, registry, rules, metrics, "file");
        pipeline.without_emit_delay();
        // From here on the reader checks batches while counting is behind; until now it sent
        // them unchecked. (Set once, here: `set` cannot find it set.)
        let _ = admission_for_reader.set(pipeline.admission().clone());
        let writer = spawn_stage(scope, "replay-write", move || {
            lower_this_threads_priority(WRITER_NICENESS);
            write_outputs(sink, outputs_receiver, written_sender)
        })?;
        let (counted_to, rules) = if let Some(rule_stage) = rules_apart {
            let (counted_sender, counted_receiver) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
            // The rules' thread writes its alerts through the same channel as the counting
            // thread its windows and dead letters: each file has one producer, so its order is
            // kept. Cloned here only: the writer stops once every sender is gone.
            let alerts_sender = outputs_sender.clone();
            let rules = spawn_stage(scope, "replay-rules", move || {
                let channels = RuleChannels {
                    counted: counted_receiver,
                    spent: spent_sender,
                    writer: alerts_sender,
                };
                apply_rules_in_order(rule_stage, wall_millis, channels)
            })?;
            (CountedBatchesTo::RulesThread(counted_sender), Some(rules))
        } else {
            (CountedBatchesTo::Reader(spent_sender), None)
        };
        let channels = CountingChannels {
            decoded: decoded_receiver,
            backlog,
            counted_to,
            writer: outputs_sender,
            written: written_receiver,
        };
        let counted = count_in_order(&mut pipeline, wall_millis, &channels);
        // Closing the channels ends the rules' loop, then the writer's. The writer's own error
        // comes first, then the rules': when one stopped, the threads before it only saw a
        // closed channel.
        drop(channels);
        let alerts_of_rules_thread = rules.map_or(Ok(0), |rules| {
            rules
                .join()
                .unwrap_or_else(|_| Err(ReplayError::ThreadPanicked("rules")))
        });
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(ReplayError::ThreadPanicked("writer")));
        // The reader ends once its channel is closed (counting stopped) or the input is read.
        reader
            .join()
            .map_err(|_| ReplayError::ThreadPanicked("reader"))?;
        written?;
        let alerts_of_rules_thread = alerts_of_rules_thread?;
        let mut counted = counted?;
        counted.alerts += alerts_of_rules_thread;
        Ok::<ReplaySummary, ReplayError>(counted)
    })?;
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Starts one of the replay's threads in `scope`, named so that a profile or `top -H` shows
/// which stage is busy.
fn spawn_stage<'scope, Output: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    body: impl FnOnce() -> Output + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, Output>, ReplayError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, body)
        .map_err(ReplayError::Thread)
}

/// How much lower than the other threads the writing thread runs (a nice value added to the
/// process's own; `docs/performance-journal.md` has the runs that chose it).
const WRITER_NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority by `niceness` (Linux keeps a nice value per
/// thread: the others keep theirs). For the writer: its bounded channel lets it fall behind
/// and catch up whenever a core is free, while the reading and counting threads, which bound a
/// replay, keep their cores: three busy threads shared evenly on two cores had the counting
/// thread wait for input or for room while the writer held a core (2–4 % of a 1 M-event
/// replay's wall time and CPU). Best effort: a system that refuses leaves the priority as it
/// was.
fn lower_this_threads_priority(niceness: i32) {
    #[cfg(target_os = "linux")]
    {
        let this_thread = Some(rustix::thread::gettid());
        let current = rustix::process::getpriority_process(this_thread).unwrap_or(0);
        let lowered = current.saturating_add(niceness);
        if let Err(error) = rustix::process::setpriority_process(this_thread, lowered) {
            tracing::debug!(%error, "replay writer priority unchanged");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
}

/// Decoded records in input order.
type DecodedBatch = Vec<DecodedRecord>;
/// Admitted records in input order: a decoded batch after the checks, handed back to the reading
/// thread once the rules are done with it.
type AdmittedBatch = Vec<AdmittedRecord>;

/// A counted batch for the rules' thread: its records and, for each, what the rules must do.
struct CountedBatch {
    records: AdmittedBatch,
    rule_work: Vec<RuleWork>,
}

/// Where the counting thread hands its counted batches.
enum CountedBatchesTo {
    /// Back to the reader: the rules ran on the counting thread, record by record
    /// ([`Pipeline::process_admitted`], as before the rules could move; a second pass over
    /// the batch measured no cheaper).
    Reader(mpsc::SyncSender<AdmittedBatch>),
    /// To the rules' own thread, which hands them back to the reader.
    RulesThread(mpsc::SyncSender<CountedBatch>),
}
/// A batch, or the read error that ends the input.
type BatchOrError<Batch> = Result<Batch, crate::source::SourceError>;

/// Records in input order, handed from the reading thread to the counting thread: checked
/// already when the reader had the time, or only decoded.
enum ReadBatch {
    /// Decoded; the counting thread checks them.
    Decoded(DecodedBatch),
    /// Decoded and checked by the reader.
    Admitted(AdmittedBatch),
}

impl ReadBatch {
    /// The batch's records after the checks, run here for any not checked yet.
    fn into_admitted(self, admission: &Admission, wall_millis: i64) -> AdmittedBatch {
        match self {
            ReadBatch::Admitted(admitted) => admitted,
            // Collected in place: the decoded batch's allocation becomes the admitted one.
            ReadBatch::Decoded(decoded) => decoded
                .into_iter()
                .map(|record| admission.check(record, wall_millis))
                .collect(),
        }
    }
}

/// What the reading thread runs: the decoding, and the checks once the registry is loaded.
struct ReaderStages<'stages> {
    decoding: &'stages Decoding,
    admission: &'stages OnceLock<Admission>,
}

/// The reading thread's two channels: batches to count (and how many wait), and counted
/// batches handed back.
struct ReaderChannels<'backlog> {
    decoded: mpsc::SyncSender<BatchOrError<ReadBatch>>,
    spent: mpsc::Receiver<AdmittedBatch>,
    backlog: &'backlog CountingBacklog,
}

/// Batches sent to the counting thread and not yet taken: how far behind it is, which decides
/// who checks the next batch. A full channel alone was too late a sign: while the reader
/// decoded a batch the counting thread took one, so the reader found room and sent its batch
/// unchecked, and on the simulator's stream the counting thread (the slower) checked a share of
/// the batches while the reader idled a third of the time.
#[derive(Default)]
struct CountingBacklog {
    waiting: AtomicUsize,
}

impl CountingBacklog {
    /// Whether the counting thread has enough queued that the reader checks the next batch.
    fn counting_is_behind(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) >= CHECK_FROM_WAITING_BATCHES
    }

    fn sent(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    fn taken(&self) {
        // A batch is counted as sent before it is sent, so this never goes below zero; should
        // it, it stays at zero rather than wrapping.
        let _ = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |waiting| {
                waiting.checked_sub(1)
            });
    }
}

/// The reading thread: records in file order, decoded, in batches; a batch is checked too when
/// the counting thread is behind. Ends at end of input, after sending a read error, or when the
/// next thread has stopped. Records are decoded into the events of batches the counting thread
/// handed back, so ids are allocated and freed on this thread only, and rarely.
fn read_and_decode(
    mut reader: FileReader,
    stages: ReaderStages<'_>,
    wall_millis: i64,
    progress: &indicatif::ProgressBar,
    channels: ReaderChannels,
) {
    let ReaderChannels {
        decoded,
        spent,
        backlog,
    } = channels;
    // The input's last messages, counted as sent like every other (a closed channel: the
    // counting thread has stopped, and there is no one left to tell).
    let send_last = |message: BatchOrError<ReadBatch>| {
        backlog.sent();
        let _ = decoded.send(message);
    };
    let mut spare_events = SpareEvents::default();
    let mut batch = DecodedBatch::with_capacity(BATCH_RECORDS);
    while let Some(framed) = reader.next_framed() {
        let spare = spare_events.take();
        match framed {
            Ok(FramedRecord::Encoded {
                bytes,
                format,
                position,
            }) => {
                let record = EncodedRecord {
                    bytes,
                    format,
                    partition: 0,
                    position,
                };
                batch.push(stages.decoding.decode_lent(record, spare));
            }
            Ok(FramedRecord::Owned(record)) => batch.push(stages.decoding.decode(record, spare)),
            Err(error) => {
                send_last(Ok(ReadBatch::Decoded(std::mem::take(&mut batch))));
                send_last(Err(error));
                return;
            }
        }
        if batch.len() == BATCH_RECORDS {
            // At most one batch back per batch sent: the spares stay within two batches.
            if let Ok(counted) = spent.try_recv() {
                spare_events.keep_events_of(counted);
            }
            let full = std::mem::replace(&mut batch, DecodedBatch::with_capacity(BATCH_RECORDS));
            let behind = backlog.counting_is_behind();
            backlog.sent();
            let admission = stages.admission.get();
            if send_checking_while_behind(&decoded, full, behind, admission, wall_millis).is_err() {
                return;
            }
            progress.set_position(reader.bytes_read());
        }
    }
    send_last(Ok(ReadBatch::Decoded(batch)));
}

/// Sends `batch` to the counting thread as it is when there is room and counting is not
/// `behind`; otherwise (counting has batches waiting, or the channel is full) checks its records
/// first, work the counting thread is then spared instead of the reader waiting. Without the
/// `admission` (the registry still loading) the batch waits for room unchecked. Fails once the
/// counting thread has stopped.
fn send_checking_while_behind(
    decoded: &mpsc::SyncSender<BatchOrError<ReadBatch>>,
    batch: DecodedBatch,
    behind: bool,
    admission: Option<&Admission>,
    wall_millis: i64,
) -> Result<(), ChannelClosed> {
    let Some(admission) = admission else {
        return decoded
            .send(Ok(ReadBatch::Decoded(batch)))
            .map_err(|_| ChannelClosed);
    };
    let unchecked = if behind {
        Ok(ReadBatch::Decoded(batch))
    } else {
        match decoded.try_send(Ok(ReadBatch::Decoded(batch))) {
            Ok(()) => return Ok(()),
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(ChannelClosed),
            Err(mpsc::TrySendError::Full(unsent)) => unsent,
        }
    };
    let checked =
        unchecked.map(|read| ReadBatch::Admitted(read.into_admitted(admission, wall_millis)));
    decoded.send(checked).map_err(|_| ChannelClosed)
}

/// The thread at the other end of a channel has stopped.
struct ChannelClosed;

/// The counting thread's channels: batches in (and how many wait), counted batches on to the
/// rules, outputs to the writer and written outputs back from it.
struct CountingChannels<'backlog> {
    decoded: mpsc::Receiver<BatchOrError<ReadBatch>>,
    backlog: &'backlog CountingBacklog,
    counted_to: CountedBatchesTo,
    writer: mpsc::SyncSender<Outputs>,
    written: mpsc::Receiver<Outputs>,
}

/// The counting thread: every decoded record through the other stateless stages, then the
/// counting ones, in input order; outputs go to the writer in chunks, counted batches on to the
/// rules. The summary counts the alerts of rules run here; a rules thread counts its own.
fn count_in_order(
    pipeline: &mut Pipeline,
    wall_millis: i64,
    channels: &CountingChannels,
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary::default();
    let mut outputs = Outputs::default();
    let mut buffered_dead_letter_bytes: usize = 0;
    let rules_apart = matches!(channels.counted_to, CountedBatchesTo::RulesThread(_));
    for batch in &channels.decoded {
        channels.backlog.taken();
        let mut batch = batch?.into_admitted(pipeline.admission(), wall_millis);
        let mut rule_work = Vec::with_capacity(if rules_apart { batch.len() } else { 0 });
        for record in &mut batch {
            summary.records += 1;
            let result = if rules_apart {
                let (result, work) = pipeline.count_admitted(record, wall_millis, &mut outputs);
                rule_work.push(work);
                result
            } else {
                pipeline.process_admitted(record, wall_millis, &mut outputs)
            };
            match result {
                RecordResult::Accepted => summary.accepted += 1,
                RecordResult::Duplicate => summary.duplicates += 1,
                RecordResult::Rejected(_) => {
                    buffered_dead_letter_bytes += outputs
                        .dead_letters
                        .last()
                        .map_or(0, |dead_letter| dead_letter.payload.len());
                }
            }
            // Dead letters of hostile input are large (up to the payload limit each): written
            // early, so that buffering them never holds much of the input in memory.
            if summary.records % WRITE_EVERY_RECORDS == 0
                || buffered_dead_letter_bytes > MAX_BUFFERED_DEAD_LETTER_BYTES
            {
                hand_over(&mut outputs, channels, &mut summary)?;
                pipeline.flush_metrics();
                buffered_dead_letter_bytes = 0;
            }
        }
        match &channels.counted_to {
            // A full channel (the reader is ahead) or a finished reader: dropped here.
            CountedBatchesTo::Reader(spent) => {
                let _ = spent.try_send(batch);
            }
            CountedBatchesTo::RulesThread(rules) => {
                let counted = CountedBatch {
                    records: batch,
                    rule_work,
                };
                rules.send(counted).map_err(|_| ReplayError::RulesStopped)?
            }
        }
    }
    pipeline.finish(wall_millis, &mut outputs);
    hand_over(&mut outputs, channels, &mut summary)?;
    Ok(summary)
}

/// Counts a chunk of outputs into the summary and sends it to the writer; the next chunk is
/// collected into one the writer handed back (its lists' allocations), when there is one.
fn hand_over(
    outputs: &mut Outputs,
    channels: &CountingChannels,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    summary.windows += outputs.windows.len() as u64;
    summary.alerts += outputs.alerts.len() as u64;
    for dead_letter in &outputs.dead_letters {
        *summary
            .dead_letters
            .entry(dead_letter.reason.clone())
            .or_default() += 1;
    }
    let next = match channels.written.try_recv() {
        Ok(mut written) => {
            written.clear();
            written
        }
        Err(_) => Outputs::default(),
    };
    // A closed channel means the writer stopped on an error, which its join reports.
    channels
        .writer
        .send(std::mem::replace(outputs, next))
        .map_err(|_| ReplayError::WriterStopped)
}

/// The rules' thread's channels: counted batches in, batches done with back to the reader,
/// alerts to the writer.
struct RuleChannels {
    counted: mpsc::Receiver<CountedBatch>,
    spent: mpsc::SyncSender<AdmittedBatch>,
    writer: mpsc::SyncSender<Outputs>,
}

/// The rules' thread: every counted record's rule work, in input order; alerts go to the
/// writer once per batch that has any, batches back to the reader. Returns the alerts
/// written.
fn apply_rules_in_order(
    mut rule_stage: RuleStage,
    wall_millis: i64,
    channels: RuleChannels,
) -> Result<u64, ReplayError> {
    let mut alerts_written: u64 = 0;
    for counted in &channels.counted {
        let mut outputs = Outputs::default();
        for (record, work) in counted.records.iter().zip(&counted.rule_work) {
            rule_stage.apply(record, *work, wall_millis, &mut outputs.alerts);
        }
        // A full channel (the reader is ahead) or a finished reader: the batch is dropped here.
        let _ = channels.spent.try_send(counted.records);
        if outputs.alerts.is_empty() {
            continue;
        }
        alerts_written += outputs.alerts.len() as u64;
        channels
            .writer
            .send(outputs)
            .map_err(|_| ReplayError::WriterStopped)?;
    }
    Ok(alerts_written)
}

/// The writing thread: encodes and appends every chunk, then flushes. Written chunks go back
/// to the counting thread, which collects the next outputs into their lists.
fn write_outputs(
    mut sink: JsonlFileSink,
    chunks: mpsc::Receiver<Outputs>,
    written: mpsc::SyncSender<Outputs>,
) -> Result<(), ReplayError> {
    for chunk in chunks {
        sink.write(&chunk)?;
        // A full channel (counting is behind) or a finished counter: the chunk is dropped here.
        let _ = written.try_send(chunk);
    }
    sink.flush()?;
    Ok(())
}

fn progress_bar(show: bool, total_bytes: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Path helper for tests and the CLI: the three output files of a replay directory.
pub fn output_files(directory: &Path) -> [PathBuf; 3] {
    [
        directory.join(crate::sink::file::WINDOWS_FILE),
        directory.join(crate::sink::file::ALERTS_FILE),
        directory.join(crate::sink::file::DEAD_LETTER_FILE),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_admission() -> Admission {
        let settings = PipelineSettings::from_config(&Config::default());
        Admission::of_settings(&settings, GridRegistry::embedded())
    }

    /// One record that does not decode: enough to tell a checked batch from a decoded one.
    fn one_record_batch(admission: &Admission) -> DecodedBatch {
        let record = EncodedRecord {
            bytes: b"{not json",
            format: InputFormat::Jsonl,
            partition: 0,
            position: 1,
        };
        vec![admission.decoding().decode_lent(record, Box::default())]
    }

    /// What the counting thread receives of a one-record batch the reader sends while the
    /// channel has room, the counting thread `behind` or not.
    fn received_with_room(behind: bool) -> Option<ReadBatch> {
        received(behind, true)
    }

    /// What the counting thread receives of a one-record batch, the counting thread `behind`
    /// or not, with the registry `loaded` or still loading.
    fn received(behind: bool, loaded: bool) -> Option<ReadBatch> {
        let admission = default_admission();
        let (sender, receiver) = mpsc::sync_channel(4);
        let batch = one_record_batch(&admission);
        let admission = loaded.then_some(&admission);
        assert!(send_checking_while_behind(&sender, batch, behind, admission, 0).is_ok());
        receiver.try_recv().ok().and_then(Result::ok)
    }

    #[test]
    fn before_the_registry_is_loaded_the_reader_sends_batches_unchecked_even_when_behind() {
        assert!(
            matches!(received(true, false), Some(ReadBatch::Decoded(batch)) if batch.len() == 1),
            "a batch was checked without a registry"
        );
    }

    #[test]
    fn a_registry_that_fails_to_load_ends_the_replay_with_its_error_while_the_reader_runs() {
        let directory = tempfile::tempdir().unwrap();
        let input = directory.path().join("input.jsonl");
        // More batches than the channel holds: a reader nobody stopped would wait forever.
        let line = "{\"eventId\":\"e\",\"eventType\":\"SMOKE_ALARM\"}\n";
        std::fs::write(&input, line.repeat(BATCH_RECORDS * (BATCHES_IN_FLIGHT + 2))).unwrap();
        let options = ReplayOptions {
            input,
            format: InputFormat::Jsonl,
            output_dir: directory.path().join("out"),
            show_progress: false,
            rules_thread: RulesThread::Auto,
        };
        let config = Config::default();
        let rules = RuleSet::embedded_default(60_000).unwrap();
        let result = replay_loading_registry(
            &options,
            &config,
            || {
                Err(GridLoadError::Invalid {
                    path: "grids.geojson".to_string(),
                    message: "broken".to_string(),
                })
            },
            rules,
        );
        assert!(
            matches!(
                result,
                Err(ReplayError::Seeds(GridLoadError::Invalid { .. }))
            ),
            "{result:?}"
        );
        assert!(
            !directory.path().join("out").exists(),
            "outputs were created before the registry that names their cells"
        );
    }

    #[test]
    fn a_counting_thread_with_room_gets_the_batch_unchecked() {
        assert!(
            matches!(received_with_room(false), Some(ReadBatch::Decoded(batch)) if batch.len() == 1),
            "the reader spent time on checks the idle counting thread would do"
        );
    }

    #[test]
    fn a_counting_thread_with_batches_waiting_gets_the_batch_checked_despite_room() {
        assert!(
            matches!(received_with_room(true), Some(ReadBatch::Admitted(batch)) if batch.len() == 1),
            "the counting thread, already behind, was left the checks of a batch"
        );
    }

    #[test]
    fn the_rules_get_their_own_thread_automatically_from_four_cores() {
        assert!(!RulesThread::Auto.own_thread_with(2));
        assert!(!RulesThread::Auto.own_thread_with(CORES_FOR_A_RULES_THREAD - 1));
        assert!(RulesThread::Auto.own_thread_with(CORES_FOR_A_RULES_THREAD));
        assert!(RulesThread::Own.own_thread_with(1));
        assert!(!RulesThread::Counting.own_thread_with(64));
    }

    /// The writer's lower priority is its own: another thread lowered by some niceness runs
    /// that much lower, and the thread that started it keeps its priority.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_lowers_its_own_priority_and_no_other() {
        let priority_of = |thread| rustix::process::getpriority_process(Some(thread)).unwrap();
        let this_thread = rustix::thread::gettid();
        let before = priority_of(this_thread);
        let lowered = std::thread::spawn(move || {
            let spawned = rustix::thread::gettid();
            let inherited = priority_of(spawned);
            lower_this_threads_priority(3);
            (inherited, priority_of(spawned))
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before, before + 3));
        assert_eq!(priority_of(this_thread), before);
    }

    #[test]
    fn the_backlog_counts_batches_sent_and_not_yet_taken() {
        let backlog = CountingBacklog::default();
        assert!(!backlog.counting_is_behind());
        backlog.sent();
        assert!(backlog.counting_is_behind());
        backlog.taken();
        assert!(!backlog.counting_is_behind());
        backlog.taken();
        backlog.sent();
        assert!(
            backlog.counting_is_behind(),
            "a take without a send wrapped or went below zero"
        );
    }

    #[test]
    fn the_reader_stops_once_the_counting_thread_has_stopped() {
        let admission = default_admission();
        let (sender, receiver) = mpsc::sync_channel(1);
        drop(receiver);
        let batch = one_record_batch(&admission);
        assert!(send_checking_while_behind(&sender, batch, false, Some(&admission), 0).is_err());
    }
}
