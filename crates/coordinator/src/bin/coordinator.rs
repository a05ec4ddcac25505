//! The `coordinator` command line. Thin: parse flags, build the library's
//! request, make one library call, print.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use composition::Props;
use coordinator::ChunkSpec;
use coordinator::pool::{DEFAULT_DNS_REFRESH, RemotePool, parse_dns, parse_worker};
use coordinator::progress::{Reporter, summary_line};
use coordinator::render::{
    Coordinator, CoordinatorOptions, Destination, RenderError, RenderRequest, RenderSource,
    default_local_workers,
};
use coordinator::schedule::SchedulePolicy;

/// Montage: chunked, distributed video rendering.
#[derive(Parser, Debug)]
#[command(name = "coordinator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
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
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    prop: Vec<String>,
}

/// How to split a render into chunks.
#[derive(Args, Debug)]
struct Split {
    /// Split into at most this many chunks of equal length.
    #[arg(
        long,
        conflicts_with = "frames_per_chunk",
        required_unless_present = "frames_per_chunk"
    )]
    chunks: Option<u32>,
    /// Split into chunks of exactly this many frames (the last may be shorter).
    #[arg(long)]
    frames_per_chunk: Option<u64>,
    /// Render only frames A-B (inclusive).
    #[arg(long, value_name = "A-B")]
    frames: Option<String>,
}

impl Split {
    /// The chunk spec and frame range typed.
    fn parse(&self) -> anyhow::Result<(ChunkSpec, Option<RangeInclusive<u64>>)> {
        let spec = match (self.chunks, self.frames_per_chunk) {
            (Some(n), _) => ChunkSpec::Count(n),
            (None, Some(k)) => ChunkSpec::FramesPerChunk(k),
            (None, None) => bail!("give --chunks N or --frames-per-chunk K"),
        };
        let frames = self.frames.as_deref().map(parse_range).transpose()?;
        Ok((spec, frames))
    }
}

#[derive(Args, Debug)]
struct RenderArgs {
    #[command(flatten)]
    select: Select,
    #[command(flatten)]
    split: Split,
    /// Keep only every Nth frame.
    #[arg(long, default_value_t = 1)]
    every_nth_frame: u32,
    /// x264 constant rate factor (0-51).
    #[arg(long, default_value_t = 18)]
    crf: u8,
    /// x264 preset.
    #[arg(long, default_value = "veryfast")]
    preset: String,
    /// Encode video losslessly (QP 0, 4:4:4).
    #[arg(long, conflicts_with = "crf")]
    lossless: bool,
    /// AAC bitrate in bits per second.
    #[arg(long, default_value_t = combine::DEFAULT_AUDIO_BITRATE)]
    audio_bitrate: u32,
    /// Add a silent audio track when the composition has none.
    #[arg(long)]
    enforce_audio_track: bool,
    /// Where the MP4 goes: a file, `s3://bucket/path.mp4`, or a prefix
    /// `s3://bucket/renders/` (named by content hash: `renders/ab/cd/<sha256>.mp4`).
    #[arg(long, value_name = "PATH|URL")]
    out: String,
    /// Also print a presigned GET URL of an s3:// output, valid this many
    /// seconds (at most 604800).
    #[arg(long, value_name = "SECS")]
    presign: Option<u64>,
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
    #[arg(long, value_name = "SIZE", default_value = "20G")]
    cache_size: String,
    /// Run N workers in this process on loopback (the default, N = cores).
    #[arg(long, conflicts_with_all = ["worker", "workers_dns"])]
    local: Option<usize>,
    /// A remote worker, `http://HOST:PORT[#SLOTS]`; repeatable.
    #[arg(long, conflicts_with = "workers_dns")]
    worker: Vec<String>,
    /// Every address a DNS name resolves to, `NAME:PORT`, re-resolved while
    /// rendering.
    #[arg(long, value_name = "NAME:PORT")]
    workers_dns: Option<String>,
    /// Slots per worker found through --workers-dns.
    #[arg(long, default_value_t = 1)]
    dns_slots: u32,
    /// Attempts per chunk before the render fails.
    #[arg(long, default_value_t = coordinator::schedule::DEFAULT_MAX_ATTEMPTS)]
    retries: u32,
    /// Seconds without progress after which a worker's chunk is retried
    /// elsewhere.
    #[arg(long, default_value_t = 60.0)]
    stall_timeout: f64,
    /// A file holding the workers' bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Keep chunk artifacts (and a manifest.json for `combine`) in DIR.
    #[arg(long, value_name = "DIR")]
    keep_chunks: Option<PathBuf>,
    /// One JSON object per event per line on stdout, instead of a progress
    /// bar.
    #[arg(long)]
    json: bool,
}

