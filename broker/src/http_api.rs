//! The broker's HTTP API: the library served by the process that embeds it.
//!
//! [`router`] turns a [`Broker`] into an axum [`Router`] whose routes all
//! live under `/broker/`, so it merges into the host's own router (the
//! seckill service serves its API and its broker from one port). The
//! remote side is [`crate::BrokerHttpClient`], which speaks exactly this.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | `POST` | `/broker/topics` | JSON [`CreateTopic`] | 201 (new) / 200 (same count) JSON [`TopicConfig`] |
//! | `GET` | `/broker/topics` | – | JSON list of [`TopicInfo`] with per-queue min/max offsets |
//! | `GET` | `/broker/topics/{topic}` | – | JSON [`TopicInfo`] |
//! | `POST` | `/broker/topics/{topic}/messages?queue=&key_hash=&wait=` | batch ([`wire`]) | 200 (durable) / 202 (`wait=false`) JSON [`SendResponse`] |
//! | `GET` | `/broker/pull?group=&topic=&queue=&offset=&max_messages=&max_bytes=&hold_ms=` | – | batch ([`wire`]), long-polled |
//! | `POST` | `/broker/pull` | JSON [`PullParams`] | batch ([`wire`]), long-polled |
//! | `POST` | `/broker/offsets` | JSON [`CommitOffset`] | 200 JSON [`CommitOffset`] |
//! | `GET` | `/broker/offsets?group=&topic=&queue=` | – | JSON [`CommittedOffset`] (`offset` null if none) |
//! | `GET` | `/broker/groups` | – | JSON list of [`GroupInfo`] |
//! | `PUT` | `/broker/groups/{group}/members/{member}` | JSON [`JoinGroup`] | JSON [`Assignment`] (join) |
//! | `POST` | `/broker/groups/{group}/members/{member}/heartbeat` | – | JSON [`Assignment`] |
//! | `DELETE` | `/broker/groups/{group}/members/{member}` | – | 204 (leave) |
//! | `GET` | `/broker/stats/queues?topic=` | – | JSON list of [`QueueStats`] |
//! | `GET` | `/broker/stats/lag?group=&topic=` | – | JSON list of [`LagStats`] |
//! | `GET` | `/broker/messages?key=&topic=&max=` | – | batch ([`wire`]) of the messages with that key, oldest first |
//! | `GET` | `/broker/topics/{topic}/queues/{queue}/offset-at?timestamp_ms=` | – | JSON `{"offset": n}`: first message stored at or after the time |
//! | `POST` | `/broker/groups/{group}/offsets/reset` | JSON `{"topic", "to": "earliest"\|"latest"\|"timestamp", "timestamp_ms"}` | JSON list of `{"queue", "offset"}` |
//! | `POST` | `/broker/retention` | – | JSON [`crate::RetentionReport`] of a retention pass run now |
//! | `GET` | `/broker/recovery` | – | JSON [`RecoveryReport`] |
//! | `POST` | `/broker/groups/{group}/retry` | JSON [`Reconsume`] | JSON [`RetryOutcome`] |
//! | `GET` | `/broker/groups/{group}/dlq?offset=&max=` | – | batch ([`wire`]) of dead letters, as a pull answers |
//! | `POST` | `/broker/groups/{group}/dlq/{offset}/redrive` | – | JSON [`SendResult`] |
//! | `GET` | `/broker/transactions` | – | JSON [`OpenTransactions`] |
//! | `POST` | `/broker/transactions/{producer_group}/half?queue=` | batch ([`wire`]) of one message | JSON [`HalfSendResult`] |
//! | `POST` | `/broker/transactions/{half_offset}/end` | JSON [`EndTransaction`] | JSON [`EndTransactionResponse`] |
//! | `PUT` | `/broker/transactions/checkers/{producer_group}` | JSON [`RegisterChecker`] | JSON [`CheckerRegistration`] |
//!
//! Message batches travel in the binary format of [`crate::wire`]
//! (`application/x-flashsale-batch`) rather than JSON: bodies are bytes,
//! and a pull is the hot path. Everything else is JSON.
//!
//! **Sends.** The batch's messages must all name the topic in the path.
//! Without `queue` the batch goes to the next queue in turn (one append);
//! with `key_hash=true` each message goes to the queue its key hashes to —
//! the same hash as [`crate::QueueSelector::KeyHash`] — so one key always
//! lands on one queue and stays ordered; a batch spanning several queues is
//! appended once per queue, concurrently, so the appends share one flush.
//! If one of those appends fails the others may still have been stored:
//! like any failed send, the producer retries and consumers deduplicate.
//! `wait=false` is RocketMQ's one-way send: the answer comes once the batch
//! is appended, before it is durable. The body is limited to
//! [`send_body_limit`], so a client cannot make the server buffer more than
//! a bounded batch.
//!
//! **Pulls** are long polls: held up to `hold_ms` (the broker caps it at
//! its `max_long_poll`) until the queue grows past `offset`. The server also
//! caps `max_messages` at [`MAX_PULL_MESSAGES`] and `max_bytes` at
//! [`MAX_PULL_BYTES`], so one answer's size is bounded; a capped pull
//! simply returns fewer messages and the next offset to resume from.
//!
//! **Retry and dead letters.** A consumer that failed on a message gives
//! back its position (`topic`, `queue`, `offset`), not its body: the broker
//! reads the message itself ([`Broker::reconsume_later`]). Dead letters are
//! listed in the pull answer's format from the group's one DLQ queue; a
//! group that never dead-lettered anything has an empty list (listing does
//! not create its DLQ topic). A redrive sends one dead letter back to its
//! original topic and queue.
//!
//! **Transactions.** A half send carries exactly one message (the body is
//! limited to [`half_body_limit`]), whose own topic is the real destination
//! and `queue` its queue there; the answer's
//! `half_offset` is what `end` takes. `end` accepts `commit` or `rollback`
//! (`unknown` is refused: it is a checker's answer, not an ending). A
//! remote producer registers a URL per producer group for the broker's
//! check-backs; the broker then asks it through an
//! [`crate::HttpTransactionChecker`] (request and answer documented there),
//! replacing any checker the group had. The URL is called from the broker's
//! network, so this route belongs on the same trusted network as the rest
//! of the API. The static `checkers` segment wins over a producer group of
//! that name, so a producer group called `checkers` cannot send halves
//! (its sends answer 405).
//!
//! **Errors** are one type, [`ApiError`], answering
//! `{"error": "<message>", "code": "<code>"}`:
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `bad_request` | unparsable query, path, JSON syntax or message batch |
//! | 400 | `invalid_argument`, `invalid_message`, `invalid_topic` | the broker refuses the values |
//! | 404 | `topic_not_found`, `queue_not_found`, `unknown_member` | no such thing (an unknown member should join again) |
//! | 405 | `method_not_allowed` | a route that exists, with another method |
//! | 409 | `topic_conflict`, `group_mode_conflict` | exists with other settings |
//! | 413 | `payload_too_large`, `message_too_large` | body over the route limit, record over `max_message_size` |
//! | 415 | `unsupported_media_type` | a send that is not a message batch, JSON without its content type |
//! | 422 | `unprocessable` | valid JSON with missing or mistyped fields |
//! | 503 | `shutting_down`, `storage_failed`, `flush_timeout` | the broker cannot take the write now |
//! | 500 | `internal`, `corruption` | I/O or store faults: logged in full, answered without details |
//!
//! Store faults carry file paths and OS errors; those go to the log
//! (`tracing::error!`), never into a response body.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::http_checker::HttpTransactionChecker;
use crate::record::Message;
use crate::system_topics::dlq_topic;
use crate::types::{
    Assignment, ConsumeMode, HalfSendResult, JoinRequest, LagStats, PullRequest, PullResult,
    PullStatus, QueueStats, RecoveryReport, RetryOutcome, SendResult, TopicConfig,
    TransactionState,
};
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
const JSON_BODY_LIMIT: usize = 64 << 10;

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

