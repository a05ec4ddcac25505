//! The `coordinator` command line. Thin: clap parses the flags (each with
//! its own parser, so a bad value names its flag), one function turns them
//! into the library's request, pool and options, the library validates them
//! and does the work, and the error's kind decides the exit code.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use composition::Props;
use coordinator::agent::{Agent, AgentMetrics, AgentOptions};
use coordinator::batch::queue::BatchId;
use coordinator::batch::report::BatchReporter;
use coordinator::batch::{
    BatchEvent, BatchOutput, BatchRequest, NameTemplate, QueueTarget, VariantSettings,
};
use coordinator::pool::{DEFAULT_DNS_REFRESH, RemotePool, parse_dns, parse_worker};
use coordinator::progress::{LogWriter, Reporter, summary_line};
use coordinator::schedule::{SchedulePolicy, WorkerInfo};
use coordinator::{
    ChunkSpec, ClientTls, Coordinator, CoordinatorOptions, Destination, Error, ErrorKind,
    JobHandle, PoolSpec, RenderRequest, RenderSource, VideoSettings,
};
use tokio_util::sync::CancellationToken;

/// Montage: chunked, distributed video rendering.
#[derive(Parser, Debug)]
#[command(name = "coordinator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log JSON lines on stderr, at info level unless RUST_LOG says
    /// otherwise: every line of a render carries its `render_id` (and its
    /// chunk and attempt), as the workers' lines do.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a composition's metadata (size, fps, duration, audio) as JSON.
    Describe(Select),
    /// Print the chunk plan of a render as JSON: frame ranges and the exact
    /// audio sample span of every chunk.
    Plan {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        split: Split,
    },
    /// Render a composition to an MP4: plan chunks, render them on workers,
    /// combine them.
    Render(Box<RenderArgs>),
    /// Render every row of a spreadsheet (CSV), JSONL or JSON file as a
    /// video of one template: each distinct variant once, resumably
    /// (results.jsonl), with a digest at the end.
    Batch(Box<BatchArgs>),
    /// A render node of a queue: receives the jobs `batch --queue` sent,
    /// renders each with its pool, uploads the output, records the result
    /// and deletes the message. SIGTERM gives in-flight jobs back (or
    /// finishes them within --grace) and exits 0.
    Agent(Box<AgentArgs>),
    /// Where a queued batch stands: its variants rendered, failed (by
    /// reason), retrying and pending, from its results in storage.
    BatchStatus {
        /// The batch's output root, `s3://bucket/prefix/`.
        #[arg(long, value_name = "URL", value_parser = parse_batch_output)]
        out: BatchOutput,
        /// The batch's id (printed by `batch --queue`).
        #[arg(long, value_name = "ID", value_parser = parse_batch_id)]
        batch: BatchId,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join existing chunk artifacts into one MP4 (a manifest written by
    /// `render --keep-chunks DIR` is at DIR/manifest.json).
    Combine {
        /// The manifest: fps, sample rate, output frames and the chunks in
        /// order (JSON).
        #[arg(long)]
        manifest: PathBuf,
        /// AAC bitrate in bits per second.
        #[arg(long, default_value_t = combine::DEFAULT_AUDIO_BITRATE)]
        audio_bitrate: u32,
        /// The MP4 to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Render one frame to a PNG (the same renderer as a full render).
    Still {
        #[command(flatten)]
        select: Select,
        /// The frame to render.
        #[arg(long)]
        frame: u64,
        /// The image to write (.png, .jpg/.jpeg, .webp).
        #[arg(long)]
        out: PathBuf,
        /// png (alpha kept), jpeg (over black) or webp (lossless, alpha
        /// kept). Default: from the extension of --out.
        #[arg(long, value_name = "FORMAT", value_parser = parse_still_format)]
        format: Option<spec::ImageFormat>,
        /// JPEG quality (1-100).
        #[arg(long, value_name = "Q", default_value_t = spec::DEFAULT_JPEG_QUALITY, value_parser = clap::value_parser!(u8).range(1..=100))]
        jpeg_quality: u8,
    },
}

#[derive(Args, Debug)]
struct Select {
    /// A scene bundle folder; without it, the built-in compositions.
    bundle: Option<PathBuf>,
    /// The composition id (default: the bundle's only composition, or the
    /// built-in `test-pattern`).
    #[arg(long)]
    composition: Option<String>,
    /// Props: a JSON object, or a file holding one.
    #[arg(long, value_name = "FILE|JSON")]
    props: Option<String>,
    /// One prop, `key=value` (value parsed as JSON if it is JSON, else a
    /// string); repeatable, applied after --props.
    #[arg(long = "prop", value_name = "KEY=VALUE", value_parser = parse_prop)]
    prop: Vec<(String, serde_json::Value)>,
}

/// How to split a render into chunks.
#[derive(Args, Debug)]
struct Split {
    /// Split into at most this many chunks of equal length. Default: a few
    /// per worker slot (3), none shorter than 2 seconds, the same number
    /// for every slot.
    #[arg(long, conflicts_with = "frames_per_chunk")]
    chunks: Option<u32>,
    /// Split into chunks of exactly this many frames (the last may be shorter).
    #[arg(long)]
    frames_per_chunk: Option<u64>,
    /// Render only frames A-B (inclusive).
    #[arg(long, value_name = "A-B", value_parser = parse_range)]
    frames: Option<RangeInclusive<u64>>,
}

impl Split {
    /// The chunk spec typed, or the planner's choice.
    fn spec(&self) -> ChunkSpec {
        match (self.chunks, self.frames_per_chunk) {
            (Some(n), _) => ChunkSpec::Count(n),
            (None, Some(k)) => ChunkSpec::FramesPerChunk(k),
            (None, None) => ChunkSpec::Auto,
        }
    }
}

#[derive(Args, Debug)]
struct RenderArgs {
    #[command(flatten)]
    select: Select,
    #[command(flatten)]
    split: Split,
    #[command(flatten)]
    encode: Encode,
    /// Where the MP4 goes: a file, `s3://bucket/path.mp4`, or a prefix
    /// `s3://bucket/renders/` (named by content hash: `renders/ab/cd/<sha256>.mp4`).
    /// With --audio-only: a .wav, .m4a, .mp3 or .opus file.
    #[arg(
        long,
        value_name = "PATH|URL",
        value_parser = parse_destination,
        required_unless_present = "image_sequence",
        conflicts_with = "image_sequence"
    )]
    out: Option<Destination>,
    /// Render only the audio, no video frame: the extension of --out picks
    /// the format (.wav 16-bit PCM, .m4a AAC, .mp3, .opus).
    #[arg(
        long,
        conflicts_with_all = ["image_sequence", "codec", "transparent", "pixel_format", "crf", "lossless", "audio_codec", "keep_chunks"]
    )]
    audio_only: bool,
    /// Write every frame as an image into DIR (a directory on the workers,
    /// under their --allow-path, or `s3://bucket/prefix/`), named
    /// `frame-<N>.png` (or `.jpg`) by output frame index, zero-padded to
    /// the digits of the last index; `audio.wav` beside them when the
    /// composition has audio. No video is encoded.
    #[arg(
        long,
        value_name = "DIR|URL",
        value_parser = parse_image_target,
        conflicts_with_all = ["codec", "pixel_format", "crf", "lossless", "audio_codec", "keep_chunks"]
    )]
    image_sequence: Option<spec::ImageTarget>,
    /// The images of --image-sequence: png (alpha kept) or jpeg.
    #[arg(long, value_name = "FORMAT", value_parser = parse_sequence_format, default_value = "png", requires = "image_sequence")]
    image_format: spec::ImageFormat,
    /// JPEG quality (1-100) of --image-format jpeg.
    #[arg(long, value_name = "Q", default_value_t = spec::DEFAULT_JPEG_QUALITY, value_parser = clap::value_parser!(u8).range(1..=100))]
    jpeg_quality: u8,
    /// Also print a presigned GET URL of an s3:// output, valid this many
    /// seconds (at most 604800).
    #[arg(long, value_name = "SECS")]
    presign: Option<u64>,
    #[command(flatten)]
    cache: Cache,
    #[command(flatten)]
    pool: Pool,
    /// Keep chunk artifacts (and a manifest.json for `combine`) in DIR.
    #[arg(long, value_name = "DIR")]
    keep_chunks: Option<PathBuf>,
    #[command(flatten)]
    report: Report,
    #[command(flatten)]
    webhook: Webhook,
}

