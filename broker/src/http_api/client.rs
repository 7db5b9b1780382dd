//! A client for a broker in another process, over its HTTP API
//! ([`crate::http_api`]).
//!
//! [`BrokerHttpClient`] implements [`ConsumerApi`] with the local broker's
//! semantics, so a consumer (the order worker) runs unchanged against a
//! [`crate::Broker`] in its own process or one behind a URL. Error answers
//! are turned back into [`BrokerError`]s: the variants a consumer acts on
//! come back as themselves — `UnknownMember` (join again), `TopicNotFound`,
//! `ShuttingDown` — and the rest as [`BrokerError::Remote`] carrying the
//! server's message and code. Transport failures (refused connection,
//! timeout) are `Remote` too.
//!
//! Timeouts: every call has 30 s, above the broker's default long-poll cap
//! (15 s) and sync-flush timeout (5 s); a pull gets its own hold plus 10 s,
//! so a long poll is never cut short by the client even when the server
//! allows longer holds.
//!
//! Producers get [`BrokerHttpClient::send`] and
//! [`BrokerHttpClient::send_oneway`] with the same queue selection as the
//! local [`crate::Producer`] (round robin and key hash are applied by the
//! server, which knows the topic's queue count), plus topic and stats
//! helpers.
//!
//! Retry, dead letters and transactions mirror the broker's methods of the
//! same names ([`crate::Broker::reconsume_later`],
//! [`crate::Broker::send_half`] …). The one difference: a remote producer
//! cannot hand the broker a checker object, so it registers a URL with
//! [`BrokerHttpClient::register_checker_url`] and answers check-backs
//! there ([`crate::HttpTransactionChecker`] documents the request).

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::checker::HttpTransactionChecker;
use super::json::{
    CommitOffset, CommittedOffset, CreateTopic, EndTransaction, EndTransactionResponse, ErrorBody,
    JoinGroup, OpenTransactions, PullParams, Reconsume, RegisterChecker, SendResponse, TopicInfo,
};
use crate::consumer::ConsumerApi;
use crate::error::{BrokerError, Result};
use crate::record::{Message, StoredMessage};
use crate::system_topics::dlq_topic;
use crate::types::{
    Assignment, HalfSendResult, JoinRequest, LagStats, PullRequest, PullResult, QueueSelector,
    QueueStats, RetryOutcome, SendResult, TopicConfig, TransactionState,
};
use crate::wire;

/// Timeout of every call but a pull's (which gets its hold plus
/// [`PULL_GRACE`]).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// What a pull's timeout adds to its hold: the server's own work and the
/// network.
const PULL_GRACE: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(2);
/// Longest connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Holds beyond this are treated as this when sizing a pull's timeout (the
/// broker caps holds far lower; this only keeps the arithmetic finite).
const MAX_HOLD: Duration = Duration::from_secs(3600);
/// How much of a non-JSON error body goes into the error message.
const ERROR_SNIPPET: usize = 200;

/// A broker reached over HTTP. Cheap to clone (the connection pool is
/// shared).
#[derive(Debug, Clone)]
pub struct BrokerHttpClient {
    base: Url,
    http: Client,
    /// `Bearer <broker key>`, sent with every call.
    authorization: reqwest::header::HeaderValue,
}

/// What a call was about, so an error body can be turned back into the
/// typed error the local broker would have returned.
#[derive(Debug, Default, Clone, Copy)]
struct Context<'a> {
    topic: Option<&'a str>,
    member: Option<(&'a str, &'a str)>,
}

impl BrokerHttpClient {
    /// A client for the broker at `base_url` (e.g. `http://10.0.0.5:8080`;
    /// a path prefix is kept, the API's `/broker/…` goes after it),
    /// presenting the broker's `key` on every call.
    pub fn new(base_url: &str, key: &str) -> Result<Self> {
        let http = Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // Below every port's idle timeout (5 s by default), so a pooled
            // connection is dropped here before the server closes it.
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .map_err(|e| BrokerError::Remote(format!("cannot build the HTTP client: {e}")))?;
        Self::with_client(base_url, key, http)
    }

