//! sha256 digests and content-addressed key names.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;

use crate::error::{Result, StorageError};

/// Bytes read at a time when hashing a file.
const HASH_BUFFER_BYTES: usize = 256 * 1024;

/// A sha256 digest, shown and parsed as 64 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The digest of `bytes`.
    #[must_use]
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// The digest of a file's contents, read in blocks.
    ///
    /// # Errors
    /// [`StorageError::Io`] naming the file when it cannot be read.
    pub async fn of_file(path: &Path) -> Result<Self> {
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

    /// The raw 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hexadecimal digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl FromStr for ContentHash {
    type Err = StorageError;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |reason: &str| StorageError::InvalidHash {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.len() != 64 {
            return Err(invalid("expected 64 hexadecimal digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.to_ascii_lowercase(), &mut out)
            .map_err(|_| invalid("expected 64 hexadecimal digits"))?;
        Ok(Self(out))
    }
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
        ContentHash(self.0.finalize().into())
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
    fn hex_round_trips_and_errors_name_the_text() {
        let h = ContentHash::of_bytes(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.to_hex().parse::<ContentHash>().expect("valid"), h);
        assert_eq!(
            h.to_hex()
                .to_uppercase()
                .parse::<ContentHash>()
                .expect("valid"),
            h
        );
        let err = "abc".parse::<ContentHash>().expect_err("too short");
        assert_eq!(
            err.to_string(),
            "sha256 `abc`: expected 64 hexadecimal digits"
        );
        let bad = "g".repeat(64);
        assert!(bad.parse::<ContentHash>().is_err());
    }

    #[test]
    fn content_keys_spread_over_two_levels() {
        let h = ContentHash::of_bytes(b"abc");
        let hex = h.to_hex();
        assert_eq!(content_key("", &h, "mp4"), format!("ba/78/{hex}.mp4"));
        assert_eq!(content_key("a/b/", &h, ""), format!("a/b/ba/78/{hex}"));
        assert_eq!(content_key("a", &h, "ts"), format!("a/ba/78/{hex}.ts"));
    }
}
