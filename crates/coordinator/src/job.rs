//! One render, as its phases: [`RenderJob::run`] reads top to bottom as
//! resolve (metadata, plan, keys) → the whole output from the cache →
//! cached chunks → targets → schedule → assemble → combine and deliver →
//! summary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chunker::{Chunk, Plan, PlanRequest};
use combine::{AudioPrefix, ChunkArtifact, CombineOptions, CombineReport, PcmAudio};
use composition::CompositionMeta;
use spec::{ArtifactTarget, ChunkIdentity, ChunkRequest, ChunkSpan, ContentHash, PcmFormat};
use storage::StorageError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::cache::{
    ArtifactRecord, CachedChunk, ChunkRecord, OutputRecord, OutputSettings, RenderCache, output_key,
};
use crate::coordinator::{Coordinator, PreparedSource};
use crate::events::{Events, RenderEvent, RenderSummary};
use crate::grpc::{ChunkFiles, ChunkTarget, Described, GrpcRunner, LocalArtifact, artifact_paths};
use crate::request::{Destination, RenderRequest};
use crate::schedule::{
    AttemptFuture, ChunkProgress, ChunkRunner, ScheduleOutcome, WorkerInfo, run_chunks,
};

/// Scheduler events buffered before they are forwarded to the handle.
const SCHEDULE_EVENTS: usize = 64;

/// The format of the chunk records this module writes.
const CHUNK_RECORD_FORMAT: u32 = 1;

/// What the resolve phase learns.
struct Resolved {
    source: PreparedSource,
    described: Described,
    plan: Plan,
    /// Every chunk's request but its span and target.
    template: ChunkRequest,
    /// Chunk keys in plan order, and the output's key (with a cache).
    keys: Option<(Vec<ContentHash>, ContentHash)>,
}

impl Resolved {
    fn meta(&self) -> &CompositionMeta {
        &self.described.meta
    }

    fn chunk_indices(&self) -> Vec<u32> {
        self.plan.chunks().iter().map(|c| c.index().0).collect()
    }
}

/// What the schedule phase produced: rendered chunks' files and attempts.
struct Rendered {
    files: HashMap<u32, ChunkFiles>,
    attempts: HashMap<u32, u32>,
    retries: usize,
}

/// What a caller resolved before the job started (a batch resolves its
/// source and renderer once for every variant, and leases the workers a
/// variant may use): the job skips preparing the source and describing the
/// composition, and schedules on `pool` when given.
pub(crate) struct Pinned {
    pub(crate) source: PreparedSource,
    pub(crate) described: Described,
    pub(crate) pool: Option<watch::Receiver<Vec<WorkerInfo>>>,
}

/// One render in progress.
pub(crate) struct RenderJob<'a> {
    coordinator: &'a Coordinator,
    /// The render's id, in its chunk requests, events and logs.
    render_id: String,
    request: RenderRequest,
    events: Events,
    cancel: CancellationToken,
    started: Instant,
    cache: Option<&'a RenderCache>,
    work: WorkDir,
    pinned: Option<Pinned>,
}

