//! Fan-out: chunks to free worker slots, retries with backoff, stall
//! detection, quarantine of failing workers, results collected out of order.
//!
//! The scheduler is generic over [`ChunkRunner`], the thing that runs one
//! attempt of one chunk on one worker (over gRPC in production). It owns the
//! policy; the runner owns the transport.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chunker::Chunk;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use storage::Backoff;
use tracing::Instrument as _;

use crate::Error;

/// Attempts per chunk unless configured otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// A worker that sends nothing for this long has stalled.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Backoff before the second attempt; doubled for each further attempt.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest backoff between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest stall timeout accepted: a day.
pub const MAX_STALL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Consecutive failures after which a worker is set aside.
pub const QUARANTINE_AFTER_FAILURES: u32 = 2;
/// How long a failing worker is set aside.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(30);
/// How long a worker that answered "no free slot" is skipped.
pub const BUSY_COOL_DOWN: Duration = Duration::from_millis(250);
/// Progress messages buffered between a running attempt and the scheduler.
const PROGRESS_CHANNEL: usize = 64;

/// A worker as the scheduler sees it: an address and how many chunks it may
/// run at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct WorkerInfo {
    /// The worker's gRPC endpoint, e.g. `http://127.0.0.1:50051`.
    pub address: String,
    /// Concurrent chunks it accepts.
    pub slots: u32,
}

/// How an attempt failed, which decides what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The request itself is wrong (INVALID_ARGUMENT, NOT_FOUND): the
    /// render fails at once, nothing is retried.
    Invalid,
    /// Storage refused the worker access (PERMISSION_DENIED): no worker
    /// would do better; the render fails at once.
    Permission,
    /// The worker had no free slot (RESOURCE_EXHAUSTED): try elsewhere; not
    /// counted as an attempt.
    Busy,
    /// The worker failed, died, disconnected or errored: retry elsewhere.
    Transient,
    /// The worker sent nothing for the stall timeout: retry elsewhere.
    Stalled,
}

/// One failed attempt's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptError {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What the worker or transport said.
    pub message: String,
}

impl AttemptError {
    /// An error of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        AttemptError {
            kind,
            message: message.into(),
        }
    }
}

/// Progress of one running attempt (the worker's frames so far).
pub use spec::ChunkProgress;

/// The boxed future an attempt runs as.
pub type AttemptFuture<T> = Pin<Box<dyn Future<Output = Result<T, AttemptError>> + Send>>;

/// Runs one attempt of one chunk on one worker.
pub trait ChunkRunner: Send + Sync + 'static {
    /// What a successful attempt produces (the chunk's artifacts).
    type Output: Send + 'static;

    /// Starts an attempt. The future reports liveness by sending on
    /// `progress` (every message resets the stall timer) and must stop
    /// promptly, cleaning up, when `cancel` fires.
    fn run(
        &self,
        worker: &WorkerInfo,
        chunk: Chunk,
        attempt: u32,
        progress: mpsc::Sender<ChunkProgress>,
        cancel: CancellationToken,
    ) -> AttemptFuture<Self::Output>;
}

/// Retry and timeout policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulePolicy {
    /// Attempts per chunk (at least 1).
    pub max_attempts: u32,
    /// No message from a worker for this long fails the attempt.
    pub stall_timeout: Duration,
    /// Waits between a chunk's attempts: `backoff.delay(n)` after its n-th
    /// failure.
    pub backoff: Backoff,
    /// How long a worker is set aside after [`QUARANTINE_AFTER_FAILURES`]
    /// consecutive failures.
    pub quarantine: Duration,
}

impl Default for SchedulePolicy {
    fn default() -> Self {
        SchedulePolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            backoff: Backoff::exponential(DEFAULT_BACKOFF_BASE, MAX_BACKOFF)
                .with_jitter(storage::backoff::DEFAULT_JITTER),
            quarantine: DEFAULT_QUARANTINE,
        }
    }
}

