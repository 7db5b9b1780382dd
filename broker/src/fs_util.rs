//! Small durable-file helpers shared by the store's metadata writers.
//!
//! `fsync()` of a file does not persist its directory entry, so a new file
//! or a rename is durable only after the directory itself is fsynced. Every
//! metadata file is replaced atomically: write a temporary file, fsync it,
//! rename it over the old one, fsync the directory. A crash at any point
//! leaves either the old or the new content, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{BrokerError, Result};

/// Fsyncs a directory so entries created or renamed in it survive a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BrokerError::io(format!("fsync directory {}", dir.display()), e))
}

/// Creates `dir` (and parents) and fsyncs its parent so the new entry is durable.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .map_err(|e| BrokerError::io(format!("create directory {}", dir.display()), e))?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically and durably
/// (tmp + fsync + rename + directory fsync).
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| BrokerError::Layout(format!("{} has no parent", path.display())))?;
    let tmp = path.with_extension("tmp");
    let io = |what: &str, e| BrokerError::io(format!("{what} {}", tmp.display()), e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    file.write_all(contents).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("fsync", e))?;
    drop(file);
    fs::rename(&tmp, path)
        .map_err(|e| BrokerError::io(format!("rename onto {}", path.display()), e))?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomically_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert!(!path.with_extension("tmp").exists());
    }
}
