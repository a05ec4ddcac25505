//! The render cache: chunks and outputs stored under content-addressed keys
//! in any [`storage`] location (a local directory or an S3 prefix), so a
//! retry, a re-run after a crash or an identical variant never renders the
//! same bytes twice.
//!
//! A chunk's key is [`spec::ChunkIdentity::key`]: the sha256 of a
//! versioned, canonical encoding of everything that decides its bytes (the
//! bundle's archive hash or a registered composition's version, the
//! composition id, its *resolved* props, the frames, the video and audio
//! settings, and the renderer's versions: Montage's, libx264's and FFmpeg's,
//! as the workers report them). An output's key ([`output_key`]) hashes its
//! chunks' keys in order with everything combining adds (frame rate, sample
//! rate, frame count, AAC bitrate, silent-track choice) and the versions of
//! the code that combines.
//!
//! Layout under the cache root:
//!
//! ```text
//! bundles/<sha256>.tar                  bundle archives shipped to workers
//! chunks/ab/cd/<key>/chunk-NNNNNN.ts    written by the worker
//! chunks/ab/cd/<key>/chunk-NNNNNN.pcm
//! chunks/ab/cd/<key>/chunk.json         written last: the chunk is complete
//! outputs/ab/cd/<key>.mp4               a finished output
//! outputs/ab/cd/<key>.json              written last: the output is complete
//! ```
//!
//! A hit is only used after it verifies: every artifact exists with the
//! size and sha256 its record names (local files are re-hashed; S3 objects
//! are checked against their stored sha256 and re-verified on download).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use storage::{ContentHash, Location, ObjectStore, StorageError, Stores};

/// The format of the records this module writes.
const RECORD_FORMAT: u32 = 1;

/// How a local cache is trimmed: entries used within this long are never
/// removed (another render may be using them).
pub const TRIM_GRACE: Duration = Duration::from_secs(10 * 60);

/// The default size bound of a local cache (chunks and outputs): 20 GiB.
pub const DEFAULT_LOCAL_CACHE_BYTES: u64 = 20 << 30;

/// What combining adds to the chunks, for [`output_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputSettings {
    /// The versions of the code that combines (this process's Montage and
    /// FFmpeg: the AAC encoder and the MP4 muxer).
    pub combiner: String,
    /// Output frame rate, `num/den`.
    pub fps: String,
    /// Audio sample rate.
    pub sample_rate: u32,
    /// Frames in the output.
    pub frames: u64,
    /// Whether the composition has audio.
    pub has_audio: bool,
    /// AAC bitrate.
    pub audio_bitrate: u32,
    /// Whether a silent track is added when there is no audio.
    pub enforce_audio_track: bool,
    /// The container and audio codec (left out when MP4 with AAC, so
    /// those keys are what they were before other containers existed).
    #[serde(skip_serializing_if = "spec::OutputFormat::is_default")]
    pub output: spec::OutputFormat,
}

/// The cache key of a whole output: its chunks' keys in order plus what
/// combining adds.
pub fn output_key(chunks: &[ContentHash], settings: &OutputSettings) -> ContentHash {
    #[derive(Serialize)]
    struct Output<'a> {
        chunks: &'a [ContentHash],
        settings: &'a OutputSettings,
    }
    spec::key::key_of("montage-output", &Output { chunks, settings })
}

/// One artifact of a cached chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// `video_ts` or `audio_pcm`.
    pub kind: String,
    /// The file name inside the chunk's directory.
    pub name: String,
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// `chunk.json`: a complete chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Record format.
    pub format: u32,
    /// The chunk's key (hex).
    pub key: String,
    /// Frames in the video artifact.
    pub frame_count: u64,
    /// Samples per channel in the audio artifact.
    pub sample_count: u64,
    /// The artifacts.
    pub artifacts: Vec<ArtifactRecord>,
}

/// `<key>.json` beside a cached output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Record format.
    pub format: u32,
    /// The output's key (hex).
    pub key: String,
    /// Lower-case hex sha256 of the MP4.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Frames in the output.
    pub frames: u64,
}

/// A verified cached chunk.
#[derive(Debug, Clone)]
pub struct CachedChunk {
    /// Its record.
    pub record: ChunkRecord,
    /// The storage key of the directory holding it (ends with `/`).
    pub dir_key: String,
}

/// A content-addressed cache in one store.
#[derive(Debug, Clone)]
pub struct RenderCache {
    store: Arc<dyn ObjectStore>,
    /// The key prefix of the cache inside the store (empty or ending `/`).
    prefix: String,
    /// The cache's root directory when it is local.
    local_root: Option<PathBuf>,
    location: String,
}