impl SchedulePolicy {
    /// Checks the policy: at least one attempt, and a stall timeout between
    /// 1 ms and [`MAX_STALL_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Input`] naming the value (as its CLI flag) and the range.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_attempts == 0 {
            return Err(Error::Input(
                "--retries 0 is invalid: a chunk needs at least 1 attempt".into(),
            ));
        }
        if self.stall_timeout < Duration::from_millis(1) || self.stall_timeout > MAX_STALL_TIMEOUT {
            return Err(Error::Input(format!(
                "--stall-timeout {} is out of range: allowed 0.001-{} seconds",
                self.stall_timeout.as_secs_f64(),
                MAX_STALL_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }

    /// The wait before attempt `attempt` (1-based; the first has none).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt.saturating_sub(1))
    }
}

/// One failed attempt, kept for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedAttempt {
    /// The chunk.
    pub chunk: u32,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The worker's address.
    pub worker: String,
    /// What went wrong.
    pub error: AttemptError,
}

/// What the scheduler reports while it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScheduleEvent {
    /// An attempt started.
    ChunkStarted {
        /// The chunk.
        chunk: u32,
        /// 1-based attempt number.
        attempt: u32,
        /// The worker's address.
        worker: String,
    },
    /// A running chunk made progress.
    ChunkProgress {
        /// The chunk.
        chunk: u32,
        /// Progress so far.
        progress: ChunkProgress,
    },
    /// A chunk finished.
    ChunkFinished {
        /// The chunk.
        chunk: u32,
        /// The worker's address.
        worker: String,
        /// Attempts it took.
        attempts: u32,
    },
    /// An attempt failed and the chunk will be tried again.
    ChunkRetried {
        /// The failed attempt.
        failed: FailedAttempt,
        /// Wait before the next attempt, in milliseconds.
        backoff_ms: u64,
    },
    /// A worker was set aside after repeated failures.
    WorkerQuarantined {
        /// The worker's address.
        worker: String,
        /// For how long, in milliseconds.
        for_ms: u64,
    },
}

/// Every chunk's output, in chunk order, and every failed attempt.
#[derive(Debug)]
pub struct ScheduleOutcome<T> {
    /// One output per chunk, in chunk order.
    pub outputs: Vec<T>,
    /// Attempts per chunk, in chunk order.
    pub attempts: Vec<u32>,
    /// Failed attempts that were retried successfully.
    pub failures: Vec<FailedAttempt>,
}

struct WorkerState {
    info: WorkerInfo,
    busy: u32,
    consecutive_failures: u32,
    unavailable_until: Option<Instant>,
}

impl WorkerState {
    fn available(&self, now: Instant) -> bool {
        self.busy < self.info.slots && self.unavailable_until.is_none_or(|t| t <= now)
    }
}

struct Pending {
    chunk: usize,
    attempt: u32,
    not_before: Instant,
    /// Workers this chunk already failed on: tried last.
    avoid: Vec<String>,
}

enum AttemptMessage<T> {
    Progress(ChunkProgress),
    Done(Result<T, AttemptError>),
}

/// A message from a running attempt: (chunk slot, worker slot, message).
type Message<T> = (usize, usize, AttemptMessage<T>);

/// Messages buffered between running attempts and the scheduler.
const MESSAGE_CHANNEL: usize = 64;

/// Runs every chunk of `chunks` on the workers of `pool` (which may change
/// while running, e.g. as DNS is re-resolved) and returns the outputs in
/// the order of `chunks`. `chunks` may be any subset of a plan (those not
/// found in a cache); events and errors name chunks by their plan index.
/// Progress events are dropped when `events` is full (the next one says
/// the same, and newer); the others wait for room.
///
/// # Errors
/// [`Error::Refused`] for a chunk refused as invalid, [`Error::ChunkFailed`]
/// for a chunk that failed on every attempt (listing every attempt),
/// [`Error::NoWorkers`] for an empty pool, [`Error::Cancelled`].
pub async fn run_chunks<R: ChunkRunner>(
    runner: Arc<R>,
    chunks: &[Chunk],
    pool: watch::Receiver<Vec<WorkerInfo>>,
    policy: SchedulePolicy,
    events: mpsc::Sender<ScheduleEvent>,
    cancel: CancellationToken,
) -> Result<ScheduleOutcome<R::Output>, Error> {
    Scheduler::new(runner, chunks, pool, policy, events, cancel)
        .run()
        .await
}