/// How every frame is encoded (the same for every video of a batch).
#[derive(Args, Debug)]
struct Encode {
    /// Keep only every Nth frame.
    #[arg(long, default_value_t = 1)]
    every_nth_frame: u32,
    /// The video codec: h264 (default), h265, vp9, av1, prores or gif.
    /// The output's extension picks the container (.mp4, .mov, .webm,
    /// .mkv, .gif); a codec it cannot hold is refused.
    #[arg(long, value_name = "CODEC", value_parser = parse_codec, default_value = "h264")]
    codec: spec::VideoCodec,
    /// Constant rate factor: 0-51 for h264/h265 (default 18), 0-63 for vp9
    /// (default 31); ignored by prores.
    #[arg(long)]
    crf: Option<u8>,
    /// Speed preset, x264's names (libvpx maps them to its cpu-used).
    #[arg(long, default_value = "veryfast")]
    preset: String,
    /// Encode video losslessly (h264 QP 0 4:4:4, h265 and vp9 lossless).
    #[arg(long, conflicts_with = "crf")]
    lossless: bool,
    /// Keep the composition's alpha: vp9 as yuva420p (.webm), prores 4444
    /// as yuva444p10le (.mov). Other codecs are refused.
    #[arg(long)]
    transparent: bool,
    /// Pixel format of the encoded video (yuv420p, yuv444p, yuva420p,
    /// yuv422p10le for ProRes 422 HQ, yuv444p10le and yuva444p10le for
    /// ProRes 4444). Default: the codec's.
    #[arg(long, value_name = "FORMAT", value_parser = parse_pixel_format)]
    pixel_format: Option<spec::PixelFormat>,
    /// The audio codec: aac, opus or pcm. Default: the container's (AAC;
    /// Opus in .webm).
    #[arg(long, value_name = "CODEC", value_parser = parse_audio_codec)]
    audio_codec: Option<spec::AudioCodec>,
    /// libx264 threads per chunk (1-16; the bitstream depends on it).
    /// Default: chosen from the frame size.
    #[arg(long, value_name = "N")]
    encoder_threads: Option<u32>,
    /// AAC bitrate in bits per second.
    #[arg(long, default_value_t = combine::DEFAULT_AUDIO_BITRATE)]
    audio_bitrate: u32,
    /// Add a silent audio track when the composition has none.
    #[arg(long)]
    enforce_audio_track: bool,
}

