use std::time::{Duration, Instant};

use storage::StorageError;
use storage::queue::{MAX_MESSAGE_BYTES, Queue, QueueDepth, QueueOptions};

use crate::support::{bucket, moto, test_config};

async fn queue(tag: &str, options: &QueueOptions) -> Queue {
    Queue::create(&bucket(tag), options, &test_config(&moto().endpoint))
        .await
        .unwrap()
}

const SHORT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_received_message_is_hidden_until_deleted_released_or_its_lease_ends() {
    let q = queue("lease", &QueueOptions::default()).await;
    let id = q.send(r#"{"row":1}"#).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        QueueDepth {
            waiting: 1,
            in_flight: 0
        }
    );

    let got = q.receive(10, SHORT, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(
        (m.id.as_str(), m.body.as_str(), m.receive_count),
        (id.as_str(), r#"{"row":1}"#, 1)
    );
    assert!(m.sent_ms.is_some());
    // Held: nobody else gets it.
    assert!(q.receive(10, SHORT, SHORT).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap().in_flight, 1);

    // The lease runs out: it comes back, counted.
    let started = Instant::now();
    let again = loop {
        let got = q.receive(1, SHORT, Duration::from_secs(30)).await.unwrap();
        if let Some(m) = got.into_iter().next() {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the lease never ended"
        );
    };
    assert_eq!((again.id.as_str(), again.receive_count), (id.as_str(), 2));

    // Extended, it stays hidden past its first lease; released, it is back
    // at once.
    q.extend(&again.receipt, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(q.receive(1, SHORT, SHORT).await.unwrap().is_empty());
    q.release(&again.receipt).await.unwrap();
    let third = q.receive(1, SHORT, SHORT).await.unwrap();
    assert_eq!(third[0].receive_count, 3);

    // Deleted, it is gone for good.
    q.delete(&third[0].receipt).await.unwrap();
    assert!(q.receive(1, SHORT, SHORT).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
}

#[tokio::test]
async fn a_message_never_deleted_moves_to_the_dead_letter_queue() {
    let dlq = queue("dead", &QueueOptions::default()).await;
    let q = queue(
        "redrive",
        &QueueOptions {
            visibility_timeout: Duration::from_secs(30),
            dead_letter: Some((dlq.url().to_owned(), 2)),
        },
    )
    .await;
    assert_eq!(q.max_receives().await.unwrap(), Some(2));
    assert_eq!(dlq.max_receives().await.unwrap(), None);
    q.send("always fails").await.unwrap();
    for n in 1..=2 {
        let got = q.receive(1, SHORT, Duration::from_secs(30)).await.unwrap();
        assert_eq!(got[0].receive_count, n);
        q.release(&got[0].receipt).await.unwrap();
    }
    // The third receive finds it moved.
    assert!(q.receive(1, SHORT, SHORT).await.unwrap().is_empty());
    let dead = dlq.receive(1, SHORT, SHORT).await.unwrap();
    assert_eq!(dead[0].body, "always fails");
}

#[tokio::test]
async fn bad_arguments_are_refused_before_any_request() {
    let q = queue("args", &QueueOptions::default()).await;
    let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
    let err = q.send(&big).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::InvalidConfig {
                field: "message body",
                ..
            }
        ),
        "{err}"
    );
    let err = q.receive(11, SHORT, SHORT).await.unwrap_err();
    assert_eq!(err.to_string(), "max messages = 11: 1 to 10");
    let err = q
        .receive(1, Duration::from_secs(21), SHORT)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "wait = 21 s: at most 20 s");
    let err = Queue::connect("jobs", &test_config(&moto().endpoint))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("location `jobs`: a queue is named by its URL"),
        "{err}"
    );
}
