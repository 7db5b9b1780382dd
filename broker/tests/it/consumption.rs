//! Consumption: committed offsets across restarts, long polling, consumer
//! groups in clustering and broadcasting mode.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use broker::{Broker, ConsumeMode, JoinRequest, Message, PullRequest, PullStatus, QueueRef};

use crate::helpers::{body, pull_all, small_config};

fn pull_request(queue_id: u32, offset: u64, hold_ms: u64) -> PullRequest {
    PullRequest {
        group: "g".into(),
        topic: "t".into(),
        queue_id,
        offset,
        max_messages: 32,
        max_bytes: 1 << 20,
        hold_ms,
        tags: None,
        fence: None,
    }
}

#[tokio::test]
async fn committed_offsets_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 2).unwrap();
    for n in 0..6 {
        broker
            .put((n % 2) as u32, vec![Message::new("t", body(n))])
            .await
            .unwrap();
    }
    broker.commit_offset("g", "t", 0, 2).unwrap();
    broker.commit_offset("g", "t", 1, 3).unwrap();
    assert!(
        broker.commit_offset("g", "t", 1, 4).is_err(),
        "past the end"
    );
    broker.shutdown().await.unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    assert_eq!(broker.committed_offset("g", "t", 0), Some(2));
    assert_eq!(broker.committed_offset("g", "t", 1), Some(3));
    assert_eq!(broker.committed_offset("other", "t", 1), None);
    let lag: Vec<(u32, u64)> = broker
        .lag()
        .into_iter()
        .map(|l| (l.queue_id, l.lag))
        .collect();
    assert_eq!(lag, [(0, 1), (1, 0)]);
}

#[tokio::test]
async fn committed_offsets_survive_a_crash_once_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path());
    config.offset_persist_interval = Duration::from_millis(20);
    let broker = Broker::open(config.clone()).unwrap();
    broker.create_topic("t", 1).unwrap();
    for n in 0..4 {
        broker
            .put(0, vec![Message::new("t", body(n))])
            .await
            .unwrap();
    }
    broker.commit_offset("g", "t", 0, 3).unwrap();
    let file = dir.path().join("config/consumer_offsets.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&file).is_ok_and(|s| s.contains("\"offset\":3")) {
        assert!(Instant::now() < deadline, "offsets were never persisted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(broker); // crash
    let broker = Broker::open(config).unwrap();
    assert!(broker.recovery().crashed);
    assert_eq!(broker.committed_offset("g", "t", 0), Some(3));
}

/// Under paused time (async flush: no flusher thread the paused clock
/// cannot see), a pull held for 30 s returns at the virtual instant the
/// message arrives — 5 s — not at its hold. Virtual time moves only once
/// every task is idle, so the pull is certainly parked when the message
/// comes: no sleep stands in for synchronisation.
#[tokio::test(start_paused = true)]
async fn a_held_pull_returns_when_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path());
    config.flush = broker::FlushMode::async_default();
    let broker = Broker::open(config).unwrap();
    broker.create_topic("t", 1).unwrap();
    let started = tokio::time::Instant::now();
    let held = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let result = broker.pull(&pull_request(0, 0, 30_000)).await.unwrap();
            (result, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !held.is_finished(),
        "the pull is held while the queue is empty"
    );
    assert_eq!(broker.held_pulls("t", 0), 1);
    broker
        .put(0, vec![Message::new("t", "wake up")])
        .await
        .unwrap();
    let (result, elapsed) = held.await.unwrap();
    assert_eq!(elapsed, Duration::from_secs(5), "woken by the arrival");
    assert_eq!(result.status, PullStatus::Found);
    assert_eq!(&result.messages[0].message.body[..], b"wake up");
    assert_eq!(result.next_offset, 1);
    assert_eq!(broker.held_pulls("t", 0), 0);
}

