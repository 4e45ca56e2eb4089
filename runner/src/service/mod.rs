//! The runner's gRPC service (`boxyard.runner.v1.Runner`): a thin layer that maps requests onto the
//! [`BoxManager`] and its errors onto gRPC codes. Attach is served by
//! [`crate::executions::attach`] (both directions).
//!
//! - [`tls`]: the server's TLS configuration (rustls), including the self-signed development certificate.

pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use boxyard_proto::agent as ag;
use boxyard_proto::runner as pb;
use boxyard_proto::runner::runner_server::{Runner, RunnerServer};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::boxes::{BoxManager, DEFAULT_STOP_TIMEOUT};
use crate::error::RunnerError;
use crate::executions::attach;

/// Largest gRPC message (an upload chunk or an output record is far smaller).
const MAX_MESSAGE: usize = 16 << 20;

/// The gRPC service over a [`BoxManager`].
#[derive(Clone)]
pub struct RunnerService {
    mgr: Arc<BoxManager>,
}

impl RunnerService {
    /// The service of `mgr`'s boxes.
    pub fn new(mgr: Arc<BoxManager>) -> Self {
        RunnerService { mgr }
    }

    /// The tonic server, with the runner's message size limits.
    pub fn into_server(self) -> RunnerServer<Self> {
        RunnerServer::new(self).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
    }
}

/// Serves the runner API on `listener` over TLS until `shutdown` completes.
///
/// `api_token`: when set (the runner belongs to a control plane), every call must carry
/// `authorization: Bearer <api_token>`; others get UNAUTHENTICATED.
pub async fn serve(
    mgr: Arc<BoxManager>,
    listener: TcpListener,
    tls: ServerTlsConfig,
    api_token: Option<String>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let expected = api_token.map(|t| format!("Bearer {t}"));
    let auth = move |req: Request<()>| -> Result<Request<()>, Status> {
        let Some(expected) = &expected else { return Ok(req) };
        let given = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("this runner only serves the control plane it registered with"))
        }
    };
    Server::builder()
        .tls_config(tls)?
        .trace_fn(boxyard_telemetry::grpc_span)
        .layer(tonic::service::InterceptorLayer::new(auth))
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(RunnerService::new(mgr).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type R<T> = Result<Response<T>, Status>;

fn ok<T>(v: T) -> R<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl Runner for RunnerService {
    async fn create_box(&self, req: Request<pb::CreateBoxRequest>) -> R<pb::BoxInfo> {
        let r = req.into_inner();
        ok(self.mgr.create_box(&r.box_id, r.spec).await?)
    }

    async fn start_box(&self, req: Request<pb::BoxRef>) -> R<pb::BoxInfo> {
        ok(self.mgr.start_box(&req.into_inner().box_id).await?)
    }

    async fn stop_box(&self, req: Request<pb::StopBoxRequest>) -> R<pb::BoxInfo> {
        let r = req.into_inner();
        let timeout = if r.timeout_ms == 0 { DEFAULT_STOP_TIMEOUT } else { Duration::from_millis(r.timeout_ms) };
        ok(self.mgr.stop_box(&r.box_id, timeout).await?)
    }

    async fn destroy_box(&self, req: Request<pb::BoxRef>) -> R<pb::DestroyBoxResponse> {
        ok(pb::DestroyBoxResponse { existed: self.mgr.destroy_box(&req.into_inner().box_id).await? })
    }

    async fn get_box(&self, req: Request<pb::BoxRef>) -> R<pb::BoxInfo> {
        ok(self.mgr.get_box(&req.into_inner().box_id)?)
    }

    async fn list_boxes(&self, _: Request<pb::ListBoxesRequest>) -> R<pb::Inventory> {
        ok(self.mgr.inventory())
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> R<pb::Execution> {
        ok(self.mgr.exec(req.into_inner()).await?)
    }

    async fn get_execution(&self, req: Request<pb::ExecutionRef>) -> R<pb::Execution> {
        ok(self.mgr.execution(&req.into_inner().execution_id)?.to_proto())
    }

    async fn kill_execution(&self, req: Request<pb::ExecutionRef>) -> R<pb::Execution> {
        ok(self.mgr.kill_execution(&req.into_inner().execution_id).await?)
    }

    async fn signal(&self, req: Request<pb::SignalRequest>) -> R<pb::SignalResponse> {
        let r = req.into_inner();
        self.mgr.signal(&r.execution_id, &r.signal).await?;
        ok(pb::SignalResponse {})
    }

    async fn resize(&self, req: Request<pb::ResizeRequest>) -> R<pb::ResizeResponse> {
        let r = req.into_inner();
        self.mgr.resize(&r.execution_id, r.tty).await?;
        ok(pb::ResizeResponse {})
    }

    async fn upload_files(&self, req: Request<Streaming<pb::UploadChunk>>) -> R<pb::UploadResponse> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload: the first chunk must name box_id and dest_dir"))?;
        if first.dest_dir.is_empty() {
            return Err(Status::invalid_argument("the first upload chunk must name dest_dir"));
        }
        let mut agent = self.mgr.box_agent(&first.box_id)?;
        // Forward through a bounded channel; a client error ends the upload without closing the tar stream cleanly,
        // so the agent reports a truncated archive instead of unpacking half of it silently.
        let (tx, rx) = mpsc::channel::<ag::UploadChunk>(4);
        let (err_tx, mut err_rx) = tokio::sync::oneshot::channel::<Status>();
        tx.send(ag::UploadChunk { dest_dir: first.dest_dir, data: first.data }).await.ok();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(c)) => {
                        if tx.send(ag::UploadChunk { dest_dir: String::new(), data: c.data }).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(s) => {
                        let _ = err_tx.send(s);
                        // Keep the agent's stream open until the call is dropped below.
                        tx.closed().await;
                        return;
                    }
                }
            }
        });
        let call = agent.upload_files(ReceiverStream::new(rx));
        tokio::select! {
            r = call => {
                let r = r.map_err(|s| RunnerError::from_agent("uploading files", s))?.into_inner();
                ok(pb::UploadResponse { bytes: r.bytes, entries: r.entries })
            }
            Ok(s) = &mut err_rx => Err(Status::aborted(format!("the upload stream failed: {}; nothing was committed past it", s.message()))),
        }
    }

    type DownloadFilesStream = futures::stream::BoxStream<'static, Result<pb::DownloadChunk, Status>>;

    async fn download_files(&self, req: Request<pb::DownloadRequest>) -> R<Self::DownloadFilesStream> {
        let r = req.into_inner();
        let mut agent = self.mgr.box_agent(&r.box_id)?;
        let call = agent.download_files(ag::DownloadRequest { path: r.path });
        let inbound = crate::agent::call(self.mgr.agent_timeout(), call)
            .await
            .map_err(|s| RunnerError::from_agent("downloading files", s))?
            .into_inner();
        ok(inbound.map(|c| c.map(|c| pb::DownloadChunk { data: c.data })).boxed())
    }

    type AttachStream = attach::AttachStream;

    async fn attach(&self, req: Request<Streaming<pb::AttachRequest>>) -> R<Self::AttachStream> {
        ok(attach::open(self.mgr.clone(), req.into_inner()).await?)
    }
}
