//! The key index: find messages by key (an order id) without scanning the
//! log.
//!
//! On disk it is an append-only file of 16-byte entries — key hash (u64,
//! the same FNV-1a as tag hashes) and the record's commit-log offset —
//! written in log order under the append lock, like consume-queue entries.
//! In memory it is a map from key hash to offsets, loaded from the file at
//! startup. RocketMQ keeps a hash table on disk (`IndexFile`); this keeps
//! the table in memory (about 40 bytes per keyed message) and only the
//! entries on disk, which is simpler and enough for a broker whose
//! retention bounds its size. The map is keyed by a hash already, so it
//! hashes that hash cheaply (Fx) and keeps the usual one or two offsets
//! of a key (an order's half and its real message) inline.
//!
//! Like the consume queues it is derived data: fsynced with them, cut back
//! to the log's end after a crash, re-dispatched from the log past the
//! checkpoint, and rebuilt from the whole log if the file is missing. A
//! hash can collide, so lookups compare the real key of each record read.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::error::{BrokerError, Result};
use crate::fs_util::{create_dir_durable, fsync_dir, write_atomically};
use crate::record::tag_hash;

const ENTRY_LEN: usize = 16;

/// Key hash to the log offsets of its records, oldest first.
type OffsetsByHash = FxHashMap<u64, SmallVec<[u64; 2]>>;

#[derive(Debug)]
struct Writer {
    /// Shared so a flush can fdatasync it without holding the writer lock,
    /// which appends take under the append lock.
    file: Arc<File>,
    /// Highest log offset indexed; re-dispatched records at or below it
    /// are already in the file.
    last_indexed: Option<u64>,
    entries: u64,
    /// While a rewrite runs: entries added since its snapshot, which it
    /// copies into the new file before taking it over.
    catch_up: Option<Vec<(u64, u64)>>,
}

/// The key index of one store.
#[derive(Debug)]
pub(crate) struct KeyIndex {
    path: PathBuf,
    writer: Mutex<Writer>,
    map: RwLock<OffsetsByHash>,
    dirty: AtomicBool,
    /// Held by a flush, and by a rewrite from its swap until the new file
    /// is durable under its name: no checkpoint can count entries that are
    /// only in the new file before that.
    flush_lock: Mutex<()>,
    /// One rewrite at a time.
    rewrite_lock: Mutex<()>,
    /// Runs inside a rewrite, after the snapshot and before the swap.
    #[cfg(test)]
    during_rewrite: Mutex<Option<RewriteHook>>,
}

/// A test's code to run in the middle of a rewrite.
#[cfg(test)]
struct RewriteHook(Box<dyn FnOnce() + Send>);

#[cfg(test)]
impl std::fmt::Debug for RewriteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RewriteHook")
    }
}

/// The hash a key is indexed under.
pub(crate) fn key_hash(key: &str) -> u64 {
    tag_hash(key)
}

