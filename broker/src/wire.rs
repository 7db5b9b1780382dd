//! The binary codec for message batches on the HTTP API.
//!
//! Pulls answer with, and sends carry, a batch of messages. JSON would
//! base64 every body and re-parse every number; this format is a header and
//! length-prefixed frames that reuse the fields of [`StoredMessage`], so a
//! pulled batch is written with one allocation and a body is handed back as
//! a slice of the received buffer without a copy. Content type:
//! [`CONTENT_TYPE`] (`application/x-flashsale-batch`).
//!
//! All integers are little-endian, like the commit log's records.
//!
//! ```text
//! header (HEADER_LEN = 36 bytes)
//! offset  size  field
//!      0     4  magic          b"FSMB" (flash-sale message batch)
//!      4     1  version        VERSION (1)
//!      5     1  kind           1 = pull result, 2 = send batch
//!      6     1  status         pull: 0 found, 1 no_new_messages,
//!                              2 offset_too_small, 3 offset_too_big; send: 0
//!      7     1  reserved       0
//!      8     8  next_offset    pull only (0 in a send batch)
//!     16     8  min_offset     pull only
//!     24     8  max_offset     pull only
//!     32     4  message count  exactly this many frames follow
//!
//! frame (one per message; MIN_FRAME_LEN = 61 bytes with empty fields)
//! offset  size  field
//!      0     4  frame_len           bytes after this field
//!      4     4  queue_id            } placement: as stored for a pull,
//!      8     8  queue_offset        } 0 in a send batch (the broker
//!     16     8  commit_log_offset   } assigns them; ignored on decode)
//!     24     8  born_timestamp_ms   (i64; 0 in a send = "now")
//!     32     8  store_timestamp_ms  (i64)
//!     40     4  stored_size         record size in the log (0 in a send)
//!     44     4  flags
//!     48     1  topic length, then the topic (UTF-8)
//!      …     2  key length, then the key (UTF-8, empty = none)
//!      …     2  tags length, then the tags (UTF-8, empty = none)
//!      …     4  property count, then (u16 len, key, u16 len, value)*
//!      …     4  body length, then the body
//! ```
//!
//! The length limits are the commit log's ([`crate::record`]): whatever the
//! log can store, a frame can carry, and a frame the log could not store is
//! refused by the encoder instead of being truncated.
//!
//! There is no checksum: TCP and HTTP already guard the transport, and the
//! log's CRC has been checked when the record was read. What the decoder
//! guards against is a peer that sends garbage — every length is
//! bounds-checked, the frame count never sizes an allocation by itself,
//! fields must fill their frame exactly and the frames their buffer, and
//! a wrong magic, version or kind is named in the error. Decoding never
//! panics on any input (a fuzz loop below holds it to that).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::record::{self, Message, StoredMessage};
use crate::types::{PullResult, PullStatus};

/// Content type of a batch body.
pub const CONTENT_TYPE: &str = "application/x-flashsale-batch";
/// First four bytes of every batch.
pub const MAGIC: [u8; 4] = *b"FSMB";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the batch header.
pub const HEADER_LEN: usize = 36;
/// Bytes of the smallest frame: length prefix, fixed fields and five
/// empty length-prefixed sections (topic, key, tags, properties, body).
pub const MIN_FRAME_LEN: usize = 4 + FRAME_FIXED_LEN + 1 + 2 + 2 + 4 + 4;

/// Fixed fields of a frame after its length prefix (placement, timestamps,
/// stored size, flags).
const FRAME_FIXED_LEN: usize = 44;

/// What a batch holds, so a pull answer cannot be mistaken for a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    PullResult = 1,
    SendBatch = 2,
}

