//! `chunk-worker serve --listen ADDR --slots N [--cache-dir DIR]
//! [--bundle-cache-size 4G] [--token-file F] [--allow-path DIR]…
//! [--tls-cert F --tls-key F [--tls-client-ca F]] [--max-memory SIZE]
//! [--insecure-no-auth] [--log-json]`: a Montage chunk worker serving the
//! built-in compositions and scene bundles (paths on its disk under an
//! `--allow-path` directory, or archives in storage it fetches and caches).
//! Prints `listening on ADDR` (the bound address, so `--listen 127.0.0.1:0`
//! works) on stdout once ready. S3 is reached through the standard AWS
//! environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chunk_worker::{
    AllowedPaths, DEFAULT_RENDER_THREADS, S3Config, ServeConfig, ServerTls, WorkerConfig,
};
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
    /// (`inflight/`) and fetched bundles (`bundles/`). Default:
    /// $XDG_CACHE_HOME/montage/worker, else ~/.cache/montage/worker.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Most bytes of unpacked bundles kept in `<cache-dir>/bundles`, e.g.
    /// `4G`, `512M`, `1.5GiB` or plain bytes (K, M, G, T are powers of
    /// 1024); the least recently used are evicted first.
    #[arg(long, value_name = "SIZE", value_parser = storage::parse_byte_size, default_value = "4G")]
    bundle_cache_size: u64,
    /// File holding the shared bearer token (surrounding whitespace ignored).
    /// Required on a non-loopback --listen address unless --tls-client-ca or
    /// --insecure-no-auth is given.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// A directory clients may name local paths under (bundle directories,
    /// bundle archives, artifact directories); repeatable. Without it, no
    /// local path is accepted: sources are registered compositions or s3://
    /// bundles, artifacts go inline or to s3://.
    #[arg(long, value_name = "DIR")]
    allow_path: Vec<PathBuf>,
    /// Serve on a non-loopback address without any authentication.
    #[arg(long)]
    insecure_no_auth: bool,
    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate signed by one
    /// (mutual TLS). Needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// The memory chunks in flight may need together, e.g. `6G`; a chunk
    /// needing more is refused (INVALID_ARGUMENT naming the numbers).
    /// Default: 75% of the machine's (or its cgroup's) memory.
    #[arg(long, value_name = "SIZE", value_parser = storage::parse_byte_size)]
    max_memory: Option<u64>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Threads rendering frames of each chunk (does not change the output).
    #[arg(long, default_value_t = DEFAULT_RENDER_THREADS)]
    render_threads: usize,
    /// Seconds in-flight chunks may run on after SIGTERM.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 0.0.0.0:9464).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
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
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert_pem: read("--tls-cert", cert)?,
            key_pem: read("--tls-key", key)?,
            client_ca_pem: match &args.tls_client_ca {
                Some(ca) => Some(read("--tls-client-ca", ca)?),
                None => None,
            },
        }),
        // clap requires both or neither.
        _ => None,
    };
    Ok(ServeConfig {
        listen: args.listen,
        slots: args.slots,
        cache_dir: cache_dir(args.cache_dir.clone(), storage::montage_cache_dir())?,
        token,
        grace: Duration::from_secs(args.grace_secs),
        bundle_cache_bytes: args.bundle_cache_size,
        // Endpoint, region and credentials from the AWS environment.
        s3: S3Config::default(),
        allowed_paths: AllowedPaths::Under(args.allow_path.clone()),
        insecure_no_auth: args.insecure_no_auth,
        tls,
        max_memory: args
            .max_memory
            .unwrap_or_else(chunk_worker::default_max_memory),
        metrics_listen: args.metrics_listen,
    })
}

/// `--cache-dir`, else `worker/` in Montage's cache directory (`default`,
/// from [`storage::montage_cache_dir`]), beside the coordinator's render
/// cache.
fn cache_dir(given: Option<PathBuf>, default: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    given.or_else(|| default.map(|d| d.join("worker"))).context(
        "--cache-dir is required: neither $XDG_CACHE_HOME nor $HOME is set to give a default",
    )
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
    chunk_worker::quiet_svt_av1();
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
    fn the_cache_dir_defaults_to_montages_cache_directory() {
        let cli = Cli::try_parse_from(["chunk-worker", "serve"]).expect("no --cache-dir");
        let Command::Serve(args) = cli.command;
        assert_eq!(args.cache_dir, None);
        let default = storage::montage_cache_dir_from(None, Some("/home/a".into()));
        assert_eq!(
            cache_dir(args.cache_dir, default.clone()).expect("default"),
            PathBuf::from("/home/a/.cache/montage/worker")
        );
        let err = cache_dir(None, None).expect_err("no default");
        assert_eq!(
            err.to_string(),
            "--cache-dir is required: neither $XDG_CACHE_HOME nor $HOME is set to give a default"
        );
        let cli = Cli::try_parse_from(["chunk-worker", "serve", "--cache-dir", "/tmp/x"])
            .expect("--cache-dir");
        let Command::Serve(args) = cli.command;
        assert_eq!(
            cache_dir(args.cache_dir, default).expect("given"),
            PathBuf::from("/tmp/x")
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
