//! Dedup by event id.
//!
//! Devices and gateways re-send events (at-least-once delivery, retries after timeouts), so the
//! same `event_id` can arrive several times. The [`Deduplicator`] remembers the ids of accepted
//! events for a horizon of event time behind the watermark and reports repeats.
//!
//! # What is stored
//!
//! Not the id itself but its 64-bit xxh3 hash (`xxhash_rust::xxh3::xxh3_64`, unseeded, so the same
//! id hashes the same in every process and a snapshot restores the same answers). Hashes are
//! bucketed by event-time minute, so expiry drops whole buckets: O(1) amortized per id.
//! An id is kept at least until the watermark passes `occurred_at + horizon`, and at most one
//! bucket (60 s) longer.
//!
//! # Collision probability
//!
//! A new id is wrongly reported as a duplicate only if its hash equals one of the `n` hashes
//! currently remembered: probability `n / 2^64` per lookup (xxh3 is a well-mixed 64-bit hash).
//! With `n = 10^8` remembered ids (≈ 1,160 events/s over a 24 h horizon) that is
//! `10^8 / 1.8·10^19 ≈ 5.4·10^-12` per event, i.e. about one wrongly dropped event per
//! `1.8·10^11` events; with a 1-hour horizon at 100 events/s (`n = 3.6·10^5`) it is `2·10^-14`.
//!
//! # Memory
//!
//! About 40 bytes per remembered id: 8 bytes in its time bucket plus a `HashMap<u64, i64>` entry
//! (16 bytes + 1 control byte at a load factor between 7/16 and 7/8). Snapshots carry only the
//! buckets (≈ 8 bytes per id); the lookup index is rebuilt on restore.

// No panic path reachable from input, state or configuration (README "Security").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Width of one event-time bucket of remembered ids.
const BUCKET_WIDTH_MILLIS: i64 = 60_000;

/// Remembers accepted event ids (as stable 64-bit hashes) for a horizon of event time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "DeduplicatorSnapshot")]
pub struct Deduplicator {
    /// How far behind the watermark (in event time) ids are still remembered.
    horizon_millis: i64,
    /// Id hashes by event-time bucket (`occurred_at div 60 s`), so expiry pops whole buckets
    /// from the front. A hash remembered again in a later bucket also stays in the earlier one;
    /// `bucket_by_hash` says which entry is current.
    buckets: BTreeMap<i64, Vec<u64>>,
    /// Lookup index: id hash → the latest bucket it was remembered in. Derived from `buckets`
    /// (rebuilt on restore), so it is not part of the snapshot and HashMap order never leaks.
    bucket_by_hash: rustc_hash::FxHashMap<u64, i64>,
}

/// The persisted form of a [`Deduplicator`]: everything but the derived lookup index.
#[derive(Deserialize)]
struct DeduplicatorSnapshot {
    /// See [`Deduplicator::horizon_millis`].
    horizon_millis: i64,
    /// See [`Deduplicator::buckets`].
    buckets: BTreeMap<i64, Vec<u64>>,
}

/// Borrowed twin of [`DeduplicatorSnapshot`] (same fields, same order) for serializing without
/// cloning the buckets.
#[derive(Serialize)]
struct DeduplicatorSnapshotRef<'a> {
    /// See [`Deduplicator::horizon_millis`].
    horizon_millis: i64,
    /// See [`Deduplicator::buckets`].
    buckets: &'a BTreeMap<i64, Vec<u64>>,
}

impl Serialize for Deduplicator {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DeduplicatorSnapshotRef {
            horizon_millis: self.horizon_millis,
            buckets: &self.buckets,
        }
        .serialize(serializer)
    }
}

impl From<DeduplicatorSnapshot> for Deduplicator {
    fn from(snapshot: DeduplicatorSnapshot) -> Self {
        let mut bucket_by_hash = rustc_hash::FxHashMap::default();
        // Ascending buckets: the latest bucket of each hash wins, as in `remember`.
        for (bucket, hashes) in &snapshot.buckets {
            for hash in hashes {
                bucket_by_hash.insert(*hash, *bucket);
            }
        }
        Self {
            horizon_millis: snapshot.horizon_millis.max(0),
            buckets: snapshot.buckets,
            bucket_by_hash,
        }
    }
}