fn parse_props(text: &str) -> anyhow::Result<Props> {
    match serde_json::from_str::<serde_json::Value>(text).context("--props is not valid JSON")? {
        serde_json::Value::Object(map) => Ok(map),
        other => bail!("--props must be a JSON object, got {other}"),
    }
}

fn parse_range(text: &str) -> anyhow::Result<RangeInclusive<u64>> {
    let (a, b) = text
        .split_once('-')
        .with_context(|| format!("--frames `{text}` is not a range: write it as A-B, e.g. 0-89"))?;
    let first = a
        .trim()
        .parse()
        .with_context(|| format!("--frames `{text}`: `{a}` is not a frame number"))?;
    let last = b
        .trim()
        .parse()
        .with_context(|| format!("--frames `{text}`: `{b}` is not a frame number"))?;
    Ok(first..=last)
}

/// Prints `value` as pretty JSON; a closed pipe (`| head`) is not an error.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value)?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// What every subcommand selects: a source, a composition id and props.
fn select(
    select: &Select,
) -> anyhow::Result<(
    std::sync::Arc<dyn composition::CompositionSource>,
    String,
    Props,
)> {
    let props = render_props(select.props.as_deref(), &select.prop)?;
    let source = coordinator::open_source(select.bundle.as_deref())?;
    let id = match (&select.composition, &select.bundle) {
        (Some(id), _) => id.clone(),
        (None, Some(_)) => coordinator::choose_composition(source.as_ref(), None)?,
        (None, None) => composition::builtin::TEST_PATTERN_ID.to_owned(),
    };
    Ok((source, id, props))
}

/// Props from `--props FILE|JSON` and `--prop key=value`.
fn render_props(props: Option<&str>, each: &[String]) -> anyhow::Result<Props> {
    let mut map = match props {
        None => Props::new(),
        Some(text) if text.trim_start().starts_with(['{', '[']) => parse_props(text)?,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--props: reading {path}"))?;
            parse_props(&text).with_context(|| format!("--props file {path}"))?
        }
    };
    for kv in each {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--prop `{kv}` is not key=value"))?;
        if k.is_empty() {
            bail!("--prop `{kv}` has an empty key");
        }
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
        map.insert(k.to_owned(), value);
    }
    Ok(map)
}

/// Turns what the user typed into the library's render request and options.
fn render_request(args: &RenderArgs) -> anyhow::Result<(RenderRequest, CoordinatorOptions)> {
    let props = render_props(args.select.props.as_deref(), &args.select.prop)?;
    let (source, id) = match &args.select.bundle {
        Some(dir) => {
            let bundle = coordinator::open_source(Some(dir))?;
            let id = coordinator::choose_composition(
                bundle.as_ref(),
                args.select.composition.as_deref(),
            )?;
            (RenderSource::Bundle(dir.clone()), id)
        }
        None => (
            RenderSource::Registered,
            args.select
                .composition
                .clone()
                .unwrap_or_else(|| composition::builtin::TEST_PATTERN_ID.to_owned()),
        ),
    };
    let (spec, frames) = args.split.parse()?;
    let output = Destination::parse(&args.out)?;
    let mut request = RenderRequest::new(source, id, spec, output);
    request.props = props;
    request.frames = frames;
    request.every_nth_frame = args.every_nth_frame;
    request.video = if args.lossless {
        chunk_worker::VideoSettings::lossless()
    } else {
        chunk_worker::VideoSettings {
            quality: chunk_worker::Quality::Crf(args.crf),
            ..Default::default()
        }
    };
    request.video.preset = args.preset.clone();
    request
        .video
        .validate()
        .map_err(|e| anyhow::anyhow!("video settings: {e}"))?;
    request.audio_bitrate = args.audio_bitrate;
    request.enforce_audio_track = args.enforce_audio_track;
    request.keep_chunks = args.keep_chunks.clone();
    request.use_cache = !args.no_cache;
    request.presign = match args.presign {
        Some(0) => bail!("--presign 0 is invalid: give a number of seconds above 0"),
        Some(s) => Some(Duration::from_secs(s)),
        None => None,
    };
    let cache = args
        .cache
        .clone()
        .or_else(coordinator::cache::default_cache_location)
        .filter(|c| c != "off");
    let cache_max_bytes = storage::parse_byte_size(&args.cache_size)
        .map_err(|e| anyhow::anyhow!("--cache-size {e}"))?;
    if !(args.stall_timeout.is_finite() && args.stall_timeout > 0.0) {
        bail!(
            "--stall-timeout {} is invalid: give a number of seconds above 0",
            args.stall_timeout
        );
    }
    if args.retries == 0 {
        bail!("--retries 0 is invalid: a chunk needs at least 1 attempt");
    }
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
        policy: SchedulePolicy {
            max_attempts: args.retries,
            stall_timeout: Duration::from_secs_f64(args.stall_timeout),
            ..SchedulePolicy::default()
        },
        token,
        cache,
        cache_max_bytes,
        s3: storage::S3Config::default(),
    };
    Ok((request, options))
}

