//! The commit-log record format: how one message is laid out on disk.
//!
//! Every record is self-describing and self-checking, so recovery can walk
//! the log without any other file and tell a whole record from a torn one.
//! All integers are little-endian.
//!
//! ```text
//! offset  size  field
//!      0     4  total_size          whole record, this field included
//!      4     4  magic               MESSAGE_MAGIC (or BLANK_MAGIC, see below)
//!      8     4  crc32c              CRC32C of bytes [12, total_size)
//!     12     8  commit_log_offset   where the record starts in the log
//!     20     4  queue_id
//!     24     8  queue_offset        position in its consume queue
//!     32     8  born_timestamp_ms   when the producer made it
//!     40     8  store_timestamp_ms  when the broker appended it
//!     48     4  flags               opaque to the broker
//!     52     1  topic length, then the topic (UTF-8)
//!      …     2  key length, then the key (UTF-8, empty = none)
//!      …     2  tags length, then the tags (UTF-8, empty = none)
//!      …     4  properties length, then (u16 len, key, u16 len, value)*
//!      …     4  body length, then the body
//! ```
//!
//! The record stores its own log offset (as RocketMQ does) so a record read
//! from the wrong place — a stale consume-queue entry, a mis-sized segment —
//! is caught instead of returned as someone else's message.
//!
//! A segment that cannot fit the next record ends with a *blank* record:
//! `total_size` = the bytes left in the segment, `BLANK_MAGIC`, nothing else.
//! Readers jump from it to the next segment; the unused end of a segment is
//! marked, never guessed.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

/// Marks a message record (same role as RocketMQ's `MESSAGE_MAGIC_CODE`).
pub const MESSAGE_MAGIC: u32 = 0xDAA3_20A7;
/// Marks the blank record that closes a segment.
pub const BLANK_MAGIC: u32 = 0xCBD4_3194;
/// Bytes of the fixed part of a message record, before the topic.
pub const FIXED_HEADER_LEN: usize = 52;
/// Bytes of a blank record (size + magic).
pub const BLANK_RECORD_LEN: usize = 8;
/// Longest topic name (its length is one byte on disk).
pub const MAX_TOPIC_LEN: usize = 127;

/// A message as a producer hands it to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Destination topic.
    pub topic: String,
    /// Business key (e.g. an order id); empty for none.
    pub key: String,
    /// Tags for filtering; empty for none.
    pub tags: String,
    /// Opaque flags, stored and returned as given.
    pub flags: u32,
    /// Free-form string properties.
    pub properties: BTreeMap<String, String>,
    /// The payload.
    pub body: Bytes,
    /// When the producer created the message (ms since the Unix epoch);
    /// 0 means "now", filled in by the broker.
    pub born_timestamp_ms: i64,
}

impl Message {
    /// A message with a topic and a body and nothing else.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            body: body.into(),
            ..Message::default()
        }
    }

    /// Sets the key (builder style).
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Sets the tags (builder style).
    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.tags = tags.into();
        self
    }

    /// Adds a property (builder style).
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }
}

/// A message as stored: the producer's message plus where and when the
/// broker put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message as produced.
    pub message: Message,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Position within that queue.
    pub queue_offset: u64,
    /// Where the record starts in the commit log.
    pub commit_log_offset: u64,
    /// When the broker appended it (ms since the Unix epoch).
    pub store_timestamp_ms: i64,
    /// Encoded size of the record in the log.
    pub stored_size: u32,
}

/// Where a record goes; filled in by the broker under its append lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) queue_id: u32,
    pub(crate) queue_offset: u64,
    pub(crate) commit_log_offset: u64,
    pub(crate) store_timestamp_ms: i64,
}

