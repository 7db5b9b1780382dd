//! Committed consumer offsets: how far each group has consumed each queue.
//!
//! Commits land in memory and are persisted by the maintenance thread every
//! `offset_persist_interval` and at shutdown, as RocketMQ's broker persists
//! `topic@group` offsets every 5 s. The file is replaced atomically (tmp +
//! fsync + rename + directory fsync), so a crash leaves the previous
//! snapshot: consumers may see a few messages again, never skip one.
//!
//! A commit only moves an offset forward ([`OffsetStore::advance`]); moving
//! one back is a reset ([`OffsetStore::reset`]), which only the broker's
//! explicit reset ("message backtrack") does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::fs_util::{create_dir_durable, write_atomically};

/// Which offset: (offset owner, topic, queue). The owner is the group name
/// in clustering mode, or `group%member` in broadcasting mode where each
/// member keeps its own position.
pub(crate) type OffsetKey = (String, String, u32);

#[derive(Debug, Serialize, Deserialize)]
struct OffsetRecord {
    group: String,
    topic: String,
    queue: u32,
    offset: u64,
}

#[derive(Debug)]
pub(crate) struct OffsetStore {
    path: PathBuf,
    offsets: RwLock<BTreeMap<OffsetKey, u64>>,
    dirty: AtomicBool,
    /// Serializes writers of the file (maintenance thread and shutdown).
    persist_lock: Mutex<()>,
}

impl OffsetStore {
    pub(crate) fn open(path: PathBuf) -> Result<Self> {
        let offsets = match std::fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<OffsetRecord> = serde_json::from_slice(&bytes).map_err(|e| {
                    BrokerError::Layout(format!("{} is not valid: {e}", path.display()))
                })?;
                list.into_iter()
                    .map(|r| ((r.group, r.topic, r.queue), r.offset))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(BrokerError::io(format!("read {}", path.display()), e)),
        };
        Ok(OffsetStore {
            path,
            offsets: RwLock::new(offsets),
            dirty: AtomicBool::new(false),
            persist_lock: Mutex::new(()),
        })
    }

    pub(crate) fn get(&self, key: &OffsetKey) -> Option<u64> {
        self.offsets.read().get(key).copied()
    }

    /// Moves an offset forward (or keeps it): a commit never lowers one.
    pub(crate) fn advance(&self, key: OffsetKey, offset: u64) -> Result<()> {
        let mut offsets = self.offsets.write();
        if let Some(&committed) = offsets.get(&key)
            && offset < committed
        {
            return Err(BrokerError::OffsetBackwards {
                committed,
                requested: offset,
            });
        }
        offsets.insert(key, offset);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Sets an offset anywhere, lower too: only an explicit reset does this.
    pub(crate) fn reset(&self, key: OffsetKey, offset: u64) {
        self.offsets.write().insert(key, offset);
        self.dirty.store(true, Ordering::Release);
    }

    /// Every committed offset (for lag reporting).
    pub(crate) fn all(&self) -> Vec<(OffsetKey, u64)> {
        self.offsets
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Writes the offsets to disk if anything changed since the last write.
    pub(crate) fn persist(&self) -> Result<()> {
        let _guard = self.persist_lock.lock();
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let list: Vec<OffsetRecord> = self
            .offsets
            .read()
            .iter()
            .map(|((group, topic, queue), offset)| OffsetRecord {
                group: group.clone(),
                topic: topic.clone(),
                queue: *queue,
                offset: *offset,
            })
            .collect();
        let json = serde_json::to_vec_pretty(&list).expect("offsets serialize");
        let result = self
            .path
            .parent()
            .map_or(Ok(()), create_dir_durable)
            .and_then(|()| write_atomically(&self.path, &json));
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_reopen_only_once_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/consumer_offsets.json");
        let store = OffsetStore::open(path.clone()).unwrap();
        let key = ("g".to_string(), "orders".to_string(), 2);
        store.advance(key.clone(), 41).unwrap();
        store.persist().unwrap();
        store.advance(key.clone(), 42).unwrap();
        assert_eq!(OffsetStore::open(path.clone()).unwrap().get(&key), Some(41));
        store.persist().unwrap();
        assert_eq!(OffsetStore::open(path).unwrap().get(&key), Some(42));
    }
}