/// One run of the scheduler: the chunks, the workers as it sees them, what
/// waits and what runs. [`Scheduler::run`] is its loop: dispatch what can
/// start, wait for something to change, handle it.
struct Scheduler<'a, R: ChunkRunner> {
    runner: Arc<R>,
    chunks: &'a [Chunk],
    pool: watch::Receiver<Vec<WorkerInfo>>,
    pool_open: bool,
    policy: SchedulePolicy,
    events: mpsc::Sender<ScheduleEvent>,
    cancel: CancellationToken,
    /// Cancels every running attempt when the scheduler stops.
    attempts_cancel: CancellationToken,
    workers: Vec<WorkerState>,
    pending: VecDeque<Pending>,
    outputs: Vec<Option<R::Output>>,
    attempts: Vec<u32>,
    /// Per chunk, the workers it failed on.
    avoided: Vec<Vec<String>>,
    failures: Vec<FailedAttempt>,
    running: JoinSet<()>,
    in_flight: usize,
    messages_tx: mpsc::Sender<Message<R::Output>>,
    messages: mpsc::Receiver<Message<R::Output>>,
    /// Since when the pool has had no slot at all.
    empty_since: Option<Instant>,
}

/// What the loop does after waiting.
enum Wake<T> {
    Cancelled,
    PoolChanged(bool),
    Timer,
    Message(Option<Message<T>>),
}

impl<'a, R: ChunkRunner> Scheduler<'a, R> {
    fn new(
        runner: Arc<R>,
        chunks: &'a [Chunk],
        mut pool: watch::Receiver<Vec<WorkerInfo>>,
        policy: SchedulePolicy,
        events: mpsc::Sender<ScheduleEvent>,
        cancel: CancellationToken,
    ) -> Self {
        let mut workers = Vec::new();
        sync_workers(&mut workers, &pool.borrow_and_update());
        let start = Instant::now();
        let (messages_tx, messages) = mpsc::channel(MESSAGE_CHANNEL);
        Scheduler {
            runner,
            chunks,
            pool,
            pool_open: true,
            policy: SchedulePolicy {
                max_attempts: policy.max_attempts.max(1),
                ..policy
            },
            events,
            attempts_cancel: cancel.child_token(),
            cancel,
            workers,
            pending: (0..chunks.len())
                .map(|chunk| Pending {
                    chunk,
                    attempt: 1,
                    not_before: start,
                    avoid: Vec::new(),
                })
                .collect(),
            outputs: chunks.iter().map(|_| None).collect(),
            attempts: vec![0; chunks.len()],
            avoided: vec![Vec::new(); chunks.len()],
            failures: Vec::new(),
            running: JoinSet::new(),
            in_flight: 0,
            messages_tx,
            messages,
            empty_since: None,
        }
    }

    async fn run(mut self) -> Result<ScheduleOutcome<R::Output>, Error> {
        let result = self.drive().await;
        // Stop whatever still runs and wait for it: attempts clean up their
        // own temporary files when cancelled.
        self.attempts_cancel.cancel();
        self.messages.close();
        while self.running.join_next().await.is_some() {}
        result?;
        let chunks = self.chunks;
        let failures = self.failures;
        let attempts = self.attempts;
        let outputs = self
            .outputs
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.ok_or_else(|| Error::ChunkFailed {
                    chunk: chunks[i].index().0,
                    tries: attempts[i],
                    attempts: failures.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ScheduleOutcome {
            outputs,
            attempts,
            failures,
        })
    }

    /// The loop: until every chunk is done, or one fails for good.
    async fn drive(&mut self) -> Result<(), Error> {
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if self.pending.is_empty() && self.in_flight == 0 {
                return Ok(());
            }
            let now = Instant::now();
            self.dispatch_ready(now).await;
            let empty_deadline = self.empty_pool_deadline(now)?;
            match self.wait(now, empty_deadline).await {
                Wake::Cancelled => return Err(Error::Cancelled),
                Wake::PoolChanged(true) => {
                    sync_workers(&mut self.workers, &self.pool.borrow_and_update());
                }
                Wake::PoolChanged(false) => self.pool_open = false,
                Wake::Timer | Wake::Message(None) => {}
                Wake::Message(Some((chunk, worker, AttemptMessage::Progress(progress)))) => {
                    let _ = worker;
                    self.progress(chunk, progress);
                }
                Wake::Message(Some((chunk, worker, AttemptMessage::Done(result)))) => {
                    self.attempt_done(chunk, worker, result).await?;
                }
            }
        }
    }