impl<'a> RenderJob<'a> {
    /// A job for `request`, checked.
    pub(crate) fn new(
        coordinator: &'a Coordinator,
        render_id: String,
        request: RenderRequest,
        events: Events,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        request.validate()?;
        if let Some(dir) = request.local_sequence_dir() {
            // The sequence's audio.wav is written here by this process
            // (workers create it too, for their frames).
            std::fs::create_dir_all(dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        let work = WorkDir::create(&request.output)?;
        Ok(RenderJob {
            coordinator,
            render_id,
            request,
            events,
            cancel,
            started: Instant::now(),
            cache: None,
            work,
            pinned: None,
        })
    }

    /// A job for `request` whose source and composition were resolved by
    /// the caller (see [`Pinned`]).
    pub(crate) fn pinned(
        coordinator: &'a Coordinator,
        render_id: String,
        request: RenderRequest,
        pinned: Pinned,
        events: Events,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let mut job = Self::new(coordinator, render_id, request, events, cancel)?;
        job.pinned = Some(pinned);
        Ok(job)
    }

    /// The whole render, then the removal of its work directory.
    pub(crate) async fn run(mut self) -> Result<RenderSummary, Error> {
        let result = self.phases().await;
        self.work.remove().await;
        result
    }

    /// The whole render, phase by phase.
    async fn phases(&mut self) -> Result<RenderSummary, Error> {
        self.cache = self.until_cancelled(self.coordinator.cache()).await?;
        if !self.request.writes_video() {
            // Audio-only renders and image sequences are not cached: their
            // chunks have no video artifact, and a sequence's frames live
            // at its target, not in the cache.
            self.cache = None;
        }
        let resolved = self.resolve().await?;
        if let Some(summary) = self.cached_output(&resolved).await? {
            return Ok(summary);
        }
        let hits = self.cached_chunks(&resolved).await?;
        let audio = AudioAhead::start(&resolved, self.combine_options(&resolved.plan));
        let downloads = self.download_cached(&resolved, &hits, &audio);
        let misses: Vec<Chunk> = resolved
            .plan
            .chunks()
            .iter()
            .filter(|c| !hits.contains_key(&c.index().0))
            .copied()
            .collect();
        let targets = self.targets(&resolved, &misses)?;
        let rendered = self.schedule(&resolved, &misses, targets, &audio).await?;
        let files = self.assemble(&resolved, rendered.files, downloads).await?;
        let (frames, bytes, output, presigned_url, combine_ms) = if self.request.writes_video() {
            let (report, output, presigned_url, combine_ms) =
                self.combine_and_deliver(&resolved, &files, audio).await?;
            (
                report.frames,
                report.bytes,
                output,
                presigned_url,
                combine_ms,
            )
        } else {
            drop(audio);
            self.audio_and_deliver(&resolved, &files).await?
        };
        let summary = RenderSummary {
            render_id: self.render_id.clone(),
            output,
            presigned_url,
            frames,
            duration_seconds: seconds(&resolved.plan, frames),
            chunks: resolved.plan.chunks().len(),
            attempts: resolved
                .chunk_indices()
                .iter()
                .map(|i| rendered.attempts.get(i).copied().unwrap_or(0))
                .collect(),
            retries: rendered.retries,
            wall_ms: self.started.elapsed().as_millis() as u64,
            combine_ms,
            bytes,
            cached_chunks: hits.len(),
            output_cached: false,
        };
        self.events.send(RenderEvent::Done(summary.clone())).await;
        Ok(summary)
    }

    /// Prepares the source, describes the composition on a worker, plans the
    /// chunks and computes their cache keys.
    async fn resolve(&self) -> Result<Resolved, Error> {
        let request = &self.request;
        let (source, described) = match &self.pinned {
            Some(p) => (p.source.clone(), p.described.clone()),
            None => {
                let source = self
                    .until_cancelled(self.coordinator.prepare_source(&request.source, self.cache))
                    .await?;
                let described = self
                    .until_cancelled(self.coordinator.describe(
                        &source.spec,
                        &request.composition,
                        &request.props,
                    ))
                    .await?;
                (source, described)
            }
        };
        let meta = &described.meta;
        if request.audio_only && !meta.has_audio {
            return Err(Error::Input(format!(
                "--audio-only: composition `{}` has no audio",
                meta.id
            )));
        }
        let plan = plan_for(meta, request, self.coordinator.slots().await)?;
        tracing::info!(
            composition = %meta.id,
            frames = plan.output_frames(),
            chunks = plan.chunks().len(),
            renderer = %described.renderer,
            "render planned"
        );
        self.events
            .send(RenderEvent::Planned {
                composition: meta.id.clone(),
                width: meta.width,
                height: meta.height,
                fps: plan.output_fps().to_string(),
                frames: plan.output_frames(),
                chunks: plan.chunks().len(),
                frames_per_chunk: plan.frames_per_chunk(),
            })
            .await;
        // Workers render the resolved props: exactly what the keys say.
        let mut template = ChunkRequest {
            job_id: self.render_id.clone(),
            source: source.spec.clone(),
            composition_id: request.composition.clone(),
            props: meta.props.clone(),
            span: ChunkSpan::from(&plan.chunks()[0]),
            // Encoder threads chosen from the frame size are fixed here,
            // before the keys (which include them) are computed.
            video: request.video.resolved_for(meta.width, meta.height),
            pcm_format: PcmFormat::F32le,
            target: ArtifactTarget::Inline,
            frames_to: request.frame_sink(plan.output_frames()),
        };
        if template.video.codec == spec::VideoCodec::Gif {
            // One palette for every chunk, from frames across the render,
            // before the keys (which include it) are computed.
            let sampled = self
                .until_cancelled(self.coordinator.describe_sampling(
                    &source.spec,
                    &request.composition,
                    &request.props,
                    palette_frames(&plan),
                ))
                .await?;
            template.video.gif_palette = Some(sampled.gif_palette.ok_or_else(|| {
                Error::Internal("the worker asked for a GIF palette sent none".into())
            })?);
        }
        let mut resolved = Resolved {
            source,
            described,
            plan,
            template,
            keys: None,
        };
        if self.cache.is_some() {
            resolved.keys = Some(self.keys(&resolved)?);
        }
        Ok(resolved)
    }

    /// The chunks' keys in plan order and the output's.
    fn keys(&self, r: &Resolved) -> Result<(Vec<ContentHash>, ContentHash), Error> {
        let identity = r.source.identity(r.meta());
        let chunks: Vec<ContentHash> = r
            .plan
            .chunks()
            .iter()
            .map(|c| {
                ChunkIdentity {
                    renderer: &r.described.renderer,
                    source: &identity,
                    composition: &r.template.composition_id,
                    resolved_props: &r.template.props,
                    span: &ChunkSpan::from(c),
                    video: &r.template.video,
                    pcm_format: r.template.pcm_format,
                }
                .key()
            })
            .collect();
        let combiner = chunk_worker::renderer_version()
            .map_err(|e| Error::Internal(format!("this process's FFmpeg: {e}")))?;
        let output = output_key(
            &chunks,
            &OutputSettings {
                combiner: format!("{}; {}", combiner.montage, combiner.ffmpeg),
                fps: r.plan.output_fps().to_string(),
                sample_rate: r.plan.sample_rate(),
                frames: r.plan.output_frames(),
                has_audio: r.meta().has_audio,
                audio_bitrate: self.request.audio_bitrate,
                enforce_audio_track: self.request.enforce_audio_track,
                output: self.output_format(),
            },
        );
        Ok((chunks, output))
    }

    /// The whole output, if it was made before: delivered from the cache.
    async fn cached_output(&self, r: &Resolved) -> Result<Option<RenderSummary>, Error> {
        let (Some(cache), Some((_, out_key))) = (self.cache, &r.keys) else {
            return Ok(None);
        };
        if !self.request.use_cache || self.request.keep_chunks.is_some() {
            return Ok(None);
        }
        let Some((record, key)) = self
            .cancellable(lookup(cache.lookup_output(out_key)))
            .await?
        else {
            return Ok(None);
        };
        self.events
            .send(RenderEvent::CacheHit {
                chunks: r.chunk_indices(),
                output: true,
            })
            .await;
        let (output, presigned_url) = self
            .until_cancelled(self.deliver_cached(cache, &key, &record))
            .await?;
        let chunks = r.plan.chunks().len();
        let summary = RenderSummary {
            render_id: self.render_id.clone(),
            output,
            presigned_url,
            frames: record.frames,
            duration_seconds: seconds(&r.plan, record.frames),
            chunks,
            attempts: vec![0; chunks],
            retries: 0,
            wall_ms: self.started.elapsed().as_millis() as u64,
            combine_ms: 0,
            bytes: record.size,
            cached_chunks: chunks,
            output_cached: true,
        };
        self.events.send(RenderEvent::Done(summary.clone())).await;
        Ok(Some(summary))
    }

    /// The chunks made before, verified.
    async fn cached_chunks(&self, r: &Resolved) -> Result<HashMap<u32, CachedChunk>, Error> {
        let mut hits = HashMap::new();
        let (Some(cache), Some((keys, _))) = (self.cache, &r.keys) else {
            return Ok(hits);
        };
        if !self.request.use_cache {
            return Ok(hits);
        }
        let lookups = r
            .plan
            .chunks()
            .iter()
            .zip(keys)
            .map(|(c, k)| async move { (c.index().0, lookup(cache.lookup_chunk(k)).await) });
        let found = self
            .cancellable(futures_util::future::join_all(lookups))
            .await?;
        hits.extend(found.into_iter().filter_map(|(i, hit)| Some((i, hit?))));
        if !hits.is_empty() {
            let mut chunks: Vec<u32> = hits.keys().copied().collect();
            chunks.sort_unstable();
            self.events
                .send(RenderEvent::CacheHit {
                    chunks,
                    output: false,
                })
                .await;
        }
        Ok(hits)
    }

    /// Cached chunks stored in S3 download while the others render.
    fn download_cached(
        &self,
        r: &Resolved,
        hits: &HashMap<u32, CachedChunk>,
        audio: &AudioAhead,
    ) -> JoinSet<Result<ChunkFiles, Error>> {
        let mut set = JoinSet::new();
        let Some(cache) = self.cache else {
            return set;
        };
        for (&index, hit) in hits {
            let (cache, hit, dir) = (cache.clone(), hit.clone(), self.work.path().to_path_buf());
            let has_audio = r.meta().has_audio;
            let (feed, chunk) = (audio.feed(), r.plan.chunks()[index as usize]);
            set.spawn(async move {
                let files = cached_files(&cache, &hit, index, has_audio, &dir).await?;
                feed.send(&chunk, &files);
                Ok(files)
            });
        }
        set
    }

    /// Where each chunk to render goes: into the cache when there is one
    /// (a directory local workers write into, streamed into by remote
    /// workers, or an S3 prefix), else into the work directory.
    fn targets(&self, r: &Resolved, misses: &[Chunk]) -> Result<HashMap<u32, ChunkTarget>, Error> {
        let embedded = self.coordinator.embedded_pool();
        let local = |dir: PathBuf| {
            if embedded {
                ChunkTarget::SharedDir(dir)
            } else {
                ChunkTarget::Inline(dir)
            }
        };
        let mut targets = HashMap::new();
        for chunk in misses {
            let index = chunk.index().0;
            let target = match (self.cache, &r.keys) {
                (Some(cache), Some((keys, _))) => {
                    let key = &keys[index as usize];
                    match cache.local_root() {
                        Some(_) => {
                            let dir = PathBuf::from(cache.chunk_dir_url(key));
                            std::fs::create_dir_all(&dir)
                                .map_err(Error::io(format!("creating {}", dir.display())))?;
                            local(dir)
                        }
                        None => ChunkTarget::Store {
                            store: Arc::clone(cache.store()),
                            prefix: cache.chunk_dir_key(key),
                            dir: self.work.path().to_path_buf(),
                        },
                    }
                }
                _ => local(self.work.path().to_path_buf()),
            };
            targets.insert(index, target);
        }
        Ok(targets)
    }

    /// Renders the chunks not found in the cache on the pool's workers,
    /// recording each in the cache the moment it finishes.
    async fn schedule(
        &self,
        r: &Resolved,
        misses: &[Chunk],
        targets: HashMap<u32, ChunkTarget>,
        audio: &AudioAhead,
    ) -> Result<Rendered, Error> {
        let mut grpc = GrpcRunner::new(
            r.template.clone(),
            Some(r.described.renderer.clone()),
            targets,
            self.coordinator.access(),
        );
        if audio.encodes() {
            // Each chunk's PCM is encoded as soon as it arrives, while its
            // frames still render.
            let (feed, chunks) = (audio.feed(), r.plan.chunks().to_vec());
            grpc = grpc.with_audio_first(Arc::new(move |index, pcm| {
                if let Some(chunk) = chunks.get(index as usize) {
                    feed.send_pcm(chunk, pcm);
                }
            }));
        }
        let runner = Arc::new(RecordingRunner {
            inner: grpc,
            cache: self.cache.cloned(),
            keys: r.keys.as_ref().map(|(k, _)| k.clone()).unwrap_or_default(),
            audio: audio.feed(),
        });
        let stop_pool = self.cancel.child_token();
        let pool = match self.pinned.as_ref().and_then(|p| p.pool.clone()) {
            Some(leased) => leased,
            None => self.coordinator.workers(stop_pool.clone()).await,
        };
        let (tx, rx) = mpsc::channel(SCHEDULE_EVENTS);
        let forward = self.events.forward(rx);
        let schedule = async {
            let outcome = run_chunks(
                runner,
                misses,
                pool,
                self.coordinator.options.policy,
                tx,
                self.cancel.clone(),
            )
            .await;
            stop_pool.cancel();
            outcome
        };
        // Forwarding ends when the scheduler (and its sender) is done.
        let (outcome, ()) = tokio::join!(schedule, forward);
        let ScheduleOutcome {
            outputs,
            attempts,
            failures,
        } = outcome?;
        let mut rendered = Rendered {
            files: HashMap::new(),
            attempts: HashMap::new(),
            retries: failures.len(),
        };
        for ((chunk, f), n) in misses.iter().zip(outputs).zip(attempts) {
            rendered.attempts.insert(chunk.index().0, n);
            rendered.files.insert(chunk.index().0, f);
        }
        Ok(rendered)
    }

    /// Every chunk's files in plan order: rendered ones and cached ones
    /// (waiting for their downloads).
    async fn assemble(
        &self,
        r: &Resolved,
        mut files: HashMap<u32, ChunkFiles>,
        downloads: JoinSet<Result<ChunkFiles, Error>>,
    ) -> Result<Vec<ChunkFiles>, Error> {
        for f in self.cancellable(downloads.join_all()).await? {
            let f = f?;
            files.insert(f.chunk, f);
        }
        r.chunk_indices()
            .iter()
            .map(|i| {
                files
                    .remove(i)
                    .ok_or_else(|| Error::Internal(format!("chunk {i} has no artifacts")))
            })
            .collect()
    }

    /// Combines the chunks into the MP4, stores it in the cache, delivers it
    /// and trims a local cache when due. Returns the combine report, the
    /// output's path or URL, a presigned URL when asked for, and the
    /// combine time in milliseconds.
    async fn combine_and_deliver(
        &self,
        r: &Resolved,
        files: &[ChunkFiles],
        audio: AudioAhead,
    ) -> Result<(CombineReport, String, Option<String>, u64), Error> {
        self.events.send(RenderEvent::Combining).await;
        let combine_started = Instant::now();
        // Every chunk is in: what was not encoded ahead is encoded in the
        // combine.
        let audio = audio.finish().await;
        let combined = match &self.request.output {
            Destination::File(path) => path.clone(),
            Destination::Storage(_) => self.work.path().join(self.output_name()),
        };
        let artifacts = artifacts(&r.plan, r.meta(), files);
        if let Some(dir) = &self.request.keep_chunks {
            let (dir, plan, kept) = (dir.clone(), r.plan.clone(), artifacts.clone());
            let codec = self.request.video.codec;
            tokio::task::spawn_blocking(move || keep_chunks(&dir, &plan, &kept, codec))
                .await
                .map_err(Error::task("keeping the chunks"))??;
        }
        let report = self.combine(&r.plan, artifacts, audio, &combined).await?;
        let combine_ms = combine_started.elapsed().as_millis() as u64;
        // A file destination holds the whole output now: the render is
        // done, and a cancellation from here on only skips the cache.
        let in_place = self.output_in_place();
        if let (Some(cache), Some((_, out_key))) = (self.cache, &r.keys) {
            let recorded = cache.record_output(out_key, &combined, report.frames);
            match self.cancellable(recorded).await {
                Ok(Ok(_)) => {}
                // A failure to record is not a failed render.
                Ok(Err(e)) => tracing::warn!(error = %e, "could not store the output in the cache"),
                Err(e) if !in_place => return Err(e),
                Err(_) => {}
            }
        }
        let (output, presigned) = self.deliver_written(&combined).await?;
        if let Some(cache) = self.cache
            && self.coordinator.trim_due()
        {
            let max = match self.coordinator.options.cache_max_bytes {
                0 => crate::cache::DEFAULT_LOCAL_CACHE_BYTES,
                n => n,
            };
            cache.trim(max).await;
        }
        Ok((report, output, presigned, combine_ms))
    }

    /// The output of an audio-only render or the `audio.wav` of an image
    /// sequence (when the composition has audio): the chunks' PCM joined
    /// and encoded once, then delivered. Returns the frames (those of the
    /// sequence, 0 for audio only), the bytes written, the output's path or
    /// URL (the sequence's target when it has no audio), a presigned URL
    /// when asked for, and the encoding time in milliseconds.
    async fn audio_and_deliver(
        &self,
        r: &Resolved,
        files: &[ChunkFiles],
    ) -> Result<(u64, u64, String, Option<String>, u64), Error> {
        let frames = match &self.request.image_sequence {
            Some(_) => r.plan.output_frames(),
            None => 0,
        };
        let format = match &self.request.image_sequence {
            Some(sequence) if !r.meta().has_audio => {
                return Ok((frames, 0, sequence.target.to_string(), None, 0));
            }
            Some(_) => spec::AudioOnlyFormat::Wav,
            None => self.request.audio_only_format()?,
        };
        self.events.send(RenderEvent::Combining).await;
        let started = Instant::now();
        let written = match &self.request.output {
            Destination::File(path) => path.clone(),
            Destination::Storage(_) => self.work.path().join(format!("output.{format}")),
        };
        let mut parts = Vec::with_capacity(files.len());
        for (chunk, f) in r.plan.chunks().iter().zip(files) {
            let pcm = f.audio.as_ref().ok_or_else(|| {
                Error::Internal(format!("chunk {} came back without its PCM", f.chunk))
            })?;
            parts.push((
                *chunk,
                PcmAudio::new(pcm.path.clone(), combine::PcmFormat::F32le),
            ));
        }
        let options = self.combine_options(&r.plan);
        let path = written.clone();
        // Awaited even when cancelled, as the combine is.
        let job = tokio::task::spawn_blocking(move || {
            combine::write_audio_only(&parts, &options, format, &path)
        });
        let report = match job.await.map_err(Error::task("the audio encode"))? {
            Ok(report) => report,
            Err(combine::CombineError::Cancelled) => return Err(Error::Cancelled),
            Err(e) => return Err(Error::Combine(e)),
        };
        let combine_ms = started.elapsed().as_millis() as u64;
        let (output, presigned) = self.deliver_written(&written).await?;
        let output = match &self.request.image_sequence {
            Some(sequence) => format!("{} (audio: {output})", sequence.target),
            None => output,
        };
        Ok((frames, report.bytes, output, presigned, combine_ms))
    }

    /// Whether the output is written where it is wanted (a file) rather
    /// than on its way to storage.
    fn output_in_place(&self) -> bool {
        matches!(self.request.output, Destination::File(_))
    }

    /// Delivers the written output `file`: a file destination holds it
    /// already, and a cancellation no longer undoes that; an upload to
    /// storage is cancelled with the render.
    async fn deliver_written(&self, file: &Path) -> Result<(String, Option<String>), Error> {
        let delivery = self.coordinator.deliver(&self.request, file);
        if self.output_in_place() {
            delivery.await
        } else {
            self.until_cancelled(delivery).await
        }
    }

    /// The output's container and audio codec. The request was validated
    /// before the job started, so its container holds its codecs; the
    /// default is never reached.
    fn output_format(&self) -> spec::OutputFormat {
        self.request.output_format().unwrap_or_default()
    }

    /// The name of the output on its way to storage: `output.mp4`, or the
    /// container's extension (storage prefixes name the object after it).
    fn output_name(&self) -> String {
        format!("output.{}", self.output_format().container.extension())
    }

    /// How the chunks are combined: the plan's rate and length, the
    /// request's audio and container, cancelled with the render.
    fn combine_options(&self, plan: &Plan) -> CombineOptions {
        let cancel = self.cancel.clone();
        CombineOptions::new(plan.fps())
            .with_output(self.output_format())
            .with_audio_bitrate(self.request.audio_bitrate)
            .with_enforce_audio_track(self.request.enforce_audio_track)
            .with_expected_frames(plan.output_frames())
            .with_cancel_check(move || cancel.is_cancelled())
    }

    /// Runs `combine` on a blocking thread (with the audio encoded ahead,
    /// when there is some), cancelled with the render.
    async fn combine(
        &self,
        plan: &Plan,
        artifacts: Vec<ChunkArtifact>,
        audio: Option<AudioPrefix>,
        output: &Path,
    ) -> Result<CombineReport, Error> {
        let options = self.combine_options(plan);
        let output = output.to_path_buf();
        // The combine sees the cancellation itself and removes what it
        // wrote; awaited either way, so an output it finished is never
        // reported as cancelled.
        let report = tokio::task::spawn_blocking(move || match audio {
            Some(audio) => combine::combine_chunks_with_audio(&artifacts, &options, audio, output),
            None => combine::combine_chunks(&artifacts, &options, output),
        })
        .await;
        match report.map_err(Error::task("the combine step"))? {
            Ok(r) => Ok(r),
            Err(combine::CombineError::Cancelled) => Err(Error::Cancelled),
            Err(e) => Err(Error::Combine(e)),
        }
    }

    /// Delivers an output found in the cache.
    async fn deliver_cached(
        &self,
        cache: &RenderCache,
        key: &str,
        record: &OutputRecord,
    ) -> Result<(String, Option<String>), Error> {
        let hash: ContentHash = record.sha256.parse().map_err(StorageError::from)?;
        let local = match (&self.request.output, cache.local_path(key)) {
            // A local cache and a local file: copy.
            (Destination::File(path), Some(cached)) => {
                copy_atomically(&cached, path).await?;
                path.clone()
            }
            // A remote cache: download, verified.
            (Destination::File(path), None) => {
                cache.store().get_file(key, path, Some(&hash)).await?;
                path.clone()
            }
            (Destination::Storage(_), Some(cached)) => cached,
            (Destination::Storage(_), None) => {
                let tmp = self.work.path().join(self.output_name());
                cache.store().get_file(key, &tmp, Some(&hash)).await?;
                tmp
            }
        };
        self.coordinator.deliver(&self.request, &local).await
    }

    /// Runs a future unless the render is cancelled first.
    async fn cancellable<T>(&self, fut: impl Future<Output = T>) -> Result<T, Error> {
        tokio::select! {
            r = fut => Ok(r),
            _ = self.cancel.cancelled() => Err(Error::Cancelled),
        }
    }

    /// Runs a fallible future unless the render is cancelled first.
    async fn until_cancelled<T, E>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Error>
    where
        Error: From<E>,
    {
        self.cancellable(fut).await?.map_err(Error::from)
    }
}

impl Coordinator {
    /// Uploads a finished local MP4 to a storage destination (a file
    /// destination is written already). Returns the output's URL or path,
    /// and a presigned URL when asked for.
    pub(crate) async fn deliver(
        &self,
        request: &RenderRequest,
        file: &Path,
    ) -> Result<(String, Option<String>), Error> {
        self.deliver_to(&request.output, request.presign, file)
            .await
    }

    /// Puts a finished local MP4 at `output` (a file destination is
    /// written already) and returns its URL or path, with a presigned URL
    /// valid for `presign` when asked.
    pub(crate) async fn deliver_to(
        &self,
        output: &Destination,
        presign: Option<Duration>,
        file: &Path,
    ) -> Result<(String, Option<String>), Error> {
        let location = match output {
            Destination::File(path) => return Ok((path.display().to_string(), None)),
            Destination::Storage(location) => location,
        };
        let store = self.stores.open(location).await?;
        let hash = storage::hash_file(file).await?;
        let key = if location.is_prefix() {
            // Named after the file's container (`output.webm` → `.webm`).
            let ext = file
                .extension()
                .and_then(|e| e.to_str())
                .filter(|e| {
                    let name = format!("x.{e}");
                    spec::Container::from_file_name(&name).is_ok()
                        || spec::AudioOnlyFormat::from_file_name(&name).is_some()
                })
                .unwrap_or("mp4");
            storage::content_key(location.key(), &hash, ext)
        } else {
            location.key().to_owned()
        };
        // The same bytes under the same key (a re-run): nothing to upload.
        let present = store
            .head(&key)
            .await?
            .is_some_and(|m| m.sha256 == Some(hash));
        if !present {
            store.put_file(&key, file).await?;
        }
        let presigned = match presign {
            Some(ttl) => Some(store.presign_get(&key, ttl).await?),
            None => None,
        };
        Ok((store.url(&key), presigned))
    }
}

/// A cache lookup whose storage failure is reported but does not fail the
/// render: the chunk is rendered again instead.
async fn lookup<T>(fut: impl Future<Output = Result<Option<T>, StorageError>>) -> Option<T> {
    fut.await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cache lookup failed: rendering instead");
        None
    })
}

