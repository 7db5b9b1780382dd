//! Sold-out flags: this process's own copy, so requests after a sell-out
//! are answered without a store call.
//!
//! Flags come from the store's publications (`"<item> soldout|open
//! <version>"`) and from script replies. Each carries the version the
//! store gave it; a newer version wins and an older or equal one is
//! ignored, so a delayed "sold out" cannot undo a later "open" (stock came
//! back). A flag errs only towards "sold out": the store stays the judge
//! of every sale.

use std::collections::HashMap;

use parking_lot::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flag {
    version: i64,
    sold_out: bool,
}

/// Item → (version, sold out).
#[derive(Debug, Default)]
pub struct SoldOutFlags {
    flags: RwLock<HashMap<String, Flag>>,
}

impl SoldOutFlags {
    /// Applies a flag change; returns whether it was newer than what we had.
    pub fn apply(&self, item: &str, sold_out: bool, version: i64) -> bool {
        let mut flags = self.flags.write();
        match flags.get(item) {
            Some(current) if current.version >= version => false,
            _ => {
                flags.insert(item.to_owned(), Flag { version, sold_out });
                true
            }
        }
    }

    /// Applies a published message `"<item> soldout|open <version>"`.
    pub fn apply_message(&self, payload: &str) -> bool {
        let mut parts = payload.split(' ');
        let (Some(item), Some(state), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(payload, "ignoring a malformed flag message");
            return false;
        };
        let Ok(version) = version.parse() else {
            tracing::warn!(payload, "ignoring a flag message without a version");
            return false;
        };
        match state {
            "soldout" => self.apply(item, true, version),
            "open" => self.apply(item, false, version),
            _ => {
                tracing::warn!(payload, "ignoring a flag message with an unknown state");
                false
            }
        }
    }

    /// Whether `item` is flagged sold out here.
    pub fn is_sold_out(&self, item: &str) -> bool {
        self.flags.read().get(item).is_some_and(|f| f.sold_out)
    }

    /// How many items are flagged sold out here.
    pub fn flagged_count(&self) -> usize {
        self.flags.read().values().filter(|f| f.sold_out).count()
    }

    /// The flag version known for `item` (0 if none).
    pub fn version(&self, item: &str) -> i64 {
        self.flags.read().get(item).map_or(0, |f| f.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_win_and_stale_ones_are_ignored() {
        let flags = SoldOutFlags::default();
        assert!(!flags.is_sold_out("a"));
        assert!(flags.apply_message("a soldout 1"));
        assert!(flags.is_sold_out("a"));
        assert!(flags.apply_message("a open 2"));
        assert!(!flags.is_sold_out("a"));
        // A late, older "sold out" must not close the item again.
        assert!(!flags.apply_message("a soldout 1"));
        assert!(!flags.is_sold_out("a"));
        assert!(!flags.apply_message("garbage"));
        assert!(!flags.apply_message("a soldout x"));
        assert!(!flags.apply_message("a maybe 9"));
        assert_eq!(flags.version("a"), 2);
    }
}