/// Why bytes are not a valid batch (or a message does not fit one).
/// Small and allocation-free, like [`crate::record::DecodeError`]: a server
/// produces one per bad request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header or a frame does.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed to go on.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The first four bytes are not [`MAGIC`].
    #[error("not a message batch (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// A format version this code does not read.
    #[error("unsupported batch format version {0} (this broker reads {VERSION})")]
    UnsupportedVersion(u8),
    /// A pull result where a send batch was expected, or the reverse.
    #[error("wrong kind of batch: expected {expected}, found {found}")]
    WrongKind {
        /// Kind byte expected.
        expected: u8,
        /// Kind byte found.
        found: u8,
    },
    /// The status byte names no pull status.
    #[error("unknown pull status {0}")]
    BadStatus(u8),
    /// A frame is shorter than its fixed fields.
    #[error("frame length {0} is below the minimum")]
    BadFrameLength(u32),
    /// A field's length runs past the end of its frame.
    #[error("a field of frame {0} runs past the end of the frame")]
    FieldOverrun(u32),
    /// A frame has bytes left after its body.
    #[error("frame {0} has bytes left over after its body")]
    FrameSlack(u32),
    /// A text field is not UTF-8.
    #[error("the {0} of a message is not valid UTF-8")]
    BadUtf8(&'static str),
    /// A property key appears twice in one message.
    #[error("a message repeats a property key")]
    DuplicateProperty,
    /// Bytes follow the last frame.
    #[error("{0} bytes follow the last frame")]
    TrailingBytes(usize),
    /// (Encoding) a field does not fit its length prefix.
    #[error(transparent)]
    FieldTooLong(#[from] record::FieldLengthError),
    /// (Encoding) more messages than a u32 count.
    #[error("{0} messages do not fit one batch")]
    TooManyMessages(usize),
}

/// Encodes the answer to a pull.
pub fn encode_pull_result(result: &PullResult) -> Result<Bytes, WireError> {
    let header = Header {
        kind: Kind::PullResult,
        status: status_code(result.status),
        next_offset: result.next_offset,
        min_offset: result.min_offset,
        max_offset: result.max_offset,
    };
    let frames = result.messages.iter().map(|m| {
        (
            &m.message,
            Placement {
                queue_id: m.queue_id,
                queue_offset: m.queue_offset,
                commit_log_offset: m.commit_log_offset,
                store_timestamp_ms: m.store_timestamp_ms,
                stored_size: m.stored_size,
            },
        )
    });
    encode(header, frames)
}

/// Decodes the answer to a pull.
pub fn decode_pull_result(bytes: Bytes) -> Result<PullResult, WireError> {
    let (header, count) = read_header(&bytes, Kind::PullResult)?;
    let status = status_from_code(header.status)?;
    let mut messages = Vec::with_capacity(bounded_capacity(count, bytes.len()));
    decode_frames(&bytes, count, |message, placement| {
        messages.push(StoredMessage {
            message,
            queue_id: placement.queue_id,
            queue_offset: placement.queue_offset,
            commit_log_offset: placement.commit_log_offset,
            store_timestamp_ms: placement.store_timestamp_ms,
            stored_size: placement.stored_size,
        });
    })?;
    Ok(PullResult {
        status,
        messages,
        next_offset: header.next_offset,
        min_offset: header.min_offset,
        max_offset: header.max_offset,
    })
}

/// Encodes messages to send. Their placement fields go out as zero: the
/// broker assigns queue, offsets and store time.
pub fn encode_send_batch(messages: &[Message]) -> Result<Bytes, WireError> {
    let header = Header {
        kind: Kind::SendBatch,
        status: 0,
        next_offset: 0,
        min_offset: 0,
        max_offset: 0,
    };
    encode(header, messages.iter().map(|m| (m, Placement::default())))
}

/// Decodes messages to send; placement fields in the frames are ignored.
pub fn decode_send_batch(bytes: Bytes) -> Result<Vec<Message>, WireError> {
    let (_, count) = read_header(&bytes, Kind::SendBatch)?;
    let mut messages = Vec::with_capacity(bounded_capacity(count, bytes.len()));
    decode_frames(&bytes, count, |message, _| messages.push(message))?;
    Ok(messages)
}

/// The header fields besides magic, version and count.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: Kind,
    status: u8,
    next_offset: u64,
    min_offset: u64,
    max_offset: u64,
}

/// The per-frame fields that are not part of [`Message`].
#[derive(Debug, Clone, Copy, Default)]
struct Placement {
    queue_id: u32,
    queue_offset: u64,
    commit_log_offset: u64,
    store_timestamp_ms: i64,
    stored_size: u32,
}

