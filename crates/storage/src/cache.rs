//! A size-bounded disk cache of unpacked bundles, keyed by the archive's
//! sha256, evicting the least recently used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Mutex;

use crate::archive::{self, UnpackLimits};
use crate::error::{Result, StorageError};
use crate::fsutil::{TEMP_MARKER, TempPath};
use crate::hash::ContentHash;
use crate::store::ObjectStore;

/// Unpacked bundles under one directory, `<dir>/<sha256>/`, kept within
/// `max_bytes` (counting unpacked file bytes). When a new bundle pushes the
/// total over, the least recently used bundles that nobody holds a
/// [`CachedBundle`] for are deleted. Recency survives restarts: each use
/// touches the bundle directory's modification time.
///
/// Fetches are serialised, so two callers asking for the same bundle
/// download it once.
#[derive(Clone, Debug)]
pub struct BundleCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    limits: UnpackLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<ContentHash, Entry>,
    /// A logical clock: larger is more recent.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    bytes: u64,
    last_used: u64,
    pin: Arc<()>,
}

/// An unpacked bundle in the cache. While it is alive the bundle is not
/// evicted.
#[derive(Clone, Debug)]
pub struct CachedBundle {
    hash: ContentHash,
    path: PathBuf,
    _pin: Arc<()>,
}

impl CachedBundle {
    /// The bundle's (archive's) sha256.
    #[must_use]
    pub fn hash(&self) -> &ContentHash {
        &self.hash
    }

