//! Stores opened once per bucket and shared.

use std::collections::HashMap;
use std::sync::Arc;

#[cfg(doc)]
use crate::StorageError;
use crate::{Location, ObjectStore, Result, S3Config, open};

/// Object stores opened once and reused, for a worker's or a coordinator's
/// requests. An S3 client holds a
/// connection pool and resolved credentials, so each bucket's store is
/// opened once and shared by every later request; local stores cost nothing
/// and are made per use.
#[derive(Debug)]
pub struct Stores {
    s3: S3Config,
    buckets: tokio::sync::Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Stores {
    /// Stores reaching S3 with `s3` (its `None` fields fall back to the
    /// standard AWS environment: `AWS_ENDPOINT_URL`, `AWS_REGION`, keys,
    /// profiles).
    pub fn new(s3: S3Config) -> Self {
        Stores {
            s3,
            buckets: tokio::sync::Mutex::default(),
        }
    }

    /// The S3 settings the stores (and queues beside them) use.
    pub fn s3_config(&self) -> &S3Config {
        &self.s3
    }

    /// The store `location` lives in (use [`Location::key`] inside it).
    ///
    /// # Errors
    /// [`StorageError::InvalidConfig`] when the S3 settings are out
    /// of range.
    pub async fn open(&self, location: &Location) -> Result<Arc<dyn ObjectStore>> {
        let Location::S3 { bucket, .. } = location else {
            return open(location, &self.s3).await;
        };
        let mut buckets = self.buckets.lock().await;
        if let Some(store) = buckets.get(bucket) {
            return Ok(Arc::clone(store));
        }
        let store = open(location, &self.s3).await?;
        buckets.insert(bucket.clone(), Arc::clone(&store));
        Ok(store)
    }

    /// Waits until every store has finished aborting the multipart uploads
    /// of dropped (cancelled) uploads. Call it before the process exits.
    pub async fn settle(&self) {
        let stores: Vec<_> = self.buckets.lock().await.values().cloned().collect();
        for store in stores {
            store.settle().await;
        }
    }
}
