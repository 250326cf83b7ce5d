//! Serde for hash maps that are part of a snapshot: written as entries sorted by key, so the
//! snapshot bytes never depend on hash iteration order, and read back into any map.
//!
//! A leaf module: the stages' state structs name it in `#[serde(with)]` without depending on
//! [`crate::state`], which depends on them.

// No panic path reachable from input, state or configuration (README "Security").

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Writes the entries sorted by key.
pub fn serialize<K, V, H, S>(map: &HashMap<K, V, H>, serializer: S) -> Result<S::Ok, S::Error>
where
    K: Serialize + Ord,
    V: Serialize,
    S: Serializer,
{
    let mut entries: Vec<(&K, &V)> = map.iter().collect();
    entries.sort_by(|left, right| left.0.cmp(right.0));
    serializer.collect_seq(entries)
}

/// Reads entries back into a map.
pub fn deserialize<'de, K, V, H, D>(deserializer: D) -> Result<HashMap<K, V, H>, D::Error>
where
    K: Deserialize<'de> + Eq + Hash,
    V: Deserialize<'de>,
    H: BuildHasher + Default,
    D: Deserializer<'de>,
{
    let entries = Vec::<(K, V)>::deserialize(deserializer)?;
    Ok(entries.into_iter().collect())
}
