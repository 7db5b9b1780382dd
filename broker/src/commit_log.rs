//! The commit log: one append-only log for every topic, cut into segment
//! files of a fixed size.
//!
//! Offsets are global byte positions. A segment starting at `base` holds
//! offsets `[base, base + segment_size)` and is named by `base` in 20 digits.
//! When the next record does not fit, the segment is closed with a blank
//! record covering its unused end, fsynced, and the next segment starts at
//! `base + segment_size` — so the log offset of any record says which file
//! it is in without an index.
//!
//! Files are written with positional writes (`pwrite`) into the page cache
//! and read with `pread`; durability is the flusher's job
//! (`group_commit.rs`). Files are not memory-mapped: that would need
//! `unsafe`, and positional I/O on the page cache is within a small factor
//! of it for this workload.
//!
//! Recovery (`CommitLog::open`) walks the segments from the one holding the
//! checkpoint's durable offset and checks every record's CRC. Earlier
//! segments were fsynced when they were closed and are trusted, as RocketMQ
//! trusts all but its last files.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use parking_lot::RwLock;

use crate::error::{BrokerError, Result};
use crate::fs_util::{create_dir_durable, fsync_dir};
use crate::record::{
    self, BLANK_MAGIC, BLANK_RECORD_LEN, DecodeError, Frame, MESSAGE_MAGIC, StoredMessage,
};
use crate::store_paths::{parse_segment_file_name, segment_file_name};
use crate::types::RecoveryReport;

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
}

impl Segment {
    pub(crate) fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| BrokerError::io(format!("fdatasync {}", self.path.display()), e))
    }
}

/// The log's files and its write/flush positions. Appending is done through
/// a [`LogWriter`], which the broker keeps under its append lock.
#[derive(Debug)]
pub(crate) struct CommitLog {
    dir: PathBuf,
    segment_size: u64,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// End of the data written to the files (page cache).
    written: AtomicU64,
    /// End of the data known to be on disk.
    flushed: AtomicU64,
}

/// The append cursor. Records are encoded into `buf` and written in one
/// `pwrite` per batch (or per segment, when a batch crosses a roll).
#[derive(Debug)]
pub(crate) struct LogWriter {
    segment: Arc<Segment>,
    /// Log offset where the next record starts.
    next: u64,
    /// Encoded bytes not yet written.
    buf: BytesMut,
    /// Log offset of `buf[0]`. Not always `next - buf.len()`: a blank
    /// record is 8 bytes but covers the rest of its segment.
    buf_start: u64,
}

