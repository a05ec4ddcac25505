//! Where objects live: `s3://bucket/key`, `file://` URLs and plain paths.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A location string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("location `{text}`: {reason}")]
pub struct LocationError {
    /// The text as given.
    pub text: String,
    /// Why it was refused.
    pub reason: String,
}

type Result<T> = std::result::Result<T, LocationError>;

/// A parsed storage location: a store (an S3 bucket or a local directory)
/// and a key inside it. A key that is empty or ends with `/` names a prefix
/// (a "directory") rather than one object.
///
/// ```
/// use spec::Location;
/// let out: Location = "s3://renders/batch-7/".parse()?;
/// assert!(out.is_prefix());
/// assert_eq!(out.key(), "batch-7/");
/// let file: Location = "out/final.mp4".parse()?;
/// assert_eq!(file.key(), "final.mp4");
/// # Ok::<(), spec::LocationError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A file or directory on the local file system.
    Local {
        /// The directory that is the store's root.
        root: PathBuf,
        /// The path below `root`, `/`-separated; empty for `root` itself.
        key: String,
    },
    /// An object or prefix in an S3 bucket.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key in the bucket; empty for the whole bucket.
        key: String,
    },
}

impl Location {
    /// Parses `s3://bucket/key`, `file:///abs/path` (percent-encoded) or a
    /// plain path. A trailing `/` marks a prefix.
    ///
    /// # Errors
    /// [`LocationError`] naming the text: empty text, an
    /// unknown scheme, an S3 URL without a valid bucket, a `file://` URL with
    /// a remote host, or a key with empty, `.` or `..` segments.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| LocationError {
            text: crate::quote(text),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid("empty location"));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket).map_err(|r| invalid(&r))?;
            if !key.is_empty() {
                check_key_segments(key, true).map_err(|r| invalid(&r))?;
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        let path_text = if let Some(rest) = text.strip_prefix("file://") {
            let (host, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => return Err(invalid("a file:// URL needs an absolute path")),
            };
            if !(host.is_empty() || host == "localhost") {
                return Err(invalid(&format!(
                    "file:// URL with host `{host}`: only local files are supported"
                )));
            }
            percent_encoding::percent_decode_str(path)
                .decode_utf8()
                .map_err(|_| invalid("the percent-encoded path is not UTF-8"))?
                .into_owned()
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(invalid(&format!(
                "unsupported scheme `{scheme}://` (expected s3://, file:// or a path)"
            )));
        } else {
            text.to_owned()
        };
        Ok(Self::local_from_path_text(&path_text))
    }

    fn local_from_path_text(path: &str) -> Self {
        if path.ends_with('/') {
            return Self::Local {
                root: PathBuf::from(path),
                key: String::new(),
            };
        }
        let p = Path::new(path);
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => Self::Local {
                root: if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                },
                key: name.to_string_lossy().into_owned(),
            },
            // `.`, `..` or `/`: the directory itself.
            _ => Self::Local {
                root: p.to_path_buf(),
                key: String::new(),
            },
        }
    }

    /// A local location for a file or directory path.
    #[must_use]
    pub fn local(path: impl AsRef<Path>) -> Self {
        Self::local_from_path_text(&path.as_ref().to_string_lossy())
    }

    /// The key inside the store (empty for the store's root).
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Self::Local { key, .. } | Self::S3 { key, .. } => key,
        }
    }

    /// Whether this names a prefix (empty key or trailing `/`) rather than
    /// one object.
    #[must_use]
    pub fn is_prefix(&self) -> bool {
        let key = self.key();
        key.is_empty() || key.ends_with('/')
    }

    /// The same store with `suffix` appended to the key (for a prefix
    /// location, the object `suffix` under it).
    #[must_use]
    pub fn join(&self, suffix: &str) -> Self {
        let mut out = self.clone();
        match &mut out {
            Self::Local { key, .. } | Self::S3 { key, .. } => key.push_str(suffix),
        }
        out
    }

    /// The backend's name: `local` or `s3`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::S3 { .. } => "s3",
        }
    }
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::Local { root, key } if key.is_empty() => write!(f, "{}", root.display()),
            Self::Local { root, key } => write!(f, "{}", root.join(key).display()),
        }
    }
}

fn check_bucket(bucket: &str) -> std::result::Result<(), String> {
    // S3 bucket naming rules: 3-63 characters of lowercase letters, digits,
    // dots and hyphens. Underscores are allowed too because some S3-compatible
    // servers accept them.
    if bucket.is_empty() {
        return Err("missing bucket name after s3://".to_owned());
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err(format!("bucket `{bucket}` must be 3 to 63 characters long"));
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "bucket `{bucket}` may hold only lowercase letters, digits, `.`, `-` and `_`"
        ));
    }
    Ok(())
}

