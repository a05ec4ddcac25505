//! Batches through a queue: what a `batch --queue` sends, what an agent
//! ([`crate::agent`]) records, and where both live in storage.
//!
//! A queued batch keeps everything under its output root (an S3 prefix
//! every agent can reach):
//!
//! ```text
//! <root>.montage/bundles/<sha256>.tar            the bundle, once by hash
//! <root>.montage/batches/<id>/batch.json         the batch: id, queue, variants
//! <root>.montage/batches/<id>/jobs/<variant>.json   payloads too large for a message
//! <root>.montage/batches/<id>/results/<variant>.json  one result per variant
//! ```
//!
//! A message ([`QueueJob`]) names the batch, the root and the variant, and
//! carries the [`VariantJob`] with the names of its duplicate rows' copies
//! ([`JobPayload`]) or, when that is over [`MAX_MESSAGE_BYTES`], the
//! variant whose payload is stored. Nothing in a message is trusted: an
//! agent checks it as a batch checks a row ([`QueueJob::parse`]).

use std::collections::BTreeMap;

use futures_util::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use spec::{ContentHash, Location};
use storage::ObjectStore;
use storage::queue::MAX_MESSAGE_BYTES;

use super::names::check_name;
use super::results::{FailureReason, RowFailure, RowStatus};
use super::variant::{BatchOutput, VARIANT_JOB_FORMAT, VariantJob, VariantSource};
use crate::Error;

/// The format of [`QueueJob`] messages and [`JobResult`] records.
pub const QUEUE_JOB_FORMAT: u32 = 1;

/// The largest stored payload or result record read back: far above any
/// real one, so a corrupted or hostile object cannot exhaust memory.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// The folder under a batch's output root that holds the queue's state.
pub const STATE_DIR: &str = ".montage/";

/// The most bytes of a batch id.
const MAX_BATCH_ID: usize = 64;

/// A queued batch's id: lowercase letters, digits and `-`, as it names a
/// folder in storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchId(String);

impl BatchId {
    /// A new id: the time and randomness, e.g. `b20261130-062544-3f9a1c`.
    pub fn generate() -> Self {
        let now = time_now();
        BatchId(format!("b{now}-{:06x}", fastrand::u32(..0x0100_0000)))
    }

    /// Checks an id typed or received.
    ///
    /// # Errors
    /// A message naming the id and the characters allowed.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty()
            || text.len() > MAX_BATCH_ID
            || !text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "batch id `{}`: 1 to {MAX_BATCH_ID} lowercase letters, digits and `-`",
                spec::quote(text)
            ));
        }
        Ok(BatchId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BatchId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        BatchId::parse(&s)
    }
}

impl From<BatchId> for String {
    fn from(id: BatchId) -> String {
        id.0
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `YYYYMMDD-HHMMSS` in UTC, for batch ids that sort by time.
fn time_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// Where a queued batch keeps its state (see the module's docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchState {
    root: Location,
    id: BatchId,
}

impl BatchState {
    /// The state of batch `id` under output root `root` (an S3 prefix).
    ///
    /// # Errors
    /// [`Error::Input`] when `root` is not in object storage: agents on
    /// other machines cannot write into this one's directories, and an
    /// agent never writes to a local path a message names.
    pub fn new(root: &BatchOutput, id: BatchId) -> Result<Self, Error> {
        match root {
            BatchOutput::Storage(root @ Location::S3 { .. }) => Ok(BatchState {
                root: root.clone(),
                id,
            }),
            other => Err(Error::Input(format!(
                "--out `{}`: a queued batch needs an s3://bucket/prefix/ that every agent can reach",
                spec::quote(&other.to_string())
            ))),
        }
    }

    /// The batch's id.
    pub fn id(&self) -> &BatchId {
        &self.id
    }

    /// The output root.
    pub fn root(&self) -> &Location {
        &self.root
    }

    /// The batch's folder.
    pub fn prefix(&self) -> Location {
        self.root.join(&format!("{STATE_DIR}batches/{}/", self.id))
    }