/// The stable hash an event id is remembered by (pinned: snapshots keep it). Computed once per
/// event by the stateless stages ([`crate::pipeline::Admission`]), so that the stateful thread
/// checks and remembers an id without reading its text: on a replay the text was written on
/// another core, and fetching it was the largest single cost of the counting thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventIdHash(u64);

impl EventIdHash {
    /// The hash of `event_id`.
    pub fn of(event_id: &str) -> EventIdHash {
        EventIdHash(xxh3_64(event_id.as_bytes()))
    }
}

/// An event id [`Deduplicator::unseen`] found not remembered, held while the caller decides
/// whether its event is accepted: remembered by [`UnseenId::remember`], forgotten when dropped.
pub struct UnseenId<'dedup> {
    slot: std::collections::hash_map::VacantEntry<'dedup, u64, i64>,
    buckets: &'dedup mut BTreeMap<i64, Vec<u64>>,
}

impl UnseenId<'_> {
    /// Remembers the id at its event time (as [`Deduplicator::remember`] remembers a new one).
    pub fn remember(self, occurred_at_millis: i64) {
        let hash = *self.slot.key();
        let bucket = occurred_at_millis.div_euclid(BUCKET_WIDTH_MILLIS);
        self.slot.insert(bucket);
        add_to_bucket(self.buckets, bucket, hash);
    }
}

/// Adds `hash` to the ids of `bucket`. Events arrive roughly in time order: most go to the
/// latest bucket, reached without a search.
fn add_to_bucket(buckets: &mut BTreeMap<i64, Vec<u64>>, bucket: i64, hash: u64) {
    if let Some(mut latest) = buckets.last_entry() {
        if *latest.key() == bucket {
            latest.get_mut().push(hash);
            return;
        }
    }
    buckets.entry(bucket).or_default().push(hash);
}

impl Deduplicator {
    /// Remembers ids for `horizon_millis` of event time behind the watermark (negative means 0).
    pub fn new(horizon_millis: i64) -> Self {
        Self {
            horizon_millis: horizon_millis.max(0),
            buckets: BTreeMap::new(),
            bucket_by_hash: rustc_hash::FxHashMap::default(),
        }
    }

    /// Whether this event id was already accepted (and not yet expired).
    pub fn is_duplicate(&self, event_id: EventIdHash) -> bool {
        self.bucket_by_hash.contains_key(&event_id.0)
    }

