//! Consume queues: the per-(topic, queue) index into the commit log.
//!
//! Each entry is 20 bytes — commit-log offset (u64), record size (u32) and
//! tag hash (u64) — so entry `n` of a queue sits at byte `20 * n` and a
//! consumer's offset is an array index. Entries are written by the
//! dispatcher as records are appended, and can always be rebuilt from the
//! log (every record carries its topic, queue and queue offset), which is
//! why they are fsynced lazily.
//!
//! Files hold a fixed number of entries and are named by their first byte
//! offset in 20 digits, as RocketMQ names them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::error::{BrokerError, Result};
use crate::fs_util::{create_dir_durable, fsync_dir};
use crate::store_paths::{parse_segment_file_name, segment_file_name};

/// Bytes per entry (RocketMQ's `CQ_STORE_UNIT_SIZE`).
pub const ENTRY_LEN: u64 = 20;

/// One consume-queue entry: where a message is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueEntry {
    pub(crate) commit_log_offset: u64,
    pub(crate) size: u32,
    pub(crate) tag_hash: u64,
}

impl QueueEntry {
    fn encode(self) -> [u8; ENTRY_LEN as usize] {
        let mut buf = [0u8; ENTRY_LEN as usize];
        buf[0..8].copy_from_slice(&self.commit_log_offset.to_le_bytes());
        buf[8..12].copy_from_slice(&self.size.to_le_bytes());
        buf[12..20].copy_from_slice(&self.tag_hash.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Self {
        QueueEntry {
            commit_log_offset: u64::from_le_bytes(buf[0..8].try_into().expect("8 bytes")),
            size: u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")),
            tag_hash: u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes")),
        }
    }

    /// An entry that cannot describe a record: a zero-filled tail left by a
    /// crash, or one pointing past the end of the log.
    fn is_valid_below(&self, log_end: u64) -> bool {
        self.size > 0 && self.commit_log_offset + u64::from(self.size) <= log_end
    }
}

#[derive(Debug)]
struct QueueFile {
    first_entry: u64,
    path: PathBuf,
    file: File,
    dirty: AtomicBool,
}

/// One consume queue.
#[derive(Debug)]
pub(crate) struct ConsumeQueue {
    dir: PathBuf,
    entries_per_file: u64,
    files: RwLock<BTreeMap<u64, Arc<QueueFile>>>,
    /// Entries written: the next queue offset.
    len: AtomicU64,
}

impl ConsumeQueue {
    /// Opens the queue in `dir`, dropping trailing entries that are zeroed
    /// or point past `log_end`. Returns the queue and how many it dropped.
    pub(crate) fn open(
        dir: &Path,
        entries_per_file: u64,
        log_end: u64,
    ) -> Result<(ConsumeQueue, u64)> {
        create_dir_durable(dir)?;
        let list_err = |e| BrokerError::io(format!("list {}", dir.display()), e);
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(list_err)? {
            let name = entry.map_err(list_err)?.file_name();
            let name = name.to_string_lossy();
            let Some(byte_offset) = parse_segment_file_name(&name) else {
                return Err(BrokerError::Layout(format!(
                    "unexpected file {name:?} in consume queue {}",
                    dir.display()
                )));
            };
            if byte_offset % (ENTRY_LEN * entries_per_file) != 0 {
                return Err(BrokerError::Layout(format!(
                    "consume queue file {name} in {} does not match {entries_per_file} entries per file",
                    dir.display()
                )));
            }
            let first_entry = byte_offset / ENTRY_LEN;
            files.insert(first_entry, Arc::new(open_file(dir, first_entry, false)?));
        }
        let queue = ConsumeQueue {
            dir: dir.to_path_buf(),
            entries_per_file,
            files: RwLock::new(files),
            len: AtomicU64::new(0),
        };
        let last = queue.files.read().values().next_back().cloned();
        let mut dropped = 0;
        if let Some(last) = last {
            let file_len = last
                .file
                .metadata()
                .map_err(|e| BrokerError::io(format!("stat {}", last.path.display()), e))?
                .len();
            let mut len = last.first_entry + file_len / ENTRY_LEN;
            queue.len.store(len, Ordering::Release);
            let min = queue.min_offset();
            while len > min && !queue.get(len - 1)?.is_valid_below(log_end) {
                len -= 1;
                dropped += 1;
            }
            if len < last.first_entry || file_len != (len - last.first_entry) * ENTRY_LEN {
                queue.truncate(len)?;
            }
        }
        Ok((queue, dropped))
    }

    /// Number of entries: the offset the next message of this queue gets.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Offset of the first entry still present.
    pub(crate) fn min_offset(&self) -> u64 {
        self.files.read().keys().next().copied().unwrap_or(0)
    }

    /// Writes entry number `index`. Appending (`index == len`) is the normal
    /// case; an index below `len` is a re-dispatch after a crash and is
    /// checked to agree with what is there.
    pub(crate) fn put(&self, index: u64, entry: QueueEntry) -> Result<()> {
        let len = self.len();
        if index < len {
            let existing = self.get(index)?;
            if existing != entry {
                return Err(BrokerError::Layout(format!(
                    "consume queue {} entry {index} is {existing:?} but the log says {entry:?}",
                    self.dir.display()
                )));
            }
            return Ok(());
        }
        if index > len {
            return Err(BrokerError::Layout(format!(
                "consume queue {} has {len} entries; cannot write entry {index} (gap)",
                self.dir.display()
            )));
        }
        let file = self.file_for_write(index)?;
        file.file
            .write_all_at(&entry.encode(), (index - file.first_entry) * ENTRY_LEN)
            .map_err(|e| BrokerError::io(format!("write {}", file.path.display()), e))?;
        file.dirty.store(true, Ordering::Release);
        self.len.store(index + 1, Ordering::Release);
        Ok(())
    }

    /// Appends `entries` at the end of the queue with one `pwrite` per file
    /// they fall in (an append of a batch, not one write per entry).
    pub(crate) fn append_entries(&self, entries: &[QueueEntry]) -> Result<()> {
        let mut index = self.len();
        let mut rest = entries;
        let mut bytes = Vec::with_capacity(
            entries.len().min(self.entries_per_file as usize) * ENTRY_LEN as usize,
        );
        while !rest.is_empty() {
            let file = self.file_for_write(index)?;
            let room = (file.first_entry + self.entries_per_file - index) as usize;
            let (now, later) = rest.split_at(room.min(rest.len()));
            bytes.clear();
            for entry in now {
                bytes.extend_from_slice(&entry.encode());
            }
            file.file
                .write_all_at(&bytes, (index - file.first_entry) * ENTRY_LEN)
                .map_err(|e| BrokerError::io(format!("write {}", file.path.display()), e))?;
            file.dirty.store(true, Ordering::Release);
            index += now.len() as u64;
            self.len.store(index, Ordering::Release);
            rest = later;
        }
        Ok(())
    }

    /// Reads entry `index`.
    pub(crate) fn get(&self, index: u64) -> Result<QueueEntry> {
        let entries = self.read(index, 1)?;
        entries.into_iter().next().ok_or_else(|| {
            BrokerError::InvalidArgument(format!(
                "queue offset {index} is not in {}",
                self.dir.display()
            ))
        })
    }

    /// Reads up to `max` entries starting at `from`, stopping at the end of
    /// the queue. One `pread` per file touched.
    pub(crate) fn read(&self, from: u64, max: u64) -> Result<Vec<QueueEntry>> {
        let end = self.len().min(from.saturating_add(max));
        let mut out = Vec::with_capacity(end.saturating_sub(from) as usize);
        let mut index = from;
        while index < end {
            let Some(file) = self.file_for(index) else {
                break;
            };
            let file_end = end.min(file.first_entry + self.entries_per_file);
            let mut buf = vec![0u8; ((file_end - index) * ENTRY_LEN) as usize];
            file.file
                .read_exact_at(&mut buf, (index - file.first_entry) * ENTRY_LEN)
                .map_err(|e| BrokerError::io(format!("read {}", file.path.display()), e))?;
            out.extend(buf.chunks_exact(ENTRY_LEN as usize).map(QueueEntry::decode));
            index = file_end;
        }
        Ok(out)
    }

    /// Deletes whole files (never the last) whose entries all point below
    /// `log_min`. Returns how many files went.
    pub(crate) fn delete_expired_files(&self, log_min: u64) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let (first, file) = {
                let files = self.files.read();
                if files.len() < 2 {
                    return Ok(deleted);
                }
                let (first, file) = files.iter().next().expect("non-empty");
                (*first, Arc::clone(file))
            };
            let last = self.get(first + self.entries_per_file - 1)?;
            if last.commit_log_offset + u64::from(last.size) > log_min {
                return Ok(deleted);
            }
            self.files.write().remove(&first);
            fs::remove_file(&file.path)
                .map_err(|e| BrokerError::io(format!("delete {}", file.path.display()), e))?;
            fsync_dir(&self.dir)?;
            deleted += 1;
        }
    }

