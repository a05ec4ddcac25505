//! The main routine: a worker pool, options and a cache, running any number
//! of renders ([`Coordinator::render`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunk_worker::{AllowedPaths, ServeConfig, WorkerConfig};
use composition::{CompositionMeta, Props};
use spec::{ContentHash, DescribeRequest, SourceIdentity, SourceSpec};
use storage::{S3Config, StorageError, Stores};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cache::RenderCache;
use crate::events::{RenderHandle, RenderSummary};
use crate::grpc::{self, ClientTls, Described, WorkerAccess};
use crate::job::RenderJob;
use crate::pool::RemotePool;
use crate::request::{RenderRequest, RenderSource};
use crate::schedule::{FailureKind, SchedulePolicy, WorkerInfo};
use crate::scratch::EmbeddedDir;
use crate::webhook::{WebhookConfig, Webhooks};
use crate::{Error, ErrorKind};

/// Where chunks run.
#[derive(Debug, Clone)]
pub enum PoolSpec {
    /// `workers` chunk workers in this process, each on its own loopback
    /// port with one slot, serving `config`'s compositions.
    Embedded {
        /// How many (at least 1; [`default_local_workers`] is one per core).
        workers: usize,
        /// What they serve and how many render threads each uses.
        config: WorkerConfig,
    },
    /// Workers elsewhere: a list of addresses or a DNS name.
    Remote(RemotePool),
}

impl PoolSpec {
    /// The default: one in-process worker per core serving the built-in
    /// compositions and scene bundles.
    pub fn local() -> Self {
        PoolSpec::Embedded {
            workers: default_local_workers(),
            config: WorkerConfig::standard(),
        }
    }