impl RenderCache {
    /// Opens the cache at `location` (a directory, `file://` URL or
    /// `s3://bucket/prefix`; a trailing `/` is implied) in one of `stores`,
    /// creating a local directory.
    ///
    /// # Errors
    /// An invalid location, an S3 configuration error, or a directory that
    /// cannot be created.
    pub async fn open(location: &str, stores: &Stores) -> Result<Self, StorageError> {
        let text = if location.ends_with('/') {
            location.to_owned()
        } else {
            format!("{location}/")
        };
        let parsed = Location::parse(&text)?;
        let local_root = match &parsed {
            Location::Local { root, key } => {
                let dir = root.join(key);
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|source| StorageError::Io {
                        op: "create directory",
                        path: dir.clone(),
                        source,
                    })?;
                // Absolute, so workers and records never depend on the
                // current directory.
                let dir =
                    tokio::fs::canonicalize(&dir)
                        .await
                        .map_err(|source| StorageError::Io {
                            op: "resolve",
                            path: dir.clone(),
                            source,
                        })?;
                Some(dir)
            }
            Location::S3 { .. } => None,
        };
        let parsed = match &local_root {
            Some(dir) => Location::local(format!("{}/", dir.display())),
            None => parsed,
        };
        let store = stores.open(&parsed).await?;
        Ok(RenderCache {
            store,
            prefix: parsed.key().to_owned(),
            local_root,
            location: text,
        })
    }

    /// The location it was opened at (with a trailing `/`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The cache's directory when it is on this machine.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// The storage key of chunk `key`'s directory (ends with `/`).
    pub fn chunk_dir_key(&self, key: &ContentHash) -> String {
        format!(
            "{}/",
            storage::content_key(&format!("{}chunks", self.prefix), key, "")
        )
    }

    /// The URL (or local path) workers write chunk `key` under.
    pub fn chunk_dir_url(&self, key: &ContentHash) -> String {
        let dir = self.chunk_dir_key(key);
        match &self.local_root {
            Some(_) => self.store.url(dir.trim_end_matches('/')),
            None => self.store.url(&dir),
        }
    }

    fn output_keys(&self, key: &ContentHash) -> (String, String) {
        let base = storage::content_key(&format!("{}outputs", self.prefix), key, "");
        (format!("{base}.mp4"), format!("{base}.json"))
    }

    /// The storage key of the archive of bundle `hash`.
    pub fn bundle_key(&self, hash: &ContentHash) -> String {
        format!("{}bundles/{hash}.tar", self.prefix)
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        use futures_util::TryStreamExt as _;
        let stream = match self.store.get_stream(key).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let chunks: Vec<bytes::Bytes> =
            stream
                .try_collect()
                .await
                .map_err(|source| StorageError::Io {
                    op: "read",
                    path: PathBuf::from(self.store.url(key)),
                    source,
                })?;
        let bytes = chunks.concat();
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                tracing::warn!(record = %self.store.url(key), error = %e, "ignoring an unreadable cache record");
                Ok(None)
            }
        }
    }

    async fn write_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let text = serde_json::to_vec_pretty(value).unwrap_or_default();
        self.store.put_bytes(key, text.into()).await.map(|_| ())
    }

    /// Whether the object at `key` is there with `size` bytes and `sha256`.
    async fn verify(&self, key: &str, size: u64, sha256: &str) -> Result<bool, StorageError> {
        let Some(meta) = self.store.head(key).await? else {
            return Ok(false);
        };
        if meta.size != size {
            return Ok(false);
        }
        match &self.local_root {
            // Local bytes are cheap to hash: verify them fully.
            Some(_) => {
                let path = PathBuf::from(self.store.url(key));
                Ok(storage::hash_file(&path).await?.to_hex() == sha256)
            }
            // Stored sha256 now; the bytes are verified again on download.
            None => Ok(meta.sha256.as_ref().is_none_or(|h| h.to_hex() == sha256)),
        }
    }

    /// The chunk stored under `key`, if it is complete and verifies.
    ///
    /// # Errors
    /// A storage failure other than "not found".
    pub async fn lookup_chunk(
        &self,
        key: &ContentHash,
    ) -> Result<Option<CachedChunk>, StorageError> {
        let dir_key = self.chunk_dir_key(key);
        let Some(record) = self
            .read_json::<ChunkRecord>(&format!("{dir_key}chunk.json"))
            .await?
        else {
            return Ok(None);
        };
        if record.format != RECORD_FORMAT || record.key != key.to_hex() {
            return Ok(None);
        }
        for a in &record.artifacts {
            if !self
                .verify(&format!("{dir_key}{}", a.name), a.size, &a.sha256)
                .await?
            {
                tracing::warn!(chunk = %dir_key, artifact = %a.name, "cached chunk does not verify: rendering it again");
                return Ok(None);
            }
        }
        self.touch(&format!("{dir_key}chunk.json"));
        Ok(Some(CachedChunk { record, dir_key }))
    }

    /// Records chunk `key` as complete (its artifacts must be in its
    /// directory already).
    ///
    /// # Errors
    /// The write failed.
    pub async fn record_chunk(
        &self,
        key: &ContentHash,
        record: &ChunkRecord,
    ) -> Result<(), StorageError> {
        let dir_key = self.chunk_dir_key(key);
        self.write_json(&format!("{dir_key}chunk.json"), record)
            .await
    }

    /// Where artifact `name` of a cached chunk is: a local path when the
    /// cache is local, else its storage key.
    pub fn artifact_key(&self, chunk: &CachedChunk, name: &str) -> String {
        format!("{}{name}", chunk.dir_key)
    }

    /// The local path of `key` when the cache is local.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.local_root
            .as_ref()
            .map(|_| PathBuf::from(self.store.url(key)))
    }

    /// The output stored under `key`, if complete and verified.
    ///
    /// # Errors
    /// A storage failure other than "not found".
    pub async fn lookup_output(
        &self,
        key: &ContentHash,
    ) -> Result<Option<(OutputRecord, String)>, StorageError> {
        let (mp4, json) = self.output_keys(key);
        let Some(record) = self.read_json::<OutputRecord>(&json).await? else {
            return Ok(None);
        };
        if record.format != RECORD_FORMAT || record.key != key.to_hex() {
            return Ok(None);
        }
        if !self.verify(&mp4, record.size, &record.sha256).await? {
            tracing::warn!(output = %mp4, "cached output does not verify: rendering it again");
            return Ok(None);
        }
        self.touch(&json);
        Ok(Some((record, mp4)))
    }

    /// Stores the finished output `file` under `key`.
    ///
    /// # Errors
    /// The upload or copy failed.
    pub async fn record_output(
        &self,
        key: &ContentHash,
        file: &Path,
        frames: u64,
    ) -> Result<OutputRecord, StorageError> {
        let (mp4, json) = self.output_keys(key);
        let meta = self.store.put_file(&mp4, file).await?;
        let sha256 = match meta.sha256 {
            Some(h) => h.to_hex(),
            None => storage::hash_file(file).await?.to_hex(),
        };
        let record = OutputRecord {
            format: RECORD_FORMAT,
            key: key.to_hex(),
            sha256,
            size: meta.size,
            frames,
        };
        self.write_json(&json, &record).await?;
        Ok(record)
    }

    /// Marks a local entry as just used (the trim keeps recent entries).
    fn touch(&self, key: &str) {
        if let Some(path) = self.local_path(key)
            && let Ok(f) = std::fs::File::options().append(true).open(&path)
        {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Uploads the bundle archive at `archive` (which hashes to `hash`)
    /// unless the cache holds it already; returns its URL.
    ///
    /// # Errors
    /// The upload failed.
    pub async fn ship_bundle(
        &self,
        hash: &ContentHash,
        archive: &Path,
    ) -> Result<String, StorageError> {
        let key = self.bundle_key(hash);
        let present = self
            .store
            .head(&key)
            .await?
            .is_some_and(|m| m.sha256.as_ref().is_none_or(|h| h == hash));
        if !present {
            self.store.put_file(&key, archive).await?;
        }
        Ok(self.store.url(&key))
    }

    /// Removes the least recently used chunks and outputs of a local cache
    /// until it holds at most `max_bytes`, never touching entries used within
    /// [`TRIM_GRACE`]. Incomplete chunk directories (a render killed
    /// mid-chunk) older than a day go too. Does nothing for S3 caches (use
    /// the bucket's lifecycle rules). Returns the bytes removed.
    pub async fn trim(&self, max_bytes: u64) -> u64 {
        let Some(root) = self.local_root.clone() else {
            return 0;
        };
        tokio::task::spawn_blocking(move || trim_local(&root, max_bytes))
            .await
            .unwrap_or(0)
    }
}

/// One removable unit of a local cache.
struct TrimEntry {
    paths: Vec<PathBuf>,
    bytes: u64,
    used: SystemTime,
    complete: bool,
}

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn trim_local(root: &Path, max_bytes: u64) -> u64 {
    let mut entries = Vec::new();
    for a in dir_entries(&root.join("chunks")) {
        for b in dir_entries(&a) {
            for chunk in dir_entries(&b) {
                let files = dir_entries(&chunk);
                let marker = chunk.join("chunk.json");
                let complete = marker.exists();
                let used = if complete {
                    mtime(&marker)
                } else {
                    files.iter().filter_map(|f| mtime(f)).max()
                }
                .or_else(|| mtime(&chunk))
                .unwrap_or(SystemTime::UNIX_EPOCH);
                entries.push(TrimEntry {
                    bytes: files.iter().map(|f| file_size(f)).sum(),
                    paths: vec![chunk],
                    used,
                    complete,
                });
            }
        }
    }
    for a in dir_entries(&root.join("outputs")) {
        for b in dir_entries(&a) {
            for json in dir_entries(&b)
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
            {
                let mp4 = json.with_extension("mp4");
                entries.push(TrimEntry {
                    bytes: file_size(&mp4) + file_size(&json),
                    used: mtime(&json).unwrap_or(SystemTime::UNIX_EPOCH),
                    paths: vec![mp4, json],
                    complete: true,
                });
            }
        }
    }
    let now = SystemTime::now();
    let age = |e: &TrimEntry| now.duration_since(e.used).unwrap_or(Duration::ZERO);
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut removed = 0;
    entries.sort_by_key(|e| e.used);
    for e in &entries {
        let stale_partial = !e.complete && age(e) > Duration::from_secs(24 * 3600);
        if !(stale_partial || (total > max_bytes && age(e) > TRIM_GRACE)) {
            continue;
        }
        for p in &e.paths {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
        }
        total = total.saturating_sub(e.bytes);
        removed += e.bytes;
    }
    removed
}

/// The default cache directory of the command line: `$MONTAGE_CACHE`, else
/// `$XDG_CACHE_HOME/montage`, else `~/.cache/montage`
/// ([`storage::montage_cache_dir`]).
pub fn default_cache_location() -> Option<String> {
    if let Some(v) = std::env::var_os("MONTAGE_CACHE").filter(|v| !v.is_empty()) {
        return Some(v.to_string_lossy().into_owned());
    }
    storage::montage_cache_dir().map(|d| d.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keys_depend_on_chunks_and_combine_settings() {
        let s = OutputSettings {
            combiner: "montage-0.1.0; avcodec 59".into(),
            fps: "30/1".into(),
            sample_rate: 48_000,
            frames: 90,
            has_audio: true,
            audio_bitrate: 192_000,
            enforce_audio_track: false,
            output: spec::OutputFormat::default(),
        };
        let a = ContentHash::of_bytes(b"a");
        let b = ContentHash::of_bytes(b"b");
        let k = output_key(&[a, b], &s);
        assert_eq!(output_key(&[a, b], &s.clone()), k);
        assert_ne!(output_key(&[b, a], &s), k);
        assert_ne!(
            output_key(
                &[a, b],
                &OutputSettings {
                    audio_bitrate: 128_000,
                    ..s.clone()
                }
            ),
            k
        );
        assert_ne!(
            output_key(
                &[a, b],
                &OutputSettings {
                    output: spec::OutputFormat {
                        container: spec::Container::Mov,
                        audio: None,
                    },
                    ..s.clone()
                }
            ),
            k
        );
        assert_ne!(
            output_key(
                &[a, b],
                &OutputSettings {
                    combiner: "montage-0.2.0; avcodec 60".into(),
                    ..s
                }
            ),
            k
        );
    }

    /// A file of `bytes` bytes last modified `age` ago.
    fn aged_file(path: &Path, bytes: usize, age: Duration) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, vec![0u8; bytes]).expect("write");
        let f = std::fs::File::options()
            .append(true)
            .open(path)
            .expect("open");
        f.set_modified(SystemTime::now() - age).expect("set mtime");
    }

    #[test]
    fn trimming_removes_the_least_recently_used_but_never_recent_entries() {
        let root = tempfile::tempdir().expect("tempdir");
        let hour = Duration::from_secs(3600);
        let chunk = |name: &str, age: Duration, complete: bool| {
            let dir = root.path().join("chunks/aa/bb").join(name);
            aged_file(&dir.join("chunk-000000.ts"), 1000, age);
            if complete {
                aged_file(&dir.join("chunk.json"), 10, age);
            }
            dir
        };
        let oldest = chunk("oldest", 5 * hour, true);
        let older = chunk("older", 4 * hour, true);
        let recent = chunk("recent", Duration::from_secs(60), true);
        let partial = chunk("partial", 48 * hour, false);
        let fresh_partial = chunk("fresh-partial", hour, false);
        let out = root.path().join("outputs/cc/dd/k");
        aged_file(&out.with_extension("mp4"), 1000, 3 * hour);
        aged_file(&out.with_extension("json"), 10, 3 * hour);

        // 6040 bytes in all; keep at most 2500: the stale partial goes
        // whatever the size, then the oldest complete entries until the rest
        // fits, but the entry used a minute ago stays.
        let removed = trim_local(root.path(), 2500);
        assert!(!partial.exists() && !oldest.exists() && !older.exists());
        assert!(recent.exists() && fresh_partial.exists());
        assert!(
            !out.with_extension("mp4").exists(),
            "the output was older than the limit allowed"
        );
        assert_eq!(removed, 1000 + 1010 + 1010 + 1010);

        // Under the limit, nothing complete goes.
        assert_eq!(trim_local(root.path(), 1 << 30), 0);
        assert!(recent.exists());
    }
}
