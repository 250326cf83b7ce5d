//! Delivery disorder: every event is delivered after a bounded random delay, and a few twice,
//! so that a consumer sees the out-of-order and duplicate delivery of real device networks —
//! but never later than `max_delivery_delay_millis` behind a later event.

use std::cmp::Reverse;

use rand::Rng;
use rand_distr::{Distribution, Exp1};

use super::generator::Simulator;
use crate::proto::IncidentEvent;
use crate::time::millis_to_timestamp;

/// An event waiting in the delivery queue.
#[derive(Debug, Clone)]
pub(super) struct QueuedDelivery {
    /// When the event is delivered, epoch milliseconds.
    pub(super) delivery_millis: i64,
    /// Insertion order (ties).
    pub(super) order: u64,
    /// The event.
    pub(super) event: IncidentEvent,
}

impl PartialEq for QueuedDelivery {
    fn eq(&self, other: &Self) -> bool {
        (self.delivery_millis, self.order) == (other.delivery_millis, other.order)
    }
}

impl Eq for QueuedDelivery {}

impl PartialOrd for QueuedDelivery {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QueuedDelivery {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.delivery_millis, self.order).cmp(&(other.delivery_millis, other.order))
    }
}

impl Simulator {
    /// The next event in delivery order with its delivery time (epoch milliseconds). The
    /// delivery time equals `received_at`, except for duplicate copies, which are delivered
    /// later than the `received_at` they share with the original.
    pub fn next_delivery(&mut self) -> (i64, IncidentEvent) {
        loop {
            let next_background = self.peek_background();
            let next_scheduled = self
                .scheduled
                .peek()
                .map(|Reverse(scheduled)| scheduled.occurred_millis);
            let frontier = match next_scheduled {
                Some(scheduled_millis) => scheduled_millis.min(next_background.occurred_millis),
                None => next_background.occurred_millis,
            };
            if let Some(Reverse(head)) = self.delivery_queue.peek() {
                if head.delivery_millis <= frontier {
                    if let Some(Reverse(delivered)) = self.delivery_queue.pop() {
                        return (delivered.delivery_millis, delivered.event);
                    }
                }
            }
            let generated = if next_scheduled
                .is_some_and(|scheduled_millis| scheduled_millis < next_background.occurred_millis)
            {
                self.generate_scheduled()
            } else {
                self.pending_background = None;
                self.generate_background(next_background)
            };
            if let Some(event) = generated {
                self.enqueue(event);
            }
        }
    }

    /// A delivery delay: mostly short (exponential, mean a few hundred milliseconds), one in
    /// ten uniform up to the bound.
    pub(super) fn delivery_delay(&mut self) -> i64 {
        let max_delay = self.settings.max_delivery_delay_millis;
        if max_delay <= 0 {
            return 0;
        }
        if self.rng.random::<f64>() < 0.1 {
            return self.rng.random_range(0..=max_delay);
        }
        let mean = (max_delay as f64 / 16.0).clamp(1.0, 300.0);
        let unit_exponential: f64 = Exp1.sample(&mut self.rng);
        ((unit_exponential * mean) as i64).min(max_delay)
    }

    /// Sets `received_at` and queues the event (and maybe a duplicate) for delivery.
    pub(super) fn enqueue(&mut self, mut event: IncidentEvent) {
        let occurred_millis = event
            .occurred_at
            .as_ref()
            .map(crate::time::timestamp_to_millis)
            .unwrap_or(self.settings.start_millis);
        let delay = self.delivery_delay();
        let delivery_millis = occurred_millis.saturating_add(delay);
        event.received_at = Some(millis_to_timestamp(delivery_millis));
        if self.settings.duplicate_fraction > 0.0
            && self.rng.random::<f64>() < self.settings.duplicate_fraction
        {
            let max_delivery =
                occurred_millis.saturating_add(self.settings.max_delivery_delay_millis);
            let duplicate_delivery = self.rng.random_range(delivery_millis..=max_delivery);
            self.delivery_order += 1;
            self.delivery_queue.push(Reverse(QueuedDelivery {
                delivery_millis: duplicate_delivery,
                order: self.delivery_order,
                event: event.clone(),
            }));
        }
        self.delivery_order += 1;
        self.delivery_queue.push(Reverse(QueuedDelivery {
            delivery_millis,
            order: self.delivery_order,
            event,
        }));
    }
}