    /// Fsyncs the files written since the last flush.
    pub(crate) fn flush(&self) -> Result<()> {
        let files: Vec<Arc<QueueFile>> = self.files.read().values().cloned().collect();
        for file in files {
            if file.dirty.swap(false, Ordering::AcqRel) {
                file.file.sync_data().map_err(|e| {
                    BrokerError::io(format!("fdatasync {}", file.path.display()), e)
                })?;
            }
        }
        Ok(())
    }

    /// Cuts the queue to `len` entries, deleting files that start at or past it.
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        let mut files = self.files.write();
        let doomed: Vec<u64> = files.range(len..).map(|(first, _)| *first).collect();
        for first in doomed {
            let file = files.remove(&first).expect("listed above");
            fs::remove_file(&file.path)
                .map_err(|e| BrokerError::io(format!("remove {}", file.path.display()), e))?;
        }
        if let Some(file) = files.values().next_back() {
            file.file
                .set_len((len - file.first_entry) * ENTRY_LEN)
                .and_then(|()| file.file.sync_all())
                .map_err(|e| BrokerError::io(format!("truncate {}", file.path.display()), e))?;
        }
        drop(files);
        fsync_dir(&self.dir)?;
        self.len.store(len, Ordering::Release);
        Ok(())
    }

    fn file_for(&self, index: u64) -> Option<Arc<QueueFile>> {
        let first = index - index % self.entries_per_file;
        self.files.read().get(&first).cloned()
    }

    fn file_for_write(&self, index: u64) -> Result<Arc<QueueFile>> {
        if let Some(file) = self.file_for(index) {
            return Ok(file);
        }
        let first = index - index % self.entries_per_file;
        let file = Arc::new(open_file(&self.dir, first, true)?);
        fsync_dir(&self.dir)?;
        self.files.write().insert(first, Arc::clone(&file));
        Ok(file)
    }
}

