//! What a worker lets its network clients do: which local paths they may
//! name ([`AllowedPaths`]) and whether their bearer token is right
//! ([`check_token`], in constant time).
//!
//! A client names local paths in three places: the directory artifacts are
//! written into (`output.location`), a scene bundle directory
//! (`source.bundle_path`) and a bundle archive by path or `file://` URL
//! (`source.bundle.location`). Without a rule, any client could make the
//! worker write `chunk-*.ts` files into any directory it can write, or read
//! any bundle on its disk. So every such path must lie, after `..` is
//! refused and symlinks are followed, under a directory the operator
//! allowed (`chunk-worker serve --allow-path DIR`), or the call gets
//! `PERMISSION_DENIED` naming the path and the flag.

use std::path::{Component, Path, PathBuf};

use crate::WorkerError;

/// The flag an operator uses to allow a directory, named in refusals.
pub const ALLOW_PATH_FLAG: &str = "--allow-path DIR";

/// Which local paths a worker accepts from its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedPaths {
    /// Only paths under these directories (made canonical when the worker
    /// binds: each must exist). Empty, the default: no local path at all;
    /// sources come as registered compositions or bundles in object
    /// storage, artifacts go inline or to `s3://` prefixes.
    Under(Vec<PathBuf>),
    /// Any path this process can reach. Only for a worker that nothing but
    /// its own process can call: the coordinator's embedded pool, which
    /// listens on loopback and requires a random token made for that
    /// process (`bind` refuses `Any` without a token).
    Any,
}

impl Default for AllowedPaths {
    fn default() -> Self {
        AllowedPaths::Under(Vec::new())
    }
}

impl AllowedPaths {
    /// The same rule with every root made canonical (absolute, symlinks
    /// followed), as checks compare against.
    ///
    /// # Errors
    /// [`WorkerError::Io`] naming a root that does not exist or cannot be
    /// read.
    pub fn canonical(&self) -> Result<AllowedPaths, WorkerError> {
        match self {
            AllowedPaths::Any => Ok(AllowedPaths::Any),
            AllowedPaths::Under(roots) => roots
                .iter()
                .map(|r| std::fs::canonicalize(r).map_err(|e| WorkerError::io(r, e)))
                .collect::<Result<Vec<_>, _>>()
                .map(AllowedPaths::Under),
        }
    }

    /// Checks a directory artifacts are to be written into, creating it
    /// (and its parents) when it is allowed, and returns it as a canonical
    /// path to write into. Checked again once created, so a symlink placed
    /// on the way cannot lead outside. With [`AllowedPaths::Any`] nothing
    /// is checked or created: the trusted caller made the directory, and
    /// may remove it when it stops waiting for the chunk.
    ///
    /// # Errors
    /// [`WorkerError::PathNotAllowed`] for a relative path, `..`, or a
    /// path outside the roots; [`WorkerError::Io`] if it cannot be created.
    pub fn writable_dir(&self, field: &'static str, dir: &Path) -> Result<PathBuf, WorkerError> {
        if *self == AllowedPaths::Any {
            return Ok(dir.to_path_buf());
        }
        self.check(field, dir)?;
        std::fs::create_dir_all(dir).map_err(|e| WorkerError::io(dir, e))?;
        let real = std::fs::canonicalize(dir).map_err(|e| WorkerError::io(dir, e))?;
        self.inside(field, dir, &real)?;
        Ok(real)
    }

    /// Checks a file or directory the worker is to read (a bundle), which
    /// must exist; returns its canonical path. A path outside the roots is
    /// refused whether it exists or not, so a client learns nothing about
    /// the rest of the disk.
    ///
    /// # Errors
    /// [`WorkerError::PathNotAllowed`] as for
    /// [`AllowedPaths::writable_dir`]; [`WorkerError::BundleNotFound`] for
    /// an allowed path that does not exist.
    pub fn readable(&self, field: &'static str, path: &Path) -> Result<PathBuf, WorkerError> {
        if *self == AllowedPaths::Any {
            return Ok(path.to_path_buf());
        }
        let lexical = self.check(field, path)?;
        let real = std::fs::canonicalize(path).map_err(|_| WorkerError::BundleNotFound {
            path: lexical.clone(),
        })?;
        self.inside(field, path, &real)?;
        Ok(real)
    }

    /// The checks that need no file to exist: absolute, no `..`, and the
    /// deepest existing ancestor (symlinks followed) plus the rest under a
    /// root. Returns that resolved path.
    fn check(&self, field: &'static str, path: &Path) -> Result<PathBuf, WorkerError> {
        let refuse = |reason: &str| WorkerError::PathNotAllowed {
            field,
            path: spec::quote(&path.to_string_lossy()),
            reason: reason.to_owned(),
        };
        if !path.is_absolute() {
            return Err(refuse("it is relative: give an absolute path"));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(refuse("it contains `..`"));
        }
        let resolved = resolve_existing_prefix(path);
        self.inside(field, path, &resolved)?;
        Ok(resolved)
    }

