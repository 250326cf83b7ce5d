//! The queue between the pipeline and one destination's delivery task: bounded, never
//! blocking the producer, dropping the oldest waiting alert when full (the newest state of an
//! incident is the one worth delivering).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use prometheus::IntCounter;
use tokio::sync::Notify;

use crate::proto::Alert;

/// A FIFO of at most `capacity` items that drops the oldest item to make room.
#[derive(Debug, Clone)]
pub struct BoundedQueue<T> {
    /// Waiting items, oldest first.
    items: VecDeque<T>,
    /// Largest number of waiting items (at least 1).
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    /// An empty queue holding at most `capacity` items (0 is treated as 1).
    pub fn new(capacity: usize) -> BoundedQueue<T> {
        BoundedQueue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends `item`; when the queue was full, the oldest item is removed and returned.
    pub fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    /// Removes and returns up to `max_items` of the oldest items.
    pub fn take_batch(&mut self, max_items: usize) -> Vec<T> {
        let count = max_items.min(self.items.len());
        self.items.drain(..count).collect()
    }

    /// Waiting items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// An alert waiting for delivery, with its hand-off time for the latency histogram.
#[derive(Debug, Clone)]
pub struct QueuedAlert {
    /// The alert state change.
    pub alert: Alert,
    /// When the pipeline handed it over.
    pub handed_off: Instant,
}

/// Locks a mutex, recovering the data of a poisoned one (a panicked holder cannot leave a
/// queue or a map half-updated in a way that matters here).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One destination's queue, shared by the pipeline (producer) and its delivery task.
pub(crate) struct AlertQueue {
    /// Waiting alerts.
    queue: Mutex<BoundedQueue<QueuedAlert>>,
    /// Wakes the delivery task after a push.
    wakeup: Notify,
    /// Counts alerts dropped from the full queue.
    dropped: IntCounter,
}

impl AlertQueue {
    /// An empty queue of `capacity` alerts.
    pub(crate) fn new(capacity: usize, dropped: IntCounter) -> AlertQueue {
        AlertQueue {
            queue: Mutex::new(BoundedQueue::new(capacity)),
            wakeup: Notify::new(),
            dropped,
        }
    }

    /// Appends without blocking (dropping the oldest when full) and wakes the task.
    pub(crate) fn offer(&self, alert: Alert, handed_off: Instant) {
        let dropped = lock(&self.queue).push(QueuedAlert { alert, handed_off });
        if let Some(dropped) = dropped {
            self.dropped.inc();
            tracing::warn!(
                alert_id = %dropped.alert.alert_id,
                "alert delivery queue full; dropped the oldest waiting alert"
            );
        }
        self.wakeup.notify_one();
    }

    /// Takes up to `max_items` waiting alerts, oldest first.
    pub(crate) fn take_batch(&self, max_items: usize) -> Vec<QueuedAlert> {
        lock(&self.queue).take_batch(max_items)
    }

    /// Waits until something was pushed since the last wait.
    pub(crate) async fn wait(&self) {
        self.wakeup.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest_item() {
        let mut queue = BoundedQueue::new(3);
        for item in 1..=3 {
            assert_eq!(queue.push(item), None);
        }
        assert_eq!(queue.push(4), Some(1));
        assert_eq!(queue.push(5), Some(2));
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.take_batch(2), vec![3, 4]);
        assert_eq!(queue.take_batch(10), vec![5]);
        assert!(queue.is_empty());
    }

    #[test]
    fn zero_capacity_queue_still_keeps_the_newest_item() {
        let mut queue = BoundedQueue::new(0);
        assert_eq!(queue.push("a"), None);
        assert_eq!(queue.push("b"), Some("a"));
        assert_eq!(queue.take_batch(5), vec!["b"]);
    }

    #[test]
    fn queue_offer_counts_drops() {
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let queue = AlertQueue::new(2, dropped.clone());
        for index in 0..5 {
            queue.offer(
                Alert {
                    alert_id: index.to_string(),
                    ..Alert::default()
                },
                Instant::now(),
            );
        }
        assert_eq!(dropped.get(), 3);
        let ids: Vec<String> = queue
            .take_batch(10)
            .into_iter()
            .map(|queued| queued.alert.alert_id)
            .collect();
        assert_eq!(ids, ["3", "4"]);
    }
}
