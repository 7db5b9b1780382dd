//! Consumer-group offsets after a rebalance: commits are fenced by the
//! queue's current owner and the generation of its assignment, and a
//! committed offset never goes backwards except through an explicit reset
//! (issue 11: `orders/7` committed 39 → 32 with both workers up).

use broker::{Broker, BrokerError, ConsumeMode, JoinRequest, Message, OffsetReset};

use crate::helpers::{body, small_config};

fn join(broker: &Broker, member: &str) -> broker::Assignment {
    broker
        .join_group(&JoinRequest {
            group: "g".into(),
            member: member.into(),
            mode: ConsumeMode::Clustering,
            topics: vec!["t".into()],
        })
        .unwrap()
}

/// A commit of `member`, consuming under the assignment of `generation`.
fn commit_as(
    broker: &Broker,
    member: &str,
    generation: u64,
    queue_id: u32,
    offset: u64,
) -> broker::Result<()> {
    broker.commit_offset_fenced("g", member, generation, "t", queue_id, offset)
}

async fn broker_with_messages(dir: &std::path::Path) -> Broker {
    let broker = Broker::open(small_config(dir)).unwrap();
    broker.create_topic("t", 4).unwrap();
    for queue in 0..4 {
        for n in 0..10 {
            broker
                .put(queue, vec![Message::new("t", body(n))])
                .await
                .unwrap();
        }
    }
    broker
}

#[tokio::test]
async fn issue_11_a_stale_owners_lower_commit_after_a_rebalance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_messages(dir.path()).await;
    let on_2 = || broker.committed_offset("g", "t", 2);

    // a owns every queue and commits queue 2 up to 5.
    let a = join(&broker, "a");
    assert!(a.queues.iter().any(|q| q.topic == "t" && q.queue_id == 2));
    commit_as(&broker, "a", a.generation, 2, 5).unwrap();

    // b joins and takes queues 2 and 3; a has not heartbeated yet, so its
    // task on queue 2 still runs. b consumes from 5 and commits 8.
    let b = join(&broker, "b");
    assert!(b.queues.iter().any(|q| q.topic == "t" && q.queue_id == 2));
    commit_as(&broker, "b", b.generation, 2, 8).unwrap();
    assert_eq!(on_2(), Some(8));

    // a's stale task commits what it consumed meanwhile: refused, lower or
    // not, and the offset stays where the owner put it.
    let stale = commit_as(&broker, "a", a.generation, 2, 6);
    assert!(matches!(stale, Err(BrokerError::Fenced(_))), "{stale:?}");
    assert_eq!(on_2(), Some(8), "the committed offset went backwards");
    let stale = commit_as(&broker, "a", a.generation, 2, 9);
    assert!(matches!(stale, Err(BrokerError::Fenced(_))), "{stale:?}");
    assert_eq!(on_2(), Some(8));
    // Without a member the commit is refused too: the group is consuming.
    assert!(matches!(
        broker.commit_offset("g", "t", 2, 3),
        Err(BrokerError::Fenced(_))
    ));
    assert_eq!(on_2(), Some(8));

    // The owner itself cannot lower its offset either.
    assert!(matches!(
        commit_as(&broker, "b", b.generation, 2, 7),
        Err(BrokerError::OffsetBackwards {
            committed: 8,
            requested: 7
        })
    ));
    // a keeps its own queues, under its old assignment too.
    commit_as(&broker, "a", a.generation, 0, 4).unwrap();
    assert_eq!(on_2(), Some(8));
}

#[tokio::test]
async fn issue_11_a_queue_lost_and_won_back_fences_the_old_task_and_a_reset_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_messages(dir.path()).await;
    let a = join(&broker, "a");
    commit_as(&broker, "a", a.generation, 2, 5).unwrap();
    let b = join(&broker, "b");
    commit_as(&broker, "b", b.generation, 2, 8).unwrap();
    broker.leave_group("g", "b").unwrap();

    // a owns queue 2 again, but only since the leave: the task that
    // consumed it under a's first assignment is still fenced.
    let stale = commit_as(&broker, "a", a.generation, 2, 9);
    assert!(matches!(stale, Err(BrokerError::Fenced(_))), "{stale:?}");
    let again = broker.heartbeat("g", "a").unwrap();
    assert!(again.generation > b.generation);
    commit_as(&broker, "a", again.generation, 2, 9).unwrap();
    assert_eq!(broker.committed_offset("g", "t", 2), Some(9));

    // An explicit reset is the one way back, and it fences every task that
    // read its offset before it.
    let moved = broker
        .reset_offsets("g", "t", OffsetReset::Earliest)
        .unwrap();
    assert!(moved.contains(&(2, 0)));
    assert_eq!(broker.committed_offset("g", "t", 2), Some(0));
    let stale = commit_as(&broker, "a", again.generation, 2, 10);
    assert!(matches!(stale, Err(BrokerError::Fenced(_))), "{stale:?}");
    assert_eq!(broker.committed_offset("g", "t", 2), Some(0));
    let after = broker.heartbeat("g", "a").unwrap();
    commit_as(&broker, "a", after.generation, 2, 1).unwrap();
    assert_eq!(broker.committed_offset("g", "t", 2), Some(1));

    // A member that left cannot commit at all.
    assert!(matches!(
        commit_as(&broker, "b", b.generation, 3, 9),
        Err(BrokerError::UnknownMember { .. })
    ));
}

