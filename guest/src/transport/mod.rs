//! Where host sessions come from: the virtio-serial port inside a VM, or a unix socket in local mode.
//!
//! Both produce a stream of connections that have completed the session handshake
//! ([`boxyard_proto::session`]); the gRPC server serves each until it ends.

pub mod port;
pub mod unix;

use std::sync::Arc;

use crate::boot::BootInfo;

/// Serves the agent service on a stream of sessions until the stream ends.
pub async fn serve<S, IO>(
    sessions: S,
    service: crate::service::AgentService,
    boot: Arc<BootInfo>,
) -> Result<(), tonic::transport::Error>
where
    S: futures::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tonic::transport::server::Connected + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let sessions = futures::StreamExt::inspect(sessions, move |_| boot.mark_ready());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(None)
        .add_service(
            boxyard_proto::agent::agent_server::AgentServer::new(service)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
        )
        .serve_with_incoming(sessions)
        .await
}
