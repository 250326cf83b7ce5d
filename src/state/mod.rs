//! State snapshots: the pipeline's panes, views, dedup set, watermarks and alert state as
//! bytes, and back. With a Kafka source, one snapshot per input partition goes to the state
//! topic ([`kafka`]); otherwise the service can keep one in a file across restarts
//! (`[state] snapshot_path`).
//!
//! Format: a magic/version header, then the [`PipelineState`] in postcard. A snapshot taken
//! with different window settings is refused rather than silently mis-read.

pub mod kafka;

use serde::{Deserialize, Serialize};

use crate::pipeline::{Pipeline, PipelineState};
use crate::window::WindowSettings;

/// First bytes of every snapshot. The number changes whenever the encoded state changes shape
/// (02: per-partition progress with the sources held ahead), so an older snapshot is refused
/// with a clear error instead of mis-read.
const SNAPSHOT_MAGIC: &[u8; 8] = b"GWSNAP02";

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
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    window: WindowSettings,
    state: PipelineState,
}

/// Serializes the pipeline's state.
pub fn snapshot(pipeline: &Pipeline) -> Result<Vec<u8>, SnapshotError> {
    let body = SnapshotBody {
        window: pipeline.settings().window,
        state: pipeline.state(),
    };
    let mut bytes = SNAPSHOT_MAGIC.to_vec();
    bytes.extend_from_slice(&postcard::to_allocvec(&body)?);
    Ok(bytes)
}

/// Restores a pipeline's state from [`snapshot`] bytes.
pub fn restore(pipeline: &mut Pipeline, bytes: &[u8]) -> Result<(), SnapshotError> {
    let state = decode(bytes, pipeline.settings().window)?;
    pipeline.restore_state(state);
    Ok(())
}

/// The state in [`snapshot`] bytes, checked against the `running` window settings (so a
/// snapshot can be validated before anything depends on it, e.g. the offset it resumes at).
pub fn decode(bytes: &[u8], running: WindowSettings) -> Result<PipelineState, SnapshotError> {
    let Some(body_bytes) = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()) else {
        return Err(SnapshotError::BadHeader);
    };
    let body: SnapshotBody = postcard::from_bytes(body_bytes)?;
    // Pane size and lateness shape the stored panes and views; out-of-orderness and the idle
    // timeout only change how the watermark moves from here on, so they may differ.
    let same_shape = body.window.size_millis == running.size_millis
        && body.window.allowed_lateness_millis == running.allowed_lateness_millis;
    if !same_shape {
        return Err(SnapshotError::SettingsMismatch {
            snapshot: body.window,
            running,
        });
    }
    Ok(body.state)
}
