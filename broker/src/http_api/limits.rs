//! How much one request may carry and one answer may hold.
//!
//! Every body limit and pull cap of the API in one place, so the router,
//! the handlers and the client's callers read the same numbers.

use crate::config::BrokerConfig;
use crate::wire;

/// Most messages one pull answer carries, whatever the request asks.
pub const MAX_PULL_MESSAGES: u32 = 1024;
/// Byte budget of one pull answer, whatever the request asks (at least one
/// message is still returned even if it is larger).
pub const MAX_PULL_BYTES: u32 = 16 << 20;
/// `max_messages` of a pull that does not say (RocketMQ's pull batch size).
pub const DEFAULT_PULL_MESSAGES: u32 = 32;
/// `max_bytes` of a pull that does not say.
pub const DEFAULT_PULL_BYTES: u32 = 1 << 20;
/// How many max-size messages a send body may hold.
const SEND_BATCH_MESSAGES: usize = 64;
/// Ceiling of a send body however large `max_message_size` is, so one
/// request cannot pin hundreds of megabytes.
const MAX_SEND_BODY: usize = 32 << 20;
/// Limit of JSON bodies: they are a few names and numbers.
pub(super) const JSON_BODY_LIMIT: usize = 64 << 10;

/// Largest half-send body: one message of `max_message_size` (a wire frame
/// is no larger than its log record) and the batch header.
pub fn half_body_limit(config: &BrokerConfig) -> usize {
    wire::HEADER_LEN + config.max_message_size
}

/// Largest send body the API accepts for a broker with `config`: room for
/// 64 messages of `max_message_size`, capped at 32 MiB but never below one
/// max-size message (a wire frame is no larger than its log record).
pub fn send_body_limit(config: &BrokerConfig) -> usize {
    let one = config.max_message_size;
    wire::HEADER_LEN
        + one
            .saturating_mul(SEND_BATCH_MESSAGES)
            .min(MAX_SEND_BODY)
            .max(one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_body_limit_holds_a_max_size_message_and_is_bounded() {
        let mut config = BrokerConfig::new("/tmp/x");
        config.max_message_size = 16 * 1024;
        assert_eq!(send_body_limit(&config), wire::HEADER_LEN + 64 * 16 * 1024);
        config.max_message_size = 64 << 20;
        assert_eq!(send_body_limit(&config), wire::HEADER_LEN + (64 << 20));
        config.max_message_size = 4 << 20;
        assert_eq!(send_body_limit(&config), wire::HEADER_LEN + MAX_SEND_BODY);
    }
}