/// Why bytes are not a valid record. Small and allocation-free: recovery
/// and the read path produce it per bad frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the record claims (a torn write, or the end of data).
    #[error("record truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The magic number is neither a message nor a blank record.
    #[error("bad magic number {0:#010x}")]
    BadMagic(u32),
    /// `total_size` is impossible (too small, or beyond the segment).
    #[error("impossible record size {0}")]
    BadSize(u32),
    /// The checksum does not match the content.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// CRC in the record.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The variable-length fields do not add up to `total_size`.
    #[error("field lengths do not add up to the record size")]
    BadLayout,
    /// A text field is not UTF-8.
    #[error("a text field is not valid UTF-8")]
    BadUtf8,
    /// The record says it lives elsewhere in the log.
    #[error("record claims log offset {claimed} but was read at {actual}")]
    WrongOffset {
        /// Offset stored in the record.
        claimed: u64,
        /// Offset it was read from.
        actual: u64,
    },
}

/// What sits at a log position: a message or the blank end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Message(StoredMessage),
    /// A blank record: the rest of the segment (this many bytes) is unused.
    Blank(u32),
}

/// A message field that does not fit its length prefix (or, for the topic,
/// its naming limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {field} of a message is {len} bytes; it must be {min}..={max}")]
pub struct FieldLengthError {
    /// Which field.
    pub field: &'static str,
    /// Its length.
    pub len: usize,
    /// Shortest allowed.
    pub min: usize,
    /// Longest allowed.
    pub max: usize,
}

/// Bytes of a message's variable part — topic, key, tags, properties and
/// body, each with its length prefix — checking every field against its
/// prefix. The commit-log record and the wire frame share this layout and
/// differ only in their fixed headers.
pub fn variable_len(message: &Message) -> Result<usize, FieldLengthError> {
    let check = |field, len: usize, min, max: usize| {
        if len < min || len > max {
            Err(FieldLengthError {
                field,
                len,
                min,
                max,
            })
        } else {
            Ok(len)
        }
    };
    let u16_max = u16::MAX as usize;
    let mut total = 1 + check("topic", message.topic.len(), 1, MAX_TOPIC_LEN)?;
    total += 2 + check("key", message.key.len(), 0, u16_max)?;
    total += 2 + check("tags", message.tags.len(), 0, u16_max)?;
    total += 4;
    for (k, v) in &message.properties {
        total += 2 + check("property key", k.len(), 0, u16_max)?;
        total += 2 + check("property value", v.len(), 0, u16_max)?;
    }
    total += 4 + check("body", message.body.len(), 0, u32::MAX as usize)?;
    Ok(total)
}

/// Size of the record `message` would encode to.
pub(crate) fn encoded_len(message: &Message) -> Result<usize, FieldLengthError> {
    let total = FIXED_HEADER_LEN + variable_len(message)?;
    if total > u32::MAX as usize {
        return Err(FieldLengthError {
            field: "record",
            len: total,
            min: 0,
            max: u32::MAX as usize,
        });
    }
    Ok(total)
}