fn seconds(plan: &Plan, frames: u64) -> f64 {
    let fps = plan.output_fps();
    frames as f64 * f64::from(fps.den()) / f64::from(fps.num())
}

/// Copies `from` to `to` through a temporary file beside `to` (tokio's copy
/// runs on a blocking thread).
pub(crate) async fn copy_atomically(from: &Path, to: &Path) -> Result<(), Error> {
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".montage-out-")
        .tempfile_in(parent)
        .map_err(Error::io(format!(
            "creating a file in {}",
            parent.display()
        )))?
        .into_temp_path();
    tokio::fs::copy(from, &tmp)
        .await
        .map_err(Error::io(format!(
            "copying {} to {}",
            from.display(),
            tmp.display()
        )))?;
    tmp.persist(to).map_err(|e| Error::Io {
        context: format!("writing {}", to.display()),
        source: e.error,
    })?;
    Ok(())
}

/// A cached chunk's files on this machine: in place for a local cache,
/// downloaded (and verified) into `dir` for a remote one.
async fn cached_files(
    cache: &RenderCache,
    hit: &CachedChunk,
    index: u32,
    has_audio: bool,
    dir: &Path,
) -> Result<ChunkFiles, Error> {
    let mut video = None;
    let mut audio = None;
    for a in &hit.record.artifacts {
        let key = cache.artifact_key(hit, &a.name);
        let hash: ContentHash = a.sha256.parse().map_err(StorageError::from)?;
        let path = match cache.local_path(&key) {
            Some(p) => p,
            None => {
                let dest = dir.join(format!("cached-{index:06}-{}", a.name));
                cache.store().get_file(&key, &dest, Some(&hash)).await?;
                dest
            }
        };
        let file = LocalArtifact {
            path,
            sha256: hash,
            size: a.size,
        };
        match a.kind.as_str() {
            "video_ts" => video = Some(file),
            "audio_pcm" => audio = Some(file),
            _ => {}
        }
    }
    let missing = |what: &str| {
        Error::Storage(StorageError::NotFound {
            location: format!("cached chunk {} ({what})", hit.dir_key),
        })
    };
    if video.is_none() {
        return Err(missing("video"));
    }
    if has_audio && audio.is_none() {
        return Err(missing("audio"));
    }
    Ok(ChunkFiles {
        chunk: index,
        video,
        audio,
        pcm_format: PcmFormat::F32le,
        frame_count: hit.record.frame_count,
        sample_count: hit.record.sample_count,
        timings: spec::StageTimings::default(),
    })
}

