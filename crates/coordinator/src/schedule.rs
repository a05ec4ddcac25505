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

/// Attempts per chunk unless configured otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// A worker that sends nothing for this long has stalled.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Backoff before the second attempt; doubled for each further attempt.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest backoff between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
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
    /// The request itself is wrong (INVALID_ARGUMENT): the render fails at
    /// once, nothing is retried.
    Invalid,
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

/// Progress of one running attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ChunkProgress {
    /// Frames rendered so far.
    pub frames_rendered: u64,
    /// Frames encoded so far.
    pub frames_encoded: u64,
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulePolicy {
    /// Attempts per chunk (at least 1).
    pub max_attempts: u32,
    /// No message from a worker for this long fails the attempt.
    pub stall_timeout: Duration,
    /// Backoff before the second attempt, doubled per attempt up to
    /// [`MAX_BACKOFF`].
    pub backoff_base: Duration,
    /// How long a worker is set aside after [`QUARANTINE_AFTER_FAILURES`]
    /// consecutive failures.
    pub quarantine: Duration,
}

impl Default for SchedulePolicy {
    fn default() -> Self {
        SchedulePolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            backoff_base: DEFAULT_BACKOFF_BASE,
            quarantine: DEFAULT_QUARANTINE,
        }
    }
}

impl SchedulePolicy {
    /// The wait before attempt `attempt` (1-based; the first has none).
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (attempt - 2).min(16);
        self.backoff_base.saturating_mul(factor).min(MAX_BACKOFF)
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

/// Why scheduling stopped without every chunk done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// A worker refused the request as invalid; retrying cannot help.
    #[error("chunk {chunk} was refused as invalid by {worker}: {message}")]
    Invalid {
        /// The chunk.
        chunk: u32,
        /// The worker.
        worker: String,
        /// The worker's message.
        message: String,
    },
    /// A chunk failed on every attempt.
    #[error(
        "chunk {chunk} failed after {tries} attempts; failed attempts of this render:\n{}",
        format_attempts(attempts)
    )]
    Exhausted {
        /// The chunk.
        chunk: u32,
        /// Attempts the chunk had.
        tries: u32,
        /// Every failed attempt of the render (all chunks), oldest first.
        attempts: Vec<FailedAttempt>,
    },
    /// There are no workers to run on (the pool stayed empty for the stall
    /// timeout).
    #[error("no workers available: the worker pool is empty")]
    NoWorkers,
    /// The render was cancelled.
    #[error("cancelled")]
    Cancelled,
}