impl CommitLog {
    /// Opens the log in `dir`, checking records from the segment that holds
    /// `durable_floor` (every byte below it was fsynced), or from the first
    /// segment when there is no checkpoint.
    ///
    /// A bad record is a torn tail — and is truncated — only when it lies at
    /// or past `durable_floor`, in the last segment, after a crash. Anywhere
    /// else it is corruption and opening fails with its file and offset.
    pub(crate) fn open(
        dir: &Path,
        segment_size: u64,
        durable_floor: Option<u64>,
        crashed: bool,
    ) -> Result<(CommitLog, LogWriter, RecoveryReport)> {
        create_dir_durable(dir)?;
        let mut segments = BTreeMap::new();
        for entry in
            fs::read_dir(dir).map_err(|e| BrokerError::io(format!("list {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| BrokerError::io(format!("list {}", dir.display()), e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(base) = parse_segment_file_name(&name) else {
                if name.ends_with(".tmp") {
                    continue;
                }
                return Err(BrokerError::Layout(format!(
                    "unexpected file {name:?} in {}; only segment files belong there",
                    dir.display()
                )));
            };
            if base % segment_size != 0 {
                return Err(BrokerError::Layout(format!(
                    "segment {name} does not start at a multiple of segment_size {segment_size}; \
                     was the store created with another segment size?"
                )));
            }
            segments.insert(base, Arc::new(open_segment(dir, base, false)?));
        }
        let mut expected = segments.keys().next().copied().unwrap_or(0);
        for &base in segments.keys() {
            if base != expected {
                return Err(BrokerError::Layout(format!(
                    "segment {} is missing from {} (found {} next)",
                    segment_file_name(expected),
                    dir.display(),
                    segment_file_name(base)
                )));
            }
            expected = base + segment_size;
        }
        if segments.is_empty() {
            let first = open_segment(dir, 0, true)?;
            fsync_dir(dir)?;
            segments.insert(0, Arc::new(first));
        }

        let first_base = *segments.keys().next().expect("at least one segment");
        let last_base = *segments.keys().next_back().expect("at least one segment");
        let verify_from = match durable_floor {
            Some(floor) => (floor - floor % segment_size).clamp(first_base, last_base),
            None => first_base,
        };
        // After a clean stop everything was flushed: any bad record is corruption.
        let tail_floor = if crashed {
            durable_floor.unwrap_or(0)
        } else {
            u64::MAX
        };
        let mut report = RecoveryReport {
            crashed,
            verified_from: verify_from,
            ..RecoveryReport::default()
        };
        let mut end = verify_from;
        for (&base, segment) in segments.range(verify_from..) {
            let is_last = base == last_base;
            let newest = &mut report.newest_store_timestamp_ms;
            let scanned = scan_segment(segment, segment_size, |m| {
                *newest = (*newest).max(m.store_timestamp_ms);
                Ok(())
            })?;
            match scanned {
                SegmentEnd::Blank => {
                    if is_last {
                        // Closed but its successor was never created (crash
                        // mid-roll): the next append opens it.
                        end = base + segment_size;
                    }
                }
                SegmentEnd::EndOfData(len) => {
                    if !is_last {
                        return Err(corruption(
                            segment,
                            len,
                            DecodeError::Truncated {
                                needed: BLANK_RECORD_LEN,
                                available: 0,
                            },
                        ));
                    }
                    end = base + len;
                }
                SegmentEnd::Bad { at, reason } => {
                    let log_offset = base + at;
                    if !is_last || log_offset < tail_floor {
                        return Err(corruption(segment, at, reason));
                    }
                    let file_len = segment
                        .file
                        .metadata()
                        .map_err(|e| BrokerError::io("stat segment", e))?
                        .len();
                    tracing::warn!(
                        file = %segment.path.display(),
                        at,
                        cut = file_len - at,
                        %reason,
                        "truncating the torn tail of the commit log"
                    );
                    segment
                        .file
                        .set_len(at)
                        .and_then(|()| segment.file.sync_all())
                        .map_err(|e| {
                            BrokerError::io(format!("truncate {}", segment.path.display()), e)
                        })?;
                    report.truncated_bytes = file_len - at;
                    end = log_offset;
                }
            }
        }
        report.log_end = end;
        let log = CommitLog {
            dir: dir.to_path_buf(),
            segment_size,
            segments: RwLock::new(segments),
            written: AtomicU64::new(end),
            flushed: AtomicU64::new(end),
        };
        let writer = LogWriter {
            segment: log.segment_for(end.min(last_base + segment_size - 1))?,
            next: end,
            buf: BytesMut::with_capacity(64 * 1024),
            buf_start: end,
        };
        Ok((log, writer, report))
    }

    /// End of the data written (visible in the page cache).
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// End of the data known durable.
    pub(crate) fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    pub(crate) fn set_flushed(&self, offset: u64) {
        self.flushed.fetch_max(offset, Ordering::AcqRel);
    }

    /// Offset of the first byte still in the log.
    pub(crate) fn min_offset(&self) -> u64 {
        self.segments.read().keys().next().copied().unwrap_or(0)
    }

    fn segment_for(&self, offset: u64) -> Result<Arc<Segment>> {
        self.segments
            .read()
            .range(..=offset)
            .next_back()
            .filter(|(base, _)| offset < *base + self.segment_size)
            .map(|(_, s)| Arc::clone(s))
            .ok_or_else(|| {
                BrokerError::InvalidArgument(format!("log offset {offset} is not in the log"))
            })
    }

    /// Reads and checks the message record at `offset` of `size` bytes.
    pub(crate) fn read(&self, offset: u64, size: u32) -> Result<StoredMessage> {
        if offset + u64::from(size) > self.written() {
            return Err(BrokerError::InvalidArgument(format!(
                "log range {offset}+{size} is past the end of the log"
            )));
        }
        let segment = self.segment_for(offset)?;
        let at = offset - segment.base;
        let mut buf = vec![0u8; size as usize];
        segment
            .file
            .read_exact_at(&mut buf, at)
            .map_err(|e| BrokerError::io(format!("read {}", segment.path.display()), e))?;
        match record::decode(&buf, offset) {
            Ok(Frame::Message(message)) => Ok(message),
            Ok(Frame::Blank(_)) => {
                Err(corruption(&segment, at, DecodeError::BadMagic(BLANK_MAGIC)))
            }
            Err(reason) => Err(corruption(&segment, at, reason)),
        }
    }

    /// Base offsets of the segments, oldest first.
    pub(crate) fn segment_bases(&self) -> Vec<u64> {
        self.segments.read().keys().copied().collect()
    }

    /// Deletes the oldest segment, which must start at `base` and not be
    /// the one being written.
    pub(crate) fn remove_segment(&self, base: u64) -> Result<()> {
        let segment = {
            let mut segments = self.segments.write();
            if segments.keys().next() != Some(&base) || segments.len() < 2 {
                return Err(BrokerError::InvalidArgument(format!(
                    "segment {base} is not the oldest of several; it cannot be deleted"
                )));
            }
            segments.remove(&base).expect("checked")
        };
        std::fs::remove_file(&segment.path)
            .map_err(|e| BrokerError::io(format!("delete {}", segment.path.display()), e))?;
        fsync_dir(&self.dir)
    }

    /// Reads the message record at `offset`, taking its size from its header.
    pub(crate) fn read_at(&self, offset: u64) -> Result<StoredMessage> {
        let segment = self.segment_for(offset)?;
        let at = offset - segment.base;
        let mut size = [0u8; 4];
        segment
            .file
            .read_exact_at(&mut size, at)
            .map_err(|e| BrokerError::io(format!("read {}", segment.path.display()), e))?;
        let size = u32::from_le_bytes(size);
        if u64::from(size) > self.segment_size - at {
            return Err(corruption(&segment, at, DecodeError::BadSize(size)));
        }
        self.read(offset, size)
    }

    /// The store timestamp of the record at `offset`, from its header alone
    /// (magic and self-offset checked; the body is not read).
    pub(crate) fn store_timestamp_at(&self, offset: u64) -> Result<i64> {
        const HEADER: usize = 48;
        let segment = self.segment_for(offset)?;
        let at = offset - segment.base;
        let mut header = [0u8; HEADER];
        segment
            .file
            .read_exact_at(&mut header, at)
            .map_err(|e| BrokerError::io(format!("read {}", segment.path.display()), e))?;
        let (_, magic) = record::peek_size_and_magic(&header).expect("48 bytes");
        if magic != MESSAGE_MAGIC {
            return Err(corruption(&segment, at, DecodeError::BadMagic(magic)));
        }
        let claimed = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        if claimed != offset {
            let reason = DecodeError::WrongOffset {
                claimed,
                actual: offset,
            };
            return Err(corruption(&segment, at, reason));
        }
        Ok(i64::from_le_bytes(
            header[40..48].try_into().expect("8 bytes"),
        ))
    }

    /// Calls `f` for every message record from `from` (a record boundary) to
    /// the end of the log, in order.
    pub(crate) fn for_each_record(
        &self,
        from: u64,
        mut f: impl FnMut(StoredMessage) -> Result<()>,
    ) -> Result<u64> {
        let end = self.written();
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let mut count = 0u64;
        for segment in segments {
            if segment.base + self.segment_size <= from || segment.base >= end {
                continue;
            }
            let start = from.saturating_sub(segment.base);
            let stop = end.min(segment.base + self.segment_size) - segment.base;
            match scan_segment_range(&segment, self.segment_size, start, stop, |m| {
                count += 1;
                f(m)
            })? {
                SegmentEnd::Bad { at, reason } => return Err(corruption(&segment, at, reason)),
                SegmentEnd::Blank | SegmentEnd::EndOfData(_) => {}
            }
        }
        Ok(count)
    }
}

impl LogWriter {
    /// Log offset where the next record starts.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next
    }