/// The gRPC runner, recording every finished chunk in the cache at once, so
/// a render killed later keeps what it finished, and handing its PCM to the
/// audio encoded ahead.
struct RecordingRunner {
    inner: GrpcRunner,
    cache: Option<RenderCache>,
    keys: Vec<ContentHash>,
    audio: AudioFeed,
}

impl ChunkRunner for RecordingRunner {
    type Output = ChunkFiles;

    fn run(
        &self,
        worker: &WorkerInfo,
        chunk: Chunk,
        attempt: u32,
        progress: mpsc::Sender<ChunkProgress>,
        cancel: CancellationToken,
    ) -> AttemptFuture<ChunkFiles> {
        let attempt = self.inner.run(worker, chunk, attempt, progress, cancel);
        let cache = self.cache.clone();
        let key = self.keys.get(chunk.index().0 as usize).copied();
        let audio = self.audio.clone();
        Box::pin(async move {
            let files = attempt.await?;
            audio.send(&chunk, &files);
            if let (Some(cache), Some(key)) = (cache, key) {
                let record = chunk_record(&key, &files);
                if let Err(e) = cache.record_chunk(&key, &record).await {
                    tracing::warn!(chunk = files.chunk, error = %e, "could not record the chunk in the cache");
                }
            }
            Ok(files)
        })
    }
}

