//! Bundle files: path safety and reading.

use std::path::{Component, Path, PathBuf};

use crate::CompositionError;

/// The largest file the bundle may hold that a scene reads whole.
pub const MAX_ASSET_BYTES: u64 = 1 << 30;

/// Resolves `rel` inside the bundle `root`: a relative path without `..`,
/// whose real location (symlinks followed) stays inside the bundle.
///
/// # Errors
/// [`CompositionError::Invalid`] for unsafe paths, [`CompositionError::MissingAsset`]
/// if the file does not exist.
pub fn resolve_path(root: &Path, rel: &str, context: &str) -> Result<PathBuf, CompositionError> {
    let invalid = |message: String| CompositionError::Invalid {
        context: context.to_owned(),
        message,
    };
    let p = Path::new(rel);
    if rel.is_empty() {
        return Err(invalid("asset path is empty".into()));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(invalid(format!(
                    "asset path `{rel}` contains `..`: paths stay inside the bundle"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(format!(
                    "asset path `{rel}` is absolute: paths are relative to the bundle"
                )));
            }
        }
    }
    let joined = root.join(p);
    let real = match joined.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CompositionError::MissingAsset {
                context: context.to_owned(),
                path: rel.to_owned(),
            });
        }
        Err(e) => return Err(invalid(format!("cannot open `{rel}`: {e}"))),
    };
    if !real.starts_with(root) {
        return Err(invalid(format!(
            "asset path `{rel}` leads outside the bundle (through a symlink)"
        )));
    }
    if !real.is_file() {
        return Err(invalid(format!("asset path `{rel}` is not a file")));
    }
    Ok(real)
}

/// Reads a bundle file whole, refusing files over [`MAX_ASSET_BYTES`].
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file.
pub fn read_file(path: &Path, rel: &str, context: &str) -> Result<Vec<u8>, CompositionError> {
    read_limited(path, rel, context, MAX_ASSET_BYTES)
}

/// Reads a bundle file whole, refusing files over `max` bytes.
///
/// # Errors
/// [`CompositionError::Invalid`] naming the file.
pub fn read_limited(
    path: &Path,
    rel: &str,
    context: &str,
    max: u64,
) -> Result<Vec<u8>, CompositionError> {
    let invalid = |message: String| CompositionError::Invalid {
        context: context.to_owned(),
        message,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| invalid(format!("cannot read `{rel}`: {e}")))?
        .len();
    if len > max {
        return Err(invalid(format!(
            "`{rel}` is {len} bytes: at most {max} allowed"
        )));
    }
    std::fs::read(path).map_err(|e| invalid(format!("cannot read `{rel}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::write(root.join("a.png"), b"x").expect("write");
        assert!(resolve_path(&root, "a.png", "c").is_ok());
        let e = resolve_path(&root, "../a.png", "layer `X`").expect_err("dotdot");
        assert_eq!(
            e.to_string(),
            "layer `X`: asset path `../a.png` contains `..`: paths stay inside the bundle"
        );
        assert!(resolve_path(&root, "/etc/passwd", "c").is_err());
        assert_eq!(
            resolve_path(&root, "b.png", "layer `X`")
                .expect_err("missing")
                .to_string(),
            "layer `X`: b.png not found"
        );
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"x").expect("write");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link"))
                .expect("symlink");
            let e = resolve_path(&root, "link", "c").expect_err("symlink out");
            assert!(e.to_string().contains("leads outside the bundle"), "{e}");
        }
    }
}
