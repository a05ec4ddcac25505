use std::time::Duration;

use futures_util::TryStreamExt as _;
use storage::{ContentHash, ObjectStore, S3Store, StorageError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{Action, FaultProxy, bytes, moto, s3_store, test_config};

#[tokio::test]
async fn s3_round_trip() {
    let store = s3_store("rt").await;
    let data = bytes(200_000, 2);
    let sha = ContentHash::of_bytes(&data);

    let meta = store
        .put_bytes("renders/a.mp4", data.clone().into())
        .await
        .unwrap();
    assert_eq!((meta.size, meta.sha256), (200_000, Some(sha)));
    assert!(meta.etag.is_some());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("b.bin");
    std::fs::write(&src, b"bee").unwrap();
    store.put_file("renders/b.bin", &src).await.unwrap();
    store.put_bytes("other/c", "c".into()).await.unwrap();

    // Head carries size and the stored sha256.
    let head = store.head("renders/a.mp4").await.unwrap().unwrap();
    assert_eq!((head.size, head.sha256), (200_000, Some(sha)));
    assert!(store.head("renders/missing").await.unwrap().is_none());

    // Stream and file downloads.
    let got: Vec<u8> = store
        .get_stream("renders/a.mp4")
        .await
        .unwrap()
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .unwrap();
    assert_eq!(got, data);
    let dest = dir.path().join("dl/a.mp4");
    let meta = store
        .get_file("renders/a.mp4", &dest, Some(&sha))
        .await
        .unwrap();
    assert_eq!(meta.sha256, Some(sha));
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    // List by prefix.
    let listed = store.list("renders/").await.unwrap();
    let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["renders/a.mp4", "renders/b.bin"]);
    assert_eq!(listed[1].size, 3);

    // Delete.
    store.delete("renders/b.bin").await.unwrap();
    store.delete("renders/b.bin").await.unwrap();
    assert!(store.head("renders/b.bin").await.unwrap().is_none());
    let err = store.get_stream("renders/b.bin").await.err().unwrap();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(
        err.to_string(),
        format!("s3://{}/renders/b.bin: no such object", store.bucket())
    );
}

#[tokio::test]
async fn s3_verifies_sha256_on_download() {
    let store = s3_store("sha").await;
    store.put_bytes("x.bin", "real bytes".into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.bin");
    let wrong = ContentHash::of_bytes(b"other bytes");
    let err = store
        .get_file("x.bin", &dest, Some(&wrong))
        .await
        .unwrap_err();
    match &err {
        StorageError::HashMismatch {
            location,
            expected,
            actual,
        } => {
            assert_eq!(location, &format!("s3://{}/x.bin", store.bucket()));
            assert_eq!(expected, &wrong.to_hex());
            assert_eq!(actual, &ContentHash::of_bytes(b"real bytes").to_hex());
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temp file left"
    );
}

#[tokio::test]
async fn s3_multipart_upload_of_a_large_object() {
    let store = s3_store("mp").await;
    // 11 MiB with a 6 MiB threshold and 5 MiB parts: three parts.
    let data = bytes(11 * 1024 * 1024, 3);
    let sha = ContentHash::of_bytes(&data);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &data).unwrap();

    let meta = store.put_file("big/file.bin", &src).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    // A multipart ETag ends in -<parts>.
    let etag = meta.etag.clone().unwrap();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "multipart etag {etag}"
    );
    let head = store.head("big/file.bin").await.unwrap().unwrap();
    assert_eq!((head.size, head.sha256), (data.len() as u64, Some(sha)));

    // The same through a stream (spooled, then multipart).
    let chunks: Vec<std::io::Result<bytes::Bytes>> = data
        .chunks(1024 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let meta = store
        .put_stream(
            "big/stream.bin",
            Box::pin(futures_util::stream::iter(chunks)),
        )
        .await
        .unwrap();
    assert!(meta.etag.unwrap().trim_matches('"').ends_with("-3"));

    for key in ["big/file.bin", "big/stream.bin"] {
        let dest = dir.path().join("dl").join(key);
        store.get_file(key, &dest, Some(&sha)).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data, "{key}");
    }
    assert!(store.open_multipart_uploads("").await.unwrap().is_empty());
}

#[tokio::test]
async fn s3_retries_transient_failures() {
    let direct = s3_store("retry").await;
    // 503 SlowDown for the first two requests, a dropped connection for the
    // third, then everything passes.
    let proxy = FaultProxy::start(moto().addr, |i, _| match i {
        0 | 1 => Action::Respond(503, "SlowDown"),
        2 => Action::Drop,
        _ => Action::Forward,
    })
    .await;
    let store = S3Store::connect(direct.bucket(), &test_config(&proxy.endpoint))
        .await
        .unwrap();
    let meta = store.put_bytes("r.bin", "retried".into()).await.unwrap();
    assert_eq!(meta.size, 7);
    let lines = proxy.request_lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("PUT ")), "{lines:?}");
    assert_eq!(direct.head("r.bin").await.unwrap().unwrap().size, 7);

    // A server that keeps failing: every attempt's error is reported.
    let proxy = FaultProxy::start(moto().addr, |_, _| Action::Respond(500, "InternalError")).await;
    let store = S3Store::connect(direct.bucket(), &test_config(&proxy.endpoint))
        .await
        .unwrap();
    let err = store.head("r.bin").await.unwrap_err();
    match &err {
        StorageError::RetriesExhausted { op, attempts, .. } => {
            assert_eq!(*op, "HeadObject");
            assert_eq!(attempts.len(), 4, "{attempts:?}");
            assert!(attempts[0].starts_with("attempt 1: "), "{attempts:?}");
        }
        other => panic!("expected exhausted retries, got {other}"),
    }
    assert_eq!(proxy.request_lines().len(), 4);

    // A permanent error (403) is not retried, and says it is a refusal.
    let proxy = FaultProxy::start(moto().addr, |_, _| Action::Respond(403, "AccessDenied")).await;
    let store = S3Store::connect(direct.bucket(), &test_config(&proxy.endpoint))
        .await
        .unwrap();
    let err = store.put_bytes("denied.bin", "x".into()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::PermissionDenied {
                op: "PutObject",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("AccessDenied"), "{err}");
    assert_eq!(proxy.request_lines().len(), 1);
}

