//! The stateless half of a pipeline: decode → field limits → validation (with
//! pseudonymization) → grid resolution. It reads no pipeline state, so a caller may run it on
//! another thread than the stateful half ([`super::Pipeline::process_admitted`]) as long as
//! the admitted records reach that half in input order: a file replay decodes on one core
//! while the other counts, windows and evaluates rules, and the outputs stay byte-identical
//! to a single-threaded run (see `replay.rs`).

// No panic path reachable from input, state or configuration (README "Security").

use std::sync::Arc;

use prost::Message;

use crate::dead_letter::DeadLetterReason;
use crate::decode::{Decoder, InputFormat, Rejection, ValidatedFields};
use crate::dedup::EventIdHash;
use crate::grid::{CellIndex, GridRegistry, GridResolveError};
use crate::limits::IngestLimits;
use crate::proto::IncidentEvent;
use crate::source::{RecordPayload, SourceRecord};
use crate::window::progress::source_key;

/// Decodes, checks, pseudonymizes and locates records; cheap to clone (one per thread).
#[derive(Debug, Clone)]
pub struct Admission {
    /// The first stage, which needs no registry.
    decoding: Decoding,
    /// Communities, cells and devices.
    registry: Arc<GridRegistry>,
}

/// The first stateless stage alone: a record's bytes decoded into an event, within the record
/// limit. It needs no grid registry, so a file replay's reading thread starts decoding with it
/// while the registry loads (the registry was most of a replay's start).
#[derive(Debug, Clone)]
pub struct Decoding {
    /// Decoding, validation, pseudonymization.
    decoder: Decoder,
    /// What one record may cost.
    limits: IngestLimits,
}

/// One record after the stateless stages, in the order it was read.
#[derive(Debug)]
pub struct AdmittedRecord {
    /// Input partition.
    pub partition: u32,
    /// Position within the partition.
    pub position: u64,
    /// Whether the record's bytes decoded into an event (for the `decoded` counter).
    pub decoded: bool,
    /// The located event, or what its dead letter needs.
    pub outcome: Result<Admitted, RejectedInput>,
}

/// One record after decoding, before the other stateless stages ([`Admission::check`]).
#[derive(Debug)]
pub struct DecodedRecord {
    /// Input partition.
    pub partition: u32,
    /// Position within the partition.
    pub position: u64,
    /// The decoded event and the format it came in, or why it could not be decoded.
    pub decoded: Result<(Box<IncidentEvent>, InputFormat), RejectedInput>,
}

/// One record's encoded bytes, lent by its reader, with where it was read.
#[derive(Debug, Clone, Copy)]
pub struct EncodedRecord<'bytes> {
    /// The bytes, exactly as framed.
    pub bytes: &'bytes [u8],
    /// How to decode them.
    pub format: InputFormat,
    /// Input partition.
    pub partition: u32,
    /// Position within the partition.
    pub position: u64,
}

/// A valid event with its grid cell: what the stateful stages take.
#[derive(Debug)]
pub struct Admitted {
    /// The decoded and pseudonymized event, boxed: it moves through several stages and
    /// back to the reader for reuse, and moving the box is moving a pointer.
    pub event: Box<IncidentEvent>,
    /// What validation established (type, severity, event time).
    pub fields: ValidatedFields,
    /// The grid cell it belongs to.
    pub cell: CellIndex,
    /// The format it came in (a late event's dead letter is written in it).
    pub format: InputFormat,
    /// The event id as dedup remembers it, and the clock source its event time advances
    /// ([`crate::window::progress::source_key`]): hashed here, so that the stateful stages
    /// read neither text (see [`EventIdHash`]).
    pub event_id_hash: EventIdHash,
    /// See `event_id_hash`.
    pub source_key: u64,
}

impl Admitted {
    /// The event as the rules and the fraud tracker see it.
    pub fn accepted_event(&self) -> crate::event::AcceptedEvent<'_> {
        crate::event::AcceptedEvent {
            event: &self.event,
            event_type: self.fields.event_type,
            severity: self.fields.severity,
            occurred_at_millis: self.fields.occurred_at_millis,
            cell: self.cell,
        }
    }
}

/// A rejected record: why, and the payload its dead letter keeps.
#[derive(Debug)]
pub struct RejectedInput {
    /// Reason, detail and event id.
    pub rejection: Rejection,
    /// Scrubbed original bytes, or the pseudonymized event re-encoded.
    pub payload: Vec<u8>,
}

/// Events the stateful stages are done with, kept by the thread that decodes, to decode the
/// next records into. Where one thread decodes and another counts (a replay), the counting
/// thread hands its processed batches back: the ids are then allocated and freed on the
/// decoding thread only, and rarely. Freeing another thread's allocations (mimalloc's
/// cross-thread frees) was a fifth of a replay's CPU. (Measured not to pay between the Kafka
/// consumer and the pipeline task, where other work dominates.)
#[derive(Debug, Default)]
pub struct SpareEvents {
    #[allow(
        clippy::vec_box,
        reason = "the boxes are what is reused: an admitted event moves as a pointer"
    )]
    events: Vec<Box<IncidentEvent>>,
}

