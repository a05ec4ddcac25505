//! Deterministic bundle archives: a directory packed into a tar whose bytes
//! depend only on the files' relative paths, contents and executable bits,
//! so the archive's sha256 names the bundle; and a safe unpacker.
//!
//! Packing: entries sorted by path (byte order), directories before their
//! contents, mtime 0, uid/gid 0, no user or group names, mode `0755` for
//! directories and executable files and `0644` for other files. A symlink is
//! archived as the file it points to when that file lies inside the
//! directory; one leading outside (or to a directory) is an error.
//!
//! Unpacking refuses absolute paths, `..`, symlinks, hard links and special
//! files, and stops at [`UnpackLimits`]. It writes into a temporary
//! directory beside the destination and renames it into place, so the
//! destination is complete or absent.
//!
//! These functions block; call them from `spawn_blocking` in async code.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::fsutil::TempPath;
use crate::hash::{ContentHash, Hasher};

/// The most bytes an archive may unpack to by default (4 GiB).
pub const MAX_UNPACKED_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The most entries an archive may hold by default.
pub const MAX_ENTRIES: u64 = 100_000;
/// The file name extension of packed bundles.
pub const ARCHIVE_EXTENSION: &str = "tar";

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;
const EXEC_MODE: u32 = 0o755;

/// Bounds on what an archive may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes of all files.
    pub max_total_bytes: u64,
    /// Number of entries (files and directories).
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: MAX_UNPACKED_BYTES,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// A packed archive on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedArchive {
    /// `<dir>/<sha256>.tar`.
    pub path: PathBuf,
    /// The archive's sha256.
    pub sha256: ContentHash,
    /// The archive's size in bytes.
    pub size: u64,
}

/// What an archive unpacked to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of all files.
    pub bytes: u64,
}

enum Kind {
    Dir,
    File { source: PathBuf, executable: bool },
}

/// Packs `dir` into `out` and returns the archive's sha256.
///
/// # Errors
/// [`StorageError::Pack`] naming the entry for a symlink leading outside
/// `dir`, a non-UTF-8 name or a special file; [`StorageError::Io`] for read
/// or write failures.
pub fn pack<W: Write>(dir: &Path, out: W) -> Result<ContentHash> {
    let entries = collect(dir)?;
    let mut builder = tar::Builder::new(HashingWriter {
        inner: out,
        hasher: Hasher::new(),
    });
    for (rel, kind) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(DIR_MODE);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{rel}/"), io::empty())
                    .map_err(|e| StorageError::io("write archive entry", dir.join(&rel), e))?;
            }
            Kind::File { source, executable } => {
                let file =
                    fs::File::open(&source).map_err(|e| StorageError::io("open", &source, e))?;
                let len = file
                    .metadata()
                    .map_err(|e| StorageError::io("stat", &source, e))?
                    .len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if executable { EXEC_MODE } else { FILE_MODE });
                header.set_size(len);
                // `take` guards against a file growing while it is packed.
                builder
                    .append_data(&mut header, &rel, file.take(len))
                    .map_err(|e| StorageError::io("write archive entry", &source, e))?;
            }
        }
    }
    let writer = builder
        .into_inner()
        .map_err(|e| StorageError::io("finish archive", dir, e))?;
    let HashingWriter { mut inner, hasher } = writer;
    inner
        .flush()
        .map_err(|e| StorageError::io("flush archive", dir, e))?;
    Ok(hasher.finish())
}

/// Packs `dir` into `<out_dir>/<sha256>.tar` (written under a temporary name
/// and renamed).
///
/// # Errors
/// As [`pack`], plus failures creating or renaming the archive file.
pub fn pack_to_file(dir: &Path, out_dir: &Path) -> Result<PackedArchive> {
    fs::create_dir_all(out_dir).map_err(|e| StorageError::io("create directory", out_dir, e))?;
    let tmp = TempPath::inside(out_dir, "bundle.tar");
    let file =
        fs::File::create(tmp.path()).map_err(|e| StorageError::io("create", tmp.path(), e))?;
    let mut writer = io::BufWriter::new(file);
    let sha256 = pack(dir, &mut writer)?;
    let file = writer
        .into_inner()
        .map_err(|e| StorageError::io("write", tmp.path(), e.into_error()))?;
    file.sync_all()
        .map_err(|e| StorageError::io("sync", tmp.path(), e))?;
    let size = file
        .metadata()
        .map_err(|e| StorageError::io("stat", tmp.path(), e))?
        .len();
    drop(file);
    let path = out_dir.join(format!("{sha256}.{ARCHIVE_EXTENSION}"));
    persist_blocking(tmp, &path)?;
    Ok(PackedArchive { path, sha256, size })
}