    /// A client using a caller-built [`reqwest::Client`]; its timeout
    /// should exceed the longest pull hold (pulls set their own anyway).
    pub fn with_client(base_url: &str, key: &str, http: Client) -> Result<Self> {
        let mut authorization = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| {
                BrokerError::InvalidArgument("the broker key must be printable ASCII".into())
            })?;
        authorization.set_sensitive(true);
        let base = Url::parse(base_url).map_err(|e| {
            BrokerError::InvalidArgument(format!("bad broker URL {base_url:?}: {e}"))
        })?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(BrokerError::InvalidArgument(format!(
                "bad broker URL {base_url:?}: expected http://host:port"
            )));
        }
        Ok(BrokerHttpClient {
            base,
            http,
            authorization,
        })
    }

    /// The broker's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Sends a batch of messages of one topic and waits until the broker
    /// has made it as durable as its flush mode promises. Results come in
    /// the order of `messages`.
    pub async fn send(
        &self,
        messages: &[Message],
        queue: QueueSelector,
    ) -> Result<Vec<SendResult>> {
        self.send_batch(messages, queue, true).await
    }

    /// One-way send: the broker answers once the batch is appended, before
    /// it is durable.
    pub async fn send_oneway(
        &self,
        messages: &[Message],
        queue: QueueSelector,
    ) -> Result<Vec<SendResult>> {
        self.send_batch(messages, queue, false).await
    }

    async fn send_batch(
        &self,
        messages: &[Message],
        queue: QueueSelector,
        wait: bool,
    ) -> Result<Vec<SendResult>> {
        let topic = &messages
            .first()
            .ok_or_else(|| {
                BrokerError::InvalidArgument("a send needs at least one message".into())
            })?
            .topic;
        if messages.iter().any(|m| &m.topic != topic) {
            return Err(BrokerError::InvalidArgument(
                "every message of a batch must have the same topic".into(),
            ));
        }
        let body = wire::encode_send_batch(messages)
            .map_err(|e| BrokerError::InvalidMessage(e.to_string()))?;
        let mut url = self.url(&["broker", "topics", topic, "messages"])?;
        {
            let mut query = url.query_pairs_mut();
            match queue {
                QueueSelector::RoundRobin => {}
                QueueSelector::KeyHash => {
                    query.append_pair("key_hash", "true");
                }
                QueueSelector::Queue(id) => {
                    query.append_pair("queue", &id.to_string());
                }
            }
            if !wait {
                query.append_pair("wait", "false");
            }
        }
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, wire::CONTENT_TYPE)
            .body(body);
        let context = Context {
            topic: Some(topic),
            ..Context::default()
        };
        let response: SendResponse = self.json(request, context).await?;
        Ok(response.results)
    }

    /// Creates a topic (idempotent for the same queue count).
    pub async fn create_topic(&self, name: &str, queues: u32) -> Result<TopicConfig> {
        let body = CreateTopic {
            name: name.to_owned(),
            queues,
        };
        let request = self.http.post(self.url(&["broker", "topics"])?).json(&body);
        self.json(request, Context::default()).await
    }

    /// Every topic with its queues' offsets.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let request = self.http.get(self.url(&["broker", "topics"])?);
        self.json(request, Context::default()).await
    }

    /// Offsets of every queue.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        let request = self.http.get(self.url(&["broker", "stats", "queues"])?);
        self.json(request, Context::default()).await
    }

    /// Lag of every committed offset.
    pub async fn lag(&self) -> Result<Vec<LagStats>> {
        let request = self.http.get(self.url(&["broker", "stats", "lag"])?);
        self.json(request, Context::default()).await
    }

    /// Gives back the message at `topic`/`queue_id`/`queue_offset` that
    /// `group` failed to process: it goes to the group's retry topic, or to
    /// its dead-letter topic once its retries are spent.
    pub async fn reconsume_later(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
        reason: &str,
    ) -> Result<RetryOutcome> {
        let body = Reconsume {
            topic: topic.to_owned(),
            queue: queue_id,
            offset: queue_offset,
            reason: reason.to_owned(),
        };
        let url = self.url(&["broker", "groups", group, "retry"])?;
        let context = Context {
            topic: Some(topic),
            ..Context::default()
        };
        self.json(self.http.post(url).json(&body), context).await
    }

    /// Lists dead letters of `group` from `offset` (at most `max`; the
    /// server caps it), in the shape of a pull answer.
    pub async fn dead_letters(&self, group: &str, offset: u64, max: u32) -> Result<PullResult> {
        let mut url = self.url(&["broker", "groups", group, "dlq"])?;
        url.query_pairs_mut()
            .append_pair("offset", &offset.to_string())
            .append_pair("max", &max.to_string());
        self.batch(self.http.get(url), Context::default()).await
    }

    /// Sends the dead letter at `offset` of `group`'s DLQ back to its
    /// original topic and queue.
    pub async fn redrive_dead_letter(&self, group: &str, offset: u64) -> Result<SendResult> {
        let url = self.url(&[
            "broker",
            "groups",
            group,
            "dlq",
            &offset.to_string(),
            "redrive",
        ])?;
        let dlq = dlq_topic(group);
        let context = Context {
            topic: Some(&dlq),
            ..Context::default()
        };
        self.json(self.http.post(url), context).await
    }

    /// Stores `message` as a half message of `producer_group`, bound for
    /// queue `queue_id` of its topic, invisible to consumers until
    /// [`Self::end_transaction`] commits it (or a check-back does).
    pub async fn send_half(
        &self,
        producer_group: &str,
        queue_id: u32,
        message: &Message,
    ) -> Result<HalfSendResult> {
        let body = wire::encode_send_batch(std::slice::from_ref(message))
            .map_err(|e| BrokerError::InvalidMessage(e.to_string()))?;
        let mut url = self.url(&["broker", "transactions", producer_group, "half"])?;
        url.query_pairs_mut()
            .append_pair("queue", &queue_id.to_string());
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, wire::CONTENT_TYPE)
            .body(body);
        let context = Context {
            topic: Some(&message.topic),
            ..Context::default()
        };
        self.json(request, context).await
    }

    /// Commits or rolls back the transaction of the half message at
    /// `half_offset`. A commit returns where the real message landed.
    pub async fn end_transaction(
        &self,
        half_offset: u64,
        state: TransactionState,
    ) -> Result<Option<SendResult>> {
        if state == TransactionState::Unknown {
            // What the local broker says; no need to ask the remote one.
            return Err(BrokerError::InvalidArgument(
                "a transaction ends with commit or rollback, not unknown".into(),
            ));
        }
        let url = self.url(&["broker", "transactions", &half_offset.to_string(), "end"])?;
        let body = EndTransaction { state };
        let answer: EndTransactionResponse = self
            .json(self.http.post(url).json(&body), Context::default())
            .await?;
        Ok(answer.committed)
    }

    /// Registers `url` as the check-back endpoint of `producer_group`
    /// (replacing any checker it had): the broker POSTs each of the
    /// group's overdue transactions there. A URL the server would refuse is refused here, as
    /// [`BrokerError::InvalidArgument`].
    pub async fn register_checker_url(&self, producer_group: &str, url: &str) -> Result<()> {
        HttpTransactionChecker::validate_url(url)?;
        let endpoint = self.url(&["broker", "transactions", "checkers", producer_group])?;
        let body = RegisterChecker {
            url: url.to_owned(),
        };
        self.execute(self.http.put(endpoint).json(&body), Context::default())
            .await
            .map(drop)
    }

    /// Half messages neither committed nor rolled back yet.
    pub async fn open_transactions(&self) -> Result<usize> {
        let request = self.http.get(self.url(&["broker", "transactions"])?);
        let answer: OpenTransactions = self.json(request, Context::default()).await?;
        Ok(answer.open)
    }

    /// Messages whose key is `key` (optionally of one topic only), at most
    /// `max` (the server caps it).
    pub async fn messages_by_key(
        &self,
        key: &str,
        topic: Option<&str>,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        let mut url = self.url(&["broker", "messages"])?;
        {
            let mut pairs = url.query_pairs_mut();
            pairs
                .append_pair("key", key)
                .append_pair("max", &max.to_string());
            if let Some(topic) = topic {
                pairs.append_pair("topic", topic);
            }
        }
        let context = Context {
            topic,
            ..Context::default()
        };
        Ok(self.batch(self.http.get(url), context).await?.messages)
    }

    /// The base URL with `segments` appended, each percent-encoded (group
    /// and member names may hold any character).
    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| BrokerError::InvalidArgument(format!("bad broker URL {}", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends a request; a non-success answer becomes a [`BrokerError`].
    /// Commits an offset, fenced or not as `body` says.
    async fn post_offset(&self, body: &CommitOffset, context: Context<'_>) -> Result<()> {
        let request = self.http.post(self.url(&["broker", "offsets"])?).json(body);
        self.execute(request, context).await.map(drop)
    }

    async fn execute(&self, request: RequestBuilder, context: Context<'_>) -> Result<Response> {
        let response = request
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(transport_error)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(error_from_response(response, context).await)
        }
    }

    /// [`Self::execute`], then the answer's JSON body.
    async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        context: Context<'_>,
    ) -> Result<T> {
        let response = self.execute(request, context).await?;
        response
            .json()
            .await
            .map_err(|e| BrokerError::Remote(format!("unexpected answer: {}", with_sources(&e))))
    }

    /// [`Self::execute`], then the answer's message batch (a pull answer).
    async fn batch(&self, request: RequestBuilder, context: Context<'_>) -> Result<PullResult> {
        let response = self.execute(request, context).await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with(wire::CONTENT_TYPE) {
            return Err(BrokerError::Remote(format!(
                "a pull answered with content type {content_type:?}, not {}",
                wire::CONTENT_TYPE
            )));
        }
        let body = response.bytes().await.map_err(transport_error)?;
        wire::decode_pull_result(body)
            .map_err(|e| BrokerError::Remote(format!("malformed pull answer: {e}")))
    }
}