/// Checks `/`-separated key segments: no empty (`//`), `.` or `..`
/// segments, no `\` or NUL, not absolute. A trailing `/` is allowed when
/// `allow_prefix`.
fn check_key_segments(key: &str, allow_prefix: bool) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err("empty key".to_owned());
    }
    if key.starts_with('/') {
        return Err("a key may not start with `/`".to_owned());
    }
    if key.contains('\\') || key.contains('\0') {
        return Err("a key may not contain `\\` or NUL".to_owned());
    }
    let body = match key.strip_suffix('/') {
        Some(body) if allow_prefix => body,
        Some(_) => return Err("an object key may not end with `/`".to_owned()),
        None => key,
    };
    for segment in body.split('/') {
        match segment {
            "" => return Err("a key may not have empty segments (`//`)".to_owned()),
            "." | ".." => return Err(format!("a key may not have a `{segment}` segment")),
            _ => {}
        }
    }
    Ok(())
}

/// Checks an object key (not a prefix): no empty (`//`), `.` or `..`
/// segments, no `\\` or NUL, not absolute, no trailing `/`.
///
/// # Errors
/// Why the key is refused.
pub fn check_key(key: &str) -> std::result::Result<(), String> {
    check_key_segments(key, false)
}

/// Checks a listing prefix: empty, or a key that may end with `/`.
///
/// # Errors
/// Why the prefix is refused.
pub fn check_prefix(prefix: &str) -> std::result::Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_key_segments(prefix, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: std::result::Result<Location, &str>) {
        match (Location::parse(text), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
            (Err(got), Err(want)) => assert_eq!(got.to_string(), want, "{text}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    fn s3(bucket: &str, key: &str) -> Location {
        Location::S3 {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    fn local(root: &str, key: &str) -> Location {
        Location::Local {
            root: root.into(),
            key: key.into(),
        }
    }

    #[test]
    fn parses_every_form() {
        check(
            "s3://renders/out/final.mp4",
            Ok(s3("renders", "out/final.mp4")),
        );
        check("s3://renders/out/", Ok(s3("renders", "out/")));
        check("s3://renders", Ok(s3("renders", "")));
        check("s3://renders/", Ok(s3("renders", "")));
        check("file:///tmp/a%20b.mp4", Ok(local("/tmp", "a b.mp4")));
        check("file://localhost/tmp/out/", Ok(local("/tmp/out/", "")));
        check("out/final.mp4", Ok(local("out", "final.mp4")));
        check("final.mp4", Ok(local(".", "final.mp4")));
        check("/var/renders/", Ok(local("/var/renders/", "")));
        check("/", Ok(local("/", "")));
    }

    #[test]
    fn errors_name_the_text() {
        check("", Err("location ``: empty location"));
        check(
            "s3://",
            Err("location `s3://`: missing bucket name after s3://"),
        );
        check(
            "s3://Big_Bucket/x",
            Err(
                "location `s3://Big_Bucket/x`: bucket `Big_Bucket` may hold only lowercase letters, digits, `.`, `-` and `_`",
            ),
        );
        check(
            "s3://bucket/a/../b",
            Err("location `s3://bucket/a/../b`: a key may not have a `..` segment"),
        );
        check(
            "s3://bucket/a//b",
            Err("location `s3://bucket/a//b`: a key may not have empty segments (`//`)"),
        );
        check(
            "gs://bucket/x",
            Err(
                "location `gs://bucket/x`: unsupported scheme `gs://` (expected s3://, file:// or a path)",
            ),
        );
        check(
            "file://server/share/x",
            Err(
                "location `file://server/share/x`: file:// URL with host `server`: only local files are supported",
            ),
        );
    }

    #[test]
    fn prefixes_and_joins() {
        let loc = Location::parse("s3://b-1/batch/").expect("valid");
        assert!(loc.is_prefix());
        assert_eq!(
            loc.join("ab/cd/x.mp4").to_string(),
            "s3://b-1/batch/ab/cd/x.mp4"
        );
        assert!(!Location::parse("x.mp4").expect("valid").is_prefix());
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("a/b.mp4").is_ok());
        for bad in ["", "/a", "a/", "a//b", "./a", "a/..", "a\\b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("a/").is_ok());
        assert!(check_prefix("a/../").is_err());
    }
}
