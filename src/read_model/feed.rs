//! The change feed behind `GET /api/v1/stream`: every published change gets the next sequence
//! number, is kept in a bounded replay buffer (for `Last-Event-ID` resume) and broadcast to
//! live subscribers through a bounded channel. The writer never waits for a subscriber: a
//! subscriber that falls more than the channel's capacity behind sees `Lagged` and is dropped
//! by the stream handler.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::views::{StreamEvent, StreamPayload};

/// Events kept for resuming clients.
pub const REPLAY_EVENTS: usize = 4096;
/// Events a live subscriber may be behind before it is dropped.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// What a new subscriber starts with.
#[derive(Debug)]
pub enum Resume {
    /// The events after its `Last-Event-ID` (empty for a new client): it is up to date once
    /// it has sent them.
    Replay(Vec<Arc<StreamEvent>>),
    /// Its `Last-Event-ID` is older than the replay buffer (or from another process): it must
    /// re-read the REST endpoints.
    Reset,
}

/// A subscription: what to send first, then the live events.
#[derive(Debug)]
pub struct Subscription {
    /// Sent first.
    pub resume: Resume,
    /// Every event published after the resume point, in order.
    pub live: broadcast::Receiver<Arc<StreamEvent>>,
    /// The newest sequence number at subscription time (what a `reset` client is at).
    pub current_id: u64,
}

struct FeedState {
    next_id: u64,
    replay: VecDeque<Arc<StreamEvent>>,
}

/// The feed, shared by the writer (the model's task) and the stream handlers.
pub struct ChangeFeed {
    /// Guards the sequence and the replay buffer together with sending, so a subscriber's
    /// replay and live events never overlap or leave a gap. Held for microseconds.
    state: Mutex<FeedState>,
    sender: broadcast::Sender<Arc<StreamEvent>>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ChangeFeed")
            .field("subscribers", &self.sender.receiver_count())
            .finish()
    }
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed::new()
    }
}

impl ChangeFeed {
    /// An empty feed; sequence numbers start at 1 and at a value derived from the wall
    /// clock, so that a client's `Last-Event-ID` from a previous process is never mistaken for
    /// one of this process (it is older than anything here, hence `reset`).
    pub fn new() -> ChangeFeed {
        let (sender, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let first_id = u64::try_from(crate::time::wall_clock_millis())
            .unwrap_or(1)
            .saturating_mul(1000)
            .max(1);
        ChangeFeed {
            state: Mutex::new(FeedState {
                next_id: first_id,
                replay: VecDeque::with_capacity(REPLAY_EVENTS),
            }),
            sender,
        }
    }

    /// Publishes `payload` as the next event and returns its sequence number.
    pub fn publish(&self, payload: StreamPayload) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let id = state.next_id;
        state.next_id = id.saturating_add(1);
        let event = Arc::new(StreamEvent { id, payload });
        if state.replay.len() == REPLAY_EVENTS {
            state.replay.pop_front();
        }
        state.replay.push_back(event.clone());
        // No receivers is not an error: nobody is watching.
        let _ = self.sender.send(event);
        id
    }

    /// The newest sequence number published (one before the first when none was).
    pub fn current_id(&self) -> u64 {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.next_id.saturating_sub(1)
    }

    /// Subscribes a client that last saw `last_event_id` (`None` for a new client).
    pub fn subscribe(&self, last_event_id: Option<u64>) -> Subscription {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let live = self.sender.subscribe();
        let current_id = state.next_id.saturating_sub(1);
        let resume = match last_event_id {
            None => Resume::Replay(Vec::new()),
            Some(last) if last >= current_id => {
                if last > current_id {
                    Resume::Reset
                } else {
                    Resume::Replay(Vec::new())
                }
            }
            Some(last) => {
                let oldest_kept = state.replay.front().map(|event| event.id);
                match oldest_kept {
                    Some(oldest) if last.saturating_add(1) >= oldest => Resume::Replay(
                        state
                            .replay
                            .iter()
                            .filter(|event| event.id > last)
                            .cloned()
                            .collect(),
                    ),
                    _ => Resume::Reset,
                }
            }
        };
        Subscription {
            resume,
            live,
            current_id,
        }
    }

    /// Live subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_model::views::CellsChange;

    fn cells_payload(watermark: &str) -> StreamPayload {
        StreamPayload::Cells(CellsChange {
            watermark: Some(watermark.to_string()),
            views: vec!["15m".to_string()],
            cells: Vec::new(),
        })
    }

    fn ids(events: &[Arc<StreamEvent>]) -> Vec<u64> {
        events.iter().map(|event| event.id).collect()
    }

    #[test]
    fn a_resuming_client_gets_exactly_the_events_after_its_last_id_then_live_ones() {
        let feed = ChangeFeed::new();
        let first = feed.publish(cells_payload("a"));
        let second = feed.publish(cells_payload("b"));
        let third = feed.publish(cells_payload("c"));
        let mut subscription = feed.subscribe(Some(first));
        let Resume::Replay(replayed) = subscription.resume else {
            panic!("expected a replay")
        };
        assert_eq!(ids(&replayed), [second, third]);
        let fourth = feed.publish(cells_payload("d"));
        assert_eq!(subscription.live.try_recv().unwrap().id, fourth);
        assert!(subscription.live.try_recv().is_err(), "nothing twice");
    }

    #[test]
    fn an_id_older_than_the_replay_buffer_or_from_another_process_means_reset() {
        let feed = ChangeFeed::new();
        let first = feed.publish(cells_payload("a"));
        for _ in 0..REPLAY_EVENTS {
            feed.publish(cells_payload("x"));
        }
        // The event after `first` is still kept: a complete replay.
        assert!(matches!(
            feed.subscribe(Some(first)).resume,
            Resume::Replay(events) if events.len() == REPLAY_EVENTS
        ));
        feed.publish(cells_payload("y"));
        assert!(matches!(feed.subscribe(Some(first)).resume, Resume::Reset));
        assert!(matches!(feed.subscribe(Some(1)).resume, Resume::Reset));
        let future_id = feed.current_id() + 10;
        assert!(matches!(
            feed.subscribe(Some(future_id)).resume,
            Resume::Reset
        ));
        let up_to_date = feed.subscribe(Some(feed.current_id()));
        assert!(matches!(up_to_date.resume, Resume::Replay(events) if events.is_empty()));
    }

    #[test]
    fn a_subscriber_that_does_not_keep_up_lags_and_the_writer_never_waits() {
        let feed = ChangeFeed::new();
        let mut slow = feed.subscribe(None);
        for _ in 0..(SUBSCRIBER_BUFFER + 10) {
            feed.publish(cells_payload("x"));
        }
        assert!(matches!(
            slow.live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