fn open_file(dir: &Path, first_entry: u64, create: bool) -> Result<QueueFile> {
    let path = dir.join(segment_file_name(first_entry * ENTRY_LEN));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(&path)
        .map_err(|e| BrokerError::io(format!("open consume queue {}", path.display()), e))?;
    Ok(QueueFile {
        first_entry,
        path,
        file,
        dirty: AtomicBool::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> QueueEntry {
        QueueEntry {
            commit_log_offset: n * 100,
            size: 100,
            tag_hash: n ^ 0xABCD,
        }
    }

    #[test]
    fn a_batch_of_entries_is_appended_across_files_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = ConsumeQueue::open(dir.path(), 16, u64::MAX).unwrap();
        queue.put(0, entry(0)).unwrap();
        let batch: Vec<QueueEntry> = (1..40).map(entry).collect();
        queue.append_entries(&batch).unwrap();
        assert_eq!(queue.len(), 40);
        assert_eq!(
            queue.read(0, 40).unwrap(),
            (0..40).map(entry).collect::<Vec<_>>()
        );
        drop(queue);
        let (queue, dropped) = ConsumeQueue::open(dir.path(), 16, u64::MAX).unwrap();
        assert_eq!((queue.len(), dropped), (40, 0));
        assert_eq!(queue.get(39).unwrap(), entry(39));
    }

    #[test]
    fn entries_span_files_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = ConsumeQueue::open(dir.path(), 4, u64::MAX).unwrap();
        for n in 0..10 {
            queue.put(n, entry(n)).unwrap();
        }
        assert_eq!(
            queue.read(2, 5).unwrap(),
            (2..7).map(entry).collect::<Vec<_>>()
        );
        queue.flush().unwrap();
        drop(queue);
        let names: Vec<String> = {
            let mut v: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names,
            [
                "00000000000000000000",
                "00000000000000000080",
                "00000000000000000160"
            ]
        );
        let (queue, dropped) = ConsumeQueue::open(dir.path(), 4, u64::MAX).unwrap();
        assert_eq!((queue.len(), dropped), (10, 0));
        assert_eq!(
            queue.read(0, 100).unwrap(),
            (0..10).map(entry).collect::<Vec<_>>()
        );
    }

    #[test]
    fn entries_past_the_log_end_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = ConsumeQueue::open(dir.path(), 4, u64::MAX).unwrap();
        for n in 0..10 {
            queue.put(n, entry(n)).unwrap();
        }
        drop(queue);
        // The log now ends after record 6 (offset 600 + 100).
        let (queue, dropped) = ConsumeQueue::open(dir.path(), 4, 700).unwrap();
        assert_eq!((queue.len(), dropped), (7, 3));
        queue.put(7, entry(7)).unwrap();
        assert_eq!(queue.get(7).unwrap(), entry(7));
    }

    #[test]
    fn a_gap_or_a_disagreeing_redispatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = ConsumeQueue::open(dir.path(), 4, u64::MAX).unwrap();
        queue.put(0, entry(0)).unwrap();
        queue.put(0, entry(0)).unwrap();
        assert!(queue.put(0, entry(5)).is_err());
        assert!(queue.put(2, entry(2)).is_err());
    }
}
