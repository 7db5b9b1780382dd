//! A [`TransactionChecker`] that asks a remote producer over HTTP.
//!
//! A producer in this process registers a checker object with
//! [`crate::Broker::register_checker`]; a producer in another process
//! registers a URL instead (`PUT /broker/transactions/checkers/{group}`,
//! see [`crate::http_api`]), and the broker asks that URL through an
//! [`HttpTransactionChecker`] whenever one of the group's transactions has
//! stayed open past the transaction timeout.
//!
//! **The request** is a `POST` to the URL whose body is a message batch in
//! the format of [`crate::wire`] (`application/x-flashsale-batch`) holding
//! exactly one message: the real one, as it will be delivered on commit
//! (real topic, key, tags, properties and body, not the half-topic copy).
//! Three headers say which transaction it is:
//!
//! | header | value |
//! |---|---|
//! | `x-half-offset` | the half offset (the transaction id the producer got from its half send) |
//! | `x-producer-group` | the producer group |
//! | `x-queue-id` | the queue of the real topic the message goes to on commit |
//!
//! **The answer** is JSON [`crate::http_api::CheckAnswer`]:
//! `{"state": "commit" | "rollback" | "unknown"}`.
//!
//! **Every failure is an unknown answer** — a refused connection, no
//! answer within [`HttpTransactionChecker::TIMEOUT`], a non-2xx status, a
//! redirect, a body over 64 KiB or one that is not that JSON. This is the
//! safe reading: an unknown answer changes nothing but the check count, so
//! the broker asks again after its check interval (the producer may be
//! restarting), and once the maximum number of checks has gone unanswered
//! it rolls the transaction back, as RocketMQ does. Guessing "commit" could
//! deliver an order whose stock was never reserved; guessing "rollback" on
//! the first hiccup could drop one whose stock was. Each failure is logged
//! at `warn` with the half offset, the group and the URL (without its
//! credentials or query, which may hold secrets).
//!
//! The broker asks one transaction at a time, so the timeout is kept short
//! (3 s, under the broker's own 5 s limit on a check): a dead producer
//! slows the other groups' checks by at most that much per open
//! transaction. Redirects are not followed: the registered URL is the one
//! asked, nothing else.
//!
//! `https://` URLs are accepted, but the workspace builds `reqwest` without
//! a TLS feature, so until one is enabled every check against such a URL
//! fails at connect time and counts as unknown (logged, as above).

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::redirect::Policy;
use reqwest::{Client, Url};

use super::json::CheckAnswer;
use crate::error::{BrokerError, Result};
use crate::types::{HalfMessage, TransactionChecker, TransactionState};
use crate::wire;

/// Largest answer body read from a checker; a JSON state is a few bytes.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Asks a producer's HTTP endpoint about its open transactions (see the
/// module doc for the request and answer). Cheap to clone.
#[derive(Clone)]
pub struct HttpTransactionChecker {
    url: Url,
    /// `url` without user info, query or fragment: what the logs show.
    display_url: String,
    http: Client,
}

impl fmt::Debug for HttpTransactionChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the full URL: it may carry credentials.
        f.debug_struct("HttpTransactionChecker")
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

/// Why a check-back over HTTP got no usable answer.
#[derive(Debug, thiserror::Error)]
enum CheckFailure {
    #[error("cannot encode the half message: {0}")]
    Encode(#[from] wire::WireError),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer body over {MAX_ANSWER_BYTES} bytes")]
    AnswerTooLarge,
    #[error("answer is not {{\"state\": \"commit\"|\"rollback\"|\"unknown\"}}: {0}")]
    BadAnswer(String),
}

impl HttpTransactionChecker {
    /// Header carrying the half offset (the transaction id).
    pub const HALF_OFFSET_HEADER: &'static str = "x-half-offset";
    /// Header carrying the producer group.
    pub const PRODUCER_GROUP_HEADER: &'static str = "x-producer-group";
    /// Header carrying the real destination queue.
    pub const QUEUE_ID_HEADER: &'static str = "x-queue-id";
    /// How long a check may take, connection included, before it counts as
    /// unknown.
    pub const TIMEOUT: Duration = Duration::from_secs(3);

