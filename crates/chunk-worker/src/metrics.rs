//! Prometheus metrics: what a worker has done, served as text on
//! `/metrics` ([`serve`], also used by the coordinator's agents for their
//! own registry).

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use spec::StageTimings;

use crate::WorkerError;

/// Labels of a finished chunk: how it ended and, for failures, the error
/// class (`input`, `not_found`, `storage`, `encoder`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChunkLabels {
    /// `done`, `failed` or `cancelled`.
    pub outcome: String,
    /// The error class, empty when done.
    pub class: String,
}

/// Labels of a stage time.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `render`, `convert`, `encode`, `audio`, `deliver` or `total`.
    pub stage: String,
}

/// Labels of a bundle cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `hit` or `miss`.
    pub result: String,
}

fn stage_histogram() -> Histogram {
    // 10 ms to ~160 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// A chunk worker's metrics.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    chunks: Family<ChunkLabels, Counter>,
    stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    frames: Counter,
    slots_busy: Gauge,
    bundle_lookups: Family<LookupLabels, Counter>,
    bundle_bytes: Gauge,
    resident_bytes: Gauge,
}

impl WorkerMetrics {
    /// A registry with every metric at zero, for a worker of `slots` slots.
    pub fn new(slots: usize) -> Self {
        let mut registry = Registry::with_prefix("montage_worker");
        let chunks = Family::<ChunkLabels, Counter>::default();
        registry.register(
            "chunks",
            "Chunks finished, by outcome and error class",
            chunks.clone(),
        );
        let stage_seconds =
            Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                stage_histogram,
            );
        registry.register(
            "stage_seconds",
            "Time per chunk stage (render and convert summed over render threads)",
            stage_seconds.clone(),
        );
        let frames = Counter::default();
        registry.register("frames", "Frames rendered and encoded", frames.clone());
        let slots_busy = Gauge::default();
        registry.register("slots_busy", "Chunks rendering now", slots_busy.clone());
        let slots_gauge: Gauge = Gauge::default();
        slots_gauge.set(i64::try_from(slots).unwrap_or(i64::MAX));
        registry.register("slots", "Chunks this worker renders at once", slots_gauge);
        let bundle_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "bundle_cache_lookups",
            "Content-addressed bundle lookups, by hit or miss",
            bundle_lookups.clone(),
        );
        let bundle_bytes = Gauge::default();
        registry.register(
            "bundle_cache_bytes",
            "Bytes of unpacked bundles in the worker's bundle cache",
            bundle_bytes.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register(
            "resident_memory_bytes",
            "The worker process's resident memory",
            resident_bytes.clone(),
        );
        WorkerMetrics {
            registry,
            chunks,
            stage_seconds,
            frames,
            slots_busy,
            bundle_lookups,
            bundle_bytes,
            resident_bytes,
        }
    }

    /// A chunk started (takes a slot).
    pub fn started(&self) {
        self.slots_busy.inc();
    }

    /// A chunk rendered and delivered `frames` frames.
    pub fn done(&self, frames: u64, timings: &StageTimings) {
        self.slots_busy.dec();
        self.count("done", "");
        self.frames.inc_by(frames);
        for (stage, d) in [
            ("render", timings.render),
            ("convert", timings.convert),
            ("encode", timings.encode),
            ("audio", timings.audio),
            ("deliver", timings.deliver),
            ("total", timings.total),
        ] {
            self.stage_seconds
                .get_or_create(&StageLabels {
                    stage: stage.to_owned(),
                })
                .observe(d.as_secs_f64());
        }
    }

    /// A chunk failed or was cancelled.
    pub fn failed(&self, error: &WorkerError) {
        self.slots_busy.dec();
        match error {
            WorkerError::Cancelled { .. } => self.count("cancelled", ""),
            e => self.count("failed", crate::status::error_class(e)),
        }
    }

    /// A request was refused before it took a slot (busy, draining, bad
    /// request, …).
    pub fn refused(&self, error: &WorkerError) {
        self.count("refused", crate::status::error_class(error));
    }

    fn count(&self, outcome: &str, class: &str) {
        self.chunks
            .get_or_create(&ChunkLabels {
                outcome: outcome.to_owned(),
                class: class.to_owned(),
            })
            .inc();
    }

    /// A bundle lookup (a hit, or a miss that fetched the bundle), after
    /// which the cache holds `cache_bytes`.
    pub fn bundle_lookup(&self, hit: bool, cache_bytes: u64) {
        let result = if hit { "hit" } else { "miss" };
        self.bundle_lookups
            .get_or_create(&LookupLabels {
                result: result.to_owned(),
            })
            .inc();
        self.bundle_bytes
            .set(i64::try_from(cache_bytes).unwrap_or(i64::MAX));
    }

    /// The registry, with the process's memory read now.
    pub fn encode(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.resident_bytes
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The resident memory of this process, from `/proc/self/status` (Linux).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Binds `listen` for [`serve`] (port 0 picks a free port), so the
/// address is known, and taken, before anything is served.
///
/// # Errors
/// [`WorkerError::Server`] if the address cannot be bound.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, WorkerError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| WorkerError::Server {
            addr: listen.to_string(),
            message: format!("metrics: {e}"),
        })
}

/// Serves `encode()`'s text on `/metrics` of `listener` until `shutdown`.
pub fn serve(
    listener: tokio::net::TcpListener,
    encode: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let encode = Arc::clone(&encode);
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    })
}