/// The broker's routes, all under `/broker/`. Merge it into a host router
/// (`Router::merge`) or serve it alone.
pub fn router(broker: Broker) -> Router {
    let send_limit = send_body_limit(broker.config());
    let half_limit = half_body_limit(broker.config());
    let state = ApiState {
        broker,
        round_robin: Arc::new(AtomicU32::new(0)),
    };
    let member = "/broker/groups/{group}/members/{member}";
    let group = "/broker/groups/{group}";
    Router::new()
        .route("/broker/topics", get(list_topics).post(create_topic))
        .route("/broker/topics/{topic}", get(get_topic))
        .route(
            "/broker/topics/{topic}/messages",
            // The route's own limit wins over the router-wide JSON limit
            // below: the inner layer sets the limit last.
            post(send).layer(DefaultBodyLimit::max(send_limit)),
        )
        .route("/broker/pull", get(pull_query).post(pull_json))
        .route("/broker/offsets", get(committed_offset).post(commit_offset))
        .route("/broker/groups", get(list_groups))
        .route(member, put(join_group).delete(leave_group))
        .route(&format!("{member}/heartbeat"), post(heartbeat))
        .route("/broker/stats/queues", get(queue_stats))
        .route("/broker/stats/lag", get(lag))
        .route("/broker/recovery", get(recovery))
        .route("/broker/messages", get(messages_by_key))
        .route(
            "/broker/topics/{topic}/queues/{queue}/offset-at",
            get(offset_for_timestamp),
        )
        .route(&format!("{group}/offsets/reset"), post(reset_offsets))
        .route("/broker/retention", post(apply_retention))
        .route(&format!("{group}/retry"), post(reconsume_later))
        .route(&format!("{group}/dlq"), get(dead_letters))
        .route(&format!("{group}/dlq/{{offset}}/redrive"), post(redrive))
        .route("/broker/transactions", get(open_transactions))
        .route(
            "/broker/transactions/{producer_group}/half",
            post(send_half).layer(DefaultBodyLimit::max(half_limit)),
        )
        .route(
            "/broker/transactions/{half_offset}/end",
            post(end_transaction),
        )
        .route(
            "/broker/transactions/checkers/{producer_group}",
            put(register_checker),
        )
        // axum answers a wrong method with an empty 405; ours is JSON too.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .with_state(state)
}

