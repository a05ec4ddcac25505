//! The local-directory backend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::io::ReaderStream;

use crate::error::{Result, StorageError};
use crate::error::{validate_key, validate_prefix};
use crate::fsutil::{self, TEMP_MARKER};
use crate::store::{ByteStream, ObjectMeta, ObjectStore};

/// Objects as files under a root directory; key `a/b.mp4` is the file
/// `<root>/a/b.mp4`. Every write goes to a temporary name beside the
/// destination and is renamed into place, so readers never see a partial
/// file and a failed or cancelled write leaves nothing behind.
///
/// Local objects carry no stored sha256: [`ObjectStore::head`] reports
/// `sha256: None`, and [`ObjectStore::get_file`] hashes what it copies.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn meta_of(key: &str, md: &std::fs::Metadata) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: md.len(),
            sha256: None,
            etag: None,
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn url(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<ObjectMeta> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StorageError::io("open", path, e))?;
        let source = path.display().to_string();
        let stream = ReaderStream::new(file).map(move |r| {
            r.map_err(|e| std::io::Error::new(e.kind(), format!("{source}: read: {e}")))
        });
        self.put_stream(key, Box::pin(stream)).await
    }

    async fn put_stream(&self, key: &str, body: ByteStream) -> Result<ObjectMeta> {
        let dest = self.path_of(key)?;
        let (size, sha) = fsutil::stream_to_file(body, &dest, None, &self.url(key)).await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            sha256: Some(sha),
            etag: None,
        })
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream> {
        let path = self.path_of(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound {
                    location: self.url(key),
                });
            }
            Err(e) => return Err(StorageError::io("open", path, e)),
        };
        let url = self.url(key);
        Ok(Box::pin(ReaderStream::new(file).map(move |r| {
            r.map_err(|e| std::io::Error::new(e.kind(), format!("{url}: read: {e}")))
        })))
    }

    async fn get_file(
        &self,
        key: &str,
        dest: &Path,
        expected: Option<&crate::ContentHash>,
    ) -> Result<ObjectMeta> {
        let stream = self.get_stream(key).await?;
        let url = self.url(key);
        let (size, sha) = fsutil::stream_to_file(stream, dest, expected, &url)
            .await
            .map_err(|e| match e {
                // A read error of the source is an I/O error of the store.
                StorageError::Input { source, .. } => {
                    StorageError::io("read", self.root.join(key), source)
                }
                other => other,
            })?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            sha256: Some(sha),
            etag: None,
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => Ok(Some(Self::meta_of(key, &md))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("stat", path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        // Walk only the deepest directory the prefix names.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || list_blocking(&root, &start, &prefix))
            .await
            .map_err(|e| StorageError::io("list", &self.root, std::io::Error::other(e)))?
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("remove", path, e)),
        }
    }

    async fn presign_get(&self, key: &str, _expires_in: Duration) -> Result<String> {
        Err(StorageError::Unsupported {
            op: "a presigned URL",
            backend: "local",
            location: self.url(key),
        })
    }
}

fn list_blocking(root: &Path, start: &Path, prefix: &str) -> Result<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    let mut stack = vec![start.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StorageError::io("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().contains(TEMP_MARKER) {
                continue;
            }
            let file_type = entry
                .file_type()
                .map_err(|e| StorageError::io("stat", &path, e))?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if !key.starts_with(prefix) {
                continue;
            }
            let md = std::fs::metadata(&path).map_err(|e| StorageError::io("stat", &path, e))?;
            if md.is_file() {
                out.push(LocalStore::meta_of(&key, &md));
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
