//! The worker's side of object storage: content-addressed bundles fetched
//! into a size-bounded disk cache, from stores opened once and reused
//! ([`Stores`]).

use std::path::PathBuf;
use std::sync::Arc;

use spec::BundleRef;
use storage::archive::UnpackLimits;
use storage::{BundleCache, CachedBundle, Stores};

use crate::WorkerError;
use crate::metrics::WorkerMetrics;

/// The default bound on unpacked bundles kept on a worker's disk (4 GiB).
pub const DEFAULT_BUNDLE_CACHE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Content-addressed scene bundles on a worker's disk: archives fetched from
/// storage once, verified by sha256, unpacked safely and kept in a
/// [`BundleCache`] within a size bound.
///
/// The gRPC service uses it for `BundleRef` sources. A library caller does
/// the same before the (synchronous) [`crate::render_chunk`]:
///
/// ```no_run
/// # async fn demo(request: &mut chunk_worker::ChunkRequest) -> Result<(), chunk_worker::WorkerError> {
/// use std::sync::Arc;
/// use chunk_worker::{Bundles, SourceSpec, Stores};
/// let stores = Arc::new(Stores::new(storage::S3Config::default()));
/// let bundles = Bundles::open("/var/cache/montage/bundles".into(), 4 << 30, stores).await?;
/// if let SourceSpec::BundleRef(reference) = &request.source {
///     let bundle = bundles.fetch(reference).await?;
///     request.source = SourceSpec::BundlePath(bundle.path().to_path_buf());
///     // Keep `bundle` alive until the chunk is rendered: it pins the
///     // directory against eviction.
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Bundles {
    stores: Arc<Stores>,
    cache: BundleCache,
    metrics: Option<Arc<WorkerMetrics>>,
}

impl Bundles {
    /// Opens (creating) the cache in `dir`, keeping at most `max_bytes` of
    /// unpacked bundles; the least recently used bundle nobody holds is
    /// evicted first.
    ///
    /// # Errors
    /// [`WorkerError::Storage`] when the directory cannot be created or read.
    pub async fn open(
        dir: PathBuf,
        max_bytes: u64,
        stores: Arc<Stores>,
    ) -> Result<Self, WorkerError> {
        let cache = BundleCache::open(dir, max_bytes, UnpackLimits::default())
            .await
            .map_err(WorkerError::storage("bundle cache"))?;
        Ok(Bundles {
            stores,
            cache,
            metrics: None,
        })
    }

    /// Counts lookups and fetched bytes in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<WorkerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &std::path::Path {
        self.cache.dir()
    }

    /// The object stores bundles are fetched from.
    pub fn stores(&self) -> &Arc<Stores> {
        &self.stores
    }

    /// The unpacked bundle `reference` names, downloaded, verified and
    /// unpacked unless it is cached already. Several callers
    /// asking at once download it once. The bundle directory is not evicted
    /// while the returned [`CachedBundle`] is alive.
    ///
    /// # Errors
    /// [`WorkerError::Storage`] (field `source.bundle`) when the archive is
    /// missing, does not hash to `sha256`, is refused by the unpacker, or
    /// cannot be downloaded.
    pub async fn fetch(&self, reference: &BundleRef) -> Result<CachedBundle, WorkerError> {
        let BundleRef { location, sha256 } = reference;
        if let Some(hit) = self.cache.get(sha256).await {
            if let Some(m) = &self.metrics {
                m.bundle_lookup(true, self.cache.total_bytes().await);
            }
            return Ok(hit);
        }
        let store = self
            .stores
            .open(location)
            .await
            .map_err(WorkerError::storage("source.bundle"))?;
        let bundle = self
            .cache
            .fetch(store.as_ref(), location.key(), sha256)
            .await
            .map_err(WorkerError::storage("source.bundle"))?;
        if let Some(m) = &self.metrics {
            m.bundle_lookup(false, self.cache.total_bytes().await);
        }
        Ok(bundle)
    }
}