    /// Refuses `real` (what `given` resolves to) unless it is under a root.
    fn inside(&self, field: &'static str, given: &Path, real: &Path) -> Result<(), WorkerError> {
        let allowed = match self {
            AllowedPaths::Any => true,
            AllowedPaths::Under(roots) => roots.iter().any(|root| real.starts_with(root)),
        };
        if allowed {
            return Ok(());
        }
        let reason = match self {
            AllowedPaths::Under(roots) if roots.is_empty() => format!(
                "this worker allows no local paths: start it with `{ALLOW_PATH_FLAG}` to allow a directory"
            ),
            _ if real != given => format!(
                "it leads (through a symlink) outside the directories this worker allows with `{ALLOW_PATH_FLAG}`"
            ),
            _ => {
                format!("it is outside the directories this worker allows with `{ALLOW_PATH_FLAG}`")
            }
        };
        Err(WorkerError::PathNotAllowed {
            field,
            path: spec::quote(&given.to_string_lossy()),
            reason,
        })
    }
}

/// `path` with its deepest existing ancestor made canonical (symlinks
/// followed) and the components below it appended as given. The caller has
/// refused `..`, so the appended part cannot climb back out.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut here = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(here) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (here.parent(), here.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                here = parent;
            }
            // Nothing exists, not even `/`: compare the path as given.
            _ => return path.to_path_buf(),
        }
    }
}

/// Checks the `authorization: Bearer <token>` metadata of a call against
/// `expected`, comparing in constant time (`subtle`), so how long the
/// check takes says nothing about how much of a guess was right.
///
/// # Errors
/// [`WorkerError::Unauthenticated`] when the header is missing or the token
/// differs.
pub(crate) fn check_token(
    expected: &str,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<(), WorkerError> {
    use subtle::ConstantTimeEq;
    let given = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Err(WorkerError::Unauthenticated {
            reason: "missing `authorization: Bearer <token>` metadata",
        });
    };
    // `ct_eq` on slices of different lengths is false at once: that only
    // tells a caller the token's length, not its bytes.
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(WorkerError::Unauthenticated {
            reason: "wrong bearer token",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dirs: &[&Path]) -> AllowedPaths {
        AllowedPaths::Under(dirs.iter().map(|d| d.to_path_buf()).collect())
            .canonical()
            .expect("roots exist")
    }

    #[track_caller]
    fn refused(r: Result<PathBuf, WorkerError>, reason: &str) {
        match r {
            Err(e @ WorkerError::PathNotAllowed { .. }) => {
                let text = e.to_string();
                assert!(text.contains(reason), "{text}");
            }
            other => panic!("expected a refusal containing {reason:?}, got {other:?}"),
        }
    }

    #[test]
    fn paths_must_stay_under_an_allowed_root() {
        let allowed = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let rule = roots(&[allowed.path()]);

        let out = rule
            .writable_dir("output.location", &allowed.path().join("a/b"))
            .expect("inside");
        assert!(out.is_dir());
        assert_eq!(
            out,
            std::fs::canonicalize(allowed.path())
                .expect("canonical")
                .join("a/b")
        );

        refused(
            rule.writable_dir("output.location", outside.path()),
            "is outside the directories this worker allows with `--allow-path DIR`",
        );
        refused(
            rule.writable_dir(
                "output.location",
                &allowed.path().join("../").join(
                    outside
                        .path()
                        .file_name()
                        .expect("name")
                        .to_string_lossy()
                        .as_ref(),
                ),
            ),
            "it contains `..`",
        );
        refused(
            rule.writable_dir("output.location", Path::new("rel/dir")),
            "it is relative",
        );
        // A refused directory is not created.
        assert!(!outside.path().join("x").exists());
        refused(
            rule.writable_dir("output.location", &outside.path().join("x")),
            "outside",
        );
        assert!(!outside.path().join("x").exists());

        refused(
            AllowedPaths::default().readable("source.bundle_path", allowed.path()),
            "this worker allows no local paths: start it with `--allow-path DIR`",
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_a_root_are_refused() {
        let allowed = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("scene.json"), "{}").expect("write");
        std::os::unix::fs::symlink(outside.path(), allowed.path().join("link")).expect("link");
        let rule = roots(&[allowed.path()]);
        refused(
            rule.readable("source.bundle_path", &allowed.path().join("link")),
            "leads (through a symlink) outside",
        );
        refused(
            rule.writable_dir("output.location", &allowed.path().join("link/new")),
            "leads (through a symlink) outside",
        );
        assert!(!outside.path().join("new").exists());
    }

    #[test]
    fn a_missing_bundle_is_not_found_only_inside_a_root() {
        let allowed = tempfile::tempdir().expect("tempdir");
        let rule = roots(&[allowed.path()]);
        assert!(matches!(
            rule.readable("source.bundle_path", &allowed.path().join("missing")),
            Err(WorkerError::BundleNotFound { .. })
        ));
        // Outside, existing or not, the answer is the same refusal.
        refused(
            rule.readable("source.bundle_path", Path::new("/nonexistent/x")),
            "outside",
        );
        refused(
            rule.readable("source.bundle_path", Path::new("/etc")),
            "outside",
        );
    }

    #[test]
    fn any_takes_paths_as_given() {
        let p = Path::new("relative/dir");
        assert_eq!(
            AllowedPaths::Any
                .readable("source.bundle_path", p)
                .expect("any"),
            p
        );
    }

    #[test]
    fn tokens_are_compared_whole() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert!(matches!(
            check_token("secret", &md),
            Err(WorkerError::Unauthenticated { reason }) if reason.starts_with("missing")
        ));
        for (given, ok) in [
            ("Bearer secret", true),
            ("Bearer secre", false),
            ("Bearer secret2", false),
            ("Bearer Secret", false),
            ("secret", false),
        ] {
            md.insert("authorization", given.parse().expect("ascii"));
            assert_eq!(check_token("secret", &md).is_ok(), ok, "{given}");
        }
    }
}
