//! The store checkpoint: how far the log and the consume queues are known
//! to be on disk.
//!
//! Recovery uses it to tell a torn tail from corruption. A bad record
//! *below* `log_flushed` was fsynced and acknowledged, so it is corruption
//! and the broker refuses to open; a bad record at or above it was never
//! made durable, so it is a torn write and is truncated. `consume_queue_flushed`
//! says from where consume-queue entries must be re-dispatched after a crash.
//!
//! The file is written in place (24 bytes, with a CRC) after flushes and is
//! not fsynced each time. That is safe because it is only ever written
//! *after* the data it describes is durable: if the checkpoint write is
//! lost, the one on disk is older and claims less, which costs recovery a
//! little more scanning and nothing else. A torn checkpoint fails its CRC
//! and recovery falls back to verifying the whole log.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{BrokerError, Result};

const LEN: usize = 20;

/// Durable positions in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    /// Every log byte below this offset has been fsynced.
    pub(crate) log_flushed: u64,
    /// Every consume-queue entry for records below this offset has been fsynced.
    pub(crate) consume_queue_flushed: u64,
}

impl Checkpoint {
    fn encode(self) -> [u8; LEN] {
        let mut buf = [0u8; LEN];
        buf[0..8].copy_from_slice(&self.log_flushed.to_le_bytes());
        buf[8..16].copy_from_slice(&self.consume_queue_flushed.to_le_bytes());
        let crc = crc32c::crc32c(&buf[0..16]);
        buf[16..20].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Option<Self> {
        if buf.len() != LEN {
            return None;
        }
        let crc = u32::from_le_bytes(buf[16..20].try_into().ok()?);
        if crc != crc32c::crc32c(&buf[0..16]) {
            return None;
        }
        Some(Checkpoint {
            log_flushed: u64::from_le_bytes(buf[0..8].try_into().ok()?),
            consume_queue_flushed: u64::from_le_bytes(buf[8..16].try_into().ok()?),
        })
    }
}

/// The open checkpoint file.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    file: File,
}

impl CheckpointFile {
    /// Opens (or creates) the checkpoint and reads it. `None` when the file
    /// is new, empty or fails its CRC.
    pub(crate) fn open(path: &Path) -> Result<(Self, Option<Checkpoint>)> {
        let io = |e| BrokerError::io(format!("open checkpoint {}", path.display()), e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut buf = vec![0u8; LEN];
        let len = file.metadata().map_err(io)?.len();
        let current = if len == LEN as u64 {
            file.read_exact_at(&mut buf, 0).map_err(io)?;
            Checkpoint::decode(&buf)
        } else {
            None
        };
        Ok((CheckpointFile { file }, current))
    }

    /// Records `checkpoint`; durable only with `sync`.
    pub(crate) fn write(&self, checkpoint: Checkpoint, sync: bool) -> Result<()> {
        let io = |e| BrokerError::io("write checkpoint", e);
        self.file
            .write_all_at(&checkpoint.encode(), 0)
            .map_err(io)?;
        if sync {
            self.file.sync_data().map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let (file, current) = CheckpointFile::open(&path).unwrap();
        assert_eq!(current, None);
        let checkpoint = Checkpoint {
            log_flushed: 123_456,
            consume_queue_flushed: 789,
        };
        file.write(checkpoint, true).unwrap();
        drop(file);
        let (_, current) = CheckpointFile::open(&path).unwrap();
        assert_eq!(current, Some(checkpoint));

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (_, current) = CheckpointFile::open(&path).unwrap();
        assert_eq!(current, None);
    }
}