impl Encode {
    /// The video settings typed, on the codec's defaults (the library
    /// checks them: a codec without alpha and `--transparent` is refused
    /// there).
    fn video(&self) -> Result<VideoSettings, Error> {
        let mut video = VideoSettings::for_codec(self.codec, self.transparent)
            .map_err(|e| Error::Input(format!("--transparent: {}", e.message)))?;
        if self.lossless {
            video.quality = spec::Quality::Lossless;
            if self.codec == spec::VideoCodec::H264 {
                video.profile = spec::H264Profile::High444;
            }
            if !self.transparent {
                video.pixel_format = spec::PixelFormat::Yuv444p;
            }
        } else if let Some(crf) = self.crf {
            video.quality = spec::Quality::Crf(crf);
        }
        if let Some(p) = self.pixel_format {
            video.pixel_format = p;
        }
        video.preset = self.preset.clone();
        video.encoder_threads = self.encoder_threads;
        Ok(video)
    }
}

fn parse_codec(text: &str) -> Result<spec::VideoCodec, String> {
    spec::VideoCodec::parse(text).ok_or_else(|| {
        format!(
            "`{}` is not a codec; allowed: {}",
            spec::quote(text),
            spec::VideoCodec::names()
        )
    })
}

fn parse_pixel_format(text: &str) -> Result<spec::PixelFormat, String> {
    spec::PixelFormat::parse(text).ok_or_else(|| {
        format!(
            "`{}` is not a pixel format; allowed: {}",
            spec::quote(text),
            spec::PixelFormat::ALL
                .map(spec::PixelFormat::as_str)
                .join(", ")
        )
    })
}

fn parse_image_target(text: &str) -> Result<spec::ImageTarget, String> {
    spec::ImageTarget::parse(text).map_err(|e| e.message)
}

fn parse_sequence_format(text: &str) -> Result<spec::ImageFormat, String> {
    spec::ImageFormat::parse(text)
        .filter(|f| f.for_sequences())
        .ok_or_else(|| format!("`{}` is not png or jpeg", spec::quote(text)))
}

fn parse_still_format(text: &str) -> Result<spec::ImageFormat, String> {
    spec::ImageFormat::parse(text)
        .ok_or_else(|| format!("`{}` is not png, jpeg or webp", spec::quote(text)))
}

fn parse_audio_codec(text: &str) -> Result<spec::AudioCodec, String> {
    spec::AudioCodec::parse(text).ok_or_else(|| {
        format!(
            "`{}` is not an audio codec; allowed: aac, opus, pcm",
            spec::quote(text)
        )
    })
}

/// The render cache.
#[derive(Args, Debug)]
struct Cache {
    /// The render cache: a directory or `s3://bucket/prefix/` keeping
    /// bundles, chunks and outputs by content hash, so nothing is rendered
    /// twice; `off` for none. Default: $MONTAGE_CACHE (which may be `off`), else
    /// $XDG_CACHE_HOME/montage, else ~/.cache/montage.
    #[arg(long, value_name = "DIR|URL|off")]
    cache: Option<String>,
    /// Render everything again instead of reusing cached chunks and outputs
    /// (what is rendered is still cached).
    #[arg(long)]
    no_cache: bool,
    /// Trim a local cache to this size after each render, least recently
    /// used first (e.g. 500M, 20G).
    #[arg(long, value_name = "SIZE", default_value = "20G", value_parser = storage::parse_byte_size)]
    cache_size: u64,
}