fn chunk_record(key: &ContentHash, files: &ChunkFiles) -> ChunkRecord {
    let artifact = |kind: &str, a: &LocalArtifact| ArtifactRecord {
        kind: kind.to_owned(),
        name: a
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: a.sha256.to_hex(),
        size: a.size,
    };
    let mut artifacts: Vec<ArtifactRecord> = files
        .video
        .iter()
        .map(|v| artifact("video_ts", v))
        .collect();
    if let Some(a) = &files.audio {
        artifacts.push(artifact("audio_pcm", a));
    }
    ChunkRecord {
        format: CHUNK_RECORD_FORMAT,
        key: key.to_hex(),
        frame_count: files.frame_count,
        sample_count: files.sample_count,
        artifacts,
    }
}

/// The chunks as `combine` takes them.
fn artifacts(plan: &Plan, meta: &CompositionMeta, files: &[ChunkFiles]) -> Vec<ChunkArtifact> {
    plan.chunks()
        .iter()
        .zip(files)
        .map(|(chunk, f)| artifact(chunk, f, meta.has_audio))
        .collect()
}

/// One chunk as `combine` takes it (its PCM only when the composition has
/// audio).
fn artifact(chunk: &Chunk, f: &ChunkFiles, has_audio: bool) -> ChunkArtifact {
    // Renders without video artifacts never combine chunks (they are joined
    // by `write_audio_only`), so the empty path is never read.
    let video = f.video.as_ref().map(|v| v.path.clone()).unwrap_or_default();
    with_pcm(
        ChunkArtifact::new(*chunk, video),
        f.audio.as_ref().filter(|_| has_audio),
    )
}