    /// Starts every ready chunk that has a free slot, preferring a worker
    /// other than the ones it failed on.
    async fn dispatch_ready(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].not_before > now {
                i += 1;
                continue;
            }
            let Some(w) = pick_worker(&self.workers, now, &self.pending[i].avoid) else {
                break;
            };
            let Some(p) = self.pending.remove(i) else {
                break;
            };
            self.start(p, w).await;
        }
    }

    async fn start(&mut self, p: Pending, w: usize) {
        self.workers[w].busy += 1;
        self.attempts[p.chunk] = p.attempt;
        self.in_flight += 1;
        let info = self.workers[w].info.clone();
        self.emit(ScheduleEvent::ChunkStarted {
            chunk: self.chunks[p.chunk].index().0,
            attempt: p.attempt,
            worker: info.address.clone(),
        })
        .await;
        let attempt = Attempt {
            runner: Arc::clone(&self.runner),
            info,
            chunk: self.chunks[p.chunk],
            chunk_slot: p.chunk,
            worker_slot: w,
            attempt: p.attempt,
            stall_timeout: self.policy.stall_timeout,
            tx: self.messages_tx.clone(),
            cancel: self.attempts_cancel.child_token(),
        };
        let span = tracing::info_span!(
            "attempt",
            chunk = attempt.chunk.index().0,
            attempt = attempt.attempt,
            worker = %attempt.info.address,
            // Recorded by runners that give attempts ids (the gRPC runner
            // sends it to the worker, whose log lines carry it too).
            attempt_id = tracing::field::Empty
        );
        self.running.spawn(attempt.run().instrument(span));
    }

    /// When an empty pool gives up: it may fill (DNS) for up to the stall
    /// timeout.
    fn empty_pool_deadline(&mut self, now: Instant) -> Result<Option<Instant>, Error> {
        let no_workers = self.in_flight == 0 && self.workers.iter().all(|w| w.info.slots == 0);
        if !no_workers {
            self.empty_since = None;
            return Ok(None);
        }
        if !self.pool_open {
            return Err(no_workers_error());
        }
        let since = *self.empty_since.get_or_insert(now);
        if now >= since + self.policy.stall_timeout {
            return Err(no_workers_error());
        }
        Ok(Some(since + self.policy.stall_timeout))
    }

    /// Sleeps until something can change: a message, a pool change, the
    /// next pending chunk's backoff, a worker's quarantine ending, or the end
    /// of the wait for an empty pool to fill.
    async fn wait(&mut self, now: Instant, empty_deadline: Option<Instant>) -> Wake<R::Output> {
        let wake = match (next_wake(&self.pending, &self.workers, now), empty_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            _ = self.cancel.cancelled() => Wake::Cancelled,
            changed = self.pool.changed(), if self.pool_open => Wake::PoolChanged(changed.is_ok()),
            _ = sleep_until_opt(wake) => Wake::Timer,
            message = self.messages.recv() => Wake::Message(message),
        }
    }

    fn progress(&self, chunk: usize, progress: ChunkProgress) {
        // Dropped when the consumer lags: the next progress says more.
        let _ = self.events.try_send(ScheduleEvent::ChunkProgress {
            chunk: self.chunks[chunk].index().0,
            progress,
        });
    }

    async fn emit(&self, event: ScheduleEvent) {
        let _ = self.events.send(event).await;
    }

    async fn attempt_done(
        &mut self,
        chunk: usize,
        w: usize,
        result: Result<R::Output, AttemptError>,
    ) -> Result<(), Error> {
        self.in_flight -= 1;
        if let Some(s) = self.workers.get_mut(w) {
            s.busy = s.busy.saturating_sub(1);
        }
        let address = self
            .workers
            .get(w)
            .map(|s| s.info.address.clone())
            .unwrap_or_default();
        match result {
            Ok(output) => {
                tracing::info!(chunk = self.chunks[chunk].index().0, worker = %address, "chunk finished");
                if let Some(s) = self.workers.get_mut(w) {
                    s.consecutive_failures = 0;
                }
                self.outputs[chunk] = Some(output);
                self.emit(ScheduleEvent::ChunkFinished {
                    chunk: self.chunks[chunk].index().0,
                    worker: address,
                    attempts: self.attempts[chunk],
                })
                .await;
                Ok(())
            }
            Err(error) => match error.kind {
                FailureKind::Busy => {
                    self.busy(chunk, w);
                    Ok(())
                }
                FailureKind::Invalid | FailureKind::Permission => Err(Error::Refused {
                    chunk: self.chunks[chunk].index().0,
                    worker: address,
                    message: error.message,
                    kind: error.kind,
                }),
                _ => self.failed(chunk, w, address, error).await,
            },
        }
    }

    /// The worker had no free slot: try again at once, elsewhere if
    /// possible, without counting an attempt.
    fn busy(&mut self, chunk: usize, w: usize) {
        if let Some(s) = self.workers.get_mut(w) {
            s.unavailable_until = Some(Instant::now() + BUSY_COOL_DOWN);
        }
        self.pending.push_front(Pending {
            chunk,
            attempt: self.attempts[chunk],
            not_before: Instant::now(),
            avoid: self.avoided[chunk].clone(),
        });
    }

    /// An attempt failed: count it against the worker (quarantining it
    /// after repeated failures) and retry the chunk elsewhere after its
    /// backoff, unless it has no attempts left.
    async fn failed(
        &mut self,
        chunk: usize,
        w: usize,
        address: String,
        error: AttemptError,
    ) -> Result<(), Error> {
        tracing::warn!(
            chunk = self.chunks[chunk].index().0,
            attempt = self.attempts[chunk],
            worker = %address,
            class = ?error.kind,
            error = %error.message,
            "chunk attempt failed"
        );
        let failed = FailedAttempt {
            chunk: self.chunks[chunk].index().0,
            attempt: self.attempts[chunk],
            worker: address.clone(),
            error,
        };
        self.failures.push(failed.clone());
        self.count_worker_failure(w, &address).await;
        if self.attempts[chunk] >= self.policy.max_attempts {
            return Err(Error::ChunkFailed {
                chunk: self.chunks[chunk].index().0,
                tries: self.attempts[chunk],
                attempts: self.failures.clone(),
            });
        }
        let next = self.attempts[chunk] + 1;
        let backoff = self.policy.backoff(next);
        self.emit(ScheduleEvent::ChunkRetried {
            failed,
            backoff_ms: backoff.as_millis() as u64,
        })
        .await;
        self.avoided[chunk].push(address);
        self.pending.push_back(Pending {
            chunk,
            attempt: next,
            not_before: Instant::now() + backoff,
            avoid: self.avoided[chunk].clone(),
        });
        Ok(())
    }

    async fn count_worker_failure(&mut self, w: usize, address: &str) {
        let quarantine = self.policy.quarantine;
        let Some(s) = self.workers.get_mut(w) else {
            return;
        };
        s.consecutive_failures += 1;
        if s.consecutive_failures >= QUARANTINE_AFTER_FAILURES {
            s.consecutive_failures = 0;
            s.unavailable_until = Some(Instant::now() + quarantine);
            self.emit(ScheduleEvent::WorkerQuarantined {
                worker: address.to_owned(),
                for_ms: quarantine.as_millis() as u64,
            })
            .await;
        }
    }
}

