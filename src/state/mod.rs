//! State snapshots: the pipeline's panes, views, dedup set, watermarks and alert state as
//! bytes, and back. With a Kafka source, one snapshot per input partition goes to the state
//! topic ([`kafka`]); otherwise the service can keep one in a file across restarts
//! (`[state] snapshot_path`).
//!
//! Format: a magic/version header, then the window settings, view spans and registry
//! fingerprint the state was taken with, and the [`PipelineState`], in postcard. A snapshot is
//! untrusted input (anyone who can write the state topic can write one): one taken with other
//! window settings, views or `seeds/`, or holding any index the running registry does not have,
//! is refused with a [`SnapshotError`] rather than mis-read or allowed to crash a later tick;
//! the partition then starts empty from its committed offset.

// No panic path reachable from input, state or configuration (README "Security").

pub mod kafka;

use serde::{Deserialize, Serialize};

use crate::grid::{GridRegistry, RegistryShape, StateOutOfBounds};
use crate::pipeline::{Pipeline, PipelineSettings, PipelineState};
use crate::rules::BaselineState;
use crate::window::WindowSettings;

/// First bytes of every snapshot. The number changes whenever the encoded state changes shape
/// (02: per-partition progress with the sources held ahead; 03: stages and rules as two
/// parts; 05: spike series carry when they came back near the baseline; 06: scan rules' state
/// and alerts' cluster members), so an older snapshot is refused with a clear error instead of
/// mis-read.
const SNAPSHOT_MAGIC: &[u8; 8] = b"GWSNAP06";

/// Errors restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a gridwatch snapshot of this version.
    #[error("not a gridwatch snapshot (bad header)")]
    BadHeader,
    /// Encoding or decoding failed.
    #[error("snapshot encoding: {0}")]
    Codec(#[from] postcard::Error),
    /// The snapshot was taken with different window settings.
    #[error("snapshot pane size / lateness {snapshot:?} differ from the running ones {running:?}")]
    SettingsMismatch {
        /// What the snapshot was taken with.
        snapshot: WindowSettings,
        /// What the pipeline runs with.
        running: WindowSettings,
    },
    /// The snapshot was taken with other sliding views.
    #[error("snapshot views {snapshot:?} (ms) differ from the running views {running:?}")]
    ViewsMismatch {
        /// What the snapshot was taken with.
        snapshot: Vec<i64>,
        /// What the pipeline runs with.
        running: Vec<i64>,
    },
    /// The snapshot was taken with another registry (`seeds/`): its cell and community
    /// indexes name other places.
    #[error("snapshot registry fingerprint {snapshot:016x} differs from the running registry's {running:016x} (other seeds)")]
    RegistryMismatch {
        /// Fingerprint the snapshot was taken with.
        snapshot: u64,
        /// Fingerprint of the running registry.
        running: u64,
    },
    /// An index or bound in the state does not fit the running registry or settings.
    #[error("snapshot state does not fit: {0}")]
    OutOfBounds(#[from] StateOutOfBounds),
}

/// What a snapshot must fit to be restored here: the running pane shape and views, and the
/// registry whose indexes it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotFit {
    /// Running window settings (pane size and lateness must match).
    pub window: WindowSettings,
    /// Running view spans (must match).
    pub view_spans_millis: Vec<i64>,
    /// Running registry's sizes and fingerprint.
    pub registry: RegistryShape,
}

impl SnapshotFit {
    /// What pipelines with `settings` over `registry` can restore.
    pub fn new(settings: &PipelineSettings, registry: &GridRegistry) -> SnapshotFit {
        SnapshotFit {
            window: settings.window,
            view_spans_millis: settings.view_spans_millis.clone(),
            registry: RegistryShape::of(registry),
        }
    }