fn status_code(status: PullStatus) -> u8 {
    match status {
        PullStatus::Found => 0,
        PullStatus::NoNewMessages => 1,
        PullStatus::OffsetTooSmall => 2,
        PullStatus::OffsetTooBig => 3,
    }
}

fn status_from_code(code: u8) -> Result<PullStatus, WireError> {
    Ok(match code {
        0 => PullStatus::Found,
        1 => PullStatus::NoNewMessages,
        2 => PullStatus::OffsetTooSmall,
        3 => PullStatus::OffsetTooBig,
        other => return Err(WireError::BadStatus(other)),
    })
}

/// The frame count comes from the peer: never reserve more frames than the
/// buffer could possibly hold.
fn bounded_capacity(count: u32, buffer_len: usize) -> usize {
    (count as usize).min(buffer_len.saturating_sub(HEADER_LEN) / MIN_FRAME_LEN)
}

/// Bytes after the length prefix that `message` needs, checking every
/// field against its length prefix (the same limits as the commit log,
/// whose variable part this frame shares).
fn frame_len(message: &Message) -> Result<usize, WireError> {
    let len = FRAME_FIXED_LEN + record::variable_len(message)?;
    // The frame length is a u32 and covers the body's own u32 prefix.
    if len > u32::MAX as usize {
        return Err(WireError::FieldTooLong(record::FieldLengthError {
            field: "message",
            len,
            min: 0,
            max: u32::MAX as usize,
        }));
    }
    Ok(len)
}

fn encode<'a>(
    header: Header,
    frames: impl Iterator<Item = (&'a Message, Placement)> + Clone,
) -> Result<Bytes, WireError> {
    // Size everything first: one exact allocation, and a message that does
    // not fit fails before anything is written.
    let mut total = HEADER_LEN;
    let mut count = 0usize;
    for (message, _) in frames.clone() {
        total += 4 + frame_len(message)?;
        count += 1;
    }
    let count = u32::try_from(count).map_err(|_| WireError::TooManyMessages(count))?;
    let mut out = BytesMut::with_capacity(total);
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(header.kind as u8);
    out.put_u8(header.status);
    out.put_u8(0);
    out.put_u64_le(header.next_offset);
    out.put_u64_le(header.min_offset);
    out.put_u64_le(header.max_offset);
    out.put_u32_le(count);
    for (message, placement) in frames {
        // Checked above; the casts below cannot truncate.
        let len = frame_len(message)?;
        out.put_u32_le(len as u32);
        out.put_u32_le(placement.queue_id);
        out.put_u64_le(placement.queue_offset);
        out.put_u64_le(placement.commit_log_offset);
        out.put_i64_le(message.born_timestamp_ms);
        out.put_i64_le(placement.store_timestamp_ms);
        out.put_u32_le(placement.stored_size);
        out.put_u32_le(message.flags);
        out.put_u8(message.topic.len() as u8);
        out.put_slice(message.topic.as_bytes());
        out.put_u16_le(message.key.len() as u16);
        out.put_slice(message.key.as_bytes());
        out.put_u16_le(message.tags.len() as u16);
        out.put_slice(message.tags.as_bytes());
        out.put_u32_le(message.properties.len() as u32);
        for (k, v) in &message.properties {
            out.put_u16_le(k.len() as u16);
            out.put_slice(k.as_bytes());
            out.put_u16_le(v.len() as u16);
            out.put_slice(v.as_bytes());
        }
        out.put_u32_le(message.body.len() as u32);
        out.put_slice(&message.body);
    }
    debug_assert_eq!(out.len(), total);
    Ok(out.freeze())
}