/// `a` with `pcm` as its audio (the f32 PCM the coordinator asks for).
fn with_pcm(a: ChunkArtifact, pcm: Option<&LocalArtifact>) -> ChunkArtifact {
    match pcm {
        Some(pcm) => a.with_audio(PcmAudio::new(pcm.path.clone(), combine::PcmFormat::F32le)),
        None => a,
    }
}

/// The render's AAC, encoded on a blocking thread while its chunks render:
/// chunks' PCM arrives in any order, as soon as workers deliver it (before
/// the chunk's frames, see [`GrpcRunner::with_audio_first`]) or with the
/// finished chunk, and is encoded once every chunk before it is in
/// (`combine::AudioPrefix`). So when the last chunk finishes, its audio is
/// usually encoded already. A failure here is not the render's: the
/// combine then encodes everything itself (and reports the problem if it
/// is real). So is a chunk whose final PCM is not the one encoded (a retry
/// that wrote other bytes).
struct AudioAhead {
    feed: AudioFeed,
    thread: Option<tokio::task::JoinHandle<Option<AudioPrefix>>>,
    /// Set when the render ends without combining (an error), so the
    /// thread stops at its next frame instead of encoding for nobody.
    stop: Arc<AtomicBool>,
}

/// A chunk sent to be encoded ahead, with the sha256 of its PCM.
type Fed = (ChunkArtifact, Option<ContentHash>);

/// Where finished chunks are sent to be encoded ahead (nowhere for a
/// composition without audio). Cheap to clone.
#[derive(Clone)]
struct AudioFeed {
    tx: Option<std::sync::mpsc::Sender<Fed>>,
    has_audio: bool,
}

