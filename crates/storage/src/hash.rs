//! sha256 digests and content-addressed key names.

use std::fmt;
use std::path::Path;

use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;

use crate::error::{Result, StorageError};

/// Bytes read at a time when hashing a file.
const HASH_BUFFER_BYTES: usize = 256 * 1024;

pub use spec::ContentHash;

/// The digest of a file's contents, read in blocks.
///
/// # Errors
/// [`StorageError::Io`] naming the file when it cannot be read.
pub async fn hash_file(path: &Path) -> Result<ContentHash> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| StorageError::io("open", path, e))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| StorageError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// An incremental sha256.
#[derive(Clone, Default)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    /// A hasher over no bytes yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of every byte fed.
    #[must_use]
    pub fn finish(self) -> ContentHash {
        ContentHash::from_bytes(self.0.finalize().into())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

/// The content-addressed key of an object under `prefix`: the hash's first
/// two byte pairs become two directory levels so a large batch spreads over
/// many prefixes (S3 scales request rates per prefix), e.g.
/// `renders/ab/cd/abcd…ef.mp4`.
///
/// `prefix` may be empty; a missing trailing `/` is added. `extension` is
/// given without its dot and may be empty.
///
/// ```
/// let hash = storage::ContentHash::of_bytes(b"");
/// assert_eq!(
///     storage::content_key("out", &hash, "mp4"),
///     format!("out/e3/b0/{hash}.mp4"),
/// );
/// ```
#[must_use]
pub fn content_key(prefix: &str, hash: &ContentHash, extension: &str) -> String {
    let hex = hash.to_hex();
    let mut key = String::with_capacity(prefix.len() + hex.len() + 16);
    key.push_str(prefix);
    if !prefix.is_empty() && !prefix.ends_with('/') {
        key.push('/');
    }
    key.push_str(&hex[0..2]);
    key.push('/');
    key.push_str(&hex[2..4]);
    key.push('/');
    key.push_str(&hex);
    if !extension.is_empty() {
        key.push('.');
        key.push_str(extension);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keys_spread_over_two_levels() {
        let h = ContentHash::of_bytes(b"abc");
        let hex = h.to_hex();
        assert_eq!(content_key("", &h, "mp4"), format!("ba/78/{hex}.mp4"));
        assert_eq!(content_key("a/b/", &h, ""), format!("a/b/ba/78/{hex}"));
        assert_eq!(content_key("a", &h, "ts"), format!("a/ba/78/{hex}.ts"));
    }
}
