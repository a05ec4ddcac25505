//! Scheduling policy tests with virtual time (`tokio::time::pause`): the
//! runner here is a scripted stand-in for workers so that retries, backoff,
//! stalls and quarantine can be asserted exactly. The real gRPC path is
//! tested end to end with worker processes in the integration tests.

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use chunker::{ChunkSpec, PlanRequest, plan};
use timebase::Fps;

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Work for this long (sending progress every 100 ms), then succeed.
    Succeed(Duration),
    /// Work for this long, then fail with this kind.
    Fail(Duration, FailureKind),
    /// Never send anything and never finish until cancelled.
    Hang,
}

type Script = dyn Fn(&str, u32, u32) -> Behaviour + Send + Sync;

struct Scripted {
    script: Box<Script>,
    running: Mutex<HashMap<String, u32>>,
    max_running: Mutex<HashMap<String, u32>>,
    cancelled: AtomicU32,
}

impl Scripted {
    fn new(script: impl Fn(&str, u32, u32) -> Behaviour + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Scripted {
            script: Box::new(script),
            running: Mutex::default(),
            max_running: Mutex::default(),
            cancelled: AtomicU32::new(0),
        })
    }
}

impl ChunkRunner for Arc<Scripted> {
    type Output = (u32, String);

    fn run(
        &self,
        worker: &WorkerInfo,
        chunk: Chunk,
        attempt: u32,
        progress: mpsc::Sender<ChunkProgress>,
        cancel: CancellationToken,
    ) -> AttemptFuture<Self::Output> {
        let this = Arc::clone(self);
        let address = worker.address.clone();
        let behaviour = (self.script)(&address, chunk.index().0, attempt);
        Box::pin(async move {
            {
                let mut running = this.running.lock().expect("lock");
                let n = running.entry(address.clone()).or_default();
                *n += 1;
                let mut max = this.max_running.lock().expect("lock");
                let m = max.entry(address.clone()).or_default();
                *m = (*m).max(*n);
            }
            let work = async {
                match behaviour {
                    Behaviour::Succeed(d) | Behaviour::Fail(d, _) => {
                        let end = Instant::now() + d;
                        while Instant::now() < end {
                            tokio::time::sleep(
                                Duration::from_millis(100).min(end - Instant::now()),
                            )
                            .await;
                            let _ = progress.send(ChunkProgress::default()).await;
                        }
                        match behaviour {
                            Behaviour::Fail(_, kind) => {
                                Err(AttemptError::new(kind, "scripted failure"))
                            }
                            _ => Ok((chunk.index().0, address.clone())),
                        }
                    }
                    Behaviour::Hang => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                r = work => r,
                _ = cancel.cancelled() => {
                    this.cancelled.fetch_add(1, Ordering::SeqCst);
                    Err(AttemptError::new(FailureKind::Transient, "cancelled"))
                }
            };
            *this
                .running
                .lock()
                .expect("lock")
                .entry(address)
                .or_default() -= 1;
            result
        })
    }
}

/// The chunks of `n` chunks of 10 frames at 30 fps.
pub(crate) fn chunks(n: u32) -> Vec<Chunk> {
    let fps = Fps::new(30, 1).expect("fps");
    plan(&PlanRequest::new(
        u64::from(n) * 10,
        fps,
        ChunkSpec::Count(n),
    ))
    .expect("plan")
    .chunks()
    .to_vec()
}

fn pool(workers: &[(&str, u32)]) -> watch::Receiver<Vec<WorkerInfo>> {
    let infos = workers
        .iter()
        .map(|(a, s)| WorkerInfo {
            address: (*a).to_owned(),
            slots: *s,
        })
        .collect();
    // The sender is dropped: a fixed pool.
    watch::channel(infos).1
}

fn policy() -> SchedulePolicy {
    SchedulePolicy {
        max_attempts: 3,
        stall_timeout: Duration::from_secs(5),
        backoff: Backoff::exponential(Duration::from_millis(500), MAX_BACKOFF),
        quarantine: Duration::from_secs(30),
    }
}

async fn run(
    runner: &Arc<Scripted>,
    n: u32,
    workers: &[(&str, u32)],
) -> (
    Result<ScheduleOutcome<(u32, String)>, Error>,
    Vec<ScheduleEvent>,
) {
    let (etx, mut erx) = mpsc::channel(1024);
    let result = run_chunks(
        Arc::new(Arc::clone(runner)),
        &chunks(n),
        pool(workers),
        policy(),
        etx,
        CancellationToken::new(),
    )
    .await;
    let mut events = Vec::new();
    while let Ok(e) = erx.try_recv() {
        events.push(e);
    }
    (result, events)
}

#[tokio::test(start_paused = true)]
async fn results_come_back_in_chunk_order_and_slots_are_respected() {
    // Later chunks finish first.
    let runner =
        Scripted::new(|_, chunk, _| Behaviour::Succeed(Duration::from_secs(10 - u64::from(chunk))));
    let (result, _) = run(&runner, 8, &[("a", 2), ("b", 1), ("c", 3)]).await;
    let outcome = result.expect("all chunks succeed");
    let order: Vec<u32> = outcome.outputs.iter().map(|(c, _)| *c).collect();
    assert_eq!(order, (0..8).collect::<Vec<_>>());
    assert_eq!(outcome.attempts, vec![1; 8]);
    let max = runner.max_running.lock().expect("lock").clone();
    assert_eq!(max.get("a"), Some(&2));
    assert_eq!(max.get("b"), Some(&1));
    assert_eq!(max.get("c"), Some(&3));
}

#[tokio::test(start_paused = true)]
async fn a_failed_chunk_is_retried_on_another_worker_after_backoff() {
    let runner = Scripted::new(|worker, chunk, _| match (worker, chunk) {
        ("a", 0) => Behaviour::Fail(Duration::from_secs(1), FailureKind::Transient),
        _ => Behaviour::Succeed(Duration::from_secs(1)),
    });
    let started = Instant::now();
    let (result, events) = run(&runner, 1, &[("a", 1), ("b", 1)]).await;
    let outcome = result.expect("retry succeeds");
    assert_eq!(outcome.outputs[0].1, "b");
    assert_eq!(outcome.attempts, vec![2]);
    assert_eq!(outcome.failures.len(), 1);
    assert_eq!(outcome.failures[0].worker, "a");
    // 1 s failing + 0.5 s backoff + 1 s on b.
    assert_eq!(Instant::now() - started, Duration::from_millis(2500));
    assert!(events.contains(&ScheduleEvent::ChunkRetried {
        failed: outcome.failures[0].clone(),
        backoff_ms: 500
    }));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_worker_is_cancelled_and_the_chunk_retried() {
    let runner = Scripted::new(|worker, _, _| match worker {
        "frozen" => Behaviour::Hang,
        _ => Behaviour::Succeed(Duration::from_secs(1)),
    });
    let started = Instant::now();
    let (result, _) = run(&runner, 1, &[("frozen", 1), ("ok", 1)]).await;
    let outcome = result.expect("retried elsewhere");
    assert_eq!(outcome.outputs[0].1, "ok");
    assert_eq!(outcome.failures[0].error.kind, FailureKind::Stalled);
    assert_eq!(
        outcome.failures[0].error.message,
        "no progress for 5.0 s (stall timeout)"
    );
    assert_eq!(runner.cancelled.load(Ordering::SeqCst), 1);
    // 5 s stall + 0.5 s backoff + 1 s.
    assert_eq!(Instant::now() - started, Duration::from_millis(6500));
}

#[tokio::test(start_paused = true)]
async fn invalid_is_not_retried() {
    let runner =
        Scripted::new(|_, _, _| Behaviour::Fail(Duration::from_millis(10), FailureKind::Invalid));
    let (result, events) = run(&runner, 4, &[("a", 1)]).await;
    let err = result.expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "chunk 0 was refused as invalid by a: scripted failure"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ScheduleEvent::ChunkRetried { .. }))
    );
}