    /// What `pipeline` can restore.
    pub fn of(pipeline: &Pipeline) -> SnapshotFit {
        SnapshotFit::new(pipeline.settings(), pipeline.registry())
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    window: WindowSettings,
    view_spans_millis: Vec<i64>,
    /// Little-endian bytes of [`RegistryShape::fingerprint`] (fixed width in the encoding).
    registry_fingerprint: [u8; 8],
    state: PipelineState,
}

/// Serializes the pipeline's state.
pub fn snapshot(pipeline: &Pipeline) -> Result<Vec<u8>, SnapshotError> {
    let body = SnapshotBody {
        window: pipeline.settings().window,
        view_spans_millis: pipeline.settings().view_spans_millis.clone(),
        registry_fingerprint: RegistryShape::of(pipeline.registry())
            .fingerprint
            .to_le_bytes(),
        state: pipeline.state(),
    };
    let mut bytes = SNAPSHOT_MAGIC.to_vec();
    bytes.extend_from_slice(&postcard::to_allocvec(&body)?);
    Ok(bytes)
}

/// Restores a pipeline's state from [`snapshot`] bytes.
pub fn restore(pipeline: &mut Pipeline, bytes: &[u8]) -> Result<(), SnapshotError> {
    let state = decode(bytes, &SnapshotFit::of(pipeline))?;
    pipeline.restore_state(state);
    Ok(())
}

/// The state in [`snapshot`] bytes, checked against what the running pipelines can restore
/// (`fit`): settings, registry fingerprint and every index. Validated before anything depends
/// on it, e.g. the offset it resumes at.
pub fn decode(bytes: &[u8], fit: &SnapshotFit) -> Result<PipelineState, SnapshotError> {
    let Some(body_bytes) = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()) else {
        return Err(SnapshotError::BadHeader);
    };
    let body: SnapshotBody = postcard::from_bytes(body_bytes)?;
    // Pane size and lateness shape the stored panes and views; out-of-orderness and the idle
    // timeout only change how the watermark moves from here on, so they may differ.
    let running = fit.window;
    let same_shape = body.window.size_millis == running.size_millis
        && body.window.allowed_lateness_millis == running.allowed_lateness_millis;
    if !same_shape {
        return Err(SnapshotError::SettingsMismatch {
            snapshot: body.window,
            running,
        });
    }
    if body.view_spans_millis != fit.view_spans_millis {
        return Err(SnapshotError::ViewsMismatch {
            snapshot: body.view_spans_millis,
            running: fit.view_spans_millis.clone(),
        });
    }
    let snapshot_fingerprint = u64::from_le_bytes(body.registry_fingerprint);
    if snapshot_fingerprint != fit.registry.fingerprint {
        return Err(SnapshotError::RegistryMismatch {
            snapshot: snapshot_fingerprint,
            running: fit.registry.fingerprint,
        });
    }
    // The header can be forged along with the body: every index is checked as well.
    body.state
        .check_bounds(&fit.registry, fit.window, &fit.view_spans_millis)?;
    Ok(body.state)
}

/// First bytes of a learned-history snapshot of the whole-city detector
/// ([`crate::rules::whole_city::WholeCityDetector::learned_history`]).
const LEARNED_HISTORY_MAGIC: &[u8; 8] = b"GWLRND01";

#[derive(Serialize, Deserialize)]
struct LearnedHistoryBody {
    /// Little-endian bytes of [`RegistryShape::fingerprint`]: the counts are by cell index.
    registry_fingerprint: [u8; 8],
    history: BaselineState,
}

/// Serializes the whole-city detector's learned history, taken over `registry`'s cells.
pub fn learned_history_snapshot(
    history: &BaselineState,
    registry: &GridRegistry,
) -> Result<Vec<u8>, SnapshotError> {
    let body = LearnedHistoryBody {
        registry_fingerprint: RegistryShape::of(registry).fingerprint.to_le_bytes(),
        history: history.clone(),
    };
    let mut bytes = LEARNED_HISTORY_MAGIC.to_vec();
    bytes.extend_from_slice(&postcard::to_allocvec(&body)?);
    Ok(bytes)
}

/// The learned history in [`learned_history_snapshot`] bytes, checked against the running
/// registry: its fingerprint and every cell and type index (the state topic is untrusted
/// input, like partition snapshots).
pub fn decode_learned_history(
    bytes: &[u8],
    registry: &RegistryShape,
) -> Result<BaselineState, SnapshotError> {
    let Some(body_bytes) = bytes.strip_prefix(LEARNED_HISTORY_MAGIC.as_slice()) else {
        return Err(SnapshotError::BadHeader);
    };
    let body: LearnedHistoryBody = postcard::from_bytes(body_bytes)?;
    let snapshot_fingerprint = u64::from_le_bytes(body.registry_fingerprint);
    if snapshot_fingerprint != registry.fingerprint {
        return Err(SnapshotError::RegistryMismatch {
            snapshot: snapshot_fingerprint,
            running: registry.fingerprint,
        });
    }
    body.history.check_bounds(registry)?;
    Ok(body.history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::CellIndex;
    use crate::proto::EventType;

    fn learned_history(cell: u32) -> BaselineState {
        let mut history = BaselineState::default();
        history.set_learned_types(&std::collections::BTreeSet::from([
            EventType::FraudReported as i32,
        ]));
        history.on_event(CellIndex(cell), EventType::FraudReported, 3_600_000);
        history
    }

    #[test]
    fn a_learned_history_round_trips_and_one_of_other_seeds_or_out_of_bounds_is_refused() {
        let registry = GridRegistry::embedded();
        let shape = RegistryShape::of(&registry);
        let history = learned_history(3);
        let bytes = learned_history_snapshot(&history, &registry).unwrap();
        assert_eq!(decode_learned_history(&bytes, &shape).unwrap(), history);

        let other_seeds = RegistryShape {
            fingerprint: shape.fingerprint ^ 1,
            ..shape
        };
        assert!(matches!(
            decode_learned_history(&bytes, &other_seeds),
            Err(SnapshotError::RegistryMismatch { .. })
        ));
        let beyond_the_cells = u32::try_from(registry.cells().len()).unwrap();
        let forged =
            learned_history_snapshot(&learned_history(beyond_the_cells), &registry).unwrap();
        assert!(matches!(
            decode_learned_history(&forged, &shape),
            Err(SnapshotError::OutOfBounds(_))
        ));
        assert!(matches!(
            decode_learned_history(b"GWSNAP06", &shape),
            Err(SnapshotError::BadHeader)
        ));
        assert!(matches!(
            decode_learned_history(&bytes[..bytes.len() - 3], &shape),
            Err(SnapshotError::Codec(_))
        ));
    }
}