    /// The batch's description.
    pub fn manifest(&self) -> Location {
        self.prefix().join("batch.json")
    }

    /// Where a variant's stored payload goes.
    pub fn job(&self, variant: &ContentHash) -> Location {
        self.prefix().join(&format!("jobs/{variant}.json"))
    }

    /// The folder of the results.
    pub fn results(&self) -> Location {
        self.prefix().join("results/")
    }

    /// Where a variant's result goes.
    pub fn result(&self, variant: &ContentHash) -> Location {
        self.results().join(&format!("{variant}.json"))
    }

    /// Where the archive of bundle `sha256` goes (shared by every batch
    /// under the root).
    pub fn bundle(&self, sha256: &ContentHash) -> Location {
        self.root.join(&format!("{STATE_DIR}bundles/{sha256}.tar"))
    }
}

/// What a batch's `batch.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchManifest {
    /// [`QUEUE_JOB_FORMAT`].
    pub format: u32,
    /// The batch.
    pub batch: BatchId,
    /// The queue its jobs went to.
    pub queue: String,
    /// Rows in the variants file.
    pub rows: u64,
    /// Distinct variants sent (one message each).
    pub variants: u64,
}

/// What a message carries for one variant: the job and the names its
/// duplicate rows want copies under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPayload {
    /// The variant.
    pub job: VariantJob,
    /// Other names the output is copied to (rows of the same variant with
    /// other names), in row order.
    #[serde(default)]
    pub copies: Vec<String>,
}

/// One message of a queued batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueJob {
    /// [`QUEUE_JOB_FORMAT`].
    pub format: u32,
    /// The batch.
    pub batch: BatchId,
    /// The output root, `s3://bucket/prefix/`.
    pub root: String,
    /// The variant's id ([`VariantJob::id`]).
    pub variant: ContentHash,
    /// Reuse cached chunks and outputs (when the agent has a cache).
    pub use_cache: bool,
    /// The payload; `None`: stored at [`BatchState::job`] (too large for a
    /// message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<JobPayload>,
}

impl QueueJob {
    /// The message body.
    ///
    /// # Errors
    /// [`Error::Internal`] if it does not serialize.
    pub fn to_body(&self) -> Result<String, Error> {
        serde_json::to_string(self).map_err(|e| Error::Internal(format!("encoding a job: {e}")))
    }

    /// Parses and checks a received message body: its size, its format,
    /// its root (object storage only), and its payload when inline.
    ///
    /// # Errors
    /// [`Error::Input`] naming the message and what is wrong.
    pub fn parse(body: &str, message: &str) -> Result<Self, Error> {
        let bad = |m: String| Error::Input(format!("message `{}`: {m}", spec::quote(message)));
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(bad(format!(
                "{} bytes, more than a message holds ({MAX_MESSAGE_BYTES})",
                body.len()
            )));
        }
        let job: QueueJob = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
        if job.format != QUEUE_JOB_FORMAT {
            return Err(bad(format!(
                "format {} is not supported: this agent reads format {QUEUE_JOB_FORMAT}",
                job.format
            )));
        }
        job.state().map_err(|e| bad(format!("root: {e}")))?;
        if let Some(payload) = &job.payload {
            payload
                .check(&job.variant)
                .map_err(|e| bad(e.to_string()))?;
        }
        Ok(job)
    }

    /// The output root.
    ///
    /// # Errors
    /// [`Error::Input`] for a root that is not an S3 prefix.
    pub fn output(&self) -> Result<BatchOutput, Error> {
        match BatchOutput::parse(&self.root)? {
            out @ BatchOutput::Storage(_) => Ok(out),
            BatchOutput::Directory(_) => Err(Error::Input(format!(
                "`{}` is not an s3:// prefix: an agent writes only to object storage",
                spec::quote(&self.root)
            ))),
        }
    }

    /// The batch's state.
    ///
    /// # Errors
    /// As [`QueueJob::output`].
    pub fn state(&self) -> Result<BatchState, Error> {
        BatchState::new(&self.output()?, self.batch.clone())
    }
}