/// Where chunks run, and how they are retried.
#[derive(Args, Debug)]
struct Pool {
    /// Run N workers in this process on loopback (the default, N = cores).
    #[arg(long, conflicts_with_all = ["worker", "workers_dns"])]
    local: Option<usize>,
    /// A remote worker, `http://HOST:PORT[#SLOTS]` or `https://…` for one
    /// serving TLS; repeatable.
    #[arg(long, conflicts_with = "workers_dns", value_parser = parse_worker_flag)]
    worker: Vec<WorkerInfo>,
    /// Every address a DNS name resolves to, `NAME:PORT` (or
    /// `https://NAME:PORT` for workers serving TLS, checked against NAME),
    /// re-resolved while rendering.
    #[arg(long, value_name = "NAME:PORT")]
    workers_dns: Option<String>,
    /// PEM CA certificates that https:// workers' certificates must chain
    /// to (default: the system's trusted roots). Makes http:// workers an
    /// error.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM certificate this coordinator presents to workers that require
    /// client certificates (needs --tls-client-key).
    #[arg(long, value_name = "FILE", requires = "tls_client_key")]
    tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
    /// The name workers' certificates are checked against (default: each
    /// worker URL's host).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Slots per worker found through --workers-dns.
    #[arg(long, default_value_t = 1)]
    dns_slots: u32,
    /// Attempts per chunk before the render fails.
    #[arg(long, default_value_t = coordinator::schedule::DEFAULT_MAX_ATTEMPTS)]
    retries: u32,
    /// Seconds without progress after which a worker's chunk is retried
    /// elsewhere.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    stall_timeout: Duration,
    /// A file holding the workers' bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// How progress is reported.
#[derive(Args, Debug)]
struct Report {
    /// One JSON object per event per line on stdout, instead of a progress
    /// bar.
    #[arg(long)]
    json: bool,
}

/// Where a render's outcome is posted.
#[derive(Args, Debug)]
struct Webhook {
    /// POST a JSON event here when the render succeeds, fails or is
    /// cancelled (retried with backoff; never holds up the render).
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// A file holding the secret webhook deliveries are signed with
    /// (HMAC-SHA256, header X-Montage-Signature).
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_secret_file: Option<PathBuf>,
}

impl Webhook {
    fn config(&self) -> anyhow::Result<Option<coordinator::webhook::WebhookConfig>> {
        let Some(url) = &self.webhook else {
            return Ok(None);
        };
        let secret = match &self.webhook_secret_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("--webhook-secret-file {}", f.display()))?
                    .trim()
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        Ok(Some(coordinator::webhook::WebhookConfig::new(
            url.clone(),
            secret,
        )))
    }
}

/// `coordinator batch`: every row of a variants file is a video.
#[derive(Args, Debug)]
struct BatchArgs {
    /// The bundle, the composition of rows without a `composition` column,
    /// and props every row starts from (its cells win).
    #[command(flatten)]
    select: Select,
    /// The rows: a .csv (header row: props, `text.Layer`-style overrides,
    /// `out`, `composition`), .jsonl (one object per line) or .json (an
    /// array of objects) file.
    #[arg(long, value_name = "FILE")]
    variants: PathBuf,
    /// Where the outputs go: a directory or an `s3://bucket/prefix/`.
    #[arg(long, value_name = "DIR|URL", value_parser = parse_batch_output)]
    out: BatchOutput,
    /// Output names, a template over the row's columns, e.g.
    /// '{name}-{count}.mp4' (a row's `out` cell wins); default: the sha256
    /// of the output, `ab/cd/<sha256>.mp4`.
    #[arg(long, value_name = "TEMPLATE", value_parser = parse_name)]
    name: Option<NameTemplate>,
    /// The results file, one JSON line per row, read again to resume
    /// (default: results.jsonl in the output directory; for s3:// outputs
    /// in the current directory, copied under the prefix at the end).
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Render the valid rows even when some are invalid.
    #[arg(long)]
    keep_going: bool,
    #[command(flatten)]
    split: BatchSplit,
    #[command(flatten)]
    encode: Encode,
    #[command(flatten)]
    cache: Cache,
    #[command(flatten)]
    pool: Pool,
    #[command(flatten)]
    report: Report,
    /// Send one message per distinct variant to this queue (SQS, or an
    /// engine speaking its API) for `coordinator agent`s to render, instead
    /// of rendering here; --out must be an s3:// prefix the agents reach.
    #[arg(long, value_name = "URL")]
    queue: Option<String>,
    /// With --queue: wait for the agents' results and write results.jsonl
    /// and the digest (else print the batch id and exit).
    #[arg(long, requires = "queue")]
    wait: bool,
    /// With --wait: seconds to wait for results; variants still without
    /// one are then recorded as failed (`timed out`) and the batch exits 1
    /// (their results may still arrive: see `batch-status`).
    #[arg(long, value_name = "SECS", requires = "wait", value_parser = parse_seconds)]
    wait_timeout: Option<Duration>,
    #[command(flatten)]
    webhook: Webhook,
}

/// `coordinator agent`: a render node of a queue.
#[derive(Args, Debug)]
struct AgentArgs {
    /// The queue's URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/campaign.
    #[arg(long, value_name = "URL")]
    queue: String,
    /// Seconds a received job stays hidden from other agents; extended
    /// every third of it while the job renders.
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_seconds)]
    visibility_timeout: Duration,
    /// Seconds one receive waits for a message (long polling, at most 20).
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_seconds)]
    receive_wait: Duration,
    /// Exit after this many jobs.
    #[arg(long, value_name = "N")]
    max_jobs: Option<u64>,
    /// On SIGTERM, seconds in-flight jobs may run on before they are given
    /// back to the queue (0: at once).
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_seconds_or_zero)]
    grace: Duration,
    /// Where bundles are unpacked (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    bundle_cache: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    cache: Cache,
    #[command(flatten)]
    pool: Pool,
    #[command(flatten)]
    webhook: Webhook,
}

