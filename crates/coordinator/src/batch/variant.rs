//! One variant of a campaign as a job anyone can run: [`VariantJob`] is
//! pure and serializable (the bundle by its archive's sha256, the
//! composition, its *resolved* props, the render settings and the output's
//! name), so a batch can run it on this coordinator's pool or hand it to a
//! queue for an agent elsewhere; [`Coordinator::render_variant`] renders
//! one, given a [`VariantContext`] for its bundle.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;

use chunker::{ChunkSpec, PlanRequest};
use composition::scene::SceneBundle;
use composition::{CompositionMeta, CompositionSource, Props};
use serde::{Deserialize, Serialize};
use spec::{ContentHash, Location, RendererVersion, VideoSettings};
use tokio::sync::watch;

use crate::Error;
use crate::coordinator::{Coordinator, PreparedSource, pack_bundle, render_id};
use crate::events::RenderHandle;
use crate::grpc::Described;
use crate::job::{Pinned, RenderJob};
use crate::request::{Destination, RenderRequest, RenderSource};
use crate::schedule::WorkerInfo;

/// The format of [`VariantJob`]s this code writes and reads.
pub const VARIANT_JOB_FORMAT: u32 = 1;

/// Variants of at most this many output frames (30 s at 30 fps) render
/// whole, in one chunk on one slot, unless a split is given: in a batch the
/// other slots are busy with other variants, and one chunk has no seams to
/// combine and one keyframe interval to pay.
pub const WHOLE_VARIANT_MAX_FRAMES: u64 = 900;

/// Longer variants are split into chunks of this many output frames, so a
/// long one spreads over free slots.
pub const LONG_VARIANT_CHUNK_FRAMES: u64 = 300;

/// What every variant of a batch shares: how it is split and encoded.
/// Part of every [`VariantJob`] and of its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantSettings {
    /// How to split each variant; `None`: whole up to
    /// [`WHOLE_VARIANT_MAX_FRAMES`] output frames, else chunks of
    /// [`LONG_VARIANT_CHUNK_FRAMES`].
    pub chunks: Option<ChunkSpec>,
    /// Render only these frames (inclusive) of every variant.
    pub frames: Option<RangeInclusive<u64>>,
    /// Keep one frame in this many.
    pub every_nth_frame: u32,
    /// Encoder settings.
    pub video: VideoSettings,
    /// AAC bitrate in bits per second.
    pub audio_bitrate: u32,
    /// Add a silent audio track when the composition has none.
    pub enforce_audio_track: bool,
}

impl Default for VariantSettings {
    fn default() -> Self {
        VariantSettings {
            chunks: None,
            frames: None,
            every_nth_frame: 1,
            video: VideoSettings::default(),
            audio_bitrate: combine::DEFAULT_AUDIO_BITRATE,
            enforce_audio_track: false,
        }
    }
}

impl VariantSettings {
    /// Checks the settings as [`RenderRequest::validate`] does.
    ///
    /// # Errors
    /// [`Error::Input`] naming the flag and the value.
    pub fn validate(&self) -> Result<(), Error> {
        self.request(
            RenderSource::Registered,
            "check",
            ChunkSpec::Count(1),
            Destination::File("check.mp4".into()),
        )
        .validate()?;
        if let Some(split) = self.chunks {
            self.request(
                RenderSource::Registered,
                "check",
                split,
                Destination::File("check.mp4".into()),
            )
            .validate()?;
        }
        Ok(())
    }

    fn request(
        &self,
        source: RenderSource,
        composition: &str,
        chunks: ChunkSpec,
        output: Destination,
    ) -> RenderRequest {
        let mut r = RenderRequest::new(source, composition, chunks, output);
        r.frames = self.frames.clone();
        r.every_nth_frame = self.every_nth_frame;
        r.video = self.video.clone();
        r.audio_bitrate = self.audio_bitrate;
        r.enforce_audio_track = self.enforce_audio_track;
        r
    }

    /// How a variant described by `meta` is split, and its plan's output
    /// frames and chunks.
    ///
    /// # Errors
    /// [`Error::Input`] when the frame range is outside the composition.
    pub(crate) fn split_for(&self, meta: &CompositionMeta) -> Result<(ChunkSpec, u64, u32), Error> {
        let plan = |chunks: ChunkSpec| {
            let mut p = PlanRequest::new(meta.duration_frames, meta.fps, chunks)
                .with_every_nth_frame(self.every_nth_frame);
            if let Some(r) = &self.frames {
                p = p.with_frame_range(r.clone());
            }
            chunker::plan(&p).map_err(|e| Error::Input(e.to_string()))
        };
        let split = match self.chunks {
            Some(split) => split,
            None => {
                let whole = plan(ChunkSpec::Count(1))?;
                if whole.output_frames() <= WHOLE_VARIANT_MAX_FRAMES {
                    return Ok((ChunkSpec::Count(1), whole.output_frames(), 1));
                }
                ChunkSpec::FramesPerChunk(LONG_VARIANT_CHUNK_FRAMES)
            }
        };
        let p = plan(split)?;
        Ok((
            split,
            p.output_frames(),
            u32::try_from(p.chunks().len()).unwrap_or(u32::MAX),
        ))
    }
}

