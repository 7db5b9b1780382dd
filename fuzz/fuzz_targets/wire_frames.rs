//! The HTTP API's binary batch codec on any bytes: a send batch or a pull
//! answer decodes or fails with an error, never a panic or an allocation
//! sized by a count the bytes only claim; and what decodes round-trips.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(messages) = broker::wire::decode_send_batch(bytes.clone())
        && let Ok(encoded) = broker::wire::encode_send_batch(&messages)
    {
        let again = broker::wire::decode_send_batch(encoded).expect("an encoded batch decodes");
        assert_eq!(again, messages);
    }
    let _ = broker::wire::decode_pull_result(bytes);
});
