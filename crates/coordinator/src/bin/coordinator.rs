//! The `coordinator` command line. Thin: parse flags, build the library's
//! request, make one library call, print.

use std::ops::RangeInclusive;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use composition::{Props, Registry};
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
}

#[derive(Args, Debug)]
struct Select {
    /// The composition id. Built in: `test-pattern`.
    #[arg(long, default_value = composition::builtin::TEST_PATTERN_ID)]
    composition: String,
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

fn run(cli: Cli) -> anyhow::Result<()> {
    let registry = Registry::with_builtins();
    match cli.command {
        Command::Describe(select) => {
            let props = parse_props(&select.props)?;
            let meta = coordinator::select_composition(&registry, &select.composition, &props)?;
            print_json(&meta)?;
        }
        Command::Plan {
            select,
            chunks,
            frames_per_chunk,
            frames,
        } => {
            let props = parse_props(&select.props)?;
            let spec = match (chunks, frames_per_chunk) {
                (Some(n), _) => ChunkSpec::Count(n),
                (None, Some(k)) => ChunkSpec::FramesPerChunk(k),
                (None, None) => bail!("give --chunks N or --frames-per-chunk K"),
            };
            let frames = frames.as_deref().map(parse_range).transpose()?;
            let (_, plan) =
                coordinator::plan_render(&registry, &select.composition, &props, spec, frames)?;
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
            // Everything that can fail today is bad input.
            ExitCode::from(2)
        }
    }
}
