//! Retry and dead letters under a paused clock: a message that keeps
//! failing is retried 16 times at growing delays, then lands in the DLQ
//! with its history, and a re-drive delivers it again.

use broker::system_topics::property;
use broker::{
    Broker, DELAY_LEVELS_MS, FlushMode, Message, PullRequest, RetryOutcome, StoredMessage,
};

async fn next_message(broker: &Broker, topic: &str, offset: u64) -> StoredMessage {
    for _ in 0..10_000 {
        let result = broker
            .pull(&PullRequest {
                group: "g".into(),
                topic: topic.into(),
                queue_id: 0,
                offset,
                max_messages: 1,
                max_bytes: 1 << 20,
                hold_ms: 15_000,
                tags: None,
                fence: None,
            })
            .await
            .unwrap();
        if let Some(message) = result.messages.into_iter().next() {
            return message;
        }
    }
    panic!("nothing arrived in {topic} at {offset}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_message_is_retried_16_times_then_dead_lettered_and_can_be_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::small_config(dir.path());
    config.flush = FlushMode::async_default();
    let broker = Broker::open(config).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let original = Message::new("orders", "order 42").with_key("o-42");
    broker.put(0, vec![original.clone()]).await.unwrap();

    // The first consumption fails.
    let first = next_message(&broker, "orders", 0).await;
    let mut failed_at = broker.now_ms();
    let outcome = broker
        .reconsume_later("g", "orders", 0, 0, "database down")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RetryOutcome::Retry {
            attempt: 1,
            delay_level: 3
        }
    );

    for attempt in 1..=16u32 {
        let retried = next_message(&broker, "%RETRY%g", u64::from(attempt - 1)).await;
        assert_eq!(retried.message.body, original.body);
        assert_eq!(retried.message.key, "o-42");
        let props = &retried.message.properties;
        assert_eq!(props[property::RECONSUME_TIMES], attempt.to_string());
        assert_eq!(props[property::ORIGIN_TOPIC], "orders");
        // Delay level 3 + (attempt - 1): 10 s, 30 s, 1 min, … 2 h.
        let delay = DELAY_LEVELS_MS[(2 + attempt - 1) as usize];
        assert!(
            retried.store_timestamp_ms >= failed_at + delay,
            "retry {attempt} came early"
        );
        failed_at = broker.now_ms();
        let outcome = broker
            .reconsume_later(
                "g",
                "%RETRY%g",
                0,
                u64::from(attempt - 1),
                &format!("failure {}", attempt + 1),
            )
            .await
            .unwrap();
        if attempt < 16 {
            assert_eq!(
                outcome,
                RetryOutcome::Retry {
                    attempt: attempt + 1,
                    delay_level: 3 + attempt
                }
            );
        } else {
            assert_eq!(outcome, RetryOutcome::DeadLetter { failures: 17 });
        }
    }

    let dead = broker.dead_letters("g", 0, 10).await.unwrap();
    assert_eq!(dead.messages.len(), 1);
    let letter = &dead.messages[0].message;
    assert_eq!(letter.body, original.body);
    assert_eq!(letter.properties[property::RECONSUME_TIMES], "17");
    assert_eq!(letter.properties[property::LAST_FAILURE], "failure 17");
    assert_eq!(letter.properties[property::ORIGIN_TOPIC], "orders");
    assert_eq!(
        letter.properties[property::ORIGIN_MSG_ID],
        format!("{:016X}", first.commit_log_offset)
    );
    assert!(
        letter
            .properties
            .contains_key(property::FIRST_FAILURE_AT_MS)
    );
    // Nothing else is retried once it is dead.
    assert_eq!(broker.delayed_pending(), 0);

    let redriven = broker.redrive_dead_letter("g", 0).await.unwrap();
    assert_eq!(
        (
            redriven.topic.as_str(),
            redriven.queue_id,
            redriven.queue_offset
        ),
        ("orders", 0, 1)
    );
    let again = next_message(&broker, "orders", 1).await;
    assert_eq!(again.message.body, original.body);
    assert!(
        !again
            .message
            .properties
            .contains_key(property::RECONSUME_TIMES)
    );
}

#[tokio::test(start_paused = true)]
async fn reconsume_later_checks_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(crate::helpers::small_config(dir.path())).unwrap();
    broker.create_topic("orders", 1).unwrap();
    assert!(
        broker
            .reconsume_later("g", "orders", 0, 0, "x")
            .await
            .is_err(),
        "no such offset"
    );
    assert!(
        broker
            .reconsume_later("", "orders", 0, 0, "x")
            .await
            .is_err(),
        "no group"
    );
    assert!(
        broker
            .reconsume_later("g", "nope", 0, 0, "x")
            .await
            .is_err(),
        "no topic"
    );
    assert!(
        broker.redrive_dead_letter("g", 0).await.is_err(),
        "empty DLQ"
    );
}