impl AudioFeed {
    /// Hands a finished chunk's PCM over (a closed feed is fine).
    fn send(&self, chunk: &Chunk, files: &ChunkFiles) {
        if let Some(tx) = &self.tx {
            let sha = files.audio.as_ref().map(|a| a.sha256);
            let _ = tx.send((artifact(chunk, files, self.has_audio), sha));
        }
    }

    /// Hands a chunk's PCM over before its frames are done.
    fn send_pcm(&self, chunk: &Chunk, pcm: &LocalArtifact) {
        if let Some(tx) = &self.tx {
            // Never read: only the PCM of a chunk is encoded ahead.
            let a = ChunkArtifact::new(*chunk, PathBuf::new());
            let _ = tx.send((with_pcm(a, Some(pcm)), Some(pcm.sha256)));
        }
    }
}

impl AudioAhead {
    /// Starts encoding for `r`'s plan, when the composition has audio.
    fn start(r: &Resolved, options: CombineOptions) -> Self {
        let has_audio = r.meta().has_audio;
        let stop = Arc::new(AtomicBool::new(false));
        // A GIF has no audio track, and audio without a video file is
        // encoded whole by `audio_and_deliver` into its own format:
        // nothing to encode ahead.
        if !has_audio
            || options.output.audio_codec().is_none()
            || !r.template.frames_to.has_video_artifact()
        {
            return AudioAhead {
                feed: AudioFeed {
                    tx: None,
                    has_audio,
                },
                thread: None,
                stop,
            };
        }
        let samples = r.plan.samples();
        let (tx, rx) = std::sync::mpsc::channel::<Fed>();
        let stopped = Arc::clone(&stop);
        let cancel = options.cancel.clone();
        let options = options.with_cancel_check(move || {
            stopped.load(Ordering::Relaxed) || cancel.as_ref().is_some_and(|c| c.is_cancelled())
        });
        let thread = tokio::task::spawn_blocking(move || {
            let mut prefix = match AudioPrefix::new(&options, samples) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode audio ahead: the combine will");
                    return None;
                }
            };
            let mut arrivals = Arrivals::default();
            while let Ok(fed) = rx.recv() {
                for a in arrivals.arrive(fed) {
                    if let Err(e) = prefix.push(&a) {
                        if !matches!(e, combine::CombineError::Cancelled) {
                            tracing::warn!(error = %e, "encoding audio ahead failed: the combine will encode it");
                        }
                        return None;
                    }
                }
            }
            arrivals.unchanged().then_some(prefix)
        });
        AudioAhead {
            feed: AudioFeed {
                tx: Some(tx),
                has_audio,
            },
            thread: Some(thread),
            stop,
        }
    }

    fn feed(&self) -> AudioFeed {
        self.feed.clone()
    }

    /// Whether audio is encoded ahead at all.
    fn encodes(&self) -> bool {
        self.feed.tx.is_some()
    }

    /// The audio encoded so far, once every chunk was sent (the other feeds
    /// are dropped by then, so the thread sees the end of its input).
    async fn finish(mut self) -> Option<AudioPrefix> {
        self.feed.tx = None;
        self.thread.take()?.await.ok().flatten()
    }
}

/// The order in which chunks reach the audio encoded ahead: they arrive
/// in any order, some twice (announced early, then with their result; or
/// again from a retry), and are encoded in plan order, each once.
#[derive(Default)]
struct Arrivals {
    /// Arrived, waiting for the chunks before them; a later arrival of the
    /// same chunk replaces an earlier one.
    waiting: std::collections::BTreeMap<usize, Fed>,
    /// The PCM hash of each chunk handed out to be encoded, in order.
    encoded: Vec<Option<ContentHash>>,
    /// Whether a chunk arrived again with other PCM after it was encoded.
    changed: bool,
}

impl Arrivals {
    /// Takes an arrival; returns the chunks to encode now, in order.
    fn arrive(&mut self, (a, sha): Fed) -> Vec<ChunkArtifact> {
        let index = a.chunk.index().0 as usize;
        if let Some(done) = self.encoded.get(index) {
            if *done != sha {
                tracing::warn!(
                    chunk = index,
                    "a chunk's PCM changed after it was encoded ahead: the combine will encode the audio"
                );
                self.changed = true;
            }
            return Vec::new();
        }
        self.waiting.insert(index, (a, sha));
        let mut ready = Vec::new();
        while let Some((a, sha)) = self.waiting.remove(&self.encoded.len()) {
            self.encoded.push(sha);
            ready.push(a);
        }
        ready
    }

    /// Whether every chunk encoded still has the PCM it was encoded from.
    fn unchanged(&self) -> bool {
        !self.changed
    }
}

