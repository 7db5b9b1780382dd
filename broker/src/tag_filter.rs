//! Tag filtering on pull: `"vip || gift"`, or `"*"` for everything.
//!
//! The consume queue stores each message's tag hash, so a filter rejects
//! most non-matching messages without reading the log; a hash match is
//! confirmed against the real tag string, since different tags can share
//! a hash. A message carries one tag (RocketMQ's model).

use crate::error::{BrokerError, Result};
use crate::record::tag_hash;

/// A parsed tag expression that is not "everything".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagFilter {
    tags: Vec<String>,
    hashes: Vec<u64>,
}

impl TagFilter {
    /// Parses an expression; `None` means every message passes.
    pub(crate) fn parse(expression: Option<&str>) -> Result<Option<TagFilter>> {
        let Some(expression) = expression.map(str::trim) else {
            return Ok(None);
        };
        if expression.is_empty() || expression == "*" {
            return Ok(None);
        }
        let mut tags = Vec::new();
        for part in expression.split("||") {
            let tag = part.trim();
            if tag == "*" {
                return Ok(None);
            }
            if tag.is_empty() || tag.contains('|') {
                return Err(BrokerError::InvalidArgument(format!(
                    "tag expression {expression:?} must be tags joined by '||', or '*'"
                )));
            }
            tags.push(tag.to_owned());
        }
        let hashes = tags.iter().map(|t| tag_hash(t)).collect();
        Ok(Some(TagFilter { tags, hashes }))
    }

    /// Cheap first check against a consume-queue entry's tag hash.
    pub(crate) fn may_match(&self, hash: u64) -> bool {
        self.hashes.contains(&hash)
    }

    /// The exact check against a message's tag.
    pub(crate) fn matches(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_and_match() {
        assert_eq!(TagFilter::parse(None).unwrap(), None);
        assert_eq!(TagFilter::parse(Some(" * ")).unwrap(), None);
        assert_eq!(TagFilter::parse(Some("a || *")).unwrap(), None);
        let filter = TagFilter::parse(Some("vip || gift")).unwrap().unwrap();
        assert!(filter.may_match(tag_hash("gift")) && filter.matches("gift"));
        assert!(!filter.may_match(tag_hash("plain")) && !filter.matches("plain"));
        for bad in ["a ||", "|| a", "a | b", "a |||| b"] {
            assert!(TagFilter::parse(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
