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
//!
//! Bounded: offsets are kept for at most [`MAX_OFFSET_OWNERS`] owners
//! (groups, or `group%member` in broadcasting mode); a commit under one
//! more owner is refused with [`BrokerError::OffsetOwnerLimit`], while the
//! owners already known keep committing. Offsets are never dropped on their
//! own: they must survive a group being empty for a while (a restart of
//! every worker), as RocketMQ keeps a group's offsets after its consumers
//! go. The file is compact JSON and written only when an offset actually
//! changed since the last write, so an idle broker does no disk work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// Most offset owners the broker keeps offsets for.
pub(crate) const MAX_OFFSET_OWNERS: usize = 1024;

#[derive(Debug, Default)]
struct Offsets {
    map: BTreeMap<OffsetKey, u64>,
    /// Distinct owners in `map`.
    owners: usize,
}

impl Offsets {
    fn from_map(map: BTreeMap<OffsetKey, u64>) -> Self {
        let mut owners = 0;
        let mut last: Option<&str> = None;
        for (owner, _, _) in map.keys() {
            if last != Some(owner.as_str()) {
                owners += 1;
                last = Some(owner);
            }
        }
        Offsets { map, owners }
    }

    fn has_owner(&self, owner: &str) -> bool {
        self.map
            .range((owner.to_owned(), String::new(), 0)..)
            .next()
            .is_some_and(|((o, _, _), _)| o == owner)
    }

    /// Sets `key` to `offset`; whether anything changed. A new owner past
    /// [`MAX_OFFSET_OWNERS`] is refused.
    fn insert(&mut self, max_owners: usize, key: OffsetKey, offset: u64) -> Result<bool> {
        if let Some(current) = self.map.get_mut(&key) {
            let changed = *current != offset;
            *current = offset;
            return Ok(changed);
        }
        let new_owner = !self.has_owner(&key.0);
        if new_owner && self.owners >= max_owners {
            return Err(BrokerError::OffsetOwnerLimit { max: max_owners });
        }
        self.map.insert(key, offset);
        self.owners += usize::from(new_owner);
        Ok(true)
    }
}

#[derive(Debug)]
pub(crate) struct OffsetStore {
    path: PathBuf,
    max_owners: usize,
    offsets: RwLock<Offsets>,
    dirty: AtomicBool,
    /// Serializes writers of the file (maintenance thread and shutdown).
    persist_lock: Mutex<()>,
    /// Times the file was written (for tests: an idle broker writes nothing).
    writes: AtomicU64,
}

impl OffsetStore {
    pub(crate) fn open(path: PathBuf) -> Result<Self> {
        Self::open_bounded(path, MAX_OFFSET_OWNERS)
    }

    /// [`OffsetStore::open`] keeping offsets for at most `max_owners`
    /// owners (more may come from the file; none are added then).
    pub(crate) fn open_bounded(path: PathBuf, max_owners: usize) -> Result<Self> {
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
            max_owners,
            offsets: RwLock::new(Offsets::from_map(offsets)),
            dirty: AtomicBool::new(false),
            persist_lock: Mutex::new(()),
            writes: AtomicU64::new(0),
        })
    }

    pub(crate) fn get(&self, key: &OffsetKey) -> Option<u64> {
        self.offsets.read().map.get(key).copied()
    }

    /// Times the file was written since open.
    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Moves an offset forward (or keeps it): a commit never lowers one.
    pub(crate) fn advance(&self, key: OffsetKey, offset: u64) -> Result<()> {
        let mut offsets = self.offsets.write();
        if let Some(&committed) = offsets.map.get(&key)
            && offset < committed
        {
            return Err(BrokerError::OffsetBackwards {
                committed,
                requested: offset,
            });
        }
        if offsets.insert(self.max_owners, key, offset)? {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Sets an offset anywhere, lower too: only an explicit reset does this.
    pub(crate) fn reset(&self, key: OffsetKey, offset: u64) -> Result<()> {
        if self.offsets.write().insert(self.max_owners, key, offset)? {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Every committed offset (for lag reporting).
    pub(crate) fn all(&self) -> Vec<(OffsetKey, u64)> {
        self.offsets
            .read()
            .map
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
            .map
            .iter()
            .map(|((group, topic, queue), offset)| OffsetRecord {
                group: group.clone(),
                topic: topic.clone(),
                queue: *queue,
                offset: *offset,
            })
            .collect();
        // Compact: the file is for the broker; one line per group would
        // only make every write bigger.
        let json = serde_json::to_vec(&list).expect("offsets serialize");
        let result = self
            .path
            .parent()
            .map_or(Ok(()), create_dir_durable)
            .and_then(|()| write_atomically(&self.path, &json));
        match &result {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => self.dirty.store(true, Ordering::Release),
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

    #[test]
    fn issue_8_the_offset_file_is_compact_and_written_only_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumer_offsets.json");
        let store = OffsetStore::open(path.clone()).unwrap();
        let key = ("g".to_string(), "orders".to_string(), 0);
        store.persist().unwrap();
        assert_eq!(store.writes(), 0, "nothing committed, nothing written");
        store.advance(key.clone(), 7).unwrap();
        store.persist().unwrap();
        assert_eq!(store.writes(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            r#"[{"group":"g","topic":"orders","queue":0,"offset":7}]"#
        );
        // The same offset again (an idle consumer re-committing) and more
        // ticks of the maintenance thread: no write.
        store.advance(key.clone(), 7).unwrap();
        store.persist().unwrap();
        store.persist().unwrap();
        assert_eq!(store.writes(), 1);
        store.advance(key, 8).unwrap();
        store.persist().unwrap();
        assert_eq!(store.writes(), 2);
    }

    #[test]
    fn issue_8_offsets_are_kept_for_a_bounded_number_of_owners() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumer_offsets.json");
        let store = OffsetStore::open_bounded(path.clone(), 3).unwrap();
        let key = |owner: &str, queue| (owner.to_string(), "orders".to_string(), queue);
        for owner in ["a", "b", "c"] {
            store.advance(key(owner, 0), 1).unwrap();
        }
        // Made-up owners past the bound are refused, with a clear error…
        for owner in ["d", "made-up", "zz%member"] {
            assert!(matches!(
                store.advance(key(owner, 0), 1),
                Err(BrokerError::OffsetOwnerLimit { max: 3 })
            ));
            assert_eq!(store.get(&key(owner, 0)), None);
        }
        // …while known owners keep committing, on other queues too.
        store.advance(key("b", 0), 2).unwrap();
        store.advance(key("b", 5), 2).unwrap();
        assert_eq!(store.all().len(), 4);
        // The bound holds across a reopen.
        store.persist().unwrap();
        let reopened = OffsetStore::open_bounded(path, 3).unwrap();
        assert!(reopened.advance(key("d", 0), 1).is_err());
        reopened.advance(key("c", 1), 1).unwrap();
    }
}
