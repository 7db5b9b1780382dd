//! The batch format held to its contract: every field and status round-trips,
//! every truncation and lying length is refused, limits are enforced, and
//! random or mutated bytes never panic the decoder.

use super::*;
use crate::record::MAX_TOPIC_LEN;

fn message(i: u32) -> Message {
    Message {
        topic: "orders".into(),
        key: format!("order-{i}"),
        tags: "vip".into(),
        flags: 0xDEAD_0000 | i,
        properties: BTreeMap::from([
            ("item".to_string(), "sku-1".to_string()),
            ("empty".to_string(), String::new()),
            ("ünïcode".to_string(), "秒杀".to_string()),
        ]),
        body: Bytes::from(format!("{{\"user\":{i}}}")),
        born_timestamp_ms: 1_700_000_000_000 + i64::from(i),
    }
}

fn pull_result() -> PullResult {
    let messages = (0..3)
        .map(|i| StoredMessage {
            message: message(i),
            queue_id: 2,
            queue_offset: 40 + u64::from(i),
            commit_log_offset: 4096 * u64::from(i + 1),
            store_timestamp_ms: -5 + i64::from(i),
            stored_size: 120 + i,
        })
        .chain(std::iter::once(StoredMessage {
            message: Message::new("t", Bytes::new()),
            queue_id: u32::MAX,
            queue_offset: u64::MAX,
            commit_log_offset: 0,
            store_timestamp_ms: i64::MIN,
            stored_size: 0,
        }))
        .collect();
    PullResult {
        status: PullStatus::Found,
        messages,
        next_offset: 44,
        min_offset: 7,
        max_offset: 50,
    }
}

#[test]
fn pull_results_round_trip_every_field() {
    let result = pull_result();
    let bytes = encode_pull_result(&result).unwrap();
    assert_eq!(decode_pull_result(bytes).unwrap(), result);
}

#[test]
fn every_status_round_trips_with_no_messages() {
    for status in [
        PullStatus::Found,
        PullStatus::NoNewMessages,
        PullStatus::OffsetTooSmall,
        PullStatus::OffsetTooBig,
    ] {
        let result = PullResult {
            status,
            messages: Vec::new(),
            next_offset: 1,
            min_offset: 2,
            max_offset: 3,
        };
        let bytes = encode_pull_result(&result).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(decode_pull_result(bytes).unwrap(), result);
    }
}

#[test]
fn send_batches_round_trip() {
    let messages: Vec<Message> = (0..5).map(message).collect();
    let bytes = encode_send_batch(&messages).unwrap();
    assert_eq!(decode_send_batch(bytes).unwrap(), messages);
}

#[test]
fn the_smallest_frame_has_the_documented_size() {
    // The decoder's lower bound allows an empty topic; a message that
    // can be stored has at least a one-byte topic.
    let bytes = encode_send_batch(&[Message::new("t", Bytes::new())]).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + MIN_FRAME_LEN + 1);
    assert_eq!(MIN_FRAME_LEN, 61);
    assert!(encode_send_batch(&[Message::new("", Bytes::new())]).is_err());
}

#[test]
fn bodies_share_the_received_buffer() {
    let bytes = encode_send_batch(&[message(1)]).unwrap();
    let range = bytes.as_ptr_range();
    let decoded = decode_send_batch(bytes.clone()).unwrap();
    assert!(range.contains(&decoded[0].body.as_ptr()));
}

