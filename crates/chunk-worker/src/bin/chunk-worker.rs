//! `chunk-worker serve --listen ADDR --slots N --cache-dir DIR
//! [--bundle-cache-size 4G] [--token-file F] [--log-json]`: a Montage chunk
//! worker serving the built-in compositions and scene bundles (paths on its
//! disk, or archives in storage it fetches and caches). Prints `listening
//! on ADDR` (the bound address, so `--listen 127.0.0.1:0` works) on stdout
//! once ready. S3 is reached through the standard AWS environment
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chunk_worker::{DEFAULT_RENDER_THREADS, S3Config, ServeConfig, WorkerConfig};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "chunk-worker", version, about = "Montage chunk worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the ChunkWorker gRPC service until SIGTERM or SIGINT.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Chunks rendered at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 1)]
    slots: usize,
    /// The worker's disk: scratch space for artifacts being delivered
    /// (`inflight/`) and fetched bundles (`bundles/`).
    #[arg(long)]
    cache_dir: PathBuf,
    /// Most bytes of unpacked bundles kept in `<cache-dir>/bundles`, e.g.
    /// `4G`, `512M`, `1.5GiB` or plain bytes (K, M, G, T are powers of
    /// 1024); the least recently used are evicted first.
    #[arg(long, value_name = "SIZE", value_parser = storage::parse_byte_size, default_value = "4G")]
    bundle_cache_size: u64,
    /// File holding the shared bearer token (surrounding whitespace ignored).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Threads rendering frames of each chunk (does not change the output).
    #[arg(long, default_value_t = DEFAULT_RENDER_THREADS)]
    render_threads: usize,
    /// Seconds in-flight chunks may run on after SIGTERM.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
}

fn serve_config(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    let token = match &args.token_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?;
            let token = text.trim().to_owned();
            anyhow::ensure!(
                !token.is_empty(),
                "--token-file {}: the file is empty",
                path.display()
            );
            Some(token)
        }
    };
    Ok(ServeConfig {
        listen: args.listen,
        slots: args.slots,
        cache_dir: args.cache_dir.clone(),
        token,
        grace: Duration::from_secs(args.grace_secs),
        bundle_cache_bytes: args.bundle_cache_size,
        // Endpoint, region and credentials from the AWS environment.
        s3: S3Config::default(),
    })
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    // Before any thread starts: every chunk's libx264 then reuses the memory
    // the last one freed instead of faulting in and zeroing fresh pages.
    chunk_worker::reuse_freed_memory();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    init_logs(args.log_json);
    let config = serve_config(&args)?;
    let worker = WorkerConfig::standard().with_render_threads(args.render_threads);
    let bound = chunk_worker::bind(config, worker).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", bound.local_addr())?;
        out.flush()?;
    }
    bound.run(chunk_worker::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cache_size_is_the_library_default() {
        let cli = Cli::try_parse_from(["chunk-worker", "serve", "--cache-dir", "/tmp/x"])
            .expect("defaults");
        let Command::Serve(args) = cli.command;
        assert_eq!(
            args.bundle_cache_size,
            chunk_worker::DEFAULT_BUNDLE_CACHE_BYTES
        );
    }

    #[test]
    fn a_bad_size_names_the_flag() {
        let err = Cli::try_parse_from([
            "chunk-worker",
            "serve",
            "--cache-dir",
            "/tmp/x",
            "--bundle-cache-size",
            "lots",
        ])
        .expect_err("bad size");
        let text = err.to_string();
        assert!(text.contains("--bundle-cache-size"), "{text}");
        assert!(text.contains("lots"), "{text}");
    }
}