/// How a batch's variants are split; unlike `render`, optional: a batch
/// renders short variants whole, one per slot.
#[derive(Args, Debug)]
struct BatchSplit {
    /// Split every variant into at most this many chunks.
    #[arg(long, conflicts_with = "frames_per_chunk")]
    chunks: Option<u32>,
    /// Split every variant into chunks of this many frames.
    #[arg(long)]
    frames_per_chunk: Option<u64>,
    /// Render only frames A-B (inclusive) of every variant.
    #[arg(long, value_name = "A-B", value_parser = parse_range)]
    frames: Option<RangeInclusive<u64>>,
}

fn parse_prop(kv: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("`{}` is not key=value", spec::quote(kv)))?;
    if k.is_empty() {
        return Err(format!("`{}` has an empty key", spec::quote(kv)));
    }
    let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
    Ok((k.to_owned(), value))
}

fn parse_range(text: &str) -> Result<RangeInclusive<u64>, String> {
    let (a, b) = text.split_once('-').ok_or_else(|| {
        format!(
            "`{}` is not a range: write it as A-B, e.g. 0-89",
            spec::quote(text)
        )
    })?;
    let frame = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{}` is not a frame number", spec::quote(s)))
    };
    Ok(frame(a)?..=frame(b)?)
}

fn parse_destination(text: &str) -> Result<Destination, String> {
    Destination::parse(text).map_err(|e| e.to_string().trim_start_matches("--out ").to_owned())
}

fn parse_batch_output(text: &str) -> Result<BatchOutput, String> {
    BatchOutput::parse(text).map_err(|e| {
        let m = e.to_string();
        m.trim_start_matches("--out: ")
            .trim_start_matches("--out ")
            .to_owned()
    })
}

fn parse_name(text: &str) -> Result<NameTemplate, String> {
    NameTemplate::parse(text).map_err(|e| e.to_string().trim_start_matches("--name ").to_owned())
}

fn parse_batch_id(text: &str) -> Result<BatchId, String> {
    BatchId::parse(text)
}

fn parse_seconds_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_seconds(text)
}

fn parse_worker_flag(text: &str) -> Result<WorkerInfo, String> {
    parse_worker(text).map_err(|e| e.to_string())
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{}` is not a number of seconds", spec::quote(text)))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{text} is invalid: give a number of seconds above 0"))
}

/// A flag's bad value as one line, `error: --flag <reason>`, like every
/// other input error; other command-line errors (unknown or conflicting
/// flags, `--help`) as clap prints them, with their usage hints.
fn parse_cli() -> Result<Cli, ExitCode> {
    use clap::error::{ContextKind, ContextValue, ErrorKind as Clap};
    let err = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split([' ', '=']).next().map(str::to_owned),
        _ => None,
    };
    let source = std::error::Error::source(&err).map(ToString::to_string);
    match (err.kind(), flag, source) {
        (Clap::ValueValidation, Some(flag), Some(reason)) => {
            eprintln!("error: {flag} {reason}");
            Err(ExitCode::from(ErrorKind::Input.exit_code()))
        }
        _ => {
            let _ = err.print();
            Err(ExitCode::from(match err.kind() {
                Clap::DisplayHelp | Clap::DisplayVersion => 0,
                _ => ErrorKind::Input.exit_code(),
            }))
        }
    }
}

/// Props from `--props FILE|JSON` and `--prop key=value`.
fn props(select: &Select) -> anyhow::Result<Props> {
    let object = |text: &str| -> anyhow::Result<Props> {
        match serde_json::from_str::<serde_json::Value>(text).context("not valid JSON")? {
            serde_json::Value::Object(map) => Ok(map),
            other => anyhow::bail!(
                "must be a JSON object, got {}",
                spec::quote(&other.to_string())
            ),
        }
    };
    let mut map = match select.props.as_deref() {
        None => Props::new(),
        Some(text) if text.trim_start().starts_with(['{', '[']) => {
            object(text).context("--props")?
        }
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--props: reading {path}"))?;
            object(&text).with_context(|| format!("--props file {path}"))?
        }
    };
    for (k, v) in &select.prop {
        map.insert(k.clone(), v.clone());
    }
    Ok(map)
}

/// The source, composition id and props every subcommand selects.
fn select(
    select: &Select,
) -> anyhow::Result<(Arc<dyn composition::CompositionSource>, String, Props)> {
    let props = props(select)?;
    let source = coordinator::open_source(select.bundle.as_deref())?;
    let id = match (&select.composition, &select.bundle) {
        (Some(id), _) => id.clone(),
        (None, Some(_)) => coordinator::choose_composition(source.as_ref(), None)?,
        (None, None) => composition::builtin::TEST_PATTERN_ID.to_owned(),
    };
    Ok((source, id, props))
}