/// Appends the record for `message` at `placement` to `out`. The caller has
/// checked the lengths with [`encoded_len`] (passed in as `len`).
pub(crate) fn encode_into(message: &Message, placement: Placement, len: usize, out: &mut BytesMut) {
    let start = out.len();
    out.reserve(len);
    out.put_u32_le(len as u32);
    out.put_u32_le(MESSAGE_MAGIC);
    out.put_u32_le(0); // CRC, patched below once the content is in place
    out.put_u64_le(placement.commit_log_offset);
    out.put_u32_le(placement.queue_id);
    out.put_u64_le(placement.queue_offset);
    out.put_i64_le(message.born_timestamp_ms);
    out.put_i64_le(placement.store_timestamp_ms);
    out.put_u32_le(message.flags);
    out.put_u8(message.topic.len() as u8);
    out.put_slice(message.topic.as_bytes());
    out.put_u16_le(message.key.len() as u16);
    out.put_slice(message.key.as_bytes());
    out.put_u16_le(message.tags.len() as u16);
    out.put_slice(message.tags.as_bytes());
    let properties_len: usize = message
        .properties
        .iter()
        .map(|(k, v)| 4 + k.len() + v.len())
        .sum();
    out.put_u32_le(properties_len as u32);
    for (k, v) in &message.properties {
        out.put_u16_le(k.len() as u16);
        out.put_slice(k.as_bytes());
        out.put_u16_le(v.len() as u16);
        out.put_slice(v.as_bytes());
    }
    out.put_u32_le(message.body.len() as u32);
    out.put_slice(&message.body);
    debug_assert_eq!(out.len() - start, len);
    let crc = crc32c::crc32c(&out[start + 12..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a blank record closing a segment with `remaining` unused bytes.
pub(crate) fn encode_blank(remaining: u32, out: &mut BytesMut) {
    out.put_u32_le(remaining);
    out.put_u32_le(BLANK_MAGIC);
}

/// Reads the 8-byte prefix every frame starts with: (total_size, magic).
pub(crate) fn peek_size_and_magic(bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    if bytes.len() < 8 {
        return Err(DecodeError::Truncated {
            needed: 8,
            available: bytes.len(),
        });
    }
    Ok((read_u32(bytes, 0), read_u32(bytes, 4)))
}

/// Decodes the record at the start of `bytes`, stored at log offset
/// `log_offset`, exactly as the log's readers do: a message, or `None` for
/// a blank (end-of-segment) record. Public for tools and the fuzz target
/// (`fuzz/fuzz_targets/record_decoder.rs`).
pub fn decode_record(bytes: &[u8], log_offset: u64) -> Result<Option<StoredMessage>, DecodeError> {
    decode(bytes, log_offset).map(|frame| match frame {
        Frame::Message(stored) => Some(stored),
        Frame::Blank(_) => None,
    })
}

/// Decodes one whole frame from `bytes`, which must start at log offset
/// `log_offset`. `bytes` may extend past the frame.
pub(crate) fn decode(bytes: &[u8], log_offset: u64) -> Result<Frame, DecodeError> {
    let (size, magic) = peek_size_and_magic(bytes)?;
    match magic {
        BLANK_MAGIC => {
            if (size as usize) < BLANK_RECORD_LEN {
                return Err(DecodeError::BadSize(size));
            }
            Ok(Frame::Blank(size))
        }
        MESSAGE_MAGIC => decode_message(bytes, size as usize, log_offset).map(Frame::Message),
        other => Err(DecodeError::BadMagic(other)),
    }
}

fn decode_message(
    bytes: &[u8],
    size: usize,
    log_offset: u64,
) -> Result<StoredMessage, DecodeError> {
    // Smallest valid record: header + 1-byte topic length and empty sections.
    const MIN_LEN: usize = FIXED_HEADER_LEN + 1 + 2 + 2 + 4 + 4;
    if size < MIN_LEN {
        return Err(DecodeError::BadSize(size as u32));
    }
    if bytes.len() < size {
        return Err(DecodeError::Truncated {
            needed: size,
            available: bytes.len(),
        });
    }
    let record = &bytes[..size];
    let stored = read_u32(record, 8);
    let computed = crc32c::crc32c(&record[12..]);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    let claimed = read_u64(record, 12);
    if claimed != log_offset {
        return Err(DecodeError::WrongOffset {
            claimed,
            actual: log_offset,
        });
    }
    let mut cursor = Cursor {
        bytes: record,
        pos: FIXED_HEADER_LEN,
    };
    let topic_len = cursor.take(1)?[0] as usize;
    let topic = cursor.text(topic_len)?;
    let key_len = cursor.u16()? as usize;
    let key = cursor.text(key_len)?;
    let tags_len = cursor.u16()? as usize;
    let tags = cursor.text(tags_len)?;
    let properties_len = cursor.u32()? as usize;
    let mut properties_bytes = Cursor {
        bytes: cursor.take(properties_len)?,
        pos: 0,
    };
    let mut properties = BTreeMap::new();
    while properties_bytes.pos < properties_bytes.bytes.len() {
        let k_len = properties_bytes.u16()? as usize;
        let k = properties_bytes.text(k_len)?;
        let v_len = properties_bytes.u16()? as usize;
        let v = properties_bytes.text(v_len)?;
        properties.insert(k, v);
    }
    let body_len = cursor.u32()? as usize;
    let body = Bytes::copy_from_slice(cursor.take(body_len)?);
    if cursor.pos != size {
        return Err(DecodeError::BadLayout);
    }
    Ok(StoredMessage {
        message: Message {
            topic,
            key,
            tags,
            flags: read_u32(record, 48),
            properties,
            body,
            born_timestamp_ms: read_u64(record, 32) as i64,
        },
        queue_id: read_u32(record, 20),
        queue_offset: read_u64(record, 24),
        commit_log_offset: claimed,
        store_timestamp_ms: read_u64(record, 40) as i64,
        stored_size: size as u32,
    })
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Bounds-checked reads over one record; every overrun is a layout error.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::BadLayout)?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::BadLayout)?;
        self.pos = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn text(&mut self, n: usize) -> Result<String, DecodeError> {
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8)
    }
}

