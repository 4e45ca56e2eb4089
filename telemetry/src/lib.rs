//! Logging and tracing shared by the Boxyard processes (control plane and runner).
//!
//! - [`init`]: `tracing` to stderr (or to journald when systemd connected the process to the journal), plus OTLP
//!   export of spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard OpenTelemetry variables apply).
//! - [`inject_context`] / [`extract_context`]: W3C trace context in gRPC metadata, so a runner's spans join the
//!   control plane's trace of the request that caused them.
//! - [`systemd`]: READY / STOPPING / WATCHDOG notifications for `Type=notify` units.

pub mod systemd;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes exported spans when dropped (keep it alive for the life of the process).
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Whether stderr goes to the journal (systemd sets `JOURNAL_STREAM` for services whose output it collects).
pub fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Installs the global subscriber. `default_filter` applies unless `RUST_LOG` is set. Must run inside a tokio
/// runtime when OTLP export is enabled.
pub fn init(service: &'static str, default_filter: &str) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let journald = if under_journald() { tracing_journald::layer().ok() } else { None };
    let fmt =
        if journald.is_none() { Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)) } else { None };
    let provider = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").and_then(|_| {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build();
        match exporter {
            Ok(e) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(e)
                    .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
                    .build(),
            ),
            Err(e) => {
                eprintln!("{service}: OTLP export disabled: {e}");
                None
            }
        }
    });
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_tracer_provider(p.clone());
        tracing_opentelemetry::layer().with_tracer(p.tracer(service))
    });
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(journald).with(otel).try_init();
    Guard { provider }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Adds the current span's trace context to outgoing gRPC metadata (`traceparent`, `tracestate`).
pub fn inject_context(md: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(md)));
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace context of an incoming request (empty if it carries none).
pub fn extract_context(headers: &tonic::codegen::http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// A span for an incoming gRPC request, child of the caller's trace (for tonic's `Server::trace_fn`).
pub fn grpc_span<B>(req: &tonic::codegen::http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!("grpc", path = %req.uri().path());
    let _ = span.set_parent(extract_context(req.headers()));
    span
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    #[test]
    fn trace_context_round_trips_through_metadata() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
        let mut md = tonic::metadata::MetadataMap::new();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut super::MetadataInjector(&mut md))
        });
        assert_eq!(md.get("traceparent").unwrap(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let headers = md.into_headers();
        let back = super::extract_context(&headers);
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
    }
}