/// Turns what the user typed into the library's request, pool and options.
fn render_request(
    args: &RenderArgs,
) -> anyhow::Result<(RenderRequest, PoolSpec, CoordinatorOptions)> {
    let (source, id, props) = match &args.select.bundle {
        Some(dir) => {
            let (bundle, id, props) = select(&args.select)?;
            drop(bundle);
            (RenderSource::Bundle(dir.clone()), id, props)
        }
        None => (
            RenderSource::Registered,
            args.select
                .composition
                .clone()
                .unwrap_or_else(|| composition::builtin::TEST_PATTERN_ID.to_owned()),
            props(&args.select)?,
        ),
    };
    let sequence = args
        .image_sequence
        .as_ref()
        .map(|target| coordinator::ImageSequenceOutput {
            target: target.clone(),
            format: args.image_format,
            jpeg_quality: args.jpeg_quality,
        });
    let out = match (&args.out, &sequence) {
        (Some(out), _) => out.clone(),
        (None, Some(sequence)) => sequence.audio_destination()?,
        (None, None) => anyhow::bail!(Error::Input("--out is required".into())),
    };
    let mut request = RenderRequest::new(source, id, args.split.spec(), out);
    request.props = props;
    request.frames = args.split.frames.clone();
    request.every_nth_frame = args.encode.every_nth_frame;
    request.audio_only = args.audio_only;
    request.image_sequence = sequence;
    // PNG frames keep the composition's alpha whatever --transparent says;
    // JPEG has none.
    request.video = match (&args.image_sequence, args.encode.transparent) {
        (Some(_), true) if args.image_format == spec::ImageFormat::Jpeg => {
            anyhow::bail!(Error::Input(
                "--image-format jpeg with --transparent: JPEG has no alpha; use png".into()
            ))
        }
        (Some(_), _) => VideoSettings::default(),
        (None, _) => args.encode.video()?,
    };
    request.audio_bitrate = args.encode.audio_bitrate;
    request.audio_codec = args.encode.audio_codec;
    request.enforce_audio_track = args.encode.enforce_audio_track;
    request.keep_chunks = args.keep_chunks.clone();
    request.use_cache = !args.cache.no_cache;
    request.presign = args.presign.map(Duration::from_secs);
    let (pool, mut options) = pool_and_options(&args.pool, &args.cache)?;
    options.webhook = args.webhook.config()?;
    options.validate()?;
    request.validate()?;
    Ok((request, pool, options))
}

/// The pool and the coordinator's options, checked.
fn pool_and_options(args: &Pool, cache: &Cache) -> anyhow::Result<(PoolSpec, CoordinatorOptions)> {
    let pool = if !args.worker.is_empty() {
        PoolSpec::Remote(RemotePool::Addresses(args.worker.clone()))
    } else if let Some(dns) = &args.workers_dns {
        PoolSpec::Remote(parse_dns(dns, args.dns_slots, DEFAULT_DNS_REFRESH)?)
    } else {
        let mut local = PoolSpec::local();
        if let (Some(n), PoolSpec::Embedded { workers, .. }) = (args.local, &mut local) {
            *workers = n;
        }
        local
    };
    let token = match &args.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let options = CoordinatorOptions {
        tls: client_tls(args)?,
        policy: SchedulePolicy {
            max_attempts: args.retries,
            stall_timeout: args.stall_timeout,
            ..SchedulePolicy::default()
        },
        token,
        cache: cache
            .cache
            .clone()
            .or_else(coordinator::cache::default_cache_location)
            .filter(|c| c != "off"),
        cache_max_bytes: cache.cache_size,
        s3: storage::S3Config::default(),
        webhook: None,
    };
    pool.validate()?;
    options.validate()?;
    Ok((pool, options))
}

/// Turns what the user typed into the library's batch request, pool and
/// options.
fn batch_request(args: &BatchArgs) -> anyhow::Result<(BatchRequest, PoolSpec, CoordinatorOptions)> {
    let source = match &args.select.bundle {
        Some(dir) => RenderSource::Bundle(dir.clone()),
        None => RenderSource::Registered,
    };
    let mut request = BatchRequest::new(source, args.variants.clone(), args.out.clone());
    request.composition = match (&args.select.composition, &args.select.bundle) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(composition::builtin::TEST_PATTERN_ID.to_owned()),
    };
    request.props = props(&args.select)?;
    request.name = args.name.clone();
    request.results = args.results.clone();
    request.keep_going = args.keep_going;
    request.use_cache = !args.cache.no_cache;
    request.queue = args.queue.clone().map(|url| QueueTarget {
        url,
        wait: args.wait,
        wait_timeout: args.wait_timeout,
    });
    request.settings = VariantSettings {
        chunks: match (args.split.chunks, args.split.frames_per_chunk) {
            (Some(n), _) => Some(ChunkSpec::Count(n)),
            (None, Some(k)) => Some(ChunkSpec::FramesPerChunk(k)),
            (None, None) => None,
        },
        frames: args.split.frames.clone(),
        every_nth_frame: args.encode.every_nth_frame,
        video: args.encode.video()?,
        audio_bitrate: args.encode.audio_bitrate,
        enforce_audio_track: args.encode.enforce_audio_track,
    };
    let (pool, mut options) = pool_and_options(&args.pool, &args.cache)?;
    options.webhook = args.webhook.config()?;
    options.validate()?;
    request.validate()?;
    Ok((request, pool, options))
}

