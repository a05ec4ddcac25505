use std::time::Duration;

use futures_util::TryStreamExt as _;
use storage::{ContentHash, LocalStore, Location, ObjectStore, S3Config, StorageError};

#[tokio::test]
async fn local_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("store"));
    let data = crate::support::bytes(300_000, 1);
    let sha = ContentHash::of_bytes(&data);

    let meta = store
        .put_bytes("a/b/one.bin", data.clone().into())
        .await
        .unwrap();
    assert_eq!((meta.size, meta.sha256), (300_000, Some(sha)));
    let src = dir.path().join("src.bin");
    std::fs::write(&src, b"second").unwrap();
    store.put_file("a/two.bin", &src).await.unwrap();
    store
        .put_bytes("other/three.bin", "3".into())
        .await
        .unwrap();

    // Stream back.
    let got: Vec<u8> = store
        .get_stream("a/b/one.bin")
        .await
        .unwrap()
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .unwrap();
    assert_eq!(got, data);

    // To a file, verified.
    let dest = dir.path().join("out/one.bin");
    let meta = store
        .get_file("a/b/one.bin", &dest, Some(&sha))
        .await
        .unwrap();
    assert_eq!(meta.sha256, Some(sha));
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    // A wrong hash is an error and leaves no file.
    let wrong = ContentHash::of_bytes(b"something else");
    let bad_dest = dir.path().join("out/bad.bin");
    let err = store
        .get_file("a/b/one.bin", &bad_dest, Some(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::HashMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("expected {wrong}, got {sha}")),
        "{err}"
    );
    assert!(!bad_dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        1,
        "no temp file left"
    );

    // Head and list.
    assert_eq!(store.head("a/two.bin").await.unwrap().unwrap().size, 6);
    assert!(store.head("a/missing").await.unwrap().is_none());
    let keys: Vec<_> = store
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["a/b/one.bin", "a/two.bin"]);
    let keys: Vec<_> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["a/b/one.bin", "a/two.bin", "other/three.bin"]);
    assert!(store.list("zzz/").await.unwrap().is_empty());

    // Delete (twice: deleting a missing object succeeds).
    store.delete("a/two.bin").await.unwrap();
    store.delete("a/two.bin").await.unwrap();
    assert!(store.head("a/two.bin").await.unwrap().is_none());
    let err = store.get_stream("a/two.bin").await.err().unwrap();
    assert!(err.is_not_found(), "{err}");

    // Keys cannot escape the root.
    let err = store.put_bytes("../escape", "x".into()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "key `../escape`: a key may not have a `..` segment"
    );
    let err = store
        .presign_get("a/b/one.bin", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn a_failed_local_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    let failing = futures_util::stream::iter(vec![
        Ok(bytes::Bytes::from_static(b"partial")),
        Err(std::io::Error::other("encoder crashed")),
    ]);
    let err = store
        .put_stream("x.mp4", Box::pin(failing))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Input { .. }), "{err}");
    assert!(err.to_string().contains("encoder crashed"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial or temp file"
    );

    // A dropped (cancelled) write leaves nothing either.
    let pending = futures_util::stream::iter(vec![Ok(bytes::Bytes::from_static(b"partial"))])
        .chain(futures_util::stream::pending());
    let put = store.put_stream("y.mp4", Box::pin(pending));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), put)
            .await
            .is_err()
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial or temp file"
    );
}

#[tokio::test]
async fn open_picks_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::local(format!("{}/renders/", dir.path().display()));
    let store = storage::open(&loc, &S3Config::default()).await.unwrap();
    assert_eq!(store.backend(), "local");
    store.put_bytes("x.txt", "x".into()).await.unwrap();
    assert!(dir.path().join("renders/x.txt").exists());

    let loc: Location = "s3://some-bucket/out/".parse().unwrap();
    let store = storage::open(&loc, &crate::support::test_config("http://127.0.0.1:9"))
        .await
        .unwrap();
    assert_eq!(store.backend(), "s3");
    assert_eq!(store.url("out/x.mp4"), "s3://some-bucket/out/x.mp4");
}

use futures_util::StreamExt as _;