/// Where a variant's composition comes from, by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VariantSource {
    /// A scene bundle, by the sha256 of its deterministic archive
    /// (`storage::archive::pack`): the cache keeps it as
    /// `bundles/<sha256>.tar`.
    Bundle {
        /// The archive's sha256.
        sha256: ContentHash,
    },
    /// A composition registered in the workers' binaries.
    Registered,
}

/// One variant to render: pure data, serializable as JSON, so it can wait
/// in a file or a queue and be rendered by any coordinator that has its
/// bundle ([`Coordinator::render_variant`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantJob {
    /// [`VARIANT_JOB_FORMAT`].
    pub format: u32,
    /// The composition's source.
    pub source: VariantSource,
    /// The composition's id.
    pub composition: String,
    /// The props as the composition resolved them: defaults filled in,
    /// overrides (`text.Title`, …) included.
    pub props: Props,
    /// Split and encoding.
    pub settings: VariantSettings,
    /// How this variant is split (resolved from the settings and its
    /// length).
    pub split: ChunkSpec,
    /// The output's key under the batch's output root; `None`: named by the
    /// sha256 of its bytes (`ab/cd/<sha256>.mp4`).
    pub output: Option<String>,
}

impl VariantJob {
    /// The variant's identity: the sha256 of the canonical encoding of
    /// everything that decides its bytes (source, composition, resolved
    /// props, settings, split), not its output name. Two rows with the same
    /// id render the same bytes, so a batch renders them once.
    pub fn id(&self) -> ContentHash {
        #[derive(Serialize)]
        struct Identity<'a> {
            source: &'a VariantSource,
            composition: &'a str,
            props: &'a Props,
            settings: &'a VariantSettings,
            split: &'a ChunkSpec,
        }
        spec::key::key_of(
            "montage-variant",
            &Identity {
                source: &self.source,
                composition: &self.composition,
                props: &self.props,
                settings: &self.settings,
                split: &self.split,
            },
        )
    }

    /// Where the output goes under `root`.
    pub fn destination(&self, root: &BatchOutput) -> Destination {
        root.destination(self.output.as_deref())
    }
}

/// Where a batch's outputs go: a local directory or an S3 prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutput {
    /// A directory on this machine (created when missing).
    Directory(PathBuf),
    /// An S3 prefix, `s3://bucket/prefix/`.
    Storage(Location),
}

impl BatchOutput {
    /// Parses what a user typed: `s3://bucket/prefix/` (a prefix: the
    /// trailing `/` is required), else a local directory.
    ///
    /// # Errors
    /// [`Error::Input`] naming the text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.starts_with("s3://") {
            let location =
                Location::parse(text).map_err(|e| Error::Input(format!("--out: {e}")))?;
            if !location.is_prefix() || location.key().is_empty() {
                return Err(Error::Input(format!(
                    "--out `{}`: a batch writes many files: name a prefix ending in `/`, e.g. s3://bucket/campaign-7/",
                    spec::quote(text)
                )));
            }
            return Ok(BatchOutput::Storage(location));
        }
        if text.is_empty() {
            return Err(Error::Input("--out is empty: name a directory".into()));
        }
        if !text.starts_with("file://") {
            return Ok(BatchOutput::Directory(PathBuf::from(text)));
        }
        let path = match Location::parse(text).map_err(|e| Error::Input(format!("--out: {e}")))? {
            Location::Local { root, key } => root.join(key),
            Location::S3 { .. } => {
                return Err(Error::Input(format!(
                    "--out `{}`: not a directory",
                    spec::quote(text)
                )));
            }
        };
        Ok(BatchOutput::Directory(path))
    }

    /// Where an output named `name` goes (`None`: by content hash).
    pub fn destination(&self, name: Option<&str>) -> Destination {
        match (self, name) {
            (BatchOutput::Directory(dir), Some(name)) => Destination::File(dir.join(name)),
            (BatchOutput::Directory(dir), None) => Destination::Storage(Location::Local {
                root: dir.clone(),
                key: String::new(),
            }),
            (BatchOutput::Storage(prefix), Some(name)) => Destination::Storage(prefix.join(name)),
            (BatchOutput::Storage(prefix), None) => Destination::Storage(prefix.clone()),
        }
    }
}

