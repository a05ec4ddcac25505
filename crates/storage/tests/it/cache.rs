use storage::archive::{self, UnpackLimits};
use storage::{BundleCache, ContentHash, LocalStore, ObjectStore, StorageError};

fn bundle(dir: &std::path::Path, name: &str, size: usize) -> archive::PackedArchive {
    let src = dir.join("src").join(name);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("data.bin"),
        crate::support::bytes(size, u64::from(name.as_bytes()[0])),
    )
    .unwrap();
    archive::pack_to_file(&src, &dir.join("packed")).unwrap()
}

#[tokio::test]
async fn cache_fetches_once_and_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("bucket"));
    let (a, b, c) = (
        bundle(dir.path(), "a", 400),
        bundle(dir.path(), "b", 400),
        bundle(dir.path(), "c", 400),
    );
    for p in [&a, &b, &c] {
        store
            .put_file(&format!("bundles/{}.tar", p.sha256), &p.path)
            .await
            .unwrap();
    }
    assert!(a.sha256 != b.sha256 && b.sha256 != c.sha256);
    let cache_dir = dir.path().join("cache");
    // Room for two bundles of 400 bytes.
    let cache = BundleCache::open(&cache_dir, 900, UnpackLimits::default())
        .await
        .unwrap();

    let key = |h: &ContentHash| format!("bundles/{h}.tar");
    let got_a = cache
        .fetch(&store, &key(&a.sha256), &a.sha256)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(got_a.path().join("data.bin")).unwrap().len(),
        400
    );
    drop(got_a);
    let got_b = cache
        .fetch(&store, &key(&b.sha256), &b.sha256)
        .await
        .unwrap();
    drop(got_b);
    // Use a again, so b is the least recently used.
    assert!(cache.get(&a.sha256).await.is_some());
    // Fetching a again is a hit: deleting the source proves no download.
    store.delete(&key(&a.sha256)).await.unwrap();
    cache
        .fetch(&store, &key(&a.sha256), &a.sha256)
        .await
        .unwrap();

    let _got_c = cache
        .fetch(&store, &key(&c.sha256), &c.sha256)
        .await
        .unwrap();
    assert!(cache.get(&b.sha256).await.is_none(), "b evicted");
    assert!(!cache_dir.join(b.sha256.to_hex()).exists());
    assert!(cache.get(&a.sha256).await.is_some());
    assert_eq!(cache.total_bytes().await, 800);

    // A held bundle is never evicted: with a and c held, inserting b
    // overshoots instead.
    let held_a = cache.get(&a.sha256).await.unwrap();
    let held_b = cache.insert_archive(&b.sha256, &b.path).await.unwrap();
    assert!(held_a.path().exists() && held_b.path().exists());

    // Reopening indexes what is on disk.
    drop((held_a, held_b, _got_c));
    let reopened = BundleCache::open(&cache_dir, 10_000, UnpackLimits::default())
        .await
        .unwrap();
    assert_eq!(reopened.total_bytes().await, 1200);
    assert!(reopened.get(&c.sha256).await.is_some());
}

#[tokio::test]
async fn cache_refuses_an_archive_with_the_wrong_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("bucket"));
    let a = bundle(dir.path(), "a", 100);
    let wrong = ContentHash::of_bytes(b"not this");
    store.put_file("bundles/x.tar", &a.path).await.unwrap();
    let cache = BundleCache::open(dir.path().join("cache"), 1 << 20, UnpackLimits::default())
        .await
        .unwrap();
    let err = cache
        .fetch(&store, "bundles/x.tar", &wrong)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::HashMismatch { .. }), "{err}");
    assert_eq!(cache.total_bytes().await, 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("cache")).unwrap().count(),
        0,
        "nothing left behind"
    );
}