/// The TLS settings typed, if any: files read here, checked by the library.
fn client_tls(args: &Pool) -> anyhow::Result<Option<ClientTls>> {
    let read = |flag: &str, path: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
        path.as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("{flag} {}", p.display())))
            .transpose()
    };
    let tls = ClientTls {
        ca_pem: read("--tls-ca", &args.tls_ca)?,
        client_cert_pem: read("--tls-client-cert", &args.tls_client_cert)?,
        client_key_pem: read("--tls-client-key", &args.tls_client_key)?,
        server_name: args.tls_server_name.clone(),
    };
    let any = tls.ca_pem.is_some() || tls.client_cert_pem.is_some() || tls.server_name.is_some();
    Ok(any.then_some(tls))
}

/// A failure and the exit code it gets.
struct Failure {
    error: anyhow::Error,
    kind: ErrorKind,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            kind: e.kind(),
            error: e.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    /// Errors of flags and files read before the library is called are the
    /// input's; a library error inside keeps its own kind.
    fn from(error: anyhow::Error) -> Self {
        let kind = error
            .downcast_ref::<Error>()
            .map_or(ErrorKind::Input, Error::kind);
        Failure { error, kind }
    }
}

/// Follows a started render or batch to its end: Ctrl-C cancels it, every
/// event goes to `report`, and the coordinator's local workers are stopped.
async fn follow<E: Send + 'static, T: Send + 'static>(
    coordinator: Arc<Coordinator>,
    mut handle: JobHandle<E, T>,
    mut report: impl FnMut(&E),
) -> Result<T, Error> {
    let cancel = handle.cancel_token();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    while let Some(event) = handle.next_event().await {
        report(&event);
    }
    let result = handle.finish().await;
    if let Ok(c) = Arc::try_unwrap(coordinator) {
        c.shutdown().await;
    }
    result
}

fn stderr_is_a_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

async fn render(args: RenderArgs) -> Result<(), Failure> {
    let (request, pool, options) = render_request(&args)?;
    let coordinator = Arc::new(Coordinator::new(pool, options).await?);
    let handle = coordinator.render(request);
    let mut reporter = Reporter::new(args.report.json, stderr_is_a_terminal());
    let result = follow(coordinator, handle, |e| reporter.event(e)).await;
    reporter.finish();
    let summary = result?;
    eprintln!("{}", summary_line(&summary));
    Ok(())
}

async fn batch(args: BatchArgs) -> Result<(), Failure> {
    let (request, pool, options) = batch_request(&args)?;
    let results = request.results_path();
    let coordinator = Arc::new(Coordinator::new(pool, options).await?);
    let queued_only = request.queue.as_ref().is_some_and(|q| !q.wait);
    let out = args.out.to_string();
    let handle = coordinator.batch(request);
    let mut reporter = BatchReporter::new(args.report.json, stderr_is_a_terminal());
    let mut queued = None;
    let result = follow(coordinator, handle, |e| {
        if let BatchEvent::Queued { batch, .. } = e {
            queued = Some(batch.clone());
        }
        reporter.event(e);
    })
    .await;
    reporter.finish();
    if let (true, Ok(_), Some(batch)) = (queued_only, &result, &queued) {
        eprintln!("follow it with: coordinator batch-status --out {out} --batch {batch}");
        if !args.report.json {
            println!("{batch}");
        }
        return Ok(());
    }
    let summary = match result {
        Ok(s) => s,
        Err(Error::Cancelled) => {
            return Err(Failure {
                error: anyhow::anyhow!(
                    "rows finished before keep their outputs and results ({}); the same command renders the others",
                    results.display()
                ),
                kind: ErrorKind::Cancelled,
            });
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!("{}", summary.digest());
    if summary.failed > 0 {
        return Err(Failure {
            error: anyhow::anyhow!(
                "{} of {} rows failed; each is in {} with its error",
                summary.failed,
                summary.rows,
                summary.results
            ),
            // Exit 1: rows failed, the batch itself ran.
            kind: ErrorKind::Worker,
        });
    }
    Ok(())
}

/// Turns what the user typed into the agent's pool, coordinator options and
/// agent options.
fn agent_request(args: &AgentArgs) -> anyhow::Result<(PoolSpec, CoordinatorOptions, AgentOptions)> {
    let (pool, options) = pool_and_options(&args.pool, &args.cache)?;
    let mut agent = AgentOptions::new(args.queue.clone());
    agent.visibility_timeout = args.visibility_timeout;
    agent.wait = args.receive_wait;
    agent.max_jobs = args.max_jobs;
    agent.grace = args.grace;
    agent.bundle_cache = args.bundle_cache.clone();
    agent.webhook = args.webhook.config()?;
    agent.validate()?;
    Ok((pool, options, agent))
}

async fn agent(args: AgentArgs) -> Result<(), Failure> {
    let (pool, options, agent_options) = agent_request(&args)?;
    let coordinator = Arc::new(Coordinator::new(pool, options).await?);
    let shutdown = CancellationToken::new();
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let listener = chunk_worker::metrics::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--metrics-listen: {e}"))?;
            let local = listener.local_addr().context("--metrics-listen")?;
            println!("metrics on http://{local}/metrics");
            let metrics = Arc::new(AgentMetrics::new());
            let encode = Arc::clone(&metrics);
            chunk_worker::metrics::serve(
                listener,
                Arc::new(move || encode.encode()),
                shutdown.clone().cancelled_owned(),
            );
            Some(metrics)
        }
        None => None,
    };
    let agent = Agent::with_metrics(Arc::clone(&coordinator), agent_options, metrics).await?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: no more jobs received");
        on_signal.cancel();
    });
    eprintln!("agent: receiving from {}", args.queue);
    let report = agent.run(shutdown.clone()).await;
    shutdown.cancel();
    drop(agent);
    if let Ok(c) = Arc::try_unwrap(coordinator) {
        c.shutdown().await;
    }
    let report = report?;
    eprintln!("{}", report.line());
    Ok(())
}

