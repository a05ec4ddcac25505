use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use storage::StorageError;
use storage::archive::{self, UnpackLimits};

fn write(path: &Path, body: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

/// The same bundle written twice, in a different order, at different times.
fn make_bundle(root: &Path, reverse: bool, mtime: SystemTime) {
    let mut files: Vec<(&str, &[u8])> = vec![
        ("scene.json", b"{\"layers\": []}"),
        ("fonts/Inter-Bold.ttf", b"font bytes"),
        ("images/logo.png", b"png bytes"),
        ("images/nested/deep.txt", b"deep"),
    ];
    if reverse {
        files.reverse();
    }
    for (rel, body) in &files {
        write(&root.join(rel), body);
        set_mtime(&root.join(rel), mtime);
    }
    std::os::unix::fs::symlink("scene.json", root.join("alias.json")).unwrap();
}

#[test]
fn packing_is_byte_identical_across_mtimes_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    make_bundle(
        &a,
        false,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    make_bundle(&b, true, SystemTime::now());
    let pa = archive::pack_to_file(&a, &dir.path().join("out-a")).unwrap();
    let pb = archive::pack_to_file(&b, &dir.path().join("out-b")).unwrap();
    assert_eq!(pa.sha256, pb.sha256);
    assert_eq!(
        std::fs::read(&pa.path).unwrap(),
        std::fs::read(&pb.path).unwrap()
    );
    assert_eq!(
        pa.path.file_name().unwrap().to_str().unwrap(),
        format!("{}.tar", pa.sha256)
    );
    assert_eq!(pa.size, std::fs::metadata(&pa.path).unwrap().len());

    // Debian's tar is the independent judge: sorted entries, epoch times,
    // root ownership, fixed modes.
    let out = Command::new("tar")
        .args([
            "--list",
            "--verbose",
            "--numeric-owner",
            "--full-time",
            "--file",
        ])
        .arg(&pa.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l[5]).collect();
    assert_eq!(
        names,
        [
            "alias.json",
            "fonts/",
            "fonts/Inter-Bold.ttf",
            "images/",
            "images/logo.png",
            "images/nested/",
            "images/nested/deep.txt",
            "scene.json"
        ]
    );
    for l in &lines {
        assert_eq!(l[1], "0/0", "{l:?}");
        assert_eq!(l[3], "1970-01-01", "{l:?}");
        assert!(l[0] == "-rw-r--r--" || l[0] == "drwxr-xr-x", "{l:?}");
    }

    // Round trip.
    let dest = dir.path().join("unpacked");
    let stats = archive::unpack_file(&pa.path, &dest, &UnpackLimits::default()).unwrap();
    assert_eq!((stats.files, stats.dirs), (5, 3));
    assert_eq!(
        std::fs::read(dest.join("images/nested/deep.txt")).unwrap(),
        b"deep"
    );
    assert_eq!(
        std::fs::read(dest.join("alias.json")).unwrap(),
        b"{\"layers\": []}"
    );
    assert!(
        !std::fs::symlink_metadata(dest.join("alias.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn packing_refuses_symlinks_leading_outside() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    write(&bundle.join("scene.json"), b"{}");
    write(&dir.path().join("secret.txt"), b"secret");
    std::os::unix::fs::symlink("../secret.txt", bundle.join("leak.txt")).unwrap();
    let err = archive::pack(&bundle, std::io::sink()).unwrap_err();
    assert!(matches!(err, StorageError::Pack { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`leak.txt`: symbolic link to ")
            && text.ends_with("leads outside the bundle"),
        "{text}"
    );
}

/// A tar with one raw entry, bypassing the `tar` crate's own path checks
/// (it refuses to write `..` and absolute names).
fn raw_tar(name: &str, kind: tar::EntryType, link: &str, body: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, body).unwrap();
    builder.into_inner().unwrap()
}

#[track_caller]
fn check_refused(tar_bytes: &[u8], limits: &UnpackLimits, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("target/bundle");
    let err = archive::unpack(tar_bytes, &dest, limits, "evil.tar").unwrap_err();
    assert!(matches!(err, StorageError::Unpack { .. }), "{err}");
    assert_eq!(err.to_string(), want);
    assert!(!dest.exists(), "nothing unpacked");
    // Nothing written anywhere: the temp directory is gone too.
    assert_eq!(
        std::fs::read_dir(dir.path().join("target"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn malicious_archives_are_refused() {
    let limits = UnpackLimits::default();
    check_refused(
        &raw_tar("../../escape.txt", tar::EntryType::Regular, "", b"owned"),
        &limits,
        "unpacking evil.tar: `../../escape.txt`: `..` in the path leads outside the target",
    );
    check_refused(
        &raw_tar("a/../../escape.txt", tar::EntryType::Regular, "", b"owned"),
        &limits,
        "unpacking evil.tar: `a/../../escape.txt`: `..` in the path leads outside the target",
    );
    check_refused(
        &raw_tar("/etc/evil", tar::EntryType::Regular, "", b"owned"),
        &limits,
        "unpacking evil.tar: `/etc/evil`: absolute paths are not allowed",
    );
    check_refused(
        &raw_tar("link", tar::EntryType::Symlink, "/etc/passwd", b""),
        &limits,
        "unpacking evil.tar: `link`: symbolic links are not allowed",
    );
    check_refused(
        &raw_tar("hard", tar::EntryType::Link, "/etc/passwd", b""),
        &limits,
        "unpacking evil.tar: `hard`: hard links are not allowed",
    );
    check_refused(
        &raw_tar("dev", tar::EntryType::Char, "", b""),
        &limits,
        "unpacking evil.tar: `dev`: entry type Char is not allowed (only files and directories)",
    );
    check_refused(
        &raw_tar("big.bin", tar::EntryType::Regular, "", &[7u8; 2000]),
        &UnpackLimits {
            max_total_bytes: 1000,
            max_entries: 10,
        },
        "unpacking evil.tar: `big.bin`: unpacking would exceed 1000 bytes (the limit)",
    );

    // Too many entries.
    let mut builder = tar::Builder::new(Vec::new());
    for i in 0..5 {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        builder
            .append_data(&mut h, format!("f{i}"), &b"x"[..])
            .unwrap();
    }
    let many = builder.into_inner().unwrap();
    check_refused(
        &many,
        &UnpackLimits {
            max_total_bytes: 1000,
            max_entries: 3,
        },
        "unpacking evil.tar: `f3`: more than 3 entries (the limit)",
    );

    // Not a tar at all: the error says so, in printable text.
    let dir = tempfile::tempdir().unwrap();
    let err =
        archive::unpack(&[1u8; 700][..], &dir.path().join("x"), &limits, "evil.tar").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("unpacking evil.tar: ``: malformed archive: "),
        "{text}"
    );
    assert!(!text.contains('\u{1}'), "{text}");
    assert!(!dir.path().join("x").exists());
}