    /// Checks the pool.
    ///
    /// # Errors
    /// [`Error::Input`] for zero local workers or an empty address list.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            PoolSpec::Embedded { workers: 0, .. } => Err(Error::Input(
                "--local 0 is invalid: run at least 1 worker".into(),
            )),
            PoolSpec::Remote(RemotePool::Addresses(list)) if list.is_empty() => Err(Error::Input(
                "the worker list is empty: give at least one --worker".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Options of a [`Coordinator`].
#[derive(Debug, Clone, Default)]
pub struct CoordinatorOptions {
    /// Retry and stall policy.
    pub policy: SchedulePolicy,
    /// Bearer token for remote workers (an embedded pool makes its own).
    pub token: Option<String>,
    /// The render cache: a directory, `file://` URL or `s3://bucket/prefix/`
    /// holding bundles, chunks and outputs by content hash (see
    /// [`crate::cache`]). `None`: no cache, chunks go to a temporary
    /// directory.
    pub cache: Option<String>,
    /// A local cache is trimmed to this many bytes after each render
    /// (0: [`crate::cache::DEFAULT_LOCAL_CACHE_BYTES`]).
    pub cache_max_bytes: u64,
    /// S3 settings (endpoint, region, credentials, retries); the default
    /// reads the standard AWS environment.
    pub s3: S3Config,
    /// TLS for `https://` workers: the CA to trust, a client certificate;
    /// `None`: the system's roots and no client certificate. Giving it
    /// makes plain `http://` workers an error, so the token never travels
    /// in the clear by mistake.
    pub tls: Option<ClientTls>,
    /// Where completion events are posted (see [`crate::webhook`]).
    pub webhook: Option<WebhookConfig>,
}

impl CoordinatorOptions {
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Input`] naming the value: an invalid policy, an empty token
    /// or one that cannot be sent as a header, an empty cache location.
    pub fn validate(&self) -> Result<(), Error> {
        self.policy.validate()?;
        if let Some(token) = &self.token
            && (token.is_empty() || grpc::check_token(token).is_err())
        {
            return Err(Error::Input(
                "the worker token is empty or holds characters not allowed in a header".into(),
            ));
        }
        if let Some(w) = &self.webhook {
            w.validate()?;
        }
        if self.cache.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Input(
                "--cache is empty: give a directory, s3://bucket/prefix/ or `off`".into(),
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate().map_err(Error::Input)?;
        }
        Ok(())
    }

    /// Checks the pool against the options: with TLS configured, every
    /// remote worker must be `https://`.
    ///
    /// # Errors
    /// [`Error::Input`] naming the plain worker.
    fn validate_pool(&self, pool: &PoolSpec) -> Result<(), Error> {
        if self.tls.is_none() {
            return Ok(());
        }
        let plain = match pool {
            PoolSpec::Remote(RemotePool::Addresses(list)) => list
                .iter()
                .find(|w| w.address.starts_with("http://"))
                .map(|w| w.address.clone()),
            PoolSpec::Remote(RemotePool::Dns {
                host,
                port,
                tls: false,
                ..
            }) => Some(format!("{host}:{port}")),
            _ => None,
        };
        match plain {
            Some(worker) => Err(Error::Input(format!(
                "worker `{}` is plain HTTP but TLS is configured (--tls-ca or a client certificate): address it as https://",
                spec::quote(&worker)
            ))),
            None => Ok(()),
        }
    }
}

/// Workers an embedded pool starts unless told otherwise: one per core.
pub fn default_local_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

enum Pool {
    Embedded {
        workers: Vec<WorkerInfo>,
        /// The random token only this process knows (see
        /// [`start_embedded`]).
        token: String,
        stop: CancellationToken,
        tasks: tokio::task::JoinSet<()>,
        /// Their caches, locked while this process lives (see
        /// [`crate::scratch`]).
        _dir: EmbeddedDir,
    },
    Remote(RemotePool),
}

/// A composition source as workers are told of it, and what identifies its
/// contents in cache keys.
#[derive(Debug, Clone)]
pub(crate) struct PreparedSource {
    /// What workers are told.
    pub(crate) spec: SourceSpec,
    /// The bundle's archive hash, when there is a cache to key.
    pub(crate) bundle: Option<ContentHash>,
}

impl PreparedSource {
    /// What identifies the source in cache keys, given the composition's
    /// resolved metadata.
    pub(crate) fn identity(&self, meta: &CompositionMeta) -> SourceIdentity {
        match self.bundle {
            Some(hash) => SourceIdentity::Bundle(hash),
            None => SourceIdentity::Registered {
                version: meta.version.clone(),
            },
        }
    }
}

/// The main routine: a worker pool and options. Cheap to keep around; one
/// coordinator runs any number of renders, at once or one after another.
pub struct Coordinator {
    pool: Pool,
    pub(crate) options: CoordinatorOptions,
    cache: tokio::sync::OnceCell<Option<RenderCache>>,
    /// S3 clients, one per bucket, shared by the cache and every output.
    pub(crate) stores: Stores,
    last_trim: std::sync::Mutex<Option<Instant>>,
    webhooks: Option<Webhooks>,
}

/// How long [`Coordinator::shutdown`] waits for webhook deliveries still
/// being retried.
pub const WEBHOOK_SETTLE: Duration = Duration::from_secs(30);

/// A local cache is trimmed at most this often.
const TRIM_INTERVAL: Duration = Duration::from_secs(60);

impl Coordinator {
    /// A coordinator over `pool` (starting embedded workers now).
    ///
    /// # Errors
    /// [`Error::Input`] for an invalid pool or options, [`Error::Io`] or
    /// [`Error::NoWorkers`] if an embedded worker cannot start.
    pub async fn new(pool: PoolSpec, options: CoordinatorOptions) -> Result<Self, Error> {
        pool.validate()?;
        options.validate()?;
        options.validate_pool(&pool)?;
        let pool = match pool {
            PoolSpec::Embedded { workers, config } => {
                start_embedded(workers, config, &options).await?
            }
            PoolSpec::Remote(remote) => Pool::Remote(remote),
        };
        let webhooks = options.webhook.clone().map(Webhooks::new).transpose()?;
        Ok(Coordinator {
            pool,
            cache: tokio::sync::OnceCell::new(),
            stores: Stores::new(options.s3.clone()),
            last_trim: std::sync::Mutex::new(None),
            webhooks,
            options,
        })
    }

    /// Starts `n` workers in this process (see [`PoolSpec::Embedded`]).
    ///
    /// # Errors
    /// As [`Coordinator::new`].
    pub async fn embedded(
        n: usize,
        worker: WorkerConfig,
        options: CoordinatorOptions,
    ) -> Result<Self, Error> {
        Self::new(
            PoolSpec::Embedded {
                workers: n,
                config: worker,
            },
            options,
        )
        .await
    }

    /// Stops local workers (if any) and waits for them, and for cancelled
    /// uploads to be aborted.
    pub async fn shutdown(self) {
        if let Some(w) = &self.webhooks {
            w.settle(WEBHOOK_SETTLE).await;
        }
        self.stores.settle().await;
        if let Pool::Embedded {
            stop, mut tasks, ..
        } = self.pool
        {
            stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Whether the workers run in this process (and share its disk).
    pub(crate) fn embedded_pool(&self) -> bool {
        matches!(self.pool, Pool::Embedded { .. })
    }

    /// How this coordinator reaches its workers: embedded ones with their
    /// per-process token; remote ones with the options' token and TLS (a
    /// DNS pool's certificates checked against its DNS name unless a server
    /// name is given).
    pub(crate) fn access(&self) -> WorkerAccess {
        match &self.pool {
            Pool::Embedded { token, .. } => WorkerAccess {
                token: Some(token.clone()),
                tls: None,
            },
            Pool::Remote(remote) => {
                let mut tls = self.options.tls.clone();
                if let RemotePool::Dns {
                    host, tls: true, ..
                } = remote
                {
                    let tls = tls.get_or_insert_with(ClientTls::default);
                    tls.server_name.get_or_insert_with(|| host.clone());
                }
                WorkerAccess {
                    token: self.options.token.clone(),
                    tls,
                }
            }
        }
    }

    /// The pool's workers, followed until `stop` (a DNS pool re-resolves).
    pub(crate) async fn workers(
        &self,
        stop: CancellationToken,
    ) -> watch::Receiver<Vec<WorkerInfo>> {
        match &self.pool {
            Pool::Embedded { workers, .. } => watch::channel(workers.clone()).1,
            Pool::Remote(pool) => pool.watch(stop).await,
        }
    }

    /// Chunks the pool can render at once now (at least 1): what
    /// [`chunker::ChunkSpec::Auto`] plans for.
    pub(crate) async fn slots(&self) -> u32 {
        let stop = CancellationToken::new();
        let workers = self.workers(stop.clone()).await.borrow().clone();
        stop.cancel();
        workers
            .iter()
            .fold(0u32, |n, w| n.saturating_add(w.slots))
            .max(1)
    }

    /// Resolves a composition's metadata by asking a worker (`Describe`), so
    /// compositions registered only in worker binaries work too.
    ///
    /// # Errors
    /// [`Error::Input`] for an unknown composition, bad props or a missing
    /// bundle; [`Error::NoWorkers`] if no worker answers.
    pub async fn select_composition(
        &self,
        source: &RenderSource,
        id: &str,
        props: &Props,
    ) -> Result<CompositionMeta, Error> {
        let cache = self.cache().await?;
        let prepared = self.prepare_source(source, cache).await?;
        Ok(self.describe(&prepared.spec, id, props).await?.meta)
    }

    /// Asks the pool's workers, in turn, to describe a composition.
    pub(crate) async fn describe(
        &self,
        source: &SourceSpec,
        id: &str,
        props: &Props,
    ) -> Result<Described, Error> {
        self.describe_sampling(source, id, props, Vec::new()).await
    }

    /// Asks the pool's workers, in turn, to describe a composition and
    /// compute a GIF palette from its frames `palette_frames` (rendered on
    /// the worker; none asks for no palette).
    pub(crate) async fn describe_sampling(
        &self,
        source: &SourceSpec,
        id: &str,
        props: &Props,
        palette_frames: Vec<u64>,
    ) -> Result<Described, Error> {
        let stop = CancellationToken::new();
        let workers = self.workers(stop.clone()).await.borrow().clone();
        stop.cancel();
        let request = DescribeRequest {
            source: source.clone(),
            composition_id: id.to_owned(),
            props: props.clone(),
            palette_frames,
        };
        let mut failures = Vec::new();
        let access = self.access();
        for w in &workers {
            match grpc::describe(w, &request, &access).await {
                Ok(described) => return Ok(described),
                Err(e) if e.kind == FailureKind::Invalid => return Err(Error::Input(e.message)),
                Err(e) => failures.push(format!("{}: {}", spec::quote(&w.address), e.message)),
            }
        }
        if failures.is_empty() {
            return Err(Error::NoWorkers(
                "no workers available: the worker pool is empty".into(),
            ));
        }
        Err(Error::NoWorkers(format!(
            "no worker could describe `{}`:\n  {}",
            spec::quote(id),
            failures.join("\n  ")
        )))
    }

    /// The render cache, opened on first use.
    pub(crate) async fn cache(&self) -> Result<Option<&RenderCache>, Error> {
        let cell = self
            .cache
            .get_or_try_init(|| async {
                match &self.options.cache {
                    None => Ok(None),
                    Some(location) => RenderCache::open(location, &self.stores)
                        .await
                        .map(Some)
                        .map_err(|e| match e {
                            StorageError::InvalidLocation { .. }
                            | StorageError::InvalidConfig { .. } => {
                                Error::Input(format!("cache `{}`: {e}", spec::quote(location)))
                            }
                            other => Error::Storage(other),
                        }),
                }
            })
            .await?;
        Ok(cell.as_ref())
    }

    /// What workers are told about the source, and what identifies its
    /// bytes in cache keys. A bundle is hashed as its deterministic archive
    /// when there is a cache, and shipped as that archive when remote
    /// workers share an S3 cache.
    pub(crate) async fn prepare_source(
        &self,
        source: &RenderSource,
        cache: Option<&RenderCache>,
    ) -> Result<PreparedSource, Error> {
        let path = match source {
            RenderSource::Registered => {
                return Ok(PreparedSource {
                    spec: SourceSpec::Registered,
                    bundle: None,
                });
            }
            RenderSource::Bundle(path) => path,
        };
        let abs = std::fs::canonicalize(path)
            .map_err(|e| Error::Input(format!("bundle {}: {e}", path.display())))?;
        if !abs.is_dir() {
            return Err(Error::Input(format!(
                "bundle {} is not a directory",
                path.display()
            )));
        }
        let by_path = SourceSpec::BundlePath(abs.clone());
        let Some(cache) = cache else {
            return Ok(PreparedSource {
                spec: by_path,
                bundle: None,
            });
        };
        let ship = !self.embedded_pool() && cache.local_root().is_none();
        let (hash, archive) = pack_bundle(path, abs, ship).await?;
        let spec = match archive {
            Some((_dir, file)) => {
                let url = cache.ship_bundle(&hash, &file).await?;
                SourceSpec::BundleRef(spec::BundleRef {
                    location: spec::Location::parse(&url)
                        .map_err(|e| Error::Internal(format!("the bundle's URL: {e}")))?,
                    sha256: hash,
                })
            }
            None => by_path,
        };
        Ok(PreparedSource {
            spec,
            bundle: Some(hash),
        })
    }

    /// Starts a render. Events arrive on the handle; `cancel()` (or dropping
    /// the handle) stops it.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use coordinator::{ChunkSpec, Coordinator, CoordinatorOptions, PoolSpec, RenderRequest, RenderSource};
    ///
    /// # async fn demo() -> Result<(), coordinator::Error> {
    /// let coordinator = Arc::new(Coordinator::new(PoolSpec::local(), CoordinatorOptions::default()).await?);
    /// let mut request = RenderRequest::new(
    ///     RenderSource::Bundle("examples/promo".into()),
    ///     "promo",
    ///     ChunkSpec::Count(8),
    ///     std::path::PathBuf::from("promo.mp4"),
    /// );
    /// request.props.insert("name".into(), "Grace".into());
    /// let mut render = coordinator.render(request);
    /// while let Some(event) = render.next_event().await {
    ///     println!("{}", serde_json::to_string(&event).unwrap_or_default());
    /// }
    /// let summary = render.finish().await?;
    /// println!("{} frames in {} ms", summary.frames, summary.wall_ms);
    /// # Ok(()) }
    /// ```
    pub fn render(self: &Arc<Self>, request: RenderRequest) -> RenderHandle {
        let this = Arc::clone(self);
        let render_id = render_id(&request.composition);
        // Every log line of this render, here and (through the chunk
        // requests' job id) on every worker, carries its id.
        let span = tracing::info_span!("render", render_id = %render_id);
        RenderHandle::spawn(move |events, cancel| {
            async move {
                let composition = request.composition.clone();
                let started = Instant::now();
                let result = match RenderJob::new(&this, render_id.clone(), request, events, cancel)
                {
                    Ok(job) => job.run().await,
                    Err(e) => Err(e),
                };
                match &result {
                    Ok(s) => tracing::info!(
                        output = %s.output,
                        frames = s.frames,
                        wall_ms = s.wall_ms,
                        cached_chunks = s.cached_chunks,
                        "render done"
                    ),
                    // Info, not warn: the error is returned to the caller, who
                    // reports it (the CLI prints it once); a warning here would
                    // print it twice. `--log-json` logs at info and keeps it.
                    Err(e) => {
                        tracing::info!(class = e.kind().as_str(), error = %e, "render failed")
                    }
                }
                this.notify_render(&render_id, &composition, started, &result);
                result
            }
            .instrument(span)
        })
    }

    /// Posts the render's outcome to the webhook, if there is one.
    fn notify_render(
        &self,
        render_id: &str,
        composition: &str,
        started: Instant,
        result: &Result<RenderSummary, Error>,
    ) {
        let Some(webhooks) = &self.webhooks else {
            return;
        };
        match result {
            Ok(summary) => webhooks.notify(
                "render.succeeded",
                &RenderSucceeded {
                    event: "render.succeeded",
                    composition,
                    summary,
                },
            ),
            Err(e) => {
                let event = match e.kind() {
                    ErrorKind::Cancelled => "render.cancelled",
                    _ => "render.failed",
                };
                webhooks.notify(
                    event,
                    &RenderFailed {
                        event,
                        render_id,
                        composition,
                        wall_ms: started.elapsed().as_millis() as u64,
                        error: ErrorReport {
                            kind: e.kind(),
                            message: e.to_string(),
                        },
                    },
                );
            }
        }
    }

    /// Posts a batch's summary (`batch.finished`: rows by outcome, failures
    /// by reason) to the webhook, if there is one.
    pub(crate) fn notify_batch(&self, summary: &crate::batch::BatchSummary) {
        #[derive(serde::Serialize)]
        struct BatchFinished<'a> {
            event: &'static str,
            #[serde(flatten)]
            summary: &'a crate::batch::BatchSummary,
            digest: String,
        }
        if let Some(webhooks) = &self.webhooks {
            webhooks.notify(
                "batch.finished",
                &BatchFinished {
                    event: "batch.finished",
                    summary,
                    digest: summary.digest(),
                },
            );
        }
    }

    /// Whether the local cache is due a trim: at most once a minute, so a
    /// batch of many short renders does not walk the cache after each.
    pub(crate) fn trim_due(&self) -> bool {
        let Ok(mut last) = self.last_trim.lock() else {
            return false;
        };
        let due = last.is_none_or(|t| t.elapsed() >= TRIM_INTERVAL);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

/// A render's id: its composition, the time and this process, unique
/// enough to find one render's story in the logs of every machine.
pub(crate) fn render_id(composition: &str) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let short: String = composition
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(40)
        .collect();
    format!(
        "{short}-{stamp}-{}-{:04x}",
        std::process::id(),
        fastrand::u16(..)
    )
}

/// The `render.succeeded` webhook event.
#[derive(serde::Serialize)]
struct RenderSucceeded<'a> {
    event: &'static str,
    composition: &'a str,
    #[serde(flatten)]
    summary: &'a RenderSummary,
}

/// The `render.failed` and `render.cancelled` webhook events.
#[derive(serde::Serialize)]
struct RenderFailed<'a> {
    event: &'static str,
    render_id: &'a str,
    composition: &'a str,
    wall_ms: u64,
    error: ErrorReport,
}

/// An error as events and results report it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ErrorReport {
    /// Whose fault.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
}

/// Hashes a bundle as its deterministic archive, keeping the archive on disk
/// (in a temporary directory, returned with it) when it is to be shipped.
pub(crate) async fn pack_bundle(
    path: &Path,
    abs: PathBuf,
    ship: bool,
) -> Result<(ContentHash, Option<(tempfile::TempDir, PathBuf)>), Error> {
    tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
        if ship {
            let dir = tempfile::tempdir().map_err(|source| StorageError::Io {
                op: "create directory",
                path: std::env::temp_dir(),
                source,
            })?;
            let archive = storage::archive::pack_to_file(&abs, dir.path())?;
            Ok((archive.sha256, Some((dir, archive.path))))
        } else {
            Ok((storage::archive::pack(&abs, std::io::sink())?, None))
        }
    })
    .await
    .map_err(Error::task("packing the bundle"))?
    .map_err(|e| match e {
        StorageError::Pack { .. } => Error::Input(format!("bundle {}: {e}", path.display())),
        other => Error::Storage(other),
    })
}