    /// The directory the bundle was unpacked into.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BundleCache {
    /// Opens (creating) the cache directory, indexing the bundles already
    /// there and removing leftovers of interrupted unpacks.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the directory cannot be created or read.
    pub async fn open(
        dir: impl Into<PathBuf>,
        max_bytes: u64,
        limits: UnpackLimits,
    ) -> Result<Self> {
        let dir = dir.into();
        let scan_dir = dir.clone();
        let found = tokio::task::spawn_blocking(move || scan(&scan_dir))
            .await
            .map_err(|e| StorageError::io("scan cache", &dir, std::io::Error::other(e)))??;
        let mut state = State::default();
        // Oldest first, so the logical clock preserves on-disk recency.
        let mut found = found;
        found.sort_by_key(|(_, _, mtime)| *mtime);
        for (hash, bytes, _) in found {
            state.clock += 1;
            state.entries.insert(
                hash,
                Entry {
                    bytes,
                    last_used: state.clock,
                    pin: Arc::new(()),
                },
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                max_bytes,
                limits,
                state: Mutex::new(state),
            }),
        })
    }

    /// The cache directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes of all cached bundles.
    pub async fn total_bytes(&self) -> u64 {
        self.inner
            .state
            .lock()
            .await
            .entries
            .values()
            .map(|e| e.bytes)
            .sum()
    }

    /// The bundle, if cached (marking it used).
    pub async fn get(&self, hash: &ContentHash) -> Option<CachedBundle> {
        let mut state = self.inner.state.lock().await;
        self.use_entry(&mut state, hash)
    }

    /// The bundle `hash`, downloading `key` from `store` (verifying its
    /// sha256) and unpacking it when it is not cached yet.
    ///
    /// # Errors
    /// Download failures, [`StorageError::HashMismatch`], or the unpacker's
    /// refusals (see [`archive::unpack`]).
    pub async fn fetch(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        hash: &ContentHash,
    ) -> Result<CachedBundle> {
        let mut state = self.inner.state.lock().await;
        if let Some(hit) = self.use_entry(&mut state, hash) {
            return Ok(hit);
        }
        tokio::fs::create_dir_all(&self.inner.dir)
            .await
            .map_err(|e| StorageError::io("create directory", &self.inner.dir, e))?;
        let download = TempPath::inside(&self.inner.dir, &format!("{hash}.tar"));
        store.get_file(key, download.path(), Some(hash)).await?;
        self.insert_locked(&mut state, hash, download.path(), &store.url(key))
            .await
    }

    /// Adds the archive at `archive_path` (which must hash to `hash`),
    /// unpacking it unless the bundle is cached already.
    ///
    /// # Errors
    /// [`StorageError::HashMismatch`], or the unpacker's refusals.
    pub async fn insert_archive(
        &self,
        hash: &ContentHash,
        archive_path: &Path,
    ) -> Result<CachedBundle> {
        let mut state = self.inner.state.lock().await;
        if let Some(hit) = self.use_entry(&mut state, hash) {
            return Ok(hit);
        }
        let actual = crate::hash_file(archive_path).await?;
        crate::fsutil::check_hash(&archive_path.display().to_string(), Some(hash), &actual)?;
        self.insert_locked(
            &mut state,
            hash,
            archive_path,
            &archive_path.display().to_string(),
        )
        .await
    }

    async fn insert_locked(
        &self,
        state: &mut State,
        hash: &ContentHash,
        archive_path: &Path,
        name: &str,
    ) -> Result<CachedBundle> {
        let dest = self.inner.dir.join(hash.to_hex());
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            // A directory we did not index (another process?): replace it.
            tokio::fs::remove_dir_all(&dest)
                .await
                .map_err(|e| StorageError::io("remove", &dest, e))?;
        }
        let limits = self.inner.limits;
        let (archive_path, dest_clone, name) =
            (archive_path.to_path_buf(), dest.clone(), name.to_owned());
        let stats = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&archive_path)
                .map_err(|e| StorageError::io("open", &archive_path, e))?;
            archive::unpack(std::io::BufReader::new(file), &dest_clone, &limits, &name)
        })
        .await
        .map_err(|e| StorageError::io("unpack", &dest, std::io::Error::other(e)))??;
        state.clock += 1;
        let pin = Arc::new(());
        state.entries.insert(
            *hash,
            Entry {
                bytes: stats.bytes,
                last_used: state.clock,
                pin: pin.clone(),
            },
        );
        let bundle = CachedBundle {
            hash: *hash,
            path: dest,
            _pin: pin,
        };
        self.evict(state).await;
        Ok(bundle)
    }

    fn use_entry(&self, state: &mut State, hash: &ContentHash) -> Option<CachedBundle> {
        state.clock += 1;
        let clock = state.clock;
        let entry = state.entries.get_mut(hash)?;
        entry.last_used = clock;
        let path = self.inner.dir.join(hash.to_hex());
        touch(&path);
        Some(CachedBundle {
            hash: *hash,
            path,
            _pin: entry.pin.clone(),
        })
    }

    /// Deletes least recently used, unpinned bundles until within budget.
    async fn evict(&self, state: &mut State) {
        loop {
            let total: u64 = state.entries.values().map(|e| e.bytes).sum();
            if total <= self.inner.max_bytes {
                return;
            }
            let victim = state
                .entries
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.pin) == 1)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(h, _)| *h);
            let Some(victim) = victim else {
                tracing::warn!(
                    total,
                    max = self.inner.max_bytes,
                    "bundle cache over its size: every bundle is in use"
                );
                return;
            };
            state.entries.remove(&victim);
            let path = self.inner.dir.join(victim.to_hex());
            if let Err(e) = tokio::fs::remove_dir_all(&path).await {
                tracing::warn!(path = %path.display(), error = %e, "could not remove an evicted bundle");
            }
        }
    }
}

/// Marks a bundle directory used (its mtime), for recency across restarts.
fn touch(path: &Path) {
    if let Ok(dir) = std::fs::File::open(path) {
        let _ignored = dir.set_modified(SystemTime::now());
    }
}

/// The bundles in `dir`: hash, unpacked bytes, last use.
fn scan(dir: &Path) -> Result<Vec<(ContentHash, u64, SystemTime)>> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(TEMP_MARKER) {
            // Left by an interrupted download or unpack.
            let _ignored = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            continue;
        }
        let Ok(hash) = name.parse::<ContentHash>() else {
            continue;
        };
        let md = entry
            .metadata()
            .map_err(|e| StorageError::io("stat", &path, e))?;
        if !md.is_dir() {
            continue;
        }
        let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        out.push((hash, dir_bytes(&path)?, mtime));
    }
    Ok(out)
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| StorageError::io("list", &d, e))? {
            let entry = entry.map_err(|e| StorageError::io("list", &d, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| StorageError::io("stat", entry.path(), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else {
                total += entry
                    .metadata()
                    .map_err(|e| StorageError::io("stat", entry.path(), e))?
                    .len();
            }
        }
    }
    Ok(total)
}