#[async_trait]
impl ConsumerApi for BrokerHttpClient {
    async fn send_by_key(&self, messages: Vec<Message>) -> Result<Vec<SendResult>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        BrokerHttpClient::send(self, &messages, QueueSelector::KeyHash).await
    }

    async fn reconsume_later(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
        reason: &str,
    ) -> Result<RetryOutcome> {
        BrokerHttpClient::reconsume_later(self, group, topic, queue_id, queue_offset, reason).await
    }

    async fn messages_by_key(
        &self,
        key: &str,
        topic: Option<&str>,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        BrokerHttpClient::messages_by_key(self, key, topic, max).await
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        BrokerHttpClient::queue_stats(self).await
    }

    async fn dead_letters(&self, group: &str, offset: u64, max: u32) -> Result<PullResult> {
        BrokerHttpClient::dead_letters(self, group, offset, max).await
    }

    async fn pull(&self, request: &PullRequest) -> Result<PullResult> {
        let hold = Duration::from_millis(request.hold_ms).min(MAX_HOLD);
        let http_request = self
            .http
            .post(self.url(&["broker", "pull"])?)
            .json(&PullParams::from(request))
            .timeout(hold + PULL_GRACE);
        let context = Context {
            topic: Some(&request.topic),
            ..Context::default()
        };
        self.batch(http_request, context).await
    }

    async fn commit_offset(
        &self,
        owner: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        let body = CommitOffset {
            group: owner.to_owned(),
            topic: topic.to_owned(),
            queue: queue_id,
            offset,
            member: None,
            generation: None,
        };
        let context = Context {
            topic: Some(topic),
            ..Context::default()
        };
        self.post_offset(&body, context).await
    }

    async fn commit_offset_fenced(
        &self,
        group: &str,
        member: &str,
        generation: u64,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        let body = CommitOffset {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue: queue_id,
            offset,
            member: Some(member.to_owned()),
            generation: Some(generation),
        };
        let context = Context {
            topic: Some(topic),
            member: Some((group, member)),
        };
        self.post_offset(&body, context).await
    }

    async fn committed_offset(
        &self,
        owner: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<Option<u64>> {
        let mut url = self.url(&["broker", "offsets"])?;
        url.query_pairs_mut()
            .append_pair("group", owner)
            .append_pair("topic", topic)
            .append_pair("queue", &queue_id.to_string());
        let context = Context {
            topic: Some(topic),
            ..Context::default()
        };
        let answer: CommittedOffset = self.json(self.http.get(url), context).await?;
        Ok(answer.offset)
    }

    async fn join_group(&self, request: &JoinRequest) -> Result<Assignment> {
        let url = self.url(&[
            "broker",
            "groups",
            &request.group,
            "members",
            &request.member,
        ])?;
        let body = JoinGroup {
            mode: request.mode,
            topics: request.topics.clone(),
        };
        // An unknown topic is only attributable when there is one topic.
        let topic = match request.topics.as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        };
        let context = Context {
            topic,
            member: Some((&request.group, &request.member)),
        };
        self.json(self.http.put(url).json(&body), context).await
    }

    async fn heartbeat(&self, group: &str, member: &str) -> Result<Assignment> {
        let url = self.url(&["broker", "groups", group, "members", member, "heartbeat"])?;
        let context = Context {
            member: Some((group, member)),
            ..Context::default()
        };
        self.json(self.http.post(url), context).await
    }

    async fn leave_group(&self, group: &str, member: &str) -> Result<()> {
        let url = self.url(&["broker", "groups", group, "members", member])?;
        let context = Context {
            member: Some((group, member)),
            ..Context::default()
        };
        self.execute(self.http.delete(url), context).await.map(drop)
    }
}

