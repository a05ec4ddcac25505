//! The `coordinator` command line. Thin: parse flags, build the library's
//! request, make one library call, print.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use composition::Props;
use coordinator::ChunkSpec;

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
    /// Props as a JSON object.
    #[arg(long, default_value = "{}")]
    props: String,
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
    let props = parse_props(&select.props)?;
    let source = coordinator::open_source(select.bundle.as_deref())?;
    let id = match (&select.composition, &select.bundle) {
        (Some(id), _) => id.clone(),
        (None, Some(_)) => coordinator::choose_composition(source.as_ref(), None)?,
        (None, None) => composition::builtin::TEST_PATTERN_ID.to_owned(),
    };
    Ok((source, id, props))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
        Command::Plan {
            select: sel,
            chunks,
            frames_per_chunk,
            frames,
        } => {
            let (source, id, props) = select(&sel)?;
            let spec = match (chunks, frames_per_chunk) {
                (Some(n), _) => ChunkSpec::Count(n),
                (None, Some(k)) => ChunkSpec::FramesPerChunk(k),
                (None, None) => bail!("give --chunks N or --frames-per-chunk K"),
            };
            let frames = frames.as_deref().map(parse_range).transpose()?;
            let (_, plan) = coordinator::plan_render(source.as_ref(), &id, &props, spec, frames)?;
            print_json(&plan)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Everything that can fail today is bad input or an unwritable
            // output path.
            ExitCode::from(2)
        }
    }
}