/// Stable 64-bit hash of a tag string, stored in consume-queue entries so
/// consumers can filter by tag without reading the log. FNV-1a, written out
/// because the value lives on disk: it must never change with a library
/// upgrade, and `std`'s hashers promise no such thing.
pub fn tag_hash(tags: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    tags.bytes().fold(OFFSET_BASIS, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            topic: "orders".into(),
            key: "order-42".into(),
            tags: "vip".into(),
            flags: 0xDEAD_BEEF,
            properties: BTreeMap::from([
                ("item".to_string(), "sku-1".to_string()),
                ("empty".to_string(), String::new()),
            ]),
            body: Bytes::from_static(b"{\"user\":7}"),
            born_timestamp_ms: 1_700_000_000_123,
        }
    }

    fn placement() -> Placement {
        Placement {
            queue_id: 3,
            queue_offset: 99,
            commit_log_offset: 4096,
            store_timestamp_ms: 1_700_000_000_456,
        }
    }

    fn encode(message: &Message) -> BytesMut {
        let len = encoded_len(message).unwrap();
        let mut buf = BytesMut::new();
        encode_into(message, placement(), len, &mut buf);
        buf
    }

    #[test]
    fn every_field_round_trips() {
        let message = sample();
        let buf = encode(&message);
        let Frame::Message(stored) = decode(&buf, 4096).unwrap() else {
            panic!("expected a message frame");
        };
        assert_eq!(stored.message, message);
        assert_eq!(stored.queue_id, 3);
        assert_eq!(stored.queue_offset, 99);
        assert_eq!(stored.commit_log_offset, 4096);
        assert_eq!(stored.store_timestamp_ms, 1_700_000_000_456);
        assert_eq!(stored.stored_size as usize, buf.len());
    }

    #[test]
    fn empty_optional_fields_round_trip() {
        let message = Message::new("t", Bytes::new());
        let buf = encode(&message);
        let Frame::Message(stored) = decode(&buf, 4096).unwrap() else {
            panic!("expected a message frame");
        };
        assert_eq!(stored.message, message);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let buf = encode(&sample());
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(&bad, 4096).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let buf = encode(&sample());
        for cut in 0..buf.len() {
            assert!(
                decode(&buf[..cut], 4096).is_err(),
                "cut at {cut} went unnoticed"
            );
        }
    }

    #[test]
    fn a_record_read_from_the_wrong_offset_is_rejected() {
        let buf = encode(&sample());
        assert_eq!(
            decode(&buf, 8192),
            Err(DecodeError::WrongOffset {
                claimed: 4096,
                actual: 8192
            })
        );
    }

    #[test]
    fn blank_records_decode_with_their_size() {
        let mut buf = BytesMut::new();
        encode_blank(500, &mut buf);
        assert_eq!(decode(&buf, 0).unwrap(), Frame::Blank(500));
    }

    #[test]
    fn oversized_fields_are_refused_before_encoding() {
        let mut message = sample();
        message.topic = "x".repeat(MAX_TOPIC_LEN + 1);
        assert!(encoded_len(&message).is_err());
        let mut message = sample();
        message.key = "k".repeat(70_000);
        assert!(encoded_len(&message).is_err());
    }

    #[test]
    fn tag_hash_is_stable() {
        // Pinned: this value is on disk in every consume queue.
        assert_eq!(tag_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(tag_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(tag_hash("vip"), tag_hash("pip"));
    }
}