fn no_workers_error() -> Error {
    Error::NoWorkers("no workers available: the worker pool is empty".into())
}

/// One attempt of one chunk on one worker, watched for stalls.
struct Attempt<R: ChunkRunner> {
    runner: Arc<R>,
    info: WorkerInfo,
    chunk: Chunk,
    chunk_slot: usize,
    worker_slot: usize,
    attempt: u32,
    stall_timeout: Duration,
    tx: mpsc::Sender<Message<R::Output>>,
    cancel: CancellationToken,
}

impl<R: ChunkRunner> Attempt<R> {
    /// Runs the attempt, forwarding its progress; an attempt silent for the
    /// stall timeout is cancelled and reported as stalled.
    async fn run(self) {
        let (ptx, mut prx) = mpsc::channel(PROGRESS_CHANNEL);
        let fut = self.runner.run(
            &self.info,
            self.chunk,
            self.attempt,
            ptx,
            self.cancel.clone(),
        );
        tokio::pin!(fut);
        let mut deadline = Instant::now() + self.stall_timeout;
        let mut progress_open = true;
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                p = prx.recv(), if progress_open => match p {
                    Some(p) => {
                        deadline = Instant::now() + self.stall_timeout;
                        let _ = self.tx.send((self.chunk_slot, self.worker_slot, AttemptMessage::Progress(p))).await;
                    }
                    None => progress_open = false,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    self.cancel.cancel();
                    // Let the attempt stop and clean up before reporting.
                    let _ = (&mut fut).await;
                    break Err(AttemptError::new(FailureKind::Stalled, format!(
                        "no progress for {:.1} s (stall timeout)",
                        self.stall_timeout.as_secs_f64()
                    )));
                }
            }
        };
        let _ = self
            .tx
            .send((
                self.chunk_slot,
                self.worker_slot,
                AttemptMessage::Done(result),
            ))
            .await;
    }
}

