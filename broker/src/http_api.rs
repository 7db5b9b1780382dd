//! The broker's HTTP API: the library served by the process that embeds it.
//!
//! [`router()`] turns a [`Broker`](crate::Broker) into an axum [`Router`](axum::Router) whose routes all
//! live under `/broker/`, so it merges into the host's own router (the
//! seckill service serves its API and its broker from one port). The
//! remote side is [`crate::BrokerHttpClient`], which speaks exactly this.
//!
//! **Access.** Every route needs the broker's key,
//! `Authorization: Bearer <key>` ([`ApiAccess`]): only the services hold
//! it. Check-back URLs must also match the operator's allow-list.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | `POST` | `/broker/topics` | JSON [`CreateTopic`] | 201 (new) / 200 (same count) JSON [`TopicConfig`](crate::TopicConfig) |
//! | `GET` | `/broker/topics` | – | JSON list of [`TopicInfo`] with per-queue min/max offsets |
//! | `GET` | `/broker/topics/{topic}` | – | JSON [`TopicInfo`] |
//! | `POST` | `/broker/topics/{topic}/messages?queue=&key_hash=&wait=` | batch ([`wire`](crate::wire)) | 200 (durable) / 202 (`wait=false`) JSON [`SendResponse`] |
//! | `GET` | `/broker/pull?group=&topic=&queue=&offset=&max_messages=&max_bytes=&hold_ms=` | – | batch ([`wire`](crate::wire)), long-polled |
//! | `POST` | `/broker/pull` | JSON [`PullParams`] | batch ([`wire`](crate::wire)), long-polled |
//! | `POST` | `/broker/offsets` | JSON [`CommitOffset`] | 200 JSON [`CommitOffset`] |
//! | `GET` | `/broker/offsets?group=&topic=&queue=` | – | JSON [`CommittedOffset`] (`offset` null if none) |
//! | `GET` | `/broker/groups` | – | JSON list of [`GroupInfo`] |
//! | `PUT` | `/broker/groups/{group}/members/{member}` | JSON [`JoinGroup`] | JSON [`Assignment`](crate::Assignment) (join) |
//! | `POST` | `/broker/groups/{group}/members/{member}/heartbeat` | – | JSON [`Assignment`](crate::Assignment) |
//! | `DELETE` | `/broker/groups/{group}/members/{member}` | – | 204 (leave) |
//! | `GET` | `/broker/stats/queues?topic=` | – | JSON list of [`QueueStats`](crate::QueueStats) |
//! | `GET` | `/broker/stats/lag?group=&topic=` | – | JSON list of [`LagStats`](crate::LagStats) |
//! | `GET` | `/broker/messages?key=&topic=&max=` | – | batch ([`wire`](crate::wire)) of the messages with that key, oldest first |
//! | `GET` | `/broker/topics/{topic}/queues/{queue}/offset-at?timestamp_ms=` | – | JSON `{"offset": n}`: first message stored at or after the time |
//! | `POST` | `/broker/groups/{group}/offsets/reset` | JSON `{"topic", "to": "earliest"\|"latest"\|"timestamp", "timestamp_ms"}` | JSON list of `{"queue", "offset"}` |
//! | `POST` | `/broker/retention` | – | JSON [`crate::RetentionReport`] of a retention pass run now |
//! | `GET` | `/broker/recovery` | – | JSON [`RecoveryReport`](crate::RecoveryReport) |
//! | `POST` | `/broker/groups/{group}/retry` | JSON [`Reconsume`] | JSON [`RetryOutcome`](crate::RetryOutcome) |
//! | `GET` | `/broker/groups/{group}/dlq?offset=&max=` | – | batch ([`wire`](crate::wire)) of dead letters, as a pull answers |
//! | `POST` | `/broker/groups/{group}/dlq/{offset}/redrive` | – | JSON [`SendResult`](crate::SendResult) |
//! | `GET` | `/broker/transactions` | – | JSON [`OpenTransactions`] |
//! | `POST` | `/broker/transactions/{producer_group}/half?queue=` | batch ([`wire`](crate::wire)) of one message | JSON [`HalfSendResult`](crate::HalfSendResult) |
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
//! reads the message itself ([`Broker::reconsume_later`](crate::Broker::reconsume_later)). Dead letters are
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
//! network, so it must start with a prefix of the operator's allow-list
//! ([`ApiAccess::allow_checker_prefix`]; none by default). The static `checkers` segment wins over a producer group of
//! that name, so a producer group called `checkers` cannot send halves
//! (its sends answer 405).
//!
//! **Errors** are one type, [`ApiError`], answering
//! `{"error": "<message>", "code": "<code>"}`:
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `bad_request` | unparsable query, path, JSON syntax or message batch |
//! | 401 | `unauthorized` | no `Authorization: Bearer` key |
//! | 403 | `forbidden` | another key; a checker URL outside the allow-list |
//! | 400 | `invalid_argument`, `invalid_message`, `invalid_topic` | the broker refuses the values |
//! | 404 | `topic_not_found`, `queue_not_found`, `unknown_member` | no such thing (an unknown member should join again) |
//! | 405 | `method_not_allowed` | a route that exists, with another method |
//! | 409 | `topic_conflict`, `group_mode_conflict` | exists with other settings |
//! | 409 | `fenced`, `offset_backwards` | a commit from a member that does not own the queue now, or below the committed offset (stop consuming the queue) |
//! | 409 | `offset_owner_limit` | a commit under a new offset owner when the broker keeps offsets for as many owners as it will |
//! | 413 | `payload_too_large`, `message_too_large` | body over the route limit, record over `max_message_size` |
//! | 415 | `unsupported_media_type` | a send that is not a message batch, JSON without its content type |
//! | 422 | `unprocessable` | valid JSON with missing or mistyped fields |
//! | 503 | `shutting_down`, `storage_failed`, `flush_timeout` | the broker cannot take the write now |
//! | 500 | `internal`, `corruption` | I/O or store faults: logged in full, answered without details |
//!
//! Store faults carry file paths and OS errors; those go to the log
//! (`tracing::error!`), never into a response body.
//!
//! The module is split by job, one file each: `limits` (body and pull
//! caps), `access` (the key and the allow-list), `json` (the shapes above), `errors` ([`ApiError`]), `extract`
//! (state and extractors), `router`, and the handlers by area:
//! `messages` (topics, sends, pulls, lookups by key), `groups` (offsets,
//! groups, retry and dead letters), `transactions` and `admin` (stats,
//! recovery, retention).

mod access;
mod admin;
pub(crate) mod checker;
pub(crate) mod client;
mod errors;
mod extract;
mod groups;
mod json;
mod limits;
mod messages;
mod router;
mod transactions;

pub use access::{ApiAccess, MIN_API_KEY_LEN};
pub use errors::ApiError;
pub use json::{
    CheckAnswer, CheckerRegistration, CommitOffset, CommittedOffset, CreateTopic, DeadLetterQuery,
    EndTransaction, EndTransactionResponse, ErrorBody, GroupInfo, HalfParams, JoinGroup,
    OffsetQuery, OpenTransactions, PullParams, QueueOffset, QueueOffsets, Reconsume,
    RegisterChecker, ResetOffsets, SendParams, SendResponse, StatsQuery, TopicInfo,
};
pub use limits::{
    DEFAULT_PULL_BYTES, DEFAULT_PULL_MESSAGES, MAX_PULL_BYTES, MAX_PULL_MESSAGES, half_body_limit,
    send_body_limit,
};
pub use router::router;
