//! Files written under a temporary name beside their destination and renamed
//! into place, so no reader ever sees a partial file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::error::{Result, StorageError};
use crate::hash::{ContentHash, Hasher};
use crate::store::ByteStream;

/// Marks temporary files so listings skip them.
pub(crate) const TEMP_MARKER: &str = ".montage-tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary path beside `dest`, removed on drop unless persisted.
///
/// Not `tempfile::TempPath`: this one names a file *or* a directory (bundles
/// are unpacked into a temporary directory renamed into place), is persisted
/// with an async rename, and carries [`TEMP_MARKER`] so store listings and
/// the bundle cache's scan skip half-written entries.
#[derive(Debug)]
pub(crate) struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// A fresh name in `dest`'s directory: `.<name>.montage-tmp-<pid>-<n>`.
    pub(crate) fn beside(dest: &Path) -> Self {
        let name = dest
            .file_name()
            .map_or_else(|| "object".into(), |n| n.to_string_lossy().into_owned());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = format!(".{name}{TEMP_MARKER}{}-{n}", std::process::id());
        let path = dest
            .parent()
            .map_or_else(|| PathBuf::from(&tmp), |p| p.join(&tmp));
        Self { path, armed: true }
    }

    /// A fresh name inside `dir`.
    pub(crate) fn inside(dir: &Path, name: &str) -> Self {
        Self::beside(&dir.join(name))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file (or directory) to `dest`.
    pub(crate) async fn persist(mut self, dest: &Path) -> Result<()> {
        tokio::fs::rename(&self.path, dest)
            .await
            .map_err(|e| StorageError::io("rename into place", dest, e))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the file may never have been created.
            if std::fs::remove_file(&self.path).is_err() {
                let _ignored = std::fs::remove_dir_all(&self.path);
            }
        }
    }
}

/// Writes `stream` to a temporary file beside `dest`, hashing it, checks the
/// hash against `expected`, and renames it to `dest`. Returns the size and
/// hash. `location` names the source in errors.
pub(crate) async fn stream_to_file(
    mut stream: ByteStream,
    dest: &Path,
    expected: Option<&ContentHash>,
    location: &str,
) -> Result<(u64, ContentHash)> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| StorageError::io("create directory", dir, e))?;
    }
    let tmp = TempPath::beside(dest);
    let mut file = tokio::fs::File::create(tmp.path())
        .await
        .map_err(|e| StorageError::io("create", tmp.path(), e))?;
    let mut hasher = Hasher::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| StorageError::Input {
            location: location.to_owned(),
            source: e,
        })?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| StorageError::io("write", tmp.path(), e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| StorageError::io("sync", tmp.path(), e))?;
    drop(file);
    let actual = hasher.finish();
    check_hash(location, expected, &actual)?;
    tmp.persist(dest).await?;
    Ok((size, actual))
}

/// [`StorageError::HashMismatch`] unless `actual` is `expected` (or nothing
/// was expected).
pub(crate) fn check_hash(
    location: &str,
    expected: Option<&ContentHash>,
    actual: &ContentHash,
) -> Result<()> {
    match expected {
        Some(want) if want != actual => Err(StorageError::HashMismatch {
            location: location.to_owned(),
            expected: want.to_hex(),
            actual: actual.to_hex(),
        }),
        _ => Ok(()),
    }
}
