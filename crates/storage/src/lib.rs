//! Montage storage: one small trait, [`ObjectStore`], over a local directory
//! ([`LocalStore`]) and S3 ([`S3Store`], through `aws-sdk-s3`; no AWS type
//! appears in this API).
//!
//! - Locations are `s3://bucket/key`, `file://` URLs or plain paths, parsed
//!   into a [`Location`]; [`open`] returns the store for one.
//! - Writes are all-or-nothing: local files are written beside their
//!   destination and renamed; S3 uploads of at least
//!   [`MULTIPART_THRESHOLD`] bytes go in [`PART_SIZE`] parts, and a failed or
//!   cancelled upload is aborted, leaving no object and no open multipart
//!   upload.
//! - Transient S3 failures (5xx, throttling, timeouts, connection resets)
//!   are retried with exponential backoff ([`RetryPolicy`]); every attempt's
//!   error is kept in [`StorageError::RetriesExhausted`].
//! - Uploads store the object's sha256 (`x-amz-meta-sha256`); downloads to a
//!   file verify it ([`ObjectStore::get_file`]).
//! - [`content_key`] names outputs by content hash (`ab/cd/<hash>.mp4`).
//! - [`archive`] packs a bundle directory into a deterministic tar named by
//!   its sha256 and unpacks one safely; [`BundleCache`] keeps unpacked
//!   bundles on disk within a size bound.
//!
//! ```
//! # async fn demo() -> Result<(), storage::StorageError> {
//! let dir = std::env::temp_dir().join("montage-storage-doc");
//! let location = storage::Location::local(format!("{}/", dir.display()));
//! let store = storage::open(&location, &storage::S3Config::default()).await?;
//! let meta = store.put_bytes("a/b.txt", "hello".into()).await?;
//! assert_eq!(meta.size, 5);
//! let listed = store.list("a/").await?;
//! assert_eq!(listed[0].key, "a/b.txt");
//! store.delete("a/b.txt").await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(demo()).expect("demo");
//! ```
#![deny(missing_docs)]

pub mod archive;
mod aws;
pub mod backoff;
mod cache;
mod dirs;
mod error;
mod fsutil;
mod hash;
mod local;
pub mod queue;
mod s3;
mod size;
mod store;
mod stores;

use std::sync::Arc;

pub use backoff::Backoff;
pub use cache::{BundleCache, CachedBundle};
pub use dirs::{montage_cache_dir, montage_cache_dir_from};
pub use error::{Result, StorageError};
pub use hash::{ContentHash, Hasher, content_key, hash_file};
pub use local::LocalStore;
pub use s3::{
    CONNECT_TIMEOUT, DEFAULT_REGION, READ_TIMEOUT, S3Config, S3Credentials, S3Store,
    SHA256_METADATA,
};
pub use size::parse_byte_size;
pub use spec::{Location, LocationError};
pub use store::{
    ByteStream, INITIAL_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF, MAX_PART_SIZE, MAX_PARTS,
    MIN_PART_SIZE, MULTIPART_THRESHOLD, MultipartConfig, ObjectMeta, ObjectStore, PART_SIZE,
    RetryPolicy,
};
pub use stores::Stores;

/// The store a location lives in: a [`LocalStore`] rooted at the location's
/// directory, or an [`S3Store`] for its bucket configured from `s3` and the
/// AWS environment. Use [`Location::key`] as the key inside it.
///
/// # Errors
/// [`StorageError::InvalidConfig`] when `s3`'s retry or multipart settings
/// are out of range.
pub async fn open(location: &Location, s3: &S3Config) -> Result<Arc<dyn ObjectStore>> {
    Ok(match location {
        Location::Local { root, .. } => Arc::new(LocalStore::new(root.clone())),
        Location::S3 { bucket, .. } => Arc::new(S3Store::connect(bucket, s3).await?),
    })
}