#[derive(Debug, Clone)]
struct ApiState {
    broker: Broker,
    /// Next queue for sends without `queue` or `key_hash`.
    round_robin: Arc<AtomicU32>,
}

// ---------------------------------------------------------------------------
// JSON shapes. Public so the client (and anyone else) speaks the same ones.

/// Body of `POST /broker/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Number of queues.
    pub queues: u32,
}

/// Offsets of one queue in a [`TopicInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffsets {
    /// Queue id.
    pub queue_id: u32,
    /// First offset still present.
    pub min_offset: u64,
    /// Visible length of the queue.
    pub max_offset: u64,
}

/// A topic with its queues' offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Number of queues.
    pub queues: u32,
    /// Offsets of each queue, by queue id.
    pub offsets: Vec<QueueOffsets>,
}

/// Query of a send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    /// Send every message to this queue.
    #[serde(default, alias = "queue_id")]
    pub queue: Option<u32>,
    /// Send each message to the queue its key hashes to.
    #[serde(default)]
    pub key_hash: bool,
    /// Wait for durability (default); `false` answers once appended.
    #[serde(default = "default_true")]
    pub wait: bool,
}

fn default_true() -> bool {
    true
}

/// Answer to a send: one result per message, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    /// Where each message landed.
    pub results: Vec<SendResult>,
}

/// Parameters of a pull, as a query string or a JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullParams {
    /// Consumer group pulling (for tracing and stats).
    #[serde(default)]
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    #[serde(alias = "queue_id")]
    pub queue: u32,
    /// First queue offset wanted.
    pub offset: u64,
    /// Most messages to return; default [`DEFAULT_PULL_MESSAGES`], capped
    /// at [`MAX_PULL_MESSAGES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u32>,
    /// Byte budget; default [`DEFAULT_PULL_BYTES`], capped at
    /// [`MAX_PULL_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u32>,
    /// Longest hold in ms when nothing is there (default 0: answer at once;
    /// the broker caps it at its `max_long_poll`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
    /// Tag filter (`a || b`, `*`); absent = every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
}

impl PullParams {
    /// The broker request these parameters ask for, with the server's caps
    /// applied.
    pub fn to_request(&self) -> PullRequest {
        PullRequest {
            group: self.group.clone(),
            topic: self.topic.clone(),
            queue_id: self.queue,
            offset: self.offset,
            max_messages: self
                .max_messages
                .unwrap_or(DEFAULT_PULL_MESSAGES)
                .min(MAX_PULL_MESSAGES),
            max_bytes: self
                .max_bytes
                .unwrap_or(DEFAULT_PULL_BYTES)
                .min(MAX_PULL_BYTES),
            hold_ms: self.hold_ms.unwrap_or(0),
            tags: self.tags.clone(),
        }
    }
}

impl From<&PullRequest> for PullParams {
    fn from(request: &PullRequest) -> Self {
        PullParams {
            group: request.group.clone(),
            topic: request.topic.clone(),
            queue: request.queue_id,
            offset: request.offset,
            max_messages: Some(request.max_messages),
            max_bytes: Some(request.max_bytes),
            hold_ms: Some(request.hold_ms),
            tags: request.tags.clone(),
        }
    }
}

/// A committed offset: body of `POST /broker/offsets` and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitOffset {
    /// Offset owner: the group, or `group%member` in broadcasting mode.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    #[serde(alias = "queue_id")]
    pub queue: u32,
    /// Everything below this offset is consumed.
    pub offset: u64,
}

/// Query of `GET /broker/offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetQuery {
    /// Offset owner.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    #[serde(alias = "queue_id")]
    pub queue: u32,
}

/// Answer of `GET /broker/offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Offset owner.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue: u32,
    /// The committed offset; `null` when nothing was committed.
    pub offset: Option<u64>,
}

/// Body of a join (`PUT /broker/groups/{group}/members/{member}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinGroup {
    /// Consumption mode; default clustering.
    #[serde(default = "default_mode")]
    pub mode: ConsumeMode,
    /// Topics to consume.
    pub topics: Vec<String>,
}

fn default_mode() -> ConsumeMode {
    ConsumeMode::Clustering
}

/// A consumer group in `GET /broker/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Group name.
    pub group: String,
    /// Its mode.
    pub mode: ConsumeMode,
    /// Live members, sorted.
    pub members: Vec<String>,
}

