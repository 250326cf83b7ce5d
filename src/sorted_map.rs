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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct InATree {
        counts: BTreeMap<u32, i64>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct InAHashMap {
        #[serde(with = "super")]
        counts: FxHashMap<u32, i64>,
    }

    /// A snapshot field can move from a B-tree to a hash map (or back) without changing a
    /// byte of the snapshots written before: postcard writes a map and a sequence of pairs
    /// alike, and the pairs are sorted.
    #[test]
    fn a_hash_map_is_written_byte_for_byte_as_the_ordered_map_of_its_entries() {
        let entries: Vec<(u32, i64)> = (0..500u32)
            .rev()
            .map(|key| {
                (
                    key.wrapping_mul(2_654_435_761) % 100_000,
                    i64::from(key) * -7,
                )
            })
            .collect();
        let tree = InATree {
            counts: entries.iter().copied().collect(),
        };
        let hashed = InAHashMap {
            counts: entries.iter().copied().collect(),
        };
        let tree_bytes = postcard::to_allocvec(&tree).expect("encodes");
        assert_eq!(postcard::to_allocvec(&hashed).expect("encodes"), tree_bytes);
        let read_back: InAHashMap = postcard::from_bytes(&tree_bytes).expect("decodes");
        assert_eq!(read_back, hashed);
    }
}