async fn batch_status(out: BatchOutput, batch: BatchId, json: bool) -> Result<(), Failure> {
    let stores = storage::Stores::new(storage::S3Config::default());
    let status = coordinator::batch::queue::status(&stores, &out, batch).await?;
    if json {
        return print_json(&status);
    }
    println!("{}", status.line());
    Ok(())
}

fn combine(manifest: &PathBuf, audio_bitrate: u32, out: &PathBuf) -> Result<(), Failure> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("--manifest {}", manifest.display()))?;
    let m = combine::Manifest::from_json(&text)
        .with_context(|| format!("--manifest {}", manifest.display()))?;
    // The container follows the extension (MP4 for any other name); the
    // combine refuses one that cannot hold the chunks' codec.
    let container = spec::Container::from_file_name(&out.to_string_lossy()).unwrap_or_default();
    let options = m
        .options()
        .with_audio_bitrate(audio_bitrate)
        .with_output(spec::OutputFormat {
            container,
            audio: None,
        });
    let report = combine::combine_chunks(&m.chunks, &options, out).map_err(|e| Failure {
        kind: match e {
            combine::CombineError::InvalidOption { .. } => ErrorKind::Input,
            _ => ErrorKind::Internal,
        },
        error: e.into(),
    })?;
    eprintln!(
        "combined {} chunks: {} frames -> {} ({} bytes)",
        report.chunks,
        report.frames,
        out.display(),
        report.bytes
    );
    Ok(())
}

/// The async runtime the render and batch commands run on.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure {
            error,
            kind: ErrorKind::Internal,
        })
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Render(args) => runtime()?.block_on(render(*args)),
        Command::Batch(args) => runtime()?.block_on(batch(*args)),
        Command::Agent(args) => runtime()?.block_on(agent(*args)),
        Command::BatchStatus { out, batch, json } => {
            runtime()?.block_on(batch_status(out, batch, json))
        }
        Command::Combine {
            manifest,
            audio_bitrate,
            out,
        } => combine(&manifest, audio_bitrate, &out),
        Command::Describe(sel) => {
            let (source, id, props) = select(&sel)?;
            let meta = coordinator::select_composition(source.as_ref(), &id, &props)?;
            print_json(&meta)
        }
        Command::Still {
            select: sel,
            frame,
            out,
            format,
            jpeg_quality,
        } => {
            let format = coordinator::still_format(&out, format, jpeg_quality)?;
            let (source, id, props) = select(&sel)?;
            let meta =
                coordinator::write_still_as(source.as_ref(), &id, &props, frame, format, &out)?;
            eprintln!(
                "wrote {} ({}x{}, frame {frame} of `{}`)",
                out.display(),
                meta.width,
                meta.height,
                meta.id
            );
            Ok(())
        }
        Command::Plan { select: sel, split } => {
            let (source, id, props) = select(&sel)?;
            let (_, plan) = coordinator::plan_render(
                source.as_ref(),
                &id,
                &props,
                split.spec(),
                split.frames.clone(),
            )?;
            print_json(&plan)
        }
    }
}

/// Prints `value` as pretty JSON; a closed pipe (`| head`) is not an error.
fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).context("printing JSON")?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("printing JSON")?),
    }
}

/// Text logs at warn level by default (a person at a terminal), or JSON
/// lines at info level (a log shipper); `RUST_LOG` overrides the level.
fn init_logs(json: bool) {
    let default = if json { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

fn main() -> ExitCode {
    // Before any thread starts: embedded workers' libx264 then reuses the
    // memory the last chunk freed instead of faulting in fresh pages.
    chunk_worker::reuse_freed_memory();
    chunk_worker::quiet_svt_av1();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logs(cli.log_json);
    // x264 and the AAC encoder chatter at FFmpeg's default log level.
    combine::quiet_ffmpeg_logs();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure {
            kind: ErrorKind::Cancelled,
            error,
        }) => {
            // A render writes nothing when cancelled; a batch says what it
            // kept.
            match error.downcast_ref::<Error>() {
                Some(Error::Cancelled) => eprintln!("cancelled: no output written"),
                _ => eprintln!("cancelled: {error:#}"),
            }
            ExitCode::from(ErrorKind::Cancelled.exit_code())
        }
        Err(Failure { error, kind }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(kind.exit_code())
        }
    }
}