impl std::fmt::Display for BatchOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchOutput::Directory(d) => write!(f, "{}", d.display()),
            BatchOutput::Storage(l) => write!(f, "{l}"),
        }
    }
}

/// What every variant of one source shares, resolved once: the source as
/// workers are told of it (a bundle hashed once, and shipped once to an S3
/// cache for remote workers), the bundle opened here to describe variants
/// without a worker, and the renderer version every variant's keys name.
pub struct VariantContext {
    source: RenderSource,
    prepared: PreparedSource,
    variant_source: VariantSource,
    /// The bundle, opened on this machine.
    bundle: Option<SceneBundle>,
    renderer: tokio::sync::OnceCell<RendererVersion>,
}

impl std::fmt::Debug for VariantContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VariantContext")
            .field("source", &self.source)
            .field("variant_source", &self.variant_source)
            .finish_non_exhaustive()
    }
}

impl VariantContext {
    /// The source as jobs name it.
    pub fn variant_source(&self) -> VariantSource {
        self.variant_source
    }

    /// What workers are told about the source.
    pub(crate) fn prepared_spec(&self) -> &spec::SourceSpec {
        &self.prepared.spec
    }

    /// The bundle opened on this machine (`None` for registered
    /// compositions).
    pub fn bundle(&self) -> Option<&SceneBundle> {
        self.bundle.as_ref()
    }
}

/// How a variant runs: reuse the cache or not, and on which workers.
#[derive(Default)]
pub(crate) struct VariantRun {
    pub(crate) use_cache: bool,
    /// The workers leased to it (default: the whole pool).
    pub(crate) pool: Option<watch::Receiver<Vec<WorkerInfo>>>,
}

impl Coordinator {
    /// Resolves what every variant of `source` shares (see
    /// [`VariantContext`]): packs and hashes a bundle once, ships it to an
    /// S3 cache when remote workers need it, and opens it here.
    ///
    /// # Errors
    /// [`Error::Input`] for a bundle that does not exist or does not open;
    /// [`Error::Storage`] when the cache cannot be reached.
    pub async fn variant_context(&self, source: &RenderSource) -> Result<VariantContext, Error> {
        let cache = self.cache().await?;
        let mut prepared = self.prepare_source(source, cache).await?;
        let (variant_source, bundle) = match source {
            RenderSource::Registered => (VariantSource::Registered, None),
            RenderSource::Bundle(path) => {
                let hash = match prepared.bundle {
                    Some(hash) => hash,
                    None => {
                        let abs = std::fs::canonicalize(path)
                            .map_err(|e| Error::Input(format!("bundle {}: {e}", path.display())))?;
                        pack_bundle(path, abs, false).await?.0
                    }
                };
                prepared.bundle = Some(hash);
                let dir = path.clone();
                let bundle = tokio::task::spawn_blocking(move || {
                    SceneBundle::open_with_video(&dir, chunk_worker::video::FfmpegVideo::shared())
                })
                .await
                .map_err(Error::task("opening the bundle"))??;
                (VariantSource::Bundle { sha256: hash }, Some(bundle))
            }
        };
        Ok(VariantContext {
            source: source.clone(),
            prepared,
            variant_source,
            bundle,
            renderer: tokio::sync::OnceCell::new(),
        })
    }

    /// Renders one variant into `root` (its name under it, or its content
    /// hash), reusing the cache, on the whole pool. `context` must be the
    /// context of the job's source.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use coordinator::batch::{BatchOutput, VariantJob};
    /// use coordinator::{Coordinator, CoordinatorOptions, PoolSpec, RenderSource};
    ///
    /// # async fn demo(line: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// let coordinator = Arc::new(Coordinator::new(PoolSpec::local(), CoordinatorOptions::default()).await?);
    /// let context = Arc::new(coordinator.variant_context(&RenderSource::Bundle("examples/promo".into())).await?);
    /// let job: VariantJob = serde_json::from_str(line)?;
    /// let root = BatchOutput::parse("s3://renders/campaign-7/")?;
    /// let summary = coordinator.render_variant(job, context, &root).finish().await?;
    /// println!("{}", summary.output);
    /// # Ok(()) }
    /// ```
    pub fn render_variant(
        self: &Arc<Self>,
        job: VariantJob,
        context: Arc<VariantContext>,
        root: &BatchOutput,
    ) -> RenderHandle {
        self.run_variant(
            job,
            context,
            root,
            VariantRun {
                use_cache: true,
                pool: None,
            },
        )
    }