impl Drop for AudioAhead {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Copies the chunks into `dir` as `chunk-NNNNNN.ts` (`.mkv`) and `.pcm`
/// with the `manifest.json` that `coordinator combine` reads (blocking).
fn keep_chunks(
    dir: &Path,
    plan: &Plan,
    artifacts: &[ChunkArtifact],
    codec: spec::VideoCodec,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    // Absolute, so the manifest's paths work from any directory.
    let dir =
        std::fs::canonicalize(dir).map_err(Error::io(format!("resolving {}", dir.display())))?;
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to)
            .map(|_| ())
            .map_err(Error::io(format!(
                "copying {} to {}",
                from.display(),
                to.display()
            )))
    };
    let mut kept = Vec::with_capacity(artifacts.len());
    for (chunk, a) in plan.chunks().iter().zip(artifacts) {
        let (video, pcm) = artifact_paths(&dir, chunk.index().0, codec);
        copy(&a.video, &video)?;
        let mut k = ChunkArtifact::new(*chunk, video);
        if let Some(audio) = &a.audio {
            copy(&audio.path, &pcm)?;
            k = k.with_audio(PcmAudio::new(pcm, audio.format));
        }
        kept.push(k);
    }
    let manifest = combine::Manifest {
        fps: plan.fps(),
        sample_rate: plan.sample_rate(),
        output_frames: Some(plan.output_frames()),
        chunks: kept,
    };
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))?;
    let mut file = tempfile::NamedTempFile::new_in(&dir)
        .map_err(Error::io(format!("writing {}", path.display())))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))?;
    file.persist(&path).map_err(|e| Error::Io {
        context: format!("writing {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}

/// The most frames a GIF palette is sampled from.
const PALETTE_SAMPLES: u64 = 16;

/// The composition frames a GIF's palette is computed from: up to
/// [`PALETTE_SAMPLES`] spread evenly from the plan's first rendered frame
/// to its last.
fn palette_frames(plan: &Plan) -> Vec<u64> {
    let (Some(first), Some(last)) = (plan.chunks().first(), plan.chunks().last()) else {
        return Vec::new();
    };
    let (a, b) = (
        ChunkSpan::from(first).frames.first.0,
        ChunkSpan::from(last).frames.last.0,
    );
    let n = PALETTE_SAMPLES.min(b - a + 1);
    if n <= 1 {
        return vec![a];
    }
    (0..n).map(|i| a + (b - a) * i / (n - 1)).collect()
}

/// The plan of `request`; [`chunker::ChunkSpec::Auto`] plans for `slots`
/// chunks rendering at once.
fn plan_for(meta: &CompositionMeta, request: &RenderRequest, slots: u32) -> Result<Plan, Error> {
    // Chunks over the planner's bounds on samples and bytes are refused
    // here, before a worker writes anything (the PCM format is the one
    // `resolve` asks workers for), and so is a frame size the codec cannot
    // encode or a GIF too fast to play right.
    request
        .video
        .check_frame_size(&meta.id, meta.width, meta.height)
        .and_then(|()| {
            request
                .video
                .check_frame_rate(&meta.id, meta.fps, request.every_nth_frame)
        })
        .map_err(|e| Error::Input(e.to_string()))?;
    let cost = spec::chunk_cost(&request.video, meta.width, meta.height, PcmFormat::F32le);
    let mut p = PlanRequest::new(meta.duration_frames, meta.fps, request.chunks)
        .with_every_nth_frame(request.every_nth_frame)
        .with_cost(cost)
        .with_slots(slots);
    if let Some(r) = &request.frames {
        p = p.with_frame_range(r.clone());
    }
    chunker::plan(&p).map_err(|e| Error::Input(e.to_string()))
}

/// A temporary directory for one render (chunks without a local cache,
/// downloads, an output on its way to storage): beside a local output so
/// renames stay on one file system, else in the system's temporary
/// directory. Removed when dropped.
struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    fn create(output: &Destination) -> Result<Self, Error> {
        let parent = match output {
            Destination::File(path) => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            Destination::Storage(_) => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix(".montage-work-")
            .tempdir_in(&parent)
            .map_err(Error::io(format!(
                "creating a work directory in {}",
                parent.display()
            )))?;
        Ok(WorkDir { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the directory. After a cancellation a chunk's writer may
    /// still add a file while it goes (a worker that has not yet seen the
    /// cancel, a receiver's last write), so it is removed again until it
    /// is gone; writers create files in it, never the directory itself,
    /// so once gone it stays gone.
    async fn remove(self) {
        let dir = self.dir.keep();
        let removed = tokio::task::spawn_blocking(move || {
            for _ in 0..WORK_DIR_REMOVALS {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(_) => std::thread::sleep(WORK_DIR_RETRY),
                }
            }
            std::fs::remove_dir_all(&dir).map_err(|e| (dir, e))
        })
        .await;
        if let Ok(Err((dir, e))) = removed {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a work directory");
        }
    }
}

/// Attempts at removing a work directory that something still writes into,
/// [`WORK_DIR_RETRY`] apart: two seconds in all, far longer than a worker
/// takes to see a cancellation between two frames.
const WORK_DIR_REMOVALS: u32 = 100;

/// The pause between two attempts at removing a work directory.
const WORK_DIR_RETRY: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::chunks;

    fn fed(chunk: &Chunk, pcm: &[u8]) -> Fed {
        let a = ChunkArtifact::new(*chunk, PathBuf::from(format!("{}.ts", chunk.index().0)));
        (a, Some(ContentHash::of_bytes(pcm)))
    }

    fn indices(ready: &[ChunkArtifact]) -> Vec<u32> {
        ready.iter().map(|a| a.chunk.index().0).collect()
    }

    #[test]
    fn chunks_are_encoded_in_plan_order_each_once() {
        let c = chunks(4);
        let mut arrivals = Arrivals::default();
        assert_eq!(
            indices(&arrivals.arrive(fed(&c[2], b"2"))),
            Vec::<u32>::new()
        );
        assert_eq!(
            indices(&arrivals.arrive(fed(&c[1], b"1"))),
            Vec::<u32>::new()
        );
        assert_eq!(indices(&arrivals.arrive(fed(&c[0], b"0"))), vec![0, 1, 2]);
        // Announced early, then again with the result: the same PCM.
        assert!(arrivals.arrive(fed(&c[1], b"1")).is_empty());
        assert_eq!(indices(&arrivals.arrive(fed(&c[3], b"3"))), vec![3]);
        assert!(arrivals.arrive(fed(&c[3], b"3")).is_empty());
        assert!(arrivals.unchanged());
    }

    #[test]
    fn a_waiting_chunk_takes_its_latest_pcm() {
        let c = chunks(2);
        let mut arrivals = Arrivals::default();
        assert!(arrivals.arrive(fed(&c[1], b"first try")).is_empty());
        // A retry delivered other bytes before chunk 1 could be encoded.
        assert!(arrivals.arrive(fed(&c[1], b"retry")).is_empty());
        arrivals.arrive(fed(&c[0], b"0"));
        assert_eq!(arrivals.encoded[1], Some(ContentHash::of_bytes(b"retry")));
        assert!(arrivals.unchanged());
    }

    #[test]
    fn pcm_that_changes_after_it_was_encoded_leaves_the_audio_to_the_combine() {
        let c = chunks(2);
        let mut arrivals = Arrivals::default();
        assert_eq!(indices(&arrivals.arrive(fed(&c[0], b"early"))), vec![0]);
        assert!(arrivals.arrive(fed(&c[0], b"other bytes")).is_empty());
        assert!(!arrivals.unchanged());
    }
}