impl JobPayload {
    /// Checks the payload as a batch checks a row: the job's format, that
    /// it is variant `variant`, its settings and every output name.
    ///
    /// # Errors
    /// [`Error::Input`] naming the field.
    pub fn check(&self, variant: &ContentHash) -> Result<(), Error> {
        let job = &self.job;
        if job.format != VARIANT_JOB_FORMAT {
            return Err(Error::Input(format!(
                "job format {} is not supported: this agent reads format {VARIANT_JOB_FORMAT}",
                job.format
            )));
        }
        if job.id() != *variant {
            return Err(Error::Input(format!(
                "the job is variant {}, not {variant} as the message says",
                job.id()
            )));
        }
        if job.composition.is_empty() {
            return Err(Error::Input("job.composition is empty".into()));
        }
        if !matches!(job.source, VariantSource::Bundle { .. }) {
            return Err(Error::Input(
                "job.source: an agent renders bundles (registered compositions render on a worker fleet)".into(),
            ));
        }
        job.settings
            .validate()
            .map_err(|e| Error::Input(format!("job.settings: {e}")))?;
        let names = job.output.iter().map(|n| ("job.output", n));
        for (field, name) in names.chain(self.copies.iter().map(|n| ("copies", n))) {
            check_name(name).map_err(|m| Error::Input(format!("{field}: {m}")))?;
        }
        Ok(())
    }

    /// The payload's JSON, for storage.
    ///
    /// # Errors
    /// [`Error::Internal`] if it does not serialize.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::Internal(format!("encoding a job: {e}")))
    }
}

/// What an agent records for a variant (`results/<variant>.json`),
/// overwritten by each delivery's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// [`QUEUE_JOB_FORMAT`].
    pub format: u32,
    /// The batch.
    pub batch: BatchId,
    /// The variant.
    pub variant: ContentHash,
    /// `rendered`, `cached` or `failed`.
    pub status: RowStatus,
    /// The output's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The output's sha256 (what a duplicate delivery checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<ContentHash>,
    /// The output's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The copies' URLs by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copies: BTreeMap<String, String>,
    /// Frames in the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// Seconds from receiving the job to its output delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// The agent (`host:pid`).
    pub agent: String,
    /// The message's id.
    pub message: String,
    /// Which delivery of the message this was (1: the first).
    pub receive_count: u32,
    /// No delivery follows: done, or failed on the last receive before the
    /// dead-letter queue.
    pub last: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RowFailure>,
}

impl JobResult {
    /// Whether the batch can stop waiting for this variant.
    pub fn is_final(&self) -> bool {
        self.status.is_done() || self.last
    }

    /// Parses a stored record of variant `variant` of batch `batch`.
    ///
    /// # Errors
    /// [`Error::Storage`]-free: [`Error::Input`] naming the record when it
    /// does not parse or is another variant's.
    pub fn parse(
        bytes: &[u8],
        batch: &BatchId,
        variant: &ContentHash,
        name: &str,
    ) -> Result<Self, Error> {
        let r: JobResult = serde_json::from_slice(bytes)
            .map_err(|e| Error::Input(format!("result {}: {e}", spec::quote(name))))?;
        if r.batch != *batch || r.variant != *variant {
            return Err(Error::Input(format!(
                "result {}: is variant {} of batch {}",
                spec::quote(name),
                r.variant,
                r.batch
            )));
        }
        Ok(r)
    }
}

/// Where a queued batch stands ([`status`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchStatus {
    /// The batch.
    pub batch: String,
    /// Variants sent.
    pub variants: u64,
    /// Variants rendered.
    pub rendered: u64,
    /// Variants whose output came from the cache.
    pub cached: u64,
    /// Variants failed for good.
    pub failed: u64,
    /// Variants that failed and are being retried.
    pub retrying: u64,
    /// Variants without a result yet.
    pub pending: u64,
    /// Failed variants by reason.
    #[serde(serialize_with = "super::digest::by_label")]
    pub failures: BTreeMap<FailureReason, u64>,
}

