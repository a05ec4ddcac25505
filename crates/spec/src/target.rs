//! Where a chunk's artifacts go.

use std::path::PathBuf;

use crate::{FieldError, Location};

/// Where the chunk's artifacts go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArtifactTarget {
    /// Streamed back in the gRPC call. A worker renders inline requests
    /// into a private directory and streams the files from there.
    Inline,
    /// Written into this local directory as `chunk-NNNNNN.ts` and
    /// `chunk-NNNNNN.pcm` (the chunk index, six digits), each under a
    /// temporary name in that directory and renamed when complete.
    Directory(PathBuf),
    /// Uploaded as `chunk-NNNNNN.ts` and `chunk-NNNNNN.pcm` under this
    /// object-storage prefix (`s3://bucket/prefix/`, always ending with `/`
    /// or empty).
    Storage(Location),
}

impl ArtifactTarget {
    /// The target a location string names: a plain path or `file://` URL is
    /// a local directory; an `s3://bucket/prefix/` URL is a storage prefix
    /// and must end with `/`.
    ///
    /// # Errors
    /// A [`FieldError`] naming `output.location`.
    pub fn parse_location(text: &str) -> Result<Self, FieldError> {
        const FIELD: &str = "output.location";
        if text.is_empty() {
            return Err(FieldError::new(FIELD, "is empty"));
        }
        if !text.contains("://") {
            return Ok(ArtifactTarget::Directory(PathBuf::from(text)));
        }
        let parsed = Location::parse(text).map_err(|e| FieldError::new(FIELD, e.to_string()))?;
        match parsed {
            Location::Local { root, key } => Ok(ArtifactTarget::Directory(if key.is_empty() {
                root
            } else {
                root.join(key)
            })),
            Location::S3 { .. } if !parsed.is_prefix() => {
                let text = crate::quote(text);
                Err(FieldError::new(
                    FIELD,
                    format!(
                        "`{text}` names one object: artifacts go under a prefix, which must end with `/` (e.g. `{text}/`)"
                    ),
                ))
            }
            s3 @ Location::S3 { .. } => Ok(ArtifactTarget::Storage(s3)),
        }
    }

    /// The location string [`ArtifactTarget::parse_location`] reads back,
    /// or `None` for [`ArtifactTarget::Inline`].
    pub fn location(&self) -> Option<String> {
        match self {
            ArtifactTarget::Inline => None,
            ArtifactTarget::Directory(d) => Some(d.to_string_lossy().into_owned()),
            ArtifactTarget::Storage(prefix) => Some(prefix.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(location: &str, expected: Result<ArtifactTarget, &str>) {
        let got = ArtifactTarget::parse_location(location).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned));
        if let Ok(target) = ArtifactTarget::parse_location(location)
            && let Some(back) = target.location()
        {
            assert_eq!(
                ArtifactTarget::parse_location(&back).expect("round trip"),
                target
            );
        }
    }

    #[test]
    fn artifact_targets() {
        check(
            "out/chunks",
            Ok(ArtifactTarget::Directory("out/chunks".into())),
        );
        check(
            "file:///tmp/a%20b/",
            Ok(ArtifactTarget::Directory("/tmp/a b/".into())),
        );
        check(
            "s3://renders/p/chunks/ab/cd/k/",
            Ok(ArtifactTarget::Storage(
                Location::parse("s3://renders/p/chunks/ab/cd/k/").expect("valid"),
            )),
        );
        check(
            "s3://renders",
            Ok(ArtifactTarget::Storage(
                Location::parse("s3://renders").expect("valid"),
            )),
        );
        check(
            "s3://renders/a//b/",
            Err(
                "field `output.location`: location `s3://renders/a//b/`: a key may not have empty segments (`//`)",
            ),
        );
        check(
            "gs://renders/x/",
            Err(
                "field `output.location`: location `gs://renders/x/`: unsupported scheme `gs://` (expected s3://, file:// or a path)",
            ),
        );
        check(
            "s3://bkt/k",
            Err(
                "field `output.location`: `s3://bkt/k` names one object: artifacts go under a prefix, which must end with `/` (e.g. `s3://bkt/k/`)",
            ),
        );
        check("", Err("field `output.location`: is empty"));
    }
}