impl KeyIndex {
    /// Opens the index, dropping entries at or past `log_end`. Returns the
    /// index and whether its file already existed (if not, the caller
    /// rebuilds it from the log).
    pub(crate) fn open(path: &Path, log_end: u64) -> Result<(KeyIndex, bool)> {
        if let Some(dir) = path.parent() {
            create_dir_durable(dir)?;
        }
        let io = |e| BrokerError::io(format!("open key index {}", path.display()), e);
        let existed = path.exists();
        let bytes = if existed {
            std::fs::read(path).map_err(io)?
        } else {
            Vec::new()
        };
        let mut map = OffsetsByHash::default();
        let mut valid = 0usize;
        let mut last_indexed = None;
        for chunk in bytes.chunks_exact(ENTRY_LEN) {
            let hash = u64::from_le_bytes(chunk[0..8].try_into().expect("8 bytes"));
            let offset = u64::from_le_bytes(chunk[8..16].try_into().expect("8 bytes"));
            // Entries are in log order: the first one past the end (or out
            // of order, from a torn write) ends the valid prefix.
            if offset >= log_end || last_indexed.is_some_and(|last| offset <= last) {
                break;
            }
            map.entry(hash).or_default().push(offset);
            last_indexed = Some(offset);
            valid += ENTRY_LEN;
        }
        if valid != bytes.len() {
            write_atomically(path, &bytes[..valid])?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let index = KeyIndex {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                last_indexed,
                entries: (valid / ENTRY_LEN) as u64,
                catch_up: None,
            }),
            map: RwLock::new(map),
            dirty: AtomicBool::new(false),
            flush_lock: Mutex::new(()),
            rewrite_lock: Mutex::new(()),
            #[cfg(test)]
            during_rewrite: Mutex::new(None),
        };
        Ok((index, existed))
    }

    /// Indexes `(key hash, log offset)` pairs, in log order. Pairs at or
    /// below the last indexed offset (a re-dispatch) are skipped.
    pub(crate) fn add(&self, entries: &[(u64, u64)]) -> Result<()> {
        let mut writer = self.writer.lock();
        let mut bytes = Vec::with_capacity(entries.len() * ENTRY_LEN);
        let mut added = Vec::with_capacity(entries.len());
        for &(hash, offset) in entries {
            if writer.last_indexed.is_some_and(|last| offset <= last) {
                continue;
            }
            bytes.extend_from_slice(&hash.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
            writer.last_indexed = Some(offset);
            added.push((hash, offset));
        }
        if added.is_empty() {
            return Ok(());
        }
        (&*writer.file)
            .write_all(&bytes)
            .map_err(|e| BrokerError::io(format!("write key index {}", self.path.display()), e))?;
        writer.entries += added.len() as u64;
        if let Some(catch_up) = &mut writer.catch_up {
            catch_up.extend_from_slice(&added);
        }
        // The map is updated before the writer lock is released, so
        // whoever holds that lock sees file and map agree (the rewrite in
        // `retain_from` relies on it).
        let mut map = self.map.write();
        for (hash, offset) in added {
            map.entry(hash).or_default().push(offset);
        }
        drop(map);
        drop(writer);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Log offsets of records whose key hashes like `key`, oldest first.
    pub(crate) fn lookup(&self, key: &str) -> Vec<u64> {
        self.map
            .read()
            .get(&key_hash(key))
            .map(|offsets| offsets.to_vec())
            .unwrap_or_default()
    }

    /// Fsyncs what was added since the last flush.
    pub(crate) fn flush(&self) -> Result<()> {
        let _flushing = self.flush_lock.lock();
        if self.dirty.swap(false, Ordering::AcqRel) {
            // The fdatasync runs outside the writer lock: appends go on
            // meanwhile. A rewrite may replace the file after the clone;
            // the rewrite made its own file durable, and what is appended
            // to it sets `dirty` again for the next flush.
            let file = Arc::clone(&self.writer.lock().file);
            file.sync_data()
                .map_err(|e| BrokerError::io(format!("fdatasync {}", self.path.display()), e))?;
        }
        Ok(())
    }

    /// Forgets entries below `log_min` (their records were deleted by
    /// retention) and rewrites the file once most of it is dead.
    ///
    /// Blocking (file writes and fdatasyncs: call it off the runtime), but
    /// appends go on meanwhile: the writer lock, which appends take under
    /// the append lock, is held only for the snapshot and for the swap.
    /// Entries added in between are collected and copied into the new file
    /// before it takes over, so none is left out of it; and no flush (so no
    /// checkpoint) runs from the swap until the new file is durable under
    /// the index's name.
    pub(crate) fn retain_from(&self, log_min: u64) -> Result<()> {
        let _one_rewrite = self.rewrite_lock.lock();
        let live: Vec<(u64, u64)> = {
            let mut writer = self.writer.lock();
            let mut map = self.map.write();
            map.retain(|_, offsets| {
                offsets.retain(|o| *o >= log_min);
                !offsets.is_empty()
            });
            let mut live: Vec<(u64, u64)> = map
                .iter()
                .flat_map(|(hash, offsets)| offsets.iter().map(move |&o| (*hash, o)))
                .collect();
            live.sort_by_key(|&(_, offset)| offset);
            if writer.entries < 2 * live.len() as u64 + 1024 {
                return Ok(());
            }
            writer.catch_up = Some(Vec::new());
            live
        };
        let rewritten = self.rewrite(&live);
        if rewritten.is_err() {
            self.writer.lock().catch_up = None;
            let _ = std::fs::remove_file(self.rewrite_path());
        }
        rewritten
    }

    fn rewrite_path(&self) -> PathBuf {
        self.path.with_extension("rewrite")
    }

    /// The rewrite proper (see [`KeyIndex::retain_from`]).
    fn rewrite(&self, live: &[(u64, u64)]) -> Result<()> {
        let tmp = self.rewrite_path();
        let io = |what: &str, e| BrokerError::io(format!("{what} {}", tmp.display()), e);
        let encode = |entries: &[(u64, u64)]| {
            let mut bytes = Vec::with_capacity(entries.len() * ENTRY_LEN);
            for (hash, offset) in entries {
                bytes.extend_from_slice(&hash.to_le_bytes());
                bytes.extend_from_slice(&offset.to_le_bytes());
            }
            bytes
        };
        // 1. Without the writer lock: the live entries, durable.
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io("create", e))?;
        file.write_all(&encode(live)).map_err(|e| io("write", e))?;
        file.sync_data().map_err(|e| io("fdatasync", e))?;
        let mut entries = live.len() as u64;
        // 2. What came meanwhile, a few rounds, so the swap copies little.
        for _ in 0..3 {
            let batch = std::mem::take(self.writer.lock().catch_up.get_or_insert_default());
            if batch.is_empty() {
                break;
            }
            file.write_all(&encode(&batch))
                .map_err(|e| io("write", e))?;
            entries += batch.len() as u64;
        }
        #[cfg(test)]
        if let Some(RewriteHook(hook)) = self.during_rewrite.lock().take() {
            hook();
        }
        // 3. The swap: no flush until step 4 is done; under the writer lock
        //    only the last few entries are written (a plain write).
        let _flushing = self.flush_lock.lock();
        let file = {
            let mut writer = self.writer.lock();
            let rest = writer.catch_up.take().unwrap_or_default();
            file.write_all(&encode(&rest)).map_err(|e| io("write", e))?;
            let file = Arc::new(file);
            writer.file = Arc::clone(&file);
            writer.entries = entries + rest.len() as u64;
            file
        };
        // 4. Appends go to the new file now; make it durable, then its name.
        file.sync_data().map_err(|e| io("fdatasync", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("rename", e))?;
        if let Some(dir) = self.path.parent() {
            fsync_dir(dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_and_past_the_log_end_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index/keys");
        let (index, existed) = KeyIndex::open(&path, u64::MAX).unwrap();
        assert!(!existed);
        index
            .add(&[
                (key_hash("a"), 10),
                (key_hash("b"), 20),
                (key_hash("a"), 30),
            ])
            .unwrap();
        index.add(&[(key_hash("a"), 30)]).unwrap(); // a re-dispatch: skipped
        assert_eq!(index.lookup("a"), [10, 30]);
        index.flush().unwrap();
        drop(index);
        let (index, existed) = KeyIndex::open(&path, 25).unwrap();
        assert!(existed);
        assert_eq!(index.lookup("a"), [10]);
        assert_eq!(index.lookup("b"), [20]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 32);
        index.add(&[(key_hash("c"), 26)]).unwrap();
        assert_eq!(index.lookup("c"), [26]);
    }

    #[test]
    fn a_rewrite_keeps_live_entries_and_later_appends_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let (index, _) = KeyIndex::open(&path, u64::MAX).unwrap();
        let entries: Vec<(u64, u64)> = (0..3000u64)
            .map(|i| (key_hash(&format!("k{}", i % 10)), i))
            .collect();
        index.add(&entries).unwrap();
        // 3000 entries, 500 live: most of the file is dead, so it is rewritten.
        index.retain_from(2500).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            500 * ENTRY_LEN as u64
        );
        index.add(&[(key_hash("new"), 3000)]).unwrap();
        index.flush().unwrap();
        let k3: Vec<u64> = (2500..3000).filter(|i| i % 10 == 3).collect();
        assert_eq!(index.lookup("k3"), k3);
        drop(index);

        let (index, existed) = KeyIndex::open(&path, u64::MAX).unwrap();
        assert!(existed);
        assert_eq!(index.lookup("k3"), k3);
        assert_eq!(index.lookup("new"), [3000]);
    }

    /// Defect 6: the rewrite held the writer lock — which every append
    /// takes, under the append lock — for its whole file write and fsync,
    /// so appends stopped while retention rewrote the index. An append
    /// made in the middle of a rewrite now goes through at once, and ends
    /// up in the rewritten file.
    #[test]
    fn appends_go_on_while_the_index_is_rewritten_and_land_in_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let (index, _) = KeyIndex::open(&path, u64::MAX).unwrap();
        let index = Arc::new(index);
        let entries: Vec<(u64, u64)> = (0..3000u64)
            .map(|i| (key_hash(&format!("k{}", i % 10)), i))
            .collect();
        index.add(&entries).unwrap();
        let (done, appended) = std::sync::mpsc::channel();
        let appender = Arc::clone(&index);
        *index.during_rewrite.lock() = Some(RewriteHook(Box::new(move || {
            // Another thread appends while the rewrite is under way; the
            // rewrite waits for it, but the append must not wait for the
            // rewrite.
            let index = Arc::clone(&appender);
            let worker = std::thread::spawn(move || {
                index.add(&[(key_hash("during"), 3000)]).unwrap();
                done.send(()).unwrap();
            });
            let went_through = appended.recv_timeout(std::time::Duration::from_secs(10));
            assert!(went_through.is_ok(), "an append waited for the rewrite");
            worker.join().unwrap();
        })));
        index.retain_from(2500).unwrap();
        assert!(index.during_rewrite.lock().is_none(), "the rewrite ran");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            501 * ENTRY_LEN as u64,
            "500 live entries and the one added during the rewrite"
        );
        index.add(&[(key_hash("after"), 3001)]).unwrap();
        index.flush().unwrap();
        drop(index);
        let (index, _) = KeyIndex::open(&path, u64::MAX).unwrap();
        assert_eq!(index.lookup("during"), [3000]);
        assert_eq!(index.lookup("after"), [3001]);
        let k3: Vec<u64> = (2500..3000).filter(|i| i % 10 == 3).collect();
        assert_eq!(index.lookup("k3"), k3);
    }
}