/// Most events kept spare: two batches' worth.
const MAX_SPARE_EVENTS: usize = 2048;

impl SpareEvents {
    /// An event to decode into: a spare one when there is one.
    pub fn take(&mut self) -> Box<IncidentEvent> {
        self.events.pop().unwrap_or_default()
    }

    /// Keeps the events of a processed batch (as many as there is room for); the rest of the
    /// batch is dropped here.
    pub fn keep_events_of(&mut self, batch: Vec<AdmittedRecord>) {
        let room = MAX_SPARE_EVENTS.saturating_sub(self.events.len());
        let events = batch
            .into_iter()
            .filter_map(|record| record.outcome.ok().map(|admitted| admitted.event))
            .take(room);
        self.events.extend(events);
    }
}

impl RejectedInput {
    /// Moves the rejection out, leaving an empty one of the same reason behind (the record
    /// keeps its place in a batch that is handed back for reuse).
    pub fn take(&mut self) -> RejectedInput {
        RejectedInput {
            rejection: Rejection {
                reason: self.rejection.reason,
                detail: std::mem::take(&mut self.rejection.detail),
                event_id: std::mem::take(&mut self.rejection.event_id),
            },
            payload: std::mem::take(&mut self.payload),
        }
    }
}

impl Admission {
    /// The stateless stages of a pipeline with `settings` (the Kafka consumer runs them on its
    /// own thread, before the records reach the pipeline task).
    pub fn of_settings(
        settings: &super::PipelineSettings,
        registry: Arc<GridRegistry>,
    ) -> Admission {
        Admission::with_decoding(Decoding::of_settings(settings), registry)
    }

    /// The stateless stages around a decoding stage already built.
    pub(super) fn with_decoding(decoding: Decoding, registry: Arc<GridRegistry>) -> Admission {
        Admission { decoding, registry }
    }

    /// The first stage alone.
    pub fn decoding(&self) -> &Decoding {
        &self.decoding
    }

    /// The decoder (the stateful half scrubs every dead letter with it).
    pub fn decoder(&self) -> &Decoder {
        &self.decoding.decoder
    }

    /// Every stateless stage of one record at wall time `wall_millis`, decoding into `spare`
    /// (an event whose buffers are reused, or a new one).
    pub fn admit(
        &self,
        record: SourceRecord,
        wall_millis: i64,
        spare: Box<IncidentEvent>,
    ) -> AdmittedRecord {
        self.check(self.decoding.decode(record, spare), wall_millis)
    }

    /// The other stateless stages of a decoded record: field limits, validation (with
    /// pseudonymization) and grid resolution at wall time `wall_millis`.
    pub fn check(&self, record: DecodedRecord, wall_millis: i64) -> AdmittedRecord {
        let DecodedRecord {
            partition,
            position,
            decoded,
        } = record;
        let (event, format) = match decoded {
            Ok(decoded) => decoded,
            Err(rejected) => {
                return AdmittedRecord {
                    partition,
                    position,
                    decoded: false,
                    outcome: Err(rejected),
                }
            }
        };
        AdmittedRecord {
            partition,
            position,
            decoded: true,
            outcome: self.check_and_locate(event, format, wall_millis),
        }
    }

    /// Field limits, validation and grid resolution of a decoded event.
    fn check_and_locate(
        &self,
        mut event: Box<IncidentEvent>,
        format: InputFormat,
        wall_millis: i64,
    ) -> Result<Admitted, RejectedInput> {
        let rejected = |rejection: Rejection, event: &IncidentEvent| RejectedInput {
            rejection,
            payload: encode_event(event, format),
        };
        if let Err(too_long) = crate::limits::check_event_fields(&event, &self.decoding.limits) {
            // Refused before validation, which pseudonymizes: its dead letter must not carry
            // personal data in clear either.
            self.decoding.decoder.pseudonymize(&mut event);
            // Cut the id a dead letter names to the limit: the whole id is what was refused.
            let event_id = crate::limits::truncate_at_char_boundary(
                &event.event_id,
                self.decoding.limits.max_id_bytes,
            )
            .to_string();
            let rejection = Rejection {
                reason: DeadLetterReason::FieldTooLong,
                detail: too_long.to_string(),
                event_id,
            };
            return Err(rejected(rejection, &event));
        }
        let fields = match self.decoding.decoder.validate(&mut event, wall_millis) {
            Ok(fields) => fields,
            Err(rejection) => return Err(rejected(rejection, &event)),
        };
        let cell = match self.registry.resolve(&event) {
            Ok(cell) => cell,
            Err(error) => {
                let reason = match error {
                    GridResolveError::UnknownGrid { .. } => DeadLetterReason::UnknownGrid,
                    GridResolveError::InvalidCoordinates { .. } => {
                        DeadLetterReason::InvalidCoordinates
                    }
                };
                let rejection = Rejection {
                    reason,
                    detail: error.to_string(),
                    event_id: event.event_id.clone(),
                };
                return Err(rejected(rejection, &event));
            }
        };
        Ok(Admitted {
            event_id_hash: EventIdHash::of(&event.event_id),
            source_key: source_key(&event.device_id, &event.source),
            event,
            fields,
            cell,
            format,
        })
    }
}