#[test]
fn every_truncation_is_rejected() {
    let full = encode_pull_result(&pull_result()).unwrap();
    for cut in 0..full.len() {
        assert!(
            decode_pull_result(full.slice(..cut)).is_err(),
            "pull result cut at {cut} went unnoticed"
        );
    }
    let full = encode_send_batch(&[message(1), message(2)]).unwrap();
    for cut in 0..full.len() {
        assert!(
            decode_send_batch(full.slice(..cut)).is_err(),
            "send batch cut at {cut} went unnoticed"
        );
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = BytesMut::from(&encode_send_batch(&[message(1)]).unwrap()[..]);
    bytes.put_u8(0);
    assert_eq!(
        decode_send_batch(bytes.freeze()),
        Err(WireError::TrailingBytes(1))
    );
}

#[test]
fn bad_magic_version_kind_and_status_are_named() {
    let good = encode_pull_result(&pull_result()).unwrap();
    let patched = |at: usize, value: u8| {
        let mut bytes = BytesMut::from(&good[..]);
        bytes[at] = value;
        bytes.freeze()
    };
    assert!(matches!(
        decode_pull_result(patched(0, b'X')),
        Err(WireError::BadMagic(_))
    ));
    assert_eq!(
        decode_pull_result(patched(4, 2)),
        Err(WireError::UnsupportedVersion(2))
    );
    assert_eq!(
        decode_pull_result(patched(6, 9)),
        Err(WireError::BadStatus(9))
    );
    assert_eq!(
        decode_send_batch(good.clone()),
        Err(WireError::WrongKind {
            expected: 2,
            found: 1
        })
    );
    assert!(matches!(
        decode_send_batch(Bytes::from_static(b"hello world")),
        Err(WireError::BadMagic(_))
    ));
}

#[test]
fn a_lying_field_length_is_caught_inside_its_frame() {
    let good = encode_send_batch(&[message(1)]).unwrap();
    // The topic length byte sits right after the frame's fixed fields.
    let mut bytes = BytesMut::from(&good[..]);
    bytes[HEADER_LEN + 4 + FRAME_FIXED_LEN] = 200;
    assert_eq!(
        decode_send_batch(bytes.freeze()),
        Err(WireError::FieldOverrun(0))
    );
}

#[test]
fn a_huge_count_reserves_nothing_and_fails() {
    let mut bytes = BytesMut::from(&encode_send_batch(&[]).unwrap()[..]);
    bytes[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(bounded_capacity(u32::MAX, bytes.len()), 0);
    assert!(matches!(
        decode_send_batch(bytes.freeze()),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn duplicate_properties_are_rejected() {
    let mut m = Message::new("t", Bytes::new());
    m.properties.insert("a".into(), "1".into());
    m.properties.insert("b".into(), "2".into());
    let good = encode_send_batch(&[m]).unwrap();
    // Properties start after topic (1 + 1 bytes), key (2) and tags (2)
    // and their count (4); the second key's byte follows "a", "1".
    let props = HEADER_LEN + 4 + FRAME_FIXED_LEN + 2 + 2 + 2 + 4;
    let second_key = props + 2 + 1 + 2 + 1 + 2;
    assert_eq!(good[second_key], b'b');
    let mut bytes = BytesMut::from(&good[..]);
    bytes[second_key] = b'a';
    assert_eq!(
        decode_send_batch(bytes.freeze()),
        Err(WireError::DuplicateProperty)
    );
}

#[test]
fn fields_over_their_limits_are_refused_by_the_encoder() {
    let mut m = message(1);
    m.topic = "x".repeat(MAX_TOPIC_LEN + 1);
    assert!(matches!(
        encode_send_batch(&[m]),
        Err(WireError::FieldTooLong(record::FieldLengthError {
            field: "topic",
            ..
        }))
    ));
    let mut m = message(1);
    m.key = "k".repeat(70_000);
    assert!(matches!(
        encode_send_batch(&[m]),
        Err(WireError::FieldTooLong(record::FieldLengthError {
            field: "key",
            ..
        }))
    ));
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz
/// loop (the same inputs on every run, so a failure reproduces).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let seeds = [
        encode_pull_result(&pull_result()).unwrap(),
        encode_send_batch(&[message(1), message(2)]).unwrap(),
    ];
    for round in 0..20_000 {
        let bytes: Vec<u8> = match round % 3 {
            // Pure noise, sometimes behind a valid header prefix so
            // the frame decoder is reached rather than the magic check.
            0 => {
                let len = rng.below(300);
                let mut noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if rng.below(2) == 0 && noise.len() >= 6 {
                    noise[..4].copy_from_slice(&MAGIC);
                    noise[4] = VERSION;
                    noise[5] = 1 + rng.below(2) as u8;
                }
                noise
            }
            // A valid batch with a few bytes flipped.
            1 => {
                let mut bytes = seeds[rng.below(2)].to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
                bytes
            }
            // A valid batch cut short, with a random length word
            // overwritten somewhere.
            _ => {
                let mut bytes = seeds[rng.below(2)].to_vec();
                let at = rng.below(bytes.len() - 4);
                bytes[at..at + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                bytes.truncate(rng.below(bytes.len() + 1));
                bytes
            }
        };
        let bytes = Bytes::from(bytes);
        let _ = decode_pull_result(bytes.clone());
        let _ = decode_send_batch(bytes);
    }
}