/// Bytes of randomness in an embedded pool's token.
const EMBEDDED_TOKEN_BYTES: usize = 32;

/// Starts `n` workers in this process on loopback.
///
/// They trust this coordinator by construction rather than by a list of
/// directories: they write chunks into the render cache and into work
/// directories beside each output file, and read the bundle of whatever
/// this process is asked to render, so no fixed list could name them all.
/// They accept any local path ([`AllowedPaths::Any`]), and in exchange
/// nothing but this process can call them: they listen on 127.0.0.1 only
/// and require a token of [`EMBEDDED_TOKEN_BYTES`] random bytes made here
/// and never written anywhere. Another user of the machine reaching the
/// port cannot guess it, so what these workers do is what this process's
/// user asked for, with that user's own file access.
async fn start_embedded(
    n: usize,
    config: WorkerConfig,
    options: &CoordinatorOptions,
) -> Result<Pool, Error> {
    // Sweeping may remove what killed coordinators left: off the runtime.
    let dir = tokio::task::spawn_blocking(|| EmbeddedDir::create(&std::env::temp_dir()))
        .await
        .map_err(Error::task("creating the local workers' cache directory"))?
        .map_err(Error::io("creating the local workers' cache directory"))?;
    let mut secret = [0u8; EMBEDDED_TOKEN_BYTES];
    getrandom::fill(&mut secret)
        .map_err(|e| Error::Internal(format!("no randomness for the local workers' token: {e}")))?;
    let token = hex::encode(secret);
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut workers = Vec::new();
    for i in 0..n {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut serve = ServeConfig::new(listen, dir.path().join(format!("worker-{i}")));
        serve.slots = 1;
        serve.token = Some(token.clone());
        serve.allowed_paths = AllowedPaths::Any;
        // Local workers reach the same buckets as the coordinator.
        serve.s3 = options.s3.clone();
        let bound = chunk_worker::bind(serve, config.clone())
            .await
            .map_err(|e| Error::NoWorkers(format!("starting local worker {i}: {e}")))?;
        workers.push(WorkerInfo {
            address: format!("http://{}", bound.local_addr()),
            slots: 1,
        });
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = bound.run(stop.cancelled_owned()).await {
                tracing::error!(error = %e, "local worker stopped with an error");
            }
        });
    }
    Ok(Pool::Embedded {
        workers,
        token,
        stop,
        tasks,
        _dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{DEFAULT_DNS_REFRESH, parse_dns, parse_worker};

    #[test]
    fn tls_options_and_plain_workers_do_not_mix() {
        let tls = CoordinatorOptions {
            tls: Some(ClientTls {
                server_name: Some("workers.svc".into()),
                ..ClientTls::default()
            }),
            ..CoordinatorOptions::default()
        };
        let pool = |w: &str| {
            PoolSpec::Remote(RemotePool::Addresses(vec![
                parse_worker(w).expect("worker"),
            ]))
        };
        assert!(tls.validate_pool(&pool("https://h:1")).is_ok());
        assert_eq!(
            tls.validate_pool(&pool("h:1"))
                .expect_err("plain")
                .to_string(),
            "worker `http://h:1` is plain HTTP but TLS is configured (--tls-ca or a client certificate): address it as https://"
        );
        let dns = |t: &str| PoolSpec::Remote(parse_dns(t, 1, DEFAULT_DNS_REFRESH).expect("dns"));
        assert!(tls.validate_pool(&dns("https://workers.svc:50051")).is_ok());
        assert!(tls.validate_pool(&dns("workers.svc:50051")).is_err());
        // Without TLS options, any mix is the operator's choice.
        assert!(
            CoordinatorOptions::default()
                .validate_pool(&pool("h:1"))
                .is_ok()
        );

        let half = CoordinatorOptions {
            tls: Some(ClientTls {
                client_cert_pem: Some(b"x".to_vec()),
                ..ClientTls::default()
            }),
            ..CoordinatorOptions::default()
        };
        assert_eq!(
            half.validate().expect_err("no key").to_string(),
            "--tls-client-cert and --tls-client-key go together: give both"
        );
    }
}
