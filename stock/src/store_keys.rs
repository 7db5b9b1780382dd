//! The stock store's key names, in one place.
//!
//! Every key of an item carries the item in a Redis Cluster hash tag
//! (`{item}`), so one script touches one slot. A prefix lets tests (and
//! several deployments) share one Redis without seeing each other's keys.

use crate::error::StockError;

/// The flag channel's name under a deployment's key prefix.
const FLAG_CHANNEL: &str = "sk:flags";

/// The channel the sold-out flag changes of the deployment using `prefix`
/// are published on. It is under the prefix like every key, so two
/// deployments sharing one Redis never apply each other's flags (a flag
/// with a higher version from the other one would pin an item shut).
pub fn flag_channel(prefix: &str) -> String {
    format!("{prefix}{FLAG_CHANNEL}")
}

/// Longest item id.
const MAX_ITEM_LEN: usize = 64;

/// The keys of one item, in the order every script expects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemKeys {
    /// Remaining stock.
    pub stock: String,
    /// Hash of user → order id.
    pub buyers: String,
    /// Present while sold out.
    pub soldout: String,
    /// Last sold-out flag version.
    pub flag_version: String,
    /// Hash of user → issue time of the last purchase token spent.
    pub spent: String,
}

impl ItemKeys {
    /// The keys of `item` under `prefix`.
    pub fn new(prefix: &str, item: &str) -> Self {
        let key = |name: &str| format!("{prefix}sk:{{{item}}}:{name}");
        ItemKeys {
            stock: key("stock"),
            buyers: key("buyers"),
            soldout: key("soldout"),
            flag_version: key("flagver"),
            spent: key("spent"),
        }
    }

    /// `KEYS` for a script call.
    pub fn to_vec(&self) -> Vec<String> {
        vec![
            self.stock.clone(),
            self.buyers.clone(),
            self.soldout.clone(),
            self.flag_version.clone(),
            self.spent.clone(),
        ]
    }
}

/// Item ids are 1–64 characters of `[A-Za-z0-9_-]`: they end up inside a
/// hash tag, where a brace would break the tag.
pub fn validate_item_id(item: &str) -> Result<(), StockError> {
    let ok = !item.is_empty()
        && item.len() <= MAX_ITEM_LEN
        && item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StockError::Invalid(format!(
            "item id {item:?} must be 1..={MAX_ITEM_LEN} characters of letters, digits, '_' or '-'"
        )))
    }
}

/// User ids are 1–64 characters of `[A-Za-z0-9_-]`: a bounded field of the
/// buyers hash, and safe in a log line.
pub fn validate_user_id(user: &str) -> Result<(), StockError> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StockError::Invalid(
            "user id must be 1..=64 characters of letters, digits, '_' or '-'".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_the_item_hash_tag() {
        let keys = ItemKeys::new("t1:", "sku-1");
        assert_eq!(keys.stock, "t1:sk:{sku-1}:stock");
        assert_eq!(keys.flag_version, "t1:sk:{sku-1}:flagver");
        assert!(keys.to_vec().iter().all(|k| k.contains("{sku-1}")));
    }

    #[test]
    fn item_ids_that_would_break_the_hash_tag_are_refused() {
        validate_item_id("sku_1-A").unwrap();
        for bad in ["", "a}b", "a{b", "a b", &"x".repeat(65)] {
            assert!(validate_item_id(bad).is_err(), "{bad:?}");
        }
    }
}
