//! The embedded workers' directory in the temporary directory, and the
//! sweep that removes the ones killed coordinators left.
//!
//! A coordinator with embedded workers keeps their caches (bundles fetched
//! from storage and unpacked, chunk scratch) in a `montage-workers-*`
//! directory of the temporary directory. A normal exit or Ctrl-C removes it;
//! a process killed with SIGKILL (the OOM killer, a fleet node's
//! supervisor) cannot. So each live directory holds a lock file that its
//! process keeps locked (`flock`), and every coordinator that starts
//! embedded workers first removes the siblings whose lock nobody holds:
//! their owner is gone. A fleet node that is killed over and over no
//! longer fills its disk with them.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The prefix of the embedded workers' directories.
pub(crate) const PREFIX: &str = "montage-workers-";

/// The lock file inside each directory, locked by its live owner.
pub(crate) const LOCK_FILE: &str = ".owner.lock";

/// A lock file younger than this is left alone even when unlocked: its
/// owner creates it and locks it a moment later, and must not lose the
/// directory in between.
const LOCK_GRACE: Duration = Duration::from_secs(60);

/// A directory without a lock file (made by a version before the lock, or
/// one whose owner has not created it yet) is removed once this old.
const UNLOCKED_AGE: Duration = Duration::from_secs(60 * 60);

/// A `montage-workers-*` directory in the temporary directory, locked for
/// as long as this value lives and removed when it drops.
#[derive(Debug)]
pub(crate) struct EmbeddedDir {
    dir: tempfile::TempDir,
    /// Held locked: dropping it (after `dir`) releases the lock.
    _lock: File,
}

impl EmbeddedDir {
    /// Removes the directories killed coordinators left in `tmp` (see
    /// [`sweep`]), then creates and locks this process's own there.
    ///
    /// # Errors
    /// Creating the directory or its lock file failed.
    pub(crate) fn create(tmp: &Path) -> std::io::Result<EmbeddedDir> {
        let removed = sweep(tmp);
        if removed > 0 {
            tracing::info!(
                removed,
                dir = %tmp.display(),
                "removed local workers' directories that killed coordinators left"
            );
        }
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(tmp)?;
        let lock = File::create(dir.path().join(LOCK_FILE))?;
        // A file nobody else has opened yet: this cannot wait. On a file
        // system without locks it fails, and a sweeper cannot lock the
        // file either, so the directory is never swept: still safe.
        if let Err(e) = lock.try_lock() {
            tracing::warn!(
                dir = %dir.path().display(),
                error = %e,
                "cannot lock the local workers' directory: if this process is killed, remove it by hand"
            );
        }
        Ok(EmbeddedDir { dir, _lock: lock })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the `montage-workers-*` directories in `tmp` whose owner is
/// gone: their lock file is unlocked (and older than [`LOCK_GRACE`]), or
/// they have none and are older than [`UNLOCKED_AGE`]. Anything it cannot
/// read, lock or remove (another user's directory, a symlink, a race with
/// another sweeper) is left as it is. Returns how many it removed.
pub(crate) fn sweep(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(PREFIX)) {
            continue;
        }
        // Not followed: a symlink is never swept.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        // Held (when it could be taken) until the directory is gone, so no
        // process can take the directory over meanwhile.
        let Some(_held) = abandoned(&dir) else {
            continue;
        };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed += 1,
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "not swept"),
        }
    }
    removed
}

/// `Some` when `dir`'s owner is gone, holding its lock file locked if it
/// has one.
fn abandoned(dir: &Path) -> Option<Option<File>> {
    match File::open(dir.join(LOCK_FILE)) {
        Ok(lock) => {
            let age = lock.metadata().ok()?.modified().ok().map(age)?;
            (age >= LOCK_GRACE && lock.try_lock().is_ok()).then_some(Some(lock))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let age = std::fs::metadata(dir).ok()?.modified().ok().map(age)?;
            (age >= UNLOCKED_AGE).then_some(None)
        }
        Err(_) => None,
    }
}

/// How long ago `t` was (zero for a time in the future).
fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_age(path: &Path, age: Duration) {
        let t = SystemTime::now() - age;
        File::open(path)
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
    }

    fn names(tmp: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(tmp)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_directories_whose_owner_is_gone_are_swept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let hour = Duration::from_secs(3600);

        // A live owner's, its lock aged past the grace: kept by the lock.
        let live = EmbeddedDir::create(t).expect("live");
        set_age(&live.path().join(LOCK_FILE), hour);
        // A dead owner's: unlocked, old lock file, a file inside.
        let dead = t.join(format!("{PREFIX}dead"));
        std::fs::create_dir(&dead).expect("mkdir");
        std::fs::write(dead.join("bundle.bin"), b"left behind").expect("write");
        File::create(dead.join(LOCK_FILE)).expect("lock file");
        set_age(&dead.join(LOCK_FILE), hour);
        // A dead owner's lock file just made: within the grace, kept.
        let young = t.join(format!("{PREFIX}young"));
        std::fs::create_dir(&young).expect("mkdir");
        File::create(young.join(LOCK_FILE)).expect("lock file");
        // Without a lock file: an old one goes, a new one stays.
        let legacy = t.join(format!("{PREFIX}legacy"));
        std::fs::create_dir(&legacy).expect("mkdir");
        set_age(&legacy, 2 * hour);
        let fresh = t.join(format!("{PREFIX}fresh"));
        std::fs::create_dir(&fresh).expect("mkdir");
        // Not ours, however old: other names, a plain file, a symlink.
        let other = t.join("montage-other");
        std::fs::create_dir(&other).expect("mkdir");
        set_age(&other, 2 * hour);
        std::fs::write(t.join(format!("{PREFIX}file")), b"").expect("file");
        std::os::unix::fs::symlink(&dead, t.join(format!("{PREFIX}link"))).expect("symlink");

        assert_eq!(sweep(t), 2);
        let live_name = live.path().file_name().expect("name").to_string_lossy();
        let mut kept = vec![
            live_name.into_owned(),
            "montage-other".to_owned(),
            format!("{PREFIX}file"),
            format!("{PREFIX}fresh"),
            format!("{PREFIX}link"),
            format!("{PREFIX}young"),
        ];
        kept.sort();
        assert_eq!(names(t), kept);

        // Once its owner drops it, the live directory is gone.
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }
}
