//! An agent's Prometheus metrics, served on `/metrics` by the worker's
//! server ([`chunk_worker::metrics::serve`]): variants done and failed by
//! error class, render seconds, how long jobs waited in the queue, leases
//! extended, jobs rendering now and the process's memory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chunk_worker::metrics::ChunkLabels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use storage::queue::Message;

use crate::batch::RowStatus;

/// An agent's metrics.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    /// By outcome (`rendered`, `cached`, `failed`, `duplicate`,
    /// `released`) and error class; the
    /// worker's label set, as both count work by how it ended.
    variants: Family<ChunkLabels, Counter>,
    render_seconds: Histogram,
    receive_lag_seconds: Histogram,
    leases_extended: Counter,
    jobs_busy: Gauge,
    resident_bytes: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("montage_agent");
        let variants = Family::<ChunkLabels, Counter>::default();
        registry.register(
            "variants",
            "Jobs finished, by outcome and error class",
            variants.clone(),
        );
        // 50 ms to ~14 min.
        let render_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 15));
        registry.register(
            "render_seconds",
            "Seconds from receiving a job to its output recorded",
            render_seconds.clone(),
        );
        // 100 ms to ~27 h.
        let receive_lag_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 20));
        registry.register(
            "receive_lag_seconds",
            "Seconds a job waited in the queue before this receive (queue clock)",
            receive_lag_seconds.clone(),
        );
        let leases_extended = Counter::default();
        registry.register(
            "leases_extended",
            "Visibility timeouts extended while rendering",
            leases_extended.clone(),
        );
        let jobs_busy = Gauge::default();
        registry.register("jobs_busy", "Jobs held now", jobs_busy.clone());
        let resident_bytes = Gauge::default();
        registry.register(
            "resident_memory_bytes",
            "The agent process's resident memory",
            resident_bytes.clone(),
        );
        AgentMetrics {
            registry,
            variants,
            render_seconds,
            receive_lag_seconds,
            leases_extended,
            jobs_busy,
            resident_bytes,
        }
    }

    /// A message arrived: how long it waited since it was sent.
    pub(crate) fn received(&self, m: &Message) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        if let Some(sent) = m.sent_ms {
            self.receive_lag_seconds
                .observe(Duration::from_millis(now.saturating_sub(sent)).as_secs_f64());
        }
    }

    /// Jobs held changed by `delta`.
    pub(crate) fn busy(&self, delta: i64) {
        self.jobs_busy.inc_by(delta);
    }

    /// A lease was extended.
    pub(crate) fn lease_extended(&self) {
        self.leases_extended.inc();
    }

    /// A job delivered its output in `took`.
    pub(crate) fn done(&self, status: RowStatus, took: Duration) {
        let outcome = if status == RowStatus::Cached {
            "cached"
        } else {
            "rendered"
        };
        self.count(outcome, "");
        self.render_seconds.observe(took.as_secs_f64());
    }

    /// A job ended without rendering or failing: `duplicate` (a delivery
    /// acknowledged without rendering) or `released` (given back on
    /// shutdown).
    pub(crate) fn settled(&self, outcome: &str) {
        self.count(outcome, "");
    }

    /// A job failed with an error of `class`.
    pub(crate) fn failed(&self, class: &str) {
        self.count("failed", class);
    }

    fn count(&self, outcome: &str, class: &str) {
        self.variants
            .get_or_create(&ChunkLabels {
                outcome: outcome.to_owned(),
                class: class.to_owned(),
            })
            .inc();
    }

    /// The registry as Prometheus text, with the process's memory read now.
    pub fn encode(&self) -> String {
        if let Some(rss) = chunk_worker::metrics::resident_bytes() {
            self.resident_bytes
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