fn pick_worker(workers: &[WorkerState], now: Instant, avoid: &[String]) -> Option<usize> {
    let candidates = || workers.iter().enumerate().filter(|(_, w)| w.available(now));
    // Least loaded first (fraction of slots busy), then pool order, so work
    // spreads over workers instead of filling the first.
    let best = |it: &mut dyn Iterator<Item = (usize, &WorkerState)>| {
        it.min_by(|(_, a), (_, b)| {
            (u64::from(a.busy) * u64::from(b.info.slots))
                .cmp(&(u64::from(b.busy) * u64::from(a.info.slots)))
        })
        .map(|(i, _)| i)
    };
    if let Some(i) = best(&mut candidates().filter(|(_, w)| !avoid.contains(&w.info.address))) {
        return Some(i);
    }
    if let Some(i) = best(&mut candidates()) {
        return Some(i);
    }
    // Setting a worker aside only helps while others can take the work:
    // when every worker in the pool is set aside, try them anyway (the
    // chunk's own backoff still spaces the attempts).
    let all_aside = workers
        .iter()
        .filter(|w| w.info.slots > 0)
        .all(|w| w.unavailable_until.is_some_and(|t| t > now));
    if !all_aside {
        return None;
    }
    best(
        &mut workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.busy < w.info.slots),
    )
}

fn next_wake(
    pending: &VecDeque<Pending>,
    workers: &[WorkerState],
    now: Instant,
) -> Option<Instant> {
    let backoff = pending
        .iter()
        .map(|p| p.not_before)
        .filter(|t| *t > now)
        .min();
    let quarantine = workers
        .iter()
        .filter_map(|w| w.unavailable_until)
        .filter(|t| *t > now)
        .min();
    match (backoff, quarantine) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Keeps per-worker state for workers still in the pool, adds new ones.
/// Workers that left keep their state (and running attempts) but get no new
/// work: their slot count drops to zero.
fn sync_workers(workers: &mut Vec<WorkerState>, pool: &[WorkerInfo]) {
    for w in workers.iter_mut() {
        if let Some(now) = pool.iter().find(|p| p.address == w.info.address) {
            w.info.slots = now.slots;
        } else {
            w.info.slots = 0;
        }
    }
    for p in pool {
        if !workers.iter().any(|w| w.info.address == p.address) {
            workers.push(WorkerState {
                info: p.clone(),
                busy: 0,
                consecutive_failures: 0,
                unavailable_until: None,
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
