//! A client of the runner API over TLS (used by tests, benchmarks and operators' tools; the control plane uses it
//! too).

use boxyard_proto::runner::runner_client::RunnerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub type Client = RunnerClient<Channel>;

/// Connects to a runner at `addr` (host:port), trusting `ca_pem` and expecting the certificate name `domain`.
pub async fn connect(addr: &str, ca_pem: &[u8], domain: &str) -> Result<Client, tonic::transport::Error> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(domain);
    let channel =
        Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.tcp_nodelay(true).connect().await?;
    Ok(RunnerClient::new(channel).max_decoding_message_size(16 << 20).max_encoding_message_size(16 << 20))
}
