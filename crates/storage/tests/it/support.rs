//! Test kit: a real S3-protocol server (moto) on loopback, and a fault
//! injecting HTTP proxy in front of it (`testkit::fault`).

use std::time::Duration;

use storage::{MultipartConfig, RetryPolicy, S3Config, S3Store};

pub use testkit::fault::{Action, FaultProxy};
pub use testkit::{bucket, moto};

/// Small parts and quick retries, so tests stay fast.
pub fn test_config(endpoint: &str) -> S3Config {
    S3Config {
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        multipart: MultipartConfig {
            threshold: 6 * 1024 * 1024,
            part_size: 5 * 1024 * 1024,
        },
        ..S3Config::static_endpoint(endpoint, "us-east-1", "testing", "testing")
    }
}

/// A store on a fresh bucket of the shared moto server.
pub async fn s3_store(tag: &str) -> S3Store {
    let store = S3Store::connect(&bucket(tag), &test_config(&moto().endpoint))
        .await
        .expect("connect");
    store.ensure_bucket().await.expect("create bucket");
    store
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