impl BatchStatus {
    /// Whether every variant has its final result.
    pub fn finished(&self) -> bool {
        self.pending == 0 && self.retrying == 0
    }

    /// One line for a person.
    pub fn line(&self) -> String {
        let mut failed = String::new();
        if self.failed > 0 {
            let reasons: Vec<String> = self
                .failures
                .iter()
                .map(|(r, n)| format!("{n} {}", r.label()))
                .collect();
            failed = format!(" ({})", reasons.join(", "));
        }
        format!(
            "batch {}: {} variants: {} rendered, {} from the cache, {} failed{failed}, {} retrying, {} pending{}",
            self.batch,
            self.variants,
            self.rendered,
            self.cached,
            self.failed,
            self.retrying,
            self.pending,
            if self.finished() { "; finished" } else { "" }
        )
    }
}

/// Reads where batch `id` under `root` stands, from its `batch.json` and
/// results.
///
/// # Errors
/// [`Error::Input`] for an unknown batch or a root not in object storage;
/// [`Error::Storage`] when storage fails.
pub async fn status(
    stores: &storage::Stores,
    root: &BatchOutput,
    id: BatchId,
) -> Result<BatchStatus, Error> {
    let state = BatchState::new(root, id.clone())?;
    let manifest_at = state.manifest();
    let store = stores.open(&manifest_at).await?;
    let Some(bytes) = read_record(store.as_ref(), manifest_at.key()).await? else {
        return Err(Error::Input(format!(
            "batch {id}: no {manifest_at} (is --out the batch's?)"
        )));
    };
    let manifest: BatchManifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::Input(format!("{manifest_at}: {e}")))?;
    let queue = storage::queue::Queue::connect(&manifest.queue, stores.s3_config())
        .await
        .map_err(|e| Error::Input(format!("{manifest_at}: queue: {e}")))?;
    if let Some(dead) = DeadLetters::of(&queue).await? {
        settle_dead_letters(&dead, &state, store.as_ref()).await?;
    }
    let mut s = BatchStatus {
        batch: id.to_string(),
        variants: manifest.variants,
        ..BatchStatus::default()
    };
    let mut seen = 0u64;
    for meta in store.list(state.results().key()).await? {
        let Some(variant) = variant_of(&meta.key) else {
            continue;
        };
        let Some(bytes) = read_record(store.as_ref(), &meta.key).await? else {
            continue;
        };
        let r = match JobResult::parse(&bytes, &id, &variant, &meta.key) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable result");
                continue;
            }
        };
        seen += 1;
        match (r.status, r.last) {
            (RowStatus::Rendered, _) => s.rendered += 1,
            (RowStatus::Cached, _) => s.cached += 1,
            (_, true) => {
                s.failed += 1;
                if let Some(e) = &r.error {
                    *s.failures.entry(e.reason).or_default() += 1;
                }
            }
            (_, false) => s.retrying += 1,
        }
    }
    s.pending = s.variants.saturating_sub(seen);
    Ok(s)
}

/// How long a message read from a dead-letter queue stays hidden from the
/// next look; it stays in that queue for its operator.
const DEAD_LETTER_LOOK: std::time::Duration = std::time::Duration::from_secs(30);

/// The most messages one look at a dead-letter queue reads, so a queue
/// shared by many batches is not read whole every time.
const DEAD_LETTER_SCAN: usize = 1000;

/// A queue's redrive policy and the dead-letter queue it names, resolved
/// once ([`DeadLetters::of`]) for every look.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    redrive: storage::queue::Redrive,
    queue: storage::queue::Queue,
}

impl DeadLetters {
    /// `queue`'s dead letters (`None`: it has no redrive policy, so a
    /// failing message is deleted by its agent after its last failure is
    /// recorded, and nothing can be lost this way).
    ///
    /// # Errors
    /// [`Error::Storage`] when the queue fails or its dead-letter queue is
    /// unknown.
    pub async fn of(queue: &storage::queue::Queue) -> Result<Option<Self>, Error> {
        let Some(redrive) = queue.redrive().await? else {
            return Ok(None);
        };
        let dead = queue.dead_letter(&redrive).await?;
        Ok(Some(DeadLetters {
            redrive,
            queue: dead,
        }))
    }
}

