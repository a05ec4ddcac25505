//! Where a composition comes from.

use std::path::PathBuf;

use crate::{ContentHash, FieldError, Location};

/// A bundle archive in storage, named by the sha256 of its bytes: the
/// worker downloads it once, verifies it and keeps it unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BundleRef {
    /// The archive object (not a prefix): a path, `file://` URL or
    /// `s3://bucket/key`.
    pub location: Location,
    /// The sha256 of the archive's bytes.
    pub sha256: ContentHash,
}

impl BundleRef {
    /// Checks a bundle reference as typed or sent: `location` must parse as
    /// a storage location naming one object (not a prefix), `sha256` must be
    /// 64 lower-case hexadecimal digits.
    ///
    /// # Errors
    /// A [`FieldError`] naming `source.bundle.location` or
    /// `source.bundle.sha256`.
    pub fn parse(location: &str, sha256: &str) -> Result<Self, FieldError> {
        const LOCATION: &str = "source.bundle.location";
        const SHA256: &str = "source.bundle.sha256";
        if location.is_empty() {
            return Err(FieldError::new(LOCATION, "is empty"));
        }
        let parsed =
            Location::parse(location).map_err(|e| FieldError::new(LOCATION, e.to_string()))?;
        if parsed.is_prefix() {
            return Err(FieldError::new(
                LOCATION,
                format!(
                    "`{}` names a directory or prefix: expected the bundle archive itself",
                    crate::quote(location)
                ),
            ));
        }
        let sha256 = ContentHash::parse_lower_hex(sha256).map_err(|_| {
            FieldError::new(
                SHA256,
                format!(
                    "`{}`: expected the archive's sha256 as 64 lower-case hexadecimal digits",
                    crate::quote(sha256)
                ),
            )
        })?;
        Ok(BundleRef {
            location: parsed,
            sha256,
        })
    }
}

/// Where the composition comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceSpec {
    /// A Rust composition registered in the worker's binary (its
    /// `composition::Registry`).
    Registered,
    /// A scene bundle directory on the worker's disk.
    BundlePath(PathBuf),
    /// A content-addressed bundle archive in storage. The gRPC service
    /// fetches it into its bundle cache; library callers fetch it and render
    /// the unpacked directory as a [`SourceSpec::BundlePath`].
    BundleRef(BundleRef),
}

/// What identifies a composition source's contents in a cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceIdentity {
    /// A scene bundle, by the sha256 of its deterministic archive.
    Bundle(ContentHash),
    /// A composition compiled into the workers' binaries, by the version
    /// its author gives it (`CompositionMeta::version`).
    Registered {
        /// The composition's version.
        version: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(location: &str, sha256: &str, expected: Result<(), &str>) {
        let got = BundleRef::parse(location, sha256)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn bundle_refs_are_checked() {
        let sha = "0123456789abcdef".repeat(4);
        check("s3://b-1/p/bundles/x.tar", &sha, Ok(()));
        check("/srv/bundles/x.tar", &sha, Ok(()));
        check("file:///srv/bundles/x.tar", &sha, Ok(()));
        check("", &sha, Err("field `source.bundle.location`: is empty"));
        check(
            "s3://b-1/p/",
            &sha,
            Err(
                "field `source.bundle.location`: `s3://b-1/p/` names a directory or prefix: expected the bundle archive itself",
            ),
        );
        check(
            "ftp://x/y.tar",
            &sha,
            Err(
                "field `source.bundle.location`: location `ftp://x/y.tar`: unsupported scheme `ftp://` (expected s3://, file:// or a path)",
            ),
        );
        let upper = sha.to_ascii_uppercase();
        check(
            "s3://b-1/x.tar",
            &upper,
            Err(&format!(
                "field `source.bundle.sha256`: `{upper}`: expected the archive's sha256 as 64 lower-case hexadecimal digits"
            )),
        );
        check(
            "s3://b-1/x.tar",
            "abc",
            Err(
                "field `source.bundle.sha256`: `abc`: expected the archive's sha256 as 64 lower-case hexadecimal digits",
            ),
        );
    }
}