#[tokio::test]
async fn a_held_pull_times_out_empty() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    let started = Instant::now();
    let result = broker.pull(&pull_request(0, 0, 200)).await.unwrap();
    assert_eq!(result.status, PullStatus::NoNewMessages);
    assert!(result.messages.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn pulls_respect_the_byte_budget_and_report_bad_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    for n in 0..10 {
        broker
            .put(0, vec![Message::new("t", vec![b'x'; 100 + n])])
            .await
            .unwrap();
    }
    let mut request = pull_request(0, 0, 0);
    request.max_bytes = 400;
    let result = broker.pull(&request).await.unwrap();
    assert_eq!(
        result.messages.len(),
        2,
        "two records of ~170 bytes fit in 400"
    );
    request.max_bytes = 1;
    assert_eq!(
        broker.pull(&request).await.unwrap().messages.len(),
        1,
        "at least one"
    );
    let result = broker.pull(&pull_request(0, 99, 0)).await.unwrap();
    assert_eq!(
        (result.status, result.next_offset),
        (PullStatus::OffsetTooBig, 10)
    );
    let mut request = pull_request(0, 0, 0);
    request.max_messages = 0;
    assert!(broker.pull(&request).await.is_err());
    request.topic = "missing".into();
    request.max_messages = 1;
    assert!(broker.pull(&request).await.is_err());
}

fn join(broker: &Broker, member: &str, mode: ConsumeMode) -> broker::Assignment {
    broker
        .join_group(&JoinRequest {
            group: "g".into(),
            member: member.into(),
            mode,
            topics: vec!["t".into()],
        })
        .unwrap()
}

fn assert_partition(assignments: &[Vec<QueueRef>], queues: u32) {
    let mut seen = Vec::new();
    for queues in assignments {
        seen.extend(queues.iter().map(|q| q.queue_id));
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..queues).collect::<Vec<_>>(),
        "every queue exactly once: {assignments:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn clustering_gives_every_queue_to_exactly_one_live_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path());
    config.member_expiry = Duration::from_secs(30);
    let broker = Broker::open(config).unwrap();
    broker.create_topic("t", 8).unwrap();
    let members = ["a", "b", "c"];
    for member in members {
        join(&broker, member, ConsumeMode::Clustering);
    }
    // Only the topic's queues: the group's retry queue goes to one member too.
    let current = |names: &[&str]| -> Vec<Vec<QueueRef>> {
        names
            .iter()
            .map(|m| {
                let queues = broker.heartbeat("g", m).unwrap().queues;
                queues.into_iter().filter(|q| q.topic == "t").collect()
            })
            .collect()
    };
    let three = current(&members);
    assert_partition(&three, 8);
    assert_eq!(three.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 2]);

    // A leaves: b and c take everything.
    broker.leave_group("g", "a").unwrap();
    assert_partition(&current(&["b", "c"]), 8);

    // c stops heartbeating and expires: b alone.
    tokio::time::advance(Duration::from_secs(20)).await;
    broker.heartbeat("g", "b").unwrap();
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_partition(&current(&["b"]), 8);
    assert!(broker.heartbeat("g", "c").is_err());

    // More members than queues: the extra ones idle, nobody shares.
    for n in 0..10 {
        join(&broker, &format!("m{n:02}"), ConsumeMode::Clustering);
    }
    let names: Vec<String> = (0..10)
        .map(|n| format!("m{n:02}"))
        .chain(["b".to_string()])
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let many = current(&refs);
    assert_partition(&many, 8);
    assert_eq!(many.iter().filter(|q| q.is_empty()).count(), 3);
}

#[tokio::test]
async fn broadcasting_delivers_every_message_to_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 2).unwrap();
    for n in 0..10 {
        broker
            .put((n % 2) as u32, vec![Message::new("t", body(n))])
            .await
            .unwrap();
    }
    let mut received: Vec<BTreeSet<Vec<u8>>> = Vec::new();
    for member in ["a", "b", "c"] {
        let assignment = join(&broker, member, ConsumeMode::Broadcasting);
        assert_eq!(assignment.queues.len(), 2);
        let mut bodies = BTreeSet::new();
        for queue in &assignment.queues {
            let from = broker
                .committed_offset(&assignment.offset_owner, "t", queue.queue_id)
                .unwrap_or(0);
            let messages = pull_all(&broker, "t", queue.queue_id, from).await;
            broker
                .commit_offset(
                    &assignment.offset_owner,
                    "t",
                    queue.queue_id,
                    from + messages.len() as u64,
                )
                .unwrap();
            bodies.extend(messages.into_iter().map(|m| m.message.body.to_vec()));
        }
        received.push(bodies);
    }
    let all: BTreeSet<Vec<u8>> = (0..10).map(body).collect();
    for bodies in &received {
        assert_eq!(bodies, &all);
    }
    // Each member's position is its own.
    assert_eq!(broker.committed_offset("g%a", "t", 0), Some(5));
    assert_eq!(broker.committed_offset("g%b", "t", 0), Some(5));
    assert_eq!(broker.committed_offset("g", "t", 0), None);
}