/// Gives a final result to every variant of batch `state` whose message
/// is in the dead-letter queue `dead` without one.
///
/// An agent records each failure, and on the last delivery its failure is
/// final; but an agent killed (or out of memory) on a message's last
/// delivery records nothing, the redrive policy moves the message on, and
/// without this the variant would be pending for ever. Such a variant is
/// recorded failed (`worker_lost`, naming the receives), so `--wait` ends
/// and `batch-status` counts it. Returns how many were recorded; the
/// messages stay where they are.
///
/// # Errors
/// [`Error::Storage`] when the queue or storage fails.
pub async fn settle_dead_letters(
    dead: &DeadLetters,
    state: &BatchState,
    store: &dyn ObjectStore,
) -> Result<u64, Error> {
    let DeadLetters {
        redrive,
        queue: dead,
    } = dead;
    let mut seen = std::collections::HashSet::new();
    let mut settled = 0u64;
    while seen.len() < DEAD_LETTER_SCAN {
        let messages = dead
            .receive(
                storage::queue::MAX_RECEIVE,
                std::time::Duration::ZERO,
                DEAD_LETTER_LOOK,
            )
            .await?;
        let fresh: Vec<_> = messages
            .into_iter()
            .filter(|m| seen.insert(m.id.clone()))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for m in fresh {
            // Not a job, or another batch's: not ours to judge.
            let Ok(job) = QueueJob::parse(&m.body, &m.id) else {
                continue;
            };
            if job.batch != *state.id() {
                continue;
            }
            let at = state.result(&job.variant);
            let before = match read_record(store, at.key()).await? {
                Some(bytes) => JobResult::parse(&bytes, state.id(), &job.variant, at.key()).ok(),
                None => None,
            };
            if before.as_ref().is_some_and(JobResult::is_final) {
                continue;
            }
            let receives = redrive.max_receives.max(m.receive_count.saturating_sub(1));
            let earlier = before
                .as_ref()
                .and_then(|r| r.error.as_ref())
                .map(|e| format!("; the last recorded failure: {}", e.message))
                .unwrap_or_default();
            let result = JobResult {
                format: QUEUE_JOB_FORMAT,
                batch: state.id().clone(),
                variant: job.variant,
                status: RowStatus::Failed,
                output: None,
                sha256: None,
                bytes: None,
                copies: BTreeMap::new(),
                frames: None,
                seconds: None,
                agent: "dead-letter queue".into(),
                message: m.id.clone(),
                receive_count: receives,
                last: true,
                error: Some(RowFailure {
                    class: crate::ErrorKind::Worker,
                    reason: FailureReason::WorkerLost,
                    column: None,
                    message: format!(
                        "no agent finished it in {receives} deliveries: the message is in the dead-letter queue {} (an agent stopped while rendering it: killed, out of memory, or its lease ran out){earlier}",
                        dead.url()
                    ),
                }),
            };
            write_record(store, at.key(), &result).await?;
            settled += 1;
        }
    }
    Ok(settled)
}

/// The variant a result's key names (`…/results/<sha256>.json`).
pub(crate) fn variant_of(key: &str) -> Option<ContentHash> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    ContentHash::parse_lower_hex(name).ok()
}

/// Reads a small object whole (`None` when absent), refusing one over
/// [`MAX_RECORD_BYTES`].
///
/// # Errors
/// [`Error::Storage`], or [`Error::Input`] for an oversized object.
pub(crate) async fn read_record(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let mut stream = match store.get_stream(key).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(Error::io(format!("reading {}", store.url(key))))?
    {
        out.extend_from_slice(&chunk);
        if out.len() as u64 > MAX_RECORD_BYTES {
            return Err(Error::Input(format!(
                "{} is larger than {MAX_RECORD_BYTES} bytes",
                store.url(key)
            )));
        }
    }
    Ok(Some(out))
}