    pub(crate) fn run_variant(
        self: &Arc<Self>,
        job: VariantJob,
        context: Arc<VariantContext>,
        root: &BatchOutput,
        run: VariantRun,
    ) -> RenderHandle {
        let this = Arc::clone(self);
        let output = job.destination(root);
        RenderHandle::spawn(move |events, cancel| async move {
            let described = tokio::select! {
                d = this.describe_variant(&job, &context) => d?,
                () = cancel.cancelled() => return Err(Error::Cancelled),
            };
            let mut request =
                job.settings
                    .request(context.source.clone(), &job.composition, job.split, output);
            request.props = job.props;
            request.use_cache = run.use_cache;
            if let Destination::File(path) = &request.output
                && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(Error::io(format!("creating {}", dir.display())))?;
            }
            let pinned = Pinned {
                source: context.prepared.clone(),
                described,
                pool: run.pool,
            };
            let render_id = render_id(&job.composition);
            RenderJob::pinned(&this, render_id, request, pinned, events, cancel)?
                .run()
                .await
        })
    }

    /// The variant's metadata (described here when its bundle is open here,
    /// else by a worker) and the renderer every variant of the context
    /// uses (asked of a worker once).
    async fn describe_variant(
        &self,
        job: &VariantJob,
        context: &VariantContext,
    ) -> Result<Described, Error> {
        if job.format != VARIANT_JOB_FORMAT {
            return Err(Error::Input(format!(
                "variant job format {} is not supported: this coordinator reads format {VARIANT_JOB_FORMAT}",
                job.format
            )));
        }
        if job.source != context.variant_source {
            return Err(Error::Input(format!(
                "the job's source {:?} is not this context's {:?}",
                job.source, context.variant_source
            )));
        }
        let remote = || self.describe(&context.prepared.spec, &job.composition, &job.props);
        let Some(bundle) = &context.bundle else {
            let described = remote().await?;
            let _ = context.renderer.set(described.renderer.clone());
            return Ok(described);
        };
        let renderer = context
            .renderer
            .get_or_try_init(|| async { remote().await.map(|d| d.renderer) })
            .await?
            .clone();
        let (bundle, id, props) = (bundle.clone(), job.composition.clone(), job.props.clone());
        let meta = tokio::task::spawn_blocking(move || {
            bundle.composition(&id).and_then(|c| c.describe(&props))
        })
        .await
        .map_err(Error::task("describing a variant"))??;
        Ok(Described {
            meta,
            renderer,
            gif_palette: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> VariantJob {
        let mut props = Props::new();
        props.insert("name".into(), "Ada".into());
        VariantJob {
            format: VARIANT_JOB_FORMAT,
            source: VariantSource::Bundle {
                sha256: spec::key::key_of("test", &1),
            },
            composition: "promo".into(),
            props,
            settings: VariantSettings::default(),
            split: ChunkSpec::Count(1),
            output: Some("ada.mp4".into()),
        }
    }

    #[test]
    fn jobs_round_trip_as_json_and_their_id_ignores_the_name() {
        let a = job();
        let text = serde_json::to_string(&a).expect("serializes");
        let back: VariantJob = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, a);
        assert_eq!(back.id(), a.id());
        let renamed = VariantJob {
            output: None,
            ..a.clone()
        };
        assert_eq!(renamed.id(), a.id());
        let mut other = a.clone();
        other.props.insert("name".into(), "Bob".into());
        assert_ne!(other.id(), a.id());
        let mut crf = a.clone();
        crf.settings.video.quality = spec::Quality::Crf(30);
        assert_ne!(crf.id(), a.id());
    }

    #[test]
    fn outputs_are_named_under_their_root() {
        let dir = BatchOutput::parse("out").expect("dir");
        assert_eq!(
            dir.destination(Some("a/b.mp4")),
            Destination::File(PathBuf::from("out/a/b.mp4"))
        );
        let s3 = BatchOutput::parse("s3://bucket-1/campaign/").expect("prefix");
        assert_eq!(
            s3.destination(Some("x.mp4")).to_string(),
            "s3://bucket-1/campaign/x.mp4"
        );
        assert_eq!(s3.destination(None).to_string(), "s3://bucket-1/campaign/");
        assert_eq!(
            BatchOutput::parse("s3://bucket-1/x.mp4")
                .expect_err("object")
                .to_string(),
            "--out `s3://bucket-1/x.mp4`: a batch writes many files: name a prefix ending in `/`, e.g. s3://bucket/campaign-7/"
        );
    }
}
