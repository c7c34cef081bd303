//! Splitting projects across replicas: rendezvous (highest-random-weight) hashing of the project
//! id, so going from N to N+1 replicas moves only about 1/(N+1) of the projects.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// This replica's shard, `0..count`. Unset: taken from a StatefulSet pod name
    /// (`HOSTNAME` ending in `-N`), else 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            index: None,
            count: 1,
        }
    }
}

impl ShardConfig {
    /// The effective index: configured, or the StatefulSet ordinal in `hostname`.
    pub fn resolve_index(&self, hostname: Option<&str>) -> u32 {
        self.index.unwrap_or_else(|| {
            hostname
                .and_then(|h| h.rsplit_once('-'))
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(0)
        })
    }
}

/// Which shard of `count` owns project `id`.
pub fn owner(id: u64, count: u32) -> u32 {
    (0..count.max(1))
        .max_by_key(|s| weight(id, *s))
        .unwrap_or(0)
}

/// A fixed, well-mixed hash (splitmix64's finaliser): stable across builds and platforms, so
/// every replica agrees.
fn weight(id: u64, shard: u32) -> u64 {
    let mut z = id ^ (u64::from(shard).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_project_has_one_owner_and_shards_are_balanced() {
        let mut counts = [0u32; 4];
        for id in 1..=4000 {
            counts[owner(id, 4) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_replica_moves_about_one_in_n() {
        let moved = (1..=6000)
            .filter(|id| owner(*id, 5) != owner(*id, 6))
            .count();
        // Ideal: 1/6 of 6000 = 1000; all moved ones go to the new shard.
        assert!((800..1200).contains(&moved), "{moved}");
        assert!((1..=6000).all(|id| owner(id, 5) == owner(id, 6) || owner(id, 6) == 5));
    }

    #[test]
    fn index_from_statefulset_hostname() {
        let cfg = ShardConfig {
            index: None,
            count: 3,
        };
        assert_eq!(cfg.resolve_index(Some("gitlab-jobs-exporter-2")), 2);
        assert_eq!(cfg.resolve_index(Some("exporter")), 0);
        assert_eq!(cfg.resolve_index(None), 0);
        let fixed = ShardConfig {
            index: Some(1),
            count: 3,
        };
        assert_eq!(fixed.resolve_index(Some("x-2")), 1);
    }
}
