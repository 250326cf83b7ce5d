//! Properties of the window contract, over simulator streams (proptest).

use std::collections::HashSet;

use crate::support::{
    default_pipeline, record, run_events, simulated_events, sorted_window_lines, WALL_MILLIS,
};
use gridwatch::pipeline::{Outputs, RecordResult};
use gridwatch::proto::IncidentEvent;
use gridwatch::time::timestamp_to_millis;
use proptest::prelude::*;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Unique events sorted by event time (the simulator's own re-sends and jitter removed).
fn ordered_unique_events(seed: u64, count: usize) -> Vec<IncidentEvent> {
    let mut seen = HashSet::new();
    let mut events: Vec<IncidentEvent> = simulated_events(seed, count, 20.0)
        .into_iter()
        .filter(|event| seen.insert(event.event_id.clone()))
        .collect();
    events.sort_by_key(|event| timestamp_to_millis(event.occurred_at.as_ref().unwrap()));
    events
}

fn occurred_at_millis(event: &IncidentEvent) -> i64 {
    timestamp_to_millis(event.occurred_at.as_ref().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn window_counts_sum_to_accepted_events(seed in 0_u64..1000) {
        let events = simulated_events(seed, 3000, 20.0);
        let (mut pipeline, _) = default_pipeline();
        let mut outputs = Outputs::default();
        let mut accepted = 0_u64;
        for (position, event) in events.iter().enumerate() {
            if pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs) == RecordResult::Accepted {
                accepted += 1;
            }
        }
        pipeline.finish(WALL_MILLIS, &mut outputs);
        let windowed: u64 = outputs.windows.iter().map(|window| u64::from(window.counts.count)).sum();
        prop_assert!(accepted > 0);
        prop_assert_eq!(windowed, accepted);
        let by_severity: u64 = outputs.windows.iter().flat_map(|window| window.counts.count_by_severity.iter()).map(|count| u64::from(*count)).sum();
        prop_assert_eq!(by_severity, accepted);
    }

    #[test]
    fn shuffling_within_the_out_of_orderness_bound_gives_identical_windows(seed in 0_u64..1000, shuffle_seed in 0_u64..1000) {
        let events = ordered_unique_events(seed, 3000);
        // Each event moves to the position of (its time + a delay below the 10 s bound): no
        // event can then arrive after the watermark passed its window.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(shuffle_seed);
        let mut keyed: Vec<(i64, IncidentEvent)> = events
            .iter()
            .map(|event| (occurred_at_millis(event) + rng.random_range(0..9_999), event.clone()))
            .collect();
        keyed.sort_by_key(|(key, _)| *key);
        let shuffled: Vec<IncidentEvent> = keyed.into_iter().map(|(_, event)| event).collect();
        prop_assume!(shuffled != events);
        let in_order = run_events(&events);
        let reordered = run_events(&shuffled);
        prop_assert!(in_order.dead_letters.iter().all(|letter| letter.reason != "late"));
        prop_assert!(reordered.dead_letters.iter().all(|letter| letter.reason != "late"));
        prop_assert_eq!(sorted_window_lines(&in_order), sorted_window_lines(&reordered));
    }

    #[test]
    fn resending_an_event_within_the_dedup_horizon_changes_nothing(seed in 0_u64..1000, resend_seed in 0_u64..1000) {
        let events = ordered_unique_events(seed, 2000);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(resend_seed);
        let mut with_resends = Vec::with_capacity(events.len() * 2);
        for (index, event) in events.iter().enumerate() {
            with_resends.push(event.clone());
            // Re-send an earlier event whose time is within the last 5 minutes (< 10 min horizon).
            if rng.random_bool(0.2) {
                let earliest = occurred_at_millis(event) - 300_000;
                let candidates: Vec<&IncidentEvent> = events[..=index]
                    .iter()
                    .filter(|earlier| occurred_at_millis(earlier) >= earliest)
                    .collect();
                if let Some(resent) = candidates.choose(&mut rng) {
                    with_resends.push((*resent).clone());
                }
            }
        }
        let original = run_events(&events);
        let resent = run_events(&with_resends);
        prop_assert_eq!(&original.windows, &resent.windows);
        prop_assert_eq!(&original.alerts, &resent.alerts);
        prop_assert_eq!(&original.dead_letters, &resent.dead_letters);
    }

    #[test]
    fn snapshot_and_restore_at_any_point_gives_identical_outputs(seed in 0_u64..1000, cut in 0_usize..3000) {
        let events = simulated_events(seed, 3000, 20.0);
        let uninterrupted = run_events(&events);

        let (mut first, _) = default_pipeline();
        let mut outputs = Outputs::default();
        for (position, event) in events[..cut].iter().enumerate() {
            first.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
        }
        let bytes = gridwatch::state::snapshot(&first).unwrap();
        drop(first);
        let (mut second, _) = default_pipeline();
        gridwatch::state::restore(&mut second, &bytes).unwrap();
        for (position, event) in events.iter().enumerate().skip(cut) {
            second.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
        }
        second.finish(WALL_MILLIS, &mut outputs);
        prop_assert_eq!(&uninterrupted.windows, &outputs.windows);
        prop_assert_eq!(&uninterrupted.alerts, &outputs.alerts);
        prop_assert_eq!(&uninterrupted.dead_letters, &outputs.dead_letters);
    }
}