/// Exit codes: 0 done, 1 render failed, 2 bad input, 130 cancelled.
enum Outcome {
    Failed(anyhow::Error),
    BadInput(anyhow::Error),
    Cancelled,
}

impl From<anyhow::Error> for Outcome {
    fn from(e: anyhow::Error) -> Self {
        Outcome::BadInput(e)
    }
}

async fn render(args: RenderArgs) -> Result<(), Outcome> {
    let (request, options) = render_request(&args)?;
    let coordinator = if !args.worker.is_empty() {
        let workers = args
            .worker
            .iter()
            .map(|w| parse_worker(w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Outcome::BadInput(e.into()))?;
        Coordinator::remote(RemotePool::Addresses(workers), options)
    } else if let Some(dns) = &args.workers_dns {
        let pool = parse_dns(dns, args.dns_slots, DEFAULT_DNS_REFRESH)
            .map_err(|e| Outcome::BadInput(e.into()))?;
        Coordinator::remote(pool, options)
    } else {
        let n = args.local.unwrap_or_else(default_local_workers);
        if n == 0 {
            return Err(Outcome::BadInput(anyhow::anyhow!(
                "--local 0 is invalid: run at least 1 worker"
            )));
        }
        Coordinator::embedded(n, chunk_worker::WorkerConfig::standard(), options)
            .await
            .map_err(|e| Outcome::Failed(e.into()))?
    };
    let coordinator = Arc::new(coordinator);
    let mut handle = coordinator.render(request);
    let cancel = handle.cancel_token();
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let interrupted = Arc::clone(&interrupted);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
                cancel.cancel();
            }
        });
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut reporter = Reporter::new(args.json, tty);
    while let Some(event) = handle.next_event().await {
        reporter.event(&event);
    }
    reporter.finish();
    let result = handle.finish().await;
    if let Ok(c) = Arc::try_unwrap(coordinator) {
        c.shutdown().await;
    }
    match result {
        Ok(summary) => {
            eprintln!("{}", summary_line(&summary));
            Ok(())
        }
        Err(RenderError::Cancelled) => Err(Outcome::Cancelled),
        Err(e) if e.is_bad_input() => Err(Outcome::BadInput(e.into())),
        Err(e) => Err(Outcome::Failed(e.into())),
    }
}

fn run(cli: Cli) -> Result<(), Outcome> {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .map_err(Outcome::Failed)
    };
    match cli.command {
        Command::Render(args) => runtime()?.block_on(render(*args)),
        Command::Combine {
            manifest,
            audio_bitrate,
            out,
        } => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("--manifest {}", manifest.display()))?;
            let m: combine::Manifest = serde_json::from_str(&text)
                .with_context(|| format!("--manifest {}", manifest.display()))?;
            let options = m.options().with_audio_bitrate(audio_bitrate);
            let report = combine::combine_chunks(&m.chunks, &options, &out)
                .map_err(|e| Outcome::Failed(e.into()))?;
            eprintln!(
                "combined {} chunks: {} frames -> {} ({} bytes)",
                report.chunks,
                report.frames,
                out.display(),
                report.bytes
            );
            Ok(())
        }
        other => run_sync(other).map_err(Outcome::BadInput),
    }
}

fn run_sync(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Render(_) | Command::Combine { .. } => unreachable!("handled by run"),
        Command::Describe(sel) => {
            let (source, id, props) = select(&sel)?;
            let meta = coordinator::select_composition(source.as_ref(), &id, &props)?;
            print_json(&meta)?;
        }
        Command::Still {
            select: sel,
            frame,
            out,
        } => {
            let (source, id, props) = select(&sel)?;
            let meta = coordinator::write_still(source.as_ref(), &id, &props, frame, &out)?;
            eprintln!(
                "wrote {} ({}x{}, frame {frame} of `{}`)",
                out.display(),
                meta.width,
                meta.height,
                meta.id
            );
        }
        Command::Plan { select: sel, split } => {
            let (source, id, props) = select(&sel)?;
            let (spec, frames) = split.parse()?;
            let (_, plan) = coordinator::plan_render(source.as_ref(), &id, &props, spec, frames)?;
            print_json(&plan)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // x264 and the AAC encoder chatter at FFmpeg's default log level.
    combine::quiet_ffmpeg_logs();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Outcome::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Outcome::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(Outcome::Cancelled) => {
            eprintln!("cancelled: no output written");
            ExitCode::from(130)
        }
    }
}