/// Filters of the stats endpoints (absent = all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Only this offset owner (lag only).
    #[serde(default)]
    pub group: Option<String>,
    /// Only this topic.
    #[serde(default)]
    pub topic: Option<String>,
}

/// Body of `POST /broker/groups/{group}/retry`: the position of the
/// message the group failed to process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconsume {
    /// Topic the message was pulled from (a retry topic too).
    pub topic: String,
    /// Queue id.
    #[serde(alias = "queue_id")]
    pub queue: u32,
    /// Queue offset of the message.
    pub offset: u64,
    /// Why it failed, kept in the message's history (cut at 1 KiB).
    #[serde(default)]
    pub reason: String,
}

/// Query of `GET /broker/groups/{group}/dlq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// First DLQ offset wanted (default 0).
    #[serde(default)]
    pub offset: u64,
    /// Most dead letters to return; default [`DEFAULT_PULL_MESSAGES`],
    /// capped at [`MAX_PULL_MESSAGES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// Query of a half send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HalfParams {
    /// Queue of the message's topic it goes to on commit.
    #[serde(alias = "queue_id")]
    pub queue: u32,
}

/// Body of `POST /broker/transactions/{half_offset}/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndTransaction {
    /// `commit` or `rollback` (`unknown` is refused with 400).
    pub state: TransactionState,
}

/// Answer of `POST /broker/transactions/{half_offset}/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndTransactionResponse {
    /// Where the real message landed; `null` after a rollback.
    pub committed: Option<SendResult>,
}

/// Body of `PUT /broker/transactions/checkers/{producer_group}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterChecker {
    /// `http://` or `https://` URL the broker POSTs check-backs to.
    pub url: String,
}

/// Answer of a checker registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerRegistration {
    /// The producer group.
    pub producer_group: String,
    /// The URL it is now asked at, as parsed.
    pub url: String,
}

/// Answer of `GET /broker/transactions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTransactions {
    /// Half messages neither committed nor rolled back yet.
    pub open: usize,
}

/// What a producer's check-back endpoint answers
/// ([`crate::HttpTransactionChecker`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// The transaction's state as the producer knows it.
    pub state: TransactionState,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs (see the module doc's table).
    pub code: String,
}

// ---------------------------------------------------------------------------
// Errors.