    /// The segment being appended to (what the flusher must fsync).
    pub(crate) fn current_segment(&self) -> Arc<Segment> {
        Arc::clone(&self.segment)
    }

    /// Returns the offset where a record of `len` bytes will start, closing
    /// the current segment and opening the next one if it does not fit.
    pub(crate) fn position_for(&mut self, log: &CommitLog, len: usize) -> Result<u64> {
        let segment_end = self.segment.base + log.segment_size;
        let needed = (len + BLANK_RECORD_LEN) as u64;
        if self.next + needed <= segment_end {
            return Ok(self.next);
        }
        if self.next < segment_end {
            // Close the segment: a blank record covers its unused end.
            record::encode_blank((segment_end - self.next) as u32, &mut self.buf);
            self.next = segment_end;
            self.write_buffer(log)?;
            // Everything before the new segment must be durable before the
            // new file exists: recovery trusts closed segments.
            self.segment.sync_data()?;
        }
        let segment = Arc::new(open_segment(&log.dir, segment_end, true)?);
        fsync_dir(&log.dir)?;
        log.segments
            .write()
            .insert(segment_end, Arc::clone(&segment));
        self.segment = segment;
        self.next = segment_end;
        self.buf_start = segment_end;
        Ok(self.next)
    }

    /// Buffer to encode the next record into; the caller then calls
    /// [`LogWriter::advance`] with its length.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Accounts for a record of `len` bytes just encoded into the buffer.
    pub(crate) fn advance(&mut self, len: usize) {
        self.next += len as u64;
    }