fn is_upload_part(line: &str, part: u32) -> bool {
    line.starts_with("PUT ") && line.contains(&format!("partNumber={part}&"))
        || line.contains(&format!("partNumber={part} "))
}

#[tokio::test]
async fn a_failed_multipart_upload_leaves_nothing() {
    let direct = s3_store("fail").await;
    let proxy = FaultProxy::start(moto().addr, |_, line| {
        if is_upload_part(line, 2) {
            Action::Respond(403, "AccessDenied")
        } else {
            Action::Forward
        }
    })
    .await;
    let store = S3Store::connect(direct.bucket(), &test_config(&proxy.endpoint))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, bytes(11 * 1024 * 1024, 4)).unwrap();

    let err = store.put_file("big.bin", &src).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::PermissionDenied {
                op: "UploadPart",
                ..
            }
        ),
        "{err}"
    );
    let lines = proxy.request_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("DELETE ") && l.contains("uploadId=")),
        "aborted: {lines:?}"
    );
    assert!(direct.head("big.bin").await.unwrap().is_none());
    assert!(direct.open_multipart_uploads("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_cancelled_multipart_upload_leaves_nothing() {
    let direct = s3_store("cancel").await;
    let proxy = FaultProxy::start(moto().addr, |_, line| {
        if is_upload_part(line, 2) {
            Action::Stall
        } else {
            Action::Forward
        }
    })
    .await;
    let store = S3Store::connect(direct.bucket(), &test_config(&proxy.endpoint))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, bytes(11 * 1024 * 1024, 5)).unwrap();

    // Cancel (drop) the upload while part 2 is in flight.
    let mut upload = Box::pin(store.put_file("big.bin", &src));
    tokio::select! {
        result = &mut upload => panic!("upload finished: {result:?}"),
        () = proxy.stalled.notified() => {}
    }
    assert_eq!(
        direct.open_multipart_uploads("").await.unwrap(),
        ["big.bin"],
        "in flight"
    );
    drop(upload);
    store.settle().await;
    assert!(direct.open_multipart_uploads("").await.unwrap().is_empty());
    assert!(direct.head("big.bin").await.unwrap().is_none());
}

#[tokio::test]
async fn presigned_get_urls_work_without_credentials() {
    let store = s3_store("presign").await;
    store
        .put_bytes("p/out.mp4", "presigned body".into())
        .await
        .unwrap();
    let url = store
        .presign_get("p/out.mp4", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        url.starts_with(&format!(
            "{}/{}/p/out.mp4?",
            moto().endpoint,
            store.bucket()
        )),
        "{url}"
    );
    assert!(url.contains("X-Amz-Signature="), "{url}");

    // A plain HTTP GET, no SDK involved.
    let path = url.strip_prefix(&moto().endpoint).unwrap();
    let mut sock = tokio::net::TcpStream::connect(moto().addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        moto().addr
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("presigned body"), "{resp}");
}

/// Set only in the child process of
/// [`standard_aws_environment_variables_configure_s3`].
const ENV_PROBE_BUCKET: &str = "MONTAGE_STORAGE_ENV_PROBE_BUCKET";

#[tokio::test]
async fn standard_aws_environment_variables_configure_s3() {
    let direct = s3_store("env").await;
    // A fresh process (this test binary, running only the probe below) so
    // the environment is set before anything reads it.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "s3::env_probe",
            "--exact",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(ENV_PROBE_BUCKET, direct.bucket())
        .env("AWS_ENDPOINT_URL", &moto().endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "from-env")
        .env("AWS_SECRET_ACCESS_KEY", "from-env-secret")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = direct.head("from-env.txt").await.unwrap().unwrap();
    assert_eq!(meta.size, 8);
}

/// Does its work only in the child process started above: connects with no
/// explicit configuration at all.
#[tokio::test]
async fn env_probe() {
    let Ok(bucket) = std::env::var(ENV_PROBE_BUCKET) else {
        return;
    };
    let location: storage::Location = format!("s3://{bucket}/from-env.txt").parse().unwrap();
    let store = storage::open(&location, &storage::S3Config::default())
        .await
        .unwrap();
    store
        .put_bytes(location.key(), "env only".into())
        .await
        .unwrap();
}
