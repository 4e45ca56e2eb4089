//! The runner's Prometheus metrics, served at `/metrics` on `--metrics-listen` (plain HTTP; keep it on loopback or
//! a monitoring network). Gauges are computed from the box inventory at scrape time, so they cannot drift;
//! counters come from the components that count (heartbeats).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use boxyard_proto::runner as pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::boxes::BoxManager;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Counters shared with the components that count.
#[derive(Default)]
pub struct Counters {
    /// Heartbeats the control plane accepted.
    pub heartbeats_sent: AtomicU64,
    /// Heartbeats that failed.
    pub heartbeats_failed: AtomicU64,
}

/// Renders the metrics in the Prometheus text format.
pub fn render(mgr: &BoxManager, counters: &Counters) -> String {
    let inv = mgr.inventory();
    let boxes: Family<StateLabel, Gauge> = Family::default();
    let execs: Family<StateLabel, Gauge> = Family::default();
    let output = Gauge::<i64>::default();
    for b in &inv.boxes {
        let state = format!("{:?}", b.state()).to_ascii_lowercase();
        boxes.get_or_create(&StateLabel { state }).inc();
        for e in &b.executions {
            let state = if e.state() == pb::ExecutionState::Running { "running" } else { "finished" };
            execs.get_or_create(&StateLabel { state: state.into() }).inc();
            output.inc_by(e.output_end as i64);
        }
    }
    let sent = Counter::<u64>::default();
    sent.inc_by(counters.heartbeats_sent.load(Ordering::Relaxed));
    let failed = Counter::<u64>::default();
    failed.inc_by(counters.heartbeats_failed.load(Ordering::Relaxed));
    let downloads = Counter::<u64>::default();
    downloads.inc_by(mgr.snapshot_downloads());
    let storage_errors = Counter::<u64>::default();
    storage_errors.inc_by(mgr.storage_errors());
    let cached = Gauge::<i64>::default();
    cached.set(mgr.cached_snapshots().len() as i64);
    let mut r = Registry::with_prefix("boxyard_runner");
    r.register("snapshot_downloads", "Snapshot images downloaded since the runner started", downloads);
    r.register("snapshots_cached", "Snapshot images in the local cache", cached);
    r.register("boxes", "Boxes on this runner by state", boxes);
    r.register("executions", "Executions kept on this runner by state", execs);
    r.register("output_bytes", "Output bytes stored for the executions kept on this runner", output);
    r.register("heartbeats_sent", "Heartbeats the control plane accepted", sent);
    r.register("heartbeats_failed", "Heartbeats that failed", failed);
    r.register(
        "storage_errors",
        "Writes, fsyncs and file creations of execution logs and state records that failed (a full or failing disk)",
        storage_errors,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}

/// Serves `/metrics` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mgr: Arc<BoxManager>,
    counters: Arc<Counters>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (mgr, counters) = (mgr.clone(), counters.clone());
            async move {
                let body = tokio::task::spawn_blocking(move || render(&mgr, &counters)).await.unwrap_or_default();
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