    /// A checker asking `url`, which must be an absolute `http://` or
    /// `https://` URL with a host.
    pub fn new(url: &str) -> Result<Self> {
        let url = Self::validate_url(url)?;
        let http = Client::builder()
            .timeout(Self::TIMEOUT)
            .connect_timeout(Self::TIMEOUT)
            .redirect(Policy::none())
            .build()
            .map_err(|e| BrokerError::Remote(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpTransactionChecker {
            display_url: redacted(&url),
            url,
            http,
        })
    }

    /// Parses and checks a checker URL: absolute, `http` or `https`, with a
    /// host. The error names what is wrong, for a 400 answer.
    pub fn validate_url(url: &str) -> Result<Url> {
        let invalid = |why: String| BrokerError::InvalidArgument(format!("checker URL: {why}"));
        let parsed = Url::parse(url).map_err(|e| invalid(format!("cannot parse {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme {:?} is not supported; use http:// or https://",
                parsed.scheme()
            )));
        }
        if parsed.cannot_be_a_base() || parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host".into()));
        }
        Ok(parsed)
    }

    /// The URL this checker asks.
    pub fn url(&self) -> &Url {
        &self.url
    }

    async fn ask(&self, half: &HalfMessage) -> Result<TransactionState, CheckFailure> {
        let body = wire::encode_send_batch(std::slice::from_ref(&half.message))?;
        let mut response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, wire::CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(Self::HALF_OFFSET_HEADER, half.half_offset.to_string())
            .header(Self::PRODUCER_GROUP_HEADER, half.producer_group.as_str())
            .header(Self::QUEUE_ID_HEADER, half.queue_id.to_string())
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(CheckFailure::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
        {
            return Err(CheckFailure::AnswerTooLarge);
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CheckFailure::AnswerTooLarge);
            }
            answer.extend_from_slice(&chunk);
        }
        let answer: CheckAnswer =
            serde_json::from_slice(&answer).map_err(|e| CheckFailure::BadAnswer(e.to_string()))?;
        Ok(answer.state)
    }
}

#[async_trait]
impl TransactionChecker for HttpTransactionChecker {
    async fn check(&self, half: &HalfMessage) -> TransactionState {
        match self.ask(half).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(
                    half_offset = half.half_offset,
                    producer_group = %half.producer_group,
                    url = %self.display_url,
                    %error,
                    "transaction check-back over HTTP failed; counting it as unknown"
                );
                TransactionState::Unknown
            }
        }
    }
}

/// A transport error with its causes, without the URL (reqwest puts the
/// full URL, credentials and all, into its message).
fn transport(e: reqwest::Error) -> CheckFailure {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    CheckFailure::Transport(text)
}

/// `url` without user info, query or fragment.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    // Both only fail for URLs that cannot have credentials.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Message;

    #[test]
    fn only_absolute_http_urls_with_a_host_are_accepted() {
        for good in [
            "http://127.0.0.1:9000/check",
            "https://producer.internal/tx?token=x",
            "http://[::1]:80",
        ] {
            HttpTransactionChecker::new(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "ftp://x",
            "not a url",
            "",
            "/relative/path",
            "mailto:someone@example.com",
            "file:///etc/passwd",
            "http://",
        ] {
            let error = HttpTransactionChecker::new(bad).unwrap_err();
            assert!(
                matches!(&error, BrokerError::InvalidArgument(m) if m.starts_with("checker URL")),
                "{bad:?}: {error:?}"
            );
        }
    }

    #[test]
    fn debug_and_logs_hide_credentials_and_query() {
        let checker =
            HttpTransactionChecker::new("http://user:secret@10.0.0.1:8080/check?token=abc#f")
                .unwrap();
        let shown = format!("{checker:?}");
        assert!(shown.contains("http://10.0.0.1:8080/check"), "{shown}");
        assert!(
            !shown.contains("secret") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(!shown.contains("user"), "{shown}");
    }

    #[tokio::test]
    async fn an_unreachable_checker_answers_unknown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let checker = HttpTransactionChecker::new(&format!("http://{addr}/check")).unwrap();
        let half = HalfMessage {
            half_offset: 7,
            producer_group: "seckill".into(),
            queue_id: 0,
            message: Message::new("orders", "order 1"),
            stored_at_ms: 0,
        };
        assert_eq!(checker.check(&half).await, TransactionState::Unknown);
    }
}