#[tokio::test]
async fn issue_11_fenced_commits_over_http_answer_409_and_come_back_typed() {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use broker::{ConsumerApi, QueueSelector};

    use crate::http_helpers::{expect_error, spawn_app};

    let app = spawn_app().await;
    app.client.create_topic("t", 2).await.unwrap();
    let sent: Vec<Message> = (0..4).map(|n| Message::new("t", body(n))).collect();
    app.client
        .send(&sent, QueueSelector::Queue(0))
        .await
        .unwrap();
    let api: Arc<dyn ConsumerApi> = Arc::new(app.client.clone());
    let join = |member: &str| JoinRequest {
        group: "g".into(),
        member: member.into(),
        mode: ConsumeMode::Clustering,
        topics: vec!["t".into()],
    };
    let a = api.join_group(&join("a")).await.unwrap();
    api.commit_offset_fenced("g", "a", a.generation, "t", 0, 3)
        .await
        .unwrap();
    let b = api.join_group(&join("b")).await.unwrap();
    let a_now = api.heartbeat("g", "a").await.unwrap();
    // Queue 0 stays a's ("a" sorts first); b cannot commit it, nor can the
    // group without a member, nor a lower offset.
    let stale = api
        .commit_offset_fenced("g", "b", b.generation, "t", 0, 4)
        .await;
    assert!(matches!(stale, Err(BrokerError::Fenced(_))), "{stale:?}");
    let back = api
        .commit_offset_fenced("g", "a", a_now.generation, "t", 0, 2)
        .await;
    assert!(
        matches!(
            back,
            Err(BrokerError::OffsetBackwards {
                committed: 3,
                requested: 2
            })
        ),
        "{back:?}"
    );
    let unfenced = app
        .post_json(
            "/broker/offsets",
            &serde_json::json!({"group": "g", "topic": "t", "queue": 0, "offset": 4}),
        )
        .await;
    expect_error(unfenced, StatusCode::CONFLICT, "fenced").await;
    let half = app
        .post_json(
            "/broker/offsets",
            &serde_json::json!({"group": "g", "topic": "t", "queue": 0, "offset": 4, "member": "a"}),
        )
        .await;
    expect_error(half, StatusCode::BAD_REQUEST, "invalid_argument").await;
    assert_eq!(app.broker.committed_offset("g", "t", 0), Some(3));
    api.commit_offset_fenced("g", "a", a_now.generation, "t", 0, 4)
        .await
        .unwrap();
    assert_eq!(app.broker.committed_offset("g", "t", 0), Some(4));
}

/// Issue 11, "stop consuming a queue as soon as it is lost": a member's
/// pull of a queue that went to another member is refused, so its task
/// stops before writing anything more it would have pulled — not only at
/// its next commit or heartbeat.
#[tokio::test]
async fn issue_11_a_stale_owners_pull_after_a_rebalance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_messages(dir.path()).await;
    let fenced_pull = |member: &str, generation: u64| broker::PullRequest {
        group: "g".into(),
        topic: "t".into(),
        queue_id: 2,
        offset: 0,
        max_messages: 32,
        max_bytes: 1 << 20,
        hold_ms: 0,
        tags: None,
        fence: Some(broker::PullFence {
            member: member.into(),
            generation,
        }),
    };
    let a = join(&broker, "a");
    let pulled = broker.pull(&fenced_pull("a", a.generation)).await.unwrap();
    assert_eq!(pulled.messages.len(), 10, "the owner pulls");

    let b = join(&broker, "b");
    assert!(b.queues.iter().any(|q| q.topic == "t" && q.queue_id == 2));
    let stale = broker.pull(&fenced_pull("a", a.generation)).await;
    assert!(matches!(stale, Err(BrokerError::Fenced(_))), "{stale:?}");
    let owner = broker.pull(&fenced_pull("b", b.generation)).await.unwrap();
    assert_eq!(owner.messages.len(), 10, "the new owner pulls");
    let stranger = broker.pull(&fenced_pull("c", b.generation)).await;
    assert!(
        matches!(stranger, Err(BrokerError::UnknownMember { .. })),
        "{stranger:?}"
    );
}