fn persist_blocking(tmp: TempPath, dest: &Path) -> Result<()> {
    fs::rename(tmp.path(), dest).map_err(|e| StorageError::io("rename into place", dest, e))?;
    std::mem::forget(tmp);
    Ok(())
}

/// Every entry below `root`, sorted by relative path.
fn collect(root: &Path) -> Result<Vec<(String, Kind)>> {
    let canonical_root =
        fs::canonicalize(root).map_err(|e| StorageError::io("open directory", root, e))?;
    let pack_err = |entry: &str, reason: String| StorageError::Pack {
        dir: root.to_path_buf(),
        entry: entry.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel_dir)) = stack.pop() {
        let read = fs::read_dir(&dir).map_err(|e| StorageError::io("list", &dir, e))?;
        for entry in read {
            let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
            let name = entry.file_name();
            let path = entry.path();
            let Some(name) = name.to_str() else {
                return Err(pack_err(
                    &format!("{rel_dir}{}", name.to_string_lossy()),
                    "the name is not UTF-8".to_owned(),
                ));
            };
            let rel = format!("{rel_dir}{name}");
            let file_type = entry
                .file_type()
                .map_err(|e| StorageError::io("stat", &path, e))?;
            if file_type.is_dir() {
                stack.push((path, format!("{rel}/")));
                out.push((rel, Kind::Dir));
            } else if file_type.is_file() {
                let md = entry
                    .metadata()
                    .map_err(|e| StorageError::io("stat", &path, e))?;
                out.push((
                    rel,
                    Kind::File {
                        source: path,
                        executable: is_executable(&md),
                    },
                ));
            } else if file_type.is_symlink() {
                let target = fs::canonicalize(&path)
                    .map_err(|e| pack_err(&rel, format!("broken symbolic link: {e}")))?;
                if !target.starts_with(&canonical_root) {
                    return Err(pack_err(
                        &rel,
                        format!(
                            "symbolic link to {} leads outside the bundle",
                            target.display()
                        ),
                    ));
                }
                let md = fs::metadata(&target).map_err(|e| StorageError::io("stat", &target, e))?;
                if !md.is_file() {
                    return Err(pack_err(&rel, "symbolic link to a directory".to_owned()));
                }
                out.push((
                    rel,
                    Kind::File {
                        source: target,
                        executable: is_executable(&md),
                    },
                ));
            } else {
                return Err(pack_err(&rel, "not a regular file or directory".to_owned()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(unix)]
fn is_executable(md: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    md.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_md: &fs::Metadata) -> bool {
    false
}

struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Unpacks the tar read from `archive` into `dest`, which must not exist.
/// `name` names the archive in errors.
///
/// # Errors
/// [`StorageError::Unpack`] naming the entry for an absolute path, a `..`
/// component, a symlink, hard link or special file, a duplicate entry, a
/// malformed archive, or when [`UnpackLimits`] are exceeded (nothing is left
/// at `dest` then); [`StorageError::Io`] for write failures.
pub fn unpack<R: Read>(
    archive: R,
    dest: &Path,
    limits: &UnpackLimits,
    name: &str,
) -> Result<UnpackStats> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(parent).map_err(|e| StorageError::io("create directory", parent, e))?;
    let tmp = TempPath::beside(dest);
    fs::create_dir(tmp.path()).map_err(|e| StorageError::io("create directory", tmp.path(), e))?;
    let stats = unpack_into(archive, tmp.path(), limits, name)?;
    if dest.exists() {
        return Err(StorageError::io(
            "unpack into",
            dest,
            io::Error::new(io::ErrorKind::AlreadyExists, "destination exists"),
        ));
    }
    persist_blocking(tmp, dest)?;
    Ok(stats)
}

/// Unpacks the archive file at `path` into `dest`.
///
/// # Errors
/// As [`unpack`], plus failures opening `path`.
pub fn unpack_file(path: &Path, dest: &Path, limits: &UnpackLimits) -> Result<UnpackStats> {
    let file = fs::File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    unpack(
        io::BufReader::new(file),
        dest,
        limits,
        &path.display().to_string(),
    )
}

fn unpack_into<R: Read>(
    archive: R,
    root: &Path,
    limits: &UnpackLimits,
    name: &str,
) -> Result<UnpackStats> {
    let mut unpacker = Unpacker {
        root,
        limits,
        name,
        stats: UnpackStats::default(),
        count: 0,
    };
    let mut tar = tar::Archive::new(archive);
    let entries = tar
        .entries()
        .map_err(|e| unpacker.refuse("", &format!("not a tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| {
            unpacker.refuse(
                "",
                &format!("malformed archive: {}", printable(&e.to_string())),
            )
        })?;
        unpacker.entry(entry)?;
    }
    Ok(unpacker.stats)
}

/// One archive being unpacked under `root`, within `limits`.
struct Unpacker<'a> {
    root: &'a Path,
    limits: &'a UnpackLimits,
    /// The archive's name in errors.
    name: &'a str,
    stats: UnpackStats,
    count: u64,
}

impl Unpacker<'_> {
    fn refuse(&self, entry: &str, reason: &str) -> StorageError {
        StorageError::Unpack {
            archive: self.name.to_owned(),
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// Checks one entry against the limits and writes it: directories and
    /// regular files only, every path inside the root.
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        self.count += 1;
        if self.count > self.limits.max_entries {
            return Err(self.refuse(
                &shown,
                &format!("more than {} entries (the limit)", self.limits.max_entries),
            ));
        }
        let path = entry
            .path()
            .map_err(|e| self.refuse(&shown, &format!("unreadable path: {e}")))?
            .into_owned();
        let rel = safe_relative(&path).map_err(|reason| self.refuse(&shown, reason))?;
        let target = self.root.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                if rel.as_os_str().is_empty() {
                    return Ok(());
                }
                fs::create_dir_all(&target)
                    .map_err(|e| StorageError::io("create directory", &target, e))?;
                self.stats.dirs += 1;
                Ok(())
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(self.refuse(&shown, "a file entry without a name"));
                }
                self.file(&mut entry, &shown, &target)
            }
            tar::EntryType::Symlink => Err(self.refuse(&shown, "symbolic links are not allowed")),
            tar::EntryType::Link => Err(self.refuse(&shown, "hard links are not allowed")),
            other => Err(self.refuse(
                &shown,
                &format!("entry type {other:?} is not allowed (only files and directories)"),
            )),
        }
    }

    /// Writes a regular file entry, refusing one that would exceed the
    /// byte limit, exists already, or is shorter than its header says.
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
        target: &Path,
    ) -> Result<()> {
        let size = entry
            .header()
            .size()
            .map_err(|e| self.refuse(shown, &format!("bad size: {e}")))?;
        if self.stats.bytes.saturating_add(size) > self.limits.max_total_bytes {
            return Err(self.refuse(
                shown,
                &format!(
                    "unpacking would exceed {} bytes (the limit)",
                    self.limits.max_total_bytes
                ),
            ));
        }
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    self.refuse(shown, "duplicate entry")
                } else {
                    StorageError::io("create", target, e)
                }
            })?;
        let written = io::copy(&mut entry.take(size), &mut file)
            .map_err(|e| self.refuse(shown, &format!("truncated entry: {e}")))?;
        if written != size {
            return Err(self.refuse(shown, "truncated entry"));
        }
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        set_mode(&file, if executable { EXEC_MODE } else { FILE_MODE })
            .map_err(|e| StorageError::io("set permissions", target, e))?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }
}

/// Error text from the tar reader may quote raw header bytes: escape them
/// and keep it short.
fn printable(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() > MAX_CHARS {
        let cut: String = escaped.chars().take(MAX_CHARS).collect();
        format!("{cut}…")
    } else {
        escaped
    }
}

/// The entry's path as plain relative components, or why it is unsafe.
fn safe_relative(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` in the path leads outside the target"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed");
            }
        }
    }
    Ok(out)
}

#[cfg(unix)]
fn set_mode(file: &fs::File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &fs::File, _mode: u32) -> io::Result<()> {
    Ok(())
}
