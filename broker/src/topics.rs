//! The topic registry: which topics exist and how many queues each has.
//!
//! A topic's queue count fixes how its messages spread and how many
//! consumers of one group can work in parallel, so it is persisted
//! (`config/topics.json`, replaced atomically) and never changed silently.

use std::collections::BTreeMap;
use std::path::PathBuf;

use parking_lot::{Mutex, RwLock};

use crate::error::{BrokerError, Result};
use crate::fs_util::{create_dir_durable, write_atomically};
use crate::record::MAX_TOPIC_LEN;
use crate::types::TopicConfig;

/// Largest queue count a topic may have.
pub const MAX_QUEUES: u32 = 1024;

/// Checks a topic name: 1–127 bytes of `[A-Za-z0-9_%|-]` (`%` so system
/// topics like `%RETRY%group` fit the same rules).
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(BrokerError::InvalidTopic {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_TOPIC_LEN {
        return invalid("longer than 127 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'%' | b'|'))
    {
        return invalid("only letters, digits, '_', '-', '%' and '|' are allowed");
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct TopicRegistry {
    path: PathBuf,
    /// Read by every append; never held across file work.
    topics: RwLock<BTreeMap<String, TopicConfig>>,
    /// Serialises creations, which rewrite the file (fsyncs included)
    /// without holding `topics`, so appends to other topics go on.
    creating: Mutex<()>,
}

impl TopicRegistry {
    pub(crate) fn open(path: PathBuf) -> Result<Self> {
        let topics = match std::fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<TopicConfig> = serde_json::from_slice(&bytes).map_err(|e| {
                    BrokerError::Layout(format!("{} is not valid: {e}", path.display()))
                })?;
                list.into_iter().map(|t| (t.name.clone(), t)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(BrokerError::io(format!("read {}", path.display()), e)),
        };
        Ok(TopicRegistry {
            path,
            topics: RwLock::new(topics),
            creating: Mutex::new(()),
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<TopicConfig> {
        self.topics.read().get(name).cloned()
    }

    /// Whether `name` exists (on every append: no copy of its settings).
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.topics.read().contains_key(name)
    }

    pub(crate) fn list(&self) -> Vec<TopicConfig> {
        self.topics.read().values().cloned().collect()
    }

    /// Creates `name` with `queues` queues, or returns it if it already
    /// exists with that count.
    pub(crate) fn create(&self, name: &str, queues: u32) -> Result<TopicConfig> {
        validate_topic_name(name)?;
        if queues == 0 || queues > MAX_QUEUES {
            return Err(BrokerError::InvalidArgument(format!(
                "a topic needs 1..={MAX_QUEUES} queues, not {queues}"
            )));
        }
        let _creating = self.creating.lock();
        if let Some(existing) = self.get(name) {
            if existing.queues != queues {
                return Err(BrokerError::TopicConflict {
                    topic: name.to_owned(),
                    existing: existing.queues,
                    requested: queues,
                });
            }
            return Ok(existing);
        }
        let config = TopicConfig {
            name: name.to_owned(),
            queues,
        };
        let mut list = self.list();
        list.push(config.clone());
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let json = serde_json::to_vec_pretty(&list).expect("topics serialize");
        if let Some(dir) = self.path.parent() {
            create_dir_durable(dir)?;
        }
        write_atomically(&self.path, &json)?;
        // Visible only once durable: no append lands in a topic that a
        // failed write would take back.
        self.topics.write().insert(name.to_owned(), config.clone());
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        validate_topic_name("orders").unwrap();
        validate_topic_name("%RETRY%workers").unwrap();
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name(&"x".repeat(128)).is_err());
    }

    #[test]
    fn topics_persist_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/topics.json");
        let registry = TopicRegistry::open(path.clone()).unwrap();
        registry.create("orders", 8).unwrap();
        registry.create("orders", 8).unwrap();
        assert!(matches!(
            registry.create("orders", 4),
            Err(BrokerError::TopicConflict { .. })
        ));
        assert!(registry.create("zero", 0).is_err());
        let reopened = TopicRegistry::open(path).unwrap();
        assert_eq!(reopened.get("orders").unwrap().queues, 8);
        assert_eq!(reopened.list().len(), 1);
    }
}
