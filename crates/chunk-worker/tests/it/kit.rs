//! Test kit: workers in temp dirs on free ports, gRPC helpers. Media is
//! judged with `testkit::media`.

use std::path::{Path, PathBuf};

use montage_proto::v1 as pb;
use pb::chunk_worker_client::ChunkWorkerClient;
use testkit::WorkerProcess;
use tonic::transport::Channel;

/// A `chunk-worker serve` process of this crate's binary, killed on drop
/// (see [`testkit::WorkerProcess`] for its fields and process control).
pub struct Worker(WorkerProcess);

impl std::ops::Deref for Worker {
    type Target = WorkerProcess;
    fn deref(&self) -> &WorkerProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut WorkerProcess {
        &mut self.0
    }
}

/// The directory tests' workers allow local paths under: the system's
/// temporary directory, where every test keeps its bundles and artifact
/// directories (tests of the path rule start workers with
/// [`Worker::start_exact`]).
pub fn test_root() -> String {
    std::env::temp_dir().display().to_string()
}

impl Worker {
    /// Starts a worker with `extra` flags after `serve --listen 127.0.0.1:0
    /// --cache-dir <tmp>/cache --allow-path <the temp dir>`.
    pub fn start(extra: &[&str]) -> Worker {
        Worker::start_with_env(extra, &[])
    }

    /// As [`Worker::start`], with extra environment variables (the AWS ones
    /// pointing at moto).
    pub fn start_with_env(extra: &[&str], env: &[(&str, String)]) -> Worker {
        let root = test_root();
        let mut flags = vec!["--allow-path", root.as_str()];
        flags.extend_from_slice(extra);
        Worker::start_exact(&flags, env)
    }

    /// A worker with exactly `extra` flags (no `--allow-path` added).
    pub fn start_exact(extra: &[&str], env: &[(&str, String)]) -> Worker {
        Worker(WorkerProcess::start(
            Path::new(env!("CARGO_BIN_EXE_chunk-worker")),
            extra,
            env,
        ))
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(&self) -> ChunkWorkerClient<Channel> {
        ChunkWorkerClient::new(self.channel().await)
    }

    /// A fresh directory for artifacts.
    pub fn out_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A request for the test pattern with `props`, frames `first..=last`.
pub fn request(
    props: serde_json::Value,
    first: u64,
    last: u64,
    composition_start: u64,
    target: Option<&Path>,
) -> pb::RenderChunkRequest {
    pb::RenderChunkRequest {
        job_id: "it".into(),
        chunk_index: 0,
        source: Some(pb::CompositionSource {
            kind: Some(pb::composition_source::Kind::Registered(pb::Registered {})),
        }),
        composition_id: "test-pattern".into(),
        props_json: props.to_string(),
        frames: Some(pb::FrameRange { first, last }),
        composition_start,
        every_nth_frame: Some(1),
        video: Some((&chunk_worker::VideoSettings::default()).into()),
        audio: Some(pb::AudioSettings {
            sample_rate: Some(48_000),
            channels: Some(2),
            pcm_format: pb::PcmFormat::S16le.into(),
        }),
        output: Some(pb::ArtifactTarget {
            kind: Some(match target {
                None => pb::artifact_target::Kind::Inline(pb::Inline {}),
                Some(dir) => pb::artifact_target::Kind::Location(dir.display().to_string()),
            }),
        }),
        renderer: None,
        frames_to: None,
        audio_first: false,
    }
}

/// Everything one RenderChunk call returned.
#[derive(Debug, Default)]
pub struct Collected {
    pub progress: Vec<pb::Progress>,
    pub ts: Vec<u8>,
    pub pcm: Vec<u8>,
    pub result: Option<pb::ChunkResult>,
    /// The PCM announced before the result (asked for with `audio_first`),
    /// and how many video bytes had arrived by then.
    pub audio_first: Option<(pb::Artifact, usize)>,
}

/// Runs a call to the end, checking the stream's shape: progress, then
/// ordered pieces of at most 1 MiB, then exactly one result; with
/// `audio_first`, one announcement of the PCM, after every PCM piece.
pub async fn render(
    client: &mut ChunkWorkerClient<Channel>,
    req: pb::RenderChunkRequest,
) -> Result<Collected, tonic::Status> {
    let asked = req.audio_first;
    let mut stream = client.render_chunk(req).await?.into_inner();
    let mut c = Collected::default();
    while let Some(event) = stream.message().await? {
        assert!(c.result.is_none(), "an event after the result");
        match event.event.expect("event set") {
            pb::render_chunk_event::Event::Progress(p) => c.progress.push(p),
            pb::render_chunk_event::Event::Data(d) => {
                assert!(d.data.len() <= 1 << 20, "piece of {} bytes", d.data.len());
                let buf = match pb::ArtifactKind::try_from(d.kind).expect("kind") {
                    pb::ArtifactKind::VideoTs => &mut c.ts,
                    pb::ArtifactKind::AudioPcm => &mut c.pcm,
                    other => panic!("unexpected artifact kind {other:?}"),
                };
                assert_eq!(d.offset, buf.len() as u64, "pieces arrive in order");
                buf.extend_from_slice(&d.data);
                assert!(
                    c.audio_first.is_none() || d.kind != pb::ArtifactKind::AudioPcm as i32,
                    "a PCM piece after the PCM was announced"
                );
            }
            pb::render_chunk_event::Event::Audio(a) => {
                assert!(asked, "the PCM was announced without being asked for");
                assert!(c.audio_first.is_none(), "the PCM was announced twice");
                c.audio_first = Some((a, c.ts.len()));
            }
            pb::render_chunk_event::Event::Result(r) => c.result = Some(r),
        }
    }
    assert!(c.result.is_some(), "the stream ended without a result");
    Ok(c)
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

/// Files in `dir` (names), sorted; empty if it does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