/// Every error the API answers with; the body is an [`ErrorBody`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The broker refused or failed: 400, 404, 409, 413, 500 or 503
    /// according to the variant (table in the module doc).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// 400 Bad Request: a query, path, JSON text or message batch that
    /// cannot be parsed.
    #[error("{0}")]
    BadRequest(String),
    /// 405 Method Not Allowed: the path exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413 Payload Too Large: the body is over the route's limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 Unsupported Media Type: the body's content type is not the
    /// route's.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 Unprocessable Entity: valid JSON with missing or mistyped fields.
    #[error("{0}")]
    Unprocessable(String),
    /// 500 Internal Server Error: a fault of the server itself; logged, and
    /// answered without details.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The machine-readable `code` of the body.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use BrokerError as B;
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            // Exhaustive on purpose: a new broker error must choose its status.
            ApiError::Broker(e) => match e {
                B::TopicNotFound(_) => (StatusCode::NOT_FOUND, "topic_not_found"),
                B::QueueNotFound { .. } => (StatusCode::NOT_FOUND, "queue_not_found"),
                B::UnknownMember { .. } => (StatusCode::NOT_FOUND, "unknown_member"),
                B::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
                B::InvalidMessage(_) => (StatusCode::BAD_REQUEST, "invalid_message"),
                B::InvalidTopic { .. } => (StatusCode::BAD_REQUEST, "invalid_topic"),
                B::TopicConflict { .. } => (StatusCode::CONFLICT, "topic_conflict"),
                B::GroupModeConflict { .. } => (StatusCode::CONFLICT, "group_mode_conflict"),
                B::MessageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large"),
                B::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                B::StorageFailed(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_failed"),
                B::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
                B::FlushTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "flush_timeout"),
                B::Corruption { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corruption"),
                B::Io { .. } | B::Layout(_) | B::StoreLocked(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal")
                }
                B::Remote(_) => (StatusCode::BAD_GATEWAY, "remote"),
            },
        }
    }

    /// The message shown to the caller. Errors whose text may carry file
    /// paths or OS details get a fixed sentence instead.
    fn public_message(&self) -> String {
        use BrokerError as B;
        match self {
            ApiError::Internal(_) => "internal server error; see the broker log".into(),
            ApiError::Broker(B::StorageFailed(_)) => {
                "broker storage failed; it refuses writes until restarted".into()
            }
            ApiError::Broker(B::Corruption { .. }) => {
                "the broker's store is corrupted; see the broker log".into()
            }
            ApiError::Broker(B::Io { .. } | B::Layout(_) | B::StoreLocked(_)) => {
                "internal storage error; see the broker log".into()
            }
            ApiError::Broker(B::Remote(_)) => "an upstream broker failed".into(),
            other => other.to_string(),
        }
    }

    /// An extractor's rejection, keeping the status axum chose for it.
    fn rejected(status: StatusCode, text: String) -> ApiError {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(text),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(text),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(text),
            s if s.is_server_error() => ApiError::Internal(text),
            _ => ApiError::BadRequest(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            // The full error (paths, OS errors) goes to the log only.
            tracing::error!(code, status = status.as_u16(), error = %self, "broker API request failed");
        } else {
            tracing::debug!(code, status = status.as_u16(), error = %self, "broker API request refused");
        }
        let body = ErrorBody {
            error: self.public_message(),
            code: code.to_owned(),
        };
        (status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        ApiError::rejected(rejection.status(), rejection.body_text())
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

// ---------------------------------------------------------------------------
// Extractors whose rejections are `ApiError`s, so a bad request gets the
// same JSON error body as a broker error instead of axum's plain text.

#[derive(Debug)]
struct ApiJson<T>(T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

#[derive(Debug)]
struct ApiQuery<T>(T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

#[derive(Debug)]
struct ApiPath<T>(T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------
// Topics.

async fn create_topic(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<CreateTopic>,
) -> ApiResult<(StatusCode, Json<TopicConfig>)> {
    let broker = state.broker.clone();
    let existed = broker.topic(&body.name).is_some();
    // Creating a topic writes and fsyncs its config file: keep that off
    // the async workers.
    let config = tokio::task::spawn_blocking(move || broker.create_topic(&body.name, body.queues))
        .await
        .map_err(|e| ApiError::Internal(format!("topic creation task failed: {e}")))??;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(config)))
}

async fn list_topics(State(state): State<ApiState>) -> Json<Vec<TopicInfo>> {
    let mut offsets = offsets_by_topic(&state.broker);
    let topics = state
        .broker
        .topics()
        .into_iter()
        .map(|topic| TopicInfo {
            offsets: offsets.remove(&topic.name).unwrap_or_default(),
            name: topic.name,
            queues: topic.queues,
        })
        .collect();
    Json(topics)
}

async fn get_topic(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TopicInfo>> {
    let topic = state
        .broker
        .topic(&name)
        .ok_or(BrokerError::TopicNotFound(name))?;
    let offsets = offsets_by_topic(&state.broker)
        .remove(&topic.name)
        .unwrap_or_default();
    Ok(Json(TopicInfo {
        name: topic.name,
        queues: topic.queues,
        offsets,
    }))
}

fn offsets_by_topic(broker: &Broker) -> BTreeMap<String, Vec<QueueOffsets>> {
    let mut by_topic: BTreeMap<String, Vec<QueueOffsets>> = BTreeMap::new();
    for q in broker.queue_stats() {
        by_topic.entry(q.topic).or_default().push(QueueOffsets {
            queue_id: q.queue_id,
            min_offset: q.min_offset,
            max_offset: q.max_offset,
        });
    }
    by_topic
}

// ---------------------------------------------------------------------------
// Sends.

/// Messages bound for one queue, with their positions in the request.
type QueueBatch = (u32, Vec<usize>, Vec<Message>);

async fn send(
    State(state): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(params): ApiQuery<SendParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<SendResponse>)> {
    require_content_type(&headers, wire::CONTENT_TYPE)?;
    let messages = wire::decode_send_batch(body?)
        .map_err(|e| ApiError::BadRequest(format!("malformed message batch: {e}")))?;
    if messages.is_empty() {
        return Err(ApiError::BadRequest(
            "a send needs at least one message".into(),
        ));
    }
    if let Some(other) = messages.iter().find(|m| m.topic != topic) {
        return Err(ApiError::BadRequest(format!(
            "a message for topic {:?} was sent to topic {topic:?}; a batch carries one topic",
            other.topic
        )));
    }
    let broker = &state.broker;
    let queues = match broker.topic(&topic) {
        Some(config) => config.queues,
        // The broker creates the topic on the first append, as a local
        // producer's send would.
        None if broker.config().auto_create_topics => broker.config().default_queues,
        None => return Err(BrokerError::TopicNotFound(topic).into()),
    };
    let count = messages.len();
    let batches: Vec<QueueBatch> = match (params.queue, params.key_hash) {
        (Some(_), true) => {
            return Err(ApiError::BadRequest(
                "`queue` and `key_hash=true` exclude each other".into(),
            ));
        }
        (Some(queue), false) => vec![(queue, (0..count).collect(), messages)],
        (None, false) => {
            let queue = state.round_robin.fetch_add(1, Ordering::Relaxed) % queues;
            vec![(queue, (0..count).collect(), messages)]
        }
        (None, true) => split_by_key_hash(messages, queues),
    };

    let mut placed: Vec<(usize, SendResult)> = Vec::with_capacity(count);
    let mut place = |positions: Vec<usize>, results: Vec<SendResult>| -> ApiResult<()> {
        if positions.len() != results.len() {
            return Err(ApiError::Internal(format!(
                "the broker returned {} results for {} messages",
                results.len(),
                positions.len()
            )));
        }
        placed.extend(positions.into_iter().zip(results));
        Ok(())
    };
    let status = if !params.wait {
        for (queue, positions, batch) in batches {
            place(positions, broker.put_nowait(queue, batch)?)?;
        }
        StatusCode::ACCEPTED
    } else if batches.len() == 1 {
        let (queue, positions, batch) = batches.into_iter().next().expect("one batch");
        place(positions, broker.put(queue, batch).await?)?;
        StatusCode::OK
    } else {
        // One task per queue so every append is written before any waits
        // for its flush; group commit then covers them with one fdatasync.
        // A dropped request leaves the tasks running: each append is
        // all-or-nothing on its own.
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|(queue, positions, batch)| {
                let broker = broker.clone();
                (
                    positions,
                    tokio::spawn(async move { broker.put(queue, batch).await }),
                )
            })
            .collect();
        for (positions, task) in tasks {
            let results = task
                .await
                .map_err(|e| ApiError::Internal(format!("send task failed: {e}")))??;
            place(positions, results)?;
        }
        StatusCode::OK
    };
    placed.sort_unstable_by_key(|(position, _)| *position);
    let results = placed.into_iter().map(|(_, result)| result).collect();
    Ok((status, Json(SendResponse { results })))
}

/// Groups messages by the queue their key hashes to (the hash of
/// [`crate::QueueSelector::KeyHash`]), keeping their order within a queue.
fn split_by_key_hash(messages: Vec<Message>, queues: u32) -> Vec<QueueBatch> {
    let mut by_queue: BTreeMap<u32, (Vec<usize>, Vec<Message>)> = BTreeMap::new();
    for (position, message) in messages.into_iter().enumerate() {
        let queue = crate::queue_for_key(&message.key, queues);
        let entry = by_queue.entry(queue).or_default();
        entry.0.push(position);
        entry.1.push(message);
    }
    by_queue
        .into_iter()
        .map(|(queue, (positions, batch))| (queue, positions, batch))
        .collect()
}

fn require_content_type(headers: &HeaderMap, expected: &str) -> ApiResult<()> {
    let found = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Ignore parameters (`; charset=…`) and case, as media types allow.
    let essence = found.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected content type {expected}, got {:?}",
            found
        )))
    }
}