/// Writes a small JSON record.
///
/// # Errors
/// [`Error::Storage`].
pub(crate) async fn write_record<T: Serialize>(
    store: &dyn ObjectStore,
    key: &str,
    value: &T,
) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding {key}: {e}")))?;
    store.put_bytes(key, bytes.into()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::VariantSettings;
    use chunker::ChunkSpec;

    fn payload() -> JobPayload {
        JobPayload {
            job: VariantJob {
                format: VARIANT_JOB_FORMAT,
                source: VariantSource::Bundle {
                    sha256: spec::key::key_of("t", &1),
                },
                composition: "promo".into(),
                props: composition::Props::new(),
                settings: VariantSettings::default(),
                split: ChunkSpec::Count(1),
                output: Some("a.mp4".into()),
            },
            copies: vec!["b.mp4".into()],
        }
    }

    fn message(payload: JobPayload) -> QueueJob {
        QueueJob {
            format: QUEUE_JOB_FORMAT,
            batch: BatchId::parse("b1").expect("id"),
            root: "s3://bucket-1/campaign/".into(),
            variant: payload.job.id(),
            use_cache: true,
            payload: Some(payload),
        }
    }

    #[track_caller]
    fn refused(body: &str, expected: &str) {
        let e = QueueJob::parse(body, "m-1").expect_err("refused");
        assert_eq!(e.to_string(), expected);
    }

    #[test]
    fn messages_round_trip_and_everything_in_them_is_checked() {
        let good = message(payload());
        let body = good.to_body().expect("body");
        assert_eq!(QueueJob::parse(&body, "m-1").expect("parses"), good);
        assert_eq!(
            good.state()
                .expect("state")
                .result(&good.variant)
                .to_string(),
            format!(
                "s3://bucket-1/campaign/.montage/batches/b1/results/{}.json",
                good.variant
            )
        );

        refused("nope", "message `m-1`: expected ident at line 1 column 2");
        let mut local = good.clone();
        local.root = "/etc/".into();
        refused(
            &local.to_body().expect("body"),
            "message `m-1`: root: `/etc/` is not an s3:// prefix: an agent writes only to object storage",
        );
        let mut escape = payload();
        escape.copies = vec!["../../x.mp4".into()];
        let e = QueueJob::parse(&message(escape).to_body().expect("body"), "m-1")
            .expect_err("refused")
            .to_string();
        assert!(
            e.starts_with("message `m-1`: copies: output name `../../x.mp4`"),
            "{e}"
        );
        let mut other = good.clone();
        other.variant = spec::key::key_of("x", &2);
        let e = QueueJob::parse(&other.to_body().expect("body"), "m-1")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("not ") && e.contains("as the message says"),
            "{e}"
        );
        let mut future = good.clone();
        future.format = 9;
        refused(
            &future.to_body().expect("body"),
            "message `m-1`: format 9 is not supported: this agent reads format 1",
        );
        let extra = body.replacen('{', "{\"evil\":1,", 1);
        let e = QueueJob::parse(&extra, "m-1")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("unknown field `evil`"), "{e}");
        let big = format!("{body}{}", " ".repeat(MAX_MESSAGE_BYTES));
        refused(
            &big,
            &format!(
                "message `m-1`: {} bytes, more than a message holds ({MAX_MESSAGE_BYTES})",
                big.len()
            ),
        );
    }

    #[test]
    fn batch_ids_name_folders() {
        let id = BatchId::generate();
        assert_eq!(BatchId::parse(id.as_str()), Ok(id.clone()));
        assert!(id.as_str().starts_with("b20"), "{id}");
        assert!(BatchId::parse("A/../b").is_err());
        assert!(BatchId::parse("").is_err());
        assert_eq!(
            variant_of(&format!("p/results/{}.json", spec::key::key_of("t", &1))),
            Some(spec::key::key_of("t", &1))
        );
        assert_eq!(variant_of("p/results/x.json"), None);
    }
}