#[tokio::test]
async fn tag_filters_skip_other_tags_and_keep_holding_for_a_match() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    for (n, tag) in ["vip", "plain", "gift", "plain", "vip", ""]
        .iter()
        .enumerate()
    {
        broker
            .put(0, vec![Message::new("t", body(n)).with_tags(*tag)])
            .await
            .unwrap();
    }
    let mut request = pull_request(0, 0, 0);
    request.tags = Some("vip || gift".into());
    let result = broker.pull(&request).await.unwrap();
    let tags: Vec<&str> = result
        .messages
        .iter()
        .map(|m| m.message.tags.as_str())
        .collect();
    assert_eq!(tags, ["vip", "gift", "vip"]);
    // The untagged last message was examined and skipped too.
    assert_eq!(result.next_offset, 6);

    // Nothing matching is left: the pull holds, skipping what arrives
    // without the tag, and returns the first match.
    request.offset = result.next_offset;
    request.hold_ms = 30_000;
    let held = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.pull(&request).await.unwrap() })
    };
    broker
        .put(0, vec![Message::new("t", "no").with_tags("plain")])
        .await
        .unwrap();
    broker
        .put(0, vec![Message::new("t", "yes").with_tags("gift")])
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.messages.len(), 1);
    assert_eq!(&result.messages[0].message.body[..], b"yes");
    assert_eq!(result.next_offset, 8);

    let mut bad = pull_request(0, 0, 0);
    bad.tags = Some("a |".into());
    assert!(broker.pull(&bad).await.is_err());
}

#[tokio::test]
async fn issue_8_a_group_whose_last_member_leaves_is_removed_and_its_offsets_stay() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 2).unwrap();
    for n in 0..4 {
        broker
            .put((n % 2) as u32, vec![Message::new("t", body(n))])
            .await
            .unwrap();
    }
    join(&broker, "a", ConsumeMode::Clustering);
    let b = join(&broker, "b", ConsumeMode::Clustering);
    let queue = b.queues.iter().find(|q| q.topic == "t").unwrap().queue_id;
    broker
        .commit_offset_fenced("g", "b", b.generation, "t", queue, 2)
        .unwrap();
    broker.leave_group("g", "a").unwrap();
    assert_eq!(broker.groups().len(), 1);
    broker.leave_group("g", "b").unwrap();
    assert!(broker.groups().is_empty(), "{:?}", broker.groups());
    // The offsets outlive the group, on disk too, and the group resumes
    // from them when it comes back.
    assert_eq!(broker.committed_offset("g", "t", queue), Some(2));
    broker.shutdown().await.unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    assert!(broker.groups().is_empty());
    assert_eq!(broker.committed_offset("g", "t", queue), Some(2));
    join(&broker, "a", ConsumeMode::Clustering);
    assert_eq!(broker.committed_offset("g", "t", queue), Some(2));
}

#[tokio::test]
async fn issue_8_the_offset_file_is_not_rewritten_when_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    for n in 0..3 {
        broker
            .put(0, vec![Message::new("t", body(n))])
            .await
            .unwrap();
    }
    broker.commit_offset("g", "t", 0, 3).unwrap();
    broker.commit_offset("g", "t", 0, 3).unwrap();
    broker.shutdown().await.unwrap();
    // One write, by the maintenance thread or by the shutdown: not both.
    assert_eq!(broker.offset_file_writes(), 1);
    let file = dir.path().join("config/consumer_offsets.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains('\n') && !text.contains(": "),
        "not compact: {text}"
    );

    // Reopened, the same commit changes nothing: the file is left alone.
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.commit_offset("g", "t", 0, 3).unwrap();
    broker.shutdown().await.unwrap();
    assert_eq!(broker.offset_file_writes(), 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}