#[tokio::test(start_paused = true)]
async fn all_workers_failing_lists_every_attempt() {
    let runner =
        Scripted::new(|_, _, _| Behaviour::Fail(Duration::from_millis(10), FailureKind::Transient));
    let (result, _) = run(&runner, 1, &[("a", 1), ("b", 1), ("c", 1)]).await;
    let err = result.expect_err("exhausted");
    let Error::ChunkFailed {
        chunk, attempts, ..
    } = &err
    else {
        panic!("expected ChunkFailed, got {err:?}");
    };
    assert_eq!(*chunk, 0);
    let workers: Vec<&str> = attempts.iter().map(|a| a.worker.as_str()).collect();
    assert_eq!(
        workers,
        vec!["a", "b", "c"],
        "each retry goes to another worker"
    );
    assert_eq!(
        err.to_string(),
        "chunk 0 failed after 3 attempts; failed attempts of this render:\n  \
         chunk 0 attempt 1 on a: Transient: scripted failure\n  \
         chunk 0 attempt 2 on b: Transient: scripted failure\n  \
         chunk 0 attempt 3 on c: Transient: scripted failure"
    );
}

#[tokio::test(start_paused = true)]
async fn busy_workers_are_skipped_without_counting_an_attempt() {
    let runner = Scripted::new(|worker, _, _| match worker {
        "full" => Behaviour::Fail(Duration::ZERO, FailureKind::Busy),
        _ => Behaviour::Succeed(Duration::from_secs(1)),
    });
    let (result, _) = run(&runner, 3, &[("full", 4), ("free", 1)]).await;
    let outcome = result.expect("done on the free worker");
    assert!(outcome.outputs.iter().all(|(_, w)| w == "free"));
    assert_eq!(outcome.attempts, vec![1, 1, 1]);
    assert!(outcome.failures.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_keeps_failing_is_set_aside() {
    let runner = Scripted::new(|worker, _, _| match worker {
        "bad" => Behaviour::Fail(Duration::from_millis(100), FailureKind::Transient),
        _ => Behaviour::Succeed(Duration::from_secs(2)),
    });
    let (result, events) = run(&runner, 6, &[("bad", 1), ("good", 1)]).await;
    let outcome = result.expect("good worker finishes everything");
    assert!(outcome.outputs.iter().all(|(_, w)| w == "good"));
    assert!(events.contains(&ScheduleEvent::WorkerQuarantined {
        worker: "bad".into(),
        for_ms: 30_000
    }));
    // Two failures put it aside for 30 s; the good worker needs 12 s, so the
    // bad one got exactly two chunks.
    assert_eq!(outcome.failures.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_running_attempts() {
    let runner = Scripted::new(|_, _, _| Behaviour::Succeed(Duration::from_secs(100)));
    let cancel = CancellationToken::new();
    let (etx, _erx) = mpsc::channel(1024);
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.cancel();
    });
    let result = run_chunks(
        Arc::new(Arc::clone(&runner)),
        &chunks(4),
        pool(&[("a", 2), ("b", 2)]),
        policy(),
        etx,
        cancel,
    )
    .await;
    assert!(matches!(result.expect_err("cancelled"), Error::Cancelled));
    assert_eq!(runner.cancelled.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn an_empty_pool_is_an_error() {
    let runner = Scripted::new(|_, _, _| Behaviour::Succeed(Duration::from_secs(1)));
    let (result, _) = run(&runner, 2, &[]).await;
    assert_eq!(
        result.expect_err("no workers").to_string(),
        "no workers available: the worker pool is empty"
    );
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = policy();
    let waits: Vec<u64> = (1..=8).map(|a| p.backoff(a).as_millis() as u64).collect();
    assert_eq!(waits, vec![0, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    // The default jitters: never longer than the exact wait, at least 80 %.
    let d = SchedulePolicy::default();
    for a in 2..=8 {
        let w = d.backoff(a);
        let exact = d.backoff.ceiling(a - 1);
        assert!(
            w <= exact && w >= exact.mul_f64(0.8),
            "{a}: {w:?} vs {exact:?}"
        );
    }
}

#[test]
fn policies_are_validated_with_the_flag_named() {
    assert!(SchedulePolicy::default().validate().is_ok());
    let zero = SchedulePolicy {
        max_attempts: 0,
        ..SchedulePolicy::default()
    };
    assert_eq!(
        zero.validate().expect_err("0 attempts").to_string(),
        "--retries 0 is invalid: a chunk needs at least 1 attempt"
    );
    let stall = SchedulePolicy {
        stall_timeout: Duration::ZERO,
        ..SchedulePolicy::default()
    };
    assert_eq!(
        stall.validate().expect_err("0 s").to_string(),
        "--stall-timeout 0 is out of range: allowed 0.001-86400 seconds"
    );
}
