//! What a running render reports, and the handle that owns it.

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Error;
use crate::schedule::ScheduleEvent;

/// Events buffered between a render and its handle. Progress events are
/// dropped when the buffer is full (the next one says more); the others wait
/// for room, so a handle that is never read slows its render down rather
/// than growing memory.
pub const EVENT_BUFFER: usize = 256;

/// What happens during a render, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RenderEvent {
    /// The composition was selected and the chunks planned.
    Planned {
        /// Composition metadata.
        composition: String,
        /// Frame size.
        width: u32,
        /// Frame size.
        height: u32,
        /// Output frame rate, e.g. `30000/1001`.
        fps: String,
        /// Output frames.
        frames: u64,
        /// Chunks.
        chunks: usize,
        /// Frames per chunk (the last may have fewer).
        frames_per_chunk: u64,
    },
    /// These chunks (or, with `output`, the whole output) were found in the
    /// cache, verified, and are not rendered again.
    CacheHit {
        /// The chunks.
        chunks: Vec<u32>,
        /// Whether the finished output itself came from the cache.
        output: bool,
    },
    /// Every chunk is done; combining started.
    Combining,
    /// The output is written.
    Done(RenderSummary),
    /// A chunk event from the scheduler (tagged with its own `event`).
    #[serde(untagged)]
    Chunk(ScheduleEvent),
}

/// The result of a finished render.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderSummary {
    /// The render's id (in its chunk requests and every log line).
    pub render_id: String,
    /// The output: a local path or a storage URL.
    pub output: String,
    /// A presigned GET URL of the output, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presigned_url: Option<String>,
    /// Frames in the output.
    pub frames: u64,
    /// Output duration in seconds (exact fraction printed as a decimal).
    pub duration_seconds: f64,
    /// Chunks rendered.
    pub chunks: usize,
    /// Attempts per chunk, in chunk order.
    pub attempts: Vec<u32>,
    /// Failed attempts that were retried.
    pub retries: usize,
    /// Wall time of the whole render, in milliseconds.
    pub wall_ms: u64,
    /// Wall time of the combine step, in milliseconds.
    pub combine_ms: u64,
    /// Output size in bytes.
    pub bytes: u64,
    /// Chunks found in the cache instead of being rendered.
    pub cached_chunks: usize,
    /// Whether the whole output came from the cache.
    pub output_cached: bool,
}

/// The render's side of its event channel.
#[derive(Debug, Clone)]
pub(crate) struct Events(mpsc::Sender<RenderEvent>);

impl Events {
    /// Sends an event, waiting for room; a handle that is gone is fine.
    pub(crate) async fn send(&self, event: RenderEvent) {
        let _ = self.0.send(event).await;
    }

    /// Forwards the scheduler's events until it stops sending: progress
    /// only while there is room, the rest in full.
    pub(crate) async fn forward(&self, mut from: mpsc::Receiver<ScheduleEvent>) {
        while let Some(e) = from.recv().await {
            match e {
                ScheduleEvent::ChunkProgress { .. } => {
                    let _ = self.0.try_send(RenderEvent::Chunk(e));
                }
                other => self.send(RenderEvent::Chunk(other)).await,
            }
        }
    }
}

/// A running job: a render ([`RenderHandle`]) or a batch
/// ([`crate::batch::BatchHandle`]), streaming events `E` and ending with `T`.
/// Dropping the handle cancels the job: an embedding service that loses
/// interest (a request aborted, a task dropped) never leaves one running
/// with nobody to collect it.
pub struct JobHandle<E, T> {
    events: mpsc::Receiver<E>,
    cancel: CancellationToken,
    task: JoinHandle<Result<T, Error>>,
    _cancel_on_drop: DropGuard,
}

/// A running render.
pub type RenderHandle = JobHandle<RenderEvent, RenderSummary>;

impl<E: Send + 'static, T: Send + 'static> JobHandle<E, T> {
    /// Starts `run` with an event channel of `buffer` events and a
    /// cancellation token, and returns its handle.
    pub(crate) fn start<F>(
        buffer: usize,
        run: impl FnOnce(mpsc::Sender<E>, CancellationToken) -> F,
    ) -> Self
    where
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(buffer);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(tx, cancel.clone()));
        JobHandle {
            events: rx,
            _cancel_on_drop: cancel.clone().drop_guard(),
            cancel,
            task,
        }
    }

    /// The next event, or `None` once the job has ended.
    pub async fn next_event(&mut self) -> Option<E> {
        self.events.recv().await
    }

    /// Stops the job: every chunk call is cancelled, temporary files are
    /// removed and no partial output appears (a batch keeps the rows it
    /// finished). A render whose output file was already complete when
    /// the cancel came ends as done, not cancelled: the file is whole.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels the job when cancelled (for signal handlers).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the result (events not read are discarded).
    ///
    /// # Errors
    /// The job's [`Error`].
    pub async fn finish(mut self) -> Result<T, Error> {
        // The job may be waiting for room to send an event: drain.
        self.events.close();
        while self.events.recv().await.is_some() {}
        (&mut self.task)
            .await
            .map_err(Error::task("the job's task"))?
    }
}

impl RenderHandle {
    /// Starts a render's `run` with its event channel and a cancellation
    /// token, and returns its handle.
    pub(crate) fn spawn<F>(run: impl FnOnce(Events, CancellationToken) -> F) -> Self
    where
        F: Future<Output = Result<RenderSummary, Error>> + Send + 'static,
    {
        Self::start(EVENT_BUFFER, |tx, cancel| run(Events(tx), cancel))
    }
}
