//! Connections from the control plane to runner APIs: one lazily connected TLS channel per runner, keyed by the
//! endpoint the runner last reported (a runner that restarts on another port or with a new certificate gets a new
//! channel). Every call carries the runner's API token and the caller's trace context.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use boxyard_proto::runner::runner_client::RunnerClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use uuid::Uuid;

use crate::error::ApiError;

/// A gRPC client of one runner's API, with its token and trace context added to every call.
pub type Client = RunnerClient<InterceptedService<Channel, CallContext>>;

/// How to reach one runner (a row of `runners`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RunnerEndpoint {
    /// The runner's id.
    pub id: Uuid,
    /// The runner's name, for messages.
    pub name: String,
    /// `host:port` of the runner's API, as the runner last reported it.
    pub address: String,
    /// The name the runner's TLS certificate must carry.
    pub tls_server_name: String,
    /// The PEM certificate(s) the runner's certificate is verified against.
    pub tls_ca_pem: String,
    /// The bearer token the runner expects on its API.
    pub api_token: String,
}

/// Adds the runner's API token and the current trace context to every call.
#[derive(Clone)]
pub struct CallContext {
    auth: MetadataValue<tonic::metadata::Ascii>,
}

impl Interceptor for CallContext {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.auth.clone());
        crate::telemetry::inject_context(req.metadata_mut());
        Ok(req)
    }
}

/// The replica's cache of runner clients, one per runner, keyed by runner id.
#[derive(Default)]
pub struct RunnerClients {
    cache: Mutex<HashMap<Uuid, (RunnerEndpoint, Client)>>,
}

impl RunnerClients {
    /// A client for `ep` (cached; replaced when the endpoint changed).
    pub fn client(&self, ep: &RunnerEndpoint) -> Result<Client, ApiError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, client)) = cache.get(&ep.id)
            && known == ep
        {
            return Ok(client.clone());
        }
        let client = connect(ep).map_err(|e| {
            ApiError::unavailable(
                "runner_unavailable",
                format!("cannot set up a connection to runner {}: {e}", ep.name),
            )
        })?;
        cache.insert(ep.id, (ep.clone(), client.clone()));
        Ok(client)
    }

    /// Loads the endpoint of runner `id` and returns a client for it.
    pub async fn for_runner(&self, db: &sqlx::PgPool, id: Uuid) -> Result<(RunnerEndpoint, Client), ApiError> {
        let ep: Option<RunnerEndpoint> = sqlx::query_as(
            "SELECT id, name, address, tls_server_name, tls_ca_pem, api_token FROM runners WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(db)
        .await?;
        let ep =
            ep.ok_or_else(|| ApiError::unavailable("runner_unavailable", format!("runner {id} is not registered")))?;
        let c = self.client(&ep)?;
        Ok((ep, c))
    }
}

fn connect(ep: &RunnerEndpoint) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ep.tls_ca_pem.as_bytes()))
        .domain_name(ep.tls_server_name.clone());
    let channel = Endpoint::from_shared(format!("https://{}", ep.address))?
        .tls_config(tls)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect_lazy();
    let auth = MetadataValue::try_from(format!("Bearer {}", ep.api_token))?;
    Ok(RunnerClient::with_interceptor(channel, CallContext { auth })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20))
}

/// A request with a deadline.
pub fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// Awaits one unary runner call with a client-side deadline. gRPC's own deadline (`grpc-timeout`, set by
/// [`request`]) is enforced by the server, so a frozen runner would never answer; this one is ours. A missed
/// deadline is `503 runner_unavailable` with `retry_after`.
pub async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(s.into()),
        Err(_) => Err(deadline_missed(timeout)),
    }
}

/// The error of a runner call that missed its deadline.
pub fn deadline_missed(timeout: Duration) -> ApiError {
    ApiError::unavailable(
        "runner_unavailable",
        format!(
            "the box's runner did not answer within {:.1} s (it may be overloaded or hung); retry later",
            timeout.as_secs_f64()
        ),
    )
    .retry_after(5)
}