/// Checks magic, version and kind; returns the header and the frame count.
fn read_header(bytes: &[u8], expected: Kind) -> Result<(Header, u32), WireError> {
    if bytes.len() < HEADER_LEN {
        // Name the magic first when it is already wrong: "not a batch"
        // says more than "too short" about a body of garbage.
        if bytes.len() >= 4 && bytes[..4] != MAGIC {
            return Err(WireError::BadMagic([
                bytes[0], bytes[1], bytes[2], bytes[3],
            ]));
        }
        return Err(WireError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if bytes[4] != VERSION {
        return Err(WireError::UnsupportedVersion(bytes[4]));
    }
    if bytes[5] != expected as u8 {
        return Err(WireError::WrongKind {
            expected: expected as u8,
            found: bytes[5],
        });
    }
    let header = Header {
        kind: expected,
        status: bytes[6],
        next_offset: le_u64(&bytes[8..16]),
        min_offset: le_u64(&bytes[16..24]),
        max_offset: le_u64(&bytes[24..32]),
    };
    Ok((header, le_u32(&bytes[32..36])))
}

/// Walks `count` frames after the header, handing each decoded message to
/// `each`, and requires the frames to end exactly where the buffer does.
fn decode_frames(
    bytes: &Bytes,
    count: u32,
    mut each: impl FnMut(Message, Placement),
) -> Result<(), WireError> {
    let mut pos = HEADER_LEN;
    for index in 0..count {
        let available = bytes.len();
        if available - pos < 4 {
            return Err(WireError::Truncated {
                needed: pos + 4,
                available,
            });
        }
        let len = le_u32(&bytes[pos..pos + 4]);
        if (len as usize) < MIN_FRAME_LEN - 4 {
            return Err(WireError::BadFrameLength(len));
        }
        let start = pos + 4;
        if available - start < len as usize {
            return Err(WireError::Truncated {
                needed: start.saturating_add(len as usize),
                available,
            });
        }
        let end = start + len as usize;
        let (message, placement) = decode_frame(bytes, start, end, index)?;
        each(message, placement);
        pos = end;
    }
    if pos != bytes.len() {
        return Err(WireError::TrailingBytes(bytes.len() - pos));
    }
    Ok(())
}

/// Decodes the frame occupying `bytes[start..end]` (after its length).
fn decode_frame(
    bytes: &Bytes,
    start: usize,
    end: usize,
    index: u32,
) -> Result<(Message, Placement), WireError> {
    let mut r = FrameReader {
        bytes,
        pos: start,
        end,
        index,
    };
    let placement_queue_id = r.u32()?;
    let queue_offset = r.u64()?;
    let commit_log_offset = r.u64()?;
    let born_timestamp_ms = r.u64()? as i64;
    let store_timestamp_ms = r.u64()? as i64;
    let stored_size = r.u32()?;
    let flags = r.u32()?;
    let topic_len = r.take(1)?[0] as usize;
    let topic = r.text(topic_len, "topic")?;
    let key_len = r.u16()? as usize;
    let key = r.text(key_len, "key")?;
    let tags_len = r.u16()? as usize;
    let tags = r.text(tags_len, "tags")?;
    // Each property takes at least 4 bytes, so a huge count fails on the
    // first overrun instead of looping; nothing is reserved from it.
    let property_count = r.u32()?;
    let mut properties = BTreeMap::new();
    for _ in 0..property_count {
        let k_len = r.u16()? as usize;
        let k = r.text(k_len, "property key")?;
        let v_len = r.u16()? as usize;
        let v = r.text(v_len, "property value")?;
        if properties.insert(k, v).is_some() {
            return Err(WireError::DuplicateProperty);
        }
    }
    let body_len = r.u32()? as usize;
    let body_start = r.pos;
    r.take(body_len)?;
    // The body shares the received buffer: no copy of the payload.
    let body = bytes.slice(body_start..body_start + body_len);
    if r.pos != end {
        return Err(WireError::FrameSlack(index));
    }
    let message = Message {
        topic,
        key,
        tags,
        flags,
        properties,
        body,
        born_timestamp_ms,
    };
    let placement = Placement {
        queue_id: placement_queue_id,
        queue_offset,
        commit_log_offset,
        store_timestamp_ms,
        stored_size,
    };
    Ok((message, placement))
}

/// A cursor confined to one frame: every read is checked against the
/// frame's end, so a lying field length is caught at that field.
struct FrameReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
    index: u32,
}

impl<'a> FrameReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.end - self.pos < n {
            return Err(WireError::FieldOverrun(self.index));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.take(4).map(le_u32)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.take(8).map(le_u64)
    }

    fn text(&mut self, len: usize, field: &'static str) -> Result<String, WireError> {
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| WireError::BadUtf8(field))
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&b[..4]);
    u32::from_le_bytes(raw)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[..8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests;
