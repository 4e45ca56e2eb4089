//! Prometheus metrics of the control plane, served at `/metrics` (text exposition format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of the HTTP response counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The response's status code, as decimal digits ("200", "503").
    pub status: String,
}

/// The label of the placement counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// How the placement ended (placed, no_capacity, runner_failed, …).
    pub outcome: String,
}

/// The replica's metrics and the registry that exposes them under the `boxyard_` prefix.
pub struct Metrics {
    registry: Registry,
    /// HTTP responses by status code.
    pub http_responses: Family<StatusLabel, Counter>,
    /// Placements by outcome (placed, no_capacity, runner_failed, …).
    pub placements: Family<OutcomeLabel, Counter>,
    /// Seconds from the start of a placement to a running box.
    pub placement_seconds: Histogram,
    /// 1 while this replica holds the reconciler lock.
    pub reconciler_leader: Gauge,
    /// Reconciler passes completed.
    pub reconciler_passes: Counter,
    /// Heartbeats accepted.
    pub heartbeats: Counter,
    /// Open WebSocket attaches.
    pub attaches: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("boxyard");
        let m = Metrics {
            http_responses: Family::default(),
            placements: Family::default(),
            placement_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            reconciler_leader: Gauge::default(),
            reconciler_passes: Counter::default(),
            heartbeats: Counter::default(),
            attaches: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("http_responses", "HTTP responses by status", m.http_responses.clone());
        registry.register("placements", "Box placements by outcome", m.placements.clone());
        registry.register(
            "placement_seconds",
            "Time from the start of a placement to a running box",
            m.placement_seconds.clone(),
        );
        registry.register(
            "reconciler_leader",
            "1 while this replica leads the reconciler",
            m.reconciler_leader.clone(),
        );
        registry.register("reconciler_passes", "Reconciler passes completed", m.reconciler_passes.clone());
        registry.register("runner_heartbeats", "Runner heartbeats accepted", m.heartbeats.clone());
        registry.register("attaches_open", "Open WebSocket attaches", m.attaches.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts one placement that ended with `outcome`.
    pub fn placement(&self, outcome: &str) {
        self.placements.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }

    /// Every metric in the Prometheus text exposition format (the body of `/metrics`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
