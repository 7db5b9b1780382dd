//! The routes: which handler answers which method and path, with the
//! body limit of each.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

use super::access::{ApiAccess, require_key};
use super::admin::{apply_retention, lag, queue_stats, recovery};
use super::errors::method_not_allowed;
use super::extract::ApiState;
use super::groups::{
    commit_offset, committed_offset, dead_letters, heartbeat, join_group, leave_group, list_groups,
    offset_for_timestamp, reconsume_later, redrive, reset_offsets,
};
use super::limits::{JSON_BODY_LIMIT, half_body_limit, send_body_limit};
use super::messages::{
    create_topic, get_topic, list_topics, messages_by_key, pull_json, pull_query, send,
};
use super::transactions::{end_transaction, open_transactions, register_checker, send_half};
use crate::broker::Broker;

/// The broker's routes, all under `/broker/` and all behind `access`'s
/// key. Merge it into a host router (`Router::merge`) or serve it alone.
pub fn router(broker: Broker, access: ApiAccess) -> Router {
    let access = Arc::new(access);
    let send_limit = send_body_limit(broker.config());
    let half_limit = half_body_limit(broker.config());
    let state = ApiState {
        broker,
        round_robin: Arc::new(AtomicU32::new(0)),
        access: Arc::clone(&access),
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
        // Outermost: nothing is read or parsed before the key is checked.
        .route_layer(axum::middleware::from_fn_with_state(access, require_key))
        .with_state(state)
}
