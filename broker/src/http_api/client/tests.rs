//! Unit tests of the HTTP client: URLs, and errors coming back typed.

use super::*;

/// A test key: no deployment uses it.
const KEY: &str = "test-only broker key 0123456789abcdef";

fn body(code: &str) -> ErrorBody {
    ErrorBody {
        error: "something".into(),
        code: code.into(),
    }
}

#[test]
fn unknown_member_comes_back_typed() {
    let context = Context {
        member: Some(("g", "m")),
        ..Context::default()
    };
    assert!(matches!(
        error_from_body(StatusCode::NOT_FOUND, body("unknown_member"), context),
        BrokerError::UnknownMember { group, member } if group == "g" && member == "m"
    ));
}

#[test]
fn other_errors_keep_the_servers_message_and_code() {
    let e = error_from_body(
        StatusCode::CONFLICT,
        body("topic_conflict"),
        Context::default(),
    );
    assert_eq!(
        e.to_string(),
        "remote broker: something (topic_conflict, HTTP 409)"
    );
}

#[test]
fn fencing_errors_come_back_typed() {
    let backwards = BrokerError::OffsetBackwards {
        committed: 39,
        requested: 32,
    };
    let answer = ErrorBody {
        error: backwards.to_string(),
        code: "offset_backwards".into(),
    };
    assert!(matches!(
        error_from_body(StatusCode::CONFLICT, answer, Context::default()),
        BrokerError::OffsetBackwards {
            committed: 39,
            requested: 32
        }
    ));
    let fenced = ErrorBody {
        error: BrokerError::Fenced("it belongs to \"b\" now".into()).to_string(),
        code: "fenced".into(),
    };
    assert!(matches!(
        error_from_body(StatusCode::CONFLICT, fenced, Context::default()),
        BrokerError::Fenced(m) if m == "it belongs to \"b\" now"
    ));
}

#[test]
fn urls_keep_a_prefix_and_encode_segments() {
    let client = BrokerHttpClient::new("http://127.0.0.1:1/api/", KEY).unwrap();
    let url = client
        .url(&["broker", "groups", "g/1", "members", "h:1 x"])
        .unwrap();
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:1/api/broker/groups/g%2F1/members/h:1%20x"
    );
    assert!(BrokerHttpClient::new("not a url", KEY).is_err());
    assert!(BrokerHttpClient::new("mailto:x@y", KEY).is_err());
}
