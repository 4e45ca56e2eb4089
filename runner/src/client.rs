//! A client of the runner API over TLS, for tests, benchmarks and operators' tools. (The control plane has its own
//! client of the runner API, in its `runners` module; it does not use this one.)

use boxyard_proto::runner::runner_client::RunnerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A gRPC client of one runner.
pub type Client = RunnerClient<Channel>;

/// Connects to a runner at `addr` (host:port), trusting `ca_pem` and expecting the certificate name `domain`.
pub async fn connect(addr: &str, ca_pem: &[u8], domain: &str) -> Result<Client, tonic::transport::Error> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(domain);
    let channel =
        Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.tcp_nodelay(true).connect().await?;
    Ok(RunnerClient::new(channel).max_decoding_message_size(16 << 20).max_encoding_message_size(16 << 20))
}