    /// Writes the buffered records to the current segment.
    pub(crate) fn write_buffer(&mut self, log: &CommitLog) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.segment
            .file
            .write_all_at(&self.buf, self.buf_start - self.segment.base)
            .map_err(|e| BrokerError::io(format!("write {}", self.segment.path.display()), e))?;
        self.buf.clear();
        self.buf_start = self.next;
        log.written.store(self.next, Ordering::Release);
        Ok(())
    }

    /// Forgets buffered bytes after a failed append (the broker is marked
    /// failed; nothing more is written).
    pub(crate) fn discard_buffer(&mut self) {
        self.next = self.buf_start;
        self.buf.clear();
    }
}

fn open_segment(dir: &Path, base: u64, create: bool) -> Result<Segment> {
    let path = dir.join(segment_file_name(base));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(&path)
        .map_err(|e| BrokerError::io(format!("open segment {}", path.display()), e))?;
    Ok(Segment { base, path, file })
}

fn corruption(segment: &Segment, at: u64, reason: DecodeError) -> BrokerError {
    BrokerError::Corruption {
        file: segment.path.clone(),
        file_offset: at,
        log_offset: segment.base + at,
        reason,
    }
}

/// How a scan of one segment ended.
#[derive(Debug)]
enum SegmentEnd {
    /// A blank record closed the segment.
    Blank,
    /// The data ended cleanly at this file position.
    EndOfData(u64),
    /// A bad record at this file position.
    Bad { at: u64, reason: DecodeError },
}

fn scan_segment(
    segment: &Segment,
    segment_size: u64,
    f: impl FnMut(StoredMessage) -> Result<()>,
) -> Result<SegmentEnd> {
    let len = segment
        .file
        .metadata()
        .map_err(|e| BrokerError::io(format!("stat {}", segment.path.display()), e))?
        .len();
    scan_segment_range(segment, segment_size, 0, len, f)
}

/// Walks the records of a segment between file positions `start` and
/// `stop`, checking each, and calls `f` for every message.
fn scan_segment_range(
    segment: &Segment,
    segment_size: u64,
    start: u64,
    stop: u64,
    mut f: impl FnMut(StoredMessage) -> Result<()>,
) -> Result<SegmentEnd> {
    let io = |e| BrokerError::io(format!("read {}", segment.path.display()), e);
    let mut reader = BufReader::with_capacity(1 << 20, &segment.file);
    reader.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut at = start;
    let mut record = Vec::new();
    let stop = stop.min(segment_size);
    while at < stop {
        let available = (stop - at) as usize;
        let mut prefix = [0u8; BLANK_RECORD_LEN];
        if available < prefix.len() {
            let reason = DecodeError::Truncated {
                needed: prefix.len(),
                available,
            };
            return Ok(SegmentEnd::Bad { at, reason });
        }
        reader.read_exact(&mut prefix).map_err(io)?;
        let (size, magic) = record::peek_size_and_magic(&prefix).expect("8 bytes");
        match magic {
            BLANK_MAGIC if u64::from(size) == segment_size - at => return Ok(SegmentEnd::Blank),
            BLANK_MAGIC => {
                return Ok(SegmentEnd::Bad {
                    at,
                    reason: DecodeError::BadSize(size),
                });
            }
            MESSAGE_MAGIC => {}
            other => {
                return Ok(SegmentEnd::Bad {
                    at,
                    reason: DecodeError::BadMagic(other),
                });
            }
        }
        let size = size as usize;
        if size < prefix.len() || size as u64 > segment_size - at {
            return Ok(SegmentEnd::Bad {
                at,
                reason: DecodeError::BadSize(size as u32),
            });
        }
        if size > available {
            let reason = DecodeError::Truncated {
                needed: size,
                available,
            };
            return Ok(SegmentEnd::Bad { at, reason });
        }
        record.clear();
        record.extend_from_slice(&prefix);
        record.resize(size, 0);
        reader.read_exact(&mut record[prefix.len()..]).map_err(io)?;
        match record::decode(&record, segment.base + at) {
            Ok(Frame::Message(message)) => f(message)?,
            Ok(Frame::Blank(_)) => unreachable!("magic checked above"),
            Err(reason) => return Ok(SegmentEnd::Bad { at, reason }),
        }
        at += size as u64;
    }
    Ok(SegmentEnd::EndOfData(at))
}
