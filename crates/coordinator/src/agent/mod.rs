//! Render nodes that pull their work from a queue: [`Agent::run`]
//! long-polls a queue with SQS semantics ([`storage::queue`]) for the jobs
//! a `batch --queue` sent ([`crate::batch::queue`]), renders each with this
//! coordinator's pool, uploads the output, records the result and then
//! deletes the message. Nothing is lost when an agent dies: a message is
//! only hidden while its lease runs, so a killed agent's job comes back
//! after the visibility timeout; an agent that renders extends the lease of
//! every job it holds well before it runs out (a heartbeat every third of
//! the timeout); on shutdown it stops receiving and gives back (visibility
//! 0) what it cannot finish within its grace period. Delivery is at least
//! once: a job whose recorded output is present with its sha256 is
//! acknowledged without rendering. A job that fails is recorded with its
//! error class and comes back after a short delay, until the queue's
//! redrive policy moves it to the dead-letter queue (its last failure is
//! recorded as `last`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use coordinator::agent::{Agent, AgentOptions};
//! use coordinator::{Coordinator, CoordinatorOptions, PoolSpec};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), coordinator::Error> {
//! let coordinator = Arc::new(Coordinator::new(PoolSpec::local(), CoordinatorOptions::default()).await?);
//! let options = AgentOptions::new("https://sqs.eu-west-1.amazonaws.com/123456789012/campaign");
//! let agent = Agent::connect(coordinator, options).await?;
//! let report = agent.run(CancellationToken::new()).await?;
//! println!("{} jobs rendered", report.rendered);
//! # Ok(()) }
//! ```

mod job;
pub mod metrics;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use spec::ContentHash;
use storage::queue::{MAX_VISIBILITY, MAX_WAIT, Queue};
use storage::{Backoff, BundleCache};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::VariantContext;
use crate::coordinator::Coordinator;
use crate::webhook::{WebhookConfig, Webhooks};
use crate::{Error, batch};

pub use metrics::AgentMetrics;

/// The lease a received job gets unless told otherwise (SQS's default is
/// 30 s; renders are longer, and heartbeats extend it anyway).
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(300);

/// The shortest lease: a heartbeat must fit well inside it.
pub const MIN_VISIBILITY: Duration = Duration::from_secs(2);

/// A lease is extended when this fraction of it has passed (a third: two
/// heartbeats may fail before it runs out).
pub const HEARTBEATS_PER_LEASE: u32 = 3;

/// Receives a job is tried when the queue has no redrive policy; after
/// the last the message is deleted with its failure recorded.
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// A failed job comes back after this delay times its receive count (a
/// short, growing wait rather than a tight loop).
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long [`Agent::run`] waits for in-flight jobs on shutdown unless told
/// otherwise: none (they go back to the queue at once).
pub const DEFAULT_GRACE: Duration = Duration::ZERO;

/// Bundles kept unpacked on an agent's disk.
pub const BUNDLE_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Bundles kept opened (their contexts) at once.
const OPEN_BUNDLES: usize = 8;

/// What an agent does. Build with [`AgentOptions::new`], adjust the public
/// fields, and [`AgentOptions::validate`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The queue's URL.
    pub queue: String,
    /// The lease of a received job (extended while it renders).
    pub visibility_timeout: Duration,
    /// How long one receive waits for a message (long polling; at most
    /// 20 s).
    pub wait: Duration,
    /// Stop after this many jobs (received and settled); `None`: until
    /// shut down.
    pub max_jobs: Option<u64>,
    /// On shutdown, how long in-flight jobs may run on before they are
    /// given back to the queue.
    pub grace: Duration,
    /// Where bundles are unpacked (default: a temporary directory).
    pub bundle_cache: Option<PathBuf>,
    /// Where each job's outcome is posted.
    pub webhook: Option<WebhookConfig>,
}