/// Turns an error answer back into the error the local broker would give.
async fn error_from_response(response: Response, context: Context<'_>) -> BrokerError {
    let status = response.status();
    let text = match response.text().await {
        Ok(text) => text,
        Err(e) => return transport_error(e),
    };
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => error_from_body(status, body, context),
        // Not our API's answer (a proxy, a wrong port): say what came back.
        Err(_) => {
            let snippet: String = text.chars().take(ERROR_SNIPPET).collect();
            BrokerError::Remote(format!("HTTP {status}: {snippet}"))
        }
    }
}

fn error_from_body(status: StatusCode, body: ErrorBody, context: Context<'_>) -> BrokerError {
    match (body.code.as_str(), context) {
        (
            "unknown_member",
            Context {
                member: Some((group, member)),
                ..
            },
        ) => BrokerError::UnknownMember {
            group: group.to_owned(),
            member: member.to_owned(),
        },
        (
            "topic_not_found",
            Context {
                topic: Some(topic), ..
            },
        ) => BrokerError::TopicNotFound(topic.to_owned()),
        ("shutting_down", _) => BrokerError::ShuttingDown,
        ("fenced", _) => BrokerError::Fenced(
            body.error
                .strip_prefix("fenced: ")
                .unwrap_or(&body.error)
                .to_owned(),
        ),
        ("offset_backwards", _) if offset_backwards(&body.error).is_some() => {
            let (requested, committed) = offset_backwards(&body.error).expect("just checked");
            BrokerError::OffsetBackwards {
                committed,
                requested,
            }
        }
        (code, _) => {
            BrokerError::Remote(format!("{} ({code}, HTTP {})", body.error, status.as_u16()))
        }
    }
}

/// The two offsets of [`BrokerError::OffsetBackwards`]'s message
/// ("offset R is below the committed offset C; …"): (requested, committed).
fn offset_backwards(message: &str) -> Option<(u64, u64)> {
    let words: Vec<&str> = message.split_whitespace().collect();
    let requested = words.get(1)?.parse().ok()?;
    let committed = words.get(7)?.trim_end_matches(';').parse().ok()?;
    Some((requested, committed))
}

fn transport_error(e: reqwest::Error) -> BrokerError {
    BrokerError::Remote(format!("request failed: {}", with_sources(&e)))
}

/// An error and its causes on one line: reqwest's own message rarely says
/// whether it was a refused connection or a timeout.
fn with_sources(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
