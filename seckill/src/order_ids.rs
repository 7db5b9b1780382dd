//! Order ids: unique across seckill nodes and ordered by time.
//!
//! Snowflake's layout in a u64 — milliseconds since 2024-01-01 (41 bits,
//! good for ~69 years), node id (10 bits), sequence within the millisecond
//! (12 bits, 4,096 ids per node per ms) — printed as 20 zero-padded digits
//! so ids also sort as strings. A clock that steps back is ignored (the
//! generator keeps its last millisecond), and a full millisecond borrows
//! the next one, so ids never repeat within a node.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::SeckillError;

const EPOCH_MS: i64 = 1_704_067_200_000;
/// Node ids are 0..1024.
pub(crate) const MAX_NODES: u16 = 1 << 10;
const MAX_SEQUENCE: u16 = (1 << 12) - 1;

/// Generates order ids for one node.
#[derive(Debug)]
pub struct OrderIdGenerator {
    node: u16,
    last: Mutex<(i64, u16)>,
}

impl OrderIdGenerator {
    /// A generator for node `node` (0..1024, unique per seckill instance).
    pub fn new(node: u16) -> Result<Self, SeckillError> {
        if node >= MAX_NODES {
            return Err(SeckillError::Invalid(format!(
                "node id {node} must be below {MAX_NODES}"
            )));
        }
        Ok(OrderIdGenerator {
            node,
            last: Mutex::new((0, 0)),
        })
    }

    /// The next id.
    pub fn next_id(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(EPOCH_MS, |d| d.as_millis() as i64);
        self.next_at(now)
    }

    fn next_at(&self, now_ms: i64) -> String {
        let mut last = self.last.lock();
        let (mut ms, mut sequence) = *last;
        if now_ms > ms {
            ms = now_ms;
            sequence = 0;
        } else if sequence == MAX_SEQUENCE {
            ms += 1;
            sequence = 0;
        } else {
            sequence += 1;
        }
        *last = (ms, sequence);
        let id = ((ms - EPOCH_MS).max(0) as u64) << 22
            | u64::from(self.node) << 12
            | u64::from(sequence);
        format!("{id:020}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_ordered_and_node_specific() {
        let a = OrderIdGenerator::new(1).unwrap();
        let b = OrderIdGenerator::new(2).unwrap();
        let mut ids = Vec::new();
        // 10,000 ids in the same millisecond spill into later ones.
        for _ in 0..10_000 {
            ids.push(a.next_at(1_800_000_000_000));
        }
        // A clock stepping back does not go back.
        ids.push(a.next_at(1_700_000_000_000));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "not strictly increasing"
        );
        assert!(ids.iter().all(|id| id.len() == 20));
        assert_ne!(a.next_at(1_800_000_000_000), b.next_at(1_800_000_000_000));
        assert!(OrderIdGenerator::new(MAX_NODES).is_err());
    }
}