impl AgentOptions {
    /// An agent of `queue` with the defaults.
    pub fn new(queue: impl Into<String>) -> Self {
        AgentOptions {
            queue: queue.into(),
            visibility_timeout: DEFAULT_VISIBILITY,
            wait: MAX_WAIT,
            max_jobs: None,
            grace: DEFAULT_GRACE,
            bundle_cache: None,
            webhook: None,
        }
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Input`] naming the flag and the range allowed.
    pub fn validate(&self) -> Result<(), Error> {
        if !(MIN_VISIBILITY..=MAX_VISIBILITY).contains(&self.visibility_timeout) {
            return Err(Error::Input(format!(
                "--visibility-timeout {} is out of range: {} to {} seconds",
                self.visibility_timeout.as_secs_f64(),
                MIN_VISIBILITY.as_secs(),
                MAX_VISIBILITY.as_secs()
            )));
        }
        if self.wait > MAX_WAIT {
            return Err(Error::Input(format!(
                "receive wait {} s is out of range: at most {} s",
                self.wait.as_secs(),
                MAX_WAIT.as_secs()
            )));
        }
        if self.max_jobs == Some(0) {
            return Err(Error::Input("--max-jobs 0: give at least 1".into()));
        }
        if let Some(w) = &self.webhook {
            w.validate()?;
        }
        Ok(())
    }

    /// How often a held job's lease is extended.
    fn heartbeat(&self) -> Duration {
        self.visibility_timeout / HEARTBEATS_PER_LEASE
    }
}

/// What an agent did, counted by how each job ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentReport {
    /// Messages received.
    pub received: u64,
    /// Jobs rendered.
    pub rendered: u64,
    /// Jobs whose output came whole from the render cache.
    pub cached: u64,
    /// Duplicate deliveries acknowledged without rendering.
    pub duplicates: u64,
    /// Jobs that failed (recorded, and back on the queue or dead-lettered).
    pub failed: u64,
    /// Messages that did not parse or check.
    pub invalid: u64,
    /// Jobs given back on shutdown.
    pub released: u64,
}

impl AgentReport {
    fn add(&mut self, outcome: job::Outcome) {
        match outcome {
            job::Outcome::Rendered => self.rendered += 1,
            job::Outcome::Cached => self.cached += 1,
            job::Outcome::Duplicate => self.duplicates += 1,
            job::Outcome::Failed => self.failed += 1,
            job::Outcome::Invalid => self.invalid += 1,
            job::Outcome::Released => self.released += 1,
        }
    }

    /// One line for a person.
    pub fn line(&self) -> String {
        format!(
            "agent: {} received, {} rendered, {} from the cache, {} duplicate deliveries, {} failed, {} invalid, {} given back",
            self.received,
            self.rendered,
            self.cached,
            self.duplicates,
            self.failed,
            self.invalid,
            self.released
        )
    }
}

/// What every job of an agent shares.
pub(crate) struct Shared {
    coordinator: Arc<Coordinator>,
    queue: Queue,
    options: AgentOptions,
    /// The queue's redrive policy's receives (or [`DEFAULT_MAX_RECEIVES`]),
    /// and whether a dead-letter queue takes messages after them.
    max_receives: u32,
    dead_letter: bool,
    bundles: BundleCache,
    /// Bundles opened here, most recent last.
    contexts: Mutex<VecDeque<(ContentHash, Arc<VariantContext>, storage::CachedBundle)>>,
    slots: Arc<batch::slots::Slots>,
    metrics: Option<Arc<AgentMetrics>>,
    webhooks: Option<Webhooks>,
    /// `host:pid`, in every result.
    name: String,
}

/// A render node of a queue.
pub struct Agent {
    shared: Arc<Shared>,
    _bundle_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("queue", &self.shared.queue)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent of `options.queue` rendering with `coordinator`'s pool
    /// (one job per slot). Asks the queue for its redrive policy, so a
    /// queue that does not exist or cannot be reached fails here.
    ///
    /// # Errors
    /// [`Error::Input`] for invalid options, [`Error::Storage`] when the
    /// queue cannot be reached.
    pub async fn connect(
        coordinator: Arc<Coordinator>,
        options: AgentOptions,
    ) -> Result<Self, Error> {
        Self::with_metrics(coordinator, options, None).await
    }

    /// As [`Agent::connect`], counting into `metrics`.
    ///
    /// # Errors
    /// As [`Agent::connect`].
    pub async fn with_metrics(
        coordinator: Arc<Coordinator>,
        options: AgentOptions,
        metrics: Option<Arc<AgentMetrics>>,
    ) -> Result<Self, Error> {
        options.validate()?;
        let queue = Queue::connect(&options.queue, &coordinator.options.s3)
            .await
            .map_err(|e| Error::Input(format!("--queue: {e}")))?;
        let redrive = queue.max_receives().await?;
        let (bundle_dir, temp) = match &options.bundle_cache {
            Some(dir) => (dir.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("montage-agent-bundles-")
                    .tempdir()
                    .map_err(Error::io("creating the bundle cache"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let bundles = BundleCache::open(bundle_dir, BUNDLE_CACHE_BYTES, Default::default()).await?;
        let webhooks = options.webhook.clone().map(Webhooks::new).transpose()?;
        Ok(Agent {
            shared: Arc::new(Shared {
                coordinator,
                queue,
                max_receives: redrive.unwrap_or(DEFAULT_MAX_RECEIVES),
                dead_letter: redrive.is_some(),
                options,
                bundles,
                contexts: Mutex::new(VecDeque::new()),
                slots: Arc::new(batch::slots::Slots::default()),
                metrics,
                webhooks,
                name: agent_name(),
            }),
            _bundle_dir: temp,
        })
    }

    /// Receives and renders jobs until `shutdown` (or `max_jobs`): one job
    /// per free slot of the pool. On shutdown, stops receiving, lets
    /// in-flight jobs run for the grace period, then gives the rest back.
    ///
    /// # Errors
    /// [`Error::NoWorkers`] when the pool has no slot at all for the stall
    /// timeout; a failing job is never an error of the agent.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<AgentReport, Error> {
        let shared = &self.shared;
        let stop_pool = CancellationToken::new();
        let follower =
            batch::slots::follow_pool(&shared.coordinator, &shared.slots, stop_pool.clone()).await;
        let jobs_cancel = CancellationToken::new();
        let mut running: JoinSet<job::Outcome> = JoinSet::new();
        let mut report = AgentReport::default();
        let idle = Backoff::exponential(Duration::from_millis(500), Duration::from_secs(15))
            .with_jitter(storage::backoff::DEFAULT_JITTER);
        let mut idle_attempt = 0u32;
        let stall = shared.coordinator.options.policy.stall_timeout;
        let mut stopped: Option<Error> = None;
        while shared.options.max_jobs.is_none_or(|m| report.received < m) {
            // A free slot first: a job is only received when it can start.
            let lease = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(joined) = running.join_next() => {
                    if let Ok(outcome) = joined { report.add(outcome) }
                    continue;
                }
                lease = shared.slots.lease(1, stall) => lease,
            };
            let Some(lease) = lease else {
                stopped = Some(Error::NoWorkers(
                    "no workers available: the worker pool is empty".into(),
                ));
                break;
            };
            let visibility = shared.options.visibility_timeout;
            let asked = std::time::Instant::now();
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                r = shared.queue.receive(1, shared.options.wait, visibility) => r,
            };
            let (messages, polled) = match received {
                // A long poll that waited its time is the back-off itself.
                Ok(m) => (m, asked.elapsed() >= shared.options.wait.mul_f32(0.9)),
                Err(e) => {
                    tracing::warn!(queue = %shared.queue.url(), error = %e, "receiving failed: backing off");
                    (Vec::new(), false)
                }
            };
            let Some(message) = messages.into_iter().next() else {
                drop(lease);
                if polled {
                    idle_attempt = 0;
                    continue;
                }
                // An error, or an engine that answers at once when empty:
                // wait longer each time.
                idle_attempt = idle_attempt.saturating_add(1);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(idle.delay(idle_attempt)) => {}
                }
                continue;
            };
            idle_attempt = 0;
            report.received += 1;
            let run = job::JobRun::new(Arc::clone(shared), message, jobs_cancel.child_token());
            running.spawn(run.run(lease));
        }
        self.wind_down(&mut running, &mut report, &shutdown, jobs_cancel)
            .await;
        stop_pool.cancel();
        let _ = follower.await;
        if let Some(w) = &shared.webhooks {
            w.settle(crate::WEBHOOK_SETTLE).await;
        }
        match stopped {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Lets in-flight jobs finish (after `max_jobs`), or finish within the
    /// grace period once `shutdown` comes, then cancels the rest (each
    /// gives its message back).
    async fn wind_down(
        &self,
        running: &mut JoinSet<job::Outcome>,
        report: &mut AgentReport,
        shutdown: &CancellationToken,
        cancel: CancellationToken,
    ) {
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.shared.options.grace).await;
        };
        tokio::pin!(grace);
        loop {
            tokio::select! {
                joined = running.join_next() => match joined {
                    Some(Ok(outcome)) => report.add(outcome),
                    Some(Err(e)) => tracing::error!(error = %e, "a job's task failed"),
                    None => break,
                },
                () = &mut grace, if !cancel.is_cancelled() => {
                    if !running.is_empty() {
                        tracing::info!(jobs = running.len(), "grace period over: giving jobs back");
                    }
                    cancel.cancel();
                }
            }
        }
    }
}

impl Shared {
    /// The context of bundle `sha256` of batch `state`: fetched from the
    /// batch's root (verified by its sha256), unpacked once, opened once.
    async fn context(
        &self,
        state: &batch::queue::BatchState,
        sha256: &ContentHash,
    ) -> Result<Arc<VariantContext>, Error> {
        let mut contexts = self.contexts.lock().await;
        if let Some(at) = contexts.iter().position(|(h, _, _)| h == sha256) {
            let entry = contexts.remove(at).expect("the position was just found");
            let context = Arc::clone(&entry.1);
            contexts.push_back(entry);
            return Ok(context);
        }
        let at = state.bundle(sha256);
        let store = self.coordinator.stores.open(&at).await?;
        let cached = self.bundles.fetch(store.as_ref(), at.key(), sha256).await?;
        let source = crate::RenderSource::Bundle(cached.path().to_path_buf());
        let context = Arc::new(self.coordinator.variant_context(&source).await?);
        let expected = batch::VariantSource::Bundle { sha256: *sha256 };
        if context.variant_source() != expected {
            return Err(Error::Internal(format!(
                "bundle {at} unpacked and packed again is {:?}, not {sha256}",
                context.variant_source()
            )));
        }
        if contexts.len() >= OPEN_BUNDLES {
            contexts.pop_front();
        }
        contexts.push_back((*sha256, Arc::clone(&context), cached));
        Ok(context)
    }
}

/// `host:pid`: which agent recorded a result.
fn agent_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "agent".into());
    format!("{}:{}", spec::quote(&host), std::process::id())
}
