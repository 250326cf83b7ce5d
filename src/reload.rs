//! Hot reload of the rules file: on SIGHUP and whenever the file changes on disk, the file is
//! read and validated whole. A valid file whose version (hash) differs from the running one is
//! handed to the pipeline task, which swaps it in between two records; an invalid file is
//! logged and counted, and the running rules keep firing.
//!
//! An admin may also ask for a reload over HTTP (`POST /api/v1/admin/reload`): that request
//! goes through the same path as SIGHUP and is answered with the outcome.
//!
//! The directory is watched rather than the file, because editors and config-map updates
//! replace files by renaming over them. Bursts of file events are coalesced.

// No panic path reachable from input, state or configuration (README "Security").

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::rules::RuleSet;

/// File events closer together than this are one change.
const COALESCE: Duration = Duration::from_millis(250);

/// What triggered a reload (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// The process received SIGHUP.
    Signal,
    /// The file changed on disk.
    FileChange,
    /// An admin asked over HTTP.
    Api,
}

impl ReloadTrigger {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "sighup",
            ReloadTrigger::FileChange => "file_change",
            ReloadTrigger::Api => "api",
        }
    }
}

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch rules file {path}: {source}")]
pub struct WatchError {
    /// The watched file.
    path: String,
    /// The watcher's error.
    source: notify::Error,
}

/// What a reload asked for over HTTP did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new, valid rule set is handed to the pipeline.
    Applied {
        /// Its version.
        version: String,
    },
    /// The file holds the running rules.
    Unchanged {
        /// The running version.
        version: String,
    },
    /// The file is unreadable or invalid; the running rules stay.
    Rejected {
        /// Why.
        message: String,
    },
}

/// A reload asked for over HTTP; the outcome goes to `reply`.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Where the outcome goes.
    pub reply: tokio::sync::oneshot::Sender<ReloadOutcome>,
}

/// Reads and validates the rules file; `Ok(None)` when its version equals `running_version`.
pub fn load_if_changed(
    path: &Path,
    pane_size_millis: i64,
    running_version: &str,
) -> Result<Option<RuleSet>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read: {error}"))?;
    let rules =
        RuleSet::from_toml_str(&text, pane_size_millis).map_err(|error| error.to_string())?;
    if rules.version() == running_version {
        return Ok(None);
    }
    Ok(Some(rules))
}

/// Starts a watcher on the directory of `path` whose events go to `event_sender`.
fn watch_file(
    path: &Path,
    event_sender: mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, WatchError> {
    let watched_file_name = path.file_name().map(|name| name.to_os_string());
    let watch_error = |source| WatchError {
        path: path.display().to_string(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        let touches_file = event.paths.iter().any(|changed| {
            changed.file_name().map(|name| name.to_os_string()) == watched_file_name
        });
        // Reading the file (ours included) yields access and attribute (atime) events: only
        // creations, renames, content writes and removals can change the rules.
        let may_change_content = !matches!(
            event.kind,
            notify::EventKind::Access(_)
                | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
        );
        if touches_file && may_change_content {
            let _ = event_sender.send(());
        }
    })
    .map_err(watch_error)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher
        .watch(&directory, notify::RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    Ok(watcher)
}

/// Watches `path`, SIGHUP and `api_requests` until `cancel`; sends each valid, changed rule
/// set, and answers each API request with the outcome.
///
/// `running_version` starts as the loaded rules' version and follows what was sent. When the
/// file cannot be watched (e.g. the inotify instance limit is reached), the error is logged and
/// SIGHUP still reloads.
pub fn spawn(
    path: PathBuf,
    pane_size_millis: i64,
    running_version: String,
    metrics: std::sync::Arc<Metrics>,
    rules_sender: mpsc::Sender<RuleSet>,
    mut api_requests: mpsc::Receiver<ReloadRequest>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (event_sender, mut event_receiver) = mpsc::unbounded_channel::<()>();
    let watcher = match watch_file(&path, event_sender) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::error!(%error, "rules file changes are not watched; SIGHUP still reloads");
            None
        }
    };

    // Registered before returning, so a SIGHUP right after start is a reload, never the
    // default action (which would end the process).
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let task = tokio::spawn(async move {
        // The watcher stops when dropped: keep it alive for the task's lifetime.
        let _watcher = watcher;
        let mut running_version = running_version;
        loop {
            #[cfg(unix)]
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_received = std::future::pending::<()>();
            let (trigger, reply) = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = hangup_received => (ReloadTrigger::Signal, None),
                Some(request) = api_requests.recv() => (ReloadTrigger::Api, Some(request.reply)),
                Some(()) = event_receiver.recv() => {
                    tokio::time::sleep(COALESCE).await;
                    while event_receiver.try_recv().is_ok() {}
                    (ReloadTrigger::FileChange, None)
                }
            };
            let outcome = match load_if_changed(&path, pane_size_millis, &running_version) {
                Ok(None) => {
                    metrics
                        .rules_reloads
                        .with_label_values(&[trigger.as_str(), "unchanged"])
                        .inc();
                    ReloadOutcome::Unchanged {
                        version: running_version.clone(),
                    }
                }
                Ok(Some(rules)) => {
                    tracing::info!(trigger = trigger.as_str(), version = rules.version(), path = %path.display(), "rules file reloaded");
                    metrics
                        .rules_reloads
                        .with_label_values(&[trigger.as_str(), "applied"])
                        .inc();
                    running_version = rules.version().to_string();
                    if rules_sender.send(rules).await.is_err() {
                        return;
                    }
                    ReloadOutcome::Applied {
                        version: running_version.clone(),
                    }
                }
                Err(error) => {
                    tracing::error!(trigger = trigger.as_str(), path = %path.display(), %error, "rules file rejected; the running rules stay");
                    metrics
                        .rules_reloads
                        .with_label_values(&[trigger.as_str(), "invalid"])
                        .inc();
                    ReloadOutcome::Rejected { message: error }
                }
            };
            if let Some(reply) = reply {
                // The asker may have given up (timeout): nothing to do then.
                let _ = reply.send(outcome);
            }
        }
    });
    task
}