    /// The place of an event id not remembered (`None`: already accepted and not yet expired,
    /// a duplicate), to remember it once the event is accepted ([`UnseenId::remember`]). The
    /// check and the remembering are one probe of the index, where [`Self::is_duplicate`] and
    /// [`Self::remember`] are two.
    pub fn unseen(&mut self, event_id: EventIdHash) -> Option<UnseenId<'_>> {
        match self.bucket_by_hash.entry(event_id.0) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(slot) => Some(UnseenId {
                slot,
                buckets: &mut self.buckets,
            }),
        }
    }

    /// Remembers an accepted event id at its event time. Remembering it again at a later time
    /// keeps it until the later time expires.
    pub fn remember(&mut self, event_id: EventIdHash, occurred_at_millis: i64) {
        let hash = event_id.0;
        let bucket = occurred_at_millis.div_euclid(BUCKET_WIDTH_MILLIS);
        // One probe of the index whether the id is new or not.
        match self.bucket_by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(mut current) => {
                if *current.get() >= bucket {
                    return;
                }
                current.insert(bucket);
            }
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(bucket);
            }
        }
        add_to_bucket(&mut self.buckets, bucket, hash);
    }

    /// Forgets ids whose event time is older than `watermark − horizon` (whole buckets only, so
    /// an id may stay up to one bucket width longer).
    pub fn expire(&mut self, watermark_millis: i64) {
        let cutoff_millis = watermark_millis.saturating_sub(self.horizon_millis);
        // A bucket b covers [b·w, (b+1)·w); it is entirely older than the cutoff when
        // (b+1)·w ≤ cutoff, i.e. b < floor(cutoff / w).
        let first_kept_bucket = cutoff_millis.div_euclid(BUCKET_WIDTH_MILLIS);
        while let Some((bucket, _)) = self.buckets.first_key_value() {
            if *bucket >= first_kept_bucket {
                return;
            }
            let Some((expired_bucket, hashes)) = self.buckets.pop_first() else {
                return;
            };
            for hash in hashes {
                // Only forget the hash if this bucket is its latest one: one probe to look and
                // remove.
                if let std::collections::hash_map::Entry::Occupied(remembered) =
                    self.bucket_by_hash.entry(hash)
                {
                    if *remembered.get() == expired_bucket {
                        remembered.remove();
                    }
                }
            }
        }
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.bucket_by_hash.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.bucket_by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MINUTE: i64 = 60_000;
    const HORIZON: i64 = 10 * MINUTE;

    #[test]
    fn duplicate_is_detected_within_the_horizon() {
        let mut deduplicator = Deduplicator::new(HORIZON);
        assert!(!deduplicator.is_duplicate(EventIdHash::of("evt-1")));
        deduplicator.remember(EventIdHash::of("evt-1"), 5 * MINUTE);
        assert!(deduplicator.is_duplicate(EventIdHash::of("evt-1")));
        assert!(!deduplicator.is_duplicate(EventIdHash::of("evt-2")));
        deduplicator.expire(5 * MINUTE + HORIZON);
        assert!(deduplicator.is_duplicate(EventIdHash::of("evt-1")));
        assert_eq!(deduplicator.len(), 1);
    }

    #[test]
    fn id_is_forgotten_after_expiry() {
        let mut deduplicator = Deduplicator::new(HORIZON);
        deduplicator.remember(EventIdHash::of("evt-1"), 5 * MINUTE + 1_000);
        deduplicator.remember(EventIdHash::of("evt-2"), 7 * MINUTE);
        // Cutoff 6:00: the 5:00 bucket is entirely older.
        deduplicator.expire(6 * MINUTE + HORIZON);
        assert!(!deduplicator.is_duplicate(EventIdHash::of("evt-1")));
        assert!(deduplicator.is_duplicate(EventIdHash::of("evt-2")));
        assert_eq!(deduplicator.len(), 1);
        deduplicator.expire(100 * MINUTE);
        assert!(deduplicator.is_empty());
    }

    #[test]
    fn id_stays_until_its_whole_bucket_is_older_than_the_cutoff() {
        let mut deduplicator = Deduplicator::new(HORIZON);
        deduplicator.remember(EventIdHash::of("evt-1"), 5 * MINUTE + 1_000);
        // Cutoff 5:30 is past the event time but not past its bucket: kept (conservative).
        deduplicator.expire(5 * MINUTE + 30_000 + HORIZON);
        assert!(deduplicator.is_duplicate(EventIdHash::of("evt-1")));
    }

    #[test]
    fn remembering_again_later_extends_the_lifetime() {
        let mut deduplicator = Deduplicator::new(HORIZON);
        deduplicator.remember(EventIdHash::of("evt-1"), MINUTE);
        deduplicator.remember(EventIdHash::of("evt-1"), 20 * MINUTE);
        deduplicator.remember(EventIdHash::of("evt-1"), 3 * MINUTE);
        assert_eq!(deduplicator.len(), 1);
        deduplicator.expire(15 * MINUTE + HORIZON);
        assert!(deduplicator.is_duplicate(EventIdHash::of("evt-1")));
        deduplicator.expire(21 * MINUTE + HORIZON);
        assert!(!deduplicator.is_duplicate(EventIdHash::of("evt-1")));
    }

    #[test]
    fn negative_event_times_are_bucketed_without_panicking() {
        let mut deduplicator = Deduplicator::new(HORIZON);
        deduplicator.remember(EventIdHash::of("old"), -1);
        deduplicator.remember(EventIdHash::of("oldest"), i64::MIN);
        deduplicator.expire(i64::MIN);
        assert_eq!(deduplicator.len(), 2);
        deduplicator.expire(HORIZON);
        assert!(deduplicator.is_empty());
        deduplicator.remember(EventIdHash::of("newest"), i64::MAX);
        deduplicator.expire(i64::MAX);
        assert_eq!(deduplicator.len(), 1);
    }

    #[test]
    fn event_id_hash_is_stable_across_processes() {
        // Pinned value: a change here would break restored snapshots.
        assert_eq!(EventIdHash::of("").0, 0x2d06_8005_38d3_94c2);
        assert_eq!(EventIdHash::of("evt-1").0, xxh3_64(b"evt-1"));
    }

    #[test]
    fn postcard_round_trip_preserves_behaviour() {
        let mut deduplicator = Deduplicator::new(HORIZON);
        for index in 0..50_i64 {
            deduplicator.remember(EventIdHash::of(&format!("evt-{index}")), index * 20_000);
        }
        deduplicator.remember(EventIdHash::of("evt-3"), 40 * MINUTE);
        let bytes = postcard::to_allocvec(&deduplicator).unwrap();
        let mut restored: Deduplicator = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(restored, deduplicator);
        assert_eq!(postcard::to_allocvec(&restored).unwrap(), bytes);
        for watermark in [
            5 * MINUTE,
            15 * MINUTE,
            20 * MINUTE,
            45 * MINUTE,
            50 * MINUTE,
        ] {
            restored.expire(watermark);
            deduplicator.expire(watermark);
            assert_eq!(restored, deduplicator);
            for index in 0..50 {
                let event_id = format!("evt-{index}");
                assert_eq!(
                    restored.is_duplicate(EventIdHash::of(&event_id)),
                    deduplicator.is_duplicate(EventIdHash::of(&event_id))
                );
            }
        }
        assert!(restored.is_duplicate(EventIdHash::of("evt-3")));
        assert_eq!(restored.len(), 1);
    }

    proptest! {
        #[test]
        fn remembered_ids_are_duplicates_until_the_watermark_passes_their_bucket(
            events in prop::collection::vec((0_u16..300, 0_i64..100 * MINUTE), 1..100),
            watermark in 0_i64..120 * MINUTE,
        ) {
            let mut deduplicator = Deduplicator::new(HORIZON);
            let mut latest_time_by_id: BTreeMap<String, i64> = BTreeMap::new();
            for (id_number, occurred_at) in &events {
                let event_id = format!("evt-{id_number}");
                deduplicator.remember(EventIdHash::of(&event_id), *occurred_at);
                let latest = latest_time_by_id.entry(event_id).or_insert(*occurred_at);
                *latest = (*latest).max(*occurred_at);
            }
            deduplicator.expire(watermark);
            let cutoff = watermark - HORIZON;
            for (event_id, latest) in &latest_time_by_id {
                let bucket_end = (latest.div_euclid(MINUTE) + 1) * MINUTE;
                prop_assert_eq!(deduplicator.is_duplicate(EventIdHash::of(event_id)), bucket_end > cutoff);
                if *latest >= cutoff {
                    prop_assert!(deduplicator.is_duplicate(EventIdHash::of(event_id)));
                }
            }
        }

        /// Checking and remembering through one probe (`unseen`, then `remember` on accepted
        /// events only) leaves the deduplicator as checking and remembering apart does.
        #[test]
        fn an_unseen_id_remembered_on_acceptance_is_remembered_as_remember_remembers(
            events in prop::collection::vec((0_u16..50, 0_i64..30 * MINUTE, any::<bool>()), 1..100),
            expire_at in prop::collection::vec(0_i64..40 * MINUTE, 0..4),
        ) {
            let mut one_probe = Deduplicator::new(HORIZON);
            let mut two_probes = Deduplicator::new(HORIZON);
            for (index, (id_number, occurred_at, accepted)) in events.iter().enumerate() {
                let event_id = EventIdHash::of(&format!("evt-{id_number}"));
                let unseen = one_probe.unseen(event_id);
                prop_assert_eq!(unseen.is_none(), two_probes.is_duplicate(event_id));
                if let (Some(unseen), true) = (unseen, *accepted) {
                    unseen.remember(*occurred_at);
                    two_probes.remember(event_id, *occurred_at);
                }
                if let Some(watermark) = expire_at.get(index % 7) {
                    one_probe.expire(*watermark);
                    two_probes.expire(*watermark);
                }
                prop_assert_eq!(&one_probe, &two_probes);
            }
        }
    }
}