// ---------------------------------------------------------------------------
// Pulls.

async fn pull_query(
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<PullParams>,
) -> ApiResult<Response> {
    pull(&state.broker, &params).await
}

async fn pull_json(
    State(state): State<ApiState>,
    ApiJson(params): ApiJson<PullParams>,
) -> ApiResult<Response> {
    pull(&state.broker, &params).await
}

async fn pull(broker: &Broker, params: &PullParams) -> ApiResult<Response> {
    // If the client goes away during the hold, axum drops this future and
    // the wait ends with it: nothing is left parked.
    let result = broker.pull(&params.to_request()).await?;
    batch_response(&result)
}

/// A pull answer as a [`wire`] batch.
fn batch_response(result: &PullResult) -> ApiResult<Response> {
    let body = wire::encode_pull_result(result)
        .map_err(|e| ApiError::Internal(format!("encoding a pull answer: {e}")))?;
    let content_type = HeaderValue::from_static(wire::CONTENT_TYPE);
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

// ---------------------------------------------------------------------------
// Offsets.

async fn commit_offset(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<CommitOffset>,
) -> ApiResult<Json<CommitOffset>> {
    state
        .broker
        .commit_offset(&body.group, &body.topic, body.queue, body.offset)?;
    Ok(Json(body))
}

async fn committed_offset(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<OffsetQuery>,
) -> Json<CommittedOffset> {
    let offset = state
        .broker
        .committed_offset(&query.group, &query.topic, query.queue);
    Json(CommittedOffset {
        group: query.group,
        topic: query.topic,
        queue: query.queue,
        offset,
    })
}

// ---------------------------------------------------------------------------
// Consumer groups.

async fn join_group(
    State(state): State<ApiState>,
    ApiPath((group, member)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<JoinGroup>,
) -> ApiResult<Json<Assignment>> {
    let request = JoinRequest {
        group,
        member,
        mode: body.mode,
        topics: body.topics,
    };
    Ok(Json(state.broker.join_group(&request)?))
}

async fn heartbeat(
    State(state): State<ApiState>,
    ApiPath((group, member)): ApiPath<(String, String)>,
) -> ApiResult<Json<Assignment>> {
    Ok(Json(state.broker.heartbeat(&group, &member)?))
}

async fn leave_group(
    State(state): State<ApiState>,
    ApiPath((group, member)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.broker.leave_group(&group, &member)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_groups(State(state): State<ApiState>) -> Json<Vec<GroupInfo>> {
    let groups = state
        .broker
        .groups()
        .into_iter()
        .map(|(group, mode, members)| GroupInfo {
            group,
            mode,
            members,
        })
        .collect();
    Json(groups)
}

// ---------------------------------------------------------------------------
// Stats and recovery.

async fn queue_stats(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Json<Vec<QueueStats>> {
    let stats = state
        .broker
        .queue_stats()
        .into_iter()
        .filter(|q| query.topic.as_ref().is_none_or(|t| *t == q.topic))
        .collect();
    Json(stats)
}

async fn lag(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Json<Vec<LagStats>> {
    let mut lag: Vec<LagStats> = state
        .broker
        .lag()
        .into_iter()
        .filter(|l| query.topic.as_ref().is_none_or(|t| *t == l.topic))
        .filter(|l| query.group.as_ref().is_none_or(|g| *g == l.group))
        .collect();
    lag.sort_by(|a, b| (&a.group, &a.topic, a.queue_id).cmp(&(&b.group, &b.topic, b.queue_id)));
    Json(lag)
}

async fn recovery(State(state): State<ApiState>) -> Json<RecoveryReport> {
    Json(state.broker.recovery().clone())
}

// ---------------------------------------------------------------------------
// Retry and dead letters.

async fn reconsume_later(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<Reconsume>,
) -> ApiResult<Json<RetryOutcome>> {
    require_stored(&state.broker, &body.topic, body.queue, body.offset)?;
    let outcome = state
        .broker
        .reconsume_later(&group, &body.topic, body.queue, body.offset, &body.reason)
        .await?;
    Ok(Json(outcome))
}

async fn dead_letters(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> ApiResult<Response> {
    let max = query
        .max
        .unwrap_or(DEFAULT_PULL_MESSAGES)
        .min(MAX_PULL_MESSAGES);
    let result = if state.broker.topic(&dlq_topic(&group)).is_none() {
        // Nothing was ever dead-lettered: answer as an empty queue would,
        // without creating the topic (a GET must not make state).
        crate::validate_topic_name(&dlq_topic(&group))?;
        PullResult {
            status: if query.offset == 0 {
                PullStatus::NoNewMessages
            } else {
                PullStatus::OffsetTooBig
            },
            messages: Vec::new(),
            next_offset: 0,
            min_offset: 0,
            max_offset: 0,
        }
    } else {
        state.broker.dead_letters(&group, query.offset, max).await?
    };
    batch_response(&result)
}

async fn redrive(
    State(state): State<ApiState>,
    ApiPath((group, offset)): ApiPath<(String, u64)>,
) -> ApiResult<Json<SendResult>> {
    require_stored(&state.broker, &dlq_topic(&group), 0, offset)?;
    Ok(Json(
        state.broker.redrive_dead_letter(&group, offset).await?,
    ))
}

/// Refuses an offset outside what `topic`/`queue` holds with a clear 400
/// before the broker reads it (the store's own error names its files). An
/// unknown topic or queue is left to the broker, which names it.
fn require_stored(broker: &Broker, topic: &str, queue: u32, offset: u64) -> ApiResult<()> {
    let stats = broker
        .queue_stats()
        .into_iter()
        .find(|q| q.topic == topic && q.queue_id == queue);
    match stats {
        Some(q) if offset < q.min_offset || offset >= q.max_offset => {
            Err(BrokerError::InvalidArgument(format!(
                "no message at offset {offset} of {topic}/{queue} (it holds offsets {}..{})",
                q.min_offset, q.max_offset
            ))
            .into())
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Transactions.

async fn send_half(
    State(state): State<ApiState>,
    ApiPath(producer_group): ApiPath<String>,
    ApiQuery(params): ApiQuery<HalfParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<HalfSendResult>> {
    require_content_type(&headers, wire::CONTENT_TYPE)?;
    let mut messages = wire::decode_send_batch(body?)
        .map_err(|e| ApiError::BadRequest(format!("malformed message batch: {e}")))?;
    if messages.len() != 1 {
        return Err(ApiError::BadRequest(format!(
            "a half send carries exactly one message, this batch has {}",
            messages.len()
        )));
    }
    let message = messages.pop().expect("one message");
    let result = state
        .broker
        .send_half(&producer_group, params.queue, message)
        .await?;
    Ok(Json(result))
}

async fn end_transaction(
    State(state): State<ApiState>,
    ApiPath(half_offset): ApiPath<u64>,
    ApiJson(body): ApiJson<EndTransaction>,
) -> ApiResult<Json<EndTransactionResponse>> {
    if body.state == TransactionState::Unknown {
        // Refused before the broker sees it, so the transaction stays
        // exactly as it was.
        return Err(BrokerError::InvalidArgument(
            "a transaction ends with \"commit\" or \"rollback\", not \"unknown\"".into(),
        )
        .into());
    }
    let committed = state
        .broker
        .end_transaction(half_offset, body.state)
        .await?;
    Ok(Json(EndTransactionResponse { committed }))
}

async fn register_checker(
    State(state): State<ApiState>,
    ApiPath(producer_group): ApiPath<String>,
    ApiJson(body): ApiJson<RegisterChecker>,
) -> ApiResult<Json<CheckerRegistration>> {
    // The group travels back to the checker in a header, so it must be
    // one: printable ASCII.
    if producer_group.is_empty()
        || !producer_group
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(BrokerError::InvalidArgument(format!(
            "producer group {producer_group:?} must be non-empty printable ASCII \
             (it is sent in the {} header)",
            HttpTransactionChecker::PRODUCER_GROUP_HEADER
        ))
        .into());
    }
    let checker = HttpTransactionChecker::new(&body.url)?;
    let url = checker.url().to_string();
    state
        .broker
        .register_checker(&producer_group, Arc::new(checker));
    tracing::info!(producer_group, "transaction checker registered over HTTP");
    Ok(Json(CheckerRegistration {
        producer_group,
        url,
    }))
}

async fn open_transactions(State(state): State<ApiState>) -> Json<OpenTransactions> {
    Json(OpenTransactions {
        open: state.broker.open_transactions(),
    })
}

// ---------------------------------------------------------------------------
// Lookups: by key, by time; offset reset; retention.

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: String,
    topic: Option<String>,
    max: Option<u32>,
}

async fn messages_by_key(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<KeyQuery>,
) -> ApiResult<Response> {
    let max = query
        .max
        .unwrap_or(DEFAULT_PULL_MESSAGES)
        .min(MAX_PULL_MESSAGES) as usize;
    let messages = state
        .broker
        .messages_by_key(&query.key, query.topic.as_deref(), max)?;
    let status = if messages.is_empty() {
        PullStatus::NoNewMessages
    } else {
        PullStatus::Found
    };
    batch_response(&PullResult {
        status,
        messages,
        next_offset: 0,
        min_offset: 0,
        max_offset: 0,
    })
}

#[derive(Debug, Deserialize)]
struct TimeQuery {
    timestamp_ms: i64,
}

async fn offset_for_timestamp(
    State(state): State<ApiState>,
    ApiPath((topic, queue)): ApiPath<(String, u32)>,
    ApiQuery(query): ApiQuery<TimeQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let offset = state
        .broker
        .offset_for_timestamp(&topic, queue, query.timestamp_ms)?;
    Ok(Json(serde_json::json!({ "offset": offset })))
}

/// Body of `POST /broker/groups/{group}/offsets/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsets {
    /// Topic whose queues move.
    pub topic: String,
    /// Where to.
    #[serde(flatten)]
    pub to: crate::OffsetReset,
}

/// One queue's new offset after a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffset {
    /// Queue id.
    pub queue: u32,
    /// New committed offset.
    pub offset: u64,
}

async fn reset_offsets(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<ResetOffsets>,
) -> ApiResult<Json<Vec<QueueOffset>>> {
    let moved = state.broker.reset_offsets(&group, &body.topic, body.to)?;
    Ok(Json(
        moved
            .into_iter()
            .map(|(queue, offset)| QueueOffset { queue, offset })
            .collect(),
    ))
}

async fn apply_retention(State(state): State<ApiState>) -> ApiResult<Json<crate::RetentionReport>> {
    Ok(Json(state.broker.apply_retention()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_body_hides_store_internals() {
        let io = ApiError::Broker(BrokerError::io(
            "write /var/lib/broker/commitlog/00000000000000000000",
            std::io::Error::other("disk on fire"),
        ));
        assert_eq!(io.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!io.public_message().contains("/var/lib"));
        let failed = ApiError::Broker(BrokerError::StorageFailed(
            "fdatasync /var/lib/broker/x: EIO".into(),
        ));
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!failed.public_message().contains("/var/lib"));
    }

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

    #[test]
    fn pull_params_are_capped() {
        let params = PullParams {
            group: "g".into(),
            topic: "t".into(),
            queue: 1,
            offset: 2,
            max_messages: Some(u32::MAX),
            max_bytes: Some(u32::MAX),
            hold_ms: None,
            tags: None,
        };
        let request = params.to_request();
        assert_eq!(request.max_messages, MAX_PULL_MESSAGES);
        assert_eq!(request.max_bytes, MAX_PULL_BYTES);
        assert_eq!(request.hold_ms, 0);
    }

    #[test]
    fn key_hash_split_keeps_order_within_each_queue() {
        let messages: Vec<Message> = (0..20)
            .map(|i| Message::new("t", "x").with_key(format!("k{}", i % 5)))
            .collect();
        let batches = split_by_key_hash(messages.clone(), 4);
        let mut seen = Vec::new();
        for (queue, positions, batch) in batches {
            assert!(positions.windows(2).all(|w| w[0] < w[1]));
            for (position, message) in positions.iter().zip(&batch) {
                assert_eq!(&messages[*position], message);
                assert_eq!(crc32c::crc32c(message.key.as_bytes()) % 4, queue);
            }
            seen.extend(positions);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    }
}