impl Decoding {
    /// The decoding stage of a pipeline with `settings`.
    pub fn of_settings(settings: &super::PipelineSettings) -> Decoding {
        Decoding {
            decoder: Decoder::new(settings.decode.clone()),
            limits: settings.limits,
        }
    }

    /// The first stateless stage alone: decodes `record` into `spare`, an event the stateful
    /// stages are done with, whose string buffers are reused. A replay decodes on one thread
    /// (handing events back to it: allocating them there and freeing them on the counting
    /// thread was a fifth of the replay's CPU) and runs [`Admission::check`] on another.
    pub fn decode(&self, record: SourceRecord, spare: Box<IncidentEvent>) -> DecodedRecord {
        let SourceRecord {
            payload,
            partition,
            position,
        } = record;
        DecodedRecord {
            partition,
            position,
            decoded: self.decode_payload(payload, spare),
        }
    }

    /// [`Decoding::decode`] of a record's bytes lent by its reader (a file replay decodes
    /// each record where it was read into, never copying it).
    pub fn decode_lent(
        &self,
        record: EncodedRecord<'_>,
        spare: Box<IncidentEvent>,
    ) -> DecodedRecord {
        DecodedRecord {
            partition: record.partition,
            position: record.position,
            decoded: self.decode_encoded(record.bytes, record.format, spare),
        }
    }

    /// Decodes a record's bytes into `spare`, refusing more than the record limit.
    fn decode_encoded(
        &self,
        bytes: &[u8],
        format: InputFormat,
        mut spare: Box<IncidentEvent>,
    ) -> Result<(Box<IncidentEvent>, InputFormat), RejectedInput> {
        if bytes.len() > self.limits.max_record_bytes {
            return Err(self.oversized(bytes, bytes.len() as u64));
        }
        match self.decoder.decode_into(bytes, format, &mut spare) {
            Ok(()) => Ok((spare, format)),
            Err(rejection) => Err(RejectedInput {
                rejection,
                payload: self.decoder.scrub_undecodable(bytes),
            }),
        }
    }

    /// The rejection of a record of `total_bytes` above the record limit, keeping (scrubbed)
    /// only as much of its first bytes as a dead letter may carry.
    fn oversized(&self, first_bytes: &[u8], total_bytes: u64) -> RejectedInput {
        let kept = first_bytes
            .get(..self.limits.max_dead_letter_payload_bytes)
            .unwrap_or(first_bytes);
        RejectedInput {
            rejection: Rejection {
                reason: DeadLetterReason::Oversized,
                detail: format!(
                    "record of {total_bytes} bytes is above the {}-byte limit (ingest.max_record_bytes)",
                    self.limits.max_record_bytes
                ),
                event_id: String::new(),
            },
            payload: self.decoder.scrub_undecodable(kept),
        }
    }

    /// The decoded event (into `spare` when the payload is encoded) and the format its dead
    /// letters are written in.
    fn decode_payload(
        &self,
        payload: RecordPayload,
        spare: Box<IncidentEvent>,
    ) -> Result<(Box<IncidentEvent>, InputFormat), RejectedInput> {
        match payload {
            RecordPayload::Encoded { bytes, format } => self.decode_encoded(&bytes, format, spare),
            RecordPayload::Oversized {
                prefix,
                total_bytes,
            } => Err(self.oversized(&prefix, total_bytes)),
            RecordPayload::Event(event) => Ok((event, InputFormat::Jsonl)),
            RecordPayload::Unframed {
                bytes,
                format,
                detail,
            } => {
                let reason = match format {
                    InputFormat::Jsonl => DeadLetterReason::InvalidJson,
                    InputFormat::Protobuf => DeadLetterReason::InvalidProtobuf,
                };
                Err(RejectedInput {
                    rejection: Rejection {
                        reason,
                        detail,
                        event_id: String::new(),
                    },
                    payload: self.decoder.scrub_undecodable(&bytes),
                })
            }
        }
    }
}

/// Re-encodes a decoded (pseudonymized) event for a dead letter, in the format it came in.
pub(super) fn encode_event(event: &IncidentEvent, format: InputFormat) -> Vec<u8> {
    match format {
        InputFormat::Protobuf => event.encode_to_vec(),
        InputFormat::Jsonl => serde_json::to_vec(event).unwrap_or_else(|error| {
            // Cannot happen for a decoded event; if it ever does, say so rather than write a
            // dead letter whose empty payload looks like an empty input.
            tracing::error!(%error, event_id = %event.event_id, "cannot re-encode a dead-lettered event as json; its payload is left empty");
            Vec::new()
        }),
    }
}