fn format_attempts(attempts: &[FailedAttempt]) -> String {
    attempts
        .iter()
        .map(|a| {
            format!(
                "  chunk {} attempt {} on {}: {:?}: {}",
                a.chunk, a.attempt, a.worker, a.error.kind, a.error.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
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

/// Runs every chunk of `chunks` on the workers of `pool` (which may change
/// while running, e.g. as DNS is re-resolved) and returns the outputs in
/// the order of `chunks`. `chunks` may be any subset of a plan (those not
/// found in a cache); events and errors name chunks by their plan index.
///
/// # Errors
/// [`ScheduleError`]: a chunk refused as invalid, a chunk that failed on
/// every attempt (listing every attempt), an empty pool, or cancellation.
pub async fn run_chunks<R: ChunkRunner>(
    runner: Arc<R>,
    chunks: &[Chunk],
    mut pool: watch::Receiver<Vec<WorkerInfo>>,
    policy: SchedulePolicy,
    events: mpsc::UnboundedSender<ScheduleEvent>,
    cancel: CancellationToken,
) -> Result<ScheduleOutcome<R::Output>, ScheduleError> {
    let max_attempts = policy.max_attempts.max(1);
    let mut workers: Vec<WorkerState> = Vec::new();
    sync_workers(&mut workers, &pool.borrow_and_update());

    let start = Instant::now();
    let mut pending: VecDeque<Pending> = (0..chunks.len())
        .map(|chunk| Pending {
            chunk,
            attempt: 1,
            not_before: start,
            avoid: Vec::new(),
        })
        .collect();
    let mut outputs: Vec<Option<R::Output>> = chunks.iter().map(|_| None).collect();
    let mut attempts = vec![0u32; chunks.len()];
    let mut avoided: Vec<Vec<String>> = vec![Vec::new(); chunks.len()];
    let mut failures: Vec<FailedAttempt> = Vec::new();
    let mut running: JoinSet<()> = JoinSet::new();
    let (tx, mut rx) = mpsc::channel::<(usize, usize, AttemptMessage<R::Output>)>(PROGRESS_CHANNEL);
    let attempts_cancel = cancel.child_token();
    let mut in_flight = 0usize;
    let mut pool_open = true;
    let mut empty_since: Option<Instant> = None;

    let result = loop {
        if cancel.is_cancelled() {
            break Err(ScheduleError::Cancelled);
        }
        if pending.is_empty() && in_flight == 0 {
            break Ok(());
        }
        let now = Instant::now();
        // Dispatch every ready chunk that has a free slot, preferring a worker
        // other than the one it last failed on.
        let mut i = 0;
        while i < pending.len() {
            if pending[i].not_before > now {
                i += 1;
                continue;
            }
            let choice = pick_worker(&workers, now, &pending[i].avoid);
            let Some(w) = choice else { break };
            let Some(p) = pending.remove(i) else { break };
            workers[w].busy += 1;
            attempts[p.chunk] = p.attempt;
            in_flight += 1;
            let info = workers[w].info.clone();
            let _ = events.send(ScheduleEvent::ChunkStarted {
                chunk: chunks[p.chunk].index().0,
                attempt: p.attempt,
                worker: info.address.clone(),
            });
            spawn_attempt(
                &mut running,
                Arc::clone(&runner),
                info,
                chunks[p.chunk],
                p.chunk,
                w,
                p.attempt,
                policy.stall_timeout,
                tx.clone(),
                attempts_cancel.child_token(),
            );
        }
        let no_workers = in_flight == 0 && workers.iter().all(|w| w.info.slots == 0);
        if no_workers && !pool_open {
            break Err(ScheduleError::NoWorkers);
        }
        if !no_workers {
            empty_since = None;
        }
        let empty_deadline = if no_workers {
            let since = *empty_since.get_or_insert(now);
            if now >= since + policy.stall_timeout {
                break Err(ScheduleError::NoWorkers);
            }
            Some(since + policy.stall_timeout)
        } else {
            None
        };
        // Sleep until something can change: a message, a pool change, the
        // next pending chunk's backoff, a worker's quarantine ending, or the
        // end of the wait for an empty pool to fill.
        let wake = match (next_wake(&pending, &workers, now), empty_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            _ = cancel.cancelled() => break Err(ScheduleError::Cancelled),
            changed = pool.changed(), if pool_open => {
                match changed {
                    Ok(()) => sync_workers(&mut workers, &pool.borrow_and_update()),
                    Err(_) => pool_open = false,
                }
            }
            _ = sleep_until_opt(wake) => {}
            message = rx.recv() => {
                let Some((chunk, w, message)) = message else { continue };
                match message {
                    AttemptMessage::Progress(progress) => {
                        let _ = events.send(ScheduleEvent::ChunkProgress { chunk: chunks[chunk].index().0, progress });
                    }
                    AttemptMessage::Done(result) => {
                        in_flight -= 1;
                        let mut worker = workers.get_mut(w);
                        if let Some(s) = worker.as_deref_mut() {
                            s.busy = s.busy.saturating_sub(1);
                        }
                        let address = worker.as_ref().map(|s| s.info.address.clone()).unwrap_or_default();
                        match result {
                            Ok(output) => {
                                if let Some(s) = worker {
                                    s.consecutive_failures = 0;
                                }
                                outputs[chunk] = Some(output);
                                let _ = events.send(ScheduleEvent::ChunkFinished {
                                    chunk: chunks[chunk].index().0,
                                    worker: address,
                                    attempts: attempts[chunk],
                                });
                            }
                            Err(error) if error.kind == FailureKind::Busy => {
                                if let Some(s) = worker {
                                    s.unavailable_until = Some(Instant::now() + BUSY_COOL_DOWN);
                                }
                                let avoid = previous_avoid(&mut avoided, chunk);
                                pending.push_front(Pending {
                                    chunk,
                                    attempt: attempts[chunk],
                                    not_before: Instant::now(),
                                    avoid,
                                });
                            }
                            Err(error) if error.kind == FailureKind::Invalid => {
                                break Err(ScheduleError::Invalid {
                                    chunk: chunks[chunk].index().0,
                                    worker: address,
                                    message: error.message,
                                });
                            }
                            Err(error) => {
                                let failed = FailedAttempt {
                                    chunk: chunks[chunk].index().0,
                                    attempt: attempts[chunk],
                                    worker: address.clone(),
                                    error,
                                };
                                failures.push(failed.clone());
                                if let Some(s) = worker {
                                    s.consecutive_failures += 1;
                                    if s.consecutive_failures >= QUARANTINE_AFTER_FAILURES {
                                        s.consecutive_failures = 0;
                                        s.unavailable_until = Some(Instant::now() + policy.quarantine);
                                        let _ = events.send(ScheduleEvent::WorkerQuarantined {
                                            worker: address.clone(),
                                            for_ms: policy.quarantine.as_millis() as u64,
                                        });
                                    }
                                }
                                if attempts[chunk] >= max_attempts {
                                    break Err(ScheduleError::Exhausted {
                                        chunk: chunks[chunk].index().0,
                                        tries: attempts[chunk],
                                        attempts: failures.clone(),
                                    });
                                }
                                let next = attempts[chunk] + 1;
                                let backoff = policy.backoff(next);
                                let _ = events.send(ScheduleEvent::ChunkRetried {
                                    failed,
                                    backoff_ms: backoff.as_millis() as u64,
                                });
                                let mut avoid = previous_avoid(&mut avoided, chunk);
                                avoid.push(address);
                                avoided[chunk] = avoid.clone();
                                pending.push_back(Pending {
                                    chunk,
                                    attempt: next,
                                    not_before: Instant::now() + backoff,
                                    avoid,
                                });
                            }
                        }
                    }
                }
            }
        }
    };

    // Stop whatever still runs and wait for it: attempts clean up their own
    // temporary files when cancelled.
    attempts_cancel.cancel();
    drop(rx);
    while running.join_next().await.is_some() {}
    result?;

    let outputs = outputs
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.ok_or(ScheduleError::Exhausted {
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

fn previous_avoid(avoided: &mut [Vec<String>], chunk: usize) -> Vec<String> {
    avoided.get(chunk).cloned().unwrap_or_default()
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

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn spawn_attempt<R: ChunkRunner>(
    set: &mut JoinSet<()>,
    runner: Arc<R>,
    info: WorkerInfo,
    chunk: Chunk,
    chunk_slot: usize,
    worker_slot: usize,
    attempt: u32,
    stall_timeout: Duration,
    tx: mpsc::Sender<(usize, usize, AttemptMessage<R::Output>)>,
    cancel: CancellationToken,
) {
    set.spawn(async move {
        let (ptx, mut prx) = mpsc::channel(PROGRESS_CHANNEL);
        let fut = runner.run(&info, chunk, attempt, ptx, cancel.clone());
        tokio::pin!(fut);
        let mut deadline = Instant::now() + stall_timeout;
        let mut progress_open = true;
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                p = prx.recv(), if progress_open => match p {
                    Some(p) => {
                        deadline = Instant::now() + stall_timeout;
                        let _ = tx.send((chunk_slot, worker_slot, AttemptMessage::Progress(p))).await;
                    }
                    None => progress_open = false,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    cancel.cancel();
                    // Let the attempt stop and clean up before reporting.
                    let _ = (&mut fut).await;
                    break Err(AttemptError::new(FailureKind::Stalled, format!(
                        "no progress for {:.1} s (stall timeout)",
                        stall_timeout.as_secs_f64()
                    )));
                }
            }
        };
        let _ = tx
            .send((chunk_slot, worker_slot, AttemptMessage::Done(result)))
            .await;
    });
}

#[cfg(test)]
mod tests;
